"""The multi-channel network in fixed point (``xbarode.model.fixed_bank``, ``FixedNetwork`` with
kernel banks and a pool), against references written here from the mathematics.

The references never call the code under test: the block matrix of a bank is built column by
column from ``scipy.ndimage.convolve(mode="wrap")`` on basis images; products are Python-integer
matrix products; every narrowing (shift, floor / half-up / LFSR rounding, saturation, count) and
the LFSR itself (32 clocks of the Galois mask 0x80200003 per draw, one LFSR per rounding site
seeded ``lfsr_seed + site`` cyclically) are written out again. Against float64 (the golden model,
itself checked against torch in test_channels.py) the fixed-point network is held to an error
bound derived below from the per-operation rounding bounds.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from helpers import last_json, run
from xbarode.model import Config, accuracy, avg_pool, avg_pool_grad, load_weights, predict, train
from xbarode.model.conv import conv_matrix, tap_columns
from xbarode.model.data import Split
from xbarode.model.fixed import Format, Overflow, Rounder
from xbarode.model.fixed_bank import FixedConvBank, FixedPool, pool_reciprocal
from xbarode.model.fixed_net import FixedFormats, FixedNetwork, formats_for_width
from xbarode.model.fixed_ops import FixedTile
from xbarode.model.train import fixed_network, init_params

SETTINGS = settings(max_examples=25, deadline=None)
MODES = ("floor", "nearest", "stochastic")
SEED = 0xACE1ACE1
H_SHIFT = 2                      # h = 1/4


# --- independent references ------------------------------------------------------------------


def site_seed(seed: int, k: int) -> int:
    """The documented seed of rounding site ``k``: ``seed + k`` counted through 1 … 2³² − 1."""
    return (seed - 1 + k) % (2**32 - 1) + 1


class RefSite:
    """One rounding site: its own LFSR, and the narrowing of exact integers (Python ints)."""

    def __init__(self, mode: str, seed: int):
        self.mode, self.state = mode, seed
        self.saturated = 0

    def draws(self, count: int) -> list[int]:
        out = []
        for _ in range(count):
            for _ in range(32):
                self.state = (self.state >> 1) ^ (0x80200003 if self.state & 1 else 0)
            out.append(self.state)
        return out

    def narrow(self, acc, shift: int, fmt: Format) -> np.ndarray:
        """Round ``acc`` (integers) by ``shift`` bits in C order, saturate to ``fmt``, count."""
        acc = np.asarray(acc, dtype=object)
        flat = [int(a) for a in acc.ravel().tolist()]
        if shift > 0:
            if self.mode == "floor":
                offsets = [0] * len(flat)
            elif self.mode == "nearest":
                offsets = [1 << (shift - 1)] * len(flat)
            else:
                offsets = [d & ((1 << shift) - 1) for d in self.draws(len(flat))]
            shifted = [(a + o) >> shift for a, o in zip(flat, offsets, strict=True)]
        else:
            shifted = [a << -shift for a in flat]
        low, high = -(1 << (fmt.width - 1)), (1 << (fmt.width - 1)) - 1
        clipped = [min(max(v, low), high) for v in shifted]
        self.saturated += sum(v != c for v, c in zip(shifted, clipped, strict=True))
        return np.array(clipped, dtype=np.int64).reshape(acc.shape)


def clip(values, fmt: Format, counter: Counter, label: str) -> np.ndarray:
    low, high = -(1 << (fmt.width - 1)), (1 << (fmt.width - 1)) - 1
    clipped = np.clip(values, low, high)
    counter[label] += int(np.count_nonzero(clipped != values))
    return clipped


def block_matrix(kernels, shape) -> np.ndarray:
    """The bank's block matrix from scipy, column by column (basis images); integer kernels
    give integer entries (each tap lands once per row, k <= min(H, W))."""
    c_out, c_in = kernels.shape[:2]
    m = shape[0] * shape[1]
    kernels = np.asarray(kernels, dtype=np.float64)
    columns = []
    for j in range(c_in * m):
        basis = np.zeros((c_in, *shape))
        basis.reshape(-1)[j] = 1.0
        columns.append(np.concatenate([
            sum(ndimage.convolve(basis[i], kernels[o, i], mode="wrap") for i in range(c_in))
            .ravel() for o in range(c_out)]))
    matrix = np.stack(columns, axis=1)
    assert np.array_equal(matrix, np.rint(matrix))
    return np.rint(matrix).astype(np.int64).astype(object)


def tap_masks(c_out, c_in, k, shape) -> dict:
    """``(o, i, p, q) -> boolean mask`` of the block-matrix entries the tap occupies: the block
    matrix of a bank whose taps hold distinct labels (no entry holds two taps)."""
    labels = np.arange(1, c_out * c_in * k * k + 1).reshape(c_out, c_in, k, k)
    matrix = block_matrix(labels, shape).astype(np.int64)
    return {index: matrix == labels[index] for index in np.ndindex(labels.shape)}


def reference_pool(factor: int) -> tuple[int, int]:
    """``(ρ, R)`` as documented: a shift if p² is a power of two, else R = ⌈log2 p²⌉ + 16
    and ρ = round-half-up(2^R / p²)."""
    area = factor * factor
    exponent = area.bit_length() - 1
    if 1 << exponent == area:
        return 1, exponent
    bits = exponent + 1 + 16
    return int(Fraction(2**bits, area) + Fraction(1, 2)), bits


def pool_sums(z, c, shape, p) -> np.ndarray:
    height, width = shape
    blocks = np.asarray(z, dtype=object).reshape(-1, c, height // p, p, width // p, p)
    return blocks.sum(axis=(3, 5)).reshape(len(blocks), -1)


def spread(features, c, shape, p) -> np.ndarray:
    height, width = shape
    grid = np.asarray(features).reshape(-1, c, height // p, 1, width // p, 1)
    return np.broadcast_to(grid, (len(grid), c, height // p, p, width // p, p)).reshape(
        len(grid), -1)


class RefNetwork:
    """The explicit-Euler network with kernel banks, a pool and the head, on Python integers,
    with its rounding sites: A, B, C = 0, 1, 2, the pool 10."""

    def __init__(self, ka, kb, C, d, shape, formats: FixedFormats, mode, pool, steps=2):
        self.ka, self.kb, self.C, self.d = ka, kb, C, d
        self.MA, self.MB = block_matrix(ka, shape), block_matrix(kb, shape)
        self.shape, self.f, self.pool, self.steps = shape, formats, pool, steps
        self.c = ka.shape[0]
        self.sites = {name: RefSite(mode, site_seed(SEED, k))
                      for k, name in ((0, "A"), (1, "B"), (2, "C"), (10, "pool"))}
        self.counts = Counter()

    def features(self, z):
        if self.pool == 1:
            return z
        rho, bits = reference_pool(self.pool)
        return self.sites["pool"].narrow(pool_sums(z, self.c, self.shape, self.pool) * rho, bits,
                                         self.f.state)

    def forward(self, x_words):
        f = self.f
        m = self.shape[0] * self.shape[1]
        z = np.zeros((len(x_words), self.c * m), dtype=np.int64)
        z[:, :m] = x_words
        trajectory = [z]
        for _ in range(self.steps):
            u = self.sites["A"].narrow(z.astype(object) @ self.MA.T,
                                       f.weight.frac + f.state.frac - f.act.frac, f.act)
            r = np.maximum(u, 0)
            dz = self.sites["B"].narrow(r.astype(object) @ self.MB.T,
                                        f.weight.frac + f.act.frac + H_SHIFT - f.state.frac,
                                        f.state)
            z = clip(z + dz, f.state, self.counts, "euler.state")
            trajectory.append(z)
        acc = self.features(z).astype(object) @ self.C.T.astype(object) \
            + (self.d.astype(object) << f.state.frac)
        logits = self.sites["C"].narrow(acc, f.weight.frac + f.state.frac - f.act.frac, f.act)
        return logits, np.stack(trajectory)

    def backward(self, trajectory, grad_logits):
        """The discrete adjoint as documented, and the dense gradient sums (m×m)."""
        f = self.f
        g_logits = grad_logits.astype(object)
        grads = {"C": g_logits.T @ self.features(trajectory[-1]).astype(object),
                 "d": grad_logits.sum(axis=0)}
        lam = self.sites["C"].narrow(g_logits @ self.C.astype(object), f.weight.frac, f.grad)
        if self.pool != 1:
            rho, bits = reference_pool(self.pool)
            lam = spread(self.sites["pool"].narrow(lam.astype(object) * rho, bits, f.grad),
                         self.c, self.shape, self.pool)
        dense_a = np.zeros(self.MA.shape, dtype=object)
        dense_b = np.zeros(self.MB.shape, dtype=object)
        for n in reversed(range(self.steps)):
            z = trajectory[n]
            u = self.sites["A"].narrow(z.astype(object) @ self.MA.T,
                                       f.weight.frac + f.state.frac - f.act.frac, f.act)
            g = np.where(u > 0, self.sites["B"].narrow(lam.astype(object) @ self.MB,
                                                       f.weight.frac, f.grad), 0)
            dense_b += lam.astype(object).T @ np.maximum(u, 0).astype(object)
            dense_a += g.astype(object).T @ z.astype(object)
            step = self.sites["A"].narrow(g.astype(object) @ self.MA, f.weight.frac + H_SHIFT,
                                          f.grad)
            lam = clip(lam + step, f.grad, self.counts, "adjoint.lambda")
        return grads, dense_a, dense_b, lam

    def sgd_step(self, grads, dense_a, dense_b, shift):
        """One tied SGD step: per tap the exact sum of its entries, one rounding, drawn in the
        order of the bank the hardware tile holds (B's tile holds Bᵀ: rot180, channels
        swapped)."""
        f, k = self.f, self.ka.shape[-1]
        masks = tap_masks(self.c, self.c, k, self.shape)
        new = {}
        for name, kernels, dense, frac in (("A", self.ka, dense_a, f.state.frac),
                                           ("B", self.kb, dense_b, f.act.frac)):
            sums = np.zeros(kernels.shape, dtype=object)
            for index, mask in masks.items():
                sums[index] = dense[mask].sum()
            held, held_sums = kernels, sums
            if name == "B":
                held = kernels.transpose(1, 0, 2, 3)[..., ::-1, ::-1]
                held_sums = sums.transpose(1, 0, 2, 3)[..., ::-1, ::-1]
            step = self.sites[name].narrow(-held_sums, f.grad.frac + frac + shift + H_SHIFT
                                           - f.weight.frac, f.weight)
            value = clip(held + step, f.weight, self.counts, f"{name}.weights")
            new[name] = value.transpose(1, 0, 2, 3)[..., ::-1, ::-1] if name == "B" else value
        step = self.sites["C"].narrow(-grads["C"], f.grad.frac + f.state.frac + shift
                                      - f.weight.frac, f.weight)
        new["C"] = clip(self.C + step, f.weight, self.counts, "C.weights")
        step = self.sites["C"].narrow(-grads["d"].astype(object), f.grad.frac + shift
                                      - f.weight.frac, f.weight)
        new["d"] = clip(self.d + step, f.weight, self.counts, "d.weights")
        return new


# --- problems --------------------------------------------------------------------------------

FORMATS = formats_for_width(12)             # weight Q2.10, state Q5.7, act Q7.5, grad Q5.7


def random_problem(seed, shape, c, k, pool, classes=3, batch=2, formats=FORMATS):
    """Integer kernels, head and image words on the formats' grids, with live relus."""
    rng = np.random.default_rng(seed)
    w = formats.weight
    scale = 2**w.frac / np.sqrt(c * k * k)
    ka = np.rint(rng.normal(0, 0.9 * scale, (c, c, k, k))).astype(np.int64)
    kb = np.rint(rng.normal(0, 0.9 * scale, (c, c, k, k))).astype(np.int64)
    features = c * shape[0] * shape[1] // pool**2
    C = np.rint(rng.normal(0, 0.5 * 2**w.frac, (classes, features))).astype(np.int64)
    d = np.rint(rng.normal(0, 0.2 * 2**w.frac, classes)).astype(np.int64)
    x = rng.integers(0, 2**formats.state.frac + 1, (batch, shape[0] * shape[1]))
    ka, kb, C, d = (np.clip(a, w.min_int, w.max_int) for a in (ka, kb, C, d))
    return ka, kb, C, d, x


