"""One image loader (issue 15, one home per concern): the processor, the pipeline, the detectors'
input, `draw_keypoints`, the training transform and the MPII converter read a file through
`vitpose_hf.image_io` and see the same pixels. Before, the detectors and drawing dropped alpha and
took dark 16-bit images as 8-bit, training decoded with OpenCV (alpha dropped, 16-bit >> 8), and the
MPII converter reported the pre-EXIF size of a turned photo."""

from __future__ import annotations

import functools
import http.server
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation, VitPoseTopDownImageProcessor
from vitpose_hf.data import TopDownTransform
from vitpose_hf.data.converters import load_mpii
from vitpose_hf.detectors import CallableDetector
from vitpose_hf.image_processing_vitpose import to_rgb_tensor
from vitpose_hf.visualization import draw_keypoints

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny_config_kwargs  # noqa: E402

H, W = 36, 52  # not square: an EXIF quarter turn shows in the shape


def _files(tmp_path: Path) -> dict[str, Path]:
    """The images whose conversion used to differ between readers, written by Pillow."""
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (H, W, 1), dtype=np.uint8)
    files = {
        "RGBA PNG": tmp_path / "rgba.png",
        "16-bit PNG": tmp_path / "g16.png",
        "dark 16-bit PNG": tmp_path / "g16_dark.png",
        "EXIF-rotated JPEG": tmp_path / "turned.jpg",
    }
    Image.fromarray(np.concatenate([rgb, alpha], -1), "RGBA").save(files["RGBA PNG"])
    Image.fromarray(rng.integers(0, 65536, (H, W), dtype=np.uint16)).save(files["16-bit PNG"])
    Image.fromarray(rng.integers(0, 200, (H, W), dtype=np.uint16)).save(files["dark 16-bit PNG"])
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the upright image is W high and H wide
    smooth = np.linspace(0, 255, H * W * 3).reshape(H, W, 3).astype(np.uint8)
    Image.fromarray(smooth).save(files["EXIF-rotated JPEG"], exif=exif, quality=95)
    return files


def _eight_bit(t: torch.Tensor) -> np.ndarray:
    """`(3, H, W)` 0..255 -> `(H, W, 3)` uint8, rounded as an 8-bit RGB image holds it."""
    return t.float().round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def pipe():
    import transformers

    import vitpose_hf  # noqa: F401  (registers the task)

    torch.manual_seed(0)
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs())).eval()
    processor = VitPoseTopDownImageProcessor(size={"height": 64, "width": 48})
    return transformers.pipeline("keypoint-detection", model=model, image_processor=processor, device="cpu")


def test_every_reader_sees_the_same_pixels(tmp_path, pipe):
    plain = VitPoseTopDownImageProcessor(do_affine_transform=False, do_rescale=False, do_normalize=False)
    for kind, path in _files(tmp_path).items():
        reference = to_rgb_tensor(path)
        expected_8bit = _eight_bit(reference)
        if kind == "EXIF-rotated JPEG":
            assert reference.shape == (3, W, H), kind
        # the processor
        assert torch.equal(plain(str(path))["pixel_values"][0], reference.float()), kind
        # the pipeline, and the picture its detector is given
        seen = []
        detector = CallableDetector(lambda image: seen.append(np.asarray(image).copy()) or [])
        pipe(str(path), detector=detector)
        np.testing.assert_array_equal(seen[0], expected_8bit, err_msg=kind)
        # a detector called on the file itself
        detector(str(path))
        np.testing.assert_array_equal(seen[1], expected_8bit, err_msg=kind)
        # drawing
        np.testing.assert_array_equal(np.asarray(draw_keypoints(str(path), [])), expected_8bit, err_msg=kind)


def _training_crops(rows: dict) -> torch.Tensor:
    transform = TopDownTransform("coco", image_size=(64, 48), heatmap_size=(16, 12), train=False)
    return torch.stack(transform(rows)["pixel_values"])


