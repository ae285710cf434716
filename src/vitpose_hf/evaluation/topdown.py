"""Top-down COCO keypoint evaluation of a pose model, as the ViTPose paper reports it.

Person boxes come from the ground truth or from a COCO-results detection file; every box is cropped
by the image processor, the crops run through the model in batches that span images (with flip
test), heatmaps are decoded to image coordinates, each person is rescored
(``box score * mean(keypoint scores > 0.2)``), OKS-NMS at 0.9 runs per image, and pycocotools
computes OKS AP with the schema's sigmas.
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.coco import keypoint_category_ids, select_ground_truth_boxes
from ..heatmaps import rescore_scores
from ..inference import inference_model
from ..jsonio import JsonLinesWriter, check_output_file, read_json, write_json_atomic
from ..keypoint_schemas import get_schema, head_num_keypoints
from .coco import coco_keypoint_eval, load_coco, persons_to_coco_results
from .nms import crop_box_areas, oks_nms_arrays, resolve_sigmas

logger = logging.getLogger(__name__)

__all__ = ["evaluate_model", "ground_truth_boxes", "detection_boxes", "predict_coco_results"]


@dataclass
class _ImageBoxes:
    image_id: Any
    file_name: str
    boxes: list = field(default_factory=list)  # [x, y, w, h]
    scores: list = field(default_factory=list)


def ground_truth_boxes(coco) -> dict[Any, tuple[list[list[float]], list[float]]]:
    """Person boxes of the ground truth: the training loader's selection and box cleaning,
    `vitpose_hf.data.coco.select_ground_truth_boxes` (after mmpose 0.x `TopDownCocoDataset`).

    Kept: annotations of a keypoint category (every category when none names keypoints), not crowd,
    with a non-empty box after clipping to the image (``x2 = min(W - 1, x1 + max(0, w - 1))``,
    giving ``w' = x2 - x1``), ``area > 0`` (when present) and at least one labelled keypoint. Score
    1.0. The skipped annotations are counted per reason in the log.

    Returns:
        ``{image_id: (boxes [[x, y, w, h], ...], scores [1.0, ...])}`` for every image of `coco`,
        boxes in the order of the file's annotations.

    Raises:
        ValueError: an annotation without `bbox` or `keypoints`, a NaN / inf / negative-size bbox,
            a non-finite area, an `iscrowd` other than 0 / 1, an unknown image id, an image without
            `width` / `height` (or duplicated ids, see `load_coco`), naming the file, the
            annotation id and the field.
    """
    coco = load_coco(coco)
    source = getattr(coco, "vitpose_source", "ground truth")
    annotations = coco.dataset.get("annotations") or []
    persons, skipped = select_ground_truth_boxes(
        annotations, coco.imgs, source, category_ids=keypoint_category_ids(coco.dataset.get("categories"))
    )
    out: dict[Any, tuple[list, list]] = {image_id: ([], []) for image_id in sorted(coco.getImgIds())}
    for person in persons:
        boxes, scores = out[person.annotation["image_id"]]
        boxes.append(person.bbox)
        scores.append(1.0)
    if skipped:
        logger.info(
            "%s: %d ground-truth boxes of %d annotations; skipped %s", source, len(persons), len(annotations),
            ", ".join(f"{n} ({reason})" for reason, n in sorted(skipped.items())),
        )
    return out


def detection_boxes(
    detections, coco, score_threshold: float = 0.0, category_id: int = 1
) -> dict[Any, tuple[list[list[float]], list[float]]]:
    """Person boxes from COCO-results detections (a path or a list of dicts).

    Kept: ``category_id == category_id``, ``score >= score_threshold``, finite boxes with w, h > 0,
    on an image of `coco` (others are skipped and counted in the log). Unlike the ground-truth
    selection (`ground_truth_boxes`) these boxes are neither clipped to the image nor checked
    against keypoints or crowd flags: detections are predictions, used as the detector gave them
    (as the official evaluation does). A degenerate box (NaN / inf, w or h <= 0) is skipped and
    counted, not refused; a detection that is not a dict with `image_id`, `bbox` (4 values) and
    `score` raises a ValueError naming its index.

    Returns:
        ``{image_id: (boxes, scores)}`` for every image of `coco` (empty lists where none).
    """
    coco = load_coco(coco)
    if isinstance(detections, (str, os.PathLike)):
        detections = read_json(detections, "detection file")
    if not isinstance(detections, list):
        raise ValueError(f"detections must be a COCO results list, got {type(detections).__name__}")
    out = {image_id: ([], []) for image_id in sorted(coco.getImgIds())}
    skipped = {"category": 0, "score": 0, "image": 0, "degenerate": 0}
    for idx, det in enumerate(detections):
        if not isinstance(det, dict):
            raise ValueError(f"detection {idx} is a {type(det).__name__}, not a dict")
        missing = [key for key in ("image_id", "bbox", "score") if key not in det]
        if missing:
            raise ValueError(f"detection {idx} lacks {missing} (COCO results need image_id, bbox, score)")
        if int(det.get("category_id", category_id)) != category_id:
            skipped["category"] += 1
            continue
        score = float(det["score"])
        if not score >= score_threshold:
            skipped["score"] += 1
            continue
        if det["image_id"] not in out:
            skipped["image"] += 1
            continue
        box = [float(v) for v in det["bbox"]]
        if len(box) != 4:
            raise ValueError(f"detection {idx} bbox has {len(box)} values, expected 4 (x, y, w, h)")
        if not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
            skipped["degenerate"] += 1
            continue
        out[det["image_id"]][0].append(box)
        out[det["image_id"]][1].append(score)
    if any(skipped.values()):
        logger.info("detections skipped: %s", skipped)
    return out


def _crop_size(model, processor) -> tuple[int, int]:
    """`(height, width)` of the crops: the processor's size, else the model's input size."""
    size = getattr(processor, "size", None)
    if isinstance(size, dict) and "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    size = getattr(getattr(model, "config", None), "image_size", None)
    if size is None:
        raise ValueError("cannot tell the crop size (processor.size or model.config.image_size)")
    return int(size[0]), int(size[1])


def _head_num_keypoints(model, dataset_index) -> int | None:
    """Keypoint count of the head serving `dataset_index` (None when the model has no config)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "num_labels", None) is None:
        return None
    return head_num_keypoints(config, dataset_index)


