"""`vitpose-hf predict` for a video: an annotated video plus JSON Lines, with a frames/s progress bar.

    vitpose-hf predict clip.mp4 -m MODEL --output out.mp4 --track --smooth --detect-every 5

writes `out.mp4` (skeletons, boxes and `#id` tags, one colour per track) and `out.jsonl` beside it
(one `{"frame", "timestamp", "persons"}` line per frame, each line written as its frame is done).
`--output out.jsonl` writes the JSON Lines only. The input is a video file, a folder of frames
with `--sequence --fps N`, or a camera index (`0`, `1`, ...; stop with Ctrl-C, the outputs are
closed properly).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import transformers
from tqdm.auto import tqdm

from ..jsonio import check_output_file
from .estimator import VideoPoseEstimator
from .sources import VIDEO_EXTENSIONS, is_video_path, iter_frames
from .writer import VideoWriter

logger = logging.getLogger(__name__)

__all__ = ["is_video_input", "run_predict_video", "video_outputs"]


def _camera_index(text: str) -> int | None:
    return int(text) if text.isdigit() and not os.path.exists(text) else None


def is_video_input(args: argparse.Namespace) -> bool:
    """Whether `predict`'s inputs are one video: a video file, a camera index, or a folder with
    `--sequence`. Video options given for images raise ValueError."""
    inputs = list(args.images)
    video = len(inputs) == 1 and (
        is_video_path(inputs[0]) or _camera_index(inputs[0]) is not None or (args.sequence and os.path.isdir(inputs[0]))
    )
    if args.sequence and not video:
        raise ValueError(f"--sequence needs exactly one folder of frames, got {inputs}")
    if not video:
        videos = [s for s in inputs if is_video_path(s)]
        if videos:
            raise ValueError(f"predict takes one video at a time (got {len(inputs)} inputs, videos {videos})")
        used = [flag for flag, on in (("--track", args.track), ("--smooth", args.smooth),
                                      ("--detect-every", args.detect_every != 1), ("--fps", args.fps is not None),
                                      ("--min-cutoff", args.min_cutoff is not None), ("--beta", args.beta is not None)) if on]
        if used:
            raise ValueError(f"{', '.join(used)} apply to videos; the inputs {inputs[:3]} are images")
    return video


def video_outputs(output: str) -> tuple[Path | None, Path]:
    """`--output` -> `(video path or None, JSON Lines path)`: `X.mp4` -> `(X.mp4, X.jsonl)`,
    `X.jsonl` -> `(None, X.jsonl)`."""
    path = Path(output)
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return path, path.with_suffix(".jsonl")
    if suffix == ".jsonl":
        return None, path
    raise ValueError(
        f"--output {output!r}: for a video, name the annotated video ({', '.join(VIDEO_EXTENSIONS[:5])}...; "
        "the JSON Lines go beside it) or a .jsonl file (JSON Lines only)"
    )


def _frame_count(source: Any) -> int | None:
    """The frame count a video file announces (for the progress bar), None when unknown."""
    if not (isinstance(source, str) and os.path.isfile(source)):
        return None
    capture = cv2.VideoCapture(source)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    capture.release()
    return count if count > 0 else None


def run_predict_video(args: argparse.Namespace, pipeline_kwargs: Callable[[], dict[str, Any]]) -> int:
    """`predict` for one video input (options: `vitpose-hf predict --help`); returns 0, errors raise
    ValueError (exit status 2). `pipeline_kwargs()` gives the pipeline's `model=` / `device=`; it is
    called once the outputs and the input have been checked."""
    video_path, jsonl_path = video_outputs(args.output)
    if video_path is not None:
        check_output_file(video_path, "--output")
    check_output_file(jsonl_path, "--output (its .jsonl)")
    for flag in ("boxes", "whole_image", "visualize"):
        if getattr(args, flag):
            name = "--" + flag.replace("_", "-")
            raise ValueError(f"{name} is for images; for a video, --output names the annotated video")
    if args.smooth and not args.track:
        raise ValueError("--smooth follows each person over time: it needs --track")
    if args.detect_every < 1:
        raise ValueError(f"--detect-every must be >= 1, got {args.detect_every}")
    if args.detect_every > 1 and not args.track:
        raise ValueError(f"--detect-every {args.detect_every} carries boxes along the tracks: it needs --track")
    source: Any = args.images[0]
    camera = _camera_index(source)
    if camera is not None:
        source = camera
    elif not args.sequence and not os.path.isfile(source):
        raise ValueError(f"video file not found: {source!r}")
    if args.sequence and args.fps is None:
        raise ValueError("--sequence needs --fps (the frame rate of the image sequence)")
    frames = iter_frames(source, fps=args.fps)  # reads the first frame: a bad input fails before the model loads

    pipe = transformers.pipeline("keypoint-detection", **pipeline_kwargs())
    options: dict[str, Any] = {
        "detector": args.detector, "detect_every": args.detect_every, "track": args.track, "smooth": args.smooth,
        "flip_test": not args.no_flip, "dataset_index": args.dataset_index, "schema": args.schema,
        "detection_threshold": args.detection_threshold, "max_persons": args.max_persons,
        "keypoint_threshold": args.keypoint_threshold, "frame_batch": max(1, min(args.batch_size, 8)),
    }  # fmt: skip
    for key in ("min_cutoff", "beta"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.detector is None:
        pipe.default_detector()  # offline, this stops here with the way out
    estimator = VideoPoseEstimator(pipe, **options)
    total = _frame_count(source) if camera is None else None
    video_fps = args.fps
    if camera is not None and video_fps is None and video_path is not None:
        # a camera's first frames come at the pace of buffering and model loading, not its frame rate
        video_fps = 30.0
        logger.info("camera %d: the annotated video is written at 30 fps (--fps sets it)", camera)
    bar = tqdm(total=total, unit="frame", disable=args.quiet, desc="video")
    writer = VideoWriter(video_path, jsonl_path, fps=video_fps, schema=estimator.schema, keypoint_threshold=args.draw_threshold)
    status = 0
    try:
        for frame in estimator.process(frames):
            writer.write(frame)
            bar.update(1)
    except KeyboardInterrupt:
        logger.warning("interrupted after %d frames: the outputs hold every finished frame", writer.frames)
        status = 130  # the shell's status for Ctrl-C
    finally:
        bar.close()
        writer.close()
    logger.info("wrote %s%s", f"{video_path} ({writer.codec}) and " if video_path else "", jsonl_path)
    return status
