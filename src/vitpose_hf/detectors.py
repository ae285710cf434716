"""Person detectors for top-down pose estimation.

A detector maps one RGB image to a list of person detections, each
`{"bbox": [x, y, w, h], "score": float}` in the pixel coordinates of the original image, sorted
by decreasing score. Two implementations are provided:

- `YoloxOnnxDetector`: an exported YOLOX ONNX model (e.g. YOLOX-nano, COCO-trained) run with
  onnxruntime on the CPU (optional dependency: `pip install vitpose_hf[detector]`).
- `HFDetector`: a transformers "object-detection" pipeline (DETR, RT-DETR, ...), keeping the
  detections labelled "person".

`load_default_detector()` loads the person detector the pipeline uses when it is given neither boxes
nor a detector: `DEFAULT_DETECTOR`, the RT-DETR model transformers' VitPose documentation pairs with
ViTPose. `build_detector(spec)` turns a path to a `.onnx` file, a transformers pipeline, a model id or an
existing detector into a detector. A detector reads its input through `image_io.to_rgb_pil` (the
library's one image loader, by the rules of `image_io.to_rgb_tensor`); `load_rgb_image` is that
function under its former name here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from .image_io import to_rgb_pil

logger = logging.getLogger(__name__)

Detection = dict  # {"bbox": [x, y, w, h], "score": float}

#: the image loader of the detectors under its former name: `image_io.to_rgb_pil`
load_rgb_image = to_rgb_pil

#: The default person detector: RT-DETR R50-vd trained on COCO + Objects365 (80 COCO classes, label 0 is
#: "person"), the detector transformers' VitPose documentation runs before ViTPose. Its cost and the
#: light alternative (a YOLOX-nano ONNX file) are compared in docs/inference.md.
DEFAULT_DETECTOR = "PekingU/rtdetr_r50vd_coco_o365"
#: The hub revision of `DEFAULT_DETECTOR` that is loaded. Set `VITPOSE_HF_DETECTOR_REVISION` (a branch,
#: tag or commit hash) to pin another one; the default follows the repository's main branch.
DEFAULT_DETECTOR_REVISION = os.environ.get("VITPOSE_HF_DETECTOR_REVISION", "main")
#: Minimum person score of the default detector (transformers' VitPose example uses 0.3).
DEFAULT_DETECTOR_THRESHOLD = 0.3


class DetectorUnavailableError(ValueError, OSError):
    """The default person detector could not be loaded (offline, no cached copy, or its files are
    damaged). The message says how to go on without it: `boxes=`, `detector=` or `whole_image=True`.
    A `ValueError` (like the library's other input errors) and an `OSError` (like transformers'
    "could not connect" errors)."""

__all__ = [
    "DEFAULT_DETECTOR",
    "DEFAULT_DETECTOR_REVISION",
    "DEFAULT_DETECTOR_THRESHOLD",
    "BaseDetector",
    "CallableDetector",
    "DetectorUnavailableError",
    "HFDetector",
    "YoloxOnnxDetector",
    "box_iou",
    "build_detector",
    "load_default_detector",
    "load_rgb_image",
    "nms",
    "xywh_to_xyxy",
]


# ----------------------------------------------------------------------------------------------
# box utilities
# ----------------------------------------------------------------------------------------------


def xywh_to_xyxy(boxes) -> np.ndarray:
    """`(N, 4)` `[x, y, w, h]` (any array-like, one box or many) -> `(N, 4)` float64 `[x1, y1, x2, y2]`."""
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    out[:, 2:] += out[:, :2]
    return out


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union.

    Args:
        boxes_a: `(N, 4)` boxes `[x1, y1, x2, y2]`.
        boxes_b: `(M, 4)` boxes `[x1, y1, x2, y2]`.

    Returns:
        `(N, M)` float64 IoU in [0, 1] (0 where both boxes are empty).
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        boxes_xyxy: `(N, 4)` boxes `[x1, y1, x2, y2]`.
        scores: `(N,)` scores.
        iou_threshold: a box is dropped when its IoU with a kept, higher-scored box is above this.

    Returns:
        `(M,)` int64 indices of the kept boxes, by decreasing score.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        order = rest[box_iou(boxes[i : i + 1], boxes[rest])[0] <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def _finish(
    boxes_xyxy: np.ndarray, scores: np.ndarray, width: int, height: int, max_detections: int | None
) -> list[Detection]:
    """Clip `(N, 4)` xyxy boxes to the image, drop empty ones and those with a NaN/inf coordinate or
    score (logged with their count), sort by score, convert to xywh dicts."""
    out: list[Detection] = []
    if len(scores) == 0:
        return out
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4).copy()
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    finite = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
    if not finite.all():
        logger.warning("detector output: dropped %d of %d boxes with a NaN/inf coordinate or score",
                       int((~finite).sum()), len(scores))
        boxes, scores = boxes[finite], scores[finite]
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    for idx in np.argsort(-scores, kind="stable"):
        x1, y1, x2, y2 = boxes[idx]
        if not (x2 > x1 and y2 > y1):
            continue
        out.append({"bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "score": float(scores[idx])})
        if max_detections is not None and len(out) >= max_detections:
            break
    return out


# ----------------------------------------------------------------------------------------------
# detectors
# ----------------------------------------------------------------------------------------------


class BaseDetector:
    """Interface: `detector(image) -> [{"bbox": [x, y, w, h], "score": float}, ...]` (persons only,
    original pixel coordinates, decreasing score; `[]` when nobody is found).

    Boxes a detector model outputs with a NaN/inf coordinate or score, or without area, are dropped
    (a warning gives their count), so one bad box does not fail the image; every box returned is
    finite with w, h > 0."""

    score_threshold: float = 0.0
    max_detections: int | None = None

    def detect(self, image: Image.Image, score_threshold: float | None = None) -> list[Detection]:
        raise NotImplementedError

    def __call__(
        self, image: Any, score_threshold: float | None = None, max_detections: int | None = None
    ) -> list[Detection]:
        """Detect persons in one image (anything `image_io.to_rgb_tensor` accepts; the detector sees it
        as `image_io.to_rgb_pil` gives it: 8-bit RGB, alpha over white, EXIF orientation applied)."""
        dets = self.detect(to_rgb_pil(image), score_threshold=score_threshold)
        limit = max_detections if max_detections is not None else self.max_detections
        return dets if limit is None else dets[: int(limit)]


class YoloxOnnxDetector(BaseDetector):
    """YOLOX exported to ONNX (raw head outputs), run with onnxruntime; keeps COCO class 0 (person).

    Preprocessing (as YOLOX's own demo): RGB -> BGR, resize keeping the aspect ratio so the image
    fits the model input (bilinear), paste at the top-left of a canvas filled with 114, float32
    0..255 without normalization, layout `(1, 3, H_in, W_in)`.
    Decoding: the `(1, A, 5 + C)` output rows are `(x, y, w, h, objectness, class scores...)` over
    the grids of strides 8/16/32; centre = (xy + grid) * stride, size = exp(wh) * stride; person
    score = objectness * class score; then score threshold and NMS; boxes are divided by the
    resize ratio and clipped to the image.

    Args:
        path: the `.onnx` file.
        score_threshold: minimum person score kept (default 0.3).
        nms_threshold: IoU threshold of the NMS (default 0.45).
        input_size: `(height, width)` of the model input; read from the model when it is static,
            else 416x416.
        strides: feature strides of the output grids.
        class_index: channel of the person class among the class scores (0 for COCO).
        decoded_outputs: set True for exports that already decode boxes into canvas pixels.
        max_detections: keep at most this many persons (None = all).
        providers: onnxruntime execution providers (default CPU).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        score_threshold: float = 0.3,
        nms_threshold: float = 0.45,
        input_size: Sequence[int] | None = None,
        strides: Sequence[int] = (8, 16, 32),
        class_index: int = 0,
        decoded_outputs: bool = False,
        max_detections: int | None = None,
        providers: Sequence[str] | None = None,
    ):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"YOLOX ONNX file not found: {path!r}")
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError(
                "YoloxOnnxDetector needs onnxruntime: `pip install onnxruntime` "
                "(or `pip install vitpose_hf[detector]`)"
            ) from err
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if not 0.0 < nms_threshold <= 1.0:
            raise ValueError(f"nms_threshold must be in (0, 1], got {nms_threshold}")
        options = ort.SessionOptions()
        threads = os.environ.get("OMP_NUM_THREADS")
        if threads and threads.isdigit():
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(
                path, sess_options=options, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as err:
            raise ValueError(f"onnxruntime could not load {path!r}: {err}") from err
        self.path = path
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        if input_size is None:
            shape = inp.shape
            if len(shape) == 4 and all(isinstance(s, int) and s > 0 for s in shape[2:]):
                input_size = (shape[2], shape[3])
            else:
                input_size = (416, 416)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.strides = tuple(int(s) for s in strides)
        self.class_index = int(class_index)
        self.decoded_outputs = bool(decoded_outputs)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_detections = max_detections
        self._grid, self._grid_strides = self._make_grids()

    def __repr__(self) -> str:
        return (
            f"YoloxOnnxDetector(path={self.path!r}, input_size={self.input_size}, "
            f"score_threshold={self.score_threshold}, nms_threshold={self.nms_threshold})"
        )

    def _make_grids(self) -> tuple[np.ndarray, np.ndarray]:
        """`(A, 2)` cell offsets (x, y) and `(A, 1)` strides, in the output row order."""
        grids, strides = [], []
        h, w = self.input_size
        for s in self.strides:
            gh, gw = h // s, w // s
            ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
            grids.append(np.stack([xs, ys], axis=-1).reshape(-1, 2))
            strides.append(np.full((gh * gw, 1), s))
        return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)

    def preprocess(self, image: Image.Image) -> tuple[np.ndarray, float]:
        """RGB PIL image -> (`(1, 3, H_in, W_in)` float32 BGR canvas, resize ratio)."""
        h_in, w_in = self.input_size
        ratio = min(h_in / image.height, w_in / image.width)
        new_w, new_h = max(1, int(image.width * ratio)), max(1, int(image.height * ratio))
        rgb = np.asarray(image, dtype=np.uint8)
        try:
            import cv2

            resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        except ImportError:
            resized = np.asarray(image.resize((new_w, new_h), Image.BILINEAR), dtype=np.uint8)
        canvas = np.full((h_in, w_in, 3), 114, dtype=np.float32)
        canvas[:new_h, :new_w] = resized[..., ::-1]  # RGB -> BGR
        return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None]), ratio

    def decode(self, raw: np.ndarray) -> np.ndarray:
        """`(A, 5 + C)` raw rows -> same rows with xywh (centre, size) in canvas pixels."""
        out = raw.astype(np.float32).copy()
        if self.decoded_outputs:
            return out
        if out.shape[0] != self._grid.shape[0]:
            raise ValueError(
                f"YOLOX output has {out.shape[0]} rows but input {self.input_size} with strides "
                f"{self.strides} gives {self._grid.shape[0]} cells; pass input_size/strides, or "
                "decoded_outputs=True for exports with the decoding built in"
            )
        out[:, :2] = (out[:, :2] + self._grid) * self._grid_strides
        out[:, 2:4] = np.exp(np.clip(out[:, 2:4], -20.0, 20.0)) * self._grid_strides
        return out

    def detect(self, image: Image.Image, score_threshold: float | None = None) -> list[Detection]:
        """Persons in one RGB PIL image: `[{"bbox": [x, y, w, h], "score": s}, ...]`."""
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        blob, ratio = self.preprocess(image)
        raw = self.session.run(None, {self.input_name: blob})[0]
        rows = self.decode(np.asarray(raw).reshape(-1, raw.shape[-1]))
        scores = rows[:, 4] * rows[:, 5 + self.class_index]
        keep = scores >= threshold
        if not np.any(keep):
            return []
        rows, scores = rows[keep], scores[keep]
        cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) / ratio
        kept = nms(boxes, scores, self.nms_threshold)
        return _finish(boxes[kept], scores[kept], image.width, image.height, None)


