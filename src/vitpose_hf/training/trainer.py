"""`VitPoseTrainer`: `transformers.Trainer` with the ViTPose recipe, multi-dataset batches and COCO AP.

What it adds to `Trainer` (each a small override, the loop itself is transformers'):

- `create_optimizer`: AdamW over `build_param_groups` (layer-wise lr decay, no weight decay for 1-D
  parameters and the model's own list);
- `create_scheduler`: the official warmup + step schedule scaled to the run (`schedule.py`), unless
  `lr_schedule="trainer"`;
- `compute_loss`: the JointsMSELoss where every sample only counts its own head's keypoints (a
  multi-dataset batch pads labels to the largest K; padded channels are neither predicted nor
  counted); for a single-dataset model it equals the model's own loss;
- `evaluate`: the eval loss of the crops plus COCO keypoint AP of the eval annotation file
  (`vitpose_hf.evaluation.evaluate_model`, ground-truth boxes or given detections), computed on
  the main process and broadcast, so `metric_for_best_model="AP"` keeps the best checkpoint.

`model_accepts_loss_kwargs` is forced off: the model's forward takes `**kwargs`, which would make
`Trainer` multiply the loss by the number of processes (it expects token-count normalisation).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from ..data import PoseDataCollator
from ..evaluation import evaluate_model
from ..jsonio import write_json_atomic
from ..keypoint_schemas import head_num_keypoints
from ..losses import joints_mse_loss
from ..modelcard import write_model_card
from .param_groups import build_param_groups, unwrap_vitpose
from .schedule import official_lr_lambda

logger = logging.getLogger(__name__)

__all__ = [
    "VitPoseTrainer",
    "PaddingPoseCollator",
    "MultiSchemaTransform",
    "multi_dataset_pose_loss",
    "batch_keypoint_counts",
    "SetEpochCallback",
    "find_last_complete_checkpoint",
    "check_complete_save",
    "read_complete_marker",
    "COMPLETE_MARKER",
]


# ----------------------------------------------------------------------------- loss
def multi_dataset_pose_loss(
    heatmaps: torch.Tensor,
    labels: torch.Tensor,
    target_weight: torch.Tensor | None,
    num_keypoints: torch.Tensor | Sequence[int] | None = None,
) -> torch.Tensor:
    """`vitpose_hf.losses.joints_mse_loss` with per-sample keypoint counts, which default to the
    channels the heatmaps and the labels share (the name training code used before the merge).

    Args:
        heatmaps: `(B, Kp, h, w)`; labels: `(B, K, h, w)` padded with zeros past each sample's K;
        target_weight: `(B, K)` / `(B, K, 1)` or None; num_keypoints: `(B,)` or None.
    """
    if num_keypoints is None:
        num_keypoints = [min(heatmaps.shape[1], labels.shape[1])] * heatmaps.shape[0]
    return joints_mse_loss(heatmaps, labels, target_weight, num_keypoints)


def batch_keypoint_counts(model: nn.Module, dataset_index: torch.Tensor | None) -> torch.Tensor | None:
    """`(B,)` keypoint count of each sample's head for a model with several heads, else None (every
    sample uses all channels). `model` may be wrapped (DDP, compiled)."""
    vitpose = unwrap_vitpose(model)
    if dataset_index is None or not len(getattr(vitpose, "extra_heads", ())):
        return None
    index = dataset_index.reshape(-1).long()
    config = vitpose.config
    size = max([int(h["dataset_index"]) for h in config.head_specs()] + ([int(index.max())] if index.numel() else [])) + 1
    # one entry per index; an index without its own head gets the main head's count
    lookup = torch.tensor([head_num_keypoints(config, i) for i in range(size)], dtype=torch.long, device=index.device)
    return lookup[index]


# ----------------------------------------------------------------------------- data plumbing
@dataclass
class PaddingPoseCollator:
    """`PoseDataCollator` that first zero-pads `labels` `(K_i, h, w)` and `target_weight` `(K_i,)` of
    every sample to the batch's largest K (multi-dataset batches). Output as `PoseDataCollator`:
    `pixel_values` `(B, 3, H, W)`, `labels` `(B, K, h, w)`, `target_weight` `(B, K)`, `dataset_index` `(B,)`.
    """

    meta_keys: Sequence[str] = field(default_factory=tuple)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if features and "labels" in features[0]:
            max_k = max(int(torch.as_tensor(f["labels"]).shape[0]) for f in features)
            padded = []
            for f in features:
                labels = torch.as_tensor(f["labels"])
                extra = max_k - labels.shape[0]
                if extra:
                    f = dict(f)
                    f["labels"] = torch.cat([labels, labels.new_zeros((extra,) + labels.shape[1:])])
                    tw = torch.as_tensor(f["target_weight"])
                    f["target_weight"] = torch.cat([tw, tw.new_zeros((extra,) + tw.shape[1:])])
                padded.append(f)
            features = padded
        return PoseDataCollator(meta_keys=self.meta_keys)(features)


class MultiSchemaTransform:
    """Route each row of a batch to the `TopDownTransform` of its `dataset_index` (for a concatenated
    multi-dataset `datasets.Dataset`), keeping the row order.

    Args:
        transforms: `{dataset_index: TopDownTransform}`.
    """

    def __init__(self, transforms: dict[int, Callable]):
        if not transforms:
            raise ValueError("MultiSchemaTransform needs at least one transform")
        self.transforms = dict(transforms)

    def set_epoch(self, epoch: int) -> None:
        for t in self.transforms.values():
            if hasattr(t, "set_epoch"):
                t.set_epoch(epoch)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        n = len(next(iter(batch.values()))) if batch else 0  # any column: rows may lack image_path
        indices = [int(d) for d in batch.get("dataset_index", [0] * n)]
        groups: dict[int, list[int]] = {}
        for row, d in enumerate(indices):
            groups.setdefault(d, []).append(row)
        unknown = set(groups) - set(self.transforms)
        if unknown:
            raise ValueError(f"rows with dataset_index {sorted(unknown)} have no transform (known {sorted(self.transforms)})")
        out: dict[str, list] = {}
        for d, rows in groups.items():
            part = self.transforms[d]({k: [v[r] for r in rows] for k, v in batch.items()})
            for key, values in part.items():
                column = out.setdefault(key, [None] * n)
                for r, value in zip(rows, values):
                    column[r] = value
        return {k: v for k, v in out.items() if all(x is not None for x in v)}


class SetEpochCallback(TrainerCallback):
    """Tell the train transform which epoch it is (it mixes the epoch into its per-sample seeds)."""

    def __init__(self, transform):
        self.transform = transform

    def on_epoch_begin(self, args, state, control, **kwargs):
        if hasattr(self.transform, "set_epoch"):
            self.transform.set_epoch(int(state.epoch or 0))


# ----------------------------------------------------------------------------- complete saves
COMPLETE_MARKER = "vitpose_complete.json"
_PARTIAL_SUFFIX = ".partial"
_OLD_SUFFIX = ".old"
_RUN_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "config.json",
    "preprocessor_config.json", "training_args.bin", "trainer_state.json", "train_results.json",
    "eval_results.json", "all_results.json", COMPLETE_MARKER,
)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _listed_files(folder: str) -> list[str]:
    """Relative paths of the regular files under `folder` (sub-folders included), sorted."""
    out = []
    for root, _, files in os.walk(folder):
        for name in files:
            out.append(os.path.relpath(os.path.join(root, name), folder))
    return sorted(out)


def _fsync_path(path: str) -> None:
    """Flush a file or folder entry to the disk (folders: where the OS allows it)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_complete_marker(folder: str | os.PathLike, files: Sequence[str], **info: Any) -> str:
    """Flush `files` (paths relative to `folder`) to the disk, then write `COMPLETE_MARKER` listing
    each one's size and sha256 (temp name + `os.replace`, so the marker itself is never torn).

    Returns:
        the marker's path.
    """
    folder = os.fspath(folder)
    listing = {}
    for rel in files:
        path = os.path.join(folder, rel)
        _fsync_path(path)
        listing[rel] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
    target = write_json_atomic(os.path.join(folder, COMPLETE_MARKER), {"format": 1, **info, "files": listing}, indent=1)
    _fsync_path(folder)
    return str(target)


