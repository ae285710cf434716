"""Knowledge-token distillation (two stages) and heatmap distillation (loss and Trainer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_config_kwargs
from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation
from vitpose_hf.distillation import (
    DistillationTrainer,
    distillation_loss,
    heatmap_distillation_loss,
    train_knowledge_tokens,
    transfer_knowledge_tokens,
    with_knowledge_tokens,
)

HEATMAP = (32, 24)  # tiny tester: 64 x 48 input, patch 8, x4 head


def _tiny(**overrides) -> VitPoseForPoseEstimation:
    return VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(**overrides)))


def _batches(n_batches=2, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        labels = torch.rand(batch, 17, *HEATMAP, generator=g)
        out.append({
            "pixel_values": torch.randn(batch, 3, 64, 48, generator=g),
            "labels": labels,
            "target_weight": (torch.rand(batch, 17, generator=g) > 0.2).float(),
        })
    return out


def test_heatmap_distillation_loss_matches_numpy():
    s, t = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    w = torch.tensor([[1.0, 0.0, 1.0], [0.5, 1.0, 0.0]])
    expected = np.mean(((s.numpy() - t.numpy()) * w.numpy()[:, :, None, None]) ** 2)
    assert np.isclose(heatmap_distillation_loss(s, t, w).item(), expected, rtol=1e-6)
    assert np.isclose(heatmap_distillation_loss(s, t).item(), np.mean((s.numpy() - t.numpy()) ** 2), rtol=1e-6)
    gt = torch.randn(2, 3, 4, 5)
    losses = distillation_loss(s, t, gt, w, alpha=0.5)
    gt_expected = np.mean(((s.numpy() - gt.numpy()) * w.numpy()[:, :, None, None]) ** 2)
    assert np.isclose(losses.ground_truth.item(), gt_expected, rtol=1e-6)
    assert np.isclose(losses.total.item(), gt_expected + 0.5 * np.mean((s.numpy() - t.numpy()) ** 2), rtol=1e-6)
    assert distillation_loss(s, t).ground_truth is None
    with pytest.raises(ValueError, match="same shape"):
        heatmap_distillation_loss(s, t[:, :2])
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(s, t, alpha=-1)
    # the teacher never receives a gradient
    s.requires_grad_(True)
    t.requires_grad_(True)
    heatmap_distillation_loss(s, t).backward()
    assert s.grad is not None and t.grad is None


def test_knowledge_tokens_train_on_frozen_teacher_only():
    teacher = _tiny().eval()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    data = _batches()
    result = train_knowledge_tokens(teacher, data, num_tokens=2, steps=25, lr=0.05, log_every=0)
    assert result.tokens.shape == (1, 2, 32)
    assert result.losses[-1] < result.losses[0]
    # the original teacher is untouched; the token-carrying copy differs only by its tokens
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k])
    trained = result.teacher.state_dict()
    assert set(trained) - set(before) == {"backbone.embeddings.knowledge_tokens"}
    for k, v in before.items():
        assert torch.equal(trained[k], v), k  # BatchNorm stats too: the teacher stayed in eval mode
    assert result.teacher.config.num_knowledge_tokens == 2
    assert torch.equal(result.teacher.backbone.embeddings.knowledge_tokens, result.tokens)


def test_student_distils_and_reloads_with_frozen_token(tmp_path):
    from transformers import TrainingArguments

    teacher = _tiny(num_hidden_layers=2).eval()
    with torch.no_grad():  # a teacher with something to teach (a random init predicts ~0 everywhere)
        teacher.head.conv.weight.mul_(20.0)
        teacher.head.conv.bias.uniform_(-0.5, 0.5)
    tokens = train_knowledge_tokens(teacher, _batches(), num_tokens=1, steps=3, lr=0.05, log_every=0).tokens
    student = transfer_knowledge_tokens(_tiny(num_hidden_layers=1), tokens)
    assert student.config.num_knowledge_tokens == 1
    assert not student.backbone.embeddings.knowledge_tokens.requires_grad
    data = [{k: v[i] for k, v in b.items()} for b in _batches(n_batches=4) for i in range(4)]
    probe = _batches(n_batches=1, seed=0)[0]

    def distill_term():
        with torch.no_grad():
            s = student.eval()(probe["pixel_values"]).heatmaps
            t = teacher(probe["pixel_values"]).heatmaps
        return heatmap_distillation_loss(s, t).item()

    start = distill_term()
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=30, per_device_train_batch_size=8, learning_rate=2e-3,
        report_to=[], save_strategy="no", logging_steps=10, use_cpu=True, disable_tqdm=True,
        dataloader_num_workers=0, lr_scheduler_type="constant", warmup_steps=0,
    )
    trainer = DistillationTrainer(model=student, args=args, train_dataset=data, teacher_model=teacher, alpha=10.0)
    trainer.train()
    end = distill_term()
    assert end < 0.5 * start, (start, end)
    logged = [h for h in trainer.state.log_history if "distillation_loss" in h]
    assert len(logged) >= 2 and "gt_loss" in logged[0]
    assert logged[-1]["distillation_loss"] < logged[0]["distillation_loss"]
    assert torch.equal(student.backbone.embeddings.knowledge_tokens.detach().cpu(), tokens)  # frozen
    student.save_pretrained(tmp_path / "student")
    again = VitPoseForPoseEstimation.from_pretrained(tmp_path / "student")
    assert again.config.num_knowledge_tokens == 1
    assert torch.equal(again.backbone.embeddings.knowledge_tokens.detach(), tokens)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(probe["pixel_values"]).heatmaps, student.eval()(probe["pixel_values"]).heatmaps)


def test_token_width_mismatch_is_a_value_error():
    teacher = _tiny(hidden_size=32)
    tokens = torch.randn(1, 1, teacher.config.hidden_size)
    student = _tiny(hidden_size=48)
    with pytest.raises(ValueError, match="width 32.*hidden_size is 48"):
        transfer_knowledge_tokens(student, tokens)
    with pytest.raises(ValueError, match="tokens must be"):
        transfer_knowledge_tokens(student, torch.randn(2, 1, 48))
    with pytest.raises(ValueError, match="num_tokens"):
        with_knowledge_tokens(student, 0)


def test_with_knowledge_tokens_keeps_every_other_weight():
    model = _tiny(attention_type="window", window_size=(4, 3)).eval()
    copy = with_knowledge_tokens(model, 3)
    assert copy.config.num_knowledge_tokens == 3 and copy.config.layer_attention_types() == ["window"] * 2
    state = copy.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v)
    with torch.no_grad():
        out = copy.eval()(torch.randn(1, 3, 64, 48), output_hidden_states=True)
    assert out.hidden_states[0].shape == (1, 3 + 48, 32) and out.heatmaps.shape == (1, 17, *HEATMAP)


def test_run_distillation_example_end_to_end(tmp_path):
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("run_distillation", root / "examples" / "run_distillation.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    # patch 16 so the tiny models give 1/4-resolution heatmaps like the real ones
    _tiny(patch_size=16).save_pretrained(tmp_path / "teacher")
    _tiny(patch_size=16, num_hidden_layers=1).save_pretrained(tmp_path / "student")
    out = tmp_path / "out"
    rc = script.main([
        "--teacher", str(tmp_path / "teacher"), "--student", str(tmp_path / "student"), "--output_dir", str(out),
        "--max_steps", "2", "--token_steps", "2", "--per_device_train_batch_size", "2",
        "--num_synthetic_images", "2", "--use_cpu", "--logging_steps", "1",
    ])
    assert rc == 0
    student = VitPoseForPoseEstimation.from_pretrained(out)
    assert student.config.num_knowledge_tokens == 1
    assert torch.equal(student.backbone.embeddings.knowledge_tokens.detach(), torch.load(out / "knowledge_tokens.pt"))
    wide = _tiny(patch_size=16, hidden_size=48)
    wide.save_pretrained(tmp_path / "wide")
    with pytest.raises(ValueError, match="same width"):
        script.main(["--teacher", str(tmp_path / "teacher"), "--student", str(tmp_path / "wide"),
                     "--output_dir", str(out), "--max_steps", "1", "--num_synthetic_images", "2", "--use_cpu"])
