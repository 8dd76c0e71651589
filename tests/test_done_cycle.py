"""Every output in the cycle ``done`` pulses, for every operation, against the fixed-point model.

A host latches results when ``done`` pulses (the core's docstring: RUN's ``done`` comes "when
the class is ready"). These tests sample every output port of each unit in that cycle and
check it against the fixed-point model, and check that nothing changes in the idle cycles
after ``done`` (an output registered from the cycle ``done`` pulses in would change there):
the core (every CoreOp), the crossbar tile (every TileOp) and the Fourier units (every
FourierOp). The data are chosen so that the result that arrives last decides the output:
the winning class is the last one evaluated, the only saturating word is the last one.
"""

import numpy as np
import pytest

from xbarode.hdl.core import Core, CoreOp
from xbarode.model.core_config import CoreConfig
from xbarode.sim import adjoint_plan, core_plan
from xbarode.sim.streams import TAIL, op_receive, op_sample, op_send, pulse, run_simulation

# --- helpers ----------------------------------------------------------------------------------


async def idle_values(ctx, signals, cycles=TAIL):
    """The values of ``signals`` in each of the next ``cycles`` cycles (nothing started)."""
    seen = []
    for _ in range(cycles):
        _, _, *values = await ctx.tick().sample(*signals)
        seen.append([int(v) for v in values])
    return seen


class DoneLog:
    """Per operation: the outputs in its ``done`` cycle and in the idle cycles after it."""

    def __init__(self, dut, names):
        self.dut, self.names = dut, list(names)
        self.signals = [getattr(dut, name) for name in self.names]
        self.entries = []

    async def record(self, ctx, op, values):
        at_done = dict(zip(self.names, (int(v) for v in values), strict=True))
        after = [dict(zip(self.names, v, strict=True))
                 for v in await idle_values(ctx, self.signals)]
        self.entries.append((op, at_done, after))
        return at_done

    async def send(self, ctx, op, words):
        return await self.record(ctx, op, await op_send(ctx, self.dut, op, words,
                                                        sample=self.signals))

    async def receive(self, ctx, op, count):
        words, values = await op_receive(ctx, self.dut, op, count, sample=self.signals)
        return words, await self.record(ctx, op, values)

    async def run(self, ctx, op):
        _, values = await op_sample(ctx, self.dut, op, self.signals)
        return await self.record(ctx, op, values)

    def check_protocol(self):
        """``busy`` high in the ``done`` cycle and low after it; every other output the same
        in the idle cycles after ``done`` as in its cycle."""
        assert self.entries
        for op, at_done, after in self.entries:
            assert at_done["busy"] == 1, f"{op.name}: busy low in the done cycle"
            for cycle, values in enumerate(after, 1):
                assert values["busy"] == 0, f"{op.name}: busy {cycle} cycles after done"
                for name in self.names:
                    if name != "busy":
                        assert values[name] == at_done[name], (
                            f"{op.name}: {name} is {at_done[name]} in the done cycle and "
                            f"{values[name]} {cycle} cycles later")


# --- the core ---------------------------------------------------------------------------------

CORE_OUTPUTS = ("busy", "overflow", "cls", "converged", "iterations")


def last_class_wins(config):
    """Weights and an image for which the last class wins with a logit that saturates, and
    nothing else saturates: A = B = 0 keep ``z`` at the image (6.0 everywhere, inside the
    state format's ±16); C's last row of 1.99 gives ``6·m·1.99 > 64`` (the act format's
    limit), the other rows 0.1 give ``0.6·m``."""
    m, classes = config.m, config.classes
    params = {"A": np.zeros((m, m)), "B": np.zeros((m, m)),
              "C": np.full((classes, m), 0.1), "d": np.zeros(classes)}
    params["C"][-1] = 1.99
    return params, np.full((1, m), 6.0)


def newton_limited(config):
    """Random weights and an image on which Newton stops at ``max_iter`` (tol = 0)."""
    params = core_plan.random_params(config, 4)
    return params, np.random.default_rng(4).uniform(0, 1, (1, config.m))


