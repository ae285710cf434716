"""1/8 feature resolution (the paper's resolution study): turn a stride-16 model into a stride-8 one.

A stride-8 ViTPose uses the same 16x16 patch kernel with stride 8 and padding 4 (the padding for
which the grid is exactly `H/8 x W/8`: `(H + 2*4 - 16) / 8 + 1 = H / 8`; the official padding 2
would give `H/8 - 1`). The heads keep heatmaps at 1/4 of the input: the classic head drops to one
x2 deconvolution, the simple head upsamples x2. Every backbone weight keeps its shape except the
position embeddings, which are resampled (bicubic) to the finer grid.
"""

from __future__ import annotations

import logging

import torch

from .configuration_vitpose import VitPoseConfig
from .modeling_vitpose import VitPoseForPoseEstimation

logger = logging.getLogger(__name__)

__all__ = ["feature_stride_config", "change_feature_stride"]


def feature_stride_config(config: VitPoseConfig, feature_stride: int) -> VitPoseConfig:
    """A copy of `config` with patch stride `feature_stride` (8 or 16) and heads that still give
    heatmaps at 1/4 of the input.

    Raises:
        ValueError: `feature_stride` is not 8 or 16, or the patch kernel is smaller than the stride.
    """
    if feature_stride not in (8, 16):
        raise ValueError(f"feature_stride must be 8 or 16, got {feature_stride!r}")
    if min(config.patch_size) < feature_stride:
        raise ValueError(f"patch_size {config.patch_size} is smaller than the requested stride {feature_stride}")
    values = config.to_dict()
    for key in ("model_type", "transformers_version", "architectures"):
        values.pop(key, None)
    upsample = feature_stride // 4  # heatmaps at 1/4 of the input
    values["patch_stride"] = None if list(config.patch_size) == [feature_stride] * 2 else [feature_stride] * 2
    values["patch_padding"] = None  # official 2 for stride == patch, else the exact-grid padding
    if config.use_simple_decoder:
        values["scale_factor"] = upsample
    else:
        values["num_deconv_layers"] = {2: 1, 4: 2}[upsample]
    return VitPoseConfig(**values)


def change_feature_stride(model: VitPoseForPoseEstimation, feature_stride: int = 8) -> VitPoseForPoseEstimation:
    """A new model at patch stride `feature_stride`, initialised from `model` (e.g. a stride-16 checkpoint).

    Position embeddings are resampled to the new grid; all other backbone weights and the head's
    first deconvolution (or the simple head's conv) are copied. Weights with no place in the new
    head (the classic head's second deconvolution and its BatchNorm, going 16 -> 8) are dropped and
    logged; going 8 -> 16 they start from the default initialisation.

    Args:
        model: the source model (any stride).
        feature_stride: 8 (1/8 features) or 16.

    Returns:
        `VitPoseForPoseEstimation` in the same mode as `model`: `(B, 3, H, W)` -> heatmaps `(B, K, H/4, W/4)`.
    """
    config = feature_stride_config(model.config, feature_stride)
    new = VitPoseForPoseEstimation(config)
    new.to(device=next(model.parameters()).device, dtype=next(model.parameters()).dtype)
    with torch.no_grad():
        result = new.load_state_dict(model.state_dict(), strict=False)
    if result.missing_keys:
        logger.info("not in the source model (default init): %s", sorted(result.missing_keys))
    if result.unexpected_keys:
        logger.info("dropped (no place in the stride-%d heads): %s", feature_stride, sorted(result.unexpected_keys))
    bad = [k for k in result.missing_keys + result.unexpected_keys if not k.startswith(("head.", "extra_heads."))]
    if bad:
        raise ValueError(f"backbone weights did not transfer: {bad}")
    new.train(model.training)
    return new
