"""Regression (#17's sweep, W4A2 ConvNet): a conv whose input is an integer-valued activation (a 2-bit ReLU
quantizer of scale 1) and whose weights are float-scaled must not inherit its input's UINT2 annotation in the
channels-last graph, or qonnx's executor refuses the golden ("Rounding error is too high ...")."""

from __future__ import annotations

import numpy as np
import torch
from brevitas import nn as qnn
from brevitas.quant import Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.util.cleanup import cleanup_model
from torch import nn

from fpga_flow import export, golden, passes


def _net() -> nn.Module:
    torch.manual_seed(0)
    wq = dict(weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4, bias=False)
    net = nn.Sequential(qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True),
                        qnn.QuantConv2d(1, 2, 3, **wq),
                        qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=2, return_quant_tensor=True),
                        nn.MaxPool2d(2),
                        qnn.QuantConv2d(2, 3, 3, **wq),
                        qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=4, return_quant_tensor=True),
                        nn.Flatten(), qnn.QuantLinear(12, 2, **wq))
    with torch.no_grad():
        net[1].weight.mul_(3.0)  # first conv outputs reach the 2-bit range
    return net.eval()


def test_channels_last_conv_after_an_integer_activation_is_not_annotated_integer(tmp_path):
    m = ModelWrapper(str(export.export_qonnx(_net(), (1, 10, 10), tmp_path / "net.onnx")))
    two_bit = [n for n in m.graph.node if n.op_type == "Quant" and m.get_initializer(n.input[0]) is None
               and float(m.get_initializer(n.input[3])) == 2]
    assert len(two_bit) == 1
    m.set_initializer(two_bit[0].input[1], np.array(1.0, dtype=np.float32))  # scale 1: integer-valued activation
    m = cleanup_model(m).transform(InferDataTypes())
    relu_q = [n for n in m.graph.node if n.op_type == "Quant" and m.get_tensor_datatype(n.output[0]) == DataType["UINT2"]]
    assert relu_q, "the model must have an integer-valued (scale 1) 2-bit activation for this test to mean anything"
    cl = passes.prepare_for_hls4ml(m)
    convs = [n for n in cl.graph.node if n.op_type == "Conv"]
    assert len(convs) == 2 and all(n.domain == "qonnx.custom_op.channels_last" for n in convs)
    assert cl.get_tensor_datatype(convs[1].input[0]) == DataType["UINT2"]  # the integer input is still there
    assert cl.get_tensor_datatype(convs[1].output[0]) == DataType["FLOAT32"]  # float-scaled weights: not an int
    x = np.random.default_rng(0).random((4, 10, 10, 1), dtype=np.float32)
    golden.qonnx_per_image(golden.logits_graph(cl), x)  # qonnx's executor accepts the graph (it raised before)
