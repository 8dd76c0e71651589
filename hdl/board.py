"""The board: the core behind a UART and a framed command protocol (docs/board.md).

:class:`CommandEngine` turns the parser's frames into the core's operations, the way the
outside host of ``tests/cocotb_outside_host.py`` drives the generated core: ``op`` and a
one-cycle ``start`` while ``busy`` is low, the operation's words on ``i`` (LOAD_*) or taken
from ``o`` (READ_*), every operation waited for to its ``done``. :class:`BoardTop` joins the
UART receiver, a byte FIFO, the parser, the engine, the reply framer, the transmitter, the
cycle counter and the core. :class:`Ulx3sTop` puts it on the ULX3S's pins.
"""

from __future__ import annotations

import enum

from amaranth import Array, Cat, Elaboratable, Module, Mux, Signal, Value
from amaranth.lib import fifo, io, stream, wiring
from amaranth.lib.wiring import In, Out

from xbarode.model.core_config import CoreConfig

from .checked import CheckedComponent
from .link import END, HEADER, REPLY, CycleCounter, FrameParser, ReplyFramer
from .uart import UartRx, UartTx

__all__ = ["PROTOCOL_VERSION", "BoardOp", "BoardTop", "CommandEngine", "Status", "Ulx3sTop",
           "board_info", "check_baud", "core_operations"]

PROTOCOL_VERSION = 1
#: A core operation ``k`` is board op ``CORE_BASE + k``.
CORE_BASE = 0x10


class BoardOp(enum.IntEnum):
    """The board's own commands (docs/board.md); core operation ``k`` is ``0x10 + k``."""

    INFO = 0x01
    STATUS = 0x02
    CLEAR = 0x03


class Status(enum.IntEnum):
    """A reply's status byte."""

    OK = 0
    BAD_CRC = 1
    TIMEOUT = 2
    UNKNOWN_OP = 3
    BAD_LENGTH = 4
    BAD_STATE = 5


#: Bits of the state flags (STATUS's first byte).
LOADED_ALL = 0x1F     # A, B, C, d, image
RESULT = 0x20         # a RUN has completed


def core_operations(core) -> list[dict]:
    """The core's operations from its host interface (the manifest's ``operations``): per
    operation ``name``, ``code``, ``words_in``, ``words_out``."""
    from .interface import host_interface

    ops = host_interface(core).as_json()["operations"]
    return [{"name": op["name"], "code": op["code"],
             "words_in": sum(s["count"] for s in op["in"]),
             "words_out": sum(s["count"] for s in op["out"])} for op in ops]


def _nbytes(width: int) -> int:
    return (width + 7) // 8


def _stream_width(signature, name: str) -> int:
    return signature.members[name].signature.members["payload"].shape.width


def board_info(core) -> bytes:
    """INFO's reply payload for ``core``: protocol version, m (2 bytes, little-endian),
    classes, steps, bytes per word in (LOAD_*) and out (READ_*)."""
    c = core.config
    return bytes([PROTOCOL_VERSION, c.m & 0xFF, c.m >> 8, c.classes, c.steps,
                  _nbytes(_stream_width(core.signature, "i")),
                  _nbytes(_stream_width(core.signature, "o"))])


def _requires(op: dict) -> int:
    """The state flags an operation needs: weights and image for a compute operation, a RUN
    for a read of results, the weights for READ_WEIGHTS, nothing for a load."""
    if op["words_in"]:
        return 0
    if op["name"] == "READ_WEIGHTS":
        return 0x0F
    if op["words_out"]:
        return RESULT
    return LOADED_ALL


