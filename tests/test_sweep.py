"""Tests of ``xbarode sweep`` (``xbarode.sweep``): specs, the task graph with shared work,
the content-hash cache, faults (a worker killed mid-task, a failing point, an interrupted
sweep), the table, the Pareto fronts and the shipped specs against the studies they
re-express.

Sweeps run on a real Dask ``LocalCluster`` of two worker processes shared by the module;
stages are the real ones (training and evaluation of 1-epoch digits networks, the Fourier
study's 4×4 and 6×6 simulations), except synthesis and the RTL simulation of the core, which
run on workers as the stand-ins of ``sweep_hooks`` (and in-process against a stand-in
``synthesize`` and ``simulate_core``)."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import cloudpickle
import pytest
from threadpoolctl import threadpool_limits

import sweep_hooks
from helpers import last_json, run
from xbarode import sweep
from xbarode.model import Config, load_dataset, train
from xbarode.study_fourier import fourier_markdown, fourier_study
from xbarode.study_precision import markdown, precision_study
from xbarode.sweep import Cache, load_spec, pareto_front, run_sweep, write_sweep

# The hooks travel to the workers by value: a worker need not find tests/ on its path.
cloudpickle.register_pickle_by_value(sweep_hooks)
# A sweep that waits for a task no worker can run fails here, not at the suite's limit.
pytestmark = pytest.mark.timeout(60)

#: Two seeds of 1-epoch digits trainings at two step counts: 4 trainings, 4 evaluations.
TINY = """
seeds = [0, 1]
stages = ["train", "evaluate"]
[train]
epochs = 1
[axes]
train.steps = [2, 4]
"""
#: The precision spec cut to what the test of the precision study runs.
PRECISION_SLICE = ["seeds=[0,1]", "train.epochs=1", "grids.fixed.fixed.width=[10,8]",
                   "grids.ptq.fixed.width=[10,8]"]


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of two single-threaded worker processes, each with one synth resource
    (the one ``xbarode sweep`` starts), and its client."""
    with sweep.dask_client(workers=2) as dask:
        yield dask


def write_spec(folder: Path, text: str, name: str = "spec") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def accuracies(result) -> list:
    return [(row.get("train.steps"), row["test_accuracy_mean"]) for row in result["rows"]]


