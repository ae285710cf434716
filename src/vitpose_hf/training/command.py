"""`vitpose-hf train`: the recipe `examples/run_pose.py` (installed as `vitpose_hf.recipes.run_pose`)
as a CLI sub-command.

`add_arguments(parser)` puts every option of `ModelArguments`, `DataArguments` and
`PoseTrainingArguments` on an argparse (sub)parser, plus an optional positional JSON config;
`run(args)` turns the parsed namespace back into the three dataclasses and calls the recipe's
`run_training`. With no option at all the offline default runs (`offline_default_args()`).
"""

from __future__ import annotations

import argparse
import json
import logging

from transformers import HfArgumentParser

from ..recipes.run_pose import run_training
from .arguments import DataArguments, ModelArguments, PoseTrainingArguments, parse_training_args
from .outputs import report_metrics

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "run"]

_DATACLASSES = (ModelArguments, DataArguments, PoseTrainingArguments)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the training options (and a positional `config` JSON file) to `parser`."""
    parser.add_argument("config", nargs="?", default=None, help="JSON file with any of the options below.")
    # argparse's own `parents=` mechanism, applied to an existing parser
    parser._add_container_actions(HfArgumentParser(_DATACLASSES, add_help=False))
    parser.set_defaults(_training_defaults=_defaults_snapshot())
    return parser


def _defaults_snapshot() -> dict:
    parser = HfArgumentParser(_DATACLASSES, add_help=False)
    return {a.dest: a.default for a in parser._actions}


def run(args: argparse.Namespace) -> int:
    """Run training from a namespace filled by a parser prepared with `add_arguments`. Returns 0."""
    values = dict(vars(args))
    config = values.pop("config", None)
    defaults = values.pop("_training_defaults", None) or _defaults_snapshot()
    names = set(defaults)
    given = {k: v for k, v in values.items() if k in names and v != defaults[k]}
    parser = HfArgumentParser(_DATACLASSES)
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
