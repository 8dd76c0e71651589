"""The crossbar tile's parts on their own (hdl/adder_tree.py, hdl/readout.py,
hdl/output_stage.py, hdl/lane_group.py, hdl/tap_walker.py), and the read-only table tile
(``writable=False``): each against plain Python arithmetic, cycle by cycle. The tile's own
tests (test_tile.py) cover the parts inside the tile against the fixed-point model."""

import numpy as np
import pytest
from amaranth import ClockDomain, Fragment, Module
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from helpers import elaborated
from xbarode.hdl.adder_tree import AdderTree
from xbarode.hdl.fourier import DftArray
from xbarode.hdl.interface import host_interface
from xbarode.hdl.lane_group import LaneGroup
from xbarode.hdl.output_stage import ForwardOutput
from xbarode.hdl.readout import ChainReadout, MuxReadout
from xbarode.hdl.tap_walker import TapWalker
from xbarode.hdl.tile import CrossbarTile, TileOp
from xbarode.model.conv import tap_columns
from xbarode.model.fixed import Format
from xbarode.sim.streams import op_receive, op_run, op_send


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


# --- the lane group: its lanes driven as the tile's sequencer drives them --------------------

GROUP_BASE = {"first": 8, "count": 3, "lanes": 11, "depth": 8, "weight_width": 8,
              "operand_width": 8, "lane_width": 20, "shift": 4, "width": 8, "out_width": 8,
              "update_shift": 4, "rounding": "nearest"}


def clip(value, width=8):
    return min(max(value, -(1 << (width - 1))), (1 << (width - 1)) - 1)


def nearest(value, shift):
    """``floor((value + 2^(shift-1)) / 2^shift)``, clipped to 8 bits, and whether it clipped."""
    word = (value + (1 << (shift - 1))) >> shift
    return clip(word), clip(word) != word


def run_lane_group(dut, weights, operations):
    """Load ``weights`` (a list per lane) through LOAD_W's ports, run ``operations``, pairs of
    a kind (``"transposed"``, ``"update"``, ``"accumulate"``, ``"apply"``) and issues, one per
    cycle — dicts ``addr``, ``nlanes``, ``s``, ``x`` (per lane), ``first``, ``last``, or None
    for a bubble — with the controls at the stages the class docstring gives; read the banks
    back. Returns per cycle of the last operation the products, ``y_write``, ``y_word`` and
    ``saturating``, and the banks' words and ``overflow`` at the end."""
    count = dut.count
    seen = {"products": [], "y": [], "saturating": []}

    async def operation(ctx, kind, issues):
        def at(c):
            return issues[c] if 0 <= c < len(issues) else None

        for c in range(len(issues) + 8):
            now, s1, s3, s4, s5 = at(c), at(c - 1), at(c - 3), at(c - 4), at(c - 5)
            ctx.set(dut.en, now is not None)
            ctx.set(dut.addr, now["addr"] if now else 0)
            ctx.set(dut.s, s1["s"] if s1 else 0)
            for j in range(count):
                ctx.set(dut.x[j], s1["x"][j] if s1 else 0)
            tr = kind == "transposed"
            ctx.set(dut.ctrl, {
                "nlanes": now["nlanes"] if now else 0, "waddr": s3["addr"] if s3 else 0,
                "times_s": kind in ("update", "accumulate"), "s_right": tr,
                "tr_acc": tr and s3 is not None, "tr_first": bool(s3 and s3["first"]),
                "tr_clear": tr and bool(s4 and s4["last"]),
                "tr_write": tr and bool(s5 and s5["last"]),
                "u_write": kind in ("update", "apply") and s4 is not None,
                "g_write": kind in ("accumulate", "apply") and s3 is not None,
                "g_keep": kind == "accumulate", "apply": kind == "apply"})
            seen["products"].append([ctx.get(p) for p in dut.product])
            seen["y"].append((ctx.get(dut.y_write), [ctx.get(w) for w in dut.y_word]))
            seen["saturating"].append(ctx.get(dut.saturating))
            await ctx.tick()

    async def bench(ctx):
        for j, words in enumerate(weights):
            for address, word in enumerate(words):
                ctx.set(dut.load_valid, 1)
                ctx.set(dut.load_lane, j)
                ctx.set(dut.load_addr, address)
                ctx.set(dut.load_word, word)
                await ctx.tick()
        ctx.set(dut.load_valid, 0)
        for kind, issues in operations:
            seen.update({"products": [], "y": [], "saturating": []})
            await operation(ctx, kind, issues)
        seen["overflow"] = ctx.get(dut.overflow)
        seen["w"], seen["g"] = [[] for _ in range(count)], [[] for _ in range(count)]
        for address in range(dut.depth):
            ctx.set(dut.addr, address)
            ctx.set(dut.en, 1)
            await ctx.tick()
            for j in range(count):
                seen["w"][j].append(ctx.get(dut.w_data[j]))
                if dut.training:
                    seen["g"][j].append(ctx.get(dut.g_data[j]))

    simulate(dut, bench)
    return seen


