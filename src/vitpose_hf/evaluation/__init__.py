"""COCO-style keypoint evaluation: OKS AP through pycocotools, OKS-NMS, rescoring, model evaluation.

Public API:
    coco_keypoint_eval(gt_annotations, predictions, sigmas=None, use_area=None) -> dict
    persons_to_coco_results(persons, image_ids=None, category_id=1) -> list[dict]
    oks_iou(...), oks_nms(persons, threshold=0.9, sigmas="coco"), oks_nms_arrays(...)
    rescore(persons, keypoint_threshold=0.2), rescore_scores(box_scores, keypoint_scores, ...)
    evaluate_model(model, processor, annotation_file, image_dir, ...) -> dict
    load_metric("oks_ap") -> evaluate.EvaluationModule: the `evaluate` metric by name, offline.
    OKS_AP_METRIC_PATH: path of the `evaluate` metric script (``evaluate.load(OKS_AP_METRIC_PATH)``).
"""

from pathlib import Path

from .coco import (
    METRIC_NAMES,
    coco_keypoint_eval,
    format_metrics_table,
    from_metric_rows,
    ground_truth_as_results,
    load_coco,
    persons_to_coco_results,
    to_metric_rows,
)
from .topdown import detection_boxes, evaluate_model, ground_truth_boxes, predict_coco_results
from .nms import crop_box_areas, oks_iou, oks_nms, oks_nms_arrays, rescore, rescore_scores, resolve_sigmas

OKS_AP_METRIC_PATH = str(Path(__file__).resolve().parent / "metrics" / "oks_ap" / "oks_ap.py")
"""Path of the `evaluate` metric script: ``evaluate.load(OKS_AP_METRIC_PATH)`` works offline."""

METRICS = {"oks_ap": OKS_AP_METRIC_PATH}
"""The `evaluate` metrics shipped with vitpose_hf, by name."""


def load_metric(name: str = "oks_ap", **kwargs):
    """An `evaluate` metric shipped with vitpose_hf, by name: `evaluate.load` of the packaged script,
    so no Hub access is needed (`evaluate.load("oks_ap")` alone would look for a Hub module).

    Args:
        name: `"oks_ap"` (COCO keypoint OKS AP through pycocotools; `"vitpose_hf/oks_ap"` also works).
        **kwargs: passed to `evaluate.load` (`experiment_id`, `keep_in_memory`, ...).

    Raises:
        ValueError: an unknown name (the known ones are listed).
    """
    import evaluate

    key = name[len("vitpose_hf/"):] if name.startswith("vitpose_hf/") else name
    if key not in METRICS:
        raise ValueError(f"unknown vitpose_hf metric {name!r}; known: {sorted(METRICS)}")
    return evaluate.load(METRICS[key], **kwargs)


__all__ = [
    "METRIC_NAMES",
    "METRICS",
    "OKS_AP_METRIC_PATH",
    "load_metric",
    "coco_keypoint_eval",
    "crop_box_areas",
    "detection_boxes",
    "evaluate_model",
    "ground_truth_boxes",
    "predict_coco_results",
    "format_metrics_table",
    "from_metric_rows",
    "ground_truth_as_results",
    "load_coco",
    "oks_iou",
    "oks_nms",
    "oks_nms_arrays",
    "persons_to_coco_results",
    "rescore",
    "rescore_scores",
    "resolve_sigmas",
    "to_metric_rows",
]
