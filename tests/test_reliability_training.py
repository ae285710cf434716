"""Training reliability: a finished run is never retrained by accident, saves are atomic (a kill at any
point leaves the previous or the new complete state), resume skips corrupt checkpoints, rotation keeps
the newest complete checkpoint, and `--backbone_init` takes a full official ViTPose `.pth`."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import tiny_config_kwargs
from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation

TINY = json.dumps({k: v for k, v in tiny_config_kwargs(num_deconv_layers=1).items() if k != "image_size"})
TINY_ARGS = ["--preset", "offline", "--image_size", "64,48", "--config_overrides", TINY, "--use_cpu",
             "--disable_tqdm", "True", "--report_to", "none", "--dataloader_num_workers", "0"]
MARKER = "vitpose_complete.json"


def _parse(argv):
    from vitpose_hf.training.arguments import parse_training_args

    return parse_training_args(argv)


def _args(shared_data, out, *extra, eval_data=True):
    sample = shared_data / "coco_sample"
    evals = ["--eval_annotations", str(sample / "test_coco.json"), "--eval_images", str(sample)] if eval_data else []
    return [
        "--train_annotations", str(sample / "test_coco.json"), "--train_images", str(sample), *evals,
        "--output_dir", str(out), *TINY_ARGS, "--max_steps", "4", "--save_steps", "2", "--eval_strategy", "no",
        "--per_device_train_batch_size", "4", "--augmentation", "False", "--save_total_limit", "10",
        "--logging_steps", "1", "--flip_test", "False", *extra,
    ]


def _run(argv):
    from vitpose_hf.recipes.run_pose import run_training

    return run_training(*_parse(argv))


@pytest.fixture(scope="module")
def finished_run(shared_data, tmp_path_factory):
    """A finished 4-step run (checkpoints 2 and 4, final model, eval results); copy it before changing it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = _run(_args(shared_data, out))
    return out, result


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and "synthetic_data" not in p.parts}


# ----------------------------------------------------------------------------- 1. finished runs / used output dirs
def test_resuming_a_finished_run_is_a_no_op(finished_run, shared_data, tmp_path, caplog):
    src, first = finished_run
    out = _copy(src, tmp_path / "run")
    before = _snapshot(out)
    assert first["global_step"] == 4 and (out / MARKER).is_file()
    with caplog.at_level(logging.INFO):
        again = _run(_args(shared_data, out, "--resume_from_checkpoint", "last"))
    assert "already finished" in caplog.text
    assert again["global_step"] == 4
    assert again["eval"] == pytest.approx(first["eval"]) and again["eval"]
    assert again["train"]["train_loss"] == pytest.approx(first["train"]["train_loss"])
    assert _snapshot(out) == before  # nothing written: final model bytes, trainer_state, checkpoints
    assert not (out / "checkpoint-5").exists() and not (out / "checkpoint-6").exists()


def test_a_killed_final_save_resumes_to_the_final_save_without_an_extra_step(finished_run, shared_data, tmp_path):
    src, _ = finished_run
    out = _copy(src, tmp_path / "run")
    (out / MARKER).unlink()  # killed after trainer_state.json, before the marker
    (out / "model.safetensors").write_bytes(b"\0" * 10)
    result = _run(_args(shared_data, out, "--resume_from_checkpoint", "last", eval_data=False))
    assert result["global_step"] == 4
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and max(h["step"] for h in state["log_history"]) == 4
    final = VitPoseForPoseEstimation.from_pretrained(out)
    ckpt = VitPoseForPoseEstimation.from_pretrained(out / "checkpoint-4")
    for (n, a), (_, b) in zip(final.state_dict().items(), ckpt.state_dict().items()):
        assert torch.equal(a, b), n
    assert (out / MARKER).is_file()


