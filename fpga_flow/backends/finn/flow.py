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

from ... import compare, front, golden, passes, report
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
    """FINN importable, the model inside what this path makes exact; refused up front otherwise.

    A float-scaled model (BatchNorm, BipolarQuant, float scales: the bnn_pynq networks) takes the exact
    lowering's path (``lowered.py``): the checks are the hls4ml front's, whose lowering FINN then receives."""
    _f(state)["version"] = compat.require_finn()
    clean = front.model(state, "clean")
    if passes.is_float_scaled(clean):
        front.step_check(state)
    else:
        finn_steps.check_supported(clean)
    return state


def step_finn_golden(state):
    """Brevitas (CPU, CUDA) == QONNX on the logits; the hardware input codes. Float-scaled models: the hls4ml
    front's golden (the integer-accumulator reference, checked against Brevitas and QONNX) and its lowering
    in FINN's dialect (``lowered.py``)."""
    clean = front.model(state, "clean")
    if passes.is_float_scaled(clean):
        return _golden_float_scaled(state, clean)
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
             design=finn_steps.Design(model), golden="qonnx", golden_name="QONNX golden", host=_host_ops(clean))
    _save(state, "input_on_host")
    np.savez_compressed(state.path("golden.npz"), **state.ref)
    return state


def _golden_float_scaled(state, clean):
    from . import lowered as finn_lowered
    for step in (front.step_channels_last, front.step_lower, front.step_golden):
        step(state)
    low = front.lowered(state)
    nchw = finn_lowered.nchw_lowered(clean)
    finn_lowered.same_thresholds(nchw, low)
    q = low.input_quant
    spec = finn_steps.InputSpec(scale=q.scale, bits=q.bits, signed=q.signed, narrow=q.narrow, bipolar=q.bipolar)
    # the golden: the integer-accumulator reference in float32 (FINN executes in float32; exact, as the
    # front's "QONNX (lowered graph, float32) vs integer-accumulator reference in float32" check shows)
    state.ref["int_ref_f32"] = np.asarray(state.ref[front.INT_REF]).astype(np.float32)
    _f(state).update(ends_in_log_softmax=False, input=spec, codes=np.asarray(state.ref["hw_input"], np.float32),
                     design=finn_steps.Design(finn_lowered.to_finn(nchw)), golden="int_ref_f32",
                     golden_name="integer-accumulator reference", host=_host_ops(clean))
    _save(state, "input_on_host")
    return state


def _host_ops(clean) -> dict:
    """What runs on the host around the FINN dataflow, named by node (and the PyTorch module it came from)."""
    from ...passes import host_ops
    pre, quant, post = host_ops.host_nodes(clean)
    deq = "the last layer's dequantization (accumulator x scale [+ bias], float32)"
    ls = golden.final_log_softmax(clean)
    return {"before_dataflow": pre + quant,
            "after_dataflow": [deq] + post + ([host_ops.label(ls)] if ls is not None else [])}


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
    out = finn_steps.execute(f["design"], finn_steps.feed(f["design"], f["codes"], f["input"]),
                             workers=state.cfg.workers)
    f["exec_s"][stage] = time.perf_counter() - t0
    f["out"] = out
    state.comparisons.append(compare.exact(f"FINN {stage} (Python execution) vs {f['golden_name']}", out,
                                           state.ref[f["golden"]]))


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
            control = finn_steps.Design(info.pop("control"))
            out = finn_steps.execute(control, finn_steps.feed(control, f["codes"], f["input"]),
                                     workers=state.cfg.workers)
            f["control"] = compare.exact(f"FINN's own thresholds (ties up), after {name}", out,
                                         state.ref[f["golden"]])
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
        # the dataflow's input type (a bipolar input that FINN's XNOR layers read as BINARY: -1 is fed as 0)
        "input": {"datatype": design.parent.get_tensor_datatype(design.parent.graph.input[0].name).name,
                  "codes": spec.datatype, "scale": spec.scale, "on_host": "input quantizer (float -> codes)"},
        "host_nodes": [f"{n.name} ({n.op_type})" for n in design.parent.graph.node
                       if n.op_type != "StreamingDataflowPartition"],
        "host_ops": f["host"],  # the exported model's ops that run on the host, before and after the dataflow
        "golden": f["golden_name"],
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


OUTPUT_NOTE_FLOAT = ("The FINN design ends at the last layer's integer accumulator, verified with `==` against "
                     "the integer-accumulator reference (the golden of float-scaled models, itself checked against "
                     "Brevitas); the host turns it into the module's output (x scale, then any TensorNorm: see "
                     "'Runs on the host'). The thresholds FINN received are the exact lowering's (docs/bnn-pynq.md).")


def _output(f: dict) -> dict:
    if f["golden"] == "int_ref_f32":
        return {"kind": "accumulator", "note": OUTPUT_NOTE_FLOAT}
    if f["ends_in_log_softmax"]:
        return {"kind": "logits_of_log_softmax", "note": OUTPUT_NOTE_LS}
    return {"kind": "logits", "note": OUTPUT_NOTE}


def step_finn_report(state):
    f = _f(state)
    main = state.comparisons[-1]
    hw = hw_finn(state)
    rep = report.common(state, main)
    card = rep["checkpoint_card"] or {}
    # float-scaled: the class is read off what the host makes of the accumulator (x scale, then a TensorNorm)
    logits = front.lowered(state).logits(f["out"]) if f["golden"] == "int_ref_f32" else f["out"]
    rep.update({
        "accuracy": {"float": card.get("float_accuracy"),
                     "quantized": report.accuracy(state.ref.get("torch_cpu"), state.labels),
                     "finn": report.accuracy(logits, state.labels)},
        "csim_samples_per_s": None,  # no C simulation in the FINN path (its cppsim needs Vitis HLS)
        "finn_python_samples_per_s": main.n / f["exec_s"]["minimize_bit_width"] if f["exec_s"].get(
            "minimize_bit_width") else None,
        "output": _output(f),
        # float-scaled: the lowering FINN received and Brevitas' float forward vs the integer reference
        "float_scaled": ({"layers": [lay.summary() for lay in front.lowered(state).layers],
                          "brevitas_float_agreement": state.float_agreement}
                         if f["golden"] == "int_ref_f32" else None),
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
