"""Pose tracking: which person of this frame is which person of the last frames.

Association is one Hungarian assignment per frame (`scipy.optimize.linear_sum_assignment`) on a
similarity that mixes the two cues top-down pose gives: the box IoU and the object keypoint
similarity (OKS, COCO's keypoint distance, `vitpose_hf.similarity.oks_iou`) between each track's pose,
moved by its velocity to the frame's time, and each new person. IoU alone (SORT, ByteTrack, and
supervision's ByteTrack) confuses two people whose boxes overlap while they cross; their keypoints
still tell them apart, which is why the OKS term is there. A pair is matched only when its
similarity reaches `match_threshold`.

Births and deaths have hysteresis: a new person starts a tentative track that gets an id only
after `min_hits` consecutive frames (a single false detection never shows up), except in the first
`min_hits` frames of a stream, where everything seen is confirmed at once; a confirmed track that
is not matched survives `max_missed` frames (coasting on its velocity, not reported) before it
ends, so a person hidden for a moment keeps its id. Ids are integers counted from 1 and never
reused.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from ..detectors import box_iou, xywh_to_xyxy
from ..similarity import oks_iou

logger = logging.getLogger(__name__)

__all__ = ["PoseTracker", "Track", "keypoint_extent"]


@dataclass
class Track:
    """One tracked person.

    Attributes:
        track_id: the id shown to users (None while tentative).
        keypoints: `(K, 3)` [x, y, score] of the last matched frame.
        bbox: `[x, y, w, h]` of the last matched frame.
        timestamp: time (s) of the last match.
        velocity: `(2,)` pixels / s of the person's centre (smoothed).
        hits: consecutive matched frames; missed: frames since the last match.
        box_margins: how the person's detector box extends beyond the extent of its confident
            keypoints, `(left, top, right, bottom)` in units of that extent's width / height
            (learnt on detection frames; None before the first), used to draw a detector-like box
            around keypoints on the frames without detection.
    """

    track_id: int | None
    keypoints: np.ndarray
    bbox: np.ndarray
    timestamp: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    hits: int = 1
    missed: int = 0
    serial: int = 0  # internal, for stable ordering
    box_margins: np.ndarray | None = None

    def box_around(self, keypoints: np.ndarray, threshold: float = 0.3, extra: float = 0.0) -> np.ndarray | None:
        """`[x, y, w, h]`: the box this person's detector would draw around `keypoints` `(K, 3)`
        (its learnt `box_margins`, plus `extra` of the extent per side); None when it has no margins
        yet or fewer than 3 keypoints score >= `threshold`."""
        extent = keypoint_extent(keypoints, threshold)
        if extent is None or self.box_margins is None:
            return None
        x0, y0, x1, y1 = extent
        w, h = x1 - x0, y1 - y0
        left, top, right, bottom = self.box_margins + extra
        return np.array([x0 - left * w, y0 - top * h, w * (1 + left + right), h * (1 + top + bottom)])

    def learn_box(self, keypoints: np.ndarray, bbox: np.ndarray, threshold: float = 0.3) -> None:
        """Update `box_margins` from a detector box `bbox` `[x, y, w, h]` and the keypoints in it."""
        extent = keypoint_extent(keypoints, threshold)
        if extent is None:
            return
        x0, y0, x1, y1 = extent
        w, h = x1 - x0, y1 - y0
        margins = np.array([(x0 - bbox[0]) / w, (y0 - bbox[1]) / h, (bbox[0] + bbox[2] - x1) / w, (bbox[1] + bbox[3] - y1) / h])
        margins = np.clip(margins, 0.0, 1.0)
        self.box_margins = margins if self.box_margins is None else 0.5 * self.box_margins + 0.5 * margins

    def predicted(self, timestamp: float) -> tuple[np.ndarray, np.ndarray]:
        """`(keypoints (K, 3), bbox (4,))` moved by the velocity to `timestamp`."""
        shift = self.velocity * max(0.0, float(timestamp) - self.timestamp)
        keypoints = self.keypoints.copy()
        keypoints[:, :2] += shift
        bbox = self.bbox.copy()
        bbox[:2] += shift
        return keypoints, bbox


def keypoint_extent(keypoints: np.ndarray, threshold: float = 0.3) -> tuple[float, float, float, float] | None:
    """`(x0, y0, x1, y1)` of the keypoints `(K, 3)` scoring >= `threshold` (at least 1 px each way),
    None when fewer than 3 do."""
    seen = keypoints[:, 2] >= threshold
    if seen.sum() < 3:
        return None
    x0, y0 = keypoints[seen, :2].min(axis=0)
    x1, y1 = keypoints[seen, :2].max(axis=0)
    return float(x0), float(y0), max(float(x1), x0 + 1.0), max(float(y1), y0 + 1.0)


def _centre(keypoints: np.ndarray, bbox: np.ndarray, threshold: float) -> np.ndarray:
    """A person's position for its velocity: the mean of its confident keypoints (steadier than a
    detector's box, whose edges jitter), the box centre when fewer than 3 are confident."""
    seen = keypoints[:, 2] >= threshold
    if seen.sum() >= 3:
        return keypoints[seen, :2].mean(axis=0)
    return bbox[:2] + bbox[2:] / 2


