"""A latency-critical MLP sized for the open RTL path: MNIST average-pooled to 7x7, 49-32-32-10.

Fully unrolled hardware grows with the weight count; this net has 49*32 + 32*32 + 32*10 = 2,912 weights
(the 784-64-64-64-10 ``mlp`` has 59,008), so Verilator and yosys finish in CI time.

The input is the 28x28 image average-pooled 4x4 into 49 values. The pooling is preprocessing, not part
of the model: ``INPUT_SHAPE = (49,)`` makes ``fpga_flow.data.as_input`` pool the images (one helper, used by
training, the flow's input loading and the RTL testbench), so the exported graph starts with its input
quantizer. The quantized twin: 8-bit unsigned input QuantIdentity, QuantLinear + QuantReLU for each hidden
layer, power-of-two (``*FixedPoint``) scales and ``Int32Bias``; the output is the last layer's logits.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SHAPE = (49,)
DATASET = "mnist"
HIDDEN = (32, 32)


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        n = INPUT_SHAPE[0]
        for h in HIDDEN:
            layers += [nn.Linear(n, h), nn.ReLU()]
            n = h
        layers.append(nn.Linear(n, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class QuantTinyMLP(nn.Module):
    def __init__(self, weight_bits: int = 4, act_bits: int = 4, input_bits: int = 8) -> None:
        super().__init__()
        from brevitas import nn as qnn
        from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint

        def linear(n_in: int, n_out: int) -> nn.Module:
            return qnn.QuantLinear(n_in, n_out, weight_quant=Int8WeightPerTensorFixedPoint,
                                   weight_bit_width=weight_bits, bias_quant=Int32Bias, return_quant_tensor=False)

        self.weight_bits, self.act_bits, self.input_bits = weight_bits, act_bits, input_bits
        layers: list[nn.Module] = [qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, bit_width=input_bits,
                                                     return_quant_tensor=True)]
        n = INPUT_SHAPE[0]
        for h in HIDDEN:
            layers += [linear(n, h), qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=act_bits,
                                                   return_quant_tensor=True)]
            n = h
        layers.append(linear(n, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def float_model() -> nn.Module:
    return TinyMLP()


def quant_model(weight_bits: int = 4, act_bits: int = 4, input_bits: int = 8) -> nn.Module:
    return QuantTinyMLP(weight_bits, act_bits, input_bits)
