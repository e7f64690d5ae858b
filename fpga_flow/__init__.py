"""fpga_flow: quantization-aware PyTorch (Brevitas) models to FPGA hardware, proven bit-exact."""

from .config import BuildConfig
from .errors import FlowError, VerificationError


def build(*args, **kwargs):
    """See :func:`fpga_flow.api.build` (imported lazily: torch and hls4ml are slow to import)."""
    from .api import build as _build
    return _build(*args, **kwargs)


def build_rtl(*args, **kwargs):
    """See :func:`fpga_flow.rtl_flow.build_rtl`: Verilog of a dense model, Verilator ``==`` golden, yosys counts."""
    from .rtl_flow import build_rtl as _build_rtl
    return _build_rtl(*args, **kwargs)


__all__ = ["BuildConfig", "FlowError", "VerificationError", "build", "build_rtl"]
__version__ = "0.1.0"
