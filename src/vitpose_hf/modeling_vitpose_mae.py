"""MAE pre-training of the ViTPose backbone, for any (H, W) patch grid (256x192 included).

`VitPoseForMaskedImageModeling` = our `VitPoseModel` as `self.backbone` (the very module names of
`VitPoseForPoseEstimation.backbone`, so a saved MAE model loads into the pose model with no
conversion) + a light MAE decoder. Each forward:

1. draws noise `(B, N)` (or takes the caller's), keeps the `N - int(N * mask_ratio)` patches with
   the smallest noise (argsort of noise, as facebookresearch/mae);
2. embeds the image with `backbone.embeddings` (patch conv + resampled position embeddings), runs
   `backbone.encoder` and `backbone.layernorm` on the kept tokens only;
3. the decoder projects them to its width, puts a shared mask token at every masked position,
   adds fixed 2-D sin-cos position embeddings of the `(h, w)` grid, runs its own pre-LN blocks and
   predicts the `p_h * p_w * 3` pixels of every patch;
4. the loss is the mean squared error over the masked patches only (optionally on per-patch
   normalised pixels, `mae_norm_pix_loss`).

The patch convolution of ViTPose has padding 2 (kernel 16, stride 16): token `(i, j)` sees input
rows `16 i - 2 .. 16 i + 13` and columns likewise, i.e. 2 pixels of the patches above and to the
left, and misses the last 2 rows / columns of its own patch. The MAE targets are the plain 16x16
pixel patches of the input grid (token `(i, j)` <-> pixels `[16 i, 16 i + 16) x [16 j, 16 j + 16)`),
the same grid the padded conv produces for inputs that are multiples of 16. So that a kept token
cannot see the border pixels of a masked neighbour, the pixels of masked patches are set to 0 (the
normalised mean colour) before the patch conv (`mae_hide_masked_pixels`, default True).

MAE settings live in `VitPoseConfig` as extra attributes with a `mae_` prefix (the plain
`decoder_hidden_size` already names the classic pose head's width); missing ones take the values of
`MAE_CONFIG_DEFAULTS` and are written into the config, so `save_pretrained` records them:

    mae_decoder_hidden_size (512), mae_decoder_num_hidden_layers (8),
    mae_decoder_num_attention_heads (16), mae_decoder_mlp_ratio (4.0), mae_mask_ratio (0.75),
    mae_norm_pix_loss (False), mae_hide_masked_pixels (True)

`load_mae_checkpoint_into_backbone` reads a checkpoint of the facebookresearch/mae (timm) layout, or
an official ViTPose backbone, into the backbone of any ViTPose model (names from the key table of
`checkpoint_keys`), listing every key it drops and why.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .checkpoint_keys import FC2, FINAL_NORM, PATCH, POSITION, map_vit_backbone, read_checkpoint, unwrap_state_dict
from .configuration_vitpose import VitPoseConfig
from .modeling_vitpose import (
    VitPoseEncoder,
    VitPoseModel,
    VitPosePreTrainedModel,
    check_dataset_index,
    infer_grid,
    reject_unknown_kwargs,
    resample_position_embeddings,
    trunc_normal_init,
)

logger = logging.getLogger(__name__)

__all__ = [
    "MAE_CONFIG_DEFAULTS",
    "VitPoseForMaskedImageModeling",
    "VitPoseMaskedImageModelingOutput",
    "MaeCheckpointReport",
    "get_2d_sincos_position_embeddings",
    "load_mae_checkpoint_into_backbone",
    "patchify",
    "unpatchify",
    "random_masking",
]

MAE_CONFIG_DEFAULTS: dict[str, Any] = {
    "mae_decoder_hidden_size": 512,
    "mae_decoder_num_hidden_layers": 8,
    "mae_decoder_num_attention_heads": 16,
    "mae_decoder_mlp_ratio": 4.0,
    "mae_mask_ratio": 0.75,
    "mae_norm_pix_loss": False,
    "mae_hide_masked_pixels": True,
}


# ----------------------------------------------------------------------------- output
@dataclass
class VitPoseMaskedImageModelingOutput(ModelOutput):
    """Output of `VitPoseForMaskedImageModeling`.

    Args:
        loss (`()` scalar): mean squared error over the masked patches (per-patch normalised pixels
            when `mae_norm_pix_loss`).
        reconstruction (`(B, N, p_h * p_w * C)`): predicted pixels of every patch, in `patchify`
            order (row-major grid, channel-last within a patch); normalised per patch when
            `mae_norm_pix_loss` (see `VitPoseForMaskedImageModeling.reconstruction_to_pixels`).
        mask (`(B, N)`): 1.0 for masked (predicted) patches, 0.0 for kept (visible) ones.
        ids_restore (`(B, N)` long): `ids_restore[b, n]` is the position of patch `n` in the
            shuffled order (kept patches first).
        hidden_states (tuple of `(B, T + K, C)`, *optional*): encoder hidden states of the kept tokens.
        attentions (tuple of `(B, heads, T + K, T + K)`, *optional*): encoder attention probabilities.
    """

    loss: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


# ----------------------------------------------------------------------------- helpers
def _patch_pair(patch_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(patch_size, int):
        return patch_size, patch_size
    return int(patch_size[0]), int(patch_size[1])


def patchify(pixel_values: torch.Tensor, patch_size: int | Sequence[int]) -> torch.Tensor:
    """Cut images into non-overlapping patches.

    Args:
        pixel_values: `(B, C, H, W)` with H, W multiples of the patch size.
        patch_size: `p` or `(p_h, p_w)`.

    Returns:
        `(B, h * w, p_h * p_w * C)`, h = H / p_h, w = W / p_w; patches in row-major grid order, pixels
        inside a patch in (row, column, channel) order (the facebookresearch/mae layout).
    """
    ph, pw = _patch_pair(patch_size)
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be (B, C, H, W), got shape {tuple(pixel_values.shape)}")
    b, c, height, width = pixel_values.shape
    if height % ph or width % pw:
        raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {ph}x{pw}")
    h, w = height // ph, width // pw
    x = pixel_values.reshape(b, c, h, ph, w, pw)
    x = x.permute(0, 2, 4, 3, 5, 1)  # b, h, w, ph, pw, c
    return x.reshape(b, h * w, ph * pw * c)


def unpatchify(
    patches: torch.Tensor, grid: Sequence[int], patch_size: int | Sequence[int], num_channels: int = 3
) -> torch.Tensor:
    """Inverse of `patchify`.

    Args:
        patches: `(B, h * w, p_h * p_w * C)`.
        grid: `(h, w)` patch grid (any aspect, e.g. (16, 12) for 256x192 with patch 16).
        patch_size: `p` or `(p_h, p_w)`.
        num_channels: C.

    Returns:
        `(B, C, h * p_h, w * p_w)`.
    """
    ph, pw = _patch_pair(patch_size)
    h, w = int(grid[0]), int(grid[1])
    if patches.ndim != 3 or patches.shape[1] != h * w or patches.shape[2] != ph * pw * num_channels:
        raise ValueError(
            f"patches of shape {tuple(patches.shape)} do not fit grid {h}x{w}, patch {ph}x{pw}, "
            f"{num_channels} channels (expected (B, {h * w}, {ph * pw * num_channels}))"
        )
    b = patches.shape[0]
    x = patches.reshape(b, h, w, ph, pw, num_channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, num_channels, h * ph, w * pw)


def get_2d_sincos_position_embeddings(embed_dim: int, grid: Sequence[int]) -> torch.Tensor:
    """Fixed 2-D sin-cos position embeddings of an `(h, w)` grid (the MAE formula, any aspect).

    The first `embed_dim / 2` channels encode the column index, the last half the row index; each half
    is `[sin(pos * omega), cos(pos * omega)]` with `omega_k = 10000 ** (-k / (embed_dim / 4))`. For a
    square grid this equals facebookresearch/mae's `get_2d_sincos_pos_embed` without the cls row.

    Returns:
        `(h * w, embed_dim)` float32, row-major grid order.
    """
    if embed_dim % 4:
        raise ValueError(f"sin-cos position embeddings need a width divisible by 4, got {embed_dim}")
    h, w = int(grid[0]), int(grid[1])
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows = torch.arange(h, dtype=torch.float64).repeat_interleave(w)  # row index of each token
    cols = torch.arange(w, dtype=torch.float64).repeat(h)  # column index of each token

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos[:, None] * omega[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()


def random_masking(
    batch_size: int, num_patches: int, mask_ratio: float, noise: torch.Tensor | None = None, device=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masking by argsort of noise (facebookresearch/mae).

    Args:
        batch_size, num_patches: B, N.
        mask_ratio: fraction of masked patches, in (0, 1); `K = N - int(N * mask_ratio)` are kept.
        noise: `(B, N)` noise (uniform [0, 1) when None); the K patches of smallest noise are kept.

    Returns:
        `ids_keep` `(B, K)` long (kept patch indices, ascending noise), `mask` `(B, N)` float
        (1 = masked), `ids_restore` `(B, N)` long.
    """
    mask_ratio = _check_mask_ratio(mask_ratio)
    num_keep = num_patches - int(num_patches * mask_ratio)
    if num_keep < 1 or num_keep >= num_patches:
        raise ValueError(
            f"mask_ratio {mask_ratio} on {num_patches} patches keeps {num_keep}: at least one patch must be "
            f"kept and at least one masked"
        )
    if noise is None:
        noise = torch.rand(batch_size, num_patches, device=device)
    elif tuple(noise.shape) != (batch_size, num_patches):
        raise ValueError(f"noise must have shape (B, N) = ({batch_size}, {num_patches}), got {tuple(noise.shape)}")
    elif device is not None:
        noise = noise.to(device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :num_keep]
    mask = torch.ones(batch_size, num_patches, device=noise.device)
    mask[:, :num_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return ids_keep, mask, ids_restore


def _check_mask_ratio(mask_ratio: float) -> float:
    try:
        ratio = float(mask_ratio)
    except (TypeError, ValueError):
        ratio = float("nan")
    if isinstance(mask_ratio, bool) or not 0.0 < ratio < 1.0:  # NaN fails the comparison too
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio!r}")
    return ratio


