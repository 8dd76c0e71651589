"""Tests of the fixed-point digits network (``xbarode.model.fixed_net``), fixed-point training
and its configuration (``xbarode.model.train``), and the fixed-point options of the command
line, against the float64 golden model on the same quantised weights."""

from __future__ import annotations

import dataclasses
import math
import re
from fractions import Fraction

import numpy as np
import pytest

from helpers import LIVE_FRACTION, last_json, positive_fraction, run
from xbarode.model import (
    Config,
    Digits,
    accuracy,
    load_weights,
    loss_and_grads,
    predict,
    train,
)
from xbarode.model.fixed import Format
from xbarode.model.fixed_net import INT_BITS, FixedFormats, FixedNetwork, formats_for_width

H = 0.25                     # the default Config's step: T = 2 over 8 steps


@pytest.fixture(scope="module")
def small_digits(digits):
    return Digits(digits.x_train[:256], digits.y_train[:256], digits.x_test[:128],
                  digits.y_test[:128])


@pytest.fixture(scope="module")
def float_params(digits):
    """A briefly trained float64 network: realistic weight and state ranges."""
    return train(Config(epochs=4), digits)[0]


def network(params, width, method="euler", rounding="nearest"):
    # 64 images × 8 steps of gradient terms need 49 accumulator bits for 20-bit words.
    formats = formats_for_width(width, acc_width=56 if width > 16 else 48)
    return FixedNetwork(params, formats, rounding=rounding, h=H, steps=8, method=method,
                        newton={"neumann_terms": 30, "max_iter": 50})


def word_values(ints, fmt: Format) -> np.ndarray:
    return np.asarray(ints, dtype=np.float64) / 2**fmt.frac


def weight_ints(net: FixedNetwork) -> dict[str, np.ndarray]:
    return {"A": net.A.weights.copy(), "B": net.B.weights.copy(), "C": net.C.weights.copy(),
            "d": net.d.copy()}


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [4, 8, 12, 16, 20, 32])
def test_formats_for_width_leaves_the_documented_integer_bits(width):
    formats = formats_for_width(width)
    documented = {"weight": 2, "state": 5, "act": 7, "grad": 5}
    assert INT_BITS == documented
    for name, int_bits in documented.items():
        assert getattr(formats, name) == Format(width, max(width - int_bits, 0))
    assert formats.acc_width == 48


def test_formats_for_width_spelled_out():
    formats = formats_for_width(12)
    assert formats.as_strings() == {"weight": "12.10", "state": "12.7", "act": "12.5",
                                    "grad": "12.7"}


def test_formats_for_width_frac_and_overrides():
    formats = formats_for_width(16, 8, acc_width=40, grad="20.18", act="12.3")
    assert formats == FixedFormats(weight=Format(16, 8), state=Format(16, 8),
                                   act=Format(12, 3), grad=Format(20, 18), acc_width=40)
    with pytest.raises(ValueError, match=r"unknown signal class \['bias', 'foo'\]; choose from "
                                         r"\['weight', 'state', 'act', 'grad'\]"):
        formats_for_width(16, foo="16.8", bias="8.4")
    with pytest.raises(ValueError, match=r"WIDTH\.FRAC"):
        formats_for_width(16, grad="1.0.0")
    with pytest.raises(ValueError, match="frac must be"):
        formats_for_width(8, 8)


@pytest.mark.parametrize(("acc_width", "error", "message"),
                         [(1, ValueError, "acc_width must be between 2 and 63, not 1"),
                          (64, ValueError, "acc_width must be between 2 and 63, not 64"),
                          (True, TypeError, "acc_width must be an integer"),
                          (40.0, TypeError, "acc_width must be an integer")])
def test_fixed_formats_rejects_bad_accumulators(acc_width, error, message):
    with pytest.raises(error, match=message):
        FixedFormats(Format(8, 4), Format(8, 4), Format(8, 4), Format(8, 4), acc_width)


