"""A stream FIFO between two blocks: decouples their stalls and breaks the combinational ready/valid path
(``SyncFIFOBuffered`` registers its output, so ``o.valid`` and ``i.ready`` come from flops)."""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from . import stream


class StreamFIFO(wiring.Component):
    """``depth`` beats of ``lanes`` x ``bits``; first in, first out, one beat per cycle each way."""

    def __init__(self, lanes: int, bits: int, depth: int = 2):
        if depth < 1:
            raise ValueError(f"FIFO depth {depth} must be at least 1")
        self.lanes, self.bits, self.depth = lanes, bits, depth
        super().__init__({"i": In(stream.signature(lanes, bits)), "o": Out(stream.signature(lanes, bits))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.lanes * self.bits, depth=self.depth)
        m.d.comb += [
            fifo.w_data.eq(self.i.payload), fifo.w_en.eq(self.i.valid), self.i.ready.eq(fifo.w_rdy),
            self.o.payload.eq(fifo.r_data), self.o.valid.eq(fifo.r_rdy), fifo.r_en.eq(self.o.ready),
        ]
        return m
