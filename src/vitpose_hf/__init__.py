"""vitpose_hf: ViTPose and ViTPose++ for the Hugging Face stack.

Importing the package registers the model with transformers' Auto classes (`AutoConfig`,
`AutoModel`, `AutoModelForPoseEstimation`, `AutoImageProcessor`) and the "keypoint-detection"
pipeline. Registration is idempotent.
"""

from .version import __version__
from .configuration_vitpose import VitPoseConfig
from .modeling_vitpose import (
    VitPoseEstimatorOutput,
    VitPoseForPoseEstimation,
    VitPoseModel,
    VitPoseModelOutput,
    VitPosePreTrainedModel,
    UnreadableWeightsError,
    resample_position_embeddings,
)
from .heatmaps import decode_heatmaps, flip_heatmaps, predict_heatmaps
from .losses import joints_mse_loss
from .inference import inference_model, optimize_for_inference
from .modeling_vitpose_mae import (
    VitPoseForMaskedImageModeling,
    VitPoseMaskedImageModelingOutput,
    load_mae_checkpoint_into_backbone,
)
from .image_processing_vitpose import VitPoseImageProcessor, VitPoseTopDownImageProcessor
from .keypoint_schemas import KeypointSchema, get_schema, resolve_schema
from .registration import register

register()

__all__ = [
    "__version__",
    "VitPoseConfig",
    "VitPoseModel",
    "VitPoseForPoseEstimation",
    "VitPosePreTrainedModel",
    "VitPoseModelOutput",
    "VitPoseEstimatorOutput",
    "UnreadableWeightsError",
    "flip_heatmaps",
    "decode_heatmaps",
    "predict_heatmaps",
    "joints_mse_loss",
    "resample_position_embeddings",
    "optimize_for_inference",
    "inference_model",
    "VitPoseForMaskedImageModeling",
    "VitPoseMaskedImageModelingOutput",
    "load_mae_checkpoint_into_backbone",
    "VitPoseTopDownImageProcessor",
    "VitPoseImageProcessor",
    "KeypointSchema",
    "get_schema",
    "resolve_schema",
    "register",
]
