"""Property-based fuzzing of processor -> tiny model -> post-processing (issue 12): random boxes
(degenerate, huge, negative, non-finite), image sizes (0 and 1 pixel included), PIL modes, numpy /
torch dtypes and layouts. Nothing may raise but ValueError, nothing may come out NaN, and pooled
crop memory is poisoned before every example so a pixel left unwritten shows up.

Bounded time: fixed `max_examples`, derandomized, no deadline (the machine is shared)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation, VitPoseTopDownImageProcessor, geometry  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny_config_kwargs  # noqa: E402

SETTINGS = settings(
    max_examples=60, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip

KINDS = [
    "PIL RGB", "PIL L", "PIL LA", "PIL RGBA", "PIL P", "PIL P+transparency", "PIL CMYK", "PIL 1", "PIL I;16",
    "PIL I", "PIL F", "uint8 HWC", "uint8 CHW", "uint8 HW", "uint8 HWC4", "uint8 HWC2", "uint16 HWC", "uint16 HW",
    "float32 HWC [0,1]", "float32 HWC [0,255]", "float32 HWC any", "float32 CHW [0,1]", "bool HW", "bool HWC",
    "int32 HWC", "torch uint8 CHW", "torch float32 CHW", "torch float32 HWC any", "torch bool HW",
]  # fmt: skip

SPECIAL = [0.0, -0.0, 1e-320, 1e-8, 0.5, 1.0, -1.0, 2.0**24, 2.0**24 + 1, 1e200, 1e308, -1e308, math.inf, -math.inf, math.nan]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs())).eval()
    return model, VitPoseTopDownImageProcessor(size={"height": 64, "width": 48})


def _make_image(kind: str, h: int, w: int, seed: int):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind.startswith("PIL"):
        mode = kind.split()[1]
        if h == 0 or w == 0:  # PIL cannot build these from arrays
            return Image.new(mode.split("+")[0], (w, h))
        if mode in ("RGB", "L", "LA", "RGBA", "CMYK", "1"):
            return Image.fromarray(rgb).convert(mode)
        if mode.startswith("P"):
            pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
            if "transparency" in mode:
                pal.info["transparency"] = int(rng.integers(0, 8))
            return pal
        if mode == "I;16":
            return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
        if mode == "I":
            low, high = (0, 65536) if rng.random() < 0.7 else (-10, 70000)  # sometimes out of range
            return Image.fromarray(rng.integers(low, high, (h, w)).astype(np.int32), "I")
        return Image.fromarray((rng.random((h, w)) * rng.choice([1.0, 255.0, 300.0])).astype(np.float32), "F")
    if kind == "uint8 HWC":
        return rgb
    if kind == "uint8 CHW":
        return np.ascontiguousarray(rgb.transpose(2, 0, 1))
    if kind == "uint8 HW":
        return rgb[..., 0]
    if kind == "uint8 HWC4":
        return np.concatenate([rgb, rgb[..., :1]], -1)
    if kind == "uint8 HWC2":
        return rgb[..., :2]
    if kind == "uint16 HWC":
        return rng.integers(0, 65536, (h, w, 3), dtype=np.uint16)
    if kind == "uint16 HW":
        return rng.integers(0, 65536, (h, w), dtype=np.uint16)
    if kind == "float32 HWC [0,1]":
        return rng.random((h, w, 3)).astype(np.float32)
    if kind == "float32 HWC [0,255]":
        return (rng.random((h, w, 3)) * 255).astype(np.float32)
    if kind in ("float32 HWC any", "torch float32 HWC any"):
        arr = (rng.standard_normal((h, w, 3)) * 200).astype(np.float32)
        if rng.random() < 0.5:
            arr = np.clip(np.abs(arr), 0, 255)
        if arr.size and rng.random() < 0.3:
            arr.flat[int(rng.integers(0, arr.size))] = rng.choice([np.nan, np.inf, -np.inf])
        return arr if kind.startswith("float") else torch.from_numpy(arr)
    if kind == "float32 CHW [0,1]":
        return np.ascontiguousarray(rng.random((3, h, w)).astype(np.float32))
    if kind == "bool HW":
        return rng.random((h, w)) > 0.5
    if kind == "bool HWC":
        return rng.random((h, w, 3)) > 0.5
    if kind == "int32 HWC":
        return rng.integers(0, 256 if rng.random() < 0.7 else 300, (h, w, 3)).astype(np.int32)
    if kind == "torch uint8 CHW":
        return torch.from_numpy(rgb).permute(2, 0, 1)
    if kind == "torch float32 CHW":
        return torch.from_numpy(rng.random((3, h, w)).astype(np.float32)) * float(rng.choice([1.0, 255.0]))
    if kind == "torch bool HW":
        return torch.from_numpy(rng.random((h, w)) > 0.5)
    raise AssertionError(kind)


def _poison_kept_buffers(workspace: geometry.CropWorkspace) -> None:
    """Fill the workspace's idle buffers with 0xFF bytes (float32 NaN): unwritten pixels show as NaN."""
    for buf in workspace.idle_buffers():
        buf.fill(0xFF)


