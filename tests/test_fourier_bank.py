"""The Fourier path with channels in RTL (hdl/fourier_bank.py, ``FourierBank``) against its
fixed-point twin :func:`~xbarode.model.fixed_fourier_bank.fourier_bank_fixed`, bit for bit, and
against scipy's circular convolution, which neither uses.

The bank is the host of its DFT unit and its channel-mixing unit (each tested alone in
test_fourier_hdl.py and test_channel_mix.py); here the whole bank runs forward and adjoint
products one after the other, as a network's A and Aᵀ would, on one set of LFSRs.
"""

import numpy as np
import pytest
import scipy.ndimage
from hypothesis import given, settings
from hypothesis import strategies as st

from xbarode.hdl.fourier_bank import BankOp, FourierBank
from xbarode.model.fixed import Format, Overflow
from xbarode.model.fixed_fourier_bank import fourier_bank_fixed
from xbarode.model.fixed_ops import fourier_rounders, spectrum_stream, spectrum_words
from xbarode.sim.engine import AmaranthDriver
from xbarode.sim.streams import run_simulation

D, T, S = Format(18, 10), Format(18, 16), Format(18, 14)
SEED = 0x2468ACE1


def bank(shape, c_in, c_out, rounding, lanes=None):
    return FourierBank(*shape, channels_in=c_in, channels_out=c_out, lanes=lanes,
                       data_format=D, twiddle_format=T, spectrum_format=S, rounding=rounding,
                       lfsr_seed=SEED)


def run_bank(dut, kernels, images):
    """Load the kernels' spectra once, then per ``(image, adjoint)``: LOAD_REAL or
    LOAD_REAL_T, CONV, READ_REAL. Returns the outputs, the overflow flag after each and the
    CONV latencies."""
    shape = (dut.height, dut.width)
    size = shape[0] * shape[1]
    answer = {}

    async def testbench(ctx):
        drv = AmaranthDriver(ctx, dut)
        words = spectrum_stream(spectrum_words(kernels, shape, S))
        await drv.send(BankOp.LOAD_SPECTRUM, [int(w) for w in words])
        outs, flags, latencies = [], [], []
        for image, adjoint in images:
            await drv.strobe("clear")
            await drv.send(BankOp.LOAD_REAL_T if adjoint else BankOp.LOAD_REAL,
                           image.ravel().tolist())
            ticks, _ = await drv.run(BankOp.CONV)
            n_out = dut.channels_in if adjoint else dut.channels_out
            out = await drv.receive(BankOp.READ_REAL_T if adjoint else BankOp.READ_REAL,
                                    n_out * size)
            outs.append(np.array(out).reshape(n_out, *shape))
            flags.append(drv.get("overflow"))
            latencies.append(ticks)
        answer["value"] = outs, flags, latencies

    run_simulation(dut, testbench)
    return answer["value"]


def model(kernels, images, rounding):
    rounders = fourier_rounders(rounding, SEED)
    outs, flags = [], []
    for image, adjoint in images:
        overflow = Overflow()
        outs.append(fourier_bank_fixed(kernels, image[None], data=D, twiddle=T, spectrum=S,
                                       rounder=rounders, overflow=overflow,
                                       adjoint=adjoint)[0])
        flags.append(int(any(n for label, n in overflow.counts.items()
                             if label != "spectrum.load")))
    return outs, flags


def draw(rng, shape, c_in, c_out, adjoint, scale=1.0):
    n = c_out if adjoint else c_in
    low = -1 if adjoint else 0
    return D.quantize(scale * rng.uniform(low, 1, (n, *shape)), "nearest"), adjoint


@settings(max_examples=5, deadline=None)
@given(height=st.integers(2, 4), width=st.integers(2, 5), c_in=st.integers(1, 3),
       c_out=st.integers(1, 3), rounding=st.sampled_from(["floor", "nearest", "stochastic"]),
       seed=st.integers(0, 2**16))
def test_random_banks_match_the_model_forward_and_adjoint(height, width, c_in, c_out,
                                                          rounding, seed):
    rng = np.random.default_rng(seed)
    shape = (height, width)
    k = 3 if min(shape) >= 3 else 1
    kernels = rng.uniform(-0.4, 0.4, (c_out, c_in, k, k))
    images = [draw(rng, shape, c_in, c_out, adjoint) for adjoint in (False, True, False)]
    got, flags, _ = run_bank(bank(shape, c_in, c_out, rounding), kernels, images)
    expected, model_flags = model(kernels, [image for image in images], rounding)
    for out, want in zip(got, expected, strict=True):
        assert np.array_equal(out, want)
    assert flags == model_flags


def test_full_scale_corner_saturates_and_raises_the_flag():
    rng = np.random.default_rng(4)
    shape, c_in, c_out = (3, 4), 2, 2
    kernels = rng.choice([-1.0, 1.0], (c_out, c_in, 3, 3)) * 0.99
    images = [draw(rng, shape, c_in, c_out, False, 0.01),
              (np.full((c_in, *shape), D.max_int), False)]
    got, flags, _ = run_bank(bank(shape, c_in, c_out, "stochastic"), kernels, images)
    expected, model_flags = model(kernels, images, "stochastic")
    assert model_flags == [0, 1] and flags == model_flags
    for out, want in zip(got, expected, strict=True):
        assert np.array_equal(out, want)


