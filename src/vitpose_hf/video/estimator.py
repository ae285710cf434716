"""Tracked, smoothed poses for a stream of frames: detector -> ViTPose -> tracker -> smoother.

Per frame, the person boxes come from one of three places:

- given boxes (`boxes=`, one list per frame), or the person detector on a *detection frame*;
- on the frames in between (`detect_every=N > 1`), each live track's keypoints of the previous
  frame, moved by its velocity and enlarged to a person box (no detector call);
- a track whose carried pose scores below `lost_threshold` is dropped at once, and the next frame is
  a detection frame (re-detection when a track is lost), as is every N-th frame, which also finds the
  people who entered meanwhile.

The crops of all persons of a frame go through the model in one batch; when no frame's boxes depend on
the previous frame (given boxes, or `detect_every=1`), `frame_batch` frames are read ahead and all
their crops share one forward pass. The keypoint-detection pipeline does the cropping, the forward
pass (with the flip test and the ViTPose++ head chosen by `dataset_index`) and the decoding, exactly
as for single images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..detectors import box_iou, build_detector, xywh_to_xyxy
from ..keypoint_schemas import KeypointSchema
from ..similarity import oks_nms_arrays
from .smoothing import DEFAULT_BETA, DEFAULT_D_CUTOFF, DEFAULT_MIN_CUTOFF, PoseSmoother
from .sources import Frame, iter_frames
from .tracking import PoseTracker

logger = logging.getLogger(__name__)

__all__ = ["PoseFrame", "VideoPoseEstimator", "VideoStats", "persons_to_arrays"]


@dataclass
class PoseFrame:
    """The result for one frame.

    Attributes:
        index: frame number, from 0.
        timestamp: seconds since the first frame.
        image: `(H, W, 3)` uint8 RGB frame.
        persons: the pipeline's person format (`bbox`, `box`, `label`, `score`, `keypoints`) plus
            `track_id` (int) when tracking; sorted by track id.
        detected: whether the detector ran on this frame (False: boxes carried from the last frame,
            or given).
    """

    index: int
    timestamp: float
    image: np.ndarray
    persons: list[dict]
    detected: bool = False

    def to_record(self) -> dict:
        """`{"frame", "timestamp", "persons"}`: one line of the JSON Lines output."""
        return {"frame": self.index, "timestamp": self.timestamp, "persons": self.persons}


@dataclass
class VideoStats:
    """Where the time went (seconds, wall clock) and how many frames ran the detector."""

    frames: int = 0
    detection_frames: int = 0
    persons: int = 0
    read_seconds: float = 0.0
    detector_seconds: float = 0.0
    pose_seconds: float = 0.0
    tracking_seconds: float = 0.0
    per_frame: list[dict] = field(default_factory=list, repr=False)

    @property
    def total_seconds(self) -> float:
        return self.read_seconds + self.detector_seconds + self.pose_seconds + self.tracking_seconds

    def summary(self) -> str:
        fps = self.frames / self.total_seconds if self.total_seconds > 0 else float("nan")
        share = self.detector_seconds / self.total_seconds if self.total_seconds > 0 else float("nan")
        return (
            f"{self.frames} frames ({self.detection_frames} with detection), {self.persons} persons, "
            f"{fps:.2f} frames/s, detector {100 * share:.0f}% of the time"
        )


def persons_to_arrays(persons: list[dict], schema: KeypointSchema) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pipeline persons -> keypoints `(N, K, 3)`, boxes `(N, 4)` xywh, scores `(N,)`."""
    k = schema.num_keypoints
    keypoints = np.zeros((len(persons), k, 3))
    for i, person in enumerate(persons):
        for j, kp in enumerate(person["keypoints"][:k]):
            keypoints[i, j] = (kp["x"], kp["y"], kp["score"])
    boxes = np.asarray([p["bbox"] for p in persons], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray([p["score"] for p in persons], dtype=np.float64)
    return keypoints, boxes, scores


def _keypoint_box(keypoints: np.ndarray, fallback: np.ndarray, threshold: float, margin: float) -> np.ndarray:
    """The `[x, y, w, h]` box around the keypoints scoring >= `threshold`, grown by `margin` of its
    size on each side (joints lie inside the body: the head top and the feet are beyond them);
    `fallback` when fewer than 3 keypoints are seen."""
    seen = keypoints[:, 2] >= threshold
    if seen.sum() < 3:
        return fallback.copy()
    x0, y0 = keypoints[seen, :2].min(axis=0)
    x1, y1 = keypoints[seen, :2].max(axis=0)
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    # a person seen from the front is taller than wide: keep the box at least 1/4 as wide as tall
    w, h = max(w, 0.25 * h), max(h, 0.25 * w)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = w * (1 + 2 * margin), h * (1 + 2 * margin)
    return np.array([cx - w / 2, cy - h / 2, w, h])


class VideoPoseEstimator:
    """Stream a video through a keypoint-detection pipeline with tracking and smoothing.

    Args:
        pipeline: a `KeypointDetectionPipeline` (`transformers.pipeline("keypoint-detection", ...)`).
        detector: person detector for the detection frames (anything the pipeline's `detector=`
            takes: a YOLOX `.onnx` path, a model id, a detector object, a function); None = the
            pipeline's default detector.
        detect_every: run the detector on every N-th frame (and after a track is lost); in between,
            boxes follow the tracks. 1 = every frame.
        track: assign track ids (needed for `detect_every > 1` and for smoothing).
        smooth: One-Euro smoothing of each track's keypoints (`min_cutoff`, `beta`, `d_cutoff`,
            see `vitpose_hf.video.smoothing`).
        flip_test, dataset_index, schema, detection_threshold, max_persons: as for the pipeline.
        keypoint_threshold: drop keypoints scoring below it from the output (after tracking).
        lost_threshold: a carried person whose score is below it is dropped (its track is lost).
        frame_batch: frames whose crops share one forward pass when no boxes depend on the previous
            frame.
        tracker: a `PoseTracker` to use (default: one with the schema's OKS sigmas); its options
            are documented there.
    """

    def __init__(
        self,
        pipeline,
        detector: Any = None,
        detect_every: int = 1,
        track: bool = True,
        smooth: bool = True,
        min_cutoff: float = DEFAULT_MIN_CUTOFF,
        beta: float = DEFAULT_BETA,
        d_cutoff: float = DEFAULT_D_CUTOFF,
        flip_test: bool = True,
        dataset_index: int | None = None,
        schema: Any = None,
        detection_threshold: float | None = None,
        max_persons: int | None = None,
        keypoint_threshold: float | None = None,
        lost_threshold: float = 0.2,
        frame_batch: int = 4,
        tracker: PoseTracker | None = None,
    ):
        if isinstance(detect_every, bool) or int(detect_every) != detect_every or int(detect_every) < 1:
            raise ValueError(f"detect_every must be an integer >= 1, got {detect_every!r}")
        if int(frame_batch) < 1:
            raise ValueError(f"frame_batch must be >= 1, got {frame_batch}")
        if not track and (smooth or int(detect_every) > 1):
            need = "smooth=True" if smooth else f"detect_every={detect_every}"
            raise ValueError(f"{need} follows people from frame to frame: it needs track=True")
        self.pipeline = pipeline
        self.detect_every = int(detect_every)
        self.track = bool(track)
        self.smooth = bool(smooth)
        self.smoother_options = {"min_cutoff": min_cutoff, "beta": beta, "d_cutoff": d_cutoff}
        PoseSmoother(**self.smoother_options)  # bad smoothing options fail here, before any frame
        self.schema = pipeline.schema_for(dataset_index, schema)
        self.pose_kwargs = {"flip_test": bool(flip_test)}
        if dataset_index is not None:
            self.pose_kwargs["dataset_index"] = int(dataset_index)
        if schema is not None:
            self.pose_kwargs["schema"] = self.schema
        self.detector = build_detector(detector)
        if detection_threshold is not None and not 0.0 <= float(detection_threshold) <= 1.0:
            raise ValueError(f"detection_threshold must be in [0, 1], got {detection_threshold}")
        self.detection_threshold = detection_threshold
        if max_persons is not None and int(max_persons) < 1:
            raise ValueError(f"max_persons must be >= 1, got {max_persons}")
        self.max_persons = max_persons
        self.keypoint_threshold = keypoint_threshold
        self.lost_threshold = float(lost_threshold)
        self.frame_batch = int(frame_batch)
        self._tracker_template = tracker
        self.stats = VideoStats()

    # ------------------------------------------------------------------------------ helpers

    def _sigmas(self):
        if self.schema.sigmas is not None:
            return self.schema
        return np.full(self.schema.num_keypoints, 0.07)  # a schema without OKS sigmas: COCO's typical one

    def _detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        detector = self.detector or self.pipeline.default_detector()
        start = time.perf_counter()
        dets = detector(image, score_threshold=self.detection_threshold, max_detections=self.max_persons)
        self.stats.detector_seconds += time.perf_counter() - start
        boxes = np.asarray([d["bbox"] for d in dets], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray([d["score"] for d in dets], dtype=np.float64)
        return boxes, scores

    def _poses(self, images: list[np.ndarray], boxes: list[np.ndarray], scores: list[np.ndarray]) -> list[list[dict]]:
        """One forward pass for the crops of all `images` (the pipeline's list call)."""
        start = time.perf_counter()
        if not any(len(b) for b in boxes):
            out = [[] for _ in images]
        else:
            out = self.pipeline(
                images, boxes=[b.tolist() for b in boxes], box_scores=[s.tolist() for s in scores],
                batch_size=len(images), **self.pose_kwargs,
            )  # fmt: skip
        self.stats.pose_seconds += time.perf_counter() - start
        return out

    @staticmethod
    def _given_boxes(entry: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(entry, dict):
            boxes, scores = entry.get("boxes", []), entry.get("box_scores")
        else:
            boxes, scores = entry, None
        arr = np.asarray(boxes if boxes is not None else [], dtype=np.float64)
        if arr.size == 0:
            arr = np.zeros((0, 4))
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise ValueError(f"frame {index}: boxes must be a list of [x, y, w, h], got shape {arr.shape}")
        sc = np.ones(len(arr)) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
        if sc.shape[0] != arr.shape[0]:
            raise ValueError(f"frame {index}: {arr.shape[0]} boxes but {sc.shape[0]} box_scores")
        return arr, sc

    # ------------------------------------------------------------------------------ the loop

    def __call__(self, source: Any, fps: float | None = None, boxes: Iterable[Any] | None = None) -> Iterator[PoseFrame]:
        """Yield one `PoseFrame` per frame of `source` (see `vitpose_hf.video.iter_frames` for the
        sources: a video file, an image folder with `fps`, a camera index, or an iterable of frames).

        Args:
            source: the frames.
            fps: frame rate (required for image folders and plain image iterators).
            boxes: optional person boxes per frame (an iterable with one `[[x, y, w, h], ...]` list,
                or `{"boxes": ..., "box_scores": ...}` dict, per frame); the detector is then not used.

        Raises:
            ValueError: bad source or frames (see `iter_frames`), fewer box lists than frames.
        """
        return self.process(iter_frames(source, fps=fps), boxes)

    def process(self, frames: Iterable[Frame], boxes: Iterable[Any] | None = None) -> Iterator[PoseFrame]:
        """Like calling the estimator, for frames already opened (`iter_frames(...)`)."""
        box_iter = iter(boxes) if boxes is not None else None
        self.stats = VideoStats()
        tracker = None
        if self.track:
            template = self._tracker_template
            tracker = PoseTracker(sigmas=self._sigmas()) if template is None else template
        smoother = PoseSmoother(**self.smoother_options) if self.smooth else None
        independent = box_iter is not None or self.detect_every == 1
        since_detection = self.detect_every  # the first frame is a detection frame
        redetect = False
        batch: list[Frame] = []
        frames = iter(frames)
        while True:
            start = time.perf_counter()
            frame = next(frames, None)
            self.stats.read_seconds += time.perf_counter() - start
            if frame is not None and independent:
                batch.append(frame)
                if len(batch) < self.frame_batch:
                    continue
            if independent:
                if batch:
                    yield from self._independent_batch(batch, box_iter, tracker, smoother)
                    batch = []
            elif frame is not None:
                detect = redetect or since_detection >= self.detect_every or not tracker.active_tracks()
                if detect:
                    boxes, scores = self._detect(frame.image)
                    persons = self._poses([frame.image], [boxes], [scores])[0]
                    sources = None  # detections: the tracker assigns them
                    since_detection = 1
                    redetect = False
                else:
                    persons, sources, redetect = self._carried(frame, tracker)
                    since_detection += 1
                yield self._finish(frame, persons, tracker, smoother, detected=detect, sources=sources)
            if frame is None:
                break
        logger.info("video: %s", self.stats.summary())

    def _independent_batch(self, batch: list[Frame], box_iter, tracker, smoother) -> Iterator[PoseFrame]:
        all_boxes, all_scores = [], []
        for frame in batch:
            if box_iter is not None:
                entry = next(box_iter, None)
                if entry is None:
                    raise ValueError(f"boxes: no entry for frame {frame.index} (give one list per frame)")
                boxes, scores = self._given_boxes(entry, frame.index)
            else:
                boxes, scores = self._detect(frame.image)
            all_boxes.append(boxes)
            all_scores.append(scores)
        results = self._poses([f.image for f in batch], all_boxes, all_scores)
        for frame, persons in zip(batch, results):
            yield self._finish(frame, persons, tracker, smoother, detected=box_iter is None)

    def _carried(self, frame: Frame, tracker: PoseTracker) -> tuple[list[dict], list, bool]:
        """Pose of every live track in a box made from its previous keypoints; returns the persons
        kept, the track each came from, and whether a track was lost (the next frame then runs the
        detector)."""
        width, height = frame.size
        boxes, sources, lost = [], [], False
        for track in tracker.active_tracks():
            keypoints, bbox = track.predicted(frame.timestamp)
            # the box its detector would draw around the moved keypoints, 5 % wider per side for the
            # pose change since; before any detection of it, the keypoints' extent grown by 10 %
            box = track.box_around(keypoints, extra=0.05)
            if box is None:
                box = _keypoint_box(keypoints, bbox, threshold=0.3, margin=0.1)
            x, y, w, h = box
            if x >= width or y >= height or x + w <= 0 or y + h <= 0:
                lost = True  # walked out of the frame
                continue
            boxes.append(box)
            sources.append(track)
        if not boxes:
            return [], [], True
        persons = self._poses([frame.image], [np.asarray(boxes)], [np.ones(len(boxes))])[0]
        stay = np.zeros(len(persons))  # how well each new pose stays in its track's box
        for i, (person, track) in enumerate(zip(persons, sources)):
            keypoints, _, _ = persons_to_arrays([person], self.schema)
            box = track.box_around(keypoints[0])
            before = track.predicted(frame.timestamp)[1]
            if box is not None:
                # centred on the new pose; the size half from it, half from the last frame's box
                # (a swinging arm changes the keypoints' extent more than the person's box)
                size = 0.5 * (box[2:] + before[2:])
                x, y = (box[:2] + box[2:] / 2 - size / 2).tolist()
                w, h = size.tolist()
                person.update(bbox=[x, y, w, h], box={"xmin": x, "ymin": y, "xmax": x + w, "ymax": y + h})
            stay[i] = box_iou(xywh_to_xyxy(before), xywh_to_xyxy(np.asarray(person["bbox"])))[0, 0]
        # a pose that left its track's box (it latched onto someone else) or scores low: the track
        # is lost, the detector runs on the next frame
        keep = [i for i, p in enumerate(persons) if p["score"] >= self.lost_threshold and stay[i] >= 0.3]
        lost = lost or len(keep) < len(persons)
        if len(keep) > 1:
            # two tracks on the same person: keep the one whose pose stayed in its own box best
            keypoints, bbs, _ = persons_to_arrays([persons[i] for i in keep], self.schema)
            survivors = oks_nms_arrays(keypoints, stay[keep], bbs[:, 2] * bbs[:, 3], threshold=0.9, sigmas=self._sigmas())
            if len(survivors) < len(keep):
                lost = True
            keep = [keep[i] for i in sorted(survivors.tolist())]
        return [persons[i] for i in keep], [sources[i] for i in keep], lost

    def _finish(self, frame: Frame, persons: list[dict], tracker, smoother, detected: bool, sources=None) -> PoseFrame:
        start = time.perf_counter()
        out = persons
        if tracker is not None:
            keypoints, boxes, scores = persons_to_arrays(persons, self.schema)
            ids = tracker.update(frame.timestamp, keypoints, boxes, scores, sources=sources)
            out = []
            for person, track_id, kps, box in zip(persons, ids, keypoints, boxes):
                if track_id is None:
                    continue  # tentative track or low-score person: not shown
                person = dict(person, track_id=int(track_id))
                if smoother is not None:
                    scale = float(np.hypot(box[2], box[3]))
                    smoothed = smoother.smooth(track_id, frame.timestamp, kps, scale)
                    person["keypoints"] = [
                        dict(kp, x=float(xy[0]), y=float(xy[1])) for kp, xy in zip(person["keypoints"], smoothed)
                    ]
                out.append(person)
            out.sort(key=lambda p: p["track_id"])
            if smoother is not None:
                smoother.keep_only(t.track_id for t in tracker.tracks if t.track_id is not None)
        if self.keypoint_threshold is not None:
            thr = float(self.keypoint_threshold)
            out = [dict(p, keypoints=[kp for kp in p["keypoints"] if kp["score"] >= thr]) for p in out]
        self.stats.tracking_seconds += time.perf_counter() - start
        self.stats.frames += 1
        self.stats.detection_frames += int(detected)
        self.stats.persons += len(out)
        return PoseFrame(frame.index, frame.timestamp, frame.image, out, detected=detected)
