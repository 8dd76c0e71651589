"""The crossbar tile's parts on their own (hdl/adder_tree.py): each against
plain Python arithmetic, cycle by cycle. The tile's own tests (test_tile.py) cover them inside
the tile against the fixed-point model."""

import numpy as np
import pytest
from amaranth import ClockDomain, Module
from amaranth.sim import Simulator

from xbarode.hdl.adder_tree import AdderTree


def simulate(dut, bench):
    """Run ``bench`` on ``dut`` with a clock (a design of no registers has no domain of its
    own, so the clock's domain is declared here)."""
    top = Module()
    top.submodules.dut = dut
    top.domains.sync = ClockDomain()
    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize(("count", "stages"), [
    (1, None), (1, 1), (2, None), (3, None), (5, 2), (8, None), (17, None), (17, 4),
    (64, None), (64, 4), (64, 7)])
def test_adder_tree_sums_exactly_latency_cycles_later(count, stages):
    width = 9
    dut = AdderTree(width=width, count=count, stages=stages)
    expected_latency = {1: 0, 2: 1, 3: 1, 8: 2, 17: 3, 64: 3}[count] if stages is None \
        else stages
    assert dut.latency == expected_latency
    rng = np.random.default_rng(count)
    low, high = -(1 << (width - 1)), (1 << (width - 1)) - 1
    vectors = [[low] * count, [high] * count]   # the extremes need every bit of the total
    vectors += rng.integers(low, high + 1, (12, count)).tolist()
    seen = []

    async def bench(ctx):
        for vector in [*vectors, *[[0] * count] * dut.latency]:
            for term, value in zip(dut.terms, vector, strict=True):
                ctx.set(term, value)
            seen.append(ctx.get(dut.total))
            await ctx.tick()

    simulate(dut, bench)
    assert seen[dut.latency:] == [sum(vector) for vector in vectors]


def test_adder_tree_stages_follow_the_pairs_rule():
    assert [AdderTree.min_stages(n) for n in (1, 2, 3, 4, 5, 16, 17, 64, 65)] == \
        [0, 1, 1, 1, 2, 2, 3, 3, 4]
