"""Fixed-point LogSoftmax: the sizing rule, the tables and a numpy model of the exact integer arithmetic.

The HLS kernel (``hw_templates/hls4ml/nnet_fpga_flow_log_softmax.h``) and :func:`forward_codes` compute
the same thing on integer codes; the tables below are emitted into the HLS project by
``hw_templates/hls4ml/fpga_flow_log_softmax_config.h.j2``, so both read the same numbers by construction.

For logits x_j with codes c_j on the grid 2^-F (F = the input type's fractional bits), n classes:

1. m = max_j c_j; u_j = m - c_j >= 0 (exact: d_j = x_j - max x = -u_j 2^-F).
2. i_j = u_j rounded half up to T = min(F, MAX_INDEX_FRAC) fractional bits (i_j = u_j when F <= T);
   e_j = EXP[i_j] = round(exp(-i_j 2^-T) 2^E), and 0 for i_j >= len(EXP) (there it rounds to 0).
3. s = sum_j e_j, exact in E + floor(log2 n) + 1 bits; s >= 2^E (the maximum contributes exactly 2^E).
4. k = position of s's leading one (E <= k <= E + floor(log2 n)); r = round((s - 2^k) 2^(M-k)) in [0, 2^M];
   lse = LN2K[k - E] + LN[r], with LN2K[j] = round(j ln2 2^L) and LN[r] = round(ln(1 + r 2^-M) 2^L).
5. y_j = -u_j 2^(L-F) - lse exactly on the grid 2^-L, rounded half up to the output grid 2^-F_out.

Every rounding above is to nearest, so |y_j - log_softmax(x)_j| <= :meth:`Spec.bound` (derivation there).
y_j is a non-decreasing function of x_j and distinct inputs (at least 2^-F apart) stay distinct on the finer
output grid, and the output type holds the whole range (no saturation): the argmax (first index among
ties) of y equals that of the logits, always.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import FlowError
from .precision import Fixed, signed_width

GUARD_BITS = 4  # output fractional bits beyond the input's (at least this many)
MAX_INDEX_FRAC = 8  # the exp table is indexed by max - x with at most this many fractional bits
MAX_TABLE = 1 << 14  # sanity limit on table entries


def _round_half_up(v: float, what: str) -> int:
    """floor(v + 0.5), refusing a value so close to a rounding boundary (a few ulps: exp, log1p and the
    product are each correctly rounded or within an ulp) that float64 could have put it on the wrong side."""
    frac = v - math.floor(v)
    if abs(frac - 0.5) <= 8 * math.ulp(max(abs(v), 1.0)):
        raise FlowError(f"LogSoftmax table {what}: value {v!r} is too close to a rounding boundary")
    return math.floor(v + 0.5)


@dataclass(frozen=True)
class Spec:
    """Every constant of one LogSoftmax kernel, derived from (n, input type) by :func:`spec_for`."""

    n: int
    in_type: Fixed
    idx_shift: int  # F - T: bits of u dropped (rounded) to index the exp table
    exp_frac: int  # E: fractional bits of the exp table entries (1.0 = 2^E)
    mant_bits: int  # M: bits of the mantissa after the leading one that index the log table
    log_frac: int  # L: fractional bits of the log tables and of y before output rounding
    out_type: Fixed
    exp_table: tuple[int, ...] = field(repr=False)
    ln_table: tuple[int, ...] = field(repr=False)
    ln2k_table: tuple[int, ...] = field(repr=False)

    @property
    def in_frac(self) -> int:
        return self.in_type.frac

    @property
    def out_frac(self) -> int:
        return self.out_type.frac

    @property
    def sum_width(self) -> int:
        """Bits of s = sum e_j <= n 2^E."""
        return (self.n << self.exp_frac).bit_length()

    @property
    def y_width(self) -> int:
        """Signed bits of y on the 2^-L grid before output rounding."""
        lo, hi = self.in_type.code_range()
        y_min = -((hi - lo) << (self.log_frac - self.in_frac)) - self.ln2k_table[-1] - self.ln_table[-1]
        return signed_width(y_min, (hi - lo) << (self.log_frac - self.in_frac))  # -u << .. and u << .. both fit

    def bound_terms(self) -> dict[str, float]:
        """Worst-case |y - log_softmax(x)|, term by term (nats).

        - index (only when F > T): d_j is rounded to i_j 2^-T, within 2^-(T+1); ln sum exp moves by at most
          the largest move of its arguments;
        - exp: each e_j 2^-E is within 2^-(E+1) of exp(-i_j 2^-T) (clamped entries too: there the value is
          < 2^-(E+1)), so the sum is within delta = n 2^-(E+1) of the exact one, which is >= 1 (the maximum
          has i = 0): |ln| error <= -ln(1 - delta);
        - mantissa: r 2^-M is within 2^-(M+1) of the mantissa fraction f, and d ln(1+f)/df <= 1;
        - log tables: LN2K and LN are each rounded to 2^-L: 2 * 2^-(L+1);
        - output: y is rounded half up from the 2^-L grid to the 2^-F_out grid: 2^-(F_out+1).
        """
        delta = self.n * 2.0 ** -(self.exp_frac + 1)
        index = 2.0 ** -(self.in_frac - self.idx_shift + 1) if self.idx_shift else 0.0
        return {"index": index, "exp": -math.log1p(-delta), "mantissa": 2.0 ** -(self.mant_bits + 1),
                "log_tables": 2.0 ** -self.log_frac, "output": 2.0 ** -(self.out_frac + 1)}

    def bound(self) -> float:
        return float(sum(self.bound_terms().values()))

    def summary(self) -> dict:
        """What the report states about the kernel."""
        return {"n": self.n, "input_type": str(self.in_type), "output_type": str(self.out_type),
                "exp_table": {"entries": len(self.exp_table), "frac_bits": self.exp_frac,
                              "index_frac_bits": self.in_frac - self.idx_shift,
                              "width": max(self.exp_table).bit_length()},
                "log_table": {"entries": len(self.ln_table), "index_bits": self.mant_bits,
                              "frac_bits": self.log_frac, "width": max(self.ln_table).bit_length()},
                "ln2k_table": {"entries": len(self.ln2k_table)}, "sum_width": self.sum_width,
                "bound": self.bound(), "bound_terms": self.bound_terms()}


def spec_for(n: int, in_type: Fixed) -> Spec:
    """Size the kernel from the logits' exact type.

    F_out = max(F, 0) + GUARD_BITS (>= F: distinct logits stay distinct, so the argmax is kept);
    with G = min(F_out, MAX_INDEX_FRAC + GUARD_BITS): E = G + 2 + ceil(log2 n) makes the exp term
    <= ~2^-(G+3); M = G + 1 and L = F_out + 3 make the mantissa and table terms 2^-(G+2) and 2^-(F_out+2).
    For F <= MAX_INDEX_FRAC the whole bound is just under 2^-F_out; beyond, the index term 2^-(T+1)
    dominates and the tables stay small. The output's integer bits cover the most negative result.
    """
    if n < 1:
        raise FlowError("LogSoftmax over an empty axis")
    f_in = in_type.frac
    f_out = max(f_in, 0) + GUARD_BITS
    t = min(f_in, MAX_INDEX_FRAC)
    g = min(f_out, MAX_INDEX_FRAC + GUARD_BITS)
    e = g + 2 + max(0, (n - 1).bit_length())
    m = g + 1
    big_l = f_out + 3
    lo, hi = in_type.code_range()
    exp_table = []
    for i in range(_index(hi - lo, f_in - t) + 1):
        v = _round_half_up(math.ldexp(math.exp(-math.ldexp(i, -t)), e), f"exp[{i}]")
        if v == 0:
            break
        exp_table.append(v)
    if len(exp_table) > MAX_TABLE or m > 14:
        raise FlowError(f"LogSoftmax: tables for {in_type} would exceed their limits (a sizing bug)")
    ln_table = [_round_half_up(math.ldexp(math.log1p(math.ldexp(r, -m)), big_l), f"ln[{r}]")
                for r in range((1 << m) + 1)]
    ln2k_table = [_round_half_up(math.ldexp(j * math.log(2.0), big_l), f"ln2k[{j}]")
                  for j in range(((n << e).bit_length() - 1) - e + 1)]
    y_min_l = -((hi - lo) << (big_l - f_in)) - ln2k_table[-1] - ln_table[-1]
    y_min = (y_min_l + (1 << (big_l - f_out - 1))) >> (big_l - f_out)
    w_out = signed_width(y_min, 0)
    return Spec(n, in_type, f_in - t, e, m, big_l, Fixed(w_out, w_out - f_out, True), tuple(exp_table),
                tuple(ln_table), tuple(ln2k_table))


def _index(u, shift: int):
    """u rounded half up by ``shift`` bits (works on ints and int64 arrays)."""
    return (u + (1 << (shift - 1))) >> shift if shift > 0 else u


def forward_codes(spec: Spec, codes: np.ndarray) -> np.ndarray:
    """The kernel's integer arithmetic on input codes (..., n) -> output codes (..., n), int64."""
    c = np.asarray(codes, dtype=np.int64)
    if c.shape[-1] != spec.n:
        raise FlowError(f"LogSoftmax model: last axis has {c.shape[-1]} values, the kernel takes {spec.n}")
    lo, hi = spec.in_type.code_range()
    if c.size and (c.min() < lo or c.max() > hi):
        raise FlowError(f"LogSoftmax model: input codes outside {spec.in_type}")
    u = c.max(axis=-1, keepdims=True) - c
    idx = _index(u, spec.idx_shift)
    table = np.asarray(spec.exp_table, dtype=np.int64)
    e = np.where(idx < len(table), table[np.minimum(idx, len(table) - 1)], 0)
    s = e.sum(axis=-1, keepdims=True)
    k = np.floor(np.log2(s.astype(np.float64))).astype(np.int64)  # exact for s < 2^52
    k += (s >> k) >= 2  # guard against log2 rounding up just below a power of two
    k -= (s >> k) == 0
    sh = k - spec.mant_bits
    r = (s - (np.int64(1) << k) + (np.int64(1) << (sh - 1))) >> sh
    lse = np.asarray(spec.ln2k_table, dtype=np.int64)[k - spec.exp_frac] + np.asarray(spec.ln_table, dtype=np.int64)[r]
    y_l = -(u << (spec.log_frac - spec.in_frac)) - lse
    down = spec.log_frac - spec.out_frac
    return (y_l + (np.int64(1) << (down - 1))) >> down


