"""A UART receiver and transmitter: 8 data bits, no parity, one stop bit (8N1), LSB first.

The bit time is ``divisor`` clock cycles (``divisor = clock / baud``); the board runs them at
25 MHz with ``divisor = 25`` (1 Mbaud, docs/board.md), the simulations with a few cycles per
bit. Both sides idle high.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from .checked import CheckedComponent

__all__ = ["MIN_DIVISOR", "UartRx", "UartTx"]

#: The shortest bit time, in clock cycles, the receiver samples reliably (mid-bit sampling
#: after a two-register synchroniser).
MIN_DIVISOR = 4


def _check_divisor(divisor) -> None:
    if isinstance(divisor, bool) or not isinstance(divisor, int):
        raise TypeError(f"divisor must be an integer, not {type(divisor).__name__}")
    if divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be >= {MIN_DIVISOR} clock cycles per bit, not {divisor}")


class UartRx(CheckedComponent):
    """UART receiver: the serial input ``rx`` as a stream of bytes.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Attributes
    ----------
    rx : In(1)
        The serial line (idle high); synchronised with two registers inside.
    o : Out(stream.Signature(8))
        The received bytes. A byte is held until taken; one arriving while the last is still
        offered replaces it (and ``overrun`` pulses).
    frame_error : Out(1)
        Pulses for one cycle when a stop bit reads 0 (the byte is dropped).
    overrun : Out(1)
        Pulses when a byte replaces one that was not taken.

    Notes
    -----
    Latency: a byte is offered ``2 + divisor // 2 + 9·divisor`` cycles after the falling edge
    of its start bit reaches ``rx`` (the middle of the stop bit plus the synchroniser), so the
    receiver is ready for the next start bit while the stop bit is still on the line.
    """

    @staticmethod
    def check_parameters(divisor: int) -> None:
        """The constructor's checks: ``divisor`` an integer ``>= MIN_DIVISOR``."""
        _check_divisor(divisor)

    def __init__(self, divisor: int):
        self._divisor = divisor
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)),
                          "frame_error": Out(1), "overrun": Out(1)})

    @property
    def divisor(self) -> int:
        """Clock cycles per bit."""
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)
        timer = Signal(range(div * 3 // 2 + 1))
        bit = Signal(range(9))
        shift = Signal(8)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    # The middle of data bit 0: one and a half bit times after the edge.
                    m.d.sync += [timer.eq(div + div // 2 - 1), bit.eq(0)]
                    m.next = "START"
            with m.State("START"):
                # The start bit must still be low half a bit later: else a glitch.
                with m.If(timer == div - 1):
                    with m.If(line):
                        m.next = "IDLE"
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [shift.eq(shift >> 1 | line << 7), bit.eq(1),
                                 timer.eq(div - 1)]
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += timer.eq(div - 1)
                    with m.If(bit == 8):
                        m.next = "STOP"
                    with m.Else():
                        m.d.sync += [shift.eq(shift >> 1 | line << 7), bit.eq(bit + 1)]
            with m.State("STOP"):
                with m.If(line):
                    m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
                    m.d.comb += self.overrun.eq(self.o.valid & ~self.o.ready)
                with m.Else():
                    m.d.comb += self.frame_error.eq(1)
                m.next = "IDLE"
        return m


class UartTx(CheckedComponent):
    """UART transmitter: a stream of bytes onto the serial output ``tx``.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Attributes
    ----------
    i : In(stream.Signature(8))
        Bytes to send; taken when the previous byte's stop bit is complete.
    tx : Out(1)
        The serial line (idle high).

    Notes
    -----
    Latency: the start bit goes out in the cycle after the byte is taken; a byte takes
    ``10·divisor`` cycles, and back-to-back bytes follow without a gap.
    """

    @staticmethod
    def check_parameters(divisor: int) -> None:
        """The constructor's checks: ``divisor`` an integer ``>= MIN_DIVISOR``."""
        _check_divisor(divisor)

    def __init__(self, divisor: int):
        self._divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    @property
    def divisor(self) -> int:
        """Clock cycles per bit."""
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        shift = Signal(10, init=0x3FF)
        bits = Signal(range(11))
        timer = Signal(range(div))
        m.d.comb += [self.tx.eq(shift[0]), self.i.ready.eq(bits == 0)]
        with m.If(self.i.valid & self.i.ready):
            # Stop bit (1), the data LSB first, start bit (0).
            m.d.sync += [shift.eq(1 << 9 | self.i.payload << 1), bits.eq(10),
                         timer.eq(div - 1)]
        with m.Elif(bits != 0):
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                m.d.sync += [shift.eq(shift >> 1 | 1 << 9), bits.eq(bits - 1),
                             timer.eq(div - 1)]
        return m
