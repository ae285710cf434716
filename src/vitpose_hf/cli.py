"""`vitpose-hf` command line (also `python -m vitpose_hf`).

Subcommands:
    predict   keypoints for images or folders of images -> JSON (+ optional drawings); for a video,
              tracked poses -> annotated video + JSON Lines (vitpose_hf.video.command)
    evaluate  COCO-style OKS AP of a model (vitpose_hf.evaluation.command)
    convert   official ViTPose .pth / transformers checkpoints -> vitpose_hf (vitpose_hf.convert_vitpose_to_hf)
    export    a checkpoint -> ONNX folder (vitpose_hf.export), optionally int8-quantized
    train     training (vitpose_hf.training.command, when installed)

`vitpose-hf predict --help` lists the options of `predict`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


# subcommands served by another module: name -> (module, help)
_DELEGATED = {
    "evaluate": ("vitpose_hf.evaluation.command", "COCO keypoint evaluation (OKS AP) of a model"),
    "train": ("vitpose_hf.training.command", "train or fine-tune a model"),
}


# ---------------------------------------------------------------------------------------- inputs


def collect_images(sources: Sequence[str], recursive: bool = False) -> list[str]:
    """Expand files, folders (images inside, sorted) and URLs into a list of image references.

    Raises:
        ValueError: a source that is neither a file, a folder nor a URL, or no image at all.
    """
    from .image_io import IMAGE_EXTENSIONS  # here: `vitpose-hf --help` does not load torch

    images: list[str] = []
    for source in sources:
        if source.startswith(("http://", "https://")):
            images.append(source)
            continue
        path = Path(source)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                logger.warning("no image files in folder %s", path)
            images.extend(str(p) for p in found)
        elif path.is_file():
            images.append(str(path))
        else:
            raise ValueError(f"image or folder not found: {source!r}")
    if not images:
        raise ValueError(f"no images found in {list(sources)}")
    return images


def _coco_image_id(path: str) -> int | None:
    stem = Path(path).stem
    return int(stem) if stem.isdigit() else None


def load_boxes_file(path: str, images: Sequence[str], score_threshold: float | None = None) -> tuple[list, list]:
    """Read person boxes for `images` from a JSON file.

    Accepted layouts:
      - COCO results (a list of `{"image_id", "bbox": [x, y, w, h], "score", "category_id"}`), e.g.
        a detector's output; images are matched to `image_id` by their numeric file stem
        (`000000196141.jpg` -> 196141). Only category 1 (person) is used when categories are given.
      - COCO annotations (a dict with "images" and "annotations"): ground-truth person boxes,
        matched by `file_name`.
      - per image: `{"name.jpg": [[x, y, w, h], ...] or [{"bbox": [...], "score": s}, ...], ...}`,
        keyed by file name or path.

    Returns:
        `(boxes, scores)`: for every image a list of `[x, y, w, h]` and a list of scores (both empty
        when the file has nothing for it).
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"could not read boxes file {path!r}: {err}") from err
    per_key: dict[Any, list[tuple[list[float], float]]] = {}

    def add(key, bbox, score):
        per_key.setdefault(key, []).append(([float(v) for v in bbox], float(score)))

    if isinstance(data, list):
        for det in data:
            if not isinstance(det, dict) or "bbox" not in det or "image_id" not in det:
                raise ValueError(f"boxes file {path!r}: a COCO results entry needs image_id and bbox, got {det!r:.100}")
            if det.get("category_id", 1) != 1:
                continue
            add(int(det["image_id"]), det["bbox"], det.get("score", 1.0))
        keys = [_coco_image_id(image) for image in images]
    elif isinstance(data, dict) and "annotations" in data and "images" in data:
        names = {im["id"]: im["file_name"] for im in data["images"]}
        for ann in data["annotations"]:
            if ann.get("category_id", 1) != 1 or ann.get("iscrowd", 0):
                continue
            add(names.get(ann["image_id"]), ann["bbox"], ann.get("score", 1.0))
        keys = [Path(image).name for image in images]
    elif isinstance(data, dict):
        for key, entries in data.items():
            for entry in entries:
                if isinstance(entry, dict):
                    add(key, entry["bbox"], entry.get("score", 1.0))
                else:
                    add(key, entry, 1.0)
        keys = [image if image in per_key else Path(image).name for image in images]
    else:
        raise ValueError(f"boxes file {path!r}: expected a COCO results list or a dict, got {type(data).__name__}")
    boxes, scores = [], []
    for image, key in zip(images, keys):
        entries = per_key.get(key, [])
        if score_threshold is not None:
            entries = [e for e in entries if e[1] >= score_threshold]
        if not entries and key is None:
            logger.warning("cannot match %s to the boxes file (no numeric file name)", image)
        boxes.append([e[0] for e in entries])
        scores.append([e[1] for e in entries])
    return boxes, scores