class PoseTracker:
    """Online multi-person pose tracker (see the module docstring).

    Args:
        sigmas: OKS sigmas (a schema name such as "coco", a `KeypointSchema`, or `(K,)` floats).
        oks_weight: weight of OKS in the similarity; IoU gets `1 - oks_weight`.
        match_threshold: lowest similarity accepted as the same person.
        min_hits: consecutive frames before a new track gets an id.
        max_missed: frames a confirmed track may go unmatched before it ends.
        keypoint_threshold: keypoints of the new person scoring below it are ignored by OKS.
        min_score: persons scoring below it never start a track (they may still continue one).
    """

    def __init__(
        self,
        sigmas="coco",
        oks_weight: float = 0.15,
        match_threshold: float = 0.1,
        min_hits: int = 2,
        max_missed: int = 30,
        keypoint_threshold: float = 0.3,
        min_score: float = 0.3,
    ):
        try:  # an optional dependency (the "video" extra), imported when a tracker is made
            from scipy.optimize import linear_sum_assignment
        except ImportError as err:  # pragma: no cover - exercised only without scipy
            raise ImportError("pose tracking needs scipy: pip install scipy (or vitpose_hf[video])") from err
        self._assign = linear_sum_assignment
        if not 0.0 <= float(oks_weight) <= 1.0:
            raise ValueError(f"oks_weight must be in [0, 1], got {oks_weight}")
        if not 0.0 < float(match_threshold) <= 1.0:
            raise ValueError(f"match_threshold must be in (0, 1], got {match_threshold}")
        if int(min_hits) < 1:
            raise ValueError(f"min_hits must be >= 1, got {min_hits}")
        if int(max_missed) < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        self.sigmas = sigmas
        self.oks_weight = float(oks_weight)
        self.match_threshold = float(match_threshold)
        self.min_hits = int(min_hits)
        self.max_missed = int(max_missed)
        self.keypoint_threshold = float(keypoint_threshold)
        self.min_score = float(min_score)
        self.tracks: list[Track] = []
        self.frames_seen = 0
        self.ended: list[int] = []  # ids of confirmed tracks that ended on the last update
        self._next_id = 1
        self._serial = 0

    def active_tracks(self) -> list[Track]:
        """Confirmed and tentative tracks matched on the last frame (those whose boxes can be
        carried to the next frame)."""
        return [t for t in self.tracks if t.missed == 0]

    def similarity(self, timestamp: float, keypoints: np.ndarray, bboxes: np.ndarray) -> np.ndarray:
        """`(T, N)` similarity of the current tracks (moved to `timestamp`) to N persons with
        keypoints `(N, K, 3)` and boxes `(N, 4)` xywh."""
        if not self.tracks or len(bboxes) == 0:
            return np.zeros((len(self.tracks), len(bboxes)))
        moved = [t.predicted(timestamp) for t in self.tracks]
        track_kpts = np.stack([m[0] for m in moved])
        track_boxes = np.stack([m[1] for m in moved])
        iou = box_iou(xywh_to_xyxy(track_boxes), xywh_to_xyxy(bboxes))
        # OKS with the tracks' box areas (persons' segmentation areas are unknown); COCO takes 0.53 x
        # box area as a person's area, the constant cancels out of the ranking but not of the threshold
        areas_t = 0.53 * track_boxes[:, 2] * track_boxes[:, 3]
        areas_n = 0.53 * bboxes[:, 2] * bboxes[:, 3]
        oks = oks_iou(track_kpts, keypoints, areas_t, areas_n, sigmas=self.sigmas, vis_threshold=self.keypoint_threshold)
        return self.oks_weight * oks.astype(np.float64) + (1.0 - self.oks_weight) * iou

    def update(
        self,
        timestamp: float,
        keypoints: np.ndarray,
        bboxes: np.ndarray,
        scores: np.ndarray,
        sources: list[Track | None] | None = None,
    ) -> list[int | None]:
        """Associate the persons of one frame with the tracks.

        Args:
            timestamp: the frame's time in seconds.
            keypoints: `(N, K, 3)` [x, y, score] per person.
            bboxes: `(N, 4)` `[x, y, w, h]` per person.
            scores: `(N,)` person scores.
            sources: optional, per person the `Track` whose carried box it was estimated in (None
                for a detection): such a person continues that track without a vote; the others
                are assigned among the remaining tracks.

        Returns:
            Per person its track id, or None (a tentative track, or a low-score person that started
            nothing). `self.ended` then lists the ids of tracks that ended on this frame.
        """
        keypoints = np.asarray(keypoints, dtype=np.float64)
        bboxes = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        n = bboxes.shape[0]
        if keypoints.shape[0] != n or scores.shape[0] != n:
            raise ValueError(f"{keypoints.shape[0]} keypoint sets, {n} boxes and {scores.shape[0]} scores")
        if n and (keypoints.ndim != 3 or keypoints.shape[2] != 3):
            raise ValueError(f"keypoints must have shape (N, K, 3), got {keypoints.shape}")
        if not (np.isfinite(keypoints).all() and np.isfinite(bboxes).all() and np.isfinite(scores).all()):
            raise ValueError("keypoints, boxes and scores must be finite")
        if sources is not None and len(sources) != n:
            raise ValueError(f"{len(sources)} sources for {n} persons")
        timestamp = float(timestamp)
        matched_track: dict[int, int] = {}  # person -> row in self.tracks
        if sources is not None:
            row_of = {id(t): r for r, t in enumerate(self.tracks)}
            for c, source in enumerate(sources):
                if source is not None and id(source) in row_of:
                    matched_track[c] = row_of[id(source)]
        taken = set(matched_track.values())
        free_rows = [r for r in range(len(self.tracks)) if r not in taken]
        free_cols = [c for c in range(n) if c not in matched_track]
        if free_rows and free_cols:
            sim = self.similarity(timestamp, keypoints[free_cols], bboxes[free_cols])[free_rows]
            rows, cols = self._assign(-sim)
            for r, c in zip(rows, cols):
                if sim[r, c] >= self.match_threshold:
                    matched_track[free_cols[int(c)]] = free_rows[int(r)]
        starting = self.frames_seen < self.min_hits
        ids: list[int | None] = [None] * n
        kept: list[Track] = []
        self.ended = []
        person_of = {r: c for c, r in matched_track.items()}
        for r, track in enumerate(self.tracks):
            person = person_of.get(r)
            if person is None:
                track.missed += 1
                track.hits = 0
                limit = self.max_missed if track.track_id is not None else 0
                if track.missed > limit:
                    if track.track_id is not None:
                        self.ended.append(track.track_id)
                    continue
                kept.append(track)
                continue
            dt = timestamp - track.timestamp
            centre_old = _centre(track.keypoints, track.bbox, self.keypoint_threshold)
            centre_new = _centre(keypoints[person], bboxes[person], self.keypoint_threshold)
            if dt > 0 and math.isfinite(dt):
                velocity = (centre_new - centre_old) / dt
                # the first displacement sets the velocity, later ones are averaged with it
                first = track.hits == 1 and track.missed == 0 and not np.any(track.velocity)
                track.velocity = velocity if first else 0.7 * track.velocity + 0.3 * velocity
            track.keypoints, track.bbox, track.timestamp = keypoints[person].copy(), bboxes[person].copy(), timestamp
            if sources is None or sources[person] is None:  # a detector's box: learn its margins
                track.learn_box(track.keypoints, track.bbox, self.keypoint_threshold)
            track.hits += 1
            track.missed = 0
            if track.track_id is None and (track.hits >= self.min_hits or starting):
                track.track_id = self._new_id()
            ids[person] = track.track_id
            kept.append(track)
        for c in range(n):
            if c in matched_track or scores[c] < self.min_score:
                continue
            self._serial += 1
            track = Track(None, keypoints[c].copy(), bboxes[c].copy(), timestamp, serial=self._serial)
            track.learn_box(track.keypoints, track.bbox, self.keypoint_threshold)
            if starting or self.min_hits <= 1:
                track.track_id = self._new_id()
            ids[c] = track.track_id
            kept.append(track)
        self.tracks = kept
        self.frames_seen += 1
        return ids

    def _new_id(self) -> int:
        track_id = self._next_id
        self._next_id += 1
        return track_id
