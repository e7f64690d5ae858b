"""The ``Requant`` node (``LowerFloatScales``) in hls4ml: layer ``FpgaFlowRequant`` and its kernel.

Registered through hls4ml's extension API like our other kernels (``kernels.base.register_kernel``): the
ONNX handler reads the thresholds from the node's attributes, the layer's output type is the
activation code (``ap_uint<bits>`` / ``ap_int<bits>`` as fixed point), and the config struct holds the
tables (hw_templates/hls4ml/fpga_flow_requant_config.h.j2) that ``fpga_flow::requant`` reads
(hw_templates/hls4ml/nnet_fpga_flow_requant.h), for io_stream and io_parallel.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from ....codegen import TEMPLATES, render
from ....errors import FlowError
from ....precision import Fixed, signed_width
from .base import register_kernel

LAYER = "FpgaFlowRequant"
COST = "cheap"  # compare and count per value
HEADER = TEMPLATES / "hls4ml" / "nnet_fpga_flow_requant.h"
CONFIG_TEMPLATE = "hls4ml/fpga_flow_requant_config.h.j2"

_registered = False


def parse_requant(node, input_names, input_shapes, graph) -> dict:
    """ONNX handler: everything the kernel needs is in the node's attributes."""
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    L = int(a["n_thresholds"])
    T = np.asarray(a["thresholds"], dtype=np.int64).reshape(-1, L)
    return {"name": node.name, "class_name": LAYER, "inputs": list(input_names), "outputs": list(node.output),
            "n_chan": int(T.shape[0]), "n_thr": L, "thresholds": T.tolist(), "base": [int(v) for v in a["base"]],
            "direction": [int(v) for v in a["direction"]], "out_bits": int(a["out_bits"]),
            "out_signed": bool(a["out_signed"]), "lowered_layer": a.get("layer", b"").decode()
            if isinstance(a.get("layer", b""), bytes) else a.get("layer", "")}


def out_type(layer) -> Fixed:
    bits = int(layer.get_attr("out_bits"))
    return Fixed(bits, bits, bool(layer.get_attr("out_signed")))


def integer_input(layer) -> bool:
    p = layer.get_input_variable().type.precision
    return int(p.width) == int(p.integer)


def finalize(layer) -> None:
    """After ``derive_precisions`` gave the layer before its exact accumulator type: check that it is an
    integer (the kernel compares ``acc.to_int64()``) and render the config struct for good."""
    if not integer_input(layer):
        raise FlowError(f"{layer.name}: its input {layer.get_input_variable().type.precision} is not an integer "
                        "accumulator")
    layer.set_attr("config_cpp", config_cpp(layer, f"config{layer.index}"))


def config_cpp(layer, config: str) -> str:
    T = np.asarray(layer.get_attr("thresholds"), dtype=np.int64)
    base = np.asarray(layer.get_attr("base"), dtype=np.int64)
    n_thr = int(layer.get_attr("n_thr"))
    codes_lo, codes_hi = int(min(base.min(), base.min() - n_thr)), int(max(base.max(), base.max() + n_thr))
    return render(CONFIG_TEMPLATE, name=layer.name, layer=layer.get_attr("lowered_layer"), config=config,
                  n_in=int(np.prod(layer.get_input_variable().shape)), n_chan=int(layer.get_attr("n_chan")),
                  n_thr=n_thr, count_width=max(1, n_thr.bit_length()),
                  thr_width=signed_width(int(T.min()), int(T.max())), code_width=signed_width(codes_lo, codes_hi),
                  T=T.tolist(), base=base.tolist(),
                  decreasing=["true" if d < 0 else "false" for d in layer.get_attr("direction")],
                  out_type=str(out_type(layer)), checked=layer.get_attr("checked", "by fpga_flow.requant"))


def register() -> None:
    """Register the layer, its ONNX handler, Vitis templates and header (once per process)."""
    global _registered
    if _registered:
        return
    from hls4ml.backends.fpga.fpga_types import APTypeConverter
    from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate
    from hls4ml.converters.onnx_to_hls import layer_handlers, register_onnx_layer_handler
    from hls4ml.model.layers import Layer
    from hls4ml.model.types import FixedPrecisionType


    class FpgaFlowRequant(Layer):
        """Per-channel thresholds on an integer accumulator; output: the activation code."""

        def initialize(self):
            t = out_type(self)
            p = APTypeConverter().convert(FixedPrecisionType(width=t.width, integer=t.integer, signed=t.signed))
            self.add_output_variable(self.get_input_variable().shape, precision=p)

    class ConfigTemplate(LayerConfigTemplate):
        def __init__(self):
            super().__init__(FpgaFlowRequant)

        def format(self, node):
            if not integer_input(node):  # hls4ml's own flows run before the exact types: finalize() renders it
                return f'#error "Requant {node.name}: accumulator type not final (fpga_flow derive_precisions)"\n'
            return config_cpp(node, f"config{node.index}")

    class FunctionTemplate(FunctionCallTemplate):
        def __init__(self):
            super().__init__(FpgaFlowRequant, include_header=[f"nnet_utils/{HEADER.name}"])

        def format(self, node):
            p = self._default_function_params(node)
            return (f"fpga_flow::requant<{p['input_t']}, {p['output_t']}, {p['config']}>"
                    f"({p['input']}, {p['output']});")

    register_kernel(LAYER, FpgaFlowRequant, (ConfigTemplate, FunctionTemplate), HEADER)
    if "Requant" not in layer_handlers:
        register_onnx_layer_handler("Requant", parse_requant)
    _registered = True