@pytest.mark.parametrize("content", ["finished", "checkpoint_only", "final_model_only"])
def test_a_new_run_into_a_used_output_dir_is_refused(finished_run, shared_data, tmp_path, content):
    src, _ = finished_run
    out = _copy(src, tmp_path / "run")
    if content == "checkpoint_only":
        for p in out.iterdir():
            if p.name != "checkpoint-2":
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    elif content == "final_model_only":
        for p in out.iterdir():
            if p.name not in ("model.safetensors", "config.json"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    before = _snapshot(out)
    with pytest.raises(ValueError, match="overwrite_output_dir") as err:
        _run(_args(shared_data, out))
    assert str(out) in str(err.value)
    assert _snapshot(out) == before


def test_overwrite_output_dir_starts_over_and_synthetic_data_is_not_a_run(finished_run, shared_data, tmp_path):
    src, _ = finished_run
    out = _copy(src, tmp_path / "run")
    (out / "checkpoint-2" / "junk.txt").write_text("old run")
    result = _run(_args(shared_data, out, "--overwrite_output_dir", "True", "--max_steps", "2", eval_data=False))
    assert result["global_step"] == 2
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]  # checkpoint-4 of the old run gone
    assert not (out / "checkpoint-2" / "junk.txt").exists()
    assert json.loads((out / MARKER).read_text())["global_step"] == 2

    # a folder holding only the synthetic data a run writes for itself is not a run
    fresh = tmp_path / "fresh"
    (fresh / "synthetic_data" / "train").mkdir(parents=True)
    (fresh / "synthetic_data" / "train" / "x.json").write_text("{}")
    assert _run(_args(shared_data, fresh, "--max_steps", "1", "--save_steps", "100", eval_data=False))["global_step"] == 1


# ----------------------------------------------------------------------------- 3. corrupt checkpoints
def _corrupt(ckpt: Path, kind: str) -> str:
    """Damage one file of `ckpt`; returns the file name a message must name."""
    if kind == "truncated_model":
        data = (ckpt / "model.safetensors").read_bytes()
        (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
        return "model.safetensors"
    if kind == "model_header":
        data = bytearray((ckpt / "model.safetensors").read_bytes())
        data[8:16] = b"garbage!"  # same size, broken JSON header
        (ckpt / "model.safetensors").write_bytes(bytes(data))
        return "model.safetensors"
    if kind in ("optimizer", "scheduler"):
        path = ckpt / f"{kind}.pt"
        size = path.stat().st_size
        path.write_bytes(b"x" * size)  # same size: only reading it can tell
        return f"{kind}.pt"
    if kind == "trainer_state":
        path = ckpt / "trainer_state.json"
        text = path.read_text()
        path.write_text(text[:-1] + " " if text.endswith("}") else text[:5] + "\n")  # same size, no closing brace
        return "trainer_state.json"
    if kind == "no_marker":
        (ckpt / MARKER).unlink()
        return MARKER
    raise AssertionError(kind)


KINDS = ["truncated_model", "model_header", "optimizer", "scheduler", "trainer_state", "no_marker"]


@pytest.mark.parametrize("kind", KINDS)
def test_find_last_complete_checkpoint_skips_a_damaged_newest_one_naming_the_file(finished_run, tmp_path, caplog, kind):
    from vitpose_hf.training.trainer import find_last_complete_checkpoint

    src, _ = finished_run
    out = _copy(src, tmp_path / "run")
    name = _corrupt(out / "checkpoint-4", kind)
    with caplog.at_level(logging.WARNING):
        assert find_last_complete_checkpoint(out) == str(out / "checkpoint-2")
    assert f"checkpoint-4{os.sep}{name}" in caplog.text or (kind == "no_marker" and "checkpoint-4" in caplog.text and MARKER in caplog.text)


@pytest.mark.parametrize("kind", ["truncated_model", "optimizer", "scheduler", "trainer_state"])
def test_explicit_resume_from_a_damaged_checkpoint_names_the_file(finished_run, shared_data, tmp_path, kind):
    src, _ = finished_run
    out = _copy(src, tmp_path / "run")
    name = _corrupt(out / "checkpoint-4", kind)
    with pytest.raises(ValueError) as err:
        _run(_args(shared_data, out, "--resume_from_checkpoint", str(out / "checkpoint-4"), "--max_steps", "6"))
    assert name in str(err.value) and "checkpoint-4" in str(err.value)
    assert type(err.value) is ValueError  # not safetensors' SafetensorError / an UnpicklingError


def test_resume_last_with_a_truncated_newest_checkpoint_resumes_from_the_previous_one(finished_run, shared_data, tmp_path, caplog):
    src, _ = finished_run
    out = _copy(src, tmp_path / "run")
    for name in (MARKER, "model.safetensors", "trainer_state.json"):  # the run was killed after checkpoint-4
        (out / name).unlink()
    _corrupt(out / "checkpoint-4", "truncated_model")
    with caplog.at_level(logging.WARNING):
        result = _run(_args(shared_data, out, "--resume_from_checkpoint", "last", eval_data=False))
    assert f"checkpoint-4{os.sep}model.safetensors" in caplog.text
    assert result["global_step"] == 4
    log = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert sorted(h["step"] for h in log if "loss" in h) == [1, 2, 3, 4]  # 3 and 4 trained again from checkpoint-2
    from vitpose_hf.training.trainer import check_complete_save

    assert check_complete_save(out / "checkpoint-4") is None  # re-saved complete
    VitPoseForPoseEstimation.from_pretrained(out / "checkpoint-4")


# ----------------------------------------------------------------------------- 2. atomic saves, rotation
def _tiny_trainer(out: Path, **arg_overrides):
    from transformers.trainer_callback import ExportableState, TrainerState

    from vitpose_hf import VitPoseTopDownImageProcessor
    from vitpose_hf.training.arguments import PoseTrainingArguments
    from vitpose_hf.training.trainer import VitPoseTrainer

    torch.manual_seed(0)
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs()))
    kwargs = dict(output_dir=str(out), use_cpu=True, report_to="none", save_total_limit=10, max_steps=10,
                  disable_tqdm=True, eval_strategy="no")
    kwargs.update(arg_overrides)
    args = PoseTrainingArguments(**kwargs)
    trainer = VitPoseTrainer(model=model, args=args, processing_class=VitPoseTopDownImageProcessor(size={"height": 64, "width": 48}))
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    trainer.state = TrainerState(stateful_callbacks=[
        cb for cb in trainer.callback_handler.callbacks + [trainer.control] if isinstance(cb, ExportableState)
    ])
    return trainer


