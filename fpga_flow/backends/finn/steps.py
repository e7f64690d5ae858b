"""FINN's estimate-only build, stage by stage, as plain functions over ONNX graphs (no build state).

The stages and the transformations in each are those of finn-plus 1.6.1's ``estimate_only_dataflow_steps``
(``finn/builder/build_dataflow_steps.py``), called directly (see ``finn_compat`` for why not through the
builder), with three choices of ours, each stated in docs/finn.md:

- the input quantizer runs on the host, as in the hls4ml design: the dataflow's input is its integer
  codes (FINN's examples feed UINT8 the same way), instead of a float MultiThreshold FINN would estimate
  at 100,000 LUT;
- the dequantization after the last layer (float32 ``* scale + bias``) stays on the host too
  (FINN's ``InferElementwiseBinaryOperation`` filter, as its ``reject_output_dequant`` does for the Mul);
- thresholds round ties to even, as Brevitas does (``finn_ties``).

:func:`execute` runs any stage's graph with FINN's Python execution; the flow compares its outputs with
the golden reference using ``==``.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from ...errors import FlowError
from . import compat as finn_compat
from . import fit as finn_fit
from . import report as finn_report
from . import ties as finn_ties

HW_DOMAINS = (finn_compat.HW_DOMAIN, f"{finn_compat.HW_DOMAIN}.hls", f"{finn_compat.HW_DOMAIN}.rtl")

# op type of the cleaned QONNX graph -> what of it the FINN path supports (shown in refusals)
SUPPORTED_OPS = {
    "Quant": "constant power-of-two scales, zero point 0; activations: ROUND (half to even), at most 8 bits",
    "Conv": "2-D, groups=1 or depthwise (groups = in = out channels), weights and bias from Quant nodes",
    "Gemm": "fully connected layer (QuantLinear) with bias",
    "MatMul": "fully connected layer",
    "Add": "a constant bias after a fully connected layer",
    "Relu": "followed by its quantizer (QuantReLU)",
    "MaxPool": "max pooling",
    "Reshape": "flatten before a fully connected layer",
    "Flatten": "flatten before a fully connected layer",
    "LogSoftmax": "only as the last node: the FINN design ends at the logits, which are verified",
}
MIN_FRAMES_PER_WORKER = 200  # below this a worker's start-up (importing FINN, ~2 s) costs more than it saves
MAX_ACT_BITS = 8  # FINN's default max_multithreshold_bit_width; wider quantizers become Requant (ties up)


@dataclass(frozen=True)
class FinnOptions:
    """What shapes FINN's design: target part and clock, throughput target, FINN's MVAU width limit."""

    part: str = "xc7z020clg400-1"
    clock_ns: float = 10.0
    target_fps: int = 10_000
    mvau_wwidth_max: int = 36  # FINN's DataflowBuildConfig default
    fit: bool = False  # instead of target_fps: the highest fps whose FINN estimate fits the part (fit.py)

    @property
    def target_cycles_per_frame(self) -> int:
        return int(1e9 / self.clock_ns / self.target_fps)  # as DataflowBuildConfig._resolve_cycles_per_frame


@dataclass
class InputSpec:
    """The graph input quantizer, done on the host: hardware input = integer codes of this type."""

    scale: float
    bits: int
    signed: bool
    narrow: bool
    bipolar: bool = False  # a 1-bit input quantizer (BipolarQuant): codes -1/+1, FINN's BIPOLAR

    @property
    def datatype(self) -> str:
        if self.bipolar:
            return "BIPOLAR"
        return f"{'INT' if self.signed else 'UINT'}{self.bits}"

    def codes(self, quantized: np.ndarray) -> np.ndarray:
        """Integer codes of values already on the quantizer's grid (the golden's hardware input)."""
        c = np.round(quantized / np.float32(self.scale)).astype(np.float32)
        if not np.array_equal(c * np.float32(self.scale), quantized):
            raise FlowError("the quantized input is not on its quantizer's grid: cannot feed integer codes")
        return c


@dataclass
class Design:
    """A stage's graph; after partitioning, ``model`` is the dataflow part and ``parent`` runs it between
    the host nodes."""

    model: ModelWrapper
    parent: ModelWrapper | None = None
    info: dict = field(default_factory=dict)


def _where(node) -> str:
    """``node 'Quant_5' (Quant, module net.3.act_quant)``: the graph node and, where the exporter recorded
    it, the PyTorch module it came from."""
    module = _module_of(node)
    return f"node {node.name!r} ({node.op_type}{f', module {module}' if module else ''})"


def _module_of(node) -> str | None:
    import ast
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [s for s in ast.literal_eval(p.value) if isinstance(s, str)]
            except (ValueError, SyntaxError):
                return None
            scopes = [s for s in scopes if s and "export_handler" not in s and not s.startswith("_")]
            return max(scopes, key=len) if scopes else None
    return None


def _is_pow2(v: np.ndarray) -> bool:
    v = np.asarray(v, dtype=np.float64)
    return bool(np.all(v > 0) and np.all(np.frexp(v)[0] == 0.5))


def check_supported(model: ModelWrapper) -> None:
    """Refuse, naming the node, what this FINN path cannot make bit-exact (before FINN sees the graph)."""
    listing = "; ".join(f"{k} ({v})" for k, v in SUPPORTED_OPS.items())
    if len(model.graph.output) != 1:
        raise FlowError(f"the model has {len(model.graph.output)} outputs; the FINN path supports one")
    for node in model.graph.node:
        if node.op_type not in SUPPORTED_OPS:
            raise FlowError(f"{_where(node)} is not supported by the FINN flow. Supported: {listing}")
    inp = model.graph.input[0].name
    first = model.find_consumers(inp) or []
    if len(first) != 1 or first[0].op_type != "Quant":
        raise FlowError("the model's input is not quantized: start it with a Brevitas QuantIdentity so the "
                        "hardware input is integer codes")
    quants = model.get_nodes_by_op_type("Quant")  # activations first: a bias' scale derives from them
    for node in sorted(quants, key=lambda n: model.get_initializer(n.input[0]) is not None):
        _check_quant(model, node, is_input=node.name == first[0].name)
    for node in model.graph.node:
        if node.op_type == "Add" and not any(_is_constant(model, t) for t in node.input):
            raise FlowError(f"{_where(node)}: adding two computed tensors (e.g. a residual connection) is not "
                            "supported by the FINN flow; only a constant bias")
        elif node.op_type == "Relu":
            nxt = model.find_consumers(node.output[0]) or []
            if not nxt or any(c.op_type != "Quant" for c in nxt):
                raise FlowError(f"{_where(node)}: a ReLU must be followed by a quantizer (QuantReLU)")
        elif node.op_type == "Conv":
            a = {x.name: x for x in node.attribute}
            k = a.get("kernel_shape")
            if k is not None and len(k.ints) != 2:
                raise FlowError(f"{_where(node)}: only 2-D convolutions are supported")
            group = a["group"].i if "group" in a else 1
            if group != 1:
                shape = model.get_tensor_shape(node.input[0])
                w = model.get_tensor_shape(node.input[1])
                if not (shape and w and group == shape[1] == w[0]):
                    raise FlowError(f"{_where(node)}: grouped convolution (group={group}) is not supported; "
                                    "groups=1 and depthwise (groups = in = out channels) are")
        elif node.op_type == "LogSoftmax" and (model.find_consumers(node.output[0])
                                               or node.output[0] != model.graph.output[0].name):
            raise FlowError(f"{_where(node)}: LogSoftmax is supported only as the model's last operation")


def _is_constant(model: ModelWrapper, tensor: str) -> bool:
    """An initializer, or a Quant of one (a quantized bias)."""
    if model.get_initializer(tensor) is not None:
        return True
    p = model.find_producer(tensor)
    return p is not None and p.op_type == "Quant" and model.get_initializer(p.input[0]) is not None


def _check_quant(model: ModelWrapper, node, is_input: bool) -> None:
    scale, zeropt, bits = (model.get_initializer(n) for n in node.input[1:4])
    if scale is None or bits is None:
        raise FlowError(f"{_where(node)}: its scale or bit width is computed at run time; constants only")
    if zeropt is None or np.any(zeropt != 0):
        raise FlowError(f"{_where(node)}: non-zero zero point is not supported by the FINN flow")
    if not _is_pow2(scale):
        raise FlowError(f"{_where(node)}: scale {np.ravel(scale)[:4]} is not a power of two; the FINN flow "
                        "supports power-of-two scales (Brevitas *FixedPoint quantizers, Int*Bias), with which "
                        "FINN's threshold arithmetic is exact")
    if model.get_initializer(node.input[0]) is not None or is_input:
        return  # weights / biases are folded into integer initializers; the input quantizer runs on the host
    q = getCustomOp(node)
    if q.get_nodeattr("rounding_mode") != "ROUND":
        raise FlowError(f"{_where(node)}: rounding mode {q.get_nodeattr('rounding_mode')}: FINN's thresholds "
                        "implement round-to-nearest only (ROUND)")
    if int(np.ravel(bits)[0]) > MAX_ACT_BITS:
        raise FlowError(f"{_where(node)}: {int(np.ravel(bits)[0])}-bit activation quantizer; FINN makes "
                        f"quantizers wider than {MAX_ACT_BITS} bits a Requant layer, which rounds ties up "
                        f"(Brevitas: half to even). Use at most {MAX_ACT_BITS} bits")


def input_to_host(model: ModelWrapper) -> tuple[ModelWrapper, InputSpec]:
    """Replace the input Quant by a Mul with its scale on an input annotated as its integer codes."""
    model = ModelWrapper(copy.deepcopy(model.model))
    inp = model.graph.input[0].name
    q = model.find_consumer(inp)
    inst = getCustomOp(q)
    spec = InputSpec(scale=float(np.ravel(model.get_initializer(q.input[1]))[0]),
                     bits=int(np.ravel(model.get_initializer(q.input[3]))[0]),
                     signed=bool(inst.get_nodeattr("signed")), narrow=bool(inst.get_nodeattr("narrow")))
    q.op_type, q.domain = "Mul", ""
    del q.input[2:]
    del q.attribute[:]
    model.set_tensor_datatype(inp, DataType[spec.datatype])
    return model, spec


def _transform_all(model: ModelWrapper, transforms) -> ModelWrapper:
    for t in transforms:
        model = model.transform(t)
    return model


def qonnx_to_finn(model: ModelWrapper) -> tuple[ModelWrapper, ModelWrapper]:
    """FINN's step_qonnx_to_finn plus the tie fix; returns (fixed, FINN's own thresholds as a control)."""
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
    from finn.transformation.qonnx.quant_act_to_multithreshold import default_filter_function_generator
    from qonnx.util.cleanup import cleanup_model
    model = cleanup_model(model).transform(finn_compat.ReshapeConvBiasQuantParams())
    codes = finn_ties.activation_min_codes(model)
    model = model.transform(ConvertQONNXtoFINN(filter_function=default_filter_function_generator(
        max_multithreshold_bit_width=MAX_ACT_BITS)))
    model = model.transform(finn_ties.TagMinCodes(codes))
    return model.transform(finn_ties.TiesToEvenFloat()), model


def tidy_up(model: ModelWrapper) -> ModelWrapper:
    from finn.transformation.qonnx.give_unique_node_names_recursive import GiveUniqueNodeNamesRecursive
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import GiveReadableTensorNames, RemoveStaticGraphInputs
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    return _transform_all(model, [InferShapes(), FoldConstants(), GiveUniqueNodeNamesRecursive(),
                                  GiveReadableTensorNames(), InferDataTypes(), RemoveStaticGraphInputs()])


def streamline(model: ModelWrapper) -> tuple[ModelWrapper, int]:
    """FINN's step_streamline, then the integer-domain tie fix; returns (model, thresholds repaired)."""
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.reorder import MakeMaxPoolNHWC
    from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul
    model = _transform_all(model, [absorb.AbsorbScalarBiasIntoMultiThreshold(), Streamline()])
    if model.get_nodes_by_op_type("Conv"):
        model = _transform_all(model, [LowerConvsToMatMul(), MakeMaxPoolNHWC(),
                                       absorb.AbsorbTransposeIntoMultiThreshold(), MakeMaxPoolNHWC(),
                                       absorb.AbsorbConsecutiveTransposes()])
    model = _transform_all(model, [ConvertBipolarMatMulToXnorPopcount(), Streamline(),
                                   absorb.AbsorbScalarMulAddIntoTopK(), InferDataLayouts(), RemoveUnusedTensors()])
    fix = finn_ties.TiesToEvenInteger()
    return model.transform(fix), fix.repaired


