"""Clear errors instead of crashes deep in torch (issue 12, item 8: config, model loading, detectors).

Each bad input must give a ValueError whose message names the field / file / value, or a documented
sensible result (detector boxes with NaN are dropped with a logged count).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_PLUS, tiny_config_kwargs
from PIL import Image

import vitpose_hf  # noqa: F401  (registers the Auto classes and the pipeline)
from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation, VitPoseModel
from vitpose_hf.detectors import CallableDetector, HFDetector, build_detector


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("overrides, needle", [
    (dict(num_attention_heads=0), "num_attention_heads must be an integer >= 1, got 0"),
    (dict(hidden_size=0), "hidden_size must be an integer >= 1, got 0"),
    (dict(hidden_size=30), r"hidden_size \(30\) must be a multiple of num_attention_heads \(4\)"),
    (dict(hidden_size=32.5), "hidden_size must be an integer, got 32.5"),
    (dict(mlp_ratio=-1), "mlp_ratio must be a finite number > 0, got -1"),
    (dict(mlp_ratio=0), "mlp_ratio must be a finite number > 0, got 0"),
    (dict(mlp_ratio=float("nan")), "mlp_ratio must be a finite number > 0, got nan"),
    (dict(num_labels=0), r"num_labels \(keypoints of the main head\) must be >= 1, got 0"),
    (dict(num_hidden_layers=-1), "num_hidden_layers must be an integer >= 1, got -1"),
    (dict(num_hidden_layers=0), "num_hidden_layers must be an integer >= 1, got 0"),
    (dict(patch_size=0), r"patch_size must be positive, got \[0, 0\]"),
    (dict(patch_stride=0), r"patch_stride must be positive, got \[0, 0\]"),
    (dict(patch_padding=-1), "patch_padding must be >= 0, got -1"),
    (dict(image_size=0), r"image_size must be two positive integers \(height, width\), got \[0, 0\]"),
    (dict(image_size=(60, 48)), r"image_size \[60, 48\] must be a multiple of the patch stride \[8, 8\]"),
    (dict(image_size=(4, 4)), r"image_size \[4, 4\] must be a multiple of the patch stride \[8, 8\] and at least one patch"),
    (dict(drop_path_rate=-0.1), r"drop_path_rate must be in \[0, 1\), got -0.1"),
    (dict(hidden_dropout_prob=1.5), r"hidden_dropout_prob must be in \[0, 1\), got 1.5"),
    (dict(attention_probs_dropout_prob=float("nan")), r"attention_probs_dropout_prob must be in \[0, 1\), got nan"),
    (dict(layer_norm_eps=0), "layer_norm_eps must be a finite number > 0, got 0.0"),
    (dict(layer_norm_eps=-1e-6), "layer_norm_eps must be a finite number > 0, got -1e-06"),
    (dict(initializer_range=-1), "initializer_range must be a finite number >= 0, got -1.0"),
    (dict(num_channels=0), "num_channels must be an integer >= 1, got 0"),
    (dict(scale_factor=0, use_simple_decoder=True), "scale_factor must be an integer >= 1, got 0"),
    (dict(decoder_hidden_size=0), "decoder_hidden_size must be an integer >= 1, got 0"),
    (dict(num_deconv_layers=3), r"num_deconv_layers must be 1 or 2 \(classic head\), got 3"),
    (dict(window_size=0, attention_type="window"), r"window_size must be two positive integers .*got \[0, 0\]"),
    (dict(num_knowledge_tokens=-1), "num_knowledge_tokens must be an integer >= 0, got -1"),
    (dict(main_dataset_index=-1), "main_dataset_index must be an integer >= 0, got -1"),
    (dict(hidden_act="nope"), "hidden_act must be one of .* got 'nope'"),
    (dict(dataset_heads=[{"dataset_index": 1, "num_labels": 0}]),
     r"dataset_heads\[0\] \(dataset_index 1\): num_labels must be an integer >= 1, got 0"),
    (dict(dataset_heads=[{"dataset_index": -1, "num_labels": 3}]),
     r"dataset_heads\[0\]: dataset_index must be an integer >= 0, got -1"),
    (dict(dataset_heads=[{"dataset_index": 1, "num_labels": 3, "id2label": {"0": "a"}}]),
     r"dataset_heads\[0\] \(dataset_index 1\): id2label has 1 entries for num_labels 3"),
    (dict(dataset_heads=["aic"]), r"each dataset_heads entry needs dataset_index and num_labels, got dataset_heads\[0\] = 'aic'"),
])  # fmt: skip
def test_config_refuses_bad_fields(overrides, needle):
    with pytest.raises(ValueError, match=needle):
        VitPoseConfig(**tiny_config_kwargs(**overrides))


def test_valid_configs_still_build():
    """The presets (all sizes, simple, ViTPose++, 1/8 stride) and the tiny testers pass validation."""
    for name in ("small", "base", "large", "huge", "giant", "b-simple", "s-plus"):
        for stride in (16, 8):
            config = VitPoseConfig.from_preset(name, feature_stride=stride)
            assert config.num_hidden_layers >= 12
    assert VitPoseConfig(**tiny_config_kwargs(**TINY_PLUS)).num_datasets == 3
    assert VitPoseConfig(**tiny_config_kwargs(hidden_size=32.0)).hidden_size == 32  # an integral float is an int


def _edit_config(directory, **changes):
    path = directory / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("changes, needle", [
    (dict(num_attention_heads=0), "num_attention_heads must be an integer >= 1, got 0"),
    (dict(num_hidden_layers=-1), "num_hidden_layers must be an integer >= 1, got -1"),
    (dict(dataset_heads=[{"dataset_index": 1, "num_labels": 0}]), "num_labels must be an integer >= 1, got 0"),
])  # fmt: skip
def test_hand_edited_config_json_is_refused(tmp_path, changes, needle):
    VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs())).save_pretrained(tmp_path)
    _edit_config(tmp_path, **changes)
    with pytest.raises(ValueError, match=needle):
        VitPoseConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=needle):
        VitPoseForPoseEstimation.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=needle):
        VitPoseConfig.from_dict(json.loads((tmp_path / "config.json").read_text()))


def test_keyword_overrides_in_from_pretrained_are_validated(tmp_path):
    """transformers sets `from_pretrained(dir, field=...)` overrides on the built config, past __init__."""
    VitPoseConfig(**tiny_config_kwargs()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="num_hidden_layers must be an integer >= 1, got -1"):
        VitPoseConfig.from_pretrained(tmp_path, num_hidden_layers=-1)
    with pytest.raises(ValueError, match="layer_norm_eps must be a finite number > 0, got 0"):
        VitPoseConfig.from_pretrained(tmp_path, layer_norm_eps=0)
    assert VitPoseConfig.from_pretrained(tmp_path, num_hidden_layers=3).num_hidden_layers == 3


def test_save_pretrained_refuses_a_config_made_invalid_after_construction(tmp_path):
    config = VitPoseConfig(**tiny_config_kwargs())
    config.num_attention_heads = 0
    with pytest.raises(ValueError, match="num_attention_heads must be an integer >= 1, got 0"):
        config.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()


# ----------------------------------------------------------------------------- loading
@pytest.fixture
def tiny_checkpoint(tmp_path):
    directory = tmp_path / "ckpt"
    VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs())).save_pretrained(directory)
    return directory


def test_shape_mismatch_is_a_value_error_naming_tensors_and_shapes(tiny_checkpoint):
    with pytest.raises(ValueError) as info:
        VitPoseForPoseEstimation.from_pretrained(tiny_checkpoint, num_labels=5)
    message = str(info.value)
    assert str(tiny_checkpoint) in message and "2 weight(s) have another shape" in message
    assert "head.conv.weight: checkpoint (17, 16, 1, 1), model (5, 16, 1, 1)" in message
    assert "head.conv.bias: checkpoint (17,), model (5,)" in message
    assert "ignore_mismatched_sizes=True" in message
    # the documented way out still works and gives a fresh 5-keypoint head
    model = VitPoseForPoseEstimation.from_pretrained(tiny_checkpoint, num_labels=5, ignore_mismatched_sizes=True)
    assert model.head.conv.weight.shape == (5, 16, 1, 1)


def test_backbone_shape_mismatch_names_the_backbone_tensor(tiny_checkpoint):
    with pytest.raises(ValueError, match=r"backbone\.embeddings\.position_embeddings: checkpoint \(1, 49, 32\), "
                                         r"model \(1, 49, 64\)"):
        VitPoseForPoseEstimation.from_pretrained(tiny_checkpoint, hidden_size=64)
    with pytest.raises(ValueError, match=r"embeddings\.patch_embeddings\.projection\.weight: checkpoint \(32, 3, 8, 8\)"):
        VitPoseModel.from_pretrained(tiny_checkpoint, hidden_size=64)


def _corrupt(directory, kind):
    weights = directory / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "garbage": bytes(range(256)) * 16, "empty": b""}[kind])
    return weights


CAUSES = {"truncated": "incomplete metadata", "garbage": "header too large", "empty": "header too small"}


@pytest.mark.parametrize("kind", sorted(CAUSES))
def test_corrupt_weights_name_the_file_and_the_cause(tiny_checkpoint, kind):
    weights = _corrupt(tiny_checkpoint, kind)
    for load in (VitPoseForPoseEstimation.from_pretrained, VitPoseModel.from_pretrained):
        with pytest.raises(ValueError) as info:
            load(tiny_checkpoint)
        assert f"cannot read the weights file {weights}" in str(info.value)
        assert CAUSES[kind] in str(info.value)


def test_pipeline_with_corrupt_weights_shows_the_file_and_the_cause(tiny_checkpoint):
    """transformers' pipeline() swallows a ValueError from each model class and tries the next one,
    ending with its own VitPose, whose bare SafetensorError names no file: the cause must survive."""
    transformers = pytest.importorskip("transformers")
    from safetensors import SafetensorError

    from vitpose_hf import VitPoseTopDownImageProcessor

    VitPoseTopDownImageProcessor().save_pretrained(tiny_checkpoint)
    weights = _corrupt(tiny_checkpoint, "truncated")
    with pytest.raises(SafetensorError) as info:
        transformers.pipeline("keypoint-detection", model=str(tiny_checkpoint))
    assert f"cannot read the weights file {weights}" in str(info.value)
    assert "incomplete metadata" in str(info.value)


# ----------------------------------------------------------------------------- non-finite pixels
def test_non_finite_pixels_raise_in_eager_mode_and_the_check_can_be_switched_off():
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs())).eval()
    pixels = torch.randn(3, 3, 64, 48)
    pixels[1, 0, 5, 5] = float("nan")
    pixels[2, 2, 0, 0] = float("inf")
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"pixel_values holds 2 NaN/inf values \(in batch rows \[1, 2\]\)"):
            model(pixels)
        with pytest.raises(ValueError, match="NaN/inf"):
            model.backbone(pixels)
        assert torch.isfinite(model(pixels[:1]).heatmaps).all()  # the clean row alone runs
        model.config.check_finite_inputs = False
        heatmaps = model(pixels).heatmaps
    assert torch.isfinite(heatmaps[0]).all() and not torch.isfinite(heatmaps[1]).all()
    model.config.check_finite_inputs = True
    model.train()  # training batches are not read back (no host sync per step)
    assert not torch.isfinite(model(pixels).heatmaps[1]).all()


# ----------------------------------------------------------------------------- detectors
def test_detector_path_that_is_not_onnx_is_a_value_error(tmp_path):
    weights = tmp_path / "yolox_s.pth"
    weights.write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match=r"detector '.*yolox_s\.pth' is a file but not an \.onnx model; accepted: a YOLOX \.onnx"):
        build_detector(str(weights))
    with pytest.raises(ValueError, match=r"detector file not found: '.*missing\.pt'"):
        build_detector(str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match=r"detector '.*nowhere/at/all' is not an existing file or folder, nor a hub model id"):
        build_detector(str(tmp_path / "nowhere" / "at" / "all"))
    with pytest.raises(ValueError, match=r"is a file but not an \.onnx model"):
        HFDetector(str(weights))


def test_missing_onnx_detector_file_is_named(tmp_path, monkeypatch):
    """Named whether or not onnxruntime is installed (the file is checked first)."""
    missing = tmp_path / "yolox_nano.onnx"
    with pytest.raises(ValueError, match=r"ONNX file not found: '.*yolox_nano\.onnx'"):
        build_detector(str(missing))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ValueError, match=r"ONNX file not found: '.*yolox_nano\.onnx'"):
        build_detector(str(missing))


def test_detector_dicts_without_bbox_name_their_keys():
    detector = build_detector(lambda image: [{"box": [0, 0, 4, 4], "score": 0.9}])
    with pytest.raises(ValueError, match=r"""has no "bbox" \(its keys: \['box', 'score'\]\)"""):
        detector(Image.new("RGB", (8, 8)))
    with pytest.raises(ValueError, match=r"bbox must be 4 numbers \[x, y, w, h\], got 3"):
        build_detector(lambda image: [{"bbox": [0, 0, 4]}])(Image.new("RGB", (8, 8)))
    hf = HFDetector(lambda image, threshold: [{"score": 0.9, "label": "person", "bbox": [0, 0, 4, 4]}])
    with pytest.raises(ValueError, match=r"keys \['bbox', 'label', 'score'\]"):
        hf(Image.new("RGB", (8, 8)))


def test_non_finite_detector_boxes_are_dropped_with_a_count(caplog):
    nan = float("nan")
    boxes = [
        {"bbox": [1, 1, 4, 4], "score": 0.9},
        {"bbox": [nan, 1, 4, 4], "score": 0.8},
        {"bbox": [1, 1, float("inf"), 4], "score": 0.7},
        {"bbox": [1, 1, 4, 4], "score": nan},
        [2, 2, 0, 3],
    ]
    with caplog.at_level(logging.WARNING, logger="vitpose_hf.detectors"):
        out = CallableDetector(lambda image: boxes)(Image.new("RGB", (8, 8)))
    assert out == [{"bbox": [1.0, 1.0, 4.0, 4.0], "score": 0.9}]
    assert "dropped 4 of 5 boxes" in caplog.text
    caplog.clear()

    def pipe(image, threshold):
        return [
            {"score": 0.9, "label": "person", "box": {"xmin": 1, "ymin": 1, "xmax": 5, "ymax": 6}},
            {"score": 0.8, "label": "person", "box": {"xmin": nan, "ymin": 1, "xmax": 5, "ymax": 6}},
        ]

    with caplog.at_level(logging.WARNING, logger="vitpose_hf.detectors"):
        out = HFDetector(pipe)(Image.new("RGB", (8, 8)))
    assert out == [{"bbox": [1.0, 1.0, 4.0, 5.0], "score": 0.9}]
    assert "dropped 1 of 2 boxes with a NaN/inf coordinate or score" in caplog.text
    assert all(np.isfinite(d["bbox"]).all() for d in out)


def test_the_load_report_of_missing_keys_is_printed_once(tmp_path):
    """Issue 13 item 5: a backbone-only checkpoint loaded as a pose model printed transformers' table
    and then our own list of the same keys; a fresh process shows what a user sees."""
    import subprocess

    VitPoseModel(VitPoseConfig(**tiny_config_kwargs())).save_pretrained(tmp_path)
    code = ("import sys; from vitpose_hf import VitPoseForPoseEstimation as M; "
            f"M.from_pretrained({str(tmp_path)!r}); print('loaded')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent / "src")})
    assert run.returncode == 0 and "loaded" in run.stdout, run.stderr[-2000:]
    assert run.stderr.count("head.conv.weight") == 1, run.stderr[-3000:]
