"""The hardware graph -> the streaming design's integer layer list (:mod:`.hw.spec`), channels-last.

Both kinds of model go through :func:`fpga_flow.passes.lower` (LowerFloatScales): with power-of-two scales
its thresholds are as exact as with float ones (``requant.Chain`` works with any scale, and they are
checked against the chain), so one path serves both. What the lowered graph holds, and what it becomes:

* ``Conv`` (channels-last weights ``(O, K, K, I/group)``): ``spec.Mac`` conv, or depthwise (group == C);
  square kernel, equal strides, symmetric padding, no dilation;
* ``MatMul``: ``spec.Mac`` dense; the graph's Flatten/Reshape/Transpose in front of it are replayed on an
  index array of the stream, and the weight rows permuted so that weight ``j`` meets the value the
  stream carries at position ``j`` (the stream is (h, w, c) raster order);
* ``Requant`` (thresholds, base, direction, bits): the layer's ``spec.Requant``; a ``MaxPool`` the pass left
  on the accumulator is moved behind the requantization (exact: the pass refuses a decreasing channel there,
  and max commutes with a non-decreasing function);
* ``MaxPool`` on codes: ``spec.MaxPool``;
* the final layer's fixed-point bias ``B * 2^-F`` (LowerFloatScales' grid, F = ``final_frac``): its integer
  part ``B >> F`` is added in hardware; the fraction ``B mod 2^F`` (zero for power-of-two models, whose bias
  is on the accumulator's grid) is a per-channel constant the comparison adds to the hardware's codes
  (``hw * 2^F + frac == golden * 2^F``, integers); the report says so.

A final LogSoftmax is not hardware: the golden is the logits (``golden.logits_graph``) and it stays on the
host. Anything else is refused naming the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.general.quant import quant

from ... import passes
from ...errors import FlowError
from ...passes.lower_float_scales import Lowered
from .hw import spec
from .hw.mvu import acc_bits

PASS_THROUGH = ("Flatten", "Reshape", "Transpose")


@dataclass
class HwLayers:
    """The spec layers and how their output meets the golden."""

    layers: list  # spec.Mac / spec.MaxPool in stream order
    names: list[str]  # per layer: the graph node it implements
    tensors: list[str]  # per layer: the lowered graph's tensor holding its output (for tracing a mismatch)
    lowered: Lowered
    final_frac: int = 0  # F: the final bias grid 2^-F
    final_frac_part: np.ndarray | None = None  # (C,) int64: B mod 2^F, added on the host (see module doc)
    final_scale: np.ndarray | None = None  # (C,) float64: logit = output (units) * final_scale
    host: list[str] = field(default_factory=list)  # what stays on the host

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return self.layers[0].in_shape


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _const(m: ModelWrapper, name: str, where: str) -> np.ndarray:
    """An initializer, or a Quant of one (weights and biases after lowering: scale-1 codes), as float64."""
    v = m.get_initializer(name)
    if v is not None:
        return np.asarray(v, dtype=np.float64)
    p = m.find_producer(name)
    if p is not None and p.op_type == "Quant" and m.get_initializer(p.input[0]) is not None:
        a = _attrs(p)
        mode = a.get("rounding_mode", b"ROUND")
        args = [m.get_initializer(i) for i in p.input]
        return np.asarray(quant(*args, signed=int(a.get("signed", 1)), narrow=int(a.get("narrow", 0)),
                                rounding_mode=mode.decode() if isinstance(mode, bytes) else mode), dtype=np.float64)
    raise FlowError(f"{where}: input {name!r} is not a constant")


def _ints(v: np.ndarray, where: str) -> np.ndarray:
    r = np.round(v)
    if not np.array_equal(r, v):
        raise FlowError(f"{where}: its weights are not integer codes after lowering")
    return r.astype(np.int64)


def _shape(m: ModelWrapper, name: str) -> tuple[int, ...]:
    s = m.get_tensor_shape(name)
    if s is None:
        raise FlowError(f"tensor {name!r} has no known shape in the lowered graph")
    return tuple(int(d) for d in s[1:])


def _hwc(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 3:
        return shape
    if len(shape) == 1:
        return (1, 1, shape[0])
    raise FlowError(f"a stream of shape {shape} is neither (H, W, C) nor a vector")


def hw_lower(model: ModelWrapper, lowered: Lowered | None = None) -> HwLayers:
    """Lower ``model`` (the channels-last logits graph) unless ``lowered`` is given, then map it to layers."""
    low = lowered if lowered is not None else passes.lower(model)
    return _Mapper(low).run()


class _Mapper:
    def __init__(self, low: Lowered):
        self.low, self.m = low, low.model
        self.layers, self.names, self.tensors = [], [], []
        self.index: dict[str, np.ndarray] = {}  # graph tensor -> stream position of each element
        self.bits: dict[str, tuple[int, bool]] = {}  # tensor -> (code bits, signed)
        self.shape: tuple[int, int, int] | None = None  # the stream's (H, W, C)
        self.done: set[str] = set()
        self.out = HwLayers([], [], [], low)

    def run(self) -> HwLayers:
        m = self.m
        iname = m.graph.input[0].name
        first = next((n for n in m.graph.node if n.op_type == "Quant" and n.input[0] == iname), None)
        if first is None:
            raise FlowError("the model's input is not quantized: start it with a Brevitas QuantIdentity")
        q = self.low.input_quant
        self.shape = _hwc(_shape(m, iname))
        self.index[first.output[0]] = np.arange(int(np.prod(self.shape))).reshape(_shape(m, iname))
        self.bits[first.output[0]] = (q.bits, q.signed)
        out_name = m.graph.output[0].name
        for node in m.graph.node:
            if node.name in self.done:
                continue
            op, where = node.op_type, f"node {node.name!r} ({node.op_type})"
            if op == "Quant" and (node is first or m.get_initializer(node.input[0]) is not None):
                continue
            if op in PASS_THROUGH:
                self.pass_through(node, where)
            elif op == "MaxPool":
                self.pool(node, node.input[0], where)
            elif op in ("Conv", "MatMul"):
                self.mac(node, where)
            else:
                raise FlowError(f"{where}: not supported by the streaming RTL backend (supported: Conv incl. "
                                "depthwise, MatMul, MaxPool, Requant thresholds, Flatten/Reshape/Transpose)")
        if not self.tensors or self.tensors[-1] != out_name:
            raise FlowError(f"the graph output {out_name!r} is not the output of its last layer")
        self.out.layers, self.out.names, self.out.tensors = self.layers, self.names, self.tensors
        return self.out

    # ---- one node each ----

    def stream_in(self, name: str, where: str) -> np.ndarray:
        if name not in self.index:
            raise FlowError(f"{where}: its input {name!r} is not an integer activation stream")
        return self.index[name]

    def pass_through(self, node, where: str) -> None:
        idx = self.stream_in(node.input[0], where)
        if node.op_type == "Transpose":
            perm = list(_attrs(node)["perm"])
            if perm[0] != 0:
                raise FlowError(f"{where}: a transpose that moves the batch axis")
            new = np.transpose(idx, [p - 1 for p in perm[1:]])
        else:
            new = idx.reshape(_shape(self.m, node.output[0]))
        self.index[node.output[0]] = new
        self.bits[node.output[0]] = self.bits[node.input[0]]

    def natural(self, name: str, where: str) -> np.ndarray:
        """The input as the stream's (H, W, C) raster, or refuse (a conv or pool reads pixels in order)."""
        idx = self.stream_in(name, where)
        if idx.shape != self.shape or not np.array_equal(idx.ravel(), np.arange(idx.size)):
            raise FlowError(f"{where}: its input is a reordered view {idx.shape} of the {self.shape} stream; "
                            "only a dense layer may read a flattened / transposed stream")
        return idx

    def pool(self, node, src: str, where: str, codes: tuple[int, bool] | None = None, traced: bool = True) -> None:
        a = _attrs(node)
        k = list(a.get("kernel_shape", []))
        s = list(a.get("strides", k))
        if len(k) != 2 or k[0] != k[1] or s[0] != s[1] or any(a.get("pads", [0])) or a.get("ceil_mode", 0):
            raise FlowError(f"{where}: only square MaxPool without padding or ceil_mode is supported")
        self.natural(src, where)
        bits, signed = codes or self.bits[src]
        layer = spec.MaxPool(self.shape, int(k[0]), bits, signed, int(s[0]))
        self.append(layer, node.name, node.output[0], traced)
        self.bits[node.output[0]] = (bits, signed)

    def append(self, layer, name: str, tensor: str, traced: bool = True) -> None:
        """Add a layer whose output the graph holds in ``tensor`` (``traced``: as codes the trace can check)."""
        self.layers.append(layer)
        self.names.append(name)
        self.tensors.append(tensor if traced else None)
        self.shape = (1, 1, layer.out_channels) if getattr(layer, "kind", "") == "dense" else tuple(layer.out_shape)
        self.index[tensor] = np.arange(int(np.prod(self.shape))).reshape(_shape(self.m, tensor))

    def mac(self, node, where: str) -> None:
        m = self.m
        in_bits, in_signed = self.bits.get(node.input[0], (0, False))
        w = _ints(_const(m, node.input[1], where), where)
        if node.op_type == "Conv":
            kw = self.conv_args(node, w, where)
            self.natural(node.input[0], where)
        else:
            idx = self.stream_in(node.input[0], where).reshape(-1)
            if w.ndim != 2 or w.shape[0] != idx.size or np.prod(self.shape) != idx.size:
                raise FlowError(f"{where}: weights {w.shape} do not fit its {idx.size}-value input")
            wt = np.zeros((w.shape[1], w.shape[0]), dtype=np.int64)
            wt[:, idx] = w.T  # graph element j is stream element idx[j]
            kw = dict(kind="dense", weights=wt)
        layer = dict(in_shape=tuple(self.shape), in_bits=in_bits, in_signed=in_signed, **kw)
        # what follows: [MaxPool on the accumulator]* -> Requant, or [Add fixed bias] -> graph output
        t, pools = node.output[0], []
        while True:
            nxt = m.find_consumers(t) or []
            if len(nxt) == 1 and nxt[0].op_type == "MaxPool":
                pools.append(nxt[0])
                t = nxt[0].output[0]
                continue
            break
        nxt = nxt[0] if len(nxt) == 1 else None
        if nxt is not None and nxt.op_type == "Requant":
            a = _attrs(nxt)
            C = len(a["base"])
            T = np.asarray(a["thresholds"], dtype=np.int64).reshape(C, int(a["n_thresholds"]))
            rq = spec.Requant(T=T, base=np.asarray(a["base"], dtype=np.int64),
                              direction=np.asarray(a["direction"], dtype=np.int64))
            mac = spec.Mac(**layer, requant=rq, out_bits=int(a["out_bits"]), out_signed=bool(a["out_signed"]))
            codes = (mac.out_bits, mac.out_signed)
            if pools:
                if np.any(rq.direction < 0):
                    raise FlowError(f"node {pools[0].name!r} (MaxPool) on a decreasing requantization")
                self.append(mac, node.name, node.output[0], traced=False)  # the graph holds its accumulator
                for p in pools:
                    self.pool(p, p.input[0], f"node {p.name!r} (MaxPool)", codes, traced=False)
                    self.done.add(p.name)
                # the pools' last output is the Requant's output in the graph
                self.tensors[-1] = nxt.output[0]
                self.index[nxt.output[0]] = self.index.pop(pools[-1].output[0])
            else:
                self.append(mac, node.name, nxt.output[0])
            self.bits[nxt.output[0]] = codes
            self.done.add(nxt.name)
            return
        if pools:
            raise FlowError(f"node {pools[0].name!r} (MaxPool): a pool on a final accumulator is not supported")
        bias_frac, bias = 0, None
        final = self.low.layers[-1]
        out_t = node.output[0]
        if nxt is not None and nxt.op_type == "Add":
            other = nxt.input[1] if nxt.input[0] == out_t else nxt.input[0]
            bias_frac = int(final.final_frac or 0)
            B = _const(m, other, f"node {nxt.name!r} (Add)").reshape(-1) * 2.0 ** bias_frac
            if not np.array_equal(B, np.round(B)):
                raise FlowError(f"node {nxt.name!r} (Add): the final bias is not on the 2^-{bias_frac} grid")
            B = B.astype(np.int64)
            bias = B >> bias_frac
            self.out.final_frac_part = B - (bias << bias_frac)
            self.done.add(nxt.name)
            out_t = nxt.output[0]
        elif nxt is not None:
            raise FlowError(f"node {nxt.name!r} ({nxt.op_type}) after {where}: not supported")
        self.out.final_frac = bias_frac
        self.out.final_scale = final.final_scale
        mac = spec.Mac(**layer, bias=bias, out_bits=1, out_signed=True)
        mac = spec.Mac(**layer, bias=bias, out_bits=acc_bits(mac), out_signed=True)
        self.append(mac, node.name, out_t)
        self.bits[out_t] = (mac.out_bits, True)

    def conv_args(self, node, w: np.ndarray, where: str) -> dict:
        a = _attrs(node)
        k = list(a.get("kernel_shape", w.shape[1:3]))
        s = list(a.get("strides", [1, 1]))
        p = list(a.get("pads", [0, 0, 0, 0]))
        d = list(a.get("dilations", [1, 1]))
        g = int(a.get("group", 1))
        if k[0] != k[1] or s[0] != s[1] or len(set(p)) > 1 or any(x != 1 for x in d):
            raise FlowError(f"{where}: only square kernels, equal strides, symmetric padding and no dilation "
                            f"are supported (kernel {k}, strides {s}, pads {p}, dilations {d})")
        C = self.shape[2]
        geo = dict(k=int(k[0]), stride=int(s[0]), pad=int(p[0]) if p else 0)
        if g == 1:
            if w.shape[3] != C:
                raise FlowError(f"{where}: weights {w.shape} do not fit its {C} input channels")
            return dict(kind="conv", weights=w, **geo)
        if g == C and w.shape[0] == C and w.shape[3] == 1:
            return dict(kind="depthwise", weights=w[..., 0], **geo)
        raise FlowError(f"{where}: grouped conv with group={g} (only 1 and depthwise) is not supported")
