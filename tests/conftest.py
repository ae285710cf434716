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
