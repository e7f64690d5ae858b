"""One trial of a sweep: fine-tune (or train), build, verify ``==``, read the cost. No Ray in here.

A trial is a point of the space (bits, pruning, reuse factor or target fps, ...) plus the sweep's settings. It
writes everything into its own folder: ``checkpoint.pt`` (+ card), ``build/<model>[_rtl]/`` (the project,
report.json, config.toml), ``trial.log`` (what training and the build printed) and ``trial.json`` (the point,
the outcome and the metrics). A build that raises, or whose report is not ``==`` on every verified image, makes
the trial fail (:class:`TrialFailed`): it is recorded as failed and never becomes a point of the plot.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from pathlib import Path

import torch

from .. import api, backends, train, zoo
from ..config import BuildConfig
from ..errors import FlowError
from .space import PARENT_NONE, PARENT_SHIPPED, parse_prune

CHECKPOINT = "checkpoint.pt"
BUILD = "build"
LOG = "trial.log"
RECORD = "trial.json"


class TrialFailed(FlowError):
    """The trial produced no verified hardware (the build raised or was not bit-exact)."""


def parent_checkpoint(model: str, parent: str) -> Path | None:
    """The checkpoint every trial starts from: the shipped W4A4 one, none (random weights), or a path."""
    if parent == PARENT_NONE:
        return None
    if parent == PARENT_SHIPPED:
        path = zoo.checkpoint_path(model, 4, 4)
        if not path.is_file():
            raise FlowError(f"the sweep's parent is the shipped {path.name}, which {model} does not have: set "
                            f"parent = \"none\" (train from scratch; raise epochs) or a checkpoint path in [sweep]")
        return path
    path = Path(parent).resolve()
    if not path.is_file():
        raise FlowError(f"parent checkpoint {parent} not found")
    return path


def is_verified(rep: dict) -> bool:
    """Every verified image ``==`` the golden (report.json's exact_matches over n_images, no mismatch)."""
    n = rep.get("n_images") or 0
    return n > 0 and rep.get("exact_matches") == n and rep.get("mismatches") == 0


def cost(rep: dict) -> dict:
    """LUT/FF/DSP/BRAM18 and images/s of a report, with how they were obtained (estimate or measured)."""
    hw = rep.get("hw") or {}
    if rep.get("backend") == "rtl":
        r = hw["rtl"]
        y = r.get("yosys")
        if y:
            res = {"lut": y["LUT"], "ff": y["FF"], "dsp": y["DSP"], "bram18": y["BRAM18"]}
            how, kind = f"{y['how']} ({y['part']}); throughput: {r['cycles']['how']}", "measured"
        else:  # synth = false: the rtl backend's fitted cost model, labelled as such
            m = r["folding"]["model_cost"]
            res = {"lut": m["lut"], "ff": m["ff"], "dsp": m["dsp"], "bram18": m["bram18"]}
            how, kind = f"rtl cost model (estimate); throughput: {r['cycles']['how']}", "estimate"
        return {**res, "fps": r["images_per_s_at_clock"], "cost_kind": kind, "cost_how": how}
    est = hw.get("estimate")
    if not est:
        raise FlowError(f"the {rep.get('backend')} report has no cost the sweep can read (hw.estimate)")
    r = est["resources"]
    return {"lut": r["lut"]["value"], "ff": r["ff"]["value"], "dsp": r["dsp"]["value"],
            "bram18": r["bram18k"]["value"], "fps": est["throughput_per_s"], "cost_kind": "estimate",
            "cost_how": f"estimate: {est['method']}"}


def build_config(model: str, point: dict, settings: dict, build: dict, checkpoint: Path | None) -> BuildConfig:
    """The trial's BuildConfig: the shared [build] fields, the point's hardware axes, the trained checkpoint."""
    fields = dict(build, model=model, backend=settings["backend"], n_images=settings["n_images"],
                  weight_bits=point["weight_bits"], act_bits=point["act_bits"],
                  workers=settings["cpus_per_trial"], device="cpu",
                  checkpoint=None if checkpoint is None else str(checkpoint))
    for key in ("reuse_factor", "clock_ns"):
        if key in point:
            fields[key] = point[key]
    if "target_fps" in point:
        fields["extra"] = {**fields.get("extra", {}), "target_fps": point["target_fps"]}
    return BuildConfig.from_dict(fields, where="trial")


def run_trial(model: str, point: dict, settings: dict, build: dict, trial_dir: str | os.PathLike) -> dict:
    """Train, build, verify and measure one point; returns its metrics (also in ``trial_dir/trial.json``).
    Raises :class:`TrialFailed` when no verified hardware came out."""
    out = Path(trial_dir)
    out.mkdir(parents=True, exist_ok=True)
    record: dict = {"model": model, "point": point, "status": "running", "started": time.time()}
    _write(out / RECORD, record)  # an interrupted trial is still listed (as interrupted)
    t0 = time.perf_counter()
    torch.set_num_threads(settings["cpus_per_trial"])  # a trial gets its declared CPUs, not the machine
    with open(out / LOG, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            metrics = _train_and_build(model, point, settings, build, out, record)
        except Exception as e:  # noqa: BLE001 - any failure makes the trial failed, recorded with its reason
            traceback.print_exc()
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            record.update(status="failed", reason=reason, wall_s=round(time.perf_counter() - t0, 1),
                          ended=time.time())
            _write(out / RECORD, record)
            raise TrialFailed(f"trial {out.name} failed: {reason}") from e
    metrics["wall_s"] = round(time.perf_counter() - t0, 1)
    record.update(status="verified", metrics=metrics, ended=time.time())
    _write(out / RECORD, record)
    return metrics


def _train_and_build(model: str, point: dict, settings: dict, build: dict, out: Path, record: dict) -> dict:
    method, amount = parse_prune(point.get("prune", "none"))
    parent = parent_checkpoint(model, settings["parent"])
    ckpt = out / CHECKPOINT
    t0 = time.perf_counter()
    card = train.train(model, weight_bits=point["weight_bits"], act_bits=point["act_bits"],
                       epochs=point.get("epochs", settings["epochs"]), batch_size=settings["batch_size"],
                       lr=point.get("lr", settings["lr"]), seed=settings["seed"], device="cpu", augment=None,
                       limit=settings["train_images"] or None, out=ckpt, progress=False, init=parent,
                       prune=method, prune_amount=amount)
    train_s = time.perf_counter() - t0
    record.update(checkpoint=CHECKPOINT, parent=None if parent is None else str(parent))
    cfg = build_config(model, point, settings, build, ckpt)
    t1 = time.perf_counter()
    rep = api.build_config(cfg, out_dir=out / BUILD, progress=False)
    build_s = time.perf_counter() - t1
    build_dir = Path(BUILD) / (model + backends.get(cfg.backend).suffix)
    record["build"] = str(build_dir)
    if not is_verified(rep):
        raise TrialFailed(f"not bit-exact: {rep.get('exact_matches')}/{rep.get('n_images')} images ==")
    hw_acc = (rep.get("accuracy") or {}).get("csim")
    if hw_acc is None:
        hw_acc = (rep.get("accuracy") or {}).get("quantized")
    return {"accuracy": card["test_accuracy"], "test_images": card["test_images"], "hw_accuracy": hw_acc,
            "exact_matches": rep["exact_matches"], "n_images": rep["n_images"], **cost(rep),
            "sparsity": _overall_sparsity(card.get("sparsity")), "train_s": round(train_s, 1),
            "build_s": round(build_s, 1)}


def _overall_sparsity(sparsity: dict | None) -> float | None:
    """Fraction of integer weight codes that are zero over all layers (None when the trial did not prune)."""
    total = (sparsity or {}).get("_total")
    if not total or not total.get("weights"):
        return None
    return round(total["zero_int_weights"] / total["weights"], 4)


def _write(path: Path, record: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(tmp, path)
