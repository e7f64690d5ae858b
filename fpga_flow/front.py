"""The front of every flow, whatever the backend: export, clean, check, channels-last, lower, golden.

Each ``step_<verb>(state) -> state`` saves its artifact in the build folder (``00_export.onnx`` ...
``golden.npz``), so a later step or a resumed run reads it back from there.
"""

from __future__ import annotations

import time

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.cleanup import cleanup_model

from . import agreement, compare, golden, int_ref, layout, passes
from .errors import FlowError, VerificationError
from .export import export_qonnx
from .runner import State

ARTIFACTS = {"export": "00_export.onnx", "clean": "10_clean.onnx", "channels_last": "20_channels_last.onnx",
             "lowered": "25_lowered.onnx"}
INT_REF = "int_ref"  # the golden of float-scaled models (state.ref key)


def model(state: State, key: str) -> ModelWrapper:
    p = state.path(ARTIFACTS[key])
    if not p.is_file():
        raise FlowError(f"{p.name} is missing from {state.out_dir}: run the steps before this one first")
    try:
        m = ModelWrapper(str(p))
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning ... on a file that is not a model
        raise FlowError(f"{p.name} in {state.out_dir} is not a readable ONNX model ({type(e).__name__}: {e}); "
                        "rebuild it by running the flow from an earlier step") from e
    passes.check_supported.check_tensor_shapes(m)  # a crafted graph's declared sizes, before any pass reads them
    return m


def step_export(state: State) -> State:
    export_qonnx(state.module, state.input_shape, state.path(ARTIFACTS["export"]))
    return state


def step_clean(state: State) -> State:
    m = cleanup_model(model(state, "export"))
    if state.cfg.fuse:  # exact (order-only) swap that lets the convolution's kernel take the ReLU
        m = cleanup_model(m.transform(passes.MoveReluBeforeMaxPool()))
    m.save(str(state.path(ARTIFACTS["clean"])))
    return state


def step_check(state: State) -> State:
    model(state, "clean").transform(passes.CheckSupported())
    return state


def step_channels_last(state: State) -> State:
    passes.prepare_for_hls4ml(model(state, "clean")).save(str(state.path(ARTIFACTS["channels_last"])))
    return state


def float_scaled(state: State) -> bool:
    """Whether the model needs LowerFloatScales (float scales or BatchNorm); read off the cleaned graph."""
    return passes.is_float_scaled(model(state, "clean"))


def lowered(state: State):
    if state.lowered is None:
        state.lowered = passes.lower(model(state, "channels_last"))
    return state.lowered


def step_lower(state: State) -> State:
    """Float-scaled models: integer codes and Requant thresholds (LowerFloatScales); others: nothing to do."""
    p = state.path(ARTIFACTS["lowered"])
    if not float_scaled(state):
        p.unlink(missing_ok=True)
        return state
    low = lowered(state)
    low.model.save(str(p))
    for lay in low.layers:
        if lay.fragile:
            state.log(f"{lay.node}: {len(lay.fragile)} threshold(s) with a float32 margin below Brevitas' "
                      "summation error bound (Brevitas' float forward may differ there by one level)")
    return state


def hw_model(state: State) -> ModelWrapper:
    """The graph the hardware implements: the lowered one for float-scaled models."""
    return lowered(state).model if float_scaled(state) else model(state, "channels_last")


def golden_key(state: State) -> str:
    return INT_REF if INT_REF in state.ref else "qonnx"


def torch_devices(state: State) -> list[str]:
    """Devices the torch reference runs on; none without a torch module (a QONNX file: golden = QONNX)."""
    return [] if state.module is None else golden.reference_devices(state.cfg.device)


