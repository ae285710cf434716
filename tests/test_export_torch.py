"""The plain forward traces: torch.export with a dynamic batch and torch.compile(fullgraph=True).

Covers the classic and simple heads, ViTPose++ (MoE experts gathered by a `dataset_index` input,
several heads whose traced output is padded to the largest head), window attention and knowledge
tokens. The exported program must equal the eager model on batches of several sizes, and tracing
must not poison any cache (a later eager call still works). ONNX export: tests/test_onnx_export.py.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_PLUS, tiny_config_kwargs
from torch.export import Dim

from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation

PLUS = TINY_PLUS
VARIANTS = {
    "classic": {},
    "simple": {"use_simple_decoder": True},
    "window": {"attention_type": ["window", "shifted_window"], "window_size": (4, 3)},
    "pooled_window": {"attention_type": ["pooled_window", "global"], "window_size": (4, 3)},
    "knowledge_tokens": {"num_knowledge_tokens": 3},
}


def _model(**overrides) -> VitPoseForPoseEstimation:
    torch.manual_seed(0)
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(**overrides))).eval()
    with torch.no_grad():
        for name, t in model.named_buffers():
            if "running_mean" in name:
                t.normal_(0, 0.1)
            elif "running_var" in name:
                t.uniform_(0.5, 1.5)
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.05)
    return model


class _Heatmaps(torch.nn.Module):
    """What a deployment traces: tensors in, the heatmaps tensor out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, dataset_index=None):
        return self.model(pixel_values, dataset_index=dataset_index).heatmaps


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_torch_export_dynamic_batch_matches_eager(variant):
    model = _model(**VARIANTS[variant])
    batch = Dim("batch", min=1, max=64)
    program = torch.export.export(_Heatmaps(model), (torch.randn(2, 3, 64, 48),), dynamic_shapes=({0: batch},))
    for n in (1, 3, 5):
        x = torch.randn(n, 3, 64, 48)
        with torch.no_grad():
            ref = model(x).heatmaps
        out = program.module()(x)
        assert out.shape == ref.shape == (n, 17, 32, 24)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # nothing cached while tracing breaks a later eager call
        assert torch.isfinite(model(torch.randn(2, 3, 64, 48)).heatmaps).all()


def test_torch_export_vitpose_plus_with_dataset_index_input():
    model = _model(**PLUS)
    batch = Dim("batch", min=1, max=64)
    example = (torch.randn(3, 3, 64, 48), torch.tensor([0, 1, 2]))
    program = torch.export.export(_Heatmaps(model), example, dynamic_shapes=({0: batch}, {0: batch}))
    run = program.module()
    for index in ([0, 1, 2, 1], [2], [1, 1], [0, 0, 0, 0, 0]):
        idx = torch.tensor(index)
        x = torch.randn(len(index), 3, 64, 48)
        out = run(x, idx)
        assert out.shape == (len(index), 17, 32, 24)  # always padded to the largest head (K = 17)
        for row, i in enumerate(index):
            k = model.num_keypoints_for(i)
            with torch.no_grad():  # eager, one sample through its own head
                ref = model(x[row : row + 1], dataset_index=torch.tensor([i])).heatmaps
            assert ref.shape[1] == k
            torch.testing.assert_close(out[row, :k], ref[0], rtol=1e-5, atol=1e-5)
            assert torch.all(out[row, k:] == 0)


def test_moe_gathered_experts_equal_per_sample_linear():
    """The gathered batched matmul equals each sample's own expert Linear (independent reference)."""
    model = _model(**PLUS)
    mlp = model.backbone.encoder.layer[0].mlp
    hidden_in = torch.randn(4, 10, 32)
    index = torch.tensor([2, 0, 1, 2])
    with torch.no_grad():
        out = mlp(hidden_in, index)
        act = mlp.activation(mlp.fc1(hidden_in))
        for row, i in enumerate(index.tolist()):
            ref = torch.cat([mlp.fc2(act[row]), mlp.experts[i](act[row])], dim=-1)
            torch.testing.assert_close(out[row], ref, rtol=1e-5, atol=1e-6)


def test_dataset_index_range_checked_in_eager():
    model = _model(**PLUS)
    with pytest.raises(ValueError, match="dataset_index 3 is out of range"):
        model(torch.randn(2, 3, 64, 48), dataset_index=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="dataset_index -1"):
        model(torch.randn(2, 3, 64, 48), dataset_index=torch.tensor([-1, 0]))


def test_multi_head_training_compiles_and_export_in_training_is_refused():
    model = _model(**PLUS).train()
    x, idx = torch.randn(4, 3, 64, 48), torch.tensor([0, 1, 1, 2])
    torch._dynamo.reset()
    out = torch.compile(_Heatmaps(model), backend="eager")(x, idx)  # the heads' grouping runs eagerly
    assert out.shape == (4, 17, 32, 24)
    out.sum().backward()
    assert model.extra_heads["1"].conv.weight.grad is not None
    with pytest.raises(Exception, match="training mode is not supported"):
        torch.export.export(_Heatmaps(model), (x, idx))


@pytest.mark.parametrize("variant", ["classic", "simple", "window", "plus"])
def test_compile_fullgraph_has_no_graph_break(variant):
    """fullgraph=True raises on any graph break; the eager backend keeps it fast (no C++ build)."""
    overrides = PLUS if variant == "plus" else VARIANTS[variant]
    model = _model(**overrides)
    torch._dynamo.reset()
    compiled = torch.compile(_Heatmaps(model), fullgraph=True, backend="eager", dynamic=False)
    x = torch.randn(2, 3, 64, 48)
    args = (x, torch.tensor([0, 2])) if variant == "plus" else (x,)
    with torch.no_grad():
        out = compiled(*args)
        ref = _Heatmaps(model)(*args)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_compile_fullgraph_of_training_step():
    model = _model().train()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    out = compiled(torch.randn(2, 3, 64, 48), labels=torch.rand(2, 17, 32, 24))
    out.loss.backward()
    assert model.backbone.embeddings.patch_embeddings.projection.weight.grad is not None


@pytest.mark.slow
def test_inductor_compile_matches_eager():
    """TorchInductor (needs a C++ compiler; ~30-90 s on 2 cores)."""
    model = _model(use_simple_decoder=True)
    torch._dynamo.reset()
    compiled = torch.compile(_Heatmaps(model), fullgraph=True)
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), _Heatmaps(model)(x), rtol=1e-4, atol=1e-5)
