"""The LogSoftmax integer model (fpga_flow/log_softmax.py) against float torch.log_softmax, its tables in the
generated HLS config, and where the flow accepts a LogSoftmax node."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.cleanup import cleanup_model
from torch import nn

from fpga_flow import FlowError, log_softmax, passes
from fpga_flow.export import export_qonnx
from fpga_flow.precision import Fixed
from tests.log_softmax_cases import edge_cases

pytestmark = pytest.mark.unit

# (classes, logits type): the ConvNet's fc2 type, narrow/wide/unsigned types, coarse grids (negative frac),
# many fractional bits (the exp index is rounded), one and many classes
SPECS = [(10, Fixed(13, 7)), (10, Fixed(12, 2)), (3, Fixed(6, 2)), (1, Fixed(8, 3)), (17, Fixed(8, 4, False)),
         (4, Fixed(4, 6)), (2, Fixed(16, 8)), (100, Fixed(20, 2)), (5, Fixed(9, -3))]


def _ids(p):
    return f"n{p[0]}-{p[1]}"


@pytest.mark.parametrize("n,in_type", SPECS, ids=[_ids(p) for p in SPECS])
def test_model_within_bound_of_torch_and_keeps_order(n, in_type):
    spec = log_softmax.spec_for(n, in_type)
    codes, where = edge_cases(spec)
    y_codes = log_softmax.forward_codes(spec, codes)
    x = np.ldexp(codes.astype(np.float64), -spec.in_frac)
    y = np.ldexp(y_codes.astype(np.float64), -spec.out_frac)
    want = torch.log_softmax(torch.from_numpy(x), dim=1).numpy()
    err = np.abs(y - want)
    assert err.max() <= spec.bound(), (err.max(), spec.bound_terms())
    assert log_softmax.forward(spec, x).tolist() == y.tolist()  # the float front end is the same arithmetic
    # no saturation: every result lies inside the stated output type, and is <= 0
    lo, hi = spec.out_type.code_range()
    assert y_codes.min() >= lo and y_codes.max() <= 0 <= hi
    # order kept exactly: y_i < y_j iff x_i < x_j (so argmax, ties and all, is the logits')
    assert np.array_equal(np.sign(y_codes[:, :, None] - y_codes[:, None, :]),
                          np.sign(codes[:, :, None] - codes[:, None, :]))
    assert np.array_equal(y.argmax(1), codes.argmax(1))
    eq = where["all_equal"]
    assert np.abs(y[eq] + np.log(n)).max() <= spec.bound()  # -ln n everywhere
    assert np.all(y_codes[eq] == y_codes[eq][:, :1])


def test_bound_and_types_for_the_convnet_logits():
    """fc2's exact type fixed<13,7> (6 fractional bits): the output type and bound the report states."""
    spec = log_softmax.spec_for(10, Fixed(13, 7))
    assert spec.out_type == Fixed(19, 9) and spec.idx_shift == 0
    assert spec.bound() < 2.0 ** -spec.out_frac
    assert spec.bound() == pytest.approx(sum(spec.bound_terms().values()))
    assert spec.exp_table[0] == 1 << spec.exp_frac and spec.exp_table[-1] >= 1  # exp(0) = 1; clamped after
    assert round(np.exp(-len(spec.exp_table) / 64) * 2 ** spec.exp_frac) == 0  # the next entry would be 0


def test_many_fractional_bits_round_the_exp_index_and_state_it():
    spec = log_softmax.spec_for(10, Fixed(24, 4))  # 20 fractional bits
    assert spec.idx_shift == 20 - log_softmax.MAX_INDEX_FRAC and spec.bound_terms()["index"] > 0
    assert len(spec.exp_table) <= log_softmax.MAX_TABLE and len(spec.ln_table) <= 1 << 14
    assert spec.out_frac >= spec.in_frac  # finer than the input: distinct logits stay distinct


