"""Side-by-side speed benchmark: vitpose_hf against transformers' VitPose route, in one run.

    python benchmarks/run.py [--quick] [--json FILE] [--device cpu|cuda] [--rows 1,2,3]

Builds the same random ViTPose weights in our classes and in transformers' classes, checks that
their outputs agree, then times each row (warm-up, several repeats, median) and prints one table
with our time, the reference time and the ratio (reference / ours: > 1 means we are faster).
Rows: 1 forward fp32, 2 forward bf16, 3 pre-processing, 4 post-processing, 5 end to end on the
real coco_sample images, 6 training input pipeline, 7 training step, 8 attention variants, 9 onnxruntime
fp32 / int8 (ViTPose-S and -B) and their keypoint deviation on a small trained model.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VITPOSE_SHARED", ROOT.parent / "shared"))
COCO_SAMPLE = SHARED / "data" / "coco_sample"

import transformers  # noqa: E402
from transformers import VitPoseConfig as TfConfig  # noqa: E402
from transformers import VitPoseForPoseEstimation as TfModel  # noqa: E402
from transformers import VitPoseImageProcessor as TfProcessor  # noqa: E402

import vitpose_hf  # noqa: E402
from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation  # noqa: E402
from vitpose_hf.image_io import to_rgb_pil  # noqa: E402
from vitpose_hf.inference import _onednn_op, inference_model  # noqa: E402

transformers.logging.set_verbosity_error()
ROWS: list[dict] = []
SKIPPED: list[str] = []  # why row groups did not run (printed, and written after the markdown table)


def guarded(label: str, fn, *args, **kwargs):
    """Run one group of rows; an error skips the rest of that group with its reason printed (the
    traceback goes to stderr) and the run goes on, so it always reaches its end and writes its tables."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - a benchmark must finish and say what it could not do
        traceback.print_exc(limit=4, file=sys.stderr)
        line = f"# {label} skipped: {type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
        print(line, flush=True)
        SKIPPED.append(line)
        return None


