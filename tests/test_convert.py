"""Official ViTPose / ViTPose++ `.pth` -> vitpose_hf conversion.

The official-layout checkpoints are built here from a random vitpose_hf model with an explicit key
table written for the test (fused qkv = cat(q, k, v), mmpose head indices), independently of the
converter. The converted model is compared with the source model and with a from-scratch
re-implementation of the official forward pass (fused qkv reshaped as `(B, N, 3, heads, d)`).
"""

from __future__ import annotations

import argparse
import json
import logging
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_PLUS, tiny_config_kwargs

from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation, resample_position_embeddings
from vitpose_hf.convert_vitpose_to_hf import (
    convert_official_checkpoint,
    convert_official_state_dict,
    infer_config_from_state_dict,
    load_official_checkpoint,
    main,
)

HEAD_TABLE = {"deconv1": "deconv_layers.0", "batchnorm1": "deconv_layers.1", "deconv2": "deconv_layers.3",
              "batchnorm2": "deconv_layers.4", "conv": "final_layer"}
BLOCK_TABLE = {"layernorm_before": "norm1", "attention.output.dense": "attn.proj", "layernorm_after": "norm2",
               "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def _random_model(**overrides) -> VitPoseForPoseEstimation:
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(**overrides)))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if "num_batches_tracked" in name:
                t.fill_(7)
            elif "running_var" in name:
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2)
    return model.eval()