class HFDetector(BaseDetector):
    """A transformers "object-detection" pipeline (or a model id / directory to build one from),
    keeping only the detections whose label is "person" (case-insensitive; `person_labels` to
    change).

    Args:
        detector: a `transformers` object-detection pipeline (any callable with its output
            format: `[{"score", "label", "box": {"xmin", "ymin", "xmax", "ymax"}}, ...]`) or a
            model id / local directory.
        score_threshold: minimum detection score (default 0.5).
        max_detections: keep at most this many persons.
        person_labels: labels counted as persons.
        device: device for a pipeline built from a model id.
    """

    def __init__(
        self,
        detector: Any,
        score_threshold: float = 0.5,
        max_detections: int | None = None,
        person_labels: Sequence[str] = ("person",),
        device: Any = None,
    ):
        if isinstance(detector, (str, os.PathLike)):
            name = os.fspath(detector)
            if _detector_location_kind(name) != "transformers":
                raise ValueError(f"HFDetector needs a model folder or hub id, got the ONNX file {name!r}; "
                                 "use YoloxOnnxDetector (or build_detector) for it")
            kwargs = {} if device is None else {"device": device}
            try:
                detector = _object_detection_pipeline(name, **kwargs)
            except (OSError, ValueError) as err:
                raise ValueError(f"could not build an object-detection pipeline from {name!r}: {err}") from err
        if not callable(detector):
            raise ValueError(f"HFDetector needs an object-detection pipeline or model id, got {detector!r:.80}")
        self.pipe = detector
        self.score_threshold = float(score_threshold)
        self.max_detections = max_detections
        self.person_labels = {str(label).lower() for label in person_labels}

    def __repr__(self) -> str:
        return f"HFDetector({type(self.pipe).__name__}, score_threshold={self.score_threshold})"

    def detect(self, image: Image.Image, score_threshold: float | None = None) -> list[Detection]:
        """Persons in one RGB PIL image: `[{"bbox": [x, y, w, h], "score": s}, ...]`."""
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        raw = self.pipe(image, threshold=threshold)
        if isinstance(raw, dict):
            raw = [raw]
        boxes, scores = [], []
        for det in raw or []:
            if not isinstance(det, dict) or "score" not in det or not isinstance(det.get("box"), dict):
                keys = sorted(det) if isinstance(det, dict) else type(det).__name__
                raise ValueError(f"the object-detection pipeline returned {det!r:.120} (keys {keys}); expected "
                                 'dicts with "score", "label" and "box": {"xmin", "ymin", "xmax", "ymax"}')
            if str(det.get("label", "")).lower() not in self.person_labels:
                continue
            score = float(det["score"])
            if score < threshold:
                continue
            box = det["box"]
            try:
                boxes.append([float(box[k]) for k in ("xmin", "ymin", "xmax", "ymax")])
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"detection box {box!r:.120} needs numeric xmin, ymin, xmax, ymax (keys "
                                 f"{sorted(box)})") from err
            scores.append(score)
        if not boxes:
            return []
        return _finish(np.asarray(boxes, dtype=np.float64), np.asarray(scores), image.width, image.height, None)


