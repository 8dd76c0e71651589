"""Training on the core (hdl/core.py with ``training``): BACKWARD, the gradient sums, the SGD
step, against the fixed-point model bit for bit on every simulator, and against the float64
adjoint; ``xbarode cosim adjoint`` and ``xbarode train --on rtl``.

The model twin (sim/adjoint_plan.py) runs FixedNetwork.forward, loss_gradient, backward and
sgd_step one image at a time, as the hardware does.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpers import LIVE_FRACTION, Draws, first_seed, last_json, live_fraction, run
from xbarode.hdl.tile import CrossbarTile
from xbarode.model.core_config import ConfigError, CoreConfig
from xbarode.model.fixed import Format, Rounder
from xbarode.model.fixed_ops import FixedTile
from xbarode.sim import adjoint_plan
from xbarode.sim.adjoint_plan import compare, gradient_words, make_plan, run_plan_amaranth
from xbarode.sim.core_plan import random_params
from xbarode.units import UNITS, backward_mac_count, cosim


def small(**changes):
    base = {"image": (2, 3), "lanes": 2, "classes": 3, "steps": 2, "training": True,
            "lr": 0.5, "batch": 2, "neumann_terms": 2}
    return CoreConfig(**{**base, **changes})


def check_amaranth(config, params, images, labels, apply_every=2):
    plan, expected = make_plan(config, params, images, labels, apply_every=apply_every)
    got, cycles = run_plan_amaranth(config, plan)
    report = compare(expected, got)
    assert report["mismatches"] == 0, report["first"]
    return plan, expected, got, cycles


# --- configuration and constructor errors ---------------------------------------------------

@pytest.mark.parametrize(("changes", "message"), [
    ({"lr": 0.3}, r"^lr must be a power of two \(a shift in hardware\), not 0\.3$"),
    ({"batch": 3}, r"^batch must be a power of two \(a shift in hardware\), not 3$"),
    ({"batch": 0}, r"^batch must be between 1 and 65536, not 0$"),
    ({"training": "yes"}, r"^training must be true or false, not 'yes'$"),
    ({"training": True, "acc_width": 39},
     r"^acc_width: an accumulator of 39 bits is too narrow for the gradient sum "
     r"λ·relu\(u\)ᵀ: 256 products of 16x16-bit words need 40 bits$"),
])
def test_training_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        CoreConfig(**changes)


def test_tile_grad_format_must_be_a_format():
    f = Format(16, 12)
    with pytest.raises(TypeError, match=r"^grad_format must be a Format, not str$"):
        CrossbarTile(rows=2, cols=2, lanes=1, weight_format=f, input_format=f,
                     output_format=f, grad_format="16.12")


def test_plan_refuses_an_inference_core():
    config = CoreConfig(image=(2, 2), lanes=2, classes=2)
    with pytest.raises(ValueError, match=r"set training = true in \[train\]$"):
        make_plan(config, random_params(config, 0), np.zeros((1, 4)), [0], apply_every=1)


# --- the model's draw order for the tile that holds Bᵀ --------------------------------------

def test_transposed_apply_draws_in_the_order_of_the_transpose():
    w = Format(16, 14)
    rng = np.random.default_rng(0)
    weights = rng.integers(-9000, 9000, (3, 5))
    grad = rng.integers(-2**22, 2**22, (3, 5))
    tile = FixedTile(weights, weight_format=w, acc_width=48, rounder=Rounder("stochastic", 7))
    tile.apply_gradient(grad, 20, shift=3, transposed=True)
    # Reference: a tile holding Wᵀ, stepped with the transposed gradient, then transposed back.
    twin = FixedTile(weights.T, weight_format=w, acc_width=48,
                     rounder=Rounder("stochastic", 7))
    twin.apply_gradient(grad.T, 20, shift=3)
    assert np.array_equal(tile.weights, twin.weights.T)
    plain = FixedTile(weights, weight_format=w, acc_width=48, rounder=Rounder("stochastic", 7))
    plain.apply_gradient(grad, 20, shift=3)
    assert not np.array_equal(plain.weights, tile.weights)   # the order matters


# --- bit-exact against the model in Amaranth's simulator ------------------------------------

@settings(max_examples=4, deadline=None)   # and the pinned examples below
@given(h=st.integers(1, 3), w=st.integers(1, 3), data=st.data(),
       method=st.sampled_from(["euler", "implicit_euler"]),
       rounding=st.sampled_from(["floor", "nearest", "stochastic"]),
       seed=st.integers(0, 2**16))
# Draws: lanes, classes, steps, neumann_terms, max_iter, tol, lr, batch, apply_every.
@example(h=2, w=3, data=Draws(6, 3, 2, 2, 0, 1, 0.5, 2, 2), method="implicit_euler",
         rounding="stochastic", seed=1).via("lanes = m, max_iter = 0")
@example(h=3, w=2, data=Draws(1, 2, 2, 1, 2, 0, 0.125, 1, 1), method="implicit_euler",
         rounding="nearest", seed=2).via("lanes = 1, tol = 0")
@example(h=1, w=3, data=Draws(3, 4, 1, 0, 2, 0, 1.0, 4, 3), method="euler", rounding="floor",
         seed=3).via("one row, lanes = m")
def test_small_cores_train_like_the_model(h, w, data, method, rounding, seed):
    m = h * w
    config = small(image=(h, w), lanes=data.draw(st.integers(1, m)),
                   classes=data.draw(st.integers(2, 4)), steps=data.draw(st.integers(1, 3)),
                   method=method, rounding=rounding,
                   neumann_terms=data.draw(st.integers(0, 2)),
                   max_iter=data.draw(st.integers(0, 2)), tol=data.draw(st.integers(0, 2)),
                   lfsr_seed=seed + 1,
                   lr=data.draw(st.sampled_from([0.125, 0.5, 1.0])),
                   batch=data.draw(st.sampled_from([1, 2, 4])))
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (3, m))
    labels = rng.integers(0, config.classes, 3)
    check_amaranth(config, random_params(config, seed), images, labels,
                   apply_every=data.draw(st.integers(1, 3)))


@pytest.mark.parametrize("method", ["euler", "implicit_euler"])
def test_conv_structure_trains_on_the_direct_path(method):
    config = small(image=(3, 3), structure="conv", kernel=3, lanes=4, method=method)
    images = np.random.default_rng(2).uniform(0, 1, (2, 9))
    assert live_fraction(config, random_params(config, 2), images) >= LIVE_FRACTION
    check_amaranth(config, random_params(config, 2), images, [0, 2])


def test_saturation_corner_raises_the_flag_in_both():
    # Weights at the top of the format and a huge learning rate: λ, the steps and the
    # weights saturate; the flag must say so in the model and in the hardware.
    config = small(lr=1.0, batch=1, grad="12.9")
    params = {**random_params(config, 5), "A": np.full((6, 6), 1.9), "B": np.full((6, 6), 1.9),
              "C": np.full((3, 6), -1.9)}
    images = np.random.default_rng(5).uniform(0.9, 1, (2, config.m))
    _, expected, got, _ = check_amaranth(config, params, images, [0, 1], apply_every=1)
    assert any(e["overflow"] for e in expected if e["kind"] == "apply")
    assert [g["overflow"] for g in got] == [e["overflow"] for e in expected]


def test_bias_gradient_is_the_sum_of_the_loaded_words():
    # A reference outside the model: ∂L/∂d summed over the images is the sum of the words
    # the host loaded, and ∂L/∂C of one image their outer product with the final state.
    config = small(image=(2, 2), classes=3)
    images = np.random.default_rng(9).uniform(0, 1, (2, 4))
    assert live_fraction(config, random_params(config, 9), images) >= LIVE_FRACTION
    plan, _, got, _ = check_amaranth(config, random_params(config, 9), images, [1, 2],
                                     apply_every=2)
    m, classes = 4, 3
    loaded = np.array([image["grad_logits"] for image in plan["images"]])
    grads = np.array(got[1]["grads"])   # after the second image: sums over both
    d = grads[2 * m * m + classes * m: 2 * m * m + classes * m + classes]
    assert np.array_equal(d, loaded.sum(axis=0))
    assert grads.size == gradient_words(config)


def test_gradients_approximate_the_float64_adjoint():
    # The fixed-point gradients (hardware = model) against the float64 discrete adjoint of the
    # same dequantised weights, with 24-bit formats: close to rounding level.
    from xbarode.model.train import Config, loss_and_grads

    config = small(image=(2, 2), classes=3, weight="24.20", state="24.16", act="24.14",
                   grad="24.16", acc_width=62, steps=2)
    params = random_params(config, 4)
    x = np.random.default_rng(4).uniform(0, 1, (1, 4))
    assert live_fraction(config, params, x) >= LIVE_FRACTION
    plan, _, got, _ = check_amaranth(config, params, x, [1], apply_every=1)
    f = config.formats()
    weights = {k: f.weight.to_float(f.weight.quantize(params[k], "nearest")) for k in params}
    reference = Config(image_shape=(2, 2), classes=3, steps=2, T=2 * config.h)
    _, float_grads = loss_and_grads(reference, weights, f.state.to_float(
        np.array([plan["images"][0]["x"]])), np.array([1]))
    words = np.array(got[0]["grads"], dtype=np.float64)
    m, c = 4, 3
    scale_ab = config.h * 2.0 ** -(f.grad.frac + f.state.frac)
    hw = {"A": words[:m * m].reshape(m, m) * scale_ab,
          "B": words[m * m:2 * m * m].reshape(m, m).T * config.h
          * 2.0 ** -(f.grad.frac + f.act.frac),
          "C": words[2 * m * m:2 * m * m + c * m].reshape(c, m)
          * 2.0 ** -(f.grad.frac + f.state.frac),
          "d": words[2 * m * m + c * m:2 * m * m + c * m + c] * 2.0 ** -f.grad.frac}
    for name, value in hw.items():
        tolerance = 1e-3 * max(np.abs(float_grads[name]).max(), 1.0)
        assert np.abs(float_grads[name]).max() >= 100 * tolerance, f"{name}: vacuous"
        assert np.abs(value - float_grads[name]).max() <= tolerance, name


# --- the MAC bound of BACKWARD, counted from the adjoint's equations --------------------------

def adjoint_products(config):
    """The matrix products one image's BACKWARD needs, written from the discrete adjoint of
    docs/architecture.md §1: ``(what, rows, cols)``, each ``rows·cols`` multiply–accumulates.

    The core keeps only the trajectory, so each step recomputes ``u = A z`` (the Heaviside
    mask and ``relu(u)``); the head's ``∂L/∂logits`` comes from the host.
    """
    m, c = config.m, config.classes
    products = [("λ_N = Cᵀ ∂L/∂logits", m, c), ("∂L/∂C += ∂L/∂logits z_Nᵀ", c, m)]
    for _ in range(config.steps):
        products.append(("u = A z", m, m))
        if config.method == "euler":
            products += [("Bᵀ λ", m, m), ("∂L/∂B += λ relu(u)ᵀ", m, m),
                         ("∂L/∂A += g zᵀ", m, m), ("λ += h Aᵀ g", m, m)]
        else:
            # (I - h J)ᵀ μ = λ by the Neumann iteration: per term Bᵀ then Aᵀ.
            for _ in range(config.neumann_terms):
                products += [("Bᵀ μ", m, m), ("h Aᵀ (D Bᵀ μ)", m, m)]
            products += [("g = D Bᵀ μ", m, m), ("∂L/∂B += μ relu(u)ᵀ", m, m),
                         ("∂L/∂A += g zᵀ", m, m)]
    return products


def adjoint_macs(config):
    return sum(rows * cols for _, rows, cols in adjoint_products(config))


@pytest.mark.parametrize("changes", [
    {}, {"method": "implicit_euler"}, {"method": "implicit_euler", "neumann_terms": 0},
    {"image": (3, 5), "classes": 4, "steps": 3},
    {"image": (3, 5), "steps": 5, "method": "implicit_euler", "neumann_terms": 3},
    {"image": (3, 4), "structure": "conv", "kernel": 3}])
def test_backward_mac_count_is_the_adjoints(changes):
    config = small(**changes)
    assert backward_mac_count(config) == adjoint_macs(config)


def test_backward_mac_count_of_the_default_core():
    # 8 explicit steps of 5 products of 64×64, C's transposed product and gradient (10×64).
    assert adjoint_macs(CoreConfig()) == 8 * 5 * 64 * 64 + 2 * 10 * 64 == 165_120
    assert backward_mac_count(CoreConfig()) == 165_120


# --- the command line, and cocotb on the generated Verilog ----------------------------------

@pytest.mark.parametrize(("simulator", "method", "structure"), [
    ("verilator", "euler", "dense"), ("verilator", "implicit_euler", "conv"),
    ("icarus", "euler", "conv"), ("icarus", "implicit_euler", "dense")])
def test_cosim_adjoint_on_cocotb(simulator, method, structure, tmp_path):
    # Both methods and both structures (the tied SGD step) on each simulator.
    config = small(image=(3, 3), lanes=4, method=method, rounding="stochastic",
                   structure=structure, kernel=3)
    from xbarode.units import AdjointParams

    params = AdjointParams(config, apply_every=2)
    result = cosim(UNITS["adjoint"], params, vectors=3, seed=1, simulator=simulator,
                   out=tmp_path)
    assert result["mismatches"] == 0, result["first_mismatch"]
    amaranth = cosim(UNITS["adjoint"], params, vectors=3, seed=1, simulator="amaranth",
                     out=tmp_path)
    assert amaranth["mismatches"] == 0 and amaranth["cycles"] == result["cycles"]


@pytest.mark.parametrize("simulator", ["amaranth", "verilator"])
def test_a_wrong_gradient_word_is_named(simulator, monkeypatch, tmp_path):
    real = adjoint_plan.make_plan

    def wrong(*args, **kwargs):
        plan, expected = real(*args, **kwargs)
        expected[0]["grads"][1] += 1
        return plan, expected

    monkeypatch.setattr(adjoint_plan, "make_plan", wrong)
    from xbarode.units import AdjointParams

    result = cosim(UNITS["adjoint"], AdjointParams(small(), 1), vectors=1, seed=0,
                   simulator=simulator, out=tmp_path)
    assert result["mismatches"] == 1
    assert result["first_mismatch"].startswith("image 0: grads[1] (A[0, 1]) is ")
    assert result["waveform"] is not None


#: The digits training core of the two command-line runs below: the default core (16 lanes)
#: with batch 2 (one SGD step per two images; the batch is a shift in APPLY). Both generate
#: the same Verilog, so the suite builds it for Verilator once: a build of this core takes
#: minutes, and the build cache is keyed by the Verilog text.
TRAINING_CORE = ("--set", "lanes=16", "--set", "batch=2", "--set", "rounding=stochastic")


def test_cosim_adjoint_cli_default_core_and_cycle_bound(capsys, tmp_path):
    # The digits core's size with 16 lanes (the training core at 64 lanes is a long build).
    code, out, err = run(capsys, "cosim", "adjoint", "--vectors", "2", "--simulator",
                         "verilator", *TRAINING_CORE, "--out", tmp_path, "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["mismatches"] == 0 and result["compared"] > 2 * 8842
    config = CoreConfig(lanes=16)
    bound = adjoint_macs(config) / config.lanes   # 8·5·64² + 2·10·64 MACs on 16 lanes
    assert bound == (8 * 5 * 64 * 64 + 2 * 10 * 64) / 16
    assert result["backward_mac_bound_cycles"] == bound
    # The target: a backward pass within 1.2 × its MAC bound (deterministic cycle counts).
    assert result["cycles"]["backward"] <= 1.2 * bound
    assert result["backward_cycles_ratio"] == result["cycles"]["backward"] / bound


def test_train_on_rtl_equals_the_model(capsys, tmp_path):
    # Two SGD steps of two images each on the digits training core (the build is shared
    # with the test above).
    code, out, err = run(capsys, "train", "--on", "rtl", "--images", "4", *TRAINING_CORE,
                         "--rtl-out", tmp_path, "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["sgd_steps"] == 2 and result["weights_identical"]
    assert result["mismatches"] == 0
    assert result["loss_rtl"] == result["loss_model"]
    assert result["loss_rtl"][0] == pytest.approx(np.log(10))   # zero head: uniform softmax


def test_train_on_rtl_bad_input(capsys):
    code, _, err = run(capsys, "train", "--on", "rtl", "--images", "0")
    assert code == 2 and "--images must be between 1 and 1437 (the training set), not 0" in err


def test_training_config_round_trips(tmp_path):
    from xbarode.model.core_config import load_config

    config = dataclasses.replace(small(), lr=0.25, batch=8)
    path = tmp_path / "core.toml"
    path.write_text(config.to_toml())
    assert load_config(path) == config
    assert "[train]\ntraining = true\nlr = 0.25\nbatch = 8" in config.to_toml()


def kernel_reference(config, seed):
    """What ``cosim adjoint --seed SEED --vectors 1`` draws (random_params and the images and
    labels from default_rng(seed)), and the float64 adjoint's gradients of the same quantised
    kernels: ``(params, images, float_grads)``."""
    from xbarode.model.train import Config, loss_and_grads

    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (1, config.m))
    labels = rng.integers(0, config.classes, 1)
    params = random_params(config, seed)
    f = config.formats()
    kernels = {k: f.weight.to_float(f.weight.quantize(v, "nearest")) for k, v in params.items()}
    reference = Config(structure="conv", kernel_size=3, image_shape=config.image,
                       classes=config.classes, steps=config.steps, T=config.steps * config.h)
    x = f.state.to_float(f.state.quantize(images, "nearest"))
    return params, images, loss_and_grads(reference, kernels, x, labels)[1]


#: The kernel gradients' tolerance, ``1e-3·max(max|g|, 1)``, must be this many times smaller
#: than the reference's largest entry: a comparison with a reference below it proves nothing.
KERNEL_GRADIENT_MARGIN = 100


def test_kernel_gradients_pulled_back_match_the_float64_kernel_adjoint(tmp_path):
    # Convolution tiles accumulate dense sums; the host's pull-back of the RTL's words onto
    # the 3×3 kernels agrees with the float64 adjoint's kernel gradients (24-bit formats).
    # The draw must keep the relu alive and the reference's kernel gradients well above the
    # tolerance (seed 3, the earlier choice, has relu dead at every step and both exactly 0).
    from xbarode.units import AdjointParams

    config = small(image=(3, 4), structure="conv", kernel=3, lanes=5, classes=3,
                   weight="24.20", state="24.16", act="24.14", grad="24.16", acc_width=62)

    def live_with_large_kernel_gradients(seed):
        params, images, grads = kernel_reference(config, seed)
        big = [np.abs(grads[n]).max() >= KERNEL_GRADIENT_MARGIN * 1e-3 * max(
            np.abs(grads[n]).max(), 1.0) for n in "AB"]
        return live_fraction(config, params, images) >= LIVE_FRACTION and all(big)

    seed = first_seed(live_with_large_kernel_gradients, start=3)
    _, _, float_grads = kernel_reference(config, seed)
    result = cosim(UNITS["adjoint"], AdjointParams(config, apply_every=8), vectors=1,
                   seed=seed, simulator="amaranth", out=tmp_path)
    assert result["mismatches"] == 0, result["first_mismatch"]
    f = config.formats()
    scale = {"A": config.h * 2.0 ** -(f.grad.frac + f.state.frac),
             "B": config.h * 2.0 ** -(f.grad.frac + f.act.frac)}
    for name in "AB":
        got = np.array(result["kernel_gradients"][name]) * scale[name]
        assert got.shape == (3, 3)
        assert np.abs(got - float_grads[name]).max() <= 1e-3 * max(
            np.abs(float_grads[name]).max(), 1.0), name


def test_conv_sgd_keeps_the_kernels_tied_and_steps_like_the_float64_adjoint():
    # One SGD step on a convolution core (24-bit formats, nearest rounding): the RTL's A and
    # Bᵀ stay circular-convolution matrices, and each kernel moves by -lr times the float64
    # adjoint's kernel gradient (train.loss_and_grads), to within 1e-3 of the step.
    from xbarode.model.conv import conv_matrix
    from xbarode.model.train import Config, loss_and_grads

    config = small(image=(3, 4), structure="conv", kernel=3, lanes=5, classes=3, lr=0.5,
                   batch=1, weight="24.20", state="24.16", act="24.14", grad="24.16",
                   acc_width=62)
    m, f = config.m, config.formats()
    rng = np.random.default_rng(0)
    images, labels = rng.uniform(0, 1, (1, m)), [1]
    kernels = {k: f.weight.to_float(f.weight.quantize(v, "nearest"))
               for k, v in random_params(config, 0).items()}
    assert live_fraction(config, kernels, images) >= LIVE_FRACTION
    got = check_amaranth(config, kernels, images, labels, apply_every=1)[2]
    words = np.array(got[-1]["weights"], dtype=np.int64)
    a_new = f.weight.to_float(words[:m * m].reshape(m, m))
    b_new = f.weight.to_float(words[m * m:2 * m * m].reshape(m, m)).T   # read as Bᵀ
    reference = Config(structure="conv", kernel_size=3, image_shape=(3, 4), classes=3,
                       steps=config.steps, T=config.steps * config.h)
    x = f.state.to_float(f.state.quantize(images, "nearest"))
    _, float_grads = loss_and_grads(reference, kernels, x, np.array(labels))
    for name, new in (("A", a_new), ("B", b_new)):
        # The kernel the RTL holds, read off output pixel (1, 1): its tap (p, q) reads input
        # pixel (2 - p, 2 - q) (the convention of conv.py's docstring).
        kernel = np.array([[new[1 * 4 + 1, (2 - p) * 4 + (2 - q)] for q in range(3)]
                           for p in range(3)])
        assert np.array_equal(new, conv_matrix(kernel, (3, 4))), f"{name} is not a convolution"
        step = kernel - kernels[name]
        want = -config.lr * float_grads[name]
        assert np.abs(step - want).max() <= 1e-3 * np.abs(want).max() + 2.0 ** -20, name
        assert np.abs(want).max() > 2.0 ** -10, "the step is too small to test anything"
