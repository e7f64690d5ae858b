"""Lane-width conversion (a producer's PE != its consumer's SIMD). A stream is a plain sequence of values
(``lanes`` per beat, in order), so regrouping it never reorders anything: narrowing splits a beat, widening
gathers beats, and any other ratio widens to lcm(L_in, L_out) lanes and narrows from there. Every image's
value count must be a multiple of both widths (checked by :func:`check`), so images never share a beat."""

from __future__ import annotations

import math

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import stream


def check(values_per_pixel: int, l_in: int, l_out: int) -> None:
    """Refuse a conversion that would put two pixels' channels into one beat."""
    for lanes in (l_in, l_out):
        if lanes < 1 or values_per_pixel % lanes:
            raise ValueError(f"width conversion {l_in} -> {l_out} lanes: {values_per_pixel} channels per pixel "
                             f"is not a multiple of {lanes}")


class _Narrow(wiring.Component):
    """``l_in = r * l_out``: hold one input beat and send it out as ``r`` beats, lowest lanes first. The held
    beat shifts down by one output beat per send, so the output is a register slice, not an ``r``-to-1 mux on
    an index (that mux, 32 lanes to 1 in front of convrelu's dense layer, was its ECP5 critical path at
    98.77 MHz)."""

    def __init__(self, l_in: int, l_out: int, bits: int):
        self.r, self.w = l_in // l_out, l_out * bits
        super().__init__({"i": In(stream.signature(l_in, bits)), "o": Out(stream.signature(l_out, bits))})

    def elaborate(self, platform):
        m = Module()
        buf = Signal(self.r * self.w)
        idx = Signal(range(self.r))
        full = Signal()
        last = idx == self.r - 1
        m.d.comb += [self.o.valid.eq(full), self.o.payload.eq(buf[:self.w]),
                     self.i.ready.eq(~full | (self.o.ready & last))]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [buf.eq(self.i.payload), full.eq(1), idx.eq(0)]
        with m.Elif(self.o.valid & self.o.ready):
            m.d.sync += [idx.eq(idx + 1), buf.eq(buf >> self.w)]
            with m.If(last):
                m.d.sync += full.eq(0)
        return m


class _Widen(wiring.Component):
    """``l_out = r * l_in``: shift ``r`` input beats in (the first ends in the lowest lanes), then send."""

    def __init__(self, l_in: int, l_out: int, bits: int):
        self.r, self.w = l_out // l_in, l_in * bits
        super().__init__({"i": In(stream.signature(l_in, bits)), "o": Out(stream.signature(l_out, bits))})

    def elaborate(self, platform):
        m = Module()
        buf = Signal(self.r * self.w)
        cnt = Signal(range(self.r + 1))
        full = cnt == self.r
        m.d.comb += [self.o.valid.eq(full), self.o.payload.eq(buf), self.i.ready.eq(~full | self.o.ready)]
        sent = self.o.valid & self.o.ready
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [buf.eq(Cat(buf[self.w:], self.i.payload)), cnt.eq(Mux(sent, 1, cnt + 1))]
        with m.Elif(sent):
            m.d.sync += cnt.eq(0)
        return m


class WidthConverter(wiring.Component):
    """``l_in`` -> ``l_out`` lanes of ``bits``: values in the same order, one output beat per cycle at best."""

    def __init__(self, l_in: int, l_out: int, bits: int):
        self.l_in, self.l_out, self.bits = l_in, l_out, bits
        super().__init__({"i": In(stream.signature(l_in, bits)), "o": Out(stream.signature(l_out, bits))})

    def elaborate(self, platform):
        m = Module()
        l_in, l_out, bits = self.l_in, self.l_out, self.bits
        if l_in == l_out:
            wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
            return m
        mid = math.lcm(l_in, l_out)
        stages = ([_Widen(l_in, mid, bits)] if mid != l_in else []) + \
                 ([_Narrow(mid, l_out, bits)] if mid != l_out else [])
        for n, s in enumerate(stages):
            m.submodules[f"stage{n}"] = s
        wiring.connect(m, wiring.flipped(self.i), stages[0].i)
        for a, b in zip(stages, stages[1:]):
            wiring.connect(m, a.o, b.i)
        wiring.connect(m, stages[-1].o, wiring.flipped(self.o))
        return m
