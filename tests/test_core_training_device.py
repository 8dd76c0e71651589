"""Training on the core with the crossbar's device models (docs/device.md, "In the RTL
core"): RUN, LOAD_GRAD, BACKWARD, READ_GRAD and APPLY with the DAC, the ADC and the read noise
on every product, BACKWARD's on gradients too, and the states and the programming noise on
the loads and APPLY's writes, against the fixed-point model (FixedNetwork with the same
DeviceModel and seeds, one image at a time, its generators running on from RUN into BACKWARD
and APPLY) bit for bit, explicit and implicit Euler, on Amaranth's simulator and once each on
Verilator and Icarus; the refusal of the write models on a convolution; ``xbarode train --on
rtl`` with the device options (pulses: tests/test_core_pulses.py).
"""

import numpy as np
import pytest

from helpers import last_json, run
from xbarode.hdl.core import Core
from xbarode.model.core_config import ConfigError, CoreConfig
from xbarode.sim.adjoint_plan import compare, make_plan, run_plan_amaranth
from xbarode.sim.core_plan import random_params
from xbarode.units import UNITS, AdjointParams, CoreParams, cosim

#: Every read model: DAC, ADC over half the range, read noise.
READS = {"dac_bits": 6, "adc_bits": 7, "adc_range": 0.5, "read_noise": 0.05}
#: The write models: 64 states, programming noise.
WRITES = {"states": 64, "program_noise": 0.02}


def small(**changes):
    base = {"image": (2, 3), "lanes": 2, "classes": 3, "steps": 2, "training": True,
            "lr": 0.5, "batch": 2, "neumann_terms": 2, **READS}
    return CoreConfig(**{**base, **changes})


def ideal_of(config):
    """The same core without its device models."""
    return CoreConfig(**{**config.__dict__, **{name: getattr(CoreConfig, name)
                                               for name in CoreConfig.DEVICE_FIELDS}})


def gradients(expected):
    """The gradient sums of every image (READ_GRAD's words) in the model's answers."""
    return [entry["grads"] for entry in expected if "grads" in entry]


def weights_after_apply(expected):
    return [entry["weights"] for entry in expected if "weights" in entry]


@pytest.mark.parametrize(("method", "rounding", "lanes", "writes", "seed"), [
    ("euler", "stochastic", 4, False, 1),
    ("euler", "floor", 2, True, 2),
    ("euler", "stochastic", 3, True, 4),
    ("implicit_euler", "nearest", 3, False, 3),
])
def test_training_with_device_models_matches_the_model(method, rounding, lanes, writes, seed):
    """Every logit, gradient sum, ∂L/∂z_0 word, weight after APPLY and flag of three images
    (two SGD steps) equals the model's; the read models change the model's gradient sums (so
    the comparison would see a product on gradients left without them), and the write models
    the weights after APPLY beyond what the read models change."""
    config = small(method=method, rounding=rounding, lanes=lanes, lfsr_seed=0xACE1 + seed,
                   **(WRITES if writes else {}))
    params = random_params(config, seed)
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (3, config.m))
    labels = rng.integers(0, config.classes, 3)
    plan, expected = make_plan(config, params, images, labels, apply_every=2)
    got, _ = run_plan_amaranth(config, plan)
    report = compare(expected, got)
    assert report["mismatches"] == 0, report["first"]
    assert gradients(expected) and len(gradients(got)) == len(gradients(expected))
    _, ideal = make_plan(ideal_of(config), params, images, labels, apply_every=2)
    assert gradients(ideal) != gradients(expected)
    if writes:
        _, reads = make_plan(CoreConfig(**{**config.__dict__, "states": 0, "program_noise": 0.0}),
                             params, images, labels, apply_every=2)
        assert weights_after_apply(reads) != weights_after_apply(expected)


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_training_with_device_models_on_the_generated_verilog(simulator, tmp_path):
    config = small(lanes=3, rounding="stochastic", **WRITES)
    result = cosim(UNITS["adjoint"], AdjointParams(config, apply_every=2), vectors=2, seed=1,
                   simulator=simulator, out=tmp_path)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["compared"] > 0


# --- what training refuses ------------------------------------------------------------------

def test_training_takes_every_model_but_write_models_on_a_convolution():
    # The read and the write models are carried, pulses too (tests/test_core_pulses.py).
    Core.check_parameters(small(**WRITES))
    CoreParams(small(pulses=16))
    # A convolution's tied kernels refuse the write models (pulses too), training or not.
    for writes in (WRITES, {"pulses": 16}):
        with pytest.raises(ValueError, match=r"^the device's write models \(states, "
                                             r"program_noise\) need a dense network"):
            Core(small(image=(3, 3), structure="conv", kernel=3, **writes))
        with pytest.raises(ConfigError, match=r"^the device's write models"):
            CoreParams(small(image=(3, 3), structure="conv", kernel=3, **writes))


def test_train_on_rtl_refuses_bad_options(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--on", "rtl", "--images", "2", "--adc-bits", "1",
                       "--rtl-out", tmp_path)
    assert code == 2
    assert "--adc-bits: adc_bits must be an integer from 2 to 32" in err


@pytest.mark.slow   # about 5 minutes: the 8×8 digits core in Amaranth's simulator
def test_train_on_rtl_with_the_read_options_equals_the_model(capsys, tmp_path):
    """Two SGD steps of two images on a small digits-shaped core (8×8 images, 8 lanes) with
    every read model and the states, on Amaranth's simulator: every logit, flag and final
    weight equal."""
    code, out, err = run(capsys, "train", "--on", "rtl", "--images", "4", "--set", "lanes=8",
                         "--set", "steps=1", "--set", "batch=2", "--set",
                         "rounding=stochastic", "--dac-bits", "8", "--adc-bits", "8",
                         "--adc-range", "0.5", "--read-noise", "0.02", "--states", "256",
                         "--simulator",
                         "amaranth", "--rtl-out", tmp_path, "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["sgd_steps"] == 2 and result["weights_identical"]
    assert result["mismatches"] == 0
    assert result["loss_rtl"] == result["loss_model"]
