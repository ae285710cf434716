"""Knowledge-token distillation and heatmap (output) distillation, as in the ViTPose paper's
transferability study.

* **Knowledge tokens** (two stages). Stage 1, `train_knowledge_tokens`: `T` learnable tokens are
  prepended to the patch tokens of a *frozen* teacher (eval mode, every weight frozen) and trained
  alone on the ground-truth heatmap loss, `t* = argmin_t L(teacher([t; X]), K_gt)`. Stage 2,
  `transfer_knowledge_tokens`: the tokens are copied, frozen, into a student of the same width
  (`config.num_knowledge_tokens = T`), which then trains as usual; the tokens are an ordinary
  parameter, so `save_pretrained` / `from_pretrained` keep them.
* **Heatmap distillation**: `heatmap_distillation_loss` is the JointsMSE between student and
  teacher heatmaps; `distillation_loss` adds it to the ground-truth loss with weight `alpha`;
  `DistillationTrainer` is a `transformers.Trainer` whose loss does that with a teacher model.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn
from transformers import Trainer

from .configuration_vitpose import VitPoseConfig
from .losses import DistillationLosses, distillation_loss, heatmap_distillation_loss
from .modeling_vitpose import VitPoseForPoseEstimation
from .training.trainer import batch_keypoint_counts

logger = logging.getLogger(__name__)

__all__ = [
    "DistillationLosses",
    "DistillationTrainer",
    "KnowledgeTokenResult",
    "distillation_loss",
    "freeze_knowledge_tokens",
    "heatmap_distillation_loss",
    "train_knowledge_tokens",
    "transfer_knowledge_tokens",
    "with_knowledge_tokens",
]




# ----------------------------------------------------------------------------- knowledge tokens
def _knowledge_tokens(model: VitPoseForPoseEstimation) -> nn.Parameter | None:
    return getattr(model.backbone.embeddings, "knowledge_tokens", None)


def freeze_knowledge_tokens(model: VitPoseForPoseEstimation, frozen: bool = True) -> VitPoseForPoseEstimation:
    """Set `requires_grad = not frozen` on the model's knowledge tokens (no-op without tokens)."""
    tokens = _knowledge_tokens(model)
    if tokens is not None:
        tokens.requires_grad_(not frozen)
    return model


def with_knowledge_tokens(model: VitPoseForPoseEstimation, num_tokens: int) -> VitPoseForPoseEstimation:
    """A copy of `model` whose config carries `num_tokens` knowledge tokens (`(1, T, C)` parameter).

    All other weights are copied; existing tokens are kept when the count matches, otherwise the new
    tokens start from the model's init (truncated normal, std `initializer_range`).
    """
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    if model.config.num_knowledge_tokens == num_tokens:
        return copy.deepcopy(model)
    values = model.config.to_dict()
    for key in ("model_type", "transformers_version"):
        values.pop(key, None)
    values["num_knowledge_tokens"] = int(num_tokens)
    config = VitPoseConfig(**values)
    config._attn_implementation = getattr(model.config, "_attn_implementation", None)
    new = VitPoseForPoseEstimation(config)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("embeddings.knowledge_tokens")}
    result = new.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("embeddings.knowledge_tokens")]
    if missing or result.unexpected_keys:
        raise ValueError(f"could not copy the model: missing {missing}, unexpected {result.unexpected_keys}")
    param = next(model.parameters())
    return new.to(device=param.device, dtype=param.dtype).train(model.training)


def transfer_knowledge_tokens(
    student: VitPoseForPoseEstimation, tokens: torch.Tensor, freeze: bool = True
) -> VitPoseForPoseEstimation:
    """Stage 2: put learned knowledge tokens into a student (a new model if it carries a different count).

    Args:
        student: any `VitPoseForPoseEstimation` with the teacher's width.
        tokens: `(1, T, C)` or `(T, C)` tokens from `train_knowledge_tokens`.
        freeze: keep the tokens fixed while the student trains (the paper's setting).

    Returns:
        the student (the same object when it already has `T` tokens, otherwise a copy) with
        `config.num_knowledge_tokens == T` and the tokens copied in.

    Raises:
        ValueError: the token width differs from the student's `hidden_size`.
    """
    tokens = tokens.detach()
    if tokens.ndim == 2:
        tokens = tokens[None]
    if tokens.ndim != 3 or tokens.shape[0] != 1:
        raise ValueError(f"tokens must be (1, T, C) or (T, C), got shape {tuple(tokens.shape)}")
    if tokens.shape[-1] != student.config.hidden_size:
        raise ValueError(
            f"knowledge tokens have width {tokens.shape[-1]} but the student's hidden_size is "
            f"{student.config.hidden_size}: teacher and student must have the same width"
        )
    if student.config.num_knowledge_tokens != tokens.shape[1]:
        student = with_knowledge_tokens(student, tokens.shape[1])
    param = _knowledge_tokens(student)
    with torch.no_grad():
        param.copy_(tokens.to(device=param.device, dtype=param.dtype))
    return freeze_knowledge_tokens(student, freeze)


@dataclass
class KnowledgeTokenResult:
    """Output of `train_knowledge_tokens`.

    Attributes:
        tokens: `(1, T, C)` learned tokens (CPU, float32).
        teacher: the frozen teacher carrying the tokens (config `num_knowledge_tokens = T`).
        losses: ground-truth loss of every step.
    """

    tokens: torch.Tensor
    teacher: VitPoseForPoseEstimation
    losses: list[float] = field(default_factory=list)


