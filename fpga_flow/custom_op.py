"""QONNX custom ops of the ``fpga_flow.custom_op`` domain (found by qonnx's registry through ``custom_op``).

``Requant``: integer accumulator -> activation code by per-channel thresholds on the last axis,
``code = base[c] + direction[c] * #(acc >= T[c, k])`` (``fpga_flow.requant.Thresholds``). It is what
``LowerFloatScales`` puts where a float-scaled layer's bias / BatchNorm / ReLU / Quant chain was.
"""

from __future__ import annotations

import numpy as np
import onnx.helper as helper
from qonnx.core.datatype import DataType
from qonnx.custom_op.base import CustomOp

DOMAIN = "fpga_flow.custom_op"


def threshold_arrays(node_or_op) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T (C, L), base (C,), direction (C,)) from a Requant node's attributes."""
    get = node_or_op.get_nodeattr
    L = int(get("n_thresholds"))
    T = np.asarray(get("thresholds"), dtype=np.int64).reshape(-1, L)
    return T, np.asarray(get("base"), dtype=np.int64), np.asarray(get("direction"), dtype=np.int64)


class Requant(CustomOp):
    """Per-channel multi-threshold requantization of an integer accumulator (channels on the last axis)."""

    def get_nodeattr_types(self):
        return {
            "thresholds": ("ints", True, []),  # (C, L) row-major; sorted rows; unused = sentinel
            "n_thresholds": ("i", True, 1),
            "base": ("ints", True, []),
            "direction": ("ints", True, []),
            "out_bits": ("i", True, 8),
            "out_signed": ("i", True, 0),
            "layer": ("s", False, ""),  # the original layer, for messages and the report
            "layer_index": ("i", False, -1),  # its entry in LowerFloatScales' list of lowered layers
        }

    def make_shape_compatible_op(self, model):
        node = self.onnx_node
        return helper.make_node("Relu", [node.input[0]], [node.output[0]])

    def infer_node_datatype(self, model):
        bits, signed = self.get_nodeattr("out_bits"), self.get_nodeattr("out_signed")
        model.set_tensor_datatype(self.onnx_node.output[0], DataType[f"{'INT' if signed else 'UINT'}{bits}"])

    def execute_node(self, context, graph):
        node = self.onnx_node
        from .requant import Thresholds
        T, base, direction = threshold_arrays(self)
        acc = context[node.input[0]]
        a = np.asarray(acc, dtype=np.int64)
        if not np.array_equal(a, acc):
            raise ValueError(f"{node.name}: accumulator input is not integer")
        th = Thresholds(T=T, base=base, direction=direction, sentinel=int(T.max(initial=0)), checked="")
        context[node.output[0]] = th.apply(a).astype(np.float32)

    def verify_node(self):
        return []


custom_op = {"Requant": Requant}
