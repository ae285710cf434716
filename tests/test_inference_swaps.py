"""`optimize_for_inference` / `inference_model`: checked module swaps, never a changed original.

- each swap gives the plain model's heatmaps (fp32: 1e-5 relative), and the report says which ran;
- the swapped model's state_dict is the plain layout (q/k/v separate) and loads back;
- a probe that fails or mismatches keeps the plain module, with the reason;
- hooked or wrapped layers keep their own forward; windowed layers keep theirs;
- `inference_model` leaves a model in training (its parameters, optimizer, classes) untouched, and
  `InferenceModelCache` rebuilds after every weight change;
- bf16 works on this CPU whatever its ISA, and the whole file also runs in a subprocess that makes
  oneDNN, ATen and MKL dispatch as on an AVX2-only CPU.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config_kwargs

from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation, inference
from vitpose_hf.inference import (
    FusedMLP,
    FusedQKVAttention,
    InferenceModelCache,
    LowResSimpleHead,
    inference_copy,
    inference_model,
    optimize_for_inference,
)
from vitpose_hf.modeling_vitpose import VitPoseMLP, VitPoseSelfAttention, VitPoseSimpleDecoder

AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def _model(**overrides) -> VitPoseForPoseEstimation:
    torch.manual_seed(0)
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(**overrides))).eval()
    with torch.no_grad():  # non-trivial biases, so heatmaps are not near zero
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    return model


def _heat(model, x, **kw):
    with torch.no_grad():
        return model(x, **kw).heatmaps


def _rel(a, b) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("overrides", [{}, {"num_knowledge_tokens": 3}, {"qkv_bias": False}, {"use_simple_decoder": True}])
def test_swaps_equal_plain_fp32_and_original_untouched(overrides):
    model = _model(**overrides)
    x = torch.randn(3, 3, 64, 48)
    ref = _heat(model, x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = inference_model(model, check_speed=False)
    report = fast.inference_report
    assert report.applied.get("fused_qkv") == model.config.num_hidden_layers
    assert isinstance(fast.backbone.encoder.layer[0].attention.attention, FusedQKVAttention)
    if overrides.get("use_simple_decoder"):
        assert report.applied.get("low_res_head") == 1 and isinstance(fast.head, LowResSimpleHead)
    assert _rel(_heat(fast, x), ref) <= 1e-5
    # the original: same classes, same values, still trainable
    assert type(model.backbone.encoder.layer[0].attention.attention) is VitPoseSelfAttention
    assert all(p.requires_grad for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_swapped_state_dict_keeps_plain_layout_and_loads_back():
    model = _model()
    with pytest.raises(RuntimeError, match="sharing the original"):  # would write into `model`
        inference_model(model, check_speed=False).load_state_dict(model.state_dict())
    fast = optimize_for_inference(copy.deepcopy(model), check_speed=False)  # owns its weights
    plain_sd, fast_sd = model.state_dict(), fast.state_dict()
    assert set(fast_sd) == set(plain_sd) and not any("qkv" in k for k in fast_sd)
    for k in plain_sd:
        assert torch.equal(fast_sd[k], plain_sd[k]), k
    other = _model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    fast.load_state_dict(other.state_dict())  # reaches the fused q/k/v buffer
    x = torch.randn(2, 3, 64, 48)
    assert _rel(_heat(fast, x), _heat(other, x)) <= 1e-5
    with pytest.raises(RuntimeError, match="inference-only"):
        fast.train()


def test_inference_copy_shares_memory_and_training_model_keeps_training():
    model = _model()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    refs = [id(p) for p in model.parameters()]
    copy_ = inference_copy(model)
    assert copy_.backbone.embeddings.position_embeddings.data_ptr() == model.backbone.embeddings.position_embeddings.data_ptr()
    fast = inference_model(model, dtype=torch.bfloat16, check_speed=False)
    assert next(fast.parameters()).dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())
    assert [id(p) for p in model.parameters()] == refs and model.training
    x = torch.randn(2, 3, 64, 48)
    model(x, labels=torch.rand(2, 17, 32, 24)).loss.backward()
    opt.step()  # the optimizer still updates the live parameters


def test_inference_model_cache_rebuilds_after_weight_changes():
    model = _model()
    cache = InferenceModelCache()
    x = torch.randn(2, 3, 64, 48)
    first = cache.get(model)
    assert cache.get(model) is first  # unchanged weights: the same copy
    with torch.no_grad():
        model.backbone.encoder.layer[0].attention.attention.value.weight.mul_(-1.5)  # in place, like an optimizer
    second = cache.get(model)
    assert second is not first
    assert _rel(_heat(second, x), _heat(model, x)) <= 1e-5
    model.load_state_dict(_model().state_dict())
    assert cache.get(model) is not second


def test_failing_probe_keeps_plain_modules(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("could not create a primitive descriptor (simulated)")

    monkeypatch.setattr(inference, "_onednn_op", lambda: broken)
    model = _model()
    x = torch.randn(2, 3, 64, 48)
    fast = inference_model(model, check_speed=False)
    report = fast.inference_report
    assert "simulated" in report.skipped["onednn_mlp"] and "simulated" in report.skipped["onednn_linear"]
    assert "onednn_mlp" not in report.applied and "onednn_linear" not in report.applied
    assert report.applied["fused_qkv"] == 2  # through F.linear instead
    layer = fast.backbone.encoder.layer[0]
    assert type(layer.mlp) is VitPoseMLP and layer.attention.attention.kernel == "torch"
    assert _rel(_heat(fast, x), _heat(model, x)) <= 1e-5


def test_mismatching_swap_is_rejected(monkeypatch):
    monkeypatch.setattr(FusedMLP, "forward", lambda self, h, dataset_index=None: h * 0)  # a wrong kernel
    monkeypatch.setattr(inference, "_onednn_op", lambda: (lambda x, w, b, *a: F.linear(x, w, b) if a[0] == "none" else F.gelu(F.linear(x, w, b))))
    fast = inference_model(_model(), check_speed=False)
    assert "differs from the plain module" in fast.inference_report.skipped["onednn_mlp"]
    assert type(fast.backbone.encoder.layer[0].mlp) is VitPoseMLP


def test_hooked_layers_and_windows_keep_their_own_forward():
    model = _model(use_simple_decoder=True, attention_type=["window", "global"], window_size=(4, 3))
    x = torch.randn(2, 3, 64, 48)
    scale = lambda module, args, out: out * 2.0  # noqa: E731
    model.backbone.encoder.layer[1].attention.attention.value.register_forward_hook(scale)
    model.head.conv.register_forward_hook(scale)
    ref = _heat(model, x)
    fast = inference_model(model, check_speed=False)
    report = fast.inference_report
    assert "hooks" in report.skipped["fused_qkv"] and "hooks" in report.skipped["low_res_head"]
    assert type(fast.backbone.encoder.layer[0].attention.attention) is VitPoseSelfAttention  # window layer
    assert type(fast.backbone.encoder.layer[1].attention.attention) is VitPoseSelfAttention  # hooked
    assert type(fast.head) is VitPoseSimpleDecoder
    assert _rel(_heat(fast, x), ref) <= 1e-5


def test_output_attentions_through_fused_attention():
    model = _model()
    x = torch.randn(2, 3, 64, 48)
    fast = inference_model(model, check_speed=False)
    with torch.no_grad():
        a, b = model(x, output_attentions=True), fast(x, output_attentions=True)
    for pa, pb in zip(a.attentions, b.attentions):
        torch.testing.assert_close(pb, pa, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_works_on_this_cpu(dtype):
    """bf16/fp16 on any CPU: fused kernels where the CPU has them, plain ops elsewhere."""
    model = _model(use_simple_decoder=True)
    x = torch.randn(4, 3, 64, 48)
    ref = _heat(model, x)
    fast = inference_model(model, dtype=dtype, check_speed=False)
    out = _heat(fast, x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert _rel(out, ref) <= 0.03
    plain_half = copy.deepcopy(model).to(dtype)  # no swaps: the plain forward in half precision
    assert _rel(_heat(plain_half, x).float(), ref) <= 0.03


def test_optimize_for_inference_validates_and_is_in_place():
    model = _model()
    with pytest.raises(ValueError, match="torch.int8"):
        optimize_for_inference(model, dtype=torch.int8)
    with pytest.raises(ValueError, match="float16"):
        optimize_for_inference(model, dtype="float16")
    assert optimize_for_inference(model, check_speed=False) is model and model.inference_report.applied["fused_qkv"] == 2
    assert inference_model(model) is model  # already swapped


@pytest.mark.parametrize("factor,size", [(4, (5, 7)), (2, (3, 4)), (4, (1, 2)), (3, (4, 3))])
def test_low_res_head_equals_interpolate_then_conv(factor, size):
    head = VitPoseSimpleDecoder(24, 5, factor).eval()
    with torch.no_grad():
        head.conv.bias.normal_()
    x = torch.randn(2, 24, *size)
    reference = F.conv2d(  # written out independently of both modules
        F.interpolate(x.clamp_min(0), scale_factor=factor, mode="bilinear", align_corners=False),
        head.conv.weight, head.conv.bias, padding=1,
    )
    with torch.no_grad():
        fast = LowResSimpleHead(head)(x)
        plain = head(x)
    assert fast.shape == reference.shape == (2, 5, size[0] * factor, size[1] * factor)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", ["torch", "onednn"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("gelu", [False, True])
def test_linear_kernels_equal_linear_then_gelu(kernel, dtype, gelu):
    x = torch.randn(3, 5, 24).to(dtype)
    w = torch.randn(40, 24).to(dtype) * 0.2
    b = torch.randn(40).to(dtype)
    ref = F.linear(x.double(), w.double(), b.double())
    ref = F.gelu(ref) if gelu else ref
    if kernel == "onednn":
        if inference._onednn_op() is None:
            pytest.skip("this torch build has no oneDNN fused linear op")
        try:
            with torch.no_grad():
                inference._linear("onednn", x, w, b, gelu)
        except RuntimeError as err:  # what the probe in optimize_for_inference catches
            pytest.skip(f"oneDNN has no {dtype} kernel on this CPU ({str(err)[:60]}...)")
    with torch.no_grad():
        out = inference._linear(kernel, x, w, b, gelu)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert out.dtype == dtype and out.shape == (3, 5, 40)
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * ref.abs().max().item())


def test_pipeline_leaves_its_model_untouched(shared_data):
    from transformers import pipeline

    model = _model()
    pipe = pipeline("keypoint-detection", model=model)
    image = next((shared_data / "coco_sample").glob("*.jpg"))
    pipe(str(image), boxes=[[10.0, 10.0, 80.0, 120.0]])
    assert type(model.backbone.encoder.layer[0].attention.attention) is VitPoseSelfAttention
    assert getattr(model, "inference_report", None) is None


@pytest.mark.skipif(os.environ.get("VITPOSE_AVX2_CHILD") == "1", reason="already the AVX2 child run")
def test_swaps_and_bf16_tests_pass_as_on_an_avx2_only_cpu():
    """These tests and tests/test_bf16_path.py in a subprocess whose oneDNN, ATen and MKL dispatch as on
    an AVX2-only CPU (the variables are read once at process start, so monkeypatch.setenv would be
    too late). On an AVX2 machine this repeats the run; on an AVX-512 one it is the check that counts."""
    here = Path(__file__).parent
    env = {**os.environ, **AVX2_ENV, "VITPOSE_AVX2_CHILD": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
           str(here / "test_inference_swaps.py"), str(here / "test_bf16_path.py"), "-k", "not pipeline"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=here.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


def test_bf16_loaded_model_plain_forward_and_pipeline(tmp_path, shared_data):
    """The reported crashes: a bf16 `from_pretrained` + a no_grad forward, and a bf16 pipeline."""
    from transformers import pipeline

    model = _model()
    model.save_pretrained(tmp_path / "m")
    loaded = VitPoseForPoseEstimation.from_pretrained(tmp_path / "m", dtype=torch.bfloat16).eval()
    x = torch.randn(2, 3, 64, 48)
    out = _heat(loaded, x)
    assert out.dtype == torch.bfloat16 and _rel(out.float(), _heat(model, x)) <= 0.03
    pipe = pipeline("keypoint-detection", model=str(tmp_path / "m"), dtype=torch.bfloat16)
    image = next((shared_data / "coco_sample").glob("*.jpg"))
    people = pipe(str(image), boxes=[[10.0, 10.0, 80.0, 120.0]])
    assert len(people) == 1 and all(torch.isfinite(torch.tensor([k["x"], k["y"]])).all() for k in people[0]["keypoints"])
    assert pipe.model.dtype == torch.bfloat16
    assert type(pipe.model.backbone.encoder.layer[0].attention.attention) is VitPoseSelfAttention


def test_evaluation_of_a_training_model_leaves_it_as_it_was(shared_data, tmp_path):
    """The trainer's in-training evaluation passes the live model: its modules, parameters (the
    optimizer's references) and values must come out unchanged."""
    from vitpose_hf import VitPoseTopDownImageProcessor
    from vitpose_hf.evaluation import evaluate_model

    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.eval()
    ids = [id(p) for p in model.parameters()]
    values = {k: v.clone() for k, v in model.state_dict().items()}
    folder = shared_data / "coco_sample"
    evaluate_model(model, VitPoseTopDownImageProcessor(size={"height": 64, "width": 48}), folder / "test_coco.json", folder,
                   flip_test=False)
    assert [id(p) for p in model.parameters()] == ids
    assert all(p.requires_grad for p in model.parameters())
    assert type(model.backbone.encoder.layer[0].mlp) is VitPoseMLP
    for k, v in model.state_dict().items():
        assert torch.equal(v, values[k]), k
    model.train()
    model(torch.randn(2, 3, 64, 48), labels=torch.rand(2, 17, 32, 24)).loss.backward()
    opt.step()


