"""OKS similarity, OKS non-maximum suppression and keypoint rescoring of top-down pose results.

These follow the test-time post-processing of the original ViTPose code (mmpose 0.x
`TopDownCocoDataset.evaluate`, `oks_iou`, `oks_nms`):

* rescoring: a person's score becomes ``box_score * mean(keypoint scores > 0.2)`` (0 when no
  keypoint score is above the threshold);
* OKS-NMS: persons of one image are visited by decreasing score; every remaining person whose OKS
  with the kept one is above the threshold (0.9) is dropped. The OKS "area" of a person is the area
  of its padded, aspect-corrected crop box (mmpose: ``prod(scale * 200)``), see :func:`crop_box_areas`.

Arrays may be numpy arrays or torch tensors; the computations run in numpy (float64) and the OKS
matrix is computed for all pairs at once. `rescore_scores` lives in `vitpose_hf.heatmaps` (the
pipeline rescores too) and is re-exported here.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..heatmaps import as_float64_array, rescore_scores
from ..similarity import oks_iou, oks_nms_arrays, resolve_sigmas

logger = logging.getLogger(__name__)

__all__ = [
    "oks_iou", "oks_nms", "oks_nms_arrays", "rescore", "rescore_scores", "crop_box_areas", "resolve_sigmas",
    "person_keypoint_array",
]  # fmt: skip


def oks_nms(
    persons: Sequence[Mapping[str, Any]],
    threshold: float = 0.9,
    sigmas="coco",
    vis_threshold: float | None = None,
) -> list[int]:
    """OKS-NMS over a list of person dicts of ONE image.

    Args:
        persons: each with ``"keypoints"`` `(K, 2)` + ``"scores"`` `(K,)`, or ``"keypoints"`` `(K, 3)`;
            ``"score"`` (the person score, after rescoring) and ``"area"`` (OKS area).
        threshold, sigmas, vis_threshold: as in :func:`oks_nms_arrays`.

    Returns:
        indices of the kept persons, highest score first.
    """
    if len(persons) == 0:
        return []
    kpts, scores, areas = [], [], []
    for idx, person in enumerate(persons):
        missing = [key for key in ("keypoints", "score", "area") if key not in person]
        if missing:
            raise ValueError(f"person {idx} lacks {missing} (needs keypoints, score, area)")
        kpts.append(person_keypoint_array(person, idx))
        scores.append(float(person["score"]))
        areas.append(float(person["area"]))
    shapes = {k.shape for k in kpts}
    if len(shapes) != 1:
        raise ValueError(f"persons have different keypoint counts: {sorted(s[0] for s in shapes)}")
    keep = oks_nms_arrays(np.stack(kpts), scores, areas, threshold, sigmas, vis_threshold)
    return keep.tolist()


def person_keypoint_array(person: Mapping[str, Any], idx: int) -> np.ndarray:
    """`(K, 3)` [x, y, score] of a person dict holding (K,2) keypoints + (K,) scores, (K,3), or
    the pipeline's list of `{"label", "x", "y", "score"}` (in schema order)."""
    entries = person["keypoints"]
    if isinstance(entries, (list, tuple)) and entries and isinstance(entries[0], Mapping):
        try:
            return np.asarray([[float(e["x"]), float(e["y"]), float(e.get("score", 1.0))] for e in entries])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"person {idx} keypoints: each entry needs numeric 'x' and 'y' ({err})") from err
    kp = as_float64_array(entries, f"person {idx} keypoints")
    if kp.ndim == 1 and kp.shape[0] % 3 == 0:
        kp = kp.reshape(-1, 3)
    if kp.ndim != 2 or kp.shape[1] not in (2, 3):
        raise ValueError(f"person {idx} keypoints must be (K, 2) or (K, 3), got shape {tuple(kp.shape)}")
    if kp.shape[1] == 2:
        if "scores" not in person:
            raise ValueError(f"person {idx} has (K, 2) keypoints but no 'scores'")
        sc = as_float64_array(person["scores"], f"person {idx} scores").reshape(-1)
        if sc.shape[0] != kp.shape[0]:
            raise ValueError(f"person {idx} has {kp.shape[0]} keypoints but {sc.shape[0]} scores")
        kp = np.concatenate([kp, sc[:, None]], axis=1)
    return kp


def rescore(persons: Iterable[Mapping[str, Any]], keypoint_threshold: float = 0.2) -> list[dict]:
    """Rescore person dicts; returns new dicts (the inputs are not modified).

    Each person needs keypoint scores (``"scores"`` `(K,)`, or ``"keypoints"`` `(K, 3)`) and a box
    score, read from ``"box_score"`` or else ``"score"``. The result holds ``"box_score"`` (the box
    score) and ``"score"`` = ``box_score * mean(keypoint scores > keypoint_threshold)``.
    """
    persons = list(persons)
    if not persons:
        return []
    box, kps = [], []
    for idx, person in enumerate(persons):
        if "box_score" in person:
            box.append(float(person["box_score"]))
        elif "score" in person:
            box.append(float(person["score"]))
        else:
            raise ValueError(f"person {idx} has neither 'box_score' nor 'score'")
        if "scores" in person:
            kps.append(as_float64_array(person["scores"], f"person {idx} scores").reshape(-1))
        elif "keypoints" in person:
            kps.append(person_keypoint_array(person, idx)[:, 2])
        else:
            raise ValueError(f"person {idx} has no keypoint scores ('scores' or (K, 3) 'keypoints')")
    lengths = sorted({k.shape[0] for k in kps})
    if len(lengths) != 1:
        raise ValueError(f"persons have different keypoint counts: {lengths}")
    new_scores = rescore_scores(box, np.stack(kps), keypoint_threshold)
    out = []
    for person, b, s in zip(persons, box, new_scores):
        item = dict(person)
        item["box_score"] = b
        item["score"] = float(s)
        out.append(item)
    return out


def crop_box_areas(boxes, aspect_ratio: float, padding: float = 1.25) -> np.ndarray:
    """OKS-NMS areas of person boxes, as the original computes them from center/scale.

    The box `(x, y, w, h)` is widened or heightened to the model's aspect ratio (width / height)
    and multiplied by `padding`; its area is returned (mmpose: ``np.prod(scale * 200)``).

    Args:
        boxes: `(N, 4)` [x, y, w, h].
        aspect_ratio: model input width / height (192 / 256 = 0.75 for ViTPose).
        padding: box padding factor (1.25).

    Returns:
        `(N,)` float64 areas.
    """
    b = as_float64_array(boxes, "boxes").reshape(-1, 4)
    if aspect_ratio <= 0 or not np.isfinite(aspect_ratio):
        raise ValueError(f"aspect_ratio must be positive, got {aspect_ratio}")
    w, h = b[:, 2].copy(), b[:, 3].copy()
    wide = w > aspect_ratio * h
    h = np.where(wide, w / aspect_ratio, h)
    w = np.where(wide, w, h * aspect_ratio)
    return (w * padding) * (h * padding)
