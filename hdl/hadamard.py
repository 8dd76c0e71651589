"""The Hadamard unit: element-wise complex products with a stored spectrum, one per clock.

A complex number is a 2×2 real block (docs/architecture.md §1), so the element-wise product
with the kernel's spectrum is a block-diagonal crossbar product: four real multiplies per
element, or three with the Gauss trick. Its model twin is
:func:`xbarode.model.fixed_ops.hadamard_fixed`; tests compare the two bit for bit.
"""

from __future__ import annotations

from amaranth import Module, Signal, signed
from amaranth.lib import data, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from xbarode.model.fixed import LFSR_SEED, ROUNDINGS, Format, Lfsr

from .checked import CheckedComponent
from .rounding import LfsrBank, narrow, rounding_offset

__all__ = ["HadamardUnit", "complex_layout"]


def complex_layout(width: int) -> data.StructLayout:
    """A complex word: ``re`` in the low ``width`` bits, ``im`` above it, both signed."""
    return data.StructLayout({"re": signed(width), "im": signed(width)})


class HadamardUnit(CheckedComponent):
    """Multiplies a stream of complex words element-wise by a stored spectrum.

    Element ``k`` (counted from the last ``restart``, modulo ``length``) is multiplied by
    spectrum entry ``k``; each product's real and imaginary parts are exact sums narrowed once
    to ``out_format`` (real first, two LFSR draws per element in stochastic mode).

    Parameters
    ----------
    length : int
        Spectrum entries.
    x_format, spectrum_format, out_format : Format
        Formats of the input elements, the spectrum and the output.
    rounding : {"floor", "nearest", "stochastic"}
        Rounding of the narrowing.
    gauss : bool
        Three multipliers (``k1 = c(a+b)``, ``k2 = a(d-c)``, ``k3 = b(c+d)``; re ``k1-k3``,
        im ``k1+k2``) instead of four; identical results.
    lfsr_seed : int
        Seed of the unit's LFSR.

    Attributes
    ----------
    load : In(stream.Signature(complex_layout(spectrum_format.width)))
        Spectrum entries, written at addresses 0, 1, … from the last ``restart``.
    i : In(stream.Signature(complex_layout(x_format.width)))
        Elements to multiply.
    o : Out(stream.Signature(complex_layout(out_format.width)))
        Products, in order.
    restart : In(1)
        Resets the element and load counters to 0.
    overflow : Out(1)
        Sticky: a narrowing saturated since the last ``clear``.
    clear : In(1)
        Lowers ``overflow``.

    Notes
    -----
    Latency: an element taken from ``i`` at clock edge ``t`` is offered on ``o`` from edge
    ``t + 4`` (spectrum read, operands, products, sum and narrowing); one element per clock.
    The pipeline stalls as a whole while ``o`` is offered and not taken. Every path between
    registers holds at most two carry chains.
    """

    @staticmethod
    def check_parameters(*, length: int, x_format: Format, spectrum_format: Format,
                         out_format: Format, rounding: str = "nearest", gauss: bool = False,
                         lfsr_seed: int = LFSR_SEED) -> None:
        """Raise the ``TypeError`` or ``ValueError`` the constructor raises for these
        parameters (the constructor's arguments), before a unit is made
        (:class:`~xbarode.hdl.checked.CheckedComponent`): a parent checks its part with it
        before building the part in its ``elaborate``."""
        if isinstance(length, bool) or not isinstance(length, int):
            raise TypeError(f"length must be an integer, not {type(length).__name__}")
        if length < 1:
            raise ValueError(f"length must be >= 1, not {length}")
        for name, fmt in (("x_format", x_format), ("spectrum_format", spectrum_format),
                          ("out_format", out_format)):
            if not isinstance(fmt, Format):
                raise TypeError(f"{name} must be a Format, not {type(fmt).__name__}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {rounding!r}; choose one of {list(ROUNDINGS)}")
        shift = x_format.frac + spectrum_format.frac - out_format.frac
        if rounding == "stochastic" and shift > 32:
            raise ValueError(f"stochastic rounding draws 32 bits; cannot discard {shift} bits")
        Lfsr(lfsr_seed)

    def __init__(self, *, length: int, x_format: Format, spectrum_format: Format,
                 out_format: Format, rounding: str = "nearest", gauss: bool = False,
                 lfsr_seed: int = LFSR_SEED):
        self._length = length
        self._xf, self._sf, self._of = x_format, spectrum_format, out_format
        self._rounding = rounding
        self._gauss = bool(gauss)
        self._lfsr_seed = lfsr_seed
        super().__init__({
            "load": In(stream.Signature(complex_layout(spectrum_format.width))),
            "i": In(stream.Signature(complex_layout(x_format.width))),
            "o": Out(stream.Signature(complex_layout(out_format.width))),
            "restart": In(1),
            "overflow": Out(1),
            "clear": In(1),
        })

    @property
    def length(self) -> int:
        """Spectrum entries."""
        return self._length

    @property
    def x_format(self) -> Format:
        """Format of the input elements."""
        return self._xf

    @property
    def spectrum_format(self) -> Format:
        """Format of the spectrum."""
        return self._sf

    @property
    def out_format(self) -> Format:
        """Format of the products."""
        return self._of

    @property
    def rounding(self) -> str:
        """Rounding of the narrowing."""
        return self._rounding

    @property
    def gauss(self) -> bool:
        """Three multipliers instead of four."""
        return self._gauss

    @property
    def lfsr_seed(self) -> int:
        """Seed of the unit's LFSR."""
        return self._lfsr_seed

    @property
    def shift(self) -> int:
        """Bits discarded by the narrowing."""
        return self._xf.frac + self._sf.frac - self._of.frac

    def elaborate(self, platform):
        m = Module()
        xw, sw = self._xf.width, self._sf.width
        spec = Memory(shape=complex_layout(sw), depth=self._length, init=[])
        m.submodules.spectrum = spec
        rd, wr = spec.read_port(), spec.write_port()

        def counter():
            return Signal(range(max(self._length, 2)))

        def bump(sig):
            with m.If(sig == self._length - 1):
                m.d.sync += sig.eq(0)
            with m.Else():
                m.d.sync += sig.eq(sig + 1)

        load_k, elem_k = counter(), counter()
        m.d.comb += self.load.ready.eq(1)
        with m.If(self.load.valid):
            m.d.comb += [wr.addr.eq(load_k), wr.data.eq(self.load.payload), wr.en.eq(1)]
            bump(load_k)

        # The whole pipeline moves when its output register is free or being emptied.
        move = Signal()
        m.d.comb += [move.eq(~self.o.valid | self.o.ready), self.i.ready.eq(move)]
        take = Signal()
        m.d.comb += take.eq(self.i.valid & move)
        m.d.comb += [rd.addr.eq(elem_k), rd.en.eq(move)]
        with m.If(take):
            bump(elem_k)
        with m.If(self.restart):
            m.d.sync += [load_k.eq(0), elem_k.eq(0)]

        # Stage 1: the element, beside its spectrum entry from the memory.
        v1 = Signal()
        a1, b1 = Signal(signed(xw)), Signal(signed(xw))
        # Stage 2: multiplier operands (pre-adders of the Gauss form included).
        v2 = Signal()
        # Stage 3: products.
        v3 = Signal()
        with m.If(move):
            m.d.sync += [v1.eq(take), a1.eq(self.i.payload.re), b1.eq(self.i.payload.im),
                         v2.eq(v1), v3.eq(v2)]
        c1, d1 = rd.data.re, rd.data.im
        if self._gauss:
            ops = [(Signal(signed(sw), name="g_c"), Signal(signed(xw + 1), name="g_ab")),
                   (Signal(signed(xw), name="g_a"), Signal(signed(sw + 1), name="g_dc")),
                   (Signal(signed(xw), name="g_b"), Signal(signed(sw + 1), name="g_cd"))]
            sources = [(c1, a1 + b1), (a1, d1 - c1), (b1, c1 + d1)]
        else:
            ops = [(Signal(signed(xw), name=f"q_{n}x"), Signal(signed(sw), name=f"q_{n}s"))
                   for n in ("ac", "bd", "ad", "bc")]
            sources = [(a1, c1), (b1, d1), (a1, d1), (b1, c1)]
        prods = [Signal(signed(len(x) + len(y)), name=f"prod{k}")
                 for k, (x, y) in enumerate(ops)]
        with m.If(move):
            for (x, y), (sx, sy) in zip(ops, sources, strict=True):
                m.d.sync += [x.eq(sx), y.eq(sy)]
            m.d.sync += [p.eq(x * y) for p, (x, y) in zip(prods, ops, strict=True)]
        if self._gauss:
            re_sum, im_sum = prods[0] - prods[2], prods[0] + prods[1]
        else:
            re_sum, im_sum = prods[0] - prods[1], prods[2] + prods[3]
        exact_re = Signal(signed(max(len(re_sum), len(im_sum))))
        exact_im = Signal(signed(max(len(re_sum), len(im_sum))))
        m.d.comb += [exact_re.eq(re_sum), exact_im.eq(im_sum)]

        # Stage 4: sums narrowed into the output register; two draws per element.
        draws = None
        if self._rounding == "stochastic" and self.shift > 0:
            m.submodules.lfsr = lfsr = LfsrBank(draws=2, bits=self.shift, steps={2},
                                                seed=self._lfsr_seed)
            draws = lfsr.draw
            m.d.comb += lfsr.advance.eq(move & v3)

        def offset(k):
            return rounding_offset(self._rounding, self.shift,
                                   None if draws is None else draws[k])

        re, sat_re = narrow(m, exact_re, self.shift, self._of.width, offset(0))
        im, sat_im = narrow(m, exact_im, self.shift, self._of.width, offset(1))
        with m.If(move):
            m.d.sync += [self.o.valid.eq(v3), self.o.payload.re.eq(re),
                         self.o.payload.im.eq(im)]
        with m.If(self.clear):
            m.d.sync += self.overflow.eq(0)
        with m.Elif(move & v3 & (sat_re | sat_im)):
            m.d.sync += self.overflow.eq(1)
        return m
