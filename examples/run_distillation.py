#!/usr/bin/env python
"""Distil a ViTPose teacher into a student: knowledge tokens and/or heatmap distillation.

    python examples/run_distillation.py --teacher vitpose-b-384x288/ --student base --image_size 256 192 \
        --train_annotations person_keypoints_train2017.json --train_images train2017/ \
        --output_dir vitpose-b-distilled --num_train_epochs 210 --per_device_train_batch_size 64
    python examples/run_distillation.py --teacher vitpose-l-coco/ --student base --knowledge_tokens 0 ...
                                               # widths differ (1024 vs 768): heatmap distillation only
    python examples/run_distillation.py --teacher small --student small --max_steps 20   # offline smoke run
    accelerate launch --num_processes 8 examples/run_distillation.py ...   # GPUs
    torchrun --nproc_per_node 2 examples/run_distillation.py --use_cpu ...   # several CPU processes

Stages (paper, "transferability"):
1. `--knowledge_tokens T` (default 1; 0 skips): T tokens learn on the frozen teacher for
   `--token_steps` steps (only the tokens train; the teacher stays in eval mode).
2. The tokens are copied, frozen, into the student (teacher and student must have the same width);
   the student trains with `loss = gt_loss + alpha * MSE(student heatmaps, teacher heatmaps)`
   (`--alpha 0`: knowledge tokens only).

`--teacher` / `--student`: a checkpoint folder (`from_pretrained`) or a preset name (`small`,
`base`, ... `-simple`; a preset teacher is random: only useful for smoke runs). Data as in
`run_pose.py`: `--dataset synthetic` (default; generated once under `--output_dir/synthetic`) or
COCO-format `--train_annotations` / `--train_images`. The output folder is a normal checkpoint
(`VitPoseForPoseEstimation.from_pretrained(out)`; its config carries the knowledge tokens) and
holds `knowledge_tokens.pt`, the stage-1 tokens.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import torch
import transformers
from transformers import TrainingArguments

from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation
from vitpose_hf.data import PoseDataCollator, TopDownTransform, load_coco_keypoints, load_synthetic_dataset
from vitpose_hf.distillation import DistillationTrainer, train_knowledge_tokens, transfer_knowledge_tokens

logger = logging.getLogger("run_distillation")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="teacher checkpoint folder, or a preset name (random)")
    p.add_argument("--student", default="small", help="student preset name or checkpoint folder")
    p.add_argument("--image_size", type=int, nargs=2, default=None, help="H W (default: the teacher's)")
    p.add_argument("--knowledge_tokens", type=int, default=1, help="0 disables knowledge-token distillation")
    p.add_argument("--token_steps", type=int, default=200)
    p.add_argument("--token_lr", type=float, default=1e-3)
    p.add_argument("--alpha", type=float, default=1.0, help="weight of the heatmap distillation term")
    p.add_argument("--dataset", default=None, help="'synthetic' (default without --train_annotations)")
    p.add_argument("--train_annotations", default=None)
    p.add_argument("--train_images", default=None)
    p.add_argument("--num_synthetic_images", type=int, default=64)
    p.add_argument("--output_dir", default="vitpose-distilled")
    p.add_argument("--max_steps", type=int, default=-1)
    p.add_argument("--num_train_epochs", type=float, default=1.0)
    p.add_argument("--per_device_train_batch_size", type=int, default=8)
    p.add_argument("--learning_rate", type=float, default=5e-4)
    p.add_argument("--weight_decay", type=float, default=0.1)
    p.add_argument("--logging_steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataloader_num_workers", type=int, default=0)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--use_cpu", action="store_true")
    return p.parse_args(argv)


def load_model(name_or_path: str, image_size=None) -> VitPoseForPoseEstimation:
    """A checkpoint folder (`from_pretrained`) or a preset name (random init)."""
    if os.path.isdir(name_or_path):
        return VitPoseForPoseEstimation.from_pretrained(name_or_path, image_size=image_size)
    kwargs = {"image_size": list(image_size)} if image_size else {}
    logger.warning("%r is not a folder: building a randomly initialised %s model", name_or_path, name_or_path)
    return VitPoseForPoseEstimation(VitPoseConfig.from_preset(name_or_path, **kwargs))


def build_dataset(args, image_size, heatmap_size, schema: str = "coco"):
    """Training persons with the train-time transform (TopDownTransform) attached."""
    if args.train_annotations:
        if not args.train_images:
            raise ValueError("--train_annotations needs --train_images")
        ds = load_coco_keypoints(args.train_annotations, args.train_images)
    elif args.dataset in (None, "synthetic"):
        ds, _, _ = load_synthetic_dataset(os.path.join(args.output_dir, "synthetic"), args.num_synthetic_images,
                                          seed=args.seed)
    else:
        raise ValueError(f"--dataset {args.dataset!r}: only 'synthetic' is built in; use --train_annotations")
    return ds.with_transform(
        TopDownTransform(schema, image_size=tuple(image_size), heatmap_size=tuple(heatmap_size), seed=args.seed)
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.set_seed(args.seed)
    training_args = TrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, num_train_epochs=args.num_train_epochs,
        per_device_train_batch_size=args.per_device_train_batch_size, learning_rate=args.learning_rate,
        weight_decay=args.weight_decay, logging_steps=args.logging_steps, seed=args.seed, bf16=args.bf16,
        use_cpu=args.use_cpu, dataloader_num_workers=args.dataloader_num_workers, report_to=[],
        save_strategy="no", remove_unused_columns=False, max_grad_norm=1.0, adam_beta2=0.999,
    )
    if training_args.process_index != 0:
        logging.getLogger().setLevel(logging.WARNING)

    teacher = load_model(args.teacher, args.image_size).eval()
    image_size = args.image_size or teacher.config.image_size
    student = load_model(args.student, image_size)
    if student.config.num_labels != teacher.config.num_labels:
        raise ValueError(f"teacher has {teacher.config.num_labels} keypoints, student {student.config.num_labels}")
    with torch.no_grad():  # the heads' output size (1/4 of the input for the standard heads)
        heatmap_size = student.eval()(torch.zeros(1, 3, *image_size)).heatmaps.shape[-2:]
    with training_args.main_process_first(desc="dataset"):
        train = build_dataset(args, image_size, heatmap_size)
    collator = PoseDataCollator()

    tokens = None
    if args.knowledge_tokens > 0:
        if teacher.config.hidden_size != student.config.hidden_size:
            raise ValueError(
                f"knowledge tokens need teacher and student of the same width: teacher hidden_size "
                f"{teacher.config.hidden_size}, student {student.config.hidden_size} (use --knowledge_tokens 0)"
            )
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=args.use_cpu, mixed_precision="bf16" if args.bf16 else "no")
        loader = torch.utils.data.DataLoader(train, batch_size=args.per_device_train_batch_size, shuffle=True,
                                             collate_fn=collator, num_workers=args.dataloader_num_workers)
        result = train_knowledge_tokens(teacher, loader, num_tokens=args.knowledge_tokens, steps=args.token_steps,
                                        lr=args.token_lr, accelerator=accelerator, log_every=args.logging_steps)
        tokens = result.tokens
        logger.info("knowledge tokens: loss %.6f -> %.6f over %d steps", result.losses[0], result.losses[-1],
                    len(result.losses))
        student = transfer_knowledge_tokens(student, tokens, freeze=True)
        teacher = teacher.to(accelerator.device)  # the heatmap teacher stays the plain teacher

    trainer = DistillationTrainer(
        model=student, args=training_args, train_dataset=train, data_collator=collator,
        teacher_model=teacher, alpha=args.alpha,
    )
    metrics = trainer.train().metrics
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero():
        if tokens is not None:
            torch.save(tokens, os.path.join(args.output_dir, "knowledge_tokens.pt"))
        with open(os.path.join(args.output_dir, "distillation_args.json"), "w") as f:
            json.dump(vars(args), f, indent=1)
        logger.info("saved the student to %s: %s", args.output_dir, metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
