"""Choosing PE x SIMD per layer: ``--target-fps N`` (the smallest folding reaching N images/s at the clock),
``--fit`` (the fastest folding whose modelled cost fits the part), and per-layer overrides.

The pipeline's rate is set by its slowest MVU (``cost.cycles_per_image``), so both searches work on one
number, the cycle budget ``T`` per image:

* **target**: ``T = floor(clock / N)``; every layer independently takes the cheapest legal (PE, SIMD) whose
  ``cost.layer_cycles <= T`` (``NF * SF * output pixels``, or its window's input beats where more) (``T``
  raised to the slowest layer's fastest rate first: no layer need be faster than the pipeline) (cheapest:
  fewest multipliers PE*SIMD; of as many, a dense layer the cost model's cheapest, a conv the narrowest SIMD
  first: :func:`_tiebreak`); a layer that cannot reach ``T`` even fully parallel takes its fastest folding and
  the result says so; where the part is known and the layers' DSP blocks would not fit it, the largest DSP
  users get their products in LUTs (:func:`lut_products`);
* **fit**: every ``T`` any layer can hit is a candidate; for each, fold all layers as for a target and add up
  the cost model's LUT / DSP / BRAM18 (``cost.mvu_cost``; the MVUs only: windows, pools and FIFOs are left
  to the :data:`FIT_MARGIN`), then keep the smallest ``T`` (fastest design) that fits ``FIT_MARGIN`` of the
  part. The cost model is an estimate; the build measures the result with yosys and reports both.

Legal foldings (what the blocks accept): PE divides the output channels; SIMD divides the vector (dense); for
a conv, SIMD divides the input channels (the sliding window hands out SIMD channels of one pixel a beat) or is
``T * C`` for ``T`` kernel taps a beat (``T`` divides K, or is whole kernel rows: ``window.legal_simd``), so a
1-channel first conv is not held at SIMD 1; depthwise PE == SIMD dividing the channels.
"""

from __future__ import annotations

import math
from dataclasses import replace

from ... import parts
from ...errors import FlowError
from . import cost
from .hw import mvu, spec, window

FIT_MARGIN = 0.8  # the MVUs may take this share of the part's LUT/DSP/BRAM; the rest is left for the others


def part_budget(part: str) -> dict:
    """The part's resources from the one part table (:mod:`fpga_flow.parts`), with its device as ``name``."""
    dev = parts.device_of(part)
    if dev is None:
        raise FlowError(f"no resource table for part {part!r} (known: {', '.join(parts.DEVICES)}); the fit needs "
                        "one: give --target-fps instead")
    return {"name": dev, **parts.DEVICES[dev].resources()}


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def options(layer: spec.Mac) -> list[tuple[int, int]]:
    """Every legal (PE, SIMD) of a layer."""
    oc = layer.out_channels
    if layer.kind == "depthwise":
        return [(d, d) for d in divisors(oc)]
    if layer.kind == "dense":
        n = mvu.weight_matrix(layer).shape[1]
        return [(p, s) for p in divisors(oc) for s in divisors(n)]
    return [(p, s) for p in divisors(oc) for s in window.legal_simd(layer.in_shape[2], layer.k)]


def layer_cycles(layer: spec.Mac, pe: int, simd: int) -> int:
    """:func:`cost.layer_cycles` of ``layer`` folded to (PE, SIMD)."""
    return cost.layer_cycles(replace(layer, pe=pe, simd=simd))


def _cheapest(layer: spec.Mac, budget: int) -> tuple[int, int]:
    opts = [(p, s) for p, s in options(layer) if layer_cycles(layer, p, s) <= budget]
    if not opts:  # cannot reach the budget: its fastest folding
        return min(options(layer), key=lambda o: (layer_cycles(layer, *o), o[0] * o[1]))
    return min(opts, key=lambda o: (o[0] * o[1], *_tiebreak(layer, *o)))


def _tiebreak(layer: spec.Mac, pe: int, simd: int) -> tuple:
    """Among foldings of as many multipliers: a dense layer takes the one the cost model puts lowest (the model
    counts all of a dense layer's hardware: mlp at 1,000,000 images/s, PE 1 x SIMD 64 instead of PE 64 x SIMD 1
    on its hidden layers, one set of thresholds instead of 64); a conv the narrowest SIMD first, since each
    kernel tap a beat is a copy of its window's line buffer, which the model does not count."""
    lut = cost.mvu_cost(replace(layer, pe=pe, simd=simd))["lut"]
    return (lut, simd) if layer.kind == "dense" else (simd, lut)


def fold(layers: list, budget: int, overrides: dict[int, tuple[int, int]] | None = None) -> list:
    """Each Mac folded to its cheapest (PE, SIMD) within ``budget`` cycles per image; ``overrides`` (layer index
    -> (PE, SIMD)) win."""
    overrides = overrides or {}
    # no layer need be faster than the slowest one can be: the pipeline runs at its slowest layer's rate
    fastest = [layer_cycles(ly, *_cheapest(ly, 0)) for i, ly in enumerate(layers)
               if isinstance(ly, spec.Mac) and i not in overrides]
    budget = max([budget, *fastest])
    out = []
    for i, layer in enumerate(layers):
        if isinstance(layer, spec.Mac):
            pe, simd = overrides[i] if i in overrides else _cheapest(layer, budget)
            if (pe, simd) not in options(layer):
                raise FlowError(f"layer {i} ({layer.kind}, {layer.out_channels} outputs): folding PE={pe} SIMD={simd} "
                                f"is not legal; legal: {options(layer)}")
            layer = replace(layer, pe=pe, simd=simd)
        out.append(layer)
    return out


