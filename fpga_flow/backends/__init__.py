"""The backend contract and its registry: an explicit dict, loaded by name; a bad name lists the valid ones.

A backend is one package ``fpga_flow/backends/<name>/`` whose ``BACKEND`` is a :class:`Backend`: its ordered
steps (the front steps of :mod:`fpga_flow.front` first, then its own), how a resumed run reloads its state,
its typed state, the tools it needs, and its section of ``report.json`` ``hw.<name>`` with the lines it adds
to a report.md. ``api``, ``cli`` and ``report`` only ever go through :func:`get` and :data:`REGISTRY`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import FlowError


@dataclass(frozen=True)
class Backend:
    name: str
    about: str  # one line (REGISTRY holds the same for --help)
    suffix: str  # its builds land in <out>/<model><suffix>
    steps: tuple  # every step in order, front steps included
    new_state: Callable[[Any], Any]  # BuildConfig -> the backend's own typed state (State.backend)
    require: Callable[[], object] = lambda: None  # raise FlowError(exit_code=2) naming a missing tool
    restore: Callable[[Any], None] | None = None  # a resumed run reloads what earlier steps left in memory;
    # None: the backend cannot resume mid-flow (--start-step is refused up front)
    reverify: tuple | None = None  # `csim`: steps that re-verify an existing build on new inputs
    markdown_section: Callable[[dict, str], list[str]] = lambda hw, model: []  # hw.<name> as report.md lines
    summary: Callable[[dict], str] = lambda rep: ""  # the console line of a finished build


# name -> (module holding BACKEND, build folder suffix, one line for --help); suffix and line are here so a
# report can find a sibling build, and --help describe it, without importing the backend's libraries
REGISTRY = {
    "hls4ml": ("fpga_flow.backends.hls4ml", "", "hls4ml (Vitis HLS) project, g++ C simulation == golden, estimate"),
    "finn": ("fpga_flow.backends.finn", "_finn", "FINN: every stage's Python execution == golden, FINN's estimates"),
    "rtl": ("fpga_flow.backends.rtl", "_rtl", "our folded streaming Verilog (or da4ml dense), Verilator == golden, "
                                            "yosys counts, nextpnr Fmax"),
}


def names() -> list[str]:
    return list(REGISTRY)


def check_name(name: str) -> str:
    if name not in REGISTRY:
        raise FlowError(f"unknown backend {name!r}; available: {', '.join(REGISTRY)}")
    return name


def suffix(name: str) -> str:
    return REGISTRY[check_name(name)][1]


def get_about(name: str) -> str:
    return REGISTRY[check_name(name)][2]


def get(name: str) -> Backend:
    backend = importlib.import_module(REGISTRY[check_name(name)][0]).BACKEND
    assert backend.name == name and backend.suffix == suffix(name), f"registry entry {name} disagrees with its BACKEND"
    return backend
