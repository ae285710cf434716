"""A synthetic COCO-17 person-keypoint dataset, generated on the fly (no download, no licence).

Each image shows one to four articulated stick-and-blob figures on a cluttered background:
a torso, a neck, a head with eyes, ears and nose, arms and legs of plausible proportions with random
joint angles, hands and feet, random colours and thickness, sometimes one arm behind the torso, and
random occluders. Annotations are exact, by construction:

- keypoints are the joint positions used for drawing (sub-pixel: the drawing uses OpenCV's
  fixed-point coordinates, pixel centres at integer coordinates as everywhere in this package);
- visibility is read from a label map drawn alongside the image: 2 when the topmost drawn pixel
  at the keypoint belongs to one of the keypoint's own parts, 1 when something else (another
  figure, an occluder, the figure's own torso) covers it, 0 (with x = y = 0) outside the image;
- `bbox` is the tight box of the figure's drawn pixels (occluded parts included, clipped to the
  image) and `area` the number of pixels the figure covers when drawn (its silhouette).

Left and right are told apart as in photographs of people facing the camera: by geometry. Figures
face the viewer (their left side starts on the image's right; the face shows which way the head
turns). The two sides of a figure are drawn in a light and a dark shade of its colour (the light
side's limbs with a dark centre stripe) so that crossing limbs can be followed, but which side is
the light one is drawn at random per figure, as is which arm and which leg lie on top: the mirror image of
a sample, with left and right labels swapped, is exactly as likely as the sample itself. That is
the symmetry of real people that flip augmentation and the flip test rely on (a fixed "left is
light" rule made the mirrored crops of the flip test contradict the original and cost ~0.14 AP).
A left/right swap, a wrong flip pair or a mirrored decode therefore costs AP.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..keypoint_schemas import COCO
from .coco import load_coco_keypoints

logger = logging.getLogger(__name__)

__all__ = ["make_synthetic_coco", "render_synthetic_image", "load_synthetic_dataset", "KEYPOINT_PARTS"]

SUBPIXEL_SHIFT = 4  # OpenCV fixed-point bits: coordinates in 1/16 px
SUBPIXEL_ONE = 1 << SUBPIXEL_SHIFT

# part ids in the label map (figure f in 1..4 is coded (f << 5) | part; occluders 255, background 0)
TORSO, HEAD, NECK = 1, 2, 3
L_UARM, L_FARM, L_HAND, R_UARM, R_FARM, R_HAND = 4, 5, 6, 7, 8, 9
L_THIGH, L_SHIN, L_FOOT, R_THIGH, R_SHIN, R_FOOT = 10, 11, 12, 13, 14, 15
NOSE, L_EYE, R_EYE, L_EAR, R_EAR = 16, 17, 18, 19, 20
OCCLUDER = 255

#: For each COCO keypoint, the parts whose pixels count as "the keypoint is visible".
KEYPOINT_PARTS: tuple[frozenset, ...] = (
    frozenset({HEAD, NOSE}),
    frozenset({HEAD, L_EYE}),
    frozenset({HEAD, R_EYE}),
    frozenset({HEAD, L_EAR}),
    frozenset({HEAD, R_EAR}),
    frozenset({TORSO, NECK, L_UARM}),
    frozenset({TORSO, NECK, R_UARM}),
    frozenset({L_UARM, L_FARM}),
    frozenset({R_UARM, R_FARM}),
    frozenset({L_FARM, L_HAND}),
    frozenset({R_FARM, R_HAND}),
    frozenset({TORSO, L_THIGH}),
    frozenset({TORSO, R_THIGH}),
    frozenset({L_THIGH, L_SHIN}),
    frozenset({R_THIGH, R_SHIN}),
    frozenset({L_SHIN, L_FOOT}),
    frozenset({R_SHIN, R_FOOT}),
)


def fixed_point(p) -> tuple[int, int]:
    return int(round(p[0] * SUBPIXEL_ONE)), int(round(p[1] * SUBPIXEL_ONE))


class Canvas:
    """An RGB image and its label map, drawn together (anti-aliased colour, hard labels)."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.label = np.zeros(image.shape[:2], dtype=np.uint8)

    def line(self, p0, p1, color, thickness: float, label: int, caps: bool = True):
        t = max(1, int(round(thickness)))
        cv2.line(self.image, fixed_point(p0), fixed_point(p1), color, t, cv2.LINE_AA, SUBPIXEL_SHIFT)
        cv2.line(self.label, fixed_point(p0), fixed_point(p1), label, t, cv2.LINE_8, SUBPIXEL_SHIFT)
        if caps:
            for p in (p0, p1):
                self.disk(p, thickness / 2.0, color, label)

    def disk(self, c, r, color, label: int):
        r = max(r, 0.75)
        cv2.circle(self.image, fixed_point(c), int(round(r * SUBPIXEL_ONE)), color, -1, cv2.LINE_AA, SUBPIXEL_SHIFT)
        cv2.circle(self.label, fixed_point(c), int(round(r * SUBPIXEL_ONE)), label, -1, cv2.LINE_8, SUBPIXEL_SHIFT)

    def ellipse(self, c, axes, angle, color, label: int):
        ax = (max(1, int(round(axes[0] * SUBPIXEL_ONE))), max(1, int(round(axes[1] * SUBPIXEL_ONE))))
        cv2.ellipse(self.image, fixed_point(c), ax, angle, 0, 360, color, -1, cv2.LINE_AA, SUBPIXEL_SHIFT)
        cv2.ellipse(self.label, fixed_point(c), ax, angle, 0, 360, label, -1, cv2.LINE_8, SUBPIXEL_SHIFT)

    def poly(self, pts, color, label: int):
        arr = np.array([fixed_point(p) for p in pts], dtype=np.int32)
        cv2.fillConvexPoly(self.image, arr, color, cv2.LINE_AA, SUBPIXEL_SHIFT)
        cv2.fillConvexPoly(self.label, arr, label, cv2.LINE_8, SUBPIXEL_SHIFT)


