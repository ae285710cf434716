"""Video benchmark: tracking accuracy, jitter and lag on generated video with ground truth, and
frames/s on the real clips.

    python benchmarks/video.py --model vitpose-offline [--seeds 0,1,2] [--frames 300]
                               [--speed-only | --accuracy-only | --association-grid] [--tune]

Accuracy (`vitpose_hf.data.synthetic_video`, fixed seeds, ground-truth ids and keypoints): the
model (a checkpoint trained on the synthetic people, e.g. the README's main job `vitpose-offline/`)
runs through `VideoPoseEstimator` at detect_every 1 and 5. Person boxes on detection frames come
from a simulated detector (below); in between they are carried along the tracks by the estimator.
Scored with `motmetrics` (box IoU >= 0.5 matching): MOTA, IDF1, ID switches (also per 1,000
ground-truth track-frames). Jitter and lag compare the raw and the One-Euro-smoothed keypoints of
the same run (smoothing never feeds back into tracking, so it is applied to the raw tracks here with
the same timestamps): jitter = mean |(p - g)_{t+1} - 2 (p - g)_t + (p - g)_{t-1}| over visible
keypoints of matched persons (pixels per frame^2), lag = the shift (frames) maximising the
cross-correlation of the smoothed keypoints with the raw ones delayed by it (in 1/4 frames).

The simulated detector: every ground-truth person with more than 30 % of its silhouette visible is
found with probability 0.95, its box edges jittered by N(0, 3 % of the box size), score U(0.6, 0.95);
nothing else. (The YOLOX-nano file finds too few of the drawn stick figures to measure tracking with,
see docs/video.md; it is timed on the real clips instead.)

Speed: ViTPose-S and ViTPose-B (random weights, the vitpose_hf presets, flip test on) with the real
YOLOX-nano detector on the real street clip (960x540, ~10 people), played forwards then backwards
(`--speed-frames` frames), at detect_every 1 and 5: frames/s and the detector's share of the time.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VITPOSE_SHARED", ROOT.parent / "shared"))
CLIP = SHARED / "data" / "video_sample" / "street_5f.mp4"
YOLOX = SHARED / "models" / "yolox_nano" / "yolox_nano.onnx"

import motmetrics as mm  # noqa: E402
import transformers  # noqa: E402

import vitpose_hf  # noqa: E402
from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation  # noqa: E402
from vitpose_hf.data.synthetic_video import iter_synthetic_video  # noqa: E402
from vitpose_hf.detectors import BaseDetector, box_iou, xywh_to_xyxy  # noqa: E402
from vitpose_hf.keypoint_schemas import COCO  # noqa: E402
from vitpose_hf.video import Frame, PoseFrame, PoseSmoother, PoseTracker, VideoPoseEstimator, iter_frames  # noqa: E402
from vitpose_hf.video.estimator import persons_to_arrays  # noqa: E402
from vitpose_hf.video.smoothing import DEFAULT_BETA, DEFAULT_MIN_CUTOFF  # noqa: E402

transformers.logging.set_verbosity_error()
logger = logging.getLogger("benchmarks.video")


class SimulatedDetector(BaseDetector):
    """Boxes of the ground-truth persons of the frame (looked up by the frame array's identity),
    with misses and jitter from a fixed seed (see the module docstring)."""

    def __init__(self, seed: int, miss: float = 0.05, jitter: float = 0.03, min_visible: float = 0.3):
        self.rng = np.random.default_rng(seed)
        self.miss, self.jitter, self.min_visible = miss, jitter, min_visible
        self.truth: dict[int, list[dict]] = {}

    def __call__(self, image, score_threshold=None, max_detections=None):
        dets = []
        for person in self.truth[id(image)]:
            if person["visible_fraction"] <= self.min_visible or self.rng.random() < self.miss:
                continue
            x, y, w, h = person["bbox"]
            x0, y0, x1, y1 = np.array([x, y, x + w, y + h]) + self.rng.normal(0, self.jitter, 4) * [w, h, w, h]
            if x1 - x0 > 2 and y1 - y0 > 2:
                dets.append({"bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                             "score": float(self.rng.uniform(0.6, 0.95))})
        return sorted(dets, key=lambda d: -d["score"])


def _frames_with_truth(seed: int, num_frames: int, detector: SimulatedDetector, truth_log: list):
    for f in iter_synthetic_video(seed=seed, num_frames=num_frames):
        detector.truth[id(f.image)] = f.persons
        truth_log.append(f.persons)
        yield Frame(f.index, f.timestamp, f.image)
        if len(detector.truth) > 16:  # bounded: the estimator reads at most a few frames ahead
            detector.truth.pop(next(iter(detector.truth)))


def iou_distance(gt_boxes, hyp_boxes) -> np.ndarray:
    """motmetrics' distance matrix for box matching at IoU >= 0.5 (1 - IoU, NaN = cannot match);
    motmetrics 1.4's own `distances.iou_matrix` calls `np.asfarray`, which NumPy 2 removed."""
    iou = box_iou(xywh_to_xyxy(gt_boxes), xywh_to_xyxy(hyp_boxes))
    return np.where(iou >= 0.5, 1.0 - iou, np.nan)


def _mot(truth_log, frames) -> tuple[dict, mm.MOTAccumulator]:
    acc = mm.MOTAccumulator(auto_id=True)
    for truth, frame in zip(truth_log, frames):
        gt = [p for p in truth if p["visible_fraction"] > 0.0]
        dist = iou_distance([p["bbox"] for p in gt], [p["bbox"] for p in frame.persons])
        acc.update([p["track_id"] for p in gt], [p["track_id"] for p in frame.persons], dist)
    summary = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches", "num_objects"], name="run")
    row = summary.loc["run"]
    return {"MOTA": float(row["mota"]), "IDF1": float(row["idf1"]), "IDSW": int(row["num_switches"]),
            "track_frames": int(row["num_objects"])}, acc


def _matched_tracks(acc, truth_log, frames):
    """`{(gt_id, hyp_id): [(frame, gt (17, 3), pred (17, 3), timestamp, box)]}` from motmetrics' matches."""
    events = acc.mot_events
    matched = events[events["Type"].isin(["MATCH", "SWITCH"])]
    by_frame_gt = [{p["track_id"]: p for p in t} for t in truth_log]
    by_frame_hyp = [{p["track_id"]: p for p in f.persons} for f in frames]
    tracks: dict[tuple, list] = {}
    for (frame_id, _), row in matched.iterrows():
        gt = by_frame_gt[frame_id][row["OId"]]
        hyp = by_frame_hyp[frame_id][row["HId"]]
        pred = np.array([[k["x"], k["y"], k["score"]] for k in hyp["keypoints"]])
        tracks.setdefault((row["OId"], row["HId"]), []).append(
            (frame_id, np.asarray(gt["keypoints"]), pred, frames[frame_id].timestamp, hyp["bbox"]))
    return tracks


def _runs(entries):
    """Split a track's entries into runs of consecutive frames."""
    run = [entries[0]]
    for e in entries[1:]:
        if e[0] == run[-1][0] + 1:
            run.append(e)
        else:
            yield run
            run = [e]
    yield run


LAG_SHIFTS = np.arange(0.0, 6.01, 0.25)  # candidate delays in frames


def _jitter_and_lag(tracks, min_cutoff: float, beta: float) -> dict:
    """Jitter of the raw and the smoothed keypoints, and the smoothing's lag (see the module
    docstring). The lag is the delay `tau` (0 to 6 frames, step 1/4) that maximises the
    cross-correlation of the smoothed track with the raw track delayed by `tau` (linear
    interpolation), i.e. minimises their mean squared difference, pooled over all tracks (each
    keypoint coordinate demeaned per run)."""
    raw_acc, smooth_acc = [], []
    lag_cost = np.zeros(len(LAG_SHIFTS))
    lag_count = 0
    for entries in tracks.values():
        for run in _runs(sorted(entries, key=lambda e: e[0])):
            if len(run) < 12:
                continue
            smoother = PoseSmoother(min_cutoff=min_cutoff, beta=beta)
            gt = np.stack([e[1] for e in run])
            raw = np.stack([e[2] for e in run])
            smooth = np.stack([smoother.smooth(0, e[3], e[2], float(np.hypot(e[4][2], e[4][3]))) for e in run])
            visible = gt[:, :, 2] > 1  # keypoints visible in all three frames of each acceleration
            vis3 = visible[:-2] & visible[1:-1] & visible[2:]
            for arr, out in ((raw, raw_acc), (smooth, smooth_acc)):
                err = arr[:, :, :2] - gt[:, :, :2]
                accel = np.linalg.norm(err[2:] - 2 * err[1:-1] + err[:-2], axis=-1)
                out.extend(accel[vis3].tolist())
            steady = visible.all(axis=0)  # keypoints seen through the whole run
            if not steady.any():
                continue
            r = raw[:, steady, :2].reshape(len(run), -1)
            m = smooth[:, steady, :2].reshape(len(run), -1)
            r, m = r - r.mean(axis=0), m - m.mean(axis=0)
            t = np.arange(len(run), dtype=np.float64)
            start = int(np.ceil(LAG_SHIFTS[-1]))
            for k, tau in enumerate(LAG_SHIFTS):
                delayed = np.stack([np.interp(t[start:] - tau, t, r[:, c]) for c in range(r.shape[1])], axis=1)
                lag_cost[k] += float(((m[start:] - delayed) ** 2).sum())
            lag_count += 1
    raw_j, smooth_j = float(np.mean(raw_acc)), float(np.mean(smooth_acc))
    lag = float(LAG_SHIFTS[int(np.argmin(lag_cost))]) if lag_count else float("nan")
    return {"jitter_raw": raw_j, "jitter_smooth": smooth_j, "jitter_reduction": 1 - smooth_j / raw_j, "lag_frames": lag}


def accuracy(model_dir: str, seeds, num_frames: int, tune: bool) -> list[dict]:
    pipe = transformers.pipeline("keypoint-detection", model=model_dir)
    rows = []
    for seed in seeds:
        for every in (1, 5):
            detector = SimulatedDetector(seed * 100 + every)
            truth_log: list = []
            est = VideoPoseEstimator(pipe, detector=detector, detect_every=every, smooth=False)
            start = time.perf_counter()
            frames = [f for f in est.process(_frames_with_truth(seed, num_frames, detector, truth_log))]
            for f in frames:
                f.image = None  # keep memory bounded: only the persons are needed from here on
            elapsed = time.perf_counter() - start
            scores, acc = _mot(truth_log, frames)
            tracks = _matched_tracks(acc, truth_log, frames)
            row = {"seed": seed, "detect_every": every, **scores,
                   "IDSW_per_1000": 1000 * scores["IDSW"] / max(scores["track_frames"], 1),
                   "detector_calls_per_frame": est.stats.detection_frames / est.stats.frames,
                   "seconds": elapsed}
            row.update(_jitter_and_lag(tracks, DEFAULT_MIN_CUTOFF, DEFAULT_BETA))
            if tune:
                row["grid"] = {(mc, b): _jitter_and_lag(tracks, mc, b)
                               for mc in (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0) for b in (0.0, 0.25, 0.5, 1.0, 2.0, 5.0)}
            rows.append(row)
            print(_fmt_accuracy(row), flush=True)
    return rows


class _Replayed:
    def __init__(self, persons, timestamp):
        self.persons, self.timestamp = persons, timestamp


def association_grid(model_dir: str, seeds, num_frames: int) -> None:
    """ID switches and MOTA of `PoseTracker` settings on the same detections and poses
    (`detect_every=1`: they do not depend on the tracker, so one pass of the model is replayed
    through each setting)."""
    pipe = transformers.pipeline("keypoint-detection", model=model_dir)
    runs = []
    for seed in seeds:
        detector, truth_log = SimulatedDetector(seed * 100 + 1), []
        est = VideoPoseEstimator(pipe, detector=detector, detect_every=1, track=False, smooth=False)
        frames = [PoseFrame(f.index, f.timestamp, None, f.persons)
                  for f in est.process(_frames_with_truth(seed, num_frames, detector, truth_log))]
        runs.append((truth_log, frames))
    print("\n| match_threshold | oks_weight | ID switches (all seeds) | per 1,000 | MOTA per seed |\n|---|---|---|---|---|")
    for threshold in (0.05, 0.1, 0.2, 0.35, 0.5):
        for weight in (0.0, 0.15, 0.3, 0.5, 0.8):
            switches, track_frames, motas = 0, 0, []
            for truth_log, frames in runs:
                tracker = PoseTracker(match_threshold=threshold, oks_weight=weight)
                replay = []
                for f in frames:
                    kps, boxes, scores = persons_to_arrays(f.persons, COCO)
                    ids = tracker.update(f.timestamp, kps, boxes, scores)
                    replay.append(_Replayed([dict(p, track_id=i) for p, i in zip(f.persons, ids) if i is not None], f.timestamp))
                scores_, _ = _mot(truth_log, replay)
                switches += scores_["IDSW"]
                track_frames += scores_["track_frames"]
                motas.append(f"{scores_['MOTA']:.3f}")
            print(f"| {threshold} | {weight} | {switches} | {1000 * switches / track_frames:.2f} | {' / '.join(motas)} |", flush=True)


def _fmt_accuracy(r) -> str:
    return (f"| {r['seed']} | {r['detect_every']} | {r['MOTA']:.3f} | {r['IDF1']:.3f} | {r['IDSW']} | "
            f"{r['IDSW_per_1000']:.2f} | {r['track_frames']} | {r['detector_calls_per_frame']:.2f} | "
            f"{r['jitter_raw']:.2f} | {r['jitter_smooth']:.2f} | {100 * r['jitter_reduction']:.0f}% | "
            f"{r['lag_frames']:.2f} |")


def _pingpong(path: Path, count: int, fps: float = 5.0):
    frames = [f.image for f in iter_frames(path)]
    order = frames + frames[-2:0:-1]
    for i in range(count):
        yield Frame(i, i / fps, order[i % len(order)])


def speed(speed_frames: int) -> list[dict]:
    rows = []
    for preset in ("small", "base"):
        torch.manual_seed(0)
        model = VitPoseForPoseEstimation(VitPoseConfig.from_preset(preset)).eval()
        pipe = transformers.pipeline("keypoint-detection", model=model)
        for every in (1, 5):
            est = VideoPoseEstimator(pipe, detector=str(YOLOX), detect_every=every,
                                     tracker=PoseTracker(min_score=0.0), lost_threshold=0.0)
            list(est.process(_pingpong(CLIP, 2)))  # warm-up (kernels, the detector session)
            list(est.process(_pingpong(CLIP, speed_frames)))
            s = est.stats
            rows.append({"model": f"ViTPose-{preset[0].upper()}", "detect_every": every, "frames": s.frames,
                         "persons_per_frame": s.persons / s.frames, "fps": s.frames / s.total_seconds,
                         "detector_ms_per_frame": 1000 * s.detector_seconds / s.frames,
                         "detector_share": s.detector_seconds / s.total_seconds,
                         "pose_ms_per_frame": 1000 * s.pose_seconds / s.frames})
            r = rows[-1]
            print(f"| {r['model']} | {every} | {r['frames']} | {r['persons_per_frame']:.1f} | {r['fps']:.2f} | "
                  f"{r['detector_ms_per_frame']:.0f} | {100 * r['detector_share']:.0f}% | {r['pose_ms_per_frame']:.0f} |",
                  flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vitpose-offline", help="checkpoint trained on the synthetic people")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--speed-frames", type=int, default=16)
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--accuracy-only", action="store_true")
    parser.add_argument("--tune", action="store_true", help="also print the One-Euro grid (min_cutoff x beta)")
    parser.add_argument("--association-grid", action="store_true", help="only the tracker settings grid (detect_every 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    vitpose_hf.register()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    flags = sorted({f for line in open("/proc/cpuinfo") if line.startswith("flags") for f in line.split()[2:]
                    if f.startswith(("avx", "amx", "fma"))})
    print(f"# vitpose_hf {vitpose_hf.__version__}, torch {torch.__version__}, motmetrics {mm.__version__}")
    print(f"# machine: {cpu}, {os.cpu_count()} cpus, {torch.get_num_threads()} threads; ISA {' '.join(flags)}")
    print(f"# command: python benchmarks/video.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"# started {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.2f}")
    if args.association_grid:
        association_grid(args.model, [int(s) for s in args.seeds.split(",")], args.frames)
        return 0
    if not args.speed_only:
        print("\n| seed | detect_every | MOTA | IDF1 | IDSW | IDSW / 1000 | GT track-frames | detector calls / frame "
              "| jitter raw | jitter smoothed | reduction | lag (frames) |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
        rows = accuracy(args.model, [int(s) for s in args.seeds.split(",")], args.frames, args.tune)
        if args.tune:
            print("\n# One-Euro grid on all runs: min_cutoff, beta -> mean jitter reduction, mean lag")
            keys = rows[0]["grid"].keys()
            for key in keys:
                red = np.mean([r["grid"][key]["jitter_reduction"] for r in rows])
                lag = np.mean([r["grid"][key]["lag_frames"] for r in rows])
                print(f"  {key[0]:5.2f} {key[1]:5.2f} -> {100 * red:5.1f}% {lag:.2f}")
    if not args.accuracy_only:
        print("\n| model | detect_every | frames | persons / frame | frames/s | detector ms / frame | detector share "
              "| pose ms / frame |\n|---|---|---|---|---|---|---|---|")
        speed(args.speed_frames)
    print(f"# finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