# --- specs ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("[train]\nepoch = 1\n", "train has no field 'epoch'; its fields: dataset"),
    ("[trains]\nepochs = 1\n", "unknown key 'trains'"),
    ("", "spec.toml: stages must be given (some of train, evaluate, simulate, synth)"),
    ("stages = ['train', 'place']\n", "stages must be a non-empty list of distinct stages of "
                                      "train, evaluate, simulate, synth"),
    ("stages = ['evaluate']\n", "the stage evaluate needs the stage train"),
    ("stages = ['train']\n[axes]\ncore.steps = [4, 8]\n", "core has no field 'steps'"),
    ("stages = ['train']\n[axes]\ntrain.steps = []\n",
     "axis train.steps must be a non-empty list"),
    ("stages = ['train']\n[axes]\ntrain.steps = [4, 4]\n",
     "axis train.steps must be a non-empty list of distinct"),
    ("stages = ['train']\n[axes]\nsteps = [4]\n", "'steps' is not SECTION.FIELD"),
    ("stages = ['train']\nreport = 'fourier'\n",
     "report must be one of ['precision'] for the network kind"),
    ("kind = 'fourier'\nstages = ['error']\nseeds = [0]\n", "the fourier kind has no seeds"),
    ("kind = 'tile'\n", "kind must be one of ['fourier', 'network'], not 'tile'"),
    ("stages = ['train']\nseeds = [0, -1]\n",
     "seeds must be a non-empty list of distinct integers >= 0"),
    ("stages = ['train']\n[axes]\ntrain.steps = [4]\n[grids.a]\ntrain.steps = [8]\n",
     "give axes or grids"),
    ("seeds = [0\n", "spec.toml: Unclosed array"),
])
def test_a_bad_spec_is_refused_with_a_message(tmp_path, text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_spec(write_spec(tmp_path, text))


def test_grids_give_the_union_of_their_products_and_set_overrides_them(tmp_path):
    spec = load_spec("precision", ["seeds=[0,1]", "grids.fixed.fixed.width=[10,8]"])
    assert spec.seeds == (0, 1) and spec.report == "precision"
    points = sweep.points_of(spec)
    assert [p.grid for p in points] == ["float64"] + ["fixed"] * 4 + ["ptq"] * 8
    assert [(p.values["fixed.width"], p.values["fixed.rounding"]) for p in points[1:5]] == [
        (10, "nearest"), (10, "stochastic"), (8, "nearest"), (8, "stochastic")]
    assert points[1].settings == {"train": {"dataset": "digits", "epochs": 30,
                                            "precision": "fixed"},
                                  "fixed": {"width": 10, "rounding": "nearest"}, "evaluate": {},
                                  "core": {}, "simulate": {}, "synth": {}}
    # A quoted dotted key is the same axis as a nested table's.
    quoted = load_spec(write_spec(tmp_path, 'stages = ["train"]\n[axes]\n"train.steps" = [2, 4]\n'))
    nested = load_spec(write_spec(tmp_path, TINY, "nested"))
    assert quoted.grids == {"": {"train.steps": [2, 4]}} == nested.grids
    with pytest.raises(FileNotFoundError, match=re.escape("no spec file nothing (the shipped "
                                                          "specs: fourier, hardware, precision)")):
        load_spec("nothing")


def test_tasks_are_shared_by_the_points_that_need_them(tmp_path):
    """Float64 trainings ignore the fixed-point formats (the ptq points share them); a
    synthesis depends on the core only (every seed and training variant shares it)."""
    _, tasks = sweep.plan(load_spec("precision", PRECISION_SLICE), tmp_path)
    stages = [task.stage for task in tasks.values()]
    # 2 seeds × (1 float64 + 4 fixed) trainings; 2 seeds × 9 points evaluations.
    assert (stages.count("train"), stages.count("evaluate")) == (10, 18)
    spec = load_spec(write_spec(tmp_path, """
seeds = [0, 1, 2]
stages = ["train", "synth"]
[axes]
train.epochs = [1, 2]
core.lanes = [8, 16]
fixed.rounding = ["nearest", "stochastic"]
"""))
    points, tasks = sweep.plan(spec, tmp_path)
    synth = [task for task in tasks.values() if task.stage == "synth"]
    assert len(points) == 8 and len(synth) == 4          # lanes × rounding
    assert {(t.inputs["core"]["lanes"], t.inputs["core"]["rounding"]) for t in synth} == {
        (8, "nearest"), (8, "stochastic"), (16, "nearest"), (16, "stochastic")}
    # float64 training: the rounding does not change it, the lanes are not the network's.
    assert sum(t.stage == "train" for t in tasks.values()) == 2 * 3
    assert all(t.extra["timeout"] == 7200.0 and "timeout" not in t.inputs for t in synth)


def test_the_hardware_spec_synthesises_each_core_once(tmp_path):
    """The shipped lanes × width spec: 20 cores, each synthesised and simulated once; one
    float64 training per seed for all of them; an evaluation per width and seed (the lanes
    are not the network's)."""
    points, tasks = sweep.plan(load_spec("hardware"), tmp_path)
    stages = [task.stage for task in tasks.values()]
    assert len(points) == 20
    assert [stages.count(s) for s in ("train", "evaluate", "simulate", "synth")] == [2, 10, 20,
                                                                                      20]
    cores = {(t.inputs["core"]["lanes"], t.inputs["core"]["weight"])
             for t in tasks.values() if t.stage == "synth"}
    assert cores == {(lanes, f"{width}.{frac}") for lanes in (1, 2, 4, 8)
                     for width, frac in ((8, 6), (10, 8), (12, 10), (14, 12), (16, 14))}


def test_a_key_is_the_hash_of_stage_inputs_dependencies_and_version(monkeypatch):
    task = sweep.Task("train", {"config": {"seed": 0}})
    assert task.key == sweep.Task("train", {"config": {"seed": 0}}, extra={"w": 1}).key
    others = [sweep.Task("evaluate", {"config": {"seed": 0}}),
              sweep.Task("train", {"config": {"seed": 1}}),
              sweep.Task("train", {"config": {"seed": 0}}, deps=("x",))]
    assert len({task.key, *(t.key for t in others)}) == 4
    key = task.key
    monkeypatch.setattr(sweep, "__version__", "0.0.0")
    assert sweep.Task("train", {"config": {"seed": 0}}).key != key


# --- running: shipped specs against the studies -----------------------------------------------

def test_the_precision_spec_gives_the_precision_study(client, tmp_path):
    """The shipped precision spec on a slice (2 seeds, 1 epoch, widths 10 and 8) with real
    training and evaluation on two workers: the study's table, runs and Markdown."""
    result = run_sweep(load_spec("precision", PRECISION_SLICE), tmp_path, client=client)
    assert result["failed"] == 0 and result["tasks"]["computed"] == 28
    with threadpool_limits(limits=1, user_api="blas"):
        study = precision_study(seeds=2, epochs=1, widths=(10, 8))
    report = result["report"]
    assert report["table"] == study["table"]
    assert report["runs"] == study["runs"]
    assert markdown(report) == markdown(study)
    # The table's accuracy is the evaluation's, which in the training's own arithmetic is
    # the training's.
    for row in result["rows"]:
        kind = {"float64": "float64"}.get(row["grid"], row["grid"])
        key = kind if kind == "float64" else f"{kind}/{row['fixed.width']}/" \
                                             f"{row['fixed.rounding']}"
        assert row["test_accuracy_mean"] == study["table"][key]["mean"]
        assert row["test_accuracy_std"] == study["table"][key]["std"]
    files = write_sweep(result, tmp_path)
    assert (tmp_path / "precision.md").read_text() == markdown(study)
    assert set(files) == {"csv", "json", "plot", "report_markdown", "report_json",
                          "report_plot"}


def test_the_precision_report_takes_each_figure_where_the_study_does(tmp_path):
    """Fixed-point training: the training's accuracy and saturated words; post-training
    quantisation: the fixed-point evaluation's; float64: the training's, no saturation.
    (Records made up: a 1-epoch training saturates nothing, so the figures could not tell.)"""
    from xbarode.sweep_network import precision_report

    spec = load_spec("precision", PRECISION_SLICE)
    points, tasks = sweep.plan(spec, tmp_path)
    records = {}
    for n, (key, task) in enumerate(tasks.items()):
        if task.stage == "train":
            summary = {"test_accuracy": 0.5 + n / 100, "train_accuracy": 0.9,
                       "overflows": 100 + n}
            value = {"config": task.inputs["config"], "summary": summary}
        else:
            value = {"test_accuracy": 0.1 + n / 100, "overflows": n}
        records[key] = {"ok": True, "value": value}

    def train_summary(point, seed):
        return records[point.tasks[f"train/{seed}"]]["value"]["summary"]

    report = precision_report(spec, points, records, 1.0)
    for point in points:
        kind = point.grid
        cell = report["table"]["float64" if kind == "float64" else
                               f"{kind}/{point.values['fixed.width']}/"
                               f"{point.values['fixed.rounding']}"]
        if kind == "ptq":
            chosen = [records[point.tasks[f"evaluate/{seed}"]]["value"] for seed in (0, 1)]
        else:
            chosen = [train_summary(point, seed) for seed in (0, 1)]
        assert cell["mean"] == pytest.approx(sum(c["test_accuracy"] for c in chosen) / 2)
        assert cell["overflows"] == (0 if kind == "float64" else
                                     sum(c["overflows"] for c in chosen) / 2)
    broken = dict(records, **{points[3].tasks["train/1"]: {
        "ok": False, "error": "ValueError: no", "cacheable": True, "upstream": False}})
    with pytest.raises(ValueError, match="the precision report needs every point's runs: "
                                         "train/1: ValueError: no"):
        precision_report(spec, points, broken, 1.0)


def test_the_fourier_spec_gives_the_fourier_study(client, tmp_path):
    """The shipped fourier spec at 4×4 and 6×6 with kernels 1 and 3: real simulations and
    error measurements, syntheses from a stand-in; the study given the same syntheses as its
    cache gives the same rows, errors, crossover and Markdown."""
    spec = load_spec("fourier", ["axes.fourier.size=[4,6]", "fourier.kernels=[1,3]"])
    result = run_sweep(spec, tmp_path, client=client,
                       functions={"synth": sweep_hooks.fake_fourier_synth})
    assert result["failed"] == 0
    from xbarode.study_fourier import _synthesis_designs

    cache = {d["key"]: sweep_hooks.fake_synthesis_entry(d)
             for d in _synthesis_designs([4, 6], [1, 3], 16, "ecp5-85f")}
    study = fourier_study(sizes=(4, 6), kernels=(1, 3), cache=cache)
    report = result["report"]

    def timeless(rows):
        return [{path: {k: v for k, v in figures.items() if k != "simulation_seconds"}
                 if isinstance(figures, dict) else figures for path, figures in row.items()}
                for row in rows]
    assert timeless(report["rows"]) == timeless(study["rows"])
    assert report["errors"] == study["errors"]
    assert report["synthesis"] == study["synthesis"]
    assert report["crossover"] == study["crossover"] and report["notes"] == study["notes"]
    text, reference = fourier_markdown(report), fourier_markdown(study)
    assert text.rsplit("Study time", 1)[0] == reference.rsplit("Study time", 1)[0]
    six = next(row for row in result["rows"] if row["fourier.size"] == 6)
    assert six["fourier_luts"] == 600 and six["direct_fmax_mhz"] == 143.0
    assert six["direct_us_per_image"] == pytest.approx(six["direct_cycles"] / 143.0)
    assert six["k3_within_bound"] is True


# --- the cache: reruns, extensions, interruptions -----------------------------------------------

def test_a_rerun_comes_from_the_cache_without_a_cluster(client, tmp_path):
    spec = load_spec(write_spec(tmp_path, TINY))
    first = run_sweep(spec, tmp_path / "out", client=client)
    assert first["tasks"] == {"total": 8, "cached": 0, "computed": 8, "skipped": 0, "failed": 0}
    # Nothing to compute: no scheduler is contacted (this address has none).
    again = run_sweep(spec, tmp_path / "out", scheduler="tcp://127.0.0.1:1")
    assert again["tasks"] == {"total": 8, "cached": 8, "computed": 0, "skipped": 0, "failed": 0}
    assert again["rows"] == first["rows"] and again["seconds"] < 5
    data = load_dataset("digits")
    for steps, mean in accuracies(first):
        with threadpool_limits(limits=1, user_api="blas"):
            expected = [train(Config(epochs=1, steps=steps, seed=seed), data)[1]
                        ["test_accuracy"] for seed in (0, 1)]
        assert mean == pytest.approx(sum(expected) / 2, abs=1e-15)


def test_an_extended_spec_computes_only_what_is_new(client, tmp_path):
    out = tmp_path / "out"
    run_sweep(load_spec(write_spec(tmp_path, TINY)), out, client=client)
    extended = TINY.replace("seeds = [0, 1]", "seeds = [0, 1, 2]").replace("[2, 4]", "[2, 4, 8]")
    result = run_sweep(load_spec(write_spec(tmp_path, extended)), out, client=client)
    # New: seed 2 at steps 2 and 4, and all three seeds at steps 8; a training and an
    # evaluation each.
    assert result["tasks"] == {"total": 18, "cached": 8, "computed": 10, "skipped": 0, "failed": 0}
    assert [row["seeds"] for row in result["rows"]] == [3, 3, 3]


def test_an_interrupted_sweep_resumes_from_the_cache(client, tmp_path):
    spec = load_spec(write_spec(tmp_path, TINY))
    done = []

    def progress(todo, cached):
        def update(task, record):
            done.append(task.key)
            if len(done) == 3:
                raise KeyboardInterrupt
        return update

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path / "out", client=client, progress=progress)
    result = run_sweep(spec, tmp_path / "out", client=client)
    assert result["tasks"]["cached"] == 3 and result["tasks"]["computed"] == 5
    assert result["failed"] == 0


