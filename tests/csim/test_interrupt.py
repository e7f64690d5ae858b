"""Kill the flow mid-build (SIGINT, SIGTERM, SIGKILL): the previous good build stays, the next run recovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fpga_flow import BuildConfig, api, fuzz, runner
from tests.conftest import REPO, needs_gxx

L = fuzz.LayerSpec
SPEC = fuzz.ModelSpec("dense", (9,), 4, False, (L(4, 4, 4, "Int32Bias", "relu"), L(3, 4, 4, "Int32Bias", "none")),
                      "linear", seed=3)

# The child builds SPEC; with a step name it pauses at that step's start (marker file written), so the
# parent can signal it there. "csim_build" with a fresh cache is killed while g++ really runs.
CHILD = r"""
import json, os, signal, sys, time
from pathlib import Path
# a shell that starts jobs in the background (as CI may) leaves SIGINT ignored, and Python then never
# raises KeyboardInterrupt: give the child the handler an interactive user would have
signal.signal(signal.SIGINT, signal.default_int_handler)
import dataclasses
import fpga_flow.backends.hls4ml as H
from fpga_flow import BuildConfig, api, fuzz
out, name, pause, marker, spec = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), sys.argv[5]
spec = fuzz.ModelSpec.from_json(json.loads(spec))
steps = list(H.BACKEND.steps)
for i, step in enumerate(steps):
    if step.__name__ == "step_" + pause:
        def paused(state, _step=step):
            marker.write_text(str(os.getpid()))
            time.sleep(120)
            return _step(state)
        paused.__name__ = step.__name__
        steps[i] = paused
H.BACKEND = dataclasses.replace(H.BACKEND, steps=tuple(steps))
x, _ = fuzz.inputs(spec, 8)
cfg = BuildConfig(model=name, n_images=8, stock_check_images=0, device="cpu")
marker.with_suffix(".ready").write_text("")
try:
    api.build(fuzz.make_module(spec, x), spec.input_shape, name=name, out_dir=out, config=cfg, images=x,
              progress=False)
except KeyboardInterrupt:
    sys.exit(130)
"""

pytestmark = [pytest.mark.csim, needs_gxx]


def _build(out: Path, name: str = "m") -> dict:
    x, _ = fuzz.inputs(SPEC, 8)
    cfg = BuildConfig(model=name, n_images=8, stock_check_images=0, device="cpu")
    return api.build(fuzz.make_module(SPEC, x), SPEC.input_shape, name=name, out_dir=out, config=cfg, images=x,
                     progress=False)


def _snapshot(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def _child(out: Path, pause: str, tmp: Path, env: dict) -> tuple[subprocess.Popen, Path]:
    marker = tmp / f"marker-{pause}"
    script = tmp / "child.py"
    script.write_text(CHILD)
    p = subprocess.Popen([sys.executable, str(script), str(out), "m", pause, str(marker), json.dumps(SPEC.to_json())],
                         cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return p, marker


def _wait_for(cond, p: subprocess.Popen, timeout: float = 240) -> None:
    t0 = time.time()
    while not cond():
        if p.poll() is not None:
            raise AssertionError(f"child ended early ({p.returncode}): {p.stderr.read().decode()[-2000:]}")
        if time.time() - t0 > timeout:
            p.kill()
            raise AssertionError("timed out waiting for the child")
        time.sleep(0.05)


def _compiler_running_under(root: int) -> bool:
    """Whether a C++ compiler process (cc1plus, or g++ itself) descends from pid `root` (Linux /proc)."""
    parent, name = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        pid = int(text.split(" ", 1)[0])
        name[pid] = text[text.index("(") + 1:text.rindex(")")]
        parent[pid] = int(text[text.rindex(")") + 2:].split()[1])
    for pid, comm in name.items():
        if comm in ("cc1plus", "g++", "c++"):
            while pid in parent and pid != root:
                pid = parent[pid]
            if pid == root:
                return True
    return False


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A verified build of SPEC, and an env whose csim cache already holds its binary."""
    root = tmp_path_factory.mktemp("interrupt")
    env = dict(os.environ, PYTHONPATH=str(REPO), FPGA_FLOW_CSIM_CACHE=str(root / "cache"))
    os.environ["FPGA_FLOW_CSIM_CACHE"] = env["FPGA_FLOW_CSIM_CACHE"]
    try:
        rep = _build(root / "out")
    finally:
        os.environ.pop("FPGA_FLOW_CSIM_CACHE")
    return root, env, rep


