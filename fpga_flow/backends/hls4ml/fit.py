"""``--fit`` for the hls4ml backend: each MAC layer's reuse factor chosen so that the design fits the part
by our estimate (:mod:`.estimate`), the fastest such design first.

Why a search over one number: an io_stream design (and an io_parallel one with convs) is a dataflow pipeline
whose rate is its slowest layer's interval, and a layer's interval and cost depend only on its own reuse
factor (the estimate's per-layer model). So, as the rtl backend's folding search does, every interval ``T``
any layer can reach is a candidate; for each, every layer takes its cheapest *valid* reuse factor whose
interval is at most ``T`` (cheapest: the largest share of the part it would take, then the smaller reuse
factor, which is the shorter latency); total cost falls as ``T`` grows, so a bisection finds the smallest
``T`` (highest throughput) whose design fits. Nothing fits: the slowest design is kept and said not to fit,
by how much.

Valid reuse factors are hls4ml's own (``get_valid_reuse_factors`` of its Vitis backend: the values its
Resource kernels accept and the ones that divide the layer's multiplications evenly), for the layer's
multiplication size as hls4ml counts it (``get_layer_mult_size``: Dense n_in x n_out, Conv2D
n_chan*kh*kw x n_filt). The Latency strategy accepts any reuse factor; only valid ones are searched anyway.

Strategy: the search keeps hls4ml's Latency strategy. Our estimate models hls4ml's latency kernels only
(docs/estimates.md); the Resource kernels (weights in block RAM, operand multiplexers, no constant-weight
pruning) are not modelled, so choosing them by this estimate would be a guess. ``[layers.<name>] strategy
= "Resource"`` still sets one by hand; such a layer, like any layer set in ``[layers]``, is left as given.
"""

from __future__ import annotations

import copy
import re

from ... import parts
from ...errors import FlowError
from . import estimate

FIT_MARGIN = 1.0  # the estimate's totals may take this share of every resource of the part
RESOURCES = ("lut", "ff", "dsp", "bram18k")


def mult_size(row: dict) -> tuple[int, int]:
    """(n_in, n_out) of a MAC layer as hls4ml's ``get_layer_mult_size`` counts them."""
    g = row.get("geometry") or {}
    n_out = int(row["n_out"])
    if "n_chan" in g and ("filt_height" in g or "filt_width" in g):
        n_in = int(g["n_chan"]) * int(g.get("filt_height", 1)) * int(g.get("filt_width", 1))
        return n_in, int(g.get("n_filt", n_out))
    return int(row["weights"]) // max(1, n_out), n_out


def valid_reuse_factors(n_in: int, n_out: int) -> list[int]:
    """hls4ml's valid reuse factors for an n_in x n_out multiplication (its Vitis backend's own function)."""
    import hls4ml  # the library's own rule; imported here so the estimate stays importable without it
    return list(hls4ml.backends.get_backend("Vitis").get_valid_reuse_factors(n_in, n_out))


def _with_rf(rows: list[dict], rf: dict[int, int]) -> list[dict]:
    out = copy.deepcopy(rows)
    for i, r in rf.items():
        out[i]["geometry"] = {**(out[i].get("geometry") or {}), "reuse_factor": int(r)}
    return out


def _share(res: dict, avail: dict) -> float:
    """The largest share of the part a layer's resources take (what 'cheapest' minimises)."""
    return max(res[k] / avail[k] for k in RESOURCES if avail.get(k))


def fits(est: dict, margin: float = FIT_MARGIN) -> bool:
    return all(v <= 100.0 * margin for v in (est.get("utilisation_pct") or {}).values())


def search(info: dict, clock_ns: float, io_type: str, part: str, fixed: tuple[str, ...] = (),
           margin: float = FIT_MARGIN) -> dict:
    """The fastest per-layer reuse factors whose estimate fits ``part`` (see the module doc).

    ``info`` is plan_info (its ``layers`` rows); ``fixed`` names layers (hls4ml names, or the conv a fused
    layer came from) set by hand, which keep their reuse factor. Returns the choice, its estimate and what
    was searched (JSON-able, for report.json ``hw.fit``)."""
    avail = parts.resources(part)
    if not avail:
        raise FlowError(f"--fit needs the part's resources, and {part!r} is not in fpga_flow/parts.py: give a "
                        "known --part, or set reuse factors by hand (--reuse-factor, [layers.<name>])")
    rows = info["layers"]
    mac = [i for i, r in enumerate(rows) if r.get("class") in estimate.MAC_CLASSES and "weights" in r
           and config_name(r) not in fixed and r["layer"] not in fixed]
    options = {i: valid_reuse_factors(*mult_size(rows[i])) for i in mac}
    # per layer and reuse factor: its interval and resources (a layer's figures depend only on its own rf)
    table: dict[int, dict[int, tuple[int, dict]]] = {i: {} for i in mac}
    for j in range(max((len(o) for o in options.values()), default=0)):
        trial = {i: o[min(j, len(o) - 1)] for i, o in options.items()}
        est = estimate.from_plan_info({"layers": _with_rf(rows, trial)}, clock_ns, io_type, part)
        by_name = {r["layer"]: r for r in est["layers"]}
        for i, o in options.items():
            r = by_name[rows[i]["layer"]]
            table[i][o[min(j, len(o) - 1)]] = (r["interval_cycles"], r["resources"])

    def choose(budget: int) -> dict[int, int]:
        out = {}
        for i in mac:
            ok = [(rf, t) for rf, t in table[i].items() if t[0] <= budget]
            if not ok:  # cannot reach the budget: its fastest
                out[i] = min(table[i], key=lambda rf: (table[i][rf][0], rf))
            else:
                out[i] = min(ok, key=lambda x: (_share(x[1][1], avail), x[0]))[0]
        return out

    def design(choice: dict[int, int]) -> dict:
        return estimate.from_plan_info({"layers": _with_rf(rows, choice)}, clock_ns, io_type, part)

    # no layer need be faster than the fastest design's interval (the first conv's line buffer, a stream
    # layer reading one word per cycle): below it, cost rises and the design gets no faster
    floor = design(choose(0))["interval_cycles"]
    budgets = sorted({floor} | {t[0] for i in mac for t in table[i].values() if t[0] > floor})
    best, evaluated = None, 0
    lo, hi = 0, len(budgets) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        choice = choose(budgets[mid])
        est = design(choice)
        evaluated += 1
        if fits(est, margin):
            best, hi = (choice, est), mid - 1
        else:
            lo = mid + 1
    fitted = best is not None
    if best is None:  # nothing fits: the slowest (cheapest) design, said plainly
        choice = choose(budgets[-1])
        best = (choice, design(choice))
    choice, est = best
    layers = [{"layer": rows[i]["layer"], "config_name": config_name(rows[i]), "class": rows[i]["class"],
               "reuse_factor": choice[i], "strategy": "Latency", "n_in": mult_size(rows[i])[0],
               "n_out": mult_size(rows[i])[1], "valid_reuse_factors": options[i],
               "interval_cycles": table[i][choice[i]][0]} for i in mac]
    util = est["utilisation_pct"]
    worst = max(util, key=util.get)
    return {"mode": "fit", "part": part, "margin": margin, "fits": fitted, "layers": layers,
            "fixed": sorted(fixed), "candidates": len(budgets), "evaluated": evaluated,
            "interval_cycles": est["interval_cycles"], "throughput_per_s": est["throughput_per_s"],
            "utilisation_pct": util, "over_by": None if fitted else
            {"resource": worst, "pct": util[worst], "times_part": round(util[worst] / 100.0, 3)},
            "kind": "estimate", "method": "search over hls4ml-valid reuse factors by our estimate (estimate.py)"}


