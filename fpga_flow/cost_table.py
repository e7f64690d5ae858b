"""One table, side by side, for every zoo model: the rtl backend (measured), FINN (its estimate at the same
fps) and hls4ml (our estimate at the reuse factors ``--fit`` chose). ``python -m fpga_flow.cost_table``.

The RTL columns are *read* from ``docs/bench/rtl.md`` (Verilator cycles, yosys counts, nextpnr Fmax, each
measured by the rtl backend's own builds); a model with no row there is shown as not run. For each model
this script then builds, on the same shipped checkpoint and the same first N test images:

* FINN at ``--target-fps`` = the RTL row's measured images/s at 100 MHz (FINN's default 10,000 where there
  is no RTL row), verified ``==`` at every FINN stage; its figures are FINN's analytic estimate;
* hls4ml with ``--fit`` (reuse factors chosen so our estimate fits the part), verified ``==`` in C
  simulation; its figures are our estimate (docs/estimates.md).

A model a backend refuses (FINN and BatchNorm, say) gets the refusal's first words in its cells.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
from pathlib import Path

from . import api, parts, zoo
from .config import BuildConfig
from .errors import FlowError

MODELS = ("convnet", "convrelu", "dwsep", "mlp", "mlp_tiny", "convnet_bn", "mlp_bn")
FINN_DEFAULT_FPS = 10_000
RTL_COLUMNS = {"images": "images `==` golden (Verilator)", "cycles": "cycles/image (sim)",
               "fps": "images/s at 100 MHz", "lut": "LUT", "ff": "FF", "dsp": "DSP", "bram": "BRAM18",
               "fmax": "ECP5 Fmax MHz (nextpnr)", "folding": "folding (PE,SIMD per MVU)"}


def _num(s: str) -> float | None:
    s = (s or "").replace(",", "").replace("*", "").strip()
    try:
        return float(s)
    except ValueError:
        return None


def rtl_all_rows(path: Path) -> list[tuple[str, dict]]:
    """(label, row) for every measured row of docs/bench/rtl.md's first table, columns named by the header."""
    lines = path.read_text().splitlines() if path.is_file() else []
    rows: list[tuple[str, dict]] = []
    header = None
    for line in lines:
        if not line.startswith("|"):
            if header and rows:
                break  # the first table only
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            if cells and cells[0] == "model":
                header = cells
            continue
        if set(cells[0]) <= set("-: "):
            continue
        row = dict(zip(header, cells))
        rows.append((cells[0], {k: row.get(h) for k, h in RTL_COLUMNS.items()}))
    return rows


def _model_of(label: str) -> str:
    """"convnet, multi-tap window" -> convnet: rtl.md labels extra design points after the model's name."""
    return label.replace(",", " ").split()[0]


def rtl_rows(path: Path) -> dict[str, dict]:
    """Each model's first row: the design point the FINN column was run against (same fps)."""
    rows: dict[str, dict] = {}
    for label, r in rtl_all_rows(path):
        rows.setdefault(_model_of(label), r)
    return rows


def rtl_other_rows(path: Path) -> list[tuple[str, dict]]:
    """The rows after a model's first: other measured design points, listed under the table."""
    seen: set[str] = set()
    out = []
    for label, r in rtl_all_rows(path):
        m = _model_of(label)
        if m in seen:
            out.append((label, r))
        seen.add(m)
    return out


def _refusal(e: Exception | str) -> str:
    """A refusal's first sentence (the node and why), short enough for a table cell."""
    text = str(e).split("\n")[0].split(". ")[0]
    return text if len(text) <= 140 else text[:137] + "..."


def finn_cell(model: str, fps: int, n: int, out: Path) -> dict:
    cfg = BuildConfig(model=model, backend="finn", n_images=n, device="cpu", extra={"target_fps": fps})
    try:
        rep = api.build_zoo(cfg, out_dir=out, progress=False)
    except FlowError as e:
        return {"refused": _refusal(e), "target_fps": fps}
    f = rep["hw"]["finn"]
    e, t = f["estimate"], f["estimate"]["total"]
    avail = parts.resources(cfg.part)
    util = {k: round(100.0 * float(t[f_]) / avail[k], 1) for f_, k in (("LUT", "lut"), ("BRAM_18K", "bram18k"),
                                                                          ("DSP", "dsp"))}
    return {"target_fps": fps, "exact": f"{rep['exact_matches']}/{rep['n_images']}",
            "cycles": e["max_cycles"], "fps": e["throughput_fps"], "latency_cycles": e["critical_path_cycles"],
            "lut": t["LUT"], "bram18k": t["BRAM_18K"], "dsp": t["DSP"], "utilisation_pct": util,
            "fits": all(v <= 100 for v in util.values()),
            "folding": [(r["PE"], r["SIMD"]) for r in e["layers"] if r["op"].startswith("MVAU")
                        or r["op"].startswith("VVAU")]}


