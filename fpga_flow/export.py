"""Brevitas -> QONNX. The only module that imports ``brevitas.export``."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import FlowError

# the most values one input sample may have (a 3x1024x1024 image has 3.1M): a shape past it is a mistake or a
# crafted file, and allocating it would end in a MemoryError instead of a message
MAX_INPUT_ELEMENTS = 1 << 26


def check_input_shape(input_shape, what: str = "input shape") -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints holding at most ``MAX_INPUT_ELEMENTS`` values."""
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError) as e:
        raise FlowError(f"{what} {input_shape!r} is not a tuple of integers") from e
    if not shape or any(d < 1 for d in shape) or any(d != s for d, s in zip(shape, input_shape)):
        raise FlowError(f"{what} {input_shape!r} must be positive integers (one sample, without the batch)")
    n = 1
    for d in shape:
        n *= d
    if n > MAX_INPUT_ELEMENTS:
        raise FlowError(f"{what} {shape} declares {n:,} values per sample, more than the "
                        f"{MAX_INPUT_ELEMENTS:,} supported (fpga_flow.export.MAX_INPUT_ELEMENTS)")
    return shape


def check_finite(module: nn.Module) -> None:
    """A NaN or infinite weight, bias or buffer is refused by name (otherwise it surfaces later as a
    mismatch blamed on whichever check first sees the NaN, e.g. LogSoftmax)."""
    for kind, items in (("parameter", module.named_parameters()), ("buffer", module.named_buffers())):
        for name, t in items:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad = (~torch.isfinite(t.detach())).sum().item()
                raise FlowError(f"{type(module).__name__} {kind} {name!r} holds {bad} NaN or infinite value(s) "
                                f"of {t.numel()}: fix or retrain the model before building hardware")


def export_qonnx(module: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    """Export ``module`` (eval mode, CPU, batch 1) to a QONNX file at ``path``.

    The dynamo exporter (torch >= 2.9) is used as Brevitas chooses; it names
    nodes deterministically, which keeps project digests reproducible.
    """
    from brevitas.export import export_qonnx as _export

    input_shape = check_input_shape(input_shape)
    module = module.cpu().eval()
    check_finite(module)
    x = torch.zeros((1, *input_shape), dtype=torch.float32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chatter = io.StringIO()  # the dynamo exporter narrates its passes on stdout; shown only on failure
    try:  # the caller writes into a staging directory, so a failure leaves nothing behind
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(chatter):
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            _export(module, x, export_path=str(path))
    except Exception as e:  # Brevitas/torch raise many types; name the cause
        raise FlowError(f"QONNX export of {type(module).__name__} failed: {type(e).__name__}: {e}\n"
                        f"{chatter.getvalue()[-2000:]}") from e
    return path
