"""The BatchNorm zoo models with Brevitas' default float-scaled quantizers (convnet_bn, mlp_bn; issue #7):
they build at 2/4/8 bits, export to QONNX with their BatchNorm and float scales intact, round-trip through a
checkpoint exactly, and start from float or other-bit-width checkpoints by layer name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.cleanup import cleanup_model
from torch import nn

from fpga_flow import train, zoo
from fpga_flow.export import export_qonnx

from tests.conftest import single_torch_thread  # noqa: E402

pytestmark = pytest.mark.unit

one_thread = pytest.fixture(autouse=True, scope="module")(single_torch_thread)

# op types of the cleaned QONNX graph: weight Quants first (constants), then the data path
OPS = {
    "convnet_bn": ["Quant"] * 5 + ["Conv", "BatchNormalization", "Relu", "Quant", "MaxPool",
                                   "Conv", "BatchNormalization", "Relu", "Quant", "MaxPool", "Reshape",
                                   "Gemm", "BatchNormalization", "Relu", "Quant", "Gemm"],
    "mlp_bn": ["Quant"] * 4 + ["Gemm", "BatchNormalization", "Relu", "Quant",
                               "Gemm", "BatchNormalization", "Relu", "Quant", "Gemm"],
}
# scale shapes of the weight Quants, in layer order: per output channel, or one per tensor
WEIGHT_SCALES = {"convnet_bn": [(16, 1, 1, 1), (32, 1, 1, 1), (64, 1), ()], "mlp_bn": [(), (), ()]}


def _calibrated(name: str, bits: int, steps: int, seed: int = 0) -> nn.Module:
    """The quant model after ``steps`` Adam steps on random inputs (BatchNorm statistics move, the activation
    quantizers collect statistics for their first 300 training forwards, then learn their scale)."""
    torch.manual_seed(seed)
    mod = zoo.load(name)
    model = mod.quant_model(bits, bits, 8).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        x, y = torch.rand(8, *mod.INPUT_SHAPE), torch.randint(0, 10, (8,))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("name", ["convnet_bn", "mlp_bn"])
def test_bn_model_defines_the_zoo_contract_and_shares_names_with_its_float_twin(name):
    mod = zoo.load(name)
    assert mod.DATASET == "mnist" and int(np.prod(mod.INPUT_SHAPE)) == 784
    flt = mod.float_model()
    x = torch.rand(2, *mod.INPUT_SHAPE)
    for bits in (2, 4, 8):
        q = mod.quant_model(bits, bits, 8)
        assert q.eval()(x).shape == (2, 10)
        # every float parameter and BatchNorm buffer has its namesake (same shape) in the quant twin
        qs = q.state_dict()
        assert all(k in qs and qs[k].shape == v.shape for k, v in flt.state_dict().items())
    assert torch.allclose(flt.eval()(x).exp().sum(1), torch.ones(2))  # float twin: log-probabilities


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("name", ["convnet_bn", "mlp_bn"])
def test_bn_model_exports_with_batchnorm_and_float_scales(name, bits, tmp_path):
    model = _calibrated(name, bits, steps=3)
    path = export_qonnx(model, zoo.load(name).INPUT_SHAPE, tmp_path / f"{name}.onnx")
    m = cleanup_model(ModelWrapper(str(path)))
    assert [n.op_type for n in m.graph.node] == OPS[name]
    quants = [n for n in m.graph.node if n.op_type == "Quant"]
    weight_q = [n for n in quants if m.get_initializer(n.input[0]) is not None]
    assert [tuple(np.shape(m.get_initializer(n.input[1]))) for n in weight_q] == WEIGHT_SCALES[name]
    assert {float(m.get_initializer(n.input[3])) for n in weight_q} == {bits}
    act_q = [n for n in quants if n not in weight_q]  # input (8 bits), then one per QuantReLU
    assert [float(m.get_initializer(n.input[3])) for n in act_q] == [8] + [bits] * (len(act_q) - 1)
    assert all(np.shape(m.get_initializer(n.input[1])) == () for n in act_q)
    scales = [float(m.get_initializer(n.input[1])) for n in act_q]
    assert any(not float(np.log2(s)).is_integer() for s in scales)  # float scales, not powers of two


@pytest.mark.parametrize("steps", [5, 302], ids=["collecting-stats", "learned-scale"])
@pytest.mark.parametrize("name", ["convnet_bn", "mlp_bn"])
def test_bn_checkpoint_round_trip_is_exact(name, steps, tmp_path):
    model = _calibrated(name, 4, steps)
    counters = {int(m.counter) for m in train._runtime_stats_modules(model).values()}
    assert counters == {min(steps, 301)}
    x = torch.rand(64, *zoo.load(name).INPUT_SHAPE)
    card = {"model": name, "weight_bits": 4, "act_bits": 4, "input_bits": 8}
    with torch.no_grad():
        before = model(x)
    loaded, got = train.load_checkpoint(name, train.save_checkpoint(model, dict(card), tmp_path / "c.pt"), 4, 4, 8)
    assert got == card and not loaded.training
    with torch.no_grad():
        after = loaded(x)
        fresh = zoo.load(name).quant_model(4, 4, 8).eval()(x)
    assert torch.equal(before, after)
    assert not torch.equal(before, fresh)  # the round trip carried real state (BatchNorm statistics, scales)


@pytest.mark.parametrize("name", ["convnet_bn", "mlp_bn"])
def test_init_from_float_and_other_bits_copies_weights_and_batchnorm(name, tmp_path):
    mod = zoo.load(name)
    torch.manual_seed(1)
    flt = mod.float_model().train()
    with torch.no_grad():
        flt(torch.rand(16, *mod.INPUT_SHAPE))  # BatchNorm running statistics away from their defaults
    fpath = train.save_checkpoint(flt, {"model": name, "kind": "float"}, tmp_path / "f.pt")
    q = mod.quant_model(2, 2, 8)
    assert train.init_from(q, name, fpath, 2, 2, 8) == "weights"
    qs = q.state_dict()
    assert all(torch.equal(qs[k], v) for k, v in flt.state_dict().items())

    src = _calibrated(name, 4, steps=3)
    qpath = train.save_checkpoint(src, {"model": name, "weight_bits": 4, "act_bits": 4, "input_bits": 8},
                                  tmp_path / "q.pt")
    q8 = mod.quant_model(8, 8, 8)
    assert train.init_from(q8, name, qpath, 8, 8, 8) == "weights"
    q8s = q8.state_dict()
    assert all(torch.equal(q8s[k], src.state_dict()[k]) for k in flt.state_dict())
    # the activation quantizers were not copied: they calibrate anew at the new bit width
    assert all(m.counter == 0 for m in train._runtime_stats_modules(q8).values())
