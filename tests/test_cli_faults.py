"""Fault injection on the command line (issue 19): every option and file checked before any
work or write, bounded configurations, one-line errors, exit statuses (0 ok, 1 failed check,
2 bad input, 3 internal error, 130 interrupted), per-run simulation folders, a verified build
cache, weights that must match the core, saturation warnings, readable generated files.

Cases where the exit status or a signal matters run the installed ``xbarode`` in a
subprocess."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import last_json, run
from xbarode import simulate
from xbarode.model import Config, save_weights
from xbarode.model.core_config import CoreConfig
from xbarode.model.train import init_params

SCRIPT = shutil.which("xbarode", path=os.path.dirname(sys.executable))

# The smallest core: 2x2 image, one lane, two classes, one Euler step.
TINY_CORE = ["--set", "image=[2,2]", "--set", "lanes=1", "--set", "classes=2",
             "--set", "steps=1"]


def xbarode(*argv, cwd, env=None, timeout=600, limit_memory=None):
    """Run the console script; returns the CompletedProcess."""
    def limits():
        if limit_memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_memory, limit_memory))
    return subprocess.run([SCRIPT, *map(str, argv)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, **(env or {})},
                          preexec_fn=limits)


def assert_one_line_error(err: str, *words):
    """A single ``xbarode ...: error: ...`` line that contains ``words``; no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert ": error: " in lines[0], err
    for word in words:
        assert word in lines[0], (word, err)


