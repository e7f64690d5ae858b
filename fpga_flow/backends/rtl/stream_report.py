"""report.json ``hw.rtl`` and report.md of the streaming mode: every figure labelled with how it was obtained
(simulated cycles, yosys count, nextpnr place and route, estimate), and whether the design fits the part."""

from __future__ import annotations

import numpy as np

from ... import report
from ...errors import FlowError
from . import cost, folding, measure
from .hw import mvu, spec

HOW_SIM = "Verilator simulation (cycles of the design's clock)"


def layer_table(r) -> list[dict]:
    rows = []
    for name, layer in zip(r.hw.names, r.layers):
        row = {"layer": name, "kind": getattr(layer, "kind", "maxpool"), "in_shape": list(layer.in_shape),
               "out_shape": list(layer.out_shape)}
        if isinstance(layer, spec.Mac):
            nf, sf = (mvu.folding(layer))
            row.update(pe=layer.pe, simd=layer.simd, nf=nf, sf=sf, k=layer.k, stride=layer.stride, pad=layer.pad,
                       in_bits=layer.in_bits, out_bits=layer.out_bits, weight_bits=int(mvu.signed_bits(
                           int(min(layer.weights.min(), 0)), int(max(layer.weights.max(), 0)))),
                       thresholds=None if layer.requant is None else int(np.asarray(layer.requant.T).shape[1]),
                       cycles_per_image=folding.layer_cycles(layer, layer.pe, layer.simd),
                       products="LUT (shift-and-add)" if layer.lut_products else "yosys' choice (DSP from 9 bits)",
                       cost_model=cost.mvu_cost(layer))
        else:
            row.update(k=layer.k, bits=layer.bits)
        rows.append(row)
    return rows


def fit(synth: dict | None, part: dict | None) -> dict | None:
    """yosys counts against the part's budget: per resource used / available / %, and one verdict."""
    if not synth or not part:
        return None
    use = {"LUT": (synth["LUT"], part["lut"]), "FF": (synth["FF"], part["ff"]), "DSP": (synth["DSP"], part["dsp"]),
           "BRAM18": (synth["BRAM18"], part["bram18k"])}
    rows = {k: {"used": u, "available": a, "pct": round(100.0 * u / a, 1)} for k, (u, a) in use.items()}
    return {"how": "yosys synth_xilinx count vs the part's resources", "part": part["name"], "resources": rows,
            "fits": all(u <= a for u, a in use.values())}


def cost_error(r, synth: dict | None) -> dict | None:
    """The cost model's MVU total against yosys' count of the whole design (which also holds windows, pools,
    FIFOs and converters, so the model is expected to be below)."""
    if not synth:
        return None
    m = r.folding["model_cost"]
    out = {}
    for k, y in (("lut", "LUT"), ("ff", "FF"), ("dsp", "DSP"), ("bram18", "BRAM18")):
        out[k] = {"model_mvus": m[k], "yosys_design": synth[y],
                  "error_pct": round(100.0 * (m[k] - synth[y]) / synth[y], 1) if synth[y] else None}
    return out


def hw_rtl(state) -> dict:
    r = state.backend
    main = state.comparisons[-1]
    clk = folding.clock_mhz(state.cfg.clock_ns)
    cyc = r.cycles
    try:
        part = folding.part_budget(state.cfg.part)
    except FlowError:
        part = None
    fmax = r.pnr.get("fmax_mhz") if r.pnr else None
    return {
        "mode": "stream",
        "generator": (f"fpga_flow streaming dataflow (Amaranth {measure.package_version('amaranth')}), "
                      f"top {r.design and 'fpga_flow_stream'}"),
        "simulator": "verilator " + measure.package_version("verilator"),
        "design": "folded streaming dataflow (sliding windows, PE x SIMD MVUs with thresholds, max pools, FIFOs)",
        "layers": layer_table(r),
        "on_host": r.hw.host,
        "final_output_grid": {"frac_bits": r.hw.final_frac,
                              "scale": [float(s) for s in r.hw.final_scale] if r.hw.final_scale is not None else None},
        "folding": r.folding,
        "fault_injected": r.fault,
        "n_images": main.n, "exact_matches": main.exact_matches, "mismatches": main.n - main.exact_matches,
        "clock_mhz": clk,
        "cycles": {"how": HOW_SIM, "cycles_per_image": cyc["cycles_per_image"], "latency_cycles": cyc["latency_cycles"],
                   "total_cycles": cyc["total_cycles"], "cycles_per_image_model": r.folding["cycles_per_image_model"]},
        "images_per_s_at_clock": round(clk * 1e6 / cyc["cycles_per_image"], 1),
        "target_fps_reached_in_simulation": (clk * 1e6 / cyc["cycles_per_image"] >= r.folding["target_fps"]
                                             if r.folding.get("target_fps") else None),
        "images_per_s_at_fmax": round(fmax * 1e6 / cyc["cycles_per_image"], 1) if fmax else None,
        "latency_us_at_clock": round(cyc["latency_cycles"] / clk, 3),
        "verilator_build_s": cyc.get("verilator_build_s"), "verilator_cached": cyc.get("cached"),
        "verilog_digest": cyc.get("digest"), "sim_s": cyc.get("sim_s"),
        "yosys": r.synth, "yosys_not_measured": r.synth_missing, "fit": fit(r.synth, part),
        "nextpnr": r.pnr,
        "cost_model_vs_yosys": cost_error(r, r.synth),
    }


