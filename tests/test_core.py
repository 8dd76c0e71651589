"""The neural-ODE core (hdl/core.py) against its fixed-point twin (FixedNetwork, one image at a
time), bit for bit, on every simulator; the configuration file; ``xbarode simulate``,
``generate core`` and the demo.

Small cores (a few state entries, odd lane counts) run on all three simulators; the default
digits core runs on Verilator (one build, shared by every test that uses it).
"""

import json

import numpy as np
import pytest
from amaranth.hdl import Fragment
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpers import LIVE_FRACTION, Draws, first_seed, last_json, live_fraction, run
from xbarode.cli import main
from xbarode.hdl.core import Core
from xbarode.hdl.core_parts import CoreOp
from xbarode.hdl.fourier import FourierConv
from xbarode.hdl.tile import CrossbarTile
from xbarode.model.core_config import ConfigError, CoreConfig, load_config
from xbarode.shipped import CONFIGS
from xbarode.sim import core_plan
from xbarode.sim.core_plan import (
    compare,
    make_plan,
    model_results,
    random_params,
    run_plan_amaranth,
)
from xbarode.sim.latency import core_bound
from xbarode.simulate import DEFAULT_WEIGHTS, mac_bound_cycles, mac_count, simulate_core
from xbarode.units import UNITS, cosim


def small(**changes):
    base = {"image": (2, 3), "lanes": 2, "classes": 3, "steps": 3}
    return CoreConfig(**{**base, **changes})


def check_amaranth(config, params, images):
    plan = make_plan(config, params, images)
    got, cycles = run_plan_amaranth(config, plan)
    report = compare(model_results(config, params, images), got)
    assert report["mismatches"] == 0, report["first"]
    return got, cycles


# --- configuration --------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "message"), [
    ({"image": (0, 8)}, r"^image must be \[H, W\] with positive integers, not \(0, 8\)$"),
    ({"lanes": 65}, r"^lanes must be between 1 and 64, not 65$"),
    ({"lanes": True}, r"^lanes must be an integer, not True$"),
    ({"lanes": 16, "lanes_c": 32}, r"^lanes_c must be between 1 and 16, not 32$"),
    ({"lanes": 16, "lanes_c": 6}, r"^lanes_c must divide lanes \(16\), not 6$"),
    ({"lanes_c": 0}, r"^lanes_c must be between 1 and 16, not 0$"),
    ({"method": "rk4"}, r"^method must be one of \['euler', 'implicit_euler'\], not 'rk4'$"),
    ({"h": 0.3}, r"^h must be a power of two \(a shift in hardware\), not 0\.3$"),
    ({"state": "16.16"}, r"^state: format frac must be >= 0 and < width \(16\), not 16$"),
    ({"structure": "conv", "kernel": 4}, r"^kernel must be odd and fit the image \(8, 8\), "
                                         r"not 4$"),
    ({"conv_path": "fourier"}, r"^conv_path 'fourier' needs structure 'conv'$"),
    ({"channels": 2}, r"^channels = 2 needs conv_path 'fourier' \(the direct path's core has "
                      r"one channel\)$"),
    ({"channels": 17}, r"^channels must be between 1 and 16, not 17$"),
    ({"channels": 2, "structure": "conv", "conv_path": "fourier", "read_noise": 0.01},
     r"^the Fourier path with channels has no device models: \[device\] must be off with "
     r"channels > 1$"),
    ({"pool": 3}, r"^pool must divide the image 8x8, not 3$"),
    ({"pool": 9}, r"^pool must be between 1 and 8, not 9$"),
    ({"pool": 2, "training": True}, r"^pool > 1 is for inference: training needs pool = 1$"),
    ({"conv_path": "fourier", "structure": "conv", "training": True},
     r"^conv_path 'fourier' is for inference; training needs conv_path 'direct'$"),
    ({"conv_path": "fourier", "structure": "conv", "fourier_data": "18.10"},
     r"^fourier_data 18\.10 cannot hold state words \(16\.11\) exactly: it needs at least 5 "
     r"integer and 11 fractional bits$"),
    ({"conv_path": "fourier", "structure": "conv", "fourier_data": "17.11"},
     r"^fourier_data 17\.11 cannot hold act words \(16\.9\) exactly: it needs at least 7 "
     r"integer and 9 fractional bits$"),
    ({"twiddle": "18"}, r"^twiddle: "),
    ({"max_iter": 300}, r"^max_iter must be between 0 and 255, not 300$"),
    ({"lfsr_seed": 0}, r"^lfsr_seed: LFSR seed must be a non-zero 32-bit integer, not 0$"),
])
def test_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        CoreConfig(**changes)