def run_core_script(config, params, images, labels):
    """Every CoreOp on ``config`` (a training core): loads, RUN, the reads, LOAD_GRAD,
    BACKWARD, READ_GRAD, APPLY, READ_WEIGHTS; the outputs in each done cycle."""
    dut = Core(config)
    log = DoneLog(dut, CORE_OUTPUTS)
    plan = core_plan.make_plan(config, params, images)
    train_plan, _ = adjoint_plan.make_plan(config, params, images, labels, apply_every=1)
    got = {}
    words = (config.steps + 1) * config.m

    async def testbench(ctx):
        for op, loaded in core_plan.weight_loads(plan):
            await log.send(ctx, op, loaded)
        await pulse(ctx, dut.clear)
        await log.send(ctx, CoreOp.LOAD_IMAGE, plan["images"][0])
        got["run"] = await log.run(ctx, CoreOp.RUN)
        got["logits"], _ = await log.receive(ctx, CoreOp.READ_LOGITS, config.classes)
        await log.receive(ctx, CoreOp.READ_STATE, config.m)
        await log.receive(ctx, CoreOp.READ_STATUS, config.steps)
        await log.receive(ctx, CoreOp.READ_TRAJECTORY, words)
        await log.send(ctx, CoreOp.LOAD_GRAD, train_plan["images"][0]["grad_logits"])
        got["backward"] = await log.run(ctx, CoreOp.BACKWARD)
        got["grads"], got["read_grad"] = await log.receive(ctx, CoreOp.READ_GRAD,
                                                           train_plan["grad_words"])
        await pulse(ctx, dut.clear)
        got["apply"] = await log.run(ctx, CoreOp.APPLY)
        got["weights"], got["read_weights"] = await log.receive(
            ctx, CoreOp.READ_WEIGHTS, train_plan["weight_words"])

    run_simulation(dut, testbench)
    return got, log


@pytest.mark.parametrize("method", ["euler", "implicit_euler"])
@pytest.mark.parametrize("case", [last_class_wins, newton_limited])
def test_core_outputs_in_the_done_cycle_of_every_operation(method, case):
    config = CoreConfig(image=(2, 3), lanes=2, classes=4, steps=2, method=method,
                        max_iter=2, tol=0, neumann_terms=1, training=True)
    params, images = case(config)
    labels = np.array([1])
    want = core_plan.model_results(config, params, images)[0]
    _, expected = adjoint_plan.make_plan(config, params, images, labels, apply_every=1)
    got, log = run_core_script(config, params, images, labels)
    run = got["run"]
    # RUN's outputs in its done cycle: the model's class (argmax of its logits), convergence,
    # Newton iterations and flag.
    assert got["logits"] == want["logits"]
    assert run["cls"] == int(np.argmax(want["logits"])) == want["cls"]
    assert (run["converged"], run["iterations"], run["overflow"]) == \
        (want["converged"], want["iterations"], want["overflow"])
    if case is last_class_wins:
        assert want["cls"] == config.classes - 1 and want["overflow"] == 1
    elif method == "implicit_euler":
        assert want["converged"] == 0 and want["iterations"] == 2 * config.steps
    # The training operations: the flag after BACKWARD (since the image's clear) and after
    # APPLY (since its own clear); the class and the Newton status stay the last RUN's.
    assert got["grads"] == expected[0]["grads"]
    assert got["backward"]["overflow"] == expected[0]["overflow"]
    assert got["apply"]["overflow"] == expected[1]["overflow"]
    assert got["weights"] == expected[1]["weights"]
    for key in ("backward", "read_grad", "apply", "read_weights"):
        assert {k: got[key][k] for k in ("cls", "converged", "iterations")} == \
            {k: run[k] for k in ("cls", "converged", "iterations")}, key
    assert {op for op, _, _ in log.entries} == set(CoreOp)
    log.check_protocol()


# --- the crossbar tile ------------------------------------------------------------------------

TILE_OUTPUTS = ("busy", "overflow")


