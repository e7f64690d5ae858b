"""What stock hls4ml gives on a zoo model, with none of fpga_flow's precisions or kernels (the contrast).

``run(model, weight_bits, act_bits, n)`` follows hls4ml's documented QONNX path and nothing else:
Brevitas -> QONNX export -> cleanup -> channels-last -> GemmToMatMul -> cleanup ->
``config_from_onnx_model(granularity="name", backend="Vitis")`` with hls4ml's default precisions ->
``convert_from_onnx_model(io_type="io_stream")`` -> ``compile()`` (g++) -> ``predict()`` on the first N MNIST
test images given as the float image (channels-last), the graph's input: hls4ml implements the input Quant
node itself. The logits are compared with Brevitas' float forward on the CPU. A crash of hls4ml (or of the
QONNX preparation it needs) is a result: the step, the exception's type and message are recorded.

``bench(a)`` (``make bench MODEL=<m> ARGS=--hls4ml-native``) adds the row of one model and bit width to
docs/bench/hls4ml_native.{json,md}, beside the same figures for fpga_flow's own build in build/<model>/.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from ... import api, data, golden, layout
from ...config import BuildConfig
from ...export import export_qonnx
from ...passes.prepare_for_hls4ml import prepare_for_hls4ml
from ...resources import DEFAULT_OUT
from ...toolchain import cpu_name

OUT_JSON_NAME = "hls4ml_native.json"


def portable(text: str) -> str:
    """A traceback without this machine's paths (it is committed): site-packages and the repository root."""
    import sysconfig
    for prefix, name in ((sysconfig.get_paths()["purelib"], "<site-packages>"), (str(Path.cwd()), "<repo>")):
        text = text.replace(prefix, name)
    return text


def _figures(logits: np.ndarray, ref: np.ndarray, labels: np.ndarray) -> dict:
    """Max abs logit difference, argmax agreement and accuracy of ``logits`` against Brevitas' ``ref``."""
    logits = np.asarray(logits, np.float64).reshape(ref.shape)
    pred, ref_pred = logits.argmax(1), ref.argmax(1)
    return {"max_abs_logit_diff": float(np.max(np.abs(logits - ref.astype(np.float64)))),
            "argmax_agreement": int((pred == ref_pred).sum()),
            "exact_logits": int(np.all(logits == ref.astype(np.float64), axis=1).sum()),
            "accuracy": float((pred == labels).mean()), "n": int(len(ref))}


