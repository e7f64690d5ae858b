"""End-to-end: Brevitas -> QONNX -> hls4ml -> g++ csim, compared with ==."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fpga_flow import BuildConfig, FlowError, VerificationError, api, data
from fpga_flow.codegen import BuildPlan
from tests.conftest import needs_gxx

pytestmark = [pytest.mark.csim, needs_gxx]


def _extreme_inputs() -> np.ndarray:
    """Inputs that drive the accumulators to their ends: all-max, all-zero, checkerboards, stripes."""
    full = np.ones((28, 28), np.float32)
    cb = (np.indices((28, 28)).sum(0) % 2).astype(np.float32)
    stripes = (np.arange(28) % 2 == 0)[:, None] * full
    return np.stack([full, 0 * full, cb, 1 - cb, stripes, stripes.T])[:, None]


def test_convnet_shipped_checkpoint_bit_exact_on_200_mnist_images(tmp_path):
    cfg = BuildConfig(model="convnet", n_images=200, stock_check_images=40)
    rep = api.build_zoo(cfg, out_dir=tmp_path, progress=False)
    assert rep["n_images"] == 200
    assert rep["exact_matches"] == 200 and rep["mismatches"] == 0 and rep["max_abs_diff"] == 0.0
    assert all(c["exact_matches"] == c["n"] for c in rep["comparisons"])
    names = [c["name"] for c in rep["comparisons"]]
    # the seed model complete: the logits are compared with ==, then the on-chip log_softmax with == against
    # its integer model on those logits (and within the stated bound of float torch.log_softmax)
    assert "Brevitas torch (cpu) vs QONNX (logits)" in names
    assert "HLS csim vs QONNX golden logits -> LogSoftmax model" in names
    assert "hls4ml stock csim vs fpga_flow exact csim" in names
    assert rep["accuracy"]["csim"] == rep["accuracy"]["quantized"] > 0.9  # a trained model, not chance
    ls = rep["log_softmax"]
    assert rep["output"]["kind"] == "log_softmax" and rep["output"]["type"] == ls["output_type"] == "fixed<19,9>"
    assert ls["images_within_bound"] == ls["argmax_agreement"] == ls["images_within_bound_float32"] == 200
    assert 0 < ls["max_abs_error_vs_float64"] <= ls["bound"] < 2 ** -10
    assert rep["hw"]["layers"][-1]["class"] == "FpgaFlowLogSoftmax"
    on_disk = json.loads((tmp_path / "convnet" / "report.json").read_text())
    assert on_disk["digest"] == rep["digest"]
    assert (tmp_path / "convnet" / "hls" / "build_prj.tcl").is_file()
    md = (tmp_path / "convnet" / "report.md").read_text()
    assert "ends at the logits" not in md and "LogSoftmax on chip" in md and "fixed<19,9>" in md


def test_extreme_inputs_and_reproducible_project(calibrated_convnet, mnist_test, tmp_path):
    x = np.concatenate([_extreme_inputs(), data.to_unit(mnist_test.images[:26])])
    cfg = BuildConfig(model="calib", stock_check_images=len(x))
    rep = api.build(calibrated_convnet, (1, 28, 28), name="calib", out_dir=tmp_path / "a", config=cfg, images=x,
                    progress=False)
    assert rep["exact_matches"] == len(x) == 32
    assert all(c["exact_matches"] == c["n"] for c in rep["comparisons"])
    # the same model and config give a byte-identical project, and reuse the compiled simulation
    rep2 = api.build(calibrated_convnet, (1, 28, 28), name="calib", out_dir=tmp_path / "b", config=cfg, images=x,
                     progress=False)
    a = BuildPlan.from_dir(tmp_path / "a" / "calib" / "hls")
    b = BuildPlan.from_dir(tmp_path / "b" / "calib" / "hls")
    assert a == b and rep["digest"] == rep2["digest"]
    assert rep2["timings_s"]["csim_build"] < 1.0  # cached by digest: no compiler run


def test_overflowing_accumulator_is_caught_and_located(calibrated_convnet, mnist_test, tmp_path):
    """Fault injection: a too-narrow accumulator must fail verification, name the layer, keep the good build."""
    x = data.to_unit(mnist_test.images[:20])
    out = tmp_path / "out"
    good = BuildConfig(model="fault", stock_check_images=0)
    api.build(calibrated_convnet, (1, 28, 28), name="fault", out_dir=out, config=good, images=x, progress=False)
    before = (out / "fault" / "report.json").read_bytes()
    bad = good.replace(extra={"narrow_accum_by": 2})
    with pytest.raises(VerificationError) as e:
        api.build(calibrated_convnet, (1, 28, 28), name="fault", out_dir=out, config=bad, images=x, progress=False)
    msg = str(e.value)
    assert "NOT bit-exact" in msg and "first divergence" in msg and "Conv2D_Conv_0" in msg
    assert (out / "fault" / "report.json").read_bytes() == before
    assert (out / "fault.failed" / "hls").is_dir()
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_missing_and_failing_compiler(calibrated_convnet, mnist_test, tmp_path, monkeypatch):
    x = data.to_unit(mnist_test.images[:4])
    cfg = BuildConfig(model="nocxx", stock_check_images=0)
    monkeypatch.setenv("FPGA_FLOW_CSIM_CACHE", str(tmp_path / "cache"))  # force a compile
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    with pytest.raises(FlowError) as e:
        api.build(calibrated_convnet, (1, 28, 28), name="nocxx", out_dir=tmp_path, config=cfg, images=x,
                  progress=False)
    assert e.value.exit_code == 2 and "CXX" in str(e.value)
    monkeypatch.setenv("CXX", "false")  # a compiler that fails
    with pytest.raises(FlowError) as e:
        api.build(calibrated_convnet, (1, 28, 28), name="nocxx", out_dir=tmp_path, config=cfg, images=x,
                  progress=False)
    assert "C simulation build (exact) failed" in str(e.value) and "compile.log" in str(e.value)
    assert not (tmp_path / "nocxx").exists()  # nothing half-written
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def _small_conv_net():
    import torch
    from brevitas import nn as qnn
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint
    from torch import nn
    torch.manual_seed(3)
    wq = dict(weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4, bias_quant=Int32Bias)
    net = nn.Sequential(qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True),
                        qnn.QuantConv2d(1, 3, 3, **wq),
                        qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=3, return_quant_tensor=True),
                        nn.Flatten(), qnn.QuantLinear(3 * 6 * 6, 5, **wq))
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.rand(16, 1, 8, 8))
    return net.eval()


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
def test_small_conv_net_both_io_types(io_type, tmp_path):
    """Regression: with io_parallel a flatten after a quantizing ReLU once lost the ReLU's rounding mode."""
    x = np.random.default_rng(0).random((64, 1, 8, 8), dtype=np.float32)
    cfg = BuildConfig(model="small", io_type=io_type, stock_check_images=64)
    rep = api.build(_small_conv_net(), (1, 8, 8), name="small", out_dir=tmp_path, config=cfg, images=x,
                    progress=False)
    assert rep["exact_matches"] == 64
    assert all(c["exact_matches"] == c["n"] for c in rep["comparisons"])


def test_convnet_w2a2_shipped_checkpoint_bit_exact_with_fused_kernels(tmp_path):
    """The shipped W2A2 ConvNet (initialised from W4A4). Also a regression test: its second ReLU quantizer has
    scale 1, and qonnx's channels-last moves left that Quant's UINT2 annotation on the ReLU output once the ReLU
    ran before the pool, so the golden step crashed (`prepare_for_hls4ml.reinfer_datatypes`)."""
    cfg = BuildConfig(model="convnet", weight_bits=2, act_bits=2, n_images=100, stock_check_images=20)
    rep = api.build_zoo(cfg, out_dir=tmp_path, progress=False)
    assert rep["exact_matches"] == rep["n_images"] == 100
    assert all(c["exact_matches"] == c["n"] for c in rep["comparisons"])
    assert sum(1 for r in rep["hw"]["layers"] if r.get("fused_from")) == 2
    assert rep["accuracy"]["csim"] == rep["accuracy"]["quantized"] > 0.9
