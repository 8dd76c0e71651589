"""Tests of the precision study (``xbarode.study_precision`` and ``xbarode study precision``): files
written, the table's layout and statistics, and that each cell is the run it claims to be."""

from __future__ import annotations

import contextlib
import io
import json
import statistics

import pytest

from helpers import run
from xbarode.cli import main
from xbarode.model import Config, accuracy, load_digits_split, train
from xbarode.study_precision import markdown, precision_study

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# formats_for_width(10): width minus the integer bits 2, 5, 7, 4 of weight, state, act, grad.
FORMATS_10 = {"weight_format": "10.8", "state_format": "10.5", "act_format": "10.3",
              "grad_format": "10.5"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One small study through the command line: 2 seeds, 1 epoch, widths 10 and 8."""
    out = tmp_path_factory.mktemp("study")
    # capsys is function-scoped; a module fixture captures by hand.
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["study", "precision", "--seeds", "2", "--epochs", "1", "--widths", "10,8",
                     "--out", str(out), "--json"])
    return code, stdout.getvalue(), stderr.getvalue(), out


def test_study_writes_its_files(study):
    code, stdout, stderr, out = study
    assert code == 0, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["command"] == "study precision"
    assert (result["seeds"], result["epochs"]) == (2, 1)
    files = {name: out / name for name in ("precision.md", "precision.json", "precision.png")}
    assert sorted(result["files"].values()) == sorted(str(p) for p in files.values())
    assert files["precision.png"].read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(p.name for p in out.iterdir()) == sorted(files)      # no temporary left over
    saved = json.loads(files["precision.json"].read_text())
    assert saved["table"] == result["table"]
    text = files["precision.md"].read_text()
    assert text == markdown(saved)
    for width, formats in (("10", "10.8, 10.5, 10.3, 10.5"), ("8", "8.6, 8.3, 8.1, 8.3")):
        assert f"| {width} | {formats} | nearest |" in text
        assert f"| {width} | {formats} | stochastic |" in text
    assert "float64: " in text
    assert "%|" not in stderr                                          # no progress bar


def test_study_table_layout_and_statistics(study):
    _, _, _, out = study
    saved = json.loads((out / "precision.json").read_text())
    table = saved["table"]
    expected_keys = {"float64"} | {f"{kind}/{width}/{rounding}" for kind in ("fixed", "ptq")
                                   for width in (10, 8) for rounding in ("nearest", "stochastic")}
    assert set(table) == expected_keys
    assert saved["widths"] == [10, 8]
    for key, cell in table.items():
        assert set(cell) >= {"mean", "std", "overflows"}
        kind, _, rest = key.partition("/")
        width, _, rounding = rest.partition("/")
        runs = [r for r in saved["runs"] if r["kind"] == kind
                and (kind == "float64" or (r["width"] == int(width) and r["rounding"] == rounding))]
        assert sorted(r["seed"] for r in runs) == [0, 1]
        accuracies = [r["test_accuracy"] for r in runs]
        assert all(0 <= a <= 1 for a in accuracies)
        assert cell["mean"] == pytest.approx(statistics.mean(accuracies), abs=1e-12)
        assert cell["std"] == pytest.approx(statistics.stdev(accuracies), abs=1e-12)
        assert cell["overflows"] == pytest.approx(statistics.mean(r["overflows"] for r in runs))


def test_study_cells_are_the_runs_they_name(study):
    _, _, _, out = study
    saved = json.loads((out / "precision.json").read_text())
    data = load_digits_split()

    def reported(**match):
        (run_,) = [r for r in saved["runs"] if all(r.get(k) == v for k, v in match.items())]
        return run_["test_accuracy"]

    float_params, summary = train(Config(epochs=1, seed=1), data)
    assert reported(kind="float64", seed=1) == summary["test_accuracy"]
    fixed = Config(epochs=1, seed=0, precision="fixed", rounding="nearest", **FORMATS_10)
    assert reported(kind="fixed", width=10, rounding="nearest", seed=0) == \
        train(fixed, data)[1]["test_accuracy"]
    ptq = Config(epochs=1, precision="fixed", rounding="stochastic", **FORMATS_10)
    assert reported(kind="ptq", width=10, rounding="stochastic", seed=1) == \
        accuracy(ptq, float_params, data.x_test, data.y_test)


def test_single_seed_has_zero_std():
    result = precision_study(seeds=1, epochs=1, widths=(8,))
    assert all(cell["std"] == 0.0 for cell in result["table"].values())
    assert set(result["table"]) == {"float64", "fixed/8/nearest", "fixed/8/stochastic",
                                    "ptq/8/nearest", "ptq/8/stochastic"}


@pytest.mark.parametrize(("widths", "message"), [("10,1", "--widths must list widths >= 2"),
                                                 ("a,b", "invalid literal")])
def test_study_rejects_bad_widths(capsys, tmp_path, widths, message):
    code, out, err = run(capsys, "study", "precision", "--widths", widths, "--out", tmp_path,
                         "--json")
    assert code == 2 and out == "" and message in err
    assert not (tmp_path / "precision.json").exists()


def test_study_help(capsys):
    code, out, _ = run(capsys, "study", "precision", "--help")
    assert code == 0
    for option in ("--seeds", "--epochs", "--widths", "--out", "--json"):
        assert option in out