@pytest.fixture
def no_training(monkeypatch):
    """Training raises: a command that trains before checking its input fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the input was checked")
    monkeypatch.setattr("xbarode.model.train", refuse)


def write_weights(path, **fields) -> Path:
    config = Config(**fields)
    return save_weights(path, config, init_params(config))


# --- 1. everything checked before any work or write --------------------------------------------


def test_train_to_an_unwritable_place_fails_before_training(capsys, tmp_path, no_training):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, out, err = run(capsys, "train", "--out", blocker / "w.npz", "--json")
    assert code == 2 and out == ""
    assert_one_line_error(err, "--out", str(blocker))


def test_train_out_naming_a_folder_fails_before_training(capsys, tmp_path, no_training):
    code, _, err = run(capsys, "train", "--out", tmp_path)
    assert code == 2
    assert_one_line_error(err, "--out", "folder")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--rtl-images", "999"], ["--rtl-images", "999"]),
        (["--rtl-images", "-1"], ["--rtl-images"]),
        (["--set", "steps=many"], ["steps"]),
        (["--set", "colour=blue"], ["--set", "colour"]),
        (["--config", "absent.toml"], ["absent.toml"]),
        (["--steps", "4"], ["steps: 4 to train, 8 in the core"]),
    ],
)
def test_demo_checks_its_options_before_training_overwrites_the_weights(
        capsys, tmp_path, monkeypatch, no_training, argv, words):
    monkeypatch.chdir(tmp_path)
    weights = write_weights(tmp_path / "w.npz", epochs=3)
    before = weights.read_bytes()
    code, out, err = run(capsys, "demo", "--out", weights, *argv)
    assert code == 2 and out == ""
    assert_one_line_error(err, *words)
    assert "--images " not in err          # demo's own option is --rtl-images
    assert weights.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npz"]


def test_simulate_checks_out_before_building(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(capsys, "simulate", "--images", 1, "--out", blocker / "sim")
    assert code == 2
    assert_one_line_error(err, "--out")


def test_generate_checks_out_before_writing(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(capsys, "generate", "tile", "--rows", 2, "--cols", 2,
                       "--out", blocker / "gen")
    assert code == 2
    assert_one_line_error(err, "--out")


# --- 2. limits and one-line errors ----------------------------------------------------------


def test_huge_step_count_is_refused_at_once_in_bounded_memory(tmp_path):
    # The old code grew to 21.5 GB; under a 2 GB address-space limit it would die.
    started = time.perf_counter()
    done = xbarode("generate", "core", "--set", "steps=100000000", "--out", tmp_path / "g",
                   cwd=tmp_path, timeout=120, limit_memory=2 << 30)
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done.stderr, "steps", "1024")
    assert time.perf_counter() - started < 60
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["generate", "core", "--set", "h=inf"], ["h", "inf"]),
        (["generate", "core", "--set", "h=nan"], ["h", "nan"]),
        (["generate", "core", "--set", "image=[100,100]"], ["image"]),
        (["generate", "core", "--set", "lanes=100"], ["lanes"]),
        (["generate", "tile", "--rows", "100000"], ["--rows", "512"]),
        (["cosim", "tile", "--rows", "4", "--cols", "4", "--eta-shift", "100",
          "--simulator", "amaranth"], ["--eta-shift", "between 0 and 20"]),
        (["cosim", "tile", "--rows", "4", "--cols", "4", "--eta-shift", "-1",
          "--simulator", "amaranth"], ["--eta-shift"]),
    ],
)
def test_bad_unit_options_are_one_line_errors(capsys, tmp_path, argv, words):
    code, out, err = run(capsys, *argv, "--out", tmp_path / "o")
    assert code == 2 and out == ""
    assert_one_line_error(err, *words)
    assert not (tmp_path / "o").exists()


def test_eta_shift_at_its_bound_still_agrees_with_the_model(capsys, tmp_path):
    # The bound is the largest shift that works: frac 12 + eta 20 = the 32-bit product.
    code, out, err = run(capsys, "cosim", "tile", "--rows", 3, "--cols", 3, "--eta-shift", 20,
                         "--simulator", "amaranth", "--vectors", 2, "--out", tmp_path, "--json")
    assert code == 0, err
    assert last_json(out)["mismatches"] == 0


@pytest.mark.parametrize(("argv", "option"), [(["--steps", "5000"], "--steps"),
                                              (["--epochs", "100000"], "--epochs"),
                                              (["--width", "64"], "--width")])
def test_training_limits(capsys, tmp_path, no_training, argv, option):
    code, _, err = run(capsys, "train", *argv, "--out", tmp_path / "w.npz")
    assert code == 2 and option in err and "Traceback" not in err


def test_a_diverging_learning_rate_says_to_reduce_the_learning_rate(capsys, tmp_path):
    weights = tmp_path / "w.npz"
    code, out, err = run(capsys, "train", "--lr", 50, "--epochs", 1, "--out", weights, "--json")
    assert code == 2 and out == ""
    assert_one_line_error(err, "diverged", "--lr")
    assert "reduce h" not in err
    assert not weights.exists()


def test_verilator_build_folder_with_a_space(tmp_path):
    done = xbarode("cosim", "tile", "--rows", 2, "--cols", 2, "--vectors", 1, "--simulator",
                   "verilator", "--out", tmp_path / "out", cwd=tmp_path,
                   env={"XBARODE_BUILD_DIR": str(tmp_path / "a b")})
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done.stderr, "space", "XBARODE_BUILD_DIR")


def test_ctrl_c_exits_130_without_a_traceback(tmp_path):
    process = subprocess.Popen([SCRIPT, "train", "--epochs", "2000", "--out", "w.npz"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    # Wait for the progress bar: the training loop is running.
    deadline = time.monotonic() + 120
    seen = ""
    while "training" not in seen and time.monotonic() < deadline:
        seen += process.stderr.read(1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "interrupted" in err
    assert not (tmp_path / "w.npz").exists()


def test_internal_error_exits_3_in_one_line(capsys, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("planted bug")
    monkeypatch.setattr("xbarode.model.train", crash)
    code, out, err = run(capsys, "train", "--epochs", 1, "--out", tmp_path / "w.npz", "--json")
    assert code == 3 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "internal error" in lines[0] and "planted bug" in lines[0]


def test_generated_files_are_readable(tmp_path):
    old = os.umask(0o022)
    try:
        done = xbarode("generate", "tile", "--rows", 2, "--cols", 2, "--out", tmp_path / "g",
                       cwd=tmp_path)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    for path in (tmp_path / "g").iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path


# --- 4. weights carry their network -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "settings", "words"),
    [
        ({"steps": 4, "T": 1.0}, [], ["steps: 4 in the weights, 8 in the core",
                                       "T: 1.0 in the weights, 2.0 in the core"]),
        ({"T": 1.0}, [], ["T: 1.0 in the weights, 2.0 in the core", "h: 0.125"]),
        ({"structure": "conv", "kernel_size": 5}, ["--set", "structure=conv"],
         ["kernel: 5 in the weights, 3 in the core"]),
        ({"structure": "conv"}, [], ["structure: conv in the weights, dense in the core"]),
    ],
)
def test_simulate_refuses_weights_of_another_network(capsys, tmp_path, fields, settings,
                                                     words):
    weights = write_weights(tmp_path / "w.npz", **fields)
    code, out, err = run(capsys, "simulate", "--weights", weights, *settings, "--images", 1,
                         "--out", tmp_path / "sim")
    assert code == 2 and out == ""
    assert_one_line_error(err, str(weights), *words)
    assert not (tmp_path / "sim").exists()


def test_shipped_weights_match_the_default_core_exactly():
    # Also the rounding: the core's default is the shipped weights' (stochastic).
    trained, _ = simulate.default_weights()
    assert trained.rounding == "stochastic"
    assert CoreConfig().rounding == "stochastic"
    assert simulate.check_weights(trained, CoreConfig(), "shipped") == []


def test_arithmetic_differences_are_warned_about():
    trained, _ = simulate.default_weights()
    differences = simulate.check_weights(trained, CoreConfig(rounding="nearest",
                                                    method="implicit_euler"), "shipped")
    assert differences == ["method: euler in the weights, implicit_euler in the core",
                           "rounding: stochastic in the weights, nearest in the core"]


# --- 5. saturation is said ----------------------------------------------------------------


def test_saturating_training_warns(capsys, tmp_path):
    weights = tmp_path / "w.npz"
    code, out, err = run(capsys, "train", "--width", 8, "--frac", 6, "--epochs", 1,
                         "--out", weights, "--json")
    assert code == 0, err
    result = last_json(out)
    # An independent count: the fraction the JSON reports, from its own numbers.
    assert result["overflows"] > 1e-4 * result["narrowed_words"] > 0
    assert any("saturated" in message for message in result["warnings"])
    assert "warning:" in err and "saturated" in err
    assert weights.is_file()


def test_fail_on_overflow_exits_1_and_writes_nothing(capsys, tmp_path):
    weights = tmp_path / "w.npz"
    code, out, err = run(capsys, "train", "--width", 8, "--frac", 6, "--epochs", 1,
                         "--out", weights, "--fail-on-overflow", "--json")
    assert code == 1
    assert "saturated" in err and "--fail-on-overflow" in err and "Traceback" not in err
    assert last_json(out)["overflows"] > 0
    assert not weights.exists()


def test_default_training_neither_warns_nor_fails(capsys, tmp_path):
    code, out, err = run(capsys, "train", "--width", 16, "--epochs", 1, "--fail-on-overflow",
                         "--out", tmp_path / "w.npz", "--json")
    assert code == 0, err
    assert "warnings" not in last_json(out) and "warning" not in err


def test_clamped_formats_are_said(capsys, tmp_path):
    code, out, err = run(capsys, "train", "--width", 4, "--epochs", 1, "--out",
                         tmp_path / "w.npz", "--json")
    assert code == 0, err
    warned = last_json(out)["warnings"]
    assert any("act 4.0 (wants 7 integer bits)" in message for message in warned)
    assert "clamped" in err


# --- 3. per-run folders and a verified build cache ----------------------------------------------


def cosim_tiny(tmp_path, cache, out, simulator="icarus", vectors=2, **popen):
    argv = [SCRIPT, "cosim", "core", *TINY_CORE, "--vectors", str(vectors), "--simulator",
            simulator, "--out", str(out), "--json"]
    env = {**os.environ, "XBARODE_BUILD_DIR": str(cache)}
    return subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def test_two_simulations_at_once_in_one_folder(tmp_path):
    # `cosim core` runs the images through `simulate`'s code (simulate_core) on a core small
    # enough for a quick test (`simulate` itself needs the 8x8 digits core). 181 vectors are
    # three simulations per run, each handing the shared build to the other run: the old
    # code's shared run folder lost one run's results ("returned 0 of 90 images").
    cache = tmp_path / "cache"
    runs = [cosim_tiny(tmp_path, cache, "sim", vectors=181) for _ in range(2)]
    for process in runs:
        out, err = process.communicate(timeout=1200)
        assert process.returncode == 0, err
        result = last_json(out)
        assert result["vectors"] == 181 and result["mismatches"] == 0
    assert len(list(cache.iterdir())) == 1            # the same hardware, built once
    # Passing runs leave no run folder behind.
    assert sorted(p.name for p in (tmp_path / "sim").iterdir()) == ["xbarode_core.v"]


def _artefact(cache):
    [build] = [p for p in cache.iterdir() if p.is_dir()]
    stamp = json.loads((build / "build.done").read_text())
    return [build / name for name in stamp["artefacts"]]


def test_a_damaged_cached_simulator_is_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    first = cosim_tiny(tmp_path, cache, tmp_path / "one")
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    binaries = _artefact(cache)
    assert binaries
    good = {path: path.read_bytes() for path in binaries}
    for path in binaries:
        path.write_bytes(b"damaged")
    second = cosim_tiny(tmp_path, cache, tmp_path / "two")
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    assert last_json(out)["mismatches"] == 0
    for path, text in good.items():
        assert path.read_bytes() != b"damaged"
        assert len(path.read_bytes()) == len(text)


def test_an_interrupted_build_then_a_good_run(tmp_path):
    cache = tmp_path / "cache"
    first = cosim_tiny(tmp_path, cache, tmp_path / "one", simulator="verilator",
                       start_new_session=True)
    # Interrupt while Verilator compiles (its build log exists, the stamp does not).
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(cache.glob("*/build.log")):
        time.sleep(0.2)
    assert list(cache.glob("*/build.log")), "the build never started"
    assert not list(cache.glob("*/build.done"))
    os.killpg(first.pid, signal.SIGINT)                # Ctrl-C reaches the whole group
    out, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    second = cosim_tiny(tmp_path, cache, tmp_path / "two", simulator="verilator")
    out, err = second.communicate(timeout=900)
    assert second.returncode == 0, err
    assert last_json(out)["mismatches"] == 0


def test_run_folders_are_unique():
    from xbarode.sim.runner import run_folder

    folders = {run_folder("out", "verilator") for _ in range(100)}
    assert len(folders) == 100
    assert all(folder.parent == Path("out") and folder.name.startswith("run-verilator-")
               for folder in folders)


def test_weights_files_still_load(tmp_path):
    # The shipped file's arrays are unchanged and loadable.
    trained, params = simulate.default_weights()
    assert trained.steps == 8 and trained.T == 2.0 and trained.structure == "dense"
    assert params["A"].shape == (64, 64) and np.all(np.isfinite(params["A"]))
