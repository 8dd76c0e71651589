"""cocotb test module: a core co-simulation plan on the generated Verilog.

Started by :func:`xbarode.sim.runner.run_cocotb` with data ``{"plan": …, "expected": …}``
(:mod:`xbarode.sim.core_plan`). It loads the weights, then per image clears the flag, loads the
image, runs (the simulator runs free until ``done``; the class, ``converged``, ``iterations``
and the flag are read in the cycle ``done`` pulses), reads logits, final state, status and
the trajectory, records ``results`` and ``cycles`` (RUN latency per image), and fails naming
the first difference, so that the runner writes a waveform of the failure. Every operation
has a cycle limit (RUN's from the plan's ``limits``) and its handshake is checked
(:class:`~xbarode.sim.cocotb_support.OpDriver`).
"""

from __future__ import annotations

import cocotb

from xbarode.hdl.core import CoreOp
from xbarode.sim.cocotb_support import (
    assert_no_mismatch,
    record,
    start_unit,
    test_data,
)
from xbarode.sim.core_plan import compare, weight_loads

#: The core's outputs a host latches when RUN's ``done`` pulses.
DONE_OUTPUTS = ("cls", "converged", "iterations", "overflow")


@cocotb.test()
async def core_plan(dut):
    """Run the plan; record every result; fail on the first word that differs."""
    data = test_data()
    plan, expected = data["plan"], data.get("expected")
    limits = plan.get("limits", {})
    drv = await start_unit(dut)
    for op, words in weight_loads(plan):
        await drv.send(op, words)
    results, cycles = [], []
    words = (plan["steps"] + 1) * plan["m"]
    for index, image in enumerate(plan["images"]):
        await drv.strobe("clear")
        await drv.send(CoreOp.LOAD_IMAGE, image)
        latency, at_done = await drv.run(CoreOp.RUN, limit=limits.get("RUN"),
                                         sample=DONE_OUTPUTS)
        cycles.append(latency)
        result = dict(zip(DONE_OUTPUTS, at_done, strict=True))
        result["logits"] = await drv.receive(CoreOp.READ_LOGITS, plan["classes"])
        result["state"] = await drv.receive(CoreOp.READ_STATE, plan["m"])
        status = await drv.receive(CoreOp.READ_STATUS, plan["steps"])
        result["status"] = [s & 0x1FF for s in status]
        result["trajectory"] = await drv.receive(CoreOp.READ_TRAJECTORY, words)
        results.append(result)
        if index % 32 == 31 or index == len(plan["images"]) - 1:
            record("results", results)
            record("cycles", cycles)
    record("results", results)
    record("cycles", cycles)
    assert_no_mismatch(compare, expected, results)