def test_off_grid_and_out_of_range_inputs_are_refused():
    spec = log_softmax.spec_for(3, Fixed(8, 4))
    with pytest.raises(FlowError, match="grid"):
        log_softmax.forward(spec, np.array([[0.01, 0.0, 0.0]]))
    with pytest.raises(FlowError, match="outside"):
        log_softmax.forward_codes(spec, np.array([[1000, 0, 0]]))
    with pytest.raises(FlowError, match="takes 3"):
        log_softmax.forward_codes(spec, np.zeros((1, 4), dtype=np.int64))


def test_spec_round_trips_through_plan_info():
    spec = log_softmax.spec_for(10, Fixed(13, 7))
    info = {"layers": [{"layer": "fc2"}, {"layer": "ls", "log_softmax": log_softmax.info(spec)}]}
    assert log_softmax.spec_from_info(info) == spec
    assert log_softmax.spec_from_info({"layers": [{"layer": "fc2"}]}) is None


def _c_array(text: str, name: str) -> list[int]:
    body = re.search(rf"static {name}\(unsigned \w+\) {{.*?= {{(.*?)}};", text, re.S)
    return [int(v) for v in body.group(1).replace("\n", " ").split(",") if v.strip()]


@pytest.mark.parametrize("n,in_type", SPECS[:3], ids=[_ids(p) for p in SPECS[:3]])
def test_hls_config_carries_the_models_tables(n, in_type):
    from fpga_flow.backends.hls4ml.kernels import log_softmax as hls4ml_ext
    spec = log_softmax.spec_for(n, in_type)
    text = hls4ml_ext.config_cpp(spec, "config7", "LogSoftmax_0")
    assert "struct config7 : fpga_flow::log_softmax_config" in text
    assert _c_array(text, "exp_t exp_table") == list(spec.exp_table)
    assert _c_array(text, "ln_t ln_table") == list(spec.ln_table)
    assert _c_array(text, "ln_t ln2k_table") == list(spec.ln2k_table)
    for key, value in [("n_in", n), ("idx_shift", spec.idx_shift), ("exp_frac", spec.exp_frac),
                       ("mant_bits", spec.mant_bits), ("log_frac", spec.log_frac), ("out_frac", spec.out_frac),
                       ("out_width", spec.out_type.width), ("in_frac", spec.in_frac)]:
        assert re.search(rf"\b{key} = {value};", text), key


# -- where the flow accepts LogSoftmax -------------------------------------------------------------------------


class _Net(nn.Module):
    def __init__(self, where: str):
        super().__init__()
        from brevitas import nn as qnn
        from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int32Bias,
                                    Uint8ActPerTensorFixedPoint)
        self.where = where
        self.inp = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)
        self.conv = qnn.QuantConv2d(1, 2, 3, weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int32Bias)
        if where == "image":  # (an unused QuantLinear would never see an input scale, and fail the export)
            return
        self.mid = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
        self.fc = qnn.QuantLinear(2 * 6 * 6, 4, weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int32Bias)
        self.out = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint)

    def forward(self, x):
        y = self.conv(self.inp(x))
        if self.where == "image":
            return F.log_softmax(y, dim=1)
        y = self.mid(y)
        y = self.fc(y.reshape(y.shape[0], -1))
        y = F.log_softmax(y, dim=1)
        return self.out(y) if self.where == "not_last" else y


def _graph(where: str, tmp_path) -> ModelWrapper:
    net = _Net(where)
    net.train()
    with torch.no_grad():
        net(torch.rand(4, 1, 8, 8))
    return cleanup_model(ModelWrapper(str(export_qonnx(net.eval(), (1, 8, 8), tmp_path / "m.onnx"))))


def test_final_log_softmax_on_rank2_is_accepted(tmp_path):
    m = _graph("last", tmp_path)
    assert m.graph.node[-1].op_type == "LogSoftmax"
    m.transform(passes.CheckSupported())


@pytest.mark.parametrize("where,message", [("not_last", "only as the model's last operation"),
                                           ("image", "rank-2")])
def test_other_log_softmax_uses_are_refused_by_name(where, message, tmp_path):
    m = _graph(where, tmp_path)
    with pytest.raises(FlowError, match=message) as e:
        m.transform(passes.CheckSupported())
    assert "(LogSoftmax)" in str(e.value)
