"""The LogSoftmax HLS kernel, compiled with g++, equals its numpy model (``==``), alone and inside a build.

1. A small testbench compiles the kernel header with configs rendered exactly as in a project
   (io_parallel, io_stream with one pack and with one value per pack) and runs it on edge-case codes for
   several input types; its outputs must equal ``fpga_flow.log_softmax.forward_codes`` with ``==``.
2. A tiny Brevitas dense model ending in log_softmax goes through ``fpga_flow.build`` (the ONNX LogSoftmax
   node becomes our layer through hls4ml's extension API) with inputs that give equal logits, spreads
   across the logits' type and ties; the csim equals the model on the golden logits, within the stated
   bound of torch.log_softmax, with the logits' argmax.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fpga_flow import BuildConfig, api, log_softmax
from fpga_flow.backends.hls4ml.kernels import log_softmax as hls4ml_ext
from fpga_flow.precision import Fixed
from tests.conftest import needs_gxx
from tests.log_softmax_cases import edge_cases

pytestmark = [pytest.mark.csim, needs_gxx]

SPECS = [(10, Fixed(13, 7)), (10, Fixed(12, 2)), (3, Fixed(6, 2)), (1, Fixed(8, 3)), (17, Fixed(8, 4, False)),
         (4, Fixed(4, 6)), (100, Fixed(20, 2)), (5, Fixed(9, -3))]

TB = r"""
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include "ap_fixed.h"
#include "hls_stream.h"
#include "nnet_types.h"
#include "nnet_fpga_flow_log_softmax.h"

{configs}

template <class T> static long long code(T v, int frac) {{ return (long long)std::ldexp(v.to_double(), frac); }}

template <class in_T, class out_T, class CONFIG_T> static int run(const char *inpath, const char *outpath) {{
    const unsigned N = CONFIG_T::n_in;
    std::FILE *f = std::fopen(inpath, "r"), *g = std::fopen(outpath, "w");
    if (!f || !g) return 2;
    long long c;
    for (;;) {{
        in_T x[N];
        out_T y[N];
        unsigned j = 0;
        for (; j < N && std::fscanf(f, "%lld", &c) == 1; j++) x[j] = std::ldexp((double)c, -CONFIG_T::in_frac);
        if (j == 0) break;
        if (j != N) return 3;
        fpga_flow::log_softmax<in_T, out_T, CONFIG_T>(x, y);  // io_parallel
        hls::stream<nnet::array<in_T, N> > a_in;
        hls::stream<nnet::array<out_T, N> > a_out;
        nnet::array<in_T, N> pack;
        for (j = 0; j < N; j++) pack[j] = x[j];
        a_in.write(pack);
        fpga_flow::log_softmax<nnet::array<in_T, N>, nnet::array<out_T, N>, CONFIG_T>(a_in, a_out);
        nnet::array<out_T, N> packed = a_out.read();
        hls::stream<nnet::array<in_T, 1> > b_in;
        hls::stream<nnet::array<out_T, 1> > b_out;
        for (j = 0; j < N; j++) {{
            nnet::array<in_T, 1> one;
            one[0] = x[j];
            b_in.write(one);
        }}
        fpga_flow::log_softmax<nnet::array<in_T, 1>, nnet::array<out_T, 1>, CONFIG_T>(b_in, b_out);
        for (j = 0; j < N; j++) std::fprintf(g, "%lld ", code(y[j], CONFIG_T::out_frac));
        for (j = 0; j < N; j++) std::fprintf(g, "%lld ", code(packed[j], CONFIG_T::out_frac));
        for (j = 0; j < N; j++) std::fprintf(g, "%lld ", code(b_out.read()[0], CONFIG_T::out_frac));
        std::fprintf(g, "\n");
    }}
    std::fclose(f);
    return std::fclose(g) == 0 ? 0 : 2;
}}

