"""One answer to "which head and which schema serve this dataset_index" (issue 15): the model, the
pipeline, the processor's flip test, the evaluation and the onnxruntime backend all use
`keypoint_schemas.head_spec` / `resolve_schema`, and None always means the main head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_PLUS, tiny_config_kwargs

from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation, VitPoseTopDownImageProcessor
from vitpose_hf.evaluation.topdown import _head_num_keypoints
from vitpose_hf.heatmaps import predict_heatmaps
from vitpose_hf.keypoint_schemas import AIC, AP10K, COCO, MPII, OCHUMAN, head_num_keypoints, resolve_schema
from vitpose_hf.pipeline_keypoint_detection import KeypointDetectionPipeline
from vitpose_hf.training.trainer import batch_keypoint_counts

# what `vitpose-hf train --datasets aic:...,coco:...` builds: the main head is AIC (index 1)
AIC_FIRST = dict(
    num_labels=14, id2label=AIC.id2label(), main_dataset_index=1, keypoint_schema="aic",
    dataset_heads=[{"dataset_index": 0, "num_labels": 17, "name": "coco", "id2label": COCO.id2label()}],
)


def _aic_first_model():
    return VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(**AIC_FIRST))).eval()


def test_none_runs_the_main_head_when_it_is_not_index_0():
    model = _aic_first_model()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        default = model(x).heatmaps
        main = model(x, dataset_index=1).heatmaps
        other = model(x, dataset_index=0).heatmaps
    assert default.shape[1] == 14 and other.shape[1] == 17
    torch.testing.assert_close(default, main, rtol=0, atol=0)
    assert model.num_keypoints_for() == 14 == model.num_keypoints_for(1)


def test_the_pipeline_labels_and_flips_the_head_it_runs():
    model = _aic_first_model()
    pipe = KeypointDetectionPipeline(model=model, image_processor=VitPoseTopDownImageProcessor.for_config(model.config))
    image = (np.random.default_rng(0).random((120, 90, 3)) * 255).astype(np.uint8)
    boxes = [[10.0, 12.0, 60.0, 90.0]]
    default = pipe(image, boxes=boxes)
    explicit = pipe(image, boxes=boxes, dataset_index=1)
    assert [k["label"] for k in default[0]["keypoints"]] == list(AIC.keypoints)
    for a, b in zip(default[0]["keypoints"], explicit[0]["keypoints"]):
        assert (a["x"], a["y"], a["score"]) == (b["x"], b["y"], b["score"])
    coco = pipe(image, boxes=boxes, dataset_index=0)
    assert [k["label"] for k in coco[0]["keypoints"]] == list(COCO.keypoints)


def test_every_reader_counts_the_same_keypoints_per_index():
    model = _aic_first_model()
    for index in (None, 0, 1, 2):
        k = head_num_keypoints(model.config, index)
        assert k == (17 if index == 0 else 14)
        assert model.num_keypoints_for(index) == k
        assert _head_num_keypoints(model, index) == k
    counts = batch_keypoint_counts(model, torch.tensor([1, 0, 0, 1]))
    assert counts.tolist() == [14, 17, 17, 14]


def test_the_rule_order():
    plus = VitPoseConfig(**tiny_config_kwargs(**TINY_PLUS))
    assert resolve_schema(plus) is COCO
    assert resolve_schema(plus, 1) is AIC and resolve_schema(plus, 2) is MPII
    assert resolve_schema(plus, 3) is AP10K  # an expert index without a head of its own
    # the stated schema wins over names it shares with another schema
    assert resolve_schema(VitPoseConfig(**tiny_config_kwargs(keypoint_schema="ochuman"))) is OCHUMAN
    with pytest.raises(ValueError, match="'mpii' has 16 keypoints, the model's main head has 17"):
        resolve_schema(plus, None, "mpii")


def test_transformers_own_config_resolves_to_coco():
    from transformers import VitPoseConfig as TransformersVitPoseConfig

    config = TransformersVitPoseConfig(num_labels=17)
    assert head_num_keypoints(config) == 17 and resolve_schema(config) is COCO


def test_a_custom_trained_head_gets_its_own_names_and_flip_pairs():
    names = ["nose", "left_paw", "right_paw", "tail"]
    config = VitPoseConfig(**tiny_config_kwargs(
        num_labels=4, id2label=dict(enumerate(names)), keypoint_schema="dog", edges=[[0, 1], [0, 2], [0, 3]],
    ))
    schema = resolve_schema(config)
    assert schema.name == "dog" and schema.keypoints == tuple(names)
    assert schema.flip_pairs == ((1, 2),) and schema.skeleton == ((0, 1), (0, 2), (0, 3))
    # the processor's flip test used to look "dog" up as a known schema and raise
    model = VitPoseForPoseEstimation(config).eval()
    x = torch.randn(2, 3, 64, 48)
    auto = predict_heatmaps(model, x, flip_test=True)
    explicit = predict_heatmaps(model, x, flip_test=True, flip_pairs=[[1, 2]])
    torch.testing.assert_close(auto, explicit, rtol=0, atol=0)


def test_generic_names_do_not_make_a_custom_schema():
    config = VitPoseConfig(**tiny_config_kwargs(num_labels=5))
    schema = resolve_schema(config)
    assert schema.num_keypoints == 5 and schema.flip_pairs == ()
