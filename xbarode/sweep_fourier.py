"""The ``fourier`` kind of sweep point: the Fourier path against the direct tile for S×S
images, as ``xbarode study fourier`` measures them (docs/sweep.md, docs/fourier.md).

A point's sections: ``fourier`` (``size`` S, ``lanes`` per DFT array, ``kernels``: the odd
kernel sizes whose fixed-point error is measured; the smallest also drives the Fourier
unit's simulation and initialises the direct tile's weights, as in the study) and ``synth``
(``device``, ``timeout``). Stages, each a function of :mod:`xbarode.study_fourier`:

- ``simulate``: each path's latency in Amaranth's simulator, checked against its formula
  and the fixed-point model (:func:`~xbarode.study_fourier.simulation_jobs`; the direct
  tile's simulation does not depend on the kernels, so points that differ only there share
  it);
- ``error``: per kernel, both paths' fixed-point error against float64
  (:func:`~xbarode.study_fourier.fixed_point_error`);
- ``synth``: each path's design synthesised, placed and routed for the device
  (``_run_synthesis``), unless the direct tile's weights do not fit its block RAM.
"""

from __future__ import annotations

import time
from pathlib import Path

from .sweep import Kind, attempt_folder, numeric_axis, plot_lines, point_values, points_of

__all__ = ["FOURIER", "error_stage", "simulate_stage", "synth_stage"]

SECTIONS = {"fourier": ("size", "lanes", "kernels"), "synth": ("device", "timeout")}
PATHS = ("fourier", "direct")
#: Each path's figures in the table (``PATH_FIGURE``), from the formulas and the simulation.
FIGURES = ("multipliers", "compute_cycles", "simulated_cycles", "cycles", "macs",
           "multiplier_use", "memory_words", "memory_bits")
SYNTH_FIGURES = ("luts", "carry", "ffs", "mult18", "ebr", "fmax_mhz")


def _settings(spec, point) -> dict:
    """The point's size, lanes, kernels (sorted), device and synthesis timeout, checked as
    the study checks its options."""
    from .study_fourier import SYNTH_TIMEOUT, _check_fourier_args

    fourier = {"lanes": 16, "kernels": [3, 5], **point.settings["fourier"]}
    synth = {"device": "ecp5-85f", "timeout": SYNTH_TIMEOUT, **point.settings["synth"]}
    if "size" not in fourier:
        raise ValueError("fourier.size must be given (in the spec or as an axis)")
    kernels = fourier["kernels"]
    if not isinstance(kernels, list):
        raise ValueError(f"fourier.kernels must be a list of odd sizes, not {kernels!r}")
    kernels = sorted(set(kernels))
    _check_fourier_args([fourier["size"]], kernels, fourier["lanes"], synth["device"])
    return {"size": fourier["size"], "lanes": fourier["lanes"], "kernels": kernels,
            "device": synth["device"], "timeout": synth["timeout"]}


def _tasks(spec, point, s: dict, add) -> None:
    """The point's tasks (:func:`xbarode.sweep.add_task`): each path's simulation, the error
    per kernel, each path's synthesis (when the design fits the device)."""
    from .study_fourier import _synthesis_designs, simulation_jobs

    if "simulate" in spec.stages:
        for path, _, _, args, _ in simulation_jobs(s["size"], s["kernels"][0], s["lanes"],
                                                   s["device"]):
            point.tasks[f"simulate/{path}"] = add("simulate", {"path": path, "args": list(args)})
    if "error" in spec.stages:
        for k in s["kernels"]:
            point.tasks[f"error/{k}"] = add("error", {"size": s["size"], "kernel": k})
    if "synth" in spec.stages:
        for design in _synthesis_designs([s["size"]], s["kernels"], s["lanes"], s["device"]):
            if design["fits"]:
                point.tasks[f"synth/{design['path']}"] = add(
                    "synth", {"design": design, "lanes": s["lanes"], "device": s["device"]},
                    extra={"timeout": s["timeout"]})


