"""Run a tile co-simulation plan (:mod:`xbarode.sim.tile_plan`) in Amaranth's simulator."""

from __future__ import annotations

import contextlib

from amaranth.sim import Simulator

from xbarode.hdl.tile import TileOp

from .streams import pulse, stream_get, stream_put, wait_for
from .tile_plan import TileParams

__all__ = ["run_plan_amaranth"]

#: Simulated clock period (s); only the waveform's time axis depends on it.
CLOCK_PERIOD = 1e-8


def run_plan_amaranth(params: TileParams, plan: dict, vcd_path=None):
    """Run ``plan`` on the tile in Amaranth's simulator.

    Returns
    -------
    results : list of list of dict
        Per vector and operation: ``out`` (words) and ``overflow`` (the sticky flag).
    cycles : dict
        Measured latency (start to done, inclusive) of each compute operation kind.
    """
    dut = params.component()
    results, cycles = [], {}

    async def start(ctx, op) -> int:
        ctx.set(dut.op, op)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        return 1 + await wait_for(ctx, dut.done)

    async def testbench(ctx):
        for vector in plan["vectors"]:
            await pulse(ctx, dut.clear)
            await start_stream(ctx, TileOp.LOAD_W, vector["weights"])
            answers = []
            for entry in vector["ops"]:
                if "x" in entry:
                    await start_stream(ctx, TileOp.LOAD_X, entry["x"])
                if "s" in entry:
                    await start_stream(ctx, TileOp.LOAD_S, entry["s"])
                kind = {"forward": TileOp.FORWARD, "transposed": TileOp.TRANSPOSED,
                        "update": TileOp.UPDATE}[entry["op"]]
                cycles[entry["op"]] = await start(ctx, kind)
                if entry["op"] == "update":
                    out = await read(ctx, TileOp.READ_W, params.rows * params.cols)
                else:
                    n = params.rows if entry["op"] == "forward" else params.cols
                    out = await read(ctx, TileOp.READ_Y, n)
                answers.append({"out": out, "overflow": ctx.get(dut.overflow)})
            results.append(answers)

    async def start_stream(ctx, op, words):
        ctx.set(dut.op, op)
        await pulse(ctx, dut.start)
        for word in words:
            await stream_put(ctx, dut.i, word)

    async def read(ctx, op, n):
        ctx.set(dut.op, op)
        await pulse(ctx, dut.start)
        return [await stream_get(ctx, dut.o) for _ in range(n)]

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(testbench)
    waves = sim.write_vcd(str(vcd_path)) if vcd_path else contextlib.nullcontext()
    with waves:
        sim.run()
    return results, cycles
