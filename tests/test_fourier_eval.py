"""``xbarode evaluate --conv-path fourier``: a trained convolutional network evaluated on the
Fourier path in fixed point (docs/cli.md), and the ``Config`` fields that select it.

The command's accuracy is checked against ``FixedNetwork(fourier=…)`` built here directly
from the documented formats (``--width 16``: weight 16.14, state 16.11, act 16.9, grad 16.11;
the core's Fourier defaults: data 22.12, twiddle 18.16, spectrum 18.14), one network per split
as the command runs them, and the Fourier path's logits against float64's. The data sets are
cut to a few dozen images (the Fourier model runs image by image) so that the file takes
seconds.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import numpy as np
import pytest

from helpers import last_json, run
from xbarode.model import (
    LFSR_SEED,
    Config,
    FixedFormats,
    FixedNetwork,
    init_params,
    load_weights,
    parse_format,
    predict,
    save_weights,
)
from xbarode.model import data as data_module
from xbarode.model.core_config import CoreConfig

#: ``--width 16``'s formats (docs/architecture.md §2) and the core's Fourier formats.
FORMATS = FixedFormats(weight=parse_format("16.14"), state=parse_format("16.11"),
                       act=parse_format("16.9"), grad=parse_format("16.11"), acc_width=48)
FOURIER = {"data": parse_format("22.12"), "twiddle": parse_format("18.16"),
           "spectrum": parse_format("18.14")}

#: The Fourier path's logits lie within this of float64's for these networks: 25 LSBs of the
#: 16.9 act format (2^-9 ≈ 0.002), for logits of size about 1 to 5 (measured: at most 0.012).
LOGIT_TOLERANCE = 0.05


def cut_split(name: str, train_images: int, test_images: int):
    full = data_module.DATASETS[name]()
    return data_module.Split(full.x_train[:train_images], full.y_train[:train_images],
                             full.x_test[:test_images], full.y_test[:test_images], name,
                             full.image_shape)


@pytest.fixture
def small_digits(monkeypatch):
    """The digits cut to their first 40 training and 24 test images."""
    small = cut_split("digits", 40, 24)
    monkeypatch.setitem(data_module.DATASETS, "digits", lambda: small)
    return small


@pytest.fixture
def small_mnist5k(monkeypatch):
    """mnist5k cut to its first 12 training and 8 test images."""
    small = cut_split("mnist5k", 12, 8)
    monkeypatch.setitem(data_module.DATASETS, "mnist5k", lambda: small)
    return small


def conv_weights(path, scale=1.0, **changes):
    """A float64 convolutional network's weights: seeded kernels (times ``scale``) and a random
    head, so that the classes are not all one."""
    config = Config(structure="conv", **changes)
    params = init_params(config)
    params["A"] *= scale
    params["B"] *= scale
    params["C"] = np.random.default_rng(1).normal(0, 0.3, params["C"].shape)
    return save_weights(path, config, params), config, params


def fourier_network(config: Config, params: dict) -> FixedNetwork:
    """The Fourier-path network of ``--width 16 --conv-path fourier``, built directly."""
    fourier = {"shape": config.image_shape, **FOURIER}
    if config.channels > 1:
        fourier["acc_width"] = 48
    return FixedNetwork(params, FORMATS, rounding="stochastic", h=0.25, steps=8,
                        lfsr_seed=LFSR_SEED, fourier=fourier, image_shape=config.image_shape,
                        pool=config.pool)


def expected(config: Config, params: dict, split):
    """Test and train accuracy and the summed overflow counts, one network per split."""
    accuracies, sites = {}, Counter()
    for name, x, y in (("train", split.x_train, split.y_train),
                       ("test", split.x_test, split.y_test)):
        net = fourier_network(config, params)
        accuracies[name] = float(np.mean(net.predict(x) == y))
        sites.update(net.overflow.counts)
    return accuracies, dict(sites)


def evaluate_json(capsys, path, *options):
    code, out, err = run(capsys, "evaluate", path, "--json", *options)
    assert code == 0, err
    return last_json(out)


@pytest.mark.parametrize(("channels", "pool"), [(1, 1), (2, 1), (2, 2)])
def test_fourier_accuracy_is_the_fourier_networks(capsys, tmp_path, small_digits, channels,
                                                  pool):
    path, config, params = conv_weights(tmp_path / "w.npz", channels=channels, pool=pool)
    result = evaluate_json(capsys, path, "--width", 16, "--conv-path", "fourier")
    accuracies, sites = expected(config, params, small_digits)
    assert result["conv_path"] == "fourier" and result["precision"] == "fixed"
    assert result["test_accuracy"] == accuracies["test"]
    assert result["train_accuracy"] == accuracies["train"]
    assert result["overflow_sites"] == sites
    assert result["config"]["conv_path"] == "fourier"
    assert {k: result["config"][k] for k in ("fourier_data", "twiddle", "spectrum")} == \
        {"fourier_data": "22.12", "twiddle": "18.16", "spectrum": "18.14"}
    # The float64 network (the direct convolution) classifies within the logits' tolerance.
    floats = evaluate_json(capsys, path)
    assert floats["conv_path"] == "direct" and "conv_path" not in floats["config"]
    logits = fourier_network(config, params).forward(small_digits.x_test)[0]
    reference = predict(config, params, small_digits.x_test)
    # predict() on the configuration the command built gives these logits bit for bit, and
    # not the direct path's (whose roundings differ).
    fixed = dataclasses.replace(config, precision="fixed")
    fourier = dataclasses.replace(fixed, conv_path="fourier")
    assert np.array_equal(predict(fourier, params, small_digits.x_test),
                          FORMATS.act.to_float(logits))
    assert not np.array_equal(predict(fixed, params, small_digits.x_test),
                              FORMATS.act.to_float(logits))
    assert np.abs(FORMATS.act.to_float(logits) - reference).max() <= LOGIT_TOLERANCE
    # Classes differ only where float64's top two logits are within twice the tolerance.
    top2 = np.sort(reference, axis=1)[:, -2:]
    close = top2[:, 1] - top2[:, 0] <= 2 * LOGIT_TOLERANCE
    assert np.all((logits.argmax(axis=1) == reference.argmax(axis=1)) | close)
    assert abs(floats["test_accuracy"] - result["test_accuracy"]) <= close.mean()


def test_fourier_formats_reach_the_network(capsys, tmp_path, small_digits):
    # A spectrum format of range ±1 saturates some of the kernels' spectra: counted, by site.
    path, _, params = conv_weights(tmp_path / "w.npz")
    result = evaluate_json(capsys, path, "--width", 16, "--conv-path", "fourier",
                           "--fourier-data", "24.13", "--twiddle", "14.12", "--spectrum",
                           "8.7")
    sites, correct = Counter(), []
    for x, y in ((small_digits.x_train, small_digits.y_train),
                 (small_digits.x_test, small_digits.y_test)):
        net = FixedNetwork(params, FORMATS, rounding="stochastic", h=0.25, steps=8,
                           fourier={"shape": (8, 8), "data": parse_format("24.13"),
                                    "twiddle": parse_format("14.12"),
                                    "spectrum": parse_format("8.7")})
        correct.append(np.mean(net.predict(x) == y))
        sites.update(net.overflow.counts)
    assert [result["train_accuracy"], result["test_accuracy"]] == correct
    assert result["overflow_sites"] == dict(sites) and sites["spectrum.load"] > 0
    assert (result["config"]["fourier_data"], result["config"]["twiddle"],
            result["config"]["spectrum"]) == ("24.13", "14.12", "8.7")


def test_overflow_on_the_fourier_path_is_reported_by_site(capsys, tmp_path, small_digits):
    # Kernels eight times the initial ones saturate the state and the channel mixing.
    path, config, params = conv_weights(tmp_path / "w.npz", scale=8.0, channels=2)
    result = evaluate_json(capsys, path, "--width", 16, "--conv-path", "fourier")
    _, sites = expected(config, params, small_digits)
    assert result["overflow_sites"] == sites
    assert result["overflows"] == sum(sites.values())
    assert sites.get("hadamard", 0) > 0        # the Fourier units' mixing, not a tile's
    code, out, _ = run(capsys, "evaluate", path, "--width", 16, "--conv-path", "fourier")
    assert code == 0 and "on the Fourier path (data 22.12, twiddle 18.16, spectrum 18.14)" in out
    assert "overflow:" in out


def test_fourier_path_on_mnist5k(capsys, tmp_path, small_mnist5k):
    # Larger kernels saturate the Fourier units too: their sites are reported.
    path, config, params = conv_weights(tmp_path / "w.npz", scale=8.0, image_shape=(28, 28),
                                        dataset="mnist5k", channels=2, pool=2)
    result = evaluate_json(capsys, path, "--dataset", "mnist5k", "--width", 16,
                           "--conv-path", "fourier")
    accuracies, sites = expected(config, params, small_mnist5k)
    assert (result["test_accuracy"], result["train_accuracy"]) == \
        (accuracies["test"], accuracies["train"])
    assert result["overflow_sites"] == sites and sites.get("hadamard", 0) > 0


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("weights", "options", "message"), [
    ("dense", ["--width", "16", "--conv-path", "fourier"],
     "--conv-path fourier needs structure 'conv': the weights {path} are of a 'dense' network"),
    ("conv", ["--conv-path", "fourier"],
     "--conv-path fourier runs in fixed point: give --width or --format with it"),
    ("conv", ["--width", "16", "--conv-path", "fourier", "--twiddle", "18"],
     "--twiddle: a format is written WIDTH.FRAC, e.g. 16.12, not '18'"),
    ("conv", ["--width", "16", "--conv-path", "fourier", "--spectrum", "48.14"],
     "--spectrum: format width must be between 2 and 32, not 48"),
    ("conv", ["--width", "16", "--twiddle", "18.16", "--spectrum", "18.14"],
     "--twiddle, --spectrum set the Fourier path's formats: give --conv-path fourier with "
     "them"),
    ("conv", ["--width", "16", "--conv-path", "fourier", "--fourier-data", "16.12"],
     "fourier_data 16.12 cannot hold state words (16.11) exactly: it needs at least 5 integer "
     "and 11 fractional bits"),
    ("conv", ["--width", "16", "--conv-path", "fourier", "--states", "16"],
     "the device's write models (states, program_noise) need structure 'dense'; a "
     "convolution's tied weights would drift apart"),
])
def test_bad_combinations_exit_2(capsys, tmp_path, monkeypatch, weights, options, message):
    monkeypatch.setitem(data_module.DATASETS, "digits", lambda: pytest.fail("data loaded"))
    path = tmp_path / "w.npz"
    if weights == "dense":
        save_weights(path, Config(), init_params(Config()))
    else:
        conv_weights(path)
    code, out, err = run(capsys, "evaluate", path, *options, "--json")
    assert (code, out) == (2, "")
    assert err == f"xbarode evaluate: error: {message.format(path=path)}\n"


def test_unknown_path_is_a_usage_error(capsys, tmp_path):
    path = conv_weights(tmp_path / "w.npz")[0]
    code, out, err = run(capsys, "evaluate", path, "--width", 16, "--conv-path", "fft")
    assert (code, out) == (2, "")
    assert "argument --conv-path: invalid choice: 'fft'" in err


@pytest.mark.parametrize(("changes", "message"), [
    ({"conv_path": "fft"}, "conv_path must be one of ['direct', 'fourier'], not 'fft'"),
    ({"structure": "dense", "precision": "fixed", "conv_path": "fourier"},
     "conv_path 'fourier' needs structure 'conv'"),
    ({"conv_path": "fourier"},
     "conv_path 'fourier' needs precision 'fixed' (in float64 the Fourier path computes the "
     "same convolution)"),
    ({"twiddle": "18"}, "twiddle: a format is written WIDTH.FRAC, e.g. 16.12, not '18'"),
    ({"fourier_data": "44.12"}, "fourier_data: format width must be between 2 and 32, not 44"),
    ({"precision": "fixed", "conv_path": "fourier", "act_format": "16.13"},
     "fourier_data 22.12 cannot hold act words (16.13) exactly: it needs at least 3 integer "
     "and 13 fractional bits"),
])
def test_config_refuses_bad_fourier_fields(changes, message):
    with pytest.raises(ValueError) as info:
        Config(**{"structure": "conv", **changes})
    assert str(info.value) == message


def test_config_messages_are_the_cores():
    """The refusals a core configuration shares are worded as the core's."""
    for changes in ({"conv_path": "fft"}, {"structure": "dense", "conv_path": "fourier"},
                    {"twiddle": "18"}, {"spectrum": "48.14"}):
        with pytest.raises(ValueError) as ours:
            Config(**{"structure": "conv", "precision": "fixed", **changes})
        with pytest.raises(ValueError) as cores:
            CoreConfig(**{"structure": "conv", **changes})
        assert str(ours.value) == str(cores.value)


