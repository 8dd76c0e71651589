"""The host driver of the board's serial link (docs/board.md): frames, a transport, the API.

:class:`Board` speaks the protocol over a :class:`Transport`: :class:`SerialTransport` for the
ULX3S's FTDI port (pyserial, imported only when one is opened), or the simulated board's
transport in :mod:`xbarode.sim.board_sim`, which moves the same bytes through the board top
level's UART pins in a Verilator simulation. Every command gets exactly one reply; a reply
that reports a damaged or truncated request, and a reply that does not come or does not
check, are retried after the link has gone quiet; other error statuses raise
:class:`BoardError` at once.
"""

from __future__ import annotations

import binascii
import time
from dataclasses import dataclass

__all__ = [
    "Board",
    "BoardError",
    "CommandStatus",
    "LinkError",
    "Reply",
    "SerialTransport",
    "Transport",
    "crc16",
    "encode_request",
    "words_from_bytes",
    "words_to_bytes",
]

REQUEST_SYNC = 0xA5
REPLY_SYNC = 0x5A
#: Board commands; core operation ``k`` is ``CORE_BASE + k`` (docs/board.md).
INFO, STATUS, CLEAR = 0x01, 0x02, 0x03
CORE_BASE = 0x10
CORE_OPS = {"LOAD_A": 0, "LOAD_B": 1, "LOAD_C": 2, "LOAD_D": 3, "LOAD_IMAGE": 4, "RUN": 5,
            "READ_LOGITS": 6, "READ_STATE": 7, "READ_STATUS": 8, "READ_TRAJECTORY": 9,
            "LOAD_GRAD": 10, "BACKWARD": 11, "APPLY": 12, "READ_GRAD": 13, "READ_WEIGHTS": 14}

#: Status byte → name (docs/board.md).
CommandStatus = {0: "OK", 1: "BAD_CRC", 2: "TIMEOUT", 3: "UNKNOWN_OP", 4: "BAD_LENGTH",
                 5: "BAD_STATE"}
_RETRIED = {1, 2}


class LinkError(IOError):
    """No reply, or a reply that does not check (sync, length, CRC), within the timeout."""


class BoardError(RuntimeError):
    """The board answered a command with an error status (``status``, ``name``), or the link
    failed on every retry."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status
        self.name = CommandStatus.get(status, "LINK") if status is not None else "LINK"


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: polynomial 0x1021, init 0xFFFF, no reflection, no final XOR."""
    return binascii.crc_hqx(bytes(data), 0xFFFF)


def encode_request(op: int, payload: bytes = b"") -> bytes:
    """A request frame: ``0xA5, op, len (LE), payload, crc (LE)`` (CRC over op … payload)."""
    if not 0 <= op <= 0xFF:
        raise ValueError(f"op must be a byte, not {op}")
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes; a frame holds at most 65535")
    body = bytes([op, len(payload) & 0xFF, len(payload) >> 8]) + bytes(payload)
    crc = crc16(body)
    return bytes([REQUEST_SYNC]) + body + bytes([crc & 0xFF, crc >> 8])


def words_to_bytes(words, nbytes: int) -> bytes:
    """Signed integer words as ``nbytes`` little-endian two's-complement bytes each; a word
    that does not fit raises ``ValueError``."""
    out = bytearray()
    low, high = -(1 << (8 * nbytes - 1)), (1 << (8 * nbytes - 1)) - 1
    for w in words:
        w = int(w)
        if not low <= w <= high:
            raise ValueError(f"word {w} does not fit in {nbytes} bytes")
        out += (w & ((1 << 8 * nbytes) - 1)).to_bytes(nbytes, "little")
    return bytes(out)


def words_from_bytes(data: bytes, nbytes: int) -> list[int]:
    """The inverse of :func:`words_to_bytes`."""
    return [int.from_bytes(data[k:k + nbytes], "little", signed=True)
            for k in range(0, len(data), nbytes)]


@dataclass
class Reply:
    """One reply frame: the op it answers, its status byte and payload."""

    op: int
    status: int
    payload: bytes


