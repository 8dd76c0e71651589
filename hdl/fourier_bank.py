"""A bank of circular convolutions with channels by the Fourier path: the DFT unit and the
channel-mixing unit, sequenced in hardware.

``(K z)_o = Σ_i K[o, i] ⊛ z_i`` for a c_out×c_in bank of kernels: the 2-D DFT of every input
channel, at every frequency the c_out×c_in complex matrix of the kernels' spectra times the
vector of the channels' spectra (:class:`~xbarode.hdl.channel_mix.ChannelMixUnit`), then the
inverse 2-D DFT of every output channel (docs/architecture.md, "Fourier path with channels").
The adjoint, the bank of circular correlations ``(Kᵀ y)_i = Σ_o K[o, i] ⋆ y_o``, runs on the
same units from the same spectrum words. Its model twin is
:func:`xbarode.model.fixed_fourier_bank.fourier_bank_fixed`; tests compare the two bit for bit.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import enum
from amaranth.lib.memory import Memory

from xbarode.model.fixed import LFSR_SEED, Format, site_seed

from .channel_mix import ChannelMixUnit
from .checked import CheckedComponent
from .fourier import Dft2d, FourierOp
from .hadamard import complex_layout
from .interface import ControlSignature

__all__ = ["BankOp", "FourierBank"]


class BankOp(enum.Enum, shape=3):
    """Operations of :class:`FourierBank`, selected on ``op`` at ``start``.

    ============= ==============================================================================
    LOAD_SPECTRUM stream in ``2·c_out·c_in·H·W`` spectrum words: frequency by frequency,
                  column-major (``w`` outer, ``h`` inner), each c_out×c_in matrix row-major,
                  ``(re, im)`` per entry (:func:`~xbarode.model.fixed_ops.spectrum_stream`)
    LOAD_REAL     stream in ``c_in·H·W`` real words, channel by channel, each row-major; the
                  next CONV is the forward product
    LOAD_REAL_T   stream in ``c_out·H·W`` real words; the next CONV is the adjoint product
    CONV          the product of the last load's direction, into the output buffer
    READ_REAL     stream out the forward product's ``c_out·H·W`` real words, channel by
                  channel, each row-major
    READ_REAL_T   stream out the adjoint product's ``c_in·H·W`` real words
    ============= ==============================================================================

    An operation the bank does not have ends at once (``done``) and changes nothing.
    """

    LOAD_SPECTRUM = 0
    LOAD_REAL = 1
    LOAD_REAL_T = 2
    CONV = 3
    READ_REAL = 4
    READ_REAL_T = 5


class FourierBank(CheckedComponent):
    """A c_out×c_in bank of circular convolutions on H×W channels, by the Fourier path.

    Parameters
    ----------
    height, width : int
        Channel size H×W.
    channels_in, channels_out : int
        ``c_in`` and ``c_out`` of the bank.
    lanes : int, optional
        Multipliers of each DFT array (:class:`~xbarode.hdl.fourier.Dft2d`).
    data_format, twiddle_format, spectrum_format : Format
        Formats of every data word, of the DFT tables and of the kernels' spectra.
    acc_width : int
        Accumulator width of the DFT arrays.
    rounding : {"floor", "nearest", "stochastic"}
        Rounding of every narrowing.
    lfsr_seed : int
        The DFT unit's rows and columns arrays draw from ``lfsr_seed`` and
        ``site_seed(lfsr_seed, 1)``, the mixing unit from ``site_seed(lfsr_seed, 2)``: the
        model's sites (:func:`~xbarode.model.fixed_ops.fourier_rounders`).

    Attributes
    ----------
    i : In(stream.Signature(signed(word)))
        Words in (LOAD_*), ``word`` the wider of the data and spectrum formats.
    o : Out(stream.Signature(signed(data_format.width)))
        Words out (READ_REAL, READ_REAL_T).
    op : In(BankOp)
    start : In(1)
        Pulse for one cycle while ``busy`` is low to start ``op``.
    busy, done : Out(1)
    overflow : Out(1)
        Sticky: some narrowing of either unit saturated since the last ``clear``.
    clear : In(1)

    Notes
    -----
    The bank is the host of its two units: CONV runs, per input channel (``n_in`` of them:
    ``c_in``, or ``c_out`` after LOAD_REAL_T), LOAD_REAL, DFT and READ on the DFT unit,
    writing the spectrum into a buffer frequency-major; then streams every frequency's vector
    through the mixing unit (``c_in·c_out`` cycles per frequency) into a second buffer; then,
    per output channel, LOAD, IDFT and READ_REAL on the DFT unit into the output buffer. So
    the three rounding sites draw in the model's order. Latency of CONV, from the cycle
    ``start`` is seen to ``done`` inclusive: ``n_in·(3·H·W + DFT + 7) + H·W·c_in·c_out +
    n_out·(3·H·W + IDFT + 7) + 10`` cycles at most, DFT and IDFT the DFT unit's latencies
    (:class:`~xbarode.hdl.fourier.Dft2d`). LOAD_* and READ_* move one word per cycle. The
    output buffer holds the first ``max(c_in, c_out)·H·W`` words of the last CONV's output
    and, until a CONV, of the last load (what a READ reads then).
    """

    @staticmethod
    def check_parameters(height: int, width: int, *, channels_in: int, channels_out: int,
                         lanes: int | None = None, data_format: Format,
                         twiddle_format: Format, spectrum_format: Format, acc_width: int = 48,
                         rounding: str = "nearest", lfsr_seed: int = LFSR_SEED) -> None:
        """Raise the ``TypeError`` or ``ValueError`` the constructor raises for these
        parameters: those of its DFT unit and its mixing unit, with their messages."""
        Dft2d.check_parameters(height, width, lanes=lanes, data_format=data_format,
                               twiddle_format=twiddle_format, acc_width=acc_width,
                               rounding=rounding, lfsr_seed=lfsr_seed)
        ChannelMixUnit.check_parameters(
            length=height * width, channels_in=channels_in, channels_out=channels_out,
            x_format=data_format, spectrum_format=spectrum_format, out_format=data_format,
            rounding=rounding, lfsr_seed=site_seed(lfsr_seed, 2))

    def __init__(self, height: int, width: int, *, channels_in: int, channels_out: int,
                 lanes: int | None = None, data_format: Format, twiddle_format: Format,
                 spectrum_format: Format, acc_width: int = 48, rounding: str = "nearest",
                 lfsr_seed: int = LFSR_SEED):
        self._height, self._width = height, width
        self._ci, self._co = channels_in, channels_out
        self._lanes = lanes
        self._df, self._tf, self._sf = data_format, twiddle_format, spectrum_format
        self._acc_width = acc_width
        self._rounding = rounding
        self._lfsr_seed = lfsr_seed
        super().__init__(ControlSignature(BankOp, max(data_format.width, spectrum_format.width),
                                          data_format.width))

    @property
    def height(self) -> int:
        """Channel height H."""
        return self._height

    @property
    def width(self) -> int:
        """Channel width W."""
        return self._width

    @property
    def channels_in(self) -> int:
        """``c_in`` of the bank."""
        return self._ci

    @property
    def channels_out(self) -> int:
        """``c_out`` of the bank."""
        return self._co

    @property
    def lanes(self) -> tuple[int, int]:
        """Multipliers of the DFT unit's rows and columns arrays
        (:meth:`Dft2d.array_lanes <xbarode.hdl.fourier.Dft2d.array_lanes>`)."""
        return Dft2d.array_lanes(self._height, self._width, self._lanes)

    @property
    def data_format(self) -> Format:
        """Format of the data words."""
        return self._df

    @property
    def twiddle_format(self) -> Format:
        """Format of the DFT tables."""
        return self._tf

    @property
    def spectrum_format(self) -> Format:
        """Format of the kernels' spectra."""
        return self._sf

    @property
    def rounding(self) -> str:
        """Rounding of every narrowing."""
        return self._rounding

    @property
    def lfsr_seed(self) -> int:
        """Seed of the rows array's LFSR (the others: its sites 1 and 2)."""
        return self._lfsr_seed

    def elaborate(self, platform):
        m = Module()
        height, width, ci, co = self._height, self._width, self._ci, self._co
        size, dw = height * width, self._df.width
        depth = max(ci, co) * size
        m.submodules.dft = dft = Dft2d(
            height, width, lanes=self._lanes, data_format=self._df,
            twiddle_format=self._tf, acc_width=self._acc_width, rounding=self._rounding,
            lfsr_seed=self._lfsr_seed)
        m.submodules.mix = mix = ChannelMixUnit(
            length=size, channels_in=ci, channels_out=co, x_format=self._df,
            spectrum_format=self._sf, out_format=self._df, rounding=self._rounding,
            lfsr_seed=site_seed(self._lfsr_seed, 2))
        m.d.comb += [self.overflow.eq(dft.overflow | mix.overflow), dft.clear.eq(self.clear),
                     mix.clear.eq(self.clear)]
        # The real words (the loads, then the CONV's outputs over them: every input channel
        # is transformed before the first output is written), the input channels' spectra
        # and the mixed spectra, the last two frequency-major: entry f·n + channel.
        reals = Memory(shape=signed(dw), depth=depth, init=[])
        spectra = Memory(shape=complex_layout(dw), depth=depth, init=[])
        mixed = Memory(shape=complex_layout(dw), depth=depth, init=[])
        m.submodules.reals, m.submodules.spectra, m.submodules.mixed = reals, spectra, mixed
        ports = {"reals": (reals.read_port(), reals.write_port()),
                 "spectra": (spectra.read_port(), spectra.write_port()),
                 "mixed": (mixed.read_port(), mixed.write_port())}
        for rd, _ in ports.values():
            m.d.comb += rd.en.eq(0)

        adj = Signal()                       # the direction of the last load
        n_in, n_out = Mux(adj, co, ci), Mux(adj, ci, co)
        regs = _Registers.create(depth, ci * co * size, max(ci, co), len(self.i.payload))
        # The DFT unit's words are written one cycle after they arrive (no block RAM output
        # drives another's write data); nothing reads them sooner.
        spectra_wb = _WriteBehind.create(m, ports["spectra"][1], "spectra_wb")
        reals_wb = _WriteBehind.create(m, ports["reals"][1], "reals_wb")
        m.d.comb += self.busy.eq(1)
        with m.FSM():
            _host_states(m, self, mix, ports["reals"], regs, adj, n_in, size)
            _forward_states(m, dft, ports["reals"][0], spectra_wb, regs, n_in, height, width)
            _mixing_states(m, mix, adj, ports["spectra"][0], ports["mixed"][1], regs, n_in,
                           n_out, size)
            _inverse_states(m, self, dft, ports["mixed"][0], reals_wb, regs, n_out, height,
                            width)
        return m


