"""MAE pre-training: masking, loss on masked patches only, encoder on kept tokens only, non-square
patchify / sin-cos positions, MAE checkpoint loading, hand-over to the pose model, examples/run_mae.py."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, tiny_config_kwargs
from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation
from vitpose_hf.modeling_vitpose_mae import (
    VitPoseForMaskedImageModeling,
    get_2d_sincos_position_embeddings,
    load_mae_checkpoint_into_backbone,
    patchify,
    random_masking,
    unpatchify,
)

GRID = (8, 6)  # 64x48 input, patch 8
N = GRID[0] * GRID[1]


def mae_config(**overrides) -> VitPoseConfig:
    kwargs = dict(mae_decoder_hidden_size=16, mae_decoder_num_hidden_layers=1, mae_decoder_num_attention_heads=2)
    kwargs.update(overrides)
    return VitPoseConfig(**tiny_config_kwargs(**kwargs))


def mae_model(**overrides) -> VitPoseForMaskedImageModeling:
    return VitPoseForMaskedImageModeling(mae_config(**overrides)).eval()


def np_patchify(images: np.ndarray, ph: int, pw: int) -> np.ndarray:
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // ph, ph, w // pw, pw).transpose(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // ph) * (w // pw), ph * pw * c)


def load_run_mae():
    spec = importlib.util.spec_from_file_location("run_mae", ROOT / "examples" / "run_mae.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- masking and loss
@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.9])
def test_masking_keeps_exact_fraction_chosen_by_noise(ratio):
    model = mae_model()
    noise = torch.rand(3, N)
    out = model(torch.randn(3, 3, 64, 48), noise=noise, mask_ratio=ratio)
    keep = N - int(N * ratio)
    assert out.mask.shape == (3, N)
    assert ((1 - out.mask).sum(1) == keep).all()
    order = np.argsort(noise.numpy(), axis=1, kind="stable")
    for b in range(3):
        kept = set(np.nonzero(out.mask[b].numpy() == 0)[0].tolist())
        assert kept == set(order[b, :keep].tolist())
    np.testing.assert_array_equal(out.ids_restore.numpy(), np.argsort(order, axis=1))
    assert out.reconstruction.shape == (3, N, 8 * 8 * 3)
    if ratio == 0.75:
        assert keep == N // 4  # exactly (1 - 0.75) of the 48 patches


def test_encoder_sees_only_kept_tokens():
    model = mae_model()
    out = model(torch.randn(2, 3, 64, 48), noise=torch.rand(2, N), output_hidden_states=True)
    assert all(h.shape[1] == N // 4 for h in out.hidden_states)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_counts_masked_patches_only(norm_pix):
    model = mae_model(mae_norm_pix_loss=norm_pix)
    images = torch.randn(2, 3, 64, 48)
    out = model(images, noise=torch.rand(2, N))
    target = np_patchify(images.numpy().astype(np.float64), 8, 8)
    if norm_pix:
        target = (target - target.mean(-1, keepdims=True)) / np.sqrt(target.var(-1, ddof=1, keepdims=True) + 1e-6)
    mask = out.mask.numpy().astype(bool)
    per_patch = ((out.reconstruction.detach().numpy() - target) ** 2).mean(-1)
    assert out.loss.item() == pytest.approx(per_patch[mask].mean(), rel=1e-5)

    recon = out.reconstruction.detach().clone()
    kept_b, kept_n = np.argwhere(~mask)[0]
    masked_b, masked_n = np.argwhere(mask)[0]
    changed = recon.clone()
    changed[kept_b, kept_n] += 100.0
    assert model.forward_loss(images, changed, out.mask).item() == model.forward_loss(images, recon, out.mask).item()
    changed = recon.clone()
    changed[masked_b, masked_n] += 1.0
    assert model.forward_loss(images, changed, out.mask).item() > model.forward_loss(images, recon, out.mask).item()
    recon.requires_grad_(True)
    model.forward_loss(images, recon, out.mask).backward()
    grad_norm = recon.grad.norm(dim=-1).numpy()
    assert (grad_norm[~mask] == 0).all() and (grad_norm[mask] > 0).all()


def _noise_masking(masked_cells, kept_cells):
    """Noise that masks `masked_cells` and keeps `kept_cells` ((row, col) grid cells) at ratio 0.75."""
    noise = torch.rand(1, N) * 0.5 + 0.25
    for r, c in masked_cells:
        noise[0, r * GRID[1] + c] = 0.99
    for r, c in kept_cells:
        noise[0, r * GRID[1] + c] = 0.01
    return noise


def test_masked_pixels_do_not_reach_the_encoder():
    model = mae_model()  # mae_hide_masked_pixels=True (default)
    noise = _noise_masking([(2, 2)], [(3, 2), (2, 3)])
    images = torch.randn(1, 3, 64, 48)
    out = model(images, noise=noise)
    edited = images.clone()
    pixel_mask = out.mask.reshape(1, 1, *GRID).repeat_interleave(8, 2).repeat_interleave(8, 3).bool().expand_as(images)
    edited[pixel_mask] = torch.randn(int(pixel_mask.sum()))
    out2 = model(edited, noise=noise)
    assert torch.equal(out.reconstruction, out2.reconstruction)
    assert out.loss.item() != out2.loss.item()  # the targets did change


def test_padding_leak_without_hiding():
    """With the padded (k16-s16-p2 style) conv a kept token sees 2 border pixels of its upper / left
    neighbours: without mae_hide_masked_pixels those border pixels leak, the interior does not."""
    model = mae_model(mae_hide_masked_pixels=False)
    noise = _noise_masking([(2, 2)], [(3, 2), (2, 3)])  # masked cell (2, 2), kept cells below and right
    images = torch.randn(1, 3, 64, 48)
    base = model(images, noise=noise).reconstruction
    interior = images.clone()
    interior[..., 16:22, 16:22] += 5.0  # rows/cols 16..21 of cell (2, 2): seen by no kept token
    assert torch.equal(model(interior, noise=noise).reconstruction, base)
    border = images.clone()
    border[..., 22:24, 16:22] += 5.0  # last 2 rows of cell (2, 2): seen by the kept token below
    assert not torch.allclose(model(border, noise=noise).reconstruction, base)


def test_model_properties_every_param_trained_batch_and_checkpointing_invariant():
    model = mae_model()
    images, noise = torch.randn(3, 3, 64, 48), torch.rand(3, N)
    out = model(images, noise=noise)
    one = model(images[1:2], noise=noise[1:2])
    torch.testing.assert_close(one.reconstruction[0], out.reconstruction[1], rtol=1e-5, atol=1e-5)
    model.train()
    model(images, noise=noise).loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    model(images, noise=noise).loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-5, atol=1e-6, msg=n)
    eager = VitPoseForMaskedImageModeling(mae_config(attn_implementation="eager")).eval()
    eager.load_state_dict(model.state_dict())
    torch.testing.assert_close(eager(images, noise=noise).reconstruction, model.eval()(images, noise=noise).reconstruction,
                               rtol=1e-5, atol=1e-5)


def test_knowledge_tokens_and_experts_pass_through():
    model = mae_model(num_knowledge_tokens=2, num_experts=2, part_features=8)
    out = model(torch.randn(2, 3, 64, 48), noise=torch.rand(2, N), dataset_index=torch.tensor([0, 1]),
                output_hidden_states=True)
    assert out.hidden_states[-1].shape == (2, 2 + N // 4, 32) and out.reconstruction.shape == (2, N, 192)
    with pytest.raises(ValueError, match="dataset_index"):
        model(torch.randn(1, 3, 64, 48), dataset_index=torch.tensor([5]))


# ----------------------------------------------------------------------------- helpers
@pytest.mark.parametrize("patch", [(8, 8), (8, 4), (4, 6)])
def test_patchify_matches_numpy_and_round_trips(patch):
    images = torch.randn(2, 3, 64, 48)
    patches = patchify(images, patch)
    np.testing.assert_array_equal(patches.numpy(), np_patchify(images.numpy(), *patch))
    grid = (64 // patch[0], 48 // patch[1])
    assert torch.equal(unpatchify(patches, grid, patch), images)
    with pytest.raises(ValueError, match="do not fit"):
        unpatchify(patches, (grid[1], grid[0] + 1), patch)


def _np_sincos_2d(dim: int, h: int, w: int) -> np.ndarray:
    """facebookresearch/mae's get_2d_sincos_pos_embed, generalised to an (h, w) grid (numpy)."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))  # w goes first
    grid = np.stack(grid, axis=0).reshape(2, 1, h, w)
    return np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)


