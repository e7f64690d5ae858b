"""The QONNX preparation hls4ml documents: cleanup, channels-last, Gemm -> MatMul, cleanup."""

from __future__ import annotations

import warnings

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
from qonnx.transformation.gemm_to_matmul import GemmToMatMul
from qonnx.util.cleanup import cleanup_model


def prepare_for_hls4ml(model: ModelWrapper) -> ModelWrapper:
    with warnings.catch_warnings():  # GemmToMatMul warns about Gemm opset versions it handles fine here
        warnings.simplefilter("ignore")
        model = cleanup_model(model)
        model = model.transform(ConvertToChannelsLastAndClean(make_input_channels_last=True))
        model = model.transform(GemmToMatMul())
        return cleanup_model(model)
