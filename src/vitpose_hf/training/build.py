"""The reusable parts of the training recipe (`examples/run_pose.py`): datasets and model from arguments.

`parse_datasets_arg` / `mix_datasets` / `build_train_eval_data` turn `DataArguments` into training
and evaluation datasets (COCO-format files, the other formats' converters, several datasets with
sampling ratios, a dataset saved with `save_to_disk`, or the synthetic offline set) that yield
`TopDownTransform` outputs; `probe_heads` tells the head layout `(dataset_index, schema)` without
loading images; `build_model` makes the model for that layout (a checkpoint with adapted heads, or
a preset) and `load_backbone_init` initialises its backbone from another checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from ..checkpoint_keys import read_checkpoint
from ..configuration_vitpose import VitPoseConfig
from ..data import TopDownTransform, load_keypoint_dataset, make_synthetic_coco, schema_from_category
from ..data.coco import recorded_schema_name
from ..keypoint_schemas import SCHEMAS, KeypointSchema, get_schema, schema_for_num_keypoints
from ..modeling_vitpose import VitPoseForPoseEstimation
from ..modeling_vitpose_mae import load_mae_checkpoint_into_backbone
from .arguments import OFFLINE_MODEL, DataArguments, ModelArguments
from .trainer import MultiSchemaTransform

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetSpec",
    "TrainEvalData",
    "parse_datasets_arg",
    "mix_datasets",
    "build_train_eval_data",
    "probe_heads",
    "build_model",
    "load_backbone_init",
]


# ----------------------------------------------------------------------------- dataset specs
@dataclass
class DatasetSpec:
    """One training dataset: `name` (format and schema: coco, aic, mpii, crowdpose, or a COCO file
    with any keypoints under another name), files, sampling `ratio` and the `dataset_index` routed
    to its head."""

    name: str
    annotations: str
    images: str
    ratio: float = 1.0
    dataset_index: int = 0
    schema: KeypointSchema | None = None


_FORMATS = {"coco": "coco", "aic": "aic", "mpii": "mpii", "crowdpose": "crowdpose"}


def parse_datasets_arg(value: str) -> list[DatasetSpec]:
    """`"coco:ann.json:imgs[:ratio],aic:..."` -> specs with dataset indices assigned.

    The first entry is the main head. Indices follow ViTPose++ (COCO 0, AIC 1, MPII 2, ...) where the
    schema defines one and it is free, else the next free index.

    Raises:
        ValueError: malformed entries or ratios, naming the entry.
    """
    specs: list[DatasetSpec] = []
    for raw in [e for e in value.split(",") if e.strip()]:
        parts = raw.strip().split(":")
        if len(parts) not in (3, 4):
            raise ValueError(f"--datasets entry {raw!r} must be name:annotations:images[:ratio]")
        ratio = 1.0
        if len(parts) == 4:
            try:
                ratio = float(parts[3])
            except ValueError as err:
                raise ValueError(f"--datasets entry {raw!r}: ratio {parts[3]!r} is not a number") from err
            if not ratio > 0 or not math.isfinite(ratio):
                raise ValueError(f"--datasets entry {raw!r}: ratio must be > 0")
        specs.append(DatasetSpec(parts[0].strip().lower(), parts[1], parts[2], ratio))
    if not specs:
        raise ValueError(f"--datasets {value!r} names no dataset")
    used: set[int] = set()
    for spec in specs:
        try:
            spec.schema = get_schema(spec.name)
        except ValueError:
            spec.schema = None
        wanted = spec.schema.dataset_index if spec.schema is not None else None
        if spec is specs[0] and wanted is None:
            wanted = 0
        if wanted is None or wanted in used:
            wanted = next(i for i in range(len(specs) + 16) if i not in used)
        spec.dataset_index = int(wanted)
        used.add(spec.dataset_index)
    return specs


def _load_dataset(spec: DatasetSpec, keypoint_schema: str | None = None):
    fmt = _FORMATS.get(spec.name, "coco")
    kwargs: dict[str, Any] = {"dataset_index": spec.dataset_index}
    schema = keypoint_schema or (spec.schema.name if spec.schema is not None and fmt == "coco" else None)
    if fmt == "coco" and schema is not None:
        kwargs["schema"] = schema
    ds = load_keypoint_dataset(spec.annotations, spec.images, format=fmt, **kwargs)
    if spec.schema is None:
        spec.schema = _schema_of(ds, spec)
    return ds


def _load_saved_dataset(folder: str):
    """`datasets.load_from_disk(folder)`, checked for the person columns `TopDownTransform` reads."""
    try:
        ds = datasets.load_from_disk(folder)
    except (FileNotFoundError, OSError, ValueError) as err:
        raise ValueError(f"--train_dataset_dir {folder!r}: not a dataset saved with save_to_disk ({err})") from err
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise ValueError(f"--train_dataset_dir {folder!r}: a DatasetDict without a 'train' split ({sorted(ds)})")
        ds = ds["train"]
    missing = [c for c in ("bbox", "keypoints") if c not in ds.column_names]
    if not ("image" in ds.column_names or "image_path" in ds.column_names):
        missing.append("image or image_path")
    if missing:
        raise ValueError(f"--train_dataset_dir {folder!r}: missing column(s) {missing} (has {ds.column_names})")
    if len(ds) == 0:
        raise ValueError(f"--train_dataset_dir {folder!r}: the dataset is empty")
    return ds


def _saved_schema(ds, data_args) -> KeypointSchema:
    """`--keypoint_schema`, else the schema `load_coco_keypoints` recorded in the dataset's
    description, else the human schema with the rows' keypoint count (17 COCO, 16 MPII, ...); a
    count two human schemas share (14: AIC and CrowdPose) needs `--keypoint_schema`."""
    if data_args.keypoint_schema:
        return get_schema(data_args.keypoint_schema)
    count = len(ds[0]["keypoints"]) // 3
    recorded = recorded_schema_name(ds)
    if recorded:
        try:
            schema = get_schema(recorded)
        except ValueError:
            schema = None
        if schema is not None and schema.num_keypoints == count:
            return schema
    human = sorted({s.name for s in SCHEMAS.values() if s.num_keypoints == count and s.name not in ("ap10k", "apt36k")})
    if len(human) > 1 and "coco" not in human:
        raise ValueError(f"--train_dataset_dir: rows with {count} keypoints match the schemas {human}; "
                         "pass --keypoint_schema")
    return schema_for_num_keypoints(count)


def _schema_of(ds, spec: DatasetSpec) -> KeypointSchema:
    """Schema of a loaded dataset from its annotation file's single keypoint category."""
    num = len(ds[0]["keypoints"]) // 3
    schema = _schema_from_file(spec.annotations)
    if schema.num_keypoints != num:
        raise ValueError(f"{spec.annotations}: cannot tell the keypoint schema ({num} keypoints); pass --keypoint_schema")
    return schema


