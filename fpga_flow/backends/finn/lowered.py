"""Float-scaled models (BatchNorm, BipolarQuant, float scales: Brevitas' bnn_pynq networks) for FINN.

FINN's own streamlining would turn each ``layer -> BatchNorm -> quantizer`` chain into thresholds with float32
arithmetic (``(t - B) / A``), which can land one accumulator value away from where Brevitas' float32 chain
changes its code. The flow already has those thresholds exactly: ``LowerFloatScales`` finds them by bisection
on Brevitas' own float32 chain and checks them over the reachable accumulator range (docs/bnn-pynq.md). So for
these models FINN receives a graph in its own dialect built from that lowering, and FINN's transformations
(streamlining, the XNOR-popcount form of bipolar layers, conversion to MVAU, folding, estimates) take it from
there:

* the float pre-processing before the input quantizer and a trailing TensorNorm leave the graph
  (``host_ops.strip``: the same prefix / suffix the hls4ml backend runs on the host), and so does the input
  quantizer: the dataflow's input is the input codes (``BIPOLAR`` for a 1-bit input quantizer);
* weights are their integer codes (``BIPOLAR`` for 1-bit weights -- any 2-bit narrow weights whose codes are
  all -1/+1, the same values -- which FINN's
  ``ConvertBipolarMatMulToXnorPopcount`` turns into XNOR-popcount layers where the input is bipolar too);
* each requantization ``code = base + dir * #(acc >= T)`` becomes a FINN ``MultiThreshold`` counting levels
  upward from the quantizer's lowest code (a bipolar one in FINN's form: one threshold, ``out_scale`` 2,
  ``out_bias`` -1). A channel whose code decreases with the accumulator (negative BatchNorm gamma) gets its
  weights negated (exact on integer codes) and thresholds ``1 - T``. Every MultiThreshold is checked
  against the lowering's thresholds at every point where either changes (both are step functions), and
  marked ``fpga_flow_exact``: the tie fix of ``ties.py`` (for FINN's own thresholds) leaves it alone;
* the last layer ends at its integer accumulator (+ the lowering's fixed-point bias, if any, which stays on
  the host as FINN's float dequantization does); the golden is the integer-accumulator reference.
"""

from __future__ import annotations

import copy

import numpy as np
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.cleanup import cleanup_model

from ...errors import FlowError
from ...passes import host_ops
from .ties import EXACT_ATTR, is_exact  # noqa: F401 - is_exact is this module's API too

MT_DOMAIN = "qonnx.custom_op.general"


def nchw_lowered(clean: ModelWrapper):
    """The lowering (``passes.lower``) of the cleaned graph in its own NCHW layout, host ops stripped: FINN
    lowers convolutions and makes the layout channels-last itself."""
    import warnings

    from qonnx.transformation.gemm_to_matmul import GemmToMatMul

    from ...passes import lower
    from ...passes.prepare_for_hls4ml import add_zero_gemm_bias, reinfer_datatypes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = cleanup_model(add_zero_gemm_bias(host_ops.strip(clean)))
        m = reinfer_datatypes(cleanup_model(m.transform(GemmToMatMul())))
        return lower(m)


def same_thresholds(a, b) -> None:
    """The NCHW lowering and the front's (channels-last) one must agree layer by layer: it is one function."""
    if len(a.layers) != len(b.layers):
        raise FlowError(f"the NCHW lowering has {len(a.layers)} layers, the channels-last one {len(b.layers)}")
    for la, lb in zip(a.layers, b.layers):
        if (la.th is None) != (lb.th is None) or (la.th is not None and not (
                np.array_equal(la.th.T, lb.th.T) and np.array_equal(la.th.base, lb.th.base)
                and np.array_equal(la.th.direction, lb.th.direction))):
            raise FlowError(f"layer {la.node}: the NCHW and channels-last lowerings give different thresholds")


