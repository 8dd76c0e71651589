"""The ``network`` kind of sweep point: the neural ODE trained, evaluated, simulated on the
core and the core synthesised (docs/sweep.md).

A point's sections: ``train`` (the training configuration, :class:`xbarode.model.Config`),
``fixed`` (the fixed-point formats, rounding and LFSR seed: of fixed-point training, of
fixed-point evaluation and of the core), ``evaluate`` (the arithmetic the trained network is
evaluated in), ``core`` (the core's hardware-only fields; its network follows the training
configuration), ``simulate`` and ``synth``. Stages and their tasks:

- ``train``, per seed: :func:`xbarode.model.train` (a float64 training ignores ``fixed``, so
  every fixed-point variant of it shares one training);
- ``evaluate``, per seed: the trained network's test accuracy and saturated words in the
  evaluation's arithmetic (:func:`xbarode.study_precision.test_figures`);
- ``simulate``: the first seed's network on the core's RTL next to the fixed-point model
  (:func:`xbarode.simulate.simulate_core`);
- ``synth``: the core's synthesis, placement and routing (:func:`xbarode.units.synth`), which
  depends on the core's configuration only.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from .sweep import Kind, attempt_folder, mean_or_none, numeric_axis, plot_lines, point_values

__all__ = ["NETWORK", "evaluate_stage", "simulate_stage", "synth_stage", "train_stage"]

#: The fields of ``model.Config`` a spec sets in ``train`` (``h`` sets ``T = h·steps``; the
#: seeds are the spec's, the image is the data set's, the arithmetic is ``fixed``'s).
TRAIN_FIELDS = ("dataset", "structure", "kernel_size", "classes", "channels", "pool", "steps",
                "T", "h", "method", "linear_solver", "neumann_terms", "max_iter", "tol",
                "epochs", "batch_size", "optimizer", "lr", "init_scale", "precision")
#: ``width`` and ``frac`` set every class's format as ``--width`` and ``--frac`` do; the rest
#: are the core's ``[fixed]`` table.
FIXED_FIELDS = ("width", "frac", "weight", "state", "act", "grad", "acc_width", "rounding",
                "lfsr_seed", "fourier_data", "twiddle", "spectrum")
#: The core's fields that are not the network's (those follow the training configuration).
CORE_FIELDS = ("lanes", "conv_path", "neumann_terms", "max_iter", "tol", "training", "lr",
               "batch")
SECTIONS = {"train": TRAIN_FIELDS, "fixed": FIXED_FIELDS, "evaluate": ("precision",),
            "core": CORE_FIELDS, "simulate": ("images", "simulator", "batch"),
            "synth": ("device", "freq", "seed", "router", "timeout")}
#: Defaults of the simulation and the synthesis (``xbarode bench core``'s).
SIMULATE_DEFAULTS = {"images": 16, "simulator": "verilator", "batch": 90}
SYNTH_DEFAULTS = {"device": "ecp5-85f", "freq": 50.0, "seed": 1, "router": "router2",
                  "timeout": 7200.0}
CLASSES = ("weight", "state", "act", "grad")


# --- a point's configurations ---------------------------------------------------------------

def _formats(fixed: dict) -> dict:
    """``{"weight": "W.F", …}``: ``width``/``frac`` as ``formats_for_width`` gives them, a
    class given by name winning; without either, the defaults."""
    from .model import Config
    from .model.fixed_net import formats_for_width

    named = {name: fixed[name] for name in CLASSES if name in fixed}
    if "width" in fixed or "frac" in fixed:
        width = fixed.get("width", int(Config().weight_format.split(".")[0]))
        return formats_for_width(width, fixed.get("frac"), fixed.get("acc_width", 48),
                                 **named).as_strings()
    d = Config()
    return {"weight": d.weight_format, "state": d.state_format, "act": d.act_format,
            "grad": d.grad_format} | named


def _arithmetic(fixed: dict) -> dict:
    """The fixed-point fields of ``model.Config`` for a point's ``fixed`` section."""
    from .model import Config

    d = Config()
    return {"precision": "fixed",
            **{f"{name}_format": value for name, value in _formats(fixed).items()},
            "acc_width": fixed.get("acc_width", d.acc_width),
            "rounding": fixed.get("rounding", d.rounding),
            "lfsr_seed": fixed.get("lfsr_seed", d.lfsr_seed)}


