"""Exact requantization of float-scaled layers: integer thresholds on the accumulator.

With Brevitas' float scales (``Int8WeightPerTensorFloat``, ``Uint8ActPerTensorFloat``, BatchNorm ...)
the step from a layer's integer accumulator ``acc`` to the next activation code is float32
arithmetic. The *integer-accumulator reference* defines it, per output channel ``c``, as

    v    = fl32(fl32(acc * s_c) + b_c)          s_c = fl32(s_x * s_w[c]), b_c the float bias (if any)
    code = Quant(ReLU(BatchNorm(v)))            torch's own float32 functions, as Brevitas' modules run them

(:meth:`Chain.codes`). Per channel this is a monotone step function of ``acc`` (increasing or, with a
negative BatchNorm gamma, decreasing), so hardware computes it as ``base + dir * #(acc >= T_k)``
with integer thresholds ``T`` found by bisection on :meth:`Chain.codes` itself (:func:`thresholds`),
then checked against it (exhaustively where the accumulator range is small enough).

Brevitas' own float forward sums rounded float products instead of an exact integer, so where a
threshold's float32 margin is below that summation's error bound it can, rarely, land one level
apart: :func:`fragile` counts those thresholds so the report can name them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .errors import FlowError

U32 = 2.0 ** -24  # float32 unit roundoff
EXHAUSTIVE_LIMIT = 1 << 25  # accumulator values x channels checked one by one; beyond it, a sample
ROUNDING = {"ROUND": torch.round, "FLOOR": torch.floor, "CEIL": torch.ceil,
            "ROUND_TO_ZERO": torch.trunc}


@dataclass(frozen=True)
class OutQuant:
    """A QONNX Quant node's parameters (Brevitas' IntQuant: ``clamp(round(x / scale + zeropt))``)."""

    scale: float
    zeropt: float
    bits: int
    signed: bool
    narrow: bool
    rounding_mode: str = "ROUND"
    bipolar: bool = False  # QONNX BipolarQuant (Brevitas 1-bit BINARY): codes -1 / +1, held as 2-bit signed

    @classmethod
    def bipolar_codes(cls, scale: float) -> "OutQuant":
        """A BipolarQuant: ``code = +1 if v >= 0 else -1`` (QONNX ``binary_quant`` and Brevitas' ``binary_sign``
        both test the value itself, before any scaling; a clamp to [-scale, scale] never changes the sign).
        Its codes fit a 2-bit signed narrow integer, so the hardware types need nothing new."""
        return cls(scale=scale, zeropt=0.0, bits=2, signed=True, narrow=True, bipolar=True)

    def code_range(self) -> tuple[int, int]:
        if self.signed:
            lo = -(1 << (self.bits - 1)) + (1 if self.narrow else 0)
            return lo, (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1 - (1 if self.narrow else 0)

    def codes(self, v: torch.Tensor) -> torch.Tensor:
        """float32 values -> integer codes (as float32 tensors), Brevitas' / QONNX's op order."""
        if self.bipolar:
            return torch.where(v >= 0, torch.ones_like(v), -torch.ones_like(v))
        if self.rounding_mode not in ROUNDING:
            raise FlowError(f"rounding mode {self.rounding_mode} is not supported (supported: {', '.join(ROUNDING)})")
        y = v / torch.tensor(self.scale, dtype=torch.float32)
        if self.zeropt:
            y = y + torch.tensor(self.zeropt, dtype=torch.float32)
        lo, hi = self.code_range()
        return torch.clamp(ROUNDING[self.rounding_mode](y), lo, hi)


@dataclass
class Chain:
    """What lies between one layer's integer accumulator and its output codes (per output channel)."""

    name: str
    scale: np.ndarray  # (C,) float32: s_x * s_w[c]
    out: OutQuant
    bias: np.ndarray | None = None  # (C,) float32
    bn: dict | None = None  # mean, var, gamma, beta: (C,) float32; eps: float
    relu: bool = False
    acc_lo: np.ndarray = field(default=None)  # (C,) int64: reachable accumulator range
    acc_hi: np.ndarray = field(default=None)
    err: np.ndarray | None = None  # (C,) bound on |float32 forward - exact| before the bias (see fragile())

    @property
    def channels(self) -> int:
        return int(self.scale.shape[0])

    def values(self, pre: np.ndarray | torch.Tensor) -> torch.Tensor:
        """float32 chain on pre-bias values ``pre`` (M, C) given in float64: the value Brevitas' conv
        would hold, rounded once to float32, then the bias, BatchNorm, ReLU."""
        v = torch.as_tensor(np.asarray(pre, dtype=np.float64)).to(torch.float32)
        if self.bias is not None:
            v = v + torch.from_numpy(self.bias.astype(np.float32))
        if self.bn is not None:
            p = {k: torch.from_numpy(np.array(self.bn[k], dtype=np.float32)) for k in ("mean", "var", "gamma", "beta")}
            v = F.batch_norm(v, p["mean"], p["var"], p["gamma"], p["beta"], False, 0.0, float(self.bn["eps"]))
        if self.relu:
            v = torch.relu(v)
        return v

    def codes(self, acc: np.ndarray) -> np.ndarray:
        """The integer-accumulator reference: (M, C) int64 accumulators -> (M, C) int64 codes."""
        acc = np.asarray(acc, dtype=np.int64)
        pre = acc.astype(np.float64) * self.scale.astype(np.float64)  # exact: |acc| < 2^29, 24-bit scale
        return self.out.codes(self.values(pre)).numpy().astype(np.int64)


