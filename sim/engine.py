"""One co-simulation engine: every unit's plan runs through one executor on either simulator.

A *plan module* (:mod:`~xbarode.sim.tile_plan`, :mod:`~xbarode.sim.fourier_plan`,
:mod:`~xbarode.sim.core_plan`, :mod:`~xbarode.sim.adjoint_plan`) makes a plan (data: the
words a host sends, in order), the model's answers to it, and has one async ``execute(plan,
driver, progress)`` that runs the plan's operations through a *driver* and returns
``(results, cycles)`` in the layout of the model's answers, and one ``compare(expected,
results)``. The executor is written once; the two drivers behind the same protocol
(:class:`Driver`) move the words:

- :class:`AmaranthDriver` in Amaranth's simulator (:func:`run_amaranth`), with the handshake
  checks and cycle limits of :mod:`xbarode.sim.streams`;
- ``CocotbDriver`` (:mod:`xbarode.sim.cocotb_support`) on the generated Verilog under
  Verilator or Icarus, started by the one cocotb test module :mod:`xbarode.sim.cocotb_plan`
  (:func:`cocotb_data` is the data it expects).

Words on struct-shaped streams (the Hadamard unit's complex pairs) travel as their raw bits
on both drivers; the executor packs and unpacks them.
"""

from __future__ import annotations

from typing import Protocol

from .latency import OperationTimeout, limit, stream_limit
from .streams import (
    TAIL,
    HandshakeError,
    op_receive,
    op_sample,
    op_send,
    pulse,
    run_simulation,
)

__all__ = ["AmaranthDriver", "Driver", "cocotb_data", "run_amaranth"]


class Driver(Protocol):
    """What an executor asks of a simulator: operations with the ``op``/``start``/``done``
    strobes and ``i``/``o`` word streams, strobes and outputs by name, and free-running
    streams. Every call checks the handshake (a surplus word, ``done`` early or missing is a
    ``HandshakeError``) and has a cycle limit (``OperationTimeout`` or ``TimeoutError``
    naming the operation)."""

    async def strobe(self, name: str) -> None:
        """Hold the input ``name`` (e.g. ``clear``) high for one cycle."""

    async def send(self, op, words) -> None:
        """Start ``op`` and stream ``words`` into ``i``; return after ``done``."""

    async def run(self, op, sample=(), feed=None) -> tuple[int, list[int]]:
        """Start ``op`` and wait for ``done``: its latency (start to done inclusive) and the
        outputs named in ``sample`` read in the cycle ``done`` pulses. ``feed``:
        ``(stream, words)``, signed words offered on the input stream named ``stream`` from
        the cycle after the start cycle on while the operation runs (and after it, until all
        are taken)."""

    async def receive(self, op, count: int) -> list[int]:
        """Start ``op`` and collect ``count`` signed words from ``o``."""

    def get(self, name: str) -> int:
        """The current value of output ``name`` (e.g. the sticky ``overflow``)."""

    async def set(self, name: str, value: int) -> None:
        """Hold the input ``name`` at ``value`` until it is set again (a level, e.g. a mode
        that a later strobe samples)."""

    async def put(self, stream: str, words) -> None:
        """Move ``words`` (raw bits) into the input stream ``stream`` (no operation)."""

    async def exchange(self, source: str, words, sink: str, count: int,
                       bound: int | None = None) -> tuple[list, int]:
        """Offer ``words`` (raw bits) on ``source`` every cycle while taking ``count`` words
        (raw bits) from ``sink``, ready every cycle; then ready for :data:`TAIL` more cycles,
        in which a further word is a ``HandshakeError``. Returns the words and the cycles from
        the first word taken to the last word out, inclusive. ``bound``: the exchange's
        documented cycles, when a word out takes more than a cycle (the limit is
        :func:`~xbarode.sim.latency.limit` of it; default: that of ``count`` words)."""


def cocotb_data(plan_module: str, plan, expected) -> dict:
    """The data :mod:`xbarode.sim.cocotb_plan` expects: the plan module's name (its
    ``execute`` and ``compare`` run inside the simulator), the plan and the model's answers."""
    return {"engine": plan_module, "plan": plan, "expected": expected}


class AmaranthDriver:
    """:class:`Driver` in Amaranth's simulator: ``ctx`` a testbench context, ``dut`` the
    component (its ports by their Amaranth names)."""

    def __init__(self, ctx, dut):
        self._ctx = ctx
        self._dut = dut

    async def strobe(self, name):
        await pulse(self._ctx, getattr(self._dut, name))

    async def send(self, op, words):
        await op_send(self._ctx, self._dut, op, words)

    async def run(self, op, sample=(), feed=None):
        if feed is not None:
            feed = (getattr(self._dut, feed[0]), feed[1])
        ticks, values = await op_sample(self._ctx, self._dut, op,
                                        [getattr(self._dut, name) for name in sample],
                                        feed=feed)
        return ticks, [int(v) for v in values]

    async def receive(self, op, count):
        return [int(w) for w in await op_receive(self._ctx, self._dut, op, count)]

    def get(self, name):
        return int(self._ctx.get(getattr(self._dut, name)))

    async def set(self, name, value):
        self._ctx.set(getattr(self._dut, name), value)

    def _bits(self, stream):
        payload = stream.payload
        return payload.as_value() if hasattr(payload, "as_value") else payload

    async def put(self, stream, words):
        port = getattr(self._dut, stream)
        ctx, bits = self._ctx, self._bits(port)
        for word in words:
            ctx.set(port.valid, 1)
            ctx.set(bits, word)
            await ctx.tick().until(port.ready) if hasattr(port, "ready") else await ctx.tick()
        ctx.set(port.valid, 0)

    async def exchange(self, source, words, sink, count, bound=None):
        ctx = self._ctx
        cycle_limit = stream_limit(count) if bound is None else limit(bound)
        src, snk = getattr(self._dut, source), getattr(self._dut, sink)
        src_bits, snk_bits = self._bits(src), self._bits(snk)
        words = list(words)
        out, sent, ticks, began = [], 0, 0, None
        ctx.set(snk.ready, 1)
        try:
            while len(out) < count:
                if ticks >= cycle_limit:
                    raise OperationTimeout(f"{sink}: {len(out)} of {count} words within "
                                           f"{ticks} cycles")
                ctx.set(src.valid, int(sent < len(words)))
                if sent < len(words):
                    ctx.set(src_bits, words[sent])
                _, _, ready, valid, payload = await ctx.tick().sample(src.ready, snk.valid,
                                                                      snk_bits)
                ticks += 1
                if sent < len(words) and ready:
                    began = ticks if began is None else began
                    sent += 1
                if valid:
                    out.append(int(payload))
            ctx.set(src.valid, 0)
            for extra in range(TAIL):
                _, _, valid = await ctx.tick().sample(snk.valid)
                if valid:
                    raise HandshakeError(f"{sink}: a surplus word after the {count} expected "
                                         f"({extra + 1} cycles after the last)")
        finally:
            ctx.set(src.valid, 0)
            ctx.set(snk.ready, 0)
        return out, ticks - (began or 1) + 1


def run_amaranth(dut, execute, plan, vcd_path=None):
    """Run ``execute(plan, driver, progress)`` (a plan module's executor) on ``dut`` in
    Amaranth's simulator; its ``(results, cycles)``. A VCD waveform at ``vcd_path`` if
    given."""
    answer = {}

    async def testbench(ctx):
        answer["value"] = await execute(plan, AmaranthDriver(ctx, dut), None)

    run_simulation(dut, testbench, vcd_path)
    return answer["value"]
