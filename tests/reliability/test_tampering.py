"""Issue #15 item 15 (the graph part): an edit of ``20_channels_last.onnx`` that changes the output of one image
among many is caught by the golden step. Before, the channels-last check ran on a sample of the first 16
images, so an edit that changed only image 30 passed. (The weights part of item 15, firmware/weights/w*.h,
is in test_csim_cache.py.)

The edit is a real one: one weight of the first layer changes sign, and input feature 0 is zero in every image
but one, so exactly that image's output moves; the test checks that premise itself before running the flow."""

from __future__ import annotations

import numpy as np
import pytest
from qonnx.core.modelwrapper import ModelWrapper

from fpga_flow import BuildConfig, VerificationError, api, fuzz, golden, layout

pytestmark = pytest.mark.unit

SPEC = fuzz.ModelSpec("dense", (4,), 4, False, (fuzz.LayerSpec(3, 4, 4, "Int32Bias", "none"),), "linear")
N, ODD_ONE = 40, 30  # ODD_ONE >= 16: outside the sample the check used to take


def _images() -> np.ndarray:
    x, _ = fuzz.inputs(SPEC, N)
    x[:, 0] = 0.0
    x[ODD_ONE, 0] = 1.0
    return x


def _build(out, x, module, **kw) -> dict:
    cfg = BuildConfig(model="m", n_images=N, stock_check_images=0, device="cpu")
    return api.build(module, SPEC.input_shape, name="m", out_dir=out, config=cfg, images=x, progress=False, **kw)


def _flip_one_weight_of_feature_0(path) -> None:
    """Negate the largest weight that input feature 0 feeds, in the first MatMul's float initializer (small ones
    quantize to 0, where a sign does nothing)."""
    m = ModelWrapper(str(path))
    mm = next(n for n in m.graph.node if n.op_type == "MatMul")
    w_name = mm.input[1]
    producer = m.find_producer(w_name)
    if producer is not None and producer.op_type == "Quant":
        w_name = producer.input[0]
    w = m.get_initializer(w_name).copy()
    assert w.ndim == 2 and w.shape[0] == SPEC.input_shape[0]
    j = int(np.argmax(np.abs(w[0])))
    w[0, j] = -w[0, j]
    m.set_initializer(w_name, w)
    m.save(str(path))


def test_an_edit_that_changes_one_image_of_many_is_caught(tmp_path):
    x = _images()
    module = fuzz.make_module(SPEC, x)
    _build(tmp_path, x, module, stop_step="channels_last")
    cl_path = tmp_path / "m.partial" / "20_channels_last.onnx"
    hw_in = layout.channels_last(golden.quantize_input(ModelWrapper(str(tmp_path / "m.partial" / "10_clean.onnx")), x))
    before = golden.qonnx_per_image(ModelWrapper(str(cl_path)), hw_in)
    _flip_one_weight_of_feature_0(cl_path)
    after = golden.qonnx_per_image(ModelWrapper(str(cl_path)), hw_in)
    differ = np.flatnonzero((before != after).reshape(N, -1).any(1))
    assert differ.tolist() == [ODD_ONE]  # the premise: one image of 40 changes, and not one of the first 16

    with pytest.raises(VerificationError, match="QONNX channels-last vs QONNX") as e:
        _build(tmp_path, x, module, start_step="lower", stop_step="golden")
    assert f"{N - 1}/{N} images bit-exact" in str(e.value) and f"first: image {ODD_ONE}" in str(e.value)
    assert not (tmp_path / "m").exists()  # nothing became the build


def test_an_untouched_graph_passes_on_every_image(tmp_path):
    """The same resume without the edit verifies: the check compares every image and all agree."""
    x = _images()
    module = fuzz.make_module(SPEC, x)
    _build(tmp_path, x, module, stop_step="channels_last")
    _build(tmp_path, x, module, start_step="lower", stop_step="golden")
    with np.load(tmp_path / "m.partial" / "golden.npz") as z:
        assert z["qonnx_channels_last"].shape[0] == N
        assert np.array_equal(z["qonnx_channels_last"], z["qonnx"])


@pytest.mark.parametrize("edit", ["weights header", "weights text", "new file", "removed file"])
def test_any_edit_of_the_project_files_is_refused_before_csim(tmp_path, edit):
    """The digest covers every file the project holds (the w*.h synthesis reads, the .txt copies, a file added
    or removed), so `csim` refuses an edited project before compiling anything."""
    import json

    from fpga_flow import BuildConfig as Cfg
    from fpga_flow import FlowError
    from fpga_flow.backends.hls4ml import steps as hls_steps
    from fpga_flow.codegen import BuildPlan
    from fpga_flow.runner import State

    work = tmp_path / "m"
    w = work / "hls" / "firmware" / "weights"
    w.mkdir(parents=True)
    (w / "w2.h").write_text("weight_t w2[2] = {0.75, -0.5};\n")
    (w / "w2.txt").write_text("0.75, -0.5\n")
    (work / "hls" / "firmware" / "m.cpp").write_text("// the design\n")
    (work / "plan_info.json").write_text(json.dumps({"digest": BuildPlan.from_dir(work / "hls").digest()}))
    if edit == "weights header":
        (w / "w2.h").write_text("weight_t w2[2] = {0.875, -0.5};\n")
    elif edit == "weights text":
        (w / "w2.txt").write_text("0.875, -0.5\n")
    elif edit == "new file":
        (w / "w3.h").write_text("weight_t w3[1] = {1};\n")
    else:
        (work / "hls" / "firmware" / "m.cpp").unlink()
    state = State(cfg=Cfg(model="m"), name="m", module=None, input_shape=(1,), out_dir=work,
                  x=np.zeros((1, 1), np.float32), progress=False, backend=hls_steps.Hls4mlState(), work=work)
    with pytest.raises(FlowError, match="was modified after it was generated"):
        hls_steps.step_csim_build(state)
