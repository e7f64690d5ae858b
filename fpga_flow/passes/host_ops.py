"""Float ops the host runs: an affine pre-processing before the input quantizer, a TensorNorm after the logits.

Brevitas' own example networks (``brevitas_examples.bnn_pynq``) do ``x.view(B, -1)`` and ``2 * x - 1`` in
``forward`` before their first ``QuantIdentity``, and end with a ``TensorNorm`` (``(x - mean) / std * w + b``)
after the last layer's accumulator. Neither belongs in the hardware:

* the *prefix* (Reshape / Flatten / Mul / Add / Sub / Div by constants, between the graph input and the input
  quantizer) runs on the host, in torch float32, in the exported order, and then the input quantizer: that is
  exactly what Brevitas computes, so the hardware receives the same input codes (checked with ``==`` against
  Brevitas' own input quantizer in the golden step);
* the *suffix* (Sub / Mul / Div / Add by constants, from the last layer's output to the graph output) runs on
  the host on the hardware's logits. It is never folded into the last layer's scale or bias: that would change
  float32 rounding and could break ``==`` with Brevitas; kept on the host it is the same float32 op sequence.

:func:`strip` removes both from the graph (the hardware graph starts at the input quantizer and ends at the last
layer) and records them in the model's metadata (``fpga_flow.host_pre`` / ``fpga_flow.host_post``, JSON), so
they travel with every later artifact. :func:`prefix` / :func:`suffix` find them in a graph that still has them.
"""

from __future__ import annotations

import ast
import copy
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
from qonnx.core.modelwrapper import ModelWrapper

from ..errors import FlowError

PRE_KEY, POST_KEY = "fpga_flow.host_pre", "fpga_flow.host_post"
ELEMENTWISE = ("Mul", "Add", "Sub", "Div")
SHAPE = ("Reshape", "Flatten")
QUANTIZERS = ("Quant", "BipolarQuant")
MACS = ("Gemm", "MatMul", "Conv")


_NOT_MODULES = ("aten.", "prim.", "onnx_symbolic", "brevitas.export", "torch.ops", "<built-in")


def _scopes(node) -> list[tuple[str, str]]:
    """(module path, module class) from the root module down to the deepest one a node was exported in, as
    the dynamo exporter records them (``pkg.torch.onnx.name_scopes`` / ``class_hierarchy``, paired); the
    trailing entries that name the op itself (``aten.sub.Tensor``) and export handlers are dropped."""
    props = {p.key: p.value for p in node.metadata_props}
    try:
        scopes = ast.literal_eval(props.get("pkg.torch.onnx.name_scopes", "[]"))
        classes = ast.literal_eval(props.get("pkg.torch.onnx.class_hierarchy", "[]"))
    except (ValueError, SyntaxError):
        return []
    out = []
    for scope, cls in zip(scopes, classes):
        if not isinstance(scope, str) or not isinstance(cls, str) or cls.startswith(_NOT_MODULES):
            continue
        if "export_handler" in scope or scope.startswith("_"):
            continue
        out.append((scope, cls.rsplit(".", 1)[-1]))
    return out


def module_of(node) -> str | None:
    """The PyTorch module a node came from (``features.15``); None for the root module or an unrecorded one."""
    sc = _scopes(node)
    return sc[-1][0] or None if sc else None


def class_of(node) -> str | None:
    """The class of that module (``TensorNorm``); the root module's class for ops in its own ``forward``."""
    sc = _scopes(node)
    return sc[-1][1] if sc else None


def origin(node) -> str:
    """``module features.13 (TensorNorm)``: the PyTorch module a node came from, or "" when unrecorded."""
    mod, cls = module_of(node), class_of(node)
    if mod:
        return f"module {mod}{f' ({cls})' if cls else ''}"
    return f"{cls}.forward" if cls else ""


def label(node) -> str:
    """``Sub_1 (Sub, module features.13 (TensorNorm))``: a node as a report lists it."""
    o = origin(node)
    return f"{node.name} ({node.op_type}{f', {o}' if o else ''})"


def host_nodes(model: ModelWrapper) -> tuple[list[str], list[str], list[str]]:
    """The exported (clean) model's nodes the host runs, as :func:`label` s: the float pre-processing before
    the input quantizer, the input quantizer itself (none for a graph whose input is already codes), and the
    float ops after the last layer (a TensorNorm)."""
    pre, quant, _ = prefix(model)
    return [label(n) for n in pre], [label(quant)] if quant is not None else [], [label(n) for n in suffix(model)]


def where(node) -> str:
    """``node 'Sub_1' (Sub) of module features.13 (TensorNorm)``: the ONNX node and the PyTorch module."""
    o = origin(node)
    return f"node {node.name!r} ({node.op_type}){f' of {o}' if o else ''}"


@dataclass(frozen=True)
class HostOp:
    """One float op the host applies: ``op`` with the constant ``value`` (shape ``shape``), data on the left
    (``x - c``) unless ``const_first`` (``c - x``); for Reshape ``value`` is the target shape."""

    op: str
    node: str
    value: list
    shape: list
    const_first: bool = False

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.op == "Flatten":
            return x.reshape(x.shape[0], -1)
        if self.op == "Reshape":
            return x.reshape(x.shape[0], *[int(d) for d in self.value[1:]])
        c = torch.tensor(np.asarray(self.value, dtype=np.float32).reshape(self.shape))
        a, b = (c, x) if self.const_first else (x, c)
        return {"Mul": torch.mul, "Add": torch.add, "Sub": torch.sub, "Div": torch.div}[self.op](a, b)