def step_golden(state: State) -> State:
    """Brevitas (CPU, CUDA) == QONNX (NCHW, batched) == QONNX channels-last (every image), or stop.

    Float-scaled models: the integer-accumulator reference (``int_ref``) is the golden; its thresholds,
    the QONNX execution of the lowered graph and Brevitas' float forward are checked against it."""
    if float_scaled(state):
        return _golden_float_scaled(state)
    clean = model(state, "clean")
    # a graph ending in LogSoftmax: every reference below is the logits (exact); the LogSoftmax's golden is
    # fpga_flow.log_softmax applied to them, in step_compare
    ends_in_ls = golden.final_log_softmax(clean) is not None
    for dev in torch_devices(state):
        run = golden.torch_reference(state.module, state.x, dev, logits=ends_in_ls)
        state.ref[f"torch_{dev}"] = run.output
        if run.final is not None:
            state.ref[f"log_softmax_torch_{dev}"] = run.final
        state.ref_speed[dev] = len(state.x) / run.seconds if run.seconds else float("inf")
    t0 = time.perf_counter()
    state.ref["qonnx"] = golden.qonnx_reference(golden.logits_graph(clean), state.x)
    state.ref_speed["qonnx"] = len(state.x) / (time.perf_counter() - t0)
    state.ref["hw_input"] = golden.quantize_input(clean, state.x)
    # every image, not a sample: an edit of the channels-last graph that changes one image's output is caught
    cl = model(state, "channels_last")
    state.ref["qonnx_channels_last"] = golden.qonnx_every_image(golden.logits_graph(cl),
                                                                channels_last(state.ref["hw_input"]))
    what = " (logits)" if ends_in_ls else ""
    checks = [compare.exact(f"Brevitas torch ({dev}) vs QONNX{what}", state.ref[f"torch_{dev}"], state.ref["qonnx"])
              for dev in torch_devices(state)]
    checks.append(compare.exact(f"QONNX channels-last vs QONNX{what}", state.ref["qonnx_channels_last"],
                                state.ref["qonnx"]))
    return _golden_done(state, checks)


def _golden_float_scaled(state: State) -> State:
    low = lowered(state)
    for dev in torch_devices(state):
        run = golden.torch_reference(state.module, state.x, dev)
        state.ref[f"torch_{dev}"] = run.output
        state.ref_speed[dev] = len(state.x) / run.seconds if run.seconds else float("inf")
    hw_in = state.ref["hw_input"] = low.quantize_input(state.x)
    t0 = time.perf_counter()
    trace = int_ref.run(low, channels_last(hw_in), trace=True)
    out = state.ref[INT_REF] = trace[low.model.graph.output[0].name]
    state.ref_speed[INT_REF] = len(state.x) / (time.perf_counter() - t0)
    checks = [compare.exact("integer thresholds vs integer-accumulator reference",
                            int_ref.run(low, channels_last(hw_in), thresholds=True), out)]
    state.ref["qonnx_lowered"] = golden.qonnx_every_image(low.model, channels_last(hw_in))
    # QONNX executes in float32: the last layer's fixed-point bias sum is rounded once, so compare with the
    # reference rounded to float32 (every other tensor of the lowered graph is an integer below 2^24)
    checks.append(compare.exact("QONNX (lowered graph, float32) vs integer-accumulator reference in float32",
                                state.ref["qonnx_lowered"], out.astype(np.float32)))
    logits = low.logits(out)  # the final accumulator scaled, then the host's ops after it (a TensorNorm)
    # every device the forward ran on is compared with the integer reference, and the stored torch_<dev>
    # outputs must be the ones compared (per-device record in state.float_agreement["devices"], #16)
    if state.module is not None:
        state.float_agreement, more = agreement.compare_devices(low, trace, state.module, state.x, hw_in, logits,
                                                                torch_devices(state), state.ref)
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


channels_last = layout.channels_last  # the steps' name for it (hls4ml steps use front.channels_last)



def restore(state: State) -> None:
    """A resumed run: the references the golden step saved (golden.npz), back in memory."""
    p = state.path("golden.npz")
    if p.is_file() and not state.ref:
        with np.load(p) as z:
            state.ref.update({k: z[k] for k in z.files})


FRONT = [step_export, step_clean, step_check, step_channels_last, step_lower, step_golden]
