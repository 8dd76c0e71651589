"""Cycle limits of simulated operations, from the units' documented latency bounds.

Every simulated operation (a compute operation waiting for ``done``, a load or read streaming
its words) gets a cycle limit; a design that exceeds it fails with :class:`OperationTimeout`
naming the operation, instead of hanging the simulation. The limit is generous —
``4 × bound + 64`` — because it catches hangs, not slow designs (the tests that check
latencies compare exact figures).

The bounds, start to ``done`` inclusive, with ``C = ceil(cols / lanes)`` and ``T`` the adder
tree's register stages (:class:`~xbarode.hdl.tile.CrossbarTile`'s docstring):

- tile: FORWARD ``rows·C + T + 7``; TRANSPOSED, UPDATE, ACCUMULATE, APPLY ``rows·C + 7``
  (a pulsed UPDATE, with a device's ``pulses``: ``max(rows, cols) + 2`` more, its pulse
  trains)
  (APPLY with ``bias``: ``rows`` more; with ``taps``:
  ``K·rows + max(K·(rows + 1), rows·C − 1) + 6``); a streamed product as its two products
  one after the other;
- :class:`~xbarode.hdl.fourier.Dft2d`: DFT ``4 + Σ (E + L + (V − 1)·max(L, I + E))`` and
  IDFT ``4 + Σ V·(E + L + 2)`` over their two passes (``E``: ``n``, or ``2n`` for an array
  with an odd number of lanes; ``I = 2n·C``); HADAMARD ``H·W + 4``; CONV the sum of the three;
- :class:`~xbarode.hdl.core.Core`: RUN, per chain the two products one after the other (the
  overlap only shortens it; on the Fourier path ``2·CONV + 3·m``), one combine (``C + 1``)
  per chain and per Newton update, per step at most ``1 + (max_iter + 1) +
  max_iter·neumann_terms`` chains, then the copy of ``z_N`` into C (a pool: ``m + 4``) and
  C's forward product; BACKWARD C's transposed product
  and, per step, ``5 + 2·neumann_terms`` products (implicit Euler; 5 for explicit) with a
  combine each; APPLY the slowest tile's APPLY (with ``pulses`` and ``training``, first the
  slowest tile's walk over its pairs, :func:`pulse_walk_bound`);
- loads and reads move one word per cycle (a tile's read chain: one per two cycles): a
  limit of ``4·words + 64`` cycles.
"""

from __future__ import annotations

__all__ = ["OperationTimeout", "bank_bound", "core_bound", "dft_bound", "latency_bound", "limit",
           "pulse_walk_bound", "stream_limit", "tile_bound"]

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


def _name(op) -> str:
    return getattr(op, "name", str(op))