def _check(spec) -> None:
    """Nothing beyond the sections and stages: every value is checked per point."""


# --- the stages, on the workers -------------------------------------------------------------

def simulate_stage(inputs: dict, extra: dict) -> dict:
    """``simulate``: one path's product in Amaranth's simulator (cycles, mismatches)."""
    from .study_fourier import simulate_direct, simulate_fourier

    simulate = {"fourier": simulate_fourier, "direct": simulate_direct}[inputs["path"]]
    return simulate(*inputs["args"])


def error_stage(inputs: dict, extra: dict) -> dict:
    """``error``: both paths' fixed-point error for one size and kernel."""
    from .study_fourier import fixed_point_error

    return fixed_point_error(inputs["size"], inputs["kernel"])


def synth_stage(inputs: dict, extra: dict) -> dict:
    """``synth``: one design synthesised, placed and routed; a failed tool raises (not
    cached: a rerun tries again)."""
    from .study_fourier import _run_synthesis

    entry = _run_synthesis(inputs["design"], inputs["lanes"], inputs["device"],
                           attempt_folder(extra), extra["timeout"])
    if entry["status"] != "done":
        raise RuntimeError(entry["message"])
    return entry


# --- a point's figures ----------------------------------------------------------------------

def _kernels(spec) -> list[int]:
    kernels = set()
    for point in points_of(spec):
        value = point.settings["fourier"].get("kernels", [3, 5])
        kernels |= {k for k in value if isinstance(k, int)} if isinstance(value, list) else set()
    return sorted(kernels)


def _columns(spec) -> list[str]:
    columns = []
    if "simulate" in spec.stages or "synth" in spec.stages:
        columns += [f"{path}_{name}" for path in PATHS for name in FIGURES]
        columns.append("direct_fits")
    if "synth" in spec.stages:
        columns += [f"{path}_{name}" for path in PATHS
                    for name in (*SYNTH_FIGURES, "us_per_image")]
    if "error" in spec.stages:
        columns += [f"k{k}_{name}" for k in _kernels(spec)
                    for name in ("fourier_error_lsb", "direct_error_lsb", "within_bound")]
    return columns


def _row(spec, point, records: dict) -> dict:
    from .study_fourier import size_row

    row = dict.fromkeys(_columns(spec))
    values, errors = point_values(point, records)
    if point.error is None and ("simulate" in spec.stages or "synth" in spec.stages):
        s = _settings(spec, point)
        sims = {path: values[f"simulate/{path}"] for path in PATHS
                if f"simulate/{path}" in values}
        figures, failures = size_row(s["size"], s["lanes"], s["device"], sims)
        errors += failures
        for path in PATHS:
            row.update({f"{path}_{name}": figures[path].get(name) for name in FIGURES})
            entry = values.get(f"synth/{path}")
            if entry is not None:
                row.update({f"{path}_{name}": entry[name] for name in SYNTH_FIGURES})
                row[f"{path}_us_per_image"] = (figures[path]["cycles"] / entry["fmax_mhz"]
                                               if entry["fmax_mhz"] else None)
        row["direct_fits"] = figures["direct"]["fits"]
    for role, value in values.items():
        if role.startswith("error/"):
            k = value["kernel"]
            row.update({f"k{k}_fourier_error_lsb": value["fourier_error_lsb"],
                        f"k{k}_direct_error_lsb": value["direct_error_lsb"],
                        f"k{k}_within_bound": value["within_bound"]})
    row["error"] = "; ".join(dict.fromkeys(errors)) or None
    return row


# --- the Fourier study's report -------------------------------------------------------------

