"""Model tests in the transformers style: a tiny non-square tester (64x48 input, patch 8, hidden 32,
2 layers) and property tests (shapes, save/load, Auto classes, batch invariance, eager == SDPA,
gradient checkpointing, gradients, drop path, loss, flip, interpolation, layer ids, presets, bad input).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_PLUS, tiny_config_kwargs
from safetensors.torch import load_file, save_file

import vitpose_hf  # noqa: F401  (registers the Auto classes)
from vitpose_hf import (
    VitPoseConfig,
    VitPoseForPoseEstimation,
    VitPoseModel,
    flip_heatmaps,
    joints_mse_loss,
    resample_position_embeddings,
)

PLUS = TINY_PLUS


def _model(cls=VitPoseForPoseEstimation, **overrides):
    model = cls(VitPoseConfig(**tiny_config_kwargs(**overrides)))
    with torch.no_grad():  # non-trivial BN statistics and biases
        for name, t in model.named_buffers():
            if "running_mean" in name:
                t.normal_(0, 0.1)
            elif "running_var" in name:
                t.uniform_(0.5, 1.5)
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    return model.eval()


def _pixels(batch=2, h=64, w=48):
    return torch.randn(batch, 3, h, w)


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("simple", [False, True])
def test_output_shapes(simple):
    model = _model(use_simple_decoder=simple)
    with torch.no_grad():
        out = model(_pixels(3), output_hidden_states=True)
    assert out.heatmaps.shape == (3, 17, 32, 24)
    assert out.feature_map.shape == (3, 32, 8, 6)
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (3, 48, 32)
    assert out.loss is None
    backbone = model.backbone
    with torch.no_grad():
        feats = backbone(_pixels(2))
    assert feats.feature_map.shape == (2, 32, 8, 6)
    assert feats.last_hidden_state.shape == (2, 48, 32)
    # feature map is the token sequence laid out row-major on the (h, w) grid
    assert torch.equal(feats.feature_map.flatten(2).transpose(1, 2), feats.last_hidden_state)


def test_defaults_reproduce_vitpose_base():
    config = VitPoseConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert config.layer_norm_eps == 1e-6 and config.patch_padding == 2 and config.image_size == [256, 192]
    with torch.device("meta"):
        emb = VitPoseModel(VitPoseConfig(num_hidden_layers=1)).embeddings
    assert emb.patch_embeddings.projection.padding == (2, 2)
    assert emb.grid == (16, 12) and emb.position_embeddings.shape == (1, 16 * 12 + 1, 768)


# ----------------------------------------------------------------------------- save / load
def test_save_load_round_trip_is_exact(tmp_path):
    model = _model(**PLUS)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not (tmp_path / "pytorch_model.bin").exists()
    loaded, info = VitPoseForPoseEstimation.from_pretrained(tmp_path, output_loading_info=True)
    loaded.eval()
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert loaded.config.to_dict()["dataset_heads"] == model.config.to_dict()["dataset_heads"]
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    pixels, index = _pixels(3), torch.tensor([0, 1, 2])
    with torch.no_grad():
        assert torch.equal(model(pixels, dataset_index=index).heatmaps, loaded(pixels, dataset_index=index).heatmaps)


def test_auto_classes(tmp_path):
    from transformers import AutoConfig, AutoModel, AutoModelForPoseEstimation

    model = _model()
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is VitPoseConfig and config.model_type == "vitpose_hf"
    assert type(AutoModelForPoseEstimation.from_pretrained(tmp_path)) is VitPoseForPoseEstimation
    backbone = AutoModel.from_pretrained(tmp_path)
    assert type(backbone) is VitPoseModel
    pixels = _pixels(1)
    with torch.no_grad():
        assert torch.allclose(backbone.eval()(pixels).feature_map, model.backbone(pixels).feature_map, atol=1e-6)
    assert type(AutoModel.from_config(VitPoseConfig(**tiny_config_kwargs()))) is VitPoseModel


# ----------------------------------------------------------------------------- invariances
@pytest.mark.parametrize("overrides", [{}, PLUS], ids=["plain", "plus"])
def test_batch_of_one_equals_batched(overrides):
    model = _model(**overrides)
    pixels = _pixels(3)
    index = torch.tensor([2, 0, 1]) if overrides else torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        batched = model(pixels, dataset_index=index).heatmaps
        for n in range(3):
            single = model(pixels[n : n + 1], dataset_index=index[n : n + 1]).heatmaps
            k = single.shape[1]
            assert torch.allclose(single[0], batched[n, :k], atol=1e-5)


def test_eager_equals_sdpa(tmp_path):
    model = _model(**PLUS)
    model.save_pretrained(tmp_path)
    pixels, index = _pixels(2), torch.tensor([1, 2])
    eager = VitPoseForPoseEstimation.from_pretrained(tmp_path, attn_implementation="eager").eval()
    sdpa = VitPoseForPoseEstimation.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    with torch.no_grad():
        a = eager(pixels, dataset_index=index).heatmaps
        b = sdpa(pixels, dataset_index=index).heatmaps
        sdpa.set_attn_implementation("eager")
        assert sdpa.config._attn_implementation == "eager"
        c = sdpa(pixels, dataset_index=index).heatmaps
    assert (a - b).abs().max().item() <= 1e-5
    assert torch.equal(a, c)
    # the config field selects the kernel as well
    from_config = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(**PLUS), attn_implementation="eager"))
    assert from_config.backbone.encoder.layer[0].attention.attention.config._attn_implementation == "eager"


def _loss_and_grads(model, pixels, labels, weight, index=None):
    model.zero_grad()
    out = model(pixels, dataset_index=index, labels=labels, target_weight=weight)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_changes_nothing():
    model = _model(**PLUS).train()
    pixels, index = _pixels(3), torch.tensor([0, 1, 2])
    labels, weight = torch.rand(3, 17, 32, 24), torch.rand(3, 17)
    loss_a, grads_a = _loss_and_grads(model, pixels, labels, weight, index)
    # transformers 5 renamed gradient_checkpointing_enable (kept as a deprecated alias)
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    assert model.backbone.encoder.gradient_checkpointing
    loss_b, grads_b = _loss_and_grads(model, pixels, labels, weight, index)
    (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()
    assert not model.backbone.encoder.gradient_checkpointing
    assert torch.allclose(loss_a, loss_b, rtol=0, atol=1e-7)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-6), name


def test_every_parameter_gets_a_gradient():
    model = _model(**PLUS).train()
    index = torch.tensor([0, 1, 2, 0])  # every expert and every head appears in the batch
    labels, weight = torch.rand(4, 17, 32, 24), torch.ones(4, 17)
    _, grads = _loss_and_grads(model, _pixels(4), labels, weight, index)
    names = [n for n, _ in model.named_parameters()]
    assert any(".experts.2." in n for n in names) and any(n.startswith("extra_heads.2.") for n in names)
    for name in names:
        assert name in grads and grads[name].abs().sum() > 0, f"{name} got no gradient"


def test_drop_path_only_in_train_mode():
    model = _model(use_simple_decoder=True, drop_path_rate=0.5)
    reference = _model(use_simple_decoder=True, drop_path_rate=0.0)
    reference.load_state_dict(model.state_dict())
    rates = [layer.drop_path_rate for layer in model.backbone.encoder.layer]
    assert rates == pytest.approx([0.0, 0.5])  # linear from 0 to the rate
    pixels = _pixels(8)
    with torch.no_grad():
        assert torch.equal(model(pixels).heatmaps, reference(pixels).heatmaps)  # eval: no drop path
        model.train()
        reference.train()
        torch.manual_seed(0)
        dropped = model(pixels).heatmaps
        # (eval runs the inference fast paths: equal up to float rounding)
        torch.testing.assert_close(reference(pixels).heatmaps, reference.eval()(pixels).heatmaps, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(dropped, reference(pixels).heatmaps)


# ----------------------------------------------------------------------------- loss
def _official_joints_mse(pred, gt, weight):
    """JointsMSELoss(use_target_weight=True) of mmpose, one joint at a time, in numpy."""
    pred, gt, weight = pred.numpy().astype(np.float64), gt.numpy().astype(np.float64), weight.numpy()
    b, k = pred.shape[:2]
    total = 0.0
    for j in range(k):
        p = pred[:, j].reshape(b, -1) * weight[:, j].reshape(b, 1)
        g = gt[:, j].reshape(b, -1) * weight[:, j].reshape(b, 1)
        total += np.mean((p - g) ** 2)
    return total / k


def test_loss_is_official_joints_mse():
    model = _model()
    pixels, labels = _pixels(3), torch.rand(3, 17, 32, 24)
    weight = (torch.rand(3, 17, 1) > 0.3).float()
    with torch.no_grad():
        out = model(pixels, labels=labels, target_weight=weight)
    expected = _official_joints_mse(out.heatmaps, labels, weight)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():
        unweighted = model(pixels, labels=labels).loss
    assert unweighted.item() == pytest.approx(_official_joints_mse(out.heatmaps, labels, torch.ones(3, 17, 1)), rel=1e-5)
    assert joints_mse_loss(out.heatmaps, labels, weight[..., 0]).item() == pytest.approx(expected, rel=1e-5)


def test_trainer_style_outputs():
    model = _model()
    out = model(_pixels(2), labels=torch.rand(2, 17, 32, 24), return_dict=False)
    assert out[0].ndim == 0 and out[1].shape == (2, 17, 32, 24)  # loss first, as Trainer expects


# ----------------------------------------------------------------------------- flip
def test_flip_heatmaps_against_manual_loop():
    heatmaps = torch.randn(2, 5, 4, 3)
    pairs = [[1, 2], [3, 4]]
    out = flip_heatmaps(heatmaps, pairs)
    partner = {0: 0, 1: 2, 2: 1, 3: 4, 4: 3}
    for b in range(2):
        for k in range(5):
            for y in range(4):
                for x in range(3):
                    assert out[b, k, y, x] == heatmaps[b, partner[k], y, 2 - x]
    assert torch.equal(flip_heatmaps(out, torch.tensor(pairs)), heatmaps)  # twice = identity
    shifted = flip_heatmaps(heatmaps, pairs, shift=True)
    assert torch.equal(shifted[..., 1:], out[..., :-1]) and torch.equal(shifted[..., 0], out[..., 0])
    assert torch.equal(flip_heatmaps(heatmaps, None), heatmaps.flip(-1))


def test_model_flip_pairs_argument():
    model = _model()
    pixels, pairs = _pixels(2), torch.tensor([[1, 2], [5, 6]])
    with torch.no_grad():
        plain = model(pixels).heatmaps
        flipped = model(pixels, flip_pairs=pairs).heatmaps
    assert torch.equal(flipped, flip_heatmaps(plain, pairs))


def test_flip_heatmaps_bad_input():
    with pytest.raises(ValueError, match="out of range"):
        flip_heatmaps(torch.zeros(1, 3, 4, 4), [[1, 5]])
    with pytest.raises(ValueError, match=r"\(B, K, h, w\)"):
        flip_heatmaps(torch.zeros(3, 4, 4), [[0, 1]])


# ----------------------------------------------------------------------------- interpolation
def test_256x192_checkpoint_runs_at_384x288(tmp_path):
    kwargs = dict(image_size=(256, 192), patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  drop_path_rate=0.0, use_simple_decoder=True)
    model = VitPoseForPoseEstimation(VitPoseConfig(**kwargs)).eval()
    model.save_pretrained(tmp_path)
    big = VitPoseForPoseEstimation.from_pretrained(tmp_path, image_size=(384, 288)).eval()
    assert big.config.image_size == [384, 288]

    old = model.backbone.embeddings.position_embeddings.detach()
    new = big.backbone.embeddings.position_embeddings.detach()
    assert new.shape == (1, 1 + 24 * 18, 32)
    assert torch.equal(new[:, :1], old[:, :1])  # the extra slot is kept, not resampled
    grid = old[:, 1:].reshape(1, 16, 12, 32).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(24, 18), mode="bicubic", align_corners=False)
    assert torch.allclose(new[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 24 * 18, 32), atol=1e-6)

    pixels = torch.randn(1, 3, 384, 288)
    with torch.no_grad():
        on_the_fly = model(pixels).heatmaps  # resampled in forward
        at_load = big(pixels).heatmaps
    assert at_load.shape == (1, 17, 96, 72)  # heads derive the grid from the input
    assert (on_the_fly - at_load).abs().max().item() <= 1e-5
    # the load-time resampled model still runs at the original size too
    with torch.no_grad():
        assert big(torch.randn(1, 3, 256, 192)).heatmaps.shape == (1, 17, 64, 48)


def test_resample_position_embeddings_identity_and_errors():
    pos = torch.randn(1, 1 + 8 * 6, 4)
    assert resample_position_embeddings(pos, (8, 6), (8, 6)) is pos
    with pytest.raises(ValueError, match="slots"):
        resample_position_embeddings(pos, (8, 5), (4, 3))


def test_checkpoint_pos_embed_of_other_grid_is_resampled_at_load(tmp_path):
    small = _model()
    small.save_pretrained(tmp_path)
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(image_size=(96, 72))))
    model.load_state_dict(small.state_dict())
    expected = resample_position_embeddings(small.backbone.embeddings.position_embeddings.detach(), (8, 6), (12, 9))
    assert torch.allclose(model.backbone.embeddings.position_embeddings, expected)


# ----------------------------------------------------------------------------- dataset_index
def test_dataset_index_default_is_zero():
    model = _model(**PLUS)
    pixels = _pixels(2)
    with torch.no_grad():
        default = model(pixels).heatmaps
        zeros = model(pixels, dataset_index=torch.zeros(2, dtype=torch.long)).heatmaps
        other = model(pixels, dataset_index=torch.tensor([1, 1])).heatmaps
    assert torch.equal(default, zeros)
    assert default.shape == (2, 17, 32, 24) and other.shape == (2, 14, 32, 24)


@pytest.mark.parametrize("index, needle", [
    (torch.tensor([0, 3]), "dataset_index 3 is out of range"),
    (torch.tensor([-1, 0]), "dataset_index -1 is out of range"),
    (torch.tensor([0.0, 1.0]), "integers"),
    (torch.tensor([0, 1, 2]), r"shape \(2,\)"),
])
def test_bad_dataset_index(index, needle):
    model = _model(**PLUS)
    with pytest.raises(ValueError, match=needle):
        model(_pixels(2), dataset_index=index)


# ----------------------------------------------------------------------------- layer decay helpers
def test_no_weight_decay_and_layer_ids():
    model = _model(num_knowledge_tokens=2)
    assert model.no_weight_decay() == {"backbone.embeddings.position_embeddings", "backbone.embeddings.knowledge_tokens"}
    assert model.backbone.no_weight_decay() == {"embeddings.position_embeddings", "embeddings.knowledge_tokens"}
    names = dict(model.named_parameters())
    assert model.no_weight_decay() <= names.keys()
    depth = model.config.num_hidden_layers
    assert model.num_layer_ids == depth + 2
    rate = 0.75
    for name in names:
        if name.startswith("backbone.embeddings."):
            expected = 0
        elif name.startswith("backbone.encoder.layer."):
            expected = int(name.split(".")[3]) + 1
        else:  # final norm and heads
            expected = depth + 1
        assert model.get_layer_id(name) == expected, name
        scale = rate ** (model.num_layer_ids - 1 - model.get_layer_id(name))
        assert scale == pytest.approx(rate ** (depth + 1 - expected))
    assert model.get_layer_id("head.conv.weight") == depth + 1
    assert model.get_layer_id("backbone.layernorm.weight") == depth + 1


# ----------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name, millions", [("small", 24.3), ("base", 90.0), ("large", 308.5)])
def test_preset_parameter_counts(name, millions):
    with torch.device("meta"):
        model = VitPoseForPoseEstimation(VitPoseConfig.from_preset(name))
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6, 1) == millions


def test_giant_preset_is_about_one_billion():
    config = VitPoseConfig.from_preset("vitpose-g")
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (1408, 40, 16)
    with torch.device("meta"):
        model = VitPoseForPoseEstimation(config)
    assert 0.9e9 < sum(p.numel() for p in model.parameters()) < 1.1e9


# ----------------------------------------------------------------------------- bad input
def test_bad_pixel_values():
    model = _model()
    with pytest.raises(ValueError, match="1 channels, the model expects 3"):
        model(torch.randn(1, 1, 64, 48))
    with pytest.raises(ValueError, match="multiple of the patch stride"):
        model(torch.randn(1, 3, 60, 48))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.randn(3, 64, 48))


def test_labels_of_wrong_shape():
    model = _model()
    with pytest.raises(ValueError, match="labels must have the heatmaps' shape"):
        model(_pixels(2), labels=torch.rand(2, 17, 64, 48))
    with pytest.raises(ValueError, match="target_weight"):
        model(_pixels(2), labels=torch.rand(2, 17, 32, 24), target_weight=torch.ones(2, 16))


def test_checkpoint_with_missing_or_unexpected_keys(tmp_path):
    _model().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    missing = {k: v for k, v in weights.items() if k != "backbone.encoder.layer.1.mlp.fc1.weight"}
    save_file(missing, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing keys \['backbone.encoder.layer.1.mlp.fc1.weight'\]"):
        VitPoseForPoseEstimation.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"missing keys \['encoder.layer.1.mlp.fc1.weight'\]"):
        VitPoseModel.from_pretrained(tmp_path)  # the backbone alone is checked too

    extra = dict(weights)
    extra["backbone.encoder.layer.7.mlp.fc1.weight"] = torch.zeros(2)
    save_file(extra, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"unexpected keys \['backbone.encoder.layer.7.mlp.fc1.weight'\]"):
        VitPoseForPoseEstimation.from_pretrained(tmp_path)

    # a missing head is allowed by default (fresh head for fine-tuning) but not with strict=True
    headless = {k: v for k, v in weights.items() if not k.startswith("head.conv.")}
    save_file(headless, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model, info = VitPoseForPoseEstimation.from_pretrained(tmp_path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["head.conv.bias", "head.conv.weight"]
    with pytest.raises(ValueError, match="head.conv.weight"):
        VitPoseForPoseEstimation.from_pretrained(tmp_path, strict=True)


def test_corrupt_safetensors(tmp_path):
    _model().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 64)
    with pytest.raises(ValueError, match="cannot read the weights"):
        VitPoseForPoseEstimation.from_pretrained(tmp_path)


@pytest.mark.parametrize("overrides", [
    {}, {"num_deconv_layers": 1}, {"use_simple_decoder": True}, {"use_simple_decoder": True, "scale_factor": 2},
    {"image_size": (72, 56)}, {"patch_size": 16, "patch_stride": 8, "patch_padding": 4, "image_size": (64, 48)},
])
def test_heatmap_size_matches_the_forward_without_running_it(overrides):
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(**overrides))).eval()
    height, width = model.config.image_size
    with torch.no_grad():
        heatmaps = model(torch.zeros(1, 3, height, width)).heatmaps
    assert model.heatmap_size() == tuple(heatmaps.shape[-2:])