class Transport:
    """Moves bytes to and from the board.

    A transport implements :meth:`write`, :meth:`read` (at most ``n`` bytes, fewer when
    ``timeout`` seconds pass first), :meth:`quiet` (let the line rest, then drop what came
    in) and :meth:`seconds` (the transport's clock: wall time, or simulated time).
    """

    def write(self, data: bytes) -> None:
        """Send ``data``."""
        raise NotImplementedError

    def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes, waiting at most ``timeout`` seconds."""
        raise NotImplementedError

    def quiet(self, seconds: float) -> None:
        """Send nothing for ``seconds``, then discard any bytes received."""
        raise NotImplementedError

    def seconds(self) -> float:
        """The transport's clock in seconds."""
        return time.perf_counter()


class SerialTransport(Transport):
    """A serial port (the ULX3S's FTDI FT231X: ``/dev/ttyUSB0``), 8N1, no flow control.

    Parameters
    ----------
    port : str
    baud : int
        The board's rate (default 1,000,000, docs/board.md).
    """

    def __init__(self, port: str, baud: int = 1_000_000):
        try:
            import serial
        except ImportError as error:        # pragma: no cover - pyserial is a dependency
            raise BoardError("pyserial is needed for a serial port") from error
        try:
            self._port = serial.Serial(port, baud, timeout=0)
        except serial.SerialException as error:
            raise BoardError(f"cannot open {port}: {error}") from error

    def write(self, data: bytes) -> None:
        self._port.write(data)
        self._port.flush()

    def read(self, n: int, timeout: float) -> bytes:
        self._port.timeout = timeout
        return self._port.read(n)

    def quiet(self, seconds: float) -> None:
        time.sleep(seconds)
        self._port.reset_input_buffer()

    def close(self) -> None:
        """Close the port."""
        self._port.close()