def _object_detection_pipeline(model: str, **kwargs) -> Any:
    """transformers' object-detection pipeline for a model id or folder (the one place both
    `HFDetector` and `load_default_detector` build it)."""
    from transformers import pipeline

    return pipeline("object-detection", model=model, **kwargs)


def load_default_detector(
    model: str | os.PathLike | None = None,
    revision: str | None = None,
    device: Any = None,
    score_threshold: float = DEFAULT_DETECTOR_THRESHOLD,
    max_detections: int | None = None,
) -> HFDetector:
    """Load the default person detector (`DEFAULT_DETECTOR` at `DEFAULT_DETECTOR_REVISION`).

    The weights are downloaded on first use and then read from the Hugging Face cache like any hub
    model (about 170 MB). The person class is the model's label 0 (its `id2label[0]`).

    Args:
        model: another model id or folder to load instead (an RT-DETR or any object-detection model
            whose label 0 is the person class).
        revision: hub revision (default `DEFAULT_DETECTOR_REVISION`).
        device: device of the detector (default: CPU).
        score_threshold: minimum person score (default 0.3).
        max_detections: keep at most this many persons.

    Raises:
        DetectorUnavailableError: the model cannot be loaded (offline with no cached copy, a missing
            folder, damaged files); the message names the model and says how to pass `boxes=`,
            `detector=` or `whole_image=True` instead.
    """
    name = os.fspath(model) if model is not None else DEFAULT_DETECTOR
    revision = DEFAULT_DETECTOR_REVISION if revision is None else revision
    kwargs: dict[str, Any] = {} if device is None else {"device": device}
    if not os.path.isdir(name):
        kwargs["revision"] = revision
    try:
        pipe = _object_detection_pipeline(name, **kwargs)
    except (OSError, ValueError, ImportError) as err:
        where = f"{name!r}" + (f" (revision {revision!r})" if "revision" in kwargs else "")
        raise DetectorUnavailableError(
            f"the default person detector {where} could not be loaded: {err}\n"
            "Without it, pass person boxes (boxes=[[x, y, w, h], ...]; CLI: --boxes FILE), another detector "
            "(detector='path/to/yolox_nano.onnx', a local object-detection model folder or a function; CLI: "
            "--detector), or take each image as one person with whole_image=True (CLI: --whole-image). Once "
            "it has been downloaded (online, or copied into the Hugging Face cache) it loads offline."
        ) from err
    label0 = str(pipe.model.config.id2label.get(0, "person"))
    logger.info("loaded the default person detector %s (person label %r, score >= %.2f)", name, label0, score_threshold)
    return HFDetector(pipe, score_threshold=score_threshold, max_detections=max_detections, person_labels=(label0,))


