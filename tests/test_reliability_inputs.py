"""Bad and unusual inputs of the image processor, the pipeline and the crop geometry (issue 12,
items 4, 6, 8 and 10): no stale memory, one image conversion, non-finite pixels refused,
parameters validated where they enter, an opt-in clamp of the DARK refinement."""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation, VitPoseTopDownImageProcessor, geometry
from vitpose_hf.geometry import box_xywh_to_center_scale, get_udp_warp_matrix, warp_affine_batch
from vitpose_hf.image_processing_vitpose import decode_heatmaps, predict_heatmaps, to_rgb_tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny_config_kwargs  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406])
STD = torch.tensor([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def processor():
    return VitPoseTopDownImageProcessor(size={"height": 64, "width": 48})


@pytest.fixture(scope="module")
def pipe(processor):
    import transformers

    import vitpose_hf  # noqa: F401  (registers the task)

    torch.manual_seed(0)
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs())).eval()
    return transformers.pipeline("keypoint-detection", model=model, image_processor=processor, device="cpu")


def _poison_kept_buffers(workspace: geometry.CropWorkspace) -> int:
    """Fill a crop workspace's kept buffers (output, scratch planes) that no live result uses with
    0xFF bytes (0xFFFFFFFF is a float32 NaN): any output pixel a call does not write then shows up as
    NaN. Returns how many buffers were poisoned."""
    idle = workspace.idle_buffers()
    for buf in idle:
        buf.fill(0xFF)
    return len(idle)


# ----------------------------------------------------------------------------- item 4: stale memory
@pytest.mark.parametrize("height, width", [(0, 0), (0, 10), (10, 0)])
def test_empty_image_after_a_white_image_is_refused(processor, height, width):
    white = np.full((100, 100, 3), 255, np.uint8)
    kinds = {
        "numpy": np.zeros((height, width, 3), np.uint8),
        "torch": torch.zeros(3, height, width, dtype=torch.uint8),
        "PIL": Image.new("RGB", (width, height)),
        "grey": np.zeros((height, width), np.float32),
    }
    for name, empty in kinds.items():
        out = processor(white, [[[10.0, 10.0, 50.0, 50.0]]])["pixel_values"]
        assert float(out.max()) > 2.0  # white, normalised
        del out  # released: its memory may be handed out again
        with pytest.raises(ValueError, match=rf"image 0 is empty: {width}x{height} pixels"):
            processor(empty, [[[0.0, 0.0, 5.0, 5.0]]])
    # an empty image without boxes is never read: no crops, no error
    assert processor(kinds["numpy"], [[]])["pixel_values"].shape == (0, 3, 64, 48)


@pytest.mark.parametrize("backend", ["torch", "cv2"])
@pytest.mark.parametrize("shape", [(3, 0, 0), (3, 0, 10), (3, 10, 0)])
def test_warp_of_an_empty_image_is_all_border(backend, shape):
    if backend == "cv2":
        pytest.importorskip("cv2")
    center, scale = box_xywh_to_center_scale(torch.tensor([[0.0, 0.0, 5.0, 5.0], [2.0, 1.0, 3.0, 8.0]]), 0.75)
    m = get_udp_warp_matrix(center, scale, (8, 6)).float()
    white = torch.full((3, 30, 30), 255.0)
    workspace = geometry.CropWorkspace()
    del_me = warp_affine_batch(white, m, (8, 6), backend=backend, workspace=workspace)
    assert float(del_me.max()) > 250.0
    del del_me  # released: the cv2 backend may hand its memory out again
    assert _poison_kept_buffers(workspace) == (2 if backend == "cv2" else 0)  # output and scratch
    got = warp_affine_batch(torch.zeros(shape), m, (8, 6), border_value=7.0, backend=backend, workspace=workspace,
                            channel_scale=[2.0, 1.0, 0.5], channel_offset=[1.0, 0.0, -1.0])  # fmt: skip
    expected = torch.tensor([7.0 * 2 + 1, 7.0, 7.0 * 0.5 - 1]).view(1, 3, 1, 1).expand(2, 3, 8, 6)
    assert torch.equal(got, expected)


