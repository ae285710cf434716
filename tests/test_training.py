"""Training library: layer-decay parameter groups, parameter-subset tuning, LoRA, multi-dataset loss."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from conftest import tiny_config_kwargs
from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation
from vitpose_hf.training import apply_lora, apply_trainable, build_param_groups, merge_lora

HAS_PEFT = importlib.util.find_spec("peft") is not None


def _model(**overrides) -> VitPoseForPoseEstimation:
    torch.manual_seed(0)
    return VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(**overrides))).eval()


def _expected_layer_id(name: str, depth: int) -> int:
    # written from the recipe, independent of model.get_layer_id
    if name.startswith("backbone.embeddings."):
        return 0
    if name.startswith("backbone.encoder.layer."):
        return int(name.split(".")[3]) + 1
    return depth + 1


# ----------------------------------------------------------------------------- parameter groups
@pytest.mark.parametrize("rate", [0.75, 0.5])
def test_param_groups_follow_the_layer_decay_formula(rate):
    model = _model()
    depth = model.config.num_hidden_layers
    groups = build_param_groups(model, base_lr=1e-3, weight_decay=0.1, layer_decay=rate)
    seen = {}
    for group in groups:
        for name, param in zip(group["param_names"], group["params"]):
            assert name not in seen
            seen[name] = (group["lr"], group["weight_decay"])
    params = dict(model.named_parameters())
    assert set(seen) == set(params)
    for name, (lr, wd) in seen.items():
        expected_lr = 1e-3 * rate ** (depth + 2 - _expected_layer_id(name, depth) - 1)
        assert lr == pytest.approx(expected_lr, rel=1e-12), name
        no_decay = params[name].ndim <= 1 or name == "backbone.embeddings.position_embeddings"
        assert wd == (0.0 if no_decay else 0.1), name
    # spot checks by hand: the patch embedding gets base * rate^(depth+1), heads get base
    assert seen["backbone.embeddings.patch_embeddings.projection.weight"][0] == pytest.approx(1e-3 * rate**3)
    assert seen["head.conv.weight"][0] == pytest.approx(1e-3)
    assert seen["backbone.encoder.layer.0.mlp.fc1.weight"] == (pytest.approx(1e-3 * rate**2), 0.1)
    assert seen["backbone.encoder.layer.1.layernorm_before.weight"] == (pytest.approx(1e-3 * rate), 0.0)
    assert seen["backbone.embeddings.position_embeddings"][1] == 0.0


def test_param_groups_default_rate_comes_from_config_and_frozen_are_left_out():
    model = _model(hidden_size=48, num_attention_heads=4)
    apply_trainable(model, "head")
    groups = build_param_groups(model, base_lr=5e-4)
    names = [n for g in groups for n in g["param_names"]]
    assert names and all(n.startswith("head.") for n in names)
    assert all(g["lr"] == pytest.approx(5e-4) for g in groups)
    model2 = _model()
    rate = model2.config.layer_decay_rate()
    groups2 = build_param_groups(model2, base_lr=1.0)
    assert min(g["lr"] for g in groups2) == pytest.approx(rate ** (model2.num_layer_ids - 1))


def test_param_groups_bad_values_raise():
    model = _model()
    with pytest.raises(ValueError, match="layer_decay"):
        build_param_groups(model, layer_decay=1.5)
    with pytest.raises(ValueError, match="base_lr"):
        build_param_groups(model, base_lr=0.0)
    apply_trainable(model, "all")
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        build_param_groups(model)


def test_schedule_keeps_layer_ratios():
    model = _model()
    groups = build_param_groups(model, base_lr=1e-3, layer_decay=0.5)
    base = [g["lr"] for g in groups]
    opt = torch.optim.AdamW(groups)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.1 * (step + 1))
    opt.step()
    sched.step()
    after = [g["lr"] for g in opt.param_groups]
    assert after == pytest.approx([0.2 * b for b in base])


# ----------------------------------------------------------------------------- parameter subsets
def _trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_trainable_specs_select_the_documented_parts():
    model = _model(dataset_heads=[{"dataset_index": 1, "num_labels": 14, "name": "aic"}])
    names = {n for n, _ in model.named_parameters()}
    heads = {n for n in names if n.startswith(("head.", "extra_heads."))}
    final_norm = {n for n in names if n.startswith("backbone.layernorm.")}
    assert any(n.startswith("extra_heads.1.") for n in heads)

    apply_trainable(model, "head")
    assert _trainable_names(model) == heads

    apply_trainable(model, "attention")
    attn = {n for n in names if ".attention." in n or ".layernorm_before." in n}
    assert _trainable_names(model) == heads | final_norm | attn

    apply_trainable(model, "ffn")
    ffn = {n for n in names if ".mlp." in n or ".layernorm_after." in n}
    assert _trainable_names(model) == heads | final_norm | ffn

    apply_trainable(model, "last_k_blocks:1")
    last = {n for n in names if n.startswith("backbone.encoder.layer.1.")}
    assert _trainable_names(model) == heads | final_norm | last

    apply_trainable(model, "attention+ffn")
    assert _trainable_names(model) == heads | final_norm | attn | ffn

    counts = apply_trainable(model, "all")
    assert _trainable_names(model) == names
    assert counts == {"trainable": sum(p.numel() for p in model.parameters()), "frozen": 0}


@pytest.mark.parametrize("spec", ["banana", "last_k_blocks:0", "last_k_blocks:9", ""])
def test_trainable_bad_spec_raises(spec):
    with pytest.raises(ValueError):
        apply_trainable(_model(), spec)


def _train_steps(model, steps=4, lr=1e-2):
    groups = build_param_groups(model, base_lr=lr, weight_decay=0.1, layer_decay=0.9)
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.1)
    model.train()
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        pixels = torch.randn(2, 3, 64, 48, generator=gen)
        labels = torch.rand(2, model.config.num_labels, 32, 24, generator=gen)  # patch 8: heatmaps H/2
        loss = model(pixels, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("spec", ["attention", "ffn", "head", "last_k_blocks:1"])
def test_frozen_parameters_stay_bit_identical(spec):
    model = _model()
    apply_trainable(model, spec)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers_before = {n: b.clone() for n, b in model.named_buffers() if not n.startswith("head.")}
    _train_steps(model)
    changed = 0
    for name, param in model.named_parameters():
        if param.requires_grad:
            changed += int(not torch.equal(param, before[name]))
        else:
            assert torch.equal(param, before[name]), f"frozen {name} changed under {spec}"
    assert changed > 0
    for name, buf in model.named_buffers():
        if name in buffers_before:
            assert torch.equal(buf, buffers_before[name]), name


@pytest.mark.skipif(not HAS_PEFT, reason="peft not installed (optional extra: pip install 'vitpose_hf[peft]')")
def test_lora_trains_adapters_and_heads_only_and_merges():
    model = _model()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    peft_model = apply_lora(model, r=4, alpha=8, target_modules=["query", "value", "fc2"])
    trainable = _trainable_names(peft_model)
    assert trainable and all(("lora_" in n) or ("modules_to_save" in n) for n in trainable)
    assert any("layer.1.mlp.fc2.lora_A" in n for n in trainable)
    assert not any("key.lora" in n or "head.conv.lora" in n for n in trainable)
    _train_steps(peft_model)
    for name, param in peft_model.named_parameters():
        if not param.requires_grad and "lora_" not in name:
            plain = name.replace("base_model.model.", "").replace(".base_layer", "").replace(".original_module", "")
            if plain in base:
                assert torch.equal(param, base[plain]), name
    peft_model.eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = peft_model(pixel_values=x).heatmaps
        merged = merge_lora(peft_model)
        assert isinstance(merged, VitPoseForPoseEstimation)
        got = merged(x).heatmaps
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # the heads were trained: the merged head differs from the initial one
    assert not torch.equal(merged.head.conv.weight, base["head.conv.weight"])
    # the LoRA deltas were folded into the backbone weights
    assert not torch.equal(
        merged.backbone.encoder.layer[0].attention.attention.query.weight,
        base["backbone.encoder.layer.0.attention.attention.query.weight"],
    )


@pytest.mark.skipif(not HAS_PEFT, reason="peft not installed")
def test_lora_bad_targets_raise():
    with pytest.raises(ValueError, match="target_modules"):
        apply_lora(_model(), target_modules=["conv"])


def test_param_groups_work_through_lora_wrapper():
    if not HAS_PEFT:
        pytest.skip("peft not installed")
    peft_model = apply_lora(_model(), r=2, alpha=2)
    groups = build_param_groups(peft_model, base_lr=1.0, layer_decay=0.5)
    by_name = {n: g["lr"] for g in groups for n in g["param_names"]}
    lora0 = [n for n in by_name if "layer.0." in n and "lora_A" in n]
    assert lora0 and all(by_name[n] == pytest.approx(0.25) for n in lora0)
    heads = [n for n in by_name if "modules_to_save" in n]
    assert heads and all(by_name[n] == pytest.approx(1.0) for n in heads)