@pytest.mark.parametrize("step,sig", [
    ("export", signal.SIGINT),
    ("convert", signal.SIGTERM),
    ("csim_run", signal.SIGTERM),
    ("export", signal.SIGKILL),
    ("csim_run", signal.SIGKILL),
])
def test_kill_during_a_step_keeps_the_good_build_and_recovers(good, step, sig, tmp_path, monkeypatch):
    root, env, rep = good
    out = root / "out"
    before = _snapshot(out / "m")
    p, marker = _child(out, step, tmp_path, env)
    _wait_for(marker.is_file, p)
    assert _leftovers(out), "the child should be building in a staging directory"
    p.send_signal(sig)
    try:
        rc = p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()  # never leave a child that would finish its build later and disturb the next test
        raise
    assert _snapshot(out / "m") == before  # the previous good build is intact
    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL and _leftovers(out)  # what a hard kill leaves behind ...
    else:
        assert rc == 130, p.stderr.read().decode()[-2000:]
        assert _leftovers(out) == []  # ... Ctrl-C and SIGTERM clean up themselves
    monkeypatch.setenv("FPGA_FLOW_CSIM_CACHE", env["FPGA_FLOW_CSIM_CACHE"])
    again = _build(out)  # the next run recovers without manual cleanup
    assert again["exact_matches"] == again["n_images"] == 8 and again["digest"] == rep["digest"]
    assert _leftovers(out) == []


def test_kill_during_the_compile_leaves_no_half_written_binary(good, tmp_path, monkeypatch):
    root, env, rep = good
    out = root / "out"
    cache = tmp_path / "fresh-cache"  # nothing cached: the child really runs g++
    env = dict(env, FPGA_FLOW_CSIM_CACHE=str(cache))
    before = _snapshot(out / "m")
    p, _ = _child(out, "none", tmp_path, env)
    # g++ is compiling (the output file only appears at link time, often too briefly to catch)
    _wait_for(lambda: any(cache.glob("*/compile.log")) and _compiler_running_under(p.pid), p)
    p.kill()
    p.wait(timeout=60)
    assert not list(cache.glob("*/tb_batch"))  # no binary under the final name: never a truncated one
    assert _snapshot(out / "m") == before
    monkeypatch.setenv("FPGA_FLOW_CSIM_CACHE", str(cache))
    again = _build(out)
    assert again["exact_matches"] == 8 and again["timings_s"]["csim_build"] > 0 and list(cache.glob("*/tb_batch"))
    assert _leftovers(out) == []


@pytest.mark.unit
def test_stale_staging_removal_is_narrow(tmp_path):
    """Under the build's lock every `.<name>.tmp-*` of that build is a leftover (no live run can hold it);
    other builds' staging folders and the kept `.failed` / `.partial` folders stay."""
    out = tmp_path / "m"
    keep = [tmp_path / ".mm.tmp-a", tmp_path / "m.failed", tmp_path / "m.partial", tmp_path / ".other.tmp-a"]
    gone = [tmp_path / ".m.tmp-abc", tmp_path / ".m.tmp-old-12"]
    for d in keep + gone:
        d.mkdir()
    with runner.build_lock(out):
        removed = runner.remove_stale(out)
    assert sorted(removed) == sorted(gone)
    assert all(d.is_dir() for d in keep) and not any(d.exists() for d in gone)
