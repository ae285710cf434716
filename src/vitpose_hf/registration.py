"""Idempotent registration of vitpose_hf with transformers' Auto classes and pipelines."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)
_DONE: set[str] = set()


def register() -> None:
    """Register `VitPoseConfig` / models with the Auto classes (incl. `AutoModelForMaskedImageModeling`) (and the pipeline, when present).

    Safe to call many times; a registration transformers already holds for our model type is kept.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedImageModeling, AutoModelForPoseEstimation

    from .configuration_vitpose import MODEL_TYPE, VitPoseConfig
    from .modeling_vitpose import VitPoseForPoseEstimation, VitPoseModel
    from .modeling_vitpose_mae import VitPoseForMaskedImageModeling

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
        from transformers import AutoImageProcessor

        from .image_processing_vitpose import VitPoseTopDownImageProcessor

        # registering walks transformers' own mapping, whose VitPose entry warns that torchvision is
        # missing: not our concern, so that logger is quietened for the duration of the call
        quiet = logging.getLogger("transformers.utils.import_utils")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            AutoImageProcessor.register(VitPoseConfig, image_processor_classes={"pil": VitPoseTopDownImageProcessor}, exist_ok=True)
        except TypeError:  # transformers 5.0 to 5.x before the image_processor_classes argument
            AutoImageProcessor.register(VitPoseConfig, slow_image_processor_class=VitPoseTopDownImageProcessor, exist_ok=True)
        finally:
            quiet.setLevel(level)
        _DONE.add("image_processor")
    if "pipeline" not in _DONE:
        try:
            from .pipeline_keypoint_detection import register_pipeline
        except ImportError:
            return
        register_pipeline()
        _DONE.add("pipeline")
