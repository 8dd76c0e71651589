"""The crossbar tile's device models (hdl/device.py, ``CrossbarTile(device=...)``): the input
DAC, the ADC's clip and resolution, the read noise, the conductance states and the programming
noise, bit for bit against :class:`xbarode.model.fixed_ops.FixedTile` with the same
:class:`DeviceModel` on every simulator, the clips raising the flag, and a tile without a
device unchanged.
"""

import tempfile

import numpy as np
import pytest
from amaranth import Module, Signal, signed
from amaranth.back import rtlil
from amaranth.sim import Simulator
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpers import Draws, last_json, run
from xbarode.hdl.device import adc_narrow, dac, read_noise
from xbarode.hdl.tile import CrossbarTile
from xbarode.model.device import DeviceModel
from xbarode.model.fixed import Format
from xbarode.sim.tile_plan import TileParams, make_plan, model_results
from xbarode.units import UNITS, cosim

F16 = Format(16, 12)


def documented_latency(op, rows, cols, lanes):
    """CrossbarTile's documented latency (class notes): ``rows·C + T + 7`` forward,
    ``rows·C + 7`` otherwise; the device adds no cycle."""
    chunks = -(-cols // lanes)
    tree = (max(lanes - 1, 0).bit_length() + 1) // 2
    return rows * chunks + (tree if op == "forward" else 0) + 7


def check_plan(params, vectors, seed, simulator="amaranth"):
    with tempfile.TemporaryDirectory() as out:
        result = cosim(UNITS["tile"], params, vectors=vectors, seed=seed, simulator=simulator,
                       out=out)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["compared"] > 0
    return result


def run_ops(params, weights, ops):
    """A hand-made plan of one vector: its results on the Amaranth simulator and the model's."""
    plan = make_plan(params, 1, 0)
    plan["vectors"] = [{"weights": [int(w) for w in np.ravel(weights)], "ops": ops}]
    result = cosim_plan(params, plan)
    return result, model_results(params, plan)


def cosim_plan(params, plan):
    from xbarode.sim.tile_plan import run_plan_amaranth

    got, _ = run_plan_amaranth(params, plan)
    return got


# --- bit for bit on random sizes and models -----------------------------------------------------

NOISES = [0.0, 0.001, 0.05, 0.3, 1.0]


@settings(max_examples=4, deadline=None)
@given(rows=st.integers(1, 7), cols=st.integers(1, 7), data=st.data(),
       rounding=st.sampled_from(["floor", "nearest", "stochastic"]),
       seed=st.integers(0, 2**16))
# Draws: lanes, width, frac, dac_bits, adc_bits, adc_range shift, read_noise, states,
# program_noise, device_seed.
@example(rows=4, cols=5, data=Draws(2, 8, 4, 2, 2, 0, 0.0, None, 0.0, 1), rounding="nearest",
         seed=1).via("2-bit DAC and ADC: clips at both ends")
@example(rows=3, cols=6, data=Draws(6, 12, 8, None, None, 10, 0.0, None, 0.0, 7),
         rounding="floor", seed=2).via("the narrowest range: 2 code bits")
@example(rows=5, cols=3, data=Draws(3, 16, 12, 16, 16, 0, 0.0, 2**16, 0.0, 2),
         rounding="stochastic", seed=3).via("converters and states as wide as the words")
@example(rows=6, cols=7, data=Draws(3, 12, 6, 5, 6, 1, 1.0, 4, 1.0, 0xFFFFFFFF),
         rounding="stochastic", seed=4).via("full-range noises, 4 states, the largest seed")
@example(rows=2, cols=4, data=Draws(4, 16, 15, None, None, 0, 0.001, None, 0.0, 1),
         rounding="nearest", seed=5).via("read noise alone, below an LSB mostly")
@example(rows=3, cols=4, data=Draws(1, 12, 4, 9, None, 2, 0.3, 64, 0.05, 3),
         rounding="stochastic", seed=6).via("one lane: a word per cycle in TRANSPOSED, UPDATE")
@example(rows=4, cols=6, data=Draws(3, 8, 3, None, None, 0, 0.0, None, 0.3, 5),
         rounding="floor", seed=7).via("programming noise alone")
def test_random_devices_match_the_model(rows, cols, data, rounding, seed):
    lanes = data.draw(st.integers(1, cols))
    width = data.draw(st.sampled_from([8, 12, 16]))
    frac = data.draw(st.integers(0, width - 1))
    bits = st.none() | st.integers(2, width + 1)
    device = DeviceModel(dac_bits=data.draw(bits), adc_bits=data.draw(bits),
                         adc_range=2.0 ** -data.draw(st.integers(0, width - 2)),
                         read_noise=data.draw(st.sampled_from(NOISES)),
                         states=data.draw(st.none() | st.sampled_from(
                             [4, 8, 64, 2 ** (width - 1), 2**width])),
                         program_noise=data.draw(st.sampled_from(NOISES)))
    device_seed = data.draw(st.integers(1, 2**32 - 1))
    params = TileParams(rows=rows, cols=cols, lanes=lanes, width=width, frac=frac,
                        rounding=rounding, eta_shift=2, device=device, device_seed=device_seed)
    check_plan(params, vectors=4, seed=seed)


@pytest.mark.parametrize("device", [
    DeviceModel(dac_bits=5),
    DeviceModel(adc_bits=6),
    DeviceModel(adc_range=0.25),
    DeviceModel(read_noise=0.02),
    DeviceModel(states=16),
    DeviceModel(program_noise=0.02),
])
def test_each_model_changes_the_answer_and_the_tile_follows(device):
    """Each model alone changes the model's answer to the plan (so the comparison above can
    fail), and the tile gives the changed answer."""
    params = TileParams(rows=6, cols=7, lanes=3, width=12, frac=8, rounding="nearest",
                        device=device)
    ideal = TileParams(rows=6, cols=7, lanes=3, width=12, frac=8, rounding="nearest")
    plan = make_plan(params, 4, 11)
    assert model_results(params, plan) != model_results(ideal, plan)
    check_plan(params, vectors=4, seed=11)


def test_noise_seeds_give_different_draws_and_the_tile_follows_each():
    device = DeviceModel(read_noise=0.05)
    answers = []
    for device_seed in (1, 2):
        params = TileParams(rows=4, cols=5, lanes=5, width=16, frac=12, device=device,
                            device_seed=device_seed)
        check_plan(params, vectors=2, seed=0)
        answers.append(model_results(params, make_plan(params, 2, 0)))
    assert answers[0] != answers[1]


# --- the flag: clips by hand ----------------------------------------------------------------

I8 = Format(8, 0)


def params8(device, rows=2, cols=2, lanes=2):
    return TileParams(rows=rows, cols=cols, lanes=lanes, width=8, frac=0, rounding="nearest",
                      device=device)


@pytest.mark.parametrize(("x", "flag"), [(127, 1), (119, 0), (-128, 0)])
def test_a_dac_clip_raises_the_flag(x, flag):
    """A 4-bit DAC on 8-bit words keeps multiples of 16, rounded half up: 119 → 112, while
    127 → 128 does not fit (clipped to 112, flagged); -128 is a code."""
    expected = {127: 112, 119: 112, -128: -128}[x]
    ops = [{"op": "forward", "x": [x, 0]}, {"op": "transposed", "s": [0, x]}]
    got, model = run_ops(params8(DeviceModel(dac_bits=4)), [[1, 0], [0, 1]], ops)
    assert got == model
    assert got[0][0] == {"out": [expected, 0], "overflow": flag}
    assert got[0][1] == {"out": [0, expected], "overflow": flag}


def test_the_update_takes_its_operands_without_the_dac():
    """UPDATE's s xᵀ is the plain product, DAC or not: s = x = 127 with eta_shift 7 steps
    each weight by round(127·127/128) = 126, without a flag."""
    params = TileParams(rows=2, cols=2, lanes=2, width=8, frac=0, rounding="nearest",
                        eta_shift=7, device=DeviceModel(dac_bits=4))
    got, model = run_ops(params, [[0, 0], [0, 0]],
                         [{"op": "update", "x": [127, 0], "s": [127, 0]}])
    assert got == model
    assert got[0][0] == {"out": [126, 0, 0, 0], "overflow": 0}


@pytest.mark.parametrize(("adc_bits", "words"), [
    # adc_range 1/4 of an 8-bit word: R = 32, codes of 6 bits, clipped to [-32, 31].
    (None, [31, -32, 20, -20]),
    # 3 code bits over the range: a step of 8, codes -4..3 (round(20/8) = 3 → 24,
    # round(-20/8) = -2 → -16 half up).
    (3, [24, -32, 24, -16]),
])
def test_the_adc_clips_at_both_ends_and_raises_the_flag(adc_bits, words):
    device = DeviceModel(adc_range=0.25, adc_bits=adc_bits)
    weights = [[1, 1], [-1, -1], [1, 0], [-1, 0]]
    ops = [{"op": "forward", "x": [20, 20]}, {"op": "forward", "x": [20, 3]},
           {"op": "transposed", "s": [1, 0, 0, 0]}]
    got, model = run_ops(params8(device, rows=4), weights, ops)
    assert got == model
    assert got[0][0] == {"out": words, "overflow": 1}
    # 23, -23, 20, -20 are in the range; 3 code bits round them to steps of 8.
    in_range = [23, -23, 20, -20] if adc_bits is None else [24, -24, 24, -16]
    assert got[0][1] == {"out": in_range, "overflow": 1}      # sticky since the first
    # Wᵀ s is W's first row, [1, 1]: below half a step of 8 with 3 code bits.
    assert got[0][2]["out"] == ([1, 1] if adc_bits is None else [0, 0])


def test_the_adc_range_edge_is_not_a_clip():
    """The largest word inside the range (R − 1 = 31 at adc_range 1/4) passes, unflagged;
    −R = −32 too."""
    got, model = run_ops(params8(DeviceModel(adc_range=0.25)), [[1, 0], [0, 1]],
                         [{"op": "forward", "x": [31, -32]}])
    assert got == model
    assert got[0][0] == {"out": [31, -32], "overflow": 0}


@pytest.mark.parametrize(("weights", "flag"), [
    ([[37, -128], [127, 8]], 1),
    ([[37, -128], [-9, 8]], 0),
])
def test_load_w_snaps_to_the_states_and_flags_a_clip(weights, flag):
    """16 states of an 8-bit word: multiples of 16 rounded to nearest (half up), 37 → 32,
    8 → 16, -9 → -16; 127 rounds to 128, past the top state 112 (clipped, flagged)."""
    states = {37: 32, -128: -128, 127: 112, 8: 16, -9: -16}
    ops = [{"op": "forward", "x": [1, 0]}, {"op": "forward", "x": [0, 1]}]
    got, model = run_ops(params8(DeviceModel(states=16)), weights, ops)
    assert got == model
    held = [[states[w] for w in row] for row in weights]
    assert got[0][0] == {"out": [held[0][0], held[1][0]], "overflow": flag}
    assert got[0][1] == {"out": [held[0][1], held[1][1]], "overflow": flag}


def test_update_writes_a_state():
    """UPDATE's new weight 3·5 = 15 is written as the nearest of 16 states, 16."""
    params = TileParams(rows=2, cols=2, lanes=2, width=8, frac=0, rounding="nearest",
                        eta_shift=0, device=DeviceModel(states=16))
    got, model = run_ops(params, [[0, 0], [0, 0]],
                         [{"op": "update", "x": [5, 0], "s": [3, 0]}])
    assert got == model
    assert got[0][0] == {"out": [16, 0, 0, 0], "overflow": 0}


# --- the parts -------------------------------------------------------------------------------

def run_comb(build, inputs):
    """Drive a combinational block's inputs with each assignment of ``inputs`` (a list of
    dicts of signal to value); returns the outputs per assignment."""
    m = Module()
    ports, outputs = build(m)
    seen = []

    async def testbench(ctx):
        for values in inputs:
            for name, value in values.items():
                ctx.set(ports[name], value)
            seen.append([ctx.get(out) for out in outputs])

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
    return seen


@settings(max_examples=30, deadline=None)
@given(draws=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=8),
       amplitude=st.integers(0, 113512), exponent=st.integers(-30, 12))
