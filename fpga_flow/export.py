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


def export_qonnx(module: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    """Export ``module`` (eval mode, CPU, batch 1) to a QONNX file at ``path``.

    The dynamo exporter (torch >= 2.9) is used as Brevitas chooses; it names
    nodes deterministically, which keeps project digests reproducible.
    """
    from brevitas.export import export_qonnx as _export

    module = module.cpu().eval()
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
