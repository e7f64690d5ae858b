"""The folded MVU in Amaranth's Python simulator against ``spec.forward``, compared with ``==``.

Random small layers (conv / dense / depthwise), several foldings (PE=1..OC, SIMD=1..all), signed and unsigned
inputs, requantized (incl. negative-direction channels and thresholds outside the accumulator range) and final
(accumulator + bias) outputs, random stalls on both streams, several vectors back to back. Without stalls the
vectors must follow each other every NF*SF cycles: that is what the folding promises.
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import replace

import numpy as np
import pytest
from amaranth import Module, Signal, signed, unsigned
from amaranth.back import verilog
from amaranth.sim import Simulator

from fpga_flow.backends.rtl import measure
from fpga_flow.backends.rtl.hw import spec, stream
from fpga_flow.backends.rtl.hw.mvu import (MVU, acc_bits, check_layer, folding, latency, lut_product, tree_stages,
                                           weight_banks)

pytestmark = pytest.mark.rtl


def windows(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    """(H, W, C) -> (OH, OW, K, K, C), zero padded: each output pixel's input window."""
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    H, W, _ = x.shape
    oh, ow = (H - k) // stride + 1, (W - k) // stride + 1
    return np.stack([np.stack([x[r * stride:r * stride + k, c * stride:c * stride + k] for c in range(ow)])
                     for r in range(oh)])


def input_beats(layer: spec.Mac, x: np.ndarray) -> list[list[int]]:
    """The stream the MVU consumes for image ``x`` (H, W, C): per output pixel, its vector SIMD values a beat."""
    s = layer.simd
    if layer.kind == "dense":
        vecs = [x.reshape(-1)]
    else:
        win = windows(x, layer.k, layer.stride, layer.pad)
        win = win.reshape(-1, layer.k * layer.k, x.shape[-1])
        if layer.kind == "depthwise":  # per channel group, K*K beats of that group's channels
            vecs = [w.reshape(layer.k * layer.k, -1, s).transpose(1, 0, 2).reshape(-1) for w in win]
        else:
            vecs = [w.reshape(-1) for w in win]
    return [list(v[i:i + s]) for v in vecs for i in range(0, len(v), s)]


def make_layer(rng: np.random.Generator, kind: str, *, c: int, oc: int, k: int, hw: int, pe: int, simd: int,
               in_bits: int, in_signed: bool, requant: bool, out_bits: int, out_signed: bool,
               x: np.ndarray, pad: int = 0, stride: int = 1, wbits: int = 3) -> spec.Mac:
    wmax = (1 << (wbits - 1)) - 1
    shape = {"conv": (oc, k, k, c), "dense": (oc, c * hw * hw), "depthwise": (c, k, k)}[kind]
    w = rng.integers(-wmax - 1, wmax + 1, size=shape)
    rows = shape[0]
    bias = rng.integers(-20, 21, size=rows)
    base = spec.Mac(kind, (hw, hw, c), w, in_bits, in_signed, bias=bias, k=k if kind != "dense" else 1,
                    stride=stride, pad=pad, pe=pe, simd=simd)
    if not requant:
        return spec.Mac(**{**base.__dict__, "out_bits": acc_bits(base) + 2, "out_signed": True})
    # thresholds around the accumulators these inputs really reach, so every code occurs
    acc = spec.accumulate(base, x[None]).reshape(-1, rows)
    n_t = (1 << out_bits) - 1
    T = np.empty((rows, n_t), np.int64)
    for r in range(rows):
        lo, hi = int(acc[:, r].min()) - 2, int(acc[:, r].max()) + 2
        T[r] = np.sort(rng.integers(lo, hi + 1, size=n_t))
    T[0, -1] = 1 << 40  # an unused entry (above every accumulator)
    T[-1, 0] = -(1 << 40)  # an entry below every accumulator
    direction = np.where(rng.random(rows) < 0.4, -1, 1)
    lo_code = -(1 << (out_bits - 1)) if out_signed else 0
    hi_code = lo_code + n_t
    rq = spec.Requant(T=T, base=np.where(direction > 0, lo_code, hi_code).astype(np.int64),
                      direction=direction.astype(np.int64))
    return spec.Mac(**{**base.__dict__, "requant": rq, "out_bits": out_bits, "out_signed": out_signed})


