"""Evaluation: pycocotools OKS AP, OKS-NMS, rescoring, the `evaluate` metric and model evaluation."""

from __future__ import annotations

import copy
import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from vitpose_hf.evaluation import (
    METRIC_NAMES,
    OKS_AP_METRIC_PATH,
    coco_keypoint_eval,
    crop_box_areas,
    ground_truth_as_results,
    oks_iou,
    oks_nms,
    oks_nms_arrays,
    persons_to_coco_results,
    rescore,
    rescore_scores,
    to_metric_rows,
)

# Written out independently of keypoint_schemas (COCO: data README; CrowdPose: its official eval code).
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10
CROWDPOSE_SIGMAS = np.array([.79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89, .79, .79]) / 10


def _direct_cocoeval(gt_dict: dict, results: list[dict], sigmas: np.ndarray) -> np.ndarray:
    """pycocotools used by hand, as its README does; returns the 10 keypoint stats."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(gt_dict)
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.kpt_oks_sigmas = sigmas
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def _perturbed_results(gt_dict: dict, seed: int) -> list[dict]:
    """GT keypoints shifted by a few pixels, every third person dropped, distinct random scores."""
    rng = np.random.default_rng(seed)
    results = []
    anns = [a for a in gt_dict["annotations"] if a.get("num_keypoints", 1) > 0 and not a.get("iscrowd", 0)]
    for i, ann in enumerate(anns):
        if i % 3 == 2:
            continue
        kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        kps[:, :2] += rng.normal(0.0, 4.0, size=(len(kps), 2))
        kps[:, 2] = rng.uniform(0.1, 1.0, size=len(kps))
        results.append(
            {"image_id": ann["image_id"], "category_id": 1, "keypoints": kps.reshape(-1).tolist(), "score": float(rng.uniform(0.2, 1.0))}
        )
    # one false positive far from everybody
    kps = np.zeros((len(anns[0]["keypoints"]) // 3, 3))
    kps[:, 0], kps[:, 1], kps[:, 2] = 5.0, 5.0, 0.5
    results.append({"image_id": anns[0]["image_id"], "category_id": 1, "keypoints": kps.reshape(-1).tolist(), "score": 0.99})
    return results


@pytest.fixture(scope="module")
def coco_gt(shared_data):
    path = shared_data / "coco_sample" / "test_coco.json"
    return path, json.loads(path.read_text())


@pytest.fixture(scope="module")
def crowdpose_gt(shared_data):
    path = shared_data / "crowdpose_sample" / "test_crowdpose.json"
    return path, json.loads(path.read_text())


# --------------------------------------------------------------------------- pycocotools AP


def test_ground_truth_as_predictions_gives_ap_one(coco_gt):
    path, data = coco_gt
    results = ground_truth_as_results(path)
    assert len(results) == 12  # 14 annotations, 2 with num_keypoints == 0
    metrics = coco_keypoint_eval(path, results)
    assert list(metrics) == list(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert metrics[name] == pytest.approx(1.0), name
    # the same from the dict and from a COCO object; the inputs are left untouched
    before = copy.deepcopy(data)
    results_before = copy.deepcopy(results)
    assert coco_keypoint_eval(data, results, sigmas="coco")["AP"] == pytest.approx(1.0)
    assert data == before and results == results_before


def test_perturbation_matches_direct_pycocotools(coco_gt):
    path, data = coco_gt
    results = _perturbed_results(data, seed=0)
    metrics = coco_keypoint_eval(path, results, sigmas="coco")
    expected = _direct_cocoeval(data, results, COCO_SIGMAS)
    np.testing.assert_allclose([metrics[n] for n in METRIC_NAMES], expected[:10], rtol=0, atol=1e-12)
    assert 0.2 < metrics["AP"] < 0.95  # the perturbation really changes the number


def test_predictions_without_keypoint_scores_are_skipped_like_xtcocotools(coco_gt):
    path, data = coco_gt
    results = _perturbed_results(data, seed=5)
    # a copy of the first GT person with all keypoint scores 0, ranked high: xtcocotools drops it
    ghost = copy.deepcopy(ground_truth_as_results(path)[0])
    ghost["keypoints"][2::3] = [0.0] * 17
    ghost["score"] = 0.999
    with_ghost = results + [ghost]
    assert coco_keypoint_eval(path, with_ghost) == coco_keypoint_eval(path, results)
    plain = coco_keypoint_eval(path, with_ghost, skip_zero_score_predictions=False)
    np.testing.assert_allclose(
        [plain[n] for n in METRIC_NAMES], _direct_cocoeval(data, with_ghost, COCO_SIGMAS)[:10], rtol=0, atol=1e-12
    )
    assert plain != coco_keypoint_eval(path, results)


def test_explicit_sigmas_change_the_result(coco_gt):
    path, data = coco_gt
    results = _perturbed_results(data, seed=1)
    wide = COCO_SIGMAS * 3
    metrics = coco_keypoint_eval(path, results, sigmas=wide.tolist())
    expected = _direct_cocoeval(data, results, wide)
    np.testing.assert_allclose([metrics[n] for n in METRIC_NAMES], expected[:10], rtol=0, atol=1e-12)
    assert metrics["AP"] > coco_keypoint_eval(path, results)["AP"]


def test_crowdpose_14_keypoints_with_its_sigmas(crowdpose_gt):
    path, data = crowdpose_gt
    assert "area" not in data["annotations"][0]
    gt_results = ground_truth_as_results(path)
    assert coco_keypoint_eval(path, gt_results, sigmas="crowdpose")["AP"] == pytest.approx(1.0)
    results = _perturbed_results(data, seed=2)
    metrics = coco_keypoint_eval(path, results, sigmas="crowdpose")
    # reference: the official CrowdPose/AIC convention (xtcocotools use_area=False): area = 0.53 w h
    filled = copy.deepcopy(data)
    for ann in filled["annotations"]:
        ann["area"] = ann["bbox"][2] * ann["bbox"][3] * 0.53
    expected = _direct_cocoeval(filled, results, CROWDPOSE_SIGMAS)
    np.testing.assert_allclose([metrics[n] for n in METRIC_NAMES], expected[:10], rtol=0, atol=1e-12)
    # 14 keypoints: AIC and CrowdPose differ, so the sigmas must be named
    with pytest.raises(ValueError, match="14 keypoints"):
        coco_keypoint_eval(path, results)


def test_bad_input(coco_gt):
    path, data = coco_gt
    good = ground_truth_as_results(path)
    assert coco_keypoint_eval(path, []) == {name: 0.0 for name in METRIC_NAMES}
    bad = copy.deepcopy(good)
    del bad[3]["score"]
    with pytest.raises(ValueError, match=r"prediction 3 lacks \['score'\]"):
        coco_keypoint_eval(path, bad)
    bad = copy.deepcopy(good)
    bad[1]["keypoints"] = bad[1]["keypoints"][:-3]
    with pytest.raises(ValueError, match=r"48 keypoint values \(16 keypoints\).*17 keypoints"):
        coco_keypoint_eval(path, bad)
    with pytest.raises(ValueError, match="14 OKS sigmas .schema 'crowdpose'. for data with 17 keypoints"):
        coco_keypoint_eval(path, good, sigmas="crowdpose")
    bad = copy.deepcopy(good)
    bad[0]["image_id"] = 123456789
    with pytest.raises(ValueError, match="123456789"):
        coco_keypoint_eval(path, bad)
    bad = copy.deepcopy(good)
    bad[0]["keypoints"][4] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        coco_keypoint_eval(path, bad)
    with pytest.raises(ValueError, match="not found"):
        coco_keypoint_eval(str(path) + ".missing", good)
    with pytest.raises(ValueError, match="lacks"):
        coco_keypoint_eval({"images": []}, good)
    with pytest.raises(ValueError, match="positive"):
        coco_keypoint_eval(path, good, sigmas=[0.0] * 17)


def test_persons_to_coco_results():
    persons = [
        [{"keypoints": np.array([[1.0, 2.0], [3.0, 4.0]]), "scores": np.array([0.5, 0.25]), "score": np.float32(0.75)}],
        [],
        [{"keypoints": [[5.0, 6.0, 0.1], [7.0, 8.0, 0.2]], "score": 0.5}],
    ]
    results = persons_to_coco_results(persons, image_ids=[7, 8, np.int64(9)])
    assert results == [
        {"image_id": 7, "category_id": 1, "keypoints": [1.0, 2.0, 0.5, 3.0, 4.0, 0.25], "score": 0.75},
        {"image_id": 9, "category_id": 1, "keypoints": [5.0, 6.0, 0.1, 7.0, 8.0, 0.2], "score": 0.5},
    ]
    assert type(results[1]["image_id"]) is int
    json.dumps(results)
    flat = persons_to_coco_results([{"image_id": 3, "keypoints": np.ones((2, 3))}])
    assert flat[0]["score"] == 1.0 and flat[0]["image_id"] == 3
    with pytest.raises(ValueError, match="image_id"):
        persons_to_coco_results([{"keypoints": np.ones((2, 3))}])
    with pytest.raises(ValueError, match="no 'scores'"):
        persons_to_coco_results([[{"keypoints": np.ones((2, 2))}]], image_ids=[1])


# --------------------------------------------------------------------------- NMS and rescoring


def _reference_oks(g, d, area_g, area_d, sigmas, vis_thr=None):
    """One pair, written from the mmpose 0.x formula (a loop over keypoints)."""
    total, count = 0.0, 0
    for k in range(len(sigmas)):
        if vis_thr is not None and not d[k, 2] > vis_thr:
            continue
        var = (2 * sigmas[k]) ** 2
        dist2 = (d[k, 0] - g[k, 0]) ** 2 + (d[k, 1] - g[k, 1]) ** 2
        total += math.exp(-dist2 / var / ((area_g + area_d) / 2 + np.spacing(1)) / 2)
        count += 1
    return total / count if count else 0.0


def _reference_nms(kpts, scores, areas, thr, sigmas):
    """Greedy NMS, brute force: walk persons by decreasing score, drop those too similar to a kept one."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep, removed = [], set()
    for i in order:
        if i in removed:
            continue
        keep.append(i)
        for j in order:
            if j not in removed and j != i and j not in keep:
                if _reference_oks(kpts[i], kpts[j], areas[i], areas[j], sigmas) > thr:
                    removed.add(j)
    return keep