@pytest.mark.parametrize("one_chunk", [False, True])
def test_lane_group_accumulates_transposed_rows_and_rounds_each_chunk(one_chunk):
    """TRANSPOSED on lanes 8-10 of an 11-lane tile, rows of 4 (two chunks of 4 rows, or the
    same chunk twice with ``one_chunk``); the second chunk uses lanes 8-9 only (``nlanes`` 10).
    Each lane's product at stage 4 is ``W·s`` (0 where the lane is off); each chunk's words
    ``nearest(Σ_i W[i·C + c]·s_i >> 4)`` are written (``y_write``) 6 cycles after its last
    row, by the lanes it uses; a saturating word raises ``overflow``."""
    rng = np.random.default_rng(5)
    dut = LaneGroup(**GROUP_BASE, one_chunk=one_chunk)
    rows, chunks = 4, 2
    weights = rng.integers(-20, 21, (3, 8)).tolist()
    weights[0][7] = 127       # lane 8, row 3 of chunk 1 (or 0): with s = 127, saturates
    s = [rng.integers(-20, 21, rows).tolist(), [*rng.integers(-20, 21, rows - 1).tolist(), 127]]
    address = (lambda i, c: i) if one_chunk else (lambda i, c: i * chunks + c)
    if one_chunk:
        weights[0][3] = 127
    issues = [{"addr": address(i, c), "nlanes": 11 - c, "s": s[c][i], "x": [0, 0, 0],
               "first": i == 0, "last": i == rows - 1} for c in range(chunks) for i in range(rows)]
    if one_chunk:   # one chunk per operation: a gap between the two
        issues[rows:rows] = [None] * 4
    seen = run_lane_group(dut, weights, [("transposed", issues)])
    last = [c for c, issue in enumerate(issues) if issue and issue["last"]]
    for c, issue in enumerate(issues):
        if issue is None:
            continue
        on = [8 + j < issue["nlanes"] for j in range(3)]
        assert seen["products"][c + 4] == [weights[j][issue["addr"]] * issue["s"] if on[j]
                                           else 0 for j in range(3)]
    writes = {c: (mask, words) for c, (mask, words) in enumerate(seen["y"]) if mask}
    expected, flags = {}, []
    for c in range(chunks):
        on = [8 + j < 11 - c for j in range(3)]
        sums = [sum(weights[j][address(i, c)] * s[c][i] for i in range(rows)) for j in range(3)]
        rounded = [nearest(total, 4) for total in sums]
        flags += [sat for (_, sat), lane_on in zip(rounded, on, strict=True) if lane_on]
        expected[last[c] + 6] = (sum(1 << j for j in range(3) if on[j]),
                                            [word if lane_on else None for (word, _), lane_on
                                             in zip(rounded, on, strict=True)])
    got = {c: (mask, [w if mask >> j & 1 else None for j, w in enumerate(words)])
           for c, (mask, words) in writes.items()}
    assert got == expected
    assert any(flags) and seen["overflow"] == 1


def test_lane_group_update_writes_back_the_saturated_sums():
    """UPDATE: each lane's weight at the address becomes ``clip(W + nearest(s·x >> 4))``,
    written back (lanes off keep theirs); a clipped step or sum raises ``overflow``."""
    rng = np.random.default_rng(7)
    dut = LaneGroup(**GROUP_BASE)
    weights = rng.integers(-128, 128, (3, 8)).tolist()
    weights[1][2] = 120
    issues = [{"addr": a, "nlanes": 10 if a == 5 else 11, "s": int(rng.integers(-128, 128)),
               "x": rng.integers(-128, 128, 3).tolist(), "first": True, "last": True}
              for a in range(8)]
    issues[2]["s"], issues[2]["x"][1] = 127, 127       # a step of 1008: clipped to 127
    seen = run_lane_group(dut, weights, [("update", issues)])
    expected, flags = [list(words) for words in weights], []
    for issue in issues:
        for j in range(3):
            if 8 + j < issue["nlanes"]:
                step, sat_step = nearest(issue["s"] * issue["x"][j], 4)
                total = weights[j][issue["addr"]] + step
                expected[j][issue["addr"]] = clip(total)
                flags.append(sat_step or clip(total) != total)
    assert seen["w"] == expected
    assert any(flags) and seen["overflow"] == 1


