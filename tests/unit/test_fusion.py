"""Graph level: MoveReluBeforeMaxPool (QONNX) and FuseConvRelu (hls4ml) — what they change, what they leave."""

import contextlib

import numpy as np
import onnx
import pytest
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.cleanup import cleanup_model

from fpga_flow import BuildConfig, FlowError, golden, passes
from fpga_flow.backends.hls4ml import convert as hls4ml_backend
from fpga_flow.export import export_qonnx
from fpga_flow.backends.hls4ml.kernels import conv_relu as fuse_conv_relu

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def convnet_qonnx(calibrated_convnet, tmp_path_factory):
    p = export_qonnx(calibrated_convnet, (1, 28, 28), tmp_path_factory.mktemp("q") / "m.onnx")
    return cleanup_model(ModelWrapper(str(p)))


def _also_output(m: ModelWrapper, tensor: str) -> ModelWrapper:
    """A copy of ``m`` where ``tensor`` is also a graph output (a second reader outside the chain)."""
    m = ModelWrapper(onnx.load_from_string(m.model.SerializeToString()))
    vi = m.get_tensor_valueinfo(tensor)
    m.graph.value_info.remove(vi)
    m.graph.output.append(vi)
    return m


def _ops(m: ModelWrapper) -> list[str]:
    return [n.op_type for n in m.graph.node]


def _after(ops: list[str], op: str, k: int = 0) -> list[str]:
    """The three ops after the k-th `op`."""
    i = [j for j, o in enumerate(ops) if o == op][k]
    return ops[i + 1:i + 4]


def test_relu_moves_before_maxpool_and_outputs_stay_identical(convnet_qonnx, tiny_images):
    x, _ = tiny_images
    before = _ops(convnet_qonnx)
    assert _after(before, "Conv", 0) == ["MaxPool", "Relu", "Quant"]  # the seed's order
    moved = cleanup_model(convnet_qonnx.transform(passes.MoveReluBeforeMaxPool()))
    after = _ops(moved)
    assert _after(after, "Conv", 0) == ["Relu", "Quant", "MaxPool"]
    assert _after(after, "Conv", 1) == ["Relu", "Quant", "MaxPool"]
    assert sorted(after) == sorted(before)  # nothing added or lost
    assert np.array_equal(golden.qonnx_reference(moved, x), golden.qonnx_reference(convnet_qonnx, x))


def test_relu_not_moved_when_the_pooled_tensor_has_another_consumer(convnet_qonnx):
    pool = next(n for n in convnet_qonnx.graph.node if n.op_type == "MaxPool")
    # a second reader of the pooled tensor (here: a graph output) must keep seeing pooled pre-ReLU values
    m = _also_output(convnet_qonnx, pool.output[0])
    moved = m.transform(passes.MoveReluBeforeMaxPool())
    ops = _ops(moved)
    assert _after(ops, "Conv", 0) == ["MaxPool", "Relu", "Quant"]  # left alone
    assert _after(ops, "Conv", 1) == ["Relu", "Quant", "MaxPool"]  # the other one still moves


def _convert(m: ModelWrapper, tmp_path, fuse: bool):
    cl = passes.prepare_for_hls4ml(m)
    tmp_path.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(tmp_path):
        hm, info = hls4ml_backend.convert(cl, BuildConfig(model="m", fuse=fuse), output_dir="p")
    return hm, info


