"""The crossbar tile's device models on its training operations: the read models on the
products on gradients (FORWARD_G, TRANSPOSED_G, TRANSPOSED_STREAM_G: the DAC on gradient
words, the read noise and the ADC in the gradient format's geometry, one read-noise generator
shared with the plain products) and the write models on APPLY's writes (the states and the
programming noise, as ``FixedTile.apply_gradient`` writes), bit for bit against
:class:`xbarode.model.fixed_ops.FixedTile` with the same :class:`DeviceModel` and seed, on
Amaranth's simulator, on Verilator and on Icarus.
"""

import tempfile

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpers import Draws
from xbarode.hdl.tile import CrossbarTile, TileOp
from xbarode.model.device import DeviceModel
from xbarode.model.fixed import Format, Overflow, Rounder
from xbarode.model.fixed_ops import FixedTile
from xbarode.sim.tile_plan import TileParams, make_plan, model_results, run_plan_amaranth
from xbarode.units import UNITS, cosim


def check_plan(params, vectors, seed, simulator="amaranth"):
    with tempfile.TemporaryDirectory() as out:
        result = cosim(UNITS["tile"], params, vectors=vectors, seed=seed, simulator=simulator,
                       out=out)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["compared"] > 0
    return result


def grad_ops(plan):
    return [entry["op"] for vector in plan["vectors"] for entry in vector["ops"]
            if entry["op"] in ("forward_g", "transposed_g", "accumulate", "apply")]


# --- random sizes, formats and read models ---------------------------------------------------

NOISES = [0.0, 0.001, 0.05, 0.3, 1.0]


@settings(max_examples=4, deadline=None)
@given(rows=st.integers(1, 7), cols=st.integers(1, 7), data=st.data(),
       rounding=st.sampled_from(["floor", "nearest", "stochastic"]),
       seed=st.integers(0, 2**16))
# Draws: lanes, width, frac, grad_frac, grad_shift, dac_bits, adc_bits, adc_range shift,
# read_noise, states, program_noise, device_seed.
@example(rows=4, cols=5, data=Draws(2, 8, 4, 2, 0, 2, 2, 0, 0.0, None, 0.0, 1),
         rounding="nearest", seed=1).via("2-bit DAC and ADC on gradient words: clips at both "
                                         "ends")
@example(rows=3, cols=6, data=Draws(4, 12, 8, 5, 2, None, None, 10, 0.0, 4, 0.0, 7),
         rounding="floor", seed=2).via("the narrowest range: 2 code bits, lanes not dividing, "
                                       "4 states")
@example(rows=5, cols=3, data=Draws(3, 16, 12, 9, 1, 16, 16, 0, 0.05, 2**16, 0.0, 2),
         rounding="stochastic", seed=3).via("converters and states as wide as the words")
@example(rows=6, cols=7, data=Draws(3, 12, 6, 9, 2, 5, 6, 1, 1.0, 64, 1.0, 0xFFFFFFFF),
         rounding="stochastic", seed=4).via("full-range noises, the largest seed")
@example(rows=3, cols=4, data=Draws(1, 12, 4, 10, 0, 9, None, 2, 0.3, None, 0.05, 3),
         rounding="stochastic", seed=6).via("one lane: a word per cycle in TRANSPOSED_G, APPLY")
def test_random_models_on_training_operations_match_the_model(rows, cols, data, rounding,
                                                               seed):
    lanes = data.draw(st.integers(1, cols))
    width = data.draw(st.sampled_from([8, 12, 16]))
    frac = data.draw(st.integers(0, width - 1))
    grad_frac = data.draw(st.integers(0, width - 1))
    grad_shift = data.draw(st.integers(0, 2))
    bits = st.none() | st.integers(2, width + 1)
    device = DeviceModel(dac_bits=data.draw(bits), adc_bits=data.draw(bits),
                         adc_range=2.0 ** -data.draw(st.integers(0, width - 2)),
                         read_noise=data.draw(st.sampled_from(NOISES)),
                         states=data.draw(st.none() | st.sampled_from(
                             [4, 8, 64, 2 ** (width - 1), 2**width])),
                         program_noise=data.draw(st.sampled_from(NOISES)))
    device_seed = data.draw(st.integers(1, 2**32 - 1))
    params = TileParams(rows=rows, cols=cols, lanes=lanes, width=width, frac=frac,
                        rounding=rounding, eta_shift=2, device=device, device_seed=device_seed,
                        grad_frac=grad_frac, grad_shift=grad_shift, sgd_shift=1)
    assert set(grad_ops(make_plan(params, 4, seed))) == {"forward_g", "transposed_g",
                                                         "accumulate", "apply"}
    check_plan(params, vectors=4, seed=seed)


