"""The open RTL path for dense models: Verilog from the quantized weights (da4ml), simulated with Verilator
and compared with ``==`` against the golden reference, then counted with yosys ``synth_xilinx``.

Why da4ml is driven directly and not through hls4ml's ``distributed_arithmetic`` strategy: that strategy
fails on QONNX-converted graphs (its ``bit_exact`` pass), and its requantization rounds half up where
Brevitas and QONNX round half to even. Here the cleaned QONNX graph is read as a chain of dense layers
(``extract``): the weights and biases are the exact dyadic values the Quant nodes produce, every
activation quantizer a power of two. ``trace`` rebuilds the network symbolically in da4ml, which turns each
constant matrix-vector product into a shared adder graph (no multipliers) and keeps every intermediate
exact; the requantization (ReLU, round half to even, saturation) is spelled out with adds and truncations
(``_round_half_even``). da4ml writes the Verilog and a Verilator testbench library; the outputs of
Verilator on the hardware input codes must equal the golden's integer codes.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from ... import resources
from ...errors import FlowError
from ...quant import QuantSpec, attributes, constant
from ...toolchain import verilator_env
from ...precision import to_codes

CACHE_ENV = "FPGA_FLOW_RTL_CACHE"
TOP = "fpga_flow_rtl"  # Verilog module name of the network


@dataclass(frozen=True)
class ActQuant:
    """A power-of-two quantizer: codes in [lo, hi], value = code * 2^-frac; round half to even."""

    frac: int
    bits: int
    signed: bool
    narrow: bool

    @property
    def code_range(self) -> tuple[int, int]:
        if self.signed:
            return -(1 << (self.bits - 1)) + int(self.narrow), (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1 - int(self.narrow)


@dataclass
class Dense:
    """``y = x @ w + b`` (w: (n_in, n_out)), then an optional ReLU and an optional quantizer."""

    name: str
    w: np.ndarray  # exact dyadic values (float64)
    b: np.ndarray
    relu: bool = False
    quant: ActQuant | None = None


@dataclass
class DenseNet:
    input: ActQuant
    layers: list[Dense] = field(default_factory=list)

    @property
    def n_in(self) -> int:
        return self.layers[0].w.shape[0]

    def weights(self) -> int:
        return sum(int(ly.w.size) for ly in self.layers)

    def nonzero_weights(self) -> int:
        return sum(int(np.count_nonzero(ly.w)) for ly in self.layers)


# ------------------------------------------------------------------------------------------- the graph

def _pow2_frac(scale: float, what: str) -> int:
    e = math.log2(scale) if scale > 0 else float("nan")
    if not math.isfinite(e) or e != round(e):
        raise FlowError(f"{what}: scale {scale!r} is not a power of two; the RTL path needs power-of-two "
                        "quantizers (Brevitas *FixedPoint)")
    return -int(round(e))


def _act_quant(model: ModelWrapper, node) -> ActQuant:
    what = f"Quant node {node.name or node.output[0]}"
    q = QuantSpec.of(model, node)
    if not q.per_tensor or q.zeropt.size != 1:
        raise FlowError(f"{what}: per-channel activation quantizers are not supported by the RTL path")
    if not q.zero_point_is_zero:
        raise FlowError(f"{what}: zero point {float(q.zeropt.ravel()[0])} is not supported by the RTL path (only 0)")
    if q.rounding_mode != "ROUND":
        raise FlowError(f"{what}: rounding mode {q.rounding_mode} is not supported by the RTL path "
                        "(only ROUND, half to even)")
    if q.narrow and not q.signed:
        raise FlowError(f"{what}: a narrow unsigned quantizer is not supported by the RTL path")
    return ActQuant(_pow2_frac(q.scalar_scale(), what), q.int_bits, q.signed, q.narrow)


def _const(model: ModelWrapper, tensor: str) -> np.ndarray | None:
    """An initializer, or the output of a Quant node over initializers (quantized weights and biases)."""
    v = model.get_initializer(tensor)
    if v is not None:
        return np.asarray(v, dtype=np.float64)
    y = constant(model, tensor)
    return None if y is None else np.asarray(y, dtype=np.float32).astype(np.float64)


def extract(model: ModelWrapper) -> DenseNet:
    """The cleaned QONNX graph as input quantizer -> [Gemm|MatMul(+Add) -> Relu? -> Quant?]* (or refuse)."""
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    consumers = model.find_consumers(iname) or []
    if len(consumers) != 1 or consumers[0].op_type != "Quant":
        raise FlowError("the RTL path needs an input quantizer (a Quant node right after the graph input)")
    net = DenseNet(_act_quant(model, consumers[0]))
    t = consumers[0].output[0]
    const_nodes = {n.output[0] for n in model.graph.node if n.op_type == "Quant" and _const(model, n.output[0])
                   is not None}
    while t != oname:
        nxt = [n for n in (model.find_consumers(t) or []) if n.output[0] not in const_nodes]
        if len(nxt) != 1:
            raise FlowError(f"the RTL path supports a chain of dense layers; tensor {t} has {len(nxt)} readers")
        node = nxt[0]
        if node.op_type in ("Gemm", "MatMul"):
            net.layers.append(_dense(model, node))
            t = node.output[0]
            if node.op_type == "MatMul":
                t = _add_bias(model, net.layers[-1], t)
        elif node.op_type == "Relu" and net.layers and not net.layers[-1].relu and net.layers[-1].quant is None:
            net.layers[-1].relu = True
            t = node.output[0]
        elif node.op_type == "Quant" and net.layers and net.layers[-1].quant is None:
            net.layers[-1].quant = _act_quant(model, node)
            t = node.output[0]
        else:
            raise FlowError(f"the RTL path supports dense layers (Gemm/MatMul, Relu, Quant) only; node "
                            f"{node.name or node.output[0]} is {node.op_type}")
    if not net.layers:
        raise FlowError("the RTL path found no dense layer in the graph")
    return net


def _dense(model: ModelWrapper, node) -> Dense:
    name = node.name or node.output[0]
    w = _const(model, node.input[1])
    if w is None or w.ndim != 2:
        raise FlowError(f"{node.op_type} {name}: its weights are not a constant matrix")
    if node.op_type == "MatMul":
        return Dense(name, w, np.zeros(w.shape[1]))
    a = attributes(node)
    if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
        raise FlowError(f"Gemm {name}: transA/alpha/beta other than 0/1/1 are not supported by the RTL path")
    w = w.T if a.get("transB", 0) else w
    b = _const(model, node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[1])
    if b is None:
        raise FlowError(f"Gemm {name}: its bias is not constant")
    return Dense(name, w, np.broadcast_to(np.ravel(b), (w.shape[1],)).astype(np.float64))


def _add_bias(model: ModelWrapper, layer: Dense, t: str) -> str:
    nxt = model.find_consumers(t) or []
    if len(nxt) == 1 and nxt[0].op_type == "Add":
        other = [i for i in nxt[0].input if i != t]
        b = _const(model, other[0]) if other else None
        if b is not None:
            layer.b = np.broadcast_to(np.ravel(b), layer.b.shape).astype(np.float64)
            return nxt[0].output[0]
    return t


# ------------------------------------------------------------------------------------------- the trace

def _round_half_even(a, f: int, frac_in: int):
    """``a`` rounded to the grid 2^-f, ties to even, with adds and truncations only (da4ml has floor and
    round-half-up). With r = the remainder below 2^-f and lsb the last kept bit of floor(a):
    floor(a + 2^-(f+1) - 2^-F + lsb * 2^-F) rounds up iff r > 1/2 ulp, or r == 1/2 ulp and lsb == 1,
    for any F >= f + 1 that puts ``a`` on its grid (here F = the finest input fraction)."""
    if frac_in <= f:
        return a
    k, i, _ = (np.max(v) for v in a.kif)
    k, i = int(k), int(i) + 2
    fl = a.quantize(k, i, f, "WRAP", "TRN")
    fl2 = a.quantize(k, i, f - 1, "WRAP", "TRN")
    lsb = (fl - fl2) * 2.0 ** (f - frac_in)  # 0 or 2^-F
    return (a + lsb + (2.0 ** (-f - 1) - 2.0 ** -frac_in)).quantize(k, i + 1, f, "WRAP", "TRN")


def _requantize(a, q: ActQuant):
    """Brevitas/QONNX ``Quant``: round half to even on the grid 2^-frac, then saturate to the code range
    (SAT: [-2^(b-1), 2^(b-1)-1] or [0, 2^b-1]; SAT_SYM for narrow signed: [-(2^(b-1)-1), 2^(b-1)-1])."""
    frac_in = int(np.max(a.kif[2]))
    y = _round_half_even(a, q.frac, frac_in)
    mode = "SAT_SYM" if q.narrow else "SAT"
    return y.quantize(int(q.signed), q.bits - int(q.signed) - q.frac, q.frac, mode, "TRN")


def trace(net: DenseNet, fault: tuple[int, int, int, float] | None = None):
    """The network as da4ml combinational logic. ``fault`` = (layer, input, output, delta in weight units):
    a deliberately wrong weight, for testing that verification catches it."""
    from da4ml.trace import FixedVariableArrayInput, HWConfig, comb_trace
    q = net.input
    inp = FixedVariableArrayInput((net.n_in,), hwconf=HWConfig(1, -1, -1))
    x = inp.quantize(int(q.signed), q.bits - int(q.signed) - q.frac, q.frac, "WRAP", "TRN")
    for li, ly in enumerate(net.layers):
        w = ly.w.copy()
        if fault is not None and fault[0] == li:
            w[fault[1], fault[2]] += fault[3]
        acc = x @ w + ly.b
        if ly.relu:
            acc = acc.relu()
        x = _requantize(acc, ly.quant) if ly.quant is not None else acc
    return comb_trace(inp, x)


def default_fault(net: DenseNet) -> tuple[int, int, int, float]:
    """One weight of the last layer (output 0, its largest weight) off by one weight step: every image
    whose input to it is non-zero gets a different logit."""
    ly = net.layers[-1]
    i = int(np.argmax(np.abs(ly.w[:, 0])))
    nz = np.abs(ly.w[ly.w != 0])
    step = float(2.0 ** math.floor(math.log2(nz.min()))) if nz.size else 1.0
    return len(net.layers) - 1, i, 0, step


# ---------------------------------------------------------------------------------------- Verilator

def cache_dir() -> Path:
    """Verilated testbench libraries by digest: $FPGA_FLOW_RTL_CACHE, else <user cache>/rtl-cache."""
    return resources.cache_dir("rtl-cache", os.environ.get(CACHE_ENV))


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def write_project(comb, folder: Path):
    """da4ml's Verilog project (src/: the network, its IO wrapper, static cells; sim/: the testbench binder)."""
    from da4ml.codegen.rtl.rtl_model import VerilogModel
    m = VerilogModel(comb, TOP, folder, print_latency=False)
    m.write()
    return m