def formats_of(weight, state, act, grad, acc_width):
    return FixedFormats(Format(weight, 0), Format(state, 0), Format(act, 0), Format(grad, 0),
                        acc_width)


@pytest.mark.parametrize(
    ("widths", "classes", "gradient_terms", "acc_width", "named"),
    [
        # 64 products of 16x16-bit words need about 16 + 16 + 6 bits.
        ((16, 16, 16, 16), 10, 0, 30, "A·z: 64 products of 16x16-bit words"),
        ((16, 10, 16, 10), 10, 0, 34, "B·relu(u): 64 products of 16x16-bit words"),
        # Tile sums of 8-bit words need about 22 bits; 30-bit gradients against 10 classes,
        # 8 + 30 + 4; against all 64 state entries, 8 + 30 + 6.
        ((8, 8, 8, 30), 10, 0, 40, "Cᵀ·λ: 10 products of 8x30-bit words"),
        ((8, 8, 8, 30), 2, 0, 40, "Bᵀ·λ and Aᵀ·g: 64 products of 8x30-bit words"),
        # Tile sums of 16x24 bits need about 46 bits; gradient sums over 256 terms, 48.
        ((16, 16, 16, 24), 10, 256, 46,
         "the gradient sum λ·relu(u)ᵀ: 256 products of 24x16-bit words"),
        ((16, 20, 8, 24), 10, 256, 47, "the gradient sum g·zᵀ: 256 products of 24x20-bit"),
    ],
)
def test_fixed_formats_check_names_the_sum(widths, classes, gradient_terms, acc_width, named):
    formats = formats_of(*widths, acc_width)
    with pytest.raises(ValueError, match=re.escape(f"an accumulator of {acc_width} bits is too "
                                                   f"narrow for {named}")):
        formats.check(64, classes, gradient_terms)
    formats_of(*widths, 63).check(64, classes, gradient_terms)


def test_fixed_formats_check_adds_a_bit_for_the_bias():
    # A·z and C·z + d sum the same 64 products; the bias needs room for one more.
    for acc_width in range(30, 45):
        formats = formats_of(16, 16, 8, 8, acc_width)
        try:
            formats.check(64, 10)
        except ValueError as exc:
            if "A·z" not in str(exc):
                assert "C·z + d" in str(exc)
                break
    else:
        raise AssertionError("no width was wide enough for A·z but not for C·z + d")


# --- forward pass ----------------------------------------------------------------------------


def float_twin(net: FixedNetwork, x, method="euler"):
    """Float64 logits of the network's own quantised weights on its quantised inputs."""
    state = net.formats.state
    x_words = word_values(state.quantize(x), state)
    config = Config(method=method, linear_solver="exact")
    return predict(config, net.params(), x_words), x_words, config


def test_params_are_the_weight_words(float_params):
    net = network(float_params, 12)
    w = net.formats.weight
    for name, ints in weight_ints(net).items():
        np.testing.assert_array_equal(net.params()[name], ints / 2**w.frac)
        # Loaded with round to nearest: within half an LSB of the float weights.
        assert np.abs(net.params()[name] - float_params[name]).max() <= w.lsb / 2


@pytest.mark.parametrize("method", ["euler", "implicit_euler"])
def test_forward_approaches_float_predict_as_width_grows(float_params, digits, method):
    x = digits.x_test[:64]
    diffs = {}
    for width in (12, 16, 20):
        net = network(float_params, width, method)
        logits, trajectory, info = net.forward(x)
        assert logits.shape == (64, 10) and trajectory.shape == (9, 64, 64)
        assert logits.dtype == np.int64 and not net.overflow.flag, net.overflow.counts
        reference, _, _ = float_twin(net, x, method)
        diffs[width] = np.abs(word_values(logits, net.formats.act) - reference).max()
        if method == "implicit_euler":
            assert info["iterations"].shape == info["converged"].shape == (8, 64)
            assert info["converged"].all() and (info["iterations"] >= 1).all()
    assert diffs[20] < diffs[12] / 16
    assert diffs[16] < diffs[12] / 4
    # At 20 bits the logits are a few act LSBs (2^-13) from the float twin.
    assert diffs[20] < 16 * 2.0**-13