class _WriteBehind:
    """A memory write registered: :meth:`write` in a state loads the address and the word,
    and the port writes them in the next cycle."""

    @classmethod
    def create(cls, m, wr, name):
        wb = cls()
        wb.valid = Signal(name=f"{name}_valid")
        wb.addr = Signal.like(wr.addr, name=f"{name}_addr")
        wb.data = Signal(wr.data.shape(), name=f"{name}_data")
        m.d.sync += wb.valid.eq(0)
        with m.If(wb.valid):
            m.d.comb += [wr.en.eq(1), wr.addr.eq(wb.addr), wr.data.eq(wb.data)]
        return wb

    def write(self, m, addr, data=None, **fields):
        """Write ``data`` (or the word's ``fields`` by name) at ``addr`` in the next cycle."""
        m.d.sync += [self.valid.eq(1), self.addr.eq(addr)]
        if data is not None:
            m.d.sync += self.data.eq(data)
        for field, value in fields.items():
            m.d.sync += getattr(self.data, field).eq(value)


class _Registers:
    """The counters and holds the states share."""

    @classmethod
    def create(cls, depth, spectrum, channels, word):
        regs = cls()
        regs.count = Signal(range(max(depth, spectrum) + 1))
        regs.addr = Signal(range(max(depth, spectrum) + 1))
        regs.out_addr = Signal(range(max(depth, spectrum) + 1))
        regs.col = Signal(range(max(depth, 2) + 1))
        regs.w = Signal(range(max(depth, 2) + 1))
        regs.channel = Signal(range(max(channels, 2)))
        regs.last = Signal(range(max(depth, 2)))
        regs.valid = Signal()
        regs.out_valid = Signal()
        regs.half = Signal()
        regs.hold = Signal(word)
        return regs