class Board:
    """The board's API over a transport.

    Parameters
    ----------
    transport : Transport
    timeout : float
        Seconds (of the transport's clock) to wait for a reply.
    retries : int
        Extra attempts of a command whose request was damaged or truncated on the way
        (status BAD_CRC or TIMEOUT) or whose reply did not come or did not check.
    settle : float
        Seconds of quiet before a retry: longer than the board's frame timeout, so that the
        board has ended any partial frame.
    """

    def __init__(self, transport: Transport, *, timeout: float = 2.0, retries: int = 3,
                 settle: float = 0.05):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries}")
        self.transport = transport
        self.timeout, self.retries, self.settle = timeout, retries, settle
        self.bytes_sent = self.bytes_received = 0
        self.retried = 0
        self._info = None

    # The frame layer.

    def _read_exact(self, n: int, deadline: float) -> bytes:
        data = b""
        while len(data) < n:
            left = deadline - self.transport.seconds()
            if left <= 0:
                break
            data += self.transport.read(n - len(data), left)
        if len(data) < n:
            raise LinkError(f"reply timed out after {self.timeout} s ({len(data)} of {n} "
                            "bytes)")
        return data

    def receive(self) -> Reply:
        """One reply frame; bytes before its sync byte are skipped. Raises :class:`LinkError`
        on a timeout or a CRC mismatch."""
        deadline = self.transport.seconds() + self.timeout
        while self._read_exact(1, deadline)[0] != REPLY_SYNC:
            pass
        head = self._read_exact(4, deadline)
        length = head[2] | head[3] << 8
        rest = self._read_exact(length + 2, deadline)
        self.bytes_received += 7 + length
        body = head + rest[:length]
        if crc16(body) != (rest[length] | rest[length + 1] << 8):
            raise LinkError("reply CRC mismatch")
        return Reply(head[0], head[1], bytes(rest[:length]))

    def command(self, op: int, payload: bytes = b"") -> bytes:
        """Send one command and return its reply's payload, retrying link failures.

        Raises
        ------
        BoardError
            An error status other than BAD_CRC/TIMEOUT (at once), or a link failure on every
            attempt.
        """
        frame = encode_request(op, payload)
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                self.transport.quiet(self.settle)
            self.transport.write(frame)
            self.bytes_sent += len(frame)
            try:
                reply = self.receive()
            except LinkError as error:
                last = str(error)
                continue
            if reply.op != op:
                last = f"reply to op {reply.op:#04x}, expected {op:#04x}"
                continue
            if reply.status == 0:
                return reply.payload
            name = CommandStatus.get(reply.status, f"status {reply.status}")
            if reply.status not in _RETRIED:
                raise BoardError(f"op {op:#04x}: {name}", reply.status)
            last = name
        raise BoardError(f"op {op:#04x} failed after {self.retries + 1} attempts: {last}")

    # The board's commands.

    def info(self) -> dict:
        """INFO: ``version``, ``m``, ``classes``, ``steps``, ``in_bytes``, ``out_bytes``."""
        p = self.command(INFO)
        self._info = {"version": p[0], "m": p[1] | p[2] << 8, "classes": p[3], "steps": p[4],
                      "in_bytes": p[5], "out_bytes": p[6]}
        return dict(self._info)

    def _sizes(self) -> dict:
        return self._info if self._info is not None else self.info()

    def status(self) -> dict:
        """STATUS: ``flags`` and their meaning, the last RUN's ``cls``, ``iterations`` and
        ``cycles``, and ``errors`` (error replies since power-up)."""
        p = self.command(STATUS)
        flags = p[0]
        return {"flags": flags, "weights_loaded": flags & 0x0F == 0x0F,
                "image_loaded": bool(flags & 0x10), "result": bool(flags & 0x20),
                "overflow": bool(flags & 0x40), "converged": bool(flags & 0x80),
                "cls": p[1], "iterations": p[2] | p[3] << 8,
                "cycles": int.from_bytes(p[4:8], "little"), "errors": p[8] | p[9] << 8}

    def cycles(self) -> int:
        """The on-chip count of the last RUN's cycles (start to done, inclusive)."""
        return self.status()["cycles"]

    def clear(self) -> None:
        """CLEAR: lower the core's sticky overflow flag."""
        self.command(CLEAR)

    def load(self, name: str, words) -> None:
        """A LOAD_* operation of the core with its words (signed integers)."""
        self.command(CORE_BASE + CORE_OPS[name], words_to_bytes(words, self._sizes()["in_bytes"]))

    def read(self, name: str) -> list[int]:
        """A READ_* operation of the core: its words."""
        return words_from_bytes(self.command(CORE_BASE + CORE_OPS[name]),
                                self._sizes()["out_bytes"])

    def run(self) -> dict:
        """RUN: ``cls``, ``overflow``, ``converged``, ``iterations``, ``cycles``."""
        p = self.command(CORE_BASE + CORE_OPS["RUN"])
        return {"cls": p[0], "overflow": p[1] & 1, "converged": p[1] >> 1 & 1,
                "iterations": p[2] | p[3] << 8, "cycles": int.from_bytes(p[4:8], "little")}

    def load_weights(self, config, params) -> None:
        """Load float weights ``params`` (``A``, ``B``, ``C``, ``d``, a weights file's) for a
        core built with ``config``: put on the weight grid as the fixed-point model does,
        ``B`` sent transposed."""
        from xbarode.sim.core_plan import make_plan

        plan = make_plan(config, params, [[0.0] * config.pixels])
        w = plan["weights"]
        for name, key in (("LOAD_A", "A"), ("LOAD_B", "Bt" if "Bt" in w else "B"),
                          ("LOAD_C", "C"), ("LOAD_D", "d")):
            self.load(name, w[key])

    def classify(self, config, images) -> list[dict]:
        """Per image (floats in [0, 1], ``H·W`` each): CLEAR, LOAD_IMAGE, RUN, READ_LOGITS.
        Returns per image ``cls``, ``logits``, ``overflow``, ``converged``, ``iterations``,
        ``cycles``."""
        words = config.formats().state.quantize(
            _as_array(images, config.pixels), "nearest").tolist()
        results = []
        for image in words:
            self.clear()
            self.load("LOAD_IMAGE", image)
            result = self.run()
            result["logits"] = self.read("READ_LOGITS")
            results.append(result)
        return results


def _as_array(images, m: int):
    import numpy as np

    return np.asarray(images, dtype=np.float64).reshape(-1, m)
