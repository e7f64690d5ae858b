"""C simulation: g++ only, out of process, .npy in and out, compiled once per digest.

Two builds of the same project: ``exact`` (hls4ml's firmware with our
force-included exact integer dense kernel, fast) and ``stock`` (hls4ml's
firmware as written). Both are compiled from the project directory; binaries
live in a cache keyed by the project digest, so an unchanged rebuild reuses them.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ... import resources, toolchain
from ...errors import FlowError

VARIANTS = ("exact", "stock")
CACHE_ENV = "FPGA_FLOW_CSIM_CACHE"


def cache_dir(env_var: str = CACHE_ENV, folder: str = ".csim-cache") -> Path:
    """Compiled testbenches by digest: ``$<env_var>``, else ``<user cache>/<folder>`` (resources.cache_dir;
    the RTL path keeps its Verilator builds the same way)."""
    return resources.cache_dir(folder.lstrip("."), os.environ.get(env_var))
CXXFLAGS = ("-O2", "-std=c++17", "-fno-gnu-unique", "-w")


def compile_command(project: Path, binary: Path, variant: str) -> list[str]:
    cxx = str(toolchain.find("g++"))
    project = project.resolve()
    cmd = [cxx, *CXXFLAGS, f"-I{project}", f"-I{project / 'firmware'}", f"-I{project / 'firmware' / 'ap_types'}",
           '-DWEIGHTS_DIR="firmware/weights"']
    if variant == "exact":
        cmd += ["-include", str(project / "fpga_flow" / "fpga_flow_csim_exact.h")]
    cmd += [str(project / "fpga_flow" / "tb_batch.cpp"), str(project / "firmware" / f"{_top(project)}.cpp"),
            "-o", str(binary)]
    return cmd


def _top(project: Path) -> str:
    tops = [p.stem for p in (project / "firmware").glob("*.cpp")]
    if len(tops) != 1:
        raise FlowError(f"{project}/firmware: expected one top-level .cpp, found {tops}")
    return tops[0]


def build(project: Path, digest: str, cache: Path, variants: tuple[str, ...] = VARIANTS) -> dict[str, Path]:
    """Compile the missing variants in parallel; returns {variant: binary}."""
    out, todo = {}, []
    for v in variants:
        d = cache / f"{digest[:16]}-{v}"
        binary = d / "tb_batch"
        out[v] = binary
        if not binary.is_file():
            d.mkdir(parents=True, exist_ok=True)
            todo.append((v, d, binary))
    procs = []
    for v, d, binary in todo:
        tmp = d / f"tb_batch.tmp{os.getpid()}"
        log = d / "compile.log"
        f = open(log, "w")
        procs.append((v, binary, tmp, log, f, subprocess.Popen(compile_command(project, tmp, v), stdout=f,
                                                                   stderr=subprocess.STDOUT, cwd=project)))
    failed = None
    for v, binary, tmp, log, f, p in procs:
        rc = p.wait()
        f.close()
        if rc == 0:
            os.replace(tmp, binary)
        else:
            tmp.unlink(missing_ok=True)
            failed = failed or (v, log, rc)
    if failed:
        v, log, rc = failed
        lines = log.read_text(errors="replace").splitlines()
        first = next((ln for ln in lines if "error" in ln), lines[0] if lines else "(empty log)")
        raise FlowError(f"C simulation build ({v}) failed with exit code {rc}: {first}\n  full log: {log}")
    return out


def run(binary: Path, project: Path, x: np.ndarray, workers: int = 0, chunk: int = 250,
        progress: bool = True, desc: str = "csim") -> tuple[np.ndarray, float]:
    """Run the testbench over ``x`` (N, n_in) in parallel processes; returns (outputs, seconds)."""
    workers = workers or os.cpu_count() or 1
    x = np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float64)
    n = len(x)
    chunk = max(1, min(chunk, -(-n // workers)))
    ranges = [(i, min(chunk, n - i)) for i in range(0, n, chunk)]
    with tempfile.TemporaryDirectory(prefix="fpga_flow_csim_") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "in.npy", x)
        bar = _bar(n, desc, progress)

        def one(r: tuple[int, int]) -> np.ndarray:
            first, count = r
            outp = tmp / f"out_{first}.npy"
            p = subprocess.run([str(binary), str(tmp / "in.npy"), str(outp), str(first), str(count)],
                               cwd=project, capture_output=True, text=True)
            if p.returncode != 0:
                raise FlowError(f"C simulation failed on images {first}..{first + count - 1} "
                                f"(exit {p.returncode}): {p.stderr.strip()[-500:]}")
            bar.update(count)
            return np.load(outp)

        t0 = time.perf_counter()
        try:
            with ThreadPoolExecutor(workers) as pool:
                outs = list(pool.map(one, ranges))
        finally:
            bar.close()
        return np.concatenate(outs), time.perf_counter() - t0


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False)
