"""The neural-ODE core's parts (hdl/core.py builds and joins them): its operation codes, the
banked vector memories and the host port.

Banking. A vector of ``m`` words is kept in ``lanes`` memories: lane ``k`` holds the entries
``j ≡ k (mod lanes)`` at address ``j // lanes`` (the tiles' own banking), so that a whole
chunk of ``lanes`` words moves in one cycle.
"""

from __future__ import annotations

from amaranth import Array, Module, Mux, Signal, signed
from amaranth.lib import enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .checked import CheckedComponent
from .fourier import FourierOp
from .fourier_bank import BankOp
from .ram import memory_attrs
from .tile import TileOp

__all__ = ["CoreOp", "HostPort", "ImageBuffer", "VectorBanks", "stream_lanes"]


class CoreOp(enum.Enum, shape=4):
    """Host operations of the core, selected on ``op`` when ``start`` is pulsed.

    =============== ===================================================================
    LOAD_A          stream in ``A`` (m·m weight words, row-major)
    LOAD_B          stream in ``Bᵀ`` (m·m weight words, row-major: ``B`` column by column)
    LOAD_C          stream in ``C`` (classes·m weight words, row-major)
    LOAD_D          stream in ``d`` (classes weight words)
    LOAD_IMAGE      stream in the image (H·W state words), channel 0 of ``z_0``; with
                    ``c`` channels the others are 0
    RUN             integrate and classify; ``done`` when the class is ready
    READ_LOGITS     stream out the logits (classes act words)
    READ_STATE      stream out ``z_N`` (m state words)
    READ_STATUS     stream out one word per step: Newton iterations (bits 0–7) and
                    converged (bit 8); explicit Euler steps read ``0x100``
    READ_TRAJECTORY stream out ``z_0 … z_N`` ((steps + 1)·m state words)
    LOAD_GRAD       (training) stream in ``∂L/∂logits`` (classes grad words, the host's
                    softmax minus one-hot)
    BACKWARD        (training) the discrete adjoint over the stored trajectory; adds this
                    image's gradients to the tiles' accumulators; ``∂L/∂z_0`` kept
    APPLY           (training) one SGD step on A, Bᵀ, C and d from the accumulated
                    gradients, which are cleared; with ``structure = "conv"`` one step
                    per kernel tap of A and Bᵀ (weights tied: they stay convolutions)
    READ_GRAD       (training) stream out the gradient sums (acc_width-bit words):
                    ``A`` (m·m), ``Bᵀ`` (m·m), ``C`` (classes·m), ``d`` (classes), then
                    ``∂L/∂z_0`` of the last BACKWARD (m grad words)
    READ_WEIGHTS    stream out the weights: ``A`` (m·m), ``Bᵀ`` (m·m), ``C`` (classes·m),
                    ``d`` (classes); on the Fourier path only ``C`` and ``d``
    =============== ===================================================================
    """

    LOAD_A = 0
    LOAD_B = 1
    LOAD_C = 2
    LOAD_D = 3
    LOAD_IMAGE = 4
    RUN = 5
    READ_LOGITS = 6
    READ_STATE = 7
    READ_STATUS = 8
    READ_TRAJECTORY = 9
    LOAD_GRAD = 10
    BACKWARD = 11
    APPLY = 12
    READ_GRAD = 13
    READ_WEIGHTS = 14


#: The operations the host port carries out on its own (streams in and out).
HOST_OPS = (CoreOp.LOAD_A, CoreOp.LOAD_B, CoreOp.LOAD_C, CoreOp.LOAD_D, CoreOp.LOAD_IMAGE,
            CoreOp.READ_LOGITS, CoreOp.READ_STATE, CoreOp.READ_STATUS,
            CoreOp.READ_TRAJECTORY, CoreOp.READ_WEIGHTS)
#: … and with ``training``.
HOST_TRAINING_OPS = (CoreOp.LOAD_GRAD, CoreOp.READ_GRAD)
#: Bits of a READ_STATUS word: Newton iterations (bits 0–7) and converged (bit 8). The core's
#: ``o`` stream is at least this wide, so that a core of narrow formats reads them whole.
STATUS_BITS = 9



