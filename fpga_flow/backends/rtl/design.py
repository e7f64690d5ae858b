"""The whole streaming design for a list of integer layers (:mod:`.hw.spec`): one input stream of input codes,
one output stream of the last layer's codes, the blocks in between chained FINN-style.

Per layer: a :class:`spec.Mac` becomes a lane-width converter to its SIMD (only where the lanes differ), a
sliding-window generator (``2K + stride`` line-buffer rows, :func:`window_rows`; conv and depthwise, unless
the window is the pixel itself: K=1, stride 1, no pad; a dense layer reads the previous stream directly as
one vector), the MVU, and a FIFO; a :class:`spec.MaxPool` becomes a max-pool block on the lanes it receives,
and a FIFO. A FIFO also sits behind the input port, so
the top's ``i.ready`` and ``o.valid`` come from flops. A FIFO deeper than the default (a whole vector in front of
a dense layer, ``depths``) in front of a widening converter moves behind it, in wide beats: on the narrow side
the converter would feed the MVU's first neuron fold one wide beat per ``want/lanes`` cycles.

Ports (Verilog, top module :data:`TOP`): ``clk``, ``rst``, ``i__payload``/``i__valid``/``i__ready`` and
``o__payload``/``o__valid``/``o__ready``; payloads are flat lanes (:mod:`.hw.stream`). The input stream is
the image channels-last, ``in_lanes`` codes a beat; the output stream is the last layer's output
channels-last ((OH, OW, OC) raster order, a dense layer's OC values in order), ``out_lanes`` codes a beat.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from amaranth import Module
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .hw import dwc, spec, stream
from .hw.fifo import MIN_DEPTH, StreamFIFO
from .hw.mvu import MVU
from .hw.pool import MaxPool
from .hw.window import SlidingWindow
from .hw.window import in_lanes as window_in_lanes

TOP = "fpga_flow_stream"  # Verilog module name of the design


def _io(layer) -> tuple[tuple[int, int, int], int, bool]:
    """(input shape, input bits, input signed) a layer expects."""
    if isinstance(layer, spec.MaxPool):
        return layer.in_shape, layer.bits, layer.signed
    return layer.in_shape, layer.in_bits, layer.in_signed


def _out(layer) -> tuple[tuple[int, int, int], int, bool]:
    """(output shape, output bits, output signed) of a layer's stream; a final Mac sends signed accumulators."""
    if isinstance(layer, spec.MaxPool):
        return layer.out_shape, layer.bits, layer.signed
    # a dense layer's output is one pixel whatever its in_shape (spec.Mac.out_shape assumes a 1x1 input there)
    shape = (1, 1, layer.out_channels) if layer.kind == "dense" else layer.out_shape
    return shape, layer.out_bits, layer.out_signed or layer.requant is None


def mac_in_lanes(layer: spec.Mac) -> int:
    """The lanes a Mac's first block takes: its SIMD, except a multi-tap window (SIMD over several kernel taps),
    which takes one pixel a beat."""
    return window_in_lanes(layer.in_shape[2], layer.simd) if layer.kind == "conv" else layer.simd


def has_window(layer: spec.Mac) -> bool:
    """Whether a Mac gets a sliding-window generator: conv and depthwise, unless the window is the pixel itself."""
    return layer.kind != "dense" and (layer.k, layer.stride, layer.pad) != (1, 1, 0)


def window_rows(layer: spec.Mac) -> int:
    """Line-buffer rows of a layer's window: ``2K + stride``, so the next image's first K rows can come in
    while the window still reads this image's last ones (with ``K + stride`` a conv fed by a conv waited at
    every image boundary for K new rows; never more rows than the image has plus ``K + stride``)."""
    return layer.k + layer.stride + min(layer.k, layer.in_shape[0])


@dataclass
class Plan:
    """The blocks of a design in stream order (name, constructor), and its two streams' formats: everything
    checked before any block is built."""

    blocks: list[tuple[str, Callable[[], wiring.Component]]]
    in_shape: tuple[int, int, int]
    in_lanes: int
    in_bits: int
    in_signed: bool
    out_shape: tuple[int, int, int]
    out_lanes: int
    out_bits: int
    out_signed: bool


