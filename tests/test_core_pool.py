"""The pool before the head (hdl/core_pool.py, ``PoolUnit``) against its model twin,
:class:`~xbarode.model.fixed_bank.FixedPool`, word for word and draw for draw: the testbench
plays the state banks (a chunk one cycle after its address) and records tile C's inputs."""

import numpy as np
import pytest
from amaranth import Fragment
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.test_core_parts import simulate
from xbarode.hdl.core_pool import PoolUnit
from xbarode.model.fixed import Format, Overflow, Rounder
from xbarode.model.fixed_bank import FixedPool

STATE = Format(16, 11)


def run_pool(shape, channels, factor, lanes, lanes_c, rounding, seed, words):
    """The pool unit's features (in C's order), saturation count and latency for the state
    ``words`` (c·H·W integers)."""
    dut = PoolUnit(height=shape[0], width=shape[1], channels=channels, factor=factor,
                   lanes=lanes, lanes_c=lanes_c, state_width=STATE.width, rounding=rounding,
                   lfsr_seed=seed)
    features = dut.features
    got = {}
    result = {"saturated": 0, "cycles": None}

    async def bench(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        addr = None
        for cycle in range(1, len(words) + 20):
            if addr is not None:     # the chunk at the address of the cycle before
                for k in range(lanes):
                    index = addr * lanes + k
                    ctx.set(dut.rd_data[k], int(words[index]) if index < len(words) else 0)
            for t in range(lanes_c):
                if ctx.get(dut.c_x_en[t]):
                    index = ctx.get(dut.c_x_addr) * lanes_c + t
                    assert index not in got, f"feature {index} written twice"
                    got[index] = ctx.get(dut.c_x_data[t])
            result["saturated"] += ctx.get(dut.saturated)
            if ctx.get(dut.done):
                result["cycles"] = cycle
                break
            addr = ctx.get(dut.rd_addr)
            await ctx.tick()

    simulate(dut, bench)
    assert sorted(got) == list(range(features))
    return [got[f] for f in range(features)], result["saturated"], result["cycles"]


def model_pool(shape, channels, factor, rounding, seed, words):
    overflow = Overflow()
    pool = FixedPool(factor, channels, shape, rounder=Rounder(rounding, seed),
                     overflow=overflow)
    out = pool.forward(np.asarray(words)[None, :], STATE)[0]
    return out.tolist(), overflow.counts.get("pool", 0)


@settings(max_examples=8, deadline=None)
@given(data=st.data(), rounding=st.sampled_from(["floor", "nearest", "stochastic"]),
       seed=st.integers(1, 2**32 - 1))
@example(data=None, rounding="stochastic", seed=0xACE1ACE1).via("3×3 blocks, a reciprocal")
def test_pool_matches_the_model(data, rounding, seed):
    if data is None:       # the pinned example: p = 3 (ρ a 17-bit reciprocal), odd lanes
        shape, channels, factor, lanes, lanes_c = (6, 3), 2, 3, 5, 1
    else:
        factor = data.draw(st.sampled_from([2, 3, 4]))
        shape = (factor * data.draw(st.integers(1, 3)), factor * data.draw(st.integers(1, 3)))
        channels = data.draw(st.integers(1, 3))
        lanes = data.draw(st.integers(1, 8))
        lanes_c = data.draw(st.sampled_from([d for d in range(1, lanes + 1) if lanes % d == 0]))
    m = channels * shape[0] * shape[1]
    words = np.random.default_rng(seed).integers(-2**12, 2**12, m)
    got, saturated, cycles = run_pool(shape, channels, factor, lanes, lanes_c, rounding, seed,
                                      words)
    expected, model_saturated = model_pool(shape, channels, factor, rounding, seed, words)
    assert got == expected
    assert saturated == model_saturated == 0
    assert cycles == m + 1      # the documented latency


def test_pool_is_the_average_within_the_rounding():
    # An outside reference: numpy's mean of every block, within half an LSB (nearest).
    shape, channels, factor = (4, 6), 2, 2
    words = np.random.default_rng(3).integers(-2**13, 2**13, channels * 24)
    got, _, _ = run_pool(shape, channels, factor, 3, 3, "nearest", 1, words)
    blocks = words.reshape(channels, 2, 2, 3, 2).mean(axis=(2, 4)).ravel()
    assert np.all(np.abs(np.array(got) - blocks) <= 0.5)


@pytest.mark.parametrize("factor", [2, 3, 6])
@pytest.mark.parametrize("rounding", ["floor", "nearest", "stochastic"])
def test_extreme_blocks_stay_in_range(factor, rounding):
    # The corners: a block of the most negative word and one of the largest. An average of
    # words cannot leave their range, and ρ/2^R never exceeds 1/p² (pool_reciprocal rounds
    # these reciprocals down), so nothing saturates; the words are the model's and within
    # one LSB of the extremes.
    shape = (factor, 2 * factor)
    words = np.tile(np.repeat([-2**15, 2**15 - 1], factor), factor)
    got, saturated, _ = run_pool(shape, 1, factor, 4, 2, rounding, 5, words)
    expected, model_saturated = model_pool(shape, 1, factor, rounding, 5, words)
    assert got == expected
    assert saturated == model_saturated == 0
    assert -2**15 <= got[0] <= -2**15 + 1 and 2**15 - 2 <= got[1] <= 2**15 - 1


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"factor": 1}, ValueError, r"^factor must be >= 2, not 1$"),
    ({"factor": 3}, ValueError, r"^factor 3 does not divide the 4x6 image$"),
    ({"rounding": "up"}, ValueError,
     r"^rounding must be one of \['floor', 'nearest', 'stochastic'\], not 'up'$"),
    ({"channels": 0}, ValueError, r"^channels must be >= 1, not 0$"),
])
def test_bad_arguments_are_refused(kwargs, error, message):
    args = {"height": 4, "width": 6, "channels": 2, "factor": 2, "lanes": 3, "lanes_c": 3,
            "state_width": 16, "rounding": "nearest", "lfsr_seed": 1} | kwargs
    with pytest.raises(error, match=message):
        PoolUnit(**args)


def test_parameters_are_read_only():
    unit = PoolUnit(height=4, width=6, channels=2, factor=2, lanes=3, lanes_c=3,
                    state_width=16, rounding="nearest", lfsr_seed=1)
    Fragment.get(unit, None)
    assert (unit.factor, unit.features) == (2, 12)
    with pytest.raises(AttributeError):
        unit.factor = 3
