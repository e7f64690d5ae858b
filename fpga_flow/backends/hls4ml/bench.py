"""`make bench`: wall time of every step and of the whole command, cold and warm, and throughput.

Writes <doc dir>/<model>.md and <model>.json (``--doc-dir``; default build/bench; `make bench` gives
docs/bench, the committed tables). Builds go to ``--out`` (default ./build).
Timings are measured here, never asserted in tests.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ... import layout
from ...toolchain import cpu_name
from . import csim as sim
from . import native


def _gpu() -> str | None:
    """The CUDA device the build's torch reference also ran on (``--device auto``), or None."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _hls(args: list[str], env: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "fpga_flow", "hls", *args, "-q"], env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"bench: `fpga-flow hls {' '.join(args)}` failed:\n{p.stderr[-2000:]}")
    model, out = args[args.index("--model") + 1], args[args.index("--out") + 1]
    return wall, json.loads((Path(out) / model / "report.json").read_text())


def main(a) -> int:
    if getattr(a, "fusion", False):
        return fusion(a)
    if getattr(a, "hls4ml_native", False):
        return native.bench(a)
    n = a.images
    args = ["--model", a.model, "-n", str(n or "all"), "--weight-bits", str(a.weight_bits), "--act-bits",
            str(a.act_bits), "--io-type", a.io_type, "--stock-check", str(a.stock_check), "--out", str(a.out)]
    runs = []
    with tempfile.TemporaryDirectory(prefix="fpga_flow_bench_cache_") as cold_cache:
        env = dict(os.environ, **{sim.CACHE_ENV: cold_cache})
        print("bench: cold build (empty csim cache) ...", file=sys.stderr)
        runs.append(("cold (csim compiled)",) + _hls(args, env))
        for i in range(max(1, a.repeat)):
            print(f"bench: warm build {i + 1} (csim cached by digest) ...", file=sys.stderr)
            runs.append(("warm (csim cached)",) + _hls(args, env))
    rep = runs[-1][2]
    # hls4ml's unmodified csim on the same inputs, for the speed comparison
    project = Path(a.out) / a.model / "hls"
    hw_in = np.load(Path(a.out) / a.model / "golden.npz")["hw_input"]
    hw_in = layout.channels_last(hw_in)
    k = min(len(hw_in), 1000)
    bins = sim.build(project, rep["digest"], sim.cache_dir(), ("exact", "stock"))
    _, t_stock = sim.run(bins["stock"], project, hw_in[:k], a.workers, progress=False)
    _, t_stock1 = sim.run(bins["stock"], project, hw_in[:k // 4], 1, progress=False)
    _, t_exact1 = sim.run(bins["exact"], project, hw_in, 1, progress=False)
    result = {
        "model": a.model, "n_images": rep["n_images"], "exact_matches": rep["exact_matches"],
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(), "gpu": _gpu()},
        "date": time.strftime("%Y-%m-%d"),
        "wall_s": {name: round(w, 2) for name, w, _ in runs},
        "steps_s": {name: r["timings_s"] for name, _, r in runs},
        "images_per_s": {
            "csim fpga_flow exact, all cores": rep["csim_samples_per_s"],
            "csim fpga_flow exact, 1 core": len(hw_in) / t_exact1,
            "csim hls4ml stock, all cores": k / t_stock,
            "csim hls4ml stock, 1 core": (k // 4) / t_stock1,
            "Brevitas torch CPU": rep["torch_samples_per_s"],
            "Brevitas torch CUDA": rep.get("torch_cuda_samples_per_s"),
        },
    }
    out = Path(a.doc_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.model}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{a.model}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# Benchmark: {r['model']}", "",
             f"Measured {r['date']} on {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
             f"{'GPU ' + m['gpu'] + ' (the Brevitas torch CUDA row)' if m.get('gpu') else 'no GPU'}. "
             f"Verification: {r['exact_matches']}/{r['n_images']} images bit-exact in every run.", "",
             "| `fpga-flow hls` run | wall time (s), whole command |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in r["wall_s"].items()]
    steps = list(next(iter(r["steps_s"].values())))
    lines += ["", "| step | " + " | ".join(r["steps_s"]) + " |", "|---|" + "---:|" * len(r["steps_s"])]
    for s in steps:
        lines.append(f"| {s} | " + " | ".join(f"{v.get(s, 0):.2f}" for v in r["steps_s"].values()) + " |")
    lines += ["", "| throughput, same inputs | images/s |", "|---|---:|"]
    lines += [f"| {k} | {v:,.0f} |" for k, v in r["images_per_s"].items() if v]
    return "\n".join(lines) + "\n"


def _hw_input(model: str, out) -> np.ndarray:
    x = np.load(Path(out) / model / "golden.npz")["hw_input"]
    return layout.channels_last(x)


def fusion(a) -> int:
    """The same model built with and without FuseConvRelu: design size and csim speed, one core each."""
    args = ["--model", a.model, "-n", str(a.images or "all"), "--weight-bits", str(a.weight_bits), "--act-bits",
            str(a.act_bits), "--stock-check", "0", "--out", str(a.out)]
    row = {"model": a.model, "date": time.strftime("%Y-%m-%d"),
           "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()}}
    for label, extra in (("unfused", ["--no-fuse"]), ("fused", [])):  # fused last: build/<model> stays the default
        print(f"bench: {a.model} {label} ...", file=sys.stderr)
        wall, rep = _hls(args + extra, dict(os.environ))
        project, x = Path(a.out) / a.model / "hls", _hw_input(a.model, a.out)
        bins = sim.build(project, rep["digest"], sim.cache_dir(), ("exact", "stock"))
        _, t_exact = sim.run(bins["exact"], project, x, 1, progress=False)
        k = min(len(x), 500)
        _, t_stock = sim.run(bins["stock"], project, x[:k], 1, progress=False)
        d = rep["hw"]["design"]
        row[label] = {"exact_matches": rep["exact_matches"], "n_images": rep["n_images"], "wall_s": round(wall, 2),
                      "kernel_calls": d["kernel_calls"], "internal_streams": d["internal_streams"],
                      "stream_bits_per_image": d["stream_bits_per_image"],
                      "fused_layers": [r["layer"] for r in rep["hw"]["layers"] if r.get("fused_from")],
                      "csim_exact_1core_images_per_s": round(len(x) / t_exact, 1),
                      "csim_stock_1core_images_per_s": round(k / t_stock, 1)}
    out = Path(a.doc_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "fusion.json"
    rows = json.loads(path.read_text()) if path.is_file() else {}
    rows[a.model] = row
    path.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    (out / "fusion.md").write_text(fusion_markdown(rows))
    print(fusion_markdown({a.model: row}))
    return 0


def fusion_markdown(rows: dict) -> str:
    lines = ["# Operator fusion: conv + ReLU + requantization in one kernel", "",
             "`make bench MODEL=<name> ARGS=--fusion` builds the model with `--no-fuse` (hls4ml's Conv2D and "
             "Activation layers) and fused (`FuseConvRelu`, our kernel `fpga_flow::conv_2d_relu_cl`; for the "
             "ConvNet also `MoveReluBeforeMaxPool`), verifies both with `==` and measures the C simulation on one "
             "core (our exact evaluation, and hls4ml's stock kernels). Streams: FIFOs between kernels inside the "
             "top function; bits/image: what they carry per image. No vendor tools here, so no resource or latency "
             "figures from synthesis.", "",
             "| model | design | bit-exact | kernels | streams | stream bits/image | csim exact, img/s (1 core) "
             "| csim stock, img/s (1 core) | make hls wall (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in sorted(rows.items()):
        for label in ("unfused", "fused"):
            v = r[label]
            lines.append(f"| {name} | {label} | {v['exact_matches']}/{v['n_images']} | {v['kernel_calls']} | "
                         f"{v['internal_streams']} | {v['stream_bits_per_image']:,} | "
                         f"{v['csim_exact_1core_images_per_s']:,.0f} | {v['csim_stock_1core_images_per_s']:,.0f} | "
                         f"{v['wall_s']:.1f} |")
    machines = sorted({f"{r['machine']['cpu']}, {r['machine']['cores']} cores ({r['date']})" for r in rows.values()})
    lines += ["", "Measured on: " + "; ".join(machines) + "."]
    return "\n".join(lines) + "\n"
