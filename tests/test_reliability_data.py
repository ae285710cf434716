"""Data and evaluation reliability (issue 12, item 5): malformed annotation files are refused at load
time with the file, the id and the field named, or dropped with a counted, logged reason where mmpose
drops them; evaluation refuses duplicated ground-truth ids instead of silently lowering AP."""

from __future__ import annotations

import copy
import json
import logging
import math

import numpy as np
import pytest
from PIL import Image

from vitpose_hf.data import clean_coco_bbox, load_aic, load_coco_keypoints, load_crowdpose, load_mpii
from vitpose_hf.evaluation import coco_keypoint_eval, ground_truth_as_results
from vitpose_hf.evaluation.topdown import ground_truth_boxes
from vitpose_hf.keypoint_schemas import get_schema

NAN, INF = float("nan"), float("inf")


# ----------------------------------------------------------------------------- tiny files
def _keypoints(k: int, x0: float, y0: float) -> list[float]:
    out = []
    for i in range(k):
        out += [x0 + 3.0 * i, y0 + 2.0 * (i % 5), 2.0]
    return out


def _coco(tmp_path, k: int = 17) -> dict:
    """Two 64x48 images, three annotated persons (ids 11, 12, 21), one keypoint category of K names."""
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (64, 48), (120, 30, 200)).save(tmp_path / name)
    names = list(get_schema("coco").keypoints) if k == 17 else [f"kp{i}" for i in range(k)]
    anns = [
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [2, 2, 30, 30], "area": 600.0, "iscrowd": 0,
         "num_keypoints": k, "keypoints": _keypoints(k, 3, 4)},
        {"id": 12, "image_id": 1, "category_id": 1, "bbox": [30, 10, 30, 30], "area": 500.0, "iscrowd": 0,
         "num_keypoints": k, "keypoints": _keypoints(k, 31, 12)},
        {"id": 21, "image_id": 2, "category_id": 1, "bbox": [5, 5, 40, 30], "area": 900.0, "iscrowd": 0,
         "num_keypoints": k, "keypoints": _keypoints(k, 6, 7)},
    ]  # fmt: skip
    images = [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
              {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}]  # fmt: skip
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person", "keypoints": names}]}


