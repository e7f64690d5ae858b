"""FINN's analytic estimates (``hw.finn`` of report.json) and their readable forms.

Every figure here is FINN's own model (``res_estimation``, ``exp_cycles_per_layer``, ``dataflow_performance``
after ``AnnotateCycles``: what its ``step_generate_estimate_reports`` writes), not a synthesis result. Known
gaps of those models are stated with the figures: DSP-based MVAUs and pooling report 0 LUT, the latency is
FINN's pessimistic critical path (no overlap between layers), and FIFOs between layers are not counted
(their sizing needs RTL simulation).
"""

from __future__ import annotations

import os
import shutil

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from ... import report
from . import fit as finn_fit

RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")
# the FINN steps after the estimates, and what each needs (all vendor tools)
NOT_RUN = (
    ("step_hw_codegen / step_hw_ipgen (HLS and RTL code of every layer, IP packaging)", "Vitis HLS, Vivado"),
    ("cppsim of the HLS layers (FINN's C++ simulation)", "Vitis HLS headers"),
    ("rtlsim of the layers and of the stitched IP, FIFO sizing", "Vivado (XSI)"),
    ("stitched IP, out-of-context synthesis (post-synthesis LUT/FF/BRAM/DSP, Fmax), bitfile, driver", "Vivado"),
)


def vendor_tools() -> dict:
    """What of the vendor tools FINN's later steps need is present (nothing is run here)."""
    return {"XILINX_VIVADO": os.environ.get("XILINX_VIVADO") or None,
            "vitis_hls": shutil.which("vitis_hls") or shutil.which("vitis-run"), "vivado": shutil.which("vivado")}


def _attr(inst, name):
    return inst.get_nodeattr(name) if name in inst.get_nodeattr_types() else None


def estimates(model: ModelWrapper, part: str, clock_ns: float) -> dict:
    """Per-layer and total resources, cycles per frame, throughput and latency of a folded dataflow."""
    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.op_and_param_counts import op_and_param_counts
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles
    res = model.analysis(lambda m: res_estimation(m, fpgapart=part))
    cycles = model.analysis(exp_cycles_per_layer)
    counts = model.analysis(op_and_param_counts)
    perf = model.transform(AnnotateCycles()).analysis(dataflow_performance)
    layers = []
    for node in model.graph.node:
        inst = getCustomOp(node)
        row = {"layer": node.name, "op": node.op_type, "impl": node.domain.rsplit(".", 1)[-1],
               "PE": _attr(inst, "PE"), "SIMD": _attr(inst, "SIMD"), "cycles": int(cycles.get(node.name, 0)),
               "input_type": inst.get_input_datatype(0).name, "output_type": inst.get_output_datatype(0).name}
        w = _attr(inst, "weightDataType")
        if w:
            row["weight_type"] = w
        r = res.get(node.name, {})
        row.update({k: float(r.get(k, 0)) for k in RESOURCES})
        row["ops_params"] = {k: int(v) for k, v in counts.get(node.name, {}).items()}
        layers.append(row)
    hz = 1e9 / clock_ns
    max_cycles, crit = int(perf["max_cycles"]), int(perf["critical_path_cycles"])
    return {
        "part": part, "clock_ns": clock_ns,
        "layers": layers,
        "total": {k: float(sum(row[k] for row in layers)) for k in RESOURCES},
        "ops_params_total": {k: int(v) for k, v in counts.get("total", {}).items()},
        "max_cycles": max_cycles, "bottleneck": perf["max_cycles_node_name"],
        "throughput_fps": hz / max_cycles if max_cycles else None,
        "critical_path_cycles": crit, "latency_us": crit * clock_ns / 1000.0,
        "zero_lut_layers": [row["layer"] for row in layers if row["LUT"] == 0],
    }