def test_narrow_mixing_accumulator_is_refused():
    with pytest.raises(ValueError, match=r"^A: an accumulator of 40 bits is too narrow"):
        Config(structure="conv", channels=2, precision="fixed", conv_path="fourier",
               acc_width=40, weight_format="12.10", state_format="12.7", act_format="12.5",
               grad_format="12.7")


def test_training_on_the_fourier_path_is_the_models_and_not_the_cores():
    # The model trains on the Fourier path (tests/test_fourier_training.py); the core's
    # Fourier path is for inference, and its configuration still says so.
    Config(structure="conv", precision="fixed", conv_path="fourier", epochs=1).check_trainable()
    with pytest.raises(ValueError) as cores:
        CoreConfig(structure="conv", conv_path="fourier", training=True)
    assert str(cores.value) == ("conv_path 'fourier' is for inference; training needs "
                                "conv_path 'direct'")


# --- weights files ---------------------------------------------------------------------------


def test_fourier_fields_round_trip(tmp_path):
    config = Config(structure="conv", channels=2, precision="fixed", conv_path="fourier",
                    twiddle="20.18")
    save_weights(tmp_path / "w.npz", config, init_params(config))
    loaded, _ = load_weights(tmp_path / "w.npz")
    assert loaded == config
    assert (loaded.conv_path, loaded.fourier_data, loaded.twiddle, loaded.spectrum) == \
        ("fourier", "22.12", "20.18", "18.14")
    # The direct path with other formats keeps them too.
    direct = Config(structure="conv", spectrum="20.16")
    save_weights(tmp_path / "d.npz", direct, init_params(direct))
    assert load_weights(tmp_path / "d.npz")[0] == direct