def test_ctrl_c_ends_the_sweep_and_a_rerun_resumes(client, tmp_path):
    """Ctrl-C (SIGINT to the command's process group, as a terminal sends it) once the first
    task is cached: exit status 130, one line, no process left (its local cluster's workers
    included); the rerun (on the module's cluster) computes only what the cache lacks."""
    import subprocess
    import sys

    script = Path(sys.executable).with_name("xbarode")
    # The 1-epoch trainings finish first; the 8-epoch ones are still running at the signal.
    spec = write_spec(tmp_path, TINY.replace("train.steps = [2, 4]", "train.epochs = [1, 8]"))
    argv = [str(script), "sweep", str(spec), "--workers", "2", "--out", "out", "--json"]
    sweep_run = subprocess.Popen(argv, cwd=tmp_path, start_new_session=True, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "out").rglob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(sweep_run.pid, signal.SIGINT)
    out, err = sweep_run.communicate(timeout=120)
    assert sweep_run.returncode == 130, err
    assert out == "" and err.splitlines()[-1] == "xbarode sweep: interrupted"
    assert "Traceback" not in err
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:           # the workers and their children are gone
        try:
            os.killpg(sweep_run.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("processes of the interrupted sweep are left")
    cached = len(list((tmp_path / "out" / "cache").rglob("*.json")))
    assert 1 <= cached < 8
    resume = [*argv[:3], "--scheduler", client.scheduler.address, *argv[5:]]
    done = subprocess.run(resume, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    tasks = last_json(done.stdout)["tasks"]
    assert tasks == {"total": 8, "cached": cached, "computed": 8 - cached, "skipped": 0,
                     "failed": 0}


def test_a_damaged_cache_file_is_computed_again(client, tmp_path):
    spec = load_spec(write_spec(tmp_path, TINY))
    run_sweep(spec, tmp_path / "out", client=client)
    files = sorted((tmp_path / "out" / "cache" / "train").glob("*.json"))
    assert len(files) == 4 and len(list(files[0].parent.glob("*.npz"))) == 4
    files[0].write_text("{")
    files[1].with_suffix(".npz").unlink()
    result = run_sweep(spec, tmp_path / "out", client=client)
    assert result["tasks"]["computed"] == 2


# --- faults -------------------------------------------------------------------------------------

def test_a_killed_worker_loses_no_point(client, tmp_path):
    """Seed 1's first training waits on its worker; the test kills that worker process
    (SIGKILL). Dask runs the training again elsewhere: every point is there once, with the
    figures of a sweep that nobody disturbed."""
    spec = load_spec(write_spec(tmp_path, TINY))
    hold = tmp_path / "hold"
    hold.mkdir()
    killed = []

    def kill():
        deadline = time.monotonic() + 60
        while not (hold / "pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = int((hold / "pid").read_text())
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill)
    killer.start()
    hook = functools.partial(sweep_hooks.train_waiting_to_be_killed, folder=str(hold), seed=1)
    result = run_sweep(spec, tmp_path / "out", client=client, functions={"train": hook})
    killer.join()
    assert len(killed) == 1
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)
    assert result["failed"] == 0
    assert result["tasks"] == {"total": 8, "cached": 0, "computed": 8, "skipped": 0, "failed": 0}
    reference = run_sweep(spec, tmp_path / "reference", client=client)
    assert result["rows"] == reference["rows"]
    assert [row["seeds"] for row in result["rows"]] == [2, 2]
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "cache").rglob("*.json")]
    assert len(records) == 8 and len({r["key"] for r in records}) == 8
    assert killed[0] not in {r["record"]["pid"] for r in records}
    client.wait_for_workers(2, timeout=60)       # the nanny restarts the killed worker


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(client, tmp_path):
    """A learning rate that diverges fails its point at training (a ValueError: cached, so a
    rerun does not train it again); one that fixed point refuses fails at configuration; the
    other points are measured."""
    spec = load_spec(write_spec(tmp_path, """
seeds = [0]
stages = ["train", "evaluate"]
[train]
epochs = 1
[grids.float64]
train.lr = [0.125, 1000000.0]
[grids.fixed]
train.precision = ["fixed"]
train.lr = [0.3]
"""))
    result = run_sweep(spec, tmp_path / "out", client=client)
    good, diverged, refused = result["rows"]
    assert good["error"] is None and good["test_accuracy_mean"] > 0.5
    assert diverged["error"].startswith("train/0: TrainingDiverged: ")
    assert "evaluate" not in diverged["error"] and diverged["test_accuracy_mean"] is None
    assert refused["error"].startswith("configuration: ") and "lr" in refused["error"]
    assert result["failed"] == 2
    assert result["tasks"] == {"total": 4, "cached": 0, "computed": 4, "skipped": 0,
                               "failed": 2}
    # The refused training is cached; its evaluation, which would only repeat the error, is
    # not run again.
    again = run_sweep(spec, tmp_path / "out", scheduler="tcp://127.0.0.1:1")
    assert again["tasks"] == {"total": 4, "cached": 3, "computed": 0, "skipped": 1,
                              "failed": 2}
    assert again["rows"] == result["rows"]


