"""``xbarode sweep``: design-space sweeps on Dask's distributed scheduler (docs/sweep.md).

A *spec* (TOML) names a kind of point — ``network`` (the neural ODE: trained, evaluated,
simulated on the core, the core synthesised; :mod:`xbarode.sweep_network`) or ``fourier``
(the Fourier path against the direct tile; :mod:`xbarode.sweep_fourier`) — the values every
point shares, the axes with their values, the seeds and the stages to run.

Each stage of a point is a :class:`Task` whose key is a content hash of its stage, its
inputs and the package version (:func:`task_key`). Points that need the same work name the
same task, which runs once: a synthesis depends on the hardware only, so every seed and
every training variant of one core shares it. A finished task's *record* is kept in
``OUT/cache`` under its key (:class:`Cache`): a rerun, or a spec extended with new values,
computes only the tasks it has not seen.

Tasks run on a Dask ``LocalCluster`` (one single-threaded worker process per core by
default) or on the workers of a scheduler given by address. Dask re-runs the task of a worker
that dies on another worker; a task that fails becomes the error of every point that needs
it, and the sweep goes on. Syntheses need the worker resource ``synth`` (local workers have
one each), so a worker runs one at a time whatever its threads.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import hashlib
import io
import itertools
import json
import logging
import math
import os
import socket
import time
import tomllib
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .report import write_atomically

__all__ = ["KINDS", "SHIPPED_SPECS", "Cache", "Kind", "Point", "Spec", "Task", "add_task",
           "attempt_folder", "dask_client", "find_spec", "load_spec", "pareto_front", "plan",
           "point_values", "run_sweep", "run_task", "task_key", "write_sweep"]

#: The specs shipped with the package, by name (``xbarode sweep precision``).
SHIPPED_SPECS = Path(__file__).with_name("data") / "sweeps"
#: Top-level keys of a spec besides the kind's sections.
SPEC_KEYS = ("kind", "description", "seeds", "stages", "report", "axes", "grids")
#: The worker resource a synthesis holds while it runs.
SYNTH_RESOURCE = "synth"
#: How long a connection to a scheduler given by address may take.
CONNECT_TIMEOUT = "20s"


def _kinds() -> dict:
    from .sweep_fourier import FOURIER
    from .sweep_network import NETWORK

    return {kind.name: kind for kind in (NETWORK, FOURIER)}


#: The kinds of point, by name (filled on first use: the kinds import this module).
KINDS: dict = {}


def kind_of(name: str):
    """The :class:`Kind` called ``name``."""
    if not KINDS:
        KINDS.update(_kinds())
    if name not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, not {name!r}")
    return KINDS[name]


# --- tasks, points and kinds ----------------------------------------------------------------

def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


def task_key(stage: str, inputs: dict) -> str:
    """The content hash of a task: SHA-256 of its stage, its inputs (canonical JSON) and the
    package version, as 32 hexadecimal digits."""
    text = _canonical({"stage": stage, "inputs": inputs, "version": __version__})
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Task:
    """One stage of the work, shared by every point that needs it.

    ``inputs`` determine the result (they are hashed into ``key``); ``deps`` are the keys
    of the tasks whose records the stage function receives after ``inputs`` and ``extra``;
    ``extra`` holds what does not change the result (a work folder, a time limit).
    """

    stage: str
    inputs: dict
    deps: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        """:func:`task_key` of the stage and inputs, with the dependencies' keys."""
        return task_key(self.stage, {**self.inputs, "_deps": list(self.deps)})


