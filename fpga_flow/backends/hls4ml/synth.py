"""`make synth`: vendor C synthesis (Vitis HLS) and, with --vivado, logic synthesis of a generated project.

The project in ``build/<model>/hls`` is only read (its digest keeps proving it is the verified one): the
Vitis project, our tcl scripts, the tools' logs and reports live in ``build/<model>/synth/``. We render
our own tcl (``hw_templates/hls4ml/synth.tcl.j2``) instead of patching hls4ml's build_prj.tcl, run it
with ``vitis-run --mode hls --tcl`` (Vitis 2024.1+, as hls4ml 1.3.0's ``VitisBackend.build``) or
``vitis_hls -f`` (older releases), parse ``<top>_csynth.xml`` and Vivado's utilisation report, and put
the figures in ``report.json`` under ``hw.vendor``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from ... import resources, toolchain
from ...codegen import BuildPlan, load_plan_info, render
from ...config import check_identifier
from ...errors import FlowError

SYNTH_DIR = "synth"
TCL = "fpga_flow_synth.tcl"
VIVADO_TCL = "fpga_flow_vivado.tcl"
VIVADO_UTIL = "vivado_synth.rpt"
VIVADO_TIMING = "vivado_timing.rpt"
HLS_LOG = "vitis_hls.log"
VIVADO_LOG = "vivado.log"
DEFAULT_PART, DEFAULT_CLOCK_NS = "xc7z020clg400-1", 10.0  # the defaults of `make hls` (BuildConfig)
INSTALL_HINT = ("Install AMD Vitis HLS (part of the AMD Vitis unified software platform, "
                "https://www.amd.com/en/products/software/adaptive-socs-and-fpgas/vitis.html) and source its "
                "settings64.sh so that `vitis-run` (2024.1+) or `vitis_hls` is on PATH, or set VITIS_HLS to it")
HEARTBEAT_S = 30.0
DEFAULT_BUILD = resources.DEFAULT_OUT
_PART = re.compile(r"[A-Za-z0-9\-]+\Z")


@dataclass(frozen=True)
class SynthSettings:
    """What the generated tcl says; every identifier is checked before it reaches Tcl."""

    project_name: str = "myproject"
    top: str = "myproject"
    part: str = DEFAULT_PART
    clock_ns: float = DEFAULT_CLOCK_NS
    clock_uncertainty: str = "27%"  # hls4ml 1.3.0's default (project.tcl)
    max_partition: int = 4096  # hls4ml 1.3.0's default (project.tcl: maximum_size)
    hls_dir: str = "../hls"  # the project, relative to the synth directory
    solution: str = "solution1"

    def __post_init__(self) -> None:
        check_identifier(self.project_name, "project name")
        check_identifier(self.top, "top function")
        check_identifier(self.solution, "solution name")
        if not _PART.match(self.part):
            raise FlowError(f"FPGA part {self.part!r} is not a valid part name")
        if not (isinstance(self.clock_ns, (int, float)) and math.isfinite(self.clock_ns) and self.clock_ns > 0):
            raise FlowError(f"clock period must be a finite positive number, got {self.clock_ns!r} ns")
        if not re.fullmatch(r"\d+(\.\d+)?%?", self.clock_uncertainty):
            raise FlowError(f"clock uncertainty {self.clock_uncertainty!r} must be a number or a percentage")
        if not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_./\-]*", self.hls_dir):
            raise FlowError(f"project directory {self.hls_dir!r} has characters that cannot go into Tcl")


def project_settings(hls_dir: Path) -> dict:
    """``set name value`` lines of hls4ml's project.tcl (project_name, part, clock_period ...)."""
    p = Path(hls_dir) / "project.tcl"
    if not p.is_file():
        return {}
    return {m.group(1): m.group(2) for m in re.finditer(r'^\s*set\s+(\w+)\s+"?([^"\n]*?)"?\s*$', p.read_text(), re.M)}


