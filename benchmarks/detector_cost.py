"""What the person detector costs next to ViTPose: the default RT-DETR against the YOLOX-nano file.

    python benchmarks/detector_cost.py [--repeats 5] [--threads 2] [--markdown FILE]

Rows (one image, batch 1, CPU, medians of `--repeats` timed runs after one warm-up):
- RT-DETR R50-vd, the architecture of the pipeline's default detector (`DEFAULT_DETECTOR`,
  transformers' `RTDetrConfig()` defaults with 80 labels) at its 640x640 input. Random weights:
  the hub is not reachable from the benchmark machine, and weights do not change the arithmetic.
- YOLOX-nano, the real ONNX file of ../shared/models (onnxruntime), at its own input size.
- ViTPose-S and ViTPose-B (simple head) for one 256x192 person crop, the pose side of the bill.

GFLOP are counted by `torch.utils.flop_counter.FlopCounterMode` (multiply-adds x 2 of matmuls and
convolutions; the deformable attention's bilinear sampling is not counted) and, for the ONNX file,
from its Conv / MatMul / Gemm nodes and the shapes onnxruntime infers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VITPOSE_SHARED", ROOT.parent / "shared"))
YOLOX = SHARED / "models" / "yolox_nano" / "yolox_nano.onnx"


def cpu_description() -> str:
    """`model name` and the ISA flags that matter here, from /proc/cpuinfo (Linux), else platform."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16")
    return f"{name}, {os.cpu_count()} cores, flags: {' '.join(f for f in wanted if f in flags)}"


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, oneDNN primitive creation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_gflop(model: torch.nn.Module, *inputs) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return counter.get_total_flops() / 1e9


def onnx_gflop(path: Path) -> float:
    """2 x multiply-adds of the Conv / MatMul / Gemm nodes, shapes from onnx's shape inference."""
    import onnx
    from onnx import shape_inference

    graph = shape_inference.infer_shapes(onnx.load(str(path))).graph
    shapes = {}
    for value in list(graph.value_info) + list(graph.output) + list(graph.input):
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        shapes[value.name] = dims
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for node in graph.node:
        if node.op_type == "Conv":
            out, weight = shapes.get(node.output[0]), shapes.get(node.input[1])
            if out and weight:  # weight (out, in / groups, kh, kw): multiply-adds per output value
                total += 2 * np.prod(out) * (weight[1] * np.prod(weight[2:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out:
                total += 2 * np.prod(out) * a[-1]
    return float(total) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    import transformers

    from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation

    transformers.logging.set_verbosity_error()
    rows = []

    torch.manual_seed(0)
    rtdetr = transformers.RTDetrForObjectDetection(transformers.RTDetrConfig(num_labels=80)).eval()
    image = torch.rand(1, 3, 640, 640)
    gflop = torch_gflop(rtdetr, image)
    with torch.no_grad():
        seconds = median_seconds(lambda: rtdetr(pixel_values=image), args.repeats)
    params = sum(p.numel() for p in rtdetr.parameters()) / 1e6
    rows.append(("RT-DETR R50-vd (default detector)", "640x640 image", params, gflop, seconds))
    del rtdetr

    if YOLOX.is_file():
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(YOLOX), options, providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        feed = {inp.name: np.random.default_rng(0).random(shape, dtype=np.float32)}
        seconds = median_seconds(lambda: session.run(None, feed), args.repeats)
        import onnx

        params = sum(np.prod(t.dims) for t in onnx.load(str(YOLOX)).graph.initializer) / 1e6
        rows.append(("YOLOX-nano ONNX (onnxruntime)", f"{shape[2]}x{shape[3]} image", params, onnx_gflop(YOLOX), seconds))
    else:
        print(f"# YOLOX row skipped: {YOLOX} not found")

    for name in ("ViTPose-S", "ViTPose-B"):
        config = VitPoseConfig.from_preset(f"{name}-simple")
        model = VitPoseForPoseEstimation(config).eval()
        crop = torch.rand(1, 3, 256, 192)
        gflop = torch_gflop(model, crop)
        with torch.no_grad():
            seconds = median_seconds(lambda: model(pixel_values=crop), args.repeats)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append((f"{name} (simple head)", "one 256x192 crop", params, gflop, seconds))

    header = (f"# {cpu_description()}; torch {torch.__version__}, {args.threads} threads, "
              f"median of {args.repeats}")
    lines = [header, "", "| model | input | params (M) | GFLOP | ms per call |", "|---|---|---:|---:|---:|"]
    for name, what, params, gflop, seconds in rows:
        lines.append(f"| {name} | {what} | {params:.1f} | {gflop:.1f} | {seconds * 1e3:.0f} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
