"""Issue #15 items 6, 13 and 15 (the csim part): cached binaries are trusted only through the sha256 recorded
when they were built, scratch files of killed runs are removed judged by their lock (not a PID), and the
weights C simulation reads are the weights synthesis reads.

A tiny stand-in project keeps these fast: its "testbench" speaks tb_batch's protocol (IN.npy OUT.npy FIRST
COUNT) and writes zeros, so what is tested is the cache and the runner, not hls4ml."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fpga_flow import FlowError
from fpga_flow.backends.hls4ml import csim as sim
from tests.conftest import needs_gxx

pytestmark = [pytest.mark.csim, needs_gxx]

TB = r'''
#include <cstdio>
#include <cstdlib>
#include <string>
void myproject();
int main(int argc, char **argv) {
    if (argc != 5) return 2;
    myproject();
    size_t count = std::strtoul(argv[4], nullptr, 10);
    std::string h = "{'descr': '<f8', 'fortran_order': False, 'shape': (" + std::to_string(count) + ", 1), }";
    while ((10 + h.size() + 1) % 64) h += ' ';
    h += '\n';
    FILE *f = std::fopen(argv[2], "wb");
    std::fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    unsigned char len[2] = {(unsigned char)(h.size() & 0xff), (unsigned char)(h.size() >> 8)};
    std::fwrite(len, 1, 2, f);
    std::fwrite(h.data(), 1, h.size(), f);
    double zero = 0;
    for (size_t i = 0; i < count; i++) std::fwrite(&zero, sizeof zero, 1, f);
    std::fclose(f);
    FILE *seen = std::fopen("seen_input_path", "w");
    std::fputs(argv[1], seen);
    std::fclose(seen);
    return 0;
}
'''

WEIGHTS_H = """//Numpy array shape [4]
#ifndef W2_H_
#define W2_H_

#ifndef __SYNTHESIS__
weight2_t w2[4];
#else
weight2_t w2[4] = {0.25, -0.5, 0.75, 1.0};

#endif

