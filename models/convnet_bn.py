"""A BatchNorm ConvNet with Brevitas' default float-scaled quantizers (issue #7), and its float twin.

Topology: conv1(1->16, 5x5, no bias) -> BatchNorm2d -> ReLU -> maxpool2 ->
conv2(16->32, 5x5, no bias) -> BatchNorm2d -> ReLU -> maxpool2 -> flatten(512) ->
fc1(512->64, no bias) -> BatchNorm1d -> ReLU -> fc2(64->10, bias) -> logits.

The quantized twin uses the Brevitas *default* quantizers, with float (not
power-of-two) scales, as a Brevitas user would write it without thinking of hardware:

* input ``QuantIdentity(Uint8ActPerTensorFloat, bit_width=input_bits)``: one
  learned float scale (initialised from a running percentile of the data);
* conv1, conv2, fc1 ``Int8WeightPerChannelFloat`` (``weight_bit_width=W``): one
  float scale per output channel, the max-abs of that channel's weights;
* after each of them a plain ``torch.nn`` BatchNorm, *not* folded into the
  weights (the exported graph keeps a ``BatchNormalization`` node), then
  ``QuantReLU(Uint8ActPerTensorFloat, bit_width=A)``: a learned float scale;
* fc2 ``Int8WeightPerTensorFloat`` with a float bias (no ``bias_quant``) and no
  output quantizer: the model returns the logits (no log_softmax).

The order conv -> BatchNorm -> QuantReLU -> maxpool is deliberate: each
requantization follows its conv/linear directly (through the per-channel affine
BatchNorm), which is what an integer-threshold lowering of
"per-channel scale, BatchNorm, float activation scale" needs. The layers
carry the same names as in the float twin (conv1, bn1, conv2, bn2, fc1, bn3,
fc2), so ``--init`` from a float checkpoint copies weights and BatchNorm state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SHAPE = (1, 28, 28)
DATASET = "mnist"


class ConvNetBN(nn.Module):
    """The float twin; ends in ``log_softmax`` like the seed model, which ``train --float`` expects."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=5, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc1 = nn.Linear(512, 64, bias=False)
        self.bn3 = nn.BatchNorm1d(64)
        self.fc2 = nn.Linear(64, 10)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = x.reshape(x.shape[0], 512)
        x = F.relu(self.bn3(self.fc1(x)))
        return self.fc2(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.logits(x), dim=1)


class QuantConvNetBN(nn.Module):
    """Brevitas twin of :class:`ConvNetBN`: default float-scaled quantizers, BatchNorm kept; returns logits."""

    def __init__(self, weight_bits: int = 4, act_bits: int = 4, input_bits: int = 8) -> None:
        super().__init__()
        from brevitas import nn as qnn
        from brevitas.quant import Int8WeightPerChannelFloat, Int8WeightPerTensorFloat, Uint8ActPerTensorFloat

        def relu() -> nn.Module:
            return qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=act_bits, return_quant_tensor=True)

        per_channel = dict(weight_quant=Int8WeightPerChannelFloat, weight_bit_width=weight_bits, bias=False,
                           return_quant_tensor=False)
        self.weight_bits, self.act_bits, self.input_bits = weight_bits, act_bits, input_bits
        self.inp = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=input_bits,
                                     return_quant_tensor=True)
        self.conv1 = qnn.QuantConv2d(1, 16, kernel_size=5, **per_channel)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = relu()
        self.conv2 = qnn.QuantConv2d(16, 32, kernel_size=5, **per_channel)
        self.bn2 = nn.BatchNorm2d(32)
        self.relu2 = relu()
        self.fc1 = qnn.QuantLinear(512, 64, **per_channel)
        self.bn3 = nn.BatchNorm1d(64)
        self.relu3 = relu()
        self.fc2 = qnn.QuantLinear(64, 10, weight_quant=Int8WeightPerTensorFloat, weight_bit_width=weight_bits,
                                   bias=True, return_quant_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        x = F.max_pool2d(self.relu1(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(self.relu2(self.bn2(self.conv2(x))), 2)
        x = x.reshape(x.shape[0], 512)
        x = self.relu3(self.bn3(self.fc1(x)))
        return self.fc2(x)


def float_model() -> nn.Module:
    return ConvNetBN()


def quant_model(weight_bits: int = 4, act_bits: int = 4, input_bits: int = 8) -> nn.Module:
    return QuantConvNetBN(weight_bits, act_bits, input_bits)
