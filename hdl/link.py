"""The board's framed serial link (docs/board.md): CRC-16, the frame parser, the reply framer
and the cycle counter.

A request is ``0xA5, op, len (2 bytes, little-endian), payload (len bytes), crc (2 bytes,
little-endian)``; a reply is ``0x5A, op, status, len (2), payload, crc (2)``. The CRC is
CRC-16/CCITT-FALSE (polynomial ``0x1021``, init ``0xFFFF``, no reflection, no final XOR;
Python's ``binascii.crc_hqx(data, 0xFFFF)``) over every byte after the sync byte up to the
CRC.
"""

from __future__ import annotations

from amaranth import Module, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .checked import CheckedComponent

__all__ = ["CRC_INIT", "CRC_POLY", "REPLY_SYNC", "REQUEST_SYNC", "CycleCounter",
           "FrameParser", "ReplyFramer", "crc16_update"]

REQUEST_SYNC = 0xA5
REPLY_SYNC = 0x5A
CRC_POLY = 0x1021
CRC_INIT = 0xFFFF

#: A request's header as the parser hands it on.
HEADER = data.StructLayout({"op": 8, "length": 16})
#: The end of a request: ``timeout`` (bytes stopped coming), ``crc_ok``, ``header`` (a header
#: was handed on before the end).
END = data.StructLayout({"timeout": 1, "crc_ok": 1, "header": 1})
#: A reply's header as the framer takes it.
REPLY = data.StructLayout({"op": 8, "status": 8, "length": 16})


def crc16_update(m: Module, crc: Value, byte: Value) -> Signal:
    """The CRC-16/CCITT-FALSE register after one more byte: combinational logic added to
    ``m`` (one signal per bit step, MSB first), the result returned."""
    value = Signal(16)
    m.d.comb += value.eq(crc ^ (Value.cast(byte) << 8))
    for _ in range(8):
        step = Signal(16)
        m.d.comb += step.eq((value << 1)[:16] ^ (value[15].replicate(16) & CRC_POLY))
        value = step
    return value


def _check_timeout(timeout) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        raise TypeError(f"timeout must be an integer, not {type(timeout).__name__}")
    if timeout < 1:
        raise ValueError(f"timeout must be >= 1 clock cycle, not {timeout}")


class FrameParser(CheckedComponent):
    """Finds request frames in a byte stream, checks their CRC, ends them on a timeout.

    Bytes before a sync byte ``0xA5`` are dropped. After it: the op byte, the length (two
    bytes, little-endian), then ``header`` is offered (until taken); the ``length`` payload
    bytes pass on ``payload``; the two CRC bytes are compared; ``end`` is offered (until
    taken) with ``crc_ok``. If no byte arrives for ``timeout`` cycles inside a frame, ``end``
    is offered at once with ``timeout`` set (the rest of the frame is not waited for) and the
    parser hunts for the next sync byte.

    Parameters
    ----------
    timeout : int
        Cycles without a byte after which a frame is ended (>= 1).

    Attributes
    ----------
    i : In(stream.Signature(8))
        The received bytes.
    header : Out(stream.Signature(HEADER))
    payload : Out(stream.Signature(8))
    end : Out(stream.Signature(END))

    Notes
    -----
    Latency: one cycle per byte (a byte is taken, or handed on, in the cycle it is offered);
    ``header`` and ``end`` are offered in the cycle after the byte that completes them.
    """

    @staticmethod
    def check_parameters(timeout: int) -> None:
        """The constructor's checks: ``timeout`` an integer >= 1."""
        _check_timeout(timeout)

    def __init__(self, timeout: int):
        self._timeout = timeout
        super().__init__({"i": In(stream.Signature(8)), "header": Out(stream.Signature(HEADER)),
                          "payload": Out(stream.Signature(8)),
                          "end": Out(stream.Signature(END))})

    @property
    def timeout(self) -> int:
        """Cycles without a byte that end a frame."""
        return self._timeout

    def elaborate(self, platform):
        m = Module()
        crc = Signal(16, init=CRC_INIT)
        got = Signal(8)
        left = Signal(16)
        idle = Signal(range(self._timeout + 1))
        seen = Signal()
        byte = self.i.payload
        take = self.i.valid & self.i.ready
        with m.If(take):
            m.d.sync += [crc.eq(crc16_update(m, crc, byte)), idle.eq(0)]
        waiting = Signal()
        with m.If(waiting & ~self.i.valid):
            m.d.sync += idle.eq(idle + 1)
        expired = waiting & ~self.i.valid & (idle == self._timeout - 1)
        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid & (byte == REQUEST_SYNC)):
                    m.d.sync += [crc.eq(CRC_INIT), idle.eq(0), seen.eq(0)]
                    m.next = "OP"
            for state, nxt, field in (("OP", "LEN0", "op"), ("LEN0", "LEN1", "lo"),
                                      ("LEN1", "HEADER", "hi")):
                with m.State(state):
                    m.d.comb += [self.i.ready.eq(1), waiting.eq(1)]
                    with m.If(self.i.valid):
                        if field == "op":
                            m.d.sync += self.header.payload.op.eq(byte)
                        elif field == "lo":
                            m.d.sync += self.header.payload.length[:8].eq(byte)
                        else:
                            m.d.sync += [self.header.payload.length[8:].eq(byte),
                                         left.eq(Value.cast(byte) << 8
                                                 | self.header.payload.length[:8])]
                        m.next = nxt
                    with m.Elif(expired):
                        m.next = "END_TIMEOUT"
            with m.State("HEADER"):
                m.d.comb += self.header.valid.eq(1)
                with m.If(self.header.ready):
                    m.d.sync += [seen.eq(1), idle.eq(0)]
                    m.next = "PAYLOAD"
                    with m.If(left == 0):
                        m.next = "CRC0"
            with m.State("PAYLOAD"):
                m.d.comb += [self.payload.valid.eq(self.i.valid), self.payload.payload.eq(byte),
                             self.i.ready.eq(self.payload.ready), waiting.eq(1)]
                with m.If(take):
                    m.d.sync += left.eq(left - 1)
                    with m.If(left == 1):
                        m.next = "CRC0"
                with m.Elif(expired):
                    m.next = "END_TIMEOUT"
            with m.State("CRC0"):
                m.d.comb += [self.i.ready.eq(1), waiting.eq(1)]
                with m.If(self.i.valid):
                    m.d.sync += [got.eq(byte), crc.eq(crc)]
                    m.next = "CRC1"
                with m.Elif(expired):
                    m.next = "END_TIMEOUT"
            with m.State("CRC1"):
                m.d.comb += [self.i.ready.eq(1), waiting.eq(1)]
                with m.If(self.i.valid):
                    m.d.sync += [self.end.payload.crc_ok.eq((byte == crc[8:]) & (got == crc[:8])),
                                 self.end.payload.timeout.eq(0), self.end.payload.header.eq(1)]
                    m.next = "END"
                with m.Elif(expired):
                    m.next = "END_TIMEOUT"
            with m.State("END_TIMEOUT"):
                m.d.sync += [self.end.payload.timeout.eq(1), self.end.payload.crc_ok.eq(0),
                             self.end.payload.header.eq(seen)]
                m.next = "END"
            with m.State("END"):
                m.d.comb += self.end.valid.eq(1)
                with m.If(self.end.ready):
                    m.next = "HUNT"
        return m