def _feed(m, rd, regs, last, take, shape, name):
    """A read port feeding a stream one word per cycle through a register (no block RAM
    output drives the stream's consumer directly): the word at ``regs.addr`` is read while
    ``regs.count`` is at most ``last`` and the port's word can move on; ``regs.valid`` says the
    port holds a word, ``regs.out_valid`` that the register does (the stream's valid).
    Returns the read's issue and the register."""
    word = Signal(shape, name=name)
    out_free = ~regs.out_valid | take
    port_free = ~regs.valid | out_free
    issue = port_free & (regs.count <= last)
    m.d.comb += [rd.en.eq(port_free), rd.addr.eq(regs.addr)]
    with m.If(port_free):
        m.d.sync += regs.valid.eq(issue)
    with m.If(out_free):
        m.d.sync += [regs.out_valid.eq(regs.valid), word.eq(rd.data)]
    return issue, word


def _strided_step(m, regs, n, height, width):
    """Step ``regs.addr`` from element ``(h, w)`` to the next in row-major order, in a buffer
    held frequency-major (entry ``(w·H + h)·n + channel``): ``H·n`` along a row, back to
    the next row's start at its end."""
    with m.If(regs.w == width - 1):
        m.d.sync += [regs.w.eq(0), regs.col.eq(regs.col + n), regs.addr.eq(regs.col + n)]
    with m.Else():
        m.d.sync += [regs.w.eq(regs.w + 1), regs.addr.eq(regs.addr + height * n)]


