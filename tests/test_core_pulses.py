"""Training on the core with pulsed updates (docs/device.md, "In the RTL core"): BACKWARD
keeps every step's and image's pairs (hdl/core_pulses.py), APPLY drives them through the
tiles' pulsed UPDATE in the model's order and steps C's bias, bit for bit against the
fixed-point model (FixedNetwork's pulsed ``sgd_step`` on a mini-batch's pairs, in
``backward``'s order) on Amaranth's simulator and once each on Verilator and Icarus; the
latency; what is still refused.
"""

import numpy as np
import pytest

import xbarode.sim.adjoint_plan as adjoint_plan
from helpers import last_json, run
from xbarode.hdl.core import Core, _part_parameters
from xbarode.hdl.core_pulses import PairStore
from xbarode.model.core_config import CoreConfig
from xbarode.sim.adjoint_plan import compare, make_plan, run_plan_amaranth
from xbarode.sim.core_plan import random_params
from xbarode.sim.latency import tile_bound
from xbarode.units import UNITS, AdjointParams, cosim

#: Narrow words, so that the pairs' trains coincide often and many weights move per step.
NARROW = {"weight": "12.10", "state": "8.4", "act": "8.3", "grad": "8.7", "lr": 1.0}


def small(**changes):
    base = {"image": (2, 3), "lanes": 2, "classes": 3, "steps": 2, "training": True,
            "batch": 2, "neumann_terms": 2, "pulses": 32, **NARROW}
    return CoreConfig(**{**base, **changes})


def data(config, seed, images=3):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 1, (images, config.m)),
            rng.integers(0, config.classes, images))


def weights_after_apply(expected):
    return [entry["weights"] for entry in expected if "weights" in entry]


def sample_major(samples):
    """The pairs image by image (the order BACKWARD meets them): not the model's."""
    return {name: tuple(np.concatenate([s[name][part] for s in samples]) for part in range(2))
            for name in "ABC"}


@pytest.mark.parametrize(("method", "rounding", "lanes", "device", "seed"), [
    ("euler", "stochastic", 2, {"asymmetry": 0.25, "soft_bounds": True}, 1),
    ("implicit_euler", "nearest", 3, {"asymmetry": -0.5}, 2),
    ("euler", "floor", 4, {"soft_bounds": True, "states": 64, "program_noise": 0.02,
                           "adc_bits": 8, "read_noise": 0.05, "lanes_c": 2}, 3),
])
def test_pulsed_training_matches_the_model(method, rounding, lanes, device, seed, monkeypatch):
    """Three images, two SGD steps (two images, then one): every logit, flag and weight word
    after each APPLY equals the model's; the steps move weights of every tile, and the
    order of the pairs matters (image by image instead of step by step gives other
    weights), so the comparison sees the walk's order."""
    config = small(method=method, rounding=rounding, lanes=lanes, lfsr_seed=0xACE1 + seed,
                   **device)
    params = random_params(config, seed)
    images, labels = data(config, seed)
    plan, expected = make_plan(config, params, images, labels, apply_every=2)
    got, cycles = run_plan_amaranth(config, plan)
    report = compare(expected, got)
    assert report["mismatches"] == 0, report["first"]
    after = weights_after_apply(expected)
    assert len(after) == 2 and after == weights_after_apply(got)
    m2, cm = config.m ** 2, config.classes * config.m
    loaded = plan["weights"]
    before = loaded["A"] + loaded["Bt"] + loaded["C"]
    for lo, hi in ((0, m2), (m2, 2 * m2), (2 * m2, 2 * m2 + cm)):
        assert after[0][lo:hi] != before[lo:hi]
    monkeypatch.setattr(adjoint_plan, "_batch_samples", sample_major)
    _, other = make_plan(config, params, images, labels, apply_every=2)
    assert weights_after_apply(other)[0] != after[0]
    if seed != 1:
        return
    # BACKWARD as without pulses (the pairs are kept as they are written).
    plain = CoreConfig(**{**config.__dict__, "pulses": 0, "asymmetry": 0.0,
                          "soft_bounds": False})
    assert cycles["backward"] == run_plan_amaranth(plain, plan)[1]["backward"]