class CallableDetector(BaseDetector):
    """Wraps a plain function `f(pil_image) -> [{"bbox": [x, y, w, h], "score": s}, ...]` (or
    `[[x, y, w, h], ...]`, scored 1.0; or an `(N, 4)` array).

    A detection that is not such a dict or 4-number box raises a `ValueError` naming it (and the
    dict's keys); boxes with a NaN/inf value or w, h <= 0 are dropped with a logged count (see
    `BaseDetector`). Boxes are not clipped to the image.
    """

    def __init__(self, fn: Callable[[Image.Image], Any], score_threshold: float = 0.0, max_detections: int | None = None):
        self.fn = fn
        self.score_threshold = float(score_threshold)
        self.max_detections = max_detections

    def detect(self, image: Image.Image, score_threshold: float | None = None) -> list[Detection]:
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        raw = self.fn(image)
        if raw is None:
            return []
        if isinstance(raw, dict):
            raw = [raw]
        if isinstance(raw, (str, bytes)) or not hasattr(raw, "__iter__"):
            raise ValueError(f"the detector function returned {raw!r:.80}; expected a list of "
                             '{"bbox": [x, y, w, h], "score": s} dicts or [x, y, w, h] boxes')
        out, dropped, total = [], 0, 0
        for det in raw:
            total += 1
            bbox, score = _parse_detection(det)
            if not (np.all(np.isfinite(bbox)) and np.isfinite(score) and bbox[2] > 0 and bbox[3] > 0):
                dropped += 1
                continue
            if score >= threshold:
                out.append({"bbox": bbox, "score": score})
        if dropped:
            logger.warning("detector function: dropped %d of %d boxes with a NaN/inf value or w, h <= 0", dropped, total)
        out.sort(key=lambda d: -d["score"])
        return out


