"""Brevitas' float forward against the integer-accumulator reference, layer by layer, explained.

For float-scaled models the hardware is compared with ``==`` against the integer-accumulator reference
(``int_ref``). Brevitas' own forward sums rounded float products, so it may differ from that reference
by one level where a threshold's float32 margin is below the summation's error bound (the thresholds
``requant.fragile`` lists). This module counts the images on which every activation code Brevitas
computes equals the reference's and the predicted class is the same, and explains each disagreement:
which layer, channel and threshold. A disagreement that no fragile threshold explains means the
reference does not model Brevitas' arithmetic, and is reported as a failed check (never silent).

Every device the build runs Brevitas on is checked the same way (:func:`compare_devices`): the CUDA
forward, under ``golden.reference_numerics`` (TF32 off, deterministic cuDNN), is held to the same
explanation as the CPU's. The explanation (``requant.error_bound``) covers float32 products summed in any
order, so it holds for cuDNN's GEMM-style kernels; it does not cover TF32 or transformed (Winograd, FFT)
convolutions, and not CUDA elementwise arithmetic (BatchNorm, scaling) that rounds differently from the
CPU's: a disagreement from any of those is reported unexplained and fails the build.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from brevitas.quant_tensor import QuantTensor
from torch import nn

from . import golden, layout
from .compare import Comparison, exact

COMPARED_WITH = "integer-accumulator reference"


def brevitas_codes(module: nn.Module, x: np.ndarray, batch: int = 1000, device: str = "cpu",
                   numerics: dict | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """(activation codes of every activation quantizer, in call order; the module's output), computed on
    ``device`` under ``golden.reference_numerics(numerics)``; the module is back on the CPU afterwards."""
    quantizers = [m for name, m in module.named_modules()
                  if name.split(".")[-1] == "act_quant" and hasattr(m, "fused_activation_quant_proxy")]
    per_call: list[np.ndarray] = []
    outs = []

    def hook(mod, args, out):
        if isinstance(out, QuantTensor):
            per_call.append(torch.round(out.value / out.scale + out.zero_point).detach().float().cpu().numpy())

    handles = [m.register_forward_hook(hook) for m in quantizers]
    layers: list[list[np.ndarray]] = []
    try:
        module = module.eval().to(device)
        with golden.reference_numerics(numerics), torch.no_grad():
            for i in range(0, len(x), batch):
                per_call.clear()
                y = module(torch.from_numpy(x[i:i + batch]).to(device))
                outs.append(getattr(y, "value", y).float().cpu().numpy())
                layers.append(list(per_call))
    finally:
        for h in handles:
            h.remove()
        module.cpu()
    return [np.concatenate([chunk[k] for chunk in layers]) for k in range(len(layers[0]))], np.concatenate(outs)


@dataclass
class Reference:
    """What one device's forward is compared with: per Requant layer its lowered layer (``.node``,
    ``.fragile``), its reference output codes and its exact accumulators (NCHW), plus the input codes and
    the reference logits. Built once per build (:func:`reference`), shared by every device."""

    layers: list
    codes: list[np.ndarray]
    accumulators: list[np.ndarray]
    hw_input: np.ndarray
    logits: np.ndarray


def reference(lowered, trace: dict[str, np.ndarray], hw_input: np.ndarray, logits: np.ndarray) -> Reference:
    """The integer-accumulator reference of a lowered model, from its trace (``int_ref.run(trace=True)``)."""
    rq = [n for n in lowered.model.graph.node if n.op_type == "Requant"]
    layers = [lowered.layers[int(next(a.i for a in n.attribute if a.name == "layer_index"))] for n in rq]
    return Reference(layers, [layout.channels_first(trace[n.output[0]]) for n in rq], [layout.channels_first(trace[n.input[0]]) for n in rq],
                     hw_input, logits)


def classify(ref: Reference, codes: list[np.ndarray], brevitas_out: np.ndarray) -> dict:
    """Compare one forward's activation codes and output (recorded on any device) with the reference.

    Pure numpy: each image's first differing activation is located (layer, channel, accumulator) and
    explained by a fragile threshold or listed as unexplained. ``input_equal``: the input codes agree."""
    n = len(ref.hw_input)
    if len(codes) != len(ref.layers) + 1:
        return {"images": n, "agree": None, "note": f"Brevitas has {len(codes)} activation quantizers, the lowered "
                f"graph {len(ref.layers)} + the input: no layer-by-layer comparison"}
    differ = np.zeros(n, dtype=bool)
    explained, unexplained = [], []
    for j, (layer, want, acc) in enumerate(zip(ref.layers, ref.codes, ref.accumulators)):
        got = codes[j + 1]
        d = (got.reshape(n, -1) != want.reshape(n, -1))
        new = d.any(axis=1) & ~differ
        for i in np.nonzero(new)[0]:
            pos = np.nonzero(d[i])[0][0]
            c = int(np.unravel_index(pos, want.shape[1:])[0]) if want.ndim == 4 else int(pos)
            a = int(acc[i].reshape(-1)[pos])
            why = _explain(layer, c, a)
            item = {"image": int(i), "layer": layer.node, "channel": c, "accumulator": a,
                    "brevitas": int(got[i].reshape(-1)[pos]), "reference": int(want[i].reshape(-1)[pos])}
            if why:
                explained.append({**item, **why})
            else:
                unexplained.append(item)
        differ |= new
    argmax_ref = ref.logits.reshape(n, -1).argmax(1)
    argmax_brev = brevitas_out.reshape(n, -1).argmax(1)
    agree = (~differ) & (argmax_ref == argmax_brev)
    return {"images": n, "agree": int(agree.sum()), "activations_equal": int((~differ).sum()),
            "argmax_equal": int((argmax_ref == argmax_brev).sum()),
            "max_abs_logit_diff": float(np.abs(ref.logits.reshape(n, -1) - brevitas_out.reshape(n, -1)).max()),
            "explained": explained[:20], "n_explained": len(explained), "unexplained": unexplained[:20],
            "n_unexplained": len(unexplained), "unexplained_images": [u["image"] for u in unexplained[:1000]]}


def checks_of(info: dict, ref: Reference, codes: list[np.ndarray], device: str = "cpu") -> list[Comparison]:
    """The build's checks for one device: its input codes == ours, and no unexplained disagreement."""
    if info.get("agree") is None:
        return []
    on = "" if device == "cpu" else f" ({device})"
    n = info["images"]
    return [exact(f"input codes: Brevitas input quantizer{on} vs fpga_flow", codes[0], ref.hw_input),
            Comparison(name=f"Brevitas float{on} vs integer reference: disagreements not explained by a fragile "
                       "threshold", n=n, exact_matches=n - info["n_unexplained"], max_abs_diff=0.0,
                       argmax_agreement=info["argmax_equal"] / n if n else 1.0,
                       mismatching_images=list(info["unexplained_images"]))]


