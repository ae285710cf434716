"""COCO-format person-keypoint annotations -> a `datasets.Dataset` of person instances.

One row per kept person instance; images are *not* decoded here (only their paths are stored), the
train/eval transform decodes them lazily. Which annotations become persons, and with which box, is
decided by `select_ground_truth_boxes`, the one selection of the loader and of the evaluation's
ground-truth boxes (`evaluation.ground_truth_boxes`). It follows mmpose 0.x `TopDownCocoDataset`
(the loader of the official ViTPose training):

1. annotations of another category (not a keypoint category) and crowd annotations
   (`iscrowd == 1`) are dropped;
2. boxes are cleaned: `x1 = max(0, x)`, `y1 = max(0, y)`, `x2 = min(W - 1, x1 + max(0, w - 1))`,
   `y2 = min(H - 1, y1 + max(0, h - 1))`; a box with `x2 <= x1` or `y2 <= y1` (or `area <= 0`) is
   dropped and the kept box is `[x1, y1, x2 - x1, y2 - y1]`;
3. annotations without any labeled keypoint (every keypoint value <= 0, or `num_keypoints == 0`)
   are dropped.

Every skip is counted by reason and logged in one line at the end (never silent). Malformed input
raises a `ValueError` naming the file, the image or annotation id and the field: missing fields, a
keypoint count that does not match the schema, an unknown image id, an image or annotation id that
appears twice, a bbox that is not 4 finite numbers with `w, h >= 0`, a non-finite keypoint value, a
non-finite `area`, an image `width`/`height` that is not a finite number > 0. (mmpose would clip a
NaN or negative box into an arbitrary one or drop it; here such a file is reported, not guessed at.)
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, NamedTuple

import datasets

from ..jsonio import read_json
from ..keypoint_schemas import KeypointSchema, get_schema, known_schema_for_names, schema_from_names

logger = logging.getLogger(__name__)

__all__ = [
    "PERSON_FEATURES",
    "embed_images",
    "load_coco_keypoints",
    "check_coco_bbox",
    "check_number",
    "check_coco_keypoints",
    "check_unique_ids",
    "clean_coco_bbox",
    "GroundTruthPerson",
    "select_ground_truth_boxes",
    "keypoint_category_ids",
    "schema_from_category",
    "rows_to_dataset",
    "recorded_schema_name",
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


def check_number(value: Any, where: str, field: str, index: int | None = None) -> float:
    """`value` as a float; a bool, a string, None or a non-number -> ValueError naming `where` and `field`."""
    at = f" at index {index}" if index is not None else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where}: field {field!r} holds a value that is not a number{at}: {value!r}")
    return float(value)


def _as_floats(values: list | tuple, where: str, field: str) -> list[float]:
    """A list of plain ints / floats as floats (fast path); anything else through `check_number`."""
    if all(type(v) is float or type(v) is int for v in values):
        return [float(v) for v in values]
    return [check_number(v, where, field, i) for i, v in enumerate(values)]


def check_coco_bbox(bbox: Any, where: str = "bbox") -> list[float]:
    """Validate a COCO box `[x, y, w, h]`: 4 finite numbers with `w >= 0` and `h >= 0`.

    Args:
        bbox: the annotation's `bbox` value.
        where: what the box belongs to, for the error message (e.g. "ann.json: annotation id 7").

    Returns:
        the 4 values as floats.

    Raises:
        ValueError: not a list of 4, a non-number, NaN / inf, or a negative width or height; the
            message names `where`, the field 'bbox' and the value.
    """
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise ValueError(f"{where}: field 'bbox' is malformed: {bbox!r} (expected [x, y, w, h])")
    values = _as_floats(bbox, where, "bbox")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where}: field 'bbox' holds a non-finite value: {bbox!r}")
    if values[2] < 0 or values[3] < 0:
        raise ValueError(f"{where}: field 'bbox' has a negative width or height: {bbox!r}")
    return values


def check_coco_keypoints(keypoints: Any, num_keypoints: int, where: str = "keypoints") -> list[float]:
    """Validate a flat COCO keypoint list `[x1, y1, v1, ..., xK, yK, vK]`: `3 * num_keypoints` finite numbers.

    Returns:
        the `3K` values as floats.

    Raises:
        ValueError: a wrong length, a non-number or a NaN / inf value; the message names `where`,
            the field 'keypoints' and the index of the first bad value.
    """
    if not isinstance(keypoints, (list, tuple)) or len(keypoints) != 3 * num_keypoints:
        n = len(keypoints) if isinstance(keypoints, (list, tuple)) else type(keypoints).__name__
        raise ValueError(
            f"{where}: field 'keypoints' has {n} keypoint values, expected {3 * num_keypoints} "
            f"({num_keypoints} keypoints x (x, y, v))"
        )
    values = _as_floats(keypoints, where, "keypoints")
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise ValueError(
                f"{where}: field 'keypoints' holds a non-finite value {v!r} at index {i} "
                f"(keypoint {i // 3}, {'xyv'[i % 3]})"
            )
    return values


def check_unique_ids(entries: Iterable[dict], source: str, what: str, describe=None) -> None:
    """Raise when two entries share an `id` (COCO `images` or `annotations`).

    pycocotools and a dict keyed by id keep only the last of them: annotations bind to the wrong
    image file, and evaluation matches predictions against a ground truth that lost a person.

    The one duplicate-id check of the loader (`load_coco_keypoints`) and of the evaluation's ground
    truth (`evaluation.load_coco`).

    Args:
        entries: dicts; those without an `id` are ignored.
        source: the file (or "ground-truth dict") for the message.
        what: "image" or "annotation".
        describe: optional `entry -> str` added to the message for both entries (e.g. file names).

    Raises:
        ValueError: naming `source`, the id, the field 'id' and both positions; or an entry that is
            not a dict (naming its position).
    """
    first: dict[Any, tuple[int, dict]] = {}
    for pos, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ValueError(f"{source}: {what} #{pos} is a {type(entry).__name__}, not a dict")
        if "id" not in entry:
            continue
        key = entry["id"]
        if key in first:
            prev_pos, prev = first[key]
            extra = f", {describe(prev)} and {describe(entry)}" if describe is not None else ""
            raise ValueError(
                f"{source}: {what} id {key!r}: field 'id' appears twice ({what}s #{prev_pos} and #{pos}{extra}); "
                "ids must be unique"
            )
        first[key] = (pos, entry)


def clean_coco_bbox(
    bbox: Iterable[float], width: float | None, height: float | None, where: str = "bbox"
) -> list[float] | None:
    """mmpose 0.x box sanitising: clip `[x, y, w, h]` to a `width x height` image.

    `x1 = max(0, x)`, `x2 = min(width - 1, x1 + max(0, w - 1))` (the same for y); `width` or
    `height` None skips that clip. The box is validated first (:func:`check_coco_bbox`), so a NaN
    or negative box raises instead of being clipped into an arbitrary one. `select_ground_truth_boxes`
    (the loader's and the evaluation's selection) cleans every box with it.

    Returns:
        the cleaned `[x1, y1, x2 - x1, y2 - y1]`, or None when the clipped box is empty.

    Raises:
        ValueError: see :func:`check_coco_bbox` (`where` names the annotation in the message).
    """
    x, y, w, h = check_coco_bbox(bbox if isinstance(bbox, (list, tuple)) else list(bbox), where)
    x1 = max(0.0, x)
    y1 = max(0.0, y)
    x2 = x1 + max(0.0, w - 1.0)
    y2 = y1 + max(0.0, h - 1.0)
    if width is not None:
        x2 = min(float(width) - 1.0, x2)
    if height is not None:
        y2 = min(float(height) - 1.0, y2)
    if x2 > x1 and y2 > y1:
        return [x1, y1, x2 - x1, y2 - y1]
    return None


def _image_size(img: dict, source: str, what: str) -> tuple[float, float]:
    if "width" not in img or "height" not in img:
        raise ValueError(f"{source}: image id {img['id']!r} (for {what}) lacks width/height")
    size = []
    for field in ("width", "height"):
        v = check_number(img[field], f"{source}: image id {img['id']!r}", field)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{source}: image id {img['id']!r}: field {field!r} is {img[field]!r}, expected a number > 0")
        size.append(v)
    return size[0], size[1]


class GroundTruthPerson(NamedTuple):
    """One annotation kept by `select_ground_truth_boxes`."""

    annotation: dict  #: the COCO annotation, as given
    image: dict  #: its entry of the file's `images`
    bbox: list[float]  #: the cleaned `[x, y, w, h]` (`clean_coco_bbox`)
    keypoints: list[float]  #: the validated `3 K` keypoint values `x, y, v`


def keypoint_category_ids(categories: Iterable[dict] | None) -> set | None:
    """Ids of the categories that name keypoints (COCO's "person"), or None when none does (then
    `select_ground_truth_boxes` keeps every category)."""
    ids = {c["id"] for c in categories or [] if isinstance(c, Mapping) and c.get("keypoints") and "id" in c}
    return ids or None


def _crowd(ann: dict, where: str) -> bool:
    value = ann.get("iscrowd", 0)
    if not isinstance(value, numbers.Real) or value not in (0, 1):  # a string "0" would read as a crowd
        raise ValueError(f"{where}: field 'iscrowd' is {value!r}, expected 0 or 1")
    return value == 1


def select_ground_truth_boxes(
    annotations: Iterable[dict],
    images: Mapping[Any, dict],
    source: str = "ground truth",
    num_keypoints: int | None = None,
    category_ids: Collection | None = None,
) -> tuple[list[GroundTruthPerson], Counter]:
    """The person annotations that give ground-truth boxes, and their cleaned boxes: the one
    selection of the training rows (`load_coco_keypoints`) and of the evaluation's ground-truth boxes
    (`evaluation.ground_truth_boxes`), after mmpose 0.x `TopDownCocoDataset`.

    Each annotation, in this order:

    1. of another category (`category_id` not in `category_ids`, when given): skipped, "other category";
    2. validated, a ValueError naming `source`, the annotation id and the field otherwise: the fields
       `id`, `image_id`, `bbox`, `keypoints` present; `keypoints` `3 K` finite numbers (K =
       `num_keypoints` when given); `bbox` 4 finite numbers with `w, h >= 0`; `area` (when present)
       a finite number; `iscrowd` (when present) 0 or 1; `image_id` one of `images`;
    3. a crowd (`iscrowd == 1`): skipped, "crowd";
    4. the box cleaned by `clean_coco_bbox` with the image's `width` / `height` (required, numbers
       > 0, else ValueError); empty after clipping, or `area <= 0`: skipped, "empty box after
       clipping to the image";
    5. no labeled keypoint (every keypoint value <= 0, or `num_keypoints == 0`): skipped, "no
       labeled keypoint".

    Args:
        annotations: the file's `annotations` (dicts), in order.
        images: image id -> the file's image entry (`width`, `height`, ...).
        source: the file, for the messages.
        num_keypoints: the keypoint count every annotation must have (the schema's), or None for any
            count (a multiple of 3 values).
        category_ids: the categories kept (see `keypoint_category_ids`); None keeps all. An
            annotation without `category_id` is kept.

    Returns:
        `(kept, skipped)`: the kept `GroundTruthPerson`s in the order of `annotations`, and the
        count of skipped annotations per reason (the callers log it).

    Raises:
        ValueError: see step 2 and 4.
    """
    skipped: Counter = Counter()
    kept: list[GroundTruthPerson] = []
    sizes: dict[Any, tuple[float, float]] = {}
    for pos, ann in enumerate(annotations):
        if not isinstance(ann, Mapping):
            raise ValueError(f"{source}: annotation #{pos} is a {type(ann).__name__}, not a dict")
        ann_id = ann.get("id")
        what = f"annotation id {ann_id!r}"
        if category_ids is not None and "category_id" in ann and ann["category_id"] not in category_ids:
            skipped["other category"] += 1
            continue
        _require(ann, ("id", "image_id", "bbox", "keypoints"), source, what)
        where = f"{source}: {what}"
        # validated before any drop: a NaN or a wrong length anywhere means a corrupt file
        kps, count = ann["keypoints"], num_keypoints
        if count is None and isinstance(kps, (list, tuple)):
            if len(kps) % 3:
                raise ValueError(f"{where}: field 'keypoints' has {len(kps)} values, not a multiple of 3 (x, y, v)")
            count = len(kps) // 3
        kps = check_coco_keypoints(kps, count or 0, where)
        check_coco_bbox(ann["bbox"], where)
        if "area" in ann and not math.isfinite(check_number(ann["area"], where, "area")):
            raise ValueError(f"{where}: field 'area' holds a non-finite value {ann['area']!r}")
        crowd = _crowd(ann, where)
        img = images.get(ann["image_id"])
        if img is None:
            raise ValueError(f"{source}: {what} refers to unknown image_id {ann['image_id']!r}")
        if crowd:
            skipped["crowd"] += 1
            continue
        size = sizes.get(ann["image_id"])
        if size is None:
            size = sizes[ann["image_id"]] = _image_size(img, source, what)
        clean = clean_coco_bbox(ann["bbox"], size[0], size[1], where)
        if clean is None or ("area" in ann and not float(ann["area"]) > 0):
            skipped["empty box after clipping to the image"] += 1
            continue
        if not kps or max(kps) <= 0 or ("num_keypoints" in ann and int(ann["num_keypoints"]) == 0):
            skipped["no labeled keypoint"] += 1
            continue
        kept.append(GroundTruthPerson(ann, img, clean, kps))
    return kept, skipped


def schema_from_category(category: dict, source: str = "<category>") -> KeypointSchema:
    """The schema of a COCO category: a known one when the keypoint names match one of
    `keypoint_schemas.SCHEMAS` (names compared lower-case, spaces as underscores), else a custom
    schema with flip pairs inferred from left/right names and the category's 1-based skeleton."""
    names = category.get("keypoints")
    if not names:
        raise ValueError(f"{source}: category {category.get('id')!r} has no 'keypoints' names")
    known = known_schema_for_names(names)
    if known is not None:
        return known
    skeleton = [
        (int(a) - 1, int(b) - 1)
        for a, b in category.get("skeleton", [])
        if 1 <= int(a) <= len(names) and 1 <= int(b) <= len(names)
    ]
    schema = schema_from_names(names, name=category.get("name", "custom"), skeleton=skeleton)
    logger.info(
        "%s: keypoint names match no known schema; using a custom %d-keypoint schema with %d flip pairs",
        source, len(names), len(schema.flip_pairs),
    )
    return schema


#: how `rows_to_dataset` records the keypoint schema in the dataset's description (`save_to_disk` keeps it)
_SCHEMA_NOTE = "keypoint schema: "


def rows_to_dataset(rows: list[dict[str, Any]], source: str, schema: KeypointSchema | None = None) -> datasets.Dataset:
    """Rows (dicts with the `PERSON_FEATURES` columns) -> `datasets.Dataset`; empty -> ValueError."""
    if not rows:
        raise ValueError(f"{source}: no usable person instance (empty dataset after filtering)")
    # the last guard before training: a NaN here would only surface as a NaN loss at step 1
    for row in rows:
        for field in ("bbox", "keypoints", "area"):
            values = row[field] if field != "area" else [row[field]]
            if not all(math.isfinite(v) for v in values):
                raise ValueError(
                    f"{source}: annotation id {row.get('annotation_id')!r}: field {field!r} holds a non-finite value"
                )
    columns = {name: [r[name] for r in rows] for name in PERSON_FEATURES}
    ds = datasets.Dataset.from_dict(columns, features=PERSON_FEATURES)
    if schema is not None:
        ds.info.description = f"vitpose_hf person instances; {_SCHEMA_NOTE}{schema.name}"
    return ds


def recorded_schema_name(ds: datasets.Dataset) -> str | None:
    """The keypoint schema name `rows_to_dataset` recorded in `ds.info.description`, or None."""
    found = re.search(re.escape(_SCHEMA_NOTE) + r"(\S+)", ds.info.description or "")
    return found.group(1) if found else None


def embed_images(ds: datasets.Dataset) -> datasets.Dataset:
    """Add an `image` column (`datasets.Image`) with the encoded bytes of each row's `image_path`.

    Each file is read once, but arrow stores the bytes once per person row, and the column is built
    in memory: about (persons / images) x the images' size. Meant for evaluation sets and small
    training sets."""
    cache: dict[str, bytes] = {}

    def read(path: str) -> bytes:
        if path not in cache:
            try:
                cache[path] = Path(path).read_bytes()
            except OSError as err:
                raise ValueError(f"cannot embed image {path!r}: {err}") from err
        return cache[path]

    column = [{"bytes": read(p), "path": os.path.basename(p)} for p in ds["image_path"]]
    return ds.add_column("image", column, feature=datasets.Image())


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
    images: str = "path",
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
        images: `"path"` (rows name their image file in `image_path`), or `"embed"`: an `image`
            column (`datasets.Image`) holding each image's encoded bytes too, so the dataset is
            self-contained: it survives `save_to_disk` / `load_from_disk` and `push_to_hub`
            without the image folder, and `TopDownTransform` reads the column.

    Returns:
        `datasets.Dataset` with the `PERSON_FEATURES` columns: `image_path`, `image_id`,
        `annotation_id`, `image_width`, `image_height`, `bbox` (cleaned `[x, y, w, h]`),
        `keypoints` (`K * 3` floats, COCO `x, y, v`), `num_keypoints`, `area`, `iscrowd` (0),
        `dataset_index`.

    Raises:
        ValueError: unreadable json, missing fields, keypoint count not matching the schema,
            unknown image ids, duplicated image or annotation ids, a NaN / inf / negative-size bbox,
            a non-finite keypoint or area, an `iscrowd` other than 0 / 1, a bad image size, missing
            image files, or nothing left after filtering; the message names the file, the id and
            the field. The selection is `select_ground_truth_boxes`.
    """
    if images not in ("path", "embed"):
        raise ValueError(f"images must be 'path' or 'embed', got {images!r}")
    embed = images == "embed"  # (the name `images` is reused below for the file's image table)
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

    check_unique_ids(data["images"], source, "image", describe=lambda img: f"file_name {img.get('file_name')!r}")
    check_unique_ids(data["annotations"], source, "annotation")
    images = {}
    for img in data["images"]:
        _require(img, ("id", "file_name"), source, f"image entry {img.get('id')!r}")
        images[img["id"]] = img

    persons, skipped = select_ground_truth_boxes(data["annotations"], images, source, num_joints, cat_ids)
    image_dir = Path(image_dir)
    rows = []
    seen_files: dict[str, bool] = {}
    for ann, img, clean, kps in persons:
        image_path = str(image_dir / img["file_name"])
        if check_images:
            ok = seen_files.get(image_path)
            if ok is None:
                ok = seen_files[image_path] = os.path.isfile(image_path)
            if not ok:
                raise ValueError(f"{source}: image file {image_path} of annotation id {ann['id']!r} does not exist")
        num_kp = int(ann["num_keypoints"]) if "num_keypoints" in ann else sum(1 for v in kps[2::3] if v > 0)
        area = float(ann["area"]) if "area" in ann else clean[2] * clean[3]
        rows.append(
            {
                "image_path": image_path,
                "image_id": int(ann["image_id"]),
                "annotation_id": int(ann["id"]),
                "image_width": int(img["width"]),
                "image_height": int(img["height"]),
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
    ds = rows_to_dataset(rows, source, resolved)
    return embed_images(ds) if embed else ds