def read_complete_marker(folder: str | os.PathLike) -> dict | None:
    """The parsed `COMPLETE_MARKER` of `folder`, or None when absent or unreadable."""
    try:
        with open(os.path.join(os.fspath(folder), COMPLETE_MARKER), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("files"), dict) else None


def check_complete_save(folder: str | os.PathLike, verify_contents: bool = True) -> str | None:
    """Why `folder` (a `checkpoint-N` or a run's output folder) is not a complete save, or None.

    Complete means: `COMPLETE_MARKER` is present and readable, and every file it lists exists with
    the recorded size and (with `verify_contents`) the recorded sha256. The problem names the file.
    """
    folder = os.fspath(folder)
    marker = os.path.join(folder, COMPLETE_MARKER)
    if not os.path.isdir(folder):
        return f"{folder} does not exist"
    if not os.path.isfile(marker):
        return f"{marker} is missing (the save did not finish, or another tool wrote this folder)"
    record = read_complete_marker(folder)
    if record is None:
        return f"{marker} is not a readable completion record"
    for rel, meta in record["files"].items():
        path = os.path.join(folder, rel)
        if not os.path.isfile(path):
            return f"{path} is missing"
        size = os.path.getsize(path)
        if size != meta.get("size"):
            return f"{path} has {size} bytes, {meta.get('size')} were saved (truncated or overwritten)"
        if verify_contents and _sha256(path) != meta.get("sha256"):
            return f"{path} differs from what was saved (sha256 mismatch: corrupted or overwritten)"
    return None