def _levels(th, c: int, lo: int, hi: int, q) -> tuple[np.ndarray, bool]:
    """Channel ``c`` of a requantization as FINN counts it: (level thresholds on the accumulator as FINN will
    see it, negate) -- code = q_lo + step * #(acc' >= t_j), acc' = -acc where ``negate``."""
    T = th.T[c][th.T[c] < th.sentinel].astype(np.int64)  # the active thresholds, sorted
    base, d = int(th.base[c]), int(th.direction[c])
    negate = d < 0 and T.size > 0
    if negate:  # base - #(acc >= T) = base - n + #(-acc >= 1 - T) for integer acc
        base, T, lo, hi = base - T.size, np.sort(1 - T), -hi, -lo
    qlo, qhi = q.code_range()
    step = 2 if q.bipolar else 1
    n_levels = (qhi - qlo) // step
    out = np.empty(n_levels, dtype=np.int64)
    for j in range(1, n_levels + 1):
        k = qlo + j * step - base  # thresholds the count must reach for level j
        out[j - 1] = lo if k <= 0 else (T[k - 1] if k <= T.size else hi + 1)
    return out, negate


def _check_channel(th, c: int, lo: int, hi: int, levels: np.ndarray, negate: bool, q) -> None:
    """Both are step functions of the accumulator: equal at the range's low end and wherever either changes
    (``acc`` vs ``acc - 1``), they are equal on the whole reachable range. The reference changes at ``T``; FINN's
    at ``t`` (or, negated, at ``1 - t``); their neighbours are added too."""
    T = th.T[c]
    lv = -levels if negate else levels
    pts = np.concatenate([T - 1, T, T + 1, lv - 1, lv, lv + 1, [lo, hi]]).astype(np.int64)
    pts = np.unique(pts[(pts >= lo) & (pts <= hi)])
    ref = th.base[c] + th.direction[c] * (pts[:, None] >= T[None, :]).sum(axis=1)
    a = -pts if negate else pts
    got = q.code_range()[0] + (2 if q.bipolar else 1) * (a[:, None] >= levels[None, :]).sum(axis=1)
    if not np.array_equal(ref, got):
        raise FlowError(f"channel {c}: the FINN thresholds do not reproduce the requantization (flow bug)")


def _datatype(q) -> str:
    if q.bipolar:
        return "BIPOLAR"
    return f"{'INT' if q.signed else 'UINT'}{q.bits}"


def _fold_weight_quant(m: ModelWrapper, node) -> None:
    """A weight Quant of scale 1 (the lowering's codes) -> the integer initializer FINN folds it to, annotated;
    -1/+1 codes of a 1-bit weight quantizer as FINN's BIPOLAR."""
    w = np.asarray(m.get_initializer(node.input[0]), dtype=np.float32)
    bits = int(np.ravel(m.get_initializer(node.input[3]))[0])
    scale = np.ravel(m.get_initializer(node.input[1]))
    attrs = {a.name: a for a in node.attribute}
    signed = bool(attrs["signed"].i) if "signed" in attrs else True
    narrow = bool(attrs["narrow"].i) if "narrow" in attrs else False
    # the lowering's stand-in for a BipolarQuant (2-bit signed narrow, scale 1); -1/+1 values are BIPOLAR's
    bipolar = bits == 2 and signed and narrow and bool(np.all(np.abs(w) == 1))
    if not np.all(scale == 1):  # the final layer's fixed-point bias (lowering): a float, added on the host
        dt = "FLOAT32"
    else:
        dt = "BIPOLAR" if bipolar else f"{'INT' if signed else 'UINT'}{bits}"
        if not all(DataType[dt].allowed(float(v)) for v in np.unique(w)):
            raise FlowError(f"node {node.name!r}: weight codes outside {dt}")
    m.set_initializer(node.output[0], w)
    m.set_tensor_datatype(node.output[0], DataType[dt])
    m.graph.node.remove(node)


