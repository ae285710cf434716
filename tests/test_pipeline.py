"""The "keypoint-detection" pipeline against processor + model + decoding run by hand."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import vitpose_hf  # noqa: F401  (registers the task)
from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation
from vitpose_hf.detectors import CallableDetector
from vitpose_hf.keypoint_schemas import COCO, get_schema
from vitpose_hf.pipeline_keypoint_detection import TASK, KeypointDetectionPipeline, register_pipeline

from conftest import tiny_config_kwargs

VitPoseTopDownImageProcessor = pytest.importorskip("vitpose_hf.image_processing_vitpose").VitPoseTopDownImageProcessor


def _randomize(model):
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if "num_batches_tracked" in name:
                continue
            if "running_var" in name:
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.3)
    return model.eval()


def _processor():
    return VitPoseTopDownImageProcessor(size={"height": 64, "width": 48})


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """Our checkpoint format + our processor saved beside it."""
    path = tmp_path_factory.mktemp("tiny_ours")
    model = _randomize(VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs())))
    model.save_pretrained(path)
    _processor().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pipe(tiny_dir):
    return transformers.pipeline(TASK, model=str(tiny_dir), device="cpu")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    out = []
    for h, w in ((120, 90), (80, 140), (100, 100)):
        # smooth random image: low-res noise upsampled, so crops are not white noise
        small = rng.integers(0, 256, size=(h // 10, w // 10, 3), dtype=np.uint8)
        out.append(Image.fromarray(small).resize((w, h), Image.BILINEAR))
    return out


BOXES = [
    [[10.0, 12.0, 50.0, 80.0], [30.0, 5.0, 40.0, 60.0]],
    [[5.0, 10.0, 100.0, 50.0]],
    [[20.0, 20.0, 40.0, 70.0], [0.0, 0.0, 100.0, 100.0], [60.0, 50.0, 30.0, 45.0]],
]


def _by_hand(model, processor, image, boxes, flip_test=True, schema=COCO):
    inputs = processor([image], boxes=[boxes], return_tensors="pt")
    with torch.no_grad():
        heatmaps = processor.predict_heatmaps(
            model, inputs["pixel_values"], flip_test=flip_test, flip_pairs=list(schema.flip_pairs)
        )
    return processor.post_process_pose_estimation(heatmaps, boxes=[boxes])[0]


def _as_arrays(persons):
    xy = np.array([[[k["x"], k["y"]] for k in p["keypoints"]] for p in persons])
    scores = np.array([[k["score"] for k in p["keypoints"]] for p in persons])
    return xy, scores


def test_registered_and_idempotent(pipe):
    assert isinstance(pipe, KeypointDetectionPipeline)
    assert isinstance(pipe.model, VitPoseForPoseEstimation)
    assert isinstance(pipe.image_processor, VitPoseTopDownImageProcessor)
    before = dict(transformers.pipelines.PIPELINE_REGISTRY.supported_tasks[TASK])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_pipeline()
        vitpose_hf.register()
    assert transformers.pipelines.PIPELINE_REGISTRY.supported_tasks[TASK] == before


def test_output_structure_and_values_match_manual(pipe, images):
    image, boxes = images[0], BOXES[0]
    out = pipe(image, boxes=boxes)
    assert isinstance(out, list) and len(out) == 2
    for person, box in zip(out, boxes):
        assert set(person) == {"bbox", "box", "label", "score", "keypoints"}
        assert person["bbox"] == box
        assert isinstance(person["score"], float)
        assert [k["label"] for k in person["keypoints"]] == list(COCO.keypoints)
        for kp in person["keypoints"]:
            assert set(kp) == {"label", "x", "y", "score"}
            assert all(isinstance(kp[key], float) and np.isfinite(kp[key]) for key in ("x", "y", "score"))
    expected = _by_hand(pipe.model, pipe.image_processor, image, boxes)
    xy, scores = _as_arrays(out)
    for i, person in enumerate(expected):
        np.testing.assert_allclose(xy[i], np.asarray(person["keypoints"]), atol=1e-4)
        np.testing.assert_allclose(scores[i], np.asarray(person["scores"]), atol=1e-6)
        # person score = box score (1.0) x mean keypoint score above 0.2
        s = np.asarray(person["scores"], dtype=np.float64)
        assert out[i]["score"] == pytest.approx(s[s > 0.2].mean() if (s > 0.2).any() else 0.0, rel=1e-5)


def test_batching_across_images_equals_one_by_one(pipe, images):
    batched = pipe(images, boxes=BOXES, batch_size=2)
    assert len(batched) == 3 and [len(b) for b in batched] == [2, 1, 3]
    for image, boxes, got in zip(images, BOXES, batched):
        single = pipe(image, boxes=boxes)
        a, sa = _as_arrays(got)
        b, sb = _as_arrays(single)
        np.testing.assert_allclose(a, b, atol=1e-3)
        np.testing.assert_allclose(sa, sb, atol=1e-5)
    # tuples work too, and box scores scale the person score
    scored = pipe(tuple(images[:1]), boxes=BOXES[:1], box_scores=[[0.5, 1.0]])[0]
    assert scored[0]["score"] == pytest.approx(0.5 * batched[0][0]["score"], rel=1e-5)


def test_dict_inputs_and_generators_stream(pipe, images):
    reference = [pipe(image, boxes=boxes) for image, boxes in zip(images, BOXES)]
    as_dicts = [{"image": image, "boxes": boxes} for image, boxes in zip(images, BOXES)]
    for result in (pipe(as_dicts), list(pipe(d for d in as_dicts)), list(pipe((d for d in as_dicts), batch_size=2))):
        assert [len(r) for r in result] == [2, 1, 3]
        for got, exp in zip(result, reference):
            np.testing.assert_allclose(_as_arrays(got)[0], _as_arrays(exp)[0], atol=1e-3)
    with pytest.raises(ValueError, match="'image' key"):
        pipe({"boxes": BOXES[0]})


def test_save_pretrained_reloads_without_remote_code(pipe, images, tmp_path):
    pipe.save_pretrained(tmp_path)
    saved_code = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".py")
    # the model and processor code (for trust_remote_code without the package), not the pipeline's
    assert "modeling_vitpose.py" in saved_code and "image_processing_vitpose.py" in saved_code
    assert "pipeline_keypoint_detection.py" not in saved_code
    assert "custom_pipelines" not in json.loads((tmp_path / "config.json").read_text())
    again = transformers.pipeline(TASK, model=str(tmp_path), device="cpu")
    np.testing.assert_allclose(
        _as_arrays(again(images[0], boxes=BOXES[0]))[0], _as_arrays(pipe(images[0], boxes=BOXES[0]))[0], atol=1e-5
    )


def test_flip_test_changes_values_not_shapes(pipe, images):
    with_flip = pipe(images[1], boxes=BOXES[1])
    no_flip = pipe(images[1], boxes=BOXES[1], flip_test=False)
    a, sa = _as_arrays(with_flip)
    b, sb = _as_arrays(no_flip)
    assert a.shape == b.shape == (1, 17, 2)
    assert not np.allclose(sa, sb)
    expected = _by_hand(pipe.model, pipe.image_processor, images[1], BOXES[1], flip_test=False)
    np.testing.assert_allclose(b[0], np.asarray(expected[0]["keypoints"]), atol=1e-4)


def test_keypoint_threshold(pipe, images):
    full = pipe(images[2], boxes=BOXES[2])
    scores = np.array([k["score"] for p in full for k in p["keypoints"]])
    threshold = float(np.median(scores))
    cut = pipe(images[2], boxes=BOXES[2], keypoint_threshold=threshold)
    for p_full, p_cut in zip(full, cut):
        kept = [k for k in p_full["keypoints"] if k["score"] >= threshold]
        assert [k["label"] for k in p_cut["keypoints"]] == [k["label"] for k in kept]
        assert p_cut["score"] == p_full["score"]
    assert 0 < sum(len(p["keypoints"]) for p in cut) < scores.size


def test_whole_image_mode_takes_the_frame_as_one_person(pipe, images):
    image = images[1]
    out = pipe(image, whole_image=True)
    assert len(out) == 1 and out[0]["bbox"] == [0.0, 0.0, float(image.width), float(image.height)]
    expected = _by_hand(pipe.model, pipe.image_processor, image, [[0.0, 0.0, float(image.width), float(image.height)]])
    np.testing.assert_allclose(_as_arrays(out)[0][0], np.asarray(expected[0]["keypoints"]), atol=1e-4)


def test_detector_argument(pipe, images):
    calls = []

    def fake(im):
        calls.append(im.size)
        return [{"bbox": [5, 5, 40, 60], "score": 0.9}, {"bbox": [1, 1, 20, 20], "score": 0.4}]

    det = CallableDetector(fake)
    out = pipe(images[0], detector=det)
    assert [p["bbox"] for p in out] == [[5.0, 5.0, 40.0, 60.0], [1.0, 1.0, 20.0, 20.0]]
    assert calls == [images[0].size]
    assert len(pipe(images[0], detector=det, max_persons=1)) == 1
    assert len(pipe(images[0], detector=det, detection_threshold=0.5)) == 1
    assert pipe(images[0], detector=CallableDetector(lambda im: [])) == []
    assert pipe(images[:2], detector=CallableDetector(lambda im: [])) == [[], []]


def test_bad_inputs(pipe, images, tmp_path):
    with pytest.raises(ValueError, match="empty list"):
        pipe([])
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match="broken.png"):
        pipe(str(corrupt))
    with pytest.raises(ValueError, match="zero or negative"):
        pipe(images[0], boxes=[[10, 10, 0, 20]])
    with pytest.raises(ValueError, match="zero or negative"):
        pipe(images[0], boxes=[[10, 10, 5, -2]])
    with pytest.raises(ValueError, match="NaN"):
        pipe(images[0], boxes=[[float("nan"), 10, 5, 5]])
    with pytest.raises(ValueError, match="outside"):
        pipe(images[0], boxes=[[500, 500, 10, 10]])
    with pytest.raises(ValueError, match="shape"):
        pipe(images[0], boxes=[[1, 2, 3]])
    with pytest.raises(ValueError, match="one entry per image"):
        pipe(images[:2], boxes=BOXES[:1])
    with pytest.raises(ValueError, match="unknown"):
        pipe(images[0], not_an_option=1)
    assert pipe(images[0], boxes=[]) == []


def test_image_kinds_give_finite_keypoints(pipe, images, tmp_path):
    rgb = np.asarray(images[0])
    gray16 = (rgb[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    path16 = tmp_path / "g16.png"
    Image.fromarray(gray16).save(path16)
    kinds = [Image.fromarray(rgb[..., 0], "L"), Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA"), str(path16), rgb]
    for kind in kinds:
        out = pipe(kind, boxes=[[-10.0, -5.0, 60.0, 200.0]])  # sticks out of the image: padded crop
        xy, scores = _as_arrays(out)
        assert np.all(np.isfinite(xy)) and np.all(np.isfinite(scores))


def test_transformers_format_checkpoint_without_processor(tmp_path, images):
    """A transformers VitPose checkpoint (no preprocessor config) -> our model class, default processor,
    same keypoints as transformers' own model through our processor and decoding."""
    backbone = transformers.VitPoseBackboneConfig(
        image_size=[64, 48], patch_size=[8, 8], hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        out_indices=[2], layer_norm_eps=1e-6,
    )  # fmt: skip
    config = transformers.VitPoseConfig(backbone_config=backbone, num_labels=17)
    reference = _randomize(transformers.VitPoseForPoseEstimation(config))
    reference.save_pretrained(tmp_path)
    pipe = transformers.pipeline(TASK, model=str(tmp_path), device="cpu")
    assert isinstance(pipe.model, VitPoseForPoseEstimation)
    assert tuple(pipe.image_processor.size.values()) == (64, 48) or pipe.image_processor.size == {"height": 64, "width": 48}
    boxes = BOXES[0]
    out = pipe(images[0], boxes=boxes, flip_test=False)
    processor = _processor()
    inputs = processor([images[0]], boxes=[boxes], return_tensors="pt")
    with torch.no_grad():
        heatmaps = reference(inputs["pixel_values"]).heatmaps
    expected = processor.post_process_pose_estimation(heatmaps, boxes=[boxes])[0]
    xy, scores = _as_arrays(out)
    for i, person in enumerate(expected):
        # heatmaps agree to ~1e-6 (tested in test_transformers_parity); DARK's log-Taylor step can
        # amplify that to ~1e-3 px on a flat random heatmap
        np.testing.assert_allclose(xy[i], np.asarray(person["keypoints"]), atol=1e-2)
        np.testing.assert_allclose(scores[i], np.asarray(person["scores"]), atol=1e-5)