def _write(tmp_path, data, name="ann.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))  # json writes NaN / Infinity literals, as Python's reader accepts them
    return path


# ----------------------------------------------------------------------------- A. loader
def test_clean_file_loads(tmp_path):
    ds = load_coco_keypoints(_write(tmp_path, _coco(tmp_path)), tmp_path)
    assert ds["annotation_id"] == [11, 12, 21]
    assert ds["bbox"][0] == [2.0, 2.0, 29.0, 29.0]  # mmpose clipping: w' = min(W - 1, x + w - 1) - x


def test_duplicated_annotation_id_is_refused(tmp_path):
    data = _coco(tmp_path)
    data["annotations"][2]["id"] = 11
    with pytest.raises(ValueError, match=r"ann\.json.*annotation id 11.*'id'.*twice"):
        load_coco_keypoints(_write(tmp_path, data), tmp_path)


def test_duplicated_image_id_is_refused(tmp_path):
    """Before: the second entry silently won, so image 1's annotations were read on b.jpg."""
    data = _coco(tmp_path)
    data["images"].append({"id": 1, "file_name": "b.jpg", "width": 64, "height": 48})
    with pytest.raises(ValueError, match=r"ann\.json.*image id 1.*'id'.*twice.*a\.jpg.*b\.jpg"):
        load_coco_keypoints(_write(tmp_path, data), tmp_path)


@pytest.mark.parametrize(
    "bbox, why",
    [
        ([NAN, NAN, NAN, NAN], "non-finite"),
        ([NAN, 5, 20, 20], "non-finite"),  # before: "cleaned" to [0, 5, 19, 19]
        ([5, 5, INF, 20], "non-finite"),  # before: clipped to the image width
        ([5, 5, -20, 20], "negative"),  # before: silently dropped as an empty box
        ([5, 5, 20, "7"], "not a number"),
        ([5, 5, 20], "expected \\[x, y, w, h\\]"),
    ],
)
def test_bad_bbox_is_refused_naming_file_id_and_field(tmp_path, bbox, why):
    data = _coco(tmp_path)
    data["annotations"][1]["bbox"] = bbox
    with pytest.raises(ValueError, match=rf"ann\.json.*annotation id 12.*'bbox'.*{why}"):
        load_coco_keypoints(_write(tmp_path, data), tmp_path)


@pytest.mark.parametrize("value, why", [(NAN, "non-finite"), (INF, "non-finite"), (-INF, "non-finite"), (None, "not a number")])
def test_bad_keypoint_is_refused_naming_file_id_and_field(tmp_path, value, why):
    """Before: a NaN keypoint passed the loader (and crashed at training step 1)."""
    data = _coco(tmp_path)
    data["annotations"][2]["keypoints"][4] = value
    with pytest.raises(ValueError, match=rf"ann\.json.*annotation id 21.*'keypoints'.*{why}.*index 4"):
        load_coco_keypoints(_write(tmp_path, data), tmp_path)


@pytest.mark.parametrize("n_values", [50, 54, 0])
def test_wrong_keypoint_length_is_refused(tmp_path, n_values):
    data = _coco(tmp_path)
    data["annotations"][0]["keypoints"] = [1.0] * n_values
    with pytest.raises(ValueError, match=rf"ann\.json.*annotation id 11.*{n_values} keypoint values, expected 51"):
        load_coco_keypoints(_write(tmp_path, data), tmp_path)


@pytest.mark.parametrize("field, value", [("area", NAN), ("width", NAN), ("height", 0), ("width", -5)])
def test_bad_area_or_image_size_is_refused(tmp_path, field, value):
    data = _coco(tmp_path)
    if field == "area":
        data["annotations"][0]["area"] = value
        match = r"ann\.json.*annotation id 11.*'area'"
    else:
        data["images"][0][field] = value
        match = rf"ann\.json.*image id 1.*'{field}'"
    with pytest.raises(ValueError, match=match):
        load_coco_keypoints(_write(tmp_path, data), tmp_path)


def test_mmpose_drops_are_counted_in_one_log_line(tmp_path, caplog):
    data = _coco(tmp_path)
    extra = copy.deepcopy(data["annotations"])
    for i, ann in enumerate(extra):
        ann["id"] = 100 + i
    extra[0]["iscrowd"] = 1  # crowd
    extra[1]["bbox"] = [70, 60, 10, 10]  # outside the 64x48 image: empty after clipping
    extra[2]["keypoints"] = [0.0] * 51  # no labelled keypoint
    extra[2]["num_keypoints"] = 0
    extra.append(dict(copy.deepcopy(data["annotations"][0]), id=104, bbox=[3, 3, 0.5, 10]))  # zero width after clipping
    data["annotations"] += extra
    with caplog.at_level(logging.INFO, logger="vitpose_hf.data.coco"):
        ds = load_coco_keypoints(_write(tmp_path, data), tmp_path)
    assert ds["annotation_id"] == [11, 12, 21]
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 1
    assert "kept 3 of 7" in lines[0]
    assert "1 (crowd)" in lines[0] and "2 (empty box after clipping to the image)" in lines[0]
    assert "1 (no labeled keypoint)" in lines[0]


def test_aic_and_crowdpose_converters_validate_too(tmp_path):
    data = _coco(tmp_path, k=14)
    data["categories"][0]["keypoints"] = list(get_schema("aic").keypoints)
    data["annotations"][0]["keypoints"][7] = NAN
    with pytest.raises(ValueError, match=r"aic\.json.*annotation id 11.*'keypoints'.*non-finite"):
        load_aic(_write(tmp_path, data, "aic.json"), tmp_path)
    data = _coco(tmp_path, k=14)
    data["categories"][0]["keypoints"] = list(get_schema("crowdpose").keypoints)
    data["annotations"][1]["id"] = 11
    with pytest.raises(ValueError, match=r"crowdpose\.json.*annotation id 11.*twice"):
        load_crowdpose(_write(tmp_path, data, "crowdpose.json"), tmp_path)


def _mpii_entry(**overrides) -> dict:
    entry = {"image": "a.jpg", "joints": [[10.0 + i, 20.0] for i in range(16)], "joints_vis": [1] * 16,
             "center": [30.0, 25.0], "scale": 0.2, "width": 64, "height": 48}  # fmt: skip
    entry.update(overrides)
    return entry


def test_mpii_converter_refuses_non_finite_values(tmp_path):
    Image.new("RGB", (64, 48)).save(tmp_path / "a.jpg")
    assert len(load_mpii(_write(tmp_path, [_mpii_entry()], "mpii.json"), tmp_path)) == 1
    joints = [[10.0 + i, 20.0] for i in range(16)]
    joints[3][1] = NAN
    cases = [
        (dict(joints=joints), r"'joints'.*non-finite"),  # before: a NaN keypoint row
        (dict(center=[NAN, 25.0]), r"'center'.*non-finite"),  # before: a NaN bbox row
        (dict(scale=INF), r"'scale'"),  # before: an infinite box
        (dict(joints=[[1.0, 2.0, 3.0]] * 16), r"'joints'.*\[x, y\]"),
    ]
    for overrides, match in cases:
        path = _write(tmp_path, [_mpii_entry(), _mpii_entry(**overrides)], "mpii.json")
        with pytest.raises(ValueError, match=rf"mpii\.json.*annotation id 1.*{match}"):
            load_mpii(path, tmp_path)
    # an invisible joint's coordinates are not used: a NaN there is harmless and zeroed
    vis = [1] * 16
    vis[3] = 0
    ds = load_mpii(_write(tmp_path, [_mpii_entry(joints=joints, joints_vis=vis)], "mpii.json"), tmp_path)
    assert all(math.isfinite(v) for v in ds[0]["keypoints"]) and ds[0]["keypoints"][9:12] == [0.0, 0.0, 0.0]


# ----------------------------------------------------------------------------- the shared box cleaning
def test_clean_coco_bbox_is_shared_by_loader_and_evaluation(tmp_path):
    """One function: the loader's rows and the evaluation's ground-truth boxes agree, and both refuse NaN."""
    assert clean_coco_bbox([-3, 2, 30, 60], 64, 48) == [0.0, 2.0, 29.0, 45.0]
    assert clean_coco_bbox([70, 2, 30, 60], 64, 48) is None
    assert clean_coco_bbox([5, 5, 0, 10], 64, 48) is None
    for bad in ([NAN, 1, 10, 10], [1, 1, INF, 10], [1, 1, 10, -1]):
        with pytest.raises(ValueError, match="bbox"):
            clean_coco_bbox(bad, 64, 48)
    data = _coco(tmp_path)
    data["annotations"][0]["bbox"] = [-3, 2, 30, 60]
    rows = load_coco_keypoints(_write(tmp_path, data), tmp_path)
    boxes = ground_truth_boxes(data)
    assert rows["bbox"] == boxes[1][0] + boxes[2][0]
    data["annotations"][2]["bbox"] = [NAN, 5, 40, 30]  # before: evaluated with the box [0, 5, 39, 29]
    with pytest.raises(ValueError, match=r"annotation id 21.*'bbox'.*non-finite"):
        ground_truth_boxes(data)
    with pytest.raises(ValueError, match=r"ann\.json.*annotation id 21.*'bbox'.*non-finite"):
        ground_truth_boxes(_write(tmp_path, data))


def _selections(tmp_path, data):
    """`(training rows' annotation ids and boxes, evaluation boxes in file order)` of one file."""
    rows = load_coco_keypoints(_write(tmp_path, data), tmp_path)
    boxes = ground_truth_boxes(copy.deepcopy(data))
    return (list(rows["annotation_id"]), [list(b) for b in rows["bbox"]]), [b for i in sorted(boxes) for b in boxes[i][0]]


def test_one_ground_truth_selection_for_training_and_evaluation(tmp_path, caplog):
    """Where the loader and `ground_truth_boxes` disagreed, both now take the stricter rule: the
    evaluation used to keep another category's annotation, skip a missing bbox / keypoints and a
    NaN area silently, read the string iscrowd "0" as a crowd, evaluate an image without width /
    height unclipped, ignore an unknown image id and log nothing; the loader kept an annotation
    whose keypoint values are all <= 0 (nothing labelled: an all-zero target)."""
    base = _coco(tmp_path)
    (ids, rows), evaluated = _selections(tmp_path, base)
    assert ids == [11, 12, 21] and evaluated == rows

    # another category: skipped by both (predictions on it would count as false positives for persons)
    data = copy.deepcopy(base)
    data["categories"].append({"id": 2, "name": "dog", "keypoints": []})
    data["annotations"][1]["category_id"] = 2
    (ids, rows), evaluated = _selections(tmp_path, data)
    assert ids == [11, 21] and evaluated == rows
    # every keypoint value <= 0: nothing labelled, skipped by both
    data = copy.deepcopy(base)
    data["annotations"][1]["keypoints"] = [-1.0, -1.0, 0.0] * 17
    del data["annotations"][1]["num_keypoints"]
    with caplog.at_level(logging.INFO, logger="vitpose_hf"):
        (ids, rows), evaluated = _selections(tmp_path, data)
    assert ids == [11, 21] and evaluated == rows
    assert "1 (no labeled keypoint)" in caplog.text and "2 ground-truth boxes of 3 annotations" in caplog.text

    refused = [
        ("annotations", 1, "bbox", None, r"annotation id 12 is missing field\(s\) \['bbox'\]"),
        ("annotations", 1, "keypoints", None, r"annotation id 12 is missing field\(s\) \['keypoints'\]"),
        ("annotations", 1, "area", NAN, r"annotation id 12: field 'area' holds a non-finite value"),
        ("annotations", 1, "iscrowd", "0", r"annotation id 12: field 'iscrowd' is '0', expected 0 or 1"),
        ("annotations", 1, "image_id", 7, r"annotation id 12 refers to unknown image_id 7"),
        ("images", 0, "width", None, r"image id 1 \(for annotation id 11\) lacks width/height"),
    ]
    for table, index, field, value, message in refused:
        data = copy.deepcopy(base)
        if value is None:
            del data[table][index][field]
        else:
            data[table][index][field] = value
        with pytest.raises(ValueError, match=message):
            load_coco_keypoints(_write(tmp_path, data), tmp_path)
        with pytest.raises(ValueError, match=message):
            ground_truth_boxes(copy.deepcopy(data))
    # the function itself: kept persons in file order, skip counts by reason
    from vitpose_hf.data.coco import select_ground_truth_boxes

    data = copy.deepcopy(base)
    data["annotations"][0]["iscrowd"] = 1
    images = {img["id"]: img for img in data["images"]}
    kept, skipped = select_ground_truth_boxes(data["annotations"], images, "f.json", num_keypoints=17)
    assert [p.annotation["id"] for p in kept] == [12, 21] and dict(skipped) == {"crowd": 1}
    assert kept[0].bbox == [30.0, 10.0, 29.0, 29.0] and kept[0].image is images[1]
    with pytest.raises(ValueError, match="f.json: annotation id 11: field 'keypoints' has 51 keypoint values, expected 42"):
        select_ground_truth_boxes(data["annotations"], images, "f.json", num_keypoints=14)


def test_one_duplicate_id_check_for_loader_and_evaluation(tmp_path):
    from vitpose_hf.evaluation import load_coco

    data = _coco(tmp_path)
    data["images"][1]["id"] = 1
    message = r"image id 1: field 'id' appears twice \(images #0 and #1, file_name 'a.jpg' and file_name 'b.jpg'\)"
    with pytest.raises(ValueError, match=message):
        load_coco_keypoints(_write(tmp_path, data), tmp_path)
    with pytest.raises(ValueError, match=message):
        load_coco(data)
    data = _coco(tmp_path)
    data["annotations"][1] = ["not", "a", "dict"]
    for load in (lambda: load_coco_keypoints(_write(tmp_path, data), tmp_path), lambda: load_coco(data)):
        with pytest.raises(ValueError, match=r"annotation #1 is a list, not a dict"):
            load()


# ----------------------------------------------------------------------------- B. evaluation
def _perfect(data):
    results = ground_truth_as_results(data)
    assert len(results) == 3
    return results


def test_evaluation_perfect_predictions_give_ap_one_and_duplicated_ids_are_refused(tmp_path):
    data = _coco(tmp_path)
    results = _perfect(data)
    metrics = coco_keypoint_eval(_write(tmp_path, data), results)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)

    dup = copy.deepcopy(data)
    dup["annotations"][1]["id"] = 11  # before: AP 0.442 for the same perfect predictions, no word
    path = _write(tmp_path, dup, "dup_ann.json")
    with pytest.raises(ValueError, match=r"dup_ann\.json.*annotation id 11.*twice"):
        coco_keypoint_eval(path, results)
    with pytest.raises(ValueError, match=r"annotation id 11.*twice"):
        coco_keypoint_eval(dup, results)  # a dict: named as such

    dup = copy.deepcopy(data)
    dup["images"].append({"id": 2, "file_name": "c.jpg", "width": 64, "height": 48})
    path = _write(tmp_path, dup, "dup_img.json")
    with pytest.raises(ValueError, match=r"dup_img\.json.*image id 2.*twice"):
        coco_keypoint_eval(path, results)


