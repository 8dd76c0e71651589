"""The RTL core with the crossbar's device models (docs/device.md, "In the RTL core") against
its fixed-point twin (FixedNetwork with the ``[device]`` table's DeviceModel, one image at a
time), bit for bit: the DAC, the ADC with its clipping range and the read noise on the chain's
products A→B and on C, the states at the weight loads; explicit and implicit Euler on
Amaranth's simulator, one Verilator run; on the Fourier path the read models on units A's and
B's DFT arrays and on C, on Amaranth's simulator and once each on Icarus and Verilator; the
core's refusals; ``xbarode simulate`` with the device options.
"""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpers import Draws, run
from xbarode.hdl.core import Core
from xbarode.model.core_config import ConfigError, CoreConfig
from xbarode.model.device import DeviceModel
from xbarode.sim.core_plan import (
    compare,
    make_plan,
    model_results,
    random_params,
    run_plan_amaranth,
)
from xbarode.simulate import simulate_core
from xbarode.units import CoreParams

#: Every model the core carries, on: DAC, ADC over half the range, read noise, states,
#: programming noise.
NOISY = {"dac_bits": 6, "adc_bits": 7, "adc_range": 0.5, "read_noise": 0.02, "states": 64,
         "program_noise": 0.02}


def small(**changes):
    base = {"image": (2, 3), "lanes": 2, "classes": 3, "steps": 3, "neumann_terms": 2,
            "max_iter": 3}
    return CoreConfig(**{**base, **changes})


def ideal_of(config):
    """The same core without its device models."""
    return CoreConfig(**{**config.__dict__, **{name: getattr(CoreConfig, name)
                                               for name in CoreConfig.DEVICE_FIELDS}})


def check_noisy_core(config, seed, images=3):
    """RTL against the model with the device; the device must change the model's answers
    (else the comparison would not see models left out of the RTL)."""
    params = random_params(config, seed)
    x = np.random.default_rng(seed).uniform(0, 1, (images, config.m))
    got, cycles = run_plan_amaranth(config, make_plan(config, params, x))
    expected = model_results(config, params, x)
    report = compare(expected, got)
    assert report["mismatches"] == 0, report["first"]
    assert compare(model_results(ideal_of(config), params, x), expected)["mismatches"] > 0
    return cycles


@settings(max_examples=1, deadline=None)   # and the pinned examples below
@given(h=st.integers(1, 3), w=st.integers(2, 3), lanes=st.integers(1, 4),
       method=st.sampled_from(["euler", "implicit_euler"]),
       rounding=st.sampled_from(["nearest", "floor", "stochastic"]),
       seed=st.integers(0, 2**16))
@example(h=2, w=3, lanes=2, method="euler", rounding="nearest", seed=1)
@example(h=3, w=3, lanes=4, method="implicit_euler", rounding="floor", seed=5)
@example(h=3, w=2, lanes=3, method="euler", rounding="stochastic", seed=9)
def test_noisy_cores_match_the_model(h, w, lanes, method, rounding, seed):
    lanes = min(lanes, h * w)
    config = small(image=(h, w), lanes=lanes, method=method, rounding=rounding,
                   lfsr_seed=0xACE1 + seed, **NOISY)
    check_noisy_core(config, seed)


def test_the_device_costs_no_cycle():
    config = small(**NOISY, rounding="nearest")
    ideal = ideal_of(config)
    images = np.random.default_rng(2).uniform(0, 1, (3, config.m))
    _, cycles = run_plan_amaranth(ideal, make_plan(ideal, random_params(ideal, 2), images))
    assert check_noisy_core(config, 2) == cycles


def test_noisy_core_on_verilator(tmp_path):
    config = small(image=(3, 3), lanes=4, method="implicit_euler", rounding="stochastic",
                   dac_bits=5, adc_bits=6, read_noise=0.05, states=256, program_noise=0.03)
    params = random_params(config, 11)
    images = np.random.default_rng(11).uniform(0, 1, (3, config.m))
    result = simulate_core(config, params, images, simulator="verilator", out_dir=tmp_path)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["images"] == 3 and result["agreement"] == 1.0
    ideal = model_results(ideal_of(config), params, images)
    assert compare(ideal, model_results(config, params, images))["mismatches"] > 0


# --- the Fourier path: the read models on units A's and B's DFT arrays and on tile C -------

#: The read models (the Fourier path's DFT arrays hold a fixed table: no write models).
READS = {"dac_bits": 6, "adc_bits": 7, "adc_range": 0.5, "read_noise": 0.02}


def fourier(**changes):
    return small(**{"structure": "conv", "conv_path": "fourier", "steps": 2, **READS,
                    **changes})


@settings(max_examples=1, deadline=None)   # and the pinned examples below
@given(h=st.integers(1, 3), w=st.integers(2, 3), data=st.data(),
       method=st.sampled_from(["euler", "implicit_euler"]),
       rounding=st.sampled_from(["nearest", "floor", "stochastic"]),
       seed=st.integers(0, 2**16))
# Draws: kernel, lanes.
@example(h=2, w=3, data=Draws(1, 2), method="euler", rounding="nearest", seed=1)
@example(h=3, w=3, data=Draws(3, 4), method="implicit_euler", rounding="floor",
         seed=5).via("3×3 kernel, Newton and Neumann chains")
@example(h=1, w=3, data=Draws(1, 3), method="euler", rounding="stochastic",
         seed=9).via("a 1-D transform, lanes not dividing the arrays' 2n")
