"""The rtl backend's streaming mode (the default): the folded FINN-style dataflow of :mod:`.design`, generated
from the lowered integer graph, verified in Verilator (``==`` the golden), counted by yosys, placed and routed
by nextpnr-ecp5.

Steps after the front (:data:`fpga_flow.front.FRONT`): ``rtl_lower`` (graph -> :mod:`.hw.spec` layers, folding
chosen by :mod:`.folding`), ``rtl_generate`` (Verilog in ``verilog/``), ``rtl_simulate`` (every image back to
back; cycles from the simulation), ``rtl_compare``, ``rtl_synth`` (yosys synth_xilinx for the part),
``rtl_pnr`` (nextpnr-ecp5 on an ECP5-85F; ``cfg.extra["pnr"] = False`` skips it), ``rtl_report``.

Options (``BuildConfig.extra``): ``target_fps``, ``folding`` ({node or index: [pe, simd]}), ``synth``,
``pnr``, ``fault`` ("weight", or (layer, out, in, delta), or ("threshold", layer, channel, k, delta)),
``synth_timeout_s``, ``pnr_timeout_s`` (default :data:`PNR_TIMEOUT_S`; None or 0: no limit),
``pnr_router`` (nextpnr's router, :data:`measure.ECP5_ROUTERS`; default :data:`measure.ECP5_ROUTER`),
``sim_timeout_s``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace

import numpy as np

from ... import compare, front, golden, int_ref
from ...config import BuildConfig
from ...errors import FlowError, ToolError
from ...passes import host_ops
from ...resources import cache_dir
from . import folding, lower, measure, stream_report
from .design import TOP, Design, has_window, mac_in_lanes, to_verilog
from .hw import mvu, spec
from .hw.fifo import MIN_DEPTH
from .verilator import simulate_design

PNR_TIMEOUT_S = 3600.0  # synth_ecp5 + nextpnr of a large fit design can run for hours; past this the build
# lands without an Fmax (the report says so) instead of holding the user's terminal

OPTIONS = ("target_fps", "folding", "synth", "pnr", "fault", "synth_timeout_s", "pnr_timeout_s", "sim_timeout_s",
           "rtl_mode", "pnr_router")


@dataclass
class StreamState:
    options: dict = field(default_factory=dict)
    hw: lower.HwLayers | None = None
    layers: list | None = None  # folded (and, with a fault, faulted) layers the hardware implements
    folding: dict | None = None
    fault: dict | None = None
    design: Design | None = None
    verilog: str | None = None
    codes: np.ndarray | None = None
    cycles: dict | None = None
    synth: dict | None = None
    synth_missing: dict | None = None  # why yosys gave no counts (it failed or ran past its limit)
    pnr: dict | None = None


def new_state(cfg: BuildConfig) -> StreamState:
    router = cfg.extra.get("pnr_router")
    if router is not None and router not in measure.ROUTER_CHOICES:  # refused before any work
        raise FlowError(f"pnr_router {router!r}: one of {', '.join(measure.ROUTER_CHOICES)}")
    return StreamState(options={k: cfg.extra[k] for k in OPTIONS if k in cfg.extra})


def step_rtl_lower(state):
    r, opts = state.backend, state.backend.options
    cl = front.model(state, "channels_last")
    hw = lower.hw_lower(golden.logits_graph(cl), front.lowered(state) if front.float_scaled(state) else None)
    pre, _, post = host_ops.host_nodes(front.model(state, "clean"))
    if pre:
        hw.host.append(f"the float pre-processing before the input quantizer ({', '.join(pre)}), then the "
                       "quantizer: the hardware's input is its codes")
    if post:
        hw.host.append(f"the float ops after the last layer ({', '.join(post)}), on its dequantized output")
    if golden.final_log_softmax(front.model(state, "clean")) is not None:
        hw.host.append("LogSoftmax (the golden and the hardware end at the logits; fpga_flow.log_softmax on the host)")
    if hw.final_frac_part is not None and np.any(hw.final_frac_part):
        hw.host.append(f"the final bias' fraction below the output grid (< 1 LSB per channel, on a 2^-{hw.final_frac} "
                       "grid), added to the hardware's integer output")
    r.hw = hw
    layers, r.folding = folding.choose(hw.layers, {**opts, "_names": hw.names}, _budget(state.cfg.part, opts),
                                       folding.clock_mhz(state.cfg.clock_ns))
    r.layers, r.fault = inject(layers, opts.get("fault"), hw, state)
    state.path("layers.json").write_text(json.dumps(stream_report.layer_table(r), indent=1, default=int) + "\n")
    return state


def inject(layers: list, fault, hw: lower.HwLayers, state) -> tuple[list, dict | None]:
    """A deliberately wrong weight or threshold (verification must catch it). "weight": the last layer's weight
    from the input most often non-zero on these images, +1 (so the output of those images changes)."""
    if not fault:
        return layers, None
    layers = list(layers)
    if fault in ("weight", "default"):
        i = len(layers) - 1
        x = input_codes(state, hw)
        prev = spec.reference(layers[:-1], x).reshape(len(x), -1)
        j = int(np.argmax((prev != 0).sum(0)))
        fault = (i, 0, j, 1)
    if fault[0] == "threshold":
        _, i, c, k, d = fault
        rq = layers[i].requant
        T = np.array(rq.T)
        T[c, k] += d
        layers[i] = replace(layers[i], requant=replace(rq, T=T))
        return layers, {"kind": "threshold", "layer": hw.names[i], "channel": c, "index": k, "delta": d}
    i, o, j, d = (int(v) for v in fault)
    w = np.array(layers[i].weights)
    w.reshape(w.shape[0], -1)[o, j] += d
    layers[i] = replace(layers[i], weights=w)
    return layers, {"kind": "weight", "layer": hw.names[i], "output": o, "input": j, "delta": d}


def input_codes(state, hw: lower.HwLayers) -> np.ndarray:
    """The images as the hardware's input codes, channels-last (N, H, W, C)."""
    x = front.channels_last(hw.lowered.quantize_input(state.x))
    return np.asarray(x, dtype=np.int64).reshape(len(x), *hw.in_shape)


