"""The channel-mixing unit: per frequency, a c_out×c_in complex matrix times a c_in-vector.

With ``c`` channels the Fourier path's Hadamard product becomes, at every frequency ``f``, the
product of the kernel bank's spectrum matrix ``K̂(f)`` (c_out×c_in) and the vector of the input
channels' spectra ``x(f)`` (docs/architecture.md, "Fourier path with channels"): in real 2×2
block form a small (2·c_out)×(2·c_in) crossbar product. Driven from the other side (input
``adjoint`` at ``restart``), the same spectrum words give the conjugate-transposed product
``K̂(f)ᴴ y(f)``, the backward pass's circular correlations. With one channel it is the Hadamard
unit. Its model twin is :func:`xbarode.model.fixed_fourier_bank.channel_mix_fixed`; tests
compare the two bit for bit.
"""

from __future__ import annotations

from amaranth import Array, Module, Mux, Signal, signed
from amaranth.lib import stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from xbarode.model.fixed import LFSR_SEED, ROUNDINGS, Format, Lfsr
from xbarode.model.fixed_fourier_bank import mixing_accumulator_bits

from .checked import CheckedComponent
from .hadamard import complex_layout
from .rounding import LfsrBank, narrow, rounding_offset

__all__ = ["ChannelMixUnit"]