def test_noisy_fourier_path_cores_match_the_model(h, w, data, method, rounding, seed):
    # Units A and B read their DFT arrays through the DAC, the ADC and the read noise (the
    # model's FixedFourierConv with the same seeds), tile C as on the direct path.
    config = fourier(image=(h, w), method=method, rounding=rounding, lfsr_seed=0xACE1 + seed,
                     kernel=data.draw(st.sampled_from([k for k in (1, 3) if k <= min(h, w)])),
                     lanes=data.draw(st.integers(1, h * w)), neumann_terms=1, max_iter=2)
    check_noisy_core(config, seed, images=2)


def test_the_device_costs_no_cycle_on_the_fourier_path():
    config = fourier(image=(2, 3), kernel=1, lanes=2, rounding="nearest")
    ideal = ideal_of(config)
    images = np.random.default_rng(4).uniform(0, 1, (2, config.m))
    _, cycles = run_plan_amaranth(ideal, make_plan(ideal, random_params(ideal, 4), images))
    assert check_noisy_core(config, 4, images=2) == cycles


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_noisy_fourier_core_on_a_cocotb_simulator(simulator, tmp_path):
    config = fourier(image=(3, 3), kernel=3, lanes=4, rounding="stochastic", dac_bits=5,
                     adc_bits=6, read_noise=0.05)
    params = random_params(config, 7)
    images = np.random.default_rng(7).uniform(0, 1, (2, config.m))
    result = simulate_core(config, params, images, simulator=simulator, out_dir=tmp_path)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["images"] == 2 and result["agreement"] == 1.0
    ideal = model_results(ideal_of(config), params, images)
    assert compare(ideal, model_results(config, params, images))["mismatches"] > 0


#: The Fourier path refuses the write models with the model's message (FixedNetwork's).
FOURIER_WRITES = (r"^the Fourier path: the DFT arrays hold a fixed table: the device's write "
                  r"models \(states, program_noise, pulses\) do not apply; give read models "
                  r"only \(dac_bits, adc_bits, adc_range, read_noise\)$")


@pytest.mark.parametrize(("changes", "message"), [
    ({"structure": "conv", "conv_path": "fourier", "kernel": 3, "states": 16}, FOURIER_WRITES),
    ({"structure": "conv", "conv_path": "fourier", "kernel": 3, "program_noise": 0.01,
      "adc_bits": 6}, FOURIER_WRITES),
    ({"structure": "conv", "conv_path": "fourier", "kernel": 3, "pulses": 16}, FOURIER_WRITES),
    ({"structure": "conv", "kernel": 3, "pulses": 16, "training": True},
     r"^the device's write models \(states, program_noise\) need a dense network; a "
     r"convolution's tied weights would drift apart$"),
    ({"structure": "conv", "kernel": 3, "states": 16, "rounding": "nearest"},
     r"^the device's write models \(states, program_noise\) need a dense network; a "
     r"convolution's tied weights would drift apart$"),
    ({"adc_range": 2.0**-15},
     r"^device: an ADC range of 3.0517578125e-05 of Q\d+\.\d+'s full scale leaves fewer than "
     r"2 code bits$"),
])
def test_core_refuses_what_it_does_not_carry(changes, message):
    config = CoreConfig(image=(3, 3), classes=3, lanes=3, **changes)
    with pytest.raises(ValueError, match=message):
        Core(config)
    with pytest.raises(ConfigError, match=message):
        CoreParams(config)


def test_simulate_takes_the_device_options(capsys, tmp_path, monkeypatch):
    out = tmp_path / "sim"
    code, _, err = run(capsys, "simulate", "--pulses", 16, "--images", 1, "--out", out)
    assert code == 2 and err.strip() == (
        "xbarode simulate: error: [device]: pulses act on the SGD step only and xbarode "
        "simulate runs inference; train with them: xbarode train --on rtl --pulses N")
    code, _, err = run(capsys, "simulate", "--adc-bits", 1, "--images", 1, "--out", out)
    assert code == 2 and err.strip() == ("xbarode simulate: error: --adc-bits: adc_bits must "
                                         "be an integer from 2 to 32 (or None for none), not 1")
    # The options win over --set and reach the core's configuration (the run itself is
    # test_noisy_core_on_verilator's and the figures' in docs/device.md).
    seen = {}

    def fake_simulate_core(config, params, images, labels=None, **kwargs):
        seen["device"], seen["images"] = config.device(), len(images)
        raise RuntimeError("stop here")

    monkeypatch.setattr("xbarode.simulate.simulate_core", fake_simulate_core)
    code, _, err = run(capsys, "simulate", "--set", "adc_bits=4", "--adc-bits", 8,
                       "--read-noise", 0.005, "--dac-bits", 8, "--images", 2, "--out", out)
    assert "stop here" in err
    assert seen == {"device": DeviceModel(dac_bits=8, adc_bits=8, read_noise=0.005),
                    "images": 2}


def test_simulate_refuses_write_models_on_the_fourier_path(capsys, tmp_path):
    code, _, err = run(capsys, "simulate", "--set", "structure=conv", "--set",
                       "conv_path=fourier", "--states", 16, "--images", 1, "--out", tmp_path)
    assert code == 2
    assert err.strip() == ("xbarode simulate: error: [device]: the Fourier path: the DFT "
                           "arrays hold a fixed table: the device's write models (states, "
                           "program_noise, pulses) do not apply; give read models only "
                           "(dac_bits, adc_bits, adc_range, read_noise)")