def _pick(values: list):
    """One of `values`, by a uniform integer (hypothesis' sampled_from favours the first entries)."""
    return st.integers(0, 10 * len(values) - 1).map(lambda i: values[i % len(values)])


# two boxes in three are ordinary (inside, straddling or outside the image), one in three has at
# least a chance of hostile values, so most examples reach the model and post-processing
plain_box = st.tuples(
    st.floats(-60, 120), st.floats(-60, 120), st.floats(0.01, 150), st.floats(0.01, 150)
).map(list)  # fmt: skip
hostile_value = st.one_of(st.floats(-60, 150, allow_nan=False), _pick(SPECIAL))
hostile_box = st.tuples(hostile_value, hostile_value, hostile_value, hostile_value).map(list)
box = st.one_of(plain_box, plain_box, hostile_box)


kind = _pick(KINDS)
side = st.integers(0, 99).map(lambda i: [0, 1, 2, 7, 23, 40][i % 6] if i < 30 else 17 + i % 24)


@SETTINGS
@given(
    kind=kind,
    h=side,
    w=side,
    seed=st.integers(0, 2**16),
    boxes=st.lists(box, min_size=0, max_size=3),
    kernel_size=_pick([11] * 6 + [3, 1, 4, 0]),
    use_dark=st.booleans(),
    use_udp=st.booleans(),
    clamp=st.booleans(),
    threshold=_pick([None] * 6 + [0.1, 0.5, math.nan]),
    padding=_pick([1.25] * 12 + [1.0, 2.0, 0.0, -1.0, 1e300, math.nan]),
)
def test_processor_model_postprocess_fuzz(tiny, kind, h, w, seed, boxes, kernel_size, use_dark, use_udp, clamp, threshold, padding):
    model, processor = tiny
    image = _make_image(kind, h, w, seed)
    _poison_kept_buffers(processor.crop_workspace)
    try:
        inputs = processor(image, [boxes], padding=padding)
    except ValueError:
        return
    hypothesis.event(f"cropped {kind}")
    pixel_values = inputs["pixel_values"]
    assert pixel_values.shape == (len(boxes), 3, 64, 48)
    assert torch.isfinite(pixel_values).all(), "NaN / inf in the crops (stale or unwritten memory?)"
    if len(boxes) == 0:
        heatmaps = torch.zeros(0, 17, 32, 24)
    else:
        with torch.no_grad():
            heatmaps = model(pixel_values).heatmaps
    assert torch.isfinite(heatmaps).all()
    try:
        persons = processor.post_process_pose_estimation(
            heatmaps, [boxes], use_dark=use_dark, kernel_size=kernel_size, use_udp=use_udp, threshold=threshold,
            clamp_to_heatmap=clamp,
        )  # fmt: skip
    except ValueError:
        assert kernel_size in (4, 0) or threshold is not None and math.isnan(threshold)
        return
    hypothesis.event("decoded")
    assert len(persons) == 1 and len(persons[0]) == len(boxes)
    center, scale = processor.boxes_to_center_scale(torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4))
    for j, person in enumerate(persons[0]):
        assert torch.isfinite(person["keypoints"]).all() and torch.isfinite(person["scores"]).all()
        if clamp and use_udp:
            # on the heatmap = inside the crop window (post-processing uses the processor's default padding)
            half = scale[j] * 100.0
            kp = person["keypoints"].double()
            tol = 1e-4 * (1.0 + half.abs().max())
            assert bool(((kp >= center[j] - half - tol) & (kp <= center[j] + half + tol)).all())


@SETTINGS
@given(
    kind=kind,
    h=side,
    w=side,
    seed=st.integers(0, 2**16),
    boxes=st.lists(box, min_size=0, max_size=2),
)
def test_pipeline_and_processor_agree_fuzz(tiny, kind, h, w, seed, boxes):
    """The pipeline's crops equal the processor's, or the pipeline refuses with ValueError (it also
    refuses boxes entirely outside the image, which the processor crops as border)."""
    model, processor = tiny
    pipe = _pipe(model, processor)
    image = _make_image(kind, h, w, seed)
    try:
        ours = processor(image, [boxes])["pixel_values"]
    except ValueError:
        ours = None
    try:
        theirs = pipe.preprocess(image, boxes=boxes).get("pixel_values", torch.zeros(0, 3, 64, 48))
    except ValueError:
        return
    assert ours is not None, "the pipeline accepted what the processor refused"
    assert torch.equal(ours, theirs)


_PIPES: dict = {}


def _pipe(model, processor):
    key = id(model)
    if key not in _PIPES:
        import transformers

        import vitpose_hf  # noqa: F401  (registers the task)

        _PIPES[key] = transformers.pipeline("keypoint-detection", model=model, image_processor=processor, device="cpu")
    return _PIPES[key]