def run(model: str, weight_bits: int = 4, act_bits: int = 4, n: int = 1000, input_bits: int = 8,
        data_path: str | None = None, out_dir: str | os.PathLike | None = None, io_type: str = "io_stream",
        progress: bool = True) -> dict:
    """Stock hls4ml on zoo ``model``; returns a JSON-able result (``status`` "ok" or "crashed")."""

    def say(msg: str) -> None:
        if progress:
            print(f"hls4ml-native {model} W{weight_bits}A{act_bits}: {msg}", file=sys.stderr, flush=True)

    import hls4ml
    res: dict = {"model": model, "weight_bits": weight_bits, "act_bits": act_bits, "n_images": n,
                 "io_type": io_type, "hls4ml_version": hls4ml.__version__, "status": "ok", "steps_s": {}}
    suffix = "" if io_type == "io_stream" else f"_{io_type}"
    work = Path(out_dir) if out_dir else DEFAULT_OUT / "hls4ml_native" / f"{model}_w{weight_bits}a{act_bits}{suffix}"
    work.mkdir(parents=True, exist_ok=True)
    res["work_dir"] = os.path.relpath(work.resolve(), Path.cwd()) if work.resolve().is_relative_to(Path.cwd()) else str(work)
    step, t_all = "load", time.perf_counter()
    try:
        t0 = time.perf_counter()
        cfg = BuildConfig(model=model, weight_bits=weight_bits, act_bits=act_bits, input_bits=input_bits,
                          data_path=data_path)
        module, input_shape, ckpt = api.zoo_module(cfg)
        res["checkpoint"] = ckpt["path"]
        split = data.load("test", data_path)
        x = data.as_input(data.to_unit(split.images[:n]), input_shape)
        labels = np.asarray(split.labels[:n])
        say("Brevitas float forward (CPU)")
        ref = golden.torch_reference(module, x, "cpu").output.reshape(len(x), -1)
        res["brevitas"] = {"accuracy": float((ref.argmax(1) == labels).mean()), "n": int(len(x))}
        res["steps_s"][step] = round(time.perf_counter() - t0, 3)

        step = "export"
        t0 = time.perf_counter()
        from qonnx.core.modelwrapper import ModelWrapper
        onnx_path = export_qonnx(module, input_shape, work / "export.onnx")
        qonnx_model = ModelWrapper(str(onnx_path))
        res["steps_s"][step] = round(time.perf_counter() - t0, 3)

        step = "prepare (cleanup, channels-last, GemmToMatMul, cleanup)"
        t0 = time.perf_counter()
        res["plain_prepare"] = _plain_prepare(onnx_path)
        qonnx_model = prepare_for_hls4ml(qonnx_model)
        in_shape = [int(d) for d in qonnx_model.get_tensor_shape(qonnx_model.graph.input[0].name)]
        first = qonnx_model.find_consumer(qonnx_model.graph.input[0].name)
        res["graph_input"] = {"shape": in_shape, "first_node": first.op_type if first is not None else None}
        res["scales"] = _scale_kind(qonnx_model)
        res["steps_s"][step] = round(time.perf_counter() - t0, 3)

        step = "config_from_onnx_model"
        t0 = time.perf_counter()
        import hls4ml.converters
        import hls4ml.utils.config
        chatter = io.StringIO()  # hls4ml prints every layer it parses
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hls_config = hls4ml.utils.config.config_from_onnx_model(qonnx_model, granularity="name",
                                                                    backend="Vitis")
        res["hls_config_model"] = {k: str(v) for k, v in hls_config.get("Model", {}).items()}
        res["steps_s"][step] = round(time.perf_counter() - t0, 3)

        step = "convert_from_onnx_model"
        t0 = time.perf_counter()
        say("convert")
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings(record=True) as more:
            warnings.simplefilter("always")
            hm = hls4ml.converters.convert_from_onnx_model(
                qonnx_model, output_dir=str(work / "hls"), backend="Vitis", io_type=io_type,
                hls_config=hls_config)
        caught += more
        res["hls4ml_warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught
                                         if "hls4ml" in str(w.filename)})
        res["layers"] = [{"name": lay.name, "class": lay.class_name,
                          "result_t": str(lay.get_output_variable().type.precision)}
                         for lay in hm.get_layers()]
        res["steps_s"][step] = round(time.perf_counter() - t0, 3)

        step = "compile (g++)"
        t0 = time.perf_counter()
        say("compile (g++)")
        with contextlib.redirect_stdout(chatter):
            hm.compile()
        res["steps_s"][step] = round(time.perf_counter() - t0, 3)

        step = "predict"
        t0 = time.perf_counter()
        say(f"predict on {len(x)} images")
        x_hw = np.ascontiguousarray(layout.channels_last(x), dtype=np.float32)
        if list(x_hw.shape[1:]) != in_shape[1:]:
            raise ValueError(f"the prepared graph takes {in_shape[1:]}, the images are {list(x_hw.shape[1:])}")
        y = np.asarray(hm.predict(x_hw), np.float64).reshape(len(x), -1)
        res["steps_s"][step] = round(time.perf_counter() - t0, 3)
        res["hls4ml"] = _figures(y, ref, labels)
        np.savez_compressed(work / "outputs.npz", hls4ml=y, brevitas=ref, labels=labels)
        step = "predict (pre-quantized input)"  # diagnostic: the input quantizer applied before hls4ml
        xq = golden.quantize_input(qonnx_model, x_hw)
        yq = np.asarray(hm.predict(np.ascontiguousarray(xq)), np.float64).reshape(len(x), -1)
        res["hls4ml_prequantized_input"] = _figures(yq, ref, labels)
    except Exception as e:  # hls4ml / qonnx raise anything; the crash is the finding
        res["status"] = "crashed"
        res["crash"] = {"step": step, "type": type(e).__name__, "message": str(e)[:2000],
                        "traceback_tail": portable(traceback.format_exc()[-3000:]), **_failing_node(e)}
        say(f"crashed in {step}: {type(e).__name__}: {str(e)[:300]}")
    res["wall_s"] = round(time.perf_counter() - t_all, 2)
    return res