MAX_VECTOR_FIFO = 512  # beats


def fifo_depths(layers: list) -> dict[int, int]:
    """Deeper FIFOs where a layer takes its input in bursts (the rest get :data:`MIN_DEPTH`):

    * in front of each dense layer, one whole image's output (up to :data:`MAX_VECTOR_FIFO` beats): a dense MVU
      takes its vector during its first neuron fold only, so with a shallow FIFO the layer before it stalls
      through the dense layer's other folds, and the two layers' times add up instead of overlapping (seen in
      Verilator: mlp_tiny 1075 cycles/image with depth-2 FIFOs, against 784 for its slowest layer);
    * in front of a conv without a window (1x1, stride 1) folded into several neuron folds, one input vector
      ahead (its channels, in the stream's lanes) plus :data:`MIN_DEPTH`, for the same reason (a depthwise
      PE 2 -> 1x1 conv PE 8 SIMD 1 pair simulated 1,312 cycles/image against its slowest layer's 1,152). A
      conv with a window needs none: its line buffer takes the rows ahead."""
    out = {}
    for n in range(len(layers) - 1):
        nxt = layers[n + 1]
        if not isinstance(nxt, spec.Mac):
            continue
        lanes = layers[n].pe if isinstance(layers[n], spec.Mac) else _lanes_into(layers, n)
        if nxt.kind == "dense":
            out[n] = max(MIN_DEPTH, min(MAX_VECTOR_FIFO, int(np.prod(layers[n].out_shape)) // lanes))
        elif nxt.kind == "conv" and not has_window(nxt) and mvu.folding(nxt)[0] > 1:
            out[n] = MIN_DEPTH + -(-nxt.in_shape[2] // lanes)
    return out


def _lanes_into(layers: list, n: int) -> int:
    """The lanes a max pool at ``n`` passes on (those of the Mac before it)."""
    for ly in reversed(layers[:n]):
        if isinstance(ly, spec.Mac):
            return ly.pe
    return 1


def step_rtl_generate(state):
    r = state.backend
    first = r.layers[0]
    lanes = mac_in_lanes(first) if isinstance(first, spec.Mac) else 1
    r.design = Design(r.layers, lanes, depths=fifo_depths(r.layers))
    r.verilog = to_verilog(r.design)
    d = state.path("verilog")
    d.mkdir(exist_ok=True)
    (d / f"{TOP}.v").write_text(r.verilog)
    return state


def step_rtl_simulate(state):
    r = state.backend
    x = input_codes(state, r.hw)
    r.codes, r.cycles = simulate_design(r.design, x, cache_dir("verilator"), r.options.get("sim_timeout_s"))
    np.savez_compressed(state.path("rtl_sim.npz"), codes=r.codes)
    return state


def golden_grid(state, hw: lower.HwLayers) -> np.ndarray:
    """The golden output as integers on the hardware's output grid (units of the final scale times 2^F)."""
    key = front.golden_key(state)
    g = np.asarray(state.ref[key], dtype=np.float64).reshape(len(state.x), -1)
    if key == "qonnx":  # logits = units * final_scale (a power of two here: exact)
        g = g / hw.final_scale
    g = g * 2.0 ** hw.final_frac
    if not np.array_equal(g, np.round(g)):
        raise FlowError(f"the golden ({key}) is not on the final layer's integer grid (scale {hw.final_scale}, "
                        f"2^-{hw.final_frac}): the hardware's output cannot be compared with == to it")
    return g.astype(np.int64)


def step_rtl_compare(state):
    r = state.backend
    hw = r.hw
    frac = 0 if hw.final_frac_part is None else hw.final_frac_part
    got = r.codes.reshape(len(r.codes), -1) * (1 << hw.final_frac) + frac
    want = golden_grid(state, hw)
    c = compare.exact(f"Verilator RTL vs golden ({front.golden_key(state)}), integer codes", got, want)
    state.comparisons.append(c)
    state.ref["rtl"] = got / 2.0 ** hw.final_frac * hw.final_scale
    post = getattr(hw.lowered, "post", None)
    if post:  # what the module returns (a TensorNorm with a negative weight reverses the argmax)
        state.ref["rtl"] = host_ops.apply(post, state.ref["rtl"].astype(np.float32)).numpy()
    if not c.ok:
        state.divergence = trace(state, c.mismatching_images[0])
    return state


def trace(state, image: int) -> dict:
    """Where the first mismatching image first diverges: the layers' exact model (:mod:`.hw.spec`, on the
    layers the hardware holds) against the integer reference of the lowered graph, tensor by tensor; if they
    all agree the hardware differs from its own model (the last layer is named)."""
    r = state.backend
    x = input_codes(state, r.hw)[image:image + 1]
    graph_in = r.hw.lowered.model.get_tensor_shape(r.hw.lowered.model.graph.input[0].name)[1:]
    ref = int_ref.run(r.hw.lowered, x.reshape(1, *graph_in), thresholds=True, trace=True)
    y = x
    for name, tensor, layer in zip(r.hw.names, r.hw.tensors, r.layers):
        y = spec.forward(layer, y)
        if tensor is None or tensor not in ref or tensor == r.hw.lowered.model.graph.output[0].name:
            continue
        g = np.asarray(ref[tensor]).ravel()
        h = y.ravel()
        if g.size == h.size and not np.array_equal(g, h):
            bad = np.flatnonzero(g != h)
            return {"image": image, "layer": name, "tensor": tensor, "n_differ": int(bad.size), "size": int(g.size),
                    "first_index": int(bad[0]), "hls": float(h[bad[0]]), "golden": float(g[bad[0]])}
    # every traced layer agrees: the last layer (whose output the golden is) or the hardware itself differs
    got = r.codes[image].ravel()
    model_ok = np.array_equal(got, y.ravel())
    frac = 0 if r.hw.final_frac_part is None else r.hw.final_frac_part
    want = golden_grid(state, r.hw)[image]
    got_grid = got * (1 << r.hw.final_frac) + frac
    bad = np.flatnonzero(got_grid != want)
    if not model_ok:
        bad = np.flatnonzero(got != y.ravel())
    where = r.hw.names[-1] + ("" if model_ok else " (the hardware differs from its own exact model)")
    return {"image": image, "layer": where, "tensor": "output", "n_differ": int(bad.size), "size": int(got.size),
            "first_index": int(bad[0]) if bad.size else -1, "hls": float(got[bad[0]]) if bad.size else None,
            "golden": float(want[bad[0]] / 2.0 ** r.hw.final_frac) if bad.size else None}


def _budget(part: str, opts: dict) -> dict:
    """The part's resources for the folding: the fit needs them; a target rate uses them where known, for the
    DSP blocks (:func:`folding.lut_products`)."""
    try:
        return folding.part_budget(part)
    except FlowError:  # --allow-unknown-part: a target rate goes on with no DSP count to keep under
        if not opts.get("target_fps"):
            raise
        return {}


def step_rtl_synth(state):
    r = state.backend
    r.synth = r.synth_missing = None
    if not r.options.get("synth", True):
        return state
    try:
        res = measure.synth_xilinx(r.verilog, TOP, state.cfg.part, state.path("yosys"),
                                   r.options.get("synth_timeout_s"))
    except ToolError as e:  # a count not made, not a failed build: the simulation verified it
        r.synth_missing = {"how": measure.HOW_XILINX, "message": _first_line(e), "log": "yosys/yosys.log"}
        return state
    r.synth = _relative(res, "yosys")
    return state


def step_rtl_pnr(state):
    r = state.backend
    if not r.options.get("pnr", True):
        r.pnr = None
        return state
    t0 = time.perf_counter()
    limit = r.options.get("pnr_timeout_s", PNR_TIMEOUT_S) or None
    try:
        res = measure.pnr_ecp5(r.verilog, TOP, clock_mhz=folding.clock_mhz(state.cfg.clock_ns),
                               workdir=state.path("nextpnr"), timeout_s=limit,
                               router=r.options.get("pnr_router") or measure.ECP5_ROUTER)
    except ToolError as e:  # a measurement not made, not a failed build: the simulation verified it
        res = {"how": measure.HOW_ECP5, "placed": None, "not_measured": True,
               "timed_out": isinstance(e, measure.ToolTimeout), "timeout_s": limit, "message": _first_line(e),
               "log": str(state.path("nextpnr") / "nextpnr.log"), "workdir": str(state.path("nextpnr"))}
    res["wall_s"] = round(time.perf_counter() - t0, 2)
    r.pnr = _relative(res, "nextpnr")
    return state


def _first_line(e: Exception) -> str:
    """The tool's message without the staging folder's log path (stale once the build lands; the report names
    the log inside the build)."""
    return str(e).split(" (logs:")[0].split("\n  log")[0].split(" (log:")[0]


def _relative(res: dict, sub: str) -> dict:
    """Logs named inside the build folder (the staging folder's path would be stale after the swap)."""
    res = dict(res)
    for k in ("log", "workdir"):
        if k in res:
            res[k] = f"{sub}/{res[k].rsplit('/', 1)[-1]}" if k == "log" else sub
    return res


STEPS = [*front.FRONT, step_rtl_lower, step_rtl_generate, step_rtl_simulate, step_rtl_compare, step_rtl_synth,
         step_rtl_pnr, stream_report.step_rtl_report]
