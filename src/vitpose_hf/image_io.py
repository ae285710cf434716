"""Reading images: one loader, one set of conversion rules, for every part of vitpose_hf.

`to_rgb_tensor` turns any accepted image (a file path, an http(s) URL, encoded bytes, a
`datasets.Image` entry, a PIL image, a numpy array or a torch tensor) into an RGB `(3, H, W)`
tensor with values in 0..255. The image processor, the keypoint-detection pipeline, the person
detectors, `visualization.draw_keypoints`, the training transform (`data.TopDownTransform`), the MAE
example and the benchmarks all read pixels through it, so one file gives the same pixels everywhere:
EXIF orientation applied, alpha composited over white, 16-bit data divided by 257, floats in [0, 1]
scaled by 255. `to_rgb_pil` is the same conversion as an 8-bit RGB PIL image (what detectors and
drawing take), `rgb_tensor_to_pil` its last step, and `image_size` the size an image file decodes at
(EXIF orientation applied), read from its header (the MPII converter's image size).

Files, bytes and URLs are decoded by Pillow. OpenCV's `imread` gives the same pixels for the real COCO
photographs of the test data (`tests/test_image_io.py`) but drops alpha and shifts 16-bit data by 8
bits instead of dividing by 257, so it is not used for reading.

This module is saved beside checkpoints with the image processor (transformers' custom-code
mechanism copies the processor's sibling modules): at module level it imports only the standard
library, numpy and torch; Pillow and the HTTP client are imported inside functions, in `try` blocks
(which transformers' check of saved code skips).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "IMAGE_EXTENSIONS", "to_rgb_tensor", "to_rgb_pil", "rgb_tensor_to_pil", "image_size", "is_url", "is_encoded_image", "tensor_from_numpy",
]  # fmt: skip

#: file name endings of the image files looked for in folders (CLI, image sequences of videos)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")

# PIL modes carrying an alpha channel (premultiplied "RGBa" / "La" are un-premultiplied by PIL's convert)
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_16BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
_UINT16_TO_8BIT = 257.0  # 65535 / 255: 16-bit full scale onto 8-bit full scale
_EXIF_ORIENTATION = 0x0112  # EXIF tag; values 5..8 turn the image by 90 degrees (width <-> height)
_BYTES_TYPES = (bytes, bytearray, memoryview)


def _pil():
    """`(PIL.Image, PIL.ImageOps)`; ImportError with the install hint when Pillow is missing."""
    try:  # a `try`: transformers' check of saved code skips optional imports in one
        from PIL import Image, ImageOps
    except ImportError as err:  # pragma: no cover - Pillow comes with transformers' vision extra
        raise ImportError("reading images needs Pillow (pip install pillow)") from err
    return Image, ImageOps


def _pil_image_class():
    """`PIL.Image.Image`, or None without Pillow (then no input can be a PIL image)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - PIL is a transformers dependency
        return None
    return Image.Image


def tensor_from_numpy(arr: np.ndarray) -> torch.Tensor:
    """`torch.from_numpy` without copying and without the read-only warning (we never write)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


def _named(message: str, name: str) -> str:
    """`message`, followed by the caller's name for the image when it says more than "image"."""
    return message if name == "image" else f"{message} ({name})"


def is_url(image: Any) -> bool:
    """Whether `image` is a string starting with `http://` or `https://`."""
    return isinstance(image, str) and image.startswith(("http://", "https://"))


def _fetch_url(url: str, timeout: float | None, name: str) -> bytes:
    """The body of an http(s) GET of `url` (redirects followed); ValueError naming the URL on failure."""
    try:  # the HTTP client transformers' own `load_image` uses
        from huggingface_hub.utils import httpx
    except ImportError as err:  # pragma: no cover - huggingface_hub comes with transformers
        raise ImportError("downloading images needs huggingface_hub (installed with transformers)") from err
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
    except Exception as err:  # network failure or HTTP error status
        raise ValueError(_named(f"could not load image from URL {url!r}: {err}", name)) from err
    return response.content


def _decode(source: Any, what: str, name: str):
    """A PIL image from a path or a binary file object, decoded, EXIF orientation applied."""
    Image, ImageOps = _pil()
    try:
        image = Image.open(source)
        image.load()
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation not in (None, 1):  # transpose only when needed: exif_transpose copies otherwise
            image = ImageOps.exif_transpose(image)
    except Exception as err:  # PIL raises many types for corrupt files
        raise ValueError(_named(f"could not read {what} (corrupt or not an image): {err}", name)) from err
    return image


