"""Shared helpers for Amaranth-simulator testbenches: stream put/get, operation strobes, and
operations of a unit with the ``op``/``start``/``done`` strobes and ``i``/``o`` word streams
(the tile, the Fourier blocks, the core; the cocotb twin is ``cocotb_support.OpDriver``)."""

from __future__ import annotations

import contextlib

__all__ = ["CLOCK_PERIOD", "op_receive", "op_run", "op_send", "pulse", "run_simulation",
           "stream_get", "stream_put", "wait_for"]

#: Simulated clock period (s); only the waveform's time axis depends on it.
CLOCK_PERIOD = 1e-8


def run_simulation(dut, testbench, vcd_path=None) -> None:
    """Simulate ``dut`` with one clock until the async ``testbench(ctx)`` returns; a VCD
    waveform at ``vcd_path`` if given."""
    from amaranth.sim import Simulator

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(testbench)
    waves = sim.write_vcd(str(vcd_path)) if vcd_path else contextlib.nullcontext()
    with waves:
        sim.run()


async def stream_put(ctx, stream, payload) -> None:
    """Offer ``payload`` on a stream the DUT sinks; return after the transfer."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream):
    """Take one payload from a stream the DUT sources."""
    ctx.set(stream.ready, 1)
    (payload,) = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def pulse(ctx, signal) -> None:
    """Hold ``signal`` high for one clock cycle."""
    ctx.set(signal, 1)
    await ctx.tick()
    ctx.set(signal, 0)


async def wait_for(ctx, signal) -> int:
    """Tick until ``signal`` is high at a clock edge; return the number of ticks."""
    ticks = 0
    while True:
        # Without .until(), the awaited tick yields (clock, reset, *samples).
        *_, value = await ctx.tick().sample(signal)
        ticks += 1
        if value:
            return ticks


async def op_send(ctx, dut, op, words) -> None:
    """Start ``op`` and stream ``words`` into ``dut.i``."""
    ctx.set(dut.op, op)
    await pulse(ctx, dut.start)
    for word in words:
        await stream_put(ctx, dut.i, word)


async def op_receive(ctx, dut, op, count) -> list:
    """Start ``op`` and collect ``count`` words from ``dut.o``."""
    ctx.set(dut.op, op)
    await pulse(ctx, dut.start)
    return [await stream_get(ctx, dut.o) for _ in range(count)]


async def op_run(ctx, dut, op) -> int:
    """Start ``op`` and wait for ``dut.done``; its latency, start to done inclusive."""
    ctx.set(dut.op, op)
    ctx.set(dut.start, 1)
    await ctx.tick()
    ctx.set(dut.start, 0)
    return 1 + await wait_for(ctx, dut.done)