def write_report(state, hw: dict, render) -> object:
    """report.json (``hw.rtl`` = ``hw``) and report.md (``render(rep)``) of an rtl build, stream or da4ml mode."""
    rep = report.common(state, state.comparisons[-1])
    rep.update({
        "accuracy": {"float": None, "quantized": report.accuracy(state.ref.get("torch_cpu"), state.labels),
                     "rtl": report.accuracy(state.ref.get("rtl"), state.labels)},
        "hw": {"part": state.cfg.part, "rtl": hw},
        "project_dir": report.project_dir(state, "verilog"),
    })
    state.path("report.json").write_text(report.dump(rep))
    state.path("report.md").write_text(render(rep))
    state.report = rep
    return state


def step_rtl_report(state):
    return write_report(state, hw_rtl(state), markdown)


def fit_line(h: dict) -> str:
    f = h.get("fit")
    if not f and h.get("yosys_not_measured"):
        m = h["yosys_not_measured"]
        return (f"**Fit: not measured**: {m['message']} (log: `{m['log']}`). The design was verified in simulation; "
                "`--synth-timeout S` allows yosys longer, a smaller folding (`--target-fps`) synthesizes faster.")
    if not f:
        return "Fit: not measured (yosys skipped, or no resource table for the part)."
    over = [f"{k} {v['used']:,}/{v['available']:,} ({v['pct']}%)" for k, v in f["resources"].items()
            if v["used"] > v["available"]]
    if f["fits"]:
        worst = max(f["resources"].items(), key=lambda kv: kv[1]["pct"])
        return (f"**Fits the {f['part']}** by yosys count (largest share: {worst[0]} {worst[1]['pct']}%).")
    return f"**Does NOT fit the {f['part']}** by yosys count: " + "; ".join(over) + "."


