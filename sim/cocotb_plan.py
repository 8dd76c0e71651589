"""cocotb test module: one co-simulation plan on the generated Verilog, for every unit.

Started by :func:`xbarode.sim.runner.run_cocotb` with the data of
:func:`xbarode.sim.engine.cocotb_data`: the plan module's name, the plan and the model's
answers. It starts the clock, resets, runs the plan module's ``execute`` with a
:class:`~xbarode.sim.cocotb_support.CocotbDriver` (the simulator runs free while the design
computes), records ``results`` and ``cycles`` as they come (so a failed run still reports what
it got), and fails naming the first difference from the model (the plan module's
``compare``), so that the runner writes a waveform of the failure.
"""

from __future__ import annotations

import importlib

import cocotb

from xbarode.sim.cocotb_support import (
    CocotbDriver,
    assert_no_mismatch,
    record,
    start_unit,
    test_data,
)

#: Inputs held low from the start, where the unit has them (the Hadamard unit has ``restart``
#: and ``load`` instead of ``start``).
CONTROL_INPUTS = ("start", "clear", "restart", "i__valid", "o__ready", "load__valid",
                  "image__valid")


@cocotb.test()
async def plan(dut):
    """Run the plan; record every result; fail on the first word that differs."""
    data = test_data()
    module = importlib.import_module(data["engine"])
    plan, expected = data["plan"], data.get("expected")
    inputs = [name for name in CONTROL_INPUTS if hasattr(dut, name)]
    driver = CocotbDriver(await start_unit(dut, inputs), plan.get("limits"))

    def progress(results, cycles):
        record("results", results)
        record("cycles", cycles)

    results, cycles = await module.execute(plan, driver, progress)
    progress(results, cycles)
    assert_no_mismatch(module.compare, expected, results)
