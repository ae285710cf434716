"""ONNX export of ViTPose models (torch.onnx's dynamo exporter), optional int8 dynamic quantization.

```python
from vitpose_hf import VitPoseForPoseEstimation
from vitpose_hf.export import export_onnx

model = VitPoseForPoseEstimation.from_pretrained("my-vitpose")
export_onnx(model, "my-vitpose-onnx", quantize="int8")
```

writes a directory that `vitpose_hf.onnx_backend.OnnxPoseModel`, the "keypoint-detection" pipeline,
`vitpose-hf predict` and `vitpose-hf evaluate` read:

| file | what |
|---|---|
| `model.onnx` | the graph; self-contained while the weights are under `EXTERNAL_DATA_THRESHOLD` |
| `model.onnx.data` | the weights of a larger model (ONNX external data, next to `model.onnx`) |
| `model_quantized.onnx` | with `quantize="int8"`: weights of the MatMuls in int8 (Optimum's file name) |
| `config.json` | the model's `VitPoseConfig` (heads, keypoint names, input size) |
| `preprocessor_config.json` | the `VitPoseTopDownImageProcessor` (crop size, normalisation) |
| `onnx_export.json` | how the graph was made: opset, inputs, outputs, versions, quantization, parity |

The graph: `pixel_values` float32 `(B, 3, H, W)` (B dynamic, H x W the config's `image_size`) and,
for models serving several datasets (ViTPose++ experts or extra heads), `dataset_index` int64
`(B,)`; output `heatmaps` float32 `(B, K, h, w)` (h, w = H/4, W/4 for the standard stride). A
multi-head graph returns every row padded to the largest head's K (zeros past a smaller head's K).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .image_processing_vitpose import VitPoseTopDownImageProcessor
from .modelcard import write_model_card
from .version import __version__

logger = logging.getLogger(__name__)

__all__ = [
    "export_onnx",
    "HeatmapGraph",
    "needs_dataset_index",
    "OnnxExportError",
    "SUPPORTED_OPSETS",
    "DEFAULT_OPSET",
    "EXTERNAL_DATA_THRESHOLD",
    "ONNX_FILE_NAME",
    "QUANTIZED_FILE_NAME",
    "EXPORT_INFO_FILE_NAME",
    "QUANTIZED_OP_TYPES",
]

#: opsets the export accepts (torch 2.13's dynamo exporter writes 18 and newer; ONNX 1.18 defines 23)
SUPPORTED_OPSETS = tuple(range(18, 24))
DEFAULT_OPSET = 20
#: initializer bytes above which the weights go to `model.onnx.data`: 1 GiB, well under protobuf's
#: 2 GiB message limit (a graph of that size plus its metadata still serializes in one file)
EXTERNAL_DATA_THRESHOLD = 1 << 30
ONNX_FILE_NAME = "model.onnx"
QUANTIZED_FILE_NAME = "model_quantized.onnx"
EXPORT_INFO_FILE_NAME = "onnx_export.json"
#: op types whose weights `quantize="int8"` stores as int8 (onnxruntime's dynamic quantization:
#: the linear layers of the ViT are MatMuls with initializer weights; convolutions stay float32)
QUANTIZED_OP_TYPES = ("MatMul",)
QUANTIZE_METHODS = ("int8",)
#: largest accepted `max |onnxruntime - PyTorch|` of the float32 graph's heatmaps
PARITY_ATOL = 1e-4


class OnnxExportError(RuntimeError):
    """The exported graph failed its check: onnxruntime's heatmaps differ from PyTorch's, or the
    graph could not be built or run."""


def needs_dataset_index(config) -> bool:
    """Whether a model with `config` takes a `dataset_index` input (ViTPose++ experts or several
    dataset heads): `num_datasets > 1`, `num_experts > 1` or any `dataset_heads`."""
    return bool(
        int(getattr(config, "num_datasets", 1)) > 1
        or int(getattr(config, "num_experts", 1)) > 1
        or getattr(config, "dataset_heads", None)
    )


class HeatmapGraph(nn.Module):
    """What the ONNX graph computes: `model(pixel_values, dataset_index).heatmaps`, as a tensor.

    Args:
        model: a `VitPoseForPoseEstimation` (in eval mode, float32).
        with_dataset_index: the graph takes `dataset_index` (see `needs_dataset_index`).

    Forward: `pixel_values` `(B, 3, H, W)` float32 [, `dataset_index` `(B,)` int64] ->
    `heatmaps` `(B, K, h, w)` float32.
    """

    def __init__(self, model: nn.Module, with_dataset_index: bool):
        super().__init__()
        self.model = model
        self.with_dataset_index = with_dataset_index

    def forward(self, pixel_values: torch.Tensor, dataset_index: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model(pixel_values, dataset_index=dataset_index if self.with_dataset_index else None, return_dict=True)
        return out.heatmaps


def _check_opset(opset: Any) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in SUPPORTED_OPSETS:
        raise ValueError(
            f"opset {opset!r} is not supported: choose an int from {SUPPORTED_OPSETS[0]} to {SUPPORTED_OPSETS[-1]} "
            f"(default {DEFAULT_OPSET})"
        )
    return int(opset)


def _check_quantize(quantize: Any) -> str | None:
    if quantize is None:
        return None
    if not isinstance(quantize, str) or quantize.lower() not in QUANTIZE_METHODS:
        raise ValueError(f"quantize {quantize!r} is not supported: use None or one of {QUANTIZE_METHODS}")
    return quantize.lower()


def _example_inputs(config, with_index: bool, batch: int) -> tuple[torch.Tensor, ...]:
    """A fixed random `(batch, C, H, W)` input and, for multi-dataset models, every dataset index in
    turn (a mixed batch, so each expert and head is traced and checked)."""
    height, width = (int(v) for v in config.image_size)
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(batch, int(config.num_channels), height, width, generator=generator)
    if not with_index:
        return (pixel_values,)
    num = max(int(config.num_datasets), 1)
    return pixel_values, torch.arange(batch, dtype=torch.long) % num


def _plain_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` with its plain modules. A model prepared by `optimize_for_inference` (it has
    an `inference_report`) holds inference-only swaps, some of them oneDNN kernels that have no ONNX
    form; its state dict keeps the plain layout, so the copy is rebuilt from config + weights."""
    if getattr(model, "inference_report", None) is None:
        return copy.deepcopy(model)
    logger.info("the model carries optimize_for_inference swaps: exporting a plain copy of its weights")
    plain = type(model)(copy.deepcopy(model.config))
    plain.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()})
    return plain


