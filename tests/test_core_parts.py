# amaranth: UnusedElaboratable=no
"""The core's parts on their own: the control signature every op-driven unit shares
(hdl/interface.py) and the core's components (hdl/core_parts.py), each against plain Python,
cycle by cycle. The core's own tests (test_core.py, test_core_training.py) cover them inside
the core against the fixed-point model."""

import numpy as np
import pytest
from amaranth import ClockDomain, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from xbarode.hdl.core import Core, CoreOp
from xbarode.hdl.core_parts import HostPort, VectorBanks
from xbarode.hdl.fourier import Dft2d, FourierConv, FourierOp
from xbarode.hdl.interface import ControlSignature
from xbarode.hdl.tile import CrossbarTile, TileOp
from xbarode.model.core_config import CoreConfig
from xbarode.model.fixed import Format

# The Verilog ports of the control set as docs/interface.md names them (a stream X is
# X__valid, X__ready, X__payload), in the order of the signature's members (a stream's
# payload first, as Amaranth's stream.Signature declares it).
CONTROL_PORTS = ["i__payload", "i__valid", "i__ready", "o__payload", "o__valid", "o__ready",
                 "op", "start", "busy", "done", "overflow", "clear"]


def simulate(dut, bench):
    """Run ``bench`` on ``dut`` with a clock."""
    top = Module()
    top.submodules.dut = dut
    top.domains.sync = ClockDomain()
    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def port_names(signature):
    """The Verilog names of a signature's ports, in order (``__`` joins a path)."""
    return ["__".join(str(part) for part in path) for path, _, _ in signature.flatten(
        signature.create())]


def control_ports(signature):
    return [name for name in port_names(signature)
            if name.split("__")[0] in {"i", "o", "op", "start", "busy", "done", "overflow",
                                       "clear"}]


# --- the control signature --------------------------------------------------------------------

def _units():
    fmt = Format(16, 12)
    common = {"data_format": Format(22, 12), "twiddle_format": Format(18, 16),
              "acc_width": 48, "rounding": "nearest"}
    return [
        ("tile", CrossbarTile(rows=3, cols=2, lanes=2, weight_format=fmt, input_format=fmt,
                              output_format=fmt, acc_width=40), TileOp),
        ("dft", Dft2d(2, 3, **common), FourierOp),
        ("fourier-conv", FourierConv(3, 3, spectrum_format=Format(18, 14), **common),
         FourierOp),
        ("core", Core(CoreConfig(image=(2, 3), lanes=2, classes=3, steps=2)), CoreOp),
    ]


@pytest.mark.parametrize("index", range(4), ids=["tile", "dft", "fourier-conv", "core"])
def test_every_op_driven_unit_declares_the_control_signature(index):
    name, unit, op = _units()[index]
    signature = unit.signature
    assert isinstance(signature, ControlSignature), name
    assert signature.op is op
    assert control_ports(signature) == CONTROL_PORTS
    assert signature.members["op"].shape is op


def test_control_signature_places_side_ports_before_and_results_after():
    signature = ControlSignature(CoreOp, 9, 12, side={"side": wiring.In(3)},
                                 results={"cls": wiring.Out(2)})
    assert port_names(signature) == ["side", *CONTROL_PORTS, "cls"]
    flows = {name: member.flow for name, member in signature.members.items()}
    assert flows == {"side": wiring.In, "i": wiring.In, "o": wiring.Out, "op": wiring.In,
                     "start": wiring.In, "busy": wiring.Out, "done": wiring.Out,
                     "overflow": wiring.Out, "clear": wiring.In, "cls": wiring.Out}
    ports = signature.create()
    assert (len(ports.i.payload), len(ports.o.payload)) == (9, 12)
    assert ports.i.payload.shape().signed and ports.o.payload.shape().signed
    assert (signature.word, signature.out_word) == (9, 12)
    assert ControlSignature(TileOp, 7).out_word == 7