@pytest.mark.parametrize(("device", "changes"), [
    (DeviceModel(dac_bits=5), "forward_g"),
    (DeviceModel(adc_bits=5), "transposed_g"),
    (DeviceModel(adc_range=0.125), "forward_g"),
    (DeviceModel(read_noise=0.05), "transposed_g"),
    (DeviceModel(states=16), "apply"),
    (DeviceModel(program_noise=0.02), "apply"),
])
def test_each_model_changes_a_training_operation_and_the_tile_follows(device, changes):
    """Each model alone changes the model's answers to a training operation (so the
    comparison can fail), and the tile gives the changed answers, in the ideal tile's
    documented latencies (``rows·C + T + 7`` forward, ``rows·C + 7`` otherwise: the models add
    no cycle)."""
    args = {"rows": 6, "cols": 7, "lanes": 3, "width": 12, "frac": 8, "grad_frac": 6,
            "grad_shift": 1, "sgd_shift": 2}
    params, ideal = TileParams(**args, device=device), TileParams(**args)
    plan = make_plan(params, 4, 11)
    want, plain = model_results(params, plan), model_results(ideal, plan)
    changed = [entry["op"] for vector, a, b in zip(plan["vectors"], want, plain, strict=True)
               for entry, x, y in zip(vector["ops"], a, b, strict=True) if x != y]
    assert changes in changed
    got, cycles = run_plan_amaranth(params, plan)
    assert got == want
    walk = 6 * 3 + 7                     # rows·C + 7 with C = ceil(7 / 3) = 3
    assert cycles == {"forward_g": walk + 1, "forward": walk + 1, "transposed_g": walk,
                      "transposed": walk, "accumulate": walk, "apply": walk, "update": walk}


# --- clips by hand --------------------------------------------------------------------------

I8 = Format(8, 0)


def grad_tile(device, rows=2, cols=2, lanes=2, grad_format=I8):
    return TileParams(rows=rows, cols=cols, lanes=lanes, width=8, frac=0, rounding="nearest",
                      device=device, grad_frac=grad_format.frac)


def run_ops(params, weights, ops):
    plan = make_plan(params, 1, 0)
    plan["vectors"] = [{"weights": [int(w) for w in np.ravel(weights)], "ops": ops}]
    got, _ = run_plan_amaranth(params, plan)
    return got, model_results(params, plan)


@pytest.mark.parametrize(("x", "flag"), [(127, 1), (119, 0), (-128, 0)])
def test_a_dac_clip_of_a_gradient_word_raises_the_flag(x, flag):
    """A 4-bit DAC on 8-bit gradient words keeps multiples of 16, rounded half up: 119 → 112,
    while 127 → 128 does not fit (clipped to 112, flagged); -128 is a code."""
    expected = {127: 112, 119: 112, -128: -128}[x]
    ops = [{"op": "forward_g", "x": [x, 0]}, {"op": "transposed_g", "s": [0, x]}]
    got, model = run_ops(grad_tile(DeviceModel(dac_bits=4)), [[1, 0], [0, 1]], ops)
    assert got == model
    assert got[0][0] == {"out": [expected, 0], "overflow": flag}
    assert got[0][1] == {"out": [0, expected], "overflow": flag}


def test_the_adc_clips_gradient_products_at_both_ends():
    """adc_range 1/4 of an 8-bit gradient word: R = 32, 6-bit codes, clipped to [-32, 31]
    and flagged; 3 ADC bits: a step of 8 (round(20/8) = 3 → 24, round(-20/8) = -2 → -16,
    half up)."""
    weights = [[1, 1], [-1, -1], [1, 0], [-1, 0]]
    ops = [{"op": "forward_g", "x": [20, 20]}]
    for adc_bits, words in ((None, [31, -32, 20, -20]), (3, [24, -32, 24, -16])):
        device = DeviceModel(adc_range=0.25, adc_bits=adc_bits)
        got, model = run_ops(grad_tile(device, rows=4), weights, ops)
        assert got == model
        assert got[0][0] == {"out": words, "overflow": 1}


# --- the shared generator's order, with the streamed product ---------------------------------