def test_evaluation_refuses_non_finite_ground_truth(tmp_path):
    data = _coco(tmp_path)
    results = _perfect(data)
    bad = copy.deepcopy(data)
    bad["annotations"][0]["keypoints"][0] = NAN
    with pytest.raises(ValueError, match=r"bad\.json.*annotation id 11.*'keypoints'.*non-finite"):
        coco_keypoint_eval(_write(tmp_path, bad, "bad.json"), results)
    bad = copy.deepcopy(data)
    bad["annotations"][2]["bbox"][3] = INF
    with pytest.raises(ValueError, match=r"bad\.json.*annotation id 21.*'bbox'.*non-finite"):
        coco_keypoint_eval(_write(tmp_path, bad, "bad.json"), results)


def test_evaluation_real_sample_duplicated_id(shared_data):
    """The issue's measurement: perfect predictions on coco_sample scored AP 0.835 with one id duplicated."""
    path = shared_data / "coco_sample" / "test_coco.json"
    data = json.loads(path.read_text())
    results = ground_truth_as_results(data)
    assert coco_keypoint_eval(path, results)["AP"] == pytest.approx(1.0)
    data["annotations"][1]["id"] = data["annotations"][0]["id"]
    with pytest.raises(ValueError, match=rf"annotation id {data['annotations'][0]['id']}.*twice"):
        coco_keypoint_eval(data, results)


def test_evaluation_ground_truth_without_ids_still_works(tmp_path):
    """Hand-made ground truth without annotation ids gets fresh ids that collide with none."""
    data = _coco(tmp_path)
    results = _perfect(data)
    del data["annotations"][0]["id"]
    data["annotations"][1]["id"] = 1  # the id a naive `index + 1` would give the first one
    assert coco_keypoint_eval(data, results)["AP"] == pytest.approx(1.0)
    assert np.isfinite(list(coco_keypoint_eval(data, results).values())).all()
