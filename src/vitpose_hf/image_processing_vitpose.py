"""Image processor for top-down ViTPose: boxes -> batched crops, heatmaps -> keypoints in the image.

Everything runs as batched torch operations: all boxes of an image are cropped by one
`grid_sample` (see `geometry.warp_affine_batch`), and heatmaps of all persons and keypoints are
decoded at once (argmax, DARK-UDP refinement, UDP inverse transform) without a Python loop per
heatmap.

Conventions: boxes are COCO `xywh` pixels; crops are `(height, width)` = `size`; the crop window is
the box grown to the crop's aspect ratio and padded by `padding` (1.25), exactly as the official
ViTPose test pipeline (`TopDownAffine` with UDP). Heatmap coordinates are `(x, y)` heatmap pixels.

Bad input policy (documented choices):
- an empty image list raises ValueError; an image with no boxes simply yields no crops;
- a box with a non-finite value or a width/height <= 0 raises ValueError naming the image, the box
  index and the box (no silent clipping);
- a box partly or fully outside the image is cropped as is; pixels outside the image read as 0 before
  normalisation (OpenCV's `borderValue=0`), so a box fully outside gives a constant crop;
- an unreadable / corrupt image file raises ValueError naming the file;
- images are converted by `image_io.to_rgb_tensor`, the one image loader of vitpose_hf (the
  pipeline, the detectors, drawing and the training transform read images through it too; its
  docstring lists the rules);
  an empty image (0 pixels wide or high) with boxes, NaN / inf or out-of-range pixels raise
  ValueError naming the image;
- a box beyond +-2**24 px or one whose crop matrix is singular raises ValueError naming it;
  `padding`, `normalize_factor`, `rescale_factor`, mean / std, `kernel_size` (odd >= 1) and
  `threshold` (finite) are checked where they enter;
- non-finite heatmaps raise ValueError naming the person; decoding never returns NaN coordinates
  (a degenerate DARK step falls back to the argmax).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.processing_utils import ImagesKwargs

from .geometry import (
    CropWorkspace,
    box_xywh_to_center_scale,
    heatmap_coords_to_image,
    udp_crops_np,
    warp_affine_batch,
)
from .heatmaps import check_kernel_size, decode_heatmaps, gaussian_blur_heatmaps, predict_heatmaps
from .image_io import is_encoded_image, tensor_from_numpy, to_rgb_tensor
from .saved_code import stamp_saved_code

logger = logging.getLogger(__name__)


__all__ = [
    "VitPoseTopDownImageProcessor",
    "VitPoseImageProcessor",
    "MAX_BOX_VALUE",
    "check_finite_number",
    "decode_heatmaps",
    "gaussian_blur_heatmaps",
    "predict_heatmaps",
    "to_rgb_tensor",
]


class VitPoseImageProcessorKwargs(ImagesKwargs, total=False):
    """Extra keys of this processor (besides the standard rescale / normalize ones)."""

    do_affine_transform: bool | None
    normalize_factor: float | None
    padding: float | None


def _is_single_image(x: Any) -> bool:
    if is_encoded_image(x):
        return True
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return x.ndim != 4
    try:
        from PIL import Image

        return isinstance(x, Image.Image)
    except ImportError:  # pragma: no cover
        return False


def _flatten_images(images: Any) -> list:
    if _is_single_image(images):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    if isinstance(images, (list, tuple)):
        return list(images)
    raise ValueError(f"images has unsupported type {type(images).__name__}")


#: largest |x|, |y|, w, h of a box in pixels: float32 keypoints still resolve one pixel up to 2**24,
#: and the crop matrices of far larger boxes underflow (a 1e200 box has a zero determinant)
MAX_BOX_VALUE = float(2**24)


def check_finite_number(value: Any, name: str, positive: bool = False) -> float:
    """`float(value)`, ValueError naming `name` unless it is a finite number (> 0 if `positive`)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(number) or (positive and not number > 0):
        raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}, got {value!r}")
    return number