def _on_chip(model: ModelWrapper, node) -> bool:
    """Elementwise ops producing float32 (the dequantization tail) stay on the host."""
    return model.get_tensor_datatype(node.output[0]) != DataType["FLOAT32"]


def convert_to_hw(model: ModelWrapper) -> ModelWrapper:
    """FINN's step_convert_to_hw (standalone_thresholds=False, its default), the transformations that
    apply to the ops this flow accepts, in the builder's order; then refuse a Requant (rounds ties up)."""
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.fpgadataflow.absorb_into_requant import AbsorbElementwiseOpsIntoRequant
    from finn.transformation.fpgadataflow.convert_to_hw.binary_matrix_vector_activation import (
        InferBinaryMatrixVectorActivation)
    from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen
    from finn.transformation.fpgadataflow.convert_to_hw.duplicate_streams import InferDuplicateStreamsLayer
    from finn.transformation.fpgadataflow.convert_to_hw.elementwise_binary_operation import (
        InferElementwiseBinaryOperation)
    from finn.transformation.fpgadataflow.convert_to_hw.pool import InferPool
    from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (
        InferQuantizedMatrixVectorActivation)
    from finn.transformation.fpgadataflow.convert_to_hw.requant import InferRequantLayer
    from finn.transformation.fpgadataflow.convert_to_hw.reshape import InferReshape
    from finn.transformation.fpgadataflow.convert_to_hw.shuffle import InferShuffle
    from finn.transformation.fpgadataflow.convert_to_hw.thresholding import InferThresholdingLayer
    from finn.transformation.fpgadataflow.convert_to_hw.vector_vector_activation import (
        InferVectorVectorActivation)
    from finn.transformation.move_reshape import RemoveCNVtoFCFlatten
    from finn.transformation.qonnx.give_unique_node_names_recursive import GiveUniqueNodeNamesRecursive
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    def relevant(m, ops, t):
        return m.transform(t) if any(m.get_nodes_by_op_type(o) for o in ops) else m

    model = relevant(model, ["XnorPopcountMatMul"], InferBinaryMatrixVectorActivation())  # bipolar x bipolar
    model = relevant(model, ["MatMul"], InferQuantizedMatrixVectorActivation())
    model = relevant(model, ["MatMul"], InferVectorVectorActivation())
    model = relevant(model, ["MultiThreshold", "Quant"], InferRequantLayer(bitwidth_threshold=9))
    model = relevant(model, ["MultiThreshold"], InferThresholdingLayer())
    model = relevant(model, ["MaxPool", "MaxPoolNHWC"], InferPool())
    model = relevant(model, ["Im2Col"], InferConvInpGen())
    model = relevant(model, ["ConvolutionInputGenerator"], RemoveCNVtoFCFlatten())
    model = relevant(model, ["Mul", "Add"], InferElementwiseBinaryOperation(_filter=_on_chip))
    model = model.transform(InferDuplicateStreamsLayer())
    model = relevant(model, ["Requant"], AbsorbElementwiseOpsIntoRequant())
    model = _transform_all(model, [absorb.AbsorbConsecutiveTransposes(), RemoveCNVtoFCFlatten(),
                                   GiveUniqueNodeNamesRecursive(), InferDataLayouts(), InferDataTypes(),
                                   InferShapes(), InferReshape()])
    model = relevant(model, ["Transpose"], InferShuffle())
    for node in model.get_nodes_by_op_type("Requant"):
        raise FlowError(f"FINN made {_where(node)} a Requant layer, which rounds ties up (Brevitas: half to "
                        "even); not supported")
    _check_partitionable(model)
    return model


