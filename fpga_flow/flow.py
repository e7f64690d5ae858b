"""The build as an ordered list of named steps over one state object.

Each ``step_<verb>(state) -> state`` saves its artifact under the build
directory. The whole build happens in a staging copy of ``build/<name>/`` that
replaces the previous build only once everything verified; a failed build is
kept beside it as ``build/<name>.failed/`` for inspection.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from torch import nn

from . import backends, compare, golden, log_softmax, passes, sim
from .codegen import BuildPlan, replace_dir
from .config import BuildConfig
from .errors import FlowError, VerificationError
from .export import export_qonnx

REPO = Path(__file__).resolve().parent.parent


@dataclass
class State:
    cfg: BuildConfig
    name: str
    module: nn.Module
    input_shape: tuple[int, ...]
    out_dir: Path  # final place: build/<name>
    x: np.ndarray  # float32 inputs (N, C, H, W) as the torch model takes them
    labels: np.ndarray | None = None
    checkpoint: dict | None = None  # {"path":..., "card":...}
    work: Path | None = None  # staging directory while the build runs
    timings: dict = field(default_factory=dict)
    ref: dict = field(default_factory=dict)  # outputs by reference name
    ref_speed: dict = field(default_factory=dict)
    comparisons: list = field(default_factory=list)
    plan_info: dict | None = None
    binaries: dict | None = None
    csim_seconds: float = 0.0
    divergence: dict | None = None
    progress: bool = True
    report: dict | None = None
    plan: BuildPlan | None = None
    log_softmax: dict | None = None  # a design ending in LogSoftmax: its bound, errors and argmax checks
    lowered: object | None = None  # float-scaled models: passes.lower_float_scales.Lowered
    float_agreement: dict | None = None  # float-scaled models: Brevitas' float forward vs the integer reference

    def path(self, rel: str) -> Path:
        return self.work / rel

    def log(self, msg: str) -> None:
        if self.progress:
            print(f"[{self.name}] {msg}", file=sys.stderr, flush=True)


ARTIFACTS = {"export": "00_export.onnx", "clean": "10_clean.onnx", "channels_last": "20_channels_last.onnx",
             "lowered": "25_lowered.onnx"}
INT_REF = "int_ref"  # the golden of float-scaled models (state.ref key)


def _model(state: State, key: str) -> ModelWrapper:
    p = state.path(ARTIFACTS[key])
    if not p.is_file():
        raise FlowError(f"{p.name} is missing from {state.out_dir}: run the steps before this one first")
    try:
        return ModelWrapper(str(p))
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning ... on a file that is not a model
        raise FlowError(f"{p.name} in {state.out_dir} is not a readable ONNX model ({type(e).__name__}: {e}); "
                        "rebuild it by running the flow from an earlier step") from e


def step_export(state: State) -> State:
    export_qonnx(state.module, state.input_shape, state.path(ARTIFACTS["export"]))
    return state


def step_clean(state: State) -> State:
    from qonnx.util.cleanup import cleanup_model
    m = cleanup_model(_model(state, "export"))
    if state.cfg.fuse:  # exact (order-only) swap that lets the convolution's kernel take the ReLU
        m = cleanup_model(m.transform(passes.MoveReluBeforeMaxPool()))
    m.save(str(state.path(ARTIFACTS["clean"])))
    return state


def step_check(state: State) -> State:
    _model(state, "clean").transform(passes.CheckSupported())
    return state


def step_channels_last(state: State) -> State:
    passes.prepare_for_hls4ml(_model(state, "clean")).save(str(state.path(ARTIFACTS["channels_last"])))
    return state


def float_scaled(state: State) -> bool:
    """Whether the model needs LowerFloatScales (float scales or BatchNorm); read off the cleaned graph."""
    return passes.is_float_scaled(_model(state, "clean"))


def _lowered(state: State):
    if state.lowered is None:
        state.lowered = passes.lower(_model(state, "channels_last"))
    return state.lowered


def step_lower(state: State) -> State:
    """Float-scaled models: integer codes and Requant thresholds (LowerFloatScales); others: nothing to do."""
    p = state.path(ARTIFACTS["lowered"])
    if not float_scaled(state):
        p.unlink(missing_ok=True)
        return state
    low = _lowered(state)
    low.model.save(str(p))
    for lay in low.layers:
        if lay.fragile:
            state.log(f"{lay.node}: {len(lay.fragile)} threshold(s) with a float32 margin below Brevitas' "
                      "summation error bound (Brevitas' float forward may differ there by one level)")
    return state


def _hw_model(state: State) -> ModelWrapper:
    """The graph the hardware implements: the lowered one for float-scaled models."""
    return _lowered(state).model if float_scaled(state) else _model(state, "channels_last")


def golden_key(state: State) -> str:
    return INT_REF if INT_REF in state.ref else "qonnx"


def step_golden(state: State) -> State:
    """Brevitas (CPU, CUDA) == QONNX (NCHW, batched) == QONNX channels-last (a sample), or stop.

    Float-scaled models: the integer-accumulator reference (``int_ref``) is the golden; its thresholds,
    the QONNX execution of the lowered graph and Brevitas' float forward are checked against it."""
    if float_scaled(state):
        return _golden_float_scaled(state)
    clean = _model(state, "clean")
    # a graph ending in LogSoftmax: every reference below is the logits (exact); the LogSoftmax's golden is
    # fpga_flow.log_softmax applied to them, in step_compare
    ends_in_ls = golden.final_log_softmax(clean) is not None
    for dev in golden.reference_devices(state.cfg.device):
        run = golden.torch_reference(state.module, state.x, dev, logits=ends_in_ls)
        state.ref[f"torch_{dev}"] = run.output
        if run.final is not None:
            state.ref[f"log_softmax_torch_{dev}"] = run.final
        state.ref_speed[dev] = len(state.x) / run.seconds if run.seconds else float("inf")
    t0 = time.perf_counter()
    state.ref["qonnx"] = golden.qonnx_reference(golden.logits_graph(clean), state.x)
    state.ref_speed["qonnx"] = len(state.x) / (time.perf_counter() - t0)
    state.ref["hw_input"] = golden.quantize_input(clean, state.x)
    k = min(len(state.x), 16)
    cl = _model(state, "channels_last")
    state.ref["qonnx_channels_last"] = golden.qonnx_per_image(golden.logits_graph(cl),
                                                              _channels_last(state.ref["hw_input"][:k]))
    what = " (logits)" if ends_in_ls else ""
    checks = [compare.exact(f"Brevitas torch ({dev}) vs QONNX{what}", state.ref[f"torch_{dev}"], state.ref["qonnx"])
              for dev in golden.reference_devices(state.cfg.device)]
    checks.append(compare.exact(f"QONNX channels-last vs QONNX{what}", state.ref["qonnx_channels_last"],
                                state.ref["qonnx"][:k]))
    return _golden_done(state, checks)


