"""The crossbar tile's pulsed updates (``CrossbarTile(device=DeviceModel(pulses=BL))``,
hdl/pulses.py): each UPDATE is one sample's stochastic pulse trains with δ = −s, bit for bit
:meth:`FixedTile.pulsed_update <xbarode.model.fixed_ops.FixedTile.pulsed_update>` on every
weight read back and the overflow flag, the generators running on from UPDATE to UPDATE; its
parts (the trains' compare, the popcount); the latency; the refusals; the command line.
"""

import tempfile

import numpy as np
import pytest
from amaranth import Module, Signal, signed
from amaranth.sim import Simulator
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpers import Draws, last_json, run
from xbarode.hdl.lane_group import LaneGroup
from xbarode.hdl.pulses import PulseTrains, fires, popcount, pulse_geometry
from xbarode.hdl.tile import CrossbarTile
from xbarode.model.device import DeviceModel
from xbarode.model.fixed import Format, Lfsr, site_seed
from xbarode.sim.tile_plan import TileParams, make_plan, model_results, run_plan_amaranth
from xbarode.units import UNITS, cosim


def update_cycles(rows, cols, lanes):
    """UPDATE's latency with pulses (CrossbarTile's notes): ``rows·C + 7`` plus the pulse
    trains' ``max(rows, cols) + 2``."""
    return rows * -(-cols // lanes) + 7 + max(rows, cols) + 2


def plan_of(params, vectors):
    """A plan of ``vectors`` (weights, ops), each op a dict as :func:`make_plan` makes."""
    plan = make_plan(params, 1, 0)
    plan["vectors"] = [{"weights": [int(w) for w in np.ravel(weights)], "ops": ops}
                       for weights, ops in vectors]
    return plan


def check(params, vectors):
    """Run the plan on Amaranth's simulator; assert it equals the model's answer word for
    word and flag for flag. Returns (results, cycles)."""
    plan = plan_of(params, vectors)
    got, cycles = run_plan_amaranth(params, plan)
    expected = model_results(params, plan)
    assert got == expected
    return got, cycles


def random_ops(rng, params, kinds):
    f = params.format

    def words(n):
        # A quarter of the words at the corners (min_int fires in every slot, 0 in none).
        return [int(rng.choice([f.min_int, 0, f.max_int])) if rng.random() < 0.25
                else int(rng.integers(f.min_int, f.max_int + 1)) for _ in range(n)]

    ops = []
    for kind in kinds:
        entry = {"op": kind}
        if kind in ("forward", "update"):
            entry["x"] = words(params.cols)
        if kind in ("transposed", "update"):
            entry["s"] = words(params.rows)
        ops.append(entry)
    return ops


# --- bit for bit on random tiles --------------------------------------------------------------

@settings(max_examples=8, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 7), data=st.data(),
       seed=st.integers(0, 2**16))
# Draws: lanes, width, frac, BL, step exponent, asymmetry, soft_bounds, rounding, states,
# program_noise, device_seed.
@example(rows=3, cols=5, data=Draws(2, 8, 4, 4, 3, 0.0, False, "nearest", None, 0.0, 1),
         seed=1).via("3x5 over 2 lanes: a last chunk of one lane")
@example(rows=5, cols=3, data=Draws(3, 8, 7, 8, 0, 0.5, True, "stochastic", None, 0.0, 7),
         seed=2).via("soft bounds, asymmetry, a one-LSB step, more rows than columns")
@example(rows=1, cols=1, data=Draws(1, 12, 6, 1, 10, -0.75, False, "floor", None, 0.0,
                                    0xFFFFFFFF), seed=3).via("one weight, one slot, big steps")
@example(rows=4, cols=6, data=Draws(4, 8, 3, 2, 5, 0.25, True, "stochastic", 16, 0.05, 5),
         seed=4).via("states and programming noise: at LOAD_W only, as the model")
@example(rows=4, cols=2, data=Draws(1, 12, 10, 16, 8, 0.999, False, "floor", None, 0.0,
                                    0x46F0A391), seed=5).via(
    "16 slots of a 511-LSB up step: a move of 4 ranges past a full-scale weight")
