"""Real Vitis HLS C synthesis of a small generated design (skipped when Vitis HLS is not installed)."""

from __future__ import annotations

import json

import pytest

from fpga_flow import BuildConfig, api, fuzz, toolchain
from fpga_flow.backends.hls4ml import synth
from tests.conftest import needs_gxx

pytestmark = [pytest.mark.vendor, needs_gxx,
              pytest.mark.skipif(toolchain.find("vitis_hls", required=False) is None,
                                 reason="Vitis HLS (vitis-run / vitis_hls / $VITIS_HLS) not installed")]

SPEC = fuzz.ModelSpec("dense", (16,), 8, False, (fuzz.LayerSpec(8, 4, 4, "Int32Bias", "relu"),
                                                 fuzz.LayerSpec(4, 4, 4, "Int32Bias", "none")), "linear", seed=3)


def test_vitis_hls_synthesizes_a_small_design(tmp_path):
    x, _ = fuzz.inputs(SPEC, 16)
    cfg = BuildConfig(model="vendor_tiny", n_images=16, stock_check_images=4, device="cpu", clock_ns=5.0)
    rep = api.build(fuzz.make_module(SPEC, x), SPEC.input_shape, name="vendor_tiny", out_dir=tmp_path, config=cfg,
                    images=x, progress=False)
    assert rep["exact_matches"] == 16
    v = synth.synthesize("vendor_tiny", tmp_path, progress=False)
    c = v["csynth"]
    assert v["part"] == cfg.part and c["target_clock_ns"] == pytest.approx(5.0)
    assert c["latency_cycles"]["max"] is not None and c["latency_cycles"]["max"] >= 1
    assert c["interval_cycles"]["min"] >= 1 and c["resources"]["lut"] > 0
    assert c["available"]["lut"] > c["resources"]["lut"]
    assert json.loads((tmp_path / "vendor_tiny" / "report.json").read_text())["hw"]["vendor"] == v
