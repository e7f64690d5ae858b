"""Brevitas' float forward against the integer-accumulator reference, layer by layer, explained.

For float-scaled models the hardware is compared with ``==`` against the integer-accumulator reference
(``int_ref``). Brevitas' own forward sums rounded float products, so it may differ from that reference
by one level where a threshold's float32 margin is below the summation's error bound (the thresholds
``requant.fragile`` lists). This module counts the images on which every activation code Brevitas
computes equals the reference's and the predicted class is the same, and explains each disagreement:
which layer, channel and threshold. A disagreement that no fragile threshold explains means the
reference does not model Brevitas' arithmetic, and is reported as a failed check (never silent).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .compare import Comparison, exact


def brevitas_codes(module: nn.Module, x: np.ndarray, batch: int = 1000) -> tuple[list[np.ndarray], np.ndarray]:
    """(activation codes of every activation quantizer, in call order; the module's output) on CPU."""
    from brevitas.quant_tensor import QuantTensor
    quantizers = [m for name, m in module.named_modules()
                  if name.split(".")[-1] == "act_quant" and hasattr(m, "fused_activation_quant_proxy")]
    per_call: list[list[np.ndarray]] = []
    outs = []

    def hook(mod, args, out):
        if isinstance(out, QuantTensor):
            per_call.append(torch.round(out.value / out.scale + out.zero_point).detach().numpy())

    handles = [m.register_forward_hook(hook) for m in quantizers]
    layers: list[list[np.ndarray]] = []
    try:
        module = module.eval().cpu()
        with torch.no_grad():
            for i in range(0, len(x), batch):
                per_call.clear()
                y = module(torch.from_numpy(x[i:i + batch]))
                outs.append(getattr(y, "value", y).float().numpy())
                layers.append(list(per_call))
    finally:
        for h in handles:
            h.remove()
    return [np.concatenate([chunk[k] for chunk in layers]) for k in range(len(layers[0]))], np.concatenate(outs)


def _nchw(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(a, -1, 1) if a.ndim == 4 else a


def compare(lowered, trace: dict[str, np.ndarray], module: nn.Module, x: np.ndarray, hw_input: np.ndarray,
            logits: np.ndarray) -> tuple[dict, list[Comparison]]:
    """Agreement of Brevitas' float forward with the reference trace (``int_ref.run(trace=True)``)."""
    codes, brevitas_out = brevitas_codes(module, x)
    rq = [n for n in lowered.model.graph.node if n.op_type == "Requant"]
    layers = [lowered.layers[int(next(a.i for a in n.attribute if a.name == "layer_index"))] for n in rq]
    n = len(x)
    checks = []
    if len(codes) != len(rq) + 1:
        return ({"images": n, "agree": None, "note": f"Brevitas has {len(codes)} activation quantizers, the lowered "
                 f"graph {len(rq)} + the input: no layer-by-layer comparison"}, checks)
    # the input codes are computed by the same formula: they must be equal
    checks.append(exact("input codes: Brevitas input quantizer vs fpga_flow", codes[0], hw_input))
    differ = np.zeros(n, dtype=bool)
    first_layer = np.full(n, -1)
    explained, unexplained = [], []
    for j, (node, layer) in enumerate(zip(rq, layers)):
        ref = _nchw(trace[node.output[0]])
        acc = _nchw(trace[node.input[0]])
        d = (codes[j + 1].reshape(n, -1) != ref.reshape(n, -1))
        new = d.any(axis=1) & ~differ
        for i in np.nonzero(new)[0]:
            first_layer[i] = j
            pos = np.nonzero(d[i])[0][0]
            c = int(np.unravel_index(pos, ref.shape[1:])[0]) if ref.ndim == 4 else int(pos)
            a = int(acc[i].reshape(-1)[pos])
            why = _explain(layer, c, a)
            item = {"image": int(i), "layer": layer.node, "channel": c, "accumulator": a,
                    "brevitas": int(codes[j + 1][i].reshape(-1)[pos]), "reference": int(ref[i].reshape(-1)[pos])}
            if why:
                explained.append({**item, **why})
            else:
                unexplained.append(item)
        differ |= new
    argmax_ref = logits.reshape(n, -1).argmax(1)
    argmax_brev = brevitas_out.reshape(n, -1).argmax(1)
    agree = (~differ) & (argmax_ref == argmax_brev)
    info = {"images": n, "agree": int(agree.sum()), "activations_equal": int((~differ).sum()),
            "argmax_equal": int((argmax_ref == argmax_brev).sum()),
            "max_abs_logit_diff": float(np.abs(logits.reshape(n, -1) - brevitas_out.reshape(n, -1)).max()),
            "explained": explained[:20], "n_explained": len(explained), "unexplained": unexplained[:20],
            "n_unexplained": len(unexplained),
            "fragile_thresholds": {lay.node: len(lay.fragile) for lay in lowered.layers if lay.chain is not None}}
    checks.append(Comparison(name="Brevitas float vs integer reference: disagreements not explained by a fragile "
                             "threshold", n=n, exact_matches=n - len(unexplained), max_abs_diff=0.0,
                             argmax_agreement=float((argmax_ref == argmax_brev).mean()),
                             mismatching_images=[u["image"] for u in unexplained]))
    return info, checks


def _explain(layer, channel: int, acc: int) -> dict | None:
    """The fragile threshold of ``channel`` the accumulator sits on (at it or just below), if any."""
    for f in layer.fragile:
        if f["channel"] == channel and acc in (f["threshold"] - 1, f["threshold"]):
            return {"threshold_index": f["index"], "threshold": f["threshold"], "error_bound": f["error_bound"],
                    "why": "the float32 margin of this threshold is below Brevitas' float summation error bound"}
    return None
