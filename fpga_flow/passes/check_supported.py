"""Refuse, before conversion, any graph the flow cannot convert exactly."""

from __future__ import annotations

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation

from ..errors import FlowError
from ..requant import ROUNDING
from .lower_float_scales import is_float_scaled

# op type -> why it is exact in the hls4ml flow (shown to users in the refusal)
SUPPORTED_OPS = {
    "Quant": "zero point 0; power-of-two scales (Brevitas *FixedPoint quantizers, Int*Bias), or float scales "
             "(Brevitas' defaults, per-tensor activations, per-tensor or per-channel weights: LowerFloatScales)",
    "BatchNormalization": "between a conv / fully connected layer and its activation quantizer (folded into "
                          "integer thresholds, never into the weights)",
    "Conv": "2-D, groups=1 or depthwise (groups=in_channels, depth multiplier 1), integer weights/inputs "
            "from Quant nodes",
    "Gemm": "fully connected layer (QuantLinear)",
    "MatMul": "fully connected layer",
    "Add": "bias of a fully connected layer",
    "Relu": "followed by a Quant (QuantReLU)",
    "MaxPool": "max pooling",
    "Reshape": "flatten before a fully connected layer",
    "Flatten": "flatten before a fully connected layer",
    "Transpose": "layout change inserted by the channels-last pass",
    "LogSoftmax": "the graph's last node, over the last axis of a rank-2 tensor (fixed-point kernel of our own)",
}


# the most values one tensor of the graph may declare (batch 1); past it, running the graph in the golden
# step would end in a MemoryError instead of a message (an ONNX file can declare any dims)
MAX_TENSOR_ELEMENTS = 1 << 26


def check_tensor_shapes(model: ModelWrapper, limit: int = MAX_TENSOR_ELEMENTS) -> None:
    """Every declared shape (inputs, outputs, value_info) has positive dims and at most ``limit`` elements."""
    graph = model.graph
    for vi in (*graph.input, *graph.output, *graph.value_info):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if any(d is not None and d < 1 for d in dims):
            raise FlowError(f"tensor {vi.name!r} declares shape {dims}: every dimension must be >= 1")
        n = 1
        for d in dims:
            n *= d or 1
        if n > limit:
            raise FlowError(f"tensor {vi.name!r} declares shape {dims} ({n:,} values), more than the {limit:,} "
                            "supported (fpga_flow.passes.check_supported.MAX_TENSOR_ELEMENTS)")


class CheckSupported(Transformation):
    """Raise ``FlowError`` naming the first node the hardware flow cannot make bit-exact."""

    def apply(self, model: ModelWrapper):
        check_tensor_shapes(model)
        listing = "; ".join(f"{k} ({v})" for k, v in SUPPORTED_OPS.items())
        first = model.graph.node[0] if model.graph.node else None
        inp = model.graph.input[0].name
        if first is None or not any(n.op_type == "Quant" and n.input[0] == inp for n in model.graph.node):
            raise FlowError("the model's input is not quantized: start the model with a Brevitas QuantIdentity "
                            "(e.g. act_quant=Uint8ActPerTensorFixedPoint) so the hardware input is an integer")
        if len(model.graph.output) != 1:  # hls4ml's ONNX frontend keeps only one of them, silently
            raise FlowError(f"the model has {len(model.graph.output)} outputs; only single-output models are "
                            "supported (return one tensor from forward)")
        for node in model.graph.node:  # unsupported ops first: they are the most useful thing to name
            if node.op_type not in SUPPORTED_OPS:
                raise FlowError(f"node {node.name!r} ({node.op_type}) is not supported by the hls4ml flow. "
                                f"Supported: {listing}")
        _check_flatten_of_image_input(model)
        float_scaled = is_float_scaled(model)  # then LowerFloatScales refuses, by name, what it cannot lower
        if float_scaled:
            _check_float_scaled_output(model)
        for node in model.graph.node:
            where = f"node {node.name!r} ({node.op_type})"
            if node.op_type == "Quant":
                scale = model.get_initializer(node.input[1])
                zeropt = model.get_initializer(node.input[2])
                if scale is None:
                    raise FlowError(f"{where}: its scale is computed at run time (dynamic); only constant scales "
                                    "are supported")
                if zeropt is None or np.any(zeropt != 0):
                    raise FlowError(f"{where}: non-zero zero point is not supported")
                mode = next((a.s.decode() for a in node.attribute if a.name == "rounding_mode"), "ROUND")
                modes = tuple(ROUNDING) if float_scaled else ("ROUND", "FLOOR")
                if mode not in modes:
                    raise FlowError(f"{where}: rounding mode {mode} not supported ({', '.join(modes)} are)")
            if node.op_type == "Conv":
                attrs = {a.name: a for a in node.attribute}
                if "group" in attrs and attrs["group"].i != 1:
                    _check_depthwise(model, node, attrs["group"].i, where)
                k = attrs.get("kernel_shape")
                if k is not None and len(k.ints) != 2:
                    raise FlowError(f"{where}: only 2-D convolutions are supported")
            if node.op_type == "LogSoftmax":
                _check_log_softmax(model, node, where)
            if node.op_type == "Relu":
                nxt = model.find_consumers(node.output[0]) or []
                if not nxt or any(c.op_type != "Quant" for c in nxt):
                    raise FlowError(f"{where}: a ReLU must be followed by a quantizer (use QuantReLU), "
                                    "otherwise its output is a float")
        return model, False


