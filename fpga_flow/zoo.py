"""Zoo models: ``models/<name>.py``, found by file name.

A model file defines ``INPUT_SHAPE`` (C, H, W), ``DATASET``, ``float_model()``
and ``quant_model(weight_bits, act_bits, input_bits)``. Its checkpoints live in
``models/checkpoints/<name>_w{W}a{A}.pt`` with a JSON card beside them.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from .errors import FlowError
from .resources import DEFAULT_OUT, checkpoints_dir, models_dir

MODELS_DIR = models_dir()
CHECKPOINTS_DIR = checkpoints_dir()
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
REQUIRED = ("INPUT_SHAPE", "float_model", "quant_model")
SHIPPED_PREFIX = "models/checkpoints/"  # how reports name a shipped checkpoint (no machine path)


def names() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.py") if IDENT.match(p.stem) and p.stem != "__init__")


def load(name: str) -> ModuleType:
    """Import ``models/<name>.py``; an unknown name lists the models there are."""
    if not IDENT.match(name or "") or not (MODELS_DIR / f"{name}.py").is_file():
        raise FlowError(f"unknown model {name!r}; available models: {', '.join(names())}")
    spec = importlib.util.spec_from_file_location(f"fpga_flow_models.{name}", MODELS_DIR / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # an ImportError here is a real error: let it show
    missing = [a for a in REQUIRED if not hasattr(mod, a)]
    if missing:
        raise FlowError(f"models/{name}.py lacks {', '.join(missing)} (a model file must define {', '.join(REQUIRED)})")
    return mod


def checkpoint_path(name: str, weight_bits: int, act_bits: int, tag: str = "") -> Path:
    """A shipped checkpoint (package data: read, never written)."""
    return CHECKPOINTS_DIR / f"{name}_w{weight_bits}a{act_bits}{tag}.pt"


def output_checkpoint_path(name: str, weight_bits: int, act_bits: int, tag: str = "") -> Path:
    """Where training writes by default: ``build/checkpoints/`` under the working directory, never over a
    shipped checkpoint (``--out`` chooses another place)."""
    return DEFAULT_OUT / "checkpoints" / f"{name}_w{weight_bits}a{act_bits}{tag}.pt"
