"""The hls4ml backend's report.json (read by tools), report.md (read by people) and a picture."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ... import front, profile, report
from . import estimate, fit, synth

def _output(info: dict, ls: dict | None, fs: dict | None = None, note: str = "") -> dict:
    """What the hardware outputs; ``note`` (``report.output_note``, from the graph) says it for plain logits."""
    last = (fs or {}).get("layers", [{}])[-1]
    if last.get("kind", "").startswith("final"):
        scales = ", ".join(f"{v:.6g}" for v in sorted(set(last["output_scale"]))[:4])
        per = " (one scale per output)" if last["per_channel_scale"] else ""
        bias = (f" plus its float bias rounded to a 2^-{last['bias_frac_bits']} grid in units of that scale"
                if last["bias_frac_bits"] is not None else "")
        return {"kind": "logits (float-scaled)", "type": info.get("output_type"),
                "frac_bits": info.get("output_frac_bits"), "scale": last["output_scale"],
                "note": f"The hardware ends at the last layer's integer accumulator{bias}; logit = output x "
                        f"{scales}{per}. Accuracies below are argmax of the logits."}
    if not ls:
        return {"kind": "logits", "type": info.get("output_type"), "frac_bits": info.get("output_frac_bits"),
                "note": note}
    n = ls["n_images"]
    note = (f"The generated hardware ends with log_softmax (fixed-point kernel of our own, output type "
            f"{ls['output_type']}). Its output equals the integer model fpga_flow/log_softmax.py applied to the "
            f"exact golden logits (`==`); vs float64 torch.log_softmax of those logits the stated bound is "
            f"{ls['bound']:.6g}, the measured max error {ls['max_abs_error_vs_float64']:.6g} "
            f"({ls['images_within_bound']}/{n} images within the bound); argmax equals the logits' argmax on "
            f"{ls['argmax_agreement']}/{n} images ({ls['argmax_ties_in_logits']} with tied maximum logits, "
            f"counted by first index, which the kernel preserves).")
    return {"kind": "log_softmax", "type": ls["output_type"], "frac_bits": info.get("output_frac_bits"),
            "bound": ls["bound"], "max_abs_error": ls["max_abs_error_vs_float64"], "note": note}


def _checkpoint_line(rep: dict, card: dict) -> str:
    """The checkpoint and its card's accuracy, or why there is none (an ONNX file has no torch module)."""
    if rep["checkpoint"]:
        line = f"Checkpoint: `{rep['checkpoint']}`"
    elif (rep.get("source") or {}).get("kind") == "onnx":
        line = "Checkpoint: none (a QONNX file: no torch module)"
    else:
        line = "Checkpoint: none (module given to the API)"
    if card:
        acc, n = card.get("test_accuracy"), card.get("test_images")
        line += (f" (card: test accuracy {'-' if acc is None else f'{acc:.2%}'}"
                 + (f" on {n:,} images)" if n else ")"))
    return line


def _logits(state, out: np.ndarray | None) -> np.ndarray | None:
    """A float-scaled design's output as the module returns it (its last layer's per-output scale, then the
    host's ops after the last layer, e.g. bnn_pynq's TensorNorm, whose negative weight reverses the order), so
    accuracy and the confusion matrix take the module's argmax."""
    low = state.lowered
    if out is None or low is None:
        return out
    return np.asarray(low.logits(out)).reshape(len(out), -1)


def _float_scaled(state, info: dict) -> dict | None:
    if state.lowered is None:
        return None
    return {"layers": info.get("lowered") or [lay.summary() for lay in state.lowered.layers],
            "brevitas_float_agreement": state.float_agreement}


def build_json(state) -> dict:
    ref, cfg, hb = state.ref, state.cfg, state.backend
    info = hb.plan_info or {}
    main = next(c for c in state.comparisons if c.name.startswith("HLS csim"))
    rep = report.common(state, main)
    n = main.n
    card = rep["checkpoint_card"] or {}
    others = report.siblings(state)
    rep.update({
        "accuracy": {"float": card.get("float_accuracy"),
                     "quantized": report.accuracy(ref.get("torch_cpu"), state.labels),
                     "csim": report.accuracy(_logits(state, ref.get("csim")), state.labels)},
        "csim_samples_per_s": n / hb.csim_seconds if hb.csim_seconds else None,
        "output": _output(info, hb.log_softmax, _float_scaled(state, info),
                          report.output_note(front.model(state, "channels_last"))),
        "float_scaled": _float_scaled(state, info),
        "log_softmax": hb.log_softmax,
        "hw": {"layers": info.get("layers"), "input_type": info.get("input_type"), "part": cfg.part,
               "clock_ns": cfg.clock_ns, "io_type": cfg.io_type, "fuse": cfg.fuse, "design": info.get("design"),
               "estimate": estimate.from_plan_info(info, cfg.clock_ns, cfg.io_type, cfg.part),
               "fit": info.get("fit"),  # --fit: the reuse factors chosen per layer (fit.py), else None
               "vendor": synth.load_vendor(state.work, info.get("digest")),  # kept from `make synth` of this project
               # the other backends' builds of the same graph (`make hls BACKEND=finn|rtl`), when there are any
               **others, "siblings": sorted(others)},
        "project_dir": report.project_dir(state, "hls"),
        "digest": info.get("digest"),
    })
    return rep


