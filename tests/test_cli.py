"""`vitpose-hf` command line: predict end to end on generated images, boxes files, dispatch."""

from __future__ import annotations

import json
import runpy
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config_kwargs
from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation
from vitpose_hf.cli import collect_images, load_boxes_file, main
from vitpose_hf.keypoint_schemas import COCO

VitPoseTopDownImageProcessor = pytest.importorskip("vitpose_hf.image_processing_vitpose").VitPoseTopDownImageProcessor


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli_model")
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs())).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path)
    VitPoseTopDownImageProcessor(size={"height": 64, "width": 48}).save_pretrained(path)
    return path


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    sizes = {"000000000001.png": (60, 80), "000000000002.jpg": (90, 70), "000000000003.png": (50, 50)}
    for name, (h, w) in sizes.items():
        small = rng.integers(0, 256, size=(h // 10, w // 10, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_predict_folder_writes_json_and_drawings(model_dir, image_dir, tmp_path):
    out = tmp_path / "out" / "pred.json"
    vis = tmp_path / "vis"
    rc = main(["predict", str(image_dir), "--model", str(model_dir), "--output", str(out), "--visualize", str(vis),
               "--batch-size", "2", "--quiet", "--whole-image"])  # fmt: skip
    assert rc == 0
    payload = json.loads(out.read_text())
    assert payload["schema"] == "coco" and payload["keypoint_names"] == list(COCO.keypoints)
    assert payload["flip_test"] is True
    names = [rec["image"].rsplit("/", 1)[-1] for rec in payload["images"]]
    assert names == ["000000000001.png", "000000000002.jpg", "000000000003.png"]
    for rec in payload["images"]:
        with Image.open(rec["image"]) as im:
            w, h = im.size
        assert len(rec["persons"]) == 1  # --whole-image: the whole image is one person
        person = rec["persons"][0]
        assert person["bbox"] == [0.0, 0.0, float(w), float(h)]
        assert len(person["keypoints"]) == 17
        assert all(np.isfinite([k["x"], k["y"], k["score"]]).all() for k in person["keypoints"])
    # COCO results (numeric file names): flat x, y, score triplets
    coco = payload["coco_results"]
    assert [c["image_id"] for c in coco] == [1, 2, 3]
    assert all(len(c["keypoints"]) == 51 and c["category_id"] == 1 for c in coco)
    first = payload["images"][0]["persons"][0]["keypoints"][0]
    assert coco[0]["keypoints"][:3] == [first["x"], first["y"], first["score"]]
    drawn = sorted(p.name for p in vis.iterdir())
    assert drawn == ["000000000001.png", "000000000002.png", "000000000003.png"]
    with Image.open(vis / "000000000002.png") as im:
        assert im.size == (70, 90)


def test_predict_matches_pipeline_and_no_flip(model_dir, image_dir, tmp_path):
    import transformers

    out = tmp_path / "pred.json"
    boxes = {"000000000002.jpg": [[5, 5, 40, 60], {"bbox": [10, 20, 30, 30], "score": 0.5}]}
    boxes_file = tmp_path / "boxes.json"
    boxes_file.write_text(json.dumps(boxes))
    image = str(image_dir / "000000000002.jpg")
    rc = main(["predict", image, "--model", str(model_dir), "--output", str(out), "--boxes", str(boxes_file), "--no-flip"])
    assert rc == 0
    persons = json.loads(out.read_text())["images"][0]["persons"]
    pipe = transformers.pipeline("keypoint-detection", model=str(model_dir), device="cpu")
    expected = pipe(image, boxes=[[5, 5, 40, 60], [10, 20, 30, 30]], box_scores=[1.0, 0.5], flip_test=False)
    assert len(persons) == 2
    for got, exp in zip(persons, expected):
        assert got["bbox"] == exp["bbox"]
        assert got["score"] == pytest.approx(exp["score"], rel=1e-6)
        np.testing.assert_allclose([k["x"] for k in got["keypoints"]], [k["x"] for k in exp["keypoints"]], atol=1e-4)


def test_predict_keeps_going_after_a_corrupt_image(model_dir, image_dir, tmp_path):
    (image_dir / "000000000004.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    out = tmp_path / "pred.json"
    rc = main(["predict", str(image_dir), "--model", str(model_dir), "--output", str(out), "--quiet", "--no-flip",
               "--whole-image"])  # fmt: skip
    assert rc == 1
    records = json.loads(out.read_text())["images"]
    assert len(records) == 4
    bad = [r for r in records if "error" in r]
    assert len(bad) == 1 and "000000000004.jpg" in bad[0]["error"]
    assert all(len(r["persons"]) == 1 for r in records if "error" not in r)


def test_predict_bad_arguments(model_dir, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope.jpg"), "--model", str(model_dir), "--output", str(tmp_path / "o.json")]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", "x.jpg", "--model", "m", "--output", "o.json", "--boxes", "b.json", "--detector", "d.onnx"])


def test_predict_with_real_detections_file(model_dir, shared_data, tmp_path):
    folder = shared_data / "coco_sample"
    det_file = folder / "test_coco_det_AP_H_56.json"
    out = tmp_path / "pred.json"
    rc = main(["predict", str(folder), "--model", str(model_dir), "--output", str(out), "--boxes", str(det_file),
               "--detection-threshold", "0.5", "--no-flip", "--quiet"])  # fmt: skip
    assert rc == 0
    dets = json.loads(det_file.read_text())
    payload = json.loads(out.read_text())
    for rec in payload["images"]:
        image_id = int(rec["image"].rsplit("/", 1)[-1].split(".")[0])
        expected = [d for d in dets if d["image_id"] == image_id and d["score"] >= 0.5 and d["category_id"] == 1]
        assert len(rec["persons"]) == len(expected)
        assert sorted(p["bbox"] for p in rec["persons"]) == sorted(d["bbox"] for d in expected)
    assert {c["image_id"] for c in payload["coco_results"]} <= {d["image_id"] for d in dets}


def test_predict_with_yolox_detector(model_dir, shared_data, yolox_onnx, tmp_path):
    pytest.importorskip("onnxruntime")
    src = shared_data / "coco_sample" / "000000040083.jpg"
    out = tmp_path / "pred.json"
    rc = main(["predict", str(src), "--model", str(model_dir), "--output", str(out), "--detector", str(yolox_onnx),
               "--max-persons", "5", "--no-flip"])  # fmt: skip
    assert rc == 0
    persons = json.loads(out.read_text())["images"][0]["persons"]
    assert len(persons) == 2  # YOLOX finds the two annotated persons of this image


def test_load_boxes_file_layouts(tmp_path):
    images = ["/x/000000000007.jpg", "/x/000000000008.jpg", "/x/other.jpg"]
    results = [
        {"image_id": 7, "bbox": [1, 2, 3, 4], "score": 0.9, "category_id": 1},
        {"image_id": 7, "bbox": [5, 6, 7, 8], "score": 0.1, "category_id": 1},
        {"image_id": 7, "bbox": [0, 0, 9, 9], "score": 0.9, "category_id": 3},
    ]
    path = tmp_path / "res.json"
    path.write_text(json.dumps(results))
    boxes, scores = load_boxes_file(str(path), images, score_threshold=0.5)
    assert boxes == [[[1.0, 2.0, 3.0, 4.0]], [], []] and scores == [[0.9], [], []]
    annotations = {
        "images": [{"id": 1, "file_name": "000000000008.jpg"}],
        "annotations": [
            {"image_id": 1, "bbox": [1, 1, 5, 5], "category_id": 1, "iscrowd": 0},
            {"image_id": 1, "bbox": [2, 2, 5, 5], "category_id": 1, "iscrowd": 1},
        ],
    }
    path.write_text(json.dumps(annotations))
    assert load_boxes_file(str(path), images)[0] == [[], [[1.0, 1.0, 5.0, 5.0]], []]
    path.write_text(json.dumps({"other.jpg": [[1, 2, 3, 4]], "/x/000000000007.jpg": [{"bbox": [0, 0, 2, 2], "score": 0.3}]}))
    boxes, scores = load_boxes_file(str(path), images)
    assert boxes == [[[0.0, 0.0, 2.0, 2.0]], [], [[1.0, 2.0, 3.0, 4.0]]] and scores == [[0.3], [], [1.0]]
    path.write_text("{broken")
    with pytest.raises(ValueError, match="boxes file"):
        load_boxes_file(str(path), images)


def test_collect_images(image_dir, tmp_path):
    found = collect_images([str(image_dir)])
    assert [p.rsplit("/", 1)[-1] for p in found] == ["000000000001.png", "000000000002.jpg", "000000000003.png"]
    sub = image_dir / "sub"
    sub.mkdir()
    Image.new("RGB", (4, 4)).save(sub / "a.png")
    assert len(collect_images([str(image_dir)], recursive=True)) == 4
    assert collect_images(["https://example.com/x.jpg"]) == ["https://example.com/x.jpg"]
    with pytest.raises(ValueError, match="not found"):
        collect_images([str(tmp_path / "missing")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        collect_images([str(empty)])


def test_dispatch_and_module_entry(monkeypatch, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "predict" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["convert", "--help"])
    assert info.value.code == 0 and "--checkpoint" in capsys.readouterr().out
    import importlib

    for command, module in (("evaluate", "vitpose_hf.evaluation.command"), ("train", "vitpose_hf.training.command")):
        try:
            importlib.import_module(module)
        except ImportError:
            assert main([command]) == 2
        else:
            with pytest.raises(SystemExit) as info:
                main([command, "--help"])
            assert info.value.code == 0
            assert f"vitpose-hf {command}" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["vitpose_hf", "--help"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("vitpose_hf", run_name="__main__")
    assert info.value.code == 0