def test_config_file_round_trip_and_defaults(tmp_path):
    config = CoreConfig(image=(4, 5), lanes=3, method="implicit_euler", h=0.125, tol=2,
                        rounding="stochastic", lfsr_seed=0x1234)
    path = tmp_path / "core.toml"
    path.write_text(config.to_toml())
    assert load_config(path) == config
    assert load_config(None) == CoreConfig()
    partial = tmp_path / "partial.toml"
    partial.write_text('[ode]\nmethod = "implicit_euler"\n')
    assert load_config(partial) == CoreConfig(method="implicit_euler")


@pytest.mark.parametrize(("text", "message"), [
    ("[core\n", "not valid TOML"),
    ("[solver]\nsteps = 3\n", "unknown table [solver]; expected [core], [ode], [fixed]"),
    ("[ode]\nstep = 3\n", "unknown key 'step' in [ode]"),
    ("[ode]\nsteps = 0\n", "steps must be between 1 and 1024, not 0"),
    ("[fixed]\nrounding = 'up'\n", "rounding must be one of"),
])
def test_config_file_errors_name_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_config(tmp_path / "none.toml")


def test_core_rejects_a_non_config():
    with pytest.raises(TypeError, match=r"^config must be a CoreConfig, not dict$"):
        Core({"image": (8, 8)})


def _tile_c(config):
    f = config.formats()
    return CrossbarTile(rows=config.classes, cols=config.m, lanes=config.lanes, bias=True,
                        weight_format=f.weight, input_format=f.state, output_format=f.act,
                        grad_format=f.grad, acc_width=config.acc_width)


@pytest.mark.parametrize(("changes", "build_part"), [
    # Inference: the configuration leaves the accumulator to the tiles; A is the first.
    ({"acc_width": 20}, lambda c: CrossbarTile(
        rows=c.m, cols=c.m, lanes=c.lanes, weight_format=c.formats().weight,
        input_format=c.formats().state, output_format=c.formats().act, acc_width=20)),
    # Training: the configuration checks its sums, but not C's bias on gradient-wide words.
    ({"training": True, "grad": "24.16", "acc_width": 42, "batch": 1, "steps": 1}, _tile_c),
    # The Fourier path: unit A's rows array.
    ({"structure": "conv", "conv_path": "fourier", "kernel": 1, "acc_width": 36},
     lambda c: FourierConv(*c.image, lanes=c.lanes, data_format=c.fourier()["data"],
                           twiddle_format=c.fourier()["twiddle"],
                           spectrum_format=c.fourier()["spectrum"], acc_width=36)),
], ids=["inference", "training-C", "fourier"])
def test_core_refuses_what_its_parts_refuse_with_their_messages(changes, build_part):
    # The parts are built in elaborate; the constructor checks them first, so a bad
    # configuration still fails at Core(config), with the message of the part that refuses.
    config = small(**{"image": (2, 2), "classes": 2, **changes})
    with pytest.raises(ValueError) as part:
        build_part(config)
    with pytest.raises(ValueError) as core:
        Core(config)
    assert str(core.value) == str(part.value)


# --- bit-exact against the model in Amaranth's simulator ------------------------------------

@settings(max_examples=4, deadline=None)   # and the pinned examples below
@given(h=st.integers(1, 3), w=st.integers(1, 3), data=st.data(),
       method=st.sampled_from(["euler", "implicit_euler"]),
       rounding=st.sampled_from(["floor", "nearest", "stochastic"]),
       seed=st.integers(0, 2**16))
# Draws: lanes, steps, neumann_terms, max_iter, tol.
@example(h=2, w=3, data=Draws(6, 2, 2, 0, 1), method="implicit_euler", rounding="stochastic",
         seed=1).via("lanes = m, max_iter = 0")
@example(h=3, w=2, data=Draws(1, 2, 2, 3, 0), method="implicit_euler", rounding="nearest",
         seed=2).via("lanes = 1, tol = 0")
@example(h=3, w=3, data=Draws(4, 1, 0, 2, 0), method="implicit_euler", rounding="floor",
         seed=3).via("neumann_terms = 0, tol = 0")
def test_small_cores_match_the_model(h, w, data, method, rounding, seed):
    m = h * w
    config = CoreConfig(image=(h, w), lanes=data.draw(st.integers(1, m)), classes=3,
                        steps=data.draw(st.integers(1, 3)), method=method, rounding=rounding,
                        neumann_terms=data.draw(st.integers(0, 3)),
                        max_iter=data.draw(st.integers(0, 3)), tol=data.draw(st.integers(0, 2)),
                        lfsr_seed=seed + 1)
    images = np.random.default_rng(seed).uniform(0, 1, (2, m))
    check_amaranth(config, random_params(config, seed), images)


