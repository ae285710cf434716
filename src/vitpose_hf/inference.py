"""Inference fast paths as checked module swaps: `optimize_for_inference` is their one door.

The model's own modules (modeling_vitpose.py) have one plain path each, in plain PyTorch ops, so
that they train, export (torch.export, ONNX) and compile. The faster inference variants live here,
as separate modules that replace the plain ones:

| swap              | replaces                        | what it does                                              |
|-------------------|---------------------------------|-----------------------------------------------------------|
| `fused_qkv`       | global `VitPoseSelfAttention`   | one `(C, 3C)` GEMM for q, k, v; heads by one permute      |
| `gemm_attention`  | (inside `fused_qkv`)            | half precision on CPU: softmax(q k^T) v as two GEMMs      |
| `onednn_qkv`, `onednn_linear` | the q/k/v GEMM, `VitPoseSelfOutput` | oneDNN's fused linear + bias kernel       |
| `onednn_mlp`      | `VitPoseMLP` (exact GELU)       | oneDNN's fused linear + bias + GELU for fc1, fused fc2     |
| `low_res_head`    | `VitPoseSimpleDecoder`          | the 3x3 conv taps at low resolution, then upsampled       |
| `float32_heatmaps`| heads' final conv in bf16/fp16  | that conv kept in float32: float32 heatmaps for DARK      |

Each swap is built for the model's actual device and dtype and kept only if a probe run at swap time
succeeds, matches the plain module within a per-dtype tolerance (`TOLERANCE`) and (by default) is
faster than it on this machine; otherwise the plain module stays. Nothing is probed at import and no process-wide state is kept. Every decision is logged
and recorded in `model.inference_report`.

The swapped modules are inference-only (`train()` raises); their `state_dict` keeps the transformers
layout (q/k/v separate), so a swapped model saves and loads like the plain one. `inference_model`
applies the swaps to a copy that shares the weights' memory (`inference_copy`), leaving the caller's
model untouched: that is what the pipeline, the evaluation and the CLI use.
"""

from __future__ import annotations

import copy
import logging
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .attention import eager_attention
from .modeling_vitpose import (
    VitPoseClassicDecoder,
    VitPoseMLP,
    VitPoseSelfAttention,
    VitPoseSelfOutput,
    VitPoseSimpleDecoder,
    as_weight_dtype,
)

logger = logging.getLogger(__name__)

__all__ = [
    "optimize_for_inference",
    "inference_copy",
    "inference_model",
    "InferenceModelCache",
    "InferenceReport",
    "FusedQKVAttention",
    "FusedLinearOutput",
    "FusedMLP",
    "LowResSimpleHead",
    "TOLERANCE",
]

#: largest accepted `max|fast - plain| / max|plain|` of a probe, per dtype
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-2}
_HALF = (torch.bfloat16, torch.float16)


@dataclass
class InferenceReport:
    """What `optimize_for_inference` did: `applied` counts the modules swapped per swap name,
    `skipped` gives the reason a swap was not made (the plain module kept)."""

    device: str = "cpu"
    dtype: str = "float32"
    applied: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        applied = ", ".join(f"{k} x{v}" for k, v in sorted(self.applied.items())) or "none"
        skipped = "; ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"on {self.device} {self.dtype}: swapped {applied}; skipped {skipped}"


# ----------------------------------------------------------------------------- kernels
def _onednn_op():
    """oneDNN's fused linear + pointwise op (private, may be absent), or None."""
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


def _linear(kernel: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False):
    """`(..., in)` -> `(..., out)`: `F.linear` (then exact GELU) with the kernel chosen at swap time."""
    if kernel == "onednn":
        return _onednn_op()(x, weight, bias, "gelu" if gelu else "none", [], "none" if gelu else "")
    y = F.linear(x, weight, bias)
    return F.gelu(y) if gelu else y


