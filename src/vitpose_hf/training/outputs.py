"""What a training run leaves beside its model: the model card, a picture of its predictions, the AP line.

`write_run_card` writes the output folder's README.md (what was trained on what, the measured
metrics, the usage); `write_predictions_picture` draws the trained model's keypoints on the first
evaluation images (`predictions.png`); `report_metrics` prints the final COCO metrics of a run.
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np
import transformers
from PIL import Image

from ..evaluation import ground_truth_boxes, load_coco
from ..evaluation.coco import format_metrics_table
from ..modelcard import write_model_card
from ..visualization import draw_keypoints

logger = logging.getLogger(__name__)

__all__ = ["PREDICTIONS_PICTURE", "write_predictions_picture", "write_run_card", "report_metrics"]

PREDICTIONS_PICTURE = "predictions.png"


def write_predictions_picture(trainer, coco_eval: dict, output_dir: str, num_images: int = 4) -> str | None:
    """`output_dir/predictions.png`: the trained model's keypoints on the first `num_images`
    evaluation images (the evaluation's ground-truth boxes, `vitpose_hf.evaluation.ground_truth_boxes`;
    no flip test), side by side; returns its path."""
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    pipe = transformers.pipeline("keypoint-detection", model=model, image_processor=coco_eval["processor"],
                                 device=model.device)
    coco = load_coco(coco_eval["annotation_file"])
    boxes_per_image = ground_truth_boxes(coco)
    tiles = []
    for image_info in coco.dataset["images"][:num_images]:
        boxes, _ = boxes_per_image[image_info["id"]]
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


def write_run_card(trainer, model_args, data_args, training_args, eval_metrics) -> None:
    """The output folder's README.md: what was trained on what, the measured metrics, the usage."""
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


def report_metrics(result: dict) -> None:
    """Print the final COCO metrics of a `run_training` result (the one place that prints)."""
    metrics = result.get("eval") or {}
    ap = {k[len("eval_"):]: v for k, v in metrics.items() if k.startswith("eval_A")}
    line = ", ".join(f"{k}={v:.4f}" for k, v in sorted(ap.items())) if ap else "no evaluation data"
    sys.stdout.write(f"steps={result.get('global_step')} output_dir={result.get('output_dir')} COCO keypoint metrics: {line}\n")
    if ap:
        sys.stdout.write(format_metrics_table(ap) + "\n")
    picture = os.path.join(str(result.get("output_dir") or ""), PREDICTIONS_PICTURE)
    if ap and os.path.isfile(picture):
        sys.stdout.write(f"predictions on the first evaluation images: {picture}\n")
