"""The Fourier path in hardware (hdl/fourier.py, hdl/hadamard.py) against its fixed-point twins,
bit for bit, on every simulator; and against numpy.fft and scipy, which the hardware does not use.

Plans come from :mod:`xbarode.sim.fourier_plan`; the reference answers from
:func:`~xbarode.model.fixed_ops.dft2_fixed`, :func:`~xbarode.model.fixed_ops.hadamard_fixed`
and :func:`~xbarode.model.fixed_ops.fourier_conv_fixed`.
"""

import json
import math
import tempfile

import numpy as np
import pytest
import scipy.ndimage
from amaranth.hdl import Fragment
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import elaborated
from xbarode.cli import main
from xbarode.hdl.fourier import Dft2d, DftArray, FourierConv
from xbarode.hdl.hadamard import HadamardUnit
from xbarode.hdl.tile import CrossbarTile
from xbarode.model.fixed import Format
from xbarode.sim import fourier_plan
from xbarode.sim.fourier_plan import (
    FourierParams,
    compare,
    make_plan,
    model_results,
    run_plan_amaranth,
)
from xbarode.units import UNITS, cosim

D, T, S = Format(18, 10), Format(18, 16), Format(18, 14)


def check(params, vectors=4, seed=0, simulator="amaranth", out=None):
    with tempfile.TemporaryDirectory() as tmp:
        result = cosim(UNITS[params.unit], params, vectors=vectors, seed=seed,
                       simulator=simulator, out=out or tmp)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["compared"] > 0
    return result


# --- constructors -------------------------------------------------------------------------------

@pytest.mark.parametrize(("build", "error", "message"), [
    (lambda: HadamardUnit(length=0, x_format=D, spectrum_format=S, out_format=D),
     ValueError, r"^length must be >= 1, not 0$"),
    (lambda: HadamardUnit(length=2.0, x_format=D, spectrum_format=S, out_format=D),
     TypeError, r"^length must be an integer, not float$"),
    (lambda: HadamardUnit(length=4, x_format=(18, 10), spectrum_format=S, out_format=D),
     TypeError, r"^x_format must be a Format, not tuple$"),
    (lambda: HadamardUnit(length=4, x_format=D, spectrum_format=S, out_format=D,
                          rounding="up"),
     ValueError, r"^unknown rounding 'up'; choose one of"),
    (lambda: HadamardUnit(length=4, x_format=Format(30, 20), spectrum_format=Format(30, 20),
                          out_format=Format(18, 2), rounding="stochastic"),
     ValueError, r"^stochastic rounding draws 32 bits; cannot discard 38 bits$"),
    (lambda: DftArray(0, data_format=D, twiddle_format=T),
     ValueError, r"^n must be >= 1, not 0$"),
    (lambda: DftArray(4, lanes=9, data_format=D, twiddle_format=T),
     ValueError, r"^lanes must be between 1 and cols \(8\), not 9$"),
    (lambda: DftArray(4, data_format=D, twiddle_format=None),
     TypeError, r"^twiddle_format must be a Format, not NoneType$"),
    (lambda: Dft2d(0, 4, data_format=D, twiddle_format=T),
     ValueError, r"^height and width must be >= 1, not 0 and 4$"),
    (lambda: Dft2d(4, 4, lanes=0, data_format=D, twiddle_format=T),
     ValueError, r"^lanes must be a positive integer, not 0$"),
    (lambda: Dft2d(4, 4, data_format=D, twiddle_format=T, lfsr_seed=0),
     ValueError, r"^LFSR seed must be a non-zero 32-bit integer, not 0$"),
    (lambda: FourierConv(4, 4, data_format=D, twiddle_format=T),
     TypeError, r"^spectrum_format must be a Format, not NoneType$"),
    (lambda: CrossbarTile(rows=2, cols=2, lanes=1, weight_format=D, input_format=D,
                          output_format=D, weights=np.zeros((2, 3), dtype=int)),
     ValueError, r"^weights must be integers of shape \(2, 2\), not int64 of shape \(2, 3\)$"),
    (lambda: CrossbarTile(rows=2, cols=2, lanes=1, weight_format=Format(8, 4),
                          input_format=D, output_format=D, weights=np.full((2, 2), 128)),
     ValueError, r"^weights must be words of Q4\.4 \(-128\.\.127\)$"),
])
def test_constructor_errors(build, error, message):
    with pytest.raises(error, match=message):
        build()