@dataclass
class Point:
    """One combination of axis values: ``grid`` (the grid's name), ``values`` (axis name →
    value), ``settings`` (section → field → value: the spec's values with the axes'),
    ``tasks`` (role, e.g. ``"train/0"`` → task key) and ``error`` (why the point could not
    be set up, if it could not)."""

    grid: str
    values: dict
    settings: dict
    tasks: dict = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Kind:
    """What a kind of point is made of.

    ``sections``: the fields a spec may set per section; ``stages``: the stages in order;
    ``functions``: per stage the worker function ``f(inputs, extra, *dependency values)``;
    ``resources`` and ``priority``: per stage, Dask's; ``resolve(spec, point)``: a point's
    configurations (raising ``ValueError`` or ``TypeError`` for a value it refuses);
    ``tasks(spec, point, resolved, add)`` puts the point's tasks in with ``add``
    (:func:`add_task` with its first two arguments given) and their keys in ``point.tasks``;
    ``columns(spec)``: the figure columns; ``row(spec, point, records)``: a point's figures;
    ``pareto``: ``(figure maximised, figure minimised)`` pairs; ``reports``: report name →
    ``(result(spec, points, records, seconds), write(result, out))``; ``plot(spec, rows,
    path)``; ``check(spec)`` raises ``ValueError`` for what the kind refuses in a whole spec;
    ``seeds``: whether its points have seeds.
    """

    name: str
    sections: dict
    stages: tuple
    functions: dict
    resources: dict
    priority: dict
    resolve: object
    tasks: object
    columns: object
    row: object
    pareto: tuple
    reports: dict
    plot: object
    check: object
    seeds: bool


def add_task(tasks: dict, work: Path, stage: str, inputs: dict, deps=(), extra=None) -> str:
    """Put the task of ``stage`` with ``inputs`` and ``deps`` into ``tasks`` (by key) unless
    it is there already, and return its key. With ``extra`` (a dict) the task gets a work
    folder, ``work/STAGE-KEY``, besides."""
    task = Task(stage, inputs, tuple(deps))
    if extra is not None:
        task = dataclasses.replace(task, extra={"work": str(Path(work) / f"{stage}-{task.key}"),
                                                **extra})
    tasks.setdefault(task.key, task)
    return task.key


def point_values(point: Point, records: dict, stages=None) -> tuple[dict, list[str]]:
    """The values of the point's tasks by role, and its errors: its own, then each task's
    that failed (of ``stages`` only, if given). A task that failed because a dependency did
    says nothing new and is left out; a task without a record is ``not run``."""
    values, errors = {}, [point.error] if point.error else []
    for role, key in point.tasks.items():
        record = records.get(key)
        if record is None:
            errors.append(f"{role}: not run")
        elif record["ok"]:
            values[role] = record["value"]
        elif not record.get("upstream") and (stages is None or
                                             role.split("/")[0] in stages):
            errors.append(f"{role}: {record['error']}")
    return values, errors


def run_task(function, inputs: dict, extra: dict, *deps: dict) -> dict:
    """Run one stage on a worker; returns its *record*.

    A record is ``{"ok": True, "value": …, "warnings": […], "host", "pid", "seconds"}``, or
    ``{"ok": False, "error": "Type: message", "cacheable": …, "upstream": …}``. A dependency
    that failed fails the task with its error (``upstream``: not cached, the dependency's
    record is). ``cacheable`` is true for a ``ValueError`` — the inputs are refused (a
    configuration, a training that diverges), and would be again — and false for anything
    else (a tool that crashed or timed out), which a rerun tries again. Errors are returned,
    not raised: an exception's own arguments need not survive pickling.
    """
    from threadpoolctl import threadpool_limits

    for dep in deps:
        if not dep["ok"]:
            return {"ok": False, "error": dep["error"], "cacheable": False, "upstream": True}
    start = time.perf_counter()
    # The golden model multiplies small matrices: BLAS threads only fight over the cores.
    with threadpool_limits(limits=1, user_api="blas"), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = function(inputs, extra, *(dep["value"] for dep in deps))
        except Exception as exc:  # a point's failure is its record, not the sweep's
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                    "cacheable": isinstance(exc, ValueError), "upstream": False}
    return {"ok": True, "value": value, "warnings": sorted({str(w.message) for w in caught}),
            "host": socket.gethostname(), "pid": os.getpid(),
            "seconds": time.perf_counter() - start}


