"""``--fit``: the hls4ml reuse-factor search (on plan_info rows made by hand) and the FINN fps search (on a
stand-in for FINN's estimate). Each result is checked against a brute force over the same options, not
against a number copied from a run."""

from __future__ import annotations

import pytest

from fpga_flow import parts
from fpga_flow.backends.finn import fit as finn_fit
from fpga_flow.backends.hls4ml import estimate, fit

pytestmark = pytest.mark.unit

Z7010 = "xc7z010clg400-1"  # 17,600 LUT / 35,200 FF


def _dense(name: str, n_in: int, n_out: int, acc: str = "fixed<14,9>") -> dict:
    n = n_in * n_out
    return {"layer": f"Dense_{name}", "class": "Dense", "input": "ufixed<4,3>", "weight": "fixed<4,0>",
            "accum": acc, "weights": n, "nonzero_weights": n, "n_out": n_out, "shape": [n_out],
            "geometry": {"reuse_factor": 1, "strategy": "latency", "pow2_weights": 0}}


def _mlp(*dims: int, acc: str = "fixed<14,9>") -> dict:
    rows = [{"layer": "global_in", "class": "Input", "result": "ufixed<4,3>", "shape": [dims[0]]}]
    for k, (a, b) in enumerate(zip(dims, dims[1:])):
        rows.append(_dense(f"MatMul_{k}", a, b, acc))
    return {"layers": rows}


def _estimate(info: dict, rf: dict[str, int], part: str = Z7010, io: str = "io_stream") -> dict:
    rows = [dict(r, geometry={**r.get("geometry", {}), "reuse_factor": rf[r["layer"]]}) if r["layer"] in rf else r
            for r in info["layers"]]
    return estimate.from_plan_info({"layers": rows}, 10.0, io, part)


def test_valid_reuse_factors_are_hls4mls():
    # hls4ml's rule for 320 x 50: divides 16,000, and below n_in gives whole multipliers per output
    got = fit.valid_reuse_factors(320, 50)
    assert got[0] == 1 and got[-1] == 320 * 50 and 3 not in got and 640 in got
    assert all((320 * 50) % rf == 0 for rf in got)
    assert fit.mult_size(_dense("MatMul_0", 320, 50)) == (320, 50)
    conv = {"n_out": 20, "weights": 5000, "geometry": {"n_chan": 10, "filt_height": 5, "filt_width": 5, "n_filt": 20}}
    assert fit.mult_size(conv) == (250, 20)  # hls4ml: n_chan * kh * kw x n_filt


def test_fit_picks_the_fastest_valid_reuse_factor_that_fits():
    info = _mlp(320, 50)  # 16,000 non-zero 4-bit products: far over a Z-7010's LUTs at reuse factor 1
    assert not fit.fits(_estimate(info, {"Dense_MatMul_0": 1}))
    res = fit.search(info, 10.0, "io_stream", Z7010)
    chosen = res["layers"][0]["reuse_factor"]
    valid = fit.valid_reuse_factors(320, 50)
    assert res["fits"] is True and chosen in valid and chosen > 1
    # brute force: the smallest valid reuse factor (shortest interval) whose design fits is the one chosen
    fitting = [rf for rf in valid if fit.fits(_estimate(info, {"Dense_MatMul_0": rf}))]
    assert chosen == fitting[0]
    est = _estimate(info, {"Dense_MatMul_0": chosen})
    assert res["utilisation_pct"] == est["utilisation_pct"] and max(est["utilisation_pct"].values()) <= 100
    assert res["layers"][0]["config_name"] == "MatMul_0" and res["layers"][0]["strategy"] == "Latency"
    assert fit.overrides(res, {}) == {"MatMul_0": {"reuse_factor": chosen, "strategy": "Latency"}}
    assert "fits xc7z010clg400-1 by the estimate" in fit.describe(res)


def test_each_layer_stays_below_the_design_interval_at_least_cost():
    # two layers: the fit's design interval is set by the slowest; no layer is faster than it needs to be
    info = _mlp(320, 50, 10)
    res = fit.search(info, 10.0, "io_stream", Z7010)
    rfs = {r["layer"]: r["reuse_factor"] for r in res["layers"]}
    interval = _estimate(info, rfs)["interval_cycles"]
    assert res["fits"] and res["interval_cycles"] == interval
    for r in res["layers"]:
        n_in, n_out = fit.mult_size(next(x for x in info["layers"] if x["layer"] == r["layer"]))
        cheaper = [rf for rf in fit.valid_reuse_factors(n_in, n_out) if rf > r["reuse_factor"]]
        for rf in cheaper:  # a larger valid reuse factor either slows the design down or costs no less
            e = _estimate(info, {**rfs, r["layer"]: rf})
            assert e["interval_cycles"] > interval or \
                e["resources"]["lut"]["raw"] >= _estimate(info, rfs)["resources"]["lut"]["raw"]


