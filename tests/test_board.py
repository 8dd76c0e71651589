"""The board's link components on Amaranth's simulator, and the host driver's frame layer.

UART bytes are checked against an 8N1 line written or read by the testbench itself (start
bit 0, data LSB first, stop bit 1), CRCs against Python's ``binascii.crc_hqx`` and the
catalogue check value of CRC-16/CCITT-FALSE (``"123456789"`` → ``0x29B1``), frames against
the layout of docs/board.md written out here.
"""

import binascii

import pytest
from amaranth import signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from hypothesis import example, given, settings
from hypothesis import strategies as st

from xbarode.hdl.board import CommandEngine, check_baud
from xbarode.hdl.link import CycleCounter, FrameParser, ReplyFramer
from xbarode.hdl.uart import UartRx, UartTx
from xbarode.host import (
    Board,
    BoardError,
    Transport,
    crc16,
    encode_request,
    words_from_bytes,
    words_to_bytes,
)
from xbarode.model.core_config import CoreConfig

#: The board tests' core: 2×3 pixels, three classes, two steps, two lanes.
SMALL_CORE = CoreConfig(image=(2, 3), classes=3, steps=2, lanes=2)


def simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def line_bits(data, divisor, gap=0):
    """The 8N1 line level per clock cycle for ``data`` (idle high, ``gap`` idle bits
    between bytes)."""
    levels = []
    for byte in data:
        bits = [0] + [(byte >> k) & 1 for k in range(8)] + [1] + [1] * gap
        for b in bits:
            levels += [b] * divisor
    return levels


def decode_line(levels, divisor):
    """Bytes read from sampled line levels: each falling edge from idle starts a byte,
    sampled in the middle of every bit."""
    out, t = [], 1
    while t < len(levels):
        if levels[t - 1] == 1 and levels[t] == 0:
            mid = t + divisor // 2
            if mid + 9 * divisor >= len(levels):
                break
            bits = [levels[mid + k * divisor] for k in range(10)]
            assert bits[0] == 0 and bits[9] == 1, bits
            out.append(sum(b << k for k, b in enumerate(bits[1:9])))
            t = mid + 9 * divisor
        t += 1
    return out


@settings(max_examples=8, deadline=None)
@given(data=st.lists(st.integers(0, 255), min_size=1, max_size=4),
       divisor=st.sampled_from([4, 5, 7]))
@example(data=[0x00, 0xFF, 0xA5], divisor=4)
def test_uart_tx_sends_8n1_bytes_back_to_back(data, divisor):
    dut = UartTx(divisor)
    levels = []

    async def bench(ctx):
        k = 0
        for _ in range(10 * divisor * len(data) + 4 * divisor):
            if k < len(data):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, data[k])
            else:
                ctx.set(dut.i.valid, 0)
            moved = ctx.get(dut.i.valid) and ctx.get(dut.i.ready)
            levels.append(ctx.get(dut.tx))
            await ctx.tick()
            k += int(bool(moved))

    simulate(dut, bench)
    assert decode_line(levels, divisor) == data
    # Back to back: the last stop bit ends 10·divisor cycles per byte after the first start.
    first = levels.index(0)
    assert all(level == 1 for level in levels[first + 10 * divisor * len(data):])


@settings(max_examples=8, deadline=None)
@given(data=st.lists(st.integers(0, 255), min_size=1, max_size=4),
       divisor=st.sampled_from([4, 5, 25]), gap=st.integers(0, 2))
@example(data=[0x55, 0x00], divisor=4, gap=0)
def test_uart_rx_reads_a_bit_banged_line(data, divisor, gap):
    dut = UartRx(divisor)
    got, errors = [], []
    levels = [1] * 5 + line_bits(data, divisor, gap) + [1] * (3 * divisor)

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for level in levels:
            ctx.set(dut.rx, level)
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
            errors.append(ctx.get(dut.frame_error))
            await ctx.tick()

    simulate(dut, bench)
    assert got == data
    assert not any(errors)


def test_uart_rx_drops_a_byte_without_stop_bit_and_a_glitch():
    divisor = 4
    dut = UartRx(divisor)
    bad = [0] * divisor * 10                  # start, 0x00, stop bit 0
    glitch = [1] * 8 + [0] + [1] * 40         # one low cycle: no start bit
    levels = [1] * 5 + bad + [1] * 20 + glitch + line_bits([0x3C], divisor) + [1] * 20
    got, errors = [], 0

    async def bench(ctx):
        nonlocal errors
        ctx.set(dut.o.ready, 1)
        for level in levels:
            ctx.set(dut.rx, level)
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
            errors += ctx.get(dut.frame_error)
            await ctx.tick()

    simulate(dut, bench)
    assert got == [0x3C]
    assert errors == 1