@example(draws=[0, 2**32 - 1, 0x01FF00FF], amplitude=113512, exponent=-24)
@example(draws=[0x80808080, 0x7F7F7F7F], amplitude=1, exponent=-1)
def test_read_noise_is_the_scaled_byte_sum(draws, amplitude, exponent):
    """``G = b0 + b1 + b2 + b3 − 510``, then ``G·a·2^e`` rounded half up (docs/device.md)."""
    def build(m):
        draw = Signal(32)
        return {"draw": draw}, [read_noise(m, draw, amplitude, exponent)]

    got = run_comb(build, [{"draw": d} for d in draws])
    for d, (value,) in zip(draws, got, strict=True):
        g = sum((d >> (8 * k)) & 0xFF for k in range(4)) - 510
        exact = g * amplitude * 2.0 ** exponent
        assert value == (int(exact) if exponent >= 0 else int(np.floor(exact + 0.5)))


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.integers(-128, 127), min_size=1, max_size=8),
       bits=st.integers(2, 7))
@example(values=[127, -128, 0, -1], bits=2)
def test_dac_rounds_half_up_and_saturates(values, bits):
    drop = 8 - bits

    def build(m):
        v = Signal(signed(8))
        word, sat = dac(m, v, drop, bits)
        return {"v": v}, [word, sat]

    for v, (word, sat) in zip(values, run_comb(build, [{"v": v} for v in values]),
                              strict=True):
        code = int(np.floor((v + 2 ** (drop - 1)) / 2**drop))
        top = 2 ** (bits - 1) - 1
        assert (word, sat) == (min(code, top) * 2**drop, int(code > top))


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.integers(-2**20, 2**20), min_size=1, max_size=8),
       noises=st.lists(st.integers(-2**12, 2**12), min_size=8, max_size=8),
       shift=st.integers(0, 6), step=st.integers(0, 4), code_bits=st.integers(2, 8))
