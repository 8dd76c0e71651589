"""The tied-kernel SGD step of a convolution tile: APPLY on a tile built with ``taps``.

A convolution matrix holds each of the kernel's ``k²`` taps once per row, at the columns
:func:`xbarode.model.conv.tap_columns` gives; training must keep those entries equal. The
:class:`TapWalker` takes one SGD step per tap instead of one per entry: it walks the taps'
entries of ``G`` to sum each tap's gradient exactly (the pull-back onto the kernel), rounds
each sum once, adds it to the tap's value and writes the new value to every entry the tap
occupies, while it clears ``G``. The crossbar tile (:class:`~xbarode.hdl.tile.CrossbarTile`)
builds one where ``taps`` are given, beside its lane groups, whose banks it reads and writes;
its model twin is :meth:`~xbarode.model.fixed_ops.FixedTile.apply_kernel_gradient`.
"""

from __future__ import annotations

import numpy as np
from amaranth import Array, Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from xbarode.model.fixed import ROUNDINGS

from .checked import CheckedComponent
from .groups import stage
from .rounding import rounding_offset, sgd_step

__all__ = ["TapWalker", "check_taps"]


def check_taps(taps, rows: int, cols: int) -> np.ndarray:
    """``taps`` checked and as int64: integers of shape ``(k², rows)``, each a column
    ``0 … cols - 1``, the taps of each row in distinct columns (else ``ValueError``)."""
    taps = np.asarray(taps)
    if taps.ndim != 2 or taps.shape[1] != rows or not taps.size \
            or not np.issubdtype(taps.dtype, np.integer):
        raise ValueError(f"taps must be integers of shape (k², {rows}), not "
                         f"{taps.dtype} of shape {taps.shape}")
    if taps.min() < 0 or taps.max() >= cols:
        raise ValueError(f"taps must be columns 0..{cols - 1}")
    if any(len(set(column)) != len(column) for column in taps.T.tolist()):
        raise ValueError("taps must sit in distinct columns of each row")
    return taps.astype(np.int64)


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, not {value}")


