"""Training on the core with the crossbar's read models (docs/device.md, "In the RTL core"):
RUN, LOAD_GRAD, BACKWARD, READ_GRAD and APPLY with the DAC, the ADC and the read noise on
every product, BACKWARD's on gradients too, against the fixed-point model (FixedNetwork with
the same DeviceModel and seeds, one image at a time, its generators running on from RUN into
BACKWARD) bit for bit, explicit and implicit Euler, on Amaranth's simulator and once on
Verilator; the refusals of the write models and pulses with training; ``xbarode train --on
rtl`` with the read options.
"""

import re

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


@pytest.mark.parametrize(("method", "rounding", "lanes", "seed"), [
    ("euler", "stochastic", 4, 1),
    ("euler", "floor", 2, 2),
    ("implicit_euler", "nearest", 3, 3),
])
def test_training_with_read_models_matches_the_model(method, rounding, lanes, seed):
    """Every logit, gradient sum, ∂L/∂z_0 word, weight after APPLY and flag of three images
    (two SGD steps) equals the model's; the read models change the model's gradient sums (so
    the comparison would see a product on gradients left without them)."""
    config = small(method=method, rounding=rounding, lanes=lanes, lfsr_seed=0xACE1 + seed)
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


def test_training_with_read_models_on_verilator(tmp_path):
    config = small(lanes=3, rounding="stochastic")
    result = cosim(UNITS["adjoint"], AdjointParams(config, apply_every=2), vectors=2, seed=1,
                   simulator="verilator", out=tmp_path)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["compared"] > 0


# --- what training refuses ------------------------------------------------------------------

WRITES_MESSAGE = (r"^the RTL core's training operations \(BACKWARD, APPLY\) carry the read "
                  r"models only \(dac_bits, adc_bits, adc_range, read_noise\): with training "
                  r"= true, no write models \(states, program_noise\); train with them in the "
                  r"fixed-point model \(xbarode train --on model\)$")


@pytest.mark.parametrize(("changes", "message"), [
    ({"states": 64}, WRITES_MESSAGE),
    ({"program_noise": 0.01}, WRITES_MESSAGE),
    ({"pulses": 16}, r"^the RTL core has no pulsed updates \(pulses\): its SGD step \(APPLY\) "
                     r"is the digital one; train with pulses in the fixed-point model "
                     r"\(xbarode train --on model\)$"),
])
def test_training_refuses_the_write_models_and_pulses(changes, message):
    config = small(**changes)
    with pytest.raises(ValueError, match=message):
        Core(config)
    with pytest.raises(ConfigError, match=message):
        CoreParams(config)


def test_config_requires_the_read_models_only():
    small().require_read_models_only("training on the RTL core")    # the read models pass
    with pytest.raises(ConfigError, match=re.escape(
            "[device] turns on program_noise, states: training on the RTL core carries the "
            "read models only (dac_bits, adc_bits, adc_range, read_noise); the write models "
            "and pulses train in the fixed-point model (xbarode train --on model)")):
        small(states=64, program_noise=0.01).require_read_models_only(
            "training on the RTL core")


def test_train_on_rtl_refuses_the_write_options(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--on", "rtl", "--images", "2", "--states", "64",
                       "--rtl-out", tmp_path)
    assert code == 2
    assert "[device]: the RTL core's training operations (BACKWARD, APPLY) carry the read " \
           "models only" in err
    code, _, err = run(capsys, "train", "--on", "rtl", "--images", "2", "--adc-bits", "1",
                       "--rtl-out", tmp_path)
    assert code == 2
    assert "--adc-bits: adc_bits must be an integer from 2 to 32" in err


@pytest.mark.slow   # about 5 minutes: the 8×8 digits core in Amaranth's simulator
def test_train_on_rtl_with_the_read_options_equals_the_model(capsys, tmp_path):
    """Two SGD steps of two images on a small digits-shaped core (8×8 images, 8 lanes) with
    every read model, on Amaranth's simulator: every logit, flag and final weight equal."""
    code, out, err = run(capsys, "train", "--on", "rtl", "--images", "4", "--set", "lanes=8",
                         "--set", "steps=1", "--set", "batch=2", "--set",
                         "rounding=stochastic", "--dac-bits", "8", "--adc-bits", "8",
                         "--adc-range", "0.5", "--read-noise", "0.02", "--simulator",
                         "amaranth", "--rtl-out", tmp_path, "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["sgd_steps"] == 2 and result["weights_identical"]
    assert result["mismatches"] == 0
    assert result["loss_rtl"] == result["loss_model"]