# ---------------------------------------------------------------------------------------- predict


def _add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files, folders of images, or URLs; or one video file, camera index or (with --sequence) folder of frames")
    parser.add_argument("--model", "-m", required=True, help="model directory or hub id, or an ONNX export folder")
    parser.add_argument(
        "--onnx-file", default=None,
        help="with an ONNX export folder: the graph to run (model.onnx, default, or model_quantized.onnx)",
    )  # fmt: skip
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--boxes", help="person boxes JSON (COCO results, COCO annotations, or per-image lists)")
    source.add_argument(
        "--detector",
        help="person detector: a YOLOX .onnx file or a transformers object-detection model id or folder "
        "(default without --boxes: RT-DETR PekingU/rtdetr_r50vd_coco_o365, downloaded once into the Hugging Face cache)",
    )
    source.add_argument(
        "--whole-image", action="store_true",
        help="no detector: each image is one person covering the whole frame (for images holding one person)",
    )  # fmt: skip
    parser.add_argument("--detection-threshold", type=float, default=None, help="minimum person box score")
    parser.add_argument("--max-persons", type=int, default=None, help="at most this many persons per image")
    parser.add_argument(
        "--output", "-o", required=True,
        help="images: output JSON file, written atomically once every image is done; meanwhile each image's record "
        "({\"image\", \"persons\"} or {\"image\", \"error\", \"persons\": []}, as in the final \"images\" "
        "list) is appended to OUTPUT.partial.jsonl as soon as it is made, so a crash keeps the finished "
        "images; that file is removed once OUTPUT is written",
    )  # fmt: skip
    parser.add_argument(
        "--visualize", metavar="OUT_DIR", help="also write images with the skeletons drawn (one per image, as it is done)"
    )
    parser.add_argument("--no-flip", action="store_true", help="disable the flip test (faster, slightly less accurate)")
    parser.add_argument("--keypoint-threshold", type=float, default=None, help="drop keypoints scoring below this")
    parser.add_argument("--draw-threshold", type=float, default=0.3, help="keypoint score needed to be drawn")
    parser.add_argument("--dataset-index", type=int, default=None, help="ViTPose++ dataset head (0 = COCO)")
    parser.add_argument("--schema", default=None, help="keypoint schema name (default: from the model)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: auto)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--recursive", action="store_true", help="look for images in sub-folders too")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    video = parser.add_argument_group(
        "video", "for one video file, a camera index (0, 1, ...) or a folder of frames with --sequence: --output "
        "names the annotated video (X.mp4; the JSON Lines go to X.jsonl beside it) or a .jsonl file; see docs/video.md",
    )  # fmt: skip
    video.add_argument("--track", action="store_true", help="give each person a track id that stays across frames")
    video.add_argument("--smooth", action="store_true", help="One-Euro smoothing of each track's keypoints (needs --track)")
    video.add_argument(
        "--detect-every", type=int, default=1, metavar="N",
        help="run the person detector every N frames (and after a track is lost); in between, boxes follow the "
        "tracks (N > 1 needs --track)",
    )  # fmt: skip
    video.add_argument("--fps", type=float, default=None, help="frame rate (needed with --sequence; overrides a file's own)")
    video.add_argument("--sequence", action="store_true", help="the input folder holds the frames of one video, sorted by name")
    video.add_argument("--min-cutoff", type=float, default=None, help="One-Euro min_cutoff in Hz (docs/video.md)")
    video.add_argument("--beta", type=float, default=None, help="One-Euro beta (docs/video.md)")


def _device(spec: str | None):
    import torch

    if spec is not None:
        return torch.device(spec)
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def _coco_results(image: str, persons: list[dict], schema) -> list[dict]:
    image_id = _coco_image_id(image)
    out = []
    for person in persons:
        by_label = {kp["label"]: kp for kp in person["keypoints"]}
        flat = []
        for name in schema.keypoints:
            kp = by_label.get(name)
            flat.extend([kp["x"], kp["y"], kp["score"]] if kp else [0.0, 0.0, 0.0])
        out.append({"image_id": image_id, "category_id": 1, "keypoints": flat, "score": person["score"], "bbox": person["bbox"]})
    return out


