"""Hardware units as the command line sees them: options, Verilog, co-simulation, synthesis.

Each unit (the crossbar ``tile``; ``dft``, ``hadamard``, ``channel-mix``, ``fourier-conv`` and
``fourier-bank``; the ``core``) is one :class:`Unit` in :data:`UNITS`: how to read its
parameters from the command line, how to build its Amaranth component, and how to co-simulate
it against the fixed-point model on a given simulator. ``xbarode generate``, ``cosim`` and
``synth`` are generic over this registry.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .shipped import config_file

__all__ = ["SIMULATORS", "UNITS", "AdjointParams", "CoreParams", "Unit", "backward_mac_count",
           "cosim",
           "generate", "run_plan", "synth"]

#: Simulators of ``xbarode cosim``.
SIMULATORS = ("amaranth", "verilator", "icarus")


@dataclass(frozen=True)
class Unit:
    """One hardware unit of the command line."""

    name: str
    help: str
    add_arguments: Callable       # (parser) -> None
    params: Callable              # (args) -> parameter object (validated)
    component: Callable           # (params) -> Amaranth component
    top: str                      # Verilog module name
    cosim: Callable               # (params, vectors, seed, simulator, out_dir) -> dict
    sites: Callable | None = None  # (component, device) -> {cell: site} for synth, or None


#: Upper bounds of the units' sizes (memory and time of elaboration and simulation grow with
#: each): tile rows and columns, Fourier image sides, word widths, co-simulation vectors.
UNIT_LIMITS = {"rows": 512, "cols": 512, "side": 64, "width": 32, "fourier_width": 40,
               "channels": 64, "vectors": 10_000}


def _bounded(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}")


# --- the crossbar tile -----------------------------------------------------------------------

def _tile_arguments(parser) -> None:
    from xbarode.model import ROUNDINGS
    from xbarode.sim.tile_plan import DSP_MAPPINGS

    group = parser.add_argument_group("tile")
    group.add_argument("--rows", type=int, default=64, help="rows of W (default: %(default)s)")
    group.add_argument("--cols", type=int, default=64, help="columns of W (default: %(default)s)")
    group.add_argument("--lanes", type=int, default=None,
                       help="multipliers working in parallel, 1..cols (default: cols)")
    group.add_argument("--width", type=int, default=16,
                       help="word width of weights, inputs and outputs (default: %(default)s)")
    group.add_argument("--frac", type=int, default=12,
                       help="fractional bits of every word (default: %(default)s)")
    group.add_argument("--rounding", choices=ROUNDINGS, default="nearest",
                       help="rounding of every narrowing (default: %(default)s)")
    group.add_argument("--eta-shift", type=int, default=4,
                       help="the update's learning rate is 2^-ETA_SHIFT (default: %(default)s)")
    group.add_argument("--acc-width", type=int, default=48,
                       help="accumulator width (default: %(default)s)")
    group.add_argument("--lfsr-seed", type=lambda t: int(t, 0), default=0xACE1ACE1,
                       help="seed of the stochastic-rounding LFSR (default: 0xace1ace1)")
    group.add_argument("--dsp", choices=DSP_MAPPINGS, default="none",
                       help="multipliers in the Verilog of generate and cosim: plain (none) or "
                            "ECP5 MULT18X18D cells with their registers (ecp5), which cosim "
                            "runs on a model of the cell; synth always builds the cells "
                            "(default: %(default)s)")
    from xbarode.cli import add_device_flags
    from xbarode.model.device import DEVICE_SEED

    device = add_device_flags(
        parser, "the array's device models in the tile and its model (docs/device.md), each "
                "off unless given; with --pulses each UPDATE is one sample's pulse trains "
                "(its expected step + s x^T 2^-ETA_SHIFT)")
    device.add_argument("--device-seed", type=lambda t: int(t, 0), default=DEVICE_SEED,
                        help=f"seed of the device generators: purpose p (read noise, "
                             f"programming noise, the states' rounding, row pulses, column "
                             f"pulses) draws from its site p "
                             f"(default: {DEVICE_SEED:#x})")


def _tile_params(args):
    from xbarode.cli import _device as device_model
    from xbarode.sim.tile_plan import TileParams

    _bounded("--rows", args.rows, 1, UNIT_LIMITS["rows"])
    _bounded("--cols", args.cols, 1, UNIT_LIMITS["cols"])
    _bounded("--width", args.width, 2, UNIT_LIMITS["width"])
    params = TileParams(rows=args.rows, cols=args.cols,
                        lanes=args.cols if args.lanes is None else args.lanes,
                        width=args.width, frac=args.frac, rounding=args.rounding,
                        eta_shift=args.eta_shift, acc_width=args.acc_width,
                        lfsr_seed=args.lfsr_seed, dsp=args.dsp, device=device_model(args),
                        device_seed=args.device_seed)
    params.check()  # every parameter, with the component's own messages
    # The update narrows a 2·width-bit product with 2·frac fractional bits to frac bits:
    # it discards frac + eta_shift bits, at most the product's width (beyond it the model and
    # the RTL disagree) and at most the 32 bits a stochastic-rounding draw has.
    most = min(2 * args.width, 32) - args.frac
    if not 0 <= args.eta_shift <= most:
        raise ValueError(f"--eta-shift must be between 0 and {most} with --width {args.width} "
                         f"--frac {args.frac} (the update discards frac + eta_shift bits of a "
                         f"{2 * args.width}-bit product, at most {min(2 * args.width, 32)}), "
                         f"not {args.eta_shift}")
    return params


def run_plan(unit: str, params, plan: dict, expected, simulator: str, out_dir: Path,
             plan_module: str, top: str, seed: int, keep_results: bool = False) -> dict:
    """Run a plan on one simulator and compare it with the model's answers.

    ``plan_module`` names the unit's plan module (e.g. ``"xbarode.sim.tile_plan"``): its
    ``run_plan_amaranth(params, plan, vcd_path)`` runs the plan in Amaranth's simulator, and
    on the cocotb simulators its ``execute`` runs inside :mod:`xbarode.sim.cocotb_plan` on the
    Verilog of ``params.component()`` (:mod:`xbarode.sim.engine`); its ``compare`` checks the
    results. On a mismatch a waveform is written (Amaranth: a second run with a VCD);
    ``keep_results`` adds the back end's ``results`` to the report.
    """
    import importlib

    from xbarode.sim.ecp5_models import check_simulator

    module = importlib.import_module(plan_module)
    compare = module.compare
    waves = None
    platform = getattr(params, "platform", None)
    check_simulator(simulator, platform)
    if simulator == "amaranth":
        got, cycles = module.run_plan_amaranth(params, plan)
        report = compare(expected, got)
        if report["mismatches"]:
            waves = out_dir / f"{unit}.vcd"
            out_dir.mkdir(parents=True, exist_ok=True)
            module.run_plan_amaranth(params, plan, vcd_path=waves)
    else:
        from xbarode.sim.engine import cocotb_data
        from xbarode.sim.runner import run_cocotb, run_folder
        from xbarode.sim.verilog import write_verilog

        sources = [write_verilog(params.component(), top, out_dir, platform=platform)]
        if platform is not None:
            from xbarode.sim.ecp5_models import write_models

            sources.append(write_models(out_dir))
        result = run_cocotb(sources, top, "xbarode.sim.cocotb_plan", simulator,
                            data=cocotb_data(plan_module, plan, expected), waves="on_failure",
                            test_dir=run_folder(out_dir, simulator), seed=seed, check=False)
        got = result.outputs.get("results")
        cycles = result.outputs.get("cycles", {})
        if got is None or len(got) != len(expected):
            raise RuntimeError(
                f"the {simulator} simulation produced no complete results; see "
                f"{result.log}" + "".join(f"\n  {c['name']}: {c['message']}"
                                          for c in result.testcases if c["message"]))
        report = compare(expected, got)
        waves = result.waves
    return {"mismatches": report["mismatches"], "compared": report["compared"],
            "first_mismatch": report["first"], "cycles": cycles,
            "waveform": None if waves is None else str(waves),
            **({"results": got} if keep_results else {})}


def _tile_cosim(params, vectors: int, seed: int, simulator: str, out_dir: Path) -> dict:
    from xbarode.sim.tile_plan import make_plan, model_results

    plan = make_plan(params, vectors, seed)
    result = run_plan("tile", params, plan, model_results(params, plan), simulator, out_dir,
                      "xbarode.sim.tile_plan", "crossbar_tile", seed)
    return {**result, "cycles_per_mvm": result["cycles"].get("forward")}


def tile_training(params, images: int, simulator: str, out_dir: Path) -> dict:
    """``xbarode cosim tile --digits-training``: a linear classifier of the digits trained on
    the tile (:func:`xbarode.sim.tile_plan.training_plan`) on the first ``images`` training
    images, every logit and the weights after every update against the model.

    Returns ``run_plan``'s report with ``images``, ``test_accuracy`` (the trained weights'
    argmax of the exact ``W x`` over the 360 test images, their pixels rounded to the format
    as the training's are) and ``cycles_per_image`` (FORWARD
    plus UPDATE).

    Raises
    ------
    ValueError
        Unless the tile is 10 rows (classes) by 64 columns (pixels).
    """
    import numpy as np

    from xbarode.model.data import load_digits_split
    from xbarode.sim.tile_plan import model_results, training_plan

    if (params.rows, params.cols) != (10, 64):
        raise ValueError(f"--digits-training needs a tile of 10 rows (the classes) and 64 "
                         f"columns (the 8x8 pixels): --rows 10 --cols 64, not --rows "
                         f"{params.rows} --cols {params.cols}")
    _bounded("--vectors", images, 1, 1437)
    split = load_digits_split()
    plan, weights = training_plan(params, split.x_train[:images], split.y_train[:images])
    result = run_plan("tile", params, plan, model_results(params, plan), simulator, out_dir,
                      "xbarode.sim.tile_plan", "crossbar_tile", 0)
    f = params.format
    pixels = np.clip(np.floor(split.x_test * 2.0**f.frac + 0.5), f.min_int, f.max_int)
    predicted = np.argmax(pixels @ weights.T.astype(np.float64), axis=1)
    cycles = result["cycles"]
    return {**result, "images": images,
            "test_accuracy": float(np.mean(predicted == split.y_test)),
            "cycles_per_image": (cycles.get("forward", 0) + cycles.get("update", 0)) or None}


def _component(params):
    return params.component()


def tile_sites(tile, device: str) -> dict:
    """``{cell: site}`` pinning each lane's multiplier and block RAM of a tile synthesised
    alone (:func:`xbarode.synth.lane_sites`; empty where no layout is known)."""
    from xbarode.hdl.dsp import Ecp5Dsp
    from xbarode.synth import lane_sites

    pairs = lane_sites(tile.lanes, device)
    if not pairs:
        return {}
    sites = {}
    for cells, places in zip(tile.lane_cells(Ecp5Dsp()), pairs, strict=True):
        sites.update({cell: place for cell, place in zip(cells, places, strict=True)
                      if cell is not None})
    return sites


# --- the Fourier units ------------------------------------------------------------------------

def _image_size(text: str) -> tuple[int, int]:
    import argparse

    parts = text.lower().split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must look like HxW (e.g. 8x8), not "
                                         f"{text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"image size must be at least 1x1, not {text!r}")
    return height, width


def _word_format(text: str) -> tuple[int, int]:
    import argparse

    from xbarode.model.fixed import parse_format

    try:
        fmt = parse_format(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return fmt.width, fmt.frac


def _fourier_arguments(unit: str):
    def add(parser) -> None:
        from xbarode.model import ROUNDINGS

        group = parser.add_argument_group(unit)
        group.add_argument("--image", type=_image_size, default=(8, 8), metavar="HxW",
                           help="image size H x W (default: 8x8)")
        if unit in ("fourier-conv", "fourier-bank"):
            group.add_argument("--kernel", type=int, default=3, metavar="K",
                               help="kernel size K x K, odd (default: %(default)s)")
        if unit in ("channel-mix", "fourier-bank"):
            what = "matrices" if unit == "channel-mix" else "bank"
            group.add_argument("--channels-in", type=int, default=1, metavar="C",
                               help=f"c_in of the c_out x c_in {what}: channels in of the "
                                    "forward product, out of the adjoint (default: "
                                    "%(default)s)")
            group.add_argument("--channels-out", type=int, default=1, metavar="C",
                               help=f"c_out of the {what}: channels out of the forward "
                                    "product, in of the adjoint (default: %(default)s)")
        if unit not in ("hadamard", "channel-mix"):
            group.add_argument("--lanes", type=int, default=None,
                               help="multipliers of each DFT array, capped at 2n "
                                    "(default: 2n)")
            group.add_argument("--twiddle", type=_word_format, default=(18, 16), metavar="W.F",
                               help="format of the DFT tables (default: 18.16)")
            group.add_argument("--acc-width", type=int, default=48,
                               help="accumulator width of the arrays (default: %(default)s)")
        if unit != "dft":
            group.add_argument("--spectrum", type=_word_format, default=(18, 14),
                               metavar="W.F",
                               help="format of the kernel spectrum (default: 18.14)")
        if unit in ("hadamard", "fourier-conv"):
            group.add_argument("--gauss", action="store_true",
                               help="Hadamard product with 3 multipliers instead of 4")
        group.add_argument("--width", type=int, default=18,
                           help="width of the data words (default: %(default)s)")
        group.add_argument("--frac", type=int, default=10,
                           help="fractional bits of the data words (default: %(default)s)")
        group.add_argument("--rounding", choices=ROUNDINGS, default="nearest",
                           help="rounding of every narrowing (default: %(default)s)")
        group.add_argument("--lfsr-seed", type=lambda t: int(t, 0), default=0xACE1ACE1,
                           help="seed of the first stochastic-rounding LFSR "
                                "(default: 0xace1ace1)")
        if unit in ("dft", "fourier-conv"):
            from xbarode.cli import add_device_flags
            from xbarode.model.device import DEVICE_SEED

            device = add_device_flags(
                parser, "the DFT arrays' read models in the unit and its model "
                        "(docs/device.md), each off unless given; the write models are "
                        "refused (the table is fixed), the Hadamard product is digital")
            device.add_argument("--device-seed", type=lambda t: int(t, 0), default=DEVICE_SEED,
                                help=f"seed of the rows array's read noise; the columns "
                                     f"array's is its site 1 (default: {DEVICE_SEED:#x})")
    return add


def _fourier_params(unit: str):
    def params(args):
        from xbarode.cli import _device as device_model
        from xbarode.model.device import DEVICE_SEED
        from xbarode.model.fixed import Format
        from xbarode.sim.fourier_plan import FourierParams

        Format(args.width, args.frac)  # the format's own message for a bad width or frac
        _bounded("--width", args.width, 2, UNIT_LIMITS["fourier_width"])
        height, width = args.image
        _bounded("--image sides", max(height, width), 1, UNIT_LIMITS["side"])
        for flag in ("channels_in", "channels_out"):
            if hasattr(args, flag):
                _bounded(f"--{flag.replace('_', '-')}", getattr(args, flag), 1,
                         UNIT_LIMITS["channels"])
        result = FourierParams(unit=unit, height=height, width_px=width,
                               kernel=getattr(args, "kernel", 3),
                               lanes=getattr(args, "lanes", None), width=args.width,
                               frac=args.frac, twiddle=getattr(args, "twiddle", (18, 16)),
                               spectrum=getattr(args, "spectrum", (18, 14)),
                               rounding=args.rounding, gauss=getattr(args, "gauss", False),
                               acc_width=getattr(args, "acc_width", 48),
                               lfsr_seed=args.lfsr_seed,
                               device=device_model(args) if hasattr(args, "device_seed")
                               else None,
                               device_seed=getattr(args, "device_seed", DEVICE_SEED),
                               channels_in=getattr(args, "channels_in", 1),
                               channels_out=getattr(args, "channels_out", 1))
        result.check()  # every parameter, with the component's own messages
        return result
    return params


def _fourier_cosim(params, vectors: int, seed: int, simulator: str, out_dir: Path) -> dict:
    from xbarode.sim.fourier_plan import make_plan, model_results

    plan = make_plan(params, vectors, seed)
    top = _FOURIER_TOPS[params.unit]
    return run_plan(params.unit, params, plan, model_results(params, plan), simulator,
                    out_dir, "xbarode.sim.fourier_plan", top, seed)


_FOURIER_TOPS = {"dft": "dft2d", "hadamard": "hadamard_unit", "channel-mix": "channel_mix",
                 "fourier-conv": "fourier_conv", "fourier-bank": "fourier_bank"}
_FOURIER_HELP = {
    "dft": "2-D DFT and inverse DFT through two DFT block arrays and a transpose buffer",
    "hadamard": "element-wise complex product with a stored spectrum (4 or 3 multipliers)",
    "channel-mix": "per frequency a stored c_out x c_in complex matrix times a vector, or its "
                   "conjugate transpose: the Hadamard product with channels",
    "fourier-conv": "circular convolution: 2-D DFT, Hadamard product, inverse 2-D DFT",
    "fourier-bank": "a c_out x c_in bank of circular convolutions and its adjoint: 2-D DFT "
                    "per channel, channel mixing per frequency, inverse 2-D DFT per channel",
}


# --- the core -------------------------------------------------------------------------------

def _core_arguments(parser) -> None:
    parser.add_argument("--config", type=config_file, default=None,
                        help="core configuration: a TOML file, or a shipped one by name "
                             "(digits, mnist5k; default: the digits core, see "
                             "xbarode.model.core_config)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one configuration field (e.g. --set "
                             "method=implicit_euler --set lanes=8); repeatable")
    parser.add_argument("--dsp", choices=("none", "ecp5"), default="none",
                        help="multipliers in the Verilog of generate and cosim: plain (none) or "
                             "ECP5 MULT18X18D cells with their registers (ecp5), which cosim "
                             "runs on a model of the cell (icarus, verilator); synth always "
                             "builds the cells (default: %(default)s)")


@dataclass(frozen=True)
class CoreParams:
    """A core build: its configuration and the multiplier mapping of its Verilog."""

    config: object        # CoreConfig
    #: "none" (plain Verilog) or "ecp5" (MULT18X18D cells with their registers, as ``xbarode
    #: synth`` builds them; cocotb simulates them with the cell model). Keyword-only.
    dsp: str = field(default="none", kw_only=True)

    def __post_init__(self):
        # A [device] table turning on a model the core does not carry is refused (ConfigError,
        # with the core's message: docs/device.md, "In the RTL core").
        from xbarode.model.core_config import ConfigError, CoreConfig

        if isinstance(self.config, CoreConfig) and self.config.device() is not None:
            from xbarode.hdl.core import Core

            try:
                Core.check_parameters(self.config)
            except ValueError as error:
                raise ConfigError(str(error)) from None

    @property
    def platform(self):
        """The ``platform`` the Verilog is elaborated for (:func:`xbarode.hdl.dsp.dsp_platform`)."""
        from xbarode.hdl.dsp import dsp_platform

        return dsp_platform(self.dsp)

    def component(self):
        """The core."""
        from xbarode.hdl.core import Core

        self.platform  # noqa: B018 -- validates dsp
        return Core(self.config)

    def manifest_parameters(self) -> dict:
        """The configuration's fields and ``dsp``, as the manifest lists them."""
        from dataclasses import asdict

        fields = asdict(self.config)
        if getattr(self.config, "device", lambda: None)() is None:
            for name in getattr(self.config, "DEVICE_FIELDS", ()):
                del fields[name]    # all off: the ideal array's manifest, as before
        return {**fields, "dsp": self.dsp}


