"""The precision study: digits accuracy against word width and rounding (Gupta et al. 2015).

For each seed, a float64 network is trained (SGD, the same settings as the fixed-point runs).
Then for each width and rounding mode:

- *fixed-point training*: the whole training (forward, adjoint, SGD update) in the integer
  model with that width (formats ``width - INT_BITS[class]`` fractional bits per class);
- *post-training quantisation* (PTQ): the float64 network of the same seed, quantised to those
  formats and evaluated in the integer model with that rounding.

Reported per cell: test accuracy mean ± sample standard deviation over the seeds, and the mean
number of saturated words (training for fixed-point training, inference for PTQ).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from xbarode.report import write_report_files

__all__ = ["DEFAULT_WIDTHS", "STUDY_ROUNDINGS", "markdown", "plot", "precision_result",
           "precision_study", "seed_statistics", "test_figures", "write_report"]

#: Widths of the study, widest first.
DEFAULT_WIDTHS = (16, 12, 10, 8)
#: Rounding modes compared.
STUDY_ROUNDINGS = ("nearest", "stochastic")


def precision_study(*, seeds: int = 3, epochs: int = 30, widths=DEFAULT_WIDTHS,
                    progress=None, dataset: str = "digits") -> dict:
    """Run the study; returns a JSON-ready dict (see :func:`write_report` for the layout).

    Parameters
    ----------
    seeds : int
        Training seeds 0 … seeds-1 (>= 1; >= 2 for a standard deviation).
    epochs : int
        Epochs of every training run.
    widths : sequence of int
        Word widths.
    progress : callable, optional
        Wraps the list of runs (e.g. ``tqdm.tqdm``).
    dataset : str
        The data set (``"digits"`` or ``"mnist5k"``); the network's image is its image.
    """
    from xbarode.model import DATASET_SHAPES, Config, load_dataset, train
    from xbarode.model.fixed_net import formats_for_width

    start = time.perf_counter()
    base = Config(epochs=epochs, dataset=dataset, image_shape=DATASET_SHAPES.get(dataset, (8, 8)))
    data = load_dataset(dataset)
    runs = [("float64", None, None, seed) for seed in range(seeds)]
    runs += [(kind, width, rounding, seed) for width in widths for rounding in STUDY_ROUNDINGS
             for kind in ("fixed", "ptq") for seed in range(seeds)]
    float_params = {}
    raw = []
    for kind, width, rounding, seed in progress(runs) if progress else runs:
        config = dataclasses.replace(base, seed=seed)
        if kind == "float64":
            params, summary = train(config, data)
            float_params[seed] = params
            raw.append({"kind": kind, "seed": seed, "test_accuracy": summary["test_accuracy"],
                        "overflows": 0})
            continue
        formats = formats_for_width(width).as_strings()
        config = dataclasses.replace(
            config, precision="fixed", rounding=rounding, weight_format=formats["weight"],
            state_format=formats["state"], act_format=formats["act"],
            grad_format=formats["grad"])
        if kind == "fixed":
            _, summary = train(config, data)
            acc, overflows = summary["test_accuracy"], summary["overflows"]
        else:
            acc, overflows = test_figures(config, float_params[seed], data)
        raw.append({"kind": kind, "width": width, "rounding": rounding, "seed": seed,
                    "formats": formats, "test_accuracy": acc, "overflows": overflows})

    return precision_result(raw, seeds=seeds, epochs=epochs, widths=widths, base=base,
                            seconds=time.perf_counter() - start)


def test_figures(config, params: dict, data) -> tuple[float, int]:
    """Test accuracy of ``params`` in ``config``'s arithmetic (post-training quantisation
    when the network was trained in another) and the words its inference of the test set
    saturated (0 in float64)."""
    from xbarode.model import accuracy

    sites: dict = {}
    acc = accuracy(config, params, data.x_test, data.y_test, overflow=sites)
    return acc, sum(sites.values())


def seed_statistics(accuracies, overflows) -> dict:
    """One cell of the table: ``mean`` and ``std`` (the sample standard deviation; 0 for one
    run) of the accuracies, ``overflows`` (the mean of the saturation counts) and ``runs``."""
    accs = np.array(accuracies, dtype=float)
    return {"mean": float(accs.mean()), "std": float(accs.std(ddof=1)) if len(accs) > 1
            else 0.0, "overflows": float(np.mean(overflows)), "runs": len(accs)}


def precision_result(raw: list[dict], *, seeds: int, epochs: int, widths, base,
                     seconds: float) -> dict:
    """The study's result from its runs (what :func:`precision_study` returns).

    Parameters
    ----------
    raw : list of dict
        One per run: ``kind`` (``"float64"``, ``"fixed"`` or ``"ptq"``), ``seed``,
        ``test_accuracy``, ``overflows`` and, but for float64, ``width``, ``rounding`` and
        ``formats``.
    seeds, epochs, widths
        The study's parameters; every kind, width and rounding needs runs in ``raw``.
    base : xbarode.model.Config
        The float64 configuration the runs started from.
    seconds : float
        The study's time.
    """
    def cell(**match):
        chosen = [r for r in raw if all(r.get(k) == v for k, v in match.items())]
        return seed_statistics([r["test_accuracy"] for r in chosen],
                               [r["overflows"] for r in chosen])

    table = {"float64": cell(kind="float64")}
    for width in widths:
        for rounding in STUDY_ROUNDINGS:
            for kind in ("fixed", "ptq"):
                table[f"{kind}/{width}/{rounding}"] = cell(kind=kind, width=width,
                                                           rounding=rounding)
    return {"seeds": seeds, "epochs": epochs, "widths": list(widths),
            "roundings": list(STUDY_ROUNDINGS), "config": base.to_dict(), "table": table,
            "runs": raw, "seconds": seconds}


#: How the precision study's table names each data set.
_DATASET_TITLES = {"digits": "Digits", "mnist5k": "mnist5k"}


def _pct(c: dict) -> str:
    return f"{100 * c['mean']:.2f} ± {100 * c['std']:.2f}"


def markdown(result: dict) -> str:
    """The study's table in Markdown."""
    t = result["table"]
    lines = [
        f"{_DATASET_TITLES[result['config'].get('dataset', 'digits')]} test accuracy (%, mean ± "
        f"std over {result['seeds']} seeds, "
        f"{result['epochs']} epochs of SGD); overflows = mean saturated words per run.",
        "",
        f"float64: {_pct(t['float64'])}",
        "",
        "| width | formats (weight, state, act, grad) | rounding | fixed-point training "
        "| overflows | post-training quantisation | overflows |",
        "|---|---|---|---|---|---|---|",
    ]
    for width in result["widths"]:
        formats = next(r["formats"] for r in result["runs"] if r.get("width") == width)
        spelled = ", ".join(formats[k] for k in ("weight", "state", "act", "grad"))
        for rounding in result["roundings"]:
            fx, ptq = t[f"fixed/{width}/{rounding}"], t[f"ptq/{width}/{rounding}"]
            lines.append(f"| {width} | {spelled} | {rounding} | {_pct(fx)} | "
                         f"{fx['overflows']:.0f} | {_pct(ptq)} | {ptq['overflows']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Accuracy against width, one line per method and rounding, float64 as a band."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    t = result["table"]
    widths = result["widths"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    base = t["float64"]
    ax.axhspan(100 * (base["mean"] - base["std"]), 100 * (base["mean"] + base["std"]),
               color="0.85", label="float64 (± std)")
    ax.axhline(100 * base["mean"], color="0.4", lw=1)
    styles = {("fixed", "stochastic"): "o-", ("fixed", "nearest"): "s--",
              ("ptq", "stochastic"): "^-", ("ptq", "nearest"): "v--"}
    names = {"fixed": "fixed-point training", "ptq": "post-training quantisation"}
    for (kind, rounding), style in styles.items():
        cells = [t[f"{kind}/{w}/{rounding}"] for w in widths]
        ax.errorbar(widths, [100 * c["mean"] for c in cells],
                    yerr=[100 * c["std"] for c in cells], fmt=style, capsize=3,
                    label=f"{names[kind]}, {rounding}")
    ax.set_xlabel("word width (bits)")
    dataset = result["config"].get("dataset", "digits")
    ax.set_ylabel(f"{dataset} test accuracy (%)")
    ax.set_xticks(widths)
    ax.set_title(f"Neural ODE on {dataset}: accuracy against precision")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(result: dict, out: Path) -> dict[str, str]:
    """Write ``precision.md``, ``precision.json`` and ``precision.png`` into ``out``.

    Each file is written under a temporary name and renamed, so a failure leaves no partial
    file. Returns the paths written.
    """
    return write_report_files(out, "precision", result, markdown(result), plot)
