"""Per-layer value ranges (what hls4ml's profiling shows, but exact): the range each layer's accumulator and
activation held over the verified images, against the range its type can hold.

The ranges are read off the integer view of the hardware graph (``LowerFloatScales``; power-of-two models lower
exactly too): every accumulator is an exact integer and every activation an integer code, so an observed range
is exact, not a float estimate. Each accumulator's type is the smallest two's-complement integer holding every
sum its weights can reach from its input's type (the analytic bound the backends size their accumulators from,
before the bias, which the thresholds absorb); each activation's type is its quantizer's. An observed value
outside its type is a wrong type, so :func:`check` raises rather than draws it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import front, golden, int_ref, passes
from .errors import FlowError
from .passes.lower_float_scales import Lowered
from .precision import signed_width
from .quant import QuantSpec, constant

PASS_THROUGH = ("MaxPool", "Flatten", "Reshape", "Transpose")
MAC = ("Conv", "MatMul")


@dataclass
class Row:
    """One tensor: its type's code range, what the weights can reach (accumulators), what was observed."""

    layer: str  # the graph node (Conv / MatMul) it belongs to, or "input"
    what: str  # input | accumulator | activation
    tensor: str
    type: str
    bits: int
    signed: bool
    type_range: tuple[int, int]  # integer codes
    observed: tuple[int, int]
    reachable: tuple[int, int] | None = None  # accumulators: the extreme sums of its weights over its input type
    scale: float | None = None  # value = code * scale, when one scale serves the whole tensor
    at_min: int = 0  # values equal to the type's min / max (a saturating activation clips there)
    at_max: int = 0
    values: int = 0

    @property
    def headroom_bits(self) -> int:
        """Bits of the type the observed values did not need (0: some value needed the full width)."""
        lo, hi = self.observed
        need = signed_width(lo, hi) if self.signed else max(int(hi), 0).bit_length()
        return self.bits - max(need, 1)


def _type_name(bits: int, signed: bool, scale: float | None, narrow: bool = False) -> str:
    """``int15`` / ``uint4``; with a power-of-two scale 2^-f also hls4ml's notation ``fixed<15,4>``."""
    name = f"{'int' if signed else 'uint'}{bits}{' narrow' if narrow else ''}"
    if scale is not None and scale > 0 and float(np.log2(scale)).is_integer():
        return f"{'' if signed else 'u'}fixed<{bits},{bits + int(np.log2(scale))}>"
    return name


def _input_range(low: Lowered, tensor: str) -> tuple[int, int]:
    """Code range of a layer's input: the quantizer or Requant that wrote it, through pools and reshapes."""
    m = low.model
    while True:
        p = m.find_producer(tensor)
        if p is None:
            raise FlowError(f"value ranges: tensor {tensor!r} has no quantizer in front of it")
        if p.op_type in PASS_THROUGH:
            tensor = p.input[0]
        elif p.op_type == "Requant":
            return low.layers[int(_attr(p, "layer_index"))].chain.out.code_range()
        elif p.op_type == "Quant":
            return QuantSpec.of(m, p).code_range()
        else:
            raise FlowError(f"value ranges: {p.op_type} node {p.name!r} in front of a layer is not a quantizer")


def _attr(node, name: str):
    return next(a.i for a in node.attribute if a.name == name)


def reachable(low: Lowered, node) -> tuple[int, int]:
    """The extreme integer accumulator sums over every input in the input's type (weights as they are)."""
    w = constant(low.model, node.input[1])
    if w is None:
        raise FlowError(f"value ranges: {node.name!r} has no constant weights")
    axis = 0 if node.op_type == "Conv" else w.ndim - 1  # channels-last Conv (O, kh, kw, I/g); MatMul (I, O)
    w = np.moveaxis(np.asarray(w), axis, -1).reshape(-1, w.shape[axis]).astype(np.int64)
    xlo, xhi = _input_range(low, node.input[0])
    lo = np.minimum(w * xlo, w * xhi).sum(axis=0)
    hi = np.maximum(w * xlo, w * xhi).sum(axis=0)
    return int(lo.min()), int(hi.max())


def _per_tensor(scale) -> float | None:
    s = np.unique(np.asarray(scale, dtype=np.float64))
    return float(s[0]) if s.size == 1 else None


