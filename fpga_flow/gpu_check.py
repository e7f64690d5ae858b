"""The GPU checks of issue #16 in one go, for a 10-minute slot on a GPU machine (``scripts/gpu_check.sh``).

1. Every zoo model (one shipped checkpoint each, plus the float-scaled W8A8 ones) is built with
   ``fpga-flow hls --device cuda -n all``: the build compares Brevitas' CPU *and* CUDA forwards with the
   golden (QONNX for power-of-two models, the integer-accumulator reference for float-scaled ones, every
   disagreement explained or the build fails) and the C simulation with it. The per-device result is
   read back from report.json; a device the report lists but did not compare is shown as NOT CHECKED.
2. Float-scaled models (convnet_bn W8A8; all with ``--sweep-all``): what each CUDA numeric setting does
   to the agreement with the integer reference (the reference settings of ``golden.REFERENCE_NUMERICS``,
   TF32 on, non-deterministic autotuned cuDNN, PyTorch's defaults), recomputed from the build's own graph.
3. Training speed: ``train --epochs 2`` of the convnet on CUDA (the shipped batch 64, and batch 512 with
   the linear lr scaling rule) and on every CPU thread.

Writes ``gpu_check.md`` and ``gpu_check.json`` into the folder given, the builds into its ``builds/``.
``--no-cuda`` runs the same code on the CPU only (the CI-side check of this script); a time budget skips
what would not fit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import agreement, api, data, int_ref, layout, passes, train, zoo
from .config import BuildConfig

# CUDA numeric settings measured against the integer reference (overrides of golden.REFERENCE_NUMERICS)
NUMERICS_VARIANTS = {
    "reference (TF32 off, deterministic cuDNN)": {},
    "TF32 on (conv and matmul)": {"cudnn.allow_tf32": True, "cuda.matmul.allow_tf32": True},
    "cuDNN autotuned, non-deterministic": {"cudnn.deterministic": False, "cudnn.benchmark": True},
    "cuDNN off (PyTorch's own CUDA convolution, no Winograd/FFT)": {"cudnn.enabled": False},
    "PyTorch defaults": {"cudnn.allow_tf32": True, "cuda.matmul.allow_tf32": False, "cudnn.deterministic": False,
                         "cudnn.benchmark": False},
}
SWEEP = (("convnet_bn", 8, 8),)  # numeric settings measured on these (each re-lowers its graph: ~1-3 min of CPU)
FLOAT_SCALED_EXTRA = ((8, 8),)  # float-scaled models also get their W8A8 checkpoint (fragile thresholds)


def checkpoints(models: list[str] | None = None, all_checkpoints: bool = False) -> list[tuple[str, int, int]]:
    """(model, W, A) to build: per zoo model its W4A4 checkpoint (else its first), and for models that ship
    W8A8 too, that one; ``all_checkpoints``: every shipped checkpoint. An entry of ``models`` may name one
    checkpoint (``mlp_bn_w4a4``)."""
    out = []
    for entry in models or zoo.names():
        one = re.fullmatch(r"(\w+?)_w(\d+)a(\d+)", entry)
        if one and zoo.checkpoint_path(one.group(1), int(one.group(2)), int(one.group(3))).is_file():
            out.append((one.group(1), int(one.group(2)), int(one.group(3))))
            continue
        zoo.load(entry)  # an unknown name lists the models there are
        shipped = sorted((int(m.group(1)), int(m.group(2))) for p in zoo.CHECKPOINTS_DIR.glob(f"{entry}_w*a*.pt")
                         if (m := re.fullmatch(rf"{re.escape(entry)}_w(\d+)a(\d+)", p.stem)))
        if not shipped:
            continue
        pick = shipped if all_checkpoints else [(4, 4) if (4, 4) in shipped else shipped[0]]
        pick += [b for b in FLOAT_SCALED_EXTRA if b in shipped and b not in pick]
        out += [(entry, w, a) for w, a in pick]
    return out


def device_results(rep: dict) -> dict[str, dict]:
    """Per device of a build's report: compared with what, images, agree, explained, unexplained.

    Float-scaled builds carry the record (``agreement.compare_devices``); for power-of-two builds it is read
    off the comparisons ``Brevitas torch (<dev>) vs <golden>``. A device listed in ``reference_devices``
    without either is returned with ``checked: False``."""
    out: dict[str, dict] = {}
    fs = (rep.get("float_scaled") or {}).get("brevitas_float_agreement") or {}
    for dev, r in (fs.get("devices") or {}).items():
        out[dev] = {"compared_with": r["compared_with"], "images": r["images"], "agree": r["agree"],
                    "n_explained": r["n_explained"], "n_unexplained": r["n_unexplained"],
                    "output_equal_to_cpu": r.get("output_equal_to_cpu"), "checked": r["agree"] is not None}
    if not rep.get("float_scaled"):
        for c in rep.get("comparisons", []):
            m = re.fullmatch(r"Brevitas torch \((\w+)\) vs (.+)", c["name"])
            if m:
                out[m.group(1)] = {"compared_with": m.group(2), "images": c["n"], "agree": c["exact_matches"],
                                   "n_explained": 0, "n_unexplained": c["n"] - c["exact_matches"],
                                   "output_equal_to_cpu": None, "checked": True}
    for dev in rep.get("reference_devices", []):
        out.setdefault(dev, {"compared_with": None, "images": rep.get("n_images"), "agree": None,
                             "n_explained": None, "n_unexplained": None, "output_equal_to_cpu": None,
                             "checked": False})
    return out


LOWERED = "25_lowered.onnx"  # written by step_lower for float-scaled models only


def build_dir(builds: Path, model: str, ok: bool) -> Path:
    """Where the build was left: <builds>/<model>, or <builds>/<model>.failed when it did not verify."""
    return builds / (model if ok else f"{model}.failed")


def build(model: str, w: int, a: int, device: str, n: str, data_path: str | None, builds: Path) -> dict:
    """What ``fpga-flow hls --model M --weight-bits W --act-bits A -n N --device D --stock-check 0`` does
    (``api.build_zoo``), into ``builds``; the per-device results, or the failure's message."""
    cfg = BuildConfig(model=model, weight_bits=w, act_bits=a, n_images=0 if n == "all" else int(n),
                      stock_check_images=0, device=device, data_path=data_path)
    t0 = time.perf_counter()
    try:
        rep = api.build_zoo(cfg, out_dir=builds, progress=False)
    except Exception as e:  # noqa: BLE001 - a failed build is a result to report, not the end of the check
        return {"ok": False, "wall_s": round(time.perf_counter() - t0, 1), "error": f"{type(e).__name__}: {e}"[-1500:],
                "float_scaled": (build_dir(builds, model, False) / LOWERED).is_file()}
    csim = next((c for c in rep["comparisons"] if c["name"].startswith("HLS csim")), None)
    return {"ok": True, "wall_s": round(time.perf_counter() - t0, 1), "n_images": rep["n_images"],
            "exact_matches": rep["exact_matches"], "csim_vs": csim["name"] if csim else None,
            "float_scaled": bool(rep.get("float_scaled")), "reference_devices": rep.get("reference_devices"),
            "devices": device_results(rep), "torch_samples_per_s": rep.get("torch_samples_per_s"),
            "torch_cuda_samples_per_s": rep.get("torch_cuda_samples_per_s"),
            "csim_samples_per_s": rep.get("csim_samples_per_s")}


