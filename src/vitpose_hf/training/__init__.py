"""Training utilities: layer-decay parameter groups, parameter-subset tuning and LoRA, the official
schedule, `VitPoseTrainer`, and the reusable parts of the recipe `examples/run_pose.py` (installed
as `vitpose_hf.recipes.run_pose`, which `vitpose-hf train` runs).

Public API:
    build_param_groups(model, base_lr=5e-4, weight_decay=0.1, layer_decay=None) -> list[dict]
    apply_trainable(model, spec) -> {"trainable", "frozen"};  apply_lora(model, r, alpha, target_modules)
    official_lr_lambda(total_steps, warmup_steps=500, ...) -> step -> factor
    VitPoseTrainer, multi_dataset_pose_loss, PaddingPoseCollator, MultiSchemaTransform
    ModelArguments, DataArguments, PoseTrainingArguments, run_training(model_args, data_args, training_args)
"""

from .param_groups import build_param_groups, layer_lr_scales, make_adamw, unwrap_vitpose
from .schedule import effective_warmup_steps, official_lr_lambda, official_scheduler
from .trainable import TRAINABLE_CHOICES, apply_lora, apply_trainable, merge_lora, parse_trainable_spec

_LAZY = {
    "VitPoseTrainer": ".trainer",
    "multi_dataset_pose_loss": ".trainer",
    "PaddingPoseCollator": ".trainer",
    "MultiSchemaTransform": ".trainer",
    "find_last_complete_checkpoint": ".trainer",
    "check_complete_save": ".trainer",
    "COMPLETE_MARKER": ".trainer",
    "ModelArguments": ".arguments",
    "DataArguments": ".arguments",
    "PoseTrainingArguments": ".arguments",
    "offline_default_args": ".arguments",
    "run_training": "vitpose_hf.recipes.run_pose",
    "build_model": ".build",
    "load_backbone_init": ".build",
}


def __getattr__(name):
    """Import the Trainer-based parts (which import transformers.Trainer) on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "official_lr_lambda",
    "official_scheduler",
    "effective_warmup_steps",
    *_LAZY,
]