def _as_core_params(params) -> CoreParams:
    # The library API also takes a bare CoreConfig (plain multipliers).
    return params if isinstance(params, CoreParams) else CoreParams(params)


def _core_params(args):
    from xbarode.model.core_config import load_config, parse_overrides

    return CoreParams(load_config(args.config, parse_overrides(args.set)), dsp=args.dsp)


def _core_component(params):
    return _as_core_params(params).component()


def _core_cosim(params, vectors: int, seed: int, simulator: str, out_dir: Path) -> dict:
    """Random weights and images through RTL and model (``xbarode simulate`` runs digits)."""
    import numpy as np

    from xbarode.sim.core_plan import random_params
    from xbarode.simulate import simulate_core

    params = _as_core_params(params)
    config = params.config
    images = np.random.default_rng(seed).uniform(0, 1, (vectors, config.pixels))
    result = simulate_core(config, random_params(config, seed), images, simulator=simulator,
                           out_dir=out_dir, platform=params.platform)
    return {key: result[key] for key in ("mismatches", "compared", "first_mismatch",
                                         "waveform", "agreement", "cycles_per_image",
                                         "mac_bound_cycles")} | {
        "cycles": {"run": result["cycles_per_image"]}}


# --- training on the core (the adjoint) ------------------------------------------------------

