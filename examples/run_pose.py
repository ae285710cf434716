#!/usr/bin/env python
"""Train ViTPose with the Hugging Face Trainer: COCO-format keypoints, several datasets, or offline.

    python examples/run_pose.py                                   # offline default: small ViTPose on
                                                                  # synthetic data, then prints AP
    python examples/run_pose.py config.json                       # every option from a JSON file
    python examples/run_pose.py --preset base --backbone_init mae_ckpt/ \
        --train_annotations person_keypoints_train2017.json --train_images train2017/ \
        --eval_annotations person_keypoints_val2017.json --eval_images val2017/ \
        --output_dir vitpose-b-coco --num_train_epochs 210 --per_device_train_batch_size 64
    accelerate launch --num_processes 8 examples/run_pose.py ...  # or torchrun --nproc_per_node 8
    torchrun --nproc_per_node 2 examples/run_pose.py --use_cpu ...                   # 2 CPU processes (gloo)
    accelerate launch --multi_gpu --num_processes 2 examples/run_pose.py --use_cpu ...  # same via accelerate
    # (not `accelerate launch --cpu --num_processes 2`: that starts ONE process, see docs/training.md)

Options: `ModelArguments`, `DataArguments` and `PoseTrainingArguments` in
`vitpose_hf.training.arguments` (all of `transformers.TrainingArguments`, with the official ViTPose
recipe as defaults); `--help` lists them. The output folder loads with
`VitPoseForPoseEstimation.from_pretrained(out)` and `pipeline("keypoint-detection", model=out)`.
The run itself is `vitpose_hf.training.run.run_training`, shared with `vitpose-hf train`.
"""

import logging
import sys

import transformers
from transformers import HfArgumentParser

from vitpose_hf.training.arguments import DataArguments, ModelArguments, PoseTrainingArguments
from vitpose_hf.training.command import parse_training_args, report_metrics
from vitpose_hf.training.run import run_training


def main() -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        HfArgumentParser((ModelArguments, DataArguments, PoseTrainingArguments)).print_help()
        return 0
    model_args, data_args, training_args = parse_training_args(sys.argv[1:])
    if training_args.process_index != 0:
        logging.getLogger().setLevel(logging.WARNING)
    transformers.utils.logging.set_verbosity(logging.INFO if training_args.process_index == 0 else logging.WARNING)
    try:
        result = run_training(model_args, data_args, training_args)
    except ValueError as err:  # a bad argument or input, named by the message (e.g. a used --output_dir)
        sys.stderr.write(f"run_pose.py: error: {err}\n")
        return 2
    if training_args.process_index == 0:
        report_metrics(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
