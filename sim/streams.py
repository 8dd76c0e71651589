"""Shared helpers for Amaranth-simulator testbenches: stream put/get and operation strobes."""

from __future__ import annotations

__all__ = ["pulse", "stream_get", "stream_put", "wait_for"]


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


async def wait_for(ctx, signal) -> int:
    """Tick until ``signal`` is high at a clock edge; return the number of ticks."""
    ticks = 0
    while True:
        # Without .until(), the awaited tick yields (clock, reset, *samples).
        *_, value = await ctx.tick().sample(signal)
        ticks += 1
        if value:
            return ticks