@pytest.mark.parametrize("grid", [(4, 4), (16, 12), (3, 5)])
def test_sincos_position_embeddings_match_mae_formula(grid):
    ours = get_2d_sincos_position_embeddings(32, grid)
    assert ours.shape == (grid[0] * grid[1], 32)
    np.testing.assert_allclose(ours.numpy(), _np_sincos_2d(32, *grid), atol=1e-6)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5, float("nan")])
def test_mask_ratio_outside_unit_interval_raises(ratio):
    model = mae_model()
    with pytest.raises(ValueError, match="mask_ratio"):
        model(torch.randn(1, 3, 64, 48), mask_ratio=ratio)
    with pytest.raises(ValueError, match="mask_ratio"):
        VitPoseForMaskedImageModeling(mae_config(mae_mask_ratio=ratio))


def test_bad_inputs_raise_clear_errors():
    model = mae_model()
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        model(torch.randn(1, 3, 60, 48))
    with pytest.raises(ValueError, match=r"noise must have shape \(B, N\) = \(1, 48\)"):
        model(torch.randn(1, 3, 64, 48), noise=torch.rand(1, 47))
    with pytest.raises(ValueError, match="keeps"):
        random_masking(1, 4, 0.1)  # int(4 * 0.1) = 0 masked patches: nothing to learn
    with pytest.raises(ValueError, match="global attention"):
        VitPoseForMaskedImageModeling(mae_config(attention_type="window", window_size=(4, 3)))
    with pytest.raises(ValueError, match="divisible by 4"):
        VitPoseForMaskedImageModeling(mae_config(mae_decoder_hidden_size=18, mae_decoder_num_attention_heads=3))


