"""Design-space sweeps on Ray Tune: ``fpga-flow sweep --model convnet --space default``.

Each trial fine-tunes the model at one point of the space (bits, pruning, reuse factor or target fps), builds
it with the chosen backend, verifies it ``==`` and reads its cost (the hls4ml backend's analytic ESTIMATE, or the
rtl backend's MEASURED yosys counts and Verilator cycles). The search runs on Ray Tune, locally by default or on
a cluster (``--address`` / ``RAY_ADDRESS``), resumable (``--resume``: Tune's own experiment state). The result
is a table (CSV, JSON), a Pareto plot and report.md in the sweep folder (docs/sweep.md).

Modules: :mod:`.space` (the space file), :mod:`.trial` (one trial, no Ray), :mod:`.engine` (Ray Tune),
:mod:`.report` (table, Pareto set, plot).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from ..errors import FlowError
from ..resources import DEFAULT_OUT, shown
from . import engine, report, space

__all__ = ["DESCRIPTION", "EPILOG", "add_args", "main", "run_sweep"]

DESCRIPTION = textwrap.fill("Search a space of recipes (weight/activation bits, pruning, hls4ml reuse factor or rtl target fps) "
               "on Ray Tune. Each trial fine-tunes the model at its point, builds it with the space's backend, "
               "verifies it == the integer golden and reads its cost: hls4ml's analytic ESTIMATE, or the rtl "
               "backend's MEASURED yosys counts and Verilator cycles. A trial that is not == is a failed trial, "
               "never a point. Local by default; a cluster with --address or RAY_ADDRESS.", 100)

EPILOG = """\
examples:
  fpga-flow sweep --model convnet                      the shipped default space (8 trials, hls4ml estimate)
  fpga-flow sweep --model convnet --space convnet_bench  the 24-trial space of docs/bench/sweep.md
  fpga-flow sweep --model mlp_tiny --space my.toml -n 200 --epochs 1
  RAY_AUTH_MODE=token RAY_ADDRESS=127.0.0.1:6379 fpga-flow sweep ...   the same sweep on a running Ray cluster
  fpga-flow sweep --model convnet --resume              continue an interrupted sweep (finished trials kept)
  fpga-flow sweep --model convnet --report-only         rewrite the table, plot and report.md

outputs (in --out, default build/sweep/<model>): report.md, results.csv, results.json, pareto.png, space.json,
tune/ (Ray Tune's experiment; one folder per trial: checkpoint.pt, build/, trial.log, trial.json).
exit codes: 0 every trial verified; 3 a trial was not bit-exact; 1 another trial failure or a usage error;
2 Ray Tune is not installed (pip install -e '.[sweep]').
"""


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", default="convnet", help="a shipped model (default convnet)")
    p.add_argument("--space", default="default", metavar="FILE|NAME",
                   help=f"space file (TOML: [sweep], [space], [build]; docs/sweep.md) or a shipped one: "
                        f"{', '.join(space.shipped())} (default: default)")
    p.add_argument("--out", metavar="DIR", help="sweep folder (default build/sweep/<model>)")
    p.add_argument("--address", metavar="ADDR", help="Ray cluster to run on (default: $RAY_ADDRESS, else a local "
                   "Ray instance started for the sweep)")
    p.add_argument("--cpus", type=int, metavar="N", help="CPUs of the local Ray instance (default: all cores)")
    p.add_argument("--trials", "--num-samples", dest="num_samples", type=int, metavar="K",
                   help="grid: repeats of the grid; random search: points drawn (default: the space file's)")
    p.add_argument("--max-concurrent", type=int, metavar="K", help="trials at once (default: the space file's; "
                   "0 = as many as the CPUs allow)")
    p.add_argument("--cpus-per-trial", type=int, metavar="N", help="Ray resources of one trial (default 1)")
    p.add_argument("-n", "--images", dest="n_images", type=int, metavar="N",
                   help="test images each trial's build verifies == (default: the space file's)")
    p.add_argument("--epochs", type=int, help="fine-tune epochs per trial (default: the space file's)")
    p.add_argument("--train-images", type=int, metavar="N",
                   help="train each trial on the first N training images only (smoke runs; default: all)")
    p.add_argument("--resume", action="store_true", help="continue the sweep in --out from Ray Tune's experiment "
                   "state: finished trials are kept, unfinished ones run again")
    p.add_argument("--retry-failed", action="store_true", help="with --resume: run the failed trials again too "
                   "(after fixing what made them fail; by default a failed trial stays failed)")
    p.add_argument("--report-only", action="store_true", help="only rewrite report.md, the table and the plot")
    p.add_argument("--quiet", "-q", action="store_true", help="no line per trial")


def run_sweep(model: str, sp: space.Space, out: str | Path, address: str | None = None, resume: bool = False,
              cpus: int | None = None, trial_fn: engine.TrialFn | None = None, progress: bool = True,
              retry_failed: bool = False) -> Path:
    """Run (or resume) a sweep and write its report; returns report.md's path."""
    out = Path(out).resolve()
    engine.check_out(out, resume)  # before anything is written into a folder that holds another sweep
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        (out / report.SPACE_RECORD).write_text(json.dumps(space.as_dict(sp), indent=1) + "\n")
    exp = engine.run(model, sp, out, address=address, resume=resume, cpus=cpus,
                     trial_fn=trial_fn or engine.run_trial, progress=progress, retry_failed=retry_failed)
    return report.write(out, model, sp, exp)


def _space_for(a: argparse.Namespace, out: Path) -> space.Space:
    recorded = out / report.SPACE_RECORD
    if (a.resume or a.report_only) and recorded.is_file():  # the space the sweep was started with
        return space.from_dict(json.loads(recorded.read_text()), shown(recorded))
    sp = space.load(a.space)
    return sp.with_settings(num_samples=a.num_samples, max_concurrent=a.max_concurrent, n_images=a.n_images,
                            epochs=a.epochs, train_images=a.train_images, cpus_per_trial=a.cpus_per_trial)


def main(a: argparse.Namespace) -> int:
    from .. import zoo
    if a.model not in zoo.names():
        raise FlowError(f"unknown model {a.model!r}; the sweep takes a shipped model: {', '.join(zoo.names())}")
    out = Path(a.out) if a.out else DEFAULT_OUT / "sweep" / a.model
    sp = _space_for(a, out)
    if a.report_only:
        exp = out / engine.EXPERIMENT
        if not exp.is_dir():
            raise FlowError(f"no sweep in {shown(out)} to report on")
        path = report.write(out.resolve(), a.model, sp, exp)
    else:
        if a.retry_failed and not a.resume:
            raise FlowError("--retry-failed goes with --resume (it reruns the failed trials of an existing sweep)")
        path = run_sweep(a.model, sp, out, address=a.address, resume=a.resume, cpus=a.cpus, progress=not a.quiet,
                         retry_failed=a.retry_failed)
    rows = report.collect(out.resolve() / engine.EXPERIMENT)
    ok = sum(r["status"] == "verified" for r in rows)
    print(f"{ok}/{len(rows)} trial(s) verified ==; cost: {report.cost_label(rows)}")
    print(f"report: {shown(path)} (table: {shown(path.parent / report.RESULTS_CSV)}"
          + (f", plot: {shown(path.parent / report.PLOT)})" if (path.parent / report.PLOT).is_file() else ")"))
    sys.stdout.flush()
    bad = [r for r in rows if r["status"] != "verified"]
    if any("not bit-exact" in (r.get("reason") or "") or "VerificationError" in (r.get("reason") or "")
           for r in bad):
        return 3
    return 1 if bad else 0
