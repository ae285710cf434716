"""VitPoseConfig: defaults, presets, validation, transformers-format lifting and export."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import tiny_config_kwargs

from vitpose_hf import VitPoseConfig

transformers = pytest.importorskip("transformers")


def test_defaults_are_official_vitpose_base():
    config = VitPoseConfig()
    assert config.model_type == "vitpose_hf"
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.mlp_ratio) == (768, 12, 12, 4)
    assert config.image_size == [256, 192] and config.patch_size == [16, 16] and config.patch_padding == 2
    assert config.layer_norm_eps == 1e-6 and config.qkv_bias and config.hidden_act == "gelu"
    assert config.drop_path_rate == 0.3 and config.layer_decay_rate() == 0.75
    assert not config.use_simple_decoder and config.decoder_hidden_size == 256 and config.num_deconv_layers == 2
    assert config.num_labels == 17 and config.id2label[0] == "nose" and config.label2id["right_ankle"] == 16
    assert config.num_experts == 1 and config.num_datasets == 1 and config.dataset_heads == []


@pytest.mark.parametrize("name, sizes, drop_path, decay", [
    ("small", (384, 12, 12), 0.1, 0.8),
    ("vitpose-b", (768, 12, 12), 0.3, 0.75),
    ("L", (1024, 24, 16), 0.5, 0.8),
    ("huge", (1280, 32, 16), 0.55, 0.85),
    ("g", (1408, 40, 16), 0.6, 0.9),
])
def test_presets(name, sizes, drop_path, decay):
    config = VitPoseConfig.from_preset(name)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == sizes
    assert config.drop_path_rate == drop_path and config.layer_decay_rate() == decay
    assert not config.use_simple_decoder and config.num_experts == 1


def test_preset_variants_and_overrides():
    simple = VitPoseConfig.from_preset("vitpose-b-simple")
    assert simple.use_simple_decoder and simple.hidden_size == 768
    plus = VitPoseConfig.from_preset("s-plus", part_features=96)
    assert (plus.num_experts, plus.part_features, plus.hidden_size) == (6, 96, 384)
    assert VitPoseConfig.from_preset("vitpose++-l").num_experts == 6
    assert VitPoseConfig.from_preset("base", image_size=(384, 288)).image_size == [384, 288]
    with pytest.raises(ValueError, match="unknown preset 'tiny'"):
        VitPoseConfig.from_preset("tiny")


@pytest.mark.parametrize("kwargs, needle", [
    (dict(hidden_size=30, num_attention_heads=4), "multiple of num_attention_heads"),
    (dict(num_experts=0), "num_experts"),
    (dict(num_experts=2, part_features=40), "part_features"),
    (dict(drop_path_rate=1.0), "drop_path_rate"),
    (dict(attention_type="local"), "attention_type 'local'"),
    (dict(attention_type=["global"]), "attention_type has 1 entries"),
    (dict(global_attention_layers=[5]), "global_attention_layers"),
    (dict(image_size=(1, 2, 3)), "image_size"),
    (dict(dataset_heads=[{"dataset_index": 0, "num_labels": 14}]), "dataset_index 0 has two heads"),
    (dict(dataset_heads=[{"num_labels": 14}]), "needs dataset_index"),
])
def test_validation(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        VitPoseConfig(**tiny_config_kwargs(**kwargs))


def test_dict_and_disk_round_trip(tmp_path):
    config = VitPoseConfig(**tiny_config_kwargs(
        num_experts=3, part_features=8, dataset_heads=[{"dataset_index": 1, "num_labels": 14, "name": "aic"}],
        attention_type=["window", "global"], num_labels=5,
    ))
    again = VitPoseConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    config.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["model_type"] == "vitpose_hf"
    loaded = VitPoseConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.num_datasets == 3 and [h["dataset_index"] for h in loaded.head_specs()] == [0, 1]


def test_lifts_transformers_config(tmp_path, caplog):
    backbone = transformers.VitPoseBackboneConfig(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_experts=6, part_features=16,
        image_size=[64, 48], patch_size=[8, 8], out_indices=[3],
    )
    hf = transformers.VitPoseConfig(backbone_config=backbone, num_labels=5)
    hf.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        config = VitPoseConfig.from_pretrained(tmp_path)
    assert "to instantiate a model of type" not in caplog.text
    assert config.model_type == "vitpose_hf"
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 3, 4)
    assert (config.num_experts, config.part_features, config.num_labels) == (6, 16, 5)
    assert config.image_size == [64, 48] and config.patch_size == [8, 8]
    # transformers' defaults where its file is silent: eps 1e-12, simple decoder
    assert config.layer_norm_eps == 1e-12 and config.use_simple_decoder
    assert config.drop_path_rate == 0.0
    # from a plain dict as well
    lifted = VitPoseConfig(**hf.to_dict())
    assert lifted.hidden_size == 64 and lifted.use_simple_decoder


def test_to_transformers_dict_builds_transformers_config():
    config = VitPoseConfig(**tiny_config_kwargs(decoder_hidden_size=256, num_experts=2, part_features=8, mlp_ratio=4.0))
    data = config.to_transformers_dict()
    assert data["model_type"] == "vitpose" and data["backbone_config"]["mlp_ratio"] == 4
    hf = transformers.VitPoseConfig(**{k: v for k, v in data.items() if k != "model_type"})
    bb = hf.backbone_config
    assert (bb.hidden_size, bb.num_hidden_layers, bb.num_experts, bb.part_features) == (32, 2, 2, 8)
    assert bb.layer_norm_eps == 1e-6 and list(bb.image_size) == [64, 48] and list(bb.patch_size) == [8, 8]
    assert hf.use_simple_decoder is False and hf.num_labels == 17


@pytest.mark.parametrize("kwargs, needle", [
    (dict(mlp_ratio=2.5), "integer mlp_ratio"),
    (dict(patch_size=4, image_size=(32, 24)), "must exceed twice the padding"),
    (dict(num_deconv_layers=1), "1 deconvolution"),
    (dict(attention_type="shifted_window"), "windowed attention"),
])
def test_to_transformers_dict_refusals(kwargs, needle):
    assert VitPoseConfig(**tiny_config_kwargs(decoder_hidden_size=256)).uses_only_transformers_features()
    config = VitPoseConfig(**tiny_config_kwargs(decoder_hidden_size=256, **kwargs))
    with pytest.raises(ValueError, match=needle):
        config.to_transformers_dict()


def test_simple_head_ignores_classic_head_fields_for_export():
    config = VitPoseConfig(**tiny_config_kwargs(use_simple_decoder=True, decoder_hidden_size=16))
    assert config.transformers_incompatibilities() == []
    assert config.to_transformers_dict()["use_simple_decoder"] is True
