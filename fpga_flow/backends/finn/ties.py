"""Brevitas' rounding (half to even) in FINN's thresholds, which round ties (exact halves) up.

FINN turns an activation quantizer into a MultiThreshold: its output is the number of thresholds the input
reaches (``x >= t``), and threshold ``j`` sits exactly halfway between the codes ``c - 1`` and ``c`` it
separates (``c = min_code + j + 1``). An input exactly on it therefore gets ``c``: ties round up. Brevitas
(``torch.round``) and QONNX's ``Quant`` (``np.round``) give the even one of ``c - 1`` and ``c``. With
power-of-two scales such ties are common (accumulators live on a grid a few bits finer than the output).

The fix makes every threshold whose code ``c`` is odd strict (``x > t``), in two places:

1. right after ``ConvertQONNXtoFINN`` (:class:`TagMinCodes`, then :class:`TiesToEvenFloat`): thresholds are
   still real values, compared with float32 inputs, so ``t -> nextafter(t, +inf)`` makes ``x >= t'``
   exactly ``x > t`` for every float32 ``x``;
2. after streamlining (:class:`TiesToEvenInteger`): FINN has rewritten the thresholds in the integer
   accumulator's domain with float arithmetic ((t - bias) / scale), which may round the nudge of step 1
   away. For an integer input a tie is possible only where the threshold is an integer; an odd-code
   threshold that is an integer there gets ``t + 1`` (``x >= t + 1`` is ``x > t`` for integer ``x``).
   Where the nudge survived (a non-integer threshold), FINN's own ``RoundAndClipThresholds`` later takes
   ``ceil``, which is that same ``t + 1``.

Which code a threshold produces is recorded on each MultiThreshold as ``fpga_flow_min_code`` (the code
of "no threshold reached", from the Quant node it replaced), because streamlining absorbs the Add that
carried it into other nodes. A MultiThreshold without that record, or one still reading a float tensor
after streamlining, is refused: its ties could not be guaranteed. MultiThresholds built from the exact
lowering of a float-scaled model (``lowered.py``, attribute ``fpga_flow_exact``) need no fix and get none.
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation
from qonnx.util.basic import get_by_name

from ...errors import FlowError

ATTR = "fpga_flow_min_code"
EXACT_ATTR = "fpga_flow_exact"  # set by lowered.py on MultiThresholds built from exact integer thresholds


def is_exact(node) -> bool:
    """A MultiThreshold with the exact lowering's integer thresholds (``lowered.py``): ties cannot occur off
    them (the lowering already decided every integer accumulator), so no tie fix applies."""
    return any(a.name == EXACT_ATTR and a.i == 1 for a in node.attribute)


def activation_min_codes(qonnx_model: ModelWrapper) -> dict[str, int]:
    """Output tensor -> code of the lowest level, for every Quant that quantizes activations (its input is
    not a constant). Read before ``ConvertQONNXtoFINN`` replaces the Quant nodes."""
    codes = {}
    for node in qonnx_model.get_nodes_by_op_type("Quant"):
        if qonnx_model.get_initializer(node.input[0]) is not None:
            continue  # weights and biases: folded into integer initializers, no thresholds
        q = getCustomOp(node)
        bits = int(np.ravel(qonnx_model.get_initializer(node.input[3]))[0])
        signed, narrow = q.get_nodeattr("signed"), q.get_nodeattr("narrow")
        codes[node.output[0]] = (-(2 ** (bits - 1)) + (1 if narrow else 0)) if signed else 0
    return codes


class TagMinCodes(Transformation):
    """Record each quantizer's lowest code on the MultiThreshold that replaced it (walking back from the
    quantizer's output tensor over the Mul / Add nodes FINN put behind the MultiThreshold)."""

    def __init__(self, min_codes: dict[str, int]):
        super().__init__()
        self.min_codes = min_codes

    def apply(self, model: ModelWrapper):
        for tensor, code in self.min_codes.items():
            node = model.find_producer(tensor)
            while node is not None and node.op_type in ("Mul", "Add"):
                node = model.find_producer(node.input[0])
            if node is None or node.op_type != "MultiThreshold":
                raise FlowError(f"FINN did not turn the quantizer of tensor {tensor!r} into a MultiThreshold "
                                f"(found {node.op_type if node is not None else 'no producer'}); the flow cannot "
                                "give it Brevitas' rounding")
            old = get_by_name(node.attribute, ATTR)
            if old is not None:
                node.attribute.remove(old)
            node.attribute.append(helper.make_attribute(ATTR, int(code)))
        return model, False


def odd_code_mask(model: ModelWrapper, node) -> np.ndarray:
    """True where reaching the threshold gives an odd code: there Brevitas rounds a tie down."""
    attr = get_by_name(node.attribute, ATTR)
    if attr is None:
        raise FlowError(f"FINN node {node.name!r} (MultiThreshold) does not come from a quantizer the flow "
                        "recorded, so its rounding of ties cannot be made Brevitas' (half to even)")
    thresholds = model.get_initializer(node.input[1])
    codes = attr.i + 1 + np.arange(thresholds.shape[-1])
    return np.broadcast_to(codes % 2 == 1, thresholds.shape)


class TiesToEvenFloat(Transformation):
    """Odd-code thresholds of float-domain MultiThresholds -> nextafter(t, +inf): ``x >= t'`` is ``x > t``."""

    def apply(self, model: ModelWrapper):
        for node in model.get_nodes_by_op_type("MultiThreshold"):
            if is_exact(node):
                continue
            t = model.get_initializer(node.input[1]).astype(np.float32)
            model.set_initializer(node.input[1], np.where(odd_code_mask(model, node),
                                                          np.nextafter(t, np.float32(np.inf)), t))
        return model, False


class TiesToEvenInteger(Transformation):
    """After streamlining: an odd-code threshold that is an integer (a reachable tie) -> t + 1.

    ``self.repaired`` counts the thresholds changed (those whose float nudge streamlining rounded away)."""

    def __init__(self):
        super().__init__()
        self.repaired = 0

    def apply(self, model: ModelWrapper):
        for node in model.get_nodes_by_op_type("MultiThreshold"):
            dt = model.get_tensor_datatype(node.input[0])
            if not dt.is_integer():
                raise FlowError(f"FINN node {node.name!r} (MultiThreshold) still reads a {dt.name} tensor after "
                                "streamlining: it is not integer hardware, and its ties cannot be made "
                                "Brevitas' rounding. Quantize that tensor's producer (power-of-two scales)")
            t = model.get_initializer(node.input[1]).astype(np.float32)
            if is_exact(node):
                continue  # integer thresholds of the exact lowering (lowered.py): x >= t is already Brevitas'
            if np.any(np.abs(t) >= 2 ** 23):
                raise FlowError(f"FINN node {node.name!r}: thresholds beyond 2^23 are not exact in float32")
            hit = odd_code_mask(model, node) & (t == np.round(t))
            self.repaired += int(hit.sum())
            model.set_initializer(node.input[1], np.where(hit, t + 1, t).astype(np.float32))
        return model, False