def compare(lowered, trace: dict[str, np.ndarray], module: nn.Module, x: np.ndarray, hw_input: np.ndarray,
            logits: np.ndarray, device: str = "cpu") -> tuple[dict, list[Comparison]]:
    """Agreement of Brevitas' float forward on ``device`` with the reference trace (``int_ref.run(trace=True)``)."""
    ref = reference(lowered, trace, hw_input, logits)
    codes, out = brevitas_codes(module, x, device=device)
    info = classify(ref, codes, out)
    if info.get("agree") is not None:
        info["fragile_thresholds"] = {lay.node: len(lay.fragile) for lay in lowered.layers if lay.chain is not None}
    return info, checks_of(info, ref, codes, device)


def device_record(device: str, info: dict, out: np.ndarray, stored: np.ndarray | None,
                  cpu_out: np.ndarray | None) -> dict:
    """The report's line for one device: compared with what, how many agree / explained / unexplained;
    whether the output the build stored (``torch_<device>``) is the one examined; equality with the CPU."""
    rec = {"device": device, "compared_with": COMPARED_WITH, "images": info["images"], "agree": info.get("agree"),
           "n_explained": info.get("n_explained"), "n_unexplained": info.get("n_unexplained"),
           "activations_equal": info.get("activations_equal"), "argmax_equal": info.get("argmax_equal"),
           "max_abs_logit_diff": info.get("max_abs_logit_diff"),
           "numerics": dict(golden.REFERENCE_NUMERICS) if device.startswith("cuda") else None,
           "stored_output_checked": None if stored is None else bool(np.array_equal(stored, out)),
           "output_equal_to_cpu": None}
    if cpu_out is not None and device != "cpu":
        same = (out.reshape(len(out), -1) == cpu_out.reshape(len(out), -1)).all(axis=1)
        rec["output_equal_to_cpu"] = int(same.sum())
        rec["max_abs_diff_vs_cpu"] = float(np.abs(out - cpu_out).max(initial=0.0))
    if device != "cpu":
        rec.update(explained=info.get("explained", []), unexplained=info.get("unexplained", []))
    return rec


def compare_devices(lowered, trace: dict[str, np.ndarray], module: nn.Module, x: np.ndarray,
                    hw_input: np.ndarray, logits: np.ndarray, devices: list[str],
                    stored: dict[str, np.ndarray] | None = None) -> tuple[dict, list[Comparison]]:
    """:func:`compare` on every device in ``devices`` (``golden.reference_devices``), each held to the same
    explanation. Returns the CPU's info (the report's ``brevitas_float_agreement``, as before) with
    ``devices``: one :func:`device_record` per device, and the checks of all devices. ``stored``: the build's
    references (``torch_<dev>`` keys): each must equal the output examined here, or the check fails."""
    ref = reference(lowered, trace, hw_input, logits)
    stored = stored or {}
    infos, checks, records, outs = {}, [], {}, {}
    for dev in devices:
        codes, out = brevitas_codes(module, x, device=dev)
        info = infos[dev] = classify(ref, codes, out)
        outs[dev] = out
        checks += checks_of(info, ref, codes, dev)
        s = stored.get(f"torch_{dev}")
        if s is not None:
            checks.append(exact(f"Brevitas torch ({dev}): stored reference output vs the output compared with the "
                                "integer reference", out, s))
        records[dev] = device_record(dev, info, out, s, outs.get("cpu"))
    main = dict(infos.get("cpu") or infos[devices[0]])
    if main.get("agree") is not None:
        main["fragile_thresholds"] = {lay.node: len(lay.fragile) for lay in lowered.layers if lay.chain is not None}
    main["devices"] = records
    return main, checks


def _explain(layer, channel: int, acc: int) -> dict | None:
    """The fragile threshold of ``channel`` the accumulator sits on (at it or just below), if any."""
    for f in layer.fragile:
        if f["channel"] == channel and acc in (f["threshold"] - 1, f["threshold"]):
            return {"threshold_index": f["index"], "threshold": f["threshold"], "error_bound": f["error_bound"],
                    "why": "the float32 margin of this threshold is below Brevitas' float summation error bound"}
    return None