def test_adc_narrow_adds_the_noise_rounds_and_clips(values, noises, shift, step, code_bits):
    """Nearest rounding of ``acc + noise`` by ``shift + step`` bits, clipped to the code's
    signed range, times ``2^step``."""
    width = code_bits + step + 2

    def build(m):
        acc, noise = Signal(signed(22)), Signal(signed(14))
        def offset(k):
            return 1 << (k - 1) if k > 0 else 0

        word, sat = adc_narrow(m, acc, shift=shift, width=width, adc=(step, code_bits),
                               offset=offset, noise=noise)
        return {"acc": acc, "noise": noise}, [word, sat]

    inputs = [{"acc": v, "noise": n} for v, n in zip(values, noises, strict=False)]
    for case, (word, sat) in zip(inputs, run_comb(build, inputs), strict=True):
        total = case["acc"] + case["noise"]
        k = shift + step
        code = (total + (1 << (k - 1) if k else 0)) >> k
        lo, hi = -(2 ** (code_bits - 1)), 2 ** (code_bits - 1) - 1
        assert (word, sat) == (min(max(code, lo), hi) * 2**step, int(not lo <= code <= hi))


# --- parameters ----------------------------------------------------------------------------

def tile(**changes):
    base = {"rows": 4, "cols": 4, "lanes": 2, "weight_format": F16, "input_format": F16,
            "output_format": F16}
    return CrossbarTile(**{**base, **changes})


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"device": "adc"}, TypeError, r"^device must be a DeviceModel or None, not str$"),
    ({"device": DeviceModel(read_noise=0.1), "device_seed": 0}, ValueError,
     r"^LFSR seed must be a non-zero 32-bit integer, not 0$"),
    ({"device": DeviceModel(pulses=16), "weights": np.zeros((4, 4), dtype=int)}, ValueError,
     r"^the RTL tile's pulsed updates \(pulses\) write the weights: give no initial "
     r"weights, and a writable tile$"),
    ({"device": DeviceModel(states=16), "weights": np.zeros((4, 4), dtype=int)}, ValueError,
     r"^the device's write models \(states, program_noise\) program the words LOAD_W and "
     r"UPDATE write: give no initial weights, and a writable tile$"),
    ({"device": DeviceModel(program_noise=0.1), "weights": np.zeros((4, 4), dtype=int),
      "writable": False}, ValueError, r"^the device's write models"),
    ({"device": DeviceModel(read_noise=0.1), "weights": np.zeros((4, 4), dtype=int),
      "writable": False, "device_seed": -1}, ValueError,
     r"^LFSR seed must be a non-zero 32-bit integer, not -1$"),
    ({"device": DeviceModel(states=16), "grad_format": F16,
      "taps": np.zeros((1, 4), dtype=int)}, ValueError,
     r"^the device's write models \(states, program_noise\) need a dense tile; a convolution "
     r"tile's tied weights \(taps\) would drift apart$"),
    ({"device": DeviceModel(adc_range=2.0**-9), "grad_format": Format(10, 4)}, ValueError,
     r"^device: an ADC range of 0\.001953125 of Q6\.4's full scale leaves fewer than 2 code "
     r"bits$"),
    ({"device": DeviceModel(adc_range=2.0**-15)}, ValueError,
     r"^device: an ADC range of 3.0517578125e-05 of Q4\.12's full scale leaves fewer than "
     r"2 code bits$"),
])
@pytest.mark.parametrize("how", ["constructor", "check_parameters"])
def test_device_errors(changes, error, message, how):
    base = {"rows": 4, "cols": 4, "lanes": 2, "weight_format": F16, "input_format": F16,
            "output_format": F16}
    build = CrossbarTile if how == "constructor" else CrossbarTile.check_parameters
    with pytest.raises(error, match=message):
        build(**{**base, **changes})