def _person_cluster(rng, n_clusters=4, per_cluster=5, k=17):
    centers = rng.uniform(0, 400, size=(n_clusters, 1, 2)) + rng.uniform(-60, 60, size=(n_clusters, k, 2))
    kpts, areas = [], []
    for c in range(n_clusters):
        for _ in range(per_cluster):
            xy = centers[c] + rng.normal(0, rng.choice([0.5, 3.0, 15.0]), size=(k, 2))
            kpts.append(np.concatenate([xy, rng.uniform(0, 1, size=(k, 1))], axis=1))
            areas.append(rng.uniform(2000, 20000))
    scores = rng.permutation(len(kpts)).astype(np.float64) / len(kpts) + 0.01  # distinct
    return np.stack(kpts), scores, np.asarray(areas)


def test_oks_iou_matches_loop_reference():
    rng = np.random.default_rng(0)
    kpts, _, areas = _person_cluster(rng, n_clusters=2, per_cluster=3)
    for vis in (None, 0.5):
        matrix = oks_iou(kpts, kpts[:4], areas, areas[:4], sigmas=COCO_SIGMAS, vis_threshold=vis)
        assert matrix.shape == (len(kpts), 4)
        for i in range(len(kpts)):
            for j in range(4):
                ref = _reference_oks(kpts[i], kpts[j], areas[i], areas[j], COCO_SIGMAS, vis)
                assert matrix[i, j] == pytest.approx(ref, abs=1e-6)
    torch = pytest.importorskip("torch")
    out = oks_iou(torch.from_numpy(kpts), kpts, areas, areas, sigmas="coco")
    assert isinstance(out, torch.Tensor) and torch.allclose(out.diagonal(), torch.ones(len(kpts)))


