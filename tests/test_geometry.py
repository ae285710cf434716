"""Crop geometry: matrices against the official formulas (numpy ports / transformers' helpers),
crops against cv2.warpAffine, inverse transforms against transformers' `transform_preds`."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from vitpose_hf.geometry import (
    box_xywh_to_center_scale,
    get_plain_warp_matrix,
    get_udp_warp_matrix,
    heatmap_coords_to_image,
    invert_affine,
    transform_points,
    warp_affine_batch,
)

tv = pytest.importorskip("transformers.models.vitpose.image_processing_pil_vitpose")


# ---------- independent numpy port of mmpose 0.x get_affine_transform (three-point construction) ----------
def _rotate(pt, rad):
    sn, cs = np.sin(rad), np.cos(rad)
    return np.array([pt[0] * cs - pt[1] * sn, pt[0] * sn + pt[1] * cs])


def _third(a, b):
    d = a - b
    return b + np.array([-d[1], d[0]])


def np_get_affine_transform(center, scale, rot, output_size_wh):
    scale_tmp = np.asarray(scale) * 200.0
    src_w = scale_tmp[0]
    dst_w, dst_h = output_size_wh
    rad = np.pi * rot / 180
    src_dir = _rotate([0.0, src_w * -0.5], rad)
    dst_dir = np.array([0.0, dst_w * -0.5])
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = center + src_dir
    src[2] = _third(src[0], src[1])
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    dst[2] = _third(dst[0], dst[1])
    return cv2.getAffineTransform(src, dst)


BOXES = torch.tensor(
    [[10.0, 20.0, 100.0, 300.0], [0.0, 0.0, 400.0, 50.0], [5.5, 7.25, 30.0, 40.0], [100, 100, 75, 100]],
    dtype=torch.float64,
)


def test_center_scale_matches_transformers():
    center, scale = box_xywh_to_center_scale(BOXES, 192 / 256)
    for i, box in enumerate(BOXES.tolist()):
        c, s = tv.box_to_center_and_scale(box, image_width=192, image_height=256)
        np.testing.assert_allclose(center[i].numpy(), c, rtol=1e-6)
        np.testing.assert_allclose(scale[i].numpy(), s, rtol=1e-6)
    # a 3:4 box is only padded
    np.testing.assert_allclose(scale[3].numpy(), [75 / 200 * 1.25, 100 / 200 * 1.25])


@pytest.mark.parametrize("rot", [0.0, 17.0, -40.0, 90.0])
def test_udp_matrix_matches_official(rot):
    center, scale = box_xywh_to_center_scale(BOXES, 192 / 256)
    m = get_udp_warp_matrix(center, scale, (256, 192), rotation=rot)
    for i in range(len(BOXES)):
        ref = tv.get_warp_matrix(rot, center[i].numpy() * 2.0, np.array([191.0, 255.0]), scale[i].numpy() * 200.0)
        np.testing.assert_allclose(m[i].numpy(), ref, rtol=1e-5, atol=1e-4)
    # UDP: window corners land exactly on the first / last pixel centres (no rotation)
    if rot == 0.0:
        size = scale * 200
        corners = torch.stack([center - size / 2, center + size / 2], dim=1)  # (N, 2, 2)
        out = transform_points(corners, m)
        np.testing.assert_allclose(out[:, 0].numpy(), 0.0, atol=1e-9)
        np.testing.assert_allclose(out[:, 1].numpy(), np.array([[191.0, 255.0]] * len(BOXES)), atol=1e-9)


@pytest.mark.parametrize("rot", [0.0, 30.0, -65.0])
def test_plain_matrix_matches_official(rot):
    center, scale = box_xywh_to_center_scale(BOXES, 192 / 256)
    m = get_plain_warp_matrix(center, scale, (256, 192), rotation=torch.full((len(BOXES),), rot))
    for i in range(len(BOXES)):
        ref = np_get_affine_transform(center[i].numpy(), scale[i].numpy(), rot, (192, 256))
        np.testing.assert_allclose(m[i].numpy(), ref, rtol=1e-4, atol=2e-3)


def test_invert_and_transform_points_roundtrip():
    center, scale = box_xywh_to_center_scale(BOXES, 192 / 256)
    m = get_udp_warp_matrix(center, scale, (256, 192), rotation=torch.tensor([0.0, 10.0, -33.0, 170.0], dtype=torch.float64))
    pts = torch.rand(len(BOXES), 9, 2, dtype=torch.float64) * 500
    back = transform_points(transform_points(pts, m), invert_affine(m))
    assert torch.allclose(back, pts, atol=1e-9)
    with pytest.raises(ValueError, match="singular"):
        invert_affine(torch.zeros(1, 2, 3))


def _real_image_and_boxes(shared_data, index=0):
    data = json.loads((shared_data / "coco_sample" / "test_coco.json").read_text())
    info = data["images"][index]
    img = cv2.imread(str(shared_data / "coco_sample" / info["file_name"]))[:, :, ::-1].copy()
    boxes = [a["bbox"] for a in data["annotations"] if a["image_id"] == info["id"]]
    return img, torch.tensor(boxes, dtype=torch.float64)


@pytest.mark.parametrize("rot", [0.0, 25.0, -70.0])
@pytest.mark.parametrize("udp", [True, False])
def test_warp_matches_cv2_on_real_images(shared_data, rot, udp):
    # measured: max abs diff <= 0.014 grey levels (0..255 scale) vs cv2 on float32 input
    for index in range(2):
        img, boxes = _real_image_and_boxes(shared_data, index)
        center, scale = box_xywh_to_center_scale(boxes, 192 / 256)
        fn = get_udp_warp_matrix if udp else get_plain_warp_matrix
        m = fn(center, scale, (256, 192), rotation=rot)
        crops = warp_affine_batch(torch.from_numpy(img).permute(2, 0, 1), m, (256, 192))
        assert crops.dtype == torch.float32 and crops.shape == (len(boxes), 3, 256, 192)
        for i in range(len(boxes)):
            ref = cv2.warpAffine(img.astype(np.float32), m[i].numpy(), (192, 256), flags=cv2.INTER_LINEAR, borderValue=0)
            diff = np.abs(crops[i].permute(1, 2, 0).numpy() - ref)
            assert diff.max() < 0.05, diff.max()


def test_warp_border_value_and_uint8_cv2(shared_data):
    img, boxes = _real_image_and_boxes(shared_data, 1)
    boxes = torch.cat([boxes, torch.tensor([[-100.0, -50.0, 300.0, 200.0]], dtype=torch.float64)])
    center, scale = box_xywh_to_center_scale(boxes, 192 / 256)
    m = get_udp_warp_matrix(center, scale, (256, 192), rotation=15.0)
    crops = warp_affine_batch(torch.from_numpy(img).permute(2, 0, 1), m, (256, 192), border_value=114.0)
    for i in range(len(boxes)):
        ref = cv2.warpAffine(img, m[i].numpy(), (192, 256), flags=cv2.INTER_LINEAR, borderValue=(114, 114, 114))
        diff = np.abs(crops[i].permute(1, 2, 0).numpy() - ref.astype(np.float32))
        # cv2 on uint8 rounds the result and quantises weights: mean stays tiny
        assert diff.mean() < 0.3 and np.percentile(diff, 99) <= 2.0, (diff.mean(), diff.max())


def test_warp_box_outside_image_is_border():
    image = torch.randint(0, 255, (3, 50, 60), dtype=torch.uint8)
    center, scale = box_xywh_to_center_scale(torch.tensor([[1000.0, 1000.0, 30.0, 40.0], [10.0, 10.0, 20, 20]]), 0.75)
    m = get_udp_warp_matrix(center, scale, (32, 24))
    crops = warp_affine_batch(image, m, (32, 24), border_value=7.0)
    assert torch.all(crops[0] == 7.0)
    assert not torch.all(crops[1] == 7.0)


def test_warp_union_and_per_box_paths_agree():
    image = torch.rand(3, 300, 400, dtype=torch.float64)
    boxes = torch.tensor([[0.0, 0.0, 30.0, 40.0], [350.0, 250.0, 40.0, 40.0], [100, 100, 50, 80]], dtype=torch.float64)
    center, scale = box_xywh_to_center_scale(boxes, 0.75)
    m = get_udp_warp_matrix(center, scale, (32, 24), rotation=torch.tensor([0.0, 20.0, -10.0]))
    a = warp_affine_batch(image, m, (32, 24), max_region_ratio=0.0)  # forces per-box regions
    b = warp_affine_batch(image, m, (32, 24), max_region_ratio=1e9)  # forces one union region
    assert a.dtype == torch.float64
    assert torch.allclose(a, b, atol=1e-9)
    for i in range(3):
        ref = cv2.warpAffine(image.permute(1, 2, 0).numpy(), m[i].numpy(), (24, 32), flags=cv2.INTER_LINEAR)
        # OpenCV quantises sampling positions to 1/32 px: on white noise in [0, 1] that is <= 1/32
        assert np.abs(a[i].permute(1, 2, 0).numpy() - ref).max() < 1 / 32


def test_warp_huge_image_costs_only_the_crop():
    # a 3 x 20000 x 20000 uint8 view with zero strides (no memory); a float copy would need 4.8 GB
    image = torch.arange(3, dtype=torch.uint8).view(3, 1, 1).expand(3, 20000, 20000)
    boxes = torch.tensor([[100.0, 200.0, 60.0, 80.0], [19000.0, 19000.0, 90.0, 120.0]])
    center, scale = box_xywh_to_center_scale(boxes, 0.75)
    crops = warp_affine_batch(image, get_udp_warp_matrix(center, scale, (64, 48)), (64, 48))
    assert crops.shape == (2, 3, 64, 48)
    assert torch.allclose(crops[:, 2], torch.full((2, 64, 48), 2.0))


def test_heatmap_coords_to_image_matches_transform_preds():
    center, scale = box_xywh_to_center_scale(BOXES, 192 / 256)
    coords = torch.rand(len(BOXES), 17, 2, dtype=torch.float64) * torch.tensor([47.0, 63.0], dtype=torch.float64)
    out = heatmap_coords_to_image(coords, center, scale, (64, 48), use_udp=True)
    for i in range(len(BOXES)):
        ref = tv.transform_preds(coords[i].numpy().copy(), center[i].numpy(), scale[i].numpy(), [64, 48])
        np.testing.assert_allclose(out[i].numpy(), ref, rtol=1e-9, atol=1e-9)
    plain = heatmap_coords_to_image(coords, center, scale, (64, 48), use_udp=False)
    size = scale.numpy() * 200
    ref = coords.numpy() * (size / np.array([48.0, 64.0]))[:, None] + (center.numpy() - size / 2)[:, None]
    np.testing.assert_allclose(plain.numpy(), ref, rtol=1e-12)
    # UDP inverse undoes the UDP warp exactly (heatmap = crop downsampled by 4 with UDP: (size-1) grid)
    m = get_udp_warp_matrix(center, scale, (64, 48))
    img_pts = torch.rand(len(BOXES), 5, 2, dtype=torch.float64) * 300
    hm = transform_points(img_pts, m)
    back = heatmap_coords_to_image(hm, center, scale, (64, 48))
    assert torch.allclose(back, img_pts, atol=1e-9)


def test_geometry_bad_inputs():
    with pytest.raises(ValueError, match="boxes"):
        box_xywh_to_center_scale(torch.zeros(3), 0.75)
    with pytest.raises(ValueError, match="output_size"):
        get_udp_warp_matrix(torch.zeros(1, 2), torch.ones(1, 2), (256,))
    with pytest.raises(ValueError, match="rotation"):
        get_udp_warp_matrix(torch.zeros(2, 2), torch.ones(2, 2), (256, 192), rotation=torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        warp_affine_batch(torch.zeros(3, 10, 10), torch.full((1, 2, 3), math.nan), (8, 6))


def test_rotation_directions_are_the_official_ones():
    center = torch.tensor([[100.0, 100.0]], dtype=torch.float64)
    scale = torch.tensor([[0.75, 1.0]], dtype=torch.float64)
    right_of_center = torch.tensor([[[110.0, 100.0]]], dtype=torch.float64)
    udp = transform_points(right_of_center, get_udp_warp_matrix(center, scale, (256, 192), rotation=90.0))
    plain = transform_points(right_of_center, get_plain_warp_matrix(center, scale, (256, 192), rotation=90.0))
    assert udp[0, 0, 1] > 127.5 + 5 and abs(udp[0, 0, 0] - 95.5) < 1e-6  # below the crop centre
    assert plain[0, 0, 1] < 128 - 5 and abs(plain[0, 0, 0] - 96) < 1e-6  # above the crop centre


def test_channel_affine_folded_into_the_warp():
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    boxes = torch.tensor([[-10.0, 5.0, 30.0, 40.0], [20.0, 10.0, 25.0, 20.0]])
    center, scale = box_xywh_to_center_scale(boxes, 0.75)
    m = get_udp_warp_matrix(center, scale, (32, 24), rotation=12.0)
    s = torch.tensor([0.5, 2.0, -1.0])
    o = torch.tensor([1.0, -3.0, 0.25])
    plain = warp_affine_batch(image, m, (32, 24), border_value=9.0)
    folded = warp_affine_batch(image, m, (32, 24), border_value=9.0, channel_scale=s, channel_offset=o)
    assert torch.allclose(folded, plain * s.view(1, 3, 1, 1) + o.view(1, 3, 1, 1), atol=1e-4)