def _train_config(settings: dict, seed: int):
    """The training configuration of one seed (checked trainable)."""
    from .model import DATASET_SHAPES, Config

    fields = dict(settings["train"])
    if "h" in fields:
        if "T" in fields:
            raise ValueError("give train.T or train.h, not both")
        fields["T"] = fields.pop("h") * fields.get("steps", Config().steps)
    dataset = fields.get("dataset", "digits")
    if dataset in DATASET_SHAPES:
        fields["image_shape"] = DATASET_SHAPES[dataset]
    if fields.get("precision", "float64") == "fixed":
        fields.update(_arithmetic(settings["fixed"]))
    config = Config(**fields, seed=seed)
    config.check_trainable()
    return config


def _evaluation(settings: dict, trained) -> dict:
    """The arithmetic the trained network is evaluated in (default: the training's)."""
    precision = settings["evaluate"].get("precision", trained.precision)
    if precision == "float64":
        arithmetic = {"precision": "float64"}
    elif precision == "fixed":
        arithmetic = _arithmetic(settings["fixed"])
    else:
        raise ValueError(f"evaluate.precision must be 'float64' or 'fixed', not {precision!r}")
    dataclasses.replace(trained, **arithmetic)      # refused here, not on a worker
    return arithmetic


def _core_config(settings: dict, trained):
    """The core of the point: its network the training's, its arithmetic ``fixed``'s."""
    from .model.core_config import CoreConfig

    fixed = settings["fixed"]
    extra = {name: fixed[name] for name in ("acc_width", "rounding", "lfsr_seed",
                                            "fourier_data", "twiddle", "spectrum")
             if name in fixed}
    return CoreConfig(image=trained.image_shape, structure=trained.structure,
                      kernel=trained.kernel_size, classes=trained.classes, steps=trained.steps,
                      h=trained.h, method=trained.method, **_formats(fixed), **extra,
                      **settings["core"])


def _core_fields(core) -> dict:
    """The core's fields, without the ``[device]`` table's while it is all off: the content
    hash of a point's hardware tasks stays what it was before the table existed."""
    from .model.core_config import CoreConfig

    fields = dataclasses.asdict(core)
    if core.device() is None:
        for name in CoreConfig.DEVICE_FIELDS:
            del fields[name]
    return fields


def _section(settings: dict, name: str, defaults: dict) -> dict:
    return {**defaults, **settings[name]}


def _resolve(spec, point) -> dict:
    """The point's configurations: ``trained`` (per seed), ``evaluation`` (the arithmetic),
    ``core`` (the core's fields) and the ``simulate`` and ``synth`` options."""
    from .model import load_dataset

    trained = {seed: _train_config(point.settings, seed) for seed in spec.seeds}
    first = trained[spec.seeds[0]]
    resolved = {"trained": trained,
                "evaluation": _evaluation(point.settings, first)
                if "evaluate" in spec.stages else None,
                "core": _core_fields(_core_config(point.settings, first))
                if {"simulate", "synth"} & set(spec.stages) else None,
                "simulate": _section(point.settings, "simulate", SIMULATE_DEFAULTS),
                "synth": _section(point.settings, "synth", SYNTH_DEFAULTS)}
    if "simulate" in spec.stages:
        available, images = len(load_dataset(first.dataset).y_test), \
            resolved["simulate"]["images"]
        if not isinstance(images, int) or not 1 <= images <= available:
            raise ValueError(f"simulate.images must be between 1 and {available}, not "
                             f"{images!r}")
    return resolved


def _tasks(spec, point, resolved: dict, add) -> None:
    """The point's tasks (:func:`xbarode.sweep.add_task`): per seed a training and an
    evaluation, the first seed's simulation, the core's synthesis."""
    for seed, config in resolved["trained"].items():
        if "train" in spec.stages:
            key = point.tasks[f"train/{seed}"] = add("train", {"config": config.to_dict()})
        if resolved["evaluation"] is not None:
            point.tasks[f"evaluate/{seed}"] = add(
                "evaluate", {"arithmetic": resolved["evaluation"]}, [key])
    if "simulate" in spec.stages:
        point.tasks["simulate"] = add(
            "simulate", {"core": resolved["core"], **resolved["simulate"]},
            [point.tasks[f"train/{spec.seeds[0]}"]], extra={})
    if "synth" in spec.stages:
        synth = dict(resolved["synth"])
        timeout = synth.pop("timeout")
        point.tasks["synth"] = add("synth", {"core": resolved["core"], **synth},
                                   extra={"timeout": timeout})