def test_random_pulsed_tiles_match_the_model(rows, cols, data, seed):
    lanes = data.draw(st.integers(1, cols))
    width = data.draw(st.sampled_from([8, 12]))
    frac = data.draw(st.integers(0, width - 1))
    pulses = data.draw(st.sampled_from([1, 2, 4, 8]))
    log_bl = pulses.bit_length() - 1
    # The step 2^e weight LSBs, e = 2W − 2 − frac − eta_shift − log2 BL (docs/device.md).
    exponent = data.draw(st.integers(0, min(width - 2, 2 * width - 2 - frac - log_bl)))
    asymmetry = data.draw(st.sampled_from([0.0, 0.25, -0.5, 0.9]))
    soft_bounds = data.draw(st.booleans())
    rounding = data.draw(st.sampled_from(["floor", "nearest", "stochastic"]))
    device = DeviceModel(pulses=pulses, asymmetry=asymmetry, soft_bounds=soft_bounds,
                         states=data.draw(st.sampled_from([None, 16])),
                         program_noise=data.draw(st.sampled_from([0.0, 0.05])))
    params = TileParams(rows=rows, cols=cols, lanes=lanes, width=width, frac=frac,
                        rounding=rounding,
                        eta_shift=2 * width - 2 - frac - log_bl - exponent, device=device,
                        device_seed=data.draw(st.integers(1, 2**32 - 1)))
    rng = np.random.default_rng(seed)
    f = params.format
    kinds = ["update", "update", "forward", "update", "transposed", "update"]
    vectors = [(rng.integers(f.min_int, f.max_int + 1, (rows, cols)),
                random_ops(rng, params, kinds)),
               (rng.choice([f.min_int, f.max_int], (rows, cols)),
                random_ops(rng, params, ["update", "update"]))]
    _, cycles = check(params, vectors)
    assert cycles["update"] == update_cycles(rows, cols, lanes)


@pytest.mark.slow
@settings(max_examples=12, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 9), data=st.data(),
       seed=st.integers(0, 2**16))
def test_long_trains_on_16_bit_words_match_the_model(rows, cols, data, seed):
    """Longer trains (16 to 128 slots) on 16-bit words, every step size from one LSB to a
    quarter of the range; several UPDATEs in a row."""
    lanes = data.draw(st.integers(1, cols))
    frac = data.draw(st.integers(0, 15))
    pulses = data.draw(st.sampled_from([16, 64, 128]))
    log_bl = pulses.bit_length() - 1
    top = 30 - frac - log_bl
    exponent = data.draw(st.integers(0, min(14, top)))
    device = DeviceModel(pulses=pulses, asymmetry=data.draw(st.floats(-0.99, 0.99)),
                         soft_bounds=data.draw(st.booleans()))
    params = TileParams(rows=rows, cols=cols, lanes=lanes, width=16, frac=frac,
                        rounding="stochastic", eta_shift=top - exponent, device=device,
                        device_seed=data.draw(st.integers(1, 2**32 - 1)))
    rng = np.random.default_rng(seed)
    f = params.format
    vectors = [(rng.integers(f.min_int, f.max_int + 1, (rows, cols)),
                random_ops(rng, params, ["update", "update", "forward", "update"]))]
    _, cycles = check(params, vectors)
    assert cycles["update"] == update_cycles(rows, cols, lanes)


# --- pinned corners ---------------------------------------------------------------------------

I8 = Format(8, 4)


def params8(device, rows=3, cols=5, lanes=2, eta_shift=4, seed=0x2468):
    return TileParams(rows=rows, cols=cols, lanes=lanes, width=8, frac=4, eta_shift=eta_shift,
                      device=device, device_seed=seed)


def test_min_int_fires_in_every_slot_and_zero_in_none():
    """s = min_int (|−s| = 2^(W−1)) fires in every slot, so its row's coincidences are the
    column's own train; x = 0 fires nowhere, so its column keeps its weights."""
    # e = 8 + 8 − 2 + 4 − 4 − 4 − eta_shift − log2 BL = 3: a step of 8 LSBs.
    params = params8(DeviceModel(pulses=8), eta_shift=4)
    weights = np.arange(15).reshape(3, 5) - 7
    ops = [{"op": "update", "x": [0, 50, -50, 0, 127], "s": [-128, -128, 0]}]
    got, _ = check(params, [(weights, ops)])
    new = np.array(got[0][0]["out"]).reshape(3, 5)
    assert (new[:, [0, 3]] == weights[:, [0, 3]]).all()   # x = 0
    assert (new[2] == weights[2]).all()                   # s = 0
    # Column 4's train (x = 127: slot t fires unless its draw's low 7 bits are 127, the
    # column generator's draws 32 … 39) is the coincidences of rows 0 and 1, which fire in
    # every slot; they move down (the tile adds s·x, s < 0 < x) by 8 LSBs a coincidence.
    draws = Lfsr(site_seed(params.device_seed, 4)).draw(40)[32:]
    hits = sum(int(d) & 127 < 127 for d in draws)
    assert (weights[:2, 4] - new[:2, 4]).tolist() == [8 * hits, 8 * hits]