def test_oks_nms_matches_brute_force():
    rng = np.random.default_rng(1)
    total_suppressed = 0
    for _ in range(5):
        kpts, scores, areas = _person_cluster(rng)
        for thr in (0.5, 0.9):
            keep = oks_nms_arrays(kpts, scores, areas, threshold=thr, sigmas="coco")
            ref = _reference_nms(kpts, scores, areas, thr, COCO_SIGMAS)
            assert keep.tolist() == ref
            total_suppressed += len(scores) - len(keep)
    assert total_suppressed > 10  # the test data really exercises suppression
    persons = [{"keypoints": k[:, :2], "scores": k[:, 2], "score": s, "area": a} for k, s, a in zip(kpts, scores, areas)]
    assert oks_nms(persons, threshold=0.9) == _reference_nms(kpts, scores, areas, 0.9, COCO_SIGMAS)
    assert oks_nms([], 0.9) == []
    with pytest.raises(ValueError, match="lacks"):
        oks_nms([{"keypoints": kpts[0], "score": 1.0}])
    with pytest.raises(ValueError, match="different keypoint counts"):
        oks_nms([persons[0], {**persons[1], "keypoints": kpts[1][:14, :2], "scores": kpts[1][:14, 2]}])


def test_rescoring_formula():
    box = [0.9, 0.5, 1.0]
    kps = [[0.1, 0.3, 0.5, 0.2], [0.1, 0.2, 0.15, 0.0], [1.0, 0.21, 0.8, 0.9]]
    expected = [0.9 * (0.3 + 0.5) / 2, 0.0, 1.0 * (1.0 + 0.21 + 0.8 + 0.9) / 4]  # 0.2 itself is not above
    np.testing.assert_allclose(rescore_scores(box, kps, 0.2), expected, rtol=1e-12)
    persons = [{"score": b, "scores": np.array(k), "keypoints": np.zeros((4, 2))} for b, k in zip(box, kps)]
    out = rescore(persons)
    assert [p["score"] for p in out] == pytest.approx(expected)
    assert [p["box_score"] for p in out] == box and persons[0]["score"] == 0.9  # inputs untouched
    # rescoring a rescored list reads box_score, not the new score
    assert [p["score"] for p in rescore(out)] == pytest.approx(expected)
    with pytest.raises(ValueError, match="non-finite"):
        rescore_scores([1.0], [[float("nan"), 0.5]])


