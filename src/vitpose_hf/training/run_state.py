"""Run state of the training recipe: output folder, resume, the last-step case, distributed teardown.

`already_finished` returns the saved result of a run whose final save is complete;
`prepare_output_dir` refuses (or, with `--overwrite_output_dir`, clears) a folder holding another
run; `resolve_resume` picks the checkpoint to resume (`last`, or a checked folder);
`finish_from_last_checkpoint` makes the final save of a run that was stopped at its last step;
`finish_distributed` ends a multi-process run without gloo teardown hangs.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import pickle
from typing import Any

import torch.distributed as dist
from safetensors import SafetensorError
from torch.nn.parallel import DistributedDataParallel
from transformers.trainer_callback import TrainerState

from .arguments import PoseTrainingArguments
from .trainer import (
    COMPLETE_MARKER,
    check_complete_save,
    describe_used_output_dir,
    find_last_complete_checkpoint,
    read_complete_marker,
    remove_run_outputs,
)

logger = logging.getLogger(__name__)

__all__ = [
    "already_finished",
    "prepare_output_dir",
    "resolve_resume",
    "read_results",
    "target_steps",
    "finish_from_last_checkpoint",
    "is_unreadable_file_error",
    "finish_distributed",
]


def read_results(output_dir: str, split: str) -> dict[str, float]:
    try:
        with open(os.path.join(output_dir, f"{split}_results.json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}



def target_steps(training_args: PoseTrainingArguments, state=None) -> int | None:
    """The run's last step: `max_steps`, or the planned total of a checkpoint made with the same
    epoch count; None when it cannot be told before the data loader exists."""
    if training_args.max_steps and training_args.max_steps > 0:
        return int(training_args.max_steps)
    if state is not None and state.max_steps and float(state.num_train_epochs or 0) == float(training_args.num_train_epochs):
        return int(state.max_steps)
    return None



def already_finished(training_args: PoseTrainingArguments) -> dict[str, Any] | None:
    """The result of an earlier run of these arguments whose final save is complete, else None."""
    out = training_args.output_dir
    record = read_complete_marker(out) if os.path.isdir(out) else None
    if record is None or record.get("kind") != "final":
        return None
    step = int(record.get("global_step", -1))
    if training_args.max_steps and training_args.max_steps > 0:
        done = step >= training_args.max_steps
    else:
        done = int(record.get("max_steps", 0)) <= 0 and float(record.get("num_train_epochs", 0)) >= float(training_args.num_train_epochs)
    if not done:
        return None
    problem = check_complete_save(out)
    if problem is not None:
        logger.warning("%s: the final save is damaged (%s); resuming from the last complete checkpoint", out, problem)
        return None
    logger.info("%s: this run already finished at step %d; nothing to do (--max_steps larger to continue it, "
                "--overwrite_output_dir to train again)", out, step)
    if training_args.process_index == 0 and not os.path.isfile(os.path.join(out, "eval_results.json")) and training_args.do_eval:
        logger.warning("%s has no eval_results.json: evaluate the model with `vitpose-hf evaluate`", out)
    return {"train": read_results(out, "train"), "eval": read_results(out, "eval"), "output_dir": out,
            "global_step": step, "already_finished": True}



def prepare_output_dir(training_args: PoseTrainingArguments, resuming: bool) -> None:
    """Refuse to train into a folder holding an earlier run unless resuming or overwriting; with
    `--overwrite_output_dir` delete that run's outputs first (main process)."""
    out = training_args.output_dir
    used = describe_used_output_dir(out)
    if used is None:
        return
    if training_args.overwrite_output_dir:
        if resuming:
            raise ValueError(f"--overwrite_output_dir and --resume_from_checkpoint {training_args.resume_from_checkpoint!r} "
                             "contradict each other: give one")
        with training_args.main_process_first(desc="overwrite_output_dir"):
            if training_args.process_index == 0:
                removed = remove_run_outputs(out)
                logger.warning("--overwrite_output_dir: removed the earlier run in %s (%s)", out, ", ".join(removed))
        return
    if not resuming:
        raise ValueError(
            f"output_dir {out} holds an earlier run ({used}): pass --resume_from_checkpoint last to continue it, "
            "--overwrite_output_dir to delete it and start over, or another --output_dir"
        )



