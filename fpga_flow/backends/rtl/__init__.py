"""The rtl backend: our own Verilog, verified in Verilator (``==`` the golden), counted by yosys.

Today's mode is da4ml's fully unrolled dense network (``da4ml_flow``); the folded streaming dataflow
blocks it grows into live in ``hw/`` (each simulated alone against its numpy model).
"""

from __future__ import annotations

import os

import numpy as np
from torch import nn

from ... import api
from ...config import BuildConfig
from .. import Backend
from . import da4ml_flow

BACKEND = Backend(
    name="rtl", about="our Verilog (da4ml, dense layers), Verilator == golden, yosys synth_xilinx counts",
    suffix="_rtl", steps=tuple(da4ml_flow.STEPS), new_state=da4ml_flow.new_state, reverify=None,
    markdown_section=da4ml_flow.markdown_section, summary=da4ml_flow.summary)


def build_rtl(module: nn.Module, input_shape: tuple[int, ...], name: str = "model",
              out_dir: str | os.PathLike = "build", config=None, images: np.ndarray | None = None,
              labels: np.ndarray | None = None, checkpoint: dict | None = None, synth: bool = True,
              fault: tuple | str | None = None, jobs: int | None = None, synth_timeout_s: float | None = None,
              mapper: str = "abc", progress: bool = True) -> dict:
    """``fpga_flow.build`` with ``backend="rtl"`` and this mode's options: ``fault`` is a deliberately wrong
    weight ((layer, input, output, delta) or "default"), which verification must catch (VerificationError);
    the report lands in ``out_dir/<name>_rtl/report.json`` under ``hw.rtl``."""
    cfg = config or BuildConfig(model=name)
    extra = {**cfg.extra, "synth": synth, "fault": fault, "jobs": jobs, "synth_timeout_s": synth_timeout_s,
             "mapper": mapper}
    return api.build(module, input_shape, name=name, out_dir=out_dir, config=cfg.replace(backend="rtl", extra=extra),
                 images=images, labels=labels, checkpoint=checkpoint, progress=progress)
