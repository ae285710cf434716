"""One home per concern (issue 15): a value or a rule written once, used everywhere. Each test
names the concern and fails when a second copy appears or the users stop sharing the one."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from vitpose_hf import VitPoseConfig, VitPoseTopDownImageProcessor
from vitpose_hf.configuration_vitpose import COCO_KEYPOINT_NAMES, PRESETS
from vitpose_hf.data import IMAGENET_MEAN, IMAGENET_STD
from vitpose_hf.keypoint_schemas import COCO, COCO_WHOLEBODY, OCHUMAN

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "src" / "vitpose_hf").rglob("*.py")) + sorted((ROOT / "examples").glob("*.py"))


def _files_matching(pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return [str(p.relative_to(ROOT)) for p in SOURCES if regex.search(p.read_text(encoding="utf-8"))]


def test_the_normalisation_constants_are_transformers_own():
    assert VitPoseTopDownImageProcessor().image_mean == list(IMAGENET_DEFAULT_MEAN)
    assert VitPoseTopDownImageProcessor().image_std == list(IMAGENET_DEFAULT_STD)
    assert IMAGENET_MEAN == tuple(IMAGENET_DEFAULT_MEAN) and IMAGENET_STD == tuple(IMAGENET_DEFAULT_STD)
    assert _files_matching(r"0\.485|0\.229") == []  # nobody types them again


def test_the_coco_keypoint_names_are_written_once():
    assert COCO_KEYPOINT_NAMES is COCO.keypoints and OCHUMAN.keypoints is COCO.keypoints
    assert COCO_WHOLEBODY.keypoints[:17] == COCO.keypoints
    assert _files_matching(r'"right_knee", "left_ankle", "right_ankle"') == ["src/vitpose_hf/keypoint_schemas.py"]


def test_the_mae_example_sizes_its_encoders_with_the_presets():
    spec = importlib.util.spec_from_file_location("run_mae_example", ROOT / "examples" / "run_mae.py")
    run_mae = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_mae)
    for size in PRESETS:
        config = run_mae.build_config(run_mae.parse_args(["--model_size", size, "--output_dir", "unused"]))
        preset = VitPoseConfig.from_preset(size)
        assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
            preset.hidden_size, preset.num_hidden_layers, preset.num_attention_heads)


def test_one_joints_mse_loss_serves_the_model_and_both_trainers(tmp_path):
    """Before: the model, VitPoseTrainer and DistillationTrainer computed it in two functions, and
    DistillationTrainer raised on a padded mixed-dataset batch (and ran the model's loss for nothing)."""
    import torch
    from conftest import TINY_PLUS, tiny_config_kwargs
    from transformers import TrainingArguments

    from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation, losses, modeling_vitpose
    from vitpose_hf.distillation import DistillationTrainer
    from vitpose_hf.training.trainer import VitPoseTrainer, batch_keypoint_counts

    assert modeling_vitpose.joints_mse_loss is losses.joints_mse_loss
    assert _files_matching(r"def joints_mse_loss|def heatmap_distillation_loss") == ["src/vitpose_hf/losses.py"]

    torch.manual_seed(0)
    config = tiny_config_kwargs(**TINY_PLUS)
    student = VitPoseForPoseEstimation(VitPoseConfig(**config)).train()
    teacher = VitPoseForPoseEstimation(VitPoseConfig(**config)).eval()
    pixels = torch.rand(3, 3, 64, 48)
    index = torch.tensor([0, 1, 2])  # heads of 17, 14 and 16 keypoints in one batch
    h, w = student(pixels[:1]).heatmaps.shape[2:]
    labels = torch.rand(3, 17, h, w)
    weight = torch.ones(3, 17)
    for row, k in ((1, 14), (2, 16)):
        labels[row, k:] = 0
        weight[row, k:] = 0
    inputs = {"pixel_values": pixels, "dataset_index": index, "labels": labels, "target_weight": weight}
    counts = batch_keypoint_counts(student, index)
    assert counts.tolist() == [17, 14, 16]

    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    with torch.no_grad():
        heat = student(pixel_values=pixels, dataset_index=index).heatmaps
        teacher_heat = teacher(pixel_values=pixels, dataset_index=index).heatmaps
        own = [((heat[b, :k] - labels[b, :k]) ** 2).mean() for b, k in enumerate((17, 14, 16))]
        distilled = [((heat[b, :k] - teacher_heat[b, :k]) ** 2).mean() for b, k in enumerate((17, 14, 16))]
        expected_gt = torch.stack(own).mean()
        expected_distill = torch.stack(distilled).mean()
        pose_trainer = VitPoseTrainer(model=student, args=args)
        torch.testing.assert_close(pose_trainer.compute_loss(student, inputs), expected_gt, rtol=1e-6, atol=0)
        distill_trainer = DistillationTrainer(model=student, args=args, teacher_model=teacher, alpha=0.5)
        torch.testing.assert_close(distill_trainer.compute_loss(student, inputs), expected_gt + 0.5 * expected_distill,
                                   rtol=1e-6, atol=0)
    # one head, all samples 17 keypoints: the per-sample mean equals the model's own loss within 1e-6
    single = {"pixel_values": pixels, "labels": labels[:, :17].clone(), "target_weight": torch.ones(3, 17)}
    with torch.no_grad():
        own_loss = student(**single).loss
        merged = losses.joints_mse_loss(student(pixels).heatmaps, single["labels"], single["target_weight"], [17, 17, 17])
    torch.testing.assert_close(merged, own_loss, rtol=1e-6, atol=0)


def test_checkpoints_of_other_layouts_are_read_and_named_in_one_place():
    # one safe reader, one fused-qkv split, one table of the ViT's names (the converter, the MAE loader
    # and --backbone_init all go through vitpose_hf.checkpoint_keys)
    home = ["src/vitpose_hf/checkpoint_keys.py"]
    assert _files_matching(r"= torch\.load\(") == home
    assert _files_matching(r"\.chunk\(3\b") == home
    assert _files_matching(r'"norm1\.') == home
    for user in ("convert_vitpose_to_hf.py", "modeling_vitpose_mae.py", "training/build.py"):
        text = (ROOT / "src" / "vitpose_hf" / user).read_text(encoding="utf-8")
        assert re.search(r"^from \.+checkpoint_keys import", text, re.M), user


def test_the_model_does_not_reach_back_into_the_converter():
    from vitpose_hf import convert_vitpose_to_hf, modeling_vitpose

    assert "convert_vitpose_to_hf" not in (ROOT / "src" / "vitpose_hf" / "modeling_vitpose.py").read_text(encoding="utf-8")
    assert convert_vitpose_to_hf.export_to_transformers is modeling_vitpose.export_to_transformers


def test_images_are_decoded_in_one_place():
    """Before: the processor / pipeline, the detectors and drawing, and training each had a decoder
    with its own rules for alpha, 16-bit data and EXIF (see test_image_io.py)."""
    from vitpose_hf import detectors, image_io, image_processing_vitpose
    from vitpose_hf.data import augmentation

    assert _files_matching(r"cv2\.imread|cv2\.imdecode|Image\.open\(|exif_transpose") == ["src/vitpose_hf/image_io.py"]
    assert image_processing_vitpose.to_rgb_tensor is image_io.to_rgb_tensor
    assert augmentation.load_image is augmentation.decode_image_entry is image_io.to_rgb_tensor
    assert detectors.load_rgb_image is image_io.to_rgb_pil


def test_ground_truth_boxes_are_selected_and_ids_checked_in_one_place():
    """Before: the loader and the evaluation each selected ground-truth boxes (differently) and each
    checked duplicated ids (see test_reliability_data.py::test_one_ground_truth_selection_...)."""
    assert _files_matching(r"field 'id' appears twice") == ["src/vitpose_hf/data/coco.py"]
    assert _files_matching(r"clean_coco_bbox\(") == ["src/vitpose_hf/data/coco.py"]
    # the training run's predictions picture draws the boxes the evaluation crops, not raw annotation bboxes
    outputs = (ROOT / "src" / "vitpose_hf" / "training" / "outputs.py").read_text(encoding="utf-8")
    assert "ground_truth_boxes(" in outputs and "iscrowd" not in outputs and '["bbox"]' not in outputs