def test_predict_agrees_with_float_at_16_bits(float_params, digits):
    net = network(float_params, 16)
    reference, _, _ = float_twin(net, digits.x_test)
    agree = np.mean(net.predict(digits.x_test) == reference.argmax(axis=1))
    assert agree >= 0.99


# --- backward pass and SGD -------------------------------------------------------------------


def scaled_gradients(net: FixedNetwork, grads: dict, batch: int) -> dict[str, np.ndarray]:
    """The documented scaling: h on the A and B sums, 1/batch, 2^-(fractional bits)."""
    f = net.formats
    return {"A": grads["A"] * H / batch / 2.0 ** (f.grad.frac + f.state.frac),
            "B": grads["B"] * H / batch / 2.0 ** (f.grad.frac + f.act.frac),
            "C": grads["C"] / batch / 2.0 ** (f.grad.frac + f.state.frac),
            "d": grads["d"] / batch / 2.0**f.grad.frac}


@pytest.mark.parametrize("method", ["euler", "implicit_euler"])
def test_backward_approaches_float_gradients_as_width_grows(float_params, digits, method):
    x, y = digits.x_train[:64], digits.y_train[:64]
    errors = {}
    for width in (12, 16, 20):
        net = network(float_params, width, method)
        logits, trajectory, _ = net.forward(x)
        grads = net.backward(trajectory, net.loss_gradient(logits, y))
        assert not net.overflow.flag, net.overflow.counts
        assert grads["z0"].shape == (64, 64)
        _, x_words, config = float_twin(net, x, method)
        _, reference = loss_and_grads(config, net.params(), x_words, y)
        # Live relu at every step (where the adjoint differentiates), non-zero references.
        states = net.formats.state.to_float(trajectory)
        states = states[1:] if method == "implicit_euler" else states[:-1]
        assert positive_fraction(states @ net.params()["A"].T) >= LIVE_FRACTION
        assert all(np.abs(reference[k]).max() > 0 for k in "ABCd")
        ours = scaled_gradients(net, grads, len(y))
        errors[width] = max(np.abs(ours[k] - reference[k]).max() / np.abs(reference[k]).max()
                            for k in "ABCd")
    assert errors[20] < errors[12] / 16
    assert errors[20] < 2e-3


def test_loss_gradient_is_softmax_minus_onehot(float_params, digits):
    net = network(float_params, 16)
    logits, _, _ = net.forward(digits.x_test[:20])
    y = digits.y_test[:20]
    got = word_values(net.loss_gradient(logits, y), net.formats.grad)
    scores = word_values(logits, net.formats.act)
    expected = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    expected[np.arange(20), y] -= 1
    assert np.abs(got - expected).max() <= net.formats.grad.lsb / 2 + 1e-12


def test_sgd_step_equals_rounded_gradient_step(float_params, digits):
    x, y = digits.x_train[:64], digits.y_train[:64]
    lr, batch = 0.125, 64
    net = network(float_params, 16)
    logits, trajectory, _ = net.forward(x)
    grads = net.backward(trajectory, net.loss_gradient(logits, y))
    before, values_before = weight_ints(net), net.params()
    f = net.formats
    net.sgd_step(grads, lr=lr, batch_size=batch)
    assert not net.overflow.flag
    after = weight_ints(net)
    float_step = scaled_gradients(net, grads, batch)
    frac = {"A": f.grad.frac + f.state.frac, "B": f.grad.frac + f.act.frac,
            "C": f.grad.frac + f.state.frac, "d": f.grad.frac}
    h = {"A": Fraction(1, 4), "B": Fraction(1, 4), "C": 1, "d": 1}
    moved = 0
    for name in "ABCd":
        # Exact: one round-half-up per weight of W - lr/batch·h·sum·2^-frac, in weight LSBs.
        scale = Fraction(lr) / batch * h[name] / 2 ** frac[name] * 2**f.weight.frac
        expected = [w + math.floor(-g * scale + Fraction(1, 2))
                    for w, g in zip(before[name].ravel().tolist(),
                                    grads[name].ravel().tolist(), strict=True)]
        assert after[name].ravel().tolist() == expected, name
        # And within half a weight LSB of the float step on the same gradient.
        new_values = word_values(after[name], f.weight)
        target = values_before[name] - lr * float_step[name]
        assert np.abs(new_values - target).max() <= f.weight.lsb / 2 * (1 + 1e-9)
        moved += int((after[name] != before[name]).sum())
    assert moved > 100


