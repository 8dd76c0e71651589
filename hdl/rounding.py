"""Narrowing and the stochastic-rounding LFSR in hardware: twins of :mod:`xbarode.model.fixed`.

``narrow`` builds the combinational shift–round–saturate of docs/architecture.md §2 for one value;
``LfsrBank`` holds the 32-bit Galois LFSR state and offers the next ``n`` draws at once (each
draw is 32 clocks of the LFSR, a fixed XOR matrix) and advances by however many were used.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib.wiring import In, Out

from xbarode.model.fixed import LFSR_SEED, Lfsr, lfsr_jump

from .checked import CheckedComponent

__all__ = ["LfsrBank", "lfsr_successor", "narrow", "rounding_offset", "sgd_step"]


def narrow(m: Module, value, shift: int, width: int, offset=None):
    """Shift ``value`` right by ``shift`` bits with an additive rounding ``offset``, saturate.

    Parameters
    ----------
    m : Module
        Module to add the combinational logic to.
    value : Value
        Signed exact value.
    shift : int
        Bits to discard; ``<= 0`` shifts left (exact, no offset).
    width : int
        Signed output width.
    offset : Value or int, optional
        Added before the shift, ``0 <= offset < 2^shift``: 0 for floor, ``2^(shift-1)`` for
        nearest, LFSR bits for stochastic.

    Returns
    -------
    result : Signal(signed(width))
        ``clip(floor((value + offset) / 2^shift))`` to the signed range of ``width`` bits.
    saturated : Signal(1)
        High when the result was clipped.

    Notes
    -----
    Since ``offset < 2^shift``, ``floor((value + offset) / 2^shift)`` is ``high + carry`` with
    ``high = value >> shift`` and ``carry`` the carry out of ``value mod 2^shift + offset``: the
    only carry chain is that of the discarded bits, and the range test and the increment look
    at ``high``, a wire of ``value``, alongside it (the rounding of a wide sum then costs a
    short carry chain and a few look-up tables, not a chain over the whole sum followed by the
    range test).
    """
    value = value.as_signed()
    if shift <= 0:
        high, carry = value << -shift, Const(0, 1)
    else:
        high = value >> shift
        carry = Const(0, 1)
        if not (offset is None or (isinstance(offset, int) and offset == 0)):
            low = Signal(shift + 1)
            m.d.comb += low.eq(value[:shift] + offset)
            carry = low[shift]
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    result = Signal(signed(width))
    saturated = Signal()
    if len(high) < width:            # high + carry fits in width bits
        m.d.comb += result.eq(high + carry)
        return result, saturated
    # high + carry fits iff high fits (the bits from the output's sign bit up are all equal: a
    # LUT reduction, not the carry chain of a comparison), except at the two edges: high = hi
    # with a carry leaves the range, high = lo - 1 with a carry enters it. Both outcomes, with
    # and without the carry, are formed beside the chain; the carry picks one (a look-up table
    # after the chain, the one thing that waits for it).
    top = high[width - 1:]
    low_ones = high[:width - 1].all()
    fits = top.all() | ~top.any()
    at_hi = ~top.any() & low_ones
    below_lo = (high[width:].all() & ~high[width - 1] & low_ones) if len(high) > width \
        else Const(0, 1)
    sat_carry, sat_plain = Signal(), Signal()
    m.d.comb += [sat_carry.eq((~fits & ~below_lo) | at_hi), sat_plain.eq(~fits)]
    clip = Mux(high[-1], lo, hi)
    word = high[:width]
    with_carry, plain = Signal(signed(width)), Signal(signed(width))
    # word + 1 wraps lo - 1 to lo in width bits.
    m.d.comb += [with_carry.eq(Mux(sat_carry, clip, word + 1)),
                 plain.eq(Mux(sat_plain, clip, word))]
    m.d.comb += [result.eq(Mux(carry, with_carry, plain)),
                 saturated.eq(Mux(carry, sat_carry, sat_plain))]
    return result, saturated


def sgd_step(m: Module, old, total_grad, shift: int, width: int, offset=None):
    """One word's SGD step, ``sat(old + narrow(-total_grad · 2^-shift))``: a bias word's or a
    kernel tap's (one rounding, ``offset`` as for :func:`narrow`).

    Returns
    -------
    new : Signal(signed(width))
        The new word.
    saturated : Value
        High when the step or the sum was clipped.
    """
    neg = Signal(signed(len(total_grad) + 1))
    m.d.comb += neg.eq(-total_grad)
    step, sat_step = narrow(m, neg, shift, width, offset)
    total = Signal(signed(width + 1))
    m.d.comb += total.eq(old + step)
    new, sat_new = narrow(m, total, 0, width)
    return new, sat_step | sat_new


def _apply(columns, state, bits: int):
    """The low ``bits`` bits of ``columns`` applied to ``state``, as XOR reductions."""
    out = []
    for t in range(bits):
        taps = [state[b] for b in range(32) if columns[b] >> t & 1]
        out.append(Cat(*taps).xor() if taps else Const(0, 1))
    return Cat(*out)


class LfsrBank(CheckedComponent):
    """The LFSR of stochastic rounding, offering up to ``draws`` consecutive draws per cycle.

    Parameters
    ----------
    draws : int
        Largest number of draws used in one cycle (the tile's lanes).
    bits : int
        Low bits of each draw that are needed (the narrowing shift; at most 32).
    steps : iterable of int
        The numbers of draws a cycle may consume (e.g. ``{1, lanes, last chunk}``).
    seed : int
        Initial state (non-zero, 32 bits).
    registered : bool
        Drive the draws from registers (loaded at each clock edge with the draws of the next
        state, reset to the seed's draws) instead of from the state's XOR matrices: the same
        bits in every cycle, ``draws · bits`` more flip-flops, and the roundings that read
        them, spread over the device, start their paths at a register (the XOR matrices and
        the ``advance`` mux sit in front of the registers, beside the state).

    Attributes
    ----------
    draw : Out(unsigned(bits)) × draws
        ``draw[k]`` is the low ``bits`` bits of draw ``k + 1`` from the current state.
    advance : In(range(len(steps) + 1))
        0 keeps the state; ``j > 0`` consumes ``steps[j - 1]`` draws this cycle.

    Latency: the state updates at the clock edge; ``draw`` follows it in the same cycle (the
    combinational matrices, or the registers loaded at that edge).
    """

    @staticmethod
    def check_parameters(*, draws: int, bits: int, steps, seed: int = LFSR_SEED,
                         registered: bool = False) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        Lfsr(seed)  # validates the seed with the model's message
        if not 1 <= bits <= 32:
            raise ValueError(f"bits must be between 1 and 32, not {bits}")
        steps = tuple(sorted(set(steps)))
        if not all(1 <= s <= draws for s in steps):
            raise ValueError(f"steps must lie in 1..{draws}, not {steps}")

    def __init__(self, *, draws: int, bits: int, steps, seed: int = LFSR_SEED,
                 registered: bool = False):
        self._registered = registered
        self._draws = draws
        self._bits = bits
        self._steps = tuple(sorted(set(steps)))
        self._seed = seed
        self._state = Signal(32, init=seed, name="state")
        super().__init__({
            "draw": Out(unsigned(bits)).array(draws),
            "advance": In(range(len(self._steps) + 1)),
        })

    @property
    def steps(self) -> tuple[int, ...]:
        """The numbers of draws a cycle may consume; ``advance = j`` selects ``steps[j-1]``."""
        return self._steps

    @property
    def registered(self) -> bool:
        """True if the draws come from registers."""
        return self._registered

    @property
    def state(self) -> Signal:
        """The LFSR's state register (:func:`lfsr_successor` reads it)."""
        return self._state

    def elaborate(self, platform):
        m = Module()
        state = self._state
        following = Signal(32)          # the state after this cycle's advance
        m.d.comb += following.eq(state)
        with m.Switch(self.advance):
            for j, step in enumerate(self._steps, start=1):
                with m.Case(j):
                    m.d.comb += following.eq(_apply(lfsr_jump(32 * step), state, 32))
        m.d.sync += state.eq(following)
        mask = (1 << self._bits) - 1
        initial = Lfsr(self._seed).draw(self._draws)
        for k in range(self._draws):
            jump = lfsr_jump(32 * (k + 1))
            if self._registered:
                reg = Signal(self._bits, init=int(initial[k]) & mask, name=f"draw{k}_q")
                m.d.sync += reg.eq(_apply(jump, following, self._bits))
                m.d.comb += self.draw[k].eq(reg)
            else:
                m.d.comb += self.draw[k].eq(_apply(jump, state, self._bits))
        return m


def lfsr_successor(bank: LfsrBank):
    """The first draw of the state ``bank`` takes at the coming clock edge (its ``draw[0]``
    in the next cycle), 32 bits: each step's XOR matrix applied to the bank's state beside
    the others, the bank's ``advance`` picking one. Register it to have the bank's first
    draw of each cycle with no XOR matrix in front of it.

    Returns
    -------
    Value
    """
    state = bank.state
    options = [_apply(lfsr_jump(32 * (1 + step)), state, 32) for step in (0, *bank.steps)]
    value = options[0]
    for j, option in enumerate(options[1:], start=1):
        value = Mux(bank.advance == j, option, value)
    return value


def rounding_offset(mode: str, shift: int, draw=None):
    """The value added before a right shift of ``shift`` bits, per rounding mode."""
    if shift <= 0 or mode == "floor":
        return 0
    if mode == "nearest":
        return 1 << (shift - 1)
    if shift > 32:
        raise ValueError(f"stochastic rounding draws 32 bits; cannot discard {shift} bits")
    return draw[:shift]

