"""The inference fast paths give the plain path's results.

- fused q/k/v attention (eval + no grad) == the plain per-projection path (eval + grad enabled);
- its weight cache follows every way the weights can change;
- the half-precision CPU attention and `optimize_for_inference(dtype=bf16)` stay close to fp32;
- the fast crop and decode paths of the processor and of the training transform match the exact ones.

Speed itself is measured by benchmarks/run.py, never asserted here.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation
from vitpose_hf.modeling_vitpose import VitPoseSelfAttention, optimize_for_inference

from conftest import tiny_config_kwargs


def _model(**overrides) -> VitPoseForPoseEstimation:
    torch.manual_seed(0)
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(**overrides))).eval()
    with torch.no_grad():  # non-trivial BN statistics and biases
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    return model


def _plain(model, x, **kw):
    """The plain path: grad enabled disables the fused attention."""
    with torch.enable_grad():
        return model(x, **kw).heatmaps.detach()


def _fast(model, x, **kw):
    with torch.inference_mode():
        return model(x, **kw).heatmaps


def _fused_calls(model, monkeypatch) -> list:
    calls = []
    original = VitPoseSelfAttention._fused_global_attention

    def spy(self, hidden):
        calls.append(hidden.shape)
        return original(self, hidden)

    monkeypatch.setattr(VitPoseSelfAttention, "_fused_global_attention", spy)
    return calls


@pytest.mark.parametrize("overrides", [{}, {"num_knowledge_tokens": 3}, {"qkv_bias": False}, {"use_simple_decoder": True}])
def test_fused_attention_equals_plain(overrides, monkeypatch):
    model = _model(**overrides)
    x = torch.randn(3, 3, 64, 48)
    calls = _fused_calls(model, monkeypatch)
    plain = _plain(model, x)
    assert calls == []  # grad enabled: plain path
    fast = _fast(model, x)
    assert len(calls) == model.config.num_hidden_layers  # the fast path really ran
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # no_grad takes the fast path too
        torch.testing.assert_close(model(x).heatmaps, plain, rtol=1e-5, atol=1e-5)


def test_fast_path_not_taken_for_training_attentions_or_windows(monkeypatch):
    model = _model(attention_type=["window", "global"], window_size=(4, 3))
    x = torch.randn(2, 3, 64, 48)
    plain = _plain(model, x)  # first (window layouts cached under inference_mode cannot serve autograd)
    calls = _fused_calls(model, monkeypatch)
    with torch.inference_mode():
        out = model(x, output_attentions=True)
    assert calls == [] and all(a is not None for a in out.attentions)
    with torch.inference_mode():
        fast = model(x).heatmaps
    assert len(calls) == 1  # only the global layer
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    model.train()
    with torch.no_grad():
        model(x)
    assert len(calls) == 1


def test_fused_cache_follows_weight_changes():
    model = _model()
    x = torch.randn(2, 3, 64, 48)
    attn = model.backbone.encoder.layer[0].attention.attention
    _fast(model, x)
    w1, _ = attn.fused_qkv()
    assert attn.fused_qkv()[0] is w1  # cached

    # 1. load_state_dict (in-place copy_)
    other = _model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.load_state_dict(other.state_dict())
    torch.testing.assert_close(_fast(model, x), _plain(other, x), rtol=1e-5, atol=1e-5)

    # 2. in-place update of one projection (as an optimizer step does)
    with torch.no_grad():
        attn.value.weight.mul_(-1.5)
    torch.testing.assert_close(_fast(model, x), _plain(model, x), rtol=1e-5, atol=1e-5)

    # 3. a new tensor behind the parameter
    attn.key.weight.data = attn.key.weight.data * 0.5
    torch.testing.assert_close(_fast(model, x), _plain(model, x), rtol=1e-5, atol=1e-5)

    # 4. an optimizer step after training, then eval again
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x, labels=torch.rand(2, 17, 32, 24)).loss.backward()
    opt.step()
    model.eval()
    torch.testing.assert_close(_fast(model, x), _plain(model, x), rtol=1e-5, atol=1e-5)

    # 5. deepcopy and dtype round trip
    clone = copy.deepcopy(model)
    torch.testing.assert_close(_fast(clone, x), _plain(model, x), rtol=1e-5, atol=1e-5)
    model.to(torch.float64)
    assert "_qkv_cache" not in attn.__dict__
    torch.testing.assert_close(_fast(model, x.double()), _plain(model, x.double()), rtol=1e-9, atol=1e-9)
    assert attn.fused_qkv()[0].dtype == torch.float64
    assert "_qkv_cache" not in model.state_dict() and not any("qkv" in k for k in model.state_dict())


def test_bf16_fast_path_close_to_plain_and_fp32():
    model = _model()
    x = torch.randn(4, 3, 64, 48)
    ref32 = _plain(model, x)
    optimize_for_inference(model, dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16 and not model.training
    assert "_qkv_cache" in model.backbone.encoder.layer[0].attention.attention.__dict__  # built up front
    fast = _fast(model, x)
    plain = _plain(model, x)
    assert fast.dtype == torch.float32  # the heads' final conv stays float32 (tests/test_bf16_path.py)
    scale = ref32.abs().max()
    assert (fast.float() - plain.float()).abs().max() <= 0.02 * scale
    assert (fast.float() - ref32).abs().max() <= 0.03 * scale


def test_optimize_for_inference_rejects_bad_dtype_and_keeps_fp32():
    model = _model()
    x = torch.randn(2, 3, 64, 48)
    ref = _plain(model, x)
    assert optimize_for_inference(model) is model
    torch.testing.assert_close(_fast(model, x), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="torch.int8"):
        optimize_for_inference(model, dtype=torch.int8)
    with pytest.raises(ValueError, match="float16"):
        optimize_for_inference(model, dtype="float16")


def test_predict_heatmaps_bf16_model_returns_float32():
    from vitpose_hf.image_processing_vitpose import predict_heatmaps

    model = _model()
    x = torch.randn(3, 3, 64, 48)
    ref = predict_heatmaps(model, x, flip_test=True)
    optimize_for_inference(model, dtype=torch.bfloat16)
    out = predict_heatmaps(model, x, flip_test=True)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out - ref).abs().max() <= 0.03 * ref.abs().max()


# ----------------------------------------------------------------------------- processor fast paths
def test_cv2_crop_backend_matches_torch_backend(shared_data):
    import json

    from PIL import Image

    from vitpose_hf.geometry import box_xywh_to_center_scale, get_udp_warp_matrix, warp_affine_batch

    info = json.loads((shared_data / "coco_sample" / "test_coco.json").read_text())["images"][0]
    image = torch.from_numpy(np.array(Image.open(shared_data / "coco_sample" / info["file_name"]).convert("RGB")))
    image = image.permute(2, 0, 1)
    h, w = image.shape[-2:]
    boxes = torch.tensor([[10.0, 20.0, 120.0, 200.0], [w - 60.0, h - 90.0, 150.0, 160.0],  # crosses the border
                          [-500.0, -500.0, 40.0, 40.0], [0.0, 0.0, float(w), float(h)]], dtype=torch.float64)
    center, scale = box_xywh_to_center_scale(boxes, 0.75)
    m = get_udp_warp_matrix(center, scale, (64, 48), rotation=torch.tensor([0.0, 30.0, 0.0, -15.0]))
    kw = dict(channel_scale=[0.5, 1.0, 2.0], channel_offset=[-1.0, 0.0, 3.0], border_value=10.0)
    for ratio in (4.0, 0.0):  # union region / one region per crop
        exact = warp_affine_batch(image, m, (64, 48), backend="torch", max_region_ratio=ratio, **kw)
        fast = warp_affine_batch(image, m, (64, 48), backend="cv2", max_region_ratio=ratio, **kw)
        auto = warp_affine_batch(image, m, (64, 48), max_region_ratio=ratio, **kw)
        torch.testing.assert_close(auto, fast)
        # OpenCV quantises positions to 1/32 px: a few hundredths of a grey level (x2 channel scale)
        assert (fast - exact).abs().max() < 0.2, (fast - exact).abs().max()
        assert (fast - exact).abs().mean() < 0.01
        assert torch.all(fast[2, 0] == 10.0 * 0.5 - 1.0) and torch.all(fast[2, 2] == 10.0 * 2.0 + 3.0)


def test_cv2_backend_is_skipped_for_float64_and_validated():
    from vitpose_hf.geometry import warp_affine_batch

    image = torch.rand(3, 20, 30, dtype=torch.float64)
    m = torch.tensor([[[1.0, 0.0, -2.0], [0.0, 1.0, -3.0]]], dtype=torch.float64)
    assert warp_affine_batch(image, m, (8, 6)).dtype == torch.float64  # auto -> exact torch path
    with pytest.raises(ValueError, match="float32"):
        warp_affine_batch(image, m, (8, 6), backend="cv2")
    with pytest.raises(ValueError, match="backend"):
        warp_affine_batch(image, m, (8, 6), backend="scipy")


def test_numpy_argmax_matches_torch_max_with_ties():
    from vitpose_hf.image_processing_vitpose import _argmax

    heat = torch.rand(6, 5, 16, 12)
    heat[0, 0] = 0.5  # all tied: first index
    heat[1, 2, 3, 4] = heat[1, 2, 7, 1] = 2.0  # two maxima: the first in row-major order
    px, py, scores, _ = _argmax(heat)
    ref_scores, ref_idx = heat.reshape(6, 5, -1).max(-1)
    np_first = heat.reshape(6, 5, -1).numpy().argmax(-1)
    torch.testing.assert_close(py * 12 + px, torch.from_numpy(np_first))
    torch.testing.assert_close(scores, ref_scores)
    assert (px[0, 0], py[0, 0]) == (0, 0) and (px[1, 2], py[1, 2]) == (4, 3)
    px64, py64, s64, _ = _argmax(heat.double())
    torch.testing.assert_close(px64, px) and torch.testing.assert_close(py64, py)


def test_training_transform_fast_crops_match_exact_path(shared_data, monkeypatch):
    import functools

    from vitpose_hf import geometry
    from vitpose_hf.data import TopDownTransform, load_coco_keypoints

    root = shared_data / "coco_mini_train"
    rows = load_coco_keypoints(str(root / "person_keypoints.json"), str(root / "images"))[:6]
    fast = TopDownTransform("coco", image_size=(64, 48), seed=3)(rows)

    exact_warp = functools.partial(geometry.warp_affine_batch, backend="torch")

    def reference(image, matrices, size, border_value=0.0, channel_scale=None, channel_offset=None, **kw):
        crops = exact_warp(image, matrices, size, border_value=border_value)  # normalise afterwards
        return crops * torch.as_tensor(channel_scale).view(-1, 1, 1) + torch.as_tensor(channel_offset).view(-1, 1, 1)

    monkeypatch.setattr(geometry, "warp_affine_batch", reference)
    slow = TopDownTransform("coco", image_size=(64, 48), seed=3)(rows)
    for key in ("labels", "target_weight", "center", "scale"):
        for a, b in zip(fast[key], slow[key]):
            torch.testing.assert_close(a, b)
    assert fast["flipped"] == slow["flipped"] and fast["rotation"] == slow["rotation"]
    for a, b in zip(fast["pixel_values"], slow["pixel_values"]):
        assert (a - b).abs().max() < 2e-3  # <= ~0.1 grey level after normalisation


@pytest.mark.parametrize("factor,size", [(4, (5, 7)), (2, (3, 4)), (4, (1, 2)), (3, (4, 3))])
def test_simple_head_fast_path_equals_interpolate_then_conv(factor, size):
    import torch.nn.functional as F

    from vitpose_hf.modeling_vitpose import VitPoseSimpleDecoder

    head = VitPoseSimpleDecoder(24, 5, factor).eval()
    with torch.no_grad():
        head.conv.bias.normal_()
    x = torch.randn(2, 24, *size)
    reference = F.conv2d(  # written out independently of the module's forward
        F.interpolate(x.clamp_min(0), scale_factor=factor, mode="bilinear", align_corners=False),
        head.conv.weight, head.conv.bias, padding=1,
    )
    with torch.inference_mode():
        fast = head(x)
    assert fast.shape == reference.shape == (2, 5, size[0] * factor, size[1] * factor)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    head.train()
    torch.testing.assert_close(head(x).detach(), reference, rtol=1e-5, atol=1e-5)  # plain path in training


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_inference_linear_equals_linear_then_gelu(dtype, gelu, with_bias):
    import torch.nn.functional as F

    from vitpose_hf import modeling_vitpose

    x = torch.randn(3, 5, 24).to(dtype)
    w = torch.randn(40, 24).to(dtype) * 0.2
    b = torch.randn(40).to(dtype) if with_bias else None
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    ref = F.gelu(ref) if gelu else ref
    with torch.inference_mode():
        out = modeling_vitpose.inference_linear(x, w, b, gelu=gelu)
    assert out.dtype == dtype and out.shape == (3, 5, 40)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * ref.abs().max().item())
    with torch.enable_grad():  # grad mode: the plain ops (autograd-safe)
        assert modeling_vitpose.inference_linear(x, w, b, gelu=gelu).dtype == dtype


def test_onednn_linear_found_on_cpu_builds_with_mkldnn():
    from vitpose_hf import modeling_vitpose

    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")
    assert modeling_vitpose._ONEDNN_LINEAR is not None  # the fused kernel is really exercised above


def test_wrapped_or_hooked_layers_run_their_own_forward(monkeypatch):
    """A hook (or a PEFT/LoRA wrapper) on a projection must not be bypassed by the fast paths."""
    model = _model(use_simple_decoder=True)
    x = torch.randn(2, 3, 64, 48)
    layer = model.backbone.encoder.layer[0]
    scale = lambda module, args, out: out * 2.0  # noqa: E731
    hooks = [layer.attention.attention.value.register_forward_hook(scale),
             layer.attention.output.dense.register_forward_hook(scale),
             layer.mlp.fc2.register_forward_hook(scale), model.head.conv.register_forward_hook(scale)]
    calls = _fused_calls(model, monkeypatch)
    plain = _plain(model, x)
    fast = _fast(model, x)
    assert len(calls) == model.config.num_hidden_layers - 1  # layer 0 took the plain path
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    for h in hooks:
        h.remove()
    assert not torch.allclose(_fast(model, x), plain, atol=1e-3)  # the hooks did change the output


@pytest.mark.slow
def test_optimize_for_inference_compiled_matches_eager():
    """torch.compile (inductor, needs a C++ compiler; ~15-60 s) of the fast paths."""
    model = _model(use_simple_decoder=True)
    x = torch.randn(2, 3, 64, 48)
    ref = _fast(model, x)
    compiled = optimize_for_inference(copy.deepcopy(model), compile=True)
    torch.testing.assert_close(_fast(compiled, x), ref, rtol=1e-4, atol=1e-5)
