"""The "keypoint-detection" pipeline: image(s) in, people's keypoints out (top-down).

`import vitpose_hf` registers the task with transformers, so

```python
pipe = transformers.pipeline("keypoint-detection", model="path/or/hub-id")
people = pipe("photo.jpg", boxes=[[x, y, w, h], ...])
```

works for vitpose_hf checkpoints and for transformers-format VitPose checkpoints (loaded into
`vitpose_hf.VitPoseForPoseEstimation`). Flow per image: person boxes (given; from the detector
passed; else from the default RT-DETR detector; or the whole image with `whole_image=True`) ->
`VitPoseTopDownImageProcessor` crops -> model heatmaps (optionally with flip test)
-> decoding back to image coordinates.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForPoseEstimation, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .detectors import DEFAULT_DETECTOR, BaseDetector, build_detector, load_default_detector
from .heatmaps import rescore_scores
from .image_io import rgb_tensor_to_pil, to_rgb_tensor
from .image_processing_vitpose import MAX_BOX_VALUE, VitPoseTopDownImageProcessor, check_finite_number
from .inference import InferenceModelCache
from .keypoint_schemas import KeypointSchema, get_schema, head_num_keypoints, resolve_schema
from .modeling_vitpose import VitPoseForPoseEstimation
from .onnx_backend import OnnxPoseModel
from .video.estimator import VIDEO_OPTIONS, VideoPoseEstimator
from .video.sources import is_video_path

logger = logging.getLogger(__name__)

TASK = "keypoint-detection"
DEFAULT_IMAGE_BATCH = 8

__all__ = ["KeypointDetectionPipeline", "register_pipeline", "TASK"]


def _validate_boxes(boxes: Any, width: int, height: int) -> np.ndarray:
    """`[[x, y, w, h], ...]` -> `(N, 4)` float64; ValueError naming a NaN, empty or off-image box."""
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"boxes must be a list of [x, y, w, h], got {boxes!r:.100}") from err
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) as [x, y, w, h], got shape {arr.shape}")
    for box in arr:
        if not np.all(np.isfinite(box)):
            raise ValueError(f"box {box.tolist()} holds NaN or infinite values")
        if box[2] <= 0 or box[3] <= 0:
            raise ValueError(f"box {box.tolist()} has zero or negative size (boxes are [x, y, w, h])")
        if np.abs(box).max() > MAX_BOX_VALUE:
            raise ValueError(f"box {box.tolist()} is beyond +-{MAX_BOX_VALUE:.0f} px (boxes must lie within 2**24 px)")
        if box[0] >= width or box[1] >= height or box[0] + box[2] <= 0 or box[1] + box[3] <= 0:
            raise ValueError(f"box {box.tolist()} lies entirely outside the {width}x{height} image")
    return arr


class KeypointDetectionPipeline(Pipeline):
    """Top-down human (or animal) keypoint detection with a ViTPose model.

    Call: `pipe(images, boxes=None, **kwargs)` where `images` is one image (path, URL, encoded
    bytes, `datasets.Image` dict, PIL image, numpy array, torch tensor) or a list of them. Images are
    converted by `vitpose_hf.image_io.to_rgb_tensor`, exactly as the image processor, the detectors
    and the training transform convert them (EXIF orientation, alpha over white, 16-bit / 257, float
    [0, 1] x 255, NaN / inf refused...); a detector gets that image rounded to 8-bit RGB.

    Args (at construction or per call):
        boxes: person boxes `[[x, y, w, h], ...]` in pixels for one image; for a list of images, a
            list with one such list per image. A box may stick out of the image (the crop is padded)
            but not lie entirely outside it; zero/negative/NaN sizes raise `ValueError`. An empty
            list means "nobody here" and gives `[]`.
        box_scores: optional detection score per box (same nesting as `boxes`); default 1.0.
        detector: used when `boxes` is not given: a transformers object-detection pipeline, a model
            id, a path to a YOLOX `.onnx` file, a `vitpose_hf.detectors.BaseDetector` or a function
            image -> detections. With neither `boxes` nor `detector` (nor `whole_image`), the
            default person detector `vitpose_hf.detectors.DEFAULT_DETECTOR` (RT-DETR R50-vd,
            COCO + Objects365, person score >= 0.3) is loaded on first use, kept by the pipeline
            and read from the Hugging Face cache after its first download. Offline without a cached
            copy that raises `vitpose_hf.detectors.DetectorUnavailableError` (a `ValueError`)
            saying how to pass `boxes=`, `detector=` or `whole_image=True`.
        whole_image (`bool`, default False): take each image as ONE person covering the whole frame
            (no detector; for crops that already hold one person). Warns once per pipeline, as a
            crowd would become one person.
        detection_threshold: minimum person detection score (default: the detector's own).
        max_persons: keep at most this many detections per image (highest scores first).
        flip_test (`bool`, default True): average the heatmaps of each crop and its mirror image.
        dataset_index (`int`, optional): which ViTPose++ expert/head to use (0 = COCO). The
            keypoint schema follows that head's keypoint count unless `schema` is given.
        schema: keypoint schema name or object (names, flip pairs); default from the model.
        keypoint_threshold (`float`, optional): drop keypoints whose score is below it.
        clamp_to_heatmap (`bool`, default False): keep DARK-refined keypoints inside the crop window
            (the default is the official, unbounded refinement).
        batch_size: for a list of images, how many images have their crops batched into one
            forward pass (default 8).

    Returns:
        Per image, a list with one entry per person, sorted like the boxes:
        `{"bbox": [x, y, w, h], "box": {"xmin", "ymin", "xmax", "ymax"}, "label": "person",
        "score": float, "keypoints": [{"label": str, "x": float, "y": float, "score": float}, ...]}`
        (`box` and `label` as transformers' object-detection pipeline gives them; `bbox` is COCO's
        xywh). `score` is the box score times the mean score of the keypoints scoring above 0.2
        (ViTPose's rescoring). For a list of images, a list of such lists. The persons feed
        `vitpose_hf.evaluation.persons_to_coco_results(..., image_ids=...)` and
        `vitpose_hf.visualization.draw_keypoints` as they are.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    # transformers >= 5.25 otherwise tries a video processor, derives its class from our processor's
    # auto_map (a class that does not exist) and asks whether to run the folder's custom code
    _load_video_processor = False

    def __init__(self, model, image_processor=None, **kwargs):
        _check_pose_model(model)
        self._warned_whole_image = False  # whole-image mode warns once per pipeline
        self._detector_cache: dict[str, BaseDetector] = {}
        self._default_detector: BaseDetector | None = None
        # the network runs as a swapped, weight-sharing copy (optimize_for_inference's fast paths),
        # rebuilt whenever self.model's weights change; self.model itself is never altered
        self._inference_models = InferenceModelCache()
        super().__init__(model=model, image_processor=image_processor, **kwargs)
        self.image_processor = self._resolve_processor(self.image_processor)

    # ------------------------------------------------------------------------------ setup

    def _resolve_processor(self, processor):
        """Our processor for the model: the one given (another class, e.g. transformers'
        `VitPoseImageProcessor`, is converted, logged), else the model folder's
        `preprocessor_config.json` read by our class (also a file written by vitpose_hf < 0.2,
        whose `image_processor_type` is transformers' class name; a hub id's file is fetched like
        any hub file), else a default of the model's input size.
        """
        if isinstance(processor, VitPoseTopDownImageProcessor):
            return processor
        if processor is not None and hasattr(processor, "to_dict"):
            logger.info("converting %s to vitpose_hf's VitPoseTopDownImageProcessor", type(processor).__name__)
            settings = {k: v for k, v in processor.to_dict().items() if not k.startswith("_")}
            settings.pop("image_processor_type", None)
            settings.pop("auto_map", None)
            return VitPoseTopDownImageProcessor.from_dict(settings)
        source = getattr(self.model, "name_or_path", None) or getattr(self.model.config, "_name_or_path", None)
        if source:
            source = str(source)
            if os.path.isdir(source):
                if os.path.isfile(os.path.join(source, "preprocessor_config.json")):
                    return VitPoseTopDownImageProcessor.from_pretrained(source)
            else:
                try:  # a hub id: its file when the repository has one (cached or downloadable)
                    return VitPoseTopDownImageProcessor.from_pretrained(source)
                except (OSError, ValueError) as err:
                    logger.info("no preprocessor config for %s (%s)", source, err)
        processor = VitPoseTopDownImageProcessor.for_config(self.model.config)
        logger.info("no preprocessor config found; using a default processor for %s input", processor.crop_size)
        return processor

    def _stream_in_chunks(self, inputs, batch_size: int, args, kwargs):
        for chunk in _chunks(inputs, batch_size):
            yield from self(chunk, *args, batch_size=batch_size, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Save the model and the image processor (with their code for `trust_remote_code=True`; not
        the pipeline's: `import vitpose_hf` provides the task, so with the package installed the
        directory loads without `trust_remote_code`)."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory {os.fspath(save_directory)!r} is a file, expected a directory")
        os.makedirs(save_directory, exist_ok=True)
        if getattr(self.model.config, "custom_pipelines", None):
            self.model.config.custom_pipelines = {}
        self.model.save_pretrained(save_directory, **kwargs)
        self.image_processor.save_pretrained(save_directory, **kwargs)

    def default_detector(self) -> BaseDetector:
        """The default person detector (`vitpose_hf.detectors.DEFAULT_DETECTOR`), loaded on the first
        call and then kept; `DetectorUnavailableError` when it cannot be loaded (offline, not cached)."""
        if self._default_detector is None:
            logger.info("no boxes and no detector given: loading the default person detector %s", DEFAULT_DETECTOR)
            self._default_detector = load_default_detector(device=self.device)
        return self._default_detector

    def _get_detector(self, spec):
        if spec is None or isinstance(spec, BaseDetector):
            return spec
        if isinstance(spec, (str, os.PathLike)):
            key = os.fspath(spec)
            if key not in self._detector_cache:
                self._detector_cache[key] = build_detector(key)
            return self._detector_cache[key]
        return build_detector(spec)

    def _sanitize_parameters(
        self,
        boxes=None,
        box_scores=None,
        detector=None,
        whole_image=None,
        detection_threshold=None,
        max_persons=None,
        flip_test=None,
        dataset_index=None,
        schema=None,
        keypoint_threshold=None,
        clamp_to_heatmap=None,
        timeout=None,
        **kwargs,
    ):
        if kwargs:
            raise ValueError(f"unknown keypoint-detection arguments: {sorted(kwargs)}")
        pre, fwd, post = {}, {}, {}
        if boxes is not None:
            pre["boxes"] = boxes
        if box_scores is not None:
            pre["box_scores"] = box_scores
        if detector is not None:
            pre["detector"] = self._get_detector(detector)
        if whole_image is not None:
            if not isinstance(whole_image, (bool, np.bool_)):
                raise ValueError(f"whole_image must be True or False, got {whole_image!r}")
            if whole_image and (boxes is not None or detector is not None):
                given = "boxes" if boxes is not None else "detector"
                raise ValueError(f"whole_image=True takes each image as one person: it cannot be combined with {given}=")
            pre["whole_image"] = bool(whole_image)
        if detection_threshold is not None:
            if not 0.0 <= float(detection_threshold) <= 1.0:
                raise ValueError(f"detection_threshold must be in [0, 1], got {detection_threshold}")
            pre["detection_threshold"] = float(detection_threshold)
        if max_persons is not None:
            if int(max_persons) < 1:
                raise ValueError(f"max_persons must be >= 1, got {max_persons}")
            pre["max_persons"] = int(max_persons)
        if timeout is not None:
            pre["timeout"] = timeout
        if flip_test is not None:
            fwd["flip_test"] = bool(flip_test)
        if dataset_index is not None:
            fwd["dataset_index"] = int(dataset_index)
        if schema is not None:
            fwd["schema"] = get_schema(schema)
        if keypoint_threshold is not None:
            post["keypoint_threshold"] = check_finite_number(keypoint_threshold, "keypoint_threshold")
        if clamp_to_heatmap is not None:
            post["clamp_to_heatmap"] = bool(clamp_to_heatmap)
        return pre, fwd, post

    # ------------------------------------------------------------------------------ schema

    def head_num_keypoints(self, dataset_index: int | None = None) -> int:
        """Keypoint count of the head serving `dataset_index` (None = the main head)."""
        return head_num_keypoints(self.model.config, dataset_index)

    def schema_for(self, dataset_index: int | None = None, schema: Any = None) -> KeypointSchema:
        """The keypoint schema used to name, flip and draw the keypoints of a head
        (`keypoint_schemas.resolve_schema`: None = the main head)."""
        return resolve_schema(self.model.config, dataset_index, schema)

    # ------------------------------------------------------------------------------ steps

    def preprocess(
        self,
        image,
        boxes=None,
        box_scores=None,
        detector=None,
        whole_image=False,
        detection_threshold=None,
        max_persons=None,
        timeout=None,
    ) -> dict:
        """Load the image, find the person boxes and crop them.

        Returns a dict with `pixel_values` `(N, 3, H, W)` (absent when N == 0), `boxes` `(N, 4)`
        xywh, `box_scores` `(N,)`.
        """
        entry = isinstance(image, dict) and "image" not in image and ("bytes" in image or "path" in image)
        if isinstance(image, dict) and not entry:
            # {"image": ..., "boxes": [...], "box_scores": [...]} (datasets rows, generators); a dict with
            # "bytes" / "path" and no "image" is a datasets.Image entry, read as the image itself
            if "image" not in image:
                raise ValueError(f"a dict input needs an 'image' key, got keys {sorted(image)}")
            boxes = image.get("boxes", boxes)
            box_scores = image.get("box_scores", box_scores)
            image = image["image"]
        rgb = to_rgb_tensor(image, timeout=timeout)
        height, width = rgb.shape[-2:]
        if boxes is not None:
            arr = _validate_boxes(boxes, width, height)
            if box_scores is None:
                scores = np.ones(len(arr))
            else:
                scores = np.asarray(box_scores, dtype=np.float64).reshape(-1)
                if scores.shape[0] != arr.shape[0]:
                    raise ValueError(f"{arr.shape[0]} boxes but {scores.shape[0]} box_scores")
        elif detector is not None or not whole_image:
            if detector is None:
                detector = self.default_detector()
            dets = detector(rgb_tensor_to_pil(rgb), score_threshold=detection_threshold, max_detections=max_persons)
            arr = np.asarray([d["bbox"] for d in dets], dtype=np.float64).reshape(-1, 4)
            scores = np.asarray([d["score"] for d in dets], dtype=np.float64)
            if len(arr) == 0:
                logger.info("the detector found no person")
        else:
            if not self._warned_whole_image:
                self._warned_whole_image = True
                logger.warning(
                    "whole_image=True: each image is taken as ONE person covering the whole frame (a crowd "
                    "becomes one person); for images of several people pass boxes=[[x, y, w, h], ...] or leave "
                    "the person detector on"
                )
            arr, scores = np.asarray([[0.0, 0.0, float(width), float(height)]]), np.ones(1)
        if max_persons is not None and len(arr) > max_persons:
            order = np.argsort(-scores, kind="stable")[:max_persons]
            arr, scores = arr[order], scores[order]
        out = {"boxes": arr, "box_scores": scores}
        if len(arr):
            inputs = self.image_processor.preprocess_rgb([rgb], boxes=[arr])
            out["pixel_values"] = inputs["pixel_values"]
        return out

    def _forward(self, model_inputs: dict, flip_test: bool = True, dataset_index: int | None = None, schema=None) -> dict:
        """Heatmaps `(N, K, h, w)` for all crops in `model_inputs["pixel_values"]`."""
        out = dict(model_inputs)
        sch = self.schema_for(dataset_index, schema)
        out["schema"] = sch
        pixel_values = model_inputs.get("pixel_values")
        if pixel_values is None or pixel_values.shape[0] == 0:
            out["heatmaps"] = None
            return out
        pixel_values = pixel_values.to(dtype=self.model.dtype)
        index = None
        if dataset_index is not None:
            index = torch.full((pixel_values.shape[0],), int(dataset_index), dtype=torch.long, device=pixel_values.device)
        heatmaps = self.image_processor.predict_heatmaps(
            self._inference_models.get(self.model), pixel_values, flip_test=flip_test, flip_pairs=list(sch.flip_pairs), dataset_index=index
        )
        out["heatmaps"] = heatmaps[:, : sch.num_keypoints].float()
        return out

    def postprocess(
        self, model_outputs: dict, keypoint_threshold: float | None = None, clamp_to_heatmap: bool = False
    ) -> list[dict]:
        """Heatmaps -> `[{"bbox", "box", "label", "score", "keypoints": [{"label", "x", "y", "score"}, ...]}, ...]`."""
        heatmaps = model_outputs.get("heatmaps")
        if heatmaps is None:
            return []
        sch: KeypointSchema = model_outputs["schema"]
        boxes = np.asarray(model_outputs["boxes"], dtype=np.float64)
        box_scores = np.asarray(model_outputs["box_scores"], dtype=np.float64)
        decoded = self.image_processor.post_process_pose_estimation(
            heatmaps, boxes=[boxes], clamp_to_heatmap=clamp_to_heatmap
        )[0]
        all_xy = [np.asarray(p["keypoints"].detach().cpu() if hasattr(p["keypoints"], "detach") else p["keypoints"]) for p in decoded]
        all_scores = np.stack([np.asarray(p["scores"].detach().cpu() if hasattr(p["scores"], "detach") else p["scores"]) for p in decoded])
        # ViTPose's rescoring: box score x mean of the keypoint scores above 0.2
        person_scores = rescore_scores(box_scores, all_scores, keypoint_threshold=0.2)
        results = []
        for xy, scores, box, person_score in zip(all_xy, all_scores, boxes, person_scores):
            keypoints = []
            for k, name in enumerate(sch.keypoints):
                if keypoint_threshold is not None and scores[k] < keypoint_threshold:
                    continue
                keypoints.append({"label": name, "x": float(xy[k, 0]), "y": float(xy[k, 1]), "score": float(scores[k])})
            x, y, w, h = (float(v) for v in box)
            results.append({
                "bbox": [x, y, w, h], "box": {"xmin": x, "ymin": y, "xmax": x + w, "ymax": y + h},
                "label": "person", "score": float(person_score), "keypoints": keypoints,
            })
        return results

    # ------------------------------------------------------------------------------ batching

    def __call__(self, inputs, *args, batch_size: int | None = None, **kwargs):
        """One image -> list of persons; a list of images -> list of lists (crops of `batch_size`
        images share one forward pass); a video file path (`.mp4`, `.avi`, `.mov`, `.mkv`, `.webm`...)
        -> a generator of per-frame records (see `video`)."""
        if is_video_path(inputs):
            return self.video(inputs, **kwargs)
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        if _is_datasets_dataset(inputs):
            # rows are dicts ({"image": ..., optional "boxes" / "box_scores"}): streamed like a
            # generator, so the result is an iterator, as for transformers' other vision pipelines
            inputs = (row for row in inputs)
        if not isinstance(inputs, list):
            if batch_size is not None and int(batch_size) > 1 \
                    and not isinstance(inputs, (str, os.PathLike, dict, bytes, bytearray, memoryview)) \
                    and hasattr(inputs, "__iter__") and not hasattr(inputs, "shape") and not hasattr(inputs, "size"):
                # a stream with batch_size: chunks of images share forward passes, results one per image
                return self._stream_in_chunks(inputs, int(batch_size), args, kwargs)
            return super().__call__(inputs, *args, **kwargs)
        if len(inputs) == 0:
            raise ValueError("got an empty list of images")
        boxes = kwargs.pop("boxes", None)
        box_scores = kwargs.pop("box_scores", None)
        for name, value in (("boxes", boxes), ("box_scores", box_scores)):
            if value is not None and len(value) != len(inputs):
                raise ValueError(f"{name} must hold one entry per image: {len(inputs)} images, {len(value)} entries")
        pre, fwd, post = self._sanitize_parameters(boxes=boxes, **kwargs)  # boxes: checked, then passed per image
        pre = {**self._preprocess_params, **pre}
        fwd = {**self._forward_params, **fwd}
        post = {**self._postprocess_params, **post}
        if "boxes" in self._preprocess_params and boxes is None:
            raise ValueError("with a list of images, pass `boxes` per call as one list per image")
        pre.pop("boxes", None)
        pre.pop("box_scores", None)
        step = int(batch_size or self._batch_size or DEFAULT_IMAGE_BATCH)
        if step < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        results: list[list[dict]] = []
        for start in range(0, len(inputs), step):
            chunk = []
            for i in range(start, min(start + step, len(inputs))):
                extra = {}
                if boxes is not None:
                    extra["boxes"] = boxes[i]
                if box_scores is not None:
                    extra["box_scores"] = box_scores[i]
                chunk.append(self.preprocess(inputs[i], **pre, **extra))
            counts = [len(item["boxes"]) for item in chunk]
            pixel_values = [item["pixel_values"] for item in chunk if "pixel_values" in item]
            merged = {"boxes": np.zeros((0, 4)), "box_scores": np.zeros(0)}
            if pixel_values:
                merged["pixel_values"] = torch.cat(pixel_values, dim=0)
            outputs = self.forward(merged, **fwd)
            offset = 0
            for item, n in zip(chunk, counts):
                part = dict(item)
                part["schema"] = outputs["schema"]
                part["heatmaps"] = None if n == 0 else outputs["heatmaps"][offset : offset + n]
                offset += n
                results.append(self.postprocess(part, **post))
        return results


    def video(self, source, fps: float | None = None, **kwargs):
        """Tracked (and smoothed) poses of a video, as a generator of one record per frame.

        `pipe("clip.mp4", ...)` calls this. Unlike the list returned for images, the result is a
        generator: frames are read, processed and yielded one at a time (bounded memory).

        Args:
            source: a video file, a folder of frames (with `fps`), a camera index, or an iterable
                of frames (see `vitpose_hf.video.iter_frames`).
            fps: frame rate (required for folders and plain image iterators).
            **kwargs: options of `vitpose_hf.video.VideoPoseEstimator` (`detector`,
                `detect_every`, `track`, `smooth`, `min_cutoff`, `beta`, `flip_test`,
                `dataset_index`, `detection_threshold`, `max_persons`, `keypoint_threshold`...; what the
                pipeline was built with applies unless given), `boxes=` (one list per frame, the
                detector is then not used) and `batch_size` (frames per forward pass).

        Yields:
            `{"frame": int, "timestamp": float (s), "persons": [person, ...]}` where each person
            is in this pipeline's format plus `"track_id"` (when tracking, the default).
        """
        boxes = kwargs.pop("boxes", None)
        if "batch_size" in kwargs:  # frames whose crops share a forward pass
            kwargs["frame_batch"] = kwargs.pop("batch_size")
        unknown = sorted(set(kwargs) - VIDEO_OPTIONS)
        if unknown:
            raise ValueError(f"unknown arguments for a video: {unknown} (video options: {sorted(VIDEO_OPTIONS)})")
        estimator = VideoPoseEstimator(self, **kwargs)
        return (frame.to_record() for frame in estimator(source, fps=fps, boxes=boxes))


def _chunks(items, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _is_datasets_dataset(value) -> bool:
    """A `datasets.Dataset` / `IterableDataset` (checked without importing datasets)."""
    module = type(value).__module__ or ""
    return module.startswith("datasets.") and type(value).__name__ in ("Dataset", "IterableDataset")


def _check_pose_model(model) -> None:
    """A ValueError when the pipeline is built for a model that is not a top-down pose estimator
    (e.g. SuperPoint, which transformers also tags "keypoint-detection")."""
    if isinstance(model, OnnxPoseModel):
        return
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in ("vitpose_hf", "vitpose"):
        return
    raise ValueError(
        f"the keypoint-detection pipeline of vitpose_hf runs top-down pose estimators (ViTPose: model_type "
        f"'vitpose_hf' or 'vitpose', or a vitpose_hf ONNX export); got {type(model).__name__} with model_type "
        f"{model_type!r}. Interest-point models such as SuperPoint share the Hub tag but not the task: use "
        "their transformers classes directly"
    )


def register_pipeline() -> None:
    """Register "keypoint-detection" with transformers' pipeline registry (idempotent).

    The factory tries the model classes in order: `OnnxPoseModel` first (it accepts only a local
    folder written by `vitpose_hf.export.export_onnx` and raises OSError at once for anything else,
    so `pipeline("keypoint-detection", model=EXPORT_DIR)` runs the graph with onnxruntime), then
    the PyTorch classes.
    """
    current = PIPELINE_REGISTRY.supported_tasks.get(TASK)
    if current is not None and current.get("impl") is KeypointDetectionPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(
        TASK,
        pipeline_class=KeypointDetectionPipeline,
        pt_model=(OnnxPoseModel, VitPoseForPoseEstimation, AutoModelForPoseEstimation),
        type="image",
    )