@dataclass
class Thresholds:
    """``code = base + dir * #(acc >= T[c, k])``; unused entries hold ``sentinel`` (above every acc)."""

    T: np.ndarray  # (C, L) int64, sorted per row
    base: np.ndarray  # (C,) int64
    direction: np.ndarray  # (C,) int64, +1 or -1
    sentinel: int
    checked: str  # "exhaustive" or "sampled (n values)"

    def apply(self, acc: np.ndarray) -> np.ndarray:
        acc = np.asarray(acc, dtype=np.int64)
        count = np.zeros(acc.shape, dtype=np.int64)
        for k in range(self.T.shape[1]):
            count += acc >= self.T[:, k]
        return self.base + self.direction * count


def thresholds(chain: Chain, rng_seed: int = 0) -> Thresholds:
    """Thresholds of ``chain.codes`` over the reachable range, by bisection; then checked against it."""
    lo, hi = chain.acc_lo.astype(np.int64), chain.acc_hi.astype(np.int64)
    C = chain.channels
    f_lo = chain.codes(lo[None, :])[0]
    f_hi = chain.codes(hi[None, :])[0]
    direction = np.where(f_hi >= f_lo, 1, -1).astype(np.int64)
    steps = np.abs(f_hi - f_lo)
    L = max(int(steps.max(initial=0)), 1)
    sentinel = int(hi.max()) + 1
    k = np.arange(1, L + 1, dtype=np.int64)[:, None]  # (L, 1)
    target = f_lo[None, :] + direction[None, :] * k  # (L, C): the code each threshold reaches
    active = k <= steps[None, :]
    a = np.broadcast_to(lo, (L, C)).copy()  # bisection: smallest acc in [lo, hi] with code past target
    b = np.broadcast_to(hi, (L, C)).copy()
    while np.any(a < b):
        mid = (a + b) // 2
        past = (chain.codes(mid) - target) * direction[None, :] >= 0
        b = np.where(past, mid, b)
        a = np.where(past, a, mid + 1)
    T = np.where(active, a, sentinel).T.copy()  # (C, L)
    th = Thresholds(T=T, base=f_lo, direction=direction, sentinel=sentinel, checked="")
    th.checked = _check(chain, th, rng_seed)
    return th


