"""The one checkpoint key map (`vitpose_hf.checkpoint_keys`): one unwrap rule, one reader, one fused
qkv split and one key table, shared by the converter, the MAE loader and `--backbone_init`.

The official-layout files are written by `test_convert._to_official` (its own key table, not the
library's), so the tests check the library's table against an independent one.
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config_kwargs
from safetensors.torch import save_file
from test_convert import _random_model, _to_official

from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation, load_mae_checkpoint_into_backbone
from vitpose_hf import resample_position_embeddings
from vitpose_hf.checkpoint_keys import (
    backbone_key_names,
    map_vit_backbone,
    read_checkpoint,
    split_fused_qkv,
    unwrap_state_dict,
)
from vitpose_hf.convert_vitpose_to_hf import convert_official_checkpoint
from vitpose_hf.training.build import load_backbone_init


def _backbone_only(model: VitPoseForPoseEstimation) -> dict[str, torch.Tensor]:
    """An official backbone-only file: `pos_embed`, `blocks.*`, `last_norm.*` without `backbone.`."""
    return {k[len("backbone."):]: v for k, v in _to_official(model).items() if k.startswith("backbone.")}


def _assert_same_backbone(a: VitPoseForPoseEstimation, b: VitPoseForPoseEstimation) -> None:
    for (name, x), (_, y) in zip(a.backbone.state_dict().items(), b.backbone.state_dict().items()):
        assert torch.equal(x, y), name


# ----------------------------------------------------------------------------- unwrapping and reading
def test_one_unwrap_rule():
    t = torch.zeros(2)
    assert list(unwrap_state_dict({"state_dict": {"a": t}, "meta": {"epoch": 3}})) == ["a"]
    assert list(unwrap_state_dict({"model": {"b": t}, "state_dict": {"a": t}})) == ["a"]  # state_dict first
    assert list(unwrap_state_dict({"model": {"b": t}, "module": {"c": t}})) == ["b"]
    assert list(unwrap_state_dict({"module": {"module.x": t, "module.y": t}})) == ["x", "y"]
    # DDP's `module.` goes only when every key carries it; `backbone.` always stays
    assert list(unwrap_state_dict({"module.x": t, "y": t})) == ["module.x", "y"]
    assert list(unwrap_state_dict({"backbone.x": t})) == ["backbone.x"]
    with pytest.raises(ValueError, match=r"^ckpt\.pth: entry 'epoch' is a int, not a tensor$"):
        unwrap_state_dict({"model": {"x": t, "epoch": 3}}, "ckpt.pth")
    with pytest.raises(ValueError, match="holds a list, expected a dict of tensors"):
        unwrap_state_dict([t])
    with pytest.raises(ValueError, match="holds no tensors"):
        unwrap_state_dict({"state_dict": {}})


def test_read_checkpoint_reads_folders_safetensors_and_torch_files(tmp_path):
    sd = {"module.w": torch.arange(6.0).reshape(2, 3)}
    (tmp_path / "st").mkdir()
    save_file(sd, str(tmp_path / "st" / "model.safetensors"))
    (tmp_path / "bin").mkdir()
    torch.save(sd, tmp_path / "bin" / "pytorch_model.bin")
    torch.save({"module": sd, "epoch": 7}, tmp_path / "wrapped.pth")
    for path in (tmp_path / "st", tmp_path / "st" / "model.safetensors", tmp_path / "bin", tmp_path / "wrapped.pth"):
        got = read_checkpoint(path)
        assert list(got) == ["w"] and torch.equal(got["w"], sd["module.w"]), path

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no model.safetensors or pytorch_model.bin"):
        read_checkpoint(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"checkpoint file .*missing\.pth does not exist"):
        read_checkpoint(tmp_path / "missing.pth")
    for name in ("broken.safetensors", "broken.pth"):
        (tmp_path / name).write_bytes(b"\x00not a checkpoint" * 8)
        with pytest.raises(ValueError, match=rf"cannot read checkpoint .*{name}: "):
            read_checkpoint(tmp_path / name)


# ----------------------------------------------------------------------------- the key table
def test_split_fused_qkv_checks_the_width():
    fused = torch.arange(24.0).reshape(6, 4)[:, :2]  # (3C, C) with C = 2
    q, k, v = split_fused_qkv(fused, 2, "blocks.0.attn.qkv.weight")
    assert torch.equal(torch.cat([q, k, v]), fused)
    assert [tuple(p.shape) for p in split_fused_qkv(torch.zeros(6), 2, "b")] == [(2,)] * 3
    for bad in (torch.zeros(9, 3), torch.zeros(6, 3), torch.zeros(7)):
        with pytest.raises(ValueError, match=r"blocks\.0\.attn\.qkv\.weight has shape .* of width 2 is \(6, 2\) or \(6,\)"):
            split_fused_qkv(bad, 2, "blocks.0.attn.qkv.weight")


def test_the_table_names_official_and_timm_layouts_alike():
    source = _random_model(num_experts=2, part_features=8)
    official = _to_official(source)
    bare = _backbone_only(source)
    assert backbone_key_names(official)["keypoint_head.final_layer.weight"] is None
    assert backbone_key_names(bare)["blocks.0.norm1.weight"] == "blocks.0.norm1.weight"
    full, dropped_full = map_vit_backbone(official)
    only, dropped_only = map_vit_backbone(bare)
    assert [(m.name, m.rule, m.block) for m in full] == [(m.name, m.rule, m.block) for m in only]
    assert {m.name for m in full} == set(source.backbone.state_dict())
    assert set(dropped_full) == {"backbone.cls_token"} | {k for k in official if k.startswith("keypoint_head.")}
    assert set(dropped_only) == {"cls_token"}
    rules = {m.name: m.rule for m in full}
    assert rules["layernorm.weight"] == "copy"  # official `last_norm`
    assert rules["encoder.layer.1.mlp.experts.1.weight"] == "copy" and rules["encoder.layer.1.mlp.fc2.bias"] == "fc2"
    timm = {("norm." + k.split(".")[1] if k.startswith("last_norm.") else k): v for k, v in bare.items()}
    assert {m.name: m.rule for m in map_vit_backbone(timm)[0]}["layernorm.weight"] == "final_norm"
    with pytest.raises(ValueError, match=r"'last_norm.weight' and 'norm.weight' both map to layernorm.weight"):
        map_vit_backbone(dict(bare, **{"norm.weight": bare["last_norm.weight"]}))
    with pytest.raises(ValueError, match="not a ViT checkpoint: no 'patch_embed.proj.weight'"):
        map_vit_backbone({"backbone.embeddings.position_embeddings": torch.zeros(1, 3, 4)})


def test_beit_q_and_v_biases_load_with_a_zero_key_bias():
    source = _random_model()
    bare = _backbone_only(source)
    for i in range(2):
        qkv = bare.pop(f"blocks.{i}.attn.qkv.bias")
        bare[f"blocks.{i}.attn.q_bias"], _, bare[f"blocks.{i}.attn.v_bias"] = qkv.chunk(3)
    target = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs()))
    report = load_mae_checkpoint_into_backbone(target, bare)
    assert report.missing == [] and set(report.dropped) == {"cls_token"}
    attn = target.backbone.encoder.layer[1].attention.attention
    ref = source.backbone.encoder.layer[1].attention.attention
    assert torch.equal(attn.query.bias, ref.query.bias) and torch.equal(attn.value.bias, ref.value.bias)
    assert not attn.key.bias.any()
    # the converter reads the same table (the key bias is zeros, so qkv_bias stays on)
    model, _ = convert_official_checkpoint(bare, use_simple_decoder=True, num_attention_heads=4)
    assert model.config.qkv_bias and not model.backbone.encoder.layer[0].attention.attention.key.bias.any()


# ----------------------------------------------------------------------------- one behaviour everywhere
def test_backbone_init_loads_an_official_backbone_only_file(tmp_path):
    """Bare `pos_embed` of a non-square grid and `last_norm.*`: the converter always took them;
    `--backbone_init` sent them to the MAE rules (square grids, `norm.*`) and lost the final norm."""
    source = _random_model()
    path = tmp_path / "vitpose_backbone.pth"
    torch.save({"state_dict": _backbone_only(source), "meta": {}}, path)
    target = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(num_labels=5)))
    report = load_backbone_init(target, str(path))
    assert report["missing"] == [] and report["unexpected"] == ["cls_token"]
    _assert_same_backbone(source, target)
    converted, _ = convert_official_checkpoint(str(path), use_simple_decoder=False, num_attention_heads=4)
    _assert_same_backbone(source, converted)


def test_official_grid_is_resampled_for_another_input_size():
    source = _random_model(image_size=(256, 192), patch_size=16)  # the official 16x12 grid: 1 + 192 slots
    smaller = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(image_size=(128, 96), patch_size=16)))
    report = load_mae_checkpoint_into_backbone(smaller, _backbone_only(source))
    expected = resample_position_embeddings(source.backbone.embeddings.position_embeddings.detach(), (16, 12), (8, 6))
    torch.testing.assert_close(smaller.backbone.embeddings.position_embeddings.detach(), expected)
    assert "pos_embed grid 16x12 -> 8x6 (bicubic)" in report.notes


def test_converter_reads_ddp_module_wrappers():
    source = _random_model()
    model, dropped = convert_official_checkpoint({"module": _to_official(source)}, num_attention_heads=4)
    assert set(dropped) == {"backbone.cls_token"}
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