@pytest.mark.parametrize(("height", "width", "changes"), [
    (4, 4, {"acc_width": 30}),       # both arrays too narrow: the rows array's message
    (2, 8, {"acc_width": 30}),       # both, of different lengths (16 and 4 products)
    (8, 2, {"acc_width": 39}),       # only the columns array (16 products need 40 bits)
    (4, 4, {"acc_width": 48.0}),
])
def test_dft2d_refuses_what_its_arrays_refuse_with_their_messages(height, width, changes):
    # The arrays are built in elaborate; the constructor checks them first, rows array
    # (length W) then columns array (length H), as elaborate builds them. An array's own
    # refusal: its constructor's checks (DftArray.check_parameters), no array built.
    kwargs = {"data_format": D, "twiddle_format": T, **changes}
    refused = None
    for n in (width, height):
        try:
            DftArray.check_parameters(n, **kwargs)
        except (TypeError, ValueError) as error:
            refused = error
            break
    assert refused is not None
    with pytest.raises(type(refused)) as got:
        Dft2d(height, width, **kwargs)
    assert str(got.value) == str(refused)


@pytest.mark.parametrize(("changes", "message"), [
    ({"unit": "dft", "lanes": 0}, r"^lanes must be a positive integer, not 0$"),
    ({"unit": "fourier-conv", "acc_width": 20},
     r"^an accumulator of 20 bits is too narrow for a sum of 8 products of 18x18-bit words"),
    ({"unit": "fourier-conv", "kernel": 2}, r"^the kernel size must be odd and >= 1, not 2$"),
    ({"unit": "hadamard", "rounding": "up"}, r"^unknown rounding 'up'"),
    ({"unit": "dft"}, None),
])
def test_fourier_params_are_checked_without_building_the_unit(changes, message, monkeypatch):
    # The command line checks its parameters with check(): the unit's own messages, and no
    # unit built (one built and dropped would be an elaboratable never elaborated).
    def built(*args, **kwargs):
        raise AssertionError("a unit was built")

    for cls in (Dft2d, HadamardUnit):
        monkeypatch.setattr(cls, "__init__", built)
    params = FourierParams(height=4, width_px=4, **changes)
    if message is None:
        params.check()
        return
    with pytest.raises(ValueError, match=message):
        params.check()


@pytest.mark.parametrize("lanes", [None, 3, 8])
def test_lanes_are_those_of_the_arrays_elaborate_builds(lanes):
    unit = FourierConv(3, 5, lanes=lanes, data_format=D, twiddle_format=T, spectrum_format=S)
    m = elaborated(unit)
    assert unit.lanes == (m.submodules.rows.lanes, m.submodules.cols.lanes)
    assert unit.lanes == Dft2d.array_lanes(3, 5, lanes)


def test_parameters_are_read_only_and_arrays_are_capped():
    unit = FourierConv(3, 5, lanes=8, data_format=D, twiddle_format=T, spectrum_format=S,
                       gauss=True)
    assert (unit.height, unit.width, unit.lanes, unit.gauss) == (3, 5, (8, 6), True)
    assert unit.spectrum_format == S and unit.data_format == D
    dft = Dft2d(3, 5, data_format=D, twiddle_format=T)
    assert dft.spectrum_format is None
    with pytest.raises(AttributeError):
        unit.height = 4
    for built in (unit, dft):   # and they elaborate with them
        Fragment.get(built, None)


def test_dft_array_holds_the_model_table_and_reads_it_back():
    # The constant weights are the DFT table: READ_W returns the quantised to_real(W), which
    # numpy.fft confirms is the unitary DFT.
    array = DftArray(3, lanes=4, data_format=Format(16, 12), twiddle_format=Format(16, 12))
    table = np.zeros((6, 6))
    for k in range(3):
        e = np.zeros(3)
        e[k] = 1
        col = np.fft.fft(e, norm="ortho")
        table[0::2, 2 * k], table[1::2, 2 * k] = col.real, col.imag
        table[0::2, 2 * k + 1], table[1::2, 2 * k + 1] = -col.imag, col.real
    expected = np.floor(table * 2**12 + 0.5).astype(int)

    got = _read_weights_without_loading(array)
    assert got == expected.ravel().tolist()


