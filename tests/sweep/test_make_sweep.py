"""`make sweep` passes MODEL, SPACE and (only when given) N to `fpga-flow sweep` as single words, never through a
shell, and exits with the CLI's code (the Makefile's pattern of tests/reliability/test_makefile.py)."""

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


def _echo_venv(tmp_path: Path) -> Path:
    """A stand-in .venv whose python prints the arguments the CLI would get, one per line as <word>."""
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "echo_args.py").write_text("import sys\nprint('\\n'.join(f'<{a}>' for a in sys.argv[1:]))\n")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text(f'#!/bin/sh\ncode="$2"; shift 3; PYTHONPATH="{tmp_path / "mods"}" '
                  f'exec "{sys.executable}" -c "$code" echo_args "$@"\n')
    py.chmod(0o755)
    (venv / ".installed").touch()
    return venv


# the Makefile's variables: `make test` exports them (N=1000 ...) to this process, and an inner make would
# take them from the environment as if a user had set them
MAKE_VARS = ("MODEL", "N", "W", "A", "BACKEND", "PYTHON", "VENV", "ARGS", "SEED", "SPACE", "FINN_PLUS")


def _make(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in MAKE_VARS and not k.startswith("MAKE")}
    return subprocess.run(["make", "-s", "-C", str(REPO), *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


def test_make_sweep_passes_its_variables_as_words(tmp_path):
    venv = _echo_venv(tmp_path)
    p = _make(tmp_path, "sweep", f"VENV={venv}", "MODEL=mlp_tiny", "SPACE=my space; touch X #")
    words = p.stdout.split("\n")
    assert p.returncode == 0, p.stderr
    assert words[:5] == ["<sweep>", "<--model>", "<mlp_tiny>", "<--space>", "<my space; touch X #>"]
    assert "<-n>" not in words  # the space file decides the image count unless N is given
    assert not (tmp_path / "X").exists() and not (REPO / "X").exists()
    p = _make(tmp_path, "sweep", f"VENV={venv}", "N=200")
    assert p.stdout.split("\n")[:7] == ["<sweep>", "<--model>", "<convnet>", "<--space>", "<default>", "<-n>",
                                        "<200>"]
