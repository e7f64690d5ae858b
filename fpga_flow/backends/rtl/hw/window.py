"""The sliding-window generator: a pixel stream in, every output pixel's K x K window out, in the order the
matrix-vector unit consumes it, from line buffers holding ``K + stride`` rows (never the whole image).

Orders (``simd`` values per beat; with ``simd <= C``, ``CF = C / simd`` beats per pixel):
  conv:      for each output pixel: for ky: for kx: for cf: one beat
  depthwise: for each output pixel: for cf: for ky: for kx: one beat
Conv with ``simd > C`` (**multi-tap**): a beat holds ``T = simd / C`` whole pixels (kernel taps) that follow
each other in the flattened (ky, kx, c) window, so the MVU's SIMD may divide ``K*K*C`` instead of only ``C``
(a 1-channel first conv need not run at SIMD 1). ``T`` divides ``K`` (a beat is ``T`` taps of one kernel row)
or is ``r*K`` with ``r`` dividing ``K`` (a beat is ``r`` whole kernel rows); the input stream is then one
pixel (``C`` lanes) a beat (:func:`in_lanes`). Tap ``j`` of a beat is read from its own copy of the line
buffer with its own address pipeline: the taps of a beat may lie in different rows and columns, so one port
cannot serve them, and yosys maps a memory of one write and one read port well (one memory with 25 read
ports made its ``synth_xilinx`` crash).
Padding positions are zero codes. The image is zero padded by ``pad`` on every side, like
:func:`spec._windows`.

How it works: the line buffer is a ring of ``R = K + stride`` row slots, used as a FIFO of rows. The writer
appends input rows (it knows nothing of images: rows are rows) while fewer than ``R`` slots are filled. The
reader walks the window loops; before an output row it waits until every input row that row reads (and
every row it will free) is complete; after the row it frees the rows no later output row reads (after an
image's last row: all the image's remaining rows, including bottom rows no window reaches). With ``R = K +
stride`` the writer can fill the next output row's rows while the reader works on the current one, so the
reader issues one beat per cycle in steady state. ``rows`` adds slots: with ``2K + stride`` (what
:mod:`..design` builds) the writer can also take the next image's first rows while the reader is still on
this image's last ones, so a producer slower per row than the reader at the image's start (a conv fed by
another conv) is not stalled at every image boundary waiting for the K rows of a new image. Reads and writes never touch
the same slot: the writer only writes the slot after the filled ones, and a freed row's slot counts as
filled until its last read has left the address register.

For the clock: the per-row bookkeeping (rows to wait for, rows to free) is a constant table looked up a row
ahead, and constant products are table lookups, not multipliers (an ECP5 place and route, nextpnr, of a
28x28x16 3x3 window, SIMD 4, went from 56 to 102 MHz with these and the address register).
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import stream


def in_lanes(channels: int, simd: int) -> int:
    """The lanes the window takes per input beat: ``simd`` (channels of one pixel), or one whole pixel when a
    beat holds several taps (``simd > channels``)."""
    return min(simd, channels)


def tap_steps(k: int, taps: int) -> tuple[int, int] | None:
    """(taps per kernel row a beat covers, kernel rows a beat covers) for ``taps`` taps per beat, or None when
    the window cannot hand out that many (``taps`` must divide ``k`` or be ``r*k`` with ``r`` dividing ``k``)."""
    if taps >= 1 and k % taps == 0:
        return taps, 1
    if taps % k == 0 and k % (taps // k) == 0:
        return k, taps // k
    return None


def legal_simd(channels: int, k: int, depthwise: bool = False) -> list[int]:
    """Every SIMD the window generator accepts: divisors of the channels, and (conv) whole pixels times a tap
    count :func:`tap_steps` accepts."""
    out = [d for d in range(1, channels + 1) if channels % d == 0]
    if not depthwise:
        out += [t * channels for t in range(2, k * k + 1) if tap_steps(k, t)]
    return out


class SlidingWindow(wiring.Component):
    def __init__(self, in_shape: tuple[int, int, int], k: int, stride: int, pad: int, simd: int, bits: int,
                 depthwise: bool = False, rows: int | None = None):
        H, W, C = in_shape
        taps = simd // C if simd > C else 1
        if simd < 1 or (C % simd if simd <= C else simd % C):
            raise ValueError(f"sliding window: SIMD {simd} neither divides the {C} channels nor is a multiple of them")
        if taps > 1 and (depthwise or tap_steps(k, taps) is None):
            raise ValueError(f"sliding window: {taps} kernel taps per beat (SIMD {simd}, {C} channels) need a conv "
                             f"whose K={k} is a multiple of them or whose K*K they split into whole kernel rows")
        if k < 1 or stride < 1 or not 0 <= pad < k:
            raise ValueError(f"sliding window: need K >= 1, stride >= 1, 0 <= pad < K (got K={k}, "
                             f"stride={stride}, pad={pad})")
        self.in_shape, self.k, self.stride, self.pad = (H, W, C), k, stride, pad
        self.simd, self.bits, self.depthwise = simd, bits, depthwise
        self.taps, self.in_lanes = taps, in_lanes(C, simd)
        self.oh, self.ow = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
        if self.oh < 1 or self.ow < 1:
            raise ValueError(f"sliding window: a {k}x{k} window does not fit a {H}x{W} image padded by {pad}")
        self.rows = rows or k + stride  # line-buffer row slots
        if self.rows < k + stride:
            raise ValueError(f"sliding window: {self.rows} line-buffer rows, fewer than K + stride = {k + stride}")
        super().__init__({"i": In(stream.signature(self.in_lanes, bits)), "o": Out(stream.signature(simd, bits))})

    @property
    def beats_per_image(self) -> int:
        """Output beats per image (input beats: H * W * C / in_lanes)."""
        H, W, C = self.in_shape
        return self.oh * self.ow * self.k * self.k * C // self.simd

    def _row_tables(self) -> tuple[list[int], list[int]]:
        """Per output row: the rows (counted from the oldest one it reads) that must be complete before it
        starts, i.e. every row it reads and every row it frees; and the rows it frees when done (the last
        row of an image frees all the image's remaining rows, bottom rows no window reaches included)."""
        H, k, s, p = self.in_shape[0], self.k, self.stride, self.pad
        need, free = [], []
        for oy in range(self.oh):
            top = oy * s - p
            h0, hi, next_h0 = max(0, top), min(H, top + k), min(max(0, top + s), H)
            last = oy == self.oh - 1
            need.append((H if last else max(hi, next_h0)) - h0)
            free.append((H if last else next_h0) - h0)
        assert max(need) <= self.rows, "the line buffer must hold every row one output row waits for"
        return need, free

    def elaborate(self, platform):
        m = Module()
        H, W, C = self.in_shape
        k, s, p, R = self.k, self.stride, self.pad, self.rows
        lanes, T = self.in_lanes, self.taps
        tx, ry = tap_steps(k, T) if T > 1 else (1, 1)  # a beat: tx taps of a kernel row x ry kernel rows
        cf_n = C // lanes
        row_beats = W * cf_n
        # one copy of the line buffer per tap of a beat, each written alike and read through its own port:
        # a 1-write 1-read memory maps to LUTRAM or block RAM as it is, where one memory with T read ports
        # crashed yosys' memory_libmap (convnet's default fit: a 5x5 window on 28x28, 25 taps a beat)
        mems = [Memory(shape=unsigned(lanes * self.bits), depth=R * row_beats, init=[]) for _ in range(T)]
        for j, mem in enumerate(mems):
            m.submodules["mem" if T == 1 else f"mem{j}"] = mem
        wrs = [mem.write_port() for mem in mems]
        rds = [mem.read_port(domain="sync") for mem in mems]  # one per tap of a beat

        filled = Signal(range(R + 1))  # complete rows in the ring whose last read has not happened yet
        avail = Signal(range(R + 1))  # complete rows from the oldest one the reader's current row reads
        head = Signal(range(R))  # slot of that oldest row

        # writer: appends rows into the slot after the filled ones
        wbeat = Signal(range(row_beats))
        waddr = Signal(range(R * row_beats))  # slots are written in order: the address just counts around
        row_done = Signal()
        write = Signal()
        m.d.comb += [self.i.ready.eq(filled < R), write.eq(self.i.valid & self.i.ready)]
        m.d.comb += [c for wr in wrs for c in (wr.addr.eq(waddr), wr.data.eq(self.i.payload), wr.en.eq(write))]
        with m.If(write):
            m.d.sync += [wbeat.eq(Mux(wbeat == row_beats - 1, 0, wbeat + 1)),
                         waddr.eq(Mux(waddr == R * row_beats - 1, 0, waddr + 1))]
            with m.If(wbeat == row_beats - 1):
                m.d.comb += row_done.eq(1)

        # reader: top/left = the window's first padded row/column in image coordinates
        last_top, last_left = (self.oh - 1) * s - p, (self.ow - 1) * s - p
        top = Signal(range(-p, max(last_top, 0) + 1), init=-p)
        left = Signal(range(-p, max(last_left, 0) + 1), init=-p)
        ky, kx, cf = Signal(range(k)), Signal(range(k)), Signal(range(cf_n))
        # per output row, as constants: rows that must be complete before it starts, rows freed after it;
        # looked up for the next row ahead of time, so no arithmetic sits between `filled` and `issue`
        need_tab, free_tab = self._row_tables()
        row = Signal(range(self.oh))
        need = Signal(range(R + 1), init=need_tab[0])
        free = Signal(range(R + 1), init=free_tab[0])

        col_bits = max(W - 1, 1).bit_length()
        top_neg = Mux(top < 0, top, 0)  # r - h0 = ky + dy + min(top, 0): no subtraction of two counters
        # Sx: each tap's image row and column (and its row below the oldest read one), registered before the
        # bounds compares: counter -> adder -> compares -> mux in one cycle was convnet_bn's ECP5 critical path
        # at 10,000 images/s (96.1 MHz)
        x_r = [Signal(range(-p - 1, max(H, last_top + k) + 1), name=f"x_r{j}") for j in range(T)]
        x_c = [Signal(range(-p - 1, max(W, last_left + k) + 1), name=f"x_c{j}") for j in range(T)]
        x_rel = [Signal(range(-p - 1, R + k + 1), name=f"x_rel{j}") for j in range(T)]
        x_head, x_cf, x_valid, x_row_end, x_free = Signal.like(head), Signal.like(cf), Signal(), Signal(), \
            Signal.like(free)
        in_pads, rels, cols = [], [], []
        for j in range(T):  # tap j of a beat: (ky + j // tx, kx + j % tx) of the window
            r, x = x_r[j], x_c[j]
            in_pad = (r < 0) | (r >= H) | (x < 0) | (x >= W)
            in_pads.append(in_pad)
            rels.append(Mux(in_pad, 0, x_rel[j]))  # rows below the oldest read one (pad: any)
            cols.append(Mux(in_pad, 0, x)[:col_bits])

        # pipeline, all stages moving on `advance`: S0 counters -> Sx tap row/column -> Sq bounds checked, row
        # within the ring -> Sp slot register -> S1 address register -> memory read (the memory's own register) ->
        # output register; a row's slots are handed back to the writer when its last read leaves S1, not when it
        # is issued. Sx, Sq and Sp split the address arithmetic (tap coordinates, row within the ring, ring slot,
        # slot and column bases) over four cycles: in one, nextpnr's ECP5 critical path of convnet at 12,099
        # images/s ran from `head` through it into the address register (10.46 ns); in two, convnet_bn's at
        # 10,000 images/s ran from `top` through five carry chains into the slot register (11.78 ns, 84.9 MHz)
        q_pad = [Signal(name=f"q_pad{j}") for j in range(T)]
        q_rel = [Signal(range(R), name=f"q_rel{j}") for j in range(T)]
        q_col = [Signal(col_bits, name=f"q_col{j}") for j in range(T)]
        q_head, q_cf, q_valid, q_row_end, q_free = Signal.like(head), Signal.like(cf), Signal(), Signal(), \
            Signal.like(free)
        out_valid = Signal()
        out_pad = [Signal(name=f"out_pad{j}") for j in range(T)]
        p_pad = [Signal(name=f"p_pad{j}") for j in range(T)]
        p_slot = [Signal(range(R), name=f"p_slot{j}") for j in range(T)]
        p_col = [Signal(col_bits, name=f"p_col{j}") for j in range(T)]
        p_cf, p_valid, p_row_end, p_free = Signal.like(cf), Signal(), Signal(), Signal.like(free)
        s1_pad = [Signal(name=f"s1_pad{j}") for j in range(T)]
        s1_addr = [Signal.like(rds[0].addr, name=f"s1_addr{j}") for j in range(T)]
        s1_valid, s1_row_end, s1_free = Signal(), Signal(), Signal.like(free)
        o_valid, o_data = Signal(), Signal(T * lanes * self.bits)  # a register behind the memory's own: a block
        # RAM's clock-to-out (5.83 ns on the ECP5) into the MVU was dwsep's critical path
        advance = ~o_valid | self.o.ready  # the output register is free next cycle
        issue = advance & (need <= avail)
        row_end = Signal()
        m.d.comb += [self.o.valid.eq(o_valid), self.o.payload.eq(o_data)]
        with m.If(advance):
            m.d.sync += [o_valid.eq(out_valid), o_data.eq(Cat(*[Mux(out_pad[j], 0, rds[j].data) for j in range(T)]))]
        m.d.comb += [p.en.eq(advance) for p in rds] + [p.addr.eq(a) for p, a in zip(rds, s1_addr)]
        # constant products from small tables, not multipliers (yosys put a DSP multiply on this path)
        slot_base = Array(Const(n * row_beats) for n in range(R))
        col_base = Array(Const(n * cf_n) for n in range(W))
        addrs = [Mux(p_pad[j], 0, slot_base[p_slot[j]] + col_base[p_col[j]] + p_cf) for j in range(T)]
        slots = [Mux(q_head + q_rel[j] >= R, q_head + q_rel[j] - R, q_head + q_rel[j]) for j in range(T)]
        with m.If(advance):
            m.d.sync += [x_valid.eq(issue), x_row_end.eq(row_end), x_free.eq(free), x_cf.eq(cf), x_head.eq(head)]
            m.d.sync += [x_r[j].eq(top + ky + j // tx) for j in range(T)]
            m.d.sync += [x_c[j].eq(left + kx + j % tx) for j in range(T)]
            m.d.sync += [x_rel[j].eq(ky + j // tx + top_neg) for j in range(T)]
            m.d.sync += [q_valid.eq(x_valid), q_row_end.eq(x_row_end), q_free.eq(x_free), q_cf.eq(x_cf),
                         q_head.eq(x_head)]
            m.d.sync += [q_pad[j].eq(in_pads[j]) for j in range(T)] + [q_rel[j].eq(rels[j]) for j in range(T)]
            m.d.sync += [q_col[j].eq(cols[j]) for j in range(T)]
            m.d.sync += [p_valid.eq(q_valid), p_row_end.eq(q_row_end), p_free.eq(q_free), p_cf.eq(q_cf)]
            m.d.sync += [p_pad[j].eq(q_pad[j]) for j in range(T)] + [p_slot[j].eq(slots[j]) for j in range(T)]
            m.d.sync += [p_col[j].eq(q_col[j]) for j in range(T)]
            m.d.sync += [s1_valid.eq(p_valid), s1_row_end.eq(p_row_end), s1_free.eq(p_free), out_valid.eq(s1_valid)]
            m.d.sync += [s1_pad[j].eq(p_pad[j]) for j in range(T)] + [s1_addr[j].eq(addrs[j]) for j in range(T)]
            m.d.sync += [out_pad[j].eq(s1_pad[j]) for j in range(T)]

        loops = [(kx, 0, k - 1, 1), (ky, 0, k - 1, 1), (cf, 0, cf_n - 1, 1)] if self.depthwise else \
            [(cf, 0, cf_n - 1, 1), (kx, 0, k - tx, tx), (ky, 0, k - ry, ry)]
        loops += [(left, -p, last_left, s), (top, -p, last_top, s)]
        # each loop counter keeps a flop saying it is at its last value, set with the counter from the counter's
        # own compare with a constant: the carries (and row_end, which the issue logic feeds into `avail`) are
        # ANDs of flops, not compares of counters (MVU ready -> issue -> carry compares -> row_end -> avail was
        # dwsep's default's ECP5 critical path at 93.21 MHz, six LUT levels)
        with m.If(issue):
            carry = None  # innermost loop always steps
            for n, (sig, first, last, inc) in enumerate(loops):
                at_last = Signal(init=int(first == last), name=f"{sig.name}_at_last")
                with m.If(carry if carry is not None else 1):
                    m.d.sync += [sig.eq(Mux(at_last, first, sig + inc)),
                                 at_last.eq(Mux(at_last, first == last, sig == last - inc))]
                carry = at_last if carry is None else carry & at_last
                if n == len(loops) - 2:  # every loop inside `top` at its last value: the output row ends
                    m.d.comb += row_end.eq(carry)

        with m.If(row_end):
            nxt_row = Mux(row == self.oh - 1, 0, row + 1)
            m.d.sync += [row.eq(nxt_row), need.eq(Array(Const(v) for v in need_tab)[nxt_row]),
                         free.eq(Array(Const(v) for v in free_tab)[nxt_row])]
        # the reader frees `free` rows at a row end: both outcomes are computed from registers and row_end only
        # selects, so the issue logic (advance, need <= avail, the loop carries) ends in a mux, not in adders
        # (advance -> row_end -> head + freed -> wrap compare was convnet_bn's ECP5 critical path at 10,000
        # images/s, 97.8 MHz)
        released = Mux(advance & s1_valid & s1_row_end, s1_free, 0)  # the writer's: after the last read
        head_raw = head + free
        m.d.sync += [avail.eq(Mux(row_end, avail + row_done - free, avail + row_done)),
                     filled.eq(filled + row_done - released),
                     head.eq(Mux(row_end, Mux(head_raw >= R, head_raw - R, head_raw), head))]
        return m