@pytest.mark.parametrize("asymmetry", [0.0, 0.5])
def test_soft_bounds_at_both_bounds(asymmetry):
    """Weights at min_int and max_int with soft bounds: a step towards the bound the weight
    sits at is floor(K·b / 2^shift) with b = 1 (max_int, up) or 0 (min_int, down), here 0;
    the steps away from it are the largest."""
    params = params8(DeviceModel(pulses=4, soft_bounds=True, asymmetry=asymmetry),
                     eta_shift=2)
    weights = np.array([[127, -128, 127, -128, 0]] * 3)
    up = {"op": "update", "x": [127, 127, -128, -128, 100], "s": [127, 100, -128]}
    down = {"op": "update", "x": [-128, -128, 127, 127, -100], "s": [127, 100, -128]}
    got, _ = check(params, [(weights, [up, down, {"op": "forward", "x": [1] * 5}])])
    first = np.array(got[0][0]["out"]).reshape(3, 5)
    assert first.min() >= -128 and first.max() <= 127
    # Rows 0 and 1 (s > 0) move up where x > 0: column 0's max_int stays; row 2 (s < 0)
    # moves down where x > 0: column 1's min_int stays.
    assert (first[:2, 0] == 127).all() and first[2, 1] == -128


def test_a_saturating_step_raises_the_flag():
    """Hard bounds, a step of 2^6 LSBs, every weight at max_int moving up: the weights stay
    at max_int and the flag rises (the model counts NAME.weights)."""
    params = params8(DeviceModel(pulses=8), eta_shift=3)
    weights = np.full((3, 5), 127)
    ops = [{"op": "update", "x": [127] * 5, "s": [127] * 3}]
    got, _ = check(params, [(weights, ops)])
    assert got[0][0]["overflow"] == 1
    assert got[0][0]["out"] == [127] * 15


def test_the_generators_run_on_from_update_to_update():
    """Two UPDATEs with the same words move the weights differently (fresh draws), as the
    model's pulsed_update over the two samples in order."""
    params = params8(DeviceModel(pulses=2), eta_shift=5)
    same = {"op": "update", "x": [40, -60, 90, 20, -100], "s": [70, -30, 110]}
    got, _ = check(params, [(np.zeros((3, 5), dtype=int), [same, same])])
    first = np.array(got[0][0]["out"])
    second = np.array(got[0][1]["out"])
    assert (first != 0).any() and (second - first != first).any()


# --- the parts --------------------------------------------------------------------------------

def run_comb(build, inputs):
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


@settings(max_examples=20, deadline=None)
@given(width=st.integers(2, 32), data=st.data())
@example(width=8, data=Draws([-128, 0, 127, -1], [0, 127, 2**32 - 1, 0x80]))
@example(width=2, data=Draws([-2, 1, 0], [0, 1, 3]))
def test_fires_compare_the_low_bits_of_a_draw_with_the_magnitude(width, data):
    """Slot t fires iff (draw & (2^(W−1) − 1)) < |word|, the model's compare."""
    words = data.draw(st.lists(st.integers(-(2 ** (width - 1)), 2 ** (width - 1) - 1),
                               min_size=1, max_size=6))
    draws = data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4))

    def build(m):
        word = Signal(signed(width))
        draw = [Signal(32, name=f"d{k}") for k in range(len(draws))]
        out = Signal(len(draws))
        m.d.comb += out.eq(fires(word, draw, width))
        return {"word": word, **{f"d{k}": d for k, d in enumerate(draw)}}, [out]

    inputs = [{"word": w, **{f"d{k}": d for k, d in enumerate(draws)}} for w in words]
    mask = (1 << (width - 1)) - 1
    for w, (bits,) in zip(words, run_comb(build, inputs), strict=True):
        assert bits == sum(1 << k for k, d in enumerate(draws) if (d & mask) < abs(w))