def test_kept_buffers_never_leak_into_crops(processor):
    """Poisoned pool / scratch memory never shows: every output pixel is written on every call."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
    boxes = [[[5.0, 5.0, 40.0, 60.0], [-30.0, -30.0, 20.0, 20.0], [200.0, 5.0, 10.0, 10.0], [60.0, 80.0, 30.0, 30.0]]]
    reference = processor(image, boxes)["pixel_values"].clone()
    for layout in (image, torch.from_numpy(image).permute(2, 0, 1), image.astype(np.float32)):
        assert _poison_kept_buffers(processor.crop_workspace) >= 1  # at least the released output
        out = processor(layout, boxes)["pixel_values"]
        assert torch.isfinite(out).all()
        assert torch.allclose(out, reference, atol=1e-5)
        del out


# ----------------------------------------------------------------------------- item 8: batch of 0 crops
def test_zero_crops_give_empty_results(processor, pipe):
    img = np.zeros((50, 60, 3), np.uint8)
    for boxes in ([[]], [np.zeros((0, 4))], [torch.zeros(0, 4)], np.zeros((1, 0, 4))):
        out = processor(img, boxes)
        assert out["pixel_values"].shape == (0, 3, 64, 48) and out["box_counts"].tolist() == [0]
        assert processor.post_process_pose_estimation(torch.zeros(0, 17, 16, 12), boxes) == [[]]
    assert processor.post_process_pose_estimation(torch.zeros(0, 17, 16, 12), []) == []
    coords, scores = decode_heatmaps(torch.zeros(0, 17, 16, 12), clamp_to_heatmap=True)
    assert coords.shape == (0, 17, 2) and scores.shape == (0, 17)
    assert pipe(img, boxes=[]) == []
    assert pipe(img, boxes=np.zeros((0, 4))) == []
    assert pipe([img, img], boxes=[[], np.zeros((0, 4))]) == [[], []]
    with pytest.raises(ValueError, match=r"at least 1x1, got maps of 0x12"):
        decode_heatmaps(torch.zeros(2, 17, 0, 12))


@pytest.mark.parametrize("simple", [False, True])
def test_the_model_and_the_losses_take_a_batch_of_0_crops(simple):
    from vitpose_hf import inference_model
    from vitpose_hf.training.trainer import multi_dataset_pose_loss

    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(use_simple_decoder=simple))).eval()
    empty = torch.zeros(0, 3, 64, 48)
    with torch.no_grad():
        heatmaps = model(empty).heatmaps
        one = model(torch.zeros(1, 3, 64, 48)).heatmaps
        assert heatmaps.shape == (0,) + one.shape[1:]
        assert inference_model(model)(empty).heatmaps.shape == heatmaps.shape
    model.train()
    out = model(empty, labels=torch.zeros(heatmaps.shape), target_weight=torch.ones(0, 17))
    assert out.loss.item() == 0.0  # not the NaN of an empty mean
    out.loss.backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in model.parameters())
    loss = multi_dataset_pose_loss(torch.zeros(heatmaps.shape), torch.zeros(heatmaps.shape), torch.ones(0, 17),
                                   torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0


# ----------------------------------------------------------------------------- item 6: one conversion
def _png(image: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    buf.seek(0)
    return Image.open(buf)


def _image_kinds(tmp_path: Path) -> dict:
    rng = np.random.default_rng(3)
    h, w = 40, 30
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
    grey = rgb[..., 0]
    g16 = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal_t = pal.copy()
    pal_t.info["transparency"] = 3
    rgba_path = tmp_path / "rgba.png"
    Image.fromarray(np.concatenate([rgb, alpha], -1), "RGBA").save(rgba_path)
    g16_path = tmp_path / "g16.png"
    Image.fromarray(g16).save(g16_path)
    unit = rng.random((h, w, 3)).astype(np.float32)
    return {
        "PIL RGBA": Image.fromarray(np.concatenate([rgb, alpha], -1), "RGBA"),
        "PIL LA": Image.fromarray(np.concatenate([rgb[..., :1], alpha], -1), "LA"),
        "PIL P": pal,
        "PIL P + transparency": pal_t,
        "PIL PA": pal.convert("PA") if hasattr(Image, "Palette") else pal,
        "PIL CMYK": Image.fromarray(rgb).convert("CMYK"),
        "PIL L": Image.fromarray(grey, "L"),
        "PIL 1": Image.fromarray(grey).convert("1"),
        "PIL I;16": Image.fromarray(g16),
        "PIL I": Image.fromarray(g16.astype(np.int32), "I"),
        "PIL F [0, 1]": Image.fromarray(unit[..., 0], "F"),
        "PNG RGBA path": str(rgba_path),
        "PNG 16-bit path": g16_path,
        "PNG P decoded": _png(pal_t),
        "uint16 HW": g16,
        "uint16 HWC": np.stack([g16, g16[::-1], g16[:, ::-1]], -1),
        "float32 [0, 1] HWC": unit,
        "float64 [0, 255] HWC": rgb.astype(np.float64) * 0.99 + 0.25,
        "float32 [0, 1] RGBA": np.concatenate([unit, unit[..., :1]], -1),
        "bool HW": grey > 128,
        "bool HWC": rgb > 100,
        "uint8 HW": grey,
        "uint8 HWC2 (grey+alpha)": np.concatenate([rgb[..., :1], alpha], -1),
        "uint8 HWC4": np.concatenate([rgb, alpha], -1),
        "uint8 CHW": np.ascontiguousarray(rgb.transpose(2, 0, 1)),
        "int32 HWC levels": rgb.astype(np.int32),
        "torch uint8 CHW": torch.from_numpy(rgb).permute(2, 0, 1),
        "torch uint8 HWC": torch.from_numpy(rgb),
        "torch float [0, 1] CHW": torch.from_numpy(unit).permute(2, 0, 1),
        "torch uint16 CHW": torch.from_numpy(g16.astype(np.int32)).to(torch.uint16)[None],
    }


def test_pipeline_crops_equal_processor_crops(processor, pipe, tmp_path):
    boxes = [[2.0, 3.0, 20.0, 30.0], [-5.0, 10.0, 40.0, 25.0]]
    for name, image in _image_kinds(tmp_path).items():
        ours = processor(image, [boxes])["pixel_values"]
        theirs = pipe.preprocess(image, boxes=boxes)["pixel_values"]
        assert torch.equal(ours, theirs), (name, float((ours - theirs).abs().max()))


def test_conversion_rules_on_chosen_pixels():
    """Expected values by hand from the documented rules (not from the code under test)."""

    def px(image, y=0, x=0):
        return to_rgb_tensor(image)[:, y, x].double().tolist()

    # alpha over white: c * a + 255 * (1 - a), a = alpha / 255
    rgba = np.array([[[200, 100, 50, 128], [200, 100, 50, 0], [200, 100, 50, 255]]], np.uint8)
    assert px(Image.fromarray(rgba, "RGBA"), 0, 0) == pytest.approx([200 * 128 / 255 + 127, 100 * 128 / 255 + 127, 50 * 128 / 255 + 127], abs=1e-4)
    assert px(Image.fromarray(rgba, "RGBA"), 0, 1) == [255.0, 255.0, 255.0]
    assert px(Image.fromarray(rgba, "RGBA"), 0, 2) == [200.0, 100.0, 50.0]
    assert px(rgba, 0, 0) == pytest.approx([200 * 128 / 255 + 127, 100 * 128 / 255 + 127, 50 * 128 / 255 + 127], abs=1e-4)
    la = np.array([[[77, 64]]], np.uint8)
    assert px(Image.fromarray(la, "LA")) == pytest.approx([77 * 64 / 255 + 191] * 3, abs=1e-4)
    # palette -> its colour; the transparent index -> white
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    pal.putpixel((1, 0), 1)
    assert px(pal, 0, 0) == [10.0, 20.0, 30.0] and px(pal, 0, 1) == [40.0, 50.0, 60.0]
    pal.info["transparency"] = 1
    assert px(pal, 0, 0) == [10.0, 20.0, 30.0] and px(pal, 0, 1) == [255.0, 255.0, 255.0]
    # CMYK: no ink is white, full black ink is black
    cmyk = Image.frombytes("CMYK", (2, 1), bytes([0, 0, 0, 0, 0, 0, 0, 255]))
    assert px(cmyk, 0, 0) == [255.0] * 3 and px(cmyk, 0, 1) == [0.0] * 3
    # 16-bit: / 257
    g16 = np.array([[65535, 257 * 100, 1000]], np.uint16)
    for image in (g16, Image.fromarray(g16), Image.fromarray(g16.astype(np.int32), "I"), torch.from_numpy(g16.astype(np.int32)).to(torch.uint16)):
        t = to_rgb_tensor(image)
        assert t[:, 0, 0].tolist() == [255.0] * 3 and t[:, 0, 1].tolist() == [100.0] * 3
        assert t[0, 0, 2].item() == pytest.approx(1000 / 257, abs=1e-5)
    # floats: all in [0, 1] -> x 255; otherwise taken as 0..255
    assert px(np.array([[0.5, 1.0]], np.float32)) == [127.5] * 3
    assert px(np.array([[[0.25, 0.5, 1.0]]], np.float64)) == [63.75, 127.5, 255.0]
    assert px(np.array([[2.0, 1.0]], np.float32)) == [2.0] * 3
    assert px(Image.fromarray(np.array([[0.25]], np.float32), "F")) == [63.75] * 3
    assert px(torch.tensor([[[0.5]], [[0.0]], [[1.0]]])) == [127.5, 0.0, 255.0]
    # bool, grey, levels, layouts
    assert px(np.array([[True, False]])) == [255.0] * 3 and px(np.array([[True, False]]), 0, 1) == [0.0] * 3
    assert px(np.array([[77]], np.uint8)) == [77.0] * 3
    assert px(np.array([[[1, 2, 3]]], np.int64)) == [1.0, 2.0, 3.0]
    chw = np.arange(3 * 5 * 6, dtype=np.uint8).reshape(3, 5, 6)
    assert torch.equal(to_rgb_tensor(chw), to_rgb_tensor(chw.transpose(1, 2, 0)))
    assert torch.equal(to_rgb_tensor(torch.from_numpy(chw)), to_rgb_tensor(torch.from_numpy(chw).permute(1, 2, 0)))
    assert px(chw, 1, 2) == [8.0, 38.0, 68.0]


def test_conversion_refusals():
    bad = {
        "NaN or infinite": [np.full((4, 4, 3), np.nan, np.float32), torch.full((3, 4, 4), math.inf),
                            Image.fromarray(np.full((4, 4), np.nan, np.float32), "F")],
        r"float pixel values in \[1e\+300, 1e\+300\]": [np.full((4, 4), 1e300)],
        r"float pixel values in \[-1, 1\]": [np.array([[-1.0, 1.0]], np.float32)],
        r"float pixel values in \[0, 256\]": [np.array([[0.0, 256.0]], np.float32)],
        r"pixels in \[0, 300\]": [np.array([[0, 300]], np.int32), torch.tensor([[0, 300]])],
        "outside 0..65535": [Image.fromarray(np.array([[70000]], np.int32), "I")],
        "[56] channels": [np.zeros((5, 4, 6), np.uint8), torch.zeros(5, 4, 6)],
        "2-D or 3-D": [np.zeros((1, 4, 4, 3, 1), np.uint8)],
        "unsupported pixel dtype": [np.array([["a"]])],
        "unsupported type": [3.5],
    }
    for message, images in bad.items():
        for image in images:
            with pytest.raises(ValueError, match=message):
                to_rgb_tensor(image)


# ----------------------------------------------------------------------------- item 8: non-finite pixels
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_pixels_are_refused_by_processor_and_pipeline(processor, pipe, value):
    arr = np.full((20, 20, 3), 0.5, np.float32)
    arr[3, 4, 1] = value
    for image in (arr, torch.from_numpy(arr).permute(2, 0, 1).contiguous(), Image.fromarray(arr[..., 1], "F")):
        with pytest.raises(ValueError, match="NaN or infinite"):
            processor(image, [[[0.0, 0.0, 10.0, 10.0]]])
        with pytest.raises(ValueError, match="NaN or infinite"):
            pipe(image, boxes=[[0.0, 0.0, 10.0, 10.0]])


# ----------------------------------------------------------------------------- item 8: parameters
@pytest.mark.parametrize("kernel_size", [4, 0, -1, 2, 12, 3.5, True, "11"])
def test_even_or_non_positive_kernel_size_is_refused(processor, kernel_size):
    hm = torch.rand(1, 17, 16, 12)
    with pytest.raises(ValueError, match="kernel_size must be an odd integer >= 1"):
        processor.post_process_pose_estimation(hm, [[[0.0, 0.0, 5.0, 5.0]]], kernel_size=kernel_size)
    with pytest.raises(ValueError, match="kernel_size must be an odd integer >= 1"):
        decode_heatmaps(hm, kernel_size=kernel_size)


def test_odd_kernel_sizes_decode(processor):
    """Every odd kernel >= 1 decodes (what cv2.GaussianBlur accepts; 1 is no blur). A kernel much
    larger than the map blurs its reflections into a nearly flat map: still finite."""
    hm = torch.zeros(1, 1, 16, 12)
    hm[0, 0, 5, 7] = 1.0
    for k in (1, 3, 11, 13, 11.0, np.int64(5)):
        coords, _ = decode_heatmaps(hm, kernel_size=k)
        assert coords[0, 0].tolist() == pytest.approx([7.0, 5.0], abs=1e-4)
    for k in (21, 31, 63):
        assert torch.isfinite(decode_heatmaps(hm, kernel_size=k)[0]).all()


def test_thresholds_padding_and_factors_are_validated(processor, pipe):
    hm = torch.rand(1, 17, 16, 12)
    box = [[[0.0, 0.0, 5.0, 5.0]]]
    img = np.zeros((20, 20, 3), np.uint8)
    for t in (math.nan, math.inf, "high"):
        with pytest.raises(ValueError, match="threshold"):
            processor.post_process_pose_estimation(hm, box, threshold=t)
        with pytest.raises(ValueError, match="keypoint_threshold"):
            pipe(img, boxes=box[0], keypoint_threshold=t)
    for pad in (0, -1, math.nan, math.inf):
        with pytest.raises(ValueError, match="padding must be a finite number > 0"):
            processor(img, box, padding=pad)
        with pytest.raises(ValueError, match="padding must be a finite number > 0"):
            VitPoseTopDownImageProcessor(padding=pad)
    for name in ("normalize_factor", "rescale_factor"):
        with pytest.raises(ValueError, match=name):
            VitPoseTopDownImageProcessor(**{name: 0.0})
    with pytest.raises(ValueError, match=r"image_std\[1\]"):
        VitPoseTopDownImageProcessor(image_std=[0.2, math.nan, 0.2])


@pytest.mark.parametrize(
    "box", [[0, 0, 1e200, 1e200], [0, 0, 1e308, 1e308], [1e308, 0, 1e308, 10], [-1e308, 0, 10, 10], [0, 0, 2.0**24 + 2, 10]]
)
def test_huge_boxes_are_refused_naming_the_box(processor, pipe, box):
    img = np.zeros((20, 20, 3), np.uint8)
    shown = str([float(v) for v in box])
    with pytest.raises(ValueError, match=r"box 0 of image 0 is beyond") as err:
        processor(img, [[box]])
    assert shown in str(err.value)
    with pytest.raises(ValueError, match=r"box 0 of image 0 is beyond") as err:
        processor.post_process_pose_estimation(torch.rand(1, 17, 16, 12), [[box]])
    assert shown in str(err.value)
    if box[0] < 20:  # (boxes starting right of the image are refused as outside first)
        with pytest.raises(ValueError, match=r"beyond") as err:
            pipe(img, boxes=[box])
        assert shown in str(err.value)


def test_degenerate_boxes_are_refused_naming_the_box(processor):
    img = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match=r"box 1 of image 0 cannot be cropped: \[0.0, 0.0, 1e-320, 1e-320\]"):
        processor(img, [[[0, 0, 5, 5], [0, 0, 1e-320, 1e-320]]])
    with pytest.raises(ValueError, match=r"box 0 of image 0 is not finite"):
        processor.post_process_pose_estimation(torch.rand(1, 17, 16, 12), [[[0, math.nan, 5, 5]]])
    # a large but representable box crops and decodes to finite keypoints
    out = processor(img, [[[-1e6, -1e6, 2e6, 2e6]]])["pixel_values"]
    assert torch.isfinite(out).all()
    persons = processor.post_process_pose_estimation(torch.rand(1, 17, 16, 12), [[[-1e6, -1e6, 2e6, 2e6]]])
    assert torch.isfinite(persons[0][0]["keypoints"]).all()


# ----------------------------------------------------------------------------- item 10: DARK clamp
def _dark_test_maps(h: int = 16, w: int = 12) -> tuple[torch.Tensor, int]:
    """`(1, K, h, w)` maps: first 4 on which the DARK step leaves the heatmap (a gentle exponential
    ramp towards one border, nearly log-linear so the Newton step is long, with a slightly higher
    single-pixel spike inside as the argmax), then Gaussian peaks inside the map. Returns the maps
    and the number of leaving ones."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    right = 0.5 * torch.exp(0.1 * (xs - (w - 1)))
    right[8, 4] = 0.51
    down = 0.5 * torch.exp(0.05 * (ys - (h - 1)))
    down[9, 6] = 0.51
    leaving = [right, right.flip(-1), down, down.flip(-2)]
    peaks = [(5.3, 7.6), (2.2, 8.0), (8.9, 12.7)]
    inside = [torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 8.0) for cx, cy in peaks]
    return torch.stack(leaving + inside)[None].float(), len(leaving)


