"""Streaming max pool, K x K windows with stride K (FINN's StreamingMaxPool): a pixel stream in, the pooled
pixel stream out, same lanes, same channel order.

Each pooled pixel is the lane-wise running maximum of its window, kept in a row of accumulators (one per
output column and channel fold: ``OW * C / lanes`` words), updated as the window's pixels arrive in raster
order and sent when its last (bottom-right) pixel arrives. Input rows and columns past the last whole window
(``H`` or ``W`` not a multiple of ``K``) are taken and dropped, as ``spec.forward`` does. The accumulator
memory is read combinationally so a window's consecutive pixels (same word when ``C == lanes``) update it
back to back."""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import spec, stream


class MaxPool(wiring.Component):
    def __init__(self, layer: spec.MaxPool, lanes: int):
        H, W, C = layer.in_shape
        if (layer.stride or layer.k) != layer.k:
            raise ValueError(f"max pool: stride {layer.stride} != K {layer.k}; only stride K is supported")
        if lanes < 1 or C % lanes:
            raise ValueError(f"max pool: {lanes} lanes do not divide the {C} channels")
        if layer.k > H or layer.k > W:
            raise ValueError(f"max pool: a {layer.k}x{layer.k} window does not fit a {H}x{W} image")
        self.layer, self.lanes = layer, lanes
        super().__init__({"i": In(stream.signature(lanes, layer.bits)),
                          "o": Out(stream.signature(lanes, layer.bits))})

    def elaborate(self, platform):
        m = Module()
        H, W, C = self.layer.in_shape
        k, bits, sgn, lanes = self.layer.k, self.layer.bits, self.layer.signed, self.lanes
        OH, OW, _ = self.layer.out_shape
        cf_n = C // lanes
        m.submodules.acc = mem = Memory(shape=unsigned(lanes * bits), depth=OW * cf_n, init=[])
        wr = mem.write_port()
        rd = mem.read_port(domain="comb")

        cf, x, y = Signal(range(cf_n)), Signal(range(W)), Signal(range(H))
        rx, ry, px = Signal(range(k)), Signal(range(k)), Signal(range(OW + 1))
        # the raster counters' next values (on a taken beat)
        n_cf = Mux(cf == cf_n - 1, 0, cf + 1)
        step = cf == cf_n - 1  # the column moves on
        n_x = Mux(step, Mux(x == W - 1, 0, x + 1), x)
        n_rx = Mux(step, Mux((rx == k - 1) | (x == W - 1), 0, rx + 1), rx)
        n_px = Mux(step, Mux(x == W - 1, 0, Mux(rx == k - 1, px + 1, px)), px)
        row = step & (x == W - 1)
        n_y = Mux(row, Mux(y == H - 1, 0, y + 1), y)
        n_ry = Mux(row, Mux((ry == k - 1) | (y == H - 1), 0, ry + 1), ry)
        # what the beat after this one needs, registered with the counters, so the read-modify-write path
        # (handshake -> accumulator read -> max -> write) starts at flops, not at counter compares (an ECP5
        # place and route of dwsep had the row counter -> drop -> memory write as its 99.8 MHz critical path)
        drop = Signal(init=int(OW * k < 1 or OH * k < 1))
        first = Signal(init=1)
        last = Signal(init=int(k == 1))
        addr = Signal(range(max(OW * cf_n, 2)))
        m.d.comb += rd.addr.eq(addr)
        best = Cat(*(Mux(first | (stream.lane(self.i.payload, n, bits, sgn) > stream.lane(rd.data, n, bits, sgn)),
                         self.i.payload[n * bits:(n + 1) * bits], rd.data[n * bits:(n + 1) * bits])
                     for n in range(lanes)))

        out_valid, out_data = Signal(), Signal(lanes * bits)
        emit = ~drop & last
        m.d.comb += [self.o.valid.eq(out_valid), self.o.payload.eq(out_data),
                     self.i.ready.eq(~(emit & out_valid & ~self.o.ready))]
        take = self.i.valid & self.i.ready
        m.d.comb += [wr.addr.eq(rd.addr), wr.data.eq(best), wr.en.eq(take & ~drop)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(take):
            with m.If(emit):
                m.d.sync += [out_valid.eq(1), out_data.eq(best)]
            n_drop = (n_x >= OW * k) | (n_y >= OH * k)
            m.d.sync += [cf.eq(n_cf), x.eq(n_x), rx.eq(n_rx), px.eq(n_px), y.eq(n_y), ry.eq(n_ry),
                         drop.eq(n_drop), first.eq((n_rx == 0) & (n_ry == 0)),
                         last.eq((n_rx == k - 1) & (n_ry == k - 1)),
                         addr.eq(Mux(n_drop, 0, n_px * cf_n + n_cf))]
        return m
