"""Per-layer value ranges (fpga_flow/profile.py): the rows equal a direct numpy computation on a tiny model, every
observed range lies inside its type, and a type too narrow for what was observed is refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from qonnx.core.modelwrapper import ModelWrapper

from fpga_flow import BuildConfig, FlowError, api, golden, passes, profile, report, zoo

pytestmark = pytest.mark.unit


def _signed_width(lo: int, hi: int) -> int:
    w = 1
    while not (-(2 ** (w - 1)) <= lo and hi <= 2 ** (w - 1) - 1):
        w += 1
    return w


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 6-5-3 QuantMLP (random init, power-of-two scales) through the front up to the golden, on 40 inputs."""
    torch.manual_seed(3)
    module = zoo.load("mlp").QuantMLP(4, 4, 8, 6, (5,)).eval()
    x = np.random.default_rng(3).random((40, 6), dtype=np.float32)
    out = tmp_path_factory.mktemp("profile")
    api.build(module, (6,), name="tiny", out_dir=out, images=x, config=BuildConfig(model="tiny", n_images=40),
              stop_step="golden", progress=False)
    low = passes.lower(golden.logits_graph(ModelWrapper(str(out / "tiny.partial" / "20_channels_last.onnx"))))
    return module, x, low, out / "tiny.partial"


def test_ranges_equal_a_direct_numpy_computation(tiny):
    module, x, low, _ = tiny
    rows = profile.observe(low, profile.rows_of(low), x)
    profile.check(rows)  # observed within its type, for every row
    net = module.net
    with torch.no_grad():
        xq = net[0](torch.from_numpy(x))
        h = net[2](net[1](xq))
    x_codes = xq.int().numpy().astype(np.int64)
    h_codes = h.int().numpy().astype(np.int64)
    w1 = net[1].quant_weight().int().numpy().astype(np.int64)  # (out, in)
    w3 = net[3].quant_weight().int().numpy().astype(np.int64)
    acc1, acc3 = x_codes @ w1.T, h_codes @ w3.T
    assert [r.what for r in rows] == ["input", "accumulator", "activation", "accumulator"]
    assert rows[0].observed == (x_codes.min(), x_codes.max()) and rows[0].type_range == (0, 255)
    assert rows[1].observed == (acc1.min(), acc1.max())
    assert rows[2].observed == (h_codes.min(), h_codes.max()) and rows[2].type_range == (0, 15)
    assert rows[3].observed == (acc3.min(), acc3.max())
    assert rows[2].at_max == int((h_codes == 15).sum()) and rows[2].values == h_codes.size
    for r, w, (xlo, xhi) in ((rows[1], w1, (0, 255)), (rows[3], w3, (0, 15))):
        lo = int(np.minimum(w * xlo, w * xhi).sum(axis=1).min())
        hi = int(np.maximum(w * xlo, w * xhi).sum(axis=1).max())
        assert r.reachable == (lo, hi)
        bits = _signed_width(min(lo, 0), max(hi, 0))
        assert r.bits == bits and r.type_range == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        assert r.headroom_bits == bits - _signed_width(*r.observed)
        assert r.type_range[0] <= r.reachable[0] <= r.observed[0] <= r.observed[1] <= r.reachable[1] <= r.type_range[1]
    s_in = float(net[0].act_quant.scale())
    assert rows[0].scale == s_in and rows[0].type.startswith("ufixed<8,")


def test_a_type_too_narrow_for_what_was_observed_is_refused(tiny):
    module, x, low, _ = tiny
    rows = profile.observe(low, profile.rows_of(low), x)
    acc = rows[1]
    lo, hi = acc.observed
    narrow = dataclasses.replace(acc, type_range=(lo, hi - 1))
    with pytest.raises(FlowError, match="outside its type .* the type is wrong"):
        profile.check([narrow])
    wrong_bound = dataclasses.replace(acc, reachable=(lo + 1, hi))
    with pytest.raises(FlowError, match="outside the range its weights can reach"):
        profile.check([wrong_bound])


def test_markdown_and_figure(tiny, tmp_path):
    module, x, low, _ = tiny
    rows = profile.observe(low, profile.rows_of(low), x)
    prof = {"images": len(x), "rows": [dict(dataclasses.asdict(r), headroom_bits=r.headroom_bits) for r in rows],
            "note": None}
    md = "\n".join(profile.markdown(prof, "report-ranges.png"))
    names = [n.name for n in low.model.graph.node if n.op_type == "MatMul"]
    assert all(f"| {n} | accumulator |" in md for n in names) and "![value ranges](report-ranges.png)" in md
    assert profile.plot(prof, tmp_path / "r.png") and (tmp_path / "r.png").stat().st_size > 0
    empty = {"images": 0, "rows": [], "note": "not available for this graph: x"}
    assert not profile.plot(empty, tmp_path / "e.png") and "not available" in "\n".join(profile.markdown(empty))


class _EndsInLogSoftmax(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.log_softmax(self.net(x), dim=1)


def test_the_output_note_is_written_from_the_graph(tiny, tmp_path):
    """#14: the report's prose names the model's own last layer, and log_softmax only when the model has one
    (it used to say fc2 and "the seed model's log_softmax" for every model)."""
    module, x, low, partial = tiny
    note = report.output_note(ModelWrapper(str(partial / "20_channels_last.onnx")))
    last = [n.name for n in low.model.graph.node if n.op_type == "MatMul"][-1]
    assert f"({last}'s accumulator)" in note and "log_softmax" not in note
    assert not any(w in note for w in ("fc2", "seed", "conv"))
    api.build(_EndsInLogSoftmax(module), (6,), name="ls", out_dir=tmp_path, images=x[:4],
              config=BuildConfig(model="ls", n_images=4), stop_step="channels_last", progress=False)
    note = report.output_note(ModelWrapper(str(tmp_path / "ls.partial" / "20_channels_last.onnx")))
    assert "last op, log_softmax, is monotonic" in note and "'s accumulator)" in note and "seed" not in note


def test_the_data_used_is_named_from_the_build():
    used = {"name": "fashion-mnist", "split": "test", "sha256": "ab" * 32, "images": 8}
    assert report.data_used({"source": {"dataset": used}}) == "fashion-mnist test images used here, sha256 abababababab"
    assert "MNIST" not in report.data_used({"source": {"kind": "onnx"}})