def test_a_device_with_every_model_off_is_the_ideal_tile():
    """DeviceModel() and a full-scale range alone build the tile without a device: the same
    RTLIL, no read-noise generator."""
    ideal = rtlil.convert(tile(rounding="stochastic"))
    for device in (DeviceModel(), DeviceModel(adc_range=1.0, adc_bits=16, dac_bits=16)):
        t = tile(rounding="stochastic", device=device)
        assert t.device is (None if device.off else device)
        assert rtlil.convert(t) == ideal
    noisy = rtlil.convert(tile(rounding="stochastic", device=DeviceModel(read_noise=0.1)))
    assert "read_noise" in noisy and "read_noise" not in ideal


# --- the generated Verilog on both cocotb simulators -----------------------------------------

@pytest.mark.parametrize(("simulator", "rows", "cols", "lanes", "rounding"), [
    ("verilator", 7, 6, 4, "stochastic"),
    ("icarus", 5, 7, 3, "nearest"),
])
def test_cocotb_with_the_device_matches_the_model(simulator, rows, cols, lanes, rounding):
    device = DeviceModel(dac_bits=6, adc_bits=7, adc_range=0.5, read_noise=0.05, states=256,
                         program_noise=0.01)
    params = TileParams(rows=rows, cols=cols, lanes=lanes, width=16, frac=11,
                        rounding=rounding, device=device, device_seed=0x1234)
    result = check_plan(params, vectors=4, seed=5, simulator=simulator)
    assert result["cycles"]["forward"] == documented_latency("forward", rows, cols, lanes)
    assert result["cycles"]["transposed"] == documented_latency("transposed", rows, cols, lanes)


