"""#15: never lose a good build. The runner's promises, each reproduced from the issue's report:
a lock per build folder (items 1, 8), partial runs apart from the build (item 2), every step a start step
(item 3), one exchange for the swap (item 12), no file or link hidden as a build (item 13)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fpga_flow import BuildConfig, FlowError, api, backends, fuzz, runner
from tests.conftest import needs_gxx

SPEC = fuzz.ModelSpec("dense", (4,), 4, False, (fuzz.LayerSpec(2, 4, 4, "Int32Bias", "none"),), "linear")


def _build(out, **kw) -> dict:
    x, _ = fuzz.inputs(SPEC, 8)
    cfg = BuildConfig(model="m", n_images=8, stock_check_images=0, device="cpu")
    return api.build(fuzz.make_module(SPEC, x), SPEC.input_shape, name="m", out_dir=out, config=cfg, images=x,
                     progress=False, **kw)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("rel")
    rep = _build(out)
    assert rep["exact_matches"] == rep["n_images"] == 8
    return out


@pytest.mark.csim
@needs_gxx
def test_stop_step_never_replaces_the_verified_build(built):
    before = (built / "m" / "report.json").read_bytes()
    listing = sorted(p.name for p in (built / "m").iterdir())
    _build(built, stop_step="export")
    assert (built / "m" / "report.json").read_bytes() == before
    assert sorted(p.name for p in (built / "m").iterdir()) == listing
    assert sorted(p.name for p in (built / "m.partial").iterdir()) == ["00_export.onnx", "00_export.onnx.data"] \
        or (built / "m.partial" / "00_export.onnx").is_file()


@pytest.mark.csim
@needs_gxx
@pytest.mark.parametrize("step", [s.__name__.removeprefix("step_") for s in backends.get("hls4ml").steps][1:])
def test_every_step_can_be_the_start_step(built, step):
    """Resumed at any step after a full build: the run completes, verifies and replaces the build."""
    rep = _build(built, start_step=step)
    assert rep["exact_matches"] == rep["n_images"] == 8 and rep["mismatches"] == 0
    assert not (built / "m.partial").exists()  # a complete run clears the partial one


@pytest.mark.csim
@needs_gxx
def test_resume_from_a_partial_run(tmp_path):
    _build(tmp_path, stop_step="golden")
    assert not (tmp_path / "m").exists() and (tmp_path / "m.partial" / "golden.npz").is_file()
    rep = _build(tmp_path, start_step="convert")
    assert rep["exact_matches"] == 8 and (tmp_path / "m" / "hls").is_dir() and not (tmp_path / "m.partial").exists()


@pytest.mark.unit
def test_a_second_command_waits_for_the_build_lock(tmp_path):
    """While one command holds build/m (a live run, perhaps in another PID namespace: no PID is compared),
    another neither deletes its staging folder nor swaps anything in: it waits."""
    out = tmp_path / "m"
    staging = tmp_path / ".m.tmp-live"
    staging.mkdir()
    got, said = threading.Event(), []
    with runner.build_lock(out):
        def second():
            with runner.build_lock(out, said.append):
                got.set()
        t = threading.Thread(target=second)
        t.start()
        time.sleep(1.5)
        assert not got.is_set() and staging.is_dir()
        assert said and "waiting for another fpga-flow command" in said[0]
    t.join(10)
    assert got.is_set()


@pytest.mark.unit
def test_swap_is_one_exchange(tmp_path):
    new, out = tmp_path / ".m.tmp-x", tmp_path / "m"
    new.mkdir()
    out.mkdir()
    (new / "v").write_text("new")
    (out / "v").write_text("old")
    assert runner._exchange(new, out)  # Linux renameat2(RENAME_EXCHANGE): no moment without a build
    assert (out / "v").read_text() == "new" and (new / "v").read_text() == "old"
    runner.swap_in(new, out)  # swaps back and removes the staging side
    assert (out / "v").read_text() == "old" and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_a_file_or_link_at_the_build_path_is_refused_not_hidden(tmp_path, kind):
    out = tmp_path / "m"
    if kind == "file":
        out.write_text("mine")
    else:
        (tmp_path / "elsewhere").mkdir()
        out.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FlowError, match="not a build folder"):
        _build(tmp_path)
    assert out.is_symlink() if kind == "symlink" else out.read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.unit
def test_report_json_is_valid_json_with_non_finite_values():
    from fpga_flow import report
    import json
    text = report.dump({"a": float("inf"), "b": [float("nan"), 1.0], "c": np.float64("inf")})
    assert json.loads(text) == {"a": None, "b": [None, 1.0], "c": None}


@pytest.mark.csim
@needs_gxx
def test_a_relative_out_dir_builds(tmp_path, monkeypatch):
    """The default --out is the relative `build`: the csim runs its binary from another folder, so every path
    the steps hand on must be absolute (this failed with 'cannot write the build directory' once)."""
    monkeypatch.chdir(tmp_path)
    rep = _build("build")
    assert rep["exact_matches"] == 8 and (tmp_path / "build" / "m" / "report.json").is_file()
    assert rep["project_dir"] == "build/m/hls"  # shown relative to where the command ran, no machine path
