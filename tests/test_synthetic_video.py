"""Tests of the synthetic tracking videos: determinism, constant appearance, identities, exact
keypoint visibility, the documented difficulty of the default seeds, and the mp4 + JSON writer."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest

from vitpose_hf.data import (
    iter_synthetic_video,
    video_difficulty,
    write_synthetic_video,
)
from vitpose_hf.data import synthetic_video as sv
from vitpose_hf.data.synthetic import (
    KEYPOINT_PARTS,
    L_SHIN,
    L_THIGH,
    OCCLUDER,
    R_SHIN,
    R_THIGH,
    TORSO,
    draw_figure,
    figure_geometry,
    sample_figure_shape,
)

SMALL = {"image_size": (144, 256), "num_frames": 120}


@pytest.fixture(scope="module")
def clip():
    """A small clean clip (no noise): flat colours inside each part."""
    return list(iter_synthetic_video(seed=4, noise=0.0, **SMALL))


def _same(a, b):
    assert a.index == b.index and a.timestamp == b.timestamp
    np.testing.assert_array_equal(a.label, b.label)
    assert len(a.persons) == len(b.persons)
    for p, q in zip(a.persons, b.persons):
        assert p.keys() == q.keys()
        for key in p:
            np.testing.assert_array_equal(p[key], q[key])


def test_same_seed_same_video_and_frames_do_not_depend_on_the_length():
    a = list(iter_synthetic_video(seed=2, image_size=(96, 160), num_frames=30))
    b = list(iter_synthetic_video(seed=2, image_size=(96, 160), num_frames=15))
    for x, y in zip(a, b):
        _same(x, y)
        np.testing.assert_array_equal(x.image, y.image)
    assert a[10].timestamp == pytest.approx(10 / 25.0)
    assert a[0].image.shape == (96, 160, 3) and a[0].image.dtype == np.uint8
    assert a[0].label.shape == (96, 160)
    # fresh noise per frame over a fixed background
    assert not np.array_equal(a[0].image[:4, :4], a[1].image[:4, :4])
    other = list(iter_synthetic_video(seed=3, image_size=(96, 160), num_frames=2))
    assert not np.array_equal(other[0].image, a[0].image)


def test_render_false_gives_the_same_ground_truth():
    full = iter_synthetic_video(seed=1, image_size=(120, 200), num_frames=40)
    labels_only = iter_synthetic_video(seed=1, image_size=(120, 200), num_frames=40, render=False)
    for x, y in zip(full, labels_only):
        assert y.image is None
        _same(x, y)


def test_a_figure_looks_the_same_in_every_frame(clip):
    torso, sides = {}, {}
    for frame in clip:
        lum = frame.image.astype(np.float64).mean(axis=-1)
        for p in frame.persons:
            f = p["figure"]
            mask = frame.label == ((f << 5) | TORSO)
            # inside the torso (away from anti-aliased edges) the colour is flat
            inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            if inner.sum() >= 20:
                colours = frame.image[inner]
                colour = tuple(np.median(colours, axis=0))
                torso.setdefault(p["track_id"], set()).add(colour)
            left = np.isin(frame.label, [(f << 5) | q for q in (L_THIGH, L_SHIN)])
            right = np.isin(frame.label, [(f << 5) | q for q in (R_THIGH, R_SHIN)])
            if left.sum() >= 30 and right.sum() >= 30:
                sides.setdefault(p["track_id"], set()).add(bool(lum[left].mean() > lum[right].mean()))
    assert len(torso) >= 3
    for tid, colours in torso.items():
        assert len(colours) == 1, (tid, colours)  # the same torso colour whenever it shows
    assert len({c for s in torso.values() for c in s}) == len(torso)  # and each figure its own
    assert sides and all(len(s) == 1 for s in sides.values())  # the same light side


def test_track_ids_are_unique_contiguous_and_never_reused(clip):
    runs, order = {}, []
    for frame in clip:
        ids = [p["track_id"] for p in frame.persons]
        assert ids == sorted(set(ids))
        assert len(ids) <= sv.MAX_FIGURES
        for tid in ids:
            if tid not in runs:
                order.append(tid)
                runs[tid] = [frame.index, frame.index]
            else:
                assert runs[tid][1] == frame.index - 1, f"track {tid} came back after it ended"
                runs[tid][1] = frame.index
    assert order == list(range(1, len(order) + 1))  # numbered by first appearance
    width = SMALL["image_size"][1]
    entered = exited = 0
    for frame in clip:  # tracks enter and leave through the left or right image border
        for p in frame.persons:
            x, _, w, _ = p["bbox"]
            at_border = x <= -0.5 or x + w >= width - 0.5
            if runs[p["track_id"]][0] == frame.index and frame.index > 0:
                assert at_border
                entered += 1
            if runs[p["track_id"]][1] == frame.index and frame.index < len(clip) - 1:
                assert at_border
                exited += 1
    assert entered >= 1 and exited >= 1


def test_keypoints_boxes_and_visibility_follow_the_label_map(clip):
    n_vis = {0: 0, 1: 0, 2: 0}
    fractions = []
    for frame in clip:
        label = frame.label
        h, w = label.shape
        for p in frame.persons:
            f = p["figure"]
            kps = p["keypoints"]
            assert kps.shape == (17, 3) and kps.dtype == np.float64
            for k, (x, y, v) in enumerate(kps):
                n_vis[int(v)] += 1
                if v == 0:
                    assert x == 0 and y == 0
                    continue
                assert 0 <= x <= w - 1 and 0 <= y <= h - 1
                lab = int(label[round(y), round(x)])
                mine = lab != OCCLUDER and (lab >> 5) == f and (lab & 31) in KEYPOINT_PARTS[k]
                assert mine == (v == 2), (frame.index, p["track_id"], k, v, lab)
            assert p["num_keypoints"] == int((kps[:, 2] > 0).sum())
            # the visible pixels lie in the box and are visible_fraction of the silhouette
            ys, xs = np.nonzero(((label >> 5) == f) & (label != OCCLUDER))
            bx, by, bw, bh = p["bbox"]
            if xs.size:
                assert xs.min() >= bx + 0.5 and xs.max() <= bx + bw - 0.5
                assert ys.min() >= by + 0.5 and ys.max() <= by + bh - 0.5
            assert xs.size == round(p["visible_fraction"] * p["area"])
            assert 0 < p["area"] <= bw * bh
            fractions.append(p["visible_fraction"])
    assert n_vis[0] > 0 and n_vis[1] > 0 and n_vis[2] > 2 * n_vis[1]
    fractions = np.array(fractions)
    assert (fractions < 0.5).any() and (fractions == 1.0).mean() > 0.3


def test_the_drawing_window_holds_every_pixel_of_a_figure():
    """`_figure_window` bounds where `draw_figure` can draw (it limits the silhouette search)."""
    rng = np.random.default_rng(0)
    for i in range(150):
        height = rng.uniform(20.0, 300.0)
        geo = figure_geometry(sample_figure_shape(rng), height, rng.uniform(-50.0, 350.0, 2))
        if i % 2:
            geo["foot_dir"] = np.array([1.0 if i % 4 == 1 else -1.0, 0.0])
        canvas = sv._LabelCanvas(300, 300)
        draw_figure(canvas, geo, 1 << 5, np.random.default_rng(i))
        ys, xs = np.nonzero(canvas.label)
        win = sv._figure_window(geo, 300, 300)
        if win is None:
            assert xs.size == 0
            continue
        x0, y0, x1, y1 = win
        assert xs.size == 0 or (xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1)


def test_the_default_seeds_have_the_documented_difficulty():
    """At least 5 crossings and 5 occlusions per 1,000 track-frames, entries and exits; the numbers
    are the module docstring's table (labels only: the ground truth does not need the colours)."""
    table = {}
    for line in sv.__doc__.splitlines():
        m = re.match(r"\s+(\d)\s+(\d+)\s+(\d+)\s+([\d.]+) \((\d+)\)\s+([\d.]+) \((\d+)\)\s+(\d+)\s+(\d+)\s*$", line)
        if m:
            table[int(m.group(1))] = m.groups()[1:]
    assert sorted(table) == [0, 1, 2]
    for seed in (0, 1, 2):
        d = video_difficulty(iter_synthetic_video(seed, render=False))
        assert d["frames"] == 300
        assert d["crossings_per_1000"] >= 5 and d["occlusions_per_1000"] >= 5
        assert d["entries"] >= 1 and d["exits"] >= 1
        assert 2 <= d["mean_tracks_per_frame"] <= 5
        measured = (d["track_frames"], d["tracks"], f"{d['crossings_per_1000']:.1f}", d["crossings"],
                    f"{d['occlusions_per_1000']:.1f}", d["occlusions"], d["entries"], d["exits"])
        assert tuple(str(v) for v in measured) == table[seed], (seed, d)