class CommandEngine(CheckedComponent):
    """Executes request frames on the core and answers each with exactly one reply.

    Parameters
    ----------
    core_signature : wiring.Signature
        The core's signature (:class:`~xbarode.hdl.core.Core`); the engine's ``core`` port is
        its flip, to be connected to the core.
    operations : list of dict
        :func:`core_operations` of the core.
    info : bytes
        INFO's reply payload.
    weights_built_in : bool
        The core was built with its weights (:class:`~xbarode.hdl.core.Core`'s ``weights``):
        the state flags start with A, B, C and d loaded, so RUN needs only an image.

    Attributes
    ----------
    header, payload, end : In
        From :class:`~xbarode.hdl.link.FrameParser`.
    reply, reply_data : Out
        To :class:`~xbarode.hdl.link.ReplyFramer`.
    core : In(core_signature)
        The core's host side (the engine drives ``op``, ``start``, ``clear``, ``i``, and
        takes ``o``; the ``image`` stream stays idle).
    flags : Out(8)
        Loaded A, B, C, d, image (bits 0–4), a RUN completed (bit 5), the core's overflow
        (6) and converged (7).
    error : Out(1)
        The last reply had an error status.
    run_start, run_done : Out(1)
        The start and done cycles of compute operations (for the cycle counter).
    cycles : In(32)
        The cycle counter's count.

    Notes
    -----
    Latency: a load's words reach the core as their last byte arrives; a compute operation
    starts in the cycle after its frame's last CRC byte is checked, and its reply header is
    offered in the cycle after its ``done``; a read starts the core's operation with its reply.
    """

    @staticmethod
    def check_parameters(core_signature, operations, info: bytes, *,
                         weights_built_in: bool = False) -> None:
        """The constructor's checks: ``operations`` with codes below 16 whose words fit one
        frame (65,535 bytes), ``info`` <= 16 bytes."""
        if any(not 0 <= op["code"] < 16 for op in operations):
            raise ValueError("operation codes must be in 0 … 15")
        sizes = {"words_in": _nbytes(_stream_width(core_signature, "i")),
                 "words_out": _nbytes(_stream_width(core_signature, "o"))}
        for op in operations:
            for key, nbytes in sizes.items():
                if op[key] * nbytes > 0xFFFF:
                    raise ValueError(f"{op['name']} moves {op[key] * nbytes} bytes; a frame "
                                     "holds at most 65535")
        if len(info) > 16:
            raise ValueError(f"info must be at most 16 bytes, not {len(info)}")
        if not isinstance(weights_built_in, bool):
            raise TypeError(f"weights_built_in must be a bool, not "
                            f"{type(weights_built_in).__name__}")

    def __init__(self, core_signature, operations, info: bytes, *,
                 weights_built_in: bool = False):
        self._ops = [dict(op) for op in operations]
        self._info = bytes(info)
        self._built_in = weights_built_in
        self._in_bytes = _nbytes(_stream_width(core_signature, "i"))
        self._out_bytes = _nbytes(_stream_width(core_signature, "o"))
        super().__init__({"header": In(stream.Signature(HEADER)),
                          "payload": In(stream.Signature(8)), "end": In(stream.Signature(END)),
                          "reply": Out(stream.Signature(REPLY)),
                          "reply_data": Out(stream.Signature(8)),
                          "core": In(core_signature), "flags": Out(8), "error": Out(1),
                          "run_start": Out(1), "run_done": Out(1), "cycles": In(32)})

    @property
    def operations(self) -> list[dict]:
        """The core's operations (copies)."""
        return [dict(op) for op in self._ops]

    @property
    def info(self) -> bytes:
        """INFO's reply payload."""
        return self._info

    @property
    def weights_built_in(self) -> bool:
        """The state flags start with the weights loaded."""
        return self._built_in

    def _decode(self, m, op):
        """Per op byte: known, payload bytes expected, words out, flags needed, kind."""
        known, length, words_out, needs = Signal(), Signal(24), Signal(24), Signal(8)
        kind = Signal(range(5))       # 0 load, 1 compute, 2 read, 3 INFO, 4 STATUS/CLEAR
        with m.Switch(op):
            for entry in self._ops:
                with m.Case(CORE_BASE + entry["code"]):
                    m.d.comb += [known.eq(1), needs.eq(_requires(entry)),
                                 length.eq(entry["words_in"] * self._in_bytes),
                                 words_out.eq(entry["words_out"])]
                    k = 0 if entry["words_in"] else (2 if entry["words_out"] else 1)
                    m.d.comb += kind.eq(k)
            for code in BoardOp:
                with m.Case(code):
                    m.d.comb += [known.eq(1), kind.eq(3 if code == BoardOp.INFO else 4)]
        return known, length, words_out, needs, kind

    def elaborate(self, platform):  # noqa: PLR0915 (one state machine, state by state)
        m = Module()
        core = self.core
        op = Signal(8)
        length = Signal(16)
        known, expect, words_out, needs, kind = self._decode(m, op)
        status = Signal(8)
        # Built-in weights: A, B, C and d (bits 0–3) are loaded from reset.
        loaded = Signal(6, init=0x0F if self._built_in else 0)
        fixed = Array(Signal(8, name=f"fixed{k}") for k in range(16))
        index = Signal(24)         # bytes of the reply payload sent, or words moved
        part = Signal(range(max(self._in_bytes, self._out_bytes) + 1))
        word = Signal(self._out_bytes * 8)
        word_in = Signal(self._in_bytes * 8)
        out_len = Signal(16)
        cls, conv, over, iters = Signal(8), Signal(), Signal(), Signal(16)
        errors = Signal(16)
        m.d.comb += self.flags.eq(Cat(loaded[:6], core.overflow, conv))
        bit = Signal(8)
        code = Value.cast(op - CORE_BASE)[:8]
        # The flag a load sets: A, B, C, d, image (codes 0–4); other loads have none.
        m.d.comb += bit.eq(Mux(code < 5, Value.cast(1) << code[:3], 0))
        rep = self.reply.payload
        m.d.comb += [rep.op.eq(op), rep.status.eq(status), rep.length.eq(out_len)]
        with m.If(self.reply.valid & self.reply.ready):
            m.d.sync += self.error.eq(status != Status.OK)
            with m.If(status != Status.OK):
                m.d.sync += errors.eq(errors + (errors != 0xFFFF))
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.header.ready.eq(1), self.end.ready.eq(~self.header.valid)]
                m.d.sync += [out_len.eq(0), index.eq(0), part.eq(0)]
                with m.If(self.header.valid):
                    m.d.sync += [op.eq(self.header.payload.op),
                                 length.eq(self.header.payload.length)]
                    m.next = "DECODE"
                with m.Elif(self.end.valid):
                    # A frame that timed out before its header: op 0.
                    m.d.sync += [op.eq(0), status.eq(Status.TIMEOUT)]
                    m.next = "REPLY"
            with m.State("DECODE"):
                m.d.sync += status.eq(Status.OK)
                with m.If(~known):
                    m.d.sync += status.eq(Status.UNKNOWN_OP)
                    m.next = "SKIP"
                with m.Elif(length != expect):
                    m.d.sync += status.eq(Status.BAD_LENGTH)
                    m.next = "SKIP"
                with m.Elif(kind == 0):
                    m.d.comb += [core.op.eq(op - CORE_BASE), core.start.eq(1)]
                    m.d.sync += loaded.eq(loaded & ~bit)
                    m.next = "LOAD"
                with m.Else():
                    m.next = "SKIP"
            with m.State("LOAD"):
                last = part == self._in_bytes - 1
                m.d.comb += [core.i.valid.eq(self.payload.valid & last),
                             core.i.payload.eq(Cat(word_in[:8 * (self._in_bytes - 1)],
                                                   self.payload.payload)),
                             self.payload.ready.eq(~last | core.i.ready)]
                with m.If(self.payload.valid & self.payload.ready):
                    m.d.sync += [word_in.word_select(part, 8).eq(self.payload.payload),
                                 part.eq(Mux(last, 0, part + 1))]
                with m.If(core.done):
                    m.next = "LOAD_END"
                with m.Elif(self.end.valid):
                    m.next = "PAD"
            with m.State("PAD"):
                # Timed out: the core's load still wants its words; zeros finish it.
                m.d.comb += core.i.valid.eq(1)
                with m.If(core.done):
                    m.next = "LOAD_END"
            with m.State("LOAD_END"):
                m.d.comb += self.end.ready.eq(1)
                with m.If(self.end.valid):
                    self._end_status(m, status)
                    with m.If(self.end.payload.crc_ok & ~self.end.payload.timeout):
                        m.d.sync += loaded.eq(loaded | bit)
                    m.next = "REPLY"
            with m.State("SKIP"):
                m.d.comb += [self.payload.ready.eq(1), self.end.ready.eq(1)]
                with m.If(self.end.valid):
                    with m.If(self.end.payload.timeout | ~self.end.payload.crc_ok):
                        self._end_status(m, status)
                        m.next = "REPLY"
                    with m.Elif(status != Status.OK):
                        m.next = "REPLY"
                    with m.Elif((loaded & needs) != needs):
                        m.d.sync += status.eq(Status.BAD_STATE)
                        m.next = "REPLY"
                    with m.Else():
                        m.next = "EXECUTE"
            with m.State("EXECUTE"):
                self._execute(m, kind, op, fixed, out_len, words_out, errors, cls, conv, over,
                              iters)
            with m.State("RUNNING"):
                with m.If(core.done):
                    m.d.comb += self.run_done.eq(1)
                    m.d.sync += [cls.eq(core.cls), conv.eq(core.converged),
                                 over.eq(core.overflow), iters.eq(core.iterations),
                                 loaded.eq(loaded | RESULT)]
                    m.next = "RUN_REPLY"
            with m.State("RUN_REPLY"):
                m.d.sync += [fixed[k].eq(v) for k, v in enumerate(
                    [cls, Cat(over, conv), iters[:8], iters[8:], *(self.cycles.word_select(
                        j, 8) for j in range(4))])]
                m.d.sync += out_len.eq(8)
                m.next = "REPLY"
            with m.State("REPLY"):
                m.d.comb += self.reply.valid.eq(1)
                with m.If(self.reply.ready):
                    m.next = "IDLE"
                    with m.If(out_len != 0):
                        m.next = "FIXED"
                        with m.If((status == Status.OK) & (kind == 2)):
                            m.d.comb += [core.op.eq(op - CORE_BASE), core.start.eq(1)]
                            m.next = "READ"
            with m.State("FIXED"):
                m.d.comb += [self.reply_data.valid.eq(1),
                             self.reply_data.payload.eq(fixed[index[:4]])]
                with m.If(self.reply_data.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == out_len - 1):
                        m.next = "IDLE"
            with m.State("READ"):
                self._read(m, index, part, word, words_out)
        return m

    def _end_status(self, m, status):
        end = self.end.payload
        with m.If(end.timeout):
            m.d.sync += status.eq(Status.TIMEOUT)
        with m.Elif(~end.crc_ok):
            m.d.sync += status.eq(Status.BAD_CRC)

    def _execute(self, m, kind, op, fixed, out_len, words_out, errors, cls, conv, over, iters):
        core = self.core
        with m.Switch(kind):
            with m.Case(1):            # a compute operation: RUN (BACKWARD, APPLY)
                m.d.comb += [core.op.eq(op - CORE_BASE), core.start.eq(1),
                             self.run_start.eq(1)]
                m.next = "RUNNING"
            with m.Case(2):            # a read: its words follow the reply header
                m.d.sync += out_len.eq(words_out * self._out_bytes)
                m.next = "REPLY"
            with m.Case(3):            # INFO
                m.d.sync += [fixed[k].eq(b) for k, b in enumerate(self._info)]
                m.d.sync += out_len.eq(len(self._info))
                m.next = "REPLY"
            with m.Default():          # STATUS or CLEAR
                with m.If(op == BoardOp.CLEAR):
                    m.d.comb += core.clear.eq(1)
                with m.Else():
                    m.d.sync += [fixed[k].eq(v) for k, v in enumerate(
                        [self.flags, cls, iters[:8], iters[8:],
                         *(self.cycles.word_select(j, 8) for j in range(4)),
                         errors[:8], errors[8:]])]
                    m.d.sync += out_len.eq(10)
                m.next = "REPLY"

    def _read(self, m, index, part, word, words_out):
        """Words from the core's ``o``, each sent as its bytes, little-endian."""
        core = self.core
        nb = self._out_bytes
        have = Signal()
        m.d.comb += [core.o.ready.eq(~have), self.reply_data.valid.eq(have),
                     self.reply_data.payload.eq(word[:8])]
        with m.If(core.o.valid & ~have):
            m.d.sync += [word.eq(core.o.payload), have.eq(1), part.eq(0)]
        with m.If(have & self.reply_data.ready):
            m.d.sync += [word.eq(word >> 8), part.eq(part + 1)]
            with m.If(part == nb - 1):
                m.d.sync += [have.eq(0), index.eq(index + 1)]
                with m.If(index == words_out - 1):
                    m.next = "IDLE"


