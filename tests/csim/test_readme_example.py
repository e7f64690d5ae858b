"""The README's Python API example runs as written and verifies bit-exact."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, needs_gxx

pytestmark = [pytest.mark.csim, needs_gxx]


def test_readme_python_example(tmp_path):
    text = (REPO / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    (tmp_path / "example.py").write_text(code)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split()[:2] == ["200", "200"]  # exact_matches, n_images
    assert (tmp_path / "build" / "tiny" / "hls" / "build_prj.tcl").is_file()
