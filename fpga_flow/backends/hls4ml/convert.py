"""hls4ml (Vitis) backend: QONNX (channels-last) -> hls4ml ModelGraph -> BuildPlan.

Precisions are not left to hls4ml's defaults: the input type is the graph's
input quantizer, accumulators and layer outputs get the exact types derived in
:mod:`fpga_flow.precision`, and pass-through layers keep their input's type.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from ... import precision
from ...codegen import TEMPLATES, BuildPlan, render
from ...config import BuildConfig
from ...errors import FlowError
from ...golden import input_quantizer
from . import estimate, kernels

PROJECT_DIR = "hls"
EXACT_HEADER = "hls4ml/fpga_flow_csim_exact.h"
PASS_THROUGH = ("Pooling1D", "Pooling2D", "Reshape", "Transpose")


def _fixed_of(p) -> precision.Fixed:
    return precision.Fixed(int(p.width), int(p.integer), bool(p.signed))


def _hls_fixed(f: precision.Fixed):
    from hls4ml.backends.fpga.fpga_types import APTypeConverter
    from hls4ml.model.types import FixedPrecisionType
    # after conversion, types must carry the backend's C++ definition (ap_fixed)
    return APTypeConverter().convert(FixedPrecisionType(width=f.width, integer=f.integer, signed=f.signed))


def _is_quantizer_type(p) -> bool:
    """A type that rounds or saturates: set by a fused Quant node, not an inferred accumulator."""
    from hls4ml.model.types import RoundingMode, SaturationMode
    return (getattr(p, "rounding_mode", RoundingMode.TRN) != RoundingMode.TRN
            or getattr(p, "saturation_mode", SaturationMode.WRAP) != SaturationMode.WRAP)


HLS_LAYER_KEYS = {"reuse_factor": "ReuseFactor", "strategy": "Strategy"}  # BuildConfig.layers -> hls4ml


def convert(model: ModelWrapper, cfg: BuildConfig, output_dir: str = PROJECT_DIR):
    """Convert and set exact precisions; returns (hls4ml ModelGraph, per-layer info)."""
    import hls4ml
    kernels.register_all()  # our layers (LogSoftmax, Requant, fused conv) through hls4ml's extension API
    with _quiet():
        hlscfg = hls4ml.utils.config.config_from_onnx_model(
            model, granularity="name", backend="Vitis", default_reuse_factor=cfg.reuse_factor)
    hlscfg["Model"]["Strategy"] = "Latency"
    q = input_quantizer(model)
    _, e = np.frexp(q["scale"])  # scale = 2^(e-1)
    in_type = precision.Fixed(q["bits"], q["bits"] + int(e) - 1, q["signed"])
    hlscfg.setdefault("LayerName", {})["global_in"] = {"Precision": {"result": str(in_type)}}
    for layer_cfg in hlscfg["LayerName"].values():
        layer_cfg["Trace"] = bool(cfg.extra.get("trace", False))
    for name, over in cfg.layers.items():  # [layers.<name>] of a config file (BuildConfig validated the values)
        if name not in hlscfg["LayerName"] or name == "global_in":
            layers = [n for n in hlscfg["LayerName"] if n != "global_in" and not re.search(r"_param\d+$", n)]
            raise FlowError(f"[layers.{name}] names no layer of this model; its layers: {', '.join(layers)}")
        hlscfg["LayerName"][name].update({HLS_LAYER_KEYS[k]: v for k, v in over.items()})
    with _quiet():
        hm = hls4ml.converters.convert_from_onnx_model(
            model, output_dir=output_dir, project_name=cfg.project_name, io_type=cfg.io_type, backend="Vitis",
            part=cfg.part, clock_period=cfg.clock_ns, hls_config=hlscfg)
    fused = kernels.conv_relu.apply(hm) if cfg.fuse else []
    info = derive_precisions(hm, cfg)
    with _quiet():  # configs rendered during conversion name the types as they were then (e.g. a bias type)
        hm.apply_flow(f"{hm.config.backend.name.lower()}:apply_templates")
    for row in info:  # which hls4ml layers each fused kernel replaced
        row.update(next(({"fused_from": f["from"]} for f in fused if f["layer"] == row["layer"]), {}))
    hm.config.config["Stamp"] = hashlib.sha256(repr(info).encode()).hexdigest()[:8]
    return hm, info


def derive_precisions(hm, cfg: BuildConfig) -> list[dict]:
    """Give every MAC layer its exact accumulator and pass-through layers their input's type."""
    info = []
    for layer in hm.get_layers():
        cls = layer.class_name
        out_var = layer.get_output_variable()
        in_var = layer.get_input_variable() if layer.inputs else None
        row = {"layer": layer.name, "class": cls}
        if cls in estimate.MAC_CLASSES:
            x = _fixed_of(in_var.type.precision)
            wvar = layer.weights["weight"]
            w_frac = int(wvar.type.precision.width - wvar.type.precision.integer)
            w_codes = precision.to_codes(wvar.data, w_frac, f"{layer.name} weights")
            w_codes = w_codes.reshape(-1, w_codes.shape[-1])
            acc_frac = x.frac + w_frac
            b = layer.weights.get("bias")
            if b is not None and np.any(b.data):  # a bias on a finer grid than the products (LowerFloatScales'
                p = b.type.precision               # fixed-point bias of a last layer): the accumulator takes it
                acc_frac = max(acc_frac, int(p.width - p.integer))
            b_codes = None if b is None else precision.to_codes(b.data, acc_frac, f"{layer.name} bias")
            if b is not None and not np.any(b.data):  # no bias: hls4ml's default type (fixed<16,6>, shared name
                b.type.name = f"bias{layer.index}_t"  # model_default_t) would keep the exact csim kernel off
                b.type.precision = _hls_fixed(precision.Fixed(1, 1 - acc_frac, True))
            acc = precision.accumulator(x, w_codes, w_frac, b_codes, frac=acc_frac)
            narrow = int(cfg.extra.get("narrow_accum_by", 0))  # fault injection, for tests only
            if narrow:
                acc = precision.Fixed(acc.width - narrow, acc.integer - narrow, True)
            layer.types["accum_t"].precision = _hls_fixed(acc)
            if cls == kernels.conv_relu.LAYER:  # its result is the ReLU's quantized type, set by hls4ml
                row["result"] = str(out_var.type.precision)
            elif _is_quantizer_type(out_var.type.precision):
                # hls4ml fused the activation quantizer that follows this layer into its result type:
                # keep it (the cast from the exact accumulator rounds and saturates as Brevitas does)
                row["result"] = str(out_var.type.precision)
            else:
                out_var.type.precision = _hls_fixed(acc)
            nz = int(np.count_nonzero(w_codes))
            row.update(input=str(x), weight=str(_fixed_of(wvar.type.precision)), accum=str(acc),
                       weights=int(w_codes.size), nonzero_weights=nz, n_out=int(w_codes.shape[-1]))
        elif cls in PASS_THROUGH and in_var is not None:
            # a copy of the input's type, rounding and saturation modes included: with io_parallel a
            # reshape's type becomes its input's definition, so dropping modes would change the ReLU before it
            p = in_var.type.precision
            if "accum_t" in layer.types:
                layer.types["accum_t"].precision = copy.deepcopy(p)
            out_var.type.precision = copy.deepcopy(p)
            row["result"] = str(_fixed_of(p))
        elif cls == kernels.requant.LAYER:  # reads the exact accumulator the layer before was given
            kernels.requant.finalize(layer)
            row.update(input=str(_fixed_of(in_var.type.precision)), result=str(out_var.type.precision))
        elif cls == kernels.log_softmax.LAYER:  # sized from its input, the exact logits type set just before
            row.update(kernels.log_softmax.finalize_log_softmax(layer, _fixed_of(in_var.type.precision), _hls_fixed))
        else:
            row["result"] = str(out_var.type.precision)
        row["shape"] = [int(s) for s in out_var.shape]
        row["geometry"] = estimate.layer_geometry(layer)  # what the cost estimate reads (estimate.py)
        info.append(row)
    return info


