"""A whole streaming design through Verilog and Verilator, compared with ``==`` against ``spec.reference``.

The tiny model: 8x8x1 unsigned 4-bit input -> conv 3x3 pad 1 to 4 channels (random weights and bias, random
sorted thresholds, one channel counting down) -> max pool 2 -> dense 64 -> 10, the accumulator itself out.
It runs 50 random images back to back; a second build with one weight changed in the design, not in the
reference, must fail that comparison (and equal the reference of the changed model), so the comparison
is shown to see a single weight. Verilator builds are cached in the user cache folder (``resources.cache_dir("verilator")``).
"""

from __future__ import annotations

import numpy as np
import pytest

from fpga_flow.resources import cache_dir
from fpga_flow.backends.rtl import cost, verilator
from fpga_flow.backends.rtl.design import Design
from fpga_flow.backends.rtl.hw import spec
from fpga_flow.backends.rtl.hw.mvu import acc_bits
from fpga_flow.backends.rtl.stream_flow import fifo_depths
from tests.conftest import needs_gxx

pytestmark = [pytest.mark.rtl, needs_gxx]

N_IMAGES = 50


def tiny_model(rng: np.random.Generator, x: np.ndarray) -> list:
    conv = spec.Mac("conv", (8, 8, 1), rng.integers(-4, 4, size=(4, 3, 3, 1)), in_bits=4, in_signed=False,
                    bias=rng.integers(-8, 9, size=4), k=3, pad=1, pe=2, simd=1)
    acc = spec.accumulate(conv, x)  # bias included: thresholds where these images' accumulators lie
    T = np.sort(rng.integers(int(acc.min()), int(acc.max()) + 1, size=(4, 15)), axis=1)
    direction = np.array([1, 1, -1, 1])
    base = np.where(direction < 0, 15, 0)
    conv = spec.Mac(**{**conv.__dict__, "requant": spec.Requant(T, base, direction), "out_bits": 4,
                       "out_signed": False})
    pool = spec.MaxPool((8, 8, 4), 2, bits=4, signed=False)
    dense = spec.Mac("dense", (4, 4, 4), rng.integers(-4, 4, size=(10, 64)), in_bits=4, in_signed=False,
                     bias=rng.integers(-50, 51, size=10), pe=2, simd=4)
    dense = spec.Mac(**{**dense.__dict__, "out_bits": acc_bits(dense), "out_signed": True})
    return [conv, pool, dense]


def run(layers: list, x: np.ndarray) -> tuple[np.ndarray, dict]:
    """Simulated codes and cycles of the design the flow would build (its FIFO depths included)."""
    return verilator.simulate_design(Design(layers, input_lanes=1, depths=fifo_depths(layers)), x,
                                     cache_dir("verilator"), timeout_s=60)


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(12)
    x = rng.integers(0, 16, size=(N_IMAGES, 8, 8, 1))
    return tiny_model(rng, x), x


def test_tiny_conv_model_in_verilator_equals_reference(model):
    layers, x = model
    want = spec.reference(layers, x).reshape(N_IMAGES, -1)
    codes = spec.forward(layers[0], x)
    assert len(np.unique(codes)) == 16  # the thresholds exercise every 4-bit code
    got, cycles = run(layers, x)
    print("tiny conv model:", cycles)
    assert got.shape == want.shape
    assert np.array_equal(got, want)
    assert cycles["cycles_per_image"] == cost.cycles_per_image(layers)  # the conv's 2 x 9 x 64 cycles


def test_one_changed_weight_fails_the_comparison(model):
    layers, x = model
    want = spec.reference(layers, x).reshape(N_IMAGES, -1)
    dense = layers[-1]
    pooled = spec.reference(layers[:-1], x).reshape(N_IMAGES, -1)
    j = int(np.argmax((pooled != 0).sum(0)))  # an input the images really drive
    w = dense.weights.copy()
    w[3, j] += 1
    faulty = layers[:-1] + [spec.Mac(**{**dense.__dict__, "weights": w})]
    want_faulty = spec.reference(faulty, x).reshape(N_IMAGES, -1)
    assert not np.array_equal(want_faulty, want)  # the change is observable on these images
    got, _ = run(faulty, x)
    assert not np.array_equal(got, want)
    assert np.array_equal(got, want_faulty)