# --- the command line --------------------------------------------------------------------------

def test_cli_cosim_tile_takes_the_device_options(tmp_path, capsys):
    code, out, _ = run(capsys, "cosim", "tile", "--rows", "4", "--cols", "5", "--lanes", "2",
                       "--simulator", "amaranth", "--vectors", "2", "--dac-bits", "6",
                       "--adc-bits", "5", "--adc-range", "0.5", "--read-noise", "0.1",
                       "--device-seed", "0x77", "--json", "--out", tmp_path)
    assert code == 0
    report = last_json(out)
    assert report["mismatches"] == 0 and report["compared"] > 0


@pytest.mark.parametrize(("argv", "message"), [
    (["--pulses", "16", "--eta-shift", "15"], "pulses: a pulse step of 2^-1 weight LSBs is "
                                              "below one LSB"),
    (["--pulses", "12"], "--pulses: pulses must be a power of two from 1 to 4096"),
    (["--read-noise", "2"], "--read-noise: read_noise must be a number from 0 to 1"),
    (["--read-noise", "0.1", "--device-seed", "0"],
     "LFSR seed must be a non-zero 32-bit integer, not 0"),
    (["--adc-range", "0.00048828125", "--width", "12", "--frac", "8"],
     "leaves fewer than 2 code bits"),
])
def test_cli_refuses_bad_device_options(argv, message, capsys):
    code, _, err = run(capsys, "cosim", "tile", "--simulator", "amaranth", *argv)
    assert code == 2
    assert message in err


