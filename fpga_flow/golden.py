"""Reference executions: Brevitas in torch (CPU, and CUDA when present) and QONNX.

With power-of-two scales Brevitas' float32 forward is exact integer
arithmetic, so every reference must agree with ``==``; a disagreement is an
export or pass bug and stops the flow.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.custom_op.general.quant import quant
from qonnx.transformation.change_batchsize import ChangeBatchSize
from qonnx.util.cleanup import cleanup_model
from torch import nn
from torch.overrides import TorchFunctionMode

from .compare import exact
from .errors import FlowError
from .passes import host_ops
from .quant import QuantSpec

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
    final: np.ndarray | None = None  # with logits=True: the module's own (float32 log_softmax) output


_LOG_SOFTMAX_FUNCS = (F.log_softmax, torch.log_softmax, torch.Tensor.log_softmax, torch.special.log_softmax)


class _LastLogSoftmaxInput(TorchFunctionMode):
    """Records the input of the last log_softmax a forward calls (functional, method or nn.LogSoftmax)."""

    def __init__(self):
        super().__init__()
        self.last = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _LOG_SOFTMAX_FUNCS:
            self.last = (args[0], args[1] if len(args) > 1 else kwargs.get("dim"))
        return func(*args, **kwargs)


def _forward_logits(module: nn.Module, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, output) of a module whose output is log_softmax(logits), checked: anything after the
    log_softmax would make the captured tensor something other than what the graph's LogSoftmax reads."""
    with _LastLogSoftmaxInput() as mode:
        y = module(xb)
    y = getattr(y, "value", y)
    if mode.last is None:
        raise FlowError(f"{type(module).__name__}'s exported graph ends with LogSoftmax, but its forward "
                        "calls no log_softmax")
    logits, dim = mode.last
    logits = getattr(logits, "value", logits)
    if not torch.equal(F.log_softmax(logits, dim=dim if dim is not None else -1), y):
        raise FlowError(f"{type(module).__name__}'s output is not log_softmax of the tensor its last "
                        "log_softmax call received: only a final log_softmax is supported")
    return logits, y


# The numeric settings of every reference forward on CUDA (docs/gpu.md says why each one). TF32 would round
# each float32 operand of a convolution / matmul to a 10-bit mantissa, outside the float32 summation error
# bound the float-scaled agreement check explains disagreements with (requant.error_bound).
REFERENCE_NUMERICS = {"cudnn.allow_tf32": False, "cuda.matmul.allow_tf32": False,
                      "cudnn.deterministic": True, "cudnn.benchmark": False, "cudnn.enabled": True}


def _numeric_flags() -> dict[str, bool]:
    b = torch.backends
    return {"cudnn.allow_tf32": bool(b.cudnn.allow_tf32), "cuda.matmul.allow_tf32": bool(b.cuda.matmul.allow_tf32),
            "cudnn.deterministic": bool(b.cudnn.deterministic), "cudnn.benchmark": bool(b.cudnn.benchmark),
            "cudnn.enabled": bool(b.cudnn.enabled)}


def _set_numeric_flags(flags: dict[str, bool]) -> None:
    b = torch.backends
    b.cudnn.allow_tf32 = flags["cudnn.allow_tf32"]
    b.cuda.matmul.allow_tf32 = flags["cuda.matmul.allow_tf32"]
    b.cudnn.deterministic = flags["cudnn.deterministic"]
    b.cudnn.benchmark = flags["cudnn.benchmark"]
    b.cudnn.enabled = flags["cudnn.enabled"]


@contextlib.contextmanager
def reference_numerics(overrides: dict[str, bool] | None = None) -> Iterator[dict[str, bool]]:
    """Run a reference forward with ``REFERENCE_NUMERICS`` (TF32 off, deterministic cuDNN, no autotuning);
    the previous process-wide settings are restored afterwards, also on error. The flags are plain
    attributes, so this is safe (and changes no arithmetic) on a CPU-only torch. ``overrides`` (keys of
    ``REFERENCE_NUMERICS``) exist to *measure* other settings (``fpga_flow.gpu_check``), never for a build.
    Yields the settings in force."""
    flags = dict(REFERENCE_NUMERICS)
    unknown = set(overrides or {}) - set(flags)
    if unknown:
        raise FlowError(f"unknown numeric setting(s) {sorted(unknown)}; valid: {', '.join(flags)}")
    flags.update(overrides or {})
    before = _numeric_flags()
    _set_numeric_flags(flags)
    try:
        yield dict(flags)
    finally:
        _set_numeric_flags(before)


def torch_reference(module: nn.Module, x: np.ndarray, device: str = "cpu", batch: int = 1000,
                    logits: bool = False) -> TorchRun:
    """Run the Brevitas module (eval mode) on ``device``; returns float32 outputs.

    ``logits=True`` (a module ending in log_softmax): ``output`` is the input of that final log_softmax,
    the exact logits, and ``final`` the module's own output. Runs under :func:`reference_numerics`.
    """
    with reference_numerics():
        return _torch_reference(module, x, device, batch, logits)


def _torch_reference(module: nn.Module, x: np.ndarray, device: str, batch: int, logits: bool) -> TorchRun:
    module = module.eval().to(device)
    outs, finals = [], []
    with torch.no_grad():  # warm-up: first-call allocations are not the model's speed
        module(torch.from_numpy(x[:min(len(x), batch)]).to(device))
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(x[i:i + batch]).to(device)
            if logits:
                y, f = _forward_logits(module, xb)
                finals.append(f.float().cpu().numpy())
            else:
                y = module(xb)
            y = getattr(y, "value", y)  # QuantTensor -> Tensor
            outs.append(y.float().cpu().numpy())
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    module.cpu()
    return TorchRun(np.concatenate(outs), device, dt, np.concatenate(finals) if logits else None)


