"""Heatmap post-processing: the flip test, Gaussian blur, argmax, DARK and DARK-UDP decoding, rescoring.

One home for what turns model heatmaps into keypoints and person scores, used by the model's
flip-back (`flip_heatmaps`), the image processor, the evaluation, the Trainer metrics, the
onnxruntime backend and the pipeline (`rescore_scores`: ViTPose's person score from the keypoint
scores). Heatmap coordinates are `(x, y)` heatmap pixels; mapping them back into
the image is `geometry.heatmap_coords_to_image`. Imports torch, numpy and the stdlib-only schema
table only: it is copied beside saved checkpoints with the model and the processor.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .keypoint_schemas import SCHEMAS, resolve_schema, schema_for_num_keypoints

logger = logging.getLogger(__name__)

__all__ = [
    "as_float64_array", "decode_heatmaps", "flip_heatmaps", "gaussian_blur_heatmaps", "predict_heatmaps",
    "rescore_scores",
]  # fmt: skip


# ----------------------------------------------------------------------------- flip test
def flip_heatmaps(
    heatmaps: torch.Tensor, flip_pairs: torch.Tensor | Sequence[Sequence[int]] | None, shift: bool = False
) -> torch.Tensor:
    """Map heatmaps predicted on horizontally mirrored crops back to the original orientation.

    Swaps the channels of every left/right pair, then mirrors the width axis. This is the official
    `flip_back`; with UDP (ViTPose's default) no shift is applied, `shift=True` gives the legacy
    one-pixel shift used without UDP.

    Args:
        heatmaps: `(B, K, h, w)` heatmaps of the flipped crops.
        flip_pairs: `(P, 2)` keypoint index pairs (tensor or nested sequence), or None (no swap).
        shift: shift the result one pixel to the right (non-UDP flip test).

    Returns:
        `(B, K, h, w)` heatmaps aligned with the unflipped crops (a new tensor).
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (B, K, h, w), got shape {tuple(heatmaps.shape)}")
    num_keypoints = heatmaps.shape[1]
    order = list(range(num_keypoints))
    if flip_pairs is not None:
        pairs = flip_pairs.tolist() if isinstance(flip_pairs, torch.Tensor) else [list(p) for p in flip_pairs]
        for pair in pairs:
            if len(pair) != 2:
                raise ValueError(f"flip pairs must be (left, right) index pairs, got {pair}")
            left, right = int(pair[0]), int(pair[1])
            if not (0 <= left < num_keypoints and 0 <= right < num_keypoints):
                raise ValueError(f"flip pair {pair} is out of range for {num_keypoints} keypoints")
            order[left], order[right] = right, left
    out = heatmaps[:, order].flip(-1)
    if shift:
        out = torch.cat([out[..., :1], out[..., :-1]], dim=-1)
    return out



# ----------------------------------------------------------------------------- heatmap decoding
def _reflect101_index(n: int, pad: int, device) -> torch.Tensor:
    idx = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - idx, idx)


