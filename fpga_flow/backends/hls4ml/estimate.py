"""Analytic cost of a generated hls4ml design, from plan_info alone: no vendor tool, no RTL.

Every number here is an *estimate* from a stated model (docs/estimates.md), not a measurement:
cycles from the io_type, the reuse factor and the layer shapes (how hls4ml 1.3.0's kernels are
pipelined), resources from the operand widths the flow derived (``hw.layers``). It is written so
that a calibration against measured counts (yosys ``hw.rtl``, Vitis ``hw.vendor``) multiplies
the raw figures by per-resource factors (:func:`apply_calibration`); until then ``calibrated`` is
false and every total carries its ``raw`` value.
"""

from __future__ import annotations

import math
import re

import numpy as np

from ... import parts
from . import kernels

# hls4ml layer attributes the model needs; copied into plan_info's rows by the backend
GEOMETRY = ("in_height", "in_width", "n_chan", "n_filt", "filt_height", "filt_width", "stride_height",
            "stride_width", "out_height", "out_width", "pool_height", "pool_width", "n_in", "n_partitions",
            "reuse_factor", "strategy", "implementation", "activation", "pool_op", "n_thr")

# --- assumptions (each one is named in docs/estimates.md) ---
DSP_MIN_OPERAND_BITS = 11  # a product goes to DSP48 when both operands are at least this wide; else LUTs
DSP_A_BITS, DSP_B_BITS = 25, 18  # DSP48E1 multiplier ports (7-series)
LUT_INPUTS = 6  # a 7-series LUT6
SRL_DEPTH = 32  # one SRLC32E LUT holds a 32-deep, 1-bit shift register
FIFO_BRAM_MIN_BITS = 1024  # a stream FIFO holding more bits than this goes to block RAM, else SRLs
FIFO_SRL_MAX_DEPTH = 32  # ... and so does any FIFO deeper than one SRL
RAMB18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))  # depth x width
# hls4ml's own layer classes, then our kernels by the cost kind each declares (kernels/)
MAC_CLASSES = ("Dense", "Conv1D", "Conv2D", "PointwiseConv1D", "PointwiseConv2D",
               "DepthwiseConv1D", "DepthwiseConv2D", *kernels.classes("mac"))
ALIAS_CLASSES = ("Reshape",)  # io_stream: the output stream is the input stream (`auto& x = y`)
MODELLED_OTHER = ("Activation", "Pooling1D", "Pooling2D", "Reshape", *kernels.classes("cheap"))  # compare/select/cast only


UNCALIBRATED = {"calibrated": False, "source": None, "factors": {"lut": 1.0, "ff": 1.0, "dsp": 1.0, "bram18k": 1.0}}

_TYPE = re.compile(r"(u?)fixed<\s*(\d+)\s*,\s*(-?\d+)")


def type_width(t: str | None) -> int | None:
    """Bit width of a plan_info type string such as ``fixed<15,4>`` or ``ufixed<4,1,RND_CONV,SAT,0>``."""
    m = _TYPE.search(t or "")
    return int(m.group(2)) if m else None


def layer_geometry(layer) -> dict:
    """The scalar attributes of an hls4ml layer that the estimate reads, and the number of its weights
    that are +-2^k (a shift, no multiplier). Called by the backend for plan_info's rows."""
    out = {}
    attrs = getattr(layer, "attributes", {}) or {}
    for k in GEOMETRY:
        v = attrs.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            continue
        out[k] = v
    w = getattr(layer, "weights", {}).get("weight") if hasattr(layer, "weights") else None
    if w is not None:
        p = w.type.precision
        codes = np.abs(np.round(np.asarray(w.data, dtype=np.float64) * 2.0 ** (int(p.width) - int(p.integer))))
        codes = codes.astype(np.int64)
        out["pow2_weights"] = int(np.count_nonzero((codes > 0) & ((codes & (codes - 1)) == 0)))
    return out


def ramb18_count(depth: int, width: int) -> int:
    """RAMB18 blocks for a depth x width memory: the best of the block's six aspect ratios."""
    if depth <= 0 or width <= 0:
        return 0
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in RAMB18_SHAPES)