def summary(rep: dict) -> str:
    acc = rep["accuracy"]
    refs = " == ".join([f"Brevitas {d.upper()}" for d in rep["reference_devices"]] + ["QONNX", "HLS csim"])
    if rep.get("log_softmax"):
        refs = (" == ".join([f"Brevitas {d.upper()}" for d in rep["reference_devices"]] + ["QONNX"])
                + " logits; HLS csim == their LogSoftmax model")
    fs = rep.get("float_scaled")
    if fs:
        ag = fs["brevitas_float_agreement"] or {}
        refs = (f"integer-accumulator reference == HLS csim; Brevitas' float forward agrees on "
                f"{ag.get('agree')}/{ag.get('images')}" if ag.get("images") is not None else
                "integer-accumulator reference == HLS csim; no torch module: the reference is checked against "
                "QONNX execution of the file")
    verdict = "bit-exact" if rep["mismatches"] == 0 else "NOT bit-exact"
    s = f"{rep['model']}: {rep['exact_matches']}/{rep['n_images']} images {verdict} ({refs})"
    if acc["quantized"] is not None:
        s += f"; accuracy quantized {acc['quantized']:.2%} = csim {acc['csim']:.2%}" if acc["quantized"] == acc["csim"] \
            else f"; accuracy quantized {acc['quantized']:.2%}, csim {acc['csim']:.2%}"
    verdict = estimate.fit_verdict(rep["hw"].get("estimate"))
    warn = "WARNING: " if verdict and "NOT fit" in verdict else ""
    return s + f"; project in {rep['project_dir']}" + (f"\n  {warn}the design {verdict}" if verdict else "")


