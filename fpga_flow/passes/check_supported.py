"""Refuse, before conversion, any graph the flow cannot convert exactly."""

from __future__ import annotations

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation

from ..errors import FlowError
from ..requant import ROUNDING
from . import host_ops
from .host_ops import where
from .lower_float_scales import is_float_scaled

# op type -> why it is exact in the hls4ml flow (shown to users in the refusal)
SUPPORTED_OPS = {
    "BipolarQuant": "1-bit weights or activations, values -1/+1 (Brevitas bit_width=1, QuantType.BINARY), with a "
                    "constant scale; lowered to codes -1/+1 (weights) and a sign threshold (activations)",
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
HOST_OPS = ("Mul / Add / Sub / Div by constants and Reshape / Flatten between the input and the input quantizer "
            "(run on the host before quantizing: e.g. x.view(B, -1); 2 * x - 1), and Mul / Add / Sub / Div by "
            "constants after the last layer of a float-scaled model (run on the host on its logits: e.g. "
            "brevitas_examples' TensorNorm)")


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
        listing = "; ".join(f"{k} ({v})" for k, v in SUPPORTED_OPS.items()) + f"; host-side: {HOST_OPS}"
        if len(model.graph.output) != 1:  # hls4ml's ONNX frontend keeps only one of them, silently
            raise FlowError(f"the model has {len(model.graph.output)} outputs; only single-output models are "
                            "supported (return one tensor from forward)")
        pre, in_quant, stop = host_ops.prefix(model)
        post = host_ops.suffix(model)
        on_host = {n.name for n in [*pre, *post]}
        float_scaled = is_float_scaled(model)
        for node in model.graph.node:  # unsupported ops first: they are the most useful thing to name
            if node.name in on_host:
                continue
            if node.op_type not in SUPPORTED_OPS:
                o = host_ops.origin(node)
                raise FlowError(f"node {node.name!r} ({node.op_type}) is not supported by the hls4ml flow"
                                f"{f' (it comes from {o})' if o else ''}{_hint(model, node)}. Supported: {listing}")
        if in_quant is None:  # after the op check: a more specific refusal is not masked by this one
            what = f"{where(stop)} reads it" if stop is not None else "nothing reads it"
            raise FlowError(f"the model's input is not quantized: {what}, where a Brevitas QuantIdentity (QONNX "
                            "Quant / BipolarQuant) was expected; start the model with a QuantIdentity (e.g. "
                            "act_quant=Uint8ActPerTensorFixedPoint) so the hardware input is an integer. Only "
                            "Reshape / Flatten and Mul / Add / Sub / Div by constants may come before it (they run "
                            "on the host)")
        if post and not float_scaled:
            raise FlowError(f"{where(post[0])}: float ops after the last layer are run on "
                            "the host only for float-scaled models (BatchNorm or float scales); here the hardware "
                            "output is checked against QONNX, which includes them: end the model at its last layer "
                            "and apply them outside it")
        _check_flatten_of_image_input(model, on_host)
        if float_scaled:  # then LowerFloatScales refuses, by name, what it cannot lower
            _check_float_scaled_output(model, on_host)
        for node in model.graph.node:
            if node.name in on_host:
                continue
            where_ = where(node)
            if node.op_type == "BipolarQuant" and model.get_initializer(node.input[1]) is None:
                raise FlowError(f"{where_}: its scale is computed at run time (dynamic); only constant scales "
                                "are supported")
            if node.op_type == "Quant":
                scale = model.get_initializer(node.input[1])
                zeropt = model.get_initializer(node.input[2])
                if scale is None:
                    raise FlowError(f"{where_}: its scale is computed at run time (dynamic); only constant scales "
                                    "are supported")
                if zeropt is None or np.any(zeropt != 0):
                    raise FlowError(f"{where_}: non-zero zero point is not supported")
                mode = next((a.s.decode() for a in node.attribute if a.name == "rounding_mode"), "ROUND")
                modes = tuple(ROUNDING) if float_scaled else ("ROUND", "FLOOR")
                if mode not in modes:
                    raise FlowError(f"{where_}: rounding mode {mode} not supported ({', '.join(modes)} are)")
            if node.op_type == "Conv":
                attrs = {a.name: a for a in node.attribute}
                if "group" in attrs and attrs["group"].i != 1:
                    _check_depthwise(model, node, attrs["group"].i, where_)
                k = attrs.get("kernel_shape")
                if k is not None and len(k.ints) != 2:
                    raise FlowError(f"{where_}: only 2-D convolutions are supported")
            if node.op_type == "LogSoftmax":
                _check_log_softmax(model, node, where_)
            if node.op_type == "Relu":
                nxt = model.find_consumers(node.output[0]) or []
                if not nxt or any(c.op_type != "Quant" for c in nxt):
                    raise FlowError(f"{where_}: a ReLU must be followed by a quantizer (use QuantReLU), "
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


def _check_flatten_of_image_input(model: ModelWrapper, on_host: set | frozenset = frozenset()) -> None:
    """An image input flattened before any convolution: the channels-last pass then puts a Transpose in
    front of the input quantizer, which the hardware input cannot express. A flatten before the input
    quantizer is fine: the host runs it (``host_ops``)."""
    shape = model.get_tensor_shape(model.graph.input[0].name)
    if shape is None or len(shape) != 4:
        return
    tensor, seen = model.graph.input[0].name, 0
    while seen < len(model.graph.node):
        consumers = model.find_consumers(tensor) or []
        if len(consumers) != 1:
            return
        node = consumers[0]
        if node.op_type in ("Reshape", "Flatten") and node.name not in on_host:
            raise FlowError(f"node {node.name!r} ({node.op_type}) flattens the {'x'.join(map(str, shape[1:]))} "
                            "image input before any convolution: not supported; give the model a flat input "
                            "(put nn.Flatten before the input QuantIdentity and pass flattened images)")
        if node.op_type == "Conv":
            return
        tensor, seen = node.output[0], seen + 1


# between a float-scaled layer's accumulator and the graph output, without a quantizer
_TO_OUTPUT = ("Add", "Reshape", "Flatten", "Transpose", "MaxPool", "BatchNormalization", "Relu")


def _hint(model: ModelWrapper, node) -> str:
    """What to do about an unsupported node that is the usual suspect (a TensorNorm-like float affine)."""
    if node.op_type in host_ops.ELEMENTWISE:
        return ("; float arithmetic inside the hardware graph is not supported: constants are applied only before "
                "the input quantizer or after the last layer, where the host runs them; move it there, or fold it "
                "into a BatchNorm between a layer and its quantizer")
    return ""


def _check_float_scaled_output(model: ModelWrapper, on_host: set | frozenset = frozenset()) -> None:
    """A float-scaled model must end in an activation quantizer, or at a fully connected layer's accumulator
    (+ bias): LowerFloatScales rescales that one exactly. A convolution's accumulator as the output would
    leave through the channels-last layout change, and a BatchNorm/ReLU/pool without a quantizer gives a
    float; both used to pass this step and fail in ``lower`` (issue #15 item 14: fuzz seed 0)."""
    out = model.graph.output[0].name
    node, passed = model.find_producer(out), []
    while node is not None and node.name in on_host:
        node = model.find_producer(next(t for t in node.input if model.get_initializer(t) is None))
    while node is not None and node.op_type in _TO_OUTPUT:
        passed.append(node)
        node = model.find_producer(node.input[0])
    if node is None or node.op_type == "Quant":
        return
    where_ = where(node)
    if node.op_type == "Conv":
        raise FlowError(f"{where_}: the model ends at this convolution's output without an output quantizer, and "
                        "its scales are not powers of two (float-scaled): not supported; put a quantizer after "
                        "the last conv (QuantIdentity / QuantReLU), or end the model with a flatten and a "
                        "QuantLinear")
    floating = [n for n in passed if n.op_type in ("BatchNormalization", "Relu", "MaxPool")]
    if floating:
        raise FlowError(f"{where_}: the model's last layer has a {floating[0].op_type} but no output quantizer: its "
                        "output would be a float; add a quantizer (QuantIdentity / QuantReLU) or drop it")