@contextlib.contextmanager
def _quiet():
    """hls4ml prints its topology walk to stdout; keep the user's terminal for our progress."""
    with contextlib.redirect_stdout(None), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def make_plan(model: ModelWrapper, cfg: BuildConfig) -> tuple[BuildPlan, dict]:
    """The whole project in memory: hls4ml's writer output plus our testbench and csim header."""
    staging = Path(tempfile.mkdtemp(prefix="fpga_flow_hls4ml_"))
    try:
        with contextlib.chdir(staging):
            hm, layers = convert(model, cfg, output_dir=PROJECT_DIR)
            with _quiet():
                # hls4ml's writer flow starts with a pass that sets a random uuid stamp; call the
                # writer itself so the stamp we derived from the design keeps the project reproducible
                hm.config.backend.writer.write_hls(hm)
        plan = BuildPlan.from_dir(staging / PROJECT_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    out_var = hm.get_output_variables()[0]
    in_var = hm.get_input_variables()[0]
    n_in, n_out = int(np.prod(in_var.shape)), int(np.prod(out_var.shape))
    plan.add("fpga_flow/tb_batch.cpp", render("hls4ml/tb_batch.cpp.j2", project=cfg.project_name, n_in=n_in,
                                              n_out=n_out, io_type=cfg.io_type))
    plan.add("fpga_flow/fpga_flow_csim_exact.h", (TEMPLATES / EXACT_HEADER).read_bytes())
    design = design_stats(hm, plan[f"firmware/{cfg.project_name}.cpp"].decode())
    out_p = _fixed_of(out_var.type.precision)
    info = {"layers": layers, "n_in": n_in, "n_out": n_out, "input_type": str(_fixed_of(in_var.type.precision)),
            "output_type": str(out_p), "output_frac_bits": out_p.frac, "design": design,
            "digest": plan.digest()}
    return plan, info


def design_stats(hm, top_cpp: str) -> dict:
    """What the top-level function is made of, read off the generated C++: kernel calls, the streams
    between them and the bits they carry per image (shape x element width of each stream's variable)."""
    calls = re.findall(r"^\s*(\w+)::(\w+)<[^\n]*;\s*//\s*(\S+)\s*$", top_cpp, flags=re.M)
    streams, bits = [], 0
    for layer in hm.get_layers():
        v = layer.get_output_variable()
        if re.search(rf"hls::stream<[^>]*>\s+{re.escape(v.name)}\(", top_cpp):
            streams.append(v.name)
            bits += int(np.prod(v.shape)) * int(v.type.precision.width)
    return {"kernel_calls": len(calls), "kernels": [f"{ns}::{fn} ({layer})" for ns, fn, layer in calls],
            "internal_streams": len(streams), "stream_bits_per_image": bits}


def trace_layers(model: ModelWrapper, cfg: BuildConfig, x1: np.ndarray, workdir: Path) -> list[tuple[str, str, np.ndarray]]:
    """Per-layer outputs of hls4ml's own csim for one channels-last input: (layer, onnx tensor, values)."""
    with contextlib.chdir(workdir):
        hm, _ = convert(model, cfg.replace(extra={**cfg.extra, "trace": True}), output_dir="trace")
        with _quiet():
            hm.compile()
            _, traces = hm.trace(np.ascontiguousarray(x1, dtype=np.float64))
    out = []
    for layer in hm.get_layers():
        if layer.name in traces:
            out.append((layer.name, layer.outputs[0], np.asarray(traces[layer.name])))
    return out
