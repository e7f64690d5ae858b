"""Amaranth simulator testbench for one stream block: a producer and a consumer that stall at random
(valid and ready each dropped with a given probability, seeded), and an exact count of output beats."""

from __future__ import annotations

import random

from amaranth import Module, Signal
from amaranth.sim import Simulator


def run_stream(dut, beats: list[int], n_out: int, *, seed: int = 0, p_valid: float = 0.7, p_ready: float = 0.7,
               tail: int = 30, max_cycles: int = 200_000) -> list[int]:
    """Push ``beats`` into ``dut.i`` and collect the first ``n_out`` beats of ``dut.o`` (flat payload ints).

    After the last expected beat the consumer keeps ``ready`` high for ``tail`` more cycles and fails if
    the block offers anything more: the count is exact, not "at least"."""
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    got: list[int] = []
    extra: list[int] = []

    async def producer(ctx):
        for beat in beats:
            while rng_in.random() >= p_valid:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.payload, beat)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        cycles = 0
        while len(got) < n_out:
            ready = rng_out.random() < p_ready
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if ready and valid:
                got.append(payload)
            cycles += 1
            assert cycles < max_cycles, f"stalled: {len(got)} of {n_out} output beats after {cycles} cycles"
        ctx.set(dut.o.ready, 1)
        for _ in range(tail):
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                extra.append(payload)

    _simulate(dut, producer, consumer)
    assert not extra, f"{len(extra)} output beats more than the {n_out} expected"
    return got


def full_rate_cycles(dut, beats: list[int], n_out: int, max_cycles: int = 200_000) -> tuple[int, list[int]]:
    """Push ``beats`` into ``dut.i`` as fast as it takes them, with ``dut.o.ready`` always high; returns (the
    cycle of the ``n_out``-th output beat counted from the first input cycle, the output beats): what a block
    sustains when nothing around it stalls."""
    got: list[int] = []
    cycle = [0]

    async def producer(ctx):
        for beat in beats:
            ctx.set(dut.i.payload, beat)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        while len(got) < n_out:
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycle[0] += 1
            if valid:
                got.append(payload)
            assert cycle[0] < max_cycles, f"stalled: {len(got)} of {n_out} output beats after {cycle[0]} cycles"

    _simulate(dut, producer, consumer)
    return cycle[0], got


def _simulate(dut, producer, consumer) -> None:
    """Run ``producer`` (in the background) and ``consumer`` against ``dut`` on a 1 MHz clock."""
    top = Module()  # a sync domain even for a purely combinational block (a 1:1 width converter)
    top.submodules.dut = dut
    tick = Signal()
    top.d.sync += tick.eq(~tick)
    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