def _checkpoint_dirs(output_dir: str) -> list[tuple[int, str]]:
    """`(step, path)` of every `checkpoint-N` folder, by step."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        if not name.startswith("checkpoint-"):
            continue
        try:
            step = int(name.split("-", 1)[1])
        except ValueError:
            continue
        path = os.path.join(output_dir, name)
        if os.path.isdir(path):
            found.append((step, path))
    return sorted(found)


def find_last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The `checkpoint-N` folder with the largest N that passes `check_complete_save` (marker and
    every file's size and checksum); each newer folder that fails is skipped with a warning naming
    the damaged or missing file. None when there is none."""
    for _, path in reversed(_checkpoint_dirs(os.fspath(output_dir))):
        problem = check_complete_save(path)
        if problem is None:
            return path
        logger.warning("skipping %s: %s", path, problem)
    return None


def publish_folder(staging: str, final: str) -> None:
    """Move the fully written folder `staging` to `final` (same parent). An existing `final` is
    first renamed aside and removed afterwards, so `final` never holds a mix of two saves."""
    old = None
    if os.path.exists(final):
        old = final + _OLD_SUFFIX
        if os.path.exists(old):
            shutil.rmtree(old)
        os.rename(final, old)
    os.rename(staging, final)
    _fsync_path(os.path.dirname(final) or ".")
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_run_outputs(output_dir: str | os.PathLike) -> list[str]:
    """Delete what a training run writes into `output_dir` (checkpoints, partial saves, the final
    model, state, results and marker); other files are left alone. Returns the removed names."""
    output_dir = os.fspath(output_dir)
    removed = []
    if not os.path.isdir(output_dir):
        return removed
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        ours_dir = name.startswith(("checkpoint-", ".checkpoint-", ".final")) and os.path.isdir(path)
        if ours_dir:
            shutil.rmtree(path)
            removed.append(name)
        elif name in _RUN_FILES and os.path.isfile(path):
            os.remove(path)
            removed.append(name)
    return removed