def _read_weights_without_loading(tile):
    from amaranth.sim import Simulator

    from xbarode.hdl.tile import TileOp
    from xbarode.sim.streams import pulse, stream_get

    out = []

    async def bench(ctx):
        ctx.set(tile.op, TileOp.READ_W)
        await pulse(ctx, tile.start)
        out.extend([await stream_get(ctx, tile.o) for _ in range(tile.rows * tile.cols)])

    sim = Simulator(tile)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


# --- bit-exact against the model in Amaranth's simulator ----------------------------------------

@settings(max_examples=6, deadline=None)
@given(height=st.integers(1, 5), width=st.integers(1, 6), data=st.data(),
       rounding=st.sampled_from(["floor", "nearest", "stochastic"]), seed=st.integers(0, 2**16))
def test_dft_random_sizes_match_the_model(height, width, data, rounding, seed):
    lanes = data.draw(st.integers(1, 2 * max(height, width)))
    check(FourierParams(unit="dft", height=height, width_px=width, lanes=lanes,
                        rounding=rounding), vectors=4, seed=seed)


@pytest.mark.parametrize(("height", "width", "lanes"), [(3, 3, None), (2, 7, 5), (4, 3, 1)])
def test_forward_passes_write_the_next_vector_while_the_product_drains(height, width, lanes):
    # Each forward pass writes vector v + 1 into x from the cycle after vector v's last issue:
    # a vector written too early (or twice, a stale "vector in x") changes the first rows'
    # words. The product drains longer than the vector takes (3×3, lanes 2n), shorter (2×7
    # rows, 5 lanes: odd, a word a cycle), and one lane (4×3).
    check(FourierParams(unit="dft", height=height, width_px=width, lanes=lanes,
                        rounding="stochastic"), vectors=2, seed=3)


@settings(max_examples=6, deadline=None)
@given(height=st.integers(3, 6), width=st.integers(3, 7), data=st.data(),
       rounding=st.sampled_from(["floor", "nearest", "stochastic"]), gauss=st.booleans(),
       seed=st.integers(0, 2**16))
def test_fourier_conv_random_sizes_match_the_model(height, width, data, rounding, gauss, seed):
    kernel = data.draw(st.sampled_from([k for k in (1, 3, 5) if k <= min(height, width)]))
    lanes = data.draw(st.one_of(st.none(), st.integers(1, 2 * max(height, width))))
    check(FourierParams(unit="fourier-conv", height=height, width_px=width, kernel=kernel,
                        lanes=lanes, rounding=rounding, gauss=gauss), vectors=4, seed=seed)


@settings(max_examples=10, deadline=None)
@given(length=st.integers(1, 20), rounding=st.sampled_from(["floor", "nearest", "stochastic"]),
       gauss=st.booleans(), frac=st.integers(4, 14), seed=st.integers(0, 2**16))
def test_hadamard_random_lengths_match_the_model(length, rounding, gauss, frac, seed):
    check(FourierParams(unit="hadamard", height=1, width_px=length, frac=frac,
                        rounding=rounding, gauss=gauss), vectors=4, seed=seed)


def test_corners_saturate_and_raise_the_flag():
    for unit in ("dft", "fourier-conv", "hadamard"):
        params = FourierParams(unit=unit, height=3, width_px=4)
        plan = make_plan(params, 4, 2)
        expected = model_results(params, plan)
        assert all(answer["overflow"] == 1 for answer in expected[3]), unit
        assert all(answer["overflow"] == 0 for answer in expected[0]), unit
        got, _ = run_plan_amaranth(params, plan)
        assert compare(expected, got)["mismatches"] == 0