def test_crop_box_areas():
    # 0.75 aspect: a 30x100 box becomes 75x100, a 90x100 box becomes 90x120; then x1.25 per side
    np.testing.assert_allclose(
        crop_box_areas([[0, 0, 30, 100], [5, 5, 90, 100]], aspect_ratio=0.75),
        [75 * 100 * 1.25**2, 90 * 120 * 1.25**2],
    )


# --------------------------------------------------------------------------- evaluate metric


def test_evaluate_metric_module_matches_library(coco_gt, crowdpose_gt, monkeypatch):
    import evaluate
    import huggingface_hub

    # offline for evaluate and the hub client: any network attempt would raise
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    metric = evaluate.load(OKS_AP_METRIC_PATH)
    path, data = coco_gt
    results = _perturbed_results(data, seed=3)
    predictions, references = to_metric_rows(path, results)
    assert len(predictions) == len(references) == 4
    assert metric.compute(predictions=predictions, references=references) == coco_keypoint_eval(path, results)
    # by batches; CrowdPose rows without areas and with named sigmas
    path, data = crowdpose_gt
    results = _perturbed_results(data, seed=4)
    predictions, references = to_metric_rows(path, results)
    assert all(r["areas"] is None for r in references if r["keypoints"])
    for p, r in zip(predictions, references):
        metric.add_batch(predictions=[p], references=[r])
    got = metric.compute(sigmas="crowdpose")
    assert got == coco_keypoint_eval(path, results, sigmas="crowdpose")
    # no predictions at all: the documented zeros
    empty = [{**p, "keypoints": [], "scores": []} for p in predictions]
    assert metric.compute(predictions=empty, references=references, sigmas="crowdpose") == dict.fromkeys(METRIC_NAMES, 0.0)


