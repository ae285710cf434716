"""Test-side hooks for the training recipe, and a script that runs the recipe with them.

The subprocess tests (2-process DDP, kill-and-resume) run

    python tests/training_hooks.py [--step-delay S] [--weights-digest PREFIX] <run_pose.py options>

which is `examples/run_pose.py`'s `main` with these callbacks added: the library carries no
testing switches.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

import torch
from transformers import TrainerCallback


def state_dict_digest(model: torch.nn.Module, parameters_only: bool = False) -> str:
    """sha256 over the names, shapes and bytes of every parameter and buffer (sorted by name), or of
    the parameters only (BatchNorm running statistics legitimately differ between DDP ranks after the
    last step: DDP broadcasts buffers at the start of each forward, not after it)."""
    h = hashlib.sha256()
    items = model.named_parameters() if parameters_only else model.state_dict().items()
    for name, tensor in sorted(items, key=lambda kv: kv[0]):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class StepDelayCallback(TrainerCallback):
    """Sleep after every optimizer step (gives a kill test a window between checkpoints)."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(self.seconds)


class WeightsDigestCallback(TrainerCallback):
    """At the end of training every rank writes `{rank, world_size, global_step, sha256 (parameters),
    sha256_all (+ buffers)}` of its model to `<prefix>.rank<N>.json`."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def on_train_end(self, args, state, control, model=None, **kwargs):
        while hasattr(model, "module"):  # DDP / compiled wrappers: hash the model itself
            model = model.module
        record = {"rank": args.process_index, "world_size": args.world_size, "global_step": state.global_step,
                  "sha256": state_dict_digest(model, parameters_only=True), "sha256_all": state_dict_digest(model)}
        with open(f"{self.prefix}.rank{args.process_index}.json", "w", encoding="utf-8") as f:
            json.dump(record, f)


def main(argv: list[str]) -> int:
    callbacks: list[TrainerCallback] = []
    rest = list(argv)
    for flag, make in (("--step-delay", lambda v: StepDelayCallback(float(v))), ("--weights-digest", WeightsDigestCallback)):
        if flag in rest:
            i = rest.index(flag)
            callbacks.append(make(rest[i + 1]))
            del rest[i : i + 2]
    from vitpose_hf.recipes.run_pose import main as run_pose_main

    return run_pose_main(rest, callbacks=callbacks)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