def markdown(rep: dict) -> str:
    acc, t = rep["accuracy"], rep["timings_s"]
    pct = lambda v: "-" if v is None else f"{v:.2%}"  # noqa: E731
    rate = lambda v: "-" if not v else f"{v:,.0f} images/s"  # noqa: E731
    lines = [f"# {rep['model']}: {'bit-exact' if rep['mismatches'] == 0 else 'NOT bit-exact'}", "",
             summary(rep), "", f"> {rep['output']['note']}", "",
             *([f"> {rep['source']['golden']} ({rep['source']['path']})", ""]
               if (rep.get("source") or {}).get("golden") else []),
             *[f"> **warning**: {w}" for w in (rep.get("source") or {}).get("warnings", [])],
             "## Verification (compared with `==`, no tolerance)", "",
             "| comparison | images | bit-exact | max abs diff |", "|---|---:|---:|---:|"]
    for c in rep["comparisons"]:
        lines.append(f"| {c['name']} | {c['n']} | {c['exact_matches']} | {c['max_abs_diff']:g} |")
    if rep["first_divergence"]:
        d = rep["first_divergence"]
        lines += ["", f"**First divergence** (image {d['image']}): layer `{d['layer']}` (tensor `{d['tensor']}`), "
                      f"{d['n_differ']} of {d['size']} values differ; first at {d['first_index']}: "
                      f"hls {d['hls']} vs golden {d['golden']}."]
    if rep.get("log_softmax"):
        lines += _log_softmax_md(rep["log_softmax"])
    if rep.get("float_scaled"):
        lines += _float_scaled_md(rep["float_scaled"])
    card = rep.get("checkpoint_card") or {}
    what = report.data_used(rep)
    lines += ["", f"## Accuracy ({what})", "",
              "| model | accuracy |", "|---|---:|",
              f"| float (checkpoint card) | {pct(acc['float'])} |",
              f"| quantized, Brevitas torch | {pct(acc['quantized'])} |",
              f"| HLS csim | {pct(acc['csim'])} |", "",
              _checkpoint_line(rep, card), "",
              "## Layers and exact types", "", "| layer | class | input | weight | accumulator / result | non-zero weights |",
              "|---|---|---|---|---|---:|"]
    for r in rep["hw"]["layers"] or []:
        nz = f"{r['nonzero_weights']}/{r['weights']}" if "weights" in r else ""
        lines.append(f"| {r['layer']} | {r['class']} | {r.get('input', '')} | {r.get('weight', '')} | "
                     f"{r.get('accum', r.get('result', ''))} | {nz} |")
    d = rep["hw"].get("design")
    if d:
        fused = [r for r in rep["hw"]["layers"] or [] if r.get("fused_from")]
        lines += ["", f"Top level: {d['kernel_calls']} kernel calls, {d['internal_streams']} internal streams carrying "
                      f"{d['stream_bits_per_image']:,} bits per image. "
                      + ("Fused (conv + ReLU + requantization in one kernel): "
                         + ", ".join(f"`{r['layer']}` <- {' + '.join(r['fused_from'])}" for r in fused) + "."
                         if fused else ("No layers fused" + ("" if rep["hw"].get("fuse") else " (`--no-fuse`)") + "."))]
    # hardware cost: the estimate, what --fit chose, the vendor's figures
    lines += estimate.markdown(rep["hw"]) + fit.markdown(rep["hw"]) + synth.markdown(rep["hw"])
    lines += report.siblings_markdown(rep["hw"], rep["model"])
    lines += ["", "## Speed", "",
              f"- HLS csim: {rate(rep['csim_samples_per_s'])} (exact integer evaluation, parallel workers)",
              f"- Brevitas torch CPU: {rate(rep['torch_samples_per_s'])}"]
    if rep.get("torch_cuda_samples_per_s"):
        lines.append(f"- Brevitas torch CUDA: {rate(rep['torch_cuda_samples_per_s'])}")
    lines += ["", "| step | wall time (s) |", "|---|---:|"] + [f"| {k} | {v:.2f} |" for k, v in t.items()]
    lines += ["", f"Total: {sum(t.values()):.1f} s.", "", "## Project", "",
              f"- directory: `{rep['project_dir']}` (part {rep['hw']['part']}, clock {rep['hw']['clock_ns']} ns, "
              f"{rep['hw']['io_type']})", f"- digest: `{rep['digest']}`",
              "- synthesize: `make synth MODEL=" + rep["model"] + "` (needs Vitis HLS), or `vitis_hls -f build_prj.tcl` "
              "in the project directory", ""]
    return "\n".join(lines)


def _float_scaled_md(fs: dict) -> list[str]:
    lines = ["", "## Float scales and BatchNorm: integer thresholds (LowerFloatScales)", "",
             "Each layer's float32 chain (scale, bias, BatchNorm, ReLU, quantizer) became per-channel integer "
             "thresholds on its exact accumulator. A *fragile* threshold has a float32 margin below the error "
             "bound of Brevitas' float summation: only there can Brevitas' float forward differ (by one level) "
             "from the integer-accumulator reference, which the hardware equals.", "",
             "| layer | channels | output | BatchNorm | ReLU | decreasing channels | thresholds | checked | fragile |",
             "|---|---:|---|---|---|---:|---:|---|---:|"]
    for r in fs["layers"]:
        if r["kind"] != "requant":
            bias = f"bias on a 2^-{r['bias_frac_bits']} grid" if r["bias_frac_bits"] is not None else "no bias"
            lines.append(f"| {r['layer']} | | accumulator ({bias}) | | | | | | |")
            continue
        out = f"{'int' if r['out_signed'] else 'uint'}{r['out_bits']}"
        lines.append(f"| {r['layer']} | {r['channels']} | {out} | {'yes' if r['batchnorm'] else 'no'} | "
                     f"{'yes' if r['relu'] else 'no'} | {r['negative_slope_channels']} | {r['thresholds']} | "
                     f"{r['checked'].split(' (')[0]} | {r['fragile_thresholds']} |")
    ag = fs.get("brevitas_float_agreement") or {}
    if ag.get("agree") is not None:
        n = ag["images"]
        lines += ["", f"Brevitas' float forward vs the integer reference: **{ag['agree']}/{n}** images agree "
                      f"(every activation code equal: {ag['activations_equal']}/{n}; same argmax: "
                      f"{ag['argmax_equal']}/{n}; max |logit difference| {ag['max_abs_logit_diff']:.3g}). "
                      f"Disagreements explained by a fragile threshold: {ag['n_explained']}; unexplained: "
                      f"{ag['n_unexplained']}."]
        for e in ag["explained"][:10]:
            lines.append(f"- image {e['image']}: layer `{e['layer']}`, channel {e['channel']}, threshold "
                         f"{e['threshold_index']} (T = {e['threshold']}, accumulator {e['accumulator']}): Brevitas "
                         f"{e['brevitas']}, reference {e['reference']}; {e['why']}")
    elif ag:
        lines += ["", ag.get("note", "")]
    return lines


