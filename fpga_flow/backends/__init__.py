"""Backend registry: an explicit dict; a bad key lists the valid ones."""

from __future__ import annotations

from types import ModuleType

from ..errors import FlowError


def _hls4ml() -> ModuleType:
    from . import hls4ml_backend
    return hls4ml_backend


# name -> loader of a module exposing make_plan(model, cfg, name) -> (BuildPlan, info dict)
BACKENDS = {"hls4ml": _hls4ml}


def get(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise FlowError(f"unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]()
