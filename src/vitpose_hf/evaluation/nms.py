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
from ..keypoint_schemas import SCHEMAS, KeypointSchema, get_schema

logger = logging.getLogger(__name__)

__all__ = [
    "oks_iou", "oks_nms", "oks_nms_arrays", "rescore", "rescore_scores", "crop_box_areas", "resolve_sigmas",
    "person_keypoint_array",
]  # fmt: skip


def resolve_sigmas(sigmas: Any, num_keypoints: int | None = None) -> np.ndarray:
    """Return OKS sigmas as a float64 array of shape `(K,)`.

    Args:
        sigmas: a schema name (``"coco"``, ``"crowdpose"``, ...), a `KeypointSchema`, a sequence of K
            floats, or None. None means COCO's sigmas for 17 keypoints (pycocotools' default), else
            the sigmas of the known schemas with `num_keypoints` keypoints when they all agree; it
            is an error when they differ (e.g. AIC and CrowdPose, both 14) or none has sigmas.
        num_keypoints: expected K; a mismatch raises ValueError.
    """
    if sigmas is None:
        if num_keypoints is None:
            raise ValueError("sigmas=None needs num_keypoints to pick a keypoint schema")
        matches = sorted(
            name for name, s in SCHEMAS.items() if s.sigmas is not None and s.num_keypoints == num_keypoints
        )
        distinct = {tuple(SCHEMAS[name].sigmas) for name in matches}
        if "coco" in matches:  # pycocotools' own default for 17 keypoints
            distinct = {tuple(SCHEMAS["coco"].sigmas)}
        if len(distinct) != 1:
            raise ValueError(
                f"cannot infer OKS sigmas for {num_keypoints} keypoints (schemas with that count and sigmas: "
                f"{matches}); pass sigmas= a schema name or a list of {num_keypoints} floats"
            )
        array = np.asarray(next(iter(distinct)), dtype=np.float64)
    elif isinstance(sigmas, (str, KeypointSchema)):
        schema = get_schema(sigmas)
        if schema.sigmas is None:
            raise ValueError(f"keypoint schema {schema.name!r} defines no OKS sigmas; pass them explicitly")
        array = np.asarray(schema.sigmas, dtype=np.float64)
    else:
        array = as_float64_array(sigmas, "sigmas").reshape(-1)
    if array.size == 0 or not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(f"sigmas must be finite and positive, got {array.tolist()}")
    if num_keypoints is not None and array.shape[0] != num_keypoints:
        source = f" (schema {get_schema(sigmas).name!r})" if isinstance(sigmas, (str, KeypointSchema)) else ""
        raise ValueError(f"got {array.shape[0]} OKS sigmas{source} for data with {num_keypoints} keypoints")
    return array


