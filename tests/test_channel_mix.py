"""The channel-mixing unit (hdl/channel_mix.py) against its fixed-point twin
(:func:`~xbarode.model.fixed_fourier_bank.channel_mix_fixed`), bit for bit, on every simulator;
against the Hadamard unit, which it generalises; and against numpy's complex matrix products,
which neither uses.

Plans come from :mod:`xbarode.sim.fourier_plan` (unit ``channel-mix``): every second vector
runs the adjoint product, every fourth is a saturation corner.
"""

import json
import tempfile

import numpy as np
import pytest
from amaranth.hdl import Fragment
from hypothesis import given, settings
from hypothesis import strategies as st

from xbarode.cli import main
from xbarode.hdl.channel_mix import ChannelMixUnit
from xbarode.model.fixed import Format
from xbarode.sim.fourier_plan import (
    FourierParams,
    compare,
    make_plan,
    model_results,
    run_plan_amaranth,
)
from xbarode.units import UNITS, cosim

D, S = Format(18, 10), Format(18, 14)


def params(c_in, c_out, length, **changes):
    return FourierParams(unit="channel-mix", height=1, width_px=length, channels_in=c_in,
                         channels_out=c_out, **changes)


def check(p, vectors=4, seed=0, simulator="amaranth"):
    with tempfile.TemporaryDirectory() as tmp:
        result = cosim(UNITS["channel-mix"], p, vectors=vectors, seed=seed,
                       simulator=simulator, out=tmp)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["compared"] > 0
    return result


# --- construction ---------------------------------------------------------------------------

GOOD = {"length": 4, "channels_in": 2, "channels_out": 3, "x_format": D,
        "spectrum_format": S, "out_format": D}


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"length": 0}, ValueError, "length must be >= 1, not 0"),
    ({"channels_in": 2.0}, TypeError, "channels_in must be an integer, not float"),
    ({"channels_out": True}, TypeError, "channels_out must be an integer, not bool"),
    ({"channels_out": -1}, ValueError, "channels_out must be >= 1, not -1"),
    ({"spectrum_format": (18, 14)}, TypeError, "spectrum_format must be a Format, not tuple"),
    ({"rounding": "up"}, ValueError,
     "unknown rounding 'up'; choose one of ['floor', 'nearest', 'stochastic']"),
    ({"x_format": Format(30, 24), "spectrum_format": Format(30, 20), "rounding": "stochastic"},
     ValueError, "stochastic rounding draws 32 bits; cannot discard 34 bits"),
    ({"lfsr_seed": 0}, ValueError, "LFSR seed must be a non-zero 32-bit integer, not 0"),
])
def test_constructor_errors(changes, error, message):
    with pytest.raises(error) as caught:
        ChannelMixUnit(**{**GOOD, **changes})
    assert str(caught.value) == message


def test_parameters_are_read_only():
    unit = ChannelMixUnit(**GOOD, rounding="stochastic")
    assert (unit.length, unit.channels_in, unit.channels_out) == (4, 2, 3)
    assert (unit.x_format, unit.spectrum_format, unit.out_format) == (D, S, D)
    assert unit.shift == 14 and unit.rounding == "stochastic"
    # The wider direction sums c_out = 3 complex terms, six products of at most 2^17 · 2^17
    # each (both words at their most negative), with a sign bit.
    assert unit.accumulator_width == (6 * 2**17 * 2**17).bit_length() + 1
    with pytest.raises(AttributeError):
        unit.channels_in = 5
    Fragment.get(unit, None)    # and it elaborates with them


def test_channels_belong_to_the_channel_mixing_unit():
    with pytest.raises(ValueError, match=r"^the hadamard unit has one channel; channels apply "
                                         r"to the channel-mix and fourier-bank units$"):
        FourierParams(unit="hadamard", height=1, width_px=4, channels_in=2).check()


# --- against the model, bit for bit ------------------------------------------------------------

@settings(max_examples=12, deadline=None)
@given(c_in=st.integers(1, 4), c_out=st.integers(1, 4), length=st.integers(1, 6),
       rounding=st.sampled_from(["floor", "nearest", "stochastic"]), frac=st.integers(4, 14),
       seed=st.integers(0, 2**16))
def test_random_sizes_match_the_model(c_in, c_out, length, rounding, frac, seed):
    check(params(c_in, c_out, length, rounding=rounding, frac=frac), vectors=4, seed=seed)


@pytest.mark.parametrize(("c_in", "c_out"), [(1, 1), (3, 1), (1, 3), (8, 8)])
def test_pinned_sizes_and_corners_match_the_model(c_in, c_out):
    p = params(c_in, c_out, 3, rounding="stochastic")
    plan = make_plan(p, 4, 5)
    expected = model_results(p, plan)
    # The corners (vector 3) saturate; the convolution's ranges (vector 0) do not.
    assert [answer[0]["overflow"] for answer in expected] == [0, 1, 0, 1]
    got, _ = run_plan_amaranth(p, plan)
    assert compare(expected, got)["mismatches"] == 0


