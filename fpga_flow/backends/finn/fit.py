"""``--fit`` for the FINN backend: the highest throughput target whose FINN estimate fits the part.

FINN folds to a cycles-per-frame target (``SetFolding``); its cost falls as the target grows. So the search
bisects the integer target ``T`` between 1 (fold as far as FINN can) and the cycles of the fully folded
design: for each candidate, FINN's own ``SetFolding`` then its ``minimize_bit_width`` stage and its analytic
estimates (``res_estimation``, as ``step_generate_estimate_reports`` does), the same steps the build then
runs; a candidate fits when FINN's LUT, BRAM18K and DSP totals are within the part (``fpga_flow/parts.py``).
The smallest fitting ``T`` wins, and the build records the fps it implies (clock / T) as its target.

Every figure is FINN's estimate, not synthesis (FINN's own model has known gaps, listed in report.py:
DSP-based MVAUs and pools at 0 LUT, no FIFOs): a design that "fits" fits by FINN's estimate.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from ... import parts
from ...errors import FlowError

# FINN's estimate keys -> the part table's
KEYS = {"LUT": "lut", "BRAM_18K": "bram18k", "DSP": "dsp"}


def utilisation(total: dict, avail: dict) -> dict:
    """FINN's totals as % of the part (the resources both count)."""
    return {k: round(100.0 * float(total.get(f, 0.0)) / avail[k], 2) for f, k in KEYS.items() if avail.get(k)}


def search(evaluate: Callable[[int], dict], part: str, max_cycles: int, lo: int = 1) -> tuple[int, dict]:
    """The smallest target cycles per frame in lo..max_cycles whose design ``evaluate(T)`` (FINN's estimate
    dict with ``total``) fits ``part``; returns (T, its result). Nothing fits: (max_cycles, its result),
    marked ``fits: False``."""
    avail = parts.resources(part)
    if not avail:
        raise FlowError(f"--fit needs the part's resources, and {part!r} is not in fpga_flow/parts.py: give a "
                        "known --part, or a --target-fps")
    tried = {}

    def run(t: int) -> dict:
        if t not in tried:
            est = evaluate(t)
            util = utilisation(est["total"], avail)
            tried[t] = {"estimate": est, "utilisation_pct": util, "fits": all(v <= 100.0 for v in util.values())}
        return tried[t]

    hi, best = max(lo, max_cycles), None
    while lo <= hi:
        mid = (lo + hi) // 2
        if run(mid)["fits"]:
            best, hi = mid, mid - 1
        else:
            lo = mid + 1
    t = best if best is not None else max(1, max_cycles)
    res = dict(run(t))
    res["tried"] = sorted(tried)
    return t, res


def summary(result: dict) -> dict:
    """The JSON-able record of a fit (report.json ``hw.finn.fit``): without the whole estimate."""
    util = result["utilisation_pct"]
    worst = max(util, key=util.get) if util else None
    return {"mode": "fit", "fits": result["fits"], "target_cycles_per_frame": result["target_cycles_per_frame"],
            "target_fps": result["target_fps"], "utilisation_pct": util, "candidates_evaluated": len(result["tried"]),
            "over_by": None if result["fits"] or worst is None else
            {"resource": worst, "pct": util[worst], "times_part": round(util[worst] / 100.0, 3)},
            "kind": "estimate (FINN's)", "method": "bisection over SetFolding's cycles-per-frame target (finn/fit.py)"}


def describe(rec: dict, part: str) -> str:
    util = ", ".join(f"{k.upper()} {v:.0f}%" for k, v in rec["utilisation_pct"].items())
    if rec["fits"]:
        return (f"--fit: FINN folded for {rec['target_fps']:,} fps ({rec['target_cycles_per_frame']:,} cycles/frame), "
                f"the highest that fits {part} by FINN's estimate ({util})")
    o = rec["over_by"]
    return (f"--fit: NO folding fits {part} by FINN's estimate: even the most folded design needs {o['pct']:.0f}% "
            f"of its {o['resource'].upper()} ({o['times_part']:.2f}x the part)")


def copy_model(model):
    """A deep copy of a ModelWrapper for a trial folding (SetFolding changes the graph in place)."""
    from qonnx.core.modelwrapper import ModelWrapper
    return ModelWrapper(copy.deepcopy(model.model))


def verdict(estimate: dict, part: str) -> str | None:
    """Whether FINN's estimate fits ``part``, said plainly (None for a part not in the table)."""
    avail = parts.resources(part)
    if not avail:
        return None
    util = utilisation(estimate["total"], avail)
    over = {k: v for k, v in util.items() if v > 100.0}
    shown = ", ".join(f"{k.upper()} {v:.0f}%" for k, v in util.items())
    if over:
        worst = max(over, key=over.get)
        return (f"does NOT fit {part} by FINN's estimate ({shown}; {over[worst] / 100:.1f}x the part's "
                f"{worst.upper()}): lower --target-fps or use --fit")
    return f"fits {part} by FINN's estimate ({shown})"
