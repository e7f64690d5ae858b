"""Brevitas torch == QONNX golden with ==, and refusals before conversion."""

import numpy as np
import pytest
import torch
from qonnx.core.modelwrapper import ModelWrapper
from torch import nn

from fpga_flow import FlowError, golden, passes
from fpga_flow.export import export_qonnx
from qonnx.util.cleanup import cleanup_model

pytestmark = pytest.mark.unit


def _qonnx(module, shape, tmp_path):
    return cleanup_model(ModelWrapper(str(export_qonnx(module, shape, tmp_path / "m.onnx"))))


def test_brevitas_torch_equals_qonnx_exactly(calibrated_convnet, tiny_images, tmp_path):
    """The ConvNet ends in log_softmax (float in both torch and onnxruntime, so not compared here with ==;
    the hardware's is checked against its integer model): its input, the logits, are equal with ==."""
    x, _ = tiny_images
    m = _qonnx(calibrated_convnet, (1, 28, 28), tmp_path)
    assert golden.final_log_softmax(m) is not None
    run = golden.torch_reference(calibrated_convnet, x, logits=True)
    want = run.output
    got = golden.qonnx_reference(golden.logits_graph(m), x)
    assert got.shape == want.shape == (64, 10)
    assert np.array_equal(got, want)
    assert len(np.unique(want)) > 50  # not a degenerate constant output
    assert np.array_equal(run.final, torch.log_softmax(torch.from_numpy(want), dim=1).numpy())
    assert golden.logits_graph(golden.logits_graph(m)).graph.output[0].name == m.graph.output[0].name


def test_channels_last_graph_equals_nchw_graph(calibrated_convnet, tiny_images, tmp_path):
    x, _ = tiny_images
    m = _qonnx(calibrated_convnet, (1, 28, 28), tmp_path)
    m.transform(passes.CheckSupported())
    cl = passes.prepare_for_hls4ml(m)
    assert cl.graph.input[0].type.tensor_type.shape.dim[3].dim_value == 1  # NHWC
    xq = golden.quantize_input(m, x[:8])
    got = golden.qonnx_per_image(golden.logits_graph(cl), np.ascontiguousarray(np.moveaxis(xq, 1, -1)))
    assert np.array_equal(got, golden.qonnx_reference(golden.logits_graph(m), x[:8]))


def test_quantized_input_is_on_the_grid_and_idempotent(calibrated_convnet, tiny_images, tmp_path):
    x, _ = tiny_images
    m = _qonnx(calibrated_convnet, (1, 28, 28), tmp_path)
    q = golden.input_quantizer(m)
    xq = golden.quantize_input(m, x)
    codes = xq / q["scale"]
    assert np.array_equal(codes, np.round(codes)) and codes.max() <= 2 ** q["bits"] - 1
    assert np.array_equal(golden.quantize_input(m, xq), xq)
    assert np.array_equal(golden.qonnx_reference(m, xq), golden.qonnx_reference(m, x))


def _brevitas_net(act: nn.Module | None = None, float_scale: bool = False, groups: int = 1, channels: int = 2):
    from brevitas import nn as qnn
    from brevitas.quant import (Int8ActPerTensorFloat, Int8WeightPerTensorFixedPoint, Int8WeightPerTensorFloat,
                                Int32Bias, Uint8ActPerTensorFixedPoint)
    wq = Int8WeightPerTensorFloat if float_scale else Int8WeightPerTensorFixedPoint
    layers = [qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat if float_scale else Uint8ActPerTensorFixedPoint,
                                return_quant_tensor=True),
              qnn.QuantConv2d(channels, channels, 3, groups=groups, weight_quant=wq, bias_quant=Int32Bias,
                              return_quant_tensor=False)]
    layers.append(act if act is not None else qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint))
    net = nn.Sequential(*layers)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(4, channels, 8, 8))
    return net.eval()


def test_supported_small_net_passes_the_check(tmp_path):
    m = _qonnx(_brevitas_net(), (2, 8, 8), tmp_path)
    m.transform(passes.CheckSupported())


def test_depthwise_conv_passes_the_check(tmp_path):
    """groups == in_channels == out_channels (depth multiplier 1) is hls4ml's DepthwiseConv2D: supported."""
    m = _qonnx(_brevitas_net(groups=4, channels=4), (4, 8, 8), tmp_path)
    assert [a.i for n in m.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"] == [4]
    m.transform(passes.CheckSupported())


@pytest.mark.parametrize("kind,message", [
    ("sigmoid", r"\(Sigmoid\) is not supported"),
    ("float_relu", "must be followed by a quantizer"),
    ("grouped", r"grouped convolution \(group=2, 4 input and 4 output channels\)"),
])
def test_unsupported_layers_are_refused_by_name(kind, message, tmp_path):
    net = {"sigmoid": lambda: _brevitas_net(act=nn.Sigmoid()),
           "float_relu": lambda: _brevitas_net(act=nn.ReLU()),
           "grouped": lambda: _brevitas_net(groups=2, channels=4)}[kind]()
    m = _qonnx(net, (4 if kind == "grouped" else 2, 8, 8), tmp_path)
    with pytest.raises(FlowError, match=message) as e:
        m.transform(passes.CheckSupported())
    assert "node '" in str(e.value)


def test_float_scales_pass_the_check_for_lowering(tmp_path):
    """Brevitas' float-scaled defaults are accepted here; LowerFloatScales makes them integer thresholds."""
    m = _qonnx(_brevitas_net(float_scale=True), (2, 8, 8), tmp_path)
    m.transform(passes.CheckSupported())
    assert passes.is_float_scaled(m)
    assert not passes.is_float_scaled(_qonnx(_brevitas_net(), (2, 8, 8), tmp_path))


def test_unquantized_input_is_refused(tmp_path):
    from brevitas import nn as qnn
    from brevitas.quant import Int8WeightPerTensorFixedPoint
    net = nn.Sequential(qnn.QuantLinear(4, 2, weight_quant=Int8WeightPerTensorFixedPoint, bias=False)).eval()
    m = _qonnx(net, (4,), tmp_path)
    with pytest.raises(FlowError, match="input is not quantized"):
        m.transform(passes.CheckSupported())
