"""Draw predicted (or annotated) keypoints and skeletons on an image.

`draw_keypoints(image, persons, schema)` accepts persons in any of the three shapes the package
produces:

- pipeline output: `{"bbox": [x, y, w, h], "score": s, "keypoints": [{"label", "x", "y", "score"}, ...]}`
- processor post-processing output: `{"keypoints": (K, 2), "scores": (K,), "bbox": (4,)}` (tensors or arrays)
- COCO annotations / results: `{"keypoints": [x1, y1, v1, x2, y2, v2, ...], "bbox": [x, y, w, h]}`
  (`v` is a visibility flag 0/1/2 or a score; 0 means "not labelled").

Limbs are coloured by body part and side (left arm/leg in greens, right arm/leg in oranges, head
in violet, torso and centre-line in blue), so left/right swaps are visible at a glance.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .image_io import to_rgb_pil
from .keypoint_schemas import KeypointSchema, get_schema, schema_for_num_keypoints

logger = logging.getLogger(__name__)

__all__ = ["draw_keypoints", "keypoint_colors", "limb_colors", "person_to_arrays"]

# (part, side) -> RGB
_PALETTE: dict[tuple[str, str], tuple[int, int, int]] = {
    ("head", "left"): (190, 120, 255),
    ("head", "right"): (150, 80, 230),
    ("head", "center"): (170, 100, 255),
    ("arm", "left"): (60, 220, 60),
    ("arm", "right"): (255, 150, 40),
    ("arm", "center"): (51, 153, 255),
    ("leg", "left"): (0, 160, 90),
    ("leg", "right"): (230, 90, 0),
    ("leg", "center"): (51, 153, 255),
    ("torso", "left"): (90, 200, 200),
    ("torso", "right"): (250, 200, 60),
    ("torso", "center"): (51, 153, 255),
}

_PART_WORDS = (
    ("leg", ("back_paw", "hip", "knee", "ankle", "toe", "heel", "foot")),
    ("arm", ("front_paw", "shoulder", "elbow", "wrist", "hand", "thumb", "finger", "paw")),
    ("head", ("nose", "eye", "ear", "head", "neck", "face", "mouth", "chin")),
)


def _part_and_side(name: str) -> tuple[str, str]:
    lowered = name.lower()
    side = "left" if "left" in lowered else "right" if "right" in lowered else "center"
    for part, words in _PART_WORDS:
        if any(word in lowered for word in words):
            return part, side
    return "torso", side


def keypoint_colors(schema: str | KeypointSchema) -> list[tuple[int, int, int]]:
    """One RGB colour per keypoint of `schema` (by body part and side)."""
    schema = get_schema(schema)
    return [_PALETTE[_part_and_side(name)] for name in schema.keypoints]


def limb_colors(schema: str | KeypointSchema) -> list[tuple[int, int, int]]:
    """One RGB colour per skeleton edge of `schema`: a limb whose two ends share a side and a body
    part takes that part's colour; limbs joining parts or sides are torso-coloured."""
    schema = get_schema(schema)
    tags = [_part_and_side(name) for name in schema.keypoints]
    colors = []
    for i, j in schema.skeleton:
        (part_i, side_i), (part_j, side_j) = tags[i], tags[j]
        side = side_i if side_i == side_j else "center"
        part = part_i if part_i == part_j else ("head" if "head" in (part_i, part_j) and side == "center" else "torso")
        colors.append(_PALETTE[(part, side)])
    return colors


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def person_to_arrays(person: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Normalise one person to `(keypoints (K, 2), scores (K,), bbox (4,) xywh or None)`.

    Accepts the pipeline, post-processing and COCO shapes described in the module docstring, or a
    bare `(K, 2)` / `(K, 3)` array.
    """
    bbox = None
    if isinstance(person, dict):
        if person.get("bbox") is not None:
            bbox = _to_numpy(person["bbox"]).reshape(-1)[:4]
        kps = person.get("keypoints")
        if kps is None:
            raise ValueError(f"person has no 'keypoints': keys {sorted(person)}")
        if isinstance(kps, (list, tuple)) and kps and isinstance(kps[0], dict):
            xy = np.array([[float(k["x"]), float(k["y"])] for k in kps], dtype=np.float64)
            scores = np.array([float(k.get("score", 1.0)) for k in kps], dtype=np.float64)
            return xy, scores, bbox
        arr = _to_numpy(kps)
        if "scores" in person and person["scores"] is not None:
            return arr.reshape(-1, 2), _to_numpy(person["scores"]).reshape(-1), bbox
        if arr.ndim == 1:
            if arr.size % 3:
                raise ValueError(f"flat keypoints must hold x, y, v triplets, got {arr.size} values")
            arr = arr.reshape(-1, 3)
    else:
        arr = _to_numpy(person)
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise ValueError(f"keypoints must have shape (K, 2) or (K, 3), got {arr.shape}")
    scores = arr[:, 2] if arr.shape[1] == 3 else np.ones(arr.shape[0])
    return arr[:, :2], scores, bbox


def _resolve_schema(schema: Any, num_keypoints: int) -> KeypointSchema:
    if schema is None:
        return schema_for_num_keypoints(num_keypoints)
    schema = get_schema(schema)
    if schema.num_keypoints != num_keypoints:
        raise ValueError(
            f"schema {schema.name!r} has {schema.num_keypoints} keypoints but the persons have {num_keypoints}"
        )
    return schema


def draw_keypoints(
    image: Any,
    persons: Iterable[Any],
    schema: str | KeypointSchema | None = "coco",
    keypoint_threshold: float = 0.3,
    radius: int | None = None,
    thickness: int | None = None,
    draw_boxes: bool = True,
    box_color: tuple[int, int, int] = (255, 255, 255),
    supersample: int | None = None,
    colors: Sequence[tuple[int, int, int]] | None = None,
    labels: Sequence[str | None] | None = None,
) -> Image.Image:
    """Draw skeletons and keypoints of `persons` on a copy of `image`.

    Args:
        image: anything `vitpose_hf.image_io.to_rgb_tensor` accepts (PIL image, array, path, URL,
            bytes); drawn on as `image_io.to_rgb_pil` gives it (the pixels the pipeline and its
            detector see, rounded to 8 bits).
        persons: one entry per person (pipeline dicts, post-processing dicts with `(K, 2)`
            keypoints and `(K,)` scores, COCO dicts with flat `x, y, v` lists, or `(K, 3)` arrays).
        schema: keypoint schema name or object (default "coco"); `None` picks it from K.
        keypoint_threshold: points with a score below this are not drawn, nor limbs touching them.
            COCO visibility flags (0/1/2) work with the default: 0 (unlabelled) is hidden.
        radius: point radius in pixels (default: scaled to the image, >= 2).
        thickness: limb width in pixels (default: scaled to the image, >= 1).
        draw_boxes: outline each person's `bbox` when it has one.
        box_color: RGB of the boxes.
        supersample: draw at this factor and downsample for smooth edges (default 2 for images up
            to 2000 px, else 1).
        colors: one RGB colour per person: its limbs, points and box are drawn in it instead of the
            body-part colours (e.g. one colour per track in a video).
        labels: one text per person (or None), written above its box (e.g. a track id).

    Returns:
        A new RGB `PIL.Image.Image` of the same size; `image` is not modified.

    Raises:
        ValueError: a person's keypoint count does not match the schema, or a malformed person.
    """
    base = to_rgb_pil(image).copy()
    width, height = base.size
    persons = list(persons)
    if radius is None:
        radius = max(2, int(round(max(width, height) / 200)))
    if thickness is None:
        thickness = max(1, int(round(radius * 0.8)))
    if radius < 0 or thickness < 0:
        raise ValueError(f"radius and thickness must be non-negative, got {radius}, {thickness}")
    if not persons:
        return base
    if supersample is None:
        supersample = 2 if max(width, height) <= 2000 else 1
    factor = max(1, int(supersample))
    # factor 1 draws straight onto the copy (cheap for huge images); otherwise on a transparent
    # overlay at `factor` x the size, downsampled and composited for anti-aliased edges
    overlay = base if factor == 1 else Image.new("RGBA", (width * factor, height * factor), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay, "RGBA")

    parsed = [person_to_arrays(p) for p in persons]
    for name, values in (("colors", colors), ("labels", labels)):
        if values is not None and len(values) != len(parsed):
            raise ValueError(f"{name} must hold one entry per person: {len(parsed)} persons, {len(values)} {name}")
    cached: dict[int, tuple[KeypointSchema, list, list]] = {}
    for n, (xy, scores, bbox) in enumerate(parsed):
        k = xy.shape[0]
        if scores.shape[0] != k:
            raise ValueError(f"person has {k} keypoints but {scores.shape[0]} scores")
        if k not in cached:
            sch = _resolve_schema(schema, k)
            cached[k] = (sch, keypoint_colors(sch), limb_colors(sch))
        sch, point_cols, edge_cols = cached[k]
        person_box_color = box_color
        if colors is not None:
            color = tuple(int(c) for c in colors[n])
            point_cols, edge_cols, person_box_color = [color] * k, [color] * len(edge_cols), color
        if draw_boxes and bbox is not None and np.all(np.isfinite(bbox)):
            x, y, w, h = (bbox * factor).tolist()
            draw.rectangle([x, y, x + w, y + h], outline=person_box_color + (255,), width=max(1, thickness // 2) * factor)
        visible = np.isfinite(xy).all(axis=1) & np.isfinite(scores) & (scores >= keypoint_threshold)
        pts = xy * factor
        for (i, j), color in zip(sch.skeleton, edge_cols):
            if visible[i] and visible[j] and thickness > 0:
                draw.line([tuple(pts[i]), tuple(pts[j])], fill=color + (255,), width=thickness * factor)
        r = radius * factor
        for idx in np.nonzero(visible)[0]:
            cx, cy = pts[idx]
            if r > 0:
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=point_cols[idx] + (255,), outline=(255, 255, 255, 255))
    if factor == 1:
        out = base
    else:
        overlay = overlay.resize((width, height), Image.LANCZOS)
        out = base.convert("RGBA")
        out.alpha_composite(overlay)
        out = out.convert("RGB")
    if labels is not None:
        _draw_labels(out, parsed, labels, colors, box_color, size=max(10, 5 * radius))
    return out


def _draw_labels(image: Image.Image, parsed, labels, colors, default_color, size: int) -> None:
    """Write each person's label on a filled tag above the top-left corner of its box (or of
    its keypoints when it has no box)."""
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=size)
    for n, ((xy, scores, bbox), text) in enumerate(zip(parsed, labels)):
        if text is None:
            continue
        if bbox is not None and np.all(np.isfinite(bbox)):
            x, y = float(bbox[0]), float(bbox[1])
        elif np.isfinite(xy).any():
            x, y = np.nanmin(np.where(np.isfinite(xy), xy, np.nan), axis=0).tolist()
        else:
            continue
        color = tuple(int(c) for c in colors[n]) if colors is not None else default_color
        left, top, right, bottom = draw.textbbox((0, 0), str(text), font=font)
        tw, th = right - left, bottom - top
        x = min(max(x, 0.0), max(image.width - tw - 4, 0))
        y = min(max(y - th - 4, 0.0), max(image.height - th - 4, 0))
        draw.rectangle([x, y, x + tw + 4, y + th + 4], fill=color)
        dark = sum(color) > 380  # dark text on light tags
        draw.text((x + 2 - left, y + 2 - top), str(text), fill=(0, 0, 0) if dark else (255, 255, 255), font=font)

