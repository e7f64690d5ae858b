"""Tensor layout between PyTorch (NCHW) and the hardware (channels-last, NHWC): one place for the moves."""

from __future__ import annotations

import numpy as np


def channels_last(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W, C), contiguous; flat (N, F) inputs are returned as they are."""
    return np.ascontiguousarray(np.moveaxis(x, 1, -1)) if np.ndim(x) == 4 else x


def channels_first(x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N, C, H, W); flat inputs as they are."""
    return np.moveaxis(x, -1, 1) if np.ndim(x) == 4 else x