def test_stochastic_sgd_step_within_one_lsb(float_params, digits):
    x, y = digits.x_train[:32], digits.y_train[:32]
    net = network(float_params, 12, rounding="stochastic")
    logits, trajectory, _ = net.forward(x)
    grads = net.backward(trajectory, net.loss_gradient(logits, y))
    values_before = net.params()
    net.sgd_step(grads, lr=0.25, batch_size=32)
    step = scaled_gradients(net, grads, 32)
    for name in "ABCd":
        target = values_before[name] - 0.25 * step[name]
        assert np.abs(net.params()[name] - target).max() < net.formats.weight.lsb * (1 + 1e-9)


# --- training --------------------------------------------------------------------------------


def fixed_config(**changes):
    base = {"precision": "fixed", "epochs": 2, "weight_format": "12.10",
            "state_format": "12.7", "act_format": "12.5", "grad_format": "12.8"}
    return Config(**{**base, **changes})


def trained_ints(config, data):
    params, summary = train(config, data)
    w = Format(*(int(p) for p in config.weight_format.split(".")))
    ints = {}
    for name, value in params.items():
        scaled = value * 2**w.frac
        np.testing.assert_array_equal(scaled, np.round(scaled))      # exactly on the grid
        ints[name] = scaled.astype(np.int64)
    return ints, summary


def test_fixed_training_is_reproducible_and_seeded(small_digits):
    first, summary = trained_ints(fixed_config(), small_digits)
    again, _ = trained_ints(fixed_config(), small_digits)
    other, _ = trained_ints(fixed_config(lfsr_seed=12345), small_digits)
    for name in "ABCd":
        np.testing.assert_array_equal(first[name], again[name])
    assert any(not np.array_equal(first[k], other[k]) for k in "ABCd")
    assert summary["overflows"] == sum(summary["overflow_sites"].values())
    assert len(summary["losses"]) == 2 and summary["losses"][1] < summary["losses"][0]


def test_fixed_training_with_implicit_euler(small_digits):
    config = fixed_config(method="implicit_euler", epochs=1, neumann_terms=8, max_iter=5)
    _params, summary = train(config, small_digits)
    assert summary["test_accuracy"] > 0.3
    assert math.isfinite(summary["final_loss"])


def test_fixed_training_of_convolution_kernels(small_digits):
    # structure = "conv" in fixed point: the tiles hold the kernels' matrices, SGD keeps them
    # tied, and training returns 3×3 kernels that learn (against conv.conv_matrix and the
    # float64 network evaluated on the same kernels).
    from xbarode.model.conv import conv_matrix
    from xbarode.model.train import accuracy, fixed_network

    config = fixed_config(structure="conv", kernel_size=3, epochs=2)
    params, summary = train(config, small_digits)
    assert params["A"].shape == params["B"].shape == (3, 3)
    assert summary["losses"][1] < summary["losses"][0]
    assert summary["test_accuracy"] > 0.3
    net = fixed_network(config, params)
    for name in "AB":
        want = net.formats.weight.quantize(conv_matrix(params[name], (8, 8)), "nearest")
        np.testing.assert_array_equal(getattr(net, name).weights, want)
    as_float = accuracy(dataclasses.replace(config, precision="float64"), params,
                        small_digits.x_test, small_digits.y_test)
    assert abs(as_float - summary["test_accuracy"]) <= 0.1