# --- the spec -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    """A checked sweep spec (:func:`load_spec`).

    ``base``: section → field → value shared by every point; ``grids``: grid name → axis
    (``"section.field"``) → values; the points are the union over the grids of every
    combination of a grid's axes (one grid, named ``""``, for a spec's ``[axes]``).
    """

    name: str
    source: str
    kind: str
    description: str
    seeds: tuple
    stages: tuple
    report: str | None
    base: dict
    grids: dict

    def to_dict(self) -> dict:
        """A JSON-ready dictionary of the spec."""
        return {"name": self.name, "source": self.source, "kind": self.kind,
                "description": self.description, "seeds": list(self.seeds),
                "stages": list(self.stages), "report": self.report, "base": self.base,
                "grids": self.grids}

    def axes(self) -> list[str]:
        """Every axis of every grid, in order of first appearance."""
        return list(dict.fromkeys(axis for grid in self.grids.values() for axis in grid))


def find_spec(name) -> Path:
    """The spec file ``name``: a path, or the name of a shipped spec (``precision``,
    ``fourier``: :data:`SHIPPED_SPECS`)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = SHIPPED_SPECS / f"{name}.toml"
    if path.suffix == "" and shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in SHIPPED_SPECS.glob("*.toml")))
    raise FileNotFoundError(f"no spec file {name} (the shipped specs: {names})")


def _nest(table: dict) -> dict:
    """``{"a.b": v}`` (a quoted dotted key) as ``{"a": {"b": v}}``, merged with the rest."""
    nested: dict = {}
    for key, value in table.items():
        *outer, last = key.split(".")
        place = nested
        for name in outer:
            place = place.setdefault(name, {})
        if isinstance(value, dict) and isinstance(place.get(last), dict):
            place[last].update(value)
        else:
            place[last] = value
    return nested


def _flatten(table, prefix: str = "") -> dict:
    """``{"a": {"b": v}}`` as ``{"a.b": v}``."""
    if not isinstance(table, dict):
        return {prefix: table}
    flat = {}
    for key, value in table.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return flat


def _apply_overrides(raw: dict, overrides) -> None:
    """``KEY=VALUE`` items (dotted KEY, VALUE in TOML syntax, bare words as strings) into
    the spec's nested tables, in place."""
    for item in overrides or ():
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set takes KEY=VALUE (e.g. --set train.epochs=1), not {item!r}")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        *outer, last = key.strip().split(".")
        place = raw
        for name in outer:
            place = place.setdefault(name, {})
            if not isinstance(place, dict):
                raise ValueError(f"--set {key}: {name} is not a table")
        place[last] = value


def _check_field(kind, name: str, where: str) -> None:
    section, _, fieldname = name.partition(".")
    if section not in kind.sections:
        raise ValueError(f"{where}: {name!r} is not SECTION.FIELD with a section of the "
                         f"{kind.name} kind ({', '.join(kind.sections)})")
    if fieldname not in kind.sections[section]:
        raise ValueError(f"{where}: {section} has no field {fieldname!r}; its fields: "
                         f"{', '.join(kind.sections[section])}")


def _check_list(name: str, value, check, what: str) -> tuple:
    if not isinstance(value, list) or not value or not all(check(v) for v in value) \
            or len({_canonical(v) for v in value}) != len(value):
        raise ValueError(f"{name} must be a non-empty list of distinct {what}, not {value!r}")
    return tuple(value)


