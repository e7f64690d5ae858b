"""The flow runner: one ordered list of ``step_<verb>(state) -> state`` run in a staging copy of the build.

No backend lives here. What the runner promises (DESIGN.md, "nothing half-written, nothing lost"):

* **one command per build folder**: a lock (``filelock``) on ``.<name>.lock`` beside the build is held from
  the first step to the swap by every command that reads or replaces the build (``hls``, ``csim``); a
  second command waits, saying so;
* **staging**: the steps run in ``.<name>.tmp-*`` and replace the build in one exchange of two names
  (``renameat2(RENAME_EXCHANGE)`` on Linux) only when every step ran and every comparison held; a leftover
  staging folder is stale exactly when nobody holds the build's lock, which is true across PID namespaces
  (no PID is compared);
* **partial runs** (``--stop-step`` before the last step) never replace the build: they land in
  ``<name>.partial/``, and ``--start-step`` resumes from there (else from the build itself);
* a run that does not verify is kept as ``<name>.failed/`` and the previous build is untouched.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import filelock
import numpy as np
from torch import nn

from .config import BuildConfig
from .errors import FlowError, VerificationError

Step = Callable[["State"], "State"]
LOCK_POLL_S = 0.5


@dataclass
class State:
    """What the steps share. Backend-specific state lives in ``backend`` (a dataclass of the backend's own)."""

    cfg: BuildConfig
    name: str
    module: nn.Module | None
    input_shape: tuple[int, ...]
    out_dir: Path  # final place: <out>/<name>
    x: np.ndarray  # float32 inputs (N, ...) as the torch model takes them
    labels: np.ndarray | None = None
    checkpoint: dict | None = None  # {"path":..., "card":...}
    backend: Any = None
    work: Path | None = None  # staging directory while the build runs
    timings: dict = field(default_factory=dict)
    ref: dict = field(default_factory=dict)  # outputs by reference name
    ref_speed: dict = field(default_factory=dict)
    comparisons: list = field(default_factory=list)
    divergence: dict | None = None
    progress: bool = True
    report: dict | None = None
    lowered: object | None = None  # float-scaled models: passes.lower_float_scales.Lowered
    float_agreement: dict | None = None  # float-scaled models: Brevitas' float forward vs the integer reference
    reference_checks: dict = field(default_factory=dict)  # device -> what its forward was compared with
    source: dict | None = None  # where the model came from (zoo, user file, QONNX file), for report.json

    def path(self, rel: str) -> Path:
        return self.work / rel

    def log(self, msg: str) -> None:
        if self.progress:
            print(f"[{self.name}] {msg}", file=sys.stderr, flush=True)


def step_name(step: Step) -> str:
    return step.__name__.removeprefix("step_")


def select(steps: list[Step], start: str | None, stop: str | None) -> list[Step]:
    names = [step_name(s) for s in steps]
    for s in (start, stop):
        if s is not None and s not in names:
            raise FlowError(f"unknown step {s!r}; steps in order: {', '.join(names)}")
    i = names.index(start) if start else 0
    j = names.index(stop) + 1 if stop else len(steps)
    if i >= j:
        raise FlowError(f"--start-step {start} comes after --stop-step {stop}")
    return steps[i:j]


def partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def failed_dir(out: Path) -> Path:
    return out.with_name(out.name + ".failed")


@contextlib.contextmanager
def build_lock(out: Path, log: Callable[[str], None] = lambda m: None):
    """Hold the lock of build folder ``out``; wait (saying so) while another command holds it."""
    lock = filelock.FileLock(str(out.with_name(f".{out.name}.lock")))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        log(f"waiting for another fpga-flow command working on {out} to finish ...")
        lock.acquire(poll_interval=LOCK_POLL_S)
    try:
        yield lock
    finally:
        lock.release()


def remove_stale(out: Path) -> list[Path]:
    """Staging folders of ``out`` left by a killed run. Called with the build's lock held, so none is live."""
    done = []
    for p in sorted(out.parent.glob(f".{out.name}.tmp-*")) if out.parent.is_dir() else []:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
            done.append(p)
    return done


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directory entries in one system call (Linux renameat2); False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP if hasattr(errno, "EOPNOTSUPP") else errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err), str(b))