def resolve_resume(output_dir: str, resume_arg, resume_last: bool) -> tuple[str | None, bool]:
    """`(checkpoint folder or None, trusted)`: `last` -> the newest complete checkpoint (damaged
    newer ones skipped with a warning); an explicit folder must pass `check_complete_save`, or,
    without a marker (another tool's checkpoint), is used with a warning (`trusted=False`)."""
    if not resume_arg:
        return None, True
    if resume_last:
        resume = find_last_complete_checkpoint(output_dir)
        if resume is None:
            # nothing to resume in a fresh folder is the normal start of a resumable run
            log = logger.warning if describe_used_output_dir(output_dir) else logger.info
            log("no complete checkpoint in %s: starting from scratch", output_dir)
        else:
            logger.info("resuming from %s", resume)
        return resume, True
    resume = os.fspath(resume_arg)
    if not os.path.isdir(resume):
        raise ValueError(f"--resume_from_checkpoint {resume}: no such folder")
    problem = check_complete_save(resume)
    if problem is None:
        return resume, True
    if not os.path.isfile(os.path.join(resume, COMPLETE_MARKER)) and os.path.isfile(os.path.join(resume, "trainer_state.json")):
        logger.warning("--resume_from_checkpoint %s has no %s (not written by vitpose_hf, or by an older version): "
                       "its files cannot be checked before loading", resume, COMPLETE_MARKER)
        return resume, False
    raise ValueError(f"--resume_from_checkpoint {resume}: {problem}")



def is_unreadable_file_error(err: BaseException) -> bool:
    return isinstance(err, (SafetensorError, pickle.UnpicklingError, json.JSONDecodeError, EOFError))



def _drop_ddp_wrappers(trainer) -> None:
    """Forget every reference the trainer and its accelerator hold to the DDP wrapper."""
    model = trainer.model
    while isinstance(model, DistributedDataParallel):
        model = model.module
    trainer.model = model
    trainer.model_wrapped = model
    # accelerate keeps its own list of prepared models (a private attribute, no public way to drop one)
    accelerator = trainer.accelerator
    if hasattr(accelerator, "_models"):
        accelerator._models = [m.module if isinstance(m, DistributedDataParallel) else m for m in accelerator._models]



def finish_distributed(trainer=None) -> None:
    """End a multi-process run so that no rank can hang or abort in gloo's teardown. No-op otherwise.

    Why this order: the DDP wrapper's C++ `Reducer` holds a reference to the process group. If the
    wrapper outlives `destroy_process_group()`, freeing it later drops the group's last reference
    from a destructor that keeps the GIL, and `~ProcessGroupGloo` joins gloo's worker thread, which
    may itself be waiting for the GIL to free the Python tensors of a finished collective (the AP
    broadcast): a deadlock (seen as a hang in `std::thread::join`). Freed during interpreter
    shutdown instead, the worker thread is killed while it waits for the GIL ("terminate called
    without an active exception"). So: wait for every rank, free the wrappers while the group is
    still registered, then destroy it through `destroy_process_group()`, whose destructor releases
    the GIL while joining.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    if trainer is not None:
        _drop_ddp_wrappers(trainer)
    gc.collect()
    alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
    if alive:  # its process group will be freed later, where the teardown can deadlock
        logger.warning("%d DistributedDataParallel wrapper(s) still referenced at the end of the run", alive)
    dist.destroy_process_group()


def finish_from_last_checkpoint(trainer, training_args: PoseTrainingArguments, resume: str | None) -> dict[str, float] | None:
    """When `resume` is the run's last step (a run stopped during or before its final save), load it
    into `trainer` and return the saved train metrics, so the final save is made from it instead of
    Trainer taking another step; else None (train normally)."""
    if resume is None:
        return None
    state = TrainerState.load_from_json(os.path.join(resume, "trainer_state.json"))
    target = target_steps(training_args, state)
    if target is None or state.global_step < target:
        return None
    logger.info("%s is the run's last step (%d): saving it as the final model without training", resume, target)
    trainer._load_from_checkpoint(resume)  # transformers has no public "load this checkpoint" on a Trainer
    trainer.state = state
    return read_results(training_args.output_dir, "train")
