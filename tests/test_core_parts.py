"""The core's parts on their own: the control signature every op-driven unit shares
(hdl/interface.py) and the core's components (hdl/core_parts.py, core_chain.py,
core_forward.py, core_adjoint.py), each against plain Python, cycle by cycle; where a part
drives others (tiles, a chain engine, banks), the testbench plays them. The core's own tests
(test_core.py, test_core_training.py) cover the parts inside the core against the
fixed-point model."""

import numpy as np
import pytest
from amaranth import ClockDomain, Fragment, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from xbarode.hdl.core import Core, CoreOp
from xbarode.hdl.core_adjoint import AdjointController
from xbarode.hdl.core_chain import DirectChain, FourierChain
from xbarode.hdl.core_forward import ForwardController
from xbarode.hdl.core_parts import HostPort, ImageBuffer, VectorBanks
from xbarode.hdl.fourier import Dft2d, FourierConv, FourierOp
from xbarode.hdl.interface import ControlSignature
from xbarode.hdl.ram import memory_attrs
from xbarode.hdl.tile import CrossbarTile, TileOp
from xbarode.model.core_config import CoreConfig
from xbarode.model.fixed import Format, Overflow, Rounder, narrow, site_seed
from xbarode.sim.verilog import write_verilog

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

def _unit(name):
    """A small unit of each op-driven kind, and its op enum."""
    fmt = Format(16, 12)
    common = {"data_format": Format(22, 12), "twiddle_format": Format(18, 16),
              "acc_width": 48, "rounding": "nearest"}
    if name == "tile":
        return CrossbarTile(rows=3, cols=2, lanes=2, weight_format=fmt, input_format=fmt,
                            output_format=fmt, acc_width=40), TileOp
    if name == "dft":
        return Dft2d(2, 3, **common), FourierOp
    if name == "fourier-conv":
        return FourierConv(3, 3, spectrum_format=Format(18, 14), **common), FourierOp
    return Core(CoreConfig(image=(2, 3), lanes=2, classes=3, steps=2)), CoreOp


@pytest.mark.parametrize("name", ["tile", "dft", "fourier-conv", "core"])
def test_every_op_driven_unit_declares_the_control_signature(name):
    unit, op = _unit(name)
    Fragment.get(unit, None)   # the unit elaborates (a unit is built to be used)
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


@pytest.mark.parametrize(("depth", "width", "lut_ram"), [
    (98, 16, True),      # the 28×28 image buffer's and tile C's banks: 1 568 bits
    (128, 16, True),     # 2 048 bits, the largest kept out of block RAM
    (129, 16, False),    # a bit more: the synthesis tool's choice (a block RAM)
    (392, 16, False),    # the 28×28 state's banks
])
def test_small_vector_banks_ask_for_lut_ram(tmp_path, depth, width, lut_ram):
    # A block RAM holds 18 432 bits; a bank of a ninth of that asks for LUT RAM, so a 28×28
    # core's small banks leave the block RAMs to the spectra (hdl/ram.py).
    assert memory_attrs(depth, width) == ({"ram_style": "distributed"} if lut_ram else {})
    text = write_verilog(VectorBanks(lanes=3, depth=depth, width=width), "banks",
                         tmp_path).read_text()
    assert text.count('ram_style = "distributed"') == (3 if lut_ram else 0)


# --- the image buffer -----------------------------------------------------------------------
# --- the image buffer -----------------------------------------------------------------------

@pytest.mark.parametrize(("m", "lanes", "seed", "channels"), [
    (5, 2, 0, 1), (6, 3, 1, 1), (4, 4, 2, 1), (1, 1, 3, 1), (8, 3, 4, 2), (9, 2, 5, 3)])
