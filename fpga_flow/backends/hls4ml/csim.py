"""C simulation: g++ only, out of process, .npy in and out, compiled once per digest.

Two builds of the same project: ``exact`` (hls4ml's firmware with our
force-included exact integer dense kernel, fast) and ``stock`` (hls4ml's
firmware as written). Both are compiled from the project directory; binaries
live in a cache keyed by the project digest, so an unchanged rebuild reuses them.

A cached binary is trusted only through the sha256 recorded when this module
built it: one without a record, or whose bytes differ from it, is rebuilt,
and the bytes that run are a private copy hashed just before (issue #15: a
script planted in the cache ran and "verified"). Scratch files are judged
stale by a lock held while they are in use (``filelock``), never by a PID,
which means nothing across PID namespaces.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from filelock import FileLock, Timeout

from ... import resources, toolchain
from ...errors import FlowError

VARIANTS = ("exact", "stock")
CACHE_ENV = "FPGA_FLOW_CSIM_CACHE"
BINARY = "tb_batch"
RECORD = "tb_batch.sha256"  # "<sha256 hex>  tb_batch", written by build() beside the binary
TMP_PREFIX = "fpga_flow_csim_"
SCRATCH_TOKEN = "[0-9a-f]{12}"  # fpga_flow_csim_<token>: a run's scratch folder (and <..>.lock)
COMPILE_TOKEN = "[0-9]+-[0-9a-f]{8}"  # tb_batch.tmp<token>: a compiler output (and .sha256, .lock)
CXXFLAGS = ("-O2", "-std=c++17", "-fno-gnu-unique", "-w", "-pthread")
# The testbench runs the design on a thread with its own stack: hls4ml keeps each layer's products on the
# stack (dense_latency: n_in * n_out accumulators), which overflowed the usual 8 MB for a 784-4096 layer.
# Reserved, not committed: pages are touched only as deep as the design goes.
STACK_FLOOR = 64 << 20
STACK_BYTES_PER_PRODUCT = 32  # two accumulator-sized temporaries (<= 16 bytes each in ap_types) per product


def cache_dir(env_var: str = CACHE_ENV, folder: str = ".csim-cache") -> Path:
    """Compiled testbenches by digest: ``$<env_var>``, else ``<user cache>/<folder>`` (resources.cache_dir;
    the RTL path keeps its Verilator builds the same way). A path that exists and is not a directory is a
    FlowError naming the variable."""
    env = os.environ.get(env_var)
    path = resources.cache_dir(folder.lstrip("."), env)
    if path.exists() and not path.is_dir():
        source = f"{env_var}={env}" if env else str(path)
        raise FlowError(f"the compiled-simulation cache {source} is not a directory: point {env_var} at a "
                        "folder (it is created if missing) or remove the file")
    return path


def compile_command(project: Path, binary: Path, variant: str) -> list[str]:
    cxx = str(toolchain.find("g++"))
    project = project.resolve()
    cmd = [cxx, *CXXFLAGS, f"-I{project}", f"-I{project / 'firmware'}", f"-I{project / 'firmware' / 'ap_types'}",
           '-DWEIGHTS_DIR="firmware/weights"', f"-DFPGA_FLOW_TB_STACK_BYTES={stack_bytes(project)}UL"]
    if variant == "exact":
        cmd += ["-include", str(project / "fpga_flow" / "fpga_flow_csim_exact.h")]
    cmd += [str(project / "fpga_flow" / "tb_batch.cpp"), str(project / "firmware" / f"{_top(project)}.cpp"),
            "-o", str(binary)]
    return cmd


def stack_bytes(project: Path) -> int:
    """The simulation thread's stack: a floor plus room for every layer's products (the n_in and n_out of
    each config struct in firmware/parameters.h), so any layer width hls4ml accepts fits."""
    p = project / "firmware" / "parameters.h"
    text = p.read_text(errors="replace") if p.is_file() else ""
    products = 0
    for body in re.findall(r"struct\s+\w+\s*:\s*nnet::\w+\s*\{(.*?)\n\};", text, flags=re.S):
        n_in = re.search(r"\bn_in\s*=\s*(\d+)", body)
        n_out = re.search(r"\bn_out\s*=\s*(\d+)", body)
        if n_in and n_out:
            products += int(n_in.group(1)) * int(n_out.group(1))
    return STACK_FLOOR + STACK_BYTES_PER_PRODUCT * products


def _top(project: Path) -> str:
    tops = [p.stem for p in (project / "firmware").glob("*.cpp")]
    if len(tops) != 1:
        raise FlowError(f"{project}/firmware: expected one top-level .cpp, found {tops}")
    return tops[0]


# ---------------------------------------------------------------- what csim reads == what synthesis reads

_H_INIT = re.compile(r"#else\s*\n[^\n=]*=\s*\{([^}]*)\};\s*\n#endif", re.S)


def check_weights_match(project: Path) -> int:
    """hls4ml's C simulation loads each weight array from ``firmware/weights/<w>.txt``, while the vendor tool
    compiles the initializer in ``<w>.h``: both must hold the same values, so what was verified is what
    gets synthesized (issue #15: an edited .h went unnoticed). Returns the number of arrays compared."""
    n = 0
    for h in sorted((project / "firmware" / "weights").glob("*.h")):
        txt = h.with_suffix(".txt")
        m = _H_INIT.search(h.read_text(errors="replace"))
        if m is None:  # no text copy written (WriteWeightsTxt off): csim compiles the .h itself
            continue
        if not txt.is_file():
            raise FlowError(f"{h}: its values are loaded in C simulation from {txt.name}, which is missing; "
                            "regenerate the project (make hls)")
        if _values(m.group(1)) != _values(txt.read_text(errors="replace")):
            raise FlowError(f"{h} and {txt.name} hold different values: synthesis reads the .h, C simulation the "
                            ".txt, so a verification would not cover the hardware; regenerate the project "
                            "(make hls)")
        n += 1
    return n


def _values(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


# ---------------------------------------------------------------- locks that judge staleness

@contextmanager
def held(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created if missing) for the duration; removed after."""
    lock = FileLock(str(lock_path))
    with lock:
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)


def _free(lock_path: Path) -> FileLock | None:
    """The lock on ``lock_path`` when nobody holds it (the caller releases it), else None."""
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):
        return None
    return lock


def clean_stale(folder: Path, prefix: str, token: str) -> list[Path]:
    """Remove the entries of ``folder`` named ``<prefix><token>[.anything]`` whose lock ``<prefix><token>.lock``
    nobody holds: their process was killed (SIGKILL leaves no chance to clean up). ``token`` (a regex) is
    the random part this module puts in the names, so files of other programs are never touched. Returns
    the keys removed."""
    keys = set()
    pat = re.compile(re.escape(prefix) + f"({token})(\\..*)?\\Z")
    for p in folder.iterdir() if folder.is_dir() else []:
        m = pat.match(p.name)
        if m:
            keys.add(prefix + m.group(1))
    removed = []
    for key in sorted(keys):
        lock_path = folder / f"{key}.lock"
        lock = _free(lock_path)
        if lock is None:
            continue
        try:
            for p in folder.glob(key + "*"):
                if p == lock_path or not pat.match(p.name):
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
            lock_path.unlink(missing_ok=True)
            removed.append(folder / key)
        finally:
            lock.release()
    return removed


@contextmanager
def scratch_dir(root: Path | None = None, prefix: str = TMP_PREFIX) -> Iterator[Path]:
    """A fresh folder under ``root`` (the build's staging folder, when the caller has one; else the system
    temp dir), locked while in use and removed after; stale ones of killed runs are removed first."""
    root = Path(root) if root is not None else Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    clean_stale(root, prefix, SCRATCH_TOKEN)
    path = root / f"{prefix}{secrets.token_hex(6)}"
    with held(path.with_name(path.name + ".lock")):  # locked before it exists: never judged stale while used
        path.mkdir(mode=0o700)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- build and verify binaries

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def recorded_sha256(binary: Path) -> str | None:
    """The sha256 recorded for ``binary`` when it was built here, or None."""
    rec = binary.with_name(RECORD)
    try:
        text = rec.read_text().split()
    except OSError:
        return None
    return text[0] if len(text) == 2 and text[1] == binary.name and re.fullmatch(r"[0-9a-f]{64}", text[0]) \
        else None


def is_trusted(binary: Path) -> bool:
    """``binary`` is a regular file whose bytes hash to the sha256 recorded when it was built."""
    want = recorded_sha256(binary)
    try:
        regular = stat.S_ISREG(os.lstat(binary).st_mode)
    except OSError:
        return False
    return want is not None and regular and sha256_file(binary) == want


def _variant_dir(cache: Path, digest: str, variant: str) -> Path:
    d = cache / f"{digest[:16]}-{variant}"
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise FlowError(f"cannot create the compiled-simulation cache {d}: {e.strerror or e}; set {CACHE_ENV} "
                        "to a writable folder") from e
    if not d.is_dir():
        raise FlowError(f"the compiled-simulation cache entry {d} is not a directory; remove it")
    return d


def build(project: Path, digest: str, cache: Path, variants: tuple[str, ...] = VARIANTS) -> dict[str, Path]:
    """Compile the missing (or untrusted) variants in parallel; returns {variant: binary}."""
    check_weights_match(project)
    if cache.exists() and not cache.is_dir():
        raise FlowError(f"the compiled-simulation cache {cache} is not a directory (set {CACHE_ENV} to a folder)")
    out, todo = {}, []
    for v in variants:
        d = _variant_dir(cache, digest, v)
        clean_stale(d, f"{BINARY}.tmp", COMPILE_TOKEN)
        binary = d / BINARY
        out[v] = binary
        if not is_trusted(binary):  # missing, planted (no record) or modified since it was built
            for p in (binary, d / RECORD):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)
            todo.append((v, d, binary))
    procs = []
    try:
        for v, d, binary in todo:
            tmp = d / f"{BINARY}.tmp{os.getpid()}-{secrets.token_hex(4)}"
            lock = FileLock(str(tmp.with_name(tmp.name + ".lock")))
            lock.acquire()
            log = d / "compile.log"
            f = open(log, "w")
            procs.append((v, binary, tmp, lock, log, f, subprocess.Popen(
                compile_command(project, tmp, v), stdout=f, stderr=subprocess.STDOUT, cwd=project)))
        failed = None
        for v, binary, tmp, lock, log, f, p in procs:
            rc = p.wait()
            f.close()
            if rc == 0:
                _install(tmp, binary)
            else:
                failed = failed or (v, log, rc)
    finally:
        for v, binary, tmp, lock, log, f, p in procs:
            if p.poll() is None:  # interrupted: stop the compiler, leave nothing half-written
                p.kill()
                p.wait()
            f.close()
            tmp.unlink(missing_ok=True)
            tmp.with_name(tmp.name + ".sha256").unlink(missing_ok=True)
            Path(lock.lock_file).unlink(missing_ok=True)
            lock.release()
    if failed:
        v, log, rc = failed
        lines = log.read_text(errors="replace").splitlines()
        first = next((ln for ln in lines if "error" in ln), lines[0] if lines else "(empty log)")
        raise FlowError(f"C simulation build ({v}) failed with exit code {rc}: {first}\n  full log: {log}")
    return out


def _install(tmp: Path, binary: Path) -> None:
    """Record the new binary's sha256, then move it into place: a kill between the two leaves a record
    that matches nothing, so the next build compiles again."""
    rec = binary.with_name(RECORD)
    rec_tmp = tmp.with_name(tmp.name + ".sha256")  # cleaned with tmp by clean_stale if a kill leaves it
    rec_tmp.write_text(f"{sha256_file(tmp)}  {binary.name}\n")
    os.replace(rec_tmp, rec)
    os.replace(tmp, binary)


def _private_copy(binary: Path, folder: Path) -> Path:
    """A copy of ``binary`` in ``folder`` whose bytes were hashed while copied and match the record; the copy
    is what runs, so a binary swapped after the check never does."""
    want = recorded_sha256(binary)
    if want is None:
        raise FlowError(f"refusing to run {binary}: no sha256 was recorded for it when it was built (was it "
                        "put there by hand?); delete it and run the build again")
    h = hashlib.sha256()
    copy = folder / BINARY
    try:
        with open(binary, "rb") as src, open(copy, "wb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
                dst.write(block)
    except OSError as e:
        raise FlowError(f"cannot read the compiled simulation {binary}: {e.strerror or e}") from e
    if h.hexdigest() != want:
        raise FlowError(f"refusing to run {binary}: its sha256 {h.hexdigest()[:16]}... differs from the one "
                        f"recorded when it was built ({want[:16]}...); it was modified. Delete "
                        f"{binary.parent} and run the build again")
    copy.chmod(0o700)
    return copy


def _crash(rc: int) -> str:
    if rc >= 0:
        return f"exit {rc}"
    try:
        name = signal.Signals(-rc).name
    except ValueError:
        name = f"signal {-rc}"
    hint = " (a segmentation fault: often a stack overflow in the design's C++)" if name == "SIGSEGV" else ""
    return f"killed by {name}{hint}"


def run(binary: Path, project: Path, x: np.ndarray, workers: int = 0, chunk: int = 250,
        progress: bool = True, desc: str = "csim", tmp_root: Path | None = None) -> tuple[np.ndarray, float]:
    """Run the testbench over ``x`` (N, n_in) in parallel processes; returns (outputs, seconds).

    Scratch files go to a locked folder under ``tmp_root`` (the build's staging folder, when the caller has
    one) or the system temp dir; only a binary matching its recorded sha256 is run."""
    workers = workers or os.cpu_count() or 1
    x = np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float64)
    n = len(x)
    chunk = max(1, min(chunk, -(-n // workers)))
    ranges = [(i, min(chunk, n - i)) for i in range(0, n, chunk)]
    with scratch_dir(tmp_root) as tmp:
        exe = _private_copy(Path(binary), tmp)
        np.save(tmp / "in.npy", x)
        bar = _bar(n, desc, progress)

        def one(r: tuple[int, int]) -> np.ndarray:
            first, count = r
            outp = tmp / f"out_{first}.npy"
            p = subprocess.run([str(exe), str(tmp / "in.npy"), str(outp), str(first), str(count)],
                               cwd=project, capture_output=True, text=True)
            if p.returncode != 0:
                raise FlowError(f"C simulation failed on images {first}..{first + count - 1} "
                                f"({_crash(p.returncode)}): {p.stderr.strip()[-500:] or '(no output)'}")
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
