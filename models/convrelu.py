"""A small CNN built from the seed playbook's ``ConvReLU`` block, and its Brevitas QAT twin.

Topology: ConvReLU(1->16, 3x3) -> maxpool2 -> ConvReLU(16->32, 3x3) -> maxpool2 ->
flatten(32*5*5) -> fc(800->10). ``ConvReLU`` is a module holding a conv and the
ReLU that follows it directly; in the quantized twin every QuantConv2d feeds its
QuantReLU with nothing in between (conv -> QuantReLU -> maxpool), the pattern a
Conv+ReLU fusion pass matches. Power-of-two (``*FixedPoint``) scales and
``Int32Bias`` throughout, so the float32 forward is exact integer arithmetic.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SHAPE = (1, 28, 28)
DATASET = "mnist"
CHANNELS = (16, 32)


class ConvReLU(nn.Module):
    """The seed's block: a convolution followed directly by its ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


class QuantConvReLU(nn.Module):
    """``ConvReLU`` in Brevitas form: QuantConv2d then QuantReLU (nothing in between)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, weight_bits: int,
                 act_bits: int) -> None:
        super().__init__()
        from brevitas import nn as qnn
        from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint

        self.conv = qnn.QuantConv2d(in_channels, out_channels, kernel_size,
                                    weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=weight_bits,
                                    bias_quant=Int32Bias, return_quant_tensor=False)
        self.relu = qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=act_bits,
                                  return_quant_tensor=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


class ConvReLUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        c1, c2 = CHANNELS
        self.block1 = ConvReLU(1, c1, 3)
        self.pool1 = nn.MaxPool2d(2)
        self.block2 = ConvReLU(c1, c2, 3)
        self.pool2 = nn.MaxPool2d(2)
        self.fc = nn.Linear(c2 * 5 * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.block2(self.pool1(self.block1(x))))
        return self.fc(x.reshape(x.shape[0], -1))


class QuantConvReLUNet(nn.Module):
    def __init__(self, weight_bits: int = 4, act_bits: int = 4, input_bits: int = 8) -> None:
        super().__init__()
        from brevitas import nn as qnn
        from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint

        c1, c2 = CHANNELS
        self.weight_bits, self.act_bits, self.input_bits = weight_bits, act_bits, input_bits
        self.inp = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, bit_width=input_bits,
                                     return_quant_tensor=True)
        self.block1 = QuantConvReLU(1, c1, 3, weight_bits, act_bits)
        self.pool1 = nn.MaxPool2d(2)
        self.block2 = QuantConvReLU(c1, c2, 3, weight_bits, act_bits)
        self.pool2 = nn.MaxPool2d(2)
        self.fc = qnn.QuantLinear(c2 * 5 * 5, 10, weight_quant=Int8WeightPerTensorFixedPoint,
                                  weight_bit_width=weight_bits, bias_quant=Int32Bias, return_quant_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.block2(self.pool1(self.block1(self.inp(x)))))
        return self.fc(x.reshape(x.shape[0], -1))


def float_model() -> nn.Module:
    return ConvReLUNet()


def quant_model(weight_bits: int = 4, act_bits: int = 4, input_bits: int = 8) -> nn.Module:
    return QuantConvReLUNet(weight_bits, act_bits, input_bits)