def render_tcl(s: SynthSettings) -> BuildPlan:
    """The scripts we run, in memory: ``{file name: text}``."""
    clock = f"{s.clock_ns:g}"
    plan = BuildPlan()
    plan.add(TCL, render("hls4ml/synth.tcl.j2", tcl_name=TCL, hls_dir=s.hls_dir, project_name=s.project_name,
                         top=s.top, solution=s.solution, max_partition=s.max_partition, part=s.part, clock_ns=clock,
                         clock_uncertainty=s.clock_uncertainty))
    plan.add(VIVADO_TCL, render("hls4ml/vivado_synth.tcl.j2", tcl_name=VIVADO_TCL, project_name=s.project_name,
                                solution=s.solution, top=s.top, part=s.part, clock_ns=clock,
                                utilisation_report=VIVADO_UTIL, timing_report=VIVADO_TIMING))
    return plan


def hls_command(tool: Path, tcl: str = TCL) -> list[str]:
    """``vitis-run --mode hls --tcl X`` (Vitis 2024.1+, what hls4ml 1.3.0's build() runs) or ``vitis_hls -f X``."""
    if Path(tool).name.startswith("vitis-run"):
        return [str(tool), "--mode", "hls", "--tcl", tcl]
    return [str(tool), "-f", tcl]


def vivado_command(tool: Path, tcl: str = VIVADO_TCL) -> list[str]:
    return [str(tool), "-mode", "batch", "-nojournal", "-nolog", "-source", tcl]


# ---------------------------------------------------------------- reports

def _int(node, path: str) -> int | None:
    t = node.findtext(path)
    try:
        return int(t)
    except (TypeError, ValueError):  # missing, or "undef" (unbounded latency)
        return None


def _float(node, path: str) -> float | None:
    try:
        return float(node.findtext(path))
    except (TypeError, ValueError):
        return None


_TIME_UNITS = {"ps": 1e-3, "ns": 1.0, "us": 1e3, "ms": 1e6, "sec": 1e9, "s": 1e9}


def _real_time_ns(text: str | None) -> float | None:
    """``'11.910 us'`` -> 11910.0 (Vitis' *RealTimeLatency fields)."""
    m = re.fullmatch(r"\s*([0-9.eE+\-]+)\s*([a-z]+)\s*", text or "")
    if not m or m.group(2) not in _TIME_UNITS:
        return None
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


RESOURCE_TAGS = {"LUT": "lut", "FF": "ff", "DSP": "dsp", "DSP48E": "dsp", "BRAM_18K": "bram18k", "URAM": "uram"}


