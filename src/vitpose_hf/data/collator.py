"""Batch collation for `transformers.Trainer` / a plain `DataLoader`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

__all__ = ["PoseDataCollator"]


@dataclass
class PoseDataCollator:
    """Stack per-sample outputs of `TopDownTransform` into model inputs.

    Returns a dict with `pixel_values` `(B, 3, H, W)`, `labels` `(B, K, h, w)`, `target_weight`
    `(B, K)` and `dataset_index` `(B,)` int64 -- the keyword arguments of
    `VitPoseForPoseEstimation.forward`. `meta_keys` present in the samples are added too
    (tensors stacked, other values as lists), e.g. `("center", "scale", "image_id")` for evaluation;
    keep it empty for `Trainer`, whose model call takes only the model's arguments.

    Raises:
        ValueError: an empty batch, or samples missing `pixel_values`.
    """

    meta_keys: Sequence[str] = field(default_factory=tuple)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if not features:
            raise ValueError("PoseDataCollator got an empty batch")
        first = features[0]
        if "pixel_values" not in first:
            raise ValueError(f"samples lack 'pixel_values' (keys: {sorted(first)}); apply TopDownTransform first")
        batch: dict[str, Any] = {"pixel_values": torch.stack([torch.as_tensor(f["pixel_values"]) for f in features])}
        for key in ("labels", "target_weight"):
            if key in first:
                batch[key] = torch.stack([torch.as_tensor(f[key]) for f in features])
        if "dataset_index" in first:
            batch["dataset_index"] = torch.as_tensor([int(f["dataset_index"]) for f in features], dtype=torch.long)
        for key in self.meta_keys:
            if key not in first:
                continue
            values = [f[key] for f in features]
            if isinstance(values[0], torch.Tensor):
                batch[key] = torch.stack(values)
            else:
                batch[key] = values
        return batch
