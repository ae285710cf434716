"""Idempotent registration of vitpose_hf with transformers' Auto classes and pipelines."""

from __future__ import annotations

import inspect
import logging

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForMaskedImageModeling,
    AutoModelForPoseEstimation,
)
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING

from .configuration_vitpose import MODEL_TYPE, VitPoseConfig
from .image_processing_vitpose import VitPoseTopDownImageProcessor
from .modeling_vitpose import VitPoseForPoseEstimation, VitPoseModel
from .modeling_vitpose_mae import VitPoseForMaskedImageModeling
from .pipeline_keypoint_detection import register_pipeline

logger = logging.getLogger(__name__)
_DONE: set[str] = set()


def register() -> None:
    """Register `VitPoseConfig`, the models (incl. `AutoModelForMaskedImageModeling`), the image
    processor and the "keypoint-detection" pipeline with transformers.

    Safe to call many times; a registration transformers already holds for our model type is kept.
    """
    if "auto" not in _DONE:
        for fn in (
            lambda: AutoConfig.register(MODEL_TYPE, VitPoseConfig, exist_ok=True),
            lambda: AutoModel.register(VitPoseConfig, VitPoseModel, exist_ok=True),
            lambda: AutoModelForPoseEstimation.register(VitPoseConfig, VitPoseForPoseEstimation, exist_ok=True),
            lambda: AutoModelForMaskedImageModeling.register(VitPoseConfig, VitPoseForMaskedImageModeling, exist_ok=True),
        ):
            try:
                fn()
            except ValueError as err:  # already registered by an earlier import
                logger.debug("registration skipped: %s", err)
        _DONE.add("auto")
    if "image_processor" not in _DONE:
        _register_image_processor(VitPoseConfig, VitPoseTopDownImageProcessor)
        _DONE.add("image_processor")
    if "pipeline" not in _DONE:
        register_pipeline()
        _DONE.add("pipeline")


def _register_image_processor(config_class, processor_class) -> None:
    """Map `config_class` to `processor_class` in `AutoImageProcessor` (the "pil" entry, the only one,
    so a request for any backend falls back to it).

    Not through `AutoImageProcessor.register` on transformers with backend dicts (5.x): our config
    class shares the name `VitPoseConfig` with transformers' own, which its mapping matches by class
    name, so `register` first loads transformers' VitPose processors to merge our entry into theirs.
    That load warns (once per process) when torchvision is missing, and the merge would map our
    config's "torchvision" backend to transformers' `VitPoseImageProcessor`. Writing our entry into
    the mapping directly (the last step of `register`) does neither, so no logger needs silencing
    and the warning stays for the user's own use of transformers' class.
    """
    if "image_processor_classes" in inspect.signature(AutoImageProcessor.register).parameters:
        IMAGE_PROCESSOR_MAPPING.register(config_class, {"pil": processor_class}, exist_ok=True)
    else:  # transformers 5.0 to 5.x before the image_processor_classes argument (checked on 5.0.0)
        AutoImageProcessor.register(config_class, slow_image_processor_class=processor_class, exist_ok=True)