def _schema_from_file(annotation_file: str) -> KeypointSchema:
    """The schema of the one keypoint category of a COCO-format file (`schema_from_category`)."""
    try:
        with open(annotation_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{annotation_file}: cannot read annotation file ({err})") from err
    cats = [c for c in data.get("categories", []) if c.get("keypoints")] if isinstance(data, dict) else []
    if len(cats) != 1:
        raise ValueError(f"{annotation_file}: cannot infer the keypoint schema from {len(cats)} keypoint categories; pass --keypoint_schema")
    return schema_from_category(cats[0], annotation_file)


def mix_datasets(datasets_list, ratios, seed: int = 0):
    """Concatenate datasets so that dataset `i` makes up `ratios[i] / sum(ratios)` of the samples.

    The mixed epoch has as many samples as all datasets together; each dataset's share is filled
    by cycling through a seeded permutation of its rows (repeating small ones, subsampling large
    ones). Returns a `datasets.Dataset` (a plain shuffling sampler then gives the ratios).
    """
    if len(datasets_list) != len(ratios) or not datasets_list:
        raise ValueError(f"need one ratio per dataset, got {len(datasets_list)} datasets and {len(ratios)} ratios")
    if len(datasets_list) == 1:
        return datasets_list[0]
    total = sum(len(d) for d in datasets_list)
    weight = np.asarray(ratios, dtype=np.float64)
    counts = np.maximum(1, np.round(weight / weight.sum() * total)).astype(int)
    rng = np.random.default_rng(seed)
    parts = []
    for ds, count in zip(datasets_list, counts):
        perm = rng.permutation(len(ds))
        idx = np.resize(perm, int(count))
        parts.append(ds.select(idx.tolist()))
    features = parts[0].features
    return datasets.concatenate_datasets([p.cast(features) for p in parts])


# ----------------------------------------------------------------------------- data
@dataclass
class TrainEvalData:
    """Everything the run needs from the data side."""

    train: Any
    eval: Any | None
    heads: list[tuple[int, KeypointSchema]]  # (dataset_index, schema), main first
    eval_annotations: str | None
    eval_images: str | None
    train_transform: Any = None


def _synthetic_files(data_args: DataArguments, output_dir: str, seed: int, training_args) -> tuple[str, str, str, str]:
    root = Path(data_args.synthetic_dir or os.path.join(output_dir, "synthetic_data"))
    with training_args.main_process_first(desc="synthetic data"):
        train_ann, train_img = make_synthetic_coco(root / "train", data_args.synthetic_train_images, seed=seed)
        eval_ann, eval_img = make_synthetic_coco(root / "eval", data_args.synthetic_eval_images, seed=seed + 1_000_003)
    return str(train_ann), str(train_img), str(eval_ann), str(eval_img)


def build_train_eval_data(data_args: DataArguments, image_size, heatmap_size, training_args) -> TrainEvalData:
    """Load the training (and evaluation) persons and attach the train / eval transforms.

    Returns:
        `TrainEvalData` with `train` / `eval` datasets that yield `TopDownTransform` outputs.
    """
    seed = int(training_args.seed)
    eval_ann, eval_img = data_args.eval_annotations, data_args.eval_images
    saved = None
    if data_args.train_dataset_dir:
        if data_args.datasets or data_args.train_annotations or data_args.dataset:
            raise ValueError("give either --train_dataset_dir or --datasets / --train_annotations / --dataset, not both")
        saved = _load_saved_dataset(data_args.train_dataset_dir)
        specs = [DatasetSpec("saved", None, data_args.train_dataset_dir, 1.0, 0, _saved_schema(saved, data_args))]
        if "dataset_index" in saved.column_names:  # one dataset is the main head, whatever the rows say
            saved = saved.remove_columns("dataset_index")
        saved = saved.add_column("dataset_index", [0] * len(saved))
    elif data_args.datasets:
        if data_args.train_annotations or data_args.dataset:
            raise ValueError("give either --datasets or --train_annotations / --dataset, not both")
        specs = parse_datasets_arg(data_args.datasets)
    else:
        synthetic = data_args.dataset == "synthetic" or (data_args.dataset is None and not data_args.train_annotations)
        if data_args.dataset not in (None, "synthetic"):
            raise ValueError(f"--dataset {data_args.dataset!r}: only 'synthetic' is built in; use --train_annotations")
        if synthetic:
            train_ann, train_img, s_eval_ann, s_eval_img = _synthetic_files(data_args, training_args.output_dir, seed, training_args)
            if eval_ann is None:
                eval_ann, eval_img = s_eval_ann, s_eval_img
            specs = [DatasetSpec("coco", train_ann, train_img, 1.0, 0, get_schema("coco"))]
        else:
            if not data_args.train_images:
                raise ValueError("--train_annotations needs --train_images")
            fmt = data_args.annotation_format.lower()
            if fmt not in _FORMATS:
                raise ValueError(f"--annotation_format {fmt!r} is not one of {sorted(_FORMATS)}")
            schema = get_schema(data_args.keypoint_schema) if data_args.keypoint_schema else None
            if schema is None and fmt != "coco":
                schema = get_schema(fmt)
            spec = DatasetSpec(fmt, data_args.train_annotations, data_args.train_images, 1.0, 0, schema)
            specs = [spec]
    if eval_ann is not None and eval_img is None:
        raise ValueError("--eval_annotations needs --eval_images")

    if len(specs) == 1:
        specs[0].dataset_index = 0  # a single dataset is the main head whatever its ViTPose++ index
    loaded = ([saved] if saved is not None else
              [_load_dataset(s, data_args.keypoint_schema if len(specs) == 1 else None) for s in specs])
    for s, d in zip(specs, loaded):
        logger.info("dataset %s (index %d, %d keypoints, ratio %.3g): %d persons", s.name, s.dataset_index,
                    s.schema.num_keypoints, s.ratio, len(d))
    train = mix_datasets(loaded, [s.ratio for s in specs], seed=seed)
    if data_args.max_train_samples is not None:
        train = train.select(range(min(len(train), int(data_args.max_train_samples))))

    def transform(schema, train_mode: bool):
        kwargs: dict[str, Any] = dict(
            image_size=tuple(image_size), heatmap_size=tuple(heatmap_size), sigma=data_args.sigma,
            train=train_mode, use_udp=data_args.use_udp, seed=seed,
        )
        return TopDownTransform(schema, **kwargs)

    train_mode = bool(data_args.augmentation)
    transforms = {s.dataset_index: transform(s.schema, train_mode) for s in specs}
    train_transform = transforms[specs[0].dataset_index] if len(specs) == 1 else MultiSchemaTransform(transforms)
    train = train.with_transform(train_transform)

    eval_ds = None
    if eval_ann is not None:
        main = specs[0]
        eval_spec = DatasetSpec(main.name, eval_ann, eval_img, 1.0, 0, main.schema)
        eval_rows = _load_dataset(eval_spec, main.schema.name if main.schema.name in SCHEMAS else None)
        eval_ds = eval_rows.with_transform(transform(main.schema, False))
    heads = [(s.dataset_index, s.schema) for s in specs]
    return TrainEvalData(train, eval_ds, heads, eval_ann, eval_img, train_transform)


def probe_heads(data_args: DataArguments) -> list[tuple[int, KeypointSchema]]:
    """Head layout `(dataset_index, schema)` implied by the data arguments, without loading images."""
    if data_args.train_dataset_dir:
        return [(0, _saved_schema(_load_saved_dataset(data_args.train_dataset_dir), data_args))]
    if data_args.datasets:
        specs = parse_datasets_arg(data_args.datasets)
        out = []
        for s in specs:
            schema = s.schema
            if schema is None:
                schema = _schema_from_file(s.annotations)
            out.append((s.dataset_index, schema))
        if len(out) == 1:
            out = [(0, out[0][1])]
        return out
    if data_args.dataset == "synthetic" or (data_args.dataset is None and not data_args.train_annotations):
        return [(0, get_schema("coco"))]
    if data_args.keypoint_schema:
        return [(0, get_schema(data_args.keypoint_schema))]
    fmt = data_args.annotation_format.lower()
    if fmt != "coco":
        return [(0, get_schema(fmt))]
    return [(0, _schema_from_file(data_args.train_annotations))]


# ----------------------------------------------------------------------------- model
def _parse_size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    parts = [p for p in str(value).replace("x", ",").split(",") if p.strip()]
    if len(parts) != 2:
        raise ValueError(f"image_size must be 'H,W', got {value!r}")
    return int(parts[0]), int(parts[1])


def _head_fields(heads: list[tuple[int, KeypointSchema]]) -> dict[str, Any]:
    main_index, main_schema = heads[0]
    fields: dict[str, Any] = {
        "id2label": dict(enumerate(main_schema.keypoints)),
        "main_dataset_index": main_index,
        "keypoint_schema": main_schema.name,
        "edges": [list(e) for e in main_schema.skeleton] or None,
        "dataset_heads": [
            {"dataset_index": i, "num_labels": s.num_keypoints, "name": s.name, "id2label": dict(enumerate(s.keypoints))}
            for i, s in heads[1:]
        ],
    }
    return fields


def build_model(model_args: ModelArguments, heads: list[tuple[int, KeypointSchema]]) -> VitPoseForPoseEstimation:
    """The model to train: a checkpoint (its head replaced when the keypoints differ, extra heads
    added for extra datasets) or a preset (`"offline"` for the offline default), then the optional
    backbone initialisation."""
    overrides: dict[str, Any] = json.loads(model_args.config_overrides) if model_args.config_overrides else {}
    if not isinstance(overrides, dict):
        raise ValueError(f"--config_overrides must be a JSON object, got {model_args.config_overrides!r}")
    size = _parse_size(model_args.image_size)
    if size is not None:
        overrides["image_size"] = size
    if model_args.drop_path_rate is not None:
        overrides["drop_path_rate"] = model_args.drop_path_rate
    if model_args.use_simple_decoder is not None:
        overrides["use_simple_decoder"] = model_args.use_simple_decoder
    head_fields = _head_fields(heads)

    if model_args.model_name_or_path:
        config = VitPoseConfig.from_pretrained(model_args.model_name_or_path)
        same_main = config.num_labels == len(head_fields["id2label"])
        existing = {int(h["dataset_index"]): int(h["num_labels"]) for h in config.dataset_heads}
        wanted = {int(h["dataset_index"]): int(h["num_labels"]) for h in head_fields["dataset_heads"]}
        kwargs = dict(overrides)
        if not same_main or wanted != existing or config.main_dataset_index != head_fields["main_dataset_index"]:
            kwargs.update(head_fields)
            logger.info("adapting the checkpoint's heads to the data: %s", {"main": len(head_fields["id2label"]), **wanted})
        image_size = kwargs.pop("image_size", None)
        model = VitPoseForPoseEstimation.from_pretrained(
            model_args.model_name_or_path, ignore_mismatched_sizes=True, image_size=image_size, **kwargs
        )
    else:
        preset = (model_args.preset or "offline").lower()
        base = dict(OFFLINE_MODEL) if preset == "offline" else {}
        base.update(head_fields)
        base.update(overrides)
        config = VitPoseConfig(**base) if preset == "offline" else VitPoseConfig.from_preset(preset, **base)
        model = VitPoseForPoseEstimation(config)
        logger.info("new %s model: %.2fM parameters", preset, sum(p.numel() for p in model.parameters()) / 1e6)
    if model_args.backbone_init:
        report = load_backbone_init(model, model_args.backbone_init)
        logger.info("backbone init from %s: %s", model_args.backbone_init, report)
    return model


def load_backbone_init(model: VitPoseForPoseEstimation, path: str) -> dict[str, Any]:
    """Initialise `model.backbone` from a checkpoint's encoder.

    The file (a `save_pretrained` folder, `.safetensors`, `.pth` / `.bin`) is read and unwrapped by
    `checkpoint_keys.read_checkpoint`. Our layout (`backbone.embeddings...`, `backbone.encoder...` as
    written by any of our models, MAE pre-training included, or unprefixed `VitPoseModel` keys) is
    loaded with `load_state_dict(strict=False)`; any other ViT layout (a full official ViTPose /
    ViTPose++ checkpoint, whose heads are reported unused, an official backbone-only file, an MAE /
    timm checkpoint) goes through `load_mae_checkpoint_into_backbone` and its key table.

    Returns:
        `{"loaded": n, "missing": [...], "unexpected": [...]}` (also logged).

    Raises:
        ValueError: unreadable file, a tensor of another shape than the model's, or no backbone tensor loaded.
    """
    state = read_checkpoint(path)
    ours = any(k.startswith(("backbone.embeddings.", "backbone.encoder.", "embeddings.", "encoder.")) for k in state)
    if not ours:
        report = load_mae_checkpoint_into_backbone(model, state)
        result = {"loaded": len(report.loaded), "missing": list(report.missing), "unexpected": sorted(report.dropped)}
    else:
        backbone_state = {}
        unexpected = []
        for key, value in state.items():
            name = key[len("backbone."):] if key.startswith("backbone.") else key
            if name.startswith(("embeddings.", "encoder.", "layernorm.")):
                backbone_state[name] = value
            else:
                unexpected.append(key)
        target = model.backbone.state_dict()
        for name, value in backbone_state.items():
            if name in target and tuple(value.shape) != tuple(target[name].shape):
                raise ValueError(f"{path}: {name} is {tuple(value.shape)} in the checkpoint but {tuple(target[name].shape)} "
                                 "in the model (another model size or input size?)")
        missing, extra = model.backbone.load_state_dict(backbone_state, strict=False)
        result = {"loaded": len(backbone_state) - len(extra), "missing": list(missing),
                  "unexpected": unexpected + list(extra)}
    if result["missing"]:
        logger.warning("backbone init: %d backbone tensors missing from %s: %s", len(result["missing"]), path, result["missing"][:10])
    if result["unexpected"]:
        logger.info("backbone init: %d checkpoint keys not used (heads, decoders, ...): %s", len(result["unexpected"]), result["unexpected"][:10])
    if result["loaded"] == 0:
        raise ValueError(f"{path}: no backbone tensor could be loaded")
    return result
