"""One frozen, JSON-able build configuration, validated at the boundary; read from and saved to TOML.

``--config build.toml`` gives any field (``[extra]`` and ``[layers.<name>]`` are tables); every build saves
its effective configuration as ``config.toml`` beside report.json, and ``from_toml(to_toml(c)) == c``.
TOML is written here (flat scalars, strings and one level of tables: no new dependency) and read with
``tomllib``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from . import data, parts
from .errors import FlowError

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
IO_TYPES = ("io_stream", "io_parallel")
BITS_RANGE = {"weight_bits": (2, 8), "act_bits": (2, 8), "input_bits": (2, 16)}
DEVICES = ("auto", "cpu", "cuda")
# per-layer overrides ([layers.<name>] in a config file): key -> (check, what is allowed)
LAYER_KEYS = {"reuse_factor": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                               "a positive integer"),
              "strategy": (lambda v: v in ("Latency", "Resource"), "'Latency' or 'Resource'")}


def check_identifier(value: str, what: str) -> str:
    """Names that reach C++ or Tcl must be plain identifiers."""
    if not isinstance(value, str) or not IDENT.match(value):
        raise FlowError(f"{what} {value!r} is not a valid identifier: use letters, digits and '_', "
                        "not starting with a digit")
    return value


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides what hardware is generated and how it is checked.

    Fields that change the generated project go into its digest; ``n_images``,
    ``workers``, ``data_path`` and ``device`` only change how it is verified.
    """

    model: str = "convnet"
    weight_bits: int = 4
    act_bits: int = 4
    input_bits: int = 8
    backend: str = "hls4ml"
    io_type: str = "io_stream"
    part: str = "xc7z020clg400-1"
    clock_ns: float = 10.0
    reuse_factor: int = 1
    fuse: bool = True  # conv + ReLU + requantization in one kernel (FuseConvRelu); False: hls4ml's layers
    project_name: str = "myproject"
    n_images: int = 1000  # 0 = the whole test set
    stock_check_images: int = 100  # images also run through hls4ml's unmodified csim
    workers: int = 0  # 0 = one per core
    data_path: str | None = None
    device: str = "auto"  # torch reference: auto | cpu | cuda
    checkpoint: str | None = None
    extra: dict = field(default_factory=dict)
    allow_unknown_part: bool = False  # build for a part not in fpga_flow/parts.py (no utilisation figures)
    source: str | None = None  # a user's model: "path/file.py:ATTR" or "package.module:ATTR" (None: models/)
    onnx: str | None = None  # a QONNX/ONNX file built without a torch module (golden = QONNX execution)
    input_shape: tuple[int, ...] | None = None  # a user's model: one sample's shape (else its INPUT_SHAPE)
    dataset: str | None = None  # data.DATASETS key (None: the model file's DATASET, else mnist)
    layers: dict = field(default_factory=dict)  # per-layer overrides: {layer: {reuse_factor, strategy}}
    fit: bool = False  # hls4ml: reuse factors searched to fit `part` by the estimate; finn: the fps likewise

    def __post_init__(self) -> None:
        check_identifier(self.model, "model name")
        if self.input_shape is not None:  # a TOML/JSON list becomes the tuple a build compares with
            if not (isinstance(self.input_shape, (list, tuple)) and self.input_shape
                    and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in self.input_shape)):
                raise FlowError(f"input_shape={self.input_shape!r}: expected positive integers, e.g. [1, 28, 28]")
            object.__setattr__(self, "input_shape", tuple(self.input_shape))
        if self.source is not None and self.onnx is not None:
            raise FlowError("source (a model file) and onnx (a QONNX file) exclude each other: give one")
        for key in ("extra", "layers"):
            if not isinstance(getattr(self, key), dict):
                raise FlowError(f"{key} must be a table (dict), got {type(getattr(self, key)).__name__}")
        for name, over in self.layers.items():
            check_identifier(name, "layer name in [layers]")
            if not isinstance(over, dict):
                raise FlowError(f"layers.{name} must be a table of overrides ({', '.join(LAYER_KEYS)})")
            for k, v in over.items():
                if k not in LAYER_KEYS:
                    raise FlowError(f"layers.{name}.{k}: unknown per-layer key; allowed: {', '.join(LAYER_KEYS)}")
                ok, allowed = LAYER_KEYS[k]
                if not ok(v):
                    raise FlowError(f"layers.{name}.{k}={v!r}: must be {allowed}")
        check_identifier(self.project_name, "project name")
        for name, (lo, hi) in BITS_RANGE.items():
            v = getattr(self, name)
            if not isinstance(v, int) or not lo <= v <= hi:
                raise FlowError(f"{name}={v!r} is out of range: supported {lo}..{hi}")
        if self.io_type not in IO_TYPES:
            raise FlowError(f"io_type {self.io_type!r} unknown: use one of {', '.join(IO_TYPES)}")
        if not (isinstance(self.reuse_factor, int) and self.reuse_factor >= 1):
            raise FlowError(f"reuse_factor must be a positive integer, got {self.reuse_factor!r}")
        if not (isinstance(self.clock_ns, (int, float)) and not isinstance(self.clock_ns, bool)
                and math.isfinite(self.clock_ns) and self.clock_ns > 0):
            raise FlowError(f"clock_ns must be a finite positive number of nanoseconds, got {self.clock_ns!r}")
        if self.n_images < 0 or self.stock_check_images < 0 or self.workers < 0:
            raise FlowError("n_images, stock_check_images and workers must be >= 0")
        if self.device not in DEVICES:
            raise FlowError(f"device {self.device!r} unknown: use one of {', '.join(DEVICES)}")
        if not re.fullmatch(r"[A-Za-z0-9\-]+", self.part):
            raise FlowError(f"FPGA part {self.part!r} is not a valid part name")
        parts.check(self.part, self.allow_unknown_part)
        if self.dataset is not None:
            data.get(self.dataset)  # an unknown name lists the known ones

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """TOML of every field; ``None`` (which TOML cannot hold) is left out and reads back as the default."""
        return to_toml(self.to_json())

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> "BuildConfig":
        """A config from a mapping (a parsed file): an unknown key lists the known ones, a wrong type names
        the key and the type expected."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise FlowError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")
        for k, v in values.items():
            want = _TYPES.get(k)
            if v is None and known[k].default is None:  # an optional field left unset
                continue
            if want and not (isinstance(v, want) and not (isinstance(v, bool) and bool not in want)):
                raise FlowError(f"{where}: {k} = {v!r} must be {' or '.join(t.__name__ for t in want)}")
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | Path) -> "BuildConfig":
        return cls.from_dict(read_toml(path), where=str(path))

    def replace(self, **changes) -> "BuildConfig":
        return dataclasses.replace(self, **changes)


_TYPES = {"model": (str,), "weight_bits": (int,), "act_bits": (int,), "input_bits": (int,), "backend": (str,),
          "io_type": (str,), "part": (str,), "clock_ns": (int, float), "reuse_factor": (int,), "fuse": (bool,),
          "project_name": (str,), "n_images": (int,), "stock_check_images": (int,), "workers": (int,),
          "data_path": (str,), "device": (str,), "checkpoint": (str,), "extra": (dict,),
          "allow_unknown_part": (bool,), "source": (str,), "onnx": (str,), "input_shape": (list, tuple),
          "dataset": (str,), "layers": (dict,), "fit": (bool,)}


def read_toml(path: str | Path) -> dict:
    """A TOML file as a dict; a missing or malformed file is a FlowError naming it."""
    p = Path(path)
    if not p.is_file():
        raise FlowError(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FlowError(f"{p}: not valid TOML ({e})") from e


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise FlowError(f"cannot write {v!r} to TOML")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string (same escapes)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise FlowError(f"cannot write a {type(v).__name__} ({v!r}) to a TOML config")


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_\-]+", k) else json.dumps(k)


def to_toml(values: dict, prefix: str = "") -> str:
    """Scalars first, then one ``[table]`` per dict (nested dicts as ``[a.b]``); ``None`` values left out."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in values.items()
             if v is not None and not isinstance(v, dict)]
    for k, v in values.items():
        if isinstance(v, dict):
            name = f"{prefix}{_toml_key(k)}"
            body = to_toml(v, prefix=name + ".")
            lines += ["", f"[{name}]", body] if body.strip() or not v else ["", body]
    return "\n".join(lines).strip("\n") + "\n" if prefix == "" else "\n".join(lines)