def test_run_task_records_errors_and_dependencies():
    def fails(inputs, extra):
        raise RuntimeError("tool crashed")

    def refuses(inputs, extra):
        raise ValueError("bad value")

    crashed = sweep.run_task(fails, {}, {})
    assert crashed == {"ok": False, "error": "RuntimeError: tool crashed", "cacheable": False,
                       "upstream": False}
    assert sweep.run_task(refuses, {}, {})["cacheable"] is True
    after = sweep.run_task(lambda inputs, extra, dep: dep, {}, {}, crashed)
    assert after == {"ok": False, "error": "RuntimeError: tool crashed", "cacheable": False,
                     "upstream": True}
    done = sweep.run_task(lambda inputs, extra, dep: dep + 1, {}, {},
                          {"ok": True, "value": 41})
    assert done["ok"] and done["value"] == 42 and done["pid"] == os.getpid()


# --- hardware stages, Pareto fronts, the table ------------------------------------------------

HARDWARE = """
seeds = [0, 1]
stages = ["train", "simulate", "synth"]
[train]
epochs = 1
[axes]
train.steps = [2, 8]
core.lanes = [8, 16, 64]
"""


def test_hardware_figures_and_pareto_fronts(client, tmp_path):
    """Simulation and synthesis from stand-ins: one synthesis per core, µs per inference from
    the cycles and fmax, the Pareto fronts of accuracy against µs and logic cells; a core
    whose RTL differs from the model fails its points (and leaves the fronts)."""
    hold = tmp_path / "synth"
    hold.mkdir()
    spec = load_spec(write_spec(tmp_path, HARDWARE.replace("[train]", "[simulate]\n"
                                                                      "images = 4\n[train]")))
    result = run_sweep(spec, tmp_path / "out", client=client, functions={
        "synth": functools.partial(sweep_hooks.fake_synth, folder=str(hold)),
        "simulate": functools.partial(sweep_hooks.fake_simulate, wrong_at=16)})
    # 2 × 2 trainings, 6 simulations (one per point) and 6 syntheses (one per core: the
    # steps are the core's too), each run once.
    assert result["tasks"]["total"] == 4 + 6 + 6
    assert len(list(hold.iterdir())) == 6
    rows = result["rows"]
    assert result["failed"] == 2
    for row in rows:
        lanes = row["core.lanes"]
        assert row["logic_cells"] == 1000 * lanes and row["rtl_images"] == 4
        assert row["us_per_inference"] == pytest.approx(64000 / lanes / (80.0 - lanes))
        assert (row["error"] == "simulate: 3 words and flags differ from the model; first: "
                                "logits[0]") is (lanes == 16)
    for name, cost in (("us_per_inference", "us_per_inference"), ("logic_cells", "logic_cells")):
        front = result["pareto"][f"test_accuracy_mean against {name}"]
        assert front == pareto_front(rows, "test_accuracy_mean", cost) != []
        assert [row[f"pareto_{cost}"] for row in rows] == [i in front for i in range(6)]
        assert all(rows[i]["core.lanes"] != 16 for i in front)
    assert {"pareto_us_per_inference", "pareto_logic_cells", "us_per_inference", "luts",
            "cycles_per_inference"} <= set(result["columns"])


