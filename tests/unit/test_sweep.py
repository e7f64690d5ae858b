"""Issue #17 without Ray: the space file is checked before any work, a trial that is not bit-exact fails and is
recorded so, the Pareto set and the plot hold verified trials only, and each cost says how it was obtained."""

from __future__ import annotations

import csv
import json

import pytest

from fpga_flow import cli
from fpga_flow.errors import FlowError, VerificationError
from fpga_flow.sweep import engine, report, space, trial

pytestmark = pytest.mark.unit


def _space(**over) -> space.Space:
    doc = {"sweep": {"n_images": 20}, "space": {"weight_bits": [2, 4], "prune": ["none", "unstructured:0.5"]}}
    for table, values in over.items():
        doc.setdefault(table, {}).update(values)
    return space.from_dict(doc, "t.toml")


def test_shipped_spaces_are_found_by_name_and_are_valid():
    assert {"default", "convnet_bench"} <= set(space.shipped())
    default = space.load("default")
    assert default.settings["backend"] == "hls4ml"
    assert default.n_trials() == default.grid_size() == 8
    assert space.load("convnet_bench").n_trials() >= 24  # the benchmark of docs/bench/sweep.md


def test_a_space_file_path_is_read(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('[sweep]\nsearch = "random"\nnum_samples = 5\n[space]\nact_bits = [2, 3, 4]\n')
    s = space.load(p)
    assert (s.settings["search"], s.n_trials(), s.axes) == ("random", 5, {"act_bits": [2, 3, 4]})


@pytest.mark.parametrize("doc, words", [
    ({"space": {"weight_bit": [2]}}, "unknown axis 'weight_bit'"),
    ({"space": {"weight_bits": [2, 9]}}, "weight_bits value 9 must be an integer 2..8"),
    ({"space": {"weight_bits": 2}}, "weight_bits must be a non-empty list"),
    ({"space": {"prune": ["unstructured"]}}, "prune value 'unstructured'"),
    ({"space": {"prune": ["structured:1.5"]}}, "prune value 'structured:1.5'"),
    ({"space": {"target_fps": [1000]}}, "target_fps applies to the rtl backend, not hls4ml"),
    ({"sweep": {"backend": "rtl"}, "space": {"reuse_factor": [2]}}, "reuse_factor applies to the hls4ml backend"),
    ({"sweep": {"backend": "finn"}, "space": {"act_bits": [2]}}, "backend = 'finn' must be one of hls4ml, rtl"),
    ({"sweep": {"epoch": 2}, "space": {"act_bits": [2]}}, "[sweep] unknown key(s) epoch"),
    ({"sweep": {"objectives": ["lut:max", "speed:min"]}, "space": {"act_bits": [2]}}, "objective 'speed:min'"),
    ({"space": {"act_bits": [2]}, "build": {"weight_bits": 3}}, "[build] must not set weight_bits"),
    ({"space": {"act_bits": [2]}, "build": {"part": 7}}, "part = 7 must be str"),
    ({"space": {"act_bits": [2, 2]}}, "lists a value twice"),
    ({"space": {}}, "[space] must be a table with at least one axis"),
    ({"spaces": {}}, "unknown table(s) spaces"),
])
def test_space_errors_name_the_key_and_what_is_allowed(doc, words):
    with pytest.raises(FlowError) as e:
        space.from_dict(doc, "t.toml")
    assert words in str(e.value) and "t.toml" in str(e.value)


def test_an_unknown_space_name_lists_the_shipped_ones():
    with pytest.raises(FlowError, match="shipped space: .*default"):
        space.resolve("no_such_space")


def test_cli_flags_override_the_space_file_and_are_checked():
    s = _space().with_settings(n_images=7, epochs=None)
    assert (s.settings["n_images"], s.settings["epochs"]) == (7, 1)
    with pytest.raises(FlowError, match="n_images = 0"):
        _space().with_settings(n_images=0)


def test_labels_name_the_point():
    assert engine.label({"weight_bits": 2, "act_bits": 4, "prune": "unstructured:0.5", "reuse_factor": 4}) == \
        "w2a4_u50_rf4"
    assert engine.label({"weight_bits": 4, "act_bits": 4, "prune": "none", "target_fps": 5000}) == "w4a4_fps5000"


def _hls_report(exact: int, n: int) -> dict:
    res = {k: {"raw": v, "value": v} for k, v in (("lut", 1200), ("ff", 900), ("dsp", 3), ("bram18k", 2))}
    return {"backend": "hls4ml", "n_images": n, "exact_matches": exact, "mismatches": n - exact,
            "accuracy": {"csim": 0.9, "quantized": 0.9},
            "hw": {"estimate": {"resources": res, "throughput_per_s": 1000.0, "method": "analytic model"}}}


def test_cost_says_estimate_or_measured():
    c = trial.cost(_hls_report(20, 20))
    assert (c["lut"], c["dsp"], c["bram18"], c["fps"], c["cost_kind"]) == (1200, 3, 2, 1000.0, "estimate")
    rtl = {"backend": "rtl", "hw": {"rtl": {"yosys": {"LUT": 500, "FF": 400, "DSP": 1, "BRAM18": 0,
                                                         "how": "yosys synth_xilinx count", "part": "xc7z020"},
                                              "cycles": {"how": "Verilator simulation"},
                                              "images_per_s_at_clock": 6000.0}}}
    c = trial.cost(rtl)
    assert (c["lut"], c["fps"], c["cost_kind"]) == (500, 6000.0, "measured")
    assert "yosys" in c["cost_how"] and "Verilator" in c["cost_how"]
    rtl["hw"]["rtl"].pop("yosys")
    rtl["hw"]["rtl"]["folding"] = {"model_cost": {"lut": 9, "ff": 8, "dsp": 0, "bram18": 1}}
    assert trial.cost(rtl)["cost_kind"] == "estimate"  # synth off: the cost model, never called measured


@pytest.mark.parametrize("exact, n, ok", [(20, 20, True), (19, 20, False), (0, 0, False)])
def test_only_all_images_equal_is_verified(exact, n, ok):
    assert trial.is_verified(_hls_report(exact, n)) is ok


def _fake_flow(monkeypatch, exact: int):
    """train and build replaced: a card, and a report with ``exact`` of 20 images ==."""
    seen = {}

    def fake_train(model, **kw):
        seen["train"] = kw
        return {"test_accuracy": 0.95, "test_images": 10000, "sparsity": {"_total": {
            "weights": 100, "zero_int_weights": 50}}}

    def fake_build(cfg, out_dir, progress):
        seen["cfg"] = cfg
        if exact < 0:
            raise VerificationError("csim differs from the golden at image 3")
        return _hls_report(exact, 20)

    monkeypatch.setattr(trial.train, "train", fake_train)
    monkeypatch.setattr(trial.api, "build_config", fake_build)
    return seen


POINT = {"weight_bits": 2, "act_bits": 4, "prune": "unstructured:0.5", "reuse_factor": 4}


def test_a_verified_trial_records_its_metrics_and_passes_its_point_on(monkeypatch, tmp_path):
    seen = _fake_flow(monkeypatch, 20)
    s = _space()
    m = trial.run_trial("convnet", POINT, s.settings, {"part": "xc7z020clg400-1"}, tmp_path / "t")
    assert (m["accuracy"], m["exact_matches"], m["n_images"], m["lut"], m["sparsity"]) == (0.95, 20, 20, 1200, 0.5)
    rec = json.loads((tmp_path / "t" / trial.RECORD).read_text())
    assert rec["status"] == "verified" and rec["metrics"]["cost_kind"] == "estimate"
    cfg = seen["cfg"]
    assert (cfg.weight_bits, cfg.act_bits, cfg.reuse_factor, cfg.n_images, cfg.workers) == (2, 4, 4, 20, 1)
    assert cfg.checkpoint == str(tmp_path / "t" / trial.CHECKPOINT)
    kw = seen["train"]
    assert (kw["prune"], kw["prune_amount"], kw["epochs"], kw["init"].name) == ("unstructured", 0.5, 1,
                                                                              "convnet_w4a4.pt")


@pytest.mark.parametrize("exact", [19, -1])  # a report short of ==, and a build that raises VerificationError
def test_a_trial_that_is_not_bit_exact_fails(monkeypatch, tmp_path, exact):
    _fake_flow(monkeypatch, exact)
    with pytest.raises(trial.TrialFailed):
        trial.run_trial("convnet", POINT, _space().settings, {}, tmp_path / "t")
    rec = json.loads((tmp_path / "t" / trial.RECORD).read_text())
    assert rec["status"] == "failed" and "metrics" not in rec
    assert ("19/20" if exact == 19 else "VerificationError") in rec["reason"]


def _fake_experiment(tmp_path) -> tuple:
    """An experiment folder as Ray Tune and run_trial leave it: 3 verified trials, 1 failed (which would
    dominate everything if it were counted), 1 never run."""
    exp = tmp_path / "tune"
    trials = [("t0", {"weight_bits": 4, "prune": "none"}, 0.99, 5000),
              ("t1", {"weight_bits": 2, "prune": "none"}, 0.97, 2000),
              ("t2", {"weight_bits": 2, "prune": "unstructured:0.5"}, 0.96, 3000)]  # dominated by t1
    for name, point, acc, lut in trials:
        d = exp / name
        d.mkdir(parents=True)
        (d / "params.json").write_text(json.dumps(point))
        metrics = {"accuracy": acc, "test_images": 10000, "hw_accuracy": acc, "exact_matches": 20, "n_images": 20,
                   "lut": lut, "ff": 1, "dsp": 0, "bram18": 0, "fps": 1000.0 + lut, "cost_kind": "estimate",
                   "cost_how": "estimate: analytic model", "wall_s": 30.0}
        (d / trial.RECORD).write_text(json.dumps({"status": "verified", "metrics": metrics, "build": "build/convnet"}))
    bad = exp / "t3"
    bad.mkdir()
    (bad / "params.json").write_text(json.dumps({"weight_bits": 3, "prune": "none"}))
    (bad / trial.RECORD).write_text(json.dumps({"status": "failed", "reason": "TrialFailed: not bit-exact: 19/20",
                                                "metrics": None}))
    (bad / "error.txt").write_text("Traceback\nTrialFailed: not bit-exact\n")
    (exp / "t4").mkdir()
    (exp / "t4" / "params.json").write_text(json.dumps({"weight_bits": 8, "prune": "none"}))
    return exp


def test_pareto_set_and_table_hold_verified_trials_only(tmp_path):
    exp = _fake_experiment(tmp_path)
    s = _space()
    rows = report.collect(exp)
    assert [r["status"] for r in rows] == ["verified"] * 3 + ["failed", "not run"]
    assert [r["trial"] for r in report.pareto(rows, s.objectives)] == ["t1", "t0"]
    path = report.write(tmp_path, "convnet", s, exp)
    table = list(csv.DictReader(open(tmp_path / report.RESULTS_CSV)))
    assert [(r["trial"], r["status"], r["pareto"]) for r in table] == [
        ("t0", "verified", "True"), ("t1", "verified", "True"), ("t2", "verified", "False"),
        ("t3", "failed", "False"), ("t4", "not run", "False")]
    assert (tmp_path / report.PLOT).is_file()
    md = path.read_text()
    assert "cost: **estimate**" in md and "not bit-exact: 19/20" in md
    pareto_part = md.split("## Pareto set")[1].split("## Failed")[0]
    assert "### t1:" in pareto_part and "### t0:" in pareto_part and "t2" not in pareto_part
    assert "fpga-flow hls --config" in pareto_part and "--prune" not in pareto_part
    assert "fpga-flow train --model convnet --weight-bits 2" in pareto_part
    assert "--init models/checkpoints/convnet_w4a4.pt" in pareto_part


def test_the_plot_draws_only_verified_points(tmp_path, monkeypatch):
    exp = _fake_experiment(tmp_path)
    drawn = []
    import matplotlib.axes
    real = matplotlib.axes.Axes.scatter

    def spy(self, x, y, *a, **kw):
        drawn.append(list(x))
        return real(self, x, y, *a, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", spy)
    report.write(tmp_path, "convnet", _space(), exp)
    # every series drawn holds LUTs of verified trials only (the failed t3 has none to draw)
    assert drawn and all(set(xs) <= {5000, 2000, 3000} for xs in drawn)
    assert sorted(drawn[0]) == [2000, 3000, 5000]


def test_cli_help_and_usage_errors():
    p = cli.parser()
    with pytest.raises(SystemExit) as e:
        p.parse_args(["sweep", "--trials", "x"])
    assert e.value.code == 1
    a = p.parse_args(["sweep", "--model", "mlp_tiny", "--space", "default", "--address", "h:1", "--resume",
                      "--max-concurrent", "2", "-n", "30", "--epochs", "2", "--trials", "3"])
    assert (a.model, a.address, a.resume, a.max_concurrent, a.n_images, a.epochs, a.num_samples) == (
        "mlp_tiny", "h:1", True, 2, 30, 2, 3)
    assert cli.main(["sweep", "--model", "nonexistent_model"]) == 1


def test_a_failed_trial_replaced_by_retry_failed_is_not_listed(tmp_path):
    """--resume --retry-failed gives a failed trial a new id and folder; Tune's latest experiment state names the
    trials that count, and the old folder (left as it was) is not a row any more."""
    exp = tmp_path / "tune"
    for name, status in (("aa_00000_w4a4", "verified"), ("aa_00001_w2a4", "failed"), ("bb12_w2a4", "verified")):
        (exp / name).mkdir(parents=True)
        (exp / name / trial.RECORD).write_text(json.dumps({"status": status, "point": {"weight_bits": 2}}))
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": [
        [json.dumps({"trial_id": t}), "{}"] for t in ("aa_00000", "aa_00001")]}))
    assert [r["trial"] for r in report.collect(exp)] == ["aa_00000_w4a4", "aa_00001_w2a4"]
    (exp / "experiment_state-2026-01-01_01-00-00.json").write_text(json.dumps({"trial_data": [
        [json.dumps({"trial_id": t}), "{}"] for t in ("aa_00000", "bb12")]}))  # the resumed run's state
    assert [(r["trial"], r["status"]) for r in report.collect(exp)] == [("aa_00000_w4a4", "verified"),
                                                                        ("bb12_w2a4", "verified")]
