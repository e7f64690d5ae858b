"""The folding search on a synthetic layer list: a target rate is met with the smallest folding per layer; the
fit is the fastest folding the cost model puts inside the part; overrides win; illegal foldings are refused."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fpga_flow.backends.rtl import cost, folding
from fpga_flow.backends.rtl.hw import spec
from fpga_flow.backends.rtl.hw.mvu import acc_bits
from fpga_flow.errors import FlowError

pytestmark = pytest.mark.rtl

CLOCK_MHZ = 100.0


def layers() -> list:
    rng = np.random.default_rng(0)

    def rq(c):
        return spec.Requant(np.sort(rng.integers(-200, 200, size=(c, 15)), axis=1), np.zeros(c, np.int64),
                            np.ones(c, np.int64))
    conv = spec.Mac("conv", (8, 8, 4), rng.integers(-7, 8, size=(8, 3, 3, 4)), 4, False, requant=rq(8), out_bits=4,
                    k=3, pad=1)
    pool = spec.MaxPool((8, 8, 8), 2, 4, False)
    d1 = spec.Mac("dense", (4, 4, 8), rng.integers(-7, 8, size=(16, 128)), 4, False, requant=rq(16), out_bits=4)
    d2 = spec.Mac("dense", (1, 1, 16), rng.integers(-7, 8, size=(10, 16)), 4, False)
    d2 = spec.Mac(**{**d2.__dict__, "out_bits": acc_bits(d2), "out_signed": True})
    return [conv, pool, d1, d2]


def _floor(ls) -> int:
    """The slowest layer's fastest rate: no folding of the pipeline beats it."""
    return max(min(folding.layer_cycles(ly, p, s) for p, s in folding.options(ly)) for ly in ls
               if isinstance(ly, spec.Mac))


