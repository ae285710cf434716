"""`vitpose-hf evaluate`: COCO keypoint OKS AP of a model on an annotated image folder.

    vitpose-hf evaluate --model M --annotations ann.json --images DIR [--detections det.json]
        [--no-flip] [--output preds.json] [--batch-size 32] [--device cuda] [--schema coco]
        [--onnx-file model_quantized.onnx]

`--model` may be an ONNX export folder (`vitpose-hf export`): the graph then runs in onnxruntime
with the same processor, flip test and decoding.

`cli.py` dispatches here through `add_arguments(parser)` and `run(args)`.
"""

from __future__ import annotations

import argparse
import logging
import os

from ..image_processing_vitpose import VitPoseTopDownImageProcessor
from ..jsonio import check_output_file, write_json_atomic
from ..modeling_vitpose import VitPoseForPoseEstimation
from ..onnx_backend import OnnxPoseModel, is_onnx_export_dir, onnx_providers_for_device
from .coco import format_metrics_table
from .topdown import evaluate_model

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `evaluate` options to `parser`."""
    parser.add_argument(
        "--model", "-m", required=True,
        help="model directory or hub id (ours or transformers' format), or an ONNX export folder",
    )
    parser.add_argument(
        "--onnx-file", default=None,
        help="with an ONNX export folder: the graph to run (model.onnx, default, or model_quantized.onnx)",
    )
    parser.add_argument("--annotations", required=True, help="COCO keypoint annotation JSON (ground truth)")
    parser.add_argument("--images", required=True, help="folder holding the annotated images (their file_name)")
    parser.add_argument(
        "--detections", default=None,
        help="COCO-results person detections JSON (image_id, bbox xywh, score, category_id); default: ground-truth boxes",
    )  # fmt: skip
    parser.add_argument("--det-score-threshold", type=float, default=0.0, help="drop detections below this score")
    parser.add_argument("--no-flip", action="store_true", help="disable the flip test")
    parser.add_argument(
        "--output", default=None,
        help="write the predictions (COCO results JSON) here, before the metrics are computed; while the "
        "model runs, each image's predictions are appended to OUTPUT.partial.jsonl (one COCO result per "
        "line), which is removed once OUTPUT is written (atomically), so a crash keeps what was done",
    )  # fmt: skip
    parser.add_argument("--metrics-output", default=None, help="write the metrics JSON here (atomically)")
    parser.add_argument("--batch-size", type=int, default=32, help="person crops per forward pass")
    parser.add_argument(
        "--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)"
    )
    parser.add_argument(
        "--schema", default="coco", help="keypoint schema: flip pairs and OKS sigmas (coco, crowdpose, aic, ...)"
    )
    parser.add_argument("--dataset-index", type=int, default=None, help="ViTPose++ dataset index (expert / head)")
    parser.add_argument("--fp16", action="store_true", help="run the model in float16 (CUDA only)")


def _load(model_id: str, device, fp16: bool, onnx_file: str | None = None):
    import torch

    if is_onnx_export_dir(model_id):
        if fp16:
            raise ValueError("--fp16 applies to PyTorch models; an ONNX export runs its float32 or int8 graph")
        model = OnnxPoseModel.from_pretrained(
            model_id, file_name=onnx_file or "model.onnx", providers=onnx_providers_for_device(device)
        )
    elif onnx_file:
        raise ValueError(f"--onnx-file needs an ONNX export folder as --model, {model_id!r} is not one")
    else:
        model = VitPoseForPoseEstimation.from_pretrained(model_id)
        model.to(device)
        if fp16:
            if device.type != "cuda":
                raise ValueError("--fp16 needs a CUDA device")
            model.to(torch.float16)
    model.eval()
    try:
        processor = VitPoseTopDownImageProcessor.from_pretrained(model_id)
    except (OSError, ValueError) as err:
        processor = VitPoseTopDownImageProcessor.for_config(model.config)
        logger.info("no preprocessor config for %s (%s); default processor for %s", model_id, err, processor.crop_size)
    return model, processor


def run(args: argparse.Namespace) -> int:
    """Run the evaluation, print the metrics table; returns the exit status (0)."""
    import torch

    for name, path in (("--annotations", args.annotations), ("--detections", args.detections)):
        if path is not None and not os.path.isfile(path):
            raise ValueError(f"{name} file not found: {path}")
    if not os.path.isdir(args.images):
        raise ValueError(f"--images folder not found: {args.images}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    # before the model is loaded: an unwritable output must not cost a whole evaluation
    for name, path in (("--output", args.output), ("--metrics-output", args.metrics_output)):
        if path is not None:
            check_output_file(path, name)
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, processor = _load(args.model, device, args.fp16, getattr(args, "onnx_file", None))
    metrics = evaluate_model(
        model,
        processor,
        args.annotations,
        args.images,
        detection_file=args.detections,
        flip_test=not args.no_flip,
        batch_size=args.batch_size,
        det_score_threshold=args.det_score_threshold,
        schema=args.schema,
        dataset_index=args.dataset_index,
        output_file=args.output,
    )
    boxes = f"detections {args.detections}" if args.detections else "ground-truth boxes"
    print(f"{args.model} on {args.annotations} ({boxes}, flip test {'off' if args.no_flip else 'on'})")
    print(format_metrics_table(metrics))
    if args.metrics_output:
        write_json_atomic(args.metrics_output, metrics, indent=1)
    return 0
