"""Hub-native checkpoints: loading with and without vitpose_hf, transformers' own checkpoints left
to transformers, the processor's own name (and the migration of folders saved under the old one),
forward keyword checking and the cards of converted folders."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import tiny_config_kwargs
from test_mae import mae_model

import vitpose_hf
from vitpose_hf import (
    VitPoseConfig,
    VitPoseForMaskedImageModeling,
    VitPoseForPoseEstimation,
    VitPoseImageProcessor,
    VitPoseTopDownImageProcessor,
)
from vitpose_hf.saved_code import STAMP_PREFIX

FIXTURES = Path(__file__).parent / "fixtures"

# what a process without vitpose_hf runs first: every import of the package fails, as if it were
# not installed (it is, editable, in the test venv)
BLOCK_VITPOSE_HF = textwrap.dedent(
    """
    import importlib.abc, sys

    class _NoVitPoseHf(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "vitpose_hf" or name.startswith("vitpose_hf."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, _NoVitPoseHf())
    """
)

# ViTPose++ (MoE experts + a second dataset head) with windowed attention: the most code paths
PLUS_WINDOW = dict(
    num_experts=2, part_features=8, dataset_heads=[{"dataset_index": 1, "num_labels": 14}],
    attention_type=["window", "global"], window_size=(4, 3),
)  # fmt: skip


def _run_without_vitpose_hf(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "without_vitpose_hf.py"
    script.write_text(BLOCK_VITPOSE_HF + textwrap.dedent(code))
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "hf_modules"), HF_HUB_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, stdin=subprocess.DEVNULL)


def _peaked_image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((90, 70, 3)) * 255).astype(np.uint8)


@pytest.fixture
def saved(tmp_path):
    """A ViTPose++ checkpoint folder (model + processor) and an MAE one, saved by this version."""
    pose = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(**PLUS_WINDOW))).eval()
    pose.save_pretrained(tmp_path / "pose")
    processor = VitPoseTopDownImageProcessor.for_config(pose.config, padding=1.3)
    processor.save_pretrained(tmp_path / "pose")
    mae = mae_model()
    mae.save_pretrained(tmp_path / "mae")
    return tmp_path, pose, processor, mae


def test_a_saved_folder_loads_with_trust_remote_code_where_vitpose_hf_is_missing(saved):
    tmp_path, pose, processor, mae = saved
    image = _peaked_image()
    boxes = [[[5.0, 6.0, 40.0, 70.0], [20.0, 10.0, 30.0, 50.0]]]
    index = torch.tensor([0, 1])
    inputs = processor(image, boxes=boxes)
    noise = torch.rand(2, 8 * 6, generator=torch.Generator().manual_seed(1))
    mae_pixels = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        heatmaps = pose(inputs["pixel_values"], dataset_index=index).heatmaps
        features = pose.backbone(inputs["pixel_values"], dataset_index=index).feature_map
        reconstruction = mae(mae_pixels, noise=noise).reconstruction
    keypoints = processor.post_process_pose_estimation(heatmaps[:1], boxes=[boxes[0][:1]])[0][0]["keypoints"]
    np.save(tmp_path / "image.npy", image)
    torch.save({"noise": noise, "mae_pixels": mae_pixels}, tmp_path / "inputs.pt")

    result = _run_without_vitpose_hf(
        f"""
        import json, numpy as np, torch
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForMaskedImageModeling
        from transformers import AutoModelForPoseEstimation
        try:
            import vitpose_hf
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("vitpose_hf was importable")
        try:
            AutoModelForPoseEstimation.from_pretrained("pose")
        except ValueError as err:
            no_trust = str(err)
        else:
            raise SystemExit("loaded without trust_remote_code")
        config = AutoConfig.from_pretrained("pose", trust_remote_code=True)
        model = AutoModelForPoseEstimation.from_pretrained("pose", trust_remote_code=True).eval()
        backbone = AutoModel.from_pretrained("pose", trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained("pose", trust_remote_code=True)
        mae = AutoModelForMaskedImageModeling.from_pretrained("mae", trust_remote_code=True).eval()
        given = torch.load("inputs.pt")
        inputs = processor(np.load("image.npy"), boxes={boxes!r})
        index = torch.tensor([0, 1])
        with torch.no_grad():
            heatmaps = model(inputs["pixel_values"], dataset_index=index).heatmaps
            features = backbone(inputs["pixel_values"], dataset_index=index).feature_map
            reconstruction = mae(given["mae_pixels"], noise=given["noise"]).reconstruction
        keypoints = processor.post_process_pose_estimation(heatmaps[:1], boxes=[{boxes[0][:1]!r}])[0][0]["keypoints"]
        torch.save({{"pixel_values": inputs["pixel_values"], "heatmaps": heatmaps, "features": features,
                    "reconstruction": reconstruction, "keypoints": keypoints}}, "remote.pt")
        print("RESULT", json.dumps({{"no_trust": no_trust, "padding": processor.padding,
                          "classes": [type(o).__module__ + "." + type(o).__name__
                                      for o in (config, model, backbone, processor, mae)]}}))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert "trust_remote_code=True" in report["no_trust"]
    assert all(name.startswith("transformers_modules.") for name in report["classes"]), report["classes"]
    assert [name.rsplit(".", 1)[1] for name in report["classes"]] == [
        "VitPoseConfig", "VitPoseForPoseEstimation", "VitPoseModel", "VitPoseTopDownImageProcessor",
        "VitPoseForMaskedImageModeling",
    ]
    assert report["padding"] == 1.3
    remote = torch.load(tmp_path / "remote.pt")
    assert torch.equal(remote["pixel_values"], inputs["pixel_values"])
    assert torch.equal(remote["heatmaps"], heatmaps)
    assert torch.equal(remote["features"], features)
    assert torch.equal(remote["reconstruction"], reconstruction)
    assert torch.equal(remote["keypoints"], keypoints)


def test_the_saved_code_is_stamped_and_imports_only_what_transformers_needs(saved):
    from transformers.dynamic_module_utils import get_imports

    tmp_path, *_ = saved
    folder = tmp_path / "pose"
    copied = sorted(p.name for p in folder.glob("*.py"))
    assert copied == sorted([
        "attention.py", "configuration_vitpose.py", "geometry.py", "heatmaps.py", "image_io.py",
        "image_processing_vitpose.py", "keypoint_schemas.py", "losses.py", "modeling_vitpose.py",
        "saved_code.py", "version.py", "window_attention.py",
    ])  # fmt: skip
    # the MAE model's code: the pose model's, its own module and the checkpoint key table (never the converter)
    mae_copied = sorted(p.name for p in (tmp_path / "mae").glob("*.py"))
    assert mae_copied == sorted([
        "attention.py", "checkpoint_keys.py", "configuration_vitpose.py", "heatmaps.py", "keypoint_schemas.py",
        "losses.py", "modeling_vitpose.py", "modeling_vitpose_mae.py", "saved_code.py", "version.py",
        "window_attention.py",
    ])  # fmt: skip
    # transformers and what it installs itself (numpy, safetensors, huggingface_hub)
    allowed = {"torch", "numpy", "transformers", "safetensors", "huggingface_hub"} | set(sys.stdlib_module_names)
    for path in [folder / name for name in copied] + [tmp_path / "mae" / name for name in mae_copied]:
        text = path.read_text()
        assert text.startswith(f"{STAMP_PREFIX}{vitpose_hf.__version__} "), path
        assert set(get_imports(path)) <= allowed, (path, set(get_imports(path)) - allowed)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_vitpose.VitPoseConfig",
        "AutoModel": "modeling_vitpose.VitPoseModel",
        "AutoModelForPoseEstimation": "modeling_vitpose.VitPoseForPoseEstimation",
    }
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "VitPoseTopDownImageProcessor"
    assert processor["auto_map"] == {"AutoImageProcessor": "image_processing_vitpose.VitPoseTopDownImageProcessor"}
    mae_map = json.loads((tmp_path / "mae" / "config.json").read_text())["auto_map"]
    assert mae_map["AutoModelForMaskedImageModeling"] == "modeling_vitpose_mae.VitPoseForMaskedImageModeling"
    # saving twice stamps once; saving does not leave auto_map on the caller's config
    VitPoseForPoseEstimation.from_pretrained(folder).save_pretrained(folder)
    assert (folder / "modeling_vitpose.py").read_text().count(STAMP_PREFIX) == 1


def test_the_installed_package_takes_precedence_over_the_saved_code(saved):
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForMaskedImageModeling
    from transformers import AutoModelForPoseEstimation

    tmp_path, pose, *_ = saved
    assert "auto_map" not in pose.config.__dict__  # the save added it to the file only
    assert type(AutoConfig.from_pretrained(tmp_path / "pose")) is VitPoseConfig
    assert type(AutoModelForPoseEstimation.from_pretrained(tmp_path / "pose")) is VitPoseForPoseEstimation
    assert type(AutoModel.from_pretrained(tmp_path / "pose")) is vitpose_hf.VitPoseModel
    assert type(AutoImageProcessor.from_pretrained(tmp_path / "pose")) is VitPoseTopDownImageProcessor
    assert type(AutoModelForMaskedImageModeling.from_pretrained(tmp_path / "mae")) is VitPoseForMaskedImageModeling
    pipe = transformers.pipeline("keypoint-detection", model=str(tmp_path / "pose"), device="cpu")
    assert type(pipe.model) is VitPoseForPoseEstimation and type(pipe.image_processor) is VitPoseTopDownImageProcessor
    assert pipe.image_processor.padding == 1.3


def _transformers_checkpoint(folder: Path) -> transformers.VitPoseForPoseEstimation:
    backbone = transformers.VitPoseBackboneConfig(
        image_size=[64, 48], patch_size=[8, 8], hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        out_indices=[2], layer_norm_eps=1e-6,
    )  # fmt: skip
    model = transformers.VitPoseForPoseEstimation(transformers.VitPoseConfig(backbone_config=backbone, num_labels=17))
    model.save_pretrained(folder)
    transformers.VitPoseImageProcessor(size={"height": 64, "width": 48}).save_pretrained(folder)
    return model.eval()


def test_transformers_checkpoints_resolve_to_transformers_classes_after_import(tmp_path, caplog):
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForPoseEstimation

    reference = _transformers_checkpoint(tmp_path)
    assert "vitpose_hf" in sys.modules
    assert type(AutoConfig.from_pretrained(tmp_path)) is transformers.VitPoseConfig
    assert type(AutoModelForPoseEstimation.from_pretrained(tmp_path)) is transformers.VitPoseForPoseEstimation
    auto_processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(auto_processor).__module__.startswith("transformers."), type(auto_processor)
    assert type(auto_processor).__name__.startswith("VitPoseImageProcessor")

    # ours reads the same folder explicitly, saying so once
    with caplog.at_level(logging.INFO, logger="vitpose_hf"):
        ours = VitPoseForPoseEstimation.from_pretrained(tmp_path).eval()
    said = [r for r in caplog.records if "is a transformers VitPose checkpoint" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    pixels = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels).heatmaps, reference(pixels).heatmaps, atol=1e-5, rtol=1e-5)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vitpose_hf"):
        pipe = transformers.pipeline("keypoint-detection", model=str(tmp_path), device="cpu")
    assert type(pipe.model) is VitPoseForPoseEstimation and type(pipe.image_processor) is VitPoseTopDownImageProcessor
    said = [r for r in caplog.records if "is a transformers VitPose checkpoint" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]