def _plain_prepare(onnx_path: Path) -> dict:
    """hls4ml's documented QONNX preparation exactly, without fpga_flow's workarounds (``prepare_for_hls4ml``
    adds a zero bias to a Gemm without one, which qonnx's GemmToMatMul indexes, and re-infers datatypes):
    ``{"status": "ok"}``, or where it raised."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = cleanup_model(ModelWrapper(str(onnx_path)))
            m = m.transform(ConvertToChannelsLastAndClean(make_input_channels_last=True))
            m = cleanup_model(m.transform(GemmToMatMul()))
        return {"status": "ok"}
    except Exception as e:  # the crash is the finding
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return {"status": "crashed", "type": type(e).__name__, "message": str(e)[:500],
                "where": f"{Path(tb.filename).name}:{tb.lineno} {tb.name}: {tb.line}"}


def _scale_kind(model) -> str:
    """"power-of-two" if every Quant node's scale is a power of two, else "float"."""
    for node in model.graph.node:
        if node.op_type in ("Quant", "BipolarQuant"):
            scale = model.get_initializer(node.input[1])
            if scale is None:
                return "float"
            e = np.log2(np.abs(np.asarray(scale, np.float64)))
            if not np.all(np.isfinite(e) & (e == np.round(e))):
                return "float"
    return "power-of-two"


def _failing_node(e: BaseException) -> dict:
    """The hls4ml layer (a ``node`` local of the innermost frame holding one) being handled when ``e`` was raised."""
    tb, found = e.__traceback__, {}
    while tb is not None:
        node = tb.tb_frame.f_locals.get("node")
        if node is not None and hasattr(node, "class_name") and hasattr(node, "name"):
            found = {"layer": str(node.name), "layer_class": str(node.class_name),
                     "layer_inputs": [str(i) for i in getattr(node, "inputs", [])],
                     "in_function": getattr(tb.tb_frame.f_code, "co_qualname", tb.tb_frame.f_code.co_name)}
        tb = tb.tb_next
    return found


def fpga_flow_figures(model: str, weight_bits: int, act_bits: int, input_bits: int, ref: np.ndarray | None,
                      labels: np.ndarray | None, build_dir: str | os.PathLike | None = None) -> dict:
    """The same figures for fpga_flow's own build in <build_dir>/<model>/ (default build/; its csim logits on the
    first N images against Brevitas' float forward), or why they are not available."""
    d = Path(build_dir or DEFAULT_OUT) / model
    shown = os.path.relpath(d.resolve(), Path.cwd()) if d.resolve().is_relative_to(Path.cwd()) else str(d)
    path = d / "report.json"
    if not path.is_file():
        return {"status": "absent", "build": shown, "note": f"{shown}/report.json not found: run "
                f"`make hls MODEL={model} W={weight_bits} A={act_bits} N=all` first"}
    rep = json.loads(path.read_text())
    c = rep.get("config", {})
    out = {"status": "ok", "build": shown, "checkpoint": rep.get("checkpoint"), "report_n_images": rep.get("n_images"),
           "report_exact_matches": rep.get("exact_matches"), "report_accuracy": rep.get("accuracy"),
           "golden": next((x["name"] for x in rep.get("comparisons", []) if x["name"].startswith("HLS csim")), None)}
    if (c.get("weight_bits"), c.get("act_bits"), c.get("input_bits")) != (weight_bits, act_bits, input_bits) \
            or c.get("checkpoint"):
        return {"status": "other model", "build": shown,
                "note": f"{shown}/report.json is W{c.get('weight_bits')}A{c.get('act_bits')} with "
                        f"{c.get('input_bits')}-bit input from {rep.get('checkpoint')}, not W{weight_bits}A{act_bits} "
                        f"with {input_bits}-bit input from the shipped checkpoint: run "
                        f"`make hls MODEL={model} W={weight_bits} A={act_bits} N=all` first"}
    scale = (rep.get("output") or {}).get("scale")
    try:
        csim = np.load(d / "csim.npz")["csim"]
    except (OSError, KeyError):
        csim = None
    if ref is None or csim is None or len(csim) < len(ref) or rep.get("config", {}).get("data_path"):
        out["note"] = "per-image figures not computed (no csim.npz with the first N MNIST test images)"
        return out
    logits = csim[:len(ref)].astype(np.float64) * (np.asarray(scale, np.float64) if scale is not None else 1.0)
    out.update(_figures(logits, ref, labels))
    kind = (rep.get("output") or {}).get("kind", "logits")
    out["note"] = (f"csim outputs ({kind}) of {shown}, first {len(ref)} of its {rep.get('n_images')} images"
                   + (", times the output scale in report.json" if scale is not None else ""))
    return out


