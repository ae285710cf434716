"""The fast cv2 crop path of `warp_affine_batch` (numpy bookkeeping, per-channel float32 LUT of the
uint8 source, single-threaded OpenCV, crops spread over torch's thread count) against independent
references: plain per-channel `cv2.warpAffine` on the whole float32 image, and the exact torch path."""

import cv2
import numpy as np
import pytest
import torch

from vitpose_hf.geometry import (
    box_xywh_to_center_scale,
    get_udp_warp_matrix,
    warp_affine_batch,
)
from vitpose_hf.image_processing_vitpose import VitPoseTopDownImageProcessor
from vitpose_hf import geometry

GAIN = np.array([1 / 255 / 0.229, 1 / 255 / 0.224, 1 / 255 / 0.225])
SHIFT = -np.array([0.485, 0.456, 0.406]) / np.array([0.229, 0.224, 0.225])


def _boxes(rng, n, img_h, img_w):
    """Random xywh boxes: inside, partly outside on every side, and a few entirely outside."""
    xy = rng.uniform(-0.3, 1.0, (n, 2)) * [img_w, img_h]
    wh = rng.uniform(8, 0.6 * max(img_h, img_w), (n, 2))
    boxes = np.concatenate([xy, wh], 1)
    boxes[: max(1, n // 8), :2] = [[img_w + 500.0, -400.0]]  # entirely outside
    return torch.tensor(boxes)


def _reference(img_hwc: np.ndarray, mats: np.ndarray, size, border: float, gain, shift) -> np.ndarray:
    """Per-channel cv2.warpAffine on the whole float32 image with the channel affine applied first."""
    h, w = size
    out = np.empty((len(mats), img_hwc.shape[2], h, w), np.float32)
    for k in range(img_hwc.shape[2]):
        plane = (img_hwc[:, :, k].astype(np.float64) * gain[k] + shift[k]).astype(np.float32)
        fill = border * gain[k] + shift[k]
        for i, m in enumerate(mats):
            out[i, k] = cv2.warpAffine(plane, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    return out


@pytest.mark.parametrize("layout", ["hwc_uint8", "chw_uint8", "float32", "grey_expanded"])
@pytest.mark.parametrize("ratio", [0.0, 4.0, 1e9])
def test_cv2_path_equals_per_channel_cv2_and_torch(layout, ratio):
    rng = np.random.default_rng(hash((layout, ratio)) % 2**32)
    img_h, img_w = 157, 211
    hwc = rng.integers(0, 256, (img_h, img_w, 3), dtype=np.uint8)
    if layout == "grey_expanded":
        hwc[:] = hwc[:, :, :1]
        image = torch.from_numpy(np.ascontiguousarray(hwc[:, :, 0]))[None].expand(3, -1, -1)
    elif layout == "hwc_uint8":
        image = torch.from_numpy(hwc).permute(2, 0, 1)  # channels-last storage, as decoded images
    elif layout == "chw_uint8":
        image = torch.from_numpy(hwc).permute(2, 0, 1).contiguous()
    else:
        image = torch.from_numpy(hwc.astype(np.float32)).permute(2, 0, 1)
    boxes = _boxes(rng, 11, img_h, img_w)
    center, scale = box_xywh_to_center_scale(boxes, 0.75)
    rotation = torch.tensor(rng.uniform(-40, 40, len(boxes)))
    rotation[::2] = 0.0
    m = get_udp_warp_matrix(center, scale, (64, 48), rotation=rotation)
    kwargs = {"border_value": 17.0, "max_region_ratio": ratio, "channel_scale": GAIN.tolist(), "channel_offset": SHIFT.tolist()}
    fast = warp_affine_batch(image, m, (64, 48), backend="cv2", **kwargs)
    assert fast.shape == (len(boxes), 3, 64, 48) and fast.dtype == torch.float32 and fast.is_contiguous()
    ref = _reference(hwc, m.numpy(), (64, 48), 17.0, GAIN, SHIFT)
    # same OpenCV kernel; only the float32 sampling position differs (region vs whole-image origin)
    np.testing.assert_allclose(fast.numpy(), ref, atol=2e-4, rtol=0)
    exact = warp_affine_batch(image, m, (64, 48), backend="torch", **kwargs)
    # documented cv2 tolerance: <= 0.05 grey levels, i.e. 0.05 / 255 / 0.225 normalised units
    assert (fast - exact).abs().max() < 0.05 / 255 / 0.225
    outside = fast[0]  # the first boxes are entirely outside: pure fill
    fill = torch.tensor(17.0 * GAIN + SHIFT, dtype=torch.float32).view(3, 1, 1)
    assert torch.allclose(outside, fill.expand_as(outside), atol=1e-6)


def test_threads_do_not_change_the_crops_and_cv2_threads_are_taken_over():
    rng = np.random.default_rng(3)
    hwc = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    image = torch.from_numpy(hwc).permute(2, 0, 1)
    boxes = _boxes(rng, 26, 120, 160)  # enough crops for 3 threads (8 per thread at least)
    center, scale = box_xywh_to_center_scale(boxes, 0.75)
    m = get_udp_warp_matrix(center, scale, (32, 24))
    before = cv2.getNumThreads()
    results = []
    try:
        for threads in (1, 2, 3):  # OpenCV's thread count is spent on whole crops
            cv2.setNumThreads(threads)
            for ratio in (0.0, 1e9):  # per-crop regions and one shared union region
                results.append(warp_affine_batch(image, m, (32, 24), max_region_ratio=ratio, backend="cv2"))
            assert cv2.getNumThreads() == 1  # taken over: single-threaded warps, `threads` crop threads
            if threads > 1:  # (1 cannot be told apart from the crop path's own setting)
                assert geometry._CROP_THREADS == threads
    finally:
        cv2.setNumThreads(before)
    for a, b in zip(results[0::2], results[1::2]):  # the same crops whatever the thread count (bit for bit)
        assert torch.equal(a, results[0]) and torch.equal(b, results[1])
        # union vs per-crop regions: only the float32 sampling positions differ (0..255 values)
        assert (a - b).abs().max() < 0.05


def test_cv2_path_errors_and_empty():
    image = torch.zeros(3, 20, 30, dtype=torch.uint8)
    with pytest.raises(ValueError, match="singular"):
        warp_affine_batch(image, torch.zeros(1, 2, 3, dtype=torch.float64), (8, 6), backend="cv2")
    empty = warp_affine_batch(image, torch.zeros(0, 2, 3), (8, 6), backend="cv2")
    assert empty.shape == (0, 3, 8, 6)


def test_processor_crops_equal_the_exact_torch_warp():
    rng = np.random.default_rng(5)
    from PIL import Image

    hwc = rng.integers(0, 256, (180, 240, 3), dtype=np.uint8)
    boxes = _boxes(rng, 6, 180, 240)
    boxes[0] = torch.tensor([10.0, 20.0, 50.0, 60.0])
    proc = VitPoseTopDownImageProcessor(size={"height": 64, "width": 48})
    out = proc(Image.fromarray(hwc), boxes=[boxes.tolist()])
    m = get_udp_warp_matrix(out["center"], out["scale"], (64, 48))
    exact = warp_affine_batch(
        torch.from_numpy(hwc).permute(2, 0, 1), m, (64, 48), channel_scale=GAIN.tolist(), channel_offset=SHIFT.tolist(),
        backend="torch",
    )
    assert out["pixel_values"].is_contiguous()
    assert (out["pixel_values"] - exact).abs().max() < 0.05 / 255 / 0.225


@pytest.mark.parametrize("size", [(256, 192), (64, 48), (17, 5)])
def test_numpy_center_scale_and_udp_matrix_are_bit_identical_to_torch(size):
    from vitpose_hf.geometry import _udp_crops_np

    rng = np.random.default_rng(size[0])
    boxes = np.concatenate([rng.uniform(-100, 600, (400, 2)), rng.uniform(0.01, 900, (400, 2))], 1)
    boxes[:4, 2:] = [[size[1] * 3.0, size[0] * 3.0]]  # exactly the crop aspect: neither grown
    center, scale, m = _udp_crops_np(boxes, size, 1.25, 200.0)
    ct, st = box_xywh_to_center_scale(torch.from_numpy(boxes), size[1] / size[0], padding=1.25, pixel_std=200.0)
    mt = get_udp_warp_matrix(ct, st, size, pixel_std=200.0)
    assert np.array_equal(center, ct.numpy()) and np.array_equal(scale, st.numpy()) and np.array_equal(m, mt.numpy())


def test_reused_output_memory_never_overwrites_a_live_result():
    from vitpose_hf import geometry

    geometry._POOL[:] = [None, None]  # results held elsewhere in the session must not matter here
    rng = np.random.default_rng(9)
    image = torch.from_numpy(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).permute(2, 0, 1)
    boxes = torch.tensor([[10.0, 10.0, 40.0, 50.0], [50.0, 20.0, 30.0, 60.0]])
    center, scale = box_xywh_to_center_scale(boxes, 0.75)
    m = get_udp_warp_matrix(center, scale, (32, 24))
    first = warp_affine_batch(image, m, (32, 24), backend="cv2")
    kept, first_ptr = first.clone(), first.data_ptr()
    view = first[1:, :, ::2]  # a view keeps the result alive too
    del first
    second = warp_affine_batch(image.flip(-1).contiguous(), m, (32, 24), backend="cv2")
    assert torch.equal(view, kept[1:, :, ::2])  # not overwritten while a view lives
    assert view.data_ptr() != second.data_ptr()
    del view, second
    third = warp_affine_batch(image, m, (32, 24), backend="cv2")  # the first result's memory, reused
    assert torch.equal(third, kept) and third.data_ptr() == first_ptr
    fourth = warp_affine_batch(image, m[:1], (32, 24), backend="cv2")  # third still alive: fresh memory
    assert fourth.data_ptr() != third.data_ptr() and torch.equal(fourth, kept[:1])