@dataclass(frozen=True)
class AdjointParams(CoreParams):
    """The core with its training hardware, and how often the co-simulation applies SGD."""

    # config: a CoreConfig with training = True
    apply_every: int = 2

    def manifest_parameters(self) -> dict:
        """The configuration's fields, ``dsp`` and ``apply_every``."""
        return {**super().manifest_parameters(), "apply_every": self.apply_every}


def _adjoint_arguments(parser) -> None:
    _core_arguments(parser)
    parser.add_argument("--apply-every", type=int, default=2, metavar="N",
                        help="one SGD step (APPLY) after every N images (default: "
                             "%(default)s)")


def _adjoint_params(args):
    import dataclasses

    if args.apply_every < 1:
        raise ValueError(f"--apply-every must be >= 1, not {args.apply_every}")
    core = _core_params(args)
    return AdjointParams(dataclasses.replace(core.config, training=True), args.apply_every,
                         dsp=core.dsp)


def backward_mac_count(config) -> int:
    """Multiply–accumulates of one BACKWARD: ``Cᵀ∂L/∂logits`` and C's gradient
    (``2·classes·m``); per step A's forward product, B's forward and A's transposed product
    per Neumann term (implicit Euler) and for ``g`` (A's transposed only for explicit Euler),
    and A's and B's gradient accumulations (m² each)."""
    m2 = config.m * config.m
    if config.method == "euler":
        per_step = 5 * m2
    else:
        per_step = (4 + 2 * config.neumann_terms) * m2
    return 2 * config.classes * config.m + config.steps * per_step