def test_multi_head_model_picks_schema_by_dataset_index(tmp_path, images):
    try:
        mpii = get_schema("mpii")
    except ValueError:
        pytest.skip("MPII schema not available")
    config = VitPoseConfig(
        **tiny_config_kwargs(), num_experts=3, part_features=8,
        dataset_heads=[{"dataset_index": 2, "num_labels": 16, "name": "mpii"}],
    )  # fmt: skip
    model = _randomize(VitPoseForPoseEstimation(config))
    pipe = transformers.pipeline(TASK, model=model, image_processor=_processor(), device="cpu")
    coco_out = pipe(images[0], boxes=BOXES[0][:1])
    mpii_out = pipe(images[0], boxes=BOXES[0][:1], dataset_index=2)
    assert [k["label"] for k in coco_out[0]["keypoints"]] == list(COCO.keypoints)
    assert [k["label"] for k in mpii_out[0]["keypoints"]] == list(mpii.keypoints)
    # by hand: MPII head, MPII flip pairs
    processor = pipe.image_processor
    inputs = processor([images[0]], boxes=[BOXES[0][:1]], return_tensors="pt")
    with torch.no_grad():
        heatmaps = processor.predict_heatmaps(
            model, inputs["pixel_values"], flip_test=True, flip_pairs=list(mpii.flip_pairs),
            dataset_index=torch.tensor([2]),
        )[:, :16]  # fmt: skip
    expected = processor.post_process_pose_estimation(heatmaps, boxes=[BOXES[0][:1]])[0][0]
    np.testing.assert_allclose(_as_arrays(mpii_out)[0][0], np.asarray(expected["keypoints"]), atol=1e-4)
    with pytest.raises(ValueError, match="keypoints"):
        pipe(images[0], boxes=BOXES[0][:1], dataset_index=2, schema="coco")