def test_clamp_keeps_refined_keypoints_on_the_heatmap(processor):
    h, w = 16, 12
    hm, n_out = _dark_test_maps(h, w)
    free, free_scores = decode_heatmaps(hm)
    # premise: the unclamped DARK step moves each of these more than one heatmap pixel off the map
    x, y = free[0, :n_out, 0], free[0, :n_out, 1]
    assert bool(((x < -1) | (x > w) | (y < -1) | (y > h)).all()), free[0, :n_out]
    clamped, clamped_scores = decode_heatmaps(hm, clamp_to_heatmap=True)
    assert bool(((clamped[..., 0] >= 0) & (clamped[..., 0] <= w - 1)).all())
    assert bool(((clamped[..., 1] >= 0) & (clamped[..., 1] <= h - 1)).all())
    # the clamped coordinate is the nearest point of the map: beyond the right border -> x = w - 1
    assert clamped[0, 0].tolist() == [w - 1.0, free[0, 0, 1].item()]
    assert clamped[0, 1].tolist() == [0.0, free[0, 1, 1].item()]
    assert clamped[0, 2].tolist() == [free[0, 2, 0].item(), h - 1.0]
    assert clamped[0, 3].tolist() == [free[0, 3, 0].item(), 0.0]
    assert torch.equal(clamped[0, n_out:], free[0, n_out:]) and torch.equal(clamped_scores, free_scores)
    # default == clamp_to_heatmap=False, bit for bit (decode, processor, post-processing)
    assert torch.equal(decode_heatmaps(hm, clamp_to_heatmap=False)[0], free)
    box = [[[10.0, 20.0, 30.0, 40.0]]]
    default = processor.post_process_pose_estimation(hm, box)[0][0]["keypoints"]
    assert torch.equal(processor.post_process_pose_estimation(hm, box, clamp_to_heatmap=False)[0][0]["keypoints"], default)
    kp = processor.post_process_pose_estimation(hm, box, clamp_to_heatmap=True)[0][0]["keypoints"].double()
    center, scale = processor.boxes_to_center_scale(torch.tensor(box[0], dtype=torch.float64))
    lo, hi = center - scale * 100.0, center + scale * 100.0  # the crop window: scale * pixel_std / 2 each side
    assert bool(((kp >= lo - 1e-4) & (kp <= hi + 1e-4)).all())
    assert not bool(((default.double() >= lo - 1e-4) & (default.double() <= hi + 1e-4)).all())


