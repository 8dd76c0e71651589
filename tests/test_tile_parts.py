"""The crossbar tile's parts on their own (hdl/adder_tree.py, hdl/readout.py,
hdl/output_stage.py): each against plain Python arithmetic, cycle by cycle. The tile's own
tests (test_tile.py) cover them inside the tile against the fixed-point model."""

import numpy as np
import pytest
from amaranth import ClockDomain, Module
from amaranth.sim import Simulator

from xbarode.hdl.adder_tree import AdderTree
from xbarode.hdl.output_stage import ForwardOutput
from xbarode.hdl.readout import ChainReadout, MuxReadout


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


def readout_words(rng, lanes):
    return {"w": rng.integers(-128, 128, lanes).tolist(),
            "y": rng.integers(-2048, 2048, lanes).tolist(),
            "g": rng.integers(-(1 << 19), 1 << 19, lanes).tolist()}


def set_words(ctx, dut, words):
    for name, values in words.items():
        for port, value in zip(getattr(dut, name), values, strict=True):
            ctx.set(port, value)


@pytest.mark.parametrize("lanes", [1, 3, 9])
def test_mux_readout_offers_the_chosen_lane_of_the_chosen_source(lanes):
    dut = MuxReadout(lanes=lanes, width=24, w_width=8, y_width=12, g_width=20)
    words = readout_words(np.random.default_rng(lanes), lanes)

    async def bench(ctx):
        set_words(ctx, dut, words)
        for read_w, read_g, source in ((0, 0, "y"), (1, 0, "w"), (0, 1, "g"), (1, 1, "g")):
            ctx.set(dut.read_w, read_w)
            ctx.set(dut.read_g, read_g)
            for lane in range(lanes):
                ctx.set(dut.lane, lane)
                assert ctx.get(dut.payload) == words[source][lane]

    simulate(dut, bench)


@pytest.mark.parametrize("lanes", [1, 3, 17])
def test_chain_readout_loads_then_shifts_towards_lane_0(lanes):
    dut = ChainReadout(lanes=lanes, width=24, w_width=8, y_width=12, g_width=20)
    rng = np.random.default_rng(lanes)

    async def bench(ctx):
        for read_w, read_g, source in ((1, 0, "w"), (0, 0, "y"), (0, 1, "g")):
            set_words(ctx, dut, readout_words(rng, lanes))   # gone before the chain loads
            ctx.set(dut.read_w, read_w)
            ctx.set(dut.read_g, read_g)
            ctx.set(dut.load, 1)
            await ctx.tick()
            ctx.set(dut.load, 0)
            # Every group's copy of the load, a cycle after it; the chain takes the words of
            # that cycle.
            assert [ctx.get(flag) for flag in dut.loading] == [1] * len(dut.loading)
            words = readout_words(rng, lanes)
            set_words(ctx, dut, words)
            await ctx.tick()
            assert not any(ctx.get(flag) for flag in dut.loading)
            set_words(ctx, dut, readout_words(rng, lanes))   # after the load: unseen
            offered = []
            for _ in range(lanes + 1):
                offered.append(ctx.get(dut.payload))
                ctx.set(dut.shift, 1)
                await ctx.tick()
                ctx.set(dut.shift, 0)
                await ctx.tick()   # the shift acts two cycles after it is asked
            assert offered == [*words[source], 0]

    simulate(dut, bench)


def test_forward_output_rounds_each_row_once_with_its_bias():
    """Rows of two chunks, a bias per row, nearest rounding of 3 bits into 6-bit words: each
    word ``sat((Σ chunks + bias·4 + 4) >> 3)`` on ``y`` two cycles after its last chunk, the
    flag with it where it saturated, and in the memory at its row."""
    rows, shift, width = 4, 3, 6
    dut = ForwardOutput(rows=rows, sum_width=12, acc_width=14, shift=shift, width=width,
                        out_width=width, rounding="nearest", bias=(8, 2))
    rng = np.random.default_rng(3)
    chunks = rng.integers(-300, 300, (rows, 2)).tolist()
    chunks[1] = [2000, 2000]   # saturates high
    biases = rng.integers(-128, 128, rows).tolist()
    expected, flags = [], []
    for (a, b), bias in zip(chunks, biases, strict=True):
        word = (a + b + bias * 4 + (1 << (shift - 1))) >> shift
        clipped = min(max(word, -(1 << (width - 1))), (1 << (width - 1)) - 1)
        expected.append(clipped)
        flags.append(int(clipped != word))
    seen = {}

    async def bench(ctx):
        ctx.set(dut.forward, 1)
        ctx.set(dut.restart, 1)
        await ctx.tick()
        ctx.set(dut.restart, 0)
        cycle = 0
        for row in range(rows):
            for c in range(2):
                ctx.set(dut.bias, biases[ctx.get(dut.bias_row)])
                ctx.set(dut.total, chunks[row][c])
                ctx.set(dut.valid, 1)
                ctx.set(dut.first, c == 0)
                ctx.set(dut.last, c == 1)
                if ctx.get(dut.y.valid):
                    seen[cycle] = (ctx.get(dut.y.payload), ctx.get(dut.overflow))
                await ctx.tick()
                cycle += 1
        ctx.set(dut.valid, 0)
        for _ in range(4):
            if ctx.get(dut.y.valid):
                seen[cycle] = (ctx.get(dut.y.payload), ctx.get(dut.overflow))
            await ctx.tick()
            cycle += 1
        for row in range(rows):
            ctx.set(dut.read_addr, row)
            assert ctx.get(dut.read_data) == expected[row]

    simulate(dut, bench)
    # Row r's last chunk is at cycle 2r + 1; its word two cycles later.
    assert seen == {2 * r + 3: (expected[r], flags[r]) for r in range(rows)}
