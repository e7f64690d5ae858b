"""Exact fixed-point types for accumulators, derived from the quantized operands.

A layer ``y = W x + b`` on a power-of-two grid is integer arithmetic on codes:
x = cx * 2^-fx, w = cw * 2^-fw, b = cb * 2^-(fx+fw). The accumulator holds
every reachable sum exactly when its fractional bits are fx+fw and its width
covers the extreme sums for the input range, computed per output from the
actual weights (not a worst-case bound on the bit widths).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FlowError


@dataclass(frozen=True)
class Fixed:
    """``ap_fixed<width, integer>`` (or ``ap_ufixed`` when unsigned); frac = width - integer."""

    width: int
    integer: int
    signed: bool = True

    @property
    def frac(self) -> int:
        return self.width - self.integer

    def code_range(self) -> tuple[int, int]:
        if self.signed:
            return -(1 << (self.width - 1)), (1 << (self.width - 1)) - 1
        return 0, (1 << self.width) - 1

    def __str__(self) -> str:
        return f"{'' if self.signed else 'u'}fixed<{self.width},{self.integer}>"


def to_codes(values: np.ndarray, frac: int, what: str) -> np.ndarray:
    """Integer codes of ``values`` on the grid 2^-frac; refuse values off the grid."""
    scaled = np.asarray(values, dtype=np.float64) * np.ldexp(1.0, frac)
    codes = np.round(scaled)
    if not np.array_equal(codes, scaled):
        raise FlowError(f"{what}: values are not on the 2^-{frac} grid of their declared type")
    return codes.astype(np.int64)


def signed_width(lo: int, hi: int) -> int:
    """Smallest two's-complement width holding every integer in [lo, hi]."""
    w = 1
    while not (-(1 << (w - 1)) <= lo and hi <= (1 << (w - 1)) - 1):
        w += 1
    return w


def accumulator(x: Fixed, w_codes: np.ndarray, w_frac: int, b_codes: np.ndarray | None,
                frac: int | None = None) -> Fixed:
    """The exact accumulator type of ``sum_i w[i, j] * x[i] + b[j]``.

    ``w_codes`` has shape (n_in, n_out) (any leading axes are folded into
    n_in); ``b_codes`` are on the accumulator grid 2^-frac, by default
    2^-(x.frac + w_frac), the products' grid; a finer grid (a bias with more
    fractional bits) scales the products' codes up to it.
    """
    frac = x.frac + w_frac if frac is None else frac
    if frac < x.frac + w_frac:
        raise FlowError(f"accumulator grid 2^-{frac} is coarser than the products' 2^-{x.frac + w_frac}")
    w = np.asarray(w_codes, dtype=np.int64).reshape(-1, np.shape(w_codes)[-1]) << (frac - x.frac - w_frac)
    xlo, xhi = x.code_range()
    hi = np.maximum(w * xhi, w * xlo).sum(axis=0)
    lo = np.minimum(w * xhi, w * xlo).sum(axis=0)
    if b_codes is not None:
        b = np.asarray(b_codes, dtype=np.int64).reshape(-1)
        hi, lo = hi + b, lo + b
    width = signed_width(int(lo.min(initial=0)), int(hi.max(initial=0)))
    return Fixed(width, width - frac, True)
