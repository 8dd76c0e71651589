"""Helpers for cocotb test modules (they run inside the simulator, started by
:func:`xbarode.sim.runner.run_cocotb`): test data in and results out, clock and reset, stream
sources and sinks, and a checker whose report names the first differing output.

How data moves: the host writes one JSON file and passes its path in the environment variable
``XBARODE_COCOTB_DATA`` (:func:`test_data` reads it); a cocotb test stores JSON-able results
with :func:`record`, which rewrites the file named by ``XBARODE_COCOTB_OUTPUT`` (the runner
returns its content as ``CosimResult.outputs``). Bulk data goes through streams: a
:class:`StreamBench` drives every source from a list and collects every sink into a list in
one Python loop iteration per clock cycle, and the checks run once at the end; while the
design computes without streaming, wait on a status signal (:func:`wait_for`) so that the
clock runs in the simulator without Python.

Timing convention, the same on Verilator and Icarus: inputs change on the falling edge of the
clock and handshakes are sampled at ``ReadOnly`` of that same time step, half a period before
the rising edge that acts on them, so no value read or written depends on how a simulator
orders register updates and callbacks within the time step of the rising edge.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge, with_timeout
from cocotb.utils import get_sim_time

from .latency import limit

__all__ = [
    "CLOCK_PERIOD_NS", "DATA_ENV", "OP_INPUTS", "OUTPUT_ENV", "TAIL", "CocotbDriver",
    "HandshakeError", "OpDriver", "StreamBench",
    "StreamSink", "StreamSource", "assert_no_mismatch", "check_equal", "field_value",
    "pack_fields", "record", "reset", "start_clock", "start_unit", "test_data", "unresolved",
    "wait_for",
]

DATA_ENV = "XBARODE_COCOTB_DATA"
OUTPUT_ENV = "XBARODE_COCOTB_OUTPUT"

CLOCK_PERIOD_NS = 10

_recorded = {}


def test_data():
    """The dict the host passed to ``run_cocotb(data=...)``; empty if it passed none."""
    path = os.environ.get(DATA_ENV)
    if not path:
        return {}
    return json.loads(Path(path).read_text())


def record(key, value):
    """Store a JSON-able ``value`` under ``key`` for the host (``CosimResult.outputs``)."""
    _recorded[key] = value
    path = os.environ.get(OUTPUT_ENV)
    if path:
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(_recorded))
        tmp.replace(path)


def pack_fields(fields, values):
    """Pack a struct payload: ``fields`` as in a port manifest entry (``name``, ``offset``,
    ``width``), ``values`` a dict by field name (negative numbers in two's complement)."""
    word = 0
    for field in fields:
        word |= (int(values[field["name"]]) & ((1 << field["width"]) - 1)) << field["offset"]
    return word


def field_value(word, field):
    """One field of a packed struct payload, sign-extended if the field is signed."""
    value = (word >> field["offset"]) & ((1 << field["width"]) - 1)
    if field.get("signed") and value >> (field["width"] - 1):
        value -= 1 << field["width"]
    return value


def _mask(handle, value):
    return int(value) & ((1 << len(handle)) - 1)


def start_clock(dut, name="clk", period_ns=CLOCK_PERIOD_NS, impl="gpi"):
    """Start a free-running clock on ``dut.NAME`` and return it.

    ``impl="gpi"`` toggles the clock from cocotb's C++ layer, with no Python per cycle. cocotb
    picks it by itself only on Verilator (its ``"auto"`` avoids it where it does not trust the
    simulator's inertial writes, as on Icarus); with inputs changed on the falling edge only,
    as everywhere here, nothing races the clock, and on Icarus a free-running cycle costs
    0.8 µs instead of 14 µs with the Python clock (measured on the toy design).
    """
    clock = Clock(getattr(dut, name), period_ns, unit="ns", impl=impl)
    clock.start()
    return clock


async def reset(dut, cycles=2, clk="clk", rst="rst"):
    """Hold ``rst`` high for ``cycles`` rising edges, release it on a falling edge."""
    getattr(dut, rst).value = 1
    await ClockCycles(getattr(dut, clk), cycles, rising=True)
    await FallingEdge(getattr(dut, clk))
    getattr(dut, rst).value = 0


def unresolved(dut, names):
    """``[(name, value string)]`` of the signals among ``names`` that hold X or Z bits."""
    bad = []
    for name in names:
        value = getattr(dut, name).value
        if not value.is_resolvable:
            bad.append((name, str(value)))
    return bad


async def wait_for(signal, value=1, *, clk, timeout_cycles):
    """Wait until ``signal`` equals ``value`` without running Python on every cycle: the
    simulator runs free until the signal changes. Raises ``TimeoutError`` after
    ``timeout_cycles`` clock periods."""
    async def until():
        while not (signal.value.is_resolvable and int(signal.value) == value):
            await (RisingEdge(signal) if value == 1 else FallingEdge(signal))
    try:
        await with_timeout(until(), timeout_cycles * CLOCK_PERIOD_NS, "ns")
    except cocotb.triggers.SimTimeoutError as error:
        raise TimeoutError(f"{signal._name} did not become {value} within {timeout_cycles} "
                           "cycles") from error
    await FallingEdge(clk)


class StreamSource:
    """Drives an Amaranth stream input (``PREFIX__payload``, ``__valid``, ``__ready``) from a
    list of integers, keeping ``valid`` high with probability ``valid_rate`` each cycle.

    ``ready`` is read only when the stream has one (an ``always_ready`` stream has no port).
    """

    def __init__(self, dut, prefix, payloads, *, valid_rate=1.0, rng=None, always_ready=False):
        self.name = prefix
        self._payload = getattr(dut, f"{prefix}__payload")
        self._valid = getattr(dut, f"{prefix}__valid")
        self._ready = None if always_ready else getattr(dut, f"{prefix}__ready")
        self._items = [_mask(self._payload, value) for value in payloads]
        self._rate = valid_rate
        self._rng = rng or random.Random(0)
        self.sent = 0
        self._offering = False

    @property
    def done(self):
        return self.sent == len(self._items)

    def idle(self):
        self._valid.value = 0
        self._payload.value = 0

    def drive(self):
        self._offering = not self.done and (self._rate >= 1 or self._rng.random() < self._rate)
        self._valid.value = int(self._offering)
        if self._offering:
            self._payload.value = self._items[self.sent]

    @property
    def moved(self):
        return self.sent

    def sample(self):
        if self._offering and (self._ready is None or int(self._ready.value)):
            self.sent += 1


class StreamSink:
    """Collects the payloads of an Amaranth stream output (``PREFIX__payload``, ``__valid``,
    ``__ready``) into ``received``, with ``ready`` high with probability ``ready_rate``."""

    def __init__(self, dut, prefix, *, signed=False, ready_rate=1.0, rng=None, expect=None,
                 strict=False):
        self.name = prefix
        self._strict = strict
        self._payload = getattr(dut, f"{prefix}__payload")
        self._valid = getattr(dut, f"{prefix}__valid")
        self._ready = getattr(dut, f"{prefix}__ready")
        self._signed = signed
        self._rate = ready_rate
        self._rng = rng or random.Random(1)
        self.expect = expect
        self.received = []
        self._accepting = False

    @property
    def done(self):
        return self.expect is not None and len(self.received) >= self.expect

    @property
    def moved(self):
        return len(self.received)

    def idle(self):
        self._ready.value = 0

    def drive(self):
        self._accepting = self._rate >= 1 or self._rng.random() < self._rate
        self._ready.value = int(self._accepting)

    def sample(self):
        if self._accepting and int(self._valid.value):
            if self._strict and self.done:
                raise HandshakeError(f"{self.name}: a surplus word after the {self.expect} "
                                     "expected")
            value = self._payload.value
            if not value.is_resolvable:
                raise AssertionError(f"{self.name}__payload is {value} (X/Z) on transfer "
                                     f"{len(self.received)}")
            self.received.append(value.to_signed() if self._signed else value.to_unsigned())


class StreamBench:
    """Runs sources and sinks together, one loop iteration per clock cycle, until every source
    has sent everything and every sink with an ``expect`` count has received it.

    With ``tail``, the streams keep running that many cycles after they finished (a strict
    sink, still ready, then sees any surplus word). ``monitors`` (objects with ``sample()``)
    are sampled in every cycle, after the streams.

    Returns the number of cycles from :meth:`run` (without the tail); raises ``TimeoutError``
    after ``max_cycles`` with the progress of every stream.
    """

    def __init__(self, clk, sources=(), sinks=(), *, tail=0, monitors=()):
        self._clk = clk
        self.sources = list(sources)
        self.sinks = list(sinks)
        self.tail = tail
        self.monitors = list(monitors)

    async def run(self, max_cycles):
        falling, read_only = FallingEdge(self._clk), ReadOnly()
        streams = self.sources + self.sinks
        finished = None
        for cycle in range(max_cycles + self.tail):
            if finished is None and all(source.done for source in self.sources) and all(
                    sink.done or sink.expect is None for sink in self.sinks):
                finished = cycle
            if finished is not None and cycle >= finished + self.tail:
                await falling
                for stream in streams:
                    stream.idle()
                return finished
            if finished is None and cycle >= max_cycles:
                break
            await falling
            for stream in streams:
                stream.drive()
            await read_only
            for stream in streams:
                stream.sample()
            for monitor in self.monitors:
                monitor.sample()
        progress = ", ".join(
            [f"{s.name}: sent {s.sent}/{len(s._items)}" for s in self.sources]
            + [f"{s.name}: received {len(s.received)}/{s.expect}" for s in self.sinks])
        raise TimeoutError(f"streams not finished after {max_cycles} cycles ({progress})")


def check_equal(name, got, expected, *, context=None):
    """Compare two sequences of outputs; on a difference raise ``AssertionError`` naming the
    first differing output (``name[index]``, with ``context(index)`` if given), both values,
    and how many differ."""
    if len(got) != len(expected):
        raise AssertionError(f"{name}: got {len(got)} outputs, expected {len(expected)}")
    differing = [index for index, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b]
    if differing:
        first = differing[0]
        where = f" ({context(first)})" if context is not None else ""
        raise AssertionError(
            f"first mismatch at {name}[{first}]{where}: got {got[first]}, expected "
            f"{expected[first]}; {len(differing)} of {len(expected)} outputs differ")


# The limit of an operation without one of its own (a plan gives each operation its limit
# from the documented latency bound, xbarode.sim.latency).
TIMEOUT_CYCLES = int(os.environ.get("XB_TIMEOUT_CYCLES", 1 << 20))

#: Cycles after a load's or read's last word in which ``done`` may still come and in which a
#: read must offer no further word (as :data:`xbarode.sim.streams.TAIL`).
TAIL = 4


class HandshakeError(AssertionError):
    """A unit broke the operation handshake: a surplus word, ``done`` early or missing."""


def _op_name(op):
    return getattr(op, "name", str(op))


class OpDriver:
    """Drives a unit with the ``op``/``start``/``done`` strobes and ``i``/``o`` word streams
    (the tile, the Fourier blocks, the core): starts operations and moves words through the
    streams, checking the handshake (as :mod:`xbarode.sim.streams` does in Amaranth's
    simulator): ``done`` with the last word of a load or read (or within :data:`TAIL`
    cycles), never before it, and no word offered after a read's last. Every operation has
    a cycle limit; exceeding it raises ``TimeoutError`` naming the operation."""

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

    async def run(self, op, *, limit=None, sample=(), feed=None):
        """Start a compute operation and wait for ``done``; return its latency in cycles
        (start to done inclusive), or with ``sample`` (output names) ``(latency, values)``,
        the outputs read in the cycle ``done`` pulses. ``feed``: ``(stream, words)``, words
        offered on the input stream ``stream`` from the cycle after the start cycle on, while
        the operation runs and after ``done`` until all are taken."""
        self.dut.op.value = op.value
        await FallingEdge(self.clk)
        self.dut.start.value = 1
        began = get_sim_time("ns")
        cycles = limit or TIMEOUT_CYCLES
        fed = None
        if feed is not None:
            bench = StreamBench(self.clk, sources=[StreamSource(self.dut, *feed)])
            fed = cocotb.start_soon(bench.run(cycles + 4 * len(feed[1]) + 16))
        await FallingEdge(self.clk)
        self.dut.start.value = 0
        try:
            await wait_for(self.dut.done, clk=self.clk, timeout_cycles=cycles)
        except TimeoutError as error:
            raise TimeoutError(f"{_op_name(op)} did not finish within {cycles} cycles") \
                from error
        # wait_for returns on the falling edge after done rose, in the cycle done is high:
        # count start..done inclusive and read the outputs a host latches on done.
        latency = round((get_sim_time("ns") - began) / CLOCK_PERIOD_NS) + 1
        if fed is not None:
            await fed
        if not sample:
            return latency
        return latency, [int(getattr(self.dut, name).value) for name in sample]

    async def send(self, op, words, *, limit=None):
        """Start ``op`` and stream ``words`` into ``i``; ``done`` must come with the last
        word (or within :data:`TAIL` cycles), never before it."""
        await self.start(op)
        source = StreamSource(self.dut, "i", words)
        done = _DoneMonitor(self.dut.done, source)
        await self._bench(op, StreamBench(self.clk, sources=[source], tail=TAIL), done,
                          limit or len(words) + 16)
        done.check(op, len(words))

    async def receive(self, op, count, *, limit=None):
        """Start ``op`` and collect ``count`` words from ``o``; ``done`` must come with the
        last word (or within :data:`TAIL` cycles), never before it, and no word may be offered
        in the :data:`TAIL` cycles after the last."""
        await self.start(op)
        sink = StreamSink(self.dut, "o", signed=True, expect=count, strict=True)
        done = _DoneMonitor(self.dut.done, sink)
        await self._bench(op, StreamBench(self.clk, sinks=[sink], tail=TAIL), done,
                          limit or 4 * count + 16)
        done.check(op, count)
        return sink.received

    async def _bench(self, op, bench, monitor, limit):
        bench.monitors.append(monitor)
        try:
            await bench.run(limit)
        except TimeoutError as error:
            raise TimeoutError(f"{_op_name(op)}: {error}") from error
        except HandshakeError as error:
            raise HandshakeError(f"{_op_name(op)}: {error}") from error


class _DoneMonitor:
    """Watches ``done`` while a stream moves words: when it came, counted in words."""

    def __init__(self, done, stream):
        self._done = done
        self._stream = stream
        self.at = None        # words moved when done was seen (counting that cycle's word)

    def sample(self):
        if self.at is None and int(self._done.value):
            self.at = self._stream.moved

    def check(self, op, count):
        name = _op_name(op)
        if self.at is None:
            raise HandshakeError(f"{name}: done did not come within {TAIL} cycles of the "
                                 f"last of {count} words")
        if self.at < count:
            raise HandshakeError(f"{name}: done came after {self.at} of {count} words")


class CocotbDriver:
    """The co-simulation engine's driver (:class:`xbarode.sim.engine.Driver`) on a cocotb
    DUT: an :class:`OpDriver` whose compute operations have the plan's cycle ``limits`` (by
    operation name, from the documented latency bounds)."""

    def __init__(self, driver: OpDriver, limits=None):
        self._drv = driver
        self._dut = driver.dut
        self._limits = dict(limits or {})

    async def strobe(self, name):
        await self._drv.strobe(name)

    async def send(self, op, words):
        await self._drv.send(op, words)

    async def run(self, op, sample=(), feed=None):
        result = await self._drv.run(op, limit=self._limits.get(_op_name(op)),
                                     sample=tuple(sample), feed=feed)
        return result if sample else (result, [])

    async def receive(self, op, count):
        return await self._drv.receive(op, count)

    def get(self, name):
        return int(getattr(self._dut, name).value)

    async def set(self, name, value):
        await FallingEdge(self._drv.clk)
        getattr(self._dut, name).value = value

    async def put(self, stream, words):
        await StreamBench(self._drv.clk, sources=[StreamSource(self._dut, stream, words)]).run(
            len(words) + 16)

    async def exchange(self, source, words, sink, count, bound=None):
        # A strict sink, still ready for TAIL cycles after the last word: a surplus one fails.
        out = StreamSink(self._dut, sink, expect=count, strict=True)
        cycles = await StreamBench(self._drv.clk, sources=[StreamSource(self._dut, source, words)],
                                   sinks=[out], tail=TAIL).run(
            count + 64 if bound is None else limit(bound))
        return out.received, cycles


#: Inputs of a unit driven by an :class:`OpDriver`.
OP_INPUTS = ("start", "clear", "i__valid", "o__ready")


async def start_unit(dut, inputs=OP_INPUTS) -> OpDriver:
    """Start the clock, hold ``inputs`` low, reset; an :class:`OpDriver` for the unit."""
    start_clock(dut)
    for name in inputs:
        getattr(dut, name).value = 0
    await reset(dut)
    return OpDriver(dut)


def assert_no_mismatch(compare, expected, results):
    """Fail the cocotb test (so that the runner writes a waveform) when ``compare(expected,
    results)`` — a plan module's comparison — reports a mismatch; nothing when ``expected``
    is None."""
    if expected is None:
        return
    report = compare(expected, results)
    assert report["mismatches"] == 0, (
        f"{report['mismatches']} of {report['compared']} words and flags differ; first: "
        f"{report['first']}")