class BoardTop(CheckedComponent):
    """The core behind the UART link: what the FPGA holds (docs/board.md).

    Parameters
    ----------
    config : CoreConfig
    divisor : int
        Clock cycles per UART bit (the ULX3S: 25 MHz / 1 Mbaud = 25).
    timeout : int
        Cycles without a byte that end a frame inside it (the ULX3S: 250,000 = 10 ms).
    weights : mapping, optional
        Weights built into the core's memories (:class:`~xbarode.hdl.core.Core`'s
        ``weights``): from reset the board answers RUN after LOAD_IMAGE alone, and STATUS
        shows A, B, C and d loaded.

    Attributes
    ----------
    rx : In(1)
        The host's serial line (idle high).
    tx : Out(1)
        To the host (idle high).
    leds : Out(8)
        0: weights loaded; 1: image loaded; 2: a RUN completed; 3: the last reply was an
        error; 4: the core is busy; 5–7: the class of the last RUN (low three bits).

    Notes
    -----
    Latency: a reply's first byte goes out a few cycles after the request's last byte, plus
    the operation's own latency (RUN: the cycle counter's count).
    """

    @staticmethod
    def check_parameters(config: CoreConfig, divisor: int, timeout: int, *,
                         weights=None) -> None:
        """The constructor's checks: the core's, the UART's and the parser's."""
        from .core import Core
        from .link import _check_timeout
        from .uart import _check_divisor

        if not isinstance(config, CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {type(config).__name__}")
        Core.check_parameters(config, weights=weights)
        _check_divisor(divisor)
        _check_timeout(timeout)

    def __init__(self, config: CoreConfig, divisor: int, timeout: int, *, weights=None):
        self._config = config
        self._divisor = divisor
        self._timeout = timeout
        self._weights = weights
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(8)})

    @property
    def weights_built_in(self) -> bool:
        """The core was built with weights in its memories."""
        return self._weights is not None

    @property
    def config(self) -> CoreConfig:
        """The core's configuration."""
        return self._config

    @property
    def divisor(self) -> int:
        """Clock cycles per UART bit."""
        return self._divisor

    @property
    def timeout(self) -> int:
        """Cycles without a byte that end a frame."""
        return self._timeout

    def elaborate(self, platform):
        from .core import Core

        m = Module()
        m.submodules.core = core = Core(self._config, weights=self._weights)
        m.submodules.rx = rx = UartRx(self._divisor)
        m.submodules.fifo = rx_fifo = fifo.SyncFIFOBuffered(width=8, depth=16)
        m.submodules.parser = parser = FrameParser(self._timeout)
        m.submodules.engine = engine = CommandEngine(
            core.signature, core_operations(core), board_info(core),
            weights_built_in=core.weights_built_in)
        m.submodules.framer = framer = ReplyFramer()
        m.submodules.tx = tx = UartTx(self._divisor)
        m.submodules.counter = counter = CycleCounter()
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx),
                     rx_fifo.w_data.eq(rx.o.payload), rx_fifo.w_en.eq(rx.o.valid),
                     rx.o.ready.eq(1),
                     parser.i.payload.eq(rx_fifo.r_data), parser.i.valid.eq(rx_fifo.r_rdy),
                     rx_fifo.r_en.eq(parser.i.ready)]
        wiring.connect(m, parser.header, engine.header)
        wiring.connect(m, parser.payload, engine.payload)
        wiring.connect(m, parser.end, engine.end)
        wiring.connect(m, engine.reply, framer.header)
        wiring.connect(m, engine.reply_data, framer.payload)
        wiring.connect(m, framer.o, tx.i)
        wiring.connect(m, engine.core, core)
        m.d.comb += [counter.start.eq(engine.run_start), counter.done.eq(core.done),
                     engine.cycles.eq(counter.count)]
        flags = engine.flags
        m.d.comb += self.leds.eq(Cat((flags & 0x0F) == 0x0F, flags[4], flags[5], engine.error,
                                     core.busy, core.cls))
        return m