def _set_step(trainer, step: int):
    trainer.state.global_step = step
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.01 * step)


def test_rotation_never_deletes_the_newest_complete_checkpoint(tmp_path):
    out = tmp_path / "out"
    trainer = _tiny_trainer(out, save_total_limit=1)
    _set_step(trainer, 2)
    trainer._save_checkpoint(trainer.model, None)
    stale = out / "checkpoint-9"  # a partial folder (killed run of an older version), newer in every ordering
    stale.mkdir()
    (stale / "config.json").write_text("{")
    future = time.time() + 3600
    os.utime(stale, (future, future))
    _set_step(trainer, 4)
    trainer._save_checkpoint(trainer.model, None)
    assert (out / "checkpoint-4" / "model.safetensors").is_file()
    from vitpose_hf.training.trainer import find_last_complete_checkpoint

    assert find_last_complete_checkpoint(out) == str(out / "checkpoint-4")
    assert not (out / "checkpoint-2").exists()  # the limit still applies to complete checkpoints


_EVENTS = ("replace", "rename", "remove", "unlink", "rmdir", "fsync")


def _save_child(trainer, kill_at: int | None, count_file: str) -> None:
    """In a forked child: count file-system events (opening a file for writing, closing it, replace,
    rename, remove, fsync) during a checkpoint save + final save; `os._exit` just before event
    `kill_at` (buffered data of an open file is lost then: a torn write)."""
    import builtins

    torch.set_num_threads(1)
    count = [0]

    def event():
        count[0] += 1
        if kill_at is not None and count[0] == kill_at:
            os._exit(17)

    def wrap(fn):
        def inner(*a, **k):
            event()
            return fn(*a, **k)
        return inner

    for name in _EVENTS:
        setattr(os, name, wrap(getattr(os, name)))
    real_open = builtins.open

    class Tracked:
        def __init__(self, f):
            self._f = f

        def __getattr__(self, item):
            return getattr(self._f, item)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

        def close(self):
            event()
            self._f.close()

    def tracked_open(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+"):
            event()
            return Tracked(real_open(file, mode, *a, **k))
        return real_open(file, mode, *a, **k)

    builtins.open = tracked_open
    trainer._save_checkpoint(trainer.model, None)
    trainer.save_final()
    builtins.open = real_open
    with real_open(count_file, "w") as f:
        f.write(str(count[0]))
    os._exit(0)


def _check_state(out: Path, new_weights: dict, old_step: int, new_step: int) -> str:
    """'old' / 'new' for a consistent state, else an AssertionError."""
    from safetensors.torch import load_file

    from vitpose_hf.training.trainer import check_complete_save, find_last_complete_checkpoint

    # every visible checkpoint folder is complete: a save never leaves a half-written one in sight
    for ckpt in out.glob("checkpoint-*"):
        assert check_complete_save(ckpt) is None, (ckpt, check_complete_save(ckpt))
    last = find_last_complete_checkpoint(out)
    assert last in (str(out / f"checkpoint-{old_step}"), str(out / f"checkpoint-{new_step}")), last
    if last.endswith(f"-{new_step}"):
        got = load_file(os.path.join(last, "model.safetensors"))
        assert all(torch.equal(got[k], v) for k, v in new_weights.items())
    finished = check_complete_save(out) is None
    if finished:  # the final save is whole: its model is the new one, its state is the new step
        assert last.endswith(f"-{new_step}")
        got = load_file(out / "model.safetensors")
        assert all(torch.equal(got[k], v) for k, v in new_weights.items())
        assert json.loads((out / "trainer_state.json").read_text())["global_step"] == new_step
        json.loads((out / "config.json").read_text())
        VitPoseForPoseEstimation.from_pretrained(out)
        return "new"
    return "new_checkpoint" if last.endswith(f"-{new_step}") else "old"


def test_a_kill_at_any_point_of_a_save_leaves_the_old_or_the_new_complete_state(tmp_path):
    base = tmp_path / "base"
    trainer = _tiny_trainer(base)
    _set_step(trainer, 2)
    trainer._save_checkpoint(trainer.model, None)
    _set_step(trainer, 4)
    new_weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    ctx = multiprocessing.get_context("fork")

    def run_child(kill_at, out):
        shutil.copytree(base, out)
        trainer.args.output_dir = str(out)
        count_file = str(tmp_path / "count.txt")
        proc = ctx.Process(target=_save_child, args=(trainer, kill_at, count_file))
        proc.start()
        proc.join(60)
        assert proc.exitcode == (0 if kill_at is None else 17), proc.exitcode
        return int(Path(count_file).read_text()) if kill_at is None else None

    total = run_child(None, tmp_path / "full")
    assert _check_state(tmp_path / "full", new_weights, 2, 4) == "new"
    assert total >= 10, total
    points = sorted({1 + round(i * (total - 1) / 15) for i in range(16)})
    outcomes = {}
    for kill_at in points:
        out = tmp_path / f"kill{kill_at}"
        run_child(kill_at, out)
        outcomes[kill_at] = _check_state(out, new_weights, 2, 4)
    assert len(points) >= 10
    # the kills covered the states before, between and after the two saves
    assert outcomes[points[0]] == "old" and set(outcomes.values()) >= {"old", "new_checkpoint"}, outcomes


# ----------------------------------------------------------------------------- 4. --backbone_init with a full official .pth
def test_backbone_init_accepts_a_full_official_checkpoint(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_convert import _random_model, _to_official

    from vitpose_hf.training.build import load_backbone_init

    source = _random_model()
    official = _to_official(source)  # backbone.patch_embed..., backbone.blocks.N..., keypoint_head...
    assert any(k.startswith("keypoint_head.") for k in official)
    path = tmp_path / "vitpose_small_coco.pth"
    torch.save({"state_dict": official, "meta": {"epoch": 210}}, path)
    torch.manual_seed(5)
    target = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(num_labels=5)))
    head_before = target.head.conv.weight.clone()
    report = load_backbone_init(target, str(path))
    assert report["loaded"] > 0 and report["missing"] == []
    assert any(k.startswith("keypoint_head.") for k in report["unexpected"])
    for (name, a), (_, b) in zip(source.backbone.state_dict().items(), target.backbone.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(target.head.conv.weight, head_before)