def parse_csynth_xml(path: Path) -> dict:
    """The top function's figures from Vitis HLS' ``<top>_csynth.xml``; element paths as read by hls4ml
    1.3.0 (``hls4ml/report/vivado_report.py``, ``parse_vivado_report``), plus the real-time latencies."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise FlowError(f"cannot read the C synthesis report {path}: {e}") from e
    perf = root.find("./PerformanceEstimates")
    area = root.find("./AreaEstimates")
    if perf is None or area is None:
        raise FlowError(f"{path} is not a Vitis HLS csynth report (no PerformanceEstimates/AreaEstimates)")
    lat = perf.find("./SummaryOfOverallLatency")
    target = _float(root, "./UserAssignments/TargetClockPeriod")
    estimated = _float(perf, "./SummaryOfTimingAnalysis/EstimatedClockPeriod")
    cyc = {"min": _int(lat, "Best-caseLatency"), "max": _int(lat, "Worst-caseLatency")}
    ns = {"min": _real_time_ns(lat.findtext("Best-caseRealTimeLatency")),
          "max": _real_time_ns(lat.findtext("Worst-caseRealTimeLatency"))}
    for k in ns:  # older reports have no real-time field: cycles x target clock
        if ns[k] is None and cyc[k] is not None and target:
            ns[k] = cyc[k] * target
    ii = {"min": _int(lat, "Interval-min"), "max": _int(lat, "Interval-max")}
    used = {RESOURCE_TAGS[c.tag]: int(c.text) for c in area.find("./Resources") if c.tag in RESOURCE_TAGS}
    avail = {RESOURCE_TAGS[c.tag]: int(c.text) for c in area.find("./AvailableResources") if c.tag in RESOURCE_TAGS}
    return {
        "top": root.findtext("./UserAssignments/TopModelName"),
        "part": root.findtext("./UserAssignments/Part"),
        "version": root.findtext("./ReportVersion/Version"),
        "target_clock_ns": target,
        "estimated_clock_ns": estimated,
        "fmax_mhz": round(1000.0 / estimated, 2) if estimated else None,
        "latency_cycles": cyc,
        "latency_ns": ns,
        "interval_cycles": ii,
        "throughput_per_s": 1e9 / (ii["max"] * target) if ii["max"] and target else None,
        "resources": used,
        "available": avail,
        "utilisation_pct": _util(used, avail),
    }


def _util(used: dict, avail: dict) -> dict:
    return {k: round(100.0 * used[k] / avail[k], 2) for k in used if avail.get(k)}


VIVADO_ROWS = {"Slice LUTs": "lut", "CLB LUTs": "lut", "Slice Registers": "ff", "CLB Registers": "ff",
               "Block RAM Tile": "bram_tiles", "URAM": "uram", "DSPs": "dsp"}


def parse_vivado_utilisation(path: Path) -> dict:
    """Used and available counts from Vivado's ``report_utilization`` text (the first row of each name,
    as hls4ml's parser reads it: CLB* on UltraScale, Slice* on 7-series). Block RAM tiles are 36 Kb
    (two RAMB18 each)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise FlowError(f"cannot read the Vivado utilisation report {path}: {e}") from e
    used, avail = {}, {}
    for line in text.splitlines():
        if not line.lstrip().startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        key = VIVADO_ROWS.get(cells[0].rstrip("*").strip()) if cells else None
        if key is None or key in used or len(cells) < 4:
            continue
        try:
            used[key] = float(cells[1]) if "." in cells[1] else int(cells[1])
            avail[key] = int(cells[-2])
        except ValueError:
            continue
    if not used:
        raise FlowError(f"{path} has no utilisation table (expected rows such as 'Slice LUTs' or 'CLB LUTs')")
    if "bram_tiles" in used:
        used["bram18k"], avail["bram18k"] = round(2 * used["bram_tiles"]), 2 * avail["bram_tiles"]
    return {"resources": used, "available": avail, "utilisation_pct": _util(used, avail)}


def find_csynth_xml(work: Path, s: SynthSettings) -> Path | None:
    p = work / f"{s.project_name}_prj" / s.solution / "syn" / "report" / f"{s.top}_csynth.xml"
    if p.is_file():
        return p
    found = sorted(work.glob(f"**/syn/report/{s.top}_csynth.xml"))  # a layout of another Vitis release
    return found[0] if found else None


# ---------------------------------------------------------------- running

def run_tool(cmd: list[str], cwd: Path, log: Path, what: str, progress: bool = True) -> float:
    """Run ``cmd`` in ``cwd``, output to ``log``; echo its phase lines and a heartbeat. Non-zero -> FlowError."""
    t0 = time.perf_counter()
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None)
    last = [""]
    with open(log, "w") as f:
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace")
        except OSError as e:
            raise FlowError(f"cannot start {what} ({cmd[0]}): {e.strerror or e}", exit_code=2) from e

        def pump() -> None:
            for line in proc.stdout:
                f.write(line)
                f.flush()
                if line.strip():
                    last[0] = line.strip()
                if re.match(r"(\*\*\*\*\*|ERROR|CRITICAL WARNING)", line):
                    say(f"  {what}: {line.rstrip()}")

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            while True:
                try:
                    proc.wait(timeout=HEARTBEAT_S)
                    break
                except subprocess.TimeoutExpired:
                    say(f"  {what}: running for {time.perf_counter() - t0:.0f} s; last line: {last[0][:100]}")
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        reader.join()
    if proc.returncode != 0:
        errors = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.startswith("ERROR")][:5]
        raise FlowError(f"{what} failed (exit status {proc.returncode}); its log is {log}"
                        + ("\n  " + "\n  ".join(errors) if errors else f"\n  last line: {last[0]}"), exit_code=1)
    return time.perf_counter() - t0


