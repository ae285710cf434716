"""Top-down crop geometry in pure, batched torch: boxes -> (center, scale) -> affine warps -> crops,
and heatmap coordinates -> image coordinates.

The same functions serve inference (the image processor) and training (augmentation crops), so a
keypoint and its pixels are always moved by the very same matrix.

Conventions (those of the official ViTPose / mmpose 0.x code):
- boxes are COCO `xywh` (top-left corner, width, height), in pixels;
- `center` is `(x, y)` in pixels, `scale` is `(w, h)` of the padded crop window divided by
  `pixel_std` (200), as in mmpose 0.x;
- a pixel's integer index is its centre (OpenCV's convention): pixel `(i, j)` covers `[i-0.5, i+0.5]`;
- affine matrices are `(N, 2, 3)` and map image (source) points to crop (destination) points, as the
  matrix given to `cv2.warpAffine`;
- sizes given as pairs are `(height, width)`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import weakref
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = [
    "box_xywh_to_center_scale",
    "get_udp_warp_matrix",
    "get_plain_warp_matrix",
    "invert_affine",
    "transform_points",
    "warp_affine_batch",
    "CropWorkspace",
    "heatmap_coords_to_image",
    "udp_crops_np",
]

SizeLike = Sequence[int] | torch.Tensor


def _as_float_tensor(x, name: str, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    t = torch.as_tensor(x, device=device)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if dtype is not None:
        t = t.to(dtype)
    return t


def _hw(size: SizeLike, name: str = "output_size") -> tuple[int, int]:
    if isinstance(size, torch.Tensor):
        size = size.tolist()
    if len(size) != 2:
        raise ValueError(f"{name} must be (height, width), got {size!r}")
    h, w = int(size[0]), int(size[1])
    if h < 2 or w < 2:
        raise ValueError(f"{name} must be at least 2x2, got {size!r}")
    return h, w


def box_xywh_to_center_scale(
    boxes: torch.Tensor,
    aspect_ratio: float,
    padding: float = 1.25,
    pixel_std: float = 200.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """COCO `xywh` boxes to mmpose's `(center, scale)` (the official `_box2cs`).

    The box is grown (never shrunk) along one axis to reach `aspect_ratio`, then padded.

    Args:
        boxes: `(N, 4)` boxes `[x, y, w, h]` in pixels (any float dtype; integers become float64).
        aspect_ratio: crop width / crop height, e.g. `192 / 256`.
        padding: multiplicative padding of the window (1.25 for ViTPose).
        pixel_std: normaliser of the scale (200 in mmpose 0.x).

    Returns:
        `center (N, 2)` as `(x, y)` pixels and `scale (N, 2)` as `(w, h) / pixel_std`, both in the
        boxes' float dtype.
    """
    boxes = _as_float_tensor(boxes, "boxes")
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (N, 4) xywh, got shape {tuple(boxes.shape)}")
    if not aspect_ratio > 0:
        raise ValueError(f"aspect_ratio must be > 0, got {aspect_ratio}")
    return _box_center_scale(boxes, aspect_ratio, padding, pixel_std, torch.where, lambda *c: torch.stack(c, dim=-1))


def _box_center_scale(boxes, aspect_ratio: float, padding: float, pixel_std: float, where, stack):
    """`(center (N, 2), scale (N, 2))` of `(N, 4)` xywh boxes with the same expressions for a torch
    tensor or a numpy array (`where`, `stack` of the backend), so both give bit-identical results."""
    x, y, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    center = stack(x + w * 0.5, y + h * 0.5)
    new_h = where(w > aspect_ratio * h, w / aspect_ratio, h)
    new_w = where(w < aspect_ratio * h, h * aspect_ratio, w)
    scale = stack(new_w, new_h) / pixel_std * padding
    return center, scale


def _rotation(rotation, n: int, dtype, device) -> torch.Tensor:
    if rotation is None:
        return torch.zeros(n, dtype=dtype, device=device)
    r = torch.as_tensor(rotation, dtype=dtype, device=device)
    if r.ndim == 0:
        r = r.expand(n)
    if r.shape != (n,):
        raise ValueError(f"rotation must be a scalar or have shape ({n},), got {tuple(r.shape)}")
    return r


def _center_scale(center, scale) -> tuple[torch.Tensor, torch.Tensor]:
    center = _as_float_tensor(center, "center")
    scale = _as_float_tensor(scale, "scale", dtype=center.dtype, device=center.device)
    if center.ndim != 2 or center.shape[-1] != 2 or scale.shape != center.shape:
        raise ValueError(
            f"center and scale must both be (N, 2), got {tuple(center.shape)} and {tuple(scale.shape)}"
        )
    return center, scale


def get_udp_warp_matrix(
    center: torch.Tensor,
    scale: torch.Tensor,
    output_size: SizeLike,
    rotation: torch.Tensor | float | None = None,
    pixel_std: float = 200.0,
) -> torch.Tensor:
    """Image -> crop affine of Unbiased Data Processing (mmpose 0.x `get_warp_matrix`, as called by
    `TopDownAffine(use_udp=True)`: `size_input = center * 2`, `size_dst = output_size - 1`,
    `size_target = scale * pixel_std`).

    The window `center +- scale * pixel_std / 2` maps onto pixel centres `0 .. W-1` and `0 .. H-1`,
    i.e. `dst = S @ (R @ (p - center) + size_target / 2)` with `S = diag((W-1)/sw, (H-1)/sh)` and
    `R = [[cos, -sin], [sin, cos]]` of `rotation` (degrees, the official sign convention). On screen
    (y down) a positive angle turns the image content clockwise in the crop, i.e. the crop window is
    turned counter-clockwise in the image: at +90 deg a point right of the centre lands below it.
    Note: mmpose's non-UDP `get_affine_transform` turns the other way (see `get_plain_warp_matrix`);
    with the usual symmetric random rotation in training this makes no statistical difference.

    Args:
        center: `(N, 2)` window centres `(x, y)` in pixels.
        scale: `(N, 2)` window sizes `(w, h) / pixel_std`.
        output_size: crop `(height, width)`, e.g. `(256, 192)`.
        rotation: `(N,)` or scalar degrees, or None for no rotation.
        pixel_std: scale normaliser (200).

    Returns:
        `(N, 2, 3)` matrices in the dtype of `center`.
    """
    center, scale = _center_scale(center, scale)
    out_h, out_w = _hw(output_size)
    n = center.shape[0]
    theta = torch.deg2rad(_rotation(rotation, n, center.dtype, center.device))
    cos, sin = torch.cos(theta), torch.sin(theta)
    target = scale * pixel_std  # (N, 2) window size in pixels
    sx = (out_w - 1.0) / target[:, 0]
    sy = (out_h - 1.0) / target[:, 1]
    return _fill_udp_matrix(torch.zeros(n, 2, 3, dtype=center.dtype, device=center.device), cos, sin, sx, sy, center, target)


def _fill_udp_matrix(m, cos, sin, sx, sy, center, target):
    """Write the UDP image -> crop affine into `m (N, 2, 3)` (torch or numpy: the same expressions,
    so both give bit-identical matrices) from per-box `cos`, `sin`, zooms `sx`, `sy`, `center (N, 2)`
    and window size `target (N, 2)` in pixels."""
    cx, cy = center[:, 0], center[:, 1]
    m[:, 0, 0] = cos * sx
    m[:, 0, 1] = -sin * sx
    m[:, 0, 2] = sx * (-cx * cos + cy * sin + 0.5 * target[:, 0])
    m[:, 1, 0] = sin * sy
    m[:, 1, 1] = cos * sy
    m[:, 1, 2] = sy * (-cx * sin - cy * cos + 0.5 * target[:, 1])
    return m


def get_plain_warp_matrix(
    center: torch.Tensor,
    scale: torch.Tensor,
    output_size: SizeLike,
    rotation: torch.Tensor | float | None = None,
    pixel_std: float = 200.0,
) -> torch.Tensor:
    """Image -> crop affine of mmpose 0.x `get_affine_transform` (the non-UDP path).

    The official function builds three point pairs (centre, centre + rotated half-width up vector,
    and a third point at a right angle) and solves for the affine. Only the window *width* sets the
    (isotropic) zoom, `k = W / (scale_w * pixel_std)`; the centre lands at `(W/2, H/2)`. The result is
    `dst = k * R(-rotation) @ (p - center) + (W/2, H/2)`, which this function evaluates in closed form.
    A positive angle therefore turns the content counter-clockwise on screen (opposite to the UDP
    matrix): at +90 deg a point right of the centre lands above it.

    Args and returns as `get_udp_warp_matrix`.
    """
    center, scale = _center_scale(center, scale)
    out_h, out_w = _hw(output_size)
    n = center.shape[0]
    theta = torch.deg2rad(_rotation(rotation, n, center.dtype, center.device))
    cos, sin = torch.cos(theta), torch.sin(theta)
    k = out_w / (scale[:, 0] * pixel_std)
    a = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], dim=-2) * k[:, None, None]
    t = torch.tensor([out_w * 0.5, out_h * 0.5], dtype=center.dtype, device=center.device) - (
        a @ center[:, :, None]
    )[..., 0]
    return torch.cat([a, t[:, :, None]], dim=-1)


def udp_crops_np(
    boxes: np.ndarray, output_size: tuple[int, int], padding: float, pixel_std: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`box_xywh_to_center_scale` then `get_udp_warp_matrix` (no rotation) on float64 numpy `(N, 4)`
    boxes, evaluating the very same expressions (bit-identical results) without the ~10 us per tiny
    torch op: the image processor's hot path. Returns `center (N, 2)`, `scale (N, 2)`, `(N, 2, 3)`."""
    out_h, out_w = output_size
    center, scale = _box_center_scale(boxes, out_w / out_h, padding, pixel_std, np.where, lambda *c: np.stack(c, axis=-1))
    cos, sin = np.ones(boxes.shape[0]), np.zeros(boxes.shape[0])
    target = scale * pixel_std
    sx = (1.0 / target[:, 0]) * (out_w - 1.0)  # torch's `float / tensor` is `tensor.reciprocal() * float`
    sy = (1.0 / target[:, 1]) * (out_h - 1.0)
    return center, scale, _fill_udp_matrix(np.zeros((boxes.shape[0], 2, 3)), cos, sin, sx, sy, center, target)