class ChannelMixUnit(CheckedComponent):
    """Multiplies a stream of c_in-vectors, one per frequency, by stored c_out×c_in complex
    matrices, one complex multiply–accumulate per clock.

    Vector ``k`` (counted from the last ``restart``, modulo ``length``) is multiplied by matrix
    ``k``. Each output component is the exact sum over the input channels — ``re = Σ_i (a·c −
    b·d)``, ``im = Σ_i (a·d + b·c)`` for ``x_i = a + ib`` and ``K̂[o, i] = c + id`` — narrowed
    once to ``out_format`` (real first, two LFSR draws per output). With ``adjoint`` high at
    ``restart`` the unit takes c_out-vectors and gives c_in-vectors, ``y_i = Σ_o conj(K̂[o, i])·
    x_o`` (``re = Σ_o (a·c + b·d)``, ``im = Σ_o (b·c − a·d)``), from the same words.

    Parameters
    ----------
    length : int
        Frequencies: matrices stored.
    channels_in, channels_out : int
        ``c_in`` and ``c_out`` of the matrices (the forward product's input and output).
    x_format, spectrum_format, out_format : Format
        Formats of the input vectors' words, the spectrum matrices and the output.
    rounding : {"floor", "nearest", "stochastic"}
        Rounding of the narrowing.
    lfsr_seed : int
        Seed of the unit's LFSR.

    Attributes
    ----------
    load : In(stream.Signature(complex_layout(spectrum_format.width)))
        Spectrum entries, written at addresses 0, 1, … from the last ``restart``: entry
        ``(k·c_out + o)·c_in + i`` is ``K̂[o, i]`` at frequency ``k`` (frequency by frequency,
        each matrix row-major).
    i : In(stream.Signature(complex_layout(x_format.width)))
        Vectors to multiply, one after the other, channel 0 first: ``c_in`` words each
        (``c_out`` with ``adjoint``).
    o : Out(stream.Signature(complex_layout(out_format.width)))
        Products, vector by vector, channel 0 first: ``c_out`` words each (``c_in`` with
        ``adjoint``).
    restart : In(1)
        Sets the load and vector counters to 0, forgets a vector partly taken and samples
        ``adjoint``; products already being computed still come out.
    adjoint : In(1)
        Sampled at ``restart``: multiply by ``K̂(f)ᴴ`` until the next ``restart``.
    overflow : Out(1)
        Sticky: a narrowing saturated since the last ``clear``.
    clear : In(1)
        Lowers ``overflow``.

    Notes
    -----
    Latency: when the last word of a vector is taken at clock edge ``t``, its first output is
    offered on ``o`` from edge ``t + n_in + 4`` (``n_in`` words in per vector) if the unit is
    idle, and output ``j`` ``n_in`` cycles after output ``j − 1``: each output is ``n_in``
    multiply–accumulates (spectrum read, operands, products, sum, narrowing). Two vector
    buffers let the next vector arrive while one is multiplied, so a stream of vectors takes
    ``c_in·c_out`` cycles per vector, the multiply–accumulates' bound. The pipeline stalls as
    a whole while ``o`` is offered and not taken. Every path between registers holds at most
    two carry chains.
    """

    @staticmethod
    def check_parameters(*, length: int, channels_in: int, channels_out: int,
                         x_format: Format, spectrum_format: Format, out_format: Format,
                         rounding: str = "nearest", lfsr_seed: int = LFSR_SEED) -> None:
        """Raise the ``TypeError`` or ``ValueError`` the constructor raises for these
        parameters (the constructor's arguments), before a unit is made
        (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        for name, value in (("length", length), ("channels_in", channels_in),
                            ("channels_out", channels_out)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, not {value}")
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

    def __init__(self, *, length: int, channels_in: int, channels_out: int, x_format: Format,
                 spectrum_format: Format, out_format: Format, rounding: str = "nearest",
                 lfsr_seed: int = LFSR_SEED):
        self._length = length
        self._ci, self._co = channels_in, channels_out
        self._xf, self._sf, self._of = x_format, spectrum_format, out_format
        self._rounding = rounding
        self._lfsr_seed = lfsr_seed
        super().__init__({
            "load": In(stream.Signature(complex_layout(spectrum_format.width))),
            "i": In(stream.Signature(complex_layout(x_format.width))),
            "o": Out(stream.Signature(complex_layout(out_format.width))),
            "restart": In(1),
            "adjoint": In(1),
            "overflow": Out(1),
            "clear": In(1),
        })

    @property
    def length(self) -> int:
        """Frequencies: matrices stored."""
        return self._length

    @property
    def channels_in(self) -> int:
        """``c_in``: words per vector in (out with ``adjoint``)."""
        return self._ci

    @property
    def channels_out(self) -> int:
        """``c_out``: words per vector out (in with ``adjoint``)."""
        return self._co

    @property
    def x_format(self) -> Format:
        """Format of the input words."""
        return self._xf

    @property
    def spectrum_format(self) -> Format:
        """Format of the spectrum matrices."""
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
    def lfsr_seed(self) -> int:
        """Seed of the unit's LFSR."""
        return self._lfsr_seed

    @property
    def shift(self) -> int:
        """Bits discarded by the narrowing."""
        return self._xf.frac + self._sf.frac - self._of.frac

    @property
    def accumulator_width(self) -> int:
        """Bits of the accumulators: the exact sum of the wider of the two directions
        (:func:`~xbarode.model.fixed_fourier_bank.mixing_accumulator_bits`), so no sum wraps."""
        return mixing_accumulator_bits(self._xf, self._sf, max(self._ci, self._co))

    def elaborate(self, platform):
        m = Module()
        ci, co, xw, sw = self._ci, self._co, self._xf.width, self._sf.width
        width = max(ci, co)
        matrix = ci * co
        spec = Memory(shape=complex_layout(sw), depth=self._length * matrix, init=[])
        m.submodules.spectrum = spec
        rd, wr = spec.read_port(), spec.write_port()

        def counter(limit):
            return Signal(range(max(limit, 2)))

        # The direction, sampled at restart: words in and out per vector.
        adj = Signal()
        n_in = Mux(adj, co, ci)
        n_out = Mux(adj, ci, co)

        load_k = counter(self._length * matrix)
        m.d.comb += self.load.ready.eq(1)
        with m.If(self.load.valid):
            m.d.comb += [wr.addr.eq(load_k), wr.data.eq(self.load.payload), wr.en.eq(1)]
            m.d.sync += load_k.eq(Mux(load_k == self._length * matrix - 1, 0, load_k + 1))

        # Two vector buffers: the writer fills one while the reader multiplies the other.
        bufs = [Array(Signal(complex_layout(xw), name=f"buf{b}_{k}") for k in range(width))
                for b in range(2)]
        full = Array(Signal(name=f"full{b}") for b in range(2))
        wsel, rsel = Signal(), Signal()
        wcount = counter(width)
        m.d.comb += self.i.ready.eq(~full[wsel])
        with m.If(self.i.valid & self.i.ready):
            for b in range(2):
                with m.If(wsel == b):
                    m.d.sync += bufs[b][wcount].eq(self.i.payload)
            with m.If(wcount == n_in - 1):
                m.d.sync += [wcount.eq(0), full[wsel].eq(1), wsel.eq(~wsel)]
            with m.Else():
                m.d.sync += wcount.eq(wcount + 1)

        # The whole pipeline moves when its output register is free or being emptied.
        move = Signal()
        m.d.comb += move.eq(~self.o.valid | self.o.ready)
        # Issue: one multiply–accumulate of the vector in buffer rsel. `inner` runs over the
        # words in, `outer` over the outputs; `addr` is K̂[o, i]'s entry, `row` the entry of
        # the current output's first term and `base` the current matrix.
        inner, outer = counter(width), counter(width)
        base = counter(self._length * matrix)
        row, addr = counter(self._length * matrix), counter(self._length * matrix)
        issue = Signal()
        m.d.comb += [issue.eq(move & full[rsel]), rd.addr.eq(addr), rd.en.eq(move)]
        last_in, last_out = Signal(), Signal()
        m.d.comb += [last_in.eq(inner == n_in - 1), last_out.eq(outer == n_out - 1)]
        with m.If(issue):
            with m.If(~last_in):
                # Forward: the next i of row o; adjoint: the next o of column i.
                m.d.sync += [inner.eq(inner + 1), addr.eq(addr + Mux(adj, ci, 1))]
            with m.Elif(~last_out):
                next_row = row + Mux(adj, 1, ci)
                m.d.sync += [inner.eq(0), outer.eq(outer + 1), row.eq(next_row),
                             addr.eq(next_row)]
            with m.Else():
                next_base = Mux(base == (self._length - 1) * matrix, 0, base + matrix)
                m.d.sync += [inner.eq(0), outer.eq(0), base.eq(next_base), row.eq(next_base),
                             addr.eq(next_base), full[rsel].eq(0), rsel.eq(~rsel)]
        with m.If(self.restart):
            m.d.sync += [load_k.eq(0), wcount.eq(0), wsel.eq(0), rsel.eq(0), full[0].eq(0),
                         full[1].eq(0), inner.eq(0), outer.eq(0), base.eq(0), row.eq(0),
                         addr.eq(0), adj.eq(self.adjoint)]

        # Stage 1: the word beside its spectrum entry from the memory.
        v1, first1, last1 = Signal(), Signal(), Signal()
        x1 = Signal(complex_layout(xw))
        # Stage 2: multiplier operands. Stage 3: products. Stage 4: the sums.
        v2, first2, last2, v3, first3, last3, v4 = (Signal(name=n) for n in (
            "v2", "first2", "last2", "v3", "first3", "last3", "v4"))
        with m.If(move):
            m.d.sync += [v1.eq(issue), first1.eq(inner == 0), last1.eq(last_in),
                         x1.eq(Mux(rsel, bufs[1][inner], bufs[0][inner])),
                         v2.eq(v1), first2.eq(first1), last2.eq(last1),
                         v3.eq(v2), first3.eq(first2), last3.eq(last2),
                         v4.eq(v3 & last3)]
        a, b = Signal(signed(xw)), Signal(signed(xw))
        c, d = Signal(signed(sw)), Signal(signed(sw))
        prods = {n: Signal(signed(xw + sw), name=f"prod_{n}") for n in ("ac", "bd", "ad", "bc")}
        with m.If(move):
            m.d.sync += [a.eq(x1.re), b.eq(x1.im), c.eq(rd.data.re), d.eq(rd.data.im),
                         prods["ac"].eq(a * c), prods["bd"].eq(b * d),
                         prods["ad"].eq(a * d), prods["bc"].eq(b * c)]
        # Forward re = ac − bd, im = ad + bc; adjoint re = ac + bd, im = bc − ad.
        term_re, term_im = Signal(signed(xw + sw + 1)), Signal(signed(xw + sw + 1))
        m.d.comb += [term_re.eq(Mux(adj, prods["ac"] + prods["bd"], prods["ac"] - prods["bd"])),
                     term_im.eq(Mux(adj, prods["bc"] - prods["ad"], prods["ad"] + prods["bc"]))]
        acc_re = Signal(signed(self.accumulator_width))
        acc_im = Signal(signed(self.accumulator_width))
        with m.If(move & v3):
            m.d.sync += [acc_re.eq(Mux(first3, 0, acc_re) + term_re),
                         acc_im.eq(Mux(first3, 0, acc_im) + term_im)]

        # Stage 5: the finished sums narrowed into the output register; two draws per output.
        draws = None
        if self._rounding == "stochastic" and self.shift > 0:
            m.submodules.lfsr = lfsr = LfsrBank(draws=2, bits=self.shift, steps={2},
                                                seed=self._lfsr_seed)
            draws = lfsr.draw
            m.d.comb += lfsr.advance.eq(move & v4)

        def offset(k):
            return rounding_offset(self._rounding, self.shift,
                                   None if draws is None else draws[k])

        re, sat_re = narrow(m, acc_re, self.shift, self._of.width, offset(0))
        im, sat_im = narrow(m, acc_im, self.shift, self._of.width, offset(1))
        with m.If(move):
            m.d.sync += [self.o.valid.eq(v4), self.o.payload.re.eq(re),
                         self.o.payload.im.eq(im)]
        with m.If(self.clear):
            m.d.sync += self.overflow.eq(0)
        with m.Elif(move & v4 & (sat_re | sat_im)):
            m.d.sync += self.overflow.eq(1)
        return m