def _to_official(model: VitPoseForPoseEstimation, cls_token: bool = True) -> dict[str, torch.Tensor]:
    """The mmpose layout of `model`, written out key by key."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = model.config
    off = {
        "backbone.patch_embed.proj.weight": sd["backbone.embeddings.patch_embeddings.projection.weight"],
        "backbone.patch_embed.proj.bias": sd["backbone.embeddings.patch_embeddings.projection.bias"],
        "backbone.pos_embed": sd["backbone.embeddings.position_embeddings"],
        "backbone.last_norm.weight": sd["backbone.layernorm.weight"],
        "backbone.last_norm.bias": sd["backbone.layernorm.bias"],
    }
    if cls_token:
        off["backbone.cls_token"] = torch.zeros(1, 1, cfg.hidden_size)
    for i in range(cfg.num_hidden_layers):
        ours = f"backbone.encoder.layer.{i}."
        for kind in ("weight", "bias"):
            off[f"backbone.blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [sd[f"{ours}attention.attention.{n}.{kind}"] for n in ("query", "key", "value")], dim=0
            )
            for src, dst in BLOCK_TABLE.items():
                off[f"backbone.blocks.{i}.{dst}.{kind}"] = sd[f"{ours}{src}.{kind}"]
            for e in range(cfg.num_experts if cfg.num_experts > 1 else 0):
                off[f"backbone.blocks.{i}.mlp.experts.{e}.{kind}"] = sd[f"{ours}mlp.experts.{e}.{kind}"]
    for key, value in sd.items():
        m = re.match(r"^(head|extra_heads\.(\d+))\.(\w+)\.(.+)$", key)
        if m:
            prefix = "keypoint_head" if m.group(1) == "head" else f"associate_keypoint_heads.{int(m.group(2)) - 1}"
            off[f"{prefix}.{HEAD_TABLE[m.group(3)]}.{m.group(4)}"] = value
    return off


def _official_forward(off: dict, pixels: torch.Tensor, dataset_index: torch.Tensor, heads: int,
                      simple: bool) -> list[torch.Tensor]:
    """The official ViTPose(++) arithmetic straight from the mmpose-layout tensors; one heatmap per sample."""
    b = pixels.shape[0]
    x = F.conv2d(pixels, off["backbone.patch_embed.proj.weight"], off["backbone.patch_embed.proj.bias"],
                 stride=off["backbone.patch_embed.proj.weight"].shape[-1], padding=2)
    hp, wp = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    c = x.shape[-1]
    pos = off["backbone.pos_embed"]
    x = x + pos[:, 1:] + pos[:, :1]
    depth = len({k.split(".")[2] for k in off if k.startswith("backbone.blocks.")})
    for i in range(depth):
        p = f"backbone.blocks.{i}."
        h = F.layer_norm(x, (c,), off[p + "norm1.weight"], off[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, off[p + "attn.qkv.weight"], off[p + "attn.qkv.bias"])
        qkv = qkv.reshape(b, -1, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (c // heads) ** -0.5, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        x = x + F.linear((attn @ v).transpose(1, 2).reshape(b, -1, c), off[p + "attn.proj.weight"], off[p + "attn.proj.bias"])
        h = F.layer_norm(x, (c,), off[p + "norm2.weight"], off[p + "norm2.bias"], eps=1e-6)
        h = F.gelu(F.linear(h, off[p + "mlp.fc1.weight"], off[p + "mlp.fc1.bias"]))
        out = F.linear(h, off[p + "mlp.fc2.weight"], off[p + "mlp.fc2.bias"])
        e = 0
        parts = None
        while f"{p}mlp.experts.{e}.weight" in off:
            expert = F.linear(h, off[f"{p}mlp.experts.{e}.weight"], off[f"{p}mlp.experts.{e}.bias"])
            expert = expert * (dataset_index == e).view(-1, 1, 1)
            parts = expert if parts is None else parts + expert
            e += 1
        x = x + (torch.cat([out, parts], dim=-1) if parts is not None else out)
    x = F.layer_norm(x, (c,), off["backbone.last_norm.weight"], off["backbone.last_norm.bias"], eps=1e-6)
    feat = x.transpose(1, 2).reshape(b, c, hp, wp)
    results = []
    for n in range(b):
        idx = int(dataset_index[n])
        hp_ = "keypoint_head." if idx == 0 else f"associate_keypoint_heads.{idx - 1}."
        f = feat[n : n + 1]
        if simple:
            f = F.interpolate(F.relu(f), scale_factor=4, mode="bilinear", align_corners=False)
            results.append(F.conv2d(f, off[hp_ + "final_layer.weight"], off[hp_ + "final_layer.bias"], padding=1)[0])
            continue
        for d, bn in ((0, 1), (3, 4)):
            f = F.conv_transpose2d(f, off[f"{hp_}deconv_layers.{d}.weight"], stride=2, padding=1)
            f = F.relu(F.batch_norm(f, off[f"{hp_}deconv_layers.{bn}.running_mean"], off[f"{hp_}deconv_layers.{bn}.running_var"],
                                    off[f"{hp_}deconv_layers.{bn}.weight"], off[f"{hp_}deconv_layers.{bn}.bias"], eps=1e-5))
        results.append(F.conv2d(f, off[hp_ + "final_layer.weight"], off[hp_ + "final_layer.bias"])[0])
    return results


PLUS = TINY_PLUS


def test_cli_converts_vitpose_plus_checkpoint(tmp_path, caplog):
    source = _random_model(**PLUS)
    official = _to_official(source)
    path = tmp_path / "vitpose_plus_tiny.pth"
    torch.save({"state_dict": official, "meta": {"epoch": 210, "mmpose_version": "0.24.0"}}, path)
    out = tmp_path / "converted"
    with caplog.at_level(logging.INFO, logger="vitpose_hf.convert_vitpose_to_hf"):
        status = main(["--checkpoint", str(path), "--output", str(out), "--num-attention-heads", "4"])
    assert status == 0
    assert "backbone.cls_token" in caplog.text  # the dropped key is logged with its reason
    assert json.loads((out / "conversion.json").read_text())["dropped_keys"].keys() == {"backbone.cls_token"}

    model, info = VitPoseForPoseEstimation.from_pretrained(out, output_loading_info=True)
    model.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    cfg = model.config
    assert (cfg.num_experts, cfg.part_features, cfg.num_labels, cfg.use_simple_decoder) == (3, 8, 17, False)
    assert [(h["dataset_index"], h["num_labels"], h["name"]) for h in cfg.dataset_heads] == [(1, 14, "aic"), (2, 16, "mpii")]
    assert cfg.layer_norm_eps == 1e-6 and cfg.patch_padding == 2 and cfg.image_size == [64, 48]

    pixels = torch.randn(4, 3, 64, 48)
    index = torch.tensor([0, 2, 1, 0])
    with torch.no_grad():
        got = model(pixels, dataset_index=index).heatmaps
        expected = source(pixels, dataset_index=index).heatmaps
    assert got.shape == (4, 17, 32, 24)
    assert (got - expected).abs().max().item() <= 1e-5
    reference = _official_forward(official, pixels, index, heads=4, simple=False)
    for n, ref in enumerate(reference):
        k = ref.shape[0]
        assert (got[n, :k] - ref).abs().max().item() <= 1e-4
        assert not got[n, k:].any()  # rows past a smaller head's keypoints are zero


def test_convert_simple_head_and_image_size(tmp_path):
    source = _random_model(use_simple_decoder=True)
    official = _to_official(source, cls_token=False)
    config = infer_config_from_state_dict(official, num_attention_heads=4)
    assert config.use_simple_decoder and config.num_labels == 17 and config.image_size == [64, 48]

    model, dropped = convert_official_checkpoint({"state_dict": official}, num_attention_heads=4)
    assert dropped == {}
    pixels = torch.randn(2, 3, 64, 48)
    zero = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        got = model(pixels).heatmaps
    ref = torch.stack(_official_forward(official, pixels, zero, heads=4, simple=True))
    assert (got - ref).abs().max().item() <= 1e-4

    # --image-size: position embeddings resampled once at conversion (8x6 -> 12x9 grid)
    path = tmp_path / "simple.pth"
    torch.save({"state_dict": official, "meta": {}}, path)
    assert main(["--checkpoint", str(path), "--output", str(tmp_path / "big"), "--simple",
                 "--image-size", "96", "72", "--num-attention-heads", "4"]) == 0
    big = VitPoseForPoseEstimation.from_pretrained(tmp_path / "big").eval()
    assert big.config.image_size == [96, 72]
    expected_pos = resample_position_embeddings(official["backbone.pos_embed"], (8, 6), (12, 9))
    assert torch.allclose(big.backbone.embeddings.position_embeddings, expected_pos, atol=1e-6)
    with torch.no_grad():
        assert big(torch.randn(1, 3, 96, 72)).heatmaps.shape == (1, 17, 48, 36)


def test_convert_state_dict_is_pure_and_splits_qkv():
    source = _random_model(num_experts=2, part_features=8)
    official = _to_official(source)
    before = {k: v.clone() for k, v in official.items()}
    official["keypoint_head.loss.dummy"] = torch.zeros(1)
    new, dropped = convert_official_state_dict(official)
    assert set(dropped) == {"backbone.cls_token", "keypoint_head.loss.dummy"}
    assert all(isinstance(reason, str) and reason for reason in dropped.values())
    assert set(new) == set(source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(new[key], value), key
    c = source.config.hidden_size
    qkv = official["backbone.blocks.1.attn.qkv.weight"]
    assert torch.equal(new["backbone.encoder.layer.1.attention.attention.key.weight"], qkv[c : 2 * c])
    for key, value in before.items():  # input untouched
        assert torch.equal(official[key], value)


def _shape_only_state_dict(hidden: int, depth: int, heads_hint=None, simple=False) -> dict:
    """A state dict of meta tensors with an official model's shapes (for config inference only)."""
    meta = torch.device("meta")
    sd = {
        "backbone.pos_embed": torch.empty(1, 16 * 12 + 1, hidden, device=meta),
        "backbone.patch_embed.proj.weight": torch.empty(hidden, 3, 16, 16, device=meta),
    }
    for i in range(depth):
        sd[f"backbone.blocks.{i}.attn.qkv.weight"] = torch.empty(3 * hidden, hidden, device=meta)
        sd[f"backbone.blocks.{i}.attn.qkv.bias"] = torch.empty(3 * hidden, device=meta)
        sd[f"backbone.blocks.{i}.mlp.fc1.weight"] = torch.empty(4 * hidden, hidden, device=meta)
    if simple:
        sd["keypoint_head.final_layer.weight"] = torch.empty(17, hidden, 3, 3, device=meta)
    else:
        sd["keypoint_head.deconv_layers.0.weight"] = torch.empty(hidden, 256, 4, 4, device=meta)
        sd["keypoint_head.deconv_layers.3.weight"] = torch.empty(256, 256, 4, 4, device=meta)
        sd["keypoint_head.final_layer.weight"] = torch.empty(17, 256, 1, 1, device=meta)
    return sd