def _check(spec) -> None:
    for stage in ("evaluate", "simulate"):
        if stage in spec.stages and "train" not in spec.stages:
            raise ValueError(f"the stage {stage} needs the stage train (stages = "
                             f"{list(spec.stages)})")


# --- the stages, on the workers -------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def _dataset(name: str):
    from .model import load_dataset

    return load_dataset(name)


def train_stage(inputs: dict, extra: dict) -> dict:
    """``train``: the configuration ``inputs["config"]`` trained; its ``arrays`` are the
    parameters, ``summary`` :func:`xbarode.model.train`'s."""
    from .model import Config, train

    config = Config.from_dict(inputs["config"])
    params, summary = train(config, _dataset(config.dataset))
    return {"config": inputs["config"], "arrays": params, "summary": summary}


def evaluate_stage(inputs: dict, extra: dict, trained: dict) -> dict:
    """``evaluate``: test accuracy and saturated words of the trained network in
    ``inputs["arithmetic"]``."""
    from .model import Config
    from .study_precision import test_figures

    config = dataclasses.replace(Config.from_dict(trained["config"]), **inputs["arithmetic"])
    accuracy, overflows = test_figures(config, trained["arrays"], _dataset(config.dataset))
    return {"test_accuracy": accuracy, "overflows": overflows}


def simulate_stage(inputs: dict, extra: dict, trained: dict) -> dict:
    """``simulate``: the first ``images`` test images through the core's RTL and the
    fixed-point model (``xbarode simulate``'s figures)."""
    from .model import Config
    from .model.core_config import CoreConfig
    from .simulate import check_weights, simulate_core

    core = CoreConfig(**inputs["core"])
    config = Config.from_dict(trained["config"])
    check_weights(config, core, "of the point's training")
    data = _dataset(config.dataset)
    n = inputs["images"]
    result = simulate_core(core, trained["arrays"], data.x_test[:n], data.y_test[:n],
                           simulator=inputs["simulator"], out_dir=attempt_folder(extra),
                           batch=inputs["batch"])
    keep = ("images", "agreement", "mismatches", "compared", "first_mismatch", "accuracy",
            "model_accuracy", "cycles_per_image", "mac_bound_cycles", "cycles_ratio",
            "waveform", "seconds", "build_seconds")
    return {key: result[key] for key in keep}


def synth_stage(inputs: dict, extra: dict) -> dict:
    """``synth``: the core synthesised, placed and routed (``xbarode synth core``)."""
    from .bench import _logic_cells
    from .model.core_config import CoreConfig
    from .units import UNITS, CoreParams, synth

    report = synth(UNITS["core"], CoreParams(CoreConfig(**inputs["core"])),
                   device=inputs["device"], out=attempt_folder(extra), freq_mhz=inputs["freq"],
                   seed=inputs["seed"], router=inputs["router"], timeout=extra["timeout"])
    keep = ("luts", "carry", "lutram", "ffs", "mult18", "ebr", "fmax_mhz", "yosys_seconds",
            "nextpnr_seconds", "files")
    return {**{key: report[key] for key in keep}, "logic_cells": _logic_cells(report)}


# --- a point's figures ----------------------------------------------------------------------

#: Figure columns per stage (``us_per_inference`` needs simulate and synth).
STAGE_COLUMNS = {
    "train": ("seeds", "test_accuracy_mean", "test_accuracy_std", "train_accuracy_mean",
              "train_overflows_mean"),
    "evaluate": ("eval_overflows_mean",),
    "simulate": ("rtl_images", "rtl_accuracy", "rtl_agreement", "rtl_mismatches",
                 "cycles_per_inference", "mac_bound_cycles"),
    "synth": ("luts", "carry", "ffs", "ebr", "mult18", "logic_cells", "fmax_mhz"),
}


def _columns(spec) -> list[str]:
    columns = [c for stage in spec.stages for c in STAGE_COLUMNS[stage]]
    if {"simulate", "synth"} <= set(spec.stages):
        columns.append("us_per_inference")
    return columns