def _affine_det(m):
    """Determinants `(N,)` of the linear parts of `(N, 2, 3)` affines (torch or numpy)."""
    return m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]


def _affine_inverse(m, det, stack):
    """The inverse of `(N, 2, 3)` affines with determinants `det` (checked by the caller), with the same
    expressions for a torch tensor or a numpy array (`stack` joins the six entries), so both backends
    give bit-identical results."""
    a00, a01, a10, a11 = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
    tx, ty = m[:, 0, 2], m[:, 1, 2]
    return stack(i00, i01, -(i00 * tx + i01 * ty), i10, i11, -(i10 * tx + i11 * ty))


def invert_affine(m: torch.Tensor) -> torch.Tensor:
    """Invert `(N, 2, 3)` affine matrices (crop -> image for a warp matrix).

    Raises ValueError for a singular matrix.
    """
    if m.ndim != 3 or m.shape[-2:] != (2, 3):
        raise ValueError(f"affine matrices must be (N, 2, 3), got shape {tuple(m.shape)}")
    det = _affine_det(m)
    if not bool(torch.isfinite(det).all()) or bool((det == 0).any()):
        raise ValueError(f"affine matrix is singular or not finite (determinants {det.tolist()})")
    return _affine_inverse(m, det, lambda *entries: torch.stack(entries, -1).reshape(-1, 2, 3))