def test_sixteen_bit_stochastic_training_matches_float64(digits):
    # The target: 16-bit stochastic-rounding training within 0.5 percentage points of float64.
    float_accuracy = train(Config(), digits)[1]["test_accuracy"]
    config = Config(precision="fixed")
    assert (config.rounding, config.weight_format, config.seed) == ("stochastic", "16.14", 0)
    fixed_accuracy = train(config, digits)[1]["test_accuracy"]
    assert fixed_accuracy >= float_accuracy - 0.005, (fixed_accuracy, float_accuracy)


def test_accuracy_in_fixed_point_reports_overflow(float_params, digits):
    # States reach about 10 and pre-activations about 18 (INT_BITS): both saturate here.
    config = Config(precision="fixed", weight_format="6.4", state_format="6.4",
                    act_format="6.3", grad_format="6.2")
    sites: dict = {}
    acc = accuracy(config, float_params, digits.x_test, digits.y_test, overflow=sites)
    assert 0 <= acc <= 1
    assert sum(sites.values()) > 0 and all(v > 0 for v in sites.values())


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimizer": "adam"}, "fixed-point training uses optimizer 'sgd', not 'adam'"),
        ({"lr": 0.1}, "lr must be a power of two in fixed point"),
        ({"batch_size": 30}, "1/batch_size must be a power of two in fixed point"),
        # Tile sums of 16-bit words fit 40 bits (about 16 + 16 + 6 + 1 for the bias), but
        # 8 steps x 128 images of gradient products need about 16 + 16 + 10.
        ({"acc_width": 40, "batch_size": 128}, "too narrow for the gradient sum"),
    ],
)
def test_untrainable_fixed_configurations_fail_train(changes, message):
    config = Config(precision="fixed", **changes)             # valid for inference
    with pytest.raises(ValueError, match=message):
        train(config)
    # The same settings are fine in float64 (Adam and any lr/batch size).
    if "acc_width" not in changes:
        dataclasses.replace(config, precision="float64").check_trainable()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"T": 1.0, "steps": 3}, "h = T/steps must be a power of two in fixed point"),
        ({"T": 0.3, "steps": 1}, "h = T/steps must be a power of two"),
        ({"acc_width": 30}, "too narrow for A·z"),
        ({"weight_format": "16.16"}, "frac must be"),
        ({"grad_format": "16"}, "WIDTH.FRAC"),
        ({"rounding": "even"}, "unknown rounding 'even'"),
        ({"lfsr_seed": 0}, "LFSR seed must be a non-zero 32-bit integer"),
    ],
)
def test_bad_fixed_configurations_fail_at_config(changes, message):
    with pytest.raises(ValueError, match=message):
        Config(precision="fixed", **changes)


def test_float_config_ignores_power_of_two_rules():
    Config(T=1.0, steps=3).check_trainable()
    Config(optimizer="adam", lr=0.1, batch_size=30).check_trainable()


# --- command line ----------------------------------------------------------------------------


