"""Run a core co-simulation plan (:mod:`xbarode.sim.core_plan`) in Amaranth's simulator."""

from __future__ import annotations

from xbarode.hdl.core import Core, CoreOp

from .core_plan import weight_loads
from .streams import op_receive, op_run, op_send, pulse, run_simulation

__all__ = ["run_plan_amaranth"]


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
        for op, words in weight_loads(plan):
            await op_send(ctx, dut, op, words)
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

    run_simulation(dut, testbench, vcd_path)
    return results, cycles
