"""The crossbar tile's operation codes (:class:`~xbarode.hdl.tile.CrossbarTile`'s ``op``), in a
module of their own: the tile and its sequencer (:mod:`xbarode.hdl.tile_sequencer`) both use
them."""

from __future__ import annotations

from amaranth.lib import enum

__all__ = ["TileOp"]


class TileOp(enum.Enum, shape=4):
    """Operations of the tile, selected on ``op`` when ``start`` is pulsed.

    ========== ====================================================================
    LOAD_W     stream in ``rows·cols`` weights, row-major
    READ_W     stream out ``rows·cols`` weights, row-major, then the ``rows`` bias words
               (tiles with ``bias``)
    LOAD_X     stream in the ``cols`` entries of ``x`` (forward input, update's ``v``)
    LOAD_S     stream in the ``rows`` entries of ``s`` (transposed input, update's ``u``)
    FORWARD    ``y <- narrow(W x)`` (``rows`` words)
    TRANSPOSED ``y <- narrow(Wᵀ s)`` (``cols`` words)
    UPDATE     ``W <- sat(W + narrow(s xᵀ · 2^-eta_shift))``
    READ_Y     stream out the result of the last FORWARD or TRANSPOSED
    LOAD_BIAS  stream in the ``rows`` entries of the bias (tiles built with ``bias``)
    TRANSPOSED_STREAM
               ``TRANSPOSED`` whose ``s`` arrives on ``s_in`` during the operation: row ``i``
               enters the multipliers once ``s_i`` has arrived (tiles with ``side_ports``)
    FORWARD_G, TRANSPOSED_G, TRANSPOSED_STREAM_G
               the same products on gradient words: input and output in ``grad_format``,
               the extra shift ``grad_shift`` (tiles built with ``grad_format``)
    ACCUMULATE ``G <- G + s xᵀ`` exactly in the gradient accumulators (``acc_width`` bits);
               with ``bias``, also ``g_d <- g_d + s``
    APPLY      ``W <- sat(W + narrow(-G · 2^-sgd_shift))``, ``G <- 0``; with ``bias``, then
               ``d <- sat(d + narrow(-g_d · 2^-sgd_shift))``, ``g_d <- 0`` (one SGD step);
               tiles with ``taps`` take one step per kernel tap (weights tied)
    READ_G     stream out ``G`` (``rows·cols`` words, row-major), then ``g_d`` (``rows``
               words, tiles with ``bias``)
    ========== ====================================================================

    A read-only tile (``writable=False``) has neither LOAD_W nor UPDATE: like every
    operation a tile does not have, they end at once (``done`` the cycle after ``start``).
    """

    LOAD_W = 0
    READ_W = 1
    LOAD_X = 2
    LOAD_S = 3
    FORWARD = 4
    TRANSPOSED = 5
    UPDATE = 6
    READ_Y = 7
    LOAD_BIAS = 8
    TRANSPOSED_STREAM = 9
    FORWARD_G = 10
    TRANSPOSED_G = 11
    TRANSPOSED_STREAM_G = 12
    ACCUMULATE = 13
    APPLY = 14
    READ_G = 15
