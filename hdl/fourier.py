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

from dataclasses import dataclass

from amaranth import Module, Mux, Signal, signed
from amaranth.hdl import Array
from amaranth.lib import enum
from amaranth.lib.memory import Memory

from xbarode.model.device import DEVICE_SEED, DeviceModel
from xbarode.model.fixed import LFSR_SEED, ROUNDINGS, Format, Lfsr, site_seed
from xbarode.model.fixed_ops import check_accumulator, dft_device, twiddle_matrix

from .checked import CheckedComponent
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
    no LOAD_W and no UPDATE (they end at once); READ_W streams the table. It has the tile's
    side ports (``side_ports``: ``x_side_*``, ``y_out``, ``s_in``, ``y_side_*``), through
    which :class:`Dft2d` moves its vectors, and TRANSPOSED_STREAM. Its other operations and
    the latency are the tile's (with ``rows = cols = 2n``).

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
    device : DeviceModel, optional
        The array's read models (``dac_bits``, ``adc_bits``, ``adc_range``, ``read_noise``;
        docs/device.md), built into FORWARD and TRANSPOSED as the tile builds them: the twin
        of :func:`~xbarode.model.fixed_ops.dft2_fixed`'s ``device``. Write models are refused
        (the table is fixed; :func:`~xbarode.model.fixed_ops.dft_device`'s message). None, or
        every model off: the ideal array, the same Verilog.
    device_seed : int
        Seed of the device generators; the read noise draws from ``Lfsr(device_seed)``
        (purpose 0, as the tile's).
    """

    @staticmethod
    def check_parameters(n: int, *, lanes: int | None = None, data_format: Format,
                         twiddle_format: Format, acc_width: int = 48, rounding: str = "nearest",
                         lfsr_seed: int = LFSR_SEED, device: DeviceModel | None = None,
                         device_seed: int = DEVICE_SEED) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`): ``n``,
        ``twiddle_format`` and ``device`` (read models only), then the tile's for the tile the
        array is."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an integer, not {type(n).__name__}")
        if n < 1:
            raise ValueError(f"n must be >= 1, not {n}")
        if not isinstance(twiddle_format, Format):
            raise TypeError(f"twiddle_format must be a Format, not "
                            f"{type(twiddle_format).__name__}")
        dft_device(device)
        CrossbarTile.check_parameters(**DftArray._tile_arguments(
            n, lanes=lanes, data_format=data_format, twiddle_format=twiddle_format,
            acc_width=acc_width, rounding=rounding, lfsr_seed=lfsr_seed, device=device,
            device_seed=device_seed))

    @staticmethod
    def _tile_arguments(n, *, lanes, data_format, twiddle_format, acc_width, rounding,
                        lfsr_seed, device, device_seed) -> dict:
        """The tile's arguments for the array's."""
        return dict(rows=2 * n, cols=2 * n, lanes=2 * n if lanes is None else lanes,
                    weight_format=twiddle_format, input_format=data_format,
                    output_format=data_format, acc_width=acc_width, rounding=rounding,
                    lfsr_seed=lfsr_seed, weights=twiddle_matrix(n, twiddle_format),
                    writable=False, side_ports=True, device=device, device_seed=device_seed)

    def __init__(self, n: int, *, lanes: int | None = None, data_format: Format,
                 twiddle_format: Format, acc_width: int = 48, rounding: str = "nearest",
                 lfsr_seed: int = LFSR_SEED, device: DeviceModel | None = None,
                 device_seed: int = DEVICE_SEED):
        self._n = n
        dft_device(device)
        super().__init__(**self._tile_arguments(
            n, lanes=lanes, data_format=data_format, twiddle_format=twiddle_format,
            acc_width=acc_width, rounding=rounding, lfsr_seed=lfsr_seed, device=device,
            device_seed=device_seed))

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


class Dft2d(CheckedComponent):
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
    device : DeviceModel, optional
        The DFT arrays' read models (:class:`DftArray`), on both arrays, forward and inverse:
        the twin of :func:`~xbarode.model.fixed_ops.dft2_fixed`'s ``device``. The Hadamard
        unit of :class:`FourierConv` is digital and has none. Write models are refused.
        No cycle is added; None (or every model off) gives the same Verilog as before.
    device_seed : int
        The rows array takes ``device_seed``, the columns array ``site_seed(device_seed, 1)``:
        their read noise draws from ``Lfsr(device_seed)`` and
        ``Lfsr(site_seed(device_seed, 1))`` (:func:`~xbarode.model.fixed_ops.dft_noise`).

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
    Latency, from the cycle ``start`` is seen to the ``done`` pulse inclusive: DFT takes
    ``4 + Σ (E + L + (V - 1)·max(L, I + E))`` and IDFT ``4 + Σ V·(E + L + 2)`` over their two
    passes, a row pass having ``V = H`` vectors of length ``n = W`` and a column pass
    ``V = W`` vectors of length ``n = H``; ``L`` is the array's product latency
    (:class:`~xbarode.hdl.tile.CrossbarTile`: FORWARD for DFT, TRANSPOSED for IDFT, with
    ``rows = cols = 2n``), ``I = 2n·C`` its issue cycles (``C = ceil(2n / lanes)``), and
    ``E`` the cycles a vector's ``2n`` words take through the array's side ports: ``n`` when
    the array has an even number of lanes (an element's two words share a chunk and move in
    one cycle), ``2n`` when odd.

    Forward, the feeder writes each vector from the buffer into the array's ``x``
    (``x_side_*``), FORWARD starting with its last element, and FORWARD's words come out on
    ``y_out`` as each row is rounded and go straight back into the buffer, within ``L``. A
    FORWARD reads ``x`` last in the cycle of its last issue (cycle ``I``, its start being
    cycle 0): from the next cycle on the feeder writes the pass's next vector into ``x``
    while the product drains, so the next FORWARD starts ``max(L, I + E)`` cycles after
    this one (the array idle again, or the vector in). The last vector of a pass is written
    back before the next pass reads the buffer. Inverse, the vector streams from the buffer
    into ``s_in`` while TRANSPOSED_STREAM runs (each row enters the multipliers once its
    word has arrived: the product ends one cycle later than ``L``), then goes back into the
    buffer from ``y_side_data`` after a cycle addressing it, before the next vector starts
    (the array runs one operation at a time, and ``y_side`` is read while it is idle).
    LOAD_* and READ_* move one word per cycle.

    Structure: :meth:`elaborate` builds the two arrays (and FourierConv's Hadamard unit), the
    buffer, and one FSM over registers the operations share, its states from one builder
    each: IDLE (the dispatch), LOAD and LOAD_SPECTRUM, READ_RE and READ_IM, NEXT_PASS (the
    pass sequencer), VEC_START … YBACK (one vector of a pass; a column pass steps through
    the buffer ``W`` apart, the transpose) and the Hadamard pass; beside it the feeder's FSM,
    which writes the forward passes' vectors into the arrays' ``x``. The constructor checks
    every parameter, the parts' included (:meth:`check_parameters`).
    """

    _hadamard = False

    def __init__(self, height: int, width: int, *, lanes: int | None = None,
                 data_format: Format, twiddle_format: Format, acc_width: int = 48,
                 rounding: str = "nearest", lfsr_seed: int = LFSR_SEED,
                 spectrum_format: Format | None = None, gauss: bool = False,
                 device: DeviceModel | None = None, device_seed: int = DEVICE_SEED):
        self._device = None if device is None or device.off else device
        self._device_seed = device_seed
        self._height, self._width = height, width
        self._lanes = lanes
        self._df, self._tf = data_format, twiddle_format
        self._acc_width = acc_width
        self._rounding = rounding
        self._lfsr_seed = lfsr_seed
        self._sf, self._gauss = spectrum_format, bool(gauss)
        word = max(data_format.width, twiddle_format.width,
                   spectrum_format.width if self._hadamard else 0)
        super().__init__(ControlSignature(FourierOp, word))

    @classmethod
    def check_parameters(cls, height: int, width: int, *, lanes: int | None = None,
                         data_format: Format, twiddle_format: Format, acc_width: int = 48,
                         rounding: str = "nearest", lfsr_seed: int = LFSR_SEED,
                         spectrum_format: Format | None = None, gauss: bool = False,
                         device: DeviceModel | None = None,
                         device_seed: int = DEVICE_SEED) -> None:
        """Raise the ``TypeError`` or ``ValueError`` the constructor raises for these
        parameters, before the unit is made (:class:`~xbarode.hdl.checked.CheckedComponent`)
        and without building its parts.

        The unit's own checks, then its parts' with their own messages: the rows array's and
        the columns array's accumulator (:class:`DftArray`; the arrays' other parameters are
        the unit's, checked here already) and, for :class:`FourierConv`, the Hadamard
        unit's (:meth:`HadamardUnit.check_parameters
        <xbarode.hdl.hadamard.HadamardUnit.check_parameters>`). A parent (the core) checks
        its Fourier units with it; the parts themselves are built in :meth:`elaborate`.
        """
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
        # The arrays' checks (in the order they are built: rows, then columns).
        if isinstance(acc_width, bool) or not isinstance(acc_width, int):
            raise TypeError(f"acc_width must be an integer, not {type(acc_width).__name__}")
        for n in (width, height):
            check_accumulator(acc_width, twiddle_format, data_format, 2 * n)
        if dft_device(device) is not None:
            # The arrays' read models (their ADC's range, the stochastic rounding's bits).
            seeds = (device_seed, site_seed(device_seed, 1))
            for n, array_lanes, seed in zip((width, height),
                                            cls.array_lanes(height, width, lanes), seeds,
                                            strict=True):
                DftArray.check_parameters(n, lanes=array_lanes, data_format=data_format,
                                          twiddle_format=twiddle_format, acc_width=acc_width,
                                          rounding=rounding, lfsr_seed=lfsr_seed,
                                          device=device, device_seed=seed)
        else:
            Lfsr(device_seed)
        if cls._hadamard:
            if not isinstance(spectrum_format, Format):
                raise TypeError(f"spectrum_format must be a Format, not "
                                f"{type(spectrum_format).__name__}")
            HadamardUnit.check_parameters(length=height * width, x_format=data_format,
                                          spectrum_format=spectrum_format,
                                          out_format=data_format, rounding=rounding,
                                          gauss=gauss, lfsr_seed=site_seed(lfsr_seed, 2))

    @staticmethod
    def array_lanes(height: int, width: int, lanes: int | None = None) -> tuple[int, int]:
        """Multipliers of the rows array (length ``width``) and of the columns array (length
        ``height``) for the constructor's ``lanes``: each capped at its ``2n``, or ``2n``."""
        return tuple(2 * n if lanes is None else min(lanes, 2 * n) for n in (width, height))

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
        return self.array_lanes(self._height, self._width, self._lanes)

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

    @property
    def device(self) -> DeviceModel | None:
        """The DFT arrays' read models; None for the ideal arrays."""
        return self._device

    @property
    def device_seed(self) -> int:
        """Seed of the rows array's device generators (columns array:
        ``site_seed(device_seed, 1)``)."""
        return self._device_seed

    # Hardware -------------------------------------------------------------------------------
    def _parts(self, m):
        """Build the rows array, the columns array and (FourierConv) the Hadamard unit as
        submodules of ``m``; ``((rows, cols), unit or None)``."""
        rows_lanes, cols_lanes = self.lanes
        common = {"data_format": self._df, "twiddle_format": self._tf,
                  "acc_width": self._acc_width, "rounding": self._rounding,
                  "device": self._device}
        m.submodules.rows = rows_arr = DftArray(self._width, lanes=rows_lanes,
                                                lfsr_seed=self._lfsr_seed,
                                                device_seed=self._device_seed, **common)
        m.submodules.cols = cols_arr = DftArray(self._height, lanes=cols_lanes,
                                                lfsr_seed=site_seed(self._lfsr_seed, 1),
                                                device_seed=site_seed(self._device_seed, 1),
                                                **common)
        unit = None
        if self._hadamard:
            m.submodules.hadamard = unit = HadamardUnit(
                length=self._height * self._width, x_format=self._df,
                spectrum_format=self._sf, out_format=self._df, rounding=self._rounding,
                gauss=self._gauss, lfsr_seed=site_seed(self._lfsr_seed, 2))
        return (rows_arr, cols_arr), unit

    def elaborate(self, platform):
        m = Module()
        height, width = self._height, self._width
        size = height * width
        dw = self._df.width
        arrays, unit = self._parts(m)

        buf = Memory(shape=complex_layout(dw), depth=size, init=[])
        m.submodules.buffer = buf
        rd, wr = buf.read_port(), buf.write_port()
        m.d.comb += rd.en.eq(0)
        _join_flags(m, self, [*arrays, *([unit] if unit else [])])

        words = _Words.create(size, dw, len(self.i.payload))
        walk = _Walk.create(m, height, width)
        drive = _ArrayDrive.create(m, arrays, walk.sel, dw)
        feed = _Feed.create(m, arrays, walk.sel)
        side = _SideWalk.create(m, arrays, walk.sel, rd, feed.half)
        if unit is not None:
            sweep = _Sweep.create(height, width)
            m.d.comb += [unit.i.payload.re.eq(rd.data.re), unit.i.payload.im.eq(rd.data.im)]

        m.d.comb += self.busy.eq(1)
        with m.FSM():
            _idle_states(m, self, words, walk, rd, unit)
            _load_states(m, self, words, wr, unit, size)
            _read_states(m, self, words, rd, size)
            _sequencer_state(m, self, walk, unit)
            _vector_states(m, walk, drive, side, feed, words, rd, wr, width)
            if unit is not None:
                _hadamard_states(m, unit, sweep, rd, wr, height, width)
        _feeder(m, walk, side, feed, rd)
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


# The parts of Dft2d.elaborate -----------------------------------------------------------------
# One FSM, its states added by the builders below in this order: the passes reuse the
# streaming operations' word registers, and every state drives the buffer's two ports, so the
# parts share one controller instead of handing the buffer from one component to another.

def _join_flags(m, dut, parts):
    """``dut.overflow`` is the OR of its parts' sticky flags; ``dut.clear`` clears them all."""
    flags = parts[0].overflow
    for part in parts[1:]:
        flags = flags | part.overflow
    m.d.comb += dut.overflow.eq(flags)
    for part in parts:
        m.d.comb += part.clear.eq(dut.clear)


@dataclass(frozen=True)
class _Words:
    """The operation and the word registers of the streaming operations, which the passes
    reuse: a complex element moves as two words, the real one held (``re_hold``) until the
    imaginary one comes (``half`` set between them), or the imaginary one held (``im_hold``)
    while the real one goes; ``count`` counts elements."""

    op: Signal
    count: Signal
    half: Signal
    re_hold: Signal
    im_hold: Signal

    @classmethod
    def create(cls, size, dw, in_width):
        """The registers for ``size`` elements of ``dw``-bit words (``in_width``: the
        ``i`` stream's payload, which ``re_hold`` holds whole)."""
        op = Signal(FourierOp)
        count = Signal(range(2 * size + 1))
        half = Signal()                    # second word (imaginary part) of an element
        re_hold = Signal(signed(max(dw, in_width)))
        im_hold = Signal(signed(dw))
        return cls(op, count, half, re_hold, im_hold)


#: (sel, inverse) of each bit of the pass plan: 0 rows fwd, 1 cols fwd, 2 cols inv, 3 rows inv.
_PASS_SEL = (0, 1, 1, 0)
_PASS_INV = (0, 0, 1, 1)


@dataclass(frozen=True)
class _Walk:
    """The pass registers: the plan of pending passes and the walk of the one that runs.

    A pass takes ``n_vec`` vectors of ``n_len`` elements through array ``sel`` (0: the rows
    array, length W, vectors along a row; 1: the columns array, length H, vectors down a
    column, ``stride`` W apart: the transpose), forward or ``inverse``. ``plan`` holds the
    pending passes, one bit each (:data:`_PASS_SEL`, :data:`_PASS_INV`), low bit first;
    ``then_hadamard`` puts CONV's Hadamard pass between the forward and the inverse ones.
    """

    sel: Signal
    inverse: Signal
    vec: Signal
    elem: Signal
    vec_start: Signal
    feed_addr: Signal
    back_addr: Signal
    plan: Signal
    then_hadamard: Signal
    n_vec: Signal
    n_len: Signal
    stride: Signal

    @classmethod
    def create(cls, m, height, width):
        """The registers, with ``n_vec``, ``n_len`` and ``stride`` driven from ``sel`` in
        ``m``."""
        size = height * width
        sel = Signal()                     # 0: rows array (length W), 1: columns array
        inverse = Signal()
        vec = Signal(range(max(height, width) + 1))
        elem = Signal(range(max(height, width) + 1))
        vec_start = Signal(range(size + 1))
        feed_addr = Signal(range(size + width + 1))
        back_addr = Signal(range(size + width + 1))
        plan = Signal(4)                   # pending passes, one bit each, low bit first
        then_hadamard = Signal()           # CONV: Hadamard between the forward and inverse
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
        return cls(sel, inverse, vec, elem, vec_start, feed_addr, back_addr, plan,
                   then_hadamard, n_vec, n_len, stride)


@dataclass(frozen=True)
class _ArrayDrive:
    """One set of strobes for both arrays, gated by ``sel``, and the selected array's
    answers: the walk drives ``a_op``, ``a_start``, ``a_valid``, ``a_payload``,
    ``a_ready_out`` and the side port ``s_in`` (``a_s_valid``, ``a_payload`` too), and reads
    ``a_i_ready``, ``a_done``, ``a_o_valid``, ``a_o_payload`` and the side port ``y_out``
    (``a_y_valid``, ``a_y_payload``)."""

    a_op: Signal
    a_start: Signal
    a_valid: Signal
    a_ready_out: Signal
    a_payload: Signal
    a_s_valid: Signal
    a_i_ready: Signal
    a_done: Signal
    a_o_valid: Signal
    a_o_payload: Signal
    a_y_valid: Signal
    a_y_payload: Signal

    @classmethod
    def create(cls, m, arrays, sel, dw):
        """The strobes and answers, wired in ``m`` to ``arrays`` (rows, columns)."""
        rows_arr = arrays[0]
        a_op = Signal(TileOp)
        a_start, a_valid, a_ready_out, a_s_valid = Signal(), Signal(), Signal(), Signal()
        a_payload = Signal(signed(dw))
        for k, a in enumerate(arrays):
            mine = sel == k
            m.d.comb += [a.op.eq(a_op), a.start.eq(a_start & mine),
                         a.i.valid.eq(a_valid & mine), a.i.payload.eq(a_payload),
                         a.o.ready.eq(a_ready_out & mine), a.s_in.valid.eq(a_s_valid & mine),
                         a.s_in.payload.eq(a_payload)]
        a_i_ready = Signal()
        a_done = Signal()
        a_o_valid, a_y_valid = Signal(), Signal()
        a_o_payload = Signal(signed(len(rows_arr.o.payload)))
        a_y_payload = Signal(signed(len(rows_arr.y_out.payload)))
        for k, a in enumerate(arrays):
            with m.If(sel == k):
                m.d.comb += [a_i_ready.eq(a.i.ready), a_done.eq(a.done),
                             a_o_valid.eq(a.o.valid), a_o_payload.eq(a.o.payload),
                             a_y_valid.eq(a.y_out.valid), a_y_payload.eq(a.y_out.payload)]
        return cls(a_op, a_start, a_valid, a_ready_out, a_payload, a_s_valid, a_i_ready,
                   a_done, a_o_valid, a_o_payload, a_y_valid, a_y_payload)


@dataclass(frozen=True)
class _SideWalk:
    """The walk of a vector's words over the selected array's lanes, for its side ports:
    word ``2j`` of element ``j`` (its real part) and word ``2j + 1`` (its imaginary part)
    sit at lane ``w mod p``, chunk ``w // p`` of ``x`` (forward input) and of the transposed
    result ``y`` (``p`` the array's lanes). With ``p`` even (``pair``) an element's two words
    share a chunk and move together, one element per cycle; with ``p`` odd, one word per
    cycle (``half``: the imaginary one). ``lane`` and ``chunk`` are the element's (or
    word's) place, ``wrap`` says it is its chunk's last; ``x_en`` writes the buffer's element
    (read port) there through ``x_side_*``; ``y_addr`` drives both arrays' ``y_side_addr``,
    and ``y_word0``, ``y_word1`` are the selected array's ``y_side_data`` at ``lane`` and
    ``lane + 1``."""

    lane: Signal
    chunk: Signal
    pair: Signal
    wrap: Signal
    x_en: Signal
    y_addr: Signal
    y_word0: Signal
    y_word1: Signal

    @classmethod
    def create(cls, m, arrays, sel, rd, half):
        """The walk's registers and the side ports of ``arrays`` (rows, columns) wired in
        ``m``, the selected one (``sel``) taking the buffer's read port ``rd``."""
        lanes = [a.lanes for a in arrays]
        chunks = [a.chunks for a in arrays]
        lane = Signal(range(max(*lanes, 2)))
        chunk = Signal(range(max(*chunks, 2) + 1))
        pair, wrap, x_en = Signal(), Signal(), Signal()
        y_addr = Signal.like(chunk)
        width = len(arrays[0].y_side_data[0])
        y_word0, y_word1 = Signal(signed(width)), Signal(signed(width))
        for k, a in enumerate(arrays):
            p, mine = a.lanes, sel == k
            m.d.comb += [a.x_side_addr.eq(chunk), a.y_side_addr.eq(y_addr)]
            for j in range(p):
                if p % 2 == 0:
                    m.d.comb += [a.x_side_en[j].eq(x_en & mine & (lane == j - j % 2)),
                                 a.x_side_data[j].eq(rd.data.im if j % 2 else rd.data.re)]
                else:
                    m.d.comb += [a.x_side_en[j].eq(x_en & mine & (lane == j)),
                                 a.x_side_data[j].eq(Mux(half, rd.data.im, rd.data.re))]
            with m.If(mine):
                data = Array(a.y_side_data)
                m.d.comb += [pair.eq(p % 2 == 0), y_word0.eq(data[lane])]
                if p % 2 == 0:
                    m.d.comb += [wrap.eq(lane == p - 2), y_word1.eq(data[lane | 1])]
                else:
                    m.d.comb += wrap.eq(lane == p - 1)
        return cls(lane, chunk, pair, wrap, x_en, y_addr, y_word0, y_word1)

    def step(self, m):
        """To the next element (``pair``) or word at the next edge."""
        with m.If(self.wrap):
            m.d.sync += [self.lane.eq(0), self.chunk.eq(self.chunk + 1)]
        with m.Else():
            m.d.sync += self.lane.eq(self.lane + Mux(self.pair, 2, 1))

    def restart(self, m):
        """Back to word 0 at the next edge."""
        m.d.sync += [self.lane.eq(0), self.chunk.eq(0)]


@dataclass(frozen=True)
class _Feed:
    """The feeder's controls and registers (:func:`_feeder`): ``go`` (with ``start``, the
    buffer address of the vector's first element) starts writing a vector into the
    selected array's ``x``; ``last`` marks the cycle of its last write; ``full`` says a
    whole vector is in ``x`` that no FORWARD has started on; ``forward`` is a FORWARD's
    start (it empties ``x``). ``addr``, ``elem`` and ``half`` walk the vector. ``since``
    counts the cycles of the running FORWARD (1 the cycle after its start), up to
    ``issue_end + 1``; ``issue_end``
    is the cycle of its last issue, ``rows·C`` of the selected array, after which it reads
    ``x`` no more."""

    go: Signal
    start: Signal
    last: Signal
    full: Signal
    forward: Signal
    addr: Signal
    elem: Signal
    half: Signal
    since: Signal
    issue_end: Signal

    @classmethod
    def create(cls, m, arrays, sel):
        """The controls and registers for ``arrays`` (rows, columns), ``issue_end`` that of
        the one ``sel`` selects."""
        ends = [a.rows * a.chunks for a in arrays]
        size = arrays[0].n * arrays[1].n
        go, last, full, forward = Signal(), Signal(), Signal(), Signal()
        start = Signal(range(size + 1))
        addr = Signal(range(2 * size + 1))
        elem = Signal(range(max(a.n for a in arrays) + 1))
        half = Signal()
        since = Signal(range(max(ends) + 2))
        issue_end = Signal(range(max(ends) + 1))
        m.d.comb += issue_end.eq(Mux(sel, ends[1], ends[0]))
        with m.If(forward):
            m.d.sync += full.eq(0)
        with m.Elif(last):
            m.d.sync += full.eq(1)
        return cls(go, start, last, full, forward, addr, elem, half, since, issue_end)


@dataclass(frozen=True)
class _Sweep:
    """The Hadamard pass's counters, column-major: the row and column of the next element
    read (``h_rr``, ``h_rc``) and of the next product written (``h_wr``, ``h_wc``), their
    buffer addresses, and the elements fed to the unit and taken from it."""

    h_rr: Signal
    h_rc: Signal
    h_read: Signal
    h_wr: Signal
    h_wc: Signal
    h_write: Signal
    h_fed: Signal
    h_out: Signal

    @classmethod
    def create(cls, height, width):
        """The counters for an H×W buffer."""
        size = height * width
        h_rr = Signal(range(height + 1))
        h_rc = Signal(range(width + 1))
        h_read = Signal(range(size + width + 1))
        h_wr = Signal(range(height + 1))
        h_wc = Signal(range(width + 1))
        h_write = Signal(range(size + width + 1))
        h_fed = Signal(range(size + 1))
        h_out = Signal(range(size + 1))
        return cls(h_rr, h_rc, h_read, h_wr, h_wc, h_write, h_fed, h_out)


def _idle_states(m, dut, words, walk, rd, unit):
    """IDLE: take ``op`` at ``start`` and go to its first state (a DFT, IDFT or CONV sets
    the pass plan); NOTHING: an operation the unit does not have ends at once."""
    plan, then_hadamard = walk.plan, walk.then_hadamard
    with m.State("IDLE"):
        m.d.comb += dut.busy.eq(0)
        with m.If(dut.start):
            m.d.sync += [words.op.eq(dut.op), words.count.eq(0), words.half.eq(0),
                         plan.eq(0), then_hadamard.eq(0)]
            with m.Switch(dut.op):
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
        m.d.comb += dut.done.eq(1)
        m.next = "IDLE"


def _load_states(m, dut, words, wr, unit, size):
    """LOAD (LOAD_REAL and LOAD): words into the buffer, row-major; LOAD_SPECTRUM
    (FourierConv): ``(re, im)`` pairs into the Hadamard unit's spectrum."""
    op, count, half, re_hold = words.op, words.count, words.half, words.re_hold
    with m.State("LOAD"):
        m.d.comb += dut.i.ready.eq(1)
        with m.If(dut.i.valid):
            with m.If((op == FourierOp.LOAD) & ~half):
                m.d.sync += [re_hold.eq(dut.i.payload), half.eq(1)]
            with m.Else():
                m.d.comb += [wr.addr.eq(count), wr.en.eq(1)]
                with m.If(op == FourierOp.LOAD):
                    m.d.comb += [wr.data.re.eq(re_hold), wr.data.im.eq(dut.i.payload)]
                with m.Else():
                    m.d.comb += [wr.data.re.eq(dut.i.payload), wr.data.im.eq(0)]
                m.d.sync += [count.eq(count + 1), half.eq(0)]
                with m.If(count == size - 1):
                    m.d.comb += dut.done.eq(1)
                    m.next = "IDLE"

    if unit is not None:
        with m.State("LOAD_SPECTRUM"):
            m.d.comb += [unit.load.payload.re.eq(re_hold),
                         unit.load.payload.im.eq(dut.i.payload)]
            with m.If(~half):
                m.d.comb += dut.i.ready.eq(1)
                with m.If(dut.i.valid):
                    m.d.sync += [re_hold.eq(dut.i.payload), half.eq(1)]
            with m.Else():
                m.d.comb += [dut.i.ready.eq(unit.load.ready),
                             unit.load.valid.eq(dut.i.valid)]
                with m.If(dut.i.valid & unit.load.ready):
                    m.d.sync += [count.eq(count + 1), half.eq(0)]
                    with m.If(count == size - 1):
                        m.d.comb += dut.done.eq(1)
                        m.next = "IDLE"


def _read_states(m, dut, words, rd, size):
    """READ_RE, READ_IM (READ_REAL and READ): the buffer out, row-major.

    The element at ``count`` is in the read port; the next one is read as the last word of
    this one is taken (the port holds its data while not enabled).
    """
    op, count, im_hold = words.op, words.count, words.im_hold
    with m.State("READ_RE"):
        m.d.comb += [dut.o.valid.eq(1), dut.o.payload.eq(rd.data.re), rd.addr.eq(count + 1)]
        with m.If(dut.o.ready):
            m.d.sync += im_hold.eq(rd.data.im)
            with m.If(op == FourierOp.READ):
                m.next = "READ_IM"
            with m.Else():
                m.d.comb += rd.en.eq(1)
                m.d.sync += count.eq(count + 1)
                with m.If(count == size - 1):
                    m.d.comb += dut.done.eq(1)
                    m.next = "IDLE"
    with m.State("READ_IM"):
        m.d.comb += [dut.o.valid.eq(1), dut.o.payload.eq(im_hold), rd.addr.eq(count + 1)]
        with m.If(dut.o.ready):
            m.d.comb += rd.en.eq(1)
            m.d.sync += count.eq(count + 1)
            with m.If(count == size - 1):
                m.d.comb += dut.done.eq(1)
                m.next = "IDLE"
            with m.Else():
                m.next = "READ_RE"


def _sequencer_state(m, dut, walk, unit):
    """The pass sequencer, NEXT_PASS: start the first pending pass of the plan — the forward
    ones, CONV's Hadamard pass, the inverse ones — or end the operation (``done``)."""
    plan = walk.plan

    def begin_pass(k):
        m.d.sync += [walk.sel.eq(_PASS_SEL[k]), walk.inverse.eq(_PASS_INV[k]), walk.vec.eq(0),
                     walk.vec_start.eq(0), plan[k].eq(0)]
        m.next = "VEC_START"

    with m.State("NEXT_PASS"):
        with m.If(plan[0]):
            begin_pass(0)
        with m.Elif(plan[1]):
            begin_pass(1)
        with m.Elif(walk.then_hadamard):
            m.d.sync += walk.then_hadamard.eq(0)
            if unit is not None:
                m.next = "HADAMARD_START"
        with m.Elif(plan[2]):
            begin_pass(2)
        with m.Elif(plan[3]):
            begin_pass(3)
        with m.Else():
            m.d.comb += dut.done.eq(1)
            m.next = "IDLE"


def _vector_states(m, walk, drive, side, feed, words, rd, wr, width):
    """One vector of a pass (VEC_START … YBACK). Forward: the feeder (:func:`_feeder`)
    writes its ``n_len`` elements from the buffer into the selected array's ``x`` through
    the side port, FORWARD starts with the last of them (or as soon as the array is idle, if
    they are there already), and its words (``y_out``, as each row is rounded) go back into
    the buffer in place as they come; once FORWARD has issued its last row, the feeder
    writes the pass's next vector into ``x`` while the product drains. Inverse:
    TRANSPOSED_STREAM, its ``s`` streamed from the buffer on ``s_in`` while the product
    runs, then the result back in place through the side port ``y_side_*``. Then the next
    vector, or back to NEXT_PASS."""
    w, d = walk, drive
    half, re_hold, im_hold = words.half, words.re_hold, words.im_hold
    last_elem = w.elem == w.n_len - 1
    next_start = Mux(w.sel, w.vec_start + 1, w.vec_start + width)

    def end_vector():
        m.d.sync += [w.vec.eq(w.vec + 1), w.vec_start.eq(next_start)]
        with m.If(w.vec == w.n_vec - 1):
            m.next = "NEXT_PASS"
        with m.Else():
            m.next = "VEC_START"

    def start_forward():
        m.d.comb += [d.a_op.eq(TileOp.FORWARD), d.a_start.eq(1), feed.forward.eq(1)]
        m.d.sync += feed.since.eq(1)
        m.next = "COMPUTE_WAIT"

    with m.State("VEC_START"):
        m.d.sync += [w.back_addr.eq(w.vec_start), w.elem.eq(0), half.eq(0)]
        with m.If(w.inverse):
            m.d.comb += [rd.addr.eq(w.vec_start), rd.en.eq(1),
                         d.a_op.eq(TileOp.TRANSPOSED_STREAM), d.a_start.eq(1)]
            m.d.sync += w.feed_addr.eq(w.vec_start)
            m.next = "FEED_RE"
        with m.Else():
            # The pass's first vector is fed now; the others were while the last drained.
            with m.If(w.vec == 0):
                m.d.comb += [feed.go.eq(1), feed.start.eq(w.vec_start)]
            with m.If(feed.full | feed.last):
                start_forward()
            with m.Else():
                m.next = "FWD_WAIT"
    with m.State("FWD_WAIT"):
        with m.If(feed.full | feed.last):
            start_forward()
    # Inverse: the words into s_in (always ready), one per cycle, while the product runs.
    with m.State("FEED_RE"):
        m.d.comb += [d.a_s_valid.eq(1), d.a_payload.eq(rd.data.re),
                     rd.addr.eq(w.feed_addr + w.stride), rd.en.eq(1)]
        m.d.sync += [im_hold.eq(rd.data.im), w.feed_addr.eq(w.feed_addr + w.stride)]
        m.next = "FEED_IM"
    with m.State("FEED_IM"):
        m.d.comb += [d.a_s_valid.eq(1), d.a_payload.eq(im_hold)]
        m.d.sync += w.elem.eq(w.elem + 1)
        with m.If(last_elem):
            m.next = "COMPUTE_WAIT"
        with m.Else():
            m.next = "FEED_RE"
    with m.State("COMPUTE_WAIT"):
        # FORWARD's words, in row order, back into the buffer as they are rounded.
        with m.If(d.a_y_valid):
            with m.If(~half):
                m.d.sync += [re_hold.eq(d.a_y_payload), half.eq(1)]
            with m.Else():
                m.d.comb += [wr.addr.eq(w.back_addr), wr.data.re.eq(re_hold),
                             wr.data.im.eq(d.a_y_payload), wr.en.eq(1)]
                m.d.sync += [w.back_addr.eq(w.back_addr + w.stride), half.eq(0)]
        # FORWARD's last issue: x is free for the pass's next vector (since stops after it).
        with m.If(feed.since <= feed.issue_end):
            m.d.sync += feed.since.eq(feed.since + 1)
        with m.If(~w.inverse & (feed.since == feed.issue_end) & (w.vec != w.n_vec - 1)):
            m.d.comb += [feed.go.eq(1), feed.start.eq(next_start)]
        with m.If(d.a_done):
            m.d.sync += [w.elem.eq(0), half.eq(0)]
            with m.If(w.inverse):
                m.next = "YBACK_START"
            with m.Else():
                end_vector()
    # Inverse: the result back through y_side (the array idle), its first chunk addressed.
    with m.State("YBACK_START"):
        m.d.comb += side.y_addr.eq(0)
        side.restart(m)
        m.next = "YBACK"
    with m.State("YBACK"):
        # The chunk addressed now is the next element's (or word's).
        m.d.comb += side.y_addr.eq(Mux(side.wrap, side.chunk + 1, side.chunk))
        side.step(m)
        with m.If(side.pair | half):
            m.d.comb += [wr.addr.eq(w.back_addr), wr.en.eq(1), wr.data.im.eq(side.y_word0),
                         wr.data.re.eq(Mux(side.pair, side.y_word0, re_hold))]
            with m.If(side.pair):
                m.d.comb += wr.data.im.eq(side.y_word1)
            m.d.sync += [w.back_addr.eq(w.back_addr + w.stride), half.eq(0),
                         w.elem.eq(w.elem + 1)]
            with m.If(last_elem):
                end_vector()
        with m.Else():
            m.d.sync += [re_hold.eq(side.y_word0), half.eq(1)]


def _feeder(m, walk, side, feed, rd):
    """The feeder, an FSM of its own beside the unit's (its accesses to the buffer's read
    port win over the unit's, which reads nothing while it runs): at ``go`` it reads the
    vector's first element, then writes one element per cycle (an array with an odd number
    of lanes: one word) into the selected array's ``x`` through ``x_side_*``
    (:class:`_SideWalk`), ``last`` with the last."""
    w = walk
    with m.FSM(name="feeder"):
        with m.State("F_IDLE"):
            with m.If(feed.go):
                m.d.comb += [rd.addr.eq(feed.start), rd.en.eq(1)]
                m.d.sync += [feed.addr.eq(feed.start), feed.elem.eq(0), feed.half.eq(0)]
                side.restart(m)
                m.next = "F_RUN"
        with m.State("F_RUN"):
            m.d.comb += [side.x_en.eq(1), rd.addr.eq(feed.addr + w.stride)]
            side.step(m)
            with m.If(side.pair | feed.half):
                m.d.comb += rd.en.eq(1)
                m.d.sync += [feed.addr.eq(feed.addr + w.stride), feed.elem.eq(feed.elem + 1),
                             feed.half.eq(0)]
                with m.If(feed.elem == w.n_len - 1):
                    m.d.comb += feed.last.eq(1)
                    m.next = "F_IDLE"
            with m.Else():
                m.d.sync += feed.half.eq(1)


def _hadamard_states(m, unit, sweep, rd, wr, height, width):
    """The Hadamard pass (HADAMARD_START, HADAMARD), column-major: reads run ahead of the
    unit's pipeline; each product is written back where its element was read; then back to
    NEXT_PASS."""
    size = height * width
    s = sweep
    with m.State("HADAMARD_START"):
        m.d.comb += [unit.restart.eq(1), rd.addr.eq(0), rd.en.eq(1)]
        m.d.sync += [s.h_rr.eq(0), s.h_rc.eq(0), s.h_read.eq(0), s.h_wr.eq(0), s.h_wc.eq(0),
                     s.h_write.eq(0), s.h_fed.eq(0), s.h_out.eq(0)]
        m.next = "HADAMARD"
    with m.State("HADAMARD"):
        next_read = Signal.like(s.h_read)
        m.d.comb += next_read.eq(s.h_read + width)
        with m.If(s.h_rr == height - 1):
            m.d.comb += next_read.eq(s.h_rc + 1)
        m.d.comb += [unit.i.valid.eq(s.h_fed != size), rd.addr.eq(next_read)]
        with m.If(unit.i.valid & unit.i.ready):
            m.d.comb += rd.en.eq(1)
            m.d.sync += [s.h_read.eq(next_read), s.h_fed.eq(s.h_fed + 1)]
            with m.If(s.h_rr == height - 1):
                m.d.sync += [s.h_rr.eq(0), s.h_rc.eq(s.h_rc + 1)]
            with m.Else():
                m.d.sync += s.h_rr.eq(s.h_rr + 1)
        m.d.comb += unit.o.ready.eq(1)
        with m.If(unit.o.valid):
            m.d.comb += [wr.addr.eq(s.h_write), wr.data.eq(unit.o.payload), wr.en.eq(1)]
            m.d.sync += s.h_out.eq(s.h_out + 1)
            with m.If(s.h_wr == height - 1):
                m.d.sync += [s.h_wr.eq(0), s.h_wc.eq(s.h_wc + 1), s.h_write.eq(s.h_wc + 1)]
            with m.Else():
                m.d.sync += [s.h_wr.eq(s.h_wr + 1), s.h_write.eq(s.h_write + width)]
            with m.If(s.h_out == size - 1):
                m.next = "NEXT_PASS"