@pytest.mark.parametrize(("args", "error", "message"), [
    ((int, 8), TypeError, r"^op must be an enum with a shape, not <class 'int'>$"),
    ((CoreOp, 0), ValueError, r"^word must be >= 1, not 0$"),
    ((CoreOp, 8, -1), ValueError, r"^out_word must be >= 1, not -1$"),
    ((CoreOp, 8.0), TypeError, r"^word must be an integer, not float$"),
    ((CoreOp, True), TypeError, r"^word must be an integer, not bool$"),
])
def test_control_signature_rejects_bad_arguments(args, error, message):
    with pytest.raises(error, match=message):
        ControlSignature(*args)


# --- the banked vectors -------------------------------------------------------------------------

def test_vector_banks_read_back_each_lane_one_cycle_later():
    lanes, depth, width = 3, 5, 7
    dut = VectorBanks(lanes=lanes, depth=depth, width=width)
    rng = np.random.default_rng(1)
    memory = [[0] * depth for _ in range(lanes)]   # the reference: a list per lane
    seen = []

    async def bench(ctx):
        expected_next = None
        for _ in range(60):
            writes = [(rng.integers(0, depth), rng.integers(-64, 64), rng.random() < 0.5)
                      for _ in range(lanes)]
            for k, (addr, data, en) in enumerate(writes):
                ctx.set(dut.wr_addr[k], int(addr))
                ctx.set(dut.wr_data[k], int(data))
                ctx.set(dut.wr_en[k], int(en))
            read = int(rng.integers(0, depth))
            ctx.set(dut.rd_addr, read)
            if expected_next is not None:
                seen.append(([ctx.get(dut.rd_data[k]) for k in range(lanes)], expected_next))
            # The read of this edge sees the memory before this edge's writes.
            expected_next = [memory[k][read] for k in range(lanes)]
            for k, (addr, data, en) in enumerate(writes):
                if en:
                    memory[k][addr] = int(data)
            await ctx.tick()

    simulate(dut, bench)
    assert len(seen) == 59
    for got, expected in seen:
        assert got == expected


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"lanes": 0, "depth": 2, "width": 4}, ValueError, r"^lanes must be >= 1, not 0$"),
    ({"lanes": 2, "depth": 2.5, "width": 4}, TypeError, r"^depth must be an integer, not float$"),
    ({"lanes": 2, "depth": 2, "width": True}, TypeError, r"^width must be an integer, not bool$"),
])
def test_vector_banks_reject_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        VectorBanks(**kwargs)


# --- the host port --------------------------------------------------------------------------

def host_port(**changes):
    params = {"m": 5, "lanes": 2, "steps": 3, "classes": 4, "word": 12, "out_word": 14,
              "state_width": 10, "act_width": 9, "grad_width": 11}
    return HostPort(**{**params, **changes})


async def start(ctx, dut, op):
    """Pulse ``start`` with ``op`` for one cycle; returns the outputs seen in that cycle."""
    ctx.set(dut.op, op)
    ctx.set(dut.start, 1)
    seen = {"tile_start": [ctx.get(dut.tile_start[k]) for k in range(3)],
            "tile_op": ctx.get(dut.tile_op), "done": ctx.get(dut.done)}
    await ctx.tick()
    ctx.set(dut.start, 0)
    return seen