def _check_options(opts: dict) -> None:
    """ValueError naming the first invalid processor setting (size, factors, padding, mean / std)."""
    VitPoseTopDownImageProcessor._size_dict(opts["size"])
    check_finite_number(opts["padding"], "padding", positive=True)
    check_finite_number(opts["normalize_factor"], "normalize_factor", positive=True)
    check_finite_number(opts["rescale_factor"], "rescale_factor", positive=True)
    mean, std = list(opts["image_mean"]), list(opts["image_std"])
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"image_mean / image_std must have 3 values, got {mean}, {std}")
    for i in range(3):
        check_finite_number(mean[i], f"image_mean[{i}]")
        check_finite_number(std[i], f"image_std[{i}]", positive=True)


def _oversized_box(a: np.ndarray) -> int | None:
    """Index of the first `(n, 4)` box with a value beyond `MAX_BOX_VALUE`, else None."""
    big = (np.abs(a) > MAX_BOX_VALUE).any(axis=-1)
    return int(np.flatnonzero(big)[0]) if big.any() else None


def _check_crop_matrices(matrices: np.ndarray, boxes: np.ndarray, image_index: int) -> None:
    """ValueError naming the box whose `(2, 3)` crop matrix is not finite or not invertible in float64
    (a box far smaller than a pixel, or extreme `padding` / `normalize_factor`)."""
    with np.errstate(all="ignore"):
        det = matrices[:, 0, 0] * matrices[:, 1, 1] - matrices[:, 0, 1] * matrices[:, 1, 0]
        ok = np.isfinite(matrices).all(axis=(1, 2)) & np.isfinite(det) & (det != 0) & np.isfinite(1.0 / det)
    if not ok.all():
        j = int(np.flatnonzero(~ok)[0])
        raise ValueError(
            f"box {j} of image {image_index} cannot be cropped: {boxes[j].tolist()} (xywh) gives a crop matrix that "
            "is singular or not finite (a box this small or large, or such padding / normalize_factor, is unusable)"
        )


def _boxes_per_image(boxes: Any, num_images: int) -> list[torch.Tensor]:
    """Nested per-image boxes -> list of `(n_i, 4)` float64 tensors, validated."""
    if boxes is None:
        raise ValueError("boxes are required (one list of [x, y, w, h] boxes per image)")
    if isinstance(boxes, (np.ndarray, torch.Tensor)):
        t = torch.as_tensor(boxes)
        if t.ndim == 2 and num_images == 1:
            boxes = [t]
        elif t.ndim == 3:
            boxes = list(t)
        else:
            raise ValueError(f"boxes array must be (num_images, n, 4), got shape {tuple(t.shape)}")
    boxes = list(boxes)
    if len(boxes) != num_images:
        raise ValueError(f"got {num_images} images but {len(boxes)} lists of boxes; pass one list per image")
    out = []
    for i, image_boxes in enumerate(boxes):
        if image_boxes is None or (not isinstance(image_boxes, torch.Tensor) and len(image_boxes) == 0):
            out.append(torch.zeros(0, 4, dtype=torch.float64))
            continue
        # validated in float64 numpy (a handful of tiny torch ops cost more than the whole check)
        try:
            if isinstance(image_boxes, torch.Tensor):
                a = image_boxes.detach().cpu().to(torch.float64).numpy()
            else:
                a = np.asarray(image_boxes, dtype=np.float64)
        except (ValueError, TypeError) as err:
            raise ValueError(f"boxes of image {i} are not an (n, 4) array of numbers: {image_boxes!r}") from err
        if a.size == 0:
            out.append(torch.zeros(0, 4, dtype=torch.float64))
            continue
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2 or a.shape[-1] < 4:
            raise ValueError(f"boxes of image {i} must be (n, 4) [x, y, w, h], got shape {tuple(a.shape)}")
        a = np.ascontiguousarray(a[:, :4])
        not_finite = ~np.isfinite(a).all(axis=-1)
        if not_finite.any():
            j = int(np.flatnonzero(not_finite)[0])
            raise ValueError(f"box {j} of image {i} is not finite: {a[j].tolist()}")
        empty = (a[:, 2] <= 0) | (a[:, 3] <= 0)
        if empty.any():
            j = int(np.flatnonzero(empty)[0])
            raise ValueError(f"box {j} of image {i} has non-positive width or height: {a[j].tolist()} (xywh)")
        j = _oversized_box(a)
        if j is not None:
            raise ValueError(
                f"box {j} of image {i} is beyond +-{MAX_BOX_VALUE:.0f} px: {a[j].tolist()} (xywh); "
                "boxes must lie within 2**24 px of the origin"
            )
        out.append(torch.from_numpy(a))
    return out


