"""Weights built into the core's memories (``Core(config, weights=…)``): RUN with no weight
loads equals the fixed-point model bit for bit, in Amaranth's simulator and on Icarus (and
on Verilator in the simulated board); the loads still replace the built-in weights; bad
weights are refused with the tiles' or the core's message. (The board's use of them:
tests/test_board.py and tests/test_board_link.py.)
"""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from xbarode.hdl.core import Core
from xbarode.model.core_config import CoreConfig
from xbarode.sim.core_plan import (
    compare,
    execute,
    make_plan,
    model_results,
    random_params,
    run_plan_amaranth,
    weight_load_words,
)
from xbarode.sim.engine import run_amaranth
from xbarode.simulate import simulate_core


def small(**changes):
    base = {"image": (2, 3), "lanes": 2, "classes": 3, "steps": 3, "neumann_terms": 2,
            "max_iter": 3}
    return CoreConfig(**{**base, **changes})


@settings(max_examples=4, deadline=None)
@given(h=st.integers(1, 3), w=st.integers(2, 4), lanes=st.integers(1, 5),
       method=st.sampled_from(["euler", "implicit_euler"]),
       rounding=st.sampled_from(["nearest", "floor", "stochastic"]),
       structure=st.sampled_from(["dense", "conv"]), seed=st.integers(0, 2**16))
@example(h=3, w=3, lanes=4, method="implicit_euler", rounding="stochastic", structure="conv",
         seed=5).via("a convolution, stochastic rounding, odd lanes")
@example(h=1, w=2, lanes=1, method="euler", rounding="nearest", structure="dense",
         seed=1).via("one lane, two pixels")
def test_built_in_weights_need_no_loads(h, w, lanes, method, rounding, structure, seed):
    kernel = {"kernel": 1 if min(h, w) < 3 else 3} if structure == "conv" else {}
    config = small(image=(h, w), lanes=min(lanes, h * w), method=method, rounding=rounding,
                   structure=structure, lfsr_seed=seed + 1, **kernel)
    params = random_params(config, seed)
    images = np.random.default_rng(seed).uniform(0, 1, (2, config.m))
    plan = make_plan(config, params, images, built_in=True)
    got, _ = run_plan_amaranth(config, plan)
    expected = model_results(config, params, images)
    report = compare(expected, got)
    assert report["mismatches"] == 0, report["first"]
    # The same plan on a core without the weights (all zero) does not give the model's
    # answers: the comparison sees whether the weights are there.
    bare = Core(config)
    assert not bare.weights_built_in
    empty, _ = run_amaranth(bare, execute, plan)
    assert compare(expected, empty)["mismatches"] > 0


def test_loads_replace_the_built_in_weights():
    config = small(method="implicit_euler")
    built, loaded = random_params(config, 1), random_params(config, 2)
    images = np.random.default_rng(3).uniform(0, 1, (2, config.m))
    core = Core(config, weights=weight_load_words(config, built))
    assert core.weights_built_in
    got, _ = run_amaranth(core, execute, make_plan(config, loaded, images))
    report = compare(model_results(config, loaded, images), got)
    assert report["mismatches"] == 0, report["first"]
    assert compare(model_results(config, built, images), got)["mismatches"] > 0


# Verilator runs the built-in weights inside the simulated board (tests/test_board_link.py).
@pytest.mark.parametrize("simulator", ["icarus"])
def test_built_in_weights_in_the_verilog(simulator, tmp_path):
    config = small(image=(3, 3), lanes=2, method="implicit_euler", rounding="stochastic")
    params = random_params(config, 7)
    images = np.random.default_rng(7).uniform(0, 1, (3, config.m))
    result = simulate_core(config, params, images, simulator=simulator, out_dir=tmp_path,
                           built_in=True)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["agreement"] == 1.0 and result["compared"] > 0


def _words(config, seed=1):
    return weight_load_words(config, random_params(config, seed))


@pytest.mark.parametrize(("config", "change", "error", "message"), [
    (small(), lambda w: list(w.values()), TypeError,
     r"^weights must be a mapping of the words of LOAD_A, LOAD_B, LOAD_C and LOAD_D "
     r"\(A, Bt, C, d\), not list$"),
    (small(), lambda w: {k: v for k, v in w.items() if k != "d"}, ValueError,
     r"^weights must have the keys A, Bt, C, d \(the words of LOAD_A, LOAD_B, LOAD_C and "
     r"LOAD_D\), not A, Bt, C$"),
    (small(), lambda w: {**w, "Bt": w["Bt"][:-1]}, ValueError,
     r"^weights\['Bt'\] must hold 36 words \(6x6\), not 35$"),
    (small(), lambda w: {**w, "C": [[0.5] * 6] * 3}, ValueError,
     r"^weights must be integers of shape \(3, 6\), not float64 of shape \(3, 6\)$"),
    (small(), lambda w: {**w, "A": [40000, *w["A"][1:]]}, ValueError,
     r"^weights must be words of Q2\.14 \(-32768\.\.32767\)$"),
    (small(), lambda w: {**w, "d": [-40000, 0, 0]}, ValueError,
     r"^bias_words must be words of Q2\.14 \(-32768\.\.32767\)$"),
    (small(states=64, rounding="nearest"), lambda w: w, ValueError,
     r"^the device's write models \(states, program_noise\) program the words LOAD_W and "
     r"UPDATE write: give no initial weights, and a writable tile$"),
])
def test_bad_built_in_weights_are_refused(config, change, error, message):
    with pytest.raises(error, match=message):
        Core(config, weights=change(_words(config)))


def test_the_fourier_path_refuses_built_in_weights():
    config = small(image=(3, 3), structure="conv", conv_path="fourier", kernel=3)
    with pytest.raises(ValueError, match=r"^built-in weights need the direct path's tiles: "
                                         r"the Fourier units' spectra are loaded by LOAD_A "
                                         r"and LOAD_B \(conv_path = \"direct\"\)$"):
        Core(config, weights={"A": [], "Bt": [], "C": [], "d": []})


def test_simulate_built_in_reaches_the_simulation(capsys, tmp_path, monkeypatch):
    from helpers import run

    seen = {}

    def fake_simulate_core(config, params, images, labels=None, **kwargs):
        seen["built_in"] = kwargs.get("built_in")
        raise RuntimeError("stop here")

    monkeypatch.setattr("xbarode.simulate.simulate_core", fake_simulate_core)
    for flags, want in (([], False), (["--built-in"], True)):
        _, _, err = run(capsys, "simulate", *flags, "--images", 1, "--out", tmp_path / "s")
        assert "stop here" in err and seen["built_in"] is want
