"""Where the package's own files are, and where its outputs and caches go.

Templates (``hw_templates/``), model files and shipped checkpoints (``models/``) are package data: in a
wheel they are ``fpga_flow/hw_templates`` and ``fpga_flow/models`` (pyproject's package-dir maps the
checkout's top-level folders there), read through :mod:`importlib.resources`. Outputs go where the user
says (``--out``, default ``./build``); caches to the user's cache folder (platformdirs) unless
``FPGA_FLOW_CACHE`` or ``--cache-dir`` says otherwise. Nothing is written into the installed package.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import platformdirs

CACHE_ENV = "FPGA_FLOW_CACHE"
DEFAULT_OUT = Path("build")


def _package_folder(name: str) -> Path:
    """``fpga_flow/<name>`` as installed from a wheel, else the checkout's top-level folder (editable installs
    and ``python -m`` in a checkout). The data folders have no ``__init__.py``, so they are reached through
    the ``fpga_flow`` package itself rather than as packages of their own."""
    installed = Path(str(resources.files("fpga_flow") / name))
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent / name


def templates_dir() -> Path:
    return _package_folder("hw_templates")


def models_dir() -> Path:
    return _package_folder("models")


def checkpoints_dir() -> Path:
    return models_dir() / "checkpoints"


def checkout() -> Path | None:
    """The source checkout this package runs from (editable install or ``python -m`` in it), else None."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "fpga_flow").is_dir() else None


def cache_dir(sub: str, override: str | os.PathLike | None = None) -> Path:
    """``<cache>/<sub>``: ``override`` (a ``--cache-dir`` flag or a per-cache env var), else
    ``$FPGA_FLOW_CACHE``, else the user's cache folder (e.g. ``~/.cache/fpga_flow``)."""
    base = override or os.environ.get(CACHE_ENV)
    root = Path(base) if base else Path(platformdirs.user_cache_dir("fpga_flow", appauthor=False))
    if override:
        return root
    return root / sub


def shown(path: Path) -> str:
    """A path as a report shows it: relative to the working directory when inside it (no machine paths)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)
