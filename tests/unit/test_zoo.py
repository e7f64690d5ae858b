"""Zoo models (convrelu, dwsep, mlp): parameter/MAC counting, flat MNIST inputs, depthwise support."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.cleanup import cleanup_model
from torch import nn

from fpga_flow import BuildConfig, FlowError, cost, data, passes, precision, zoo
from fpga_flow.export import export_qonnx

pytestmark = pytest.mark.unit


def test_measure_counts_a_hand_computed_conv_and_linear():
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(27, 4))
    c = cost.measure(net, torch.ones(1, 2, 5, 5))
    # conv: 3x3x3 outputs x 2 input channels x 3x3 taps; linear: 27 x 4
    assert c["layers"] == {"0": 27 * 2 * 9, "2": 27 * 4}
    assert c["macs"] == 486 + 108
    assert c["params"] == c["weights"] == (3 * 2 * 9 + 3) + (27 * 4 + 4)


def test_measure_counts_a_depthwise_conv_per_channel():
    # groups=in_channels: each output element sums only its own channel's 3x3 taps
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 6, 1, bias=False))
    c = cost.measure(net, torch.ones(1, 4, 5, 5))
    assert c["layers"] == {"0": 4 * 3 * 3 * 9, "1": 6 * 3 * 3 * 4}
    assert c["params"] == (4 * 9 + 4) + 6 * 4
    with pytest.raises(ValueError, match="one sample"):
        cost.measure(net, torch.ones(2, 4, 5, 5))


def test_dwsep_needs_fewer_parameters_and_macs_than_its_standard_twin(mnist_test):
    mod = zoo.load("dwsep")
    x = torch.from_numpy(data.to_unit(mnist_test.images[:1]))
    dw, std = mod.float_model(), mod.standard_twin()
    assert dw(x).shape == std(x).shape == (1, 10)
    a, b = cost.measure(dw, x), cost.measure(std, x)
    assert a["params"] < b["params"] and a["macs"] < b["macs"]
    # the layers the two nets share cost the same; only the separable blocks differ
    assert a["layers"]["conv1"] == b["layers"]["conv1"] and a["layers"]["fc"] == b["layers"]["fc"]
    groups = [m.groups for m in dw.modules() if isinstance(m, nn.Conv2d)]
    assert groups == [1, 16, 1, 32, 1]  # conv1, (depthwise, pointwise) x 2
    # the quantized model has the same layers, so the same MACs and weights
    q = cost.measure(mod.quant_model(4, 4, 8), x)
    assert q["macs"] == a["macs"] and q["weights"] == a["weights"]


@pytest.mark.parametrize("name", ["convrelu", "dwsep", "mlp"])
def test_zoo_model_files_define_the_contract(name):
    mod = zoo.load(name)
    assert mod.DATASET == "mnist" and int(np.prod(mod.INPUT_SHAPE)) == 784
    x = torch.rand(2, *mod.INPUT_SHAPE)
    assert mod.float_model()(x).shape == mod.quant_model(4, 4, 8).eval()(x).shape == (2, 10)


def test_convrelu_quant_convs_feed_their_relu_directly():
    """The pattern the Conv+ReLU fusion matches: every QuantConv2d's output goes straight into its QuantReLU."""
    from brevitas import nn as qnn
    m = zoo.load("convrelu").quant_model(4, 4, 8)
    blocks = [b for b in m.modules() if hasattr(b, "conv") and hasattr(b, "relu")]
    assert len(blocks) == 2
    assert all(isinstance(b.conv, qnn.QuantConv2d) and isinstance(b.relu, qnn.QuantReLU) for b in blocks)


def test_as_input_reshapes_images_to_a_flat_model_input(mnist_test):
    x = data.to_unit(mnist_test.images[:3])
    flat = data.as_input(x, (784,))
    assert flat.shape == (3, 784) and np.array_equal(flat[1], x[1].reshape(-1))
    assert data.as_input(x, (1, 28, 28)) is x
    t = data.as_input(torch.from_numpy(x), (784,))
    assert tuple(t.shape) == (3, 784) and np.array_equal(t.numpy(), flat)
    with pytest.raises(FlowError, match="cannot feed"):
        data.as_input(x, (10,))


def test_flat_model_gets_mnist_images():
    from fpga_flow import api
    x, y = api._inputs((784,), 5, None, None, None)
    split = data.load("test")
    assert x.shape == (5, 784) and np.array_equal(y, split.labels[:5])
    assert np.array_equal(x, data.to_unit(split.images[:5]).reshape(5, 784))


def _depthwise_net(channels: int = 4) -> nn.Module:
    from brevitas import nn as qnn
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint
    torch.manual_seed(0)
    net = nn.Sequential(
        qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, bit_width=8, return_quant_tensor=True),
        qnn.QuantConv2d(channels, channels, 3, groups=channels, weight_quant=Int8WeightPerTensorFixedPoint,
                        weight_bit_width=4, bias_quant=Int32Bias, return_quant_tensor=False),
        qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=4, return_quant_tensor=True))
    with torch.no_grad():  # channels unlike each other: all positive, one negative tap, small, alternating
        w = net[1].weight
        w[0] = 1.0
        w[1] = 0.0
        w[1, 0, 1, 1] = -1.0
        w[2] = 0.1 * torch.randn_like(w[2])
        w[3] = torch.where(torch.arange(9).reshape(3, 3) % 2 == 0, 0.5, -0.5)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(8, channels, 6, 6))
    return net.eval()


def test_depthwise_accumulator_is_exact_per_channel(tmp_path, monkeypatch):
    """A depthwise output channel sums only its own channel's kh*kw products: the derived accumulator is the
    exact type of those sums (not of all channels' taps together)."""
    from fpga_flow.backends.hls4ml import convert as hls4ml_backend
    net = _depthwise_net()
    m = cleanup_model(ModelWrapper(str(export_qonnx(net, (4, 6, 6), tmp_path / "m.onnx"))))
    m.transform(passes.CheckSupported())
    cl = passes.prepare_for_hls4ml(m)
    monkeypatch.chdir(tmp_path)
    hm, info = hls4ml_backend.convert(cl, BuildConfig(model="m"), output_dir="p")
    rows = [r for r in info if "Depthwise" in r["class"]]
    assert len(rows) == 1, info

    # expected, from Brevitas' own integer weights and bias: one column of kh*kw taps per channel
    qin = net[0](torch.rand(1, 4, 6, 6))
    qw = net[1].quant_weight()
    in_frac, w_frac = -int(np.log2(float(qin.scale))), -int(np.log2(float(qw.scale)))
    codes = qw.int().detach().numpy().astype(np.int64)  # (C, 1, 3, 3)
    per_channel = codes.reshape(4, 9).T  # (taps, channels)
    b_codes = np.round(net[1].bias.detach().numpy() / (float(qin.scale) * float(qw.scale))).astype(np.int64)
    x_type = precision.Fixed(8, 8 - in_frac, False)
    want = precision.accumulator(x_type, per_channel, w_frac, b_codes)
    got = re.fullmatch(r"fixed<(\d+),(-?\d+)>", rows[0]["accum"])
    assert got, rows[0]
    assert precision.Fixed(int(got[1]), int(got[2]), True) == want
    # a matrix summing every channel's taps into each output would need a wider type: the test can tell
    assert precision.accumulator(x_type, codes.reshape(-1, 1), w_frac, b_codes[:1]).width > want.width
    assert rows[0]["weights"] == 36 and rows[0]["n_out"] == 4