class ReplyFramer(wiring.Component):
    """Sends reply frames: ``0x5A, op, status, len (LE), payload, crc (LE)``.

    Attributes
    ----------
    header : In(stream.Signature(REPLY))
        A reply's op, status and payload length; taken when the framer is idle.
    payload : In(stream.Signature(8))
        The ``length`` payload bytes, taken one by one while the framer sends them.
    o : Out(stream.Signature(8))
        The frame's bytes.

    Notes
    -----
    Latency: the sync byte is offered in the cycle after the header is taken; then one byte
    per cycle that ``o`` takes it (and ``payload`` offers one); the next header is taken in
    the cycle after the last CRC byte moved.
    """

    def __init__(self):
        super().__init__({"header": In(stream.Signature(REPLY)),
                          "payload": In(stream.Signature(8)), "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        crc = Signal(16, init=CRC_INIT)
        head = Signal(REPLY)
        left = Signal(16)
        sent = self.o.valid & self.o.ready
        updated = crc16_update(m, crc, self.o.payload)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.header.ready.eq(1)
                with m.If(self.header.valid):
                    m.d.sync += [head.eq(self.header.payload), crc.eq(CRC_INIT),
                                 left.eq(self.header.payload.length)]
                    m.next = "SYNC"
            steps = [("SYNC", REPLY_SYNC, "OP"), ("OP", head.op, "STATUS"),
                     ("STATUS", head.status, "LEN0"), ("LEN0", head.length[:8], "LEN1"),
                     ("LEN1", head.length[8:], "PAYLOAD")]
            for state, value, nxt in steps:
                with m.State(state):
                    m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(value)]
                    with m.If(sent):
                        if state != "SYNC":
                            m.d.sync += crc.eq(updated)
                        m.next = nxt
                        if nxt == "PAYLOAD":
                            with m.If(left == 0):
                                m.next = "CRC0"
            with m.State("PAYLOAD"):
                m.d.comb += [self.o.valid.eq(self.payload.valid),
                             self.o.payload.eq(self.payload.payload),
                             self.payload.ready.eq(self.o.ready)]
                with m.If(sent):
                    m.d.sync += [crc.eq(updated), left.eq(left - 1)]
                    with m.If(left == 1):
                        m.next = "CRC0"
            for state, value, nxt in (("CRC0", crc[:8], "CRC1"), ("CRC1", crc[8:], "IDLE")):
                with m.State(state):
                    m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(value)]
                    with m.If(sent):
                        m.next = nxt
        return m


class CycleCounter(wiring.Component):
    """Counts an operation's cycles: from the cycle ``start`` is high to the cycle ``done``
    is high, both included (the latency ``xbarode simulate`` reports).

    Attributes
    ----------
    start, done : In(1)
    count : Out(32)
        The cycles of the last operation once it is done; while it runs, the cycles so far.
        Saturates at ``2³² − 1`` (and ``saturated`` is set).
    running : Out(1)
    saturated : Out(1)

    Notes
    -----
    Latency: ``count`` holds the final value from the cycle after ``done``.
    """

    def __init__(self):
        super().__init__({"start": In(1), "done": In(1), "count": Out(32), "running": Out(1),
                          "saturated": Out(1)})

    def elaborate(self, platform):
        m = Module()
        top = (1 << 32) - 1
        with m.If(self.start & ~self.running):
            m.d.sync += [self.count.eq(1), self.running.eq(~self.done), self.saturated.eq(0)]
        with m.Elif(self.running):
            with m.If(self.count == top):
                m.d.sync += self.saturated.eq(1)
            with m.Else():
                m.d.sync += self.count.eq(self.count + 1)
            with m.If(self.done):
                m.d.sync += self.running.eq(0)
        return m