#endif
"""


@pytest.fixture
def project(tmp_path) -> Path:
    p = tmp_path / "hls"
    (p / "firmware" / "weights").mkdir(parents=True)
    (p / "fpga_flow").mkdir()
    (p / "firmware" / "myproject.cpp").write_text("void myproject() {}\n")
    (p / "fpga_flow" / "tb_batch.cpp").write_text(TB)
    (p / "fpga_flow" / "fpga_flow_csim_exact.h").write_text("\n")
    (p / "firmware" / "weights" / "w2.h").write_text(WEIGHTS_H)
    (p / "firmware" / "weights" / "w2.txt").write_text("0.25, -0.5, 0.75, 1.0")
    return p


def _plant(binary: Path, marker: Path) -> None:
    binary.write_text(f"#!/bin/sh\ntouch {marker}\n")
    binary.chmod(0o755)


X = np.zeros((3, 4))


def test_a_planted_binary_is_rebuilt_never_run(project, tmp_path):
    """Before: a script at <cache>/<digest>-stock/tb_batch was run as the simulation."""
    cache, marker = tmp_path / "cache", tmp_path / "PLANTED_RAN"
    d = cache / "0123456789abcdef-stock"
    d.mkdir(parents=True)
    _plant(d / "tb_batch", marker)
    binary = sim.build(project, "0123456789abcdef" * 4, cache, ("stock",))["stock"]
    try:
        out, _ = sim.run(binary, project, X, workers=1, progress=False)
    finally:
        assert not marker.exists()
    assert out.shape == (3, 1)
    assert sim.is_trusted(binary) and b"PLANTED_RAN" not in binary.read_bytes()


def test_a_binary_modified_after_its_build_is_refused_or_rebuilt(project, tmp_path):
    cache, marker = tmp_path / "cache", tmp_path / "MODIFIED_RAN"
    binary = sim.build(project, "f" * 64, cache, ("stock",))["stock"]
    _plant(binary, marker)
    with pytest.raises(FlowError, match="modified"):
        sim.run(binary, project, X, workers=1, progress=False)
    assert not marker.exists()
    binary = sim.build(project, "f" * 64, cache, ("stock",))["stock"]  # the next build compiles it again
    assert sim.is_trusted(binary)
    sim.run(binary, project, X, workers=1, progress=False)
    assert not marker.exists()


def test_a_binary_with_no_record_is_refused(project, tmp_path):
    marker = tmp_path / "UNRECORDED_RAN"
    _plant(tmp_path / "tb_batch", marker)
    with pytest.raises(FlowError, match="no sha256 was recorded"):
        sim.run(tmp_path / "tb_batch", project, X, workers=1, progress=False)
    assert not marker.exists()


def test_cache_env_pointing_at_a_file_is_a_clear_error(tmp_path, monkeypatch):
    f = tmp_path / "not_a_dir"
    f.write_text("")
    monkeypatch.setenv(sim.CACHE_ENV, str(f))
    with pytest.raises(FlowError) as e:
        sim.cache_dir()
    assert sim.CACHE_ENV in str(e.value) and str(f) in str(e.value)


def test_edited_weights_header_is_noticed(project, tmp_path):
    """Before: C simulation read only w2.txt, so an edit to w2.h (what synthesis reads) went unverified."""
    sim.build(project, "e" * 64, tmp_path / "cache", ("stock",))
    h = project / "firmware" / "weights" / "w2.h"
    h.write_text(WEIGHTS_H.replace("0.75", "0.875"))
    with pytest.raises(FlowError) as e:
        sim.build(project, "e" * 64, tmp_path / "cache", ("stock",))
    assert "w2.h" in str(e.value) and "w2.txt" in str(e.value)


def test_scratch_goes_under_the_callers_folder(project, tmp_path):
    staging = tmp_path / "staging"
    binary = sim.build(project, "d" * 64, tmp_path / "cache", ("stock",))["stock"]
    sim.run(binary, project, X, workers=1, progress=False, tmp_root=staging)
    seen = Path((project / "seen_input_path").read_text())
    assert seen.parent.parent == staging and seen.parent.name.startswith(sim.TMP_PREFIX)
    assert list(staging.iterdir()) == []  # removed after the run, lock included


HOLD = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    from fpga_flow.backends.hls4ml import csim as sim
    with sim.scratch_dir(Path(sys.argv[1])) as d:
        (d / "big").write_bytes(bytes(1000))
        print(d, flush=True)
        if sys.argv[2] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
""")


def _holder(root: Path, mode: str) -> tuple[subprocess.Popen, Path]:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(root), mode], stdout=subprocess.PIPE, text=True,
                         cwd=Path(sim.__file__).parent.parent)
    return p, Path(p.stdout.readline().strip())


def test_scratch_of_a_killed_run_is_removed_a_live_one_kept(tmp_path):
    root = tmp_path / "staging"
    dead, dead_dir = _holder(root, "kill")
    dead.wait()
    assert (dead_dir / "big").is_file() and Path(f"{dead_dir}.lock").exists()  # what SIGKILL leaves
    live, live_dir = _holder(root, "sleep")  # the next run cleans it up on its way in
    try:
        assert not dead_dir.exists() and not Path(f"{dead_dir}.lock").exists()
        with sim.scratch_dir(root) as mine:
            assert live_dir.is_dir()  # its process holds the lock: kept, whatever its PID namespace
            assert mine.is_dir() and mine != live_dir
    finally:
        live.kill()
        live.wait()
    sim.clean_stale(root, sim.TMP_PREFIX, sim.SCRATCH_TOKEN)
    assert list(root.iterdir()) == []


def test_stale_compiler_output_is_removed_by_lock_not_pid(project, tmp_path):
    """Before: `tb_batch.tmp<pid>` of a compiler killed with its flow stayed in the cache forever."""
    cache = tmp_path / "cache"
    d = cache / ("c" * 16 + "-stock")
    d.mkdir(parents=True)
    stale = d / f"tb_batch.tmp{os.getpid()}-0badc0de"  # even our own PID: the lock decides, not the PID
    stale.write_bytes(b"half a binary")
    held = d / "tb_batch.tmp1-feedface"
    held.write_bytes(b"being written")
    locker = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from filelock import FileLock
        with FileLock({str(held) + '.lock'!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        sim.build(project, "c" * 64, cache, ("stock",))
        assert not stale.exists() and held.exists()
    finally:
        locker.kill()
        locker.wait()