def _gaussian_kernel1d(kernel_size: int, sigma: float | None, dtype, device) -> torch.Tensor:
    if sigma is None or sigma <= 0:
        sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8  # OpenCV's sigma for a given kernel size
    x = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_blur_heatmaps(
    heatmaps: torch.Tensor, kernel_size: int = 11, sigma: float | None = None, border: str = "reflect101"
) -> torch.Tensor:
    """`cv2.GaussianBlur(h, (k, k), sigma)` on every `(h, w)` map of `heatmaps (..., h, w)`, batched.

    `sigma=None` uses OpenCV's rule `0.3 * ((k - 1) / 2 - 1) + 0.8` (2.0 for k = 11). `border`:
    "reflect101" (OpenCV's default, used by DARK-UDP) or "zeros" (the zero-padded classic DARK).
    Separable, as shifted multiply-adds (much faster on CPU than a 1-channel conv2d).
    """
    kernel_size = check_kernel_size(kernel_size)
    if border not in ("reflect101", "zeros"):
        raise ValueError(f"border must be 'reflect101' or 'zeros', got {border!r}")
    shape = heatmaps.shape
    h, w = shape[-2:]
    x = heatmaps.reshape(-1, h, w)
    if not x.is_floating_point():
        x = x.float()
    pad = kernel_size // 2
    k = _gaussian_kernel1d(kernel_size, sigma, torch.float64, "cpu").tolist()
    if border == "reflect101":
        x = x.index_select(1, _reflect101_index(h, pad, x.device)).index_select(2, _reflect101_index(w, pad, x.device))
    else:
        x = F.pad(x, (pad, pad, pad, pad))
    rows = x[:, 0:h, :] * k[0]
    for i in range(1, kernel_size):
        rows = rows + x[:, i : i + h, :] * k[i]
    out = rows[:, :, 0:w] * k[0]
    for j in range(1, kernel_size):
        out = out + rows[:, :, j : j + w] * k[j]
    return out.reshape(shape)


def _reflect101(idx: torch.Tensor, n: int) -> torch.Tensor:
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - idx, idx)


