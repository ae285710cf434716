"""Person detectors: NMS, YOLOX ONNX (real weights, real images), transformers pipelines, image loading."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vitpose_hf.detectors import (
    BaseDetector,
    CallableDetector,
    HFDetector,
    YoloxOnnxDetector,
    build_detector,
    load_rgb_image,
    nms,
)


def iou_xywh(a, b) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


# ------------------------------------------------------------------------------------- NMS


def _nms_reference(boxes, scores, thr):
    """Plain-python greedy NMS, box by box."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        ok = True
        for j in keep:
            a = [boxes[i][0], boxes[i][1], boxes[i][2] - boxes[i][0], boxes[i][3] - boxes[i][1]]
            b = [boxes[j][0], boxes[j][1], boxes[j][2] - boxes[j][0], boxes[j][3] - boxes[j][1]]
            if iou_xywh(a, b) > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def test_nms_matches_reference():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, size=(60, 2))
    wh = rng.uniform(5, 50, size=(60, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.uniform(size=60)
    for thr in (0.1, 0.45, 0.7):
        assert nms(boxes, scores, thr).tolist() == _nms_reference(boxes.tolist(), scores.tolist(), thr)
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


# ------------------------------------------------------------------------------------- YOLOX


@pytest.fixture(scope="module")
def yolox(yolox_onnx):
    pytest.importorskip("onnxruntime")
    return YoloxOnnxDetector(yolox_onnx)


def test_yolox_preprocess_letterbox(yolox):
    """Top-left letterbox: resized BGR content, 114 padding, 0..255 floats, (1, 3, 416, 416)."""
    rgb = np.zeros((100, 200, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # pure red in RGB
    blob, ratio = yolox.preprocess(Image.fromarray(rgb))
    assert blob.shape == (1, 3, 416, 416) and blob.dtype == np.float32
    assert ratio == pytest.approx(416 / 200)
    content_h = int(100 * ratio)
    # BGR: red ends up in channel 2
    assert np.all(blob[0, 2, :content_h, :] == 200) and np.all(blob[0, :2, :content_h, :] == 0)
    assert np.all(blob[0, :, content_h:, :] == 114)


def test_yolox_decode_grid(yolox):
    """One raw row per grid cell: centre = (xy + grid) * stride, size = exp(wh) * stride."""
    n = sum((416 // s) ** 2 for s in (8, 16, 32))
    raw = np.zeros((n, 85), dtype=np.float32)
    # row of stride 16, cell (x=3, y=2): index 52*52 + 2*26 + 3
    row = 52 * 52 + 2 * 26 + 3
    raw[row, :4] = [0.5, 0.25, np.log(2.0), 0.0]
    out = yolox.decode(raw)
    np.testing.assert_allclose(out[row, :4], [(3 + 0.5) * 16, (2 + 0.25) * 16, 32.0, 16.0], rtol=1e-6)
    with pytest.raises(ValueError, match="rows"):
        yolox.decode(raw[:-1])


def test_yolox_finds_coco_sample_persons(yolox, shared_data):
    """Real detector on real images: recall and precision against the annotated persons."""
    folder = shared_data / "coco_sample"
    ann = json.loads((folder / "test_coco.json").read_text())
    matched = total = false_pos = 0
    for image in ann["images"]:
        dets = yolox(folder / image["file_name"])
        pil = Image.open(folder / image["file_name"])
        gts = [a for a in ann["annotations"] if a["image_id"] == image["id"]]
        for det in dets:
            x, y, w, h = det["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= pil.width + 1e-6 and y + h <= pil.height + 1e-6
            assert 0.3 <= det["score"] <= 1.0
            if max((iou_xywh(det["bbox"], g["bbox"]) for g in gts), default=0.0) < 0.5:
                false_pos += 1
        assert [d["score"] for d in dets] == sorted((d["score"] for d in dets), reverse=True)
        for gt in gts:
            if gt["num_keypoints"] == 0:
                continue
            total += 1
            matched += max((iou_xywh(gt["bbox"], d["bbox"]) for d in dets), default=0.0) >= 0.5
    assert total == 12
    # measured: 11 of 12 persons at IoU >= 0.5 (the 12th is half hidden behind another person)
    assert matched >= 10, f"YOLOX recall {matched}/{total}"
    assert false_pos <= 1


def test_yolox_blank_image_and_thresholds(yolox, shared_data):
    assert yolox(Image.new("RGB", (320, 240), (127, 127, 127))) == []
    path = shared_data / "coco_sample" / "000000196141.jpg"
    assert yolox(path, score_threshold=0.99) == []
    assert len(yolox(path, max_detections=2)) == 2
    low = yolox(path, score_threshold=0.05)
    assert len(low) >= len(yolox(path))


def test_yolox_bad_inputs(yolox_onnx, tmp_path):
    pytest.importorskip("onnxruntime")
    with pytest.raises(ValueError, match="not found"):
        YoloxOnnxDetector(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="score_threshold"):
        YoloxOnnxDetector(yolox_onnx, score_threshold=2.0)


def test_yolox_without_onnxruntime(monkeypatch, yolox_onnx):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match="pip install onnxruntime"):
        YoloxOnnxDetector(yolox_onnx)


# ------------------------------------------------------------------------------------- transformers


def _fake_detection_pipe(image, threshold=0.5):
    return [
        {"score": 0.9, "label": "person", "box": {"xmin": 10, "ymin": 20, "xmax": 50, "ymax": 90}},
        {"score": 0.95, "label": "dog", "box": {"xmin": 0, "ymin": 0, "xmax": 5, "ymax": 5}},
        {"score": 0.7, "label": "Person", "box": {"xmin": -5, "ymin": 30, "xmax": 500, "ymax": 40}},
        {"score": 0.2, "label": "person", "box": {"xmin": 1, "ymin": 1, "xmax": 3, "ymax": 3}},
    ]


def test_hf_detector_filters_persons_and_converts_boxes():
    det = HFDetector(_fake_detection_pipe, score_threshold=0.5)
    out = det(Image.new("RGB", (100, 100)))
    assert out == [
        {"bbox": [10.0, 20.0, 40.0, 70.0], "score": 0.9},
        {"bbox": [0.0, 30.0, 100.0, 10.0], "score": 0.7},  # clipped to the image
    ]
    assert det(Image.new("RGB", (100, 100)), max_detections=1) == out[:1]
    assert HFDetector(lambda image, threshold: [], score_threshold=0.1)(Image.new("RGB", (8, 8))) == []


def test_hf_detector_with_real_transformers_pipeline(tmp_path):
    """A tiny random YOLOS inside a real transformers object-detection pipeline."""
    transformers = pytest.importorskip("transformers")
    from transformers import YolosConfig, YolosForObjectDetection

    try:
        from transformers import YolosImageProcessorPil as Proc
    except ImportError:  # older transformers
        from transformers import YolosImageProcessor as Proc
    config = YolosConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=[64, 64],
        patch_size=16, num_detection_tokens=5, id2label={0: "person", 1: "dog"}, label2id={"person": 0, "dog": 1},
    )  # fmt: skip
    model = YolosForObjectDetection(config).eval()
    with torch.no_grad():  # make "person" (class 0) the likeliest label of every detection token
        last = model.class_labels_classifier.layers[-1]
        last.bias.copy_(torch.tensor([4.0, 0.0, 0.0]))
    pipe = transformers.pipeline(
        "object-detection", model=model, image_processor=Proc(size={"shortest_edge": 64, "longest_edge": 64})
    )
    image = Image.new("RGB", (80, 60), (30, 60, 90))
    raw = [d for d in pipe(image, threshold=0.0) if d["label"] == "person"]
    expected = [
        {"bbox": [float(b["xmin"]), float(b["ymin"]), float(b["xmax"] - b["xmin"]), float(b["ymax"] - b["ymin"])], "score": d["score"]}
        for d in raw
        for b in [d["box"]]
        if b["xmax"] > b["xmin"] and b["ymax"] > b["ymin"]
    ]
    expected.sort(key=lambda d: -d["score"])
    detector = build_detector(pipe, score_threshold=0.0)
    assert isinstance(detector, HFDetector)
    out = detector(image)
    assert len(out) == len(expected) > 0
    for got, exp in zip(out, expected):
        assert got["score"] == pytest.approx(exp["score"])
        x, y, w, h = got["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 80 and y + h <= 60 and w > 0 and h > 0
    # a model directory (what a hub id resolves to) builds the same detector
    model.save_pretrained(tmp_path)
    pipe.image_processor.save_pretrained(tmp_path)
    from_dir = build_detector(str(tmp_path), score_threshold=0.0)
    assert isinstance(from_dir, HFDetector)
    assert [d["score"] for d in from_dir(image)] == pytest.approx([d["score"] for d in out])


def test_build_detector_dispatch(yolox_onnx):
    assert build_detector(None) is None
    fn = CallableDetector(lambda im: [[0, 0, 4, 4]])
    assert build_detector(fn) is fn
    wrapped = build_detector(lambda im: [{"bbox": [1, 2, 3, 4], "score": 0.4}, [0, 0, 2, 2]], score_threshold=0.5)
    assert isinstance(wrapped, BaseDetector)
    assert wrapped(Image.new("RGB", (8, 8))) == [{"bbox": [0.0, 0.0, 2.0, 2.0], "score": 1.0}]
    pytest.importorskip("onnxruntime")
    yolo = build_detector(str(yolox_onnx), score_threshold=0.4, max_detections=3)
    assert isinstance(yolo, YoloxOnnxDetector) and yolo.score_threshold == 0.4 and yolo.max_detections == 3
    with pytest.raises(ValueError, match="cannot build"):
        build_detector(42)


# ------------------------------------------------------------------------------------- images


def test_load_rgb_image_modes(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    assert load_rgb_image(base) is base
    np.testing.assert_array_equal(np.asarray(load_rgb_image(rgb)), rgb)
    # alpha composited over white (image_io's rule), rounded to 8 bits
    rgba = np.concatenate([rgb, np.full((12, 10, 1), 7, np.uint8)], axis=-1)
    over_white = np.round(rgb * (7 / 255) + 255 * (1 - 7 / 255))
    np.testing.assert_allclose(np.asarray(load_rgb_image(Image.fromarray(rgba, "RGBA"))), over_white, atol=0.5)
    gray = rgb[..., 0]
    out = np.asarray(load_rgb_image(Image.fromarray(gray, "L")))
    assert out.shape == (12, 10, 3) and np.all(out == gray[..., None])
    # 16-bit: full range scaled to 8 bits, not clipped
    g16 = (gray.astype(np.uint16) * 257).astype(np.uint16)
    path16 = tmp_path / "g16.png"
    Image.fromarray(g16).save(path16)
    out16 = np.asarray(load_rgb_image(path16))
    np.testing.assert_array_equal(out16[..., 0], gray)
    np.testing.assert_array_equal(np.asarray(load_rgb_image(rgb.astype(np.float32) / 255.0)), rgb)


def test_load_rgb_image_bad_inputs(tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match="corrupt.jpg"):
        load_rgb_image(bad)
    with pytest.raises(ValueError, match="not found"):
        load_rgb_image(tmp_path / "nothing.png")
    with pytest.raises(ValueError, match="channels"):
        load_rgb_image(np.zeros((5, 4, 6), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        load_rgb_image(np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="unsupported"):
        load_rgb_image(3.5)
