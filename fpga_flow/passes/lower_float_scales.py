"""LowerFloatScales: a float-scaled QONNX graph (channels-last) -> integer codes and Requant thresholds.

Brevitas' default quantizers have float scales, and BatchNorm sits between a layer and its activation.
After this pass every tensor between layers holds integer codes:

* the input Quant and every weight Quant get scale 1 (the graph input is the input *codes*, the
  weights their integer codes), so Conv / MatMul compute the exact integer accumulator;
* each layer's float chain -- bias, BatchNormalization, Relu, then the activation Quant -- becomes one
  ``Requant`` node (``fpga_flow.custom_op``) with integer thresholds (``fpga_flow.requant``); BatchNorm
  folds into the thresholds, never into the weights;
* a last layer without an output quantizer keeps its accumulator and gets its float bias on a finer
  fixed grid: ``acc + round(b * 2^F / s_c) / 2^F`` (F = 16 where it fits float32 exactly), in units of
  ``s_c``, the logit's scale per output.

1-bit (``BipolarQuant``, values -1/+1): weights become codes -1/+1 behind a 2-bit signed narrow Quant of
scale 1 (the integer MAC is exact); a bipolar activation is a ``Requant`` with two equal thresholds, so
``base + dir * #(acc >= T)`` jumps from -1 straight to +1 (docs/bnn-pynq.md). Float ops the host runs (an
input pre-processing, a final TensorNorm: ``host_ops``) are read from the graph's metadata into
:class:`Lowered`.

Anything else on that path (a float activation reaching a layer, a pool between a layer and its
quantizer, a zero point, LogSoftmax after float logits ...) is refused naming the node.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.cleanup import cleanup_model

from .. import requant
from ..custom_op import DOMAIN
from ..errors import FlowError
from ..quant import QuantSpec, attributes, constant
from . import host_ops

PASS_THROUGH = ("MaxPool", "Flatten", "Reshape", "Transpose")
MAC = ("Conv", "MatMul")
FINAL_FRAC = 16


@dataclass
class Layer:
    """One lowered layer: its chain (reference), thresholds (hardware) and what the report shows."""

    node: str  # the Conv / MatMul node
    chain: requant.Chain | None  # None: the final layer without an output quantizer
    th: requant.Thresholds | None = None
    fragile: list = field(default_factory=list)
    final_frac: int | None = None
    final_scale: np.ndarray | None = None  # (C,) float64: logit = output * final_scale

    def summary(self) -> dict:
        if self.chain is None:
            return {"layer": self.node, "kind": "final (no output quantizer)", "bias_frac_bits": self.final_frac,
                    "output_scale": [float(s) for s in self.final_scale],
                    "per_channel_scale": bool(np.unique(self.final_scale).size > 1)}
        c = self.chain
        return {"layer": self.node, "kind": "requant", "channels": c.channels, "out_bits": c.out.bits,
                "out_scale": c.out.scale,
                "out_signed": c.out.signed, "batchnorm": c.bn is not None, "relu": c.relu,
                "bias": c.bias is not None, "negative_slope_channels": int((self.th.direction < 0).sum()),
                "thresholds": int((self.th.T != self.th.sentinel).sum()), "checked": self.th.checked,
                "fragile_thresholds": len(self.fragile),
                "accumulator_range": [int(c.acc_lo.min()), int(c.acc_hi.max())]}


@dataclass
class Lowered:
    model: ModelWrapper
    input_quant: requant.OutQuant
    layers: list[Layer]
    pre: list = field(default_factory=list)  # host_ops.HostOp before the input quantizer
    post: list = field(default_factory=list)  # host_ops.HostOp after the last layer's output

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Images -> the integer input codes the hardware receives: the host's pre-processing (if the model
        has one), then Brevitas' input quantizer, both in torch float32 as Brevitas' forward runs them."""
        return self.input_quant.codes(host_ops.apply(self.pre, x)).numpy().astype(np.float32)

    def logits(self, out: np.ndarray) -> np.ndarray:
        """The hardware's output -> what the module returns: a final accumulator scaled to float32 logits
        (``acc * s_c``), then the host's float ops after it (a TensorNorm), if any. Exact where Brevitas' own
        float32 sum is (integer-valued products below 2^24, e.g. every bnn_pynq network)."""
        final = self.layers[-1]
        if final.chain is not None:
            v = np.asarray(out, dtype=np.float64)
        else:
            v = (np.asarray(out, dtype=np.float64).reshape(len(out), -1) * final.final_scale).reshape(np.shape(out))
        if not self.post:
            return v
        return host_ops.apply(self.post, v.astype(np.float32)).numpy()



