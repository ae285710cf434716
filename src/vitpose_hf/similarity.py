"""Object keypoint similarity (OKS) between persons, and greedy OKS non-maximum suppression.

COCO's keypoint distance, used by the evaluation's OKS-NMS (`evaluation.nms`, which re-exports these)
and by the video tracker's association (`video.tracking`). numpy only, so the tracker and the
pipeline load it without the evaluation package (pycocotools, datasets).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .heatmaps import as_float64_array
from .keypoint_schemas import SCHEMAS, KeypointSchema, get_schema

__all__ = ["oks_iou", "oks_nms_arrays", "resolve_sigmas"]


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