def numerics_sweep(model: str, w: int, a: int, n: int | None, device: str, data_path: str | None,
                   graphs: Path, variants: dict[str, dict] | None = None) -> dict[str, dict]:
    """Brevitas' forward on ``device`` under each numeric setting, classified against the integer reference
    recomputed from the build's graph (``graphs``/20_channels_last.onnx, lowered again: deterministic); also
    after a failed build (build/<model>.failed), where it says which setting the failure comes from."""
    from qonnx.core.modelwrapper import ModelWrapper
    module, _ = train.load_checkpoint(model, None, w, a)
    shape = tuple(zoo.load(model).INPUT_SHAPE)
    split = data.load("test", data_path)
    k = n or len(split.labels)
    x = np.asarray(data.as_input(data.to_unit(split.images[:k]), shape), dtype=np.float32)
    low = passes.lower(ModelWrapper(str(graphs / "20_channels_last.onnx")))
    hw_in = low.quantize_input(x)
    trace = int_ref.run(low, layout.channels_last(hw_in),
                        trace=True)
    out = trace[low.model.graph.output[0].name]
    logits = out * low.layers[-1].final_scale if low.layers[-1].chain is None else out
    ref = agreement.reference(low, trace, hw_in, logits)
    _, cpu_out = agreement.brevitas_codes(module, x, device="cpu")
    rows = {}
    for name, overrides in (variants or NUMERICS_VARIANTS).items():
        codes, dev_out = agreement.brevitas_codes(module, x, device=device, numerics=overrides)
        info = agreement.classify(ref, codes, dev_out)
        same = (dev_out.reshape(k, -1) == cpu_out.reshape(k, -1)).all(axis=1)
        rows[name] = {"images": k, "agree": info.get("agree"), "n_explained": info.get("n_explained"),
                      "n_unexplained": info.get("n_unexplained"), "output_equal_to_cpu": int(same.sum()),
                      "max_abs_diff_vs_cpu": float(np.abs(dev_out - cpu_out).max(initial=0.0))}
    return rows


