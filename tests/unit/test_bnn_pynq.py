"""Brevitas' bnn_pynq example networks: each gap's transformation is exact (``==``) on random inputs.

(a) the float pre-processing before the input quantizer (``x.view``, ``2 * x - 1``) runs on the host:
    input codes == Brevitas' own input quantizer == QONNX's execution of the exported graph;
(b) the final TensorNorm runs on the host on the hardware's logits: == Brevitas' output and QONNX's;
(c) BipolarQuant (1-bit) weights and activations: integer thresholds == the reference chain, the lowered
    graph's integer reference == Brevitas, layer by layer.
Refusals name the ONNX node and the PyTorch module.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from brevitas.nn import QuantIdentity, QuantLinear
from brevitas.quant import Int8WeightPerTensorFloat, Uint8ActPerTensorFloat
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.cleanup import cleanup_model
from torch import nn

from fpga_flow import int_ref, passes, requant
from fpga_flow.errors import FlowError
from fpga_flow.export import export_qonnx
from fpga_flow.passes import host_ops
from tests import bnn_pynq_nets as bnn

pytestmark = pytest.mark.unit


def _front(module: nn.Module, shape: tuple[int, ...], tmp_path):
    """export -> clean -> check -> channels-last -> lower, as front.py runs them: (clean graph, lowered)."""
    p = export_qonnx(module, shape, tmp_path / "m.onnx")
    clean = cleanup_model(ModelWrapper(str(p)))
    clean.transform(passes.CheckSupported())
    return clean, passes.lower(passes.prepare_for_hls4ml(clean))


def _brevitas(module: nn.Module, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """(codes of every activation quantizer in call order, the module's output) of Brevitas' own forward."""
    codes = []

    def hook(mod, args, out):  # the act_quant proxy returns a QuantTensor even when the layer does not
        codes.append(torch.round(out.value / out.scale).detach().numpy())

    hs = [m.register_forward_hook(hook) for n, m in module.named_modules()
          if n.split(".")[-1] == "act_quant" and hasattr(m, "fused_activation_quant_proxy")]
    try:
        with torch.no_grad():
            out = module(torch.from_numpy(x))
    finally:
        for h in hs:
            h.remove()
    return codes, getattr(out, "value", out).numpy()


def _qonnx(clean: ModelWrapper, x: np.ndarray) -> np.ndarray:
    iname, oname = clean.graph.input[0].name, clean.graph.output[0].name
    return np.concatenate([execute_onnx(clean, {iname: x[i:i + 1]})[oname] for i in range(len(x))])


def _images(shape, n: int = 24, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).random((n, *shape), dtype=np.float32)
    x[0], x[1] = 0.0, 1.0
    x[2] = 0.5  # 2 * 0.5 - 1 == 0: the bipolar input's sign(0) = +1 case
    return x


@pytest.mark.parametrize("name", ["TFC_2W2A", "TFC_1W1A", "SFC_1W2A"])
def test_bnn_pynq_lowered_equals_brevitas_and_qonnx(name, tmp_path):
    """Every gap at once on a real bnn_pynq network: input codes (a), every layer's codes (c), and the
    final logits after the host's TensorNorm (b) equal Brevitas' forward and QONNX's execution with ``==``."""
    net = bnn.make(name)
    shape = bnn.input_shape(name)
    clean, low = _front(net, shape, tmp_path)
    x = _images(shape)
    codes, out = _brevitas(net, x)
    hw_in = low.quantize_input(x)
    assert np.array_equal(hw_in, codes[0].reshape(hw_in.shape))  # (a)
    assert [o.op for o in low.pre] == ["Reshape", "Mul", "Sub"]
    assert [o.op for o in low.post] == ["Sub", "Div", "Mul", "Add"]  # (b): TensorNorm, on the host
    ops = {n.op_type for n in low.model.graph.node}
    assert ops <= {"Quant", "MatMul", "Requant"}, ops
    trace = int_ref.run(low, hw_in, trace=True)
    rq = [n for n in low.model.graph.node if n.op_type == "Requant"]
    assert len(rq) == len(codes) - 1 == 3
    for node, want in zip(rq, codes[1:]):  # (c): every hidden layer's codes, thresholds == Brevitas
        assert np.array_equal(trace[node.output[0]], want)
    acc = trace[low.model.graph.output[0].name]
    assert np.array_equal(int_ref.run(low, hw_in, thresholds=True), acc)
    logits = low.logits(acc)
    assert np.array_equal(logits, out)  # (b): the host's TensorNorm == Brevitas' output
    assert np.array_equal(logits, _qonnx(clean, x))  # == QONNX of the exported graph (BipolarQuant included)
    if "1W" in name:  # 1-bit weights really are codes -1/+1
        wq = [n for n in low.model.graph.node if n.op_type == "Quant" and low.model.get_initializer(n.input[0])
              is not None]
        assert wq and all(set(np.unique(low.model.get_initializer(n.input[0]))) == {-1.0, 1.0} for n in wq)


def test_bipolar_requant_is_a_sign_threshold():
    """A bipolar activation after BatchNorm (gammas of both signs): two equal thresholds per channel, codes
    exactly -1 / +1, and the thresholds reproduce the float32 chain on every reachable accumulator."""
    rng = np.random.default_rng(3)
    C = 16
    chain = requant.Chain(name="t", scale=np.full(C, 1.0, np.float32), out=requant.OutQuant.bipolar_codes(1.0),
                          bn=dict(gamma=rng.normal(size=C).astype(np.float32),
                                  beta=rng.normal(size=C).astype(np.float32),
                                  mean=rng.normal(scale=5, size=C).astype(np.float32),
                                  var=rng.uniform(1, 30, size=C).astype(np.float32), eps=1e-5),
                          acc_lo=np.full(C, -64), acc_hi=np.full(C, 64))
    chain.bn["gamma"][:4] = -np.abs(chain.bn["gamma"][:4])
    th = requant.thresholds(chain)
    assert th.checked == "exhaustive"
    acc = np.arange(-64, 65)[:, None].repeat(C, axis=1)
    got = th.apply(acc)
    assert np.array_equal(got, chain.codes(acc))
    assert set(np.unique(got)) <= {-1, 1}
    assert np.all((th.direction < 0)[:4])
    moving = th.T[:, 0] != th.sentinel
    assert np.array_equal(th.T[moving, 0], th.T[moving, 1])
    # Brevitas' binary_sign on the same values
    from brevitas.function.ops import binary_sign
    v = chain.values(acc.astype(np.float64))
    assert np.array_equal(binary_sign(v).numpy().astype(np.int64), got)


class _Pre(nn.Module):
    """A model with a pre-processing before its QuantIdentity (flatten / no-op view / affine) and a float
    scaled MLP after it."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.flatten = nn.Flatten()
        self.inp = QuantIdentity(act_quant=Uint8ActPerTensorFloat, return_quant_tensor=False)
        self.fc1 = QuantLinear(16, 8, bias=False, weight_quant=Int8WeightPerTensorFloat)
        self.bn = nn.BatchNorm1d(8)
        self.act = QuantIdentity(act_quant=Uint8ActPerTensorFloat)
        self.fc2 = QuantLinear(8, 4, bias=True, weight_quant=Int8WeightPerTensorFloat)

    def forward(self, x):
        if self.kind == "flatten":
            x = self.flatten(x)
        elif self.kind == "view":
            x = x.view(x.shape[0], -1)  # a no-op on the flat input
        elif self.kind == "affine":
            x = 0.5 * (x + 1.0)
        elif self.kind == "relu":  # a float op the host does not run
            x = torch.relu(x)
        elif self.kind == "sigmoid":
            x = torch.sigmoid(x)
        return self.fc2(self.act(self.bn(self.fc1(self.inp(x)))))


def _pre_net(kind: str) -> nn.Module:
    torch.manual_seed(0)
    m = _Pre(kind).train()
    shape = (1, 4, 4) if kind == "flatten" else (16,)
    with torch.no_grad():
        for _ in range(3):
            m(torch.rand(32, *shape) * 2 - 0.5)
    return m.eval()


@pytest.mark.parametrize("kind", ["flatten", "view", "affine"])
def test_preprocessing_before_the_input_quantizer_runs_on_the_host(kind, tmp_path):
    net = _pre_net(kind)
    shape = (1, 4, 4) if kind == "flatten" else (16,)
    clean, low = _front(net, shape, tmp_path)
    x = np.random.default_rng(1).random((32, *shape), dtype=np.float32) * 2 - 0.5
    codes, out = _brevitas(net, x)
    hw_in = low.quantize_input(x)
    assert hw_in.shape == (32, 16)
    assert np.array_equal(hw_in, codes[0])
    acc = int_ref.run(low, hw_in)
    assert np.array_equal(int_ref.run(low, hw_in, thresholds=True), acc)
    # the graph's golden input helper (power-of-two path) applies the same pre-processing
    from fpga_flow import golden
    q = golden.input_quantizer(clean)
    assert np.array_equal(golden.quantize_input(clean, x), (hw_in * np.float32(q["scale"])).astype(np.float32))


def test_input_not_quantized_names_the_node(tmp_path):
    p = export_qonnx(_pre_net("relu"), (16,), tmp_path / "m.onnx")
    with pytest.raises(FlowError, match=r"input is not quantized: node 'Relu_\d+' \(Relu\)( of \S+)? reads it") as e:
        cleanup_model(ModelWrapper(str(p))).transform(passes.CheckSupported())
    assert "QuantIdentity" in str(e.value) and "host" in str(e.value)


def test_input_check_does_not_mask_an_unsupported_op(tmp_path):
    p = export_qonnx(_pre_net("sigmoid"), (16,), tmp_path / "m.onnx")
    with pytest.raises(FlowError, match=r"node 'Sigmoid_\d+' \(Sigmoid.*is not supported"):
        cleanup_model(ModelWrapper(str(p))).transform(passes.CheckSupported())


class _MidNorm(nn.Module):
    """A TensorNorm between two layers: float arithmetic inside the hardware graph."""

    def __init__(self):
        super().__init__()
        from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm
        self.inp = QuantIdentity(act_quant=Uint8ActPerTensorFloat)
        self.fc1 = QuantLinear(16, 8, bias=False, weight_quant=Int8WeightPerTensorFloat)
        self.norm = TensorNorm()
        self.act = QuantIdentity(act_quant=Uint8ActPerTensorFloat)
        self.fc2 = QuantLinear(8, 4, bias=False, weight_quant=Int8WeightPerTensorFloat)

    def forward(self, x):
        return self.fc2(self.act(self.norm(self.fc1(self.inp(x)))))


def test_tensornorm_inside_the_graph_is_refused_naming_the_module(tmp_path):
    torch.manual_seed(0)
    net = _MidNorm().eval()
    with torch.no_grad():
        net.norm.running_mean.fill_(0.25)
        net.norm.weight.fill_(2.0)
    p = export_qonnx(net, (16,), tmp_path / "m.onnx")
    with pytest.raises(FlowError) as e:
        cleanup_model(ModelWrapper(str(p))).transform(passes.CheckSupported())
    msg = str(e.value)
    assert re.search(r"node 'Sub_\d+' \(Sub\) is not supported by the hls4ml flow \(it comes from module norm "
                     r"\(TensorNorm\)\)", msg), msg
    assert "after the last layer" in msg  # the suggested fix


def test_host_ops_record_survives_the_passes(tmp_path):
    net = bnn.make("TFC_2W2A")
    clean, low = _front(net, (1, 28, 28), tmp_path)
    cl = passes.prepare_for_hls4ml(clean)
    assert [o.op for o in host_ops.recorded(cl, host_ops.PRE_KEY)] == ["Reshape", "Mul", "Sub"]
    assert cl.get_tensor_shape(cl.graph.input[0].name) == [1, 784]
    assert host_ops.suffix(clean) and not host_ops.suffix(cl)  # TensorNorm left the hardware graph
    # the clean graph itself is untouched (the QONNX reference executes it whole)
    assert {"Mul", "Sub", "Div", "Add"} <= {n.op_type for n in clean.graph.node}


@pytest.mark.unit
def test_report_accuracy_takes_the_argmax_after_the_hosts_tensornorm():
    """A TensorNorm with a negative weight reverses the logits' order: the hls4ml report's accuracy and
    confusion matrix must use what the module returns (the host's ops applied), not the raw accumulator."""
    from types import SimpleNamespace

    from fpga_flow.backends.hls4ml.report import _logits
    from fpga_flow.passes.lower_float_scales import Lowered

    last = SimpleNamespace(chain=None, final_scale=np.array([0.5, 0.5, 0.5]))
    norm = [host_ops.HostOp("Sub", "Sub_0", [1.0], []), host_ops.HostOp("Mul", "Mul_0", [-2.0], [])]
    acc = np.array([[3, 1, 2], [0, 4, 1]], dtype=np.int64)
    got = _logits(SimpleNamespace(lowered=Lowered(None, None, [last], post=norm)), acc)
    want = (acc * 0.5 - 1.0) * -2.0
    assert got.shape == (2, 3) and (got == want).all()
    assert got.argmax(1).tolist() == [1, 0]  # the raw accumulator's argmax is [0, 1]