def test_syntheses_hold_the_worker_resource(tmp_path):
    """Two syntheses on one worker with two threads and one synth resource run one after the
    other; trainings do not wait for them."""
    from distributed import Client, LocalCluster

    hold = tmp_path / "synth"
    hold.mkdir()
    spec = load_spec(write_spec(tmp_path, """
seeds = [0]
stages = ["synth"]
[axes]
core.lanes = [8, 16]
"""))
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                      resources={"synth": 1}, dashboard_address=":0") as cluster, \
            Client(cluster) as own:
        result = run_sweep(spec, tmp_path / "out", client=own, functions={
            "synth": functools.partial(sweep_hooks.fake_synth, folder=str(hold), seconds=1.0)})
    assert result["failed"] == 0
    runs = sorted((json.loads(p.read_text()) for p in hold.iterdir()), key=lambda r: r["start"])
    assert len(runs) == 2 and runs[0]["end"] <= runs[1]["start"]


def test_a_cluster_without_the_synth_resource_is_refused(tmp_path):
    from distributed import Client, LocalCluster

    spec = load_spec(write_spec(tmp_path, "stages = ['synth']\n"))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as own, \
            pytest.raises(ValueError, match="no worker offers the resource 'synth' that "
                                            "syntheses need"):
        run_sweep(spec, tmp_path / "out", client=own)


