"""cocotb tests of the toy dot-product unit (tests/toy_design.py), run by
tests/test_toolchain.py through :func:`xbarode.sim.runner.run_cocotb`.

The host passes everything in the data file: the port manifest, the weights, the input
vectors, the expected results (from the Python reference) and the stall rates. The test only
drives and checks; it does not compute the model.
"""

from __future__ import annotations

import random
import time

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, Timer

from xbarode.sim.cocotb_support import (
    CLOCK_PERIOD_NS,
    StreamBench,
    StreamSink,
    StreamSource,
    check_equal,
    field_value,
    pack_fields,
    record,
    reset,
    start_clock,
    test_data,
    unresolved,
    wait_for,
)


def _ports(manifest, direction):
    return [p["name"] for p in manifest if p["direction"] == direction and "const" not in p
            and p["role"] == "data"]


async def _start(dut, manifest):
    """Inputs to 0 and reset high before the first clock edge, then the clock and a reset."""
    for name in _ports(manifest, "in"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    start_clock(dut)
    await Timer(1, "ns")
    # Amaranth's registers and memories have initial values in the Verilog, so no output
    # may be X even before reset.
    before_reset = unresolved(dut, _ports(manifest, "out"))
    await reset(dut)
    after_reset = unresolved(dut, _ports(manifest, "out"))
    record("unresolved_before_reset", before_reset)
    assert not after_reset, f"outputs with X/Z after reset: {after_reset}"
    assert not before_reset, f"outputs with X/Z before reset: {before_reset}"


@cocotb.test()
async def toy_dot(dut):
    """Weights in, vectors in, dot products out; compared with the host's expected list."""
    data = test_data()
    manifest = data["manifest"]
    await _start(dut, manifest)
    rng = random.Random(data.get("seed", 0))

    fields = next(p for p in manifest if p["name"] == "weights__payload")["fields"]
    weights = [pack_fields(fields, {"addr": addr, "value": value})
               for addr, value in enumerate(data["weights"])]
    assert [field_value(word, fields[1]) for word in weights] == data["weights"]
    load = StreamSource(dut, "weights", weights, always_ready=True)
    await StreamBench(dut.clk, sources=[load]).run(max_cycles=len(weights) + 10)

    inputs = [value for vector in data["vectors"] for value in vector]
    source = StreamSource(dut, "x", inputs, valid_rate=data.get("valid_rate", 1.0), rng=rng)
    sink = StreamSink(dut, "y", signed=True, ready_rate=data.get("ready_rate", 1.0), rng=rng,
                      expect=len(data["vectors"]))
    started = time.perf_counter()
    cycles = await StreamBench(dut.clk, sources=[source], sinks=[sink]).run(
        max_cycles=50 * len(inputs) + 100)
    seconds = time.perf_counter() - started
    record("y", sink.received)
    record("stream_cycles", cycles)
    record("stream_seconds_per_cycle", seconds / max(cycles, 1))
    check_equal("y", sink.received, data["expected"], context=lambda i: f"vector {i}")


@cocotb.test()
async def wait_for_status(dut):
    """wait_for returns once a status signal has its value and times out when it never does;
    the clock runs in the simulator meanwhile."""
    data = test_data()
    await _start(dut, data["manifest"])
    dut.y__ready.value = 0
    try:
        await wait_for(dut.y__valid, 1, clk=dut.clk, timeout_cycles=20)
    except TimeoutError as error:
        record("timeout_message", str(error))
    else:
        raise AssertionError("wait_for did not time out on an idle design")
    # One vector in: y.valid rises one cycle after its last element.
    values = data["weights"]
    fields = next(p for p in data["manifest"] if p["name"] == "weights__payload")["fields"]
    load = StreamSource(dut, "weights", [pack_fields(fields, {"addr": a, "value": v})
                                         for a, v in enumerate(values)], always_ready=True)
    feed = StreamSource(dut, "x", data["vector"])
    await StreamBench(dut.clk, sources=[load]).run(len(values) + 10)
    await StreamBench(dut.clk, sources=[feed]).run(len(values) + 10)
    await wait_for(dut.y__valid, 1, clk=dut.clk, timeout_cycles=20)
    record("y", dut.y__payload.value.to_signed())


@cocotb.test()
async def cycle_cost(dut):
    """Wall-clock cost per clock cycle: clock running free in the simulator, counted by
    Python, and driven and sampled by Python every cycle."""
    data = test_data()
    cycles = data.get("cycles", 2000)
    await _start(dut, data["manifest"])
    costs = {}

    started = time.perf_counter()
    await Timer(cycles * CLOCK_PERIOD_NS, "ns")
    costs["free_running"] = (time.perf_counter() - started) / cycles

    started = time.perf_counter()
    await ClockCycles(dut.clk, cycles)
    costs["clock_cycles"] = (time.perf_counter() - started) / cycles

    falling, read_only = FallingEdge(dut.clk), ReadOnly()
    started = time.perf_counter()
    for cycle in range(cycles):
        await falling
        dut.x__payload.value = cycle & 0x3
        dut.x__valid.value = 1
        dut.y__ready.value = 1
        await read_only
        int(dut.x__ready.value)
        int(dut.y__valid.value)
    costs["python_driven"] = (time.perf_counter() - started) / cycles
    record("seconds_per_cycle", costs)