def test_one_channel_is_the_hadamard_unit_word_for_word():
    hadamard = FourierParams(unit="hadamard", height=1, width_px=7, rounding="stochastic")
    plan = make_plan(hadamard, 4, 3)
    mixing = params(1, 1, 7, rounding="stochastic")
    mix_plan = {**plan, "params": {**plan["params"], "unit": "channel-mix", "channels_in": 1,
                                   "channels_out": 1},
                "vectors": [{**vector, "adjoint": False} for vector in plan["vectors"]]}
    words, _ = run_plan_amaranth(hadamard, plan)
    mixed, _ = run_plan_amaranth(mixing, mix_plan)
    assert compare(words, mixed)["mismatches"] == 0


# --- against numpy's complex products --------------------------------------------------------

def _complex(words, fmt):
    pairs = np.asarray(words, dtype=np.float64) / (1 << fmt.frac)
    return pairs[..., 0] + 1j * pairs[..., 1]


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_products_are_the_complex_matrix_products_within_the_rounding(rounding):
    c_in, c_out, length = 3, 2, 5
    p = params(c_in, c_out, length, rounding=rounding)
    rng = np.random.default_rng(11)
    vectors = []
    for adjoint in (False, True):
        n_in = c_out if adjoint else c_in
        vectors.append({
            "spectrum": S.quantize(rng.uniform(-1, 1, (length * c_out * c_in, 2)),
                                   "nearest").tolist(),
            "elements": D.quantize(rng.uniform(-2, 2, (length * n_in, 2)), "nearest").tolist(),
            "adjoint": adjoint})
    plan = {**make_plan(p, 1, 0), "vectors": vectors}
    got, _ = run_plan_amaranth(p, plan)
    lsb = 2.0 ** -D.frac
    for vector, answer in zip(vectors, got, strict=True):
        k = _complex(vector["spectrum"], S).reshape(length, c_out, c_in)
        if vector["adjoint"]:
            x = _complex(vector["elements"], D).reshape(length, c_out)
            reference = np.einsum("foi,fo->fi", k.conj(), x)
        else:
            x = _complex(vector["elements"], D).reshape(length, c_in)
            reference = np.einsum("foi,fi->fo", k, x)
        out = _complex(np.array(answer[0]["out"]).reshape(-1, 2), D).reshape(reference.shape)
        # One narrowing per component: half an LSB to nearest, under one stochastically.
        bound = 0.5 * lsb if rounding == "nearest" else lsb
        assert np.abs(out.real - reference.real).max() <= bound
        assert np.abs(out.imag - reference.imag).max() <= bound
        assert answer[0]["overflow"] == 0


# --- timing -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("c_in", "c_out", "length"), [(1, 1, 6), (3, 2, 4), (2, 5, 3)])
def test_a_stream_of_vectors_takes_c_in_times_c_out_cycles_each(c_in, c_out, length):
    p = params(c_in, c_out, length)
    plan = make_plan(p, 2, 1)      # vector 0 forward, vector 1 adjoint
    for vector, n_in in zip(plan["vectors"], (c_in, c_out), strict=True):
        one = {**plan, "vectors": [vector]}
        _, cycles = run_plan_amaranth(p, one)
        # The first vector's n_in words in, then length·c_in·c_out multiply–accumulates back
        # to back (the next vector arrives while one is multiplied), the last output offered
        # 4 edges after its last issue and taken at the next.
        assert cycles["elements"] == n_in + length * c_in * c_out + 5


# --- generated Verilog on the other simulators ---------------------------------------------------

@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_cocotb_matches_the_model(simulator):
    check(params(3, 2, 4, rounding="stochastic", frac=8), vectors=4, seed=2, simulator=simulator)


def test_generate_writes_verilog_and_a_manifest_of_both_directions(tmp_path, capsys):
    code = main(["generate", "channel-mix", "--image", "2x3", "--channels-in", "3",
                 "--channels-out", "2", "--out", str(tmp_path), "--json"])
    assert code == 0
    verilog = (tmp_path / "channel_mix.v").read_text()
    assert "module channel_mix" in verilog
    manifest = json.loads((tmp_path / "channel_mix.json").read_text())
    interface = manifest["interface"]
    assert interface["unit"] == "channel-mix"
    words = {op["name"]: (op["in"][0]["count"], op["out"][0]["count"] if op["out"] else 0)
             for op in interface["operations"]}
    # 6 frequencies: 36 spectrum entries; 3 words in and 2 out per frequency, or the reverse.
    assert words == {"load": (36, 0), "multiply": (18, 12), "multiply_adjoint": (12, 18)}
    for port in manifest["ports"]:
        assert port["name"] in verilog