def markdown(rep: dict) -> str:
    h = rep["hw"]["rtl"]
    c = h["cycles"]
    lines = [f"# {rep['model']}: streaming RTL (fpga_flow's own dataflow)", "", summary(rep), "", fit_line(h), "",
             f"Inputs: {report.data_used(rep)}.", "",
             f"Generator: {h['generator']}; simulator: {h['simulator']}.", "",
             "## Layers and folding", "",
             f"Folding: {h['folding']['mode']}"
             + (f" (target {h['folding']['target_fps']:,.0f} images/s; reached by the model: {h['folding']['reached']}, "
                f"in simulation: {h['target_fps_reached_in_simulation']})"
                if h['folding']['mode'] == 'target_fps' else f" (fastest within {h['folding']['margin']:.0%} of the part, "
                "cost model)") + "."
             + (f" Products in LUTs (shift-and-add, no DSP block), where the part's DSPs would not do: "
                f"{', '.join(h['folding']['lut_products'])}." if h['folding'].get('lut_products') else ""), "",
             "| layer | kind | in | out | PE | SIMD | cycles/image (NF*SF*pixels) | LUT (estimate) | DSP (est.) |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for ly in h["layers"]:
        cm = ly.get("cost_model") or {}
        lines.append(f"| {ly['layer']} | {ly['kind']} | {ly['in_shape']} | {ly['out_shape']} | {ly.get('pe', '')} | "
                     f"{ly.get('simd', '')} | {ly.get('cycles_per_image', '')} | {cm.get('lut', '')} | {cm.get('dsp', '')} |")
    lines += ["", "## Throughput and latency (Verilator simulation)", "",
              f"{c['cycles_per_image']:.0f} cycles/image in steady state (model: {c['cycles_per_image_model']}), "
              f"latency {c['latency_cycles']} cycles; {h['images_per_s_at_clock']:,.0f} images/s at "
              f"{h['clock_mhz']:g} MHz" + (f", {h['images_per_s_at_fmax']:,.0f} images/s at the nextpnr Fmax"
                                          if h['images_per_s_at_fmax'] else "") + "."]
    if h["on_host"]:
        lines += ["", "On the host, not in hardware: " + "; ".join(h["on_host"]) + "."]
    y = h.get("yosys")
    if y:
        lines += ["", f"## yosys synth_xilinx ({y['family']}, for {y['part']}): counts", "",
                  "| LUT | FF | CARRY | DSP | BRAM18 | LUTRAM | yosys s |", "|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {y['LUT']:,} | {y['FF']:,} | {y['CARRY']:,} | {y['DSP']} | {y['BRAM18']} | {y['LUTRAM']} | "
                  f"{y['wall_s']} |"]
        ce = h.get("cost_model_vs_yosys") or {}
        if ce:
            lines += ["", "Cost model (MVUs only, estimate) vs yosys (whole design): " + ", ".join(
                f"{k} {v['model_mvus']:,} vs {v['yosys_design']:,}" + (f" ({v['error_pct']:+}%)" if v['error_pct']
                                                                       is not None else "") for k, v in ce.items()) + "."]
    p = h.get("nextpnr")
    if p and p.get("not_measured"):
        lines += ["", "## nextpnr-ecp5 place and route", "",
                  f"**Not measured**: {p['message']}; no Fmax (log: `{p['log']}`). "
                  + ("`--pnr-timeout S` allows longer (0: no limit), " if p.get("timed_out") else "")
                  + "`--no-pnr` skips this step."]
    elif p and not p.get("placed", True):
        lines += ["", f"## nextpnr-ecp5 place and route ({p['device']} {p['package']})", "",
                  f"**Does not place**: {_over(p)}; no Fmax measured. A smaller folding (`--target-fps`, `--folding`) "
                  "places; `--no-pnr` skips this step."]
    elif p:
        lines += ["", f"## nextpnr-ecp5 place and route ({p['device']} {p['package']})", "",
                  f"Fmax {p['fmax_mhz']:.1f} MHz (target {p['clock_mhz']:g} MHz{'' if p['meets_clock'] else ', NOT met'})"
                  f"; LUT4 {p['LUT4']:,}, FF {p['TRELLIS_FF']:,}, MULT18 {p['MULT18X18D']}, DP16KD {p['DP16KD']}"
                  f"{', out of context' if p['out_of_context'] else ''}; nextpnr {p.get('router', 'router1')}"
                  f"{' (auto: by the netlist size)' if p.get('router_asked') == 'auto' else ''}, seed {p['seed']}; "
                  f"{p['wall_s']} s."
                  + (f" Products of fewer than {p['dsp_min_product_bits']} bits mapped to LUTs, not MULT18X18Ds."
                     if p.get("dsp_min_product_bits") else "")]
    if h.get("fault_injected"):
        lines += ["", f"**Fault injected on purpose**: {h['fault_injected']}."]
    return "\n".join(lines) + "\n"


def _over(p: dict) -> str:
    """'MULT18X18D 200 of 156, ...': the cell types the design needs more of than the ECP5 device has."""
    return "needs " + ", ".join(f"{c} {u:,} of {t:,}" for c, (u, t) in p["over_capacity"].items())


def summary(rep: dict) -> str:
    h = rep["hw"]["rtl"]
    verdict = "bit-exact" if rep["mismatches"] == 0 else "NOT bit-exact"
    s = (f"{rep['model']}: {rep['exact_matches']}/{rep['n_images']} images {verdict} (Verilator streaming RTL == "
         f"golden, integer codes); {h['cycles']['cycles_per_image']:.0f} cycles/image simulated = "
         f"{h['images_per_s_at_clock']:,.0f} images/s at {h['clock_mhz']:g} MHz")
    acc = rep["accuracy"]
    if acc["quantized"] is not None and acc["rtl"] is not None:
        s += f"; accuracy quantized {acc['quantized']:.2%} = RTL {acc['rtl']:.2%}"
    y = h.get("yosys")
    if y:
        s += f"\n  yosys synth_xilinx ({y['part']}): LUT {y['LUT']:,}  FF {y['FF']:,}  DSP {y['DSP']}  BRAM18 {y['BRAM18']}"
        f = h.get("fit")
        if f:
            s += "  -> fits" if f["fits"] else "  -> does NOT fit"
    elif h.get("yosys_not_measured"):
        s += f"\n  yosys synth_xilinx: not measured, {h['yosys_not_measured']['message']}; fit unknown"
    p = h.get("nextpnr")
    if p and p.get("not_measured"):
        s += (f"\n  nextpnr-ecp5: not measured, {p['message']}; no Fmax"
              + (" (--pnr-timeout S allows longer)" if p.get("timed_out") else f" (log: {p['log']})"))
    elif p and not p.get("placed", True):
        s += f"\n  nextpnr-ecp5 ({p['device']}): does NOT place, {_over(p)}; no Fmax (smaller folding, or --no-pnr)"
    elif p:
        s += f"\n  nextpnr-ecp5 ({p['device']}, {p.get('router', 'router1')}): Fmax {p['fmax_mhz']:.1f} MHz, LUT4 {p['LUT4']:,}"
    return s


def markdown_section(h: dict | None, model: str) -> list[str]:
    if not h:
        return []
    y = h.get("yosys") or {}
    cost = f"; yosys synth_xilinx: LUT {y['LUT']:,}, FF {y['FF']:,}, DSP {y['DSP']} (yosys count)" if y else ""
    rate = (f", {h['cycles']['cycles_per_image']:.0f} cycles/image (simulated)" if h.get("cycles") else "")
    return ["", f"## Open RTL of the same model (`make hls MODEL={model} BACKEND=rtl`)", "",
            f"{h['exact_matches']}/{h['n_images']} images `==` the golden in Verilator ({h['design']}){rate}{cost}."]