def _golden_float_scaled(state: State) -> State:
    from . import agreement, int_ref
    low = _lowered(state)
    for dev in golden.reference_devices(state.cfg.device):
        run = golden.torch_reference(state.module, state.x, dev)
        state.ref[f"torch_{dev}"] = run.output
        state.ref_speed[dev] = len(state.x) / run.seconds if run.seconds else float("inf")
    hw_in = state.ref["hw_input"] = low.quantize_input(state.x)
    t0 = time.perf_counter()
    trace = int_ref.run(low, _channels_last(hw_in), trace=True)
    out = state.ref[INT_REF] = trace[low.model.graph.output[0].name]
    state.ref_speed[INT_REF] = len(state.x) / (time.perf_counter() - t0)
    checks = [compare.exact("integer thresholds vs integer-accumulator reference",
                            int_ref.run(low, _channels_last(hw_in), thresholds=True), out)]
    k = min(len(state.x), 16)
    state.ref["qonnx_lowered"] = golden.qonnx_per_image(low.model, _channels_last(hw_in[:k]))
    # QONNX executes in float32: the last layer's fixed-point bias sum is rounded once, so compare with the
    # reference rounded to float32 (every other tensor of the lowered graph is an integer below 2^24)
    checks.append(compare.exact("QONNX (lowered graph, float32) vs integer-accumulator reference in float32",
                                state.ref["qonnx_lowered"], out[:k].astype(np.float32)))
    final = low.layers[-1]
    logits = out * final.final_scale if final.chain is None else out
    # --- #16 (gpu branch): every device the forward ran on is compared with the integer reference, and the
    # stored torch_<dev> outputs must be the ones compared (agreement.compare_devices; per-device record in
    # state.float_agreement["devices"]) ---
    state.float_agreement, more = agreement.compare_devices(low, trace, state.module, state.x, hw_in, logits,
                                                            golden.reference_devices(state.cfg.device), state.ref)
    # --- end #16 ---
    checks += more
    return _golden_done(state, checks)