def test_a_folder_saved_under_the_old_processor_name_loads_our_processor(tmp_path):
    """tests/fixtures/checkpoint_v0_1_0 holds config.json and preprocessor_config.json exactly as
    vitpose_hf 0.1.0 wrote them (image_processor_type "VitPoseImageProcessor", padding 1.3)."""
    folder = tmp_path / "old"
    shutil.copytree(FIXTURES / "checkpoint_v0_1_0", folder)
    assert json.loads((folder / "preprocessor_config.json").read_text())["image_processor_type"] == "VitPoseImageProcessor"
    model = VitPoseForPoseEstimation(VitPoseConfig.from_pretrained(folder))
    model.save_pretrained(tmp_path / "weights")
    shutil.copy(tmp_path / "weights" / "model.safetensors", folder / "model.safetensors")

    for loaded in (VitPoseTopDownImageProcessor.from_pretrained(folder), VitPoseImageProcessor.from_pretrained(folder)):
        assert type(loaded) is VitPoseTopDownImageProcessor and loaded.padding == 1.3
    pipe = transformers.pipeline("keypoint-detection", model=str(folder), device="cpu")
    assert type(pipe.image_processor) is VitPoseTopDownImageProcessor and pipe.image_processor.padding == 1.3
    # the CLI reads it with our class too
    from vitpose_hf.cli import main

    image = tmp_path / "person.png"
    from PIL import Image

    Image.fromarray(_peaked_image()).save(image)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"person.png": [[5, 6, 40, 70]]}))
    out = tmp_path / "out.json"
    assert main(["predict", str(image), "--model", str(folder), "--boxes", str(boxes), "--output", str(out)]) == 0
    assert len(json.loads(out.read_text())["images"][0]["persons"]) == 1
    # saved again, it carries the new name
    pipe.image_processor.save_pretrained(tmp_path / "resaved")
    assert json.loads((tmp_path / "resaved" / "preprocessor_config.json").read_text())["image_processor_type"] == (
        "VitPoseTopDownImageProcessor"
    )