def _gt(index, *persons):
    return {"index": index, "persons": [{"track_id": t, "bbox": b, "visible_fraction": v} for t, b, v in persons]}


def test_video_difficulty_definitions():
    frames = []
    # track 1 walks right through track 2 (standing), which it covers for a while: one crossing;
    # track 2's visibility dips twice (0.6 between is not yet unoccluded: one episode), then again
    vis2 = [1.0, 0.4, 0.6, 0.3, 0.8, 0.45, 1.0, 1.0]
    for i, v in enumerate(vis2):
        frames.append(_gt(i, (1, [10.0 + 20 * i, 0, 40, 100], 1.0), (2, [70.0, 10, 40, 100], v)))
    frames.append(_gt(8, (2, [70.0, 10, 40, 100], 1.0), (3, [0.0, 0, 30, 90], 0.2)))
    d = video_difficulty(frames)
    assert d["frames"] == 9 and d["track_frames"] == 18 and d["tracks"] == 3
    assert d["crossings"] == 1
    assert d["occlusions"] == 2  # track 3 shows up occluded: not a drop
    assert d["entries"] == 1 and d["exits"] == 1  # track 3 enters, track 1 leaves
    assert d["crossings_per_1000"] == pytest.approx(1000 / 18)
    # boxes that meet without overlapping vertically do not cross
    far = [_gt(i, (1, [10.0 + 20 * i, 0, 40, 100], 1.0), (2, [70.0, 150, 40, 100], 1.0)) for i in range(8)]
    assert video_difficulty(far)["crossings"] == 0
    assert video_difficulty({"frames": frames}) == d


