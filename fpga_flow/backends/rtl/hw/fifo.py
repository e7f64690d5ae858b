"""A stream FIFO between two blocks: decouples their stalls and breaks the combinational ready/valid path
(``SyncFIFOBuffered`` registers its output, so ``o.valid`` and ``i.ready`` come from flops).

Amaranth's ``SyncFIFOBuffered`` of depth 1 or 2 passes one beat every *second* cycle (depth 2 is a one-entry
queue in front of the output register, and that entry cannot be written in the cycle it is read), so
:class:`StreamFIFO` never builds one under :data:`MIN_DEPTH`. Found in Verilator: every fit-folded conv
design ran at half its folding's rate (convrelu 1,568 cycles/image = 2 x its 784 input beats, against
the folding model's 726), because the depth-2 FIFO behind the input port and behind each layer halved
any stream faster than one beat in two cycles."""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from . import stream

MIN_DEPTH = 3  # the smallest SyncFIFOBuffered that sustains one beat per cycle


class StreamFIFO(wiring.Component):
    """At least ``depth`` beats (never under :data:`MIN_DEPTH`) of ``lanes`` x ``bits``; first in, first out,
    one beat per cycle each way."""

    def __init__(self, lanes: int, bits: int, depth: int = MIN_DEPTH):
        if depth < 1:
            raise ValueError(f"FIFO depth {depth} must be at least 1")
        self.lanes, self.bits, self.depth = lanes, bits, max(depth, MIN_DEPTH)
        super().__init__({"i": In(stream.signature(lanes, bits)), "o": Out(stream.signature(lanes, bits))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.lanes * self.bits, depth=self.depth)
        m.d.comb += [
            fifo.w_data.eq(self.i.payload), fifo.w_en.eq(self.i.valid), self.i.ready.eq(fifo.w_rdy),
            self.o.payload.eq(fifo.r_data), self.o.valid.eq(fifo.r_rdy), fifo.r_en.eq(self.o.ready),
        ]
        return m