def test_crc16_is_ccitt_false():
    assert crc16(b"123456789") == 0x29B1     # the catalogue's check value
    assert crc16(b"") == 0xFFFF


def test_encode_request_layout():
    frame = encode_request(0x14, bytes([1, 2, 3]))
    assert frame[:4] == bytes([0xA5, 0x14, 3, 0])
    assert frame[4:7] == bytes([1, 2, 3])
    crc = binascii.crc_hqx(bytes([0x14, 3, 0, 1, 2, 3]), 0xFFFF)
    assert frame[7:] == bytes([crc & 0xFF, crc >> 8])


def run_parser(stream, timeout, idle_after=0):
    """Feed ``stream`` bytes to a FrameParser (one per cycle), then idle; collect events."""
    dut = FrameParser(timeout)
    events = []

    async def bench(ctx):
        ctx.set(dut.header.ready, 1)
        ctx.set(dut.payload.ready, 1)
        ctx.set(dut.end.ready, 1)
        k = 0
        for _ in range(len(stream) * 2 + idle_after + 20):
            ctx.set(dut.i.valid, int(k < len(stream)))
            if k < len(stream):
                ctx.set(dut.i.payload, stream[k])
            took = k < len(stream) and ctx.get(dut.i.ready)
            if ctx.get(dut.header.valid):
                events.append(("header", ctx.get(dut.header.payload.op),
                               ctx.get(dut.header.payload.length)))
            if ctx.get(dut.payload.valid):
                events.append(("byte", ctx.get(dut.payload.payload)))
            if ctx.get(dut.end.valid):
                end = dut.end.payload
                events.append(("end", ctx.get(end.crc_ok), ctx.get(end.timeout),
                               ctx.get(end.header)))
            await ctx.tick()
            k += int(bool(took))

    simulate(dut, bench)
    return events


@settings(max_examples=10, deadline=None)
@given(payload=st.binary(min_size=0, max_size=6), op=st.integers(0, 255),
       garbage=st.binary(max_size=4).filter(lambda g: 0xA5 not in g))
@example(payload=b"", op=0x15, garbage=b"")
def test_parser_passes_a_good_frame_after_garbage(payload, op, garbage):
    events = run_parser(garbage + encode_request(op, payload), timeout=50)
    assert events == [("header", op, len(payload)), *(("byte", b) for b in payload),
                      ("end", 1, 0, 1)]


def test_parser_flags_a_bad_crc_and_ends_a_truncated_frame_on_its_timeout():
    good = encode_request(0x13, bytes([9, 8]))
    bad = good[:-1] + bytes([good[-1] ^ 0x80])
    assert run_parser(bad, timeout=50)[-1] == ("end", 0, 0, 1)
    # Cut after one payload byte: after 30 idle cycles the frame ends with timeout.
    events = run_parser(good[:5], timeout=30, idle_after=40)
    assert events == [("header", 0x13, 2), ("byte", 9), ("end", 0, 1, 1)]
    # A lone sync byte: the end comes without a header.
    assert run_parser(b"\xa5", timeout=30, idle_after=40) == [("end", 0, 1, 0)]


@settings(max_examples=6, deadline=None)
@given(payload=st.binary(max_size=5), op=st.integers(0, 255), status=st.integers(0, 5))
def test_reply_framer_frames_and_crcs(payload, op, status):
    dut = ReplyFramer()
    out = []

    async def bench(ctx):
        ctx.set(dut.header.valid, 1)
        ctx.set(dut.header.payload.op, op)
        ctx.set(dut.header.payload.status, status)
        ctx.set(dut.header.payload.length, len(payload))
        ctx.set(dut.o.ready, 1)
        k = 0
        for _ in range(len(payload) + 20):
            if ctx.get(dut.header.ready):
                await ctx.tick()
                ctx.set(dut.header.valid, 0)
                continue
            ctx.set(dut.payload.valid, int(k < len(payload)))
            if k < len(payload):
                ctx.set(dut.payload.payload, payload[k])
            if ctx.get(dut.payload.valid) and ctx.get(dut.payload.ready):
                k += 1
            if ctx.get(dut.o.valid):
                out.append(ctx.get(dut.o.payload))
            await ctx.tick()

    simulate(dut, bench)
    body = bytes([op, status, len(payload) & 0xFF, len(payload) >> 8]) + payload
    crc = binascii.crc_hqx(body, 0xFFFF)
    assert bytes(out) == b"\x5a" + body + bytes([crc & 0xFF, crc >> 8])