def adder_tree_depth(fan_in: int) -> int:
    """Levels of a balanced two-input adder tree summing ``fan_in`` terms (bias included)."""
    return max(0, math.ceil(math.log2(fan_in))) if fan_in > 1 else 0


def mac_depth(nonzero_per_output: float) -> int:
    """Pipeline stages of one output: 1 product + the adder tree over the products and the bias + 1 cast.
    Assumes one adder level per cycle (Vitis chains several narrow adds in one cycle: an upper bound)."""
    return 1 + adder_tree_depth(math.ceil(nonzero_per_output) + 1) + 1


def multiplier_cost(a_bits: int, b_bits: int) -> dict:
    """One multiplication of an a-bit input by a b-bit *constant* weight: DSP48 slices or LUTs.

    Both operands at least DSP_MIN_OPERAND_BITS wide: DSP48E1 (25x18 ports). Otherwise LUTs: with an
    input of at most 6 bits every product bit is one LUT6 of the input bits (a + b LUTs); wider inputs
    get a generic array multiplier, a*b/2 LUTs (LUT6 + carry chain)."""
    if min(a_bits, b_bits) >= DSP_MIN_OPERAND_BITS:
        big, small = max(a_bits, b_bits), min(a_bits, b_bits)
        return {"dsp": math.ceil(big / DSP_A_BITS) * math.ceil(small / DSP_B_BITS), "lut": 0}
    if a_bits <= LUT_INPUTS:
        return {"dsp": 0, "lut": a_bits + b_bits}
    return {"dsp": 0, "lut": math.ceil(a_bits * b_bits / 2)}


def adder_bits(product_bits: int, acc_bits: int) -> int:
    """Mean width of the two-input adders of a balanced tree over product_bits-wide terms: half sit at
    the first level (product_bits + 1), a quarter at the second ... -> product_bits + 2, capped at acc."""
    return min(acc_bits, product_bits + 2)


