"""Equivalence with transformers' own VitPose on identical random weights, in both directions.

transformers -> ours: a checkpoint written by `transformers.VitPoseForPoseEstimation.save_pretrained`
loads with `vitpose_hf.VitPoseForPoseEstimation.from_pretrained` (no conversion) and gives the same
heatmaps, hidden states and attentions. ours -> transformers: `save_pretrained_transformers` /
`export_to_transformers` writes a directory transformers' class loads with no missing key.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config_kwargs

import vitpose_hf  # noqa: F401  (registers the Auto classes)
from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation
from vitpose_hf.convert_vitpose_to_hf import export_to_transformers

transformers = pytest.importorskip("transformers")
HFConfig = transformers.VitPoseConfig
HFBackboneConfig = transformers.VitPoseBackboneConfig
HFModel = transformers.VitPoseForPoseEstimation

TOL = 1e-5
VARIANTS = {
    "classic": dict(use_simple_decoder=False, num_experts=1),
    "simple": dict(use_simple_decoder=True, num_experts=1),
    "moe": dict(use_simple_decoder=False, num_experts=3),
}


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Random values everywhere (BN running stats and affine included) so nothing is trivially 0/1."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if "num_batches_tracked" in name:
                continue
            if "running_var" in name:
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.2)
    return model.eval()


def _hf_model(variant: str, attn: str | None = None) -> torch.nn.Module:
    v = VARIANTS[variant]
    backbone = HFBackboneConfig(
        image_size=[64, 48], patch_size=[8, 8], hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_experts=v["num_experts"], part_features=8, out_indices=[2], layer_norm_eps=1e-6,
    )
    config = HFConfig(backbone_config=backbone, use_simple_decoder=v["use_simple_decoder"], num_labels=5)
    if attn is not None:
        config._attn_implementation = attn
    return _randomize(HFModel(config))


def _dataset_index(variant: str, batch: int):
    if VARIANTS[variant]["num_experts"] == 1:
        return None
    return torch.tensor([0, 2, 1, 2][:batch])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_transformers_checkpoint_loads_and_matches(variant, tmp_path):
    reference = _hf_model(variant)
    reference.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "vitpose"

    ours, info = VitPoseForPoseEstimation.from_pretrained(tmp_path, output_loading_info=True)
    ours.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert ours.config.model_type == "vitpose_hf"
    assert ours.config.use_simple_decoder == VARIANTS[variant]["use_simple_decoder"]
    assert ours.config.layer_norm_eps == 1e-6

    pixels = torch.randn(4, 3, 64, 48)
    index = _dataset_index(variant, 4)
    with torch.no_grad():
        expected = reference(pixels, dataset_index=index).heatmaps
        got = ours(pixels, dataset_index=index).heatmaps
    assert got.shape == expected.shape == (4, 5, 32, 24)
    assert expected.abs().max() > 1e-2  # a real signal, not all zeros
    assert (got - expected).abs().max().item() <= TOL


@pytest.mark.parametrize("num_labels", [None, 2, 17])
def test_label_count_is_read_faithfully_from_transformers_configs(num_labels, tmp_path):
    """transformers omits a default num_labels (2) from config.json; it must not become our 17."""
    backbone = HFBackboneConfig(image_size=[64, 48], patch_size=[8, 8], hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, out_indices=[2])
    extra = {} if num_labels is None else {"num_labels": num_labels}
    reference = _randomize(HFModel(HFConfig(backbone_config=backbone, **extra)))
    reference.save_pretrained(tmp_path)
    expected_k = reference.config.num_labels
    saved = json.loads((tmp_path / "config.json").read_text())
    if num_labels is None:
        assert "id2label" not in saved and "num_labels" not in saved  # the case that used to fail
    ours = VitPoseForPoseEstimation.from_pretrained(tmp_path).eval()
    assert ours.config.num_labels == expected_k
    assert ours.config.id2label == reference.config.id2label
    pixels = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = reference(pixels).heatmaps
        got = ours(pixels).heatmaps
    assert got.shape == expected.shape and got.shape[1] == expected_k
    assert (got - expected).abs().max().item() <= TOL
    assert VitPoseConfig().num_labels == 17  # our own default is unchanged


@pytest.mark.parametrize("variant", ["classic", "moe"])
def test_hidden_states_and_attentions_match(variant, tmp_path):
    reference = _hf_model(variant, attn="eager")
    reference.save_pretrained(tmp_path)
    ours = VitPoseForPoseEstimation.from_pretrained(tmp_path, attn_implementation="eager").eval()
    pixels = torch.randn(2, 3, 64, 48)
    index = _dataset_index(variant, 2)
    with torch.no_grad():
        ref = reference(pixels, dataset_index=index, output_hidden_states=True, output_attentions=True)
        out = ours(pixels, dataset_index=index, output_hidden_states=True, output_attentions=True)
    # embeddings output + one entry per layer (before the final norm), as in transformers
    assert len(out.hidden_states) == len(ref.hidden_states) == 3
    for a, b in zip(out.hidden_states, ref.hidden_states):
        assert a.shape == b.shape == (2, 48, 32)
        assert (a - b).abs().max().item() <= TOL
    assert len(out.attentions) == len(ref.attentions) == 2
    for a, b in zip(out.attentions, ref.attentions):
        assert a.shape == b.shape == (2, 4, 48, 48)
        assert (a - b).abs().max().item() <= TOL


def test_flip_pairs_match_transformers(tmp_path):
    reference = _hf_model("simple")
    reference.save_pretrained(tmp_path)
    ours = VitPoseForPoseEstimation.from_pretrained(tmp_path).eval()
    pixels = torch.randn(2, 3, 64, 48)
    pairs = torch.tensor([[1, 2], [3, 4]])
    with torch.no_grad():
        expected = reference(pixels, flip_pairs=pairs).heatmaps
        got = ours(pixels, flip_pairs=pairs).heatmaps
    assert (got - expected).abs().max().item() <= TOL


def _ours(variant: str) -> VitPoseForPoseEstimation:
    v = VARIANTS[variant]
    config = VitPoseConfig(**tiny_config_kwargs(
        use_simple_decoder=v["use_simple_decoder"], num_experts=v["num_experts"], part_features=8,
        decoder_hidden_size=256, num_labels=5, drop_path_rate=0.1,
    ))
    return _randomize(VitPoseForPoseEstimation(config))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_export_loads_in_transformers_and_matches(variant, tmp_path):
    ours = _ours(variant)
    if variant == "simple":
        ours.save_pretrained_transformers(tmp_path)
    else:
        export_to_transformers(ours, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "vitpose"
    assert config["backbone_config"]["model_type"] == "vitpose_backbone"
    assert config["backbone_config"]["layer_norm_eps"] == 1e-6

    reference, info = HFModel.from_pretrained(tmp_path, output_loading_info=True)
    reference.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert type(reference).__module__.startswith("transformers.")
    pixels = torch.randn(3, 3, 64, 48)
    index = _dataset_index(variant, 3)
    with torch.no_grad():
        expected = ours(pixels, dataset_index=index).heatmaps
        got = reference(pixels, dataset_index=index).heatmaps
    assert (got - expected).abs().max().item() <= TOL

    # and back again: transformers' format reloads into ours identically
    again = VitPoseForPoseEstimation.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(pixels, dataset_index=index).heatmaps, expected)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (dict(dataset_heads=[{"dataset_index": 1, "num_labels": 14, "name": "aic"}]), "1 extra dataset heads"),
        (dict(attention_type="window", window_size=(4, 3)), r"windowed attention in layers \[0, 1\]"),
        (dict(num_knowledge_tokens=2), "2 knowledge tokens"),
        (dict(decoder_hidden_size=16), "classic head width 16"),
        (dict(patch_stride=4), "patch stride"),
    ],
)
def test_export_refuses_features_transformers_lacks(overrides, needle, tmp_path):
    kwargs = tiny_config_kwargs(decoder_hidden_size=256)
    kwargs.update(overrides)
    model = VitPoseForPoseEstimation(VitPoseConfig(**kwargs))
    with pytest.raises(ValueError, match=needle):
        export_to_transformers(model, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_export_refuses_non_pose_models(tmp_path):
    from vitpose_hf import VitPoseModel

    with pytest.raises(ValueError, match="VitPoseForPoseEstimation"):
        export_to_transformers(VitPoseModel(VitPoseConfig(**tiny_config_kwargs())), tmp_path)
