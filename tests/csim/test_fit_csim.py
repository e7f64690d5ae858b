"""``--fit`` end to end on a small model: the design it chooses is written with those reuse factors and still
computes ``==`` the golden in C simulation (hls4ml's stock csim included); without ``--fit`` a design over the
part says so on the console and in report.md."""

from __future__ import annotations

import json
import re

import pytest

from fpga_flow import cli
from tests.conftest import needs_gxx

pytestmark = [pytest.mark.csim, needs_gxx]

Z7010 = "xc7z010clg400-1"  # mlp_tiny at reuse factor 1 is estimated far over its 17,600 LUTs


def test_fit_design_is_bit_exact_and_uses_the_chosen_reuse_factors(tmp_path, capsys):
    rc = cli.main(["hls", "--model", "mlp_tiny", "-n", "64", "--stock-check", "16", "--part", Z7010, "--fit",
                   "--out", str(tmp_path), "-q"])
    out = capsys.readouterr().out
    assert rc == 0
    rep = json.loads((tmp_path / "mlp_tiny" / "report.json").read_text())
    assert rep["exact_matches"] == 64 and rep["mismatches"] == 0
    assert all(c["exact_matches"] == c["n"] for c in rep["comparisons"])  # hls4ml's own csim too
    res = rep["hw"]["fit"]
    assert res["fits"] is True and rep["config"]["fit"] is True
    chosen = [r["reuse_factor"] for r in res["layers"]]
    assert max(chosen) > 1  # the search had to fold to fit: the check below is not of the defaults
    assert all(r["reuse_factor"] in r["valid_reuse_factors"] for r in res["layers"])
    # the project was generated with them: one reuse_factor per layer config, in layer order
    params = (tmp_path / "mlp_tiny" / "hls" / "firmware" / "parameters.h").read_text()
    written = {int(v) for v in re.findall(r"reuse_factor = (\d+)", params)}
    assert set(chosen) <= written
    layers = {r["layer"]: r for r in rep["hw"]["estimate"]["layers"]}
    assert all(layers[r["layer"]]["reuse_factor"] == r["reuse_factor"] for r in res["layers"])
    assert max(rep["hw"]["estimate"]["utilisation_pct"].values()) <= 100
    assert "WARNING" not in out and f"fits {Z7010} by the estimate" in out
    md = (tmp_path / "mlp_tiny" / "report.md").read_text()
    assert f"## --fit: reuse factors chosen to fit {Z7010}" in md


def test_a_design_over_the_part_warns_on_the_console_and_in_the_report(tmp_path, capsys):
    rc = cli.main(["hls", "--model", "mlp_tiny", "-n", "8", "--stock-check", "0", "--part", Z7010,
                   "--out", str(tmp_path), "-q"])
    out = capsys.readouterr().out
    assert rc == 0  # verified: not fitting is a warning, not a failure
    m = re.search(rf"WARNING: the design does NOT fit {Z7010} by the estimate: LUT (\d+)%.*?; ([\d.]+)x the part's LUT",
                  out)
    assert m, out
    rep = json.loads((tmp_path / "mlp_tiny" / "report.json").read_text())
    assert int(m.group(1)) == round(rep["hw"]["estimate"]["utilisation_pct"]["lut"])
    assert rep["hw"]["fit"] is None
    assert f"**The design does NOT fit {Z7010} by the estimate" in (tmp_path / "mlp_tiny" / "report.md").read_text()


def test_a_layer_set_by_hand_is_kept_and_the_rest_fitted_around_it(tmp_path):
    """[layers.MatMul_1] Resource at reuse factor 4 (from a config file) stays as given; --fit sets the others;
    the Resource kernel (hls4ml's, not our exact shortcut) is == too."""
    conf = tmp_path / "build.toml"
    conf.write_text(f'model = "mlp_tiny"\nfit = true\npart = "{Z7010}"\n\n'
                    '[layers.MatMul_1]\nreuse_factor = 4\nstrategy = "Resource"\n')
    rc = cli.main(["hls", "--config", str(conf), "-n", "24", "--stock-check", "8", "--out", str(tmp_path), "-q"])
    assert rc == 0
    rep = json.loads((tmp_path / "mlp_tiny" / "report.json").read_text())
    assert rep["exact_matches"] == 24 and all(c["exact_matches"] == c["n"] for c in rep["comparisons"])
    res = rep["hw"]["fit"]
    assert res["fixed"] == ["MatMul_1"] and "Dense_MatMul_1" not in [r["layer"] for r in res["layers"]]
    assert res["layers_config"]["MatMul_1"] == {"reuse_factor": 4, "strategy": "Resource"}
    params = (tmp_path / "mlp_tiny" / "hls" / "firmware" / "parameters.h").read_text()
    assert re.search(r"strategy = nnet::resource;\s*static const unsigned reuse_factor = 4;", params)
    assert params.count("nnet::resource") == 1