def test_pareto_front():
    rows = [{"a": 0.9, "c": 10}, {"a": 0.95, "c": 20}, {"a": 0.9, "c": 5}, {"a": 0.8, "c": 1},
            {"a": 0.95, "c": 20}, {"a": 0.99, "c": None}, {"a": 1.0, "c": 0, "error": "x"},
            {"a": 0.85, "c": 5}]
    # (0.9, 10) is beaten by (0.9, 5); (0.85, 5) by (0.9, 5); equal rows are both on it.
    assert pareto_front(rows, "a", "c") == [1, 2, 3, 4]
    assert pareto_front([], "a", "c") == []


def test_the_synth_stage_synthesises_the_core(monkeypatch, tmp_path):
    """The network's synth stage: ``xbarode synth core``'s synthesis of the point's core,
    with the spec's options in a folder of the worker's own, and its figures with the logic
    cells nextpnr used."""
    import dataclasses

    from xbarode import units
    from xbarode.model.core_config import CoreConfig
    from xbarode.sweep_network import synth_stage

    calls = []

    def synth(unit, params, **options):
        calls.append((unit, params, options))
        return {"luts": 1, "carry": 2, "lutram": 3, "ffs": 4, "mult18": 5, "ebr": 6,
                "fmax_mhz": 55.5, "yosys_seconds": 1.0, "nextpnr_seconds": 2.0,
                "files": {"netlist": "n"}, "utilisation": {"TRELLIS_COMB": {"used": 77}}}

    monkeypatch.setattr(units, "synth", synth)
    core = CoreConfig(lanes=8, rounding="nearest")
    figures = synth_stage({"core": dataclasses.asdict(core), "device": "ecp5-45f", "freq": 40.0,
                           "seed": 3, "router": "router1"},
                          {"work": str(tmp_path), "timeout": 99.0})
    ((unit, params, options),) = calls
    assert unit is units.UNITS["core"] and params == units.CoreParams(core)
    assert options == {"device": "ecp5-45f", "out": sweep.attempt_folder({"work": tmp_path}),
                       "freq_mhz": 40.0, "seed": 3, "router": "router1", "timeout": 99.0}
    assert options["out"].parent == tmp_path
    assert figures["logic_cells"] == 77 and figures["fmax_mhz"] == 55.5
    assert "utilisation" not in figures