def _initializer_bytes(program) -> int:
    total = 0
    for value in program.model.graph.initializers.values():
        tensor = value.const_value
        if tensor is not None:
            total += int(tensor.nbytes)
    return total


def _remove_stale(output_dir: Path) -> None:
    # files of an earlier export into the same folder would be read together with the new graph
    for name in (ONNX_FILE_NAME, ONNX_FILE_NAME + ".data", QUANTIZED_FILE_NAME, QUANTIZED_FILE_NAME + ".data",
                 EXPORT_INFO_FILE_NAME):
        path = output_dir / name
        if path.is_file():
            path.unlink()


def _drop_empty_data_file(onnx_path: Path) -> bool:
    """Remove `<model>.data` when no tensor went there (small tensors stay inline); True when kept."""
    data = onnx_path.with_name(onnx_path.name + ".data")
    if not data.is_file():
        return False
    if data.stat().st_size == 0:
        data.unlink()
        return False
    return True


def _run_onnxruntime(path: Path, inputs: dict[str, Any]):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the check runs during every export
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return session.run(["heatmaps"], inputs)[0]


class _QuietQuantizer(logging.Filter):
    """Drops what onnxruntime's quantizer logs on the root logger: an INFO line per tensor and node,
    and a suggestion to run its shape-inference pre-processing (on these graphs, static shapes but
    the batch, that pre-processing leaves the quantized op set unchanged and only costs time)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_quantizer = "onnxruntime" in (record.pathname or "") and "quantization" in (record.pathname or "")
        if from_quantizer and record.levelno < logging.WARNING:
            return False
        return not str(record.msg).startswith("Please consider to run pre-processing before quantization")


#: (logger, message start) of benign exporter messages: an empty attribute list typed INTS, the
#: torchvision ops skipped when torchvision is absent (ViTPose uses none)
_EXPORTER_NOISE = (
    ("onnx_ir._convenience", "Attribute type is ambiguous"),
    ("torch.onnx._internal.exporter._registration", "torchvision is not installed"),
)


class _DropPrefix(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


#: loggers of the ONNX optimizer passes, which log one INFO line per folded constant or merged
#: initializer: raised to WARNING during the export
_CHATTY_LOGGERS = ("onnx_ir", "onnxscript")


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's known benign messages (listed above, the optimizer passes' INFO
    lines, torch's own deprecation and axis-naming warnings about its internals), so that a real
    warning stands out."""
    filters = [(logging.getLogger(name), _DropPrefix(prefix)) for name, prefix in _EXPORTER_NOISE]
    for log, flt in filters:
        log.addFilter(flt)
    chatty = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [log.level for log in chatty]
    for log in chatty:
        if log.getEffectiveLevel() < logging.WARNING:
            log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used", category=UserWarning)
            yield
    finally:
        for log, flt in filters:
            log.removeFilter(flt)
        for log, level in zip(chatty, levels):
            log.setLevel(level)


