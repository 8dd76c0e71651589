"""``xbarode simulate``: digits through the RTL core and the fixed-point model, compared.

The images go through the core on the chosen simulator in batches (each batch one
simulation that loads the weights and then runs its images back to back, the simulator
running free while the core computes); the fixed-point model answers the same batches with
fresh LFSRs, as the hardware starts each simulation from reset. Each simulation runs in its
own folder ``OUT_DIR/run-SIMULATOR-ID`` (:func:`xbarode.sim.runner.run_folder`), so runs
started together in one folder do not meet; a batch that agrees with the model leaves no
run folder behind, a failing one keeps its logs and waveform.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from xbarode.model.core_config import CoreConfig

__all__ = ["DEFAULT_WEIGHTS", "check_weights", "default_weights", "mac_bound_cycles", "mac_count",
           "simulate_core", "weights_differences"]

#: Weights shipped with the package: the default network trained in 16-bit fixed point
#: (``xbarode train --width 16``, seed 0); what ``xbarode simulate`` uses without --weights.
DEFAULT_WEIGHTS = Path(__file__).with_name("data") / "digits_fixed16.npz"

TOP = "xbarode_core"


def default_weights() -> tuple:
    """``(training config, params)`` of :data:`DEFAULT_WEIGHTS`."""
    from xbarode.model import load_weights

    return load_weights(DEFAULT_WEIGHTS)


def weights_differences(trained, config: CoreConfig) -> tuple[list[str], list[str]]:
    """What differs between the network a weights file was trained for and a core.

    Parameters
    ----------
    trained : xbarode.model.Config
        The training configuration stored in the weights file.
    config : CoreConfig

    Returns
    -------
    network : list of str
        Differences that make the weights another network's: structure, kernel size (conv),
        image, channels, pool, classes, steps, T
        and h. Each reads ``"steps: 4 in the weights, 8 in the
        core"``.
    arithmetic : list of str
        Differences in how the same network is computed: the solver, and for weights trained
        in fixed point the formats, accumulator width, rounding and LFSR seed.
    """
    import math

    def differ(a, b):
        if isinstance(a, float) or isinstance(b, float):
            return not math.isclose(a, b, rel_tol=1e-12)
        return a != b

    network, arithmetic = [], []
    pairs = [("structure", trained.structure, config.structure)]
    if "conv" in (trained.structure, config.structure) and trained.structure == config.structure:
        pairs.append(("kernel", trained.kernel_size, config.kernel))
    pairs += [("image", tuple(trained.image_shape), tuple(config.image)),
              ("channels", trained.channels, config.channels),
              ("pool", trained.pool, config.pool),
              ("classes", trained.classes, config.classes),
              ("steps", trained.steps, config.steps),
              ("T", float(trained.T), float(config.steps * config.h)),
              ("h", float(trained.h), float(config.h))]
    for name, have, want in pairs:
        if differ(have, want):
            network.append(f"{name}: {have} in the weights, {want} in the core")
    fixed = [("method", trained.method, config.method)]
    if trained.precision == "fixed":
        fixed += [("weight", trained.weight_format, config.weight),
                  ("state", trained.state_format, config.state),
                  ("act", trained.act_format, config.act),
                  ("grad", trained.grad_format, config.grad),
                  ("acc_width", trained.acc_width, config.acc_width),
                  ("rounding", trained.rounding, config.rounding),
                  ("lfsr_seed", hex(trained.lfsr_seed), hex(config.lfsr_seed))]
    for name, have, want in fixed:
        if differ(have, want):
            arithmetic.append(f"{name}: {have} in the weights, {want} in the core")
    return network, arithmetic


def check_weights(trained, config: CoreConfig, source: str) -> list[str]:
    """Raise ``ValueError`` if the weights in ``source`` were trained for another network
    than ``config`` describes (the message names every difference); return the arithmetic
    differences (:func:`weights_differences`) for the caller to warn about."""
    network, arithmetic = weights_differences(trained, config)
    if network:
        raise ValueError(f"the weights {source} were trained for another network than the "
                         f"core's configuration: {'; '.join(network)} (set the core alike "
                         f"with --config/--set, or train weights for it)")
    return arithmetic


def _chains(config: CoreConfig, status: list[int]) -> int:
    """Chains of one inference: one per step (explicit Euler); per step with ``k`` Newton
    updates the predictor, ``k + 1`` residuals and ``k·neumann_terms`` Neumann terms."""
    if config.method == "euler":
        return config.steps
    return sum(1 + (s & 0xFF) + 1 + (s & 0xFF) * config.neumann_terms for s in status)


def _product_macs(config: CoreConfig) -> tuple[int, int]:
    """``(transforms, mixing)``: multiply–accumulates of one product of A or B on the
    multipliers of its tile or DFT arrays, and on a bank's mixing unit (0 without channels)."""
    from xbarode.study_fourier import fourier_conv_macs

    if config.conv_path == "direct":
        return config.m * config.m, 0
    if config.channels == 1:
        return fourier_conv_macs(*config.image), 0
    c, pixels = config.channels, config.pixels
    return c * (fourier_conv_macs(*config.image) - 4 * pixels), 4 * c * c * pixels


