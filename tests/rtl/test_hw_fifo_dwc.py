"""The stream FIFO and the lane-width converter, each alone in Amaranth's simulator with random stalls on
both sides: every value equal and in order, the exact beat count."""

from __future__ import annotations

import numpy as np
import pytest

from fpga_flow.backends.rtl.hw import stream
from fpga_flow.backends.rtl.hw.dwc import WidthConverter, check
from fpga_flow.backends.rtl.hw.fifo import StreamFIFO
from tests.rtl.stream_tb import full_rate_cycles, run_stream

pytestmark = pytest.mark.rtl


def _beats(values: np.ndarray, lanes: int, bits: int) -> list[int]:
    return [stream.pack(v, bits) for v in values.reshape(-1, lanes)]


def _values(beats: list[int], lanes: int, bits: int, is_signed: bool) -> np.ndarray:
    return np.array([stream.unpack(b, lanes, bits, is_signed) for b in beats], dtype=np.int64).ravel()


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_fifo_passes_every_beat_in_order(depth):
    rng = np.random.default_rng(depth)
    x = rng.integers(-8, 8, size=3 * 40)
    got = run_stream(StreamFIFO(3, 4, depth), _beats(x, 3, 4), 40, seed=depth)
    assert np.array_equal(_values(got, 3, 4, True), x)


@pytest.mark.parametrize("depth", [1, 2, 3, 8])
def test_fifo_sustains_one_beat_a_cycle(depth):
    """Amaranth's SyncFIFOBuffered of depth 2 takes 2 cycles a beat; the design's FIFOs must not halve a stream
    (with depth 2 this measured 201 cycles for 100 beats)."""
    n = 100
    cycles, got = full_rate_cycles(StreamFIFO(1, 8, depth), list(range(n)), n)
    assert got == list(range(n))
    assert cycles <= n + 2  # two cycles of latency: the memory and the output register


@pytest.mark.parametrize("l_in,l_out", [(1, 1), (4, 1), (4, 2), (1, 4), (2, 6), (3, 2), (6, 4), (4, 6)])
def test_width_converter_keeps_the_value_sequence(l_in, l_out):
    channels = 12  # a multiple of every width above: each pixel's channels fill whole beats either side
    check(channels, l_in, l_out)
    rng = np.random.default_rng(l_in * 10 + l_out)
    x = rng.integers(0, 16, size=channels * 9)
    got = run_stream(WidthConverter(l_in, l_out, 4), _beats(x, l_in, 4), x.size // l_out, seed=l_in + l_out)
    assert np.array_equal(_values(got, l_out, 4, False), x)


def test_width_converter_refuses_a_beat_spanning_two_pixels():
    with pytest.raises(ValueError, match="not a multiple of 4"):
        check(6, 2, 4)
