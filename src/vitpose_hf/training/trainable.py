"""Parameter-subset tuning (the ViTPose paper's "fine-tuning flexibility") and LoRA.

`apply_trainable(model, spec)` freezes everything except the chosen parts:

| spec               | trains                                                                    |
|--------------------|---------------------------------------------------------------------------|
| `all`              | every parameter                                                           |
| `attention`        | every block's attention (q/k/v + output projection) and its `layernorm_before`, the final LayerNorm, the heads |
| `ffn`              | every block's MLP (fc1, fc2, MoE experts) and its `layernorm_after`, the final LayerNorm, the heads |
| `head`             | the heads only (main head + every dataset head)                           |
| `last_k_blocks:N`  | the last N encoder blocks (all their parts), the final LayerNorm, the heads |

Specs combine with `+` (`attention+ffn` = everything but the embeddings). The heads are trained by
every spec because a new task's head starts from random weights; the patch embedding and the
position embeddings are trained only by `all`. Each block's LayerNorm follows the sub-layer it
feeds (`layernorm_before` -> attention, `layernorm_after` -> MLP). Parts are chosen by module
structure (`backbone.encoder.layer[i].attention`, ...), not by name patterns. BatchNorm running
statistics of the heads keep updating in train mode, as the heads are trained anyway.

`apply_lora(model, r, alpha, target_modules)` wraps the model with `peft` LoRA adapters (optional
dependency: `pip install vitpose_hf[peft]`) and keeps the heads fully trainable.
"""

from __future__ import annotations

import logging
import re
from typing import Iterable, Sequence

from torch import nn

from .param_groups import unwrap_vitpose

logger = logging.getLogger(__name__)

__all__ = ["apply_trainable", "apply_lora", "parse_trainable_spec", "TRAINABLE_CHOICES", "merge_lora"]

TRAINABLE_CHOICES = ("all", "attention", "ffn", "head", "last_k_blocks:N")
_LAST_K = re.compile(r"^last_k_blocks:(\d+)$")