def seed_runs(spec, values: dict) -> list[dict]:
    """Per seed whose stages all succeeded: ``seed``, ``test_accuracy`` (the evaluation's, or
    the training's), ``trained_test_accuracy``, ``train_accuracy``, ``train_overflows``
    (saturated words during training) and ``eval_overflows`` (during the evaluation)."""
    runs = []
    for seed in spec.seeds:
        trained, evaluated = values.get(f"train/{seed}"), values.get(f"evaluate/{seed}")
        if trained is None or ("evaluate" in spec.stages and evaluated is None):
            continue
        summary = trained["summary"]
        runs.append({"seed": seed, "test_accuracy": (evaluated or summary)["test_accuracy"],
                     "trained_test_accuracy": summary["test_accuracy"],
                     "train_accuracy": summary["train_accuracy"],
                     "train_overflows": summary["overflows"],
                     "eval_overflows": evaluated["overflows"] if evaluated else None})
    return runs


def _row(spec, point, records: dict) -> dict:
    from .study_precision import seed_statistics

    values, errors = point_values(point, records)
    row = dict.fromkeys(_columns(spec))
    runs = seed_runs(spec, values)
    if runs:
        stats = seed_statistics([r["test_accuracy"] for r in runs],
                                [r["train_overflows"] for r in runs])
        row.update(seeds=len(runs), test_accuracy_mean=stats["mean"],
                   test_accuracy_std=stats["std"],
                   train_accuracy_mean=mean_or_none(r["train_accuracy"] for r in runs),
                   train_overflows_mean=stats["overflows"])
        if "evaluate" in spec.stages:
            row["eval_overflows_mean"] = mean_or_none(r["eval_overflows"] for r in runs)
    sim = values.get("simulate")
    if sim is not None:
        row.update(rtl_images=sim["images"], rtl_accuracy=sim["accuracy"],
                   rtl_agreement=sim["agreement"], rtl_mismatches=sim["mismatches"],
                   cycles_per_inference=sim["cycles_per_image"],
                   mac_bound_cycles=sim["mac_bound_cycles"])
        if sim["mismatches"]:
            errors.append(f"simulate: {sim['mismatches']} words and flags differ from the "
                          f"model; first: {sim['first_mismatch']}")
    hardware = values.get("synth")
    if hardware is not None:
        row.update({key: hardware[key] for key in STAGE_COLUMNS["synth"]})
    if "us_per_inference" in row and sim is not None and hardware is not None \
            and hardware["fmax_mhz"]:
        row["us_per_inference"] = sim["cycles_per_image"] / hardware["fmax_mhz"]
    row["runs"] = runs
    row["error"] = "; ".join(dict.fromkeys(errors)) or None
    return row


# --- the precision study's report -----------------------------------------------------------

def _precision_kind(point) -> str:
    trained = point.settings["train"].get("precision", "float64")
    evaluated = point.settings["evaluate"].get("precision", trained)
    return {("float64", "float64"): "float64", ("fixed", "fixed"): "fixed",
            ("float64", "fixed"): "ptq"}.get((trained, evaluated), "other")


def precision_report(spec, points, records: dict, seconds: float) -> dict:
    """The precision study's result (:func:`xbarode.study_precision.precision_result`) from
    a sweep of its runs: float64 training, fixed-point training and post-training
    quantisation (float64 training, fixed-point evaluation) at each ``fixed.width`` with
    nearest and stochastic rounding, as the shipped ``precision`` spec has them.

    Raises
    ------
    ValueError
        When a run the study's table needs failed or is not in the sweep.
    """
    from .study_precision import STUDY_ROUNDINGS, precision_result

    if {"train", "evaluate"} - set(spec.stages):
        raise ValueError("the precision report needs the stages train and evaluate")
    raw, widths = [], []
    for point in points:
        kind = _precision_kind(point)
        values, errors = point_values(point, records)
        runs = seed_runs(spec, values)
        if kind == "other" or errors or len(runs) != len(spec.seeds):
            raise ValueError(f"the precision report needs every point's runs: "
                             f"{'; '.join(errors) or f'a {kind} point'}")
        fixed = point.settings["fixed"]
        for run in runs:
            entry = {"kind": kind, "seed": run["seed"]}
            if kind == "float64":
                entry.update(test_accuracy=run["trained_test_accuracy"], overflows=0)
            else:
                widths += [] if fixed.get("width") in widths else [fixed.get("width")]
                entry.update(width=fixed.get("width"), rounding=fixed.get("rounding"),
                             formats=_formats(fixed))
                if kind == "fixed":     # the training's figures, as the study takes them
                    entry.update(test_accuracy=run["trained_test_accuracy"],
                                 overflows=run["train_overflows"])
                else:
                    entry.update(test_accuracy=run["test_accuracy"],
                                 overflows=run["eval_overflows"])
            raw.append(entry)
    kinds = ("float64", "fixed", "ptq")
    raw.sort(key=lambda r: (kinds.index(r["kind"]) > 0, widths.index(r.get("width"))
                            if r["kind"] != "float64" else 0,
                            STUDY_ROUNDINGS.index(r["rounding"]) if "rounding" in r else 0,
                            kinds.index(r["kind"]), r["seed"]))
    wanted = {("float64", None, None)} | {(k, w, r) for k in kinds[1:] for w in widths
                                          for r in STUDY_ROUNDINGS}
    have = {(r["kind"], r.get("width"), r.get("rounding")) for r in raw}
    if have != wanted:
        raise ValueError(f"the precision report needs float64, and fixed and ptq at every "
                         f"width with {' and '.join(STUDY_ROUNDINGS)} rounding; missing: "
                         f"{sorted(map(str, wanted - have))}, extra: "
                         f"{sorted(map(str, have - wanted))}")
    # The study's base: the float64 training at seed 0.
    base = _train_config(next(p for p in points if _precision_kind(p) == "float64").settings, 0)
    return precision_result(raw, seeds=len(spec.seeds), epochs=base.epochs, widths=widths,
                            base=base, seconds=seconds)


