import itertools

import numpy as np
import pytest

from fpga_flow import FlowError
from fpga_flow.precision import Fixed, accumulator, signed_width, to_codes

pytestmark = pytest.mark.unit


def test_signed_width_edges():
    assert signed_width(0, 0) == 1
    assert signed_width(-1, 0) == 1
    assert signed_width(0, 1) == 2
    assert signed_width(-128, 127) == 8
    assert signed_width(-129, 127) == 9
    assert signed_width(-128, 128) == 9


def test_hand_computed_accumulator():
    # x: ufixed<4,1> -> codes 0..15, frac 3; w codes [[3, -2], [-7, 1]] frac 2; bias codes [5, -100] at frac 5
    x = Fixed(4, 1, signed=False)
    acc = accumulator(x, np.array([[3, -2], [-7, 1]]), 2, np.array([5, -100]))
    # output 0: max 3*15 + 0 + 5 = 50, min 0 + (-7*15) + 5 = -100 ; output 1: max 15 - 100 = -85, min -30-100 = -130
    assert signed_width(-130, 50) == 9
    assert acc == Fixed(9, 9 - 5, True)


def test_signed_input_uses_both_extremes():
    x = Fixed(3, 3, signed=True)  # codes -4..3
    acc = accumulator(x, np.array([[1], [1]]), 0, None)  # sums -8..6
    assert acc.width == 4 and acc.frac == 0


def test_accumulator_is_exact_by_brute_force():
    """Every reachable sum fits; one bit fewer would not (the type is tight)."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        n_in, n_out = 3, 2
        x = Fixed(int(rng.integers(2, 4)), 1, signed=bool(rng.integers(0, 2)))
        w = rng.integers(-7, 8, size=(n_in, n_out))
        b = rng.integers(-20, 21, size=n_out)
        acc = accumulator(x, w, 3, b)
        lo, hi = x.code_range()
        sums = [np.array(xs) @ w + b for xs in itertools.product(range(lo, hi + 1), repeat=n_in)]
        smin, smax = int(np.min(sums)), int(np.max(sums))
        alo, ahi = acc.code_range()
        assert alo <= smin and smax <= ahi
        assert signed_width(smin, smax) == acc.width


def test_values_off_the_grid_are_refused():
    assert to_codes(np.array([0.25, -0.5]), 2, "w").tolist() == [1, -2]
    with pytest.raises(FlowError, match="not on the 2\\^-2 grid"):
        to_codes(np.array([0.3]), 2, "w")
