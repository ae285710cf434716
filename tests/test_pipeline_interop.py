"""The pipeline in the HF conventions (issue 14): non-pose models refused when the pipeline is built,
the object-detection-style person format that the library's own tools accept, datasets streaming."""

from __future__ import annotations

import numpy as np
import pytest
import transformers
from test_pipeline import BOXES, images, pipe, tiny_dir  # noqa: F401  (fixtures)

from vitpose_hf.evaluation import persons_to_coco_results
from vitpose_hf.pipeline_keypoint_detection import TASK
from vitpose_hf.visualization import draw_keypoints


def test_a_model_that_is_not_a_pose_estimator_is_refused_when_the_pipeline_is_built(tmp_path):
    superpoint = transformers.SuperPointForKeypointDetection(transformers.SuperPointConfig())
    with pytest.raises(ValueError, match="top-down pose estimators.*SuperPointForKeypointDetection.*'superpoint'"):
        transformers.pipeline(TASK, model=superpoint)
    superpoint.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="top-down pose estimators"):
        transformers.pipeline(TASK, model=str(tmp_path))


def test_persons_carry_box_and_label_and_feed_the_coco_and_drawing_tools(pipe, images):  # noqa: F811
    persons = pipe(images[0], boxes=BOXES[0])
    for person, (x, y, w, h) in zip(persons, BOXES[0]):
        assert person["label"] == "person"
        assert person["box"] == pytest.approx({"xmin": x, "ymin": y, "xmax": x + w, "ymax": y + h})
        assert person["bbox"] == pytest.approx([x, y, w, h])
    results = persons_to_coco_results([persons], image_ids=[7])
    assert [r["image_id"] for r in results] == [7, 7]
    for result, person in zip(results, persons):
        flat = [v for k in person["keypoints"] for v in (k["x"], k["y"], k["score"])]
        assert result["keypoints"] == pytest.approx(flat) and result["score"] == pytest.approx(person["score"])
    with pytest.raises(ValueError, match="has no 'image_id'"):
        persons_to_coco_results(persons)
    drawn = np.asarray(draw_keypoints(images[0], persons))
    assert drawn.shape == np.asarray(images[0]).shape and (drawn != np.asarray(images[0])).any()


def test_a_datasets_dataset_and_a_key_dataset_stream(pipe, images):  # noqa: F811
    datasets = pytest.importorskip("datasets")
    from transformers.pipelines.pt_utils import KeyDataset

    reference = [pipe(image, boxes=boxes) for image, boxes in zip(images, BOXES)]
    table = datasets.Dataset.from_dict({"image": images, "boxes": BOXES}).cast_column("image", datasets.Image())
    streamed = pipe(table)
    assert not isinstance(streamed, list)  # an iterator, as transformers' vision pipelines give
    got = list(streamed)
    assert [len(r) for r in got] == [2, 1, 3]
    for mine, ref in zip(got, reference):
        for a, b in zip(mine, ref):
            assert [k["x"] for k in a["keypoints"]] == pytest.approx([k["x"] for k in b["keypoints"]], abs=1e-3)
    # batch_size on a stream: chunks share forward passes, still one result per row, same values
    chunked = list(pipe(table, batch_size=2))
    assert [len(r) for r in chunked] == [2, 1, 3]
    for mine, ref in zip(chunked, reference):
        for a, b in zip(mine, ref):
            assert [k["x"] for k in a["keypoints"]] == pytest.approx([k["x"] for k in b["keypoints"]], abs=1e-3)
    # KeyDataset: images only; in whole-image mode each image is one person
    whole = list(pipe(KeyDataset(table, "image"), whole_image=True))
    assert [len(r) for r in whole] == [1, 1, 1]
    assert whole[0][0]["bbox"] == pytest.approx([0.0, 0.0, images[0].width, images[0].height])


def test_whole_image_mode_warns_once_per_pipeline(tiny_dir, images, caplog):  # noqa: F811
    import logging

    pipe = transformers.pipeline(TASK, model=str(tiny_dir), device="cpu")  # a fresh pipeline: its own warning
    with caplog.at_level(logging.WARNING, logger="vitpose_hf"):
        first = pipe(images[0], whole_image=True)
        pipe(images[1], whole_image=True)
        pipe(images[0], boxes=BOXES[0])
    warned = [r for r in caplog.records if "whole_image=True" in r.getMessage()]
    assert len(warned) == 1 and "ONE person" in warned[0].getMessage()
    assert len(first) == 1 and first[0]["bbox"] == pytest.approx([0, 0, images[0].width, images[0].height])