def rows_of(low: Lowered) -> list[Row]:
    """The rows to observe, with their types (observed ranges empty until :func:`observe`)."""
    m = low.model
    nodes = {n.name: n for n in m.graph.node}
    rq_of = {next(a.s for a in n.attribute if a.name == "layer").decode(): n
             for n in m.graph.node if n.op_type == "Requant"}
    q = low.input_quant
    inp = m.find_consumer(m.graph.input[0].name)
    rows = [Row("input", "input", inp.output[0] if inp is not None and inp.op_type == "Quant" else
                m.graph.input[0].name, _type_name(q.bits, q.signed, q.scale, q.narrow), q.bits, q.signed,
                q.code_range(), (0, 0), scale=q.scale)]
    for lay in low.layers:
        node = nodes[lay.node]
        lo, hi = reachable(low, node)
        width = signed_width(min(lo, 0), max(hi, 0))
        scale = _per_tensor(lay.chain.scale if lay.chain is not None else lay.final_scale)
        rows.append(Row(lay.node, "accumulator", node.output[0], _type_name(width, True, scale), width, True,
                        (-(1 << (width - 1)), (1 << (width - 1)) - 1), (0, 0), (lo, hi), scale))
        if lay.chain is not None:
            o = lay.chain.out
            name = "bipolar" if o.bipolar else _type_name(o.bits, o.signed, o.scale, o.narrow)
            rows.append(Row(lay.node, "activation", rq_of[lay.node].output[0], name, o.bits, o.signed,
                            o.code_range(), (0, 0), scale=o.scale))
    return rows


TRACE_BYTES = 1 << 28  # a chunk's trace (every tensor, float64) stays below this: CNV's is ~10 MB an image