int main(int argc, char **argv) {{
    if (argc != 4) return 1;
    switch (std::atoi(argv[1])) {{
{cases}
    }}
    return 1;
}}
"""


def _ap(t: Fixed) -> str:
    return f"ap_{'' if t.signed else 'u'}fixed<{t.width}, {t.integer}>"


@pytest.fixture(scope="module")
def kernel_tb(tmp_path_factory):
    import hls4ml
    tpl = Path(hls4ml.__file__).parent / "templates" / "vivado"
    d = tmp_path_factory.mktemp("ls_kernel")
    specs = [log_softmax.spec_for(n, t) for n, t in SPECS]
    configs = "\n".join(hls4ml_ext.config_cpp(s, f"cfg{i}", f"case{i}") for i, s in enumerate(specs))
    cases = "\n".join(f"        case {i}: return run<{_ap(s.in_type)}, {_ap(s.out_type)}, cfg{i}>(argv[2], argv[3]);"
                      for i, s in enumerate(specs))
    (d / "tb.cpp").write_text(TB.format(configs=configs, cases=cases))
    cmd = ["g++", "-O1", "-std=c++17", "-w", f"-I{hls4ml_ext.HEADER.parent}", f"-I{tpl / 'ap_types'}",
           f"-I{tpl / 'nnet_utils'}", str(d / "tb.cpp"), "-o", str(d / "tb")]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    return d / "tb", specs


@pytest.mark.parametrize("i", range(len(SPECS)), ids=[f"n{n}-{t}" for n, t in SPECS])
def test_kernel_equals_numpy_model_on_edge_cases(kernel_tb, i, tmp_path):
    binary, specs = kernel_tb
    spec = specs[i]
    codes, _ = edge_cases(spec, n_random=300, seed=i)
    np.savetxt(tmp_path / "in.txt", codes, fmt="%d")
    p = subprocess.run([str(binary), str(i), str(tmp_path / "in.txt"), str(tmp_path / "out.txt")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    got = np.loadtxt(tmp_path / "out.txt", dtype=np.int64, ndmin=2).reshape(len(codes), 3, spec.n)
    want = log_softmax.forward_codes(spec, codes)
    for k, io in enumerate(("io_parallel", "io_stream (one pack)", "io_stream (one value per pack)")):
        assert np.array_equal(got[:, k], want), io


# -- a tiny model ending in log_softmax, through the whole flow ----------------------------------------------


class _TinyDense(nn.Module):
    def __init__(self, n: int = 10):
        super().__init__()
        from brevitas import nn as qnn
        from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int32Bias
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
        self.fc = qnn.QuantLinear(n, n, weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int32Bias)

    def forward(self, x):
        return F.log_softmax(self.fc(self.inp(x)), dim=1)


def _tiny(n: int = 10) -> nn.Module:
    """logits = x (identity weights, zero bias): the inputs set the logits, across their type's range."""
    torch.manual_seed(0)
    net = _TinyDense(n)
    with torch.no_grad():
        net.fc.weight.copy_(torch.eye(n))
        net.fc.bias.zero_()
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(torch.rand(32, n) * 2 - 1)
    return net.eval()


def _tiny_inputs(n: int = 10) -> np.ndarray:
    rng = np.random.default_rng(1)
    rows = [np.full(n, v) for v in (-1.0, 0.0, 0.5, 1.0)]  # all equal (1.0 saturates the input quantizer)
    rows += [np.where(np.arange(n) == k, 1.0, -1.0) for k in range(n)]  # one at the top, the rest at the bottom
    rows += [np.where(np.arange(n) == k, -1.0, 1.0) for k in range(3)]  # one at the bottom
    rows += [np.where(np.arange(n) < 2, 1.0, -1.0), np.where(np.arange(n) % 3 == 0, 0.25, 0.0)]  # tied maxima
    rows += list(rng.uniform(-1, 1, size=(20, n))) + list(0.9 + 0.01 * rng.integers(0, 3, size=(6, n)))
    return np.asarray(rows, dtype=np.float32)


@pytest.mark.parametrize("io_type", ["io_stream", "io_parallel"])
def test_tiny_dense_log_softmax_through_the_flow(io_type, tmp_path):
    x = _tiny_inputs()
    cfg = BuildConfig(model="tinyls", io_type=io_type, stock_check_images=len(x))
    rep = api.build(_tiny(), (10,), name="tinyls", out_dir=tmp_path, config=cfg, images=x, progress=False)
    assert rep["exact_matches"] == len(x) and all(c["exact_matches"] == c["n"] for c in rep["comparisons"])
    names = [c["name"] for c in rep["comparisons"]]
    assert "HLS csim vs QONNX golden logits -> LogSoftmax model" in names
    assert "Brevitas torch (cpu) vs QONNX (logits)" in names
    ls = rep["log_softmax"]
    assert rep["output"]["kind"] == "log_softmax" and rep["output"]["type"] == ls["output_type"]
    assert ls["images_within_bound"] == ls["argmax_agreement"] == len(x)
    assert 0 < ls["max_abs_error_vs_float64"] <= ls["bound"]
    assert ls["argmax_ties_in_logits"] >= 2 + 4  # the tied rows and the all-equal rows
    # independently of the report: csim == the model on the golden logits, and those reach the type's bottom
    saved = np.load(tmp_path / "tinyls" / "golden.npz")
    csim = np.load(tmp_path / "tinyls" / "csim.npz")["csim"]
    spec = log_softmax.spec_from_info(__import__("json").loads((tmp_path / "tinyls" / "plan_info.json").read_text()))
    assert np.array_equal(csim, log_softmax.forward(spec, saved["qonnx"]))
    assert np.array_equal(saved["qonnx"], saved["torch_cpu"])
    lo, hi = spec.in_type.code_range()  # the logits use the type's top bit at both ends (the exact ends are
    codes = log_softmax.to_codes(saved["qonnx"], spec.in_frac)  # unreachable: narrow-range quantizers)
    assert codes.min() < lo // 2 and codes.max() > hi // 2
    assert "ends at the logits" not in (tmp_path / "tinyls" / "report.md").read_text()
