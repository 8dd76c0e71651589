"""The average pool before the head: ``z_N``'s p×p blocks, per channel, into tile C's inputs.

The hardware twin of :meth:`FixedPool.forward <xbarode.model.fixed_bank.FixedPool.forward>`
(one image): each feature is the exact sum ``Σ`` of the ``p²`` state words of its block,
narrowed once, ``narrow(Σ·ρ, R)`` with ``(ρ, R) = pool_reciprocal(p)`` (a shift by ``log2 p²``
when ``p²`` is a power of two), saturated to the state format; the features leave in the
model's order (channel by channel, each pooled image row-major), so that a stochastic
narrowing draws from its LFSR (site ``POOL_SITE`` of the core's seed) as the model draws.
"""

from __future__ import annotations

from amaranth import Array, Module, Mux, Signal, signed
from amaranth.lib.wiring import In, Out

from xbarode.model.fixed import ROUNDINGS
from xbarode.model.fixed_bank import pool_reciprocal

from .checked import CheckedComponent
from .core_parts import check_int
from .rounding import LfsrBank, narrow, rounding_offset

__all__ = ["PoolUnit"]


class PoolUnit(CheckedComponent):
    """The p×p average pool of a banked state into tile C's inputs, a word per cycle.

    Parameters
    ----------
    height, width : int
        Image shape H×W; ``factor`` divides both.
    channels : int
        Channels ``c`` of the state (``m = c·H·W`` words, channel by channel, row-major).
    factor : int
        ``p``, ``>= 2``, with ``p² <= 2^16``.
    lanes, lanes_c : int
        Lanes of the state banks (``rd_*``) and of tile C's inputs (``c_x_*``).
    state_width : int
        Width of the state words and of the features.
    rounding : {"floor", "nearest", "stochastic"}
    lfsr_seed : int
        Seed of the narrowing's LFSR (the core's ``site_seed(lfsr_seed, POOL_SITE)``).

    Attributes
    ----------
    start : In(1)
        Start the walk (while it is idle).
    done : Out(1)
        The walk's last feature is written in this cycle.
    rd_addr : Out(range(ceil(m / lanes) + 1))
    rd_data : In(signed(state_width)).array(lanes)
        The state banks: the chunk at the ``rd_addr`` of the cycle before (0 while idle).
    c_x_addr : Out(range(ceil(features / lanes_c)))
    c_x_data : Out(signed(state_width)).array(lanes_c)
    c_x_en : Out(1).array(lanes_c)
        Tile C's input side port: feature ``f`` at chunk ``f // lanes_c``, lane
        ``f % lanes_c``.
    saturated : Out(1)
        A feature's narrowing saturated in this cycle.

    Notes
    -----
    The walk reads the state in its order, one word per cycle, keeping a row of ``W/p``
    partial sums; a block's sum is complete at its last word. Latency: ``done`` ``m + 1``
    cycles after the cycle ``start`` is seen, with the last feature's write.
    """

    @staticmethod
    def check_parameters(*, height: int, width: int, channels: int, factor: int, lanes: int,
                         lanes_c: int, state_width: int, rounding: str, lfsr_seed: int) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        for name, value in (("height", height), ("width", width), ("channels", channels),
                            ("lanes", lanes), ("lanes_c", lanes_c),
                            ("state_width", state_width)):
            check_int(name, value, 1)
        check_int("factor", factor, 2)
        if height % factor or width % factor:
            raise ValueError(f"factor {factor} does not divide the {height}x{width} image")
        if pool_reciprocal(factor)[1] > 32:
            raise ValueError(f"factor {factor} is too large: its narrowing would discard "
                             f"{pool_reciprocal(factor)[1]} bits (at most 32)")
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {list(ROUNDINGS)}, not {rounding!r}")
        check_int("lfsr_seed", lfsr_seed, 1)

    def __init__(self, *, height: int, width: int, channels: int, factor: int, lanes: int,
                 lanes_c: int, state_width: int, rounding: str, lfsr_seed: int):
        self._shape, self._channels, self._factor = (height, width), channels, factor
        self._lanes, self._lanes_c, self._sw = lanes, lanes_c, state_width
        self._rounding, self._seed = rounding, lfsr_seed
        m = channels * height * width
        features = channels * (height // factor) * (width // factor)
        super().__init__({
            "start": In(1), "done": Out(1),
            "rd_addr": Out(range(max(-(-m // lanes) + 1, 2))),
            "rd_data": In(signed(state_width)).array(lanes),
            "c_x_addr": Out(range(max(-(-features // lanes_c), 2))),
            "c_x_data": Out(signed(state_width)).array(lanes_c),
            "c_x_en": Out(1).array(lanes_c),
            "saturated": Out(1),
        })

    @property
    def factor(self) -> int:
        """``p``."""
        return self._factor

    @property
    def features(self) -> int:
        """``c·(H/p)·(W/p)``: the words written into C."""
        height, width = self._shape
        return self._channels * (height // self._factor) * (width // self._factor)

    def elaborate(self, platform):
        mod = Module()
        height, width = self._shape
        p, lanes, lanes_c, sw = self._factor, self._lanes, self._lanes_c, self._sw
        m = self._channels * height * width
        rho, shift = pool_reciprocal(p)
        # The word read: its row and column within its block, its lane.
        k = Signal(range(m + 1))
        row_p, col_p = Signal(range(p)), Signal(range(p))
        addr, lane = Signal.like(self.rd_addr), Signal(range(max(lanes, 2)))
        last_col = Signal(range(width))       # the column, counted down to the row's end
        # The same one cycle later, when its word arrives.
        valid, d_row_p, d_col_p, d_lane, d_last = (Signal(), Signal.like(row_p),
                                                   Signal.like(col_p), Signal.like(lane),
                                                   Signal())
        block = Signal(range(max(width // p, 2)))     # the arriving word's column // p
        sums = Array(Signal(signed(sw + 2 * p.bit_length()), name=f"sum{j}")
                     for j in range(width // p))
        f_addr, f_lane = Signal.like(self.c_x_addr), Signal(range(max(lanes_c, 2)))
        busy = Signal()
        # 0 while idle: the core ORs the addresses of the parts that read the state banks.
        mod.d.comb += self.rd_addr.eq(Mux(busy, addr, 0))

        with mod.If(self.start & ~busy):
            mod.d.sync += [busy.eq(1), k.eq(0), row_p.eq(0), col_p.eq(0),
                           last_col.eq(width - 1), addr.eq(0), lane.eq(0), f_addr.eq(0),
                           f_lane.eq(0), block.eq(0)]
        mod.d.sync += valid.eq(busy & (k < m))
        with mod.If(busy & (k < m)):
            mod.d.sync += [k.eq(k + 1), d_row_p.eq(row_p), d_col_p.eq(col_p),
                           d_lane.eq(lane), d_last.eq(last_col == 0)]
            mod.d.sync += col_p.eq(Mux(col_p == p - 1, 0, col_p + 1))
            with mod.If(last_col == 0):       # the row's last word
                mod.d.sync += [last_col.eq(width - 1),
                               row_p.eq(Mux(row_p == p - 1, 0, row_p + 1))]
            with mod.Else():
                mod.d.sync += last_col.eq(last_col - 1)
            with mod.If(lane == lanes - 1):
                mod.d.sync += [lane.eq(0), addr.eq(addr + 1)]
            with mod.Else():
                mod.d.sync += lane.eq(lane + 1)

        word = Array(self.rd_data)[d_lane]
        first = (d_row_p == 0) & (d_col_p == 0)
        total = Signal.like(sums[0])
        mod.d.comb += total.eq(word + Mux(first, 0, sums[block]))
        with mod.If(valid):
            mod.d.sync += sums[block].eq(total)
            with mod.If(d_col_p == p - 1):
                mod.d.sync += block.eq(Mux(d_last, 0, block + 1))

        lfsr = None
        if self._rounding == "stochastic":
            mod.submodules.lfsr = lfsr = LfsrBank(draws=1, bits=shift, steps={1},
                                                  seed=self._seed)
        out, sat = narrow(mod, total * rho, shift, sw, rounding_offset(
            self._rounding, shift, None if lfsr is None else lfsr.draw[0]))
        complete = valid & (d_row_p == p - 1) & (d_col_p == p - 1)
        with mod.If(complete):
            if lfsr is not None:
                mod.d.comb += lfsr.advance.eq(1)
            mod.d.comb += [self.saturated.eq(sat), self.c_x_addr.eq(f_addr)]
            for t in range(lanes_c):
                mod.d.comb += [self.c_x_data[t].eq(out), self.c_x_en[t].eq(f_lane == t)]
            with mod.If(f_lane == lanes_c - 1):
                mod.d.sync += [f_lane.eq(0), f_addr.eq(f_addr + 1)]
            with mod.Else():
                mod.d.sync += f_lane.eq(f_lane + 1)
        with mod.If(valid & (k == m)):     # the last word's feature
            mod.d.comb += self.done.eq(1)
            mod.d.sync += busy.eq(0)
        return mod
