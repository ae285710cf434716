"""ViTPose / ViTPose++ in PyTorch: plain ViT backbone + heatmap heads.

Module names follow transformers' VitPose (``backbone.embeddings.patch_embeddings.projection``,
``backbone.encoder.layer.{i}.attention.attention.{query,key,value}``, ``head.deconv1`` ...), so a
checkpoint written by transformers loads here as it is. The arithmetic follows the official
ViTPose code (DESIGN.md section 3): patch conv padding 2, the extra position-embedding slot added
to every patch, pre-LN blocks, LayerNorm eps 1e-6, drop path linear in depth.

Nothing here imports the processor, data or training code. This module and its siblings
(``configuration_vitpose``, ``attention``, ``window_attention``, ``version``) import only torch,
transformers, safetensors and the standard library, each other as ``from .x import y``: that is
what transformers' custom-code saving copies beside the weights, so a saved folder also loads with
``trust_remote_code=True`` where vitpose_hf is not installed (`save_pretrained`). The method that
needs the rest of the package (`push_to_hub`) imports it by name.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch.utils.checkpoint import checkpoint
# transformers' guarded init functions skip tensors already loaded from a checkpoint
from transformers import PreTrainedModel
from transformers import initialization as hf_init
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from .attention import AttentionKind, build_attention_mask_fn, sdpa_or_eager_attention
from .configuration_vitpose import VitPoseConfig
from .heatmaps import flip_heatmaps
from .keypoint_schemas import head_num_keypoints
from .losses import joints_mse_loss
from .saved_code import package_attr, stamp_saved_code

logger = logging.getLogger(__name__)

__all__ = [
    "VitPoseModel",
    "VitPoseForPoseEstimation",
    "VitPosePreTrainedModel",
    "VitPoseModelOutput",
    "VitPoseEstimatorOutput",
    "check_dataset_index",
    "resample_position_embeddings",
    "export_to_transformers",
    "is_tracing",
    "as_weight_dtype",
    "trunc_normal_init",
]


# ----------------------------------------------------------------------------- outputs
@dataclass
class VitPoseModelOutput(ModelOutput):
    """Output of `VitPoseModel`.

    Args:
        last_hidden_state (`(B, N, C)`): patch tokens after the final LayerNorm (knowledge tokens
            removed), N = h * w.
        feature_map (`(B, C, h, w)`): the same tokens as a feature map, h = H / stride, w = W / stride.
        hidden_states (tuple of `(B, N, C)`, *optional*): embeddings output and every layer's output.
        attentions (tuple of `(B, heads, N, N)`, *optional*): attention probabilities per layer
            (`(B, heads, T + N, T + N)`; windowed layers give their effective dense attention, see window_attention.py).
    """

    last_hidden_state: torch.Tensor | None = None
    feature_map: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class VitPoseEstimatorOutput(ModelOutput):
    """Output of `VitPoseForPoseEstimation`.

    Args:
        loss (`()` scalar, *optional*): JointsMSELoss with target weight, when `labels` is given.
        heatmaps (`(B, K, H/4, W/4)`): one heatmap per keypoint. With several dataset heads, a batch
            from one dataset gets that head's K; a batch mixing datasets is padded to the largest
            head's K, and rows of smaller heads are zero past their own K.
        hidden_states, attentions: as in `VitPoseModelOutput`.
        feature_map (`(B, C, h, w)`, *optional*): backbone features (only with `output_hidden_states`).
    """

    loss: torch.Tensor | None = None
    heatmaps: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    feature_map: torch.Tensor | None = None


# ----------------------------------------------------------------------------- functional helpers
def resample_position_embeddings(
    pos_embed: torch.Tensor, old_grid: Sequence[int], new_grid: Sequence[int], num_prefix: int = 1
) -> torch.Tensor:
    """Resample ViT position embeddings to another patch grid (bicubic, explicit (h, w) grids).

    Args:
        pos_embed: `(1, num_prefix + h0 * w0, C)`; the first `num_prefix` slots are kept unchanged
            (ViTPose's extra slot, or a cls token).
        old_grid: `(h0, w0)` grid of `pos_embed`.
        new_grid: `(h1, w1)` target grid.
        num_prefix: number of leading non-grid slots.

    Returns:
        `(1, num_prefix + h1 * w1, C)`, same dtype as the input.
    """
    h0, w0 = int(old_grid[0]), int(old_grid[1])
    h1, w1 = int(new_grid[0]), int(new_grid[1])
    if pos_embed.shape[1] != num_prefix + h0 * w0:
        raise ValueError(
            f"position embeddings have {pos_embed.shape[1]} slots, expected {num_prefix} + {h0}x{w0}"
        )
    if (h0, w0) == (h1, w1):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, h0, w0, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(h1, w1), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, h1 * w1, dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability `drop_prob`.

    Args:
        x: `(B, ...)` residual branch output.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


def is_tracing() -> bool:
    """Whether this forward is being traced (torch.compile, torch.export, dynamo ONNX export, or the
    TorchScript tracer). Value-dependent Python (reading a tensor's values to branch or to validate)
    runs only when this is False, so traced graphs hold no data-dependent guard."""
    return bool(torch.compiler.is_compiling() or torch.jit.is_tracing())


def _check_finite_pixels(pixel_values: torch.Tensor) -> None:
    """ValueError when `(B, C, H, W)` `pixel_values` holds NaN or inf (they would give NaN heatmaps
    for the whole crop). Eager only: reading the values is a host sync and a data-dependent branch."""
    if not pixel_values.is_floating_point() or bool(torch.isfinite(pixel_values).all()):
        return
    bad = ~torch.isfinite(pixel_values)
    rows = bad.flatten(1).any(dim=1).nonzero().flatten().tolist()
    raise ValueError(
        f"pixel_values holds {int(bad.sum())} NaN/inf values (in batch rows {rows[:10]}"
        f"{' ...' if len(rows) > 10 else ''}); the model would output NaN heatmaps. Check the image "
        "conversion before the model; set config.check_finite_inputs = False to skip this check"
    )


# ----------------------------------------------------------------------------- modules
class VitPosePatchEmbeddings(nn.Module):
    """Conv patch embedding: `(B, 3, H, W)` -> `(B, h*w, C)` with the official padding of 2."""

    def __init__(self, config: VitPoseConfig):
        super().__init__()
        self.config = config
        self.patch_size = tuple(config.patch_size)
        self.stride = tuple(config.effective_patch_stride)
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=self.patch_size, stride=self.stride,
            padding=config.patch_padding,
        )

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Output grid `(h, w)` of the patch conv for an input of `height x width`."""
        pad = self.projection.padding
        h = (height + 2 * pad[0] - self.patch_size[0]) // self.stride[0] + 1
        w = (width + 2 * pad[1] - self.patch_size[1]) // self.stride[1] + 1
        return h, w

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Returns tokens `(B, h*w, C)` and the grid `(h, w)`."""
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must be (B, C, H, W), got shape {tuple(pixel_values.shape)}")
        _, channels, height, width = pixel_values.shape
        if channels != self.num_channels:
            raise ValueError(f"pixel_values has {channels} channels, the model expects {self.num_channels}")
        if height % self.stride[0] or width % self.stride[1] or height < self.patch_size[0] or width < self.patch_size[1]:
            raise ValueError(
                f"input size {height}x{width} must be a multiple of the patch stride {self.stride[0]}x{self.stride[1]} "
                f"and at least one patch ({self.patch_size[0]}x{self.patch_size[1]})"
            )
        # Not in training mode: the loader validates its data, and on an accelerator the host sync
        # of the check would stall every step behind the previous step's queued kernels.
        if getattr(self.config, "check_finite_inputs", True) and not self.training and not is_tracing():
            _check_finite_pixels(pixel_values)
        x = self.projection(pixel_values.to(self.projection.weight.dtype))
        grid = (x.shape[-2], x.shape[-1])
        return x.flatten(2).transpose(1, 2), grid


class VitPoseEmbeddings(nn.Module):
    """Patch embedding + position embeddings (`(1, 1 + h0*w0, C)`, the extra slot added to every patch)
    + optional knowledge tokens.

    Position embeddings are resampled (bicubic) when the input grid differs from the config's, and
    `load_state_dict` resamples a checkpoint's grid to this module's.
    """

    def __init__(self, config: VitPoseConfig):
        super().__init__()
        self.patch_embeddings = VitPosePatchEmbeddings(config)
        self.grid = self.patch_embeddings.grid_size(*config.image_size)
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1] + 1, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.num_knowledge_tokens = config.num_knowledge_tokens
        if self.num_knowledge_tokens:
            self.knowledge_tokens = nn.Parameter(torch.zeros(1, self.num_knowledge_tokens, config.hidden_size))

    def position_embeddings_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """`(1, h*w, C)` position embeddings for `grid`, the extra slot already added."""
        pos = resample_position_embeddings(self.position_embeddings, self.grid, grid)
        return pos[:, 1:] + pos[:, :1]

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """`(B, 3, H, W)` -> tokens `(B, T + h*w, C)` (T knowledge tokens first) and the grid `(h, w)`."""
        tokens, grid = self.patch_embeddings(pixel_values)
        tokens = tokens + self.position_embeddings_for(grid).to(tokens.dtype)
        if self.num_knowledge_tokens:
            tokens = torch.cat([self.knowledge_tokens.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        return self.dropout(tokens), grid

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "position_embeddings"
        if key in state_dict and state_dict[key].shape != self.position_embeddings.shape:
            incoming = state_dict[key]
            side = incoming.shape[1] - 1
            old = infer_grid(side, self.grid[0] / self.grid[1])
            logger.info("resampling position embeddings %s -> %s", old, self.grid)
            state_dict[key] = resample_position_embeddings(incoming, old, self.grid)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def infer_grid(num_patches: int, aspect: float) -> tuple[int, int]:
    """Guess the `(h, w)` grid of `num_patches` tokens: the factorisation whose h / w is closest to
    `aspect` (in log ratio)."""
    best = None
    for h in range(1, num_patches + 1):
        if num_patches % h == 0:
            w = num_patches // h
            score = abs(math.log((h / w) / aspect))
            if best is None or score < best[0]:
                best = (score, (h, w))
    if best is None:
        raise ValueError(f"cannot infer a grid for {num_patches} position embeddings")
    return best[1]


class VitPoseSelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (transformers' key layout).

    Runs global, windowed, shifted-window or pooled-window attention over the `(h, w)` token grid
    (see `attention.py`); the kind is fixed per layer by the config. The arithmetic kernel is SDPA
    or eager, picked by `config._attn_implementation`.
    """

    def __init__(self, config: VitPoseConfig, kind: AttentionKind = "global", shift: bool = False):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout_prob = config.attention_probs_dropout_prob
        self.kind = kind
        self.shift = shift
        self.window_size = tuple(config.window_size)
        self.query = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.key = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.value = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)

    def forward(
        self, hidden_states: torch.Tensor, grid: tuple[int, int], num_prefix: int = 0, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(B, T + h*w, C)` -> `(B, T + h*w, C)` context (before the output projection), attention probs."""
        impl = getattr(self.config, "_attn_implementation", None) or "sdpa"
        if output_attentions:
            impl = "eager"
        q = self.query(hidden_states)
        k = self.key(hidden_states)
        v = self.value(hidden_states)
        attend = build_attention_mask_fn(self.kind, grid, self.window_size, self.shift, num_prefix)
        return attend(
            q, k, v, num_heads=self.num_heads, scaling=self.scaling, impl=impl, module=self,
            dropout=self.dropout_prob if self.training else 0.0, kernel=sdpa_or_eager_attention,
            output_attentions=output_attentions,
        )


class VitPoseSelfOutput(nn.Module):
    """Output projection of the attention (`attention.output.dense`)."""

    def __init__(self, config: VitPoseConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(B, N, C)` -> `(B, N, C)`."""
        return self.dropout(self.dense(hidden_states))


class VitPoseAttention(nn.Module):
    """Self-attention + output projection."""

    def __init__(self, config: VitPoseConfig, kind: AttentionKind = "global", shift: bool = False):
        super().__init__()
        self.attention = VitPoseSelfAttention(config, kind, shift)
        self.output = VitPoseSelfOutput(config)

    def forward(self, hidden_states, grid, num_prefix=0, output_attentions=False):
        """`(B, N, C)` -> (`(B, N, C)`, attention probs or None)."""
        context, probs = self.attention(hidden_states, grid, num_prefix, output_attentions)
        return self.output(context), probs


class VitPoseMLP(nn.Module):
    """Plain ViT MLP: fc1 (C -> rC), activation, fc2 (rC -> C)."""

    def __init__(self, config: VitPoseConfig):
        super().__init__()
        hidden = int(config.hidden_size * config.mlp_ratio)
        self.fc1 = nn.Linear(config.hidden_size, hidden)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(hidden, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.exact_gelu = config.hidden_act == "gelu"  # transformers' "gelu" is the exact (erf) GELU

    def forward(self, hidden_states: torch.Tensor, dataset_index: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, N, C)` -> `(B, N, C)`; `dataset_index` is ignored."""
        return self.dropout(self.fc2(self.activation(self.fc1(hidden_states))))


class VitPoseMoeMLP(nn.Module):
    """ViTPose++ MoE MLP: shared fc1 (C -> rC) and fc2 (rC -> C - p), plus one expert Linear(rC -> p)
    per dataset, chosen by `dataset_index` (hard routing, no router); output = cat(shared, expert).

    Each sample runs only its own expert: the expert weights are stacked `(E, p, rC)` and gathered by
    `dataset_index`, then applied as one batched matmul `(B, N, rC) x (B, rC, p)`, so the forward has
    no data-dependent Python and traces (torch.export, ONNX) with `dataset_index` as an input. Experts
    that are not plain `nn.Linear` (a PEFT/LoRA wrapper, a hook) run their own forward on the whole
    batch and the sample's row is selected, which keeps their behaviour at E times the expert cost.
    """

    def __init__(self, config: VitPoseConfig):
        super().__init__()
        hidden = int(config.hidden_size * config.mlp_ratio)
        self.part_features = config.part_features
        self.fc1 = nn.Linear(config.hidden_size, hidden)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(hidden, config.hidden_size - config.part_features)
        self.experts = nn.ModuleList([nn.Linear(hidden, config.part_features) for _ in range(config.num_experts)])
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, dataset_index: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, N, C)` and `dataset_index` `(B,)` (long, validated by the model) -> `(B, N, C)`."""
        hidden = self.activation(self.fc1(hidden_states))
        shared = self.fc2(hidden)
        if dataset_index is None:
            dataset_index = torch.zeros(hidden.shape[0], dtype=torch.long, device=hidden.device)
        if all(_plain_linear(e) for e in self.experts):
            weight = torch.stack([e.weight for e in self.experts])[dataset_index]  # (B, p, rC)
            expert = torch.matmul(hidden, weight.transpose(1, 2))  # (B, N, p)
            if self.experts[0].bias is not None:
                expert = expert + torch.stack([e.bias for e in self.experts])[dataset_index].unsqueeze(1)
        else:
            outputs = torch.stack([e(hidden) for e in self.experts])  # (E, B, N, p)
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            expert = outputs[dataset_index, rows]
        return self.dropout(torch.cat([shared, expert.to(shared.dtype)], dim=-1))


def _plain_linear(module: nn.Module) -> bool:
    """A bare `nn.Linear` with no hooks, whose weight may be read directly."""
    return type(module) is nn.Linear and not (module._forward_hooks or module._forward_pre_hooks)


class VitPoseLayer(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + mlp(LN(x)), each with drop path."""

    def __init__(self, config: VitPoseConfig, layer_index: int = 0):
        super().__init__()
        kind = config.layer_attention_types()[layer_index]
        shift = kind == "shifted_window" and layer_index % 2 == 1
        self.attention = VitPoseAttention(config, kind, shift)
        self.mlp = VitPoseMoeMLP(config) if config.num_experts > 1 else VitPoseMLP(config)
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        depth = max(config.num_hidden_layers - 1, 1)
        self.drop_path_rate = config.drop_path_rate * layer_index / depth if config.num_hidden_layers > 1 else 0.0

    def forward(
        self,
        hidden_states: torch.Tensor,
        dataset_index: torch.Tensor | None,
        grid: tuple[int, int],
        num_prefix: int = 0,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(B, N, C)` -> (`(B, N, C)`, attention probs or None)."""
        attn, probs = self.attention(self.layernorm_before(hidden_states), grid, num_prefix, output_attentions)
        hidden_states = hidden_states + drop_path(attn, self.drop_path_rate, self.training)
        mlp = self.mlp(self.layernorm_after(hidden_states), dataset_index)
        hidden_states = hidden_states + drop_path(mlp, self.drop_path_rate, self.training)
        return hidden_states, probs


class VitPoseEncoder(nn.Module):
    """The stack of `VitPoseLayer`s, with optional gradient checkpointing."""

    def __init__(self, config: VitPoseConfig):
        super().__init__()
        self.layer = nn.ModuleList([VitPoseLayer(config, i) for i in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(self, hidden_states, dataset_index, grid, num_prefix=0, output_hidden_states=False, output_attentions=False):
        """`(B, N, C)` -> last hidden state `(B, N, C)`, all hidden states, all attentions."""
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attn = () if output_attentions else None
        for layer in self.layer:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden_states, probs = checkpoint(
                    layer, hidden_states, dataset_index, grid, num_prefix, output_attentions, use_reentrant=False
                )
            else:
                hidden_states, probs = layer(hidden_states, dataset_index, grid, num_prefix, output_attentions)
            if output_hidden_states:
                all_hidden = all_hidden + (hidden_states,)
            if output_attentions:
                all_attn = all_attn + (probs,)
        return hidden_states, all_hidden, all_attn


class VitPoseClassicDecoder(nn.Module):
    """Classic head: N x [ConvTranspose2d(k4, s2, p1, no bias) -> BN -> ReLU] -> Conv2d 1x1 (N = 2
    officially; 1 for the 1/8-resolution variant).

    `(B, C, h, w)` -> `(B, K, 2^N h, 2^N w)`.
    """

    def __init__(self, in_channels: int, num_keypoints: int, hidden: int = 256, num_deconv_layers: int = 2):
        super().__init__()
        if num_deconv_layers not in (1, 2):
            raise ValueError(f"num_deconv_layers must be 1 or 2, got {num_deconv_layers}")
        self.deconv1 = nn.ConvTranspose2d(in_channels, hidden, kernel_size=4, stride=2, padding=1, bias=False)
        self.batchnorm1 = nn.BatchNorm2d(hidden)
        if num_deconv_layers == 2:
            self.deconv2 = nn.ConvTranspose2d(hidden, hidden, kernel_size=4, stride=2, padding=1, bias=False)
            self.batchnorm2 = nn.BatchNorm2d(hidden)
        self.num_deconv_layers = num_deconv_layers
        self.conv = nn.Conv2d(hidden, num_keypoints, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.batchnorm1(self.deconv1(features)))
        if self.num_deconv_layers == 2:
            x = F.relu(self.batchnorm2(self.deconv2(x)))
        return self.conv(as_weight_dtype(x, self.conv))  # float32 heatmaps from a bf16 model


class VitPoseSimpleDecoder(nn.Module):
    """Simple head: ReLU -> bilinear x`scale_factor` (align_corners=False) -> Conv2d 3x3.

    `(B, C, h, w)` -> `(B, K, s*h, s*w)`.
    """

    def __init__(self, in_channels: int, num_keypoints: int, scale_factor: int = 4):
        super().__init__()
        self.scale_factor = scale_factor
        self.conv = nn.Conv2d(in_channels, num_keypoints, kernel_size=3, padding=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = as_weight_dtype(features, self.conv)  # float32 heatmaps from a bf16 model
        x = F.relu(features)
        x = F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        return self.conv(x)


def as_weight_dtype(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """`x` cast to the floating dtype of `layer.weight` (unchanged when they match or `layer` has no
    plain weight). A head's final conv may be float32 in a bf16/fp16 model (`optimize_for_inference`)."""
    weight = getattr(layer, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.is_floating_point() and weight.dtype != x.dtype:
        return x.to(weight.dtype)
    return x


# ----------------------------------------------------------------------------- pretrained base
# `auto_map` entries of every saved folder beyond the saved class's own (added by transformers)
_SAVED_AUTO_MAP = {"AutoConfig": "configuration_vitpose.VitPoseConfig", "AutoModel": "modeling_vitpose.VitPoseModel"}


class VitPosePreTrainedModel(PreTrainedModel):
    """Weight init, hooks and shared helpers of the ViTPose models."""

    config_class = VitPoseConfig
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["VitPoseEmbeddings", "VitPoseLayer"]
    _supports_sdpa = True
    input_modalities = ("image",)
    # the loss is a plain mean over the local batch: Trainer must not rescale it by the process count
    accepts_loss_kwargs = False

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the model code for `trust_remote_code=True`.

        The defining module and its siblings are copied beside the weights (stamped with the
        vitpose_hf version, `saved_code`) and `config.json` gets an `auto_map` for `AutoConfig`,
        `AutoModel` and this class's Auto class, so the folder loads through transformers' Auto
        classes with `trust_remote_code=True` where vitpose_hf is not installed. With the package
        imported, its registered classes take precedence.
        """
        config = self.config
        had = "auto_map" in config.__dict__
        previous = config.__dict__.get("auto_map")
        config.auto_map = dict(_SAVED_AUTO_MAP)  # earlier entries may name files or repositories not saved here
        try:
            result = super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            if had:
                config.auto_map = previous
            else:
                del config.auto_map
        if kwargs.get("is_main_process", True):
            stamp_saved_code(save_directory, sys.modules[type(self).__module__].__file__)
        return result

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        # transformers guesses this from the module source; our attention reads
        # `config._attn_implementation` at every call, so switching at run time is safe.
        return True

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            trunc_normal_init(module.weight, std)
            if module.bias is not None:
                _zeros(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            _ones(module.weight)
            _zeros(module.bias)
            if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None:
                _zeros(module.running_mean)
                _ones(module.running_var)
        elif isinstance(module, VitPoseEmbeddings):
            trunc_normal_init(module.position_embeddings, std)
            if module.num_knowledge_tokens:
                trunc_normal_init(module.knowledge_tokens, std)

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=None, **kwargs):
        for module in self.modules():
            if isinstance(module, VitPoseEncoder):
                module.gradient_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameter names (as in `named_parameters()`) that must not get weight decay, beyond 1-D ones."""
        prefix = "" if isinstance(self, VitPoseModel) else "backbone."
        names = {prefix + "embeddings.position_embeddings"}
        if self.config.num_knowledge_tokens:
            names.add(prefix + "embeddings.knowledge_tokens")
        return names

    def get_layer_id(self, name: str) -> int:
        """Layer id for layer-wise lr decay: 0 embeddings, i + 1 for block i, depth + 1 for the rest.

        `lr = base_lr * rate ** (num_layer_ids - 1 - layer_id)` with `num_layer_ids = depth + 2`.
        """
        if name.startswith("backbone."):
            name = name[len("backbone."):]
        if name.startswith("embeddings."):
            return 0
        if name.startswith("encoder.layer."):
            return int(name.split(".")[2]) + 1
        return self.config.num_hidden_layers + 1

    @property
    def num_layer_ids(self) -> int:
        """`depth + 2`: the number of distinct layer ids of `get_layer_id`."""
        return self.config.num_hidden_layers + 2


def trunc_normal_init(t, std):
    """Fill `t` from a truncated normal of mean 0 and `std` (transformers' `trunc_normal_`): the weight
    init of the pose model and the MAE model."""
    hf_init.trunc_normal_(t, mean=0.0, std=std)


def _zeros(t):
    hf_init.zeros_(t)


def _ones(t):
    hf_init.ones_(t)


def check_dataset_index(dataset_index, batch_size: int, num_datasets: int, device, default: int = 0) -> torch.Tensor:
    """Normalise `dataset_index` to a `(B,)` long tensor (None -> `default`, the config's
    `main_dataset_index`, so that None always means the main head; one value is broadcast).

    The value range is checked in eager mode only (a ValueError naming the bad index): reading a
    tensor's values would put a data-dependent guard into a traced graph, so under torch.compile /
    torch.export the caller (processor, pipeline, onnxruntime backend) is trusted with the range.
    """
    if dataset_index is None:
        return torch.full((batch_size,), int(default), dtype=torch.long, device=device)
    if not isinstance(dataset_index, torch.Tensor):
        dataset_index = torch.as_tensor(dataset_index)
    if dataset_index.is_floating_point():
        raise ValueError(f"dataset_index must hold integers, got dtype {dataset_index.dtype}")
    dataset_index = dataset_index.to(device=device, dtype=torch.long).reshape(-1)
    if is_tracing():
        return dataset_index.expand(batch_size)  # (1,) or (B,): no guard on the batch size
    if dataset_index.numel() == 1 and batch_size != 1:
        dataset_index = dataset_index.expand(batch_size)
    if dataset_index.numel() != batch_size:
        raise ValueError(f"dataset_index must have shape ({batch_size},), got {dataset_index.numel()} values")
    if batch_size:
        low, high = int(dataset_index.min()), int(dataset_index.max())
        if low < 0 or high >= num_datasets:
            bad = low if low < 0 else high
            raise ValueError(f"dataset_index {bad} is out of range: this model serves indices 0..{num_datasets - 1}")
    return dataset_index


def reject_unknown_kwargs(forward_name: str, kwargs: dict, accepted: Sequence[str]) -> None:
    """A `TypeError` naming the unexpected keyword arguments of a forward (and the closest accepted
    name): `**kwargs` stays in the signatures for transformers' callers, but a misspelling such as
    `flip_pair=` must not be silently ignored."""
    if not kwargs:
        return
    import difflib

    parts = []
    for name in sorted(kwargs):
        close = difflib.get_close_matches(name, accepted, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise TypeError(f"{forward_name}() got unexpected keyword argument(s) {', '.join(parts)}; it accepts "
                    f"{', '.join(accepted)}")


_BACKBONE_KEY_PREFIXES = ("backbone.", "embeddings.", "encoder.", "layernorm.")


class UnreadableWeightsError(SafetensorError):
    """A weights file of a checkpoint cannot be read (truncated, not safetensors, ...), raised only
    inside transformers' `pipeline(...)`.

    `from_pretrained` raises a `ValueError` for such a file everywhere else. `pipeline()` catches a
    ValueError (and OSError, TypeError, RuntimeError) from each model class it tries and goes on
    to transformers' own `VitPoseForPoseEstimation`, whose bare `SafetensorError` (no file name)
    would then be all the user sees; this subclass of that same `SafetensorError` is not caught
    there, so the message naming the file and the cause reaches the caller.
    """


def _local_weight_files(path) -> list[str]:
    """The safetensors files a local checkpoint folder loads from: `model.safetensors`, or the shards
    named by `model.safetensors.index.json`; `[]` for a hub id or a folder without safetensors."""
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        return []
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as handle:
                shards = sorted(set(json.load(handle)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return [index]
        return [os.path.join(folder, name) for name in shards]
    return []


def _unreadable_weights_message(path, err: Exception) -> str:
    """`cannot read the weights file FILE: CAUSE`, FILE being the first local file safetensors
    refuses (found by opening each file's header), else the checkpoint `path`."""
    from safetensors import safe_open

    for name in _local_weight_files(path):
        try:
            with safe_open(name, framework="pt"):
                pass
        except Exception as file_err:  # a missing shard is an OSError, a bad header a SafetensorError
            return (f"cannot read the weights file {name}: {file_err} (the file is truncated, corrupt or not "
                    "a safetensors file; save or download it again)")
    return f"cannot read the weights of {os.fspath(path)}: {err}"


class _DropLoadReports(logging.Filter):
    """Drops the load reports ("<Class> LOAD REPORT from: ...", logged at WARNING by transformers'
    `log_state_dict_report`) that the thread which installed it logs; every other record passes."""

    def __init__(self):
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.thread == self.thread and " LOAD REPORT" in str(record.msg))


def _mismatch_message(load, cls_name, path, model_args, kwargs) -> str | None:
    """The shape mismatches transformers refused (it only logs them before its RuntimeError), found by
    loading once more with `ignore_mismatched_sizes=True`: `KEY: checkpoint (..), model (..)`."""
    retry = {k: v for k, v in kwargs.items() if k != "ignore_mismatched_sizes"}
    # The first attempt just logged the load report; the retry's would repeat it and call the
    # mismatched weights "reinitialized" although we raise. A filter drops only that record, only
    # from this thread: the logger's level (which transformers' verbosity and the user own) and other
    # threads' records are untouched, which a level change for the duration would not guarantee.
    reports = logging.getLogger("transformers.modeling_utils")
    drop = _DropLoadReports()
    reports.addFilter(drop)
    try:
        _, info = load(path, *model_args, output_loading_info=True, ignore_mismatched_sizes=True, **retry)
    except Exception:  # the retry failing is no reason to hide the original error
        return None
    finally:
        reports.removeFilter(drop)
    rows = sorted(info.get("mismatched_keys", []), key=lambda row: str(row[0]))
    if not rows:
        return None
    parts = [f"{key}: checkpoint {tuple(ckpt)}, model {tuple(mine)}" for key, ckpt, mine in rows[:6]]
    if len(rows) > 6:
        parts.append(f"and {len(rows) - 6} more")
    return (
        f"checkpoint {os.fspath(path)} does not fit {cls_name}: {len(rows)} weight(s) have another shape "
        f"({'; '.join(parts)}); pass ignore_mismatched_sizes=True to start them fresh (e.g. a new head "
        "for another num_labels), or load with the checkpoint's own config"
    )


def _checked_load(load, cls_name, path, model_args, kwargs, strict, is_backbone_key):
    """Run transformers' `from_pretrained` (`load`) and check its loading report.

    `strict=None`: missing or unexpected keys for which `is_backbone_key` holds raise a ValueError;
    others (a fresh head) are logged. `strict=True`: every missing/unexpected/mismatched key raises.
    `strict=False`: only logs. A weight whose shape differs from the model's (without
    `ignore_mismatched_sizes`) raises a ValueError naming it and both shapes. An unreadable
    safetensors file raises a ValueError naming the file and the cause (an `UnreadableWeightsError`
    inside transformers' `pipeline()`, which would hide a ValueError).
    """
    try:
        model, info = load(path, *model_args, output_loading_info=True, **kwargs)
    except Exception as err:
        if isinstance(err, SafetensorError):
            message = _unreadable_weights_message(path, err)
            if kwargs.get("_from_pipeline"):
                raise UnreadableWeightsError(message) from err
            raise ValueError(message) from err
        if isinstance(err, RuntimeError) and "ignore_mismatched_sizes" in str(err):
            message = _mismatch_message(load, cls_name, path, model_args, kwargs)
            if message is not None:
                raise ValueError(message) from err
        raise
    missing = list(info.get("missing_keys", []))
    unexpected = list(info.get("unexpected_keys", []))
    mismatched = list(info.get("mismatched_keys", []))
    if strict:
        bad_missing, bad_unexpected = missing, unexpected
    elif strict is None:
        bad_missing = [k for k in missing if is_backbone_key(k)]
        bad_unexpected = [k for k in unexpected if is_backbone_key(k)]
    else:
        bad_missing, bad_unexpected = [], []
    if bad_missing or bad_unexpected or (strict and mismatched):
        raise ValueError(
            f"checkpoint {path} does not fit {cls_name}: missing keys {sorted(bad_missing)}, unexpected keys "
            f"{sorted(bad_unexpected)}" + (f", mismatched keys {mismatched}" if strict and mismatched else "")
        )
    if missing or unexpected:
        # INFO: transformers' own load report (a table at WARNING) already lists these keys
        logger.info("loading %s: weights not in the checkpoint (freshly initialised): %s; "
                    "checkpoint weights not used: %s", path, missing, unexpected)
    return model, info


# ----------------------------------------------------------------------------- models
class VitPoseModel(VitPosePreTrainedModel):
    """The ViTPose backbone: patch embedding, position embeddings, pre-LN blocks, final LayerNorm.

    Input `pixel_values` `(B, 3, H, W)` with H, W multiples of the patch stride; output
    `feature_map` `(B, C, H/16, W/16)` (default stride) and `last_hidden_state` `(B, N, C)`.
    """

    def __init__(self, config: VitPoseConfig):
        super().__init__(config)
        self.embeddings = VitPoseEmbeddings(config)
        self.encoder = VitPoseEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        dataset_index: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> VitPoseModelOutput | tuple:
        r"""
        Args:
            pixel_values: `(B, 3, H, W)` normalized crops.
            dataset_index: `(B,)` ints selecting the ViTPose++ experts (0 = COCO); default
                `config.main_dataset_index` (0 unless the main head serves another dataset).
            output_hidden_states / output_attentions / return_dict: as in transformers.

        Returns:
            `VitPoseModelOutput` with `feature_map` `(B, C, h, w)`.

        Raises:
            TypeError: an unknown keyword argument (named, with the closest accepted one).
        """
        reject_unknown_kwargs("VitPoseModel.forward", kwargs, _MODEL_FORWARD_ARGS)
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        return_dict = self.config.return_dict if return_dict is None else return_dict
        tokens, grid = self.embeddings(pixel_values)
        limit = self.config.num_experts if self.config.num_experts > 1 else self.config.num_datasets
        dataset_index = check_dataset_index(
            dataset_index, tokens.shape[0], limit, tokens.device, self.config.main_dataset_index
        )
        num_prefix = self.config.num_knowledge_tokens
        hidden, all_hidden, all_attn = self.encoder(
            tokens, dataset_index, grid, num_prefix, output_hidden_states, output_attentions
        )
        hidden = self.layernorm(hidden)[:, num_prefix:]
        batch = hidden.shape[0]
        feature_map = hidden.transpose(1, 2).reshape(batch, hidden.shape[-1], grid[0], grid[1])  # explicit C: a batch of 0 crops is valid
        if not return_dict:
            return tuple(v for v in (hidden, feature_map, all_hidden, all_attn) if v is not None)
        return VitPoseModelOutput(
            last_hidden_state=hidden, feature_map=feature_map, hidden_states=all_hidden, attentions=all_attn
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, strict=None, **kwargs):
        """`PreTrainedModel.from_pretrained` with key checking: a missing or unexpected backbone weight
        raises a `ValueError` naming it (a pose checkpoint's head weights are ignored, with a log line);
        `strict=True` makes every key problem an error, `strict=False` only logs."""
        want_info = kwargs.pop("output_loading_info", False)
        model, info = _checked_load(
            super().from_pretrained, cls.__name__, pretrained_model_name_or_path, model_args, kwargs, strict,
            lambda key: key.startswith(_BACKBONE_KEY_PREFIXES),
        )
        return (model, info) if want_info else model

    def resize_position_embeddings(self, image_size: Sequence[int]) -> None:
        """Resample the position embeddings (bicubic) to a new input size and record it in the config.

        Args:
            image_size: `(H, W)`, multiples of the patch stride.
        """
        emb = self.embeddings
        h, w = int(image_size[0]), int(image_size[1])
        stride = emb.patch_embeddings.stride
        if h % stride[0] or w % stride[1]:
            raise ValueError(f"image_size {h}x{w} must be a multiple of the patch stride {stride[0]}x{stride[1]}")
        new_grid = emb.patch_embeddings.grid_size(h, w)
        with torch.no_grad():
            new = resample_position_embeddings(emb.position_embeddings.data, emb.grid, new_grid)
        emb.position_embeddings = nn.Parameter(new)
        emb.grid = new_grid
        self.config.image_size = [h, w]


_MODEL_FORWARD_ARGS = ("pixel_values", "dataset_index", "output_hidden_states", "output_attentions", "return_dict")
_ESTIMATOR_FORWARD_ARGS = _MODEL_FORWARD_ARGS + (
    "labels", "target_weight", "flip_pairs", "center", "scale", "bbox", "bbox_score", "image_id", "box_counts",
)


class VitPoseForPoseEstimation(VitPosePreTrainedModel):
    """ViTPose: backbone + heatmap head(s). `(B, 3, H, W)` -> heatmaps `(B, K, H/4, W/4)`.

    The main head is `head` (dataset index `config.main_dataset_index`, 0 by default); a
    multi-dataset model (ViTPose++) has one more head per entry of `config.dataset_heads` in
    `extra_heads`, and each sample is decoded by the head of its `dataset_index`.
    """

    def __init__(self, config: VitPoseConfig):
        super().__init__(config)
        self.backbone = VitPoseModel(config)
        self.head = self._make_head(config.num_labels)
        self.extra_heads = nn.ModuleDict(
            {str(h["dataset_index"]): self._make_head(int(h["num_labels"])) for h in config.dataset_heads}
        )
        self.post_init()

    def _make_head(self, num_keypoints: int) -> nn.Module:
        cfg = self.config
        if cfg.use_simple_decoder:
            return VitPoseSimpleDecoder(cfg.hidden_size, num_keypoints, cfg.scale_factor)
        return VitPoseClassicDecoder(cfg.hidden_size, num_keypoints, cfg.decoder_hidden_size, cfg.num_deconv_layers)

    def head_for(self, dataset_index: int) -> nn.Module:
        """The head module that serves `dataset_index`."""
        if dataset_index == self.config.main_dataset_index:
            return self.head
        key = str(int(dataset_index))
        if key in self.extra_heads:
            return self.extra_heads[key]
        return self.head

    def heatmap_size(self, image_size: Sequence[int] | None = None) -> tuple[int, int]:
        """`(h, w)` of the heatmaps for `(H, W)` crops (default `config.image_size`), from the patch
        grid and the head's upsampling, without running the model."""
        height, width = image_size if image_size is not None else self.config.image_size
        h, w = self.backbone.embeddings.patch_embeddings.grid_size(int(height), int(width))
        if self.config.use_simple_decoder:
            # bilinear interpolate with a scale factor floors the product
            return int(h * self.config.scale_factor), int(w * self.config.scale_factor)
        up = 2 ** int(self.config.num_deconv_layers)  # each deconv (k4, s2, p1) doubles exactly
        return h * up, w * up

    def num_keypoints_for(self, dataset_index: int | None = None) -> int:
        """Number of keypoints of the head serving `dataset_index` (None = the main head)."""
        return head_num_keypoints(self.config, dataset_index)

    def forward(
        self,
        pixel_values: torch.Tensor,
        dataset_index: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        target_weight: torch.Tensor | None = None,
        flip_pairs: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        center: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        bbox: torch.Tensor | None = None,
        bbox_score: torch.Tensor | None = None,
        image_id: torch.Tensor | None = None,
        box_counts: torch.Tensor | None = None,
        **kwargs,
    ) -> VitPoseEstimatorOutput | tuple:
        r"""
        Args:
            pixel_values: `(B, 3, H, W)` normalized crops, H and W multiples of the patch stride.
            dataset_index: `(B,)` ints: ViTPose++ expert and head of each sample; default
                `config.main_dataset_index`, the main head (0, COCO, for converted checkpoints).
            labels: `(B, K, H/4, W/4)` target heatmaps; when given, `loss` is the JointsMSELoss.
            target_weight: `(B, K)` or `(B, K, 1)` joint weights for the loss (default all ones).
            flip_pairs: `(P, 2)` pairs; when given, the heatmaps are flipped back (`flip_heatmaps`):
                use it for the mirrored half of a flip test.
            center, scale, bbox, bbox_score, image_id, box_counts: decoding metadata of the crops
                (`(B, 2)`, `(B, 2)`, `(B, 4)`, `(B,)`, `(B,)`, `(num_images,)`) that the image processor
                returns beside `pixel_values` (so `model(**processor(...))` works) and an evaluation
                collator passes through a plain `transformers.Trainer`; not used by the forward.

        Returns:
            `VitPoseEstimatorOutput` with `heatmaps` `(B, K, H/4, W/4)` and `loss` when `labels` is set.

        Raises:
            TypeError: an unknown keyword argument (named, with the closest accepted one).
        """
        reject_unknown_kwargs("VitPoseForPoseEstimation.forward", kwargs, _ESTIMATOR_FORWARD_ARGS)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        batch = pixel_values.shape[0] if isinstance(pixel_values, torch.Tensor) and pixel_values.ndim == 4 else None
        if batch is None:
            raise ValueError(f"pixel_values must be a (B, C, H, W) tensor, got {type(pixel_values).__name__} "
                             f"{tuple(getattr(pixel_values, 'shape', ()))}")
        dataset_index = check_dataset_index(
            dataset_index, batch, self.config.num_datasets, pixel_values.device, self.config.main_dataset_index
        )
        outputs = self.backbone(
            pixel_values, dataset_index=dataset_index, output_hidden_states=output_hidden_states,
            output_attentions=output_attentions, return_dict=True,
        )
        heatmaps = self._run_heads(outputs.feature_map, dataset_index)
        if flip_pairs is not None:
            heatmaps = flip_heatmaps(heatmaps, flip_pairs)
        loss = None
        if labels is not None:
            loss = joints_mse_loss(heatmaps, labels.to(heatmaps.dtype), target_weight)
        result = VitPoseEstimatorOutput(
            loss=loss, heatmaps=heatmaps, hidden_states=outputs.hidden_states, attentions=outputs.attentions,
            feature_map=outputs.feature_map if output_hidden_states else None,
        )
        return result if return_dict else result.to_tuple()

    def _run_heads(self, features: torch.Tensor, dataset_index: torch.Tensor) -> torch.Tensor:
        """`(B, C, h, w)` features -> `(B, K, H', W')` heatmaps, each sample decoded by its own head.

        Eager: samples are grouped by index and each head runs on its own rows only (its BatchNorm
        statistics in training come from its own samples); a batch of one index gets that head's K.
        Traced (torch.export, ONNX, torch.compile): every head runs on the whole batch and each row is
        taken from its own head, zero-padded to the largest head's K, so the graph has one output
        shape whatever the indices (`num_keypoints_for(i)` gives the valid channels of a row).
        """
        if not len(self.extra_heads):
            return self.head(features)
        if is_tracing():
            if self.training and not torch.compiler.is_exporting():
                # torch.compile of a training step: the eager grouping, outside the graph
                return self._run_heads_grouped_eager(features, dataset_index)
            return self._run_heads_traced(features, dataset_index)
        return self._run_heads_grouped(features, dataset_index)

    def _run_heads_grouped(self, features: torch.Tensor, dataset_index: torch.Tensor) -> torch.Tensor:
        unique = torch.unique(dataset_index).tolist()
        if len(unique) == 1:
            return self.head_for(int(unique[0]))(features)
        max_k = max(int(h["num_labels"]) for h in self.config.head_specs())
        out = None
        for idx in unique:
            rows = (dataset_index == idx).nonzero(as_tuple=True)[0]
            part = self.head_for(int(idx))(features[rows])
            if out is None:
                out = part.new_zeros((features.shape[0], max_k) + part.shape[2:])
            out[rows, : part.shape[1]] = part
        return out

    @torch.compiler.disable
    def _run_heads_grouped_eager(self, features: torch.Tensor, dataset_index: torch.Tensor) -> torch.Tensor:
        return self._run_heads_grouped(features, dataset_index)

    def _run_heads_traced(self, features: torch.Tensor, dataset_index: torch.Tensor) -> torch.Tensor:
        if self.training and not self.config.use_simple_decoder:
            raise ValueError(
                "exporting a multi-head model in training mode is not supported: every head would see the "
                "whole batch, mixing the BatchNorm statistics of different datasets; export it in eval()"
            )
        max_k = max(int(h["num_labels"]) for h in self.config.head_specs())

        def padded(head: nn.Module) -> torch.Tensor:
            out = head(features)
            return F.pad(out, (0, 0, 0, 0, 0, max_k - out.shape[1]))

        out = padded(self.head)  # the main head also serves indices without a head of their own
        for key, head in self.extra_heads.items():
            if int(key) == self.config.main_dataset_index:
                continue
            mine = (dataset_index == int(key)).view(-1, 1, 1, 1)
            out = torch.where(mine, padded(head), out)
        return out

    def save_pretrained_transformers(self, save_directory) -> None:
        """Write this model in transformers' own VitPose format (`model_type "vitpose"`, safetensors)
        so that `transformers.VitPoseForPoseEstimation.from_pretrained(save_directory)` loads it.

        Raises:
            ValueError: the model uses a feature transformers' VitPose lacks (extra dataset heads,
                windowed attention, knowledge tokens, another patch stride/padding or head width).
        """
        export_to_transformers(self, save_directory)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        processor=None,
        metrics: dict | None = None,
        base_model: str | None = None,
        datasets: Sequence[str] | None = None,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        tags: list[str] | None = None,
    ):
        """Upload the model, its image processor and a model card in one commit.

        As `PreTrainedModel.push_to_hub`, plus: `processor` (a `VitPoseTopDownImageProcessor`; default one
        of the model's input size) is uploaded beside the weights, and `README.md` is our card
        (`vitpose_hf.modelcard`: library_name vitpose_hf, pipeline_tag keypoint-detection, `metrics`,
        `base_model`, `datasets`, `tags`), so the repository loads with `pipeline(...)` as it is.

        Returns:
            the `huggingface_hub` commit info.
        """
        import tempfile

        from huggingface_hub import HfApi

        write_model_card = package_attr("modelcard", "write_model_card")

        api = HfApi(token=token if isinstance(token, str) else None)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if processor is None:
            processor = package_attr("image_processing_vitpose", "VitPoseTopDownImageProcessor").for_config(self.config)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, max_shard_size=max_shard_size)
            processor.save_pretrained(folder)
            write_model_card(folder, self.config, repo_id=repo_id, metrics=metrics, base_model=base_model,
                             datasets=datasets, tags=tags, source="uploaded with push_to_hub")
            if revision is not None and not revision.startswith("refs/pr"):
                api.create_branch(repo_id=repo_id, branch=revision, exist_ok=True)
            return api.upload_folder(
                repo_id=repo_id, folder_path=folder, revision=revision, create_pr=create_pr,
                commit_message=commit_message or "Upload ViTPose model, image processor and model card",
                commit_description=commit_description,
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, image_size=None, strict=None, **kwargs):
        """`PreTrainedModel.from_pretrained`, plus:

        - `image_size=(H, W)`: resample the position embeddings to another input size at load time;
        - key checking: missing or unexpected `backbone.*` weights raise a `ValueError` naming them
          (a backbone that does not fit the checkpoint is never silently half-random); missing or
          unexpected head weights (a fresh head for fine-tuning) are logged as a warning.
          `strict=True` raises for any missing, unexpected or mismatched key, `strict=False` only
          logs (transformers' behaviour);
        - an unreadable safetensors file raises a `ValueError` naming it.

        Reads our checkpoints and transformers' VitPose ones (`model_type "vitpose"`) alike.
        """
        want_info = kwargs.pop("output_loading_info", False)
        model, info = _checked_load(
            super().from_pretrained, cls.__name__, pretrained_model_name_or_path, model_args, kwargs, strict,
            lambda key: key.startswith("backbone."),
        )
        if image_size is not None:
            model.backbone.resize_position_embeddings(image_size)
            model.config.image_size = list(model.backbone.config.image_size)
        return (model, info) if want_info else model


def export_to_transformers(model: VitPoseForPoseEstimation, save_directory: str | os.PathLike) -> Path:
    """Write a vitpose_hf `VitPoseForPoseEstimation` in transformers' VitPose hub format.

    Writes `config.json` (`VitPoseConfig.to_transformers_dict()`: `model_type "vitpose"` with a
    `backbone_config`) and `model.safetensors` (our key names are transformers' key names).

    Returns:
        the directory.

    Raises:
        ValueError: not a `VitPoseForPoseEstimation`, or it uses features transformers lacks (extra
            dataset heads, windowed attention, knowledge tokens, other patch stride/padding, a classic
            head not 2 x 256 wide).
    """
    if not isinstance(model, VitPoseForPoseEstimation):
        raise ValueError(f"export_to_transformers needs a VitPoseForPoseEstimation, got {type(model).__name__}")
    config_dict = model.config.to_transformers_dict()  # raises ValueError for unsupported features
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    unexpected = [k for k in state if not k.startswith(("backbone.", "head."))]
    if unexpected:
        raise ValueError(f"these weights have no place in transformers' VitPose: {unexpected}")
    if model.config.drop_path_rate:
        logger.info("drop_path_rate %.3g is not exported (transformers' VitPose has no drop path)",
                    model.config.drop_path_rate)
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    config_dict["dtype"] = str(next(iter(state.values())).dtype).replace("torch.", "")
    with open(save_directory / "config.json", "w") as f:
        json.dump(config_dict, f, indent=2, sort_keys=True)
    save_file(state, str(save_directory / "model.safetensors"), metadata={"format": "pt"})
    logger.info("exported %d tensors to %s in transformers' VitPose format", len(state), save_directory)
    return save_directory


# transformers' custom-code saving: `save_pretrained` copies this module (and its siblings) and names
# these classes in `auto_map`
VitPoseModel.register_for_auto_class("AutoModel")
VitPoseForPoseEstimation.register_for_auto_class("AutoModelForPoseEstimation")