def bench(a) -> int:
    n = a.images or 10000
    res = run(a.model, a.weight_bits, a.act_bits, n, input_bits=a.input_bits, data_path=a.data, io_type=a.io_type,
              progress=not a.quiet)
    ref = labels = None
    if res["status"] == "ok":
        with np.load(Path.cwd() / res["work_dir"] / "outputs.npz") as z:
            ref, labels = z["brevitas"], z["labels"]
    elif "brevitas" in res:
        ref, labels = _brevitas_again(a, n)
    res["fpga_flow"] = fpga_flow_figures(a.model, a.weight_bits, a.act_bits, a.input_bits, ref, labels,
                                         getattr(a, "build_dir", None))
    res["machine"] = {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()}
    res["date"] = time.strftime("%Y-%m-%d")
    out_json = Path(a.doc_dir) / OUT_JSON_NAME
    rows = json.loads(out_json.read_text()) if out_json.is_file() else {}
    key = f"{a.model} W{a.weight_bits}A{a.act_bits}" + ("" if a.io_type == "io_stream" else f" {a.io_type}")
    rows[key] = res
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    out_json.with_suffix(".md").write_text(markdown(rows))
    print(markdown({key: res}))
    return 0


def _brevitas_again(a, n: int) -> tuple[np.ndarray, np.ndarray]:
    module, input_shape, _ = api.zoo_module(BuildConfig(model=a.model, weight_bits=a.weight_bits,
                                                        act_bits=a.act_bits, input_bits=a.input_bits,
                                                        data_path=a.data))
    split = data.load("test", a.data)
    x = data.as_input(data.to_unit(split.images[:n]), input_shape)
    return golden.torch_reference(module, x, "cpu").output.reshape(len(x), -1), np.asarray(split.labels[:n])


def _cols(r: dict) -> str:
    """max abs diff | logits == | argmax agreement | accuracy, or dashes."""
    if "n" not in r:
        return "- | - | - | -"
    return (f"{r['max_abs_logit_diff']:.4g} | {r['exact_logits']}/{r['n']} | {r['argmax_agreement']}/{r['n']} | "
            f"{r['accuracy']:.2%}")