@pytest.mark.parametrize("hidden, depth, heads, simple", [
    (384, 12, 12, False), (768, 12, 12, True), (1024, 24, 16, False), (1280, 32, 16, True),
])
def test_infer_config_uses_size_table(hidden, depth, heads, simple):
    config = infer_config_from_state_dict(_shape_only_state_dict(hidden, depth, simple=simple))
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (hidden, depth, heads)
    assert config.use_simple_decoder is simple and config.image_size == [256, 192]
    assert config.patch_size == [16, 16] and config.mlp_ratio == 4 and config.num_experts == 1
    if not simple:
        assert config.decoder_hidden_size == 256 and config.num_deconv_layers == 2


def test_vitpose_plus_small_part_features_96():
    sd = _shape_only_state_dict(384, 12)
    for i in range(12):
        for e in range(6):
            sd[f"backbone.blocks.{i}.mlp.experts.{e}.weight"] = torch.empty(96, 1536, device="meta")
    for j, k in enumerate((14, 16, 17, 17, 133)):
        sd[f"associate_keypoint_heads.{j}.deconv_layers.0.weight"] = torch.empty(384, 256, 4, 4, device="meta")
        sd[f"associate_keypoint_heads.{j}.deconv_layers.3.weight"] = torch.empty(256, 256, 4, 4, device="meta")
        sd[f"associate_keypoint_heads.{j}.final_layer.weight"] = torch.empty(k, 256, 1, 1, device="meta")
    config = infer_config_from_state_dict(sd)
    assert (config.num_experts, config.part_features) == (6, 96)
    assert [(h["dataset_index"], h["num_labels"], h["name"]) for h in config.dataset_heads] == [
        (1, 14, "aic"), (2, 16, "mpii"), (3, 17, "ap10k"), (4, 17, "apt36k"), (5, 133, "wholebody")]


