"""The crossbar tile (hdl/tile.py) against its fixed-point twin, bit for bit, on every simulator.

Plans (random weights and operation sequences, every fourth vector a saturation corner) come
from :mod:`xbarode.sim.tile_plan`; the reference answers come from
:class:`xbarode.model.fixed_ops.FixedTile`, which the tile does not use.
"""

import itertools
import json
import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from amaranth import Fragment
from amaranth.sim import Simulator
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpers import Draws
from xbarode.cli import main
from xbarode.hdl.rounding import LfsrBank
from xbarode.hdl.tile import CHAIN_MIN_LANES, GROUP, CrossbarTile, TileOp
from xbarode.model.fixed import LFSR_SEED, Format, Lfsr
from xbarode.sim import tile_plan
from xbarode.sim.tile_plan import TileParams, compare, make_plan, model_results, run_plan_amaranth
from xbarode.synth import PIN_MIN_LANES, SynthesisError, lane_sites, synthesize
from xbarode.units import UNITS, cosim, synth

F16 = Format(16, 12)


def documented_latency(op, rows, cols, lanes):
    """Latency of ``op``, start to ``done`` inclusive, as CrossbarTile's docstring gives it:
    ``rows·C + T + 7`` for FORWARD, ``rows·C + 7`` for TRANSPOSED, UPDATE, ACCUMULATE and
    APPLY (no bias, no taps), ``C = ceil(cols/lanes)``, ``T = ceil(log2(lanes)/2)``."""
    chunks = -(-cols // lanes)
    tree = math.ceil(math.log2(lanes) / 2)
    return rows * chunks + (tree if op == "forward" else 0) + 7


def tile(**changes):
    base = {"rows": 4, "cols": 4, "lanes": 2, "weight_format": F16, "input_format": F16,
            "output_format": F16}
    return CrossbarTile(**{**base, **changes})


# --- constructor --------------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"rows": 0}, ValueError, r"^rows and cols must be >= 1, not 0 and 4$"),
    ({"cols": 0, "lanes": 1}, ValueError, r"^rows and cols must be >= 1, not 4 and 0$"),
    ({"lanes": 0}, ValueError, r"^lanes must be between 1 and cols \(4\), not 0$"),
    ({"lanes": 5}, ValueError, r"^lanes must be between 1 and cols \(4\), not 5$"),
    ({"rows": 2.0}, TypeError, r"^rows must be an integer, not float$"),
    ({"weight_format": (16, 12)}, TypeError, r"^weight_format must be a Format, not tuple$"),
    ({"rounding": "up"}, ValueError, r"^unknown rounding 'up'; choose one of"),
    ({"lfsr_seed": 0}, ValueError, r"^LFSR seed must be a non-zero 32-bit integer, not 0$"),
    ({"acc_width": 33}, ValueError,
     r"^an accumulator of 33 bits is too narrow for a sum of 4 products of 16x16-bit words "
     r"\(needs 34 bits\)$"),
])
@pytest.mark.parametrize("how", ["constructor", "check_parameters"])
def test_constructor_errors(changes, error, message, how):
    base = {"rows": 4, "cols": 4, "lanes": 2, "weight_format": F16, "input_format": F16,
            "output_format": F16}
    build = CrossbarTile if how == "constructor" else CrossbarTile.check_parameters
    with pytest.raises(error, match=message):
        build(**{**base, **changes})


def test_tile_params_check_builds_no_tile(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a tile was built")

    monkeypatch.setattr(CrossbarTile, "__init__", refuse)
    TileParams(rows=13, cols=7, lanes=3, width=16, frac=12).check()
    with pytest.raises(ValueError, match=r"^lanes must be between 1 and cols \(7\), not 8$"):
        TileParams(rows=13, cols=7, lanes=8, width=16, frac=12).check()


def test_parameters_are_read_only():
    t = tile(rows=13, cols=7, lanes=3)
    assert (t.rows, t.cols, t.lanes, t.chunks) == (13, 7, 3, 3)
    with pytest.raises(AttributeError):
        t.rows = 5
    Fragment.get(t, None)   # and the tile elaborates with them


def test_signature_ports():
    t = tile()
    members = dict(t.signature.members)
    assert {"i", "o", "op", "start", "busy", "done", "overflow", "clear"} <= set(members)
    Fragment.get(t, None)   # and the tile elaborates with them


# --- LFSR bank vs the model's LFSR --------------------------------------------------------------

@pytest.mark.parametrize(("draws", "steps", "advances"), [(3, (1, 3), [1, 3, 0, 1, 3, 3]),
                                                         (5, (1, 2, 5), [2, 5, 1, 0, 2])])
def test_lfsr_bank_draws_the_model_sequence(draws, steps, advances):
    bank = LfsrBank(draws=draws, bits=32, steps=steps, seed=LFSR_SEED)
    reference = Lfsr(LFSR_SEED).draw(sum(advances) + draws)
    seen = []

    async def testbench(ctx):
        used = 0
        for n in advances:
            seen.append(([ctx.get(bank.draw[k]) for k in range(draws)], used))
            ctx.set(bank.advance, 0 if n == 0 else bank.steps.index(n) + 1)
            await ctx.tick()
            used += n

    sim = Simulator(bank)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    for values, used in seen:
        assert values == [int(v) for v in reference[used:used + draws]]


# --- bit-exact against the model in Amaranth's simulator ------------------------------------

def check_plan(params, vectors, seed, simulator="amaranth"):
    with tempfile.TemporaryDirectory() as out:
        result = cosim(UNITS["tile"], params, vectors=vectors, seed=seed, simulator=simulator,
                       out=out)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["compared"] > 0
    return result


@settings(max_examples=16, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 9), data=st.data(),
       rounding=st.sampled_from(["floor", "nearest", "stochastic"]),
       seed=st.integers(0, 2**16))