def _open_source(image: Any, name: str, timeout: float | None):
    """The decoded PIL image of an encoded source (path, URL, bytes, `datasets.Image` dict), or None
    when `image` is not one (a PIL image, an array, ...)."""
    if isinstance(image, dict):
        if image.get("bytes") is not None:
            image = image["bytes"]
        elif image.get("path"):
            image = image["path"]
        else:
            raise ValueError(_named(
                f"an image dict needs 'bytes' or 'path' (a datasets.Image entry), got keys {sorted(map(str, image))}",
                name,
            ))
    if isinstance(image, _BYTES_TYPES):
        return _decode(io.BytesIO(image), "image bytes", name)
    if is_url(image):
        return _decode(io.BytesIO(_fetch_url(image, timeout, name)), f"image from URL {image!r}", name)
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise ValueError(_named(f"image file not found: {str(path)!r}", name))
        return _decode(path, f"image file {str(path)!r}", name)
    return None


def _alpha_over_white(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """`rgb (3, H, W)` and `alpha (1, H, W)` in 0..255 -> float32 composite over a white background."""
    rgb = rgb.to(torch.float32)
    a = alpha.to(torch.float32) / 255.0
    return rgb * a + 255.0 * (1.0 - a)


def _scaled_values(t: torch.Tensor, name: str, kind: str = "") -> torch.Tensor:
    """Pixel values -> uint8 (kept) or float32 in 0..255 by the rules of `to_rgb_tensor`; `kind`:
    "16bit" (divide by 257), "levels" (integers already checked to lie in 0..255) or "" (by dtype).
    ValueError for values that no rule covers."""
    if t.dtype == torch.uint8:
        return t
    if t.dtype == torch.bool:
        return t.to(torch.uint8) * 255
    if kind == "levels":
        return t.to(torch.float32)
    if kind == "16bit" or t.dtype == getattr(torch, "uint16", None):
        t = t.to(torch.float32) if t.dtype != torch.int64 else t
        if t.numel() and (float(t.min()) < 0 or float(t.max()) > 65535):
            raise ValueError(f"{name} is a 16-bit image but holds values outside 0..65535")
        return t.to(torch.float32) / _UINT16_TO_8BIT
    if t.is_floating_point():
        if t.numel() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} holds NaN or infinite pixel values")
        lo, hi = (float(t.min()), float(t.max())) if t.numel() else (0.0, 0.0)
        if lo < 0 or hi > 255:
            raise ValueError(
                f"{name} holds float pixel values in [{lo:g}, {hi:g}]; expected [0, 1] (scaled by 255) or [0, 255]"
            )
        t = t.to(torch.float32)
        return t * 255.0 if hi <= 1.0 else t
    if t.is_complex():
        raise ValueError(f"{name} has unsupported pixel dtype {t.dtype}")
    if t.dtype in (getattr(torch, "uint32", None), getattr(torch, "uint64", None)):
        t = t.to(torch.int64)  # min / max are not implemented for them on every build
    lo, hi = (int(t.min()), int(t.max())) if t.numel() else (0, 0)
    if lo < 0 or hi > 255:
        raise ValueError(
            f"{name} has {str(t.dtype).replace('torch.', '')} pixels in [{lo}, {hi}]; integer images other than "
            "uint8 / uint16 must hold 8-bit levels 0..255 (cast 16-bit data to uint16)"
        )
    return t.to(torch.float32)


def _channels_to_rgb(t: torch.Tensor, name: str, kind: str = "") -> torch.Tensor:
    """`t (C, H, W)` with C in 1..4 (grey, grey+alpha, RGB, RGBA) -> RGB `(3, H, W)` in 0..255."""
    c, h, w = t.shape
    if c not in (1, 2, 3, 4):
        raise ValueError(f"{name} has {c} channels; expected 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA)")
    if h == 0 or w == 0:
        raise ValueError(f"{name} is empty: {w}x{h} pixels (width x height)")
    t = _scaled_values(t, name, kind)
    if c == 1:
        return t.expand(3, -1, -1)
    if c == 2:
        return _alpha_over_white(t[:1].expand(3, -1, -1), t[1:])
    if c == 3:
        return t
    return _alpha_over_white(t[:3], t[3:])


