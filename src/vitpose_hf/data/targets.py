"""Gaussian target heatmaps and target weights, batched over persons and joints.

Both encodings reproduce mmpose 0.x `TopDownGenerateTarget` (`target_type="GaussianHeatmap"`):

UDP (`_udp_generate_target`, what ViTPose trains with):
    stride = (image_size - 1) / (heatmap_size - 1)
    mu = int(joint / stride + 0.5)                    (integer cell, truncated toward zero)
    ul = int(mu - 3 sigma), br = int(mu + 3 sigma + 1)   (window [ul, br) of each axis)
    weight = 0 if the window misses the heatmap entirely (ul >= size or br < 0), else visibility
    heatmap[y, x] = exp(-((x - jx)^2 + (y - jy)^2) / (2 sigma^2)) inside the window, 0 outside,
    with the *exact* sub-pixel centre (jx, jy) = joint / stride.

MSRA (`_msra_generate_target`, the non-UDP option): stride = image_size / heatmap_size and the
Gaussian is centred on the integer cell `mu` instead.

A joint whose weight is 0 (unlabeled, or its window entirely outside the heatmap) gets an all-zero
heatmap. A joint slightly outside the crop keeps weight 1 and a partial Gaussian, as in mmpose.
For the window bounds the formulas above are exact for integer `3 * sigma` (sigma = 2 -> 13x13).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["generate_heatmaps", "generate_udp_heatmaps", "generate_msra_heatmaps"]


def _pair(size: Sequence[int], name: str) -> tuple[int, int]:
    if len(size) != 2 or int(size[0]) < 2 or int(size[1]) < 2:
        raise ValueError(f"{name} must be (height, width) with both >= 2, got {tuple(size)!r}")
    return int(size[0]), int(size[1])


def _axis(
    coord: torch.Tensor, length: int, stride: float, sigma: float, udp: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D factor `(N, K, length)` of the separable Gaussian, and per-joint in-range mask `(N, K)`."""
    tmp = 3.0 * sigma
    size = math.ceil(2.0 * tmp + 1.0)  # len(np.arange(0, 2 * tmp + 1)) in mmpose
    half = float(size // 2)
    mu = torch.trunc(coord / stride + 0.5)
    ul = torch.trunc(mu - tmp)
    br = torch.trunc(mu + tmp + 1.0)
    in_range = (ul < length) & (br >= 0)
    # Gaussian centre in window coordinates (the position of `g`'s peak), then in heatmap pixels
    centre = ul + half + ((coord / stride - mu) if udp else 0.0)
    xs = torch.arange(length, dtype=coord.dtype, device=coord.device)
    d = xs - centre[..., None]
    g = torch.exp(-(d * d) / (2.0 * sigma * sigma))
    window = (xs >= ul[..., None]) & (xs < torch.minimum(br, ul + size)[..., None])
    return g * window, in_range


def generate_heatmaps(
    keypoints: torch.Tensor,
    visible: torch.Tensor,
    image_size: Sequence[int],
    heatmap_size: Sequence[int],
    sigma: float = 2.0,
    use_udp: bool = True,
    joint_weights: torch.Tensor | Sequence[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target heatmaps for keypoints given in crop (model input) pixel coordinates.

    Args:
        keypoints: `(N, K, 2)` joint `(x, y)` in input-crop pixels (pixel-centre convention).
        visible: `(N, K)` labeled flags / weights (>0 means labeled; the value is used as the weight,
            mmpose passes `min(1, v)`).
        image_size: crop `(height, width)`, e.g. `(256, 192)`.
        heatmap_size: heatmap `(height, width)`, e.g. `(64, 48)`.
        sigma: Gaussian standard deviation in heatmap pixels.
        use_udp: UDP encoding (sub-pixel centre, stride `(s-1)/(h-1)`) or MSRA (integer centre,
            stride `s/h`).
        joint_weights: optional `(K,)` multipliers of the target weights.

    Returns:
        `heatmaps (N, K, h, w)` float32 in [0, 1] and `target_weight (N, K)` float32.
    """
    keypoints = torch.as_tensor(keypoints)
    visible = torch.as_tensor(visible)
    if keypoints.ndim != 3 or keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must be (N, K, 2), got shape {tuple(keypoints.shape)}")
    if visible.shape != keypoints.shape[:2]:
        raise ValueError(f"visible must be (N, K) = {tuple(keypoints.shape[:2])}, got {tuple(visible.shape)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    img_h, img_w = _pair(image_size, "image_size")
    hm_h, hm_w = _pair(heatmap_size, "heatmap_size")
    kp = keypoints.to(torch.float64)
    if not bool(torch.isfinite(kp).all()):
        raise ValueError("keypoints contain NaN or inf")
    if use_udp:
        stride_x, stride_y = (img_w - 1.0) / (hm_w - 1.0), (img_h - 1.0) / (hm_h - 1.0)
    else:
        stride_x, stride_y = img_w / hm_w, img_h / hm_h
    gx, in_x = _axis(kp[..., 0], hm_w, stride_x, sigma, use_udp)
    gy, in_y = _axis(kp[..., 1], hm_h, stride_y, sigma, use_udp)
    weight = visible.to(torch.float64) * (in_x & in_y)
    draw = (weight > 0.5).to(torch.float32)
    gx = gx.to(torch.float32) * draw[..., None]
    heatmaps = gy.to(torch.float32)[..., :, None] * gx[..., None, :]
    if joint_weights is not None:
        jw = torch.as_tensor(joint_weights, dtype=torch.float64)
        if jw.shape != (kp.shape[1],):
            raise ValueError(f"joint_weights must have shape ({kp.shape[1]},), got {tuple(jw.shape)}")
        weight = weight * jw
    return heatmaps, weight.to(torch.float32)


def generate_udp_heatmaps(keypoints, visible, image_size, heatmap_size, sigma: float = 2.0, joint_weights=None):
    """`generate_heatmaps(..., use_udp=True)`: mmpose 0.x UDP Gaussian targets."""
    return generate_heatmaps(keypoints, visible, image_size, heatmap_size, sigma, True, joint_weights)


def generate_msra_heatmaps(keypoints, visible, image_size, heatmap_size, sigma: float = 2.0, joint_weights=None):
    """`generate_heatmaps(..., use_udp=False)`: mmpose 0.x MSRA (integer-centred) Gaussian targets."""
    return generate_heatmaps(keypoints, visible, image_size, heatmap_size, sigma, False, joint_weights)
