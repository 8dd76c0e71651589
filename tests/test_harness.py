"""The co-simulation harness fails on the holes it used to let through.

Each test plants one: a comparison of nothing or of lists of different lengths, a missing
field, a unit that offers a surplus word, never pulses ``done``, pulses it early or never
finishes, and a cocotb run whose tests were all skipped. Planted in a fake unit
(tests/fake_unit.py) driven by the harness's own helpers on Amaranth's simulator and on
Icarus, and in the real core with its cycle limit made too short.
"""

import numpy as np
import pytest
from fake_unit import FakeUnit

from xbarode.model.core_config import CoreConfig
from xbarode.sim import adjoint_plan, core_plan, streams, tile_plan
from xbarode.sim.latency import OperationTimeout, core_bound, limit
from xbarode.sim.streams import (
    HandshakeError,
    op_receive,
    op_run,
    op_send,
    run_simulation,
)

LOAD, READ, RUN = 0, 1, 2

# --- comparisons ------------------------------------------------------------------------------


@pytest.mark.parametrize("compare", [core_plan.compare, adjoint_plan.compare,
                                     tile_plan.compare])
def test_a_comparison_of_nothing_fails(compare):
    report = compare([], [])
    assert report["mismatches"] >= 1 and report["compared"] == 0
    assert report["first"].startswith("nothing was compared")


CORE_RESULT = {"cls": 1, "logits": [3, 5], "state": [1, 2], "status": [0x100],
               "trajectory": [0, 0, 1, 2], "converged": 1, "iterations": 0, "overflow": 0}
ADJOINT_RESULT = {"kind": "image", "logits": [3, 5], "overflow": 0}
TILE_RESULT = [{"out": [1, 2], "overflow": 0}]


@pytest.mark.parametrize(("compare", "result", "message"), [
    (core_plan.compare, CORE_RESULT, "images came back"),
    (adjoint_plan.compare, ADJOINT_RESULT, "results came back"),
    (tile_plan.compare, TILE_RESULT, "vectors came back")])
def test_a_length_mismatch_fails_either_way(compare, result, message):
    # More results than expected used to count as 0 mismatches when nothing was expected.
    for expected, got in (([result], []), ([], [result]), ([result], [result, result])):
        report = compare(expected, got)
        assert report["mismatches"] >= 1 and message in report["first"], (expected, got)
    assert compare([result], [result])["mismatches"] == 0


def test_a_missing_or_short_field_fails():
    for field in ("trajectory", "converged", "iterations"):
        got = {k: v for k, v in CORE_RESULT.items() if k != field}
        report = core_plan.compare([CORE_RESULT], [got])
        assert report["mismatches"] >= 1 and field in report["first"]
    report = core_plan.compare([{**CORE_RESULT, "trajectory": []}], [CORE_RESULT])
    assert report["mismatches"] == 4 and report["first"].startswith("image 0: trajectory")
    report = adjoint_plan.compare([ADJOINT_RESULT], [{"kind": "apply", "overflow": 0}])
    assert report["mismatches"] == 1 and "'apply', expected 'image'" in report["first"]
    report = tile_plan.compare([TILE_RESULT], [[]])
    assert report["mismatches"] == 1 and "0 results came back, expected 1" in report["first"]


# --- the handshake and cycle limits on Amaranth's simulator -----------------------------------

def drive(bug, script):
    """Run ``script(ctx, dut)`` on a fake unit with ``bug``; its value or its error."""
    dut = FakeUnit(bug=bug)
    out = {}

    async def testbench(ctx):
        try:
            out["value"] = await script(ctx, dut)
        except (AssertionError, RuntimeError) as error:
            out["error"] = error

    run_simulation(dut, testbench)
    return out


async def load(ctx, dut):
    return await op_send(ctx, dut, LOAD, [5, 6, 7])


async def read(ctx, dut):
    return await op_receive(ctx, dut, READ, 3)


async def run(ctx, dut):
    return await op_run(ctx, dut, RUN, max_cycles=40)


@pytest.mark.parametrize(("bug", "script", "error", "message"), [
    ("surplus", read, HandshakeError,
     "1: a surplus word after the 3 expected (offered 1 cycles after the last)"),
    ("no_done", read, HandshakeError,
     "1: done did not come within 4 cycles of the last of 3 words"),
    ("no_done", load, HandshakeError,
     "0: done did not come within 4 cycles of the last of 3 words"),
    ("early_done", read, HandshakeError, "1: done came after 2 of 3 words"),
    ("hang", run, OperationTimeout, "2 did not finish within 40 cycles"),
])
def test_amaranth_harness_catches_a_broken_unit(bug, script, error, message):
    assert drive(None, script) == {"value": {load: None, read: [1, 2, 3], run: 5}[script]}
    got = drive(bug, script)
    assert isinstance(got.get("error"), error), got
    assert str(got["error"]) == message


