"""cocotb test module: a Fourier-unit co-simulation plan on the generated Verilog.

Started by :func:`xbarode.sim.runner.run_cocotb` with data ``{"plan": …, "expected": …}``
(:mod:`xbarode.sim.fourier_plan`). It runs the plan's steps (or, for the Hadamard unit, its
element streams), records ``results`` (the model's layout) and ``cycles``, and fails naming the
first differing output, so that the runner writes a waveform of the failure.
"""

from __future__ import annotations

import cocotb

from xbarode.hdl.fourier import FourierOp
from xbarode.sim.cocotb_support import (
    OP_INPUTS,
    TAIL,
    OpDriver,
    StreamBench,
    StreamSink,
    StreamSource,
    assert_no_mismatch,
    record,
    start_unit,
    test_data,
)
from xbarode.sim.fourier_plan import compare


def _pack(re, im, width):
    mask = (1 << width) - 1
    return (re & mask) | (im & mask) << width


def _unpack(word, width):
    def signed(v):
        return v - (1 << width) if v >> (width - 1) else v
    mask = (1 << width) - 1
    return [signed(word & mask), signed(word >> width & mask)]


async def _op_plan(dut, plan):
    drv = OpDriver(dut)
    limits = plan.get("limits", {})
    results, cycles = [], {}
    for vector in plan["vectors"]:
        await drv.strobe("clear")
        answers = []
        for step in vector["steps"]:
            if "send" in step:
                await drv.send(FourierOp[step["send"]], step["words"])
            elif "run" in step:
                cycles[step["run"]] = await drv.run(FourierOp[step["run"]],
                                                    limit=limits.get(step["run"]))
            else:
                out = await drv.receive(FourierOp[step["receive"]], step["count"])
                answers.append({"out": out, "overflow": int(dut.overflow.value)})
        results.append(answers)
        record("results", results)
    return results, cycles


async def _hadamard_plan(dut, plan):
    params = plan["params"]
    width, swidth = params["width"], params["spectrum"][0]
    drv = OpDriver(dut)
    results, cycles = [], {}
    for vector in plan["vectors"]:
        await drv.strobe("clear")
        await drv.strobe("restart")
        load = StreamSource(dut, "load", [_pack(re, im, swidth) for re, im in vector["spectrum"]])
        await StreamBench(drv.clk, sources=[load]).run(len(vector["spectrum"]) + 16)
        elements = [_pack(re, im, width) for re, im in vector["elements"]]
        # A strict sink, still ready for TAIL cycles after the last product: a surplus one
        # fails the test.
        sink = StreamSink(dut, "o", expect=len(elements), strict=True)
        cycles["elements"] = await StreamBench(
            drv.clk, sources=[StreamSource(dut, "i", elements)], sinks=[sink],
            tail=TAIL).run(len(elements) + 64)
        out = [v for word in sink.received for v in _unpack(word, width)]
        results.append([{"out": out, "overflow": int(dut.overflow.value)}])
        record("results", results)
    return results, cycles


@cocotb.test()
async def fourier_plan(dut):
    """Run the plan; record every result; fail on the first word that differs."""
    data = test_data()
    plan, expected = data["plan"], data.get("expected")
    hadamard = plan["params"]["unit"] == "hadamard"
    await start_unit(dut, ("clear", "restart", "load__valid", "i__valid", "o__ready")
                     if hadamard else OP_INPUTS)
    results, cycles = await (_hadamard_plan if hadamard else _op_plan)(dut, plan)
    record("results", results)
    record("cycles", cycles)
    assert_no_mismatch(compare, expected, results)