def _adjoint_cosim(params: AdjointParams, vectors: int, seed: int, simulator: str,
                   out_dir: Path) -> dict:
    """Random weights, images and labels: forward, BACKWARD, every gradient word, SGD steps
    and the weights after each, against the fixed-point model."""
    import numpy as np

    from xbarode.sim.adjoint_plan import make_plan
    from xbarode.sim.core_plan import random_params

    config = params.config
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (vectors, config.pixels))
    labels = rng.integers(0, config.classes, vectors)
    plan, expected = make_plan(config, random_params(config, seed), images, labels,
                               apply_every=params.apply_every)
    result = run_plan("adjoint", params, plan, expected, simulator, out_dir,
                      "xbarode.sim.adjoint_plan", "xbarode_core", seed, keep_results=True)
    got = result.pop("results")
    cycles = result.pop("cycles")
    if config.structure == "conv":
        # The host's pull-back of the RTL's dense sums (after the last image) onto the kernels.
        from xbarode.sim.adjoint_plan import kernel_gradients

        last = next(r for r in reversed(got) if "grads" in r)
        result["kernel_gradients"] = {name: taps.tolist() for name, taps in
                                      kernel_gradients(config, last["grads"]).items()}
    # C's two products (λ and its gradient) on C's lanes, the rest on a tile's.
    c_macs = 2 * config.classes * config.m
    bound = ((backward_mac_count(config) - c_macs) / config.lanes
             + c_macs / config.lanes_c)
    backward = float(np.mean(cycles["backward"]))
    return {**result, "cycles": {"run": float(np.mean(cycles["run"])), "backward": backward,
                                 "apply": float(np.mean(cycles["apply"]))},
            "backward_mac_bound_cycles": bound, "backward_cycles_ratio": backward / bound}


