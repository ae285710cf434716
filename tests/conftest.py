"""Shared pytest fixtures: tiny model configs, the ../shared data folder, the --runslow switch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VITPOSE_SHARED", ROOT.parent / "shared"))
SHARED_DATA = SHARED / "data"
YOLOX_ONNX = SHARED / "models" / "yolox_nano" / "yolox_nano.onnx"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("VITPOSE_RUNSLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: opt in with --runslow or VITPOSE_RUNSLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`, or a skip naming the missing folder."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set VITPOSE_SHARED to the shared folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def yolox_onnx() -> Path:
    if not YOLOX_ONNX.is_file():
        pytest.skip(f"YOLOX ONNX detector not found at {YOLOX_ONNX}")
    return YOLOX_ONNX


#: ViTPose++ overrides of the tiny tester: 3 MoE experts, heads for indices 1 (AIC, 14) and 2 (MPII, 16)
TINY_PLUS = dict(num_experts=3, part_features=8, dataset_heads=[
    {"dataset_index": 1, "num_labels": 14, "name": "aic"}, {"dataset_index": 2, "num_labels": 16, "name": "mpii"},
])


def tiny_config_kwargs(**overrides) -> dict:
    """The tiny non-square tester: 64x48 input, patch 8, hidden 32, 2 layers, 4 heads."""
    kwargs = dict(
        image_size=(64, 48), patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        drop_path_rate=0.0, decoder_hidden_size=16,
    )
    kwargs.update(overrides)
    return kwargs


@pytest.fixture
def tiny_config():
    from vitpose_hf import VitPoseConfig

    return VitPoseConfig(**tiny_config_kwargs())


def train_tiny_model(output_dir: Path, steps: int = 250, seed: int = 0):
    """A tiny ViTPose trained briefly on synthetic people (writes `output_dir/model`): its heatmaps
    are peaked (a clear maximum per keypoint), unlike a random model's flat ones, so keypoints do not
    depend on how a CPU rounds. Not accurate: a few hundred steps learn a rough pose prior.
    Returns `(model, processor, model_dir)`."""
    from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation, VitPoseTopDownImageProcessor
    from vitpose_hf.data import TopDownTransform
    from vitpose_hf.data.synthetic import load_synthetic_dataset

    rows, _, _ = load_synthetic_dataset(output_dir / "synthetic", 48, image_size=(128, 96), seed=seed)
    transform = TopDownTransform("coco", image_size=(64, 48), heatmap_size=(32, 24), seed=seed)
    torch.manual_seed(seed)
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs()))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    n = len(rows)
    batches = []  # augmented crops made once and cycled: the crops cost more than the tiny model's steps
    for start in range(0, 4 * n, 16):
        batch = transform(rows.select([(start + i) % n for i in range(16)])[:])
        batches.append([torch.stack(batch[k]) for k in ("pixel_values", "labels", "target_weight")])
    flush = torch.set_flush_denormal(True)  # denormal activations made these steps ~6x slower on x86
    try:
        for step in range(steps):
            pixels, labels, weights = batches[step % len(batches)]
            out = model(pixels, labels=labels, target_weight=weights)
            opt.zero_grad()
            (out.loss * 1000).backward()
            opt.step()
    finally:
        if flush:
            torch.set_flush_denormal(False)
    model.eval()
    processor = VitPoseTopDownImageProcessor(size={"height": 64, "width": 48})
    model_dir = output_dir / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    return model, processor, model_dir


@pytest.fixture(scope="session")
def trained_tiny_model(tmp_path_factory):
    """`(model, processor, model_dir)` of `train_tiny_model`, trained once per test session."""
    return train_tiny_model(tmp_path_factory.mktemp("trained_tiny"))