@pytest.mark.parametrize("pe,simd", [(4, 3), (2, 9)])
def test_multitap_conv_in_verilator_equals_reference(model, pe, simd):
    """The same model with its 1-channel conv taking several kernel taps a beat (SIMD 3: a kernel row; 9: the
    whole window), its PE changed too: ``==`` the reference, and the simulated steady state is the cycle
    model's, exactly (the slowest of: the conv's folds, the window's 64 input beats, the dense layer's 80
    cycles); with amaranth's depth-2 FIFOs, which pass a beat every second cycle, (2, 9) measured 256."""
    from dataclasses import replace

    layers, x = model
    folded = [replace(layers[0], pe=pe, simd=simd), *layers[1:]]
    want = spec.reference(folded, x).reshape(N_IMAGES, -1)
    got, cycles = run(folded, x)
    print(f"multi-tap conv pe={pe} simd={simd}:", cycles)
    assert np.array_equal(got, want)
    assert cycles["cycles_per_image"] == cost.cycles_per_image(folded) < 64 * (4 // pe) * 9


def test_a_1x1_conv_of_several_neuron_folds_keeps_the_pipeline_at_its_slowest_layer():
    """dwsep folded for 10,000 images/s simulated 11,160 cycles/image against the model's 9,216: a 1x1 conv
    folded into NF > 1 neuron folds takes its vector during the first fold only, and a depth-3 FIFO made the
    depthwise layer in front of it stall through the others. Here a depthwise PE 2 -> 1x1 conv PE 8 SIMD 1
    (NF 4) pair: 1,312 cycles/image with depth-3 FIFOs; with ``fifo_depths``' vector-deep FIFO, the model's
    1,152 (the depthwise layer's 8 x 9 cycles a pixel), and ``==`` the reference."""
    from tests.rtl.test_hw_mvu import make_layer

    rng = np.random.default_rng(3)
    x = rng.integers(0, 16, size=(6, 6, 6, 16))
    dw = make_layer(rng, "depthwise", c=16, oc=16, k=3, hw=6, pe=2, simd=2, in_bits=4, in_signed=False,
                    requant=True, out_bits=4, out_signed=False, x=x[0])
    pw = make_layer(rng, "conv", c=16, oc=32, k=1, hw=4, pe=8, simd=1, in_bits=4, in_signed=False, requant=False,
                    out_bits=0, out_signed=True, x=spec.forward(dw, x)[0])
    layers = [dw, pw]
    assert fifo_depths(layers) == {0: 3 + 16 // 2}
    got, cycles = verilator.simulate_design(Design(layers, input_lanes=16, depths=fifo_depths(layers)), x,
                                            cache_dir("verilator"), timeout_s=60)
    assert np.array_equal(got, spec.reference(layers, x).reshape(len(x), -1))
    assert cycles["cycles_per_image"] == cost.cycles_per_image(layers) == 16 * 9 * 8


def test_a_dense_layer_fed_narrower_than_its_simd_keeps_its_folding_rate():
    """mlp at 1,000,000 images/s simulated 122 cycles/image against the model's 98: its last dense layer
    (SIMD 4, NF 5) took its vector from a PE 1 layer through a 1 -> 4 lane converter, whose vector-deep FIFO sat
    on the narrow side, so the first neuron fold ran at one wide beat per 4 cycles. The FIFO now sits behind
    the converter. Here dense PE 1 (16 cycles a vector) -> dense PE 2 x SIMD 4 (NF 4 x SF 4 = 16)."""
    from tests.rtl.test_hw_mvu import make_layer

    rng = np.random.default_rng(4)
    x = rng.integers(0, 16, size=(8, 1, 1, 16))
    d1 = make_layer(rng, "dense", c=16, oc=16, k=1, hw=1, pe=1, simd=16, in_bits=4, in_signed=False,
                    requant=True, out_bits=4, out_signed=False, x=x[0])
    d2 = make_layer(rng, "dense", c=16, oc=8, k=1, hw=1, pe=2, simd=4, in_bits=4, in_signed=False, requant=False,
                    out_bits=0, out_signed=True, x=spec.forward(d1, x)[0])
    layers = [d1, d2]
    design = Design(layers, input_lanes=16, depths=fifo_depths(layers))
    assert "l1_wfifo" in [name for name, _ in design.stages]
    got, cycles = verilator.simulate_design(design, x, cache_dir("verilator"), timeout_s=60)
    assert np.array_equal(got, spec.reference(layers, x).reshape(len(x), -1))
    assert cycles["cycles_per_image"] == cost.cycles_per_image(layers) == 16
