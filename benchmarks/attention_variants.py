"""Time and peak memory of global vs window / shifted-window / pooled-window attention at 576x432.

    python benchmarks/attention_variants.py [--layers 2] [--batch 1] [--repeats 3] [--window 12 9]
        [--impls sdpa,eager] [--train] [--device cpu|cuda] [--threads N] [--json FILE]

Two tables: the attention of one layer alone (q, k, v given; every impl in `--impls`), then the
whole model (first impl only).

A ViTPose-B-width backbone (768 wide, 12 heads, MLP x4; only `--layers` layers to keep the run
short) with the classic head, on a 576x432 input (36 x 27 = 972 tokens at stride 16). Every
configuration runs in a fresh subprocess on CPU so that its peak resident memory is its own
(`/proc/self/clear_refs` resets the high-water mark after the model is built; the number reported
is the peak increase during the forward passes, i.e. activations and attention buffers). On CUDA it
is `torch.cuda.max_memory_allocated` minus the memory held before the passes. Time is the median
of `--repeats` passes after one warm-up pass; `--train` times forward + backward instead.

`run_rows(quick)` gives the rows to `benchmarks/run.py` (row 8).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

DEFAULTS = dict(layers=2, batch=1, repeats=3, window=(12, 9), height=576, width=432)
KINDS = ("global", "window", "shifted_window", "pooled_window")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(kind: str, impl: str, layers: int, batch: int, window, height: int, width: int, repeats: int,
            device: str = "cpu", train: bool = False) -> dict:
    """Build one model and time it. Returns `{"ms": median ms per pass, "peak_mb": peak MB, ...}`."""
    from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation

    torch.manual_seed(0)
    config = VitPoseConfig.from_preset(
        "base", num_hidden_layers=layers, image_size=(height, width), attention_type=kind,
        window_size=tuple(window), drop_path_rate=0.0,
    )
    model = VitPoseForPoseEstimation(config).to(device)
    model.config._attn_implementation = impl
    model.train(train)
    x = torch.randn(batch, 3, height, width, device=device)

    def one_pass():
        if train:
            model(x).heatmaps.float().square().mean().backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                model(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    grid = model.backbone.embeddings.grid
    return _time_and_peak(one_pass, repeats, device, batch, {"kind": kind, "impl": impl, "tokens": grid[0] * grid[1]})


def measure_op(kind: str, impl: str, batch: int, window, height: int, width: int, repeats: int,
               device: str = "cpu", size: str = "base", **_) -> dict:
    """Only the attention of one layer (q, k, v given) of the `size` preset, as the model calls it: ms
    and peak MB."""
    from vitpose_hf import VitPoseConfig
    from vitpose_hf.attention import build_attention_mask_fn, sdpa_or_eager_attention

    preset = VitPoseConfig.from_preset(size)
    hidden, heads = preset.hidden_size, preset.num_attention_heads
    grid = (height // 16, width // 16)
    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, grid[0] * grid[1], hidden, device=device) for _ in range(3))
    fn = build_attention_mask_fn(kind, grid, tuple(window), kind == "shifted_window", 0)

    def one_pass():
        with torch.no_grad():
            fn(q, k, v, num_heads=heads, scaling=(hidden // heads) ** -0.5, impl=impl, module=None, dropout=0.0,
               kernel=sdpa_or_eager_attention, output_attentions=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return _time_and_peak(one_pass, repeats, device, batch, {"kind": kind, "impl": impl, "tokens": grid[0] * grid[1]})


def _time_and_peak(one_pass, repeats, device, batch, row):
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
        _reset_peak()
    one_pass()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if cuda else _peak_bytes()) - base
    return dict(row, ms=1000 * statistics.median(times) / batch, peak_mb=peak / 2**20)


def _measure_isolated(kind, impl, opts) -> dict:
    """`measure` (or `measure_op` with `op=True`) in a fresh Python process (CPU peak memory is per process)."""
    payload = json.dumps(dict(kind=kind, impl=impl, **opts))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", payload],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed for {kind}/{impl}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_table(layers, batch, window, height, width, repeats, impls, device="cpu", train=False, threads=None,
              op=False):
    """All rows: one per (impl, kind), with the ratio to global attention of the same impl.
    `op=True`: the attention of one layer only (`measure_op`) instead of the model."""
    opts = dict(layers=layers, batch=batch, window=list(window), height=height, width=width, repeats=repeats,
                device=device, train=train, threads=threads, op=op)
    rows = []
    for impl in impls:
        base = None
        for kind in KINDS:
            if device == "cpu":
                row = _measure_isolated(kind, impl, opts)
            elif op:
                row = measure_op(kind, impl, batch, window, height, width, repeats, device)
            else:
                row = measure(kind, impl, layers, batch, window, height, width, repeats, device, train)
            if kind == "global":
                base = row
            row["global_ms"], row["global_peak_mb"] = base["ms"], base["peak_mb"]
            rows.append(row)
    return rows


def run_rows(quick: bool = False) -> list[dict]:
    """Rows for `benchmarks/run.py`: name, ms, global_ms, peak_mb, global_peak_mb (SDPA, inference)."""
    d = DEFAULTS
    rows = run_table(d["layers"], d["batch"], d["window"], d["height"], d["width"], 2 if quick else d["repeats"],
                     ["sdpa"], threads=torch.get_num_threads())
    return [dict(row, name=f"{row['kind']} ({row['impl']})") for row in rows]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=DEFAULTS["layers"])
    parser.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    parser.add_argument("--repeats", type=int, default=DEFAULTS["repeats"])
    parser.add_argument("--window", type=int, nargs=2, default=DEFAULTS["window"])
    parser.add_argument("--size", type=int, nargs=2, default=(DEFAULTS["height"], DEFAULTS["width"]))
    parser.add_argument("--impls", default="sdpa,eager")
    parser.add_argument("--train", action="store_true", help="time forward + backward")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        opts = json.loads(args.worker)
        threads = opts.pop("threads", None)
        if threads:
            torch.set_num_threads(int(threads))
        print(json.dumps(measure_op(**opts) if opts.pop("op") else measure(**opts)))
        return 0
    threads = args.threads or torch.get_num_threads()
    print(f"# ViTPose-B width, {args.layers} layers, batch {args.batch}, input {args.size[0]}x{args.size[1]}, "
          f"window {args.window[0]}x{args.window[1]}, {'forward+backward' if args.train else 'forward (no grad)'}, "
          f"device {args.device}, {threads} threads, torch {torch.__version__}")
    impls = args.impls.split(",")
    rows = []
    for op in (True, False):
        part = run_table(args.layers, args.batch, args.window, args.size[0], args.size[1], args.repeats,
                         impls if op else impls[:1], args.device, args.train and not op, threads, op=op)
        title = "one attention op (q, k, v given)" if op else f"whole model ({args.layers} layers + head)"
        print(f"## {title}")
        print(f"{'attention':<16} {'impl':<6} {'tokens':>6} {'ms/crop':>9} {'vs global':>9} {'peak MB':>9} {'vs global':>9}")
        for r in part:
            print(f"{r['kind']:<16} {r['impl']:<6} {r['tokens']:>6} {r['ms']:>9.1f} {r['ms'] / r['global_ms']:>8.2f}x "
                  f"{r['peak_mb']:>9.1f} {r['peak_mb'] / max(r['global_peak_mb'], 1e-9):>8.2f}x")
            rows.append(dict(r, scope="op" if op else "model"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