def _pil_to_rgb(image, name: str) -> torch.Tensor:
    """A PIL image of any mode -> `(3, H, W)` by the rules of `to_rgb_tensor`."""
    mode = image.mode
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{name} is empty: {image.width}x{image.height} pixels (width x height)")
    if mode == "RGB" and "transparency" not in image.info:
        return tensor_from_numpy(np.asarray(image)).permute(2, 0, 1)
    if mode in _16BIT_MODES or mode == "I":
        # "I" (32-bit) is how PIL holds 16-bit PNG / TIFF data: read as 16-bit like "I;16"
        arr = np.asarray(image).astype(np.float32 if mode != "I" else np.int64)
        return _channels_to_rgb(torch.from_numpy(arr)[None], name, "16bit")
    if mode == "F":
        return _channels_to_rgb(torch.from_numpy(np.array(image, dtype=np.float32))[None], name)
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = tensor_from_numpy(np.asarray(image.convert("RGBA"))).permute(2, 0, 1)
        return _alpha_over_white(rgba[:3], rgba[3:])
    if mode == "L":
        return tensor_from_numpy(np.asarray(image))[None].expand(3, -1, -1)
    # P (no transparency), 1, CMYK, YCbCr, LAB, HSV, RGBX...: PIL's own conversion
    return tensor_from_numpy(np.asarray(image.convert("RGB"))).permute(2, 0, 1)


def _numpy_to_rgb(image: np.ndarray, name: str) -> torch.Tensor:
    arr, kind = image, ""
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} has unsupported pixel dtype {image.dtype}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype == np.uint16:
        arr, kind = arr.astype(np.float32), "16bit"
    elif arr.dtype.kind in "iu" and arr.dtype != np.uint8:  # other integers: 8-bit levels only
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 255:
            raise ValueError(
                f"{name} has {image.dtype} pixels in [{lo}, {hi}]; integer images other than uint8 / uint16 "
                "must hold 8-bit levels 0..255 (cast 16-bit data to uint16)"
            )
        arr, kind = arr.astype(np.float32), "levels"
    if any(stride < 0 for stride in arr.strides):
        arr = np.ascontiguousarray(arr)
    t = tensor_from_numpy(arr)
    if t.ndim == 2:
        t = t[None]
    elif t.ndim == 3:
        t = t.permute(2, 0, 1) if 1 <= t.shape[-1] <= 4 else t
    else:
        raise ValueError(f"{name} must be a 2-D or 3-D array, got shape {image.shape}")
    return _channels_to_rgb(t, name, kind)


def _torch_to_rgb(image: torch.Tensor, name: str) -> torch.Tensor:
    t = image.detach().cpu()
    if t.ndim == 2:
        t = t[None]
    elif t.ndim == 3:
        if not 1 <= t.shape[0] <= 4:
            t = t.permute(2, 0, 1)
    else:
        raise ValueError(f"{name} must be a 2-D or 3-D tensor, got shape {tuple(image.shape)}")
    return _channels_to_rgb(t, name)