def shade(color: np.ndarray, towards: float, amount: float) -> tuple[int, int, int]:
    c = color * (1.0 - amount) + towards * amount
    return tuple(int(v) for v in np.clip(c, 0, 255))


def random_color(rng: np.random.Generator, sat=(0.45, 1.0), val=(0.45, 0.85)) -> np.ndarray:
    h = rng.random() * 6.0
    s = rng.uniform(*sat)
    v = rng.uniform(*val) * 255.0
    i = int(h) % 6
    f = h - int(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, dtype=np.float64)


def _rot(v: np.ndarray, deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def sample_figure_shape(rng: np.random.Generator) -> dict:
    """One figure's random shape and pose draws, relative to its height (see `figure_geometry`).

    The draws are kept raw (the uniform factors, the angles in degrees) and in `_figure_pose`'s
    historical call order, so that `figure_geometry(sample_figure_shape(rng), h, pelvis)` is
    bit-identical to what the image generator always drew. The video generator samples a shape once
    and re-evaluates the geometry per frame with its own joint angles.

    Returns a dict: `body_rot`, `lean`, `tilt` (degrees), `yaw`, the size factors `sw`, `hw`,
    `torso`, `head_r`, `neck_len`, `limb_scale`, `limb_w`, and per side (0 left, 1 right) lists
    `arm_angle`, `arm_bend`, `leg_angle`, `leg_bend` (degrees) and `upper_arm`, `forearm`, `thigh`,
    `shin` (length factors).
    """
    s: dict = {}
    s["body_rot"] = rng.normal(0.0, 12.0) if rng.random() < 0.85 else rng.uniform(-60.0, 60.0)
    s["lean"] = rng.normal(0.0, 8.0)
    s["sw"] = rng.uniform(0.85, 1.15)
    s["hw"] = rng.uniform(0.85, 1.15)
    s["torso"] = rng.uniform(0.92, 1.08)
    s["head_r"] = rng.uniform(0.9, 1.1)
    s["neck_len"] = rng.uniform(0.8, 1.2)
    s["tilt"] = rng.normal(0.0, 10.0)
    s["yaw"] = rng.uniform(-0.35, 0.35)
    s["limb_scale"] = rng.uniform(0.9, 1.1)
    for key in ("arm_angle", "arm_bend", "upper_arm", "forearm", "leg_angle", "leg_bend", "thigh", "shin"):
        s[key] = []
    for _ in range(2):  # left, then right
        s["arm_angle"].append(rng.uniform(-30.0, 170.0))
        s["arm_bend"].append(rng.uniform(-20.0, 150.0) * (1.0 if rng.random() < 0.7 else -1.0))
        s["upper_arm"].append(rng.uniform(0.75, 1.05))
        s["forearm"].append(rng.uniform(0.75, 1.05))
        s["leg_angle"].append(rng.uniform(-12.0, 45.0) if rng.random() < 0.9 else rng.uniform(45.0, 95.0))
        s["leg_bend"].append(rng.uniform(-10.0, 70.0) * (1.0 if rng.random() < 0.5 else -1.0))
        s["thigh"].append(rng.uniform(0.8, 1.05))
        s["shin"].append(rng.uniform(0.8, 1.05))
    s["limb_w"] = rng.uniform(0.055, 0.085)
    return s


def figure_geometry(shape: dict, height: float, pelvis: np.ndarray) -> dict:
    """Joint positions (image pixels) of a figure of `shape` (`sample_figure_shape`), `height`
    pixels tall, pelvis at `pelvis` `(2,)`, facing the viewer; plus its drawing sizes.

    Returns `kp (17, 2)`, `neck_base`, `head_c`, `head_dir`, `side`, `down` `(2,)`, `head_r`, `limb_w`.
    """
    h = height
    # the products keep the historical operand order: floating point is not associative
    body_rot, lean = shape["body_rot"], shape["lean"]
    sw = 0.11 * h * shape["sw"]  # half shoulder width
    hw = 0.075 * h * shape["hw"]  # half hip width
    torso = 0.30 * h * shape["torso"]
    head_r = 0.065 * h * shape["head_r"]
    neck_len = 0.055 * h * shape["neck_len"]

    def body(p):  # body frame (x to image right = figure's left, y down) -> image
        return pelvis + _rot(np.asarray(p, dtype=np.float64), body_rot)

    def upper(p):  # the upper body leans around the pelvis
        return body(_rot(np.asarray(p, dtype=np.float64), lean))

    kp = np.zeros((17, 2))
    neck_base = upper((0.0, -torso))
    kp[5] = upper((sw, -torso))  # left shoulder (image right)
    kp[6] = upper((-sw, -torso))
    kp[11] = body((hw, 0.0))
    kp[12] = body((-hw, 0.0))
    head_dir = _rot(_rot(np.array([0.0, -1.0]), body_rot + lean), shape["tilt"])
    head_c = neck_base + head_dir * (neck_len + head_r)
    side = np.array([-head_dir[1], head_dir[0]])  # unit vector to the figure's left (image right)
    yaw = shape["yaw"]
    kp[0] = head_c + side * (yaw * head_r) - head_dir * (0.2 * head_r)
    kp[1] = head_c + side * ((0.38 + 0.3 * yaw) * head_r) + head_dir * (0.22 * head_r)
    kp[2] = head_c + side * ((-0.38 + 0.3 * yaw) * head_r) + head_dir * (0.22 * head_r)
    kp[3] = head_c + side * ((0.98 - 0.1 * yaw) * head_r) + head_dir * (0.05 * head_r)
    kp[4] = head_c + side * ((-0.98 - 0.1 * yaw) * head_r) + head_dir * (0.05 * head_r)

    down = _rot(np.array([0.0, 1.0]), body_rot)
    limb_scale = shape["limb_scale"]
    for s_idx, sign in ((0, 1.0), (1, -1.0)):  # 0: left (outward = +x), 1: right
        # arm: angle from hanging down, positive = raised sideways
        a = shape["arm_angle"][s_idx]
        bend = shape["arm_bend"][s_idx]
        up_len = 0.165 * h * limb_scale * shape["upper_arm"][s_idx]
        fo_len = 0.15 * h * limb_scale * shape["forearm"][s_idx]
        d1 = _rot(down, -sign * a + lean)
        d2 = _rot(d1, -sign * bend)
        sh = kp[5 + s_idx]
        kp[7 + s_idx] = sh + d1 * up_len
        kp[9 + s_idx] = kp[7 + s_idx] + d2 * fo_len
        # leg: thigh angle outward, knee bend
        a = shape["leg_angle"][s_idx]
        bend = shape["leg_bend"][s_idx]
        th_len = 0.24 * h * limb_scale * shape["thigh"][s_idx]
        sh_len = 0.23 * h * limb_scale * shape["shin"][s_idx]
        d1 = _rot(down, -sign * a)
        d2 = _rot(d1, sign * bend)
        hip = kp[11 + s_idx]
        kp[13 + s_idx] = hip + d1 * th_len
        kp[15 + s_idx] = kp[13 + s_idx] + d2 * sh_len
    return {
        "kp": kp,
        "neck_base": neck_base,
        "head_c": head_c,
        "head_r": head_r,
        "head_dir": head_dir,
        "side": side,
        "down": down,
        "limb_w": h * shape["limb_w"],
    }


def _figure_pose(rng: np.random.Generator, height: float, pelvis: np.ndarray) -> dict:
    """Joint positions (image pixels) of one random figure facing the viewer, plus drawing sizes."""
    return figure_geometry(sample_figure_shape(rng), height, pelvis)


def draw_figure(canvas: Canvas, fig: dict, code: int, rng: np.random.Generator) -> None:
    kp = fig["kp"]
    base = random_color(rng)
    light = shade(base, 255.0, 0.5)
    dark = shade(base, 0.0, 0.5)
    left_light = bool(rng.random() < 0.5)  # which side is the light one: random (mirror symmetry)
    tone = {True: light if left_light else dark, False: dark if left_light else light}  # left? -> shade
    stripe_side = left_light  # the light side carries the stripe
    torso_col = tuple(int(v) for v in base)
    skin = shade(random_color(rng, sat=(0.2, 0.6), val=(0.55, 0.95)), 220.0, 0.3)
    w = fig["limb_w"]
    stripe_w = max(1.0, 0.28 * w)

    def limb(a, b, width, left: bool, part: int):
        canvas.line(kp[a] if isinstance(a, int) else a, kp[b] if isinstance(b, int) else b,
                    tone[left], width, code | part)
        if left == stripe_side:
            pa = kp[a] if isinstance(a, int) else a
            pb = kp[b] if isinstance(b, int) else b
            cv2.line(canvas.image, fixed_point(pa), fixed_point(pb), dark, max(1, int(round(stripe_w))), cv2.LINE_AA, SUBPIXEL_SHIFT)

    def arm(left: bool):
        s, e, wr = (5, 7, 9) if left else (6, 8, 10)
        limb(s, e, w, left, L_UARM if left else R_UARM)
        limb(e, wr, 0.85 * w, left, L_FARM if left else R_FARM)
        d = kp[wr] - kp[e]
        d = d / (np.linalg.norm(d) + 1e-9)
        canvas.disk(kp[wr] + d * 0.45 * w, 0.55 * w, skin, code | (L_HAND if left else R_HAND))

    def leg(left: bool):
        hp, kn, an = (11, 13, 15) if left else (12, 14, 16)
        limb(hp, kn, 1.1 * w, left, L_THIGH if left else R_THIGH)
        limb(kn, an, 0.95 * w, left, L_SHIN if left else R_SHIN)
        # feet point outwards, or along `foot_dir` when given (a walking figure's direction)
        out = fig["foot_dir"] if "foot_dir" in fig else _rot(fig["down"], -90.0 if left else 90.0)
        toe = kp[an] + out * 1.4 * w + fig["down"] * 0.2 * w
        canvas.line(kp[an], toe, tone[left], 0.7 * w, code | (L_FOOT if left else R_FOOT))

    behind = [rng.random() < 0.12, rng.random() < 0.12]  # an arm behind the torso
    arm_order = [(True, behind[0]), (False, behind[1])]
    if rng.random() < 0.5:  # the arm drawn second lies on top where they cross
        arm_order.reverse()
    for left, b in arm_order:
        if b:
            arm(left)
    left_leg_first = bool(rng.random() < 0.5)  # the leg drawn second lies on top where they cross
    leg(left_leg_first)
    leg(not left_leg_first)
    canvas.poly([kp[5], kp[6], kp[12], kp[11]], torso_col, code | TORSO)
    canvas.line(fig["neck_base"], fig["head_c"], skin, 0.9 * fig["head_r"], code | NECK, caps=False)
    for left, b in arm_order:
        if not b:
            arm(left)
    hr = fig["head_r"]
    ang = math.degrees(math.atan2(fig["side"][1], fig["side"][0]))
    canvas.ellipse(fig["head_c"], (0.92 * hr, hr), ang, skin, code | HEAD)
    canvas.disk(kp[3], 0.3 * hr, tone[True], code | L_EAR)
    canvas.disk(kp[4], 0.3 * hr, tone[False], code | R_EAR)
    canvas.disk(kp[1], 0.17 * hr, tone[True], code | L_EYE)
    canvas.disk(kp[2], 0.17 * hr, tone[False], code | R_EYE)
    pupil = kp[1] if stripe_side else kp[2]  # the light side's eye has a pupil, like its stripe
    canvas.disk(pupil, 0.08 * hr, (20, 20, 20), code | (L_EYE if stripe_side else R_EYE))
    canvas.disk(kp[0], 0.14 * hr, (200, 60, 60), code | NOSE)


def draw_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    c0, c1 = random_color(rng, (0.0, 0.7), (0.2, 0.95)), random_color(rng, (0.0, 0.7), (0.2, 0.95))
    ang = rng.uniform(0, 2 * math.pi)
    t = np.add.outer(
        np.arange(height, dtype=np.float32) * (math.sin(ang) / height),
        np.arange(width, dtype=np.float32) * (math.cos(ang) / width),
    )
    t = (t - t.min()) / (t.max() - t.min() + 1e-6)
    img = cv2.merge([cv2.convertScaleAbs(t, alpha=float(c1[c] - c0[c]), beta=float(c0[c])) for c in range(3)])
    for _ in range(int(rng.integers(6, 22))):
        col = tuple(int(v) for v in random_color(rng, (0.0, 1.0), (0.1, 1.0)))
        kind = rng.integers(0, 4)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        size = rng.uniform(0.03, 0.25) * min(width, height)
        if kind == 0:
            p0 = fixed_point((cx - size, cy - size * rng.uniform(0.3, 1.0)))
            p1 = fixed_point((cx + size, cy + size * rng.uniform(0.3, 1.0)))
            cv2.rectangle(img, p0, p1, col, -1, cv2.LINE_AA, SUBPIXEL_SHIFT)
        elif kind == 1:
            cv2.ellipse(img, fixed_point((cx, cy)), (int(size * SUBPIXEL_ONE), int(size * rng.uniform(0.3, 1.0) * SUBPIXEL_ONE)),
                        rng.uniform(0, 180), 0, 360, col, -1, cv2.LINE_AA, SUBPIXEL_SHIFT)
        elif kind == 2:
            n = int(rng.integers(3, 7))
            angs = np.sort(rng.uniform(0, 2 * math.pi, n))
            pts = np.stack([cx + size * np.cos(angs), cy + size * np.sin(angs)], -1)
            cv2.fillPoly(img, [np.round(pts * SUBPIXEL_ONE).astype(np.int32)], col, cv2.LINE_AA, SUBPIXEL_SHIFT)
        else:
            d = rng.uniform(0, 2 * math.pi)
            p0 = (cx - size * math.cos(d), cy - size * math.sin(d))
            p1 = (cx + size * math.cos(d), cy + size * math.sin(d))
            cv2.line(img, fixed_point(p0), fixed_point(p1), col, int(rng.integers(1, 4)), cv2.LINE_AA, SUBPIXEL_SHIFT)
    return img


def render_synthetic_image(
    rng: np.random.Generator,
    image_size: Sequence[int] = (256, 320),
    num_persons: int | None = None,
    occluder_prob: float = 0.25,
    noise: float = 6.0,
) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """Render one image.

    Args:
        rng: numpy Generator (all randomness comes from it).
        image_size: `(height, width)`.
        num_persons: 1..4, or None for a random count (1: 35 %, 2: 30 %, 3: 20 %, 4: 15 %).
        occluder_prob: probability of an occluder per figure.
        noise: standard deviation of the additive (uniform) pixel noise (0 disables it).

    Returns:
        `image (H, W, 3)` uint8 RGB; per figure a dict `keypoints (17, 3)` float64 (`x, y, v`),
        `bbox` `[x, y, w, h]`, `area`, `num_keypoints`; the label map `(H, W)` uint8
        (`figure << 5 | part` with figures numbered from 1, 255 for occluders, 0 background).
    """
    height, width = int(image_size[0]), int(image_size[1])
    if num_persons is None:
        num_persons = int(rng.choice([1, 2, 3, 4], p=[0.35, 0.3, 0.2, 0.15]))
    if not 1 <= num_persons <= 4:
        raise ValueError(f"num_persons must be in 1..4, got {num_persons}")
    canvas = Canvas(draw_background(rng, height, width))
    slots = rng.permutation(num_persons)
    figures, areas = [], []
    for i in range(num_persons):
        lo, hi = (0.6, 0.92) if num_persons == 1 else (0.45, 0.85)
        fh = height * rng.uniform(lo, hi)
        slot_w = width / num_persons
        px = (slots[i] + 0.5) * slot_w + rng.uniform(-0.3, 0.3) * slot_w
        py = rng.uniform(0.48 * fh, height - 0.5 * fh) if height > fh else 0.5 * height
        fig = _figure_pose(rng, fh, np.array([px, py]))
        code = (i + 1) << 5
        draw_figure(canvas, fig, code, rng)
        mine = (canvas.label >> 5) == (i + 1)
        areas.append(int(np.count_nonzero(mine)))
        ys, xs = np.nonzero(mine)
        fig["bbox_px"] = (xs.min(), ys.min(), xs.max(), ys.max()) if xs.size else None
        figures.append(fig)
    for fig in figures:
        if rng.random() < occluder_prob:
            j = int(rng.integers(0, 17))
            c = fig["kp"][j] + rng.normal(0, 0.05 * height, 2)
            size = rng.uniform(0.05, 0.12) * height
            col = tuple(int(v) for v in random_color(rng, (0.0, 1.0), (0.15, 0.95)))
            if rng.random() < 0.5:
                canvas.poly([c + (-size, -size * 0.7), c + (size, -size * 0.7), c + (size, size * 0.7),
                             c + (-size, size * 0.7)], col, OCCLUDER)
            else:
                canvas.ellipse(c, (size, size * rng.uniform(0.5, 1.0)), rng.uniform(0, 180), col, OCCLUDER)
    image = canvas.image
    if noise > 0:  # uniform noise of standard deviation `noise`
        a = int(round(noise * math.sqrt(3.0)))
        out = image.astype(np.int16)
        out += rng.integers(-a, a + 1, size=image.shape, dtype=np.int16)
        image = np.clip(out, 0, 255).astype(np.uint8)
    annotations = []
    for i, fig in enumerate(figures):
        code = (i + 1) << 5
        kps = np.zeros((17, 3))
        for k in range(17):
            x, y = fig["kp"][k]
            if not (0.0 <= x <= width - 1.0 and 0.0 <= y <= height - 1.0):
                continue
            lab = int(canvas.label[int(round(y)), int(round(x))])
            own = (lab >> 5) == (i + 1) and lab != OCCLUDER and (lab & 31) in KEYPOINT_PARTS[k]
            kps[k] = (x, y, 2.0 if own else 1.0)
        if fig["bbox_px"] is None:
            continue
        x0, y0, x1, y1 = fig["bbox_px"]
        # pixel-centre convention: pixel i covers [i - 0.5, i + 0.5]
        bbox = [float(x0) - 0.5, float(y0) - 0.5, float(x1 - x0 + 1), float(y1 - y0 + 1)]
        annotations.append(
            {"keypoints": kps, "bbox": bbox, "area": float(areas[i]), "num_keypoints": int((kps[:, 2] > 0).sum())}
        )
    return image, annotations, canvas.label


def make_synthetic_coco(
    output_dir: str | os.PathLike,
    num_images: int,
    image_size: Sequence[int] = (256, 320),
    seed: int = 0,
    occluder_prob: float = 0.25,
    noise: float = 6.0,
    image_format: str = "jpg",
    first_image_id: int = 1,
) -> tuple[Path, Path]:
    """Write `num_images` synthetic images and a COCO person_keypoints json.

    Image `i` is rendered from `numpy.random.default_rng([seed, i])`, so a given (seed, i) always
    gives the same image whatever `num_images` is; train and held-out sets use different seeds.

    Args:
        output_dir: folder to create; images go to `output_dir/images`, the json to
            `output_dir/person_keypoints.json`.
        num_images: number of images (>= 1).
        image_size: `(height, width)` of every image.
        seed: dataset seed.
        occluder_prob, noise: see `render_synthetic_image`.
        image_format: "jpg" (quality 95, fast) or "png" (lossless).
        first_image_id: id of the first image (annotation ids are `image_id * 10 + figure`).

    Returns:
        `(annotation_file, image_dir)`, ready for `load_coco_keypoints`.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    fmt = image_format.lower().lstrip(".")
    if fmt not in ("jpg", "jpeg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    out = Path(output_dir)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if fmt in ("jpg", "jpeg") else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    height, width = int(image_size[0]), int(image_size[1])
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([int(seed), i])
        img, anns, _ = render_synthetic_image(rng, (height, width), occluder_prob=occluder_prob, noise=noise)
        image_id = first_image_id + i
        name = f"{image_id:08d}.{fmt}"
        if not cv2.imwrite(str(image_dir / name), np.ascontiguousarray(img[..., ::-1]), params):
            raise ValueError(f"could not write image {image_dir / name}")
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for j, a in enumerate(anns):
            annotations.append(
                {
                    "id": image_id * 10 + j,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": [round(v, 2) for v in a["bbox"]],
                    "area": a["area"],
                    "num_keypoints": a["num_keypoints"],
                    "keypoints": [round(float(v), 3) for v in a["keypoints"].reshape(-1)],
                }
            )
    categories = [
        {
            "id": 1,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(COCO.keypoints),
            "skeleton": [[a + 1, b + 1] for a, b in COCO.skeleton],
        }
    ]
    data = {
        "info": {"description": f"vitpose_hf synthetic figures, seed {seed}", "version": "1"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    ann_file = out / "person_keypoints.json"
    with open(ann_file, "w", encoding="utf-8") as f:
        json.dump(data, f)
    logger.info("wrote %d synthetic images with %d persons to %s", num_images, len(annotations), out)
    return ann_file, image_dir


def load_synthetic_dataset(
    output_dir: str | os.PathLike,
    num_images: int,
    image_size: Sequence[int] = (256, 320),
    seed: int = 0,
    **kwargs,
):
    """Generate (once; reused when `output_dir` already holds the same set) and load a synthetic set.

    Returns `(dataset, annotation_file, image_dir)`; the dataset is `load_coco_keypoints`' rows.
    """
    out = Path(output_dir)
    stamp = out / "params.json"
    params = {"num_images": int(num_images), "image_size": [int(v) for v in image_size], "seed": int(seed), **kwargs}
    ann_file, image_dir = out / "person_keypoints.json", out / "images"
    if not (stamp.is_file() and ann_file.is_file() and json.loads(stamp.read_text()) == params):
        ann_file, image_dir = make_synthetic_coco(out, num_images, image_size, seed, **kwargs)
        stamp.write_text(json.dumps(params))
    return load_coco_keypoints(ann_file, image_dir, schema="coco"), ann_file, image_dir
