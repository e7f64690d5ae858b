"""``make hls BACKEND=finn`` / ``fpga-flow hls --backend finn``: FINN's estimate-only build as ordered steps.

The front is the HLS flow's own export and clean steps; then the golden (Brevitas CPU/CUDA == QONNX, the
logits for a model ending in log_softmax), FINN's stages (``backends/finn_steps.py``), each followed by
FINN's Python execution of its graph on every verified image compared with the golden using ``==``, and
FINN's analytic estimates. Without Vivado/Vitis the flow stops there and says what was not run. It runs in
the same atomic staging as every build and lands in ``build/<name>_finn/`` (report.json with ``hw.finn``,
report.md, the graph after every stage in ``finn/``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
from torch import nn

from . import compare, flow, golden
from .config import BuildConfig, check_identifier
from .errors import FlowError, VerificationError

SUFFIX = "_finn"
DEFAULT_TARGET_FPS = 10_000
OUTPUT_NOTE_LS = ("The model ends with log_softmax. FINN has no LogSoftmax layer (its HWSoftmax is a float "
                  "softmax), so the FINN design ends at the logits, and those are what is verified with `==` "
                  "(the exact golden: Brevitas' input to its log_softmax). log_softmax is monotonic: the predicted "
                  "class is the logits' argmax, on which the accuracy below is computed; the host (or our hls4ml "
                  "design's fixed-point kernel) computes log_softmax itself.")
OUTPUT_NOTE = ("The FINN design ends at the last layer's integer accumulator; its dequantization (x scale + "
               "bias, float32) runs on the host. The outputs verified are the logits after it.")


def options(cfg: BuildConfig):
    from .backends.finn_steps import FinnOptions
    fps = int(cfg.extra.get("target_fps") or DEFAULT_TARGET_FPS)
    if fps <= 0:
        raise FlowError(f"--target-fps must be positive, got {fps}")
    return FinnOptions(part=cfg.part, clock_ns=cfg.clock_ns, target_fps=fps)


def _f(state) -> dict:
    return state.finn


def step_finn_check(state):
    """FINN importable, the model inside what this path makes exact; refused up front otherwise."""
    from .backends import finn_compat, finn_steps
    _f(state)["version"] = finn_compat.require_finn()
    finn_steps.check_supported(flow._model(state, "clean"))
    return state


def step_finn_golden(state):
    """Brevitas (CPU, CUDA) == QONNX on the logits; the hardware input codes."""
    from .backends import finn_steps
    clean = flow._model(state, "clean")
    ends_in_ls = golden.final_log_softmax(clean) is not None
    logits = golden.logits_graph(clean)
    devices = golden.reference_devices(state.cfg.device)
    for dev in devices:
        run = golden.torch_reference(state.module, state.x, dev, logits=ends_in_ls)
        state.ref[f"torch_{dev}"] = run.output
        state.ref_speed[dev] = len(state.x) / run.seconds if run.seconds else float("inf")
    state.ref["qonnx"] = golden.qonnx_reference(logits, state.x)
    state.ref["hw_input"] = golden.quantize_input(clean, state.x)
    what = " (logits)" if ends_in_ls else ""
    checks = [compare.exact(f"Brevitas torch ({dev}) vs QONNX{what}", state.ref[f"torch_{dev}"], state.ref["qonnx"])
              for dev in devices]
    state.comparisons += checks
    bad = [c for c in checks if not c.ok]
    if bad:
        raise VerificationError("the references disagree before FINN ran:\n  " + "\n  ".join(c.line() for c in bad))
    model, spec = finn_steps.input_to_host(logits)
    f = _f(state)
    f.update(ends_in_log_softmax=ends_in_ls, input=spec, codes=spec.codes(state.ref["hw_input"]),
             design=finn_steps.Design(model))
    _save(state, "input_on_host")
    np.savez_compressed(state.path("golden.npz"), **state.ref)
    return state


def _save(state, stage: str) -> None:
    f = _f(state)
    d = state.path("finn")
    d.mkdir(exist_ok=True)
    i = len(f["saved"])
    f["saved"].append(stage)
    design = f["design"]
    name = f"{i:02d}_{stage}.onnx"
    design.model.save(str(d / name))
    if design.parent is not None:  # the parent's partition points at the dataflow saved beside it (relative)
        import copy

        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.custom_op.registry import getCustomOp
        parent = ModelWrapper(copy.deepcopy(design.parent.model))
        getCustomOp(parent.get_nodes_by_op_type("StreamingDataflowPartition")[0]).set_nodeattr("model", name)
        parent.save(str(d / f"{i:02d}_{stage}_parent.onnx"))


def _verify(state, stage: str) -> None:
    """FINN's Python execution of this stage's graph on every image == the golden."""
    from .backends import finn_steps
    f = _f(state)
    t0 = time.perf_counter()
    out = finn_steps.execute(f["design"], f["codes"], workers=state.cfg.workers)
    f["exec_s"][stage] = time.perf_counter() - t0
    f["out"] = out
    state.comparisons.append(compare.exact(f"FINN {stage} (Python execution) vs QONNX golden", out, state.ref["qonnx"]))


def _stage(name: str, run):
    """A flow step: run one FINN stage on the current design (FINN's log kept), save it, verify it."""
    def step(state):
        from .backends import finn_compat, finn_steps
        f = _f(state)
        with finn_compat.finn_log(f["log"]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # qonnx/FINN warn about opsets and layouts on every graph
            try:
                f["design"] = run(f["design"], f["opts"], state.path("finn"))
            except FlowError:
                raise
            except Exception as e:  # FINN's own refusals (FINNUserError, asserts) and crashes, with the stage
                raise FlowError(f"FINN failed in its stage {name} ({type(e).__name__}: {e}); this model is "
                                "outside what the FINN path supports (docs/finn.md)") from e
        info = f["design"].info
        if "control" in info:  # FINN's own thresholds on the same images: shows whether the tie fix mattered
            out = finn_steps.execute(finn_steps.Design(info.pop("control")), f["codes"], workers=state.cfg.workers)
            f["control"] = compare.exact(f"FINN's own thresholds (ties up), after {name}", out, state.ref["qonnx"])
            f["control_out"] = out
        f.update(info)
        _save(state, name)
        _verify(state, name)
        return state
    step.__name__ = f"step_finn_{name}"
    step.__doc__ = f"FINN stage {name}, then FINN's Python execution == golden."
    return step


def _finn_stages() -> list:
    """One flow step per FINN stage (importing finn_steps imports no FINN module: that happens in the stages)."""
    from .backends.finn_steps import STAGES as stages
    return [_stage(name, run) for name, run in stages]


def step_finn_estimates(state):
    """FINN's analytic resource and cycle estimates of the folded dataflow (its step_generate_estimate_reports)."""
    from .backends import finn_compat, finn_report
    f = _f(state)
    with finn_compat.finn_log(f["log"]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f["estimate"] = finn_report.estimates(f["design"].model, f["opts"].part, f["opts"].clock_ns)
    (state.path("finn") / "estimates.json").write_text(json.dumps(f["estimate"], indent=1) + "\n")
    return state


def hw_finn(state) -> dict:
    from .backends import finn_report
    f = _f(state)
    o, spec, design = f["opts"], f["input"], f["design"]
    stages = [c for c in state.comparisons if c.name.startswith("FINN ")]
    tools = finn_report.vendor_tools()
    return {
        "finn": f"finn-plus {f['version']}",
        "options": {"part": o.part, "clock_ns": o.clock_ns, "target_fps": o.target_fps,
                    "target_cycles_per_frame": o.target_cycles_per_frame, "mvau_wwidth_max": o.mvau_wwidth_max},
        "input": {"datatype": spec.datatype, "scale": spec.scale, "on_host": "input quantizer (float -> codes)"},
        "host_nodes": [f"{n.name} ({n.op_type})" for n in design.parent.graph.node
                       if n.op_type != "StreamingDataflowPartition"],
        "stages": [{"stage": c.name.split(" ")[1], "n": c.n, "exact_matches": c.exact_matches,
                    "max_abs_diff": c.max_abs_diff, "exec_s": round(f["exec_s"].get(c.name.split(" ")[1], 0), 3)}
                   for c in stages],
        "ties": {"odd_code_thresholds": f["odd_code_thresholds"], "repaired_after_streamline": f["repaired"],
                 "control": {"n": f["control"].n, "exact_matches": f["control"].exact_matches,
                             "max_abs_diff": f["control"].max_abs_diff}},
        "estimate": f["estimate"],
        "vendor_tools": tools,
        "not_run": [{"step": s, "needs": needs,
                     "why": "vendor tools not present" if not any(tools.values()) else
                            "not wired into this flow yet (written without vendor tools to test it)"}
                    for s, needs in finn_report.NOT_RUN],
        "log": f["log"],
        "dataflow_digest": hashlib.sha256(design.model.model.graph.SerializeToString()).hexdigest(),
    }


def step_finn_report(state):
    from .backends import finn_report
    from .report import _acc
    f = _f(state)
    main = state.comparisons[-1]
    devices = [k.removeprefix("torch_") for k in state.ref if k.startswith("torch_")]
    card = (state.checkpoint or {}).get("card") or {}
    hw = hw_finn(state)
    rep = {
        "model": state.name.removesuffix(SUFFIX), "backend": "finn", "config": state.cfg.to_json(),
        "checkpoint": (state.checkpoint or {}).get("path"), "checkpoint_card": card or None,
        "n_images": main.n, "exact_matches": main.exact_matches, "mismatches": main.n - main.exact_matches,
        "max_abs_diff": main.max_abs_diff, "argmax_agreement": main.argmax_agreement,
        "accuracy": {"float": card.get("float_accuracy"), "quantized": _acc(state.ref.get("torch_cpu"), state.labels),
                     "finn": _acc(f["out"], state.labels)},
        "reference_device": "cuda" if "cuda" in devices else "cpu", "reference_devices": devices,
        "comparisons": [{"name": c.name, "n": c.n, "exact_matches": c.exact_matches, "max_abs_diff": c.max_abs_diff,
                         "first_mismatches": c.mismatching_images[:10]} for c in state.comparisons],
        "timings_s": dict(state.timings),  # the steps before this one
        "csim_samples_per_s": None,  # no C simulation in the FINN path (its cppsim needs Vitis HLS)
        "finn_python_samples_per_s": main.n / f["exec_s"]["minimize_bit_width"] if f["exec_s"].get(
            "minimize_bit_width") else None,
        "torch_samples_per_s": state.ref_speed.get("cpu"),
        "output": {"kind": "logits_of_log_softmax" if f["ends_in_log_softmax"] else "logits",
                   "note": OUTPUT_NOTE_LS if f["ends_in_log_softmax"] else OUTPUT_NOTE},
        "hw": {"part": state.cfg.part, "clock_ns": state.cfg.clock_ns, "finn": hw},
        "project_dir": f"build/{state.name}/finn" if _in_repo(state.out_dir) else str(state.out_dir / "finn"),
        "digest": hw["dataflow_digest"],
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    np.savez_compressed(state.path("finn.npz"), finn=f["out"], finn_ties_up=f["control_out"], codes=f["codes"])
    state.path("report.json").write_text(json.dumps(rep, indent=1, default=float) + "\n")
    state.path("report.md").write_text(finn_report.markdown(rep))
    state.report = rep
    return state


def _in_repo(p: Path) -> bool:
    try:
        return p.resolve().parent == (flow.REPO / "build").resolve()
    except OSError:
        return False


STEPS = [flow.step_export, flow.step_clean, step_finn_check, step_finn_golden, *_finn_stages(),
         step_finn_estimates, step_finn_report]
STEP_NAMES = [s.__name__.removeprefix("step_") for s in STEPS]


def build(module: nn.Module, input_shape: tuple[int, ...], name: str = "model", out_dir: str | os.PathLike = "build",
          config: BuildConfig | None = None, images: np.ndarray | None = None, labels: np.ndarray | None = None,
          checkpoint: dict | None = None, progress: bool = True, start_step: str | None = None,
          stop_step: str | None = None, reverify: bool = False) -> dict:
    """FINN's Python execution verified (``==``) at every stage and FINN's estimates, for any Brevitas model
    the path supports; the report lands in ``out_dir/<name>_finn/report.json`` under ``hw.finn``."""
    from .api import _inputs
    if start_step or stop_step:
        raise FlowError("--start-step/--stop-step are not supported by the finn backend (it runs all its steps: "
                        + ", ".join(STEP_NAMES) + ")")
    if reverify:
        raise FlowError("`csim` does not apply to the finn backend (no C simulation without Vitis HLS); "
                        f"re-run `make hls MODEL={name} BACKEND=finn N=...` to verify on more images")
    check_identifier(name, "build name")
    from .backends.finn_compat import require_finn
    require_finn()  # before any work: a missing FINN is exit 2 with the install commands
    cfg = config or BuildConfig(model=name, backend="finn")
    x, y = _inputs(tuple(input_shape), cfg.n_images, cfg.data_path, images, labels)
    state = flow.State(cfg=cfg, name=name + SUFFIX, module=module.eval(), input_shape=tuple(input_shape),
                       out_dir=Path(out_dir) / (name + SUFFIX), x=x, labels=y, checkpoint=checkpoint,
                       progress=progress)
    state.finn = {"opts": options(cfg), "log": [], "saved": [], "exec_s": {}}
    state = flow.run(state, steps=STEPS)
    return state.report or {}


def load_finn(build_dir: Path, name: str, clean_onnx: Path | None = None) -> dict | None:
    """``hw.finn`` of the FINN build of ``name`` beside ``build_dir/name`` (for the hls4ml report), or None.

    With ``clean_onnx``, only a FINN build of the byte-identical cleaned graph counts (same checkpoint,
    bit widths and passes)."""
    from .rtl_flow import graph_fingerprint
    d = Path(build_dir) / (name + SUFFIX)
    try:
        if clean_onnx is not None and graph_fingerprint(d / "10_clean.onnx") != graph_fingerprint(clean_onnx):
            return None
        return json.loads((d / "report.json").read_text())["hw"]["finn"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
