"""cocotb test of the ECP5-mapped multiplier (hdl/dsp.py on the MULT18X18D model), run by
tests/test_dsp.py: a new operand pair every cycle, each product read back; the host compares
them with Python's products."""

from __future__ import annotations

import cocotb
from cocotb.triggers import FallingEdge

from xbarode.sim.cocotb_support import record, reset, start_clock, test_data


@cocotb.test()
async def products(dut):
    """Operands change on falling edges; ``p`` is sampled on every falling edge."""
    pairs = test_data()["pairs"]
    dut.a.value = 0
    dut.b.value = 0
    start_clock(dut)
    await reset(dut)
    mask_a, mask_b = (1 << len(dut.a)) - 1, (1 << len(dut.b)) - 1
    seen = []
    for a, b in [*pairs, (0, 0), (0, 0)]:
        seen.append(dut.p.value.to_signed())
        dut.a.value = a & mask_a
        dut.b.value = b & mask_b
        await FallingEdge(dut.clk)
    seen.append(dut.p.value.to_signed())
    # The pair set at falling edge k is registered at the next rising edge and its product at
    # the one after: it is seen two falling edges later.
    record("products", seen[2:len(pairs) + 2])
