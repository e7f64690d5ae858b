"""Hand-made QONNX graphs for the FINN tests: one fully connected layer whose accumulator lies on a grid one
bit finer than its output quantizer, so about half of its outputs are exact ties."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.cleanup import cleanup_model


def _quant(name: str, x: str, scale: float, bits: int, signed: bool, narrow: bool = False,
           rounding: str = "ROUND") -> tuple:
    inits = {f"{name}_s": np.float32(scale), f"{name}_z": np.float32(0), f"{name}_b": np.float32(bits)}
    node = helper.make_node("Quant", [x, f"{name}_s", f"{name}_z", f"{name}_b"], [f"{name}_out"], name=name,
                            domain="qonnx.custom_op.general", signed=int(signed), narrow=int(narrow),
                            rounding_mode=rounding)
    return node, inits


def dense_tie_graph(n_in: int = 8, n_out: int = 8, relu: bool = True, signed_out: bool = False,
                    narrow_out: bool = False, out_bits: int = 6, rounding: str = "ROUND",
                    seed: int = 0) -> ModelWrapper:
    """x -> Quant(6-bit, 2^-2) -> MatMul(4-bit weights, 2^-2) + bias -> [Relu] -> Quant(out_bits, 2^-3).

    The accumulator's grid is 2^-4, the output's 2^-3: every accumulator that is an odd multiple of 2^-4
    is a tie. Weights in {-1, 0, 1} / 4 and inputs in [-2, 2] keep most outputs inside the output range."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], {}
    q_in, i = _quant("qin", "x", 2.0 ** -2, 6, signed=True)
    nodes.append(q_in)
    inits.update(i)
    inits["w"] = (rng.integers(-1, 2, size=(n_in, n_out)) * 2.0 ** -2).astype(np.float32)
    q_w, i = _quant("qw", "w", 2.0 ** -2, 4, signed=True, narrow=True)
    nodes.append(q_w)
    inits.update(i)
    nodes.append(helper.make_node("MatMul", ["qin_out", "qw_out"], ["acc"], name="matmul"))
    inits["bias"] = (rng.integers(-8, 9, size=(n_out,)) * 2.0 ** -4).astype(np.float32)
    q_b, i = _quant("qb", "bias", 2.0 ** -4, 16, signed=True)
    nodes.append(q_b)
    inits.update(i)
    nodes.append(helper.make_node("Add", ["acc", "qb_out"], ["pre"], name="add_bias"))
    act = "pre"
    if relu:
        nodes.append(helper.make_node("Relu", ["pre"], ["relu_out"], name="relu"))
        act = "relu_out"
    q_out, i = _quant("qout", act, 2.0 ** -3, out_bits, signed=signed_out, narrow=narrow_out, rounding=rounding)
    q_out.output[0] = "y"
    nodes.append(q_out)
    inits.update(i)
    graph = helper.make_graph(nodes, "dense_ties", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_out])],
                              [helper.make_tensor(k, TensorProto.FLOAT, np.shape(v), np.ravel(v).tolist())
                               for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    return cleanup_model(ModelWrapper(model))


def inputs(n: int, n_in: int = 8, seed: int = 1) -> np.ndarray:
    """Values on the input quantizer's grid (within its range), so the input rounding is not at stake."""
    return (np.random.default_rng(seed).integers(-8, 9, size=(n, n_in)) * 2.0 ** -2).astype(np.float32)