def _write_precision(result: dict, out) -> dict[str, str]:
    from .study_precision import write_report

    return write_report(result, Path(out))


# --- the plot -------------------------------------------------------------------------------

def _plot(spec: dict, rows: list[dict], path) -> None:
    """Accuracy against µs per inference and against logic cells, the Pareto fronts joined;
    without both figures, the main figure against the first numeric axis."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    axes_names = list(dict.fromkeys(a for g in spec["grids"].values() for a in g))
    pairs = [(cost, label) for cost, label in (("us_per_inference", "µs per inference"),
                                               ("logic_cells", "logic cells (TRELLIS_COMB)"))
             if any(r.get(cost) is not None and r.get("test_accuracy_mean") is not None
                    for r in rows)]
    fig, axes = plt.subplots(1, max(len(pairs), 1), figsize=(6.4 * max(len(pairs), 1), 4.2),
                             dpi=120, squeeze=False)
    for ax, (cost, label) in zip(axes[0], pairs, strict=False):
        points = [(r[cost], 100 * r["test_accuracy_mean"], r.get(f"pareto_{cost}"), r)
                  for r in rows if r.get(cost) is not None
                  and r.get("test_accuracy_mean") is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], "o", color="0.6",
                label="points")
        front = sorted((p for p in points if p[2]), key=lambda p: p[0])
        ax.plot([p[0] for p in front], [p[1] for p in front], "o-", color="C3",
                label="Pareto front")
        for x, y, _, row in front:          # what each point on the front is
            ax.annotate(", ".join(f"{axis.partition('.')[2]} {row.get(axis)}"
                                  for axis in axes_names if row.get(axis) is not None),
                        (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if not pairs:
        ax = axes[0][0]
        figure, label, scale = next(
            ((f, label, scale) for f, label, scale in (
                ("test_accuracy_mean", "test accuracy (%)", 100.0),
                ("logic_cells", "logic cells (TRELLIS_COMB)", 1.0),
                ("cycles_per_inference", "cycles per inference", 1.0))
             if any(r.get(f) is not None for r in rows)), (None, None, 1.0))
        x = numeric_axis(spec, rows)
        series = [a for g in spec["grids"].values() for a in g if a != x]
        if figure is not None and x is not None and plot_lines(
                ax, rows, x, figure, ["grid", *dict.fromkeys(series)], scale=scale):
            ax.set_xlabel(x)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "nothing to plot", transform=ax.transAxes, ha="center")
    fig.suptitle(f"sweep {spec['name']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


NETWORK = Kind(
    name="network", sections=SECTIONS, stages=("train", "evaluate", "simulate", "synth"),
    functions={"train": train_stage, "evaluate": evaluate_stage, "simulate": simulate_stage,
               "synth": synth_stage},
    resources={"synth": {"synth": 1}},
    # The long tasks first: a synthesis takes minutes to an hour, a simulation minutes.
    priority={"synth": 30, "simulate": 20, "train": 10, "evaluate": 10},
    resolve=_resolve, tasks=_tasks, columns=_columns, row=_row,
    pareto=(("test_accuracy_mean", "us_per_inference"), ("test_accuracy_mean", "logic_cells")),
    reports={"precision": (precision_report, _write_precision)}, plot=_plot, check=_check,
    seeds=True)
