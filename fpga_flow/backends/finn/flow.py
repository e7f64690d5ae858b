"""``make hls BACKEND=finn`` / ``fpga-flow hls --backend finn``: FINN's estimate-only build as ordered steps.

The front is the HLS flow's own export and clean steps; then the golden (Brevitas CPU/CUDA == QONNX, the
logits for a model ending in log_softmax), FINN's stages (``steps.py``), each followed by
FINN's Python execution of its graph on every verified image compared with the golden using ``==``, and
FINN's analytic estimates. Without Vivado/Vitis the flow stops there and says what was not run. It runs in
the same atomic staging as every build and lands in ``build/<name>_finn/`` (report.json with ``hw.finn``,
report.md, the graph after every stage in ``finn/``).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings

import numpy as np

from ... import compare, front, golden, report
from ...config import BuildConfig
from ...errors import FlowError, VerificationError
from . import compat, steps as finn_steps
from . import report as finn_report

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
    if cfg.fit and cfg.extra.get("target_fps"):
        raise FlowError("--fit searches the fps that fits --part; --target-fps sets it: give one")
    fps = int(cfg.extra.get("target_fps") or DEFAULT_TARGET_FPS)
    if fps <= 0:
        raise FlowError(f"--target-fps must be positive, got {fps}")
    return finn_steps.FinnOptions(part=cfg.part, clock_ns=cfg.clock_ns, target_fps=fps, fit=cfg.fit)


def _f(state) -> dict:
    return state.backend


def step_finn_check(state):
    """FINN importable, the model inside what this path makes exact; refused up front otherwise."""
    _f(state)["version"] = compat.require_finn()
    finn_steps.check_supported(front.model(state, "clean"))
    return state


def step_finn_golden(state):
    """Brevitas (CPU, CUDA) == QONNX on the logits; the hardware input codes."""
    clean = front.model(state, "clean")
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
    f = _f(state)
    t0 = time.perf_counter()
    out = finn_steps.execute(f["design"], f["codes"], workers=state.cfg.workers)
    f["exec_s"][stage] = time.perf_counter() - t0
    f["out"] = out
    state.comparisons.append(compare.exact(f"FINN {stage} (Python execution) vs QONNX golden", out, state.ref["qonnx"]))


def _stage(name: str, run):
    """A flow step: run one FINN stage on the current design (FINN's log kept), save it, verify it."""
    def step(state):
        f = _f(state)
        with compat.finn_log(f["log"]), warnings.catch_warnings():
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
    return [_stage(name, run) for name, run in finn_steps.STAGES]


def step_finn_estimates(state):
    """FINN's analytic resource and cycle estimates of the folded dataflow (its step_generate_estimate_reports)."""
    f = _f(state)
    with compat.finn_log(f["log"]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f["estimate"] = finn_report.estimates(f["design"].model, f["opts"].part, f["opts"].clock_ns)
    (state.path("finn") / "estimates.json").write_text(json.dumps(f["estimate"], indent=1) + "\n")
    return state


def hw_finn(state) -> dict:
    f = _f(state)
    o, spec, design = f["opts"], f["input"], f["design"]
    stages = [c for c in state.comparisons if c.name.startswith("FINN ")]
    tools = finn_report.vendor_tools()
    return {
        "finn": f"finn-plus {f['version']}",
        # with --fit, the target is the one the search chose (``fit``), not the default
        "options": {"part": o.part, "clock_ns": o.clock_ns,
                    "target_fps": f["fit"]["target_fps"] if f.get("fit") else o.target_fps,
                    "target_cycles_per_frame": (f["fit"]["target_cycles_per_frame"] if f.get("fit")
                                                else o.target_cycles_per_frame),
                    "mvau_wwidth_max": o.mvau_wwidth_max, "fit": o.fit},
        "fit": f.get("fit"),
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
    f = _f(state)
    main = state.comparisons[-1]
    hw = hw_finn(state)
    rep = report.common(state, main)
    card = rep["checkpoint_card"] or {}
    rep.update({
        "accuracy": {"float": card.get("float_accuracy"),
                     "quantized": report.accuracy(state.ref.get("torch_cpu"), state.labels),
                     "finn": report.accuracy(f["out"], state.labels)},
        "csim_samples_per_s": None,  # no C simulation in the FINN path (its cppsim needs Vitis HLS)
        "finn_python_samples_per_s": main.n / f["exec_s"]["minimize_bit_width"] if f["exec_s"].get(
            "minimize_bit_width") else None,
        "output": {"kind": "logits_of_log_softmax" if f["ends_in_log_softmax"] else "logits",
                   "note": OUTPUT_NOTE_LS if f["ends_in_log_softmax"] else OUTPUT_NOTE},
        "hw": {"part": state.cfg.part, "clock_ns": state.cfg.clock_ns, "finn": hw},
        "project_dir": report.project_dir(state, "finn"),
        "digest": hw["dataflow_digest"],
    })
    np.savez_compressed(state.path("finn.npz"), finn=f["out"], finn_ties_up=f["control_out"], codes=f["codes"])
    state.path("report.json").write_text(report.dump(rep))
    state.path("report.md").write_text(finn_report.markdown(rep))
    state.report = rep
    return state


class FinnState(dict):
    """The FINN steps' shared state: ``opts``, ``log``, ``saved``, ``exec_s`` from the start, then what each
    FINN stage reports (its ``Design.info`` keys, which FINN's transformations decide), hence a dict."""


def new_state(cfg: BuildConfig) -> FinnState:
    return FinnState(opts=options(cfg), log=[], saved=[], exec_s={})


def markdown_section(finn: dict | None, model: str) -> list[str]:
    """FINN's estimates of the same model beside another backend's design (a section of its report.md)."""
    if not finn:
        return []
    e, o = finn["estimate"], finn["options"]
    t = e["total"]
    return ["", f"## FINN's estimates of the same model (`make hls MODEL={model} BACKEND=finn`)", "",
            f"FINN {finn['finn']}, target {o['target_fps']:,} fps at {o['clock_ns']} ns on {o['part']}: "
            f"{e['max_cycles']:,} cycles/frame ({e['throughput_fps']:,.0f} frames/s), latency "
            f"{e['critical_path_cycles']:,} cycles, LUT {t['LUT']:,.0f} / BRAM18K {t['BRAM_18K']:,.0f} / "
            f"DSP {t['DSP']:,.0f} (FINN's analytic model; details in {model}_finn/report.md)."]


STEPS = [front.step_export, front.step_clean, step_finn_check, step_finn_golden, *_finn_stages(),
         step_finn_estimates, step_finn_report]