def _check_partitionable(model: ModelWrapper) -> None:
    """Nodes FINN could not map to hardware may only sit before or after the dataflow (host side)."""
    hw = [i for i, n in enumerate(model.graph.node) if n.domain in HW_DOMAINS]
    if not hw:
        raise FlowError("FINN mapped no layer of this model to hardware")
    for node in model.graph.node[hw[0]:hw[-1] + 1]:
        if node.domain not in HW_DOMAINS:
            raise FlowError(f"FINN has no hardware layer for {_where(node)} (between hardware layers); "
                            "the model cannot be built as one FINN dataflow")


def minimize_bit_width(model: ModelWrapper) -> ModelWrapper:
    """FINN's _minimize_bit_width (minimize_bit_width=True): weights, accumulators, RoundAndClipThresholds."""
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.transformation.infer_datatypes import InferDataTypes
    return _transform_all(model, [MinimizeWeightBitWidth(), MinimizeAccumulatorWidth(), InferDataTypes(),
                                  RoundAndClipThresholds(), InferDataTypes(), MinimizeWeightBitWidth(),
                                  InferDataTypes()])


def create_dataflow_partition(model: ModelWrapper, directory: Path) -> Design:
    """FINN's step_create_dataflow_partition: the hardware layers into one StreamingDataflowPartition."""
    from finn.transformation.fpgadataflow.create_dataflow_partition import CreateDataflowPartition
    directory.mkdir(parents=True, exist_ok=True)
    parent = model.transform(CreateDataflowPartition(partition_model_dir=str(directory)))
    sdps = parent.get_nodes_by_op_type("StreamingDataflowPartition")
    if len(sdps) != 1:
        raise FlowError(f"FINN split the model into {len(sdps)} dataflow partitions; one is supported")
    child = ModelWrapper(getCustomOp(sdps[0]).get_nodeattr("model"))
    return Design(child, parent)