def test_misspelled_forward_arguments_are_refused_and_metadata_keys_accepted():
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs())).eval()
    pixels = torch.randn(2, 3, 64, 48)
    with pytest.raises(TypeError, match=r"'flip_pair' \(did you mean 'flip_pairs'\?\)"):
        model(pixels, flip_pair=torch.tensor([[1, 2]]))
    with pytest.raises(TypeError, match="'dataset_idx'"):
        model.backbone(pixels, dataset_idx=0)
    mae = mae_model()
    with pytest.raises(TypeError, match=r"'mask_ration' \(did you mean 'mask_ratio'\?\)"):
        mae(pixels, mask_ration=0.5)
    metadata = dict(center=torch.zeros(2, 2), scale=torch.ones(2, 2), bbox=torch.zeros(2, 4),
                    bbox_score=torch.ones(2), image_id=torch.tensor([1, 2]))
    with torch.no_grad():
        assert torch.equal(model(pixels, **metadata).heatmaps, model(pixels).heatmaps)
        # the processor's outputs go in as they are
        inputs = VitPoseTopDownImageProcessor.for_config(model.config)(_peaked_image(), boxes=[[[5, 6, 40, 70]]])
        assert set(inputs) == {"pixel_values", "center", "scale", "box_counts"}
        assert torch.equal(model(**inputs).heatmaps, model(inputs["pixel_values"]).heatmaps)


