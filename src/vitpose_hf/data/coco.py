"""COCO-format person-keypoint annotations -> a `datasets.Dataset` of person instances.

One row per kept person instance; images are *not* decoded here (only their paths are stored), the
train/eval transform decodes them lazily. The filtering follows mmpose 0.x `TopDownCocoDataset`
(the loader of the official ViTPose training):

1. crowd annotations (`iscrowd == 1`) are dropped;
2. boxes are cleaned: `x1 = max(0, x)`, `y1 = max(0, y)`, `x2 = min(W - 1, x1 + max(0, w - 1))`,
   `y2 = min(H - 1, y1 + max(0, h - 1))`; a box with `x2 <= x1` or `y2 <= y1` (or `area <= 0`) is
   dropped and the kept box is `[x1, y1, x2 - x1, y2 - y1]`;
3. annotations without any labeled keypoint (all keypoint values 0, or `num_keypoints == 0`) are
   dropped.

Every skip is counted by reason and logged at the end (never silent); malformed annotations
(missing fields, a keypoint count that does not match the schema, an unknown image id) raise a
`ValueError` naming the file and the annotation id.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import datasets

from ..jsonio import read_json
from ..keypoint_schemas import SCHEMAS, KeypointSchema, get_schema

logger = logging.getLogger(__name__)

__all__ = [
    "PERSON_FEATURES",
    "load_coco_keypoints",
    "clean_coco_bbox",
    "schema_from_category",
    "rows_to_dataset",
]

#: Column types shared by every loader (COCO, AIC, CrowdPose, MPII, synthetic).
PERSON_FEATURES = datasets.Features(
    {
        "image_path": datasets.Value("string"),
        "image_id": datasets.Value("int64"),
        "annotation_id": datasets.Value("int64"),
        "image_width": datasets.Value("int32"),
        "image_height": datasets.Value("int32"),
        "bbox": datasets.Sequence(datasets.Value("float64"), length=4),
        "keypoints": datasets.Sequence(datasets.Value("float64")),
        "num_keypoints": datasets.Value("int32"),
        "area": datasets.Value("float64"),
        "iscrowd": datasets.Value("int32"),
        "dataset_index": datasets.Value("int32"),
    }
)


def _norm_name(name: str) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def clean_coco_bbox(bbox: Iterable[float], width: float, height: float) -> list[float] | None:
    """mmpose 0.x box sanitising: clip `[x, y, w, h]` to a `width x height` image.

    Returns the cleaned `[x1, y1, x2 - x1, y2 - y1]` or None when the clipped box is empty.
    """
    x, y, w, h = (float(v) for v in bbox)
    x1 = max(0.0, x)
    y1 = max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    if x2 > x1 and y2 > y1:
        return [x1, y1, x2 - x1, y2 - y1]
    return None


def _infer_flip_pairs(names: list[str]) -> tuple[tuple[int, int], ...]:
    """Pairs of names that differ only by a left/right token (`left_x` <-> `right_x`, `l_x` <-> `r_x`)."""
    index = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, n in enumerate(names):
        tokens = n.split("_")
        for a, b in (("left", "right"), ("l", "r")):
            if a in tokens:
                other = "_".join(b if t == a else t for t in tokens)
                j = index.get(other)
                if j is not None and (i, j) not in pairs and (j, i) not in pairs:
                    pairs.append((i, j))
    return tuple(pairs)


def schema_from_category(category: dict, source: str = "<category>") -> KeypointSchema:
    """The schema of a COCO category: a known one when the keypoint names match one of
    `keypoint_schemas.SCHEMAS` (names compared lower-case, spaces as underscores), else a custom
    schema with flip pairs inferred from left/right names and the category's 1-based skeleton."""
    names = category.get("keypoints")
    if not names:
        raise ValueError(f"{source}: category {category.get('id')!r} has no 'keypoints' names")
    normed = [_norm_name(n) for n in names]
    for schema in SCHEMAS.values():
        if [_norm_name(n) for n in schema.keypoints] == normed:
            return schema
    skeleton = tuple(
        (int(a) - 1, int(b) - 1)
        for a, b in category.get("skeleton", [])
        if 1 <= int(a) <= len(names) and 1 <= int(b) <= len(names)
    )
    pairs = _infer_flip_pairs(normed)
    logger.info(
        "%s: keypoint names match no known schema; using a custom %d-keypoint schema with %d flip pairs",
        source, len(names), len(pairs),
    )
    return KeypointSchema(
        name=_norm_name(category.get("name", "custom")),
        keypoints=tuple(names),
        flip_pairs=pairs,
        skeleton=skeleton,
        sigmas=None,
        dataset_index=None,
        upper_body=tuple(),
    )


def rows_to_dataset(rows: list[dict[str, Any]], source: str, schema: KeypointSchema | None = None) -> datasets.Dataset:
    """Rows (dicts with the `PERSON_FEATURES` columns) -> `datasets.Dataset`; empty -> ValueError."""
    if not rows:
        raise ValueError(f"{source}: no usable person instance (empty dataset after filtering)")
    columns = {name: [r[name] for r in rows] for name in PERSON_FEATURES}
    ds = datasets.Dataset.from_dict(columns, features=PERSON_FEATURES)
    if schema is not None:
        ds.info.description = f"vitpose_hf person instances; keypoint schema: {schema.name}"
    return ds


def _require(obj: dict, keys: tuple[str, ...], source: str, what: str) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ValueError(f"{source}: {what} is missing field(s) {missing}")


