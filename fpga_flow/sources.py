"""Where a build's model comes from: a zoo name, a user's Python file or module, or a QONNX/ONNX file.

``--model convnet`` is a model of ``models/``; ``--model path/to/net.py:Net`` and ``--model pkg.mod:make_net``
name a user's ``nn.Module`` class or zero-argument factory (imported where it is, nothing copied into the
tool's folders); ``--onnx model.onnx`` is a QONNX graph exported elsewhere, built without any torch module
(its golden is QONNX execution itself). This module only resolves and loads; ``api`` builds.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.qcdq_to_qonnx import QCDQToQuant
from qonnx.util.cleanup import cleanup_model
import torch
from torch import nn

from . import compare, golden
from .config import IDENT, check_identifier
from .errors import FlowError, VerificationError
from .export import check_input_shape
from .front import ARTIFACTS
from .runner import State

QCDQ_CHECK_IMAGES = 16
NO_MODULE_NOTE = "no torch module: golden = QONNX execution"


@dataclass(frozen=True)
class ModelRef:
    """A parsed ``--model`` value: ``kind`` is ``zoo``, ``file`` or ``module``."""

    kind: str
    target: str  # zoo name, file path, or dotted module path
    attr: str | None = None

    @property
    def name(self) -> str:
        """The build name: the zoo name, the file's stem, or the attribute of a module path."""
        base = {"zoo": self.target, "file": Path(self.target).stem, "module": self.attr}[self.kind]
        return check_identifier(base, f"build name (from --model {self.spec})")

    @property
    def spec(self) -> str:
        return self.target if self.kind == "zoo" else f"{self.target}:{self.attr}"


def parse_model(spec: str) -> ModelRef:
    """``name`` (zoo), ``path/file.py:ATTR`` or ``package.module:ATTR``."""
    if not isinstance(spec, str) or not spec:
        raise FlowError("--model is empty: give a shipped model name, path/to/file.py:NAME or package.module:NAME")
    if ":" not in spec:
        if IDENT.match(spec):
            return ModelRef("zoo", spec)
        raise FlowError(f"--model {spec!r} is neither a shipped model name nor FILE.py:NAME / package.module:NAME: "
                        "name the nn.Module class or zero-argument factory after a colon, e.g. "
                        f"{spec.removesuffix(':')}:Net")
    target, attr = spec.rsplit(":", 1)
    if not IDENT.match(attr):
        raise FlowError(f"--model {spec!r}: {attr!r} after the colon is not a Python name (class or factory)")
    if target.endswith(".py") or "/" in target or "\\" in target:
        return ModelRef("file", target, attr)
    if all(IDENT.match(p) for p in target.split(".")):
        return ModelRef("module", target, attr)
    raise FlowError(f"--model {spec!r}: {target!r} is neither a .py file nor a dotted module path")


@contextlib.contextmanager
def _no_bytecode():
    """Importing a user's file must not write ``__pycache__`` beside it (nothing written anywhere)."""
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = before


def import_ref(ref: ModelRef) -> ModuleType:
    """The Python module of a ``file`` or ``module`` reference; a missing one is a FlowError saying where."""
    if ref.kind == "file":
        p = Path(ref.target)
        if not p.is_file():
            raise FlowError(f"model file not found: {p} (from --model {ref.spec})")
        spec = importlib.util.spec_from_file_location(f"fpga_flow_user.{p.stem}", p)
        if spec is None or spec.loader is None:
            raise FlowError(f"cannot import {p}: not a Python source file")
        mod = importlib.util.module_from_spec(spec)
        with _no_bytecode():
            spec.loader.exec_module(mod)  # an error inside the user's file is theirs: let it show
        return mod
    try:
        with _no_bytecode():
            return importlib.import_module(ref.target)
    except ModuleNotFoundError as e:
        raise FlowError(f"module {ref.target!r} not found (from --model {ref.spec}): {e}; is it installed or on "
                        "PYTHONPATH?") from e


@dataclass
class UserModel:
    module: nn.Module
    input_shape: tuple[int, ...]
    name: str
    dataset: str | None  # the file's DATASET, if any


