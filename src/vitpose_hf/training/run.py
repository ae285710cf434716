"""The training run behind `examples/run_pose.py` and `vitpose-hf train`.

`run_training(model_args, data_args, training_args)` builds the datasets (COCO-format files, the
other formats' converters, several datasets with sampling ratios, or the synthetic offline set),
the model (a checkpoint, or a preset with an optional backbone initialisation), applies the
parameter subset / LoRA, trains with `VitPoseTrainer`, and saves to `output_dir` a checkpoint that
`VitPoseForPoseEstimation.from_pretrained` and `pipeline("keypoint-detection", model=output_dir)`
load directly (config, weights and the image processor). It runs unchanged under `python`,
`torchrun` and `accelerate launch` (Trainer picks the distributed setup up from the environment).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint_keys import read_checkpoint
from ..configuration_vitpose import VitPoseConfig
from ..keypoint_schemas import KeypointSchema, get_schema
from ..modeling_vitpose import VitPoseForPoseEstimation
from ..modeling_vitpose_mae import load_mae_checkpoint_into_backbone
from .arguments import OFFLINE_MODEL, DataArguments, ModelArguments, PoseTrainingArguments
from .trainable import apply_lora, apply_trainable, merge_lora

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetSpec",
    "parse_datasets_arg",
    "build_train_eval_data",
    "build_model",
    "load_backbone_init",
    "run_training",
    "mix_datasets",
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
    from ..data import load_keypoint_dataset

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
    import datasets

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
    import re

    from ..keypoint_schemas import SCHEMAS, schema_for_num_keypoints

    if data_args.keypoint_schema:
        return get_schema(data_args.keypoint_schema)
    count = len(ds[0]["keypoints"]) // 3
    found = re.search(r"keypoint schema: (\S+)", ds.info.description or "")
    if found:
        try:
            schema = get_schema(found.group(1))
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
    """Schema of a loaded dataset: the known one with its keypoint count, or from the categories."""
    from ..data import schema_from_category

    num = len(ds[0]["keypoints"]) // 3
    with open(spec.annotations, encoding="utf-8") as f:
        data = json.load(f)
    cats = [c for c in data.get("categories", []) if c.get("keypoints")] if isinstance(data, dict) else []
    if len(cats) == 1 and len(cats[0]["keypoints"]) == num:
        return schema_from_category(cats[0], spec.annotations)
    raise ValueError(f"{spec.annotations}: cannot tell the keypoint schema ({num} keypoints); pass --keypoint_schema")


def mix_datasets(datasets_list, ratios, seed: int = 0):
    """Concatenate datasets so that dataset `i` makes up `ratios[i] / sum(ratios)` of the samples.

    The mixed epoch has as many samples as all datasets together; each dataset's share is filled
    by cycling through a seeded permutation of its rows (repeating small ones, subsampling large
    ones). Returns a `datasets.Dataset` (a plain shuffling sampler then gives the ratios).
    """
    import datasets as hf_datasets

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
    return hf_datasets.concatenate_datasets([p.cast(features) for p in parts])


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
    from ..data import make_synthetic_coco

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
    from ..data import TopDownTransform
    from .trainer import MultiSchemaTransform

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
        eval_rows = _load_dataset(eval_spec, main.schema.name if main.schema.name in _known() else None)
        eval_ds = eval_rows.with_transform(transform(main.schema, False))
    heads = [(s.dataset_index, s.schema) for s in specs]
    return TrainEvalData(train, eval_ds, heads, eval_ann, eval_img, train_transform)


def _known() -> set[str]:
    from ..keypoint_schemas import SCHEMAS

    return set(SCHEMAS)


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


# ----------------------------------------------------------------------------- the run
def _finalise_training_args(training_args: PoseTrainingArguments, has_eval: bool, multi_head: bool) -> PoseTrainingArguments:
    """Adjust the arguments to the data: evaluation off without eval data, save steps aligned with
    eval steps for best-checkpoint keeping, unused-parameter detection for multi-head DDP."""
    from transformers.trainer_utils import IntervalStrategy

    if not has_eval and training_args.eval_strategy != IntervalStrategy.NO:
        logger.info("no evaluation data: evaluation and best-checkpoint selection are off")
        training_args.eval_strategy = IntervalStrategy.NO
        training_args.load_best_model_at_end = False
        training_args.metric_for_best_model = None
    if (
        has_eval and training_args.load_best_model_at_end and training_args.eval_strategy == IntervalStrategy.STEPS
        and training_args.eval_steps and training_args.save_steps % training_args.eval_steps
    ):
        logger.info("save_steps %s -> %s (a multiple of eval_steps is needed to keep the best checkpoint)",
                    training_args.save_steps, training_args.eval_steps)
        training_args.save_steps = training_args.eval_steps
    if multi_head and training_args.ddp_find_unused_parameters is None:
        training_args.ddp_find_unused_parameters = True  # heads of datasets absent from a batch get no gradient
    return training_args


def run_training(model_args: ModelArguments, data_args: DataArguments, training_args: PoseTrainingArguments) -> dict[str, Any]:
    """Train (and evaluate) as described in the module docstring.

    Returns:
        `{"train": train metrics, "eval": final COCO metrics or {}, "output_dir": path}`.
    """
    from ..image_processing_vitpose import VitPoseTopDownImageProcessor
    from .trainer import (
        PaddingPoseCollator,
        SetEpochCallback,
        StepDelayCallback,
        VitPoseTrainer,
        find_last_complete_checkpoint,
        write_weights_digest,
    )

    resume_arg = training_args.resume_from_checkpoint
    resume_last = isinstance(resume_arg, str) and resume_arg.lower() in ("true", "last", "latest")
    if resume_arg:
        finished = _already_finished(training_args)
        if finished is not None:
            return finished
    _prepare_output_dir(training_args, resuming=bool(resume_arg))

    torch.manual_seed(training_args.seed)
    # The model needs the head layout of the data, the data needs the model's input size: read the
    # data specs first (cheap), then the model, then build the transforms with its sizes.
    heads_probe = _probe_heads(data_args)
    model = build_model(model_args, heads_probe)
    image_size = tuple(model.config.image_size)
    with torch.no_grad():
        probe = model.eval()(torch.zeros(1, 3, *image_size)).heatmaps
    model.train()
    heatmap_size = tuple(probe.shape[-2:])
    data = build_train_eval_data(data_args, image_size, heatmap_size, training_args)
    if [(i, s.num_keypoints) for i, s in data.heads] != [(i, s.num_keypoints) for i, s in heads_probe]:
        raise RuntimeError(f"dataset heads changed between probe and load: {heads_probe} vs {data.heads}")

    if model_args.lora_r > 0:
        if model_args.trainable != "all":
            logger.warning("--trainable %s is ignored with LoRA (adapters + heads are trained)", model_args.trainable)
        model = apply_lora(model, r=model_args.lora_r, alpha=model_args.lora_alpha, target_modules=model_args.lora_target_modules)
    else:
        apply_trainable(model, model_args.trainable)

    processor = VitPoseTopDownImageProcessor(size={"height": image_size[0], "width": image_size[1]})
    training_args = _finalise_training_args(training_args, data.eval is not None, len(data.heads) > 1)
    coco_eval = None
    if data.eval_annotations is not None:
        coco_eval = dict(
            annotation_file=data.eval_annotations, image_dir=data.eval_images, processor=processor,
            detection_file=data_args.eval_detections,
            flip_test=data_args.augmentation if data_args.flip_test is None else data_args.flip_test,
            dataset_index=data.heads[0][0], schema=data.heads[0][1],
        )
    callbacks = [SetEpochCallback(data.train_transform)]
    if training_args.debug_step_delay > 0:
        callbacks.append(StepDelayCallback(training_args.debug_step_delay))
    trainer = VitPoseTrainer(
        model=model, args=training_args, train_dataset=data.train, eval_dataset=data.eval,
        data_collator=PaddingPoseCollator(), processing_class=processor, callbacks=callbacks,
        coco_eval=coco_eval, layer_decay=training_args.layer_decay,
    )

    resume, trusted = _resolve_resume(training_args.output_dir, resume_arg, resume_last)
    resume_state = None
    if resume is not None:
        from transformers.trainer_callback import TrainerState

        resume_state = TrainerState.load_from_json(os.path.join(resume, "trainer_state.json"))
    target = _target_steps(training_args, resume_state)
    if resume_state is not None and target is not None and resume_state.global_step >= target:
        # the run ended at this checkpoint and was stopped before (or during) its final save:
        # make the final save from it instead of letting Trainer take another step
        logger.info("%s is the run's last step (%d): saving it as the final model without training", resume, target)
        trainer._load_from_checkpoint(resume)
        trainer.state = resume_state
        train_metrics = _read_results(training_args.output_dir, "train")
    else:
        try:
            result = trainer.train(resume_from_checkpoint=resume)
        except Exception as err:
            if resume is not None and not trusted and _is_unreadable_file_error(err):
                raise ValueError(f"--resume_from_checkpoint {resume}: a file of the checkpoint cannot be read ({err})") from err
            raise
        train_metrics = dict(result.metrics)
        trainer.log_metrics("train", train_metrics)
        trainer.save_metrics("train", train_metrics)

    final_model = trainer.model
    if model_args.lora_r > 0:
        final_model = merge_lora(trainer.accelerator.unwrap_model(trainer.model))
        trainer.model = final_model
    trainer.save_final()
    if training_args.debug_weights_digest:
        write_weights_digest(
            trainer.accelerator.unwrap_model(final_model), training_args.debug_weights_digest,
            training_args.process_index, training_args.world_size, trainer.state.global_step,
        )

    eval_metrics: dict[str, float] = {}
    if coco_eval is not None:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
    if training_args.process_index == 0:
        _write_run_card(trainer, model_args, data_args, training_args, eval_metrics)
        if coco_eval is not None:
            try:  # the trained model is saved by now: a picture that cannot be drawn loses nothing
                _write_predictions_picture(trainer, coco_eval, training_args.output_dir)
            except Exception as err:  # noqa: BLE001 - optional output; the run's results are saved
                logger.warning("could not draw %s: %s", PREDICTIONS_PICTURE, err)
    global_step = trainer.state.global_step
    _finish_distributed(trainer)
    return {"train": train_metrics, "eval": eval_metrics, "output_dir": training_args.output_dir,
            "global_step": global_step}


PREDICTIONS_PICTURE = "predictions.png"


def _write_predictions_picture(trainer, coco_eval: dict, output_dir: str, num_images: int = 4) -> str | None:
    """`output_dir/predictions.png`: the trained model's keypoints on the first `num_images`
    evaluation images (ground-truth boxes, no flip test), side by side; returns its path."""
    import numpy as np
    import transformers
    from PIL import Image

    from ..evaluation import load_coco
    from ..visualization import draw_keypoints

    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    pipe = transformers.pipeline("keypoint-detection", model=model, image_processor=coco_eval["processor"],
                                 device=model.device)
    dataset = load_coco(coco_eval["annotation_file"]).dataset
    tiles = []
    for image_info in dataset["images"][:num_images]:
        boxes = [a["bbox"] for a in dataset["annotations"]
                 if a["image_id"] == image_info["id"] and not a.get("iscrowd", 0)]
        path = os.path.join(coco_eval["image_dir"], image_info["file_name"])
        persons = pipe(path, boxes=boxes, flip_test=False, dataset_index=coco_eval["dataset_index"]) if boxes else []
        tiles.append(np.asarray(draw_keypoints(path, persons, schema=coco_eval["schema"])))
    if not tiles:
        return None
    height = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 4), (0, 0)), constant_values=255) for t in tiles]
    out = os.path.join(output_dir, PREDICTIONS_PICTURE)
    Image.fromarray(np.concatenate(tiles, axis=1)).save(out)
    logger.info("wrote the predictions of %d evaluation images to %s", len(tiles), out)
    return out


def _write_run_card(trainer, model_args, data_args, training_args, eval_metrics) -> None:
    """The output folder's README.md: what was trained on what, the measured metrics, the usage."""
    from ..modelcard import write_model_card

    model = trainer.accelerator.unwrap_model(trainer.model)
    base = model_args.model_name_or_path
    if data_args.train_dataset_dir:
        data = f"the saved dataset {os.path.basename(os.path.normpath(data_args.train_dataset_dir))}"
    elif data_args.datasets:
        data = f"the datasets {data_args.datasets}"
    elif data_args.train_annotations:
        data = f"{os.path.basename(data_args.train_annotations)}"
    else:
        data = "the built-in synthetic people"
    evaluated = (f"; metrics: COCO keypoint AP on {os.path.basename(data_args.eval_annotations)}"
                 if data_args.eval_annotations else ("; metrics: COCO keypoint AP on held-out synthetic images"
                                                     if eval_metrics else ""))
    source = (f"trained for {trainer.state.global_step} steps on {data}"
              + (f" from {base}" if base else "") + evaluated)
    write_model_card(training_args.output_dir, model.config, repo_id=training_args.hub_model_id,
                     metrics=eval_metrics, base_model=base if base and not os.path.isdir(base) else None,
                     source=source)


