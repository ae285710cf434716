"""Configuration of ViTPose / ViTPose++ models.

One flat config holds the backbone and the head (``hidden_size``, ``num_hidden_layers``, ... at the
top level, like ``ViTConfig``). Configs written by transformers' own VitPose (``model_type
"vitpose"`` with a nested ``backbone_config``) are read too: their fields are lifted to the top
level, with transformers' defaults for whatever that file left out, so that
``VitPoseForPoseEstimation.from_pretrained`` loads such a checkpoint with no conversion step.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any

from transformers import PretrainedConfig

from .keypoint_schemas import COCO

logger = logging.getLogger(__name__)

MODEL_TYPE = "vitpose_hf"

COCO_KEYPOINT_NAMES = COCO.keypoints

# Defaults of transformers' VitPoseBackboneConfig / VitPoseConfig. A config.json written by
# transformers only stores values that differ from these, so they fill the gaps when we read one.
TRANSFORMERS_BACKBONE_DEFAULTS: dict[str, Any] = {
    "image_size": [256, 192],
    "patch_size": [16, 16],
    "num_channels": 3,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "mlp_ratio": 4,
    "num_experts": 1,
    "part_features": 256,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "qkv_bias": True,
}
# `PretrainedConfig`'s num_labels when a config.json names none (transformers omits default values)
TRANSFORMERS_DEFAULT_NUM_LABELS = 2
TRANSFORMERS_POSE_DEFAULTS: dict[str, Any] = {"scale_factor": 4, "use_simple_decoder": True}

# name -> (hidden_size, num_hidden_layers, num_attention_heads, drop_path_rate, layer_decay_rate)
# S/B/L/H from the official configs; G is ours (see docs/model.md): ViT-g/14 widths (1408 wide,
# 40 deep, 16 heads, mlp 4x ~ 1.0B parameters) with patch 16 so the 1/16 grid of the paper holds.
PRESETS: dict[str, tuple[int, int, int, float, float]] = {
    "small": (384, 12, 12, 0.1, 0.8),
    "base": (768, 12, 12, 0.3, 0.75),
    "large": (1024, 24, 16, 0.5, 0.8),
    "huge": (1280, 32, 16, 0.55, 0.85),
    "giant": (1408, 40, 16, 0.6, 0.9),
}
PRESET_ALIASES = {"s": "small", "b": "base", "l": "large", "h": "huge", "g": "giant"}

ATTENTION_TYPES = ("global", "window", "shifted_window", "pooled_window")


def _pair(value: Any, name: str) -> tuple[int, int]:
    if _is_int(value) or (isinstance(value, float) and value.is_integer()):
        return (int(value), int(value))
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return (_int_field(value[0], name), _int_field(value[1], name))


def _is_int(value: Any) -> bool:
    """An integer that is not a bool (JSON and Python ints; numpy integers)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _int_field(value: Any, name: str) -> int:
    """`value` as an int, or a ValueError naming `name`: ints and integral floats (`32.0`) pass, a
    fraction (`32.5`), a bool, a string or None do not (a silent `int(32.5) == 32` would build
    another model than the one asked for)."""
    if _is_int(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"{name} must be an integer, got {value!r}")


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _float_field(value: Any, name: str) -> float:
    """`value` as a float, or a ValueError naming `name` (strings, None and bools are refused)."""
    if not _is_real(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _resolve_patch_padding(patch_size: list[int], patch_stride: list[int] | None, padding: int | None) -> int:
    """Padding of the patch conv: official 2 for non-overlapping patches; for a smaller stride the
    padding that makes the grid exactly `image_size / stride` (kernel centred on each stride cell)."""
    if padding is not None:
        padding = _int_field(padding, "patch_padding")
        if padding < 0:
            raise ValueError(f"patch_padding must be >= 0, got {padding}")
    if patch_stride is None or list(patch_stride) == list(patch_size):
        return 2 if padding is None else padding
    if min(patch_stride) <= 0:
        raise ValueError(f"patch_stride must be positive, got {list(patch_stride)}")
    if padding is None:
        return max(0, max(math.ceil((k - s) / 2) for k, s in zip(patch_size, patch_stride)))
    for k, s in zip(patch_size, patch_stride):
        if not k - s <= 2 * padding < k:
            raise ValueError(
                f"patch_padding {padding} with patch_size {k} and patch_stride {s} does not give an "
                f"image_size / {s} grid; use a padding p with {k - s} <= 2p < {k} (e.g. {math.ceil((k - s) / 2)})"
            )
    return padding


def _copy_dataset_heads(dataset_heads: Any) -> list:
    """A copy of `dataset_heads` (each dict copied); entries that are not dicts are kept for `validate`
    to name, anything but a list is a ValueError."""
    if not dataset_heads:
        return []
    if isinstance(dataset_heads, (str, bytes, dict)) or not isinstance(dataset_heads, (list, tuple)):
        raise ValueError(f"dataset_heads must be a list of dicts, got {dataset_heads!r}")
    return [dict(h) if isinstance(h, dict) else h for h in dataset_heads]


def _positive_ints(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_activation(name: Any) -> None:
    """`hidden_act` must name one of transformers' activations (an unknown one would be a KeyError
    deep in the model's constructor)."""
    from transformers.activations import ACT2CLS

    if not isinstance(name, str) or name not in ACT2CLS:
        raise ValueError(f"hidden_act must be one of {sorted(ACT2CLS)}, got {name!r}")


class VitPoseConfig(PretrainedConfig):
    r"""Configuration of a ViTPose model (backbone + heatmap head).

    The defaults reproduce the official ViTPose-B (256x192 input, patch 16 with padding 2, 768 wide,
    12 layers, 12 heads, LayerNorm eps 1e-6, classic deconvolution head, 17 COCO keypoints).

    Args:
        image_size (`int` or `(int, int)`, defaults to `(256, 192)`): input (height, width) the
            position embeddings were trained for; other multiples of the patch size also run.
        patch_size (`int` or `(int, int)`, defaults to 16): patch kernel size.
        patch_stride (`int` or `(int, int)`, *optional*): patch stride, defaults to `patch_size`;
            8 gives the paper's 1/8 feature resolution.
        patch_padding (`int`, *optional*): padding of the patch convolution. Default: 2 (official)
            when the stride equals the patch size, else `ceil((patch - stride) / 2)` (4 for patch 16,
            stride 8), the value for which the grid is exactly `image_size / stride`; with another
            stride, a padding outside `patch - stride <= 2 * padding < patch` is a ValueError.
        num_channels (`int`, defaults to 3): input channels.
        hidden_size (`int`, defaults to 768), num_hidden_layers (`int`, defaults to 12),
        num_attention_heads (`int`, defaults to 12), mlp_ratio (`float`, defaults to 4): ViT sizes.
        hidden_act (`str`, defaults to `"gelu"`): MLP activation.
        hidden_dropout_prob, attention_probs_dropout_prob (`float`, defaults to 0): dropout.
        drop_path_rate (`float`, defaults to 0.3): stochastic depth, linear from 0 to this value.
        layer_norm_eps (`float`, defaults to 1e-6): LayerNorm epsilon (official value).
        qkv_bias (`bool`, defaults to True): bias of the query/key/value projections.
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal init.
        num_experts (`int`, defaults to 1): ViTPose++ MoE experts (1 = plain MLP).
        part_features (`int`, *optional*): width of each expert's output; defaults to
            `hidden_size // 4` (the released ViTPose++-S uses 96 = 384 // 4).
        use_simple_decoder (`bool`, *optional*, defaults to False): simple head (ReLU, bilinear x`scale_factor`,
            3x3 conv) instead of the classic one (2 deconvs + BN + ReLU, 1x1 conv).
        scale_factor (`int`, defaults to 4): upsampling of the simple head.
        decoder_hidden_size (`int`, defaults to 256): channels of the classic head's deconvs.
        num_deconv_layers (`int`, defaults to 2): deconvolutions of the classic head (1 for 1/8 features).
        num_labels / id2label: keypoints of the main head (COCO-17 by default).
        dataset_heads (`list[dict]`, *optional*): extra heads of a multi-dataset model; each entry is
            `{"dataset_index": int, "num_labels": int, "name": str}` and optionally `"id2label"`.
            The main head serves `dataset_index` 0 (`main_dataset_index`).
        attention_type (`str` or list of `str`, defaults to `"global"`): attention of each layer:
            `"global"`, `"window"`, `"shifted_window"` or `"pooled_window"` (one value for all or one
            per layer); `global_attention_layers` forces some layers back to global.
        window_size (`int` or `(int, int)`, defaults to `(8, 6)`): window of windowed attention.
        num_knowledge_tokens (`int`, defaults to 0): learned tokens prepended to the patch tokens
            (knowledge-token distillation).
        edges (`list[list[int]]`, *optional*): skeleton of the main schema, kept for display.
        check_finite_inputs (`bool`, defaults to True): in an eager forward in eval mode,
            `pixel_values` holding NaN or inf raise a `ValueError` (one `isfinite` pass, small next to
            the forward, see docs/performance.md; a host sync on an accelerator). Never checked in training
            mode (the data loader validates its data) nor under torch.compile / torch.export / ONNX
            export, where the graph must not read values. The image processor and the pipeline
            refuse non-finite images themselves. Set False to skip it.

    Every field is validated on construction, after `from_dict` / `from_pretrained` and before
    `save_pretrained`: a bad value (non-positive size, `hidden_size` not divisible by the heads,
    rates outside [0, 1), an `image_size` the patch grid cannot tile, inconsistent `dataset_heads`,
    ...) is a `ValueError` naming the field and the value.
    """

    model_type = MODEL_TYPE

    def __init__(
        self,
        image_size: int | tuple[int, int] = (256, 192),
        patch_size: int | tuple[int, int] = 16,
        patch_stride: int | tuple[int, int] | None = None,
        patch_padding: int | None = None,
        num_channels: int = 3,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        mlp_ratio: float = 4,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        drop_path_rate: float = 0.3,
        layer_norm_eps: float = 1e-6,
        qkv_bias: bool = True,
        initializer_range: float = 0.02,
        num_experts: int = 1,
        part_features: int | None = None,
        use_simple_decoder: bool | None = None,
        scale_factor: int = 4,
        decoder_hidden_size: int = 256,
        num_deconv_layers: int = 2,
        main_dataset_index: int = 0,
        dataset_heads: list[dict] | None = None,
        attention_type: str | list[str] = "global",
        window_size: int | tuple[int, int] = (8, 6),
        global_attention_layers: list[int] | None = None,
        num_knowledge_tokens: int = 0,
        edges: list[list[int]] | None = None,
        keypoint_schema: str | None = None,
        check_finite_inputs: bool = True,
        **kwargs,
    ):
        # A config written by transformers' VitPose: lift backbone_config to the top level.
        backbone_config = kwargs.pop("backbone_config", None)
        incoming_type = kwargs.pop("model_type", None)
        from_transformers = backbone_config is not None or incoming_type == "vitpose"
        if from_transformers:
            lifted = dict(TRANSFORMERS_BACKBONE_DEFAULTS)
            if backbone_config is not None:
                if not isinstance(backbone_config, dict):
                    backbone_config = backbone_config.to_dict()
                lifted.update({k: v for k, v in backbone_config.items() if k in TRANSFORMERS_BACKBONE_DEFAULTS})
            image_size = lifted["image_size"]
            patch_size = lifted["patch_size"]
            num_channels = lifted["num_channels"]
            hidden_size = lifted["hidden_size"]
            num_hidden_layers = lifted["num_hidden_layers"]
            num_attention_heads = lifted["num_attention_heads"]
            mlp_ratio = lifted["mlp_ratio"]
            num_experts = lifted["num_experts"]
            part_features = lifted["part_features"]
            hidden_act = lifted["hidden_act"]
            hidden_dropout_prob = lifted["hidden_dropout_prob"]
            attention_probs_dropout_prob = lifted["attention_probs_dropout_prob"]
            layer_norm_eps = lifted["layer_norm_eps"]
            qkv_bias = lifted["qkv_bias"]
            # transformers' pose config: use_simple_decoder defaults to True there (ours: False).
            if use_simple_decoder is None:
                use_simple_decoder = TRANSFORMERS_POSE_DEFAULTS["use_simple_decoder"]
            drop_path_rate = 0.0
            kwargs.pop("backbone", None)
            kwargs.pop("use_pretrained_backbone", None)
            kwargs.pop("use_timm_backbone", None)
            kwargs.pop("backbone_kwargs", None)

        self.image_size = list(_pair(image_size, "image_size"))
        self.patch_size = list(_pair(patch_size, "patch_size"))
        if min(self.patch_size) <= 0:
            raise ValueError(f"patch_size must be positive, got {self.patch_size}")
        self.patch_stride = list(_pair(patch_stride, "patch_stride")) if patch_stride is not None else None
        self.patch_padding = _resolve_patch_padding(self.patch_size, self.patch_stride, patch_padding)
        self.num_channels = _int_field(num_channels, "num_channels")
        self.hidden_size = _int_field(hidden_size, "hidden_size")
        self.num_hidden_layers = _int_field(num_hidden_layers, "num_hidden_layers")
        self.num_attention_heads = _int_field(num_attention_heads, "num_attention_heads")
        self.mlp_ratio = mlp_ratio
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = _float_field(hidden_dropout_prob, "hidden_dropout_prob")
        self.attention_probs_dropout_prob = _float_field(attention_probs_dropout_prob, "attention_probs_dropout_prob")
        self.drop_path_rate = _float_field(drop_path_rate, "drop_path_rate")
        self.layer_norm_eps = _float_field(layer_norm_eps, "layer_norm_eps")
        self.qkv_bias = bool(qkv_bias)
        self.initializer_range = _float_field(initializer_range, "initializer_range")
        self.num_experts = _int_field(num_experts, "num_experts")
        self.part_features = (
            _int_field(part_features, "part_features") if part_features is not None else self.hidden_size // 4
        )
        self.use_simple_decoder = bool(use_simple_decoder) if use_simple_decoder is not None else False
        self.scale_factor = _int_field(scale_factor, "scale_factor")
        self.decoder_hidden_size = _int_field(decoder_hidden_size, "decoder_hidden_size")
        self.num_deconv_layers = _int_field(num_deconv_layers, "num_deconv_layers")
        self.main_dataset_index = _int_field(main_dataset_index, "main_dataset_index")
        self.dataset_heads = _copy_dataset_heads(dataset_heads)
        self.attention_type = attention_type
        self.window_size = list(_pair(window_size, "window_size"))
        self.global_attention_layers = list(global_attention_layers) if global_attention_layers else []
        self.num_knowledge_tokens = _int_field(num_knowledge_tokens, "num_knowledge_tokens")
        self.edges = edges
        self.keypoint_schema = keypoint_schema
        self.check_finite_inputs = bool(check_finite_inputs)

        if "id2label" not in kwargs and "num_labels" not in kwargs:
            if from_transformers:
                # transformers leaves a default label count out of config.json: its default is 2
                kwargs["num_labels"] = TRANSFORMERS_DEFAULT_NUM_LABELS
            else:
                kwargs["id2label"] = dict(enumerate(COCO_KEYPOINT_NAMES))
        super().__init__(**kwargs)
        if self.id2label is not None and not self.label2id:
            self.label2id = {name: int(idx) for idx, name in self.id2label.items()}
        self.validate()

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        """`PretrainedConfig.get_config_dict`, with transformers' `model_type "vitpose"` files marked as
        ours (their `backbone_config` is lifted in `__init__`), so loading them logs no type warning."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") == "vitpose":
            logger.info(
                "%s is a transformers VitPose checkpoint (model_type 'vitpose'): reading it as vitpose_hf's "
                "VitPoseConfig (backbone_config lifted to the top level; the weights load under the same names)",
                pretrained_model_name_or_path,
            )
            config_dict = dict(config_dict)
            config_dict["model_type"] = MODEL_TYPE
            config_dict.setdefault("backbone_config", {})
        return config_dict, kwargs

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs):
        """`PretrainedConfig.from_dict`, validated again after transformers applies the keyword overrides
        (`from_pretrained(dir, hidden_size=...)` sets them on the built config, past `__init__`)."""
        result = super().from_dict(config_dict, **kwargs)
        config = result[0] if isinstance(result, tuple) else result
        config.validate()
        return result

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check every field; a `ValueError` names the first bad field and its value.

        Runs on construction, after `from_dict` / `from_pretrained` (a hand-edited config.json, or
        keyword overrides) and before `save_pretrained` writes the file.
        """
        _positive_ints(self, "hidden_size", "num_hidden_layers", "num_attention_heads", "num_channels",
                       "num_experts", "scale_factor", "decoder_hidden_size")
        if not _is_int(self.num_knowledge_tokens) or self.num_knowledge_tokens < 0:
            raise ValueError(f"num_knowledge_tokens must be an integer >= 0, got {self.num_knowledge_tokens!r}")
        if not _is_int(self.main_dataset_index) or self.main_dataset_index < 0:
            raise ValueError(f"main_dataset_index must be an integer >= 0, got {self.main_dataset_index!r}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if not _is_real(self.mlp_ratio) or not math.isfinite(self.mlp_ratio) or self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be a finite number > 0, got {self.mlp_ratio!r}")
        if int(self.hidden_size * self.mlp_ratio) < 1:
            raise ValueError(
                f"mlp_ratio {self.mlp_ratio} gives an MLP of width {int(self.hidden_size * self.mlp_ratio)} "
                f"for hidden_size {self.hidden_size}; it must be at least 1"
            )
        num_labels = self.num_labels
        if num_labels is None or num_labels < 1:
            raise ValueError(f"num_labels (keypoints of the main head) must be >= 1, got {num_labels!r}")
        for name in ("image_size", "patch_size", "window_size"):
            value = getattr(self, name)
            if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) and v > 0 for v in value)):
                raise ValueError(f"{name} must be two positive integers (height, width), got {value!r}")
        stride = self.effective_patch_stride
        if min(stride) <= 0:
            raise ValueError(f"patch_stride must be positive, got {self.patch_stride!r}")
        if not _is_int(self.patch_padding) or self.patch_padding < 0:
            raise ValueError(f"patch_padding must be an integer >= 0, got {self.patch_padding!r}")
        height, width = self.image_size
        if height % stride[0] or width % stride[1] or height < self.patch_size[0] or width < self.patch_size[1]:
            # the forward refuses any other input size, so the position embeddings would fit no input
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of the patch stride {list(stride)} and at "
                f"least one patch {self.patch_size}"
            )
        if self.num_experts > 1 and not (_is_int(self.part_features) and 0 < self.part_features < self.hidden_size):
            raise ValueError(
                f"part_features ({self.part_features}) must be in (0, hidden_size={self.hidden_size})"
            )
        for name in ("drop_path_rate", "hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value < 1.0:  # NaN fails the comparison too
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if not _is_real(self.layer_norm_eps) or not 0.0 < self.layer_norm_eps < math.inf:
            raise ValueError(f"layer_norm_eps must be a finite number > 0, got {self.layer_norm_eps!r}")
        if not _is_real(self.initializer_range) or not 0.0 <= self.initializer_range < math.inf:
            raise ValueError(f"initializer_range must be a finite number >= 0, got {self.initializer_range!r}")
        if not self.use_simple_decoder and self.num_deconv_layers not in (1, 2):
            raise ValueError(f"num_deconv_layers must be 1 or 2 (classic head), got {self.num_deconv_layers!r}")
        _check_activation(self.hidden_act)
        types = self.layer_attention_types()
        for t in types:
            if t not in ATTENTION_TYPES:
                raise ValueError(f"attention_type {t!r} is not one of {ATTENTION_TYPES}")
        for i in self.global_attention_layers:
            if not _is_int(i) or not 0 <= i < self.num_hidden_layers:
                raise ValueError(f"global_attention_layers has {i!r}, outside [0, {self.num_hidden_layers})")
        seen = {self.main_dataset_index}
        for position, head in enumerate(self.dataset_heads):
            where = f"dataset_heads[{position}]"
            if not isinstance(head, dict) or "dataset_index" not in head or "num_labels" not in head:
                raise ValueError(f"each dataset_heads entry needs dataset_index and num_labels, got {where} = {head!r}")
            index, labels = head["dataset_index"], head["num_labels"]
            if not _is_int(index) or index < 0:
                raise ValueError(f"{where}: dataset_index must be an integer >= 0, got {index!r}")
            if not _is_int(labels) or labels < 1:
                raise ValueError(f"{where} (dataset_index {index}): num_labels must be an integer >= 1, got {labels!r}")
            names = head.get("id2label")
            if names is not None and (not isinstance(names, dict) or len(names) != labels):
                count = len(names) if isinstance(names, dict) else type(names).__name__
                raise ValueError(
                    f"{where} (dataset_index {index}): id2label has {count} entries for num_labels {labels}"
                )
            if "name" in head and not isinstance(head["name"], str):
                raise ValueError(f"{where} (dataset_index {index}): name must be a string, got {head['name']!r}")
            if index in seen:
                raise ValueError(f"dataset_index {index} has two heads")
            seen.add(index)

    # ------------------------------------------------------------------ helpers
    @property
    def effective_patch_stride(self) -> list[int]:
        """Stride of the patch embedding ((h, w)), `patch_size` unless `patch_stride` is set."""
        return list(_pair(self.patch_stride, "patch_stride")) if self.patch_stride is not None else self.patch_size

    def layer_attention_types(self) -> list[str]:
        """Attention kind of every layer, after `global_attention_layers` overrides."""
        if isinstance(self.attention_type, str):
            types = [self.attention_type] * self.num_hidden_layers
        else:
            types = list(self.attention_type)
            if len(types) != self.num_hidden_layers:
                raise ValueError(
                    f"attention_type has {len(types)} entries for {self.num_hidden_layers} layers"
                )
        for i in self.global_attention_layers:
            if 0 <= i < len(types):
                types[i] = "global"
        return types

    def head_specs(self) -> list[dict]:
        """All heads: the main one first, then `dataset_heads`; each `{dataset_index, num_labels, name}`."""
        main = {"dataset_index": self.main_dataset_index, "num_labels": self.num_labels, "name": "main"}
        return [main] + [dict(h) for h in self.dataset_heads]

    @property
    def num_datasets(self) -> int:
        """Largest dataset index any part of the model can serve, plus one."""
        indices = [h["dataset_index"] for h in self.head_specs()]
        return max([self.num_experts] + [i + 1 for i in indices])

    def transformers_incompatibilities(self) -> list[str]:
        """The features of this model that transformers' own VitPose lacks (empty: exportable)."""
        problems = []
        if self.patch_stride not in (None, self.patch_size):
            problems.append(f"patch stride {self.patch_stride} (transformers: the patch size)")
        if self.patch_padding != 2:
            problems.append(f"patch padding {self.patch_padding} (transformers: 2)")
        if self.dataset_heads:
            problems.append(f"{len(self.dataset_heads)} extra dataset heads")
        windowed = [i for i, t in enumerate(self.layer_attention_types()) if t != "global"]
        if windowed:
            problems.append(f"windowed attention in layers {windowed}")
        if self.num_knowledge_tokens:
            problems.append(f"{self.num_knowledge_tokens} knowledge tokens")
        if not self.use_simple_decoder and self.decoder_hidden_size != 256:
            problems.append(f"classic head width {self.decoder_hidden_size} (transformers: 256)")
        if not self.use_simple_decoder and self.num_deconv_layers != 2:
            problems.append(f"{self.num_deconv_layers} deconvolution(s) in the classic head (transformers: 2)")
        if self.main_dataset_index != 0:
            problems.append(f"main head for dataset index {self.main_dataset_index} (transformers: 0)")
        return problems

    def uses_only_transformers_features(self) -> bool:
        """True when transformers' own VitPose can represent this model (for export)."""
        return not self.transformers_incompatibilities()

    @classmethod
    def from_preset(cls, name: str, feature_stride: int = 16, **kwargs) -> "VitPoseConfig":
        """Config of a named model size.

        Args:
            name: `"small"`, `"base"`, `"large"`, `"huge"` or `"giant"` (or `s/b/l/h/g`), optionally
                with `vitpose`, `simple` (simple decoder) and `plus`/`++` (ViTPose++ MoE with 6
                experts) around it: `"vitpose-b-simple"`, `"vitpose++-l"`, `"s-plus"`.
            feature_stride: 16 (default) or 8 for the paper's 1/8 feature resolution: patch stride 8
                (padding 4) with one deconvolution in the classic head or `scale_factor=2` in the
                simple head, so heatmaps stay at 1/4 of the input.
            kwargs: any other config field, overriding the preset.
        """
        key = str(name).lower()
        simple = "simple" in key
        plus = "++" in key or "plus" in key
        for token in ("vitpose", "simple", "plus", "+", "-", "_", " "):
            key = key.replace(token, "")
        key = PRESET_ALIASES.get(key, key)
        if key not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)} (or s/b/l/h/g)")
        hidden, depth, heads, dpr, _ = PRESETS[key]
        values: dict[str, Any] = dict(
            hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=heads, drop_path_rate=dpr,
            use_simple_decoder=simple,
        )
        if plus:
            values.update(num_experts=6, part_features=hidden // 4)
        if feature_stride == 8:
            values.update(patch_stride=8)
            values.update({"scale_factor": 2} if simple else {"num_deconv_layers": 1})
        elif feature_stride != 16:
            raise ValueError(f"feature_stride must be 16 or 8, got {feature_stride!r}")
        values.update(kwargs)
        return cls(**values)

    def layer_decay_rate(self) -> float:
        """Official layer-wise lr decay rate for this width (0.75 for B, 0.8 for S/L, ...)."""
        for hidden, depth, _, _, rate in PRESETS.values():
            if hidden == self.hidden_size and depth == self.num_hidden_layers:
                return rate
        return 0.75

    def to_transformers_dict(self) -> dict[str, Any]:
        """This config in transformers' VitPose layout (`model_type "vitpose"` + `backbone_config`)."""
        problems = self.transformers_incompatibilities()
        if problems:
            raise ValueError(
                f"this model uses features transformers' VitPose lacks: {'; '.join(problems)}; "
                "it cannot be exported to the transformers format"
            )
        mlp_ratio = float(self.mlp_ratio)
        if not mlp_ratio.is_integer():
            raise ValueError(f"transformers' VitPose needs an integer mlp_ratio, this model has {self.mlp_ratio}")
        if min(self.patch_size) <= 2 * self.patch_padding:
            # transformers derives the grid as image_size // patch_size, which only equals the padded
            # convolution's grid when the patch is larger than the total padding.
            raise ValueError(
                f"patch_size {self.patch_size} must exceed twice the padding ({self.patch_padding}) to export"
            )
        backbone = {
            "model_type": "vitpose_backbone",
            "image_size": list(self.image_size),
            "patch_size": list(self.patch_size),
            "num_channels": self.num_channels,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "mlp_ratio": int(mlp_ratio),
            "num_experts": self.num_experts,
            "part_features": self.part_features,
            "hidden_act": self.hidden_act,
            "hidden_dropout_prob": self.hidden_dropout_prob,
            "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
            "layer_norm_eps": self.layer_norm_eps,
            "qkv_bias": self.qkv_bias,
            "initializer_range": self.initializer_range,
            "out_indices": [self.num_hidden_layers],
        }
        return {
            "model_type": "vitpose",
            "architectures": ["VitPoseForPoseEstimation"],
            "backbone_config": backbone,
            "use_simple_decoder": self.use_simple_decoder,
            "scale_factor": self.scale_factor,
            "initializer_range": self.initializer_range,
            "id2label": {str(k): v for k, v in self.id2label.items()},
            "label2id": {v: int(k) for k, v in self.id2label.items()},
            "edges": self.edges,
        }


# transformers' custom-code saving: `save_pretrained` copies this module beside config.json and
# names the class under `auto_map["AutoConfig"]`
VitPoseConfig.register_for_auto_class()