def observe(low: Lowered, rows: list[Row], x: np.ndarray) -> list[Row]:
    """Run the integer reference over ``x`` (images) in chunks, keeping only each row's min, max and counts."""
    seen: dict[str, list] = {r.tensor: [None, None, 0, 0, 0] for r in rows}
    i, chunk = 0, 4  # the first chunk measures how large one image's trace is
    while i < len(x):
        codes = front.channels_last(low.quantize_input(x[i:i + chunk]))
        trace = int_ref.run(low, codes, trace=True, chunk=chunk)
        i += len(codes)
        chunk = max(1, min(1000, TRACE_BYTES * len(codes) // max(sum(v.nbytes for v in trace.values()), 1)))
        for r in rows:
            v = trace[r.tensor]
            s = seen[r.tensor]
            lo, hi = int(v.min()), int(v.max())
            s[0] = lo if s[0] is None else min(s[0], lo)
            s[1] = hi if s[1] is None else max(s[1], hi)
            s[2] += int((v == r.type_range[0]).sum())
            s[3] += int((v == r.type_range[1]).sum())
            s[4] += int(v.size)
    for r in rows:
        lo, hi, r.at_min, r.at_max, r.values = seen[r.tensor]
        r.observed = (lo, hi)
    return rows


def check(rows: list[Row]) -> None:
    """Every observed value inside its type (and inside the reachable range): else the types are wrong."""
    for r in rows:
        lo, hi = r.observed
        if lo < r.type_range[0] or hi > r.type_range[1]:
            raise FlowError(f"value ranges: {r.layer} {r.what} ({r.tensor}) held [{lo}, {hi}], outside its type "
                            f"{r.type} [{r.type_range[0]}, {r.type_range[1]}]: the type is wrong")
        if r.reachable and (lo < r.reachable[0] or hi > r.reachable[1]):
            raise FlowError(f"value ranges: {r.layer} accumulator held [{lo}, {hi}], outside the range its weights "
                            f"can reach [{r.reachable[0]}, {r.reachable[1]}]: the bound is wrong")


def lowered_of(state) -> Lowered:
    """The build's integer view: the float-scaled golden's own, else the channels-last graph lowered here
    (without storing it on the state: the backends read ``state.lowered`` as 'this model is float-scaled')."""
    if state.lowered is not None:
        return state.lowered
    if state.path(front.ARTIFACTS["channels_last"]).is_file():
        graph = front.model(state, "channels_last")
    else:  # a backend that skips the channels-last step (finn): the same pass, in memory
        graph = passes.prepare_for_hls4ml(front.model(state, "clean"))
    return passes.lower(golden.logits_graph(graph))


def of_state(state) -> dict:
    """``report.json``'s ``value_ranges``: the rows over the build's verified images, or why there are none."""
    try:
        low = lowered_of(state)
        rows = observe(low, rows_of(low), state.x)
    except FlowError as e:
        return {"images": 0, "rows": [], "note": f"not available for this graph: {e}"}
    check(rows)
    return {"images": int(len(state.x)), "rows": [dict(asdict(r), headroom_bits=r.headroom_bits) for r in rows],
            "note": None}


def declare_backend_types(prof: dict, hw_layers: list[dict] | None) -> dict:
    """Add ``backend_type`` to each accumulator row: the type the backend declared for that layer's accumulator
    in report.json (``hw.layers[].accum``, named ``<Class>_<node>`` or fused from one), where it lists any. It may
    be wider than the exact type (a bound taken from the weights' type rather than their values)."""
    for r in prof["rows"]:
        if r["what"] != "accumulator":
            continue
        for row in hw_layers or []:
            names = [row.get("layer", ""), *row.get("fused_from", [])]
            if row.get("accum") and any(n == r["layer"] or n.endswith("_" + r["layer"]) for n in names):
                r["backend_type"] = row["accum"]
    return prof


def _fmt(pair, scale: float | None) -> str:
    if pair is None:
        return ""
    lo, hi = pair
    if scale is None:
        return f"[{lo}, {hi}] (codes)"
    return f"[{lo * scale:.6g}, {hi * scale:.6g}]"


def markdown(prof: dict, figure: str | None = None) -> list[str]:
    lines = ["", f"## Value ranges per layer (integer reference, {prof['images']:,} verified images)", ""]
    if not prof["rows"]:
        return lines + [prof.get("note") or "No layers."]
    declared = any(r.get("backend_type") for r in prof["rows"])
    lines += ["What each tensor held against what its type can hold, in real units where one scale serves the "
              "tensor (else integer codes). Accumulators: the exact integer sum before the bias, typed as the "
              "smallest integer holding every sum its weights can reach from its input's type; *headroom* is the "
              "bits of the type the observed values did not need. Activations saturate by design: the share at "
              "the type's maximum is how often they clipped. Every observed value lies inside its type "
              "(checked; a build whose values did not would stop)."
              + (" *Backend's type*: the accumulator type the backend declared for the layer (it holds the bias "
                 "too, and may be sized from the weights' type rather than their values)." if declared else ""), "",
              "| layer | what | type | type holds | weights can reach | observed | headroom (bits) | at max |"
              + (" backend's type |" if declared else ""),
              "|---|---|---|---|---|---|---:|---:|" + ("---|" if declared else "")]
    for r in prof["rows"]:
        s = r["scale"]
        share = f"{r['at_max'] / r['values']:.1%}" if r["values"] else ""
        lines.append(f"| {r['layer']} | {r['what']} | {r['type']} | {_fmt(r['type_range'], s)} | "
                     f"{_fmt(r['reachable'], s)} | {_fmt(r['observed'], s)} | {r['headroom_bits']} | {share} |"
                     + (f" {r.get('backend_type', '')} |" if declared else ""))
    if figure:
        lines += ["", f"![value ranges]({figure})"]
    return lines


def plot(prof: dict, path: Path) -> bool:
    """One horizontal bar per tensor, normalised to its type: the type's range light, what the weights can
    reach medium, what was observed dark. Returns whether a figure was drawn."""
    if not prof["rows"]:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = prof["rows"][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    for i, r in enumerate(rows):
        tlo, thi = r["type_range"]
        span = max(abs(tlo), abs(thi), 1)
        for pair, color, h in ((r["type_range"], "#dde6f2", 0.8), (r["reachable"], "#9db7d9", 0.55),
                               (r["observed"], "#1f4e8c", 0.3)):
            if pair is not None:
                ax.barh(i, (pair[1] - pair[0]) / span, left=pair[0] / span, height=h, color=color)
        ax.text(1.02, i, f"{r['type']}, {r['headroom_bits']} bit(s) spare", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), [r["layer"] if r["layer"] == r["what"] else f"{r['layer']} {r['what']}"
                                     for r in rows], fontsize=8)
    ax.set_xlim(-1.05, 2.0)
    ax.axvline(0, color="#888888", lw=0.5)
    ax.set_xlabel("value / largest magnitude the type holds (light: type, medium: weights can reach, dark: observed)",
                  fontsize=8)
    ax.set_title(f"value ranges over {prof['images']:,} verified images", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