# ----------------------------------------------------------------------------- output folder and resume
def _read_results(output_dir: str, split: str) -> dict[str, float]:
    try:
        with open(os.path.join(output_dir, f"{split}_results.json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _target_steps(training_args: PoseTrainingArguments, state=None) -> int | None:
    """The run's last step: `max_steps`, or the planned total of a checkpoint made with the same
    epoch count; None when it cannot be told before the data loader exists."""
    if training_args.max_steps and training_args.max_steps > 0:
        return int(training_args.max_steps)
    if state is not None and state.max_steps and float(state.num_train_epochs or 0) == float(training_args.num_train_epochs):
        return int(state.max_steps)
    return None


def _already_finished(training_args: PoseTrainingArguments) -> dict[str, Any] | None:
    """The result of an earlier run of these arguments whose final save is complete, else None."""
    from .trainer import check_complete_save, read_complete_marker

    out = training_args.output_dir
    record = read_complete_marker(out) if os.path.isdir(out) else None
    if record is None or record.get("kind") != "final":
        return None
    step = int(record.get("global_step", -1))
    if training_args.max_steps and training_args.max_steps > 0:
        done = step >= training_args.max_steps
    else:
        done = int(record.get("max_steps", 0)) <= 0 and float(record.get("num_train_epochs", 0)) >= float(training_args.num_train_epochs)
    if not done:
        return None
    problem = check_complete_save(out)
    if problem is not None:
        logger.warning("%s: the final save is damaged (%s); resuming from the last complete checkpoint", out, problem)
        return None
    logger.info("%s: this run already finished at step %d; nothing to do (--max_steps larger to continue it, "
                "--overwrite_output_dir to train again)", out, step)
    if training_args.process_index == 0 and not os.path.isfile(os.path.join(out, "eval_results.json")) and training_args.do_eval:
        logger.warning("%s has no eval_results.json: evaluate the model with `vitpose-hf evaluate`", out)
    return {"train": _read_results(out, "train"), "eval": _read_results(out, "eval"), "output_dir": out,
            "global_step": step, "already_finished": True}


def _prepare_output_dir(training_args: PoseTrainingArguments, resuming: bool) -> None:
    """Refuse to train into a folder holding an earlier run unless resuming or overwriting; with
    `--overwrite_output_dir` delete that run's outputs first (main process)."""
    from .trainer import describe_used_output_dir, remove_run_outputs

    out = training_args.output_dir
    used = describe_used_output_dir(out)
    if used is None:
        return
    if training_args.overwrite_output_dir:
        if resuming:
            raise ValueError(f"--overwrite_output_dir and --resume_from_checkpoint {training_args.resume_from_checkpoint!r} "
                             "contradict each other: give one")
        with training_args.main_process_first(desc="overwrite_output_dir"):
            if training_args.process_index == 0:
                removed = remove_run_outputs(out)
                logger.warning("--overwrite_output_dir: removed the earlier run in %s (%s)", out, ", ".join(removed))
        return
    if not resuming:
        raise ValueError(
            f"output_dir {out} holds an earlier run ({used}): pass --resume_from_checkpoint last to continue it, "
            "--overwrite_output_dir to delete it and start over, or another --output_dir"
        )


def _resolve_resume(output_dir: str, resume_arg, resume_last: bool) -> tuple[str | None, bool]:
    """`(checkpoint folder or None, trusted)`: `last` -> the newest complete checkpoint (damaged
    newer ones skipped with a warning); an explicit folder must pass `check_complete_save`, or,
    without a marker (another tool's checkpoint), is used with a warning (`trusted=False`)."""
    from .trainer import COMPLETE_MARKER, check_complete_save, find_last_complete_checkpoint

    if not resume_arg:
        return None, True
    if resume_last:
        resume = find_last_complete_checkpoint(output_dir)
        if resume is None:
            from .trainer import describe_used_output_dir

            # nothing to resume in a fresh folder is the normal start of a resumable run
            log = logger.warning if describe_used_output_dir(output_dir) else logger.info
            log("no complete checkpoint in %s: starting from scratch", output_dir)
        else:
            logger.info("resuming from %s", resume)
        return resume, True
    resume = os.fspath(resume_arg)
    if not os.path.isdir(resume):
        raise ValueError(f"--resume_from_checkpoint {resume}: no such folder")
    problem = check_complete_save(resume)
    if problem is None:
        return resume, True
    if not os.path.isfile(os.path.join(resume, COMPLETE_MARKER)) and os.path.isfile(os.path.join(resume, "trainer_state.json")):
        logger.warning("--resume_from_checkpoint %s has no %s (not written by vitpose_hf, or by an older version): "
                       "its files cannot be checked before loading", resume, COMPLETE_MARKER)
        return resume, False
    raise ValueError(f"--resume_from_checkpoint {resume}: {problem}")


def _is_unreadable_file_error(err: BaseException) -> bool:
    import pickle

    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover
        SafetensorError = ()  # noqa: N806
    return isinstance(err, (SafetensorError, pickle.UnpicklingError, json.JSONDecodeError, EOFError))


def _drop_ddp_wrappers(trainer) -> None:
    """Forget every reference the trainer and its accelerator hold to the DDP wrapper."""
    from torch.nn.parallel import DistributedDataParallel

    model = trainer.model
    while isinstance(model, DistributedDataParallel):
        model = model.module
    trainer.model = model
    trainer.model_wrapped = model
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "_models"):
        accelerator._models = [m.module if isinstance(m, DistributedDataParallel) else m for m in accelerator._models]


def _finish_distributed(trainer=None) -> None:
    """End a multi-process run so that no rank can hang or abort in gloo's teardown. No-op otherwise.

    Why this order: the DDP wrapper's C++ `Reducer` holds a reference to the process group. If the
    wrapper outlives `destroy_process_group()`, freeing it later drops the group's last reference
    from a destructor that keeps the GIL, and `~ProcessGroupGloo` joins gloo's worker thread, which
    may itself be waiting for the GIL to free the Python tensors of a finished collective (the AP
    broadcast): a deadlock (seen as a hang in `std::thread::join`). Freed during interpreter
    shutdown instead, the worker thread is killed while it waits for the GIL ("terminate called
    without an active exception"). So: wait for every rank, free the wrappers while the group is
    still registered, then destroy it through `destroy_process_group()`, whose destructor releases
    the GIL while joining.
    """
    import gc

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    from torch.nn.parallel import DistributedDataParallel

    dist.barrier()
    if trainer is not None:
        _drop_ddp_wrappers(trainer)
    gc.collect()
    alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
    if alive:  # its process group will be freed later, where the teardown can deadlock
        logger.warning("%d DistributedDataParallel wrapper(s) still referenced at the end of the run", alive)
    dist.destroy_process_group()


def _probe_heads(data_args: DataArguments) -> list[tuple[int, KeypointSchema]]:
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


def _schema_from_file(annotation_file: str) -> KeypointSchema:
    from ..data import schema_from_category

    try:
        with open(annotation_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{annotation_file}: cannot read annotation file ({err})") from err
    cats = [c for c in data.get("categories", []) if c.get("keypoints")] if isinstance(data, dict) else []
    if len(cats) != 1:
        raise ValueError(f"{annotation_file}: cannot infer the keypoint schema from {len(cats)} keypoint categories; pass --keypoint_schema")
    return schema_from_category(cats[0], annotation_file)
