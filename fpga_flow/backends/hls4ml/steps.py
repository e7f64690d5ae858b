"""The hls4ml backend's steps after the front: convert, write, C simulation, compare, report."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ... import compare, front, golden, int_ref, log_softmax
from ...codegen import BuildPlan, load_plan_info
from ...errors import FlowError
from ...runner import State
from . import convert, csim, fit, report


@dataclass
class Hls4mlState:
    """What the hls4ml steps hand each other (and a resumed run reads back from the build folder)."""

    plan: BuildPlan | None = None
    plan_info: dict | None = None
    binaries: dict | None = None
    csim_seconds: float = 0.0
    log_softmax: dict | None = None  # a design ending in LogSoftmax: its bound, errors and argmax checks


def step_convert(state: State) -> State:
    model, cfg = front.hw_model(state), state.cfg
    plan, info = convert.make_plan(model, cfg)
    if cfg.fit:  # the reuse factors that fit the part by the estimate, then the project made with them
        result = fit.search(info, cfg.clock_ns, cfg.io_type, cfg.part, fixed=tuple(cfg.layers))
        state.log(fit.describe(result))
        layers = fit.overrides(result, cfg.layers)
        now = {r["layer"]: (r.get("geometry") or {}).get("reuse_factor") for r in info["layers"]}
        if any(c["reuse_factor"] != now.get(c["layer"]) for c in result["layers"]):
            plan, info = convert.make_plan(model, cfg.replace(layers=layers))
        info["fit"] = {**result, "layers_config": layers}
    if state.lowered is not None:
        info["lowered"] = [lay.summary() for lay in state.lowered.layers]
    state.backend.plan = plan
    state.backend.plan_info = info
    return state


def step_write(state: State) -> State:
    if state.backend.plan is None:  # a run resumed at this step: the plan is made again from the saved graph
        state = step_convert(state)
    plan = state.backend.plan
    plan.write(state.path("hls"))
    (state.path("plan_info.json")).write_text(json.dumps(state.backend.plan_info, indent=1))
    return state


def _info(state: State) -> dict:
    if state.backend.plan_info is None:
        p = state.path("plan_info.json")
        if not p.is_file():
            raise FlowError(f"no HLS project in {state.out_dir}: run `make hls MODEL={state.name}` first")
        state.backend.plan_info = load_plan_info(p, state.name)
    return state.backend.plan_info


def step_csim_build(state: State) -> State:
    info = _info(state)
    digest = BuildPlan.from_dir(state.path("hls")).digest()
    if digest != info["digest"]:
        raise FlowError(f"{state.out_dir}/hls was modified after it was generated (digest {digest[:12]} != "
                        f"{info['digest'][:12]}); rebuild it with `make hls MODEL={state.name}`")
    variants = ("exact", "stock") if state.cfg.stock_check_images else ("exact",)
    state.backend.binaries = csim.build(state.path("hls"), digest, csim.cache_dir(), variants)
    return state


def step_csim_run(state: State) -> State:
    if state.backend.binaries is None:  # a run resumed at this step: the binaries (cached by digest) first
        state = step_csim_build(state)
    hw_in = front.channels_last(state.ref["hw_input"])
    out, dt = csim.run(state.backend.binaries["exact"], state.path("hls"), hw_in, state.cfg.workers,
                       progress=state.progress, desc="csim", tmp_root=state.work)
    state.ref["csim"], state.backend.csim_seconds = out, dt
    k = min(state.cfg.stock_check_images, len(hw_in))
    if k:
        state.ref["csim_stock"], _ = csim.run(state.backend.binaries["stock"], state.path("hls"), hw_in[:k],
                                             state.cfg.workers, progress=state.progress, desc="csim (stock)",
                                             tmp_root=state.work)
    np.savez_compressed(state.path("csim.npz"), **{k: v for k, v in state.ref.items() if k.startswith("csim")})
    return state


def step_compare(state: State) -> State:
    if front.golden_key(state) == front.INT_REF:
        want, name = state.ref[front.INT_REF], "HLS csim vs integer-accumulator reference"
    else:
        want, name = state.ref["qonnx"], "HLS csim vs QONNX golden"
    spec = log_softmax.spec_from_info(_info(state))
    if spec is not None:  # the golden of the hardware's LogSoftmax: its integer model on the exact logits
        want = state.ref["golden_log_softmax"] = log_softmax.forward(spec, state.ref["qonnx"])
        name = "HLS csim vs QONNX golden logits -> LogSoftmax model"
    main = compare.exact(name, state.ref["csim"], want)
    state.comparisons.append(main)
    if spec is not None:
        state.backend.log_softmax = log_softmax.check(spec, state.ref["csim"], state.ref["qonnx"],
                                              state.ref.get("log_softmax_torch_cpu"))
        state.comparisons += log_softmax.failed_checks(state.backend.log_softmax)
    if "csim_stock" in state.ref:
        k = len(state.ref["csim_stock"])
        state.comparisons.append(compare.exact("hls4ml stock csim vs fpga_flow exact csim",
                                               state.ref["csim_stock"], state.ref["csim"][:k]))
    bad = [c for c in state.comparisons if not c.ok]
    if bad and not main.ok:
        state.divergence = _trace_first_mismatch(state, main.mismatching_images[0])
    return state


def _trace_first_mismatch(state: State, image: int) -> dict | None:
    cl = front.hw_model(state)
    x1 = front.channels_last(state.ref["hw_input"][image:image + 1])
    state.log(f"tracing image {image} layer by layer to find the first divergence ...")
    with tempfile.TemporaryDirectory(prefix="fpga_flow_trace_") as tmp:
        hls = convert.trace_layers(cl, state.cfg, x1, Path(tmp))
    quantized_by = {n.input[0]: n.output[0] for n in cl.graph.node if n.op_type == "Quant"}
    if state.lowered is not None:
        want = int_ref.run(state.lowered, x1, trace=True)
    else:
        want = golden.qonnx_trace(cl, x1)
    ls_node, spec = golden.final_log_softmax(cl), log_softmax.spec_from_info(_info(state))
    if ls_node is not None and spec is not None:  # its golden is our integer model, not onnxruntime's float
        want[ls_node.output[0]] = log_softmax.forward(spec, want[ls_node.input[0]])
    div = compare.first_divergence(hls, want, quantized_by)
    if div:
        div["image"] = image
    return div


def step_report(state: State) -> State:
    if not state.comparisons:  # a run resumed at this step: compare what the saved outputs say first
        state = step_compare(state)
    state.report = report.write(state)
    return state



def restore(state: State) -> None:
    """A resumed run: golden.npz and csim.npz back in memory (what convert .. compare left there)."""
    front.restore(state)
    p = state.path("csim.npz")
    if p.is_file():
        with np.load(p) as z:
            state.ref.update({k: z[k] for k in z.files})


STEPS = [*front.FRONT, step_convert, step_write, step_csim_build, step_csim_run, step_compare, step_report]
# `csim`: re-verify the project already written, on new inputs, without re-generating it
REVERIFY = [front.step_golden, step_csim_build, step_csim_run, step_compare, step_report]
