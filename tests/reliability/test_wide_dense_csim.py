"""Issue #15 item 4: a wide dense layer used to crash the C simulation ("exit -11", empty message): hls4ml
keeps the layer's n_in * n_out products on the stack, past the default 8 MB. 784 -> 3000 is about as narrow
as still overflows it (2.35M products of 4 bytes = 9.4 MB; 784 -> 4096 failed the same way, in ~6 min)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from brevitas import nn as qnn
from brevitas.quant import Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint, Int32Bias
from torch import nn

from fpga_flow import BuildConfig, api
from tests.conftest import needs_gxx

pytestmark = [pytest.mark.csim, needs_gxx]

WIDE = 3000


class WideMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, bit_width=8, return_quant_tensor=True),
            qnn.QuantLinear(784, WIDE, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4,
                            bias=True, bias_quant=Int32Bias, return_quant_tensor=True),
            qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=4, return_quant_tensor=True),
            qnn.QuantLinear(WIDE, 2, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4,
                            bias=True, bias_quant=Int32Bias))

    def forward(self, x):
        return self.net(x)


def test_784_3000_2_dense_mlp_runs_in_csim_bit_exact(tmp_path):
    torch.manual_seed(0)
    m = WideMLP()
    x = torch.rand(32, 784)
    m.train()
    with torch.no_grad():
        m(x)  # initialise the activation scales from data
    m.eval()
    cfg = BuildConfig(model="wide", n_images=4, stock_check_images=0, workers=1)
    rep = api.build(m, (784,), name="wide", out_dir=tmp_path, config=cfg, images=x[:4].numpy(), progress=False)
    assert rep["exact_matches"] == rep["n_images"] == 4 and rep["mismatches"] == 0
