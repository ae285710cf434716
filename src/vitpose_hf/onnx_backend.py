"""onnxruntime backend: run an exported ViTPose graph (`vitpose_hf.export.export_onnx`) in place of
the PyTorch model.

`OnnxPoseModel` answers the calls that `predict_heatmaps`, the "keypoint-detection" pipeline and the
COCO evaluation make of a `VitPoseForPoseEstimation` (`model(pixel_values, dataset_index=...)` with
`.heatmaps`, `config`, `num_keypoints_for`, `eval()`, an empty `parameters()`, `dtype`, `device`,
`name_or_path`), so the same image processor, flip test and decoding run around it:

```python
from vitpose_hf.onnx_backend import OnnxPoseModel
from vitpose_hf.image_processing_vitpose import VitPoseTopDownImageProcessor, predict_heatmaps

model = OnnxPoseModel.from_pretrained("my-vitpose-onnx")            # or file_name="model_quantized.onnx"
processor = VitPoseTopDownImageProcessor.from_pretrained("my-vitpose-onnx")
heatmaps = predict_heatmaps(model, processor(images, boxes=boxes)["pixel_values"])
```

The graph runs in onnxruntime; torch is still used around it (tensors in and out, the processor's
crops, the flip test and the heatmap decoding).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .configuration_vitpose import VitPoseConfig
from .export import EXPORT_INFO_FILE_NAME, ONNX_FILE_NAME, QUANTIZED_FILE_NAME, copy_export_dir
from .heatmaps import flip_heatmaps
from .keypoint_schemas import head_num_keypoints
from .modeling_vitpose import VitPoseEstimatorOutput, check_dataset_index

logger = logging.getLogger(__name__)

__all__ = ["OnnxPoseModel", "is_onnx_export_dir", "onnx_providers_for_device"]


def is_onnx_export_dir(path: str | os.PathLike | None) -> bool:
    """True when `path` is a local folder written by `export_onnx`: a `config.json` and a
    `model.onnx` or `model_quantized.onnx` (a hub id or a PyTorch checkpoint folder gives False)."""
    if path is None or not isinstance(path, (str, os.PathLike)):
        return False
    folder = Path(path)
    if not folder.is_dir() or not (folder / "config.json").is_file():
        return False
    return (folder / ONNX_FILE_NAME).is_file() or (folder / QUANTIZED_FILE_NAME).is_file()


def onnx_providers_for_device(device: str | torch.device | None) -> list[str]:
    """onnxruntime execution providers for a torch-style device name: CUDA (then CPU) for a `cuda`
    device when this onnxruntime build has it, else CPU only (logged)."""
    import onnxruntime as ort

    kind = torch.device(device).type if device is not None else "cpu"
    if kind == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        logger.warning("device %s asked for, but this onnxruntime has no CUDA provider: running on the CPU", device)
    return ["CPUExecutionProvider"]


class OnnxPoseModel:
    """An exported ViTPose graph in an onnxruntime `InferenceSession`, called like the PyTorch model.

    Not a `torch.nn.Module`: it has no parameters, is always in eval mode and float32, and reports
    the CPU as its device (onnxruntime's providers decide where the graph runs; outputs come back on
    the device of the input).

    Attributes:
        session: the `onnxruntime.InferenceSession`.
        config: the `VitPoseConfig` of the exported model (from `config.json`).
        name_or_path: the export folder (the pipeline reads `preprocessor_config.json` there).
        file_name: the graph file in it (`model.onnx` or `model_quantized.onnx`).
        takes_dataset_index: the graph has a `dataset_index` input (multi-dataset model).
        input_size: `(H, W)` the graph was exported for.
    """

    main_input_name = "pixel_values"
    training = False
    hf_device_map = None

    def __init__(self, session, config, name_or_path: str | os.PathLike | None = None, file_name: str = ONNX_FILE_NAME):
        self.session = session
        self.config = config
        self.name_or_path = os.fspath(name_or_path) if name_or_path is not None else None
        self.file_name = file_name
        inputs = {i.name: i for i in session.get_inputs()}
        if "pixel_values" not in inputs:
            raise ValueError(f"the ONNX graph has inputs {sorted(inputs)}, expected 'pixel_values'")
        outputs = [o.name for o in session.get_outputs()]
        if "heatmaps" not in outputs:
            raise ValueError(f"the ONNX graph has outputs {outputs}, expected 'heatmaps'")
        self.takes_dataset_index = "dataset_index" in inputs
        shape = inputs["pixel_values"].shape
        self.input_size = tuple(int(v) if isinstance(v, int) else None for v in shape[2:4])
        self.num_channels = shape[1] if isinstance(shape[1], int) else int(config.num_channels)
        out_shape = next(o for o in session.get_outputs() if o.name == "heatmaps").shape
        self._out_dims = tuple(int(v) if isinstance(v, int) else None for v in out_shape[1:])
        self._num_datasets = int(getattr(config, "num_datasets", 1))

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        file_name: str = ONNX_FILE_NAME,
        providers: Sequence[Any] | None = None,
        session_options=None,
        **kwargs,
    ) -> "OnnxPoseModel":
        """Load an export folder.

        Args:
            directory: folder written by `export_onnx` (a local path).
            file_name: the graph to run: `"model.onnx"` (float32) or `"model_quantized.onnx"` (int8).
            providers: onnxruntime execution providers (default: CPU).
            session_options: an `onnxruntime.SessionOptions` (threads, graph optimisation level).
            kwargs: loading options of transformers' `from_pretrained` (`dtype`, `device_map`,
                `revision`, ... as the pipeline factory passes them): they do not apply to an ONNX
                graph and are ignored.

        Raises:
            OSError: `directory` is not an ONNX export folder (so that transformers' pipeline factory
                goes on to the PyTorch classes), or `file_name` is missing there.
        """
        if not is_onnx_export_dir(directory):
            raise OSError(f"{os.fspath(directory)!r} is not an ONNX export folder (config.json + {ONNX_FILE_NAME})")
        try:  # only now: without onnxruntime, PyTorch checkpoints must still load through the pipeline
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError(
                f"{os.fspath(directory)!r} is an ONNX export folder; running it needs onnxruntime: "
                "pip install 'vitpose_hf[onnx]'"
            ) from err
        ignored = sorted(k for k in kwargs if not k.startswith("_"))
        if ignored:
            logger.debug("ignoring %s for the ONNX graph in %s", ignored, directory)
        folder = Path(directory)
        path = folder / file_name
        if not path.is_file():
            present = sorted(p.name for p in folder.glob("*.onnx"))
            raise FileNotFoundError(f"{file_name!r} not found in {os.fspath(folder)!r} (it has {present})")
        config = VitPoseConfig.from_pretrained(folder)
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(path), sess_options=session_options, providers=providers)
        logger.info("loaded %s with onnxruntime (%s)", path, ", ".join(session.get_providers()))
        return cls(session, config, name_or_path=folder, file_name=file_name)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Copy the export folder (graphs, weights, configs) to `save_directory`."""
        if self.name_or_path is None:
            raise ValueError("this OnnxPoseModel was not loaded from a folder: nothing to copy")
        copy_export_dir(self.name_or_path, save_directory)
        # the config in memory may have been edited (e.g. keypoint_schema): it wins over the copy
        self.config.save_pretrained(save_directory)

    # ------------------------------------------------------------------ the nn.Module-like surface
    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        """No torch parameters: `next(model.parameters(), None)` is None."""
        return iter(())

    def named_parameters(self, *args, **kwargs) -> Iterator[tuple[str, torch.nn.Parameter]]:
        return iter(())

    def buffers(self, recurse: bool = True) -> Iterator[torch.Tensor]:
        return iter(())

    def eval(self) -> "OnnxPoseModel":
        return self

    def train(self, mode: bool = True) -> "OnnxPoseModel":
        """Only `train(False)`: an ONNX graph is inference-only."""
        if mode:
            raise RuntimeError("an OnnxPoseModel is inference-only: train the PyTorch model and export it again")
        return self

    def to(self, *args, **kwargs) -> "OnnxPoseModel":
        """A no-op (the graph's placement is fixed by the session's providers); returns self."""
        return self

    def can_generate(self) -> bool:
        return False

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def is_quantized(self) -> bool:
        return self.file_name == QUANTIZED_FILE_NAME

    def num_keypoints_for(self, dataset_index: int | None = None) -> int:
        """Number of keypoints of the head serving `dataset_index` (None = the main head): the valid
        channels of its rows."""
        return head_num_keypoints(self.config, dataset_index)

    def export_info(self) -> dict | None:
        """The export record (`onnx_export.json`) of the folder, or None when absent."""
        import json

        if self.name_or_path is None:
            return None
        path = Path(self.name_or_path) / EXPORT_INFO_FILE_NAME
        return json.loads(path.read_text()) if path.is_file() else None

    # ------------------------------------------------------------------ inference
    def _check_pixel_values(self, pixel_values) -> np.ndarray:
        if isinstance(pixel_values, torch.Tensor):
            array = pixel_values.detach().to(device="cpu", dtype=torch.float32).numpy()
        else:
            array = np.asarray(pixel_values, dtype=np.float32)
        if array.ndim != 4:
            raise ValueError(f"pixel_values must be (B, C, H, W), got shape {tuple(array.shape)}")
        if array.shape[1] != self.num_channels:
            raise ValueError(f"pixel_values has {array.shape[1]} channels, the graph expects {self.num_channels}")
        expected = self.input_size
        if None not in expected and tuple(array.shape[2:]) != expected:
            raise ValueError(
                f"pixel_values is {array.shape[2]}x{array.shape[3]}, the ONNX graph was exported for "
                f"{expected[0]}x{expected[1]} crops (use the processor saved beside it)"
            )
        return np.ascontiguousarray(array)

    def __call__(
        self,
        pixel_values,
        dataset_index=None,
        flip_pairs=None,
        return_dict: bool | None = None,
        **ignored,
    ):
        """Run the graph.

        Args:
            pixel_values: `(B, 3, H, W)` normalized crops (torch tensor or numpy array), H x W the
                exported input size.
            dataset_index: `(B,)` ints, one int, or None (the main head, `config.main_dataset_index`):
                the ViTPose++ expert / head per sample.
            flip_pairs: `(P, 2)` pairs; when given, the heatmaps are flipped back (`flip_heatmaps`),
                as the PyTorch model does.
            return_dict: False gives a tuple `(heatmaps,)`.
            ignored: other arguments of the PyTorch forward (`output_hidden_states`, ...); an ONNX
                graph has only its heatmaps output.

        Returns:
            `VitPoseEstimatorOutput` with `heatmaps` float32 `(B, K, h, w)` on the input's device.
            With several dataset heads, a batch of one dataset index gets that head's K (as the
            PyTorch model); a mixed batch is padded to the largest head's K (zeros past a row's own
            K, `num_keypoints_for(i)`).
        """
        out_device = pixel_values.device if isinstance(pixel_values, torch.Tensor) else torch.device("cpu")
        array = self._check_pixel_values(pixel_values)
        batch = array.shape[0]
        index = check_dataset_index(
            dataset_index, batch, self._num_datasets, "cpu", int(getattr(self.config, "main_dataset_index", 0))
        ).numpy()
        if batch == 0:
            dims = tuple(d or 0 for d in self._out_dims)
            heatmaps = torch.zeros((0,) + dims, dtype=torch.float32)
        else:
            feeds = {"pixel_values": array}
            if self.takes_dataset_index:
                feeds["dataset_index"] = index
            heatmaps = torch.from_numpy(self.session.run(["heatmaps"], feeds)[0])
            unique = np.unique(index)
            if self.config.dataset_heads and unique.size == 1:
                # the graph pads every row to the largest head; one dataset: that head's own K
                heatmaps = heatmaps[:, : self.num_keypoints_for(int(unique[0]))]
        heatmaps = heatmaps.to(out_device)
        if flip_pairs is not None:
            heatmaps = flip_heatmaps(heatmaps, flip_pairs)
        result = VitPoseEstimatorOutput(heatmaps=heatmaps)
        return result if return_dict is not False else result.to_tuple()

    forward = __call__

    def __repr__(self) -> str:
        inputs = ["pixel_values"] + (["dataset_index"] if self.takes_dataset_index else [])
        return (
            f"{type(self).__name__}({os.fspath(Path(self.name_or_path or '.') / self.file_name)!r}, inputs={inputs}, "
            f"providers={self.session.get_providers()})"
        )
