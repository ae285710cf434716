"""The training losses: ViTPose's joints MSE (also for mixed-dataset batches) and heatmap distillation.

One home for every caller: the model's forward (`labels=`), `VitPoseTrainer`, `DistillationTrainer`
and the knowledge-token training. Imports torch only, so it is saved beside checkpoints with the
modeling code (transformers' custom-code mechanism).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

__all__ = ["joints_mse_loss", "heatmap_distillation_loss", "distillation_loss", "DistillationLosses"]


def _joint_weights(target_weight: torch.Tensor | None, shape: torch.Size, device) -> torch.Tensor:
    """`(B, K)` float weights from `(B, K)` / `(B, K, 1)` / None (ones); ValueError naming the shape."""
    if target_weight is None:
        return torch.ones(shape, device=device)
    weight = target_weight.float()
    if weight.ndim == 3 and weight.shape[-1] == 1:
        weight = weight[..., 0]
    if weight.shape != shape:
        raise ValueError(f"target_weight must be (B, K) = {tuple(shape)} or (B, K, 1), got {tuple(target_weight.shape)}")
    return weight


def joints_mse_loss(
    heatmaps: torch.Tensor,
    labels: torch.Tensor,
    target_weight: torch.Tensor | None = None,
    num_keypoints: torch.Tensor | Sequence[int] | None = None,
) -> torch.Tensor:
    """The official JointsMSELoss with target weight: mean over joints of MSE(pred * w, gt * w).

    Args:
        heatmaps: `(B, Kp, h, w)` predictions.
        labels: `(B, K, h, w)` target heatmaps; without `num_keypoints`, `Kp` must equal `K`.
        target_weight: `(B, K)` or `(B, K, 1)` per-joint weights (0 for unlabeled joints), or None
            (every joint counts).
        num_keypoints: for mixed-dataset batches, `(B,)` keypoint count of each sample's own head:
            sample `b` counts only its first `num_keypoints[b]` channels, and the labels may be
            padded past it (`Kp` may then differ from `K`; the channels both have are compared).

    Returns:
        scalar loss. Without `num_keypoints`: the mean over all `B*K*h*w` elements (each joint's
        MSE is a mean over `B*h*w` values, so this is the mean over joints). With it: per sample
        `sum_{k < K_b} w_bk^2 * sum_hw (pred - gt)^2 / (K_b * h * w)`, then the mean over the batch,
        which equals the former when every `K_b = K` (up to float rounding). A batch of 0 crops has
        loss 0 (still connected to the graph, so `backward()` gives zero gradients), not the NaN of
        an empty mean.
    """
    if heatmaps.ndim != 4 or labels.ndim != 4:
        raise ValueError(f"heatmaps and labels must be (B, K, h, w), got {tuple(heatmaps.shape)} and {tuple(labels.shape)}")
    if num_keypoints is None:
        if labels.shape != heatmaps.shape:
            raise ValueError(f"labels must have the heatmaps' shape {tuple(heatmaps.shape)}, got {tuple(labels.shape)}")
        weight = None if target_weight is None else _joint_weights(target_weight, heatmaps.shape[:2], heatmaps.device)
        diff = heatmaps.float() - labels.float()
        if weight is not None:
            diff = diff * weight[:, :, None, None]
        return diff.sum() if diff.numel() == 0 else diff.pow(2).mean()

    batch, k_pred = heatmaps.shape[:2]
    if labels.shape[0] != batch or labels.shape[2:] != heatmaps.shape[2:]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match heatmaps {tuple(heatmaps.shape)}")
    weight = _joint_weights(target_weight, labels.shape[:2], labels.device)
    own = torch.as_tensor(num_keypoints, device=labels.device, dtype=torch.long).reshape(-1)
    if own.shape[0] != batch:
        raise ValueError(f"num_keypoints needs one count per sample: {batch} samples, {own.shape[0]} counts")
    k = min(k_pred, labels.shape[1])
    if own.numel() and (int(own.max()) > k or int(own.min()) < 1):
        raise ValueError(f"a sample needs {int(own.max())} keypoint channels but heatmaps have {k_pred} and "
                         f"labels {labels.shape[1]} (counts must be 1..{k}, got {own.tolist()[:8]})")
    mask = (torch.arange(k, device=labels.device)[None, :] < own[:, None]).float()  # (B, k)
    diff = (heatmaps[:, :k].float() - labels[:, :k].float()) * (weight[:, :k] * mask)[:, :, None, None]
    per_sample = diff.pow(2).flatten(1).sum(1) / (own.float() * heatmaps.shape[2] * heatmaps.shape[3])
    return per_sample.sum() if batch == 0 else per_sample.mean()


def heatmap_distillation_loss(
    student_heatmaps: torch.Tensor,
    teacher_heatmaps: torch.Tensor,
    target_weight: torch.Tensor | None = None,
    num_keypoints: torch.Tensor | Sequence[int] | None = None,
) -> torch.Tensor:
    """Output distillation: JointsMSE between the student's and the (detached) teacher's heatmaps.

    Args:
        student_heatmaps: `(B, K, h, w)`.
        teacher_heatmaps: `(B, K, h, w)`; no gradient flows into it.
        target_weight: optional `(B, K)` or `(B, K, 1)` joint weights (default: every joint counts,
            the teacher has an opinion on unlabeled joints too).
        num_keypoints: optional `(B,)` own keypoint counts of a mixed-dataset batch (see
            `joints_mse_loss`).

    Returns:
        scalar: `mean((w * (student - teacher))^2)`.
    """
    if student_heatmaps.shape != teacher_heatmaps.shape:
        raise ValueError(
            f"student heatmaps {tuple(student_heatmaps.shape)} and teacher heatmaps "
            f"{tuple(teacher_heatmaps.shape)} must have the same shape"
        )
    return joints_mse_loss(student_heatmaps, teacher_heatmaps.detach(), target_weight, num_keypoints)


class DistillationLosses(NamedTuple):
    """`total = ground_truth + alpha * distillation` (`ground_truth` is None without labels)."""

    total: torch.Tensor
    ground_truth: torch.Tensor | None
    distillation: torch.Tensor


def distillation_loss(
    student_heatmaps: torch.Tensor,
    teacher_heatmaps: torch.Tensor,
    labels: torch.Tensor | None = None,
    target_weight: torch.Tensor | None = None,
    alpha: float = 1.0,
    weight_distillation: bool = False,
    num_keypoints: torch.Tensor | Sequence[int] | None = None,
) -> DistillationLosses:
    """Ground-truth JointsMSE plus `alpha` times the heatmap distillation term.

    Args:
        student_heatmaps, teacher_heatmaps: `(B, K, h, w)`.
        labels: `(B, K', h, w)` ground-truth heatmaps (`K' = K` unless `num_keypoints` is given), or
            None (pure distillation, e.g. unlabeled data).
        target_weight: `(B, K')` joint weights of the ground-truth term.
        alpha: weight of the distillation term (>= 0).
        weight_distillation: also apply `target_weight` to the distillation term.
        num_keypoints: optional `(B,)` own keypoint counts of a mixed-dataset batch.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    distill_weight = None
    if weight_distillation and target_weight is not None:
        distill_weight = target_weight[:, : student_heatmaps.shape[1]]
    distill = heatmap_distillation_loss(student_heatmaps, teacher_heatmaps, distill_weight, num_keypoints)
    gt = None
    if labels is not None:
        gt = joints_mse_loss(student_heatmaps, labels.to(student_heatmaps.dtype), target_weight, num_keypoints)
    total = alpha * distill if gt is None else gt + alpha * distill
    return DistillationLosses(total, gt, distill)
