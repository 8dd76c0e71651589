"""Tests of the integer twins of the hardware operations (``xbarode.model.fixed_ops``): the
crossbar tile, Euler and Newton steps, the Hadamard product and the Fourier convolution, against
exact rational references and the float64 golden model on the same word values."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from helpers import LIVE_FRACTION
from xbarode.model import fourier_conv, odeint
from xbarode.model.fixed import Format, Overflow, Rounder
from xbarode.model.fixed_ops import (
    FixedTile,
    accumulator_bits,
    euler_step,
    fourier_conv_fixed,
    hadamard_fixed,
    newton_step,
    power_of_two_shift,
    relu_fixed,
)

SETTINGS = settings(max_examples=30, deadline=None)
MODES = ("floor", "nearest", "stochastic")
SEED = 0xACE1ACE1


def reference_draws(seed: int, count: int) -> list[int]:
    """Draws of the documented LFSR: 32 clocks of the Galois mask 0x80200003 per draw."""
    state, out = seed, []
    for _ in range(count):
        for _ in range(32):
            state = (state >> 1) ^ (0x80200003 if state & 1 else 0)
        out.append(state)
    return out


class ReferenceRounder:
    """One rounding site: rounds exact rationals given in output LSBs, one draw per word."""

    def __init__(self, mode: str, seed: int = SEED):
        self.mode, self.seed, self.used = mode, seed, 0

    def round(self, exact: list[Fraction], shift: int) -> list[int]:
        """Round words that had ``shift`` bits discarded; no draws unless ``shift > 0``."""
        if shift <= 0:
            assert all(x.denominator == 1 for x in exact)
            return [int(x) for x in exact]
        if self.mode == "floor":
            return [math.floor(x) for x in exact]
        if self.mode == "nearest":
            return [math.floor(x + Fraction(1, 2)) for x in exact]
        draws = reference_draws(self.seed, self.used + len(exact))[self.used:]
        self.used += len(exact)
        return [math.floor(x + Fraction(r % (1 << shift), 1 << shift))
                for x, r in zip(exact, draws, strict=True)]


def clamp(values: list[int], fmt: Format) -> tuple[list[int], int]:
    out = [min(max(v, fmt.min_int), fmt.max_int) for v in values]
    return out, sum(o != v for o, v in zip(out, values, strict=True))


def rho(mode: str) -> float:
    """The documented error factor: half an LSB for nearest, one LSB otherwise."""
    return 0.5 if mode == "nearest" else 1.0


def random_words(rng, fmt: Format, shape) -> np.ndarray:
    return rng.integers(fmt.min_int, fmt.max_int, size=shape, endpoint=True, dtype=np.int64)


def values(ints, fmt: Format) -> np.ndarray:
    return np.asarray(ints, dtype=np.float64) * 2.0**-fmt.frac


@st.composite
def formats(draw, min_width=2, max_width=20):
    width = draw(st.integers(min_width, max_width))
    return Format(width, draw(st.integers(0, width - 1)))


def tile(weights, fmt, mode, *, seed=SEED, acc_width=62, name="tile"):
    return FixedTile(weights, weight_format=fmt, acc_width=acc_width,
                     rounder=Rounder(mode, seed), overflow=Overflow(), name=name)


# --- accumulator_bits and power_of_two_shift -------------------------------------------------


def minimal_accumulator(a: Format, b: Format, terms: int) -> int:
    """Fewest signed bits that hold every sum of ``terms`` products of ``a`` and ``b`` words."""
    products = [x * y for x in (a.min_int, a.max_int) for y in (b.min_int, b.max_int)]
    lo, hi = terms * min(products), terms * max(products)
    bits = 1
    while not (-(2 ** (bits - 1)) <= lo and hi <= 2 ** (bits - 1) - 1):
        bits += 1
    return bits


@pytest.mark.parametrize(("wa", "wb", "terms", "hand"),
                         [(16, 16, 13, 35), (8, 12, 7, 22), (2, 2, 3, 5), (20, 9, 100, 35)])
def test_accumulator_bits_by_hand(wa, wb, terms, hand):
    # E.g. 13 products of 16-bit words: 13·2^15·2^15 < 2^34, so 35 signed bits.
    a, b = Format(wa, 0), Format(wb, 0)
    assert accumulator_bits(a, b, terms) == hand == minimal_accumulator(a, b, terms)
    assert accumulator_bits(a, b, terms, extra=1) == hand + 1


@given(a=formats(max_width=32), b=formats(max_width=32), terms=st.integers(1, 5000))
@SETTINGS
def test_accumulator_bits_hold_every_sum_when_terms_is_not_a_power_of_two(a, b, terms):
    assume(terms & (terms - 1))
    assert accumulator_bits(a, b, terms) >= minimal_accumulator(a, b, terms)


@pytest.mark.parametrize("terms", [1, 2, 64])
def test_accumulator_bits_hold_a_power_of_two_number_of_extreme_products(terms):
    a = b = Format(16, 12)
    assert accumulator_bits(a, b, terms) >= minimal_accumulator(a, b, terms)


@pytest.mark.parametrize(("value", "shift"), [(0.25, 2), (1.0, 0), (2.0, -1), (0.125, 3),
                                              (2.0**-40, 40), (1024.0, -10)])
def test_power_of_two_shift(value, shift):
    assert power_of_two_shift(value, "h") == shift
    assert 2.0**-shift == value


@pytest.mark.parametrize(("value", "message"),
                         [(0.3, "lr must be a power of two in fixed point"),
                          (3.0, "lr must be a power of two"), (0.0, "lr must be > 0"),
                          (-0.25, "lr must be > 0"), (float("nan"), "lr must be > 0")])
def test_power_of_two_shift_rejects(value, message):
    with pytest.raises(ValueError, match=message):
        power_of_two_shift(value, "lr")


def test_relu_fixed():
    u = np.array([[-3, 0, 5], [7, -1, 0]], dtype=np.int64)
    r, mask = relu_fixed(u)
    assert r.tolist() == [[0, 0, 5], [7, 0, 0]]
    assert mask.tolist() == [[False, False, True], [True, False, False]]


# --- FixedTile -------------------------------------------------------------------------------


def reference_product(weights, x, shift_total, bias=None, bias_shift=0, transpose=False):
    """Exact sums of ``W x`` (or ``Wᵀ y``) per batch row, in output LSBs, in C order."""
    w = weights.T.tolist() if transpose else weights.tolist()
    out = []
    for row in x.tolist():
        for i, wrow in enumerate(w):
            acc = sum(a * b for a, b in zip(wrow, row, strict=True))
            if bias is not None:
                acc += int(bias[i]) * 2**bias_shift
            out.append(Fraction(acc, 2**shift_total) if shift_total >= 0
                       else Fraction(acc * 2**-shift_total))
    return out


@given(data=st.data(), rows=st.integers(1, 13), cols=st.integers(1, 13),
       batch=st.integers(1, 4), shift=st.integers(0, 4), mode=st.sampled_from(MODES),
       with_bias=st.booleans(), transposed=st.booleans())
@SETTINGS
def test_tile_products_equal_exact_reference(data, rows, cols, batch, shift, mode, with_bias,
                                             transposed):
    wf, inf, outf = data.draw(formats()), data.draw(formats()), data.draw(formats())
    total = wf.frac + inf.frac + shift - outf.frac
    assume(mode != "stochastic" or total <= 32)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    weights = random_words(rng, wf, (rows, cols))
    x = random_words(rng, inf, (batch, rows if transposed else cols))
    bias = random_words(rng, wf, (rows,)) if with_bias and not transposed else None
    t = tile(weights, wf, mode, seed=1234)
    if transposed:
        got = t.transposed(x, inf, outf, shift=shift)
    else:
        got = t.forward(x, inf, outf, shift=shift, bias=bias)
    exact = reference_product(weights, x, total, bias, inf.frac, transposed)
    expected, clipped = clamp(ReferenceRounder(mode, 1234).round(exact, total), outf)
    assert got.dtype == np.int64 and got.shape == (batch, cols if transposed else rows)
    assert got.ravel().tolist() == expected
    label = "tile.transposed" if transposed else "tile.forward"
    assert t.overflow.counts[label] == clipped and t.overflow.total == clipped
    for word, x_exact in zip(got.ravel().tolist(), exact, strict=True):
        if outf.min_int < word < outf.max_int:
            error = word - x_exact
            if mode == "nearest":
                assert -Fraction(1, 2) < error <= Fraction(1, 2)
            else:
                assert (-1 < error < 1) if mode == "stochastic" else (-1 < error <= 0)


def test_tile_forward_on_odd_sizes_with_documented_bound():
    rng = np.random.default_rng(7)
    wf, inf, outf = Format(12, 10), Format(14, 9), Format(16, 8)
    weights = random_words(rng, wf, (13, 7))
    x = random_words(rng, inf, (5, 7))
    exact = values(weights, wf) @ values(x, inf).T
    for mode in MODES:
        got = values(tile(weights, wf, mode).forward(x, inf, outf), outf)
        assert np.abs(got - exact.T).max() <= rho(mode) * outf.lsb
        got = values(tile(weights, wf, mode).transposed(random_words(rng, inf, (3, 13)), inf,
                                                       outf), outf)
        assert got.shape == (3, 7)


@pytest.mark.parametrize("w_value", ["min", "max"])
@pytest.mark.parametrize("x_value", ["min", "max"])
def test_tile_saturates_at_full_scale(w_value, x_value):
    fmt = Format(10, 8)
    weights = np.full((13, 7), getattr(fmt, f"{w_value}_int"), dtype=np.int64)
    x = np.full((3, 7), getattr(fmt, f"{x_value}_int"), dtype=np.int64)
    y = np.full((3, 13), getattr(fmt, f"{x_value}_int"), dtype=np.int64)
    need = accumulator_bits(fmt, fmt, 13)
    t = tile(weights, fmt, "nearest", acc_width=need, name="T")
    # Seven products of ±(2^9)·(2^9) at 16 fractional bits: |sum| near 7 in value, > max 1.99.
    positive = (w_value == "min") == (x_value == "min")
    expected = fmt.max_int if positive else fmt.min_int
    assert (t.forward(x, fmt, fmt) == expected).all()
    assert (t.transposed(y, fmt, fmt) == expected).all()
    assert t.overflow.counts == {"T.forward": 3 * 13, "T.transposed": 3 * 7}
    assert t.overflow.flag


def test_tile_accumulator_too_narrow():
    wf, inf = Format(16, 14), Format(12, 8)
    weights = np.zeros((13, 7), dtype=np.int64)
    # Hand computation: 16 + 12 - 1 bits per product, 3 more for 7 terms, 4 more for 13.
    assert accumulator_bits(wf, inf, 7) == 30 and accumulator_bits(wf, inf, 13) == 31
    x, y = np.zeros((2, 7), np.int64), np.zeros((2, 13), np.int64)
    t = tile(weights, wf, "floor", acc_width=29, name="A")
    with pytest.raises(ValueError, match=r"A: an accumulator of 29 bits is too narrow for a sum "
                                         r"of 7 products of 16x12-bit words \(needs 30 bits\)"):
        t.forward(x, inf, inf)
    t = tile(weights, wf, "floor", acc_width=30)
    t.forward(x, inf, inf)
    with pytest.raises(ValueError, match=r"too narrow .* 13 products .*needs 31 bits"):
        t.transposed(y, inf, inf)
    with pytest.raises(ValueError, match=r"too narrow .*needs 31 bits"):
        t.forward(x, inf, inf, bias=np.zeros(13, np.int64))
    tile(weights, wf, "floor", acc_width=31).transposed(y, inf, inf)


def test_tile_rejects_bad_weights():
    fmt = Format(8, 4)
    with pytest.raises(ValueError, match=r"W: weights lie outside Q4\.4"):
        tile(np.array([[128]]), fmt, "floor", name="W")
    with pytest.raises(ValueError, match="W: weights must be a 2-D integer array"):
        tile(np.array([1.0]), fmt, "floor", name="W")
    with pytest.raises(ValueError, match="weights must be a 2-D integer array"):
        tile(np.zeros(3, np.int64), fmt, "floor")


def reference_apply_gradient(weights, grad, shift_total, wf, rounder):
    """``W + round(-grad·2^-shift)``: the rounding acts on the step applied (documented)."""
    exact = [Fraction(-g, 2**shift_total) if shift_total >= 0 else Fraction(-g * 2**-shift_total)
             for g in grad.ravel().tolist()]
    step, step_clipped = clamp(rounder.round(exact, shift_total), wf)
    new, clipped = clamp([w + s for w, s in zip(weights.ravel().tolist(), step, strict=True)], wf)
    return new, step_clipped, clipped, exact


@given(data=st.data(), rows=st.integers(1, 9), cols=st.integers(1, 9), shift=st.integers(0, 6),
       mode=st.sampled_from(MODES), grad_bits=st.integers(0, 40))
@SETTINGS
def test_tile_apply_gradient_equals_reference(data, rows, cols, shift, mode, grad_bits):
    wf = data.draw(formats(min_width=4))
    grad_frac = data.draw(st.integers(0, 24))
    total = grad_frac + shift - wf.frac
    assume(mode != "stochastic" or total <= 32)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    weights = random_words(rng, wf, (rows, cols))
    grad = rng.integers(-(2**grad_bits), 2**grad_bits, size=(rows, cols), endpoint=True)
    t = tile(weights, wf, mode, seed=77, name="W")
    t.apply_gradient(grad, grad_frac, shift=shift)
    expected, step_clipped, clipped, exact = reference_apply_gradient(
        weights, grad, total, wf, ReferenceRounder(mode, 77))
    assert t.weights.ravel().tolist() == expected
    assert t.overflow.counts["W.update"] == step_clipped
    assert t.overflow.counts["W.weights"] == clipped
    if not step_clipped and not clipped:
        bound = Fraction(1, 2) if mode == "nearest" else Fraction(1)
        for new, old, step in zip(expected, weights.ravel().tolist(), exact, strict=True):
            assert abs(new - (old + step)) <= bound


@given(data=st.data(), height=st.integers(1, 5), width=st.integers(1, 5),
       shift=st.integers(0, 6), mode=st.sampled_from(MODES), transposed=st.booleans())
@SETTINGS
def test_tile_apply_kernel_gradient_equals_the_pulled_back_reference(data, height, width, shift,
                                                                    mode, transposed):
    # Reference: the float pull-back (conv.kernel_pullback) of the gradient held by the tile,
    # one step per tap through the reference rounder (tap order), the matrix rebuilt by
    # conv.conv_matrix. ``transposed``: the tile holds Wᵀ (the core's B).
    from xbarode.model.conv import conv_matrix, kernel_pullback, tap_columns

    k = data.draw(st.sampled_from([s for s in (1, 3, 5) if s <= min(height, width)]))
    wf = data.draw(formats(min_width=4))
    grad_frac = data.draw(st.integers(0, 24))
    total = grad_frac + shift - wf.frac
    assume(mode != "stochastic" or total <= 32)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    kernel = random_words(rng, wf, (k, k))
    held = conv_matrix(kernel, (height, width)).astype(np.int64)
    m = height * width
    grad = rng.integers(-(2**30), 2**30, size=(m, m), endpoint=True)
    t = tile(held.T if transposed else held, wf, mode, seed=77, name="W")
    t.apply_kernel_gradient(grad.T if transposed else grad, grad_frac, shift=shift,
                            taps=tap_columns(k, (height, width)), transposed=transposed)
    sums = kernel_pullback(grad.astype(np.float64), k, (height, width))
    new, step_clipped, clipped, _ = reference_apply_gradient(
        kernel, sums.astype(np.int64), total, wf, ReferenceRounder(mode, 77))
    want = conv_matrix(np.reshape(new, (k, k)), (height, width)).astype(np.int64)
    assert np.array_equal(t.weights, want.T if transposed else want)
    assert t.overflow.counts.get("W.update", 0) == step_clipped
    assert t.overflow.counts.get("W.weights", 0) == clipped


def test_tile_apply_gradient_saturates_weights():
    fmt = Format(8, 6)
    t = tile(np.array([[120, -120, 0]]), fmt, "nearest", name="W")
    # Steps +2.0, -2.0, +2.0: +2.0 is 128 LSBs and saturates to 127; -2.0 is min_int.
    t.apply_gradient(np.array([[-64, 64, -64]]), 6, shift=-1)
    assert t.weights.tolist() == [[127, -128, 127]]
    assert t.overflow.counts == {"W.update": 2, "W.weights": 2}


@given(rows=st.integers(1, 7), cols=st.integers(1, 7), shift=st.integers(0, 4),
       mode=st.sampled_from(MODES), seed=st.integers(0, 2**32))
@settings(max_examples=10, deadline=None)
def test_tile_update_adds_the_rank_one_product(rows, cols, shift, mode, seed):
    wf, uf, vf = Format(12, 8), Format(10, 6), Format(10, 7)
    rng = np.random.default_rng(seed)
    weights = random_words(rng, wf, (rows, cols)) // 4
    u, v = random_words(rng, uf, (rows,)) // 8, random_words(rng, vf, (cols,)) // 8
    t = tile(weights, wf, mode, seed=5)
    t.update(u, uf, v, vf, shift=shift)
    total = uf.frac + vf.frac + shift - wf.frac
    exact = [Fraction(a * b, 2**total) for a in u.tolist() for b in v.tolist()]
    step, _ = clamp(ReferenceRounder(mode, 5).round(exact, total), wf)
    expected, _ = clamp([w + s for w, s in zip(weights.ravel().tolist(), step, strict=True)], wf)
    assert t.weights.ravel().tolist() == expected


def test_tile_update_sign_by_hand():
    fmt = Format(8, 4)
    t = tile(np.zeros((2, 2), np.int64), fmt, "floor")
    t.update(np.array([16, -8]), fmt, np.array([16, 25]), fmt, shift=1)
    # W + 0.5·u·vᵀ with u = (1, -0.5), v = (1, 1.5625), in LSBs of 1/16:
    # [[8, 12.5], [-4, -6.25]], floored.
    assert t.weights.tolist() == [[8, 12], [-4, -7]]


def test_tile_is_deterministic_for_a_seed():
    rng = np.random.default_rng(3)
    fmt = Format(16, 12)
    weights, x = random_words(rng, fmt, (13, 7)) // 8, random_words(rng, fmt, (6, 7)) // 8
    runs = []
    for seed in (11, 11, 12):
        t = tile(weights, fmt, "stochastic", seed=seed)
        y = t.forward(x, fmt, fmt)
        t.apply_gradient(np.outer(y[0], x[0]), 2 * fmt.frac, shift=4)
        runs.append((y, t.transposed(y, fmt, fmt), t.weights.copy()))
    for a, b in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[0][0], runs[2][0])


# --- Euler and Newton steps ------------------------------------------------------------------


def dynamics_tiles(rng, m, wf, mode, scale=0.6):
    a = wf.quantize(rng.normal(0, scale / np.sqrt(m), (m, m)))
    b = wf.quantize(rng.normal(0, scale / np.sqrt(m), (m, m)))
    return tile(a, wf, mode, seed=1, name="A"), tile(b, wf, mode, seed=2, name="B")


@given(m=st.integers(2, 13), batch=st.integers(1, 3), h_shift=st.integers(0, 4),
       frac=st.integers(4, 16), mode=st.sampled_from(MODES), seed=st.integers(0, 2**32))
@SETTINGS
def test_euler_step_within_documented_bound(m, batch, h_shift, frac, mode, seed):
    rng = np.random.default_rng(seed)
    wf, state, act = Format(frac + 2, frac), Format(frac + 6, frac), Format(frac + 7, frac - 1)
    A, B = dynamics_tiles(rng, m, wf, mode)
    z = state.quantize(rng.uniform(-2, 2, (batch, m)))
    overflow = Overflow()
    z_next, u, mask = euler_step(A, B, z, state=state, act=act, h_shift=h_shift,
                                 overflow=overflow)
    assume(mask.mean() >= LIVE_FRACTION)   # else B takes no part in the step
    assert overflow.total == A.overflow.total == B.overflow.total == 0
    a_val, b_val, z_val = values(A.weights, wf), values(B.weights, wf), values(z, state)
    h = 2.0**-h_shift
    reference = odeint(a_val, b_val, z_val, h, 1, "euler")[1]
    bound = rho(mode) * (state.lsb + h * np.abs(b_val).sum(axis=1).max() * act.lsb)
    assert np.abs(values(z_next, state) - reference).max() <= bound * (1 + 1e-12)
    # The pre-activation and its mask are those of the step taken.
    assert np.abs(values(u, act) - z_val @ a_val.T).max() <= rho(mode) * act.lsb
    np.testing.assert_array_equal(mask, u > 0)


def test_euler_step_saturates_state_and_counts():
    fmt = Format(8, 4)
    A = tile(np.eye(3, dtype=np.int64) * 16, fmt, "nearest", name="A")
    B = tile(np.eye(3, dtype=np.int64) * 16, fmt, "nearest", name="B")
    overflow = Overflow()
    z = np.array([[120, 10, -50]], dtype=np.int64)                 # 7.5, 0.625, -3.125
    z_next, _, _ = euler_step(A, B, z, state=fmt, act=fmt, h_shift=0, overflow=overflow)
    assert z_next.tolist() == [[127, 20, -50]]                      # 15 saturates; relu(-) = 0
    assert overflow.counts == {"euler.state": 1}


def newton_case(frac, mode, seed=0, m=11, batch=4):
    rng = np.random.default_rng(seed)
    wf, state, act = Format(frac + 2, frac), Format(frac + 6, frac), Format(frac + 7, frac)
    a_float = rng.normal(0, 0.8 / np.sqrt(m), (m, m))
    b_float = rng.normal(0, 0.8 / np.sqrt(m), (m, m))
    A = tile(wf.quantize(a_float), wf, mode, seed=1, name="A")
    B = tile(wf.quantize(b_float), wf, mode, seed=2, name="B")
    z = state.quantize(rng.uniform(-2, 2, (batch, m)))
    overflow = Overflow()
    w, iterations, converged = newton_step(A, B, z, state=state, act=act, h_shift=1,
                                           overflow=overflow, neumann_terms=40, max_iter=30,
                                           tol=1)
    assert overflow.total == A.overflow.total == B.overflow.total == 0
    # The relu live at the solution (else B, and the Jacobian, take no part).
    assert (state.to_float(w) @ wf.to_float(A.weights).T > 0).mean() >= LIVE_FRACTION
    return A, B, z, w, iterations, converged, (wf, state, act)


@pytest.mark.parametrize("mode", MODES)
def test_newton_step_converges_and_solves_the_implicit_equation(mode):
    A, B, z, w, iterations, converged, (wf, state, act) = newton_case(12, mode)
    assert converged.all() and (iterations >= 1).all()
    a_val, b_val = values(A.weights, wf), values(B.weights, wf)
    w_val, z_val, h = values(w, state), values(z, state), 0.5
    # The fixed-point residual is at most tol = 1 LSB; the float residual on the same words
    # differs from it by one Euler-step rounding.
    residual = w_val - z_val - h * np.maximum(w_val @ a_val.T, 0) @ b_val.T
    bound = state.lsb + rho(mode) * (state.lsb + h * np.abs(b_val).sum(axis=1).max() * act.lsb)
    assert np.abs(residual).max() <= bound * (1 + 1e-12)


def test_newton_step_approaches_the_float_implicit_euler_step():
    errors = {}
    for frac in (10, 16):
        A, B, z, w, iterations, converged, (wf, state, _) = newton_case(frac, "nearest", seed=5)
        # Relu is piecewise linear: from the predictor, full Newton steps (40 Neumann terms
        # at ρ(hJ) < 0.4) land on the solution at once unless the activation pattern changes.
        assert converged.all() and iterations.max() <= 2
        reference = odeint(values(A.weights, wf), values(B.weights, wf), values(z, state), 0.5,
                           1, "implicit_euler", linear_solver="exact")[1]
        errors[frac] = np.abs(values(w, state) - reference).max()
    assert errors[16] < errors[10] / 8
    assert errors[10] < 8 * 2.0**-10


def test_newton_step_without_predictor_and_reports_non_convergence():
    A, B, z, w, _, _, (_wf, state, act) = newton_case(12, "nearest", seed=2)
    overflow = Overflow()
    w0, _its0, conv0 = newton_step(A, B, z, state=state, act=act, h_shift=1, overflow=overflow,
                                  neumann_terms=40, max_iter=30, tol=1, predictor=False)
    assert conv0.all() and np.abs(w0 - w).max() <= 3
    # One Newton update with a single Neumann term cannot reach 0 LSBs from z.
    _w1, its1, conv1 = newton_step(A, B, z, state=state, act=act, h_shift=1, overflow=overflow,
                                  neumann_terms=1, max_iter=1, tol=0, predictor=False)
    assert not conv1.any() and (its1 == 1).all()


# --- Hadamard product ------------------------------------------------------------------------


@given(data=st.data(), lead=st.sampled_from([(), (3,), (2, 3)]), n=st.integers(1, 12),
       mode=st.sampled_from(MODES))
@SETTINGS
def test_hadamard_equals_exact_complex_product(data, lead, n, mode):
    xf, sf, of = data.draw(formats(max_width=24)), data.draw(formats(max_width=24)), \
        data.draw(formats(max_width=24))
    total = xf.frac + sf.frac - of.frac
    assume(mode != "stochastic" or total <= 32)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    x = random_words(rng, xf, (*lead, n, 2))
    spectrum = random_words(rng, sf, (n, 2))
    results = []
    for gauss in (False, True):
        overflow = Overflow()
        results.append(hadamard_fixed(x, spectrum, x_format=xf, spectrum_format=sf,
                                      out_format=of, rounder=Rounder(mode, 9), overflow=overflow,
                                      gauss=gauss))
        counts = overflow.counts["hadamard"]
    np.testing.assert_array_equal(results[0], results[1])
    exact = []
    for index in np.ndindex(*lead, n):
        a, b = (int(v) for v in x[index])
        c, d = (int(v) for v in spectrum[index[-1]])
        for part in (a * c - b * d, a * d + b * c):     # (a + ib)(c + id): real, then imag
            exact.append(Fraction(part, 2**total) if total >= 0 else Fraction(part * 2**-total))
    expected, clipped = clamp(ReferenceRounder(mode, 9).round(exact, total), of)
    assert results[0].shape == (*lead, n, 2)
    assert results[0].ravel().tolist() == expected
    assert counts == clipped


# --- Fourier convolution ---------------------------------------------------------------------


def fourier_formats(frac):
    # Data: |spectrum of an image in [0, 1]| <= sqrt(HW) <= 8, times sum|a| <= 4 after the
    # Hadamard product: 6 integer bits and the sign. Twiddles: |entries| <= 1.
    return {"data": Format(frac + 7, frac), "twiddle": Format(frac + 2, frac),
            "spectrum": Format(frac + 4, frac)}


def fourier_error(kernel, image, frac, mode, gauss=False):
    fmts = fourier_formats(frac)
    words = fmts["data"].quantize(image)
    overflow = Overflow()
    got = fourier_conv_fixed(kernel, words, **fmts, rounder=Rounder(mode, 3), overflow=overflow,
                             gauss=gauss)
    assert got.shape == image.shape and got.dtype == np.int64
    assert overflow.total == 0, overflow.counts
    reference = fourier_conv(kernel, values(words, fmts["data"]))
    error = np.abs(values(got, fmts["data"]) - reference).max()
    height, width = image.shape[1:]
    bound = (height + width) * max(1.0, np.abs(kernel).sum()) * 3 * 2.0**-frac
    return error, bound


@pytest.mark.parametrize(("height", "width", "k"), [(8, 8, 3), (6, 10, 5), (5, 7, 3)])
@pytest.mark.parametrize("mode", MODES)
def test_fourier_conv_fixed_within_documented_bound(height, width, k, mode):
    rng = np.random.default_rng(height * width + k)
    kernel = rng.uniform(-0.4, 0.4, (k, k))
    image = rng.uniform(0, 1, (2, height, width))
    errors = {}
    for frac in (8, 16):
        errors[frac], bound = fourier_error(kernel, image, frac, mode)
        assert errors[frac] <= bound
    assert errors[16] < errors[8] / 32


@given(height=st.integers(3, 9), width=st.integers(3, 9), frac=st.integers(6, 18),
       mode=st.sampled_from(MODES), seed=st.integers(0, 2**32))
@settings(max_examples=15, deadline=None)
def test_fourier_conv_fixed_bound_random_sizes(height, width, frac, mode, seed):
    rng = np.random.default_rng(seed)
    k = 3 if min(height, width) < 5 else 5
    kernel = rng.uniform(-0.5, 0.5, (k, k)) / k
    image = rng.uniform(0, 1, (1, height, width))
    error, bound = fourier_error(kernel, image, frac, mode)
    assert error <= bound


def test_fourier_conv_fixed_gauss_is_bit_identical():
    rng = np.random.default_rng(1)
    kernel, image = rng.uniform(-0.4, 0.4, (3, 3)), rng.uniform(0, 1, (2, 6, 10))
    fmts = fourier_formats(12)
    words = fmts["data"].quantize(image)
    outs = [fourier_conv_fixed(kernel, words, **fmts, rounder=Rounder("stochastic", 4),
                               overflow=Overflow(), gauss=g) for g in (False, True)]
    np.testing.assert_array_equal(*outs)


def test_fourier_conv_fixed_counts_spectrum_saturation():
    height, width = 6, 10
    kernel = np.ones((3, 3))
    spectrum = Format(8, 6)                                        # values up to 1.98 only
    # The scaled spectrum is the unnormalised 2-D DFT of the centred, zero-padded kernel.
    padded = np.zeros((height, width))
    for i in range(3):
        for j in range(3):
            padded[(i - 1) % height, (j - 1) % width] = kernel[i, j]
    reference = np.fft.fft2(padded)
    words = np.floor(np.stack([reference.real, reference.imag]) * 2**6 + 0.5)
    expected = int(((words < spectrum.min_int) | (words > spectrum.max_int)).sum())
    assert expected > 0
    overflow = Overflow()
    image = Format(14, 6).quantize(np.random.default_rng(0).uniform(0, 1, (1, height, width)))
    fourier_conv_fixed(kernel, image, data=Format(14, 6), twiddle=Format(8, 6),
                       spectrum=spectrum, rounder=Rounder("nearest"), overflow=overflow)
    assert overflow.counts["spectrum.load"] == expected
    assert overflow.counts["twiddle.load"] == 0 and overflow.flag


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 10, 28])
def test_the_transposed_twiddle_table_is_the_inverse_transforms(n):
    # The inverse DFT's table, quantised on its own, equals the forward table transposed: the
    # hardware drives one table from either side.
    from xbarode.model.fixed_ops import twiddle_matrix
    from xbarode.model.fourier import dft_matrix, to_real

    fmt = Format(14, 12)
    inverse = fmt.quantize(to_real(np.conj(dft_matrix(n))), "nearest")
    np.testing.assert_array_equal(twiddle_matrix(n, fmt).T, inverse)
    # And the table is the DFT: numpy.fft on a random complex vector, within the quantisation.
    rng = np.random.default_rng(n)
    v = rng.normal(size=n) + 1j * rng.normal(size=n)
    got = twiddle_matrix(n, fmt) @ np.stack([v.real, v.imag], axis=-1).ravel() / 2**12
    want = np.fft.fft(v, norm="ortho")
    np.testing.assert_allclose(got, np.stack([want.real, want.imag], axis=-1).ravel(),
                               atol=2 * n * np.abs(v).max() * 2.0**-12)


def test_fourier_sites_draw_from_their_own_lfsrs_image_by_image():
    # Per-site rounders, image by image: two images in one call equal two calls that carry the
    # rounders over; a single shared rounder gives other words.
    from xbarode.model.fixed_ops import fourier_rounders

    rng = np.random.default_rng(5)
    kernel, image = rng.uniform(-0.4, 0.4, (3, 3)), rng.uniform(0, 1, (2, 5, 6))
    fmts = fourier_formats(10)
    words = fmts["data"].quantize(image)
    both = fourier_conv_fixed(kernel, words, **fmts, rounder=fourier_rounders("stochastic", 7),
                              overflow=Overflow())
    rounders = fourier_rounders("stochastic", 7)
    apart = [fourier_conv_fixed(kernel, words[b:b + 1], **fmts, rounder=rounders,
                                overflow=Overflow()) for b in range(2)]
    np.testing.assert_array_equal(both, np.concatenate(apart))
    shared = fourier_conv_fixed(kernel, words, **fmts, rounder=Rounder("stochastic", 7),
                                overflow=Overflow())
    assert not np.array_equal(both, shared)


@pytest.mark.parametrize("mode", MODES)
def test_fixed_fourier_conv_forward_is_the_narrowed_convolution(mode):
    # The core's Fourier product: state words in, act words out with h = 1/2 folded in;
    # against scipy's wrapped convolution of the word values (bound: the Fourier path's
    # documented error, halved by h, plus one output LSB).
    from scipy.ndimage import convolve

    from xbarode.model.fixed_ops import FixedFourierConv

    rng = np.random.default_rng(5)
    kernel = rng.uniform(-0.4, 0.4, (3, 3))
    state, act = Format(16, 11), Format(16, 9)
    data, twiddle, spectrum = Format(22, 12), Format(18, 16), Format(18, 14)
    x = state.quantize(rng.uniform(-2, 2, (2, 20)), "nearest")
    unit = FixedFourierConv(kernel, (4, 5), data=data, twiddle=twiddle, spectrum=spectrum,
                            rounding=mode, seed=SEED, out_seed=SEED + 9, overflow=Overflow(),
                            name="A")
    y = act.to_float(unit.forward(x, state, act, shift=1))
    values = state.to_float(x).reshape(2, 4, 5)
    want = np.stack([convolve(v, kernel, mode="wrap") for v in values]).reshape(2, 20) / 2
    bound = (4 + 5) * max(1.0, np.abs(kernel).sum()) * (2.0**-12 + 2.0**-16 + 2.0**-14) / 2
    assert np.abs(y - want).max() <= bound + 2.0**-9
    assert unit.overflow.total == 0 and unit.shape == (20, 20)
    with pytest.raises(ValueError, match=r"^A: words of Q12\.4 do not fit the Fourier data "
                                         r"format Q10\.12 exactly$"):
        unit.forward(x, Format(16, 4), act)