@given(bits=st.integers(0, 2**13 - 1), n=st.sampled_from([1, 2, 3, 8, 13]))
@settings(max_examples=20, deadline=None)
def test_popcount_counts_the_ones(bits, n):
    def build(m):
        value = Signal(n)
        out = Signal(8)
        m.d.comb += out.eq(popcount(value))
        return {"value": value}, [out]

    value = bits & ((1 << n) - 1)
    assert run_comb(build, [{"value": value}])[0][0] == bin(value).count("1")


def test_pulse_trains_consume_bl_draws_per_word_in_c_order():
    """The trains of a 3x2 tile on one lane: the rows' from site 3, the columns' from site 4,
    BL draws a word (the model's _fires formula written out here)."""
    rows, cols, bl, width, seed = 3, 2, 4, 8, 0x1357
    s_words, x_words = [-128, 5, 0], [100, -37]
    dut = PulseTrains(rows=rows, cols=cols, lanes=1, width=width, pulses=bl,
                      row_seed=site_seed(seed, 3), col_seed=site_seed(seed, 4))
    got = {}

    async def testbench(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        busy, addresses = 0, (0, 0)
        while ctx.get(dut.busy):
            # The memories' data: the word at the address of the cycle before.
            ctx.set(dut.s, s_words[addresses[0]])
            ctx.set(dut.x[0], x_words[addresses[1]])
            addresses = (ctx.get(dut.s_addr), ctx.get(dut.x_addr))
            await ctx.tick()
            busy += 1
        got["busy"] = busy
        for name, count, port, out in (("rows", rows, dut.row, dut.row_fires),
                                       ("cols", cols, dut.chunk, dut.col_fires[0])):
            trains = []
            for k in range(count):
                ctx.set(port, k)
                await ctx.tick()
                trains.append(ctx.get(out))
            got[name] = trains

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()

    def expected(words, site):
        draws = Lfsr(site_seed(seed, site)).draw(len(words) * bl).reshape(len(words), bl)
        return [sum(1 << t for t in range(bl) if (int(d[t]) & 127) < abs(w))
                for w, d in zip(words, draws, strict=True)]

    assert got["busy"] == max(rows, cols) + 2 == dut.cycles
    assert got["rows"] == expected(s_words, 3)
    assert got["rows"][0] == 2**bl - 1 and got["rows"][2] == 0
    assert got["cols"] == expected(x_words, 4)


# --- refusals ---------------------------------------------------------------------------------

F16 = Format(16, 12)


def tile(**changes):
    base = {"rows": 4, "cols": 4, "lanes": 2, "weight_format": F16, "input_format": F16,
            "output_format": F16}
    return {**base, **changes}


@pytest.mark.parametrize(("changes", "message"), [
    ({"weights": np.zeros((4, 4), dtype=int)},
     r"^the RTL tile's pulsed updates \(pulses\) write the weights: give no initial "
     r"weights, and a writable tile$"),
    ({"weights": np.zeros((4, 4), dtype=int), "writable": False},
     r"^the RTL tile's pulsed updates"),
    ({"update_formats": (F16, F16)}, r"^update_formats are the formats of a training tile's "
                                     r"pulsed SGD step: they need grad_format and a device "
                                     r"with pulses$"),
    ({"grad_format": F16, "taps": np.zeros((1, 4), dtype=int)},
     r"^the device's write models \(states, program_noise\) need a dense tile"),
    ({"eta_shift": 16}, r"^pulses: a pulse step of 2\^-1 weight LSBs is below one LSB; use "
                        r"fewer pulses \(now 8\) or a finer weight format$"),
])
@pytest.mark.parametrize("how", ["constructor", "check_parameters"])
def test_pulses_refusals(changes, message, how):
    build = CrossbarTile if how == "constructor" else CrossbarTile.check_parameters
    with pytest.raises(ValueError, match=message):
        build(**tile(device=DeviceModel(pulses=8), **changes))


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"pulses": 3}, ValueError, r"^pulses must be a power of two from 1 to 4096, not 3$"),
    ({"width": 1}, ValueError, r"^width must be >= 2, not 1$"),
    ({"lanes": 3}, ValueError, r"^lanes must be between 1 and cols \(2\), not 3$"),
    ({"rows": 2.0}, TypeError, r"^rows must be an integer, not float$"),
    ({"row_seed": 0}, ValueError, r"^LFSR seed must be a non-zero 32-bit integer, not 0$"),
])
def test_pulse_trains_refuse_bad_arguments(changes, error, message):
    base = {"rows": 2, "cols": 2, "lanes": 1, "width": 8, "pulses": 4, "row_seed": 1,
            "col_seed": 2}
    with pytest.raises(error, match=message):
        PulseTrains(**{**base, **changes})


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"pulses": 4}, TypeError, r"^pulses must be a PulseGeometry or None, not int$"),
    ({"states": (4, 4)}, ValueError, r"^a pulsed update \(pulses\) is built for UPDATE alone: "
                                     r"not with tied, states or program_noise_width, and "
                                     r"not read-only$"),
    ({"program_noise_width": 4}, ValueError,
     r"^a pulsed update \(pulses\) is built for UPDATE alone"),
])
def test_lane_group_refuses_bad_pulse_arguments(changes, error, message):
    geometry = pulse_geometry(DeviceModel(pulses=4), I8, I8, 2)
    base = {"first": 0, "count": 2, "lanes": 2, "depth": 4, "weight_width": 8,
            "operand_width": 8, "lane_width": 20, "shift": 4, "width": 8, "out_width": 8,
            "update_shift": 6, "rounding": "nearest", "pulses": geometry}
    with pytest.raises(error, match=message):
        LaneGroup(**{**base, **changes})