def _host_states(m, dut, mix, reals_ports, regs, adj, n_in, size):
    """IDLE (the dispatch), NOTHING, SPECTRUM (LOAD_SPECTRUM into the mixing unit), LOAD
    (LOAD_REAL and LOAD_REAL_T into the real buffer), READ (READ_REAL and READ_REAL_T out of
    it)."""
    rd, wr = reals_ports
    ci, co = mix.channels_in, mix.channels_out
    spectrum_last = ci * co * size - 1
    with m.State("IDLE"):
        m.d.comb += dut.busy.eq(0)
        with m.If(dut.start):
            m.d.sync += [regs.count.eq(0), regs.addr.eq(0), regs.out_addr.eq(0),
                         regs.half.eq(0), regs.valid.eq(0), regs.out_valid.eq(0),
                         regs.channel.eq(0)]
            with m.Switch(dut.op):
                with m.Case(BankOp.LOAD_SPECTRUM):
                    m.d.comb += mix.restart.eq(1)
                    m.next = "SPECTRUM"
                with m.Case(BankOp.LOAD_REAL, BankOp.LOAD_REAL_T):
                    m.d.sync += adj.eq(dut.op == BankOp.LOAD_REAL_T)
                    m.next = "LOAD"
                with m.Case(BankOp.CONV):
                    m.next = "D_LOAD_START"
                with m.Case(BankOp.READ_REAL, BankOp.READ_REAL_T):
                    m.d.sync += regs.last.eq(Mux(dut.op == BankOp.READ_REAL, co, ci) * size
                                             - 1)
                    m.next = "READ"
                with m.Default():
                    m.next = "NOTHING"
    with m.State("NOTHING"):
        m.d.comb += dut.done.eq(1)
        m.next = "IDLE"

    with m.State("SPECTRUM"):
        m.d.comb += [mix.load.payload.re.eq(regs.hold), mix.load.payload.im.eq(dut.i.payload)]
        with m.If(~regs.half):
            m.d.comb += dut.i.ready.eq(1)
            with m.If(dut.i.valid):
                m.d.sync += [regs.hold.eq(dut.i.payload), regs.half.eq(1)]
        with m.Else():
            m.d.comb += [dut.i.ready.eq(mix.load.ready), mix.load.valid.eq(dut.i.valid)]
            with m.If(dut.i.valid & mix.load.ready):
                m.d.sync += [regs.count.eq(regs.count + 1), regs.half.eq(0)]
                with m.If(regs.count == spectrum_last):
                    m.d.comb += dut.done.eq(1)
                    m.next = "IDLE"

    with m.State("LOAD"):
        m.d.comb += dut.i.ready.eq(1)
        with m.If(dut.i.valid):
            m.d.comb += [wr.addr.eq(regs.count), wr.data.eq(dut.i.payload), wr.en.eq(1)]
            m.d.sync += regs.count.eq(regs.count + 1)
            with m.If(regs.count == n_in * size - 1):
                m.d.comb += dut.done.eq(1)
                m.next = "IDLE"

    with m.State("READ"):
        take = dut.o.valid & dut.o.ready
        issue, word = _feed(m, rd, regs, regs.last, take, signed(len(dut.o.payload)), "read_word")
        m.d.comb += [dut.o.valid.eq(regs.out_valid), dut.o.payload.eq(word)]
        with m.If(issue):
            m.d.sync += [regs.count.eq(regs.count + 1), regs.addr.eq(regs.addr + 1)]
        with m.If(take):
            m.d.sync += regs.out_addr.eq(regs.out_addr + 1)
            with m.If(regs.out_addr == regs.last):
                m.d.comb += dut.done.eq(1)
                m.d.sync += regs.out_addr.eq(0)
                m.next = "IDLE"