UNITS = {
    "tile": Unit("tile", "the crossbar tile: W x, Wᵀ y, rank-1 update", _tile_arguments,
                 _tile_params, _component, "crossbar_tile", _tile_cosim, tile_sites),
    **{name: Unit(name, _FOURIER_HELP[name], _fourier_arguments(name), _fourier_params(name),
                  _component, top, _fourier_cosim)
       for name, top in _FOURIER_TOPS.items()},
    "core": Unit("core", "the neural-ODE core: tiles A, Bᵀ, C, Euler/Newton controller, "
                 "classifier", _core_arguments, _core_params, _core_component, "xbarode_core",
                 _core_cosim),
    "adjoint": Unit("adjoint", "the core with its training hardware: BACKWARD (the adjoint), "
                    "gradient sums, the SGD step", _adjoint_arguments, _adjoint_params,
                    _component, "xbarode_core", _adjoint_cosim),
}


# --- the generic commands ---------------------------------------------------------------------

def generate(unit: Unit, params, out: Path) -> dict:
    """Write into ``out`` the unit's Verilog, its JSON manifest (parameters, ports with roles
    and groups, op encoding, words per operation: :mod:`xbarode.manifest`), a C header of its
    op codes and words (``TOP.h``) and a Verilator configuration waiving the warnings of
    generated Verilog (``TOP.vlt``)."""
    from xbarode.manifest import c_header, unit_manifest, verilator_waivers, write_beside
    from xbarode.sim.verilog import write_verilog

    component = unit.component(params)
    verilog = write_verilog(component, unit.top, out,
                            platform=getattr(params, "platform", None))
    manifest = unit_manifest(unit, params, component, verilog)
    extra = getattr(component, "manifest", None)
    if callable(extra):
        manifest.update(extra())
    header = write_beside(out / manifest["header"], c_header(manifest))
    waivers = write_beside(out / manifest["waivers"], verilator_waivers(verilog.name))
    path = write_beside(out / f"{unit.top}.json", json.dumps(manifest, indent=1) + "\n")
    return {"verilog": str(verilog), "manifest": str(path), "header": str(header),
            "waivers": str(waivers), "ports": len(manifest["ports"])}