def markdown(rows: dict) -> str:
    lines = ["# Stock hls4ml vs fpga_flow on Brevitas' default (float-scaled) quantizers", "",
             "`make bench MODEL=<name> W=<w> A=<a> N=<n> ARGS=--hls4ml-native` (`fpga_flow/hls4ml_native.py`). "
             "Stock hls4ml: the QONNX export prepared as hls4ml documents (cleanup, channels-last, GemmToMatMul, "
             "cleanup), `config_from_onnx_model(granularity=\"name\", backend=\"Vitis\")` with hls4ml's default "
             "precisions, `convert_from_onnx_model(io_type=\"io_stream\")`, `compile()`, `predict()` on the first N "
             "MNIST test images (the float image, channels-last: hls4ml implements the input Quant itself). "
             "fpga_flow: its csim logits from `build/<model>/` (`make hls`; another folder with `--build-dir`) on "
             "the same images. Both compared with "
             "Brevitas' float forward on the CPU: max |logit difference|, images whose logits are equal (`==`), "
             "images with the same argmax, accuracy. fpga_flow's golden is its integer-accumulator reference "
             "(`==` on every image, see its report); Brevitas' float32 forward sums rounded float products, so "
             "its float-scaled logits differ from that reference in the last bits. Rows with power-of-two scales "
             "are controls of this harness (stock hls4ml on a model it supports).",
             "",
             "| model | scales | N | design | status | max abs logit diff | logits `==` | argmax agreement "
             "| accuracy | Brevitas accuracy | wall (s) |",
             "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    crashes, notes, warned = [], [], []
    for key, r in sorted(rows.items()):
        bacc = f"{r['brevitas']['accuracy']:.2%}" if "brevitas" in r else "-"
        h = r.get("hls4ml", {})
        status = "ok" if r["status"] == "ok" else f"crashed in {r['crash']['step']}"
        sc = r.get("scales", "-")
        lines.append(f"| {key} | {sc} | {h.get('n', r['n_images'])} | stock hls4ml {r['hls4ml_version']} | {status} | "
                     f"{_cols(h)} | {bacc} | {r['wall_s']:.1f} |")
        f = r.get("fpga_flow", {})
        lines.append(f"| {key} | {sc} | {f.get('n', '-')} | fpga_flow (`{f.get('build', 'build/' + r['model'])}`) | "
                     f"{f.get('status', '-')} | {_cols(f)} | {bacc} | - |")
        if r["status"] != "ok":
            c = r["crash"]
            at = (f" (in hls4ml's `{c['in_function']}`, on layer `{c['layer']}`, a {c['layer_class']} with "
                  f"{len(c['layer_inputs'])} inputs)" if c.get("layer") else "")
            crashes.append(f"- {key}: stock hls4ml crashed in `{c['step']}`: `{c['type']}: "
                           f"{c['message'].splitlines()[0][:400] if c['message'] else ''}`{at}")
        pp = r.get("plain_prepare", {})
        if pp.get("status") == "crashed":
            crashes.append(f"- {key}: hls4ml's documented QONNX preparation alone (without fpga_flow's zero "
                           f"Gemm bias) crashes earlier, in qonnx: `{pp['type']}: {pp['message'][:200]}` at "
                           f"`{pp['where']}`")
        if r.get("hls4ml_warnings"):
            warned.append(f"- {key}: " + "; ".join(f"`{w}`" for w in r["hls4ml_warnings"]))
        if f.get("note"):
            notes.append(f"- {key}, fpga_flow: {f['note']}"
                         + (f"; its report: {f['report_exact_matches']}/{f['report_n_images']} images `==` "
                            f"({f['golden']})" if f.get("report_n_images") else ""))
    if crashes:
        lines += ["", "Crashes (the exception is the result; traceback in `hls4ml_native.json`):", *crashes]
    pre = [f"- {k}: {_cols(r['hls4ml_prequantized_input']).replace(' | ', ', ')} (max abs diff, logits `==`, "
           f"argmax agreement, accuracy)" for k, r in sorted(rows.items()) if "hls4ml_prequantized_input" in r]
    if pre:
        lines += ["", "Stock hls4ml given the input already quantized by the graph's input quantizer (its values "
                  "`k * scale`) instead of the float image: a diagnostic of what hls4ml's input handling (default "
                  "input type `fixed<16,6>`) contributes:", *pre]
    if warned:
        lines += ["", "hls4ml's warnings during conversion:", *warned]
    if notes:
        lines += ["", "fpga_flow rows:", *notes]
    machines = sorted({f"{r['machine']['cpu']}, {r['machine']['cores']} cores, Python {r['machine']['python']} "
                       f"({r['date']})" for r in rows.values() if "machine" in r})
    lines += ["", "Measured on: " + "; ".join(machines) + ". Wall: the stock hls4ml run (load, Brevitas forward, "
              "export, prepare, convert, g++ compile, predict); steps in `hls4ml_native.json`."]
    return "\n".join(lines) + "\n"
