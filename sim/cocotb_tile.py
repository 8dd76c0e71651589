"""cocotb test module: a tile co-simulation plan on the generated Verilog.

Started by :func:`xbarode.sim.runner.run_cocotb` with data ``{"plan": …, "expected": …}``
(:mod:`xbarode.sim.tile_plan`). It runs the plan, records ``results`` (the same layout as the
model's) and ``cycles`` (latency per operation kind), and fails naming the first differing
output, so that the runner writes a waveform of the failure.
"""

from __future__ import annotations

import cocotb

from xbarode.hdl.tile import TileOp
from xbarode.sim.cocotb_support import (
    assert_no_mismatch,
    record,
    start_unit,
    test_data,
)
from xbarode.sim.tile_plan import compare


@cocotb.test()
async def tile_plan(dut):
    """Run the plan; record every result; fail on the first word that differs."""
    data = test_data()
    plan, expected = data["plan"], data.get("expected")
    params = plan["params"]
    limits = plan.get("limits", {})
    drv = await start_unit(dut)
    results, cycles = [], {}
    for vector in plan["vectors"]:
        await drv.strobe("clear")
        await drv.send(TileOp.LOAD_W, vector["weights"])
        answers = []
        for entry in vector["ops"]:
            if "x" in entry:
                await drv.send(TileOp.LOAD_X, entry["x"])
            if "s" in entry:
                await drv.send(TileOp.LOAD_S, entry["s"])
            op = {"forward": TileOp.FORWARD, "transposed": TileOp.TRANSPOSED,
                  "update": TileOp.UPDATE}[entry["op"]]
            cycles[entry["op"]] = await drv.run(op, limit=limits.get(entry["op"]))
            if entry["op"] == "update":
                out = await drv.receive(TileOp.READ_W, params["rows"] * params["cols"])
            else:
                n = params["rows"] if entry["op"] == "forward" else params["cols"]
                out = await drv.receive(TileOp.READ_Y, n)
            answers.append({"out": out, "overflow": int(dut.overflow.value)})
        results.append(answers)
        record("results", results)
    record("cycles", cycles)
    assert_no_mismatch(compare, expected, results)
