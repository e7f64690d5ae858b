"""The skid buffer alone in Amaranth's simulator: every beat in order under random stalls on both sides, one
beat a cycle when nothing stalls, and ``i.ready`` not following ``o.ready`` within a cycle (what it is for)."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module
from amaranth.sim import Simulator

from fpga_flow.backends.rtl.hw import stream
from fpga_flow.backends.rtl.hw.skid import SkidBuffer
from tests.rtl.stream_tb import run_stream

pytestmark = pytest.mark.rtl


@pytest.mark.parametrize("seed,p_valid,p_ready", [(0, 0.7, 0.7), (1, 1.0, 0.3), (2, 0.3, 1.0), (3, 0.9, 0.5)])
def test_skid_passes_every_beat_in_order_under_random_stalls(seed, p_valid, p_ready):
    rng = np.random.default_rng(seed)
    x = rng.integers(-8, 8, size=(300, 3))
    beats = [stream.pack(v, 4) for v in x]
    got = run_stream(SkidBuffer(3, 4), beats, len(beats), seed=seed, p_valid=p_valid, p_ready=p_ready)
    assert got == beats


def _drive(dut, script):
    """Run ``script(ctx)`` as the only testbench of ``dut`` (clocked)."""
    top = Module()
    top.submodules.dut = dut
    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(script)
    sim.run()


def test_skid_sustains_one_beat_a_cycle_and_adds_no_latency():
    dut, n = SkidBuffer(1, 8), 50
    seen = []

    async def script(ctx):
        ctx.set(dut.o.ready, 1)
        for k in range(n):
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, k)
            assert ctx.get(dut.i.ready) == 1
            assert ctx.get(dut.o.valid) == 1  # the same cycle: no register in the way when nothing stalls
            seen.append(ctx.get(dut.o.payload))
            await ctx.tick()

    _drive(dut, script)
    assert seen == list(range(n))


def test_skid_ready_is_a_flop_not_the_consumers_ready():
    dut = SkidBuffer(1, 8)

    async def script(ctx):
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, 7)
        for r in (0, 1, 0):  # within one cycle, o.ready changes; i.ready must not
            ctx.set(dut.o.ready, r)
            assert ctx.get(dut.i.ready) == 1
        await ctx.tick()  # o.ready was 0 at the edge: the beat went into the skid register
        ctx.set(dut.i.payload, 8)
        for r in (1, 0, 1):
            ctx.set(dut.o.ready, r)
            assert ctx.get(dut.i.ready) == 0
            assert (ctx.get(dut.o.valid), ctx.get(dut.o.payload)) == (1, 7)
        await ctx.tick()  # taken: empty again, the next beat passes through
        ctx.set(dut.o.ready, 1)
        assert ctx.get(dut.i.ready) == 1
        assert ctx.get(dut.o.payload) == 8

    _drive(dut, script)