def _processor_padding(processor) -> float:
    for name in ("padding_factor", "box_padding", "bbox_padding", "padding"):
        value = getattr(processor, name, None)
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return 1.25


def _prepare_group(processor, image_dir: Path, group: list) -> tuple[Any, list]:
    """Decode and crop the images of a group: `(pixel_values (N, 3, H, W), nested boxes)`."""
    images = []  # paths: the processor decodes them (grayscale / RGBA / 16-bit handled there)
    for entry in group:
        path = image_dir / entry.file_name
        if not path.is_file():
            raise ValueError(f"image file not found: {path}")
        images.append(str(path))
    boxes = [entry.boxes for entry in group]
    return processor(images, boxes=boxes, return_tensors="pt")["pixel_values"], boxes


def _infer_group(model, processor, pixel_values, boxes, flip_test, flip_pairs, dataset_index, batch_size):
    """Forward (in chunks of `batch_size`, flip test) + decode; per image lists of persons."""
    import torch

    param = next(model.parameters(), None)  # None: a model without torch weights (the onnxruntime backend)
    device = param.device if param is not None else getattr(model, "device", pixel_values.device)
    dtype = param.dtype if param is not None and param.is_floating_point() else getattr(model, "dtype", torch.float32)
    heatmaps = []
    with torch.inference_mode():
        for start in range(0, pixel_values.shape[0], batch_size):
            chunk = pixel_values[start : start + batch_size].to(device=device, dtype=dtype)
            out = processor.predict_heatmaps(
                model, chunk, flip_test=flip_test, flip_pairs=flip_pairs, dataset_index=dataset_index
            )
            heatmaps.append(out.float().cpu())
    heatmaps = torch.cat(heatmaps, 0)
    return processor.post_process_pose_estimation(heatmaps, boxes=boxes)