def _check_depthwise(model: ModelWrapper, node, group: int, where: str) -> None:
    """A grouped conv is supported as a depthwise conv: group == input channels == output channels."""
    in_shape = model.get_tensor_shape(node.input[0])
    w_shape = model.get_tensor_shape(node.input[1])
    c_in = int(in_shape[1]) if in_shape is not None and len(in_shape) == 4 else None
    c_out = int(w_shape[0]) if w_shape is not None else None
    if c_in is None or group != c_in or c_out != c_in:
        raise FlowError(f"{where}: grouped convolution (group={group}, {c_in} input and {c_out} output channels) "
                        "is not supported; supported are groups=1 and depthwise convolutions with "
                        "groups=in_channels=out_channels (depth multiplier 1)")


def _check_log_softmax(model: ModelWrapper, node, where: str) -> None:
    """LogSoftmax is supported as the model's final op on (batch, classes): our kernel's one form."""
    outputs = {o.name for o in model.graph.output}
    shape = model.get_tensor_shape(node.input[0])
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    if node.output[0] not in outputs or model.find_consumers(node.output[0]):
        raise FlowError(f"{where}: LogSoftmax is supported only as the model's last operation")
    if shape is None or len(shape) != 2 or axis not in (1, -1):
        raise FlowError(f"{where}: LogSoftmax is supported only over the last axis of a rank-2 (batch, classes) "
                        f"tensor; here shape {shape}, axis {axis}")


def _check_flatten_of_image_input(model: ModelWrapper) -> None:
    """An image input flattened before any convolution: the channels-last pass then puts a Transpose in
    front of the input quantizer, which the hardware input cannot express."""
    shape = model.get_tensor_shape(model.graph.input[0].name)
    if shape is None or len(shape) != 4:
        return
    tensor, seen = model.graph.input[0].name, 0
    while seen < len(model.graph.node):
        consumers = model.find_consumers(tensor) or []
        if len(consumers) != 1:
            return
        node = consumers[0]
        if node.op_type in ("Reshape", "Flatten"):
            raise FlowError(f"node {node.name!r} ({node.op_type}) flattens the {'x'.join(map(str, shape[1:]))} "
                            "image input before any convolution: not supported; give the model a flat input "
                            "(put nn.Flatten before the input QuantIdentity and pass flattened images)")
        if node.op_type == "Conv":
            return
        tensor, seen = node.output[0], seen + 1


# between a float-scaled layer's accumulator and the graph output, without a quantizer
_TO_OUTPUT = ("Add", "Reshape", "Flatten", "Transpose", "MaxPool", "BatchNormalization", "Relu")


def _check_float_scaled_output(model: ModelWrapper) -> None:
    """A float-scaled model must end in an activation quantizer, or at a fully connected layer's accumulator
    (+ bias): LowerFloatScales rescales that one exactly. A convolution's accumulator as the output would
    leave through the channels-last layout change, and a BatchNorm/ReLU/pool without a quantizer gives a
    float; both used to pass this step and fail in ``lower`` (issue #15 item 14: fuzz seed 0)."""
    out = model.graph.output[0].name
    node, passed = model.find_producer(out), []
    while node is not None and node.op_type in _TO_OUTPUT:
        passed.append(node)
        node = model.find_producer(node.input[0])
    if node is None or node.op_type == "Quant":
        return
    where = f"node {node.name!r} ({node.op_type})"
    if node.op_type == "Conv":
        raise FlowError(f"{where}: the model ends at this convolution's output without an output quantizer, and "
                        "its scales are not powers of two (float-scaled): not supported; put a quantizer after "
                        "the last conv (QuantIdentity / QuantReLU), or end the model with a flatten and a "
                        "QuantLinear")
    floating = [n for n in passed if n.op_type in ("BatchNormalization", "Relu", "MaxPool")]
    if floating:
        raise FlowError(f"{where}: the model's last layer has a {floating[0].op_type} but no output quantizer: its "
                        "output would be a float; add a quantizer (QuantIdentity / QuantReLU) or drop it")
