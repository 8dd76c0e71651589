"""A pipelined adder tree: the exact sum of ``count`` signed terms, ``latency`` cycles later.

The crossbar tile's forward product sums its lanes' products with it
(:class:`~xbarode.hdl.tile.CrossbarTile`).
"""

from __future__ import annotations

import math

from amaranth import Module, Signal, signed
from amaranth.lib.wiring import In, Out

from .checked import CheckedComponent

__all__ = ["AdderTree"]


def _sum_width(width: int, count: int) -> int:
    """Width of the exact sum as the tree forms it: each pair one bit wider than the wider of
    the two, an odd term out passed up as it is."""
    widths = [width] * count
    while len(widths) > 1:
        widths = [max(widths[a], widths[a + 1]) + 1 if a + 1 < len(widths) else widths[a]
                  for a in range(0, len(widths), 2)]
    return widths[0]


class AdderTree(CheckedComponent):
    """Exact sum of ``count`` signed terms through a tree of two-input adders with registers.

    Parameters
    ----------
    width : int
        Width of each term (signed), ``>= 1``.
    count : int
        Number of terms, ``>= 1``; need not be a power of two (an odd term out is passed up a
        level as it is).
    stages : int, optional
        Register stages, ``>= 0``; default :meth:`min_stages` (two levels of adders between
        registers).

    Attributes
    ----------
    terms : In(signed(width)).array(count)
    total : Out(signed(...))
        ``Σ terms`` of ``latency`` cycles before, exact (as wide as the tree's last level).

    Notes
    -----
    Latency ``stages`` cycles. The tree has ``L = ceil(log2(count))`` levels of adders. Where
    there are fewer stages than levels, registers sit after the first level alone if a level
    is to spare (products leave their multipliers' output registers on long routes, so one adder
    behind them is what fits in a cycle), then after every second level, then after single
    levels at the top (whose operands come from far-apart lanes). With at least as many stages
    as levels, every level is registered, and the remaining stages follow the last level (the
    total passes through them unchanged).
    """

    @staticmethod
    def check_parameters(*, width: int, count: int, stages: int | None = None) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        for name, value in (("width", width), ("count", count), ("stages", stages)):
            if value is None and name == "stages":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
        if width < 1:
            raise ValueError(f"width must be >= 1, not {width}")
        if count < 1:
            raise ValueError(f"count must be >= 1, not {count}")
        if stages is not None and stages < 0:
            raise ValueError(f"stages must be >= 0, not {stages}")

    def __init__(self, *, width: int, count: int, stages: int | None = None):
        if stages is None:
            stages = self.min_stages(count)
        self._width, self._count, self._stages = width, count, stages
        super().__init__({"terms": In(signed(width)).array(count),
                          "total": Out(signed(_sum_width(width, count)))})

    @staticmethod
    def min_stages(count: int) -> int:
        """Register stages of a tree of ``count`` terms with two levels between registers:
        ``ceil(ceil(log2(count)) / 2)``."""
        return math.ceil(math.ceil(math.log2(count)) / 2) if count > 1 else 0

    @property
    def width(self) -> int:
        """Width of each term."""
        return self._width

    @property
    def count(self) -> int:
        """Number of terms."""
        return self._count

    @property
    def levels(self) -> int:
        """Levels of adders, ``ceil(log2(count))``."""
        return math.ceil(math.log2(self._count)) if self._count > 1 else 0

    @property
    def latency(self) -> int:
        """Cycles from ``terms`` to their ``total``: the register stages."""
        return self._stages

    def _registered_levels(self) -> set[int]:
        """The levels (1-based, past the last level for spare stages) followed by a register."""
        levels, stages = self.levels, self._stages
        doubles = max(0, levels - stages)
        first = 1 if 0 < doubles < stages else 0
        after = set(range(1, first + 1))
        after |= {first + 2 * (k + 1) for k in range(doubles)}
        after |= {first + 2 * doubles + k + 1 for k in range(stages - doubles - first)}
        return after

    def elaborate(self, platform):
        m = Module()
        registered = self._registered_levels()
        level = list(self.terms)
        for depth in range(1, max(self.levels, self._stages) + 1):
            if len(level) > 1:
                level = [level[a] + level[a + 1] if a + 1 < len(level) else level[a]
                         for a in range(0, len(level), 2)]
            if depth in registered:
                regs = [Signal.like(value, name=f"tree{depth}_{k}")
                        for k, value in enumerate(level)]
                m.d.sync += [reg.eq(value) for reg, value in zip(regs, level, strict=True)]
                level = regs
        m.d.comb += self.total.eq(level[0])
        return m
