"""Everything the FINN backend does to make finn-plus run here, in one place, each item explained.

finn-plus 1.6.1 is installed with ``pip install --no-deps`` (its pins, e.g. ``onnx==1.21.0``,
``onnxruntime==1.25.1``, ``protobuf==5.29.6``, ``brevitas==0.13.0``, conflict with this project's), plus
the three packages the parts we use import: rich, pydantic and scipy (the ``finn`` extra). We drive FINN's
transformations and analyses directly, in the order of FINN's own ``estimate_only_dataflow_steps``, and
never import ``finn.builder``: the builder module imports FINN's XSI simulator (``from finn.xsi import
SimEngine``, which needs a compiled Vivado XSI library and ``XILINX_VIVADO``) and a dozen further packages
(pandas, scikit-learn, mip, onnx-passes ...). So no dummy ``XILINX_VIVADO`` and no patched import are
needed: measured, the whole path runs with that variable unset.

What remains:

1. :class:`ReshapeConvBiasQuantParams`: qonnx 1.0.0's ``ExtractBiasFromConv`` (run by FINN's
   ``ConvertQONNXtoFINN``) reshapes a bias quantizer's scale and zero point to the bias' broadcast shape
   unless they have shape ``(1,)``; Brevitas exports ``Int32Bias``' zero point as a 0-d array, whose
   reshape to ``(1, C, 1, 1)`` raises. Giving the 0-d values shape ``(1,)`` changes no value.
2. :func:`python_twin`: after ``SpecializeLayers`` every layer is an HLS or RTL variant (``MVAU_hls``,
   ``Thresholding_rtl`` ...) that FINN executes only by C++ simulation (needs Vitis HLS' headers) or RTL
   simulation (needs Vivado's XSI). The twin maps each variant back to the generic layer class it derives
   from, whose ``execute_node`` is FINN's Python model of that layer (FINN's own ``MVAU_rtl`` runs exactly
   that code as its "cppsim"), so the specialized, folded, bit-width-minimized graph keeps its attributes,
   weights and thresholds and is still executed by FINN's Python code.
3. :func:`require_finn`: a clear error with the install commands when finn-plus is missing.
"""

from __future__ import annotations

import copy
import importlib
import logging
from contextlib import contextmanager

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation

from ...errors import FlowError

FINN_DIST, FINN_VERSION = "finn-plus", "1.6.1"
INSTALL = (f"pip install --no-deps {FINN_DIST}=={FINN_VERSION} && pip install -e '.[finn]'  "
           "(or `make venv-finn`; --no-deps because finn-plus pins onnx/onnxruntime/protobuf/brevitas versions "
           "that conflict with this project's; see docs/finn.md)")
HW_DOMAIN = "finn.custom_op.fpgadataflow"


def require_finn() -> str:
    """The installed finn-plus version, or FlowError (exit 2, a missing tool) saying how to install it."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        v = version(FINN_DIST)
        importlib.import_module("finn.transformation.qonnx.convert_qonnx_to_finn")
        importlib.import_module("finn.custom_op.fpgadataflow")
    except PackageNotFoundError:
        raise FlowError(f"the finn backend needs {FINN_DIST} {FINN_VERSION}, which is not installed: {INSTALL}",
                        exit_code=2) from None
    except ImportError as e:
        raise FlowError(f"{FINN_DIST} is installed but does not import ({e}); install the packages it needs: "
                        f"{INSTALL}", exit_code=2) from e
    if v != FINN_VERSION:
        raise FlowError(f"the finn backend is written and verified against {FINN_DIST} {FINN_VERSION}, "
                        f"found {v}: {INSTALL}", exit_code=2)
    return v


class ReshapeConvBiasQuantParams(Transformation):
    """0-d scale / zero point of a conv bias' Quant -> shape (1,) (qonnx ExtractBiasFromConv expects it)."""

    def apply(self, model: ModelWrapper):
        changed = False
        for conv in model.get_nodes_by_op_type("Conv"):
            q = model.find_producer(conv.input[2]) if len(conv.input) > 2 else None
            if q is None or q.op_type != "Quant":
                continue
            for name in q.input[1:3]:  # scale, zero point (the bit width stays a scalar: qonnx reads int() of it)
                v = model.get_initializer(name)
                if v is not None and v.ndim == 0:
                    model.set_initializer(name, np.asarray(v).reshape(1))
                    changed = True
        return model, changed


def python_twin(model: ModelWrapper) -> ModelWrapper:
    """A copy whose HLS/RTL layer variants are the generic layers they specialize (FINN's Python models)."""
    twin = ModelWrapper(copy.deepcopy(model.model))
    for node in twin.graph.node:
        for style in ("hls", "rtl"):
            if node.domain == f"{HW_DOMAIN}.{style}" and node.op_type.endswith(f"_{style}"):
                node.op_type = node.op_type.removesuffix(f"_{style}")
                node.domain = HW_DOMAIN
    return twin


@contextmanager
def finn_log(into: list[str]):
    """Collect FINN's log messages (folding that misses its target, changed datatypes ...) for the report,
    instead of letting them go to the terminal unasked."""
    log = logging.getLogger("finn_logger")

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            into.append(f"{record.levelname.lower()}: {record.getMessage().strip()}")

    handler, propagate, level = _Keep(logging.INFO), log.propagate, log.level
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        yield into
    finally:
        log.removeHandler(handler)
        log.propagate, log.level = propagate, level