# ----------------------------------------------------------------------------- bad input
def test_corrupt_pth_raises_value_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"PK\x03\x04 this is not a real checkpoint" * 10)
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_official_checkpoint(path)
    assert main(["--checkpoint", str(path), "--output", str(tmp_path / "out")]) == 1
    with pytest.raises(ValueError, match="does not exist"):
        load_official_checkpoint(tmp_path / "missing.pth")


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    # an arbitrary class instance: unpickling it would import and call code
    torch.save({"state_dict": {}, "meta": {"args": argparse.Namespace(lr=0.1)}}, path)
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_official_checkpoint(path)


def test_missing_and_inconsistent_keys_are_named(tmp_path):
    official = _to_official(_random_model())
    no_pos = {k: v for k, v in official.items() if k != "backbone.pos_embed"}
    with pytest.raises(ValueError, match="backbone.pos_embed"):
        convert_official_checkpoint(no_pos, num_attention_heads=4)
    no_fc2 = {k: v for k, v in official.items() if k != "backbone.blocks.1.mlp.fc2.weight"}
    with pytest.raises(ValueError, match=r"missing keys \['backbone.encoder.layer.1.mlp.fc2.weight'\]"):
        convert_official_checkpoint(no_fc2, num_attention_heads=4)
    gap = {k: v for k, v in official.items() if not k.startswith("backbone.blocks.0.")}
    with pytest.raises(ValueError, match=r"lacks backbone.blocks \[0\]"):
        convert_official_checkpoint(gap, num_attention_heads=4)
    with pytest.raises(ValueError, match="classic head but a simple decoder"):
        convert_official_checkpoint(official, use_simple_decoder=True, num_attention_heads=4)
    bad_qkv = dict(official)
    bad_qkv["backbone.blocks.0.attn.qkv.bias"] = torch.zeros(31)
    with pytest.raises(ValueError, match=r"qkv.bias has shape \(31,\); a fused q, k, v of width 32"):
        convert_official_state_dict(bad_qkv)
    with pytest.raises(ValueError, match="not in the size table"):
        infer_config_from_state_dict(official)  # width 32 has no table entry
    with pytest.raises(ValueError, match="not a tensor"):
        convert_official_checkpoint({"state_dict": {"backbone.pos_embed": "oops"}})