def _shape_words(shape: list[int], word: int | None) -> tuple[int, int]:
    """(words per image, elements per word) of a stream carrying ``shape``."""
    n = math.prod(shape) if shape else 1
    if word is None:
        word = shape[-1] if len(shape) > 1 else n
    return max(1, n // max(1, word)), word


def _mac_layer(row: dict, g: dict, in_words: int, io_type: str) -> dict:
    rf = int(g.get("reuse_factor", 1))
    weights, nz, n_out = int(row["weights"]), int(row["nonzero_weights"]), int(row["n_out"])
    shape = row.get("shape") or []
    a, b, acc = type_width(row.get("input")), type_width(row.get("weight")), type_width(row.get("accum"))
    conv = "filt_height" in g or "filt_width" in g or len(shape) > 1
    out_pixels = math.prod(shape[:-1]) if conv and len(shape) > 1 else 1
    nz_per_out = nz / n_out if n_out else 0.0
    depth = mac_depth(nz_per_out)
    # hls4ml's own count: multiplier_limit = ceil(n_in*n_out / rf) - n_zeros / rf (integer division)
    multipliers = math.ceil(weights / rf) - (weights - nz) // rf
    # a weight of +-2^k is a shift: no multiplier logic (counted by the backend; 0 when not known)
    shifts = min(int(g.get("pow2_weights", 0)), nz)
    mult_logic = math.ceil(max(0, nz - shifts) / rf)
    adders = math.ceil(nz / rf)  # nz products + bias per output: nz two-input additions in all
    m = multiplier_cost(a, b)
    res = {"lut": mult_logic * m["lut"] + adders * adder_bits(a + b, acc), "dsp": mult_logic * m["dsp"],
           "ff": multipliers * (a + b) + n_out * acc, "bram18k": 0}
    model = []
    if str(g.get("strategy", "latency")).lower() != "latency":  # set by hand ([layers.<name>] strategy)
        model.append(f"strategy {g['strategy']}: costed as the latency kernel (its block-RAM weights and operand "
                     "multiplexers are not modelled)")
    if conv and io_type == "io_stream":
        ih, iw = int(g.get("in_height", 1)), int(g.get("in_width", in_words))
        fh, fw, ch = int(g.get("filt_height", 1)), int(g.get("filt_width", 1)), int(g.get("n_chan", 1))
        interval = ih * iw * rf
        latency = interval + depth
        lb_bits = (fh - 1) * iw * ch * a
        res["lut"] += (fh - 1) * ch * a * math.ceil(iw / SRL_DEPTH)  # line buffer in SRLs
        res["ff"] += fh * fw * ch * a  # the window registers
        model.append(f"line buffer: one input pixel per II={rf} cycle(s), {ih}x{iw} pixels per image")
    elif conv:  # io_parallel: n_partitions groups of output pixels, one per II=rf
        n_parts = int(g.get("n_partitions", out_pixels))
        interval = n_parts * rf
        latency = interval + depth
        lb_bits = 0
        model.append(f"io_parallel conv: {n_parts} partition(s) of output pixels, one per II={rf} cycle(s)")
    elif io_type == "io_stream":  # dense: read the input words, compute (II=rf), write
        interval = latency = in_words + depth + (rf - 1) + 1
        lb_bits = 0
        model.append(f"stream dense: {in_words} input word(s) read at II=1, then one pipelined product (II={rf})")
    else:
        interval, latency, lb_bits = rf, depth + rf - 1, 0
        model.append(f"parallel dense: fully unrolled, II={rf}")
    return {"multiplications": weights * out_pixels, "multiplications_nonzero": nz * out_pixels,
            "multipliers": multipliers, "shift_only_products": shifts, "adders": adders, "operand_bits": [a, b], "accumulator_bits": acc,
            "reuse_factor": rf, "conv": conv, "depth": depth, "interval_cycles": interval, "latency_cycles": latency,
            "line_buffer_bits": lb_bits, "resources": res, "model": "; ".join(model)}


def _other_layer(row: dict, g: dict, in_words: int, io_type: str) -> dict:
    shape = row.get("shape") or []
    width = type_width(row.get("result")) or 0
    res = {"lut": 0, "ff": 0, "dsp": 0, "bram18k": 0}
    if io_type == "io_stream":
        interval, latency = in_words, in_words + 2
        model = f"stream: one word per cycle, {in_words} word(s) per image"
        if row["class"] not in MODELLED_OTHER:
            model += f"; {row['class']}: its logic (tables, arithmetic) is not modelled: resources 0"
        if row["class"] == kernels.requant.LAYER:  # one word (all channels of a pixel) per cycle
            res["lut"] += _requant_luts(row, g, int(g.get("n_chan", 1)))
            model += "; thresholds: n_chan x n_thr constant comparators and a count per channel"
        if row["class"].startswith("Pooling") and "pool_height" in g:
            ph, iw, ch = int(g["pool_height"]), int(g.get("in_width", 1)), int(g.get("n_filt", 1))
            res["lut"] += (ph - 1) * ch * width * math.ceil(iw / SRL_DEPTH)
            model += f"; line buffer of {ph - 1} row(s)"
    else:
        interval, latency = 1, 1
        model = "io_parallel: fully unrolled, registered output"
        res["ff"] += math.prod(shape) * width if shape else 0
        if row["class"] == kernels.requant.LAYER:
            res["lut"] += _requant_luts(row, g, math.prod(shape) if shape else 1)
    return {"interval_cycles": interval, "latency_cycles": latency, "depth": latency - interval + 1,
            "resources": res, "model": model}


def _requant_luts(row: dict, g: dict, values: int) -> int:
    """Thresholds of ``values`` accumulators in parallel: per threshold a compare with a constant, ~w/2 LUT6
    on the carry chain for a w-bit accumulator, plus ~1 LUT per threshold for counting the results."""
    w = type_width(row.get("input")) or 16
    return values * int(g.get("n_thr", 1)) * (math.ceil(w / 2) + 1)


def _fifo(depth: int, width: int) -> dict:
    bits = depth * width
    if bits > FIFO_BRAM_MIN_BITS and depth > FIFO_SRL_MAX_DEPTH:
        return {"lut": 0, "ff": 0, "dsp": 0, "bram18k": ramb18_count(depth, width)}
    return {"lut": width * math.ceil(depth / SRL_DEPTH), "ff": 0, "dsp": 0, "bram18k": 0}


def from_plan_info(info: dict, clock_ns: float, io_type: str, part: str | None = None,
                   calibration: dict | None = None) -> dict:
    """``hw.estimate`` of a design: per layer cycles and resources, the whole-design interval,
    latency, throughput at ``clock_ns``, resource totals (and utilisation of a known ``part``)."""
    rows = (info or {}).get("layers") or []
    layers, word = [], None
    words_prev = 1
    fifo_total = {"lut": 0, "ff": 0, "dsp": 0, "bram18k": 0}
    n_fifo_bits = 0
    last = len(rows) - 1
    for i, row in enumerate(rows):
        g = row.get("geometry") or {}
        cls = row.get("class", "")
        shape = row.get("shape") or []
        in_words = words_prev
        if cls == "Input":
            words_prev, word = _shape_words(shape, None)
            continue
        if cls in MAC_CLASSES and "weights" in row:
            est = _mac_layer(row, g, in_words, io_type)
        else:
            est = _other_layer(row, g, in_words, io_type)
        if cls in ALIAS_CLASSES:
            words_prev = max(1, math.prod(shape) // max(1, word or 1)) if shape else words_prev
            est.update(interval_cycles=0, latency_cycles=0, depth=0, resources=dict.fromkeys(fifo_total, 0),
                       model="alias of its input (no logic)")
        else:
            words_prev, word = _shape_words(shape, None)
            width = type_width(row.get("result") or row.get("accum")) or 0
            if io_type == "io_stream" and i != last:  # the last layer writes the top-level port, not a FIFO
                f = _fifo(words_prev, word * width)
                est["fifo"] = {"depth": words_prev, "width": word * width, **f}
                n_fifo_bits += words_prev * word * width
                for k in fifo_total:
                    fifo_total[k] += f[k]
        layers.append({"layer": row["layer"], "class": cls, **est})
    active = [r for r in layers if r["interval_cycles"]]
    return _design(layers, active, fifo_total, n_fifo_bits, clock_ns, io_type, part, calibration)


def _design(layers, active, fifo_total, fifo_bits, clock_ns, io_type, part, calibration) -> dict:
    cal = calibration or UNCALIBRATED
    has_conv = any(r.get("conv") for r in active)
    if not active:
        interval = lat_min = lat_max = 0
        style = "empty"
    elif io_type == "io_stream" or has_conv:
        style = "dataflow"
        slowest = max(active, key=lambda r: r["interval_cycles"])
        interval = slowest["interval_cycles"]
        lat_max = sum(r["latency_cycles"] for r in active)
        lat_min = max(r["latency_cycles"] for r in active) + sum(r["depth"] for r in active if r is not slowest)
    else:
        style = "pipeline"
        interval = max(r.get("reuse_factor", 1) for r in active)
        lat_min = lat_max = sum(r["latency_cycles"] for r in active)
    raw = {k: sum(r["resources"][k] for r in layers) + fifo_total[k] for k in ("lut", "ff", "dsp", "bram18k")}
    resources = {k: {"raw": v, "value": round(v * cal["factors"].get(k, 1.0))} for k, v in raw.items()}
    avail = parts.resources(part)
    util = {k: round(100.0 * resources[k]["value"] / avail[k], 2) for k in avail} if avail else None
    mult = sum(r.get("multiplications", 0) for r in layers)
    mult_nz = sum(r.get("multiplications_nonzero", 0) for r in layers)
    return {
        "kind": "estimate",
        "method": "analytic model of hls4ml 1.3.0 kernels (latency strategy); see docs/estimates.md",
        "calibrated": bool(cal.get("calibrated")),
        "calibration": cal,
        "io_type": io_type,
        "pipeline_style": style,
        "clock_ns": clock_ns,
        "interval_cycles": interval,
        "latency_cycles": {"min": lat_min, "max": lat_max},
        "latency_ns": {"min": lat_min * clock_ns, "max": lat_max * clock_ns},
        "throughput_per_s": (1e9 / (interval * clock_ns)) if interval else None,
        "multiplications": mult,
        "multiplications_nonzero": mult_nz,
        "multipliers": sum(r.get("multipliers", 0) for r in layers),
        "fifo_bits": fifo_bits,
        "resources": resources,
        "utilisation_pct": util,
        "part": part,
        "layers": layers,
    }


def apply_calibration(est: dict, factors: dict, source: str) -> dict:
    """The same estimate with each resource total scaled by a measured/estimated ratio (e.g. from yosys)."""
    cal = {"calibrated": True, "source": source, "factors": {**UNCALIBRATED["factors"], **factors}}
    out = dict(est, calibrated=True, calibration=cal)
    out["resources"] = {k: {"raw": v["raw"], "value": round(v["raw"] * cal["factors"][k])}
                        for k, v in est["resources"].items()}
    avail = parts.resources(est.get("part"))
    out["utilisation_pct"] = ({k: round(100.0 * out["resources"][k]["value"] / avail[k], 2) for k in avail}
                              if avail else None)
    return out


def summary_line(est: dict) -> str:
    """One line for report.md and the CLI."""
    r = est["resources"]
    thr = est["throughput_per_s"]
    lat = est["latency_cycles"]
    lat_s = f"{lat['min']:,}" if lat["min"] == lat["max"] else f"{lat['min']:,}-{lat['max']:,}"
    return (f"Estimate ({'calibrated' if est['calibrated'] else 'calibrated: no'}; model in docs/estimates.md): "
            f"interval {est['interval_cycles']:,} cycles = "
            f"{'-' if not thr else f'{thr:,.0f}'} images/s at {est['clock_ns']:g} ns, latency {lat_s} cycles; "
            f"~{r['lut']['value']:,} LUT, ~{r['ff']['value']:,} FF, {r['dsp']['value']} DSP, "
            f"{r['bram18k']['value']} BRAM18K; {est['multiplications_nonzero']:,} of "
            f"{est['multiplications']:,} multiplications per image non-zero")


def fit_verdict(est: dict | None) -> str | None:
    """Whether the design fits its part by this estimate, said plainly (None without a known part)."""
    util = (est or {}).get("utilisation_pct")
    if not util:
        return None
    over = {k: v for k, v in util.items() if v > 100.0}
    name = {"lut": "LUT", "ff": "FF", "dsp": "DSP", "bram18k": "BRAM18K"}
    if over:
        worst = max(over, key=over.get)
        return (f"does NOT fit {est['part']} by the estimate: "
                + ", ".join(f"{name.get(k, k)} {v:.0f}% ({est['resources'][k]['value']:,})" for k, v in over.items())
                + f"; {over[worst] / 100:.1f}x the part's {name.get(worst, worst)}. Use --fit (reuse factors chosen "
                "to fit), raise --reuse-factor, use --backend rtl (folded, measured) or a larger --part")
    top = max(util, key=util.get)
    return f"fits {est['part']} by the estimate (largest: {name.get(top, top)} {util[top]:.0f}%)"


def markdown(hw: dict) -> list[str]:
    """report.md lines: the estimate's summary and its per-layer table (nothing when absent)."""
    est = (hw or {}).get("estimate")
    if not est:
        return []
    verdict = fit_verdict(est)
    util = est.get("utilisation_pct")
    shown = ", ".join(f"{k.upper()} {v:.1f}%" for k, v in util.items()) if util else ""
    lines = ["", "## Hardware cost: estimate (not measured)", "", summary_line(est) + ".", "",
             *([f"Utilisation of {est['part']} by the estimate: {shown}.", ""] if util else []),
             *([f"**The design {verdict}.**", ""] if verdict else []),
             "| layer | multiplications (non-zero) / image | multipliers | acc bits | II / interval (cycles) "
             "| latency (cycles) | LUT | FF | DSP | BRAM18K (FIFO) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in est["layers"]:
        res, fifo = r["resources"], r.get("fifo") or {}
        mult = f"{r['multiplications_nonzero']:,} of {r['multiplications']:,}" if "multiplications" in r else ""
        lines.append(f"| {r['layer']} | {mult} | {r.get('multipliers', '')} | {r.get('accumulator_bits', '')} | "
                     f"{r['interval_cycles']:,} | {r['latency_cycles']:,} | {res['lut']:,} | {res['ff']:,} | "
                     f"{res['dsp']} | {fifo.get('bram18k', 0)} |")
    return lines