def load_spec(name, overrides=()) -> Spec:
    """Read and check a sweep spec (docs/sweep.md); ``overrides`` are ``--set`` items.

    Raises
    ------
    ValueError
        For invalid TOML, an unknown key, section, field, stage or report, or a malformed
        list; the message names it. Field values are checked per point, where a refused value
        is that point's error.
    FileNotFoundError
        For a missing spec.
    """
    path = find_spec(name)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: {error}") from None
    for table in ("axes", "grids"):
        if isinstance(raw.get(table), dict):
            raw[table] = _nest(raw[table]) if table == "axes" else {
                grid: _nest(axes) if isinstance(axes, dict) else axes
                for grid, axes in raw[table].items()}
    _apply_overrides(raw, overrides)
    kind = kind_of(raw.get("kind", "network"))
    unknown = sorted(set(raw) - set(SPEC_KEYS) - set(kind.sections))
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r}; a spec has "
                         f"{', '.join(SPEC_KEYS)} and the sections "
                         f"{', '.join(kind.sections)}")
    base = {}
    for section in kind.sections:
        values = raw.get(section, {})
        if not isinstance(values, dict):
            raise ValueError(f"{path}: {section} must be a table, not {values!r}")
        for fieldname in values:
            _check_field(kind, f"{section}.{fieldname}", str(path))
        base[section] = dict(values)
    if "stages" not in raw:
        raise ValueError(f"{path}: stages must be given (some of "
                         f"{', '.join(kind.stages)})")
    stages = _check_list("stages", raw["stages"],
                         lambda s: s in kind.stages, f"stages of {', '.join(kind.stages)}")
    seeds = ()
    if kind.seeds:
        seeds = _check_list("seeds", raw.get("seeds", [0]),
                            lambda s: isinstance(s, int) and not isinstance(s, bool) and s >= 0,
                            "integers >= 0")
    elif "seeds" in raw:
        raise ValueError(f"{path}: the {kind.name} kind has no seeds")
    report = raw.get("report")
    if report is not None and report not in kind.reports:
        raise ValueError(f"report must be one of {sorted(kind.reports)} for the {kind.name} "
                         f"kind, not {report!r}")
    if "axes" in raw and "grids" in raw:
        raise ValueError(f"{path}: give axes or grids, not both")
    grids = {"": raw["axes"]} if "axes" in raw else raw.get("grids", {"": {}})
    checked = {}
    for grid, axes in grids.items():
        if not isinstance(axes, dict):
            raise ValueError(f"{path}: grids.{grid} must be a table of axes, not {axes!r}")
        flat = _flatten(axes)
        for axis, values in flat.items():
            _check_field(kind, axis, f"{path}: grid {grid!r}" if grid else f"{path}: axes")
            _check_list(f"axis {axis}", values, lambda v: True, "values")
        checked[grid] = flat
    spec = Spec(name=path.stem, source=str(path), kind=kind.name,
                description=str(raw.get("description", "")), seeds=seeds, stages=stages,
                report=report, base=base, grids=checked)
    kind.check(spec)
    return spec


def points_of(spec: Spec) -> list[Point]:
    """Every point of the spec: per grid, every combination of its axes' values, in order."""
    points = []
    for grid, axes in spec.grids.items():
        names = list(axes)
        for combination in itertools.product(*(axes[name] for name in names)):
            values = dict(zip(names, combination, strict=True))
            settings = {section: dict(fields) for section, fields in spec.base.items()}
            for name, value in values.items():
                section, _, fieldname = name.partition(".")
                settings[section][fieldname] = value
            points.append(Point(grid=grid, values=values, settings=settings))
    return points


def plan(spec: Spec, work) -> tuple[list[Point], dict]:
    """The spec's points, each with its tasks' keys (or its configuration's error), and the
    tasks by key, dependencies first; ``work`` is the folder of the tasks' work files."""
    kind = kind_of(spec.kind)
    tasks: dict = {}
    points = points_of(spec)
    for point in points:
        try:
            resolved = kind.resolve(spec, point)
        except (ValueError, TypeError) as error:
            point.error = f"configuration: {error}"
            continue
        kind.tasks(spec, point, resolved, functools.partial(add_task, tasks, work))
    return points, tasks


# --- the cache ------------------------------------------------------------------------------

class Cache:
    """Finished records by task key in ``folder/STAGE/KEY.json``, written atomically.

    A stage's value may carry ``arrays`` (a dict of NumPy arrays), kept beside it in
    ``KEY.npz``. A file that cannot be read, or that names another key, counts as missing.
    """

    def __init__(self, folder):
        self.folder = Path(folder)

    def _path(self, task: Task, suffix: str) -> Path:
        return self.folder / task.stage / f"{task.key}{suffix}"

    def load(self, task: Task) -> dict | None:
        """The record of ``task``, or None."""
        try:
            saved = json.loads(self._path(task, ".json").read_text())
            if saved.get("key") != task.key:
                return None
            record = saved["record"]
            if record.get("ok") and saved.get("arrays"):
                with np.load(self._path(task, ".npz")) as arrays:
                    record["value"]["arrays"] = {name: arrays[name] for name in arrays.files}
            return record
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def store(self, task: Task, record: dict) -> None:
        """Keep ``record`` for ``task`` (the arrays first, so a JSON file is never without
        them)."""
        folder = self.folder / task.stage
        folder.mkdir(parents=True, exist_ok=True)
        arrays = (record.get("value") or {}).get("arrays") if record.get("ok") else None
        if arrays:
            def write_arrays(tmp):
                with open(tmp, "wb") as handle:
                    np.savez(handle, **arrays)
            write_atomically(self._path(task, ".npz"), write_arrays)
        kept = {**record, "value": {k: v for k, v in record["value"].items() if k != "arrays"}} \
            if record.get("ok") else record
        text = json.dumps({"key": task.key, "stage": task.stage, "inputs": task.inputs,
                           "deps": list(task.deps), "version": __version__,
                           "arrays": bool(arrays), "record": kept}, default=_json_default)
        write_atomically(self._path(task, ".json"), lambda tmp: tmp.write_text(text))