@pytest.mark.slow
def test_evaluate_metric_module_loads_in_a_fresh_offline_interpreter(coco_gt, tmp_path):
    import os
    import subprocess
    import sys

    path, data = coco_gt
    results = _perturbed_results(data, seed=3)
    predictions, references = to_metric_rows(path, results)
    (tmp_path / "rows.json").write_text(json.dumps({"predictions": predictions, "references": references}))
    script = (
        "import json, sys, evaluate\n"
        "rows = json.load(open(sys.argv[2]))\n"
        "print(json.dumps(evaluate.load(sys.argv[1]).compute(**rows)))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-c", script, OKS_AP_METRIC_PATH, str(tmp_path / "rows.json")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == coco_keypoint_eval(path, results)


# --------------------------------------------------------------------------- model evaluation


class _OracleProcessor:
    """Stands in for VitPoseTopDownImageProcessor: crops are blank, decoding returns the GT of each box.

    It checks the calling contract of `evaluate_model` (nested boxes, batches across images,
    chunks of at most `batch_size` crops per forward, flip pairs, dataset_index) without depending
    on the real crop / decode code.
    """

    def __init__(self, gt_path, batch_size):
        from vitpose_hf.evaluation.topdown import ground_truth_boxes

        data = json.loads(gt_path.read_text())
        self.lookup = {}
        boxes = ground_truth_boxes(data)
        for image_id, (image_boxes, _) in boxes.items():
            anns = [
                a for a in data["annotations"]
                if a["image_id"] == image_id and not a["iscrowd"] and a["num_keypoints"] > 0
            ]
            for box, ann in zip(image_boxes, anns):
                self.lookup[tuple(np.round(box, 6))] = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        self.batch_size = batch_size
        self.calls, self.chunks = [], []

    def __call__(self, images, boxes, return_tensors="pt"):
        import torch

        assert return_tensors == "pt" and len(images) == len(boxes)
        assert all(Path(img).is_file() for img in images)
        self.calls.append([len(b) for b in boxes])
        return {"pixel_values": torch.zeros(sum(len(b) for b in boxes), 3, 64, 48)}

    def predict_heatmaps(self, model, pixel_values, flip_test=True, flip_pairs=None, dataset_index=None):
        assert pixel_values.shape[0] <= self.batch_size and flip_pairs[0] == (1, 2) and flip_test is False
        self.chunks.append(pixel_values.shape[0])
        return model(pixel_values).heatmaps

    def post_process_pose_estimation(self, heatmaps, boxes):
        out = []
        for image_boxes in boxes:
            persons = []
            for box in image_boxes:
                kps = self.lookup[tuple(np.round(box, 6))]
                persons.append({"keypoints": kps[:, :2], "scores": np.where(kps[:, 2] > 0, 0.9, 0.1), "bbox": np.asarray(box)})
            out.append(persons)
        return out


def test_evaluate_model_plumbing_with_oracle_processor(shared_data, tiny_config, tmp_path):
    from vitpose_hf import VitPoseForPoseEstimation
    from vitpose_hf.evaluation import evaluate_model

    gt_path = shared_data / "coco_sample" / "test_coco.json"
    model = VitPoseForPoseEstimation(tiny_config)
    processor = _OracleProcessor(gt_path, batch_size=3)
    out = tmp_path / "preds.json"
    metrics = evaluate_model(
        model, processor, gt_path, shared_data / "coco_sample", flip_test=False, batch_size=3, output_file=out
    )
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)
    # 12 persons on 4 images (1, 2, 4, 5 boxes): images are grouped until >= 3 crops, chunks <= 3
    assert processor.calls == [[1, 2], [4], [5]]
    assert processor.chunks == [3, 3, 1, 3, 2]
    written = json.loads(out.read_text())
    assert len(written) == 12 and set(written[0]) == {"image_id", "category_id", "keypoints", "score"}
    assert written[0]["score"] == pytest.approx(0.9)  # GT box score 1.0 x mean of the 0.9 scores
    assert coco_keypoint_eval(gt_path, written) == metrics
    with pytest.raises(ValueError, match="use_gt_boxes_if_no_det"):
        evaluate_model(model, processor, gt_path, shared_data / "coco_sample", use_gt_boxes_if_no_det=False)
    with pytest.raises(ValueError, match="image file not found"):
        evaluate_model(model, processor, gt_path, tmp_path, flip_test=False, batch_size=3)