def as_params(ka, kb, C, d, fmt: Format) -> dict:
    return {"A": ka / 2**fmt.frac, "B": kb / 2**fmt.frac, "C": C / 2**fmt.frac,
            "d": d / 2**fmt.frac}


def fixed_net(problem, shape, mode, pool, formats=FORMATS, steps=2, method="euler"):
    ka, kb, C, d, _ = problem
    return FixedNetwork(as_params(ka, kb, C, d, formats.weight), formats, rounding=mode,
                        h=2.0**-H_SHIFT, steps=steps, method=method, lfsr_seed=SEED,
                        image_shape=shape, pool=pool,
                        newton={"neumann_terms": 12, "max_iter": 20})


@st.composite
def network_shapes(draw):
    """(shape, c, k, pool): sides up to 9, pool in {1, 2, 3} dividing both sides."""
    c = draw(st.sampled_from([1, 2, 3]))
    k = draw(st.sampled_from([1, 3]))
    pool = draw(st.sampled_from([1, 2, 3]))
    side = st.integers(1, 9 // pool).map(lambda n: n * pool).filter(lambda n: n >= k)
    return (draw(side), draw(side)), c, k, pool


# --- one tile holding a bank's block matrix --------------------------------------------------


def words_of_width(rng, shape, fmt: Format, spread_bits: int):
    """Words spread over about ``spread_bits`` bits of ``fmt`` (some at its extremes)."""
    values = rng.integers(-(1 << spread_bits), 1 << spread_bits, shape)
    return np.clip(values, fmt.min_int, fmt.max_int)


@SETTINGS
@given(shapes=network_shapes(), mode=st.sampled_from(MODES), shift=st.sampled_from([0, 3]),
       seed=st.integers(0, 2**16))
@example(shapes=((5, 7), 1, 3, 1), mode="stochastic", shift=0, seed=1)
@example(shapes=((5, 7), 2, 3, 1), mode="nearest", shift=3, seed=2)
@example(shapes=((5, 7), 3, 1, 1), mode="floor", shift=0, seed=3)
@example(shapes=((5, 7), 3, 3, 1), mode="stochastic", shift=3, seed=4)
def test_bank_tile_products_are_the_block_matrix_products(shapes, mode, shift, seed):
    """``forward`` and ``transposed`` against the scipy block matrix, exact sums and one
    reference narrowing per word; saturations (the words reach the formats' extremes) are
    counted exactly as the reference counts them."""
    shape, c, k, _ = shapes
    rng = np.random.default_rng(seed)
    w, x_fmt, out = Format(10, 8), Format(10, 6), Format(8, 5)
    kernels = words_of_width(rng, (c, c, k, k), w, 9)
    x = words_of_width(rng, (3, c * shape[0] * shape[1]), x_fmt, 9)
    y = words_of_width(rng, x.shape, x_fmt, 9)
    overflow = Overflow()
    tile = FixedConvBank(kernels, shape, weight_format=w, acc_width=40,
                         rounder=Rounder(mode, SEED), overflow=overflow, name="A")
    ref, M = RefSite(mode, SEED), block_matrix(kernels, shape)
    total = w.frac + x_fmt.frac + shift - out.frac
    np.testing.assert_array_equal(tile.forward(x, x_fmt, out, shift=shift),
                                  ref.narrow(x.astype(object) @ M.T, total, out))
    forward_saturated = ref.saturated
    np.testing.assert_array_equal(tile.transposed(y, x_fmt, out, shift=shift),
                                  ref.narrow(y.astype(object) @ M, total, out))
    assert overflow.counts["A.forward"] == forward_saturated
    assert overflow.counts["A.transposed"] == ref.saturated - forward_saturated
    assert overflow.words["A.forward"] == overflow.words["A.transposed"] == x.size
    np.testing.assert_array_equal(tile.dense(), M.astype(np.int64))


def test_bank_tile_saturation_is_counted_never_silent():
    """The corner: every weight at its most negative word, every input too: each output of
    the exact sum ``c·k²·2^(w-1)·2^(x-1)`` lies far above the output range."""
    w, x_fmt, out = Format(8, 6), Format(8, 4), Format(8, 4)
    shape, c, k = (5, 7), 3, 3
    kernels = np.full((c, c, k, k), w.min_int)
    x = np.full((2, c * 35), x_fmt.min_int)
    overflow = Overflow()
    tile = FixedConvBank(kernels, shape, weight_format=w, acc_width=40,
                         rounder=Rounder("nearest"), overflow=overflow, name="A")
    result = tile.forward(x, x_fmt, out)
    assert (result == out.max_int).all()
    assert overflow.flag and overflow.counts == Counter({"A.forward": x.size})
    result = tile.transposed(-x - 1, x_fmt, out)           # the most positive words
    assert (result == out.min_int).all()
    assert overflow.counts["A.transposed"] == x.size


@SETTINGS
@given(shapes=network_shapes(), mode=st.sampled_from(MODES), transposed=st.booleans(),
       seed=st.integers(0, 2**16))
@example(shapes=((5, 7), 2, 3, 1), mode="stochastic", transposed=True, seed=0)
@example(shapes=((5, 7), 3, 3, 1), mode="stochastic", transposed=False, seed=0)
def test_bank_tied_sgd_step_is_the_tap_sums_step(shapes, mode, transposed, seed):
    """The tap sums are the dense gradient ``Σ g xᵀ`` summed over each tap's entries; the step
    rounds each once, in the order of the bank the tile holds."""
    shape, c, k, _ = shapes
    rng = np.random.default_rng(seed)
    w = Format(10, 8)
    kernels = words_of_width(rng, (c, c, k, k), w, 9)
    g = rng.integers(-300, 300, (4, c * shape[0] * shape[1]))
    x = rng.integers(-300, 300, g.shape)
    tile = FixedConvBank(kernels, shape, weight_format=w, acc_width=48,
                         rounder=Rounder(mode, SEED), name="B")
    sums = tile.gradient_sums(g, x)
    dense = g.T.astype(object) @ x.astype(object)
    expected = np.zeros(kernels.shape, dtype=object)
    for index, mask in tap_masks(c, c, k, shape).items():
        expected[index] = dense[mask].sum()
    np.testing.assert_array_equal(sums, expected.astype(np.int64))
    tile.apply_kernel_gradient(sums, 12, shift=2, transposed=transposed)
    ref = RefSite(mode, SEED)
    flip = (lambda a: a.transpose(1, 0, 2, 3)[..., ::-1, ::-1]) if transposed else (lambda a: a)
    held = flip(kernels) + ref.narrow(-flip(expected), 12 + 2 - w.frac, w)
    np.testing.assert_array_equal(tile.kernels, flip(np.clip(held, w.min_int, w.max_int)))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transposed", [False, True])
def test_one_channel_bank_is_the_one_channel_tile(mode, transposed):
    """With c = 1 the bank tile gives the integers, draws and tallies of a FixedTile holding
    ``conv_matrix(kernel)`` with its taps — forward, transposed, tap sums and the tied step."""
    rng = np.random.default_rng(5)
    shape, w, x_fmt, out = (5, 7), Format(10, 8), Format(10, 6), Format(8, 5)
    kernel = words_of_width(rng, (3, 3), w, 9)
    bank_tally, tile_tally = Overflow(), Overflow()
    bank = FixedConvBank(kernel[None, None], shape, weight_format=w, acc_width=40,
                         rounder=Rounder(mode, SEED), overflow=bank_tally, name="A")
    tile = FixedTile(conv_matrix(kernel, shape).astype(np.int64), weight_format=w,
                     acc_width=40, rounder=Rounder(mode, SEED), overflow=tile_tally, name="A")
    x = words_of_width(rng, (4, 35), x_fmt, 9)
    for _ in range(2):                                   # the LFSR runs on between operations
        np.testing.assert_array_equal(bank.forward(x, x_fmt, out, shift=1),
                                      tile.forward(x, x_fmt, out, shift=1))
        np.testing.assert_array_equal(bank.transposed(x, x_fmt, out),
                                      tile.transposed(x, x_fmt, out))
    g, z = rng.integers(-500, 500, (2, 6, 35))
    taps = tap_columns(3, shape)
    dense = g.T @ z
    sums = bank.gradient_sums(g, z)
    assert np.array_equal(sums.ravel(), dense[np.arange(35)[None, :], taps].sum(axis=1))
    for _ in range(2):
        bank.apply_kernel_gradient(sums, 12, shift=1, transposed=transposed)
        tile.apply_kernel_gradient(dense, 12, shift=1, taps=taps, transposed=transposed)
        np.testing.assert_array_equal(bank.dense(), tile.weights)
    assert bank_tally.counts == tile_tally.counts and bank_tally.words == tile_tally.words


# --- the pool ----------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5, 7, 14, 19, 28])
def test_pool_reciprocal_is_the_documented_constant(factor):
    rho, bits = pool_reciprocal(factor)
    assert (rho, bits) == reference_pool(factor)
    area = factor * factor
    if area & (area - 1) == 0:
        assert rho == 1 and 2**bits == area                     # a shift
    else:
        assert 2**16 <= rho < 2**17                              # a 17-bit constant
        assert abs(Fraction(rho, 2**bits) - Fraction(1, area)) <= Fraction(1, 2**17 * area)


@SETTINGS
@given(factor=st.sampled_from([2, 3, 4, 5, 6]), c=st.integers(1, 3), mode=st.sampled_from(MODES),
       seed=st.integers(0, 2**16))
@example(factor=3, c=2, mode="stochastic", seed=0)
@example(factor=2, c=3, mode="nearest", seed=0)
def test_pool_and_its_transpose_against_the_average(factor, c, mode, seed):
    """Exactly the documented narrowing; and within ``ρ·lsb + |v|·2^-17`` of the average."""
    rng = np.random.default_rng(seed)
    shape = (factor * 2, factor * 3)
    fmt = Format(16, 9)
    z = words_of_width(rng, (4, c * shape[0] * shape[1]), fmt, 15)
    overflow = Overflow()
    pool = FixedPool(factor, c, shape, rounder=Rounder(mode, SEED + 10), overflow=overflow)
    features = pool.forward(z, fmt)
    ref = RefSite(mode, SEED + 10)
    rho, bits = reference_pool(factor)
    np.testing.assert_array_equal(features, ref.narrow(pool_sums(z, c, shape, factor) * rho,
                                                       bits, fmt))
    rounding = 0.5 if mode == "nearest" else 1.0
    average = avg_pool(fmt.to_float(z), c, shape, factor)
    tolerance = rounding * fmt.lsb + np.abs(average) * 2.0**-17 * (rho != 1)
    assert (np.abs(fmt.to_float(features) - average) <= tolerance + 1e-12).all()
    delta = words_of_width(rng, features.shape, fmt, 15)
    back = pool.transposed(delta, fmt)
    np.testing.assert_array_equal(back, spread(ref.narrow(delta.astype(object) * rho, bits, fmt),
                                               c, shape, factor))
    exact = avg_pool_grad(fmt.to_float(delta), c, shape, factor)
    tolerance = rounding * fmt.lsb + np.abs(exact) * 2.0**-17 * (rho != 1)
    assert (np.abs(fmt.to_float(back) - exact) <= tolerance + 1e-12).all()
    assert not overflow.flag and overflow.words["pool"] == features.size


def test_pool_saturation_is_counted_never_silent():
    """The corner: a 19×19 pool's reciprocal rounds up (ρ·361 > 2^25), so the average of 32-bit
    words at the top of the range lies above it and saturates — counted, in both directions."""
    fmt = Format(32, 20)
    rho, bits = pool_reciprocal(19)
    assert rho * 361 > 2**bits
    overflow = Overflow()
    pool = FixedPool(19, 1, (19, 19), rounder=Rounder("floor"), overflow=overflow)
    z = np.full((2, 361), fmt.max_int)
    np.testing.assert_array_equal(pool.forward(z, fmt), [[fmt.max_int]] * 2)
    assert overflow.flag and overflow.counts == Counter({"pool": 2})
    pool.transposed(np.full((3, 1), fmt.max_int), fmt)
    assert overflow.counts["pool.transposed"] == 0            # δ/361: far inside the range
    assert pool.forward(z - 2**14, fmt).max() < fmt.max_int and overflow.total == 2


# --- the network -----------------------------------------------------------------------------


@SETTINGS
@given(shapes=network_shapes(), mode=st.sampled_from(MODES), seed=st.integers(0, 2**16))
@example(shapes=((5, 7), 1, 3, 1), mode="stochastic", seed=0)
@example(shapes=((5, 7), 2, 1, 1), mode="nearest", seed=0)
@example(shapes=((5, 7), 3, 3, 1), mode="stochastic", seed=0)
@example(shapes=((6, 9), 2, 3, 3), mode="stochastic", seed=0)
@example(shapes=((4, 6), 3, 3, 2), mode="floor", seed=0)
def test_network_forward_equals_the_reference(shapes, mode, seed):
    """Augmented start, Euler steps by the block matrices, the pool and the head: every state
    word, every logit and every saturation count, bit for bit."""
    shape, c, k, pool = shapes
    problem = random_problem(seed, shape, c, k, pool)
    net = fixed_net(problem, shape, mode, pool)
    net.overflow.clear()
    x = problem[-1]
    logits, trajectory, _ = net.forward(x / 2**FORMATS.state.frac)
    reference = RefNetwork(*problem[:4], shape, FORMATS, mode, pool)
    ref_logits, ref_trajectory = reference.forward(x)
    np.testing.assert_array_equal(trajectory, ref_trajectory)
    np.testing.assert_array_equal(logits, ref_logits)
    tally = net.overflow.counts
    assert tally["A.forward"] == reference.sites["A"].saturated
    assert tally["B.forward"] == reference.sites["B"].saturated
    assert tally["euler.state"] == reference.counts["euler.state"]
    assert tally["pool"] == reference.sites["pool"].saturated


@pytest.mark.parametrize(("shape", "c", "k", "pool", "mode"), [
    ((5, 7), 3, 3, 1, "stochastic"),
    ((4, 6), 2, 3, 2, "stochastic"),
    ((6, 3), 2, 3, 3, "nearest"),
    ((5, 7), 1, 3, 1, "floor"),
])
def test_training_step_equals_the_reference(shape, c, k, pool, mode):
    """Forward, the discrete adjoint (C's transposed product, the pool's transpose, per step
    u recomputed, ``g = D ⊙ Bᵀλ``, ``λ += h·Aᵀg``), the tap sums and one tied SGD step of
    every weight: all integers and every draw of every site, against the reference."""
    problem = random_problem(17, shape, c, k, pool, batch=3)
    net = fixed_net(problem, shape, mode, pool)
    reference = RefNetwork(*problem[:4], shape, FORMATS, mode, pool)
    x = problem[-1]
    logits, trajectory, _ = net.forward(x / 2**FORMATS.state.frac)
    ref_logits, _ = reference.forward(x)
    np.testing.assert_array_equal(logits, ref_logits)
    grad_logits = np.random.default_rng(3).integers(-2**FORMATS.grad.frac,
                                                    2**FORMATS.grad.frac, logits.shape)
    grads = net.backward(trajectory, grad_logits)
    ref_grads, dense_a, dense_b, lam = reference.backward(trajectory, grad_logits)
    np.testing.assert_array_equal(grads["z0"], lam)
    np.testing.assert_array_equal(grads["C"], ref_grads["C"].astype(np.int64))
    assert np.abs(grads["A"]).max() > 0 and np.abs(grads["B"]).max() > 0
    net.sgd_step(grads, lr=0.5, batch_size=4)                # shift 1 + 2
    new = reference.sgd_step(ref_grads, dense_a, dense_b, shift=3)
    np.testing.assert_array_equal(net.A.kernels, new["A"])
    np.testing.assert_array_equal(net.B.kernels, new["B"])
    np.testing.assert_array_equal(net.C.weights, new["C"])
    np.testing.assert_array_equal(net.d, new["d"])
    for name in "AB":
        moved = getattr(net, name).kernels != problem["AB".index(name)]
        assert moved.any(), name


def conv_taps_net(problem, shape, mode, method, pool):
    """The one-channel network as it was: tiles holding m×m convolution matrices, tied."""
    ka, kb, C, d, _ = problem
    params = {"A": conv_matrix(ka[0, 0], shape) / 2**FORMATS.weight.frac,
              "B": conv_matrix(kb[0, 0], shape) / 2**FORMATS.weight.frac,
              "C": C / 2**FORMATS.weight.frac, "d": d / 2**FORMATS.weight.frac}
    return FixedNetwork(params, FORMATS, rounding=mode, h=2.0**-H_SHIFT, steps=2, method=method,
                        lfsr_seed=SEED, conv_taps=tap_columns(3, shape),
                        newton={"neumann_terms": 12, "max_iter": 20}, image_shape=shape,
                        pool=pool)


@pytest.mark.parametrize("method", ["euler", "implicit_euler"])
@pytest.mark.parametrize("mode", ["nearest", "stochastic"])
@pytest.mark.parametrize(("shape", "pool"), [((5, 7), 1), ((4, 6), 2)])
def test_one_channel_bank_network_is_the_one_channel_network(method, mode, shape, pool):
    """A 1×1 bank trains exactly as the one-channel network with ``conv_taps`` (with or without
    a pool): forward, adjoint and SGD, two steps, both solvers, every draw."""
    problem = random_problem(23, shape, 1, 3, pool, batch=4)
    bank, dense = (fixed_net(problem, shape, mode, pool, method=method),
                   conv_taps_net(problem, shape, mode, method, pool))
    x = problem[-1] / 2**FORMATS.state.frac
    taps = tap_columns(3, shape)
    for _ in range(2):
        outputs = [net.forward(x) for net in (bank, dense)]
        for a, b in zip(*outputs, strict=True):
            if isinstance(a, dict):
                for key in a:
                    np.testing.assert_array_equal(a[key], b[key])
            else:
                np.testing.assert_array_equal(a, b)
        grad_logits = bank.loss_gradient(outputs[0][0], np.array([0, 1, 2, 1]))
        assert np.array_equal(grad_logits, dense.loss_gradient(outputs[1][0],
                                                               np.array([0, 1, 2, 1])))
        grads = [net.backward(out[1], grad_logits) for net, out in zip((bank, dense), outputs,
                                                                      strict=True)]
        for name in "AB":
            pulled = grads[1][name][np.arange(shape[0] * shape[1])[None, :], taps].sum(axis=1)
            np.testing.assert_array_equal(grads[0][name].ravel(), pulled)
        for key in ("C", "d", "z0"):
            np.testing.assert_array_equal(grads[0][key], grads[1][key])
        for net, g in zip((bank, dense), grads, strict=True):
            net.sgd_step(g, lr=0.25, batch_size=4)
        for name in "AB":
            np.testing.assert_array_equal(getattr(bank, name).dense(),
                                          getattr(dense, name).weights)
        np.testing.assert_array_equal(bank.C.weights, dense.C.weights)
        assert bank.overflow.counts == dense.overflow.counts


# --- against float64 -------------------------------------------------------------------------


def row_norm(kernels) -> float:
    """‖M‖∞ of a bank's block matrix: the largest sum of |taps| over an output channel."""
    return float(np.abs(kernels).sum(axis=(1, 2, 3)).max())


def forward_bound(net: FixedNetwork, features_float: np.ndarray, mode: str) -> float:
    """The derived bound on ``|logits - float logits|`` of the explicit-Euler network.

    Per step (Euler's documented bound, relu 1-Lipschitz) the state error grows as
    ``e ← (1 + h‖B‖‖A‖)·e + ρ(lsb_state + h‖B‖·lsb_act)`` from ``e_0 = 0`` (the same input
    words); the pool adds ``ρ·lsb_state + |v|·2^-17`` (the second term only if p² is not a
    power of two); the head ``‖C‖·e_pool + ρ·lsb_act``, with ``ρ = 1/2`` for nearest and 1
    otherwise and ∞-norms.
    """
    f, params = net.formats, net.params()
    rho = 0.5 if mode == "nearest" else 1.0
    h = 2.0**-H_SHIFT
    norm_a, norm_b = row_norm(params["A"]), row_norm(params["B"])
    error = 0.0
    for _ in range(net.steps):
        error = (1 + h * norm_a * norm_b) * error + rho * (f.state.lsb + h * norm_b * f.act.lsb)
    if net.pool is not None:
        error += rho * f.state.lsb + np.abs(features_float).max() * 2.0**-17 * (net.pool.rho != 1)
    return float(np.abs(params["C"]).sum(axis=1).max() * error + rho * f.act.lsb)


WIDE = FixedFormats(weight=Format(24, 22), state=Format(32, 27), act=Format(32, 25),
                    grad=Format(32, 27), acc_width=63)


@pytest.mark.parametrize(("shape", "c", "k", "pool"), [((5, 7), 3, 3, 1), ((6, 9), 2, 3, 3),
                                                       ((4, 6), 3, 3, 2), ((7, 5), 2, 1, 1)])
@pytest.mark.parametrize("mode", MODES)
def test_wide_formats_agree_with_float64_within_the_derived_bound(shape, c, k, pool, mode):
    """32-bit state words (24-bit weights): the fixed-point logits lie within the bound of
    :func:`forward_bound` of the float64 network on the same word values, and the bound is
    small (the comparison proves something)."""
    problem = random_problem(31, shape, c, k, pool, batch=4, formats=WIDE)
    x = problem[-1] / 2**WIDE.state.frac
    net = fixed_net(problem, shape, mode, pool, formats=WIDE, steps=3)
    net.overflow.clear()
    logits, trajectory, _ = net.forward(x)
    logits = WIDE.act.to_float(logits)
    assert not net.overflow.flag, net.overflow.counts
    config = Config(structure="conv", kernel_size=k, image_shape=shape, classes=3, channels=c,
                    pool=pool, steps=3, T=0.75)
    params = net.params()
    if c == 1:
        params = {**params, "A": params["A"][0, 0], "B": params["B"][0, 0]}
    reference = predict(config, params, x)
    # |v| of the pooled features, with room for the (tiny) error of the fixed-point state.
    features = 2 * avg_pool(WIDE.state.to_float(trajectory[-1]), c, shape, pool)
    bound = forward_bound(net, features, mode)
    error = np.abs(logits - reference).max()
    assert error <= bound, (error, bound)
    # The roundings' share of the bound is tiny (the comparison proves something); what a
    # pool of 3 adds is its 17-bit reciprocal's relative error, 2^-17 of the features.
    assert forward_bound(net, 0 * features, mode) < 1e-5 * np.abs(reference).max()


@pytest.mark.parametrize("method", ["euler", "implicit_euler"])
def test_gradients_approach_float64_as_width_grows(method):
    """The fixed-point adjoint (tap sums scaled by h, 1/batch and 2^-frac) against the float64
    discrete adjoint of the same words: relative error shrinking with the width."""
    from xbarode.model import loss_and_grads

    shape, c, k, pool = (6, 6), 2, 3, 2
    config = Config(structure="conv", kernel_size=k, image_shape=shape, classes=3, channels=c,
                    pool=pool, steps=2, T=0.5, method=method, linear_solver="exact",
                    tol=1e-13)
    rng = np.random.default_rng(4)
    params = init_params(dataclasses.replace(config, init_scale=1.2, seed=4))
    params["C"] = rng.normal(0, 0.5, params["C"].shape)
    x, y = rng.random((8, 36)), rng.integers(0, 3, 8)
    errors = {}
    for width in (12, 16, 24):
        formats = formats_for_width(width, acc_width=60)
        net = FixedNetwork(params, formats, rounding="nearest", h=0.25, steps=2, method=method,
                           lfsr_seed=SEED, image_shape=shape, pool=pool,
                           newton={"neumann_terms": 30, "max_iter": 30})
        logits, trajectory, _ = net.forward(x)
        grads = net.backward(trajectory, net.loss_gradient(logits, y))
        f = formats
        words = net.params()
        x_words = f.state.to_float(trajectory[0][:, :36])
        _, reference = loss_and_grads(config, words, x_words, y)
        ours = {"A": grads["A"] * 0.25 / 8 / 2.0 ** (f.grad.frac + f.state.frac),
                "B": grads["B"] * 0.25 / 8 / 2.0 ** (f.grad.frac + f.act.frac),
                "C": grads["C"] / 8 / 2.0 ** (f.grad.frac + f.state.frac),
                "d": grads["d"] / 8 / 2.0**f.grad.frac}
        assert all(np.abs(reference[n]).max() > 0 for n in "ABCd")
        errors[width] = max(np.abs(ours[n] - reference[n]).max() / np.abs(reference[n]).max()
                            for n in "ABCd")
    assert errors[24] < errors[12] / 64, errors
    assert errors[24] < 1e-4, errors


# --- configuration, training and the command line --------------------------------------------


@pytest.mark.parametrize(("structure", "channels", "pool", "kernel"), [
    ("conv", 2, 2, (2, 2, 3, 3)), ("conv", 1, 2, (3, 3)), ("dense", 1, 4, (64, 64))])
def test_fixed_point_channel_network_trains_reproducibly(digits, structure, channels, pool,
                                                         kernel):
    data = Split(digits.x_train[:128], digits.y_train[:128], digits.x_test[:64],
                 digits.y_test[:64], "digits", (8, 8))
    config = Config(structure=structure, channels=channels, pool=pool, precision="fixed",
                    epochs=2, batch_size=32, lr=0.125, seed=1)
    params, summary = train(config, data)
    again, _ = train(config, data)
    assert params["A"].shape == kernel and params["C"].shape == (10, config.features)
    for name in params:
        np.testing.assert_array_equal(params[name], again[name])
        scaled = params[name] * 2**14
        np.testing.assert_array_equal(scaled, np.round(scaled))   # exactly the weight words
    assert summary["losses"][1] < summary["losses"][0]
    assert summary["overflows"] == 0
    # Evaluating the trained words reproduces training's figure.
    assert accuracy(config, params, data.x_test, data.y_test) == summary["test_accuracy"]
    if channels > 1:
        net = fixed_network(config, params)
        np.testing.assert_array_equal(net.A.kernels, np.rint(params["A"] * 2**14))


def test_accumulator_check_counts_the_block_matrix_row():
    """A tile holding the (c·m)×(c·m) block matrix sums c·m products per output: 8 channels
    of 28×28 need 44 bits with 16-bit words, one channel 41."""
    mnist = {"structure": "conv", "image_shape": (28, 28), "dataset": "mnist5k",
             "precision": "fixed", "acc_width": 43}
    Config(**mnist)
    with pytest.raises(ValueError, match="too narrow for A·z: 6272 products"):
        Config(**mnist, channels=8)
    Config(**{**mnist, "acc_width": 44}, channels=8, pool=2)


def test_cli_trains_a_channel_network_in_fixed_point(capsys, tmp_path):
    weights = tmp_path / "w.npz"
    code, out, err = run(capsys, "train", "--structure", "conv", "--channels", 2, "--pool", 2,
                         "--width", 16, "--epochs", 1, "--out", weights, "--json")
    assert code == 0, err
    trained = last_json(out)
    assert trained["config"]["precision"] == "fixed" and trained["config"]["channels"] == 2
    assert 0.2 < trained["test_accuracy"] <= 1
    config, _ = load_weights(weights)
    assert (config.channels, config.pool, config.precision) == (2, 2, "fixed")
    code, out, err = run(capsys, "evaluate", weights, "--json")
    assert code == 0, err
    assert last_json(out)["test_accuracy"] == trained["test_accuracy"]


def test_bank_tile_checks_the_block_matrix_row_against_its_accumulator():
    """A row of the block matrix has c·m products, zeros included: 3 channels of 5×7 with
    10-bit words need 10 + 10 - 1 + 7 bits."""
    w = Format(10, 8)
    tile = FixedConvBank(np.zeros((3, 3, 3, 3), dtype=np.int64), (5, 7), weight_format=w,
                         acc_width=25, rounder=Rounder("floor"))
    with pytest.raises(ValueError, match="too narrow for a sum of 105 products of 10x10-bit "
                                         r"words \(needs 26 bits\)"):
        tile.forward(np.zeros((1, 105), dtype=np.int64), w, w)
    with pytest.raises(ValueError, match="a sum of 105 products"):
        tile.transposed(np.zeros((1, 105), dtype=np.int64), w, w)


@pytest.mark.parametrize(("build", "message"), [
    (lambda: FixedConvBank(np.zeros((2, 2, 3, 3)), (5, 5), weight_format=Format(8, 6),
                           acc_width=40, rounder=Rounder()), "kernels must be integers"),
    (lambda: FixedConvBank(np.full((2, 2, 3, 3), 128), (5, 5), weight_format=Format(8, 6),
                           acc_width=40, rounder=Rounder()), r"kernels lie outside Q2\.6"),
    (lambda: FixedConvBank(np.zeros((2, 2, 3, 3), dtype=int), (2, 5),
                           weight_format=Format(8, 6), acc_width=40, rounder=Rounder()),
     "does not fit a 2x5 image"),
    (lambda: FixedPool(3, 2, (6, 8), rounder=Rounder(), overflow=Overflow()),
     "pool 3 does not divide the 6x8 image"),
    (lambda: FixedPool(257, 1, (257, 257), rounder=Rounder(), overflow=Overflow()),
     "would discard 33 bits"),
    (lambda: FixedNetwork({"A": np.zeros((16, 16)), "B": np.zeros((16, 16)),
                           "C": np.zeros((3, 4)), "d": np.zeros(3)}, FORMATS, rounding="floor",
                          h=0.25, steps=1, pool=2), "a pool needs the image shape"),
    (lambda: fixed_net(random_problem(0, (4, 4), 2, 3, 1), (4, 4), "floor", 2),
     "C has 32 columns; the head reads 8 features"),
])
def test_bad_banks_and_pools_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_cli_demo_runs_a_channel_network_through_the_rtl(capsys, tmp_path):
    """A network with channels and a pool trains in the core's 16-bit fixed point and runs
    through the RTL core with the same channels and pool (its Fourier path), bit for bit."""
    code, out, err = run(capsys, "demo", "--structure", "conv", "--channels", 2, "--pool", 2,
                         "--set", "structure=conv", "--set", "conv_path=fourier", "--set",
                         "channels=2", "--set", "pool=2", "--steps", 2, "--h", 0.25,
                         "--set", "steps=2", "--set", "lanes=4", "--epochs", 1,
                         "--rtl-images", 1,
                         "--simulator", "verilator", "--out", tmp_path / "w.npz", "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["config"]["precision"] == "fixed" and result["config"]["channels"] == 2
    assert result["config"]["weight_format"] == "16.14"
    rtl = result["rtl"]
    # Every word compared: the trajectory z_0 … z_2 and z_N (m = 2·64 each), 10 logits,
    # 2 status words, and cls, converged, iterations and the flag.
    assert rtl["mismatches"] == 0 and rtl["images"] == 1
    assert rtl["compared"] == 3 * 128 + 128 + 10 + 2 + 4
    assert rtl["agreement"] == 1.0
