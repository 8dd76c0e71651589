"""Tests of the analog study (``xbarode.study_analog`` and ``xbarode study analog``): files
written, the table's cells against independent runs of the model, the tolerance rule on
hand-made tables, and the command line's errors."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import statistics

import pytest

from helpers import run
from xbarode.cli import main
from xbarode.model import Config, accuracy, load_digits_split, train
from xbarode.model.device import DeviceModel
from xbarode.study_analog import analog_study, markdown, tolerances

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The study's Newton settings for implicit Euler (the core's).
NEWTON = {"neumann_terms": 8, "max_iter": 10}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One small study through the command line: 2 seeds, 1 epoch, one value on two axes,
    every method, both solvers (implicit Euler deploys only), pulse trains of 4 slots."""
    out = tmp_path_factory.mktemp("analog")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["study", "analog", "--seeds", "2", "--epochs", "1",
                     "--axes", "adc_bits,asymmetry", "--values", "adc_bits=6",
                     "--values", "asymmetry=0.1", "--pulses", "4", "--out", str(out),
                     "--json"])
    return code, stdout.getvalue(), stderr.getvalue(), out


def test_study_writes_its_files(study):
    code, stdout, stderr, out = study
    assert code == 0, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["command"] == "study analog"
    files = {name: out / name for name in ("analog.md", "analog.json", "analog.png")}
    assert sorted(result["files"].values()) == sorted(str(p) for p in files.values())
    assert files["analog.png"].read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(p.name for p in out.iterdir()) == sorted(files)      # no temporary left over
    saved = json.loads(files["analog.json"].read_text())
    assert saved["table"] == result["table"]
    assert files["analog.md"].read_text() == markdown(saved)
    assert "%|" not in stderr                                          # no progress bar


def test_study_cells_and_statistics(study):
    _, _, _, out = study
    saved = json.loads((out / "analog.json").read_text())
    assert saved["pairs"] == [["deploy", "euler"], ["aware", "euler"], ["pulsed", "euler"],
                              ["deploy", "implicit_euler"]]
    expected = {"deploy/euler/reference", "deploy/euler/adc_bits/6",
                "aware/euler/reference", "aware/euler/adc_bits/6",
                "pulsed/euler/pulses/4", "pulsed/euler/adc_bits/6", "pulsed/euler/asymmetry/0.1",
                "deploy/implicit_euler/reference", "deploy/implicit_euler/adc_bits/6"}
    assert set(saved["table"]) == expected
    for key, cell in saved["table"].items():
        method, solver, *rest = key.split("/")
        axis, value = (None, None) if rest == ["reference"] else (rest[0], float(rest[1]))
        runs = [r for r in saved["runs"] if (r["method"], r["solver"], r["axis"]) ==
                (method, solver, axis) and (value is None or r["value"] == value)]
        assert sorted(r["seed"] for r in runs) == [0, 1], key
        accuracies = [r["test_accuracy"] for r in runs]
        assert cell["mean"] == pytest.approx(statistics.mean(accuracies), abs=1e-12)
        assert cell["std"] == pytest.approx(statistics.stdev(accuracies), abs=1e-12)
        if axis is None:
            assert "delta" not in cell
            continue
        # Paired with the reference run of the same seed (aware's for pulsed).
        reference = {r["seed"]: r["test_accuracy"] for r in saved["runs"]
                     if (r["method"], r["solver"], r["axis"]) ==
                     ("aware" if method == "pulsed" else method, solver, None)}
        diffs = [r["test_accuracy"] - reference[r["seed"]] for r in runs]
        assert cell["delta"]["mean"] == pytest.approx(statistics.mean(diffs), abs=1e-12)
        assert cell["delta"]["sem"] == pytest.approx(statistics.stdev(diffs) / 2 ** 0.5,
                                                     abs=1e-12)


