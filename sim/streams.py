"""Shared helpers for Amaranth-simulator testbenches: stream put/get, operation strobes, and
operations of a unit with the ``op``/``start``/``done`` strobes and ``i``/``o`` word streams
(the tile, the Fourier blocks, the core; the cocotb twin is ``cocotb_support.OpDriver``).

The operation helpers check the handshake as well as the words: a load or read must end with
``done`` (in the cycle of its last word, or within :data:`TAIL` cycles after it), ``done``
must not come before the last word, and after a read the unit must offer no further word for
:data:`TAIL` cycles. Every operation has a cycle limit (:mod:`xbarode.sim.latency`); a unit
that exceeds it raises :class:`~xbarode.sim.latency.OperationTimeout` naming the operation.
A broken handshake raises :class:`HandshakeError`."""

from __future__ import annotations

import contextlib

from .latency import OperationTimeout, latency_bound, limit, stream_limit

__all__ = ["CLOCK_PERIOD", "TAIL", "HandshakeError", "OperationTimeout", "op_receive",
           "op_run", "op_sample", "op_send", "pulse", "run_simulation", "stream_get",
           "stream_put", "wait_for"]

#: Simulated clock period (s); only the waveform's time axis depends on it.
CLOCK_PERIOD = 1e-8

#: Cycles after a load's or read's last word in which ``done`` may still come and in which a
#: read must offer no further word.
TAIL = 4


class HandshakeError(AssertionError):
    """A unit broke the operation handshake: a surplus word, ``done`` early or missing."""


def run_simulation(dut, testbench, vcd_path=None) -> None:
    """Simulate ``dut`` with one clock until the async ``testbench(ctx)`` returns; a VCD
    waveform at ``vcd_path`` if given."""
    from amaranth.sim import Simulator

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(testbench)
    waves = sim.write_vcd(str(vcd_path)) if vcd_path else contextlib.nullcontext()
    with waves:
        sim.run()