# ----------------------------------------------------------------------------- hand-over to the pose model
def test_pretrained_encoder_loads_into_pose_model(tmp_path):
    mae = mae_model()
    mae.save_pretrained(tmp_path)
    pose, info = VitPoseForPoseEstimation.from_pretrained(tmp_path, output_loading_info=True)
    backbone_keys = [k for k in pose.state_dict() if k.startswith("backbone.")]
    assert backbone_keys and not [k for k in info["missing_keys"] if not k.startswith("head.")]
    assert info["unexpected_keys"] and all(k.startswith("decoder.") for k in info["unexpected_keys"])
    assert not info["mismatched_keys"]
    mae_state = mae.state_dict()
    for key in backbone_keys:
        assert torch.equal(pose.state_dict()[key], mae_state[key]), key
    images = torch.randn(2, 3, 64, 48)
    torch.testing.assert_close(pose.eval().backbone(images).feature_map, mae.backbone(images).feature_map, rtol=0, atol=0)
    again = VitPoseForMaskedImageModeling.from_pretrained(tmp_path).eval()
    noise = torch.rand(2, N)
    assert torch.equal(again(images, noise=noise).reconstruction, mae(images, noise=noise).reconstruction)


# ----------------------------------------------------------------------------- MAE checkpoint loading
def _fb_checkpoint(width=32, depth=3, kernel=14, side=4, heads=4, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    sd = {"cls_token": r(1, 1, width), "pos_embed": r(1, 1 + side * side, width),
          "patch_embed.proj.weight": r(width, 3, kernel, kernel), "patch_embed.proj.bias": r(width),
          "norm.weight": r(width), "norm.bias": r(width), "mask_token": r(1, 1, 16),
          "decoder_embed.weight": r(16, width), "decoder_pos_embed": r(1, 1 + side * side, 16),
          "decoder_blocks.0.attn.qkv.weight": r(48, 16), "decoder_norm.weight": r(16), "decoder_pred.weight": r(588, 16)}
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": r(width), p + "norm1.bias": r(width), p + "attn.qkv.weight": r(3 * width, width) * 0.2,
                   p + "attn.qkv.bias": r(3 * width), p + "attn.proj.weight": r(width, width) * 0.2,
                   p + "attn.proj.bias": r(width), p + "norm2.weight": r(width), p + "norm2.bias": r(width),
                   p + "mlp.fc1.weight": r(4 * width, width) * 0.2, p + "mlp.fc1.bias": r(4 * width),
                   p + "mlp.fc2.weight": r(width, 4 * width) * 0.2, p + "mlp.fc2.bias": r(width)})
    return sd


