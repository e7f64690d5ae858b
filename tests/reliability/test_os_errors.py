"""Issue #15 item 10, the file-system part: an immutable build folder at swap time, a full disk, a file where
``<name>.failed`` goes, and a bad ``plan_info.json`` each end in one line naming the file and what to do (exit 1,
or 3 for not exact), never a traceback, and the previous build is never touched.

The runner is driven with stand-in steps (the runner, not a backend, is under test), so these need no compiler."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest

from fpga_flow import BuildConfig, FlowError, VerificationError, cli, compare, runner
from fpga_flow.backends.hls4ml import steps as hls_steps
from fpga_flow.backends.hls4ml import synth

pytestmark = pytest.mark.unit


def _state(tmp_path) -> runner.State:
    return runner.State(cfg=BuildConfig(model="m"), name="m", module=None, input_shape=(1,), out_dir=tmp_path / "m",
                        x=np.zeros((1, 1), np.float32), progress=False)


def step_write(state):
    state.path("new").write_text("new build")
    return state


def _previous_build(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "old").write_text("previous build")


def _untouched(tmp_path) -> bool:
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
    return (sorted(p.name for p in (tmp_path / "m").iterdir()) == ["old"] and not leftovers
            and (tmp_path / "m" / "old").read_text() == "previous build")


def test_an_immutable_build_folder_at_swap_time_is_one_clear_error(tmp_path, monkeypatch):
    """`chattr +i build/m` makes renameat2 fail with EPERM (chattr needs root, so the call is made to fail)."""
    _previous_build(tmp_path)

    def eperm(a, b):
        raise OSError(errno.EPERM, "Operation not permitted", str(b))
    monkeypatch.setattr(runner, "_exchange", eperm)
    with pytest.raises(FlowError, match="could not put the new build in place") as e:
        runner.run(_state(tmp_path), [step_write], [step_write])
    assert "chattr" in str(e.value) and ".tmp-" not in str(e.value)  # it names no folder that is gone
    assert _untouched(tmp_path)


def test_a_full_disk_keeps_the_previous_build_and_is_one_line(tmp_path, monkeypatch, capsys):
    _previous_build(tmp_path)

    def step_full(state):
        raise OSError(errno.ENOSPC, "No space left on device", str(state.path("golden.npz")))
    with pytest.raises(OSError):
        runner.run(_state(tmp_path), [step_write, step_full], [step_write, step_full])
    assert _untouched(tmp_path)

    # the CLI: one line naming the file, exit 1; --debug shows the traceback instead
    monkeypatch.setattr(cli, "cmd_models", lambda a: step_full(_state(tmp_path)) or 0)
    monkeypatch.setattr(runner.State, "path", lambda self, rel: tmp_path / "m" / rel)
    assert cli.main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'm' / 'golden.npz'}: no space left on the device" in err
    with pytest.raises(OSError):
        cli.main(["--debug", "models"])


def test_a_file_where_the_failed_build_goes_still_gives_exit_3(tmp_path):
    """`build/m.failed` being a file turned exit 3 (not exact) into exit 1."""
    _previous_build(tmp_path)
    (tmp_path / "m.failed").write_text("a file in the way")

    def step_not_exact(state):
        state.comparisons.append(compare.exact("hardware vs golden", np.array([[1.0]]), np.array([[2.0]])))
        return state
    with pytest.raises(VerificationError) as e:
        runner.run(_state(tmp_path), [step_write, step_not_exact], [step_write, step_not_exact])
    assert e.value.exit_code == 3 and "0/1 images bit-exact" in str(e.value)
    assert (tmp_path / "m.failed" / "new").read_text() == "new build"
    assert _untouched(tmp_path)


@pytest.mark.parametrize("text,words", [
    ("{not json", "cannot be read as JSON"),
    ("[1, 2]", "is not a JSON object"),
    ('{"layers": []}', "no valid 'digest'"),
    ('{"digest": 5}', "no valid 'digest'"),
    ('{"digest": "' + "a" * 64 + '", "layers": {"x": 1}}', "'layers' is not a list of objects"),
    (b"\xff\xfe\x00garbage", "cannot be read as JSON"),
])
def test_a_bad_plan_info_is_one_flow_error_naming_it(tmp_path, text, words):
    """Before: JSONDecodeError / KeyError / TypeError tracebacks from `make csim` and `make synth`."""
    work = tmp_path / "m"
    (work / "hls").mkdir(parents=True)
    p = work / "plan_info.json"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    state = _state(tmp_path)
    state.work = work
    state.backend = hls_steps.Hls4mlState()
    with pytest.raises(FlowError, match=words) as e:
        hls_steps.step_csim_build(state)
    assert str(p) in str(e.value) and "make hls MODEL=m" in str(e.value)
    with pytest.raises(FlowError, match=words):
        synth._check_project(work, "m")


def test_a_good_plan_info_loads():
    """The loader accepts what the write step writes (a dict with the project's sha256 and its layers)."""
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "plan_info.json"
        info = {"digest": "0123456789abcdef" * 4, "layers": [{"name": "fc1"}], "other": 1}
        p.write_text(json.dumps(info))
        assert hls_steps.load_plan_info(p, "m") == info