# Draws: lanes, width, frac, eta_shift.
@example(rows=5, cols=7, data=Draws(7, 16, 12, 3), rounding="stochastic",
         seed=1).via("lanes = cols")
@example(rows=6, cols=5, data=Draws(1, 16, 11, 2), rounding="nearest", seed=2).via("lanes = 1")
@example(rows=4, cols=6, data=Draws(3, 8, 5, 1), rounding="stochastic", seed=3).via("8 bits")
@example(rows=3, cols=4, data=Draws(4, 18, 15, 4), rounding="floor", seed=4).via("18 bits")
def test_random_sizes_match_the_model(rows, cols, data, rounding, seed):
    lanes = data.draw(st.integers(1, cols))
    width = data.draw(st.sampled_from([8, 12, 16, 18]))
    frac = data.draw(st.integers(0, width - 1))
    params = TileParams(rows=rows, cols=cols, lanes=lanes, width=width, frac=frac,
                        rounding=rounding, eta_shift=data.draw(st.integers(0, 8)))
    check_plan(params, vectors=4, seed=seed)


@pytest.mark.parametrize("rounding", ["floor", "nearest", "stochastic"])
def test_odd_size_13x7_with_3_lanes(rounding):
    check_plan(TileParams(rows=13, cols=7, lanes=3, width=16, frac=12, rounding=rounding),
               vectors=4, seed=3)


@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 9), data=st.data())
@example(rows=3, cols=7, data=Draws(7)).via("lanes = cols")
@example(rows=4, cols=5, data=Draws(1)).via("lanes = 1")
def test_read_chain_matches_the_model(rows, cols, data):
    """READ_* through the chain of lane registers (a tile alone from CHAIN_MIN_LANES lanes),
    on small and odd sizes: chunks of one word, a last chunk shorter than the lanes."""
    lanes = data.draw(st.integers(1, cols))
    check_plan(TileParams(rows=rows, cols=cols, lanes=lanes, width=16, frac=12,
                          rounding="stochastic", read_chain=True), vectors=2, seed=rows)


def test_read_chain_streams_a_word_every_two_cycles():
    t = TileParams(rows=3, cols=5, lanes=2, width=16, frac=12, read_chain=True).component()
    assert t.read_chain
    # The default: the chain from CHAIN_MIN_LANES lanes on.
    assert TileParams(rows=3, cols=CHAIN_MIN_LANES, lanes=CHAIN_MIN_LANES, width=16,
                      frac=12).read_chain
    assert not TileParams(rows=3, cols=CHAIN_MIN_LANES, lanes=CHAIN_MIN_LANES - 1, width=16,
                          frac=12).read_chain
    cycles = []

    async def bench(ctx):
        ctx.set(t.o.ready, 1)
        ctx.set(t.op, TileOp.READ_W)
        ctx.set(t.start, 1)
        await ctx.tick()
        ctx.set(t.start, 0)
        for cycle in range(100):
            if ctx.get(t.o.valid):
                cycles.append(cycle)
            if ctx.get(t.done):
                break
            await ctx.tick()

    sim = Simulator(t)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # 15 words: the first after reading (1 cycle) and loading the chain (2), then every other
    # cycle; a one-word chunk (cols = 5 = 2 + 2 + 1) waits two cycles more, as its successor
    # is still being read (the chain loads the banks' registered outputs, there three cycles
    # after the read is cued) — but for the last word, which waits for nothing.
    assert len(cycles) == 15
    gaps = [b - a for a, b in itertools.pairwise(cycles)]
    assert cycles[0] == 3
    assert gaps == [2, 2, 2, 4, 2] * 2 + [2, 2, 2, 2]


def test_saturation_corners_saturate_and_raise_the_flag():
    params = TileParams(rows=5, cols=6, lanes=4, width=12, frac=6, rounding="nearest")
    plan = make_plan(params, vectors=4, seed=0)
    corner = plan["vectors"][3]
    assert set(corner["weights"]) <= {params.format.min_int, params.format.max_int}
    expected = model_results(params, plan)
    assert all(answer["overflow"] == 1 for answer in expected[3])
    got, _ = run_plan_amaranth(params, plan)
    assert compare(expected, got)["mismatches"] == 0
    assert all(answer["overflow"] == 1 for answer in got[3])


def test_latency_is_the_documented_one():
    for rows, cols, lanes in [(13, 7, 3), (8, 8, 8), (5, 9, 1), (6, 16, 16)]:
        params = TileParams(rows=rows, cols=cols, lanes=lanes, width=16, frac=12)
        result = check_plan(params, vectors=1, seed=0)
        assert result["cycles"] == {op: documented_latency(op, rows, cols, lanes)
                                    for op in ("forward", "transposed", "update")}


def test_64x64_with_64_lanes_meets_the_cycle_target():
    # The target: <= 74 cycles per forward or transposed product for 64x64, 64 lanes.
    params = TileParams(rows=64, cols=64, lanes=64, width=16, frac=12, rounding="stochastic")
    plan = make_plan(params, vectors=1, seed=0, ops_per_vector=3)
    got, cycles = run_plan_amaranth(params, plan)
    assert compare(model_results(params, plan), got)["mismatches"] == 0
    assert cycles["forward"] <= 74 and cycles["transposed"] <= 74


# --- the mismatch report ---------------------------------------------------------------------

