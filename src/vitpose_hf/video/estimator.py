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

import copy
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..detectors import box_iou, build_detector, xywh_to_xyxy
from ..keypoint_schemas import KeypointSchema
from ..similarity import oks_nms_arrays
from .smoothing import DEFAULT_BETA, DEFAULT_D_CUTOFF, DEFAULT_MIN_CUTOFF, PoseSmoother
from .sources import Frame, iter_frames
from .tracking import PoseTracker

logger = logging.getLogger(__name__)

__all__ = ["VIDEO_OPTIONS", "PoseFrame", "VideoPoseEstimator", "VideoStats", "persons_to_arrays"]

#: the options of `VideoPoseEstimator` (its keyword arguments after the pipeline), which the
#: pipeline's video call accepts
VIDEO_OPTIONS = frozenset({
    "detector", "detect_every", "track", "smooth", "min_cutoff", "beta", "d_cutoff", "flip_test",
    "dataset_index", "schema", "detection_threshold", "max_persons", "keypoint_threshold",
    "lost_threshold", "frame_batch", "tracker",
})  # fmt: skip

_END = object()  # the end of the boxes given per frame (a None entry is an empty frame)


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
        keypoint_threshold: keypoints scoring below it are left out of `to_record()` (`persons`
            always holds every keypoint of the schema, in its order).
    """

    index: int
    timestamp: float
    image: np.ndarray
    persons: list[dict]
    detected: bool = False
    keypoint_threshold: float | None = None

    def to_record(self) -> dict:
        """`{"frame", "timestamp", "persons"}`: one line of the JSON Lines output (keypoints below
        `keypoint_threshold` left out, as the pipeline does for images)."""
        persons = self.persons
        if self.keypoint_threshold is not None:
            thr = self.keypoint_threshold
            persons = [dict(p, keypoints=[kp for kp in p["keypoints"] if kp["score"] >= thr]) for p in persons]
        return {"frame": self.index, "timestamp": self.timestamp, "persons": persons}


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
    """Pipeline persons -> keypoints `(N, K, 3)` in the schema's order (matched by label; a keypoint
    the person lacks, e.g. one dropped by a threshold, is `(0, 0, 0)`), boxes `(N, 4)` xywh, scores `(N,)`."""
    index = {name: k for k, name in enumerate(schema.keypoints)}
    keypoints = np.zeros((len(persons), schema.num_keypoints, 3))
    for i, person in enumerate(persons):
        for kp in person["keypoints"]:
            k = index.get(kp["label"])
            if k is not None:
                keypoints[i, k] = (kp["x"], kp["y"], kp["score"])
    boxes = np.asarray([p["bbox"] for p in persons], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray([p["score"] for p in persons], dtype=np.float64)
    return keypoints, boxes, scores


def _full_keypoints(keypoints: np.ndarray, schema: KeypointSchema) -> list[dict]:
    """`(K, 3)` -> the pipeline's keypoint dicts, every keypoint of the schema."""
    return [{"label": name, "x": float(x), "y": float(y), "score": float(sc)} for name, (x, y, sc) in zip(schema.keypoints, keypoints)]


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
            detector the pipeline was built with, else its default (RT-DETR).
        detect_every: run the detector on every N-th frame (and after a track is lost); in between,
            boxes follow the tracks. 1 = every frame.
        track: assign track ids (needed for `detect_every > 1` and for smoothing).
        smooth: One-Euro smoothing of each track's keypoints (`min_cutoff`, `beta`, `d_cutoff`,
            see `vitpose_hf.video.smoothing`).
        flip_test, dataset_index, schema, detection_threshold, max_persons: as for the pipeline
            (`max_persons` limits the detections, not the tracks carried); None = what the pipeline
            was built with, else the pipeline's defaults. `detector=None` likewise takes the
            pipeline's own detector when it was built with one.
        keypoint_threshold: leave keypoints scoring below it out of the records (`to_record()`);
            the frames' persons keep every keypoint for drawing.
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
        flip_test: bool | None = None,
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
        # what the pipeline was built with (transformers.pipeline(..., flip_test=False, detector=...))
        # applies unless given here
        built = {
            **getattr(pipeline, "_preprocess_params", {}), **getattr(pipeline, "_forward_params", {}),
            **getattr(pipeline, "_postprocess_params", {}),
        }  # fmt: skip
        flip_test = built.get("flip_test", True) if flip_test is None else flip_test
        dataset_index = built.get("dataset_index") if dataset_index is None else dataset_index
        schema = built.get("schema") if schema is None else schema
        detector = built.get("detector") if detector is None else detector
        detection_threshold = built.get("detection_threshold") if detection_threshold is None else detection_threshold
        max_persons = built.get("max_persons") if max_persons is None else max_persons
        keypoint_threshold = built.get("keypoint_threshold") if keypoint_threshold is None else keypoint_threshold
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
        self.keypoint_threshold = None if keypoint_threshold is None else float(keypoint_threshold)
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
        # a detector function may return boxes off the frame: such a box holds nobody here
        height, width = image.shape[:2]
        inside = (boxes[:, 0] < width) & (boxes[:, 1] < height) & (boxes[:, 0] + boxes[:, 2] > 0) & (boxes[:, 1] + boxes[:, 3] > 0)
        return boxes[inside], scores[inside]

    def _poses(self, images: list[np.ndarray], boxes: list[np.ndarray], scores: list[np.ndarray]) -> list[list[dict]]:
        """One forward pass for the crops of all `images` (the pipeline's list call)."""
        start = time.perf_counter()
        if not any(len(b) for b in boxes):
            out = [[] for _ in images]
        else:
            # max_persons: every box given here is kept (the pipeline's own limit applies to detections)
            out = self.pipeline(
                images, boxes=[b.tolist() for b in boxes], box_scores=[s.tolist() for s in scores],
                batch_size=len(images), max_persons=max(len(b) for b in boxes), **self.pose_kwargs,
            )  # fmt: skip
        self.stats.pose_seconds += time.perf_counter() - start
        return out

    @staticmethod
    def _given_boxes(entry: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(entry, dict):
            boxes, scores = entry.get("boxes", []), entry.get("box_scores")
        else:
            boxes, scores = entry, None
        try:
            arr = np.asarray(boxes if boxes is not None else [], dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"frame {index}: boxes must be a list of [x, y, w, h], got {boxes!r:.100}") from err
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
                or `{"boxes": ..., "box_scores": ...}` dict, per frame; None or `[]` = nobody in that
                frame); the detector is then not used.

        Raises:
            ValueError: bad source or frames (see `iter_frames`), fewer box lists than frames.
        """
        return self.process(iter_frames(source, fps=fps), boxes)

    def process(self, frames: Iterable[Frame], boxes: Iterable[Any] | None = None) -> Iterator[PoseFrame]:
        """Like calling the estimator, for frames already opened (`iter_frames(...)`). Each call starts
        afresh: a new tracker (a copy of the `tracker=` given) and new smoothing state."""
        box_iter = iter(boxes) if boxes is not None else None
        self.stats = VideoStats()
        tracker = None
        if self.track:
            template = self._tracker_template
            tracker = PoseTracker(sigmas=self._sigmas()) if template is None else copy.deepcopy(template)
        smoother = PoseSmoother(**self.smoother_options) if self.smooth else None
        independent = box_iter is not None or self.detect_every == 1
        since_detection = self.detect_every  # the first frame is a detection frame
        redetect = False
        batch: list[Frame] = []
        frames = iter(frames)
        try:
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
                    # a detection frame: every N-th, after a lost track, with nobody to carry, and
                    # while a new person's tentative track waits for its confirming detection
                    tentative = any(t.track_id is None for t in tracker.tracks)
                    detect = redetect or tentative or since_detection >= self.detect_every or not tracker.active_tracks()
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
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # releases a video file or camera even when the caller stops early
        logger.info("video: %s", self.stats.summary())

    def _independent_batch(self, batch: list[Frame], box_iter, tracker, smoother) -> Iterator[PoseFrame]:
        all_boxes, all_scores = [], []
        for frame in batch:
            if box_iter is not None:
                entry = next(box_iter, _END)
                if entry is _END:
                    raise ValueError(f"boxes: no entry for frame {frame.index} (give one list per frame)")
                boxes, scores = self._given_boxes(entry, frame.index)
            else:
                boxes, scores = self._detect(frame.image)
            all_boxes.append(boxes)
            all_scores.append(scores)
        try:
            results = self._poses([f.image for f in batch], all_boxes, all_scores)
        except ValueError as err:
            if box_iter is None:
                raise
            first, last = batch[0].index, batch[-1].index
            raise ValueError(f"boxes of frame{'s' if last > first else ''} {first}{f'-{last}' if last > first else ''}: {err}") from err
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
        keypoints, boxes, scores = persons_to_arrays(persons, self.schema)
        # every keypoint of the schema, in its order (the pipeline may have dropped some by a threshold)
        out = [dict(person, keypoints=_full_keypoints(kps, self.schema)) for person, kps in zip(persons, keypoints)]
        if tracker is not None:
            ids = tracker.update(frame.timestamp, keypoints, boxes, scores, sources=sources)
            shown = []
            for person, track_id, kps, box in zip(out, ids, keypoints, boxes):
                if track_id is None:
                    continue  # tentative track or low-score person: not shown
                person["track_id"] = int(track_id)
                if smoother is not None:
                    scale = float(np.hypot(box[2], box[3]))
                    person["keypoints"] = _full_keypoints(smoother.smooth(track_id, frame.timestamp, kps, scale), self.schema)
                shown.append(person)
            out = sorted(shown, key=lambda p: p["track_id"])
            if smoother is not None:
                smoother.keep_only(t.track_id for t in tracker.tracks if t.track_id is not None)
        self.stats.tracking_seconds += time.perf_counter() - start
        self.stats.frames += 1
        self.stats.detection_frames += int(detected)
        self.stats.persons += len(out)
        return PoseFrame(frame.index, frame.timestamp, frame.image, out, detected=detected,
                         keypoint_threshold=self.keypoint_threshold)