def tile_bound(rows: int, cols: int, lanes: int, op, *, taps: int = 0,
               bias: bool = False, pulses: bool = False) -> int:
    """The documented latency bound of operation ``op`` (a
    :class:`~xbarode.hdl.tile.TileOp` or its name) on a tile of ``rows × cols`` weights with
    ``lanes`` multipliers, ``taps`` kernel taps (0: a dense tile), a ``bias`` or not, and
    pulsed updates (``pulses``) or not."""
    from xbarode.hdl.tile import CrossbarTile

    name = _name(op)
    chunks = -(-cols // lanes)
    work = rows * chunks
    forward = CrossbarTile.product_latency(rows, cols, lanes)
    if name in ("FORWARD", "FORWARD_G"):
        return forward
    if name == "APPLY" and taps:
        bound = taps * rows + max(taps * (rows + 1), work - 1) + 6
        return bound + (rows if bias else 0)
    if name == "APPLY":
        return work + 7 + (rows if bias else 0)
    if name in ("TRANSPOSED_STREAM", "TRANSPOSED_STREAM_G"):
        # Fed by another product: both, one after the other.
        return 2 * forward
    extra = CrossbarTile.pulse_cycles(rows, cols) if pulses and name == "UPDATE" else 0
    return CrossbarTile.product_latency(rows, cols, lanes, transposed=True) + extra


def _dft_pass(height: int, width: int, lanes: tuple[int, int], forward: bool,
              columns: bool) -> int:
    n = height if columns else width
    vectors = width if columns else height
    product = tile_bound(2 * n, 2 * n, lanes[1 if columns else 0],
                         "FORWARD" if forward else "TRANSPOSED")
    array_lanes = lanes[1 if columns else 0]
    words = n if array_lanes % 2 == 0 else 2 * n
    if not forward:
        return vectors * (words + product + 2)
    issue = 2 * n * -(-2 * n // array_lanes)
    return words + product + (vectors - 1) * max(product, issue + words)


def dft_bound(height: int, width: int, lanes: tuple[int, int], op) -> int:
    """The documented latency bound of operation ``op`` (a
    :class:`~xbarode.hdl.fourier.FourierOp` or its name) on an H×W
    :class:`~xbarode.hdl.fourier.Dft2d` or :class:`~xbarode.hdl.fourier.FourierConv` whose
    rows and columns arrays have ``lanes`` multipliers
    (:meth:`Dft2d.array_lanes <xbarode.hdl.fourier.Dft2d.array_lanes>`)."""
    name = _name(op)
    dft = 4 + _dft_pass(height, width, lanes, True, False) \
        + _dft_pass(height, width, lanes, True, True)
    idft = 4 + _dft_pass(height, width, lanes, False, True) \
        + _dft_pass(height, width, lanes, False, False)
    hadamard = height * width + 4
    return {"DFT": dft, "IDFT": idft, "HADAMARD": hadamard,
            "CONV": dft + idft + hadamard}.get(name, 2)


def bank_bound(height: int, width: int, lanes: tuple[int, int], channels_in: int,
               channels_out: int, op) -> int:
    """The documented latency bound of operation ``op`` (a
    :class:`~xbarode.hdl.fourier_bank.BankOp` or its name) on an H×W
    :class:`~xbarode.hdl.fourier_bank.FourierBank` of c_out×c_in kernels whose DFT arrays have
    ``lanes`` multipliers: CONV's, in the slower of its two directions."""
    if _name(op) != "CONV":
        return 2
    size = height * width
    dft, idft = (dft_bound(height, width, lanes, name) for name in ("DFT", "IDFT"))
    return max(n_in * (3 * size + dft + 7) + size * channels_in * channels_out
               + n_out * (3 * size + idft + 7) + 10
               for n_in, n_out in ((channels_in, channels_out), (channels_out, channels_in)))


def core_bound(config, op) -> int:
    """The documented latency bound of operation ``op`` (a
    :class:`~xbarode.hdl.core.CoreOp` or its name) on the core of ``config`` (a
    :class:`~xbarode.model.core_config.CoreConfig`)."""
    from xbarode.hdl.fourier import Dft2d

    name = _name(op)
    m, chunks, lanes = config.m, -(-config.m // config.lanes), config.lanes
    chunks_c = -(-m // config.lanes_c)
    taps = config.conv_taps() if config.training else None
    a = {"rows": m, "cols": m, "lanes": lanes, "taps": 0 if taps is None else len(taps)}
    c = {"rows": config.classes, "cols": config.features, "lanes": config.lanes_c,
         "bias": True}
    combine = chunks + 4
    copy_c = chunks_c + 4      # z_N into C's inputs; C's λ into the λ banks
    if config.pool > 1:
        copy_c = m + 4         # the pool's walk, a word per cycle (inference only)
    fourier = config.conv_path == "fourier"
    if fourier:
        height, width = config.image
        array_lanes = Dft2d.array_lanes(height, width, lanes)
        ch = config.channels
        conv = (bank_bound(height, width, array_lanes, ch, ch, "CONV") if ch > 1
                else dft_bound(height, width, array_lanes, "CONV"))
        chain = 2 * conv + 4 * m + 16
    else:
        chain = tile_bound(op="FORWARD", **a) + tile_bound(op="TRANSPOSED", **a) + 8
    classify = tile_bound(op="FORWARD", **c) + 4
    if name == "RUN":
        if config.method == "euler":
            per_step = chain + combine + 2
        else:
            chains = 1 + (config.max_iter + 1) + config.max_iter * config.neumann_terms
            per_step = chains * (chain + combine + 2) + (config.max_iter + 1) * (combine + 2)
        # The copy of z_0 from the image buffer (a combine), after any image still arriving
        # (not bounded: the host's).
        return combine + config.steps * per_step + copy_c + classify + 2
    if name == "BACKWARD":
        products = 5 + (2 * config.neumann_terms if config.method == "implicit_euler" else 0)
        product = tile_bound(op="FORWARD", **a)
        per_step = products * (product + combine) + 2 * combine
        return tile_bound(op="TRANSPOSED", **c) + copy_c + config.steps * per_step + 8
    if name == "APPLY":
        tiles = [c] if fourier else [a, a, c]
        walk = pulse_walk_bound(config) if config.training and not fourier else 0
        return walk + max(tile_bound(op="APPLY", **t) for t in tiles) + 4
    return 2


def pulse_walk_bound(config) -> int:
    """The cycles of APPLY's walk over the pairs of a full mini-batch with pulsed updates
    (:class:`~xbarode.hdl.core_pulses.PairStore`; 0 without ``pulses``): the slowest of the
    three tiles' walks (A and B ``batch·steps`` pairs, C ``batch``), per pair
    ``max(rows, C) + 2`` cycles and a pulsed UPDATE, plus ``steps + 1``."""
    if config.pulses is None or config.pulses == 0:
        return 0
    m, batch, steps = config.m, config.batch, config.steps
    walks = []
    for rows, lanes, pairs, stride in ((m, config.lanes, batch * steps, steps),
                                       (config.classes, config.lanes_c, batch, 1)):
        chunks = -(-m // lanes)
        update = tile_bound(rows, m, lanes, "UPDATE", pulses=True)
        walks.append(pairs * (max(rows, chunks) + 2 + update) + stride)
    return max(walks) + 1


def latency_bound(dut, op) -> int:
    """The documented latency bound (cycles, start to ``done`` inclusive) of compute
    operation ``op`` on ``dut`` (a tile, a DFT array, ``Dft2d``/``FourierConv``, a
    ``FourierBank`` or the core); 2 for an operation that ends at once. :func:`tile_bound`,
    :func:`dft_bound`, :func:`bank_bound` and :func:`core_bound` give it from the parameters,
    without a unit."""
    from xbarode.hdl.core import Core
    from xbarode.hdl.fourier import Dft2d
    from xbarode.hdl.fourier_bank import FourierBank
    from xbarode.hdl.tile import CrossbarTile

    if isinstance(dut, Core):
        return core_bound(dut.config, op)
    if isinstance(dut, FourierBank):
        return bank_bound(dut.height, dut.width, dut.lanes, dut.channels_in,
                          dut.channels_out, op)
    if isinstance(dut, Dft2d):
        return dft_bound(dut.height, dut.width, dut.lanes, op)
    if isinstance(dut, CrossbarTile):
        taps = dut.taps
        return tile_bound(dut.rows, dut.cols, dut.lanes, op,
                          taps=0 if taps is None else len(taps), bias=dut.bias,
                          pulses=dut.pulse_geometry is not None)
    raise TypeError(f"no documented latency for {type(dut).__name__}")
