"""The fused conv+ReLU kernel and hls4ml's separate layers both verify bit-exact, and fusion shrinks the design."""

from __future__ import annotations

import pytest

from fpga_flow import BuildConfig, api, fuzz
from tests.conftest import needs_gxx

pytestmark = [pytest.mark.csim, needs_gxx]

L = fuzz.LayerSpec
# conv -> ReLU (fused), conv (stride 2) -> ReLU -> maxpool (fused, pool after), conv with padding -> ReLU
# (padding: hls4ml's ZeroPadding layer in front, the conv itself unpadded, so fused too), 3-bit ReLUs
SPEC = fuzz.ModelSpec("conv", (3, 14, 14), 8, False, (
    L(6, 4, 3, "Int32Bias", "relu", kernel=3),
    L(8, 3, 4, "Int32Bias", "relu", kernel=3, stride=2, pool="max"),
    L(5, 4, 3, "Int16Bias", "relu", kernel=2, pad=1),
    L(4, 4, 4, "Int32Bias", "none")), "linear", seed=11)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    out = tmp_path_factory.mktemp("fusion")
    x, _ = fuzz.inputs(SPEC, 96)
    module = fuzz.make_module(SPEC, x)
    reps = {}
    for fuse in (True, False):
        cfg = BuildConfig(model="m", n_images=96, stock_check_images=24, device="cpu", fuse=fuse)
        reps[fuse] = api.build(module, SPEC.input_shape, name=f"m_fuse{int(fuse)}", out_dir=out, config=cfg,
                               images=x, progress=False)
    return reps


def test_fused_and_unfused_designs_are_both_bit_exact(both):
    for rep in both.values():
        assert rep["exact_matches"] == rep["n_images"] == 96 and rep["max_abs_diff"] == 0.0
        assert all(c["exact_matches"] == c["n"] for c in rep["comparisons"])  # stock csim == exact csim too
    assert both[True]["digest"] != both[False]["digest"]


def test_fusion_removes_one_kernel_and_one_stream_per_conv(both):
    fused, plain = both[True]["hw"], both[False]["hw"]
    n_fused = sum(1 for r in fused["layers"] if r.get("fused_from"))
    assert n_fused == 3
    assert sum("fpga_flow::conv_2d_relu_cl" in k for k in fused["design"]["kernels"]) == 3
    assert not any("fpga_flow::" in k for k in plain["design"]["kernels"])
    assert fused["design"]["kernel_calls"] == plain["design"]["kernel_calls"] - 3
    assert fused["design"]["internal_streams"] == plain["design"]["internal_streams"] - 3
    # the accumulators no longer travel between kernels: only the 3/4-bit ReLU outputs do
    assert fused["design"]["stream_bits_per_image"] < plain["design"]["stream_bits_per_image"]