def describe_used_output_dir(output_dir: str | os.PathLike) -> str | None:
    """What in `output_dir` belongs to an earlier run (a description), or None when it holds none
    (missing, empty, or only the synthetic data a run generates for itself)."""
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        return None
    found = []
    if os.path.isfile(os.path.join(output_dir, COMPLETE_MARKER)):
        found.append("a finished run")
    checkpoints = _checkpoint_dirs(output_dir)
    if checkpoints:
        found.append(f"{len(checkpoints)} checkpoint(s) up to {os.path.basename(checkpoints[-1][1])}")
    files = [n for n in _RUN_FILES if n != COMPLETE_MARKER and os.path.isfile(os.path.join(output_dir, n))]
    if files:
        found.append("files " + ", ".join(files))
    return "; ".join(found) or None


# ----------------------------------------------------------------------------- trainer
class VitPoseTrainer(Trainer):
    """`Trainer` for ViTPose (see the module docstring).

    Args (beyond `Trainer`'s):
        coco_eval: optional dict for COCO AP evaluation with keys `annotation_file`, `image_dir`,
            and optionally `processor` (a `VitPoseTopDownImageProcessor`), `detection_file`, `flip_test`,
            `dataset_index`, `schema`; None: evaluation reports only the loss.
        layer_decay: layer-wise lr decay (None: the model size's official rate).
    """

    def __init__(self, *args, coco_eval: dict | None = None, layer_decay: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.coco_eval = coco_eval
        self.layer_decay = layer_decay
        # Our forward takes **kwargs; without this Trainer would scale the loss by the world size.
        self.model_accepts_loss_kwargs = False

    # ------------------------------------------------------------------ saving
    def _barrier(self) -> None:
        if self.args.world_size > 1:
            self.accelerator.wait_for_everyone()

    def _save_checkpoint(self, model, trial) -> None:
        """Save `checkpoint-N` as one unit: every file (model, config, processor, optimizer,
        scheduler, RNG states of every rank, trainer state) goes into `.checkpoint-N.partial`, the
        completion marker (sizes + sha256) is written last, then the folder is renamed to
        `checkpoint-N`. A kill at any moment leaves the previous checkpoints and at most a hidden
        partial folder; `find_last_complete_checkpoint` trusts only marked folders."""
        from transformers.trainer_callback import ExportableState
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, SaveStrategy

        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        run_dir = self._get_output_dir(trial=trial)
        final = os.path.join(run_dir, name)
        staging = os.path.join(run_dir, f".{name}{_PARTIAL_SUFFIX}")
        if self.args.should_save:
            if os.path.exists(staging):
                shutil.rmtree(staging)
            os.makedirs(staging)
        self._barrier()
        self.save_model(staging, _internal_call=True)

        if self.args.save_strategy in (SaveStrategy.STEPS, SaveStrategy.EPOCH, SaveStrategy.BEST) and self.state.best_global_step:
            best = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
            if self.state.best_global_step == self.state.global_step or os.path.exists(best):
                self.state.best_model_checkpoint = best
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(staging)
            self._save_scaler(staging)
            self._save_rng_state(staging)
        if self.args.should_save:
            for cb in [c for c in self.callback_handler.callbacks + [self.control] if isinstance(c, ExportableState)]:
                cb_name = cb.__class__.__name__
                if isinstance(self.state.stateful_callbacks.get(cb_name), list):
                    self.state.stateful_callbacks[cb_name].append(cb.state())
                else:
                    self.state.stateful_callbacks[cb_name] = cb.state()
            self.state.save_to_json(os.path.join(staging, "trainer_state.json"))
        self._barrier()  # every rank's files (RNG states, shards) are in the staging folder
        if self.args.should_save:
            write_complete_marker(staging, _listed_files(staging), global_step=self.state.global_step, kind="checkpoint")
            publish_folder(staging, final)
        self._barrier()
        if self.args.push_to_hub:
            self._push_from_checkpoint(final)
        if self.args.should_save:
            self._rotate_complete_checkpoints(run_dir)

    def _rotate_complete_checkpoints(self, run_dir: str) -> None:
        """`save_total_limit` over the complete checkpoints only, by step: the newest complete one
        and the best one are never deleted; incomplete `checkpoint-*` folders are not counted (and
        left alone, with a warning)."""
        limit = self.args.save_total_limit
        if limit is None or limit <= 0:
            return
        complete = []
        for step, path in _checkpoint_dirs(run_dir):
            problem = check_complete_save(path, verify_contents=False)
            if problem is None:
                complete.append(path)
            else:
                logger.warning("checkpoint rotation ignores %s: %s", path, problem)
        if len(complete) <= limit:
            return
        protected = {complete[-1]}
        if self.state.best_model_checkpoint:
            protected.add(os.path.normpath(self.state.best_model_checkpoint))
        excess = len(complete) - max(limit, len(protected))
        for path in complete:
            if excess <= 0:
                break
            if os.path.normpath(path) in protected:
                continue
            logger.info("deleting %s (save_total_limit=%d)", path, limit)
            shutil.rmtree(path, ignore_errors=True)
            excess -= 1

    def save_final(self, output_dir: str | None = None, **info: Any) -> None:
        """Save the final model, config, processor, training arguments and trainer state into
        `output_dir` (default `args.output_dir`) so that a kill never leaves a folder that looks
        finished: the old completion marker is removed first, the files are written into a hidden
        staging folder and `os.replace`d into place one by one, and the marker (sizes + sha256) is
        written last. Extra `info` is recorded in the marker. Call on every process."""
        output_dir = output_dir or self.args.output_dir
        staging = os.path.join(output_dir, f".final{_PARTIAL_SUFFIX}")
        if self.args.should_save:
            os.makedirs(output_dir, exist_ok=True)
            if os.path.exists(staging):
                shutil.rmtree(staging)
            os.makedirs(staging)
        self._barrier()
        self.save_model(staging)
        if self.args.should_save:
            self.state.save_to_json(os.path.join(staging, "trainer_state.json"))
            names = _listed_files(staging)
            for rel in names:
                _fsync_path(os.path.join(staging, rel))
            marker = os.path.join(output_dir, COMPLETE_MARKER)
            if os.path.exists(marker):
                os.remove(marker)
                _fsync_path(output_dir)
            for rel in names:
                target = os.path.join(output_dir, rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(os.path.join(staging, rel), target)
            shutil.rmtree(staging, ignore_errors=True)
            write_complete_marker(
                output_dir, names, global_step=self.state.global_step, kind="final",
                max_steps=int(self.args.max_steps), num_train_epochs=float(self.args.num_train_epochs), **info,
            )
        self._barrier()

    def create_model_card(self, language=None, license=None, tags=None, model_name=None, finetuned_from=None,
                          tasks=None, dataset_tags=None, dataset=None, dataset_args=None) -> None:
        """Our card (`vitpose_hf.modelcard`, library_name vitpose_hf) instead of Trainer's
        transformers card; a card the run already wrote (with its metrics) is kept."""
        if not self.is_world_process_zero():
            return
        path = os.path.join(self.args.output_dir, "README.md")
        try:
            with open(path, encoding="utf-8") as f:
                if "library_name: vitpose_hf" in f.read():
                    return
        except OSError:
            pass
        metrics = next((dict(h) for h in reversed(self.state.log_history) if "eval_AP" in h), {})
        tags = [tags] if isinstance(tags, str) else tags
        datasets = [dataset] if isinstance(dataset, str) else dataset
        model = unwrap_vitpose(self.accelerator.unwrap_model(self.model))
        write_model_card(self.args.output_dir, model.config, repo_id=self.args.hub_model_id, metrics=metrics,
                         base_model=finetuned_from, datasets=datasets, tags=tags,
                         source=f"trained for {self.state.global_step} steps with vitpose_hf's VitPoseTrainer")

    def save_metrics(self, split, metrics, combined=True):
        """As `Trainer.save_metrics`, but each json file is replaced atomically."""
        if not self.is_world_process_zero():
            return
        write_json_atomic(os.path.join(self.args.output_dir, f"{split}_results.json"), metrics, indent=4)
        if combined:
            path = os.path.join(self.args.output_dir, "all_results.json")
            try:
                with open(path, encoding="utf-8") as f:
                    all_metrics = json.load(f)
            except (OSError, ValueError):
                all_metrics = {}
            all_metrics.update(metrics)
            write_json_atomic(path, all_metrics, indent=4)

    # ------------------------------------------------------------------ optimisation
    def create_optimizer(self, model=None):
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            args = self.args
            layer_decay = self.layer_decay if self.layer_decay is not None else getattr(args, "layer_decay", None)
            groups = build_param_groups(opt_model, args.learning_rate, args.weight_decay, layer_decay)
            self.optimizer = torch.optim.AdamW(
                groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
            )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        args = self.args
        if self.lr_scheduler is None and getattr(args, "lr_schedule", "official") == "official":
            optimizer = self.optimizer if optimizer is None else optimizer
            milestones = [float(m) for m in str(getattr(args, "lr_milestones", "0.8095238,0.9523810")).split(",") if m.strip()]
            fn = official_lr_lambda(
                num_training_steps,
                warmup_steps=int(args.warmup_steps) if args.warmup_steps >= 1 else int(args.warmup_steps * num_training_steps),
                warmup_start_factor=getattr(args, "warmup_start_factor", 0.001),
                milestones=milestones,
                gamma=getattr(args, "lr_gamma", 0.1),
                warmup_max_fraction=getattr(args, "warmup_max_fraction", 0.1),
            )
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        target_weight = inputs.pop("target_weight", None)
        outputs = model(**inputs)
        if labels is None:
            raise ValueError("training batches need 'labels' (target heatmaps)")
        heatmaps = outputs["heatmaps"] if isinstance(outputs, dict) else outputs[0]
        loss = joints_mse_loss(heatmaps, labels, target_weight, batch_keypoint_counts(model, inputs.get("dataset_index")))
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad():
            loss = self.compute_loss(model, inputs).detach()
        return loss, None, None

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        metrics: dict[str, float] = {}
        if eval_dataset is not None or self.eval_dataset is not None:
            metrics.update(super().evaluate(eval_dataset, ignore_keys, metric_key_prefix))
        if self.coco_eval is not None:
            ap = self._coco_ap()
            ap = {f"{metric_key_prefix}_{k}": float(v) for k, v in ap.items()}
            self.log(ap)
            metrics.update(ap)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, ap)
        return metrics

    def _coco_ap(self) -> dict[str, float]:
        """COCO keypoint metrics on the main process, broadcast to every rank."""
        result: list[Any] = [None]
        if self.args.process_index == 0:
            start = time.time()
            model = unwrap_vitpose(self.accelerator.unwrap_model(self.model))
            was_training = model.training
            model.eval()
            try:
                result[0] = run_coco_evaluation(model, self.args.per_device_eval_batch_size, **self.coco_eval)
            finally:
                model.train(was_training)
            logger.info("COCO AP %.4f at step %d (%.1fs)", result[0].get("AP", float("nan")), self.state.global_step, time.time() - start)
        if self.args.world_size > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(result, from_process=0)
        return result[0]


def run_coco_evaluation(
    model,
    batch_size: int = 32,
    annotation_file: str | None = None,
    image_dir: str | None = None,
    processor=None,
    detection_file: str | None = None,
    flip_test: bool = True,
    dataset_index: int | None = None,
    schema: Any = None,
) -> dict[str, float]:
    """COCO AP of `model` on an annotation file via `vitpose_hf.evaluation.evaluate_model` (the
    schema's default `"coco"` and the model's main head when `schema` / `dataset_index` are None)."""
    kwargs: dict[str, Any] = dict(detection_file=detection_file, flip_test=flip_test, batch_size=batch_size,
                                  dataset_index=dataset_index)
    if schema is not None:
        kwargs["schema"] = schema
    metrics = evaluate_model(model, processor, annotation_file, image_dir, **kwargs)
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
