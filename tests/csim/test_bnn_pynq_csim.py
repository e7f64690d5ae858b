"""Brevitas' own TFC_1W1A (bnn_pynq: ``2 * x - 1`` before the input quantizer, 1-bit bipolar weights and
activations, a final TensorNorm) through ``fpga_flow.build`` with the hls4ml backend: HLS csim == the
integer-accumulator reference on real MNIST test images, and the host's TensorNorm logits == Brevitas."""

from __future__ import annotations

import pytest

from fpga_flow import BuildConfig, api
from tests import bnn_pynq_nets as bnn
from tests.conftest import needs_gxx

pytestmark = [pytest.mark.csim, needs_gxx]

N = 50


def test_tfc_1w1a_bit_exact_on_mnist(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FPGA_FLOW_CSIM_CACHE", str(tmp_path / "cache"))
    net = bnn.make("TFC_1W1A")
    cfg = BuildConfig(model="tfc_1w1a", n_images=N, stock_check_images=8, device="cpu", data_path=str(mnist_dir))
    rep = api.build(net, bnn.input_shape("TFC_1W1A"), name="tfc_1w1a", out_dir=tmp_path / "out", config=cfg,
                    progress=False)
    assert rep["exact_matches"] == rep["n_images"] == N
    by_name = {c["name"]: c for c in rep["comparisons"]}
    for name in ("HLS csim vs integer-accumulator reference", "integer thresholds vs integer-accumulator reference",
                 "input codes: Brevitas input quantizer vs fpga_flow"):
        assert by_name[name]["exact_matches"] == by_name[name]["n"] == N, by_name[name]
    assert all(c["exact_matches"] == c["n"] for c in rep["comparisons"]), rep["comparisons"]
    ag = rep["float_scaled"]["brevitas_float_agreement"]
    # every activation code equal, and the host's TensorNorm on the hardware's logits is Brevitas' output
    assert ag["activations_equal"] == N and ag["max_abs_logit_diff"] == 0.0
    layers = rep["float_scaled"]["layers"]
    assert [r["kind"] for r in layers] == ["requant"] * 3 + ["final (no output quantizer)"]
    assert all(r["out_bits"] == 2 and r["out_signed"] for r in layers[:3])  # bipolar codes -1/+1 in 2 bits