def summary(rep: dict) -> str:
    f = rep["hw"]["finn"]
    e, s = f["estimate"], f["stages"]
    verdict = "bit-exact" if rep["mismatches"] == 0 else "NOT bit-exact"
    n_ok = sum(1 for x in s if x["exact_matches"] == x["n"])
    ref = "integer-accumulator reference" if f.get("golden") == "integer-accumulator reference" else "QONNX"
    refs = " == ".join([f"Brevitas {d.upper()}" for d in rep["reference_devices"]] + [ref, "FINN Python"])
    acc = rep["accuracy"]
    logits = ", logits" if rep["output"]["kind"] == "logits_of_log_softmax" else ""
    out = (f"{rep['model']}: {rep['exact_matches']}/{rep['n_images']} images {verdict} ({refs}; "
           f"{n_ok}/{len(s)} FINN stages exact{logits})")
    if acc["quantized"] is not None:
        same = "=" if acc["quantized"] == acc["finn"] else ","
        out += f"; accuracy quantized {acc['quantized']:.2%} {same} FINN {acc['finn']:.2%}"
    t = e["total"]
    out += (f"\n  FINN estimate ({f['options']['part']}, {1000 / f['options']['clock_ns']:.0f} MHz, target "
            f"{f['options']['target_fps']:,} fps): {e['max_cycles']:,} cycles/frame = {e['throughput_fps']:,.0f} fps"
            f" (bottleneck {e['bottleneck']}), latency {e['critical_path_cycles']:,} cycles ({e['latency_us']:.1f} us),"
            f" LUT {t['LUT']:,.0f}, BRAM18K {t['BRAM_18K']:,.0f}, DSP {t['DSP']:,.0f}")
    v = finn_fit.verdict(e, f["options"]["part"])
    if f.get("fit"):
        out += "\n  " + finn_fit.describe(f["fit"], f["options"]["part"])
    if v:
        out += f"\n  {'WARNING: ' if 'NOT fit' in v else ''}the design {v}"
    out += "\n  not run (vendor tools): " + "; ".join(x["step"].split(" (")[0] for x in f["not_run"])
    return out