class _InferenceOnly(nn.Module):
    """Base of the swapped modules: inference-only, with kernels chosen for one device and dtype.

    A later `.to()` / `.half()` / `.cuda()` falls back to the plain kernels (F.linear, SDPA): the
    probe that chose the oneDNN kernel or the GEMM attention held for the old device and dtype only.
    """

    def _apply(self, fn, *args, **kwargs):
        before = [(t.device, t.dtype) for t in self._tensors()]
        out = super()._apply(fn, *args, **kwargs)
        if [(t.device, t.dtype) for t in self._tensors()] != before:
            if getattr(self, "kernel", "torch") != "torch" or getattr(self, "gemm_attention", False):
                logger.warning("%s moved or cast after optimize_for_inference: using the plain kernels "
                               "(call optimize_for_inference again to re-probe)", type(self).__name__)
            if hasattr(self, "kernel"):
                self.kernel = "torch"
            if hasattr(self, "gemm_attention"):
                self.gemm_attention = False
        return out

    def _tensors(self) -> list[torch.Tensor]:
        return [t for t in list(self.parameters()) + list(self.buffers()) if t is not None]

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError(
                f"{type(self).__name__} is an inference-only module made by optimize_for_inference; train the "
                "original model (inference_model() swaps a copy and leaves the original as it was)"
            )
        return super().train(False)


# ----------------------------------------------------------------------------- swapped modules
class FusedQKVAttention(_InferenceOnly):
    """Global self-attention with q, k and v from one `(3C, C)` GEMM.

    Same call as `VitPoseSelfAttention`: `(B, T + h*w, C)` -> context `(B, T + h*w, C)` (before the
    output projection) and the attention probabilities `(B, heads, N, N)` when `output_attentions`
    (else None). `gemm_attention=True` computes softmax(q k^T s) v as two batched GEMMs (half
    precision on CPU, where they beat the CPU SDPA kernel at ViTPose's token counts), else SDPA.

    The fused weight is a non-persistent buffer; `state_dict` writes it back as `query`/`key`/`value`
    (transformers' layout) and `load_state_dict` reads those keys.
    """

    def __init__(self, source: VitPoseSelfAttention, kernel: str = "torch", gemm_attention: bool = False):
        super().__init__()
        if source.kind != "global":
            raise ValueError(f"FusedQKVAttention serves global attention, not {source.kind!r}")
        self.num_heads = source.num_heads
        self.head_dim = source.head_dim
        self.scaling = source.scaling
        self.kernel = kernel
        self.gemm_attention = gemm_attention
        with torch.no_grad():
            weight = torch.cat([source.query.weight, source.key.weight, source.value.weight]).detach().clone()
            has_bias = source.query.bias is not None
            bias = torch.cat([source.query.bias, source.key.bias, source.value.bias]).detach().clone() if has_bias else None
        self.register_buffer("qkv_weight", weight, persistent=False)
        self.register_buffer("qkv_bias", bias, persistent=False)
        self.eval()

    def forward(self, hidden_states, grid=None, num_prefix: int = 0, output_attentions: bool = False):
        batch, tokens, channels = hidden_states.shape
        qkv = _linear(self.kernel, hidden_states, self.qkv_weight, self.qkv_bias)  # (B, N, 3C)
        qkv = qkv.view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)  # (B, heads, N, d) each, strided views
        probs = None
        if output_attentions:
            context, probs = eager_attention(self, query, key, value, None, self.scaling)
            return context.reshape(batch, tokens, channels), probs
        if self.gemm_attention:
            # scale q first (fp16 q k^T could overflow before the scaling) and softmax in float32
            scores = torch.matmul(query * self.scaling, key.transpose(-1, -2))
            context = torch.matmul(scores.softmax(dim=-1, dtype=torch.float32).to(value.dtype), value)
        else:
            context = F.scaled_dot_product_attention(query, key, value, scale=self.scaling)
        return context.transpose(1, 2).reshape(batch, tokens, channels), probs

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        channels = self.qkv_weight.shape[1]
        for i, name in enumerate(("query", "key", "value")):
            rows = slice(i * channels, (i + 1) * channels)
            destination[f"{prefix}{name}.weight"] = self.qkv_weight[rows].detach().clone()
            if self.qkv_bias is not None:
                destination[f"{prefix}{name}.bias"] = self.qkv_bias[rows].detach().clone()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        channels = self.qkv_weight.shape[1]
        names = [("weight", self.qkv_weight)] + ([("bias", self.qkv_bias)] if self.qkv_bias is not None else [])
        with torch.no_grad():
            for i, part in enumerate(("query", "key", "value")):
                rows = slice(i * channels, (i + 1) * channels)
                for suffix, fused in names:
                    key = f"{prefix}{part}.{suffix}"
                    if key not in state_dict:
                        missing_keys.append(key)
                    elif state_dict[key].shape != fused[rows].shape:
                        error_msgs.append(f"size mismatch for {key}: {tuple(state_dict[key].shape)} vs {tuple(fused[rows].shape)}")
                    else:
                        fused[rows].copy_(state_dict[key])