def test_direct_path_dictionary_is_unchanged():
    """On the direct path with the core's formats the dictionary (and so weights files and
    content hashes) has exactly the fields it had before the Fourier path."""
    old_keys = {"structure", "kernel_size", "image_shape", "classes", "channels", "pool",
                "dataset", "steps", "T", "method", "linear_solver", "neumann_terms", "max_iter",
                "tol", "epochs", "batch_size", "optimizer", "lr", "seed", "init_scale",
                "precision", "weight_format", "state_format", "act_format", "grad_format",
                "acc_width", "rounding", "lfsr_seed"}
    assert set(Config(structure="conv").to_dict()) == old_keys


def test_weights_without_the_fields_load_and_evaluate(capsys, tmp_path, small_digits):
    """A weights file as written before the Fourier path (its configuration without the
    fields) loads as the direct path and evaluates on either."""
    old = {"structure": "conv", "kernel_size": 3, "image_shape": [8, 8], "classes": 10,
           "channels": 1, "pool": 1, "dataset": "digits", "steps": 8, "T": 2.0,
           "method": "euler", "linear_solver": "exact", "neumann_terms": 30, "max_iter": 50,
           "tol": 1e-10, "epochs": 30, "batch_size": 32, "optimizer": "sgd", "lr": 0.125,
           "seed": 0, "init_scale": 0.5, "precision": "float64", "weight_format": "16.14",
           "state_format": "16.11", "act_format": "16.9", "grad_format": "16.11",
           "acc_width": 48, "rounding": "stochastic", "lfsr_seed": LFSR_SEED}
    rng = np.random.default_rng(2)
    params = {"A": rng.normal(0, 0.15, (3, 3)), "B": rng.normal(0, 0.15, (3, 3)),
              "C": rng.normal(0, 0.3, (10, 64)), "d": np.zeros(10)}
    path = tmp_path / "old.npz"
    np.savez(path, **params, format=np.array("xbarode-weights/1"),
             config=np.array(json.dumps(old)))
    config, loaded = load_weights(path)
    assert all(np.array_equal(loaded[name], params[name]) for name in params)
    assert config.conv_path == "direct"
    assert (config.fourier_data, config.twiddle, config.spectrum) == ("22.12", "18.16", "18.14")
    result = evaluate_json(capsys, path, "--width", 16, "--conv-path", "fourier")
    fourier = dataclasses.replace(config, precision="fixed", conv_path="fourier")
    accuracies, _ = expected(fourier, params, small_digits)
    assert result["test_accuracy"] == accuracies["test"]
