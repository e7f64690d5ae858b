"""Ties (values exactly halfway between two codes) through every FINN stage: Brevitas' rounding, half to even.

Hand-made layers whose accumulators are ties about half of the time (tests/finn/qonnx_graphs.py), for each
kind of quantizer FINN turns into thresholds (unsigned after ReLU, signed, signed narrow). At every stage
FINN's Python execution must equal QONNX's execution of the original graph (``np.round``: half to even)
with ``==``; FINN's own thresholds (the control) must not, or the test would not be testing ties.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("finn.transformation", reason="the finn extra is not installed (make venv-finn)")

from fpga_flow import golden  # noqa: E402
from fpga_flow.backends.finn import steps as finn_steps  # noqa: E402
from fpga_flow.backends.finn import ties as finn_ties  # noqa: E402
from tests.finn.qonnx_graphs import dense_tie_graph, inputs  # noqa: E402

pytestmark = pytest.mark.finn

KINDS = {"relu": dict(relu=True), "signed": dict(relu=False, signed_out=True),
         "signed_narrow": dict(relu=False, signed_out=True, narrow_out=True)}


def _stages(model, x, tmp_path, opts=finn_steps.FinnOptions(target_fps=1_000_000)):
    """(stage name, FINN Python outputs) after every stage, and the control's outputs."""
    finn_steps.check_supported(model)
    host, spec = finn_steps.input_to_host(model)
    codes = spec.codes(golden.quantize_input(model, x))
    design, outs, control = finn_steps.Design(host), [], None
    for name, run in finn_steps.STAGES:
        design = run(design, opts, tmp_path)
        if "control" in design.info:
            control = finn_steps.execute(finn_steps.Design(design.info["control"]), codes)
        outs.append((name, finn_steps.execute(design, codes)))
    return outs, control, design


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_stage_rounds_ties_to_even_like_qonnx(kind, tmp_path):
    model = dense_tie_graph(**KINDS[kind])
    x = inputs(48)
    want = golden.qonnx_reference(model, x)
    outs, control, design = _stages(model, x, tmp_path)
    assert [n for n, _ in outs] == [n for n, _ in finn_steps.STAGES]
    for name, got in outs:
        assert np.array_equal(got.reshape(want.shape), want), f"stage {name} differs from QONNX"
    # the images hold ties, and FINN's own thresholds round them up: the control must differ
    assert not np.array_equal(control.reshape(want.shape), want)
    assert any(n.op_type.startswith("MVAU") for n in design.model.graph.node)


def test_odd_code_mask_follows_the_lowest_code():
    """Threshold j gives code min_code + j + 1; Brevitas rounds a tie down where that code is odd."""
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
    for kind, first_odd in (("relu", True), ("signed", True), ("signed_narrow", False)):
        model = dense_tie_graph(**KINDS[kind])
        codes = finn_ties.activation_min_codes(model)
        out, inp = model.graph.output[0].name, model.find_consumer(model.graph.input[0].name).output[0]
        assert codes == {inp: -32, out: {"relu": 0, "signed": -32, "signed_narrow": -31}[kind]}  # 6-bit signed in
        m = model.transform(ConvertQONNXtoFINN()).transform(finn_ties.TagMinCodes(codes))
        mt = m.get_nodes_by_op_type("MultiThreshold")[-1]  # the output quantizer's
        mask = finn_ties.odd_code_mask(m, mt)
        assert bool(mask[0, 0]) is first_odd and np.all(mask[0, 1:] != mask[0, :-1])


def test_an_untagged_multithreshold_is_refused():
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN

    from fpga_flow import FlowError
    m = dense_tie_graph().transform(ConvertQONNXtoFINN())
    with pytest.raises(FlowError, match="MultiThreshold.*does not come from a quantizer"):
        m.transform(finn_ties.TiesToEvenFloat())