def verilate(comb, cache: Path | None = None, jobs: int | None = None, progress=None) -> tuple[object, dict]:
    """Write the Verilog and build the Verilator library, or reuse the one built for the same sources."""
    from da4ml.codegen.rtl.rtl_model import VerilogModel
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"tmp-{os.getpid()}-", dir=cache))
    try:
        write_project(comb, tmp)
        digest = _digest(tmp)
        final = cache / digest[:16]
        info = {"digest": digest, "cached": True, "verilator_build_s": 0.0}
        if not list(final.glob(f"sim/lib{TOP}_wrapper_*.so")):
            t0 = time.perf_counter()
            m = VerilogModel(comb, TOP, tmp, print_latency=False)
            env = verilator_env()
            old = os.environ.copy()
            os.environ.update(env)
            try:
                m._compile(openmp=False, nproc=jobs or os.cpu_count() or 1)
            except RuntimeError as e:
                raise FlowError(f"the Verilator build failed in {tmp}: {e}") from e
            finally:
                os.environ.clear()
                os.environ.update(old)
            info.update(cached=False, verilator_build_s=round(time.perf_counter() - t0, 2))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        model = VerilogModel(comb, TOP, final, print_latency=False)
        model._load_lib()
        return model, info
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def simulate(model, comb, x_codes: np.ndarray) -> np.ndarray:
    """Run the Verilated design on integer input codes (N, n_in); returns the raw output codes (N, n_out)
    on the grid 2^-f_out (f_out = the finest output fraction), as int64, without any float conversion."""
    import ctypes

    from da4ml.codegen.rtl.rtl_model import at_path, get_io_kifs
    kin, kout = get_io_kifs(comb)
    k, i, f = (int(np.max(v)) for v in kout)
    if max(int(np.max(kin[0])) + int(np.max(kin[1])) + int(np.max(kin[2])), k + i + f) > 32:
        raise FlowError(f"an input or output of the design is wider than 32 bits ({k + i + f}); the Verilator "
                        "testbench exchanges int32 words")
    n_in, n_out = comb.shape
    inp = np.ascontiguousarray(x_codes, dtype=np.int32).ravel()
    out = np.empty(len(x_codes) * n_out, dtype=np.int32)
    with at_path(model._path / "src/memfiles"):
        model._lib.inference(inp.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
                             out.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), len(x_codes), 1)
    a, b = 1 << (k + i + f), k << (i + f)
    return ((out.astype(np.int64) + b) % a - b).reshape(len(x_codes), n_out)


def io_fracs(comb) -> tuple[int, int]:
    from da4ml.codegen.rtl.rtl_model import get_io_kifs
    kin, kout = get_io_kifs(comb)
    return int(np.max(kin[2])), int(np.max(kout[2]))


def input_codes(comb, hw_input: np.ndarray) -> np.ndarray:
    """The hardware input values (the input quantizer's outputs) as the integer words the design reads."""
    f_in, _ = io_fracs(comb)
    return to_codes(hw_input.reshape(len(hw_input), -1), f_in, "RTL input")


def golden_codes(comb, ref: np.ndarray) -> np.ndarray:
    _, f_out = io_fracs(comb)
    return to_codes(ref.reshape(len(ref), -1), f_out, "golden output on the RTL output grid")


def get_io_bits(comb) -> tuple[list[int], list[int]]:
    """Bits of every input and output word of the design (sign + integer + fraction)."""
    from da4ml.codegen.rtl.rtl_model import get_io_kifs
    kin, kout = get_io_kifs(comb)
    return [int(v) for v in kin.astype(int).sum(axis=0)], [int(v) for v in kout.astype(int).sum(axis=0)]