def test_clamp_in_the_pipeline(pipe):
    img = np.random.default_rng(0).integers(0, 256, (60, 50, 3), dtype=np.uint8)
    boxes = [[0.0, 0.0, 50.0, 60.0], [30.0, 30.0, 40.0, 40.0]]
    assert pipe(img, boxes=boxes, clamp_to_heatmap=False) == pipe(img, boxes=boxes)
    out = pipe(img, boxes=boxes, clamp_to_heatmap=True)
    center, scale = pipe.image_processor.boxes_to_center_scale(torch.tensor(boxes, dtype=torch.float64))
    for person, c, s in zip(out, center.tolist(), scale.tolist()):
        for kp in person["keypoints"]:
            assert c[0] - s[0] * 100 - 1e-3 <= kp["x"] <= c[0] + s[0] * 100 + 1e-3
            assert c[1] - s[1] * 100 - 1e-3 <= kp["y"] <= c[1] + s[1] * 100 + 1e-3


def test_clamp_with_a_trained_model(trained_tiny_model):
    """A small trained model on synthetic people: the clamp keeps every keypoint on the heatmap and
    changes no keypoint that was already on it; clamp_to_heatmap=False is the default output."""
    from vitpose_hf.data.synthetic import render_synthetic_image

    model, processor, _ = trained_tiny_model
    rng = np.random.default_rng(1234)  # not the training images
    images, boxes = [], []
    for _ in range(12):
        image, figures, _ = render_synthetic_image(rng, image_size=(128, 96))
        images.append(image)
        boxes.append([f["bbox"] for f in figures])
    heatmaps = predict_heatmaps(model, processor(images, boxes)["pixel_values"])
    h, w = heatmaps.shape[-2:]
    free, _ = decode_heatmaps(heatmaps)
    assert torch.equal(decode_heatmaps(heatmaps, clamp_to_heatmap=False)[0], free)
    clamped, _ = decode_heatmaps(heatmaps, clamp_to_heatmap=True)
    on_map = (clamped[..., 0] >= 0) & (clamped[..., 0] <= w - 1) & (clamped[..., 1] >= 0) & (clamped[..., 1] <= h - 1)
    assert bool(on_map.all())
    was_on = (free[..., 0] >= 0) & (free[..., 0] <= w - 1) & (free[..., 1] >= 0) & (free[..., 1] <= h - 1)
    assert torch.equal(clamped[was_on], free[was_on])
