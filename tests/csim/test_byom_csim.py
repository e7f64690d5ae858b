"""Bring your own model through the CLI, end to end in C simulation (#14): a model file outside the checkout
with a plain state_dict, re-verified by `csim` with the build's own checkpoint; a QONNX file exported
elsewhere, verified against QONNX execution. mlp_tiny-sized, 8 images each."""

from __future__ import annotations

import json

import pytest
import torch

from fpga_flow import BuildConfig, cli, train, zoo
from tests.conftest import needs_gxx
from tests.unit.test_byom import USER_FILE

pytestmark = [pytest.mark.csim, needs_gxx]


def _run(*argv: str) -> int:
    return cli.main([*argv, "-n", "8", "--stock-check", "0", "-q"])


def test_user_file_with_plain_state_dict_builds_exact_and_csim_uses_its_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out (it broke the csim step before api resolved it)
    (tmp_path / "mynet.py").write_text(USER_FILE)
    shipped, _ = train.load_checkpoint("mlp_tiny", None, 4, 4, 8)
    torch.save(shipped.state_dict(), tmp_path / "X.pt")
    tool = sorted(p.name for p in zoo.MODELS_DIR.rglob("*"))
    out = tmp_path / "out"
    spec = f"{tmp_path}/mynet.py:make"
    assert _run("hls", "--model", spec, "--checkpoint", str(tmp_path / "X.pt"), "--out", "out") == 0
    rep = json.loads((out / "mynet" / "report.json").read_text())
    assert rep["mismatches"] == 0 and rep["exact_matches"] == 8 and rep["checkpoint"].endswith("X.pt")
    assert rep["source"]["kind"] == "user" and rep["source"]["spec"] == spec
    assert rep["source"]["dataset"]["name"] == "mnist" and "warnings" not in rep["source"]  # the file's DATASET
    saved = BuildConfig.from_toml(out / "mynet" / "config.toml")
    assert saved.source == spec and saved.checkpoint == str(tmp_path / "X.pt")
    # csim without --checkpoint: the build's own (X.pt), not the factory's untrained weights
    assert _run("csim", "--model", spec, "--out", str(out)) == 0
    rep = json.loads((out / "mynet" / "report.json").read_text())
    assert rep["mismatches"] == 0 and rep["checkpoint"].endswith("X.pt")
    # and --config <build>/config.toml reproduces the build
    assert _run("hls", "--config", str(out / "mynet" / "config.toml"), "--out", str(tmp_path / "again")) == 0
    assert json.loads((tmp_path / "again" / "mynet" / "report.json").read_text())["digest"] == rep["digest"]
    assert sorted(p.name for p in zoo.MODELS_DIR.rglob("*")) == tool  # nothing written into the tool's folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.pt", "again", "mynet.py", "out"]  # no __pycache__


def test_qonnx_file_builds_exact_against_qonnx_execution(tmp_path, capsys):
    from brevitas.export import export_qonnx
    shipped, _ = train.load_checkpoint("mlp_tiny", None, 4, 4, 8)
    export_qonnx(shipped, torch.zeros(1, 49), export_path=str(tmp_path / "tiny.onnx"))
    assert _run("hls", "--onnx", str(tmp_path / "tiny.onnx"), "--out", str(tmp_path / "out")) == 0
    assert "no torch module: golden = QONNX execution" in capsys.readouterr().out
    rep = json.loads((tmp_path / "out" / "tiny" / "report.json").read_text())
    assert rep["mismatches"] == 0 and rep["exact_matches"] == 8
    assert rep["source"]["golden"] == "no torch module: golden = QONNX execution"
    assert rep["reference_devices"] == []  # no torch reference was run