class FusedLinearOutput(_InferenceOnly):
    """`VitPoseSelfOutput` (attention output projection, `dense` kept) through oneDNN's fused
    linear + bias kernel. `(B, N, C)` -> `(B, N, C)`."""

    def __init__(self, source: VitPoseSelfOutput, kernel: str = "onednn"):
        super().__init__()
        self.dense = source.dense
        self.kernel = kernel
        self.eval()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return _linear(self.kernel, hidden_states, self.dense.weight, self.dense.bias)


class FusedMLP(_InferenceOnly):
    """`VitPoseMLP` with exact GELU (`fc1`, `fc2` kept): fc1 + bias + GELU in one oneDNN kernel (no
    separate bias or GELU pass), fc2 + bias in another. `(B, N, C)` -> `(B, N, C)`."""

    def __init__(self, source: VitPoseMLP, kernel: str = "onednn"):
        super().__init__()
        if not source.exact_gelu:
            raise ValueError("FusedMLP fuses the exact GELU only")
        self.fc1, self.fc2 = source.fc1, source.fc2
        self.kernel = kernel
        self.eval()

    def forward(self, hidden_states: torch.Tensor, dataset_index: torch.Tensor | None = None) -> torch.Tensor:
        hidden = _linear(self.kernel, hidden_states, self.fc1.weight, self.fc1.bias, gelu=True)
        return _linear(self.kernel, hidden, self.fc2.weight, self.fc2.bias)


class LowResSimpleHead(_InferenceOnly):
    """`VitPoseSimpleDecoder` (ReLU, bilinear x s, 3x3 conv; `conv` kept) with the conv applied first.

    The 3x3 conv and the bilinear upsampling are both linear, so the 9 conv taps are applied at low
    resolution (one `(9K, C)` GEMM) and only the 9K tap maps are upsampled, as two small matrix
    products per axis with shifted interpolation matrices (the conv's zero padding is a zero row).
    This avoids interpolating all C channels to s^2 times the pixels. `(B, C, h, w)` -> `(B, K, s*h, s*w)`.
    """

    def __init__(self, source: VitPoseSimpleDecoder):
        super().__init__()
        if not float(source.scale_factor).is_integer():
            raise ValueError(f"LowResSimpleHead needs an integer scale factor, got {source.scale_factor}")
        self.conv = source.conv
        self.scale_factor = int(source.scale_factor)
        self._matrices: dict = {}  # (size, dtype, device) -> (3, s*size, size); small, per module
        self.eval()

    def _upsample(self, size: int, dtype, device) -> torch.Tensor:
        key = (size, dtype, device)
        if key not in self._matrices:
            with torch.inference_mode(False):  # a cached inference tensor could not serve a later autograd call
                self._matrices[key] = _shifted_upsample_matrices(size, self.scale_factor).to(dtype=dtype, device=device)
        return self._matrices[key]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.relu(as_weight_dtype(features, self.conv))
        batch, channels, h, w = x.shape
        weight = self.conv.weight  # (K, C, 3, 3)
        k = weight.shape[0]
        taps = weight.permute(2, 3, 0, 1).reshape(9 * k, channels)
        y = torch.matmul(taps, x.reshape(batch, channels, h * w)).view(batch, 3, 3, k, h, w)
        rows = self._upsample(h, x.dtype, x.device)  # (3, H, h)
        cols = self._upsample(w, x.dtype, x.device)  # (3, W, w)
        a = torch.einsum("bdekij,exj->bdkix", y, cols)  # sum over dx and low-res columns
        out = torch.einsum("dyi,bdkix->bkyx", rows, a)  # sum over dy and low-res rows
        if self.conv.bias is not None:
            out = out + self.conv.bias.view(1, k, 1, 1)
        return out.contiguous()


