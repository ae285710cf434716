"""CLI reliability (issue 12, item 7): output paths are checked before any work (no model is loaded
when one cannot be written), and results reach the disk as they are made, so a late failure loses
nothing already computed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config_kwargs
from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation
from vitpose_hf.cli import main
from vitpose_hf.keypoint_schemas import get_schema

VitPoseTopDownImageProcessor = pytest.importorskip("vitpose_hf.image_processing_vitpose").VitPoseTopDownImageProcessor


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("rel_cli_model")
    torch.manual_seed(0)
    VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs())).save_pretrained(path)
    VitPoseTopDownImageProcessor(size={"height": 64, "width": 48}).save_pretrained(path)
    return path


@pytest.fixture
def data(tmp_path):
    """Three small images (numeric names) and a COCO ground truth with one person on each."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"00000000000{i}.png" for i in (1, 2, 3)]
    images, anns = [], []
    for i, name in enumerate(names, start=1):
        Image.fromarray(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)).save(folder / name)
        images.append({"id": i, "file_name": name, "width": 64, "height": 48})
        kps = []
        for k in range(17):
            kps += [10.0 + 2 * k, 8.0 + k, 2.0]
        anns.append({"id": 10 * i, "image_id": i, "category_id": 1, "bbox": [4.0, 4.0, 50.0, 38.0], "area": 1500.0,
                     "iscrowd": 0, "num_keypoints": 17, "keypoints": kps})  # fmt: skip
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns,
                              "categories": [{"id": 1, "name": "person", "keypoints": list(get_schema("coco").keypoints)}]}))  # fmt: skip
    return folder, gt, [str(folder / n) for n in names]


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails the test: the output check must come first."""
    import transformers

    from vitpose_hf.evaluation import command

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the output path was checked")

    monkeypatch.setattr(command, "_load", forbidden)
    monkeypatch.setattr(transformers, "pipeline", forbidden)
    monkeypatch.setattr(VitPoseForPoseEstimation, "from_pretrained", forbidden)


def _bad_outputs(tmp_path):
    a_dir = tmp_path / "existing_dir"
    a_dir.mkdir(parents=True)
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    # (path, what the error must say); root ignores permission bits, so no chmod cases
    return [(a_dir, "is a directory"), (a_file / "out.json", "not a directory")]


def test_evaluate_unwritable_outputs_fail_before_the_model_is_loaded(data, tmp_path, capsys, no_model_load):
    """Before: the whole evaluation ran, then IsADirectoryError / NotADirectoryError lost the results."""
    folder, gt, _ = data
    base = ["evaluate", "--model", str(tmp_path / "no_such_model"), "--annotations", str(gt), "--images", str(folder),
            "--device", "cpu"]  # fmt: skip
    for flag in ("--output", "--metrics-output"):
        for bad, why in _bad_outputs(tmp_path / flag.strip("-")):
            assert main(base + [flag, str(bad)]) == 2
            err = capsys.readouterr().err
            assert flag in err and str(bad) in err and why in err, err
            assert "no_such_model" not in err


def test_predict_unwritable_outputs_fail_before_the_model_is_loaded(data, tmp_path, capsys, no_model_load):
    folder, _, _ = data
    good_out = tmp_path / "ok" / "pred.json"
    for flag in ("--output", "--visualize"):
        for bad, why in _bad_outputs(tmp_path / flag.strip("-")):
            if flag == "--visualize" and why == "is a directory":
                bad, why = bad.parent / "a_file.txt", "not a directory"  # an existing file where a folder is wanted
            argv = ["predict", str(folder), "--model", str(tmp_path / "no_such_model"), "--quiet"]
            argv += ["--output", str(bad)] if flag == "--output" else ["--output", str(good_out), "--visualize", str(bad)]
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert flag in err and str(bad) in err and why in err, err
    assert not good_out.parent.exists()  # nothing created for a run that never started


def test_predict_failure_midway_keeps_finished_images(model_dir, data, tmp_path, monkeypatch):
    """A crash while handling the 2nd image leaves the 1st image's result on disk (JSON Lines)."""
    import vitpose_hf.visualization as visualization

    folder, _, names = data
    out = tmp_path / "pred.json"
    calls = []
    real_draw = visualization.draw_keypoints

    def draw_then_fail(image, *args, **kwargs):
        calls.append(image)
        if len(calls) == 2:
            raise RuntimeError("simulated failure on the 2nd image")
        return real_draw(image, *args, **kwargs)

    monkeypatch.setattr(visualization, "draw_keypoints", draw_then_fail)
    argv = ["predict", str(folder), "--model", str(model_dir), "--output", str(out), "--visualize", str(tmp_path / "vis"),
            "--batch-size", "1", "--quiet", "--device", "cpu", "--whole-image"]  # fmt: skip
    with pytest.raises(RuntimeError, match="2nd image"):
        main(argv)
    assert not out.exists()  # the final JSON is written whole or not at all
    partial = out.with_name(out.name + ".partial.jsonl")
    lines = [json.loads(line) for line in partial.read_text().splitlines()]
    assert lines[0]["image"] == names[0] and len(lines[0]["persons"]) == 1
    assert len(lines[0]["persons"][0]["keypoints"]) == 17
    assert [rec["image"] for rec in lines] in ([names[0]], names[:2])  # never the 3rd
    # the same run without the failure: the final JSON (unchanged format) holds the same record; partial gone
    monkeypatch.setattr(visualization, "draw_keypoints", real_draw)
    assert main(argv) == 0
    payload = json.loads(out.read_text())
    assert set(payload) == {"model", "schema", "keypoint_names", "flip_test", "images", "coco_results"}
    assert payload["images"][0] == lines[0]
    assert not partial.exists()