@pytest.mark.parametrize("fps", [2_000, 20_000, 100_000, 10_000_000])
def test_target_fps_is_met_with_the_smallest_folding(fps):
    ls = layers()
    out = folding.for_target(ls, fps, CLOCK_MHZ)
    budget = max(int(CLOCK_MHZ * 1e6 // fps), _floor(ls))
    assert cost.cycles_per_image(out) <= budget
    if budget == int(CLOCK_MHZ * 1e6 // fps):
        assert CLOCK_MHZ * 1e6 / cost.cycles_per_image(out) >= fps
    for ly in out:
        if isinstance(ly, spec.Mac):
            smaller = [(p, s) for p, s in folding.options(ly) if p * s < ly.pe * ly.simd]
            assert all(folding.layer_cycles(ly, p, s) > budget for p, s in smaller), (ly.kind, ly.pe, ly.simd)


def test_fit_is_the_fastest_folding_inside_the_part():
    ls = layers()
    part = {"lut": 4000, "ff": 100_000, "dsp": 20, "bram18k": 20}
    out = folding.for_part(ls, part)
    assert folding.fits(folding.model_cost(out), part)
    t = cost.cycles_per_image(out)
    budgets = sorted({folding.layer_cycles(ly, p, s) for ly in ls if isinstance(ly, spec.Mac)
                      for p, s in folding.options(ly)})
    faster = [b for b in budgets if b < t]
    if faster:  # the next faster rate does not fit
        assert not folding.fits(folding.model_cost(folding.fold(ls, faster[-1])), part)
    # a larger part gives a design at least as fast
    big = folding.for_part(ls, {"lut": 53200, "ff": 106400, "dsp": 220, "bram18k": 280})
    assert cost.cycles_per_image(big) <= t


def test_overrides_win_and_illegal_foldings_are_refused():
    ls = layers()
    out = folding.fold(ls, 10**9, {0: (2, 4)})
    assert (out[0].pe, out[0].simd) == (2, 4)
    with pytest.raises(FlowError, match="not legal"):
        folding.fold(ls, 10**9, {0: (3, 1)})
    out, how = folding.choose(ls, {"target_fps": 50_000, "folding": {"fc": [4, 8]}, "_names": ["c", "p", "fc", "o"]},
                              {}, CLOCK_MHZ)
    assert (out[2].pe, out[2].simd) == (4, 8) and how["overrides"] == {"fc": [4, 8]}


def test_a_one_channel_conv_folds_over_kernel_taps():
    """A 1-channel 5x5 conv on 28x28 (convnet's first layer): SIMD may take 5 taps (a kernel row) or 25 (the
    window), not 1 only, so a target beyond 24*24*25 cycles per image (6,944 images/s) is met; 10 taps (neither a
    divisor of K nor whole rows) is not offered."""
    rng = np.random.default_rng(1)
    conv = spec.Mac("conv", (28, 28, 1), rng.integers(-7, 8, size=(10, 5, 5, 1)), 8, False,
                    requant=spec.Requant(np.sort(rng.integers(-900, 900, size=(10, 15)), axis=1),
                                         np.zeros(10, np.int64), np.ones(10, np.int64)), out_bits=4, k=5)
    assert sorted({s for _, s in folding.options(conv)}) == [1, 5, 25]
    out = folding.for_target([conv], 31_250, CLOCK_MHZ)[0]
    assert folding.layer_cycles(out, out.pe, out.simd) <= 3_200 < 24 * 24 * 25
    assert out.pe * out.simd == 50  # the fewest multipliers reaching it: 576 pixels x NF*SF <= 5


def test_a_target_beyond_the_parts_dsps_moves_the_widest_products_to_luts():
    """8-bit inputs x 4-bit weights make 12-bit products, which yosys puts in DSP48s: 64 x 8 of them in one
    layer is more than a 20-DSP part has. The target search then moves that layer's products to LUTs (the
    largest DSP user first, only as many layers as needed), and says so."""
    rng = np.random.default_rng(2)
    d0 = spec.Mac("dense", (1, 1, 64), rng.integers(-7, 8, size=(16, 64)), 8, False,
                  requant=spec.Requant(np.sort(rng.integers(-900, 900, size=(16, 15)), axis=1),
                                       np.zeros(16, np.int64), np.ones(16, np.int64)), out_bits=4)
    d1 = spec.Mac("dense", (1, 1, 16), rng.integers(-7, 8, size=(4, 16)), 8, False, requant=d0.requant, out_bits=4)
    plain = folding.for_target([d0, d1], 10_000_000, CLOCK_MHZ)
    dsp = [cost.mvu_cost(ly)["dsp"] for ly in plain]
    assert dsp[0] > 20 and 0 < dsp[1] <= 16
    part = {"lut": 53200, "ff": 106400, "dsp": 20, "bram18k": 280}
    out, how = folding.choose([d0, d1], {"target_fps": 10_000_000, "_names": ["a", "b"]}, part, CLOCK_MHZ)
    assert [ly.lut_products for ly in out] == [True, False] and how["lut_products"] == ["a"]
    assert folding.model_cost(out)["dsp"] == dsp[1] <= folding.FIT_MARGIN * 20
    assert cost.mvu_cost(out[0])["lut"] > cost.mvu_cost(plain[0])["lut"]  # the LUTs pay for it
    assert [(ly.pe, ly.simd) for ly in out] == [(ly.pe, ly.simd) for ly in plain]  # same folding, same rate
    out, how = folding.choose([d0, d1], {"target_fps": 10_000_000}, {}, CLOCK_MHZ)  # no part: as yosys maps them
    assert not any(ly.lut_products for ly in out) and how["lut_products"] == []


def test_equal_multipliers_a_dense_layer_takes_the_cheapest_by_the_model_a_conv_the_narrowest_window():
    """Among foldings with as many multipliers: a dense layer's is the cost model's lowest (PE 1 x SIMD 64
    keeps one set of thresholds, PE 64 x SIMD 1 sixty-four; the old rule took the narrowest SIMD); a conv
    keeps the narrowest SIMD, since each kernel tap a beat is a copy of its line buffer (not in the model)."""
    ls = layers()
    dense = folding.fold([ls[2]], 2)[0]  # 16 x 128, two cycles a vector: 1,024 multipliers either way
    ties = [(p, s) for p, s in folding.options(dense) if p * s == dense.pe * dense.simd
            and folding.layer_cycles(dense, p, s) <= 2]
    lut = {o: cost.mvu_cost(replace(dense, pe=o[0], simd=o[1]))["lut"] for o in ties}
    assert len(ties) > 1 and lut[(dense.pe, dense.simd)] == min(lut.values())
    conv = folding.fold([ls[0]], 64)[0]
    ties = [(p, s) for p, s in folding.options(conv) if p * s == conv.pe * conv.simd
            and folding.layer_cycles(conv, p, s) <= 64]
    assert conv.simd == min(s for _, s in ties)
