"""Frames from video files, image-folder sequences, frame iterators and webcams, one at a time.

Every source gives `Frame`s: an index, a timestamp in seconds (what the smoother runs on) and the
image as an `(H, W, 3)` uint8 RGB array. Frames are read lazily, so memory stays bounded whatever
the length of the video. All frames of a stream must have the size of the first one: the tracks,
the smoother and the annotated video are in that frame's pixel coordinates.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..image_io import IMAGE_EXTENSIONS, to_rgb_tensor

logger = logging.getLogger(__name__)

__all__ = ["VIDEO_EXTENSIONS", "Frame", "is_video_path", "iter_frames"]

#: file name endings taken as videos by the pipeline and the CLI (OpenCV decodes them; an animated
#: .gif stays an image, as it always was for the pipeline)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclass
class Frame:
    """One video frame.

    Attributes:
        index: position in the stream, from 0.
        timestamp: seconds since the first frame (from the file's frame rate, the `fps` given, the
            iterator's own timestamps, or the clock for a webcam).
        image: `(H, W, 3)` uint8 RGB.
    """

    index: int
    timestamp: float
    image: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """`(width, height)` in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])


def is_video_path(source: Any) -> bool:
    """True for a path (str / PathLike) whose name ends in one of `VIDEO_EXTENSIONS` (the file need
    not exist yet)."""
    return isinstance(source, (str, os.PathLike)) and os.fspath(source).lower().endswith(VIDEO_EXTENSIONS)


def _check_fps(fps: Any) -> float | None:
    if fps is None:
        return None
    try:
        value = float(fps)
    except (TypeError, ValueError) as err:
        raise ValueError(f"fps must be a positive number, got {fps!r}") from err
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return value