def test_backbone_only_checkpoint_needs_a_decoder_choice():
    official = {k: v for k, v in _to_official(_random_model()).items() if k.startswith("backbone.")}
    with pytest.raises(ValueError, match="--simple or --classic"):
        convert_official_checkpoint(official, num_attention_heads=4)
    model, _ = convert_official_checkpoint(official, use_simple_decoder=True, num_attention_heads=4)
    assert model.config.use_simple_decoder and model.config.num_labels == 17


def test_cli_to_transformers_and_from_directories(tmp_path):
    transformers = pytest.importorskip("transformers")
    source = _random_model(use_simple_decoder=True)
    path = tmp_path / "simple.pth"
    torch.save({"state_dict": _to_official(source), "meta": {}}, path)
    hf_dir = tmp_path / "hf"
    assert main(["--checkpoint", str(path), "--output", str(hf_dir), "--to-transformers",
                 "--num-attention-heads", "4"]) == 0
    assert json.loads((hf_dir / "config.json").read_text())["model_type"] == "vitpose"
    reference = transformers.VitPoseForPoseEstimation.from_pretrained(hf_dir).eval()
    pixels = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = source(pixels).heatmaps
        assert (reference(pixels).heatmaps - expected).abs().max().item() <= 1e-5
    # a transformers directory -> ours
    ours_dir = tmp_path / "ours"
    assert main(["--checkpoint", str(hf_dir), "--output", str(ours_dir)]) == 0
    assert json.loads((ours_dir / "config.json").read_text())["model_type"] == "vitpose_hf"
    with torch.no_grad():
        got = VitPoseForPoseEstimation.from_pretrained(ours_dir).eval()(pixels).heatmaps
    assert (got - expected).abs().max().item() <= 1e-5
    # a directory whose decoder contradicts the request fails with status 1
    assert main(["--checkpoint", str(ours_dir), "--output", str(tmp_path / "x"), "--classic"]) == 1


def test_cli_help_names_the_program_logs_success_at_info_and_writes_the_processor(tmp_path, caplog, capsys):
    """Issue 13 item 5 / 3: `vitpose-hf convert --help` showed the module path, success was logged at
    WARNING (twice for the dropped keys), and the output had no preprocessor_config.json."""
    from vitpose_hf.cli import main as cli_main

    with pytest.raises(SystemExit):
        cli_main(["convert", "--help"])
    assert capsys.readouterr().out.startswith("usage: vitpose-hf convert")

    source = _random_model(use_simple_decoder=True)  # transformers' format needs the simple or a 256-wide head
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": _to_official(source), "meta": {}}, path)
    for fmt, extra in (("ours", []), ("transformers", ["--to-transformers"])):
        out = tmp_path / fmt
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="vitpose_hf.convert_vitpose_to_hf"):
            assert main(["--checkpoint", str(path), "--output", str(out), "--num-attention-heads", "4", *extra]) == 0
        records = [r for r in caplog.records if r.name == "vitpose_hf.convert_vitpose_to_hf"]
        assert [r.levelname for r in records if r.getMessage().startswith("converted ")] == ["INFO"]
        assert not [r for r in records if r.levelno >= logging.WARNING]
        assert sum("dropped backbone.cls_token" in r.getMessage() for r in records) == 1
        saved = json.loads((out / "preprocessor_config.json").read_text())
        assert saved["size"] == {"height": 64, "width": 48}
    transformers = pytest.importorskip("transformers")
    hf_processor = transformers.VitPoseImageProcessor.from_pretrained(tmp_path / "transformers")
    assert type(hf_processor).__module__.startswith("transformers.")
    from vitpose_hf import VitPoseTopDownImageProcessor

    ours = VitPoseTopDownImageProcessor.from_pretrained(tmp_path / "ours")
    assert (ours.size["height"], ours.size["width"]) == (64, 48)
