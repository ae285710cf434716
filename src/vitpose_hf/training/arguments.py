"""Command-line / JSON arguments of the training run (`examples/run_pose.py`, `vitpose-hf train`).

Three dataclasses for `transformers.HfArgumentParser`: `ModelArguments`, `DataArguments` and
`PoseTrainingArguments` (a `TrainingArguments` whose defaults are the official ViTPose recipe:
AdamW lr 5e-4, weight decay 0.1, betas (0.9, 0.999), grad clip 1.0, layer-wise lr decay, warmup +
step schedule, evaluation with COCO AP and the best checkpoint kept).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from typing import Sequence

from transformers import HfArgumentParser, TrainingArguments
from transformers.trainer_utils import IntervalStrategy

__all__ = [
    "ModelArguments", "DataArguments", "PoseTrainingArguments", "OFFLINE_MODEL", "offline_default_args",
    "parse_training_args", "finalise_training_args",
]  # fmt: skip

logger = logging.getLogger(__name__)

# The offline default model: a ViTPose small enough to learn the synthetic data on two shared CPU
# cores. 128x96 input, patch 8 (1/8 features, the paper's resolution variant): a 16x12 token grid,
# 96 wide, 4 blocks, then two deconvolutions to a 64x48 heatmap (half the input resolution, twice
# the usual 1/4: at this small input the finer heatmap is what makes AP at the strict OKS
# thresholds reachable, docs/performance.md has the comparison).
OFFLINE_MODEL = dict(
    image_size=(128, 96), patch_size=8, hidden_size=96, num_hidden_layers=4, num_attention_heads=4,
    drop_path_rate=0.0, decoder_hidden_size=64, num_deconv_layers=2,
)  # fmt: skip


@dataclass
class ModelArguments:
    """What model to train."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Checkpoint folder (ours or transformers' VitPose) to fine-tune."}
    )
    preset: str | None = field(
        default=None,
        metadata={
            "help": "Model size when training from scratch: small, base, large, huge, giant (+ -simple / -plus), "
            "or 'offline' for the small offline default (used when neither this nor a checkpoint is given)."
        },
    )
    backbone_init: str | None = field(
        default=None,
        metadata={
            "help": "Checkpoint whose backbone initialises ours (e.g. an MAE-pretrained encoder): a folder "
            "or a .safetensors/.bin/.pth file; backbone.* / encoder keys are loaded, missing and "
            "unexpected keys are reported."
        },
    )
    image_size: str | None = field(default=None, metadata={"help": "Input 'H,W' (default: the model's)."})
    drop_path_rate: float | None = field(default=None, metadata={"help": "Override the stochastic depth rate."})
    use_simple_decoder: bool | None = field(default=None, metadata={"help": "Simple head instead of the classic one."})
    config_overrides: str | None = field(
        default=None, metadata={"help": 'JSON dict of extra VitPoseConfig fields, e.g. \'{"attention_type": "window"}\'.'}
    )
    trainable: str = field(
        default="all",
        metadata={"help": "Parameters to train: all, attention, ffn, head, last_k_blocks:N (join with '+')."},
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank (0 = no LoRA; needs peft)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_target_modules: str = field(
        default="query,value", metadata={"help": "LoRA targets among query,key,value,dense,fc1,fc2."}
    )


@dataclass
class DataArguments:
    """What data to train and evaluate on."""

    dataset: str | None = field(
        default=None,
        metadata={"help": "'synthetic' for the generated offline dataset (the default when no annotations are given)."},
    )
    train_annotations: str | None = field(default=None, metadata={"help": "Training annotation file."})
    train_images: str | None = field(default=None, metadata={"help": "Training image folder."})
    train_dataset_dir: str | None = field(
        default=None,
        metadata={"help": "A `datasets` folder (save_to_disk) of person rows, e.g. load_coco_keypoints(..., "
                  "images='embed'): trained from as it is (its `image` column or `image_path`)."},
    )
    eval_annotations: str | None = field(default=None, metadata={"help": "Evaluation annotation file (COCO format)."})
    eval_images: str | None = field(default=None, metadata={"help": "Evaluation image folder."})
    eval_detections: str | None = field(
        default=None, metadata={"help": "Person detections (COCO results json) for evaluation; default: ground-truth boxes."}
    )
    annotation_format: str = field(default="coco", metadata={"help": "coco, aic, crowdpose or mpii."})
    keypoint_schema: str | None = field(
        default=None, metadata={"help": "Keypoint schema name (default: from the annotation categories)."}
    )
    datasets: str | None = field(
        default=None,
        metadata={
            "help": "Multi-dataset training: comma-separated name:annotations:images[:ratio] entries, e.g. "
            "coco:a.json:imgs:1.0,aic:b.json:imgs2:0.5,mpii:c.json:imgs3:0.5. name is the format/schema "
            "(coco, aic, mpii, crowdpose); the first entry is the main head (dataset index 0), every "
            "other one gets its own head; ratios set each dataset's share of the training samples."
        },
    )
    synthetic_train_images: int = field(default=500, metadata={"help": "Synthetic training images."})
    synthetic_eval_images: int = field(default=50, metadata={"help": "Synthetic held-out images."})
    synthetic_dir: str | None = field(
        default=None, metadata={"help": "Where the synthetic data is written (default: <output_dir>/synthetic_data)."}
    )
    augmentation: bool = field(default=True, metadata={"help": "Official train-time augmentation (False: plain crops)."})
    sigma: float = field(default=2.0, metadata={"help": "Gaussian sigma of the target heatmaps (heatmap pixels)."})
    use_udp: bool = field(default=True, metadata={"help": "UDP crops and targets (ViTPose) instead of plain ones."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only this many training persons."})
    flip_test: bool | None = field(
        default=True,
        metadata={"help": "Flip test during evaluation (average with the mirrored crops' heatmaps, as ViTPose "
                  "evaluates); null in a JSON config: on only when training with augmentation."},
    )


@dataclass
class PoseTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the official ViTPose recipe as defaults, plus the schedule's knobs."""

    output_dir: str | None = field(default="vitpose-output", metadata={"help": "Where checkpoints and the model go."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Base AdamW learning rate (heads; 5e-4 official)."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (0.1 official)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (1.0 official)."})
    warmup_steps: float = field(
        default=500, metadata={"help": "Linear warmup iterations (official 500), capped at warmup_max_fraction of the run."}
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per device."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Evaluation batch size per device."})
    logging_steps: float = field(default=25, metadata={"help": "Log every N steps."})
    eval_strategy: str = field(default="steps", metadata={"help": "no, steps or epoch (turned off without eval data)."})
    eval_steps: float | None = field(default=250, metadata={"help": "Evaluate (COCO AP) every N steps."})
    save_steps: float = field(default=250, metadata={"help": "Save a checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep at most N checkpoints (+ the best)."})
    load_best_model_at_end: bool = field(
        default=False,
        metadata={"help": "End with the best checkpoint (by AP) instead of the last one; the best one is kept "
                  "among the checkpoints either way. Needs save_steps a multiple of eval_steps."},
    )
    metric_for_best_model: str | None = field(default="AP", metadata={"help": "Metric that picks the best checkpoint."})
    greater_is_better: bool | None = field(default=True, metadata={"help": "Larger metric is better."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep dataset columns (needed by the transform)."})
    layer_decay: float | None = field(
        default=None, metadata={"help": "Layer-wise lr decay rate (default: per model size, 0.75 for B, 0.8 for S/L)."}
    )
    lr_schedule: str = field(
        default="official",
        metadata={"help": "'official' (warmup + step decay x0.1 at 170/210 and 200/210 of the run) or 'trainer' "
                  "(transformers' lr_scheduler_type)."},
    )
    lr_milestones: str = field(default="0.8095238,0.9523810", metadata={"help": "Step-decay points as fractions of the run."})
    lr_gamma: float = field(default=0.1, metadata={"help": "Step-decay factor."})
    warmup_start_factor: float = field(default=0.001, metadata={"help": "lr multiplier at the first warmup step."})
    warmup_max_fraction: float = field(default=0.1, metadata={"help": "Warmup never exceeds this fraction of the run."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Delete an earlier run's checkpoints, model and results in output_dir and start over "
                  "(without it, a used output_dir is refused unless --resume_from_checkpoint is given)."},
    )


def offline_default_args() -> dict:
    """The arguments of the run made by `run_pose.py` with no arguments (documented in docs/training.md).

    A ViTPose of `OFFLINE_MODEL` size trained from scratch on 3000 synthetic images (~6500 persons;
    50 more images held out), 3000 steps of batch 16 with the official schedule scaled to that
    length (warmup 300 steps, decay x0.1 at steps 2429 and 2857), lr 2e-3 and no layer decay
    (nothing is pre-trained), plain crops (the generator already randomises poses, sizes, colours
    and occluders; the official augmentation slows a run this short down), evaluated with COCO AP on
    ground-truth boxes with the flip test every 250 steps. It resumes its own output folder
    (`resume_from_checkpoint="last"`): run again, a killed run continues from its last complete
    checkpoint and a finished one returns its saved result without training.
    """
    return {
        "preset": "offline",
        "dataset": "synthetic",
        "synthetic_train_images": 3000,
        "output_dir": "vitpose-offline",
        "max_steps": 3000,
        "per_device_train_batch_size": 16,
        "learning_rate": 2e-3,
        "layer_decay": 1.0,
        "augmentation": False,
        "eval_steps": 250,
        "save_steps": 250,
        "logging_steps": 50,
        "dataloader_num_workers": 0,
        "seed": 0,
        "resume_from_checkpoint": "last",
    }


def parse_training_args(argv: Sequence[str] | None = None):
    """Parse `argv` (list of strings; a single `*.json` means a config file; empty means the offline
    default) into `(ModelArguments, DataArguments, PoseTrainingArguments)`."""
    parser = HfArgumentParser((ModelArguments, DataArguments, PoseTrainingArguments))
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        logger.info("no arguments: the offline default run %s", offline_default_args())
        return parser.parse_dict(offline_default_args())
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])
    if argv[0].endswith(".json"):
        # a config file plus command-line overrides
        with open(argv[0], encoding="utf-8") as f:
            base = json.load(f)
        args = [item for key, value in base.items() for item in _as_cli(key, value)]
        return parser.parse_args_into_dataclasses(args=args + argv[1:], look_for_args_file=False)
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)


def _as_cli(key: str, value) -> list[str]:
    if isinstance(value, bool):
        return [f"--{key}", str(value)]
    if isinstance(value, (list, tuple)):
        return [f"--{key}", *[str(v) for v in value]]
    if value is None:
        return []
    return [f"--{key}", str(value)]


def finalise_training_args(training_args: PoseTrainingArguments, has_eval: bool, multi_head: bool) -> PoseTrainingArguments:
    """Adjust the arguments to the data: evaluation off without eval data, save steps aligned with
    eval steps for best-checkpoint keeping, unused-parameter detection for multi-head DDP."""
    if not has_eval and training_args.eval_strategy != IntervalStrategy.NO:
        logger.info("no evaluation data: evaluation and best-checkpoint selection are off")
        training_args.eval_strategy = IntervalStrategy.NO
        training_args.load_best_model_at_end = False
        training_args.metric_for_best_model = None
    if (
        has_eval and training_args.load_best_model_at_end and training_args.eval_strategy == IntervalStrategy.STEPS
        and training_args.eval_steps and training_args.save_steps % training_args.eval_steps
    ):
        logger.info("save_steps %s -> %s (a multiple of eval_steps is needed to keep the best checkpoint)",
                    training_args.save_steps, training_args.eval_steps)
        training_args.save_steps = training_args.eval_steps
    if multi_head and training_args.ddp_find_unused_parameters is None:
        training_args.ddp_find_unused_parameters = True  # heads of datasets absent from a batch get no gradient
    return training_args