def test_yolox_detector_on_real_images(pipe, yolox_onnx, shared_data):
    pytest.importorskip("onnxruntime")
    from vitpose_hf.detectors import YoloxOnnxDetector

    path = shared_data / "coco_sample" / "000000196141.jpg"
    detections = YoloxOnnxDetector(yolox_onnx)(path)
    out = pipe(str(path), detector=str(yolox_onnx), flip_test=False)
    assert len(out) == len(detections) >= 3
    for person, det in zip(out, detections):
        np.testing.assert_allclose(person["bbox"], det["bbox"], atol=1e-6)
        xy, _ = _as_arrays([person])
        # keypoints land around the crop of their box (padded 1.25x, widened to 3:4); DARK's Taylor
        # step on an untrained model's flat heatmaps may push single points somewhat outside it
        center, scale = pipe.image_processor.boxes_to_center_scale(torch.tensor([det["bbox"]], dtype=torch.float64))
        half = scale[0].numpy() * pipe.image_processor.normalize_factor / 2
        assert np.all(np.isfinite(xy))
        assert np.all(np.abs(np.median(xy[0], axis=0) - center[0].numpy()) <= half)
    assert len(pipe(str(path), detector=str(yolox_onnx), max_persons=2, flip_test=False)) == 2
    assert pipe(str(path), detector=str(yolox_onnx), detection_threshold=0.999) == []
    assert pipe(Image.new("RGB", (200, 150), (128, 128, 128)), detector=str(yolox_onnx)) == []