def for_target(layers: list, fps: float, clock_mhz: float, overrides=None) -> list:
    """The smallest folding reaching ``fps`` images/s at ``clock_mhz`` (see the module doc)."""
    if fps <= 0:
        raise FlowError(f"target fps must be positive, got {fps}")
    return fold(layers, max(1, int(clock_mhz * 1e6 // fps)), overrides)


def model_cost(layers: list) -> dict:
    """The cost model's total over the MVUs (estimate)."""
    tot = {"lut": 0, "ff": 0, "dsp": 0, "bram18": 0}
    for layer in layers:
        if isinstance(layer, spec.Mac):
            c = cost.mvu_cost(layer)
            for k in tot:
                tot[k] += c[k]
    return tot


def lut_products(layers: list, dsp_budget: float) -> list:
    """``layers`` with the products of the MVUs with the most DSP blocks moved to LUTs (``lut_products``), one
    layer at a time, until the cost model's DSP count is within ``dsp_budget``. yosys puts every product of 9
    bits or more in a DSP48, so a fast first layer of 8-bit inputs (mlp at 1,000,000 images/s: 512
    multipliers) would need more DSPs than the part has; in LUTs it costs about 44 LUT per 8 x 4-bit
    product instead."""
    out = list(layers)
    while model_cost(out)["dsp"] > dsp_budget:
        dsp = {i: cost.mvu_cost(ly)["dsp"] for i, ly in enumerate(out) if isinstance(ly, spec.Mac)}
        i = max(dsp, key=lambda j: (dsp[j], -j))
        if not dsp[i]:
            break
        out[i] = replace(out[i], lut_products=True)
    return out


def fits(total: dict, part: dict, margin: float = FIT_MARGIN) -> bool:
    return (total["lut"] <= margin * part["lut"] and total["dsp"] <= margin * part["dsp"]
            and total["bram18"] <= margin * part["bram18k"])


def for_part(layers: list, part: dict, overrides=None) -> list:
    """The fastest folding whose modelled cost fits ``FIT_MARGIN`` of ``part`` (see the module doc)."""
    budgets = sorted({layer_cycles(ly, p, s) for ly in layers if isinstance(ly, spec.Mac) for p, s in options(ly)})
    best = None
    lo, hi = 0, len(budgets) - 1  # cost falls as the budget grows: bisect for the smallest budget that fits
    while lo <= hi:
        mid = (lo + hi) // 2
        cand = fold(layers, budgets[mid], overrides)
        if fits(model_cost(cand), part):
            best, hi = cand, mid - 1
        else:
            lo = mid + 1
    if best is None:
        slow = fold(layers, budgets[-1], overrides)
        raise FlowError(f"no folding fits the part by the cost model (the slowest, {cost.cycles_per_image(slow)} "
                        f"cycles/image, needs {model_cost(slow)} of {part})")
    return best


def choose(layers: list, extra: dict, part: dict, clock_mhz: float) -> tuple[list, dict]:
    """Folded layers per the options (``target_fps``, ``folding`` overrides {layer index or node: [pe, simd]},
    ``names`` to resolve node names), and what was asked."""
    names = extra.get("_names", [])
    overrides = {}
    for key, ps in (extra.get("folding") or {}).items():
        i = names.index(key) if key in names else int(key) if str(key).isdigit() else None
        if i is None or not 0 <= i < len(layers):
            raise FlowError(f"folding override for {key!r}: no such layer (layers: {', '.join(names)})")
        overrides[i] = (int(ps[0]), int(ps[1]))
    fps = extra.get("target_fps")
    if fps:
        out = for_target(layers, float(fps), clock_mhz, overrides)
        if part:  # the part's DSP blocks are the one resource a target folding cannot trade away by itself
            out = lut_products(out, FIT_MARGIN * part["dsp"])
        how = {"mode": "target_fps", "target_fps": float(fps),
               "reached": clock_mhz * 1e6 / cost.cycles_per_image(out) >= float(fps)}
    else:
        out = for_part(layers, part, overrides)
        how = {"mode": "fit", "margin": FIT_MARGIN}
    how["overrides"] = {names[i] if i < len(names) else str(i): list(v) for i, v in overrides.items()}
    how["lut_products"] = [names[i] if i < len(names) else str(i) for i, ly in enumerate(out)
                           if isinstance(ly, spec.Mac) and ly.lut_products]
    how["model_cost"] = model_cost(out)
    how["cycles_per_image_model"] = cost.cycles_per_image(out)
    how["fps_at_clock_model"] = round(clock_mhz * 1e6 / how["cycles_per_image_model"], 1)
    return out, how


def clock_mhz(clock_ns: float) -> float:
    return round(1000.0 / clock_ns, 6) if clock_ns > 0 else math.nan