def apply(ops: list[HostOp], x) -> torch.Tensor:
    """The ops in order, in torch float32 (as Brevitas' forward runs them on the CPU)."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    for op in ops:
        t = op.apply(t)
    return t


def _host_op(model: ModelWrapper, node, data: str) -> HostOp | None:
    """``node`` as a HostOp when ``data`` flows through it and its other operand is a constant, else None."""
    if node.op_type == "Flatten":
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        return HostOp("Flatten", node.name, [], []) if axis == 1 else None
    if node.op_type == "Reshape":
        shape = model.get_initializer(node.input[1])
        if node.input[0] != data or shape is None or len(shape) < 1 or int(shape[0]) not in (1, -1):
            return None  # the host keeps the batch axis: x.view(B, ...) exports as [1, ...] or [-1, ...]
        return HostOp("Reshape", node.name, [int(v) for v in shape], [len(shape)])
    if node.op_type not in ELEMENTWISE or len(node.input) != 2:
        return None
    other = node.input[1] if node.input[0] == data else node.input[0]
    c = model.get_initializer(other)
    if c is None or other == data:
        return None
    c = np.asarray(c, dtype=np.float32)
    return HostOp(node.op_type, node.name, c.ravel().tolist(), list(c.shape), const_first=node.input[1] == data)


def prefix(model: ModelWrapper) -> tuple[list, object, object]:
    """(host-op nodes, the input quantizer, the node that stopped the walk) from the graph input.

    The quantizer is None when the walk stopped elsewhere: the node it stopped at is then what the
    "input is not quantized" refusal names."""
    tensor, nodes = model.graph.input[0].name, []
    while True:
        cons = model.find_consumers(tensor) or []
        if len(cons) != 1:
            return nodes, None, (cons[0] if cons else None)
        node = cons[0]
        if node.op_type in QUANTIZERS and node.input[0] == tensor:
            return nodes, node, None
        if _host_op(model, node, tensor) is None:
            return nodes, None, node
        nodes.append(node)
        tensor = node.output[0]


def suffix(model: ModelWrapper) -> list:
    """The elementwise-constant nodes from the last layer's output to the graph output (a TensorNorm), in
    graph order; empty when there are none. A lone Add right after the layer is its bias (the lowering
    handles it exactly), not a host op; it stays in the graph."""
    out = model.graph.output[0].name
    nodes: list = []
    node = model.find_producer(out)
    while node is not None and node.op_type in ELEMENTWISE:
        data = next((t for t in node.input if model.get_initializer(t) is None), None)
        if data is None or _host_op(model, node, data) is None or len(model.find_consumers(data) or []) != 1:
            break
        nodes.insert(0, node)
        node = model.find_producer(data)
    if node is None or node.op_type not in MACS:
        return []  # only after a layer's accumulator: anything else stays for the checks to judge
    if nodes and nodes[0].op_type == "Add":  # the layer's bias
        nodes = nodes[1:]
    if not any(n.op_type in ("Mul", "Div", "Sub") for n in nodes):
        return []
    return nodes


def _ops(model: ModelWrapper, nodes: list, start: str) -> list[HostOp]:
    ops, tensor = [], start
    for n in nodes:
        ops.append(_host_op(model, n, tensor))
        tensor = n.output[0]
    return ops


def strip(model: ModelWrapper) -> ModelWrapper:
    """A copy of ``model`` without the prefix and the suffix, which are recorded in its metadata."""
    model = ModelWrapper(copy.deepcopy(model.model))
    pre_nodes, quant, _ = prefix(model)
    post_nodes = suffix(model)
    pre = _ops(model, pre_nodes, model.graph.input[0].name)
    # the data operand of the first suffix node: the last layer's output
    data = next(t for t in post_nodes[0].input if model.get_initializer(t) is None) if post_nodes else ""
    post = _ops(model, post_nodes, data)
    if pre_nodes and quant is not None:
        inp = model.graph.input[0]
        shape = model.get_tensor_shape(quant.input[0])
        for n in pre_nodes:
            model.graph.node.remove(n)
        quant.input[0] = inp.name
        model.set_tensor_shape(inp.name, shape)
    if post_nodes:
        out = model.graph.output[0].name
        producer = model.find_producer(data)
        for n in post_nodes:
            model.graph.node.remove(n)
        producer.output[0] = out
        model.set_tensor_shape(out, model.get_tensor_shape(data))
    _record(model, PRE_KEY, pre + recorded(model, PRE_KEY))
    _record(model, POST_KEY, recorded(model, POST_KEY) + post)
    return model


def _record(model: ModelWrapper, key: str, ops: list[HostOp]) -> None:
    props = model.model.metadata_props
    for p in [p for p in props if p.key == key]:
        props.remove(p)
    if ops:
        p = props.add()
        p.key, p.value = key, json.dumps([asdict(o) for o in ops])


def recorded(model: ModelWrapper, key: str) -> list[HostOp]:
    """The host ops :func:`strip` recorded under ``key`` (``PRE_KEY`` / ``POST_KEY``)."""
    for p in model.model.metadata_props:
        if p.key == key:
            try:
                return [HostOp(**d) for d in json.loads(p.value)]
            except (TypeError, ValueError) as e:
                raise FlowError(f"the model's {key} metadata is not a list of host ops: {e}") from e
    return []


def pre_ops(model: ModelWrapper) -> list[HostOp]:
    """The input pre-processing of ``model``: recorded (stripped graph) or still in the graph."""
    nodes, _, _ = prefix(model)
    return recorded(model, PRE_KEY) + _ops(model, nodes, model.graph.input[0].name)