def test_apply_latency():
    """APPLY: one cycle, the slowest walk (hdl/core_pulses.py), the slowest tile's APPLY."""
    config = small()
    images, labels = data(config, 5)
    plan, _ = make_plan(config, random_params(config, 5), images, labels, apply_every=2)
    _, cycles = run_plan_amaranth(config, plan)
    m, lanes = config.m, config.lanes
    chunks = -(-m // lanes)
    update = tile_bound(m, m, lanes, "UPDATE", pulses=True)
    update_c = tile_bound(config.classes, m, lanes, "UPDATE", pulses=True)
    apply = max(tile_bound(m, m, lanes, "APPLY"),
                tile_bound(config.classes, m, lanes, "APPLY", bias=True))
    for images_in_step, measured in zip((2, 1), cycles["apply"], strict=True):
        walk_a = images_in_step * config.steps * (max(m, chunks) + 2 + update) + config.steps
        walk_c = images_in_step * (max(config.classes, chunks) + 2 + update_c) + 1
        assert measured == 1 + max(walk_a, walk_c) + apply


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_pulsed_training_on_a_cocotb_simulator(simulator, tmp_path):
    config = small(lanes=3, rounding="stochastic", asymmetry=0.25, soft_bounds=True)
    result = cosim(UNITS["adjoint"], AdjointParams(config, apply_every=2), vectors=2, seed=1,
                   simulator=simulator, out=tmp_path)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["compared"] > 0


def test_a_backward_beyond_the_batch_raises_overflow():
    """The pair stores hold ``batch`` images: the pairs of a third BACKWARD before APPLY
    (batch 2) are lost, and the core says so with ``overflow`` after that BACKWARD, where the
    model (which keeps every pair) flags nothing; the two images before it flag as the
    model does."""
    config = small(rounding="nearest")
    images, labels = data(config, 7, images=3)
    plan, expected = make_plan(config, random_params(config, 7), images, labels,
                               apply_every=3, read_grads=False)
    got, _ = run_plan_amaranth(config, plan)
    flags = [(e["overflow"], g["overflow"]) for e, g in zip(expected, got, strict=True)
             if e["kind"] == "image"]
    assert flags == [(0, 0), (0, 0), (0, 1)]


def test_pulses_build_only_with_training():
    """An inference core has no SGD step: its tiles are built without the pulses."""
    parts = _part_parameters(small(training=False, adc_bits=8))
    assert parts["A"][1]["device"].pulses is None
    assert parts["A"][1]["device"].adc_bits == 8
    assert "device" not in _part_parameters(small(training=False))["A"][1]
    assert _part_parameters(small())["B"][1]["update_formats"] == (
        small().formats().act, small().formats().grad)


@pytest.mark.parametrize(("changes", "message"), [
    ({"image": (3, 3), "structure": "conv", "kernel": 3},
     r"^the device's write models \(states, program_noise\) need a dense network; a "
     r"convolution's tied weights would drift apart$"),
    ({"image": (4, 4), "structure": "conv", "kernel": 3, "conv_path": "fourier",
      "training": False},
     r"^the Fourier path: the DFT arrays hold a fixed table: the device's write models "
     r"\(states, program_noise, pulses\) do not apply; give read models only "
     r"\(dac_bits, adc_bits, adc_range, read_noise\)$"),
])
def test_pulses_refusals(changes, message):
    with pytest.raises(ValueError, match=message):
        Core(small(**changes))


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"slots": 3}, ValueError, r"^stride \(2\) must divide slots \(3\)$"),
    ({"s_port": 4}, ValueError, r"^the tile's ports must be at least as wide as the stored "
                                r"words$"),
    ({"rows": 0}, ValueError, r"^rows must be >= 1, not 0$"),
    ({"lanes": 1.0}, TypeError, r"^lanes must be an integer, not float$"),
])
def test_pair_store_refuses_bad_arguments(changes, error, message):
    base = {"rows": 4, "cols": 4, "lanes": 2, "slots": 4, "stride": 2, "s_width": 8,
            "x_width": 8, "s_port": 8, "x_port": 8}
    with pytest.raises(error, match=message):
        PairStore(**{**base, **changes})


@pytest.mark.slow   # minutes: the 8×8 digits core in Amaranth's simulator
def test_train_on_rtl_with_pulses(capsys, tmp_path):
    """``xbarode train --on rtl --pulses``: two SGD steps of two images on a small
    digits-shaped core (8×8 images, 8 lanes, one step), every logit and flag and the final
    weights equal to the model's."""
    code, out, err = run(capsys, "train", "--on", "rtl", "--images", "4", "--set", "lanes=8",
                         "--set", "steps=1", "--set", "batch=2", "--pulses", "16",
                         "--asymmetry", "0.25", "--soft-bounds", "--simulator", "amaranth",
                         "--rtl-out", tmp_path, "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["sgd_steps"] == 2 and result["weights_identical"]
    assert result["mismatches"] == 0
    assert result["loss_rtl"] == result["loss_model"]
