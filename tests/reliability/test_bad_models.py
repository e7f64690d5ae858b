"""Issue #15 item 10: a NaN weight is refused naming the weight (before, the message blamed LogSoftmax), and
huge declared dims (an input shape, or an ONNX tensor) are a clear error instead of a MemoryError."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.cleanup import cleanup_model

from fpga_flow import BuildConfig, FlowError, api, passes, zoo
from fpga_flow.export import export_qonnx

pytestmark = pytest.mark.unit


def test_nan_weight_is_refused_by_name(calibrated_convnet, tmp_path):
    import copy
    m = copy.deepcopy(calibrated_convnet)
    with torch.no_grad():
        m.conv1.weight[0, 0, 0, 0] = float("nan")
    x = np.zeros((4, 1, 28, 28), np.float32)
    with pytest.raises(FlowError) as e:
        api.build(m, (1, 28, 28), name="nan", out_dir=tmp_path, config=BuildConfig(model="nan"), images=x,
                  progress=False)
    msg = str(e.value)
    assert "'conv1.weight'" in msg and "NaN" in msg and "LogSoftmax" not in msg
    assert not (tmp_path / "nan").exists()


def test_huge_input_shape_is_a_clear_error(tmp_path):
    m = zoo.load("mlp_tiny").quant_model(4, 4, 8)
    with pytest.raises(FlowError, match="values per sample"):
        export_qonnx(m, (1 << 20, 1 << 20), tmp_path / "x.onnx")


def test_onnx_with_huge_declared_dims_is_refused_in_the_check_step(tmp_path):
    m = zoo.load("mlp_tiny").quant_model(4, 4, 8)
    model = cleanup_model(ModelWrapper(str(export_qonnx(m, (49,), tmp_path / "x.onnx"))))
    model.transform(passes.CheckSupported())  # as exported: supported
    name = model.graph.input[0].name
    model.set_tensor_shape(name, [1, 1 << 40])
    with pytest.raises(FlowError) as e:
        model.transform(passes.CheckSupported())
    assert repr(name) in str(e.value) and f"{1 << 40:,}" in str(e.value)
