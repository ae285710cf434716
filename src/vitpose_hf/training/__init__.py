"""Training utilities: layer-decay parameter groups, parameter-subset tuning and LoRA, the
Trainer-based training run behind `examples/run_pose.py` and `vitpose-hf train`."""

from .param_groups import build_param_groups, layer_lr_scales, make_adamw, unwrap_vitpose
from .trainable import TRAINABLE_CHOICES, apply_lora, apply_trainable, merge_lora, parse_trainable_spec

__all__ = [
    "build_param_groups",
    "layer_lr_scales",
    "make_adamw",
    "unwrap_vitpose",
    "apply_trainable",
    "apply_lora",
    "merge_lora",
    "parse_trainable_spec",
    "TRAINABLE_CHOICES",
]
