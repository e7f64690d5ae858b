"""Pruning (fpga_flow.prune): zeros stay exact zeros through fine-tuning, quantization and QONNX export;
structured pruning removes channels from the exported graph; shrinking changes no output."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fpga_flow import prune, train
from fpga_flow.errors import FlowError
from fpga_flow.export import export_qonnx

from tests.conftest import single_torch_thread  # noqa: E402

pytestmark = pytest.mark.unit


one_thread = pytest.fixture(autouse=True, scope="module")(single_torch_thread)


@pytest.fixture
def net(calibrated_convnet):
    return copy.deepcopy(calibrated_convnet).eval()


def _exported_weights(onnx_path) -> list[np.ndarray]:
    """Integer codes of the weight (input 1) of every Conv/Gemm/MatMul, in graph order, computed by
    qonnx's own ``quant`` op from the Quant node's initializers."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.general.quant import quant

    m = ModelWrapper(str(onnx_path))
    out = []
    for node in m.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        q_node = m.find_producer(node.input[1])
        assert q_node is not None and q_node.op_type == "Quant"
        w, s, z, b = (m.get_initializer(i) for i in q_node.input[:4])
        assert w is not None, f"{node.name}: weight is not an initializer"
        attrs = {a.name: (a.s.decode() if a.type == 3 else a.i) for a in q_node.attribute}
        q = quant(w, s, z, b, signed=attrs.get("signed", 1), narrow=attrs.get("narrow", 0),
                  rounding_mode=attrs.get("rounding_mode", "ROUND"))
        codes = q / s + z
        assert np.array_equal(codes, np.round(codes))  # on the integer grid
        out.append(np.round(codes).astype(np.int64))
    return out


def test_unstructured_zeros_are_exact_zeros_in_brevitas_and_exported_qonnx(net, tmp_path):
    layers = prune.apply(net, "unstructured", 0.5)
    assert layers == ["conv1", "conv2", "fc1", "fc2"]
    prune.make_permanent(net)
    assert not prune.is_pruned(net)
    zero_masks = {}
    for name, m in prune.prunable_layers(net):
        w = m.weight.detach()
        assert int((w == 0).sum()) == round(0.5 * w.numel())  # torch prunes round(amount * n)
        q = m.quant_weight()
        codes = (q.value / q.scale).round()
        assert torch.all(codes[w == 0] == 0)  # Brevitas: quantized 0 is exactly 0
        assert torch.all(q.value[w == 0] == 0)
        zero_masks[name] = (w == 0).numpy()
    path = export_qonnx(net, (1, 28, 28), tmp_path / "p.onnx")
    exported = _exported_weights(path)
    sp = prune.sparsity(net)
    assert len(exported) == len(zero_masks) == 4
    for codes, (name, mask) in zip(exported, zero_masks.items()):
        assert codes.shape == mask.shape, name
        assert np.all(codes[mask] == 0), name  # every pruned weight is the integer 0 in QONNX
        assert np.count_nonzero(codes == 0) == sp[name]["zero_int_weights"], name


def test_global_unstructured_prunes_the_amount_of_all_weights(net):
    prune.apply(net, "unstructured", 0.3, scope="global")
    prune.make_permanent(net)
    sp = prune.sparsity(net)["_total"]
    assert sp["zero_weights"] == round(0.3 * sp["weights"])
    per_layer = [prune.sparsity(net)[n]["zero_weights"] / prune.sparsity(net)[n]["weights"]
                 for n in ("conv1", "conv2", "fc1", "fc2")]
    assert len(set(per_layer)) > 1  # global: layers lose different fractions


def test_structured_shrinks_the_exported_layers_and_changes_no_output(net, mnist_test, tmp_path):
    prune.apply(net, "structured", 0.25)
    prune.make_permanent(net)
    x = torch.from_numpy(np.asarray(mnist_test.images[:64], np.float32)[:, None] / 255.0)
    small = prune.shrink(net, x)
    assert prune.widths(small) == {"conv1": 8, "conv2": 15, "fc1": 38}  # 10, 20, 50 minus round(25%)
    assert tuple(small.fc1.weight.shape) == (38, 15 * 16) and tuple(small.fc2.weight.shape) == (10, 38)
    with torch.no_grad():
        assert torch.equal(net(x), small(x))
    path = export_qonnx(small, (1, 28, 28), tmp_path / "s.onnx")
    shapes = [c.shape for c in _exported_weights(path)]
    assert shapes == [(8, 1, 5, 5), (15, 8, 5, 5), (38, 240), (10, 38)]