def fourier_report(spec, points, records: dict, seconds: float) -> dict:
    """The Fourier study's result (as :func:`xbarode.study_fourier.fourier_study` returns
    it) from a sweep over ``fourier.size`` with one ``lanes``, ``kernels`` and device.

    Raises
    ------
    ValueError
        When the sweep's points differ in anything but the size, lack the stages simulate
        and error, or a simulation or an error measurement failed (as the study's checks).
    """
    from .study_fourier import (
        _finish,
        _link_synthesis,
        _synthesis_designs,
        initial_synthesis,
        size_row,
        source_state,
        study_params,
    )

    if {"simulate", "error"} - set(spec.stages):
        raise ValueError("the fourier report needs the stages simulate and error")
    by_size, shared = {}, set()
    for point in points:
        values, errors = point_values(point, records, stages=("simulate", "error"))
        if errors:
            raise ValueError(f"the fourier report needs every point measured: "
                             f"{'; '.join(errors)}")
        s = _settings(spec, point)
        shared.add((s["lanes"], tuple(s["kernels"]), s["device"]))
        by_size.setdefault(s["size"], (point, values))
    if len(shared) != 1:
        raise ValueError("the fourier report needs one fourier.lanes, fourier.kernels and "
                         "synth.device for every point")
    ((lanes, kernels, device),) = shared
    sizes, synth = sorted(by_size), "synth" in spec.stages
    result = {"params": study_params(sizes, list(kernels), lanes, device, synth),
              "source": source_state(), "rows": [], "errors": [], "synthesis": {},
              "crossover": {}, "notes": []}
    for size in sizes:
        point, values = by_size[size]
        row, failures = size_row(size, lanes, device, {
            path: values[f"simulate/{path}"] for path in PATHS if f"simulate/{path}" in values})
        if failures:
            raise ValueError("; ".join(failures))
        result["rows"].append(row)
        result["errors"] += [values[f"error/{k}"] for k in kernels]
    designs = _synthesis_designs(sizes, list(kernels), lanes, device)
    result["synthesis"] = initial_synthesis(designs, {}, synth)
    for design in designs:
        key = by_size[design["size"]][0].tasks.get(f"synth/{design['path']}")
        record = records.get(key) if key else None
        if record is not None:
            result["synthesis"][design["key"]] = record["value"] if record["ok"] else {
                "status": "failed", "key": design["key"], "message": record["error"]}
    _link_synthesis(result, designs)
    _finish(result, time.perf_counter() - seconds)
    return result


def _write_fourier(result: dict, out) -> dict[str, str]:
    from .study_fourier import write_fourier_report

    return write_fourier_report(result, Path(out))


def _plot(spec: dict, rows: list[dict], path) -> None:
    """Cycles per image of both paths against the first numeric axis (the size), and µs per
    image at fmax where synthesised."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    x = numeric_axis(spec, rows)
    series = [a for a in dict.fromkeys(a for g in spec["grids"].values() for a in g) if a != x]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    for ax, (figure, unit) in zip(axes, (("cycles", "cycles per image"),
                                         ("us_per_image", "µs per image at fmax")),
                                  strict=True):
        drawn = x is not None and any([plot_lines(ax, rows, x, f"{p}_{figure}", series,
                                                  label=p) for p in PATHS])
        if drawn:
            ax.set_xlabel(x)
            ax.set_ylabel(unit)
            ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, f"{unit}: not measured", transform=ax.transAxes, ha="center")
    fig.suptitle(f"sweep {spec['name']}: Fourier path vs direct tile", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


FOURIER = Kind(
    name="fourier", sections=SECTIONS, stages=("simulate", "error", "synth"),
    functions={"simulate": simulate_stage, "error": error_stage, "synth": synth_stage},
    resources={"synth": {"synth": 1}}, priority={"synth": 30, "simulate": 20, "error": 10},
    resolve=_settings, tasks=_tasks, columns=_columns, row=_row, pareto=(),
    reports={"fourier": (fourier_report, _write_fourier)}, plot=_plot, check=_check,
    seeds=False)
