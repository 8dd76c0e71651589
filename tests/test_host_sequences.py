"""Random host sequences on the core and the crossbar tile (Amaranth simulator): operations
in any order — RUN before any weights, the training operations before LOAD_GRAD or on a core
without training, reads before any RUN, ``start`` while busy, op codes the unit lacks,
``clear`` and reset at random cycles — with random back-pressure on every stream.

Every cycle is checked against the handshake and reset rules of docs/interface.md, and every
word, flag and output against a reference that tracks what the host has loaded and computes
each result with the fixed-point model (tests/host_sequences.py). A unit that hangs fails
with ``OperationTimeout`` (the cycle limits of xbarode.sim.latency).
"""

import pytest
from fake_unit import FakeUnit
from host_sequences import (
    CoreReference,
    Expect,
    HostError,
    Reference,
    Step,
    TileReference,
    run_sequence,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st

from xbarode.hdl.core import Core, CoreOp
from xbarode.hdl.tile import TileOp
from xbarode.model.core_config import CoreConfig
from xbarode.model.fixed import ROUNDINGS
from xbarode.sim.latency import OperationTimeout
from xbarode.sim.tile_plan import TileParams

# --- strategies ---------------------------------------------------------------------------


def _maybe(low, high, none_weight):
    """An integer in [low, high], or None about ``none_weight`` of the time."""
    span = high - low + 1
    extra = int(span * none_weight / (1 - none_weight))
    return st.integers(low - extra, high).map(lambda k: k if k >= low else None)


def steps(codes, max_size=12):
    """Sequences of 3 to ``max_size`` steps: op codes (the unit's, weighted by ``codes``, or
    any of the 16), with back-pressure, a ``start`` while busy, a ``clear`` or a reset at a
    random cycle; and plain resets and clears between operations."""
    op = st.builds(Step, code=st.one_of(st.sampled_from(codes), st.integers(0, 15)),
                   seed=st.integers(0, 999), pressure=st.integers(0, 2),
                   busy_start=_maybe(1, 30, 0.6), busy_code=st.integers(0, 15),
                   clear_at=st.one_of(_maybe(0, 30, 0.7), st.just("done")),
                   reset_at=_maybe(1, 60, 0.8), idle=st.integers(0, 2))
    control = st.builds(Step, code=st.sampled_from(["reset", "clear"]))
    return st.lists(st.one_of(op, op, op, control), min_size=3, max_size=max_size)


#: The core's codes, weighted towards what makes a sequence reach its states (loads, RUN).
CORE_CODES = [0, 1, 2, 3, 4, 4, 5, 5, 6, 7, 8, 9, 10, 10, 11, 11, 12, 13, 14]
#: The tile's codes.
TILE_CODES = [0, 1, 2, 3, 4, 5, 6, 7, 7]


@st.composite
def core_configs(draw):
    """Small cores: a 2×2 or 3×3 image, 2–3 classes, 1–2 steps, with or without training,
    explicit or implicit Euler, any rounding."""
    image = draw(st.sampled_from([(2, 2), (3, 3)]))
    m = image[0] * image[1]
    return CoreConfig(image=image, classes=draw(st.integers(2, 3)),
                      steps=draw(st.integers(1, 2)), lanes=draw(st.integers(1, m)),
                      method=draw(st.sampled_from(["euler", "implicit_euler"])),
                      h=draw(st.sampled_from([0.25, 0.5])),
                      neumann_terms=draw(st.integers(0, 2)), max_iter=draw(st.integers(0, 3)),
                      tol=draw(st.integers(0, 2)), rounding=draw(st.sampled_from(ROUNDINGS)),
                      lfsr_seed=draw(st.integers(1, 2**32 - 1)),
                      training=draw(st.booleans()), lr=0.5, batch=draw(st.sampled_from([1, 2])))


@st.composite
def tile_params(draw):
    """Small tiles: up to 3×4, any lanes, with or without the read chain, any rounding."""
    rows, cols = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    return TileParams(rows=rows, cols=cols, lanes=draw(st.integers(1, cols)), width=16,
                      frac=12, rounding=draw(st.sampled_from(ROUNDINGS)),
                      eta_shift=draw(st.integers(0, 4)),
                      lfsr_seed=draw(st.integers(1, 2**32 - 1)),
                      read_chain=draw(st.booleans()))


# --- the pinned corners -------------------------------------------------------------------

A, B, C, D, IMAGE, RUN, LOGITS, STATE, STATUS, TRAJ, GRAD_IN, BACKWARD, APPLY, READ_GRAD, \
    WEIGHTS = (op.value for op in CoreOp)
EXPLICIT = CoreConfig(image=(2, 2), classes=2, steps=2, lanes=2, training=True, lr=0.5,
                      batch=2, rounding="stochastic")
IMPLICIT = CoreConfig(image=(2, 2), classes=3, steps=1, lanes=3, method="implicit_euler",
                      neumann_terms=1, max_iter=2, rounding="stochastic", training=True,
                      lr=0.5, batch=1)
INFERENCE = CoreConfig(image=(3, 3), classes=2, steps=1, lanes=4, rounding="nearest")
LOADS = [Step(A, seed=1), Step(B, seed=2), Step(C, seed=3), Step(D, seed=4),
         Step(IMAGE, seed=6, pressure=1)]
TRAIN = [*LOADS, Step(RUN), Step(LOGITS, pressure=2), Step(GRAD_IN, seed=7), Step(BACKWARD),
         Step(READ_GRAD, pressure=1), Step(APPLY), Step(WEIGHTS), Step(IMAGE, seed=9),
         Step(RUN), Step(LOGITS)]

CORE_CORNERS = {
    # RUN before anything is loaded: memories are zero at power-up.
    "run first": (INFERENCE, [Step(RUN), Step(LOGITS), Step(STATUS), Step(STATE), Step(TRAJ)]),
    # The training operations on a core without them, and reads before any RUN.
    "training codes on an inference core": (INFERENCE, [
        Step(READ_GRAD), Step(GRAD_IN), Step(BACKWARD), Step(APPLY), Step(15), Step(WEIGHTS),
        Step(LOGITS), Step(STATUS)]),
    # The training operations before LOAD_GRAD and before any RUN.
    "read grad, backward and apply untrained": (EXPLICIT, [
        Step(READ_GRAD), Step(BACKWARD), Step(APPLY), Step(READ_GRAD), Step(WEIGHTS)]),
    # start while busy, in the middle of RUN and in its done cycle's neighbourhood.
    "start while busy during RUN": (EXPLICIT, [
        *LOADS, Step(RUN, busy_start=3, busy_code=RUN), Step(LOGITS),
        Step(RUN, busy_start=1, busy_code=15), Step(READ_GRAD, busy_start=5, busy_code=APPLY),
        Step(STATE)]),
    # A reset in the middle of a load keeps the other memories.
    "reset during a load": (EXPLICIT, [
        *LOADS, Step(C, seed=8, reset_at=4), Step(WEIGHTS), Step(C, seed=3), Step(RUN),
        Step(LOGITS)]),
    # clear in the done cycle of a saturating RUN: the flag is high there, low after.
    "clear in the done cycle": (INFERENCE, [
        Step(A, seed=5), Step(B, seed=10), Step(C, seed=15), Step(IMAGE, seed=20),
        Step(RUN, clear_at="done"), Step(RUN), Step(RUN, clear_at=0), Step(LOGITS)]),
    # The whole training flow, implicit Euler, stochastic rounding; BACKWARD again, a RUN
    # after it without LOAD_IMAGE (the last image again), a reset (which re-seeds the LFSRs).
    "training flow": (IMPLICIT, [*TRAIN, Step(BACKWARD), Step(RUN), Step(LOGITS),
                                 Step("reset"), Step(IMAGE, seed=6), Step(RUN), Step(TRAJ)]),
    "training flow, explicit": (EXPLICIT, TRAIN),
    # LOAD_IMAGE between a RUN and its BACKWARD (the next image arrives while the host
    # differentiates this one): BACKWARD differentiates the RUN; the next RUN runs the image.
    "load image before backward": (EXPLICIT, [
        *LOADS, Step(RUN), Step(GRAD_IN, seed=7), Step(IMAGE, seed=9), Step(BACKWARD),
        Step(READ_GRAD), Step(RUN), Step(LOGITS), Step(TRAJ)]),
}


def _pin(corners):
    def decorate(test):
        for config, sequence in corners.values():
            test = example(config, sequence)(test)
        return test
    return decorate


@settings(max_examples=12, deadline=None)
@given(core_configs(), steps(CORE_CODES))
@_pin(CORE_CORNERS)
def test_core_host_sequences(config, sequence):
    run_sequence(Core(config), CoreReference(config), sequence)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(core_configs(), steps(CORE_CODES, max_size=24))
def test_core_host_sequences_many(config, sequence):
    run_sequence(Core(config), CoreReference(config), sequence)


W, READ_W, X, S, FORWARD, TRANSPOSED, UPDATE, READ_Y = (op.value for op in list(TileOp)[:8])
SMALL = TileParams(rows=2, cols=3, lanes=2, width=16, frac=12, rounding="stochastic")
CHAIN = TileParams(rows=2, cols=3, lanes=3, width=16, frac=12, rounding="nearest",
                   read_chain=True)
TILE_LOADS = [Step(W, seed=1), Step(X, seed=2, pressure=2), Step(S, seed=3)]
TILE_CORNERS = {
    # READ_Y before any product, and after reset (which selects TRANSPOSED's result).
    "read y first and after reset": (SMALL, [
        Step(READ_Y), *TILE_LOADS, Step(TRANSPOSED), Step(FORWARD), Step(READ_Y), Step("reset"),
        Step(READ_Y), Step(FORWARD), Step(READ_Y)]),
    "start while busy during FORWARD": (SMALL, [
        *TILE_LOADS, Step(FORWARD, busy_start=2, busy_code=FORWARD),
        Step(UPDATE, busy_start=1, busy_code=READ_W), Step(READ_W, busy_start=3)]),
    "codes the tile alone lacks": (CHAIN, [*(Step(code) for code in range(8, 16)),
                                           Step(READ_W), Step(READ_Y)]),
    "reset during a load": (CHAIN, [*TILE_LOADS, Step(W, seed=4, reset_at=3), Step(READ_W),
                                    Step(FORWARD), Step(READ_Y, pressure=1)]),
    "clear in the done cycle": (SMALL, [
        Step(W, seed=5), Step(X, seed=10), Step(FORWARD, clear_at="done"), Step(READ_Y),
        Step(UPDATE, clear_at=2), Step(READ_W)]),
}


@settings(max_examples=30, deadline=None)
@given(tile_params(), steps(TILE_CODES))
@_pin(TILE_CORNERS)
def test_tile_host_sequences(params, sequence):
    run_sequence(params.component(), TileReference(params), sequence)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None)