@pytest.mark.parametrize("method", ["euler", "implicit_euler"])
def test_formats_narrower_than_a_status_word(method):
    # 8-bit words: READ_STATUS's 9-bit words (explicit Euler's 0x100) still read whole.
    config = CoreConfig(image=(2, 3), lanes=2, classes=3, steps=2, method=method,
                        weight="8.6", state="8.5", act="8.4", grad="8.5", max_iter=2)
    core = Core(config)
    assert len(core.o.payload) == 9 and len(core.i.payload) == 8
    Fragment.get(core, None)   # built, as a generated core is
    images = np.random.default_rng(7).uniform(0, 1, (2, 6))
    check_amaranth(config, random_params(config, 7), images)


@pytest.mark.parametrize("method", ["euler", "implicit_euler"])
def test_conv_structure_on_the_direct_path(method):
    # The tiles hold the kernels' circular-convolution matrices; the model's are checked
    # against scipy in test_conv.py. The draw must keep the relu alive, or tile B never
    # reaches an output (seed 8, the earlier choice, has u <= -0.56 at every step).
    config = CoreConfig(image=(3, 4), structure="conv", kernel=3, lanes=5, classes=3, steps=2,
                        method=method, neumann_terms=2, max_iter=2)

    def draw(seed):
        return random_params(config, seed), np.random.default_rng(seed).uniform(0, 1, (2, 12))

    def live(seed):
        return live_fraction(config, *draw(seed)) >= LIVE_FRACTION

    params, images = draw(first_seed(live, start=8))
    assert params["A"].shape == (3, 3)
    check_amaranth(config, params, images)


@settings(max_examples=6, deadline=None)
@given(h=st.integers(1, 3), w=st.integers(1, 4), data=st.data(),
       method=st.sampled_from(["euler", "implicit_euler"]),
       rounding=st.sampled_from(["floor", "nearest", "stochastic"]),
       seed=st.integers(0, 2**16))
def test_fourier_path_cores_match_the_model(h, w, data, method, rounding, seed):
    # conv_path = "fourier": two FourierConv units and the controller's narrowings.
    m = h * w
    config = CoreConfig(image=(h, w), structure="conv", conv_path="fourier",
                        kernel=data.draw(st.sampled_from([k for k in (1, 3) if k <= min(h, w)])),
                        lanes=data.draw(st.integers(1, m)), classes=3,
                        steps=data.draw(st.integers(1, 2)), method=method, rounding=rounding,
                        neumann_terms=data.draw(st.integers(0, 2)),
                        max_iter=data.draw(st.integers(0, 2)), lfsr_seed=seed + 1,
                        fourier_data=data.draw(st.sampled_from(["22.12", "20.11", "24.16"])))
    images = np.random.default_rng(seed).uniform(0, 1, (2, m))
    check_amaranth(config, random_params(config, seed), images)


@settings(max_examples=3, deadline=None)   # and the pinned examples below
@given(data=st.data(), method=st.sampled_from(["euler", "implicit_euler"]),
       rounding=st.sampled_from(["floor", "nearest", "stochastic"]),
       seed=st.integers(0, 2**16))
# Draws: height, width, channels, pool, lanes, (implicit Euler: neumann_terms, max_iter,
# tol,) lanes_c, steps.
@example(data=Draws(4, 4, 2, 2, 4, 2, 2), method="euler", rounding="stochastic",
         seed=3).via("2 channels, 2×2 pool, C on 2 lanes")
@example(data=Draws(3, 6, 3, 3, 5, 1, 1, 1, 5, 1), method="implicit_euler",
         rounding="nearest", seed=4).via("3 channels, 3×3 pool (a reciprocal), odd lanes")
def test_channel_cores_match_the_model(data, method, rounding, seed):
    # The Fourier path with channels: two FourierBank units hold the c×c kernel banks; the
    # image is channel 0 of the state; the pool (if any) walks z_N into C.
    h, w = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    channels = data.draw(st.integers(2, 3))
    pool = data.draw(st.sampled_from([p for p in range(1, min(h, w) + 1)
                                      if h % p == 0 and w % p == 0]))
    m = channels * h * w
    lanes = data.draw(st.integers(1, min(m, 8)))
    newton = {"neumann_terms": data.draw(st.integers(0, 1)),
              "max_iter": data.draw(st.integers(0, 1)), "tol": data.draw(st.integers(0, 1))} \
        if method == "implicit_euler" else {}
    config = CoreConfig(image=(h, w), structure="conv", conv_path="fourier",
                        kernel=3 if min(h, w) >= 3 else 1, channels=channels, pool=pool,
                        lanes=lanes, lanes_c=data.draw(st.sampled_from(
                            [d for d in range(1, lanes + 1) if lanes % d == 0])),
                        classes=3, steps=data.draw(st.integers(1, 2)), method=method,
                        rounding=rounding, lfsr_seed=seed + 1, **newton)
    params = random_params(config, seed)
    assert params["A"].shape == (channels, channels, config.kernel, config.kernel)
    images = np.random.default_rng(seed).uniform(0, 1, (2, h * w))
    got, _ = check_amaranth(config, params, images)
    assert len(got[0]["state"]) == m