def transform_points(points: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Apply `(N, 2, 3)` affines to `(N, K, 2)` points; returns `(N, K, 2)` (`p @ A^T + t`)."""
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must be (N, K, 2), got shape {tuple(points.shape)}")
    if m.ndim != 3 or m.shape[-2:] != (2, 3) or m.shape[0] != points.shape[0]:
        raise ValueError(f"matrices must be (N={points.shape[0]}, 2, 3), got shape {tuple(m.shape)}")
    m = m.to(points.dtype) if points.is_floating_point() else m
    return points @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]


def _footprints(inv: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Integer source bounds `(N, 4) [x0, y0, x1, y1]` (inclusive) touched by bilinear sampling."""
    corners = torch.tensor(
        [[0.0, 0.0], [out_w - 1.0, 0.0], [0.0, out_h - 1.0], [out_w - 1.0, out_h - 1.0]], dtype=inv.dtype
    )
    src = transform_points(corners.expand(inv.shape[0], 4, 2), inv)
    lo = torch.floor(src.amin(dim=1)) - 1
    hi = torch.floor(src.amax(dim=1)) + 2
    return torch.cat([lo, hi], dim=-1)


def _normalized_grid(inv: torch.Tensor, out_h: int, out_w: int, rh: int, rw: int, dtype) -> torch.Tensor:
    """`grid_sample` grid `(N, out_h, out_w, 2)` for crop -> region pixel affines `inv (N, 2, 3)`.

    Pixel-centre convention with `align_corners=False`: region pixel `x` is `u = (2x + 1) / W - 1`,
    folded into the affine so the grid is two broadcast multiply-adds.
    """
    norm = torch.tensor([2.0 / rw, 2.0 / rh], dtype=torch.float64)
    theta = inv.to(torch.float64) * norm.view(1, 2, 1)
    theta[:, :, 2] += torch.tensor([1.0 / rw - 1.0, 1.0 / rh - 1.0], dtype=torch.float64)
    theta = theta.to(dtype)
    xs = torch.arange(out_w, dtype=dtype).view(1, 1, out_w, 1)
    ys = torch.arange(out_h, dtype=dtype).view(1, out_h, 1, 1)
    t = theta.view(-1, 1, 1, 2, 3)
    return (xs * t[..., 0] + t[..., 2]) + ys * t[..., 1]  # one full-size pass


def warp_affine_batch(
    image: torch.Tensor,
    matrices: torch.Tensor,
    output_size: SizeLike,
    border_value: float = 0.0,
    max_region_ratio: float = 4.0,
    channel_scale: torch.Tensor | Sequence[float] | None = None,
    channel_offset: torch.Tensor | Sequence[float] | None = None,
    backend: str = "auto",
    threads: int | None = None,
    workspace: CropWorkspace | None = None,
) -> torch.Tensor:
    """Warp one image into N crops, like `cv2.warpAffine(img, M, (w, h), flags=cv2.INTER_LINEAR,
    borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)` for each `M`.

    Bilinear `grid_sample` in the pixel-centre convention; pixels outside the image read as
    `border_value` (also inside the interpolation, as OpenCV does). Only the source region that the
    crops can touch is converted to float: when the union of the boxes' footprints is small compared
    with the sum of the footprints (`max_region_ratio`), all crops come from one `grid_sample` on that
    union, otherwise each crop samples its own footprint. Cost therefore scales with the crops, not the
    image (a 10000x10000 image with a few boxes is cheap). A crop whose footprint misses the image
    entirely is filled with `border_value`, as is every crop of an empty (0-pixel) image.

    `channel_scale` / `channel_offset` (C values) fold a per-channel `x * scale + offset` (e.g.
    rescale + normalise) into the warp: it is applied to the source region before sampling (cheaper
    than on the crops when they overlap) and is exact because bilinear weights sum to one.

    Args:
        image: `(C, H, W)` tensor, uint8 or float.
        matrices: `(N, 2, 3)` image -> crop affines (e.g. `get_udp_warp_matrix`).
        output_size: crop `(height, width)`.
        border_value: constant for pixels outside the image (before `channel_scale/offset`).
        max_region_ratio: union-vs-sum area ratio above which crops are sampled one by one.
        channel_scale / channel_offset: optional per-channel affine of the values.
        backend: "torch" (bilinear `grid_sample`, exact), "cv2" (`cv2.warpAffine` per crop and channel
            on the float32 source region, written straight into the output: ~8x faster on CPU; OpenCV
            computes sampling positions in float32 (older builds quantise them to 1/32 px), measured
            <= 0.02 grey levels on real photos) or "auto" (cv2 for float32 output on CPU when OpenCV is
            installed, else torch).
        threads: threads of the cv2 backend, `torch.get_num_threads()` when None. Whole crops are
            spread over up to `threads` Python threads (at least 8 crops each; OpenCV releases the
            GIL) and every OpenCV call runs single-threaded, so the call uses at most `threads`
            cores. OpenCV's thread count is process-wide: it is set to 1 while the call runs and
            restored afterwards, so OpenCV calls made meanwhile by other threads run single-threaded
            (same results), and a count that another thread sets meanwhile is kept. The values do
            not depend on `threads`. The torch backend ignores it (it uses torch's own threads).
        workspace: a `CropWorkspace` whose buffers the cv2 backend may reuse (its owner, e.g. the
            image processor, passes the same one every call), or None for fresh memory every call.

    Returns:
        `(N, C, h, w)` contiguous crops: float32 for integer images, else the image's dtype. Values are
        not rounded (OpenCV rounds uint8 outputs and quantises positions to 1/32 px). With a
        `workspace`, the cv2 backend may return the memory of an earlier result from that workspace
        once every tensor and view of that result has been released (see `CropWorkspace`).
    """
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {tuple(image.shape)}")
    if backend not in ("auto", "torch", "cv2"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'cv2', got {backend!r}")
    if matrices.ndim != 3 or matrices.shape[-2:] != (2, 3):
        raise ValueError(f"matrices must be (N, 2, 3), got shape {tuple(matrices.shape)}")
    out_h, out_w = _hw(output_size)
    c, img_h, img_w = image.shape
    n = matrices.shape[0]
    dtype = image.dtype if image.is_floating_point() else torch.float32
    device = image.device
    scale = torch.ones(c, dtype=dtype) if channel_scale is None else torch.as_tensor(channel_scale, dtype=dtype)
    offset = torch.zeros(c, dtype=dtype) if channel_offset is None else torch.as_tensor(channel_offset, dtype=dtype)
    if scale.shape != (c,) or offset.shape != (c,):
        raise ValueError(f"channel_scale / channel_offset must have {c} values")
    if threads is None:
        threads = torch.get_num_threads()
    elif isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1 or None, got {threads!r}")
    threads = int(threads)
    if workspace is not None and not isinstance(workspace, CropWorkspace):
        raise TypeError(f"workspace must be a CropWorkspace or None, got {type(workspace).__name__}")
    cv2 = _cv2_for(backend, dtype, device) if n > 0 else None
    out = workspace._claim_output((n, c, out_h, out_w)) if cv2 is not None and workspace is not None else None
    if out is None:
        out = torch.empty((n, c, out_h, out_w), dtype=dtype, device=device)
    if n == 0:
        return out
    if cv2 is not None:
        _warp_cv2(cv2, image, matrices, out, scale, offset, float(border_value), max_region_ratio, threads, workspace)
        return out
    if not bool(torch.isfinite(matrices).all()):
        raise ValueError("warp matrices contain NaN or inf")
    scale, offset = scale.to(device), offset.to(device)
    fill = (float(border_value) * scale + offset).view(1, c, 1, 1)  # value of a pixel outside the image
    inv = invert_affine(matrices.to(torch.float64).cpu())
    bounds = _footprints(inv, out_h, out_w)  # (N, 4) unclamped
    lo = torch.stack([bounds[:, 0].clamp(0, img_w - 1), bounds[:, 1].clamp(0, img_h - 1)], -1)
    hi = torch.stack([bounds[:, 2].clamp(0, img_w - 1), bounds[:, 3].clamp(0, img_h - 1)], -1)
    visible = (bounds[:, 2] >= 0) & (bounds[:, 3] >= 0) & (bounds[:, 0] <= img_w - 1) & (bounds[:, 1] <= img_h - 1)
    visible &= img_h > 0 and img_w > 0  # an empty image has nothing to sample: all border
    idx = torch.nonzero(visible).flatten()
    if idx.numel() == 0:
        return out.copy_(fill.expand_as(out))
    areas = ((hi - lo + 1).prod(dim=-1))[idx]
    u_lo = lo[idx].amin(dim=0)
    u_hi = hi[idx].amax(dim=0)
    union_area = float((u_hi - u_lo + 1).prod())
    if union_area <= max_region_ratio * float(areas.sum()) or idx.numel() == 1:
        groups = [(idx, u_lo, u_hi)]
    else:
        groups = [(idx[i : i + 1], lo[idx[i]], hi[idx[i]]) for i in range(idx.numel())]
    if idx.numel() < n or len(groups) > 1:
        out.copy_(fill.expand_as(out))
    for sel, g_lo, g_hi in groups:
        x0, y0 = int(g_lo[0]), int(g_lo[1])
        x1, y1 = int(g_hi[0]), int(g_hi[1])
        region = image[:, y0 : y1 + 1, x0 : x1 + 1].to(dtype)
        # sample (x - border) * scale with zero padding, then add border * scale + offset
        region = (region - float(border_value)) * scale.view(c, 1, 1)
        shifted = inv[sel].clone()
        shifted[:, 0, 2] -= x0
        shifted[:, 1, 2] -= y0
        m = sel.numel()
        grid = _normalized_grid(shifted, out_h, out_w, y1 - y0 + 1, x1 - x0 + 1, dtype).to(device)
        sampled = F.grid_sample(
            region[None], grid.reshape(1, m * out_h, out_w, 2), mode="bilinear", padding_mode="zeros",
            align_corners=False,
        )[0].view(c, m, out_h, out_w).permute(1, 0, 2, 3)
        if m == n:
            torch.add(sampled, fill, out=out)
        else:
            out[sel.to(device)] = sampled + fill
    return out


_KEEP_MAX_BYTES = 64 << 20


class CropWorkspace:
    """Memory that `warp_affine_batch`'s cv2 backend reuses from one call to the next: one float32
    output buffer (the `(N, C, h, w)` crops are written straight into it) and one scratch buffer for
    the source region's planes (`(C, rh, rw)` uint8 channels and their `(C, rh, rw)` float32 values).

    A freshly allocated multi-MB buffer is page-faulted in on first touch, which can cost as much as
    the warps themselves; with a workspace, repeated calls write into memory that is already mapped.
    Reuse never shows in the values:

    - the output buffer is handed out again only once no tensor (or view) of the result it last
      backed is alive; while one is, the call allocates a fresh output. So a result is never
      overwritten while held, but it may share memory with an earlier result that has been released;
    - the scratch buffer serves one call at a time (a concurrent call allocates its own planes);
    - every output pixel is written by every call (crops or border), so nothing of an earlier call
      survives in a result.

    A buffer larger than `max_bytes` is not kept (that call allocates). A workspace is thread-safe;
    the image processor and the training transform each own one. Copying or pickling gives an empty
    workspace with the same `max_bytes`: buffers are never shared or serialised.

    Args:
        max_bytes: the largest buffer kept, for each of the two (64 MiB by default).
    """

    def __init__(self, max_bytes: int = _KEEP_MAX_BYTES):
        if int(max_bytes) < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes!r}")
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()  # guards the output buffer and the weak reference
        self._output: np.ndarray | None = None  # float32, flat
        self._handed_out = None  # weak reference to the numpy view behind the last result
        self._scratch_lock = threading.Lock()  # held by the call using the scratch buffer
        self._scratch: np.ndarray | None = None  # uint8, flat

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_bytes={self.max_bytes})"

    def __getstate__(self) -> dict:
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def _claim_output(self, shape: tuple[int, int, int, int]) -> torch.Tensor | None:
        """A float32 CPU tensor of `shape` on the kept output buffer, or None (the caller allocates)
        when the last result handed out is still alive or `shape` is above `max_bytes`. The returned
        tensor holds the numpy view that the weak reference watches."""
        size = int(np.prod(shape))
        if size * 4 > self.max_bytes:
            return None
        with self._lock:
            if self._handed_out is not None and self._handed_out() is not None:
                return None
            if self._output is None or self._output.size < size:
                self._output = torch.empty(size, dtype=torch.float32).numpy()
            view = self._output[:size].reshape(shape)
            self._handed_out = weakref.ref(view)
        return torch.from_numpy(view)

    @contextlib.contextmanager
    def _scratch_planes(self, c: int, rh: int, rw: int):
        """Yield `(uint8 (c, rh, rw), float32 (c, rh, rw))` views of the kept scratch buffer, or None
        when another call is using it or it would exceed `max_bytes`."""
        area = c * rh * rw
        offset = -(-area // 64) * 64  # the float32 planes start on a 64-byte boundary
        nbytes = offset + 4 * area
        if nbytes > self.max_bytes or not self._scratch_lock.acquire(blocking=False):
            yield None
            return
        try:
            if self._scratch is None or self._scratch.size < nbytes:
                self._scratch = np.empty(nbytes, dtype=np.uint8)
            buf = self._scratch
            yield buf[:area].reshape(c, rh, rw), buf[offset : offset + 4 * area].view(np.float32).reshape(c, rh, rw)
        finally:
            self._scratch_lock.release()

    def idle_buffers(self) -> list[np.ndarray]:
        """The kept buffers that no live result and no running call is using, as flat uint8 views
        (for tests and debugging: filling them with 0xFF turns every float32 in them into NaN)."""
        idle = []
        with self._lock:
            if self._output is not None and (self._handed_out is None or self._handed_out() is None):
                idle.append(self._output.view(np.uint8))
        if self._scratch_lock.acquire(blocking=False):
            try:
                if self._scratch is not None:
                    idle.append(self._scratch)
            finally:
                self._scratch_lock.release()
        return idle

    def release(self) -> None:
        """Drop the kept buffers (a live result keeps its own memory); later calls allocate anew."""
        with self._lock:
            self._output = self._handed_out = None
        with self._scratch_lock:
            self._scratch = None


def _cv2_for(backend: str, dtype: torch.dtype, device):
    """The cv2 module when the cv2 crop backend applies, else None."""
    if backend == "torch" or dtype != torch.float32 or device.type != "cpu":
        if backend == "cv2":
            raise ValueError(f"backend 'cv2' needs float32 output on CPU, got {dtype} on {device}")
        return None
    cv2 = _import_cv2()
    if cv2 is None and backend == "cv2":
        raise ValueError("backend 'cv2' needs OpenCV (pip install opencv-python-headless)")
    return cv2


@functools.lru_cache(maxsize=None)
def _import_cv2():
    """The cv2 module, or None when OpenCV is not installed (looked up once: a failing import
    searches the whole path every time)."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _invert_affine_np(m: np.ndarray) -> np.ndarray:
    """`invert_affine` in float64 numpy (tiny-array torch ops cost ~10 us each; this is the hot path)."""
    det = _affine_det(m)
    if not np.isfinite(det).all() or (det == 0).any():
        raise ValueError(f"affine matrix is singular or not finite (determinants {det.tolist()})")
    return _affine_inverse(m, det, lambda *entries: np.stack(entries, -1).reshape(-1, 2, 3))


def _source_planes(cv2, image: torch.Tensor, x0: int, y0: int, x1: int, y1: int, gains, shifts, scratch=None) -> list:
    """The region `[x0..x1] x [y0..y1]` of `image (C, H, W)` as C float32 planes with the channel
    affine `x * gain + shift` applied. uint8 goes through a 256-entry float32 table per channel
    (`cv2.LUT`: one pass, the affine evaluated in float64); a channels-last uint8 image (a decoded
    PIL / numpy image seen through `permute`) is split with `cv2.split` first. `scratch`: optional
    `(uint8 (C, rh, rw), float32 (C, rh, rw))` arrays to write into instead of allocating."""
    c, rh, rw = image.shape[0], y1 - y0 + 1, x1 - x0 + 1
    src = image.detach()
    floats = list(scratch[1]) if scratch is not None else [None] * c
    if src.dtype == torch.uint8:
        hwc = src.permute(1, 2, 0)
        if 1 < c <= 4 and hwc.is_contiguous():
            # into preallocated planes: ~10x faster than letting cv2.split allocate its outputs
            channels = list(scratch[0]) if scratch is not None else list(np.empty((c, rh, rw), dtype=np.uint8))
            cv2.split(hwc.numpy()[y0 : y1 + 1, x0 : x1 + 1], channels)
        else:
            channels = [src[k, y0 : y1 + 1, x0 : x1 + 1].numpy() for k in range(c)]
        values = np.arange(256, dtype=np.float64)
        return [
            cv2.LUT(
                np.ascontiguousarray(channels[k]), (values * gains[k] + shifts[k]).astype(np.float32).reshape(1, 256),
                dst=floats[k],
            )
            for k in range(c)
        ]
    planes = []
    for k in range(c):
        plane = np.multiply(
            src[k, y0 : y1 + 1, x0 : x1 + 1].numpy(), np.float32(gains[k]), out=floats[k], dtype=np.float32
        )
        plane += np.float32(shifts[k])
        planes.append(plane)
    return planes


def _warp_cv2(
    cv2, image, matrices, out, scale, offset, border_value: float, max_region_ratio: float, threads: int,
    workspace: CropWorkspace | None,
) -> None:
    """The cv2 backend of `warp_affine_batch`, written into `out (N, C, h, w)` float32 with up to
    `threads` threads, the source planes in `workspace`'s scratch memory when it has some free.

    All bookkeeping is float64 numpy. The source region the visible crops can touch (their union,
    or each crop's own footprint when the union is much larger than their sum) is converted once to
    float32 planes with the channel affine applied; every crop and channel is then one
    `cv2.warpAffine` (inverse map, bilinear, constant border = the affine of `border_value`) written
    straight into its `(h, w)` plane of `out`. Planar single-channel warps measured faster than one
    3-channel warp on an interleaved region plus the de-interleaving copy (OpenCV 5, 1-2 cores)."""
    c, out_h, out_w = out.shape[1:]
    img_h, img_w = image.shape[-2:]
    gains = [float(v) for v in scale.tolist()]
    shifts = [float(v) for v in offset.tolist()]
    fills = [border_value * g + s for g, s in zip(gains, shifts)]
    m = matrices.detach().cpu().numpy().astype(np.float64)
    if not np.isfinite(m).all():
        raise ValueError("warp matrices contain NaN or inf")
    inv = _invert_affine_np(m)
    # footprint: floor of the corners' source positions, -1 / +2 for the bilinear neighbours
    cx = np.array([0.0, out_w - 1.0, 0.0, out_w - 1.0])
    cy = np.array([0.0, 0.0, out_h - 1.0, out_h - 1.0])
    sx = inv[:, 0, 0, None] * cx + inv[:, 0, 1, None] * cy + inv[:, 0, 2, None]
    sy = inv[:, 1, 0, None] * cx + inv[:, 1, 1, None] * cy + inv[:, 1, 2, None]
    bx0, bx1 = np.floor(sx.min(axis=1)) - 1, np.floor(sx.max(axis=1)) + 2
    by0, by1 = np.floor(sy.min(axis=1)) - 1, np.floor(sy.max(axis=1)) + 2
    visible = (bx1 >= 0) & (by1 >= 0) & (bx0 <= img_w - 1) & (by0 <= img_h - 1) & (img_h > 0) & (img_w > 0)
    # `out` may be a workspace's memory of an earlier result: every crop below is either
    # filled here or fully written by cv2.warpAffine (constant border), so nothing stale survives
    out_np = out.numpy()
    for i in np.flatnonzero(~visible).tolist():
        for k in range(c):
            out_np[i, k].fill(fills[k])
    idx = np.flatnonzero(visible)
    if idx.size == 0:
        return
    x0 = np.clip(bx0[idx], 0, img_w - 1).astype(np.int64)
    x1 = np.clip(bx1[idx], 0, img_w - 1).astype(np.int64)
    y0 = np.clip(by0[idx], 0, img_h - 1).astype(np.int64)
    y1 = np.clip(by1[idx], 0, img_h - 1).astype(np.int64)
    areas = float(((x1 - x0 + 1) * (y1 - y0 + 1)).sum())
    ux0, uy0, ux1, uy1 = int(x0.min()), int(y0.min()), int(x1.max()), int(y1.max())
    if (ux1 - ux0 + 1) * (uy1 - uy0 + 1) <= max_region_ratio * areas or idx.size == 1:
        groups = [(idx, ux0, uy0, ux1, uy1)]
    else:
        groups = [(idx[j : j + 1], int(x0[j]), int(y0[j]), int(x1[j]), int(y1[j])) for j in range(idx.size)]
    with _opencv_single_threaded(cv2):
        _warp_groups_cv2(cv2, image, inv, groups, out_np, gains, shifts, fills, threads, workspace)


def _warp_groups_cv2(cv2, image, inv, groups, out_np, gains, shifts, fills, threads: int, workspace) -> None:
    """Run the warps of `groups` (see `_warp_cv2`), spread over up to `threads` threads by whole
    crops when there are enough (OpenCV releases the GIL inside `warpAffine`)."""
    c, out_h, out_w = out_np.shape[1:]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    size = (out_w, out_h)

    def warp(planes, mats, sel) -> None:
        for j, i in enumerate(sel.tolist()):
            mat, dst = mats[j], out_np[i]
            for k in range(c):
                cv2.warpAffine(
                    planes[k], mat, size, dst=dst[k], flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=fills[k]
                )

    def region(group, scratch=None):
        sel, gx0, gy0, gx1, gy1 = group
        mats = inv[sel]
        mats[:, 0, 2] -= gx0
        mats[:, 1, 2] -= gy0
        return _source_planes(cv2, image, gx0, gy0, gx1, gy1, gains, shifts, scratch), mats, sel

    total = sum(int(g[0].size) for g in groups)
    workers = min(threads, total // _MIN_CROPS_PER_THREAD)
    if len(groups) == 1:  # one shared source region, in the workspace's scratch memory when it is free
        _, gx0, gy0, gx1, gy1 = groups[0]
        kept = (
            workspace._scratch_planes(c, gy1 - gy0 + 1, gx1 - gx0 + 1) if workspace is not None else contextlib.nullcontext()
        )
        with kept as scratch:
            planes, mats, sel = region(groups[0], scratch)
            if workers <= 1:
                warp(planes, mats, sel)
            else:  # crops split between threads
                parts = np.array_split(np.arange(sel.size), workers)
                _run_threads([(lambda p=p: warp(planes, mats[p], sel[p])) for p in parts])
        return
    if workers <= 1:
        for group in groups:
            warp(*region(group))
        return
    parts = np.array_split(np.arange(len(groups)), workers)  # each crop converts its own footprint
    _run_threads([(lambda p=p: [warp(*region(groups[q])) for q in p.tolist()]) for p in parts])


# below ~8 crops per thread, starting and joining a thread cost more than it saved (measured, 2 cores)
_MIN_CROPS_PER_THREAD = 8

# The crop path's `threads` are spent on whole crops and each OpenCV call runs single-threaded:
# OpenCV's own pool on top of our threads would run more threads than asked for (oversubscribing the
# cores, worst when they are shared with other work), and `threads=1` would not mean one thread. So
# OpenCV is single-threaded for the duration of a call and gets back the count it had afterwards.
# That count is process-wide: concurrent crop calls share the switch (the first in switches, the last
# out restores), a count that another thread set meanwhile is left alone, and a child forked mid-call
# restores it too. Switching costs nothing while nothing else uses OpenCV's pool between calls; when
# something does, OpenCV rebuilds its pool once per call, small next to a batch of crops.
_OPENCV_LOCK = threading.Lock()
_OPENCV_STATE = {"users": 0, "saved": 1}


@contextlib.contextmanager
def _opencv_single_threaded(cv2):
    """Run the body with `cv2.setNumThreads(1)`, restoring OpenCV's former count when the last of
    the crop calls running concurrently leaves (unless someone set another count meanwhile)."""
    with _OPENCV_LOCK:
        if _OPENCV_STATE["users"] == 0:
            _OPENCV_STATE["saved"] = cv2.getNumThreads()
            if _OPENCV_STATE["saved"] != 1:
                cv2.setNumThreads(1)
        _OPENCV_STATE["users"] += 1
    try:
        yield
    finally:
        with _OPENCV_LOCK:
            _OPENCV_STATE["users"] -= 1
            if _OPENCV_STATE["users"] == 0:
                _restore_opencv_threads(cv2)


def _restore_opencv_threads(cv2) -> None:
    """Give OpenCV back the saved count, unless it is no longer the 1 that the crop path set."""
    if _OPENCV_STATE["saved"] != 1 and cv2.getNumThreads() == 1:
        cv2.setNumThreads(_OPENCV_STATE["saved"])


def _opencv_after_fork_in_child() -> None:
    """A child forked while a crop call ran has no such call: fresh lock, OpenCV's count restored."""
    global _OPENCV_LOCK
    _OPENCV_LOCK = threading.Lock()
    if _OPENCV_STATE["users"]:
        _OPENCV_STATE["users"] = 0
        cv2 = _import_cv2()
        if cv2 is not None:
            _restore_opencv_threads(cv2)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_opencv_after_fork_in_child)


def _run_threads(tasks) -> None:
    """Run `tasks` (callables): the first in this thread, the others in short-lived threads (no pool
    outlives the call, so forked workers inherit nothing); re-raises the first error."""
    errors: list[BaseException] = []

    def guarded(task):
        try:
            task()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(err)

    threads = [threading.Thread(target=guarded, args=(t,), daemon=True) for t in tasks[1:]]
    for t in threads:
        t.start()
    guarded(tasks[0])
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def heatmap_coords_to_image(
    coords: torch.Tensor,
    center: torch.Tensor,
    scale: torch.Tensor,
    heatmap_size: SizeLike,
    use_udp: bool = True,
    pixel_std: float = 200.0,
) -> torch.Tensor:
    """Heatmap pixel coordinates back to image pixels (the official `transform_preds`, no rotation).

    UDP: `x_img = x_hm * sw / (w_hm - 1) + cx - sw / 2`, with `sw = scale_w * pixel_std`;
    non-UDP: the same with `w_hm` in place of `w_hm - 1`.

    Args:
        coords: `(N, K, 2)` `(x, y)` in heatmap pixels.
        center: `(N, 2)` window centres; scale: `(N, 2)` window sizes / pixel_std.
        heatmap_size: `(height, width)` of the heatmaps, e.g. `(64, 48)`.
        use_udp: unbiased (`size - 1`) or legacy (`size`) scaling.
        pixel_std: scale normaliser (200).

    Returns:
        `(N, K, 2)` image coordinates in the dtype of `coords` (float).
    """
    if coords.ndim != 3 or coords.shape[-1] != 2:
        raise ValueError(f"coords must be (N, K, 2), got shape {tuple(coords.shape)}")
    center, scale = _center_scale(center, scale)
    if center.shape[0] != coords.shape[0]:
        raise ValueError(f"center has {center.shape[0]} rows, coords {coords.shape[0]}")
    hm_h, hm_w = _hw(heatmap_size, "heatmap_size")
    dtype = coords.dtype if coords.is_floating_point() else torch.float32
    size = (scale * pixel_std).to(device=coords.device, dtype=torch.float64)
    denom = torch.tensor(
        [hm_w - 1.0, hm_h - 1.0] if use_udp else [float(hm_w), float(hm_h)], dtype=torch.float64, device=coords.device
    )
    factor = size / denom
    offset = center.to(device=coords.device, dtype=torch.float64) - size * 0.5
    return (coords.to(torch.float64) * factor[:, None, :] + offset[:, None, :]).to(dtype)