def _pipeline_model(args: argparse.Namespace) -> dict[str, Any]:
    """`model=` and `device=` for the pipeline: an `OnnxPoseModel` for an ONNX export folder
    (onnxruntime, `--onnx-file` picks the graph), else the checkpoint path for PyTorch."""
    from .onnx_backend import OnnxPoseModel, is_onnx_export_dir, onnx_providers_for_device

    if is_onnx_export_dir(args.model):
        file_name = args.onnx_file or "model.onnx"
        model = OnnxPoseModel.from_pretrained(args.model, file_name=file_name, providers=onnx_providers_for_device(args.device))
        return {"model": model, "device": "cpu"}  # onnxruntime reads host memory: crops stay on the CPU
    if args.onnx_file:
        raise ValueError(f"--onnx-file needs an ONNX export folder as --model, {args.model!r} is not one")
    return {"model": args.model, "device": _device(args.device)}


def run_predict(args: argparse.Namespace) -> int:
    """Run `predict`; returns 0 when every image was processed, 1 when some failed.

    `--output` and `--visualize` are checked before the model is loaded (ValueError, exit status 2).
    Each image's record is appended to `<output>.partial.jsonl` as soon as it is made; the final
    JSON (format unchanged) is written atomically at the end and the partial file removed.
    """
    import transformers
    from tqdm.auto import tqdm

    from . import register
    from .jsonio import JsonLinesWriter, check_output_dir, check_output_file, write_json_atomic
    from .video.command import is_video_input, run_predict_video
    from .visualization import draw_keypoints

    register()
    if is_video_input(args):
        return run_predict_video(args, lambda: _pipeline_model(args))
    # before any work (the model is not even loaded): a run must not end unable to save its results
    out_path = check_output_file(args.output, "--output")
    partial_path = out_path.with_name(out_path.name + ".partial.jsonl")
    check_output_file(partial_path, "--output (its .partial.jsonl)")
    if args.visualize:
        check_output_dir(args.visualize, "--visualize")
    images = collect_images(args.images, recursive=args.recursive)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    boxes = scores = None
    if args.boxes:
        boxes, scores = load_boxes_file(args.boxes, images, args.detection_threshold)
    pipe = transformers.pipeline("keypoint-detection", **_pipeline_model(args))
    schema = pipe.schema_for(args.dataset_index, args.schema)
    call_kwargs: dict[str, Any] = {"flip_test": not args.no_flip}
    if args.detector:
        call_kwargs["detector"] = args.detector
    elif args.whole_image:
        call_kwargs["whole_image"] = True
    elif not args.boxes:
        pipe.default_detector()  # loaded before the first image: offline, this stops here with the way out
    if args.detection_threshold is not None and not args.boxes:
        call_kwargs["detection_threshold"] = args.detection_threshold
    for key in ("max_persons", "keypoint_threshold", "dataset_index", "schema"):
        if getattr(args, key) is not None:
            call_kwargs[key] = getattr(args, key)
    if args.visualize:
        os.makedirs(args.visualize, exist_ok=True)

    records: list[dict] = []
    partial = JsonLinesWriter(partial_path)
    bar = tqdm(total=len(images), unit="img", disable=args.quiet or len(images) < 2, desc="predict")
    try:
        _predict_all(args, pipe, schema, images, boxes, scores, call_kwargs, records, partial, bar, draw_keypoints)
    finally:
        bar.close()
        partial.close()  # left on disk after a failure: it holds every finished image
    failures = sum(1 for rec in records if "error" in rec)

    coco = [entry for rec in records for entry in _coco_results(rec["image"], rec["persons"], schema)]
    payload = {
        "model": str(args.model),
        "schema": schema.name,
        "keypoint_names": list(schema.keypoints),
        "flip_test": not args.no_flip,
        "images": records,
    }
    if all(entry["image_id"] is not None for entry in coco):
        payload["coco_results"] = coco
    write_json_atomic(out_path, payload, indent=1)
    partial.remove()
    logger.info("wrote %d images (%d persons) to %s", len(records), sum(len(r["persons"]) for r in records), out_path)
    return 1 if failures else 0


def _predict_all(args, pipe, schema, images, boxes, scores, call_kwargs, records, partial, bar, draw_keypoints) -> None:
    """The per-chunk loop of `run_predict`: each image's record goes to `records` and, at once, to
    the `partial` JSON Lines file (before its drawing, which may fail)."""
    for start in range(0, len(images), args.batch_size):
        chunk = images[start : start + args.batch_size]
        extra = {}
        if boxes is not None:
            extra = {"boxes": boxes[start : start + len(chunk)], "box_scores": scores[start : start + len(chunk)]}
        try:
            chunk_results = pipe(chunk, batch_size=len(chunk), **call_kwargs, **extra)
        except ValueError:
            # one bad image should not sink the others: redo this chunk one image at a time
            chunk_results = []
            for i, image in enumerate(chunk):
                single = {k: [v[i]] for k, v in extra.items()}
                try:
                    chunk_results.append(pipe([image], **call_kwargs, **single)[0])
                except ValueError as err:
                    logger.error("%s: %s", image, err)
                    chunk_results.append(err)
        for image, result in zip(chunk, chunk_results):
            if isinstance(result, Exception):
                record = {"image": image, "error": str(result), "persons": []}
            else:
                record = {"image": image, "persons": result}
            records.append(record)
            partial.write(record)
            if args.visualize and not isinstance(result, Exception):
                drawn = draw_keypoints(image, result, schema=schema, keypoint_threshold=args.draw_threshold)
                name = Path(image.split("?")[0]).stem or f"image{len(records)}"
                drawn.save(Path(args.visualize) / f"{name}.png")
        bar.update(len(chunk))