def test_shrunk_checkpoint_round_trip(net, tmp_path, mnist_test):
    prune.apply(net, "structured", 0.25)
    small = prune.shrink(prune.make_permanent(net))
    card = {"model": "convnet", "weight_bits": 4, "act_bits": 4, "input_bits": 8, "widths": prune.widths(small)}
    path = train.save_checkpoint(small, card, tmp_path / "s.pt")
    loaded, _ = train.load_checkpoint("convnet", path)
    x = torch.from_numpy(np.asarray(mnist_test.images[:32], np.float32)[:, None] / 255.0)
    with torch.no_grad():
        assert torch.equal(small(x), loaded(x))


def test_short_pruned_finetune_keeps_zeros_zero(net):
    net.train()
    prune.apply(net, "unstructured", 0.5)
    masks = {n: m.weight_mask.clone() for n, m in prune.prunable_layers(net)}
    before = {n: m.weight.detach().clone() for n, m in prune.prunable_layers(net)}
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.rand(16, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (16,), generator=g)
        loss = F.nll_loss(net.forward_log_softmax(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    prune.make_permanent(net)
    for n, m in prune.prunable_layers(net):
        w = m.weight.detach()
        assert torch.all(w[masks[n] == 0] == 0), n
        assert not torch.equal(w, before[n]), n  # the kept weights did train
    s = copy.deepcopy(net)
    prune.apply(s, "structured", 0.25)
    assert torch.all(s.conv1.bias[s.conv1.weight_mask.flatten(1).amax(1) == 0] == 0)


def test_bad_pruning_arguments_are_refused(net):
    with pytest.raises(FlowError, match="structured, unstructured|unstructured, structured"):
        prune.apply(net, "random", 0.2)
    with pytest.raises(FlowError, match="per layer"):
        prune.apply(net, "structured", 0.2, scope="global")
    with pytest.raises(FlowError, match="fraction"):
        prune.apply(net, "unstructured", 1.5)
    with pytest.raises(FlowError, match="make the pruning permanent"):
        prune.apply(net, "structured", 0.2)
        prune.shrink(net)


def test_train_prunes_finetunes_and_saves_a_loadable_shrunk_checkpoint(calibrated_convnet, tmp_path):
    from fpga_flow import data
    try:
        data.find_dir()
    except FlowError as e:
        pytest.skip(f"MNIST not available: {e}")
    card = {"model": "convnet", "weight_bits": 4, "act_bits": 4, "input_bits": 8}
    init = train.save_checkpoint(calibrated_convnet, card, tmp_path / "init.pt")
    out = tmp_path / "p.pt"
    got = train.train("convnet", epochs=1, batch_size=32, limit=128, augment=None, init=init, lr=5e-4,
                      prune="structured", prune_amount=0.25, out=out, progress=False, device="cpu")
    assert got["widths"] == {"conv1": 8, "conv2": 15, "fc1": 38} and got["prune"] == "structured"
    model, loaded = train.load_checkpoint("convnet", out)
    assert prune.widths(model) == got["widths"] and loaded["test_accuracy"] == got["test_accuracy"]
    got = train.train("convnet", epochs=1, batch_size=32, limit=128, augment=None, init=init, lr=5e-4,
                      prune="unstructured", prune_amount=0.5, out=out, progress=False, device="cpu")
    model, _ = train.load_checkpoint("convnet", out)
    sp = prune.sparsity(model)
    for name in ("conv1", "conv2", "fc1", "fc2"):  # fine-tuned, still exactly half zeros per layer
        assert sp[name]["zero_weights"] == round(0.5 * sp[name]["weights"])
    assert got["sparsity"]["_total"] == sp["_total"]
