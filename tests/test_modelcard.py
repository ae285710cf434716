"""Model cards (issue 13, item 3): training and conversion outputs carry a README.md whose front
matter names vitpose_hf and the keypoint-detection task, lists the measured metrics, and whose usage
snippet runs against the folder."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny_config_kwargs  # noqa: E402

from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation  # noqa: E402


def _front_matter(text: str) -> dict:
    import yaml

    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, text[:200]
    return yaml.safe_load(match.group(1))


def _run_snippet(text: str, folder: Path, target: str) -> None:
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert f'model="{target}"' in code
    scope: dict = {}
    exec(code.replace(target, str(folder)), scope)  # noqa: S102 - the card's own snippet
    assert len(scope["people"]) == 1 and len(scope["people"][0]["keypoints"]) == 17


def test_a_training_run_writes_a_card_with_its_metrics_and_a_snippet_that_runs(shared_data, tmp_path):
    from test_reliability_training import _args, _run

    out = tmp_path / "run"
    result = _run(_args(shared_data, out))
    text = (out / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "vitpose_hf" and meta["pipeline_tag"] == "keypoint-detection"
    assert "vitpose" in meta["tags"]
    ap = result["eval"]["eval_AP"]
    assert f"| AP | {ap:.4f} |" in text
    assert "trained for 4 steps on test_coco.json" in text
    _run_snippet(text, out, "path/to/this/folder")


def test_convert_writes_a_card(tmp_path):
    from test_convert import _random_model, _to_official

    from vitpose_hf.convert_vitpose_to_hf import main

    path = tmp_path / "vitpose_tiny.pth"
    torch.save({"state_dict": _to_official(_random_model()), "meta": {}}, path)
    out = tmp_path / "converted"
    assert main(["--checkpoint", str(path), "--output", str(out), "--num-attention-heads", "4"]) == 0
    text = (out / "README.md").read_text()
    assert _front_matter(text)["library_name"] == "vitpose_hf"
    assert "converted from vitpose_tiny.pth" in text
    _run_snippet(text, out, "path/to/this/folder")


def test_card_text_lists_only_keypoint_metrics_and_the_hub_id():
    from vitpose_hf.modelcard import model_card_text

    config = VitPoseConfig(**tiny_config_kwargs())
    text = model_card_text(config, repo_id="me/vitpose-tiny", metrics={"eval_AP": 0.75, "eval_loss": 0.1, "epoch": 3},
                           base_model="usyd-community/vitpose-base-simple", datasets=["coco"])
    meta = _front_matter(text)
    assert meta["base_model"] == "usyd-community/vitpose-base-simple" and meta["datasets"] == ["coco"]
    assert "| AP | 0.7500 |" in text and "loss" not in text.split("## Usage")[0].split("---")[-1]
    assert 'model="me/vitpose-tiny"' in text
    assert json.dumps(config.num_labels) in text  # "17 keypoints"