def _out_quant(model: ModelWrapper, node) -> requant.OutQuant:
    if node.op_type == "BipolarQuant":
        scale = _bipolar_scale(model, node)
        if scale.size != 1:
            raise FlowError(f"{host_ops.where(node)}: per-channel activation scales are not supported")
        return requant.OutQuant.bipolar_codes(float(scale.ravel()[0]))
    q = QuantSpec.of(model, node)
    if not q.zero_point_is_zero:
        raise FlowError(f"node {node.name!r} (Quant): a non-zero zero point is not supported")
    if not q.per_tensor:
        raise FlowError(f"node {node.name!r} (Quant): per-channel activation scales are not supported "
                        "(per-tensor activation quantizers are; per-channel weight scales are)")
    return requant.OutQuant(scale=float(np.float32(q.scale.ravel()[0])), zeropt=0.0, bits=q.int_bits,
                            signed=q.signed, narrow=q.narrow, rounding_mode=q.rounding_mode)


def _set_unit_scale(model: ModelWrapper, node) -> None:
    model.set_initializer(node.input[1], np.array(1.0, dtype=np.float32))


def _bipolar_scale(model: ModelWrapper, node) -> np.ndarray:
    scale = model.get_initializer(node.input[1])
    if scale is None:
        raise FlowError(f"{host_ops.where(node)}: its scale is not a constant")
    scale = np.asarray(scale, dtype=np.float32)
    if np.any(scale <= 0):
        raise FlowError(f"{host_ops.where(node)}: a BipolarQuant scale must be positive")
    return scale


def _as_int_quant(model: ModelWrapper, node) -> None:
    """Replace a BipolarQuant whose input already holds codes -1/+1 by the equivalent 2-bit signed narrow
    Quant of scale 1 (an identity on those codes) that hls4ml and the integer reference read as any Quant."""
    names = [f"{node.name}_as_int{s}" for s in ("_scale", "_zeropt", "_bits")]
    for n, v in zip(names, (1.0, 0.0, 2.0)):
        model.set_initializer(n, np.array(v, dtype=np.float32))
    q = helper.make_node("Quant", [node.input[0], *names], [node.output[0]], domain="qonnx.custom_op.general",
                         name=f"{node.name}_as_int", signed=1, narrow=1, rounding_mode="ROUND")
    idx = list(model.graph.node).index(node)
    model.graph.node.remove(node)
    model.graph.node.insert(idx, q)


def _weight_codes(model: ModelWrapper, node) -> tuple[np.ndarray, np.ndarray]:
    """(integer codes of the weights, their scale broadcast to the weights' shape) of a weight Quant."""
    w = model.get_initializer(node.input[0])
    if node.op_type == "BipolarQuant":  # Brevitas: binary_sign(clamp(w)) * scale; the sign of w itself
        scale = _bipolar_scale(model, node)
        codes = np.where(np.asarray(w, dtype=np.float32) >= 0, 1.0, -1.0).astype(np.float32)
        return codes, np.broadcast_to(scale, np.shape(w))
    scale = np.asarray(model.get_initializer(node.input[1]), dtype=np.float32)
    q = _weight_quant(model, node)
    y = torch.from_numpy(np.array(w, dtype=np.float32)) / torch.from_numpy(scale.copy())  # Brevitas: w / scale
    lo, hi = q.code_range()
    codes = torch.clamp(requant.ROUNDING[q.rounding_mode](y), lo, hi).numpy()
    return codes.astype(np.float32), np.broadcast_to(scale, w.shape)


def _weight_quant(model: ModelWrapper, node) -> requant.OutQuant:
    q = QuantSpec.of(model, node)
    if not q.zero_point_is_zero:
        raise FlowError(f"node {node.name!r} (Quant on weights): a non-zero zero point is not supported")
    return requant.OutQuant(scale=1.0, zeropt=0.0, bits=q.int_bits, signed=q.signed, narrow=q.narrow,
                            rounding_mode=q.rounding_mode)


