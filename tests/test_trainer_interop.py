"""A plain `transformers.Trainer` reports COCO AP (issue 14, Trainer interop): the same AP as
`evaluate_model` on the same checkpoint with ground-truth boxes and no flip test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers

from vitpose_hf.data import TopDownTransform
from vitpose_hf.data.coco import load_coco_keypoints
from vitpose_hf.evaluation import evaluate_model
from vitpose_hf.evaluation.trainer_metrics import TRAINER_METADATA_KEYS, make_compute_metrics


def _plain_trainer(model, eval_rows, metrics, tmp_path):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "trainer"), per_device_eval_batch_size=5, report_to=[], use_cpu=True,
        label_names=metrics.label_names, remove_unused_columns=False,
    )
    return transformers.Trainer(
        model=model, args=args, eval_dataset=eval_rows, data_collator=metrics.collate,
        compute_metrics=metrics.compute_metrics, preprocess_logits_for_metrics=metrics.preprocess_logits_for_metrics,
    )


@pytest.fixture(scope="module")
def fitted_to_coco_sample(shared_data):
    """A tiny model fitted to the 12 persons of coco_sample (peaked heatmaps and an AP well above 0
    there, so that comparing two evaluations of it is not 0 == 0), and its processor."""
    from conftest import tiny_config_kwargs

    from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation, VitPoseTopDownImageProcessor

    folder = shared_data / "coco_sample"
    torch.manual_seed(0)
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs()))
    rows = load_coco_keypoints(folder / "test_coco.json", folder)
    batch = TopDownTransform("coco", image_size=(64, 48), heatmap_size=(32, 24), train=False)(rows[:])
    pixels, labels, weights = (torch.stack(batch[k]) for k in ("pixel_values", "labels", "target_weight"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    flush = torch.set_flush_denormal(True)
    try:
        for _ in range(300):
            loss = model(pixels, labels=labels, target_weight=weights).loss
            opt.zero_grad()
            (loss * 1000).backward()
            opt.step()
    finally:
        if flush:
            torch.set_flush_denormal(False)
    return model.eval(), VitPoseTopDownImageProcessor(size={"height": 64, "width": 48})


def test_a_plain_trainer_reports_the_ap_of_evaluate_model(shared_data, fitted_to_coco_sample, tmp_path):
    model, processor = fitted_to_coco_sample
    folder = shared_data / "coco_sample"
    annotations = folder / "test_coco.json"
    reference_file = tmp_path / "reference.json"
    reference = evaluate_model(model, processor, annotations, folder, flip_test=False, output_file=reference_file)

    with torch.no_grad():
        heatmap_size = tuple(model(torch.zeros(1, 3, *model.config.image_size)).heatmaps.shape[-2:])
    rows = load_coco_keypoints(annotations, folder).with_transform(
        TopDownTransform("coco", image_size=tuple(model.config.image_size), heatmap_size=heatmap_size, train=False)
    )
    metrics = make_compute_metrics(annotations)
    assert metrics.label_names == list(TRAINER_METADATA_KEYS)
    trainer = _plain_trainer(model, rows, metrics, tmp_path)
    reported = trainer.evaluate()
    assert "eval_loss" in reported and np.isfinite(reported["eval_loss"])
    assert reference["AP"] > 0.3  # a fitted model: the comparison is not 0 == 0
    for name, value in reference.items():
        assert reported[f"eval_{name}"] == pytest.approx(value, abs=1e-3), name

    # the same persons and keypoints as evaluate_model's predictions (crops made by TopDownTransform
    # instead of the processor: equal up to float rounding of the warp)
    ours = sorted(metrics.last_results, key=lambda r: (r["image_id"], -r["score"]))
    theirs = sorted(json.loads(reference_file.read_text()), key=lambda r: (r["image_id"], -r["score"]))
    assert [r["image_id"] for r in ours] == [r["image_id"] for r in theirs]
    a = np.asarray([r["keypoints"] for r in ours]).reshape(len(ours), -1, 3)
    b = np.asarray([r["keypoints"] for r in theirs]).reshape(len(theirs), -1, 3)
    assert np.median(np.abs(a[..., :2] - b[..., :2])) < 0.05


def test_the_collator_names_rows_without_metadata(trained_tiny_model):
    metrics = make_compute_metrics({"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]})
    sample = {"pixel_values": torch.zeros(3, 64, 48), "labels": torch.zeros(17, 32, 24), "target_weight": torch.ones(17)}
    with pytest.raises(ValueError, match="sample 0 has no 'center'"):
        metrics.collate([sample])
    full = dict(sample, center=np.zeros(2), scale=np.ones(2), bbox=np.ones(4), image_id=3)
    batch = metrics.collate([full, full])
    assert batch["center"].shape == (2, 2) and batch["bbox"].dtype == torch.float64 and batch["image_id"].tolist() == [3, 3]
    model, _, _ = trained_tiny_model
    with torch.no_grad():  # the metadata goes through the model's forward as it is
        out = model(**{k: v for k, v in batch.items()})
    assert out.loss is not None


def test_the_plain_trainer_script_of_the_docs_runs_as_written(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    section = text.split("## A plain `transformers.Trainer` with COCO AP", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 'OUT = "plain-trainer"' in code
    monkeypatch.chdir(tmp_path)  # the script writes under ./plain-trainer
    scope: dict = {}
    exec(compile(code, "docs/training.md", "exec"), scope)  # noqa: S102 - the documented script
    result = scope["result"]
    assert {"eval_loss", "eval_AP", "eval_AP50", "eval_AR"} <= set(result)
    # the metrics come from compute_metrics (pycocotools' values: in [0, 1], or -1 for an empty area range)
    assert all(result[k] == -1.0 or 0.0 <= result[k] <= 1.0 for k in result if k.startswith("eval_A"))
    assert scope["metrics"].last_results  # predictions were decoded and scored