async def stream_put(ctx, stream, payload) -> None:
    """Offer ``payload`` on a stream the DUT sinks; return after the transfer."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream):
    """Take one payload from a stream the DUT sources."""
    ctx.set(stream.ready, 1)
    (payload,) = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def pulse(ctx, signal) -> None:
    """Hold ``signal`` high for one clock cycle."""
    ctx.set(signal, 1)
    await ctx.tick()
    ctx.set(signal, 0)


async def wait_for(ctx, signal, max_ticks=None, what=None) -> int:
    """Tick until ``signal`` is high at a clock edge; return the number of ticks. With
    ``max_ticks``, raise :class:`OperationTimeout` (naming ``what``) after that many."""
    ticks = 0
    while max_ticks is None or ticks < max_ticks:
        # Without .until(), the awaited tick yields (clock, reset, *samples).
        *_, value = await ctx.tick().sample(signal)
        ticks += 1
        if value:
            return ticks
    raise OperationTimeout(f"{what or signal.name} did not finish within {max_ticks} cycles")


def _name(op) -> str:
    return getattr(op, "name", str(op))


def _limit(dut, op, cycles):
    return cycles if cycles is not None else limit(latency_bound(dut, op))


async def op_send(ctx, dut, op, words, *, max_cycles=None, sample=()):
    """Start ``op`` and stream ``words`` into ``dut.i``; ``done`` must come with the last
    word (or within :data:`TAIL` cycles), not before it. With ``sample`` (signals), return
    their values in the cycle ``done`` pulses.

    Raises
    ------
    OperationTimeout
        The words were not taken within ``max_cycles`` (default
        :func:`~xbarode.sim.latency.stream_limit`).
    HandshakeError
        ``done`` came before the last word, or not at all.
    """
    name = _name(op)
    words = list(words)
    budget = max_cycles if max_cycles is not None else stream_limit(len(words))
    ctx.set(dut.op, op)
    await pulse(ctx, dut.start)
    signals = list(sample)
    sent = cycles = 0
    at_done = None
    while sent < len(words):
        if cycles >= budget:
            ctx.set(dut.i.valid, 0)
            raise OperationTimeout(f"{name}: {sent} of {len(words)} words taken within "
                                   f"{budget} cycles")
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, words[sent])
        _, _, ready, done, *values = await ctx.tick().sample(dut.i.ready, dut.done, *signals)
        cycles += 1
        if done and not (ready and sent == len(words) - 1):
            ctx.set(dut.i.valid, 0)
            raise HandshakeError(f"{name}: done came after {sent + bool(ready)} of "
                                 f"{len(words)} words")
        if ready:
            sent += 1
        if done:
            at_done = values
    ctx.set(dut.i.valid, 0)
    for _ in range(TAIL):
        if at_done is not None:
            break
        _, _, done, *values = await ctx.tick().sample(dut.done, *signals)
        if done:
            at_done = values
    if at_done is None:
        raise HandshakeError(f"{name}: done did not come within {TAIL} cycles of the last "
                             f"of {len(words)} words")
    return at_done if signals else None


async def op_receive(ctx, dut, op, count, *, max_cycles=None, sample=()):
    """Start ``op`` and collect ``count`` words from ``dut.o``; ``done`` must come with the
    last word (or within :data:`TAIL` cycles), not before it, and no further word may be
    offered in the :data:`TAIL` cycles after the last (``ready`` held high). Returns the
    words; with ``sample`` (signals), ``(words, values)``: their values in the cycle ``done``
    pulses.

    Raises
    ------
    OperationTimeout
        Fewer than ``count`` words within ``max_cycles`` (default
        :func:`~xbarode.sim.latency.stream_limit`).
    HandshakeError
        A surplus word; ``done`` before the last word, or not at all.
    """
    name = _name(op)
    budget = max_cycles if max_cycles is not None else stream_limit(count)
    ctx.set(dut.op, op)
    await pulse(ctx, dut.start)
    ctx.set(dut.o.ready, 1)
    signals = list(sample)
    words, cycles, at_done = [], 0, None
    try:
        while len(words) < count:
            if cycles >= budget:
                raise OperationTimeout(f"{name}: {len(words)} of {count} words within "
                                       f"{budget} cycles")
            _, _, valid, payload, done, *values = await ctx.tick().sample(
                dut.o.valid, dut.o.payload, dut.done, *signals)
            cycles += 1
            if valid:
                words.append(payload)
            if done and len(words) < count:
                raise HandshakeError(f"{name}: done came after {len(words)} of {count} "
                                     "words")
            if done:
                at_done = values
        for extra in range(TAIL):
            _, _, valid, done, *values = await ctx.tick().sample(dut.o.valid, dut.done,
                                                                 *signals)
            if valid:
                raise HandshakeError(f"{name}: a surplus word after the {count} expected "
                                     f"(offered {extra + 1} cycles after the last)")
            if done and at_done is None:
                at_done = values
        if at_done is None:
            raise HandshakeError(f"{name}: done did not come within {TAIL} cycles of the "
                                 f"last of {count} words")
    finally:
        ctx.set(dut.o.ready, 0)
    return (words, at_done) if signals else words


async def op_sample(ctx, dut, op, signals=(), *, max_cycles=None, feed=None):
    """Start ``op`` and wait for ``dut.done``; return its latency (start to done,
    inclusive) and the values of ``signals`` in the cycle ``done`` pulses.

    ``feed``: ``(stream, words)``, words offered on the input stream ``stream`` from the
    cycle after the start cycle on, one per cycle its ``ready`` allows, while the operation
    runs and after ``done`` until the last is taken (the core's ``image`` stream during RUN).

    Raises
    ------
    OperationTimeout
        ``done`` did not come within ``max_cycles`` (default: the operation's limit from its
        documented latency bound, :mod:`xbarode.sim.latency`).
    """
    budget = _limit(dut, op, max_cycles)
    port, words = feed if feed is not None else (None, [])
    words = list(words)

    def offer():
        if port is not None:
            ctx.set(port.valid, int(bool(words)))
            ctx.set(port.payload, words[0] if words else 0)

    async def tick(*signals):
        offer()
        _, _, *values = await ctx.tick().sample(*signals,
                                               *(() if port is None else (port.ready,)))
        if port is not None and values.pop() and words:
            words.pop(0)
        return values

    ctx.set(dut.op, op)
    ctx.set(dut.start, 1)
    await ctx.tick()
    ctx.set(dut.start, 0)
    ticks = 1
    while ticks < budget:
        # Sampled at the edge that ends the cycle: the values in the cycle done is high.
        done, *values = await tick(dut.done, *signals)
        ticks += 1
        if done:
            for _ in range(stream_limit(len(words))):
                if not words:
                    break
                await tick()
            if port is not None:
                ctx.set(port.valid, 0)
                if words:
                    raise OperationTimeout(f"{len(words)} words not taken on the fed stream")
            return ticks, values
    why = "" if max_cycles is not None else " (the limit from its documented latency bound)"
    raise OperationTimeout(f"{_name(op)} did not finish within {budget} cycles{why}")


async def op_run(ctx, dut, op, *, max_cycles=None) -> int:
    """Start ``op`` and wait for ``dut.done``; its latency, start to done inclusive
    (:func:`op_sample` without samples)."""
    ticks, _ = await op_sample(ctx, dut, op, max_cycles=max_cycles)
    return ticks