def mac_count(config: CoreConfig, status: list[int]) -> int:
    """Multiply–accumulates of one inference: ``2·m²`` per chain (A and B; on the Fourier
    path two Fourier convolutions, ``xbarode.study_fourier.fourier_conv_macs``, or with ``c``
    channels two banks: ``c`` DFTs, the mixing's ``4·c²·H·W`` and ``c`` inverse DFTs each),
    ``classes·features`` (``m``, or fewer after a pool).

    Explicit Euler: one chain per step. Implicit Euler, per step with ``k`` Newton updates:
    the predictor, ``k + 1`` residuals and ``k·neumann_terms`` Neumann terms.
    """
    return _chains(config, status) * 2 * sum(_product_macs(config)) \
        + config.classes * config.features


def mac_bound_cycles(config: CoreConfig, status: list[int]) -> float:
    """The fewest cycles one inference can take on the core's multipliers: each product's
    MACs over the lanes of the tile (or unit) that computes it, summed over the phases that
    run one after the other.

    A chain's two products run at the same time on tiles A and B (``lanes`` each): ``m²/lanes``
    per chain; on the Fourier path its two convolutions run one after the other on units A
    and B: ``2·fourier_conv_macs/lanes``; with channels the banks' transforms on their
    ``lanes`` and the mixing on its unit's 4 multipliers (one complex multiply–accumulate per
    cycle). Then C's product on its ``lanes_c``: ``classes·features/lanes_c``. Chains per inference
    as in :func:`mac_count`.
    """
    transforms, mixing = _product_macs(config)
    overlap = 2 if config.conv_path == "direct" else 1
    per_chain = 2 * transforms / overlap / config.lanes + 2 * mixing / 4
    return _chains(config, status) * per_chain \
        + config.classes * config.features / config.lanes_c