# ---------------------------------------------------------------------------------------- export


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved vitpose_hf or transformers VitPose checkpoint (directory or hub id)")
    parser.add_argument("output_dir", help="folder to write model.onnx, config.json, preprocessor_config.json to")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="export format (onnx)")
    parser.add_argument("--quantize", default=None, choices=["int8"], help="also write model_quantized.onnx (int8 weights)")
    parser.add_argument("--opset", type=int, default=20, help="ONNX opset, 18..23 (default 20)")


def run_export(args: argparse.Namespace) -> int:
    """Run `export`: load the checkpoint, write the ONNX folder (checked against PyTorch); returns 0."""
    from .export import export_onnx
    from .image_processing_vitpose import VitPoseTopDownImageProcessor
    from .modeling_vitpose import VitPoseForPoseEstimation

    model = VitPoseForPoseEstimation.from_pretrained(args.model)
    try:
        processor = VitPoseTopDownImageProcessor.from_pretrained(args.model)
    except (OSError, ValueError) as err:
        logger.info("no preprocessor config in %s (%s): the export gets a default one for the model size", args.model, err)
        processor = None
    path = export_onnx(model, args.output_dir, opset=args.opset, quantize=args.quantize, image_processor=processor)
    logger.info("exported %s to %s%s", args.model, path.parent, " (with model_quantized.onnx)" if args.quantize else "")
    return 0


# ---------------------------------------------------------------------------------------- main


def _load_command(module_name: str):
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        logger.debug("%s unavailable: %s", module_name, err)
        return None
    if not (hasattr(module, "add_arguments") and hasattr(module, "run")):
        return None
    return module


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    """The `vitpose-hf` argument parser.

    Delegated subcommands (`evaluate`, `train`) get their full options only when `load` names them
    (their modules import heavier dependencies); otherwise they are listed with their help line.
    """
    parser = argparse.ArgumentParser(prog="vitpose-hf", description="ViTPose / ViTPose++ for the Hugging Face stack")
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING, ...)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    predict = sub.add_parser("predict", help="keypoints for images -> JSON (+ drawings); for a video: tracked poses -> annotated video + JSON Lines")
    _add_predict_arguments(predict)
    predict.set_defaults(func=run_predict)
    export = sub.add_parser("export", help="export a checkpoint to an ONNX folder (+ int8 quantization)")
    _add_export_arguments(export)
    export.set_defaults(func=run_export)
    sub.add_parser("convert", help="convert official / transformers checkpoints (see `vitpose-hf convert --help`)", add_help=False)
    for name, (module_name, help_text) in _DELEGATED.items():
        if name != load:
            if importlib.util.find_spec(module_name) is not None:
                sub.add_parser(name, help=help_text)
            continue
        module = _load_command(module_name)
        if module is None:
            continue
        child = sub.add_parser(name, help=help_text)
        module.add_arguments(child)
        child.set_defaults(func=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `vitpose-hf`; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:
        level = "INFO"
        if "--log-level" in argv[:-1]:
            level = argv[argv.index("--log-level") + 1]
        logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO), format="%(levelname)s %(name)s: %(message)s")
    # `convert` owns its whole argument list (including --help)
    rest = [a for a in argv]
    if "--log-level" in rest[:-1]:
        i = rest.index("--log-level")
        del rest[i : i + 2]
    if rest and rest[0] == "convert":
        from .convert_vitpose_to_hf import main as convert_main

        return int(convert_main(rest[1:], prog="vitpose-hf convert") or 0)
    if rest and rest[0] in _DELEGATED and _load_command(_DELEGATED[rest[0]][0]) is None:
        print(f"vitpose-hf {rest[0]}: not available in this installation ({_DELEGATED[rest[0]][0]} missing)", file=sys.stderr)
        return 2
    parser = build_parser(load=rest[0] if rest else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as err:
        print(f"vitpose-hf {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