def _shifted_upsample_matrices(size: int, factor: int) -> torch.Tensor:
    """`(3, factor * size, size)` float64: row `y` of slice `d` maps `size` samples to the value at
    output position `y + d - 1` of `F.interpolate(mode="bilinear", align_corners=False)` along one
    axis (zero when that position is outside: the 3x3 conv's zero padding)."""
    out_size = size * factor
    src = ((torch.arange(out_size, dtype=torch.float64) + 0.5) / factor - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(size - 1)
    i1 = (i0 + 1).clamp_max(size - 1)
    w1 = src - i0.double()
    up = torch.zeros(out_size, size, dtype=torch.float64)
    pos = torch.arange(out_size)
    up.index_put_((pos, i0), 1.0 - w1, accumulate=True)
    up.index_put_((pos, i1), w1, accumulate=True)
    padded = torch.cat([up.new_zeros(1, size), up, up.new_zeros(1, size)])  # rows -1 .. out_size
    return torch.stack([padded[d : d + out_size] for d in range(3)])


# ----------------------------------------------------------------------------- probing
def _plain_parts(*parts: nn.Module) -> str | None:
    """None when every part is a bare `nn.Linear`/`nn.Conv2d` without hooks, else why not (a PEFT/LoRA
    wrapper, a quantised layer or a hook must keep running its own forward)."""
    for part in parts:
        if type(part) not in (nn.Linear, nn.Conv2d):
            return f"{type(part).__name__} is not a plain nn.Linear/nn.Conv2d"
        if part._forward_hooks or part._forward_pre_hooks:
            return f"{type(part).__name__} has forward hooks"
    return None


def _relative_error(out, ref) -> float:
    out = out[0] if isinstance(out, tuple) else out
    ref = ref[0] if isinstance(ref, tuple) else ref
    if out.shape != ref.shape:
        return float("inf")
    diff = (out.double() - ref.double()).abs().max()
    return float(diff / ref.double().abs().max().clamp_min(1e-12))


def _probe(plain: nn.Module, fast: nn.Module, inputs: tuple, dtype: torch.dtype) -> str | None:
    """Run both modules on `inputs`; None if the swap may be kept, else the reason it may not."""
    try:
        with torch.no_grad():
            ref = plain(*inputs)
            out = fast(*inputs)
    except Exception as err:  # noqa: BLE001 - any failure means the kernel is not usable here
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return f"{type(err).__name__}: {first[:160]}"
    err = _relative_error(out, ref)
    tol = TOLERANCE.get(dtype, 2e-2)
    if not err <= tol:  # also catches NaN
        return f"differs from the plain module by {err:.2e} relative (tolerance {tol:g})"
    return None


def _time_pair(plain: nn.Module, fast: nn.Module, inputs: tuple, device, repeats: int = 5) -> tuple[float, float]:
    """Median seconds of one call of `plain` and of `fast` on `inputs`, timed in turn (so a load change
    hits both alike), after a warm-up call each."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: tuple[list, list] = ([], [])
    with torch.no_grad():
        for rep in range(repeats + 1):
            for module, out in zip((plain, fast), times):
                start = time.perf_counter()
                module(*inputs)
                sync()
                if rep:
                    out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def _tokens(config) -> int:
    h, w = _grid(config)
    return config.num_knowledge_tokens + h * w


def _grid(config) -> tuple[int, int]:
    pad = config.patch_padding
    ph, pw = tuple(config.patch_size)
    sh, sw = tuple(config.effective_patch_stride)
    height, width = (int(v) for v in config.image_size)
    return (height + 2 * pad - ph) // sh + 1, (width + 2 * pad - pw) // sw + 1


def _set_child(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


# ----------------------------------------------------------------------------- entry points
def optimize_for_inference(
    model: nn.Module,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    compile: bool = False,
    float32_heatmaps: bool = True,
    check_speed: bool = True,
    **compile_kwargs,
) -> nn.Module:
    """Prepare a ViTPose model for fast inference, in place, and return it.

    Steps: move/cast (`model.to(device, dtype)`), `eval()`, gradients off, then the swaps of this
    module's table, each built for the model's device and dtype and kept only when its probe runs and
    matches the plain module (see `TOLERANCE`); `model.inference_report` says what was swapped and why
    the rest was not. The swapped model is inference-only (`model.train()` raises); its `state_dict`
    keeps the plain layout. To keep a model trainable, use `inference_model(model, ...)`, which swaps
    a weight-sharing copy instead.

    Args:
        model: a `VitPoseForPoseEstimation` or `VitPoseModel` (any module holding ViTPose layers).
        dtype: floating dtype for the weights (e.g. `torch.bfloat16`), or None to keep them. Half
            precision works on every CPU (plain kernels where a fused one is missing) and on CUDA.
        device: where to move the model, or None to keep it.
        compile: `model.compile(**compile_kwargs)` at the end (TorchInductor; it fuses linear + GELU
            itself, so the oneDNN swaps are skipped).
        float32_heatmaps: in a bf16/fp16 model, keep the final conv of every heatmap head in float32
            (its original float32 weights when the cast happens here), so the heatmaps are not rounded
            to 8 significant bits before DARK decoding (a tiny share of the FLOPs, see docs/performance.md).
        check_speed: also time each swap against the plain module on its first module (median of 5
            calls each, in turn) and keep it only when it is faster there: kernels that win on one
            CPU lose on another (docs/performance.md). False: keep every swap that matches
            (deterministic).
        **compile_kwargs: passed to `nn.Module.compile` (e.g. `mode="max-autotune"`).

    Returns:
        the same `model`, `(B, 3, H, W)` -> heatmaps `(B, K, H/4, W/4)` as before.
    """
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    finals = [m.conv for m in model.modules() if isinstance(m, (VitPoseClassicDecoder, VitPoseSimpleDecoder, LowResSimpleHead))]
    finals = [c for c in finals if isinstance(getattr(c, "weight", None), torch.Tensor)]
    saved = [None] * len(finals)
    if dtype is not None:
        saved = [{k: v.detach().clone() for k, v in c.state_dict().items()} for c in finals]
    if dtype is not None or device is not None:
        model.to(device=device, dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    param = next(model.parameters(), None)
    run_dtype = param.dtype if param is not None else torch.float32
    run_device = param.device if param is not None else torch.device("cpu")
    report = InferenceReport(device=str(run_device), dtype=str(run_dtype).replace("torch.", ""))

    if float32_heatmaps and run_dtype in _HALF:
        count = 0
        for conv, state in zip(finals, saved):
            if conv.weight.dtype in _HALF:
                conv.float()
                if state is not None and all(v.dtype == torch.float32 for v in state.values()):
                    conv.load_state_dict(state)  # the original float32 weights, not bf16-rounded ones
                count += 1
        if count:
            report.applied["float32_heatmaps"] = count

    # the probes draw random inputs: leave the caller's random streams as they were
    with torch.random.fork_rng(devices=[run_device] if run_device.type == "cuda" else []):
        torch.manual_seed(0)
        _swap_all(model, report, run_dtype, run_device, use_onednn=not compile, check_speed=check_speed)
    model.inference_report = report
    logger.info("optimize_for_inference %s", report.summary())
    if compile:
        model.compile(**compile_kwargs)
    return model


def _swap_all(model: nn.Module, report: InferenceReport, dtype, device, use_onednn: bool, check_speed: bool) -> None:
    onednn_reason = None
    if not use_onednn:
        onednn_reason = "torch.compile fuses linear layers itself"
    elif _onednn_op() is None:
        onednn_reason = "this torch build has no oneDNN fused linear op"
    elif device.type != "cpu":
        onednn_reason = f"oneDNN kernels serve the CPU, the model is on {device.type}"
    gemm_attention = dtype in _HALF and device.type == "cpu"
    root_config = getattr(model, "config", None)
    tokens = _tokens(root_config) if root_config is not None and hasattr(root_config, "patch_padding") else 64

    faster: dict[str, bool] = {}  # per swap name, decided on its first module

    def attempt(name: str, plain: nn.Module, build: Callable[[], nn.Module], inputs: Callable[[], tuple]) -> nn.Module | None:
        if faster.get(name) is False:
            return None
        try:
            fast = build()
        except Exception as err:  # noqa: BLE001
            report.skipped.setdefault(name, f"{type(err).__name__}: {err}")
            return None
        args = inputs()
        reason = _probe(plain, fast, args, dtype)
        if reason is None and check_speed and name not in faster:
            t_plain, t_fast = _time_pair(plain, fast, args, device)
            faster[name] = t_fast < 0.98 * t_plain
            if not faster[name]:
                reason = f"not faster than the plain module here ({t_fast * 1e3:.2f} vs {t_plain * 1e3:.2f} ms)"
        if reason is not None:
            report.skipped.setdefault(name, reason)
            return None
        report.applied[name] = report.applied.get(name, 0) + 1
        return fast

    for name, module in list(model.named_modules()):
        if isinstance(module, VitPoseSelfAttention) and module.kind == "global":
            why = _plain_parts(module.query, module.key, module.value) or _hooked(module)
            if why:
                report.skipped.setdefault("fused_qkv", why)
                continue
            cfg = module.config
            x = lambda cfg=cfg: (torch.randn(1, _tokens(cfg), cfg.hidden_size, device=device, dtype=dtype), _grid(cfg), cfg.num_knowledge_tokens)  # noqa: E731
            fast = None
            if onednn_reason is None:  # fused GEMM through oneDNN, else through F.linear
                fast = attempt("onednn_qkv", module, lambda m=module: FusedQKVAttention(m, "onednn", gemm_attention), x)
            if fast is None:
                fast = attempt("fused_qkv", module, lambda m=module: FusedQKVAttention(m, "torch", gemm_attention), x)
            else:
                report.applied["fused_qkv"] = report.applied.get("fused_qkv", 0) + 1
            if fast is not None:
                if gemm_attention:
                    report.applied["gemm_attention"] = report.applied.get("gemm_attention", 0) + 1
                _set_child(model, name, fast)
        elif isinstance(module, VitPoseSelfOutput):
            if onednn_reason is not None:
                report.skipped.setdefault("onednn_linear", onednn_reason)
                continue
            why = _plain_parts(module.dense) or _hooked(module)
            if why:
                report.skipped.setdefault("onednn_linear", why)
                continue
            c = module.dense.in_features
            fast = attempt("onednn_linear", module, lambda m=module: FusedLinearOutput(m),
                           lambda c=c: (torch.randn(1, tokens, c, device=device, dtype=dtype),))
            if fast is not None:
                _set_child(model, name, fast)
        elif isinstance(module, VitPoseMLP):
            if onednn_reason is not None:
                report.skipped.setdefault("onednn_mlp", onednn_reason)
                continue
            why = (None if module.exact_gelu else "the MLP's activation is not the exact GELU") or \
                _plain_parts(module.fc1, module.fc2) or _hooked(module)
            if why:
                report.skipped.setdefault("onednn_mlp", why)
                continue
            c = module.fc1.in_features
            fast = attempt("onednn_mlp", module, lambda m=module: FusedMLP(m),
                           lambda c=c: (torch.randn(1, tokens, c, device=device, dtype=dtype),))
            if fast is not None:
                _set_child(model, name, fast)
        elif isinstance(module, VitPoseSimpleDecoder):
            why = _plain_parts(module.conv) or _hooked(module)
            if why:
                report.skipped.setdefault("low_res_head", why)
                continue
            root_config = getattr(model, "config", None)
            h, w = _grid(root_config) if root_config is not None else (8, 6)
            in_dtype = dtype  # backbone features arrive in the model's dtype
            fast = attempt("low_res_head", module, lambda m=module: LowResSimpleHead(m),
                           lambda c=module.conv.in_channels: (torch.randn(1, c, h, w, device=device, dtype=in_dtype).abs(),))
            if fast is not None:
                _set_child(model, name, fast)


def _hooked(module: nn.Module) -> str | None:
    if module._forward_hooks or module._forward_pre_hooks:
        return f"{type(module).__name__} has forward hooks"
    return None


def inference_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` with new module objects whose parameters and buffers share the original's
    memory (no weight copy). Swapping, casting (`.to()`) or moving the copy leaves the original as it
    was, including its optimizer's and DDP's references to its parameters; in-place writes to the
    copy's weights would show in the original, and nothing in the inference path makes them."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(p.detach(), requires_grad=False)
    for b in model.buffers():
        memo[id(b)] = b.detach()
    return copy.deepcopy(model, memo)


def inference_model(
    model: nn.Module,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    compile: bool = False,
    float32_heatmaps: bool = True,
    check_speed: bool = True,
) -> nn.Module:
    """`optimize_for_inference(inference_copy(model), ...)`: the fast paths on a weight-sharing copy,
    the caller's `model` (possibly being trained) untouched. A model already swapped, or one that is
    not a torch module holding ViTPose layers (e.g. the onnxruntime backend), is returned as it is."""
    if not isinstance(model, nn.Module) or getattr(model, "inference_report", None) is not None:
        return model
    if not any(isinstance(m, (VitPoseSelfAttention, VitPoseSimpleDecoder, VitPoseClassicDecoder)) for m in model.modules()):
        return model
    out = optimize_for_inference(inference_copy(model), dtype=dtype, device=device, compile=compile,
                                 float32_heatmaps=float32_heatmaps, check_speed=check_speed)
    out.register_load_state_dict_pre_hook(_refuse_load)
    return out


def _refuse_load(module, state_dict, prefix, *args, **kwargs):
    raise RuntimeError(
        "this is an inference_model() copy sharing the original model's weights: loading into it would "
        "write into the original (all but the fused q/k/v); load into the original and build a new copy"
    )


class InferenceModelCache:
    """Keeps one `inference_model` copy of a model and rebuilds it when the model's weights change.

    The key is each parameter's and buffer's identity, storage, version counter (bumped by in-place
    updates: optimizer steps, `load_state_dict`), dtype and device. Writes through `param.data`
    (`p.data.mul_()`, `p.data.copy_()`) bypass the version counter and are not seen: call `clear()`
    after them. Thread-safe: concurrent calls build one copy.
    """

    def __init__(self, **options):
        self.options = options
        self._key = None
        self._model = None
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget the cached copy (the next `get` rebuilds it)."""
        with self._lock:
            self._key = self._model = None

    @staticmethod
    def _signature(model: nn.Module):
        tensors = list(model.parameters()) + list(model.buffers())
        return (id(model),) + tuple((id(t), t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)

    def get(self, model: nn.Module) -> nn.Module:
        """The inference copy of `model` (built on first use and after any weight change)."""
        if not isinstance(model, nn.Module):
            return model
        with self._lock:
            key = self._signature(model)
            if key != self._key:
                self._model = inference_model(model, **self.options)
                self._key = key
            return self._model
