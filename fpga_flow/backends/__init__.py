"""Backend registry: an explicit dict; a bad key lists the valid ones."""

from __future__ import annotations

from types import ModuleType

from ..errors import FlowError


def _hls4ml() -> ModuleType:
    from . import hls4ml_backend
    return hls4ml_backend


def _finn() -> ModuleType:
    from . import finn_backend
    return finn_backend


# name -> loader of a module exposing make_plan(model, cfg, name) -> (BuildPlan, info dict);
# finn runs its own flow instead (build(), fpga_flow/finn_flow.py), routed there by api.build
BACKENDS = {"hls4ml": _hls4ml, "finn": _finn}


def get(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise FlowError(f"unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]()