# --- the model's LOAD_W ------------------------------------------------------------------------

def model_tile(device=None):
    from xbarode.model.fixed import Overflow, Rounder
    from xbarode.model.fixed_ops import FixedTile

    return FixedTile(np.zeros((2, 2), dtype=np.int64), weight_format=I8, acc_width=24,
                     rounder=Rounder("nearest"), overflow=Overflow(), name="A", device=device)


def test_fixed_tile_load_writes_through_the_states_and_counts_a_clip():
    t = model_tile(DeviceModel(states=16))
    t.load(np.array([[37, -128], [127, 8]]))
    assert t.weights.tolist() == [[32, -128], [112, 16]]
    assert t.overflow.flag
    ideal = model_tile()
    ideal.load(np.array([[37, -128], [127, 8]]))
    assert ideal.weights.tolist() == [[37, -128], [127, 8]] and not ideal.overflow.flag


@pytest.mark.parametrize(("weights", "message"), [
    (np.zeros((2, 3), dtype=int), r"^A: weights must be integers of shape \(2, 2\)$"),
    (np.zeros((2, 2)), r"^A: weights must be integers of shape \(2, 2\)$"),
    (np.array([[128, 0], [0, 0]]), r"^A: weights lie outside Q8\.0$"),
])
def test_fixed_tile_load_refuses_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        model_tile().load(weights)


# --- bias, a product shift and distinct formats ------------------------------------------------

@settings(max_examples=4, deadline=None)
@given(rows=st.integers(1, 5), cols=st.integers(1, 6), data=st.data(),
       rounding=st.sampled_from(["floor", "nearest", "stochastic"]),
       seed=st.integers(0, 2**16))