@given(tile_params(), steps(TILE_CODES, max_size=24))
def test_tile_host_sequences_many(params, sequence):
    run_sequence(params.component(), TileReference(params), sequence)


@pytest.mark.parametrize(("corner", "read", "skipped"), [
    # The whole training flow is known: every word read is compared (logits, gradient sums
    # and ∂L/∂z_0, weights), none is left unspecified.
    ("training flow, explicit", 2 + 46 + 42 + 2, 0),
    # After a reset in the middle of LOAD_C, C holds the words that moved and its old words.
    ("reset during a load", 42 + 2, 0),
    # The RUN after the second BACKWARD has no LOAD_IMAGE before it: it runs the last image
    # again, every word known.
    ("training flow", 3 + 51 + 47 + 3 + 3 + 8, 0),
    # BACKWARD after a LOAD_IMAGE: the gradient sums and ∂L/∂z_0 of the RUN before it.
    ("load image before backward", 2 + 46 + 2 + 27, 0),
])
def test_pinned_sequences_compare_what_they_read(corner, read, skipped):
    config, sequence = CORE_CORNERS[corner]
    stats = run_sequence(Core(config), CoreReference(config), sequence)
    assert stats["steps"] == len(sequence)
    assert stats["skipped"] == skipped
    # Besides the words: the flag after every operation and in its done cycle, and RUN's
    # three outputs in its done cycle.
    assert stats["compared"] >= read


