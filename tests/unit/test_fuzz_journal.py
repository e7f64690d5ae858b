"""`make fuzz N=300` takes hours here: its journal lets the run stop and resume without rebuilding a model,
and without ever mixing models of another run or of a changed generator (issue #15, done-when)."""

from __future__ import annotations

import json

import pytest

from fpga_flow import FlowError, fuzz


@pytest.fixture
def builds(monkeypatch):
    """run_one replaced by a recorder: which models were built (by name), each 'exact' in no time."""
    built: list[str] = []

    def fake_run_one(spec, out_dir, name, *args, **kwargs):
        built.append(name)
        return fuzz.Outcome("exact", spec=spec.to_json(), seconds=0.01)

    monkeypatch.setattr(fuzz, "run_one", fake_run_one)
    return built


@pytest.mark.unit
def test_resume_builds_only_the_models_not_journalled(builds, tmp_path):
    j = tmp_path / "j.jsonl"
    first, _ = fuzz.fuzz(3, seed=7, out_dir=tmp_path, progress=False, journal=j)
    assert builds == ["fz0", "fz1", "fz2"] and len(first) == 3
    assert len(j.read_text().splitlines()) == 1 + 3  # the run's header, one line per model
    again, summary = fuzz.fuzz(5, seed=7, out_dir=tmp_path, progress=False, journal=j)
    assert builds == ["fz0", "fz1", "fz2", "fz3", "fz4"]  # 0..2 came from the journal
    assert [o.spec for o in again[:3]] == [json.loads(json.dumps(o.spec)) for o in first]
    assert "models tried: 5" in summary and "resumed from" in summary and "3 models from earlier runs" in summary
    # the same models as one uninterrupted run draws
    one_run, _ = fuzz.fuzz(5, seed=7, out_dir=tmp_path, progress=False)
    assert [o.spec for o in one_run] == [fuzz.ModelSpec.from_json(o.spec).to_json() for o in again]


@pytest.mark.unit
def test_a_torn_last_line_is_cut_and_that_model_rebuilt(builds, tmp_path):
    j = tmp_path / "j.jsonl"
    fuzz.fuzz(2, seed=3, out_dir=tmp_path, progress=False, journal=j)
    text = j.read_text()
    j.write_text(text[: len(text) - 20])  # killed while writing model 1's line
    builds.clear()
    out, _ = fuzz.fuzz(2, seed=3, out_dir=tmp_path, progress=False, journal=j)
    assert builds == ["fz1"] and len(out) == 2
    assert all(json.loads(ln) for ln in j.read_text().splitlines())  # every line whole again


@pytest.mark.unit
@pytest.mark.parametrize("other", [{"seed": 4}, {"n_images": 8}, {"stock_check": 0}])
def test_a_journal_of_another_run_is_refused(builds, tmp_path, other):
    j = tmp_path / "j.jsonl"
    fuzz.fuzz(1, seed=3, out_dir=tmp_path, progress=False, journal=j)
    kw = {"seed": 3, **other}
    with pytest.raises(FlowError, match="journal of another run"):
        fuzz.fuzz(1, out_dir=tmp_path, progress=False, journal=j, **kw)


@pytest.mark.unit
def test_a_changed_generator_is_refused(builds, tmp_path):
    j = tmp_path / "j.jsonl"
    fuzz.fuzz(2, seed=3, out_dir=tmp_path, progress=False, journal=j)
    lines = j.read_text().splitlines()
    rec = json.loads(lines[1])
    rec["spec"]["input_bits"] = 1 + rec["spec"]["input_bits"]
    j.write_text("\n".join([lines[0], json.dumps(rec), lines[2]]) + "\n")
    with pytest.raises(FlowError, match="spec differs"):
        fuzz.fuzz(2, seed=3, out_dir=tmp_path, progress=False, journal=j)


@pytest.mark.unit
def test_not_a_journal_is_refused(builds, tmp_path):
    j = tmp_path / "j.jsonl"
    j.write_text("hello\n{}\n")
    with pytest.raises(FlowError, match="not a fuzz journal|another run"):
        fuzz.fuzz(1, seed=0, out_dir=tmp_path, progress=False, journal=j)
