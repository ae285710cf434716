"""The official ViTPose learning-rate schedule, scaled to any run length.

mmpose's COCO recipe: linear warmup over 500 iterations starting at 0.001 x the lr, then step
decay x0.1 at epochs 170 and 200 of 210. Here the step milestones are fractions of the run
(170/210 and 200/210 of the total optimizer steps), so a 300-step run decays at steps 242 and 285
just like a 210-epoch one; the warmup keeps its 500 iterations but never takes more than
`warmup_max_fraction` of the run.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

__all__ = ["official_lr_lambda", "official_scheduler", "effective_warmup_steps"]


def effective_warmup_steps(total_steps: int, warmup_steps: int = 500, warmup_max_fraction: float = 0.1) -> int:
    """`min(warmup_steps, floor(warmup_max_fraction * total_steps))` (at least 0)."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_steps < 0 or not 0.0 <= warmup_max_fraction <= 1.0:
        raise ValueError(f"bad warmup: steps {warmup_steps}, max fraction {warmup_max_fraction}")
    return int(min(warmup_steps, math.floor(warmup_max_fraction * total_steps)))


def official_lr_lambda(
    total_steps: int,
    warmup_steps: int = 500,
    warmup_start_factor: float = 0.001,
    milestones: Sequence[float] = (170 / 210, 200 / 210),
    gamma: float = 0.1,
    warmup_max_fraction: float = 0.1,
) -> Callable[[int], float]:
    """lr multiplier as a function of the optimizer step (for `torch.optim.lr_scheduler.LambdaLR`).

    Args:
        total_steps: optimizer steps of the whole run.
        warmup_steps: official warmup length in iterations (500), capped by `warmup_max_fraction`.
        warmup_start_factor: multiplier at step 0 (0.001); rises linearly to 1 at the end of warmup.
        milestones: fractions of `total_steps` where the lr is multiplied by `gamma`.
        gamma: step decay factor (0.1).

    Returns:
        `f(step) = warmup(step) * gamma ** (number of milestones <= step)`, where
        `warmup(step) = 1 - (1 - step / W) * (1 - warmup_start_factor)` for `step < W`, else 1.
    """
    if not 0.0 < warmup_start_factor <= 1.0:
        raise ValueError(f"warmup_start_factor must be in (0, 1], got {warmup_start_factor}")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    for m in milestones:
        if not 0.0 < float(m) <= 1.0:
            raise ValueError(f"milestones are fractions of the run in (0, 1], got {list(milestones)}")
    warmup = effective_warmup_steps(total_steps, warmup_steps, warmup_max_fraction)
    boundaries = sorted(int(round(float(m) * total_steps)) for m in milestones)

    def factor(step: int) -> float:
        value = 1.0
        if step < warmup:
            value = 1.0 - (1.0 - step / warmup) * (1.0 - warmup_start_factor)
        passed = sum(1 for b in boundaries if step >= b)
        return value * gamma**passed

    return factor


def official_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, **kwargs) -> torch.optim.lr_scheduler.LambdaLR:
    """`LambdaLR(optimizer, official_lr_lambda(total_steps, **kwargs))`; each param group keeps its own
    (layer-decayed) base lr."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, official_lr_lambda(total_steps, **kwargs))