# hls4ml's ONNX passes replace a node by a layer named "<its class>_<the node's name>" (matmul_const_to_dense,
# conv_to_convxd) and copy the node's config over: the config (and [layers.<name>]) uses the node's name
_RENAMED = re.compile(r"^(?:Dense|Conv1D|Conv2D|DepthwiseConv1D|DepthwiseConv2D|PointwiseConv1D|PointwiseConv2D)_")


def config_name(row: dict) -> str:
    """The name hls4ml's config (and ``[layers.<name>]``) knows this layer by: the ONNX node's name; a fused
    conv + ReLU takes its conv's."""
    return _RENAMED.sub("", (row.get("fused_from") or [row["layer"]])[0], count=1)


def overrides(result: dict, given: dict) -> dict:
    """BuildConfig.layers for the chosen design: the search's choice, the user's own ``[layers]`` on top."""
    chosen = {r["config_name"]: {"reuse_factor": r["reuse_factor"], "strategy": r["strategy"]}
              for r in result["layers"]}
    return {**chosen, **given}


def describe(result: dict) -> str:
    """One line: what the fit chose, whether it fits and, if not, by how much."""
    rfs = ", ".join(f"{r['layer']} RF {r['reuse_factor']}" for r in result["layers"]) or "no MAC layer to set"
    thr = result["throughput_per_s"]
    speed = f"interval {result['interval_cycles']:,} cycles ({thr:,.0f} images/s)" if thr else "interval -"
    if result["fits"]:
        return f"--fit: {rfs} (Latency); {speed}; fits {result['part']} by the estimate"
    o = result["over_by"]
    return (f"--fit: NO reuse factor fits {result['part']} by the estimate: even the slowest valid choice ({rfs}; "
            f"{speed}) needs {o['pct']:.0f}% of its {o['resource'].upper()} ({o['times_part']:.2f}x the part)")


def markdown(hw: dict) -> list[str]:
    """report.md lines: what ``--fit`` chose per layer and whether it fits (nothing without ``--fit``)."""
    res = (hw or {}).get("fit")
    if not res:
        return []
    util = ", ".join(f"{k.upper()} {v:.1f}%" for k, v in (res["utilisation_pct"] or {}).items())
    head = ("fits" if res["fits"] else "**does NOT fit**")
    lines = ["", f"## --fit: reuse factors chosen to fit {res['part']} (by the estimate, not measured)", "",
             f"The search {head} the part: utilisation by the estimate {util}. It tried {res['evaluated']} of "
             f"{res['candidates']} candidate intervals over hls4ml's valid reuse factors per layer, fastest design "
             "that fits first (fpga_flow/backends/hls4ml/fit.py)."
             + ("" if res["fits"] else f" Even the slowest valid choice needs {res['over_by']['pct']:.0f}% of the "
                f"part's {res['over_by']['resource'].upper()} ({res['over_by']['times_part']:.2f}x)."),
             "", "| layer | class | n_in x n_out | reuse factor | strategy | interval (cycles, estimate) "
             "| valid reuse factors |",
             "|---|---|---|---:|---|---:|---|"]
    for r in res["layers"]:
        valid = r["valid_reuse_factors"]
        shown = ", ".join(map(str, valid[:12])) + (f", ... ({len(valid)})" if len(valid) > 12 else "")
        lines.append(f"| {r['layer']} | {r['class']} | {r['n_in']} x {r['n_out']} | {r['reuse_factor']} | "
                     f"{r['strategy']} | {r['interval_cycles']:,} | {shown} |")
    if res["fixed"]:
        lines += ["", "Set by hand in [layers] (kept as given): " + ", ".join(f"`{n}`" for n in res["fixed"]) + "."]
    return lines
