"""The QONNX preparation hls4ml documents: cleanup, channels-last, Gemm -> MatMul, cleanup.

First the float ops the host runs (an input pre-processing, a final TensorNorm) leave the graph
(``host_ops.strip``, recorded in its metadata): the hardware graph starts at the input quantizer."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation import channels_last as _channels_last
from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
from qonnx.transformation.gemm_to_matmul import GemmToMatMul
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.util import onnx as _qonnx_onnx
from qonnx.util.cleanup import cleanup_model

from . import host_ops


def prepare_for_hls4ml(model: ModelWrapper) -> ModelWrapper:
    with warnings.catch_warnings(), _bipolar_moves_like_quant(model):  # GemmToMatMul warns about Gemm opset
        warnings.simplefilter("ignore")  # versions it handles fine here
        model = cleanup_model(add_zero_gemm_bias(host_ops.strip(model)))
        model = model.transform(ConvertToChannelsLastAndClean(make_input_channels_last=True))
        model = model.transform(GemmToMatMul())
        return reinfer_datatypes(cleanup_model(model))


@contextlib.contextmanager
def _bipolar_moves_like_quant(model: ModelWrapper):
    """qonnx's channels-last pass moves a Transpose through a Quant (elementwise, per-tensor) but not through a
    BipolarQuant, so a 1-bit activation after a conv kept a Transpose between the conv and its BatchNorm
    (CNV_1W1A). A BipolarQuant with a one-element scale is as elementwise as that Quant (``sign(x) * s``):
    for this call only, it is added to qonnx's lists of ops a Transpose moves through (up and down)."""
    scalar = all(np.size(model.get_initializer(n.input[1])) == 1 for n in model.graph.node
                 if n.op_type == "BipolarQuant" and model.get_initializer(n.input[1]) is not None)
    nodes = _channels_last._move_through_nodes
    add = scalar and "BipolarQuant" not in nodes
    add_eltwise = scalar and "BipolarQuant" not in _qonnx_onnx.eltwise_optypes
    if add:
        nodes.append("BipolarQuant")
    if add_eltwise:
        _qonnx_onnx.eltwise_optypes.add("BipolarQuant")
    try:
        yield
    finally:
        if add:
            nodes.remove("BipolarQuant")
        if add_eltwise:
            _qonnx_onnx.eltwise_optypes.discard("BipolarQuant")


def add_zero_gemm_bias(model: ModelWrapper) -> ModelWrapper:
    """A Gemm without bias gets an explicit zero bias: qonnx's GemmToMatMul indexes the bias input and
    crashes without one. Adding zero is exact on every grid (and a float-scaled layer's chain adds 0.0)."""
    for node in model.graph.node:
        if node.op_type == "Gemm" and (len(node.input) < 3 or not node.input[2]):
            w_shape = model.get_tensor_shape(node.input[1])
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            n_out = int(w_shape[0] if trans_b else w_shape[1])
            name = f"{node.name}_zero_bias"
            model.set_initializer(name, np.zeros(n_out, dtype=np.float32))
            del node.input[2:]
            node.input.append(name)
    return model


def reinfer_datatypes(model: ModelWrapper) -> ModelWrapper:
    """Every node output's datatype annotation inferred again from the Quant nodes.

    qonnx's channels-last moves (``move_transpose_past_eltwise``) swap which node writes a tensor name but
    leave the name's annotation: a Relu output can keep the UINT2 of the Quant output that name used to
    be, and InferDataTypes never lowers a non-float annotation on a Relu. qonnx's executor then rejects
    the graph ("Rounding error is too high to match set QONNX datatype"). Seen with a W2A2 ConvNet whose
    2-bit ReLU quantizer has scale 1 (integer outputs) once its ReLU runs before the pool.
    """
    for node in model.graph.node:
        for t in node.output:
            model.set_tensor_datatype(t, DataType["FLOAT32"])
    with _wrapped_conv_is_a_mac():
        return model.transform(InferDataTypes())


@contextlib.contextmanager
def _wrapped_conv_is_a_mac():
    """qonnx's channels-last Conv (``qonnx.custom_op.channels_last.conv.Conv``) infers its output datatype as
    its input's, which is wrong for a MAC: an integer input (a ReLU quantizer of scale 1, UINT2) times float-
    scaled weights gave a UINT2 conv output, and qonnx's executor then refused the graph ("Rounding error is
    too high to match set QONNX datatype (UINT2) for input Conv_1_out0"; a W4A2 ConvNet, #17's sweep). For
    this call the wrapped Conv infers like the standard Conv (qonnx's ``infer_mac_result_dtype``)."""
    from qonnx.custom_op.channels_last import conv as wrapped
    from qonnx.custom_op.channels_last.base_wrapped_op import ChannelsLastWrappedOp
    from qonnx.transformation.infer_datatypes import infer_mac_result_dtype

    def as_mac(self, model):
        node = self.onnx_node
        idtypes = [model.get_tensor_datatype(i) for i in node.input]
        model.set_tensor_datatype(node.output[0], infer_mac_result_dtype(idtypes, DataType["FLOAT32"], False))

    convs = [c for c in vars(wrapped).values()  # Conv_v1 today; every version qonnx's module defines
             if isinstance(c, type) and issubclass(c, ChannelsLastWrappedOp) and c.__name__.startswith("Conv")]
    originals = {c: c.__dict__.get("infer_node_datatype") for c in convs}
    for c in convs:
        c.infer_node_datatype = as_mac
    try:
        yield
    finally:
        for c, f in originals.items():
            if f is None:
                del c.infer_node_datatype
            else:
                c.infer_node_datatype = f
