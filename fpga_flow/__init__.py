"""fpga_flow: quantization-aware PyTorch (Brevitas) models to FPGA hardware, proven bit-exact."""

from .config import BuildConfig
from .errors import FlowError, VerificationError

__version__ = "0.1.0"


def build(*args, **kwargs):
    """See :func:`fpga_flow.api.build` (imported lazily: torch and hls4ml are slow to import)."""
    from .api import build as _build
    return _build(*args, **kwargs)


def build_rtl(*args, **kwargs):
    """``build`` with ``backend="rtl"`` and its options: see :func:`fpga_flow.backends.rtl.build_rtl`."""
    from .backends.rtl import build_rtl as _build_rtl
    return _build_rtl(*args, **kwargs)


__all__ = ["BuildConfig", "FlowError", "VerificationError", "build", "build_rtl"]
