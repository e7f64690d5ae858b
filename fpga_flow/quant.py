"""QuantSpec: the one reader of QONNX ``Quant`` nodes (scale, zero point, bit width, signed, narrow, rounding).

Every consumer (the golden's input quantizer, LowerFloatScales, int_ref, the rtl and finn backends) reads a
quantizer through :meth:`QuantSpec.of`, so a new attribute or a malformed node is handled in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.general.quant import quant

from .errors import FlowError


def attributes(node) -> dict:
    """A node's attributes as Python values (strings decoded)."""
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


@dataclass(frozen=True)
class QuantSpec:
    node: str
    scale: np.ndarray  # as stored (float32, broadcastable against the input)
    zeropt: np.ndarray
    bits: float
    signed: bool
    narrow: bool
    rounding_mode: str

    @classmethod
    def of(cls, model: ModelWrapper, node) -> "QuantSpec":
        if node.op_type != "Quant":
            raise FlowError(f"node {node.name!r} ({node.op_type}) is not a Quant node")
        init = [model.get_initializer(t) for t in node.input[1:4]]
        if any(v is None for v in init):
            raise FlowError(f"node {node.name!r} (Quant): scale, zero point and bit width must be constants")
        scale, zeropt, bits = (np.asarray(v) for v in init)
        if bits.size != 1:
            raise FlowError(f"node {node.name!r} (Quant): the bit width must be one number")
        a = attributes(node)
        return cls(node=node.name or node.output[0], scale=scale.astype(np.float32), zeropt=zeropt,
                   bits=float(bits.ravel()[0]), signed=bool(a.get("signed", 1)), narrow=bool(a.get("narrow", 0)),
                   rounding_mode=str(a.get("rounding_mode", "ROUND")))

    @property
    def per_tensor(self) -> bool:
        return self.scale.size == 1

    @property
    def int_bits(self) -> int:
        if self.bits != int(self.bits):
            raise FlowError(f"node {self.node!r} (Quant): bit width {self.bits} is not an integer")
        return int(self.bits)

    @property
    def zero_point_is_zero(self) -> bool:
        return bool(np.all(self.zeropt == 0))

    def scalar_scale(self, what: str = "activation") -> float:
        if not self.per_tensor:
            raise FlowError(f"node {self.node!r} (Quant): per-channel {what} scales are not supported here "
                            "(per-tensor ones are)")
        return float(self.scale.ravel()[0])

    def code_range(self) -> tuple[int, int]:
        b = self.int_bits
        if self.signed:
            return -(1 << (b - 1)) + (1 if self.narrow else 0), (1 << (b - 1)) - 1
        return 0, (1 << b) - 1 - (1 if self.narrow else 0)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """QONNX's own Quant on ``x`` (float32 arithmetic, as the golden executes it)."""
        return quant(x, self.scale, self.zeropt, np.float32(self.bits), int(self.signed), int(self.narrow),
                     self.rounding_mode)


def constant(model: ModelWrapper, tensor: str) -> np.ndarray | None:
    """An initializer, or a Quant node over constants evaluated (quantized weights and biases), else None."""
    v = model.get_initializer(tensor)
    if v is not None:
        return np.asarray(v)
    p = model.find_producer(tensor)
    if p is None or p.op_type != "Quant" or model.get_initializer(p.input[0]) is None:
        return None
    return np.asarray(QuantSpec.of(model, p).apply(model.get_initializer(p.input[0])))
