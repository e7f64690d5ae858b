"""A fully connected net in the FINN TFC shape (784-64-64-64-10), and its Brevitas QAT twin.

The latency-critical case hls4ml is known for. The model takes a flat input,
``INPUT_SHAPE = (784,)``: the flow feeds it MNIST images reshaped to 784 values
(``fpga_flow.data.as_input``), so the exported graph starts with its input
quantizer (an image flattened inside the model would put a Reshape in front of
it, which the hardware input cannot express). The quantized twin: 8-bit input
QuantIdentity, QuantLinear + QuantReLU for each hidden layer, power-of-two
(``*FixedPoint``) scales and ``Int32Bias``.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SHAPE = (784,)
DATASET = "mnist"
HIDDEN = (64, 64, 64)


class MLP(nn.Module):
    """Linear + ReLU per hidden width, then Linear to 10 classes (``mlp_tiny`` reuses it with other sizes)."""

    def __init__(self, n_in: int = INPUT_SHAPE[0], hidden: tuple[int, ...] = HIDDEN) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        n = n_in
        for h in hidden:
            layers += [nn.Linear(n, h), nn.ReLU()]
            n = h
        layers.append(nn.Linear(n, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class QuantMLP(nn.Module):
    def __init__(self, weight_bits: int = 4, act_bits: int = 4, input_bits: int = 8, n_in: int = INPUT_SHAPE[0],
                 hidden: tuple[int, ...] = HIDDEN) -> None:
        super().__init__()
        from brevitas import nn as qnn
        from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint

        def linear(n_in: int, n_out: int) -> nn.Module:
            return qnn.QuantLinear(n_in, n_out, weight_quant=Int8WeightPerTensorFixedPoint,
                                   weight_bit_width=weight_bits, bias_quant=Int32Bias, return_quant_tensor=False)

        self.weight_bits, self.act_bits, self.input_bits = weight_bits, act_bits, input_bits
        layers: list[nn.Module] = [qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, bit_width=input_bits,
                                                     return_quant_tensor=True)]
        n = n_in
        for h in hidden:
            layers += [linear(n, h), qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=act_bits,
                                                   return_quant_tensor=True)]
            n = h
        layers.append(linear(n, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def float_model() -> nn.Module:
    return MLP()


def quant_model(weight_bits: int = 4, act_bits: int = 4, input_bits: int = 8) -> nn.Module:
    return QuantMLP(weight_bits, act_bits, input_bits)
