"""Synthetic pose-tracking videos with ground-truth identities (no download, no licence).

The figures of `data.synthetic` walk across a fixed scene: each figure's shape and colours are drawn
once per track and it is re-posed every frame (legs and arms swing with a gait phase, the pelvis
bobs as the legs spread, the body leans and the head turns towards the walking direction). Figures
walk at roughly constant velocity, left to right or right to left, at a depth on a ground plane
(nearer figures are larger, lower in the image and drawn later, so they occlude farther ones), from
outside the image to outside the image on the other side; new figures keep entering (at most
`max_tracks` alive at once, 2 to 5 typical). Static occluders fixed per video (pillars from the top
of the image to the ground, crates on the ground) stand at depths of their own, so figures pass
behind or in front of them. The background is fixed per video; the pixel noise is fresh per frame.

Ground truth, exact by construction and with the rules of `render_synthetic_image`:

- `track_id`: the identity, numbered from 1 in order of first appearance, never reused;
- `keypoints (17, 3)`: the joints used for drawing, `v` from the label map (2: the keypoint's own
  part is on top there, 1: covered by an occluder, a nearer figure or the figure's own torso,
  0 with x = y = 0: outside the image);
- `bbox` `[x, y, w, h]`: tight box of the figure's drawn pixels inside the image, occluded parts
  included, pixel-centre convention (pixel i covers [i - 0.5, i + 0.5]); `area`: the number of those
  pixels (the in-image silhouette);
- `visible_fraction`: the part of that silhouette still on top in the final label map (not covered
  by occluders or nearer figures). Parts outside the image do not count as occluded.

A person is listed in a frame whenever its silhouette has a pixel inside the image, even when it is
fully covered (`visible_fraction` 0); filter on `visible_fraction` for what a detector can see.
Stride and cadence are matched to the walking speed (a stance foot moves backwards relative to the
body at 0.9 times the body's speed at most), so feet do not slide backwards in the image and a
figure entering or leaving does not flicker at the border: for seeds 0 to 9 with the defaults every
track's frames are one contiguous run (the tests check a small clip).

Everything is determined by `seed` (and the image size and frame rate); frame `i` does not depend
on `num_frames`. Frames are produced one at a time (bounded memory).

The fixed difficulty (`video_difficulty` of `iter_synthetic_video(seed)` with the defaults:
300 frames, 360x640, 25 fps; crossings and occlusions per 1,000 track-frames, their counts in
brackets; tests/test_synthetic_video.py checks the table)::

    seed  track-frames  tracks  crossings   occlusions  entries  exits
    0     1046          8       11.5 (12)   15.3 (16)   6        5
    1     1032          11      9.7 (10)    20.3 (21)   8        9
    2     945           10      6.3 (6)     10.6 (10)   7        6

That is 3.2 to 3.5 persons per frame on average, at most 5. Seeds 3 to 9 measured 9.5 to 12.9
crossings and 12.5 to 19.9 occlusions per 1,000 track-frames.

Typical use::

    from vitpose_hf.data.synthetic_video import iter_synthetic_video, video_difficulty
    for frame in iter_synthetic_video(seed=0, num_frames=300):
        frame.image, frame.persons  # (360, 640, 3) uint8 RGB; [{"track_id", "keypoints", "bbox", ...}]
    mp4, gt = write_synthetic_video("clip.mp4", seed=0)
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..jsonio import write_json_atomic
from ..keypoint_schemas import COCO
from .synthetic import (
    SUBPIXEL_ONE,
    SUBPIXEL_SHIFT,
    KEYPOINT_PARTS,
    OCCLUDER,
    draw_background,
    Canvas,
    draw_figure,
    figure_geometry,
    fixed_point,
    random_color,
    sample_figure_shape,
    shade,
)

logger = logging.getLogger(__name__)

__all__ = ["SyntheticVideoFrame", "iter_synthetic_video", "video_difficulty", "write_synthetic_video"]

#: figure codes in the uint8 label map are `f << 5 | part` with f in 1..6 (7 would collide with 255)
MAX_FIGURES = 6

# scene geometry, as fractions of the image height: the ground plane runs from the horizon to the
# bottom; a figure at depth `scale` (1 nearest) is `scale * _FIGURE_HEIGHT` tall with its feet at
# `_HORIZON + scale * (_GROUND_BOTTOM - _HORIZON)`
_HORIZON, _GROUND_BOTTOM, _FIGURE_HEIGHT = 0.32, 0.98, 0.75
_SCALES = (0.4, 1.0)
_SPEEDS = (0.5, 0.9)  # walking speed in figure heights per second (people walk ~0.8 heights/s)
_MARGIN = 0.6  # figures start and end this many heights (pelvis) outside the image: no pixel shows

# event bookkeeping of `video_difficulty`: occlusion hysteresis, and how far apart two box centres
# must be (in narrower box widths) for one to be on a side of the other
_OCCLUDED, _UNOCCLUDED = 0.5, 0.75
_SIDE_GAP = 0.5


@dataclass
class SyntheticVideoFrame:
    """One frame of a synthetic video.

    Attributes:
        index: frame number from 0.
        timestamp: `index / fps` seconds.
        image: `(H, W, 3)` uint8 RGB, or None when rendered with `render=False`.
        label: `(H, W)` uint8 label map: `f << 5 | part` for the figure listed with `"figure": f`
            (parts as in `data.synthetic`), 255 for occluders, 0 for the background.
        persons: one dict per person whose silhouette shows in the image, sorted by `track_id`:
            `track_id` int, `keypoints (17, 3)` float64 `x, y, v`, `bbox` `[x, y, w, h]` (floats),
            `area` float, `visible_fraction` float in [0, 1], `num_keypoints` int, `figure` int.
    """

    index: int
    timestamp: float
    image: np.ndarray | None
    label: np.ndarray
    persons: list[dict]


class _LabelCanvas(Canvas):
    """The label map alone (for `render=False`): the same label drawing calls, no colour drawing.

    `draw_figure` also draws its stripes straight into `image`; a 1x1 image clips them away."""

    def __init__(self, height: int, width: int):
        self.image = np.zeros((1, 1, 3), dtype=np.uint8)
        self.label = np.zeros((height, width), dtype=np.uint8)

    def line(self, p0, p1, color, thickness: float, label: int, caps: bool = True):
        t = max(1, round(thickness))
        cv2.line(self.label, fixed_point(p0), fixed_point(p1), label, t, cv2.LINE_8, SUBPIXEL_SHIFT)
        if caps:
            for p in (p0, p1):
                self.disk(p, thickness / 2.0, color, label)

    def disk(self, c, r, color, label: int):
        r = max(r, 0.75)
        cv2.circle(self.label, fixed_point(c), round(r * SUBPIXEL_ONE), label, -1, cv2.LINE_8, SUBPIXEL_SHIFT)

    def ellipse(self, c, axes, angle, color, label: int):
        ax = (max(1, round(axes[0] * SUBPIXEL_ONE)), max(1, round(axes[1] * SUBPIXEL_ONE)))
        cv2.ellipse(self.label, fixed_point(c), ax, angle, 0, 360, label, -1, cv2.LINE_8, SUBPIXEL_SHIFT)

    def poly(self, pts, color, label: int):
        arr = np.array([fixed_point(p) for p in pts], dtype=np.int32)
        cv2.fillConvexPoly(self.label, arr, label, cv2.LINE_8, SUBPIXEL_SHIFT)


@dataclass
class _Track:
    """One walking figure: everything needed to pose it at any frame."""

    order: int  # spawn number (appearance and shape seeds)
    shape: dict
    appearance_seed: tuple
    scale: float
    height: float
    ground_y: float
    t0: float  # spawn time (frames)
    x0: float  # pelvis x at t0
    vx: float  # pixels per frame (sign: walking direction)
    x_end: float
    omega: float  # gait phase speed, radians per frame
    phase0: float
    leg_base: float  # degrees
    leg_amp: float
    knee_base: float
    knee_amp: float
    arm_base: float
    arm_amp: float
    elbow: float
    track_id: int | None = None

    def done(self, t: float) -> bool:
        x = self.x0 + self.vx * (t - self.t0)
        return x > self.x_end if self.vx > 0 else x < self.x_end

    def pose(self, t: float) -> dict:
        """`figure_geometry` output at frame `t` (image pixels)."""
        dt = t - self.t0
        phi = self.phase0 + self.omega * dt
        d = 1.0 if self.vx > 0 else -1.0
        s, c = math.sin(phi), math.cos(phi)
        shape = dict(self.shape)
        # both legs take the same outward angle, which in the image is a scissor: one foot forward,
        # the other back, alternating (legs cross while passing); the swing leg bends its knee
        leg = self.leg_base + self.leg_amp * s
        shape["leg_angle"] = [leg, leg]
        # shin rotation towards the back (+ rotates the image's down vector to -x): `d * knee`;
        # `figure_geometry` rotates a side's shin by `sign * bend` (sign +1 left, -1 right)
        knee_l = self.knee_base + self.knee_amp * max(0.0, c * d)
        knee_r = self.knee_base + self.knee_amp * max(0.0, -c * d)
        shape["leg_bend"] = [d * knee_l, -d * knee_r]
        arm = self.arm_base - self.arm_amp * s  # arms swing against the legs
        shape["arm_angle"] = [arm, arm]
        shape["arm_bend"] = [d * self.elbow, -d * self.elbow]  # forearms point forwards
        geo = figure_geometry(shape, self.height, np.zeros(2))
        # feet on the ground: the lower foot (its sole ~0.5 limb widths below the ankle) stands on
        # the ground line, so the pelvis bobs as the legs spread and close
        foot = max(geo["kp"][15, 1], geo["kp"][16, 1]) + 0.5 * geo["limb_w"]
        pelvis = np.array([self.x0 + self.vx * dt, self.ground_y - foot])
        geo["kp"] = geo["kp"] + pelvis
        geo["neck_base"] = geo["neck_base"] + pelvis
        geo["head_c"] = geo["head_c"] + pelvis
        geo["foot_dir"] = np.array([d, 0.0])  # both feet point where the figure walks
        return geo


def _figure_window(geo: dict, height: int, width: int) -> tuple[int, int, int, int] | None:
    """`(x0, y0, x1, y1)` (exclusive ends) image window holding every pixel `draw_figure` can
    draw for `geo`, or None when it lies outside the image.

    The farthest reaches beyond the joints are the toe (1.77 limb widths from the ankle, with its
    round cap) and the ears (0.3 head radii beyond their keypoint); 2 px more cover rounding."""
    pts = np.concatenate([geo["kp"], geo["neck_base"][None], geo["head_c"][None]])
    m = 2.0 * geo["limb_w"] + 0.5 * geo["head_r"] + 2.0
    x0 = max(0, math.floor(pts[:, 0].min() - m))
    y0 = max(0, math.floor(pts[:, 1].min() - m))
    x1 = min(width, math.ceil(pts[:, 0].max() + m) + 1)
    y1 = min(height, math.ceil(pts[:, 1].max() + m) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


class _Scene:
    """The fixed scene of one video (background, occluders) and its walking figures."""

    def __init__(self, seed: int, height: int, width: int, fps: float, max_tracks: int,
                 spawn_interval: float, num_pillars: int, num_boxes: int):
        self.seed, self.height, self.width, self.fps = seed, height, width, fps
        self.max_tracks = max_tracks
        rng = np.random.default_rng([seed, 4])
        self.background = draw_background(rng, height, width)
        self.occluders = self._occluders(rng, num_pillars, num_boxes)
        self.spawn_rng = np.random.default_rng([seed, 0])
        self.mean_gap = spawn_interval * fps  # frames between spawns (exponential)
        self.tracks: list[_Track] = []
        self.spawned = 0
        self.next_id = 1
        # start early enough that the slowest figure could have crossed the image: frame 0 is in
        # the steady state, with figures already inside
        h_min = _SCALES[0] * _FIGURE_HEIGHT * height
        slowest = _SPEEDS[0] * h_min / fps
        self.t = -math.ceil((width + 2 * _MARGIN * _FIGURE_HEIGHT * height) / slowest)
        self.next_spawn = float(self.t)

    def ground(self, scale: float) -> float:
        return self.height * (_HORIZON + scale * (_GROUND_BOTTOM - _HORIZON))

    def _occluders(self, rng: np.random.Generator, num_pillars: int, num_boxes: int) -> list[dict]:
        """Pillars (image top to the ground) and crates (on the ground), each at a depth."""
        out = []
        w, h = self.width, self.height
        slots = rng.permutation(max(num_pillars, 1))
        for i in range(num_pillars):
            scale = rng.uniform(0.75, 1.0)  # in front of most figures: they pass behind
            slot = 0.7 * w / num_pillars
            cx = 0.15 * w + (slots[i] + rng.uniform(0.2, 0.8)) * slot
            half = 0.5 * rng.uniform(0.05, 0.085) * w
            bottom = self.ground(scale) + 0.01 * h
            out.append({"scale": scale, "pts": [(cx - half, -2.0), (cx + half, -2.0), (cx + half, bottom),
                                                (cx - half, bottom)],
                        "color": random_color(rng, (0.0, 0.6), (0.25, 0.9))})
        for _ in range(num_boxes):
            scale = rng.uniform(0.55, 1.0)
            fig_h = scale * _FIGURE_HEIGHT * h
            cx = rng.uniform(0.1, 0.9) * w
            half = 0.5 * rng.uniform(0.35, 0.7) * fig_h
            top = self.ground(scale) - rng.uniform(0.3, 0.5) * fig_h
            bottom = self.ground(scale) + 0.01 * h
            out.append({"scale": scale, "pts": [(cx - half, top), (cx + half, top), (cx + half, bottom),
                                                (cx - half, bottom)],
                        "color": random_color(rng, (0.2, 0.8), (0.3, 0.8))})
        return out

    def _spawn(self, t: float) -> None:
        rng = np.random.default_rng([self.seed, 3, self.spawned])
        shape = sample_figure_shape(rng)  # proportions and sizes; the pose is replaced per frame
        # a new figure mostly walks against the majority of those alive: opposite walkers cross
        balance = sum(1 if tr.vx > 0 else -1 for tr in self.tracks)
        p_right = 0.5 if balance == 0 else (0.25 if balance > 0 else 0.75)
        d = 1.0 if self.spawn_rng.random() < p_right else -1.0
        scale = float(self.spawn_rng.uniform(*_SCALES))
        h = scale * _FIGURE_HEIGHT * self.height
        vx = d * self.spawn_rng.uniform(*_SPEEDS) * h / self.fps
        shape["body_rot"] = rng.normal(0.0, 2.0)
        shape["lean"] = d * rng.uniform(2.0, 6.0)
        shape["tilt"] = rng.normal(0.0, 4.0)
        shape["yaw"] = d * rng.uniform(0.1, 0.3)
        leg_amp = rng.uniform(18.0, 26.0)
        leg_len = 0.235 * h * shape["limb_scale"] * (sum(shape["thigh"]) + sum(shape["shin"])) / 2.0
        # stride and cadence matched to the speed (leg length x swing amplitude x phase speed =
        # 0.9 x speed): a stance foot moves backwards relative to the body no faster than the body
        # moves forwards, so nothing slides backwards in the image
        omega = 0.9 * abs(vx) / (math.radians(leg_amp) * leg_len)
        start = -_MARGIN * h - 2.0 if d > 0 else self.width - 1.0 + _MARGIN * h + 2.0
        end = self.width - 1.0 + _MARGIN * h + 2.0 if d > 0 else -_MARGIN * h - 2.0
        self.tracks.append(_Track(
            order=self.spawned, shape=shape, appearance_seed=(self.seed, 1, self.spawned), scale=scale,
            height=h, ground_y=self.ground(scale), t0=t, x0=start, vx=vx, x_end=end, omega=omega,
            phase0=rng.uniform(0.0, 2 * math.pi), leg_base=rng.uniform(2.0, 6.0), leg_amp=leg_amp,
            knee_base=rng.uniform(3.0, 8.0), knee_amp=rng.uniform(15.0, 30.0), arm_base=rng.uniform(4.0, 10.0),
            arm_amp=0.6 * leg_amp, elbow=rng.uniform(10.0, 35.0),
        ))
        logger.debug("track %d spawned at frame %.1f: depth %.2f, %.2f px/frame", self.spawned, t, scale, vx)
        self.spawned += 1

    def advance(self, t: int) -> None:
        """Spawn and retire figures up to frame `t` (frames in increasing order)."""
        while self.t <= t:
            while self.next_spawn <= self.t:
                self.tracks = [tr for tr in self.tracks if not tr.done(self.next_spawn)]
                if len(self.tracks) < self.max_tracks:
                    self._spawn(self.next_spawn)
                self.next_spawn += float(self.spawn_rng.exponential(self.mean_gap))
            self.tracks = [tr for tr in self.tracks if not tr.done(self.t)]
            self.t += 1

    def render(self, index: int, render: bool, noise: float) -> tuple[np.ndarray | None, np.ndarray, list[dict]]:
        height, width = self.height, self.width
        canvas = Canvas(self.background.copy()) if render else _LabelCanvas(height, width)
        items = [(o["scale"], 0, i) for i, o in enumerate(self.occluders)]
        items += [(tr.scale, 1, i) for i, tr in enumerate(self.tracks)]
        drawn = []  # (track, geometry, figure number, window, area, bbox)
        for _, kind, i in sorted(items):  # far to near; an occluder before a figure at its depth
            if kind == 0:
                occ = self.occluders[i]
                canvas.poly(occ["pts"], tuple(int(v) for v in occ["color"]), OCCLUDER)
                if render:  # a shaded edge on one side (image only, inside the occluder)
                    p = occ["pts"]
                    edge = [p[0], (p[0][0] + 0.18 * (p[1][0] - p[0][0]), p[0][1]),
                            (p[3][0] + 0.18 * (p[2][0] - p[3][0]), p[3][1]), p[3]]
                    cv2.fillConvexPoly(canvas.image, np.array([fixed_point(q) for q in edge], dtype=np.int32),
                                       shade(occ["color"], 0.0, 0.3), cv2.LINE_AA, SUBPIXEL_SHIFT)
                continue
            tr = self.tracks[i]
            geo = tr.pose(float(index))
            win = _figure_window(geo, height, width)
            if win is None:
                continue
            f = len(drawn) + 1
            draw_figure(canvas, geo, f << 5, np.random.default_rng(tr.appearance_seed))
            x0, y0, x1, y1 = win
            # drawn last so far, the figure is all on top: its pixels now are its whole silhouette
            ys, xs = np.nonzero((canvas.label[y0:y1, x0:x1] >> 5) == f)
            if xs.size == 0:
                continue
            bbox = [float(xs.min() + x0) - 0.5, float(ys.min() + y0) - 0.5,
                    float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
            drawn.append((tr, geo, f, win, int(xs.size), bbox))
        for tr, *_ in sorted(drawn, key=lambda d: d[0].order):
            if tr.track_id is None:
                tr.track_id = self.next_id
                self.next_id += 1
        label = canvas.label
        persons = []
        for tr, geo, f, (x0, y0, x1, y1), area, bbox in drawn:
            sub = label[y0:y1, x0:x1]
            visible = int(np.count_nonzero(((sub >> 5) == f) & (sub != OCCLUDER)))
            kps = np.zeros((17, 3))
            for k in range(17):
                x, y = geo["kp"][k]
                if not (0.0 <= x <= width - 1.0 and 0.0 <= y <= height - 1.0):
                    continue
                lab = int(label[round(y), round(x)])
                own = (lab >> 5) == f and lab != OCCLUDER and (lab & 31) in KEYPOINT_PARTS[k]
                kps[k] = (x, y, 2.0 if own else 1.0)
            persons.append({
                "track_id": tr.track_id, "keypoints": kps, "bbox": bbox, "area": float(area),
                "visible_fraction": visible / area, "num_keypoints": int((kps[:, 2] > 0).sum()), "figure": f,
            })
        persons.sort(key=lambda p: p["track_id"])
        image = canvas.image if render else None
        if render and noise > 0:  # uniform noise of standard deviation `noise`, fresh per frame
            rng = np.random.default_rng([self.seed, 2, index])
            a = round(noise * math.sqrt(3.0))
            out = image.astype(np.int16)
            out += rng.integers(-a, a + 1, size=image.shape, dtype=np.int16)
            image = np.clip(out, 0, 255).astype(np.uint8)
        return image, label, persons


def iter_synthetic_video(
    seed: int = 0,
    num_frames: int = 300,
    image_size: Sequence[int] = (360, 640),
    fps: float = 25.0,
    max_tracks: int = 5,
    spawn_interval: float = 1.5,
    num_pillars: int = 2,
    num_boxes: int = 2,
    noise: float = 6.0,
    render: bool = True,
) -> Iterator[SyntheticVideoFrame]:
    """Generate a synthetic video one frame at a time.

    Args:
        seed: the video (scene, figures, motion, noise).
        num_frames: number of frames (>= 1); frame `i` is the same whatever `num_frames` is.
        image_size: `(height, width)`, each >= 32.
        fps: frames per second (timestamps, walking speed in pixels per frame).
        max_tracks: at most this many figures alive (in or about to enter the image), 1..6.
        spawn_interval: mean seconds between new figures (exponential; a figure that would exceed
            `max_tracks` is skipped).
        num_pillars, num_boxes: static occluders.
        noise: standard deviation of the per-frame uniform pixel noise (0 disables it).
        render: False skips the colour image (`image` None) but draws the label map, so the ground
            truth (visibility included) is identical, in about half the time.

    Yields:
        `SyntheticVideoFrame` with `image (H, W, 3)` uint8 RGB, `label (H, W)` uint8 and `persons`.
    """
    height, width = int(image_size[0]), int(image_size[1])
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if height < 32 or width < 32:
        raise ValueError(f"image_size must be at least 32x32, got {tuple(image_size)}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if not 1 <= max_tracks <= MAX_FIGURES:
        raise ValueError(f"max_tracks must be in 1..{MAX_FIGURES}, got {max_tracks}")
    if not spawn_interval > 0:
        raise ValueError(f"spawn_interval must be > 0, got {spawn_interval}")
    if num_pillars < 0 or num_boxes < 0:
        raise ValueError(f"num_pillars and num_boxes must be >= 0, got {num_pillars}, {num_boxes}")
    scene = _Scene(int(seed), height, width, float(fps), int(max_tracks), float(spawn_interval),
                   int(num_pillars), int(num_boxes))
    return _frames(scene, int(num_frames), bool(render), float(noise))


def _frames(scene: _Scene, num_frames: int, render: bool, noise: float) -> Iterator[SyntheticVideoFrame]:
    for index in range(num_frames):
        scene.advance(index)
        image, label, persons = scene.render(index, render, noise)
        yield SyntheticVideoFrame(index=index, timestamp=index / scene.fps, image=image, label=label,
                                  persons=persons)


def _frame_parts(frame) -> tuple[int, list]:
    if isinstance(frame, SyntheticVideoFrame):
        return frame.index, frame.persons
    return int(frame["index"]), frame["persons"]


def video_difficulty(frames: Iterable[SyntheticVideoFrame | Mapping] | Mapping) -> dict:
    """Count the events that make a tracking video hard, per 1,000 track-frames.

    Args:
        frames: `SyntheticVideoFrame`s, or ground-truth frame dicts (`index`, `persons` with
            `track_id`, `bbox` `[x, y, w, h]`, `visible_fraction`), or the dict that
            `write_synthetic_video` writes (its `"frames"` are used). Frames in increasing order.

    Definitions (a track is the frames listing one `track_id`):

    - `track_frames`: person entries over all frames; `tracks`: distinct ids; `frames`: frames seen.
    - `crossings`: for each pair of tracks, the side of a's box relative to b's (sign of the x
      difference of the box centres) is updated in every frame listing both where the centres are
      at least half the narrower box's width apart (closer centres keep the previous side: the gait
      makes the boxes of two figures walking together jitter around each other); a crossing is a
      change of that side in a frame where the boxes overlap vertically by at least half the
      shorter box's height. One figure passing another counts once.
    - `occlusions`: an occlusion episode starts when a track's `visible_fraction` falls below 0.5
      in a frame after one where it was at least 0.5, and ends when it is back at 0.75 or more (so
      flicker around 0.5 is one episode); a track that first shows up occluded is not counted.
    - `entries`: tracks whose first frame is not the first frame seen; `exits`: tracks whose last
      frame is not the last frame seen.

    Returns:
        dict with the counts `frames`, `track_frames`, `tracks`, `crossings`, `occlusions`,
        `entries`, `exits`, the rates `crossings_per_1000`, `occlusions_per_1000`,
        `entries_per_1000`, `exits_per_1000` (per 1,000 track-frames) and `mean_tracks_per_frame`,
        `max_tracks_per_frame`.
    """
    if isinstance(frames, Mapping):
        frames = frames["frames"]
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    occluded: dict[int, bool] = {}
    side: dict[tuple[int, int], int] = {}
    crossings = occlusions = track_frames = n_frames = max_per_frame = 0
    first_index = last_index = None
    for frame in frames:
        index, persons = _frame_parts(frame)
        n_frames += 1
        first_index = index if first_index is None else first_index
        last_index = index
        track_frames += len(persons)
        max_per_frame = max(max_per_frame, len(persons))
        boxes = {}
        for p in persons:
            tid = int(p["track_id"])
            vf = float(p["visible_fraction"])
            if tid not in first:
                first[tid] = index
                occluded[tid] = vf < _OCCLUDED
            elif not occluded[tid] and vf < _OCCLUDED:
                occluded[tid] = True
                occlusions += 1
            elif occluded[tid] and vf >= _UNOCCLUDED:
                occluded[tid] = False
            last[tid] = index
            boxes[tid] = [float(v) for v in p["bbox"]]
        ids = sorted(boxes)
        for i, a in enumerate(ids):
            xa, ya, wa, ha = boxes[a]
            for b in ids[i + 1:]:
                xb, yb, wb, hb = boxes[b]
                dx = (xa + wa / 2) - (xb + wb / 2)
                if abs(dx) < _SIDE_GAP * min(wa, wb):  # gait makes close centres jitter: not a side
                    continue
                s = 1 if dx > 0 else -1
                old = side.get((a, b))
                side[(a, b)] = s
                overlap = min(ya + ha, yb + hb) - max(ya, yb)
                if old is not None and old != s and overlap >= 0.5 * min(ha, hb):
                    crossings += 1
        for key in [k for k in side if min(last[k[0]], last[k[1]]) < index - 1000]:
            del side[key]  # bounded memory on long inputs: pairs with a track long gone
    entries = sum(1 for t in first.values() if t != first_index)
    exits = sum(1 for t in last.values() if t != last_index)
    per = 1000.0 / track_frames if track_frames else 0.0
    return {
        "frames": n_frames,
        "track_frames": track_frames,
        "tracks": len(first),
        "crossings": crossings,
        "occlusions": occlusions,
        "entries": entries,
        "exits": exits,
        "crossings_per_1000": crossings * per,
        "occlusions_per_1000": occlusions * per,
        "entries_per_1000": entries * per,
        "exits_per_1000": exits * per,
        "mean_tracks_per_frame": track_frames / n_frames if n_frames else 0.0,
        "max_tracks_per_frame": max_per_frame,
    }


def write_synthetic_video(
    path: str | os.PathLike,
    seed: int = 0,
    num_frames: int = 300,
    image_size: Sequence[int] = (360, 640),
    fps: float = 25.0,
    **kwargs,
) -> tuple[Path, Path]:
    """Write a synthetic video as an mp4 (OpenCV, 'mp4v') and its ground truth as JSON beside it.

    Args:
        path: the `.mp4` file; the ground truth goes to the same path with suffix `.json`.
        seed, num_frames, image_size, fps, **kwargs: see `iter_synthetic_video` (`render` is
            always True here).

    The JSON holds `info` (the generator's arguments and `video_difficulty`), `categories` (COCO
    person keypoints) and `frames`: per frame `index`, `timestamp` and `persons` with `track_id`,
    `keypoints` (flat COCO list `x1, y1, v1, ...`, 51 numbers), `bbox` `[x, y, w, h]`, `area`,
    `visible_fraction`, `num_keypoints`.

    Returns:
        `(mp4_path, json_path)`.
    """
    kwargs.pop("render", None)
    mp4 = Path(path)
    gt_path = mp4.with_suffix(".json")
    mp4.parent.mkdir(parents=True, exist_ok=True)
    height, width = int(image_size[0]), int(image_size[1])
    frames = iter_synthetic_video(seed, num_frames, image_size, fps, render=True, **kwargs)
    writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise ValueError(f"OpenCV could not open a video writer for {mp4} (mp4v codec)")
    gt_frames = []
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame.image[..., ::-1]))
            gt_frames.append({
                "index": frame.index,
                "timestamp": frame.timestamp,
                "persons": [
                    {
                        "track_id": p["track_id"],
                        "keypoints": [round(float(v), 3) for v in p["keypoints"].reshape(-1)],
                        "bbox": [round(v, 2) for v in p["bbox"]],
                        "area": p["area"],
                        "visible_fraction": round(p["visible_fraction"], 4),
                        "num_keypoints": p["num_keypoints"],
                    }
                    for p in frame.persons
                ],
            })
    finally:
        writer.release()
    info = {"generator": "vitpose_hf.data.synthetic_video", "seed": int(seed), "num_frames": int(num_frames),
            "image_size": [height, width], "fps": float(fps), **kwargs}
    info["difficulty"] = video_difficulty(gt_frames)
    categories = [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO.keypoints),
                   "skeleton": [[a + 1, b + 1] for a, b in COCO.skeleton]}]
    write_json_atomic(gt_path, {"info": info, "categories": categories, "frames": gt_frames})
    logger.info("wrote %d synthetic video frames to %s and their ground truth to %s", num_frames, mp4, gt_path)
    return mp4, gt_path