# --- running on Dask ------------------------------------------------------------------------

@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None, log=None):
    """A Dask client: of a new ``LocalCluster`` of ``workers`` single-threaded worker
    processes, each with one ``synth`` resource, or connected to ``scheduler``; closed (the
    cluster too) on leaving. The dashboard's address is logged when bokeh is installed."""
    import importlib.util

    from distributed import Client, LocalCluster

    log = log or (lambda message: None)
    dashboard = importlib.util.find_spec("bokeh") is not None
    cluster = None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as error:
            raise ValueError(f"--scheduler {scheduler}: cannot connect ({error})") from None
        log(f"scheduler {scheduler}: {len(client.scheduler_info()['workers'])} workers")
    else:
        import dask

        # Dask starts workers with MALLOC_TRIM_THRESHOLD_ = 64 KiB, so that freed memory goes
        # back to the system at once; the golden model allocates and frees small arrays all
        # the time, and with it a training took 9 times the page faults and a third longer.
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_":
                              None}):
            cluster = LocalCluster(
                n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                resources={SYNTH_RESOURCE: 1}, preload=["xbarode.sweep"],  # dask_setup below
                # Without bokeh the scheduler still serves HTTP (its health and metrics): on
                # any free port.
                dashboard_address=":8787" if dashboard else ":0", silence_logs=logging.ERROR)
        client = Client(cluster)
        log(f"local cluster: {len(cluster.workers)} worker processes")
    if dashboard:
        log(f"Dask dashboard: {client.dashboard_link}")
    try:
        yield client
    finally:
        if cluster is not None:
            # A worker's tools (yosys, nextpnr, a simulator) outlive a worker that is shut
            # down; the sweep that started them ends them.
            with contextlib.suppress(Exception):
                client.run(_end_children)
        client.close()
        if cluster is not None:
            cluster.close()


def dask_setup(worker) -> None:
    """Run by each worker of the local cluster as it starts: Ctrl-C is the client's to
    handle (it closes the cluster, whose nannies end the workers); a worker that took it too
    would only die printing a traceback."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _end_children() -> None:
    """On a worker: terminate the processes it started (and theirs), killing what is left
    after 5 s."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


def attempt_folder(extra: dict) -> Path:
    """On a worker: the task's work folder for this worker process. A task run again after
    its worker died does not share files with the tools the dead worker left running."""
    return Path(extra["work"]) / f"{socket.gethostname()}-{os.getpid()}"


def _check_resources(client, tasks, kind) -> None:
    needed = {name for task in tasks for name in kind.resources.get(task.stage, {})}
    offered = {name for worker in client.scheduler_info()["workers"].values()
               for name in (worker.get("resources") or {})}
    missing = sorted(needed - offered)
    if missing:
        raise ValueError(f"no worker offers the resource {missing[0]!r} that "
                         f"{'syntheses need' if missing[0] == SYNTH_RESOURCE else 'tasks need'}"
                         f" (start workers with --resources \"{missing[0]}=1\")")


def _record_of(future) -> dict:
    """The record a finished future holds; a Dask-level failure (a task that killed its
    workers too often, a cancelled task) as a record that is never cached."""
    if future.status == "finished":
        return future.result()
    if future.status == "error":
        exc = future.exception()
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "cacheable": False,
                "upstream": False}
    return {"ok": False, "error": f"the task was {future.status}", "cacheable": False,
            "upstream": False}