def _reference_timm_block(x, sd, i, heads):
    """A timm / MAE ViT block computed straight from the fused-qkv checkpoint tensors."""
    p = f"blocks.{i}."
    b, n, c = x.shape
    h = F.layer_norm(x, (c,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
    qkv = (h @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    attn = ((qkv[0] @ qkv[1].transpose(-1, -2)) * (c // heads) ** -0.5).softmax(-1)
    ctx = (attn @ qkv[2]).transpose(1, 2).reshape(b, n, c)
    x = x + ctx @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
    h = F.layer_norm(x, (c,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
    h = F.gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
    return x + h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]


def test_mae_checkpoint_loads_into_pose_backbone(tmp_path):
    sd = _fb_checkpoint()
    path = tmp_path / "mae_pretrain.pth"
    torch.save({"model": sd, "epoch": 799}, path)
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(patch_size=16))).eval()  # grid 4x3, depth 2
    report = load_mae_checkpoint_into_backbone(model, path)
    backbone = model.backbone
    assert report.missing == [] and report.loaded == sorted(backbone.state_dict())
    for key in ("cls_token", "mask_token", "decoder_embed.weight", "decoder_pos_embed", "decoder_pred.weight",
                "blocks.2.attn.qkv.weight", "blocks.2.mlp.fc2.bias"):
        assert key in report.dropped and report.dropped[key], key
    assert "only 2 layers" in report.dropped["blocks.2.norm1.weight"]
    assert not any(k.startswith(("blocks.0", "blocks.1", "patch_embed", "pos_embed", "norm.")) for k in report.dropped)

    # position embeddings: cls slot -> extra slot; 4x4 grid -> 4x3 (bicubic, independent computation)
    pos = backbone.embeddings.position_embeddings.detach()
    assert torch.equal(pos[0, 0], sd["pos_embed"][0, 0])
    grid = sd["pos_embed"][0, 1:].reshape(4, 4, 32).permute(2, 0, 1)[None]
    expected = F.interpolate(grid, size=(4, 3), mode="bicubic", align_corners=False)[0].permute(1, 2, 0).reshape(12, 32)
    torch.testing.assert_close(pos[0, 1:], expected)
    # patch kernel 14 -> 16 zero-padded (the official loader's default)
    kernel = backbone.embeddings.patch_embeddings.projection.weight.detach()
    assert torch.equal(kernel[:, :, 1:15, 1:15], sd["patch_embed.proj.weight"])
    assert kernel[:, :, 0].abs().sum() == 0 and kernel[:, :, :, 15].abs().sum() == 0
    assert torch.equal(backbone.layernorm.weight.detach(), sd["norm.weight"])

    # the split q/k/v block computes exactly what the fused timm block computes
    x = torch.randn(2, 12, 32)
    for i in range(2):
        ours, _ = backbone.encoder.layer[i](x, None, (4, 3))
        torch.testing.assert_close(ours, _reference_timm_block(x, sd, i, heads=4), rtol=1e-4, atol=1e-5)

    bicubic = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(patch_size=16)))
    load_mae_checkpoint_into_backbone(bicubic, sd, patch_kernel="bicubic")
    torch.testing.assert_close(
        bicubic.backbone.embeddings.patch_embeddings.projection.weight.detach(),
        F.interpolate(sd["patch_embed.proj.weight"], size=(16, 16), mode="bicubic", align_corners=False),
    )


def test_mae_checkpoint_into_moe_backbone_and_errors():
    sd = _fb_checkpoint(kernel=16, depth=2)
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(patch_size=16, num_experts=2, part_features=8)))
    report = load_mae_checkpoint_into_backbone(model, sd)
    assert report.missing == []
    mlp = model.backbone.encoder.layer[1].mlp
    h = torch.randn(5, 128)
    full = h @ sd["blocks.1.mlp.fc2.weight"].T + sd["blocks.1.mlp.fc2.bias"]
    for e in range(2):
        torch.testing.assert_close(torch.cat([mlp.fc2(h), mlp.experts[e](h)], -1), full)
    with pytest.raises(ValueError, match="hidden_size"):
        load_mae_checkpoint_into_backbone(model, _fb_checkpoint(width=48, depth=1))
    with pytest.raises(ValueError, match="patch_embed.proj.weight"):
        load_mae_checkpoint_into_backbone(model, {"state_dict": {"foo": torch.zeros(1)}})