def _per_output(scale_full: np.ndarray, axis: int, where: str) -> np.ndarray:
    """(C,) scale per output channel of a broadcast weight-scale tensor (constant along the other axes)."""
    s = np.moveaxis(scale_full, axis, 0).reshape(scale_full.shape[axis], -1)
    if not np.all(s == s[:, :1]):
        raise FlowError(f"{where}: weight scales vary inside an output channel (only per-tensor and "
                        "per-output-channel scales are supported)")
    return s[:, 0].astype(np.float32)


def _const_value(model: ModelWrapper, name: str, where: str) -> np.ndarray:
    """A constant input: an initializer, or a Quant of one (Int*Bias), evaluated as QONNX/Brevitas do."""
    v = constant(model, name)
    if v is not None:
        return np.asarray(v, dtype=np.float32)
    raise FlowError(f"{where}: input {name!r} is not a constant")


def is_float_scaled(model: ModelWrapper) -> bool:
    """Whether the graph needs this pass: a Quant scale that is not one power of two, or BatchNorm."""
    for node in model.graph.node:
        if node.op_type in ("BatchNormalization", "BipolarQuant"):  # BipolarQuant: lowered to codes -1/+1
            return True
        if node.op_type == "Quant":
            s = model.get_initializer(node.input[1])
            if s is None:
                continue
            s = np.asarray(s, dtype=np.float64)
            m, _ = np.frexp(s)
            if not (np.all(s > 0) and np.all(m == 0.5) and np.all(s == s.flat[0])):
                return True
    return False


