"""The integer dataflow a streaming design implements: a list of layers, each fully described by integer
data (weights, bias, thresholds) and its folding, with an exact numpy model (:func:`reference`).

Tensors are channels-last ``(H, W, C)``; a dense layer is a 1x1 "image" ``(1, 1, C)``. A stream carries one
pixel's channels ``simd`` (or ``pe``) lanes at a time, channels in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Requant:
    """``code = base[c] + direction[c] * #(acc >= T[c, k])`` (fpga_flow.requant.Thresholds)."""

    T: np.ndarray  # (C, L) int64, sorted per row; unused entries hold a value above every accumulator
    base: np.ndarray  # (C,) int64
    direction: np.ndarray  # (C,) int64, +1 / -1

    def apply(self, acc: np.ndarray) -> np.ndarray:
        acc = np.asarray(acc, dtype=np.int64)
        count = (acc[..., None] >= self.T).sum(-1)
        return self.base + self.direction * count


@dataclass(frozen=True)
class Mac:
    """Conv (``kind='conv'``), depthwise conv (``'depthwise'``) or dense (``'dense'``) + requantization.

    weights: conv (OC, K, K, IC), depthwise (C, K, K), dense (OC, IC); all int64 codes.
    ``requant`` None: the final layer, whose output is the accumulator itself (plus ``bias``).
    """

    kind: str
    in_shape: tuple[int, int, int]  # (H, W, C)
    weights: np.ndarray
    in_bits: int
    in_signed: bool
    bias: np.ndarray | None = None  # (OC,) int64, added to the accumulator
    requant: Requant | None = None
    out_bits: int = 0  # output code bits (requant) — for a final layer: the accumulator bits
    out_signed: bool = False
    k: int = 1
    stride: int = 1
    pad: int = 0
    pe: int = 1  # output channels computed in parallel
    simd: int = 1  # input values consumed in parallel
    lut_products: bool = False  # the MVU's products as shift-and-add rows (LUTs on any family, never a DSP block)

    @property
    def out_channels(self) -> int:
        return int(self.weights.shape[0])

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """(OH, OW, OC); a dense layer's output is one pixel whatever its input's shape."""
        if self.kind == "dense":
            return (1, 1, self.out_channels)
        H, W, _ = self.in_shape
        oh = (H + 2 * self.pad - self.k) // self.stride + 1
        ow = (W + 2 * self.pad - self.k) // self.stride + 1
        return (oh, ow, self.out_channels)


@dataclass(frozen=True)
class MaxPool:
    in_shape: tuple[int, int, int]
    k: int
    bits: int
    signed: bool
    stride: int = 0  # 0: = k

    @property
    def out_shape(self) -> tuple[int, int, int]:
        H, W, C = self.in_shape
        s = self.stride or self.k
        return ((H - self.k) // s + 1, (W - self.k) // s + 1, C)


def _windows(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    """(N, H, W, C) -> (N, OH, OW, K, K, C), zero padded."""
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    N, H, W, C = x.shape
    oh, ow = (H - k) // stride + 1, (W - k) // stride + 1
    out = np.empty((N, oh, ow, k, k, C), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            out[:, :, :, i, j, :] = x[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
    return out


def accumulate(layer: Mac, x: np.ndarray) -> np.ndarray:
    """Exact int64 accumulators (N, OH, OW, OC) of one layer on codes (N, H, W, C)."""
    x = np.asarray(x, dtype=np.int64)
    w = np.asarray(layer.weights, dtype=np.int64)
    if layer.kind == "dense":
        acc = x.reshape(len(x), -1) @ w.T
        acc = acc.reshape(len(x), 1, 1, -1)
    elif layer.kind == "conv":
        win = _windows(x, layer.k, layer.stride, layer.pad)
        acc = np.einsum("nhwijc,oijc->nhwo", win, w)
    elif layer.kind == "depthwise":
        win = _windows(x, layer.k, layer.stride, layer.pad)
        acc = np.einsum("nhwijc,cij->nhwc", win, w)
    else:
        raise ValueError(f"unknown layer kind {layer.kind!r}")
    if layer.bias is not None:
        acc = acc + np.asarray(layer.bias, dtype=np.int64)
    return acc


def forward(layer, x: np.ndarray) -> np.ndarray:
    """One layer's exact output codes (N, OH, OW, C)."""
    if isinstance(layer, MaxPool):
        s = layer.stride or layer.k
        return _windows(np.asarray(x, dtype=np.int64), layer.k, s, 0).max(axis=(3, 4))
    acc = accumulate(layer, x)
    return acc if layer.requant is None else layer.requant.apply(acc)


def reference(layers: list, x: np.ndarray) -> np.ndarray:
    """The whole design's exact output codes on input codes ``x`` (N, H, W, C)."""
    for layer in layers:
        x = forward(layer, x)
    return x