def test_gauss_form_gives_the_same_words_as_four_multipliers():
    plans = {}
    for gauss in (False, True):
        params = FourierParams(unit="fourier-conv", height=4, width_px=6, gauss=gauss,
                               rounding="stochastic")
        plan = make_plan(params, 2, 9)
        plans[gauss] = run_plan_amaranth(params, plan)[0]
    assert compare(plans[False], plans[True])["mismatches"] == 0


# --- against references the hardware does not use -------------------------------------------

def test_dft_rtl_is_the_unitary_fft_within_the_rounding():
    params = FourierParams(unit="dft", height=4, width_px=6, frac=12)
    plan = make_plan(params, 1, 4)
    got, _ = run_plan_amaranth(params, plan)
    scale = 2.0**-params.frac
    image = np.array(plan["vectors"][0]["image"]) * scale
    x = image[..., 0] + 1j * image[..., 1]
    want = np.fft.fft2(x, norm="ortho")
    out = np.array(got[0][0]["out"]).reshape(4, 6, 2) * scale
    # Two passes, each within (2n)·(half an LSB of twiddle)·|x| + half an LSB of data per word.
    bound = 2 * (12 * 2.0**-17 * np.abs(x).max() * 4 + scale)
    assert np.abs(out[..., 0] + 1j * out[..., 1] - want).max() < bound
    back = np.array(got[0][1]["out"]).reshape(4, 6, 2) * scale
    assert np.abs(back[..., 0] + 1j * back[..., 1] - x).max() < 2 * bound


def test_fourier_conv_rtl_is_the_circular_convolution_within_the_bound():
    params = FourierParams(unit="fourier-conv", height=6, width_px=10, kernel=5, frac=12)
    plan = make_plan(params, 1, 11)
    got, _ = run_plan_amaranth(params, plan)
    scale = 2.0**-params.frac
    kernel = np.array(plan["vectors"][0]["kernel"])
    image = np.array(plan["vectors"][0]["image"]) * scale
    want = scipy.ndimage.convolve(image, kernel, mode="wrap")
    out = np.array(got[0][0]["out"]).reshape(6, 10) * scale
    # The documented bound of fourier_conv_fixed.
    bound = (6 + 10) * max(1.0, np.abs(kernel).sum()) * (scale + 2.0**-16 + 2.0**-14)
    assert np.abs(out - want).max() <= bound


# --- latency ------------------------------------------------------------------------------------

def tile_latency(n, lanes, forward):
    chunks = math.ceil(2 * n / lanes)
    tree = math.ceil(math.ceil(math.log2(lanes)) / 2) if lanes > 1 else 0
    return 2 * n * chunks + (tree if forward else 0) + 7


def transform_latency(height, width, lanes, forward):
    """Dft2d's docstring: DFT ``4 + Σ (E + L + (V - 1)·max(L, I + E))`` (the next vector
    written into x from the cycle after the last issue ``I = 2n·C``), IDFT
    ``4 + Σ V·(E + L + 2)``; ``E`` the side ports' ``n`` cycles per vector (two words a
    cycle), ``2n`` with odd lanes."""
    total = 4
    for vectors, n in ((height, width), (width, height)):
        p = min(lanes or 2 * n, 2 * n)
        words = 2 * n if p % 2 else n
        product = tile_latency(n, p, forward)
        if forward:
            issue = 2 * n * math.ceil(2 * n / p)
            total += words + product + (vectors - 1) * max(product, issue + words)
        else:
            total += vectors * (words + product + 2)
    return total


@pytest.mark.parametrize(("height", "width", "lanes"), [(3, 5, None), (4, 4, 3), (2, 7, 5)])
def test_latency_is_the_documented_one(height, width, lanes):
    params = FourierParams(unit="fourier-conv", height=height, width_px=width, kernel=1,
                           lanes=lanes)
    dft = FourierParams(unit="dft", height=height, width_px=width, lanes=lanes)
    _, conv_cycles = run_plan_amaranth(params, make_plan(params, 1, 0))
    _, dft_cycles = run_plan_amaranth(dft, make_plan(dft, 1, 0))
    fwd = transform_latency(height, width, lanes, True)
    inv = transform_latency(height, width, lanes, False)
    assert dft_cycles == {"DFT": fwd, "IDFT": inv}
    assert conv_cycles["CONV"] == fwd + inv + height * width + 4


