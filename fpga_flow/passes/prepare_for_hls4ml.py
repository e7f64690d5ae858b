"""The QONNX preparation hls4ml documents: cleanup, channels-last, Gemm -> MatMul, cleanup."""

from __future__ import annotations

import warnings

from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
from qonnx.transformation.gemm_to_matmul import GemmToMatMul
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.util.cleanup import cleanup_model


def prepare_for_hls4ml(model: ModelWrapper) -> ModelWrapper:
    with warnings.catch_warnings():  # GemmToMatMul warns about Gemm opset versions it handles fine here
        warnings.simplefilter("ignore")
        model = cleanup_model(model)
        model = model.transform(ConvertToChannelsLastAndClean(make_input_channels_last=True))
        model = model.transform(GemmToMatMul())
        return reinfer_datatypes(cleanup_model(model))


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
    return model.transform(InferDataTypes())
