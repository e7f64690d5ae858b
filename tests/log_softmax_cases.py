"""Input codes that stress a LogSoftmax kernel: shared by the numpy-model (unit) and kernel (csim) tests."""

from __future__ import annotations

import numpy as np

from fpga_flow.log_softmax import Spec


def edge_cases(spec: Spec, n_random: int = 200, seed: int = 0) -> tuple[np.ndarray, dict[str, slice]]:
    """(codes (rows, n), {case name: rows}): all-equal rows (at the type's ends, zero, mid), the largest
    spreads (one at the top end, the rest at the bottom, and the reverse), a single dominant logit, ties for
    the maximum, tiny spreads just below the top, near-underflow spreads, and uniform random rows."""
    rng = np.random.default_rng(seed)
    n = spec.n
    lo, hi = spec.in_type.code_range()
    cases: dict[str, np.ndarray] = {}
    cases["all_equal"] = np.array([[v] * n for v in (lo, hi, 0 if lo <= 0 else lo, (lo + hi) // 2, lo + 1)])
    big = [[hi if j == k else lo for j in range(n)] for k in range(n)]
    small = [[lo if j == k else hi for j in range(n)] for k in range(n)]
    cases["one_top"] = np.array(big)  # the largest spread the type allows
    cases["one_bottom"] = np.array(small)
    step = max(1, 1 << max(0, spec.in_frac))  # about 1.0 in codes
    dom = np.full((n, n), max(lo, hi - 12 * step))
    dom[np.arange(n), np.arange(n)] = hi
    cases["single_dominant"] = dom
    ties = rng.integers(lo, hi + 1, size=(20, n))
    for r in ties:
        k = rng.choice(n, size=min(n, 2), replace=False)
        r[k] = r.max()
    cases["tied_max"] = ties
    cases["tiny_spread"] = np.clip(hi - rng.integers(0, 4, size=(20, n)), lo, hi)
    # spreads around where exp underflows the exp table (the table's end, in input codes)
    edge = min(hi - lo, len(spec.exp_table) << spec.idx_shift)
    cases["near_underflow"] = np.clip(hi - rng.integers(max(0, edge - 3 * step), edge + 3 * step + 1, size=(40, n)),
                                      lo, hi)
    cases["near_underflow"][:, 0] = hi
    cases["random"] = rng.integers(lo, hi + 1, size=(n_random, n))
    rows, where, i = [], {}, 0
    for name, c in cases.items():
        c = np.asarray(c, dtype=np.int64).reshape(-1, n)
        rows.append(c)
        where[name] = slice(i, i + len(c))
        i += len(c)
    return np.concatenate(rows), where
