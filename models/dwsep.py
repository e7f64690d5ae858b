"""A CNN of depthwise-separable blocks (the seed playbook's depthwise conv, ``groups=in_channels``,
followed by a pointwise 1x1 conv), its Brevitas QAT twin, and the same net with standard convs.

Topology: conv(1->16, 3x3) -> relu -> maxpool2 ->
[depthwise(16, 3x3) -> relu -> pointwise(16->32) -> relu] -> maxpool2 ->
[depthwise(32, 3x3) -> relu -> pointwise(32->64) -> relu] -> flatten(64*3*3) -> fc(576->10).
The first layer is a standard conv: a depthwise conv of a 1-channel image is a single filter.
``standard_twin()`` replaces each depthwise-separable block by one standard 3x3 conv with the same
input and output channels (conv(16->32, 3x3), conv(32->64, 3x3)); every shape stays the same.
``fpga_flow.cost.measure`` counts parameters and multiply-accumulates of both on a real MNIST image
(``python -m fpga_flow.cost dwsep`` prints them); the figures are in docs/bench/zoo.md.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SHAPE = (1, 28, 28)
DATASET = "mnist"
CHANNELS = (16, 32, 64)


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 (groups=in_channels, depth multiplier 1) -> ReLU -> pointwise 1x1 -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, groups=in_channels)
        self.relu1 = nn.ReLU()
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.pointwise(self.relu1(self.depthwise(x))))


class QuantDepthwiseSeparable(nn.Module):
    """The Brevitas block: each conv followed directly by its QuantReLU."""

    def __init__(self, in_channels: int, out_channels: int, weight_bits: int, act_bits: int,
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.depthwise = _qconv(in_channels, in_channels, kernel_size, weight_bits, groups=in_channels)
        self.relu1 = _qrelu(act_bits)
        self.pointwise = _qconv(in_channels, out_channels, 1, weight_bits)
        self.relu2 = _qrelu(act_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.pointwise(self.relu1(self.depthwise(x))))


def _qconv(cin: int, cout: int, k: int, weight_bits: int, groups: int = 1) -> nn.Module:
    from brevitas import nn as qnn
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias
    return qnn.QuantConv2d(cin, cout, k, groups=groups, weight_quant=Int8WeightPerTensorFixedPoint,
                           weight_bit_width=weight_bits, bias_quant=Int32Bias, return_quant_tensor=False)


def _qrelu(act_bits: int) -> nn.Module:
    from brevitas import nn as qnn
    from brevitas.quant import Uint8ActPerTensorFixedPoint
    return qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=act_bits, return_quant_tensor=True)


class DWSepNet(nn.Module):
    """The float model; ``separable=False`` gives the standard-conv twin."""

    def __init__(self, separable: bool = True) -> None:
        super().__init__()
        c1, c2, c3 = CHANNELS
        block = DepthwiseSeparable if separable else _conv_relu
        self.conv1 = nn.Conv2d(1, c1, 3)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.block2 = block(c1, c2)
        self.pool2 = nn.MaxPool2d(2)
        self.block3 = block(c2, c3)
        self.fc = nn.Linear(c3 * 3 * 3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.block3(self.pool2(self.block2(x)))
        return self.fc(x.reshape(x.shape[0], -1))


def _conv_relu(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3), nn.ReLU())


class QuantDWSepNet(nn.Module):
    def __init__(self, weight_bits: int = 4, act_bits: int = 4, input_bits: int = 8) -> None:
        super().__init__()
        from brevitas import nn as qnn
        from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint

        c1, c2, c3 = CHANNELS
        self.weight_bits, self.act_bits, self.input_bits = weight_bits, act_bits, input_bits
        self.inp = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, bit_width=input_bits,
                                     return_quant_tensor=True)
        self.conv1 = _qconv(1, c1, 3, weight_bits)
        self.relu1 = _qrelu(act_bits)
        self.pool1 = nn.MaxPool2d(2)
        self.block2 = QuantDepthwiseSeparable(c1, c2, weight_bits, act_bits)
        self.pool2 = nn.MaxPool2d(2)
        self.block3 = QuantDepthwiseSeparable(c2, c3, weight_bits, act_bits)
        self.fc = qnn.QuantLinear(c3 * 3 * 3, 10, weight_quant=Int8WeightPerTensorFixedPoint,
                                  weight_bit_width=weight_bits, bias_quant=Int32Bias, return_quant_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(self.inp(x))))
        x = self.block3(self.pool2(self.block2(x)))
        return self.fc(x.reshape(x.shape[0], -1))


def float_model() -> nn.Module:
    return DWSepNet(separable=True)


def standard_twin() -> nn.Module:
    """The same net with every depthwise-separable block replaced by one standard 3x3 conv."""
    return DWSepNet(separable=False)


def quant_model(weight_bits: int = 4, act_bits: int = 4, input_bits: int = 8) -> nn.Module:
    return QuantDWSepNet(weight_bits, act_bits, input_bits)