def test_tile_outputs_in_the_done_cycle_of_every_operation():
    # A training tile with a bias; before each product a clear, and data for which only the
    # product's last word saturates (the last row of W x, the last column of Wᵀ s, the last
    # weight of an update, the last bias word of APPLY), so the flag rises only with the
    # operation's last rounding.
    from xbarode.hdl.tile import CrossbarTile, TileOp
    from xbarode.model.fixed import Format, Overflow, Rounder
    from xbarode.model.fixed_ops import FixedTile

    rows, cols, lanes = 3, 5, 2
    wf, inf, gf = Format(16, 12), Format(16, 10), Format(16, 11)
    dut = CrossbarTile(rows=rows, cols=cols, lanes=lanes, weight_format=wf, input_format=inf,
                       output_format=inf, grad_format=gf, bias=True, eta_shift=0,
                       sgd_shift=0)
    log = DoneLog(dut, TILE_OUTPUTS)
    top = wf.max_int
    last_row = np.zeros((rows, cols), dtype=np.int64)
    last_row[-1] = top
    last_col = np.zeros((rows, cols), dtype=np.int64)
    last_col[:, -1] = top
    corner = np.zeros((rows, cols), dtype=np.int64)
    corner[-1, -1] = top
    x_full, s_full = [inf.max_int] * cols, [inf.max_int] * rows
    x_last, s_last = [0] * (cols - 1) + [inf.max_int], [0] * (rows - 1) + [inf.max_int]
    d_last = [0] * (rows - 1) + [top]
    flags = {}

    async def testbench(ctx):
        async def product(name, weights, x, s, op):
            await pulse(ctx, dut.clear)
            await log.send(ctx, TileOp.LOAD_W, weights.ravel().tolist())
            await log.send(ctx, TileOp.LOAD_X, x)
            await log.send(ctx, TileOp.LOAD_S, s)
            flags[name] = (await log.run(ctx, op))["overflow"]

        await log.send(ctx, TileOp.LOAD_BIAS, [0] * rows)
        await product("forward", last_row, x_full, s_full, TileOp.FORWARD)
        await log.receive(ctx, TileOp.READ_Y, rows)
        await product("transposed", last_col, x_full, s_full, TileOp.TRANSPOSED)
        await product("update", corner, x_last, s_last, TileOp.UPDATE)
        await log.receive(ctx, TileOp.READ_W, rows * cols + rows)
        await product("forward_g", last_row, x_full, s_full, TileOp.FORWARD_G)
        await product("transposed_g", last_col, x_full, s_full, TileOp.TRANSPOSED_G)
        # APPLY: G = s xᵀ (zero but for the last row's bias gradient, s_last's word) and the
        # bias's last word at the top: d - g_d saturates there only.
        await pulse(ctx, dut.clear)
        await log.send(ctx, TileOp.LOAD_W, [0] * (rows * cols))
        await log.send(ctx, TileOp.LOAD_BIAS, d_last)
        await log.send(ctx, TileOp.LOAD_X, [0] * cols)
        await log.send(ctx, TileOp.LOAD_S, [-v for v in s_last])
        flags["accumulate"] = (await log.run(ctx, TileOp.ACCUMULATE))["overflow"]
        flags["apply"] = (await log.run(ctx, TileOp.APPLY))["overflow"]
        await log.receive(ctx, TileOp.READ_G, rows * cols + rows)

    run_simulation(dut, testbench)

    # The model: only the last word of each product saturates.
    def model(weights):
        overflow = Overflow()
        tile = FixedTile(weights, weight_format=wf, acc_width=48,
                         rounder=Rounder("nearest"), overflow=overflow)
        return tile, overflow

    tile, overflow = model(last_row)
    y = tile.forward(np.array([x_full]), inf, inf)[0]
    assert overflow.flag and y[-1] == inf.max_int and not y[:-1].any()
    tile, overflow = model(last_col)
    y = tile.transposed(np.array([s_full]), inf, inf)[0]
    assert overflow.flag and y[-1] == inf.max_int and not y[:-1].any()
    tile, overflow = model(corner)
    tile.update(np.array(s_last), inf, np.array(x_last), inf, shift=0)
    assert overflow.flag and tile.weights[-1, -1] == wf.max_int
    assert flags == {"forward": 1, "transposed": 1, "update": 1, "forward_g": 1,
                     "transposed_g": 1, "accumulate": 0, "apply": 1}
    covered = {op for op, _, _ in log.entries}
    # TRANSPOSED_STREAM(_G) need the side ports (a core's tiles): the core's test covers them.
    assert covered == set(TileOp) - {TileOp.TRANSPOSED_STREAM, TileOp.TRANSPOSED_STREAM_G}
    log.check_protocol()


# --- the Fourier units ------------------------------------------------------------------------


