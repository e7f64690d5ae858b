"""Issue #15 items 5 and 7: make passes variables to the CLI without a shell parsing them, and exits with the
CLI's own code (0 ok, 1 usage/input, 2 missing tool, 3 not bit-exact) instead of make's 2 for every failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None
                                 or not Path("/usr/include/gnumake.h").is_file(),
                                 reason="needs GNU make, cc and gnumake.h")]


def _venv(root: Path, body: str) -> Path:
    """A stand-in for .venv: bin/python is a script, .installed is fresh so make installs nothing."""
    (root / "bin").mkdir(parents=True)
    py = root / "bin" / "python"
    py.write_text("#!/bin/sh\n" + body)
    py.chmod(0o755)
    (root / ".installed").touch()
    return root


def _make(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(REPO), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_a_shell_command_in_a_variable_is_never_run(tmp_path):
    """Before: `make hls 'MODEL=a; touch X #'` ran `touch X` and exited 0."""
    venv = _venv(tmp_path / "venv", f'exec "{sys.executable}" "$@"\n')
    p = _make(tmp_path, "hls", f"VENV={venv}", "MODEL=a; touch X #")
    assert p.returncode == 1, p.stderr
    # the CLI's own refusal, naming the value exactly as given (since #14 --model also takes FILE.py:NAME)
    assert "--model 'a; touch X #' is neither a shipped model name nor FILE.py:NAME" in p.stderr
    for name in "X":
        assert not (tmp_path / name).exists() and not (REPO / name).exists()


@pytest.mark.parametrize("code", [0, 1, 2, 3])
def test_make_exits_with_the_cli_code(tmp_path, code):
    """The CLI is replaced by a script exiting with ``code``; before, every failure became make's 2."""
    venv = _venv(tmp_path / "venv", "exit $FAKE_CLI_CODE\n")
    p = _make(tmp_path, "csim", f"VENV={venv}", env={"FAKE_CLI_CODE": str(code)})
    assert p.returncode == code, p.stderr
    assert not list((REPO / "build" / ".make").glob("*.exit"))  # the recorded code is not left behind


def test_args_keep_shell_quoting_but_are_never_executed(tmp_path):
    """The CLI is replaced by a module printing its arguments: every variable arrives as one word, ARGS as
    the words a shell would split it into, and nothing in them runs."""
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "echo_args.py").write_text("import sys\nprint('\\n'.join(f'<{a}>' for a in sys.argv[1:]))\n")
    # bin/python -c CODE fpga_flow ARG... -> the real python running CODE with echo_args in fpga_flow's place
    venv = _venv(tmp_path / "venv", f'code="$2"; shift 3; PYTHONPATH="{tmp_path / "mods"}" '
                                    f'exec "{sys.executable}" -c "$code" echo_args "$@"\n')
    p = _make(tmp_path, "hls", f"VENV={venv}", "N=1; touch Y #", "ARGS=--part 'a b' * ; touch W $$(touch Z)")
    words = p.stdout.split("\n")
    assert p.returncode == 0, p.stderr
    assert "<1; touch Y #>" in words
    assert all(w in words for w in ("<a b>", "<*>", "<;>", "<W>", "<$(touch>", "<Z)>")), p.stdout
    for name in "WYZ":
        assert not (tmp_path / name).exists() and not (REPO / name).exists()
