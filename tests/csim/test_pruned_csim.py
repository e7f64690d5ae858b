"""A pruned (shrunk + sparse) model through the whole flow: bit-exact, and every pruned weight is a 0
in the HLS project's weight files, with the channel counts of the shrunk layers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fpga_flow import BuildConfig, api, data, prune
from tests.conftest import needs_gxx

pytestmark = [pytest.mark.csim, needs_gxx]


def _int_weights(m) -> np.ndarray:
    q = m.quant_weight()
    return (q.value / q.scale).round().to(torch.int64).numpy()


def test_pruned_model_zeros_reach_the_hls_weights_and_stay_exact(calibrated_convnet, mnist_test, tmp_path):
    net = copy.deepcopy(calibrated_convnet).eval()
    prune.apply(net, "structured", 0.25)
    net = prune.shrink(prune.make_permanent(net))  # 8, 15, 38 channels
    prune.apply(net, "unstructured", 0.5)
    prune.make_permanent(net)
    torch_layers = prune.prunable_layers(net)
    want = [(int(_int_weights(m).size), int(np.count_nonzero(_int_weights(m)))) for _, m in torch_layers]
    assert all(nz <= round(0.5 * n) for n, nz in want)

    x = data.to_unit(mnist_test.images[:24])
    cfg = BuildConfig(model="pruned", stock_check_images=8)
    rep = api.build(net, (1, 28, 28), name="pruned", out_dir=tmp_path, config=cfg, images=x,
                    labels=mnist_test.labels[:24], progress=False)
    assert rep["exact_matches"] == rep["n_images"] == 24 and rep["mismatches"] == 0
    assert all(c["exact_matches"] == c["n"] for c in rep["comparisons"])

    hw = [r for r in rep["hw"]["layers"] if "weights" in r]
    assert [(r["weights"], r["nonzero_weights"]) for r in hw] == want
    assert [r["n_out"] for r in hw] == [8, 15, 38, 10]  # the shrunk widths are what the hardware has

    # and in the files hls4ml wrote: one w<index>.txt per MAC layer (numbered by hls4ml's graph
    # index, not in our layer order; the four sizes differ, so sorting pairs each file with its layer)
    wdir = tmp_path / "pruned" / "hls" / "firmware" / "weights"
    counts = []
    for f in wdir.glob("w*.txt"):
        vals = np.array([float(v) for v in f.read_text().replace("\n", ",").split(",") if v.strip()])
        counts.append((vals.size, int(np.count_nonzero(vals))))
    assert len({n for n, _ in want}) == len(want)
    assert sorted(counts) == sorted(want)