@pytest.fixture(scope="module")
def tiny_model_and_processor():
    import torch

    from conftest import tiny_config_kwargs
    from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation

    image_processing = pytest.importorskip("vitpose_hf.image_processing_vitpose")
    torch.manual_seed(0)
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs()))
    processor = image_processing.VitPoseTopDownImageProcessor(size={"height": 64, "width": 48})
    return model, processor


@pytest.mark.parametrize("use_detections", [False, True])
def test_evaluate_model_end_to_end(shared_data, tiny_model_and_processor, tmp_path, use_detections, monkeypatch):
    import evaluate

    from vitpose_hf.evaluation import evaluate_model

    model, processor = tiny_model_and_processor
    folder = shared_data / "coco_sample"
    gt_path = folder / "test_coco.json"
    det = folder / "test_coco_det_AP_H_56.json" if use_detections else None
    out = tmp_path / "preds.json"
    metrics = evaluate_model(model, processor, gt_path, folder, detection_file=det, batch_size=32, output_file=out)
    assert list(metrics) == list(METRIC_NAMES)
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in metrics.values()), metrics
    preds = json.loads(out.read_text())
    # GT: one prediction per selected person; detections: 118 boxes, OKS-NMS may drop a few
    assert len(preds) == 12 if not use_detections else 100 <= len(preds) <= 118
    assert all(len(p["keypoints"]) == 51 and 0.0 <= p["score"] <= 1.0 for p in preds)
    assert coco_keypoint_eval(gt_path, preds) == metrics
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    predictions, references = to_metric_rows(gt_path, preds)
    assert evaluate.load(OKS_AP_METRIC_PATH).compute(predictions=predictions, references=references) == metrics
    # by name, offline
    from vitpose_hf.evaluation import load_metric

    for name in ("oks_ap", "vitpose_hf/oks_ap"):
        assert load_metric(name).compute(predictions=predictions, references=references) == metrics
    with pytest.raises(ValueError, match=r"unknown vitpose_hf metric 'oks-ap'; known: \['oks_ap'\]"):
        load_metric("oks-ap")


def test_evaluate_model_batching_does_not_change_predictions(shared_data, trained_tiny_model, tmp_path):
    """A briefly trained model: its peaked heatmaps keep every argmax where it is whatever the batch
    size's float rounding (a random model's flat heatmaps moved one keypoint by 212 px between batch
    1 and 128 on an AVX2 CPU)."""
    from vitpose_hf.evaluation import evaluate_model

    model, processor, _ = trained_tiny_model
    folder = shared_data / "coco_sample"
    preds = {}
    for batch_size in (1, 128):
        out = tmp_path / f"preds_{batch_size}.json"
        evaluate_model(
            model, processor, folder / "test_coco.json", folder, detection_file=folder / "test_coco_det_AP_H_56.json",
            flip_test=False, batch_size=batch_size, output_file=out,
        )
        preds[batch_size] = json.loads(out.read_text())
    assert len(preds[1]) == len(preds[128])
    # float32 batched matmuls differ in the last bits; DARK turns that into < 0.05 px, except where its
    # Hessian is nearly flat: there one keypoint of 1,836 moved 0.24 px with oneDNN limited to AVX2. A
    # moved argmax would move a keypoint by a heatmap pixel, several image pixels here.
    a = np.asarray([p["keypoints"] for p in preds[1]])
    b = np.asarray([p["keypoints"] for p in preds[128]])
    np.testing.assert_allclose(a, b, atol=0.5)
    assert np.mean(np.abs(a - b) <= 0.05) >= 0.995
    np.testing.assert_allclose([p["score"] for p in preds[1]], [p["score"] for p in preds[128]], atol=1e-4)


