"""Fixed-point formats, rounding and saturation: the contract between model and hardware.

docs/architecture.md §2. A :class:`Format` Q(i.f) is ``width`` signed bits of which ``frac``
are fractional; value = integer / 2^frac. Every narrowing (a wide exact sum brought down to a
format) is

1. an arithmetic right shift by ``shift`` bits with one of three roundings:

   - ``floor``: the shift alone;
   - ``nearest``: add ``2^(shift-1)`` (half an LSB), then shift: round half up;
   - ``stochastic``: add ``r`` in ``[0, 2^shift)``, the low ``shift`` bits of the next
     :class:`Lfsr` draw, then shift;

2. saturation to ``[-2^(width-1), 2^(width-1) - 1]``; every saturated element counts in an
   :class:`Overflow` tally whose flag is sticky, as the hardware's status bit is.

A left shift (``shift < 0``) is exact and needs no rounding.

Integers are NumPy int64 throughout; every operation checks that int64 cannot overflow.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

__all__ = [
    "LFSR_POLY",
    "LFSR_SEED",
    "ROUNDINGS",
    "Format",
    "Lfsr",
    "Overflow",
    "Rounder",
    "exact_matmul",
    "lfsr_jump",
    "narrow",
    "parse_format",
    "site_seed",
]

#: The rounding modes, in the order the CLI lists them.
ROUNDINGS = ("floor", "nearest", "stochastic")

#: Largest word width; products of two words and sums of up to 2^20 of them stay in int64.
MAX_WIDTH = 32


@dataclass(frozen=True)
class Format:
    """A signed fixed-point format Q(i.f): ``width`` bits, ``frac`` of them fractional.

    Parameters
    ----------
    width : int
        Total bits including the sign, ``2 <= width <= 32``.
    frac : int
        Fractional bits, ``0 <= frac < width``.

    Notes
    -----
    The value of integer ``n`` is ``n / 2**frac``; integers saturate to
    ``[-2**(width-1), 2**(width-1) - 1]``. ``str(Format(16, 12))`` is ``"Q4.12"``: four integer
    bits counting the sign, twelve fractional.
    """

    width: int
    frac: int

    def __post_init__(self):
        for name in ("width", "frac"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise TypeError(f"format {name} must be an integer, not {type(value).__name__}")
        if not 2 <= self.width <= MAX_WIDTH:
            raise ValueError(f"format width must be between 2 and {MAX_WIDTH}, not {self.width}")
        if not 0 <= self.frac < self.width:
            raise ValueError(
                f"format frac must be >= 0 and < width ({self.width}), not {self.frac}"
            )

    def __str__(self) -> str:
        return f"Q{self.width - self.frac}.{self.frac}"

    @property
    def min_int(self) -> int:
        """Smallest integer, ``-2**(width-1)``."""
        return -(1 << (self.width - 1))

    @property
    def max_int(self) -> int:
        """Largest integer, ``2**(width-1) - 1``."""
        return (1 << (self.width - 1)) - 1

    @property
    def lsb(self) -> float:
        """Value of one least significant bit, ``2**-frac``."""
        return 2.0**-self.frac

    @property
    def max_value(self) -> float:
        """Largest representable value."""
        return self.max_int * self.lsb

    def holds(self, other: Format) -> bool:
        """Whether every word of ``other`` is a word of this format after a left shift (at
        least as many integer and fractional bits): moving it here is exact."""
        return self.frac >= other.frac and self.width - self.frac >= other.width - other.frac

    def to_float(self, ints) -> np.ndarray:
        """Values of integers in this format."""
        return np.asarray(ints, dtype=np.float64) * self.lsb

    def quantize(self, values, rounding: Rounder | str = "nearest",
                 overflow: Overflow | None = None, label: str = "quantize") -> np.ndarray:
        """Integers of this format nearest to float ``values`` (the host's DAC).

        Each float ``v`` is taken exactly to 32 fractional bits below the LSB,
        ``n = floor(v · 2**(frac + 32))``, and ``n`` is narrowed like any sum by a 32-bit
        shift: ``floor``, ``nearest`` (half up) or ``stochastic`` rounding (one LFSR draw per
        element, all 32 bits of it), then saturation, counted in ``overflow`` under ``label``.
        This holds for every width the class accepts (2 to 32 bits).

        Raises
        ------
        ValueError
            If a value is not finite.
        """
        values = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{label}: cannot quantise non-finite values")
        rounder = _rounder(rounding, label)
        # Values beyond twice the range saturate anyway: clipping them first keeps every
        # integer below inside int64 (and still counts them as saturated).
        bound = 2.0 ** (self.width - self.frac)
        scaled = np.clip(values, -bound, bound) * 2.0**self.frac
        # n = whole · 2^32 + guard, split so that no intermediate needs more than 34 bits
        # (n itself needs up to 65 for a 32-bit format). modf's parts are exact in float64
        # (whole truncates towards zero; the fraction keeps the sign, |fraction| < 1), and so
        # are the power-of-two scaling and the floor: guard is in [-2^32, 2^32).
        fraction, whole = np.modf(scaled)
        guard = np.floor(fraction * 2.0**_QUANT_GUARD).astype(np.int64)
        # floor((whole · 2^32 + guard + offset) / 2^32) = whole + carry, offset < 2^32.
        carry = (guard + rounder.offsets(values.shape, _QUANT_GUARD)) >> _QUANT_GUARD
        return _saturate(whole.astype(np.int64) + carry, self, overflow, label)


# Fractional bits kept below the LSB when quantising floats: the 32-bit resolution of one LFSR
# draw, so a stochastically rounded float is unbiased to 2^-32 LSB.
_QUANT_GUARD = 32


def parse_format(text: str) -> Format:
    """Parse ``"W.F"`` (width and fractional bits, e.g. ``"16.12"``) into a :class:`Format`."""
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(text))
    if not match:
        raise ValueError(f"a format is written WIDTH.FRAC, e.g. 16.12, not {text!r}")
    return Format(int(match[1]), int(match[2]))


class Overflow:
    """Sticky saturation tally: how many elements each narrowing site saturated.

    ``flag`` is the hardware's sticky overflow status bit: it goes up on the first saturation
    and stays up until :meth:`clear`.
    """

    def __init__(self):
        self.counts: Counter[str] = Counter()
        #: Words narrowed at each site, saturated or not (the denominator of a saturation rate).
        self.words: Counter[str] = Counter()

    @property
    def flag(self) -> bool:
        """True once anything saturated."""
        return self.total > 0

    @property
    def total(self) -> int:
        """Saturated elements over all sites."""
        return sum(self.counts.values())

    @property
    def total_words(self) -> int:
        """Words narrowed over all sites (as counted by :func:`narrow`)."""
        return sum(self.words.values())

    def add(self, label: str, count: int, words: int = 0) -> None:
        """Count ``count`` saturated elements at site ``label``, of ``words`` narrowed."""
        if count:
            self.counts[label] += int(count)
        if words:
            self.words[label] += int(words)

    def clear(self) -> None:
        """Lower the flag and forget the counts."""
        self.counts.clear()
        self.words.clear()


# ---------------------------------------------------------------------------------------------
# The LFSR of stochastic rounding.

#: Feedback mask of the 32-bit Galois LFSR: taps 32, 22, 2, 1 of the primitive polynomial
#: x^32 + x^22 + x^2 + x + 1 (Xilinx XAPP052), tap t at mask bit t - 1. The right-shifting
#: clock's own characteristic polynomial is the reciprocal, x^32 + x^31 + x^30 + x^10 + 1,
#: also primitive: the period is 2^32 - 1 either way.
LFSR_POLY = 0x80200003
#: Default seed (any non-zero 32-bit value works; zero is the LFSR's lock-up state).
LFSR_SEED = 0xACE1ACE1
_MASK32 = 0xFFFFFFFF


def site_seed(seed: int, k: int) -> int:
    """The LFSR seed of rounding site ``k`` of a unit seeded ``seed``.

    The ``k``-th non-zero 32-bit value after ``seed``, counting cyclically through
    ``1, 2, …, 2³² − 1, 1, 2, …``::

        site_seed(seed, k) = (seed − 1 + k) mod (2³² − 1) + 1

    so that

    - it is never 0 (the LFSR's lock-up state);
    - it is ``seed + k`` whenever that fits in 32 bits (every seed up to ``2³² − 1 − k``);
    - the sites ``k = 0, 1, …, 2³² − 2`` of one seed have pairwise distinct seeds, whatever
      the seed (no two sites of a unit ever draw the same sequence);
    - ``site_seed(site_seed(seed, j), k) == site_seed(seed, j + k)``: a unit seeded with site
      ``j``'s seed numbers its own sites on from ``j``.

    Parameters
    ----------
    seed : int
        A valid LFSR seed, ``1 <= seed <= 2³² − 1``.
    k : int
        The site, ``k >= 0``.
    """
    Lfsr(seed)  # validates the seed with the LFSR's message
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise ValueError(f"site must be a non-negative integer, not {k!r}")
    return (int(seed) - 1 + int(k)) % _MASK32 + 1


def _lfsr_clock(state: int) -> int:
    """One clock of the Galois LFSR: shift right; if the bit shifted out was 1, XOR the taps."""
    return (state >> 1) ^ (LFSR_POLY if state & 1 else 0)


def _columns_of_clock() -> tuple[int, ...]:
    """The clock as a GF(2)-linear map: image of each basis state ``1 << b``."""
    return tuple(_lfsr_clock(1 << b) for b in range(32))


def _apply(columns: tuple[int, ...], state: int) -> int:
    out = 0
    for b in range(32):
        if state >> b & 1:
            out ^= columns[b]
    return out


def _compose(outer: tuple[int, ...], inner: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_apply(outer, column) for column in inner)


@functools.cache
def _power(exponent: int) -> tuple[int, ...]:
    """Columns of the map ``clock**exponent`` (``exponent`` a power of two)."""
    if exponent == 1:
        return _columns_of_clock()
    half = _power(exponent // 2)
    return _compose(half, half)


@functools.cache
def _half_tables(exponent: int) -> np.ndarray:
    """``T[k, v]``: ``clock**exponent`` applied to the 16-bit half ``v`` at position ``k``."""
    columns = np.array(_power(exponent), dtype=np.uint32)
    values = np.arange(1 << 16, dtype=np.uint32)
    tables = np.zeros((2, 1 << 16), dtype=np.uint32)
    for k in range(2):
        for bit in range(16):
            tables[k] ^= np.where(values >> bit & 1, columns[16 * k + bit], 0).astype(np.uint32)
    return tables


def lfsr_jump(clocks: int) -> tuple[int, ...]:
    """The map ``clock**clocks`` as 32 columns: column ``b`` is the state that ``1 << b`` becomes.

    Bit ``t`` of the state after ``clocks`` clocks is the XOR of the bits ``b`` of the current
    state for which bit ``t`` of column ``b`` is set: what hardware computes in one cycle.
    """
    if clocks < 0:
        raise ValueError(f"clocks must be >= 0, not {clocks}")
    result = tuple(1 << b for b in range(32))
    power = 1
    while clocks:
        if clocks & 1:
            result = _compose(_power(power), result)
        clocks >>= 1
        power <<= 1
    return result


def _apply_tables(tables: np.ndarray, states: np.ndarray) -> np.ndarray:
    return tables[0][states & 0xFFFF] ^ tables[1][states >> 16]


class Lfsr:
    """The pseudo-random source of stochastic rounding, reproducible in hardware.

    A 32-bit Galois LFSR with feedback mask :data:`LFSR_POLY`. One *draw* clocks it 32 times
    and returns the new state, so every draw is 32 fresh bits; a rounding that discards
    ``shift`` bits uses the low ``shift`` bits of one draw. Draws are taken in the C (row-major)
    order of the array being narrowed. In hardware, the 32 clocks are one 32×32 XOR matrix
    applied per draw.

    Parameters
    ----------
    seed : int
        Non-zero 32-bit initial state.
    """

    #: LFSR clocks per draw.
    CLOCKS_PER_DRAW = 32

    def __init__(self, seed: int = LFSR_SEED):
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise TypeError(f"LFSR seed must be an integer, not {type(seed).__name__}")
        if not 0 < seed <= _MASK32:
            raise ValueError(f"LFSR seed must be a non-zero 32-bit integer, not {seed}")
        self._state = int(seed)
        self._buffer = np.empty(0, dtype=np.uint32)
        self._next = 0

    @property
    def state(self) -> int:
        """The current 32-bit state (the last value drawn, or the seed)."""
        return self._state

    def draw(self, count: int) -> np.ndarray:
        """The next ``count`` draws as a uint32 array, advancing the state past them."""
        out = np.empty(count, dtype=np.uint32)
        filled = 0
        while filled < count:
            if self._next == len(self._buffer):
                self._refill()
            n = min(count - filled, len(self._buffer) - self._next)
            out[filled:filled + n] = self._buffer[self._next:self._next + n]
            self._next += n
            filled += n
        if count:
            self._state = int(out[-1])
        return out

    def _refill(self) -> None:
        """Compute the next :data:`_CHUNK` draws: ``M^(i+1)·s`` for ``M = clock^32``."""
        if len(self._buffer):
            # The next chunk is the last one advanced by M^CHUNK, one table pass.
            self._buffer = _apply_tables(_half_tables(self.CLOCKS_PER_DRAW * _CHUNK),
                                         self._buffer)
        else:
            # First chunk by doubling: draws n..2n-1 are draws 0..n-1 advanced by M^n.
            buffer = np.empty(_CHUNK, dtype=np.uint32)
            buffer[0] = _apply(_power(self.CLOCKS_PER_DRAW), self._state)
            filled = 1
            while filled < _CHUNK:
                tables = _half_tables(self.CLOCKS_PER_DRAW * filled)
                buffer[filled:2 * filled] = _apply_tables(tables, buffer[:filled])
                filled *= 2
            self._buffer = buffer
        self._next = 0


# Draws computed at a time: the cost of a draw is then two table look-ups.
_CHUNK = 1 << 14


class Rounder:
    """A rounding mode together with the LFSR it draws from (one per hardware rounding site).

    Parameters
    ----------
    mode : {"floor", "nearest", "stochastic"}
    seed : int
        Seed of the site's :class:`Lfsr` (used only by ``stochastic``).
    """

    def __init__(self, mode: str = "nearest", seed: int = LFSR_SEED):
        if mode not in ROUNDINGS:
            raise ValueError(f"unknown rounding {mode!r}; choose one of {list(ROUNDINGS)}")
        self.mode = mode
        self.lfsr = Lfsr(seed)

    def offsets(self, shape: tuple[int, ...], shift: int) -> np.ndarray | int:
        """What is added before a right shift by ``shift`` bits (``shift >= 1``)."""
        if self.mode == "floor":
            return 0
        if self.mode == "nearest":
            return 1 << (shift - 1)
        if shift > 32:
            raise ValueError(f"stochastic rounding draws 32 bits; cannot discard {shift} bits")
        draws = self.lfsr.draw(int(np.prod(shape))).astype(np.int64)
        return (draws & ((1 << shift) - 1)).reshape(shape)


def narrow(values, shift: int, fmt: Format, rounding: Rounder | str,
           overflow: Overflow | None = None, label: str = "narrow") -> np.ndarray:
    """Bring exact integers down to ``fmt``: shift right with rounding, then saturate.

    Parameters
    ----------
    values : ndarray of int64
        Exact wide integers with ``fmt.frac + shift`` fractional bits.
    shift : int
        Bits to discard (``> 0``: round; ``0``: none; ``< 0``: exact left shift).
    fmt : Format
        The output format.
    rounding : Rounder or str
        A :class:`Rounder` (required for ``stochastic``) or the name of a deterministic mode.
    overflow : Overflow, optional
        Tally that counts the elements saturated here under ``label``.
    label : str
        Name of the narrowing site, for the tally and error messages.

    Returns
    -------
    ndarray of int64
        In ``[fmt.min_int, fmt.max_int]``.
    """
    values = np.asarray(values)
    if values.dtype != np.int64:
        raise TypeError(f"{label}: narrow takes int64 integers, not {values.dtype}")
    rounder = _rounder(rounding, label)
    if shift > 0:
        offsets = rounder.offsets(values.shape, shift)
        _check_int64(values, np.max(offsets) if np.size(offsets) else 0, label)
        shifted = (values + offsets) >> shift
    elif shift < 0:
        _check_int64(values, 0, label, left_shift=-shift)
        shifted = values << -shift
    else:
        shifted = values
    return _saturate(shifted, fmt, overflow, label)


def _rounder(rounding: Rounder | str, label: str) -> Rounder:
    """The :class:`Rounder` for ``rounding`` (a name is enough for the deterministic modes)."""
    if isinstance(rounding, Rounder):
        return rounding
    if rounding == "stochastic":
        raise ValueError(f"{label}: stochastic rounding needs a Rounder with its own LFSR")
    return Rounder(rounding)


def _saturate(values: np.ndarray, fmt: Format, overflow: Overflow | None,
              label: str) -> np.ndarray:
    """Clip to ``fmt``'s integers, counting the clipped elements in ``overflow``."""
    saturated = np.clip(values, fmt.min_int, fmt.max_int)
    if overflow is not None:
        overflow.add(label, np.count_nonzero(saturated != values), saturated.size)
    return saturated


_INT64_MAX = np.iinfo(np.int64).max


def _check_int64(values: np.ndarray, offset: int, label: str, left_shift: int = 0) -> None:
    """Assert that adding ``offset`` or shifting left cannot leave int64."""
    if values.size == 0:
        return
    # Python integers: exact, unlike a float64 peak, and no overflow in abs(int64 min).
    peak = max(-int(values.min()), int(values.max()))
    if (peak + int(offset)) << left_shift >= _INT64_MAX:
        raise OverflowError(f"{label}: intermediate value exceeds int64")


def exact_matmul(a: np.ndarray, b: np.ndarray, label: str = "matmul") -> np.ndarray:
    """Exact integer product ``a @ b`` of int64 arrays, as the hardware's wide accumulator.

    Uses float64 BLAS when every partial sum provably stays below 2^53 (then float64 is exact
    and the result is the integer product, to the bit), else integer arithmetic. Raises
    ``OverflowError`` if the exact result could leave int64.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if a.size == 0 or b.size == 0:
        return a @ b
    terms = a.shape[-1]
    bound = (max(-int(a.min()), int(a.max())) * max(-int(b.min()), int(b.max())) * terms)
    if bound >= _INT64_MAX:
        raise OverflowError(f"{label}: the exact sum may exceed int64 (bound {bound:.3g})")
    if bound < 2**53:
        return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    return a @ b