def _quantize_int8(source: Path, target: Path, external: bool) -> None:
    """onnxruntime dynamic quantization of `source` into `target` (int8 MatMul weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    quiet = _QuietQuantizer()
    root.addFilter(quiet)
    try:
        quantize_dynamic(
            model_input=str(source),
            model_output=str(target),
            op_types_to_quantize=list(QUANTIZED_OP_TYPES),
            # per output channel, 7-bit weights: on CPUs without VNNI (AVX2) onnxruntime's u8 x s8
            # kernel can saturate its 16-bit intermediate sums with full 8-bit weights; per-tensor
            # 8-bit weights moved one confident keypoint of a trained model by 35 px there
            per_channel=True,
            reduce_range=True,
            weight_type=QuantType.QInt8,
            use_external_data_format=external,
        )
    finally:
        root.removeFilter(quiet)
    for path in (target, target.with_name(target.name + ".data")):
        if path.is_file():
            path.chmod(0o644)  # onnxruntime writes the data file through a private (0600) temp file


def export_onnx(
    model: nn.Module,
    output_dir: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    quantize: str | None = None,
    image_processor=None,
    *,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
    example_batch_size: int | None = None,
    atol: float = PARITY_ATOL,
) -> Path:
    """Export a ViTPose model to ONNX (torch.onnx dynamo exporter) and check it with onnxruntime.

    The caller's model is never altered: a float32, eval-mode copy on the CPU is traced (with
    `torch.no_grad()`). The graph's inputs are `pixel_values` float32 `(B, 3, H, W)` with a dynamic
    batch B and H x W = `config.image_size`, plus `dataset_index` int64 `(B,)` for multi-dataset
    models (`needs_dataset_index`); the output is `heatmaps` float32 `(B, K, h, w)`, padded to the
    largest head's K for multi-head models. After saving, onnxruntime runs the graph on the example
    input and its heatmaps must be within `atol` of PyTorch's.

    Args:
        model: a `VitPoseForPoseEstimation` (any device or dtype).
        output_dir: folder to write (created; files of an earlier export there are replaced).
        opset: ONNX opset, 18..23 (default 20).
        quantize: None, or `"int8"`: also write `model_quantized.onnx` with onnxruntime's dynamic
            quantization (`quantize_dynamic`, QInt8 weights per output channel with a 7-bit range, for the op types in
            `QUANTIZED_OP_TYPES`: the MatMuls of the linear layers; activations are quantized at run
            time; convolutions and attention score products stay float32).
        image_processor: the `VitPoseTopDownImageProcessor` to save beside the graph; default: one sized
            from `config.image_size`.
        external_data_threshold: initializer bytes above which the weights are written to
            `model.onnx.data` beside `model.onnx` (default 1 GiB); below it `model.onnx` is
            self-contained.
        example_batch_size: batch of the tracing / check input (default 2, or the number of
            datasets of a multi-dataset model so that each is checked).
        atol: largest accepted absolute heatmap difference onnxruntime vs PyTorch (1e-4).

    Returns:
        the path of `model.onnx`.

    Raises:
        ValueError: an opset outside 18..23, an unknown `quantize`, a model without a ViTPose config.
        OnnxExportError: the export failed or onnxruntime's heatmaps differ from PyTorch's.
    """
    opset = _check_opset(opset)
    quantize = _check_quantize(quantize)
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "image_size") or not hasattr(config, "head_specs"):
        raise ValueError(f"export_onnx needs a vitpose_hf VitPoseForPoseEstimation, got {type(model).__name__}")
    output_dir = Path(output_dir)
    if output_dir.is_file():
        raise ValueError(f"output_dir {os.fspath(output_dir)!r} is a file, expected a directory")
    output_dir.mkdir(parents=True, exist_ok=True)

    with_index = needs_dataset_index(config)
    batch = int(example_batch_size) if example_batch_size is not None else max(2, int(config.num_datasets) if with_index else 2)
    if batch < 2:
        # torch.export specialises a dimension whose example size is 0 or 1: the batch would be fixed
        raise ValueError(f"example_batch_size must be >= 2 for a dynamic batch, got {batch}")
    # a private float32 eval copy on the CPU: the caller's model (device, dtype, mode) is left alone
    traced = _plain_copy(model).to(device="cpu", dtype=torch.float32).eval()
    graph = HeatmapGraph(traced, with_index).eval()
    example = _example_inputs(config, with_index, batch)
    with torch.no_grad():
        # PyTorch's heatmaps for the onnxruntime check, computed before tracing
        reference = graph(*example).float()

    names = ["pixel_values", "dataset_index"][: len(example)]
    batch_dim = torch.export.Dim("batch")
    dynamic_shapes = {"pixel_values": {0: batch_dim}}
    if with_index:
        dynamic_shapes["dataset_index"] = {0: batch_dim}
    logger.info("exporting %s to ONNX (opset %d, inputs %s)", type(model).__name__, opset, names)
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                graph, example, None, dynamo=True, opset_version=opset, input_names=names,
                output_names=["heatmaps"], dynamic_shapes=dynamic_shapes, verbose=False, optimize=True,
            )
    except Exception as err:  # noqa: BLE001 - any exporter failure gets one clear message
        raise OnnxExportError(f"torch.onnx.export failed for {type(model).__name__}: {type(err).__name__}: {err}") from err

    _remove_stale(output_dir)
    onnx_path = output_dir / ONNX_FILE_NAME
    size = _initializer_bytes(program)
    external = size > int(external_data_threshold)
    with _quiet_exporter():
        program.save(str(onnx_path), external_data=external)
    external = _drop_empty_data_file(onnx_path)
    logger.info("wrote %s (%.1f MiB of weights%s)", onnx_path, size / 2**20,
                f", in {ONNX_FILE_NAME}.data" if external else "")

    feeds = {"pixel_values": example[0].numpy()}
    if with_index:
        feeds["dataset_index"] = example[1].numpy()
    try:
        ort_heatmaps = torch.from_numpy(_run_onnxruntime(onnx_path, feeds))
    except Exception as err:  # noqa: BLE001
        raise OnnxExportError(f"onnxruntime cannot run the exported graph {onnx_path}: {err}") from err
    if ort_heatmaps.shape != reference.shape:
        raise OnnxExportError(
            f"onnxruntime's heatmaps have shape {tuple(ort_heatmaps.shape)}, PyTorch's {tuple(reference.shape)}"
        )
    max_diff = float((ort_heatmaps - reference).abs().max()) if reference.numel() else 0.0
    if not max_diff <= atol:
        raise OnnxExportError(
            f"onnxruntime's heatmaps differ from PyTorch's by {max_diff:.3g} (max abs), more than atol={atol:g}: "
            f"the graph in {onnx_path} is not faithful"
        )
    logger.info("onnxruntime check passed: max |heatmaps - PyTorch| = %.3g", max_diff)

    quantized_info = None
    if quantize == "int8":
        q_path = output_dir / QUANTIZED_FILE_NAME
        _quantize_int8(onnx_path, q_path, external)
        q_external = _drop_empty_data_file(q_path)
        try:
            q_heatmaps = torch.from_numpy(_run_onnxruntime(q_path, feeds))
        except Exception as err:  # noqa: BLE001
            raise OnnxExportError(f"onnxruntime cannot run the quantized graph {q_path}: {err}") from err
        q_diff = float((q_heatmaps - reference).abs().max()) if reference.numel() else 0.0
        # int8 weights change the heatmaps by design: recorded and logged, not a pass/fail check
        logger.info("wrote %s (int8 dynamic quantization): max |heatmaps - PyTorch| = %.3g", q_path, q_diff)
        quantized_info = {
            "file": QUANTIZED_FILE_NAME,
            "method": "onnxruntime.quantization.quantize_dynamic",
            "weight_type": "QInt8",
            "per_channel": True,
            "reduce_range": True,
            "op_types": list(QUANTIZED_OP_TYPES),
            "external_data": q_external,
            "max_abs_diff_vs_pytorch": q_diff,
        }

    # the config and processor beside the graph: heads, keypoint names, crop size and normalisation.
    # Written as JSON only: no PyTorch weights here, so no model code for trust_remote_code either.
    # An `auto_map` (a model or processor loaded from a folder with saved code) is dropped: it would
    # point to code this folder does not hold.
    _write_json_without_auto_map(output_dir / "config.json", config.to_json_string(use_diff=True))
    if image_processor is None:
        image_processor = VitPoseTopDownImageProcessor.for_config(config)
    _write_json_without_auto_map(output_dir / "preprocessor_config.json", image_processor.to_json_string())
    _write_info(output_dir, config, opset, with_index, tuple(reference.shape), external, size, max_diff, quantized_info)
    write_model_card(
        output_dir, config, source=f"exported to ONNX (opset {opset}) by vitpose_hf.export",
        extra_text=("The folder holds `model.onnx`" + (" and the int8 `model_quantized.onnx`" if quantized_info else "")
                    + f" (checked against PyTorch with onnxruntime: max heatmap difference {max_diff:.2e}); "
                    "vitpose_hf runs it with onnxruntime (`pip install vitpose_hf onnxruntime`)."),
        tags=["onnx"], usage="onnx",
    )
    return onnx_path


def _write_info(output_dir, config, opset, with_index, out_shape, external, size, max_diff, quantized_info) -> None:
    import onnx
    import onnxruntime

    height, width = (int(v) for v in config.image_size)
    inputs = [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", int(config.num_channels), height, width]}]
    if with_index:
        inputs.append({"name": "dataset_index", "dtype": "int64", "shape": ["batch"],
                       "range": [0, int(config.num_datasets) - 1]})
    info = {
        "format": "onnx",
        "file": ONNX_FILE_NAME,
        "external_data": f"{ONNX_FILE_NAME}.data" if external else None,
        "initializer_bytes": size,
        "opset": opset,
        "inputs": inputs,
        "outputs": [{"name": "heatmaps", "dtype": "float32", "shape": ["batch", *out_shape[1:]]}],
        "heads": [
            {"dataset_index": int(h["dataset_index"]), "num_keypoints": int(h["num_labels"]), "name": h.get("name")}
            for h in config.head_specs()
        ],
        "padded_num_keypoints": int(out_shape[1]),
        "exporter": "torch.onnx.export(dynamo=True)",
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "vitpose_hf_version": __version__,
        "max_abs_diff_vs_pytorch": max_diff,
        "quantized": quantized_info is not None,
        "quantization": quantized_info,
    }
    (output_dir / EXPORT_INFO_FILE_NAME).write_text(json.dumps(info, indent=1))


def copy_export_dir(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy the files of an export directory (graphs, weights, configs) into `target`."""
    source, target = Path(source), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for name in (ONNX_FILE_NAME, ONNX_FILE_NAME + ".data", QUANTIZED_FILE_NAME, QUANTIZED_FILE_NAME + ".data",
                 EXPORT_INFO_FILE_NAME, "config.json", "preprocessor_config.json"):
        if (source / name).is_file() and (source / name).resolve() != (target / name).resolve():
            shutil.copy2(source / name, target / name)


def _write_json_without_auto_map(path: Path, text: str) -> None:
    data = json.loads(text)
    data.pop("auto_map", None)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
