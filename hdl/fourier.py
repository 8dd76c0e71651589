"""The Fourier route to convolution in hardware: DFT block arrays, a transpose buffer, Hadamard.

``DftArray`` is a crossbar tile that holds the real 2×2 block form of the unitary DFT matrix as
constant weights (quantised by the model, :func:`~xbarode.model.fixed_ops.twiddle_matrix`).
Driven forward it computes the DFT; driven from the other side (the transposed product) it
computes the inverse DFT, because ``to_real(conj(W)) == to_real(W).T``.

``Dft2d`` holds an H×W complex buffer and two arrays (length W for rows, length H for
columns): the 2-D transform is a row pass and a column pass through the buffer, which the
column pass addresses column by column (the transpose). ``FourierConv`` adds a
:class:`~xbarode.hdl.hadamard.HadamardUnit` holding the kernel's spectrum: image → 2-D DFT →
Hadamard → inverse 2-D DFT = circular convolution (docs/architecture.md §1). The model twins are
:func:`~xbarode.model.fixed_ops.dft2_fixed` and
:func:`~xbarode.model.fixed_ops.fourier_conv_fixed`.
"""

from __future__ import annotations

from amaranth import Module, Signal, signed
from amaranth.lib import enum, wiring
from amaranth.lib.memory import Memory

from xbarode.model.fixed import LFSR_SEED, ROUNDINGS, Format, Lfsr, site_seed
from xbarode.model.fixed_ops import twiddle_matrix

from .hadamard import HadamardUnit, complex_layout
from .interface import ControlSignature
from .tile import CrossbarTile, TileOp

__all__ = ["Dft2d", "DftArray", "FourierConv", "FourierOp"]


class DftArray(CrossbarTile):
    """A crossbar tile holding the DFT of length ``n`` in real 2×2 block form.

    FORWARD computes the unitary DFT of a complex vector ``[Re v0, Im v0, Re v1, …]`` (2n
    words, LOAD_X), TRANSPOSED its inverse (LOAD_S); every output word is narrowed once to
    ``data_format``. A read-only table tile (:class:`~xbarode.hdl.tile.CrossbarTile` with
    ``writable=False``): its weight banks hold the table and have no write port, so it has
    no LOAD_W and no UPDATE (they end at once); READ_W streams the table. Its other
    operations and the latency are the tile's (with ``rows = cols = 2n``).

    Parameters
    ----------
    n : int
        Transform length.
    lanes : int, optional
        Multipliers, ``1 … 2n`` (default ``2n``).
    data_format, twiddle_format : Format
        Format of the vectors and of the DFT table.
    acc_width, rounding, lfsr_seed
        As for the tile.
    """

    def __init__(self, n: int, *, lanes: int | None = None, data_format: Format,
                 twiddle_format: Format, acc_width: int = 48, rounding: str = "nearest",
                 lfsr_seed: int = LFSR_SEED):
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an integer, not {type(n).__name__}")
        if n < 1:
            raise ValueError(f"n must be >= 1, not {n}")
        if not isinstance(twiddle_format, Format):
            raise TypeError(f"twiddle_format must be a Format, not "
                            f"{type(twiddle_format).__name__}")
        self._n = n
        super().__init__(rows=2 * n, cols=2 * n, lanes=2 * n if lanes is None else lanes,
                         weight_format=twiddle_format, input_format=data_format,
                         output_format=data_format, acc_width=acc_width, rounding=rounding,
                         lfsr_seed=lfsr_seed, weights=twiddle_matrix(n, twiddle_format),
                         writable=False)

    @property
    def n(self) -> int:
        """Transform length."""
        return self._n


class FourierOp(enum.Enum, shape=4):
    """Operations of :class:`Dft2d` and :class:`FourierConv`, selected on ``op`` at ``start``.

    ============= ==============================================================================
    LOAD_REAL     stream in ``H·W`` real words (row-major); imaginary parts become 0
    LOAD          stream in ``2·H·W`` words: ``(re, im)`` per element, row-major
    LOAD_SPECTRUM stream in ``2·H·W`` spectrum words, ``(re, im)`` per element, *column by
                  column* (the order the Hadamard pass uses); FourierConv only
    DFT           2-D DFT in place: row pass, then column pass
    IDFT          inverse 2-D DFT in place: column pass, then row pass
    HADAMARD      multiply element-wise by the spectrum, in place, column by column;
                  FourierConv only
    CONV          DFT, HADAMARD, IDFT; FourierConv only
    READ_REAL     stream out the ``H·W`` real parts, row-major
    READ          stream out ``2·H·W`` words, ``(re, im)`` per element, row-major
    ============= ==============================================================================

    An operation the block does not have ends at once (``done``) and changes nothing.
    """

    LOAD_REAL = 0
    LOAD = 1
    LOAD_SPECTRUM = 2
    DFT = 3
    IDFT = 4
    HADAMARD = 5
    CONV = 6
    READ_REAL = 7
    READ = 8