def predict_coco_results(
    model,
    processor,
    coco,
    image_dir,
    boxes_per_image: dict[Any, tuple[list, list]],
    flip_test: bool = True,
    batch_size: int = 32,
    schema="coco",
    dataset_index: int | None = None,
    keypoint_threshold: float = 0.2,
    oks_threshold: float | None = 0.9,
    prefetch: bool = True,
    partial_file=None,
) -> list[dict]:
    """Run the model on the given person boxes; rescoring + OKS-NMS per image -> COCO results.

    Args:
        boxes_per_image: ``{image_id: (boxes [[x, y, w, h], ...], box scores)}``.
        oks_threshold: OKS-NMS threshold, or None to keep every person.
        prefetch: decode and crop the next group of images in a background thread.
        partial_file: a path, or None: each image's results are appended to it as they are made
            (JSON Lines, one COCO result per line, flushed per image), so a crash keeps them. The
            file is left in place; the caller removes it once the full results are saved.
        (the others as in :func:`evaluate_model`)

    Returns:
        COCO keypoint results (``image_id, category_id, keypoints, score``), images in id order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = inference_model(model)  # fast paths on a weight-sharing copy: the caller's model is untouched
    schema = get_schema(schema)
    sigmas = resolve_sigmas(schema, schema.num_keypoints) if oks_threshold is not None else None
    height, width = _crop_size(model, processor)
    aspect, padding = width / height, _processor_padding(processor)
    image_dir = Path(image_dir)
    entries = []
    for image_id in sorted(boxes_per_image):
        boxes, scores = boxes_per_image[image_id]
        if len(boxes) != len(scores):
            raise ValueError(f"image {image_id}: {len(boxes)} boxes but {len(scores)} scores")
        if boxes:
            entries.append(_ImageBoxes(image_id, coco.imgs[image_id]["file_name"], list(boxes), list(scores)))
    groups, current, count = [], [], 0
    for entry in entries:
        current.append(entry)
        count += len(entry.boxes)
        if count >= batch_size:
            groups.append(current)
            current, count = [], 0
    if current:
        groups.append(current)
    total = sum(len(e.boxes) for e in entries)
    logger.info("evaluating %d persons on %d images in %d groups", total, len(entries), len(groups))

    results: list[dict] = []
    done = 0
    writer = JsonLinesWriter(partial_file) if partial_file is not None else None
    was_training = model.training
    model.eval()
    # the next group is decoded and cropped in a background thread while the model runs
    pool = ThreadPoolExecutor(max_workers=1) if prefetch and len(groups) > 1 else None
    try:
        pending = pool.submit(_prepare_group, processor, image_dir, groups[0]) if pool and groups else None
        for g, group in enumerate(groups):
            if pending is not None:
                pixel_values, boxes = pending.result()
                pending = None
                if g + 1 < len(groups):
                    pending = pool.submit(_prepare_group, processor, image_dir, groups[g + 1])
            else:
                pixel_values, boxes = _prepare_group(processor, image_dir, group)
            persons = _infer_group(
                model, processor, pixel_values, boxes, flip_test, list(schema.flip_pairs), dataset_index, batch_size
            )
            if len(persons) != len(group):
                raise ValueError(f"the processor returned {len(persons)} images for {len(group)}")
            for entry, found in zip(group, persons):
                selected = _select_persons(
                    entry, found, schema, sigmas, aspect, padding, keypoint_threshold, oks_threshold
                )
                results.extend(selected)
                if writer is not None:
                    for result in selected:
                        writer.write(result)
            before, done = done, done + sum(len(e.boxes) for e in group)
            if (10 * done) // total != (10 * before) // total:  # about every 10 %
                logger.info("evaluated %d / %d persons", done, total)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if writer is not None:
            writer.close()
        model.train(was_training)
    return results


def _select_persons(entry, found, schema, sigmas, aspect, padding, keypoint_threshold, oks_threshold):
    if len(found) != len(entry.boxes):
        raise ValueError(f"image {entry.image_id}: {len(found)} decoded persons for {len(entry.boxes)} boxes")
    keypoints = np.stack([np.asarray(_numpy(p["keypoints"]), dtype=np.float64) for p in found])  # (P, K, 2)
    kp_scores = np.stack([np.asarray(_numpy(p["scores"]), dtype=np.float64).reshape(-1) for p in found])  # (P, K)
    return select_persons(entry.image_id, entry.boxes, entry.scores, keypoints, kp_scores, schema, sigmas, aspect,
                          padding, keypoint_threshold, oks_threshold)


def select_persons(image_id, boxes, box_scores, keypoints, kp_scores, schema, sigmas, aspect, padding,
                   keypoint_threshold=0.2, oks_threshold=0.9) -> list[dict]:
    """The persons of one image, as the official evaluation keeps them: ViTPose's rescoring, then
    OKS-NMS (areas of the padded crop boxes) -> COCO results, best first.

    Args:
        image_id: the COCO image id.
        boxes: `(P, 4)` xywh person boxes; box_scores: `(P,)`.
        keypoints: `(P, K, 2)` image coordinates; kp_scores: `(P, K)` heatmap maxima.
        schema: the `KeypointSchema`; sigmas: its OKS sigmas (None with `oks_threshold=None`).
        aspect: crop width / height; padding: box padding (1.25).
        keypoint_threshold: rescoring threshold; oks_threshold: OKS-NMS threshold or None (keep all).
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    kp_scores = np.asarray(kp_scores, dtype=np.float64)
    if keypoints.shape[1] != schema.num_keypoints:
        raise ValueError(
            f"the model predicts {keypoints.shape[1]} keypoints but schema {schema.name!r} has {schema.num_keypoints}"
        )
    if not (np.all(np.isfinite(keypoints)) and np.all(np.isfinite(kp_scores))):
        raise ValueError(f"image {image_id}: non-finite keypoints decoded")
    scores = rescore_scores(box_scores, kp_scores, keypoint_threshold)
    areas = crop_box_areas(boxes, aspect_ratio=aspect, padding=padding)
    kpts3 = np.concatenate([keypoints, kp_scores[..., None]], axis=-1)  # (P, K, 3)
    if oks_threshold is None:
        keep = np.argsort(scores)[::-1]
    else:
        keep = oks_nms_arrays(kpts3, scores, areas, threshold=oks_threshold, sigmas=sigmas)
    persons = [{"image_id": image_id, "keypoints": kpts3[i], "score": float(scores[i])} for i in keep]
    return persons_to_coco_results(persons)