def simulate(layer: spec.Mac, beats: list[list[int]], n_out: int, stall_in: bool, stall_out: bool, seed: int):
    """Run the MVU on ``beats``; returns (output payloads, cycle of each input handshake, of each output)."""
    dut = MVU(layer)
    rnd = random.Random(seed)
    got, t_in, t_out = [], [], []
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def producer(ctx):
        cycle = 0
        for beat in beats:
            while stall_in and rnd.random() < 0.3:
                await ctx.tick()
                cycle += 1
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, stream.pack(beat, layer.in_bits))
            while True:
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                cycle += 1
                if ready:
                    t_in.append(cycle - 1)
                    break
            ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        cycle = 0
        while len(got) < n_out + 1 and cycle < 20 * (len(beats) + 20) * (1 + layer.out_channels):
            ready = not stall_out or rnd.random() < 0.6
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if ready and valid:
                got.append(stream.unpack(payload, layer.pe, layer.out_bits, layer.out_signed))
                t_out.append(cycle)
            cycle += 1
            if len(got) == n_out and len(t_in) == len(beats) and cycle > t_out[-1] + 16:
                break  # 16 idle cycles with nothing more: the count is exact

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return got, t_in, t_out


def check(layer: spec.Mac, images: np.ndarray, stall_in: bool, stall_out: bool, seed: int):
    beats = [b for x in images for b in input_beats(layer, x)]
    want = spec.forward(layer, images).reshape(-1, layer.pe)  # channel order, PE a beat, pixel after pixel
    got, t_in, t_out = simulate(layer, beats, len(want), stall_in, stall_out, seed)
    assert len(t_in) == len(beats)
    assert len(got) == len(want)
    assert got == want.tolist()
    return t_in, t_out


def rand_images(rng, n, hw, c, bits, signed_):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1))) if signed_ else (0, 1 << bits)
    return rng.integers(lo, hi, size=(n, hw, hw, c))


