"""Graph transformations, one per file, verb-named, qonnx ``Transformation`` style."""

from .check_supported import CheckSupported, SUPPORTED_OPS
from .lower_float_scales import is_float_scaled, lower
from .move_relu_before_maxpool import MoveReluBeforeMaxPool
from .prepare_for_hls4ml import prepare_for_hls4ml

__all__ = ["CheckSupported", "MoveReluBeforeMaxPool", "SUPPORTED_OPS", "is_float_scaled", "lower",
           "prepare_for_hls4ml"]