def test_plain_and_gradient_products_share_one_generator_in_order():
    """A tile with side ports, a bias and distinct formats runs FORWARD, FORWARD_G,
    TRANSPOSED_STREAM_G, TRANSPOSED, TRANSPOSED_G, TRANSPOSED_STREAM and FORWARD_G again, with
    every read model on; each result and flag equals FixedTile's through the same sequence
    (one read-noise generator, drawing one noise per output word as the products run). The
    same products in another order give the model other answers: the order is checked."""
    from xbarode.sim.streams import op_receive, op_run, op_send, pulse, run_simulation, wait_for

    rows, cols, lanes = 5, 7, 3
    wf, xf, yf, gf = Format(12, 9), Format(12, 7), Format(12, 6), Format(10, 6)
    device = DeviceModel(dac_bits=7, adc_bits=8, adc_range=0.5, read_noise=0.1)
    rng = np.random.default_rng(3)
    weights = rng.integers(wf.min_int, wf.max_int + 1, (rows, cols))
    d = rng.integers(wf.min_int, wf.max_int + 1, rows)
    sequence = [("FORWARD", xf, cols), ("FORWARD_G", gf, cols),
                ("TRANSPOSED_STREAM_G", gf, rows), ("TRANSPOSED", xf, rows),
                ("TRANSPOSED_G", gf, rows), ("TRANSPOSED_STREAM", xf, rows),
                ("FORWARD_G", gf, cols)]
    operands = [rng.integers(fmt.min_int, fmt.max_int + 1, n) for _, fmt, n in sequence]
    dut = CrossbarTile(rows=rows, cols=cols, lanes=lanes, weight_format=wf, input_format=xf,
                       output_format=yf, grad_format=gf, rounding="stochastic", shift=1,
                       grad_shift=2, bias=True, side_ports=True, device=device,
                       device_seed=0xBEEF)
    got = []

    async def stream(ctx, op, values):
        ctx.set(dut.op, op)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for value in values.tolist():
            ctx.set(dut.s_in.valid, 1)
            ctx.set(dut.s_in.payload, value)
            await ctx.tick()
            ctx.set(dut.s_in.valid, 0)
            await ctx.tick()
        await wait_for(ctx, dut.done)

    async def testbench(ctx):
        await op_send(ctx, dut, TileOp.LOAD_W, weights.ravel().tolist())
        await op_send(ctx, dut, TileOp.LOAD_BIAS, d.tolist())
        for (name, _, _), words in zip(sequence, operands, strict=True):
            op = TileOp[name]
            if "STREAM" in name:
                await stream(ctx, op, words)
            else:
                await op_send(ctx, dut, TileOp.LOAD_X if "FORWARD" in name else TileOp.LOAD_S,
                              words.tolist())
                await op_run(ctx, dut, op)
            out = await op_receive(ctx, dut, TileOp.READ_Y,
                                   rows if "FORWARD" in name else cols)
            got.append((out, ctx.get(dut.overflow)))
            await pulse(ctx, dut.clear)

    run_simulation(dut, testbench)

    def model(order):
        overflow = Overflow()
        tile = FixedTile(weights, weight_format=wf, acc_width=48,
                         rounder=Rounder("stochastic"), overflow=overflow, device=device,
                         device_seed=0xBEEF)
        answers = []
        for k in order:
            name, fmt, _ = sequence[k]
            grad = name.endswith("_G")
            out_format, shift = (gf, 2) if grad else (yf, 1)
            words = operands[k][None]
            if "FORWARD" in name:
                out = tile.forward(words, fmt, out_format, shift=shift,
                                   bias=None if grad else d)
            else:
                out = tile.transposed(words, fmt, out_format, shift=shift)
            answers.append((out[0].tolist(), int(overflow.flag)))
            overflow.clear()
        return answers

    want = model(range(len(sequence)))
    assert got == want
    swapped = model([1, 0, *range(2, len(sequence))])
    assert [swapped[1], swapped[0], *swapped[2:]] != want


# --- the generated Verilog ------------------------------------------------------------------

@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_generated_verilog_with_device_models_on_gradients_matches_the_model(simulator):
    params = TileParams(rows=5, cols=6, lanes=4, width=16, frac=11, rounding="stochastic",
                        device=DeviceModel(dac_bits=6, adc_bits=7, adc_range=0.5,
                                           read_noise=0.05, states=256, program_noise=0.01),
                        device_seed=0x1234, grad_frac=12, grad_shift=1, sgd_shift=2)
    result = check_plan(params, vectors=3, seed=5, simulator=simulator)
    assert {"forward_g", "transposed_g", "accumulate", "apply"} <= set(result["cycles"])