class TapWalker(CheckedComponent):
    """One SGD step per kernel tap of a ``rows × cols`` convolution matrix in ``lanes`` banks.

    The banks are the tile's: weight and gradient bank ``p`` hold the columns
    ``j ≡ p (mod lanes)``, ``W[i, j]`` at address ``i·C + j div lanes``
    (``C = ceil(cols / lanes)``). Per tap ``t``, in tap order: ``sum_t`` = the exact sum of
    ``G[i, taps[t, i]]`` over the rows, ``new_t = sat(W[0, taps[t, 0]] +
    narrow(-sum_t · 2^-shift))`` (one rounding, one draw where stochastic), written to
    ``W[i, taps[t, i]]`` for every row; ``G`` is cleared everywhere.

    Parameters
    ----------
    taps : array_like of int, shape (k², rows)
        Column of tap ``t`` in row ``i``, ``taps[t, i]`` (:func:`check_taps`).
    rows, cols : int
        Shape of the matrix, ``>= 1``.
    lanes : int
        Banks, ``1 … cols``.
    weight_width, acc_width : int
        Widths of a weight and of a gradient sum (the gradient banks' words).
    shift : int
        Bits the narrowing of ``-sum_t`` discards (APPLY's shift).
    rounding : {"floor", "nearest", "stochastic"}
        Rounding of the narrowing.
    draw_bits : int
        Width of ``draw``; 0 for none (then ``rounding`` must not be ``"stochastic"`` with a
        positive ``shift``).

    Attributes
    ----------
    start : In(1)
        Start the step (ignored while one runs).
    done : Out(1)
        One-cycle pulse: the last entry is written and ``G`` is clear.
    read : Out(1), addr : Out(range(depth))
        Read every bank (W and G) at ``addr`` in this cycle (``depth = rows·C``).
    w, g : In(signed(weight_width)), In(signed(acc_width)) .array(lanes)
        Each bank's word at the address read two cycles before (the read data, registered).
    write : Out(lanes), word : Out(signed(weight_width))
        Write ``word`` at ``addr`` into the weight banks of ``write`` (no bank reads then).
    zero : Out(1), zero_addr : Out(range(depth))
        Write 0 at ``zero_addr`` into every gradient bank.
    draw : In(unsigned(draw_bits))
        (with ``draw_bits``) The LFSR word of this cycle's rounding.
    advance : Out(1)
        This cycle's rounding took ``draw`` (stochastic, ``shift > 0``): the LFSR moves on.
    overflow : Out(1)
        This cycle's step saturated (its rounding or its sum).

    Notes
    -----
    Latency, with ``K = k²`` taps, from the cycle ``start`` is seen to ``done`` inclusive:
    ``K·rows + max(K·(rows + 1), depth - 1) + 6`` cycles. A walk over the taps' entries, one
    per cycle (a ROM holds each entry's bank and address, read a cycle ahead), sums ``G``:
    the banks are read (``read``) the cycle after the entry's ROM address, their words arrive
    two cycles later (``g``, ``w``), one tap's bank is picked (registered) and added to the
    tap's sum; the last row's total goes to a memory of sums, row 0's weight to a memory of
    values. Four cycles of draining, then one tap per cycle: the step, from the sum and the
    value (both LUT RAM, read combinationally), written back as the new value; then a second
    walk writes each entry (``write``) a cycle after its ROM address. Clearing ``G`` walks
    every address from the first step on, alongside.
    """

    @staticmethod
    def check_parameters(*, taps, rows: int, cols: int, lanes: int, weight_width: int,
                         acc_width: int, shift: int, rounding: str, draw_bits: int = 0) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        for name, value, low in (("rows", rows, 1), ("cols", cols, 1), ("lanes", lanes, 1),
                                 ("weight_width", weight_width, 1),
                                 ("acc_width", acc_width, 1), ("shift", shift, -1 << 16),
                                 ("draw_bits", draw_bits, 0)):
            _check_int(name, value, low)
        if lanes > cols:
            raise ValueError(f"lanes must be between 1 and cols ({cols}), not {lanes}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {rounding!r}; choose one of {list(ROUNDINGS)}")
        if rounding == "stochastic" and shift > 0 and draw_bits < shift:
            raise ValueError(f"stochastic rounding of {shift} bits needs draw_bits >= {shift}, "
                             f"not {draw_bits}")
        check_taps(taps, rows, cols)

    def __init__(self, *, taps, rows: int, cols: int, lanes: int, weight_width: int,
                 acc_width: int, shift: int, rounding: str, draw_bits: int = 0):
        self._taps = np.asarray(taps).astype(np.int64)
        self._rows, self._cols, self._lanes = rows, cols, lanes
        self._ww, self._acc_width, self._shift = weight_width, acc_width, shift
        self._rounding, self._draw_bits = rounding, draw_bits
        address = range(max(self.depth, 2))
        members = {
            "start": In(1), "done": Out(1),
            "read": Out(1), "addr": Out(address),
            "w": In(signed(weight_width)).array(lanes),
            "g": In(signed(acc_width)).array(lanes),
            "write": Out(lanes), "word": Out(signed(weight_width)),
            "zero": Out(1), "zero_addr": Out(address),
            "advance": Out(1), "overflow": Out(1),
        }
        if draw_bits:
            members["draw"] = In(unsigned(draw_bits))
        super().__init__(members)

    @property
    def taps(self) -> np.ndarray:
        """Column of each tap, row by row (``taps[t, i]``)."""
        return self._taps.copy()

    @property
    def rows(self) -> int:
        """Rows of the matrix."""
        return self._rows

    @property
    def lanes(self) -> int:
        """Banks."""
        return self._lanes

    @property
    def chunks(self) -> int:
        """``C = ceil(cols / lanes)``: addresses per row."""
        return -(-self._cols // self._lanes)

    @property
    def depth(self) -> int:
        """Words per bank, ``rows·C``."""
        return self._rows * self.chunks

    @property
    def latency(self) -> int:
        """Cycles from ``start`` to ``done`` inclusive (the class notes' formula)."""
        k = len(self._taps)
        return k * self._rows + max(k * (self._rows + 1), self.depth - 1) + 6

    def _sums(self, m, t3_valid, t3_first, t3_last, t3_tap, t3_bank):
        """Stage 4 of the summing walk: the picked bank's words, each tap's running sum;
        returns the memories of sums and values and their ports."""
        ww = self._ww
        sum_shape = signed(self._acc_width + (self._rows - 1).bit_length())  # rows words, exact
        n_taps = len(self._taps)
        m.submodules.tap_sums = sum_mem = Memory(shape=sum_shape, depth=n_taps, init=[])
        m.submodules.tap_values = val_mem = Memory(shape=signed(ww), depth=n_taps, init=[])
        sum_rd, sum_wr = sum_mem.read_port(domain="comb"), sum_mem.write_port()
        val_rd, val_wr = val_mem.read_port(domain="comb"), val_mem.write_port()
        t4_valid, t4_first, t4_last, t4_tap = stage(
            m, t3_valid, t3_first, t3_last, t3_tap, name="t4")
        picked_g = Signal(signed(self._acc_width))
        picked_w = Signal(signed(ww))
        m.d.sync += [picked_g.eq(Array(list(self.g))[t3_bank]),
                     picked_w.eq(Array(list(self.w))[t3_bank])]
        tap_acc = Signal(sum_shape)
        tap_total = Signal(sum_shape)
        m.d.comb += tap_total.eq(Mux(t4_first, picked_g, tap_acc + picked_g))
        with m.If(t4_valid):
            m.d.sync += tap_acc.eq(tap_total)
            with m.If(t4_last):
                m.d.comb += [sum_wr.addr.eq(t4_tap), sum_wr.data.eq(tap_total),
                             sum_wr.en.eq(1)]
            with m.If(t4_first):   # the tap's value, from row 0
                m.d.comb += [val_wr.addr.eq(t4_tap), val_wr.data.eq(picked_w),
                             val_wr.en.eq(1)]
        return sum_rd, val_rd, val_wr

    def elaborate(self, platform):
        m = Module()
        rows, lanes, chunks, depth = self._rows, self._lanes, self.chunks, self.depth
        n_taps = len(self._taps)
        # Entry t·rows + i: W[i, j] with j = taps[t, i] is in bank j mod lanes at address
        # i·C + j div lanes.
        pbits = max(1, (lanes - 1).bit_length())
        abits = max(1, (depth - 1).bit_length())
        places = [((e % rows) * chunks + j // lanes) << pbits | (j % lanes)
                  for e, j in enumerate(self._taps.ravel().tolist())]
        m.submodules.taps = rom = Memory(shape=unsigned(pbits + abits), depth=n_taps * rows,
                                         init=places)
        rom_rd = rom.read_port()
        count = Signal(range(max(n_taps * rows, 2)))   # the walks' entry, STEP's tap
        row = Signal(range(max(rows, 2)))
        row_last = Signal(init=rows == 1)
        tap = Signal(range(max(n_taps, 2)))
        in_flight = Signal(range(5))
        walk = Signal()          # an entry issued this cycle (the ROM is addressed)
        writing = Signal()       # the second walk: write the taps' new values
        zeroing = Signal()       # the walk clearing G
        zaddr = Signal(range(max(depth, 2)))
        t1_valid, t1_first, t1_last, t1_tap = stage(m, walk, row == 0, row_last, tap, name="t1")
        t1_bank, t1_addr = rom_rd.data[:pbits], rom_rd.data[pbits:]
        t2_valid, t2_first, t2_last, t2_tap, t2_bank = stage(
            m, t1_valid & ~writing, t1_first, t1_last, t1_tap, t1_bank, name="t2")
        t3 = stage(m, t2_valid, t2_first, t2_last, t2_tap, t2_bank, name="t3")
        sum_rd, val_rd, val_wr = self._sums(m, *t3)
        m.d.comb += [rom_rd.addr.eq(count), val_rd.addr.eq(t1_tap)]

        def set_row(value):
            m.d.sync += [row.eq(value), row_last.eq(Value.cast(value) == rows - 1)]

        def walk_taps(last_state):
            """Issue the next entry of the walk; after the last, go to ``last_state``."""
            m.d.comb += walk.eq(1)
            m.d.sync += count.eq(count + 1)
            with m.If(row_last):
                set_row(0)
                m.d.sync += tap.eq(tap + 1)
                with m.If(tap == n_taps - 1):
                    m.d.sync += [count.eq(0), tap.eq(0)]
                    m.next = last_state
            with m.Else():
                set_row(row + 1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    set_row(0)
                    m.d.sync += [count.eq(0), tap.eq(0)]
                    m.next = "SUM"

            with m.State("SUM"):
                walk_taps("DRAIN")
                m.d.sync += in_flight.eq(4)

            with m.State("DRAIN"):   # the last tap's sum is written at stage 4
                m.d.sync += in_flight.eq(in_flight - 1)
                with m.If(in_flight == 1):
                    m.d.sync += [zeroing.eq(1), zaddr.eq(0)]
                    m.next = "STEP"

            # One tap per cycle, in tap order: the step from the negated sum, one rounding.
            with m.State("STEP"):
                m.d.comb += [sum_rd.addr.eq(count), val_rd.addr.eq(count)]
                offset = rounding_offset(self._rounding, self._shift,
                                         self.draw if self._draw_bits else None)
                new_value, sat_value = sgd_step(m, val_rd.data, sum_rd.data, self._shift,
                                                self._ww, offset)
                if self._rounding == "stochastic" and self._shift > 0:
                    m.d.comb += self.advance.eq(1)
                m.d.comb += [val_wr.addr.eq(count), val_wr.data.eq(new_value),
                             val_wr.en.eq(1), self.overflow.eq(sat_value)]
                m.d.sync += count.eq(count + 1)
                with m.If(count == n_taps - 1):
                    m.d.sync += [count.eq(0), writing.eq(1)]
                    m.next = "WRITE"

            with m.State("WRITE"):
                walk_taps("END")

            # The last entry is written now; the clearing of G may still be running.
            with m.State("END"):
                with m.If(~zeroing | (zaddr == depth - 1)):
                    m.d.sync += writing.eq(0)
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"

        # Stage 1 of the walks (the ROM's data is here): read the banks (summing walk) or
        # write the tap's new value into its bank (writing walk).
        m.d.comb += [self.read.eq(t1_valid & ~writing), self.addr.eq(t1_addr),
                     self.write.eq(Cat(t1_valid & writing & (t1_bank == k)
                                       for k in range(lanes))),
                     self.word.eq(val_rd.data), self.zero.eq(zeroing),
                     self.zero_addr.eq(zaddr)]
        with m.If(zeroing):
            m.d.sync += zaddr.eq(zaddr + 1)
            with m.If(zaddr == depth - 1):
                m.d.sync += zeroing.eq(0)
        return m
