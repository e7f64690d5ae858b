"""The zoo models from their shipped checkpoints through the whole flow, compared with ==."""

from __future__ import annotations

import pytest

from fpga_flow import BuildConfig, api
from tests.conftest import needs_gxx

pytestmark = [pytest.mark.csim, needs_gxx]


@pytest.mark.parametrize("name", ["convrelu", "dwsep", "mlp"])
def test_zoo_checkpoint_bit_exact_on_200_mnist_images(name, tmp_path):
    cfg = BuildConfig(model=name, n_images=200, stock_check_images=20)
    rep = api.build_zoo(cfg, out_dir=tmp_path, progress=False)
    assert rep["n_images"] == 200
    assert rep["exact_matches"] == 200 and rep["mismatches"] == 0 and rep["max_abs_diff"] == 0.0
    assert all(c["exact_matches"] == c["n"] for c in rep["comparisons"])
    names = [c["name"] for c in rep["comparisons"]]
    assert "HLS csim vs QONNX golden" in names and "hls4ml stock csim vs fpga_flow exact csim" in names
    assert rep["accuracy"]["csim"] == rep["accuracy"]["quantized"] > 0.9  # MNIST images, a trained model
    classes = {row["class"] for row in rep["hw"]["layers"]}
    if name == "dwsep":  # hls4ml converted the groups=in_channels convs into its depthwise layer
        assert "DepthwiseConv2D" in classes
    if name == "mlp":
        assert classes & {"Conv2D", "DepthwiseConv2D"} == set() and "Dense" in classes