def _check_tools(vivado: bool, model: str, build: Path) -> tuple[Path, Path | None]:
    hls = toolchain.find("vitis_hls", required=False)
    viv = toolchain.find("vivado", required=False) if vivado else None
    missing = []
    if hls is None:
        missing.append("Vitis HLS not found (looked for `vitis-run` and `vitis_hls` on PATH, and $VITIS_HLS)")
    if vivado and viv is None:
        missing.append("Vivado not found (needed for --vivado; looked for `vivado` on PATH, and $VIVADO)")
    if missing:
        later = ("" if (build / "hls").is_dir() else
                 f" There is no generated project for {model} yet either: run `make hls MODEL={model}` first.")
        raise FlowError("; ".join(missing) + "; nothing was run. " + INSTALL_HINT
                        + (", and Vivado (same installer) for --vivado or set VIVADO" if vivado else "")
                        + f", then run `make synth MODEL={model}` again. Without them, `make hls` already gives "
                        "an estimate of latency and resources (report.json hw.estimate)." + later, exit_code=2)
    return hls, viv


def _check_project(build: Path, model: str) -> dict:
    hls = build / "hls"
    info_p = build / "plan_info.json"
    if not hls.is_dir() or not info_p.is_file():
        raise FlowError(f"no generated project in {build}: run `make hls MODEL={model}` first")
    digest = BuildPlan.from_dir(hls).digest()
    want = load_plan_info(info_p, model)["digest"]
    if digest != want:
        raise FlowError(f"{hls} was modified after it was generated (digest {digest[:12]} != {str(want)[:12]}); "
                        f"rebuild it with `make hls MODEL={model}`")
    return {**project_settings(hls), "digest": digest}


def load_vendor(build: Path, digest: str | None) -> dict | None:
    """``hw.vendor`` of an earlier `make synth` of this very project (same digest), for a rewritten report."""
    p = Path(build) / SYNTH_DIR / "vendor.json"
    try:
        v = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return v if digest and v.get("project_digest") == digest else None


def synthesize(model: str, build_root: Path, part: str | None = None, clock_ns: float | None = None,
               vivado: bool = False, progress: bool = True) -> dict:
    """Run C synthesis (and Vivado synthesis) on ``build_root/model/hls``; returns ``hw.vendor``."""
    check_identifier(model, "model name")
    build = Path(build_root) / model
    hls_tool, viv_tool = _check_tools(vivado, model, build)
    proj = _check_project(build, model)
    name = proj.get("project_name", "myproject")
    s = SynthSettings(project_name=name, top=name, part=part or proj.get("part") or DEFAULT_PART,
                      clock_ns=float(clock_ns or proj.get("clock_period") or DEFAULT_CLOCK_NS),
                      clock_uncertainty=proj.get("clock_uncertainty", "27%"),
                      max_partition=int(proj.get("maximum_size", 4096)))
    work = build / SYNTH_DIR
    shutil.rmtree(work, ignore_errors=True)  # ours: the previous run's scratch directory
    work.mkdir(parents=True)
    for rel, content in render_tcl(s).items():
        (work / rel).write_bytes(content)
    say = (lambda m: print(f"[{model}] {m}", file=sys.stderr, flush=True)) if progress else (lambda m: None)
    say(f"C synthesis with {hls_tool.name} (part {s.part}, clock {s.clock_ns:g} ns); log: {work / HLS_LOG}")
    secs = {"csynth": round(run_tool(hls_command(hls_tool), work, work / HLS_LOG, hls_tool.name, progress), 1)}
    xml = find_csynth_xml(work, s)
    if xml is None:
        raise FlowError(f"{hls_tool.name} finished but wrote no {s.top}_csynth.xml under {work}; see {work / HLS_LOG}")
    vendor = {"tool": hls_tool.name, "project_digest": proj["digest"], "part": s.part, "clock_ns": s.clock_ns, "clock_uncertainty": s.clock_uncertainty,
              "csynth": {**parse_csynth_xml(xml), "report": str(xml.relative_to(build))},
              "vivado": None, "logs": [f"{SYNTH_DIR}/{HLS_LOG}"], "seconds": secs}
    if vivado:
        say(f"Vivado synthesis with {viv_tool.name}; log: {work / VIVADO_LOG}")
        secs["vivado"] = round(run_tool(vivado_command(viv_tool), work, work / VIVADO_LOG, viv_tool.name, progress), 1)
        vendor["vivado"] = {**parse_vivado_utilisation(work / VIVADO_UTIL), "report": f"{SYNTH_DIR}/{VIVADO_UTIL}",
                            "timing_report": f"{SYNTH_DIR}/{VIVADO_TIMING}"}
        vendor["logs"].append(f"{SYNTH_DIR}/{VIVADO_LOG}")
    (work / "vendor.json").write_text(json.dumps(vendor, indent=1) + "\n")
    return vendor