# ----------------------------------------------------------------------------- examples/run_mae.py
def test_run_mae_rejects_bad_input(tmp_path):
    run_mae = load_run_mae()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no images"):
        run_mae.list_images(empty)
    with pytest.raises(ValueError, match="does not exist"):
        run_mae.list_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="mask_ratio"):
        run_mae.parse_args(["--output_dir", str(tmp_path), "--synthetic", "2", "--mask_ratio", "1.0"])
    with pytest.raises(ValueError, match="not a multiple"):
        run_mae.parse_args(["--output_dir", str(tmp_path), "--synthetic", "2", "--image_size", "250", "192"])
    with pytest.raises(ValueError, match="exactly one"):
        run_mae.build_items(run_mae.parse_args(["--output_dir", str(tmp_path), "--image_dir", str(empty), "--synthetic", "2"]))


def test_run_mae_image_folder_to_pose_init(tmp_path):
    run_mae = load_run_mae()
    images = run_mae.write_synthetic_images(tmp_path / "images", 6, seed=1, size=(72, 60))
    out = tmp_path / "out"
    init = _fb_checkpoint(width=64, depth=4, kernel=8, side=5)  # MAE layout, continued on our images
    torch.save({"model": init}, tmp_path / "init.pth")
    result = run_mae.main([
        "--image_dir", str(images), "--output_dir", str(out), "--model_size", "tiny", "--image_size", "64", "48",
        "--patch_size", "8", "--batch_size", "4", "--max_steps", "3", "--num_workers", "0", "--lr", "1e-12",
        "--save_reconstruction", str(out / "recon.png"), "--init_from", str(tmp_path / "init.pth"),
    ])
    assert len(result["history"]) == 3 and all(math.isfinite(h["loss"]) for h in result["history"])
    assert (out / "recon.png").is_file() and json.loads((out / "train_history.json").read_text())["num_processes"] == 1
    pose, info = VitPoseForPoseEstimation.from_pretrained(out, output_loading_info=True)
    assert all(k.startswith("head.") for k in info["missing_keys"])
    layer = pose.backbone.encoder.layer[3].attention.attention  # the --init_from weights, barely moved
    torch.testing.assert_close(layer.value.weight.detach(), init["blocks.3.attn.qkv.weight"][128:], rtol=0, atol=1e-6)