@pytest.mark.parametrize(("argv", "message"), [
    (["--channels-in", "0"], "--channels-in must be between 1 and 64, not 0"),
    (["--channels-out", "65"], "--channels-out must be between 1 and 64, not 65"),
])
def test_cli_bad_channels_exit_2(argv, message, capsys):
    code = main(["cosim", "channel-mix", *argv, "--simulator", "amaranth"])
    assert code == 2
    assert message in capsys.readouterr().err


# --- the Fourier path with channels, through the RTL units in sequence --------------------------

async def _bank_through_units(ctx, dft, mix, kernels_words, images, adjoint, shape):
    """The host's sequence: per input channel LOAD_REAL, DFT and READ on the DFT unit; the
    spectra's vectors, frequency by frequency column-major, through the mixing unit; per
    output channel LOAD, IDFT and READ_REAL on the DFT unit. The real parts, per channel."""
    from xbarode.hdl.fourier import FourierOp
    from xbarode.sim.engine import AmaranthDriver
    from xbarode.sim.fourier_plan import pack_pair, unpack_pair

    height, width = shape
    transform, mixer = AmaranthDriver(ctx, dft), AmaranthDriver(ctx, mix)
    spectra = []
    for channel in images:
        await transform.send(FourierOp.LOAD_REAL, channel.ravel().tolist())
        await transform.run(FourierOp.DFT)
        words = await transform.receive(FourierOp.READ, 2 * height * width)
        spectra.append(np.array(words).reshape(height, width, 2))
    vectors = np.stack(spectra, axis=2).transpose(1, 0, 2, 3)   # (W, H, channels in, 2)
    c_out, c_in = kernels_words.shape[:2]
    n_out = c_in if adjoint else c_out
    await mixer.set("adjoint", int(adjoint))
    await mixer.strobe("restart")
    await mixer.put("load", [pack_pair(re, im, S.width) for re, im in
                             kernels_words.transpose(3, 2, 0, 1, 4).reshape(-1, 2).tolist()])
    out, _ = await mixer.exchange(
        "i", [pack_pair(re, im, D.width) for re, im in vectors.reshape(-1, 2).tolist()], "o",
        height * width * n_out, bound=height * width * c_in * c_out + 16)
    mixed = np.array([unpack_pair(word, D.width) for word in out]).reshape(
        width, height, n_out, 2).transpose(1, 0, 2, 3)             # (H, W, channels out, 2)
    result = []
    for o in range(n_out):
        await transform.send(FourierOp.LOAD, mixed[:, :, o].ravel().tolist())
        await transform.run(FourierOp.IDFT)
        result.append(await transform.receive(FourierOp.READ_REAL, height * width))
    return np.array(result).reshape(n_out, height, width)


@pytest.mark.parametrize(("c_in", "c_out", "adjoint"), [(2, 3, False), (2, 3, True),
                                                         (1, 1, False)])
def test_the_dft_and_mixing_units_in_sequence_are_the_bank_bit_for_bit(c_in, c_out, adjoint):
    """The Fourier path with channels (``fourier_bank_fixed``) in RTL: the DFT unit and the
    channel-mixing unit, sequenced by the host, give the model's every word, forward and
    adjoint, with the model's three rounding sites (rows, columns, mixing) drawing in its
    order."""
    from amaranth import Module

    from xbarode.hdl.fourier import Dft2d
    from xbarode.model.fixed import Overflow, site_seed
    from xbarode.model.fixed_fourier_bank import fourier_bank_fixed
    from xbarode.model.fixed_ops import fourier_rounders, spectrum_words
    from xbarode.sim.streams import run_simulation

    shape, seed, twiddle = (3, 5), 0x1234567, Format(18, 16)
    rng = np.random.default_rng(c_in * 10 + c_out + adjoint)
    kernels = rng.uniform(-0.4, 0.4, (c_out, c_in, 3, 3))
    n_in = c_out if adjoint else c_in
    low = -1 if adjoint else 0
    images = D.quantize(rng.uniform(low, 1, (n_in, *shape)), "nearest")
    expected = fourier_bank_fixed(kernels, images[None], data=D, twiddle=twiddle, spectrum=S,
                                  rounder=fourier_rounders("stochastic", seed),
                                  overflow=Overflow(), adjoint=adjoint)[0]
    top = Module()
    top.submodules.dft = dft = Dft2d(*shape, data_format=D, twiddle_format=twiddle,
                                     rounding="stochastic", lfsr_seed=seed)
    top.submodules.mix = mix = ChannelMixUnit(
        length=shape[0] * shape[1], channels_in=c_in, channels_out=c_out, x_format=D,
        spectrum_format=S, out_format=D, rounding="stochastic", lfsr_seed=site_seed(seed, 2))
    answer = {}

    async def testbench(ctx):
        answer["out"] = await _bank_through_units(
            ctx, dft, mix, spectrum_words(kernels, shape, S), images, adjoint, shape)

    run_simulation(top, testbench)
    assert np.array_equal(answer["out"], expected)
