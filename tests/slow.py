"""The tests `make test` leaves out (marker ``slow``, applied in tests/conftest.py); `make test-all` runs them
all (nightly). Each entry: test id (a parametrized test's id without its [...] means every case) -> the
default-run tests that cover the same contract with a smaller case, and why the listed one is slow.
tests/unit/test_slow_list.py checks that every id and every cover exists and that no cover is itself slow.
Measured wall times: docs/testing.md."""

from __future__ import annotations

SLOW: dict[str, tuple[tuple[str, ...], str]] = {
    "tests/reliability/test_wide_dense_csim.py::test_784_3000_2_dense_mlp_runs_in_csim_bit_exact": (
        ("tests/reliability/test_wide_dense_stack.py::test_the_stack_holds_every_layers_products",
         "tests/reliability/test_wide_dense_stack.py::test_the_compiler_is_given_that_stack"),
        "g++ of a 784x3000 fully unrolled dense layer"),
    "tests/csim/test_flow_csim.py::test_convnet_shipped_checkpoint_bit_exact_on_200_mnist_images": (
        ("tests/csim/test_flow_csim.py::test_convnet_w2a2_shipped_checkpoint_bit_exact_with_fused_kernels",),
        "the shipped W4A4 convnet on 200 MNIST images plus 40 through hls4ml's own (unbatched) csim"),
    "tests/csim/test_zoo.py::test_zoo_checkpoint_bit_exact_on_200_mnist_images[convrelu]": (
        ("tests/csim/test_zoo.py::test_zoo_checkpoint_bit_exact_on_200_mnist_images",  # [dwsep], [mlp] stay
         "tests/csim/test_fusion_csim.py::test_fused_and_unfused_designs_are_both_bit_exact"),
        "a shipped conv+ReLU checkpoint on 200 MNIST images; the same layer kinds are in the convnet W2A2 and "
        "fusion tests"),
    "tests/csim/test_float_scaled_csim.py::test_shipped_float_scaled_checkpoint_bit_exact[convnet_bn-4]": (
        ("tests/csim/test_float_scaled_csim.py::test_shipped_float_scaled_checkpoint_bit_exact",  # [mlp_bn-2]
         "tests/csim/test_float_scaled_csim.py::test_float_scaled_net_bit_exact"),
        "the shipped float-scaled convnet with BatchNorm on 200 MNIST images; small float-scaled conv nets with "
        "BatchNorm and per-channel scales stay in the default run"),
    "tests/fuzz/test_fuzz_flow.py::test_random_supported_models_are_bit_exact": (
        ("tests/fuzz/test_fuzz_flow.py::test_fuzz_runner_fixed_seed",
         "tests/fuzz/test_fuzz_flow.py::test_random_models_are_supported_or_refused_by_name"),
        "four random models through the whole flow, g++ included; the fixed-seed runner test builds three the "
        "same way (exact, never silently wrong) and `make fuzz` runs hundreds nightly"),
}