def markdown(rep: dict) -> str:
    f = rep["hw"]["finn"]
    e, o, ties = f["estimate"], f["options"], f["ties"]
    pct = lambda v: "-" if v is None else f"{v:.2%}"  # noqa: E731
    lines = [f"# {rep['model']}: FINN backend ({f['finn']})", "", summary(rep).replace("\n  ", "\n\n"), "",
             f"> {rep['output']['note']}", "",
             "## Verification: FINN's Python execution at every stage vs the golden (`==`, no tolerance)", "",
             f"Input: the hardware receives the input quantizer's integer codes ({f['input']['datatype']}, scale "
             f"{f['input']['scale']:g}), as in the hls4ml design; nodes FINN's graph keeps on the host, around "
             f"its dataflow partition: {', '.join(f['host_nodes']) or 'none'}.",
             "", "| comparison | images | bit-exact | max abs diff |", "|---|---:|---:|---:|"]
    for c in rep["comparisons"]:
        lines.append(f"| {c['name']} | {c['n']} | {c['exact_matches']} | {c['max_abs_diff']:g} |")
    host = f.get("host_ops") or {}
    lines += ["", "## Runs on the host", "", "Before the dataflow (float32, in the exported order; the dataflow's "
              "input is the quantizer's codes): " + (", ".join(f"`{x}`" for x in host.get("before_dataflow", []))
                                                     or "none") + ".",
              "", "After the dataflow: " + (", ".join(f"`{x}`" for x in host.get("after_dataflow", [])) or "none")
              + ".", "", "Beside these ops of the exported model, FINN's own graph keeps on the host (outside its "
              "dataflow partition, executed in the verification above): "
              + (", ".join(f"`{x}`" for x in f["host_nodes"]) or "nothing")
              + " (e.g. an XNOR layer's `2 * popcount - K` when no threshold follows it)."]
    ag = (rep.get("float_scaled") or {}).get("brevitas_float_agreement") or {}
    if ag.get("agree") is not None:
        lines += ["", f"Float-scaled model: FINN received the exact lowering's integer thresholds (docs/bnn-pynq.md). "
                      f"Brevitas' float forward vs the integer reference: {ag['agree']}/{ag['images']} images agree "
                      f"(every activation code equal: {ag['activations_equal']}/{ag['images']}; max |logit "
                      f"difference| after the host's ops {ag['max_abs_logit_diff']:.3g})."]
    c = ties["control"]
    if f.get("golden") == "integer-accumulator reference":
        lines += ["", "### Rounding of ties", "", "Not applicable: FINN received the exact lowering's integer "
                  "thresholds, which already decide every reachable accumulator value as Brevitas' float32 chain "
                  "does (ties included); the tie fix for FINN's own thresholds left them alone.", ""]
    else:
        lines += _ties(ties, c)
    lines += [f"## FINN's estimates (analytic, not synthesis): target {o['target_fps']:,} fps = "
              f"{o['target_cycles_per_frame']:,} cycles/frame at {o['clock_ns']} ns, part {o['part']}", "",
              "| layer | impl | PE | SIMD | in | out | cycles | LUT | BRAM18K | URAM | DSP |",
              "|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in e["layers"]:
        lines.append(f"| {r['layer']} | {r['impl']} | {r['PE'] or ''} | {r['SIMD'] or ''} | {r['input_type']} | "
                     f"{r['output_type']} | {r['cycles']:,} | {r['LUT']:,.0f} | {r['BRAM_18K']:,.0f} | "
                     f"{r['URAM']:,.0f} | {r['DSP']:,.0f} |")
    t = e["total"]
    lines += [f"| **total** | | | | | | max {e['max_cycles']:,} | {t['LUT']:,.0f} | {t['BRAM_18K']:,.0f} | "
              f"{t['URAM']:,.0f} | {t['DSP']:,.0f} |", "",
              f"Throughput {e['throughput_fps']:,.0f} frames/s (bottleneck `{e['bottleneck']}`, "
              f"{'meets' if e['max_cycles'] <= o['target_cycles_per_frame'] else 'misses'} the target); latency "
              f"{e['critical_path_cycles']:,} cycles = {e['latency_us']:.1f} us (FINN's critical path: no overlap "
              "between layers, so pessimistic). "
              + (f"Layers FINN estimates at 0 LUT ({', '.join(e['zero_lut_layers'])}): DSP-based or not modelled, "
                 "so the LUT total understates. " if e["zero_lut_layers"] else "")
              + "FIFOs between layers are not included (FINN sizes them by RTL simulation)."]
    if f["log"]:
        lines += ["", "FINN's messages while folding and converting:", ""] + [f"- {m}" for m in f["log"][:20]]
    tools = f["vendor_tools"]
    found = {k: ("set" if k == "XILINX_VIVADO" else "found") if v else ("unset" if k == "XILINX_VIVADO" else
                                                                      "not found") for k, v in tools.items()}
    lines += ["", "## Not run", "", f"Vendor tools: XILINX_VIVADO {found['XILINX_VIVADO']}, vitis_hls "
              f"{found['vitis_hls']}, vivado {found['vivado']}. The flow stops after FINN's estimates; not run:", ""]
    lines += [f"- {x['step']}: needs {x['needs']} ({x['why']})" for x in f["not_run"]]
    acc = rep["accuracy"]
    lines += ["", f"## Accuracy ({report.data_used(rep)})", "", "| model | accuracy |", "|---|---:|",
              f"| float (checkpoint card) | {pct(acc['float'])} |",
              f"| quantized, Brevitas torch | {pct(acc['quantized'])} |",
              f"| FINN Python execution | {pct(acc['finn'])} |", "", "| step | wall time (s) |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in rep["timings_s"].items()]
    lines += ["", f"Total: {sum(rep['timings_s'].values()):.1f} s. Artifacts: `{rep['project_dir']}` (the ONNX "
                  "graph after every stage).", ""]
    return "\n".join(lines)


def _ties(ties: dict, c: dict) -> list[str]:
    return ["", "### Rounding of ties", "",
            "FINN's thresholds round ties up; Brevitas rounds them to even. The flow made the "
            f"{ties['odd_code_thresholds']:,} thresholds that separate an odd code from the one below strict (`>`) "
            f"after `qonnx_to_finn`; after streamlining (per-channel integer thresholds) it set "
            f"{ties['repaired_after_streamline']} values whose float nudge FINN's arithmetic had rounded away to "
            "t + 1 (docs/finn.md). Control, on the same images: FINN's own thresholds after `qonnx_to_finn` give "
            f"{c['exact_matches']}/{c['n']} images bit-exact (max abs diff {c['max_abs_diff']:g})"
            + (" - the fix was needed here." if c["exact_matches"] < c["n"] else
               " - no tie occurred on these images."), ""]