@pytest.mark.parametrize("distance", [0, 1, 7])
def test_cycle_counter_counts_start_to_done_inclusive(distance):
    dut = CycleCounter()
    seen = {}

    async def bench(ctx):
        await ctx.tick()
        ctx.set(dut.start, 1)
        for k in range(distance + 1):
            ctx.set(dut.done, int(k == distance))
            await ctx.tick()
            ctx.set(dut.start, 0)
        ctx.set(dut.done, 0)
        seen["count"] = ctx.get(dut.count)
        seen["running"] = ctx.get(dut.running)
        for _ in range(3):
            await ctx.tick()
        seen["later"] = ctx.get(dut.count)

    simulate(dut, bench)
    assert seen == {"count": distance + 1, "running": 0, "later": distance + 1}


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="divisor must be >= 4 clock cycles per bit, not 3"):
        UartRx(3)
    with pytest.raises(TypeError, match="divisor must be an integer, not bool"):
        UartTx(True)
    with pytest.raises(ValueError, match="timeout must be >= 1 clock cycle, not 0"):
        FrameParser(0)
    with pytest.raises(ValueError, match="baud 3000000 does not divide the 25 MHz clock"):
        check_baud(3_000_000)
    with pytest.raises(ValueError, match="op must be a byte, not 256"):
        encode_request(256)
    with pytest.raises(ValueError, match="word 40000 does not fit in 2 bytes"):
        words_to_bytes([40000], 2)
    sig = wiring.Signature({"i": In(stream.Signature(signed(16))),
                            "o": Out(stream.Signature(signed(16)))})
    with pytest.raises(ValueError, match="LOAD_A moves 80000 bytes; a frame holds at most 65535"):
        CommandEngine(sig, [{"name": "LOAD_A", "code": 0, "words_in": 40000, "words_out": 0}],
                      b"")


def test_words_round_trip_little_endian():
    data = words_to_bytes([-1, 258, -32768], 2)
    assert data == bytes([0xFF, 0xFF, 0x02, 0x01, 0x00, 0x80])
    assert words_from_bytes(data, 2) == [-1, 258, -32768]


class FakeBoard(Transport):
    """Answers every request with ``status`` (or never, with ``status=None``)."""

    def __init__(self, status):
        self.status, self.pending, self.writes, self.clock = status, b"", 0, 0.0

    def write(self, data):
        self.writes += 1
        if self.status is not None:
            body = bytes([data[1], self.status, 0, 0])
            crc = binascii.crc_hqx(body, 0xFFFF)
            self.pending += b"\x5a" + body + bytes([crc & 0xFF, crc >> 8])

    def read(self, n, timeout):
        if not self.pending:
            self.clock += timeout
            return b""
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def quiet(self, seconds):
        self.clock += seconds
        self.pending = b""

    def seconds(self):
        return self.clock


def test_driver_raises_at_once_on_a_command_error_and_after_retries_on_silence():
    fake = FakeBoard(5)
    with pytest.raises(BoardError, match="op 0x15: BAD_STATE") as error:
        Board(fake).command(0x15)
    assert error.value.name == "BAD_STATE" and fake.writes == 1
    silent = FakeBoard(None)
    with pytest.raises(BoardError, match="failed after 3 attempts: reply timed out"):
        Board(silent, timeout=0.5, retries=2).command(0x01)
    assert silent.writes == 3
    crc = FakeBoard(1)
    with pytest.raises(BoardError, match="failed after 2 attempts: BAD_CRC"):
        Board(crc, retries=1).command(0x01)
    assert crc.writes == 2


class ScriptedBoard(FakeBoard):
    """Answers each request OK with the payload ``replies`` gives for its op (none
    otherwise), and records the ops sent."""

    def __init__(self, replies):
        super().__init__(0)
        self.replies, self.ops = replies, []

    def write(self, data):
        self.writes += 1
        op = data[1]
        self.ops.append(op)
        payload = self.replies.get(op, b"")
        body = bytes([op, 0, len(payload) & 0xFF, len(payload) >> 8]) + payload
        crc = binascii.crc_hqx(body, 0xFFFF)
        self.pending += b"\x5a" + body + bytes([crc & 0xFF, crc >> 8])