def _golden_done(state: State, checks: list) -> State:
    """Record the reference checks and the references; stop if any disagree."""
    state.comparisons += checks
    np.savez_compressed(state.path("golden.npz"), **state.ref)
    bad = [c for c in checks if not c.ok]
    if bad:
        raise VerificationError("the references disagree before any hardware was generated:\n  "
                                + "\n  ".join(c.line() for c in bad))
    return state


def _channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, -1)) if x.ndim == 4 else x


def step_convert(state: State) -> State:
    backend = backends.get(state.cfg.backend)
    plan, info = backend.make_plan(_hw_model(state), state.cfg)
    if state.lowered is not None:
        info["lowered"] = [lay.summary() for lay in state.lowered.layers]
    state.plan = plan
    state.plan_info = info
    return state


def step_write(state: State) -> State:
    plan = state.plan
    if plan is None:
        raise FlowError("nothing to write: the convert step did not run")
    plan.write(state.path("hls"))
    (state.path("plan_info.json")).write_text(json.dumps(state.plan_info, indent=1))
    return state


def _info(state: State) -> dict:
    if state.plan_info is None:
        p = state.path("plan_info.json")
        if not p.is_file():
            raise FlowError(f"no HLS project in {state.out_dir}: run `make hls MODEL={state.name}` first")
        state.plan_info = json.loads(p.read_text())
    return state.plan_info


def step_csim_build(state: State) -> State:
    info = _info(state)
    digest = BuildPlan.from_dir(state.path("hls")).digest()
    if digest != info["digest"]:
        raise FlowError(f"{state.out_dir}/hls was modified after it was generated (digest {digest[:12]} != "
                        f"{info['digest'][:12]}); rebuild it with `make hls MODEL={state.name}`")
    variants = ("exact", "stock") if state.cfg.stock_check_images else ("exact",)
    state.binaries = sim.build(state.path("hls"), digest, sim.cache_dir(), variants)
    return state


def step_csim_run(state: State) -> State:
    hw_in = _channels_last(state.ref["hw_input"])
    out, dt = sim.run(state.binaries["exact"], state.path("hls"), hw_in, state.cfg.workers,
                      progress=state.progress, desc="csim")
    state.ref["csim"], state.csim_seconds = out, dt
    k = min(state.cfg.stock_check_images, len(hw_in))
    if k:
        state.ref["csim_stock"], _ = sim.run(state.binaries["stock"], state.path("hls"), hw_in[:k],
                                             state.cfg.workers, progress=state.progress, desc="csim (stock)")
    np.savez_compressed(state.path("csim.npz"), **{k: v for k, v in state.ref.items() if k.startswith("csim")})
    return state


def step_compare(state: State) -> State:
    if golden_key(state) == INT_REF:
        want, name = state.ref[INT_REF], "HLS csim vs integer-accumulator reference"
    else:
        want, name = state.ref["qonnx"], "HLS csim vs QONNX golden"
    spec = log_softmax.spec_from_info(_info(state))
    if spec is not None:  # the golden of the hardware's LogSoftmax: its integer model on the exact logits
        want = state.ref["golden_log_softmax"] = log_softmax.forward(spec, state.ref["qonnx"])
        name = "HLS csim vs QONNX golden logits -> LogSoftmax model"
    main = compare.exact(name, state.ref["csim"], want)
    state.comparisons.append(main)
    if spec is not None:
        state.log_softmax = log_softmax.check(spec, state.ref["csim"], state.ref["qonnx"],
                                              state.ref.get("log_softmax_torch_cpu"))
        state.comparisons += log_softmax.failed_checks(state.log_softmax)
    if "csim_stock" in state.ref:
        k = len(state.ref["csim_stock"])
        state.comparisons.append(compare.exact("hls4ml stock csim vs fpga_flow exact csim",
                                               state.ref["csim_stock"], state.ref["csim"][:k]))
    bad = [c for c in state.comparisons if not c.ok]
    if bad and not main.ok:
        state.divergence = _trace_first_mismatch(state, main.mismatching_images[0])
    return state