def test_cli_fixed_point_train_then_post_training_quantisation(capsys, tmp_path, digits):
    weights = tmp_path / "fixed.npz"
    code, out, err = run(capsys, "train", "--width", 12, "--epochs", 2, "--out", weights,
                         "--json")
    assert code == 0, err
    trained = last_json(out)
    config = trained["config"]
    assert config["precision"] == "fixed" and config["rounding"] == "stochastic"
    assert (config["weight_format"], config["state_format"], config["act_format"],
            config["grad_format"]) == ("12.10", "12.7", "12.5", "12.7")
    assert 0.3 < trained["test_accuracy"] <= 1
    assert isinstance(trained["overflows"], int) and trained["overflows"] >= 0
    assert trained["overflows"] == sum(trained["overflow_sites"].values())

    # The weights file keeps the fixed-point configuration; evaluating it reproduces training's
    # test accuracy bit for bit.
    saved, params = load_weights(weights)
    assert saved.precision == "fixed" and saved.weight_format == "12.10"
    code, out, err = run(capsys, "evaluate", weights, "--json")
    assert code == 0, err
    assert last_json(out)["test_accuracy"] == trained["test_accuracy"]

    code, out, err = run(capsys, "evaluate", weights, "--width", 8, "--rounding", "nearest",
                         "--json")
    assert code == 0, err
    evaluated = last_json(out)
    assert evaluated["precision"] == "fixed"
    assert evaluated["config"]["weight_format"] == "8.6"
    assert evaluated["config"]["rounding"] == "nearest"
    assert 0 <= evaluated["test_accuracy"] <= 1
    assert evaluated["overflows"] == sum(evaluated["overflow_sites"].values()) >= 0
    expected = np.mean(predict(dataclasses.replace(
        saved, precision="fixed", weight_format="8.6", state_format="8.3", act_format="8.1",
        grad_format="8.3", rounding="nearest"), params, digits.x_test).argmax(axis=1)
        == digits.y_test)
    assert evaluated["test_accuracy"] == expected


def test_cli_evaluate_float_weights_in_fixed_point(capsys, tmp_path):
    weights = tmp_path / "float.npz"
    code, _, err = run(capsys, "train", "--epochs", 2, "--out", weights, "--json")
    assert code == 0, err
    code, out, err = run(capsys, "evaluate", weights, "--width", 16, "--frac", 9,
                         "--format", "grad=16.13", "--lfsr-seed", "0x1234", "--json")
    assert code == 0, err
    config = last_json(out)["config"]
    assert (config["weight_format"], config["state_format"], config["act_format"],
            config["grad_format"]) == ("16.9", "16.9", "16.9", "16.13")
    assert config["lfsr_seed"] == 0x1234 and config["precision"] == "fixed"
    code, out, err = run(capsys, "evaluate", weights)
    assert code == 0 and "fixed point" not in out
    code, out, err = run(capsys, "evaluate", weights, "--width", 10)
    assert code == 0 and "fixed point (weight 10.8, state 10.5, act 10.3" in out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--format", "grad=1.0"], "format width must be between 2 and 32, not 1"),
        (["--format", "foo=16.8"], "unknown signal class ['foo']"),
        (["--format", "16.8"], "--format takes CLASS=WIDTH.FRAC, not '16.8'"),
        (["--format", "grad=16"], "a format is written WIDTH.FRAC"),
        (["--width", 12, "--frac", 12], "format frac must be >= 0 and < width (12)"),
        (["--width", 16, "--acc-width", 20], "too narrow"),
        (["--width", 16, "--lfsr-seed", 0], "LFSR seed must be a non-zero 32-bit integer"),
        (["--width", 16, "--optimizer", "adam"], "fixed-point training uses optimizer 'sgd'"),
        (["--width", 16, "--lr", 0.1], "lr must be a power of two"),
        (["--width", 16, "--batch-size", 30], "1/batch_size must be a power of two"),
        (["--width", 16, "--steps", 3], "h = T/steps must be a power of two"),
    ],
)
def test_cli_bad_fixed_point_options_exit_2(capsys, tmp_path, options, message):
    weights = tmp_path / "w.npz"
    code, out, err = run(capsys, "train", *options, "--out", weights, "--json")
    assert code == 2
    assert out == ""
    assert err.startswith("xbarode train: error: ") and message in err
    assert not weights.exists()


@pytest.mark.parametrize("options", [["--rounding", "even"], ["--width", "x"],
                                     ["--width", 0], ["--lfsr-seed", "0xZZ"]])
def test_cli_fixed_point_usage_errors(capsys, options):
    code, out, err = run(capsys, "train", *options)
    assert code == 2 and out == "" and "usage: xbarode train" in err


def test_cli_help_lists_fixed_point_options(capsys):
    for command in ("train", "evaluate"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0
        for option in ("--width", "--frac", "--format", "--acc-width", "--rounding",
                       "--lfsr-seed"):
            assert option in out, (command, option)