@pytest.mark.slow
def test_optimize_for_inference_compiled_matches_eager():
    """torch.compile (inductor, needs a C++ compiler; ~30-90 s) of the swapped model."""
    model = _model(use_simple_decoder=True)
    x = torch.randn(2, 3, 64, 48)
    ref = _heat(model, x)
    compiled = optimize_for_inference(copy.deepcopy(model), compile=True)
    assert "onednn_mlp" not in compiled.inference_report.applied  # inductor fuses linears itself
    assert _rel(_heat(compiled, x), ref) <= 1e-4


def test_lora_wrapped_projections_keep_their_forward():
    pytest.importorskip("peft")
    from vitpose_hf.training import apply_lora

    model = apply_lora(_model(), r=4)
    with torch.no_grad():  # non-zero adapters, so bypassing them would change the output
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    x = torch.randn(2, 3, 64, 48)
    model.eval()
    ref = _heat(model, x)
    fast = inference_model(model, check_speed=False)
    report = fast.inference_report
    assert "not a plain nn.Linear" in report.skipped["fused_qkv"]
    assert "fused_qkv" not in report.applied
    assert _rel(_heat(fast, x), ref) <= 1e-5


def test_swaps_slower_than_the_plain_module_are_not_kept(monkeypatch):
    monkeypatch.setattr(inference, "_time_pair", lambda plain, fast, args, device: (1.0, 2.0))
    model = _model(use_simple_decoder=True)
    fast = inference_model(model)
    report = fast.inference_report
    for name in ("fused_qkv", "onednn_mlp", "low_res_head"):
        assert "not faster" in report.skipped[name] and name not in report.applied, name
    assert type(fast.head) is VitPoseSimpleDecoder and type(fast.backbone.encoder.layer[1].mlp) is VitPoseMLP
    monkeypatch.setattr(inference, "_time_pair", lambda plain, fast, args, device: (2.0, 1.0))
    fast = inference_model(model)
    assert fast.inference_report.applied["fused_qkv"] == 2 and fast.inference_report.applied["low_res_head"] == 1


