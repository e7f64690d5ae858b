"""#13: the package works once installed. The wheel is built, installed with its dependencies into a fresh
venv, and used from a folder outside the checkout: models and templates come from the wheel, outputs go to
--out, caches to $FPGA_FLOW_CACHE, and nothing is written into the installed package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import needs_gxx

pytestmark = [pytest.mark.package, needs_gxx]
ROOT = Path(__file__).resolve().parents[2]


def _run(cmd, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", ROOT])
    wheel = next((tmp / "dist").glob("fpga_flow-*.whl"))
    venv.EnvBuilder(with_pip=True).create(tmp / "venv")
    py = tmp / "venv" / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", "torch==2.13.0"])  # first, as the Makefile does (a CPU wheel)
    _run([py, "-m", "pip", "install", "-q", wheel])
    return tmp, py, wheel


def test_wheel_holds_templates_models_and_checkpoints(installed):
    import zipfile
    _, _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "fpga_flow/hw_templates/hls4ml/tb_batch.cpp.j2" in names
    assert "fpga_flow/models/convnet.py" in names and "fpga_flow/models/checkpoints/convnet_w4a4.pt" in names
    assert "fpga_flow/backends/hls4ml/kernels/requant.py" in names


def test_installed_cli_builds_from_outside_the_checkout(installed, mnist_dir):
    tmp, py, _ = installed
    work = tmp / "elsewhere"
    work.mkdir()
    site = Path(_run([py, "-c", "import fpga_flow, os; print(os.path.dirname(fpga_flow.__file__))"],
                     cwd=work).stdout.strip())
    assert site.is_relative_to(tmp / "venv")  # the wheel, not the checkout
    before = _files(site)
    env = {**os.environ, "FPGA_FLOW_CACHE": str(tmp / "cache")}
    models = _run([tmp / "venv" / "bin" / "fpga-flow", "models"], cwd=work, env=env).stdout.split()
    assert "convnet" in models and "mlp_tiny" in models
    _run([tmp / "venv" / "bin" / "fpga-flow", "hls", "--model", "mlp_tiny", "-n", "20", "--stock-check", "0",
          "--out", "out", "--data", mnist_dir, "-q"], cwd=work, env=env)
    rep = json.loads((work / "out" / "mlp_tiny" / "report.json").read_text())
    assert rep["exact_matches"] == rep["n_images"] == 20
    assert rep["checkpoint"] == "models/checkpoints/mlp_tiny_w4a4.pt"  # named, without a machine path
    assert (tmp / "cache" / "csim-cache").is_dir()
    assert _files(site) == {k: v for k, v in _files(site).items() if k in before or "__pycache__" in k}
    assert not [k for k in _files(site) if k not in before and "__pycache__" not in k]