def load_coco_keypoints(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    schema: str | KeypointSchema | None = None,
    dataset_index: int | None = None,
    check_images: bool = True,
) -> datasets.Dataset:
    """Load COCO person-keypoint annotations as one row per kept person instance.

    Args:
        annotation_file: COCO `person_keypoints_*.json`-style file (`images`, `annotations`,
            `categories`; the keypoint category gives the keypoint names).
        image_dir: folder holding the images (`file_name` is joined to it).
        schema: keypoint schema name or object; None takes it from the category's keypoint names
            (a known schema when they match, else a custom one).
        dataset_index: value of the `dataset_index` column (ViTPose++ expert); None uses the
            schema's own index, or 0 when the schema has none.
        check_images: raise when an image file of a kept instance does not exist.

    Returns:
        `datasets.Dataset` with the `PERSON_FEATURES` columns: `image_path`, `image_id`,
        `annotation_id`, `image_width`, `image_height`, `bbox` (cleaned `[x, y, w, h]`),
        `keypoints` (`K * 3` floats, COCO `x, y, v`), `num_keypoints`, `area`, `iscrowd` (0),
        `dataset_index`.

    Raises:
        ValueError: unreadable json, missing fields, keypoint count not matching the schema,
            unknown image ids, missing image files, or nothing left after filtering.
    """
    path = Path(annotation_file)
    source = str(path)
    data = read_json(path, "annotation file")
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a COCO json object, got {type(data).__name__}")
    _require(data, ("images", "annotations", "categories"), source, "the annotation file")

    kp_cats = [c for c in data["categories"] if c.get("keypoints")]
    wanted = get_schema(schema) if schema is not None else None
    if wanted is not None:
        matching = [c for c in kp_cats if len(c["keypoints"]) == wanted.num_keypoints]
        if kp_cats and not matching:
            raise ValueError(
                f"{source}: schema {wanted.name!r} has {wanted.num_keypoints} keypoints but the categories "
                f"have {[len(c['keypoints']) for c in kp_cats]}"
            )
        cat_ids = {c["id"] for c in matching} if kp_cats else {c["id"] for c in data["categories"]}
        resolved = wanted
    else:
        if len(kp_cats) != 1:
            raise ValueError(
                f"{source}: cannot infer the keypoint schema from {len(kp_cats)} keypoint categories; "
                "pass schema=..."
            )
        resolved = schema_from_category(kp_cats[0], source)
        cat_ids = {kp_cats[0]["id"]}
    num_joints = resolved.num_keypoints
    if dataset_index is None:
        dataset_index = resolved.dataset_index if resolved.dataset_index is not None else 0

    images = {}
    for img in data["images"]:
        _require(img, ("id", "file_name"), source, f"image entry {img.get('id')!r}")
        images[img["id"]] = img

    image_dir = Path(image_dir)
    skipped: Counter = Counter()
    rows = []
    seen_files: dict[str, bool] = {}
    for ann in data["annotations"]:
        ann_id = ann.get("id")
        what = f"annotation id {ann_id!r}"
        if "category_id" in ann and ann["category_id"] not in cat_ids:
            skipped["other category"] += 1
            continue
        _require(ann, ("id", "image_id", "bbox", "keypoints"), source, what)
        kps = ann["keypoints"]
        if not isinstance(kps, (list, tuple)) or len(kps) != 3 * num_joints:
            n = len(kps) if isinstance(kps, (list, tuple)) else type(kps).__name__
            raise ValueError(
                f"{source}: {what} has {n} keypoint values, expected {3 * num_joints} "
                f"({num_joints} keypoints of schema {resolved.name!r})"
            )
        bbox = ann["bbox"]
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise ValueError(f"{source}: {what} has a malformed bbox {bbox!r} (expected [x, y, w, h])")
        img = images.get(ann["image_id"])
        if img is None:
            raise ValueError(f"{source}: {what} refers to unknown image_id {ann['image_id']!r}")
        if int(ann.get("iscrowd", 0)):
            skipped["crowd"] += 1
            continue
        if "width" not in img or "height" not in img:
            raise ValueError(f"{source}: image {img['id']!r} (for {what}) lacks width/height")
        width, height = float(img["width"]), float(img["height"])
        clean = clean_coco_bbox(bbox, width, height)
        if clean is None or ("area" in ann and not float(ann["area"]) > 0):
            skipped["empty box after clipping to the image"] += 1
            continue
        kps = [float(v) for v in kps]
        if max(kps) == 0 or ("num_keypoints" in ann and int(ann["num_keypoints"]) == 0):
            skipped["no labeled keypoint"] += 1
            continue
        image_path = str(image_dir / img["file_name"])
        if check_images:
            ok = seen_files.get(image_path)
            if ok is None:
                ok = seen_files[image_path] = os.path.isfile(image_path)
            if not ok:
                raise ValueError(f"{source}: image file {image_path} of {what} does not exist")
        num_kp = int(ann["num_keypoints"]) if "num_keypoints" in ann else sum(1 for v in kps[2::3] if v > 0)
        area = float(ann["area"]) if "area" in ann else clean[2] * clean[3]
        rows.append(
            {
                "image_path": image_path,
                "image_id": int(ann["image_id"]),
                "annotation_id": int(ann_id),
                "image_width": int(width),
                "image_height": int(height),
                "bbox": clean,
                "keypoints": kps,
                "num_keypoints": num_kp,
                "area": area,
                "iscrowd": 0,
                "dataset_index": int(dataset_index),
            }
        )
    total = len(data["annotations"])
    if skipped:
        logger.info(
            "%s: kept %d of %d annotations; skipped %s",
            source, len(rows), total, ", ".join(f"{n} ({reason})" for reason, n in sorted(skipped.items())),
        )
    else:
        logger.info("%s: kept all %d annotations", source, total)
    return rows_to_dataset(rows, source, resolved)
