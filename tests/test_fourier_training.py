"""Training on the Fourier path in the fixed-point model: the bank's transposed product, its
kernel gradients and SGD step, the network's adjoint and a short training run.

References: circular correlation by ``np.roll`` and by ``numpy.fft`` (the conjugate spectrum),
the float64 adjoint identity ``<K x, y> = <x, Kᵀ y>``, exact rationals with the documented LFSR
(the conjugate-transposed mixing, word for word and draw for draw), tap sums by ``np.roll``,
the float64 discrete adjoint (:func:`~xbarode.model.loss_and_grads`) and the direct path's
:class:`FixedConvBank` (tap sums and tied step, bit for bit; training, within a tolerance).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from test_fixed_ops import ReferenceRounder, clamp, formats, random_words
from test_fourier_channels import fft_bank

from helpers import last_json, run
from xbarode.model import Config, init_params, loss_and_grads, train
from xbarode.model import data as data_module
from xbarode.model.fixed import Format, Overflow, Rounder, narrow
from xbarode.model.fixed_bank import FixedConvBank
from xbarode.model.fixed_fourier_bank import (
    FixedFourierBank,
    channel_mix_fixed,
    fourier_bank_fixed,
)
from xbarode.model.fixed_net import FixedNetwork, formats_for_width
from xbarode.model.fixed_ops import dft2_fixed, fourier_rounders, spectrum_words
from xbarode.model.train import accuracy, load_weights

MODES = ("floor", "nearest", "stochastic")
SEED = 0xACE1ACE1
SETTINGS = settings(max_examples=20, deadline=None)


def correlate(kernel, image):
    """``(a ⋆ y)[n] = Σ_s a[s]·y[n + s]``, tap ``(p, q)`` at offset ``s = (p − k//2, q − k//2)``
    (the convolution's tap sits at ``-s``): by ``np.roll``, on floats or integers."""
    k = kernel.shape[-1]
    out = np.zeros(np.broadcast_shapes(image.shape), dtype=np.result_type(kernel, image))
    for p in range(k):
        for q in range(k):
            out = out + kernel[p, q] * np.roll(image, (k // 2 - p, k // 2 - q), axis=(-2, -1))
    return out


def correlate_bank(kernels, images):
    """``(Kᵀ y)_i = Σ_o K[o, i] ⋆ y_o`` for images (batch, c_out, H, W)."""
    c_out, c_in = kernels.shape[:2]
    return np.stack([sum(correlate(kernels[o, i], images[:, o]) for o in range(c_out))
                     for i in range(c_in)], axis=1)


def test_references_are_the_conjugate_spectrum_and_the_adjoint_of_the_convolution():
    # np.roll's correlation is numpy.fft's conjugate-spectrum product, and the float64
    # adjoint identity <K x, y> = <x, Kᵀ y> holds between it and the convolution reference.
    rng = np.random.default_rng(0)
    kernels = rng.normal(size=(3, 2, 3, 3))
    x, y = rng.normal(size=(2, 2, 5, 7)), rng.normal(size=(2, 3, 5, 7))
    padded = np.zeros((3, 2, 5, 7))
    for p in range(3):
        for q in range(3):
            padded[:, :, (p - 1) % 5, (q - 1) % 7] = kernels[:, :, p, q]
    spectra = np.einsum("oihw,bohw->bihw", np.conj(np.fft.fft2(padded)), np.fft.fft2(y))
    np.testing.assert_allclose(correlate_bank(kernels, y), np.fft.ifft2(spectra).real,
                               atol=1e-12)
    left = np.vdot(fft_bank(kernels, x), y)
    assert abs(left - np.vdot(x, correlate_bank(kernels, y))) < 1e-12 * abs(left) + 1e-12
    assert abs(left) > 1     # the identity is not between two zeros


# --- the conjugate-transposed mixing -----------------------------------------------------------


def reference_adjoint_mix(x, spectra, total, rounder, fmt):
    """Exact ``Σ_o conj(K̂[o, i])·x_o`` per frequency as rationals, rounded once, in C order."""
    exact = []
    for f in np.ndindex(*x.shape[:-2]):
        for i in range(spectra.shape[-2]):
            re = im = 0
            for o in range(x.shape[-2]):
                a, b = (int(v) for v in x[f][o])
                c, d = (int(v) for v in spectra[f][o, i])
                re, im = re + a * c + b * d, im + b * c - a * d
            exact += [Fraction(v, 2**total) if total >= 0 else Fraction(v * 2**-total)
                      for v in (re, im)]
    return clamp(rounder.round(exact, total), fmt)


@given(data=st.data(), freqs=st.integers(1, 6), c_in=st.integers(1, 4), c_out=st.integers(1, 4),
       mode=st.sampled_from(MODES))
@example(data=None, freqs=3, c_in=2, c_out=4, mode="stochastic")
@SETTINGS
def test_adjoint_mixing_is_one_exact_sum_per_output_narrowed_once(data, freqs, c_in, c_out,
                                                                  mode):
    if data is None:        # the pinned corner: every word the most negative, 8-bit output
        xf, sf, of = Format(12, 6), Format(10, 4), Format(8, 2)
        x = np.full((freqs, c_out, 2), xf.min_int)
        spectra = np.full((freqs, c_out, c_in, 2), sf.min_int)
    else:
        xf, sf, of = (data.draw(formats(max_width=20)) for _ in range(3))
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
        x = random_words(rng, xf, (freqs, c_out, 2))
        spectra = random_words(rng, sf, (freqs, c_out, c_in, 2))
    total = xf.frac + sf.frac - of.frac
    assume(mode != "stochastic" or total <= 32)
    overflow = Overflow()
    got = channel_mix_fixed(x, spectra, x_format=xf, spectrum_format=sf, out_format=of,
                            rounder=Rounder(mode, 21), overflow=overflow, adjoint=True)
    want, clipped = reference_adjoint_mix(x, spectra, total, ReferenceRounder(mode, 21), of)
    assert got.shape == (freqs, c_in, 2)
    assert got.ravel().tolist() == want
    assert overflow.counts["hadamard"] == clipped
    if data is None:
        # -min·-min products: the imaginary parts cancel, the real parts saturate, counted.
        assert clipped > 0 and overflow.flag


def test_adjoint_mixing_refuses_a_forward_shaped_operand():
    args = {"x_format": Format(12, 6), "spectrum_format": Format(10, 4),
            "out_format": Format(12, 6), "rounder": Rounder("nearest"), "overflow": Overflow()}
    with pytest.raises(ValueError, match=r"^mix: x must have shape \(\.\.\., c_out, 2\) and "
                                         r"spectra \(\.\.\., c_out, c_in, 2\), not \(4, 2, 2\) "
                                         r"and \(4, 3, 2, 2\)$"):
        channel_mix_fixed(np.zeros((4, 2, 2), int), np.zeros((4, 3, 2, 2), int), **args,
                          adjoint=True)


# --- the bank's transposed product ------------------------------------------------------------


def fourier_formats(frac):
    # As tests/test_fourier_channels.py's: data holds |ŷ| <= sqrt(HW)·|y| mixed over 4 channels.
    return {"data": Format(frac + 8, frac), "twiddle": Format(frac + 2, frac),
            "spectrum": Format(frac + 3, frac)}


def adjoint_bound(kernels, height, width, frac):
    """The documented error bound of the adjoint, per output channel ``i``."""
    c_out = kernels.shape[0]
    taps = np.abs(kernels).sum(axis=(0, 2, 3))
    return (height + width) * (c_out - 1 + np.maximum(1.0, taps)) * 3 * 2.0**-frac


odd = st.integers(1, 4).map(lambda n: 2 * n + 1)


@given(height=odd, width=odd, c_in=st.integers(1, 4), c_out=st.integers(1, 4),
       k=st.sampled_from([1, 3, 5]), frac=st.integers(6, 16), mode=st.sampled_from(MODES),
       seed=st.integers(1, 2**32 - 1), scale=st.sampled_from([0.5, 1.0]))
@example(height=5, width=7, c_in=2, c_out=3, k=3, frac=12, mode="stochastic", seed=1,
         scale=1.0)
@example(height=9, width=9, c_in=3, c_out=4, k=3, frac=6, mode="floor", seed=2, scale=60.0)
@SETTINGS
def test_transposed_bank_against_numpy_correlation(height, width, c_in, c_out, k, frac, mode,
                                                   seed, scale):
    assume(k <= min(height, width))
    rng = np.random.default_rng(seed)
    kernels = rng.uniform(-scale, scale, (c_out, c_in, k, k)) / (max(c_in, c_out) * k * k)
    images = rng.uniform(-1, 1, (2, c_out, height, width))
    if scale > 1:          # the full-scale corner: every pixel 1, every tap large and positive
        kernels, images = np.abs(kernels) + scale / (c_out * k * k), np.ones_like(images)
    fmts = fourier_formats(frac)
    words = fmts["data"].quantize(images)
    overflow = Overflow()
    got = fourier_bank_fixed(kernels, words, **fmts, rounder=fourier_rounders(mode, seed),
                             overflow=overflow, adjoint=True)
    assert got.shape == (2, c_in, height, width) and got.dtype == np.int64
    want = correlate_bank(kernels, words * 2.0**-frac)
    error = np.abs(got * 2.0**-frac - want).max(axis=(0, 2, 3))
    within = error <= adjoint_bound(kernels, height, width, frac)
    assert within.all() or overflow.flag, (error, overflow.counts)   # never silent
    if scale <= 1:
        assert overflow.total == 0 and within.all()
        # The bound is tight enough to tell the correlation from the convolution.
        if k > 1 and frac >= 12:
            conv = fft_bank(kernels.transpose(1, 0, 2, 3), words * 2.0**-frac)
            assert np.abs(got * 2.0**-frac - conv).max() > 4 * error.max()
    else:
        assert overflow.counts["spectrum.load"] > 0 and overflow.counts["hadamard"] > 0


@pytest.mark.parametrize("mode", MODES)
def test_transposed_bank_draws_follow_the_documented_order(mode):
    # Rebuilt from the one-channel twins: the forward transforms of the c_out = 3 input
    # channels (rows and columns sites), one narrowing per output component of the exact
    # conjugate sums in C order of (w, h, i, re/im) (mixing site), then the inverse transforms
    # of the c_in = 2 output channels. Stochastic rounding: another order gives other words.
    rng = np.random.default_rng(8)
    kernels = rng.uniform(-0.3, 0.3, (3, 2, 3, 3))
    fmts = fourier_formats(10)
    words = fmts["data"].quantize(rng.uniform(-1, 1, (1, 3, 5, 7)))
    got = fourier_bank_fixed(kernels, words, **fmts, rounder=fourier_rounders(mode, 3),
                             overflow=Overflow(), adjoint=True)
    rows, cols, mix = fourier_rounders(mode, 3)
    passes = {"data": fmts["data"], "twiddle": fmts["twiddle"], "rounder": (rows, cols),
              "overflow": Overflow()}
    spectra = [np.swapaxes(dft2_fixed(np.stack([y, np.zeros_like(y)], -1), **passes), 0, 1)
               for y in words[0]]                                  # (W, H, 2) per input o
    stored = spectrum_words(kernels, (5, 7), fmts["spectrum"])
    exact = np.zeros((7, 5, 2, 2), dtype=np.int64)                 # (w, h, i, re/im)
    for i in range(2):
        for o in range(3):
            a, b = spectra[o][..., 0], spectra[o][..., 1]
            c, d = (np.swapaxes(stored[o, i, ..., part], 0, 1) for part in (0, 1))
            exact[:, :, i, 0] += a * c + b * d
            exact[:, :, i, 1] += b * c - a * d
    mixed = narrow(exact, fmts["spectrum"].frac, fmts["data"], mix, Overflow(), "mix")
    want = [dft2_fixed(np.swapaxes(mixed[:, :, i], 0, 1), **passes, inverse=True)[..., 0]
            for i in range(2)]
    np.testing.assert_array_equal(got[0], np.stack(want))
    if mode == "stochastic":
        flipped = fourier_bank_fixed(kernels[::-1], words[:, ::-1], **fmts,
                                     rounder=fourier_rounders(mode, 3), overflow=Overflow(),
                                     adjoint=True)
        assert not np.array_equal(flipped, got)


def test_adjoint_identity_on_wide_words():
    # <K x, y> = <x, Kᵀ y> for the integer products themselves, with 24 fractional bits:
    # equal within the two products' documented bounds (≈ 1e-5 here, far below the terms).
    rng = np.random.default_rng(5)
    kernels = rng.uniform(-0.2, 0.2, (3, 2, 3, 3))
    fmts = fourier_formats(24)
    data = fmts["data"]
    x = data.quantize(rng.uniform(-1, 1, (2, 2, 5, 7)))
    y = data.quantize(rng.uniform(-1, 1, (2, 3, 5, 7)))
    args = {**fmts, "rounder": fourier_rounders("nearest", 1), "overflow": Overflow()}
    kx = data.to_float(fourier_bank_fixed(kernels, x, **args))
    kty = data.to_float(fourier_bank_fixed(kernels, y, **args, adjoint=True))
    left, right = np.vdot(kx, data.to_float(y)), np.vdot(data.to_float(x), kty)
    slack = 2 * 70 * adjoint_bound(kernels, 5, 7, 24).max() * 1.5
    assert abs(left) > 1 and abs(left - right) <= slack, (left, right, slack)


def unit_args(**changes):
    return {"data": Format(22, 12), "twiddle": Format(18, 16), "spectrum": Format(18, 14),
            "rounding": "nearest", "seed": SEED, "out_seed": SEED + 9,
            "overflow": Overflow(), "name": "A", **changes}


@pytest.mark.parametrize("mode", MODES)
def test_unit_transposed_follows_the_direct_paths_transposed(mode):
    # Kernels on the weight grid, c_in = 2 ≠ c_out = 3, a 7×5 image: the direct path's
    # FixedConvBank.transposed is the exact Mᵀ y rounded once; the Fourier unit lies within the
    # adjoint's bound (data LSBs) plus an output LSB either side.
    rng = np.random.default_rng(11)
    weight, grad = Format(16, 14), Format(16, 11)
    ints = weight.quantize(rng.uniform(-0.2, 0.2, (3, 2, 3, 3)))
    y = grad.quantize(rng.uniform(-1, 1, (4, 3 * 35)))
    direct = FixedConvBank(ints, (7, 5), weight_format=weight, acc_width=48,
                           rounder=Rounder(mode, 3), name="A")
    unit = FixedFourierBank(weight.to_float(ints), (7, 5), **unit_args(rounding=mode))
    got = unit.transposed(y, grad, grad, shift=1)
    want = direct.transposed(y, grad, grad, shift=1)
    assert got.shape == want.shape == (4, 2 * 35)
    bound = adjoint_bound(weight.to_float(ints), 7, 5, 12).max() / 2 + 2 * grad.lsb
    assert np.abs(grad.to_float(got - want)).max() <= bound
    assert unit.overflow.counts["A.transposed"] == 0 and "A.forward" not in unit.overflow.counts


def test_unit_transposed_refuses_bad_inputs():
    unit = FixedFourierBank(np.zeros((3, 2, 3, 3)), (5, 7), **unit_args())
    assert unit.shape == (105, 70)
    with pytest.raises(ValueError, match=r"^A: y must have 105 words per row \(c_out·m\), not "
                                         r"70$"):
        unit.transposed(np.zeros((1, 70), int), Format(16, 11), Format(16, 11))
    with pytest.raises(ValueError, match=r"^A: words of Q12\.4 do not fit the Fourier data "
                                         r"format Q10\.12 exactly$"):
        unit.transposed(np.zeros((1, 105), int), Format(16, 4), Format(16, 11))
    # Its own accumulator check: 2·c_out = 8 products, where the forward's 2·c_in = 4 fit.
    narrow_acc = FixedFourierBank(np.zeros((4, 2, 3, 3)), (5, 7), **unit_args(), acc_width=42)
    narrow_acc.forward(np.zeros((1, 70), int), Format(16, 11), Format(16, 11))
    with pytest.raises(ValueError, match=r"^A: an accumulator of 42 bits is too narrow for a "
                                         r"sum of 8 products of 22x18-bit words \(needs 43 "
                                         r"bits\)$"):
        narrow_acc.transposed(np.zeros((1, 140), int), Format(16, 11), Format(16, 11))


# --- kernel gradients and the SGD step --------------------------------------------------------


def roll_tap_sums(outputs, inputs, c_out, c_in, k, shape):
    """``S[o, i, p, q] = Σ_b Σ_pixel g⁽ᵒ⁾[pixel]·x⁽ⁱ⁾[pixel − s_pq]`` by ``np.roll``, in Python
    integers."""
    g = outputs.reshape(-1, c_out, *shape).astype(object)
    x = inputs.reshape(-1, c_in, *shape).astype(object)
    sums = np.zeros((c_out, c_in, k, k), dtype=object)
    for p in range(k):
        for q in range(k):
            shifted = np.roll(x, (p - k // 2, q - k // 2), axis=(-2, -1))   # x[pixel − s]
            sums[:, :, p, q] = np.einsum("bohw,bihw->oi", g, shifted)
    return sums


@given(c_in=st.integers(1, 3), c_out=st.integers(1, 3), k=st.sampled_from([1, 3]),
       mode=st.sampled_from(MODES), transposed=st.booleans(), seed=st.integers(0, 2**32))
@example(c_in=2, c_out=3, k=3, mode="stochastic", transposed=True, seed=0)
@settings(max_examples=10, deadline=None)
def test_gradient_sums_and_step_are_the_direct_paths_bit_for_bit(c_in, c_out, k, mode,
                                                                transposed, seed):
    rng = np.random.default_rng(seed)
    weight, grad, state = Format(16, 14), Format(16, 11), Format(16, 11)
    ints = weight.quantize(rng.uniform(-0.5, 0.5, (c_out, c_in, k, k)))
    outputs = random_words(rng, grad, (6, c_out * 35))
    inputs = random_words(rng, state, (6, c_in * 35))
    unit = FixedFourierBank(weight.to_float(ints), (5, 7), **unit_args(rounding=mode))
    direct = FixedConvBank(ints, (5, 7), weight_format=weight, acc_width=62,
                           rounder=Rounder(mode, SEED + 9), name="A")
    sums = unit.gradient_sums(outputs, inputs)
    assert sums.dtype == np.int64
    assert sums.tolist() == roll_tap_sums(outputs, inputs, c_out, c_in, k, (5, 7)).tolist()
    np.testing.assert_array_equal(sums, direct.gradient_sums(outputs, inputs))
    for _ in range(2):        # two steps: the LFSR draws continue alike
        unit.apply_kernel_gradient(sums, 22, shift=4, weight_format=weight,
                                   transposed=transposed)
        direct.apply_kernel_gradient(sums, 22, shift=4, transposed=transposed)
        np.testing.assert_array_equal(weight.quantize(unit.kernels), direct.kernels)
        np.testing.assert_array_equal(unit.kernels, weight.to_float(direct.kernels))
    assert not np.array_equal(direct.kernels, ints)          # the steps moved the kernels
    for label in ("A.update", "A.weights"):
        assert unit.overflow.counts[label] == direct.overflow.counts[label]
    # The next product uses the new kernels' spectra (a deterministic rounding, since the
    # steps drew from the output narrowing's LFSR).
    x = state.quantize(rng.uniform(0, 1, (1, c_in * 35)))
    unit.out_rounder = Rounder("nearest")
    fresh = FixedFourierBank(weight.to_float(direct.kernels), (5, 7),
                             **unit_args(rounding=mode, out_seed=1))
    fresh.out_rounder = Rounder("nearest")
    np.testing.assert_array_equal(unit.forward(x, state, state), fresh.forward(x, state, state))


def test_step_rounds_off_grid_kernels_to_the_nearest_word_first():
    weight = Format(8, 6)
    kernels = np.full((1, 1, 1, 1), 0.3)                       # 19.2 LSBs: word 19
    unit = FixedFourierBank(kernels, (3, 3), **unit_args())
    unit.apply_kernel_gradient(np.zeros((1, 1, 1, 1), int), 10, shift=0, weight_format=weight)
    assert unit.kernels.tolist() == [[[[19 / 64]]]]
    with pytest.raises(ValueError, match=r"^A: tap sums must have shape \(1, 1, 1, 1\), not "
                                         r"\(2, 1, 1, 1\)$"):
        unit.apply_kernel_gradient(np.zeros((2, 1, 1, 1), int), 10, shift=0,
                                   weight_format=weight)


# --- the network's adjoint against float64 ----------------------------------------------------


def wide_fourier(width, shape):
    """Fourier formats for ``formats_for_width(width)``: the data holds the state, act and grad
    words (frac width − 5, up to 7 integer bits) with 2 guard bits and room for the DFT's
    growth."""
    return {"shape": shape, "data": Format(width + 6, width - 3),
            "twiddle": Format(width + 2, width), "spectrum": Format(width + 2, width - 2)}


@pytest.mark.parametrize("method", ["euler", "implicit_euler"])
def test_fourier_network_gradients_approach_float64_as_width_grows(method):
    """The Fourier path's adjoint (tap sums scaled by h, 1/batch and 2^-frac) against the
    float64 discrete adjoint of the same words: the relative error shrinks with the width, is
    below 1e-4 at 24 bits, and stays within 4× the direct path's at the same formats (the
    Fourier products carry a few more LSBs of error: measured 1.1–2.2×). Newton stops within
    16 state LSBs: the Fourier products' own error is several LSBs, so a 1-LSB tolerance
    would only spend the iteration limit."""
    shape, c = (5, 7), 2
    config = Config(structure="conv", image_shape=shape, classes=3, channels=c, steps=2,
                    T=0.5, method=method, linear_solver="exact", tol=1e-13)
    rng = np.random.default_rng(4)
    params = init_params(dataclasses.replace(config, init_scale=1.2, seed=4))
    params["C"] = rng.normal(0, 0.5, params["C"].shape)
    x, y = rng.random((8, 35)), rng.integers(0, 3, 8)
    errors = {}
    for width in (12, 24):
        f = formats_for_width(width, acc_width=60)
        grid = {**params, **{n: f.weight.to_float(f.weight.quantize(params[n])) for n in "AB"}}
        for path in ("fourier", "direct"):
            net = FixedNetwork(grid, f, rounding="stochastic", h=0.25, steps=2, method=method,
                               lfsr_seed=SEED, image_shape=shape,
                               newton={"neumann_terms": 12, "max_iter": 10, "tol": 16},
                               fourier=wide_fourier(width, shape) if path == "fourier" else None)
            logits, trajectory, _ = net.forward(x)
            grads = net.backward(trajectory, net.loss_gradient(logits, y))
            assert not net.overflow.flag, net.overflow.counts
            _, reference = loss_and_grads(config, net.params(), f.state.to_float(
                trajectory[0][:, :35]), y)
            ours = {"A": grads["A"] * 0.25 / 8 / 2.0 ** (f.grad.frac + f.state.frac),
                    "B": grads["B"] * 0.25 / 8 / 2.0 ** (f.grad.frac + f.act.frac),
                    "C": grads["C"] / 8 / 2.0 ** (f.grad.frac + f.state.frac),
                    "d": grads["d"] / 8 / 2.0**f.grad.frac}
            assert all(np.abs(reference[n]).max() > 0 for n in "ABCd")
            errors[path, width] = max(np.abs(ours[n] - reference[n]).max()
                                      / np.abs(reference[n]).max() for n in "ABCd")
    assert errors["fourier", 24] < 1e-4, errors
    assert errors["fourier", 24] < errors["fourier", 12] / 64, errors
    for width in (12, 24):
        assert errors["fourier", width] <= 4 * errors["direct", width], errors


def test_one_channel_kernel_unit_refuses_the_adjoint():
    rng = np.random.default_rng(0)
    params = {"A": rng.normal(0, 0.3, (3, 3)), "B": rng.normal(0, 0.3, (3, 3)),
              "C": rng.normal(0, 0.3, (3, 25)), "d": np.zeros(3)}
    net = FixedNetwork(params, formats_for_width(16), rounding="nearest", h=0.25, steps=1,
                       fourier=wide_fourier(16, (5, 5)), image_shape=(5, 5))
    logits, trajectory, _ = net.forward(rng.random((2, 25)))
    with pytest.raises(ValueError, match=r"^the one-channel Fourier unit \(a k×k kernel\) has "
                                         r"no adjoint; give A and B as \(1, 1, k, k\) banks to "
                                         r"train on the Fourier path$"):
        net.backward(trajectory, net.loss_gradient(logits, np.array([0, 1])))


# --- training, the configuration and the command line -----------------------------------------


@pytest.fixture(scope="module")
def small_digits(digits):
    """The digits' first 64 training and 32 test images."""
    return data_module.Split(digits.x_train[:64], digits.y_train[:64], digits.x_test[:32],
                             digits.y_test[:32], "digits", (8, 8))


@pytest.mark.parametrize("channels", [1, 2])
def test_training_on_the_fourier_path_follows_the_direct_path(small_digits, channels):
    """Two epochs of two mini-batches from the same seeds on both paths: the Fourier path's
    loss goes down, training is reproducible, the kernels stay weight words, and its kernels
    and accuracy stay close to the direct path's. Tolerances: the two paths' products differ
    by a few state LSBs (the Fourier bound), so after four SGD steps of ``lr·h/batch`` the
    kernels differ by at most 8 weight LSBs (measured: up to 2), and the accuracies by at most
    2 of the 32 test images (measured: equal)."""
    config = Config(structure="conv", channels=channels, precision="fixed", epochs=2,
                    batch_size=32, lr=0.125, seed=1, conv_path="fourier")
    params, summary = train(config, small_digits)
    direct, direct_summary = train(dataclasses.replace(config, conv_path="direct"),
                                   small_digits)
    assert summary["losses"][1] < summary["losses"][0] and summary["overflows"] == 0
    assert params["A"].shape == direct["A"].shape == config.param_shapes()["A"]
    weight = config.fixed_formats().weight
    for name in "AB":
        scaled = params[name] * 2**weight.frac
        np.testing.assert_array_equal(scaled, np.round(scaled))    # exactly weight words
        assert np.abs(params[name] - direct[name]).max() <= 8 * weight.lsb
        assert not np.array_equal(params[name], init_params(config)[name])
    assert abs(summary["test_accuracy"] - direct_summary["test_accuracy"]) <= 2 / 32
    assert abs(summary["losses"][-1] - direct_summary["losses"][-1]) < 0.01
    again, _ = train(config, small_digits)
    for name in params:
        np.testing.assert_array_equal(params[name], again[name])
    # Evaluating the trained words on the Fourier path reproduces training's figure.
    assert accuracy(config, params, small_digits.x_test, small_digits.y_test) == \
        summary["test_accuracy"]


def test_training_needs_the_data_format_to_hold_the_grad_words():
    config = Config(structure="conv", precision="fixed", conv_path="fourier",
                    grad_format="16.13")                       # fine for inference
    with pytest.raises(ValueError, match=r"^fourier_data 22\.12 cannot hold grad words "
                                         r"\(16\.13\) exactly, which training on the Fourier "
                                         r"path needs: it needs at least 3 integer and 13 "
                                         r"fractional bits$"):
        config.check_trainable()
    dataclasses.replace(config, fourier_data="24.14").check_trainable()


def test_cli_trains_on_the_fourier_path(capsys, tmp_path, monkeypatch, small_digits):
    cut = data_module.Split(small_digits.x_train[:32], small_digits.y_train[:32],
                            small_digits.x_test[:16], small_digits.y_test[:16], "digits", (8, 8))
    monkeypatch.setitem(data_module.DATASETS, "digits", lambda: cut)
    weights = tmp_path / "w.npz"
    code, out, err = run(capsys, "train", "--structure", "conv", "--channels", 2, "--width", 16,
                         "--conv-path", "fourier", "--twiddle", "20.18", "--epochs", 1,
                         "--batch-size", 16, "--out", weights, "--json")
    assert code == 0, err
    trained = last_json(out)
    assert trained["config"]["conv_path"] == "fourier" and trained["config"]["twiddle"] == "20.18"
    config, _ = load_weights(weights)
    assert (config.conv_path, config.channels, config.precision) == ("fourier", 2, "fixed")
    # evaluate takes the weights file's path: the figure training reported.
    code, out, err = run(capsys, "evaluate", weights, "--json")
    assert code == 0, err
    assert last_json(out)["conv_path"] == "fourier"
    assert last_json(out)["test_accuracy"] == trained["test_accuracy"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--structure", "conv", "--conv-path", "fourier"],
     "conv_path 'fourier' needs precision 'fixed' (in float64 the Fourier path computes the "
     "same convolution)"),
    (["--width", "16", "--conv-path", "fourier"], "conv_path 'fourier' needs structure 'conv'"),
    (["--structure", "conv", "--width", "16", "--twiddle", "20.18"],
     "--twiddle set the Fourier path's formats: give --conv-path fourier with them"),
    (["--structure", "conv", "--width", "16", "--conv-path", "fourier", "--spectrum", "18"],
     "--spectrum: a format is written WIDTH.FRAC, e.g. 16.12, not '18'"),
    (["--structure", "conv", "--width", "16", "--conv-path", "fourier", "--on", "rtl"],
     "--conv-path fourier trains the fixed-point model; the RTL core's Fourier path is for "
     "inference (drop it, or --on model)"),
])
def test_cli_refuses_bad_fourier_training(capsys, tmp_path, argv, message):
    code, out, err = run(capsys, "train", *argv, "--out", tmp_path / "w.npz")
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1].endswith(message), err
    assert not (tmp_path / "w.npz").exists()
