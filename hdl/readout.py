"""The crossbar tile's READ_* read-outs: the words of a chunk, read from every lane's bank at
once, streamed out one at a time.

Two implementations, chosen by the tile (:class:`~xbarode.hdl.tile.CrossbarTile`'s
``read_chain``): :class:`MuxReadout`, a multiplexer indexed by the lane (one word per cycle;
every lane's bank outputs wired to one place), and :class:`ChainReadout`, a chain of registers,
one per lane, shifted towards lane 0 (each lane's word moves to its neighbour only, which is
what a wide tile's routing needs). Both pick the same source by ``read_w``/``read_g``: the
weight banks, the gradient banks, or else the result banks (``y``).
"""

from __future__ import annotations

from amaranth import Array, Module, Mux, Signal, signed
from amaranth.lib.wiring import In, Out

from .checked import CheckedComponent
from .groups import GROUP, group_copies, group_count

__all__ = ["ChainReadout", "MuxReadout"]


def _members(lanes, width, w_width, y_width, g_width):
    members = {"w": In(signed(w_width)).array(lanes), "y": In(signed(y_width)).array(lanes),
               "read_w": In(1), "payload": Out(signed(width))}
    if g_width is not None:
        members |= {"g": In(signed(g_width)).array(lanes), "read_g": In(1)}
    return members


class _Readout(CheckedComponent):
    """What both read-outs share: parameters, their checks and the source ports."""

    @staticmethod
    def check_parameters(*, lanes: int, width: int, w_width: int, y_width: int,
                         g_width: int | None = None) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        for name, value in (("lanes", lanes), ("width", width), ("w_width", w_width),
                            ("y_width", y_width), ("g_width", g_width)):
            if value is None and name == "g_width":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, not {value}")
        widest = max(w_width, y_width, g_width or 0)
        if width < widest:
            raise ValueError(f"width must hold the widest source ({widest} bits), not {width}")

    def __init__(self, members, *, lanes, width, w_width, y_width, g_width):
        self._lanes, self._width, self._g = lanes, width, g_width is not None
        super().__init__(_members(lanes, width, w_width, y_width, g_width) | members)

    @property
    def lanes(self) -> int:
        """Lanes (words of a chunk)."""
        return self._lanes

    @property
    def width(self) -> int:
        """Width of ``payload``."""
        return self._width

    @property
    def has_g(self) -> bool:
        """The read-out has the gradient source (``g``, ``read_g``)."""
        return self._g


class MuxReadout(_Readout):
    """The word of lane ``lane`` of the chosen source, through a multiplexer.

    Parameters
    ----------
    lanes : int
        Lanes, ``>= 1``.
    width : int
        Width of ``payload``, at least each source's.
    w_width, y_width : int
        Widths of the weight and result words.
    g_width : int, optional
        Width of the gradient words; None for a read-out without them.

    Attributes
    ----------
    w, y, g : In(signed(...)).array(lanes)
        The lanes' words of each source (``g`` only with ``g_width``).
    read_w, read_g : In(1)
        Read ``w`` (``g`` takes precedence with ``read_g``); else ``y``.
    lane : In(range(lanes))
        The lane whose word is offered.
    payload : Out(signed(width))
        The word, sign-extended.

    Notes
    -----
    Latency 0 (combinational): one multiplexer of ``log2(lanes)`` levels per source, indexed
    by the lane (not a chain of one 2:1 multiplexer per lane).
    """

    def __init__(self, *, lanes: int, width: int, w_width: int, y_width: int,
                 g_width: int | None = None):
        super().__init__({"lane": In(range(max(lanes, 2)))}, lanes=lanes, width=width,
                         w_width=w_width, y_width=y_width, g_width=g_width)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.payload.eq(Array(self.y)[self.lane])
        with m.If(self.read_w):
            m.d.comb += self.payload.eq(Array(self.w)[self.lane])
        if self._g:
            with m.If(self.read_g):
                m.d.comb += self.payload.eq(Array(self.g)[self.lane])
        return m


class ChainReadout(_Readout):
    """A chain of registers, one per lane, loaded with a whole chunk and shifted to lane 0.

    Parameters
    ----------
    As for :class:`MuxReadout`.

    Attributes
    ----------
    w, y, g, read_w, read_g : In
        As for :class:`MuxReadout`.
    load : In(1)
        Load the chain with every lane's word of the chosen source as they are in the next
        cycle (the chain holds them from the cycle after).
    shift : In(1)
        Shift the chain one word towards lane 0 in the next cycle; the last lane takes 0.
    loading : Out(1).array(groups)
        Group ``g``'s copy of ``load`` (the chain loads in this cycle): the cue for the banks
        to read the next chunk, in the same group's lanes.
    payload : Out(signed(width))
        Lane 0's register.

    Notes
    -----
    Latency 2 from ``load`` (or ``shift``) to ``payload``: the decisions are registered once
    per group of :data:`~xbarode.hdl.groups.GROUP` lanes (a decision taken with the handshake
    would otherwise fan out to every lane's registers in one cycle, across the device), as is
    the source choice; the chain's registers then take their words. Each lane's word moves to
    its neighbour only.
    """

    def __init__(self, *, lanes: int, width: int, w_width: int, y_width: int,
                 g_width: int | None = None):
        groups = group_count(lanes)
        super().__init__({"load": In(1), "shift": In(1), "loading": Out(1).array(groups)},
                         lanes=lanes, width=width, w_width=w_width, y_width=y_width,
                         g_width=g_width)

    def elaborate(self, platform):
        m = Module()
        lanes, groups = self._lanes, group_count(self._lanes)
        chain = [Signal(signed(self._width), name=f"rchain{k}") for k in range(lanes)]
        load_g = group_copies(m, groups, self.load, "chain_load")
        shift_g = group_copies(m, groups, self.shift, "chain_shift")
        read_w = group_copies(m, groups, self.read_w, "read_w")
        read_g = group_copies(m, groups, self.read_g, "read_g") if self._g else None
        m.d.comb += [self.loading[g].eq(load_g[g]) for g in range(groups)]
        for k in range(lanes):
            source = Mux(read_w[k // GROUP], self.w[k], self.y[k])
            if self._g:
                source = Mux(read_g[k // GROUP], self.g[k], source)
            with m.If(load_g[k // GROUP]):
                m.d.sync += chain[k].eq(source)
            with m.Elif(shift_g[k // GROUP]):
                m.d.sync += chain[k].eq(chain[k + 1] if k + 1 < lanes else 0)
        m.d.comb += self.payload.eq(chain[0])
        return m