def oks_iou(
    keypoints_a,
    keypoints_b,
    areas_a,
    areas_b,
    sigmas="coco",
    vis_threshold: float | None = None,
):
    """Pairwise object keypoint similarity, mmpose 0.x `oks_iou` semantics, for all pairs at once.

    For a pair (a, b): ``e_k = d_k^2 / (2 sigma_k)^2 / ((area_a + area_b) / 2 + eps) / 2`` and
    ``oks = mean_k exp(-e_k)``. With `vis_threshold`, the mean runs over the keypoints of **b**
    whose score is above it (this is what the original code computes: its
    ``list(vg > thr) and list(vd > thr)`` evaluates to the second mask), and is 0 when none is.

    Args:
        keypoints_a: `(N, K, 3)` [x, y, score] (or `(N, K, 2)` when `vis_threshold` is None), or
            `(N, 3K)` flat.
        keypoints_b: `(M, K, 3)` / `(M, K, 2)` / `(M, 3K)`.
        areas_a: `(N,)` areas; areas_b: `(M,)`.
        sigmas: schema name, `KeypointSchema` or `(K,)` sigmas.
        vis_threshold: optional keypoint score threshold (see above).

    Returns:
        `(N, M)` OKS values in [0, 1], float32 like the original (a torch tensor when
        `keypoints_a` is one).
    """
    is_torch = hasattr(keypoints_a, "detach")
    a = as_float64_array(keypoints_a, "keypoints_a")
    b = as_float64_array(keypoints_b, "keypoints_b")
    sig = None if isinstance(sigmas, (str, KeypointSchema)) or sigmas is None else as_float64_array(sigmas, "sigmas")
    num_keypoints = sig.reshape(-1).shape[0] if sig is not None else None
    a = _as_person_array(a, "keypoints_a", num_keypoints)
    b = _as_person_array(b, "keypoints_b", num_keypoints if num_keypoints is not None else a.shape[1])
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"keypoints_a has {a.shape[1]} keypoints but keypoints_b has {b.shape[1]}")
    sig = resolve_sigmas(sigmas, a.shape[1])
    area_a = as_float64_array(areas_a, "areas_a").reshape(-1)
    area_b = as_float64_array(areas_b, "areas_b").reshape(-1)
    if area_a.shape[0] != a.shape[0] or area_b.shape[0] != b.shape[0]:
        raise ValueError(
            f"areas do not match the persons: {area_a.shape[0]} areas for {a.shape[0]} persons (a), "
            f"{area_b.shape[0]} for {b.shape[0]} (b)"
        )
    if vis_threshold is not None and b.shape[2] < 3:
        raise ValueError("vis_threshold needs keypoint scores: pass keypoints_b as (M, K, 3)")
    variances = (2.0 * sig) ** 2  # (K,)
    diff = a[:, None, :, :2] - b[None, :, :, :2]  # (N, M, K, 2)
    dist2 = (diff**2).sum(-1)
    mean_area = (area_a[:, None] + area_b[None, :]) / 2.0 + np.spacing(1)  # (N, M)
    e = dist2 / variances / mean_area[..., None] / 2.0
    sim = np.exp(-e)
    if vis_threshold is None:
        oks = sim.mean(-1)
    else:
        mask = (b[:, :, 2] > vis_threshold)[None].astype(np.float64)  # (1, M, K)
        count = mask.sum(-1)
        oks = np.where(count > 0, (sim * mask).sum(-1) / np.maximum(count, 1), 0.0)
    oks = oks.astype(np.float32)
    if is_torch:
        import torch

        return torch.from_numpy(oks)
    return oks


def _as_person_array(array: np.ndarray, name: str, num_keypoints: int | None) -> np.ndarray:
    """`(N, K, C)` with C in {2, 3}; a `(N, 3K)` flat array is reshaped."""
    if array.ndim == 2:
        if array.shape[0] == 0 and array.shape[1] == 0 and num_keypoints is not None:
            return np.zeros((0, num_keypoints, 3))
        if array.shape[1] % 3 != 0:
            raise ValueError(f"{name} flat rows must hold 3K values, got {array.shape[1]}")
        array = array.reshape(array.shape[0], -1, 3)
    if array.ndim != 3 or array.shape[2] not in (2, 3):
        raise ValueError(f"{name} must be (N, K, 3), (N, K, 2) or (N, 3K), got shape {tuple(array.shape)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds non-finite values")
    return array


def oks_nms_arrays(
    keypoints,
    scores,
    areas,
    threshold: float = 0.9,
    sigmas="coco",
    vis_threshold: float | None = None,
) -> np.ndarray:
    """Greedy OKS-NMS of the persons of ONE image (mmpose 0.x `oks_nms`).

    Args:
        keypoints: `(N, K, 3)` [x, y, score] (or `(N, K, 2)`, or `(N, 3K)`).
        scores: `(N,)` person scores (after rescoring).
        areas: `(N,)` OKS areas (see :func:`crop_box_areas`).
        threshold: persons whose OKS with a kept person is above it are dropped.
        sigmas, vis_threshold: as in :func:`oks_iou`.

    Returns:
        `(n_kept,)` int64 indices into the input, highest score first (ties broken like
        ``np.argsort(scores)[::-1]``, as the original).
    """
    score = as_float64_array(scores, "scores").reshape(-1)
    n = score.shape[0]
    if n == 0:
        return np.zeros((0,), dtype=np.int64)
    if not np.all(np.isfinite(score)):
        raise ValueError("scores holds non-finite values")
    kpts = _as_person_array(as_float64_array(keypoints, "keypoints"), "keypoints", None)
    if kpts.shape[0] != n:
        raise ValueError(f"{kpts.shape[0]} keypoint sets but {n} scores")
    ious = oks_iou(kpts, kpts, areas, areas, sigmas=sigmas, vis_threshold=vis_threshold)  # (N, N) float32
    order = score.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        order = rest[ious[i, rest] <= threshold]
    return np.asarray(keep, dtype=np.int64)


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