@pytest.mark.parametrize(("lfsr_seed", "conv_path"), [
    (0xFFFFFFFF, "direct"), (0xFFFFFFFD, "direct"), (0xFFFFFFF8, "fourier")])
def test_stochastic_rounding_at_the_top_seeds(lfsr_seed, conv_path):
    # The sites' seeds wrap past 2³² − 1 (site_seed): at 0xFFFFFFFF tiles B and C used to
    # share seed 1; at 0xFFFFFFF8 the Fourier units' sites passed 2³² − 1 (a ValueError). The
    # hardware takes its seeds from the same rule as the model: every word must agree.
    from xbarode.model.fixed import site_seed

    shape = {"structure": "conv", "conv_path": "fourier", "kernel": 1, "image": (2, 2),
             "steps": 1} if conv_path == "fourier" else {"steps": 2}
    config = small(rounding="stochastic", lfsr_seed=lfsr_seed, **shape)
    seeds = [site_seed(lfsr_seed, k) for k in range(10)]
    assert len(set(seeds)) == 10 and 0 not in seeds

    def draw(seed):
        return random_params(config, seed), np.random.default_rng(seed).uniform(0, 1,
                                                                               (2, config.m))

    def live(seed):
        return live_fraction(config, *draw(seed)) >= LIVE_FRACTION

    check_amaranth(config, *draw(first_seed(live, start=12)))


def test_fourier_path_approaches_the_float64_network():
    # A reference outside the fixed-point model: the Fourier core's logits against the float64
    # network on the same kernels (train.predict), explicit Euler, 3×4 images; the error is
    # the formats' rounding, a few act LSBs (2^-9) per step.
    from xbarode.model.train import Config, predict

    config = CoreConfig(image=(3, 4), structure="conv", conv_path="fourier", kernel=3,
                        lanes=4, classes=3, steps=2, fourier_data="24.16")
    params = random_params(config, 11)
    images = np.random.default_rng(11).uniform(0, 1, (2, config.m))
    assert live_fraction(config, params, images) >= LIVE_FRACTION
    got, _ = check_amaranth(config, params, images)
    f = config.formats()
    weights = {"A": params["A"], "B": params["B"],
               **{k: f.weight.to_float(f.weight.quantize(params[k], "nearest")) for k in "Cd"}}
    reference = Config(structure="conv", kernel_size=3, image_shape=(3, 4), classes=3,
                       steps=2, T=2 * config.h)
    x = f.state.to_float(f.state.quantize(images, "nearest"))
    want = predict(reference, weights, x)
    logits = f.act.to_float(np.array([g["logits"] for g in got]))
    assert np.abs(logits - want).max() <= 8 * 2.0 ** -9, np.abs(logits - want).max()
    assert np.abs(want).max() > 0.25


def test_implicit_euler_iterates_and_reports_it():
    config = small(method="implicit_euler", neumann_terms=2, max_iter=4)
    images = np.random.default_rng(3).uniform(0, 1, (2, config.m))
    assert live_fraction(config, random_params(config, 3), images) >= LIVE_FRACTION
    got, _ = check_amaranth(config, random_params(config, 3), images)
    iterations = [s & 0xFF for r in got for s in r["status"]]
    assert max(iterations) >= 1                      # Newton did update
    assert all(s >> 8 in (0, 1) for r in got for s in r["status"])


def test_newton_limit_reports_no_convergence():
    # With tol = 0 and one update allowed, Newton stops at the limit without converging.
    config = small(method="implicit_euler", max_iter=1, tol=0, neumann_terms=1)
    images = np.random.default_rng(4).uniform(0, 1, (1, config.m))
    expected = model_results(config, random_params(config, 4), images)
    assert any(s >> 8 == 0 for s in expected[0]["status"])
    got, _ = check_amaranth(config, random_params(config, 4), images)
    assert got[0]["status"] == expected[0]["status"]


def test_saturation_raises_the_flag_in_both():
    # All-positive weights near the top of 16.14 and bright images: u = A z is about 11, and
    # h·B·relu(u) about 32, twice the state format's range: z saturates on every image.
    config = small()
    params = {**random_params(config, 5), "A": np.full((6, 6), 1.9), "B": np.full((6, 6), 1.9)}
    images = np.random.default_rng(5).uniform(0.9, 1, (2, config.m))
    expected = model_results(config, params, images)
    assert all(e["overflow"] == 1 for e in expected)
    got, _ = check_amaranth(config, params, images)
    assert all(g["overflow"] == 1 for g in got)


