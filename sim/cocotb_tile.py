"""cocotb test module: a tile co-simulation plan on the generated Verilog.

Started by :func:`xbarode.sim.runner.run_cocotb` with data ``{"plan": …, "expected": …}``
(:mod:`xbarode.sim.tile_plan`). It runs the plan, records ``results`` (the same layout as the
model's) and ``cycles`` (latency per operation kind), and fails naming the first differing
output, so that the runner writes a waveform of the failure.
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import FallingEdge
from cocotb.utils import get_sim_time

from xbarode.hdl.tile import TileOp
from xbarode.sim.cocotb_support import (
    CLOCK_PERIOD_NS,
    StreamBench,
    StreamSink,
    StreamSource,
    record,
    reset,
    start_clock,
    test_data,
    wait_for,
)

# Generous bound on one operation's cycles; a hang fails the test instead of the CI job.
TIMEOUT_CYCLES = 1 << 20


class TileDriver:
    """Starts tile operations and moves words through its streams."""

    def __init__(self, dut):
        self.dut = dut
        self.clk = dut.clk

    async def strobe(self, name):
        signal = getattr(self.dut, name)
        await FallingEdge(self.clk)
        signal.value = 1
        await FallingEdge(self.clk)
        signal.value = 0

    async def start(self, op):
        self.dut.op.value = op.value
        await self.strobe("start")

    async def run(self, op) -> int:
        """Start a compute operation and wait for ``done``; return its latency in cycles."""
        self.dut.op.value = op.value
        await FallingEdge(self.clk)
        self.dut.start.value = 1
        began = get_sim_time("ns")
        await FallingEdge(self.clk)
        self.dut.start.value = 0
        await wait_for(self.dut.done, clk=self.clk, timeout_cycles=TIMEOUT_CYCLES)
        # wait_for returns on the falling edge after done rose: count start..done inclusive.
        return round((get_sim_time("ns") - began) / CLOCK_PERIOD_NS) + 1

    async def send(self, op, words):
        await self.start(op)
        await StreamBench(self.clk, sources=[StreamSource(self.dut, "i", words)]).run(
            len(words) + 16)

    async def receive(self, op, count):
        await self.start(op)
        sink = StreamSink(self.dut, "o", signed=True, expect=count)
        await StreamBench(self.clk, sinks=[sink]).run(4 * count + 16)
        return sink.received


@cocotb.test()
async def tile_plan(dut):
    """Run the plan; record every result; fail on the first word that differs."""
    data = test_data()
    plan, expected = data["plan"], data.get("expected")
    params = plan["params"]
    start_clock(dut)
    for name in ("start", "clear", "i__valid", "o__ready"):
        getattr(dut, name).value = 0
    await reset(dut)
    drv = TileDriver(dut)
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
            cycles[entry["op"]] = await drv.run(op)
            if entry["op"] == "update":
                out = await drv.receive(TileOp.READ_W, params["rows"] * params["cols"])
            else:
                n = params["rows"] if entry["op"] == "forward" else params["cols"]
                out = await drv.receive(TileOp.READ_Y, n)
            answers.append({"out": out, "overflow": int(dut.overflow.value)})
        results.append(answers)
        record("results", results)
    record("cycles", cycles)
    if expected is not None:
        from xbarode.sim.tile_plan import compare

        report = compare(expected, results)
        assert report["mismatches"] == 0, (
            f"{report['mismatches']} of {report['compared']} words and flags differ; first: "
            f"{report['first']}")
