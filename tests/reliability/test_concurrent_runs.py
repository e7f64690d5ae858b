"""Issue #15 item 1: a `csim` running beside an `hls` of the same build silently put back the older project
(`hls` reported success, `build/convnet` held the old one). Now every command holds the build folder's lock
from the moment it reads the build to the moment it replaces it: the second command waits, then starts from
the build the first one left, so the newest build is never reverted.

Stand-in steps (the runner is under test): "hls" writes a project version after a pause; "csim" resumes from
the build, as `make csim` does, and records the version it verified."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fpga_flow import BuildConfig, runner

pytestmark = pytest.mark.unit


def _state(tmp_path) -> runner.State:
    return runner.State(cfg=BuildConfig(model="m"), name="m", module=None, input_shape=(1,), out_dir=tmp_path / "m",
                        x=np.zeros((1, 1), np.float32), progress=False)


def test_a_csim_beside_an_hls_never_reverts_the_newer_build(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "project").write_text("old")
    hls_started = threading.Event()

    def step_generate(state):
        hls_started.set()
        time.sleep(1.5)  # the csim below starts meanwhile
        state.path("project").write_text("new")
        return state

    def step_verify(state):
        state.path("verified").write_text(state.path("project").read_text())
        return state

    steps = [step_generate, step_verify]
    hls = threading.Thread(target=runner.run, args=(_state(tmp_path), steps, steps))
    hls.start()
    assert hls_started.wait(10)
    runner.run(_state(tmp_path), steps[1:], steps)  # `csim`: resumes at the verify step, from the build
    hls.join(10)
    assert (tmp_path / "m" / "project").read_text() == "new"  # the newer build stays
    assert (tmp_path / "m" / "verified").read_text() == "new"  # and the csim verified it, not the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m"]
