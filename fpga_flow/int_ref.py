"""The integer-accumulator reference: a lowered (``LowerFloatScales``) graph executed exactly.

Conv / MatMul accumulate integer codes exactly (float64 holds every sum below 2^53); each ``Requant``
node applies its layer's float32 chain (``fpga_flow.requant.Chain.codes``, the reference) or, with
``thresholds=True``, its integer thresholds (what the hardware computes). Hardware must equal the
reference with ``==``; the two modes agreeing is the thresholds' own check on real data.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import FlowError
from .quant import QuantSpec, attributes


def _quant_node(model, node, env) -> np.ndarray:
    x = env[node.input[0]] if node.input[0] in env else model.get_initializer(node.input[0])
    return np.asarray(QuantSpec.of(model, node).apply(x)).astype(np.float64)


def _conv(x: np.ndarray, w: np.ndarray, a: dict) -> np.ndarray:
    """channels-last conv: x (N, H, W, C), w (O, kh, kw, I/group)."""
    pads = list(a.get("pads", [0, 0, 0, 0]))
    xt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))
    if any(pads):
        xt = F.pad(xt, (pads[1], pads[3], pads[0], pads[2]))
    y = F.conv2d(xt, torch.from_numpy(np.ascontiguousarray(np.moveaxis(w, -1, 1))),
                 stride=tuple(a.get("strides", [1, 1])), dilation=tuple(a.get("dilations", [1, 1])),
                 groups=int(a.get("group", 1)))
    return np.moveaxis(y.numpy(), 1, -1)


def _maxpool(x: np.ndarray, a: dict) -> np.ndarray:
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if any(pads):
        raise FlowError("padded MaxPool is not supported in the integer reference")
    k = tuple(a["kernel_shape"])
    y = F.max_pool2d(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1))), k,
                     stride=tuple(a.get("strides", k)), ceil_mode=bool(a.get("ceil_mode", 0)))
    return np.moveaxis(y.numpy(), 1, -1)


def run(lowered, x_codes: np.ndarray, thresholds: bool = False, trace: bool = False,
        chunk: int = 1000):
    """Execute on input codes (N, ...); returns the output, or every tensor with ``trace=True``."""
    model = lowered.model
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    outs, envs = [], []
    for i in range(0, len(x_codes), chunk):
        env = {iname: np.asarray(x_codes[i:i + chunk], dtype=np.float64)}
        for node in model.graph.node:
            env[node.output[0]] = _execute(model, lowered, node, env, thresholds)
        outs.append(env[oname])
        if trace:
            envs.append(env)
    if trace:
        return {k: np.concatenate([e[k] for e in envs]) for k in envs[0]}
    return np.concatenate(outs)


def _execute(model, lowered, node, env, thresholds: bool) -> np.ndarray:
    op, a = node.op_type, attributes(node)

    def inp(k: int) -> np.ndarray:
        name = node.input[k]
        return env[name] if name in env else np.asarray(model.get_initializer(name), dtype=np.float64)

    if op == "Quant":
        return _quant_node(model, node, env)
    if op == "Conv":
        return _conv(inp(0), inp(1), a)
    if op == "MaxPool":
        return _maxpool(inp(0), a)
    if op == "MatMul":
        return inp(0) @ inp(1)
    if op == "Add":
        return inp(0) + inp(1)
    if op == "Flatten":
        x = inp(0)
        return x.reshape(x.shape[0], -1)
    if op == "Reshape":
        x = inp(0)
        return x.reshape(x.shape[0], *[int(s) for s in inp(1)[1:]])
    if op == "Transpose":
        return np.transpose(inp(0), a["perm"])
    if op == "Requant":
        layer = lowered.layers[int(a["layer_index"])]
        acc = inp(0)
        flat = acc.reshape(-1, acc.shape[-1]).astype(np.int64)
        if not np.array_equal(flat, acc.reshape(flat.shape)):
            raise FlowError(f"{layer.node}: its accumulator is not an integer")
        got = layer.th.apply(flat) if thresholds else layer.chain.codes(flat)
        return got.reshape(acc.shape).astype(np.float64)
    raise FlowError(f"node {node.name!r} ({op}) is not supported by the integer reference")