def mae_settings(config: VitPoseConfig) -> dict[str, Any]:
    """The `mae_*` settings of `config`, with `MAE_CONFIG_DEFAULTS` for the missing ones."""
    return {k: getattr(config, k, v) for k, v in MAE_CONFIG_DEFAULTS.items()}


def _decoder_config(config: VitPoseConfig) -> VitPoseConfig:
    s = mae_settings(config)
    return VitPoseConfig(
        image_size=config.image_size, patch_size=config.patch_size, hidden_size=s["mae_decoder_hidden_size"],
        num_hidden_layers=s["mae_decoder_num_hidden_layers"],
        num_attention_heads=s["mae_decoder_num_attention_heads"], mlp_ratio=s["mae_decoder_mlp_ratio"],
        hidden_act=config.hidden_act, drop_path_rate=0.0, layer_norm_eps=config.layer_norm_eps, qkv_bias=True,
        num_experts=1, attention_type="global",
    )


# ----------------------------------------------------------------------------- modules
class VitPoseMaeDecoder(nn.Module):
    """MAE decoder: Linear(C -> C_d), mask token, fixed 2-D sin-cos positions, pre-LN blocks
    (`VitPoseEncoder` of width C_d), LayerNorm, Linear(C_d -> p_h * p_w * 3).

    `(B, K, C)` kept latents + `ids_restore` `(B, N)` + grid -> `(B, N, p_h * p_w * 3)`.
    """

    def __init__(self, config: VitPoseConfig):
        super().__init__()
        dec = _decoder_config(config)
        ph, pw = config.patch_size
        self.decoder_embed = nn.Linear(config.hidden_size, dec.hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec.hidden_size))
        self.encoder = VitPoseEncoder(dec)
        self.layernorm = nn.LayerNorm(dec.hidden_size, eps=config.layer_norm_eps)
        self.decoder_pred = nn.Linear(dec.hidden_size, ph * pw * config.num_channels)
        self.hidden_size = dec.hidden_size

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """`latent` `(B, K, C)` (kept tokens, shuffled order), `ids_restore` `(B, N)` -> `(B, N, p*p*3)`."""
        x = self.decoder_embed(latent)
        b, k, d = x.shape
        n = ids_restore.shape[1]
        x = torch.cat([x, self.mask_token.to(x.dtype).expand(b, n - k, d)], dim=1)
        x = torch.gather(x, 1, ids_restore[:, :, None].expand(b, n, d))
        x = x + get_2d_sincos_position_embeddings(d, grid).to(device=x.device, dtype=x.dtype)[None]
        x, _, _ = self.encoder(x, None, grid, 0)
        return self.decoder_pred(self.layernorm(x))


