"""A BatchNorm MLP (784-64-64-10) with Brevitas' default float-scaled quantizers (issue #7), and its float twin.

Flat input, ``INPUT_SHAPE = (784,)``, like ``models/mlp.py``: the flow feeds
MNIST images reshaped to 784 values (``fpga_flow.data.as_input``), so the
exported graph starts with the input quantizer.

Topology: fc1(784->64) -> BatchNorm1d -> ReLU -> fc2(64->64) -> BatchNorm1d ->
ReLU -> fc3(64->10) -> logits.

The quantized twin uses the Brevitas *default* quantizers, with float (not
power-of-two) scales, as a Brevitas user would write it without thinking of hardware:

* input ``QuantIdentity(Uint8ActPerTensorFloat, bit_width=input_bits)``: one
  learned float scale (initialised from a running percentile of the data);
* every ``QuantLinear`` ``Int8WeightPerTensorFloat`` (``weight_bit_width=W``):
  one float scale per layer, the max-abs of its weights; a float bias (no
  ``bias_quant``);
* after each hidden layer a plain ``torch.nn.BatchNorm1d``, *not* folded into
  the weights (the exported graph keeps a ``BatchNormalization`` node), then
  ``QuantReLU(Uint8ActPerTensorFloat, bit_width=A)``: a learned float scale;
* the last layer has no BatchNorm and no output quantizer: the model returns
  the logits (no log_softmax).

The layers carry the same names as in the float twin (fc1, bn1, fc2, bn2,
fc3), so ``--init`` from a float checkpoint copies weights and BatchNorm state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SHAPE = (784,)
DATASET = "mnist"


class MLPBN(nn.Module):
    """The float twin; ends in ``log_softmax``, which ``train --float`` expects."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 64)
        self.bn1 = nn.BatchNorm1d(64)
        self.fc2 = nn.Linear(64, 64)
        self.bn2 = nn.BatchNorm1d(64)
        self.fc3 = nn.Linear(64, 10)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.fc1(x)))
        x = F.relu(self.bn2(self.fc2(x)))
        return self.fc3(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.logits(x), dim=1)


class QuantMLPBN(nn.Module):
    """Brevitas twin of :class:`MLPBN`: default float-scaled quantizers, BatchNorm kept; returns logits."""

    def __init__(self, weight_bits: int = 4, act_bits: int = 4, input_bits: int = 8) -> None:
        super().__init__()
        from brevitas import nn as qnn
        from brevitas.quant import Int8WeightPerTensorFloat, Uint8ActPerTensorFloat

        def linear(n_in: int, n_out: int) -> nn.Module:
            return qnn.QuantLinear(n_in, n_out, weight_quant=Int8WeightPerTensorFloat, weight_bit_width=weight_bits,
                                   bias=True, return_quant_tensor=False)

        def relu() -> nn.Module:
            return qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=act_bits, return_quant_tensor=True)

        self.weight_bits, self.act_bits, self.input_bits = weight_bits, act_bits, input_bits
        self.inp = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=input_bits,
                                     return_quant_tensor=True)
        self.fc1 = linear(784, 64)
        self.bn1 = nn.BatchNorm1d(64)
        self.relu1 = relu()
        self.fc2 = linear(64, 64)
        self.bn2 = nn.BatchNorm1d(64)
        self.relu2 = relu()
        self.fc3 = linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        x = self.relu1(self.bn1(self.fc1(x)))
        x = self.relu2(self.bn2(self.fc2(x)))
        return self.fc3(x)


def float_model() -> nn.Module:
    return MLPBN()


def quant_model(weight_bits: int = 4, act_bits: int = 4, input_bits: int = 8) -> nn.Module:
    return QuantMLPBN(weight_bits, act_bits, input_bits)