def _parse_detection(det: Any) -> tuple[list[float], float]:
    """One detection of a detector function -> (`[x, y, w, h]` floats, score); ValueError naming it."""
    if isinstance(det, dict):
        if "bbox" not in det:
            raise ValueError(f'detection {det!r:.120} has no "bbox" (its keys: {sorted(map(str, det))}); '
                             'expected {"bbox": [x, y, w, h], "score": s}')
        bbox, score = det["bbox"], det.get("score", 1.0)
    else:
        bbox, score = det, 1.0
    try:
        values = [float(v) for v in np.asarray(bbox, dtype=np.float64).reshape(-1)]
        score = float(score)
    except (TypeError, ValueError) as err:
        raise ValueError(f"detection {det!r:.120}: bbox must be 4 numbers [x, y, w, h] and score a number") from err
    if len(values) != 4:
        raise ValueError(f"detection {det!r:.120}: bbox must be 4 numbers [x, y, w, h], got {len(values)}")
    return values, score


_DETECTOR_SPECS = (
    "a YOLOX .onnx file, a transformers object-detection model folder or hub id (e.g. 'hustvl/yolos-tiny'), "
    "an object-detection pipeline, a BaseDetector or a function image -> detections"
)
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".pkl", ".engine", ".trt", ".tflite", ".pb", ".h5")


