"""The analytic cost estimate on layers small enough to count by hand (docs/estimates.md has the model)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fpga_flow.backends.hls4ml import estimate

pytestmark = pytest.mark.unit


def _dense_info(rf: int) -> dict:
    # 4 inputs x 2 outputs, 6 of 8 weights non-zero, 2 of them +-2^k; 4-bit input, 3-bit weights, 10-bit acc
    return {"layers": [
        {"layer": "in", "class": "Input", "result": "ufixed<4,1>", "shape": [4]},
        {"layer": "fc", "class": "Dense", "input": "ufixed<4,1>", "weight": "fixed<3,0>", "accum": "fixed<10,4>",
         "weights": 8, "nonzero_weights": 6, "n_out": 2, "shape": [2],
         "geometry": {"reuse_factor": rf, "pow2_weights": 2, "strategy": "latency"}}]}


def test_dense_io_parallel_by_hand():
    e = estimate.from_plan_info(_dense_info(1), clock_ns=10.0, io_type="io_parallel")
    fc = e["layers"][0]
    assert fc["multiplications"] == 8 and fc["multiplications_nonzero"] == 6
    assert fc["multipliers"] == 6  # hls4ml: ceil(8/1) - 2 zeros
    assert fc["shift_only_products"] == 2
    # 4 real products x (4+3) LUTs (input <= 6 bits: one LUT per product bit) + 6 adders x min(10, 4+3+2) bits
    assert fc["resources"]["lut"] == 4 * 7 + 6 * 9
    assert fc["resources"]["ff"] == 6 * (4 + 3) + 2 * 10
    assert fc["resources"]["dsp"] == 0
    assert fc["accumulator_bits"] == 10
    # 3 products + bias per output: a 2-level adder tree, + product + cast stage
    assert fc["depth"] == 4 and fc["interval_cycles"] == 1 and fc["latency_cycles"] == 4
    assert e["pipeline_style"] == "pipeline"
    assert e["interval_cycles"] == 1 and e["latency_cycles"] == {"min": 4, "max": 4}
    assert e["latency_ns"] == {"min": 40.0, "max": 40.0}
    assert e["throughput_per_s"] == pytest.approx(1e8)  # one image per 10 ns cycle
    assert e["calibrated"] is False and e["resources"]["lut"] == {"raw": 82, "value": 82}


def test_reuse_factor_shares_multipliers_and_stretches_the_interval():
    e = estimate.from_plan_info(_dense_info(2), clock_ns=5.0, io_type="io_parallel")
    fc = e["layers"][0]
    assert fc["multipliers"] == 4 - 1  # ceil(8/2) - 2 zeros // 2
    assert fc["resources"]["lut"] == 2 * 7 + 3 * 9  # ceil(4/2) multipliers' logic, ceil(6/2) adders
    assert fc["interval_cycles"] == 2 and fc["latency_cycles"] == 4 + 1
    assert e["interval_cycles"] == 2 and e["throughput_per_s"] == pytest.approx(1e9 / 10)


def _conv_info() -> dict:
    # 6x6x1 image, 3x3 conv to 2 channels (4x4x2, no zeros), then 2x2 max pool (2x2x2)
    return {"layers": [
        {"layer": "in", "class": "Input", "result": "ufixed<4,0>", "shape": [6, 6, 1]},
        {"layer": "conv", "class": "Conv2D", "input": "ufixed<4,0>", "weight": "fixed<4,0>", "accum": "fixed<12,4>",
         "weights": 18, "nonzero_weights": 18, "n_out": 2, "shape": [4, 4, 2],
         "geometry": {"in_height": 6, "in_width": 6, "n_chan": 1, "n_filt": 2, "filt_height": 3, "filt_width": 3,
                      "reuse_factor": 1, "pow2_weights": 0}},
        {"layer": "pool", "class": "Pooling2D", "result": "fixed<12,4>", "shape": [2, 2, 2],
         "geometry": {"in_height": 4, "in_width": 4, "n_filt": 2, "pool_height": 2, "pool_width": 2}}]}


def test_stream_conv_and_pool_by_hand():
    e = estimate.from_plan_info(_conv_info(), clock_ns=10.0, io_type="io_stream", part="xc7z020clg400-1")
    conv, pool = e["layers"]
    assert conv["multiplications"] == 18 * 16  # 18 products for each of the 4x4 output pixels
    assert conv["interval_cycles"] == 36  # one input pixel per cycle, 6x6 pixels
    assert conv["depth"] == 1 + 4 + 1  # 9 products + bias: 4 adder levels
    assert conv["latency_cycles"] == 36 + 6
    lb = (3 - 1) * 1 * 4 * 1  # 2 rows x 1 channel x 4 bits, each row (6 deep) in one SRL
    assert conv["line_buffer_bits"] == 2 * 6 * 1 * 4
    assert conv["resources"]["lut"] == 18 * 8 + 18 * 10 + lb
    assert conv["resources"]["ff"] == 18 * 8 + 2 * 12 + 3 * 3 * 1 * 4  # products, accumulators, window
    # the conv's output stream: 16 words of 2 x 12 bits = 384 bits -> SRLs (24 bits wide, one SRL deep)
    assert conv["fifo"] == {"depth": 16, "width": 24, "lut": 24, "ff": 0, "dsp": 0, "bram18k": 0}
    assert pool["interval_cycles"] == 16 and pool["latency_cycles"] == 18
    assert pool["resources"]["lut"] == 1 * 2 * 12 * 1  # one buffered row of 2 channels x 12 bits
    assert "fifo" not in pool  # the last layer writes the top-level port
    assert e["pipeline_style"] == "dataflow" and e["interval_cycles"] == 36
    assert e["latency_cycles"] == {"min": 42 + 3, "max": 42 + 18}
    lut = 18 * 8 + 18 * 10 + lb + 24 + 24
    assert e["resources"]["lut"]["raw"] == lut
    assert e["utilisation_pct"]["lut"] == round(100 * lut / 53200, 2)


def test_dsp_for_wide_operands():
    assert estimate.multiplier_cost(16, 12) == {"dsp": 1, "lut": 0}
    assert estimate.multiplier_cost(30, 20) == {"dsp": 2 * 2, "lut": 0}  # 25x18 ports
    assert estimate.multiplier_cost(8, 4) == {"dsp": 0, "lut": 16}  # wider than a LUT6: array multiplier
    assert estimate.multiplier_cost(6, 8) == {"dsp": 0, "lut": 14}


def test_ramb18_shapes():
    assert estimate.ramb18_count(784, 8) == 1  # 2048 x 9
    assert estimate.ramb18_count(576, 40) == 3  # 1024 x 18, three wide
    assert estimate.ramb18_count(16, 2000) == 56  # 512 x 36, 56 wide
    assert estimate.ramb18_count(0, 8) == 0


def test_calibration_scales_values_and_keeps_raw():
    e = estimate.from_plan_info(_conv_info(), clock_ns=10.0, io_type="io_stream", part="xc7z020clg400-1")
    c = estimate.apply_calibration(e, {"lut": 0.5}, source="yosys synth_xilinx, mlp_tiny")
    assert c["calibrated"] is True and c["calibration"]["source"].startswith("yosys")
    assert c["resources"]["lut"] == {"raw": e["resources"]["lut"]["raw"],
                                     "value": round(e["resources"]["lut"]["raw"] * 0.5)}
    assert c["resources"]["ff"] == e["resources"]["ff"]
    assert e["calibrated"] is False  # the original is untouched
    assert "calibrated: no" in estimate.summary_line(e) and "calibrated: no" not in estimate.summary_line(c)


def test_layer_geometry_counts_power_of_two_weights():
    w = np.array([0.5, -0.25, 0.375, 0.0, -1.0, 0.125])  # fixed<4,1>: codes 4, -2, 3, 0, -8, 1
    layer = SimpleNamespace(
        attributes={"in_height": 5, "reuse_factor": 2, "strategy": "latency", "trace": False, "weights": [1]},
        weights={"weight": SimpleNamespace(data=w, type=SimpleNamespace(precision=SimpleNamespace(width=4, integer=1)))})
    g = estimate.layer_geometry(layer)
    assert g == {"in_height": 5, "reuse_factor": 2, "strategy": "latency", "pow2_weights": 4}


def test_type_width_and_unknown_layers():
    assert estimate.type_width("ufixed<4,1,RND_CONV,SAT,0>") == 4 and estimate.type_width("fixed<15,4>") == 15
    assert estimate.type_width(None) is None
    info = {"layers": [{"layer": "in", "class": "Input", "result": "fixed<8,1>", "shape": [3]},
                       {"layer": "x", "class": "SomethingNew", "result": "fixed<8,1>", "shape": [3]}]}
    e = estimate.from_plan_info(info, 10.0, "io_parallel")
    assert e["layers"][0]["interval_cycles"] == 1 and e["multiplications"] == 0


def test_fit_verdict_says_plainly_whether_the_design_fits():
    e = estimate.from_plan_info(_conv_info(), clock_ns=10.0, io_type="io_stream", part="xc7z020clg400-1")
    assert estimate.fit_verdict(e).startswith("fits xc7z020clg400-1 by the estimate")
    big = estimate.apply_calibration(e, {"lut": 53200 * 4.38 / e["resources"]["lut"]["raw"]}, source="test")
    v = estimate.fit_verdict(big)
    assert v.startswith("does NOT fit xc7z020clg400-1 by the estimate") and "LUT 438%" in v and "4.4x" in v
    assert "does NOT fit" in "\n".join(estimate.markdown({"estimate": big}))
    assert estimate.fit_verdict(dict(e, utilisation_pct=None)) is None  # no known part: nothing claimed