def _log_softmax_md(ls: dict) -> list[str]:
    k, n = ls["kernel"], ls["n_images"]
    terms = ", ".join(f"{name} {v:.3g}" for name, v in ls["bound_terms"].items())
    lines = ["", "## LogSoftmax on chip (vs float `torch.log_softmax`: stated bound, not `==`)", "",
             f"Kernel: input {k['input_type']} (the logits' exact type), output **{ls['output_type']}**; exp table "
             f"{k['exp_table']['entries']} x {k['exp_table']['width']} bits (2^-{k['exp_table']['frac_bits']}), "
             f"log table {k['log_table']['entries']} x {k['log_table']['width']} bits "
             f"(2^-{k['log_table']['frac_bits']}), sum {k['sum_width']} bits.", "",
             "| figure | value |", "|---|---:|",
             f"| stated bound, \|csim - float64 torch.log_softmax(logits)\| | {ls['bound']:.6g} ({terms}) |",
             f"| measured max error vs float64 | {ls['max_abs_error_vs_float64']:.6g} |",
             f"| images within the bound | {ls['images_within_bound']}/{n} |"]
    if "max_abs_error_vs_brevitas_float32" in ls:
        lines += [f"| measured max error vs Brevitas' float32 output (bound + {ls['float32_slack']:.3g} for float32 "
                  f"rounding) | {ls['max_abs_error_vs_brevitas_float32']:.6g} |",
                  f"| images within that | {ls['images_within_bound_float32']}/{n} |"]
    lines += [f"| argmax csim == argmax logits | {ls['argmax_agreement']}/{n} |",
              f"| images with tied maximum logits (argmax = first index) | {ls['argmax_ties_in_logits']} |"]
    return lines


def plot(state, path: Path) -> None:
    """Per-step wall time and the csim confusion matrix, one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names, secs = list(state.timings), list(state.timings.values())
    axes[0].barh(names[::-1], secs[::-1], color="#4477aa")
    axes[0].set_xlabel("wall time (s)")
    axes[0].set_title("steps")
    if state.labels is not None and "csim" in state.ref:
        k = int(max(state.labels.max(), state.ref["csim"].shape[1] - 1)) + 1
        cm = np.zeros((k, k), dtype=int)
        np.add.at(cm, (state.labels, _logits(state, state.ref["csim"]).argmax(1)), 1)
        axes[1].imshow(np.log1p(cm), cmap="Blues")
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    axes[1].text(j, i, cm[i, j], ha="center", va="center", fontsize=7)
        axes[1].set_xticks(range(k))
        axes[1].set_yticks(range(k))
        axes[1].set_xlabel("csim prediction")
        axes[1].set_ylabel("label")
        axes[1].set_title(f"HLS csim confusion ({len(state.labels)} images)")
    else:
        axes[1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(state) -> dict:
    rep = build_json(state)
    state.path("report.json").write_text(report.dump(rep))
    plot(state, state.path("report.png"))
    state.path("report.md").write_text(markdown(rep) + "\n![steps and confusion](report.png)\n")
    return rep


def add_vendor(build: Path, vendor: dict) -> None:
    """Put ``hw.vendor`` into the build's report.json (atomically) and re-render report.md from it."""
    p = build / "report.json"
    if not p.is_file():
        return
    rep = json.loads(p.read_text())
    rep.setdefault("hw", {})["vendor"] = vendor
    tmp = p.with_name(f".report.json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(rep, indent=1, default=float) + "\n")
    os.replace(tmp, p)
    try:
        md = markdown(rep)
    except (KeyError, TypeError):  # a report.json from an older flow: leave its report.md as it is
        return
    img = "\n![steps and confusion](report.png)\n" if (build / "report.png").is_file() else ""
    if rep.get("value_ranges"):  # the section report.step_value_ranges appended after the first render
        fig = report.RANGES_FIGURE if (build / report.RANGES_FIGURE).is_file() else None
        img += "\n".join(profile.markdown(rep["value_ranges"], fig)) + "\n"
    (build / "report.md").write_text(md + img)
