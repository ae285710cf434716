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