# --- the host catches a broken unit ---------------------------------------------------------

class FakeReference(Reference):
    """tests/fake_unit.py's documented behaviour: LOAD (0) takes 3 words, READ (1) gives
    1, 2, 3, codes 2–7 run for 5 cycles, codes 8–15 end at once."""

    def reset(self):
        self.overflow = 0

    def codes(self):
        return {0: ("load", 3), 1: ("read", 3), **{k: ("compute", 0) for k in range(2, 8)}}

    def words(self, code, rng, full):
        return [7, 8, 9]

    def expect(self, code, words=None):
        kind, count = self.codes().get(code, ("none", 0))
        return Expect(kind, count, words=[1, 2, 3] if kind == "read" else words)

    def cycle_limit(self, code):
        return 16


@pytest.mark.parametrize(("bug", "sequence", "error", "message"), [
    (None, [Step(0), Step(1, pressure=2), Step(2, busy_start=2), Step(9), Step("reset")],
     None, None),
    ("surplus", [Step(1)], HostError, r"busy 1, done 0 in the cycle after 1$"),
    ("no_done", [Step(0)], HostError, r"no done in the cycle the last of 3 words moved$"),
    ("early_done", [Step(1)], HostError, r"done after 2 of 3 words$"),
    ("hang", [Step(2)], OperationTimeout, r"op 2 did not end within 16 cycles$"),
    ("restart", [Step(2, busy_start=2)], HostError, r"busy 1, done 0 in the cycle after 2$"),
    ("busy_low", [Step(2)], HostError, r"busy low in cycle 4 after start, before done$"),
    ("idle_ready", [Step(0)], HostError, r"in the start cycle busy 0, done 0, i.ready 1"),
    ("slow_unknown", [Step(9)], HostError,
     r"an op code the unit does not have ended in cycle 2$"),
])
def test_host_catches_a_broken_unit(bug, sequence, error, message):
    dut = FakeUnit(bug=bug, unknown=8)
    if error is None:
        assert run_sequence(dut, FakeReference(), sequence)["steps"] == len(sequence)
        return
    with pytest.raises(error, match=message):
        run_sequence(dut, FakeReference(), sequence)
