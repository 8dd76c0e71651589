"""The core's pulsed SGD step (a ``[device]`` table with ``pulses``): the store of every
sample's update vectors of one tile, and the walk that drives them through the tile's pulsed
UPDATE in the model's order (:meth:`xbarode.model.fixed_net.FixedNetwork.sgd_step`).

The model's pulsed step drives each tile with every sample's pair ``(δ, x)`` in the order
:meth:`~xbarode.model.fixed_net.FixedNetwork.backward` lists them: for A and B step by step
from the last, each step's pairs in the order of the batch's images; for C the images' pairs.
The core takes its images one at a time (BACKWARD per image), so it keeps the pairs: while
BACKWARD runs, the words written into a tile's ``s`` and ``x`` are written into a
:class:`PairStore` too, at the slot of the image and step (the last words written before the
step's ACCUMULATE are the pair the tile accumulates); APPLY walks the slots in the model's
order, copying each pair back into the tile's ``s`` and ``x`` and starting a pulsed UPDATE. The
weights change only at APPLY, after every image's adjoint, as in the model.
"""

from __future__ import annotations

from amaranth import Module, Signal, signed
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .checked import CheckedComponent
from .core_parts import check_int

__all__ = ["PairStore"]


class PairStore(CheckedComponent):
    """A tile's pairs ``(s, x)`` of a mini-batch, written slot by slot, walked by APPLY.

    Slot ``b·stride + j`` holds pair ``j`` of image ``b`` (``stride`` pairs per image: the
    steps for A and B, 1 for C). The walk takes ``j = 0 … stride − 1`` and for each the images
    ``b = 0, 1, …`` whose slot was written (``b·stride + j`` below the capture counter).

    Parameters
    ----------
    rows, cols, lanes : int
        The tile's rows (words of ``s``), columns (words of ``x``) and lanes (``x`` moves a
        chunk of ``lanes`` words per cycle, ``C = ceil(cols / lanes)`` chunks), each ``>= 1``.
    slots : int
        Pairs held: ``batch · stride``.
    stride : int
        Pairs per image, ``>= 1``, dividing ``slots``.
    s_width, x_width : int
        Widths of the stored words (the update formats'); the tile's ports are
        ``s_port``/``x_port`` bits wide (at least as wide; the words are sign-extended).
    s_port, x_port : int
        Widths of the tile's ``s_in`` and ``x_side_data``.

    Attributes
    ----------
    cap_s_valid, cap_s_data, cap_s_restart : In
        A word written into the tile's ``s`` (at its count since the last restart or start of
        the tile, ``cap_s_restart``).
    cap_x_addr, cap_x_en, cap_x_data : In
        A chunk written into the tile's ``x`` (its side port's words).
    advance : In(1)
        The current pair is complete: the next words go to the next slot.
    dropped : Out(1)
        The pair completed by ``advance`` in this cycle had no slot (every slot was written
        since the last ``clear``): it is lost, and the core raises ``overflow`` for it.
    clear : In(1)
        Forget every pair (the capture counter to 0).
    start : In(1)
        Start the walk (captures are ignored while it runs).
    busy, done : Out(1)
        The walk runs; its last cycle.
    s_valid, s_data, s_restart : Out
        The walk's words for the tile's ``s_in`` (``s_restart`` before each pair's).
    x_addr, x_en, x_data : Out
        The walk's chunks for the tile's ``x_side_*``.
    t_start : Out(1)
        Start the tile's UPDATE (its ``s`` and ``x`` hold the pair).
    t_done : In(1)
        The tile's ``done``.

    Notes
    -----
    Latency of the walk, from the cycle after ``start`` to ``done`` inclusive:
    ``P·(max(rows, C) + 2 + U) + stride`` cycles for ``P`` pairs written, ``U`` the tile's
    pulsed UPDATE (:class:`~xbarode.hdl.tile.CrossbarTile`: ``rows·C + 7 + max(rows, cols) +
    2``): per pair one cycle to choose the slot, ``max(rows, C) + 1`` of copying (one word of
    ``s`` and one chunk of ``x`` per cycle, read a cycle ahead) and the UPDATE from the cycle
    that starts it; one cycle per further ``j``, and the last (``done``).
    """

    @staticmethod
    def check_parameters(*, rows: int, cols: int, lanes: int, slots: int, stride: int,
                         s_width: int, x_width: int, s_port: int, x_port: int) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        for name, value in (("rows", rows), ("cols", cols), ("lanes", lanes),
                            ("slots", slots), ("stride", stride), ("s_width", s_width),
                            ("x_width", x_width), ("s_port", s_port), ("x_port", x_port)):
            check_int(name, value, 1)
        if slots % stride:
            raise ValueError(f"stride ({stride}) must divide slots ({slots})")
        if s_port < s_width or x_port < x_width:
            raise ValueError("the tile's ports must be at least as wide as the stored words")

    def __init__(self, *, rows: int, cols: int, lanes: int, slots: int, stride: int,
                 s_width: int, x_width: int, s_port: int, x_port: int):
        self._rows, self._cols, self._lanes = rows, cols, lanes
        self._chunks = -(-cols // lanes)
        self._slots, self._stride = slots, stride
        self._s_width, self._x_width = s_width, x_width
        chunks = self._chunks
        super().__init__({
            "cap_s_valid": In(1), "cap_s_data": In(signed(s_port)), "cap_s_restart": In(1),
            "cap_x_addr": In(range(max(chunks, 2))), "cap_x_en": In(lanes),
            "cap_x_data": In(signed(x_port)).array(lanes),
            "advance": In(1), "dropped": Out(1), "clear": In(1),
            "start": In(1), "busy": Out(1), "done": Out(1),
            "s_valid": Out(1), "s_data": Out(signed(s_port)), "s_restart": Out(1),
            "x_addr": Out(range(max(chunks, 2))), "x_en": Out(lanes),
            "x_data": Out(signed(x_port)).array(lanes),
            "t_start": Out(1), "t_done": In(1),
        })

    def elaborate(self, platform):
        mod = Module()
        rows, chunks, lanes, slots = self._rows, self._chunks, self._lanes, self._slots
        s_mem = Memory(shape=signed(self._s_width), depth=slots * rows, init=[])
        mod.submodules.s_store = s_mem
        s_wr, s_rd = s_mem.write_port(), s_mem.read_port()
        x_wr, x_rd = [], []
        for k in range(lanes):
            mem = Memory(shape=signed(self._x_width), depth=slots * chunks, init=[])
            mod.submodules[f"x_store{k}"] = mem
            x_wr.append(mem.write_port())
            x_rd.append(mem.read_port())
        # Capture: the slot's first word and chunk addresses (slot·rows, slot·C), the count.
        cap_slot = Signal(range(slots + 1))
        cap_s_base = Signal(range(slots * rows + 1))
        cap_x_base = Signal(range(slots * chunks + 1))
        cap_count = Signal(range(rows + 1))
        walking = Signal()
        with mod.If(self.clear):
            mod.d.sync += [cap_slot.eq(0), cap_s_base.eq(0), cap_x_base.eq(0)]
        with mod.Elif(self.advance & (cap_slot < slots)):
            mod.d.sync += [cap_slot.eq(cap_slot + 1), cap_s_base.eq(cap_s_base + rows),
                           cap_x_base.eq(cap_x_base + chunks)]
        # A pair past the last slot is not kept: say so rather than train on fewer pairs.
        mod.d.comb += self.dropped.eq(self.advance & ~self.clear & (cap_slot == slots))
        capturing = ~walking & (cap_slot < slots)
        with mod.If(self.cap_s_restart):
            mod.d.sync += cap_count.eq(0)
        with mod.Elif(self.cap_s_valid & capturing & (cap_count < rows)):
            mod.d.comb += [s_wr.addr.eq(cap_s_base + cap_count), s_wr.data.eq(self.cap_s_data),
                           s_wr.en.eq(1)]
            mod.d.sync += cap_count.eq(cap_count + 1)
        for k in range(lanes):
            with mod.If(self.cap_x_en[k] & capturing):
                mod.d.comb += [x_wr[k].addr.eq(cap_x_base + self.cap_x_addr),
                               x_wr[k].data.eq(self.cap_x_data[k]), x_wr[k].en.eq(1)]
        self._walk(mod, s_rd, x_rd, cap_slot, walking)
        return mod

    def _walk(self, mod, s_rd, x_rd, cap_slot, walking):
        """APPLY's walk over the written slots in the model's order."""
        rows, chunks, lanes, stride = self._rows, self._chunks, self._lanes, self._stride
        slots = self._slots
        j = Signal(range(stride + 1))
        slot = Signal(range(slots + stride + 1))
        s_base = Signal(range((slots + stride) * rows + 1))
        x_base = Signal(range((slots + stride) * chunks + 1))
        t = Signal(range(max(rows, chunks) + 2))
        copy_cycles = max(rows, chunks)
        mod.d.comb += [s_rd.addr.eq(s_base + t), *(port.addr.eq(x_base + t) for port in x_rd)]
        with mod.FSM():
            with mod.State("IDLE"):
                with mod.If(self.start):
                    mod.d.sync += [walking.eq(1), j.eq(0), slot.eq(0), s_base.eq(0),
                                   x_base.eq(0)]
                    mod.next = "NEXT"
            with mod.State("NEXT"):   # choose the slot: image b of pair j, or pair j + 1
                mod.d.comb += self.busy.eq(1)
                with mod.If(slot < cap_slot):
                    mod.d.sync += t.eq(0)
                    mod.d.comb += self.s_restart.eq(1)
                    mod.next = "COPY"
                with mod.Elif(j + 1 < stride):
                    mod.d.sync += [j.eq(j + 1), slot.eq(j + 1), s_base.eq((j + 1) * rows),
                                   x_base.eq((j + 1) * chunks)]
                with mod.Else():
                    mod.d.comb += self.done.eq(1)
                    mod.d.sync += walking.eq(0)
                    mod.next = "IDLE"
            with mod.State("COPY"):   # word t - 1 and chunk t - 1 (read the cycle before)
                mod.d.comb += self.busy.eq(1)
                mod.d.sync += t.eq(t + 1)
                with mod.If((t >= 1) & (t <= rows)):
                    mod.d.comb += [self.s_valid.eq(1), self.s_data.eq(s_rd.data)]
                with mod.If((t >= 1) & (t <= chunks)):
                    mod.d.comb += self.x_addr.eq(t - 1)
                    for k in range(lanes):
                        # The lanes past the last column stay as the adjoint leaves them.
                        with mod.If((t - 1) * lanes + k < self._cols):
                            mod.d.comb += [self.x_en[k].eq(1), self.x_data[k].eq(x_rd[k].data)]
                with mod.If(t == copy_cycles):
                    mod.next = "UPDATE_START"
            with mod.State("UPDATE_START"):
                mod.d.comb += [self.busy.eq(1), self.t_start.eq(1)]
                mod.next = "UPDATE"
            with mod.State("UPDATE"):
                mod.d.comb += self.busy.eq(1)
                with mod.If(self.t_done):
                    mod.d.sync += [slot.eq(slot + stride), s_base.eq(s_base + stride * rows),
                                   x_base.eq(x_base + stride * chunks)]
                    mod.next = "NEXT"