class VitPoseForMaskedImageModeling(VitPosePreTrainedModel):
    """MAE pre-training of the ViTPose backbone (non-square grids welcome).

    `backbone` is a `VitPoseModel` (keys `backbone.*`, exactly those of `VitPoseForPoseEstimation`);
    `decoder` is the MAE decoder (keys `decoder.*`, unused by the pose model). Only global attention
    is supported (the encoder runs on an irregular subset of the grid).

    Input `pixel_values` `(B, 3, H, W)` (H, W multiples of the patch size); output
    `VitPoseMaskedImageModelingOutput` with `loss`, `reconstruction` `(B, N, p*p*3)`, `mask` `(B, N)`
    and `ids_restore` `(B, N)`.
    """

    def __init__(self, config: VitPoseConfig):
        defaulted = [key for key in MAE_CONFIG_DEFAULTS if not hasattr(config, key)]
        for key in defaulted:
            setattr(config, key, MAE_CONFIG_DEFAULTS[key])
        _check_mae_config(config)
        super().__init__(config)
        self.backbone = VitPoseModel(config)
        self.decoder = VitPoseMaeDecoder(config)
        self.post_init()
        self._warn_oversized_default_decoder(defaulted)

    def _warn_oversized_default_decoder(self, defaulted: Sequence[str]) -> None:
        """A config without MAE fields (e.g. a pose checkpoint opened with
        `AutoModelForMaskedImageModeling`) gets MAE's 512-wide, 8-layer decoder; say so when that
        dwarfs the encoder, since nobody asked for it."""
        if "mae_decoder_hidden_size" not in defaulted and "mae_decoder_num_hidden_layers" not in defaulted:
            return
        encoder = sum(p.numel() for p in self.backbone.parameters())
        decoder = sum(p.numel() for p in self.decoder.parameters())
        if decoder > 10 * encoder:
            logger.warning(
                "the config names no MAE decoder size: built the default decoder (mae_decoder_hidden_size %d, "
                "mae_decoder_num_hidden_layers %d, %.1fM parameters), %.0fx the %.2fM-parameter encoder; set "
                "mae_decoder_hidden_size / mae_decoder_num_hidden_layers / mae_decoder_num_attention_heads for a "
                "decoder that fits this encoder",
                self.config.mae_decoder_hidden_size, self.config.mae_decoder_num_hidden_layers, decoder / 1e6,
                decoder / max(encoder, 1), encoder / 1e6,
            )

    @property
    def patch_size(self) -> tuple[int, int]:
        return int(self.config.patch_size[0]), int(self.config.patch_size[1])

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, VitPoseMaeDecoder):
            trunc_normal_init(module.mask_token, self.config.initializer_range)

    def no_weight_decay(self) -> set[str]:
        """Backbone names of the base class plus the decoder's mask token."""
        return super().no_weight_decay() | {"decoder.mask_token"}

    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> `(B, N, p_h * p_w * C)` with this model's patch size."""
        return patchify(pixel_values, self.patch_size)

    def unpatchify(self, patches: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """`(B, N, p_h * p_w * C)` -> `(B, C, h * p_h, w * p_w)` for `grid` `(h, w)`."""
        return unpatchify(patches, grid, self.patch_size, self.config.num_channels)

    def forward_loss(self, pixel_values: torch.Tensor, reconstruction: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over masked patches.

        Args:
            pixel_values: `(B, C, H, W)` the unmasked input.
            reconstruction: `(B, N, p_h * p_w * C)` predictions.
            mask: `(B, N)` 1 for masked patches.

        Returns:
            scalar: `sum_n mask * mean_pixels((pred - target)^2) / sum_n mask`; the target is normalised
            per patch (mean 0, unbiased variance 1, eps 1e-6) when `mae_norm_pix_loss`.
        """
        target = self.patchify(pixel_values).float()
        if self.config.mae_norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        if reconstruction.shape != target.shape:
            raise ValueError(f"reconstruction must have shape {tuple(target.shape)}, got {tuple(reconstruction.shape)}")
        per_patch = (reconstruction.float() - target).pow(2).mean(dim=-1)
        mask = mask.float()
        return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)

    def reconstruction_to_pixels(self, pixel_values: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Predicted patches as an image `(B, C, H, W)` in the input's (normalised) pixel space; with
        `mae_norm_pix_loss` the per-patch mean / std of the true patches are put back."""
        if self.config.mae_norm_pix_loss:
            target = self.patchify(pixel_values).float()
            mean = target.mean(dim=-1, keepdim=True)
            std = (target.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5
            reconstruction = reconstruction.float() * std + mean
        ph, pw = self.patch_size
        grid = (pixel_values.shape[-2] // ph, pixel_values.shape[-1] // pw)
        return self.unpatchify(reconstruction, grid)

    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        dataset_index: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> VitPoseMaskedImageModelingOutput | tuple:
        r"""
        Args:
            pixel_values: `(B, 3, H, W)` normalised images, H and W multiples of the patch size.
            noise: `(B, N)` masking noise, N = (H / p_h) * (W / p_w); the patches with the smallest
                noise are kept. Random uniform when None (inject it for deterministic tests).
            mask_ratio: overrides `config.mae_mask_ratio` for this call; must be in (0, 1).
            dataset_index: `(B,)` ViTPose++ expert of each sample (default `config.main_dataset_index`).

        Returns:
            `VitPoseMaskedImageModelingOutput`.

        Raises:
            TypeError: an unknown keyword argument (named, with the closest accepted one).
        """
        reject_unknown_kwargs("VitPoseForMaskedImageModeling.forward", kwargs, (
            "pixel_values", "noise", "mask_ratio", "dataset_index", "output_hidden_states", "output_attentions",
            "return_dict",
        ))
        return_dict = self.config.return_dict if return_dict is None else return_dict
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        ratio = self.config.mae_mask_ratio if mask_ratio is None else mask_ratio
        _check_mask_ratio(ratio)
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must be a (B, C, H, W) tensor, got {tuple(getattr(pixel_values, 'shape', ()))}")
        b, _, height, width = pixel_values.shape
        ph, pw = self.patch_size
        if height % ph or width % pw:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {ph}x{pw}")
        grid = (height // ph, width // pw)
        num_patches = grid[0] * grid[1]
        ids_keep, mask, ids_restore = random_masking(b, num_patches, ratio, noise, pixel_values.device)

        embed_input = pixel_values
        if self.config.mae_hide_masked_pixels:
            pixel_mask = mask.reshape(b, 1, grid[0], grid[1]).repeat_interleave(ph, 2).repeat_interleave(pw, 3)
            embed_input = pixel_values * (1.0 - pixel_mask).to(pixel_values.dtype)
        tokens, embed_grid = self.backbone.embeddings(embed_input)
        if tuple(embed_grid) != grid:  # guarded at init; kept as a safety net for odd paddings
            raise ValueError(f"patch embedding grid {embed_grid} differs from the patch grid {grid}")
        num_prefix = self.config.num_knowledge_tokens
        prefix, patches = tokens[:, :num_prefix], tokens[:, num_prefix:]
        kept = torch.gather(patches, 1, ids_keep[:, :, None].expand(-1, -1, patches.shape[-1]))
        hidden = torch.cat([prefix, kept], dim=1)

        limit = self.config.num_experts if self.config.num_experts > 1 else self.config.num_datasets
        dataset_index = check_dataset_index(dataset_index, b, limit, pixel_values.device, self.config.main_dataset_index)
        hidden, all_hidden, all_attn = self.backbone.encoder(
            hidden, dataset_index, grid, num_prefix, output_hidden_states, output_attentions
        )
        latent = self.backbone.layernorm(hidden)[:, num_prefix:]
        reconstruction = self.decoder(latent, ids_restore, grid)
        loss = self.forward_loss(pixel_values, reconstruction, mask)
        out = VitPoseMaskedImageModelingOutput(
            loss=loss, reconstruction=reconstruction, mask=mask, ids_restore=ids_restore,
            hidden_states=all_hidden, attentions=all_attn,
        )
        return out if return_dict else out.to_tuple()


def _check_mae_config(config: VitPoseConfig) -> None:
    kinds = set(config.layer_attention_types())
    if kinds != {"global"}:
        raise ValueError(
            f"MAE pre-training needs global attention in every layer (the encoder sees a random subset of "
            f"the grid), but the config uses attention_type {sorted(kinds)}; pre-train with "
            f"attention_type='global' and switch to windowed attention when fine-tuning"
        )
    if list(config.effective_patch_stride) != list(config.patch_size):
        raise ValueError(
            f"MAE needs non-overlapping patches: patch_stride {config.patch_stride} must equal patch_size {config.patch_size}"
        )
    if 2 * config.patch_padding >= min(config.patch_size):
        raise ValueError(f"patch_padding {config.patch_padding} is too large for patch size {config.patch_size}")
    _check_mask_ratio(config.mae_mask_ratio)
    dec_width = config.mae_decoder_hidden_size
    if dec_width % 4:
        raise ValueError(f"mae_decoder_hidden_size must be divisible by 4 (sin-cos positions), got {dec_width}")
    if dec_width % config.mae_decoder_num_attention_heads:
        raise ValueError(
            f"mae_decoder_hidden_size ({dec_width}) must be a multiple of mae_decoder_num_attention_heads "
            f"({config.mae_decoder_num_attention_heads})"
        )


# ----------------------------------------------------------------------------- checkpoint loading
@dataclass
class MaeCheckpointReport:
    """What `load_mae_checkpoint_into_backbone` did.

    Attributes:
        loaded: backbone parameter names (relative to `VitPoseModel`) that received checkpoint values.
        dropped: checkpoint key -> reason it was not used.
        missing: backbone parameter names the checkpoint did not provide (left as initialised).
        notes: resampling / padding steps taken.
    """

    loaded: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} backbone tensors, dropped {len(self.dropped)} checkpoint keys, "
                 f"{len(self.missing)} backbone tensors missing"]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  dropped {k}: {r}" for k, r in sorted(self.dropped.items())]
        lines += [f"  missing {k}" for k in self.missing]
        return "\n".join(lines)


def _find_backbone(model: nn.Module) -> VitPoseModel:
    if isinstance(model, VitPoseModel):
        return model
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, VitPoseModel):
        return backbone
    raise ValueError(f"{type(model).__name__} has no ViTPose backbone (expected VitPoseModel or a model with .backbone)")


def load_mae_checkpoint_into_backbone(
    model: nn.Module,
    checkpoint: str | os.PathLike | Mapping[str, Any],
    patch_kernel: str = "pad",
    load_final_norm: bool = True,
) -> MaeCheckpointReport:
    """Load a ViT checkpoint of another layout (facebookresearch/mae or timm ViT, official ViTPose /
    ViTPose++ backbone) into a ViTPose backbone.

    The file is read and unwrapped by `checkpoint_keys.read_checkpoint` (a dict by
    `unwrap_state_dict`: `state_dict` / `model` / `module` wrappers, a DDP `module.` prefix) and its
    names mapped by `checkpoint_keys.map_vit_backbone` (the backbone is what is under `backbone.`
    when a key has that prefix, else the bare ViT names; fused `attn.qkv` split into query / key /
    value, BEiT-style `q_bias` / `v_bias`, ViTPose++ `mlp.experts.*`, `last_norm.*` and timm's
    `norm.*` -> the final `layernorm`). Fitted to this backbone: `patch_embed.proj.weight` of
    another kernel size (14 -> 16: zero-padded, as the official ViTPose loader's default, or
    `patch_kernel="bicubic"` / `"bilinear"` interpolation, unscaled like the official code);
    `pos_embed` `(1, [1 +] N, C)` of another grid (the backbone's own slot count, a square `s x s`,
    or else the factorisation of N closest to the backbone's aspect; the cls slot becomes ViTPose's
    extra slot, zeros without one; resampled bicubic to the backbone's `(h, w)`); an `mlp.fc2`
    over all C output rows split into the shared fc2 and the experts of a ViTPose++ MoE MLP (the
    output is unchanged). Dropped, each with its reason: `cls_token`, decoders (`decoder_*`,
    `mask_token`), heads (`head.*`, `fc_norm.*`, `keypoint_head.*`, ...), blocks beyond the
    backbone's depth, tensors the backbone has no place for and unknown keys.

    Args:
        model: `VitPoseModel`, or any model with `.backbone` (`VitPoseForPoseEstimation`,
            `VitPoseForMaskedImageModeling`).
        checkpoint: path (file or `save_pretrained`-style folder) or state dict.
        patch_kernel: `"pad"`, `"bicubic"` or `"bilinear"`: how a smaller patch kernel is adapted.
        load_final_norm: load timm / MAE's `norm.*` into `layernorm` (the official ViTPose keeps its
            `last_norm` at initialisation when starting from MAE because the names differ; pass False for
            that behaviour). An official `last_norm.*` is always loaded.

    Returns:
        `MaeCheckpointReport`.

    Raises:
        ValueError: unreadable file, not a ViT checkpoint, or a tensor whose shape cannot be adapted
            (another width).
    """
    if patch_kernel not in ("pad", "bicubic", "bilinear"):
        raise ValueError(f"patch_kernel must be 'pad', 'bicubic' or 'bilinear', got {patch_kernel!r}")
    backbone = _find_backbone(model)
    if isinstance(checkpoint, (str, os.PathLike)):
        state = read_checkpoint(checkpoint)
    else:
        state = unwrap_state_dict(checkpoint, "the checkpoint")
    mapped, dropped = map_vit_backbone(state)
    cfg = backbone.config
    width = cfg.hidden_size
    depth = cfg.num_hidden_layers
    target = backbone.state_dict()
    report = MaeCheckpointReport(dropped=dropped)
    new: dict[str, torch.Tensor] = {}

    def put(name: str, value: torch.Tensor, source: str) -> None:
        if name not in target:
            report.dropped[source] = f"the backbone has no {name}"
            return
        if tuple(value.shape) != tuple(target[name].shape):
            raise ValueError(
                f"checkpoint {source} {tuple(value.shape)} does not fit backbone {name} {tuple(target[name].shape)} "
                f"(is the checkpoint's width {value.shape[-1]} the model's hidden_size {width}?)"
            )
        new[name] = value.to(target[name].dtype)

    for entry in mapped:
        source, name, value = entry.source, entry.name, entry.value
        if entry.block is not None and entry.block >= depth:
            report.dropped[source] = f"the backbone has only {depth} layers"
        elif entry.rule == FINAL_NORM and not load_final_norm:
            report.dropped[source] = "load_final_norm=False (official ViTPose keeps last_norm at init)"
        elif entry.rule == PATCH:
            put(name, _adapt_kernel(value, cfg, patch_kernel, report), source)
        elif entry.rule == POSITION:
            put(name, _adapt_pos_embed(value, backbone, report), source)
        elif entry.rule == FC2 and cfg.num_experts > 1 and value.shape[0] == width:
            # every output row: the experts of a MoE MLP each take the last part_features rows
            shared = width - cfg.part_features
            put(name, value[:shared], source)
            for e in range(cfg.num_experts):
                put(name.replace(".mlp.fc2.", f".mlp.experts.{e}."), value[shared:].clone(), source)
            report.notes.append(f"{source}: split into shared fc2 and {cfg.num_experts} experts")
        else:
            put(name, value, source)

    incompatible = backbone.load_state_dict(new, strict=False)
    if incompatible.unexpected_keys:  # cannot happen: put() only writes known names
        raise ValueError(f"internal error: unexpected keys {incompatible.unexpected_keys}")
    report.loaded = sorted(new)
    report.missing = sorted(incompatible.missing_keys)
    logger.info("MAE checkpoint: %s", str(report).splitlines()[0])
    for key, reason in sorted(report.dropped.items()):
        logger.info("dropped %s: %s", key, reason)
    if report.missing:
        logger.warning("backbone tensors not in the MAE checkpoint (left as initialised): %s", report.missing)
    return report


def _adapt_kernel(weight: torch.Tensor, cfg: VitPoseConfig, mode: str, report: MaeCheckpointReport) -> torch.Tensor:
    """`(C, 3, k0, k0)` -> `(C, 3, p_h, p_w)`: zero-pad (centred, extra column right/bottom) or interpolate."""
    ph, pw = cfg.patch_size
    kh, kw = weight.shape[-2:]
    if (kh, kw) == (ph, pw):
        return weight
    if mode == "pad":
        if kh > ph or kw > pw:
            raise ValueError(f"cannot pad a {kh}x{kw} patch kernel down to {ph}x{pw}; use patch_kernel='bicubic'")
        top, left = (ph - kh) // 2, (pw - kw) // 2
        out = F.pad(weight, (left, pw - kw - left, top, ph - kh - top))
    else:
        out = F.interpolate(weight.float(), size=(ph, pw), mode=mode, align_corners=False).to(weight.dtype)
    report.notes.append(f"patch kernel {kh}x{kw} -> {ph}x{pw} ({mode})")
    return out


def _adapt_pos_embed(pos: torch.Tensor, backbone: VitPoseModel, report: MaeCheckpointReport) -> torch.Tensor:
    """`(1, [1 +] N, C)` -> `(1, 1 + h*w, C)` on the backbone's grid; slot 0 from the cls slot (zeros if none).

    The checkpoint's grid, the first that fits: the backbone's own when `N = h*w` with a cls slot
    (official ViTPose at the same input size: copied as it is); a square `s x s` with a cls slot,
    then without one (MAE / timm); the factorisation of `N` closest to the backbone's aspect, with
    a cls slot (official ViTPose at another input size, e.g. 16x12 at 256x192).
    """
    if pos.ndim == 2:
        pos = pos[None]
    slots = pos.shape[1]
    target_grid = tuple(backbone.embeddings.grid)
    side = math.isqrt(slots - 1)
    bare_side = math.isqrt(slots)
    if slots == 1 + target_grid[0] * target_grid[1]:
        return pos
    if side * side == slots - 1:
        prefix, grid_part, grid = pos[:, :1], pos[:, 1:], (side, side)
    elif bare_side * bare_side == slots:
        prefix, grid_part, grid = torch.zeros_like(pos[:, :1]), pos, (bare_side, bare_side)
        report.notes.append("pos_embed has no cls slot: the extra slot starts at zero")
    else:
        prefix, grid_part = pos[:, :1], pos[:, 1:]
        grid = infer_grid(slots - 1, target_grid[0] / target_grid[1])
    full = torch.cat([prefix, grid_part], dim=1)
    out = resample_position_embeddings(full.float(), grid, target_grid).to(pos.dtype)
    if grid != target_grid:
        report.notes.append(f"pos_embed grid {grid[0]}x{grid[1]} -> {target_grid[0]}x{target_grid[1]} (bicubic)")
    return out


# transformers' custom-code saving (see modeling_vitpose): this module and its siblings go beside
# the weights, `auto_map` names this class
VitPoseForMaskedImageModeling.register_for_auto_class("AutoModelForMaskedImageModeling")