def test_bank_is_the_circular_convolution_within_the_bound():
    rng = np.random.default_rng(7)
    shape, c_in, c_out = (4, 5), 2, 3
    kernels = rng.uniform(-0.3, 0.3, (c_out, c_in, 3, 3))
    image, _ = draw(rng, shape, c_in, c_out, False)
    (out,), _, _ = run_bank(bank(shape, c_in, c_out, "nearest", lanes=3), kernels,
                            [(image, False)])
    x = image / 2.0 ** D.frac
    for o in range(c_out):
        exact = sum(scipy.ndimage.convolve(x[i], kernels[o, i], mode="wrap")
                    for i in range(c_in))
        # fourier_bank_fixed's documented bound, from the formats alone.
        bound = (sum(shape) * (c_in - 1 + max(1, np.abs(kernels[o]).sum()))
                 * (2.0 ** -D.frac + 2.0 ** -T.frac + 2.0 ** -S.frac))
        assert np.abs(out[o] / 2.0 ** D.frac - exact).max() <= bound


@pytest.mark.parametrize(("shape", "c_in", "c_out", "lanes"), [((3, 3), 2, 3, None),
                                                                ((2, 5), 3, 1, 3)])
def test_conv_latency_is_within_the_documented_bound(shape, c_in, c_out, lanes):
    from test_fourier_hdl import transform_latency

    from helpers import elaborated  # noqa: F401  (the helpers' path is the tests')

    rng = np.random.default_rng(1)
    kernels = rng.uniform(-0.3, 0.3, (c_out, c_in, 1, 1))
    images = [draw(rng, shape, c_in, c_out, adjoint) for adjoint in (False, True)]
    _, _, latencies = run_bank(bank(shape, c_in, c_out, "nearest", lanes), kernels, images)
    size = shape[0] * shape[1]
    dft, idft = (transform_latency(*shape, lanes, forward) for forward in (True, False))
    for (n_in, n_out), ticks in zip(((c_in, c_out), (c_out, c_in)), latencies, strict=True):
        bound = n_in * (3 * size + dft + 7) + size * c_in * c_out + n_out * (3 * size + idft + 7) \
            + 10
        # Within the bound, and not far below it: the units' own latencies dominate.
        assert bound - 4 * (n_in + n_out) - 10 <= ticks <= bound


@pytest.mark.parametrize(("height", "changes", "message"), [
    (3, {"channels_in": 0}, "channels_in must be >= 1, not 0"),
    (3, {"rounding": "up"}, "unknown rounding 'up'; choose one of ['floor', 'nearest', "
                            "'stochastic']"),
    (0, {}, "height and width must be >= 1, not 0 and 3"),
])
def test_refusals_are_the_units_own(height, changes, message):
    arguments = {"channels_in": 2, "channels_out": 2, "data_format": D, "twiddle_format": T,
                 "spectrum_format": S, **changes}
    with pytest.raises(ValueError) as caught:
        FourierBank(height, 3, **arguments)
    assert str(caught.value) == message


# --- the unit of generate, cosim and synth -----------------------------------------------------

def _params(**changes):
    from xbarode.sim.fourier_plan import FourierParams

    return FourierParams(**{"unit": "fourier-bank", "height": 3, "width_px": 4,
                            "channels_in": 2, "channels_out": 3, "rounding": "stochastic",
                            **changes})


@pytest.mark.parametrize("simulator", ["amaranth", "verilator", "icarus"])
def test_cosim_matches_the_model_forward_adjoint_and_corner(simulator, tmp_path):
    from xbarode.sim.fourier_plan import make_plan
    from xbarode.units import UNITS, cosim

    params = _params()
    plan = make_plan(params, 4, 3)
    assert [v["adjoint"] for v in plan["vectors"]] == [False, True, False, True]
    result = cosim(UNITS["fourier-bank"], params, vectors=4, seed=3, simulator=simulator,
                   out=tmp_path)
    assert result["mismatches"] == 0, result["first_mismatch"]
    # Forward: 3 output channels of 12 words and the flag; adjoint: 2 channels.
    assert result["compared"] == 2 * (36 + 1) + 2 * (24 + 1)


def test_the_plan_corner_raises_the_flag_in_the_model():
    from xbarode.sim.fourier_plan import make_plan, model_results

    params = _params()
    answers = model_results(params, make_plan(params, 4, 3))
    assert [answer[0]["overflow"] for answer in answers] == [0, 0, 0, 1]


@pytest.mark.parametrize(("changes", "message"), [
    ({"kernel": 4}, "the kernel size must be odd and >= 1, not 4"),
    ({"gauss": True}, "the fourier-bank unit's mixing has four multipliers; gauss applies to "
                      "units hadamard and fourier-conv"),
    ({"unit": "fourier-conv"}, "the fourier-conv unit has one channel; channels apply to the "
                               "channel-mix and fourier-bank units"),
])
def test_plan_parameters_are_refused_by_name(changes, message):
    with pytest.raises(ValueError) as caught:
        _params(**changes).check()
    assert str(caught.value) == message
