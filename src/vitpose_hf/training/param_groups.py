"""AdamW parameter groups with layer-wise learning-rate decay (the ViTPose / MAE fine-tuning recipe).

Every trainable parameter gets a layer id from the model (`model.get_layer_id(name)`: 0 for the
embeddings, `i + 1` for encoder block `i`, `depth + 1` for the final norm and the heads) and the
learning rate `base_lr * rate ** (num_layer_ids - layer_id - 1)`, so the heads train at `base_lr`
and the patch embedding at `base_lr * rate ** (depth + 1)`. Weight decay is off for every parameter
with `p.ndim <= 1` (biases, LayerNorm / BatchNorm weights) and for the names the model lists in
`model.no_weight_decay()` (position embeddings, knowledge tokens). Names are matched exactly,
never by substring. Frozen parameters (`requires_grad=False`) are left out of every group.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["build_param_groups", "unwrap_vitpose", "layer_lr_scales"]


def unwrap_vitpose(model: nn.Module) -> nn.Module:
    """The ViTPose module inside `model`: itself, or the base model of a `peft` wrapper or of a
    `DistributedDataParallel` / accelerate wrapper (anything with `.module`).

    Raises:
        ValueError: when no module with `get_layer_id` / `num_layer_ids` is found.
    """
    seen = 0
    current = model
    while seen < 8:
        if hasattr(current, "get_base_model"):  # peft: its __getattr__ forwards, unwrap it first
            current = current.get_base_model()
        elif hasattr(current, "get_layer_id") and hasattr(current, "num_layer_ids"):
            return current
        elif hasattr(current, "module") and isinstance(current.module, nn.Module):
            current = current.module
        else:
            break
        seen += 1
    raise ValueError(
        f"{type(model).__name__} is not a ViTPose model: it has no get_layer_id / num_layer_ids"
    )


def layer_lr_scales(num_layer_ids: int, layer_decay: float) -> list[float]:
    """`[layer_decay ** (num_layer_ids - i - 1) for i in range(num_layer_ids)]`: lr multiplier per layer id."""
    if num_layer_ids < 1:
        raise ValueError(f"num_layer_ids must be >= 1, got {num_layer_ids}")
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    return [layer_decay ** (num_layer_ids - i - 1) for i in range(num_layer_ids)]


def build_param_groups(
    model: nn.Module,
    base_lr: float = 5e-4,
    weight_decay: float = 0.1,
    layer_decay: float | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups for `torch.optim.AdamW` with layer-wise lr decay and no-weight-decay selection.

    Args:
        model: a `VitPoseForPoseEstimation` / `VitPoseModel`, possibly wrapped by `peft` or DDP.
            Parameter names are taken relative to the ViTPose module (`backbone.encoder.layer.3...`).
        base_lr: learning rate of the last layer id (final norm and heads).
        weight_decay: decoupled weight decay of the decayed groups.
        layer_decay: per-layer lr decay rate; None uses `model.config.layer_decay_rate()` (0.75 for
            ViTPose-B, 0.8 for S and L, ...); 1.0 turns layer decay off.

    Returns:
        A list of dicts, one per (layer id, decay / no decay) pair that holds parameters, highest
        layer id first (so group 0 has `base_lr`, the lr `Trainer` logs), each with
        `params`, `lr`, `weight_decay`, and for inspection `layer_id`, `lr_scale`, `param_names`.
        Torch optimizers and schedulers keep the extra keys; a `LambdaLR` schedule scales every
        group's own `lr`, so the layer-wise ratios hold through warmup and step decay.
    """
    if base_lr <= 0:
        raise ValueError(f"base_lr must be positive, got {base_lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    vitpose = unwrap_vitpose(model)
    if layer_decay is None:
        layer_decay = float(vitpose.config.layer_decay_rate())
    num_ids = int(vitpose.num_layer_ids)
    scales = layer_lr_scales(num_ids, layer_decay)
    no_decay_names = set(vitpose.no_weight_decay()) if hasattr(vitpose, "no_weight_decay") else set()
    all_names = {name for name, _ in vitpose.named_parameters()}
    unknown = no_decay_names - all_names
    if unknown:
        logger.debug("no_weight_decay names without a parameter (ignored): %s", sorted(unknown))

    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in vitpose.named_parameters():
        if not param.requires_grad:
            continue
        layer_id = int(vitpose.get_layer_id(_strip_adapter(name)))
        if not 0 <= layer_id < num_ids:
            raise ValueError(f"get_layer_id({name!r}) = {layer_id} is outside [0, {num_ids})")
        decay = not (param.ndim <= 1 or name in no_decay_names)
        key = (layer_id, decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "param_names": [],
                "lr": base_lr * scales[layer_id],
                "lr_scale": scales[layer_id],
                "weight_decay": weight_decay if decay else 0.0,
                "layer_id": layer_id,
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    if not groups:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    # last layer id (heads, base lr) first: Trainer logs the lr of group 0
    ordered = [groups[k] for k in sorted(groups, key=lambda key: (-key[0], not key[1]))]
    logger.info(
        "%d parameter groups: %d trainable tensors, layer decay %.3f over %d layer ids",
        len(ordered), sum(len(g["params"]) for g in ordered), layer_decay, num_ids,
    )
    return ordered


def _strip_adapter(name: str) -> str:
    """A name as the plain model knows it: peft's `base_layer.` / `modules_to_save.<name>.` /
    `original_module.` parts removed (they do not change which layer a parameter belongs to)."""
    parts = name.split(".")
    out: list[str] = []
    skip_next = False
    for part in parts:
        if skip_next:
            skip_next = False
            continue
        if part in ("base_layer", "original_module"):
            continue
        if part == "modules_to_save":
            skip_next = True
            continue
        out.append(part)
    return ".".join(out)


def make_adamw(
    model: nn.Module,
    lr: float = 5e-4,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    layer_decay: float | None = None,
) -> torch.optim.AdamW:
    """`torch.optim.AdamW` over `build_param_groups(model, lr, weight_decay, layer_decay)`."""
    return torch.optim.AdamW(build_param_groups(model, lr, weight_decay, layer_decay), lr=lr, betas=betas, eps=eps)


__all__.append("make_adamw")
