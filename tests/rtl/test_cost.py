"""The cost model's rule-based parts: cycles per image from the folding, and the DSP / BRAM18 rules against
every measured yosys count; the fitted LUT/FF estimates grow with the parallelism."""

from __future__ import annotations

import numpy as np
import pytest

from fpga_flow.backends.rtl import cost
from fpga_flow.backends.rtl.hw import mvu, spec

pytestmark = pytest.mark.rtl


def test_cycles_per_image_is_the_slowest_layer():
    rng = np.random.default_rng(0)
    conv = spec.Mac("conv", (8, 8, 16), rng.integers(-2, 2, size=(32, 3, 3, 16)), 4, False, out_bits=14,
                    k=3, pad=1, pe=4, simd=8)  # NF 8 x SF 18 x 64 pixels
    pool = spec.MaxPool((8, 8, 32), 2, 4, False)
    dense = spec.Mac("dense", (1, 1, 1024), rng.integers(-2, 2, size=(10, 1024)), 4, False, out_bits=16,
                     pe=1, simd=1)  # NF 10 x SF 1024 x 1 pixel
    assert cost.cycles_per_image([conv, pool]) == 8 * 18 * 64
    assert cost.cycles_per_image([conv, pool, dense]) == 10 * 1024
    assert cost.cycles_per_image([pool]) == 0


@pytest.mark.parametrize("point", [p["point"] for p in cost.MEASURED], ids=str)
def test_dsp_and_bram_rules_reproduce_the_measured_counts(point):
    """DSPs exactly; BRAM18s never fewer than yosys used (on the 4608x4 ROM yosys used one RAMB18 and put
    the words past 4K in LUTs, where the rule counts two)."""
    measured = next(p for p in cost.MEASURED if p["point"] == point)
    est = cost.mvu_cost(cost.calibration_layer(*point))
    assert est["dsp"] == measured["DSP"]
    assert est["bram18"] >= measured["BRAM18"]
    assert (est["bram18"] == 0) == (measured["BRAM18"] == 0)


def test_estimate_grows_with_parallelism_and_says_it_is_one():
    small = cost.mvu_cost(cost.calibration_layer("conv", 16, 32, 3, 4, 4, 4, 2, 4))
    big = cost.mvu_cost(cost.calibration_layer("conv", 16, 32, 3, 4, 4, 4, 8, 16))
    assert big["lut"] > small["lut"] and big["ff"] > small["ff"]
    assert small["how"].startswith("estimate")
    assert all(isinstance(small[k], int) and small[k] >= 0 for k in ("lut", "ff", "dsp", "bram18"))


def test_bram18_aspect_ratios():
    assert cost.bram18(144, 128) == 4  # 512x36: four wide
    assert cost.bram18(576, 32) == 2  # 1Kx18
    assert cost.bram18(4608, 4) == 2  # 8Kx2
    assert cost.bram18(1100, 36) == 3  # three 512-word banks, one fewer than 2Kx9 four wide


def test_a_deep_weight_rom_is_banked_one_block_ram_deep():
    assert mvu.weight_banks(1024, 18) == (1024, 18)  # one 1Kx18
    assert mvu.weight_banks(100, 72) == (100, 36)  # one bank of two 512x36
    assert mvu.weight_banks(7168, 28) == (7168, 2)  # fourteen 8Kx2 side by side: no bank select (mlp_bn at 10k)
    assert mvu.weight_banks(1100, 36) == (512, 36)  # three banks