class _Lowering:
    def __init__(self, model: ModelWrapper):
        self.m = model
        self.codes: dict[str, tuple[float, int, int]] = {}  # tensor -> (scale, code lo, code hi)
        self.remove: list = []
        self.done: set[str] = set()  # nodes a layer's lowering already took care of (its chain, its pools)
        self.layers: list[Layer] = []

    def single_consumer(self, tensor: str):
        cons = self.m.find_consumers(tensor) or []
        if len(cons) != 1:
            return None
        return cons[0]

    def run(self) -> Lowered:
        m = self.m
        iname = m.graph.input[0].name
        first = next((n for n in m.graph.node if n.op_type in host_ops.QUANTIZERS and n.input[0] == iname), None)
        if first is None:
            raise FlowError("the model's input is not quantized: start it with a Brevitas QuantIdentity")
        in_q = _out_quant(m, first)
        if first.op_type == "BipolarQuant":  # the hardware input is the codes -1/+1
            _as_int_quant(m, first)
            first = next(n for n in m.graph.node if n.output[0] == first.output[0])
        else:
            _set_unit_scale(m, first)
        self.codes[first.output[0]] = (in_q.scale, *in_q.code_range())
        for node in list(m.graph.node):
            if node.name in self.done:
                continue
            op, where = node.op_type, f"node {node.name!r} ({node.op_type})"
            if op in host_ops.QUANTIZERS:
                if node is first or m.get_initializer(node.input[0]) is not None:
                    continue  # input quantizer (done) or a weight / bias quantizer (read by its layer)
                raise FlowError(f"{where}: a quantizer that does not follow a conv / fully connected layer "
                                "(its bias, BatchNorm and ReLU) is not supported with float scales")
            if op in MAC:
                self.mac(node, where)
            elif op in PASS_THROUGH:
                src = node.input[0]
                if src not in self.codes:
                    raise FlowError(f"{where}: its input is not a quantized activation (put it after the "
                                    "activation quantizer, e.g. conv -> BatchNorm -> QuantReLU -> pool)")
                self.codes[node.output[0]] = self.codes[src]
            elif op in ("BatchNormalization", "Relu", "Add", "Mul"):
                raise FlowError(f"{where}: not part of a conv / fully connected layer's requantization "
                                "(layer -> [bias] -> [BatchNorm] -> [ReLU] -> quantizer)")
            else:
                raise FlowError(f"{where}: not supported in a float-scaled model")
        for node in self.remove:
            m.graph.node.remove(node)
        _drop_dead_nodes(m)
        return Lowered(cleanup_model(m), in_q, self.layers, host_ops.recorded(m, host_ops.PRE_KEY),
                       host_ops.recorded(m, host_ops.POST_KEY))

    def mac(self, node, where: str) -> None:
        m = self.m
        x = node.input[0]
        if x not in self.codes:
            raise FlowError(f"{where}: its input is a float activation without a quantizer; put a QuantReLU / "
                            "QuantIdentity before it")
        s_x, xlo, xhi = self.codes[x]
        wq = m.find_producer(node.input[1])
        if wq is None or wq.op_type not in host_ops.QUANTIZERS or m.get_initializer(wq.input[0]) is None:
            raise FlowError(f"{where}: its weights are not quantized constants (use a Brevitas Quant layer)")
        w_codes, w_scale = _weight_codes(m, wq)
        axis = 0 if node.op_type == "Conv" else w_codes.ndim - 1
        s_w = _per_output(w_scale, axis, where)
        m.set_initializer(wq.input[0], w_codes)
        if wq.op_type == "BipolarQuant":
            _as_int_quant(m, wq)
        else:
            _set_unit_scale(m, wq)
        w_oc = np.moveaxis(w_codes, axis, -1).reshape(-1, w_codes.shape[axis]).astype(np.int64)  # (fan_in, C)
        lo = np.minimum(w_oc * xlo, w_oc * xhi).sum(axis=0)
        hi = np.maximum(w_oc * xlo, w_oc * xhi).sum(axis=0)
        scale = (np.float64(s_x) * s_w.astype(np.float64)).astype(np.float32)
        bias = None
        if node.op_type == "Conv" and len(node.input) > 2 and node.input[2]:
            bias = _const_value(m, node.input[2], where).reshape(-1)
            del node.input[2]
        tensor, bn, relu = node.output[0], None, False
        chain_nodes, pools = [], []
        while True:
            nxt = self.single_consumer(tensor)
            if nxt is None or tensor in [o.name for o in m.graph.output]:
                break
            if nxt.op_type == "MaxPool":  # kept, on the accumulator: exact if the requantization never decreases
                pools.append(nxt)
                tensor = nxt.output[0]
                continue
            if nxt.op_type == "Add" and bias is None and bn is None and not relu and not chain_nodes:
                other = nxt.input[1] if nxt.input[0] == tensor else nxt.input[0]
                bias = _const_value(m, other, f"node {nxt.name!r} (Add)").reshape(-1)
                if bias.size == 1:
                    bias = np.full(scale.shape, bias[0], dtype=np.float32)
            elif nxt.op_type == "BatchNormalization" and bn is None and not relu:
                a = attributes(nxt)
                g, b, mean, var = (_const_value(m, i, f"node {nxt.name!r}") for i in nxt.input[1:5])
                bn = dict(gamma=g, beta=b, mean=mean, var=var, eps=float(a.get("epsilon", 1e-5)))
            elif nxt.op_type == "Relu" and not relu:
                relu = True
            elif nxt.op_type in host_ops.QUANTIZERS:
                chain_nodes.append(nxt)
                out_q = _out_quant(m, nxt)
                chain = requant.Chain(name=f"{node.name} ({node.op_type})", scale=scale, out=out_q, bias=bias,
                                      bn=bn, relu=relu, acc_lo=lo, acc_hi=hi,
                                      err=requant.error_bound(w_oc, max(abs(xlo), abs(xhi)), scale, w_oc.shape[0]))
                th = requant.thresholds(chain)
                if pools and np.any(th.direction < 0):
                    c = int(np.nonzero(th.direction < 0)[0][0])
                    raise FlowError(f"node {pools[0].name!r} (MaxPool) lies between {where} and its quantizer, and "
                                    f"channel {c}'s requantization decreases (a negative BatchNorm gamma): the max "
                                    "of the accumulators is then not the max of the codes; put the pool after the "
                                    "activation quantizer")
                layer = Layer(node=node.name, chain=chain, th=th, fragile=requant.fragile(chain, th))
                self.layers.append(layer)
                self.replace(node, chain_nodes, nxt.output[0], th, out_q, pools)
                self.codes[nxt.output[0]] = (out_q.scale, *out_q.code_range())
                return
            else:
                break
            chain_nodes.append(nxt)
            tensor = nxt.output[0]
        # no quantizer: allowed only as the model's last layer, [layer -> bias] -> graph output
        outputs = [o.name for o in m.graph.output]
        if tensor not in outputs:
            nxt = self.single_consumer(tensor)
            what = f"node {nxt.name!r} ({nxt.op_type})" if nxt is not None else "more than one consumer"
            raise FlowError(f"{where}: its output is not requantized (next: {what}); float-scaled layers need "
                            "[bias] -> [BatchNorm] -> [ReLU] -> quantizer after them, or must be the last layer")
        if bn is not None or relu or pools:
            raise FlowError(f"{where}: the model's last layer has a BatchNorm, ReLU or pool but no output quantizer: "
                            "its output would be a float; add a quantizer (QuantIdentity / QuantReLU) or drop them")
        self.final(node, chain_nodes, tensor, scale, bias, lo, hi)

    def replace(self, node, chain_nodes: list, out: str, th: requant.Thresholds, q: requant.OutQuant,
                pools: list) -> None:
        """The chain's nodes go; its max pools stay, on the accumulator, directly after the layer; then the
        Requant node, which writes the quantizer's output tensor."""
        self.remove += chain_nodes
        self.done |= {n.name for n in [*chain_nodes, *pools]}
        acc = node.output[0]
        for p in pools:
            p.input[0] = acc
            acc = p.output[0] = f"{p.name}_acc"
        rq = helper.make_node("Requant", [acc], [out], domain=DOMAIN, name=f"Requant_{node.name}",
                              thresholds=th.T.reshape(-1).tolist(), n_thresholds=int(th.T.shape[1]),
                              base=th.base.tolist(), direction=th.direction.tolist(), out_bits=q.bits,
                              out_signed=int(q.signed), layer=node.name, layer_index=len(self.layers) - 1)
        idx = max(list(self.m.graph.node).index(n) for n in [node, *pools])
        self.m.graph.node.insert(idx + 1, rq)

    def final(self, node, chain_nodes: list, out: str, scale: np.ndarray, bias, lo, hi) -> None:
        m = self.m
        frac = None
        self.remove += chain_nodes
        self.done |= {n.name for n in chain_nodes}
        if bias is not None:
            ratio = bias.astype(np.float64) / scale.astype(np.float64)
            frac = FINAL_FRAC
            while frac > 0 and np.abs(np.round(ratio * 2.0 ** frac)).max(initial=0) >= 2 ** 24:
                frac -= 1  # the codes must be exact float32 values in the ONNX initializer
            B = np.round(ratio * 2.0 ** frac)
            bits = max(int(np.abs(B).max(initial=0)).bit_length() + 1, 2)
            names = [f"{node.name}_fixed_bias{s}" for s in ("", "_scale", "_zeropt", "_bits")]
            m.set_initializer(names[0], (B * 2.0 ** -frac).astype(np.float32))
            m.set_initializer(names[1], np.array(2.0 ** -frac, dtype=np.float32))
            m.set_initializer(names[2], np.array(0.0, dtype=np.float32))
            m.set_initializer(names[3], np.array(float(bits), dtype=np.float32))
            q = helper.make_node("Quant", names, [f"{node.name}_fixed_bias_q"], domain="qonnx.custom_op.general",
                                 name=f"{node.name}_fixed_bias_quant", signed=1, narrow=0, rounding_mode="ROUND")
            acc = f"{node.name}_acc"
            node.output[0] = acc
            add = helper.make_node("Add", [acc, q.output[0]], [out], name=f"{node.name}_fixed_bias_add")
            idx = list(m.graph.node).index(node)
            m.graph.node.insert(idx + 1, q)
            m.graph.node.insert(idx + 2, add)
        elif chain_nodes:  # nothing between the layer and the output
            node.output[0] = out
        self.layers.append(Layer(node=node.name, chain=None, final_frac=frac, final_scale=scale.astype(np.float64)))


def _drop_dead_nodes(m: ModelWrapper) -> None:
    """Nodes nothing reads any more (the Quant of a bias folded into a chain): hls4ml would parse them."""
    outputs = {o.name for o in m.graph.output}
    while True:
        read = {i for n in m.graph.node for i in n.input} | outputs
        dead = [n for n in m.graph.node if not any(o in read for o in n.output)]
        if not dead:
            return
        for n in dead:
            m.graph.node.remove(n)


def lower(model: ModelWrapper) -> Lowered:
    """Lower a channels-last, float-scaled QONNX graph (see the module docstring)."""
    for node in model.graph.node:
        if node.op_type == "LogSoftmax":
            raise FlowError(f"node {node.name!r} (LogSoftmax): not supported after float-scaled logits (their scale "
                            "is not a power of two); end the model at its logits")
    return _Lowering(ModelWrapper(copy.deepcopy(model.model))).run()
