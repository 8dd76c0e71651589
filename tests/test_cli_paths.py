"""Command-line paths that no other test runs, each once on the smallest configuration that
exercises it: synthesis of the core and of each Fourier unit, ``cosim core``, ``simulate`` on
Icarus and in several simulation runs (``--batch``), and training on the RTL with tied
convolution kernels.

What each path must report is checked against facts that do not come from the code under test:
the number of multipliers a configuration asks for, the images requested, zero mismatches
against the fixed-point model with something actually compared.
"""

from __future__ import annotations

import pytest

from helpers import last_json, run

# The smallest core: a 2×2 state (m = 4), two classes, one Euler step, one multiplier per tile.
TINY_CORE = ["--set", "image=[2, 2]", "--set", "classes=2", "--set", "steps=1", "--set",
             "lanes=1"]


# --- synthesis (yosys + nextpnr) on the smallest ECP5 ------------------------------------------

@pytest.mark.parametrize(
    ("unit", "options", "multipliers"),
    [
        # Tiles A, Bᵀ and C with one lane each: three multipliers.
        ("core", TINY_CORE, 3),
        # Four real products per complex element (no Gauss trick).
        ("hadamard", ["--image", "2x2"], 4),
        # Four real products per complex multiply–accumulate, whatever the channels.
        ("channel-mix", ["--image", "2x2", "--channels-in", "2", "--channels-out", "3"], 4),
        # One lane in each DFT array and the mixing unit's four.
        ("fourier-bank", ["--image", "2x2", "--kernel", "1", "--lanes", "1", "--channels-in",
                          "2", "--channels-out", "2"], 2 + 4),
        # One lane in each of the two DFT block arrays (row pass, column pass).
        ("dft", ["--image", "2x2", "--lanes", "1"], 2),
        # One 2-D DFT unit (its two arrays do the forward and the inverse transforms) and the
        # Hadamard unit.
        ("fourier-conv", ["--image", "2x2", "--kernel", "1", "--lanes", "1"], 2 + 4),
    ],
)
def test_synth_reports_resources_and_timing(capsys, tmp_path, unit, options, multipliers):
    code, out, err = run(capsys, "synth", unit, *options, "--device", "ecp5-12f",
                         "--out", tmp_path, "--json")
    assert code == 0, err
    report = last_json(out)
    assert report["device"] == "ecp5-12f"
    assert report["mult18"] == multipliers
    assert report["luts"] > 0 and report["ffs"] > 0
    assert 1 < report["fmax_mhz"] < 1000
    assert (tmp_path / "report.json").is_file()


# --- co-simulation and simulation paths --------------------------------------------------------

def test_cosim_core_on_a_tiny_core(capsys, tmp_path):
    code, out, err = run(capsys, "cosim", "core", *TINY_CORE, "--vectors", 3, "--seed", 5,
                         "--simulator", "amaranth", "--out", tmp_path, "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["vectors"] == 3 and result["mismatches"] == 0
    # At least the two logits and the four final state words of each image.
    assert result["compared"] >= 3 * (2 + 4)


def test_simulate_on_icarus_in_several_runs(capsys, tmp_path):
    # Three images in simulation runs of two: two runs, every image compared.
    code, out, err = run(capsys, "simulate", "--simulator", "icarus", "--images", 3,
                         "--batch", 2, "--out", tmp_path, "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["images"] == 3 and result["mismatches"] == 0
    assert result["agreement"] == 1.0 and result["compared"] > 0
    assert result["accuracy"] == result["model_accuracy"]


def test_train_on_rtl_with_tied_kernels(capsys, tmp_path):
    # 2 of the digits core's 8 steps: a quarter of RUN's and BACKWARD's cycles on Icarus.
    code, out, err = run(capsys, "train", "--on", "rtl", "--images", 2, "--set",
                         "structure=conv", "--set", "batch=2", "--set", "steps=2",
                         "--simulator", "icarus", "--rtl-out", tmp_path, "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["images"] == 2 and result["sgd_steps"] == 1
    assert result["mismatches"] == 0 and result["compared"] > 0
    assert result["weights_identical"] is True