def _rgb_array(image: Any) -> np.ndarray:
    """Any image the pipeline accepts -> `(H, W, 3)` uint8 RGB (`image_io`'s conversion rules)."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    rgb = to_rgb_tensor(image)  # (3, H, W) float32 in [0, 255]
    return np.ascontiguousarray(rgb.round().clamp(0, 255).to(dtype=torch.uint8).permute(1, 2, 0).numpy())


def _capture_frames(capture, name: str, fps: float | None, clock: Callable[[], float] | None) -> Iterator[Frame]:
    """Read an opened `cv2.VideoCapture` until its end; BGR -> RGB. `clock` (webcams) stamps frames
    with the time they were read, else the index over the frame rate."""
    try:
        if fps is None and clock is None:
            rate = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
            if not math.isfinite(rate) or rate <= 0 or rate > 1000:
                raise ValueError(f"{name}: the file gives no usable frame rate ({rate}); pass fps=")
            fps = rate
        start = None
        last = 0.0
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok or bgr is None:
                break
            if bgr.ndim == 2:
                bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if clock is not None and fps is None:
                now = clock()
                start = now if start is None else start
                # a coarse clock can stamp two quick reads alike: keep the stamps increasing
                stamp = max(now - start, last + 1e-6) if index else 0.0
                last = stamp
            else:
                stamp = index / fps
            yield Frame(index, float(stamp), rgb)
            index += 1
        if index == 0:
            raise ValueError(f"{name}: no frames could be read (empty, truncated or not a video OpenCV can decode)")
    finally:
        capture.release()


def _open_capture(target: Any, name: str):
    capture = cv2.VideoCapture(target)
    if not capture.isOpened():
        capture.release()
        raise ValueError(f"cannot open {name}: not a readable video (or no camera with that index)")
    return capture


def _folder_frames(folder: Path, fps: float) -> Iterator[Frame]:
    # natural order: frame_2 before frame_10
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", p.name)],
    )
    if not files:
        raise ValueError(f"image folder {os.fspath(folder)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    for index, path in enumerate(files):
        try:
            image = _rgb_array(os.fspath(path))
        except ValueError as err:
            raise ValueError(f"frame {index} ({path.name}) of {os.fspath(folder)!r}: {err}") from err
        yield Frame(index, index / fps, image)


def _iterator_frames(frames: Iterable[Any], fps: float | None) -> Iterator[Frame]:
    index = -1
    for index, item in enumerate(frames):
        if isinstance(item, Frame):
            image = item.image
            if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
                raise ValueError(f"frame {index}: a Frame's image must be an (H, W, 3) uint8 RGB array")
            yield item
            continue
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], (int, float, np.floating, np.integer)):
            stamp, image = float(item[0]), item[1]
        elif fps is None:
            raise ValueError(
                "frames from an iterator need timestamps: yield (timestamp_seconds, image) pairs or pass fps="
            )
        else:
            stamp, image = index / fps, item
        try:
            yield Frame(index, stamp, _rgb_array(image))
        except ValueError as err:
            raise ValueError(f"frame {index}: {err}") from err
    if index < 0:
        raise ValueError("the frame iterator gave no frames")


def _prepend(first: Frame, rest: Iterator[Frame]) -> Iterator[Frame]:
    yield first
    yield from rest  # closing this generator closes `rest` (releasing a capture)


def _checked(frames: Iterator[Frame], name: str) -> Iterator[Frame]:
    """Refuse a frame whose size differs from the first one, and timestamps that do not increase;
    closing it closes `frames`."""
    try:
        yield from _checked_frames(frames, name)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()


def _checked_frames(frames: Iterator[Frame], name: str) -> Iterator[Frame]:
    first_size = None
    last_stamp = -math.inf
    for frame in frames:
        if first_size is None:
            first_size = frame.size
        elif frame.size != first_size:
            raise ValueError(
                f"{name}: frame {frame.index} is {frame.size[0]}x{frame.size[1]} but the stream started at "
                f"{first_size[0]}x{first_size[1]}; every frame of a video must have the same size"
            )
        if not math.isfinite(frame.timestamp) or frame.timestamp <= last_stamp:
            raise ValueError(
                f"{name}: frame {frame.index} has timestamp {frame.timestamp} after {last_stamp}; "
                "timestamps must be finite and increase"
            )
        last_stamp = frame.timestamp
        yield frame


def iter_frames(source: Any, fps: float | None = None, clock: Callable[[], float] = time.perf_counter) -> Iterator[Frame]:
    """Stream the frames of `source`, one `Frame` at a time.

    Args:
        source: a video file path (anything OpenCV decodes: mp4, avi, mov, mkv, webm...); a folder
            of images (sorted by name; needs `fps`); an int camera index (webcam, `cv2.VideoCapture`;
            stamped by `clock` unless `fps` is given); or an iterable of frames: images (numpy
            `(H, W, 3)` RGB, PIL, paths... anything `image_io.to_rgb_tensor` takes; needs `fps`),
            `(timestamp_seconds, image)` pairs, or `Frame`s.
        fps: frames per second; overrides a file's own rate. Required for image folders and plain
            image iterators.
        clock: the clock stamping webcam frames (seconds; swapped in tests).

    Yields:
        `Frame(index, timestamp, image (H, W, 3) uint8 RGB)`.

    Raises:
        ValueError: a missing or unreadable file, zero frames, no frame rate where one is needed
            (these at this call: the first frame is read at once); a frame whose size differs from
            the first one, timestamps that do not increase (when that frame is reached). The message
            names the source (and the frame).
    """
    fps = _check_fps(fps)
    if isinstance(source, (bool, np.bool_)):
        raise ValueError(f"video source must be a path, a camera index or an iterable of frames, got {source!r}")
    if isinstance(source, (int, np.integer)):
        name = f"camera {int(source)}"
        frames = _capture_frames(_open_capture(int(source), name), name, fps, clock)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = repr(os.fspath(source))
        if path.is_dir():
            if fps is None:
                raise ValueError(f"image folder {name} has no frame rate: pass fps= (e.g. fps=30)")
            frames = _folder_frames(path, fps)
        elif not path.is_file():
            raise ValueError(f"video file not found: {name}")
        else:
            frames = _capture_frames(_open_capture(os.fspath(path), f"video {name}"), f"video {name}", fps, None)
    elif isinstance(source, np.ndarray) or not isinstance(source, Iterable) or isinstance(source, (bytes, dict)):
        raise ValueError(
            f"video source must be a path, a camera index or an iterable of frames, got {type(source).__name__}"
        )
    else:
        name = "frame iterator"
        frames = _iterator_frames(source, fps)
    # the first frame is read now: an unreadable, empty or rate-less source fails at this call
    first = next(frames)
    return _checked(_prepend(first, frames), name)
