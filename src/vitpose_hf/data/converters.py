"""Loaders for the other keypoint datasets, producing the same rows as `load_coco_keypoints`.

- AI Challenger and CrowdPose ship COCO-style json with their own categories: they go through the
  COCO loader with their schema (mmpose 0.x's `TopDownAicDataset` / `TopDownCrowdPoseDataset` are
  the COCO loader too).
- MPII ships a list of `{"image", "joints" [16][2], "joints_vis" [16], "center" [2], "scale"}` with
  1-based (Matlab) pixel coordinates and `scale` = person height / 200. mmpose 0.x
  (`TopDownMpiiDataset`) moves the centre down by `15 * scale` px, pads the scale by 1.25 and
  subtracts 1 from centre and joints. Our rows hold a box instead: the square box of side
  `200 * scale` around the adjusted, 0-based centre, so that the shared box -> (center, scale)
  step (aspect fix + 1.25 padding) gives mmpose's window, grown to the model's aspect ratio
  (mmpose's MPII configs use square 256x256 inputs, where the two coincide exactly).
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

import datasets

from ..image_io import image_size
from ..jsonio import read_json
from ..keypoint_schemas import KeypointSchema, get_schema
from .coco import check_number, load_coco_keypoints, rows_to_dataset

logger = logging.getLogger(__name__)

__all__ = ["load_aic", "load_crowdpose", "load_mpii", "load_keypoint_dataset"]


def load_aic(annotation_file: str | os.PathLike, image_dir: str | os.PathLike, **kwargs) -> datasets.Dataset:
    """AI Challenger (14 keypoints, COCO-style json) -> person rows with `dataset_index` 1.

    Keyword arguments are those of `load_coco_keypoints`.
    """
    return load_coco_keypoints(annotation_file, image_dir, schema="aic", **kwargs)


def load_crowdpose(annotation_file: str | os.PathLike, image_dir: str | os.PathLike, **kwargs) -> datasets.Dataset:
    """CrowdPose (14 keypoints, COCO-style json; its `head` is our `top_head`) -> person rows.

    CrowdPose has no ViTPose++ expert: `dataset_index` defaults to 0 (pass `dataset_index=` to
    choose another). Keyword arguments are those of `load_coco_keypoints`.
    """
    return load_coco_keypoints(annotation_file, image_dir, schema="crowdpose", **kwargs)


def _image_id(name: str, fallback: int) -> int:
    stem = Path(name).stem
    return int(stem) if re.fullmatch(r"\d{1,18}", stem) else fallback


def load_mpii(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    dataset_index: int | None = None,
    check_images: bool = True,
) -> datasets.Dataset:
    """MPII list-format json -> person rows (`dataset_index` 2 unless given).

    Each entry becomes one row: `keypoints` are the 0-based joints with visibility 2 where
    `joints_vis` is 1 (0 and zeroed coordinates elsewhere); `bbox` is the square box described in
    the module docstring; `area` is the box area; `image_id` is the file stem when it is a number,
    else the entry index; `annotation_id` is the entry index. Entries without any visible joint are
    skipped (counted in the log), as in the COCO loader. `image_width` / `image_height` are the
    entry's `width` / `height`, else the image's size as it is decoded (`image_io.image_size`: EXIF
    orientation applied, like the pixels the transform reads).

    Raises:
        ValueError: unreadable json, an entry with missing fields or not 16 joints, a visible joint,
            a centre or a scale that is not finite (or a scale <= 0), naming the file, the entry
            index and the field; a missing image file, or no usable entry.
    """
    schema: KeypointSchema = get_schema("mpii")
    num_joints = schema.num_keypoints
    source = str(annotation_file)
    entries = read_json(annotation_file, "annotation file")
    if not isinstance(entries, list):
        raise ValueError(f"{source}: expected the MPII list format (a json list), got {type(entries).__name__}")
    if dataset_index is None:
        dataset_index = schema.dataset_index if schema.dataset_index is not None else 0
    image_dir = Path(image_dir)
    rows = []
    skipped = 0
    for idx, e in enumerate(entries):
        what = f"annotation id {idx} (entry {idx})"
        missing = [k for k in ("image", "joints", "joints_vis", "center", "scale") if k not in e]
        if missing:
            raise ValueError(f"{source}: {what} is missing field(s) {missing}")
        joints, vis = e["joints"], e["joints_vis"]
        if len(joints) != num_joints or len(vis) != num_joints:
            raise ValueError(
                f"{source}: {what} has {len(joints)} joints / {len(vis)} visibilities, expected {num_joints}"
            )
        where = f"{source}: {what}"
        vis = [check_number(v, where, "joints_vis", j) for j, v in enumerate(vis)]
        for j, joint in enumerate(joints):
            if not isinstance(joint, (list, tuple)) or len(joint) != 2:
                raise ValueError(f"{where}: field 'joints' entry {j} is {joint!r}, expected [x, y]")
            # an invisible joint's coordinates are never used (zeroed below): only visible ones must be finite
            if vis[j] > 0 and not all(math.isfinite(check_number(c, where, "joints", j)) for c in joint):
                raise ValueError(f"{where}: field 'joints' holds a non-finite value at joint {j}: {joint!r}")
        center = e["center"]
        if not isinstance(center, (list, tuple)) or len(center) != 2:
            raise ValueError(f"{where}: field 'center' is {center!r}, expected [x, y]")
        cx, cy = (check_number(c, where, "center", j) for j, c in enumerate(center))
        if not (math.isfinite(cx) and math.isfinite(cy)):
            raise ValueError(f"{where}: field 'center' holds a non-finite value: {center!r}")
        s = check_number(e["scale"], where, "scale")
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"{where}: field 'scale' is {e['scale']!r}, expected a finite number > 0")
        if cx != -1:
            cy += 15.0 * s
        cx, cy = cx - 1.0, cy - 1.0
        side = 200.0 * s
        kps: list[float] = []
        for (x, y), v in zip(joints, vis):
            if v > 0:
                kps += [float(x) - 1.0, float(y) - 1.0, 2.0]
            else:
                kps += [0.0, 0.0, 0.0]
        num_kp = sum(1 for v in vis if v > 0)
        if num_kp == 0:
            skipped += 1
            continue
        image_path = str(image_dir / e["image"])
        width, height = int(e.get("width", 0)), int(e.get("height", 0))
        if check_images:
            if not os.path.isfile(image_path):
                raise ValueError(f"{source}: image file {image_path} of {what} does not exist")
            if not (width and height):
                try:  # the size the image is decoded at (EXIF orientation applied), from the header
                    width, height = image_size(image_path)
                except ValueError as err:
                    raise ValueError(f"{source}: cannot read image {image_path} of {what} ({err})") from err
        rows.append(
            {
                "image_path": image_path,
                "image_id": _image_id(e["image"], idx),
                "annotation_id": idx,
                "image_width": width,
                "image_height": height,
                "bbox": [cx - side / 2.0, cy - side / 2.0, side, side],
                "keypoints": kps,
                "num_keypoints": num_kp,
                "area": side * side,
                "iscrowd": 0,
                "dataset_index": int(dataset_index),
            }
        )
    logger.info("%s: kept %d of %d MPII entries; skipped %d (no visible joint)", source, len(rows), len(entries), skipped)
    return rows_to_dataset(rows, source, schema)


def load_keypoint_dataset(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    format: str = "coco",
    **kwargs,
) -> datasets.Dataset:
    """Dispatch on `format` in {"coco", "aic", "crowdpose", "mpii"}; kwargs go to the loader."""
    loaders = {"coco": load_coco_keypoints, "aic": load_aic, "crowdpose": load_crowdpose, "mpii": load_mpii}
    key = format.lower()
    if key not in loaders:
        raise ValueError(f"unknown annotation format {format!r}; known: {sorted(loaders)}")
    return loaders[key](annotation_file, image_dir, **kwargs)