def test_study_cells_are_the_runs_they_name(study):
    """Three cells recomputed with the model's own train/accuracy and DeviceModel (the ADC
    over a quarter of full scale, the study's default range)."""
    _, _, _, out = study
    saved = json.loads((out / "analog.json").read_text())
    data = load_digits_split()

    def reported(**match):
        (run_,) = [r for r in saved["runs"] if all(r.get(k) == v for k, v in match.items())]
        return run_["test_accuracy"]

    base = Config(epochs=1, **NEWTON)
    implicit = dataclasses.replace(base, seed=1, method="implicit_euler")
    float_params, _ = train(implicit, data)
    adc = DeviceModel(adc_bits=6, adc_range=0.25)
    deployed = dataclasses.replace(implicit, precision="fixed", device=adc)
    assert reported(method="deploy", solver="implicit_euler", axis="adc_bits", seed=1) == \
        accuracy(deployed, float_params, data.x_test, data.y_test)
    aware = dataclasses.replace(base, precision="fixed", device=adc)
    assert reported(method="aware", solver="euler", axis="adc_bits", seed=0) == \
        train(aware, data)[1]["test_accuracy"]
    pulsed = dataclasses.replace(base, seed=1, precision="fixed",
                                 device=DeviceModel(pulses=4, asymmetry=0.1))
    assert reported(method="pulsed", solver="euler", axis="asymmetry", seed=1) == \
        train(pulsed, data)[1]["test_accuracy"]


def _cell(mean):
    return {"mean": mean, "std": 0.0, "overflows": 0.0, "runs": 1}


def test_tolerance_is_the_last_value_before_the_first_miss():
    axes = {"adc_bits": (10, 8, 6, 4), "read_noise": (0.001, 0.01), "asymmetry": (0.01, 0.1)}
    table = {"deploy/euler/reference": _cell(0.95), "aware/euler/reference": _cell(0.90),
             # 6 bits is within 1 pp but 8 bits is not: the rule stops at the first miss.
             "deploy/euler/adc_bits/10": _cell(0.945), "deploy/euler/adc_bits/8": _cell(0.93),
             "deploy/euler/adc_bits/6": _cell(0.95), "deploy/euler/adc_bits/4": _cell(0.5),
             "deploy/euler/read_noise/0.001": _cell(0.9399), "deploy/euler/read_noise/0.01":
             _cell(0.95),
             # Against aware's reference 0.90: exactly 1 pp below counts.
             "pulsed/euler/adc_bits/10": _cell(0.89), "pulsed/euler/adc_bits/8": _cell(0.895),
             "pulsed/euler/adc_bits/6": _cell(0.90), "pulsed/euler/adc_bits/4": _cell(0.91),
             "pulsed/euler/read_noise/0.001": _cell(0.2), "pulsed/euler/read_noise/0.01":
             _cell(0.2),
             "pulsed/euler/asymmetry/0.01": _cell(0.9), "pulsed/euler/asymmetry/0.1":
             _cell(0.5)}
    found = tolerances(table, pairs=[("deploy", "euler"), ("pulsed", "euler")], axes=axes)
    assert found == {
        "deploy/euler/adc_bits": {"value": 10, "all": False},
        "deploy/euler/read_noise": {"value": None, "all": False},
        "pulsed/euler/adc_bits": {"value": 4, "all": True},
        "pulsed/euler/read_noise": {"value": None, "all": False},
        "pulsed/euler/asymmetry": {"value": 0.01, "all": False},
    }
    # A cell whose every run diverged (mean None) is a miss.
    diverged = dict(table, **{"deploy/euler/adc_bits/8": {**_cell(None), "runs": 0}})
    assert tolerances(diverged, pairs=[("deploy", "euler")], axes=axes)[
        "deploy/euler/adc_bits"] == {"value": 10, "all": False}
    diverged["deploy/euler/adc_bits/10"] = {**_cell(None), "runs": 0}
    assert tolerances(diverged, pairs=[("deploy", "euler")], axes=axes)[
        "deploy/euler/adc_bits"] == {"value": None, "all": False}
    # Against the pulse trains alone (0.85 here): 0.2 still misses, 0.5 now passes.
    table["pulsed/euler/pulses/4"] = _cell(0.85)
    table["pulsed/euler/read_noise/0.001"] = _cell(0.845)
    found = tolerances(table, pairs=[("pulsed", "euler")], axes=axes, pulses=4)
    assert found == {
        "pulsed/euler/adc_bits": {"value": 4, "all": True},
        "pulsed/euler/adc_bits/vs-pulses": {"value": 4, "all": True},
        "pulsed/euler/read_noise": {"value": None, "all": False},
        "pulsed/euler/read_noise/vs-pulses": {"value": 0.001, "all": False},
        "pulsed/euler/asymmetry": {"value": 0.01, "all": False},
        "pulsed/euler/asymmetry/vs-pulses": {"value": 0.01, "all": False},
    }


