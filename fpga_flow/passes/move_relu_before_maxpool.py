"""MoveReluBeforeMaxPool: ``Conv -> MaxPool -> Relu -> Quant`` becomes ``Conv -> Relu -> Quant -> MaxPool``.

The seed ConvNet pools before its ReLU. Both ReLU and a quantizer with a positive scale are
monotonically non-decreasing functions f, and for those max(f(a), f(b)) == f(max(a, b)) holds exactly
(no arithmetic, only order), so the order can be swapped without changing a single output. The
swap lets FuseConvRelu put the ReLU and requantization into the convolution's kernel, and the
pooling then works on narrow quantized values instead of wide accumulators.

Runs on the NCHW QONNX graph before the golden step, which checks the result against Brevitas
with ``==`` on every build.
"""

from __future__ import annotations

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation
from qonnx.transformation.general import SortGraph
from qonnx.transformation.infer_shapes import InferShapes

from .prepare_for_hls4ml import reinfer_datatypes


def _single_consumer(model: ModelWrapper, tensor: str):
    c = model.find_consumers(tensor) or []
    return c[0] if len(c) == 1 else None


class MoveReluBeforeMaxPool(Transformation):
    def apply(self, model: ModelWrapper):
        for pool in model.graph.node:
            if pool.op_type != "MaxPool" or len(pool.output) != 1:
                continue
            prod = model.find_producer(pool.input[0])
            relu = _single_consumer(model, pool.output[0])
            quant = relu and _single_consumer(model, relu.output[0])
            if (prod is None or prod.op_type != "Conv" or _single_consumer(model, pool.input[0]) is not pool
                    or relu is None or relu.op_type != "Relu" or quant is None or quant.op_type != "Quant"
                    or quant.input[0] != relu.output[0]):
                continue
            outputs = {o.name for o in model.graph.output}
            if outputs & {pool.input[0], pool.output[0], relu.output[0]}:
                continue  # someone outside reads a tensor whose meaning would change
            scale = model.get_initializer(quant.input[1])
            if scale is None or not np.all(np.asarray(scale) > 0):
                continue  # not provably monotone non-decreasing
            conv_out, pooled, relu_out, quant_out = pool.input[0], pool.output[0], relu.output[0], quant.output[0]
            relu.input[0] = conv_out      # Conv -> Relu
            quant.output[0] = pooled      # Relu -> Quant, into the (renamed-in-meaning) tensor `pooled`
            pool.input[0] = pooled        # Quant -> MaxPool
            pool.output[0] = quant_out    # MaxPool -> what the Quant fed before
            for t in (pooled, relu_out):  # their shapes are now the unpooled ones: infer them again
                vi = model.get_tensor_valueinfo(t)
                if vi is not None:
                    model.graph.value_info.remove(vi)
            model = model.transform(SortGraph()).transform(InferShapes())
            return reinfer_datatypes(model), True  # the swapped names' old annotations must not survive
        return model, False
