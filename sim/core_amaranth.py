"""Run a core co-simulation plan (:mod:`xbarode.sim.core_plan`) in Amaranth's simulator."""

from __future__ import annotations

from xbarode.hdl.core import Core, CoreOp

from .core_plan import weight_loads
from .streams import op_receive, op_sample, op_send, pulse, run_simulation

__all__ = ["DONE_OUTPUTS", "run_plan_amaranth"]

#: The core's outputs a host latches when RUN's ``done`` pulses.
DONE_OUTPUTS = ("cls", "converged", "iterations", "overflow")


def run_plan_amaranth(config, plan: dict, vcd_path=None):
    """Run ``plan`` on the core in Amaranth's simulator.

    Every operation has a cycle limit (:mod:`xbarode.sim.latency`) and its handshake is
    checked (:mod:`xbarode.sim.streams`).

    Returns
    -------
    results : list of dict
        Per image: ``cls``, ``converged``, ``iterations`` and ``overflow`` (sampled in the
        cycle RUN's ``done`` pulses), ``logits``, ``state``, ``status``, ``trajectory``.
    cycles : list of int
        RUN latency (start to done, inclusive) per image.
    """
    dut = Core(config)
    results, cycles = [], []
    words = (plan["steps"] + 1) * plan["m"]

    async def testbench(ctx):
        for op, loaded in weight_loads(plan):
            await op_send(ctx, dut, op, loaded)
        for image in plan["images"]:
            await pulse(ctx, dut.clear)
            await op_send(ctx, dut, CoreOp.LOAD_IMAGE, image)
            latency, at_done = await op_sample(ctx, dut, CoreOp.RUN,
                                               [getattr(dut, name) for name in DONE_OUTPUTS])
            cycles.append(latency)
            result = dict(zip(DONE_OUTPUTS, (int(v) for v in at_done), strict=True))
            result["logits"] = await op_receive(ctx, dut, CoreOp.READ_LOGITS, plan["classes"])
            result["state"] = await op_receive(ctx, dut, CoreOp.READ_STATE, plan["m"])
            status = await op_receive(ctx, dut, CoreOp.READ_STATUS, plan["steps"])
            result["status"] = [s & 0x1FF for s in status]
            result["trajectory"] = await op_receive(ctx, dut, CoreOp.READ_TRAJECTORY, words)
            results.append(result)

    run_simulation(dut, testbench, vcd_path)
    return results, cycles