def test_timed_swaps_still_equal_plain():
    model = _model(use_simple_decoder=True)
    x = torch.randn(2, 3, 64, 48)
    fast = inference_model(model)  # whatever the timing decided on this machine
    report = fast.inference_report
    for name in ("fused_qkv", "low_res_head"):
        assert name in report.applied or "not faster" in report.skipped.get(name, ""), report.summary()
    assert _rel(_heat(fast, x), _heat(model, x)) <= 1e-5


def test_cast_after_swapping_falls_back_to_plain_kernels():
    model = optimize_for_inference(_model(), check_speed=False)
    model.to(torch.bfloat16)  # the oneDNN kernels were probed in fp32
    attn = model.backbone.encoder.layer[0].attention.attention
    assert attn.kernel == "torch" and not attn.gemm_attention
    out = _heat(model, torch.randn(2, 3, 64, 48))
    assert torch.isfinite(out.float()).all()


def test_probes_leave_the_random_stream_alone():
    model = _model()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    inference_model(model, check_speed=False)
    assert torch.equal(torch.rand(3), expected)


def test_fp16_gemm_attention_does_not_overflow():
    model = _model()
    attn = model.backbone.encoder.layer[0].attention.attention
    with torch.no_grad():
        attn.query.weight.mul_(60.0)
        attn.key.weight.mul_(60.0)
    fused = FusedQKVAttention(attn, "torch", gemm_attention=True).half()
    fused.gemm_attention = True  # as built for fp16 on the CPU
    x = torch.randn(1, 48, 32).half() * 4
    with torch.no_grad():
        out, _ = fused(x, (8, 6))
    assert torch.isfinite(out).all()


def test_pipeline_keeps_a_training_model_in_training_mode(shared_data):
    from transformers import pipeline

    model = _model().train()
    pipe = pipeline("keypoint-detection", model=model)
    image = next((shared_data / "coco_sample").glob("*.jpg"))
    pipe(str(image), boxes=[[10.0, 10.0, 80.0, 120.0]])
    assert model.training


def test_pipeline_loads_checkpoints_without_onnxruntime(tmp_path, monkeypatch):
    import sys as _sys

    from transformers import pipeline

    _model().save_pretrained(tmp_path / "m")
    monkeypatch.setitem(_sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    pipe = pipeline("keypoint-detection", model=str(tmp_path / "m"))
    assert type(pipe.model).__name__ == "VitPoseForPoseEstimation"
