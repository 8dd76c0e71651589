"""cocotb test module: a core co-simulation plan on the generated Verilog.

Started by :func:`xbarode.sim.runner.run_cocotb` with data ``{"plan": …, "expected": …}``
(:mod:`xbarode.sim.core_plan`). It loads the weights, then per image clears the flag, loads the
image, runs (the simulator runs free until ``done``), reads logits, final state and status,
records ``results`` and ``cycles`` (RUN latency per image), and fails naming the first
difference, so that the runner writes a waveform of the failure.
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


@cocotb.test()
async def core_plan(dut):
    """Run the plan; record every result; fail on the first word that differs."""
    data = test_data()
    plan, expected = data["plan"], data.get("expected")
    drv = await start_unit(dut)
    for op, words in weight_loads(plan):
        await drv.send(op, words)
    results, cycles = [], []
    for index, image in enumerate(plan["images"]):
        await drv.strobe("clear")
        await drv.send(CoreOp.LOAD_IMAGE, image)
        cycles.append(await drv.run(CoreOp.RUN))
        logits = await drv.receive(CoreOp.READ_LOGITS, plan["classes"])
        state = await drv.receive(CoreOp.READ_STATE, plan["m"])
        status = await drv.receive(CoreOp.READ_STATUS, plan["steps"])
        results.append({"cls": int(dut.cls.value), "logits": logits, "state": state,
                        "status": [s & 0x1FF for s in status],
                        "overflow": int(dut.overflow.value)})
        if index % 32 == 31 or index == len(plan["images"]) - 1:
            record("results", results)
            record("cycles", cycles)
    record("results", results)
    record("cycles", cycles)
    assert_no_mismatch(compare, expected, results)
