"""The seed ConvNet (the classic PyTorch MNIST example) and its Brevitas QAT twin.

Topology, unchanged from the seed: conv1(1->10, 5x5) -> maxpool2 -> relu ->
conv2(10->20, 5x5) -> dropout2d -> maxpool2 -> relu -> flatten(320) ->
fc1(320->50) -> relu -> dropout -> fc2(50->10) -> log_softmax.

The quantized twin uses power-of-two (``*FixedPoint``) scales everywhere and
``Int32Bias``, so its float32 forward is exact integer arithmetic and the
hardware can be compared with ``==``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SHAPE = (1, 28, 28)
DATASET = "mnist"


class ConvNet(nn.Module):
    """The float seed model, as written in the PyTorch MNIST example."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


class QuantConvNet(nn.Module):
    """Brevitas twin of :class:`ConvNet` with the same topology, log_softmax included.

    ``logits`` returns fc2's output (its integer accumulator times its scale);
    ``forward`` (= ``forward_log_softmax``) applies the seed's ``log_softmax`` to it.
    The exported graph ends with that LogSoftmax, which the hardware computes in
    fixed point (``fpga_flow/log_softmax.py``); the logits are verified with ``==``.
    log_softmax has no parameters, so the state_dict is the same as without it.
    """

    def __init__(self, weight_bits: int = 4, act_bits: int = 4, input_bits: int = 8) -> None:
        super().__init__()
        from brevitas import nn as qnn
        from brevitas.quant import (Int8WeightPerTensorFixedPoint, Int32Bias,
                                    Uint8ActPerTensorFixedPoint)

        def relu() -> nn.Module:
            return qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=act_bits,
                                 return_quant_tensor=True)

        wq = dict(weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=weight_bits,
                  bias_quant=Int32Bias, return_quant_tensor=False)
        self.weight_bits, self.act_bits, self.input_bits = weight_bits, act_bits, input_bits
        self.inp = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, bit_width=input_bits,
                                     return_quant_tensor=True)
        self.conv1 = qnn.QuantConv2d(1, 10, kernel_size=5, **wq)
        self.relu1 = relu()
        self.conv2 = qnn.QuantConv2d(10, 20, kernel_size=5, **wq)
        self.conv2_drop = nn.Dropout2d()
        self.relu2 = relu()
        self.fc1 = qnn.QuantLinear(320, 50, **wq)
        self.relu3 = relu()
        self.drop = nn.Dropout()
        self.fc2 = qnn.QuantLinear(50, 10, **wq)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        x = self.relu1(F.max_pool2d(self.conv1(x), 2))
        x = self.relu2(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.reshape(x.shape[0], 320)
        x = self.relu3(self.fc1(x))
        x = self.drop(x)
        return self.fc2(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.logits(x), dim=1)

    def forward_log_softmax(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


def float_model() -> nn.Module:
    return ConvNet()


def quant_model(weight_bits: int = 4, act_bits: int = 4, input_bits: int = 8) -> nn.Module:
    return QuantConvNet(weight_bits, act_bits, input_bits)
