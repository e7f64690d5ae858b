"""Graph transformations, one per file, verb-named, qonnx ``Transformation`` style."""

from .check_supported import CheckSupported, SUPPORTED_OPS
from .prepare_for_hls4ml import prepare_for_hls4ml

__all__ = ["CheckSupported", "SUPPORTED_OPS", "prepare_for_hls4ml"]
