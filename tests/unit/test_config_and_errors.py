import dataclasses
import subprocess
import sys

import pytest

from fpga_flow import BuildConfig, FlowError
from fpga_flow.config import check_identifier

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("field,value", [("weight_bits", 1), ("weight_bits", 9), ("act_bits", 0),
                                         ("input_bits", 17), ("weight_bits", "4")])
def test_bits_out_of_range_are_refused(field, value):
    with pytest.raises(FlowError, match=field):
        BuildConfig(**{field: value})


@pytest.mark.parametrize("name", ["my model", "a;rm -rf", "x$y", "3net", "名前", "a\"b", "br[0]", ""])
def test_identifiers_are_checked_at_the_boundary(name):
    with pytest.raises(FlowError, match="not a valid identifier"):
        check_identifier(name, "model name")
    with pytest.raises(FlowError):
        BuildConfig(model=name)


def test_bad_io_type_part_and_clock():
    with pytest.raises(FlowError, match="io_type"):
        BuildConfig(io_type="io_serial")
    with pytest.raises(FlowError, match="part"):
        BuildConfig(part="xc7z020; rm -rf /")
    with pytest.raises(FlowError, match="clock"):
        BuildConfig(clock_ns=0)


def test_config_is_frozen_and_json_able():
    import json
    c = BuildConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.weight_bits = 2
    assert json.loads(json.dumps(c.to_json()))["weight_bits"] == 4


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "fpga_flow", *args], capture_output=True, text=True, env=env)


def test_cli_help_answers_questions():
    p = _cli("--help")
    assert p.returncode == 0
    for word in ("hls", "csim", "train", "exit codes", "<out>/<model>", "report.{json,md,png}", "--version"):
        assert word in p.stdout
    h = _cli("hls", "--help")
    assert "--start-step" in h.stdout and "'all'" in h.stdout and "--out" in h.stdout
    assert all(name in h.stdout for name in ("hls4ml", "finn", "rtl"))  # the backends, from the registry
    assert "--backend" not in _cli("rtl", "--help").stdout  # each subcommand shows only its own flags


def test_cli_unknown_model_lists_models():
    p = _cli("hls", "--model", "nosuchnet")
    assert p.returncode == 1
    assert "unknown model 'nosuchnet'" in p.stderr and "convnet" in p.stderr
    assert "Traceback" not in p.stderr


def test_cli_bad_bits_and_bad_n():
    p = _cli("hls", "--weight-bits", "12")
    assert p.returncode == 1 and "weight_bits=12 is out of range" in p.stderr
    p = _cli("hls", "-n", "-3")
    assert p.returncode == 1 and "positive" in p.stderr  # usage errors exit 1 (2 is "missing tool")


def test_synth_without_vendor_tools_exits_2(monkeypatch):
    import shutil
    if shutil.which("vitis-run") or shutil.which("vitis_hls"):
        pytest.skip("Vitis HLS is installed here")
    p = _cli("synth", "--model", "convnet")
    assert p.returncode == 2 and "Vitis HLS not found" in p.stderr and "nothing was run" in p.stderr
