"""Model cards (issue 13, item 3): training and conversion outputs carry a README.md whose front
matter names vitpose_hf and the keypoint-detection task, lists the measured metrics, and whose usage
snippet runs against the folder."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
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
    # the predictions picture: the first evaluation images side by side, with skeletons drawn
    from PIL import Image

    from vitpose_hf.training.outputs import PREDICTIONS_PICTURE

    picture = np.asarray(Image.open(out / PREDICTIONS_PICTURE).convert("RGB"))
    first = json.loads(Path(shared_data / "coco_sample" / "test_coco.json").read_text())["images"][0]
    plain = np.asarray(Image.open(shared_data / "coco_sample" / first["file_name"]).convert("RGB"))
    assert picture.shape[0] >= plain.shape[0] and picture.shape[1] > plain.shape[1]
    assert (picture[: plain.shape[0], : plain.shape[1]] != plain).any()  # something was drawn on it
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


class _FakeApi:
    """Records what `HfApi` would have sent: the hub is unreachable here."""

    uploads: list = []

    def __init__(self, *args, **kwargs):
        pass

    def create_repo(self, repo_id, **kwargs):
        class Url(str):
            pass

        url = Url(f"https://huggingface.co/{repo_id}")
        url.repo_id = repo_id
        return url

    def create_branch(self, **kwargs):
        pass

    def upload_folder(self, repo_id, folder_path, **kwargs):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir() if p.is_file()}
        _FakeApi.uploads.append((repo_id, files, kwargs))
        return f"commit of {sorted(files)}"


def test_push_to_hub_uploads_model_processor_and_card(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeApi)
    _FakeApi.uploads.clear()
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs()))
    model.push_to_hub("me/vitpose-tiny", metrics={"eval_AP": 0.61}, datasets=["coco"], tags=["tiny"])
    (repo_id, files, kwargs), = _FakeApi.uploads
    assert repo_id == "me/vitpose-tiny"
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(files)
    card = files["README.md"].decode()
    meta = _front_matter(card)
    assert meta["library_name"] == "vitpose_hf" and "tiny" in meta["tags"] and meta["datasets"] == ["coco"]
    assert 'model="me/vitpose-tiny"' in card and "| AP | 0.6100 |" in card
    assert json.loads(files["preprocessor_config.json"])["size"] == {"height": 64, "width": 48}
    # the uploaded folder is a complete checkpoint
    folder = tmp_path / "download"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    _run_snippet(card.replace("me/vitpose-tiny", "path/to/this/folder"), folder, "path/to/this/folder")


def test_trainer_card_is_ours(tmp_path):
    from test_reliability_training import _tiny_trainer

    trainer = _tiny_trainer(tmp_path / "out")
    trainer.state.log_history = [{"eval_AP": 0.42, "step": 3}]
    trainer.create_model_card(finetuned_from="usyd-community/vitpose-base-simple")
    text = (tmp_path / "out" / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "vitpose_hf" and meta["base_model"] == "usyd-community/vitpose-base-simple"
    assert "| AP | 0.4200 |" in text
    (tmp_path / "out" / "README.md").write_text(text + "\nkept\n")
    trainer.create_model_card()  # a card of ours is not replaced
    assert (tmp_path / "out" / "README.md").read_text().endswith("kept\n")
