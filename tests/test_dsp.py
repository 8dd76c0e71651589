"""The lanes' multiplier (hdl/dsp.py): plain Amaranth and its ECP5 mapping, against Python's
integer product; the MULT18X18D simulation model (sim/ecp5_models.py) against the same."""

import re
import subprocess
from pathlib import Path

import pytest
from amaranth import Fragment
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from xbarode.hdl.dsp import DSP_WIDTH, Ecp5Dsp, Multiplier
from xbarode.sim.ecp5_models import write_models
from xbarode.sim.runner import run_cocotb
from xbarode.sim.tile_plan import TileParams
from xbarode.sim.toolchain import ensure_simulator
from xbarode.sim.verilog import write_verilog


@pytest.mark.parametrize(("args", "error", "message"), [
    ((0, 16), ValueError, r"^a_width must be >= 1, not 0$"),
    ((16, -2), ValueError, r"^b_width must be >= 1, not -2$"),
    ((16.0, 16), TypeError, r"^a_width must be an integer, not float$"),
    ((16, True), TypeError, r"^b_width must be an integer, not bool$"),
])
def test_constructor_errors(args, error, message):
    with pytest.raises(error, match=message):
        Multiplier(*args)


def test_widths_are_read_only():
    mult = Multiplier(16, 12)
    assert (mult.a_width, mult.b_width, len(mult.p)) == (16, 12, 28)
    with pytest.raises(AttributeError):
        mult.a_width = 3
    Fragment.get(mult, None)   # and it elaborates with them


@settings(max_examples=10, deadline=None)
@given(a_width=st.integers(1, 24), b_width=st.integers(1, 24), data=st.data())
def test_product_two_cycles_later(a_width, b_width, data):
    """Every cycle a new pair; the product of the pair of two cycles before, exact."""
    pairs = data.draw(st.lists(st.tuples(
        st.integers(-(1 << (a_width - 1)), (1 << (a_width - 1)) - 1),
        st.integers(-(1 << (b_width - 1)), (1 << (b_width - 1)) - 1)), min_size=1, max_size=12))
    dut = Multiplier(a_width, b_width)
    seen = []

    async def bench(ctx):
        for a, b in [*pairs, (0, 0), (0, 0)]:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            await ctx.tick()
            seen.append(ctx.get(dut.p))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # After the k-th edge, p holds the product of the pair presented before edge k-1.
    assert seen[0] == 0
    assert seen[1:len(pairs) + 1] == [a * b for a, b in pairs]


@pytest.mark.parametrize(("widths", "cells"), [((16, 16), 1), ((18, 18), 1), ((19, 16), 0)])
def test_ecp5_mapping_uses_the_cell_only_where_it_fits(widths, cells, tmp_path):
    mult = Multiplier(*widths)
    assert mult.uses_dsp_cell(Ecp5Dsp()) == bool(cells)
    assert not mult.uses_dsp_cell(None)
    text = write_verilog(mult, "mult", tmp_path, platform=Ecp5Dsp()).read_text()
    assert text.count("MULT18X18D") == cells
    if cells:
        for stage in ("INPUTA", "INPUTB", "OUTPUT"):
            assert re.search(rf'\.REG_{stage}_CLK\("CLK0"\)', text)
    plain = write_verilog(Multiplier(*widths), "plain", tmp_path).read_text()
    assert "MULT18X18D" not in plain


@pytest.mark.parametrize(("parameter", "value"), [
    ("REG_INPUTA_CLK", '"CLK1"'), ("REG_OUTPUT_CE", '"CE2"'), ("RESETMODE", '"ASYNC"')])