def isa_line() -> str:
    """The CPU's ISA flags that decide the kernels (AVX2 / AVX-512, native bf16, int8 VNNI)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    capability = torch.backends.cpu.get_cpu_capability()
    if not flags:
        return f"# ISA: unknown (no /proc/cpuinfo flags), torch CPU capability {capability}"
    names = (("avx2", ("avx2",)), ("avx512f", ("avx512f",)), ("avx512_bf16", ("avx512_bf16",)),
             ("amx", ("amx_tile", "amx_bf16")), ("vnni", ("avx512_vnni", "avx_vnni")))
    text = ", ".join(n if any(f in flags for f in fs) else f"no {n}" for n, fs in names)
    return f"# ISA: {text} (torch CPU capability {capability})"


def timeit(fn, repeats: int, warmup: int = 1, sync=None) -> float:
    """Median wall time of `fn()` in seconds."""
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timeit_interleaved(fns: dict, repeats: int, warmup: int = 1, sync=None) -> dict:
    """Median wall time (s) of each callable, timed in turn within every repeat, so that a load change
    on a shared machine hits all of them alike."""
    times = {name: [] for name in fns}
    for rep in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if sync:
                sync()
            if rep >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_fn(dtype, device):
    """(callable, GFLOP per call) of the peak-matmul probe: ViTPose-B's fc1 GEMM at batch 8, with the
    fastest of `torch.matmul` and (CPU) oneDNN's linear kernel, picked on the spot (the forward's
    linears use the latter, which beats `matmul` on this CPU)."""
    n, k, m = (1536, 768, 3072) if device == "cpu" else (8192, 8192, 8192)
    a = torch.randn(n, k, device=device, dtype=dtype)
    b = torch.randn(k, m, device=device, dtype=dtype)
    wt = b.t().contiguous()
    reps = 4 if device == "cpu" else 20
    candidates = {"matmul": lambda: a @ b}
    op = _onednn_op() if device == "cpu" else None
    if op is not None:
        try:  # probed for this dtype: oneDNN has no bf16 inner product on CPUs without AVX512-BF16/AMX
            with torch.inference_mode():
                op(a[:8], wt, None, "none", [], "")
            candidates["onednn linear"] = lambda: op(a, wt, None, "none", [], "")
        except RuntimeError as err:
            print(f"  peak probe: oneDNN linear skipped for {dtype} ({str(err)[:70]}...)", flush=True)
    with torch.inference_mode():
        best = min(candidates, key=lambda name: timeit(candidates[name], 3))
    fn = candidates[best]

    def run():
        with torch.inference_mode():
            for _ in range(reps):
                fn()

    return run, 2 * n * k * m * reps / 1e9


def bf16_skip_reason(device) -> str | None:
    """None when bf16 GEMMs run natively here, else why the bf16 timing rows are skipped: on CPUs
    without AVX512-BF16 / AMX (or ARM's bf16 extensions) bf16 matmuls are emulated, ~20x slower than
    fp32 (a ViTPose-B crop takes seconds), which would say nothing about the code and take an hour."""
    if device != "cpu":
        return None
    a = torch.randn(512, 512)
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        times[dtype] = timeit(lambda: x @ x, 3)
    if times[torch.bfloat16] > times[torch.float32]:
        return (f"bf16 matmul is emulated on this CPU ({times[torch.bfloat16] / times[torch.float32]:.0f}x slower than "
                "fp32: no AVX512-BF16/AMX); bf16 still works (tests), it is just not worth timing here")
    return None


def add_row(name, ours, ref, unit, extra="", higher_is_better=False):
    """One table row; ratio > 1 means we are better (faster)."""
    ratio = None
    if ours and ref:
        ratio = ours / ref if higher_is_better else ref / ours
    ROWS.append({"row": name, "ours": ours, "reference": ref, "unit": unit, "ratio": ratio, "notes": extra})
    ref_s = f"{ref:10.2f}" if ref is not None else "         -"
    ratio_s = f"{ratio:6.2f}x" if ratio is not None else "      -"
    print(f"{name:<50} {ours:10.2f} {ref_s} {unit:<10} {ratio_s}  {extra}", flush=True)


def build_pair(size="base", simple=False, layers=12, image_size=(256, 192)):
    """Transformers' model and ours with identical random weights (eval mode): the `size` preset of
    `VitPoseConfig.from_preset` (the one definition of the model sizes), `layers` deep; transformers'
    config is ours in its layout (`VitPoseConfig.to_transformers_dict`)."""
    config = VitPoseConfig.from_preset(size, image_size=image_size, num_hidden_layers=layers,
                                       use_simple_decoder=simple, drop_path_rate=0.0)
    torch.manual_seed(0)
    tf_model = TfModel(TfConfig(**config.to_transformers_dict())).eval()
    ours = VitPoseForPoseEstimation(config).eval()
    ours.load_state_dict(tf_model.state_dict(), strict=True)
    return tf_model, ours


def bf16_copy(model):
    """A bf16 copy (the fp32 original keeps its exact weights)."""
    return copy.deepcopy(model).to(torch.bfloat16)


REPORTED: set = set()


def fast(model, dtype=None, compile=False):
    """What the pipeline and the evaluation run: `inference_model` (the probed swaps on a copy); the
    swaps kept on this machine are printed once per dtype."""
    out = inference_model(model, dtype=dtype, compile=compile)
    key = str(dtype)
    if key not in REPORTED:
        REPORTED.add(key)
        print(f"# inference swaps {out.inference_report.summary()}", flush=True)
    return out


def count_flops(model, x) -> float:
    """Nominal FLOPs per crop of the plain forward (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / x.shape[0]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------- rows
def rows_forward(args, tf_model, ours, device):
    repeats = 3 if args.quick else 7
    flops = count_flops(ours, torch.randn(1, 3, 256, 192, device=device))
    print(f"# ViTPose-B 256x192 ({args.head} head) forward: {flops / 1e9:.1f} GFLOP per crop (FlopCounterMode, "
          "plain path; GFLOP/s below are these nominal FLOPs / time)")
    sync = torch.cuda.synchronize if device == "cuda" else None
    batches = (1, 8) if device == "cpu" else (1, 64)
    plain = ours
    ours = fast(plain)
    with torch.inference_mode():
        x = torch.randn(2, 3, 256, 192, device=device)
        diff = (tf_model(x).heatmaps - ours(x).heatmaps).abs().max().item()
        print(f"# outputs agree: max abs heatmap diff {diff:.2e} (fp32, swapped model vs transformers)")
    routes = [(torch.float32, ours, tf_model, "fp32")]
    skip16 = bf16_skip_reason(device)
    if skip16:
        print(f"# row 2 skipped: {skip16}")
    else:
        routes.append((torch.bfloat16, fast(plain, torch.bfloat16, compile=args.compile), bf16_copy(tf_model), "bf16"))
    for dtype, mine, ref, label in routes:
        peak_fn, peak_gflop = matmul_fn(dtype, device)
        for b in batches:
            x = torch.randn(b, 3, 256, 192, device=device)
            with torch.inference_mode():
                if args.compile and dtype == torch.bfloat16:
                    start = time.perf_counter()
                    mine(x)
                    print(f"# torch.compile first call, batch {b}: {time.perf_counter() - start:.0f} s")
                t = timeit_interleaved({"peak": peak_fn, "ours": lambda: mine(x), "ref": lambda: ref(x.to(dtype))},
                                       repeats, sync=sync)
            peak = peak_gflop / t["peak"]
            gf = flops / (t["ours"] / b) / 1e9
            add_row(f"{1 if label == 'fp32' else 2} forward B {label} batch {b}" + (" (compiled)" if args.compile and label == "bf16" else ""),
                    t["ours"] / b * 1e3, t["ref"] / b * 1e3, "ms/crop",
                    f"{gf:.0f} GFLOP/s = {100 * gf / peak:.0f}% of the {label} matmul peak ({peak:.0f} GFLOP/s, "
                    f"measured interleaved)" + ("; ref = transformers .to(bf16)" if label == "bf16" else ""))
    x = torch.randn(batches[-1], 3, 256, 192, device=device)
    with torch.inference_mode():
        t_plain = timeit(lambda: plain(x), max(2, repeats // 2), sync=sync) / x.shape[0]
    print(f"# ours without the inference swaps (plain model(x)), fp32 batch {x.shape[0]}: {t_plain * 1e3:.1f} ms/crop")
    return flops


def load_coco_sample():
    ann = json.loads((COCO_SAMPLE / "test_coco.json").read_text())
    dets = json.loads((COCO_SAMPLE / "test_coco_det_AP_H_56.json").read_text())
    images, boxes = [], []
    DET_SCORES.clear()
    for info in ann["images"]:
        images.append(to_rgb_pil(COCO_SAMPLE / info["file_name"]))
        mine = [d for d in dets if d["image_id"] == info["id"] and d["category_id"] == 1]
        boxes.append([d["bbox"] for d in mine])
        DET_SCORES.extend(d["score"] for d in mine)
    return images, boxes


DET_SCORES: list[float] = []  # detection scores of the last load_coco_sample, in box order


def keypoint_deviation_bf16(model, processor, device, images=None, boxes=None):
    """Keypoint distances (px) between `model` in fp32 and its bf16 fast path, flip test on, on the
    coco_sample images and detections: (max, median, 95th percentile, number of keypoints)."""
    from vitpose_hf.keypoint_schemas import get_schema

    if images is None:
        images, boxes = load_coco_sample()
    pairs = get_schema("coco").flip_pairs
    size = tuple(model.config.image_size)
    inputs = processor(images, boxes=boxes, return_tensors="pt", size={"height": size[0], "width": size[1]})
    px = inputs["pixel_values"].to(device)
    model16 = fast(model, torch.bfloat16)
    model = fast(model)
    h32 = processor.predict_heatmaps(model, px, flip_test=True, flip_pairs=pairs)
    h16 = processor.predict_heatmaps(model16, px, flip_test=True, flip_pairs=pairs)
    r32 = processor.post_process_pose_estimation(h32.cpu(), boxes=boxes)
    r16 = processor.post_process_pose_estimation(h16.cpu(), boxes=boxes)
    dev = torch.stack([(a["keypoints"] - b["keypoints"]).norm(dim=-1) for ai, bi in zip(r32, r16) for a, b in zip(ai, bi)])
    dev_hm = (processor.decode_heatmaps(h32.cpu())[0] - processor.decode_heatmaps(h16.cpu())[0]).norm(dim=-1)
    real = torch.tensor(DET_SCORES) >= 0.5  # person detections (the rest are the detector's low-score boxes)
    return {"max": dev.max().item(), "median": dev.median().item(), "p95": dev.quantile(0.95).item(),
            "count": dev.numel(), "persons": int(real.sum()), "real_max": dev[real].max().item(),
            "real_median": dev[real].median().item(), "real_max_hm": dev_hm[real].max().item()}


def rows_processing(args):
    """Rows 3 and 4 with the run's thread count and, if that is not 1, single-threaded (the reference
    is numpy/scipy and single-threaded either way; on a loaded machine torch's intra-op threads can
    cost more than they save on these small tensors)."""
    counts = [args.threads] if args.threads == 1 else [args.threads, 1]
    for threads in counts:
        torch.set_num_threads(threads)
        _rows_processing(args, "" if threads == args.threads else ", 1 thread")
    torch.set_num_threads(args.threads)


def _rows_processing(args, suffix):
    from PIL import Image

    from vitpose_hf.image_processing_vitpose import VitPoseTopDownImageProcessor

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    ours, ref = VitPoseTopDownImageProcessor(), TfProcessor()
    repeats = 3 if args.quick else 7
    for n in (5, 40):
        xy = rng.uniform(0, 400, (n, 2))
        wh = rng.uniform(30, 220, (n, 2))
        boxes = [np.concatenate([xy, wh], 1).tolist()]
        t = timeit_interleaved({"ours": lambda: ours(image, boxes=boxes, return_tensors="pt"),
                                "ref": lambda: ref(image, boxes=boxes, return_tensors="pt")}, repeats)
        t_ours, t_ref = t["ours"], t["ref"]
        add_row(f"3 pre-processing 640x480, {n} boxes{suffix}", t_ours * 1e3, t_ref * 1e3, "ms/image",
                f"{t_ours / n * 1e3:.2f} vs {t_ref / n * 1e3:.2f} ms/box")
    for n in (5, 40):
        xy = rng.uniform(0, 400, (n, 2))
        wh = rng.uniform(30, 220, (n, 2))
        boxes = [np.concatenate([xy, wh], 1).tolist()]
        heat = torch.rand(n, 17, 64, 48)

        class _Out:
            heatmaps = heat

        t = timeit_interleaved({"ours": lambda: ours.post_process_pose_estimation(heat, boxes=boxes),
                                "ref": lambda: ref.post_process_pose_estimation(_Out(), boxes=boxes)}, repeats)
        t_ours, t_ref = t["ours"], t["ref"]
        add_row(f"4 post-processing {n} persons{suffix}", t_ours * 1e3, t_ref * 1e3, "ms/image",
                f"{t_ours / n * 1e3:.3f} vs {t_ref / n * 1e3:.3f} ms/person")


def rows_end_to_end(args, tf_model, ours, device):
    from vitpose_hf.image_processing_vitpose import VitPoseTopDownImageProcessor
    from vitpose_hf.keypoint_schemas import get_schema

    images, boxes = load_coco_sample()
    n_persons = sum(len(b) for b in boxes)
    pairs = get_schema("coco").flip_pairs
    ours_proc, ref_proc = VitPoseTopDownImageProcessor(), TfProcessor()
    flip_t = torch.tensor(pairs)

    def run_ours(model):
        inputs = ours_proc(images, boxes=boxes, return_tensors="pt")
        with torch.inference_mode():
            heat = ours_proc.predict_heatmaps(model, inputs["pixel_values"].to(device), flip_test=True, flip_pairs=pairs,
                                              batch_size=args.e2e_batch)
        return ours_proc.post_process_pose_estimation(heat.float().cpu(), boxes=boxes)

    def run_ref():
        # transformers' route, flip done by hand as its docs show: processor per image, model on
        # crops and mirrored crops (flip_pairs flips back), average, its post-processing.
        results = []
        for image, bxs in zip(images, boxes):
            inputs = ref_proc(image, boxes=[bxs], return_tensors="pt")
            px = inputs["pixel_values"].to(device)
            with torch.inference_mode():
                h = tf_model(px).heatmaps
                hf = tf_model(px.flip(-1), flip_pairs=flip_t).heatmaps
            out = type("O", (), {"heatmaps": ((h + hf) / 2).float().cpu()})()
            results.append(ref_proc.post_process_pose_estimation(out, boxes=[bxs]))
        return results

    skip16 = bf16_skip_reason(device)
    ours16 = None if skip16 else fast(ours, torch.bfloat16, compile=args.compile)
    if skip16:
        print(f"# row 5 bf16 and the random-model bf16 deviation skipped: {skip16}")
    plain, ours = ours, fast(ours)
    # one pass each (a pass is 236 ViTPose-B crops per route): warm up on the first image only
    full = (images, boxes)
    images, boxes = full[0][:1], full[1][:1]
    routes = {"ours": lambda: run_ours(ours), "ref": run_ref}
    if ours16 is not None:
        routes["ours16"] = lambda: run_ours(ours16)
    for route in routes.values():
        route()
    images, boxes = full
    t = timeit_interleaved(routes, repeats=1, warmup=0)
    t_ours, t_ref = t["ours"], t["ref"]
    add_row("5 end to end coco_sample, flip, fp32", n_persons / t_ours, n_persons / t_ref, "persons/s",
            f"{n_persons} detections in {len(images)} images, {args.e2e_batch} crops (+ mirrors) per forward; "
            "ratio = our speed / transformers' speed (its route: per image, 2 forwards)",
            higher_is_better=True)
    if ours16 is not None:
        add_row("5 end to end coco_sample, flip, ours bf16", n_persons / t["ours16"], n_persons / t_ref, "persons/s",
                "ratio = ours bf16 / transformers fp32 speed", higher_is_better=True)
    del ours16
    deviation_models = [("trained model", None)] if skip16 else [("ViTPose-B random", plain), ("trained model", None)]
    for label, model in deviation_models:
        if model is None:
            if not args.peaked_model:
                break
            model = VitPoseForPoseEstimation.from_pretrained(args.peaked_model).eval().to(device)
            label = f"trained model ({args.peaked_model})"
        d = keypoint_deviation_bf16(model, ours_proc, device, images, boxes)
        add_row(f"2 bf16 vs fp32 keypoints, {label.split(' (')[0]}", d["real_max"], None, "px (max)",
                f"{label}: {d['persons']} detections with score >= 0.5: max {d['real_max']:.2f} image px = "
                f"{d['real_max_hm']:.2f} heatmap px, median {d['real_median']:.3f} px; all {d['count'] // 17} "
                f"detections: max {d['max']:.1f} px, 95% {d['p95']:.2f} px, median {d['median']:.3f} px")


def rows_training_input(args):
    from vitpose_hf.data import TopDownTransform, load_coco_keypoints

    ann = SHARED / "data" / "coco_mini_train" / "person_keypoints.json"
    ds = load_coco_keypoints(str(ann), str(ann.parent / "images"))
    transform = TopDownTransform("coco", image_size=(256, 192), seed=0)
    n = min(len(ds), 32 if args.quick else 86)
    rows = ds[:n]
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    t = timeit(lambda: transform(rows), 2 if args.quick else 5)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    add_row("6 training input pipeline, 1 core", n / t, None, "samples/s/core",
            f"{n} augmented 256x192 crops + UDP targets incl. JPEG decode (coco_mini_train), 1 thread")


def rows_training_step(args, device):
    cfg = VitPoseConfig.from_preset("small", drop_path_rate=0.1)
    model = VitPoseForPoseEstimation(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randn(8, 3, 256, 192, device=device)
    y = torch.rand(8, 17, 64, 48, device=device)
    w = torch.ones(8, 17, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else None

    def step(autocast):
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
            loss = model(x, labels=y, target_weight=w).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    repeats = 2 if args.quick else 4
    t32 = timeit(lambda: step(False), repeats, sync=sync)
    t16 = timeit(lambda: step(True), repeats, sync=sync)
    add_row("7 training step ViTPose-S b8 fp32", 8 / t32, None, "samples/s", "fused AdamW (torch.optim.AdamW(fused=True)), grad clip, drop path 0.1")
    add_row("7 training step ViTPose-S b8 bf16 autocast", 8 / t16, None, "samples/s", "same, torch.autocast(bf16)")


def rows_attention(args):
    path = ROOT / "benchmarks" / "attention_variants.py"
    if not path.exists():
        print("# row 8: benchmarks/attention_variants.py not present")
        return
    import importlib.util

    spec = importlib.util.spec_from_file_location("attention_variants", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if hasattr(module, "run_rows"):
        for row in module.run_rows(quick=args.quick):
            add_row(f"8 attention {row['name']} 576x432", row["ms"], row.get("global_ms"), "ms/crop",
                    f"peak mem {row.get('peak_mb', float('nan')):.0f} MB (global {row.get('global_peak_mb', float('nan')):.0f} MB)")


def rows_onnx(args, device):
    """Row 9: onnxruntime fp32 / int8 vs our PyTorch fp32 (inference_model) vs transformers, ViTPose-S
    and -B with random weights; then the keypoint deviation of both graphs on a small trained model."""
    if device != "cpu":
        print(f"# row 9 skipped: the onnxruntime rows run on the CPU (device {device})")
        return
    try:
        import onnxruntime as ort

        from vitpose_hf.export import export_onnx
        from vitpose_hf.onnx_backend import OnnxPoseModel
    except ImportError as err:
        print(f"# row 9 skipped: {err} (pip install 'vitpose_hf[onnx]')")
        return
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    # no busy-waiting of onnxruntime's pool after a run: it would steal the cores from the next
    # (interleaved) PyTorch call and bias the comparison
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    repeats = 3 if args.quick else 7
    sizes = {"S": ("small", min(12, args.layers)), "B": ("base", args.layers)}
    for name, (size, layers) in sizes.items():
        tf_model, plain = build_pair(size, simple=args.head == "simple", layers=layers)
        mine = fast(plain)
        with tempfile.TemporaryDirectory() as tmp:
            export_onnx(plain, tmp, quantize="int8")
            fp32 = OnnxPoseModel.from_pretrained(tmp, session_options=opts)
            int8 = OnnxPoseModel.from_pretrained(tmp, file_name="model_quantized.onnx", session_options=opts)
            for b in (1, 8):
                x = torch.randn(b, 3, 256, 192)
                with torch.inference_mode():
                    t = timeit_interleaved({"ours": lambda: mine(x), "tf": lambda: tf_model(x),
                                            "ort": lambda: fp32(x), "int8": lambda: int8(x)}, repeats)
                ms = {k: v / b * 1e3 for k, v in t.items()}
                add_row(f"9 ours fp32 {name} batch {b}", ms["ours"], ms["tf"], "ms/crop",
                        "reference = transformers fp32; ours = inference_model (what the pipeline runs)")
                add_row(f"9 onnxruntime fp32 {name} batch {b}", ms["ort"], ms["ours"], "ms/crop",
                        f"reference = our PyTorch fp32; target >= 1.00x; transformers {ms['tf']:.1f} ms/crop")
                add_row(f"9 onnxruntime int8 {name} batch {b}", ms["int8"], ms["ours"], "ms/crop",
                        "reference = our PyTorch fp32; target >= 1.80x (dynamic quantization of the MatMuls)")
        del tf_model, plain, mine
    onnx_deviation_rows(args, opts)


def onnx_deviation_rows(args, opts):
    """Keypoint deviation (image px) of the fp32 and int8 graphs from our PyTorch fp32, flip test on,
    with a small trained model (random weights give flat heatmaps: no meaningful deviation)."""
    from vitpose_hf.data.synthetic import make_synthetic_coco
    from vitpose_hf.export import export_onnx
    from vitpose_hf.image_processing_vitpose import VitPoseTopDownImageProcessor
    from vitpose_hf.keypoint_schemas import get_schema
    from vitpose_hf.onnx_backend import OnnxPoseModel

    work = Path(tempfile.mkdtemp(prefix="vitpose_bench_"))
    if args.trained_model:
        model = VitPoseForPoseEstimation.from_pretrained(args.trained_model).eval()
        label = f"trained model {args.trained_model}"
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import train_tiny_model

        start = time.perf_counter()
        model, _, _ = train_tiny_model(work / "trained", steps=args.train_steps)
        label = f"tiny model trained {args.train_steps} steps on synthetic people ({time.perf_counter() - start:.0f} s)"
    height, width = (int(v) for v in model.config.image_size)
    processor = VitPoseTopDownImageProcessor(size={"height": height, "width": width})
    export_onnx(model, work / "onnx", quantize="int8", image_processor=processor)
    graphs = {"fp32": OnnxPoseModel.from_pretrained(work / "onnx", session_options=opts),
              "int8": OnnxPoseModel.from_pretrained(work / "onnx", file_name="model_quantized.onnx", session_options=opts)}
    mine = fast(model)
    pairs = get_schema("coco").flip_pairs
    ann_file, image_dir = make_synthetic_coco(work / "heldout", 30, image_size=(128, 96), seed=1234)
    ann = json.loads(Path(ann_file).read_text())
    synth_images = [to_rgb_pil(Path(image_dir) / i["file_name"]) for i in ann["images"]]
    synth_boxes = [[a["bbox"] for a in ann["annotations"] if a["image_id"] == i["id"]] for i in ann["images"]]
    real_images, real_boxes = load_coco_sample()
    for where, images, boxes in (("held-out synthetic", synth_images, synth_boxes),
                                 ("coco_sample detections", real_images, real_boxes)):
        px = processor(images, boxes=boxes, return_tensors="pt")["pixel_values"]
        ref = processor.post_process_pose_estimation(
            processor.predict_heatmaps(mine, px, flip_test=True, flip_pairs=pairs), boxes=boxes)
        ref_kp = torch.cat([p["keypoints"] for r in ref for p in r])
        ref_sc = torch.cat([p["scores"] for r in ref for p in r])
        confident = ref_sc >= 0.5
        for gname, graph in graphs.items():
            out = processor.post_process_pose_estimation(
                processor.predict_heatmaps(graph, px, flip_test=True, flip_pairs=pairs), boxes=boxes)
            dev = (torch.cat([p["keypoints"] for r in out for p in r]) - ref_kp).norm(dim=-1)
            top = dev[confident].max().item() if confident.any() else float("nan")
            target = "; target <= 1 px" if gname == "int8" else ""
            add_row(f"9 onnxruntime {gname} vs PyTorch keypoints, {where}", top, None, "px (max)",
                    f"{label}: {int(confident.sum())} of {dev.numel()} keypoints with score >= 0.5, max {top:.3f} px "
                    f"there{target}; all keypoints: max {dev.max().item():.3f} px, median {dev.median().item():.4f} px")


def markdown_table(header: list[str]) -> str:
    """The rows as a markdown table, preceded by the `#` header lines of the run."""
    lines = [f"    {h}" for h in header] + ["", "| row | ours | reference | unit | ratio | notes |", "|---|---:|---:|---|---:|---|"]
    for r in ROWS:
        ref = "-" if r.get("reference") is None else f"{r['reference']:.2f}"
        ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.2f}x"
        lines.append(f"| {r['row']} | {r['ours']:.2f} | {ref} | {r.get('unit', '')} | {ratio} | {r.get('notes', '')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--json", help="write the rows to this JSON file")
    parser.add_argument("--markdown", help="write the header and the rows as a markdown table to this file")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", default="1,2,3,4,5,6,7,8,9", help="comma-separated row numbers")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--head", choices=("simple", "classic"), default="simple",
                        help="ViTPose-B head for rows 1, 2, 5 (simple: the hub's vitpose-base-simple, 33.6 GFLOP)")
    parser.add_argument("--layers", type=int, default=12, help="encoder depth (12 = ViTPose-B; fewer for a smoke run)")
    parser.add_argument("--e2e-batch", type=int, default=8,
                        help="row 5: crops per forward in our route (x2 with the mirrored crops)")
    parser.add_argument("--compile", action="store_true", help="bf16 rows with torch.compile (slow first call)")
    parser.add_argument("--peaked-model", help="a trained VitPoseForPoseEstimation directory for the bf16 "
                        "keypoint deviation with peaked heatmaps (random weights give flat ones)")
    parser.add_argument("--trained-model", help="row 9: a trained VitPoseForPoseEstimation directory for the "
                        "onnxruntime keypoint deviation (default: train tests/conftest.py's tiny model here)")
    parser.add_argument("--train-steps", type=int, default=1500, help="row 9: steps of that tiny model")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        import cv2

        cv2.setNumThreads(args.threads)
    except ImportError:
        pass
    wanted = {int(r) for r in args.rows.split(",")}
    header = [
        f"# vitpose_hf {vitpose_hf.__version__} vs transformers {transformers.__version__}, torch {torch.__version__}",
        f"# machine: {cpu_name()}, {os.cpu_count()} cpus, {args.threads} threads, device {args.device}, "
        f"load average {os.getloadavg()[0]:.2f} at start, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        isa_line(),
        "# command: python " + " ".join(sys.argv),
    ]
    for line in header:
        print(line)
    if args.device != "cpu":
        try:
            torch.empty(1, device=args.device)
        except Exception as err:  # noqa: BLE001 - no such device here: its rows are skipped, the CPU rows run
            skipped = sorted(wanted & {1, 2, 5, 7})
            line = (f"# row{'s' if len(skipped) != 1 else ''} {', '.join(map(str, skipped)) or '-'} skipped: device {args.device} is not usable here "
                    f"({type(err).__name__}: {str(err).splitlines()[0][:120]})")
            print(line)
            SKIPPED.append(line)
            wanted -= {1, 2, 5, 7}
    print(f"{'row':<50} {'ours':>10} {'reference':>10} {'unit':<10} {'ratio':>7}  notes")
    tf_model = ours = None
    if wanted & {1, 2, 5}:
        tf_model, ours = build_pair(simple=args.head == "simple", layers=args.layers)
        tf_model.to(args.device)
        ours.to(args.device)
    if wanted & {1, 2}:
        guarded("rows 1-2", rows_forward, args, tf_model, ours, args.device)
    if wanted & {3, 4}:
        guarded("rows 3-4", rows_processing, args)
        torch.set_num_threads(args.threads)
    if 5 in wanted:
        guarded("row 5", rows_end_to_end, args, tf_model, ours, args.device)
    del tf_model, ours
    if 6 in wanted:
        guarded("row 6", rows_training_input, args)
        torch.set_num_threads(args.threads)
    if 7 in wanted:
        guarded("row 7", rows_training_step, args, args.device)
    if 8 in wanted and args.device == "cpu":
        guarded("row 8", rows_attention, args)
    if 9 in wanted:
        guarded("row 9", rows_onnx, args, args.device)
    header.append(f"# load average {os.getloadavg()[0]:.2f} at the end, {time.strftime('%H:%M UTC', time.gmtime())}")
    print(header[-1])
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(header) + "".join(f"\n    {line}" for line in SKIPPED)
                                       + ("\n" if SKIPPED else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": ROWS, "skipped": SKIPPED, "argv": sys.argv,
                                               "load": os.getloadavg()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