def test_convert_to_transformers_writes_a_transformers_card_whose_snippet_runs_without_vitpose_hf(tmp_path):
    import re

    from test_convert import _random_model, _to_official

    from vitpose_hf.convert_vitpose_to_hf import main

    path = tmp_path / "vitpose_tiny.pth"
    # the simple decoder: transformers' classic head has a fixed width our tiny one lacks
    torch.save({"state_dict": _to_official(_random_model(use_simple_decoder=True)), "meta": {}}, path)
    out = tmp_path / "converted"
    assert main(["--checkpoint", str(path), "--output", str(out), "--num-attention-heads", "4", "--to-transformers"]) == 0
    text = (out / "README.md").read_text()
    assert "library_name: transformers" in text and "pipeline_tag: keypoint-detection" in text
    assert not list(out.glob("*.py"))  # transformers' own format: no code of ours
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1).replace("path/to/this/folder", str(out))
    result = _run_without_vitpose_hf(code + "\nassert len(people[0][0]['keypoints']) == 17\n", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_with_vitpose_hf_installed_no_loader_asks_to_run_the_folders_code(saved, monkeypatch, capsys):
    """Before: transformers 5.25's pipeline() also looked for a video processor, derived
    `VitPoseTopDownVideoProcessor` from the processor's auto_map and asked "Do you wish to run the
    custom code? [y/N]" (a terminal user was prompted on every `vitpose-hf predict`)."""
    folder = saved[0] / "pose"
    monkeypatch.setattr("builtins.input", lambda *args: pytest.fail(f"asked to trust the folder's code: {args}"))
    pipe = transformers.pipeline("keypoint-detection", model=str(folder))
    assert isinstance(pipe.model, VitPoseForPoseEstimation) and pipe.image_processor.padding == pytest.approx(1.3)
    assert isinstance(transformers.AutoModelForPoseEstimation.from_pretrained(folder), VitPoseForPoseEstimation)
    assert isinstance(transformers.AutoImageProcessor.from_pretrained(folder), VitPoseTopDownImageProcessor)
    assert isinstance(transformers.AutoProcessor.from_pretrained(folder), VitPoseTopDownImageProcessor)
    assert "custom code" not in capsys.readouterr().out