@pytest.mark.parametrize("flags", [0x00, 0x07, 0x0F])
def test_run_without_loads_needs_the_weights_on_the_board(flags):
    """``run_images(load=False)`` (``board run --built-in``) reads STATUS first: without A, B,
    C and d loaded it raises before anything is sent; with them it sends no LOAD."""
    from xbarode.board import run_images

    info = bytes([1, 6, 0, 3, 2, 2, 2])           # m 6, 3 classes, 2 steps, 2-byte words
    status = bytes([flags]) + bytes(9)
    fake = ScriptedBoard({0x01: info, 0x02: status})
    board = Board(fake)
    if flags != 0x0F:
        with pytest.raises(BoardError, match=r"^the board holds no weights: build them in "
                                             r"\(xbarode board build --weights FILE\) or let "
                                             r"the host load them$"):
            run_images(board, SMALL_CORE, {}, [], load=False)
        assert fake.ops == [0x01, 0x02]
    else:
        result = run_images(board, SMALL_CORE, {}, [], load=False)
        assert result["results"] == [] and fake.ops == [0x01, 0x02, 0x02]


def board_exchange(frames, cycles_after=900, weights=None):
    """Send ``frames`` to a BoardTop (the 2×3-pixel core, 4 cycles per bit; with ``weights``
    built in) on its ``rx`` pin, one after the other with idle gaps; return the replies
    decoded from ``tx``."""
    from xbarode.hdl.board import BoardTop

    divisor = 4
    dut = BoardTop(SMALL_CORE, divisor, 300, weights=weights)
    levels = [1] * 10
    for frame in frames:
        levels += line_bits(frame, divisor) + [1] * cycles_after
    seen = []

    async def bench(ctx):
        for level in levels:
            ctx.set(dut.rx, level)
            seen.append(ctx.get(dut.tx))
            await ctx.tick()

    simulate(dut, bench)
    data = bytes(decode_line(seen, divisor))
    replies = []
    while data:
        assert data[0] == 0x5A, data
        length = data[3] | data[4] << 8
        body, crc = data[1:5 + length], data[5 + length:7 + length]
        assert binascii.crc_hqx(body, 0xFFFF) == crc[0] | crc[1] << 8
        replies.append((body[0], body[1], body[4:]))
        data = data[7 + length:]
    return replies


def test_board_top_answers_every_frame_through_its_pins():
    good = encode_request(0x01)
    replies = board_exchange([
        good,                                   # INFO
        encode_request(0x15),                   # RUN before any weights
        good[:-1] + bytes([good[-1] ^ 1]),      # a bad CRC
        encode_request(0x2F),                   # an unknown op
        encode_request(0x13, b"\x00"),          # LOAD_D, 1 byte instead of 6
        encode_request(0x13, bytes(6))[:6],     # LOAD_D cut off: the timeout ends it
        encode_request(0x13, bytes([1, 0, 2, 0, 3, 0])),   # LOAD_D
        encode_request(0x02),                   # STATUS
    ])
    assert replies == [
        (0x01, 0, bytes([1, 6, 0, 3, 2, 2, 2])),
        (0x15, 5, b""), (0x01, 1, b""), (0x2F, 3, b""), (0x13, 4, b""), (0x13, 2, b""),
        (0x13, 0, b""),
        # flags: d loaded (bit 3); class 0, no iterations, no cycles; five error replies.
        (0x02, 0, bytes([0x08, 0, 0, 0, 0, 0, 0, 0, 5, 0])),
    ]


def test_board_top_with_built_in_weights_runs_from_reset():
    """Weights built in: STATUS shows A, B, C and d loaded from reset; LOAD_IMAGE and RUN,
    with no weight loads, give the fixed-point model's class and logits."""
    import numpy as np

    from xbarode.sim.core_plan import make_plan, model_results, random_params, weight_load_words

    params = random_params(SMALL_CORE, 6)
    image = np.random.default_rng(6).uniform(0, 1, (1, SMALL_CORE.m))
    words = make_plan(SMALL_CORE, params, image)["images"][0]
    replies = board_exchange([
        encode_request(0x02),                                   # STATUS
        encode_request(0x14, words_to_bytes(words, 2)),         # LOAD_IMAGE
        encode_request(0x15),                                   # RUN
        encode_request(0x16),                                   # READ_LOGITS
    ], cycles_after=1500, weights=weight_load_words(SMALL_CORE, params))
    expected = model_results(SMALL_CORE, params, image)[0]
    assert [(op, status) for op, status, _ in replies] == [(0x02, 0), (0x14, 0), (0x15, 0),
                                                           (0x16, 0)]
    assert replies[0][2][0] == 0x0F           # A, B, C, d loaded; no image, no result
    assert replies[2][2][0] == expected["cls"]
    assert words_from_bytes(replies[3][2], 2) == expected["logits"]
