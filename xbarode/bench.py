"""Benchmarks: figures measured side by side in one run, never timed tests.

``bench_model`` times forward pass + gradient of a batch of a data set (3×3 kernels on its
images: 8×8 digits or 28×28 mnist5k,
explicit Euler, float64, softmax cross-entropy head) in the golden model (discrete adjoint)
against torchdiffeq's ``odeint`` (autograd through the Euler steps) and ``odeint_adjoint``
(continuous adjoint), and reports the time ratios and how far the gradients differ.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["MissingDependency", "bench_core", "bench_model", "bench_tile", "plot_core"]


class MissingDependency(RuntimeError):
    """An optional dependency a benchmark needs is not installed."""


def _golden(kernels, head, x, y, h, steps, shape):
    """Loss and gradients (a, b, C, d) from the golden model."""
    from xbarode.model import Conv, adjoint, head_grads, logits, odeint, softmax_cross_entropy

    A, B = Conv(kernels[0], shape), Conv(kernels[1], shape)
    trajectory = odeint(A, B, x, h, steps)
    loss, grad_scores = softmax_cross_entropy(logits(*head, trajectory[-1]), y)
    grad_C, grad_d, grad_z = head_grads(grad_scores, trajectory[-1], head[0])
    _, grad_a, grad_b = adjoint(A, B, trajectory, h, grad_z)
    return loss, [grad_a, grad_b, grad_C, grad_d]


def _torch_problem(kernels, head, shape):
    """A torch module for ``dz/dt = conv(b, relu(conv(a, z)))`` with circular padding."""
    import torch
    from torch.nn import functional as F

    class Dynamics(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(kernels[0]))
            self.b = torch.nn.Parameter(torch.tensor(kernels[1]))

        def conv(self, kernel, z):
            # conv2d correlates; flipping the kernel makes it scipy.ndimage.convolve's convolution.
            images = F.pad(z.view(-1, 1, *shape), (1, 1, 1, 1), mode="circular")
            return F.conv2d(images, kernel.flip(0, 1).view(1, 1, 3, 3)).view(z.shape)

        def forward(self, t, z):
            return self.conv(self.b, torch.relu(self.conv(self.a, z)))

    dynamics = Dynamics().double()
    C = torch.nn.Parameter(torch.tensor(head[0]))
    d = torch.nn.Parameter(torch.tensor(head[1]))
    return dynamics, C, d


def _torch_step(solver, dynamics, C, d, x, y, times):
    import torch

    for p in (*dynamics.parameters(), C, d):
        p.grad = None
    z = solver(dynamics, x, times, method="euler")[-1]
    loss = torch.nn.functional.cross_entropy(z @ C.T + d, y)
    loss.backward()
    return float(loss.detach()), [p.grad.numpy().copy() for p in (dynamics.a, dynamics.b, C, d)]


def _median_time(fn, repeats):
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def bench_model(batch=64, steps=8, T=1.0, repeats=30, seed=0, quiet=False,
                dataset="digits") -> dict:
    """Time forward + gradient of the golden model against torchdiffeq on one problem.

    Parameters
    ----------
    batch, steps : int
        Images per batch and Euler steps.
    T : float
        Horizon; ``h = T / steps``.
    repeats : int
        Timed repetitions per contender (median reported), interleaved so that load on this
        shared machine hits all contenders alike.
    seed : int
        Seeds the kernels, head and the choice of images.
    quiet : bool
        Print nothing (for ``--json``).
    dataset : str
        The data set whose training images make the batch (``"digits"`` or ``"mnist5k"``).

    Returns
    -------
    dict
        ``golden_ms``, ``odeint_ms``, ``odeint_adjoint_ms``, ``speedup_vs_odeint``,
        ``speedup_vs_odeint_adjoint``, ``grad_rel_diff_odeint`` (backprop through the same
        Euler steps: should be at rounding level), ``grad_rel_diff_odeint_adjoint`` (the
        continuous adjoint: not the exact gradient of the discretised network), ``loss``.
    """
    try:
        import torch
        import torchdiffeq
    except ImportError as exc:
        raise MissingDependency(
            f"bench model needs torch and torchdiffeq ({exc.name} is missing); "
            "install them with: pip install 'xbarode[bench]'"
        ) from None
    from xbarode.model import load_dataset

    torch.set_num_threads(1)  # the golden model runs on one core too: compare like with like
    rng = np.random.default_rng(seed)
    data = load_dataset(dataset)
    if not 1 <= batch <= len(data.y_train):
        raise ValueError(f"--batch must be between 1 and {len(data.y_train)} (the {dataset} "
                         f"training set), not {batch}")
    pick = rng.choice(len(data.y_train), size=batch, replace=False)
    x, y = data.x_train[pick], data.y_train[pick]
    kernels = [rng.normal(0, 0.3, (3, 3)), rng.normal(0, 0.3, (3, 3))]
    shape = data.image_shape
    head = [rng.normal(0, 0.1, (10, shape[0] * shape[1])), np.zeros(10)]
    h = T / steps

    dynamics, C, d = _torch_problem(kernels, head, shape)
    tx, ty = torch.tensor(x), torch.tensor(y)
    times = torch.linspace(0.0, T, steps + 1, dtype=torch.float64)
    contenders = {
        "golden": lambda: _golden(kernels, head, x, y, h, steps, shape),
        "odeint": lambda: _torch_step(torchdiffeq.odeint, dynamics, C, d, tx, ty, times),
        "odeint_adjoint": lambda: _torch_step(torchdiffeq.odeint_adjoint, dynamics, C, d, tx,
                                              ty, times),
    }
    results = {name: fn() for name, fn in contenders.items()}  # warm-up and gradients
    samples = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            samples[name].append(_median_time(fn, 1))
    ms = {name: 1e3 * float(np.median(s)) for name, s in samples.items()}

    def rel_diff(other):
        ours, theirs = results["golden"][1], results[other][1]
        return max(float(np.abs(g - t).max() / np.abs(t).max()) for g, t in zip(ours, theirs,
                                                                                strict=True))

    report = {
        "dataset": dataset, "batch": batch, "steps": steps, "h": h, "repeats": repeats,
        "golden_ms": ms["golden"], "odeint_ms": ms["odeint"],
        "odeint_adjoint_ms": ms["odeint_adjoint"],
        "speedup_vs_odeint": ms["odeint"] / ms["golden"],
        "speedup_vs_odeint_adjoint": ms["odeint_adjoint"] / ms["golden"],
        "grad_rel_diff_odeint": rel_diff("odeint"),
        "grad_rel_diff_odeint_adjoint": rel_diff("odeint_adjoint"),
        "loss": results["golden"][0],
        "torch": torch.__version__, "torchdiffeq": torchdiffeq.__version__,
    }
    if not quiet:
        print(f"forward + gradient, batch {batch}, {shape[0]}x{shape[1]} {dataset} images, 3x3 "
              f"kernels, {steps} Euler steps, float64, median of {repeats}")
        print(f"  golden model (discrete adjoint)   {ms['golden']:8.3f} ms")
        print(f"  torchdiffeq odeint (backprop)     {ms['odeint']:8.3f} ms   "
              f"{report['speedup_vs_odeint']:.1f}x slower; gradient rel. diff "
              f"{report['grad_rel_diff_odeint']:.1e}")
        print(f"  torchdiffeq odeint_adjoint        {ms['odeint_adjoint']:8.3f} ms   "
              f"{report['speedup_vs_odeint_adjoint']:.1f}x slower; gradient rel. diff "
              f"{report['grad_rel_diff_odeint_adjoint']:.1e} (continuous adjoint)")
    return report


def bench_tile(lanes=(16, 64), *, rows=64, cols=64, width=16, frac=12, device="ecp5-85f",
               freq_mhz=100.0, out_dir="build/bench-tile", router="router2",
               quiet=False) -> dict:
    """Synthesise a 64×64 16-bit tile at each lane count and measure its cycles per product.

    Place and route takes several minutes per design on this 2-core machine (the 64-lane
    tile about 30 minutes; only nextpnr's router2 routes it). Cycles come from
    one Amaranth simulation of a forward and a transposed product (latency, start to done).
    """
    from pathlib import Path

    from xbarode.sim.tile_plan import TileParams, make_plan, run_plan_amaranth
    from xbarode.synth import check_options, synthesize
    from xbarode.units import tile_sites

    check_options(device, router)   # before any tile is simulated or built
    rows_out = []
    for n in lanes:
        params = TileParams(rows=rows, cols=cols, lanes=n, width=width, frac=frac)
        _, cycles = run_plan_amaranth(params, make_plan(params, 1, 0, ops_per_vector=2))
        component = params.component()
        report = synthesize(component, "crossbar_tile", device=device,
                            out_dir=Path(out_dir) / f"lanes{n}", freq_mhz=freq_mhz,
                            router=router, sites=tile_sites(component, device))
        row = {"lanes": n, "forward_cycles": cycles["forward"],
               "transposed_cycles": cycles["transposed"],
               **{k: report[k] for k in ("luts", "carry", "lutram", "ffs", "mult18", "ebr",
                                         "fmax_mhz")}}
        rows_out.append(row)
        if not quiet:
            print(f"{rows}x{cols} tile, {width}-bit, {n:3d} lanes: {row['forward_cycles']} / "
                  f"{row['transposed_cycles']} cycles (forward / transposed), "
                  f"{row['luts']} LUT4 + {row['carry']} CCU2C, {row['ffs']} FF, "
                  f"{row['mult18']} MULT18, {row['ebr']} EBR, fmax {row['fmax_mhz']:.1f} MHz")
    return {"device": device, "rows": rows, "cols": cols, "width": width, "tiles": rows_out}


def _logic_cells(report: dict) -> int | None:
    """Logic cells (``TRELLIS_COMB``: a LUT4 or half a carry cell each) nextpnr used."""
    used = report.get("utilisation", {}).get("TRELLIS_COMB", {})
    return used.get("used") if isinstance(used, dict) else None


def bench_core(lanes=(8, 16, 32, 64), *, config=None, params=None, images=16,
               simulator="verilator", synth=True, device="ecp5-85f", freq_mhz=50.0,
               router="router2", seed=1, timeout=7200, out_dir="build/bench-core",
               quiet=False) -> dict:
    """The core at each lane count: cycles per inference, the MAC bound, resources and fmax.

    For every entry of ``lanes`` the core is built with that many lanes in tiles A and B and
    the configuration's ``lanes_c`` in tile C (or, where that does not divide the lane count,
    the largest number that does and is smaller; the other fields unchanged), the first
    ``images`` digits test images run through its RTL on ``simulator`` next to the
    fixed-point model (every word compared; a mismatch raises), and — with ``synth`` — it is
    synthesised, placed and routed for ``device`` (about an hour per design on this 2-core
    machine).

    Parameters
    ----------
    lanes : sequence of int
        Lane counts, each ``1 … m``.
    config : CoreConfig, optional
        The core (default: the digits core).
    params : dict, optional
        Its weights (default: the shipped 16-bit weights).
    images : int
        Test images simulated per lane count (cycles are their mean RUN latency).
    simulator, device, freq_mhz, router, seed, timeout
        As for ``xbarode simulate`` and ``xbarode synth core`` (``timeout``: seconds allowed
        for each of yosys and nextpnr per design).
    synth : bool
        Run yosys and nextpnr; without it the table has cycles only.
    out_dir : path
        Working folder: ``lanes{n}/sim`` and ``lanes{n}/synth``.

    Returns
    -------
    dict
        ``device``, ``images`` and ``rows``: per lane count ``lanes``, ``lanes_c``,
        ``multipliers`` (lanes of A, B and C), ``cycles_per_image``, ``mac_bound_cycles``
        (:func:`~xbarode.simulate.mac_bound_cycles`, as :func:`simulate_core` reports it),
        ``cycles_ratio``, ``mismatches`` and, with ``synth``, ``luts``, ``carry``,
        ``lutram``, ``ffs``, ``mult18``, ``ebr``, ``logic_cells``, ``fmax_mhz`` and
        ``us_per_image`` (cycles at the routed fmax).
    """
    import dataclasses
    from pathlib import Path

    from xbarode.model import load_dataset
    from xbarode.model.core_config import load_config
    from xbarode.simulate import default_weights, simulate_core
    from xbarode.synth import check_options, synthesize

    from .units import CoreParams

    base = config if config is not None else load_config(None, {})
    if params is None:
        params = default_weights()[1]
    for n in lanes:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= base.m:
            raise ValueError(f"lanes must be between 1 and m = {base.m}, not {n!r}")
    if synth:
        check_options(device, router)   # before any core is simulated or built
    x = load_dataset("digits").x_test[:images]
    rows_out = []
    for n in lanes:
        lanes_c = max(d for d in range(1, min(n, base.lanes_c) + 1) if n % d == 0)
        cfg = dataclasses.replace(base, lanes=n, lanes_c=lanes_c)
        folder = Path(out_dir) / f"lanes{n}"
        sim = simulate_core(cfg, params, x, simulator=simulator, out_dir=folder / "sim")
        if sim["mismatches"]:
            raise RuntimeError(f"{n} lanes: {sim['mismatches']} mismatches between the RTL "
                               f"and the model; first: {sim['first_mismatch']}")
        row = {"lanes": n, "lanes_c": lanes_c, "multipliers": 2 * n + lanes_c,
               **{k: sim[k] for k in ("cycles_per_image", "mac_bound_cycles", "cycles_ratio",
                                      "mismatches")}}
        if synth:
            core = CoreParams(cfg, dsp="ecp5")
            report = synthesize(core.component(), "xbarode_core", device=device,
                                out_dir=folder / "synth", seed=seed, freq_mhz=freq_mhz,
                                router=router, timeout=timeout)
            row |= {k: report[k] for k in ("luts", "carry", "lutram", "ffs", "mult18", "ebr",
                                           "fmax_mhz")}
            row["logic_cells"] = _logic_cells(report)
            row["us_per_image"] = (row["cycles_per_image"] / row["fmax_mhz"]
                                   if row["fmax_mhz"] else None)
        rows_out.append(row)
        if not quiet:
            print(_core_row_text(row), flush=True)
    return {"device": device, "images": len(x), "rows": rows_out}


def _core_row_text(row: dict) -> str:
    """One line of ``bench core``'s table."""
    text = (f"{row['lanes']:3d} lanes (C: {row['lanes_c']}): {row['cycles_per_image']:.0f} "
            f"cycles per image, "
            f"{row['cycles_ratio']:.2f}x the MAC bound ({row['mac_bound_cycles']:.0f})")
    if "fmax_mhz" in row:
        text += (f"; {row['luts']} LUT4 + {row['carry']} CCU2C, {row['ffs']} FF, "
                 f"{row['mult18']} MULT18, {row['ebr']} EBR; fmax {row['fmax_mhz']:.1f} MHz, "
                 f"{row['us_per_image']:.1f} us per image")
    return text


def plot_core(result: dict, path) -> None:
    """µs per inference against logic cells, one point per lane count (needs ``synth``)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = [r for r in result["rows"] if r.get("us_per_image") and r.get("logic_cells")]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["logic_cells"] for r in rows], [r["us_per_image"] for r in rows], "o-")
    for r in rows:
        ax.annotate(f"{r['lanes']} lanes", (r["logic_cells"], r["us_per_image"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("logic cells (ECP5 TRELLIS_COMB)")
    ax.set_ylabel("µs per inference at the routed fmax")
    ax.set_title(f"digits core on the {result['device']}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
