"""`vitpose-hf train`: the same run as `examples/run_pose.py`, as a CLI sub-command.

`add_arguments(parser)` puts every option of `ModelArguments`, `DataArguments` and
`PoseTrainingArguments` on an argparse (sub)parser, plus an optional positional JSON config;
`run(args)` turns the parsed namespace back into the three dataclasses and calls `run_training`.
With no option at all the offline default runs (`offline_default_args()`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Sequence

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "run", "parse_training_args", "main", "report_metrics"]


def _dataclass_types():
    from .arguments import DataArguments, ModelArguments, PoseTrainingArguments

    return (ModelArguments, DataArguments, PoseTrainingArguments)


def _hf_parser(add_help: bool = True):
    from transformers import HfArgumentParser

    return HfArgumentParser(_dataclass_types(), add_help=add_help)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the training options (and a positional `config` JSON file) to `parser`."""
    parser.add_argument("config", nargs="?", default=None, help="JSON file with any of the options below.")
    # argparse's own `parents=` mechanism, applied to an existing parser
    parser._add_container_actions(_hf_parser(add_help=False))
    parser.set_defaults(_training_defaults=_defaults_snapshot())
    return parser


def _defaults_snapshot() -> dict:
    parser = _hf_parser(add_help=False)
    return {a.dest: a.default for a in parser._actions}


def parse_training_args(argv: Sequence[str] | None = None):
    """Parse `argv` (list of strings; a single `*.json` means a config file; empty means the offline
    default) into `(ModelArguments, DataArguments, PoseTrainingArguments)`."""
    from .arguments import offline_default_args

    parser = _hf_parser()
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


def run(args: argparse.Namespace) -> int:
    """Run training from a namespace filled by a parser prepared with `add_arguments`. Returns 0."""
    from transformers import HfArgumentParser

    from .run import run_training

    values = dict(vars(args))
    config = values.pop("config", None)
    defaults = values.pop("_training_defaults", None) or _defaults_snapshot()
    names = set(defaults)
    given = {k: v for k, v in values.items() if k in names and v != defaults[k]}
    parser = HfArgumentParser(_dataclass_types())
    if config:
        with open(config, encoding="utf-8") as f:
            merged = json.load(f)
        merged.update(given)
        model_args, data_args, training_args = parser.parse_dict(merged)
    elif not given:
        model_args, data_args, training_args = parse_training_args([])
    else:
        model_args, data_args, training_args = parser.parse_dict({k: v for k, v in values.items() if k in names})
    result = run_training(model_args, data_args, training_args)
    if training_args.process_index == 0:
        report_metrics(result)
    return 0


def report_metrics(result: dict) -> None:
    """Print the final COCO metrics of a `run_training` result (the one place that prints)."""
    metrics = result.get("eval") or {}
    ap = {k[len("eval_"):]: v for k, v in metrics.items() if k.startswith("eval_A")}
    line = ", ".join(f"{k}={v:.4f}" for k, v in sorted(ap.items())) if ap else "no evaluation data"
    sys.stdout.write(f"steps={result.get('global_step')} output_dir={result.get('output_dir')} COCO keypoint metrics: {line}\n")
    if ap:
        from ..evaluation.coco import format_metrics_table

        sys.stdout.write(format_metrics_table(ap) + "\n")
    from .run import PREDICTIONS_PICTURE

    picture = os.path.join(str(result.get("output_dir") or ""), PREDICTIONS_PICTURE)
    if ap and os.path.isfile(picture):
        sys.stdout.write(f"predictions on the first evaluation images: {picture}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `examples/run_pose.py`: parse (CLI, JSON, or nothing = offline default), train, print AP."""
    from .run import run_training

    model_args, data_args, training_args = parse_training_args(argv)
    result = run_training(model_args, data_args, training_args)
    if training_args.process_index == 0:
        report_metrics(result)
    return 0
