"""Datasets, train-time augmentation, target heatmaps, collation, a synthetic dataset and synthetic
tracking videos.

Typical use::

    from vitpose_hf.data import load_coco_keypoints, TopDownTransform, PoseDataCollator
    ds = load_coco_keypoints("person_keypoints_train2017.json", "train2017/")
    train = ds.with_transform(TopDownTransform("coco", image_size=(256, 192), seed=0))
    # Trainer(..., train_dataset=train, data_collator=PoseDataCollator(),
    #         args=TrainingArguments(..., remove_unused_columns=False))
"""

from .augmentation import IMAGENET_MEAN, IMAGENET_STD, TopDownTransform, load_image
from .coco import PERSON_FEATURES, clean_coco_bbox, load_coco_keypoints, schema_from_category, select_ground_truth_boxes
from .collator import PoseDataCollator
from .synthetic import load_synthetic_dataset, make_synthetic_coco, render_synthetic_image
from .synthetic_video import SyntheticVideoFrame, iter_synthetic_video, video_difficulty, write_synthetic_video
from .converters import load_aic, load_crowdpose, load_keypoint_dataset, load_mpii
from .targets import generate_heatmaps, generate_msra_heatmaps, generate_udp_heatmaps

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PERSON_FEATURES",
    "PoseDataCollator",
    "SyntheticVideoFrame",
    "TopDownTransform",
    "clean_coco_bbox",
    "generate_heatmaps",
    "generate_msra_heatmaps",
    "generate_udp_heatmaps",
    "iter_synthetic_video",
    "load_aic",
    "load_coco_keypoints",
    "load_crowdpose",
    "load_image",
    "load_keypoint_dataset",
    "load_mpii",
    "load_synthetic_dataset",
    "make_synthetic_coco",
    "render_synthetic_image",
    "schema_from_category",
    "select_ground_truth_boxes",
    "video_difficulty",
    "write_synthetic_video",
]
