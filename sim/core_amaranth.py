"""Run a core co-simulation plan (:mod:`xbarode.sim.core_plan`) in Amaranth's simulator."""

from __future__ import annotations

import contextlib

from amaranth.sim import Simulator

from xbarode.hdl.core import Core, CoreOp

from .streams import op_receive, op_run, op_send, pulse

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

    async def testbench(ctx):
        w = plan["weights"]
        for op, name in ((CoreOp.LOAD_A, "A"), (CoreOp.LOAD_B, "Bt"), (CoreOp.LOAD_C, "C"),
                         (CoreOp.LOAD_D, "d")):
            await op_send(ctx, dut, op, w[name])
        for image in plan["images"]:
            await pulse(ctx, dut.clear)
            await op_send(ctx, dut, CoreOp.LOAD_IMAGE, image)
            cycles.append(await op_run(ctx, dut, CoreOp.RUN))
            logits = await op_receive(ctx, dut, CoreOp.READ_LOGITS, plan["classes"])
            state = await op_receive(ctx, dut, CoreOp.READ_STATE, plan["m"])
            status = await op_receive(ctx, dut, CoreOp.READ_STATUS, plan["steps"])
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