def test_explicit_run_latency_and_mac_bound():
    config = small(steps=4)
    images = np.random.default_rng(6).uniform(0, 1, (1, config.m))
    _, cycles = check_amaranth(config, random_params(config, 6), images)
    m = config.m
    assert mac_count(config, [0x100] * 4) == 4 * 2 * m * m + config.classes * m
    # The two products of a chain overlap: a step costs less than two sequential products
    # (2·(m·C + 7) cycles each, C = 3 chunks here).
    assert cycles[0] < 4 * 2 * (m * 3 + 7) + 40


def inference_macs(config, iterations):
    """Multiply–accumulates of one RUN on the direct path, counted from the equations of
    docs/architecture.md §1 as the core's docstring applies them: ``f(w) = B·relu(A w)`` and a
    Neumann term ``B·(D ⊙ A δ)`` are two m×m products each; an explicit step evaluates ``f``
    once; an implicit step with ``k`` Newton updates (``iterations``, per step) evaluates
    ``f`` for the predictor and ``k + 1`` residuals (the last one finds the stop) and
    ``k·neumann_terms`` Neumann terms; then the head ``C z`` (classes×m)."""
    m = config.m
    chains = 0
    for k in iterations:
        chains += 1 if config.method == "euler" else 1 + (k + 1) + k * config.neumann_terms
    return chains * 2 * m * m + config.classes * m


@pytest.mark.parametrize("changes", [
    {}, {"method": "implicit_euler", "neumann_terms": 2, "max_iter": 4},
    {"method": "implicit_euler", "neumann_terms": 0, "max_iter": 3, "image": (3, 3)},
    {"method": "implicit_euler", "max_iter": 0},
    {"method": "implicit_euler", "max_iter": 1, "tol": 0, "neumann_terms": 3}])
def test_mac_count_is_the_equations(changes):
    # The iteration counts from the model's status words (the hardware's are equal, tested
    # above), the MACs from inference_macs.
    config = small(**changes)
    images = np.random.default_rng(1).uniform(0, 1, (3, config.m))
    for result in model_results(config, random_params(config, 1), images):
        iterations = [s & 0xFF for s in result["status"]]
        if config.method == "euler":
            assert iterations == [0] * config.steps
        assert mac_count(config, result["status"]) == inference_macs(config, iterations)


# --- cocotb on the generated Verilog --------------------------------------------------------

@pytest.mark.parametrize(("simulator", "method", "conv_path"), [
    ("verilator", "euler", "direct"), ("verilator", "implicit_euler", "fourier"),
    ("icarus", "euler", "fourier"), ("icarus", "implicit_euler", "direct"),
    ("verilator", "euler", "channels"), ("icarus", "euler", "channels")])
def test_small_core_on_cocotb_matches_the_model(simulator, method, conv_path, tmp_path):
    # Both methods and both convolution paths on each simulator; channels: the Fourier path
    # with 2 channels and the 2×2 pool before C (image 4×4).
    structure = "conv" if conv_path != "direct" else "dense"
    shape = {"image": (4, 4), "channels": 2, "pool": 2} if conv_path == "channels" else {}
    config = small(**({"image": (3, 3)} | shape), lanes=4, method=method, neumann_terms=2,
                   max_iter=3, rounding="stochastic", structure=structure,
                   conv_path="fourier" if conv_path == "channels" else conv_path)
    params = random_params(config, 7)
    images = np.random.default_rng(7).uniform(0, 1, (3, config.pixels))
    result = simulate_core(config, params, images, simulator=simulator, out_dir=tmp_path)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["agreement"] == 1.0 and result["images"] == 3
    amaranth = simulate_core(config, params, images, simulator="amaranth", out_dir=tmp_path)
    assert amaranth["cycles_per_image"] == result["cycles_per_image"]


@pytest.mark.parametrize("simulator", ["amaranth", "verilator", "icarus"])
def test_a_mismatch_is_named_and_a_waveform_written(simulator, monkeypatch, tmp_path):
    real = core_plan.model_results

    def wrong(config, params, images):
        results = real(config, params, images)
        results[0]["state"][2] += 1
        return results

    monkeypatch.setattr(core_plan, "model_results", wrong)
    result = cosim(UNITS["core"], small(), vectors=1, seed=0, simulator=simulator,
                   out=tmp_path)
    assert result["mismatches"] == 1
    assert result["first_mismatch"].startswith("image 0: state[2] is ")
    assert "the model says" in result["first_mismatch"]
    assert result["waveform"] is not None


# --- images streamed in while the core runs ---------------------------------------------------