def _detector_location_kind(name: str) -> str:
    """`"onnx"` for an existing `.onnx` file, `"transformers"` for a folder or a hub id; a ValueError
    naming `name` for a missing `.onnx` file, an existing file of another kind, or a path that is
    neither on disk nor shaped like a hub id (`"repo"` or `"namespace/repo"`)."""
    if name.lower().endswith(".onnx"):
        if not os.path.isfile(name):
            raise ValueError(f"detector ONNX file not found: {name!r}")
        return "onnx"
    if os.path.isdir(name):
        return "transformers"
    if os.path.exists(name):
        raise ValueError(f"detector {name!r} is a file but not an .onnx model; accepted: {_DETECTOR_SPECS}")
    if name.lower().endswith(_WEIGHT_SUFFIXES):
        raise ValueError(f"detector file not found: {name!r} (and only .onnx files are read); accepted: {_DETECTOR_SPECS}")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError as err:
        raise ValueError(
            f"detector {name!r} is not an existing file or folder, nor a hub model id ({err}); accepted: {_DETECTOR_SPECS}"
        ) from err
    return "transformers"


def build_detector(spec: Any, score_threshold: float | None = None, max_detections: int | None = None, **kwargs) -> BaseDetector | None:
    """Make a detector from a specification.

    Args:
        spec: `None` (-> `None`), a `BaseDetector` (returned as is), a path to a `.onnx` file
            (-> `YoloxOnnxDetector`), a transformers pipeline object (-> `HFDetector`), a model id
            or directory (-> `HFDetector`), or a function image -> detections
            (-> `CallableDetector`). A missing `.onnx` file, an existing file that is not `.onnx`
            or a path that is neither on disk nor a hub id raises a `ValueError` naming it.
        score_threshold: overrides the detector's default score threshold when given.
        max_detections: keep at most this many persons.
        **kwargs: passed to the detector's constructor.
    """
    if spec is None:
        return None
    if isinstance(spec, BaseDetector):
        return spec
    extra = dict(kwargs)
    if score_threshold is not None:
        extra["score_threshold"] = score_threshold
    if max_detections is not None:
        extra["max_detections"] = max_detections
    if isinstance(spec, (str, os.PathLike)):
        name = os.fspath(spec)
        if _detector_location_kind(name) == "onnx":
            return YoloxOnnxDetector(name, **extra)
        return HFDetector(name, **extra)
    try:
        from transformers import Pipeline

        if isinstance(spec, Pipeline):
            return HFDetector(spec, **extra)
    except ImportError:  # pragma: no cover
        pass
    if callable(spec):
        return CallableDetector(spec, **extra)
    raise ValueError(f"cannot build a detector from {spec!r:.80}: expected {_DETECTOR_SPECS}")