def test_random_boxes_never_give_nan(pipe):
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    image = Image.new("RGB", (90, 70), (90, 120, 150))

    @hypothesis.settings(max_examples=12, deadline=None, derandomize=True)
    @hypothesis.given(
        x=st.floats(-80, 85), y=st.floats(-60, 65), w=st.floats(0.5, 300), h=st.floats(0.5, 300),
    )  # fmt: skip
    def check(x, y, w, h):
        if x >= 90 or y >= 70 or x + w <= 0 or y + h <= 0:
            with pytest.raises(ValueError, match="outside"):
                pipe(image, boxes=[[x, y, w, h]], flip_test=False)
            return
        xy, scores = _as_arrays(pipe(image, boxes=[[x, y, w, h]], flip_test=False))
        assert np.all(np.isfinite(xy)) and np.all(np.isfinite(scores))

    check()


@pytest.mark.slow
def test_huge_image(pipe):
    """A 10000x10000 image: a person box and whole-image mode give finite keypoints."""
    image = Image.fromarray(np.full((10000, 10000, 3), 100, np.uint8))
    for extra in ({"boxes": [[100.0, 200.0, 3000.0, 6000.0]]}, {"whole_image": True}):
        out = pipe(image, **extra, flip_test=False)
        xy, scores = _as_arrays(out)
        assert xy.shape == (1, 17, 2) and np.all(np.isfinite(xy)) and np.all(np.isfinite(scores))
