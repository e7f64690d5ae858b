"""The design assembler in Amaranth's simulator (no Verilator): a chain using every block (width converters
both ways, conv and depthwise windows, a 1x1 conv without a window, max pool, dense reading a pixel stream)
against ``spec.reference``, two images back to back with random stalls; and the chain checks."""

from __future__ import annotations

import numpy as np
import pytest

from fpga_flow.backends.rtl.design import Design, plan
from fpga_flow.backends.rtl.hw import spec, stream
from fpga_flow.backends.rtl.hw.mvu import acc_bits
from tests.rtl.stream_tb import run_stream

pytestmark = pytest.mark.rtl


def _requant(rng, acc: np.ndarray, bits: int) -> spec.Requant:
    c = acc.shape[-1]
    T = np.sort(rng.integers(int(acc.min()), int(acc.max()) + 1, size=(c, (1 << bits) - 1)), axis=1)
    return spec.Requant(T, np.zeros(c, np.int64), np.ones(c, np.int64))


def _with_requant(rng, layer: spec.Mac, x: np.ndarray, bits: int) -> spec.Mac:
    rq = _requant(rng, spec.accumulate(layer, x), bits)
    return spec.Mac(**{**layer.__dict__, "requant": rq, "out_bits": bits, "out_signed": False})


def chain(rng, x: np.ndarray) -> list:
    """6x6x2 signed -> conv 3x3 pad 1 (4 ch, PE 4, SIMD 2) -> depthwise 3x3 stride 2 pad 1 (PE=SIMD 2: a 4->2
    width converter) -> 1x1 conv (6 ch, PE 3, SIMD 4: 2->4) -> max pool 2 (3 lanes) -> dense (PE 2, SIMD 2)."""
    layers = []
    l0 = spec.Mac("conv", (6, 6, 2), rng.integers(-3, 4, (4, 3, 3, 2)), 3, True, k=3, pad=1, pe=4, simd=2)
    layers.append(_with_requant(rng, l0, x, 2))
    x = spec.forward(layers[-1], x)
    l1 = spec.Mac("depthwise", (6, 6, 4), rng.integers(-3, 4, (4, 3, 3)), 2, False, k=3, stride=2, pad=1,
                  pe=2, simd=2)
    layers.append(_with_requant(rng, l1, x, 3))
    x = spec.forward(layers[-1], x)
    l2 = spec.Mac("conv", (3, 3, 4), rng.integers(-3, 4, (6, 1, 1, 4)), 3, False, pe=3, simd=4)
    layers.append(_with_requant(rng, l2, x, 2))
    layers.append(spec.MaxPool((3, 3, 6), 2, bits=2, signed=False))
    l4 = spec.Mac("dense", (1, 1, 6), rng.integers(-3, 4, (4, 6)), 2, False, bias=rng.integers(-5, 6, 4),
                  pe=2, simd=2)
    layers.append(spec.Mac(**{**l4.__dict__, "out_bits": acc_bits(l4), "out_signed": True}))
    return layers


def test_design_chain_equals_reference_with_stalls():
    rng = np.random.default_rng(3)
    x = rng.integers(-4, 4, size=(2, 6, 6, 2))
    layers = chain(rng, x)
    d = Design(layers, input_lanes=2)
    assert [n.split("_", 1)[1] for n, _ in d.stages] == [
        "in", "swg", "mvu", "fifo", "dwc", "swg", "mvu", "fifo", "dwc", "mvu", "fifo", "pool",
        "fifo", "dwc", "mvu", "fifo"]
    want = spec.reference(layers, x).reshape(-1, d.out_lanes)
    beats = [stream.pack(v, d.in_bits) for v in x.reshape(-1, d.in_lanes)]
    got = run_stream(d, beats, len(want), seed=5, p_valid=0.8, p_ready=0.6)
    got = np.array([stream.unpack(b, d.out_lanes, d.out_bits, d.out_signed) for b in got])
    assert np.array_equal(got, want)


def test_design_refuses_a_broken_chain():
    rng = np.random.default_rng(0)
    conv = spec.Mac("conv", (4, 4, 1), rng.integers(-3, 4, (2, 3, 3, 1)), 4, False, k=3, pad=1,
                    requant=spec.Requant(np.zeros((2, 1), np.int64), np.zeros(2, np.int64), np.ones(2, np.int64)),
                    out_bits=1)
    pool = spec.MaxPool((4, 4, 2), 2, bits=2, signed=False)  # conv sends 1-bit codes
    with pytest.raises(ValueError, match="layer 1 .*expects .*2-bit.* receives .*1-bit"):
        plan([conv, pool], input_lanes=1)
    with pytest.raises(ValueError, match="not a multiple of 3"):
        plan([conv], input_lanes=3)