def _start(m, dft, op, state):
    """One cycle starting ``op`` on the DFT unit (idle: its last operation's done was seen
    a cycle before), then ``state``."""
    m.d.comb += [dft.start.eq(1), dft.op.eq(op)]
    m.next = state


def _forward_states(m, dft, reals_rd, spectra_wb, regs, n_in, height, width):
    """Per input channel: LOAD_REAL from the real buffer, DFT, READ into the spectra
    (frequency-major, entry ``(w·H + h)·n_in + channel``)."""
    size = height * width
    with m.State("D_LOAD_START"):
        m.d.sync += [regs.count.eq(regs.channel * size), regs.addr.eq(regs.channel * size),
                     regs.valid.eq(0), regs.out_valid.eq(0)]
        _start(m, dft, FourierOp.LOAD_REAL, "D_LOAD")
    with m.State("D_LOAD"):
        take = dft.i.valid & dft.i.ready
        issue, word = _feed(m, reals_rd, regs, regs.channel * size + size - 1, take,
                            signed(len(reals_rd.data)), "load_word")
        m.d.comb += [dft.i.valid.eq(regs.out_valid), dft.i.payload.eq(word)]
        with m.If(issue):
            m.d.sync += [regs.count.eq(regs.count + 1), regs.addr.eq(regs.addr + 1)]
        with m.If(dft.done):
            m.next = "D_RUN"
    with m.State("D_RUN"):
        _start(m, dft, FourierOp.DFT, "D_WAIT")
    with m.State("D_WAIT"):
        with m.If(dft.done):
            m.d.sync += [regs.addr.eq(regs.channel), regs.col.eq(regs.channel),
                         regs.w.eq(0), regs.half.eq(0)]
            m.next = "D_READ_START"
    with m.State("D_READ_START"):
        _start(m, dft, FourierOp.READ, "D_READ")
    with m.State("D_READ"):
        m.d.comb += dft.o.ready.eq(1)
        with m.If(dft.o.valid):
            with m.If(~regs.half):
                m.d.sync += [regs.hold.eq(dft.o.payload), regs.half.eq(1)]
            with m.Else():
                spectra_wb.write(m, regs.addr, re=regs.hold, im=dft.o.payload)
                m.d.sync += regs.half.eq(0)
                _strided_step(m, regs, n_in, height, width)
        with m.If(dft.done):
            with m.If(regs.channel == n_in - 1):
                m.d.sync += [regs.count.eq(0), regs.addr.eq(0), regs.out_addr.eq(0),
                             regs.valid.eq(0), regs.out_valid.eq(0)]
                m.next = "M_START"
            with m.Else():
                m.d.sync += regs.channel.eq(regs.channel + 1)
                m.next = "D_LOAD_START"