def test_write_synthetic_video_round_trip(tmp_path):
    mp4, gt_path = write_synthetic_video(tmp_path / "clip.mp4", seed=5, num_frames=12, image_size=(96, 160))
    assert mp4.is_file() and gt_path == tmp_path / "clip.json"
    cap = cv2.VideoCapture(str(mp4))
    n = 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        assert image.shape == (96, 160, 3)
        n += 1
    cap.release()
    assert n == 12
    gt = json.loads(gt_path.read_text())
    assert gt["info"]["seed"] == 5 and gt["info"]["fps"] == 25.0
    assert gt["categories"][0]["keypoints"][0] == "nose"
    frames = list(iter_synthetic_video(seed=5, num_frames=12, image_size=(96, 160), render=False))
    assert [f["index"] for f in gt["frames"]] == list(range(12))
    for written, frame in zip(gt["frames"], frames):
        assert written["timestamp"] == pytest.approx(frame.timestamp)
        assert [p["track_id"] for p in written["persons"]] == [p["track_id"] for p in frame.persons]
        for p, q in zip(written["persons"], frame.persons):
            assert len(p["keypoints"]) == 51
            np.testing.assert_allclose(np.reshape(p["keypoints"], (17, 3)), q["keypoints"], atol=1e-3)
            np.testing.assert_allclose(p["bbox"], q["bbox"], atol=0.01)
    assert gt["info"]["difficulty"] == video_difficulty(gt)


def test_bad_arguments():
    for kwargs, match in (
        ({"num_frames": 0}, "num_frames"),
        ({"image_size": (16, 100)}, "image_size"),
        ({"fps": 0}, "fps"),
        ({"max_tracks": 7}, "max_tracks"),
        ({"spawn_interval": 0}, "spawn_interval"),
        ({"num_pillars": -1}, "num_pillars"),
    ):
        with pytest.raises(ValueError, match=match):
            iter_synthetic_video(**kwargs)