def test_lane_group_accumulates_gradients_and_applies_them():
    """A training group: ACCUMULATE adds ``s·x`` to each lane's gradient word, exactly (16
    bits; twice here, without touching W); APPLY then adds ``clip(nearest(-G >> 3))`` to each
    weight and clears G."""
    rng = np.random.default_rng(11)
    weights = rng.integers(-100, 100, (3, 8)).tolist()

    def accumulate():
        return [{"addr": a, "nlanes": 11, "s": int(rng.integers(-128, 128)),
                 "x": rng.integers(-128, 128, 3).tolist(), "first": True, "last": True}
                for a in range(8)]

    both = [accumulate(), accumulate()]
    g = [[sum(issues[a]["s"] * issues[a]["x"][j] for issues in both) for a in range(8)]
         for j in range(3)]
    operations = [("accumulate", issues) for issues in both]
    seen = run_lane_group(LaneGroup(**GROUP_BASE, acc_width=16, apply_shift=3), weights,
                          operations)
    assert seen["g"] == g and seen["w"] == weights
    applied = run_lane_group(LaneGroup(**GROUP_BASE, acc_width=16, apply_shift=3), weights,
                             [*operations, ("apply", [{**issue, "s": 0} for issue in both[0]])])
    assert applied["g"] == [[0] * 8 for _ in range(3)]
    assert applied["w"] == [[clip(weights[j][a] + nearest(-g[j][a], 3)[0]) for a in range(8)]
                            for j in range(3)]


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"count": 0}, ValueError, r"^count must be >= 1, not 0$"),
    ({"count": 9}, ValueError, r"^count must be at most GROUP \(8\), not 9$"),
    ({"lanes": 10}, ValueError, r"^lanes 8\.\.10 are not lanes of a tile of 10$"),
    ({"depth": 2.0}, TypeError, r"^depth must be an integer, not float$"),
    ({"rounding": "up"}, ValueError, r"^unknown rounding 'up'; choose one of"),
    ({"tied": True}, ValueError, r"^tied needs acc_width: the tied step is APPLY's$"),
    ({"grad": (4,)}, TypeError, r"^grad must be a pair of integers, not \(4,\)$"),
    ({"init": [[1]]}, ValueError, r"^init must hold 3 banks' words, not 1$"),
])
def test_lane_group_rejects_bad_parameters(changes, error, message):
    with pytest.raises(error, match=message):
        LaneGroup(**{**GROUP_BASE, **changes})


# --- the tied-kernel walk: the lane groups' banks emulated around it -------------------------

def tap_walker_reference(w, g, taps, shift, width, draws=None):
    """The tied SGD step on matrices ``w`` and ``g`` (lists of rows), from the definition:
    per tap, in tap order, the exact sum of ``g`` over its entries, ``-sum`` rounded once
    (nearest, or the next of ``draws`` added before the floor), added to the tap's value in
    row 0, clipped to ``width`` bits and written to every entry; then ``g`` cleared. Returns
    the new ``w``, the cleared ``g`` and how many steps saturated (the rounding or the sum)."""
    w = [list(row) for row in w]
    saturated = 0
    for t, columns in enumerate(taps):
        total = sum(g[i][j] for i, j in enumerate(columns))
        offset = draws[t] % (1 << shift) if draws is not None else 1 << (shift - 1)
        step = (-total + offset) >> shift
        new = w[0][columns[0]] + clip(step, width)
        saturated += clip(step, width) != step or clip(new, width) != new
        for i, j in enumerate(columns):
            w[i][j] = clip(new, width)
    return w, [[0] * len(row) for row in g], saturated