def parse_trainable_spec(spec: str) -> list[tuple[str, int | None]]:
    """Split a spec like `"attention+ffn"` or `"last_k_blocks:2"` into `[(kind, k)]`.

    Raises:
        ValueError: naming the part that is not one of `TRAINABLE_CHOICES`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"trainable spec must be a non-empty string, got {spec!r}")
    parts = []
    for raw in spec.replace(",", "+").split("+"):
        part = raw.strip().lower()
        match = _LAST_K.match(part)
        if match:
            k = int(match.group(1))
            if k < 1:
                raise ValueError(f"last_k_blocks needs N >= 1, got {raw!r}")
            parts.append(("last_k_blocks", k))
        elif part in ("all", "attention", "ffn", "head"):
            parts.append((part, None))
        else:
            raise ValueError(f"unknown trainable part {raw!r} in {spec!r}; choose from {TRAINABLE_CHOICES}")
    return parts


def _backbone_and_heads(model: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
    vitpose = unwrap_vitpose(model)
    if hasattr(vitpose, "backbone") and hasattr(vitpose.backbone, "encoder"):
        heads = [vitpose.head] if hasattr(vitpose, "head") else []
        if hasattr(vitpose, "extra_heads"):
            heads.extend(vitpose.extra_heads.values())
        return vitpose.backbone, heads
    if hasattr(vitpose, "encoder"):
        return vitpose, []
    raise ValueError(f"{type(vitpose).__name__} has no ViTPose backbone")


def _set(modules: Iterable[nn.Module], flag: bool) -> None:
    for module in modules:
        for param in module.parameters():
            param.requires_grad_(flag)


def apply_trainable(model: nn.Module, spec: str = "all") -> dict[str, int]:
    """Freeze every parameter of `model` except the parts named by `spec` (see the module docstring).

    Args:
        model: a `VitPoseForPoseEstimation` (or `VitPoseModel`, then there are no heads).
        spec: `all`, `attention`, `ffn`, `head`, `last_k_blocks:N`, or several joined by `+`.

    Returns:
        `{"trainable": n, "frozen": m}` parameter counts (elements, not tensors).
    """
    parts = parse_trainable_spec(spec)
    vitpose = unwrap_vitpose(model)
    backbone, heads = _backbone_and_heads(vitpose)
    blocks = list(backbone.encoder.layer)
    if any(kind == "all" for kind, _ in parts):
        _set([vitpose], True)
    else:
        _set([vitpose], False)
        chosen: list[nn.Module] = list(heads)
        for kind, k in parts:
            if kind == "head":
                continue
            chosen.append(backbone.layernorm)
            if kind == "attention":
                chosen += [m for b in blocks for m in (b.attention, b.layernorm_before)]
            elif kind == "ffn":
                chosen += [m for b in blocks for m in (b.mlp, b.layernorm_after)]
            elif kind == "last_k_blocks":
                if k > len(blocks):
                    raise ValueError(f"last_k_blocks:{k} asks for more blocks than the model has ({len(blocks)})")
                chosen += blocks[len(blocks) - k:]
        _set(chosen, True)
    counts = {
        "trainable": sum(p.numel() for p in vitpose.parameters() if p.requires_grad),
        "frozen": sum(p.numel() for p in vitpose.parameters() if not p.requires_grad),
    }
    logger.info("trainable=%s: %d trainable / %d frozen parameters", spec, counts["trainable"], counts["frozen"])
    return counts


def apply_lora(
    model: nn.Module,
    r: int = 8,
    alpha: int = 16,
    target_modules: Sequence[str] | str = ("query", "value"),
    dropout: float = 0.0,
    train_heads: bool = True,
):
    """Wrap `model` with `peft` LoRA adapters on the backbone's linear layers.

    Args:
        model: a `VitPoseForPoseEstimation`.
        r: LoRA rank; alpha: LoRA scaling numerator (`alpha / r`); dropout: LoRA dropout.
        target_modules: module names (last name component) that get adapters: any of `query`,
            `key`, `value`, `dense` (attention output), `fc1`, `fc2`; a comma-separated string works.
        train_heads: keep the heads fully trainable (saved with the adapter as `modules_to_save`).

    Returns:
        The `peft.PeftModel`. Call `merge_lora(peft_model)` to get a plain model for saving.

    Raises:
        ImportError: peft is not installed (`pip install peft`).
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("LoRA needs the optional dependency peft: pip install 'vitpose_hf[peft]'") from err
    if isinstance(target_modules, str):
        target_modules = [t.strip() for t in target_modules.split(",") if t.strip()]
    allowed = {"query", "key", "value", "dense", "fc1", "fc2"}
    bad = [t for t in target_modules if t not in allowed]
    if bad or not target_modules:
        raise ValueError(f"LoRA target_modules {list(target_modules)} must be a non-empty subset of {sorted(allowed)}")
    if r < 1:
        raise ValueError(f"LoRA rank r must be >= 1, got {r}")
    vitpose = unwrap_vitpose(model)
    # Anchor the targets inside the backbone blocks so that no head module is ever matched.
    pattern = r"backbone\.encoder\.layer\.\d+\..*\b(" + "|".join(re.escape(t) for t in target_modules) + r")$"
    modules_to_save = None
    if train_heads and hasattr(vitpose, "head"):
        modules_to_save = ["head"] + [f"extra_heads.{k}" for k in getattr(vitpose, "extra_heads", {}).keys()]
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, modules_to_save=modules_to_save,
        bias="none",
    )
    peft_model = get_peft_model(vitpose, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    logger.info("LoRA r=%d alpha=%d on %s: %d of %d parameters trainable", r, alpha, list(target_modules), trainable, total)
    return peft_model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold LoRA adapters (and trained head copies) into a plain `VitPoseForPoseEstimation`.

    A model without adapters is returned unchanged.
    """
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model