def check_int(name, value, low):
    """Raise unless ``value`` is an integer (not a bool) ``>= low``; ``name`` in the message."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, not {value}")


def _check_channels(m, channels):
    """Raise unless ``channels`` divides the state's ``m`` words."""
    if m % channels:
        raise ValueError(f"channels ({channels}) must divide m ({m})")


def stream_lanes(mod, *, sink, data, addr, at, lane, count, lanes, last_word):
    """One word per cycle into stream ``sink`` from banked read ``data`` (one per lane): lane
    ``lane`` of the chunk at address ``at``, read one cycle ahead through ``addr``; the next
    address after the last lane or ``last_word``. Counts the words moved in ``count``.
    Returns the condition "a word moved" (``sink.ready``)."""
    mod.d.comb += [sink.valid.eq(1), addr.eq(at), sink.payload.eq(Array(data)[lane])]
    with mod.If(sink.ready):
        mod.d.sync += count.eq(count + 1)
        with mod.If((lane == lanes - 1) | last_word):
            mod.d.comb += addr.eq(at + 1)
            mod.d.sync += [at.eq(at + 1), lane.eq(0)]
        with mod.Else():
            mod.d.sync += lane.eq(lane + 1)
    return sink.ready


class VectorBanks(CheckedComponent):
    """A banked vector: ``lanes`` memories of ``depth`` words, one read address for all.

    Parameters
    ----------
    lanes : int
        Memories (lanes), ``>= 1``.
    depth : int
        Words per memory, ``>= 1``.
    width : int
        Word width (signed), ``>= 1``.

    Attributes
    ----------
    rd_addr : In(range(depth))
        The address every lane reads.
    rd_data : Out(signed(width)).array(lanes)
        Each lane's word at the ``rd_addr`` of the cycle before.
    wr_addr : In(range(depth)).array(lanes)
    wr_data : In(signed(width)).array(lanes)
    wr_en : In(1).array(lanes)
        Lane ``k`` writes ``wr_data[k]`` at ``wr_addr[k]`` at the edge where ``wr_en[k]``
        is high.

    Notes
    -----
    Latency 1: a read returns the word at the next edge; a word written at an edge is read
    from the cycle after (the read ports are not transparent: a read and a write of the same
    address at the same edge return the old word).
    """

    @staticmethod
    def check_parameters(*, lanes: int, depth: int, width: int) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        for name, value in (("lanes", lanes), ("depth", depth), ("width", width)):
            check_int(name, value, 1)

    def __init__(self, *, lanes: int, depth: int, width: int):
        self._lanes, self._depth, self._width = lanes, depth, width
        super().__init__({
            "rd_addr": In(range(depth)),
            "rd_data": Out(signed(width)).array(lanes),
            "wr_addr": In(range(depth)).array(lanes),
            "wr_data": In(signed(width)).array(lanes),
            "wr_en": In(1).array(lanes),
        })

    @property
    def lanes(self) -> int:
        """Memories (lanes)."""
        return self._lanes

    @property
    def depth(self) -> int:
        """Words per memory."""
        return self._depth

    @property
    def width(self) -> int:
        """Word width."""
        return self._width

    def elaborate(self, platform):
        m = Module()
        for k in range(self._lanes):
            m.submodules[f"lane{k}"] = mem = Memory(
                shape=signed(self._width), depth=self._depth, init=[],
                attrs=memory_attrs(self._depth, self._width))
            rd, wr = mem.read_port(), mem.write_port()
            m.d.comb += [rd.addr.eq(self.rd_addr), rd.en.eq(1), self.rd_data[k].eq(rd.data),
                         wr.addr.eq(self.wr_addr[k]), wr.data.eq(self.wr_data[k]),
                         wr.en.eq(self.wr_en[k])]
        return m