def reference_devices(requested: str = "auto") -> list[str]:
    """The devices whose forward a build runs *and compares*: CPU always; CUDA too when it is there
    (``auto``) or asked for. Callers must compare every one of them (see :func:`compare_devices_exact`
    and ``agreement.compare_devices``): the report lists them as checked."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise FlowError("--device cuda was asked for, but torch.cuda.is_available() is False")
    if requested == "cpu":
        return ["cpu"]
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def compare_devices_exact(outputs: dict[str, np.ndarray], want: np.ndarray,
                          compared_with: str) -> tuple[dict[str, dict], list]:
    """Power-of-two models: each device's Brevitas output against ``want`` (QONNX) with ``==``.

    Returns the per-device record (what it was compared with, images that agree, and - exact
    arithmetic admits no explanation - every disagreement unexplained) and the comparisons to add to
    the build's checks. A device that is not in ``outputs`` is not in the record: it was not checked."""
    record, checks = {}, []
    for dev, out in outputs.items():
        c = exact(f"Brevitas torch ({dev}) vs {compared_with}", out, want)
        checks.append(c)
        record[dev] = {"device": dev, "compared_with": compared_with, "images": c.n, "agree": c.exact_matches,
                       "n_explained": 0, "n_unexplained": c.n - c.exact_matches,
                       "numerics": dict(REFERENCE_NUMERICS) if dev.startswith("cuda") else None}
    return record, checks


def _io(model: ModelWrapper) -> tuple[str, str]:
    return model.graph.input[0].name, model.graph.output[0].name


def final_log_softmax(model: ModelWrapper):
    """The LogSoftmax node that produces the graph's output, or None (a model ending at its logits)."""
    _, oname = _io(model)
    node = model.find_producer(oname)
    return node if node is not None and node.op_type == "LogSoftmax" else None


def logits_graph(model: ModelWrapper) -> ModelWrapper:
    """The graph without its final LogSoftmax (its output is then the logits); unchanged if there is none.

    The golden of the logits is exact; the final LogSoftmax's golden is ``fpga_flow.log_softmax`` applied
    to them (onnxruntime's float LogSoftmax is not the hardware's arithmetic).
    """
    node = final_log_softmax(model)
    if node is None:
        return model
    m = ModelWrapper(copy.deepcopy(model.model))
    logits, out = node.input[0], node.output[0]
    m.graph.node.remove(next(n for n in m.graph.node if n.output[0] == out))
    for n in m.graph.node:  # the logits tensor takes the graph output's name (cleanup keeps that name)
        n.output[:] = [out if t == logits else t for t in n.output]
        n.input[:] = [out if t == logits else t for t in n.input]
    for vi in [v for v in m.graph.value_info if v.name == logits]:
        m.graph.value_info.remove(vi)  # declared as the graph output (same shape and type)
    return m


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


def qonnx_every_image(model: ModelWrapper, x: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Execute a batch-1 graph on every image of ``x``, ``chunk`` images per execution.

    For graphs ``ChangeBatchSize`` cannot rewrite (the channels-last custom ops fail its shape inference): the
    declared batch dimension (1) of the graph's input, output and intermediate tensors is set to the chunk's
    size, nothing else is changed, and QONNX checks every node's output shape against it. Image by image
    this costs ~0.3 s per convnet image, which is why the check once sampled 16 images (#15 item 15); batched
    it is ~2 ms, so every image is checked. A graph this rewrite does not fit (a tensor whose leading 1 is not
    the batch, a Reshape to a constant batch of 1) raises in QONNX's shape check and runs image by image."""
    iname, oname = _io(model)
    outs = []
    for i in range(0, len(x), chunk):
        xb = x[i:i + chunk]
        m = ModelWrapper(copy.deepcopy(model.model))
        for vi in [*m.graph.input, *m.graph.output, *m.graph.value_info]:
            dims = vi.type.tensor_type.shape.dim
            if len(dims) and dims[0].dim_value == 1:
                dims[0].dim_value = len(xb)
        try:
            y = execute_onnx(m, {iname: xb})[oname]
        except Exception:  # noqa: BLE001 - the rewrite did not fit this graph: the slow, plain way
            y = qonnx_per_image(model, xb)
        if y.shape[0] != len(xb):
            y = qonnx_per_image(model, xb)
        outs.append(y)
    return np.concatenate(outs)


def qonnx_trace(model: ModelWrapper, x1: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of the graph for one input (batch 1): the per-layer golden."""
    iname, _ = _io(model)
    return execute_onnx(model, {iname: x1}, return_full_exec_context=True)


def input_quantizer(model: ModelWrapper) -> dict:
    """Parameters of the Quant node on the graph input (after any host pre-processing, ``host_ops``): the
    hardware's input type."""
    _, node, _ = host_ops.prefix(model)
    if node is not None and node.op_type == "Quant":
        q = QuantSpec.of(model, node)
        return dict(scale=float(q.scale.ravel()[0]), zeropt=float(q.zeropt.ravel()[0]), bits=q.int_bits,
                    signed=q.signed, narrow=q.narrow, rounding_mode=q.rounding_mode)
    raise FlowError("the graph input is not followed by a Quant node (no input quantizer)")


def quantize_input(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    """The host's pre-processing (if any: ``host_ops``, torch float32 as Brevitas runs it), then the graph's
    input quantizer: the values the hardware receives (exact on its grid)."""
    q = input_quantizer(model)
    pre = host_ops.pre_ops(model)
    if pre:
        x = host_ops.apply(pre, x).numpy()
    return quant(x, np.float32(q["scale"]), np.float32(q["zeropt"]), np.float32(q["bits"]), q["signed"],
                 q["narrow"], q["rounding_mode"]).astype(np.float32)