def _blurred_log_patch(heatmaps: torch.Tensor, px: torch.Tensor, py: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """`log(clip(blur(h), 0.001, 50))` of the edge-padded map at the 3x3 neighbourhood of `(px, py)`:
    `(N, K, 3, 3)` indexed `[dy + 1, dx + 1]`. Only those 9 blurred values are computed (exactly the
    full-map blur at those pixels, reflect-101 borders): one `(k+2) x (k+2)` window is gathered per
    keypoint and blurred separably."""
    n, k, h, w = heatmaps.shape
    nk = n * k
    pad = kernel_size // 2
    size = kernel_size + 2  # window rows py-pad-1 .. py+pad+1
    dev = heatmaps.device
    kern = _gaussian_kernel1d(kernel_size, None, heatmaps.dtype, dev)
    span = torch.arange(-(pad + 1), pad + 2, device=dev)
    py, px = py.reshape(nk, 1), px.reshape(nk, 1)
    rows = _reflect101(py + span, h)  # (NK, size)
    cols = _reflect101(px + span, w)
    window = heatmaps.reshape(nk, h * w).gather(-1, (rows[:, :, None] * w + cols[:, None, :]).reshape(nk, -1))
    window = window.view(nk, size, size)
    d3 = torch.arange(-1, 2, device=dev)
    taps = torch.arange(kernel_size, device=dev)
    # neighbour rows are edge-clamped (edge padding of the blurred map): offsets in {-1, 0, 1}
    oy = (py + d3).clamp(0, h - 1) - py  # (NK, 3)
    ox = (px + d3).clamp(0, w - 1) - px
    row_idx = (oy[:, :, None] + taps + 1).reshape(nk, 3 * kernel_size, 1).expand(nk, 3 * kernel_size, size)
    blurred_rows = (window.gather(1, row_idx).view(nk, 3, kernel_size, size) * kern.view(1, 1, -1, 1)).sum(2)
    col_idx = (ox[:, :, None] + taps + 1).reshape(nk, 1, 3 * kernel_size).expand(nk, 3, 3 * kernel_size)
    blurred = (blurred_rows.gather(2, col_idx).view(nk, 3, 3, kernel_size) * kern).sum(-1)
    return blurred.clamp(0.001, 50.0).log().view(n, k, 3, 3)


def _argmax(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        # numpy's SIMD argmax is much faster than torch.max(dim) on CPU; same first-maximum index
        idx = torch.from_numpy(flat.detach().numpy().argmax(axis=-1))
        scores = flat.gather(-1, idx[..., None])[..., 0]
    else:
        scores, idx = flat.max(dim=-1)
    return idx % w, torch.div(idx, w, rounding_mode="floor"), scores, flat


def _neighbours(maps: torch.Tensor, px: torch.Tensor, py: torch.Tensor, offsets) -> list[torch.Tensor]:
    """Values of `maps (N, K, H, W)` at `(py + dy, px + dx)` for each `(dx, dy)` in offsets."""
    n, k, h, w = maps.shape
    flat = maps.reshape(n, k, h * w)
    out = []
    for dx, dy in offsets:
        idx = ((py + dy) * w + (px + dx)).reshape(n, k, 1)
        out.append(flat.gather(-1, idx)[..., 0])
    return out


def _dark_udp(heatmaps: torch.Tensor, px: torch.Tensor, py: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Official `post_dark_udp`: blur (OpenCV sigma, reflect-101), clip [0.001, 50], log, edge pad,
    central finite differences around the argmax, one Newton step `x - (H + eps I)^-1 g`."""
    p = _blurred_log_patch(heatmaps.float(), px, py, kernel_size)
    i_ = p[..., 1, 1]
    ix1, ix1_ = p[..., 1, 2], p[..., 1, 0]
    iy1, iy1_ = p[..., 2, 1], p[..., 0, 1]
    ix1y1, ix1_y1_ = p[..., 2, 2], p[..., 0, 0]
    dx = 0.5 * (ix1 - ix1_)
    dy = 0.5 * (iy1 - iy1_)
    dxx = ix1 - 2 * i_ + ix1_
    dyy = iy1 - 2 * i_ + iy1_
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
    eps = torch.finfo(torch.float32).eps
    a, b, d = dxx + eps, dxy, dyy + eps
    det = a * d - b * b
    step = torch.stack([(d * dx - b * dy) / det, (a * dy - b * dx) / det], dim=-1)
    bad = ~torch.isfinite(step).all(dim=-1, keepdim=True)
    step = torch.where(bad, torch.zeros_like(step), step)
    return torch.stack([px, py], dim=-1).to(step.dtype) - step


def _dark_classic(heatmaps: torch.Tensor, px: torch.Tensor, py: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """mmpose 0.x 'unbiased' (non-UDP DARK): zero-padded blur rescaled to the original maximum,
    log(max(., 1e-10)), Taylor step with 2-pixel second differences, interior points only."""
    n, k, h, w = heatmaps.shape
    x = heatmaps.float()
    orig_max = x.reshape(n, k, -1).amax(-1)
    blurred = gaussian_blur_heatmaps(x, kernel_size, border="zeros")
    new_max = blurred.reshape(n, k, -1).amax(-1)
    blurred = blurred * (orig_max / new_max)[..., None, None]
    hm = torch.log(blurred.clamp_min(1e-10))
    hm = F.pad(hm, (2, 2, 2, 2))  # only interior points are used; padding keeps the gathers in range
    cx, cy = px + 2, py + 2
    c, xp, xm, yp, ym, xp2, xm2, yp2, ym2, pp, mp, pm, mm = _neighbours(
        hm, cx, cy,
        [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (2, 0), (-2, 0), (0, 2), (0, -2), (1, 1), (1, -1), (-1, 1), (-1, -1)],
    )  # fmt: skip
    dx = 0.5 * (xp - xm)
    dy = 0.5 * (yp - ym)
    dxx = 0.25 * (xp2 - 2 * c + xm2)
    dxy = 0.25 * (pp - mp - pm + mm)
    dyy = 0.25 * (yp2 - 2 * c + ym2)
    det = dxx * dyy - dxy**2
    inside = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2) & (det != 0)
    safe = torch.where(det == 0, torch.ones_like(det), det)
    off_x = -(dyy * dx - dxy * dy) / safe
    off_y = -(dxx * dy - dxy * dx) / safe
    off = torch.stack([off_x, off_y], dim=-1)
    ok = inside[..., None] & torch.isfinite(off)
    off = torch.where(ok, off, torch.zeros_like(off))
    return torch.stack([px, py], dim=-1).to(off.dtype) + off


def check_kernel_size(kernel_size: Any) -> int:
    """The DARK blur's kernel size as an int; ValueError unless it is an odd integer >= 1 (what
    `cv2.GaussianBlur` accepts; 1 is no blur)."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer, float)) or (
        isinstance(kernel_size, float) and not kernel_size.is_integer()
    ):
        raise ValueError(f"kernel_size must be an odd integer >= 1, got {kernel_size!r}")
    k = int(kernel_size)
    if k < 1 or k % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 1, got {kernel_size!r}")
    return k


def decode_heatmaps(
    heatmaps: torch.Tensor,
    use_dark: bool = True,
    kernel_size: int = 11,
    use_udp: bool = True,
    clamp_to_heatmap: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps -> keypoint coordinates in heatmap pixels and scores, batched over persons and joints.

    - `use_udp=True, use_dark=True` (ViTPose's test setting): argmax, then the official DARK-UDP
      refinement (`post_dark_udp`: Gaussian blur `kernel_size` with OpenCV's sigma (2.0 for 11),
      clip to [0.001, 50], log, edge-padded finite differences, Newton step).
    - `use_udp=True, use_dark=False`: the integer argmax.
    - `use_udp=False, use_dark=False`: argmax + the mmpose 'default' quarter-pixel shift towards the
      higher neighbour (interior points only).
    - `use_udp=False, use_dark=True`: mmpose's classic DARK ('unbiased').

    Scores are the raw heatmap maxima. Unlike mmpose (which returns -1 coordinates when the maximum is
    <= 0) the argmax location is kept. A degenerate (non-finite) refinement step falls back to the
    argmax, so coordinates are always finite.

    The DARK step is unbounded, as in the original: near a border it can move a keypoint off the
    heatmap. `clamp_to_heatmap=True` (opt-in; the default keeps parity with the official code and
    transformers) clamps the coordinates to the heatmap's pixel centres `[0, w-1] x [0, h-1]`;
    keypoints already inside are unchanged.

    Args:
        heatmaps: `(N, K, h, w)` heatmaps (any float dtype, any device), `h, w >= 1`.
        use_dark / kernel_size / use_udp: see above; `kernel_size` is an odd integer >= 1.
        clamp_to_heatmap: clamp the refined coordinates onto the heatmap.

    Returns:
        `coords (N, K, 2)` float32 `(x, y)` heatmap pixels and `scores (N, K)` float32, on the
        heatmaps' device.

    Raises:
        ValueError: heatmaps are not 4-D, have an empty map size or contain NaN / inf (naming the first
            bad person); an even or non-positive `kernel_size`.
    """
    if not isinstance(heatmaps, torch.Tensor) or heatmaps.ndim != 4:
        shape = tuple(heatmaps.shape) if hasattr(heatmaps, "shape") else type(heatmaps).__name__
        raise ValueError(f"heatmaps must be a (N, K, h, w) tensor, got {shape}")
    kernel_size = check_kernel_size(kernel_size)
    n, k, h, w = heatmaps.shape
    if h == 0 or w == 0:
        raise ValueError(f"heatmaps must be at least 1x1, got maps of {h}x{w} (h x w)")
    if n == 0 or k == 0:
        return heatmaps.new_zeros((n, k, 2), dtype=torch.float32), heatmaps.new_zeros((n, k), dtype=torch.float32)
    if not bool(torch.isfinite(heatmaps.sum())):  # one cheap pass; the exact check only if it fails
        finite = torch.isfinite(heatmaps.reshape(n, -1)).all(dim=-1)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0])
            raise ValueError(f"heatmaps of person {bad} contain NaN or inf")
    heatmaps = heatmaps.float()
    px, py, scores, _ = _argmax(heatmaps)
    if use_udp:
        if use_dark:
            coords = _dark_udp(heatmaps, px, py, kernel_size)
        else:
            coords = torch.stack([px, py], dim=-1).float()
    elif use_dark:
        coords = _dark_classic(heatmaps, px, py, kernel_size)
    else:
        coords = torch.stack([px, py], dim=-1).float()
        xp, xm, yp, ym = _neighbours(
            heatmaps, px.clamp(1, w - 2), py.clamp(1, h - 2), [(1, 0), (-1, 0), (0, 1), (0, -1)]
        )
        inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
        shift = torch.stack([torch.sign(xp - xm), torch.sign(yp - ym)], dim=-1) * 0.25
        coords = coords + torch.where(inside[..., None], shift, torch.zeros_like(shift))
    coords = coords.float()
    if clamp_to_heatmap:
        coords = torch.stack([coords[..., 0].clamp(0, w - 1), coords[..., 1].clamp(0, h - 1)], dim=-1)
    return coords, scores.float()



# ----------------------------------------------------------------------------- rescoring
def as_float64_array(value: Any, name: str, dtype=np.float64) -> np.ndarray:
    """`value` (array-like or torch tensor) as a numpy array of `dtype`; ValueError naming `name`
    when it is not numeric."""
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric array-like, got {type(value).__name__}: {err}") from None
    return array


def rescore_scores(box_scores, keypoint_scores, keypoint_threshold: float = 0.2) -> np.ndarray:
    """ViTPose's person score: ``box_score * mean(keypoint scores above the threshold)`` (0 where
    none is above it); the pipeline's and the evaluation's (`vitpose_hf.evaluation.rescore`).

    Args:
        box_scores: `(N,)` detector (or ground-truth: 1.0) box scores.
        keypoint_scores: `(N, K)` keypoint confidences (heatmap maxima).
        keypoint_threshold: strict lower bound (0.2 in ViTPose's test config, `vis_thr`).

    Returns:
        `(N,)` float64 person scores.
    """
    box = as_float64_array(box_scores, "box_scores").reshape(-1)
    kps = as_float64_array(keypoint_scores, "keypoint_scores")
    if kps.ndim != 2 or kps.shape[0] != box.shape[0]:
        raise ValueError(f"keypoint_scores must be (N, K) with N={box.shape[0]}, got shape {tuple(kps.shape)}")
    if not (np.all(np.isfinite(box)) and np.all(np.isfinite(kps))):
        raise ValueError("box_scores / keypoint_scores hold non-finite values")
    valid = kps > keypoint_threshold
    count = valid.sum(1)
    mean = np.where(count > 0, (kps * valid).sum(1) / np.maximum(count, 1), 0.0)
    return box * mean


# ----------------------------------------------------------------------------- flip test
def _resolve_flip_pairs(model, num_keypoints: int, dataset_index) -> list | None:
    """Flip pairs for the rows of one dataset index: `keypoint_schemas.resolve_schema` on the
    model's config (None = the main head), else the default schema for `num_keypoints`, else None
    (no channel swap, with a warning)."""
    index = None
    if isinstance(dataset_index, int) or (isinstance(dataset_index, torch.Tensor) and dataset_index.numel() == 1):
        index = int(dataset_index)
    config = getattr(model, "config", None)
    schema = None
    if config is not None and getattr(config, "num_labels", None) is not None:
        schema = resolve_schema(config, index)
        if schema.num_keypoints != num_keypoints:
            schema = None
    if schema is None:
        try:
            schema = schema_for_num_keypoints(num_keypoints)
        except ValueError:
            logger.warning("no keypoint schema with %d keypoints: flip test without channel swap", num_keypoints)
            return None
    if not schema.flip_pairs and schema.name not in SCHEMAS:
        logger.warning(
            "keypoint schema %r names no left/right pairs: flip test without channel swap", schema.name
        )
    return [list(p) for p in schema.flip_pairs]


def predict_heatmaps(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    flip_test: bool = True,
    flip_pairs: Sequence[Sequence[int]] | torch.Tensor | None = None,
    dataset_index: int | torch.Tensor | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Run the pose model on crops, with the official flip test (no gradient).

    Each chunk of crops is concatenated with its horizontal mirror and sent through the model in one
    forward; the mirrored half is mapped back with `flip_heatmaps` (channel swap of `flip_pairs`,
    width flip, no shift: UDP) and averaged with the plain half.

    Args:
        model: a `VitPoseForPoseEstimation` (anything returning `.heatmaps` or a tensor).
        pixel_values: `(N, 3, H, W)` crops from `VitPoseTopDownImageProcessor`.
        flip_test: average with mirrored crops.
        flip_pairs: `(P, 2)` left/right keypoint pairs for all crops; None picks, per dataset index
            in the batch, those of `keypoint_schemas.resolve_schema(model.config, index)`.
        dataset_index: ViTPose++ dataset index (int or `(N,)`), passed to the model; None = the
            main head.
        batch_size: crops per forward (None = all at once).

    Returns:
        `(N, K, h, w)` float32 heatmaps on the model's device.
    """
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be (N, 3, H, W), got shape {tuple(pixel_values.shape)}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else pixel_values.device
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    n = pixel_values.shape[0]
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(dataset_index, torch.Tensor) and dataset_index.numel() not in (1, n):
        raise ValueError(f"dataset_index must be an int or have {n} values, got {dataset_index.numel()}")
    step = n if batch_size is None else batch_size
    outputs = []
    cache: dict = {}

    def pairs_for(index: int | None, num_channels: int):
        if index not in cache:
            k = num_channels
            if index is not None and hasattr(model, "num_keypoints_for"):
                k = int(model.num_keypoints_for(int(index)))
            cache[index] = _resolve_flip_pairs(model, k, index)
        return cache[index]

    with torch.no_grad():
        for start in range(0, max(n, 1), max(step, 1)):
            chunk = pixel_values[start : start + step].to(device=device, dtype=dtype)
            m = chunk.shape[0]
            if m == 0:
                break
            idx = dataset_index
            if isinstance(dataset_index, torch.Tensor) and dataset_index.numel() == n and n > 1:
                idx = dataset_index.reshape(-1)[start : start + m]
            if flip_test:
                chunk = torch.cat([chunk, chunk.flip(-1)], dim=0)
                if isinstance(idx, torch.Tensor) and idx.numel() > 1:
                    idx = torch.cat([idx, idx])
            if idx is not None and not isinstance(idx, torch.Tensor):
                idx = torch.full((chunk.shape[0],), int(idx), dtype=torch.long)
            elif isinstance(idx, torch.Tensor) and idx.numel() == 1:
                idx = idx.reshape(1).expand(chunk.shape[0])
            out = model(chunk, dataset_index=idx.to(device) if idx is not None else None)
            heatmaps = (out.heatmaps if hasattr(out, "heatmaps") else out).float()
            if flip_test:
                mirrored = heatmaps[m:]
                if flip_pairs is not None:
                    back = flip_heatmaps(mirrored, flip_pairs)
                else:
                    rows_index = idx[:m].cpu() if isinstance(idx, torch.Tensor) else None
                    unique = [None] if rows_index is None else torch.unique(rows_index).tolist()
                    if len(unique) == 1:
                        back = flip_heatmaps(mirrored, pairs_for(unique[0], heatmaps.shape[1]))
                    else:  # mixed datasets in one batch: each with its own flip pairs
                        back = torch.empty_like(mirrored)
                        for u in unique:
                            rows = (rows_index == u).nonzero()[:, 0].to(mirrored.device)
                            back[rows] = flip_heatmaps(mirrored[rows], pairs_for(u, heatmaps.shape[1]))
                heatmaps = 0.5 * (heatmaps[:m] + back)
            outputs.append(heatmaps)
    if not outputs:
        raise ValueError("no crops to run: pixel_values is empty")
    return torch.cat(outputs, dim=0)
