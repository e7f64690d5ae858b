"""The default `make test` leaves out the tests in tests/slow.py; this keeps that list honest: every listed test
exists, every one names default-run covers that exist and are not slow themselves, and the Makefile's `test`
and `test-all` targets pass pytest what docs/testing.md says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.slow import SLOW

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.unit


def _defined(nodeid: str) -> bool:
    path, _, name = nodeid.partition("::")
    f = REPO / path
    return f.is_file() and re.search(rf"^def {re.escape(name.split('[')[0])}\(", f.read_text(), re.M) is not None


@pytest.mark.parametrize("nodeid", sorted(SLOW))
def test_a_slow_test_exists_and_has_a_default_run_cover(nodeid):
    covers, why = SLOW[nodeid]
    assert _defined(nodeid), f"{nodeid} is listed in tests/slow.py but not defined"
    assert covers and why
    for c in covers:
        assert _defined(c), f"the cover {c} of {nodeid} is not defined"
        assert c not in SLOW, f"the cover {c} is itself slow"  # (a parametrized cover: its other cases)


def test_the_marker_is_applied():
    """The hook in tests/conftest.py marks a listed test and nothing else: `-m slow` over the slow test's file
    and its cover's file collects the slow test and not the cover."""
    import sys
    nodeid = "tests/reliability/test_wide_dense_csim.py::test_784_3000_2_dense_mlp_runs_in_csim_bit_exact"
    cover = SLOW[nodeid][0][0]
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m",
                        "slow", nodeid.split("::")[0], cover.split("::")[0]], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    got = [ln.split("[")[0] for ln in p.stdout.splitlines() if "::" in ln]
    assert nodeid in got and cover not in got


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize("target,args", [("test", "pytest -q -m not slow"), ("test-all", "pytest -q")])
def test_make_test_leaves_the_slow_tests_out_and_test_all_runs_them(tmp_path, target, args):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    seen = tmp_path / "argv"
    # the stand-in python prints what the Makefile's runner would hand pytest: argv after `-c CODE`
    py.write_text(f'#!/bin/sh\nshift 2\necho "$@" > "{seen}"\n')
    py.chmod(0o755)
    (venv / ".installed").touch()
    subprocess.run(["make", "-s", "-C", str(REPO), target, f"VENV={venv}"], cwd=tmp_path, capture_output=True,
                   env={**os.environ, "ARGS": ""}, timeout=120)
    assert seen.read_text().split() == args.split()