@example(rows=3, cols=5, data=Draws(2, 1), rounding="stochastic", seed=1).via("shift 1")
@example(rows=4, cols=4, data=Draws(4, 0), rounding="nearest", seed=2).via("one chunk")
def test_bias_shift_and_formats_with_every_model(rows, cols, data, rounding, seed):
    """A tile with a bias, ``shift`` and a different format for weights, inputs and outputs,
    every read and write model on: LOAD_W, LOAD_BIAS, FORWARD, TRANSPOSED, UPDATE, READ_W,
    each word and the flag against FixedTile (``forward(..., bias=)``, ``shift=``,
    ``load``)."""
    from xbarode.hdl.tile_op import TileOp
    from xbarode.model.fixed import Overflow, Rounder
    from xbarode.model.fixed_ops import FixedTile
    from xbarode.sim.streams import op_receive, op_run, op_send, run_simulation

    lanes = data.draw(st.integers(1, cols))
    shift = data.draw(st.integers(0, 2))
    wf, xf, yf = Format(12, 9), Format(12, 7), Format(12, 6)
    device = DeviceModel(dac_bits=7, adc_bits=8, adc_range=0.5, read_noise=0.1, states=256,
                         program_noise=0.02)
    rng = np.random.default_rng(seed)
    weights = rng.integers(wf.min_int, wf.max_int + 1, (rows, cols))
    d = rng.integers(wf.min_int, wf.max_int + 1, rows)
    x = rng.integers(xf.min_int, xf.max_int + 1, cols)
    s = rng.integers(xf.min_int, xf.max_int + 1, rows)
    dut = CrossbarTile(rows=rows, cols=cols, lanes=lanes, weight_format=wf, input_format=xf,
                       output_format=yf, rounding=rounding, eta_shift=3, shift=shift,
                       bias=True, device=device, device_seed=0xD0D0)
    got = []

    async def testbench(ctx):
        await op_send(ctx, dut, TileOp.LOAD_W, weights.ravel().tolist())
        await op_send(ctx, dut, TileOp.LOAD_BIAS, d.tolist())
        await op_send(ctx, dut, TileOp.LOAD_X, x.tolist())
        await op_send(ctx, dut, TileOp.LOAD_S, s.tolist())
        for op, count in ((TileOp.FORWARD, rows), (TileOp.TRANSPOSED, cols)):
            await op_run(ctx, dut, op)
            got.append(await op_receive(ctx, dut, TileOp.READ_Y, count))
        await op_run(ctx, dut, TileOp.UPDATE)
        got.append((await op_receive(ctx, dut, TileOp.READ_W, rows * cols + rows))[:rows * cols])
        got.append(ctx.get(dut.overflow))

    run_simulation(dut, testbench)
    overflow = Overflow()
    model = FixedTile(weights, weight_format=wf, acc_width=48,
                      rounder=Rounder(rounding, dut.lfsr_seed), overflow=overflow,
                      device=device, device_seed=0xD0D0)
    want = [model.forward(x[None], xf, yf, shift=shift, bias=d)[0].tolist(),
            model.transposed(s[None], xf, yf, shift=shift)[0].tolist()]
    model.update(s, xf, x, xf, shift=3)
    want += [model.weights.ravel().tolist(), int(overflow.flag)]
    assert got == want


@settings(max_examples=5, deadline=None)
@given(advances=st.lists(st.sampled_from([0, 1, 3, 4]), min_size=1, max_size=12))
@example(advances=[0])
@example(advances=[4, 4, 3, 1, 0, 1])
def test_lfsr_successor_is_the_next_cycles_first_draw(advances):
    """Registered, ``lfsr_successor`` is the bank's ``draw[0]`` of the next cycle: the
    model's LFSR draw after those consumed; a registered bank offers the low bits of the same
    draws in every cycle, from reset on."""
    from xbarode.hdl.rounding import LfsrBank, lfsr_successor
    from xbarode.model.fixed import Lfsr

    m = Module()
    m.submodules.bank = bank = LfsrBank(draws=4, bits=32, steps={1, 3, 4}, seed=0x1234)
    ahead = Signal(32)
    m.d.sync += ahead.eq(lfsr_successor(bank))
    m.submodules.low = low = LfsrBank(draws=4, bits=5, steps={1, 3, 4}, seed=0x1234,
                                      registered=True)
    m.d.comb += low.advance.eq(bank.advance)
    reference = Lfsr(0x1234).draw(sum(advances) + 1)
    seen, firsts = [], []

    async def testbench(ctx):
        used = 0
        firsts.append(([ctx.get(d) for d in low.draw], [int(r) & 31 for r in Lfsr(0x1234).draw(4)]))
        for n in advances:
            ctx.set(bank.advance, 0 if n == 0 else bank.steps.index(n) + 1)
            await ctx.tick()
            used += n
            seen.append((ctx.get(ahead), ctx.get(bank.draw[0]), int(reference[used])))
            firsts.append(([ctx.get(d) for d in low.draw],
                           [int(r) & 31 for r in Lfsr(0x1234).draw(used + 4)[used:]]))

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert all(a == b == c for a, b, c in seen)
    assert all(a == b for a, b in firsts)


