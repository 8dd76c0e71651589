"""A regular (non-editable) ``pip install`` of the project works: the folder mapping of
pyproject.toml puts hdl/, model/ and sim/ inside the installed ``xbarode`` package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import convolve

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json
import numpy as np
import xbarode, xbarode.model, xbarode.hdl, xbarode.sim, xbarode.cli
kernel = np.arange(9.0).reshape(3, 3) - 4
print(json.dumps({
    "files": [m.__file__ for m in (xbarode, xbarode.model, xbarode.hdl, xbarode.sim, xbarode.cli)],
    "matrix": xbarode.model.conv_matrix(kernel, (4, 5)).tolist(),
}))
"""


def project_files():
    """Tracked and untracked-but-not-ignored files of the work tree (what a clean checkout of
    the current work would hold, without .venv, build/ or egg-info)."""
    listing = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    return [name for name in listing.split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project built from a copy of the work tree and installed into a target folder."""
    if shutil.which("git") is None:
        pytest.fail("git is needed to list the project's files")
    source = tmp_path_factory.mktemp("source")
    for name in project_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    target = tmp_path_factory.mktemp("target")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def run_installed(target, cwd, *argv):
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_installed_package_imports_from_the_target(installed, tmp_path):
    done = run_installed(installed, tmp_path, sys.executable, "-c", PROBE)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for file in report["files"]:
        assert Path(file).resolve().is_relative_to(installed.resolve()), file

    kernel = np.arange(9.0).reshape(3, 3) - 4
    image = np.random.default_rng(0).normal(size=(4, 5))
    expected = convolve(image, kernel, mode="wrap").ravel()
    np.testing.assert_allclose(np.array(report["matrix"]) @ image.ravel(), expected,
                               rtol=1e-12, atol=1e-12)


def test_installed_tree_holds_only_the_xbarode_package(installed):
    entries = {p.name for p in installed.iterdir() if not p.name.endswith(".dist-info")}
    # hdl/, model/ and sim/ must be mapped into xbarode, never installed as top-level packages.
    assert entries <= {"xbarode", "bin"}
    for sub in ("model", "hdl", "sim"):
        assert (installed / "xbarode" / sub / "__init__.py").is_file(), sub
    assert (installed / "xbarode" / "model" / "train.py").is_file()


def test_installed_console_script(installed, tmp_path):
    script = installed / "bin" / "xbarode"
    assert script.is_file()
    done = run_installed(installed, tmp_path, str(script), "train", "--help")
    assert done.returncode == 0, done.stderr
    assert "--epochs" in done.stdout
    done = run_installed(installed, tmp_path, sys.executable, "-m", "xbarode", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "xbarode"


PACKAGE_DATA = """
import json
from xbarode.model import load_weights
from xbarode.simulate import DEFAULT_WEIGHTS
from xbarode.model.core_config import load_config
from xbarode.shipped import CONFIGS, WEIGHTS
from xbarode.sweep import load_spec
config, params = load_weights(DEFAULT_WEIGHTS)
report = json.loads(DEFAULT_WEIGHTS.with_name("core_synth.json").read_text())
_, mnist = load_weights(WEIGHTS["mnist5k"])
print(json.dumps({"weights": str(DEFAULT_WEIGHTS), "A": list(params["A"].shape),
                  "fmax_mhz": report["fmax_mhz"], "mnist5k_A": list(mnist["A"].shape),
                  "mnist5k_image": list(load_config(CONFIGS["mnist5k"]).image),
                  "shipped": [str(WEIGHTS["mnist5k"]), str(CONFIGS["mnist5k"])],
                  "specs": [load_spec(name).source for name in ("precision", "fourier")]}))
"""


def test_installed_package_carries_its_data_files(installed, tmp_path):
    # The shipped weights (simulate's default), the recorded core synthesis (the demo's fmax)
    # and the sweep specs must be inside the installed package, not only in the source tree.
    done = run_installed(installed, tmp_path, sys.executable, "-c", PACKAGE_DATA)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(report["weights"]).resolve().is_relative_to(installed.resolve())
    assert report["A"] == [64, 64]
    assert report["fmax_mhz"] > 0
    # The shipped 28×28 network (--weights mnist5k) and its core (--config mnist5k).
    assert report["mnist5k_A"] == [4, 4, 3, 3]
    assert report["mnist5k_image"] == [28, 28]
    for spec in report["specs"] + report["shipped"]:
        assert Path(spec).resolve().is_relative_to(installed.resolve()), spec