def simulate_core(config: CoreConfig, params: dict, images: np.ndarray, labels=None, *,
                  simulator: str = "verilator", out_dir=None, batch: int = 90,
                  progress=None, platform=None, built_in: bool = False) -> dict:
    """Run ``images`` (float pixels in [0, 1], shape (n, m)) through RTL and model.

    With ``built_in`` the weights are built into the core's memories (:class:`Core
    <xbarode.hdl.core.Core>`'s ``weights``, direct path) and never loaded.

    ``platform`` is passed to the Verilog's elaboration: :class:`xbarode.hdl.dsp.Ecp5Dsp`
    builds every lane multiplier as an ECP5 ``MULT18X18D``, simulated with the cell model of
    :mod:`xbarode.sim.ecp5_models` (icarus and verilator only).

    Returns
    -------
    dict
        ``images``, ``agreement`` (fraction whose class matches the model), ``mismatches``
        (differing logits, state or status words and flags), ``compared``,
        ``first_mismatch``, ``accuracy`` (RTL, when ``labels``) and ``model_accuracy``,
        ``cycles_per_image`` (mean RUN latency; with the images streamed during the RUN
        before, also the cycles between two images), ``mac_bound_cycles`` (mean
        :func:`mac_bound_cycles`),
        ``cycles_ratio``, ``simulated_cycles_per_second``, ``seconds`` (simulation runs),
        ``build_seconds``, ``waveform``.
    """
    from xbarode.hdl.core import Core
    from xbarode.sim.core_plan import compare, make_plan, model_results
    from xbarode.sim.ecp5_models import check_simulator

    check_simulator(simulator, platform)
    from xbarode.sim.core_plan import weight_load_words

    built = weight_load_words(config, params) if built_in else None
    # e.g. device models the core does not carry, or built-in weights on the Fourier path
    Core.check_parameters(config, weights=built)
    images = np.asarray(images, dtype=np.float64).reshape(len(images), config.pixels)
    out_dir = Path(out_dir if out_dir is not None else "build/simulate")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    expected, got, cycles = [], [], []
    waveform = None
    build_seconds = sim_seconds = 0.0
    verilog = None
    batches = [slice(i, i + batch) for i in range(0, len(images), batch)]
    if progress is not None:
        batches = progress(batches)
    for part in batches:
        chunk = images[part]
        plan = make_plan(config, params, chunk, image_stream=True, built_in=built_in)
        answers = model_results(config, params, chunk)
        expected.extend(answers)
        if simulator == "amaranth":
            from xbarode.sim.core_plan import run_plan_amaranth

            results, run_cycles = run_plan_amaranth(config, plan)
            if compare(answers, results)["mismatches"] and waveform is None:
                waveform = out_dir / "core.vcd"
                run_plan_amaranth(config, plan, vcd_path=waveform)
        else:
            from xbarode.sim.engine import cocotb_data
            from xbarode.sim.runner import run_cocotb, run_folder
            from xbarode.sim.verilog import write_verilog

            if verilog is None:
                verilog = [write_verilog(Core(config, weights=built), TOP, out_dir,
                                         platform=platform)]
                if platform is not None:
                    from xbarode.sim.ecp5_models import write_models

                    verilog.append(write_models(out_dir))
            run_dir = run_folder(out_dir, simulator)
            run = run_cocotb(verilog, TOP, "xbarode.sim.cocotb_plan", simulator,
                             data=cocotb_data("xbarode.sim.core_plan", plan, answers),
                             waves="on_failure" if waveform is None else False,
                             test_dir=run_dir, check=False)
            build_seconds += run.build_seconds
            sim_seconds += run.test_seconds
            results = run.outputs.get("results") or []
            run_cycles = run.outputs.get("cycles") or []
            if len(results) != len(answers):
                raise RuntimeError(
                    f"the {simulator} simulation returned {len(results)} of {len(answers)} "
                    f"images; see {run.log}" + "".join(
                        f"\n  {c['name']}: {c['message']}" for c in run.testcases
                        if c["message"]))
            if run.waves is not None and waveform is None:
                waveform = run.waves
            elif compare(answers, results)["mismatches"] == 0:
                # A passing batch's data, results and logs are of no further use.
                shutil.rmtree(run_dir, ignore_errors=True)
        got.extend(results)
        cycles.extend(run_cycles)
    report = compare(expected, got)
    result = {
        "images": len(images), "simulator": simulator,
        "agreement": report["agreement"], "mismatches": report["mismatches"],
        "compared": report["compared"], "first_mismatch": report["first"],
        "cycles_per_image": float(np.mean(cycles)), "cycles_min": int(np.min(cycles)),
        "cycles_max": int(np.max(cycles)),
        "mac_bound_cycles": float(np.mean([mac_bound_cycles(config, e["status"])
                                           for e in expected])),
        "waveform": None if waveform is None else str(waveform),
        "seconds": time.perf_counter() - started, "build_seconds": build_seconds,
    }
    result["cycles_ratio"] = result["cycles_per_image"] / result["mac_bound_cycles"]
    if simulator != "amaranth" and sim_seconds > 0:
        result["simulated_cycles_per_second"] = float(np.sum(cycles)) / sim_seconds
        result["simulation_seconds"] = sim_seconds
    if labels is not None:
        labels = np.asarray(labels)
        result["accuracy"] = float(np.mean([r["cls"] for r in got] == labels))
        result["model_accuracy"] = float(np.mean([e["cls"] for e in expected] == labels))
    return result