@pytest.mark.parametrize(("options", "message"), [
    (["--axes", "adc_bits,noise"], "--axes: unknown axis 'noise'"),
    (["--axes", "adc_bits", "--values", "states=256"],
     "--values takes AXIS=V,V,… with an axis of --axes"),
    (["--values", "states"], "--values takes AXIS=V,V,… with an axis of --axes"),
    (["--axes", "states", "--values", "states=256,x"],
     "--values states= takes comma-separated integers, not '256,x'"),
    (["--methods", "deploy,magic"], "unknown method 'magic'; choose from deploy, aware, pulsed"),
    (["--solvers", "rk4"], "unknown solver 'rk4'; choose from euler, implicit_euler"),
    (["--axes", "states", "--values", "states=100"], "states must be a power of two"),
    (["--pulses", "3"], "pulses must be a power of two"),
])
def test_study_rejects_bad_options(capsys, tmp_path, options, message):
    code, out, err = run(capsys, "study", "analog", *options, "--out", tmp_path, "--json")
    assert code == 2 and out == "" and message in err
    assert not list(tmp_path.iterdir())


def test_no_axis_is_refused():
    with pytest.raises(ValueError, match="the analog study needs at least one axis"):
        analog_study(axes={})
    with pytest.raises(ValueError, match="axis 'states' has no values"):
        analog_study(axes={"states": ()})


def test_study_help(capsys):
    code, out, _ = run(capsys, "study", "analog", "--help")
    assert code == 0
    for option in ("--seeds", "--epochs", "--methods", "--solvers", "--implicit-training",
                   "--axes", "--values", "--pulses", "--adc-range", "--out", "--json"):
        assert option in out


def test_a_diverged_run_is_recorded_not_fatal(monkeypatch):
    """A training run that diverges (here: every run of seed 1, forced) is kept in the
    study as a diverged run: left out of its cell's mean and of the paired Δ, counted,
    named in the Markdown; the other seed's runs are as usual."""
    import xbarode.model as model
    from xbarode.model.train import TrainingDiverged

    real_train = model.train

    def train(config, data, *args, **kwargs):
        if config.seed == 1:
            raise TrainingDiverged("training diverged in epoch 1 of 1 (forced)")
        return real_train(config, data, *args, **kwargs)

    monkeypatch.setattr(model, "train", train)
    result = analog_study(seeds=2, epochs=1, methods=("deploy", "aware"), solvers=("euler",),
                          axes={"adc_bits": (6,)})
    diverged = [r for r in result["runs"] if "diverged" in r]
    assert sorted({r["seed"] for r in diverged}) == [1] and len(diverged) == 4
    assert all(r["test_accuracy"] is None and "forced" in r["diverged"] for r in diverged)
    (seed0,) = [r["test_accuracy"] for r in result["runs"]
                if (r["method"], r["axis"], r["seed"]) == ("aware", "adc_bits", 0)]
    (ref0,) = [r["test_accuracy"] for r in result["runs"]
               if (r["method"], r["axis"], r["seed"]) == ("aware", None, 0)]
    cell = result["table"]["aware/euler/adc_bits/6"]
    assert (cell["runs"], cell["diverged"], cell["std"]) == (1, 1, 0.0)
    assert cell["mean"] == seed0
    assert cell["delta"] == {"mean": pytest.approx(seed0 - ref0, abs=1e-12), "sem": 0.0}
    assert "(1 of 2 diverged)" in markdown(result)
