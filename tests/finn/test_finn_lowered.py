"""The lowering's requantization as FINN's MultiThreshold counts it (``backends/finn/lowered.py``): every
reachable accumulator gives the same code, for increasing and decreasing channels, bipolar and multi-bit
outputs, channels with fewer steps than levels; and a wrong threshold is caught by the channel check.
Pure numpy (no FINN needed)."""

from __future__ import annotations

import numpy as np
import pytest

from fpga_flow import FlowError
from fpga_flow.backends.finn import lowered
from fpga_flow.requant import OutQuant, Thresholds

pytestmark = pytest.mark.finn

LO, HI = -40, 40


def _finn_codes(levels, negate, q, acc):
    a = -acc if negate else acc
    return q.code_range()[0] + (2 if q.bipolar else 1) * (a[:, None] >= levels[None, :]).sum(axis=1)


CASES = {
    "bipolar up": (OutQuant.bipolar_codes(1.0), [[3, 3]], [-1], [1]),
    "bipolar down": (OutQuant.bipolar_codes(1.0), [[-5, -5]], [1], [-1]),
    "int2 up, all steps": (OutQuant(1.0, 0.0, 2, True, False), [[-7, 0, 9]], [-2], [1]),
    "int2 down, all steps": (OutQuant(1.0, 0.0, 2, True, False), [[-7, 0, 9]], [1], [-1]),
    "uint2 up from 1, one step": (OutQuant(1.0, 0.0, 2, False, False), [[4, HI + 1, HI + 1]], [1], [1]),
    "uint2 down to 1, two steps": (OutQuant(1.0, 0.0, 2, False, False), [[-3, 12, HI + 1]], [3], [-1]),
    "constant channel": (OutQuant(1.0, 0.0, 2, False, False), [[HI + 1, HI + 1, HI + 1]], [2], [1]),
}


@pytest.mark.parametrize("case", CASES)
def test_levels_reproduce_the_requantization_everywhere(case):
    q, T, base, d = CASES[case]
    th = Thresholds(T=np.array(T), base=np.array(base), direction=np.array(d), sentinel=HI + 1, checked="")
    levels, negate = lowered._levels(th, 0, LO, HI, q)
    assert negate == (d[0] < 0 and np.any(np.array(T) <= HI))
    acc = np.arange(LO, HI + 1)
    assert np.array_equal(_finn_codes(levels, negate, q, acc), th.apply(acc[:, None])[:, 0])
    lowered._check_channel(th, 0, LO, HI, levels, negate, q)  # and the flow's own check agrees


@pytest.mark.parametrize("case", ["bipolar down", "int2 up, all steps", "uint2 down to 1, two steps"])
def test_a_threshold_one_off_is_caught(case):
    q, T, base, d = CASES[case]
    th = Thresholds(T=np.array(T), base=np.array(base), direction=np.array(d), sentinel=HI + 1, checked="")
    levels, negate = lowered._levels(th, 0, LO, HI, q)
    inner = np.nonzero((levels > LO) & (levels <= HI))[0]
    bad = levels.copy()
    bad[inner[-1]] += 1
    with pytest.raises(FlowError, match="do not reproduce"):
        lowered._check_channel(th, 0, LO, HI, bad, negate, q)