def specialize_layers(model: ModelWrapper, part: str) -> ModelWrapper:
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from finn.transformation.qonnx.give_unique_node_names_recursive import GiveUniqueNodeNamesRecursive
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    return _transform_all(model, [SpecializeLayers(part), GiveUniqueNodeNamesRecursive(), InferShapes(),
                                  InferDataTypes()])


def target_fps_parallelization(model: ModelWrapper, opts: FinnOptions, cycles: int | None = None) -> ModelWrapper:
    """FINN's SetFolding for the target cycles per frame (two-pass relaxation, FINN's default)."""
    from finn.transformation.fpgadataflow.set_folding import SetFolding
    from finn.transformation.qonnx.give_unique_node_names_recursive import GiveUniqueNodeNamesRecursive
    target = opts.target_cycles_per_frame if cycles is None else cycles
    return _transform_all(model, [SetFolding(target, mvau_wwidth_max=opts.mvau_wwidth_max,
                                             two_pass_relaxation=True), GiveUniqueNodeNamesRecursive()])


FULLY_FOLDED = 10 ** 12  # a cycles target no layer reaches: SetFolding leaves every PE and SIMD at 1


def _stage_folding(d: Design, opts: FinnOptions, workdir: Path) -> Design:
    """SetFolding for ``--target-fps``; with ``--fit``, for the highest fps whose FINN estimate fits the part:
    each trial is the build's own next steps (SetFolding, minimize_bit_width, FINN's estimates) on a copy."""
    if not opts.fit:
        return Design(target_fps_parallelization(d.model, opts), d.parent)

    def evaluate(cycles: int) -> dict:
        trial = minimize_bit_width(target_fps_parallelization(finn_fit.copy_model(d.model), opts, cycles))
        return finn_report.estimates(trial, opts.part, opts.clock_ns)

    slowest = evaluate(FULLY_FOLDED)["max_cycles"]
    cycles, res = finn_fit.search(evaluate, opts.part, slowest)
    reached = res["estimate"]["max_cycles"]
    if res["fits"] and reached > cycles:  # a target below what FINN can reach: name the rate it reaches
        again = finn_fit.search(evaluate, opts.part, reached, lo=reached)
        if again[1]["fits"] and again[1]["estimate"]["max_cycles"] == reached:
            cycles, res = again
    res.update(target_cycles_per_frame=cycles, target_fps=int(1e9 / opts.clock_ns / cycles))
    return Design(target_fps_parallelization(d.model, opts, cycles), d.parent, info={"fit": finn_fit.summary(res)})