def cosim(unit: Unit, params, *, vectors: int, seed: int, simulator: str,
          out: Path | None) -> dict:
    """Co-simulate ``vectors`` random vector sets; every word and flag against the model.

    ``out`` receives the Verilog, simulator logs and, on a mismatch, a waveform (a new
    temporary folder when None).
    """
    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator {simulator!r}; choose one of {list(SIMULATORS)}")
    _bounded("--vectors", vectors, 1, UNIT_LIMITS["vectors"])
    out = Path(tempfile.mkdtemp(prefix=f"xbarode-cosim-{unit.name}-")) if out is None \
        else Path(out)
    start = time.perf_counter()
    result = unit.cosim(params, vectors, seed, simulator, out)
    return {"unit": unit.name, "simulator": simulator, "vectors": vectors, "seed": seed,
            **result, "seconds": time.perf_counter() - start}


def synth(unit: Unit, params, *, device: str, out: Path, freq_mhz: float, seed: int,
          router: str = "router1", timeout: float = 3600) -> dict:
    """Synthesise, place and route the unit; resources and fmax (``timeout``: seconds allowed
    for each of yosys and nextpnr)."""
    from xbarode.synth import check_options, synthesize

    check_options(device, router)   # before the component is built
    component = unit.component(params)
    sites = unit.sites(component, device) if unit.sites is not None else None
    report = synthesize(component, unit.top, device=device, out_dir=out, seed=seed,
                        freq_mhz=freq_mhz, router=router, sites=sites, timeout=timeout)
    return {"unit": unit.name, **report}
