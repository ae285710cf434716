"""draw_keypoints: what is drawn where, thresholds, input shapes, colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitpose_hf.keypoint_schemas import COCO, get_schema
from vitpose_hf.visualization import draw_keypoints, keypoint_colors, limb_colors, person_to_arrays

ROOT = Path(__file__).resolve().parents[1]
BG = (10, 20, 30)


def _person(scores=None):
    """A stick figure in a 200x200 image, COCO order."""
    xy = np.array(
        [
            [100, 30], [95, 25], [105, 25], [90, 28], [110, 28], [80, 60], [120, 60], [70, 90], [130, 90],
            [60, 120], [140, 120], [85, 120], [115, 120], [80, 150], [120, 150], [78, 185], [122, 185],
        ],
        dtype=np.float64,
    )  # fmt: skip
    scores = np.full(17, 0.9) if scores is None else np.asarray(scores, dtype=np.float64)
    return xy, scores


def _draw(persons, **kw):
    kw.setdefault("supersample", 1)
    kw.setdefault("radius", 3)
    kw.setdefault("thickness", 2)
    kw.setdefault("draw_boxes", False)
    return np.asarray(draw_keypoints(Image.new("RGB", (200, 200), BG), persons, **kw))


def test_points_and_limbs_at_the_right_places():
    xy, scores = _person()
    scores[9] = 0.1  # left wrist hidden
    out = _draw([{"keypoints": xy, "scores": scores}], keypoint_threshold=0.3)
    colors = keypoint_colors("coco")
    # a visible point: centre pixel has its colour
    assert tuple(out[150, 80]) == colors[13]  # left knee
    assert tuple(out[150, 120]) == colors[14]  # right knee
    # the hidden point: background at its centre, and its limb (left elbow -> left wrist) is absent
    assert tuple(out[120, 60]) == BG
    mid_hidden = ((70 + 60) // 2, (90 + 120) // 2)
    assert tuple(out[mid_hidden[1], mid_hidden[0]]) == BG
    # a limb between two visible points (left hip 11 -> right hip 12) is drawn at its midpoint
    edge = COCO.skeleton.index((11, 12))
    assert tuple(out[120, 100]) == limb_colors("coco")[edge]
    # far from everything: untouched
    assert tuple(out[5, 5]) == BG


def test_left_right_colours_differ_and_palette_covers_all_schemas():
    colors = keypoint_colors("coco")
    for a, b in COCO.flip_pairs:
        assert colors[a] != colors[b], (COCO.keypoints[a], COCO.keypoints[b])
    for name in ("coco", "aic", "mpii", "crowdpose", "coco_wholebody"):
        try:
            schema = get_schema(name)
        except ValueError:
            continue
        assert len(keypoint_colors(schema)) == schema.num_keypoints
        assert len(limb_colors(schema)) == len(schema.skeleton)


def test_input_shapes_give_identical_drawings():
    xy, scores = _person()
    bbox = [50.0, 10.0, 100.0, 180.0]
    pipeline_style = {
        "bbox": bbox,
        "score": 0.8,
        "keypoints": [{"label": n, "x": x, "y": y, "score": s} for n, (x, y), s in zip(COCO.keypoints, xy, scores)],
    }
    processor_style = {"keypoints": torch.tensor(xy), "scores": torch.tensor(scores), "bbox": torch.tensor(bbox)}
    coco_style = {"keypoints": np.concatenate([xy, scores[:, None]], axis=1).reshape(-1).tolist(), "bbox": bbox}
    ref = _draw([pipeline_style], draw_boxes=True)
    assert np.array_equal(ref, _draw([processor_style], draw_boxes=True))
    assert np.array_equal(ref, _draw([coco_style], draw_boxes=True))
    assert np.array_equal(_draw([pipeline_style]), _draw([np.concatenate([xy, scores[:, None]], axis=1)]))
    # the box outline is white at its left edge
    assert tuple(ref[100, 50]) == (255, 255, 255)


def test_coco_visibility_flags_hide_unlabelled_points():
    xy, _ = _person()
    flags = np.full(17, 2.0)
    flags[13] = 0  # left knee unlabelled
    out = _draw([{"keypoints": np.concatenate([xy, flags[:, None]], axis=1).reshape(-1).tolist()}])
    assert tuple(out[150, 80]) == BG
    assert tuple(out[150, 120]) == keypoint_colors("coco")[14]


def test_nan_keypoints_and_empty_persons_are_skipped():
    xy, scores = _person()
    xy[0] = np.nan
    out = _draw([{"keypoints": xy, "scores": scores}])
    assert out.shape == (200, 200, 3)
    base = Image.new("RGB", (30, 20), BG)
    same = draw_keypoints(base, [])
    assert same is not base and np.array_equal(np.asarray(same), np.asarray(base))


def test_does_not_modify_input_and_keeps_size():
    xy, scores = _person()
    base = Image.new("RGB", (200, 200), BG)
    out = draw_keypoints(base, [{"keypoints": xy, "scores": scores, "bbox": [50, 10, 100, 180]}])
    assert out.size == base.size and out.mode == "RGB"
    assert np.all(np.asarray(base) == BG)
    direct = draw_keypoints(base, [{"keypoints": xy, "scores": scores}], supersample=1)
    assert np.all(np.asarray(base) == BG) and not np.all(np.asarray(direct) == BG)
    # anti-aliased (default) and direct drawing put the same colours at the point centres
    smooth = np.asarray(draw_keypoints(base, [{"keypoints": xy, "scores": scores}], radius=4))
    sharp = np.asarray(draw_keypoints(base, [{"keypoints": xy, "scores": scores}], radius=4, supersample=1))
    for x, y in xy.astype(int):
        assert np.abs(smooth[y, x].astype(int) - sharp[y, x].astype(int)).max() <= 2
    gray = Image.new("L", (200, 200), 5)
    assert draw_keypoints(gray, [{"keypoints": xy, "scores": scores}]).mode == "RGB"


def test_schema_selection_and_errors():
    with pytest.raises(ValueError, match="17 keypoints"):
        _draw([{"keypoints": np.zeros((14, 2)), "scores": np.ones(14)}], schema="coco")
    with pytest.raises(ValueError, match="shape"):
        person_to_arrays({"keypoints": np.zeros((4, 5))})
    with pytest.raises(ValueError, match="triplets"):
        person_to_arrays({"keypoints": [1.0, 2.0]})
    try:
        aic = get_schema("aic")
    except ValueError:
        pytest.skip("AIC schema not available")
    xy = np.random.default_rng(0).uniform(20, 180, size=(aic.num_keypoints, 2))
    out = _draw([{"keypoints": xy, "scores": np.ones(aic.num_keypoints)}], schema=None)
    x, y = np.rint(xy[0]).astype(int)
    assert tuple(out[y, x]) != BG


def test_docs_example_picture_is_small_png():
    path = ROOT / "docs" / "images" / "keypoints_example.png"
    assert path.is_file()
    assert path.stat().st_size < 300_000
    with Image.open(path) as im:
        assert im.format == "PNG"
