"""The Verilator harness on its own, with a top whose streams take the wide payload paths (48 bits in: one
64-bit word; 80 bits out: Verilator's wide array): signed codes through unchanged, a stalled design and
extra output beats reported as errors, one build reused for every run."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.back import verilog

from fpga_flow.resources import cache_dir
from fpga_flow.backends.rtl import verilator
from fpga_flow.backends.rtl.hw.dwc import WidthConverter
from fpga_flow.errors import FlowError
from tests.conftest import needs_gxx

pytestmark = [pytest.mark.rtl, needs_gxx]

TOP = "tb_width_12_20"


@pytest.fixture(scope="module")
def wide_top() -> str:
    return verilog.convert(WidthConverter(12, 20, 4), name=TOP, emit_src=False)


def _sim(v: str, x: np.ndarray, n_out: int):
    return verilator.simulate(v, TOP, 12, 4, 20, 4, (True, True), x, n_out, cache_dir("verilator"), timeout_s=60)


def test_wide_signed_payloads_pass_unchanged_and_the_build_is_reused(wide_top):
    x = np.random.default_rng(1).integers(-8, 8, size=(7, 60))
    got, cycles = _sim(wide_top, x, 60)
    assert np.array_equal(got, x)
    again, cycles2 = _sim(wide_top, x[:3], 60)
    assert cycles2["cached"] and np.array_equal(again, x[:3])


def test_a_stall_and_extra_beats_are_errors(wide_top):
    x = np.zeros((2, 60), dtype=np.int64)
    with pytest.raises(FlowError, match="stalled at cycle .* 10 of 10 input beats taken, 6 of 12 output"):
        _sim(wide_top, x, 120)  # the design sends 3 beats per image, not 6
    with pytest.raises(FlowError, match="sent 4 output beats more than the 2 expected"):
        _sim(wide_top, x, 20)


def test_bad_inputs_are_refused(wide_top):
    with pytest.raises(FlowError, match="not an identifier"):
        verilator.testbench("top-1", 1, 4, 1, 4, False)
    with pytest.raises(FlowError, match=r"integers in \[-8, 7\]"):
        _sim(wide_top, np.full((1, 60), 8), 60)
