"""Brevitas' bnn_pynq networks (FINN's own end-to-end examples) through the FINN backend (#14): the host runs the
float pre-processing, the input quantizer and the TensorNorm (``host_ops``); FINN receives the exact lowering's
thresholds, its bipolar layers in FINN's XNOR form; every stage == the integer-accumulator reference.

Random init + calibrated BatchNorm (``tests/bnn_pynq_nets.py``); few images keep it fast (FINN executes its
hardware layers one frame at a time, ~2 s per CNV frame and stage on 2 shared cores)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("finn.transformation", reason="the finn extra is not installed (make venv-finn)")

from fpga_flow import BuildConfig, api  # noqa: E402
from fpga_flow.backends.finn import steps as finn_steps  # noqa: E402
from tests import bnn_pynq_nets as bnn  # noqa: E402

pytestmark = pytest.mark.finn

STAGES = [name for name, _ in finn_steps.STAGES]
GOLDEN = "integer-accumulator reference"


def _build(net, name, tmp_path, n, **kw):
    cfg = BuildConfig(model=name.lower(), backend="finn", n_images=n, device="cpu", workers=1,
                      **({"data_path": kw.pop("data_path")} if "data_path" in kw else {}))
    return api.build(net, bnn.input_shape(name), name=name.lower(), out_dir=tmp_path, config=cfg, progress=False,
                     **kw)


def _every_stage_exact(rep, n):
    assert rep["exact_matches"] == rep["n_images"] == n
    rows = [c for c in rep["comparisons"] if c["name"].startswith("FINN ")]
    assert [c["name"].split(" ")[1] for c in rows] == STAGES
    assert all(c["exact_matches"] == c["n"] == n and c["name"].endswith(GOLDEN) for c in rows), rows
    assert all(c["exact_matches"] == c["n"] for c in rep["comparisons"]), rep["comparisons"]
    ag = rep["float_scaled"]["brevitas_float_agreement"]
    assert ag["activations_equal"] == n and ag["max_abs_logit_diff"] == 0.0
    assert rep["accuracy"]["finn"] == rep["accuracy"]["quantized"]
    return rep["hw"]["finn"]


def test_tfc_1w1a_on_mnist_xnor_layers_and_host_ops_named(mnist_dir, tmp_path):
    n = 20
    rep = _build(bnn.make("TFC_1W1A"), "TFC_1W1A", tmp_path, n, data_path=str(mnist_dir))
    assert rep["source"]["dataset"]["name"] == "mnist"
    f = _every_stage_exact(rep, n)
    layers = f["estimate"]["layers"]  # FINN's XNOR-popcount MVAUs: bipolar codes travel as BINARY (-1 -> 0)
    assert [r["op"] for r in layers] == ["MVAU_hls"] * 4
    assert all(r["input_type"] == "BINARY" for r in layers) and f["input"]["datatype"] == "BINARY"
    host = f["host_ops"]
    assert [h.split(" ")[0].rstrip("_0123456789") for h in host["before_dataflow"]] == [
        "Reshape", "Mul", "Sub", "BipolarQuant"]
    assert sum("TensorNorm" in h for h in host["after_dataflow"]) == 4  # Sub, Div, Mul, Add of the TensorNorm
    md = (tmp_path / "tfc_1w1a_finn" / "report.md").read_text()
    assert "## Runs on the host" in md and all(f"`{h}`" in md for h in host["before_dataflow"] + host["after_dataflow"])


@pytest.mark.parametrize("name", ["TFC_1W1A", "TFC_2W2A"])
def test_negative_batchnorm_gamma_negates_the_weights(name, tmp_path):
    """Channels whose code decreases with the accumulator (gamma < 0, as in trained nets): exact too."""
    net = bnn.make(name)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.weight[::2] *= -1
    x = np.random.default_rng(1).random((12, 1, 28, 28), dtype=np.float32)
    rep = _build(net, name, tmp_path, 12, images=x)
    _every_stage_exact(rep, 12)
    assert all(r["negative_slope_channels"] > 0 for r in rep["float_scaled"]["layers"][:3])


def test_cnv_1w1a_seeded_random_inputs(tmp_path):
    n = 2
    x = np.random.default_rng(0).random((n, 3, 32, 32), dtype=np.float32)
    f = _every_stage_exact(_build(bnn.make("CNV_1W1A"), "CNV_1W1A", tmp_path, n, images=x), n)
    ops = [r["op"] for r in f["estimate"]["layers"]]
    assert ops.count("MVAU_hls") == 9 and ops.count("Pool_hls") == 2 and "ConvolutionInputGenerator_rtl" in ops
    assert sum("TensorNorm" in h for h in f["host_ops"]["after_dataflow"]) == 4


MODEL_FILE = '''import torch
from brevitas_examples.bnn_pynq.models import model_with_cfg

INPUT_SHAPE = (1, 28, 28)


def make():
    torch.manual_seed(0)
    net, _ = model_with_cfg("TFC_1W1A", pretrained=False)
    net.train()
    with torch.no_grad():
        net(torch.rand(64, 1, 28, 28))
    return net.eval()
'''


def test_cli_model_file_reaches_the_finn_backend(mnist_dir, tmp_path):
    """`fpga-flow hls --model tfc.py:make --backend finn`: the same path from the command line."""
    import json

    from fpga_flow import cli
    (tmp_path / "tfc.py").write_text(MODEL_FILE)
    rc = cli.main(["hls", "--model", f"{tmp_path / 'tfc.py'}:make", "--backend", "finn", "-n", "8", "--device", "cpu",
                   "--data", str(mnist_dir), "--out", str(tmp_path / "out"), "-q"])
    assert rc == 0
    rep = json.loads((tmp_path / "out" / "tfc_finn" / "report.json").read_text())
    assert rep["exact_matches"] == rep["n_images"] == 8 and rep["hw"]["finn"]["golden"] == GOLDEN