def run_tap_walker(dut, w, g, draw_values):
    """Start ``dut`` once, with banks holding ``w`` and ``g`` (matrices, banked as the tile
    banks them: column j in bank j mod lanes, row i's at address i·C + j div lanes); answer
    its reads two cycles later (random words in every other cycle), apply its writes and
    clears, offer ``draw_values`` one per cycle. Returns the banks as matrices, the cycle of
    ``done`` (start's cycle is 0), the draws it took and its overflow pulses."""
    lanes, chunks = dut.lanes, dut.chunks
    rows, cols = len(w), len(w[0])

    def banked(matrix):
        banks = [[0] * dut.depth for _ in range(lanes)]
        for i in range(rows):
            for j in range(cols):
                banks[j % lanes][i * chunks + j // lanes] = matrix[i][j]
        return banks

    wb, gb = banked(w), banked(g)
    rng = np.random.default_rng(1)
    seen = {"draws": [], "overflow": 0, "done": None}

    async def bench(ctx):
        reads = {}
        ctx.set(dut.start, 1)
        for cycle in range(dut.latency + 20):
            due = reads.pop(cycle - 2, None)
            for k in range(lanes):
                ctx.set(dut.w[k], due[0][k] if due else int(rng.integers(-128, 128)))
                ctx.set(dut.g[k], due[1][k] if due else int(rng.integers(-500, 500)))
            if hasattr(dut, "draw"):
                ctx.set(dut.draw, draw_values[cycle])
            if ctx.get(dut.read):
                address = ctx.get(dut.addr)
                reads[cycle] = ([wb[k][address] for k in range(lanes)],
                                [gb[k][address] for k in range(lanes)])
            for k in range(lanes):
                if ctx.get(dut.write) >> k & 1:
                    wb[k][ctx.get(dut.addr)] = ctx.get(dut.word)
            if ctx.get(dut.zero):
                for bank in gb:
                    bank[ctx.get(dut.zero_addr)] = 0
            if ctx.get(dut.advance):
                seen["draws"].append(draw_values[cycle])
            seen["overflow"] += ctx.get(dut.overflow)
            if ctx.get(dut.done):
                assert seen["done"] is None, "a second done"
                seen["done"] = cycle
            await ctx.tick()
            ctx.set(dut.start, 0)

    simulate(dut, bench)
    seen["w"] = [[wb[j % lanes][i * chunks + j // lanes] for j in range(cols)]
                 for i in range(rows)]
    seen["g"] = [[gb[j % lanes][i * chunks + j // lanes] for j in range(cols)]
                 for i in range(rows)]
    return seen


TAP_WALKER = {"weight_width": 8, "acc_width": 12, "shift": 3, "rounding": "nearest"}


@pytest.mark.parametrize(("kernel", "shape", "lanes", "rounding"), [
    (3, (3, 4), 5, "nearest"),      # the taps' writes take longer than clearing G
    (3, (3, 3), 9, "stochastic"),   # one chunk per row
    (1, (2, 3), 1, "nearest"),      # one lane, one tap: clearing G takes longer
])
def test_tap_walker_steps_each_tap_once_and_clears_g(kernel, shape, lanes, rounding):
    """Every entry of each tap ends up at that tap's new value (from its exact gradient sum,
    one rounding, its value in row 0), the rest of W is untouched, G is zero, and ``done``
    comes ``K·rows + max(K·(rows + 1), rows·C - 1) + 6`` cycles after ``start``, inclusive;
    a stochastic step takes one draw per tap, in tap order."""
    taps = tap_columns(kernel, shape)
    rows = cols = shape[0] * shape[1]
    rng = np.random.default_rng(rows + lanes)
    w = rng.integers(-100, 100, (rows, cols)).tolist()
    g = rng.integers(-40, 40, (rows, cols)).tolist()
    g[1][taps[0][1]] = 2000                   # tap 0's step saturates
    dut = TapWalker(taps=taps, rows=rows, cols=cols, lanes=lanes, draw_bits=5,
                    **{**TAP_WALKER, "rounding": rounding})
    draw_values = rng.integers(0, 32, 1000).tolist()
    seen = run_tap_walker(dut, w, g, draw_values)
    k, chunks = len(taps), -(-cols // lanes)
    assert seen["done"] + 1 == k * rows + max(k * (rows + 1), rows * chunks - 1) + 6
    assert seen["done"] + 1 == dut.latency
    draws = seen["draws"] if rounding == "stochastic" else None
    assert len(seen["draws"]) == (k if rounding == "stochastic" else 0)
    expected_w, expected_g, saturated = tap_walker_reference(w, g, taps.tolist(), 3, 8, draws)
    assert seen["w"] == expected_w
    assert seen["g"] == expected_g
    assert seen["overflow"] == saturated >= 1


def test_tap_walker_signature():
    dut = TapWalker(taps=[[0, 1, 2], [2, 0, 1]], rows=3, cols=3, lanes=2, **TAP_WALKER)
    members = dut.signature.members
    flows = {name: members[name].flow for name in members}
    assert flows == {"start": In, "done": Out, "read": Out, "addr": Out, "w": In, "g": In,
                     "write": Out, "word": Out, "zero": Out, "zero_addr": Out,
                     "advance": Out, "overflow": Out}
    assert (len(dut.w), len(dut.g), len(dut.write), len(dut.word)) == (2, 2, 2, 8)
    assert (dut.rows, dut.lanes, dut.chunks, dut.depth) == (3, 2, 2, 6)
    assert dut.taps.tolist() == [[0, 1, 2], [2, 0, 1]]
    dut.taps[0, 0] = 2          # a copy: the walker's taps stay
    assert dut.taps[0, 0] == 0
    with pytest.raises(AttributeError):
        dut.rows = 4
    drawing = TapWalker(taps=[[0]], rows=1, cols=1, lanes=1, draw_bits=4,
                        **{**TAP_WALKER, "rounding": "stochastic"})
    assert drawing.signature.members["draw"].flow == In and len(drawing.draw) == 4
    for walker in (dut, drawing):   # and they elaborate
        Fragment.get(walker, None)


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"rows": 0}, ValueError, r"^rows must be >= 1, not 0$"),
    ({"lanes": 4}, ValueError, r"^lanes must be between 1 and cols \(3\), not 4$"),
    ({"acc_width": 12.0}, TypeError, r"^acc_width must be an integer, not float$"),
    ({"draw_bits": True}, TypeError, r"^draw_bits must be an integer, not bool$"),
    ({"rounding": "up"}, ValueError, r"^unknown rounding 'up'; choose one of"),
    ({"rounding": "stochastic", "draw_bits": 2}, ValueError,
     r"^stochastic rounding of 3 bits needs draw_bits >= 3, not 2$"),
    ({"taps": [[0, 1]]}, ValueError,
     r"^taps must be integers of shape \(k², 3\), not int64 of shape \(1, 2\)$"),
    ({"taps": [[0, 1, 3]]}, ValueError, r"^taps must be columns 0\.\.2$"),
    ({"taps": [[0, 1, 2], [0, 2, 1]]}, ValueError,
     r"^taps must sit in distinct columns of each row$"),
])
def test_tap_walker_rejects_bad_parameters(changes, error, message):
    args = {"taps": [[0, 1, 2]], "rows": 3, "cols": 3, "lanes": 2, **TAP_WALKER, **changes}
    with pytest.raises(error, match=message):
        TapWalker(**args)


# --- the read-only table tile (writable=False): no weight-load path --------------------------

TABLE = {"rows": 3, "cols": 5, "lanes": 2, "weight_format": Format(8, 4),
         "input_format": Format(8, 4), "output_format": Format(8, 4)}


def test_read_only_tile_has_no_weight_write_path():
    """A table tile's lane groups have no load ports and their weight banks no write port;
    its interface lists neither LOAD_W nor UPDATE. A writable tile's have them."""
    weights = np.arange(15).reshape(3, 5) - 7
    for writable in (False, True):
        tile = CrossbarTile(**TABLE, weights=weights, writable=writable)
        assert tile.writable is writable
        group = elaborated(tile).submodules.lanes0
        assert group.writable is writable
        assert ("load_valid" in group.signature.members) is writable
        bank = elaborated(group).submodules.w0
        assert len(bank.write_ports) == int(writable)
        ops = {op["name"] for op in host_interface(tile).as_json()["operations"]}
        assert ({"LOAD_W", "UPDATE"} <= ops) is writable
        assert {"READ_W", "LOAD_X", "FORWARD", "TRANSPOSED", "READ_Y"} <= ops
    table = DftArray(2, data_format=Format(8, 4), twiddle_format=Format(8, 6))
    assert table.writable is False
    assert "load_valid" not in elaborated(table).submodules.lanes0.signature.members


def test_read_only_tile_keeps_its_table_and_computes_with_it():
    """LOAD_W and UPDATE end at once (done the cycle after start) and change nothing; READ_W
    streams the table; FORWARD and TRANSPOSED are ``nearest((W x) >> 4)`` and
    ``nearest((Wᵀ s) >> 4)``, clipped to 8 bits."""
    rng = np.random.default_rng(2)
    weights = rng.integers(-40, 40, (3, 5))
    x, s = rng.integers(-40, 40, 5).tolist(), rng.integers(-40, 40, 3).tolist()
    dut = CrossbarTile(**TABLE, weights=weights, writable=False)
    seen = {}

    async def bench(ctx):
        seen["ends"] = [await op_run(ctx, dut, op, max_cycles=8)
                        for op in (TileOp.LOAD_W, TileOp.UPDATE)]
        seen["table"] = await op_receive(ctx, dut, TileOp.READ_W, 15)
        await op_send(ctx, dut, TileOp.LOAD_X, x)
        await op_send(ctx, dut, TileOp.LOAD_S, s)
        await op_run(ctx, dut, TileOp.FORWARD)
        seen["forward"] = await op_receive(ctx, dut, TileOp.READ_Y, 3)
        await op_run(ctx, dut, TileOp.TRANSPOSED)
        seen["transposed"] = await op_receive(ctx, dut, TileOp.READ_Y, 5)

    simulate(dut, bench)
    assert seen["ends"] == [2, 2]
    assert seen["table"] == weights.ravel().tolist()
    assert seen["forward"] == [nearest(int(v), 4)[0] for v in weights @ np.array(x)]
    assert seen["transposed"] == [nearest(int(v), 4)[0] for v in weights.T @ np.array(s)]


def test_bias_words_are_the_initial_bias_and_load_bias_replaces_them():
    """A tile built with ``weights`` and ``bias_words``: READ_W streams both, FORWARD is
    ``nearest((W x + b·2^4) >> 4)`` with no load; after LOAD_BIAS, the loaded bias."""
    rng = np.random.default_rng(5)
    weights, bias = rng.integers(-30, 30, (3, 5)), rng.integers(-40, 40, 3)
    new_bias = rng.integers(-40, 40, 3)
    x = rng.integers(-30, 30, 5).tolist()
    dut = CrossbarTile(**TABLE, weights=weights, bias=True, bias_words=bias)
    seen = {}

    async def bench(ctx):
        seen["table"] = await op_receive(ctx, dut, TileOp.READ_W, 18)
        await op_send(ctx, dut, TileOp.LOAD_X, x)
        await op_run(ctx, dut, TileOp.FORWARD)
        seen["built_in"] = await op_receive(ctx, dut, TileOp.READ_Y, 3)
        await op_send(ctx, dut, TileOp.LOAD_BIAS, new_bias.tolist())
        await op_run(ctx, dut, TileOp.FORWARD)
        seen["loaded"] = await op_receive(ctx, dut, TileOp.READ_Y, 3)

    simulate(dut, bench)
    assert seen["table"] == weights.ravel().tolist() + bias.tolist()
    for key, b in (("built_in", bias), ("loaded", new_bias)):
        sums = weights @ np.array(x) + b * 16
        assert seen[key] == [max(-128, min(127, nearest(int(v), 4)[0])) for v in sums], key


@pytest.mark.parametrize(("changes", "message"), [
    ({"bias": False}, r"^bias_words need bias=True: a tile without a bias has no bias memory$"),
    ({"bias_words": [1, 2]}, r"^bias_words must be integers of shape \(3,\), not int64 of "
                             r"shape \(2,\)$"),
    ({"bias_words": [0.5, 0, 0]}, r"^bias_words must be integers of shape \(3,\), not "
                                  r"float64 of shape \(3,\)$"),
    ({"bias_words": [0, 128, 0]}, r"^bias_words must be words of Q4\.4 \(-128\.\.127\)$"),
])
def test_bad_bias_words_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        CrossbarTile(**{**TABLE, "bias": True, "bias_words": [1, 2, 3], **changes})


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"writable": 0}, TypeError, r"^writable must be a bool, not int$"),
    ({"writable": False, "weights": None}, ValueError,
     r"^a read-only tile \(writable=False\) needs weights: its banks hold only their initial "
     r"contents$"),
    ({"writable": False, "grad_format": Format(8, 4)}, ValueError,
     r"^a read-only tile \(writable=False\) has no training operations: grad_format must be "
     r"None$"),
])
def test_read_only_tile_rejects_bad_parameters(changes, error, message):
    with pytest.raises(error, match=message):
        CrossbarTile(**{**TABLE, "weights": np.zeros((3, 5), dtype=int), **changes})


def test_read_only_lane_group_has_no_gradient_banks():
    with pytest.raises(ValueError, match=r"^a read-only group \(writable=False\) has no "
                                         r"gradient banks: acc_width must be None$"):
        LaneGroup(**GROUP_BASE, writable=False, acc_width=16)