# ----------------------------------------------------------------------------- the processor
class VitPoseTopDownImageProcessor(BaseImageProcessor):
    r"""Top-down ViTPose image processor: crops every person box with the UDP affine warp (batched
    torch, cv2-exact), rescales and normalises; decodes heatmaps back to image keypoints.

    Reads and writes the `preprocessor_config.json` of transformers' VitPose checkpoints. Its name
    is its own (`image_processor_type` "VitPoseTopDownImageProcessor"): transformers resolves that
    field by class name, registered classes first, so sharing the name of transformers'
    `VitPoseImageProcessor` made `AutoImageProcessor` return this class for transformers' own
    checkpoints once vitpose_hf was imported. Folders saved under the old name load with this class
    through `from_pretrained`, the pipeline and the CLI; `VitPoseImageProcessor` stays importable
    from vitpose_hf as an alias of this class.

    Args:
        do_affine_transform (`bool`, defaults to True): crop each box; if False, images are taken as
            ready-made crops (all of one size) and boxes are not used.
        size (`dict`, defaults to `{"height": 256, "width": 192}`): crop size.
        do_rescale (`bool`, defaults to True) / rescale_factor (`float`, defaults to 1/255).
        do_normalize (`bool`, defaults to True) / image_mean / image_std (ImageNet by default).
        normalize_factor (`float`, defaults to 200.0): mmpose's `pixel_std` of the box scale.
        padding (`float`, defaults to 1.25): padding of the box (not in transformers' configs).

    Crops run on `torch.get_num_threads()` threads and reuse this processor's own buffers
    (`crop_workspace`); OpenCV's process-wide thread count is as it was after every call (see
    `geometry.warp_affine_batch`).
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = VitPoseImageProcessorKwargs

    def __init__(
        self,
        do_affine_transform: bool = True,
        size: dict[str, int] | None = None,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        normalize_factor: float = 200.0,
        padding: float = 1.25,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.do_affine_transform = bool(do_affine_transform)
        self.size = self._size_dict(size if size is not None else {"height": 256, "width": 192})
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = list(image_mean) if image_mean is not None else list(IMAGENET_DEFAULT_MEAN)
        self.image_std = list(image_std) if image_std is not None else list(IMAGENET_DEFAULT_STD)
        self.normalize_factor = float(normalize_factor)
        self.padding = float(padding)
        _check_options(self._options({}))
        # runtime state, not a setting: never saved (`to_dict`), fresh in a copy or an unpickled processor
        self._crop_workspace = CropWorkspace()

    @classmethod
    def for_config(cls, config, **kwargs) -> "VitPoseTopDownImageProcessor":
        """The default processor for a model config: crops of its `image_size` `(H, W)`, every
        other setting the official default (or `kwargs`)."""
        height, width = (int(v) for v in config.image_size)
        return cls(size={"height": height, "width": width}, **kwargs)

    @staticmethod
    def _size_dict(size) -> dict[str, int]:
        if isinstance(size, dict) or hasattr(size, "height"):
            h = size["height"] if isinstance(size, dict) else size.height
            w = size["width"] if isinstance(size, dict) else size.width
        elif isinstance(size, (list, tuple)) and len(size) == 2:
            h, w = size
        else:
            raise ValueError(f"size must be {{'height': H, 'width': W}} or (H, W), got {size!r}")
        if int(h) < 2 or int(w) < 2:
            raise ValueError(f"size must be at least 2x2, got {size!r}")
        return {"height": int(h), "width": int(w)}

    # --------------------------------------------------------------------------------- geometry
    @property
    def crop_size(self) -> tuple[int, int]:
        """`(height, width)` of the crops."""
        return self.size["height"], self.size["width"]

    @property
    def crop_workspace(self) -> CropWorkspace:
        """The buffers this processor's crops reuse from call to call (see `geometry.CropWorkspace`:
        a result is never overwritten while any tensor or view of it is alive)."""
        return self._crop_workspace

    def boxes_to_center_scale(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(N, 4)` xywh boxes -> `center (N, 2)`, `scale (N, 2)` with this processor's crop aspect,
        padding and `normalize_factor`."""
        h, w = self.crop_size
        return box_xywh_to_center_scale(boxes, w / h, padding=self.padding, pixel_std=self.normalize_factor)

    # --------------------------------------------------------------------------------- preprocess
    def __call__(self, images, boxes=None, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Crop and normalise; see `preprocess`."""
        return self.preprocess(images, boxes=boxes, return_tensors=return_tensors, **kwargs)

    _OPTION_NAMES = (
        "do_affine_transform", "size", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std",
        "normalize_factor", "padding",
    )  # fmt: skip

    def _options(self, kwargs: dict) -> dict:
        """This processor's settings with the per-call overrides in `kwargs` (popped from it)."""
        return {key: kwargs.pop(key, getattr(self, key)) for key in self._OPTION_NAMES}

    def preprocess(self, images, boxes=None, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Crop every box of every image and normalise the crops.

        Args:
            images: one image or a list (PIL, numpy `(H, W[, C])`, torch `(C, H, W)`, file path,
                http(s) URL, encoded bytes, `datasets.Image` dict); a 4-D array / tensor is a batch.
                Converted by `image_io.to_rgb_tensor` (its rules for EXIF orientation, alpha,
                palette, 16-bit, float, bool and channel layouts apply); an image without boxes is
                not read.
            boxes: per image, a list (or `(n, 4)` array) of COCO `[x, y, w, h]` boxes (extra columns
                such as a score are ignored). An image may have no boxes.
            return_tensors: "pt" (or None): torch tensors either way.
            **kwargs: overrides of this processor's attributes for this call (e.g. `padding=1.0`).

        Returns:
            `BatchFeature` with `pixel_values (N_total, 3, H, W)` float32 (all boxes of all images, in
            order), `center (N_total, 2)`, `scale (N_total, 2)` (float64, `scale` divided by
            `normalize_factor`) and `box_counts (num_images,)` long. Without the affine transform only
            `pixel_values` (one per image). No boxes at all give `pixel_values (0, 3, H, W)`.

        Raises:
            ValueError: no images, images/boxes count mismatch, a bad box (non-finite, w or h <= 0,
                beyond +-2**24 px, or too small to crop), an unreadable file, an unsupported, empty or
                non-finite image, an invalid option (e.g. `padding <= 0`).
        """
        if return_tensors not in (None, "pt", "torch"):
            raise ValueError(f"only return_tensors='pt' is supported, got {return_tensors!r}")
        opts = self._options(kwargs)
        if kwargs:
            logger.warning("ignoring unknown preprocessing arguments: %s", sorted(kwargs))
        _check_options(opts)
        image_list = _flatten_images(images)
        if len(image_list) == 0:
            raise ValueError("no images given")
        if not opts["do_affine_transform"]:
            tensors = [to_rgb_tensor(img, f"image {i}") for i, img in enumerate(image_list)]
            shapes = {tuple(t.shape) for t in tensors}
            if len(shapes) != 1:
                raise ValueError(f"without the affine transform all images must share a size, got {sorted(shapes)}")
            pixel_values = self._normalize(torch.stack([t.float() for t in tensors]), opts)
            return BatchFeature({"pixel_values": pixel_values})
        box_lists = _boxes_per_image(boxes, len(image_list))
        return self._crop_all(image_list, box_lists, opts, convert=True)

    def preprocess_rgb(self, images: Sequence[torch.Tensor], boxes, **kwargs) -> BatchFeature:
        """`preprocess` for images already converted by `to_rgb_tensor` (the pipeline converts once,
        for its detector and its box checks, and crops here without a second conversion).

        Args:
            images: `(3, H, W)` uint8 or float32 tensors with values in 0..255, as `to_rgb_tensor`
                returns them.
            boxes / **kwargs: as `preprocess` (always with the affine transform).

        Returns:
            the `BatchFeature` of `preprocess`.
        """
        opts = self._options(kwargs)
        if kwargs:
            logger.warning("ignoring unknown preprocessing arguments: %s", sorted(kwargs))
        _check_options(opts)
        images = list(images)
        for i, t in enumerate(images):
            if not isinstance(t, torch.Tensor) or t.ndim != 3 or t.shape[0] != 3 or t.dtype not in (torch.uint8, torch.float32):
                what = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"image {i} must be a (3, H, W) uint8 / float32 tensor from to_rgb_tensor, got {what}")
        return self._crop_all(images, _boxes_per_image(boxes, len(images)), opts, convert=False)

    def _crop_all(self, images: list, box_lists: list[torch.Tensor], opts: dict, convert: bool) -> BatchFeature:
        """Crops of every box of every image (converted one at a time with `to_rgb_tensor` if `convert`)."""
        out_h, out_w = self._size_dict(opts["size"]).values()
        ch_scale, ch_offset = self._value_affine(opts)
        crops, centers, scales = [], [], []
        for i, (image, image_boxes) in enumerate(zip(images, box_lists)):
            if image_boxes.shape[0] == 0:
                continue
            tensor = to_rgb_tensor(image, f"image {i}") if convert else image
            boxes_np = image_boxes.numpy()
            # = box_xywh_to_center_scale + get_udp_warp_matrix, bit for bit, in numpy (tiny torch ops are slow)
            with np.errstate(all="ignore"):  # a degenerate box is named by _check_crop_matrices
                center, scale, matrices = udp_crops_np(
                    boxes_np, (out_h, out_w), float(opts["padding"]), float(opts["normalize_factor"])
                )
            _check_crop_matrices(matrices, boxes_np, i)
            crops.append(
                warp_affine_batch(
                    tensor, tensor_from_numpy(matrices), (out_h, out_w), channel_scale=ch_scale, channel_offset=ch_offset,
                    workspace=self._crop_workspace,
                )
            )
            centers.append(tensor_from_numpy(center))
            scales.append(tensor_from_numpy(scale))
        if crops:
            pixel_values = crops[0] if len(crops) == 1 else torch.cat(crops)
            center, scale = torch.cat(centers), torch.cat(scales)
        else:
            pixel_values = torch.zeros(0, 3, out_h, out_w)
            center = scale = torch.zeros(0, 2, dtype=torch.float64)
        counts = torch.tensor([b.shape[0] for b in box_lists], dtype=torch.long)
        return BatchFeature({"pixel_values": pixel_values, "center": center, "scale": scale, "box_counts": counts})

    @staticmethod
    def _value_affine(opts: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Rescale + normalise as one per-channel `x * scale + offset` (float32, 3 values each)."""
        scale = np.ones(3)
        offset = np.zeros(3)
        if opts["do_rescale"]:
            scale = scale * float(opts["rescale_factor"])
        if opts["do_normalize"]:
            mean = np.asarray(opts["image_mean"], dtype=np.float64)
            std = np.asarray(opts["image_std"], dtype=np.float64)
            scale, offset = scale / std, (offset - mean) / std
        return torch.from_numpy(scale.astype(np.float32)), torch.from_numpy(offset.astype(np.float32))

    @staticmethod
    def _normalize(crops: torch.Tensor, opts: dict) -> torch.Tensor:
        x = crops.float()
        if opts["do_rescale"]:
            x = x * float(opts["rescale_factor"])
        if opts["do_normalize"]:
            mean = torch.tensor(opts["image_mean"], dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.tensor(opts["image_std"], dtype=torch.float32).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x.contiguous()

    # --------------------------------------------------------------------------------- decoding
    def decode_heatmaps(
        self,
        heatmaps: torch.Tensor,
        use_dark: bool = True,
        kernel_size: int = 11,
        use_udp: bool = True,
        clamp_to_heatmap: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See the module-level `decode_heatmaps`: `(N, K, h, w)` -> `coords (N, K, 2)`, `scores (N, K)`."""
        return decode_heatmaps(
            heatmaps, use_dark=use_dark, kernel_size=kernel_size, use_udp=use_udp, clamp_to_heatmap=clamp_to_heatmap
        )

    def post_process_pose_estimation(
        self,
        outputs_or_heatmaps,
        boxes,
        use_dark: bool = True,
        kernel_size: int = 11,
        threshold: float | None = None,
        use_udp: bool = True,
        clamp_to_heatmap: bool = False,
    ) -> list[list[dict[str, torch.Tensor]]]:
        """Heatmaps -> keypoints in image coordinates, grouped per image and person.

        Args:
            outputs_or_heatmaps: model output with `.heatmaps`, or a `(N_total, K, h, w)` tensor, in the
                order of the boxes given to `__call__`.
            boxes: the same nested per-image `[x, y, w, h]` boxes given to `__call__`.
            use_dark / kernel_size / use_udp: see `decode_heatmaps` (defaults: ViTPose's DARK-UDP).
            threshold: if set (a finite number), keep only keypoints with score > threshold.
            clamp_to_heatmap: keep refined keypoints on the heatmap, i.e. inside the crop window
                (default False: the official, unbounded DARK step).

        Returns:
            per image, per person: `{"keypoints": (K, 2) float32 image (x, y), "scores": (K,),
            "labels": (K,) long keypoint indices, "bbox": (4,) float32 the given xywh box}`.

        Raises:
            ValueError: heatmaps / boxes count mismatch, a bad box (as `preprocess`), an even or
                non-positive `kernel_size`, a non-finite `threshold`, non-finite heatmaps.
        """
        heatmaps = getattr(outputs_or_heatmaps, "heatmaps", outputs_or_heatmaps)
        if not isinstance(heatmaps, torch.Tensor) or heatmaps.ndim != 4:
            raise ValueError("outputs_or_heatmaps must carry (N, K, h, w) heatmaps")
        kernel_size = check_kernel_size(kernel_size)
        if threshold is not None:
            threshold = check_finite_number(threshold, "threshold")
        num_images = len(boxes) if not isinstance(boxes, (np.ndarray, torch.Tensor)) or boxes.ndim == 3 else 1
        box_lists = _boxes_per_image(boxes, num_images)
        all_boxes = torch.cat(box_lists) if box_lists else torch.zeros(0, 4, dtype=torch.float64)
        if all_boxes.shape[0] != heatmaps.shape[0]:
            raise ValueError(f"{heatmaps.shape[0]} heatmaps for {all_boxes.shape[0]} boxes; they must match")
        coords, scores = decode_heatmaps(
            heatmaps, use_dark=use_dark, kernel_size=kernel_size, use_udp=use_udp, clamp_to_heatmap=clamp_to_heatmap
        )
        center, scale = self.boxes_to_center_scale(all_boxes)
        keypoints = heatmap_coords_to_image(
            coords.cpu().double(), center, scale, heatmaps.shape[-2:], use_udp=use_udp, pixel_std=self.normalize_factor
        ).float()
        finite = torch.isfinite(keypoints).all(dim=-1).all(dim=-1) if keypoints.numel() else torch.ones(0, dtype=torch.bool)
        if not bool(finite.all()):
            j = int((~finite).nonzero()[0])
            raise ValueError(f"keypoints of box {j} ({all_boxes[j].tolist()}, xywh) are not finite in float32")
        scores = scores.cpu()
        labels = torch.arange(heatmaps.shape[1])
        results, start = [], 0
        for image_boxes in box_lists:
            persons = []
            for j in range(image_boxes.shape[0]):
                kp, sc, lb = keypoints[start + j], scores[start + j], labels
                if threshold is not None:
                    keep = sc > threshold
                    kp, sc, lb = kp[keep], sc[keep], lb[keep]
                persons.append({"keypoints": kp, "scores": sc, "labels": lb, "bbox": image_boxes[j].float()})
            start += image_boxes.shape[0]
            results.append(persons)
        return results

    def predict_heatmaps(self, model, pixel_values, flip_test=True, flip_pairs=None, dataset_index=None, batch_size=None):
        """See the module-level `predict_heatmaps` (the flip-test call path)."""
        return predict_heatmaps(model, pixel_values, flip_test, flip_pairs, dataset_index, batch_size)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`BaseImageProcessor.save_pretrained`, plus this module's code for `trust_remote_code=True`
        (copied by transformers, stamped with the vitpose_hf version: `saved_code`)."""
        result = super().save_pretrained(save_directory, *args, **kwargs)
        stamp_saved_code(save_directory, __file__)
        return result

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("_crop_workspace", None)
        out["size"] = dict(self.size)
        return out


# the class's name before 0.2 (transformers' processor has it too): the same class, for imports
VitPoseImageProcessor = VitPoseTopDownImageProcessor
# transformers' custom-code saving: `save_pretrained` copies this module and its siblings
# (geometry, keypoint schemas, the model code) and names the class in `auto_map`
VitPoseTopDownImageProcessor.register_for_auto_class("AutoImageProcessor")