def test_the_simulate_stage_simulates_the_trained_network(monkeypatch, tmp_path):
    """The network's simulate stage: the first images of the training's test set through
    ``simulate_core`` with the point's core; a core for another network is refused."""
    import dataclasses

    from xbarode import simulate as simulate_module
    from xbarode.model.core_config import CoreConfig
    from xbarode.sweep_network import simulate_stage, train_stage

    calls = []

    def simulate_core(config, params, images, labels, **options):
        calls.append((config, params, images, labels, options))
        return {"images": len(images), "agreement": 1.0, "mismatches": 0, "compared": 9,
                "first_mismatch": None, "accuracy": 0.5, "model_accuracy": 0.5,
                "cycles_per_image": 100.0, "mac_bound_cycles": 90.0, "cycles_ratio": 1.1,
                "waveform": None, "seconds": 1.0, "build_seconds": 0.0, "other": 1}

    monkeypatch.setattr(simulate_module, "simulate_core", simulate_core)
    trained = train_stage({"config": Config(epochs=1, steps=4, T=1.0).to_dict()}, {})
    core = CoreConfig(steps=4, lanes=32)
    figures = simulate_stage({"core": dataclasses.asdict(core), "images": 3,
                              "simulator": "icarus", "batch": 2},
                             {"work": str(tmp_path)}, trained)
    ((config, params, images, labels, options),) = calls
    data = load_dataset("digits")
    assert config == core and params is trained["arrays"]
    assert (images == data.x_test[:3]).all() and (labels == data.y_test[:3]).all()
    assert options == {"simulator": "icarus", "out_dir": sweep.attempt_folder({"work": tmp_path}),
                       "batch": 2}
    assert figures["cycles_per_image"] == 100.0 and "other" not in figures
    with pytest.raises(ValueError, match="steps: 4 in the weights, 8 in the core"):
        simulate_stage({"core": dataclasses.asdict(CoreConfig()), "images": 3,
                        "simulator": "icarus", "batch": 2}, {"work": str(tmp_path)}, trained)


