"""A skid buffer: ``i.ready`` comes from a flop, so the consumer's ready does not reach the producer's logic
in the same cycle; no latency added (an empty buffer passes the beat straight through) and one beat per
cycle sustained.

Why: an MVU's ``i.ready`` is ``adv & ...`` with ``adv = ~o.valid | o.ready`` (its whole pipeline moves
together). Without a break, nextpnr's ECP5 critical path of convnet at 12,099 images/s ran from conv2's MVU
output-valid flop through ``adv`` into the sliding-window generator's head counter (11.38 ns, 7.38 ns of it
routing). With this buffer in front of every MVU the window sees a registered ready. The forward direction
stays combinational (``o.valid = i.valid | full``), which is one LUT level; the design's cycle counts and
latencies stay what they were (the buffer only holds a beat when the consumer stalls).

One register of skid: it is loaded whenever empty (so its enable is a flop, not ``o.ready``) and counts as
holding a beat only when the consumer refused the beat offered straight through.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import stream


class SkidBuffer(wiring.Component):
    """``lanes`` x ``bits`` stream in, the same stream out; ``i.ready`` is the flop ``~full``."""

    def __init__(self, lanes: int, bits: int):
        self.lanes, self.bits = lanes, bits
        super().__init__({"i": In(stream.signature(lanes, bits)), "o": Out(stream.signature(lanes, bits))})

    def elaborate(self, platform):
        m = Module()
        full = Signal()  # the skid register holds a beat the consumer has not taken
        skid = Signal(self.lanes * self.bits)
        m.d.comb += [
            self.i.ready.eq(~full),
            self.o.valid.eq(self.i.valid | full),
            self.o.payload.eq(Mux(full, skid, self.i.payload)),
        ]
        with m.If(~full):
            m.d.sync += [skid.eq(self.i.payload), full.eq(self.i.valid & ~self.o.ready)]
        with m.Elif(self.o.ready):
            m.d.sync += full.eq(0)
        return m


__all__ = ["SkidBuffer"]
