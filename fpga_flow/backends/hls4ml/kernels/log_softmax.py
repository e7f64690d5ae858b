"""Our layers in hls4ml, through its extension API: the ONNX ``LogSoftmax`` node becomes ``FpgaFlowLogSoftmax``.

Registered once per process (:func:`register`, idempotent, called through ``kernels.register_all``): the
IR layer (``register_layer``), the ONNX handler (``register_onnx_layer_handler``), the Vitis config and
function templates (``backend.register_template``) and the kernel header (``backend.register_source``).

The kernel's constants and tables depend on its input type, which is final only after
``convert.derive_precisions`` has given the logits their exact accumulator type; that function
calls :func:`finalize_log_softmax`, which sizes the kernel (``fpga_flow.log_softmax.spec_for``), sets the
output type and renders the config struct. Until then the config is an ``#error`` line, so a project
written without that step does not compile rather than computing with wrong tables.
"""

from __future__ import annotations

from pathlib import Path

from .... import log_softmax
from ....codegen import TEMPLATES, render
from ....errors import FlowError
from ....precision import Fixed
from .base import register_kernel

LAYER = LOG_SOFTMAX = "FpgaFlowLogSoftmax"
COST = None  # not modelled by the estimate (listed there as unmodelled)
HEADER = TEMPLATES / "hls4ml" / "nnet_fpga_flow_log_softmax.h"
CONFIG_TEMPLATE = "hls4ml/fpga_flow_log_softmax_config.h.j2"
SPEC_ATTR = "fpga_flow_log_softmax_spec"

_registered = False


def parse_log_softmax(node, input_names, input_shapes, graph) -> dict:
    """ONNX handler: a LogSoftmax over the last axis of a (batch, n) tensor."""
    shape = list(input_shapes[0])
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    if len(shape) != 2 or axis not in (-1, 1):
        raise FlowError(f"node {node.name!r} (LogSoftmax): only the last axis of a rank-2 tensor is supported "
                        f"(shape {shape}, axis {axis})")
    return {"name": node.name, "class_name": LOG_SOFTMAX, "inputs": list(input_names), "outputs": list(node.output),
            "n_in": int(shape[-1])}


def register() -> None:
    """Register the LogSoftmax layer, its ONNX handler, Vitis templates and header (once per process)."""
    global _registered
    if _registered:
        return
    from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate
    from hls4ml.converters.onnx_to_hls import layer_handlers, register_onnx_layer_handler
    from hls4ml.model.layers import Layer

    class FpgaFlowLogSoftmax(Layer):
        """y = log_softmax(x) over the last axis, in fixed point (fpga_flow/log_softmax.py)."""

        def initialize(self):
            self.add_output_variable(self.get_input_variable().shape)

    class ConfigTemplate(LayerConfigTemplate):
        def __init__(self):
            super().__init__(FpgaFlowLogSoftmax)

        def format(self, node):
            spec = node.get_attr(SPEC_ATTR, None)
            if spec is None:
                return f'#error "LogSoftmax {node.name}: precisions not finalized (fpga_flow derive_precisions)"\n'
            return config_cpp(spec, f"config{node.index}", node.name)

    class FunctionTemplate(FunctionCallTemplate):
        def __init__(self):
            super().__init__(FpgaFlowLogSoftmax, include_header=[f"nnet_utils/{HEADER.name}"])

        def format(self, node):
            p = self._default_function_params(node)
            return (f"fpga_flow::log_softmax<{p['input_t']}, {p['output_t']}, {p['config']}>"
                    f"({p['input']}, {p['output']});")

    register_kernel(LOG_SOFTMAX, FpgaFlowLogSoftmax, (ConfigTemplate, FunctionTemplate), HEADER)
    if "LogSoftmax" not in layer_handlers:
        register_onnx_layer_handler("LogSoftmax", parse_log_softmax)
    _registered = True


def config_cpp(spec: log_softmax.Spec, config: str, name: str) -> str:
    """The layer's config struct: constants and tables from the same Spec the numpy model uses."""
    ln_width = max(max(spec.ln_table), max(spec.ln2k_table), 1).bit_length()
    return render(CONFIG_TEMPLATE, name=name, config=config, n_in=spec.n, in_type=str(spec.in_type),
                  out_type=str(spec.out_type), bound=f"{spec.bound():.6g}", in_width=spec.in_type.width,
                  in_int=spec.in_type.integer, in_frac=spec.in_frac, idx_shift=spec.idx_shift, exp_frac=spec.exp_frac,
                  sum_width=spec.sum_width, mant_bits=spec.mant_bits, log_frac=spec.log_frac,
                  y_width=spec.y_width, out_frac=spec.out_frac, out_width=spec.out_type.width,
                  exp_width=max(spec.exp_table).bit_length(), ln_width=ln_width, exp_table=list(spec.exp_table),
                  ln_table=list(spec.ln_table), ln2k_table=list(spec.ln2k_table))


def finalize_log_softmax(layer, in_type: Fixed, hls_fixed) -> dict:
    """Size the kernel from its (final) input type, set its output type, render its config; returns the
    info row fields (``log_softmax`` holds what :func:`fpga_flow.log_softmax.spec_from_info` needs)."""
    n = int(layer.get_attr("n_in"))
    spec = log_softmax.spec_for(n, in_type)
    layer.set_attr(SPEC_ATTR, spec)
    layer.get_output_variable().type.precision = hls_fixed(spec.out_type)
    layer.set_attr("config_cpp", config_cpp(spec, f"config{layer.index}", layer.name))
    return {"input": str(in_type), "result": str(spec.out_type), "log_softmax": log_softmax.info(spec)}