@pytest.mark.parametrize(("changes", "seed"), [
    ({"lanes": 6, "lanes_c": 2, "rounding": "nearest"}, 1),      # one chunk; C's in three
    ({"lanes": 4, "lanes_c": 1, "method": "implicit_euler", "max_iter": 2,
      "neumann_terms": 1}, 2),                                    # m = 6: chunks of 4 and 2
])
def test_images_stream_in_while_the_core_runs(changes, seed):
    from xbarode.sim.core_plan import weight_loads
    from xbarode.sim.engine import AmaranthDriver, run_simulation

    config = small(**changes)
    params = random_params(config, seed)
    images = np.random.default_rng(seed).uniform(0, 1, (4, config.m))
    words = make_plan(config, params, images)["images"]
    expected = model_results(config, params, images)
    # The plan's way (reads between RUNs) with LOAD_IMAGE and with the image stream.
    _, cycles = check_amaranth(config, params, images)
    plan = make_plan(config, params, images, image_stream=True)
    streamed, streamed_cycles = run_plan_amaranth(config, plan)
    assert compare(expected, streamed)["mismatches"] == 0
    assert streamed_cycles == cycles     # the stream does not slow RUN down
    dut = Core(config)
    seen = {}

    async def bench(ctx):
        drv = AmaranthDriver(ctx, dut)
        for op, load in weight_loads(plan):
            await drv.send(op, load)
        await drv.put("image", words[0])
        # Back to back: each RUN starts in the cycle after the last one's done (cls read in
        # the done cycle), the next image streamed meanwhile: one image per RUN latency.
        seen["cls"], seen["latency"] = [], []
        for index in range(3):
            latency, (cls,) = await drv.run(CoreOp.RUN, sample=("cls",),
                                            feed=("image", words[index + 1]))
            seen["cls"].append(cls)
            seen["latency"].append(latency)
        # RUN started while an image is arriving (its first words taken before start, the
        # rest during the wait) runs that image, waiting for its last word.
        await drv.put("image", words[0][:2])
        latency, (cls,) = await drv.run(CoreOp.RUN, sample=("cls",), feed=("image",
                                                                            words[0][2:]))
        seen["waited"] = (latency, cls)
        seen["state"] = await drv.receive(CoreOp.READ_STATE, config.m)
        # LOAD_IMAGE forgets a partly arrived image; RUN then runs LOAD_IMAGE's.
        await drv.put("image", words[2][:3])
        await drv.send(CoreOp.LOAD_IMAGE, words[1])
        latency, (cls,) = await drv.run(CoreOp.RUN, sample=("cls",))
        seen["after_load"] = cls
        seen["trajectory"] = await drv.receive(CoreOp.READ_TRAJECTORY,
                                               (config.steps + 1) * config.m)

    run_simulation(dut, bench)
    # The first three RUNs are the model's sequence (with stochastic rounding too: the LFSRs
    # run on from reset in both).
    assert seen["cls"] == [e["cls"] for e in expected[:3]]
    if config.rounding != "stochastic":     # the LFSRs run on: later images round otherwise
        assert seen["waited"][1] == expected[0]["cls"]
        assert seen["state"] == expected[0]["state"]
        assert seen["after_load"] == expected[1]["cls"]
        assert seen["trajectory"] == expected[1]["trajectory"]
    assert seen["latency"] == cycles[:3]
    # The wait: at least the cycles of the words still to come.
    assert seen["waited"][0] >= cycles[0] + config.m - 2


# --- the default digits core on Verilator -------------------------------------------------