def hls4ml_cell(model: str, n: int, out: Path) -> dict:
    cfg = BuildConfig(model=model, n_images=n, stock_check_images=min(n, 20), fit=True)
    try:
        rep = api.build_zoo(cfg, out_dir=out, progress=False)
    except FlowError as e:
        return {"refused": _refusal(e)}
    est, res = rep["hw"]["estimate"], rep["hw"]["fit"]
    r = est["resources"]
    return {"exact": f"{rep['exact_matches']}/{rep['n_images']}", "cycles": est["interval_cycles"],
            "fps": est["throughput_per_s"], "latency_cycles": est["latency_cycles"],
            "lut": r["lut"]["value"], "ff": r["ff"]["value"], "dsp": r["dsp"]["value"],
            "bram18k": r["bram18k"]["value"], "utilisation_pct": est["utilisation_pct"], "fits": res["fits"],
            "reuse_factors": {x["layer"]: x["reuse_factor"] for x in res["layers"]}}


def _i(v) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _rtl_md(r: dict | None) -> list[str]:
    if not r:
        return ["not run"] * 5
    return [r["images"], f"{r['cycles']} / {r['fps']}", f"{r['lut']} / {r['ff']} / {r['dsp']} / {r['bram']}",
            r["fmax"], r["folding"]]


def _finn_md(c: dict) -> list[str]:
    if "refused" in c:
        return [f"refused: {_refusal(c['refused'])}"] + ["-"] * 3
    fit = "yes" if c["fits"] else "**NO**"
    return [f"{c['target_fps']:,} ({c['exact']} `==`)", f"{_i(c['cycles'])} / {_i(c['fps'])}",
            f"{_i(c['lut'])} / - / {_i(c['dsp'])} / {_i(c['bram18k'])}", fit]


def _hls_md(c: dict) -> list[str]:
    if "refused" in c:
        return [f"refused: {_refusal(c['refused'])}"] + ["-"] * 3
    rf = ", ".join(f"{v}" for v in c["reuse_factors"].values())
    fit = "yes" if c["fits"] else "**NO**"
    return [f"{c['exact']} `==`; RF {rf}", f"{_i(c['cycles'])} / {_i(c['fps'])}",
            f"{_i(c['lut'])} / {_i(c['ff'])} / {_i(c['dsp'])} / {_i(c['bram18k'])}", fit]


HEADER = ["model",
          "RTL: images `==` (Verilator)", "RTL: cycles/image (Verilator) / images/s at 100 MHz",
          "RTL: LUT / FF / DSP / BRAM18 (yosys synth_xilinx)", "RTL: Fmax MHz (nextpnr-ecp5, ECP5-85F)",
          "RTL: folding (PE,SIMD)",
          "FINN: target fps (images `==` at every stage)", "FINN: cycles/frame / fps (FINN's estimate)",
          "FINN: LUT / FF / DSP / BRAM18K (FINN's estimate; no FF model)", "FINN: fits xc7z020 (FINN's estimate)",
          "hls4ml --fit: csim `==`; reuse factors", "hls4ml: interval cycles / images/s (our estimate)",
          "hls4ml: LUT / FF / DSP / BRAM18K (our estimate)", "hls4ml: fits xc7z020 (our estimate)"]


def kept_header(doc: Path) -> tuple[str, str] | None:
    """(date, machine) of the builds in an existing table (what :func:`markdown` wrote), or None."""
    text = doc.read_text() if doc.is_file() else ""
    w = re.search(r"`python -m fpga_flow\.cost_table` \(([^)]*)\)", text)
    m = re.search(r"^Machine: (.*); the two cores were shared", text, re.M)
    return (w.group(1), m.group(1)) if w and m else None