# --- cocotb on the generated Verilog -------------------------------------------------------

@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
@pytest.mark.parametrize("params", [
    FourierParams(unit="fourier-conv", height=6, width_px=10, kernel=5, lanes=7,
                  rounding="stochastic"),
    FourierParams(unit="dft", height=3, width_px=5, rounding="nearest"),
    FourierParams(unit="hadamard", height=1, width_px=7, rounding="stochastic", gauss=True),
], ids=["conv-6x10-k5", "dft-3x5", "hadamard-7"])
def test_cocotb_matches_the_model(simulator, params, tmp_path):
    result = check(params, vectors=4, seed=1, simulator=simulator, out=tmp_path)
    amaranth = check(params, vectors=1, seed=1)
    assert result["cycles"] == amaranth["cycles"] or params.unit == "hadamard"


@pytest.mark.parametrize("simulator", ["amaranth", "verilator", "icarus"])
def test_mismatch_names_the_first_difference(simulator, monkeypatch, tmp_path):
    real = fourier_plan.model_results

    def wrong(params, plan):
        results = real(params, plan)
        results[0][0]["out"][2] += 1
        return results

    monkeypatch.setattr(fourier_plan, "model_results", wrong)
    # The DFT of test_cocotb_matches_the_model[*-dft-3x5]: the suite reuses its build, and
    # only the build with tracing (for the waveform) is this test's own.
    params = FourierParams(unit="dft", height=3, width_px=5, rounding="nearest")
    result = cosim(UNITS["fourier-conv"], params, vectors=1, seed=0, simulator=simulator,
                   out=tmp_path)
    assert result["mismatches"] == 1
    assert result["first_mismatch"].startswith("vector 0, operation 0: word 2")
    assert result["waveform"] is not None


# --- generate and the command line ------------------------------------------------------------

@pytest.mark.parametrize(("unit", "top"), [("dft", "dft2d"), ("hadamard", "hadamard_unit"),
                                           ("fourier-conv", "fourier_conv")])
def test_generate_writes_verilog_and_manifest(unit, top, tmp_path, capsys):
    code = main(["generate", unit, "--image", "3x4", "--out", str(tmp_path), "--json"])
    assert code == 0
    verilog = (tmp_path / f"{top}.v").read_text()
    assert f"module {top}" in verilog
    manifest = json.loads((tmp_path / f"{top}.json").read_text())
    assert manifest["parameters"]["height"] == 3 and manifest["parameters"]["width_px"] == 4
    for port in manifest["ports"]:
        assert port["name"] in verilog


def test_cli_cosim_fourier_conv_reports_the_fields(tmp_path, capsys):
    code = main(["cosim", "fourier-conv", "--image", "6x10", "--kernel", "5", "--vectors", "2",
                 "--seed", "1", "--simulator", "amaranth", "--out", str(tmp_path), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["mismatches"] == 0 and result["vectors"] == 2
    assert result["simulator"] == "amaranth"
    assert result["cycles"]["CONV"] == (transform_latency(6, 10, None, True)
                                        + transform_latency(6, 10, None, False) + 64)


@pytest.mark.parametrize(("argv", "message"), [
    (["fourier-conv", "--image", "6by10"], "image size must look like HxW (e.g. 8x8), not '6by10'"),
    (["fourier-conv", "--image", "0x4"], "image size must be at least 1x1, not '0x4'"),
    (["fourier-conv", "--kernel", "4"], "the kernel size must be odd and >= 1, not 4"),
    (["fourier-conv", "--image", "4x4", "--kernel", "5"],
     "a 5x5 kernel does not fit a 4x4 image"),
    (["dft", "--twiddle", "18"], "format"),
    (["dft", "--frac", "18"], "format frac must be >= 0 and < width (18), not 18"),
    (["hadamard", "--spectrum", "40.30"], "format width must be between 2 and 32, not 40"),
])
def test_cli_bad_parameters_exit_2(argv, message, capsys):
    try:
        code = main(["cosim", *argv, "--simulator", "amaranth"])
    except SystemExit as exit:                      # argparse's own type errors
        code = exit.code
    assert code == 2
    assert message in capsys.readouterr().err
