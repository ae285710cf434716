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

This file is the recipe: it ships inside the package as `vitpose_hf.recipes.run_pose`, and
`vitpose-hf train` runs this very `main`. The reusable parts it calls live in the library:
`vitpose_hf.training.build` (datasets and model from the arguments), `.run_state` (output folder,
resume, distributed teardown), `.outputs` (model card, predictions picture), `VitPoseTrainer`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Sequence

import torch
import transformers
from transformers import HfArgumentParser, TrainerCallback

from vitpose_hf import VitPoseTopDownImageProcessor
from vitpose_hf.training import apply_lora, apply_trainable, merge_lora
from vitpose_hf.training.arguments import (
    DataArguments,
    ModelArguments,
    PoseTrainingArguments,
    finalise_training_args,
    parse_training_args,
)
from vitpose_hf.training.build import build_model, build_train_eval_data, probe_heads
from vitpose_hf.training.outputs import report_metrics, write_predictions_picture, write_run_card
from vitpose_hf.training.run_state import (
    already_finished,
    finish_distributed,
    finish_from_last_checkpoint,
    is_unreadable_file_error,
    prepare_output_dir,
    resolve_resume,
)
from vitpose_hf.training.trainer import PaddingPoseCollator, SetEpochCallback, VitPoseTrainer

logger = logging.getLogger("run_pose")


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: PoseTrainingArguments,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict[str, Any]:
    """Train, save and evaluate one run; `callbacks` are added to the Trainer's.

    Returns:
        `{"train": train metrics, "eval": final COCO metrics or {}, "output_dir": path, "global_step": n}`
        (plus `"already_finished": True` when the output folder held this run, finished).
    """
    # ------------------------------------------------------------------ output folder and resume
    resume_arg = training_args.resume_from_checkpoint
    resume_last = isinstance(resume_arg, str) and resume_arg.lower() in ("true", "last", "latest")
    if resume_arg:
        finished = already_finished(training_args)
        if finished is not None:
            return finished
    prepare_output_dir(training_args, resuming=bool(resume_arg))
    torch.manual_seed(training_args.seed)

    # ------------------------------------------------------------------ model
    # the head layout comes from the data arguments (no image is read), the crop and heatmap
    # sizes from the model: so the model is built before the datasets
    heads = probe_heads(data_args)
    model = build_model(model_args, heads)
    image_size = tuple(model.config.image_size)
    heatmap_size = model.heatmap_size()

    # ------------------------------------------------------------------ data
    data = build_train_eval_data(data_args, image_size, heatmap_size, training_args)
    if [(i, s.num_keypoints) for i, s in data.heads] != [(i, s.num_keypoints) for i, s in heads]:
        raise RuntimeError(f"dataset heads changed between probe and load: {heads} vs {data.heads}")

    # ------------------------------------------------------------------ parameter subset / LoRA
    if model_args.lora_r > 0:
        if model_args.trainable != "all":
            logger.warning("--trainable %s is ignored with LoRA (adapters + heads are trained)", model_args.trainable)
        model = apply_lora(model, r=model_args.lora_r, alpha=model_args.lora_alpha,
                           target_modules=model_args.lora_target_modules)
    else:
        apply_trainable(model, model_args.trainable)

    # ------------------------------------------------------------------ COCO evaluation during training
    processor = VitPoseTopDownImageProcessor(size={"height": image_size[0], "width": image_size[1]})
    training_args = finalise_training_args(training_args, data.eval is not None, len(data.heads) > 1)
    coco_eval = None
    if data.eval_annotations is not None:
        coco_eval = dict(
            annotation_file=data.eval_annotations, image_dir=data.eval_images, processor=processor,
            detection_file=data_args.eval_detections,
            flip_test=data_args.augmentation if data_args.flip_test is None else data_args.flip_test,
            dataset_index=data.heads[0][0], schema=data.heads[0][1],
        )

    # ------------------------------------------------------------------ the Trainer
    trainer = VitPoseTrainer(
        model=model,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=PaddingPoseCollator(),
        processing_class=processor,
        callbacks=[SetEpochCallback(data.train_transform), *callbacks],
        coco_eval=coco_eval,
        layer_decay=training_args.layer_decay,
    )

    # ------------------------------------------------------------------ train (or resume)
    resume, trusted = resolve_resume(training_args.output_dir, resume_arg, resume_last)
    train_metrics = finish_from_last_checkpoint(trainer, training_args, resume)
    if train_metrics is None:
        try:
            result = trainer.train(resume_from_checkpoint=resume)
        except Exception as err:
            if resume is not None and not trusted and is_unreadable_file_error(err):
                raise ValueError(f"--resume_from_checkpoint {resume}: a file of the checkpoint cannot be read ({err})") from err
            raise
        train_metrics = dict(result.metrics)
        trainer.log_metrics("train", train_metrics)
        trainer.save_metrics("train", train_metrics)

    # ------------------------------------------------------------------ save (LoRA merged into the weights)
    if model_args.lora_r > 0:
        trainer.model = merge_lora(trainer.accelerator.unwrap_model(trainer.model))
    trainer.save_final()

    # ------------------------------------------------------------------ final evaluation, card, picture
    eval_metrics: dict[str, float] = {}
    if coco_eval is not None:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
    if training_args.process_index == 0:
        write_run_card(trainer, model_args, data_args, training_args, eval_metrics)
        if coco_eval is not None:
            try:  # the trained model is saved by now: a picture that cannot be drawn loses nothing
                write_predictions_picture(trainer, coco_eval, training_args.output_dir)
            except Exception as err:  # noqa: BLE001 - optional output; the run's results are saved
                logger.warning("could not draw the predictions picture: %s", err)
    global_step = trainer.state.global_step
    finish_distributed(trainer)
    return {"train": train_metrics, "eval": eval_metrics, "output_dir": training_args.output_dir,
            "global_step": global_step}


def main(argv: Sequence[str] | None = None, callbacks: Sequence[TrainerCallback] = ()) -> int:
    """Parse `argv` (options, a JSON file, a JSON file plus options, or nothing for the offline
    default), train, print the AP. Returns the exit status: 0, or 2 for a bad argument or input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if any(a in ("-h", "--help") for a in argv):
        HfArgumentParser((ModelArguments, DataArguments, PoseTrainingArguments)).print_help()
        return 0
    model_args, data_args, training_args = parse_training_args(argv)
    main_process = training_args.process_index == 0
    if not main_process:
        logging.getLogger().setLevel(logging.WARNING)
    transformers.utils.logging.set_verbosity(logging.INFO if main_process else logging.WARNING)
    try:
        result = run_training(model_args, data_args, training_args, callbacks)
    except ValueError as err:  # a bad argument or input, named by the message (e.g. a used --output_dir)
        sys.stderr.write(f"{os.path.basename(sys.argv[0]) or 'run_pose.py'}: error: {err}\n")
        return 2
    if main_process:
        report_metrics(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