def test_fuse_conv_relu_replaces_each_conv_relu_pair(convnet_qonnx, tmp_path):
    m = cleanup_model(convnet_qonnx.transform(passes.MoveReluBeforeMaxPool()))
    hm, info = _convert(m, tmp_path, fuse=True)
    classes = [ly.class_name for ly in hm.get_layers()]
    assert classes.count(fuse_conv_relu.LAYER) == 2 and "Conv2D" not in classes
    fused = [r for r in info if r["class"] == fuse_conv_relu.LAYER]
    assert [r["fused_from"] for r in fused] == [["Conv2D_Conv_0", "Relu_0"], ["Conv2D_Conv_1", "Relu_1"]]
    for ly in hm.get_layers():
        if ly.class_name == fuse_conv_relu.LAYER:
            out = ly.get_output_variable().type.precision
            assert not out.signed and out.width == 4  # the QuantReLU's 4-bit type, not the accumulator
            assert "fpga_flow::conv_2d_relu_cl" in ly.get_attr("function_cpp")
            assert f"struct config{ly.index} : nnet::conv2d_config" in ly.get_attr("config_cpp")
    # the dense ReLU stays an hls4ml Activation: only convolutions are fused
    assert classes.count("Activation") == 2  # input quantizer + fc1's ReLU

    hm0, info0 = _convert(m, tmp_path / "nofuse", fuse=False)
    classes0 = [ly.class_name for ly in hm0.get_layers()]
    assert fuse_conv_relu.LAYER not in classes0 and classes0.count("Conv2D") == 2
    assert len(classes0) == len(classes) + 2


def test_conv_whose_output_has_a_second_reader_is_not_fused(convnet_qonnx, tmp_path):
    """hls4ml's ONNX frontend drops extra graph outputs (so the flow refuses them up front): give conv1's
    accumulators a second reader inside the hls4ml graph instead, as a branch would."""
    m = cleanup_model(convnet_qonnx.transform(passes.MoveReluBeforeMaxPool()))
    hm, _ = _convert(m, tmp_path, fuse=False)
    conv1, conv2 = [ly for ly in hm.get_layers() if ly.class_name == "Conv2D"]
    extra = hm.make_node("Activation", "second_reader", {"activation": "linear"}, [conv1.outputs[0]])
    hm.graph["second_reader"] = extra
    assert not fuse_conv_relu.fusable(conv1) and fuse_conv_relu.fusable(conv2)
    fused = fuse_conv_relu.apply(hm)
    assert [f["from"] for f in fused] == [[conv2.name, "Relu_1"]]
    assert conv1.name in hm.graph and hm.graph["Relu_0"].inputs == [conv1.outputs[0]]  # left as it was


def test_a_model_with_two_outputs_is_refused(convnet_qonnx):
    conv = next(n for n in convnet_qonnx.graph.node if n.op_type == "Conv")
    with pytest.raises(FlowError, match="2 outputs"):
        _also_output(convnet_qonnx, conv.output[0]).transform(passes.CheckSupported())


def test_integer_valued_relu_quantizer_before_the_pool_keeps_float_relu_outputs(convnet_qonnx, tiny_images):
    """A ReLU quantizer with integer outputs (scale 1, annotated UINT4) before the pool: after the reorder and
    the channels-last moves every ReLU output is a float tensor and the graph runs equal to the NCHW one.
    (The crash this guards against, qonnx leaving a Quant's integer annotation on a ReLU output, came from the
    shipped W2A2 ConvNet and is tested end to end in tests/csim/test_flow_csim.py; this synthetic graph does
    not trigger it on its own.)"""
    x, _ = tiny_images
    m = ModelWrapper(onnx.load_from_string(convnet_qonnx.model.SerializeToString()))
    relu2 = [n for n in m.graph.node if n.op_type == "Relu"][1]
    quant = m.find_consumers(relu2.output[0])[0]
    m.set_initializer(quant.input[1], np.ones_like(m.get_initializer(quant.input[1])))  # integer outputs
    m = cleanup_model(m)
    moved = cleanup_model(m.transform(passes.MoveReluBeforeMaxPool()))
    assert "UINT4" in {str(moved.get_tensor_datatype(t)) for n in moved.graph.node for t in n.output}
    cl = passes.prepare_for_hls4ml(moved)
    for n in cl.graph.node:
        if n.op_type == "Relu":  # a ReLU's output is a float tensor until its quantizer
            assert str(cl.get_tensor_datatype(n.output[0])) == "FLOAT32"
    xq = golden.quantize_input(moved, x[:4])
    got = golden.qonnx_per_image(golden.logits_graph(cl), np.ascontiguousarray(np.moveaxis(xq, 1, -1)))
    assert np.array_equal(got, golden.qonnx_reference(golden.logits_graph(m), x[:4]))
