"""The streaming max pool alone in Amaranth's simulator against ``spec.forward(spec.MaxPool(...))``: three
images back to back, random stalls on both sides, signed and unsigned lanes, every value ``==`` and the
exact beat count."""

from __future__ import annotations

import numpy as np
import pytest

from fpga_flow.backends.rtl.hw import spec, stream
from fpga_flow.backends.rtl.hw.pool import MaxPool
from tests.rtl.stream_tb import run_stream

pytestmark = pytest.mark.rtl

CASES = [  # (H, W, C), k, lanes, bits, signed
    ((4, 4, 1), 2, 1, 4, False),
    ((6, 6, 4), 2, 2, 4, True),
    ((7, 5, 2), 2, 2, 3, True),  # odd H and W: the last row and column are dropped
    ((6, 9, 4), 3, 4, 5, False),
    ((8, 7, 6), 3, 3, 4, True),
]


@pytest.mark.parametrize("shape,k,lanes,bits,is_signed", CASES)
def test_max_pool_stream_equals_spec(shape, k, lanes, bits, is_signed):
    n = 3
    layer = spec.MaxPool(shape, k, bits, is_signed)
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if is_signed else (0, 1 << bits)
    rng = np.random.default_rng(sum(shape) * 10 + k)
    x = rng.integers(lo, hi, size=(n, *shape))
    want = spec.forward(layer, x).reshape(-1, lanes)
    beats = [stream.pack(v, bits) for v in x.reshape(-1, lanes)]
    got = run_stream(MaxPool(layer, lanes), beats, len(want), seed=k + lanes)
    got = np.array([stream.unpack(b, lanes, bits, is_signed) for b in got])
    assert np.array_equal(got, want)
