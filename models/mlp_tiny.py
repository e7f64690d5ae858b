"""A latency-critical MLP sized for the open RTL path: MNIST average-pooled to 7x7, 49-32-32-10.

Fully unrolled hardware grows with the weight count; this net has 49*32 + 32*32 + 32*10 = 2,912 weights
(the 784-64-64-64-10 ``mlp`` has 59,008), so Verilator and yosys finish in CI time.

The input is the 28x28 image average-pooled 4x4 into 49 values. The pooling is preprocessing, not part
of the model: ``INPUT_SHAPE = (49,)`` makes ``fpga_flow.data.as_input`` pool the images (one helper, used by
training, the flow's input loading and the RTL testbench), so the exported graph starts with its input
quantizer. The quantized twin: 8-bit unsigned input QuantIdentity, QuantLinear + QuantReLU for each hidden
layer, power-of-two (``*FixedPoint``) scales and ``Int32Bias``; the output is the last layer's logits. The
classes are those of ``models/mlp.py``.
"""

from __future__ import annotations

from torch import nn

from fpga_flow import zoo

INPUT_SHAPE = (49,)
DATASET = "mnist"
HIDDEN = (32, 32)
_mlp = zoo.load("mlp")  # the same classes as the 784-64-64-64-10 mlp, other sizes


def float_model() -> nn.Module:
    return _mlp.MLP(INPUT_SHAPE[0], HIDDEN)


def quant_model(weight_bits: int = 4, act_bits: int = 4, input_bits: int = 8) -> nn.Module:
    return _mlp.QuantMLP(weight_bits, act_bits, input_bits, INPUT_SHAPE[0], HIDDEN)