def _trace_first_mismatch(state: State, image: int) -> dict | None:
    backend = backends.get(state.cfg.backend)
    if not hasattr(backend, "trace_layers"):
        return None
    cl = _hw_model(state)
    x1 = _channels_last(state.ref["hw_input"][image:image + 1])
    state.log(f"tracing image {image} layer by layer to find the first divergence ...")
    with tempfile.TemporaryDirectory(prefix="fpga_flow_trace_") as tmp:
        hls = backend.trace_layers(cl, state.cfg, x1, Path(tmp))
    quantized_by = {n.input[0]: n.output[0] for n in cl.graph.node if n.op_type == "Quant"}
    if state.lowered is not None:
        from . import int_ref
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
    from . import report
    state.report = report.write(state)
    return state


STEPS = [step_export, step_clean, step_check, step_channels_last, step_lower, step_golden, step_convert, step_write,
         step_csim_build, step_csim_run, step_compare, step_report]
STEP_NAMES = [s.__name__.removeprefix("step_") for s in STEPS]


def select(start: str | None, stop: str | None) -> list:
    for s in (start, stop):
        if s is not None and s not in STEP_NAMES:
            raise FlowError(f"unknown step {s!r}; steps in order: {', '.join(STEP_NAMES)}")
    i = STEP_NAMES.index(start) if start else 0
    j = STEP_NAMES.index(stop) + 1 if stop else len(STEPS)
    if i >= j:
        raise FlowError(f"--start-step {start} comes after --stop-step {stop}")
    return STEPS[i:j]


# `csim`: re-verify the project already written, on new inputs, without re-generating it
REVERIFY_STEPS = [step_golden, step_csim_build, step_csim_run, step_compare, step_report]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale(out: Path) -> list[Path]:
    """Remove what a killed build of ``out`` left beside it: ``.<name>.tmp-<pid>-*`` staging copies and
    ``.<name>.old-<pid>`` swap leftovers whose process is dead. A leftover ``.old`` with no ``out`` is the
    previous good build caught mid-swap: it is put back, not removed. Entries of live processes stay."""
    pat = re.compile(rf"\.{re.escape(out.name)}\.(tmp|old)-(\d+)(-.*)?\Z")
    done = []
    for p in sorted(out.parent.glob(f".{out.name}.*-*")) if out.parent.is_dir() else []:
        m = pat.match(p.name)
        if not m or not p.is_dir() or p.is_symlink() or _pid_alive(int(m.group(2))):
            continue
        if m.group(1) == "old" and not out.exists():
            os.replace(p, out)
        else:
            shutil.rmtree(p, ignore_errors=True)
        done.append(p)
    return done


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM cleans up like Ctrl-C (the staging copy is removed by the handler below)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(state: State, start: str | None = None, stop: str | None = None, steps: list | None = None) -> State:
    """Run the selected steps in a staging copy; swap it into place when all passed."""
    steps = steps or select(start, stop)
    with _sigterm_as_interrupt():
        return _run(state, steps)


def _run(state: State, steps: list) -> State:
    out = state.out_dir
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for p in remove_stale(out):
            state.log(f"removed {p.name}, left by a build that was killed")
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    except OSError as e:
        raise FlowError(f"cannot write the build directory {out}: {e.strerror or e}") from e
    try:
        if steps[0] is not STEPS[0] and out.is_dir():
            shutil.copytree(out, staging, dirs_exist_ok=True, symlinks=True)
        state.work = staging
        for step in steps:
            name = step.__name__.removeprefix("step_")
            state.log(f"{name} ...")
            t0 = time.perf_counter()
            state = step(state)
            state.timings[name] = round(time.perf_counter() - t0, 3)
        failed = [c for c in state.comparisons if not c.ok]
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if failed:
        kept = out.with_name(out.name + ".failed")
        shutil.rmtree(kept, ignore_errors=True)
        staging.rename(kept)
        where = ""
        if state.divergence:
            d = state.divergence
            where = (f"\n  first divergence (image {d['image']}): layer {d['layer']} (tensor {d['tensor']}): "
                     f"{d['n_differ']}/{d['size']} values differ, first at index {d['first_index']}: "
                     f"hls {d['hls']} vs golden {d['golden']}")
        raise VerificationError("NOT bit-exact:\n  " + "\n  ".join(c.line() for c in failed) + where
                                + f"\n  the failed build is kept in {kept}; the previous build is untouched")
    replace_dir(staging, out)
    state.work = out
    return state