def test_fourier_conv_outputs_in_the_done_cycle_of_every_operation():
    # Every FourierOp on FourierConv with saturation corners (every word at full scale), the
    # flag in each done cycle against the model (dft2_fixed, fourier_conv_fixed); the arrays'
    # results are read back into the buffer before done, so nothing may change after it.
    from xbarode.hdl.fourier import FourierOp
    from xbarode.model.fixed import Overflow
    from xbarode.model.fixed_ops import dft2_fixed, fourier_conv_fixed, fourier_rounders
    from xbarode.sim.fourier_plan import FourierParams, make_plan

    conv = FourierParams(unit="fourier-conv", height=3, width_px=4, lanes=3)
    dft = FourierParams(unit="dft", height=3, width_px=4)
    conv_vector = make_plan(conv, 4, 1)["vectors"][3]     # the corner vectors
    dft_vector = make_plan(dft, 4, 1)["vectors"][3]
    spectrum, real = (step["words"] for step in conv_vector["steps"][:2])
    complex_words = dft_vector["steps"][0]["words"]
    dut = conv.component()
    log = DoneLog(dut, ("busy", "overflow"))
    size = conv.size
    got = {}

    async def testbench(ctx):
        await pulse(ctx, dut.clear)
        await log.send(ctx, FourierOp.LOAD_SPECTRUM, spectrum)
        await log.send(ctx, FourierOp.LOAD, complex_words)
        got["dft"] = (await log.run(ctx, FourierOp.DFT))["overflow"]
        got["dft_words"], _ = await log.receive(ctx, FourierOp.READ, 2 * size)
        got["idft"] = (await log.run(ctx, FourierOp.IDFT))["overflow"]
        await log.receive(ctx, FourierOp.READ_REAL, size)
        await pulse(ctx, dut.clear)
        await log.send(ctx, FourierOp.LOAD_REAL, real)
        got["conv"] = (await log.run(ctx, FourierOp.CONV))["overflow"]
        got["conv_words"], _ = await log.receive(ctx, FourierOp.READ_REAL, size)
        got["hadamard"] = (await log.run(ctx, FourierOp.HADAMARD))["overflow"]

    run_simulation(dut, testbench)
    rounders = fourier_rounders(conv.rounding, conv.lfsr_seed)
    overflow = Overflow()
    spectral = dft2_fixed(np.array(dft_vector["image"]), data=conv.data_format,
                          twiddle=conv.twiddle_format, rounder=rounders[:2], overflow=overflow)
    assert got["dft_words"] == spectral.ravel().tolist()
    assert got["dft"] == int(overflow.flag) == 1
    dft2_fixed(spectral, data=conv.data_format, twiddle=conv.twiddle_format,
               rounder=rounders[:2], overflow=overflow, inverse=True)
    assert got["idft"] == int(overflow.flag)
    overflow = Overflow()
    want = fourier_conv_fixed(np.array(conv_vector["kernel"]),
                              np.array(conv_vector["image"])[None], data=conv.data_format,
                              twiddle=conv.twiddle_format, spectrum=conv.spectrum_format,
                              rounder=fourier_rounders(conv.rounding, conv.lfsr_seed),
                              overflow=overflow, gauss=conv.gauss)
    assert got["conv_words"] == want.ravel().tolist()
    flag = int(any(n for label, n in overflow.counts.items()
                   if label not in ("spectrum.load", "twiddle.load")))
    assert got["conv"] == flag and got["hadamard"] == 1
    assert {op for op, _, _ in log.entries} == set(FourierOp)
    log.check_protocol()


@pytest.mark.parametrize("simulator", ["icarus"])
def test_cocotb_harness_reads_the_class_in_the_done_cycle(simulator, tmp_path):
    # The cocotb harness latches cls, converged, iterations and the flag when RUN's done
    # pulses; with the last class winning, a class registered one cycle late is caught on the
    # generated Verilog too.
    from xbarode.simulate import simulate_core

    config = CoreConfig(image=(2, 3), lanes=2, classes=4, steps=2)
    params, image = last_class_wins(config)
    images = np.concatenate([image, np.random.default_rng(9).uniform(0, 1, (1, config.m))])
    result = simulate_core(config, params, images, simulator=simulator, out_dir=tmp_path)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["agreement"] == 1.0
    expected = core_plan.model_results(config, params, images)
    assert expected[0]["cls"] == config.classes - 1
    assert result["compared"] == sum(
        1 + config.classes + config.m + config.steps + (config.steps + 1) * config.m + 3
        for _ in images)