def test_nothing_fits_is_said_plainly_and_by_how_much():
    # 4,000 outputs x a 20-bit accumulator register each: 80,000 FF whatever the reuse factor (Z-7010: 35,200)
    info = _mlp(2, 4000, acc="fixed<20,9>")
    res = fit.search(info, 10.0, "io_stream", Z7010)
    assert res["fits"] is False
    valid = fit.valid_reuse_factors(2, 4000)
    assert not any(fit.fits(_estimate(info, {"Dense_MatMul_0": rf})) for rf in valid)
    assert res["layers"][0]["reuse_factor"] in valid
    o = res["over_by"]
    assert o["resource"] == "ff" and o["pct"] > 100 and o["times_part"] == round(o["pct"] / 100, 3)
    text = fit.describe(res)
    assert "NO reuse factor fits xc7z010clg400-1" in text and f"{o['times_part']:.2f}x the part" in text
    md = "\n".join(fit.markdown({"fit": res}))
    assert "**does NOT fit**" in md and "| Dense_MatMul_0 |" in md


def test_layers_set_by_hand_are_kept():
    info = _mlp(320, 50, 10)
    res = fit.search(info, 10.0, "io_stream", Z7010, fixed=("MatMul_1",))
    assert [r["layer"] for r in res["layers"]] == ["Dense_MatMul_0"] and res["fixed"] == ["MatMul_1"]
    given = {"MatMul_1": {"reuse_factor": 5, "strategy": "Resource"}}
    assert fit.overrides(res, given)["MatMul_1"] == given["MatMul_1"]


def test_fit_needs_a_known_part():
    with pytest.raises(Exception, match="not in fpga_flow/parts.py"):
        fit.search(_mlp(4, 2), 10.0, "io_stream", "xc9999")


def test_config_names_follow_hls4mls_renaming():
    assert fit.config_name({"layer": "Dense_MatMul_3"}) == "MatMul_3"
    assert fit.config_name({"layer": "Conv2D_Conv_1_relu", "fused_from": ["Conv2D_Conv_1", "Relu_1"]}) == "Conv_1"
    assert fit.config_name({"layer": "fc1"}) == "fc1"


# ---- FINN: the fps search over a stand-in estimate (cost falls as the cycles target grows) ----------------

def _finn_like(lut_at_1: float):
    calls = []

    def evaluate(t: int) -> dict:
        calls.append(t)
        return {"total": {"LUT": lut_at_1 / t, "BRAM_18K": 2.0, "DSP": 0.0, "URAM": 0.0}, "max_cycles": t}
    return evaluate, calls


def test_finn_search_finds_the_smallest_fitting_target():
    lut = parts.resources(Z7010)["lut"]
    evaluate, calls = _finn_like(lut * 37.5)  # fits from t >= 37.5, i.e. 38
    t, res = finn_fit.search(evaluate, Z7010, 10_000)
    assert t == 38 and res["fits"] and not finn_fit.search(evaluate, Z7010, 37)[1]["fits"]
    assert len(set(calls)) < 40  # a bisection, not a scan
    rec = finn_fit.summary({**res, "target_cycles_per_frame": t, "target_fps": int(1e8 / t)})
    assert rec["fits"] and rec["over_by"] is None and rec["utilisation_pct"]["lut"] <= 100
    assert "the highest that fits" in finn_fit.describe(rec, Z7010)


def test_finn_search_says_plainly_when_nothing_fits():
    evaluate, _ = _finn_like(parts.resources(Z7010)["lut"] * 500.0)
    t, res = finn_fit.search(evaluate, Z7010, 100)
    assert t == 100 and res["fits"] is False
    rec = finn_fit.summary({**res, "target_cycles_per_frame": t, "target_fps": int(1e8 / t)})
    assert rec["over_by"]["resource"] == "lut" and rec["over_by"]["times_part"] == 5.0
    assert "NO folding fits" in finn_fit.describe(rec, Z7010) and "5.00x" in finn_fit.describe(rec, Z7010)
    v = finn_fit.verdict(res["estimate"], Z7010)
    assert v.startswith("does NOT fit xc7z010clg400-1 by FINN's estimate") and "5.0x" in v