def markdown(rows: dict, n: int, rtl_doc: str, when: str, machine: str,
             other: list[tuple[str, dict]] = ()) -> str:
    lines = ["# Cost side by side: RTL (measured), FINN (its estimate), hls4ml (our estimate)", "",
             f"`python -m fpga_flow.cost_table` ({when}). Every zoo model, shipped W4A4 checkpoint, clock 10 ns "
             "(100 MHz), part xc7z020clg400-1. What each column is:", "",
             f"- **RTL** (measured): read from [{Path(rtl_doc).name}]({Path(rtl_doc).name}), the rtl backend's own "
             "builds: Verilator simulation cycles, yosys `synth_xilinx` counts, nextpnr-ecp5 Fmax on an "
             "ECP5-85F (not a Xilinx figure). Models with no row there: not run.",
             "- **FINN** (FINN's analytic estimate, not synthesis): `hls --backend finn --target-fps F` with F = "
             f"the RTL row's measured images/s ({FINN_DEFAULT_FPS:,}, FINN's default, where there is no RTL row); "
             f"its Python execution verified `==` the golden at every stage on the first {n} test images. FINN "
             "counts no FF, reports 0 LUT for DSP-based MVAUs and pools, and leaves out FIFOs.",
             "- **hls4ml** (our estimate, docs/estimates.md; uncalibrated): `hls --fit`, reuse factors chosen by "
             "fpga_flow/backends/hls4ml/fit.py so the estimate fits the part, fastest first (Latency strategy); "
             f"C simulation `==` the golden on the first {n} test images (hls4ml's stock csim too, on up to 20). "
             "At reuse factors above 1 the estimate leaves out the multiplexers that share a multiplier over "
             "several products (docs/estimates.md, assumption 8), so its LUTs understate those designs.",
             "", f"Machine: {machine}; the two cores were shared with other engineers' jobs (wall times not shown).",
             "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for m, r in rows.items():
        lines.append("| " + " | ".join([m, *_rtl_md(r["rtl"]), *_finn_md(r["finn"]), *_hls_md(r["hls4ml"])]) + " |")
    if other:
        lines += ["", f"Other RTL design points in {Path(rtl_doc).name} (measured the same way; the FINN and hls4ml "
                  "columns above are not at their rates):", ""]
        lines += [f"- {label}: {r['fps']} images/s at 100 MHz (Verilator), {r['lut']} LUT (yosys), "
                  f"{r['images']} images `==`, "
                  + (f"ECP5 Fmax {r['fmax']} MHz (nextpnr)" if _num(r["fmax"]) is not None else
                     f"ECP5 Fmax {r['fmax']}") for label, r in other]
    lines += ["", "## Short form (for the README)", "", *short(rows), ""]
    return "\n".join(lines)


def _over(cell: dict) -> str:
    return "" if cell["fits"] else " (does NOT fit)"


def short(rows: dict) -> list[str]:
    out = ["| model | RTL images/s (Verilator, 100 MHz) / LUT (yosys) | FINN fps / LUT (FINN's estimate, same fps "
           "target) | hls4ml --fit images/s / LUT (our estimate) |", "|---|---|---|---|"]
    for m, r in rows.items():
        rtl = f"{r['rtl']['fps']} / {r['rtl']['lut']}" if r["rtl"] else "not run"
        f, h = r["finn"], r["hls4ml"]
        finn = "refused" if "refused" in f else f"{_i(f['fps'])} / {_i(f['lut'])}" + _over(f)
        hls = "refused" if "refused" in h else f"{_i(h['fps'])} / {_i(h['lut'])}" + _over(h)
        out.append(f"| {m} | {rtl} | {finn} | {hls} |")
    return out


def cpu_model() -> str:
    """The CPU's name and core count (for the table's machine line)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = re.search(r"^model name\s*:\s*(.+)$", info, flags=re.M)
    cores = len(re.findall(r"^processor\s*:", info, flags=re.M))
    return f"{name.group(1).strip() if name else 'unknown CPU'}, {cores} cores"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fpga_flow.cost_table", description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=zoo.names())
    ap.add_argument("-n", "--images", type=int, default=100, help="test images verified per build (default 100)")
    ap.add_argument("--rtl-doc", default="docs/bench/rtl.md", help="the measured RTL rows (default docs/bench/rtl.md)")
    ap.add_argument("--out", default="build/cost_table", help="where the builds go (default build/cost_table)")
    ap.add_argument("--doc", default="docs/bench/cost-table.md",
                    help="the table written, its .json beside it (default docs/bench/cost-table.md)")
    ap.add_argument("--render", action="store_true", help="only write the table again from its .json (no builds)")
    a = ap.parse_args(argv)
    rtl = rtl_rows(Path(a.rtl_doc))
    out = Path(a.out)
    # the builds' results kept in <doc>.json (the models not rebuilt now keep theirs); RTL rows read afresh
    # (docs/bench/rtl.md may be newer)
    kept_path = Path(a.doc).with_suffix(".json")
    if a.render and not kept_path.is_file():
        ap.error(f"--render needs {kept_path} (run without --render first)")
    kept = json.loads(kept_path.read_text()) if kept_path.is_file() else {}
    rows = {m: {**r, "rtl": rtl.get(m)} for m, r in kept.items()}
    for m in ([] if a.render else a.models):
        r = rtl.get(m)
        fps = int(_num(r["fps"])) if r and _num(r["fps"]) else FINN_DEFAULT_FPS
        print(f"{m}: FINN at {fps:,} fps ...", flush=True)
        finn = finn_cell(m, fps, a.images, out / "finn")
        print(f"{m}: hls4ml --fit ...", flush=True)
        rows[m] = {"rtl": r, "finn": finn, "hls4ml": hls4ml_cell(m, a.images, out / "hls4ml")}
        Path(a.doc).with_suffix(".json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    machine = f"{cpu_model()}, Linux {platform.machine()}, Python {platform.python_version()}"
    if a.render:  # nothing was built here: the FINN and hls4ml cells keep the date and machine they came from
        when, machine = kept_header(Path(a.doc)) or (when, machine)
    Path(a.doc).write_text(markdown(rows, a.images, a.rtl_doc, when, machine, rtl_other_rows(Path(a.rtl_doc))))
    print("\n".join(short(rows)))
    print(f"written: {a.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