def _numpy(value):
    if hasattr(value, "detach"):
        return value.detach().float().cpu().numpy()
    return value


def evaluate_model(
    model,
    processor,
    annotation_file,
    image_dir,
    detection_file=None,
    flip_test: bool = True,
    batch_size: int = 32,
    det_score_threshold: float = 0.0,
    schema="coco",
    dataset_index: int | None = None,
    output_file=None,
    use_gt_boxes_if_no_det: bool = True,
    keypoint_threshold: float = 0.2,
    oks_threshold: float | None = 0.9,
    use_area: bool | None = None,
) -> dict[str, float]:
    """COCO keypoint AP of a top-down pose model on an annotated image folder.

    Args:
        model: a `VitPoseForPoseEstimation` (any device / dtype; put in eval mode for the run).
        processor: a `VitPoseTopDownImageProcessor` (crops, `predict_heatmaps`, `post_process_pose_estimation`).
        annotation_file: COCO keypoint annotations (path, dict or pycocotools `COCO`).
        image_dir: folder holding the images' `file_name`s.
        detection_file: COCO-results person detections (path or list); None uses ground-truth boxes
            (see :func:`ground_truth_boxes`) when `use_gt_boxes_if_no_det`, else raises ValueError.
        flip_test: average with the mirrored crops' heatmaps.
        batch_size: crops per forward pass; crops of several images share a batch.
        det_score_threshold: detections with a lower score are dropped (0.0 in ViTPose's config).
        schema: keypoint schema name: flip pairs and OKS sigmas.
        dataset_index: ViTPose++ dataset index (expert / head). None: the schema's index when the
            model serves several datasets (e.g. 1 for "aic"), else the model's default.
        output_file: where to write the predictions (COCO results JSON), or None. Checked before
            any work (ValueError when it cannot be written); written atomically before the metrics
            are computed. While the model runs, ``<output_file>.partial.jsonl`` receives each
            image's results (one COCO result per line); it is removed once `output_file` is
            written, and after a crash it holds every image finished.
        keypoint_threshold: rescoring threshold (0.2); oks_threshold: OKS-NMS threshold (0.9, None = off).
        use_area: see :func:`coco_keypoint_eval`.

    Returns:
        ``{"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}``.
    """
    schema = get_schema(schema)
    if dataset_index is None and schema.dataset_index is not None:
        num_datasets = getattr(getattr(model, "config", None), "num_datasets", 1)
        if isinstance(num_datasets, int) and schema.dataset_index < num_datasets and num_datasets > 1:
            dataset_index = schema.dataset_index
            logger.info("multi-dataset model: using dataset_index %d of schema %r", dataset_index, schema.name)
    head_keypoints = _head_num_keypoints(model, dataset_index)
    if head_keypoints is not None and head_keypoints != schema.num_keypoints:
        raise ValueError(
            f"the model predicts {head_keypoints} keypoints but schema {schema.name!r} has {schema.num_keypoints}"
            + (f" (dataset_index {dataset_index})" if dataset_index is not None else "")
        )
    partial_file = None
    if output_file is not None:
        output_file = check_output_file(output_file, "output_file")
        partial_file = output_file.with_name(output_file.name + ".partial.jsonl")
        check_output_file(partial_file, "output_file (its .partial.jsonl)")
    coco = load_coco(annotation_file)
    if detection_file is not None:
        boxes = detection_boxes(detection_file, coco, score_threshold=det_score_threshold)
    elif use_gt_boxes_if_no_det:
        boxes = ground_truth_boxes(coco)
    else:
        raise ValueError("no detection_file given and use_gt_boxes_if_no_det=False: no person boxes to evaluate")
    results = predict_coco_results(
        model,
        processor,
        coco,
        image_dir,
        boxes,
        flip_test=flip_test,
        batch_size=batch_size,
        schema=schema,
        dataset_index=dataset_index,
        keypoint_threshold=keypoint_threshold,
        oks_threshold=oks_threshold,
        partial_file=partial_file,
    )
    if output_file is not None:
        write_json_atomic(output_file, results)  # before the metrics: a failure there loses no prediction
        partial_file.unlink(missing_ok=True)
        logger.info("wrote %d predictions to %s", len(results), output_file)
    sigmas = schema if schema.sigmas is not None else None
    return coco_keypoint_eval(coco, results, sigmas=sigmas, use_area=use_area)
