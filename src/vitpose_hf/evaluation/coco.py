"""COCO keypoint evaluation (OKS AP) through pycocotools, for any keypoint layout.

`coco_keypoint_eval` runs pycocotools' ``COCOeval(iouType="keypoints")`` with the schema's OKS
sigmas (``params.kpt_oks_sigmas``) and returns the ten numbers of the COCO keypoint summary.
Ground-truth files without an ``area`` per annotation (CrowdPose, AI Challenger) are evaluated as
the original ViTPose/mmpose code does with ``use_area=False``: the OKS scale and the area ranges use
``bbox_w * bbox_h * 0.53``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..data.coco import check_unique_ids
from ..heatmaps import as_float64_array
from ..jsonio import read_json
from .nms import person_keypoint_array, resolve_sigmas

logger = logging.getLogger(__name__)

METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
"""Keys of the dict returned by :func:`coco_keypoint_eval`, in pycocotools' `stats` order."""

# xtcocotools' `use_area=False` factor: bbox area -> segmentation-like area.
BBOX_AREA_FACTOR = 0.53

__all__ = [
    "METRIC_NAMES",
    "coco_keypoint_eval",
    "load_coco",
    "persons_to_coco_results",
    "format_metrics_table",
    "ground_truth_as_results",
]


def _quiet_call(fn, *args, **kwargs):
    """Run a pycocotools call with its stdout captured and sent to the debug log."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = fn(*args, **kwargs)
    text = buffer.getvalue().strip()
    if text:
        logger.debug("pycocotools: %s", text)
    return result


def _check_ground_truth(dataset: Mapping, source: str) -> None:
    """Refuse duplicated image / annotation ids and non-finite boxes or keypoints in a ground truth.

    pycocotools indexes both by id and keeps the last duplicate: with a duplicated annotation id one
    person is scored twice and another never (perfect predictions on coco_sample gave AP 0.835), and
    a duplicated image id binds annotations to the wrong image.
    """
    images, annotations = dataset.get("images") or [], dataset.get("annotations") or []
    check_unique_ids(images, source, "image", describe=lambda img: f"file_name {img.get('file_name')!r}")
    check_unique_ids(annotations, source, "annotation")
    for pos, ann in enumerate(annotations):
        name = f"{source}: annotation id {ann.get('id', f'#{pos}')!r}"
        for field in ("bbox", "keypoints"):
            if field not in ann:
                continue
            try:
                values = np.asarray(ann[field], dtype=np.float64).reshape(-1)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{name}: field {field!r} is not a list of numbers ({err})") from None
            if not np.all(np.isfinite(values)):
                raise ValueError(f"{name}: field {field!r} holds a non-finite value: {ann[field]!r}")


def load_coco(gt_annotations):
    """A pycocotools `COCO` from a path, a dict (deep-copied) or an existing `COCO` (returned as is).

    The ground truth is checked first: an image or annotation id that appears twice, or a NaN / inf
    bbox or keypoint, raises a ValueError naming the file (or "ground-truth dict"), the id and the
    field. Annotations without an `id` get fresh ids above the largest one present.
    """
    from pycocotools.coco import COCO

    if isinstance(gt_annotations, COCO):
        _check_ground_truth(gt_annotations.dataset, getattr(gt_annotations, "vitpose_source", "ground-truth COCO"))
        return gt_annotations
    source = "ground-truth dict"
    if isinstance(gt_annotations, (str, os.PathLike)):
        source = os.fspath(gt_annotations)
        gt_annotations = read_json(gt_annotations, "annotation file")
    if not isinstance(gt_annotations, Mapping):
        raise ValueError(
            "gt_annotations must be a path, a COCO-format dict or a pycocotools COCO, "
            f"got {type(gt_annotations).__name__}"
        )
    missing = [key for key in ("images", "annotations") if key not in gt_annotations]
    if missing:
        raise ValueError(f"{source}: ground truth lacks {missing}")
    _check_ground_truth(gt_annotations, source)
    dataset = copy.deepcopy(dict(gt_annotations))
    dataset.setdefault("categories", [{"id": 1, "name": "person", "supercategory": "person"}])
    known = [ann["id"] for ann in dataset["annotations"] if isinstance(ann.get("id"), int)]
    next_id = max(known, default=0) + 1
    for ann in dataset["annotations"]:
        if "id" not in ann:  # pycocotools' index needs one; a fresh id cannot collide
            ann["id"] = next_id
            next_id += 1
    coco = COCO()
    coco.dataset = dataset
    _quiet_call(coco.createIndex)
    coco.vitpose_source = source  # named in later errors (ground-truth boxes)
    return coco


def _ground_truth_keypoint_count(coco) -> int | None:
    counts = sorted({len(ann["keypoints"]) // 3 for ann in coco.dataset["annotations"] if "keypoints" in ann})
    if len(counts) > 1:
        raise ValueError(f"ground-truth annotations have different keypoint counts: {counts}")
    if not counts:
        for cat in coco.dataset.get("categories", []):
            if cat.get("keypoints"):
                return len(cat["keypoints"])
        return None
    return counts[0]


def _prepare_ground_truth(coco, use_area: bool | None):
    """A copy of the ground truth ready for pycocotools' keypoint evaluation.

    Fills `num_keypoints` (count of v > 0) and `iscrowd` (0) where absent, checks every annotation
    has a bbox and 3K keypoint values, and, when `use_area` is False (or None and some annotation
    has no `area`), sets ``area = w * h * 0.53``.
    """
    from pycocotools.coco import COCO

    dataset = copy.deepcopy(coco.dataset)
    anns = dataset["annotations"]
    if use_area is None:
        use_area = all("area" in ann for ann in anns)
        if not use_area:
            logger.info("ground truth has annotations without 'area': using bbox area * %.2f", BBOX_AREA_FACTOR)
    for idx, ann in enumerate(anns):
        missing = [key for key in ("image_id", "bbox", "keypoints") if key not in ann]
        if missing:
            raise ValueError(f"ground-truth annotation {ann.get('id', idx)} lacks {missing}")
        if len(ann["keypoints"]) % 3 != 0:
            raise ValueError(
                f"ground-truth annotation {ann.get('id', idx)} has {len(ann['keypoints'])} keypoint values (not 3K)"
            )
        ann.setdefault("category_id", 1)
        ann.setdefault("iscrowd", 0)
        if "num_keypoints" not in ann:
            ann["num_keypoints"] = int(np.count_nonzero(np.asarray(ann["keypoints"], dtype=np.float64)[2::3] > 0))
        if not use_area:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3]) * BBOX_AREA_FACTOR
    prepared = COCO()
    prepared.dataset = dataset
    _quiet_call(prepared.createIndex)
    return prepared


def _check_predictions(predictions, image_ids: set, num_keypoints: int) -> list[dict]:
    """Validated deep copies of COCO result dicts (pycocotools modifies the dicts it loads)."""
    if isinstance(predictions, Mapping) or isinstance(predictions, (str, bytes)):
        raise ValueError(f"predictions must be a list of COCO result dicts, got {type(predictions).__name__}")
    checked = []
    for idx, pred in enumerate(predictions):
        if not isinstance(pred, Mapping):
            raise ValueError(f"prediction {idx} is a {type(pred).__name__}, not a dict")
        missing = [key for key in ("image_id", "keypoints", "score") if key not in pred]
        if missing:
            raise ValueError(f"prediction {idx} lacks {missing} (COCO results need image_id, keypoints, score)")
        keypoints = as_float64_array(pred["keypoints"], f"prediction {idx} keypoints").reshape(-1)
        if keypoints.shape[0] != 3 * num_keypoints:
            raise ValueError(
                f"prediction {idx} has {keypoints.shape[0]} keypoint values ({keypoints.shape[0] / 3:g} keypoints) "
                f"but the ground truth / sigmas have {num_keypoints} keypoints ({3 * num_keypoints} values)"
            )
        score = float(pred["score"])
        if not (np.all(np.isfinite(keypoints)) and math.isfinite(score)):
            raise ValueError(f"prediction {idx} holds non-finite keypoints or score")
        image_id = pred["image_id"]
        image_id = image_id.item() if hasattr(image_id, "item") else image_id
        if image_id not in image_ids:
            raise ValueError(f"prediction {idx} has image_id {image_id!r}, which is not in the ground truth")
        checked.append(
            {
                "image_id": image_id,
                "category_id": int(pred.get("category_id", 1)),
                "keypoints": keypoints.tolist(),
                "score": score,
            }
        )
    return checked


def coco_keypoint_eval(
    gt_annotations,
    predictions: Sequence[Mapping[str, Any]],
    sigmas=None,
    use_area: bool | None = None,
    skip_zero_score_predictions: bool = True,
) -> dict[str, float]:
    """COCO keypoint AP/AR of `predictions` against `gt_annotations` (pycocotools `COCOeval`).

    Args:
        gt_annotations: a COCO keypoint annotation file path, its dict, or a pycocotools `COCO`.
            Not modified. Annotations need `image_id`, `bbox`, `keypoints` (3K values);
            `num_keypoints`, `iscrowd`, `category_id` (1) and `id` are filled in when absent.
        predictions: COCO results: dicts with `image_id`, `keypoints` (flat [x, y, s] * K),
            `score` and optionally `category_id` (default 1). Not modified.
        sigmas: OKS sigmas: a schema name ("coco", "crowdpose", "aic", ...), a `KeypointSchema`, K
            floats, or None to pick the only schema with K keypoints (COCO for 17).
        use_area: use the annotations' `area` as OKS scale (COCO); False uses bbox area * 0.53
            (CrowdPose/AIC in the original code); None: True when every annotation has `area`.
        skip_zero_score_predictions: drop predictions none of whose keypoint scores is > 0 before
            evaluating, as xtcocotools (the COCOeval of the original ViTPose/mmpose code) does;
            plain pycocotools keeps them (False).

    Returns:
        ``{"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}`` as floats.
        pycocotools reports -1.0 for a number without any ground truth (e.g. APm when there is
        no medium person). Empty `predictions` give 0.0 for every number (no evaluation is run).

    Raises:
        ValueError: missing fields, keypoint counts that differ between predictions, ground truth
            and sigmas, unknown image ids, non-finite values.
    """
    from pycocotools.cocoeval import COCOeval

    coco = load_coco(gt_annotations)
    num_keypoints = _ground_truth_keypoint_count(coco)
    if num_keypoints is None:
        if predictions:
            num_keypoints = len(predictions[0].get("keypoints", [])) // 3
        else:
            num_keypoints = None
    sig = resolve_sigmas(sigmas, num_keypoints) if num_keypoints is not None else resolve_sigmas(sigmas)
    num_keypoints = sig.shape[0]
    gt = _prepare_ground_truth(coco, use_area)
    results = _check_predictions(predictions, set(gt.getImgIds()), num_keypoints)
    if skip_zero_score_predictions:
        kept = [r for r in results if any(v > 0 for v in r["keypoints"][2::3])]
        if len(kept) != len(results):
            logger.info("skipping %d predictions without any keypoint score > 0", len(results) - len(kept))
        results = kept
    if not results:
        logger.warning("no predictions to evaluate: every metric is 0.0")
        return {name: 0.0 for name in METRIC_NAMES}
    dt = _quiet_call(gt.loadRes, results)
    evaluator = COCOeval(gt, dt, iouType="keypoints")
    evaluator.params.kpt_oks_sigmas = sig
    _quiet_call(evaluator.evaluate)
    _quiet_call(evaluator.accumulate)
    _quiet_call(evaluator.summarize)
    stats = [float(v) for v in evaluator.stats[: len(METRIC_NAMES)]]
    return dict(zip(METRIC_NAMES, stats))


def persons_to_coco_results(
    persons: Iterable[Any],
    image_ids: Sequence[Any] | None = None,
    category_id: int = 1,
) -> list[dict]:
    """Person dicts -> COCO keypoint results (``image_id, category_id, keypoints, score``).

    Args:
        persons: either a flat list of person dicts each holding ``"image_id"``, or (with
            `image_ids`) one list of person dicts per image. A person has ``"keypoints"`` `(K, 2)`
            and ``"scores"`` `(K,)` (as `post_process_pose_estimation` returns them), or
            ``"keypoints"`` `(K, 3)`; and ``"score"`` (the person score; 1.0 when absent).
        image_ids: the image id of each entry of `persons` when it is nested per image.
        category_id: COCO category (1 = person).

    Returns:
        list of dicts with ``keypoints`` flat ``[x1, y1, s1, ..., xK, yK, sK]`` as Python floats.
    """
    persons = list(persons)
    if image_ids is not None:
        image_ids = list(image_ids)
        if len(image_ids) != len(persons):
            raise ValueError(f"{len(image_ids)} image_ids for {len(persons)} per-image person lists")
        flat = []
        for image_id, group in zip(image_ids, persons):
            for person in group:
                flat.append((image_id, person))
    else:
        flat = []
        for idx, person in enumerate(persons):
            if not isinstance(person, Mapping) or "image_id" not in person:
                raise ValueError(f"person {idx} has no 'image_id' (pass image_ids= for per-image lists)")
            flat.append((person["image_id"], person))
    results = []
    for idx, (image_id, person) in enumerate(flat):
        if "keypoints" not in person:
            raise ValueError(f"person {idx} has no 'keypoints'")
        kp = person_keypoint_array(person, idx)
        score = float(as_float64_array(person.get("score", 1.0), f"person {idx} score").reshape(-1)[0])
        if not (np.all(np.isfinite(kp)) and math.isfinite(score)):
            raise ValueError(f"person {idx} holds non-finite keypoints or score")
        image_id = image_id.item() if hasattr(image_id, "item") else image_id
        results.append(
            {
                "image_id": image_id,
                "category_id": int(category_id),
                "keypoints": [float(v) for v in kp.reshape(-1)],
                "score": score,
            }
        )
    return results


def ground_truth_as_results(gt_annotations, score: float = 1.0) -> list[dict]:
    """The ground truth's own keypoints as COCO results (non-crowd, num_keypoints > 0).

    Visibility flags are replaced by 1.0 (pycocotools ignores result keypoint scores); useful to
    check an evaluation setup (it must give AP 1.0).
    """
    coco = load_coco(gt_annotations)
    results = []
    for ann in coco.dataset["annotations"]:
        kps = np.asarray(ann.get("keypoints", []), dtype=np.float64).reshape(-1, 3)
        if ann.get("iscrowd", 0) or not np.any(kps[:, 2] > 0):
            continue
        kps = kps.copy()
        kps[:, 2] = 1.0
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann.get("category_id", 1),
                "keypoints": kps.reshape(-1).tolist(),
                "score": float(score),
            }
        )
    return results


def format_metrics_table(metrics: Mapping[str, float]) -> str:
    """A two-row text table of the metrics (names, then values with 3 decimals)."""
    names = [name for name in METRIC_NAMES if name in metrics] + [n for n in metrics if n not in METRIC_NAMES]
    width = max([6] + [len(n) + 1 for n in names])
    header = "".join(f"{n:>{width}}" for n in names)
    values = "".join(
        f"{metrics[n]:>{width}.3f}" if isinstance(metrics[n], (int, float)) else f"{str(metrics[n]):>{width}}"
        for n in names
    )
    return f"{header}\n{values}"


def to_metric_rows(gt_annotations, predictions: Sequence[Mapping[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Ground truth + COCO results -> per-image rows for the `evaluate` OKS-AP metric.

    One row per ground-truth image (sorted by id), in both lists:
    ``predictions[i] = {"image_id", "keypoints": (P, 3K) lists, "scores": (P,)}`` and
    ``references[i] = {"image_id", "keypoints": (G, 3K), "bboxes": (G, 4), "areas": (G,) or None,
    "iscrowd": (G,)}``. `areas` is None for an image when some of its annotations lack `area`.
    """
    coco = load_coco(gt_annotations)
    image_ids = sorted(coco.getImgIds())
    known = set(image_ids)
    per_image: dict[Any, list] = {image_id: [] for image_id in image_ids}
    for idx, pred in enumerate(predictions):
        if "image_id" not in pred:
            raise ValueError(f"prediction {idx} lacks 'image_id'")
        image_id = pred["image_id"]
        if image_id not in known:
            raise ValueError(f"prediction {idx} has image_id {image_id!r}, which is not in the ground truth")
        per_image[image_id].append(pred)
    pred_rows, ref_rows = [], []
    for image_id in image_ids:
        preds = per_image[image_id]
        pred_rows.append(
            {
                "image_id": image_id,
                "keypoints": [[float(v) for v in p["keypoints"]] for p in preds],
                "scores": [float(p["score"]) for p in preds],
            }
        )
        anns = [a for a in coco.imgToAnns.get(image_id, []) if "keypoints" in a]
        ref_rows.append(
            {
                "image_id": image_id,
                "keypoints": [[float(v) for v in a["keypoints"]] for a in anns],
                "bboxes": [[float(v) for v in a["bbox"]] for a in anns],
                "areas": [float(a["area"]) for a in anns] if all("area" in a for a in anns) else None,
                "iscrowd": [int(a.get("iscrowd", 0)) for a in anns],
            }
        )
    return pred_rows, ref_rows


def from_metric_rows(
    predictions: Sequence[Mapping[str, Any]], references: Sequence[Mapping[str, Any]]
) -> tuple[dict, list[dict], bool]:
    """Per-image metric rows (see :func:`to_metric_rows`) -> (COCO ground-truth dict, COCO results, use_area).

    `use_area` is False when any reference row has no `areas` (then bbox area * 0.53 is used).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} prediction rows but {len(references)} reference rows")
    images, annotations, results = [], [], []
    use_area = True
    seen = set()
    for row_idx, ref in enumerate(references):
        image_id = ref["image_id"]
        if image_id in seen:
            raise ValueError(f"reference row {row_idx}: image_id {image_id!r} appears twice")
        seen.add(image_id)
        images.append({"id": image_id})
        keypoints = ref.get("keypoints") or []
        bboxes = ref.get("bboxes") or []
        areas = ref.get("areas")
        iscrowd = ref.get("iscrowd") or [0] * len(keypoints)
        if len(bboxes) != len(keypoints) or len(iscrowd) != len(keypoints):
            raise ValueError(
                f"reference row {row_idx}: {len(keypoints)} keypoint sets, {len(bboxes)} bboxes, "
                f"{len(iscrowd)} iscrowd flags (must be equal)"
            )
        if areas is None:
            use_area = False
        elif len(areas) != len(keypoints):
            raise ValueError(f"reference row {row_idx}: {len(areas)} areas for {len(keypoints)} keypoint sets")
        for j, kps in enumerate(keypoints):
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": 1,
                "keypoints": list(kps),
                "bbox": list(bboxes[j]),
                "iscrowd": int(iscrowd[j]),
            }
            if areas is not None:
                ann["area"] = float(areas[j])
            annotations.append(ann)
    for row_idx, pred in enumerate(predictions):
        image_id = pred["image_id"]
        keypoints = pred.get("keypoints") or []
        scores = pred.get("scores") or []
        if len(scores) != len(keypoints):
            raise ValueError(f"prediction row {row_idx}: {len(keypoints)} keypoint sets but {len(scores)} scores")
        for kps, score in zip(keypoints, scores):
            results.append({"image_id": image_id, "category_id": 1, "keypoints": list(kps), "score": score})
    gt = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}
    return gt, results, use_area
