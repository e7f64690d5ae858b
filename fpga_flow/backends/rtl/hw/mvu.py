"""The folded matrix-vector unit (FINN's MVU/VVU, our own RTL): PE neurons x SIMD synapses per cycle.

One output pixel's vector of ``n = K*K*C`` input values (``in`` below) is consumed SIMD values per beat. The
OC neurons are computed PE at a time in ``NF = OC/PE`` neuron folds, each going over the vector in
``SF = n/SIMD`` synapse folds, so a vector takes exactly ``NF*SF`` cycles when nothing stalls (II=1):

* the first neuron fold takes the vector from the stream and writes it into an input buffer (``SF`` words of
  SIMD values); the other folds read it back, so the stream delivers each value once;
* the weights sit in a ROM, one word per ``(nf, sf)`` holding PE*SIMD weights, read synchronously so yosys can
  map it to LUTRAM/BRAM;
* PE x SIMD multipliers and one adder tree per PE feed PE accumulators whose width is computed exactly from
  the weights and the input range (:func:`acc_bits`);
* a second ROM, one word per neuron fold, holds the requantization thresholds (bias folded in), base and
  direction per PE, or, for a final layer, the bias added to the accumulator.

Depthwise (``kind='depthwise'``, PE == SIMD, FINN's VVU) runs in the same datapath without the input buffer and
the SIMD adder tree: channel group ``g`` (``NF = C/PE`` groups) takes ``SF = K*K`` beats from the stream and
lane ``p`` multiplies channel ``g*PE+p`` by its own weight.

Pipeline: S0 counters/ROM addresses -> S1 ROM/buffer outputs -> Sa registered operands -> Sb registered
products -> S2 adder tree -> accumulators -> S3 threshold compares -> S4 count and base -> output register ->
the output queue. Nothing behind S0 ever stalls: every stage moves every cycle, and S0 issues the beat that
completes an output only while the output queue has a free place for it counting the outputs still in the
pipeline (credits, :func:`queue_depth`). So ``i.ready`` comes from the fold counters and the credit counter,
never from ``o.ready``, and no enable fans out to every pipeline register: the stall signal that did
(``adv = ~o.valid | o.ready``) was the ECP5 critical path of mlp_tiny (97.90 MHz) and convnet (43.35 MHz,
21.65 ns of routing across the part). The operand and product registers were added after nextpnr put the
ECP5 critical path through the block RAM's clock-to-out, a multiplier and the tree in one cycle (48.6 MHz on
a 3x3 16->32 conv, PE=4 SIMD=8; 110.7 MHz after). Latency from an input beat to the output beat it
completes: :func:`latency`.
"""

from __future__ import annotations

import numpy as np
from amaranth import Array, Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import spec, stream

RAM_STYLES = ("auto", "block", "distributed", "logic")
BLOCK_MIN_DEPTH = 64  # "auto": weight ROMs of this many words (NF*SF) or more go to block RAM
BRAM_ASPECTS = ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1))  # depth x width of one
# Xilinx RAMB18 (7-series/UltraScale) and one Lattice DP16KD alike