def to_codes(x: np.ndarray, frac: int) -> np.ndarray:
    """Exact integer codes of values on the 2^-frac grid (refuses anything off the grid)."""
    scaled = np.asarray(x, dtype=np.float64) * np.ldexp(1.0, frac)
    codes = np.round(scaled)
    if not np.array_equal(codes, scaled):
        raise FlowError(f"LogSoftmax model: inputs are not on the 2^-{frac} grid of the kernel's input type")
    return codes.astype(np.int64)


def forward(spec: Spec, x: np.ndarray) -> np.ndarray:
    """Float in (exact logits) -> float out (exact output values, float64)."""
    return np.ldexp(forward_codes(spec, to_codes(x, spec.in_frac)).astype(np.float64), -spec.out_frac)


def reference(x: np.ndarray) -> np.ndarray:
    """float64 ``torch.log_softmax`` over the last axis: the float model the bound is stated against."""
    import torch
    return torch.log_softmax(torch.from_numpy(np.asarray(x, dtype=np.float64)), dim=-1).numpy()


def argmax_ties(x: np.ndarray) -> int:
    """Rows whose maximum occurs more than once (argmax is then the first index, in numpy and in torch)."""
    x = np.asarray(x).reshape(len(x), -1)
    return int(((x == x.max(axis=1, keepdims=True)).sum(axis=1) > 1).sum())


