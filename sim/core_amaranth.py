"""Run a core co-simulation plan (:mod:`xbarode.sim.core_plan`) in Amaranth's simulator."""

from __future__ import annotations

import contextlib

from amaranth.sim import Simulator

from xbarode.hdl.core import Core, CoreOp

from .streams import pulse, stream_get, stream_put, wait_for

__all__ = ["run_plan_amaranth"]

#: Simulated clock period (s); only the waveform's time axis depends on it.
CLOCK_PERIOD = 1e-8


def run_plan_amaranth(config, plan: dict, vcd_path=None):
    """Run ``plan`` on the core in Amaranth's simulator.

    Returns
    -------
    results : list of dict
        Per image: ``cls``, ``logits``, ``state``, ``status``, ``overflow``.
    cycles : list of int
        RUN latency (start to done, inclusive) per image.
    """
    dut = Core(config)
    results, cycles = [], []

    async def send(ctx, op, words):
        ctx.set(dut.op, op)
        await pulse(ctx, dut.start)
        for word in words:
            await stream_put(ctx, dut.i, word)

    async def receive(ctx, op, count):
        ctx.set(dut.op, op)
        await pulse(ctx, dut.start)
        return [await stream_get(ctx, dut.o) for _ in range(count)]

    async def testbench(ctx):
        w = plan["weights"]
        for op, name in ((CoreOp.LOAD_A, "A"), (CoreOp.LOAD_B, "Bt"), (CoreOp.LOAD_C, "C"),
                         (CoreOp.LOAD_D, "d")):
            await send(ctx, op, w[name])
        for image in plan["images"]:
            await pulse(ctx, dut.clear)
            await send(ctx, CoreOp.LOAD_IMAGE, image)
            ctx.set(dut.op, CoreOp.RUN)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles.append(1 + await wait_for(ctx, dut.done))
            logits = await receive(ctx, CoreOp.READ_LOGITS, plan["classes"])
            state = await receive(ctx, CoreOp.READ_STATE, plan["m"])
            status = await receive(ctx, CoreOp.READ_STATUS, plan["steps"])
            results.append({"cls": ctx.get(dut.cls), "logits": logits, "state": state,
                            "status": [s & 0x1FF for s in status],
                            "overflow": ctx.get(dut.overflow)})

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(testbench)
    waves = sim.write_vcd(str(vcd_path)) if vcd_path else contextlib.nullcontext()
    with waves:
        sim.run()
    return results, cycles