def test_a_mismatch_is_named_and_a_waveform_written(monkeypatch, tmp_path, capsys):
    real = tile_plan.model_results

    def wrong(params, plan):
        results = real(params, plan)
        results[1][2]["out"][3] += 1
        return results

    monkeypatch.setattr(tile_plan, "model_results", wrong)
    code = main(["cosim", "tile", "--rows", "5", "--cols", "4", "--lanes", "2", "--vectors",
                 "2", "--simulator", "amaranth", "--out", str(tmp_path), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert "vector 1, operation 2: word 3" in captured.err
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert report["mismatches"] == 1
    waves = tmp_path / "tile.vcd"
    assert report["waveform"] == str(waves) and waves.stat().st_size > 0


# --- cocotb on the generated Verilog ---------------------------------------------------------

@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
@pytest.mark.parametrize(("rows", "cols", "lanes", "rounding"), [
    (13, 7, 3, "stochastic"),
    (8, 8, 8, "nearest"),
])
def test_cocotb_matches_the_model(simulator, rows, cols, lanes, rounding, tmp_path):
    params = TileParams(rows=rows, cols=cols, lanes=lanes, width=16, frac=11,
                        rounding=rounding)
    result = cosim(UNITS["tile"], params, vectors=4, seed=7, simulator=simulator,
                   out=tmp_path)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["cycles"]["forward"] == documented_latency("forward", rows, cols, lanes)


@pytest.mark.parametrize(("simulator", "rows", "cols", "lanes", "rounding"), [
    ("icarus", 13, 7, 3, "stochastic"),
    ("verilator", 8, 8, 8, "nearest"),
])
def test_ecp5_dsp_mapping_matches_the_model(simulator, rows, cols, lanes, rounding, tmp_path):
    """The Verilog that ``xbarode synth`` builds (multipliers as MULT18X18D cells with their
    own registers), on the cell's simulation model: bit for bit, same latency."""
    params = TileParams(rows=rows, cols=cols, lanes=lanes, width=16, frac=11,
                        rounding=rounding, dsp="ecp5")
    result = cosim(UNITS["tile"], params, vectors=4, seed=3, simulator=simulator,
                   out=tmp_path)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert (tmp_path / "crossbar_tile.v").read_text().count("MULT18X18D #(") == lanes
    assert result["cycles"]["forward"] == documented_latency("forward", rows, cols, lanes)


def test_amaranth_cannot_simulate_the_ecp5_mapping(tmp_path):
    params = TileParams(rows=2, cols=2, lanes=2, width=16, frac=11, dsp="ecp5")
    with pytest.raises(ValueError, match=r"^the Amaranth simulator cannot run MULT18X18D "
                                         r"cells \(dsp 'ecp5'\); use icarus or verilator$"):
        cosim(UNITS["tile"], params, vectors=1, seed=0, simulator="amaranth", out=tmp_path)


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_cocotb_mismatch_names_the_first_difference(simulator, monkeypatch, tmp_path):
    real = tile_plan.model_results

    def wrong(params, plan):
        results = real(params, plan)
        results[0][0]["out"][1] ^= 1
        return results

    monkeypatch.setattr(tile_plan, "model_results", wrong)
    params = TileParams(rows=3, cols=4, lanes=2, width=16, frac=11)
    result = cosim(UNITS["tile"], params, vectors=1, seed=0, simulator=simulator,
                   out=tmp_path)
    assert result["mismatches"] == 1
    assert result["first_mismatch"].startswith("vector 0, operation 0: word 1")
    assert result["waveform"] is not None


# --- generate and the command line ------------------------------------------------------------

def test_generate_writes_verilog_and_manifest(tmp_path, capsys):
    code = main(["generate", "tile", "--rows", "13", "--cols", "7", "--lanes", "3", "--width",
                 "12", "--frac", "8", "--out", str(tmp_path), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    verilog = (tmp_path / "crossbar_tile.v").read_text()
    assert "module crossbar_tile" in verilog and result["verilog"].endswith("crossbar_tile.v")
    manifest = json.loads((tmp_path / "crossbar_tile.json").read_text())
    assert manifest["parameters"]["rows"] == 13 and manifest["parameters"]["lanes"] == 3
    ports = {p["name"]: p for p in manifest["ports"]}
    assert ports["i__payload"]["width"] == 12 and ports["i__payload"]["direction"] == "in"
    assert ports["o__payload"]["signed"] and ports["clk"]["role"] == "clock"
    for name in ports:
        assert name in verilog


def test_cli_cosim_reports_the_fields(tmp_path, capsys):
    code = main(["cosim", "tile", "--rows", "4", "--cols", "6", "--lanes", "4", "--vectors",
                 "2", "--simulator", "amaranth", "--out", str(tmp_path), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["mismatches"] == 0 and result["vectors"] == 2
    assert result["simulator"] == "amaranth"
    assert result["cycles_per_mvm"] == 4 * 2 + 1 + 7


@pytest.mark.parametrize(("argv", "message"), [
    (["--lanes", "9", "--cols", "4"], "lanes must be between 1 and cols (4), not 9"),
    (["--frac", "16"], "format frac must be >= 0 and < width (16), not 16"),
    (["--acc-width", "20"], "accumulator of 20 bits is too narrow"),
])
def test_cli_bad_parameters_exit_2(argv, message, capsys):
    code = main(["cosim", "tile", "--simulator", "amaranth", *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_draw_order_does_not_depend_on_lanes():
    # Stochastic draws are taken in row-major order whatever the lane count (the model has no
    # lanes at all): two tiles with different lanes give the same words for the same plan.
    a = TileParams(rows=6, cols=7, lanes=2, width=16, frac=12, rounding="stochastic")
    b = TileParams(rows=6, cols=7, lanes=7, width=16, frac=12, rounding="stochastic")
    plan = make_plan(a, vectors=2, seed=5)
    got_a, _ = run_plan_amaranth(a, plan)
    got_b, _ = run_plan_amaranth(b, plan)
    assert compare(got_a, got_b)["mismatches"] == 0
    expected = model_results(a, plan)[0][0]["out"]
    assert np.array_equal(np.array(got_a[0][0]["out"]), np.array(expected))


# --- the tied SGD step of a convolution tile (``taps``) ------------------------------------------

TAP_TILE = {"weight_format": Format(16, 12), "input_format": Format(16, 10),
            "output_format": Format(16, 10), "grad_format": Format(16, 11)}


@pytest.mark.parametrize(("changes", "message"), [
    ({"grad_format": None}, r"^taps need grad_format: the tied step is APPLY's$"),
    ({"taps": [[0, 1, 2]]}, r"^taps must be integers of shape \(k², 4\), not int64 of shape"),
    ({"taps": [[0.0, 1, 2, 3]]}, r"^taps must be integers of shape \(k², 4\), not float64"),
    ({"taps": [[0, 1, 2, 4]]}, r"^taps must be columns 0\.\.3$"),
    ({"taps": [[0, 1, 2, 3], [0, 2, 3, 1]]}, r"^taps must sit in distinct columns of each row$"),
])
def test_tap_errors(changes, message):
    args = {**TAP_TILE, "rows": 4, "cols": 4, "lanes": 2, "taps": [[0, 1, 2, 3]], **changes}
    with pytest.raises(ValueError, match=message):
        CrossbarTile(**args)


def run_tied_apply(height, width, k, lanes, rounding, bias, seed, scale, sgd_shift=3):
    """ACCUMULATE twice, APPLY, READ_W and READ_G on a tile holding a convolution matrix;
    the model's answer from FixedTile.apply_kernel_gradient (and the bias's step)."""
    from xbarode.hdl.tile import TileOp
    from xbarode.model.conv import conv_matrix, tap_columns
    from xbarode.model.fixed import Overflow, Rounder, narrow
    from xbarode.model.fixed_ops import FixedTile
    from xbarode.sim.streams import op_receive, op_run, op_send, run_simulation

    rng = np.random.default_rng(seed)
    m, wf, inf, gf = height * width, *(TAP_TILE[n] for n in ("weight_format", "input_format",
                                                             "grad_format"))
    taps = tap_columns(k, (height, width))
    held = conv_matrix(rng.integers(-3000, 3000, (k, k)), (height, width)).astype(np.int64)
    dut = CrossbarTile(rows=m, cols=m, lanes=lanes, rounding=rounding, sgd_shift=sgd_shift,
                       taps=taps, bias=bias, **TAP_TILE)
    xs = rng.integers(-scale, scale, (2, m))
    ss = rng.integers(-scale, scale, (2, m))
    d0 = rng.integers(-3000, 3000, m)
    extra = m if bias else 0
    got = {}

    async def testbench(ctx):
        await op_send(ctx, dut, TileOp.LOAD_W, held.ravel().tolist())
        if bias:
            await op_send(ctx, dut, TileOp.LOAD_BIAS, d0.tolist())
        for x, s in zip(xs, ss, strict=True):
            await op_send(ctx, dut, TileOp.LOAD_X, x.tolist())
            await op_send(ctx, dut, TileOp.LOAD_S, s.tolist())
            await op_run(ctx, dut, TileOp.ACCUMULATE)
        got["latency"] = await op_run(ctx, dut, TileOp.APPLY)
        got["weights"] = await op_receive(ctx, dut, TileOp.READ_W, m * m + extra)
        got["grads"] = await op_receive(ctx, dut, TileOp.READ_G, m * m + extra)
        got["overflow"] = ctx.get(dut.overflow)

    run_simulation(dut, testbench)
    overflow, rounder = Overflow(), Rounder(rounding, LFSR_SEED)
    model = FixedTile(held, weight_format=wf, acc_width=48, rounder=rounder, overflow=overflow)
    model.apply_kernel_gradient(ss.T @ xs, gf.frac + inf.frac, shift=sgd_shift, taps=taps)
    want = model.weights.ravel().tolist()
    if bias:
        step = narrow(-ss.sum(axis=0), gf.frac + sgd_shift - wf.frac, wf, rounder, overflow)
        want += np.clip(d0 + step, wf.min_int, wf.max_int).tolist()
    return got, want, overflow.flag, dut


@settings(max_examples=8, deadline=None)
@given(height=st.integers(1, 4), width=st.integers(1, 5), data=st.data(),
       rounding=st.sampled_from(["floor", "nearest", "stochastic"]), bias=st.booleans(),
       seed=st.integers(0, 2**16))
# Draws: kernel, lanes, operand scale.
@example(height=3, width=3, data=Draws(3, 9, 300), rounding="stochastic", bias=True,
         seed=1).via("lanes = cols")
@example(height=2, width=3, data=Draws(1, 1, 32000), rounding="nearest", bias=False,
         seed=2).via("lanes = 1, saturating")
def test_tied_apply_matches_the_model(height, width, data, rounding, bias, seed):
    m = height * width
    k = data.draw(st.sampled_from([s for s in (1, 3) if s <= min(height, width)]))
    lanes = data.draw(st.integers(1, m))
    # Small operands (no saturation) or full-scale ones (the flag).
    scale = data.draw(st.sampled_from([300, 32000]))
    got, want, overflow, _ = run_tied_apply(height, width, k, lanes, rounding, bias, seed,
                                              scale)
    assert got["weights"] == want
    assert not any(got["grads"]), "APPLY must clear every gradient sum"
    assert got["overflow"] == overflow
    n_taps, work = k * k, m * -(-m // lanes)   # rows·C, C = ceil(cols/lanes)
    documented = n_taps * m + max(n_taps * (m + 1), work - 1) + 6 + (m if bias else 0)
    assert got["latency"] == documented


def test_tied_apply_on_odd_sizes_both_walk_lengths():
    # 5×3 images, 3×3 kernel, 4 lanes (writing the taps is the longer walk), and a 1×1
    # kernel with 2 lanes (clearing G is), with and without saturation.
    for k, lanes, scale in [(3, 4, 200), (1, 2, 32000)]:
        got, want, overflow, _ = run_tied_apply(5, 3, k, lanes, "stochastic", True, 9, scale)
        assert got["weights"] == want and not any(got["grads"])
        assert got["overflow"] == overflow == (scale > 1000)


def test_bench_tile_reports_cycles_and_passes_the_router(monkeypatch, capsys, tmp_path):
    # Synthesis itself takes half an hour at 64 lanes (figures in the README); here the
    # bench's plumbing: measured cycles (the documented latency) and the router it asks for.
    import xbarode.synth

    asked = {}

    def fake_synthesize(component, top, **kwargs):
        asked.update(kwargs, top=top, lanes=component.lanes)
        Fragment.get(component, None)   # as synthesize elaborates it (to write its Verilog)
        return {"luts": 1, "carry": 2, "lutram": 3, "ffs": 4, "mult18": 5, "ebr": 6,
                "fmax_mhz": 7.0}

    monkeypatch.setattr(xbarode.synth, "synthesize", fake_synthesize)
    code = main(["bench", "tile", "--lanes", "32", "--out", str(tmp_path), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (row,) = result["tiles"]
    assert asked["router"] == "router2" and asked["top"] == "crossbar_tile"
    assert asked["lanes"] == 32
    assert row["forward_cycles"] == 64 * 2 + 3 + 7 and row["transposed_cycles"] == 64 * 2 + 7
    assert row["fmax_mhz"] == 7.0


def test_bench_and_synth_refuse_bad_options_before_they_build_a_tile(monkeypatch, capsys,
                                                                     tmp_path):
    # Checked first: a tile built for a synthesis that then refuses the device (or router)
    # would be dropped unelaborated, after a simulation for nothing.
    def built(*args, **kwargs):
        raise AssertionError("a tile was simulated or built")

    monkeypatch.setattr(tile_plan, "run_plan_amaranth", built)
    monkeypatch.setattr(TileParams, "component", built)
    code = main(["bench", "tile", "--lanes", "2", "--device", "ice40", "--out", str(tmp_path)])
    assert code == 2
    assert "unknown device 'ice40'; choose one of: ecp5-12f" in capsys.readouterr().err
    # The same in synth (the command line offers only known devices; a caller may not).
    params = TileParams(rows=2, cols=2, lanes=2, width=8, frac=4)
    with pytest.raises(ValueError, match=r"^unknown router 'router3'; choose router1 or "):
        synth(UNITS["tile"], params, device="ecp5-85f", out=tmp_path, freq_mhz=50.0, seed=1,
              router="router3")


def test_lane_sites_pair_each_multiplier_with_a_block_ram_in_order():
    for lanes in (PIN_MIN_LANES, 64, 104):
        sites = lane_sites(lanes)
        assert len(sites) == lanes
        assert len({site for pair in sites for site in pair}) == 2 * lanes
        rows = {}
        for dsp, ebr in sites:
            (dx, dy, dcell), (ex, ey, ecell) = (site_xy(dsp), site_xy(ebr))
            assert dcell.startswith("MULT18_") and ecell.startswith("EBR")
            assert ey == dy + 12 and 0 <= ex - dx <= 1   # the block RAM right above
            rows.setdefault(dy, []).append(dx)
        assert len(rows) == 2 and abs(len(rows[34]) - len(rows[58])) <= 1
        for xs in rows.values():   # left to right, so the adder tree pairs neighbours
            assert xs == sorted(xs)
            assert abs((xs[0] + xs[-1]) / 2 - 63) < 8   # around the middle of 126 columns
            assert xs[-1] - xs[0] >= min(100, 4 * len(xs))   # spread out
    assert lane_sites(PIN_MIN_LANES - 1) == [] and lane_sites(105) == []
    assert lane_sites(64, "ecp5-45f") == []


def site_xy(site):
    x, y, cell = site.split("/")
    return int(x[1:]), int(y[1:]), cell


def test_synth_pins_the_lanes_and_keeps_the_register_copies(tmp_path, capsys):
    """A 17-lane tile through Yosys and nextpnr: every lane's multiplier (a MULT18X18D with its
    registers) and block RAM carry their site and nextpnr takes them (it stops on a site the
    device lacks, as the last runs show); the per-group copies of shared registers survive
    Yosys (its opt_merge merged them into one before)."""
    lanes = PIN_MIN_LANES
    code = main(["synth", "tile", "--rows", "17", "--cols", str(lanes), "--width", "8",
                 "--frac", "4", "--freq", "50", "--out", str(tmp_path / "ok"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["mult18"], result["ebr"], result["pinned"]) == (lanes, lanes, 2 * lanes)
    netlist = json.loads(Path(result["files"]["netlist"]).read_text())
    cells = netlist["modules"]["crossbar_tile"]["cells"]
    for k, (dsp, ebr) in enumerate(lane_sites(lanes)):
        group = f"lanes{k // GROUP}"   # the LaneGroup of lane k
        mult = cells[f"{group}.mul{k}.mult"]
        assert mult["type"] == "MULT18X18D" and mult["attributes"]["BEL"] == dsp
        for stage in ("INPUTA", "INPUTB", "OUTPUT"):
            assert mult["parameters"][f"REG_{stage}_CLK"] == "CLK0"
        assert cells[f"{group}.w{k}.0.0"]["type"] == "DP16KD"
        assert cells[f"{group}.w{k}.0.0"]["attributes"]["BEL"] == ebr
    groups = -(-lanes // GROUP)
    shared = [name for name, cell in cells.items()
              if cell["type"] == "TRELLIS_FF" and re.match(r"lanes\d+\.sq", name)]
    assert len(shared) == groups * 8   # one 8-bit copy of s per group of lanes
    # The other per-group registers (the banks' read enables, the copies of the walk states,
    # the loaded word, the transposed result's write cue, the update's write address): one
    # copy per group each, not one merged register (the last two in each LaneGroup; the
    # loaded word below, by the nets it drives).
    prefixes = ("rd_en", "wg_en", "in_issue_rows", "in_issue_cols")
    in_groups = ("tr_write", "u_waddr")
    copies = {}
    for name, cell in cells.items():
        found = re.match(rf"({'|'.join(prefixes)})(\d+)_TRELLIS_FF", name)
        found_in_group = re.match(rf"lanes(\d+)\.({'|'.join(in_groups)})_TRELLIS_FF", name)
        if cell["type"] == "TRELLIS_FF" and found:
            copies.setdefault(found[1], set()).add(int(found[2]))
        if cell["type"] == "TRELLIS_FF" and found_in_group:
            copies.setdefault(found_in_group[2], set()).add(int(found_in_group[1]))
    assert copies == {prefix: set(range(groups)) for prefix in prefixes + in_groups}
    # Which lanes a chunk uses: a register of its own per lane (with one chunk all are equal).
    driver = {bit: name for name, cell in cells.items() if cell["type"] == "TRELLIS_FF"
              for bit in cell["connections"]["Q"]}
    nets = netlist["modules"]["crossbar_tile"]["netnames"]
    # The loaded word's copies (Yosys names them after the groups' load_word ports they feed).
    word_bits = [driver[bit] for g in range(groups) for bit in nets[f"lanes{g}.load_word"]["bits"]]
    assert len(set(word_bits)) == len(word_bits) == groups * 8
    for name in ("lane_on2", "lane_on5", "tw_on"):
        bits = [bit for g in range(groups) for bit in nets[f"lanes{g}.{name}"]["bits"]]
        assert len({driver[bit] for bit in bits}) == lanes, name
    # The read address's copies (their flip-flops are named after the banks' address ports).
    address_bits = [driver[bit] for g in range(groups) for bit in nets[f"raddr{g}"]["bits"]]
    assert len(set(address_bits)) == len(address_bits) == groups * 5   # 17 words: 5 bits
    # Built here (this file lets a unit go unelaborated): synthesize may refuse the sites
    # before it elaborates the tile.
    component = tile(rows=20, cols=3, lanes=3)
    with pytest.raises(SynthesisError, match="No Bel named 'X3/Y34/MULT18_0'"):
        synthesize(component, "crossbar_tile", out_dir=tmp_path / "bad",
                   sites={"lanes0.mul0.mult": "X3/Y34/MULT18_0"})
    with pytest.raises(ValueError, match=r"^sites name cells the netlist does not have: "
                                         r"lanes0\.mul7\.mult$"):
        synthesize(component, "crossbar_tile", out_dir=tmp_path / "bad",
                   sites={"lanes0.mul7.mult": "X31/Y34/MULT18_0"})


# --- block-RAM banks: no read meets a write at its address ---------------------------------

def watch_banks(dut, script):
    """Run the async ``script(ctx)`` on ``dut`` while watching its weight and gradient banks
    (the memories synthesis maps to block RAM with ``no_rw_check``). Returns the cycles in
    which a bank's enabled read met a write to the same address (whose result the block RAM
    leaves undefined) and those in which both ran at different addresses (to show the watch
    sees overlapping accesses)."""
    from amaranth.sim import Simulator

    module = dut.elaborate(None)
    # The simulation elaborates the tile itself (so Amaranth sees it used) into the module
    # watched here.
    dut.elaborate = lambda platform: module
    ports = []
    for g in range(-(-dut.lanes // GROUP)):
        # The banks are the LaneGroups'; the simulation runs the modules watched here.
        group = getattr(module.submodules, f"lanes{g}")
        inner = group.elaborate(None)
        group.elaborate = lambda platform, inner=inner: inner
        lanes = range(group.first, group.first + group.count)
        names = [f"w{k}" for k in lanes]
        if dut.grad_format is not None:
            names += [f"g{k}" for k in lanes]
        for name in names:
            memory = getattr(inner.submodules, name)
            (rd,), (wr,) = memory.read_ports, memory.write_ports
            ports.append((name, rd, wr))
    seen = {"collisions": [], "overlaps": 0}

    async def watch(ctx):
        signals = [s for _, rd, wr in ports for s in (rd.en, rd.addr, wr.en, wr.addr)]
        cycle = 0
        async for _, _, *values in ctx.tick().sample(*signals):
            for n, (name, _, _) in enumerate(ports):
                rd_en, rd_addr, wr_en, wr_addr = values[4 * n: 4 * n + 4]
                if rd_en and wr_en:
                    if rd_addr == wr_addr:
                        seen["collisions"].append((cycle, name, rd_addr))
                    else:
                        seen["overlaps"] += 1
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(watch)
    sim.add_testbench(script)
    sim.run()
    return seen


# (3, 4, 2): a walk of 6 addresses, one more than the shortest read-to-write distance, so a
# read one cycle past a walk's end would meet the write of its first address.
@pytest.mark.parametrize(("rows", "cols", "lanes"),
                         [(2, 3, 3), (7, 9, 2), (5, 13, 4), (3, 4, 2)])
def test_banks_never_read_and_write_one_address_in_one_cycle(rows, cols, lanes):
    # Every operation that touches the banks, on a training tile with a bias.
    from xbarode.hdl.tile import TileOp
    from xbarode.sim.streams import op_receive, op_run, op_send

    rng = np.random.default_rng(rows * cols)
    dut = CrossbarTile(rows=rows, cols=cols, lanes=lanes, bias=True, rounding="stochastic",
                       eta_shift=2, sgd_shift=2, **TAP_TILE)

    async def script(ctx):
        await op_send(ctx, dut, TileOp.LOAD_W, rng.integers(-3000, 3000, rows * cols).tolist())
        await op_send(ctx, dut, TileOp.LOAD_BIAS, rng.integers(-3000, 3000, rows).tolist())
        for op in (TileOp.FORWARD, TileOp.TRANSPOSED, TileOp.UPDATE, TileOp.ACCUMULATE,
                   TileOp.FORWARD_G, TileOp.TRANSPOSED_G, TileOp.ACCUMULATE, TileOp.APPLY,
                   TileOp.UPDATE, TileOp.UPDATE):
            await op_send(ctx, dut, TileOp.LOAD_X, rng.integers(-900, 900, cols).tolist())
            await op_send(ctx, dut, TileOp.LOAD_S, rng.integers(-900, 900, rows).tolist())
            await op_run(ctx, dut, op)
            await op_receive(ctx, dut, TileOp.READ_W, rows * cols + rows)
        await op_receive(ctx, dut, TileOp.READ_G, rows * cols + rows)

    seen = watch_banks(dut, script)
    assert seen["collisions"] == []
    # A walk longer than the shortest read-to-write distance (ACCUMULATE's: its G word is
    # written five cycles after it was read) reads and writes in the same cycles.
    assert (seen["overlaps"] > 0) == (rows * -(-cols // lanes) > 5)


def test_tied_apply_never_reads_and_writes_one_address_in_one_cycle():
    from xbarode.hdl.tile import TileOp
    from xbarode.model.conv import conv_matrix, tap_columns
    from xbarode.sim.streams import op_receive, op_run, op_send

    rng = np.random.default_rng(5)
    m = 15   # 5×3 images, 3×3 kernel
    dut = CrossbarTile(rows=m, cols=m, lanes=4, taps=tap_columns(3, (5, 3)), bias=True,
                       sgd_shift=3, **TAP_TILE)
    held = conv_matrix(rng.integers(-3000, 3000, (3, 3)), (5, 3)).astype(np.int64)

    async def script(ctx):
        await op_send(ctx, dut, TileOp.LOAD_W, held.ravel().tolist())
        for _ in range(2):
            await op_send(ctx, dut, TileOp.LOAD_X, rng.integers(-900, 900, m).tolist())
            await op_send(ctx, dut, TileOp.LOAD_S, rng.integers(-900, 900, m).tolist())
            await op_run(ctx, dut, TileOp.ACCUMULATE)
            await op_run(ctx, dut, TileOp.APPLY)
        await op_receive(ctx, dut, TileOp.READ_G, m * m + m)

    seen = watch_banks(dut, script)
    assert seen["collisions"] == [] and seen["overlaps"] > 0


# --- every operation of a standalone tile against FixedTile, word by word ----------------------

def tile_formats(width):
    """Formats of one width (other than 16 too) with distinct fractional bits per class."""
    return {"weight_format": Format(width, width - 3), "input_format": Format(width, width - 5),
            "output_format": Format(width, width - 6), "grad_format": Format(width, width - 4)}


def run_every_operation(rows, cols, lanes, width, rounding, bias, shifts, seed, scale):
    """Drive every operation of a training tile with side ports (LOAD_W, LOAD_BIAS, LOAD_X,
    LOAD_S, FORWARD, TRANSPOSED, TRANSPOSED_STREAM, FORWARD_G, TRANSPOSED_G,
    TRANSPOSED_STREAM_G, READ_Y, ACCUMULATE, READ_G, APPLY, READ_W) on the Amaranth simulator,
    and FixedTile (with the bias's step as documented) through the same sequence.

    Returns ``(got, want)``: per step, the words read and the overflow flag it raised (lowered
    with ``clear`` after each), and the latencies of the row- and column-walking operations.
    """
    from xbarode.model.fixed import Overflow, Rounder, narrow
    from xbarode.model.fixed_ops import FixedTile
    from xbarode.sim.streams import op_receive, op_run, op_send, pulse, run_simulation, wait_for

    shift, grad_shift, sgd_shift = shifts
    fmts = tile_formats(width)
    wf, inf, outf, gf = (fmts[k] for k in ("weight_format", "input_format", "output_format",
                                            "grad_format"))
    rng = np.random.default_rng(seed)

    def words(fmt, shape):
        # ``scale`` of the format's range: small operands, or full scale (saturation).
        top = max(1, int(fmt.max_int * scale))
        return rng.integers(-top, top, shape, endpoint=True)

    weights, d = words(wf, (rows, cols)), words(wf, rows)
    x, s, xg, sg = words(inf, cols), words(inf, rows), words(gf, cols), words(gf, rows)
    s_stream, sg_stream = words(inf, rows), words(gf, rows)
    acc_x, acc_s = words(inf, (2, cols)), words(gf, (2, rows))
    gaps = rng.integers(0, 3, 2 * rows)          # idle cycles before each streamed word
    dut = CrossbarTile(rows=rows, cols=cols, lanes=lanes, acc_width=48, rounding=rounding,
                       shift=shift, bias=bias, side_ports=True, grad_shift=grad_shift,
                       sgd_shift=sgd_shift, lfsr_seed=seed + 1, **fmts)
    extra = rows if bias else 0
    got = {}

    async def stream_s(ctx, op, values, gaps):
        ctx.set(dut.op, op)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for value, gap in zip(values.tolist(), gaps.tolist(), strict=True):
            for _ in range(gap):
                await ctx.tick()
            ctx.set(dut.s_in.valid, 1)
            ctx.set(dut.s_in.payload, value)
            await ctx.tick()
            ctx.set(dut.s_in.valid, 0)
        await wait_for(ctx, dut.done)

    async def read(ctx, name, op, count):
        # The flag raised by this step alone: lowered after each (``clear``).
        got[name] = (await op_receive(ctx, dut, op, count), ctx.get(dut.overflow))
        await pulse(ctx, dut.clear)

    async def testbench(ctx):
        await op_send(ctx, dut, TileOp.LOAD_W, weights.ravel().tolist())
        if bias:
            await op_send(ctx, dut, TileOp.LOAD_BIAS, d.tolist())
        await op_send(ctx, dut, TileOp.LOAD_X, x.tolist())
        got["FORWARD latency"] = await op_run(ctx, dut, TileOp.FORWARD)
        await read(ctx, "FORWARD", TileOp.READ_Y, rows)
        await op_send(ctx, dut, TileOp.LOAD_S, s.tolist())
        got["TRANSPOSED latency"] = await op_run(ctx, dut, TileOp.TRANSPOSED)
        await read(ctx, "TRANSPOSED", TileOp.READ_Y, cols)
        await stream_s(ctx, TileOp.TRANSPOSED_STREAM, s_stream, gaps[:rows])
        await read(ctx, "TRANSPOSED_STREAM", TileOp.READ_Y, cols)
        await op_send(ctx, dut, TileOp.LOAD_X, xg.tolist())
        got["FORWARD_G latency"] = await op_run(ctx, dut, TileOp.FORWARD_G)
        await read(ctx, "FORWARD_G", TileOp.READ_Y, rows)
        await op_send(ctx, dut, TileOp.LOAD_S, sg.tolist())
        got["TRANSPOSED_G latency"] = await op_run(ctx, dut, TileOp.TRANSPOSED_G)
        await read(ctx, "TRANSPOSED_G", TileOp.READ_Y, cols)
        await stream_s(ctx, TileOp.TRANSPOSED_STREAM_G, sg_stream, gaps[rows:])
        await read(ctx, "TRANSPOSED_STREAM_G", TileOp.READ_Y, cols)
        for xk, sk in zip(acc_x, acc_s, strict=True):
            await op_send(ctx, dut, TileOp.LOAD_X, xk.tolist())
            await op_send(ctx, dut, TileOp.LOAD_S, sk.tolist())
            got["ACCUMULATE latency"] = await op_run(ctx, dut, TileOp.ACCUMULATE)
        await read(ctx, "ACCUMULATE", TileOp.READ_G, rows * cols + extra)
        got["APPLY latency"] = await op_run(ctx, dut, TileOp.APPLY)
        await read(ctx, "APPLY", TileOp.READ_W, rows * cols + extra)
        await read(ctx, "cleared", TileOp.READ_G, rows * cols + extra)

    run_simulation(dut, testbench)

    # The model: one tile, one LFSR, the same order of operations.
    overflow = Overflow()
    rounder = Rounder(rounding, seed + 1)
    model = FixedTile(weights, weight_format=wf, acc_width=48, rounder=rounder,
                      overflow=overflow)
    want = {}

    def answer(name, values):
        want[name] = (np.asarray(values).ravel().tolist(), int(overflow.flag))
        overflow.clear()

    answer("FORWARD", model.forward(x[None], inf, outf, shift=shift,
                                    bias=d if bias else None))
    answer("TRANSPOSED", model.transposed(s[None], inf, outf, shift=shift))
    answer("TRANSPOSED_STREAM", model.transposed(s_stream[None], inf, outf, shift=shift))
    answer("FORWARD_G", model.forward(xg[None], gf, gf, shift=grad_shift))
    answer("TRANSPOSED_G", model.transposed(sg[None], gf, gf, shift=grad_shift))
    answer("TRANSPOSED_STREAM_G", model.transposed(sg_stream[None], gf, gf, shift=grad_shift))
    grad = acc_s.T @ acc_x                        # exact: Σ_k s_k x_kᵀ
    grad_d = acc_s.sum(axis=0)
    answer("ACCUMULATE", [*grad.ravel(), *(grad_d if bias else [])])
    model.apply_gradient(grad, gf.frac + inf.frac, shift=sgd_shift)
    new_d = []
    if bias:
        step = narrow(-grad_d, gf.frac + sgd_shift - wf.frac, wf, rounder, overflow, "d")
        summed = d + step
        new_d = np.clip(summed, wf.min_int, wf.max_int)
        overflow.add("d.weights", np.count_nonzero(new_d != summed))
    answer("APPLY", [*model.weights.ravel(), *new_d])
    answer("cleared", [0] * (rows * cols + extra))
    # Latencies from the docstring (C = ceil(cols/lanes), T = ceil(log2(lanes)/2)).
    walk = documented_latency("transposed", rows, cols, lanes)
    want.update({"FORWARD latency": documented_latency("forward", rows, cols, lanes),
                 "FORWARD_G latency": documented_latency("forward", rows, cols, lanes),
                 "TRANSPOSED latency": walk, "TRANSPOSED_G latency": walk,
                 "ACCUMULATE latency": walk, "APPLY latency": walk + extra})
    return got, want


def assert_every_operation(got, want):
    assert set(got) == set(want)
    for name in want:
        assert got[name] == want[name], name


@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 7), lanes=st.integers(1, 7),
       width=st.sampled_from([10, 12, 16, 18]),
       rounding=st.sampled_from(["floor", "nearest", "stochastic"]), bias=st.booleans(),
       shifts=st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(1, 4)),
       seed=st.integers(0, 2**16), scale=st.sampled_from([0.05, 1.0]))
@example(rows=3, cols=5, lanes=5, width=16, rounding="stochastic", bias=True, shifts=(1, 2, 3),
         seed=1, scale=0.05).via("lanes = cols")
@example(rows=4, cols=3, lanes=1, width=12, rounding="nearest", bias=False, shifts=(0, 1, 1),
         seed=2, scale=1.0).via("lanes = 1, saturating")
@example(rows=2, cols=7, lanes=3, width=18, rounding="floor", bias=True, shifts=(2, 0, 4),
         seed=3, scale=1.0).via("odd lanes, width 18, saturating")
def test_every_tile_operation_matches_the_model(rows, cols, lanes, width, rounding, bias,
                                                shifts, seed, scale):
    # lanes <= cols (the tile's contract): lanes = cols whenever the draw exceeds it.
    got, want = run_every_operation(rows, cols, min(lanes, cols), width, rounding, bias,
                                    shifts, seed, scale)
    assert_every_operation(got, want)
