"""The workarounds in fpga_flow/backends/finn_compat.py, each against the problem it works around.

If a qonnx/FINN upgrade fixes a problem, the test of its premise fails and says the workaround can go.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("finn.transformation", reason="the finn extra is not installed (make venv-finn)")

from fpga_flow import golden  # noqa: E402
from fpga_flow.backends.finn import compat as finn_compat  # noqa: E402
from fpga_flow.backends.finn import steps as finn_steps  # noqa: E402

pytestmark = pytest.mark.finn


def _conv_int32bias_graph(tmp_path):
    from brevitas import nn as qnn
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    from fpga_flow.export import export_qonnx
    torch.manual_seed(0)
    net = nn.Sequential(qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, bit_width=8, return_quant_tensor=True),
                        qnn.QuantConv2d(1, 3, 3, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4,
                                        bias_quant=Int32Bias),
                        qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=4, return_quant_tensor=True))
    net.train()
    with torch.no_grad():
        net(torch.rand(16, 1, 8, 8))
    export_qonnx(net.eval(), (1, 8, 8), tmp_path / "conv.onnx")
    return cleanup_model(ModelWrapper(str(tmp_path / "conv.onnx")))


def test_conv_bias_zero_point_reshape_is_needed_and_changes_nothing(tmp_path):
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
    model = _conv_int32bias_graph(tmp_path)
    conv = model.get_nodes_by_op_type("Conv")[0]
    bias_q = model.find_producer(conv.input[2])
    assert model.get_initializer(bias_q.input[2]).ndim == 0  # the premise: Brevitas exports a 0-d zero point
    with pytest.raises(ValueError, match="cannot reshape"):  # qonnx ExtractBiasFromConv still chokes on it
        model.transform(ConvertQONNXtoFINN())
    fixed = model.transform(finn_compat.ReshapeConvBiasQuantParams())
    assert fixed.get_initializer(bias_q.input[2]).shape == (1,)
    x = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
    assert np.array_equal(golden.qonnx_reference(fixed, x), golden.qonnx_reference(model, x))
    fixed.transform(ConvertQONNXtoFINN())  # converts now


def test_python_twin_maps_specialized_layers_to_finn_python_models(tmp_path):
    from tests.finn.qonnx_graphs import dense_tie_graph
    model = dense_tie_graph()
    finn_steps.check_supported(model)
    design, _ = finn_steps.input_to_host(model)
    design = finn_steps.Design(design)
    opts = finn_steps.FinnOptions()
    for name, run in finn_steps.STAGES[:7]:  # up to and including specialize_layers
        design = run(design, opts, tmp_path)
    assert name == "specialize_layers"
    specialized = [(n.op_type, n.domain) for n in design.model.graph.node]
    assert all(op.endswith(("_hls", "_rtl")) for op, _ in specialized)
    twin = finn_compat.python_twin(design.model)
    assert [(n.op_type, n.domain) for n in twin.graph.node] == [
        (op.rsplit("_", 1)[0], finn_compat.HW_DOMAIN) for op, _ in specialized]
    assert [n.attribute for n in twin.graph.node] == [n.attribute for n in design.model.graph.node]
    assert design.model.graph.node[0].op_type.endswith(("_hls", "_rtl"))  # the design itself is untouched


def test_finn_log_is_collected_not_printed(capsys):
    from finn.util.logging import log
    kept: list[str] = []
    with finn_compat.finn_log(kept):
        log.warning("folding missed its target")
    assert kept == ["warning: folding missed its target"]
    assert "folding" not in capsys.readouterr().err