def test_the_table_files(client, tmp_path):
    spec = load_spec(write_spec(tmp_path, TINY))
    result = run_sweep(spec, tmp_path, client=client)
    files = write_sweep(result, tmp_path)
    lines = Path(files["csv"]).read_text().splitlines()
    assert lines[0] == ("train.steps,seeds,test_accuracy_mean,test_accuracy_std,"
                        "train_accuracy_mean,train_overflows_mean,eval_overflows_mean,error")
    assert [line.split(",")[0] for line in lines[1:]] == ["2", "4"]
    assert json.loads(Path(files["json"]).read_text())["rows"] == result["rows"]
    assert Path(files["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cache", "spec.toml", "sweep.csv", "sweep.json", "sweep.png"]


def test_cache_round_trip(tmp_path):
    import numpy as np

    cache = Cache(tmp_path)
    task = sweep.Task("train", {"x": 1})
    assert cache.load(task) is None
    record = {"ok": True, "value": {"arrays": {"A": np.arange(3.0)}, "n": 1}, "warnings": []}
    cache.store(task, record)
    loaded = cache.load(task)
    assert loaded["value"]["n"] == 1 and (loaded["value"]["arrays"]["A"] == np.arange(3.0)).all()
    other = sweep.Task("train", {"x": 2})
    (tmp_path / "train" / f"{other.key}.json").write_text(
        (tmp_path / "train" / f"{task.key}.json").read_text())
    assert cache.load(other) is None                # a file that names another key


# --- the command line ---------------------------------------------------------------------------

def test_sweep_command_on_a_scheduler(client, capsys, tmp_path):
    spec = write_spec(tmp_path, TINY)
    address = client.scheduler.address
    code, out, err = run(capsys, "sweep", spec, "--scheduler", address, "--out",
                         tmp_path / "out", "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["command"] == "sweep" and result["points"] == 2 and result["failed"] == 0
    assert result["tasks"]["computed"] == 8
    assert set(result["files"]) == {"csv", "json", "plot"}
    assert "%|" not in err                                    # no progress bar with --json
    code, out, err = run(capsys, "sweep", spec, "--out", tmp_path / "out")
    assert code == 0, err
    assert "8 tasks: 8 from the cache, 0 computed" in out and "local cluster" not in err


def test_sweep_command_reports_failed_points(client, capsys, tmp_path):
    spec = write_spec(tmp_path, "stages = ['train']\n[train]\nepochs = 1\nlr = 1000000.0\n")
    code, out, err = run(capsys, "sweep", spec, "--scheduler", client.scheduler.address,
                         "--out", tmp_path / "out", "--json")
    assert code == 1
    assert "check failed: 1 of 1 points failed; the first: train/0: TrainingDiverged" in err
    assert last_json(out)["rows"][0]["error"].startswith("train/0: TrainingDiverged")
    assert (tmp_path / "out" / "sweep.csv").is_file()


@pytest.mark.parametrize(("argv", "message"), [
    (["--set", "train.epoch=1"], "train has no field 'epoch'"),
    (["--set", "novalue"], "--set takes KEY=VALUE"),
    (["--workers", "0"], "--workers: must be between 1 and 256"),
    (["--workers", "2", "--scheduler", "tcp://x:1"], "not allowed with argument"),
])
def test_sweep_command_refuses_bad_input(capsys, tmp_path, argv, message):
    spec = write_spec(tmp_path, TINY)
    code, _, err = run(capsys, "sweep", spec, "--out", tmp_path / "out", *argv)
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()


def test_an_unreachable_scheduler_is_bad_input(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(sweep, "CONNECT_TIMEOUT", "1s")
    spec = write_spec(tmp_path, TINY)
    code, _, err = run(capsys, "sweep", spec, "--scheduler", "tcp://127.0.0.1:1", "--out",
                       tmp_path / "out")
    assert code == 2 and "--scheduler tcp://127.0.0.1:1: cannot connect" in err


def test_sweep_help(capsys):
    code, out, err = run(capsys, "sweep", "--help")
    assert code == 0 and err == "" and out.startswith("usage: xbarode sweep")
    for option in ("spec", "--set", "--out", "--workers", "--scheduler", "--json",
                   "shipped spec"):
        assert option in out, option
