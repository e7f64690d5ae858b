"""``--fit`` on the FINN backend: the fps it chooses folds a design that fits the part by FINN's estimate,
every stage still ``==`` the golden, and one step faster would not fit (or would be no faster)."""

from __future__ import annotations

import pytest

pytest.importorskip("finn.transformation", reason="the finn extra is not installed (make venv-finn)")

from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402

from fpga_flow import BuildConfig, FlowError, api  # noqa: E402
from fpga_flow.backends.finn import fit as finn_fit  # noqa: E402
from fpga_flow.backends.finn import report as finn_report  # noqa: E402
from fpga_flow.backends.finn import steps as finn_steps  # noqa: E402

pytestmark = pytest.mark.finn

Z7010 = "xc7z010clg400-1"


def test_fit_chooses_the_fastest_folding_that_fits(tmp_path):
    cfg = BuildConfig(model="mlp_tiny", backend="finn", n_images=16, device="cpu", part=Z7010, fit=True)
    rep = api.build_zoo(cfg, out_dir=tmp_path, progress=False)
    assert rep["exact_matches"] == 16 and all(c["exact_matches"] == c["n"] for c in rep["comparisons"])
    f = rep["hw"]["finn"]
    rec, e = f["fit"], f["estimate"]
    assert rec["fits"] is True and f["options"]["fit"] is True
    assert f["options"]["target_fps"] == rec["target_fps"]
    assert finn_fit.utilisation(e["total"], {"lut": 17_600, "bram18k": 120, "dsp": 80}) == rec["utilisation_pct"]
    assert max(rec["utilisation_pct"].values()) <= 100
    assert f"the design fits {Z7010} by FINN's estimate" in finn_report.summary(rep)
    # one cycle per frame faster than the design reached, from the graph before folding: no fit, or no faster
    before = tmp_path / "mlp_tiny_finn" / "finn" / "07_specialize_layers.onnx"
    opts = finn_steps.FinnOptions(part=Z7010)
    faster = finn_steps.minimize_bit_width(finn_steps.target_fps_parallelization(
        ModelWrapper(str(before)), opts, e["max_cycles"] - 1))
    est = finn_report.estimates(faster, Z7010, 10.0)
    assert "NOT fit" in finn_fit.verdict(est, Z7010) or est["max_cycles"] >= e["max_cycles"]


def test_fit_and_a_target_exclude_each_other(tmp_path):
    cfg = BuildConfig(model="mlp_tiny", backend="finn", n_images=4, fit=True, extra={"target_fps": 1000})
    with pytest.raises(FlowError, match="give one"):
        api.build_zoo(cfg, out_dir=tmp_path, progress=False)
