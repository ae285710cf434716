"""Render docs/images/video_strip.jpg: tracked, smoothed poses on generated video, six frames in two
rows (read left to right, top to bottom) with the track ids and skeletons drawn by
`vitpose_hf.video.draw_tracks`.

The frames come from `vitpose_hf.data.synthetic_video` (the real clips in ../shared keep their own
terms and are never copied into the repository). The model is one trained on the synthetic people,
e.g. the README's main job:

    python docs/images/render_video_strip.py vitpose-offline [seed] [first_frame] [step]
"""

import sys

import numpy as np
import transformers
from PIL import Image

import vitpose_hf
from vitpose_hf.data.synthetic_video import iter_synthetic_video
from vitpose_hf.detectors import BaseDetector
from vitpose_hf.video import Frame, VideoPoseEstimator, draw_tracks

model_dir = sys.argv[1] if len(sys.argv) > 1 else "vitpose-offline"
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
first = int(sys.argv[3]) if len(sys.argv) > 3 else 60
step = int(sys.argv[4]) if len(sys.argv) > 4 else 12
count = 6


class TruthBoxes(BaseDetector):
    """The generated people's boxes (the picture shows tracking and smoothing, not a detector)."""

    def __init__(self):
        self.truth = {}

    def __call__(self, image, score_threshold=None, max_detections=None):
        return [{"bbox": p["bbox"], "score": 0.9} for p in self.truth.pop(id(image)) if p["visible_fraction"] > 0.3]


detector = TruthBoxes()


def frames():
    for f in iter_synthetic_video(seed=seed, num_frames=first + step * count):
        detector.truth[id(f.image)] = f.persons
        yield Frame(f.index, f.timestamp, f.image)


vitpose_hf.register()
pipe = transformers.pipeline("keypoint-detection", model=model_dir)
video = VideoPoseEstimator(pipe, detector=detector, detect_every=5)
tiles = []
for frame in video.process(frames()):
    if frame.index >= first and (frame.index - first) % step == 0:
        tiles.append(draw_tracks(frame.image, frame.persons))
gap = np.full((tiles[0].shape[0], 6, 3), 255, dtype=np.uint8)
rows = [np.concatenate([x for t in tiles[i : i + 3] for x in (t, gap)][:-1], axis=1) for i in (0, 3)]
strip = np.concatenate([rows[0], np.full((6, rows[0].shape[1], 3), 255, dtype=np.uint8), rows[1]], axis=0)
scale = 1600 / strip.shape[1]
out = Image.fromarray(strip).resize((1600, int(strip.shape[0] * scale)), Image.LANCZOS)
out.save("docs/images/video_strip.jpg", quality=88)
print("wrote docs/images/video_strip.jpg", out.size)