def to_rgb_tensor(image: Any, name: str = "image", *, timeout: float | None = None) -> torch.Tensor:
    """Convert one image to an RGB `(3, H, W)` tensor with values in 0..255: the one conversion of
    vitpose_hf (processor, pipeline, detectors, drawing, training transform).

    Rules:
        - Encoded images (a file path, an http(s) URL, `bytes`, a `datasets.Image` entry
          `{"bytes": ..., "path": ...}`: its bytes, else its path) are decoded by Pillow with the
          EXIF orientation applied, then converted as PIL images. URLs are fetched with
          transformers' HTTP client (`huggingface_hub.utils.httpx`, redirects followed, `timeout`).
        - A PIL image given as such is taken as it is (no EXIF rotation: its pixels are already
          decoded, like an array's).
        - PIL "RGB" as is; "L" repeated on three channels; "P" (palette), "1", "CMYK", "YCbCr",
          "LAB", "HSV", "RGBX" through PIL's `convert("RGB")`.
        - Alpha ("RGBA", "LA", "PA", "RGBa", "La", and "P" / "L" / "RGB" with a `transparency`
          entry) is composited over white: `rgb * a + 255 * (1 - a)`, `a = alpha / 255`.
        - 16-bit data (PIL "I;16*" and "I", numpy / torch uint16) are divided by 257 (65535 -> 255);
          PIL "I" values must lie in 0..65535. Pillow itself reads 16-bit-per-channel colour files
          (48/64-bit PNG, TIFF) as 8-bit "RGB" / "RGBA" holding the high byte (`v // 256`, within one
          level of `v / 257`); pass such an image as a uint16 array for the exact division.
        - Floats (PIL "F", float16/32/64 arrays and tensors) must be finite: all values in [0, 1] are
          multiplied by 255, otherwise values in [0, 255] are taken as they are; any value below 0 or
          above 255 is refused.
        - bool: False -> 0, True -> 255. uint8 as is. Other integer dtypes must hold 0..255.
        - Arrays: 2-D `(H, W)` is grey. A 3-D numpy array is channels-last `(H, W, C)` when its last
          axis has 1..4 entries, else `(C, H, W)`; a 3-D torch tensor is channels-first `(C, H, W)`
          when its first axis has 1..4 entries, else `(H, W, C)`. C = 1 grey, 2 grey + alpha,
          3 RGB, 4 RGBA (alpha in the same scale as the colour, composited over white).

    Args:
        image: the image (see the rules).
        name: how error messages name the image (e.g. "image 3", or a path and annotation id).
        timeout: seconds for a URL download (None: no limit).

    Returns:
        `(3, H, W)` uint8 for uint8 / bool / 8-bit PIL input without alpha (not copied for RGB; it
        may share read-only memory with the input), float32 otherwise; values in [0, 255].

    Raises:
        ValueError (naming `name`): an empty image (width or height 0), NaN / inf or out-of-range
        values, an unsupported shape, channel count, dtype or type, a missing or corrupt file,
        undecodable bytes, a failed download.
    """
    decoded = _open_source(image, name, timeout)
    if decoded is not None:
        return _pil_to_rgb(decoded, name)
    pil_class = _pil_image_class()
    if pil_class is not None and isinstance(image, pil_class):
        return _pil_to_rgb(image, name)
    if isinstance(image, np.ndarray):
        return _numpy_to_rgb(image, name)
    if isinstance(image, torch.Tensor):
        return _torch_to_rgb(image, name)
    raise ValueError(
        f"{name} has unsupported type {type(image).__name__}; expected a path, URL, bytes, datasets.Image "
        "dict, PIL image, numpy array or torch tensor"
    )


def rgb_tensor_to_pil(rgb: torch.Tensor):
    """`(3, H, W)` tensor with values in 0..255 (as `to_rgb_tensor` returns it) -> 8-bit RGB PIL image;
    float values are rounded to the nearest level (halves to even)."""
    Image, _ = _pil()
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"expected an RGB (3, H, W) tensor, got shape {tuple(rgb.shape)}")
    if rgb.dtype != torch.uint8:
        rgb = rgb.round().clamp(0, 255).to(torch.uint8)
    return Image.fromarray(np.ascontiguousarray(rgb.permute(1, 2, 0).cpu().numpy()), mode="RGB")


def to_rgb_pil(image: Any, name: str = "image", *, timeout: float | None = None):
    """`to_rgb_tensor` as an 8-bit RGB PIL image: what person detectors and `draw_keypoints` take.

    Args:
        image / name / timeout: as `to_rgb_tensor`.

    Returns:
        `PIL.Image.Image` in mode "RGB": `rgb_tensor_to_pil(to_rgb_tensor(image))`, i.e. the same
        pixels rounded to 8 bits; a PIL "RGB" image without transparency is returned as it is (not
        copied).

    Raises:
        ValueError: as `to_rgb_tensor`.
    """
    pil_class = _pil_image_class()
    if (
        pil_class is not None and isinstance(image, pil_class) and image.mode == "RGB"
        and "transparency" not in image.info and image.width > 0 and image.height > 0
    ):
        return image
    return rgb_tensor_to_pil(to_rgb_tensor(image, name, timeout=timeout))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """`(width, height)` of an image file as `to_rgb_tensor` decodes it (EXIF orientation applied:
    a photo turned by 90 degrees reports its upright size), read from the header where the format
    allows it.

    Raises:
        ValueError: a missing file, or one that is not an image (naming it).
    """
    Image, _ = _pil()
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ValueError(f"image file not found: {str(name)!r}")
    try:
        with Image.open(name) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception as err:  # PIL raises many types for corrupt files
        raise ValueError(f"could not read image file {str(name)!r} (corrupt or not an image): {err}") from err
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def is_encoded_image(image: Any) -> bool:
    """Whether `image` is one image given encoded (a path, URL, bytes or `datasets.Image` dict)."""
    return isinstance(image, (str, Path, os.PathLike, dict) + _BYTES_TYPES)