def _check(chain: Chain, th: Thresholds, seed: int) -> str:
    """The thresholds reproduce ``chain.codes`` on every reachable accumulator (or a large sample plus
    both sides of every threshold when the range is too large); any difference means the function is
    not a monotone step function there, and the layer is refused."""
    lo, hi = chain.acc_lo.astype(np.int64), chain.acc_hi.astype(np.int64)
    span = int((hi - lo).max()) + 1
    if span * chain.channels <= EXHAUSTIVE_LIMIT:
        for start in range(0, span, max(1, (1 << 20) // chain.channels)):
            acc = np.minimum(lo[None, :] + np.arange(start, min(span, start + (1 << 20) // chain.channels))[:, None],
                             hi[None, :])
            _compare(chain, th, acc)
        return "exhaustive"
    rng = np.random.default_rng(seed)
    n = EXHAUSTIVE_LIMIT // chain.channels
    acc = lo[None, :] + (rng.random((n, chain.channels)) * (hi - lo + 1)[None, :]).astype(np.int64)
    near = np.concatenate([np.minimum(np.maximum(th.T.T + d, lo[None, :]), hi[None, :]) for d in (-2, -1, 0, 1)])
    for part in np.array_split(np.concatenate([acc, near]), 32):
        _compare(chain, th, part)
    return f"sampled ({n} random values per channel and both sides of every threshold)"


def _compare(chain: Chain, th: Thresholds, acc: np.ndarray) -> None:
    want, got = chain.codes(acc), th.apply(acc)
    bad = np.argwhere(want != got)
    if len(bad):
        i, c = bad[0]
        raise FlowError(f"{chain.name}: the requantization is not a monotone step function of the accumulator "
                        f"(channel {c}, accumulator {acc[i, c]}: code {want[i, c]}, thresholds give {got[i, c]}); "
                        "it cannot be made exact with thresholds")


def error_bound(w_codes: np.ndarray, x_max_abs: int, scale: np.ndarray, fan_in: int) -> np.ndarray:
    """(C,) bound on |Brevitas' float32 conv/linear output - exact acc * s_c|, before its bias.

    Products of dequantized values (each rounded once: fl32(code * scale)) summed in float32 in any
    order: |error| <= gamma_{K+3} * s_c * sum_i |w_ic| * max|x|, gamma_n = n u / (1 - n u) (Higham,
    *Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. 4.4). Winograd or other transformed
    convolutions are not covered by it.
    """
    n = fan_in + 3
    gamma = n * U32 / (1 - n * U32)
    w = np.abs(np.asarray(w_codes, dtype=np.float64)).reshape(-1, np.shape(w_codes)[-1]).sum(axis=0)
    return gamma * np.asarray(scale, dtype=np.float64) * w * x_max_abs


def fragile(chain: Chain, th: Thresholds) -> list[dict]:
    """Thresholds whose float32 margin is below ``chain.err``: moving the exact value on either side of
    the threshold by the float summation's error bound changes the code. Brevitas' float forward may
    disagree with the exact reference (by one level) only on accumulators at these thresholds."""
    if chain.err is None:
        return []
    C, L = th.T.shape
    c_idx, k_idx = np.nonzero(th.T != th.sentinel)
    if len(c_idx) == 0:
        return []
    t = th.T[c_idx, k_idx]
    s = chain.scale.astype(np.float64)[c_idx]
    e = chain.err[c_idx]
    out = []
    cols = np.arange(len(c_idx))

    def codes_at(pre: np.ndarray) -> np.ndarray:  # one candidate per (c, k) pair, in its own channel
        full = np.zeros((len(pre), C))
        full[cols, c_idx] = pre
        return chain.out.codes(chain.values(full)).numpy()[cols, c_idx]

    below, at = (t - 1) * s, t * s
    flip = (codes_at(below + e) != codes_at(below)) | (codes_at(at - e) != codes_at(at))
    for j in np.nonzero(flip)[0]:
        out.append({"channel": int(c_idx[j]), "index": int(k_idx[j]), "threshold": int(t[j]),
                    "error_bound": float(e[j])})
    return out