def summary(model: str, v: dict) -> str:
    c = v["csynth"]
    r, u = c["resources"], c["utilisation_pct"]
    lat, ii = c["latency_cycles"], c["interval_cycles"]
    pct = lambda k: f" ({u[k]:.1f}%)" if k in u else ""  # noqa: E731
    s = (f"{model}: Vitis HLS C synthesis for {v['part']} at {v['clock_ns']:g} ns: latency {lat['min']}-{lat['max']} "
         f"cycles, interval {ii['min']}-{ii['max']} cycles, estimated clock {c['estimated_clock_ns']} ns; "
         f"LUT {r.get('lut')}{pct('lut')}, FF {r.get('ff')}{pct('ff')}, DSP {r.get('dsp')}{pct('dsp')}, "
         f"BRAM18K {r.get('bram18k')}{pct('bram18k')}")
    if v.get("vivado"):
        vr, vu = v["vivado"]["resources"], v["vivado"]["utilisation_pct"]
        s += (f"\n{model}: Vivado synthesis: LUT {vr.get('lut')} ({vu.get('lut', 0):.1f}%), FF {vr.get('ff')}, "
              f"DSP {vr.get('dsp')}, BRAM18K {vr.get('bram18k')}")
    return s


def markdown(hw: dict) -> list[str]:
    """report.md lines for ``hw.vendor`` (nothing before `make synth` ran)."""
    v = (hw or {}).get("vendor")
    if not v:
        return []
    c = v["csynth"]
    rows = [("Vitis HLS C synthesis", c)] + ([("Vivado synthesis", v["vivado"])] if v.get("vivado") else [])
    lines = ["", f"## Hardware cost: vendor synthesis ({v['tool']}, {v['part']}, {v['clock_ns']:g} ns)", "",
             f"Latency {c['latency_cycles']['min']}-{c['latency_cycles']['max']} cycles "
             f"({c['latency_ns']['min']}-{c['latency_ns']['max']} ns), interval {c['interval_cycles']['min']}-"
             f"{c['interval_cycles']['max']} cycles, estimated clock {c['estimated_clock_ns']} ns. Logs: "
             + ", ".join(f"`{x}`" for x in v["logs"]) + ".", "",
             "| report | LUT | FF | DSP | BRAM18K |", "|---|---:|---:|---:|---:|"]
    for name, d in rows:
        r, u = d["resources"], d["utilisation_pct"]
        lines.append(f"| {name} | " + " | ".join(
            f"{r.get(k, '-')}" + (f" ({u[k]:.1f}%)" if k in u else "") for k in ("lut", "ff", "dsp", "bram18k")) + " |")
    return lines