# --- the command line and the cocotb simulators -----------------------------------------------

def test_cli_cosim_tile_with_pulses_matches_the_model(tmp_path, capsys):
    code, out, _ = run(capsys, "cosim", "tile", "--rows", "3", "--cols", "5", "--lanes", "2",
                       "--width", "8", "--frac", "4", "--eta-shift", "4", "--simulator",
                       "amaranth", "--vectors", "4", "--pulses", "4", "--soft-bounds",
                       "--asymmetry", "0.25", "--json", "--out", tmp_path)
    assert code == 0
    report = last_json(out)
    assert report["mismatches"] == 0 and report["compared"] > 0
    assert report["cycles"]["update"] == update_cycles(3, 5, 2)


@pytest.mark.parametrize(("simulator", "rows", "cols", "lanes", "device"), [
    ("verilator", 3, 5, 2, DeviceModel(pulses=4, soft_bounds=True, asymmetry=-0.25)),
    ("icarus", 4, 3, 3, DeviceModel(pulses=2, states=64, read_noise=0.05)),
])
def test_cocotb_with_pulses_matches_the_model(simulator, rows, cols, lanes, device):
    params = TileParams(rows=rows, cols=cols, lanes=lanes, width=8, frac=4, eta_shift=4,
                        rounding="stochastic", device=device, device_seed=0x4321)
    with tempfile.TemporaryDirectory() as out:
        result = cosim(UNITS["tile"], params, vectors=4, seed=9, simulator=simulator, out=out)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["compared"] > 0
    assert result["cycles"]["update"] == update_cycles(rows, cols, lanes)


def test_the_pulse_hardware_is_built_with_pulses_only():
    """A tile without pulses (here with the write models) has no pulse trains; with them its
    host interface says what UPDATE does."""
    from amaranth.back import rtlil

    from xbarode.hdl.interface import host_interface

    plain = CrossbarTile(**tile(device=DeviceModel(states=16)))
    pulsed = CrossbarTile(**tile(device=DeviceModel(pulses=8, states=16)))
    assert "row_trains" not in rtlil.convert(plain)
    assert "row_trains" in rtlil.convert(pulsed)
    assert plain.pulse_geometry is None and pulsed.pulse_geometry.pulses == 8
    update = {op["name"]: op for op in host_interface(pulsed).as_json()["operations"]}
    assert "8-slot stochastic pulse trains" in update["UPDATE"]["does"]


@settings(max_examples=30, deadline=None)
@given(width=st.integers(2, 16), frac=st.integers(0, 15), pulses=st.sampled_from([1, 8, 64]),
       eta_shift=st.integers(0, 12), asymmetry=st.floats(-0.9999, 0.9999),
       soft_bounds=st.booleans(), data=st.data())
@example(width=8, frac=4, pulses=1, eta_shift=0, asymmetry=0.999995, soft_bounds=True,
         data=Draws([-128, 127, 0])).via("A = 2^16: a down factor of 0")
