"""cocotb test module: a training plan (:mod:`xbarode.sim.adjoint_plan`) on the core's
Verilog.

Started by :func:`xbarode.sim.runner.run_cocotb` with data ``{"plan": …, "expected": …}``.
It loads the weights, then per image clears the flag, loads the image, runs, reads the
logits, loads ``∂L/∂logits``, runs BACKWARD (the simulator running free until ``done``) and
reads the gradient sums; APPLY and READ_WEIGHTS where the plan says. It records
``results`` and ``cycles`` (``run``, ``backward``, ``apply``) and fails naming the first difference,
so that the runner writes a waveform of the failure.
"""

from __future__ import annotations

import cocotb

from xbarode.hdl.core import CoreOp
from xbarode.sim.adjoint_plan import compare
from xbarode.sim.cocotb_support import (
    assert_no_mismatch,
    record,
    start_unit,
    test_data,
)
from xbarode.sim.core_plan import weight_loads


@cocotb.test()
async def adjoint_plan(dut):
    """Run the plan; record every result; fail on the first word that differs."""
    data = test_data()
    plan, expected = data["plan"], data.get("expected")
    limits = plan.get("limits", {})
    drv = await start_unit(dut)
    for op, words in weight_loads(plan):
        await drv.send(op, words)
    apply_after, read_after = set(plan["apply_after"]), set(plan["read_weights_after"])
    results, cycles = [], {"run": [], "backward": [], "apply": []}
    for index, image in enumerate(plan["images"]):
        await drv.strobe("clear")
        await drv.send(CoreOp.LOAD_IMAGE, image["x"])
        cycles["run"].append(await drv.run(CoreOp.RUN, limit=limits.get("RUN")))
        entry = {"kind": "image", "logits": await drv.receive(CoreOp.READ_LOGITS,
                                                              plan["classes"])}
        await drv.send(CoreOp.LOAD_GRAD, image["grad_logits"])
        cycles["backward"].append(await drv.run(CoreOp.BACKWARD, limit=limits.get("BACKWARD")))
        entry["overflow"] = int(dut.overflow.value)
        if plan["read_grads"]:
            entry["grads"] = await drv.receive(CoreOp.READ_GRAD, plan["grad_words"])
        results.append(entry)
        if index in apply_after:
            await drv.strobe("clear")
            cycles["apply"].append(await drv.run(CoreOp.APPLY, limit=limits.get("APPLY")))
            entry = {"kind": "apply", "overflow": int(dut.overflow.value)}
            if index in read_after:
                entry["weights"] = await drv.receive(CoreOp.READ_WEIGHTS, plan["weight_words"])
            results.append(entry)
        if index % 16 == 15:
            record("results", results)
            record("cycles", cycles)
    record("results", results)
    record("cycles", cycles)
    assert_no_mismatch(compare, expected, results)