def test_image_buffer_takes_whole_images_unless_locked(m, lanes, seed, channels):
    # With channels an image is channel 0 (m / channels words); the rest is never written by
    # the stream and reads 0 (the augmented state's zeros).
    dut = ImageBuffer(m=m, lanes=lanes, width=8, channels=channels)
    rng = np.random.default_rng(seed)
    chunks = -(-m // lanes)
    words = {}              # the reference buffer: word index -> value
    state = {"count": 0}    # words of the image arriving
    checks = []

    async def bench(ctx):
        for _ in range(200):
            valid, lock = rng.random() < 0.7, rng.random() < 0.2
            discard = rng.random() < 0.05
            host = rng.random() < 0.1 and not valid       # a LOAD_IMAGE word
            payload = int(rng.integers(-128, 128))
            host_index = int(rng.integers(0, m // channels))
            read = int(rng.integers(0, chunks))
            ctx.set(dut.image.valid, int(valid))
            ctx.set(dut.image.payload, payload)
            ctx.set(dut.lock, int(lock))
            ctx.set(dut.discard, int(discard))
            ctx.set(dut.rd_addr, read)
            ctx.set(dut.wr_addr, host_index // lanes)
            ctx.set(dut.wr_data, payload)
            for k in range(lanes):
                ctx.set(dut.wr_en[k], int(host and k == host_index % lanes))
            checks.append((ctx.get(dut.image.ready), not lock, "ready"))
            checks.append((ctx.get(dut.arriving), state["count"] != 0, "arriving"))
            expected = [words.get(read * lanes + k, 0) for k in range(lanes)]
            # The edge: the reference takes what the buffer should.
            if host:
                words[host_index] = payload
            if valid and not lock:
                words[state["count"]] = payload
                state["count"] = (state["count"] + 1) % (m // channels)
            if discard:
                state["count"] = 0
            await ctx.tick()
            checks.append(([ctx.get(dut.rd_data[k]) for k in range(lanes)], expected,
                           "words"))

    simulate(dut, bench)
    assert sum(what == "words" and any(got) for got, _, what in checks) > 20
    for got, expected, what in checks:
        assert (got if what == "words" else bool(got)) == expected, what


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
        got["decision"] = await start(ctx, dut, op)
        # The tile starts in the next cycle (a register after the decision).
        got["start"] = {"tile_start": [ctx.get(dut.tile_start[k]) for k in range(3)],
                        "tile_op": ctx.get(dut.tile_op)}
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
    assert got["decision"]["tile_start"] == [0, 0, 0]
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


# --- the forward controller ---------------------------------------------------------------------

def _sat(values, width):
    low, high = -(1 << (width - 1)), (1 << (width - 1)) - 1
    return [min(max(int(v), low), high) for v in values]


def _chain_f(v, width):
    """The test's stand-in for h·B·φ(A v): some nonlinear map of integers."""
    m = len(v)
    return _sat([(v[i] - max(v[(i + 1) % m], 0) // 2) // 4 for i in range(m)], width)


def _chain_masked(v, width):
    """… and for the Neumann terms' masked chain: near its derivative, so that Newton
    converges (or not, by max_iter and tol)."""
    return _sat([v[i] // 4 for i in range(len(v))], width)


def _logits(x, classes):
    return [(sum(x) * (j + 1) + 7 * x[j % len(x)]) % 200 - 100 for j in range(classes)]


def forward_reference(z0, *, steps, method, neumann_terms, max_iter, tol, width, classes):
    """RUN as the equations in hdl/core_forward.py's docstring state it."""
    sat = lambda v: _sat(v, width)   # noqa: E731
    z, trajectory, status = list(z0), [], []
    iterations, converged, saturated = 0, 1, False

    def add(*terms):
        nonlocal saturated
        exact = [sum(t) for t in zip(*terms, strict=True)]
        saturated |= sat(exact) != exact
        return sat(exact)
    for _ in range(steps):
        if method == "euler":
            z = add(z, _chain_f(z, width))
            status.append(0x100)
        else:
            w, it = add(z, _chain_f(z, width)), 0
            while True:
                g = add(w, [-x for x in z], [-x for x in _chain_f(w, width)])
                conv = max(abs(x) for x in g) <= tol
                if conv or it == max_iter:
                    status.append(it | (int(conv) << 8))
                    converged &= int(conv)
                    break
                d = g
                for _ in range(neumann_terms):
                    d = add(g, _chain_masked(d, width))
                w = add(w, [-x for x in d])
                it += 1
                iterations += 1
            z = w
        trajectory.append(z)
    logits = _logits(z, classes)
    return {"z": z, "trajectory": trajectory, "status": status, "iterations": iterations,
            "converged": converged, "logits": logits, "cls": logits.index(max(logits)),
            "saturated": saturated}


class _Banks:
    """A testbench's banked vectors: ``read(addr)`` one cycle late, writes at the edge."""

    def __init__(self, m, lanes, init=None):
        self.m, self.lanes = m, lanes
        self.words = {}
        if init is not None:
            for j, word in enumerate(init):
                self.words[(j // lanes, j % lanes)] = word

    def chunk(self, addr):
        return [self.words.get((addr, k), 0) for k in range(self.lanes)]

    def vector(self, base=0):
        return [self.words.get((base + j // self.lanes, j % self.lanes), 0)
                for j in range(self.m)]


def _fake_chain(ctx, dut, chain, rng):
    """At the edge: the chain played by the testbench — its result some cycles after start
    (``_chain_f`` or, where ``masked``, ``_chain_masked`` of the operand), done for one
    cycle."""
    if chain["left"] == 0:
        chain["left"] = None
    elif chain["left"] is not None:
        chain["left"] -= 1
    if ctx.get(dut.chain.start):
        assert chain["left"] is None, "a chain started while one runs"
        f = _chain_masked if ctx.get(dut.chain.masked) else _chain_f
        result = f(chain["operand"].vector(), len(dut.wr_data[0]))
        chain["result"] = _Banks(dut.m, dut.lanes, init=result)
        chain["left"] = int(rng.integers(2, 9))


def _fake_c(ctx, dut, c, c_word, inputs, classes):
    """At the edge: tile C played by the testbench — after FORWARD, the logits of its inputs
    (``_logits``), then done a cycle after the last."""
    if c_word is not None:
        c["words"] = c["words"][1:]
        if not c["words"]:
            c["wait"] = 1
    elif c["wait"] == 0:
        c["wait"] = None
    elif c["wait"] is not None:
        c["wait"] -= 1
    if ctx.get(dut.c_start):
        assert ctx.get(dut.c_op) == TileOp.FORWARD
        c["words"] = _logits(inputs.vector(), classes)


def _write_banks(ctx, dut, banks, operand):
    """At the edge: the controller's writes into the banks, C's inputs and the operand."""
    addr, t_addr = ctx.get(dut.wr_addr), ctx.get(dut.t_addr)
    for k in range(dut.lanes):
        data = ctx.get(dut.wr_data[k])
        for name in ("z", "w", "g", "d"):
            if ctx.get(getattr(dut, f"{name}_en")[k]):
                banks[name].words[(addr, k)] = data
        if ctx.get(dut.t_en[k]):
            banks["t"].words[(t_addr, k)] = data
        if ctx.get(dut.chain.x_en[k]):
            operand.words[(ctx.get(dut.chain.x_addr), k)] = ctx.get(dut.chain.x_data[k])
    for t in range(dut.lanes_c):
        if ctx.get(dut.c_x_en[t]):
            banks["c"].words[(ctx.get(dut.c_x_addr), t)] = ctx.get(dut.c_x_data[t])


def run_forward(dut, z0, classes, rng, wait=0):
    """RUN on ``dut`` with the chain engine, the banks, the image buffer (holding ``z0``; an
    image arriving for ``wait`` cycles after start) and tile C played by the testbench."""
    m, lanes, chunks = dut.m, dut.lanes, dut.chunks
    banks = {name: _Banks(m, lanes) for name in ("z", "w", "g", "d", "t")}
    banks["i"] = _Banks(m, lanes, init=z0)
    banks["c"] = _Banks(m, dut.lanes_c)
    chain = {"operand": _Banks(m, lanes), "result": _Banks(m, lanes), "left": None}
    c = {"words": [], "wait": None}
    seen = {"done": 0, "saturated": False, "locked_while_arriving": False}

    async def bench(ctx):
        read = {"vec": 0, "r": 0}
        ctx.set(dut.start, 1)
        for cycle in range(4000):
            # Inputs for this cycle: the words at the addresses of the cycle before.
            arriving = 1 <= cycle <= wait
            ctx.set(dut.image_wait, int(arriving))
            seen["locked_while_arriving"] |= arriving and bool(ctx.get(dut.image_lock))
            if ctx.get(dut.image_lock):
                seen.setdefault("lock_from", cycle)
            for name in ("z", "w", "g", "d", "i"):
                for k, word in enumerate(banks[name].chunk(read["vec"])):
                    ctx.set(getattr(dut, f"{name}_data")[k], word)
            for k, word in enumerate(chain["result"].chunk(read["r"])):
                ctx.set(dut.chain.r_data[k], word)
            ctx.set(dut.chain.done, int(chain["left"] == 0))
            c_word = c["words"][0] if c["words"] and rng.random() < 0.6 else None
            ctx.set(dut.c_y.valid, int(c_word is not None))
            ctx.set(dut.c_y.payload, c_word or 0)
            ctx.set(dut.c_done, int(c["wait"] == 0))
            if ctx.get(dut.done):
                seen["done"] += 1
                seen["at_done"] = {
                    "cls": ctx.get(dut.cls), "converged": ctx.get(dut.converged),
                    "iterations": ctx.get(dut.iterations),
                    "status": [ctx.get(s) for s in dut.status],
                    "logits": [ctx.get(s) for s in dut.logits]}
                return
            seen["saturated"] |= bool(ctx.get(dut.saturated))
            read = {"vec": ctx.get(dut.vec_addr), "r": ctx.get(dut.chain.r_addr)}
            _write_banks(ctx, dut, banks, chain["operand"])
            _fake_chain(ctx, dut, chain, rng)
            _fake_c(ctx, dut, c, c_word, banks["c"], classes)
            await ctx.tick()
            ctx.set(dut.start, 0)
        raise AssertionError("RUN did not end")

    simulate(dut, bench)
    seen["z"] = banks["z"].vector()
    seen["trajectory"] = [banks["t"].vector(n * chunks) for n in range(dut.steps + 1)]
    seen["c_inputs"] = banks["c"].vector()
    return seen


@pytest.mark.parametrize(("method", "neumann_terms", "max_iter", "tol", "seed", "lanes",
                          "lanes_c", "wait"), [
    ("euler", 0, 0, 0, 0, 2, 2, 0),
    ("implicit_euler", 2, 4, 1, 1, 2, 1, 3),   # two steps converge, the third does not
    ("implicit_euler", 0, 3, 0, 2, 4, 2, 0),   # no Neumann terms: δ = G
    ("implicit_euler", 1, 1, 0, 3, 4, 1, 1),   # the Newton limit reached: not converged
    ("implicit_euler", 2, 4, 0, 4, 2, 2, 2),   # tol = 0: converged at G = 0
    ("euler", 0, 0, 0, 5, 4, 4, 0),            # one chunk of A: C's copy in one cycle
])
def test_forward_controller_integrates_as_the_equations_say(method, neumann_terms, max_iter,
                                                            tol, seed, lanes, lanes_c, wait):
    m, steps, classes, width = 5, 3, 4, 8
    dut = ForwardController(m=m, lanes=lanes, steps=steps, classes=classes, method=method,
                            neumann_terms=neumann_terms, max_iter=max_iter, tol=tol,
                            state_width=width, act_width=9, x_width=width, r_width=width,
                            c_width=9, lanes_c=lanes_c)
    rng = np.random.default_rng(seed)
    z0 = rng.integers(-60, 60, m).tolist()
    if method == "euler":
        z0[0] = 127   # saturates in the first combine
    expected = forward_reference(z0, steps=steps, method=method, neumann_terms=neumann_terms,
                                 max_iter=max_iter, tol=tol, width=width, classes=classes)
    seen = run_forward(dut, z0, classes, rng, wait=wait)
    assert seen["done"] == 1
    assert seen["z"] == expected["z"]
    # z_0 (copied from the image buffer once no image arrives; locked from that cycle).
    assert seen["trajectory"] == [z0] + expected["trajectory"]
    assert not seen["locked_while_arriving"] and seen["lock_from"] == wait + 1
    assert seen["c_inputs"] == expected["z"]
    assert seen["at_done"]["status"] == expected["status"]
    assert seen["at_done"]["iterations"] == expected["iterations"]
    assert seen["at_done"]["converged"] == expected["converged"]
    assert seen["at_done"]["logits"] == expected["logits"]
    assert seen["at_done"]["cls"] == expected["cls"]
    assert seen["saturated"] == expected["saturated"]
    # The cases the rows are for.
    assert expected["saturated"] == (seed in (0, 1, 3, 5))
    assert [s >> 8 for s in expected["status"]] == \
        {0: [1] * 3, 1: [1, 1, 0], 2: [1] * 3, 3: [0] * 3, 4: [1] * 3, 5: [1] * 3}[seed]


# --- the chain engines ----------------------------------------------------------------------------

def test_direct_chain_streams_relu_then_the_recorded_mask_into_b():
    m, lanes, act = 5, 2, 6
    dut = DirectChain(m=m, lanes=lanes, act_width=act, u_width=8, s_width=act, x_width=7,
                      r_width=9)
    rng = np.random.default_rng(7)
    first = [5, 0, -3, 31, -1]   # relu: 5, 0, 0, 31, 0; mask 1 0 0 1 0 (H(0) = 0)
    second = [-7, 9, 4, -2, 11]  # masked by the first: -7, 0, 0, -2, 0
    third = [1, 2, 3, 4, 5]      # still the first's mask (a masked chain records none)
    got = []

    async def bench(ctx):
        for words, masked in ((first, 0), (second, 1), (third, 1)):
            ctx.set(dut.chain.masked, masked)
            ctx.set(dut.chain.start, 1)
            ops = (ctx.get(dut.a_start), ctx.get(dut.a_op), ctx.get(dut.b_start),
                   ctx.get(dut.b_op))
            assert ops == (1, TileOp.FORWARD, 1, TileOp.TRANSPOSED_STREAM)
            await ctx.tick()
            ctx.set(dut.chain.start, 0)
            assert ctx.get(dut.a_start) == 0   # only in the cycle of start
            s_words, pending, dones = [], list(words), 0
            for cycle in range(40):
                valid = bool(pending) and rng.random() < 0.6
                ctx.set(dut.a_y.valid, int(valid))
                ctx.set(dut.a_y.payload, pending[0] if valid else 0)
                b_done = not pending and cycle % 3 == 0   # B ends some cycles later
                ctx.set(dut.b_done, int(b_done))
                if ctx.get(dut.b_s.valid):
                    s_words.append(ctx.get(dut.b_s.payload))
                dones += ctx.get(dut.chain.done)
                assert ctx.get(dut.chain.done) == int(b_done)
                await ctx.tick()
                ctx.set(dut.b_done, 0)
                if valid:
                    pending.pop(0)
                if b_done:
                    break
            got.append((s_words, dones))

    simulate(dut, bench)
    assert got == [([5, 0, 0, 31, 0], 1), ([-7, 0, 0, -2, 0], 1), ([1, 0, 0, 4, 0], 1)]


def test_direct_chain_passes_the_operand_and_the_result_through():
    dut = DirectChain(m=5, lanes=2, act_width=6, u_width=8, s_width=6, x_width=7, r_width=9)

    async def bench(ctx):
        ctx.set(dut.chain.x_addr, 2)
        ctx.set(dut.chain.r_addr, 3)
        for k, (x, r) in enumerate(((-60, 200), (33, -255))):
            ctx.set(dut.chain.x_data[k], x)
            ctx.set(dut.chain.x_en[k], k)
            ctx.set(dut.b_y_data[k], r)
        assert (ctx.get(dut.a_x_addr), ctx.get(dut.b_y_addr), ctx.get(dut.a_x_en)) == (2, 3, 2)
        assert [ctx.get(dut.a_x_data[k]) for k in range(2)] == [-60, 33]
        assert [ctx.get(dut.chain.r_data[k]) for k in range(2)] == [200, -255]
        await ctx.tick()

    simulate(dut, bench)


def _fake_unit(ctx, dut, name, state, rng):
    """One cycle of a Fourier unit played by the testbench: LOAD_REAL takes words on ``i``
    (done with the last), CONV is done two cycles later, READ_REAL offers ``state["out"]`` on
    ``o`` (done with the last). Call before reading the engine's outputs; returns a function
    to call after them (at the edge)."""
    i, o = getattr(dut, f"{name}_i"), getattr(dut, f"{name}_o")
    done = getattr(dut, f"{name}_done")
    busy = state.get("busy")
    offer = busy == "read" and state["out"] and rng.random() < 0.7
    ready = busy == "load" and rng.random() < 0.7
    ctx.set(o.valid, int(bool(offer)))
    ctx.set(o.payload, state["out"][0] if offer else 0)
    ctx.set(i.ready, int(ready))
    conv_done = busy == "conv" and state["wait"] == 0

    def edge():
        last_in = ready and ctx.get(i.valid) and len(state["in"]) == state["count"] - 1
        last_out = offer and ctx.get(o.ready) and len(state["out"]) == 1
        ctx.set(done, int(bool(last_in or last_out or conv_done)))   # done with the last word
        if ready and ctx.get(i.valid):
            state["in"].append(ctx.get(i.payload))
        if offer and ctx.get(o.ready):
            state["out"] = state["out"][1:]
        if busy == "conv":
            state["wait"] -= 1
        if last_in or last_out or conv_done:
            state["busy"] = None
        if ctx.get(getattr(dut, f"{name}_start")):
            op = ctx.get(getattr(dut, f"{name}_op"))
            state["ops"].append(op)
            state["busy"] = {FourierOp.LOAD_REAL: "load", FourierOp.CONV: "conv",
                             FourierOp.READ_REAL: "read"}[op]
            state["wait"] = 2
            if op == FourierOp.LOAD_REAL:
                state["in"] = []
            if op == FourierOp.READ_REAL:
                state["out"] = list(state["result"])
    return edge


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_fourier_chain_narrows_and_shifts_between_the_units(rounding):
    m, lanes, seed, h_shift = 5, 2, 0xACE1ACE1, 2
    sf, af, df = Format(8, 3), Format(8, 2), Format(14, 5)
    dut = FourierChain(m=m, lanes=lanes, state_format=sf, act_format=af, data_format=df,
                       h_shift=h_shift, rounding=rounding, lfsr_seed=seed, unit_word=16)
    rng = np.random.default_rng(9)
    v = rng.integers(-128, 128, m).tolist()
    # What the units' convolutions give: negative words (relu), words that saturate.
    a_out = [-900, 8100, 301, -5, 997]
    b_out = [700, -1500, 8000, 35, -9000]
    units = {"a": {"ops": [], "result": a_out, "count": m},
             "b": {"ops": [], "result": b_out, "count": m}}
    seen = {"done": 0, "saturated": 0, "r": []}

    async def bench(ctx):
        for j, word in enumerate(v):   # the operand, as the controller writes it
            for k in range(lanes):
                ctx.set(dut.chain.x_en[k], int(k == j % lanes))
            ctx.set(dut.chain.x_addr, j // lanes)
            ctx.set(dut.chain.x_data[j % lanes], word)
            await ctx.tick()
        for k in range(lanes):
            ctx.set(dut.chain.x_en[k], 0)
        ctx.set(dut.chain.start, 1)
        for _ in range(200):
            edges = [_fake_unit(ctx, dut, name, units[name], rng) for name in ("a", "b")]
            seen["saturated"] += ctx.get(dut.chain.saturated)
            for edge in edges:
                edge()
            done = ctx.get(dut.chain.done)   # with the unit's done, set at the edge
            await ctx.tick()
            ctx.set(dut.chain.start, 0)
            if done:
                seen["done"] += 1
                break
        for addr in range(3):   # the result, one cycle after its address
            ctx.set(dut.chain.r_addr, addr)
            await ctx.tick()
            seen["r"] += [ctx.get(dut.chain.r_data[k]) for k in range(lanes)]

    simulate(dut, bench)
    # The model's narrowings (xbarode.model.fixed), their sites' LFSRs as the core seeds them.
    rounder_u = Rounder(rounding, site_seed(seed, 0))
    rounder_dz = Rounder(rounding, site_seed(seed, 1))
    overflow = Overflow()
    u = narrow(np.array(a_out, dtype=np.int64), df.frac - af.frac, af, rounder_u, overflow)
    dz = narrow(np.array(b_out, dtype=np.int64), df.frac + h_shift - sf.frac, sf, rounder_dz,
                overflow)
    assert units["a"]["ops"] == [FourierOp.LOAD_REAL, FourierOp.CONV, FourierOp.READ_REAL]
    assert units["b"]["ops"] == [FourierOp.LOAD_REAL, FourierOp.CONV, FourierOp.READ_REAL]
    assert units["a"]["in"] == [word << (df.frac - sf.frac) for word in v]
    assert units["b"]["in"] == [max(int(x), 0) << (df.frac - af.frac) for x in u]
    assert seen["r"][:m] == dz.tolist()
    assert seen["done"] == 1
    assert seen["saturated"] == overflow.total >= 1   # one cycle per saturated word


# --- the adjoint controller -----------------------------------------------------------------------

#: Width of every word of the adjoint controller's tests (a tile's results are narrowed to it).
ADJ_WIDTH = 7


def _fa(x):
    """The test's stand-ins for the tiles' products: A's forward product, …"""
    m = len(x)
    return _sat([x[i] - x[(i + 1) % m] + (i - 1) for i in range(m)], ADJ_WIDTH)


def _fb(x):
    """… B's forward product on gradients (Bᵀ x), …"""
    m = len(x)
    return _sat([2 * x[i] - x[(i + 2) % m] for i in range(m)], ADJ_WIDTH)


def _fat(s):
    """… and A's transposed product on gradients (h·Aᵀ s)."""
    m = len(s)
    return _sat([s[i] + s[(i + 1) % m] // 2 for i in range(m)], ADJ_WIDTH)


def adjoint_reference(trajectory, lam0, *, method, neumann_terms, width):
    """BACKWARD as hdl/core_adjoint.py's docstring states it, on the stand-in products:
    per step, from the last, what A and B accumulate (x, s), and λ at the end."""
    sat = lambda v: _sat(v, width)   # noqa: E731
    steps = len(trajectory) - 1
    lam, records, saturated = list(lam0), {"a": [], "b": []}, False

    def add(a, b):
        nonlocal saturated
        exact = [x + y for x, y in zip(a, b, strict=True)]
        saturated |= sat(exact) != exact
        return sat(exact)
    for j in range(steps):
        # explicit Euler: z_n; implicit: z_(n+1).
        z = trajectory[steps - 1 - j] if method == "euler" else trajectory[steps - j]
        u = _fa(z)
        mask = [int(x > 0) for x in u]
        relu = [max(x, 0) for x in u]
        b_x = list(lam)
        if method == "implicit_euler" and neumann_terms > 0:
            mu = list(lam)
            for _ in range(neumann_terms):
                mu = add(lam, _fat([d * y for d, y in zip(mask, _fb(mu), strict=True)]))
            lam, b_x = mu, mu
        g = [d * y for d, y in zip(mask, _fb(b_x), strict=True)]
        if method == "euler":
            lam = add(lam, _fat(g))
        records["a"].append((z, g))
        records["b"].append((b_x, relu))
    return {"records": records, "lam": lam, "saturated": saturated}


class _FakeTile:
    """A tile played by the testbench: its x (side writes), s (s_in words), result (y side)
    and the operations the controller starts."""

    def __init__(self, name, m, lanes, rng):
        self.name, self.m, self.lanes, self.rng = name, m, lanes, rng
        self.x, self.s, self.s_idx = [0] * m, [0] * m, 0
        self.result, self.stream, self.op, self.wait = [0] * m, [], None, None
        self.records, self.ops = [], []

    def start(self, op, lam0):
        self.ops.append(op)
        self.op, self.s_idx, self.wait = op, 0, None
        if op == TileOp.FORWARD:
            self.stream = _fa(self.x)
        elif op == TileOp.FORWARD_G:
            self.stream = _fb(self.x)
        elif op == TileOp.TRANSPOSED_G:
            self.result, self.wait = list(lam0), 3
        elif op == TileOp.ACCUMULATE:
            self.records.append((list(self.x), list(self.s)))
            self.wait = 300 if self.name == "c" else 2   # C's runs on past the steps
        elif op == TileOp.APPLY:
            self.wait = {"a": 3, "b": 5, "c": 1}[self.name]

    def offer(self):
        """The word offered on y_out this cycle (None for none)."""
        if self.stream and self.rng.random() < 0.7:
            return self.stream[0]
        return None

    def done(self):
        return self.op is not None and self.wait == 0

    def edge(self, word, s_word, s_restart):
        """The edge: a word left on y_out, ``s_word`` arrived on s_in."""
        if s_restart:
            self.s_idx = 0
        if s_word is not None:
            self.s[self.s_idx] = s_word
            self.s_idx += 1
            if self.op == TileOp.TRANSPOSED_STREAM_G and self.s_idx == self.m:
                self.result, self.wait = _fat(self.s), 3
        if self.done():
            self.op, self.wait = None, None
        elif self.wait is not None:
            self.wait -= 1
        if word is not None:
            self.stream = self.stream[1:]
            if not self.stream:
                self.wait = 1


def run_adjoint(dut, trajectory, lam0, rng, op="backward"):
    """BACKWARD (or APPLY) on ``dut`` with the tiles and the banks played by the testbench."""
    m, lanes = dut.m, dut.lanes
    chunks = -(-m // lanes)
    tiles = {t: _FakeTile(t, m, lanes, rng) for t in "abc"}
    traj = _Banks(m, lanes)
    for n, vector in enumerate(trajectory):
        for j, word in enumerate(vector):
            traj.words[(n * chunks + j // lanes, j % lanes)] = word
    lam = _Banks(m, lanes)
    seen = {"done": 0, "saturated": False}

    async def bench(ctx):
        read = {"vec": 0, "traj": 0}
        ctx.set(getattr(dut, op), 1)
        for _ in range(3000):
            words = {t: tiles[t].offer() for t in "ab"}
            for t in "ab":
                stream_ = getattr(dut, f"{t}_y")
                ctx.set(stream_.valid, int(words[t] is not None))
                ctx.set(stream_.payload, words[t] or 0)
            for t in "abc":
                ctx.set(getattr(dut, f"{t}_done"), int(tiles[t].done()))
            ctx.set(dut.c_busy, int(tiles["c"].op is not None))
            for k in range(lanes):
                for t in "ac":
                    ctx.set(getattr(dut, f"{t}_r_data")[k],
                            _Banks(m, lanes, init=tiles[t].result).chunk(read["vec"])[k])
                ctx.set(dut.lam_data[k], lam.chunk(read["vec"])[k])
                ctx.set(dut.traj_data[k], traj.chunk(read["traj"])[k])
            if ctx.get(dut.done):
                seen["done"] += 1
                # Tiles still running (not in their done cycle).
                seen["busy_at_done"] = [tiles[t].op for t in "abc"
                                        if tiles[t].op is not None and not tiles[t].done()]
                return
            seen["saturated"] |= bool(ctx.get(dut.saturated))
            read = {"vec": ctx.get(dut.vec_addr), "traj": ctx.get(dut.traj_addr)}
            for k in range(lanes):
                if ctx.get(dut.lam_en[k]):
                    lam.words[(ctx.get(dut.lam_addr), k)] = ctx.get(dut.lam_wdata[k])
                for t in "ab":
                    if ctx.get(getattr(dut, f"{t}_x_en")) >> k & 1:
                        j = ctx.get(getattr(dut, f"{t}_x_addr")) * lanes + k
                        tiles[t].x[j] = ctx.get(getattr(dut, f"{t}_x_data")[k])
            for t in "abc":
                s_word = None
                if t != "c" and ctx.get(getattr(dut, f"{t}_s").valid):
                    s_word = ctx.get(getattr(dut, f"{t}_s").payload)
                restart = t != "c" and ctx.get(getattr(dut, f"{t}_s_restart"))
                started = ctx.get(getattr(dut, f"{t}_start"))
                tile_op = ctx.get(getattr(dut, f"{t}_op"))
                tiles[t].edge(words.get(t), s_word, restart)
                if started:
                    tiles[t].start(tile_op, lam0)
            await ctx.tick()
            ctx.set(getattr(dut, op), 0)
        raise AssertionError(f"{op} did not end")

    simulate(dut, bench)
    return tiles, lam.vector(), seen


def adjoint_controller(m, lanes, steps, method, neumann_terms, width=ADJ_WIDTH):
    widths = dict.fromkeys(("a_s", "b_s", "a_y", "b_y", "a_x", "b_x", "a_r", "c_r"), width)
    return AdjointController(m=m, lanes=lanes, steps=steps, method=method,
                             neumann_terms=neumann_terms, state_width=width,
                             grad_width=width, widths=widths)


@pytest.mark.parametrize(("method", "neumann_terms", "seed"), [
    ("euler", 0, 0), ("implicit_euler", 2, 1), ("implicit_euler", 0, 2)])
def test_adjoint_controller_goes_back_as_the_equations_say(method, neumann_terms, seed):
    m, lanes, steps, width = 3, 2, 2, ADJ_WIDTH
    dut = adjoint_controller(m, lanes, steps, method, neumann_terms)
    rng = np.random.default_rng(seed)
    trajectory = rng.integers(-20, 20, (steps + 1, m)).tolist()
    for z in trajectory:
        z[0] = z[1] + 1   # u_0 = 0: relu and the mask at 0 (H(0) = 0)
    lam0 = rng.integers(-30, 30, m).tolist()
    lam0[:2] = [63, -60]   # λ + h·Aᵀ(…) saturates
    expected = adjoint_reference(trajectory, lam0, method=method,
                                 neumann_terms=neumann_terms, width=width)
    tiles, lam, seen = run_adjoint(dut, trajectory, lam0, rng)
    assert seen["done"] == 1
    assert seen["busy_at_done"] == []   # C's accumulation has ended too
    assert tiles["a"].records == expected["records"]["a"]
    assert tiles["b"].records == expected["records"]["b"]
    assert lam == expected["lam"]
    assert seen["saturated"] == expected["saturated"]
    assert tiles["c"].ops == [TileOp.TRANSPOSED_G, TileOp.ACCUMULATE]
    # The cases lam0 is for (implicit Euler without Neumann terms adds nothing to λ).
    changes = method == "euler" or neumann_terms > 0
    assert expected["saturated"] == changes
    assert (expected["lam"] != lam0) == changes


def test_adjoint_controller_applies_in_every_tile_then_is_done():
    dut = adjoint_controller(3, 2, 2, "euler", 0)
    tiles, _, seen = run_adjoint(dut, [[0] * 3] * 3, [0] * 3, np.random.default_rng(3),
                                 op="apply")
    assert [tiles[t].ops for t in "abc"] == [[TileOp.APPLY]] * 3
    assert seen["done"] == 1
    assert seen["busy_at_done"] == []   # done with the last tile's (B's, the slowest)