def test_the_training_transform_reads_files_and_bytes_like_the_processor(tmp_path):
    """Same window, same loader: the eval crop of TopDownTransform equals the processor's crop (up to
    float32 rounding of the folded normalisation, far below one grey level: 1 / (255 * 0.229))."""
    processor = VitPoseTopDownImageProcessor(size={"height": 64, "width": 48})
    for kind, path in _files(tmp_path).items():
        height, width = to_rgb_tensor(path).shape[-2:]
        box = [2.0, 3.0, width - 6.0, height - 5.0]
        expected = processor(str(path), boxes=[[box]])["pixel_values"]
        rows = {"image_path": [str(path)], "bbox": [box], "keypoints": [[0.0] * 51], "annotation_id": [1]}
        by_path = _training_crops(rows)
        torch.testing.assert_close(by_path, expected, rtol=0, atol=1e-5, msg=kind)
        by_bytes = _training_crops({**rows, "image": [{"bytes": path.read_bytes(), "path": None}]})
        assert torch.equal(by_bytes, by_path), kind


def test_the_mpii_converter_reports_the_size_the_image_decodes_at(tmp_path):
    path = _files(tmp_path)["EXIF-rotated JPEG"]
    entry = {"image": path.name, "joints": [[5.0, 5.0]] * 16, "joints_vis": [1] * 16, "center": [20.0, 20.0],
             "scale": 0.1}
    (tmp_path / "mpii.json").write_text(json.dumps([entry]))
    row = load_mpii(tmp_path / "mpii.json", tmp_path)[0]
    assert (row["image_width"], row["image_height"]) == (H, W) == tuple(to_rgb_tensor(path).shape[:0:-1])


def test_encoded_sources_share_the_rules(tmp_path):
    from vitpose_hf.image_io import image_size, rgb_tensor_to_pil, to_rgb_pil

    for kind, path in _files(tmp_path).items():
        reference = to_rgb_tensor(path)
        data = path.read_bytes()
        for source in (data, bytearray(data), memoryview(data), {"bytes": data, "path": "elsewhere.png"},
                       {"bytes": None, "path": str(path)}, path):
            assert torch.equal(to_rgb_tensor(source), reference), (kind, type(source).__name__)
        assert image_size(path) == (reference.shape[2], reference.shape[1]), kind
        assert np.array_equal(np.asarray(to_rgb_pil(path)), _eight_bit(reference)), kind
        assert np.array_equal(np.asarray(rgb_tensor_to_pil(reference)), _eight_bit(reference)), kind
    rgb = Image.new("RGB", (4, 3), (1, 2, 3))
    assert to_rgb_pil(rgb) is rgb  # nothing to convert: not copied
    with pytest.raises(ValueError, match=r"could not read image bytes .*\(row 3\)"):
        to_rgb_tensor(b"not an image", "row 3")
    with pytest.raises(ValueError, match="needs 'bytes' or 'path'"):
        to_rgb_tensor({"bytes": None, "path": None})
    with pytest.raises(ValueError, match=r"image file not found: .*nothing\.png"):
        to_rgb_tensor(tmp_path / "nothing.png")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the test log stays clean
        pass


def test_urls_are_fetched_and_decoded_by_the_same_rules(tmp_path, pipe, monkeypatch):
    """One URL mechanism (transformers' HTTP client) for the processor, the pipeline, drawing and the
    detectors, served here by a local HTTP server (no internet needed)."""
    for proxy in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)  # the local server is reached directly
    files = _files(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        for kind, path in files.items():
            url = f"{base}/{path.name}"
            reference = to_rgb_tensor(path)
            assert torch.equal(to_rgb_tensor(url, timeout=10), reference), kind
            np.testing.assert_array_equal(np.asarray(draw_keypoints(url, [])), _eight_bit(reference), err_msg=kind)
        boxes = [[1.0, 1.0, 20.0, 20.0]]
        url = f"{base}/{files['RGBA PNG'].name}"
        crops = pipe.preprocess(url, boxes=boxes)["pixel_values"]
        assert torch.equal(crops, pipe.preprocess(str(files["RGBA PNG"]), boxes=boxes)["pixel_values"])
        with pytest.raises(ValueError, match=r"could not load image from URL .*missing\.png"):
            to_rgb_tensor(f"{base}/missing.png", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_pillow_decodes_the_real_photographs_as_opencv_did(shared_data):
    """Training read files with OpenCV until the loaders became one: on the real COCO photographs
    (no alpha, 8-bit, no EXIF turn) Pillow gives the very same pixels, so no training crop moved."""
    import cv2

    files = sorted((shared_data / "coco_sample").glob("*.jpg")) + sorted((shared_data / "coco_mini_train").rglob("*.jpg"))
    assert len(files) >= 4
    for path in files:
        opencv = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        ours = to_rgb_tensor(path)
        assert ours.dtype == torch.uint8
        assert np.array_equal(ours.permute(1, 2, 0).numpy(), opencv), path.name
