"""Issue #17 item 4: a small sweep on a local Ray Tune instance proves the plumbing end to end. mlp_tiny, 3
trials, a few hundred training images, 20 test images: real fine-tunes, real hls4ml builds verified == in g++
csim. One trial's build is made to fail verification (the trial function below raises VerificationError for
it, as run_trial does for a build that is not ==): it must be a failed trial, never a point of the table's
Pareto set or the plot. Then --resume reruns nothing, and starting over on the same folder is refused."""

from __future__ import annotations

import csv
import json
import os

import pytest

from fpga_flow.errors import FlowError, VerificationError
from fpga_flow.sweep import report, run_sweep, space
from fpga_flow.sweep.trial import RECORD, run_trial
from tests.conftest import needs_gxx

ray = pytest.importorskip("ray", reason="the sweep extra (ray[tune]) is not installed: pip install -e '.[sweep]'")

pytestmark = [pytest.mark.sweep, pytest.mark.csim, needs_gxx]

FAULTY = "unstructured:0.25"


def fail_one(model: str, point: dict, settings: dict, build: dict, trial_dir: str) -> dict:
    """run_trial, except that the FAULTY point fails verification (module level: Ray workers import it)."""
    if point["prune"] == FAULTY:
        raise VerificationError("injected: csim != golden on image 0")
    return run_trial(model, point, settings, build, trial_dir)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("sweep") / "mlp_tiny"
    sp = space.from_dict({"sweep": {"epochs": 1, "train_images": 256, "n_images": 20, "max_concurrent": 2},
                          "space": {"prune": ["none", "unstructured:0.5", FAULTY]},
                          "build": {"stock_check_images": 0}}, "test")
    os.environ.pop("RAY_ADDRESS", None)
    path = run_sweep("mlp_tiny", sp, out, cpus=2, trial_fn=fail_one, progress=False)
    return out, sp, path


def test_every_plotted_trial_is_verified_and_the_failed_one_is_not(sweep):
    out, sp, path = sweep
    rows = list(csv.DictReader(open(out / report.RESULTS_CSV)))
    assert sorted((r["prune"], r["status"]) for r in rows) == [
        ("none", "verified"), (FAULTY, "failed"), ("unstructured:0.5", "verified")]
    for r in rows:
        d = out / "tune" / r["trial"]
        if r["status"] == "verified":
            rep = json.loads((d / "build" / "mlp_tiny" / "report.json").read_text())  # the trial's own folder
            assert rep["exact_matches"] == rep["n_images"] == int(r["exact_matches"]) == 20
            assert rep["mismatches"] == 0
            assert (d / "checkpoint.pt").is_file() and r["cost_kind"] == "estimate"
            assert json.loads((d / RECORD).read_text())["status"] == "verified"
        else:
            assert r["pareto"] == "False" and "injected" in r["reason"] and r["lut"] == ""
    assert (out / report.PLOT).is_file() and (out / report.RESULTS_JSON).is_file()
    md = path.read_text()
    assert "2 verified" in md and "cost: **estimate**" in md and "fpga-flow hls --config" in md


def test_resume_reruns_nothing_and_a_second_start_is_refused(sweep):
    out, sp, _ = sweep
    records = sorted((out / "tune").glob(f"*/{RECORD}"))
    before = {p: p.stat().st_mtime_ns for p in records}
    with pytest.raises(FlowError, match="--resume"):
        run_sweep("mlp_tiny", sp, out, cpus=2, trial_fn=fail_one, progress=False)
    run_sweep("mlp_tiny", sp, out, resume=True, cpus=2, trial_fn=fail_one, progress=False)
    assert {p: p.stat().st_mtime_ns for p in records} == before  # finished and failed trials were kept as they were
    assert len(list(csv.DictReader(open(out / report.RESULTS_CSV)))) == 3