def _execute(client, kind, todo: list, records: dict, cache: Cache, functions: dict,
             on_record) -> None:
    """Submit ``todo`` (in dependency order) and keep each record as it comes."""
    from distributed import as_completed

    _check_resources(client, todo, kind)
    token = uuid.uuid4().hex[:8]     # Dask keys of this run only: no reuse across runs
    futures, scattered = {}, {}

    def argument(key):
        if key in futures:
            return futures[key]
        if key not in scattered:      # a cached record a new task needs: sent once
            scattered[key] = client.scatter([records[key]], hash=False)[0]
        return scattered[key]

    for task in todo:
        futures[task.key] = client.submit(
            run_task, functions[task.stage], task.inputs, task.extra,
            *(argument(dep) for dep in task.deps), key=f"{task.stage}-{task.key[:16]}-{token}",
            resources=kind.resources.get(task.stage), priority=kind.priority.get(task.stage, 0),
            pure=False)
    by_future = {futures[task.key].key: task for task in todo}
    for future in as_completed(list(futures.values())):
        task = by_future[future.key]
        record = _record_of(future)
        records[task.key] = record
        if record["ok"] or (record["cacheable"] and not record["upstream"]):
            cache.store(task, record)
        if on_record is not None:
            on_record(task, record)


def run_sweep(spec: Spec, out, *, workers: int | None = None, scheduler: str | None = None,
              client=None, functions: dict | None = None, progress=None, log=None) -> dict:
    """Run a sweep; returns its result (see docs/sweep.md) without writing the table.

    Parameters
    ----------
    spec : Spec
    out : path
        Folder of the cache (``cache/``) and of the tasks' work files (``work/``).
    workers, scheduler
        A ``LocalCluster`` of ``workers`` processes (default: one per core), or the Dask
        scheduler at this address; neither is started when every task is cached.
    client : distributed.Client, optional
        Run on this client instead (it stays open).
    functions : dict, optional
        Stage name → worker function, instead of the kind's (e.g. a test's hook).
    progress : callable, optional
        Called as ``progress(todo, cached)`` (the counts of tasks to compute and found in the
        cache) before the first is submitted; returns the callable called with ``(task,
        record)`` as each finishes, which may have a ``close()``.
    log : callable, optional
        Receives one line at a time (the cluster, the dashboard).

    Returns
    -------
    dict
        ``spec``, ``rows`` (per point: ``grid``, the axes, the figures, ``error``),
        ``columns`` (of the table), ``pareto``, ``tasks`` (``total``, ``cached``,
        ``computed``, ``skipped`` — a dependency's failure was known — and ``failed``),
        ``failed`` (points with an error), ``seconds`` and, with a report, ``report`` (the
        study's result) or ``report_error``.
    """
    start = time.perf_counter()
    kind = kind_of(spec.kind)
    out = Path(out)
    points, tasks = plan(spec, out / "work")
    cache = Cache(out / "cache")
    records = {}
    for key, task in tasks.items():
        record = cache.load(task)
        if record is not None:
            records[key] = record
    cached = len(records)
    todo = []
    for key, task in tasks.items():      # dependencies first
        failed = next((records[dep] for dep in task.deps
                       if dep in records and not records[dep]["ok"]), None)
        if failed is not None and key not in records:
            # A known failure upstream: the task would only repeat it.
            records[key] = {"ok": False, "error": failed["error"], "cacheable": False,
                            "upstream": True}
        elif key not in records:
            todo.append(task)
    functions = {**kind.functions, **(functions or {})}
    if todo:
        on_record = progress(len(todo), cached) if progress is not None else None
        try:
            if client is not None:
                _execute(client, kind, todo, records, cache, functions, on_record)
            else:
                with dask_client(workers, scheduler, log) as own:
                    _execute(own, kind, todo, records, cache, functions, on_record)
        finally:
            getattr(on_record, "close", lambda: None)()
    seconds = time.perf_counter() - start
    result = {"spec": spec.to_dict(), **table(spec, kind, points, records),
              "tasks": {"total": len(tasks), "cached": cached, "computed": len(todo),
                        "skipped": len(tasks) - cached - len(todo),
                        "failed": sum(not r["ok"] for r in records.values())},
              "seconds": seconds}
    result["failed"] = sum(row["error"] is not None for row in result["rows"])
    if spec.report is not None:
        make, _ = kind.reports[spec.report]
        try:
            result["report"] = make(spec, points, records, seconds)
        except ValueError as error:
            result["report_error"] = str(error)
    return result


# --- the table ------------------------------------------------------------------------------

