"""Our hls4ml kernels, one module each: its hls4ml registration (IR layer, ONNX handler or optimizer pass,
templates, header), its template names, and how the resource estimate treats it (``COST``).

Adding a kernel = one module here (with ``LAYER``, ``register()`` and ``COST``), its template under
``hw_templates/hls4ml/``, and one line in :data:`KERNELS`.
"""

from __future__ import annotations

from . import conv_relu, log_softmax, requant

# hls4ml layer class name -> its module; the estimate (estimate.py) reads COST: "mac" (costed as a
# multiply-accumulate layer) or "cheap" (compare / select / cast only)
KERNELS = {conv_relu.LAYER: conv_relu, log_softmax.LAYER: log_softmax, requant.LAYER: requant}


def register_all() -> None:
    """Register every kernel with hls4ml (idempotent), before a model is parsed."""
    for k in KERNELS.values():
        k.register()


def classes(cost: str) -> tuple[str, ...]:
    return tuple(name for name, k in KERNELS.items() if k.COST == cost)
