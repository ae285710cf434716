"""Top-down train/eval transform: person rows -> model inputs, labels and target weights.

`TopDownTransform` is meant for `dataset.with_transform(transform)` (a batched dict of columns in, a
dict of per-sample tensors out). Images are read by `vitpose_hf.image_io.to_rgb_tensor` and crops go
through `vitpose_hf.geometry` -- the very code the inference processor uses -- so training and
inference see identical pixels for identical windows.

The training augmentation is the official ViTPose COCO pipeline (mmpose 0.x):

- box -> (center, scale): the aspect ratio of the input is reached by growing the box, then padding
  1.25 (`TopDownCocoDataset._xywh2cs`), with the box-centre jitter of that function: with
  probability 0.3 the centre moves by `0.4 * (U[0,1)^2 - 0.5) * (w, h)` (mmpose draws it once when
  the dataset is built; here it is drawn per sample and epoch);
- `TopDownRandomFlip(flip_prob=0.5)`: mirror image, joints (`x -> W - 1 - x`, flip pairs swapped)
  and centre. The mirror is folded into the warp matrix, so no flipped copy of the image is made;
- `TopDownHalfBodyTransform(num_joints_half_body=8, prob_half_body=0.3)`: with more than 8 labeled
  joints, the window becomes the box of the upper or lower body joints (upper when
  `randn < 0.5` -- mmpose's own draw -- and more than 2 upper joints), aspect-fixed, scaled 1.5x;
- `TopDownGetRandomScaleRotation(rot_factor=40, scale_factor=0.5, rot_prob=0.6)`: scale
  `clip(1 + 0.5 randn, 0.5, 1.5)`, rotation `clip(40 randn, -80, 80)` deg with probability 0.6;
- `TopDownAffine(use_udp=True)`, `NormalizeTensor` (ImageNet mean/std, RGB) and
  `TopDownGenerateTarget(sigma=2, encoding="UDP")`.

Randomness is per sample: with a `seed`, sample `annotation_id` of `dataset_index` d at epoch `e`
(see `set_epoch`) for its `n`-th time in this process draws from
`numpy.random.default_rng([seed, d, annotation_id, e, n])`,
so runs are reproducible whatever the batch composition; with `seed=None` draws are fresh.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .. import geometry
from ..image_io import to_rgb_tensor
from ..keypoint_schemas import KeypointSchema, get_schema
from .targets import generate_heatmaps

logger = logging.getLogger(__name__)

__all__ = ["TopDownTransform", "load_image", "decode_image_entry", "IMAGENET_MEAN", "IMAGENET_STD"]

# the normalisation of ImageNet-pre-trained backbones, as transformers defines it (the processor's default too)
IMAGENET_MEAN = tuple(IMAGENET_DEFAULT_MEAN)
IMAGENET_STD = tuple(IMAGENET_DEFAULT_STD)

# the image loader under the names this module had for it (files; `datasets.Image` entries)
load_image = decode_image_entry = to_rgb_tensor


def _mix_id(value: int) -> int:
    return int(value) & 0xFFFFFFFFFFFFFFFF


class TopDownTransform:
    """Batched person rows -> `pixel_values`, `labels`, `target_weight` and meta, for `with_transform`.

    Args:
        schema: keypoint schema (name or `KeypointSchema`): flip pairs and upper-body joints.
        image_size: model input `(height, width)`.
        heatmap_size: target `(height, width)`; defaults to `image_size // 4`.
        sigma: Gaussian sigma in heatmap pixels.
        train: apply the random augmentation (False: deterministic eval crops, same targets).
        flip_prob, half_body_prob, half_body_min_joints, scale_factor, rotation_factor,
        rotation_prob, center_jitter_prob, center_jitter_factor: the augmentation parameters
            (official values by default; `center_jitter_factor` 0.4 is the total span of the
            centre shift as a fraction of the box size).
        padding: box padding factor (1.25).
        use_udp: UDP crops and targets (True, ViTPose) or the plain mmpose ones.
        mean, std: per-channel normalisation of `[0, 1]` RGB.
        seed: integer for reproducible augmentation, or None.
        joint_weights: optional `(K,)` multipliers of the target weights.

    Call with a dict of columns (lists), as `datasets` does, needing `image_path` or `image` (a
    `datasets.Image` column: PIL images or `{"bytes", "path"}`; either is read by
    `image_io.to_rgb_tensor`), `bbox`, `keypoints` and optionally
    `annotation_id`, `image_id`, `dataset_index`, `area`. Returns a dict
    of lists (one entry per sample):
        `pixel_values` `(3, H, W)` float32, `labels` `(K, h, w)` float32, `target_weight` `(K,)`
        float32, `dataset_index` int, `center` `(2,)`, `scale` `(2,)` (float64, pixel_std 200),
        `rotation` float (deg), `flipped` bool, `bbox` `(4,)`, `image_id`, `annotation_id`, `area`.
    """

    def __init__(
        self,
        schema: str | KeypointSchema = "coco",
        image_size: Sequence[int] = (256, 192),
        heatmap_size: Sequence[int] | None = None,
        sigma: float = 2.0,
        train: bool = True,
        flip_prob: float = 0.5,
        half_body_prob: float = 0.3,
        half_body_min_joints: int = 8,
        scale_factor: float = 0.5,
        rotation_factor: float = 40.0,
        rotation_prob: float = 0.6,
        center_jitter_prob: float = 0.3,
        center_jitter_factor: float = 0.4,
        padding: float = 1.25,
        use_udp: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        seed: int | None = None,
        joint_weights: Sequence[float] | None = None,
    ):
        self.schema = get_schema(schema)
        if len(image_size) != 2:
            raise ValueError(f"image_size must be (height, width), got {image_size!r}")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        if heatmap_size is None:
            heatmap_size = (self.image_size[0] // 4, self.image_size[1] // 4)
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.sigma = float(sigma)
        self.train = bool(train)
        self.flip_prob = float(flip_prob)
        self.half_body_prob = float(half_body_prob)
        self.half_body_min_joints = int(half_body_min_joints)
        self.scale_factor = float(scale_factor)
        self.rotation_factor = float(rotation_factor)
        self.rotation_prob = float(rotation_prob)
        self.center_jitter_prob = float(center_jitter_prob)
        self.center_jitter_factor = float(center_jitter_factor)
        self.padding = float(padding)
        self.use_udp = bool(use_udp)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255.0
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255.0
        self._channel_scale = (1.0 / self.std).flatten()
        self._channel_offset = (-self.mean / self.std).flatten()
        self.seed = seed
        self.joint_weights = None if joint_weights is None else torch.as_tensor(joint_weights, dtype=torch.float32)
        self.epoch = 0
        self._visits: dict[int, int] = {}
        self._rng = np.random.default_rng() if seed is None else None
        self._flip_perm = np.asarray(self.schema.flip_permutation(), dtype=np.int64)
        upper = np.zeros(self.schema.num_keypoints, dtype=bool)
        upper[list(self.schema.upper_body)] = True
        self._upper = upper
        # the crops' reusable buffers (a batch's crops are views of its output: reused once released)
        self._crop_workspace = geometry.CropWorkspace()

    @property
    def aspect_ratio(self) -> float:
        return self.image_size[1] / self.image_size[0]

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch mixed into the per-sample seeds (call it from a callback each epoch)."""
        self.epoch = int(epoch)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(schema={self.schema.name!r}, image_size={self.image_size}, "
            f"heatmap_size={self.heatmap_size}, train={self.train}, use_udp={self.use_udp}, seed={self.seed})"
        )

    # ------------------------------------------------------------------ randomness
    def _sample_rng(self, annotation_id: int, dataset_index: int = 0) -> np.random.Generator:
        if self.seed is None:
            return self._rng
        key = (_mix_id(dataset_index), _mix_id(annotation_id))
        n = self._visits.get(key, 0)
        self._visits[key] = n + 1
        return np.random.default_rng([_mix_id(self.seed), *key, self.epoch, n])

    # ------------------------------------------------------------------ augmentation steps
    def _half_body(self, joints: np.ndarray, vis: np.ndarray, rng: np.random.Generator):
        """mmpose `half_body_transform`: (center, scale) of the upper or lower body, or None."""
        labeled = vis > 0
        upper = joints[labeled & self._upper]
        lower = joints[labeled & ~self._upper]
        if rng.standard_normal() < 0.5 and len(upper) > 2:
            sel = upper
        elif len(lower) > 2:
            sel = lower
        else:
            sel = upper
        if len(sel) < 2:
            return None
        center = sel.mean(axis=0)
        w, h = sel.max(axis=0) - sel.min(axis=0)
        ar = self.aspect_ratio
        if w > ar * h:
            h = w / ar
        elif w < ar * h:
            w = h * ar
        return center, np.array([w, h]) / 200.0 * 1.5

    def _sample_params(
        self, bbox: np.ndarray, joints: np.ndarray, vis: np.ndarray, img_w: int, rng, center_scale=None
    ):
        """Random (or eval) window for one sample: center, scale, rotation, flipped, joints, vis.

        `center_scale`: the box's `(center, scale)` if already computed (batched in `__call__`)."""
        if center_scale is None:
            center, scale = geometry.box_xywh_to_center_scale(
                torch.as_tensor(bbox[None], dtype=torch.float64), self.aspect_ratio, self.padding
            )
            center_scale = (center[0].numpy(), scale[0].numpy())
        center, scale = center_scale[0].copy(), center_scale[1].copy()
        rotation, flipped = 0.0, False
        if not self.train:
            return center, scale, rotation, flipped, joints, vis
        if rng.random() < self.center_jitter_prob:
            center = center + self.center_jitter_factor * (rng.random(2) - 0.5) * bbox[2:4]
        if self.flip_prob > 0 and rng.random() <= self.flip_prob:
            flipped = True
            joints = joints[self._flip_perm].copy()
            vis = vis[self._flip_perm].copy()
            joints[:, 0] = img_w - 1.0 - joints[:, 0]
            joints = joints * (vis[:, None] > 0)
            center[0] = img_w - 1.0 - center[0]
        if (
            self.half_body_prob > 0
            and int((vis > 0).sum()) > self.half_body_min_joints
            and rng.random() < self.half_body_prob
        ):
            hb = self._half_body(joints, vis, rng)
            if hb is not None:
                center, scale = hb
        sf, rf = self.scale_factor, self.rotation_factor
        scale = scale * float(np.clip(rng.standard_normal() * sf + 1.0, 1.0 - sf, 1.0 + sf))
        r = float(np.clip(rng.standard_normal() * rf, -2.0 * rf, 2.0 * rf))
        rotation = r if rng.random() <= self.rotation_prob else 0.0
        return center, scale, rotation, flipped, joints, vis

    # ------------------------------------------------------------------ main entry
    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        for key in ("bbox", "keypoints") + (() if "image" in batch else ("image_path",)):
            if key not in batch:
                raise ValueError(
                    f"batch lacks column {key!r} (has {sorted(batch)}); with a Trainer set "
                    "remove_unused_columns=False so the raw columns reach the transform"
                )
        n = len(batch["bbox"])
        # the image of each row: an `image` column (datasets.Image: PIL, bytes) wins over `image_path`;
        # rows of one image share one decode (keyed by path, else by image id and file name, else by row)
        if "image_path" in batch:
            image_keys = list(batch["image_path"])
        else:
            ids = batch.get("image_id") or [None] * n
            image_keys = []
            for i in range(n):
                entry = batch["image"][i]
                name = entry.get("path") if isinstance(entry, dict) else getattr(entry, "filename", None)
                image_keys.append(("id", ids[i], name) if ids[i] is not None and ids[i] != -1 else ("row", i))
        paths = batch.get("image_path") or [f"image of row {i}" for i in range(n)]
        k = self.schema.num_keypoints
        ann_ids = batch.get("annotation_id") or list(range(n))
        ds_index = batch.get("dataset_index") or [self.schema.dataset_index or 0] * n
        centers, scales, rots, flips, joints_all, vis_all = [], [], [], [], [], []
        images: dict[str, torch.Tensor] = {}
        boxes = [np.asarray(b, dtype=np.float64) for b in batch["bbox"]]
        box_centers = box_scales = None
        if all(b.shape == (4,) and b[2] > 0 and b[3] > 0 for b in boxes):  # else the loop names the bad box
            c_all, s_all = geometry.box_xywh_to_center_scale(
                torch.as_tensor(np.stack(boxes), dtype=torch.float64), self.aspect_ratio, self.padding
            )
            box_centers, box_scales = c_all.numpy(), s_all.numpy()
        for i in range(n):
            path, key = paths[i], image_keys[i]
            kps = np.asarray(batch["keypoints"][i], dtype=np.float64)
            if kps.size != 3 * k:
                raise ValueError(
                    f"annotation id {ann_ids[i]!r} ({path}): {kps.size} keypoint values, expected {3 * k} "
                    f"for schema {self.schema.name!r}"
                )
            kps = kps.reshape(k, 3)
            bbox = boxes[i]
            if bbox.shape != (4,) or not (bbox[2] > 0 and bbox[3] > 0):
                raise ValueError(f"annotation id {ann_ids[i]!r} ({path}): box {bbox.tolist()} has zero size")
            if key not in images:
                source = batch["image"][i] if "image" in batch else path
                images[key] = to_rgb_tensor(source, f"{path} (annotation id {ann_ids[i]!r})")
            img_w = images[key].shape[-1]
            rng = self._sample_rng(ann_ids[i], ds_index[i]) if self.train else None
            vis = np.minimum(1.0, kps[:, 2]).clip(min=0.0)
            cs = (box_centers[i], box_scales[i]) if box_centers is not None else None
            c, s, r, f, j, v = self._sample_params(bbox, kps[:, :2].copy(), vis, img_w, rng, cs)
            centers.append(c), scales.append(s), rots.append(r), flips.append(f)
            joints_all.append(j), vis_all.append(v)

        center = torch.as_tensor(np.stack(centers), dtype=torch.float64)
        scale = torch.as_tensor(np.stack(scales), dtype=torch.float64)
        rotation = torch.as_tensor(rots, dtype=torch.float64)
        make = geometry.get_udp_warp_matrix if self.use_udp else geometry.get_plain_warp_matrix
        mats = make(center, scale, self.image_size, rotation=rotation)
        # fold the horizontal mirror x -> W - 1 - x of the source image into the matrix
        warp = mats.clone()
        for i in range(n):
            if flips[i]:
                img_w = images[image_keys[i]].shape[-1]
                warp[i, :, 0] = -mats[i, :, 0]
                warp[i, :, 2] = mats[i, :, 2] + mats[i, :, 0] * (img_w - 1.0)
        joints = torch.as_tensor(np.stack(joints_all), dtype=torch.float64)
        joints_crop = geometry.transform_points(joints, mats)
        vis_t = torch.as_tensor(np.stack(vis_all), dtype=torch.float64)
        labels, target_weight = generate_heatmaps(
            joints_crop, vis_t, self.image_size, self.heatmap_size, self.sigma, self.use_udp, self.joint_weights
        )

        pixel_values = [None] * n
        by_image: dict[Any, list[int]] = {}
        for i in range(n):
            by_image.setdefault(image_keys[i], []).append(i)
        for key, idx in by_image.items():
            # normalisation folded into the warp (applied once to the source region, not to every crop)
            crops = geometry.warp_affine_batch(
                images[key], warp[idx], self.image_size, border_value=0.0,
                channel_scale=self._channel_scale, channel_offset=self._channel_offset,
                workspace=self._crop_workspace,
            )
            for j, i in enumerate(idx):
                pixel_values[i] = crops[j]

        out = {
            "pixel_values": pixel_values,
            "labels": list(labels.unbind(0)),
            "target_weight": list(target_weight.unbind(0)),
            "dataset_index": [int(d) for d in ds_index],
            "center": list(center.unbind(0)),
            "scale": list(scale.unbind(0)),
            "rotation": [float(r) for r in rots],
            "flipped": flips,
            "bbox": [torch.as_tensor(b, dtype=torch.float64) for b in batch["bbox"]],
            "image_id": list(batch.get("image_id") or [-1] * n),
            "annotation_id": list(ann_ids),
        }
        if "area" in batch:
            out["area"] = list(batch["area"])
        return out
