"""One frozen, JSON-able build configuration, validated at the boundary."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

from . import parts
from .errors import FlowError

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
IO_TYPES = ("io_stream", "io_parallel")
BITS_RANGE = {"weight_bits": (2, 8), "act_bits": (2, 8), "input_bits": (2, 16)}


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

    def __post_init__(self) -> None:
        check_identifier(self.model, "model name")
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
        if self.device not in ("auto", "cpu", "cuda"):
            raise FlowError(f"device {self.device!r} unknown: use auto, cpu or cuda")
        if not re.fullmatch(r"[A-Za-z0-9\-]+", self.part):
            raise FlowError(f"FPGA part {self.part!r} is not a valid part name")
        parts.check(self.part, self.allow_unknown_part)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "BuildConfig":
        return dataclasses.replace(self, **changes)