def pareto_front(rows: list[dict], gain: str, cost: str) -> list[int]:
    """Indices of the rows on the Pareto front of ``gain`` (higher is better) against
    ``cost`` (lower is better): no other row has at least the gain at most the cost and is
    better in one. Rows without both figures, or with an error, are not on it."""
    usable = [(i, row[gain], row[cost]) for i, row in enumerate(rows)
              if row.get("error") is None and row.get(gain) is not None
              and row.get(cost) is not None]
    return [i for i, g, c in usable
            if not any(g2 >= g and c2 <= c and (g2 > g or c2 < c) for _, g2, c2 in usable)]


def table(spec: Spec, kind, points: list[Point], records: dict) -> dict:
    """``rows``, ``columns`` and ``pareto`` (figure pair → row indices) of a sweep."""
    axes = spec.axes()
    rows = []
    for point in points:
        # An axis the point's grid does not vary shows the spec's value (blank: the default).
        row = {"grid": point.grid, **{axis: point.settings[axis.partition(".")[0]].get(
            axis.partition(".")[2]) for axis in axes}}
        row.update(kind.row(spec, point, records))
        rows.append(row)
    pareto = {}
    for gain, cost in kind.pareto:
        if rows and all(key in rows[0] for key in (gain, cost)):
            front = pareto_front(rows, gain, cost)
            pareto[f"{gain} against {cost}"] = front
            for i, row in enumerate(rows):
                row[f"pareto_{cost}"] = i in front
    columns = ["grid", *axes, *kind.columns(spec)]
    columns += [f"pareto_{cost}" for gain, cost in kind.pareto
                if f"{gain} against {cost}" in pareto]
    columns.append("error")
    if len(spec.grids) == 1:
        columns.remove("grid")
    return {"columns": columns, "rows": rows, "pareto": pareto}


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value)
    return str(value)


def write_sweep(result: dict, out) -> dict[str, str]:
    """Write ``sweep.csv`` (the table: one row per point, every axis and figure),
    ``sweep.json`` (the whole result) and ``sweep.png`` into ``out``, and the report's
    files when the spec asks for one; each file atomically. Returns the paths by kind."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = result["spec"]
    kind = kind_of(spec["kind"])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(result["columns"])
    for row in result["rows"]:
        writer.writerow([_cell(row.get(column)) for column in result["columns"]])
    files = {"csv": out / "sweep.csv", "json": out / "sweep.json", "plot": out / "sweep.png"}
    write_atomically(files["csv"], lambda tmp: tmp.write_text(buffer.getvalue()))
    write_atomically(files["json"], lambda tmp: tmp.write_text(
        json.dumps(result, indent=1, default=_json_default) + "\n"))
    write_atomically(files["plot"], lambda tmp: kind.plot(spec, result["rows"], tmp))
    paths = {name: str(path) for name, path in files.items()}
    if "report" in result:
        _, write = kind.reports[spec["report"]]
        paths.update({f"report_{name}": path for name, path in
                      write(result["report"], out).items()})
    return paths


def mean_or_none(values) -> float | None:
    """The mean of the values that are not None, or None when there are none."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def plot_lines(ax, rows: list[dict], x: str, y: str, series: list[str], *, label=None,
               scale: float = 1.0) -> bool:
    """One line of ``y`` (times ``scale``) against ``x`` per combination of the ``series``
    columns (rows with both figures), ticks at the values of ``x``; whether anything was
    drawn."""
    drawn = False
    groups: dict = {}
    for row in rows:
        if row.get(x) is not None and row.get(y) is not None:
            groups.setdefault(tuple(_cell(row.get(s)) for s in series), []).append(row)
    for name, members in groups.items():
        members.sort(key=lambda r: r[x])
        text = ", ".join(f"{s}={v}" for s, v in zip(series, name, strict=True) if v)
        ax.plot([r[x] for r in members], [scale * r[y] for r in members], "o-",
                label=(label + (f" ({text})" if text else "")) if label else (text or y))
        drawn = True
    if drawn:
        ax.set_xticks(sorted({r[x] for members in groups.values() for r in members}))
    return drawn


def numeric_axis(spec: dict, rows: list[dict]) -> str | None:
    """The first axis whose values are all numbers (the x of a sweep's plot), if any."""
    for axis in dict.fromkeys(a for grid in spec["grids"].values() for a in grid):
        values = [row.get(axis) for row in rows if row.get(axis) is not None]
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                          and math.isfinite(v) for v in values):
            return axis
    return None


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