def test_evaluate_failure_midway_keeps_finished_images(model_dir, data, tmp_path, monkeypatch, capsys):
    from vitpose_hf.evaluation import topdown

    folder, gt, _ = data
    out = tmp_path / "preds.json"
    metrics = tmp_path / "metrics.json"
    real_select = topdown._select_persons
    calls = []

    def select_then_fail(entry, *args, **kwargs):
        calls.append(entry.image_id)
        if len(calls) == 2:
            raise RuntimeError("simulated failure on the 2nd image")
        return real_select(entry, *args, **kwargs)

    monkeypatch.setattr(topdown, "_select_persons", select_then_fail)
    argv = ["evaluate", "--model", str(model_dir), "--annotations", str(gt), "--images", str(folder), "--no-flip",
            "--output", str(out), "--metrics-output", str(metrics), "--batch-size", "1", "--device", "cpu"]  # fmt: skip
    with pytest.raises(RuntimeError, match="2nd image"):
        main(argv)
    assert not out.exists() and not metrics.exists()
    partial = out.with_name(out.name + ".partial.jsonl")
    lines = [json.loads(line) for line in partial.read_text().splitlines()]
    assert [r["image_id"] for r in lines] == [1] and len(lines[0]["keypoints"]) == 51

    # without the failure: predictions (a COCO results list, as before) are on disk before the metrics
    monkeypatch.setattr(topdown, "_select_persons", real_select)
    from vitpose_hf.evaluation import coco as coco_eval

    def metrics_fail(*args, **kwargs):
        raise RuntimeError("simulated failure in the metrics")

    monkeypatch.setattr(topdown, "coco_keypoint_eval", metrics_fail)
    with pytest.raises(RuntimeError, match="metrics"):
        main(argv)
    preds = json.loads(out.read_text())
    assert [p["image_id"] for p in preds] == [1, 2, 3] and not partial.exists()
    monkeypatch.setattr(topdown, "coco_keypoint_eval", coco_eval.coco_keypoint_eval)
    assert main(argv) == 0
    assert json.loads(metrics.read_text()) == pytest.approx(coco_eval.coco_keypoint_eval(gt, preds))
    capsys.readouterr()
