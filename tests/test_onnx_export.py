"""ONNX export (torch.onnx dynamo exporter), the onnxruntime backend, and their CLI / pipeline wiring.

Random tiny models check the graphs (heatmaps within 1e-4 of PyTorch, dynamic batch, inputs); only a
small *trained* model (fitted in a few seconds on the shared COCO sample) is used to compare decoded
keypoint coordinates: a random model's heatmaps are flat and their argmax depends on rounding.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import transformers
from PIL import Image

import vitpose_hf  # noqa: F401  (registers the pipeline)
from conftest import TINY_PLUS, tiny_config_kwargs
from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation
from vitpose_hf.cli import main
from vitpose_hf.export import (
    EXPORT_INFO_FILE_NAME,
    OnnxExportError,
    QUANTIZED_FILE_NAME,
    export_onnx,
    needs_dataset_index,
)
from vitpose_hf.image_processing_vitpose import VitPoseTopDownImageProcessor, predict_heatmaps
from vitpose_hf.onnx_backend import OnnxPoseModel, is_onnx_export_dir

PLUS = TINY_PLUS


def _model(**overrides) -> VitPoseForPoseEstimation:
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(**overrides)))
    with torch.no_grad():  # non-trivial biases and BN statistics: heatmaps well away from zero
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if "running_var" in name:
                t.uniform_(0.5, 1.5)
            elif "running_mean" in name or name.endswith("bias"):
                t.normal_(0, 0.1)
    return model.eval()


def _torch_heatmaps(model, x, dataset_index=None):
    with torch.no_grad():
        return model(x, dataset_index=dataset_index).heatmaps


# ----------------------------------------------------------------------------- graphs
@pytest.mark.parametrize(
    "overrides, opset",
    [
        ({}, 18),  # classic head
        ({"use_simple_decoder": True}, 20),
        ({"attention_type": ["window", "shifted_window"], "window_size": (4, 3)}, 23),
        ({"num_knowledge_tokens": 2, "use_simple_decoder": True}, 20),
    ],
    ids=["classic", "simple", "window", "knowledge_tokens"],
)
def test_export_matches_pytorch_with_a_dynamic_batch(overrides, opset, tmp_path):
    model = _model(**overrides)
    model.train()  # the caller's model must come back untouched (mode, weights)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = export_onnx(model, tmp_path / "onnx", opset=opset)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()

    assert path == tmp_path / "onnx" / "model.onnx"
    files = sorted(p.name for p in path.parent.iterdir())
    # one graph file, JSON only beside it (no model code: nothing here for PyTorch) and the card
    assert files == sorted(["config.json", EXPORT_INFO_FILE_NAME, "model.onnx", "preprocessor_config.json", "README.md"])
    card = (path.parent / "README.md").read_text()
    assert "library_name: vitpose_hf" in card and "- onnx" in card and f"opset {opset}" in card
    graph = onnx.load(str(path))
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    assert [i.name for i in graph.graph.input] == ["pixel_values"]
    info = json.loads((path.parent / EXPORT_INFO_FILE_NAME).read_text())
    assert info["opset"] == opset and info["quantized"] is False and info["external_data"] is None
    assert info["inputs"] == [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 64, 48]}]
    assert VitPoseTopDownImageProcessor.from_pretrained(path.parent).size == {"height": 64, "width": 48}

    onnx_model = OnnxPoseModel.from_pretrained(path.parent)
    assert not onnx_model.takes_dataset_index
    for batch in (1, 5):  # one graph, two batch sizes
        x = torch.randn(batch, 3, 64, 48)
        expected = _torch_heatmaps(model, x)
        got = onnx_model(x).heatmaps
        assert got.dtype == torch.float32 and got.shape == expected.shape
        assert (got - expected).abs().max().item() <= 1e-4
    assert expected.abs().max() > 1e-3  # the comparison is not between near-zero maps


def test_opset_and_quantize_arguments_are_checked(tmp_path):
    model = _model()
    for bad in (17, 24, "20", 20.0, True, None):
        with pytest.raises(ValueError, match=f"opset {bad!r}"):
            export_onnx(model, tmp_path / "x", opset=bad)
    with pytest.raises(ValueError, match="quantize 'int4'"):
        export_onnx(model, tmp_path / "x", quantize="int4")
    with pytest.raises(ValueError, match="VitPoseForPoseEstimation"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_model_with_inference_swaps_exports_its_plain_weights(tmp_path):
    from vitpose_hf import optimize_for_inference

    model = _model(num_hidden_layers=1, use_simple_decoder=True)
    x = torch.randn(2, 3, 64, 48)
    expected = _torch_heatmaps(model, x)
    optimize_for_inference(model)  # fused q/k/v, oneDNN kernels: no ONNX form for some of them
    path = export_onnx(model, tmp_path / "onnx")
    assert (OnnxPoseModel.from_pretrained(path.parent)(x).heatmaps - expected).abs().max().item() <= 1e-4


def test_a_graph_that_differs_from_pytorch_is_an_error(tmp_path):
    with pytest.raises(OnnxExportError, match="differ from PyTorch's"):
        export_onnx(_model(num_hidden_layers=1), tmp_path / "onnx", atol=-1.0)  # no difference is < 0


# ----------------------------------------------------------------------------- multi-dataset, external data, int8
@pytest.fixture(scope="module")
def plus_export(tmp_path_factory):
    """A ViTPose++-style model (3 experts, heads of 17/14/16 keypoints) exported with its weights
    forced into `model.onnx.data` (threshold 0) and int8-quantized."""
    torch.manual_seed(0)
    model = _model(**PLUS)
    out = tmp_path_factory.mktemp("plus") / "onnx"
    export_onnx(model, out, quantize="int8", external_data_threshold=0)
    return model, out


def test_multi_dataset_graph_takes_dataset_index_and_pads_to_the_largest_head(plus_export):
    model, out = plus_export
    assert needs_dataset_index(model.config)
    info = json.loads((out / EXPORT_INFO_FILE_NAME).read_text())
    assert [i["name"] for i in info["inputs"]] == ["pixel_values", "dataset_index"]
    assert info["inputs"][1] == {"name": "dataset_index", "dtype": "int64", "shape": ["batch"], "range": [0, 2]}
    assert info["padded_num_keypoints"] == 17
    onnx_model = OnnxPoseModel.from_pretrained(out)
    assert onnx_model.takes_dataset_index and onnx_model.num_keypoints_for(1) == 14
    x = torch.randn(6, 3, 64, 48)
    mixed = torch.tensor([0, 1, 2, 2, 1, 0])
    got = onnx_model(x, dataset_index=mixed).heatmaps
    assert got.shape == (6, 17, 32, 24)
    assert (got - _torch_heatmaps(model, x, mixed)).abs().max().item() <= 1e-4
    assert got[1, 14:].abs().max() == 0 and got[2, 16:].abs().max() == 0  # zeros past a head's own K
    for index, k in ((0, 17), (1, 14), (2, 16)):  # one dataset: that head's K, as in PyTorch
        one = onnx_model(x[:3], dataset_index=index).heatmaps
        assert one.shape[1] == k
        assert (one - _torch_heatmaps(model, x[:3], torch.full((3,), index))).abs().max().item() <= 1e-4


def test_backend_validates_its_inputs(plus_export):
    _, out = plus_export
    onnx_model = OnnxPoseModel.from_pretrained(out)
    x = torch.randn(2, 3, 64, 48)
    with pytest.raises(ValueError, match="dataset_index 3 is out of range"):
        onnx_model(x, dataset_index=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="dataset_index -1 is out of range"):
        onnx_model(x, dataset_index=-1)
    with pytest.raises(ValueError, match="must hold integers"):
        onnx_model(x, dataset_index=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(2,\), got 3 values"):
        onnx_model(x, dataset_index=[0, 1, 2])
    with pytest.raises(ValueError, match="64x40, the ONNX graph was exported for 64x48"):
        onnx_model(torch.randn(1, 3, 64, 40))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\), got shape \(3, 64, 48\)"):
        onnx_model(torch.randn(3, 64, 48))
    with pytest.raises(ValueError, match="4 channels"):
        onnx_model(torch.randn(1, 4, 64, 48))
    with pytest.raises(OSError, match="not an ONNX export folder"):
        OnnxPoseModel.from_pretrained(out.parent)
    with pytest.raises(FileNotFoundError, match="'nope.onnx' not found"):
        OnnxPoseModel.from_pretrained(out, file_name="nope.onnx")
    assert is_onnx_export_dir(out) and not is_onnx_export_dir(out.parent) and not is_onnx_export_dir("org/model")
    assert next(onnx_model.parameters(), None) is None and onnx_model.eval() is onnx_model
    assert onnx_model.dtype == torch.float32 and onnx_model.device.type == "cpu"
    with pytest.raises(RuntimeError, match="inference-only"):
        onnx_model.train()


def test_external_data_and_int8_graphs_load_and_run(plus_export):
    model, out = plus_export
    names = sorted(p.name for p in out.iterdir())
    assert {"model.onnx", "model.onnx.data", QUANTIZED_FILE_NAME, QUANTIZED_FILE_NAME + ".data"} <= set(names)
    assert (out / "model.onnx.data").stat().st_size > 100_000  # the weights are there, not inline
    info = json.loads((out / EXPORT_INFO_FILE_NAME).read_text())
    assert info["external_data"] == "model.onnx.data" and info["quantized"] is True
    assert info["quantization"]["weight_type"] == "QInt8" and info["quantization"]["op_types"] == ["MatMul"]
    quantized = onnx.load(str(out / QUANTIZED_FILE_NAME))
    assert sum(n.op_type == "MatMulInteger" for n in quantized.graph.node) >= 8  # q/k/v/out/fc1/fc2 x 2 layers
    q_model = OnnxPoseModel.from_pretrained(out, file_name=QUANTIZED_FILE_NAME)
    assert q_model.is_quantized
    x = torch.randn(3, 3, 64, 48)
    index = torch.tensor([0, 1, 2])
    expected = _torch_heatmaps(model, x, index)
    got = q_model(x, dataset_index=index).heatmaps
    # int8 weights: close, not equal (relative to the heatmaps' range)
    assert (got - expected).abs().max().item() <= 0.05 * expected.abs().max().item()
    # the flip test of predict_heatmaps runs through the backend unchanged
    f32 = OnnxPoseModel.from_pretrained(out)
    flipped = predict_heatmaps(f32, x, flip_test=True, dataset_index=1)
    reference = predict_heatmaps(model, x, flip_test=True, dataset_index=1)
    assert flipped.shape == reference.shape == (3, 14, 32, 24)
    assert (flipped - reference).abs().max().item() <= 1e-4


# ----------------------------------------------------------------------------- CLI and pipeline (random model)
@pytest.fixture(scope="module")
def cli_export(tmp_path_factory):
    """A tiny checkpoint saved to disk and exported by `vitpose-hf export` (int8 too, opset 18)."""
    root = tmp_path_factory.mktemp("cli_onnx")
    torch.manual_seed(1)
    model = _model(use_simple_decoder=True)
    model.save_pretrained(root / "ckpt")
    VitPoseTopDownImageProcessor(size={"height": 64, "width": 48}).save_pretrained(root / "ckpt")
    rc = main(["export", str(root / "ckpt"), str(root / "onnx"), "--format", "onnx", "--quantize", "int8", "--opset", "18"])
    assert rc == 0
    return root


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for name, (h, w) in {"000000000001.png": (60, 80), "000000000002.jpg": (90, 70)}.items():
        small = rng.integers(0, 256, size=(h // 10, w // 10, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    return paths


def test_cli_export_writes_the_folder(cli_export):
    info = json.loads((cli_export / "onnx" / EXPORT_INFO_FILE_NAME).read_text())
    assert info["opset"] == 18 and info["quantized"] is True
    assert is_onnx_export_dir(cli_export / "onnx") and (cli_export / "onnx" / QUANTIZED_FILE_NAME).is_file()
    assert main(["export", str(cli_export / "ckpt"), str(cli_export / "bad"), "--opset", "30"]) == 2


def _persons(path):
    return [p for rec in json.loads(path.read_text())["images"] for p in rec["persons"]]


def test_cli_predict_with_an_onnx_folder(cli_export, images, tmp_path):
    outs = {}
    for name, extra in {"torch": ["--model", str(cli_export / "ckpt")], "onnx": ["--model", str(cli_export / "onnx")],
                        "int8": ["--model", str(cli_export / "onnx"), "--onnx-file", QUANTIZED_FILE_NAME]}.items():
        outs[name] = tmp_path / f"{name}.json"
        assert main(["predict", *images, *extra, "--output", str(outs[name]), "--quiet", "--whole-image"]) == 0
    torch_p, onnx_p, int8_p = (_persons(outs[n]) for n in ("torch", "onnx", "int8"))
    assert len(torch_p) == len(onnx_p) == len(int8_p) == 2
    for a, b in zip(torch_p, onnx_p):
        assert [k["label"] for k in a["keypoints"]] == [k["label"] for k in b["keypoints"]]
        # scores only: a random model's keypoint positions depend on float rounding
        np.testing.assert_allclose([k["score"] for k in a["keypoints"]], [k["score"] for k in b["keypoints"]], atol=1e-5)
    assert main(["predict", images[0], "--model", str(cli_export / "ckpt"), "--onnx-file", "model.onnx",
                 "--output", str(tmp_path / "x.json")]) == 2  # fmt: skip


def test_pipeline_factory_routes_an_export_folder_to_onnxruntime(cli_export, images):
    torch_pipe = transformers.pipeline("keypoint-detection", model=str(cli_export / "ckpt"), device="cpu")
    onnx_pipe = transformers.pipeline("keypoint-detection", model=str(cli_export / "onnx"))
    assert isinstance(onnx_pipe.model, OnnxPoseModel) and not isinstance(torch_pipe.model, OnnxPoseModel)
    assert onnx_pipe.image_processor.size == {"height": 64, "width": 48}
    boxes = [[[5, 5, 40, 50]], [[0, 0, 70, 90], [10, 20, 30, 30]]]
    expected = torch_pipe(images, boxes=boxes)
    got = onnx_pipe(images, boxes=boxes)
    for exp_image, got_image in zip(expected, got):
        assert len(exp_image) == len(got_image)
        for e, g in zip(exp_image, got_image):
            assert e["bbox"] == g["bbox"]
            assert g["score"] == pytest.approx(e["score"], abs=1e-5)
            np.testing.assert_allclose([k["score"] for k in g["keypoints"]], [k["score"] for k in e["keypoints"]], atol=1e-5)


# ----------------------------------------------------------------------------- a small trained model, real images
@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    """ViTPose (128x96 input, 64 wide, 2 layers, simple head) fitted to the 12 people of the shared
    COCO sample for 250 full-batch AdamW steps (a few seconds), saved and exported (fp32 + int8)."""
    from vitpose_hf.data.augmentation import TopDownTransform
    from vitpose_hf.data.coco import load_coco_keypoints
    from vitpose_hf.modeling_vitpose import joints_mse_loss

    sample = shared_data / "coco_sample"
    rows = load_coco_keypoints(sample / "test_coco.json", sample)
    batch = TopDownTransform("coco", image_size=(128, 96), train=False)(rows[:])
    x, y, w = (torch.stack([torch.as_tensor(v) for v in batch[k]]) for k in ("pixel_values", "labels", "target_weight"))
    torch.manual_seed(0)
    config = VitPoseConfig(image_size=(128, 96), patch_size=16, hidden_size=64, num_hidden_layers=2,
                           num_attention_heads=4, drop_path_rate=0.0, use_simple_decoder=True)  # fmt: skip
    model = VitPoseForPoseEstimation(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(250):
        loss = joints_mse_loss(model(x).heatmaps, y, w)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    root = tmp_path_factory.mktemp("trained")
    processor = VitPoseTopDownImageProcessor(size={"height": 128, "width": 96})
    model.save_pretrained(root / "ckpt")
    processor.save_pretrained(root / "ckpt")
    export_onnx(model, root / "onnx", quantize="int8", image_processor=processor)
    return root, sample


def test_trained_model_keypoints_on_real_images_match_pytorch(trained):
    root, sample = trained
    coco = json.loads((sample / "test_coco.json").read_text())
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    boxes: dict[str, list] = {}
    for ann in coco["annotations"]:
        if not ann.get("iscrowd") and ann.get("num_keypoints", 0) > 0:
            boxes.setdefault(files[ann["image_id"]], []).append(ann["bbox"])
    images = sorted(boxes)
    torch_pipe = transformers.pipeline("keypoint-detection", model=str(root / "ckpt"), device="cpu")
    onnx_pipe = transformers.pipeline("keypoint-detection", model=str(root / "onnx"))
    paths = [str(sample / name) for name in images]
    expected = torch_pipe(paths, boxes=[boxes[n] for n in images])  # flip test on (the default)
    got = onnx_pipe(paths, boxes=[boxes[n] for n in images])
    compared = total = 0
    for exp_image, got_image in zip(expected, got):
        for e, g in zip(exp_image, got_image):
            for ke, kg in zip(e["keypoints"], g["keypoints"]):
                total += 1
                assert kg["score"] == pytest.approx(ke["score"], abs=1e-4)
                if ke["score"] >= 0.3:
                    compared += 1
                    assert abs(kg["x"] - ke["x"]) <= 0.01 and abs(kg["y"] - ke["y"]) <= 0.01, (ke, kg)
    print(f"{compared} of {total} keypoints score >= 0.3")
    assert total == 12 * 17
    assert compared >= total // 2, f"only {compared} of {total} keypoints score >= 0.3"


def test_cli_evaluate_an_onnx_folder_gives_pytorchs_ap(trained, tmp_path):
    root, sample = trained
    metrics = {}
    for name, extra in {"torch": ["--model", str(root / "ckpt")], "onnx": ["--model", str(root / "onnx")],
                        "int8": ["--model", str(root / "onnx"), "--onnx-file", QUANTIZED_FILE_NAME]}.items():
        out = tmp_path / f"{name}.json"
        rc = main(["evaluate", *extra, "--annotations", str(sample / "test_coco.json"), "--images", str(sample),
                   "--metrics-output", str(out), "--device", "cpu", "--no-flip"])  # fmt: skip
        assert rc == 0
        metrics[name] = json.loads(out.read_text())
    print({name: round(m["AP"], 4) for name, m in metrics.items()})
    # the fitted model finds its training people (no flip test: it never saw them mirrored)
    assert metrics["torch"]["AP"] > 0.5, metrics
    # one person crossing one OKS threshold moves this AP by ~0.008: equal within that, not 1e-3
    # (keypoint-level parity is test_trained_model_keypoints_on_real_images_match_pytorch)
    assert metrics["onnx"]["AP"] == pytest.approx(metrics["torch"]["AP"], abs=0.01)
    assert metrics["int8"]["AP"] == pytest.approx(metrics["torch"]["AP"], abs=0.05)


def test_an_export_of_a_model_loaded_from_a_folder_with_saved_code_has_no_auto_map(tmp_path):
    """A model and processor loaded from a folder with saved code carry `auto_map`; the ONNX folder
    holds no code, so its JSON files must not point to any (trust_remote_code would fail)."""
    from vitpose_hf import VitPoseTopDownImageProcessor

    _model().save_pretrained(tmp_path / "src")
    VitPoseTopDownImageProcessor(size={"height": 64, "width": 48}).save_pretrained(tmp_path / "src")
    model = VitPoseForPoseEstimation.from_pretrained(tmp_path / "src")
    processor = VitPoseTopDownImageProcessor.from_pretrained(tmp_path / "src")
    assert "auto_map" in json.loads((tmp_path / "src" / "config.json").read_text())
    out = export_onnx(model, tmp_path / "onnx", image_processor=processor).parent
    for name in ("config.json", "preprocessor_config.json"):
        assert "auto_map" not in json.loads((out / name).read_text()), name
    assert not list(out.glob("*.py"))
    assert "onnxruntime" in (out / "README.md").read_text()
