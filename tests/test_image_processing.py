"""VitPoseTopDownImageProcessor: crops vs transformers' processor on real images, heatmap decoding vs
independent numpy references (official formulas), round trips, flip test, bad input."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vitpose_hf.geometry import get_udp_warp_matrix, invert_affine, transform_points
from vitpose_hf.image_processing_vitpose import (
    VitPoseTopDownImageProcessor,
    decode_heatmaps,
    gaussian_blur_heatmaps,
    predict_heatmaps,
    to_rgb_tensor,
)

tv = pytest.importorskip("transformers.models.vitpose.image_processing_pil_vitpose")


def _transformers_processor():
    return tv.VitPoseImageProcessorPil()


def _coco(shared_data):
    data = json.loads((shared_data / "coco_sample" / "test_coco.json").read_text())
    for info in data["images"]:
        boxes = [a["bbox"] for a in data["annotations"] if a["image_id"] == info["id"]]
        if boxes:
            yield Image.open(shared_data / "coco_sample" / info["file_name"]).convert("RGB"), boxes


# ----------------------------------------------------------------------------- config round trips
def test_loads_transformers_config_and_round_trips(tmp_path):
    _transformers_processor().save_pretrained(tmp_path / "hf")
    ours = VitPoseTopDownImageProcessor.from_pretrained(tmp_path / "hf")
    assert ours.size == {"height": 256, "width": 192}
    assert ours.padding == 1.25 and ours.normalize_factor == 200.0 and ours.do_affine_transform
    assert ours.image_mean == pytest.approx([0.485, 0.456, 0.406])
    custom = VitPoseTopDownImageProcessor(size={"height": 64, "width": 48}, padding=1.1)
    custom.save_pretrained(tmp_path / "ours")
    back = VitPoseTopDownImageProcessor.from_pretrained(tmp_path / "ours")
    assert back.size == {"height": 64, "width": 48} and back.padding == pytest.approx(1.1)
    assert back.to_dict() == custom.to_dict()


# ----------------------------------------------------------------------------- crops
def test_pixels_match_transformers_on_real_images(shared_data):
    # measured: interior mean |diff| 0.0043-0.0064 (max 0.0089 = transformers' uint8 rounding of its crop)
    ours_p, ref_p = VitPoseTopDownImageProcessor(), _transformers_processor()
    for image, boxes in _coco(shared_data):
        ours = ours_p(image, [boxes])
        ref = ref_p(image, boxes=[boxes], return_tensors="pt")["pixel_values"]
        assert ours["pixel_values"].shape == ref.shape == (len(boxes), 3, 256, 192)
        assert ours["pixel_values"].dtype == torch.float32
        # crop pixels whose source lies at least 1 px inside the image (scipy's border handling differs)
        inv = invert_affine(get_udp_warp_matrix(ours["center"], ours["scale"], (256, 192)))
        ys, xs = torch.meshgrid(torch.arange(256.0), torch.arange(192.0), indexing="ij")
        grid = torch.stack([xs, ys], -1).reshape(1, -1, 2).double().expand(len(boxes), -1, -1)
        src = transform_points(grid, inv).reshape(len(boxes), 256, 192, 2)
        w, h = image.size
        inside = (src[..., 0] >= 1) & (src[..., 0] <= w - 2) & (src[..., 1] >= 1) & (src[..., 1] <= h - 2)
        diff = (ours["pixel_values"] - ref).abs().permute(0, 2, 3, 1)[inside]
        assert diff.mean() < 0.01, diff.mean()
        assert diff.max() < 0.0095, diff.max()


def test_outputs_and_multi_image_order(shared_data):
    items = list(_coco(shared_data))[:2]
    images = [im for im, _ in items]
    boxes = [b for _, b in items]
    p = VitPoseTopDownImageProcessor()
    both = p(images, boxes)
    assert both["box_counts"].tolist() == [len(b) for b in boxes]
    single = [p(im, [b])["pixel_values"] for im, b in items]
    assert torch.equal(both["pixel_values"], torch.cat(single))
    assert both["center"].shape == both["scale"].shape == (sum(map(len, boxes)), 2)
    x, y, w, h = boxes[0][0]
    assert both["center"][0].tolist() == pytest.approx([x + w / 2, y + h / 2])


def test_image_types_and_modes_agree():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    box = [[10.0, 5.0, 30.0, 40.0]]
    p = VitPoseTopDownImageProcessor(size={"height": 32, "width": 24})
    ref = p(Image.fromarray(rgb), [box])["pixel_values"]
    assert torch.equal(p(rgb, [box])["pixel_values"], ref)  # numpy HWC
    assert torch.equal(p(torch.from_numpy(rgb).permute(2, 0, 1), [box])["pixel_values"], ref)  # torch CHW
    assert torch.equal(p(np.ascontiguousarray(rgb[:, :, ::-1])[:, :, ::-1], [box])["pixel_values"], ref)
    grey = rgb[..., 0]
    g_ref = p(np.stack([grey] * 3, -1), [box])["pixel_values"]
    assert torch.equal(p(Image.fromarray(grey), [box])["pixel_values"], g_ref)  # PIL "L"
    assert torch.equal(p(grey, [box])["pixel_values"], g_ref)  # numpy HW
    pal = Image.fromarray(rgb).convert("P")
    assert torch.equal(p(pal, [box])["pixel_values"], p(pal.convert("RGB"), [box])["pixel_values"])
    # 16-bit grey: 257 * v is v in 8 bits
    g16 = Image.fromarray(grey.astype(np.uint16) * 257)
    assert torch.allclose(p(g16, [box])["pixel_values"], g_ref, atol=1e-5)
    assert torch.allclose(p(grey.astype(np.uint16) * 257, [box])["pixel_values"], g_ref, atol=1e-5)
    # RGBA composited over white: opaque -> the RGB image, transparent -> white
    alpha = np.full((60, 80, 1), 255, np.uint8)
    assert torch.allclose(p(Image.fromarray(np.concatenate([rgb, alpha], -1)), [box])["pixel_values"], ref, atol=1e-6)
    clear = p(Image.fromarray(np.concatenate([rgb, alpha * 0], -1)), [[20.0, 20.0, 10.0, 10.0]])["pixel_values"]
    white = (1.0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(clear[0, :, 10:20, 8:16].mean((1, 2)), white, atol=1e-5)
    assert to_rgb_tensor(rgb).dtype == torch.uint8


def test_bad_inputs(tmp_path):
    p = VitPoseTopDownImageProcessor(size={"height": 32, "width": 24})
    img = np.zeros((50, 60, 3), np.uint8)
    with pytest.raises(ValueError, match="no images"):
        p([], [])
    out = p([img, img], [[], []])
    assert out["pixel_values"].shape == (0, 3, 32, 24) and out["box_counts"].tolist() == [0, 0]
    assert p.post_process_pose_estimation(torch.zeros(0, 17, 8, 6), [[], []]) == [[], []]
    with pytest.raises(ValueError, match=r"box 1 of image 0 has non-positive width"):
        p(img, [[[0, 0, 10, 10], [5, 5, 0, 10]]])
    with pytest.raises(ValueError, match=r"box 0 of image 0 has non-positive"):
        p(img, [[[5, 5, 10, -3]]])
    with pytest.raises(ValueError, match=r"box 0 of image 1 is not finite"):
        p([img, img], [[[0, 0, 10, 10]], [[math.nan, 0, 10, 10]]])
    with pytest.raises(ValueError, match="2 images but 1"):
        p([img, img], [[[0, 0, 10, 10]]])
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ValueError, match="corrupt.jpg"):
        p(str(bad), [[[0, 0, 10, 10]]])
    with pytest.raises(ValueError, match="missing.png"):
        p(tmp_path / "missing.png", [[[0, 0, 10, 10]]])
    # a box fully outside the image: a crop of border value 0 (normalised: -mean / std)
    outside = p(np.full((50, 60, 3), 200, np.uint8), [[[500.0, 500.0, 20.0, 30.0]]])["pixel_values"]
    zero = -torch.tensor([0.485, 0.456, 0.406]) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(outside[0], zero.view(3, 1, 1).expand(3, 32, 24))
    with pytest.raises(ValueError, match="NaN"):
        decode_heatmaps(torch.full((1, 2, 8, 6), math.nan))


# ----------------------------------------------------------------------------- decoding references
def np_dark_udp(coords, heatmaps, kernel):
    """Independent DARK-UDP from the formulas: OpenCV blur, clip, log, edge pad, Newton step."""
    coords = coords.astype(np.float64).copy()
    n, k, h, w = heatmaps.shape
    for i in range(n):
        for j in range(k):
            hm = cv2.GaussianBlur(heatmaps[i, j].astype(np.float32), (kernel, kernel), 0)
            hm = np.log(np.clip(hm, 0.001, 50)).astype(np.float64)
            pad = np.pad(hm, 1, mode="edge")
            x, y = int(coords[i, j, 0]) + 1, int(coords[i, j, 1]) + 1
            f = lambda dx, dy: pad[y + dy, x + dx]  # noqa: E731
            grad = np.array([0.5 * (f(1, 0) - f(-1, 0)), 0.5 * (f(0, 1) - f(0, -1))])
            dxx = f(1, 0) - 2 * f(0, 0) + f(-1, 0)
            dyy = f(0, 1) - 2 * f(0, 0) + f(0, -1)
            dxy = 0.5 * (f(1, 1) - f(1, 0) - f(0, 1) + 2 * f(0, 0) - f(-1, 0) - f(0, -1) + f(-1, -1))
            hess = np.array([[dxx, dxy], [dxy, dyy]]) + np.finfo(np.float32).eps * np.eye(2)
            coords[i, j] -= np.linalg.inv(hess) @ grad
    return coords


def _smooth_heatmaps(n, k, h, w, seed):
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w]
    out = np.zeros((n, k, h, w), np.float32)
    for i in range(n):
        for j in range(k):
            for _ in range(rng.integers(1, 3)):
                cx, cy = rng.uniform(-1, w), rng.uniform(-1, h)
                s = rng.uniform(1.5, 4.0)
                out[i, j] += rng.uniform(0.2, 1.0) * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * s * s))
            out[i, j] += rng.normal(0, 0.01, (h, w))
    return out


def test_blur_matches_opencv():
    hm = _smooth_heatmaps(2, 3, 16, 12, 1)
    ours = gaussian_blur_heatmaps(torch.from_numpy(hm), 11).numpy()
    ref = np.stack([[cv2.GaussianBlur(m, (11, 11), 0) for m in row] for row in hm])
    assert np.abs(ours - ref).max() < 1e-6
    tiny = np.random.default_rng(0).random((1, 1, 4, 3)).astype(np.float32)  # smaller than the kernel
    ref = cv2.GaussianBlur(tiny[0, 0], (11, 11), 0)
    assert np.abs(gaussian_blur_heatmaps(torch.from_numpy(tiny), 11)[0, 0].numpy() - ref).max() < 1e-6


def test_dark_udp_matches_numpy_reference():
    hm = _smooth_heatmaps(6, 17, 64, 48, 2)
    coords, scores = decode_heatmaps(torch.from_numpy(hm), use_dark=True, kernel_size=11, use_udp=True)
    flat = hm.reshape(6, 17, -1)
    idx = flat.argmax(-1)
    argmax = np.stack([idx % 48, idx // 48], -1).astype(np.float64)
    ref = np_dark_udp(argmax, hm, 11)
    err = np.abs(coords.numpy() - ref).max()
    assert err < 1e-3, err  # measured ~1e-5
    np.testing.assert_array_equal(scores.numpy(), flat.max(-1))
    # batching does not change anything
    one, _ = decode_heatmaps(torch.from_numpy(hm[3:4]))
    assert torch.allclose(one[0], coords[3], atol=1e-5)


def test_argmax_and_udp_inverse_match_transformers():
    hm = np.abs(_smooth_heatmaps(5, 17, 64, 48, 3))
    p = VitPoseTopDownImageProcessor()
    boxes = [[[10.0, 20.0, 100.0, 200.0], [300.0, 40.0, 60.0, 50.0]], [[0.0, 0.0, 640.0, 480.0], [5, 5, 20, 30], [50, 60, 70, 80]]]
    ours = p.post_process_pose_estimation(torch.from_numpy(hm), boxes, use_dark=False)
    ref_coords, ref_scores = tv.get_keypoint_predictions(hm)
    flat_boxes = [b for image in boxes for b in image]
    got = [person for image in ours for person in image]
    for i, box in enumerate(flat_boxes):
        c, s = tv.box_to_center_and_scale(box, image_width=192, image_height=256)
        ref = tv.transform_preds(ref_coords[i].copy(), c, s, [64, 48])
        np.testing.assert_allclose(got[i]["keypoints"].numpy(), ref, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(got[i]["scores"].numpy(), ref_scores[i, :, 0])
        assert got[i]["bbox"].tolist() == pytest.approx(box)
        assert got[i]["labels"].tolist() == list(range(17))


def test_plain_quarter_shift_and_classic_dark_match_references():
    hm = _smooth_heatmaps(3, 5, 32, 24, 4)
    coords, _ = decode_heatmaps(torch.from_numpy(hm), use_dark=False, use_udp=False)
    flat = hm.reshape(3, 5, -1)
    idx = flat.argmax(-1)
    for i in range(3):
        for j in range(5):
            px, py = idx[i, j] % 24, idx[i, j] // 24
            exp = np.array([px, py], np.float64)
            if 1 < px < 23 and 1 < py < 31:
                m = hm[i, j]
                exp += np.sign([m[py, px + 1] - m[py, px - 1], m[py + 1, px] - m[py - 1, px]]) * 0.25
            np.testing.assert_allclose(coords[i, j].numpy(), exp, atol=1e-6)
    # classic DARK: zero-padded blur rescaled to the original max, log, Taylor with 2-px differences
    dark, _ = decode_heatmaps(torch.from_numpy(hm), use_dark=True, use_udp=False, kernel_size=11)
    for i in range(3):
        for j in range(5):
            m = hm[i, j]
            padded = cv2.GaussianBlur(np.pad(m, 5), (11, 11), 0)[5:-5, 5:-5]
            padded *= m.max() / padded.max()
            lg = np.log(np.maximum(padded, 1e-10)).astype(np.float64)
            px, py = idx[i, j] % 24, idx[i, j] // 24
            exp = np.array([px, py], np.float64)
            if 1 < px < 22 and 1 < py < 30:
                g = np.array([0.5 * (lg[py, px + 1] - lg[py, px - 1]), 0.5 * (lg[py + 1, px] - lg[py - 1, px])])
                dxx = 0.25 * (lg[py, px + 2] - 2 * lg[py, px] + lg[py, px - 2])
                dyy = 0.25 * (lg[py + 2, px] - 2 * lg[py, px] + lg[py - 2, px])
                dxy = 0.25 * (lg[py + 1, px + 1] - lg[py - 1, px + 1] - lg[py + 1, px - 1] + lg[py - 1, px - 1])
                exp -= np.linalg.inv(np.array([[dxx, dxy], [dxy, dyy]])) @ g
            np.testing.assert_allclose(dark[i, j].numpy(), exp, atol=1e-3)


def test_round_trip_gaussian_back_to_image_point():
    p = VitPoseTopDownImageProcessor()
    boxes = [[[40.0, 30.0, 120.0, 260.0], [200.0, 100.0, 300.0, 180.0], [5.0, 400.0, 60.0, 70.0]]]
    flat = torch.tensor(boxes[0], dtype=torch.float64)
    center, scale = p.boxes_to_center_scale(flat)
    to_heatmap = get_udp_warp_matrix(center, scale, (64, 48))
    rng = np.random.default_rng(5)
    # points well inside each box
    pts = flat[:, None, :2] + flat[:, None, 2:] * torch.from_numpy(rng.uniform(0.2, 0.8, (3, 4, 2)))
    q = transform_points(pts, to_heatmap).numpy()
    ys, xs = np.mgrid[0:64, 0:48]
    hm = np.exp(-((xs[None, None] - q[..., 0, None, None]) ** 2 + (ys[None, None] - q[..., 1, None, None]) ** 2) / 8.0)
    out = p.post_process_pose_estimation(torch.from_numpy(hm.astype(np.float32)), boxes)
    got = torch.stack([person["keypoints"] for person in out[0]]).double()
    err = (got - pts).abs().max().item()
    assert err < 0.05, err


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    boxes=st.lists(
        st.tuples(
            st.floats(-200, 400), st.floats(-200, 400), st.floats(0.01, 800), st.floats(0.01, 800)
        ),
        min_size=0,
        max_size=4,
    ),
    size=st.tuples(st.integers(1, 90), st.integers(1, 90)),
    seed=st.integers(0, 1000),
)
def test_property_random_boxes_never_nan(boxes, size, seed):
    p = VitPoseTopDownImageProcessor(size={"height": 32, "width": 24})
    gen = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=gen)
    out = p(image, [list(map(list, boxes))])
    assert out["pixel_values"].shape == (len(boxes), 3, 32, 24)
    assert torch.isfinite(out["pixel_values"]).all()
    heatmaps = torch.rand(len(boxes), 4, 8, 6, generator=gen) - 0.3  # includes negative maxima
    res = p.post_process_pose_estimation(heatmaps, [list(map(list, boxes))], threshold=0.1)
    for person in res[0]:
        assert torch.isfinite(person["keypoints"]).all() and torch.isfinite(person["scores"]).all()
        assert (person["scores"] > 0.1).all()


def test_degenerate_heatmaps_give_finite_keypoints():
    for hm in (torch.zeros(2, 3, 16, 12), torch.full((1, 2, 16, 12), 100.0), -torch.rand(1, 2, 16, 12)):
        for udp in (True, False):
            coords, scores = decode_heatmaps(hm, use_udp=udp)
            assert torch.isfinite(coords).all() and torch.isfinite(scores).all()


# ----------------------------------------------------------------------------- flip test
def test_predict_heatmaps_flip_test(tiny_config):
    from vitpose_hf import VitPoseForPoseEstimation, flip_heatmaps
    from vitpose_hf.keypoint_schemas import COCO

    model = VitPoseForPoseEstimation(tiny_config).eval()
    x = torch.randn(5, 3, 64, 48)
    with torch.no_grad():
        plain = model(x).heatmaps
        mirrored = model(x.flip(-1)).heatmaps
    expected = 0.5 * (plain + flip_heatmaps(mirrored, COCO.flip_pairs))
    got = predict_heatmaps(model, x)  # flip pairs from the 17-keypoint default schema
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(predict_heatmaps(model, x, flip_test=False), plain, atol=1e-6)
    chunked = predict_heatmaps(model, x, flip_pairs=COCO.flip_pairs, dataset_index=0, batch_size=2)
    assert torch.allclose(chunked, expected, atol=1e-5)
    # a symmetric input gives a flip-consistent prediction: flipping the averaged map changes nothing
    sym = torch.cat([x[:, :, :, :24], x[:, :, :, :24].flip(-1)], dim=-1)
    avg = predict_heatmaps(model, sym)
    assert torch.allclose(flip_heatmaps(avg, COCO.flip_pairs), avg, atol=1e-5)
    with pytest.raises(ValueError, match="empty"):
        predict_heatmaps(model, torch.zeros(0, 3, 64, 48))


def test_predict_heatmaps_mixed_datasets_use_their_own_flip_pairs():
    from conftest import tiny_config_kwargs

    from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation, flip_heatmaps
    from vitpose_hf.keypoint_schemas import AIC, COCO

    config = VitPoseConfig(
        **tiny_config_kwargs(num_experts=2, part_features=8, dataset_heads=[{"dataset_index": 1, "num_labels": 14, "name": "aic"}])
    )
    model = VitPoseForPoseEstimation(config).eval()
    x = torch.randn(4, 3, 64, 48)
    index = torch.tensor([0, 1, 1, 0])
    got = predict_heatmaps(model, x, dataset_index=index)
    for i in range(4):
        d = int(index[i])
        pairs = COCO.flip_pairs if d == 0 else AIC.flip_pairs
        with torch.no_grad():
            a = model(x[i : i + 1], dataset_index=torch.tensor([d])).heatmaps
            b = model(x[i : i + 1].flip(-1), dataset_index=torch.tensor([d])).heatmaps
        expected = 0.5 * (a + flip_heatmaps(b, pairs))
        assert torch.allclose(got[i : i + 1, : expected.shape[1]], expected, atol=1e-5), i
    single = predict_heatmaps(model, x[1:3], dataset_index=1)
    assert torch.allclose(single[:, :14], got[1:3, :14], atol=1e-5)


def test_without_affine_transform_images_are_the_crops():
    p = VitPoseTopDownImageProcessor(do_affine_transform=False, size={"height": 32, "width": 24})
    crops = np.random.default_rng(0).integers(0, 256, (2, 32, 24, 3), dtype=np.uint8)
    out = p(list(crops))["pixel_values"]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    ref = ((crops / 255.0 - mean) / std).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)