def plan(layers: list, input_lanes: int, fifo_depth: int = MIN_DEPTH, depths: dict[int, int] | None = None) -> Plan:
    """Chain ``layers``; raises ValueError naming the first layer whose input does not match what it gets.
    ``depths``: layer index -> the depth of the FIFO behind that layer (else ``fifo_depth``)."""
    depths = depths or {}
    if not layers:
        raise ValueError("Design: no layers")
    in_shape, in_bits, in_signed = _io(layers[0])
    shape, bits, sgn, lanes = tuple(in_shape), in_bits, in_signed, input_lanes
    dwc.check(shape[2], lanes, lanes)
    blocks = [("fifo_in", partial(StreamFIFO, lanes, bits, fifo_depth))]
    behind = fifo_depth  # the depth asked for the FIFO behind the layer before (already in blocks)
    for n, layer in enumerate(layers):
        want_shape, want_bits, want_signed = _io(layer)
        is_dense = isinstance(layer, spec.Mac) and layer.kind == "dense"
        same_shape = math.prod(want_shape) == math.prod(shape) if is_dense else tuple(want_shape) == shape
        if not same_shape or (want_bits, want_signed) != (bits, sgn):
            raise ValueError(f"Design: layer {n} ({type(layer).__name__}) expects {want_shape} "
                             f"{'signed' if want_signed else 'unsigned'} {want_bits}-bit codes, but receives "
                             f"{shape} {'signed' if sgn else 'unsigned'} {bits}-bit codes")
        if isinstance(layer, spec.MaxPool):
            blocks.append((f"l{n}_pool", partial(MaxPool, layer, lanes)))
        else:
            want = mac_in_lanes(layer)
            if lanes != want:
                dwc.check(math.prod(shape) if is_dense else shape[2], lanes, want)
                blocks.append((f"l{n}_dwc", partial(dwc.WidthConverter, lanes, want, bits)))
                if lanes < want and behind > fifo_depth and n:
                    # a vector-deep FIFO in front of a widening converter still hands the MVU one wide beat per
                    # want/lanes cycles: its first neuron fold ran at the narrow rate (mlp at 1,000,000
                    # images/s: 122 simulated cycles/image against 98). It goes behind the converter instead
                    # (as much data, in wide beats), and the narrow side keeps the default depth.
                    name, _ = blocks[-2]
                    blocks[-2] = (name, partial(StreamFIFO, lanes, bits, fifo_depth))
                    blocks.append((f"l{n}_wfifo", partial(StreamFIFO, want, bits,
                                                          max(fifo_depth, -(-behind * lanes // want)))))
            if has_window(layer):
                blocks.append((f"l{n}_swg", partial(SlidingWindow, shape, layer.k, layer.stride, layer.pad,
                                                    layer.simd, bits, depthwise=layer.kind == "depthwise",
                                                    rows=window_rows(layer))))
            blocks.append((f"l{n}_mvu", partial(MVU, layer)))
            lanes = layer.pe
        shape, bits, sgn = _out(layer)
        shape = tuple(shape)
        behind = depths.get(n, fifo_depth)
        blocks.append((f"l{n}_fifo", partial(StreamFIFO, lanes, bits, behind)))
    return Plan(blocks, tuple(in_shape), input_lanes, in_bits, in_signed, shape, lanes, bits, sgn)


class Design(wiring.Component):
    """Streaming dataflow top for ``layers`` (see :func:`plan`); ``stages`` lists its blocks in stream order
    (name, component); ``in_*``/``out_*`` describe its two streams."""

    def __init__(self, layers: list, input_lanes: int, fifo_depth: int = MIN_DEPTH, depths: dict[int, int] | None = None):
        p = plan(layers, input_lanes, fifo_depth, depths)
        self.layers = list(layers)
        self.in_shape, self.in_lanes, self.in_bits, self.in_signed = p.in_shape, p.in_lanes, p.in_bits, p.in_signed
        self.out_shape, self.out_lanes, self.out_bits = p.out_shape, p.out_lanes, p.out_bits
        self.out_signed = p.out_signed
        self.stages: list[tuple[str, wiring.Component]] = [(name, make()) for name, make in p.blocks]
        super().__init__({"i": In(stream.signature(self.in_lanes, self.in_bits)),
                          "o": Out(stream.signature(self.out_lanes, self.out_bits))})

    @property
    def n_in(self) -> int:
        """Input codes per image."""
        return math.prod(self.in_shape)

    @property
    def n_out(self) -> int:
        """Output codes per image."""
        return math.prod(self.out_shape)

    def elaborate(self, platform):
        m = Module()
        for name, block in self.stages:
            m.submodules[name] = block
        blocks = [b for _, b in self.stages]
        wiring.connect(m, wiring.flipped(self.i), blocks[0].i)
        for a, b in zip(blocks, blocks[1:]):
            wiring.connect(m, a.o, b.i)
        wiring.connect(m, blocks[-1].o, wiring.flipped(self.o))
        return m


def to_verilog(design: Design) -> str:
    """The design as one Verilog file, top module :data:`TOP`."""
    return verilog.convert(design, name=TOP, emit_src=False)