def _odd_code_thresholds(model: ModelWrapper) -> int:
    return int(sum(finn_ties.odd_code_mask(model, n).sum() for n in model.get_nodes_by_op_type("MultiThreshold")
                   if not finn_ties.is_exact(n)))


def _stage_qonnx_to_finn(d: Design, opts: FinnOptions, workdir: Path) -> Design:
    fixed, control = qonnx_to_finn(d.model)
    return Design(fixed, info={"control": control, "odd_code_thresholds": _odd_code_thresholds(fixed)})


def _stage_streamline(d: Design, opts: FinnOptions, workdir: Path) -> Design:
    model, repaired = streamline(d.model)
    return Design(model, info={"repaired": repaired})


def _on(fn):
    """A stage that transforms the current graph (the dataflow part, once partitioned)."""
    return lambda d, opts, workdir: Design(fn(d.model, opts), d.parent)


# FINN's estimate_only_dataflow_steps up to the estimates: (name, stage(design, options, work dir) -> design)
STAGES = [
    ("qonnx_to_finn", _stage_qonnx_to_finn),
    ("tidy_up", _on(lambda m, o: tidy_up(m))),
    ("streamline", _stage_streamline),
    ("convert_to_hw", _on(lambda m, o: convert_to_hw(m))),
    ("minimize_bit_width_initial", _on(lambda m, o: minimize_bit_width(m))),
    ("create_dataflow_partition", lambda d, o, workdir: create_dataflow_partition(d.model, workdir / "partition")),
    ("specialize_layers", _on(lambda m, o: specialize_layers(m, o.part))),
    ("target_fps_parallelization", _stage_folding),
    ("minimize_bit_width", _on(lambda m, o: minimize_bit_width(m))),
]