# --- the parts' refusals -----------------------------------------------------------------------

GROUP_BASE = {"first": 0, "count": 2, "lanes": 2, "depth": 4, "weight_width": 8,
              "operand_width": 8, "lane_width": 20, "shift": 4, "width": 8, "out_width": 8,
              "update_shift": 4, "rounding": "nearest"}
OUTPUT_BASE = {"rows": 3, "sum_width": 12, "acc_width": 14, "shift": 2, "width": 8,
               "out_width": 8, "rounding": "nearest"}


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"grad_dac": (4, 4)}, ValueError,
     r"^grad_dac and grad_adc are the read models of products on gradients: they need grad$"),
    ({"grad_adc": (1, 6), "acc_width": 16}, ValueError, r"^grad_dac and grad_adc are"),
    ({"grad_dac": (4, 4, 4), "grad": (4, 8)}, TypeError,
     r"^grad_dac must be a pair of integers \(at least \(1, 1\)\), not \(4, 4, 4\)$"),
    ({"states": (4, 4), "writable": False}, ValueError,
     r"^the device's write models \(states, program_noise_width\) are built for UPDATE and "
     r"APPLY: not with tied, and not read-only$"),
    ({"program_noise_width": 9, "acc_width": 16, "tied": True}, ValueError, r"^the device's"),
    ({"dac": (4,)}, TypeError, r"^dac must be a pair of integers \(at least \(1, 1\)\), not "
     r"\(4,\)$"),
    ({"adc": (0, 0)}, TypeError, r"^adc must be a pair of integers \(at least \(0, 1\)\), not "
     r"\(0, 0\)$"),
    ({"states": (2, True)}, TypeError, r"^states must be a pair of integers \(at least "
     r"\(1, 1\)\), not \(2, True\)$"),
    ({"noise_width": -1}, ValueError, r"^noise_width must be >= 0, not -1$"),
])
def test_lane_group_refuses_bad_device_arguments(changes, error, message):
    from xbarode.hdl.lane_group import LaneGroup

    with pytest.raises(error, match=message):
        LaneGroup(**{**GROUP_BASE, **changes})


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"grad_adc": (1, 6)}, ValueError,
     r"^grad_adc is the ADC of products on gradients: it needs grad$"),
    ({"grad_adc": (1,), "grad": (2, 8)}, TypeError,
     r"^grad_adc must be a pair of integers, not \(1,\)$"),
    ({"adc": (1,)}, TypeError, r"^adc must be a pair of integers, not \(1,\)$"),
    ({"noise_width": 1.5}, TypeError, r"^noise_width must be an integer, not float$"),
])
def test_forward_output_refuses_bad_device_arguments(changes, error, message):
    from xbarode.hdl.output_stage import ForwardOutput

    with pytest.raises(error, match=message):
        ForwardOutput(**{**OUTPUT_BASE, **changes})


def test_generate_tile_records_the_device_in_the_manifest(tmp_path, capsys):
    import json

    code, _, _ = run(capsys, "generate", "tile", "--rows", "3", "--cols", "4", "--lanes", "2",
                     "--states", "64", "--read-noise", "0.1", "--out", tmp_path)
    assert code == 0
    manifest = json.loads((tmp_path / "crossbar_tile.json").read_text())
    device = manifest["parameters"]["device"]
    assert (device["states"], device["read_noise"], device["dac_bits"]) == (64, 0.1, None)
    verilog = (tmp_path / "crossbar_tile.v").read_text()
    assert "read_noise" in verilog and "program_noise" not in verilog