class Dft2d(wiring.Component):
    """2-D DFT and inverse DFT of an H×W complex buffer, through two DFT block arrays.

    Parameters
    ----------
    height, width : int
        Image size H×W (``1×n`` is the 1-D transform).
    lanes : int, optional
        Multipliers of each array (capped at its ``2n``; default: ``2n`` each).
    data_format, twiddle_format : Format
        Format of every buffer word and of the DFT tables.
    acc_width : int
        Accumulator width of the arrays.
    rounding : {"floor", "nearest", "stochastic"}
        Rounding of every narrowing.
    lfsr_seed : int
        The rows array draws from an LFSR seeded ``lfsr_seed``, the columns array from
        ``site_seed(lfsr_seed, 1)`` (:func:`~xbarode.model.fixed.site_seed`; the model's
        sites, :data:`~xbarode.model.fixed_ops.FOURIER_SITES`).

    Attributes
    ----------
    i : In(stream.Signature(signed(word)))
        Words in (LOAD_*).
    o : Out(stream.Signature(signed(word)))
        Words out (READ_*).
    op : In(FourierOp)
    start : In(1)
        Pulse for one cycle while ``busy`` is low to start ``op``.
    busy : Out(1)
    done : Out(1)
        One-cycle pulse when an operation ends.
    overflow : Out(1)
        Sticky: some narrowing saturated since the last ``clear``.
    clear : In(1)

    Notes
    -----
    Latency, from the cycle ``start`` is seen to the ``done`` pulse inclusive: DFT and IDFT
    take ``4 + Σ V·(4n + L + 4)`` over their two passes, a row pass having ``V = H`` vectors of
    length ``n = W`` and a column pass ``V = W`` vectors of length ``n = H``, and ``L`` the
    array's product latency (:class:`~xbarode.hdl.tile.CrossbarTile`: FORWARD for DFT,
    TRANSPOSED for IDFT, with ``rows = cols = 2n``): each vector is streamed into the array
    (``2n`` cycles), multiplied, and read back into the buffer (``2n + 1``). LOAD_* and READ_*
    move one word per cycle.
    """

    _hadamard = False

    def __init__(self, height: int, width: int, *, lanes: int | None = None,
                 data_format: Format, twiddle_format: Format, acc_width: int = 48,
                 rounding: str = "nearest", lfsr_seed: int = LFSR_SEED,
                 spectrum_format: Format | None = None, gauss: bool = False):
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
        if height < 1 or width < 1:
            raise ValueError(f"height and width must be >= 1, not {height} and {width}")
        if lanes is not None and (isinstance(lanes, bool) or not isinstance(lanes, int)
                                  or lanes < 1):
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        for name, fmt in (("data_format", data_format), ("twiddle_format", twiddle_format)):
            if not isinstance(fmt, Format):
                raise TypeError(f"{name} must be a Format, not {type(fmt).__name__}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {rounding!r}; choose one of {list(ROUNDINGS)}")
        Lfsr(lfsr_seed)
        self._height, self._width = height, width
        self._lanes = lanes
        self._df, self._tf = data_format, twiddle_format
        self._acc_width = acc_width
        self._rounding = rounding
        self._lfsr_seed = lfsr_seed
        self._sf, self._gauss = spectrum_format, bool(gauss)
        # Built here so that bad parameters fail now, with the arrays' own messages.
        self._arrays = [self._array(width, lfsr_seed), self._array(height, site_seed(lfsr_seed, 1))]
        for array in self._arrays:
            # Parts of this component: used when it is elaborated, not on their own.
            array._MustUse__silence = True
        self._unit = None
        if self._hadamard:
            if not isinstance(spectrum_format, Format):
                raise TypeError(f"spectrum_format must be a Format, not "
                                f"{type(spectrum_format).__name__}")
            self._unit = HadamardUnit(length=height * width, x_format=data_format,
                                      spectrum_format=spectrum_format, out_format=data_format,
                                      rounding=rounding, gauss=gauss,
                                      lfsr_seed=site_seed(lfsr_seed, 2))
            self._unit._MustUse__silence = True
        word = max(data_format.width, twiddle_format.width,
                   spectrum_format.width if self._hadamard else 0)
        super().__init__(ControlSignature(FourierOp, word))

    def _array(self, n, seed):
        lanes = None if self._lanes is None else min(self._lanes, 2 * n)
        return DftArray(n, lanes=lanes, data_format=self._df, twiddle_format=self._tf,
                        acc_width=self._acc_width, rounding=self._rounding, lfsr_seed=seed)

    # Read-only parameters ------------------------------------------------------------------
    @property
    def height(self) -> int:
        """Image rows H."""
        return self._height

    @property
    def width(self) -> int:
        """Image columns W."""
        return self._width

    @property
    def lanes(self) -> tuple[int, int]:
        """Multipliers of the rows array and of the columns array."""
        return tuple(a.lanes for a in self._arrays)

    @property
    def data_format(self) -> Format:
        """Format of every buffer word."""
        return self._df

    @property
    def twiddle_format(self) -> Format:
        """Format of the DFT tables."""
        return self._tf

    @property
    def spectrum_format(self) -> Format | None:
        """Format of the kernel spectrum (None without a Hadamard unit)."""
        return self._sf if self._hadamard else None

    @property
    def gauss(self) -> bool:
        """The Hadamard unit uses three multipliers."""
        return self._gauss

    @property
    def rounding(self) -> str:
        """Rounding of every narrowing."""
        return self._rounding

    @property
    def lfsr_seed(self) -> int:
        """Seed of the rows array's LFSR (columns: + 1, Hadamard: + 2)."""
        return self._lfsr_seed

    @property
    def acc_width(self) -> int:
        """Accumulator width of the arrays."""
        return self._acc_width

    # Hardware -------------------------------------------------------------------------------
    # Too long still: the pass sequencer is to become a component.
    def elaborate(self, platform):  # noqa: PLR0915
        m = Module()
        height, width = self._height, self._width
        size = height * width
        dw = self._df.width
        rows_arr, cols_arr = self._arrays
        m.submodules.rows = rows_arr
        m.submodules.cols = cols_arr
        arrays = (rows_arr, cols_arr)
        unit = self._unit
        if unit is not None:
            m.submodules.hadamard = unit

        buf = Memory(shape=complex_layout(dw), depth=size, init=[])
        m.submodules.buffer = buf
        rd, wr = buf.read_port(), buf.write_port()
        m.d.comb += rd.en.eq(0)

        overflow_in = [a.overflow for a in arrays] + ([unit.overflow] if unit else [])
        flags = overflow_in[0]
        for flag in overflow_in[1:]:
            flags = flags | flag
        m.d.comb += self.overflow.eq(flags)
        for a in arrays:
            m.d.comb += a.clear.eq(self.clear)
        if unit is not None:
            m.d.comb += unit.clear.eq(self.clear)

        op = Signal(FourierOp)
        count = Signal(range(2 * size + 1))
        half = Signal()                    # second word (imaginary part) of an element
        re_hold = Signal(signed(max(dw, len(self.i.payload))))
        im_hold = Signal(signed(dw))

        # Pass state: which array, direction, vector and element counters, addresses.
        sel = Signal()                     # 0: rows array (length W), 1: columns array
        inverse = Signal()
        vec = Signal(range(max(height, width) + 1))
        elem = Signal(range(max(height, width) + 1))
        vec_start = Signal(range(size + 1))
        feed_addr = Signal(range(size + width + 1))
        back_addr = Signal(range(size + width + 1))
        # The work list of CONV / DFT / IDFT: passes, in order, as (sel, inverse) bits.
        plan = Signal(4)                   # pending passes, one bit each, low bit first
        then_hadamard = Signal()           # CONV: Hadamard between the forward and inverse
        # (sel, inverse) of each pass bit: 0 rows fwd, 1 cols fwd, 2 cols inv, 3 rows inv.
        pass_sel = [0, 1, 1, 0]
        pass_inv = [0, 0, 1, 1]

        n_vec = Signal(range(max(height, width) + 1))
        n_len = Signal(range(max(height, width) + 1))
        with m.If(sel):
            m.d.comb += [n_vec.eq(width), n_len.eq(height)]
        with m.Else():
            m.d.comb += [n_vec.eq(height), n_len.eq(width)]
        stride = Signal(range(width + 1))
        m.d.comb += stride.eq(1)
        with m.If(sel):
            m.d.comb += stride.eq(width)

        # Array drive: every array sees the same strobes, gated by `sel`.
        a_op = Signal(TileOp)
        a_start, a_valid, a_ready_out = Signal(), Signal(), Signal()
        a_payload = Signal(signed(dw))
        for k, a in enumerate(arrays):
            mine = sel == k
            m.d.comb += [a.op.eq(a_op), a.start.eq(a_start & mine),
                         a.i.valid.eq(a_valid & mine), a.i.payload.eq(a_payload),
                         a.o.ready.eq(a_ready_out & mine)]
        a_i_ready = Signal()
        a_done = Signal()
        a_o_valid = Signal()
        a_o_payload = Signal(signed(len(rows_arr.o.payload)))
        m.d.comb += [a_i_ready.eq(rows_arr.i.ready), a_done.eq(rows_arr.done),
                     a_o_valid.eq(rows_arr.o.valid), a_o_payload.eq(rows_arr.o.payload)]
        with m.If(sel):
            m.d.comb += [a_i_ready.eq(cols_arr.i.ready), a_done.eq(cols_arr.done),
                         a_o_valid.eq(cols_arr.o.valid), a_o_payload.eq(cols_arr.o.payload)]

        def next_pass():
            """Go to the first pending pass, the Hadamard pass, or finish."""
            with m.If(plan[0]):
                begin_pass(0)
            with m.Elif(plan[1]):
                begin_pass(1)
            with m.Elif(then_hadamard):
                m.d.sync += then_hadamard.eq(0)
                if unit is not None:
                    m.next = "HADAMARD_START"
            with m.Elif(plan[2]):
                begin_pass(2)
            with m.Elif(plan[3]):
                begin_pass(3)
            with m.Else():
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"

        def begin_pass(k):
            m.d.sync += [sel.eq(pass_sel[k]), inverse.eq(pass_inv[k]), vec.eq(0),
                         vec_start.eq(0), plan[k].eq(0)]
            m.next = "VEC_START"

        # Hadamard pass: element counters, column-major.
        h_rr = Signal(range(height + 1))
        h_rc = Signal(range(width + 1))
        h_read = Signal(range(size + width + 1))
        h_wr = Signal(range(height + 1))
        h_wc = Signal(range(width + 1))
        h_write = Signal(range(size + width + 1))
        h_fed = Signal(range(size + 1))
        h_out = Signal(range(size + 1))
        if unit is not None:
            m.d.comb += [unit.i.payload.re.eq(rd.data.re), unit.i.payload.im.eq(rd.data.im)]

        m.d.comb += self.busy.eq(1)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.busy.eq(0)
                with m.If(self.start):
                    m.d.sync += [op.eq(self.op), count.eq(0), half.eq(0), plan.eq(0),
                                 then_hadamard.eq(0)]
                    with m.Switch(self.op):
                        with m.Case(FourierOp.LOAD_REAL, FourierOp.LOAD):
                            m.next = "LOAD"
                        with m.Case(FourierOp.READ_REAL, FourierOp.READ):
                            m.d.comb += [rd.addr.eq(0), rd.en.eq(1)]
                            m.next = "READ_RE"
                        with m.Case(FourierOp.DFT):
                            m.d.sync += plan.eq(0b0011)
                            m.next = "NEXT_PASS"
                        with m.Case(FourierOp.IDFT):
                            m.d.sync += plan.eq(0b1100)
                            m.next = "NEXT_PASS"
                        if unit is not None:
                            with m.Case(FourierOp.LOAD_SPECTRUM):
                                m.d.comb += unit.restart.eq(1)
                                m.next = "LOAD_SPECTRUM"
                            with m.Case(FourierOp.HADAMARD):
                                m.next = "HADAMARD_START"
                            with m.Case(FourierOp.CONV):
                                m.d.sync += [plan.eq(0b1111), then_hadamard.eq(1)]
                                m.next = "NEXT_PASS"
                        with m.Default():
                            m.next = "NOTHING"

            with m.State("NOTHING"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"

            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    with m.If((op == FourierOp.LOAD) & ~half):
                        m.d.sync += [re_hold.eq(self.i.payload), half.eq(1)]
                    with m.Else():
                        m.d.comb += [wr.addr.eq(count), wr.en.eq(1)]
                        with m.If(op == FourierOp.LOAD):
                            m.d.comb += [wr.data.re.eq(re_hold), wr.data.im.eq(self.i.payload)]
                        with m.Else():
                            m.d.comb += [wr.data.re.eq(self.i.payload), wr.data.im.eq(0)]
                        m.d.sync += [count.eq(count + 1), half.eq(0)]
                        with m.If(count == size - 1):
                            m.d.comb += self.done.eq(1)
                            m.next = "IDLE"

            if unit is not None:
                with m.State("LOAD_SPECTRUM"):
                    m.d.comb += [unit.load.payload.re.eq(re_hold),
                                 unit.load.payload.im.eq(self.i.payload)]
                    with m.If(~half):
                        m.d.comb += self.i.ready.eq(1)
                        with m.If(self.i.valid):
                            m.d.sync += [re_hold.eq(self.i.payload), half.eq(1)]
                    with m.Else():
                        m.d.comb += [self.i.ready.eq(unit.load.ready),
                                     unit.load.valid.eq(self.i.valid)]
                        with m.If(self.i.valid & unit.load.ready):
                            m.d.sync += [count.eq(count + 1), half.eq(0)]
                            with m.If(count == size - 1):
                                m.d.comb += self.done.eq(1)
                                m.next = "IDLE"

            # READ_*: the element at `count` is in the read port; the next one is read as
            # the last word of this one is taken (the port holds its data while not enabled).
            with m.State("READ_RE"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(rd.data.re),
                             rd.addr.eq(count + 1)]
                with m.If(self.o.ready):
                    m.d.sync += im_hold.eq(rd.data.im)
                    with m.If(op == FourierOp.READ):
                        m.next = "READ_IM"
                    with m.Else():
                        m.d.comb += rd.en.eq(1)
                        m.d.sync += count.eq(count + 1)
                        with m.If(count == size - 1):
                            m.d.comb += self.done.eq(1)
                            m.next = "IDLE"
            with m.State("READ_IM"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(im_hold),
                             rd.addr.eq(count + 1)]
                with m.If(self.o.ready):
                    m.d.comb += rd.en.eq(1)
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == size - 1):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "READ_RE"

            with m.State("NEXT_PASS"):
                next_pass()

            # One vector of a pass: load it into the array, multiply, read it back in place.
            with m.State("VEC_START"):
                m.d.comb += [a_op.eq(TileOp.LOAD_X), a_start.eq(1), rd.addr.eq(vec_start),
                             rd.en.eq(1)]
                with m.If(inverse):
                    m.d.comb += a_op.eq(TileOp.LOAD_S)
                m.d.sync += [feed_addr.eq(vec_start), back_addr.eq(vec_start), elem.eq(0)]
                m.next = "FEED_RE"
            with m.State("FEED_RE"):
                m.d.comb += [a_valid.eq(1), a_payload.eq(rd.data.re),
                             rd.addr.eq(feed_addr + stride)]
                with m.If(a_i_ready):
                    m.d.comb += rd.en.eq(1)
                    m.d.sync += [im_hold.eq(rd.data.im), feed_addr.eq(feed_addr + stride)]
                    m.next = "FEED_IM"
            with m.State("FEED_IM"):
                m.d.comb += [a_valid.eq(1), a_payload.eq(im_hold)]
                with m.If(a_i_ready):
                    m.d.sync += elem.eq(elem + 1)
                    with m.If(elem == n_len - 1):
                        m.next = "COMPUTE"
                    with m.Else():
                        m.next = "FEED_RE"
            with m.State("COMPUTE"):
                m.d.comb += [a_op.eq(TileOp.FORWARD), a_start.eq(1)]
                with m.If(inverse):
                    m.d.comb += a_op.eq(TileOp.TRANSPOSED)
                m.next = "COMPUTE_WAIT"
            with m.State("COMPUTE_WAIT"):
                with m.If(a_done):
                    m.next = "COLLECT_START"
            with m.State("COLLECT_START"):
                m.d.comb += [a_op.eq(TileOp.READ_Y), a_start.eq(1)]
                m.d.sync += [half.eq(0), elem.eq(0)]
                m.next = "COLLECT"
            with m.State("COLLECT"):
                m.d.comb += a_ready_out.eq(1)
                with m.If(a_o_valid):
                    with m.If(~half):
                        m.d.sync += [re_hold.eq(a_o_payload), half.eq(1)]
                    with m.Else():
                        m.d.comb += [wr.addr.eq(back_addr), wr.data.re.eq(re_hold),
                                     wr.data.im.eq(a_o_payload), wr.en.eq(1)]
                        m.d.sync += [back_addr.eq(back_addr + stride), half.eq(0),
                                     elem.eq(elem + 1)]
                        with m.If(elem == n_len - 1):
                            m.next = "VEC_END"
            with m.State("VEC_END"):
                m.d.sync += vec.eq(vec + 1)
                with m.If(sel):
                    m.d.sync += vec_start.eq(vec_start + 1)
                with m.Else():
                    m.d.sync += vec_start.eq(vec_start + width)
                with m.If(vec == n_vec - 1):
                    m.next = "NEXT_PASS"
                with m.Else():
                    m.next = "VEC_START"

            if unit is not None:
                # Hadamard pass, column-major: reads run ahead of the unit's pipeline; each
                # product is written back where its element was read.
                with m.State("HADAMARD_START"):
                    m.d.comb += [unit.restart.eq(1), rd.addr.eq(0), rd.en.eq(1)]
                    m.d.sync += [h_rr.eq(0), h_rc.eq(0), h_read.eq(0), h_wr.eq(0), h_wc.eq(0),
                                 h_write.eq(0), h_fed.eq(0), h_out.eq(0)]
                    m.next = "HADAMARD"
                with m.State("HADAMARD"):
                    next_read = Signal.like(h_read)
                    m.d.comb += next_read.eq(h_read + width)
                    with m.If(h_rr == height - 1):
                        m.d.comb += next_read.eq(h_rc + 1)
                    m.d.comb += [unit.i.valid.eq(h_fed != size), rd.addr.eq(next_read)]
                    with m.If(unit.i.valid & unit.i.ready):
                        m.d.comb += rd.en.eq(1)
                        m.d.sync += [h_read.eq(next_read), h_fed.eq(h_fed + 1)]
                        with m.If(h_rr == height - 1):
                            m.d.sync += [h_rr.eq(0), h_rc.eq(h_rc + 1)]
                        with m.Else():
                            m.d.sync += h_rr.eq(h_rr + 1)
                    m.d.comb += unit.o.ready.eq(1)
                    with m.If(unit.o.valid):
                        m.d.comb += [wr.addr.eq(h_write), wr.data.eq(unit.o.payload),
                                     wr.en.eq(1)]
                        m.d.sync += h_out.eq(h_out + 1)
                        with m.If(h_wr == height - 1):
                            m.d.sync += [h_wr.eq(0), h_wc.eq(h_wc + 1),
                                         h_write.eq(h_wc + 1)]
                        with m.Else():
                            m.d.sync += [h_wr.eq(h_wr + 1), h_write.eq(h_write + width)]
                        with m.If(h_out == size - 1):
                            m.next = "NEXT_PASS"
        return m


class FourierConv(Dft2d):
    """Circular convolution by the Fourier route: :class:`Dft2d` plus a Hadamard unit.

    The host loads the image (LOAD_REAL) and the kernel's spectrum
    (:func:`~xbarode.model.fixed_ops.spectrum_words`, LOAD_SPECTRUM column by column), starts
    CONV, and reads the real parts (READ_REAL). Parameters as :class:`Dft2d`, plus
    ``spectrum_format`` (required) and ``gauss`` (three multipliers instead of four); the
    Hadamard unit's LFSR is seeded ``site_seed(lfsr_seed, 2)``.

    Notes
    -----
    Latency of CONV: ``DFT + IDFT + H·W + 4`` cycles (the two transforms' latencies, and the
    Hadamard pass with its 4-cycle pipeline).
    """

    _hadamard = True