def test_cli_evaluate(shared_data, tiny_model_and_processor, tmp_path, capsys):
    from vitpose_hf.cli import main
    from vitpose_hf.evaluation import evaluate_model

    model, processor = tiny_model_and_processor
    model.save_pretrained(tmp_path / "model")  # no preprocessor config: the default one for 64x48 is used
    folder = shared_data / "coco_sample"
    argv = [
        "evaluate", "--model", str(tmp_path / "model"), "--annotations", str(folder / "test_coco.json"),
        "--images", str(folder), "--detections", str(folder / "test_coco_det_AP_H_56.json"), "--no-flip",
        "--output", str(tmp_path / "preds.json"), "--metrics-output", str(tmp_path / "metrics.json"),
        "--batch-size", "16", "--device", "cpu",
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "AP50" in printed and "ARl" in printed
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    expected = evaluate_model(
        model, processor, folder / "test_coco.json", folder, detection_file=folder / "test_coco_det_AP_H_56.json",
        flip_test=False,
    )
    assert metrics == pytest.approx(expected)
    assert len(json.loads((tmp_path / "preds.json").read_text())) > 100
    bad = argv[:]
    bad[bad.index("--images") + 1] = str(tmp_path / "nowhere")
    assert main(bad) == 2
    assert "--images folder not found" in capsys.readouterr().err


def test_evaluate_model_multi_dataset_uses_schema_index(shared_data, tmp_path):
    import torch

    from conftest import tiny_config_kwargs
    from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation
    from vitpose_hf.evaluation import evaluate_model

    image_processing = pytest.importorskip("vitpose_hf.image_processing_vitpose")
    torch.manual_seed(0)
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(num_experts=2, num_labels=14)))
    processor = image_processing.VitPoseTopDownImageProcessor(size={"height": 64, "width": 48})
    folder = shared_data / "aic_sample"
    assert coco_keypoint_eval(folder / "test_aic.json", ground_truth_as_results(folder / "test_aic.json"), "aic")["AP"] == 1.0
    preds = {}
    for index in (None, 0, 1):
        out = tmp_path / f"{index}.json"
        metrics = evaluate_model(
            model, processor, folder / "test_aic.json", folder, schema="aic", dataset_index=index, flip_test=False,
            output_file=out,
        )
        assert all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in metrics.values())
        preds[index] = json.loads(out.read_text())
    assert len(preds[None]) == 9 and len(preds[None][0]["keypoints"]) == 42
    assert preds[None] == preds[1] and preds[None] != preds[0]  # AIC = expert 1 unless told otherwise
    with pytest.raises(ValueError, match="14 keypoints but schema 'coco' has 17"):
        evaluate_model(model, processor, folder / "test_aic.json", folder, schema="coco")


class _RenderingModel:
    """A stand-in pose model that answers each crop with Gaussians drawn at its person's GT keypoints.

    Built from the processor's own box -> center/scale and the UDP warp at heatmap size, so a
    correct crop / flip / decode / grouping chain gives the ground truth back.
    """

    def __new__(cls, targets, flip_pairs):
        import torch

        from vitpose_hf.heatmaps import flip_heatmaps

        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.anchor = torch.nn.Parameter(torch.zeros(()))
                self.queue = targets
                self.position = 0

            def forward(self, pixel_values, dataset_index=None):
                n = pixel_values.shape[0]
                m = n // 2 if self.flip else n
                maps = self.queue[self.position : self.position + m]
                self.position += m
                if self.flip:  # second half = mirrored crops: answer what flip-back turns into `maps`
                    maps = torch.cat([maps, flip_heatmaps(maps, flip_pairs)])
                return type("Out", (), {"heatmaps": maps + 0 * self.anchor})()

        return Model()