def weight_banks(depth: int, width: int) -> tuple[int, int]:
    """(words, bits) of one block RAM holding part of a ``depth`` x ``width`` ROM: the aspect ratio of fewest
    block RAMs, fewest banks on a tie. The MVU builds the ROM from block RAMs of exactly this shape, so none is
    deeper than one block RAM: yosys left to split one deep ROM itself chose a mux of several block RAMs'
    outputs straight after their clock-to-out (mlp_bn's ECP5 critical path at 10,000 images/s, 98.3 MHz); each
    bank's output is registered before the bank select instead."""
    d, w = min(BRAM_ASPECTS, key=lambda a: (-(-depth // a[0]) * -(-width // a[1]), -(-depth // a[0])))
    return min(d, depth), min(w, width)


def weight_ram_style(depth: int, ram_style: str = "auto") -> str:
    """The synthesis attribute the weight ROM gets (``auto`` resolved here, so the cost model knows it)."""
    if ram_style != "auto":
        return ram_style
    return "block" if depth >= BLOCK_MIN_DEPTH else "logic"


OPERAND_PES = 4  # PEs that share one copy of the input operand register a_x (7b56142 tried one per PE: convnet's
# default fell from 80.04 to 64.75 MHz, its path moved to layer 2's weight ROM logic, 14 ns of routing; reverted.
# One per PE loaded from copies of the stream/buffer mux per 4 PEs, a tree of fan-out 4, measured 74.58 MHz on
# convnet, the path again in layer 2's weight ROM logic: not kept either; docs/bench/rtl.md)


def operand_copies(pe: int) -> int:
    """Copies of the input operand register ``a_x`` an MVU of ``pe`` PEs keeps, one per OPERAND_PES PEs. With
    one register for all PEs, every input bit fanned out to all PEs' multipliers across the chip: the ECP5
    critical path of the default fit designs (mlp 62.09 MHz, mlp_bn 57.23 MHz, nextpnr router2: 11.6 and
    12.6 ns of routing on one ``a_x`` bit) and of mlp_tiny's (95.43 MHz). One copy per 4 PEs is still convnet's path at 80.04 MHz (a bit of layer 0's copy into four PEs'
    LUT products), but one per PE measured slower (64.75 MHz, another path; docs/bench/rtl.md)."""
    return max(1, -(-pe // OPERAND_PES))


ROM_PES = 1  # PEs that share one copy of the address register of a weight ROM in logic


def rom_copies(layer: spec.Mac, ram_style: str = "auto") -> int:
    """Copies of the weight ROM's address register an MVU keeps: a ROM in logic (fewer than
    :data:`BLOCK_MIN_DEPTH` words) of more than one word is built per group of ROM_PES PEs, each read at its own
    copy of the address. With one ROM, yosys merged every weight bit that is the same function of the address
    (with two words: the address bit or its inverse) into one flip-flop of ``a_w``: convnet's first layer (NF 2)
    had ``a_w`` bits driving 1,719 LUT inputs across all five PEs, its ECP5 critical path (12.64 ns of routing,
    52.95 MHz)."""
    nf, sf = folding(layer)
    if nf * sf == 1 or weight_ram_style(nf * sf, ram_style) == "block":
        return 1
    return -(-layer.pe // ROM_PES)


SELECT_BITS = 32  # operand bits one copy of the stream/buffer select flop (``s1_stream``) drives


def select_copies(layer: spec.Mac, ram_style: str = "auto") -> int:
    """Copies of the flop that selects the stream or the input buffer for the operand register: one per
    SELECT_BITS operand bits of each operand copy (0 without an input buffer: no select), and each copy of the
    operand register gets its own mux, next to it. With one flop and one mux for all copies, the flop drove the
    mux of every operand bit (convnet's layer 2: SIMD 50 x 4 bits, 200 LUTs) and each mux three copies across
    the chip: the ECP5 critical path of convnet's default design at 84.85 MHz (7.02 ns of routing on the
    select's net, 4.00 ns from a mux to a far copy). The price: a mux LUT per operand bit per extra copy."""
    nf, sf = folding(layer)
    if layer.kind == "depthwise" or nf == 1:
        return 0
    per_copy = -(-layer.simd * layer.in_bits // SELECT_BITS)
    return per_copy * (1 if weight_ram_style(nf * sf, ram_style) == "block" else operand_copies(layer.pe))


# yosys' opt_merge would make one register of the copies again (same input, same enable): the synthesis scripts
# (fpga_flow.yosys.script, measure.ecp5_script) mark the flip-flops driving a wire Amaranth emitted with the
# ``keep`` attribute as kept (fpga_flow.yosys.KEEP_REPLICAS), which opt_merge leaves alone.

LATENCY = 8  # cycles from an input beat's handshake to o.valid of the output beat it completes (SIMD <= 8,
# weights not in block RAM; :func:`latency`): 7 to the output register, 1 through the output queue
QUEUE_SLACK = 1  # credits beyond the pipeline's latency: a returned credit is seen one cycle after the pop
TREE_LEVELS = 3  # adder levels per pipeline stage of the SIMD adder tree
TREE_GROUP = 1 << TREE_LEVELS  # products summed in one stage


def tree_stages(simd: int) -> int:
    """Registered stages of the SIMD adder tree: one, plus one per TREE_GROUP-fold reduction a wider SIMD needs
    first (SIMD 48 on one cycle was six adder levels: the ECP5's critical path on wide foldings)."""
    n, stages = simd, 1
    while n > TREE_GROUP:
        n, stages = -(-n // TREE_GROUP), stages + 1
    return stages


def latency(layer: spec.Mac, ram_style: str = "auto") -> int:
    """Cycles from an input beat's handshake to o.valid of the output beat it completes: one more for a weight
    ROM in block RAM (its output registered once more), and per extra adder-tree stage."""
    nf, sf = folding(layer)
    block = weight_ram_style(nf * sf, ram_style) == "block"
    return LATENCY + block + tree_stages(1 if layer.kind == "depthwise" else layer.simd) - 1


def queue_depth(layer: spec.Mac, ram_style: str = "auto") -> int:
    """Output beats the MVU's queue holds: as many as can be in flight when the consumer takes every beat, one
    output per SF cycles over the latency and the credit's return, so a ready consumer never stops issue."""
    _, sf = folding(layer)
    return -(-(latency(layer, ram_style) + QUEUE_SLACK) // sf)


def signed_bits(lo: int, hi: int) -> int:
    """Fewest two's-complement bits holding every integer in [lo, hi]."""
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def in_range(layer: spec.Mac) -> tuple[int, int]:
    b = layer.in_bits
    return (-(1 << (b - 1)), (1 << (b - 1)) - 1) if layer.in_signed else (0, (1 << b) - 1)


def weight_matrix(layer: spec.Mac) -> np.ndarray:
    """(rows, n): conv (OC, K*K*IC) in (ky, kx, c) order, dense (OC, IC), depthwise (C, K*K)."""
    w = np.asarray(layer.weights, dtype=np.int64)
    return w.reshape(w.shape[0], -1)


def _product_bounds(layer: spec.Mac) -> tuple[np.ndarray, np.ndarray]:
    """Per weight, the least and greatest product with any input value (the input range holds 0)."""
    lo, hi = in_range(layer)
    w = weight_matrix(layer)
    return np.minimum(w * lo, w * hi), np.maximum(w * lo, w * hi)


def acc_range(layer: spec.Mac, with_bias: bool = True) -> tuple[int, int]:
    """The exact range any partial or final accumulator (plus bias) can reach over all inputs: each row's
    least/greatest products summed (the input range holds 0, so every partial sum lies inside too)."""
    plo, phi = _product_bounds(layer)
    lo, hi = plo.sum(1), phi.sum(1)
    if with_bias and layer.bias is not None:
        b = np.asarray(layer.bias, dtype=np.int64)
        lo, hi = np.minimum(lo, lo + b), np.maximum(hi, hi + b)
    return int(min(lo.min(), 0)), int(max(hi.max(), 0))


def acc_bits(layer: spec.Mac) -> int:
    """Two's-complement accumulator width: holds every partial sum and the final sum plus bias of any input.
    A final layer's ``out_bits`` must be at least this."""
    return signed_bits(*acc_range(layer, with_bias=True))


def folding(layer: spec.Mac) -> tuple[int, int]:
    """(NF, SF): neuron and synapse folds; a vector takes NF*SF cycles. Raises ValueError on a bad folding."""
    w = weight_matrix(layer)
    rows, n = w.shape
    pe, simd = layer.pe, layer.simd
    if layer.kind not in ("conv", "dense", "depthwise"):
        raise ValueError(f"MVU: unknown layer kind {layer.kind!r} (conv, dense, depthwise)")
    if layer.kind == "depthwise" and pe != simd:
        raise ValueError(f"MVU depthwise needs pe == simd (got pe={pe}, simd={simd})")
    if pe < 1 or rows % pe:
        raise ValueError(f"MVU: pe={pe} must divide the {rows} output channels")
    if layer.kind == "depthwise":
        return rows // pe, n
    if simd < 1 or n % simd:
        raise ValueError(f"MVU: simd={simd} must divide the vector length {n}")
    return rows // pe, n // simd


def check_layer(layer: spec.Mac) -> tuple[int, int]:
    """(NF, SF) of a layer the MVU can build; ValueError naming what is wrong otherwise (call it before
    constructing, as the MVU does, so a refused layer leaves no half-built component behind)."""
    nf_sf = folding(layer)
    if layer.requant is None and layer.out_bits < acc_bits(layer):
        raise ValueError(f"MVU final layer: out_bits={layer.out_bits} < acc_bits={acc_bits(layer)}")
    if layer.requant is not None and layer.out_bits < 1:
        raise ValueError("MVU: a requantized layer needs out_bits >= 1")
    return nf_sf


class MVU(wiring.Component):
    """Folded matrix-vector unit for one :class:`spec.Mac` (conv, dense or depthwise); see the module doc."""

    def __init__(self, layer: spec.Mac, ram_style: str = "auto") -> None:
        """``ram_style``: how synthesis should build the weight ROM: "block" (BRAM), "distributed" (LUTRAM),
        "logic", or "auto": block from :data:`BLOCK_MIN_DEPTH` words on, logic below (a shallow ROM would
        use a BRAM per 36 bits of width; as logic, yosys folds the constants)."""
        if ram_style not in RAM_STYLES:
            raise ValueError(f"MVU ram_style {ram_style!r}; valid: {', '.join(RAM_STYLES)}")
        self.layer, self.ram_style = layer, ram_style
        self.nf, self.sf = check_layer(layer)
        self.dw = layer.kind == "depthwise"
        self.abits = acc_bits(layer) if layer.requant is None else signed_bits(*acc_range(layer, False))
        super().__init__({"i": In(stream.signature(layer.simd, layer.in_bits)),
                          "o": Out(stream.signature(layer.pe, layer.out_bits))})

    # ---- ROM contents (plain Python ints; also what the cost model counts) ----

    def weight_words(self) -> tuple[int, list[int]]:
        """(bits per weight, one word per (nf, sf)): weight (p, s) at bits [(p*SIMD+s)*wb, ...)."""
        w = weight_matrix(self.layer)
        wb = signed_bits(int(min(w.min(), 0)), int(max(w.max(), 0)))
        pe, simd, words = self.layer.pe, self.layer.simd, []
        for nf in range(self.nf):
            for sf in range(self.sf):
                if self.dw:
                    vals = [w[nf * pe + p, sf] for p in range(pe)]
                else:
                    vals = [w[nf * pe + p, sf * simd + s] for p in range(pe) for s in range(simd)]
                words.append(stream.pack(vals, wb))
        return wb, words

    def param_layout(self) -> dict:
        """The per-neuron-fold word: requant -> L thresholds (bias folded in), base, direction bit per PE;
        final layer -> the bias per PE."""
        rq = self.layer.requant
        if rq is None:
            return {"kind": "bias", "bits": self.abits}
        lo, hi = acc_range(self.layer, with_bias=False)
        T = np.asarray(rq.T, dtype=np.int64)
        base = np.asarray(rq.base, dtype=np.int64)
        tb = signed_bits(lo, hi + 1)
        bb = signed_bits(int(min(base.min(), 0)), int(max(base.max(), 0)))
        return {"kind": "thresholds", "L": int(T.shape[1]), "tbits": tb, "bbits": bb, "lo": lo, "hi": hi,
                "bits": T.shape[1] * tb + bb + 1}

    def param_words(self) -> list[int]:
        lay, pe = self.param_layout(), self.layer.pe
        rows = weight_matrix(self.layer).shape[0]
        bias = np.zeros(rows, np.int64) if self.layer.bias is None else np.asarray(self.layer.bias, np.int64)
        words = []
        for nf in range(self.nf):
            fields = []
            for p in range(pe):
                c = nf * pe + p
                if lay["kind"] == "bias":
                    fields.append(stream.pack([bias[c]], lay["bits"]))
                    continue
                rq = self.layer.requant
                # acc + b >= T  <=>  acc >= T - b; clamp to what acc can hold: <= lo is always, > hi never
                t = np.clip(np.asarray(rq.T[c], np.int64) - bias[c], lay["lo"], lay["hi"] + 1)
                tbits = len(t) * lay["tbits"]
                word = stream.pack(t, lay["tbits"]) | (stream.pack([rq.base[c]], lay["bbits"]) << tbits)
                word |= int(rq.direction[c] < 0) << (tbits + lay["bbits"])
                fields.append(word)
            words.append(sum(f << (p * lay["bits"]) for p, f in enumerate(fields)))
        return words

    # ---- hardware ----

    def elaborate(self, platform):
        m = Module()
        L, pe, simd = self.layer, self.layer.pe, self.layer.simd
        nf_n, sf_n = self.nf, self.sf
        wb, wwords = self.weight_words()
        lanes_w = pe if self.dw else pe * simd
        style = weight_ram_style(len(wwords), self.ram_style)
        attrs = {"ram_style": style, "rom_style": style}
        width = lanes_w * wb
        depth, slice_w = weight_banks(len(wwords), width) if style == "block" else (len(wwords), width)
        n_banks = -(-len(wwords) // depth)
        bank_bits = (depth - 1).bit_length()  # several banks: depth is a power of two
        bank_data = []  # the read data of each bank; its addr/en in wports
        wports = []
        n_roms = rom_copies(L, self.ram_style)
        for b in range(n_banks if n_roms == 1 else 0):
            init = wwords[b * depth:(b + 1) * depth]
            slices = []
            for lo in range(0, width, slice_w):  # bits lo.. of every word of this bank: one block RAM
                part = [(v >> lo) & ((1 << slice_w) - 1) for v in init] if slice_w < width else init
                mem = Memory(shape=unsigned(min(slice_w, width - lo)), depth=len(init), init=part, attrs=attrs)
                m.submodules[f"wrom{b}_{lo}" if (n_banks, slice_w) != (1, width) else "wrom"] = mem
                wports.append(mem.read_port())
                slices.append(wports[-1].data)
            bank_data.append(Cat(*slices))
        lay = self.param_layout()
        pwords = self.param_words()
        m.submodules.prom = prom = Memory(shape=unsigned(pe * lay["bits"]), depth=nf_n, init=pwords)
        prp = prom.read_port()

        # ---- the output queue and its credits: outputs issued at S0 and not yet taken by the consumer ----
        q_depth = queue_depth(L, self.ram_style)
        m.submodules.queue = queue = SyncFIFO(width=pe * L.out_bits, depth=q_depth)
        owed = Signal(range(q_depth + 1))  # never above q_depth: the queue cannot overflow
        m.d.comb += [self.o.valid.eq(queue.r_rdy), self.o.payload.eq(queue.r_data), queue.r_en.eq(self.o.ready)]

        # ---- S0: fold counters, ROM addresses, input buffer ----
        nf = Signal(range(max(nf_n, 2)))
        sf = Signal(range(max(sf_n, 2)))
        waddr = Signal(range(max(nf_n * sf_n, 2)))
        completes = sf == sf_n - 1  # this beat completes an output: it needs a credit
        # `may` (a beat may issue: it completes no output, or a credit is free) and `from_stream` (the first
        # neuron fold takes its beat from the stream) are flops, computed from the next state of the counters
        # and the credits: so i.ready is one AND of two flops. Computed from the state itself, it was the ECP5
        # critical path of dwsep's default design (90.03 MHz): layer 5's `sf` through the credit test into the
        # sliding-window generator's issue logic, which stalls on this ready. Registered: 93.21 MHz, the path now
        # starts at this flop (placed 60 tiles from the window) and ends in the same issue logic.
        may, from_stream = Signal(init=1), Signal(init=1)  # the values of the state after reset
        fire = Signal()
        sf_nx, nf_nx, owed_nx = Signal.like(sf), Signal.like(nf), Signal.like(owed)
        m.d.comb += [self.i.ready.eq(may & from_stream),
                     fire.eq(may & (self.i.valid | ~from_stream)),
                     *[c for wrp in wports for c in (wrp.addr.eq(waddr if n_banks == 1 else waddr[:bank_bits]),
                                                   wrp.en.eq(1))],
                     owed_nx.eq(owed + (fire & completes) - (self.o.valid & self.o.ready)),
                     sf_nx.eq(sf), nf_nx.eq(nf)]
        with m.If(fire):
            m.d.sync += waddr.eq(Mux(waddr == nf_n * sf_n - 1, 0, waddr + 1))
            with m.If(completes):
                m.d.comb += [sf_nx.eq(0), nf_nx.eq(Mux(nf == nf_n - 1, 0, nf + 1))]
            with m.Else():
                m.d.comb += sf_nx.eq(sf + 1)
        m.d.sync += [sf.eq(sf_nx), nf.eq(nf_nx), owed.eq(owed_nx),
                     may.eq((sf_nx != sf_n - 1) | (owed_nx < q_depth)),
                     from_stream.eq(1 if (self.dw or nf_n == 1) else (nf_nx == 0))]

        xw = simd * L.in_bits
        s1_x, s1_valid, s1_first, s1_last = Signal(xw), Signal(), Signal(), Signal()
        s1_nf = Signal.like(nf)
        m.d.sync += [s1_valid.eq(fire), s1_x.eq(self.i.payload), s1_first.eq(sf == 0),
                     s1_last.eq(completes), s1_nf.eq(nf)]
        if self.dw or nf_n == 1:
            sels = []
        else:
            m.submodules.ibuf = ibuf = Memory(shape=unsigned(xw), depth=sf_n, init=[])
            bwp, brp = ibuf.write_port(), ibuf.read_port()
            m.d.comb += [bwp.addr.eq(sf), bwp.data.eq(self.i.payload), bwp.en.eq(fire & from_stream),
                         brp.addr.eq(sf), brp.en.eq(1)]
            # the select as kept copies, each driving SELECT_BITS bits of one operand copy's mux (select_copies)
            chunks = range(0, xw, SELECT_BITS)
            sels = [Signal(name=f"s1_stream_rep{i}", attrs={"keep": 1}) for i in range(select_copies(L, self.ram_style))]
            m.d.sync += [c.eq(from_stream) for c in sels]

        def operand(g: int) -> Value:
            """The operand for copy ``g`` of its register: the stream's beat, or the buffer's through copy g's
            selects."""
            if not sels:
                return s1_x
            return Cat(*[Mux(sels[g * len(chunks) + n], s1_x[lo:lo + SELECT_BITS], brp.data[lo:lo + SELECT_BITS])
                         for n, lo in enumerate(chunks)])

        def delay(value, name, attrs=None):
            """``value`` (a signal or an expression, at its full width) one pipeline stage later."""
            r = Signal(Value.cast(value).shape(), name=name, attrs=attrs or {})
            m.d.sync += r.eq(value)
            return r

        def delay_word(value, words, name):
            """:func:`delay` of a ROM's read data ``value`` whose possible words are ``words``: the bits equal in
            every word are constants, not flip-flops. A register of a constant 1 (0 after reset) survives
            synthesis, and yosys made one flip-flop of all such bits of a layer: one net to every product."""
            same, ones = _fixed_bits(words, len(value))
            if not same:
                return delay(value, name)
            free = [i for i in range(len(value)) if not same >> i & 1]
            r = delay(Cat(*[value[i] for i in free]), name) if free else Const(0, 0)
            where = {i: j for j, i in enumerate(free)}
            return Cat(*[r[where[i]] if i in where else Const(ones >> i & 1, 1) for i in range(len(value))])

        # ---- S1 -> Sa: register the operands (the ROM/buffer outputs), for the clock rate ----
        tags = {"valid": s1_valid, "first": s1_first, "last": s1_last, "nf": s1_nf}
        if style == "block":  # one more register behind a block RAM's 5.6 ns clock-to-out (ECP5)
            r_x = delay(operand(0), "r_x")
            if n_banks == 1:
                w = delay(bank_data[0], "r_w")
            else:
                bank = Signal(range(n_banks))
                m.d.sync += bank.eq(waddr[bank_bits:])  # S1: the bank the read in flight comes from
                w = Array(delay(d, f"r_w{b}") for b, d in enumerate(bank_data))[delay(bank, "r_bank")]
            tags = {k: delay(v, f"r_{k}") for k, v in tags.items()}
        elif n_roms == 1:
            w = bank_data[0]
        else:  # a ROM in logic per group of PEs, each read at its own (kept) copy of the S1 address (rom_copies)
            lanes_g = lanes_w // pe * -(-pe // n_roms)  # weights of one group's PEs
            parts = []
            for g, lo in enumerate(range(0, width, lanes_g * wb)):
                gw = min(lanes_g * wb, width - lo)
                addr = Signal.like(waddr, name=f"w_addr_rep{g}", attrs={"keep": 1})
                m.d.sync += addr.eq(waddr)
                mem = Memory(shape=unsigned(gw), depth=len(wwords), init=[(v >> lo) & ((1 << gw) - 1) for v in wwords],
                             attrs=attrs)
                m.submodules[f"wrom_g{g}"] = mem
                rp = mem.read_port(domain="comb")
                m.d.comb += rp.addr.eq(addr)
                parts.append(rp.data)
            w = Cat(*parts)
        n_rep = 1 if self.dw else operand_copies(pe)
        copy = (lambda g: r_x) if style == "block" else operand
        if n_rep == 1:
            a_xs = [delay(copy(0), "a_x")]
        else:  # each group of PEs reads its own copy of the input operand (kept apart in synthesis: KEEP_REPLICAS)
            a_xs = [delay(copy(g), f"a_x_rep{g}", {"keep": 1}) for g in range(n_rep)]
        per_copy = -(-pe // n_rep)
        a_w = delay(w, "a_w") if style == "block" else delay_word(w, wwords, "a_w")
        a_tags = {k: delay(v, f"a_{k}") for k, v in tags.items()}

        # ---- Sa -> Sb: PE x SIMD registered products ----
        mul = lut_product if L.lut_products else (lambda a, b: a * b)
        terms = []
        for p in range(pe):
            a_x = a_xs[p // per_copy]
            if self.dw:
                prods = [mul(stream.lane(a_x, p, L.in_bits, L.in_signed), stream.lane(a_w, p, wb, True))]
            else:
                prods = [mul(stream.lane(a_x, s, L.in_bits, L.in_signed), stream.lane(a_w, p * simd + s, wb, True))
                         for s in range(simd)]
            terms.append([delay(v, f"b_prod{p}_{s}") for s, v in enumerate(prods)])
        b_tags = {k: delay(v, f"b_{k}") for k, v in a_tags.items()}

        # ---- Sb -> S2: one exact adder tree per PE, registered every TREE_LEVELS adder levels ----
        stage = 0
        while len(terms[0]) > TREE_GROUP:  # a wide SIMD: partial sums of TREE_GROUP products each, registered
            stage += 1
            terms = [[delay(_tree(t[i:i + TREE_GROUP]), f"t{stage}_sum{p}_{i // TREE_GROUP}")
                      for i in range(0, len(t), TREE_GROUP)] for p, t in enumerate(terms)]
            b_tags = {k: delay(v, f"t{stage}_{k}") for k, v in b_tags.items()}
        plo, phi = _product_bounds(L)
        if self.dw:
            dot_range = (int(min(plo.min(), 0)), int(max(phi.max(), 0)))
        else:  # the widest sum any one (nf, sf) word can produce for any PE row
            sl = plo.reshape(plo.shape[0], sf_n, simd).sum(2)
            sh = phi.reshape(phi.shape[0], sf_n, simd).sum(2)
            dot_range = (int(min(sl.min(), 0)), int(max(sh.max(), 0)))
        dbits = signed_bits(*dot_range)
        s2_dot = [Signal(signed(dbits), name=f"s2_dot{p}") for p in range(pe)]
        for p in range(pe):
            m.d.sync += s2_dot[p].eq(_tree(terms[p]))  # exact: dbits holds every sum
        s2 = {k: delay(v, f"s2_{k}") for k, v in b_tags.items()}

        # ---- S2: accumulate; the per-fold parameters are read for S3 ----
        ab = self.abits
        acc = [Signal(signed(ab), name=f"acc{p}") for p in range(pe)]
        for p in range(pe):
            with m.If(s2["valid"]):
                m.d.sync += acc[p].eq(Mux(s2["first"], 0, acc[p]) + s2_dot[p])  # exact: ab holds every partial sum
        if nf_n > 1:  # read a stage early (the beat's own fold) and register the word: a block RAM's clock-to-out
            # (5.83 ns on the ECP5) into the threshold compares was mlp_bn's critical path (94.4 MHz)
            m.d.comb += [prp.addr.eq(b_tags["nf"]), prp.en.eq(1)]
            pword = delay_word(prp.data, pwords, "s3_word")
        else:  # one word: a constant ROM, no block RAM
            m.d.comb += [prp.addr.eq(s2["nf"]), prp.en.eq(1)]
            pword = prp.data
        s3_valid = delay(s2["valid"] & s2["last"], "s3_valid")

        # ---- S3: compare with the thresholds (or add the bias) -> S4: count, base -> output register ----
        ob = L.out_bits
        codes = [Signal(ob, name=f"code{p}") for p in range(pe)]  # .eq sign-extends or truncates to ob bits
        for p in range(pe):
            word = pword[p * lay["bits"]:(p + 1) * lay["bits"]]
            if lay["kind"] == "bias":
                m.d.comb += codes[p].eq(delay(acc[p] + word.as_signed(), f"s4_sum{p}"))
                continue
            tb, n_t = lay["tbits"], lay["L"]
            hits = delay(Cat(*[acc[p] >= word[k * tb:(k + 1) * tb].as_signed() for k in range(n_t)]),
                         f"s4_hits{p}")
            count = _tree([hits[k] for k in range(n_t)]) if n_t else Const(0, 1)
            base = delay(word[n_t * tb:n_t * tb + lay["bbits"]].as_signed(), f"s4_base{p}")
            neg = delay(word[n_t * tb + lay["bbits"]], f"s4_neg{p}")
            m.d.comb += codes[p].eq(Mux(neg, base - count, base + count))
        s4_valid = delay(s3_valid, "s4_valid")
        out_valid, out_codes = delay(s4_valid, "out_valid"), delay(Cat(*codes), "out_codes")
        m.d.comb += [queue.w_en.eq(out_valid), queue.w_data.eq(out_codes)]  # room: the credits kept it
        return m


def lut_product(a: Value, b: Value) -> Value:
    """``a * b`` as shift-and-add rows, one per bit of the narrower operand (a two's-complement operand's sign
    row subtracted), at the width of ``a * b``. No ``$mul`` reaches yosys, so no family's synthesis puts it in a
    DSP block: the MVU's ``lut_products`` (:func:`fpga_flow.backends.rtl.folding.lut_products` sets it where
    the part's DSPs run out). An 8-bit x 4-bit product: 44 LUT by yosys synth_xilinx (47 for yosys' own LUT
    multiplier, ``-nodsp``)."""
    a, b = Value.cast(a), Value.cast(b)
    shape = (a * b).shape()
    if len(a) > len(b):
        a, b = b, a
    rows = [Mux(a[j], b << j, 0) for j in range(len(a))]
    neg = rows.pop() if a.shape().signed else None
    total = _tree(rows) if rows else Const(0, 1)
    out = total - neg if neg is not None else total
    return out.as_signed()[:shape.width].as_signed() if shape.signed else out[:shape.width]


def _fixed_bits(words: list[int], width: int) -> tuple[int, int]:
    """(mask of the bits equal in every word, their values)."""
    full = (1 << width) - 1
    all_ones, any_one = full, 0
    for v in words:
        all_ones, any_one = all_ones & v, any_one | v
    same = ~(all_ones ^ any_one) & full
    return same, all_ones & same


def _tree(terms: list):
    """Balanced sum (depth log2 n, not a chain of n adders); Amaranth widens each add by one bit."""
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


__all__ = ["MVU", "check_layer", "rom_copies", "ROM_PES", "queue_depth", "QUEUE_SLACK", "lut_product", "operand_copies", "OPERAND_PES", "select_copies", "SELECT_BITS", "LATENCY", "TREE_LEVELS", "TREE_GROUP", "tree_stages", "latency", "RAM_STYLES", "BLOCK_MIN_DEPTH", "weight_ram_style", "signed_bits", "acc_bits",
           "acc_range", "folding", "in_range", "weight_matrix"]
