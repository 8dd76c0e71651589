"""The hardware narrowing (hdl/rounding.py ``narrow``) against the arithmetic of
docs/architecture.md §2.

``narrow`` computes ``clip(floor((value + offset) / 2^shift))`` without a carry chain over the
whole value (it splits off the discarded bits' carry); these tests compare it, exhaustively
on small words, with that formula written out in Python integers.
"""

import pytest
from amaranth import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from xbarode.hdl.rounding import narrow


def reference(value, offset, shift, width):
    """``clip(floor((value + offset) / 2^shift))`` to ``width`` signed bits, and whether clipped
    (a left shift for ``shift <= 0``)."""
    exact = (value + offset) >> shift if shift > 0 else value << -shift
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    return min(max(exact, lo), hi), int(not lo <= exact <= hi)


def run_narrow(value_width, shift, width, offset_kind):
    """Every value of ``value_width`` bits (and every offset, for an offset signal) through
    ``narrow``; returns the list of mismatches."""
    m = Module()
    value = Signal(signed(value_width))
    offsets = [0]
    if offset_kind == "signal":
        offset = Signal(unsigned(max(shift, 1)))
        offsets = range(1 << shift)
    elif offset_kind == "nearest":
        offset = 1 << (shift - 1)
        offsets = [offset]
    else:
        offset = None
    result, saturated = narrow(m, value, shift, width, offset)
    bad = []

    async def bench(ctx):
        for v in range(-(1 << (value_width - 1)), 1 << (value_width - 1)):
            ctx.set(value, v)
            for o in offsets:
                if offset_kind == "signal":
                    ctx.set(offset, o)
                got = (ctx.get(result), ctx.get(saturated))
                if got != reference(v, o, shift, width):
                    bad.append((v, o, got, reference(v, o, shift, width)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return bad


# Output widths below, at and above the shifted value's width, so that the saturation test,
# the two range edges (hi with a carry, lo - 1 with a carry) and the no-clip case all occur.
@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("shift", [1, 2, 3])
def test_narrow_with_an_offset_signal_matches_the_formula(shift, width):
    assert run_narrow(7, shift, width, "signal") == []


@pytest.mark.parametrize("width", [1, 3, 5, 6, 8])
@pytest.mark.parametrize(("shift", "offset_kind"),
                         [(0, None), (-2, None), (2, None), (4, None), (1, "nearest"),
                          (4, "nearest")])
def test_narrow_with_constant_offsets_matches_the_formula(shift, offset_kind, width):
    assert run_narrow(8, shift, width, offset_kind) == []