def test_a_hung_core_fails_naming_the_operation(monkeypatch):
    # The core's RUN with its limit cut to 20 cycles: the harness stops and names it.
    from xbarode.sim.core_plan import run_plan_amaranth

    config = CoreConfig(image=(2, 3), lanes=2, classes=3, steps=1)
    params = core_plan.random_params(config, 0)
    plan = core_plan.make_plan(config, params, np.zeros((1, config.m)))
    monkeypatch.setattr(streams, "limit", lambda bound: 20)
    with pytest.raises(OperationTimeout, match=r"^RUN did not finish within 20 cycles"):
        run_plan_amaranth(config, plan)


@pytest.mark.parametrize("changes", [{}, {"method": "implicit_euler", "max_iter": 3, "tol": 0},
                                     {"structure": "conv", "conv_path": "fourier", "kernel": 1},
                                     {"training": True}])
def test_measured_latencies_lie_within_the_documented_bounds(changes):
    # The limits rest on the bounds: every latency measured must lie within its bound (the
    # limit is then 4x that plus 64), for both methods, the Fourier path and training.
    from xbarode.sim.core_plan import run_plan_amaranth

    config = CoreConfig(image=(2, 3), lanes=2, classes=3, steps=2, neumann_terms=2,
                        **changes)
    params = core_plan.random_params(config, 2)
    images = np.random.default_rng(2).uniform(0, 1, (2, config.m))
    if config.training:
        from xbarode.sim.adjoint_plan import run_plan_amaranth as run_training

        plan, _ = adjoint_plan.make_plan(config, params, images, [0, 1], apply_every=1,
                                         read_grads=False)
        _, cycles = run_training(config, plan)
        for name in ("RUN", "BACKWARD", "APPLY"):
            bound = core_bound(config, name)
            assert 0 < max(cycles[name.lower()]) <= bound, name
        return
    got, cycles = run_plan_amaranth(config, core_plan.make_plan(config, params, images))
    assert max(cycles) <= core_bound(config, "RUN")
    if "max_iter" in changes:
        assert max(r["iterations"] for r in got) >= 2    # Newton did iterate
    assert limit(core_bound(config, "RUN")) > 4 * max(cycles)


# --- cocotb: OpDriver's checks, and a run whose tests were all skipped --------------------------

@pytest.fixture(scope="module")
def fake_build(tmp_path_factory):
    return tmp_path_factory.mktemp("fake-cosim")


def run_fake(bug, testcase, build_root, tmp_path, **kwargs):
    from pathlib import Path

    from xbarode.sim.runner import run_cocotb
    from xbarode.sim.verilog import write_verilog

    verilog = write_verilog(FakeUnit(bug=bug), "fake_unit", tmp_path / (bug or "ok"))
    module = Path(__file__).with_name("cocotb_fake_unit.py")
    return run_cocotb([verilog], "fake_unit", module, "icarus", build_dir=build_root,
                      testcase=testcase, test_dir=tmp_path / f"run-{bug}-{testcase}",
                      **kwargs)


@pytest.mark.parametrize(("bug", "testcase", "error", "message"), [
    (None, "read", None, [1, 2, 3]),
    (None, "load", None, None),
    ("surplus", "read", "HandshakeError", "READ: o: a surplus word after the 3 expected"),
    ("no_done", "read", "HandshakeError",
     "READ: done did not come within 4 cycles of the last of 3 words"),
    ("no_done", "load", "HandshakeError",
     "LOAD: done did not come within 4 cycles of the last of 3 words"),
    ("early_done", "read", "HandshakeError", "READ: done came after 2 of 3 words"),
    ("hang", "run", "TimeoutError", "RUN did not finish within 40 cycles"),
])
def test_cocotb_driver_catches_a_broken_unit(bug, testcase, error, message, fake_build,
                                             tmp_path):
    result = run_fake(bug, testcase, fake_build, tmp_path)
    outcome = result.outputs["result"]
    if error is None:
        assert outcome == {"value": message}
    else:
        assert outcome["error"] == error and outcome["message"] == message, outcome


def test_an_all_skipped_cocotb_run_is_not_ok(fake_build, tmp_path):
    from xbarode.sim.runner import CosimError, CosimResult

    assert not CosimResult("icarus", "top", tests=2, failed=0, skipped=2).ok
    assert CosimResult("icarus", "top", tests=2, failed=0, skipped=1).ok
    result = run_fake(None, "skipped", fake_build, tmp_path, check=False)
    assert (result.tests, result.skipped, result.failed) == (1, 1, 0) and not result.ok
    with pytest.raises(CosimError, match="all 1 tests were skipped; nothing was checked"):
        run_fake(None, "skipped", fake_build, tmp_path)