def train_speed(device: str, epochs: int, batch_size: int, lr_scaling: str, limit: int | None,
                data_path: str | None, out_dir: Path) -> dict:
    """One ``train.train`` of the convnet (W4A4, no augmentation: the shipped recipe's settings otherwise)."""
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    try:
        card = train.train("convnet", epochs=epochs, batch_size=batch_size, lr_scaling=lr_scaling, device=device,
                           augment=None, limit=limit, data_path=data_path, progress=False,
                           out=out_dir / f"convnet_{device}_b{batch_size}.pt")
    finally:
        torch.set_num_threads(threads)
    return {"device": device, "threads": card["threads"], "batch_size": batch_size, "lr_scaling": lr_scaling,
            "peak_lr": card.get("peak_lr", card["lr"]), "epochs": epochs, "train_images": card["train_images"],
            "train_seconds": card["train_seconds"], "train_samples_per_s": card["train_samples_per_s"],
            "test_accuracy": card["test_accuracy"]}


def machine() -> dict:
    m = {"python": platform.python_version(), "torch": torch.__version__, "cpu_cores": os.cpu_count(),
         "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        m.update(gpu=torch.cuda.get_device_name(0), cuda_version=torch.version.cuda,
                 cudnn=torch.backends.cudnn.version())
    return m