def test_the_geometry_gives_the_model_s_steps(width, frac, pulses, eta_shift, asymmetry,
                                              soft_bounds, data):
    """PulseGeometry's integers (a factor, a shift for the power-of-two nominal step) give
    pulse_steps' up and down steps at every weight, and largest_step bounds them."""
    from xbarode.model.device import pulse_step, pulse_steps

    fmt = Format(width, min(frac, width - 1))
    device = DeviceModel(pulses=pulses, asymmetry=asymmetry, soft_bounds=soft_bounds)
    try:
        step = pulse_step(fmt, fmt, fmt, eta_shift, pulses)
    except ValueError:
        with pytest.raises(ValueError, match=r"^pulses: a pulse step"):
            pulse_geometry(device, fmt, fmt, eta_shift)
        return
    geo = pulse_geometry(device, fmt, fmt, eta_shift)
    weights = np.array(data.draw(st.lists(st.integers(fmt.min_int, fmt.max_int), min_size=1,
                                          max_size=5)))
    up, down = pulse_steps(weights, fmt, step, device)
    half = 1 << (width - 1)
    b_up = half - weights if soft_bounds else np.full_like(weights, half)
    b_down = weights + half if soft_bounds else np.full_like(weights, half)
    assert [geo.scale(geo.up * int(b)) for b in b_up] == up.tolist()
    assert [geo.scale(geo.down * int(b)) for b in b_down] == down.tolist()
    assert max(up.max(), down.max()) <= geo.largest_step(width)


# --- a short training run on the pulsed tile ---------------------------------------------------

def test_a_classifier_trained_on_the_pulsed_tile_is_the_models_run(tmp_path, capsys):
    """Six digits through FORWARD, the host's softmax − one-hot and a pulsed UPDATE (soft
    bounds, asymmetry): every logit and every weight after each update as the model's."""
    code, out, _ = run(capsys, "cosim", "tile", "--rows", 10, "--cols", 64, "--lanes", 16,
                       "--digits-training", "--vectors", 6, "--pulses", 8, "--soft-bounds",
                       "--asymmetry", 0.125, "--eta-shift", 3, "--simulator", "amaranth",
                       "--out", tmp_path, "--json")
    result = last_json(out)
    assert code == 0 and result["mismatches"] == 0
    # Per image: 10 logits and 640 weights, each with the flag.
    assert result["compared"] == 6 * (10 + 1 + 640 + 1) and result["images"] == 6
    assert result["cycles_per_image"] == (result["cycles"]["forward"]
                                          + result["cycles"]["update"])


def test_the_training_plan_learns_and_takes_the_sgd_direction():
    """The host's loop on its own (the model): s = −round(softmax − onehot) per image; after
    300 digits the weights classify the test set far above chance, with pulses as without."""
    from xbarode.model.data import load_digits_split
    from xbarode.sim.tile_plan import training_plan

    split = load_digits_split()
    pixels = np.floor(split.x_test * 2**12 + 0.5)
    for device in (None, DeviceModel(pulses=16)):
        params = TileParams(rows=10, cols=64, lanes=8, width=16, frac=12, eta_shift=4,
                            device=device)
        plan, weights = training_plan(params, split.x_train[:300], split.y_train[:300])
        ops = plan["vectors"][0]["ops"]
        # The first image: zero weights give equal logits, softmax 1/10 each.
        expected = np.full(10, 0.1)
        expected[split.y_train[0]] -= 1
        assert ops[1]["s"] == (-np.sign(expected) * np.floor(abs(expected) * 2**12 + 0.5)).tolist()
        accuracy = np.mean(np.argmax(pixels @ weights.T, axis=1) == split.y_test)
        assert accuracy > 0.6, (device, accuracy)


@pytest.mark.parametrize(("argv", "message"), [
    (["--rows", 9, "--cols", 64], "--digits-training needs a tile of 10 rows"),
    (["--rows", 10, "--cols", 64, "--vectors", 1438], "--vectors must be between 1 and 1437"),
])
def test_digits_training_refusals(argv, message, tmp_path, capsys):
    code, _, err = run(capsys, "cosim", "tile", "--digits-training", "--lanes", 8, *argv,
                       "--simulator", "amaranth", "--out", tmp_path)
    assert code == 2 and message in err


def test_the_training_plan_refuses_bad_images_and_labels():
    from xbarode.sim.tile_plan import training_plan

    params = TileParams(rows=3, cols=4, lanes=2, width=8, frac=6)
    with pytest.raises(ValueError, match=r"^images must be \(n, 4\) for a tile of 4 columns"):
        training_plan(params, np.zeros((2, 5)), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match=r"^labels must be 2 integers in 0\.\.2"):
        training_plan(params, np.zeros((2, 4)), np.array([0, 3]))