def _mixing_states(m, mix, adj, spectra_rd, mixed_wr, regs, n_in, n_out, size):
    """M_START restarts the mixing unit in the load's direction; M_RUN streams every
    frequency's vector through it and its outputs into the mixed buffer, both in order."""
    with m.State("M_START"):
        m.d.comb += [mix.restart.eq(1), mix.adjoint.eq(adj)]
        m.next = "M_RUN"
    with m.State("M_RUN"):
        take = mix.i.valid & mix.i.ready
        issue, word = _feed(m, spectra_rd, regs, n_in * size - 1, take,
                            complex_layout(len(spectra_rd.data.re)), "mix_word")
        m.d.comb += [mix.i.valid.eq(regs.out_valid), mix.i.payload.eq(word), mix.o.ready.eq(1)]
        with m.If(issue):
            m.d.sync += [regs.count.eq(regs.count + 1), regs.addr.eq(regs.addr + 1)]
        with m.If(mix.o.valid):
            m.d.comb += [mixed_wr.addr.eq(regs.out_addr), mixed_wr.en.eq(1),
                         mixed_wr.data.eq(mix.o.payload)]
            m.d.sync += regs.out_addr.eq(regs.out_addr + 1)
            with m.If(regs.out_addr == n_out * size - 1):
                m.d.sync += [regs.channel.eq(0), regs.out_addr.eq(0)]
                m.next = "I_LOAD_START"


def _inverse_states(m, dut, dft, mixed_rd, reals_wb, regs, n_out, height, width):
    """Per output channel: LOAD from the mixed buffer (strided: the channel's elements
    row-major, ``re`` then ``im``), IDFT, READ_REAL into the real buffer (channel by
    channel, in order); ``done`` with the last channel's last word."""
    size = height * width
    with m.State("I_LOAD_START"):
        m.d.sync += [regs.count.eq(0), regs.addr.eq(regs.channel), regs.col.eq(regs.channel),
                     regs.w.eq(0), regs.valid.eq(0), regs.out_valid.eq(0), regs.half.eq(0)]
        _start(m, dft, FourierOp.LOAD, "I_LOAD")
    with m.State("I_LOAD"):
        # Two words per element: the element is read once, its im sent after its re.
        take = dft.i.valid & dft.i.ready
        issue, word = _feed(m, mixed_rd, regs, size - 1, take & regs.half,
                            complex_layout(len(mixed_rd.data.re)), "inverse_word")
        m.d.comb += [dft.i.valid.eq(regs.out_valid),
                     dft.i.payload.eq(Mux(regs.half, word.im, word.re))]
        with m.If(take):
            m.d.sync += regs.half.eq(~regs.half)
        with m.If(issue):
            m.d.sync += regs.count.eq(regs.count + 1)
            _strided_step(m, regs, n_out, height, width)
        with m.If(dft.done):
            m.next = "I_RUN"
    with m.State("I_RUN"):
        _start(m, dft, FourierOp.IDFT, "I_WAIT")
    with m.State("I_WAIT"):
        with m.If(dft.done):
            m.next = "I_READ_START"
    with m.State("I_READ_START"):
        _start(m, dft, FourierOp.READ_REAL, "I_READ")
    with m.State("I_READ"):
        m.d.comb += dft.o.ready.eq(1)
        with m.If(dft.o.valid):
            reals_wb.write(m, regs.out_addr, dft.o.payload)
            m.d.sync += regs.out_addr.eq(regs.out_addr + 1)
        with m.If(dft.done):
            with m.If(regs.channel == n_out - 1):
                m.d.comb += dut.done.eq(1)
                m.d.sync += [regs.count.eq(0), regs.addr.eq(0), regs.out_addr.eq(0)]
                m.next = "IDLE"
            with m.Else():
                m.d.sync += regs.channel.eq(regs.channel + 1)
                m.next = "I_LOAD_START"
