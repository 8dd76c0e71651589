"""The Fourier path with channels in the fixed-point model (``xbarode.model.fixed_fourier_bank``).

References: ``numpy.fft`` (the bank's circular convolutions, summed over input channels, per
output channel), ``scipy.ndimage.convolve`` (that reference itself), exact rationals with the
documented LFSR (the channel mixing, word for word and draw for draw), the direct path's
:class:`FixedConvBank`, and the one-channel Fourier path (``c = 1``, bit for bit).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from scipy.ndimage import convolve
from test_fixed_ops import ReferenceRounder, clamp, formats, random_words

from xbarode.model.fixed import Format, Overflow, Rounder
from xbarode.model.fixed_bank import FixedConvBank
from xbarode.model.fixed_fourier_bank import (
    FixedFourierBank,
    channel_mix_fixed,
    fourier_bank_fixed,
    mixing_accumulator_bits,
)
from xbarode.model.fixed_net import FixedNetwork, formats_for_width
from xbarode.model.fixed_ops import (
    FixedFourierConv,
    fourier_conv_fixed,
    fourier_rounders,
    hadamard_fixed,
    spectrum_stream,
    spectrum_words,
)

MODES = ("floor", "nearest", "stochastic")
SEED = 0xACE1ACE1
SETTINGS = settings(max_examples=25, deadline=None)


def fft_bank(kernels, images):
    """``Σ_i K[o, i] ⊛ x_i`` by numpy.fft: each kernel centred at (0, 0) and zero-padded."""
    height, width = images.shape[-2:]
    k = kernels.shape[-1]
    padded = np.zeros((*kernels.shape[:2], height, width))
    for p in range(k):
        for q in range(k):
            padded[:, :, (p - k // 2) % height, (q - k // 2) % width] += kernels[:, :, p, q]
    spectra = np.einsum("oihw,bihw->bohw", np.fft.fft2(padded), np.fft.fft2(images))
    return np.fft.ifft2(spectra).real


def test_the_fft_reference_is_scipys_wrapped_convolution():
    rng = np.random.default_rng(0)
    kernels, images = rng.normal(size=(3, 2, 3, 3)), rng.normal(size=(2, 2, 5, 7))
    want = np.array([[sum(convolve(image[i], kernels[o, i], mode="wrap") for i in range(2))
                      for o in range(3)] for image in images])
    np.testing.assert_allclose(fft_bank(kernels, images), want, atol=1e-12)


# --- the channel mixing ----------------------------------------------------------------------


def reference_mix(x, spectra, total, rounder, fmt):
    """Exact ``Σ_i K̂[o, i]·x_i`` per frequency as rationals, rounded once, in C order."""
    exact = []
    for f in np.ndindex(*x.shape[:-2]):
        for o in range(spectra.shape[-3]):
            re = im = 0
            for i in range(x.shape[-2]):
                a, b = (int(v) for v in x[f][i])
                c, d = (int(v) for v in spectra[f][o, i])
                re, im = re + a * c - b * d, im + a * d + b * c
            exact += [Fraction(re, 2**total) if total >= 0 else Fraction(re * 2**-total),
                      Fraction(im, 2**total) if total >= 0 else Fraction(im * 2**-total)]
    return clamp(rounder.round(exact, total), fmt)


@given(data=st.data(), freqs=st.integers(1, 6), c_in=st.integers(1, 4), c_out=st.integers(1, 4),
       mode=st.sampled_from(MODES), full_scale=st.booleans())
@example(data=None, freqs=3, c_in=4, c_out=2, mode="stochastic", full_scale=True)
@SETTINGS
def test_mixing_is_one_exact_sum_per_output_narrowed_once(data, freqs, c_in, c_out, mode,
                                                          full_scale):
    if data is None:        # the pinned corner: every word the most negative, 8-bit output
        xf, sf, of = Format(12, 6), Format(10, 4), Format(8, 2)
        x = np.full((freqs, c_in, 2), xf.min_int)
        spectra = np.full((freqs, c_out, c_in, 2), sf.min_int)
    else:
        xf, sf, of = (data.draw(formats(max_width=20)) for _ in range(3))
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
        x = random_words(rng, xf, (freqs, c_in, 2))
        spectra = random_words(rng, sf, (freqs, c_out, c_in, 2))
        if full_scale:
            x[...], spectra[..., 0] = xf.min_int, sf.min_int
    total = xf.frac + sf.frac - of.frac
    assume(mode != "stochastic" or total <= 32)
    overflow = Overflow()
    got = channel_mix_fixed(x, spectra, x_format=xf, spectrum_format=sf, out_format=of,
                            rounder=Rounder(mode, 21), overflow=overflow)
    want, clipped = reference_mix(x, spectra, total, ReferenceRounder(mode, 21), of)
    assert got.shape == (freqs, c_out, 2)
    assert got.ravel().tolist() == want
    assert overflow.counts["hadamard"] == clipped
    if data is None:
        assert clipped > 0 and overflow.flag          # saturation counted, never silent


@pytest.mark.parametrize("mode", MODES)
def test_mixing_with_one_channel_is_the_hadamard_product(mode):
    rng = np.random.default_rng(3)
    xf, sf, of = Format(20, 12), Format(18, 14), Format(20, 12)
    x, spectrum = random_words(rng, xf, (7, 5, 2)), random_words(rng, sf, (7, 5, 2))
    tallies = Overflow(), Overflow()
    had = hadamard_fixed(x, spectrum, x_format=xf, spectrum_format=sf, out_format=of,
                         rounder=Rounder(mode, 5), overflow=tallies[0])
    mix = channel_mix_fixed(x[..., None, :], spectrum[..., None, None, :], x_format=xf,
                            spectrum_format=sf, out_format=of, rounder=Rounder(mode, 5),
                            overflow=tallies[1])
    np.testing.assert_array_equal(mix[..., 0, :], had)
    assert tallies[0].counts == tallies[1].counts


@pytest.mark.parametrize(("c_in", "bits"), [(1, 12 + 10 - 1 + 2), (3, 12 + 10 - 1 + 3),
                                            (4, 12 + 10 - 1 + 4)])
def test_mixing_accumulator_bits(c_in, bits):
    # 2·c_in products of a 12-bit and a 10-bit word: 2·c_in·2^11·2^9 needs bits + the sign.
    assert mixing_accumulator_bits(Format(12, 6), Format(10, 4), c_in) == bits
    assert (2 * c_in * 2**11 * 2**9).bit_length() + 1 == bits


def test_mixing_refuses_bad_shapes_a_narrow_accumulator_and_int64_overflow():
    xf, sf = Format(12, 6), Format(10, 4)
    args = {"x_format": xf, "spectrum_format": sf, "out_format": xf,
            "rounder": Rounder("nearest"), "overflow": Overflow()}
    with pytest.raises(ValueError, match=r"^mix: x must have shape \(\.\.\., c_in, 2\) and "
                                         r"spectra \(\.\.\., c_out, c_in, 2\), not \(4, 3, 2\) "
                                         r"and \(4, 2, 2, 2\)$"):
        channel_mix_fixed(np.zeros((4, 3, 2), int), np.zeros((4, 2, 2, 2), int), **args)
    with pytest.raises(ValueError, match=r"^mix: an accumulator of 23 bits is too narrow for a "
                                         r"sum of 6 products of 12x10-bit words \(needs 24 "
                                         r"bits\)$"):
        channel_mix_fixed(np.zeros((4, 3, 2), int), np.zeros((4, 2, 3, 2), int),
                          acc_width=23, **args)
    channel_mix_fixed(np.zeros((4, 3, 2), int), np.zeros((4, 2, 3, 2), int), acc_width=24,
                      **args)
    wide = Format(32, 0)
    with pytest.raises(OverflowError, match=r"^mix: the exact sum needs 65 bits, more than "
                                            r"int64 holds$"):
        channel_mix_fixed(np.zeros((1, 1, 2), int), np.zeros((1, 1, 1, 2), int),
                          **{**args, "x_format": wide, "spectrum_format": wide})


# --- spectra of a bank and their load order ---------------------------------------------------


def test_bank_spectra_are_each_pairs_spectrum_and_stream_in_the_documented_order():
    rng = np.random.default_rng(4)
    kernels = rng.uniform(-1, 1, (3, 2, 3, 3))
    fmt, shape = Format(12, 8), (5, 7)
    words = spectrum_words(kernels, shape, fmt)
    assert words.shape == (3, 2, 5, 7, 2)
    for o in range(3):
        for i in range(2):
            np.testing.assert_array_equal(words[o, i], spectrum_words(kernels[o, i], shape, fmt))
    # The scaled spectrum is the unnormalised DFT of the centred, zero-padded kernel.
    padded = np.zeros((5, 7))
    for p in range(3):
        for q in range(3):
            padded[(p - 1) % 5, (q - 1) % 7] = kernels[2, 1, p, q]
    reference = np.fft.fft2(padded)
    np.testing.assert_array_equal(words[2, 1, ..., 0], np.floor(reference.real * 2**8 + 0.5))
    stream = spectrum_stream(words)
    assert stream.shape == (2 * 3 * 2 * 5 * 7,)
    for w in range(7):
        for h in range(5):
            for o in range(3):
                for i in range(2):
                    at = (((w * 5 + h) * 3 + o) * 2 + i) * 2
                    assert stream[at:at + 2].tolist() == words[o, i, h, w].tolist()
    # One channel pair: the one-kernel order (LOAD_SPECTRUM's, column by column).
    one = spectrum_words(kernels[:1, :1], shape, fmt)
    np.testing.assert_array_equal(spectrum_stream(one), spectrum_stream(one[0, 0]))
    assert spectrum_stream(one[0, 0])[:4].tolist() == [*one[0, 0, 0, 0], *one[0, 0, 1, 0]]


def test_spectrum_stream_refuses_other_shapes():
    with pytest.raises(ValueError, match=r"^spectrum words must have shape \(H, W, 2\) or "
                                         r"\(c_out, c_in, H, W, 2\), not \(3, 4\)$"):
        spectrum_stream(np.zeros((3, 4), int))


def test_bank_spectra_count_saturation():
    overflow = Overflow()
    words = spectrum_words(np.ones((2, 2, 3, 3)), (5, 5), Format(8, 6), overflow)
    # The DC term of each pair is 9 > 1.98: four pairs saturate at least there.
    assert overflow.counts["spectrum.load"] >= 4 and (words[:, :, 0, 0, 0] == 127).all()


# --- the bank against numpy.fft, the direct path and the one-channel path ---------------------


def fourier_formats(frac):
    # Data: |ẑ_i| <= sqrt(HW) <= 9 per channel, mixed over <= 4 channels by spectra
    # <= Σ|K| <= 1: 7 integer bits and the sign. Twiddles |.| <= 1; spectra <= 1.
    return {"data": Format(frac + 8, frac), "twiddle": Format(frac + 2, frac),
            "spectrum": Format(frac + 3, frac)}


def bound(kernels, height, width, frac):
    """The documented error bound of ``fourier_bank_fixed``, per output channel."""
    c_in = kernels.shape[1]
    taps = np.abs(kernels).sum(axis=(1, 2, 3))
    return (height + width) * (c_in - 1 + np.maximum(1.0, taps)) * 3 * 2.0**-frac


odd = st.integers(1, 4).map(lambda n: 2 * n + 1)


@given(height=odd, width=odd, channels=st.integers(1, 4), k=st.sampled_from([1, 3, 5]),
       frac=st.integers(6, 16), mode=st.sampled_from(MODES), seed=st.integers(0, 2**32),
       scale=st.sampled_from([0.5, 1.0]))
@example(height=9, width=9, channels=4, k=3, frac=6, mode="floor", seed=1, scale=60.0)
@example(height=3, width=5, channels=1, k=1, frac=10, mode="nearest", seed=2, scale=0.5)
@SETTINGS
def test_bank_against_numpy_fft(height, width, channels, k, frac, mode, seed, scale):
    assume(k <= min(height, width))
    rng = np.random.default_rng(seed)
    kernels = rng.uniform(-scale, scale, (channels, channels, k, k)) / (channels * k * k)
    images = rng.uniform(0, 1, (2, channels, height, width))
    if scale > 1:           # the full-scale corner: every pixel 1, every tap large and positive
        kernels, images = np.abs(kernels) + scale / (channels * k * k), np.ones_like(images)
    fmts = fourier_formats(frac)
    words = fmts["data"].quantize(images)
    overflow = Overflow()
    got = fourier_bank_fixed(kernels, words, **fmts, rounder=fourier_rounders(mode, seed or 1),
                             overflow=overflow)
    assert got.shape == words.shape and got.dtype == np.int64
    error = np.abs(got * 2.0**-frac - fft_bank(kernels, words * 2.0**-frac)).max(axis=(0, 2, 3))
    within = error <= bound(kernels, height, width, frac)
    # Beyond the bound only with saturation, and then it is counted: never silent.
    assert within.all() or overflow.flag, (error, overflow.counts)
    if scale <= 1:
        assert overflow.total == 0 and within.all()
    elif scale == 60.0:
        assert overflow.counts["spectrum.load"] > 0 and overflow.counts["hadamard"] > 0


@pytest.mark.parametrize("mode", MODES)
def test_bank_on_mnists_28_by_28_images(mode):
    # The size: 28×28, four channels, 16-bit data words and 3×3 kernels.
    rng = np.random.default_rng(28)
    kernels = rng.normal(0, 0.15, (4, 4, 3, 3))
    fmts = fourier_formats(12)
    words = fmts["data"].quantize(rng.uniform(0, 1, (1, 4, 28, 28)))
    overflow = Overflow()
    got = fourier_bank_fixed(kernels, words, **fmts, rounder=fourier_rounders(mode, 28),
                             overflow=overflow)
    error = np.abs(got * 2.0**-12 - fft_bank(kernels, words * 2.0**-12)).max(axis=(0, 2, 3))
    assert overflow.total == 0 and (error <= bound(kernels, 28, 28, 12)).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("height", "width", "k"), [(5, 7, 3), (9, 9, 5), (3, 3, 1)])
def test_bank_is_the_one_channel_path_bit_for_bit(height, width, k, mode):
    rng = np.random.default_rng(height * width + k)
    kernel = rng.uniform(-0.5, 0.5, (k, k))
    fmts = fourier_formats(12)
    words = fmts["data"].quantize(rng.uniform(0, 1, (3, height, width)))
    for rounder in (lambda: fourier_rounders(mode, 9), lambda: Rounder(mode, 9)):
        tallies = Overflow(), Overflow()
        one = fourier_conv_fixed(kernel, words, **fmts, rounder=rounder(), overflow=tallies[0])
        bank = fourier_bank_fixed(kernel[None, None], words[:, None], **fmts, rounder=rounder(),
                                  overflow=tallies[1])
        np.testing.assert_array_equal(bank[:, 0], one)
        assert tallies[0].counts == tallies[1].counts


def test_bank_draws_follow_the_documented_order():
    # The documented order, rebuilt from the one-channel twins: the forward transforms of input
    # channels 0, 1 (rows and columns sites), one narrowing per output component of the exact
    # mixing sums in C order of (w, h, o, re/im) (mixing site), the inverse transforms of
    # output channels 0, 1. Stochastic rounding: another order gives other words.
    from xbarode.model.fixed import narrow
    from xbarode.model.fixed_ops import dft2_fixed

    rng = np.random.default_rng(8)
    kernels = rng.uniform(-0.3, 0.3, (2, 2, 3, 3))
    fmts = fourier_formats(10)
    words = fmts["data"].quantize(rng.uniform(0, 1, (1, 2, 5, 7)))
    got = fourier_bank_fixed(kernels, words, **fmts, rounder=fourier_rounders("stochastic", 3),
                             overflow=Overflow())
    rows, cols, mix = fourier_rounders("stochastic", 3)
    passes = {"data": fmts["data"], "twiddle": fmts["twiddle"], "rounder": (rows, cols),
              "overflow": Overflow()}
    spectra = [np.swapaxes(dft2_fixed(np.stack([x, np.zeros_like(x)], -1), **passes), 0, 1)
               for x in words[0]]                                  # (W, H, 2) per input
    stored = spectrum_words(kernels, (5, 7), fmts["spectrum"])
    exact = np.zeros((7, 5, 2, 2), dtype=np.int64)                 # (w, h, o, re/im)
    for o in range(2):
        for i in range(2):
            a, b = spectra[i][..., 0], spectra[i][..., 1]
            c, d = (np.swapaxes(stored[o, i, ..., part], 0, 1) for part in (0, 1))
            exact[:, :, o, 0] += a * c - b * d
            exact[:, :, o, 1] += a * d + b * c
    mixed = narrow(exact, fmts["spectrum"].frac, fmts["data"], mix, Overflow(), "mix")
    want = [dft2_fixed(np.swapaxes(mixed[:, :, o], 0, 1), **passes, inverse=True)[..., 0]
            for o in range(2)]
    np.testing.assert_array_equal(got[0], np.stack(want))
    # Input channels taken in the other order draw differently.
    flipped = fourier_bank_fixed(kernels[:, ::-1], words[:, ::-1], **fmts,
                                 rounder=fourier_rounders("stochastic", 3), overflow=Overflow())
    assert not np.array_equal(flipped, got)


@pytest.mark.parametrize("mode", MODES)
def test_bank_against_the_direct_paths_bank(mode):
    # Kernels on the weight grid: the direct path's FixedConvBank gives the exact sum, rounded
    # once; the Fourier path lies within its documented bound of it (and half an LSB more).
    rng = np.random.default_rng(11)
    weight = Format(16, 14)
    ints = weight.quantize(rng.uniform(-0.2, 0.2, (3, 3, 3, 3)))
    kernels = weight.to_float(ints)
    fmts = fourier_formats(14)
    words = fmts["data"].quantize(rng.uniform(0, 1, (2, 3, 7, 5)))
    direct = FixedConvBank(ints, (7, 5), weight_format=weight, acc_width=62,
                           rounder=Rounder("nearest"), name="A")
    want = direct.forward(words.reshape(2, -1), fmts["data"], fmts["data"]).reshape(words.shape)
    got = fourier_bank_fixed(kernels, words, **fmts, rounder=fourier_rounders(mode, 5),
                             overflow=Overflow())
    error = np.abs(got - want).max(axis=(0, 2, 3)) * 2.0**-14
    assert (error <= bound(kernels, 7, 5, 14) + 2.0**-15).all()
    # Output channel o mixes input channels with K[o, i], not K[i, o].
    swapped = fourier_bank_fixed(kernels.transpose(1, 0, 2, 3), words, **fmts,
                                 rounder=fourier_rounders(mode, 5), overflow=Overflow())
    assert np.abs(swapped - want).max() * 2.0**-14 > bound(kernels, 7, 5, 14).max()


# --- the unit inside the core's model and the network ----------------------------------------


def unit_args(**changes):
    return {"data": Format(22, 12), "twiddle": Format(18, 16), "spectrum": Format(18, 14),
            "rounding": "stochastic", "seed": SEED, "out_seed": SEED + 9,
            "overflow": Overflow(), "name": "A", **changes}


def test_unit_with_one_channel_is_fixed_fourier_conv():
    rng = np.random.default_rng(6)
    kernel = rng.uniform(-0.4, 0.4, (3, 3))
    state, act = Format(16, 11), Format(16, 9)
    x = state.quantize(rng.uniform(-2, 2, (3, 35)))
    one = FixedFourierConv(kernel, (5, 7), **unit_args())
    bank = FixedFourierBank(kernel[None, None], (5, 7), **unit_args())
    np.testing.assert_array_equal(bank.forward(x, state, act, shift=2),
                                  one.forward(x, state, act, shift=2))
    assert one.overflow.counts == bank.overflow.counts
    assert bank.shape == one.shape and bank.channels == (1, 1)


def test_unit_refuses_bad_inputs():
    bank = FixedFourierBank(np.zeros((2, 2, 3, 3)), (5, 7), **unit_args())
    assert bank.shape == (70, 70) and bank.channels == (2, 2)
    with pytest.raises(ValueError, match=r"^A: words of Q12\.4 do not fit the Fourier data "
                                         r"format Q10\.12 exactly$"):
        bank.forward(np.zeros((1, 70), int), Format(16, 4), Format(16, 9))
    with pytest.raises(ValueError, match=r"^A: x must have 70 words per row \(c_in·m\), not "
                                         r"35$"):
        bank.forward(np.zeros((1, 35), int), Format(16, 11), Format(16, 9))
    with pytest.raises(ValueError, match=r"^A: an accumulator of 40 bits is too narrow for a "
                                         r"sum of 4 products of 22x18-bit words \(needs 42 "
                                         r"bits\)$"):
        FixedFourierBank(np.zeros((2, 2, 3, 3)), (5, 7), **unit_args(), acc_width=40)
    with pytest.raises(ValueError, match=r"^kernel size must be odd, not 2$"):
        FixedFourierBank(np.zeros((2, 2, 2, 2)), (5, 7), **unit_args())
    with pytest.raises(ValueError, match=r"^images must have shape \(batch, c_in, H, W\) and "
                                         r"kernels \(c_out, c_in, k, k\) with the same c_in, "
                                         r"not \(1, 3, 5, 7\) and \(2, 2, 3, 3\)$"):
        fourier_bank_fixed(np.zeros((2, 2, 3, 3)), np.zeros((1, 3, 5, 7), int),
                           data=Format(22, 12), twiddle=Format(18, 16),
                           spectrum=Format(18, 14), rounder=Rounder("floor"),
                           overflow=Overflow())


def network(params, fourier=True, **changes):
    if fourier is True:
        fourier = {"shape": (5, 5), "data": Format(22, 12), "twiddle": Format(18, 16),
                   "spectrum": Format(18, 14)}
    elif fourier is False:
        fourier = None
    return FixedNetwork(params, formats_for_width(16), **{
        "rounding": "stochastic", "h": 0.25, "steps": 3, "fourier": fourier,
        "image_shape": (5, 5), **changes})


def bank_params(channels, seed=0):
    rng = np.random.default_rng(seed)
    shape = (channels, channels, 3, 3)
    return {"A": rng.normal(0, 0.3, shape), "B": rng.normal(0, 0.3, shape),
            "C": rng.normal(0, 0.3, (4, channels * 25)), "d": rng.normal(0, 0.1, 4)}


@pytest.mark.parametrize("method", ["euler", "implicit_euler"])
def test_network_with_one_channel_bank_is_the_one_channel_fourier_network(method):
    params = bank_params(1, seed=2)
    x = np.random.default_rng(3).uniform(0, 1, (4, 25))
    kernels = {**params, "A": params["A"][0, 0], "B": params["B"][0, 0]}
    one, bank = network(kernels, method=method), network(params, method=method)
    assert isinstance(bank.A, FixedFourierBank) and bank.channels == 1
    for got, want in zip(bank.forward(x)[:2], one.forward(x)[:2], strict=True):
        np.testing.assert_array_equal(got, want)
    assert bank.overflow.counts == one.overflow.counts
    np.testing.assert_array_equal(bank.params()["A"], params["A"])


def test_network_with_channels_on_the_fourier_path_follows_the_direct_path():
    params = bank_params(3)
    x = np.random.default_rng(1).uniform(0, 1, (6, 25))
    fourier, direct = network(params), network(params, fourier=False)
    assert fourier.channels == direct.channels == 3 and isinstance(direct.A, FixedConvBank)
    logits, trajectory, _info = fourier.forward(x)
    want_logits, want_trajectory, _ = direct.forward(x)
    assert trajectory.shape == want_trajectory.shape == (4, 6, 75)
    state = formats_for_width(16).state
    # Three steps of two products each, every product within a few state LSBs of the other
    # path's: the trajectories stay within 2^-6, far below the states' size.
    assert np.abs(state.to_float(trajectory - want_trajectory)).max() < 2.0**-6
    assert np.abs(state.to_float(want_trajectory)).max() > 0.5
    assert fourier.overflow.total == 0
    assert (np.argmax(logits, 1) == np.argmax(want_logits, 1)).mean() >= 5 / 6


def test_network_with_channels_on_the_fourier_path_checks_the_mixing_accumulator():
    # (Its adjoint and training: tests/test_fourier_training.py.)
    with pytest.raises(ValueError, match=r"^A: an accumulator of 30 bits is too narrow"):
        network(bank_params(2), fourier={"shape": (5, 5), "data": Format(22, 12),
                                         "twiddle": Format(18, 16),
                                         "spectrum": Format(18, 14), "acc_width": 30})


def test_the_core_refuses_a_bank():
    # A one-channel core refuses a bank (and names the setting that takes it); a core with
    # channels refuses a bank of another size.
    from xbarode.model.core_config import CoreConfig
    from xbarode.sim.core_plan import core_params

    params = bank_params(2)
    for path in ("fourier", "direct"):
        config = CoreConfig(image=(5, 5), structure="conv", conv_path=path, classes=4)
        with pytest.raises(ValueError, match=r"^weights A are a bank of kernels for 2 "
                                             r"channels; the core has one channel \(set "
                                             r"channels = 2 on the Fourier path\)$"):
            core_params(config, params)
    config = CoreConfig(image=(5, 5), structure="conv", conv_path="fourier", classes=4,
                        channels=3)
    with pytest.raises(ValueError, match=r"^weights A have shape \(2, 2, 3, 3\); a core with "
                                         r"3 channels needs a bank of shape \(3, 3, 3, 3\)$"):
        core_params(config, params)