def to_finn(low) -> ModelWrapper:
    """The lowered graph in FINN's dialect (see the module docstring); checked channel by channel."""
    m = ModelWrapper(copy.deepcopy(low.model.model))
    iname = m.graph.input[0].name
    first = m.find_consumers(iname)
    if not first or len(first) != 1 or first[0].op_type != "Quant":
        raise FlowError("the lowered graph does not start at its input quantizer")
    for cons in m.find_consumers(first[0].output[0]) or []:  # the input quantizer runs on the host
        for i, t in enumerate(cons.input):
            if t == first[0].output[0]:
                cons.input[i] = iname
    m.graph.node.remove(first[0])
    m.set_tensor_datatype(iname, DataType[_datatype(low.input_quant)])
    for node in [n for n in m.graph.node if n.op_type == "Quant"]:
        if m.get_initializer(node.input[0]) is None:
            raise FlowError(f"node {node.name!r} (Quant) quantizes a computed tensor after the lowering")
        _fold_weight_quant(m, node)
    by_layer = {lay.node: lay for lay in low.layers}
    for node in [n for n in m.graph.node if n.op_type == "Requant"]:
        _requant_to_multithreshold(m, node, by_layer[_attr(node, "layer").decode()])
    return cleanup_model(m)


def _attr(node, name):
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def _requant_to_multithreshold(m: ModelWrapper, node, layer) -> None:
    th, q = layer.th, layer.chain.out
    mac = m.find_producer(node.input[0])
    lo_all, hi_all = layer.chain.acc_lo.astype(np.int64), layer.chain.acc_hi.astype(np.int64)
    rows, negated = [], []
    for c in range(th.T.shape[0]):
        levels, neg = _levels(th, c, int(lo_all[c]), int(hi_all[c]), q)
        _check_channel(th, c, int(lo_all[c]), int(hi_all[c]), levels, neg, q)
        rows.append(levels)
        negated.append(neg)
    if any(negated):
        if mac is None or mac.op_type not in ("MatMul", "Conv"):
            raise FlowError(f"{layer.node}: a decreasing requantization (negative BatchNorm gamma) after "
                            f"{mac.op_type if mac is not None else 'no layer'}: its weights cannot be negated")
        w = np.array(m.get_initializer(mac.input[1]), dtype=np.float32)
        axis = 0 if mac.op_type == "Conv" else w.ndim - 1
        sign = np.where(np.array(negated), -1.0, 1.0).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        dt = m.get_tensor_datatype(mac.input[1])
        new = w * sign.reshape(shape)
        m.set_initializer(mac.input[1], new)
        if not (dt.allowed(float(new.min())) and dt.allowed(float(new.max()))):  # -(-2^(b-1)) needs a bit more
            b = 2
            while not (-(2 ** (b - 1)) <= new.min() and new.max() <= 2 ** (b - 1) - 1):
                b += 1
            dt = DataType[f"INT{b}"]
        m.set_tensor_datatype(mac.input[1], dt)  # -x of a symmetric or bipolar code set stays in it
    t_name = f"{node.name}_thresholds"
    m.set_initializer(t_name, np.stack(rows).astype(np.float32))
    if np.abs(np.stack(rows)).max(initial=0) >= 2 ** 24:
        raise FlowError(f"{layer.node}: thresholds beyond 2^24 are not exact in float32")
    qlo = q.code_range()[0]
    mt = helper.make_node("MultiThreshold", [node.input[0], t_name], [node.output[0]], domain=MT_DOMAIN,
                          name=f"MultiThreshold_{layer.node}", out_dtype=_datatype(q),
                          out_scale=2.0 if q.bipolar else 1.0, out_bias=float(qlo), data_layout="NCHW")
    mt.attribute.append(helper.make_attribute(EXACT_ATTR, 1))
    idx = list(m.graph.node).index(node)
    m.graph.node.remove(node)
    m.graph.node.insert(idx, mt)
    m.set_tensor_datatype(node.output[0], DataType[_datatype(q)])

