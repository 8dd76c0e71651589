"""Tests of the crossbar's device and converter models (``xbarode.model.device``) and their
wiring into the fixed-point tile and network: against an independent pure-Python integer
reimplementation (its own LFSR), the exact distribution of the noise generator, exact
quantisation grids, and the ideal tile bit for bit when every model is off."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from xbarode.model.device import (
    DEVICE_SEED,
    DeviceModel,
    adc_read,
    dac_input,
    gauss_draws,
    program_weights,
    pulse_step,
    pulse_steps,
    pulsed_update,
)
from xbarode.model.fixed import Format, Lfsr, Overflow, Rounder, narrow, site_seed
from xbarode.model.fixed_net import FixedNetwork, formats_for_width
from xbarode.model.fixed_ops import FixedTile

SETTINGS = settings(max_examples=40, deadline=None)
MODES = ("floor", "nearest", "stochastic")
SEED = 0xACE1ACE1
NOISES = (0.0, 0.01, 0.06, 0.3, 1.0)


def reference_draws(seed: int, count: int) -> list[int]:
    """Draws of the documented LFSR: 32 clocks of the Galois mask 0x80200003 per draw."""
    state, out = seed, []
    for _ in range(count):
        for _ in range(32):
            state = (state >> 1) ^ (0x80200003 if state & 1 else 0)
        out.append(state)
    return out


def reference_gauss(seed: int, count: int) -> list[int]:
    """The documented generator: the four bytes of a draw summed, minus 510."""
    return [sum((d >> (8 * k)) & 0xFF for k in range(4)) - 510
            for d in reference_draws(seed, count)]


def amplitude(sigma: float) -> int:
    """``σ·2^24 / std(G)`` rounded half up, with std(G)² = 4·(256² − 1)/12 derived here."""
    return math.floor(sigma * 2**24 / math.sqrt(4 * (256**2 - 1) / 12) + 0.5)


def times_power(value: int, exponent: int) -> int:
    """``value · 2^exponent``: exact, or rounded half up (Python's ``//`` is floor)."""
    if exponent >= 0:
        return value * 2**exponent
    return (value + 2 ** (-exponent - 1)) // 2**-exponent


def round_shift(values: list[int], shift: int, mode: str, seed: int) -> list[int]:
    """``values / 2^shift`` rounded by ``mode`` (stochastic: the low bits of one draw each)."""
    if shift <= 0:
        return [v * 2**-shift for v in values]
    draws = reference_draws(seed, len(values)) if mode == "stochastic" else [0] * len(values)
    offset = {"floor": lambda r: 0, "nearest": lambda r: 2 ** (shift - 1),
              "stochastic": lambda r: r % 2**shift}[mode]
    return [(v + offset(r)) // 2**shift for v, r in zip(values, draws, strict=True)]


def clip(values: list[int], bits: int) -> tuple[list[int], int]:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    out = [min(max(v, low), high) for v in values]
    return out, sum(o != v for o, v in zip(out, values, strict=True))


def reference_adc(acc: list[int], shift: int, width: int, adc_bits, k: int, read_noise: float,
                  mode: str, round_seed: int, noise_seed: int) -> tuple[list[int], int]:
    """The documented output stage, on Python integers: noise, round, clip, scale back."""
    r = width - 1 - k
    if read_noise:
        g = reference_gauss(noise_seed, len(acc))
        acc = [v + times_power(x * amplitude(read_noise), r + shift - 24)
               for v, x in zip(acc, g, strict=True)]
    code_bits = r + 1 if adc_bits is None else min(adc_bits, r + 1)
    step = r + 1 - code_bits
    codes, clipped = clip(round_shift(acc, shift + step, mode, round_seed), code_bits)
    return [c * 2**step for c in codes], clipped


# ---------------------------------------------------------------------------------------------
# The generator.

def test_gauss_draws_are_byte_sums_of_the_documented_lfsr():
    lfsr = Lfsr(SEED)
    first = gauss_draws(lfsr, 300)
    second = gauss_draws(lfsr, 200)            # the generator draws on from where it stopped
    assert first.tolist() + second.tolist() == reference_gauss(SEED, 500)


def test_gauss_draws_have_the_irwin_hall_moments():
    # The exact distribution of the sum of four independent uniform bytes, by convolution.
    counts = np.ones(256)
    for _ in range(3):
        counts = np.convolve(counts, np.ones(256))
    support = np.arange(len(counts)) - 510
    p = counts / counts.sum()
    mean = (p * support).sum()
    variance = (p * (support - mean) ** 2).sum()
    fourth = (p * (support - mean) ** 4).sum()
    assert mean == 0 and variance == pytest.approx(21845)
    n = 1 << 17
    g = gauss_draws(Lfsr(site_seed(SEED, 7)), n).astype(np.float64)
    assert -510 <= g.min() and g.max() <= 510
    # Five standard errors of the sample mean and of the sample variance.
    assert abs(g.mean() - mean) < 5 * math.sqrt(variance / n)
    assert abs(g.var() - variance) < 5 * math.sqrt((fourth - variance**2) / n)
    # And the shape: the histogram in 16 bins against the exact bin probabilities (chi²,
    # 15 degrees of freedom; 40 is beyond the 0.9995 quantile).
    edges = np.linspace(-510, 511, 17).astype(int)
    observed = np.histogram(g, bins=edges)[0]
    expected = np.array([p[(support >= lo) & (support < hi)].sum()
                         for lo, hi in itertools.pairwise(edges)]) * n
    assert ((observed - expected) ** 2 / expected).sum() < 40


# ---------------------------------------------------------------------------------------------
# The converters.

@SETTINGS
@given(width=st.integers(3, 20), bits=st.integers(2, 24), data=st.data())
@example(width=8, bits=2, data=None)
@example(width=16, bits=16, data=None)
@example(width=16, bits=7, data=None)
def test_dac_keeps_the_top_bits_rounded_to_nearest(width, bits, data):
    fmt = Format(width, width // 2)
    words = [fmt.min_int, fmt.max_int, 0, -1, 1]
    if data is not None:
        words += data.draw(st.lists(st.integers(fmt.min_int, fmt.max_int), max_size=20))
    overflow = Overflow()
    out = dac_input(np.array(words), fmt, bits, overflow, "x.dac").tolist()
    drop = width - bits
    if drop <= 0:
        assert out == words and overflow.total == 0
        return
    codes, clipped = clip([(v + 2 ** (drop - 1)) // 2**drop for v in words], bits)
    assert out == [c * 2**drop for c in codes]
    assert overflow.counts["x.dac"] == clipped
    # On the grid of 2^bits levels over the range, within half a level unless clipped.
    assert all(v % 2**drop == 0 for v in out)
    assert all(abs(o - v) <= 2 ** (drop - 1) or o == fmt.max_int + 1 - 2**drop
               for o, v in zip(out, words, strict=True))


@SETTINGS
@given(width=st.integers(3, 16), k=st.integers(0, 3), adc_bits=st.none() | st.integers(2, 18),
       read_noise=st.sampled_from(NOISES), shift=st.integers(-2, 12),
       mode=st.sampled_from(MODES), data=st.data())
@example(width=8, k=0, adc_bits=None, read_noise=0.0, shift=4, mode="nearest", data=None)
@example(width=8, k=2, adc_bits=3, read_noise=0.0, shift=4, mode="nearest", data=None)
@example(width=16, k=1, adc_bits=2, read_noise=1.0, shift=8, mode="stochastic", data=None)
@example(width=12, k=0, adc_bits=12, read_noise=0.06, shift=0, mode="floor", data=None)
def test_adc_read_equals_the_integer_reference(width, k, adc_bits, read_noise, shift, mode,
                                               data):
    k = min(k, width - 2)
    fmt = Format(width, width - 3)
    big = 2 ** (width + max(shift, 0) + 1)
    acc = [big, -big, 0, 2 ** (width - 1 + shift) if shift >= 0 else 0, 1]
    if data is not None:
        acc += data.draw(st.lists(st.integers(-big, big), max_size=16))
    device = DeviceModel(adc_bits=adc_bits, adc_range=2.0**-k, read_noise=read_noise)
    round_seed, noise_seed = site_seed(SEED, 1), site_seed(SEED, 2)
    overflow = Overflow()
    out = adc_read(np.array(acc, dtype=np.int64), shift, fmt, device, Rounder(mode, round_seed),
                   Lfsr(noise_seed), overflow, "t.forward")
    expected, clipped = reference_adc(acc, shift, width, adc_bits, k, read_noise, mode,
                                      round_seed, noise_seed)
    assert out.tolist() == expected
    assert overflow.counts["t.forward"] == clipped and overflow.words["t.forward"] == len(acc)
    # Every output lies in the clipping range [-R, R).
    assert all(-(2 ** (width - 1 - k)) <= v < 2 ** (width - 1 - k) for v in expected)


@SETTINGS
@given(width=st.integers(2, 16), shift=st.integers(-3, 14), mode=st.sampled_from(MODES),
       extra=st.integers(0, 8), seed=st.integers(1, 2**32 - 1), data=st.data())
@example(width=2, shift=1, mode="stochastic", extra=0, seed=1, data=None)
def test_adc_with_every_part_off_is_the_narrowing(width, shift, mode, extra, seed, data):
    fmt = Format(width, 0)
    big = 2 ** (width + max(shift, 0) + 1)
    acc = np.array([big, -big, 3, -3] + ([] if data is None else data.draw(
        st.lists(st.integers(-big, big), max_size=16))), dtype=np.int64)
    # An ADC of at least the output's bits over the full scale quantises nothing further.
    adc, ideal = Overflow(), Overflow()
    device = DeviceModel(adc_bits=min(width + extra, 32))
    out = adc_read(acc, shift, fmt, device, Rounder(mode, seed), None, adc, "s")
    assert out.tolist() == narrow(acc, shift, fmt, Rounder(mode, seed), ideal, "s").tolist()
    assert adc.counts == ideal.counts and adc.words == ideal.words


def test_read_noise_has_the_stated_deviation():
    # R = 2^7 LSBs of an 8-bit word: σ = 0.06·R before rounding half up (variance + 1/12).
    fmt, n, sigma = Format(8, 4), 1 << 16, 0.06
    out = adc_read(np.zeros(n, dtype=np.int64), 0, fmt, DeviceModel(read_noise=sigma),
                   Rounder("nearest"), Lfsr(SEED))
    exact = amplitude(sigma) * math.sqrt(21845) * 2.0 ** (7 - 24)
    assert abs(exact / 128 - sigma) <= math.sqrt(21845) / 2**25
    assert out.std() == pytest.approx(math.sqrt(exact**2 + 1 / 12), rel=0.02)
    assert abs(out.mean()) < 5 * out.std() / math.sqrt(n)


@SETTINGS
@given(width=st.integers(4, 16), states_bits=st.integers(2, 18),
       program_noise=st.sampled_from(NOISES), mode=st.sampled_from(MODES), data=st.data())
@example(width=16, states_bits=2, program_noise=0.0, mode="nearest", data=None)
@example(width=8, states_bits=8, program_noise=1.0, mode="floor", data=None)
@example(width=16, states_bits=10, program_noise=0.3, mode="stochastic", data=None)
def test_program_weights_equals_the_integer_reference(width, states_bits, program_noise, mode,
                                                      data):
    fmt = Format(width, width - 2)
    words = [fmt.min_int, fmt.max_int, 0, -1, 1]
    if data is not None:
        words += data.draw(st.lists(st.integers(fmt.min_int, fmt.max_int), max_size=16))
    device = DeviceModel(states=2**states_bits, program_noise=program_noise)
    overflow = Overflow()
    out = program_weights(np.array(words), fmt, device, Rounder(mode, site_seed(SEED, 3)),
                          Lfsr(SEED), overflow, "W")
    expected, snapped = list(words), 0
    drop = width - states_bits
    if drop > 0:
        codes, snapped = clip(round_shift(words, drop, mode, site_seed(SEED, 3)), states_bits)
        expected = [c * 2**drop for c in codes]
        assert all(v % 2**drop == 0 for v in expected)   # on the grid of levels
    noisy = 0
    if program_noise:
        g = reference_gauss(SEED, len(words))
        summed = [v + times_power(x * amplitude(program_noise), width - 1 - 24)
                  for v, x in zip(expected, g, strict=True)]
        expected, noisy = clip(summed, width)
    assert out.tolist() == expected
    assert overflow.counts["W.states"] == snapped and overflow.counts["W.program"] == noisy


# ---------------------------------------------------------------------------------------------
# Pulsed updates.

def reference_pulses(w, wfmt, deltas, dfmt, xs, xfmt, shift, pulses, asymmetry, soft, row_seed,
                     col_seed):
    """The documented pulse trains and steps on Python integers, sample by sample."""
    rows, cols = len(w), len(w[0])
    step = 2 ** (dfmt.width + xfmt.width - 2 + wfmt.frac - dfmt.frac - xfmt.frac - shift
                 - (pulses.bit_length() - 1))
    row_draws = iter(reference_draws(row_seed, len(deltas) * rows * pulses))
    col_draws = iter(reference_draws(col_seed, len(xs) * cols * pulses))

    def fires(words, fmt, draws):
        return [[(next(draws) % 2 ** (fmt.width - 1)) < abs(v) for _ in range(pulses)]
                for v in words]

    trains = [(fires(d, dfmt, row_draws), fires(x, xfmt, col_draws))
              for d, x in zip(deltas, xs, strict=True)]
    a = math.floor(asymmetry * 2**16 + 0.5)
    half = 2 ** (wfmt.width - 1)
    w = [list(row) for row in w]
    clipped = 0
    for (rf, cf), d, x in zip(trains, deltas, xs, strict=True):
        new = [list(row) for row in w]
        for i in range(rows):
            for j in range(cols):
                c = sum(rf[i][t] and cf[j][t] for t in range(pulses))
                sign = -((d[i] > 0) - (d[i] < 0)) * ((x[j] > 0) - (x[j] < 0))
                if not c or not sign:
                    continue
                v = w[i][j]
                if sign > 0:
                    bound = half - v if soft else half
                    move = step * (2**16 + a) * bound // 2 ** (16 + wfmt.width - 1)
                else:
                    bound = v + half if soft else half
                    move = -(step * (2**16 - a) * bound // 2 ** (16 + wfmt.width - 1))
                total = v + c * move
                new[i][j] = min(max(total, wfmt.min_int), wfmt.max_int)
                clipped += new[i][j] != total
        w = new
    return w, clipped


@SETTINGS
@given(rows=st.integers(1, 4), cols=st.integers(1, 4), samples=st.integers(1, 4),
       pulses=st.sampled_from((1, 4, 32)), asymmetry=st.sampled_from((0.0, 0.25, -0.5, 0.9)),
       soft=st.booleans(), data=st.data())
@example(rows=2, cols=3, samples=2, pulses=1, asymmetry=0.0, soft=False, data=None)
@example(rows=4, cols=4, samples=4, pulses=32, asymmetry=-0.5, soft=True, data=None)
def test_pulsed_update_equals_the_integer_reference(rows, cols, samples, pulses, asymmetry, soft,
                                                    data):
    wfmt, dfmt, xfmt = Format(10, 8), Format(6, 3), Format(7, 4)
    rng = np.random.default_rng(samples if data is None else data.draw(st.integers(0, 2**16)))
    w = rng.integers(wfmt.min_int, wfmt.max_int, (rows, cols), endpoint=True)
    w[0, 0] = wfmt.max_int                                      # at the bounds
    w[-1, -1] = wfmt.min_int
    deltas = rng.integers(dfmt.min_int, dfmt.max_int, (samples, rows), endpoint=True)
    xs = rng.integers(xfmt.min_int, xfmt.max_int, (samples, cols), endpoint=True)
    deltas[0, 0], xs[0, 0] = dfmt.min_int, xfmt.min_int         # probability 1: every slot
    device = DeviceModel(pulses=pulses, asymmetry=asymmetry, soft_bounds=soft)
    overflow = Overflow()
    out = pulsed_update(w, wfmt, deltas, dfmt, xs, xfmt, shift=2, device=device,
                        row_lfsr=Lfsr(site_seed(SEED, 3)), col_lfsr=Lfsr(site_seed(SEED, 4)),
                        overflow=overflow, label="W")
    expected, clipped = reference_pulses(w.tolist(), wfmt, deltas.tolist(), dfmt, xs.tolist(),
                                         xfmt, 2, pulses, asymmetry, soft, site_seed(SEED, 3),
                                         site_seed(SEED, 4))
    assert out.tolist() == expected
    assert overflow.counts["W.weights"] == clipped
    assert overflow.words["W.weights"] == rows * cols * samples


def test_pulsed_update_is_the_sgd_step_on_average():
    # One sample 2000 times: p = 64/128, q = 32/128, BL = 4 slots coincide 0.5 times per
    # sample on average, each a step of 2^(7 + 7 + 14 - 6 - 6 - 10 - 2) = 16 LSBs: 8 LSBs per
    # sample, the SGD step -δ·x·2^-10 = 0.5·2^-10 in value, 8 LSBs of Q2.14.
    wfmt, fmt = Format(16, 14), Format(8, 6)
    n, delta, x = 2000, 64, -32
    sgd = -delta * x * 2.0 ** (wfmt.frac - 2 * fmt.frac - 10)       # LSBs per sample
    out = pulsed_update(np.zeros((1, 1), dtype=np.int64), wfmt, np.full((n, 1), delta), fmt,
                        np.full((n, 1), x), fmt, shift=10, device=DeviceModel(pulses=4),
                        row_lfsr=Lfsr(SEED), col_lfsr=Lfsr(site_seed(SEED, 1)))
    step, p = 16, 0.5 * 0.25
    assert sgd == 4 * p * step
    sd = step * math.sqrt(n * 4 * p * (1 - p))                      # binomial coincidences
    assert abs(int(out[0, 0]) - n * sgd) < 5 * sd


def test_pulse_steps_closed_form():
    wfmt = Format(8, 6)
    w = np.array([wfmt.min_int, -64, 0, 64, wfmt.max_int])
    up, down = pulse_steps(w, wfmt, 64, DeviceModel(pulses=2, asymmetry=0.25))
    assert up.tolist() == [80] * 5 and down.tolist() == [48] * 5     # 64·(1 ± 1/4)
    up, down = pulse_steps(w, wfmt, 64, DeviceModel(pulses=2, asymmetry=0.25, soft_bounds=True))
    # Scaled by (128 - w)/128 and (w + 128)/128, floored.
    assert up.tolist() == [160, 120, 80, 40, 0] and down.tolist() == [0, 24, 48, 72, 95]
    assert pulse_step(wfmt, Format(6, 3), Format(7, 4), 2, 32) == 2 ** (5 + 6 + 6 - 3 - 4 - 2 - 5)
    with pytest.raises(ValueError, match=r"^pulses: a pulse step of 2\^-2 weight LSBs is below "
                                         r"one LSB; use fewer pulses \(now 4096\) or a finer "
                                         r"weight format$"):
        pulse_step(wfmt, Format(6, 3), Format(7, 4), 0, 4096)
    big = Format(32, 0)
    # The largest step whose products stay in int64: e + 17 + W <= 62.
    assert pulse_step(Format(16, 0), big, big, 33, 1) == 2**29
    with pytest.raises(ValueError, match=r"^pulses: a pulse step of 2\^30 weight LSBs exceeds "
                                         r"the weight range; use more pulses \(now 1\) or a "
                                         r"larger shift$"):
        pulse_step(Format(16, 0), big, big, 32, 1)


# ---------------------------------------------------------------------------------------------
# The tile and the network.

def tile(weights, fmt, mode, overflow, device=None, seed=SEED, holds_transpose=False):
    return FixedTile(weights, weight_format=fmt, acc_width=48, rounder=Rounder(mode, seed),
                     overflow=overflow, name="W", device=device,
                     holds_transpose=holds_transpose)


def exercise(t: FixedTile, x, y, fmt: Format):
    """Forward, transposed and an SGD step; everything they return or leave behind."""
    out = [t.forward(x, fmt, fmt, shift=1), t.transposed(y, fmt, fmt)]
    t.apply_gradient(np.outer(y[0], x[0]), 2 * fmt.frac, shift=3, transposed=True)
    out.append(t.forward(x, fmt, fmt, shift=2))
    return [o.tolist() for o in out] + [t.weights.tolist(), dict(t.overflow.counts),
                                        dict(t.overflow.words)]


@SETTINGS
@given(width=st.integers(4, 16), rows=st.integers(1, 5), cols=st.integers(1, 5),
       mode=st.sampled_from(MODES), seed=st.integers(1, 2**32 - 1), data=st.data())
@example(width=4, rows=1, cols=1, mode="stochastic", seed=1, data=None)
@example(width=16, rows=5, cols=5, mode="nearest", seed=SEED, data=None)
def test_tile_with_every_model_off_is_the_ideal_tile(width, rows, cols, mode, seed, data):
    fmt = Format(width, width - 2)
    rng = np.random.default_rng(seed if data is None else data.draw(st.integers(0, 2**16)))
    w = rng.integers(fmt.min_int, fmt.max_int, (rows, cols), endpoint=True)
    x = rng.integers(fmt.min_int, fmt.max_int, (3, cols), endpoint=True)
    y = rng.integers(fmt.min_int, fmt.max_int, (3, rows), endpoint=True)
    ideal = exercise(tile(w, fmt, mode, Overflow(), seed=seed), x, y, fmt)
    assert exercise(tile(w, fmt, mode, Overflow(), DeviceModel(), seed=seed), x, y, fmt) == ideal
    # The general output stage at the output's own resolution gives the same words too.
    fine = DeviceModel(adc_bits=width, dac_bits=width, states=2**width)
    assert exercise(tile(w, fmt, mode, Overflow(), fine, seed=seed), x, y, fmt) == ideal


def test_tile_with_every_model_on_equals_its_parts():
    fmt, mode = Format(10, 8), "stochastic"
    rng = np.random.default_rng(5)
    w = rng.integers(fmt.min_int, fmt.max_int, (4, 6), endpoint=True)
    x = rng.integers(fmt.min_int, fmt.max_int, (3, 6), endpoint=True)
    y = rng.integers(fmt.min_int, fmt.max_int, (3, 4), endpoint=True)
    device = DeviceModel(dac_bits=6, adc_bits=5, adc_range=0.5, read_noise=0.06,
                         program_noise=0.02, states=64)
    t = tile(w, fmt, mode, Overflow(), device)
    # The parts, with the documented generators: site_seed(device_seed, purpose).
    read, program = Lfsr(site_seed(DEVICE_SEED, 0)), Lfsr(site_seed(DEVICE_SEED, 1))
    states, rounder = Rounder(mode, site_seed(DEVICE_SEED, 2)), Rounder(mode, SEED)
    held = program_weights(w, fmt, device, states, program)
    assert t.weights.tolist() == held.tolist()
    acc = dac_input(x, fmt, 6).astype(np.int64) @ held.T
    assert t.forward(x, fmt, fmt).tolist() == adc_read(acc, fmt.frac, fmt, device, rounder,
                                                       read).tolist()
    acc = dac_input(y, fmt, 6).astype(np.int64) @ held
    assert t.transposed(y, fmt, fmt).tolist() == adc_read(acc, fmt.frac, fmt, device, rounder,
                                                           read).tolist()
    grad = np.outer(y[0], x[0])
    t.apply_gradient(grad, 2 * fmt.frac, shift=4, transposed=True)
    step = narrow(-grad.T, fmt.frac + 4, fmt, rounder).T
    written = program_weights(np.clip(held + step, fmt.min_int, fmt.max_int).T, fmt, device,
                              states, program).T
    assert t.weights.tolist() == written.tolist()


def small_network(device=None, **kwargs):
    rng = np.random.default_rng(3)
    params = {"A": rng.normal(0, 0.3, (16, 16)), "B": rng.normal(0, 0.3, (16, 16)),
              "C": rng.normal(0, 0.3, (10, 16)), "d": rng.normal(0, 0.1, 10)}
    return FixedNetwork(params, formats_for_width(12), rounding="stochastic", h=0.25, steps=3,
                        device=device, **kwargs)


def train_once(net: FixedNetwork):
    x = np.random.default_rng(4).uniform(0, 1, (8, 16))
    logits, trajectory, _ = net.forward(x)
    grads = net.backward(trajectory, net.loss_gradient(logits, np.arange(8) % 10))
    net.sgd_step(grads, lr=0.125, batch_size=8)
    return ([logits.tolist()] + [v.tolist() for v in net.params().values()]
            + [dict(net.overflow.counts)])


def test_network_with_every_model_off_is_the_ideal_network():
    assert train_once(small_network(DeviceModel())) == train_once(small_network())


def test_network_tiles_draw_from_their_own_sites():
    device = DeviceModel(read_noise=0.01, program_noise=0.01)
    net = small_network(device)
    net_again = small_network(device)
    assert train_once(net) == train_once(net_again)                 # deterministic
    assert train_once(small_network(device, lfsr_seed=7)) != train_once(small_network(device))
    # Tile B's generators are sites 16 + 5 … 20 + 5 of the network's seed; the core's tile B
    # holds Bᵀ, so B's programming draws follow Bᵀ's row-major order (LOAD_B's).
    rng = np.random.default_rng(3)
    rng.normal(0, 0.3, (16, 16))
    b = formats_for_width(12).weight.quantize(rng.normal(0, 0.3, (16, 16)), "nearest")
    held = program_weights(b.T, formats_for_width(12).weight, device, None,
                           Lfsr(site_seed(SEED, 16 + 5 + 1))).T
    assert small_network(device).B.weights.tolist() == held.tolist()
    assert small_network(device).A.weights.tolist() != small_network(device).B.weights.tolist()


def test_a_tile_holding_the_transpose_writes_in_its_order():
    fmt, mode = Format(10, 8), "stochastic"
    w = np.random.default_rng(8).integers(fmt.min_int, fmt.max_int, (4, 6), endpoint=True)
    device = DeviceModel(program_noise=0.05, states=64)
    states, program = Rounder(mode, site_seed(DEVICE_SEED, 2)), Lfsr(site_seed(DEVICE_SEED, 1))
    held = program_weights(w.T, fmt, device, states, program).T
    t = tile(w, fmt, mode, Overflow(), device, holds_transpose=True)
    assert t.weights.tolist() == held.tolist()
    assert tile(w, fmt, mode, Overflow(), device).weights.tolist() != held.tolist()
    # LOAD_W: the next draws of the same generators, again in Wᵀ's order.
    new = np.random.default_rng(9).integers(fmt.min_int, fmt.max_int, (4, 6), endpoint=True)
    t.load(new)
    assert t.weights.tolist() == program_weights(new.T, fmt, device, states, program).T.tolist()


def test_tile_pulsed_update_drives_the_held_matrix_with_its_generators():
    fmt = Format(12, 9)
    rng = np.random.default_rng(8)
    w = rng.integers(-500, 500, (3, 5))
    deltas = rng.integers(fmt.min_int, fmt.max_int, (4, 3), endpoint=True)
    xs = rng.integers(fmt.min_int, fmt.max_int, (4, 5), endpoint=True)
    device = DeviceModel(pulses=8, asymmetry=0.1, soft_bounds=True)
    for transposed in (False, True):
        # The tile's W is (3, 5) either way; with ``transposed`` the hardware holds Wᵀ, whose
        # rows the x words drive.
        t = tile(w, fmt, "nearest", Overflow(), device)
        t.pulsed_update(deltas, fmt, xs, fmt, shift=6, transposed=transposed)
        held, rows, cols = (w.T, xs, deltas) if transposed else (w, deltas, xs)
        expected = pulsed_update(held, fmt, rows, fmt, cols, fmt, shift=6, device=device,
                                 row_lfsr=Lfsr(site_seed(DEVICE_SEED, 3)),
                                 col_lfsr=Lfsr(site_seed(DEVICE_SEED, 4)))
        assert t.weights.tolist() == (expected.T if transposed else expected).tolist()


def test_network_sgd_step_with_pulses():
    device = DeviceModel(pulses=8)
    pulsed = train_once(small_network(device))
    assert pulsed == train_once(small_network(device))                  # deterministic
    assert pulsed[1:4] != train_once(small_network())[1:4]              # A, B, C moved otherwise
    # Each tile's step: its own row and column generators (sites 16 + 5k + 3, + 4), the shift
    # of lr/batch (3 + 3) and, for A and B, of h (2); B's hardware tile holds Bᵀ.
    net = small_network(device)
    x = np.random.default_rng(4).uniform(0, 1, (8, 16))
    logits, trajectory, _ = net.forward(x)
    grads = net.backward(trajectory, net.loss_gradient(logits, np.arange(8) % 10))
    before = {name: getattr(net, name).weights.copy() for name in "ABC"}
    net.sgd_step(grads, lr=0.125, batch_size=8)
    f = net.formats
    for k, (name, in_format, shift) in enumerate((("A", f.state, 8), ("B", f.act, 8),
                                                  ("C", f.state, 6))):
        deltas, xs = grads["samples"][name]
        held, rows, cols = (before[name].T, (xs, in_format), (deltas, f.grad)) if name == "B" \
            else (before[name], (deltas, f.grad), (xs, in_format))
        expected = pulsed_update(held, f.weight, *rows, *cols, shift=shift, device=device,
                                 row_lfsr=Lfsr(site_seed(SEED, 16 + 5 * k + 3)),
                                 col_lfsr=Lfsr(site_seed(SEED, 16 + 5 * k + 4)))
        expected = expected.T if name == "B" else expected
        assert getattr(net, name).weights.tolist() == expected.tolist(), name
    # The bias is digital: with round-to-nearest it takes the digital step exactly.
    rng = np.random.default_rng(3)
    params = {"A": rng.normal(0, 0.3, (16, 16)), "B": rng.normal(0, 0.3, (16, 16)),
              "C": rng.normal(0, 0.3, (10, 16)), "d": rng.normal(0, 0.1, 10)}
    nets = [FixedNetwork(params, formats_for_width(12), rounding="nearest", h=0.25, steps=3,
                         device=d) for d in (device, None)]
    assert train_once(nets[0])[4] == train_once(nets[1])[4]


# ---------------------------------------------------------------------------------------------
# Errors.

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dac_bits": 1}, "dac_bits must be an integer from 2 to 32 (or None for none), not 1"),
    ({"adc_bits": 33}, "adc_bits must be an integer from 2 to 32 (or None for none), not 33"),
    ({"adc_bits": True}, "adc_bits must be an integer from 2 to 32 (or None for none), not True"),
    ({"adc_range": 0.75}, "adc_range must be a power of two from 2^-31 to 1 (a fraction of "
                          "the output format's full scale), not 0.75"),
    ({"adc_range": 2.0}, "adc_range must be a power of two from 2^-31 to 1 (a fraction of "
                         "the output format's full scale), not 2.0"),
    ({"read_noise": -0.1}, "read_noise must be a number from 0 to 1 (a standard deviation as "
                           "a fraction of the range), not -0.1"),
    ({"program_noise": float("nan")}, "program_noise must be a number from 0 to 1 (a standard "
                                      "deviation as a fraction of the range), not nan"),
    ({"states": 1000}, "states must be a power of two from 4 to 2^32 (or None for every word), "
                       "not 1000"),
    ({"states": 2}, "states must be a power of two from 4 to 2^32 (or None for every word), "
                    "not 2"),
    ({"pulses": 3}, "pulses must be a power of two from 1 to 4096 (or None for the digital SGD "
                    "step), not 3"),
    ({"pulses": 8192}, "pulses must be a power of two from 1 to 4096 (or None for the digital "
                       "SGD step), not 8192"),
    ({"pulses": 2, "asymmetry": 1.0}, "asymmetry must be a number between -1 and 1 "
                                      "(exclusive), not 1.0"),
    ({"pulses": 2, "soft_bounds": 1}, "soft_bounds must be true or false, not 1"),
    ({"asymmetry": 0.1}, "asymmetry and soft_bounds shape pulsed updates: give pulses"),
    ({"soft_bounds": True}, "asymmetry and soft_bounds shape pulsed updates: give pulses"),
])
def test_device_model_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        DeviceModel(**kwargs)


def test_device_errors_in_use():
    fmt = Format(4, 2)
    with pytest.raises(ValueError, match=r"^t: an ADC range of 0\.125 of Q2\.2's full scale "
                                         r"leaves fewer than 2 code bits$"):
        adc_read(np.zeros(2, dtype=np.int64), 0, fmt, DeviceModel(adc_range=0.125),
                 Rounder("nearest"), None, label="t")
    with pytest.raises(OverflowError, match=r"^t: the noisy sum may exceed int64$"):
        adc_read(np.array([2**62 - 2**40], dtype=np.int64), 46, Format(16, 0),
                 DeviceModel(read_noise=1.0), Rounder("nearest"), Lfsr(SEED), label="t")
    adc_read(np.array([2**62 - 2**40], dtype=np.int64), 30, Format(16, 0),     # fits
             DeviceModel(read_noise=1.0), Rounder("nearest"), Lfsr(SEED), label="t")
    with pytest.raises(TypeError, match=r"^W: device must be a DeviceModel or None, not dict$"):
        tile(np.zeros((2, 2), dtype=np.int64), fmt, "nearest", Overflow(), {"states": 4})
    with pytest.raises(ValueError, match=r"^W: pulsed updates need a device model with pulses$"):
        tile(np.zeros((2, 2), dtype=np.int64), fmt, "nearest", Overflow(),
             DeviceModel(states=4)).pulsed_update(np.zeros((1, 2)), fmt, np.zeros((1, 2)), fmt,
                                                  shift=1)
    t = tile(np.zeros((2, 2), dtype=np.int64), fmt, "nearest", Overflow(), DeviceModel(states=4))
    with pytest.raises(ValueError, match=r"^W: the device's write models"):
        t.apply_kernel_gradient(np.zeros((2, 2), dtype=np.int64), 4, shift=1,
                                taps=np.zeros((1, 2), dtype=np.int64))
    # Kernel banks take the read models (tests/test_bank_device.py), not the write models.
    with pytest.raises(ValueError, match=r"^the device's write models \(states, program_noise\) "
                                         r"need a dense network; a convolution's tied weights "
                                         r"would drift apart$"):
        FixedNetwork({"A": np.zeros((1, 1, 3, 3)), "B": np.zeros((1, 1, 3, 3)),
                      "C": np.zeros((2, 16)), "d": np.zeros(2)}, formats_for_width(12),
                     rounding="nearest", h=0.25, steps=1, image_shape=(4, 4),
                     device=DeviceModel(states=16))
    with pytest.raises(ValueError, match=r"^the device's write models"):
        small_network(DeviceModel(states=16), conv_taps=np.zeros((1, 16), dtype=np.int64))


# ---------------------------------------------------------------------------------------------
# The core's [device] table, the training configuration and the command line.

def test_core_config_reads_and_writes_the_device_table(tmp_path):
    from xbarode.model.core_config import ConfigError, CoreConfig, load_config

    path = tmp_path / "core.toml"
    path.write_text("[device]\nadc_bits = 6\nread_noise = 0.06\nstates = 256\n")
    config = load_config(path)
    assert config.device() == DeviceModel(adc_bits=6, read_noise=0.06, states=256)
    assert "[device]\ndac_bits = 0\nadc_bits = 6\nadc_range = 1.0\nread_noise = 0.06\n" \
           "program_noise = 0.0\nstates = 256\n" in config.to_toml()
    path.write_text(config.to_toml())
    assert load_config(path) == config
    # All off: no table, and the file of a core without device models.
    assert CoreConfig().device() is None and "[device]" not in CoreConfig().to_toml()
    with pytest.raises(ConfigError, match=re.escape(
            "[device] turns on adc_bits, read_noise, states: the RTL core has no device "
            "models yet (they run in the fixed-point model: xbarode train and evaluate with "
            "--dac-bits, --adc-bits, …)")):
        config.require_ideal_device("the RTL core")
    path.write_text("[device]\nnoise = 0.1\n")
    with pytest.raises(ConfigError, match=re.escape(
            f"{path}: unknown key 'noise' in [device]; expected one of dac_bits, adc_bits, "
            f"adc_range, read_noise, program_noise, states")):
        load_config(path)


@pytest.mark.parametrize(("values", "message"), [
    ({"adc_bits": 1}, "adc_bits must be 0 (none) or from 2 to 32, not 1"),
    ({"dac_bits": 33}, "dac_bits must be 0 (none) or from 2 to 32, not 33"),
    ({"dac_bits": 2.5}, "dac_bits must be an integer, not 2.5"),
    ({"states": 1000}, "states must be 0 (every word) or a power of two from 4 to 2^32, not 1000"),
    ({"adc_range": 3.0}, "adc_range must be a power of two from 2^-31 to 1 (a fraction of the "
                         "output format's full scale), not 3.0"),
    ({"read_noise": 2}, "read_noise must be a number from 0 to 1 (a standard deviation as a "
                        "fraction of the range), not 2"),
    ({"pulses": 12}, "pulses must be 0 (the digital SGD step) or a power of two from 1 to "
                     "4096, not 12"),
    ({"asymmetry": 0.2}, "asymmetry and soft_bounds shape pulsed updates: give pulses"),
    ({"pulses": 4, "soft_bounds": "yes"}, "soft_bounds must be true or false, not 'yes'"),
])
def test_core_config_rejects_bad_device_values(values, message):
    from xbarode.model.core_config import ConfigError, load_config

    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        load_config(None, values)


def test_training_config_carries_the_device():
    from xbarode.model import Config

    device = DeviceModel(read_noise=0.1, states=64)
    config = Config(precision="fixed", device=device)
    data = config.to_dict()
    assert data["device"] == {"dac_bits": None, "adc_bits": None, "adc_range": 1.0,
                              "read_noise": 0.1, "program_noise": 0.0, "states": 64,
                              "pulses": None, "asymmetry": 0.0, "soft_bounds": False}
    assert Config.from_dict(data) == config
    assert "device" not in Config(precision="fixed").to_dict()       # the ideal array's dict
    # Kernel banks take the read models, and refuse the write models as one channel does.
    Config(precision="fixed", structure="conv", channels=2, device=DeviceModel(read_noise=0.1))
    with pytest.raises(ValueError, match=r"^the device's write models \(states, "
                                         r"program_noise\) need structure 'dense'"):
        Config(precision="fixed", structure="conv", channels=2, device=device)
    with pytest.raises(ValueError, match=r"^the device's write models \(states, "
                                         r"program_noise\) need structure 'dense'"):
        Config(precision="fixed", structure="conv", device=device)


def test_cli_device_options(capsys, tmp_path):
    from helpers import last_json, run
    from xbarode.model import load_weights

    weights = tmp_path / "w.npz"
    base = ("train", "--width", 16, "--epochs", 1, "--out", weights, "--json")
    code, _, err = run(capsys, *base, "--states", 1000)
    assert code == 2 and err.strip() == (
        "xbarode train: error: --states: states must be a power of two from 4 to 2^32 (or None "
        "for every word), not 1000")
    code, _, err = run(capsys, "train", "--epochs", 1, "--read-noise", 0.1, "--out", weights)
    assert code == 2 and err.strip() == ("xbarode train: error: the device models run in fixed "
                                         "point: give --width or --format with them")
    assert not weights.exists()
    # A device option that leaves every model off trains the ideal array, bit for bit.
    assert run(capsys, *base)[0] == 0
    ideal = load_weights(weights)[1]
    code, out, _ = run(capsys, *base, "--adc-range", 1)
    assert code == 0 and "device" not in last_json(out)["config"]
    assert all(np.array_equal(ideal[k], v) for k, v in load_weights(weights)[1].items())
    code, out, _ = run(capsys, *base, "--adc-bits", 10, "--read-noise", 0.001)
    assert code == 0
    assert load_weights(weights)[0].device == DeviceModel(adc_bits=10, read_noise=0.001)
    # … and the models act: the array's training differs from the ideal one.
    assert not all(np.array_equal(ideal[k], v) for k, v in load_weights(weights)[1].items())
    assert last_json(out)["config"]["device"]["adc_bits"] == 10
    # The RTL core trains with every model (tests/test_core_training_device.py and
    # tests/test_core_pulses.py), pulses on a dense network only.
    code, _, err = run(capsys, "train", "--on", "rtl", "--pulses", 16, "--set",
                       "structure=\"conv\"")
    assert code == 2 and err.strip() == (
        "xbarode train: error: [device]: the device's write models (states, program_noise) "
        "need a dense network; a convolution's tied weights would drift apart")


def test_demo_refuses_a_core_with_device_models_before_training(capsys, tmp_path):
    from helpers import run

    core = tmp_path / "core.toml"
    core.write_text("[core]\nstructure = \"conv\"\n[device]\nstates = 64\n")
    weights = tmp_path / "w.npz"
    code, _, err = run(capsys, "demo", "--epochs", 1, "--config", core, "--out", weights)
    # A convolution's tied weights with the write models are refused.
    assert code == 2 and "[device]: the device's write models (states, program_noise) need " \
                         "a dense network" in err
    assert "(--rtl-images 0 skips the RTL run)" in err
    assert not weights.exists()


def test_core_builds_refuse_device_models_and_list_the_ideal_fields():
    from xbarode.model.core_config import ConfigError, CoreConfig
    from xbarode.sweep_network import _core_fields
    from xbarode.units import CoreParams

    ideal = CoreParams(CoreConfig()).manifest_parameters()
    assert not set(CoreConfig.DEVICE_FIELDS) & set(ideal)    # the manifest of a core as before
    assert not set(CoreConfig.DEVICE_FIELDS) & set(_core_fields(CoreConfig()))
    assert _core_fields(CoreConfig(adc_bits=6))["adc_bits"] == 6
    # The read models are built: their fields join the manifest.
    assert CoreParams(CoreConfig(adc_bits=6)).manifest_parameters()["adc_bits"] == 6
    assert CoreParams(CoreConfig(program_noise=0.01)).manifest_parameters()[
        "program_noise"] == 0.01
    # Pulses (the SGD step's) are built with training, and join the manifest.
    assert CoreParams(CoreConfig(pulses=16, training=True)).manifest_parameters()[
        "pulses"] == 16
    with pytest.raises(ConfigError, match=r"^the device's write models \(states, "
                                          r"program_noise\) need a dense network"):
        CoreParams(CoreConfig(pulses=16, training=True, structure="conv", image=(3, 3),
                              kernel=3))


def test_pulsed_update_options():
    from xbarode.cli import _device, build_parser
    from xbarode.model.core_config import load_config

    assert load_config(None, {"pulses": 16, "asymmetry": 0.1, "soft_bounds": True}).device() \
        == DeviceModel(pulses=16, asymmetry=0.1, soft_bounds=True)
    args = build_parser().parse_args(["train", "--width", "16", "--pulses", "8",
                                      "--soft-bounds", "--asymmetry", "0.1"])
    assert _device(args) == DeviceModel(pulses=8, asymmetry=0.1, soft_bounds=True)
    with pytest.raises(ValueError, match=r"^--asymmetry: asymmetry and soft_bounds shape pulsed "
                                         r"updates: give pulses$"):
        _device(build_parser().parse_args(["train", "--width", "16", "--asymmetry", "0.1"]))