def _render_targets(processor, boxes, keypoints, heatmap_size):
    """`(N, K, h, w)` Gaussians (sigma 2) at each person's keypoints, amplitude 1 (0.1 if unlabelled),
    and their `(N, K, 2)` heatmap positions."""
    import torch

    from vitpose_hf.geometry import get_udp_warp_matrix, transform_points

    center, scale = processor.boxes_to_center_scale(torch.tensor(boxes, dtype=torch.float64))
    warp = get_udp_warp_matrix(center, scale, heatmap_size, pixel_std=processor.normalize_factor)
    kps = torch.tensor(keypoints, dtype=torch.float64)  # (N, K, 3)
    points = transform_points(kps[..., :2], warp)  # (N, K, 2) heatmap (x, y)
    h, w = heatmap_size
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    d2 = (xs - points[..., 0, None, None]) ** 2 + (ys - points[..., 1, None, None]) ** 2
    amplitude = torch.where(kps[..., 2] > 0, 1.0, 0.1)[..., None, None]
    return (amplitude * torch.exp(-d2 / (2 * 2.0**2))).float(), points.numpy()


@pytest.mark.parametrize("flip_test", [False, True])
def test_evaluate_model_gives_ground_truth_back_through_the_real_processor(shared_data, tmp_path, flip_test):
    from vitpose_hf.evaluation import evaluate_model
    from vitpose_hf.evaluation.topdown import ground_truth_boxes
    from vitpose_hf.keypoint_schemas import COCO

    image_processing = pytest.importorskip("vitpose_hf.image_processing_vitpose")
    processor = image_processing.VitPoseTopDownImageProcessor(size={"height": 256, "width": 192})
    folder = shared_data / "coco_sample"
    data = json.loads((folder / "test_coco.json").read_text())
    boxes, keypoints = [], []
    for image_id, (image_boxes, _) in sorted(ground_truth_boxes(data).items()):
        anns = [a for a in data["annotations"] if a["image_id"] == image_id and a["num_keypoints"] > 0]
        boxes += image_boxes
        keypoints += [np.reshape(a["keypoints"], (17, 3)) for a in anns]
    targets, points = _render_targets(processor, boxes, np.stack(keypoints), (64, 48))
    # DARK's blur (kernel 11) reflects at the heatmap border, as in the original: exact recovery is
    # only expected 5 px or more inside it
    inside = (points.min(-1) >= 5) & (points[..., 0] <= 48 - 6) & (points[..., 1] <= 64 - 6)
    assert (inside & (np.stack(keypoints)[..., 2] > 0)).sum() == 179  # of 181 labelled keypoints
    model = _RenderingModel(targets, [list(p) for p in COCO.flip_pairs])
    model.flip = flip_test
    out = tmp_path / "preds.json"
    metrics = evaluate_model(model, processor, data, folder, flip_test=flip_test, batch_size=5, output_file=out)
    assert model.position == len(boxes) == 12
    assert metrics == dict.fromkeys(METRIC_NAMES, pytest.approx(1.0))
    preds = json.loads(out.read_text())
    by_image = {}
    for p in preds:
        by_image.setdefault(p["image_id"], []).append(p)
    peaks = targets.amax(dim=(2, 3)).numpy()  # (12, 17) what the decoder reads as keypoint scores
    for ann, peak, interior in zip((a for a in data["annotations"] if a["num_keypoints"] > 0), peaks, inside):
        gt = np.reshape(ann["keypoints"], (17, 3))
        labelled = gt[:, 2] > 0
        # the prediction closest to this person: keypoints back within 0.1 px (5 px near the heatmap border);
        # score = 1.0 (GT box) x mean of the peaks above 0.2 (the labelled ones; the others were drawn at 0.1)
        cands = [np.reshape(p["keypoints"], (17, 3)) for p in by_image[ann["image_id"]]]
        errors = [np.abs(c[labelled, :2] - gt[labelled, :2]).max(1) for c in cands]
        best = int(np.argmin([e.max() for e in errors]))
        assert errors[best].max() < 5.0 and errors[best][interior[labelled]].max() < 0.1, (ann["id"], errors[best])
        assert by_image[ann["image_id"]][best]["score"] == pytest.approx(peak[labelled].mean(), abs=1e-5)
        assert (peak[labelled] > 0.2).all() and (peak[~labelled] < 0.2).all()
