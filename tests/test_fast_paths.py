"""The processor's and the training transform's fast crop and decode paths match the exact ones.

(The model's inference swaps are tested in tests/test_inference_swaps.py.) Speed itself is measured
by benchmarks/run.py, never asserted here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


# ----------------------------------------------------------------------------- processor fast paths
def test_cv2_crop_backend_matches_torch_backend(shared_data):
    import json

    from PIL import Image

    from vitpose_hf.geometry import box_xywh_to_center_scale, get_udp_warp_matrix, warp_affine_batch

    info = json.loads((shared_data / "coco_sample" / "test_coco.json").read_text())["images"][0]
    image = torch.from_numpy(np.array(Image.open(shared_data / "coco_sample" / info["file_name"]).convert("RGB")))
    image = image.permute(2, 0, 1)
    h, w = image.shape[-2:]
    boxes = torch.tensor([[10.0, 20.0, 120.0, 200.0], [w - 60.0, h - 90.0, 150.0, 160.0],  # crosses the border
                          [-500.0, -500.0, 40.0, 40.0], [0.0, 0.0, float(w), float(h)]], dtype=torch.float64)
    center, scale = box_xywh_to_center_scale(boxes, 0.75)
    m = get_udp_warp_matrix(center, scale, (64, 48), rotation=torch.tensor([0.0, 30.0, 0.0, -15.0]))
    kw = dict(channel_scale=[0.5, 1.0, 2.0], channel_offset=[-1.0, 0.0, 3.0], border_value=10.0)
    for ratio in (4.0, 0.0):  # union region / one region per crop
        exact = warp_affine_batch(image, m, (64, 48), backend="torch", max_region_ratio=ratio, **kw)
        fast = warp_affine_batch(image, m, (64, 48), backend="cv2", max_region_ratio=ratio, **kw)
        auto = warp_affine_batch(image, m, (64, 48), max_region_ratio=ratio, **kw)
        torch.testing.assert_close(auto, fast)
        # OpenCV quantises positions to 1/32 px: a few hundredths of a grey level (x2 channel scale)
        assert (fast - exact).abs().max() < 0.2, (fast - exact).abs().max()
        assert (fast - exact).abs().mean() < 0.01
        assert torch.all(fast[2, 0] == 10.0 * 0.5 - 1.0) and torch.all(fast[2, 2] == 10.0 * 2.0 + 3.0)


def test_cv2_backend_is_skipped_for_float64_and_validated():
    from vitpose_hf.geometry import warp_affine_batch

    image = torch.rand(3, 20, 30, dtype=torch.float64)
    m = torch.tensor([[[1.0, 0.0, -2.0], [0.0, 1.0, -3.0]]], dtype=torch.float64)
    assert warp_affine_batch(image, m, (8, 6)).dtype == torch.float64  # auto -> exact torch path
    with pytest.raises(ValueError, match="float32"):
        warp_affine_batch(image, m, (8, 6), backend="cv2")
    with pytest.raises(ValueError, match="backend"):
        warp_affine_batch(image, m, (8, 6), backend="scipy")


def test_numpy_argmax_matches_torch_max_with_ties():
    from vitpose_hf.heatmaps import _argmax

    heat = torch.rand(6, 5, 16, 12)
    heat[0, 0] = 0.5  # all tied: first index
    heat[1, 2, 3, 4] = heat[1, 2, 7, 1] = 2.0  # two maxima: the first in row-major order
    px, py, scores, _ = _argmax(heat)
    ref_scores, ref_idx = heat.reshape(6, 5, -1).max(-1)
    np_first = heat.reshape(6, 5, -1).numpy().argmax(-1)
    torch.testing.assert_close(py * 12 + px, torch.from_numpy(np_first))
    torch.testing.assert_close(scores, ref_scores)
    assert (px[0, 0], py[0, 0]) == (0, 0) and (px[1, 2], py[1, 2]) == (4, 3)
    px64, py64, s64, _ = _argmax(heat.double())
    torch.testing.assert_close(px64, px) and torch.testing.assert_close(py64, py)


def test_training_transform_fast_crops_match_exact_path(shared_data, monkeypatch):
    import functools

    from vitpose_hf import geometry
    from vitpose_hf.data import TopDownTransform, load_coco_keypoints

    root = shared_data / "coco_mini_train"
    rows = load_coco_keypoints(str(root / "person_keypoints.json"), str(root / "images"))[:6]
    fast = TopDownTransform("coco", image_size=(64, 48), seed=3)(rows)

    exact_warp = functools.partial(geometry.warp_affine_batch, backend="torch")

    def reference(image, matrices, size, border_value=0.0, channel_scale=None, channel_offset=None, **kw):
        crops = exact_warp(image, matrices, size, border_value=border_value)  # normalise afterwards
        return crops * torch.as_tensor(channel_scale).view(-1, 1, 1) + torch.as_tensor(channel_offset).view(-1, 1, 1)

    monkeypatch.setattr(geometry, "warp_affine_batch", reference)
    slow = TopDownTransform("coco", image_size=(64, 48), seed=3)(rows)
    for key in ("labels", "target_weight", "center", "scale"):
        for a, b in zip(fast[key], slow[key]):
            torch.testing.assert_close(a, b)
    assert fast["flipped"] == slow["flipped"] and fast["rotation"] == slow["rotation"]
    for a, b in zip(fast["pixel_values"], slow["pixel_values"]):
        assert (a - b).abs().max() < 2e-3  # <= ~0.1 grey level after normalisation
