"""Keypoint smoothing over time: the One-Euro filter, per track and per keypoint.

The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) is an exponential low-pass filter whose
cut-off frequency rises with the speed of the signal: still keypoints are smoothed hard (no jitter),
fast ones lightly (little lag). For one keypoint with filtered position `x_hat` at time `t_prev` and a
new raw position `x` at time `t` (`dt = t - t_prev` seconds):

    alpha(f) = 1 / (1 + 1 / (2 pi f dt))
    v        = (x - x_hat) / dt                          raw velocity, pixels / s
    v_hat    = alpha(d_cutoff) v + (1 - alpha(d_cutoff)) v_hat
    f_c      = min_cutoff + beta * |v_hat| / scale       cut-off in Hz
    x_hat    = alpha(f_c) x + (1 - alpha(f_c)) x_hat

Two choices made for pose: the speed is the 2-D speed of the keypoint divided by the person's size
(`scale`, the box diagonal), so `beta` means the same for a person 50 or 500 pixels tall; and the
filter is driven by the frames' timestamps, so a 5 fps and a 30 fps clip are smoothed alike.

Confidence: a keypoint whose score is below `min_score` (occluded, out of view) neither moves the
filter nor is smoothed: it is returned as it is and the filter keeps its last state, so one bad
frame does not drag the track. A keypoint unseen in more than `max_gap` consecutive frames (default
3) starts afresh at its new position when it is seen again: the old state is too stale to smooth
towards (with `min_cutoff=0.5`, `alpha` after a 1 s gap is still only 0.76).

The defaults were tuned on the synthetic video benchmark (`benchmarks/video.py`, numbers in
docs/video.md).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["DEFAULT_BETA", "DEFAULT_D_CUTOFF", "DEFAULT_MIN_CUTOFF", "OneEuroFilter", "PoseSmoother"]

#: cut-off frequency (Hz) for a still keypoint (tuned on benchmarks/video.py, see docs/video.md)
DEFAULT_MIN_CUTOFF = 0.5
#: cut-off increase (Hz) per person-size per second of keypoint speed (tuned with DEFAULT_MIN_CUTOFF)
DEFAULT_BETA = 0.25
#: cut-off frequency (Hz) of the velocity estimate
DEFAULT_D_CUTOFF = 1.0
#: keypoints scoring below this are passed through and do not update the filter
DEFAULT_MIN_SCORE = 0.3
#: frames a keypoint may go unseen and still continue its filter (more: it restarts)
DEFAULT_MAX_GAP = 3


def _positive(value, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value}")
    return value


def _alpha(cutoff: np.ndarray | float, dt: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff * dt))


class OneEuroFilter:
    """The One-Euro filter for the `K` keypoints of one person (see the module docstring).

    Args:
        min_cutoff: cut-off (Hz) of a still keypoint; lower = smoother, more lag when it starts moving.
        beta: how fast the cut-off rises with speed (Hz per person-size per second); higher = less lag
            on fast motion, more jitter.
        d_cutoff: cut-off (Hz) of the velocity estimate.
        min_score: keypoints scoring below it pass through without updating the filter.
        max_gap: a keypoint unseen in more than this many consecutive frames restarts at its new position.
    """

    def __init__(
        self,
        min_cutoff: float = DEFAULT_MIN_CUTOFF,
        beta: float = DEFAULT_BETA,
        d_cutoff: float = DEFAULT_D_CUTOFF,
        min_score: float = DEFAULT_MIN_SCORE,
        max_gap: int = DEFAULT_MAX_GAP,
    ):
        self.min_cutoff = _positive(min_cutoff, "min_cutoff")
        self.beta = float(beta)
        if not math.isfinite(self.beta) or self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.d_cutoff = _positive(d_cutoff, "d_cutoff")
        self.min_score = float(min_score)
        if isinstance(max_gap, bool) or int(max_gap) != max_gap or max_gap < 0:
            raise ValueError(f"max_gap must be an integer >= 0 (frames), got {max_gap!r}")
        self.max_gap = int(max_gap)
        self._unseen: np.ndarray | None = None  # (K,) consecutive frames each keypoint was not trusted
        self._x: np.ndarray | None = None  # (K, 2) filtered positions
        self._v: np.ndarray | None = None  # (K, 2) filtered velocities
        self._t: np.ndarray | None = None  # (K,) time of each keypoint's last update, NaN = never

    def __call__(self, timestamp: float, points: np.ndarray, scores: np.ndarray | None = None, scale: float = 1.0) -> np.ndarray:
        """Filter one frame.

        Args:
            timestamp: the frame's time in seconds (must increase from call to call).
            points: `(K, 2)` raw keypoint positions in pixels.
            scores: `(K,)` keypoint scores (None = all trusted).
            scale: the person's size in pixels (speeds are divided by it; e.g. the box diagonal).

        Returns:
            `(K, 2)` float64 filtered positions (raw ones where the score is below `min_score`).
        """
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"points must have shape (K, 2), got {points.shape}")
        k = points.shape[0]
        trusted = np.isfinite(points).all(axis=1)
        if scores is not None:
            scores = np.asarray(scores, dtype=np.float64).reshape(-1)
            if scores.shape[0] != k:
                raise ValueError(f"{k} keypoints but {scores.shape[0]} scores")
            trusted &= scores >= self.min_score
        if self._x is None or self._x.shape[0] != k:
            self._x = np.zeros((k, 2))
            self._v = np.zeros((k, 2))
            self._t = np.full(k, np.nan)
            self._unseen = np.zeros(k, dtype=np.int64)
        scale = float(scale)
        if not math.isfinite(scale) or scale <= 0:
            scale = 1.0
        timestamp = float(timestamp)
        out = points.copy()
        # first sight, or back after more than max_gap unseen frames: start at the raw position
        new = trusted & (np.isnan(self._t) | (self._unseen > self.max_gap))
        self._unseen = np.where(trusted, 0, self._unseen + 1)
        self._x[new] = points[new]
        self._v[new] = 0.0
        self._t[new] = timestamp
        old = trusted & ~new
        if old.any():
            dt = timestamp - self._t[old]
            if np.any(dt <= 0):
                raise ValueError(f"timestamps must increase: got {timestamp} after {float(np.max(self._t[old]))}")
            dt = dt[:, None]
            x_hat, v_hat = self._x[old], self._v[old]
            v = (points[old] - x_hat) / dt
            a_d = _alpha(self.d_cutoff, dt)
            v_hat = v_hat + a_d * (v - v_hat)  # = a v + (1 - a) v_hat, exact for a constant signal
            cutoff = self.min_cutoff + self.beta * np.linalg.norm(v_hat, axis=1, keepdims=True) / scale
            a = _alpha(cutoff, dt)
            x_hat = x_hat + a * (points[old] - x_hat)
            self._x[old], self._v[old], self._t[old] = x_hat, v_hat, timestamp
        out[trusted] = self._x[trusted]
        return out


class PoseSmoother:
    """One `OneEuroFilter` per track id, created on a track's first frame and dropped with it.

    Args: as `OneEuroFilter` (shared by all tracks).
    """

    def __init__(
        self,
        min_cutoff: float = DEFAULT_MIN_CUTOFF,
        beta: float = DEFAULT_BETA,
        d_cutoff: float = DEFAULT_D_CUTOFF,
        min_score: float = DEFAULT_MIN_SCORE,
        max_gap: int = DEFAULT_MAX_GAP,
    ):
        self.options = {"min_cutoff": min_cutoff, "beta": beta, "d_cutoff": d_cutoff, "min_score": min_score,
                        "max_gap": max_gap}
        OneEuroFilter(**self.options)  # checks the options now, not on the first person
        self._filters: dict[int, OneEuroFilter] = {}

    def smooth(self, track_id: int, timestamp: float, keypoints: np.ndarray, scale: float) -> np.ndarray:
        """`keypoints` `(K, 3)` [x, y, score] of track `track_id` -> `(K, 3)` with x, y smoothed."""
        keypoints = np.asarray(keypoints, dtype=np.float64)
        filt = self._filters.get(track_id)
        if filt is None:
            filt = self._filters[track_id] = OneEuroFilter(**self.options)
        out = keypoints.copy()
        out[:, :2] = filt(timestamp, keypoints[:, :2], keypoints[:, 2], scale)
        return out

    def keep_only(self, track_ids) -> None:
        """Forget the filters of tracks not in `track_ids` (ended tracks)."""
        alive = set(track_ids)
        for track_id in [t for t in self._filters if t not in alive]:
            del self._filters[track_id]
