"""FuseConvRelu: a 2-D convolution and the ReLU (+ requantization) after it become one HLS kernel.

hls4ml converts ``QuantConv2d -> QuantReLU`` into two layers: Conv2D, which streams its accumulators,
and Activation(relu), whose result type carries the ReLU's quantizer. This pass, an hls4ml optimizer
pass registered through hls4ml's extension API together with a layer class and its two templates,
replaces the pair by one ``FusedConv2DReLU`` layer whose function is our kernel
``fpga_flow::conv_2d_relu_cl`` (hw_templates/hls4ml/fpga_flow_conv_relu.h): one streaming function,
one output stream, of the narrow quantized type.

What it does not fuse (each case keeps hls4ml's two layers):
* a convolution whose output has more than one consumer, or is a model output;
* an activation other than ReLU, depthwise and pointwise (1xN) convolutions, io_parallel designs, and
  the Resource strategy (the kernel mirrors hls4ml's latency line-buffer kernel only).

BatchNorm is not folded here: the flow refuses BatchNorm before conversion (float scales, issue 7).
"""

from __future__ import annotations

from ....codegen import TEMPLATES
from .base import register_kernel

LAYER = "FusedConv2DReLU"
COST = "mac"  # a Conv2D with its ReLU and requantization inside
PASS = "fpga_flow_fuse_conv_relu"
FLOW = "fpga_flow_fuse"
HEADER = TEMPLATES / "hls4ml" / "fpga_flow_conv_relu.h"

_registered = False


def _consumers(model, tensor: str) -> list:
    return [n for n in model.graph.values() if tensor in n.inputs]


def fusable(node) -> bool:
    """Whether ``node`` (an hls4ml layer) is a Conv2D this pass fuses with the ReLU after it."""
    model = node.model
    if node.class_name != "Conv2D" or model.config.get_config_value("IOType") != "io_stream":
        return False
    if int(node.get_attr("filt_height", 1)) < 2 or str(node.get_attr("strategy", "latency")).lower() != "latency":
        return False
    if any(int(node.get_attr(p, 0)) for p in ("pad_top", "pad_bottom", "pad_left", "pad_right")):
        return False
    out = node.outputs[0]
    nxt = _consumers(model, out)
    if len(nxt) != 1 or out in model.outputs:
        return False
    act = nxt[0]
    return act.class_name == "Activation" and str(act.get_attr("activation")).lower() == "relu" and act.inputs == [out]


def fuse(model, conv) -> object:
    """Replace ``conv`` and its ReLU by one FusedConv2DReLU layer; returns the new layer."""
    act = _consumers(model, conv.outputs[0])[0]
    conv_out, act_out = conv.outputs[0], act.outputs[0]
    # everything of the convolution (weights, types, index, line-buffer settings) but its output, which
    # becomes the ReLU's (its variable and quantized type); templates are applied again afterwards
    attrs = {k: v for k, v in conv.attributes.items()
             if k not in (conv_out, "function_cpp", "config_cpp", "include_header")}
    attrs[act_out] = act.get_output_variable()
    attrs["result_t"] = act.get_attr("result_t")
    attrs["fused_from"] = [conv.name, act.name]
    model.remove_node(act)  # its consumers now read conv_out ...
    fused = model.make_node(LAYER, f"{conv.name}_relu", attrs, list(conv.inputs), [act_out], initialize=False)
    model.replace_node(conv, fused)  # ... and now act_out, written by the fused layer
    model.output_vars.pop(conv_out, None)
    return fused


def register() -> None:
    """Register the layer, its Vitis templates and source, the pass and a flow that runs it (idempotent)."""
    global _registered
    if _registered:
        return
    from hls4ml.backends.template import FunctionCallTemplate
    from hls4ml.backends.vivado.passes.convolution_templates import Conv2DConfigTemplate, conv2d_include_list
    from hls4ml.model.flow import register_flow
    from hls4ml.model.layers import Conv2D
    from hls4ml.model.optimizer import OptimizerPass, register_pass

    class FusedConv2DReLU(Conv2D):
        """Conv2D whose output is ReLU(accumulator) in the quantized result type (made by FuseConvRelu)."""

    class FuseConvRelu(OptimizerPass):
        def match(self, node):
            return fusable(node)

        def transform(self, model, node):
            fuse(model, node)
            return True  # the graph changed

    class FusedConfigTemplate(Conv2DConfigTemplate):
        """hls4ml's Conv2D config structs (the kernel reads the same fields and mult_config)."""

        def __init__(self):
            super().__init__()
            self.layer_class = [FusedConv2DReLU]
            self.name = "fusedconv2drelu_config_template"

    class FusedFunctionTemplate(FunctionCallTemplate):
        def __init__(self):
            super().__init__(FusedConv2DReLU, include_header=[*conv2d_include_list, f"nnet_utils/{HEADER.name}"])

        def format(self, node):
            p = self._default_function_params(node)
            return (f"fpga_flow::conv_2d_relu_cl<{p['input_t']}, {p['output_t']}, {p['config']}>"
                    f"({p['input']}, {p['output']}, {node.get_weights('weight').name}, "
                    f"{node.get_weights('bias').name});")

    register_kernel(LAYER, FusedConv2DReLU, (FusedConfigTemplate, FusedFunctionTemplate), HEADER)
    register_pass(PASS, FuseConvRelu)
    register_flow(FLOW, [PASS])
    _registered = True


def apply(hm) -> list[dict]:
    """Fuse every eligible Conv2D + ReLU pair of an hls4ml ModelGraph; returns what was fused."""
    register()
    before = {n.name for n in hm.graph.values()}
    hm.apply_flow(FLOW)
    backend = hm.config.backend.name.lower()
    hm.apply_flow(f"{backend}:apply_templates")  # the new layers need their config and function code
    return [{"layer": n.name, "from": list(n.get_attr("fused_from"))}
            for n in hm.graph.values() if n.name not in before and n.class_name == LAYER]
