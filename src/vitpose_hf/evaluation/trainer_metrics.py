"""COCO keypoint AP from a plain `transformers.Trainer`: collator, logits decoding and `compute_metrics`.

`Trainer.evaluate()` reports only `eval_loss` for a pose model: the heatmaps alone cannot be turned
into image keypoints without each crop's window (center, scale), and accumulating them would hold
`K x h x w` floats per person (209 KB for ViTPose-B: ~20 GB on COCO val). `CocoKeypointMetrics`
wires the three hooks Trainer offers:

- `collate` (the `data_collator`): `PoseDataCollator`'s batch plus the crop metadata `center`,
  `scale`, `bbox`, `image_id` as tensors. The model's forward accepts these names (and ignores them).
- `label_names` (`TrainingArguments(label_names=...)`): Trainer hands those batch entries, not the
  target heatmaps, to the two functions below; the loss is still computed from `labels`.
- `preprocess_logits_for_metrics`: decodes each batch's heatmaps at once (DARK-UDP, as the image
  processor) into `(B, K, 3)` image keypoints + scores, so only 51 floats per person accumulate.
- `compute_metrics`: per image, ViTPose's rescoring and OKS-NMS (`topdown.select_persons`, the same
  selection `evaluate_model` uses), then pycocotools' OKS AP against the annotation file.

With ground-truth boxes and no flip test this reports the AP of `evaluate_model(...,
flip_test=False)` on the same checkpoint (tests/test_trainer_interop.py: within 1e-3).

Use `TrainingArguments(..., label_names=metrics.label_names, remove_unused_columns=False)`: the
rows' columns feed `TopDownTransform` (applied with `with_transform`), so Trainer must not drop them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np
import torch

from ..data.collator import PoseDataCollator
from ..geometry import heatmap_coords_to_image
from ..heatmaps import decode_heatmaps
from ..keypoint_schemas import get_schema
from .coco import coco_keypoint_eval, load_coco
from .nms import resolve_sigmas
from .topdown import select_persons

__all__ = ["CocoKeypointMetrics", "make_compute_metrics", "TRAINER_METADATA_KEYS"]

TRAINER_METADATA_KEYS = ("center", "scale", "bbox", "image_id")
"""The batch entries `CocoKeypointMetrics.collate` adds and Trainer passes on as `label_names`."""


class CocoKeypointMetrics:
    """`collate`, `preprocess_logits_for_metrics` and `compute_metrics` for `transformers.Trainer`.

    Args:
        annotation_file: the COCO keypoint ground truth of the evaluation rows (path, dict or COCO).
        schema: keypoint schema (sigmas for OKS-NMS and AP; default "coco").
        use_udp, use_dark, kernel_size: heatmap decoding, as `VitPoseTopDownImageProcessor.post_process_pose_estimation`.
        padding: box padding of the crops (1.25), for the OKS-NMS areas.
        pixel_std: the scale normaliser (200).
        keypoint_threshold: ViTPose's rescoring threshold (0.2).
        oks_threshold: OKS-NMS threshold (0.9), or None to keep every person.
    """

    label_names = list(TRAINER_METADATA_KEYS)

    def __init__(
        self,
        annotation_file,
        schema="coco",
        use_udp: bool = True,
        use_dark: bool = True,
        kernel_size: int = 11,
        padding: float = 1.25,
        pixel_std: float = 200.0,
        keypoint_threshold: float = 0.2,
        oks_threshold: float | None = 0.9,
    ):
        self.coco = load_coco(annotation_file)
        self.schema = get_schema(schema)
        self.sigmas = resolve_sigmas(self.schema, self.schema.num_keypoints) if oks_threshold is not None else None
        self.use_udp, self.use_dark, self.kernel_size = bool(use_udp), bool(use_dark), int(kernel_size)
        self.padding, self.pixel_std = float(padding), float(pixel_std)
        self.keypoint_threshold, self.oks_threshold = float(keypoint_threshold), oks_threshold
        self._collator = PoseDataCollator()

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """`PoseDataCollator` + `center (B, 2)`, `scale (B, 2)`, `bbox (B, 4)` float64 and `image_id (B,)` int64.

        Raises:
            ValueError: a sample without one of those entries (rows not made by `TopDownTransform`).
        """
        batch = self._collator(features)
        for key in TRAINER_METADATA_KEYS:
            missing = [i for i, f in enumerate(features) if f.get(key) is None]
            if missing:
                raise ValueError(f"sample {missing[0]} has no {key!r}: the evaluation rows must come from TopDownTransform")
        for key in ("center", "scale", "bbox"):
            batch[key] = torch.as_tensor(np.stack([np.asarray(f[key], dtype=np.float64).reshape(-1) for f in features]))
        batch["image_id"] = torch.as_tensor([int(f["image_id"]) for f in features], dtype=torch.long)
        if bool((batch["image_id"] < 0).any()):
            raise ValueError("a sample has image_id -1 (rows without an image_id column): the metrics match "
                             "predictions to the annotation file by image id")
        return batch

    def preprocess_logits_for_metrics(self, logits, labels) -> torch.Tensor:
        """`(B, K, h, w)` heatmaps + the batch's metadata -> `(B, K, 3)` image `(x, y, score)`."""
        heatmaps = logits[0] if isinstance(logits, (tuple, list)) else logits
        center, scale = labels[0], labels[1]
        coords, scores = decode_heatmaps(heatmaps.float(), use_dark=self.use_dark, kernel_size=self.kernel_size,
                                         use_udp=self.use_udp)
        keypoints = heatmap_coords_to_image(
            coords.double(), center.to(coords.device).double(), scale.to(coords.device).double(),
            heatmaps.shape[-2:], use_udp=self.use_udp, pixel_std=self.pixel_std,
        ).float()  # float32 as the processor returns them
        return torch.cat([keypoints, scores.to(keypoints.dtype)[..., None]], dim=-1)

    def compute_metrics(self, eval_pred) -> dict[str, float]:
        """Trainer's `EvalPrediction` (predictions `(N, K, 3)`, label_ids `(center, scale, bbox,
        image_id)`) -> COCO keypoint metrics (`AP`, `AP50`, ... ; Trainer adds the `eval_` prefix)."""
        predictions = np.asarray(eval_pred.predictions, dtype=np.float64)
        _, scale, boxes, image_ids = (np.asarray(v) for v in eval_pred.label_ids)
        if predictions.ndim != 3 or predictions.shape[-1] != 3 or len(predictions) != len(image_ids):
            raise ValueError(f"predictions of shape {predictions.shape} for {len(image_ids)} crops: pass "
                             "preprocess_logits_for_metrics=metrics.preprocess_logits_for_metrics to the Trainer")
        per_image: dict[int, list[int]] = defaultdict(list)
        for row, image_id in enumerate(image_ids.reshape(-1).tolist()):
            per_image[int(image_id)].append(row)
        results = []
        for image_id in sorted(per_image):
            rows = per_image[image_id]
            aspect = float(scale[rows[0], 0] / scale[rows[0], 1])  # the window has the crop's aspect
            results.extend(select_persons(
                image_id, boxes[rows].tolist(), [1.0] * len(rows), predictions[rows, :, :2], predictions[rows, :, 2],
                self.schema, self.sigmas, aspect, self.padding, self.keypoint_threshold, self.oks_threshold,
            ))
        self.last_results = results
        return coco_keypoint_eval(self.coco, results, sigmas=self.schema if self.schema.sigmas is not None else None)


def make_compute_metrics(annotation_file, **kwargs) -> CocoKeypointMetrics:
    """`CocoKeypointMetrics(annotation_file, **kwargs)`: pass its `collate`,
    `preprocess_logits_for_metrics`, `compute_metrics` and `label_names` to a plain Trainer."""
    return CocoKeypointMetrics(annotation_file, **kwargs)