def run(out: Path, cuda: bool = True, models: list[str] | None = None, n: str = "all",
        all_checkpoints: bool = False, train_epochs: int = 2, train_limit: int | None = None,
        budget_s: float = 540.0, data_path: str | None = None, sweep_all: bool = False, log=print) -> dict:
    """Everything above, in order of importance, within ``budget_s`` seconds (what does not fit is listed
    as skipped); writes out/gpu_check.json and out/gpu_check.md and returns the result."""
    if cuda and not torch.cuda.is_available():
        raise SystemExit("gpu_check: torch.cuda.is_available() is False; use --no-cuda for the CPU-only parts")
    t_start = time.perf_counter()
    device = "cuda" if cuda else "cpu"
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
                 "device": device, "n": n, "builds": [], "numerics": {}, "training": [], "skipped": []}
    left = lambda: budget_s - (time.perf_counter() - t_start)  # noqa: E731
    jobs = [("build", c) for c in checkpoints(models, all_checkpoints)]
    # the headline cases first (issue #16's two measured models), then the training speed, then the rest
    first = [("convnet_bn", 8, 8), ("convnet", 4, 4)]
    jobs.sort(key=lambda j: first.index(j[1]) if j[1] in first else len(first))
    runs = [("cuda", 64, "none"), ("cuda", 512, "linear"), ("cpu", 64, "none")] if cuda else [("cpu", 64, "none")]
    jobs[1:1] = [("train", r) for r in runs]
    for kind, what in jobs:
        if left() <= 0:
            res["skipped"].append(f"{kind} {what}: time budget ({budget_s:.0f} s) spent")
            continue
        if kind == "build":
            model, w, a = what
            log(f"gpu_check: hls {model} W{w}A{a} --device {device} -n {n} ...")
            b = dict(model=model, w=w, a=a, **build(model, w, a, device, n, data_path, out / "builds"))
            res["builds"].append(b)
            if b["float_scaled"] and (sweep_all or what in SWEEP) and left() <= 0:
                res["skipped"].append(f"numeric settings {what}: time budget ({budget_s:.0f} s) spent")
            elif b["float_scaled"] and (sweep_all or what in SWEEP):
                log(f"gpu_check: numeric settings on {device}, {model} W{w}A{a} ...")
                variants = NUMERICS_VARIANTS if cuda else {k: v for k, v in list(NUMERICS_VARIANTS.items())[:1]}
                res["numerics"][f"{model}_w{w}a{a}"] = numerics_sweep(
                    model, w, a, None if n == "all" else int(n), device, data_path,
                    build_dir(out / "builds", model, b["ok"]),
                    variants)
        else:
            dev, bs, scaling = what
            log(f"gpu_check: train convnet {train_epochs} epochs on {dev}, batch {bs} ({scaling} lr) ...")
            with tempfile.TemporaryDirectory(prefix="gpu_check_train_", dir=out) as tmp:
                res["training"].append(train_speed(dev, train_epochs, bs, scaling, train_limit, data_path, Path(tmp)))
        (out / "gpu_check.json").write_text(json.dumps(res, indent=1) + "\n")  # after every job
    res["wall_s"] = round(time.perf_counter() - t_start, 1)
    (out / "gpu_check.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "gpu_check.md").write_text(markdown(res))
    return res


def _cell(v) -> str:
    return "-" if v is None else f"{v:,}" if isinstance(v, int) else str(v)


def markdown(res: dict) -> str:
    m = res["machine"]
    gpu = f"{m['gpu']} (CUDA {m['cuda_version']}, cuDNN {m['cudnn']})" if m.get("gpu") else "no GPU"
    lines = [f"# GPU check ({res['date']})", "",
             f"torch {m['torch']}, Python {m['python']}, {m['cpu_cores']} CPU cores, {gpu}. Builds with "
             f"`--device {res['device']} -n {res['n']}`; every figure measured by `scripts/gpu_check.sh` in this run.",
             "", "## Every device's forward vs the golden", "",
             "| model | bits | build | csim == golden | device | compared with | agree | explained | unexplained "
             "| output == CPU's | build wall (s) |",
             "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for b in res["builds"]:
        head = f"| {b['model']} | W{b['w']}A{b['a']} |"
        if not b["ok"]:
            err = " ".join(b["error"].split())[-300:].replace("|", "/")
            lines.append(f"{head} **FAILED**: {err} | | | | | | | | {b['wall_s']} |")
            continue
        for dev, r in b["devices"].items():
            if not r["checked"]:
                lines.append(f"{head} ok | {b['exact_matches']}/{b['n_images']} | {dev} | **NOT CHECKED** "
                             f"| | | | | {b['wall_s']} |")
                continue
            lines.append(f"{head} ok | {b['exact_matches']}/{b['n_images']} | {dev} | {r['compared_with']} | "
                         f"{_cell(r['agree'])}/{_cell(r['images'])} | {_cell(r['n_explained'])} | "
                         f"{_cell(r['n_unexplained'])} | {_cell(r['output_equal_to_cpu'])} | {b['wall_s']} |")
    if res["numerics"]:
        lines += ["", f"## Float-scaled models: numeric settings on {res['device']} vs the integer-accumulator "
                  "reference",
                  "",
                  "| model | setting | agree | explained | unexplained | output == CPU's | max abs diff vs CPU |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for model, rows in res["numerics"].items():
            for name, r in rows.items():
                lines.append(f"| {model} | {name} | {_cell(r['agree'])}/{r['images']:,} | {_cell(r['n_explained'])} | "
                             f"{_cell(r['n_unexplained'])} | {r['output_equal_to_cpu']:,} | "
                             f"{r['max_abs_diff_vs_cpu']:.3g} |")
    if res["training"]:
        lines += ["", "## Training speed: convnet W4A4, no augmentation", "",
                  "| device | threads | batch | lr | epochs | images | seconds | images/s | test accuracy |",
                  "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
        for t in res["training"]:
            lr = f"{t['peak_lr']:g}" + (" (linear scaling)" if t["lr_scaling"] == "linear" else "")
            lines.append(f"| {t['device']} | {t['threads']} | {t['batch_size']} | {lr} | {t['epochs']} | "
                         f"{t['train_images']:,} | {t['train_seconds']:.1f} | {t['train_samples_per_s']:,.0f} | "
                         f"{t['test_accuracy']:.2%} |")
    if res["skipped"]:
        lines += ["", "Skipped: " + "; ".join(res["skipped"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fpga_flow.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="folder for gpu_check.md and gpu_check.json")
    p.add_argument("--no-cuda", action="store_true", help="CPU only: the same code paths, no CUDA needed")
    p.add_argument("--models", nargs="+", help="zoo models (default: all of `python -m fpga_flow models`), or single "
                   "checkpoints such as convnet_bn_w8a8")
    p.add_argument("--all-checkpoints", action="store_true", help="every shipped checkpoint of each model")
    p.add_argument("-n", "--images", default="all", help="test images per build (default all)")
    p.add_argument("--train-epochs", type=int, default=2)
    p.add_argument("--train-limit", type=int, help="train on the first N images only (smoke runs)")
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="start nothing new after this many seconds (default 540: a 10-minute slot)")
    p.add_argument("--data", help="folder with the MNIST IDX files")
    p.add_argument("--sweep-all", action="store_true",
                   help="measure the CUDA numeric settings on every float-scaled build (default: convnet_bn W8A8)")
    a = p.parse_args(argv)
    res = run(Path(a.out), cuda=not a.no_cuda, models=a.models, n=a.images, all_checkpoints=a.all_checkpoints,
              train_epochs=a.train_epochs, train_limit=a.train_limit, budget_s=a.budget_s, data_path=a.data,
              sweep_all=a.sweep_all, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(markdown(res))
    bad = [b for b in res["builds"] if not b["ok"] or any(not r["checked"] for r in b["devices"].values())]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
