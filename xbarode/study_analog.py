"""The analog study: what the digits neural ODE needs from a memristor crossbar.

Each device and converter model of :class:`~xbarode.model.device.DeviceModel` is turned on
alone along an *axis* (ADC bits, read noise, programming noise, conductance states, up/down
asymmetry), from mild to severe, and the network's test accuracy is measured for three ways to
arrive at the weights (docs/device.md):

- ``deploy`` (a): a float64 network, trained as usual, loaded into the 16-bit fixed-point
  tiles with the device model on (programming noise and states apply at the load) and
  evaluated there;
- ``aware`` (b): hardware-aware training, the whole fixed-point training (forward, adjoint,
  SGD steps written through the write models) with the device model on, then evaluated with it;
- ``pulsed`` (c): training on the array itself, the SGD steps taken as stochastic pulse trains
  of ``pulses`` slots, with the axis's model on as well.

for explicit and implicit Euler. Asymmetry shapes pulsed updates only, so its axis has
``pulsed`` runs only. Each cell is compared with its *noise-free reference*: for ``deploy``
the float64 network in the ideal fixed-point tiles, for ``aware`` and ``pulsed`` the ideal
fixed-point SGD training, same seeds and solver. The *tolerance* of an axis is the most severe
value whose mean accuracy, and that of every milder value, is within ``tolerance`` (1 pp) of
the reference mean.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from xbarode.model.train import TrainingDiverged
from xbarode.report import write_report_files
from xbarode.study_precision import seed_statistics

__all__ = ["ANALOG_AXES", "ANALOG_METHODS", "ANALOG_SOLVERS", "analog_result", "analog_study",
           "markdown", "plot", "tolerances", "write_report"]

#: Each axis: the DeviceModel field it sets and its values, mildest first.
ANALOG_AXES = {
    "adc_bits": (10, 8, 7, 6, 5, 4),
    "read_noise": (0.001, 0.002, 0.005, 0.01, 0.02),
    "program_noise": (0.001, 0.003, 0.01, 0.03),
    "states": (4096, 1024, 256, 64),
    "asymmetry": (0.01, 0.02, 0.05, 0.1),
}
#: How the weights are arrived at: deployed float64 weights, hardware-aware training, training
#: on the array with pulsed updates.
ANALOG_METHODS = ("deploy", "aware", "pulsed")
#: The solvers compared.
ANALOG_SOLVERS = ("euler", "implicit_euler")
#: Axes that exist only with pulsed updates.
_PULSED_ONLY = ("asymmetry",)


def _check_axes(axes: dict) -> None:
    if not axes:
        raise ValueError("the analog study needs at least one axis")
    for name, values in axes.items():
        if name not in ANALOG_AXES:
            raise ValueError(f"unknown axis {name!r}; choose from {', '.join(ANALOG_AXES)}")
        if not values:
            raise ValueError(f"axis {name!r} has no values")


def _pairs(methods, solvers, implicit_training: bool) -> list[tuple[str, str]]:
    """The ``(method, solver)`` pairs run: implicit Euler trains only when asked."""
    return [(method, solver) for solver in solvers for method in methods
            if solver == "euler" or method == "deploy" or implicit_training]


def _runs(pairs, axes, seeds, pulses) -> list[tuple]:
    """``(method, solver, axis, value, seed)`` for every run: axis None is the noise-free
    reference, axis ``"pulses"`` the pulse trains alone (method ``pulsed``)."""
    runs = []
    for method, solver in pairs:
        reference = "aware" if method == "pulsed" else method
        runs += [(reference, solver, None, None, seed) for seed in range(seeds)
                 if (reference, solver, None, None, seed) not in runs]
        if method == "pulsed":
            runs += [(method, solver, "pulses", pulses, seed) for seed in range(seeds)]
        for axis, values in axes.items():
            if axis in _PULSED_ONLY and method != "pulsed":
                continue
            runs += [(method, solver, axis, value, seed) for value in values
                     for seed in range(seeds)]
    return runs


def _device(method: str, axis: str | None, value, pulses: int, adc_range: float):
    from xbarode.model.device import DeviceModel

    # Read noise is a fraction of the ADC's range: both axes see the same converter.
    fields = {"adc_range": adc_range} if axis in ("adc_bits", "read_noise") else {}
    if axis not in (None, "pulses"):
        fields[axis] = value
    if method == "pulsed":
        fields["pulses"] = pulses
    device = DeviceModel(**fields)
    return None if device.off else device


def analog_study(*, seeds: int = 3, epochs: int = 30, methods=ANALOG_METHODS,
                 solvers=ANALOG_SOLVERS, axes=None, pulses: int = 32, adc_range: float = 0.25,
                 implicit_training: bool = False, progress=None,
                 dataset: str = "digits") -> dict:
    """Run the study; returns a JSON-ready dict (see :func:`analog_result`).

    Parameters
    ----------
    seeds : int
        Training seeds 0 … seeds-1 (>= 1; >= 2 for a standard deviation). The device's
        generators are seeded from the configuration's LFSR seed, the same for every run.
    epochs : int
        Epochs of every training run.
    methods : sequence of str
        A subset of :data:`ANALOG_METHODS`.
    solvers : sequence of str
        A subset of :data:`ANALOG_SOLVERS`.
    axes : dict, optional
        Axis name → values, mildest first (default :data:`ANALOG_AXES`).
    pulses : int
        Slots ``BL`` of a pulse train in the ``pulsed`` runs (a power of two).
    adc_range : float
        The ADC's clipping range along the ``adc_bits`` and ``read_noise`` axes (a fraction
        of the output format's full scale, a power of two; read noise is a fraction of it;
        docs/device.md).
    implicit_training : bool
        Also train (``aware``, ``pulsed``) with implicit Euler. Off by default: under
        stochastic rounding Newton's residual rarely settles to one LSB, so every step runs
        its ``max_iter`` iterations and a fixed-point training run costs about 50 times an
        explicit one; ``deploy`` runs implicit Euler either way.
    progress : callable, optional
        Wraps the list of runs (e.g. ``tqdm.tqdm``).
    dataset : str
        The data set (``"digits"`` or ``"mnist5k"``).

    Raises
    ------
    ValueError
        An unknown method, solver or axis, an axis without values, or a value the device
        model refuses (before any run starts).
    """
    from xbarode.model import DATASET_SHAPES, Config, load_dataset, train

    axes = dict(ANALOG_AXES if axes is None else axes)
    _check_axes(axes)
    for name, allowed, given in (("method", ANALOG_METHODS, methods),
                                 ("solver", ANALOG_SOLVERS, solvers)):
        bad = [g for g in given if g not in allowed] or ([] if given else ["(none)"])
        if bad:
            raise ValueError(f"unknown {name} {bad[0]!r}; choose from {', '.join(allowed)}")
    pairs = _pairs(methods, solvers, implicit_training)
    runs = _runs(pairs, axes, seeds, pulses)
    for method, _, axis, value, _ in runs:       # every device model is valid before any run
        _device(method, axis, value, pulses, adc_range)

    start = time.perf_counter()
    # Newton as the core runs it (8 Neumann terms, at most 10 iterations), not the float64
    # defaults: the fixed-point iteration stops at one LSB or at max_iter.
    base = Config(epochs=epochs, dataset=dataset, image_shape=DATASET_SHAPES.get(dataset, (8, 8)),
                  neumann_terms=8, max_iter=10)
    data = load_dataset(dataset)
    float_params: dict = {}
    raw = []
    for method, solver, axis, value, seed in progress(runs) if progress else runs:
        config = dataclasses.replace(base, seed=seed, method=solver)
        fixed = dataclasses.replace(config, precision="fixed",
                                    device=_device(method, axis, value, pulses, adc_range))
        entry = {"method": method, "solver": solver, "axis": axis, "value": value,
                 "seed": seed, "test_accuracy": None, "overflows": None}
        try:
            if method == "deploy":
                if (solver, seed) not in float_params:
                    float_params[solver, seed] = _train_or_error(config, data)
                if isinstance(float_params[solver, seed], str):
                    raise TrainingDiverged(float_params[solver, seed])
                acc, overflows = _test_figures(fixed, float_params[solver, seed], data)
            else:
                _, summary = train(fixed, data)
                acc, overflows = summary["test_accuracy"], summary["overflows"]
            entry.update(test_accuracy=acc, overflows=overflows)
        except TrainingDiverged as error:    # a run that diverged is a result, not a crash
            entry["diverged"] = str(error)
        raw.append(entry)
    return analog_result(raw, seeds=seeds, epochs=epochs, pairs=pairs, axes=axes,
                         pulses=pulses, adc_range=adc_range, base=base,
                         seconds=time.perf_counter() - start)


def _train_or_error(config, data):
    """The float64 weights of ``config``, or the message of its divergence."""
    from xbarode.model import train

    try:
        return train(config, data)[0]
    except TrainingDiverged as error:
        return str(error)


def _test_figures(config, params, data) -> tuple[float, int]:
    from xbarode.study_precision import test_figures

    return test_figures(config, params, data)


def tolerances(table: dict, *, pairs, axes, tolerance: float = 0.01,
               pulses: int | None = None) -> dict:
    """Per ``method/solver/axis``: the most severe value within ``tolerance`` of the reference.

    A value counts when its mean accuracy, and that of every milder value on the axis, is at
    least the reference mean minus ``tolerance``. Each entry is ``{"value": v or None, "all":
    bool}``: ``value`` None when even the mildest value falls short, ``all`` True when every
    value tested is within (the true limit may lie beyond). With ``pulses`` (the trains'
    slots) the pulsed runs are also judged against the pulse trains alone (the cell
    ``pulsed/SOLVER/pulses/BL``), as ``pulsed/SOLVER/AXIS/vs-pulses``: what the device model
    adds to what training by pulses costs anyway.
    """
    def limit(method, solver, axis, values, reference):
        best = None
        for value in values:
            mean = table[f"{method}/{solver}/{axis}/{value}"]["mean"]
            if mean is None or reference["mean"] is None or \
                    mean < reference["mean"] - tolerance:
                break            # every run diverged: a miss
            best = value
        return {"value": best, "all": best == values[-1]}

    found = {}
    for method, solver in pairs:
        reference = table[f"{'aware' if method == 'pulsed' else method}/{solver}/reference"]
        for axis, values in axes.items():
            if axis in _PULSED_ONLY and method != "pulsed":
                continue
            found[f"{method}/{solver}/{axis}"] = limit(method, solver, axis, values, reference)
            if method == "pulsed" and pulses is not None:
                found[f"{method}/{solver}/{axis}/vs-pulses"] = limit(
                    method, solver, axis, values, table[f"pulsed/{solver}/pulses/{pulses}"])
    return found


def analog_result(raw: list[dict], *, seeds: int, epochs: int, pairs, axes: dict,
                  pulses: int, adc_range: float, base, seconds: float) -> dict:
    """The study's result from its runs (what :func:`analog_study` returns).

    Parameters
    ----------
    raw : list of dict
        One per run: ``method``, ``solver``, ``axis`` and ``value`` (both None for a reference
        run), ``seed``, ``test_accuracy``, ``overflows`` (saturated and clipped words).
    seeds, epochs, axes, pulses, adc_range
        The study's parameters; every cell they imply needs runs in ``raw``.
    pairs : sequence of (str, str)
        The ``(method, solver)`` pairs run.
    base : xbarode.model.Config
        The float64 configuration the runs started from.
    seconds : float
        The study's time.

    Returns
    -------
    dict
        ``table`` (``METHOD/SOLVER/reference``, ``pulsed/SOLVER/pulses/BL`` and
        ``METHOD/SOLVER/AXIS/VALUE`` → mean, std, overflows, runs; but for the reference
        also ``delta``, the paired difference from it: mean and standard error), ``tolerances``
        (:func:`tolerances`), the parameters, ``runs`` and ``seconds``.
    """
    def cell(**match):
        chosen = [r for r in raw if all(r.get(k) == v for k, v in match.items())]
        if not chosen:
            raise ValueError(f"no runs for {match}")
        done = [r for r in chosen if r["test_accuracy"] is not None]
        stats = (seed_statistics([r["test_accuracy"] for r in done],
                                 [r["overflows"] for r in done]) if done else
                 {"mean": None, "std": None, "overflows": None, "runs": 0})
        return {**stats, "diverged": len(chosen) - len(done)}

    table = {}
    for method, solver, axis, value, _ in _runs(pairs, axes, 1, pulses):
        key = f"{method}/{solver}/" + ("reference" if axis is None else f"{axis}/{value}")
        table[key] = cell(method=method, solver=solver, axis=axis, value=value)
        if axis is not None:
            table[key]["delta"] = _paired_delta(raw, method, solver, axis, value)
    return {"seeds": seeds, "epochs": epochs, "pairs": [list(p) for p in pairs],
            "axes": {k: list(v) for k, v in axes.items()},
            "pulses": pulses, "adc_range": adc_range, "config": base.to_dict(),
            "table": table,
            "tolerances": tolerances(table, pairs=pairs, axes=axes, pulses=pulses),
            "runs": raw, "seconds": seconds}


def _paired_delta(raw: list[dict], method: str, solver: str, axis: str, value) -> dict:
    """A cell's accuracy minus its reference's, seed by seed (the same training seed and
    solver): ``mean`` and ``sem``, the standard error of that mean (0 for one seed). Pairing
    takes out what a seed does to both runs; what the device model does to a seed's
    training trajectory remains."""
    reference = "aware" if method == "pulsed" else method
    by_seed = {r["seed"]: r["test_accuracy"] for r in raw
               if (r["method"], r["solver"], r["axis"]) == (reference, solver, None)}
    diffs = np.array([r["test_accuracy"] - by_seed[r["seed"]] for r in raw
                      if (r["method"], r["solver"], r["axis"], r["value"]) ==
                      (method, solver, axis, value) and r["test_accuracy"] is not None
                      and by_seed.get(r["seed"]) is not None])
    if not len(diffs):          # every run (or its reference) diverged
        return {"mean": None, "sem": None}
    sem = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else 0.0
    return {"mean": float(diffs.mean()), "sem": sem}


_METHOD_TITLES = {"deploy": "(a) deployed float64 weights",
                  "aware": "(b) hardware-aware training",
                  "pulsed": "(c) training on the array, pulsed updates"}


def _pct(c: dict) -> str:
    text = "diverged" if c["mean"] is None else f"{100 * c['mean']:.2f} ± {100 * c['std']:.2f}"
    return text + (f" ({c['diverged']} of {c['runs'] + c['diverged']} diverged)"
                   if c.get("diverged") and c["mean"] is not None else "")


def _delta(c: dict) -> str:
    d = c["delta"]
    return "—" if d["mean"] is None else f"{100 * d['mean']:+.2f} ± {100 * d['sem']:.2f}"


def _limit(entry: dict, values) -> str:
    if entry["value"] is None:
        return f"none (< {values[0]})"
    return f"{entry['value']}" + (" (all tested)" if entry["all"] else "")


def markdown(result: dict) -> str:
    """The study's tables in Markdown: one per method and solver, then the tolerances."""
    t, axes = result["table"], result["axes"]
    lines = [f"Test accuracy (%, mean ± std over {result['seeds']} seeds, {result['epochs']} "
             f"epochs of SGD, 16-bit formats; pulse trains of {result['pulses']} slots; ADC "
             f"range {result['adc_range']} of full scale); overflows = mean saturated or "
             f"clipped words per run; Δ = the mean over seeds of (cell − the reference run "
             f"of the same seed) ± its standard error.", ""]
    for method, solver in result["pairs"]:
        reference = t[f"{'aware' if method == 'pulsed' else method}/{solver}/reference"]
        lines += [f"### {_METHOD_TITLES[method]}, {solver}", "",
                  f"noise-free reference: {_pct(reference)}", ""]
        if method == "pulsed":
            alone = t[f"pulsed/{solver}/pulses/{result['pulses']}"]
            lines += [f"pulse trains alone: {_pct(alone)}, Δ {_delta(alone)} pp", ""]
        lines += ["| axis | value | accuracy | Δ (pp) | overflows |", "|---|---|---|---|---|"]
        for axis, values in axes.items():
            for value in values:
                c = t.get(f"{method}/{solver}/{axis}/{value}")
                if c is not None:
                    overflows = "—" if c["overflows"] is None else f"{c['overflows']:.0f}"
                    lines.append(f"| {axis} | {value} | {_pct(c)} | {_delta(c)} | "
                                 f"{overflows} |")
        lines.append("")
    lines += ["### Within 1 pp of the noise-free reference", "",
              "| method | solver | " + " | ".join(axes) + " |",
              "|---|---|" + "---|" * len(axes)]
    for method, solver in result["pairs"]:
        for suffix, label in (("", method), ("/vs-pulses", f"{method} (vs pulse trains alone)")):
            if f"{method}/{solver}/{next(iter(axes))}{suffix}" not in result["tolerances"]:
                continue
            cells = [_limit(result["tolerances"][key], axes[axis])
                     if (key := f"{method}/{solver}/{axis}{suffix}") in result["tolerances"]
                     else "—" for axis in axes]
            lines.append(f"| {label} | {solver} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Fewest bits and states, largest noise and asymmetry at which every milder "
                 "value also stays within 1 pp; `none` when even the mildest value does not. "
                 "The pulsed runs are judged against ideal fixed-point training and, on the "
                 "row after, against the pulse trains alone.")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """One panel per axis: accuracy against the value, a line per method and solver."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    t, axes = result["table"], result["axes"]
    fig, panels = plt.subplots(1, len(axes), figsize=(3.2 * len(axes), 3.4), dpi=110,
                               squeeze=False)
    styles = {"deploy": "o", "aware": "s", "pulsed": "^"}
    # One colour per method and solver in every panel (the colour cycle restarts per panel).
    colours = {pair: f"C{k}" for k, pair in enumerate(map(tuple, result["pairs"]))}
    for ax, (axis, values) in zip(panels[0], axes.items(), strict=True):
        positions = np.arange(len(values))
        for method, solver in result["pairs"]:
            cells = [t.get(f"{method}/{solver}/{axis}/{v}") for v in values]
            if cells[0] is None:
                continue
            # A cell whose every run diverged is left out of its line (NaN).
            ax.errorbar(positions, [np.nan if c["mean"] is None else 100 * c["mean"]
                                    for c in cells],
                        yerr=[np.nan if c["std"] is None else 100 * c["std"] for c in cells],
                        fmt=styles[method] + ("-" if solver == "euler" else "--"),
                        color=colours[method, solver], capsize=2, label=f"{method}, {solver}")
        ax.set_xticks(positions, [str(v) for v in values])
        ax.set_xlabel(f"{axis} (milder left)")
        ax.grid(alpha=0.3)
    panels[0][0].set_ylabel(f"{result['config'].get('dataset', 'digits')} test accuracy (%)")
    panels[0][0].legend(fontsize=6, loc="lower left")     # the panel with every line
    fig.suptitle("Neural ODE on a non-ideal crossbar: accuracy against each device model")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(result: dict, out: Path) -> dict[str, str]:
    """Write ``analog.md``, ``analog.json`` and ``analog.png`` into ``out`` (each atomically);
    returns the paths written."""
    return write_report_files(out, "analog", result, markdown(result), plot)