# 4 images in the default suite (the build, shared with the demo's test, is the same); 12
# under slow, and the whole test set in test_whole_test_set_on_verilator.
@pytest.mark.parametrize("images", [4, pytest.param(12, marks=pytest.mark.slow)])
def test_simulate_default_core_on_digits(images, capsys, tmp_path):
    code, out, err = run(capsys, "simulate", "--images", images, "--out", tmp_path, "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["images"] == images and result["mismatches"] == 0
    assert result["agreement"] == 1.0
    assert result["accuracy"] >= 0.9 and result["model_accuracy"] == result["accuracy"]
    # 8 explicit steps of two 64×64 products at the same time on A and B (16 lanes each),
    # then C's 10×64 product on its 16 lanes.
    assert (CoreConfig().lanes, CoreConfig().lanes_c) == (16, 16)
    assert result["mac_bound_cycles"] == 8 * 64 * 64 / 16 + 10 * 64 / 16
    assert inference_macs(CoreConfig(), [0] * 8) == 8 * 2 * 64 * 64 + 10 * 64
    # Where the default core stands: with C = 4 chunks per row a chain takes about 2·C
    # cycles per row (with C = 1 about one), so 16 lanes are 1.8 times their bound.
    assert result["cycles_per_image"] <= 1.85 * result["mac_bound_cycles"]
    # The package's recorded synthesis is of this configuration: latency and images per
    # second at its fmax (one image per RUN latency, the next streamed meanwhile).
    recorded = json.loads(DEFAULT_WEIGHTS.with_name("core_synth.json").read_text())
    assert recorded["config"] == CoreConfig().to_toml()
    assert result["fmax_mhz"] == recorded["fmax_mhz"] > 0
    assert result["latency_us"] == pytest.approx(result["cycles_per_image"]
                                                 / recorded["fmax_mhz"])
    assert result["images_per_second"] == pytest.approx(1e6 / result["latency_us"])


# The default suite runs the digits network on the Fourier path with 4 lanes and 2 steps: less
# than half the Verilog of 16 lanes (a Verilator build of minutes) and a quarter of the chains
# per image. The 16-lane core with the digits network's 8 steps runs under slow.
@pytest.mark.parametrize(("lanes", "steps"), [(4, 2), pytest.param(16, 8, marks=pytest.mark.slow)])
def test_simulate_fourier_path_on_digits(lanes, steps, capsys, tmp_path):
    # 3×3 kernels trained in fixed point (the model's tied SGD), run on the Fourier path.
    weights = tmp_path / "conv.npz"
    code, _, err = run(capsys, "train", "--width", "16", "--structure", "conv",
                       "--kernel-size", "3", "--steps", steps, "--h", "0.25", "--epochs", "5",
                       "--out", weights, "--json")
    assert code == 0, err
    code, out, err = run(capsys, "simulate", "--set", "structure=conv", "--set",
                         "conv_path=fourier", "--set", f"lanes={lanes}", "--set",
                         f"steps={steps}", "--weights", weights, "--images", "4", "--out",
                         tmp_path, "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["mismatches"] == 0 and result["agreement"] == 1.0
    assert result["accuracy"] == result["model_accuracy"] >= 0.75
    assert "fmax_mhz" not in result      # no synthesis recorded for this configuration
    fourier = CoreConfig(structure="conv", conv_path="fourier", lanes=lanes, steps=steps)
    assert fourier.lanes_c == lanes
    # The two convolutions one after the other on the lanes, then C on as many.
    assert result["mac_bound_cycles"] == mac_count(fourier, [0x100] * steps) / lanes
    # Per chain two Fourier convolutions: 2·(H·(2W)² + W·(2H)²) + 4·H·W MACs each.
    assert mac_count(fourier, [0x100] * steps) == steps * 2 * (2 * (8 * 256 + 8 * 256)
                                                               + 256) + 640


def test_mac_bound_of_a_channel_core():
    # Closed forms: per chain two banks, each c DFTs and c inverse DFTs of
    # H·(2W)² + W·(2H)² MACs and the mixing's 4·c²·H·W; the transforms on the lanes, the
    # mixing on its unit's 4 multipliers; then C on the pooled features.
    config = CoreConfig(structure="conv", conv_path="fourier", channels=2, pool=2)
    transform = 8 * 16**2 + 8 * 16**2
    per_bank = 2 * 2 * transform + 4 * 2**2 * 64
    assert config.features == 2 * 16
    assert mac_count(config, [0x100] * 8) == 8 * 2 * per_bank + 10 * 32
    assert mac_bound_cycles(config, [0x100] * 8) == \
        8 * (2 * 2 * 2 * transform / 16 + 2 * 4 * 4 * 64 / 4) + 10 * 32 / 16


def test_simulate_fourier_path_on_mnist5k(capsys, tmp_path):
    # The 28×28 workload, where only the Fourier path fits the device: one channel, 3×3
    # kernels trained in float64 on mnist5k, one Euler step (an eighth of the default's
    # chains; the RTL is the same) and one held-out image on Icarus, whose build takes
    # seconds where Verilator's takes minutes at this size.
    weights = tmp_path / "m28.npz"
    code, _, err = run(capsys, "train", "--dataset", "mnist5k", "--structure", "conv",
                       "--kernel-size", "3", "--steps", "1", "--h", "0.25", "--optimizer",
                       "adam", "--lr", "0.01", "--epochs", "1", "--out", weights, "--json")
    assert code == 0, err
    code, out, err = run(capsys, "simulate", "--dataset", "mnist5k", "--set", "image=[28,28]",
                         "--set", "structure=conv", "--set", "conv_path=fourier", "--set",
                         "steps=1", "--weights", weights, "--images", "1", "--simulator",
                         "icarus", "--out", tmp_path, "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["mismatches"] == 0 and result["agreement"] == 1.0
    assert result["compared"] > 784
    assert result["accuracy"] == result["model_accuracy"]
    # Two Fourier convolutions (2·(H·(2W)² + W·(2H)²) + 4·H·W MACs each) and C (10×784), on
    # 16 lanes.
    macs = 2 * (2 * (28 * 56**2 + 28 * 56**2) + 4 * 784) + 10 * 784
    assert result["mac_bound_cycles"] == macs / 16
    assert result["mac_bound_cycles"] < result["cycles_per_image"] <= 1.5 * macs / 16


def test_shipped_mnist5k_core_on_a_held_out_image(capsys, tmp_path):
    # The shipped 28×28 network (4 channels, 3×3 kernel banks, 8 Euler steps, a 2×2 pool) on
    # its shipped core (two FourierBank units with 8 lanes per DFT array, C on 8): the first
    # held-out image on Verilator, every logit, state, trajectory and status word and flag
    # against the fixed-point model. The README has the figure of more images.
    code, out, err = run(capsys, "simulate", "--dataset", "mnist5k", "--weights", "mnist5k",
                         "--config", "mnist5k", "--images", "1", "--out", tmp_path, "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["mismatches"] == 0 and result["agreement"] == 1.0
    # The trajectory alone is 9 states of 4·784 words.
    assert result["compared"] > 9 * 4 * 784
    config = load_config(CONFIGS["mnist5k"])
    assert result["cycles_per_image"] <= core_bound(config, CoreOp.RUN)
    # Per chain two banks, each 4 DFTs and 4 inverse DFTs of 28·56² + 28·56² MACs on 8
    # lanes and the mixing's 4·4²·784 on its 4 multipliers; then C (10×4·14·14) on 8 lanes.
    transform = 2 * 28 * 56**2
    bound = 8 * 2 * (2 * 4 * transform / 8 + 4 * 4**2 * 784 / 4) + 10 * 4 * 14 * 14 / 8
    assert result["mac_bound_cycles"] == bound
    # The target for the Fourier path: within 1.5 times the bound.
    assert bound < result["cycles_per_image"] <= 1.5 * bound
    # µs per image at the recorded synthesis's fmax (xbarode/data/core_synth_mnist5k.json).
    assert result["fmax_mhz"] > 0
    assert result["latency_us"] == pytest.approx(result["cycles_per_image"] / result["fmax_mhz"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["euler", "implicit_euler"])
def test_whole_test_set_on_verilator(method, tmp_path):
    config = tmp_path / "core.toml"
    config.write_text(CoreConfig(method=method).to_toml())
    code = main(["simulate", "--config", str(config), "--out", str(tmp_path), "--json"])
    assert code == 0


def test_shipped_weights_are_what_training_produces(capsys, tmp_path):
    out = tmp_path / "w.npz"
    code, _, err = run(capsys, "train", "--width", "16", "--out", out, "--json")
    assert code == 0, err
    from xbarode.model import load_weights

    config, params = load_weights(out)
    shipped_config, shipped = load_weights(DEFAULT_WEIGHTS)
    assert config == shipped_config
    for name in params:
        assert np.array_equal(params[name], shipped[name]), name


def test_demo_runs_the_whole_flow(capsys, tmp_path):
    code, out, err = run(capsys, "demo", "--epochs", "2", "--rtl-images", "3", "--out",
                         tmp_path / "w.npz", "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["rtl"]["mismatches"] == 0 and result["rtl"]["images"] == 3
    assert {"float_accuracy", "fixed_accuracy", "verilog"} <= set(result)
    assert (tmp_path / "rtl" / "xbarode_core.v").is_file()


# --- generate and the command line ----------------------------------------------------------

def test_generate_core(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(small().to_toml())
    code = main(["generate", "core", "--config", str(config), "--out", str(tmp_path),
                 "--json"])
    assert code == 0
    verilog = (tmp_path / "xbarode_core.v").read_text()
    assert "module xbarode_core" in verilog
    manifest = json.loads((tmp_path / "xbarode_core.json").read_text())
    assert manifest["parameters"]["image"] == [2, 3]
    for port in manifest["ports"]:
        assert port["name"] in verilog


@pytest.mark.parametrize(("argv", "message"), [
    (["--images", "400"], "--images must be between 1 and 360"),
    (["--config", "missing.toml"], "cannot read configuration missing.toml"),
])
def test_simulate_bad_input_exits_2(argv, message, capsys):
    code, _, err = run(capsys, "simulate", *argv)
    assert code == 2 and message in err


def test_simulate_refuses_a_core_of_another_image_size(capsys, tmp_path):
    # Checked before the weights (whose shapes follow from the image): the digits are 8×8.
    config = tmp_path / "c.toml"
    config.write_text(CoreConfig(image=(4, 4), lanes=4).to_toml())
    code, _, err = run(capsys, "simulate", "--config", config, "--images", "1")
    assert code == 2
    assert "the digits are 8x8 images; the configuration's image is 4x4" in err


def test_set_overrides_the_configuration(tmp_path):
    from xbarode.model.core_config import parse_overrides

    path = tmp_path / "c.toml"
    path.write_text('[ode]\nsteps = 4\n')
    config = load_config(path, parse_overrides(["method=implicit_euler", "lanes=8",
                                                "h=0.125", "image=[4, 4]"]))
    assert (config.steps, config.method, config.lanes, config.h, config.image) == \
        (4, "implicit_euler", 8, 0.125, (4, 4))
    with pytest.raises(ConfigError, match="--set takes KEY=VALUE"):
        parse_overrides(["speed=3"])