def test_host_port_load_image_writes_word_j_to_lane_j_mod_lanes():
    dut = host_port()
    rng = np.random.default_rng(2)
    words = rng.integers(-512, 512, dut.m).tolist()
    writes, dones = [], []

    async def bench(ctx):
        assert (await start(ctx, dut, CoreOp.LOAD_IMAGE))["done"] == 0
        sent = 0
        for _ in range(40):   # the words, then idle cycles (no second done)
            valid = sent < len(words) and rng.random() < 0.6
            ctx.set(dut.i.valid, int(valid))
            ctx.set(dut.i.payload, words[sent] if valid else 0)
            if ctx.get(dut.done):
                dones.append(sent)
            for k in range(dut.lanes):
                if ctx.get(dut.image_en[k]):
                    writes.append((ctx.get(dut.image_addr), k, ctx.get(dut.image_data)))
            if valid and ctx.get(dut.i.ready):
                sent += 1
            await ctx.tick()

    simulate(dut, bench)
    assert writes == [(j // 2, j % 2, word) for j, word in enumerate(words)]
    assert dones == [len(words) - 1]   # done with the last word, once


def bank_reader(dut, name, banks, lanes):
    """A testbench's model of banked memories behind ``{name}_addr``/``{name}_data``: each
    cycle offers the words at the address of the cycle before (lane k holds word j ≡ k)."""
    state = {"addr": 0}

    def offer(ctx):
        for k in range(lanes):
            ctx.set(getattr(dut, f"{name}_data")[k], banks[k].get(state["addr"], 0))

    def sample(ctx):
        state["addr"] = ctx.get(getattr(dut, f"{name}_addr"))
    return offer, sample


def banked(vectors, lanes, chunks):
    """``vectors[n][j]`` at address ``n·chunks + j // lanes`` of lane ``j % lanes``."""
    banks = [{} for _ in range(lanes)]
    for n, vector in enumerate(vectors):
        for j, word in enumerate(vector):
            banks[j % lanes][n * chunks + j // lanes] = word
    return banks


async def read_words(ctx, dut, rng, *, offer=None, sample=None, limit=80):
    """Take words from ``o`` with a random ``ready`` until ``done``; the words and the count
    of words that had moved when ``done`` came (and whether it came with a word)."""
    words = []
    for _ in range(limit):
        if offer:
            offer(ctx)
        ready = rng.random() < 0.7
        ctx.set(dut.o.ready, int(ready))
        moved = ready and ctx.get(dut.o.valid)
        if moved:
            words.append(ctx.get(dut.o.payload))
        done = ctx.get(dut.done)
        if sample:
            sample(ctx)
        await ctx.tick()
        if done:
            return words, moved
    raise AssertionError(f"no done within {limit} cycles")


@pytest.mark.parametrize(("op", "first"), [(CoreOp.READ_STATE, 3),
                                           (CoreOp.READ_TRAJECTORY, 0)])
def test_host_port_reads_the_trajectory_banks_in_order(op, first):
    dut = host_port()
    rng = np.random.default_rng(int(op.value))
    trajectory = rng.integers(-512, 512, (dut.steps + 1, dut.m)).tolist()
    banks = banked(trajectory, dut.lanes, 3)   # chunks = ceil(5 / 2)
    offer, sample = bank_reader(dut, "traj", banks, dut.lanes)
    got = {}

    async def bench(ctx):
        await start(ctx, dut, op)
        got["words"], got["last_moved"] = await read_words(ctx, dut, rng, offer=offer,
                                                           sample=sample)

    simulate(dut, bench)
    assert got["words"] == [word for vector in trajectory[first:] for word in vector]
    assert got["last_moved"]


@pytest.mark.parametrize("op", [CoreOp.READ_LOGITS, CoreOp.READ_STATUS])
def test_host_port_reads_logits_and_status_words(op):
    dut = host_port()
    rng = np.random.default_rng(5)
    logits = rng.integers(-256, 256, dut.classes).tolist()
    status = rng.integers(0, 512, dut.steps).tolist()
    got = {}

    async def bench(ctx):
        for k, value in enumerate(logits):
            ctx.set(dut.logits[k], value)
        for k, value in enumerate(status):
            ctx.set(dut.status[k], value)
        await start(ctx, dut, op)
        got["words"], got["last_moved"] = await read_words(ctx, dut, rng)

    simulate(dut, bench)
    assert got["words"] == (logits if op == CoreOp.READ_LOGITS else status)
    assert got["last_moved"]


@pytest.mark.parametrize(("op", "tile", "code", "fourier"), [
    (CoreOp.LOAD_A, 0, TileOp.LOAD_W, False), (CoreOp.LOAD_B, 1, TileOp.LOAD_W, False),
    (CoreOp.LOAD_C, 2, TileOp.LOAD_W, False), (CoreOp.LOAD_D, 2, TileOp.LOAD_BIAS, False),
    (CoreOp.LOAD_A, 0, FourierOp.LOAD_SPECTRUM, True),
    (CoreOp.LOAD_B, 1, FourierOp.LOAD_SPECTRUM, True)])
def test_host_port_passes_a_load_to_its_tile_until_the_tile_is_done(op, tile, code, fourier):
    dut = host_port(fourier=fourier)
    rng = np.random.default_rng(tile)
    words = rng.integers(-2048, 2048, 6).tolist()
    got = {"words": [], "done": []}

    async def bench(ctx):
        seen = await start(ctx, dut, op)
        got["start"] = seen
        sent = 0
        for _ in range(30):
            valid = sent < len(words) and rng.random() < 0.7
            ready = rng.random() < 0.7   # the tile's
            ctx.set(dut.i.valid, int(valid))
            ctx.set(dut.i.payload, words[sent] if valid else 0)
            ctx.set(dut.tile_i[tile].ready, int(ready))
            moved = valid and ctx.get(dut.i.ready)
            assert ctx.get(dut.i.ready) == ready
            assert [ctx.get(dut.tile_i[k].valid) for k in range(3)] == \
                [int(valid) if k == tile else 0 for k in range(3)]
            if moved:
                got["words"].append(ctx.get(dut.tile_i[tile].payload))
                sent += 1
            last = moved and sent == len(words)
            ctx.set(dut.tile_done[tile], int(last))   # the tile is done with its last word
            got["done"].append(ctx.get(dut.done))
            await ctx.tick()
            ctx.set(dut.tile_done[tile], 0)
            if last:
                break

    simulate(dut, bench)
    assert got["start"]["tile_start"] == [int(k == tile) for k in range(3)]
    assert got["start"]["tile_op"] == code.value
    assert got["words"] == words
    assert got["done"][-1] == 1 and sum(got["done"]) == 1


@pytest.mark.parametrize(("op", "code", "fourier", "training"), [
    (CoreOp.READ_WEIGHTS, TileOp.READ_W, False, False),
    (CoreOp.READ_WEIGHTS, TileOp.READ_W, True, False),
    (CoreOp.READ_GRAD, TileOp.READ_G, False, True)])
def test_host_port_reads_the_tiles_one_after_the_other(op, code, fourier, training):
    dut = host_port(fourier=fourier, training=training)
    rng = np.random.default_rng(int(op.value) + fourier)
    order = [2] if fourier else [0, 1, 2]
    tile_words = {k: rng.integers(-4096, 4096, 3 + k).tolist() for k in order}
    lam = rng.integers(-1024, 1024, dut.m).tolist() if training else []
    offer, sample = bank_reader(dut, "lam", banked([lam], dut.lanes, 3), dut.lanes)
    got = {"starts": [], "words": []}

    async def bench(ctx):
        # The tiles: each, once started, offers its words and is done with the last.
        pending = {}
        ctx.set(dut.op, op)
        ctx.set(dut.start, 1)
        for _ in range(80):
            offer(ctx)
            active = next(iter(pending), None)
            if active is not None:
                ctx.set(dut.tile_o[active].valid, 1)
                ctx.set(dut.tile_o[active].payload, pending[active][0])
            ready = rng.random() < 0.7
            ctx.set(dut.o.ready, int(ready))
            moved = ready and ctx.get(dut.o.valid)
            if moved:
                got["words"].append(ctx.get(dut.o.payload))
            last = active is not None and moved and len(pending[active]) == 1
            if active is not None:
                ctx.set(dut.tile_done[active], int(last))
                assert ctx.get(dut.tile_o[active].ready) == ready
            done = ctx.get(dut.done)
            started = [k for k in range(3) if ctx.get(dut.tile_start[k])]
            got["starts"] += [(k, ctx.get(dut.tile_op)) for k in started]
            sample(ctx)
            await ctx.tick()
            ctx.set(dut.start, 0)
            if active is not None:
                ctx.set(dut.tile_done[active], 0)
                ctx.set(dut.tile_o[active].valid, 0)
                if moved:
                    pending[active] = pending[active][1:]
                    if not pending[active]:
                        del pending[active]
            for k in started:
                pending[k] = list(tile_words[k])
            if done:
                return
        raise AssertionError("no done")

    simulate(dut, bench)
    assert got["starts"] == [(k, code.value) for k in order]
    assert got["words"] == [word for k in order for word in tile_words[k]] + lam
