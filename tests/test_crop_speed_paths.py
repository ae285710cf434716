"""The fast cv2 crop path of `warp_affine_batch` (numpy bookkeeping, per-channel float32 LUT of the
uint8 source, single-threaded OpenCV, crops spread over threads, reusable workspace memory) against
independent references: plain per-channel `cv2.warpAffine` on the whole float32 image, and the exact
torch path; and the process state it leaves (OpenCV's thread count) and the memory it reuses."""

import cv2
import numpy as np
import pytest
import torch

from vitpose_hf.geometry import (
    CropWorkspace,
    box_xywh_to_center_scale,
    get_udp_warp_matrix,
    warp_affine_batch,
)
from vitpose_hf.image_processing_vitpose import VitPoseTopDownImageProcessor

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


def test_threads_do_not_change_the_crops_and_leave_cv2_threads_alone():
    rng = np.random.default_rng(3)
    hwc = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    image = torch.from_numpy(hwc).permute(2, 0, 1)
    boxes = _boxes(rng, 26, 120, 160)  # enough crops for 3 threads (8 per thread at least)
    center, scale = box_xywh_to_center_scale(boxes, 0.75)
    m = get_udp_warp_matrix(center, scale, (32, 24))
    before = cv2.getNumThreads()
    results = []
    try:
        for cv2_threads in (1, 3):  # whatever OpenCV's own count, the call gives it back as it was
            cv2.setNumThreads(cv2_threads)
            for threads in (1, 2, 3, None):  # None: torch.get_num_threads()
                for ratio in (0.0, 1e9):  # per-crop regions and one shared union region
                    results.append(
                        warp_affine_batch(image, m, (32, 24), max_region_ratio=ratio, backend="cv2", threads=threads)
                    )
                    assert cv2.getNumThreads() == cv2_threads
    finally:
        cv2.setNumThreads(before)
    for a, b in zip(results[0::2], results[1::2]):  # the same crops whatever the thread counts (bit for bit)
        assert torch.equal(a, results[0]) and torch.equal(b, results[1])
        # union vs per-crop regions: only the float32 sampling positions differ (0..255 values)
        assert (a - b).abs().max() < 0.05
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="threads"):
            warp_affine_batch(image, m, (32, 24), backend="cv2", threads=bad)


def test_cv2_thread_count_is_unchanged_after_processor_calls():
    """A processor call (cv2 crops split over threads) leaves OpenCV's process-wide thread count as it
    found it, including a count set by the user between calls and during concurrent calls."""
    import threading

    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = [_boxes(rng, 20, 120, 160).tolist()]
    proc = VitPoseTopDownImageProcessor(size={"height": 32, "width": 24})
    before = cv2.getNumThreads()
    try:
        for count in (3, 2, 1, 4):
            cv2.setNumThreads(count)
            reference = proc(image, boxes)["pixel_values"].clone()
            assert cv2.getNumThreads() == count
        errors = []

        def crop_many():
            try:
                for _ in range(5):
                    assert torch.equal(proc(image, boxes)["pixel_values"], reference)
            except BaseException as err:  # noqa: BLE001 - reported by the main thread
                errors.append(err)

        workers = [threading.Thread(target=crop_many) for _ in range(3)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        assert not errors and cv2.getNumThreads() == 4
    finally:
        cv2.setNumThreads(before)


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
    from vitpose_hf.geometry import udp_crops_np

    rng = np.random.default_rng(size[0])
    boxes = np.concatenate([rng.uniform(-100, 600, (400, 2)), rng.uniform(0.01, 900, (400, 2))], 1)
    boxes[:4, 2:] = [[size[1] * 3.0, size[0] * 3.0]]  # exactly the crop aspect: neither grown
    center, scale, m = udp_crops_np(boxes, size, 1.25, 200.0)
    ct, st = box_xywh_to_center_scale(torch.from_numpy(boxes), size[1] / size[0], padding=1.25, pixel_std=200.0)
    mt = get_udp_warp_matrix(ct, st, size, pixel_std=200.0)
    assert np.array_equal(center, ct.numpy()) and np.array_equal(scale, st.numpy()) and np.array_equal(m, mt.numpy())


def test_reused_output_memory_never_overwrites_a_live_result():
    workspace = CropWorkspace()
    rng = np.random.default_rng(9)
    image = torch.from_numpy(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).permute(2, 0, 1)
    boxes = torch.tensor([[10.0, 10.0, 40.0, 50.0], [50.0, 20.0, 30.0, 60.0]])
    center, scale = box_xywh_to_center_scale(boxes, 0.75)
    m = get_udp_warp_matrix(center, scale, (32, 24))
    first = warp_affine_batch(image, m, (32, 24), backend="cv2", workspace=workspace)
    kept, first_ptr = first.clone(), first.data_ptr()
    view = first[1:, :, ::2]  # a view keeps the result alive too
    del first
    second = warp_affine_batch(image.flip(-1).contiguous(), m, (32, 24), backend="cv2", workspace=workspace)
    assert torch.equal(view, kept[1:, :, ::2])  # not overwritten while a view lives
    assert view.data_ptr() != second.data_ptr()
    del view, second
    third = warp_affine_batch(image, m, (32, 24), backend="cv2", workspace=workspace)  # the first result's memory
    assert torch.equal(third, kept) and third.data_ptr() == first_ptr
    fourth = warp_affine_batch(image, m[:1], (32, 24), backend="cv2", workspace=workspace)  # third alive: fresh
    assert fourth.data_ptr() != third.data_ptr() and torch.equal(fourth, kept[:1])
    # without a workspace every result is fresh memory, never an earlier result's
    del third, fourth
    fresh = [warp_affine_batch(image, m, (32, 24), backend="cv2") for _ in range(2)]
    assert all(t.data_ptr() != first_ptr for t in fresh) and all(torch.equal(t, kept) for t in fresh)
    with pytest.raises(TypeError, match="CropWorkspace"):
        warp_affine_batch(image, m, (32, 24), backend="cv2", workspace=object())


def test_workspaces_are_separate_and_copies_are_empty():
    import copy
    import pickle

    rng = np.random.default_rng(10)
    image = torch.from_numpy(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).permute(2, 0, 1)
    center, scale = box_xywh_to_center_scale(torch.tensor([[5.0, 5.0, 30.0, 40.0]]), 0.75)
    m = get_udp_warp_matrix(center, scale, (32, 24))
    a, b = CropWorkspace(), CropWorkspace(max_bytes=1 << 20)
    first = warp_affine_batch(image, m, (32, 24), backend="cv2", workspace=a)
    ptr = first.data_ptr()
    del first
    # another workspace never hands out a's memory
    assert warp_affine_batch(image, m, (32, 24), backend="cv2", workspace=b).data_ptr() != ptr
    assert len(a.idle_buffers()) == 2  # output (released) and scratch
    for twin in (copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
        assert twin.idle_buffers() == [] and twin.max_bytes == a.max_bytes
    small = CropWorkspace(max_bytes=0)  # keeps nothing
    out = warp_affine_batch(image, m, (32, 24), backend="cv2", workspace=small)
    del out
    assert small.idle_buffers() == []
    a.release()
    assert a.idle_buffers() == []
    proc = VitPoseTopDownImageProcessor(size={"height": 32, "width": 24})
    assert isinstance(proc.crop_workspace, CropWorkspace)
    assert "_crop_workspace" not in proc.to_dict() and "crop_workspace" not in proc.to_json_string()
    assert copy.deepcopy(proc).crop_workspace is not proc.crop_workspace
    assert pickle.loads(pickle.dumps(proc)).crop_workspace is not proc.crop_workspace