def info(spec: Spec) -> dict:
    """JSON-able description; :func:`spec_from_info` rebuilds the same Spec from it."""
    return {"n": spec.n, "in_width": spec.in_type.width, "in_int": spec.in_type.integer,
            "in_signed": spec.in_type.signed, **spec.summary()}


def spec_from_info(plan_info: dict) -> Spec | None:
    """The Spec of the design's LogSoftmax layer (from plan_info.json), or None if the design has none."""
    rows = [r["log_softmax"] for r in plan_info.get("layers") or [] if r.get("log_softmax")]
    if not rows:
        return None
    if len(rows) > 1:
        raise FlowError("the design has more than one LogSoftmax layer; only a final one is supported")
    r = rows[0]
    spec = spec_for(r["n"], Fixed(r["in_width"], r["in_int"], r["in_signed"]))
    if str(spec.out_type) != r["output_type"]:
        raise FlowError(f"plan_info.json's LogSoftmax output type {r['output_type']} is not what this version "
                        f"derives ({spec.out_type}); rebuild the project")
    return spec


F32_ULPS = 8  # stated slack for torch's own float32 rounding when comparing with Brevitas' float32 output


def check(spec: Spec, hw: np.ndarray, logits: np.ndarray, brevitas_f32: np.ndarray | None = None) -> dict:
    """The hardware's log_softmax against float torch.log_softmax, and its argmax against the logits'.

    ``hw``: the csim outputs; ``logits``: the exact golden logits; ``brevitas_f32``: the float32 output of the
    Brevitas module (its own log_softmax), when there is one.
    """
    hw = np.asarray(hw, dtype=np.float64).reshape(len(logits), -1)
    logits = np.asarray(logits, dtype=np.float64).reshape(len(logits), -1)
    ref = reference(logits)
    err = np.abs(hw - ref).max(axis=1) if len(hw) else np.zeros(0)
    bound = spec.bound()
    out = {"output_type": str(spec.out_type), "bound": bound, "bound_terms": spec.bound_terms(),
           "n_images": len(hw), "max_abs_error_vs_float64": float(err.max(initial=0.0)),
           "images_within_bound": int((err <= bound).sum()),
           "first_outside_bound": [int(i) for i in np.flatnonzero(err > bound)[:10]],
           "argmax_agreement": int((hw.argmax(axis=1) == logits.argmax(axis=1)).sum()),
           "first_argmax_disagreements": [int(i) for i in np.flatnonzero(hw.argmax(axis=1) != logits.argmax(axis=1))[:10]],
           "argmax_ties_in_logits": argmax_ties(logits), "kernel": info(spec)}
    if brevitas_f32 is not None:
        b = np.asarray(brevitas_f32, dtype=np.float64).reshape(hw.shape)
        e32 = np.abs(hw - b).max(axis=1) if len(hw) else np.zeros(0)
        slack = F32_ULPS * float(np.spacing(np.float32(np.abs(b).max(initial=1.0))))
        out.update(max_abs_error_vs_brevitas_float32=float(e32.max(initial=0.0)), float32_slack=slack,
                   images_within_bound_float32=int((e32 <= bound + slack).sum()),
                   first_outside_bound_float32=[int(i) for i in np.flatnonzero(e32 > bound + slack)[:10]])
    return out


def failed_checks(result: dict) -> list:
    """The checks of :func:`check` that failed, as failing comparisons (they stop the build); [] when all hold."""
    from .compare import Comparison
    n, out = result["n_images"], []
    if result["images_within_bound"] != n:
        out.append(Comparison(f"LogSoftmax csim within {result['bound']:.6g} of float64 torch.log_softmax", n,
                              result["images_within_bound"], result["first_outside_bound"],
                              result["max_abs_error_vs_float64"]))
    if "images_within_bound_float32" in result and result["images_within_bound_float32"] != n:
        out.append(Comparison(f"LogSoftmax csim within {result['bound']:.6g} + {result['float32_slack']:.3g} "
                              "of Brevitas' float32 log_softmax", n, result["images_within_bound_float32"],
                              result["first_outside_bound_float32"],
                              result["max_abs_error_vs_brevitas_float32"]))
    if result["argmax_agreement"] != n:
        out.append(Comparison("LogSoftmax csim argmax vs the logits' argmax", n, result["argmax_agreement"],
                              result["first_argmax_disagreements"]))
    return out