def check_target(out: Path) -> None:
    """The build folder must be a real folder (or absent): never hide or replace a file or a link."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        kind = "a symbolic link" if out.is_symlink() else "a file"
        raise FlowError(f"{out} is {kind}, not a build folder: move it away or choose another --out")


def swap_in(staging: Path, out: Path) -> None:
    """Make ``staging`` the build ``out``: one exchange (or one rename when there is no build yet)."""
    check_target(out)
    try:
        if not out.exists():
            os.rename(staging, out)
            return
        if _exchange(staging, out):
            shutil.rmtree(staging, ignore_errors=True)  # staging now holds the previous build
            return
        old = out.with_name(f".{out.name}.tmp-old-{os.getpid()}")  # no exchange: two renames, both under lock
        os.rename(out, old)
        os.rename(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        old = out.with_name(f".{out.name}.tmp-old-{os.getpid()}")
        if old.is_dir() and not out.exists():  # the two-rename fallback failed half-way: the build goes back
            os.rename(old, out)
        raise FlowError(f"could not put the new build in place at {out} ({e.strerror or e}): check the "
                        "folder's permissions and attributes (chattr -i); the previous build is untouched and "
                        "the new one was discarded") from e


def _replace_with(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst`` (a side folder: .failed / .partial), replacing what was there."""
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.exists():
        shutil.rmtree(dst)
    os.rename(src, dst)


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM cleans up like Ctrl-C (the staging copy is removed by the handler below)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(state: State, steps: list[Step], all_steps: list[Step], restore: Callable[[State], None] | None = None
        ) -> State:
    """Run ``steps`` (a slice of ``all_steps``) in a staging copy; swap it into place when all passed.

    A run that does not start at the first step resumes from ``<name>.partial/`` (else from the build) and
    calls ``restore(state)`` to reload what earlier steps left in memory; a run that stops before the
    last step lands in ``<name>.partial/`` and never replaces the build."""
    with _sigterm_as_interrupt(), _lock_for(state) as _:
        return _run(state, steps, all_steps, restore)


@contextlib.contextmanager
def _lock_for(state: State):
    """The build's lock; an error creating its folder or lock file is a FlowError naming the folder (errors
    of the steps inside pass through unchanged)."""
    out = state.out_dir
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        check_target(out)
        lock = build_lock(out, state.log)
        lock.__enter__()
    except OSError as e:
        raise FlowError(f"cannot write the build directory {out}: {e.strerror or e}") from e
    try:
        yield lock
    finally:
        lock.__exit__(None, None, None)


def _run(state: State, steps: list[Step], all_steps: list[Step], restore) -> State:
    out = state.out_dir
    for p in remove_stale(out):
        state.log(f"removed {p.name}, left by a run that was killed")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise FlowError(f"cannot write the build directory {out}: {e.strerror or e}") from e
    partial = steps[-1] is not all_steps[-1]
    try:
        if steps[0] is not all_steps[0]:
            src = partial_dir(out) if partial_dir(out).is_dir() else out
            if not src.is_dir():
                raise FlowError(f"nothing to resume from: neither {partial_dir(out)} nor {out} exists; run the "
                                "steps before this one first")
            state.log(f"resuming from {src}")
            shutil.copytree(src, staging, dirs_exist_ok=True, symlinks=True)
        state.work = staging
        if steps[0] is not all_steps[0] and restore is not None:
            restore(state)
        for step in steps:
            name = step_name(step)
            state.log(f"{name} ...")
            t0 = time.perf_counter()
            state = step(state)
            state.timings[name] = round(time.perf_counter() - t0, 3)
        failed = [c for c in state.comparisons if not c.ok]
        if failed:
            kept = failed_dir(out)
            _replace_with(staging, kept)
            raise VerificationError(_not_exact(state, failed, kept))
        if partial:
            kept = partial_dir(out)
            _replace_with(staging, kept)
            state.work = kept
            state.log(f"stopped after step {step_name(steps[-1])}: the partial build is in {kept} "
                      f"(resume with --start-step); {out} is untouched")
            return state
        swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if partial_dir(out).is_dir():
        shutil.rmtree(partial_dir(out), ignore_errors=True)
    state.work = out
    return state


def _not_exact(state: State, failed: list, kept: Path) -> str:
    where = ""
    if state.divergence:
        d = state.divergence
        where = (f"\n  first divergence (image {d['image']}): layer {d['layer']} (tensor {d['tensor']}): "
                 f"{d['n_differ']}/{d['size']} values differ, first at index {d['first_index']}: "
                 f"hardware {d['hls']} vs golden {d['golden']}")
    return ("NOT bit-exact:\n  " + "\n  ".join(c.line() for c in failed) + where
            + f"\n  the failed build is kept in {kept}; the previous build is untouched")