def test_loss_falls_on_real_person_crops(shared_data, tmp_path):
    """40 steps of a tiny MAE on crops of the coco_mini_train persons: the loss on a fixed batch of
    held-still crops with fixed masks falls well below the loss of the same initial weights."""
    run_mae = load_run_mae()
    folder = shared_data / "coco_mini_train"
    argv = [
        "--coco_json", str(folder / "person_keypoints.json"), "--image_root", str(folder / "images"),
        "--person_crops", "--output_dir", str(tmp_path), "--model_size", "tiny", "--image_size", "64", "48",
        "--patch_size", "8", "--batch_size", "16", "--max_steps", "40", "--num_workers", "0", "--lr", "2e-3",
        "--warmup_ratio", "0.05", "--no-norm_pix_loss", "--log_every", "100", "--seed", "0",
    ]
    result = run_mae.main(argv)
    losses = [h["loss"] for h in result["history"]]
    assert len(losses) == 40 and np.mean(losses[-5:]) < np.mean(losses[:5])

    args = run_mae.parse_args(argv)
    torch.manual_seed(args.seed)  # the script seeds the same way before building the model
    initial = VitPoseForMaskedImageModeling(run_mae.build_config(args)).eval()
    trained = VitPoseForMaskedImageModeling.from_pretrained(tmp_path).eval()
    items = run_mae.build_items(args)
    crops = run_mae.MaeImageDataset(items, args.image_size, train=False)
    images = torch.stack([crops[i] for i in range(0, len(crops), max(len(crops) // 24, 1))])
    noise = torch.rand(images.shape[0], N, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before, after = initial(images, noise=noise).loss.item(), trained(images, noise=noise).loss.item()
    print(f"MAE loss on {images.shape[0]} real person crops: {before:.4f} at init -> {after:.4f} after 40 steps")
    assert after < 0.85 * before, (before, after)


@pytest.mark.slow
def test_two_process_run(tmp_path):
    """`torchrun --nproc_per_node 2` (gloo on CPU); the same script under `accelerate launch`."""
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           str(ROOT / "examples" / "run_mae.py"), "--synthetic", "8", "--output_dir", str(out), "--model_size", "tiny",
           "--image_size", "64", "48", "--patch_size", "8", "--batch_size", "2", "--max_steps", "3", "--num_workers", "0"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads((out / "train_history.json").read_text())
    assert log["num_processes"] == 2 and len(log["history"]) == 3
    assert "effective batch 4" in proc.stderr + proc.stdout
    _, info = VitPoseForPoseEstimation.from_pretrained(out, output_loading_info=True)
    assert all(k.startswith("head.") for k in info["missing_keys"])


def test_a_pose_checkpoint_opened_for_mae_warns_about_the_default_decoder(tmp_path, caplog):
    """Issue 13 item 5: a small pose checkpoint opened with AutoModelForMaskedImageModeling got MAE's
    512-wide 8-layer decoder (~100x the encoder) without a word."""
    import logging

    from transformers import AutoModelForMaskedImageModeling

    VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs())).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="vitpose_hf.modeling_vitpose_mae"):
        mae = AutoModelForMaskedImageModeling.from_pretrained(tmp_path)
    assert isinstance(mae, VitPoseForMaskedImageModeling)
    encoder = sum(p.numel() for p in mae.backbone.parameters())
    decoder = sum(p.numel() for p in mae.decoder.parameters())
    assert decoder > 10 * encoder
    warned = [r.getMessage() for r in caplog.records if "MAE decoder" in r.getMessage()]
    assert len(warned) == 1 and "mae_decoder_hidden_size 512" in warned[0] and f"{decoder / 1e6:.1f}M" in warned[0]

    caplog.clear()  # a decoder sized on purpose, and a saved MAE model reloaded, say nothing
    with caplog.at_level(logging.WARNING, logger="vitpose_hf.modeling_vitpose_mae"):
        sized = VitPoseForMaskedImageModeling(VitPoseConfig(**tiny_config_kwargs(), mae_decoder_hidden_size=32,
                                                            mae_decoder_num_hidden_layers=1, mae_decoder_num_attention_heads=2))
        mae.save_pretrained(tmp_path / "mae")
        VitPoseForMaskedImageModeling.from_pretrained(tmp_path / "mae")
    assert sum(p.numel() for p in sized.decoder.parameters()) < 10 * encoder
    assert not [r for r in caplog.records if "MAE decoder" in r.getMessage()]
