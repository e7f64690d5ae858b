"""Issue #15 item 14: `make fuzz N=40` (seed 0) crashed on two models in step `lower` ("its output is not
requantized (next: Transpose)"). Both are conv stacks ending at a conv without an activation quantizer whose
graph counts as float-scaled (a dead ReLU calibrated to Brevitas' 1e-10 minimum scale). The fuzzer's contract
is that refusals come from export/clean/check: now the check step refuses them, naming the conv."""

from __future__ import annotations

import numpy as np
import pytest
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.cleanup import cleanup_model

from fpga_flow import FlowError, fuzz, passes
from fpga_flow.export import export_qonnx

pytestmark = pytest.mark.unit


def _seed0_specs(n: int = 40) -> list[fuzz.ModelSpec]:
    rng = np.random.default_rng(0)  # exactly the draws of `fpga-flow fuzz -n 40 --seed 0`
    return [fuzz.random_spec(fuzz.rng_choose(rng)) for _ in range(n)]


def _clean_graph(spec: fuzz.ModelSpec, tmp_path) -> ModelWrapper:
    x, _ = fuzz.inputs(spec, 8)
    module = fuzz.make_module(spec, x)
    return cleanup_model(ModelWrapper(str(export_qonnx(module, spec.input_shape, tmp_path / "m.onnx"))))


@pytest.mark.parametrize("index,conv", [(14, "Conv_3"), (36, "Conv_2")])
def test_seed0_float_scaled_conv_output_is_refused_in_check(index, conv, tmp_path):
    model = _clean_graph(_seed0_specs()[index], tmp_path)
    assert passes.is_float_scaled(model)
    with pytest.raises(FlowError) as e:
        model.transform(passes.CheckSupported())
    msg = str(e.value)
    assert f"node {conv!r} (Conv)" in msg and "output quantizer" in msg
    assert fuzz.refusal_reason(msg) == "float-scaled model ending at a conv without output quantizer"


@pytest.mark.parametrize("index", [10, 38])
def test_power_of_two_conv_output_still_passes_check(index, tmp_path):
    """The same shape with power-of-two scales is not float-scaled and stays supported (hls4ml's path)."""
    model = _clean_graph(_seed0_specs()[index], tmp_path)
    assert not passes.is_float_scaled(model)
    model.transform(passes.CheckSupported())