def check_baud(baud: int, clock: int = 25_000_000) -> None:
    """Raise ``ValueError`` unless ``clock / baud`` is a whole number >= 4 of cycles per bit."""
    if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
        raise ValueError(f"baud must be a positive integer, not {baud!r}")
    if clock % baud or clock // baud < 4:
        raise ValueError(f"baud {baud} does not divide the {clock / 1e6:g} MHz clock into a "
                         "whole number (>= 4) of cycles per bit")


class Ulx3sTop(Elaboratable):
    """:class:`BoardTop` on a ULX3S: the 25 MHz clock, the FTDI UART, the eight LEDs.

    Parameters
    ----------
    config : CoreConfig
    baud : int
        The UART's rate; 25 MHz divided by it must be a whole number of cycles per bit, at
        least 4 (default 1,000,000: 25 cycles per bit, exact on both ends).
    timeout_ms : float
        A frame is ended when no byte arrives for this long inside it.
    weights : mapping, optional
        Weights built in (:class:`BoardTop`'s).
    """

    def __init__(self, config: CoreConfig, baud: int = 1_000_000, timeout_ms: float = 10.0, *,
                 weights=None):
        clock = 25_000_000
        check_baud(baud)
        self._top = BoardTop(config, clock // baud, max(1, round(timeout_ms * clock / 1000)),
                             weights=weights)

    @property
    def board(self) -> BoardTop:
        """The board top level."""
        return self._top

    def elaborate(self, platform):
        m = Module()
        m.submodules.board = top = self._top
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buffer = rx = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = tx = io.Buffer("o", uart.tx)
        m.d.comb += [top.rx.eq(rx.i), tx.o.eq(top.tx)]
        for k in range(8):
            m.submodules[f"led{k}"] = led = io.Buffer("o", platform.request("led", k, dir="-"))
            m.d.comb += led.o.eq(top.leds[k])
        return m