CASES = [  # kind, c, oc, k, hw, pad, stride, pe, simd, in_bits, in_signed, requant, out_bits, out_signed
    ("conv", 2, 4, 3, 4, 0, 1, 2, 3, 4, False, True, 2, False),
    ("conv", 2, 4, 3, 3, 1, 2, 4, 18, 3, True, True, 3, True),  # PE=OC, SIMD=all: one cycle a vector
    ("conv", 3, 2, 2, 3, 0, 1, 1, 1, 2, True, False, 0, True),  # fully folded, final layer
    ("conv", 2, 6, 1, 3, 0, 1, 3, 2, 4, False, False, 0, True),  # 1x1 conv
    ("dense", 12, 6, 1, 1, 0, 1, 2, 4, 4, False, True, 2, False),
    ("dense", 8, 4, 1, 1, 0, 1, 4, 8, 2, True, False, 0, True),  # PE=OC, SIMD=all
    ("dense", 10, 3, 1, 1, 0, 1, 1, 5, 1, False, True, 1, False),  # 1-bit input and output
    ("dense", 80, 4, 1, 1, 0, 1, 2, 80, 4, False, True, 3, False),  # SIMD 80: adder tree in three stages
    ("dense", 64, 4, 1, 1, 0, 1, 1, 4, 4, False, True, 2, False),  # NF*SF = 64: weights in block RAM
    ("dense", 480, 30, 1, 1, 0, 1, 1, 12, 4, False, True, 2, False),  # 1,200 x 36-bit weights: 3 banks of 512
    ("dense", 48, 32, 1, 1, 0, 1, 1, 24, 4, False, True, 2, False),  # 64 x 72-bit weights: two block RAMs wide
    ("conv", 2, 10, 3, 4, 0, 1, 5, 3, 4, False, True, 2, False),  # PE 5: two operand copies, of 4 PEs and 1
    ("dense", 12, 24, 1, 1, 0, 1, 12, 4, 4, True, True, 3, True),  # PE 12: three operand copies
    ("dense", 64, 12, 1, 1, 0, 1, 6, 2, 4, False, True, 2, False),  # PE 6, NF*SF = 64: copies behind block RAM
    ("depthwise", 4, 4, 3, 3, 1, 1, 2, 2, 4, False, True, 2, False),
    ("depthwise", 4, 4, 3, 4, 0, 1, 4, 4, 3, True, False, 0, True),
    ("depthwise", 3, 3, 2, 3, 0, 1, 1, 1, 4, True, True, 3, True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-pe{c[7]}-simd{c[8]}-{'rq' if c[11] else 'acc'}")
@pytest.mark.parametrize("stalls", [False, True], ids=["nostall", "stalls"])
def test_mvu_equals_spec(case, stalls):
    kind, c, oc, k, hw, pad, stride, pe, simd, ib, isg, rq, ob, osg = case
    seed = zlib.crc32(repr((case, stalls)).encode()) % 1000
    rng = np.random.default_rng(seed)
    n_img = 2 if kind != "dense" else 3
    images = rand_images(rng, n_img, hw, c, ib, isg)
    layer = make_layer(rng, kind, c=c, oc=oc, k=k, hw=hw, pe=pe, simd=simd, in_bits=ib, in_signed=isg,
                       requant=rq, out_bits=ob, out_signed=osg, x=images[0], pad=pad, stride=stride)
    t_in, t_out = check(layer, images, stall_in=stalls, stall_out=stalls, seed=seed)
    if not stalls:  # II=1: each vector starts and completes exactly NF*SF cycles after the one before
        nf, sf = folding(layer)
        n_vec = len(t_out) // nf
        firsts = t_in[::len(t_in) // n_vec]
        lasts = t_out[nf - 1::nf]
        assert np.diff(firsts).tolist() == [nf * sf] * (n_vec - 1)
        assert np.diff(lasts).tolist() == [nf * sf] * (n_vec - 1)
        assert t_out[0] - t_in[sf - 1] == latency(layer)  # the first fold's last input beat -> its output beat


LUT_PRODUCT_CASES = [  # kind, c, oc, k, hw, pe, simd, in_bits, in_signed, wbits: rows over the weight, over the input
    ("dense", 16, 4, 1, 1, 2, 4, 8, False, 4),  # mlp's first layer: 8-bit input x 4-bit weight
    ("conv", 2, 4, 3, 3, 2, 6, 3, True, 5),  # signed input narrower than the weights: rows over the input
    ("depthwise", 4, 4, 3, 3, 4, 4, 4, False, 4),
]


@pytest.mark.parametrize("case", LUT_PRODUCT_CASES, ids=lambda c: f"{c[0]}-in{c[7]}{'s' if c[8] else 'u'}-w{c[9]}")
def test_lut_products_equal_spec_and_leave_no_multiplier(case):
    """``lut_products``: the same outputs under stalls, and no ``*`` in the Verilog (so yosys has no $mul to put
    in a DSP block); the same layer without it does multiply."""
    kind, c, oc, k, hw, pe, simd, ib, isg, wb = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    images = rand_images(rng, 2, hw, c, ib, isg)
    layer = make_layer(rng, kind, c=c, oc=oc, k=k, hw=hw, pe=pe, simd=simd, in_bits=ib, in_signed=isg,
                       requant=True, out_bits=3, out_signed=False, x=images[0], pad=1 if kind != "dense" else 0,
                       wbits=wb)
    lut = replace(layer, lut_products=True)
    check(lut, images, stall_in=True, stall_out=True, seed=3)
    assert " * " not in measure.verilog_of(MVU(lut), "mvu")
    assert " * " in measure.verilog_of(MVU(layer), "mvu")


@pytest.mark.parametrize("sa, sb", [(unsigned(8), signed(4)), (signed(3), signed(5)), (signed(4), signed(4)),
                                    (unsigned(1), signed(2)), (signed(2), unsigned(6))])
def test_lut_product_is_exact_everywhere(sa, sb):
    a, b = Signal(sa), Signal(sb)
    m = Module()
    y = Signal((a * b).shape())
    m.d.comb += y.eq(lut_product(a, b))
    sim = Simulator(m)
    bad = []

    def values(s):
        return range(-(1 << (s.width - 1)), 1 << (s.width - 1)) if s.signed else range(1 << s.width)

    async def tb(ctx):
        for x in values(sa):
            for w in values(sb):
                ctx.set(a, x)
                ctx.set(b, w)
                if ctx.get(y) != x * w:
                    bad.append((x, w, ctx.get(y)))

    sim.add_testbench(tb)
    sim.run()
    assert not bad


@pytest.mark.parametrize("c, oc, simd, roms", [(480, 30, 12, 3), (48, 32, 24, 2), (64, 4, 4, 1)])
def test_a_block_ram_weight_rom_is_built_of_whole_block_rams(c, oc, simd, roms):
    rng = np.random.default_rng(0)
    layer = make_layer(rng, "dense", c=c, oc=oc, k=1, hw=1, pe=1, simd=simd, in_bits=4, in_signed=False,
                       requant=True, out_bits=2, out_signed=False, x=rand_images(rng, 1, 1, c, 4, False)[0])
    mvu_ = MVU(layer)
    words, bits = weight_banks(len(mvu_.weight_words()[1]), simd * 3)
    assert words <= 512 * 36 // bits  # no memory deeper than one block RAM at its width
    verilog = measure.verilog_of(mvu_, "mvu")
    assert len(re.findall(r"reg \[\d+:0\] wrom\w*\s*\[", verilog)) == roms


def test_tree_stages_keep_each_stage_to_three_adder_levels():
    assert [tree_stages(n) for n in (1, 2, 8, 9, 18, 48, 64, 65, 400, 512, 513)] == [1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4]


def test_folding_is_checked():
    rng = np.random.default_rng(0)
    w = rng.integers(-2, 2, size=(4, 6))
    with pytest.raises(ValueError, match="pe=3"):
        check_layer(spec.Mac("dense", (1, 1, 6), w, 4, False, out_bits=12, out_signed=True, pe=3, simd=2))
    with pytest.raises(ValueError, match="simd=4"):
        check_layer(spec.Mac("dense", (1, 1, 6), w, 4, False, out_bits=12, out_signed=True, pe=2, simd=4))
    with pytest.raises(ValueError, match="out_bits"):
        check_layer(spec.Mac("dense", (1, 1, 6), w, 4, False, out_bits=4, out_signed=True, pe=2, simd=2))
    with pytest.raises(ValueError, match="pe == simd"):
        check_layer(spec.Mac("depthwise", (3, 3, 4), w[:, :4].reshape(4, 2, 2), 4, False, out_bits=12, k=2, pe=2,
                       simd=1))


def test_acc_bits_is_exact_at_the_extremes():
    """acc_bits holds the extreme sums and no more: all-max inputs against a positive row reach the top."""
    w = np.array([[3, 3, -4], [-4, -4, 1]])
    layer = spec.Mac("dense", (1, 1, 3), w, 4, False, bias=np.array([5, -3]))
    # greatest: 3*15+3*15+5 = 95; least: -4*15*2-3 = -123 -> 8 signed bits
    assert acc_bits(layer) == 8
    layer = spec.Mac("dense", (1, 1, 3), w, 4, False, bias=np.array([38, -3]))  # 128 needs 9
    assert acc_bits(layer) == 9


@pytest.mark.parametrize("kind,style,want", [("conv", "auto", "block"), ("depthwise", "auto", "logic"),
                                             ("dense", "distributed", "distributed")])
def test_verilog_carries_the_weight_rom_style(kind, style, want):
    """The Verilog yosys reads names how to build the weight ROM ("auto": block RAM from 64 words)."""
    rng = np.random.default_rng(3)
    x = rand_images(rng, 1, 4, 8, 4, False)[0]
    pe, simd = (1, 1) if kind == "conv" else (2, 2)  # conv: 8 x 72 words; depthwise: 4 x 9; dense: 4 x 64
    layer = make_layer(rng, kind, c=8, oc=8, k=3, hw=4, pe=pe, simd=simd, in_bits=4, in_signed=False,
                       requant=kind != "dense", out_bits=2, out_signed=False, x=x)
    v = verilog.convert(MVU(layer, ram_style=style), name="mvu")
    assert f'(* ram_style = "{want}" *)' in v and "module mvu(" in v