def feed(design: Design, codes: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The input codes as this stage's graph reads them. A bipolar input (-1/+1) that FINN's
    ``ConvertBipolarMatMulToXnorPopcount`` re-typed BINARY (its XNOR layers take -1 as 0, the encoding of
    the hardware stream) is fed as (c + 1) / 2; every other input as the codes themselves."""
    graph = design.parent if design.parent is not None else design.model
    if spec.bipolar and graph.get_tensor_datatype(graph.graph.input[0].name) == DataType["BINARY"]:
        return ((np.asarray(codes, dtype=np.float32) + 1) / 2).astype(np.float32)
    return codes


def execute(design: Design, x: np.ndarray, workers: int = 1) -> np.ndarray:
    """FINN's Python execution of a stage's graph on inputs ``x``: batched where the graph allows it, else
    frame by frame, split over ``workers`` processes (0: one per core) when there are many frames."""
    if design.parent is None:
        model, tmp = design.model, None
    else:  # the parent graph, its partition pointing at the (Python-executable twin of the) current dataflow
        tmp = tempfile.TemporaryDirectory(prefix="fpga_flow_finn_")
        path = os.path.join(tmp.name, "dataflow.onnx")
        finn_compat.python_twin(design.model).save(path)
        model = ModelWrapper(copy.deepcopy(design.parent.model))
        getCustomOp(model.get_nodes_by_op_type("StreamingDataflowPartition")[0]).set_nodeattr("model", path)
    try:
        iname, oname = model.graph.input[0].name, model.graph.output[0].name
        hw = any(n.domain in HW_DOMAINS or n.op_type == "StreamingDataflowPartition" for n in model.graph.node)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not hw:  # graphs of standard and qonnx ops: a whole batch at once where shapes allow it
                batched = _execute_batched(model, x, iname, oname)
                if batched is not None:
                    return batched
            # FINN's hardware layers execute one frame at a time (they reshape to their batch-1 shape)
            workers = min(workers or os.cpu_count() or 1, max(1, len(x) // MIN_FRAMES_PER_WORKER))
            if workers <= 1:
                return _frames(model.model.SerializeToString(), x)
            import multiprocessing as mp
            parts = np.array_split(x, workers)
            # spawn, not fork: the parent holds onnxruntime thread pools, which a forked child can deadlock on
            with mp.get_context("spawn").Pool(workers) as pool:
                return np.concatenate(pool.starmap(_frames, [(model.model.SerializeToString(), p) for p in parts]))
    finally:
        if tmp is not None:
            tmp.cleanup()


def _execute_batched(model: ModelWrapper, x: np.ndarray, iname: str, oname: str, chunk: int = 500):
    """Outputs for all of ``x`` from batch-rewritten copies of a graph, or None where the graph does not take
    another batch size (qonnx cannot re-infer MaxPoolNHWC's shapes; an Im2Col keeps its batch-1 shape): then
    the caller runs it frame by frame, FINN's reference way, which raises any real error itself."""
    from finn.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes
    try:
        models = {n: model.transform(ChangeBatchSize(n)).transform(InferShapes())
                  for n in {len(x[i:i + chunk]) for i in range(0, len(x), chunk)}}
        return np.concatenate([execute_onnx(models[len(x[i:i + chunk])], {iname: x[i:i + chunk]})[oname]
                               for i in range(0, len(x), chunk)])
    except Exception:  # noqa: BLE001 - any failure of the batch rewrite only means: not batchable
        return None


def _frames(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Frame-by-frame execution (also the worker function: takes the graph serialized)."""
    import warnings as _w

    from finn.core.onnx_exec import execute_onnx
    model = ModelWrapper(model_bytes)
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    with _w.catch_warnings():
        _w.simplefilter("ignore")
        return np.concatenate([execute_onnx(model, {iname: x[i:i + 1]})[oname] for i in range(len(x))])
