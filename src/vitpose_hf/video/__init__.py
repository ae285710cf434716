"""Video: tracked, smoothed poses from video files, image sequences, frame iterators and webcams.

```python
import transformers, vitpose_hf
from vitpose_hf.video import VideoPoseEstimator, VideoWriter

pipe = transformers.pipeline("keypoint-detection", model="path/or/hub-id")
video = VideoPoseEstimator(pipe, detector="yolox_nano.onnx", detect_every=5)
with VideoWriter("out.mp4", jsonl="out.jsonl") as writer:
    for frame in video("clip.mp4"):
        writer.write(frame)          # skeletons and track ids drawn; one JSON line per frame
```

Modules: `sources` (frames in), `tracking` (OKS + IoU Hungarian association), `smoothing`
(One-Euro filter), `estimator` (the per-frame loop), `writer` (annotated video, JSON Lines).
docs/video.md explains the choices and the benchmark.
"""

from .estimator import PoseFrame, VideoPoseEstimator, VideoStats
from .smoothing import OneEuroFilter, PoseSmoother
from .sources import Frame, is_video_path, iter_frames
from .tracking import PoseTracker, Track
from .writer import VideoWriter, draw_tracks, track_color

__all__ = [
    "Frame",
    "OneEuroFilter",
    "PoseFrame",
    "PoseSmoother",
    "PoseTracker",
    "Track",
    "VideoPoseEstimator",
    "VideoStats",
    "VideoWriter",
    "draw_tracks",
    "is_video_path",
    "iter_frames",
    "track_color",
]
