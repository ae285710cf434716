"""The default person detector (issue 14, item 1): with neither boxes nor a detector the pipeline and
`vitpose-hf predict` run RT-DETR (`DEFAULT_DETECTOR` at its revision, person = label 0, score >= 0.3),
loaded once per pipeline; offline without a cached copy they stop with a message naming the way out;
`whole_image=True` is the explicit single-person mode.

The hub is unreachable here: the hub id is redirected to a tiny random RT-DETR saved in a temp dir
(its class bias makes every query a confident "person", so its boxes are not rounding noise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from test_pipeline import BOXES, images, tiny_dir  # noqa: F401  (fixtures)

from vitpose_hf import detectors
from vitpose_hf.cli import main
from vitpose_hf.detectors import DEFAULT_DETECTOR, DetectorUnavailableError, load_default_detector
from vitpose_hf.pipeline_keypoint_detection import TASK


@pytest.fixture(scope="module")
def tiny_rtdetr(tmp_path_factory) -> Path:
    """A 2-class RT-DETR (0 "person", 1 "bicycle") whose queries all score sigmoid(4) = 0.98 as persons."""
    config = transformers.RTDetrConfig(
        backbone_config=transformers.RTDetrResNetConfig(
            embedding_size=8, hidden_sizes=[8, 8, 16, 16], depths=[1, 1, 1, 1], layer_type="basic",
            out_features=["stage2", "stage3", "stage4"],
        ),
        encoder_in_channels=[8, 16, 16], decoder_in_channels=[16, 16, 16], d_model=16, encoder_hidden_dim=16,
        encoder_ffn_dim=16, decoder_ffn_dim=16, decoder_layers=1, encoder_layers=1, num_queries=6,
        decoder_attention_heads=2, encoder_attention_heads=2, decoder_n_points=1, anchor_image_size=None,
        num_labels=2, id2label={0: "person", 1: "bicycle"}, label2id={"person": 0, "bicycle": 1},
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.RTDetrForObjectDetection(config).eval()
    with torch.no_grad():
        for head in [model.model.enc_score_head, *model.model.decoder.class_embed]:
            head.weight.zero_()
            head.bias.copy_(torch.tensor([4.0, -4.0]))
    folder = tmp_path_factory.mktemp("rtdetr")
    model.save_pretrained(folder)
    transformers.RTDetrImageProcessor(size={"height": 128, "width": 128}).save_pretrained(folder)
    return folder


@pytest.fixture()
def hub_redirect(monkeypatch, tiny_rtdetr):
    """The object-detection pipeline of the default detector's hub id -> the tiny RT-DETR folder;
    records the (model, revision) asked for."""
    real = detectors._object_detection_pipeline
    asked = []

    def fake(model, **kwargs):
        if model == DEFAULT_DETECTOR:
            asked.append((model, kwargs.pop("revision", None)))
            model = str(tiny_rtdetr)
        return real(model, **kwargs)

    monkeypatch.setattr(detectors, "_object_detection_pipeline", fake)
    return asked


def test_without_boxes_the_pipeline_runs_the_default_detector_once(tiny_dir, images, hub_redirect):  # noqa: F811
    pipe = transformers.pipeline(TASK, model=str(tiny_dir), device="cpu")
    first = pipe(images[0])
    again = pipe([images[0], images[1]])
    assert hub_redirect == [(DEFAULT_DETECTOR, detectors.DEFAULT_DETECTOR_REVISION)]  # loaded once, revision given
    detector = pipe.default_detector()
    assert detector.score_threshold == pytest.approx(0.3) and detector.person_labels == {"person"}
    expected = detector(images[0])
    assert 0 < len(expected) <= 6 and all(d["score"] > 0.9 for d in expected)
    np.testing.assert_allclose([p["bbox"] for p in first], [d["bbox"] for d in expected])
    # the persons' box scores are the detector's (before ViTPose's keypoint rescoring) and keypoints follow the boxes
    by_boxes = pipe(images[0], boxes=[d["bbox"] for d in expected], box_scores=[d["score"] for d in expected])
    assert [p["score"] for p in first] == pytest.approx([p["score"] for p in by_boxes])
    np.testing.assert_allclose([[k["x"] for k in p["keypoints"]] for p in first],
                               [[k["x"] for k in p["keypoints"]] for p in by_boxes], atol=1e-4)
    np.testing.assert_allclose([p["bbox"] for p in again[0]], [p["bbox"] for p in first])


def test_the_default_detector_keeps_label_0_only(tiny_rtdetr, images):  # noqa: F811
    detector = load_default_detector(model=tiny_rtdetr)
    raw = detector.pipe(images[0], threshold=0.0)
    assert {d["label"] for d in raw} == {"person"}
    detector.person_labels = {"bicycle"}  # the same model read as another class: nothing passes
    assert detector(images[0]) == []


def test_offline_without_a_cached_copy_the_error_names_the_ways_out(tiny_dir, images, monkeypatch):  # noqa: F811
    def offline(model, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the cached files.")

    monkeypatch.setattr(detectors, "_object_detection_pipeline", offline)
    with pytest.raises(DetectorUnavailableError) as info:
        load_default_detector()
    message = str(info.value)
    for part in (DEFAULT_DETECTOR, "couldn't connect", "boxes=", "detector=", "whole_image=True", "--whole-image"):
        assert part in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, OSError)


def test_whole_image_mode_loads_no_detector_and_refuses_boxes(tiny_dir, images, monkeypatch):  # noqa: F811
    pipe = transformers.pipeline(TASK, model=str(tiny_dir), device="cpu")
    monkeypatch.setattr(detectors, "load_default_detector", lambda **kw: pytest.fail("no detector in whole-image mode"))
    out = pipe(images[0], whole_image=True)
    assert len(out) == 1 and out[0]["bbox"] == [0.0, 0.0, float(images[0].width), float(images[0].height)]
    with pytest.raises(ValueError, match="cannot be combined with boxes="):
        pipe(images[0], boxes=BOXES[0], whole_image=True)
    with pytest.raises(ValueError, match="cannot be combined with boxes="):
        pipe(images[:2], boxes=BOXES[:2], whole_image=True)
    with pytest.raises(ValueError, match="cannot be combined with detector="):
        pipe(images[0], detector=lambda image: [], whole_image=True)
    with pytest.raises(ValueError, match="whole_image must be True or False, got 'yes'"):
        pipe(images[0], whole_image="yes")


def test_cli_predict_offline_stops_before_the_first_image_and_says_how(tiny_dir, images, tmp_path):  # noqa: F811
    """A real offline run (a subprocess with an empty Hugging Face cache and HF_HUB_OFFLINE=1)."""
    image = tmp_path / "000000000001.png"
    images[0].save(image)
    out = tmp_path / "pred.json"
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    run = subprocess.run(
        [sys.executable, "-m", "vitpose_hf", "predict", str(image), "--model", str(tiny_dir), "--output", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "vitpose-hf predict: error: the default person detector 'PekingU/rtdetr_r50vd_coco_o365'" in run.stderr
    assert "--boxes" in run.stderr and "--whole-image" in run.stderr and "--detector" in run.stderr
    assert not out.exists() and not (tmp_path / "pred.json.partial.jsonl").exists()


def test_cli_predict_uses_the_default_detector(tiny_dir, images, tmp_path, hub_redirect):  # noqa: F811
    image = tmp_path / "000000000001.png"
    images[0].save(image)
    out = tmp_path / "pred.json"
    assert main(["predict", str(image), "--model", str(tiny_dir), "--output", str(out), "--quiet", "--no-flip"]) == 0
    persons = json.loads(out.read_text())["images"][0]["persons"]
    expected = load_default_detector()(images[0])  # the same redirected model, asked for again
    assert hub_redirect and hub_redirect[0][0] == DEFAULT_DETECTOR
    np.testing.assert_allclose([p["bbox"] for p in persons], [d["bbox"] for d in expected])
    assert len(persons) > 1 and all(np.isfinite([k["x"] for k in p["keypoints"]]).all() for p in persons)
    with pytest.raises(SystemExit):  # --whole-image and --boxes / --detector exclude each other
        main(["predict", str(image), "--model", str(tiny_dir), "--output", str(out), "--whole-image", "--detector", "x.onnx"])
