"""The pulse trains of a pulsed UPDATE (docs/device.md, "Pulsed updates"): the twin of
:func:`xbarode.model.device._fires` for one sample.

:class:`PulseTrains` makes, at the start of an UPDATE, the row pulse trains ``R[i]`` (``BL``
bits, one per slot) of every row from the words of ``s`` and the column pulse trains
``C[j]`` of every column from the words of ``x``, one row and one column per cycle in
parallel, each from its own LFSR (an :class:`~xbarode.hdl.rounding.LfsrBank` offering ``BL``
draws per cycle); it stores them in memories that the tile's UPDATE walk reads beside ``s``
and ``x``. The lane groups (:class:`~xbarode.hdl.lane_group.LaneGroup` with ``pulses``) turn
them into the coincidence counts ``popcount(R[i] & C[j])`` and the weights' steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from xbarode.model.device import ASYMMETRY_FRAC, MAX_PULSES, DeviceModel, pulse_step
from xbarode.model.fixed import Format, Lfsr

from .checked import CheckedComponent
from .rounding import LfsrBank

__all__ = ["PulseGeometry", "PulseTrains", "fires", "fires_below", "magnitude", "popcount",
           "pulse_geometry"]


def fires(word, draws, width: int):
    """The pulse train of one word: slot ``t`` fires iff the low ``width − 1`` bits of
    ``draws[t]`` (at most 32) are below ``|word|``, the model's integer compare.

    Parameters
    ----------
    word : Value
        A signed word of ``width`` bits (``|word|`` may be ``2^(width−1)``: every slot fires).
    draws : list of Value
        One LFSR draw (its low ``min(width − 1, 32)`` bits or more) per slot.
    width : int
        Width of the word's format.

    Returns
    -------
    Value
        ``len(draws)`` bits, bit ``t`` the slot ``t``.
    """
    return fires_below(magnitude(word, width), draws, width)


def magnitude(word, width: int):
    """``|word|`` of a signed ``width``-bit word, ``width`` bits unsigned (``2^(width−1)``
    for the most negative word)."""
    return Mux(word < 0, -word, word).as_unsigned()[:width]


def fires_below(value, draws, width: int):
    """:func:`fires` of a word whose magnitude ``value`` is given."""
    low = min(width - 1, 32)
    return Cat(((draw[:low] if low > 0 else 0) < value) for draw in draws)


def popcount(bits):
    """The number of ones in ``bits`` (a Value), an adder tree of pairs.

    Returns
    -------
    Value
        Unsigned, at least ``len(bits).bit_length()`` bits.
    """
    terms = [bits[t] for t in range(len(bits))]
    while len(terms) > 1:
        pairs = [terms[n] + terms[n + 1] for n in range(0, len(terms) - 1, 2)]
        terms = pairs + terms[len(terms) - len(terms) % 2:]
    return terms[0] if terms else Const(0, 1)


class PulseTrains(CheckedComponent):
    """The row and column pulse trains of one sample, made at ``start`` and kept for the walk.

    Parameters
    ----------
    rows, cols, lanes : int
        The tile's shape and lanes (``1 <= lanes <= cols``); column ``j`` is lane
        ``j mod lanes`` of chunk ``j // lanes``, as in the tile's ``x`` banks.
    width : int
        Width of the words of ``s`` and ``x`` (``>= 2``): their format's width, over which a
        word's magnitude is full scale.
    x_width : int, optional
        Width of the words of ``x`` when it differs from that of ``s`` (``width``): a training
        tile's pulsed SGD step takes a gradient on one side and an operand on the other.
    pulses : int
        Slots per train, ``BL``: a power of two from 1 to
        :data:`~xbarode.model.device.MAX_PULSES`.
    row_seed, col_seed : int
        Seeds of the row and the column generators (the model's
        ``Lfsr(site_seed(device_seed, 3))`` and ``Lfsr(site_seed(device_seed, 4))``).

    Attributes
    ----------
    start : In(1)
        Make the trains of the words of ``s`` and ``x`` now in the tile's memories.
    busy : Out(1)
        Making them (the cycles after ``start`` up to ``done``).
    done : Out(1)
        The last cycle of ``busy``: every train is written at the coming edge.
    s_addr : Out(range(max(rows, 2)))
        While ``busy``, the address of ``s`` to read (data on ``s`` a cycle later).
    s : In(signed(width))
        The word of ``s`` read at ``s_addr`` the cycle before.
    x_addr : Out(range(max(C, 2)))
        While ``busy``, the chunk of ``x`` to read (``C = ceil(cols / lanes)``).
    x : In(signed(width)).array(lanes)
        The chunk of ``x`` read at ``x_addr`` the cycle before, a word per lane.
    row : In(range(max(rows, 2)))
        The row whose train ``row_fires`` gives a cycle later.
    row_fires : Out(unsigned(pulses))
        ``R[row]`` of the cycle before, bit ``t`` slot ``t``.
    chunk : In(range(max(C, 2)))
        The chunk whose trains ``col_fires`` give a cycle later.
    col_fires : Out(unsigned(pulses)).array(lanes)
        ``C[chunk·lanes + k]`` of the cycle before, for lane ``k``.

    Notes
    -----
    Draws: row ``i`` takes draws ``i·BL … i·BL + BL − 1`` of the row generator in this
    sample, slot ``t`` the draw ``i·BL + t`` (the model's C order of ``(word, slot)``); the
    columns likewise from the column generator. Each generator advances by ``BL`` draws per
    word, so the next sample's trains continue where this sample's end.

    Latency: ``busy`` from the cycle after ``start`` for ``max(rows, cols) + 2`` cycles,
    ``done`` in the last: one cycle per word (row ``t`` and column ``t`` are read in cycle
    ``t + 1``, their magnitudes registered in cycle ``t + 2`` and their trains made from
    registered draws and written in cycle ``t + 3``).
    """

    @staticmethod
    def check_parameters(*, rows: int, cols: int, lanes: int, width: int, pulses: int,
                         row_seed: int, col_seed: int, x_width: int | None = None) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        x_width = width if x_width is None else x_width
        for name, value, low in (("rows", rows, 1), ("cols", cols, 1), ("lanes", lanes, 1),
                                 ("width", width, 2), ("x_width", x_width, 2),
                                 ("pulses", pulses, 1)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
            if value < low:
                raise ValueError(f"{name} must be >= {low}, not {value}")
        if lanes > cols:
            raise ValueError(f"lanes must be between 1 and cols ({cols}), not {lanes}")
        if pulses > MAX_PULSES or pulses & (pulses - 1):
            raise ValueError(f"pulses must be a power of two from 1 to {MAX_PULSES}, not "
                             f"{pulses}")
        Lfsr(row_seed)
        Lfsr(col_seed)

    def __init__(self, *, rows: int, cols: int, lanes: int, width: int, pulses: int,
                 row_seed: int, col_seed: int, x_width: int | None = None):
        self._rows, self._cols, self._lanes = rows, cols, lanes
        self._width, self._pulses = width, pulses
        self._x_width = width if x_width is None else x_width
        self._row_seed, self._col_seed = row_seed, col_seed
        chunks = -(-cols // lanes)
        self._chunks = chunks
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            "s_addr": Out(range(max(rows, 2))), "s": In(signed(width)),
            "x_addr": Out(range(max(chunks, 2))),
            "x": In(signed(self._x_width)).array(lanes),
            "row": In(range(max(rows, 2))), "row_fires": Out(unsigned(pulses)),
            "chunk": In(range(max(chunks, 2))),
            "col_fires": Out(unsigned(pulses)).array(lanes),
        })

    @property
    def pulses(self) -> int:
        """Slots per train, ``BL``."""
        return self._pulses

    @property
    def cycles(self) -> int:
        """Cycles of ``busy``: ``max(rows, cols) + 2``."""
        return max(self._rows, self._cols) + 2

    def elaborate(self, platform):
        m = Module()
        rows, cols, lanes, chunks = self._rows, self._cols, self._lanes, self._chunks
        words = max(rows, cols)
        xw = self._x_width
        bits = min(max(self._width - 1, 1), 32)
        x_bits = min(max(xw - 1, 1), 32)
        # The word counter t: row t and column t (lane, chunk) are read in cycle t + 1 after
        # start, their magnitudes registered in cycle t + 2 and their trains made and written
        # in cycle t + 3; cycles words + 1 and words + 2 only finish the last ones.
        running = Signal(name="pulsing")
        t = Signal(range(words + 2), name="pulse_word")
        lane = Signal(range(max(lanes, 2)), name="pulse_lane")
        chunk = Signal(range(max(chunks, 2)), name="pulse_chunk")
        with m.If(self.start):
            m.d.sync += [running.eq(1), t.eq(0), lane.eq(0), chunk.eq(0)]
        with m.Elif(running):
            m.d.sync += t.eq(t + 1)
            with m.If(lane == lanes - 1):
                m.d.sync += [lane.eq(0), chunk.eq(chunk + 1)]
            with m.Else():
                m.d.sync += lane.eq(lane + 1)
            with m.If(t == words + 1):
                m.d.sync += running.eq(0)
        m.d.comb += [self.busy.eq(running), self.done.eq(running & (t == words + 1)),
                     self.s_addr.eq(Mux(t < rows, t, 0)),
                     self.x_addr.eq(Mux(t < cols, chunk, 0))]
        # The words read in this cycle (which row and which column they are), and their
        # magnitudes the next (registered: the negation's carry chain and the compare's are
        # paths of their own).
        row_read, col_read = Signal(name="row_read"), Signal(name="col_read")
        row_read_at = Signal(range(max(rows, 2)), name="row_read_at")
        lane_read, chunk_read = Signal.like(lane, name="lane_read"), Signal.like(chunk)
        m.d.sync += [row_read.eq(running & (t < rows)), col_read.eq(running & (t < cols)),
                     row_read_at.eq(self.s_addr), lane_read.eq(lane), chunk_read.eq(chunk)]
        x_word = Signal(signed(xw), name="x_word")
        m.d.comb += x_word.eq(self.x[0])
        for k in range(1, lanes):
            with m.If(lane_read == k):
                m.d.comb += x_word.eq(self.x[k])
        s_mag, x_mag = Signal(self._width, name="s_mag"), Signal(xw, name="x_mag")
        row_valid, col_valid = Signal(name="row_valid"), Signal(name="col_valid")
        row_at = Signal.like(row_read_at, name="row_at")
        lane_at, chunk_at = Signal.like(lane, name="lane_at"), Signal.like(chunk, name="chunk_at")
        m.d.sync += [s_mag.eq(magnitude(self.s, self._width)),
                     x_mag.eq(magnitude(x_word, xw)),
                     row_valid.eq(row_read), col_valid.eq(col_read), row_at.eq(row_read_at),
                     lane_at.eq(lane_read), chunk_at.eq(chunk_read)]
        # The draws from registers (LfsrBank's registered): a compare's path starts at one.
        m.submodules.row_draws = row_bank = LfsrBank(
            draws=self._pulses, bits=bits, steps={self._pulses}, seed=self._row_seed,
            registered=True)
        m.submodules.col_draws = col_bank = LfsrBank(
            draws=self._pulses, bits=x_bits, steps={self._pulses}, seed=self._col_seed,
            registered=True)
        m.d.comb += [row_bank.advance.eq(row_valid), col_bank.advance.eq(col_valid)]
        row_train = fires_below(s_mag, list(row_bank.draw), self._width)
        col_train = fires_below(x_mag, list(col_bank.draw), xw)
        # The trains: R in one memory (a word per row), C in one bank per lane (a word per
        # chunk), read by the walk at the tile's row and chunk.
        m.submodules.row_trains = r_mem = Memory(shape=unsigned(self._pulses), depth=rows,
                                                 init=[])
        r_wr, r_rd = r_mem.write_port(), r_mem.read_port()
        m.d.comb += [r_wr.addr.eq(row_at), r_wr.data.eq(row_train), r_wr.en.eq(row_valid),
                     r_rd.addr.eq(self.row), self.row_fires.eq(r_rd.data)]
        for k in range(lanes):
            m.submodules[f"col_trains{k}"] = c_mem = Memory(
                shape=unsigned(self._pulses), depth=chunks, init=[])
            c_wr, c_rd = c_mem.write_port(), c_mem.read_port()
            m.d.comb += [c_wr.addr.eq(chunk_at), c_wr.data.eq(col_train),
                         c_wr.en.eq(col_valid & (lane_at == k)),
                         c_rd.addr.eq(self.chunk), self.col_fires[k].eq(c_rd.data)]
        return m


@dataclass(frozen=True)
class PulseGeometry:
    """The integers of a tile's pulsed update (:func:`pulse_geometry`,
    :func:`xbarode.model.device.pulse_steps`): an up step at weight ``w`` is
    ``floor(2^exponent · up · b_up / 2^shift)`` weight LSBs and a down step
    ``floor(2^exponent · down · b_down / 2^shift)`` (:meth:`scale` of the products ``up ·
    b_up``, ``down · b_down``), with ``b_up = 2^(W−1) − w``, ``b_down = w + 2^(W−1)`` under
    ``soft_bounds`` and both ``2^(W−1)`` otherwise.

    Attributes
    ----------
    pulses : int
        Slots per train, ``BL``.
    exponent : int
        The nominal step ``Δw_min = 2^exponent`` weight LSBs.
    up, down : int
        The asymmetry's factors ``2^16 ± A``, ``A = floor(asymmetry·2^16 + 1/2)``.
    shift : int
        ``16 + W − 1``.
    soft_bounds : bool
        The steps scale with the weight's distance to the bound.
    descent : bool
        The step's direction: ``−sign(s)·sign(x)`` (the SGD step ``W − s xᵀ``, a training
        tile's, δ = s), else ``sign(s)·sign(x)`` (UPDATE's ``W + s xᵀ``, δ = −s).
    """

    pulses: int
    exponent: int
    up: int
    down: int
    shift: int
    soft_bounds: bool
    descent: bool = False

    def scale(self, value):
        """``floor(value · 2^exponent / 2^shift)`` (an int or a Value): one shift, since
        ``Δw_min`` is a power of two."""
        if self.exponent >= self.shift:
            return value << (self.exponent - self.shift)
        return value >> (self.shift - self.exponent)

    def steps(self, width: int) -> tuple[int, int]:
        """The hard-bound steps ``(up, down)`` (bounds ``2^(width−1)``) in weight LSBs."""
        half = 1 << (width - 1)
        return self.scale(self.up * half), self.scale(self.down * half)

    def largest_step(self, width: int) -> int:
        """The largest step of one coincidence at any weight of ``width`` bits."""
        if not self.soft_bounds:
            return max(self.steps(width))
        return self.scale(max(self.up, self.down) << width)


def pulse_geometry(device: DeviceModel, weight_format: Format, input_format: Format,
                   eta_shift: int, *, x_format: Format | None = None,
                   descent: bool = False) -> PulseGeometry:
    """The pulsed update of a tile whose UPDATE takes ``s`` in ``input_format`` and ``x`` in
    ``x_format`` (default ``input_format``) with the learning rate ``2^-eta_shift``: the
    model's :func:`~xbarode.model.device.pulse_step` (its errors: a step below one LSB, or too
    large) and :func:`~xbarode.model.device.pulse_steps`' integers; ``descent`` as
    :class:`PulseGeometry`'s.

    Raises
    ------
    ValueError
        As :func:`~xbarode.model.device.pulse_step`.
    """
    x_format = input_format if x_format is None else x_format
    step = pulse_step(weight_format, input_format, x_format, eta_shift, device.pulses)
    a = math.floor(device.asymmetry * 2**ASYMMETRY_FRAC + 0.5)
    return PulseGeometry(pulses=device.pulses, exponent=step.bit_length() - 1,
                         up=(1 << ASYMMETRY_FRAC) + a, down=(1 << ASYMMETRY_FRAC) - a,
                         shift=ASYMMETRY_FRAC + weight_format.width - 1,
                         soft_bounds=device.soft_bounds, descent=descent)
