"""Cycle limits of simulated operations, from the units' documented latency bounds.

Every simulated operation (a compute operation waiting for ``done``, a load or read streaming
its words) gets a cycle limit; a design that exceeds it fails with :class:`OperationTimeout`
naming the operation, instead of hanging the simulation. The limit is generous —
``4 × bound + 64`` — because it catches hangs, not slow designs (the tests that check
latencies compare exact figures).

The bounds, start to ``done`` inclusive, with ``C = ceil(cols / lanes)`` and ``T`` the adder
tree's register stages (:class:`~xbarode.hdl.tile.CrossbarTile`'s docstring):

- tile: FORWARD ``rows·C + T + 7``; TRANSPOSED, UPDATE, ACCUMULATE, APPLY ``rows·C + 7``
  (APPLY with ``bias``: ``rows`` more; with ``taps``:
  ``K·rows + max(K·(rows + 1), rows·C − 1) + 6``); a streamed product as its two products
  one after the other;
- :class:`~xbarode.hdl.fourier.Dft2d`: DFT and IDFT ``4 + Σ V·(4n + L + 4)`` over their two
  passes; HADAMARD ``H·W + 4``; CONV the sum of the three;
- :class:`~xbarode.hdl.core.Core`: RUN, per chain the two products one after the other (the
  overlap only shortens it; on the Fourier path ``2·CONV + 3·m``), one combine (``C + 1``)
  per chain and per Newton update, per step at most ``1 + (max_iter + 1) +
  max_iter·neumann_terms`` chains, then C's forward product; BACKWARD C's transposed product
  and, per step, ``5 + 2·neumann_terms`` products (implicit Euler; 5 for explicit) with a
  combine each; APPLY the slowest tile's APPLY;
- loads and reads move one word per cycle (a tile's read chain: one per two cycles): a
  limit of ``4·words + 64`` cycles.
"""

from __future__ import annotations

__all__ = ["OperationTimeout", "latency_bound", "limit", "stream_limit"]

#: Cycles added to every limit (start-up, pipeline fill, the handshake's own cycles).
SLACK = 64
#: Factor between a documented bound and the limit.
FACTOR = 4


class OperationTimeout(RuntimeError):
    """A simulated operation did not finish within its cycle limit."""


def limit(bound: int) -> int:
    """The cycle limit of an operation whose documented latency bound is ``bound``."""
    return FACTOR * int(bound) + SLACK


def stream_limit(words: int) -> int:
    """The cycle limit of a load or read of ``words`` words."""
    return limit(words)


def _tile_bound(tile, name: str) -> int:
    rows, chunks = tile.rows, tile.chunks
    work = rows * chunks
    forward = tile.product_latency(rows, tile.cols, tile.lanes)
    if name in ("FORWARD", "FORWARD_G"):
        return forward
    if name == "APPLY" and tile.taps is not None:
        k = len(tile.taps)
        bound = k * rows + max(k * (rows + 1), work - 1) + 6
        return bound + (rows if tile.bias else 0)
    if name == "APPLY":
        return work + 7 + (rows if tile.bias else 0)
    if name in ("TRANSPOSED_STREAM", "TRANSPOSED_STREAM_G"):
        # Fed by another product: both, one after the other.
        return 2 * forward
    return tile.product_latency(rows, tile.cols, tile.lanes, transposed=True)


def _dft_pass(unit, forward: bool, columns: bool) -> int:
    array = unit._arrays[1 if columns else 0]
    n = unit.height if columns else unit.width
    vectors = unit.width if columns else unit.height
    product = _tile_bound(array, "FORWARD" if forward else "TRANSPOSED")
    return vectors * (4 * n + product + 4)


def _fourier_bound(unit, name: str) -> int:
    dft = 4 + _dft_pass(unit, True, False) + _dft_pass(unit, True, True)
    idft = 4 + _dft_pass(unit, False, True) + _dft_pass(unit, False, False)
    hadamard = unit.height * unit.width + 4
    return {"DFT": dft, "IDFT": idft, "HADAMARD": hadamard,
            "CONV": dft + idft + hadamard}.get(name, 2)


def _core_bound(core, name: str) -> int:
    cfg = core.config
    m, chunks = cfg.m, core.chunks
    a, c = core._a, core._c
    combine = chunks + 4
    if core._fourier is not None:
        chain = 2 * _fourier_bound(a, "CONV") + 4 * m + 16
    else:
        chain = _tile_bound(a, "FORWARD") + _tile_bound(core._b, "TRANSPOSED") + 8
    classify = _tile_bound(c, "FORWARD") + 4
    if name == "RUN":
        if cfg.method == "euler":
            per_step = chain + combine + 2
        else:
            chains = 1 + (cfg.max_iter + 1) + cfg.max_iter * cfg.neumann_terms
            per_step = chains * (chain + combine + 2) + (cfg.max_iter + 1) * (combine + 2)
        return cfg.steps * per_step + classify + 2
    if name == "BACKWARD":
        products = 5 + (2 * cfg.neumann_terms if cfg.method == "implicit_euler" else 0)
        product = _tile_bound(a, "FORWARD")
        per_step = products * (product + combine) + 2 * combine
        return _tile_bound(c, "TRANSPOSED") + combine + cfg.steps * per_step + 8
    if name == "APPLY":
        tiles = [c] if core._fourier is not None else [a, core._b, c]
        return max(_tile_bound(t, "APPLY") for t in tiles) + 4
    return 2


def latency_bound(dut, op) -> int:
    """The documented latency bound (cycles, start to ``done`` inclusive) of compute
    operation ``op`` on ``dut`` (a tile, a DFT array, ``Dft2d``/``FourierConv`` or the
    core); 2 for an operation that ends at once."""
    from xbarode.hdl.core import Core
    from xbarode.hdl.fourier import Dft2d
    from xbarode.hdl.tile import CrossbarTile

    name = getattr(op, "name", str(op))
    if isinstance(dut, Core):
        return _core_bound(dut, name)
    if isinstance(dut, Dft2d):
        return _fourier_bound(dut, name)
    if isinstance(dut, CrossbarTile):
        return _tile_bound(dut, name)
    raise TypeError(f"no documented latency for {type(dut).__name__}")
