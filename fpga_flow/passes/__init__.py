"""Graph transformations, one per file, verb-named, qonnx ``Transformation`` style."""

from .check_supported import CheckSupported, SUPPORTED_OPS
from .move_relu_before_maxpool import MoveReluBeforeMaxPool
from .prepare_for_hls4ml import prepare_for_hls4ml

__all__ = ["CheckSupported", "MoveReluBeforeMaxPool", "SUPPORTED_OPS", "prepare_for_hls4ml"]