class ImageBuffer(CheckedComponent):
    """The image buffer: ``z_0`` of the next RUN, banked like the state.

    Written a word at a time from the core's ``image`` stream (at any time, also while the
    core runs: the next image arrives while RUN works on this one) or by LOAD_IMAGE
    (``wr_*``, a word per cycle at the host port's addresses); read by RUN's start a chunk per
    cycle.

    Parameters
    ----------
    m, lanes : int
        Words of the state it is read as, lanes (banking); each ``>= 1``.
    width : int
        Word width (the state format's), ``>= 1``.
    channels : int
        Channels of the state, dividing ``m``: an image is channel 0, its first ``m/channels``
        words; the others are never written and read 0 (the augmented state's zeros).

    Attributes
    ----------
    image : In(stream.Signature(signed(width)))
        Images, ``m/channels`` words each in order. Ready unless ``lock``.
    arriving : Out(1)
        Some but not all words of an image have come on ``image``.
    lock : In(1)
        No word is taken from ``image`` (RUN reads the buffer, or LOAD_IMAGE writes it).
    discard : In(1)
        Forget the words of an image that has not fully arrived (the next word on ``image``
        is an image's first).
    rd_addr : In(range(chunks))
    rd_data : Out(signed(width)).array(lanes)
        A chunk, at the ``rd_addr`` of the cycle before.
    wr_addr : In(range(chunks))
    wr_data : In(signed(width))
    wr_en : In(1).array(lanes)
        LOAD_IMAGE's words: ``wr_data`` at ``wr_addr`` of lane ``k`` where ``wr_en[k]``.

    Notes
    -----
    Latency: a word taken at an edge is read from the next cycle; ``arriving`` falls in the
    cycle after an image's last word is taken.
    """

    @staticmethod
    def check_parameters(*, m: int, lanes: int, width: int, channels: int = 1) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        for name, value in (("m", m), ("lanes", lanes), ("width", width),
                            ("channels", channels)):
            check_int(name, value, 1)
        _check_channels(m, channels)

    def __init__(self, *, m: int, lanes: int, width: int, channels: int = 1):
        self._m, self._lanes, self._width, self._channels = m, lanes, width, channels
        chunks = -(-m // lanes)
        self._chunks = chunks
        super().__init__({
            "image": In(stream.Signature(signed(width))),
            "arriving": Out(1), "lock": In(1), "discard": In(1),
            "rd_addr": In(range(max(chunks + 1, 2))),
            "rd_data": Out(signed(width)).array(lanes),
            "wr_addr": In(range(max(chunks, 2))),
            "wr_data": In(signed(width)),
            "wr_en": In(1).array(lanes),
        })

    @property
    def m(self) -> int:
        """Words of the state it is read as."""
        return self._m

    @property
    def channels(self) -> int:
        """Channels of the state (an image is channel 0)."""
        return self._channels

    @property
    def lanes(self) -> int:
        """Lanes (banking)."""
        return self._lanes

    def elaborate(self, platform):
        mod = Module()
        m, lanes = self._m // self._channels, self._lanes
        # The banks hold the image's chunks only (channel 0 comes first); a chunk beyond them
        # is channel 1's and later, never written: it reads 0 without a memory behind it.
        held = -(-m // lanes)
        mod.submodules.banks = banks = VectorBanks(lanes=lanes, depth=held, width=self._width)
        count = Signal(range(m))
        lane = Signal(range(max(lanes, 2)))
        addr = Signal(range(max(held, 2)))
        mod.d.comb += [banks.rd_addr.eq(self.rd_addr), self.arriving.eq(count != 0),
                       self.image.ready.eq(~self.lock)]
        words = list(banks.rd_data)
        if held < self._chunks:
            beyond = Signal()                # the read of the cycle before was past the image
            mod.d.sync += beyond.eq(self.rd_addr >= held)
            words = [Mux(beyond, 0, word) for word in words]
        for k in range(lanes):
            mod.d.comb += self.rd_data[k].eq(words[k])
            with mod.If(self.wr_en[k]):
                mod.d.comb += [banks.wr_addr[k].eq(self.wr_addr), banks.wr_data[k].eq(self.wr_data),
                               banks.wr_en[k].eq(1)]
            with mod.Elif(self.image.valid & ~self.lock & (lane == k)):
                mod.d.comb += [banks.wr_addr[k].eq(addr), banks.wr_data[k].eq(self.image.payload),
                               banks.wr_en[k].eq(1)]
        with mod.If(self.discard):
            mod.d.sync += [count.eq(0), lane.eq(0), addr.eq(0)]
        with mod.Elif(self.image.valid & ~self.lock):
            with mod.If(count == m - 1):
                mod.d.sync += [count.eq(0), lane.eq(0), addr.eq(0)]
            with mod.Else():
                mod.d.sync += count.eq(count + 1)
                with mod.If(lane == lanes - 1):
                    mod.d.sync += [lane.eq(0), addr.eq(addr + 1)]
                with mod.Else():
                    mod.d.sync += lane.eq(lane + 1)
        return mod


class HostPort(CheckedComponent):
    """The core's stream operations: loads into the tiles and the state banks, reads out of
    the tiles, the registers and the banks.

    Started (``start``, ``op``) by the core for the operations of :data:`HOST_OPS` (and
    :data:`HOST_TRAINING_OPS` with ``training``); ``done`` pulses in the cycle the last word
    moves (or the last tile is done), so the core passes it on as its own.

    ============================== ========================================================
    LOAD_A, LOAD_B, LOAD_C, LOAD_D start the tile (tile 0, 1, 2 = A, B, C) with LOAD_W (A
                                   and B on the Fourier path: LOAD_SPECTRUM), LOAD_BIAS
                                   for LOAD_D; ``i`` passes to ``tile_i`` until it is done
    LOAD_GRAD                      the same into C with LOAD_S
    LOAD_IMAGE                     ``m/channels`` words (channel 0) from ``i`` to ``image_*``
    READ_LOGITS, READ_STATUS       ``logits`` or ``status`` to ``o``
    READ_STATE, READ_TRAJECTORY    the trajectory banks (``traj_*``) from ``z_N`` or ``z_0``
    READ_WEIGHTS, READ_GRAD        each tile's READ_W or READ_G (A, B, C; on the Fourier
                                   path C only) passed from ``tile_o`` to ``o``; READ_GRAD
                                   then ``∂L/∂z_0`` from the λ banks (``lam_*``)
    ============================== ========================================================

    Parameters
    ----------
    m, lanes, steps, classes : int
        State words, lanes (banking), Euler steps, classes; each ``>= 1``.
    word, out_word : int
        Widths of ``i`` and ``o``.
    state_width, act_width, grad_width : int
        Widths of a state word (``image_data``, ``traj_data``), an act word (``logits``) and
        a gradient word (``lam_data``).
    fourier : bool
        A and B are Fourier units (LOAD_SPECTRUM; READ_WEIGHTS reads C only).
    channels : int
        Channels of the state, dividing ``m`` (more than one on the Fourier path only: A and B
        are :class:`~xbarode.hdl.fourier_bank.FourierBank` units, their LOAD_SPECTRUM a
        :class:`~xbarode.hdl.fourier_bank.BankOp`).
    training : bool
        The core trains (LOAD_GRAD, READ_GRAD).

    Attributes
    ----------
    i : In(stream.Signature(signed(word)))
    o : Out(stream.Signature(signed(out_word)))
        The core's streams.
    op : In(CoreOp)
    start : In(1)
        Start ``op`` (a host operation); only while idle.
    done : Out(1)
        The operation ends in this cycle.
    tile_op : Out(4)
        The operation code of the tile started (TileOp or FourierOp values); a register.
    tile_start : Out(1).array(3)
        Start tile A, B or C with ``tile_op``; registers, high in the cycle after the one in
        which the host port decides to start the tile (after ``start``, or after the previous
        tile's ``done`` in READ_WEIGHTS and READ_GRAD).
    tile_done : In(1).array(3)
        The tiles' ``done``.
    tile_i : Out(stream.Signature(signed(word))).array(3)
    tile_o : In(stream.Signature(signed(out_word))).array(3)
        The tiles' ``i`` and ``o`` streams.
    image_addr : Out(range(chunks))
    image_data : Out(signed(state_width))
    image_en : Out(1).array(lanes)
        LOAD_IMAGE: write ``image_data`` at ``image_addr`` of lane ``k``'s banks.
    logits : In(signed(act_width)).array(classes)
    status : In(STATUS_BITS).array(steps)
        The registers READ_LOGITS and READ_STATUS stream out.
    traj_addr : Out(range((steps + 2)·chunks + 1))
    traj_data : In(signed(state_width)).array(lanes)
        The trajectory banks' read address and words (``z_n`` at ``n·chunks``).
    lam_addr : Out(range(chunks + 1))
    lam_data : In(signed(grad_width)).array(lanes)
        The λ banks' (training).

    Notes
    -----
    Latency: ``done`` with the last word; loads and reads from the banks move one word per
    cycle the stream allows (their first read is issued in the cycle after ``start``);
    READ_LOGITS and READ_STATUS one word per cycle from the cycle after ``start``; the tile
    operations as fast as the tiles stream, each tile started one cycle after the decision
    (so a tile's first word moves two cycles after ``start`` at the earliest).
    """

    @staticmethod
    def check_parameters(*, m: int, lanes: int, steps: int, classes: int, word: int,
                         out_word: int, state_width: int, act_width: int, grad_width: int,
                         fourier: bool = False, channels: int = 1,
                         training: bool = False) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        for name, value in (("m", m), ("lanes", lanes), ("steps", steps), ("classes", classes),
                            ("word", word), ("out_word", out_word),
                            ("state_width", state_width), ("act_width", act_width),
                            ("grad_width", grad_width), ("channels", channels)):
            check_int(name, value, 1)
        _check_channels(m, channels)
        if fourier and training:
            raise ValueError("the Fourier path is for inference: fourier and training "
                             "exclude each other")
        if channels > 1 and not fourier:
            raise ValueError("channels > 1 need the Fourier path's banks (fourier)")

    def __init__(self, *, m: int, lanes: int, steps: int, classes: int, word: int,
                 out_word: int, state_width: int, act_width: int, grad_width: int,
                 fourier: bool = False, channels: int = 1, training: bool = False):
        self._m, self._lanes, self._steps, self._classes = m, lanes, steps, classes
        self._fourier, self._training = bool(fourier), bool(training)
        self._channels = channels
        chunks = -(-m // lanes)
        self._chunks = chunks
        super().__init__({
            "i": In(stream.Signature(signed(word))),
            "o": Out(stream.Signature(signed(out_word))),
            "op": In(CoreOp),
            "start": In(1),
            "done": Out(1),
            "tile_op": Out(4),
            "tile_start": Out(1).array(3),
            "tile_done": In(1).array(3),
            "tile_i": Out(stream.Signature(signed(word))).array(3),
            "tile_o": In(stream.Signature(signed(out_word))).array(3),
            "image_addr": Out(range(max(chunks, 2))),
            "image_data": Out(signed(state_width)),
            "image_en": Out(1).array(lanes),
            "logits": In(signed(act_width)).array(classes),
            "status": In(STATUS_BITS).array(steps),
            "traj_addr": Out(range((steps + 2) * chunks + 1)),
            "traj_data": In(signed(state_width)).array(lanes),
            "lam_addr": Out(range(max(chunks + 1, 2))),
            "lam_data": In(signed(grad_width)).array(lanes),
        })

    @property
    def m(self) -> int:
        """State words."""
        return self._m

    @property
    def lanes(self) -> int:
        """Lanes of the banks."""
        return self._lanes

    @property
    def steps(self) -> int:
        """Euler steps (trajectory length ``steps + 1``)."""
        return self._steps

    @property
    def classes(self) -> int:
        """Classes (logits)."""
        return self._classes

    @property
    def fourier(self) -> bool:
        """A and B are Fourier units."""
        return self._fourier

    @property
    def channels(self) -> int:
        """Channels of the state (LOAD_IMAGE writes channel 0)."""
        return self._channels

    @property
    def training(self) -> bool:
        """LOAD_GRAD and READ_GRAD are carried out."""
        return self._training

    def _start_ops(self, mod, regs):
        """The IDLE state's decoding of ``op``."""
        m, steps, fourier = self._m, self._steps, self._fourier
        load_ab = TileOp.LOAD_W
        if fourier:
            load_ab = BankOp.LOAD_SPECTRUM if self._channels > 1 else FourierOp.LOAD_SPECTRUM

        def start_tile(k, code):
            mod.d.comb += [regs["tile_op"].eq(code), regs["tile_start"][k].eq(1)]

        with mod.Switch(self.op):
            loads = [(CoreOp.LOAD_A, 0, load_ab), (CoreOp.LOAD_B, 1, load_ab),
                     (CoreOp.LOAD_C, 2, TileOp.LOAD_W), (CoreOp.LOAD_D, 2, TileOp.LOAD_BIAS)]
            if self._training:
                loads.append((CoreOp.LOAD_GRAD, 2, TileOp.LOAD_S))
            for op, k, code in loads:
                with mod.Case(op):
                    start_tile(k, code)
                    mod.next = f"PASS_{op.name}"
            with mod.Case(CoreOp.LOAD_IMAGE):
                mod.next = "LOAD_IMAGE"
            with mod.Case(CoreOp.READ_LOGITS, CoreOp.READ_STATUS):
                mod.next = "READ_SMALL"
            with mod.Case(CoreOp.READ_STATE):
                mod.d.sync += regs["total_words"].eq(m)
                mod.next = "READ_ADDR"
            with mod.Case(CoreOp.READ_TRAJECTORY):
                mod.d.sync += regs["total_words"].eq((steps + 1) * m)
                mod.next = "READ_ADDR"
            with mod.Case(CoreOp.READ_WEIGHTS):
                start_tile(2 if fourier else 0, TileOp.READ_W)
                mod.next = "READ_TILES_C" if fourier else "READ_TILES_A"
            if self._training:
                with mod.Case(CoreOp.READ_GRAD):
                    start_tile(0, TileOp.READ_G)
                    mod.next = "READ_TILES_A"

    def elaborate(self, platform):
        mod = Module()
        m, lanes, chunks, steps = self._m, self._lanes, self._chunks, self._steps
        count = Signal(range((steps + 1) * m + 1))
        lane = Signal(range(max(lanes, 2)))
        waddr = Signal(range(max((steps + 1) * chunks, 2)))
        total_words = Signal(range((steps + 1) * m + 1))
        pos = Signal(range(max(m, 2)))     # word within a state vector (READ_STATE, …)
        op_reg = Signal(CoreOp)
        # A tile starts in the cycle after the decision: the decoder of ``op`` and of this
        # FSM's state stays in front of these registers, not of the tiles' control.
        tile_op, tile_start = Signal(4), Signal(3)
        mod.d.sync += [self.tile_op.eq(tile_op)]
        mod.d.sync += [self.tile_start[k].eq(tile_start[k]) for k in range(3)]
        regs = {"total_words": total_words, "tile_op": tile_op, "tile_start": tile_start}

        with mod.FSM():
            with mod.State("IDLE"):
                with mod.If(self.start):
                    mod.d.sync += [count.eq(0), lane.eq(0), waddr.eq(0), pos.eq(0),
                                   op_reg.eq(self.op)]
                    self._start_ops(mod, regs)

            # Weight loads: the host's stream goes straight to the tile.
            passes = [(CoreOp.LOAD_A, 0), (CoreOp.LOAD_B, 1), (CoreOp.LOAD_C, 2),
                      (CoreOp.LOAD_D, 2)] + ([(CoreOp.LOAD_GRAD, 2)] if self._training else [])
            for op, k in passes:
                with mod.State(f"PASS_{op.name}"):
                    wiring.connect(mod, wiring.flipped(self.i), wiring.flipped(self.tile_i[k]))
                    with mod.If(self.tile_done[k]):
                        mod.d.comb += self.done.eq(1)
                        mod.next = "IDLE"

            # z_0: one word per lane, a chunk after the other.
            with mod.State("LOAD_IMAGE"):
                mod.d.comb += [self.i.ready.eq(1), self.image_addr.eq(waddr),
                               self.image_data.eq(self.i.payload)]
                with mod.If(self.i.valid):
                    for k in range(lanes):
                        mod.d.comb += self.image_en[k].eq(lane == k)
                    mod.d.sync += count.eq(count + 1)
                    last = count == m // self._channels - 1     # channel 0's last word
                    with mod.If((lane == lanes - 1) | last):
                        mod.d.sync += [lane.eq(0), waddr.eq(waddr + 1)]
                    with mod.Else():
                        mod.d.sync += lane.eq(lane + 1)
                    with mod.If(last):
                        mod.d.comb += self.done.eq(1)
                        mod.next = "IDLE"

            self._tile_reads(mod, op_reg, regs | {"count": count, "lane": lane,
                                                   "waddr": waddr})

            # READ_LOGITS, READ_STATUS: from registers.
            with mod.State("READ_SMALL"):
                is_logits = op_reg == CoreOp.READ_LOGITS
                last = Mux(is_logits, self._classes - 1, steps - 1)
                mod.d.comb += [self.o.valid.eq(1),
                               self.o.payload.eq(Mux(is_logits, Array(self.logits)[count],
                                                     Array(self.status)[count]))]
                with mod.If(self.o.ready):
                    mod.d.sync += count.eq(count + 1)
                    with mod.If(count == last):
                        mod.d.comb += self.done.eq(1)
                        mod.next = "IDLE"

            # READ_STATE, READ_TRAJECTORY: the trajectory banks, one word per cycle.
            with mod.State("READ_ADDR"):
                base = Mux(op_reg == CoreOp.READ_STATE, steps * chunks, 0)
                mod.d.comb += self.traj_addr.eq(base)
                mod.d.sync += waddr.eq(base)
                mod.next = "READ_DATA"
            with mod.State("READ_DATA"):
                moved = stream_lanes(mod, sink=self.o, data=self.traj_data,
                                     addr=self.traj_addr, at=waddr, lane=lane, count=count,
                                     lanes=lanes, last_word=pos == m - 1)
                with mod.If(moved):
                    mod.d.sync += pos.eq(Mux(pos == m - 1, 0, pos + 1))
                    with mod.If(count == total_words - 1):
                        mod.d.comb += self.done.eq(1)
                        mod.next = "IDLE"
        return mod

    def _tile_reads(self, mod, op_reg, regs):
        """READ_WEIGHTS, READ_GRAD: the tiles' weights or gradient sums one after the other
        (C's with the bias's); READ_GRAD then adds ∂L/∂z_0 from the λ banks."""
        count, lane, at = regs["count"], regs["lane"], regs["waddr"]
        tile_read = Mux(op_reg == CoreOp.READ_WEIGHTS, TileOp.READ_W, TileOp.READ_G)
        reads = [("C", 2)] if self._fourier else [("A", 0), ("B", 1), ("C", 2)]
        for name, k in reads:
            with mod.State(f"READ_TILES_{name}"):
                wiring.connect(mod, wiring.flipped(self.tile_o[k]), wiring.flipped(self.o))
                with mod.If(self.tile_done[k]):
                    if k < 2:
                        mod.d.comb += [regs["tile_op"].eq(tile_read),
                                       regs["tile_start"][k + 1].eq(1)]
                        mod.next = f"READ_TILES_{'ABC'[k + 1]}"
                    elif self._training:
                        with mod.If(op_reg == CoreOp.READ_GRAD):
                            mod.d.sync += [at.eq(0), lane.eq(0), count.eq(0)]
                            mod.next = "READ_GRAD_Z"
                        with mod.Else():
                            mod.d.comb += self.done.eq(1)
                            mod.next = "IDLE"
                    else:
                        mod.d.comb += self.done.eq(1)
                        mod.next = "IDLE"
        if self._training:
            with mod.State("READ_GRAD_Z"):
                last = count == self._m - 1
                moved = stream_lanes(mod, sink=self.o, data=self.lam_data, addr=self.lam_addr,
                                     at=at, lane=lane, count=count, lanes=self._lanes,
                                     last_word=last)
                with mod.If(moved & last):
                    mod.d.comb += self.done.eq(1)
                    mod.next = "IDLE"
