"""Small Brevitas models with the default float-scaled quantizers and BatchNorm, for the #7 tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FloatScaledNet(nn.Module):
    """input quantizer -> conv or linear -> [BatchNorm] -> QuantReLU or signed QuantIdentity -> [pool]
    -> flatten -> linear (float bias, no output quantizer): the logits. ``pool_first``: the pool right
    after the conv (on the accumulator), as in the seed ConvNet."""

    def __init__(self, kind: str = "conv", w_bits: int = 4, a_bits: int = 4, per_channel: bool = False,
                 bn: bool = True, signed_act: bool = False, bias: bool = False, channels: int = 6,
                 in_bits: int = 8, size: int = 12, pool_first: bool = False):
        super().__init__()
        from brevitas import nn as qnn
        from brevitas.quant import (Int8ActPerTensorFloat, Int8WeightPerChannelFloat, Int8WeightPerTensorFloat,
                                    Uint8ActPerTensorFloat)
        wq = Int8WeightPerChannelFloat if per_channel else Int8WeightPerTensorFloat
        self.kind, self.size, self.pool_first = kind, size, pool_first
        self.inp = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=in_bits, return_quant_tensor=True)
        if kind == "conv":
            self.layer = qnn.QuantConv2d(1, channels, 3, weight_quant=wq, weight_bit_width=w_bits, bias=bias)
            self.bn = nn.BatchNorm2d(channels) if bn else None
            n_flat = channels * ((size - 2) // 2) ** 2
        else:
            self.layer = qnn.QuantLinear(size * size, channels, weight_quant=wq, weight_bit_width=w_bits, bias=bias)
            self.bn = nn.BatchNorm1d(channels) if bn else None
            n_flat = channels
        if signed_act:
            self.act = qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=a_bits, return_quant_tensor=True)
        else:
            self.act = qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=a_bits, return_quant_tensor=True)
        self.fc = qnn.QuantLinear(n_flat, 10, weight_quant=Int8WeightPerTensorFloat, weight_bit_width=w_bits,
                                  bias=True)

    def forward(self, x):
        x = self.layer(self.inp(x))
        if self.kind == "conv" and self.pool_first:  # the seed ConvNet's order: pool on the accumulator
            x = F.max_pool2d(x, 2)
        if self.bn is not None:
            x = self.bn(x)
        x = self.act(x)
        if self.kind == "conv" and not self.pool_first:
            x = F.max_pool2d(x, 2)
        return self.fc(x.reshape(x.shape[0], -1))


def make(seed: int = 0, negative_gammas: bool = True, **kw) -> FloatScaledNet:
    """A calibrated (train-mode passes for the activation scales and BatchNorm statistics) model; with
    ``negative_gammas`` half of the BatchNorm channels get a negative gamma (decreasing thresholds)."""
    torch.manual_seed(seed)
    net = FloatScaledNet(**kw)
    shape = (16, 1, net.size, net.size) if net.kind == "conv" else (16, net.size * net.size)
    net.train()
    with torch.no_grad():
        if net.bn is not None:
            g = torch.rand(net.bn.num_features) * 1.5 + 0.25
            if negative_gammas:
                g[::2] *= -1
            net.bn.weight.copy_(g)
            net.bn.bias.uniform_(-0.3, 0.3)
        for _ in range(20):
            net(torch.rand(shape))
    return net.eval()


def input_shape(net: FloatScaledNet) -> tuple[int, ...]:
    return (1, net.size, net.size) if net.kind == "conv" else (net.size * net.size,)