def train_knowledge_tokens(
    teacher: VitPoseForPoseEstimation,
    dataloader: Iterable[dict[str, Any]],
    num_tokens: int = 1,
    steps: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    accelerator: Any = None,
    device: torch.device | str | None = None,
    log_every: int = 50,
) -> KnowledgeTokenResult:
    """Stage 1: learn `num_tokens` knowledge tokens on a frozen teacher (only the tokens train).

    Args:
        teacher: the teacher model (not modified; a copy carrying the tokens is trained).
        dataloader: batches with `pixel_values` `(B, 3, H, W)`, `labels` `(B, K, H/4, W/4)`,
            optionally `target_weight` `(B, K)` and `dataset_index` `(B,)` (e.g. `PoseDataCollator`
            output). Cycled until `steps` steps are done.
        num_tokens: number of tokens `T`.
        steps: optimisation steps.
        lr, weight_decay: AdamW settings of the tokens.
        accelerator: an `accelerate.Accelerator` (multi-device / mixed precision), or None.
        device: device for the plain loop (default: the teacher's).
        log_every: log the loss every this many steps.

    Returns:
        `KnowledgeTokenResult` with the tokens `(1, T, C)`.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    model = with_knowledge_tokens(teacher, num_tokens)
    model.eval()  # frozen teacher: BatchNorm statistics, dropout and drop path off
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith("embeddings.knowledge_tokens"))
    tokens = _knowledge_tokens(model)
    optimizer = torch.optim.AdamW([tokens], lr=lr, weight_decay=weight_decay)
    if accelerator is not None:
        model, optimizer, dataloader = accelerator.prepare(model, optimizer, dataloader)
        device = accelerator.device
    else:
        device = torch.device(device) if device is not None else tokens.device
        model.to(device)
    losses: list[float] = []
    batches = _repeat(dataloader)
    for step, batch in zip(range(steps), batches):
        if "labels" not in batch:
            raise ValueError("knowledge-token training needs ground-truth `labels` in every batch")
        inputs = {k: batch[k].to(device) for k in ("pixel_values", "labels", "target_weight", "dataset_index") if k in batch}
        loss = model(**inputs).loss
        optimizer.zero_grad(set_to_none=True)
        if accelerator is not None:
            accelerator.backward(loss)
        else:
            loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if log_every and (step % log_every == 0 or step == steps - 1):
            logger.info("knowledge tokens step %d/%d loss %.6f", step + 1, steps, losses[-1])
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    tokens = _knowledge_tokens(model)
    tokens.requires_grad_(False)
    return KnowledgeTokenResult(tokens=tokens.detach().float().cpu().clone(), teacher=model, losses=losses)


def _repeat(loader: Iterable) -> Iterable:
    """Iterate `loader` again and again (a fresh pass each time, unlike `itertools.cycle`)."""
    if hasattr(loader, "__next__"):  # a one-shot iterator: use it as it is
        yield from loader
        return
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the dataloader yielded no batch")


# ----------------------------------------------------------------------------- Trainer
class DistillationTrainer(Trainer):
    """`transformers.Trainer` adding heatmap distillation from a teacher to the student's loss.

    `loss = gt_loss + alpha * MSE(student_heatmaps, teacher_heatmaps)` (the ground-truth term
    when the batch has `labels`: `vitpose_hf.losses.joints_mse_loss`, as `VitPoseTrainer` computes it). The teacher runs in eval mode without
    gradients, on the student's device; the student's knowledge tokens stay frozen unless
    `freeze_student_tokens=False`.

    Args:
        teacher_model: the teacher (`VitPoseForPoseEstimation` or anything returning `.heatmaps`).
        alpha: weight of the distillation term.
        freeze_student_tokens: keep the student's knowledge tokens fixed.
        *args, **kwargs: as for `Trainer` (`model` is the student).
    """

    def __init__(self, *args, teacher_model: nn.Module, alpha: float = 1.0, freeze_student_tokens: bool = True,
                 **kwargs):
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        model = kwargs.get("model", args[0] if args else None)
        if freeze_student_tokens and model is not None:
            freeze_knowledge_tokens(model, True)
        super().__init__(*args, **kwargs)
        self.teacher_model = teacher_model.eval()
        for param in self.teacher_model.parameters():
            param.requires_grad_(False)
        self.alpha = float(alpha)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Student forward, teacher forward (no grad), `gt + alpha * distillation`; logs both terms.
        The ground-truth term counts each sample's own keypoints in mixed-dataset batches."""
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)  # the loss is computed here, not (again) in the forward
        target_weight = inputs.pop("target_weight", None)
        outputs = model(**inputs)
        pixel_values = inputs["pixel_values"]
        teacher_param = next(self.teacher_model.parameters())
        if teacher_param.device != pixel_values.device:
            self.teacher_model.to(pixel_values.device)
        with torch.no_grad():
            teacher_heatmaps = self.teacher_model(
                pixel_values=pixel_values, dataset_index=inputs.get("dataset_index")
            ).heatmaps
        losses = distillation_loss(
            outputs.heatmaps, teacher_heatmaps.to(outputs.heatmaps.dtype), labels, target_weight, alpha=self.alpha,
            num_keypoints=batch_keypoint_counts(model, inputs.get("dataset_index")),
        )
        if model.training and self.state.global_step % max(self.args.logging_steps, 1) == 0:
            logs = {"distillation_loss": float(losses.distillation.detach())}
            if losses.ground_truth is not None:
                logs["gt_loss"] = float(losses.ground_truth.detach())
            self._distill_logs = logs
        return (losses.total, outputs) if return_outputs else losses.total

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """`Trainer.log`, plus the latest distillation / ground-truth terms of a training step."""
        extra = getattr(self, "_distill_logs", None)
        if extra and "loss" in logs:
            logs = {**logs, **extra}
            self._distill_logs = None
        super().log(logs, *args, **kwargs)
