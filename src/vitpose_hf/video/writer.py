"""Video outputs: the annotated video (skeletons and track ids, one colour per track) and JSON Lines
(one line per frame, written as each frame is done, so a killed run keeps every finished frame).

The annotated video is written with OpenCV's `VideoWriter`, trying H.264 first (`avc1`: plays in
browsers; present when OpenCV is built with an H.264 encoder, e.g. a system OpenCV with FFmpeg and
libx264, not the pip wheels) and falling back to MPEG-4 Part 2 (`mp4v`: plays in VLC and most
desktop players, not in browsers); the log says which one was used.
"""

from __future__ import annotations

import colorsys
import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..jsonio import JsonLinesWriter, check_output_file
from ..keypoint_schemas import KeypointSchema
from ..visualization import draw_keypoints
from .estimator import PoseFrame

logger = logging.getLogger(__name__)

__all__ = ["CODECS", "VideoWriter", "draw_tracks", "track_color"]

#: fourcc codes tried in order for .mp4 / .mov / .m4v outputs (H.264, then MPEG-4 Part 2)
CODECS = ("avc1", "mp4v")
_OTHER_CODECS = {".avi": ("MJPG", "XVID"), ".mkv": ("avc1", "mp4v"), ".webm": ("VP80",)}


def track_color(track_id: int | None) -> tuple[int, int, int]:
    """A bright RGB colour for a track id, far from the colours of the ids next to it (hues spaced
    by the golden angle); grey for None."""
    if track_id is None:
        return (200, 200, 200)
    hue = (int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_tracks(image: np.ndarray, persons: Sequence[dict], schema: str | KeypointSchema | None = "coco",
                keypoint_threshold: float = 0.3) -> np.ndarray:
    """Skeletons, boxes and `#id` tags of `persons` on a copy of `image`.

    Args:
        image: `(H, W, 3)` uint8 RGB.
        persons: pipeline-format persons, with `track_id` when tracked.
        schema: keypoint schema (name or object).
        keypoint_threshold: keypoints scoring below it are not drawn.

    Returns:
        `(H, W, 3)` uint8 RGB.
    """
    ids = [p.get("track_id") for p in persons]
    drawn = draw_keypoints(
        image, persons, schema=schema, keypoint_threshold=keypoint_threshold,
        colors=[track_color(t) for t in ids], labels=[None if t is None else f"#{t}" for t in ids],
    )  # fmt: skip
    return np.asarray(drawn)


def _open_video_writer(path: Path, fps: float, size: tuple[int, int]):
    codecs = _OTHER_CODECS.get(path.suffix.lower(), CODECS)
    for code in codecs:
        writer = cv2.VideoWriter(os.fspath(path), cv2.VideoWriter_fourcc(*code), float(fps), size)
        if writer.isOpened():
            if code != codecs[0]:
                logger.info("%s: no %s encoder in this OpenCV build, writing %s instead", path, codecs[0], code)
            logger.info("writing %s with codec %s at %.3g fps", path, code, fps)
            return writer, code
        writer.release()
    raise ValueError(f"cannot write video {os.fspath(path)!r}: OpenCV has none of the encoders {list(codecs)}")


class VideoWriter:
    """Write `PoseFrame`s as an annotated video and/or JSON Lines.

    Args:
        video: output video path (`.mp4` recommended; `.avi`, `.mkv`, `.webm` also work), or None.
        jsonl: output JSON Lines path (one `{"frame", "timestamp", "persons"}` object per line), or None.
        fps: frame rate of the video; None = estimated from the first two frames' timestamps.
        schema: keypoint schema for drawing.
        keypoint_threshold: keypoints scoring below it are not drawn.

    Both files are checked for writability when the writer is made (before any frame is processed).
    """

    def __init__(self, video: str | os.PathLike | None = None, jsonl: str | os.PathLike | None = None,
                 fps: float | None = None, schema: Any = "coco", keypoint_threshold: float = 0.3):
        if video is None and jsonl is None:
            raise ValueError("VideoWriter needs video= or jsonl= (or both)")
        self.video_path = check_output_file(video, "video output") if video is not None else None
        self.jsonl_path = check_output_file(jsonl, "JSON Lines output") if jsonl is not None else None
        if fps is not None and not float(fps) > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = None if fps is None else float(fps)
        self.schema = schema
        self.keypoint_threshold = float(keypoint_threshold)
        self.codec: str | None = None
        self._lines = JsonLinesWriter(self.jsonl_path) if self.jsonl_path is not None else None
        self._video = None
        self._held: PoseFrame | None = None  # the first frame, kept until the frame rate is known
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, frame: PoseFrame) -> None:
        """Append one frame (its JSON line at once; its drawing once the video is open)."""
        if self._lines is not None:
            self._lines.write(frame.to_record())
        if self.video_path is None:
            self.frames += 1
            return
        size = (int(frame.image.shape[1]), int(frame.image.shape[0]))
        if self._size is not None and size != self._size:
            raise ValueError(f"frame {frame.index} is {size[0]}x{size[1]}, the video is {self._size[0]}x{self._size[1]}")
        self._size = size
        if self._video is None:
            if self.fps is None and self._held is None:
                self._held = frame
                return
            fps = self.fps
            if fps is None:
                dt = frame.timestamp - self._held.timestamp
                fps = 1.0 / dt if dt > 0 else 25.0
            self._video, self.codec = _open_video_writer(self.video_path, fps, size)
            if self._held is not None:
                self._draw(self._held)
                self._held = None
        self._draw(frame)

    def _draw(self, frame: PoseFrame) -> None:
        rgb = draw_tracks(frame.image, frame.persons, self.schema, self.keypoint_threshold)
        self._video.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        """Finish both files (a single-frame video is written at 25 fps unless `fps` was given)."""
        if self._held is not None:
            self._video, self.codec = _open_video_writer(self.video_path, self.fps or 25.0, self._size)
            self._draw(self._held)
            self._held = None
        if self._video is not None:
            self._video.release()
            self._video = None
        if self._lines is not None:
            with contextlib.suppress(OSError):
                self._lines.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
