"""Model cards (`README.md` with the Hub's YAML front matter) for the folders vitpose_hf writes.

`write_model_card(folder, config, ...)` builds the card with `huggingface_hub.ModelCard` /
`ModelCardData` (the Hub's own schema and YAML writer, so the metadata is what the Hub validates):
`library_name: vitpose_hf`, `pipeline_tag: keypoint-detection`, tags, the base model and
datasets when known, the metrics measured in the run, then what the model is and a usage snippet
that runs against the folder (or the Hub id it is pushed to).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .jsonio import write_text_atomic
from .version import __version__

logger = logging.getLogger(__name__)

__all__ = ["write_model_card", "model_card_text"]

_METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR")


def _describe(config) -> str:
    parts = [
        f"{config.hidden_size}-wide, {config.num_hidden_layers}-block ViT",
        f"input {config.image_size[0]}x{config.image_size[1]}",
        f"{config.num_labels} keypoints" + (f" ({config.keypoint_schema})" if getattr(config, "keypoint_schema", None) else ""),
        "simple decoder" if config.use_simple_decoder else "classic decoder",
    ]
    if config.num_experts > 1:
        parts.append(f"ViTPose++ MoE with {config.num_experts} experts")
    if config.dataset_heads:
        parts.append(f"{len(config.dataset_heads)} extra dataset heads")
    return ", ".join(parts)


def model_card_text(
    config,
    repo_id: str | None = None,
    metrics: Mapping[str, float] | None = None,
    base_model: str | None = None,
    datasets: Sequence[str] | None = None,
    source: str = "vitpose_hf",
    extra_text: str | None = None,
    tags: Sequence[str] | None = None,
    transformers_format: bool = False,
    usage: str = "pytorch",
) -> str:
    """The card's markdown (front matter included).

    Args:
        config: the model's `VitPoseConfig`.
        repo_id: the Hub id (or local path) the usage snippet loads; default: `"path/to/this/folder"`.
        metrics: COCO keypoint metrics (`AP`, `eval_AP`, ...), listed when given.
        base_model / datasets: Hub ids for the front matter, when known.
        source: how the folder was made (e.g. "trained with examples/run_pose.py").
        extra_text: a paragraph appended before the usage.
        tags: extra Hub tags.
        transformers_format: the folder is in transformers' own VitPose format (`convert
            --to-transformers`): `library_name: transformers` and a snippet with transformers' classes.
        usage: `"pytorch"` (the default snippet) or `"onnx"` (an ONNX export: the pipeline runs it
            with onnxruntime; no PyTorch weights, no code for trust_remote_code).
    """
    from huggingface_hub import ModelCard, ModelCardData

    clean = {}
    for key, value in (metrics or {}).items():
        name = key[len("eval_"):] if key.startswith("eval_") else key
        if name in _METRIC_NAMES and isinstance(value, (int, float)):
            clean[name] = float(value)
    data = ModelCardData(
        library_name="transformers" if transformers_format else "vitpose_hf",
        pipeline_tag="keypoint-detection",
        tags=["vitpose", "pose-estimation", "keypoint-detection", "vision"] + [t for t in (tags or []) if t],
        base_model=base_model,
        datasets=list(datasets) if datasets else None,
        license=None,
    )
    target = repo_id or "path/to/this/folder"
    lines = [
        "---", data.to_yaml(), "---", "",
        "# ViTPose keypoint model", "",
        f"{_describe(config)}; {source}, with vitpose_hf {__version__}.", "",
    ]
    if clean:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v:.4f} |" for k, v in clean.items()] + [""]
    if extra_text:
        lines += [extra_text, ""]
    if transformers_format:
        snippet = _transformers_usage(target)
    elif usage == "onnx":
        snippet = _onnx_usage(target)
    else:
        snippet = _usage(target)
    lines += ["## Usage", ""] + snippet
    return str(ModelCard("\n".join(lines)))


def _usage(target: str) -> list[str]:
    return [
        "Needs `pip install vitpose_hf` (the package registers the model with transformers and provides the "
        "pipeline). Without it, transformers alone loads the model and its image processor from the code saved "
        "in the folder: `AutoModelForPoseEstimation.from_pretrained(..., trust_remote_code=True)`.", "",
        "```python",
        "import vitpose_hf  # registers the model and the \"keypoint-detection\" pipeline",
        "from transformers import pipeline",
        "from PIL import Image",
        "",
        f'pose = pipeline("keypoint-detection", model="{target}")',
        'image = Image.new("RGB", (192, 256), "white")  # your image',
        "people = pose(image, boxes=[[40, 30, 100, 200]])  # person boxes [x, y, w, h]; or a detector",
        'print(people[0]["keypoints"][:3])',
        "```",
        "",
    ]


def _onnx_usage(target: str) -> list[str]:
    lines = _usage(target)
    lines[0] = ("Needs `pip install vitpose_hf onnxruntime`: the \"keypoint-detection\" pipeline runs `model.onnx` "
                "with onnxruntime (the folder holds no PyTorch weights and no model code).")
    return lines


def _transformers_usage(target: str) -> list[str]:
    return [
        "In transformers' own VitPose format: transformers alone loads it.", "",
        "```python",
        "import torch",
        "from PIL import Image",
        "from transformers import VitPoseForPoseEstimation, VitPoseImageProcessor",
        "",
        f'processor = VitPoseImageProcessor.from_pretrained("{target}")',
        f'model = VitPoseForPoseEstimation.from_pretrained("{target}").eval()',
        'image = Image.new("RGB", (192, 256), "white")  # your image',
        "boxes = [[[40, 30, 100, 200]]]  # per image, person boxes [x, y, w, h]",
        'inputs = processor(image, boxes=boxes, return_tensors="pt")',
        "with torch.no_grad():",
        "    outputs = model(**inputs)",
        "people = processor.post_process_pose_estimation(outputs, boxes=boxes)",
        'print(people[0][0]["keypoints"][:3])',
        "```",
        "",
    ]


def write_model_card(folder: str | os.PathLike, config, **kwargs: Any) -> Path:
    """Write `model_card_text(config, **kwargs)` to `folder/README.md` (`jsonio.write_text_atomic`).

    Returns:
        the card's path.
    """
    path = write_text_atomic(Path(folder) / "README.md", model_card_text(config, **kwargs))
    logger.info("wrote the model card %s", path)
    return path
