"""What every backend's report shares: the common fields of report.json, accuracy, sibling builds.

A backend's own report module adds its ``hw.<name>`` section and its report.md; this module never names a
backend: sibling builds of the same graph (``<model>_finn``, ``<model>_rtl`` ...) are found through the
registry, and their sections rendered by their own backend's ``markdown_section``.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from pathlib import Path

import numpy as np

from . import backends, golden, profile
from .resources import shown


def accuracy(out: np.ndarray | None, labels: np.ndarray | None) -> float | None:
    if out is None or labels is None:
        return None
    return float((np.asarray(out).reshape(len(labels), -1).argmax(1) == labels).mean())


def comparisons(state) -> list[dict]:
    return [{"name": c.name, "n": c.n, "exact_matches": c.exact_matches, "max_abs_diff": c.max_abs_diff,
             "first_mismatches": c.mismatching_images[:10]} for c in state.comparisons]


def reference_devices(state) -> list[str]:
    """Devices whose Brevitas forward was run *and* compared (a device run but not checked is not listed)."""
    ran = [k.removeprefix("torch_") for k in state.ref if k.startswith("torch_")]
    checked = state.reference_checks
    return [d for d in ran if not checked or d in checked]


def common(state, main) -> dict:
    """The fields every report.json has (DESIGN.md); ``main`` is the hardware-vs-golden comparison."""
    card = (state.checkpoint or {}).get("card") or {}
    devices = reference_devices(state)
    return {
        "model": state.name.removesuffix(backends.suffix(state.cfg.backend)) or state.name,
        "backend": state.cfg.backend,
        "config": state.cfg.to_json(),
        "source": state.source,
        "checkpoint": (state.checkpoint or {}).get("path"),
        "checkpoint_card": card or None,
        "n_images": main.n,
        "exact_matches": main.exact_matches,
        "mismatches": main.n - main.exact_matches,
        "max_abs_diff": main.max_abs_diff,
        "argmax_agreement": main.argmax_agreement,
        "reference_device": "cuda" if "cuda" in devices else "cpu",
        "reference_devices": devices,
        "reference_checks": state.reference_checks or None,
        "comparisons": comparisons(state),
        "first_divergence": state.divergence,
        "timings_s": dict(state.timings),
        "torch_samples_per_s": state.ref_speed.get("cpu"),
        "torch_cuda_samples_per_s": state.ref_speed.get("cuda"),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }


def data_used(rep: dict) -> str:
    """What the accuracies were measured on, from report.json's ``source.dataset`` (never assumed MNIST)."""
    used = (rep.get("source") or {}).get("dataset")
    if used:
        return f"{used['name']} {used['split']} images used here, sha256 {used['sha256'][:12]}"
    return "inputs given to the API or seeded random ones"


def output_note(graph) -> str:
    """Where the hardware's output ends, in the model's own terms: its last layer (read from the hardware's
    graph, ``front.model(state, "channels_last")``, whose layer names the rest of the report uses) and whether
    the model's last op is a log_softmax (monotonic: the argmax of the logits is the prediction)."""
    macs = [n.name for n in graph.graph.node if n.op_type in profile.MAC + ("Gemm",)]
    last = f" ({macs[-1]}'s accumulator)" if macs else ""
    if golden.final_log_softmax(graph) is not None:
        return (f"The generated hardware ends at the logits{last}. The model's last op, log_softmax, is "
                "monotonic, so the predicted class is the same; accuracies below are argmax of the logits.")
    return f"The generated hardware ends at the logits{last}; accuracies below are argmax of the logits."


def project_dir(state, sub: str) -> str:
    return shown(state.out_dir / sub)


def graph_fingerprint(path: Path) -> str:
    """sha256 of an ONNX graph's computation (nodes, attributes, initializers, shapes), without the
    exporter's metadata (source stack traces, line numbers), which changes with unrelated edits."""
    import onnx
    m = onnx.load(str(path))
    for item in [m, m.graph, *m.graph.node, *m.graph.input, *m.graph.output, *m.graph.value_info]:
        del item.metadata_props[:]
    return hashlib.sha256(m.graph.SerializeToString()).hexdigest()


def siblings(state) -> dict:
    """``{backend: hw.<backend>}`` of the other backends' builds of the byte-identical cleaned graph beside
    this build (same checkpoint, bit widths and passes); another checkpoint's build is not this design's."""
    found = {}
    model = state.name.removesuffix(backends.suffix(state.cfg.backend))
    mine = state.path("10_clean.onnx")
    for name in backends.names():
        if name == state.cfg.backend:
            continue
        d = state.out_dir.parent / (model + backends.suffix(name))
        try:
            if graph_fingerprint(d / "10_clean.onnx") != graph_fingerprint(mine):
                continue
            found[name] = json.loads((d / "report.json").read_text())["hw"][name]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def siblings_markdown(hw: dict, model: str) -> list[str]:
    lines = []
    for name in backends.names():
        if hw.get(name) and name in hw.get("siblings", ()):
            lines += backends.get(name).markdown_section(hw[name], model)
    return lines


def _finite(v):
    """JSON has no NaN/Infinity: such a value is written as null (report.json stays valid JSON)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def dump(rep: dict) -> str:
    return json.dumps(_finite(rep), indent=1, default=float, allow_nan=False) + "\n"


RANGES_FIGURE = "report-ranges.png"


def step_value_ranges(state):
    """Every backend's build, after its own report: per-layer value ranges (``fpga_flow.profile``) into
    report.json (``value_ranges``), a section at the end of report.md and ``report-ranges.png``."""
    p = state.path("report.json")
    rep = state.report if state.report is not None else json.loads(p.read_text())
    rep["value_ranges"] = prof = profile.declare_backend_types(profile.of_state(state),
                                                              (rep.get("hw") or {}).get("layers"))
    fig = state.path(RANGES_FIGURE)
    drawn = profile.plot(prof, fig)
    if not drawn:
        fig.unlink(missing_ok=True)
    p.write_text(dump(rep))
    md = state.path("report.md")
    md.write_text(md.read_text().rstrip("\n") + "\n" + "\n".join(profile.markdown(prof, RANGES_FIGURE if drawn
                                                                                       else None)) + "\n")
    state.report = rep
    return state
