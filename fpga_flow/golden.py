"""Reference executions: Brevitas in torch (CPU, and CUDA when present) and QONNX.

With power-of-two scales Brevitas' float32 forward is exact integer
arithmetic, so every reference must agree with ``==``; a disagreement is an
export or pass bug and stops the flow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.custom_op.general.quant import quant
from qonnx.transformation.change_batchsize import ChangeBatchSize
from qonnx.util.cleanup import cleanup_model
from torch import nn

from .errors import FlowError

try:  # qonnx runs single nodes of opset-1 graphs through onnxruntime, which warns on every call
    import onnxruntime as _ort
    _ort.set_default_logger_severity(3)
except ImportError:  # pragma: no cover - onnxruntime is a dependency
    pass


@dataclass
class TorchRun:
    output: np.ndarray
    device: str
    seconds: float


def torch_reference(module: nn.Module, x: np.ndarray, device: str = "cpu", batch: int = 1000) -> TorchRun:
    """Run the Brevitas module (eval mode) on ``device``; returns float32 outputs."""
    module = module.eval().to(device)
    outs = []
    with torch.no_grad():  # warm-up: first-call allocations are not the model's speed
        module(torch.from_numpy(x[:min(len(x), batch)]).to(device))
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            y = module(torch.from_numpy(x[i:i + batch]).to(device))
            y = getattr(y, "value", y)  # QuantTensor -> Tensor
            outs.append(y.float().cpu().numpy())
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    module.cpu()
    return TorchRun(np.concatenate(outs), device, dt)


def reference_devices(requested: str = "auto") -> list[str]:
    """CPU always; CUDA too when it is there (``auto``) or asked for."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise FlowError("--device cuda was asked for, but torch.cuda.is_available() is False")
    if requested == "cpu":
        return ["cpu"]
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _io(model: ModelWrapper) -> tuple[str, str]:
    return model.graph.input[0].name, model.graph.output[0].name


def qonnx_reference(model: ModelWrapper, x: np.ndarray, chunk: int = 1000) -> np.ndarray:
    """Execute a (batch-1) QONNX graph on a batch by rewriting its batch size."""
    iname, oname = _io(model)
    outs = []
    for i in range(0, len(x), chunk):
        xb = x[i:i + chunk]
        mb = cleanup_model(model.transform(ChangeBatchSize(len(xb))))
        outs.append(execute_onnx(mb, {iname: xb})[oname])
    return np.concatenate(outs)


def qonnx_per_image(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    """Execute image by image (for graphs whose batch size cannot be changed, e.g. channels-last)."""
    iname, oname = _io(model)
    return np.concatenate([execute_onnx(model, {iname: x[i:i + 1]})[oname] for i in range(len(x))])


def qonnx_trace(model: ModelWrapper, x1: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of the graph for one input (batch 1): the per-layer golden."""
    iname, _ = _io(model)
    return execute_onnx(model, {iname: x1}, return_full_exec_context=True)


def input_quantizer(model: ModelWrapper) -> dict:
    """Parameters of the Quant node on the graph input: the hardware's input type."""
    iname, _ = _io(model)
    for node in model.graph.node:
        if node.op_type == "Quant" and node.input[0] == iname:
            attrs = {a.name: (a.i if a.type == a.INT else a.s.decode()) for a in node.attribute}
            scale = float(np.ravel(model.get_initializer(node.input[1]))[0])
            return dict(scale=scale,
                        zeropt=float(np.ravel(model.get_initializer(node.input[2]))[0]),
                        bits=int(np.ravel(model.get_initializer(node.input[3]))[0]),
                        signed=bool(attrs.get("signed", 1)), narrow=bool(attrs.get("narrow", 0)),
                        rounding_mode=attrs.get("rounding_mode", "ROUND"))
    raise FlowError("the graph input is not followed by a Quant node (no input quantizer)")


def quantize_input(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    """Apply the graph's input quantizer: the values the hardware receives (exact on its grid)."""
    q = input_quantizer(model)
    return quant(x, np.float32(q["scale"]), np.float32(q["zeropt"]), np.float32(q["bits"]), q["signed"],
                 q["narrow"], q["rounding_mode"]).astype(np.float32)
