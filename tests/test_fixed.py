"""Tests of the fixed-point contract (docs/architecture.md §2, ``xbarode.model.fixed``): formats,
narrowing with its three roundings and saturation, the stochastic-rounding LFSR, quantisation of
floats and the exact integer product, all against references written here from the documentation."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from xbarode.model.fixed import (
    LFSR_POLY,
    LFSR_SEED,
    Format,
    Lfsr,
    Overflow,
    Rounder,
    exact_matmul,
    lfsr_jump,
    narrow,
    parse_format,
    site_seed,
)

SETTINGS = settings(max_examples=40, deadline=None)

# --- the reference LFSR, written from the documented spec ------------------------------------

MASK = 0x80200003
SEED = 0xACE1ACE1
_draws: dict[int, list[int]] = {}


def reference_clock(state: int) -> int:
    return (state >> 1) ^ (MASK if state & 1 else 0)


def reference_draws(seed: int, count: int) -> list[int]:
    """The first ``count`` draws from ``seed``: each is the state after 32 more clocks."""
    draws = _draws.setdefault(seed, [])
    state = draws[-1] if draws else seed
    while len(draws) < count:
        for _ in range(32):
            state = reference_clock(state)
        draws.append(state)
    return draws[:count]


def reference_round(value: Fraction, mode: str, draw: int | None, shift: int) -> int:
    """Round ``value`` (in output LSBs, with ``shift`` discarded bits) as docs/architecture.md §2
    says."""
    if mode == "floor":
        return math.floor(value)
    if mode == "nearest":
        return math.floor(value + Fraction(1, 2))
    return math.floor(value + Fraction(draw % (1 << shift), 1 << shift))


def reference_narrow(values, shift: int, fmt: Format, mode: str, seed: int = SEED):
    """Python-int narrowing of ``values`` (any shape) in C order; returns (ints, clipped)."""
    flat = [int(v) for v in np.asarray(values).ravel(order="C")]
    draws = reference_draws(seed, len(flat)) if mode == "stochastic" and shift > 0 else None
    lo, hi = -(1 << (fmt.width - 1)), (1 << (fmt.width - 1)) - 1
    out, clipped = [], 0
    for k, v in enumerate(flat):
        if shift > 0:
            r = reference_round(Fraction(v, 1 << shift), mode, draws[k] if draws else None, shift)
        else:
            r = v * (1 << -shift)
        out.append(min(max(r, lo), hi))
        clipped += out[-1] != r
    return np.array(out, dtype=np.int64).reshape(np.shape(values)), clipped


@st.composite
def formats(draw, max_width=32):
    width = draw(st.integers(2, max_width))
    return Format(width, draw(st.integers(0, width - 1)))


def random_ints(seed: int, shape, bits: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-(1 << bits), 1 << bits, size=shape, dtype=np.int64, endpoint=True)


# --- Format and parse_format -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "frac", "error", "message"),
    [
        (1, 0, ValueError, "format width must be between 2 and 32, not 1"),
        (33, 4, ValueError, "format width must be between 2 and 32, not 33"),
        (0, 0, ValueError, "format width must be between 2 and 32, not 0"),
        (8, 8, ValueError, "format frac must be >= 0 and < width (8), not 8"),
        (8, -1, ValueError, "format frac must be >= 0 and < width (8), not -1"),
        (8.0, 4, TypeError, "format width must be an integer, not float"),
        (8, "4", TypeError, "format frac must be an integer, not str"),
        (True, 0, TypeError, "format width must be an integer, not bool"),
    ],
)
def test_format_rejects_bad_fields(width, frac, error, message):
    with pytest.raises(error) as info:
        Format(width, frac)
    assert str(info.value) == message


def test_format_properties():
    fmt = Format(16, 12)
    assert str(fmt) == "Q4.12"
    assert (fmt.min_int, fmt.max_int) == (-32768, 32767)
    assert fmt.lsb == 1 / 4096
    assert fmt.max_value == 32767 / 4096
    assert str(Format(8, 0)) == "Q8.0" and str(Format(2, 1)) == "Q1.1"
    assert Format(np.int64(10), np.int32(3)) == Format(10, 3)
    assert Format(32, 31).min_int == -(2**31) and Format(32, 31).max_int == 2**31 - 1
    np.testing.assert_array_equal(fmt.to_float([4096, -1, 32767]), [1.0, -2**-12, 32767 / 4096])


@given(formats())
@SETTINGS
def test_format_range_and_value(fmt):
    assert fmt.min_int == -(2 ** (fmt.width - 1)) and fmt.max_int == 2 ** (fmt.width - 1) - 1
    assert Fraction(fmt.lsb) == Fraction(1, 2**fmt.frac)
    assert fmt.to_float([fmt.max_int])[0] == Fraction(fmt.max_int, 2**fmt.frac)


@pytest.mark.parametrize(("text", "width", "frac"), [("16.12", 16, 12), (" 8.0 ", 8, 0),
                                                     ("32.31", 32, 31), ("2.1", 2, 1)])
def test_parse_format(text, width, frac):
    assert parse_format(text) == Format(width, frac)


@pytest.mark.parametrize("text", ["16", "16.", ".12", "16,12", "a.b", "16.12.1", "-16.12",
                                  "16.-1", "", "Q4.12", "16. 12"])
def test_parse_format_rejects_bad_spelling(text):
    with pytest.raises(ValueError, match=r"a format is written WIDTH\.FRAC, e\.g\. 16\.12"):
        parse_format(text)


@pytest.mark.parametrize(("text", "message"), [("1.0", "width must be between"),
                                               ("16.16", "frac must be"),
                                               ("40.8", "width must be between")])
def test_parse_format_rejects_bad_values(text, message):
    with pytest.raises(ValueError, match=message):
        parse_format(text)


# --- narrow ----------------------------------------------------------------------------------


@given(fmt=formats(), shift=st.integers(-8, 40), bits=st.integers(0, 52),
       shape=st.sampled_from([(1,), (7,), (3, 5), (2, 3, 4)]), seed=st.integers(0, 2**32),
       mode=st.sampled_from(["floor", "nearest", "stochastic"]),
       lfsr_seed=st.sampled_from([SEED, 1, 0xFFFFFFFF, 0x12345678]))
# Corners: a whole 32-bit draw discarded by the widest format; more bits discarded than a draw
# has (deterministic modes only); the largest left shift of the widest words.
@example(fmt=Format(32, 0), shift=32, bits=52, shape=(7,), seed=0, mode="stochastic",
         lfsr_seed=0xFFFFFFFF)
@example(fmt=Format(2, 1), shift=40, bits=52, shape=(3, 5), seed=1, mode="nearest", lfsr_seed=1)
@example(fmt=Format(32, 31), shift=-8, bits=52, shape=(2, 3, 4), seed=2, mode="floor",
         lfsr_seed=SEED)
@example(fmt=Format(2, 0), shift=1, bits=0, shape=(1,), seed=3, mode="stochastic", lfsr_seed=1)
@SETTINGS
def test_narrow_equals_reference(fmt, shift, bits, shape, seed, mode, lfsr_seed):
    if mode == "stochastic":
        shift = min(shift, 32)
    values = random_ints(seed, shape, bits)
    overflow = Overflow()
    rounding = Rounder(mode, lfsr_seed) if mode == "stochastic" else mode
    got = narrow(values, shift, fmt, rounding, overflow, "site")
    expected, clipped = reference_narrow(values, shift, fmt, mode, lfsr_seed)
    assert got.dtype == np.int64 and got.shape == values.shape
    np.testing.assert_array_equal(got, expected)
    assert overflow.counts["site"] == clipped
    assert overflow.total == clipped and overflow.flag == (clipped > 0)


def test_nearest_rounds_half_up_and_floor_rounds_down():
    fmt = Format(8, 0)
    ties = np.array([-7, -5, -3, -1, 1, 3, 5, 7], dtype=np.int64)        # k + 1/2 after >> 1
    np.testing.assert_array_equal(narrow(ties, 1, fmt, "nearest"), [-3, -2, -1, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(narrow(ties, 1, fmt, "floor"), [-4, -3, -2, -1, 0, 1, 2, 3])
    np.testing.assert_array_equal(narrow(np.array([-9, 9], dtype=np.int64), 2, fmt, "nearest"),
                                  [-2, 2])


def test_stochastic_draws_follow_c_order_of_the_logical_array():
    base = random_ints(3, (4, 6), 20)
    transposed = base.T                        # not C-contiguous: draws follow logical order
    got = narrow(transposed, 7, Format(16, 0), Rounder("stochastic", 99))
    expected, _ = reference_narrow(np.ascontiguousarray(transposed), 7, Format(16, 0),
                                   "stochastic", 99)
    np.testing.assert_array_equal(got, expected)


def test_stochastic_rounding_consumes_one_draw_per_element_across_calls():
    rounder = Rounder("stochastic", 5)
    values = random_ints(4, (30,), 30)
    first = narrow(values[:11], 9, Format(32, 0), rounder)
    second = narrow(values[11:], 9, Format(32, 0), rounder)
    expected, _ = reference_narrow(values, 9, Format(32, 0), "stochastic", 5)
    np.testing.assert_array_equal(np.concatenate([first, second]), expected)
    assert rounder.lfsr.state == reference_draws(5, 30)[-1]


@given(fmt=formats(), bits=st.integers(0, 40), shift=st.integers(-5, 12),
       seed=st.integers(0, 2**32))
@SETTINGS
def test_saturation_counts_every_clipped_element(fmt, bits, shift, seed):
    values = random_ints(seed, (50,), bits)
    overflow = Overflow()
    got = narrow(values, shift, fmt, "floor", overflow, "x")
    assert got.min() >= fmt.min_int and got.max() <= fmt.max_int
    exact = [v >> shift if shift >= 0 else v << -shift for v in values.tolist()]
    assert overflow.counts["x"] == sum(not fmt.min_int <= e <= fmt.max_int for e in exact)
    for g, e in zip(got.tolist(), exact, strict=True):
        assert g == min(max(e, fmt.min_int), fmt.max_int)


def test_saturation_to_both_ends():
    fmt = Format(4, 1)
    values = np.array([100, -100, 14, 15, -16, -17, 0], dtype=np.int64)
    overflow = Overflow()
    np.testing.assert_array_equal(narrow(values, 1, fmt, "floor", overflow, "s"),
                                  [7, -8, 7, 7, -8, -8, 0])
    assert overflow.counts == {"s": 3}       # 100 -> 50, -100 -> -50, -17 -> -9 saturate


def test_overflow_flag_is_sticky_until_clear():
    overflow = Overflow()
    assert not overflow.flag and overflow.total == 0
    fmt = Format(4, 0)
    narrow(np.array([100, 3], dtype=np.int64), 0, fmt, "floor", overflow, "a")
    assert overflow.flag and overflow.counts == {"a": 1}
    narrow(np.array([1, 2], dtype=np.int64), 0, fmt, "floor", overflow, "b")
    assert overflow.flag and overflow.total == 1
    narrow(np.array([-100, -100], dtype=np.int64), 0, fmt, "floor", overflow, "a")
    assert overflow.counts == {"a": 3} and overflow.total == 3
    overflow.clear()
    assert not overflow.flag and overflow.total == 0 and not overflow.counts
    narrow(np.array([1], dtype=np.int64), 0, fmt, "floor", overflow, "a")
    assert not overflow.flag


@given(bits=st.integers(0, 50), shift=st.integers(1, 10), seed=st.integers(0, 2**32))
@SETTINGS
def test_left_shift_is_exact(bits, shift, seed):
    values = random_ints(seed, (20,), bits)
    got = narrow(values, -shift, Format(32, 0), "nearest")
    expected = [min(max(v * 2**shift, -(2**31)), 2**31 - 1) for v in values.tolist()]
    assert got.tolist() == expected


@pytest.mark.parametrize(
    ("value", "shift", "rounding"),
    [(2**62, -1, "floor"), (2**61, -2, "nearest"), (-(2**62) - 1, -1, "floor"),
     (2**63 - 1, 1, "nearest"), (2**63 - 1024, 11, "nearest")],
)
def test_int64_overflow_raises(value, shift, rounding):
    with pytest.raises(OverflowError, match="exceeds int64"):
        narrow(np.array([0, value], dtype=np.int64), shift, Format(32, 0), rounding, label="s")


def test_largest_values_that_fit_do_not_raise():
    assert narrow(np.array([2**61 - 1], dtype=np.int64), -1, Format(32, 0), "floor")[0] == \
        2**31 - 1
    assert narrow(np.array([2**62], dtype=np.int64), 4, Format(32, 0), "nearest")[0] == 2**31 - 1


def _seed_whose_first_draw_wraps() -> int:
    """An LFSR seed whose first offset, added to 2^63 - 1537, leaves int64."""
    for seed in range(1, 1000):
        if 1537 <= reference_draws(seed, 1)[0] % 2048 <= 2046:
            return seed
    raise AssertionError("no such seed")


def test_int64_overflow_with_stochastic_offset_raises():
    seed = _seed_whose_first_draw_wraps()
    values = np.array([2**63 - 1537], dtype=np.int64)
    try:
        got = narrow(values, 11, Format(32, 0), Rounder("stochastic", seed))
    except OverflowError:
        return
    raise AssertionError(f"no OverflowError; got {got.tolist()} (the sum wrapped)")


@pytest.mark.parametrize("values", [np.arange(3, dtype=np.int32), np.ones(3),
                                    np.arange(3, dtype=np.uint64), [1, 2, 3]])
def test_narrow_takes_only_int64(values):
    if isinstance(values, list):
        # A list becomes int64 under NumPy's default integer: accepted.
        np.testing.assert_array_equal(narrow(values, 0, Format(8, 0), "floor"), values)
        return
    with pytest.raises(TypeError, match=f"site: narrow takes int64 integers, not {values.dtype}"):
        narrow(values, 1, Format(8, 0), "floor", label="site")


def test_narrow_needs_a_rounder_for_stochastic():
    values = np.arange(4, dtype=np.int64)
    with pytest.raises(ValueError, match="site: stochastic rounding needs a Rounder"):
        narrow(values, 2, Format(8, 0), "stochastic", label="site")
    with pytest.raises(ValueError, match="unknown rounding 'up'"):
        narrow(values, 2, Format(8, 0), "up")


def test_stochastic_cannot_discard_more_than_32_bits():
    values = np.arange(4, dtype=np.int64)
    with pytest.raises(ValueError, match="cannot discard 33 bits"):
        narrow(values, 33, Format(8, 0), Rounder("stochastic"))
    # The draw covers 32 discarded bits exactly.
    narrow(values, 32, Format(8, 0), Rounder("stochastic"))


@pytest.mark.parametrize(("numerator", "shift"), [(5, 4), (-5, 4), (1, 8), (-255, 8), (3, 2),
                                                  (123456789, 20)])
def test_stochastic_rounding_is_unbiased(numerator, shift):
    n = 40000
    values = np.full(n, numerator, dtype=np.int64)
    got = narrow(values, shift, Format(32, 0), Rounder("stochastic", 0x1234))
    true = numerator / 2**shift
    p = true - math.floor(true)
    assert set(np.unique(got)) <= {math.floor(true), math.floor(true) + 1}
    standard_error = math.sqrt(max(p * (1 - p), 1e-12) / n)
    assert abs(got.mean() - true) < 4 * standard_error


# --- the LFSR --------------------------------------------------------------------------------


def test_documented_lfsr_constants():
    assert LFSR_POLY == MASK and LFSR_SEED == SEED
    assert Lfsr().state == SEED


@pytest.fixture(scope="module")
def long_reference():
    return reference_draws(SEED, 70005)


@pytest.mark.parametrize("count", [0, 1, 2, 31, 1000, 16383, 16384, 16385, 32768, 40001, 70005])
def test_lfsr_draws_equal_reference(long_reference, count):
    lfsr = Lfsr()
    got = lfsr.draw(count)
    assert got.dtype == np.uint32 and got.shape == (count,)
    assert got.tolist() == long_reference[:count]
    assert lfsr.state == (long_reference[count - 1] if count else SEED)


def test_lfsr_split_draws_continue_the_sequence(long_reference):
    lfsr = Lfsr()
    parts = [lfsr.draw(5), lfsr.draw(70000)]
    assert np.concatenate(parts).tolist() == long_reference


@given(st.lists(st.integers(0, 20000), min_size=1, max_size=6))
@settings(max_examples=15, deadline=None)
def test_lfsr_any_split_continues_the_sequence(long_reference, counts):
    if sum(counts) > len(long_reference):
        counts = [c * len(long_reference) // (sum(counts) + 1) for c in counts]
    lfsr = Lfsr()
    got = [x for c in counts for x in lfsr.draw(c).tolist()]
    assert got == long_reference[:len(got)]


@given(st.integers(1, 2**32 - 1), st.integers(1, 200))
@settings(max_examples=20, deadline=None)
def test_lfsr_other_seeds(seed, count):
    lfsr = Lfsr(seed)
    assert lfsr.state == seed
    expected = reference_draws(seed, count)
    assert lfsr.draw(count).tolist() == expected
    assert lfsr.state == expected[-1]
    _draws.pop(seed, None)


@pytest.mark.parametrize(("seed", "error"), [(0, ValueError), (2**32, ValueError),
                                             (-1, ValueError), (1.0, TypeError),
                                             (True, TypeError)])
def test_lfsr_rejects_bad_seeds(seed, error):
    with pytest.raises(error, match="LFSR seed must be"):
        Lfsr(seed)
    if error is ValueError:
        with pytest.raises(ValueError, match="non-zero 32-bit"):
            Rounder("stochastic", seed)


def test_lfsr_accepts_extreme_seeds():
    assert Lfsr(2**32 - 1).draw(3).tolist() == reference_draws(2**32 - 1, 3)
    assert Lfsr(np.uint32(7)).state == 7


# --- the seeds of the rounding sites (site_seed), from its documented rule -------------------

def reference_site_seed(seed, k):
    """The documented rule walked one value at a time: the ``k``-th non-zero 32-bit value
    after ``seed``, counting 1, 2, …, 2³² − 1, then 1 again."""
    value = seed
    for _ in range(k):
        value = 1 if value == 2**32 - 1 else value + 1
    return value


#: Every site the network and the core use: tiles A, B, C, the loss gradient, the Fourier
#: units' three sites each (fixed_net's docstring).
SITES = range(10)


def test_site_seeds_at_the_wrap():
    # The corner that collided before: 0xFFFFFFFF + 1 wrapped to 0, which was skipped to 1,
    # the seed of the next site too.
    assert [site_seed(2**32 - 1, k) for k in SITES] == [2**32 - 1, *range(1, 10)]
    assert [site_seed(2**32 - 3, k) for k in range(5)] == [2**32 - 3, 2**32 - 2, 2**32 - 1, 1,
                                                          2]
    # The default seed (every figure of the README) is the plain sum.
    assert [site_seed(LFSR_SEED, k) for k in SITES] == [0xACE1ACE1 + k for k in SITES]


def test_site_seeds_are_distinct_for_every_seed_near_the_wrap():
    for seed in range(2**32 - 40, 2**32):
        seeds = [site_seed(seed, k) for k in SITES]
        assert seeds == [reference_site_seed(seed, k) for k in SITES]
        assert len(set(seeds)) == len(seeds) and 0 not in seeds, hex(seed)


@given(seed=st.integers(1, 2**32 - 1), j=st.integers(0, 40), k=st.integers(0, 40))
@SETTINGS
def test_site_seed_follows_its_documented_rule(seed, j, k):
    assert site_seed(seed, k) == reference_site_seed(seed, k)
    assert len({site_seed(seed, i) for i in range(41)}) == 41
    if seed + k < 2**32:
        assert site_seed(seed, k) == seed + k
    # A unit seeded with site j's seed numbers its sites on from j.
    assert site_seed(site_seed(seed, j), k) == site_seed(seed, j + k)


@pytest.mark.parametrize(("seed", "k", "message"), [
    (0, 1, "LFSR seed must be a non-zero 32-bit integer, not 0"),
    (2**32, 0, "LFSR seed must be a non-zero 32-bit integer, not 4294967296"),
    (5, -1, "site must be a non-negative integer, not -1"),
])
def test_site_seed_rejects_bad_arguments(seed, k, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        site_seed(seed, k)


def test_network_sites_draw_from_distinct_seeds_at_the_wrap():
    from xbarode.model.fixed_net import FixedNetwork, formats_for_width

    rng = np.random.default_rng(0)
    params = {"A": rng.normal(0, 0.3, (4, 4)), "B": rng.normal(0, 0.3, (4, 4)),
              "C": rng.normal(0, 0.3, (3, 4)), "d": np.zeros(3)}
    net = FixedNetwork(params, formats_for_width(16), rounding="stochastic", h=0.25, steps=1,
                       lfsr_seed=2**32 - 1)
    states = [r.lfsr.state for r in (net.A.rounder, net.B.rounder, net.C.rounder,
                                     net.loss_rounder)]
    assert states == [2**32 - 1, 1, 2, 3]


def test_rounder_rejects_unknown_modes():
    with pytest.raises(ValueError, match=r"unknown rounding 'even'; choose one of \['floor', "
                                         r"'nearest', 'stochastic'\]"):
        Rounder("even")


# GF(2) polynomials as Python ints: bit k is the coefficient of x^k.
POLY = (1 << 32) | (1 << 22) | (1 << 2) | (1 << 1) | 1
ORDER = 2**32 - 1
ORDER_FACTORS = (3, 5, 17, 257, 65537)


def gf2_mulmod(a: int, b: int, p: int) -> int:
    degree = p.bit_length() - 1
    product = 0
    while b:
        if b & 1:
            product ^= a
        b >>= 1
        a <<= 1
        if a >> degree & 1:
            a ^= p
    return product


def gf2_powmod(base: int, exponent: int, p: int) -> int:
    result = 1
    while exponent:
        if exponent & 1:
            result = gf2_mulmod(result, base, p)
        base = gf2_mulmod(base, base, p)
        exponent >>= 1
    return result


def reciprocal(p: int) -> int:
    """``x^deg · p(1/x)``: the coefficients reversed."""
    degree = p.bit_length() - 1
    return sum(1 << (degree - k) for k in range(degree + 1) if p >> k & 1)


@pytest.mark.parametrize("poly", [POLY, reciprocal(POLY)])
def test_lfsr_polynomial_is_primitive(poly):
    # x has order 2^32 - 1 modulo p: then every non-zero residue is a power of x, so the
    # residues form a field (p irreducible) and x generates it (p primitive).
    assert math.prod(ORDER_FACTORS) == ORDER
    assert all(q > 1 and all(q % d for d in range(2, math.isqrt(q) + 1)) for q in ORDER_FACTORS)
    assert gf2_powmod(0b10, ORDER, poly) == 1
    for q in ORDER_FACTORS:
        assert gf2_powmod(0b10, ORDER // q, poly) != 1


def test_galois_mask_matches_the_polynomial():
    # Galois convention: tap t of x^32 + x^22 + x^2 + x + 1 is mask bit t - 1.
    taps = [k for k in range(1, 33) if POLY >> k & 1]
    assert taps == [1, 2, 22, 32]
    assert sum(1 << (t - 1) for t in taps) == MASK
    # The right-shifting clock then has the reciprocal as characteristic polynomial:
    # q(T) = 0 on every basis state, q primitive as checked above.
    q = reciprocal(POLY)
    for b in range(32):
        state, total = 1 << b, 0
        for k in range(33):
            if q >> k & 1:
                total ^= state
            state = reference_clock(state)
        assert total == 0


def _apply_columns(columns: list[int], state: int) -> int:
    out = 0
    for b in range(32):
        if state >> b & 1:
            out ^= columns[b]
    return out


def _compose(outer: list[int], inner: list[int]) -> list[int]:
    """GF(2) matrices as lists of column bit masks: ``outer ∘ inner``."""
    return [_apply_columns(outer, column) for column in inner]


def _clock_power(exponent: int) -> list[int]:
    result = [1 << b for b in range(32)]
    base = [reference_clock(1 << b) for b in range(32)]
    while exponent:
        if exponent & 1:
            result = _compose(base, result)
        base = _compose(base, base)
        exponent >>= 1
    return result


def test_lfsr_clock_has_maximal_period():
    identity = [1 << b for b in range(32)]
    assert _clock_power(ORDER) == identity
    for q in ORDER_FACTORS:
        assert _clock_power(ORDER // q) != identity


@pytest.mark.parametrize("clocks", [0, 1, 2, 31, 32, 33, 1000, 2**20 + 3])
def test_lfsr_jump_equals_repeated_clocks(clocks):
    columns = lfsr_jump(clocks)
    assert len(columns) == 32
    for state in (1, 0x80000000, SEED, 0xDEADBEEF):
        expected = state
        if clocks <= 1000:
            for _ in range(clocks):
                expected = reference_clock(expected)
        else:
            expected = _apply_columns(_clock_power(clocks), state)
        assert _apply_columns(list(columns), state) == expected


def test_lfsr_jump_rejects_negative_clocks():
    with pytest.raises(ValueError, match="clocks must be >= 0, not -1"):
        lfsr_jump(-1)


# --- quantize --------------------------------------------------------------------------------


def reference_quantize(values, fmt: Format, mode: str, seed: int = SEED):
    draws = reference_draws(seed, len(values)) if mode == "stochastic" else [0] * len(values)
    out, clipped = [], 0
    for v, r in zip(values, draws, strict=True):
        if mode == "stochastic":
            guarded = math.floor(Fraction(v) * 2 ** (fmt.frac + 32))
            q = math.floor(Fraction(guarded + r, 2**32))
        else:
            q = reference_round(Fraction(v) * 2**fmt.frac, mode, None, 0)
        out.append(min(max(q, fmt.min_int), fmt.max_int))
        clipped += out[-1] != q
    return out, clipped


@given(fmt=formats(),
       values=st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=1, max_size=20),
       mode=st.sampled_from(["floor", "nearest", "stochastic"]))
# A draw that once failed CI by chance: formats wider than 29 bits took fewer guard bits.
@example(fmt=Format(30, 0), values=[0.0] * 8 + [1.5], mode="stochastic")
# The widest formats, where floor(v · 2^(frac+32)) needs more than int64.
@example(fmt=Format(32, 0), values=[-(2.0**31), 2.0**31 - 0.5, 1.5, -1.25, 1e9],
         mode="stochastic")
@example(fmt=Format(32, 31), values=[-1.0, 1.0 - 2.0**-32, 2.0**-33, -(2.0**-40)],
         mode="stochastic")
@example(fmt=Format(31, 3), values=[2.0**27 - 2.0**-4, -(2.0**27) - 2.0**-5], mode="nearest")
# Tiny negative values: floor is -1 LSB, and 1 - |v| is not a float.
@example(fmt=Format(2, 0), values=[-2.2974185767319325e-71], mode="floor")
@example(fmt=Format(16, 12), values=[-1e-300, -(2.0**-45), 0.0, -0.0], mode="stochastic")
@SETTINGS
def test_quantize_equals_reference(fmt, values, mode):
    overflow = Overflow()
    rounding = Rounder("stochastic") if mode == "stochastic" else mode
    got = fmt.quantize(values, rounding, overflow, "q")
    expected, clipped = reference_quantize(values, fmt, mode)
    assert got.tolist() == expected
    assert overflow.counts["q"] == clipped


@given(fmt=formats(), k=st.integers(-(2**20), 2**20))
@example(fmt=Format(32, 31), k=-1)
@example(fmt=Format(32, 0), k=2**20)
@SETTINGS
def test_quantize_rounds_ties_up(fmt, k):
    tie = (k + 0.5) * fmt.lsb
    expected = min(max(k + 1, fmt.min_int), fmt.max_int)
    assert fmt.quantize([tie]).tolist() == [expected]


def test_quantize_saturates_and_counts():
    fmt = Format(8, 4)
    overflow = Overflow()
    got = fmt.quantize([100.0, -100.0, 7.96875, -8.0, 1e30, -1e30], "nearest", overflow, "in")
    assert got.tolist() == [127, -128, 127, -128, 127, -128]
    # 7.96875 is 127.5 LSBs: half up gives 128, which saturates; -8.0 is exactly min_int.
    assert overflow.counts == {"in": 5}


def test_quantize_saturates_huge_finite_values_quietly():
    overflow = Overflow()
    got = Format(8, 4).quantize([1e300, -1e300], "nearest", overflow)
    assert got.tolist() == [127, -128] and overflow.total == 2


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantize_rejects_non_finite(bad):
    with pytest.raises(ValueError, match="x: cannot quantise non-finite values"):
        Format(16, 8).quantize([0.0, bad], label="x")


@pytest.mark.parametrize(("fmt", "value", "expected", "clipped"),
                         [(Format(32, 0), 2e9, 2_000_000_000, 0),
                          (Format(32, 0), -3e9, -(2**31), 1),
                          (Format(31, 0), -(2.0**40), -(2**30), 1)])
def test_quantize_widest_formats(fmt, value, expected, clipped):
    overflow = Overflow()
    got = fmt.quantize([value], "nearest", overflow)
    assert (got.tolist(), overflow.total) == ([expected], clipped)


# --- exact_matmul ----------------------------------------------------------------------------


def python_matmul(a, b):
    a, b = a.tolist(), b.tolist()
    return [[sum(x * y for x, y in zip(row, col, strict=True)) for col in zip(*b, strict=True)]
            for row in a]


@given(n=st.integers(1, 6), k=st.integers(1, 9), p=st.integers(1, 6), a_bits=st.integers(0, 32),
       seed=st.integers(0, 2**32))
@SETTINGS
def test_exact_matmul_equals_integer_product(n, k, p, a_bits, seed):
    b_bits = min(32, 61 - a_bits - math.ceil(math.log2(k)))
    a = random_ints(seed, (n, k), a_bits)
    b = random_ints(seed + 1, (k, p), b_bits)
    got = exact_matmul(a, b)
    assert got.dtype == np.int64
    assert got.tolist() == python_matmul(a, b)


def test_exact_matmul_beyond_float_precision():
    # Bound well above 2^53 (the integer path); float64 would lose the low bits.
    a = np.array([[2**30 + 1, -(2**29) - 3, 2**27 + 7]], dtype=np.int64)
    b = np.array([[2**30 - 1], [2**30 + 5], [-(2**28) + 11]], dtype=np.int64)
    assert exact_matmul(a, b).tolist() == python_matmul(a, b)
    # Just below 2^53 (the float path) is exact as well.
    a = np.array([[2**26 + 1, 2**26 - 1]], dtype=np.int64)
    b = np.array([[2**25 + 3], [2**25 - 7]], dtype=np.int64)
    assert exact_matmul(a, b).tolist() == python_matmul(a, b)


@pytest.mark.parametrize(("a_value", "b_value", "terms"), [(2**31, 2**31, 2), (2**40, 2**22, 2),
                                                            (2**32, 2**31, 1)])
def test_exact_matmul_raises_when_int64_may_overflow(a_value, b_value, terms):
    a = np.full((2, terms), a_value, dtype=np.int64)
    b = np.full((terms, 3), -b_value, dtype=np.int64)
    with pytest.raises(OverflowError, match="prod: the exact sum may exceed int64"):
        exact_matmul(a, b, "prod")


def test_exact_matmul_raises_for_the_most_negative_int64():
    with pytest.raises(OverflowError):
        exact_matmul(np.array([[-(2**63)]]), np.array([[2]]))


def test_exact_matmul_of_empty_arrays():
    assert exact_matmul(np.zeros((0, 3), np.int64), np.zeros((3, 2), np.int64)).shape == (0, 2)


@pytest.mark.parametrize(("into", "other", "holds"), [
    ((22, 12), (16, 11), True), ((22, 12), (16, 9), True), ((18, 10), (16, 11), False),
    ((17, 11), (16, 9), False), ((16, 9), (16, 9), True), ((16, 10), (16, 9), False)])
def test_format_holds_when_it_has_the_integer_and_fractional_bits(into, other, holds):
    big, small = Format(*into), Format(*other)
    assert big.holds(small) is holds
    if holds:   # every word of `small`, shifted, is a word of `big` with the same value
        words = np.array([small.min_int, -1, 0, 1, small.max_int])
        shifted = words << (big.frac - small.frac)
        assert big.min_int <= shifted.min() and shifted.max() <= big.max_int
        assert np.array_equal(big.to_float(shifted), small.to_float(words))