def load_user_model(ref: ModelRef, input_shape: tuple[int, ...] | None = None) -> UserModel:
    """Instantiate ``ref.attr`` (an ``nn.Module`` class or a zero-argument factory returning one). The input
    shape: ``input_shape`` (``--input-shape``), else ``INPUT_SHAPE`` of the object, else of its module."""
    mod = import_ref(ref)
    if not hasattr(mod, ref.attr):
        public = sorted(n for n in vars(mod) if not n.startswith("_") and callable(getattr(mod, n)))[:12]
        raise FlowError(f"{ref.target} has no attribute {ref.attr!r} (from --model {ref.spec}); callables there: "
                        f"{', '.join(public) or 'none'}")
    obj = getattr(mod, ref.attr)
    if isinstance(obj, nn.Module):
        module = obj
    elif callable(obj):
        try:
            # seeded, so a randomly initialised model (no --checkpoint) is the same on every build and
            # `--config <build>/config.toml` reproduces the project; the caller's RNG state is left as it was
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                module = obj()
        except TypeError as e:
            raise FlowError(f"{ref.spec}: calling {ref.attr}() failed ({e}); --model needs an nn.Module class or "
                            "factory that takes no arguments") from e
    else:
        raise FlowError(f"{ref.spec}: {ref.attr!r} is a {type(obj).__name__}, not an nn.Module class or factory")
    if not isinstance(module, nn.Module):
        raise FlowError(f"{ref.spec}: {ref.attr}() returned a {type(module).__name__}, not a torch nn.Module")
    shape = input_shape or getattr(obj, "INPUT_SHAPE", None) or getattr(module, "INPUT_SHAPE", None) \
        or getattr(mod, "INPUT_SHAPE", None)
    if shape is None:
        raise FlowError(f"{ref.spec}: no input shape: define INPUT_SHAPE = (C, H, W) in {ref.target} or pass "
                        "--input-shape 1,28,28 (one sample, without the batch)")
    return UserModel(module, check_input_shape(shape), ref.name, getattr(mod, "DATASET", None))


def parse_shape(text: str) -> tuple[int, ...]:
    """``1,28,28`` -> (1, 28, 28)."""
    try:
        shape = tuple(int(v) for v in str(text).replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise FlowError(f"--input-shape {text!r}: expected comma-separated integers, e.g. 1,28,28") from None
    return check_input_shape(shape, "--input-shape")


# ---- a QONNX/ONNX file: no torch module ------------------------------------------------------------------

def onnx_name(path: str) -> str:
    return check_identifier(Path(path).stem, f"build name (the stem of --onnx {path})")


def is_qcdq(model) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def read_onnx(path: str | Path) -> tuple[ModelWrapper, bool]:
    """(QONNX ModelWrapper, converted) of a user's file: QONNX as is; QCDQ (QuantizeLinear/DequantizeLinear)
    converted with qonnx's ``QCDQToQuant``; anything unreadable refused naming the file."""
    p = Path(path)
    if not p.is_file():
        raise FlowError(f"ONNX file not found: {p}")
    try:
        m = ModelWrapper(str(p))
    except Exception as e:  # noqa: BLE001 - protobuf errors of a file that is not a model
        raise FlowError(f"{p} is not a readable ONNX model ({type(e).__name__}: {e})") from e
    converted = is_qcdq(m)
    if converted:
        try:  # QCDQToQuant reads tensor shapes and types: cleanup_model infers them first
            m = cleanup_model(m).transform(QCDQToQuant())
        except Exception as e:  # noqa: BLE001 - qonnx's conversion refuses patterns it does not know
            raise FlowError(f"{p}: QCDQ (QuantizeLinear/DequantizeLinear) graph that qonnx's QCDQToQuant cannot "
                            f"convert ({type(e).__name__}: {e}); export it as QONNX (brevitas.export.export_qonnx)"
                            ) from e
        left = sorted({n.op_type for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")})
        if left:
            raise FlowError(f"{p}: QCDQ nodes left after QCDQToQuant ({', '.join(left)}): this QCDQ pattern is not "
                            "supported; export the model as QONNX (brevitas.export.export_qonnx)")
    if len(data_inputs(m)) != 1:
        raise FlowError(f"{p}: the graph has {len(data_inputs(m))} inputs ({', '.join(data_inputs(m))}); one is "
                        "supported")
    return m, converted


def data_inputs(model: ModelWrapper) -> list[str]:
    """The graph inputs that are not initializers (some exporters list every weight as an input too)."""
    init = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in init]


def onnx_input_shape(model: ModelWrapper) -> tuple[int, ...]:
    """One sample's shape from the graph's input (the batch dimension dropped)."""
    dims = model.get_tensor_shape(data_inputs(model)[0])
    if not dims or len(dims) < 2:
        raise FlowError(f"the ONNX graph's input has shape {dims}: expected (batch, ...)")
    return check_input_shape(tuple(dims[1:]), "the ONNX graph's input shape")


def step_export(state: State) -> State:
    """The export of a build without a torch module: the user's QONNX file (QCDQ converted) becomes
    ``00_export.onnx``; the later steps are the front's as for an exported module."""
    src = Path(state.cfg.onnx or "")
    m, converted = read_onnx(src)
    m.save(str(state.path(ARTIFACTS["export"])))  # saved, not copied: the weights may be in a .onnx.data file
    if converted:  # the conversion itself is checked: the user's QCDQ graph == the QONNX graph built, on a sample
        k = min(len(state.x), QCDQ_CHECK_IMAGES)
        check = compare.exact("QCDQ file vs its QONNX conversion (QCDQToQuant)",
                              golden.qonnx_per_image(m, state.x[:k]),
                              golden.qonnx_per_image(cleanup_model(ModelWrapper(str(src))), state.x[:k]))
        state.comparisons.append(check)
        if not check.ok:
            raise VerificationError(f"qonnx's QCDQToQuant changed what {src} computes: {check.line()}; export the "
                                    "model as QONNX (brevitas.export.export_qonnx)")
    return state