def test_the_model_refuses_what_it_does_not_model(parameter, value, tmp_path):
    # A configuration the model does not simulate stops the simulation with a message naming
    # it, instead of simulating something else.
    icarus = ensure_simulator("icarus").executables
    top = tmp_path / "top.v"
    top.write_text(f"module top; reg clk = 0; wire [35:0] p;\n"
                   f"  MULT18X18D #(.{parameter}({value})) u (.CLK0(clk), .P0(p[0]));\n"
                   f"  initial begin #10 $display(\"ran on\"); $finish; end\nendmodule\n")
    binary = tmp_path / "sim.vvp"
    subprocess.run([icarus["iverilog"], "-o", str(binary), str(top),
                    str(write_models(tmp_path))], check=True, capture_output=True)
    out = subprocess.run([icarus["vvp"], str(binary)], check=True, capture_output=True,
                         text=True).stdout
    stage = parameter.rsplit("_", 1)[0].removeprefix("REG_")
    expected = ("RESETMODE ASYNC is not modelled" if parameter == "RESETMODE"
                else f"REG_{stage}_* other than CLK0/CE0/RST0 is not modelled")
    assert expected in out and "ran on" not in out


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_model_and_mapping_multiply_like_python(simulator, tmp_path):
    """The ECP5-mapped multiplier on the cell model: every product of a random sequence,
    including the corners -2^17 · -2^17 and 2^17-1 · -2^17, two cycles later."""
    import random

    rng = random.Random(5)
    lo, hi = -(1 << (DSP_WIDTH - 1)), (1 << (DSP_WIDTH - 1)) - 1
    pairs = [(lo, lo), (hi, lo), (hi, hi), (0, lo), (-1, -1)]
    pairs += [(rng.randint(lo, hi), rng.randint(lo, hi)) for _ in range(60)]
    sources = [write_verilog(Multiplier(DSP_WIDTH, DSP_WIDTH), "mult", tmp_path,
                             platform=Ecp5Dsp()), write_models(tmp_path)]
    result = run_cocotb(sources, "mult", Path(__file__).with_name("cocotb_dsp.py"), simulator,
                        data={"pairs": pairs}, test_dir=tmp_path / "run")
    assert result.outputs["products"] == [a * b for a, b in pairs]


def test_bad_dsp_mapping_is_named():
    with pytest.raises(ValueError, match=r"^unknown dsp mapping 'xilinx'; choose one of: "
                                         r"none, ecp5$"):
        TileParams(rows=2, cols=2, lanes=2, width=16, frac=12, dsp="xilinx").component()


# --- the core with every lane multiplier a MULT18X18D -----------------------------------------

def dsp_core(**changes):
    from xbarode.model.core_config import CoreConfig

    # 16-bit formats (every product fits the 18×18 cell), stochastic rounding, odd sizes.
    return CoreConfig(**{"image": (2, 3), "lanes": 2, "classes": 3, "steps": 3, **changes})


def cells_in(out_dir):
    return len(re.findall(r"^\s*MULT18X18D\s", (out_dir / "xbarode_core.v").read_text(),
                          flags=re.M))


@pytest.mark.parametrize(("unit", "simulator"), [
    ("core", "icarus"), ("adjoint", "icarus"),
    pytest.param("core", "verilator", marks=pytest.mark.slow)])
def test_core_on_dsp_cells_equals_the_model(unit, simulator, tmp_path):
    """``cosim core|adjoint --dsp ecp5``: the core's Verilog with each lane multiplier of the
    tiles A, Bᵀ and C an ECP5 cell (on its simulation model), every logit, state, status and
    flag word (adjoint: every gradient sum and the weights after SGD) against the model."""
    from xbarode.units import UNITS, AdjointParams, CoreParams, cosim

    config = dsp_core(training=unit == "adjoint")
    params = (CoreParams(config, dsp="ecp5") if unit == "core"
              else AdjointParams(config, apply_every=1, dsp="ecp5"))
    result = cosim(UNITS[unit], params, vectors=3, seed=4, simulator=simulator, out=tmp_path)
    assert cells_in(tmp_path) == 3 * config.lanes
    assert result["compared"] > 0
    assert result["mismatches"] == 0, result["first_mismatch"]


def test_core_on_a_wrong_cell_model_is_caught(tmp_path, monkeypatch):
    """The comparison sees the cells: a model that ignores SIGNEDA (negative weights read as
    unsigned) gives mismatches."""
    from xbarode.sim import ecp5_models
    from xbarode.units import UNITS, CoreParams, cosim

    wrong = ecp5_models.MULT18X18D_MODEL.replace("{18{sa_in & a_in[17]}}", "{18{1'b0}}")
    assert wrong != ecp5_models.MULT18X18D_MODEL
    monkeypatch.setattr(ecp5_models, "MULT18X18D_MODEL", wrong)
    result = cosim(UNITS["core"], CoreParams(dsp_core(), dsp="ecp5"), vectors=2, seed=4,
                   simulator="icarus", out=tmp_path)
    assert result["mismatches"] > 0


def test_core_dsp_mapping_is_refused_on_amaranth_and_named_when_unknown(tmp_path):
    from xbarode.units import UNITS, CoreParams, cosim

    with pytest.raises(ValueError, match=r"^the Amaranth simulator cannot run MULT18X18D "
                                         r"cells \(dsp 'ecp5'\); use icarus or verilator$"):
        cosim(UNITS["core"], CoreParams(dsp_core(), dsp="ecp5"), vectors=1, seed=0,
              simulator="amaranth", out=tmp_path)
    with pytest.raises(ValueError, match=r"^unknown dsp mapping 'xilinx'; choose one of: "
                                         r"none, ecp5$"):
        CoreParams(dsp_core(), dsp="xilinx").component()
