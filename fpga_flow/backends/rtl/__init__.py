"""The rtl backend: our own Verilog, verified in Verilator (``==`` the golden), counted by yosys.

Two modes under one contract, picked by ``BuildConfig.extra["rtl_mode"]``:

* ``"stream"`` (default, :mod:`.stream_flow`): the folded streaming dataflow (sliding windows, PE x SIMD
  MVUs with thresholds, max pools, FIFOs) generated from the lowered integer graph, for conv and dense
  models; cycles from the Verilator simulation, yosys synth_xilinx counts, nextpnr-ecp5 place and route;
* ``"da4ml"`` (:mod:`.da4ml_flow`): da4ml's fully unrolled, combinational dense network.

The steps are the stream mode's names; each backend step dispatches on the build's state to its mode's
step (:data:`DA4ML`: the da4ml step doing the same job, or nothing), so both modes share step names,
staging, ``--stop-step`` and the report's place.
"""

from __future__ import annotations

import os

import numpy as np
from torch import nn

from ... import api, front
from ...config import BuildConfig
from ...errors import FlowError
from .. import Backend
from . import da4ml_flow, stream_flow, stream_report

MODES = ("stream", "da4ml")
# stream step -> the da4ml mode's step doing that job (None: nothing to do in that mode)
DA4ML = {"rtl_lower": da4ml_flow.step_rtl_generate, "rtl_generate": da4ml_flow.step_rtl_verilate,
         "rtl_simulate": da4ml_flow.step_rtl_simulate, "rtl_compare": da4ml_flow.step_rtl_compare,
         "rtl_synth": da4ml_flow.step_rtl_synth, "rtl_pnr": None, "rtl_report": da4ml_flow.step_rtl_report}


def mode(cfg: BuildConfig) -> str:
    m = cfg.extra.get("rtl_mode") or "stream"
    if m not in MODES:
        raise FlowError(f"rtl_mode {m!r} unknown; modes: {', '.join(MODES)}")
    return m


def new_state(cfg: BuildConfig):
    return da4ml_flow.new_state(cfg) if mode(cfg) == "da4ml" else stream_flow.new_state(cfg)


def _dispatch(step):
    name = step.__name__.removeprefix("step_")

    def run(state):
        if isinstance(state.backend, da4ml_flow.RtlState):
            other = DA4ML[name]
            return state if other is None else other(state)
        return step(state)

    run.__name__, run.__doc__ = step.__name__, step.__doc__
    return run


def _front_step(step):
    """The float-scaled lowering does not apply to the da4ml mode (it reads the cleaned graph)."""
    if step is not front.step_lower:
        return step

    def run(state):
        return state if isinstance(state.backend, da4ml_flow.RtlState) else step(state)

    run.__name__, run.__doc__ = step.__name__, step.__doc__
    return run


STEPS = tuple([_front_step(s) for s in front.FRONT] + [_dispatch(s) for s in stream_flow.STEPS[len(front.FRONT):]])


def _markdown_section(hw: dict | None, model: str) -> list[str]:
    if hw and hw.get("mode") == "stream":
        return stream_report.markdown_section(hw, model)
    return da4ml_flow.markdown_section(hw, model)


def _summary(rep: dict) -> str:
    if rep["hw"]["rtl"].get("mode") == "stream":
        return stream_report.summary(rep)
    return da4ml_flow.summary(rep)


BACKEND = Backend(
    name="rtl", about="our Verilog: folded streaming dataflow (default) or da4ml dense; Verilator == golden, "
                      "yosys counts, nextpnr-ecp5",
    suffix="_rtl", steps=STEPS, new_state=new_state, reverify=None,
    markdown_section=_markdown_section, summary=_summary)


def build_rtl(module: nn.Module, input_shape: tuple[int, ...], name: str = "model",
              out_dir: str | os.PathLike = "build", config=None, images: np.ndarray | None = None,
              labels: np.ndarray | None = None, checkpoint: dict | None = None, synth: bool = True,
              fault: tuple | str | None = None, jobs: int | None = None, synth_timeout_s: float | None = None,
              mapper: str = "abc", progress: bool = True, mode: str = "da4ml", **options) -> dict:
    """``fpga_flow.build`` with ``backend="rtl"`` and its options. ``mode="da4ml"`` (this function's historic
    default): ``fault`` is a deliberately wrong weight ((layer, input, output, delta) or "default");
    ``mode="stream"``: ``fault`` is "weight", (layer, output, input, delta) or ("threshold", layer, channel,
    k, delta), and ``options`` (target_fps, folding, pnr ...) go to :mod:`.stream_flow`. A wrong design must
    fail verification (VerificationError). The report lands in ``out_dir/<name>_rtl/report.json``."""
    cfg = config or BuildConfig(model=name)
    extra = {**cfg.extra, "rtl_mode": mode, "synth": synth, "fault": fault, "jobs": jobs,
             "synth_timeout_s": synth_timeout_s, "mapper": mapper, **options}
    return api.build(module, input_shape, name=name, out_dir=out_dir, config=cfg.replace(backend="rtl", extra=extra),
                     images=images, labels=labels, checkpoint=checkpoint, progress=progress)
