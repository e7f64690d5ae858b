"""The sliding-window generator alone in Amaranth's simulator against a numpy model built from
``spec._windows``: three images back to back, random stalls on both sides, every value ``==`` and the exact
beat count (conv order and depthwise order), and the multi-tap conv windows (SIMD a multiple of the channels:
several kernel taps a beat) against an im2col of the same windows."""

from __future__ import annotations

import numpy as np
import pytest

from fpga_flow.backends.rtl.hw import spec, stream
from fpga_flow.backends.rtl.hw.window import SlidingWindow, legal_simd
from tests.rtl.stream_tb import run_stream

pytestmark = pytest.mark.rtl


def window_order(x: np.ndarray, k: int, stride: int, pad: int, simd: int, depthwise: bool) -> np.ndarray:
    """(N, H, W, C) -> the window stream as (beats, simd), in the MVU's order."""
    win = spec._windows(x, k, stride, pad)  # (N, OH, OW, K, K, C)
    if depthwise:
        N, OH, OW, K, _, C = win.shape
        win = win.reshape(N, OH, OW, K, K, C // simd, simd).transpose(0, 1, 2, 5, 3, 4, 6)
    return win.reshape(-1, simd)


CASES = [  # (H, W, C), k, stride, pad, simd, depthwise
    ((5, 6, 2), 3, 1, 1, 2, False),
    ((5, 5, 4), 3, 1, 1, 1, False),
    ((6, 5, 4), 3, 2, 1, 2, False),
    ((7, 7, 1), 5, 1, 0, 1, False),
    ((6, 7, 2), 5, 2, 1, 1, False),
    ((4, 5, 4), 1, 1, 0, 4, False),
    ((6, 7, 4), 1, 2, 0, 2, False),
    ((4, 4, 2), 5, 1, 1, 2, False),
    ((6, 6, 4), 3, 1, 1, 2, True),
    ((7, 6, 2), 3, 2, 0, 1, True),
    ((5, 5, 4), 5, 1, 1, 4, True),
    ((3, 3, 2), 3, 1, 0, 2, True),
    # multi-tap (SIMD > C): taps of one kernel row, whole kernel rows, the whole window
    ((8, 8, 1), 5, 1, 0, 5, False),
    ((8, 8, 1), 5, 1, 0, 25, False),
    ((6, 7, 2), 3, 1, 1, 6, False),
    ((6, 7, 2), 3, 2, 1, 18, False),
    ((5, 6, 3), 4, 1, 1, 6, False),
    ((5, 6, 1), 4, 2, 2, 8, False),
    ((3, 3, 2), 3, 1, 0, 18, False),
]


@pytest.mark.parametrize("shape,k,stride,pad,simd,depthwise", CASES)
def test_window_stream_equals_numpy_windows(shape, k, stride, pad, simd, depthwise):
    bits, n = 4, 3
    rng = np.random.default_rng(abs(hash((shape, k, stride, pad, simd, depthwise))) % 2**32)
    x = rng.integers(-8, 8, size=(n, *shape))
    want = window_order(x, k, stride, pad, simd, depthwise)
    dut = SlidingWindow(shape, k, stride, pad, simd, bits, depthwise)
    assert dut.beats_per_image * n == len(want)
    assert dut.in_lanes == min(simd, shape[2])
    beats = [stream.pack(v, bits) for v in x.reshape(-1, dut.in_lanes)]
    got = run_stream(dut, beats, len(want), seed=k + 10 * stride)
    got = np.array([stream.unpack(b, simd, bits, True) for b in got])
    assert np.array_equal(got, want)


@pytest.mark.parametrize("seed", range(8))
def test_window_stream_on_random_geometries(seed):
    """Random K (1..5), stride (1..3), pad < K, small odd images, SIMD 1..3, both orders, stall rates 0..70%."""
    rng = np.random.default_rng(100 + seed)
    k, stride = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    pad = int(rng.integers(0, k))
    H, W = (int(rng.integers(max(1, k - 2 * pad), 8)) for _ in range(2))
    simd = int(rng.integers(1, 4))
    C, depthwise = simd * int(rng.integers(1, 4)), bool(rng.integers(0, 2))
    x = rng.integers(-4, 4, size=(2, H, W, C))
    want = window_order(x, k, stride, pad, simd, depthwise)
    beats = [stream.pack(v, 3) for v in x.reshape(-1, simd)]
    got = run_stream(SlidingWindow((H, W, C), k, stride, pad, simd, 3, depthwise), beats, len(want), seed=seed,
                     p_valid=float(rng.choice([0.3, 0.7, 1.0])), p_ready=float(rng.choice([0.3, 0.7, 1.0])))
    assert np.array_equal(np.array([stream.unpack(b, simd, 3, True) for b in got]), want)


def im2col(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    """(N, H, W, C) -> (N * OH * OW, K*K*C): each output pixel's zero-padded window, (ky, kx, c) order, built
    with explicit loops (independent of ``spec._windows``)."""
    N, H, W, C = x.shape
    xp = np.zeros((N, H + 2 * pad, W + 2 * pad, C), dtype=x.dtype)
    xp[:, pad:pad + H, pad:pad + W] = x
    oh, ow = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
    rows = []
    for n in range(N):
        for oy in range(oh):
            for ox in range(ow):
                rows.append([xp[n, oy * stride + ky, ox * stride + kx, c]
                             for ky in range(k) for kx in range(k) for c in range(C)])
    return np.array(rows)


@pytest.mark.parametrize("seed", range(6))
def test_multitap_window_equals_im2col(seed):
    """Random conv geometries with every multi-tap SIMD the generator accepts picked at random: the stream,
    regrouped into whole windows, ``==`` im2col, under random stalls; three images back to back."""
    rng = np.random.default_rng(300 + seed)
    k, stride = int(rng.integers(2, 6)), int(rng.integers(1, 3))
    pad = int(rng.integers(0, k))
    H, W = (int(rng.integers(max(1, k - 2 * pad), 8)) for _ in range(2))
    C = int(rng.integers(1, 4))
    simd = int(rng.choice([s for s in legal_simd(C, k) if s > C]))
    x = rng.integers(-4, 4, size=(3, H, W, C))
    dut = SlidingWindow((H, W, C), k, stride, pad, simd, 3)
    want = im2col(x, k, stride, pad)
    got = run_stream(dut, [stream.pack(v, 3) for v in x.reshape(-1, C)], dut.beats_per_image * 3, seed=seed,
                     p_valid=float(rng.choice([0.5, 1.0])), p_ready=float(rng.choice([0.5, 1.0])))
    got = np.array([stream.unpack(b, simd, 3, True) for b in got]).reshape(len(want), -1)
    assert np.array_equal(got, want)


def test_window_refuses_taps_it_cannot_hand_out():
    with pytest.raises(ValueError, match="taps per beat"):
        SlidingWindow((6, 6, 1), 5, 1, 0, 10, 4)  # 10 taps: neither divides K=5 nor whole rows of it
    with pytest.raises(ValueError, match="taps per beat"):
        SlidingWindow((6, 6, 2), 3, 1, 0, 6, 4, depthwise=True)
    with pytest.raises(ValueError, match="neither divides"):
        SlidingWindow((6, 6, 2), 3, 1, 0, 3, 4)


@pytest.mark.parametrize("seed", range(4))
def test_window_with_extra_line_buffer_rows(seed):
    """More row slots than K + stride (the design builds 2K + stride): same stream, ``==`` im2col / the
    numpy windows, under random stalls, three images."""
    rng = np.random.default_rng(500 + seed)
    k, stride = int(rng.integers(1, 6)), int(rng.integers(1, 3))
    pad = int(rng.integers(0, k))
    H, W = (int(rng.integers(max(1, k - 2 * pad), 8)) for _ in range(2))
    C = int(rng.integers(1, 3))
    simd = int(rng.choice(legal_simd(C, k)))
    rows = k + stride + int(rng.integers(1, k + 3))
    x = rng.integers(-4, 4, size=(3, H, W, C))
    dut = SlidingWindow((H, W, C), k, stride, pad, simd, 3, rows=rows)
    got = run_stream(dut, [stream.pack(v, 3) for v in x.reshape(-1, dut.in_lanes)], dut.beats_per_image * 3,
                     seed=seed, p_valid=float(rng.choice([0.5, 1.0])), p_ready=float(rng.choice([0.5, 1.0])))
    got = np.array([stream.unpack(b, simd, 3, True) for b in got]).reshape(-1, k * k * C)
    assert np.array_equal(got, im2col(x, k, stride, pad))


def test_whole_window_a_beat_synthesizes_with_yosys(tmp_path):
    """A 5x5 window handing out all 25 taps a beat (convnet's default fit folding) through yosys
    ``synth_xilinx``: with one line-buffer memory of 25 read ports yosys' memory_libmap threw (exit 1, a wasm
    exception, also on this 8x8 image); with one 1-write 1-read copy per tap it maps to LUTRAM."""
    from fpga_flow.backends.rtl import measure

    w = SlidingWindow((8, 8, 1), 5, 1, 0, 25, 8, rows=11)
    r = measure.synth_xilinx(measure.verilog_of(w, "swg"), "swg", "xc7z020clg400-1", tmp_path)
    assert r["LUT"] > 0 and r["LUTRAM"] > 0 and r["DSP"] == 0
