"""The core's configuration: one TOML file describes the whole neural-ODE core.

``xbarode generate core``, ``xbarode simulate`` and ``xbarode demo`` read it; every field has a
default (the digits core, with the 16-bit formats the precision study chose), and every value
is validated with a message that names the field. Example (all fields, default values)::

    [core]
    image = [8, 8]            # H, W: the state has m = c·H·W entries
    structure = "dense"       # "dense" (A, B any m×m) or "conv" (k×k kernels)
    kernel = 3                # kernel size for structure = "conv" (odd)
    channels = 1              # c: the state's channels, the image in channel 0 and the
                              # others starting at 0; A and B are c×c kernel banks
                              # (c > 1: conv_path = "fourier")
    pool = 1                  # the head reads the pool×pool average of every channel of
                              # z_N (p divides H and W; inference); 1 is none
    classes = 10
    lanes = 16                # multipliers of tiles A and B each, 1 … m (default:
                              # 16, or m when smaller)
    lanes_c = 16              # multipliers of tile C (the classifier), dividing lanes
                              # (default: the largest divisor of lanes up to 16)
    conv_path = "direct"      # "direct": tiles hold the m×m matrices; "fourier": DFT,
                              # Hadamard product with the kernel's spectrum, inverse DFT

    [ode]
    steps = 8
    h = 0.25                  # a power of two: T = steps·h
    method = "euler"          # or "implicit_euler"
    neumann_terms = 8         # implicit Euler: inner terms per Newton iteration
    max_iter = 10             # Newton iterations per step, at most
    tol = 1                   # Newton stops at max|G| <= tol (LSBs of the state)

    [fixed]
    weight = "16.14"          # WIDTH.FRAC of each signal class
    state = "16.11"
    act = "16.9"
    grad = "16.11"
    acc_width = 48
    rounding = "stochastic"   # floor | nearest | stochastic (the shipped weights' rounding)
    lfsr_seed = 0xACE1ACE1    # rounding site k (tiles A, B, C: 0, 1, 2): site_seed(seed, k)
    fourier_data = "22.12"    # conv_path = "fourier": the Fourier units' data words
    twiddle = "18.16"         #   their DFT tables
    spectrum = "18.14"        #   the kernels' spectra

    [train]
    training = false          # build the adjoint, gradient accumulators and SGD step
    lr = 0.125                # SGD learning rate, a power of two
    batch = 32                # images per SGD step (APPLY), a power of two

    [device]                  # the crossbar's non-idealities (docs/device.md); all off
    dac_bits = 0              # input DAC bits, 2 … 32; 0 is none
    adc_bits = 0              # output ADC bits, 2 … 32; 0 is the output format's own
    adc_range = 1.0           # ADC clipping range, a power of two fraction of full scale
    read_noise = 0.0          # output noise deviation, a fraction of the ADC range
    program_noise = 0.0       # programming noise deviation, a fraction of the weight range
    states = 0                # conductance levels, a power of two >= 4; 0 is every word
    pulses = 0                # pulsed SGD: pulse-train length, a power of two; 0 is digital
    asymmetry = 0.0           # pulsed: up steps (1 + a), down steps (1 - a), -1 < a < 1
    soft_bounds = false       # pulsed: steps shrink linearly to 0 at the weight bounds

The ``[device]`` table describes the fixed-point model's device and converter models
(:class:`~xbarode.model.device.DeviceModel`); the RTL core carries the read models and the
write models (dense networks) in RUN and its training operations, the read models on its
Fourier path too (docs/device.md, "In the RTL core"), and refuses the rest.
:meth:`CoreConfig.to_toml` writes the table only when a model is on.

Limits (:data:`LIMITS`) keep the hardware a configuration describes, and so the memory and
time needed to elaborate and simulate it, bounded: image sides at most 64, ``H·W`` at
most 1024 and ``channels`` at most 16, ``steps`` at most 1024, ``classes`` at most 1024,
``neumann_terms`` at most 255, word widths at most 32 (the Fourier units' 40), ``batch``
at most 65536.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

__all__ = ["DEFAULT_LANES", "DEFAULT_LANES_C", "LIMITS", "ConfigError", "CoreConfig",
           "load_config", "parse_overrides"]


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the field."""


#: Default multipliers of tiles A and B (each; at most m) and of tile C (at most this, a
#: divisor of A's and B's). 16 + 16 + 16 is the digits core that fits the ECP5-85F with room
#: to route; 32 + 32 + 16 fills 78 % of its logic cells and 64 + 64 + 16 needs 109 %
#: (docs/timing.md, "Lanes per tile").
DEFAULT_LANES, DEFAULT_LANES_C = 16, 16

#: Upper bounds of the sizes (the hardware grows with each; ``steps = 10**8`` once grew to
#: 21.5 GB while elaborating).
LIMITS = {"side": 64, "m": 1024, "channels": 16, "steps": 1024, "classes": 1024,
          "neumann_terms": 255, "tol": 2**16, "batch": 2**16, "width": 32, "fourier_width": 40}

_METHODS = ("euler", "implicit_euler")
_STRUCTURES = ("dense", "conv")
_PATHS = ("direct", "fourier")


@dataclass(frozen=True)
class CoreConfig:
    """Everything that defines a core (see the module docstring for the TOML form)."""

    #: The fields of the ``[device]`` table.
    DEVICE_FIELDS: ClassVar[tuple[str, ...]] = ("dac_bits", "adc_bits", "adc_range",
                                                "read_noise", "program_noise", "states",
                                                "pulses", "asymmetry", "soft_bounds")

    image: tuple[int, int] = (8, 8)
    structure: str = "dense"
    kernel: int = 3
    channels: int = 1
    pool: int = 1
    classes: int = 10
    lanes: int | None = None
    lanes_c: int | None = None
    conv_path: str = "direct"
    steps: int = 8
    h: float = 0.25
    method: str = "euler"
    neumann_terms: int = 8
    max_iter: int = 10
    tol: int = 1
    weight: str = "16.14"
    state: str = "16.11"
    act: str = "16.9"
    grad: str = "16.11"
    acc_width: int = 48
    rounding: str = "stochastic"
    lfsr_seed: int = 0xACE1ACE1
    fourier_data: str = "22.12"
    twiddle: str = "18.16"
    spectrum: str = "18.14"
    training: bool = False
    lr: float = 0.125
    batch: int = 32
    dac_bits: int = 0
    adc_bits: int = 0
    adc_range: float = 1.0
    read_noise: float = 0.0
    program_noise: float = 0.0
    states: int = 0
    pulses: int = 0
    asymmetry: float = 0.0
    soft_bounds: bool = False

    # One check per field, each with a message naming it.
    def __post_init__(self):  # noqa: C901
        from xbarode.model.fixed import ROUNDINGS, Lfsr, parse_format

        def integer(name, low, high=None):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, not {value!r}")
            if value < low or (high is not None and value > high):
                bound = f">= {low}" if high is None else f"between {low} and {high}"
                raise ConfigError(f"{name} must be {bound}, not {value}")

        image = self.image
        if (not isinstance(image, (tuple, list)) or len(image) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                           for v in image)):
            raise ConfigError(f"image must be [H, W] with positive integers, not {image!r}")
        if max(image) > LIMITS["side"] or image[0] * image[1] > LIMITS["m"]:
            raise ConfigError(f"image must have sides of at most {LIMITS['side']} and at most "
                              f"{LIMITS['m']} pixels (H·W), not {image[0]}x{image[1]}")
        object.__setattr__(self, "image", tuple(image))
        for name, choices in (("structure", _STRUCTURES), ("conv_path", _PATHS),
                              ("method", _METHODS), ("rounding", ROUNDINGS)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {list(choices)}, not "
                                  f"{getattr(self, name)!r}")
        integer("kernel", 1)
        if self.structure == "conv" and (self.kernel % 2 == 0 or self.kernel > min(self.image)):
            raise ConfigError(f"kernel must be odd and fit the image {self.image}, not "
                              f"{self.kernel}")
        integer("channels", 1, LIMITS["channels"])
        integer("pool", 1, min(self.image))
        if self.image[0] % self.pool or self.image[1] % self.pool:
            raise ConfigError(f"pool must divide the image {self.image[0]}x{self.image[1]}, "
                              f"not {self.pool}")
        if self.pool > 1 and self.training:
            raise ConfigError("pool > 1 is for inference: training needs pool = 1")
        integer("classes", 2, LIMITS["classes"])
        if self.lanes is None:
            object.__setattr__(self, "lanes", min(DEFAULT_LANES, self.m))
        integer("lanes", 1, self.m)
        if self.lanes_c is None:
            # C computes once per image: fewer multipliers cost little time.
            divisors = range(1, min(DEFAULT_LANES_C, self.lanes) + 1)
            object.__setattr__(self, "lanes_c",
                               max(d for d in divisors if self.lanes % d == 0))
        integer("lanes_c", 1, self.lanes)
        if self.lanes % self.lanes_c:
            # The state moves between A's and C's banks a C chunk per cycle, inside one of
            # A's chunks (hdl/core_forward.py, the copy of z_N into C).
            raise ConfigError(f"lanes_c must divide lanes ({self.lanes}), not {self.lanes_c}")
        integer("steps", 1, LIMITS["steps"])
        integer("neumann_terms", 0, LIMITS["neumann_terms"])
        integer("max_iter", 0, 255)
        integer("tol", 0, LIMITS["tol"])
        integer("acc_width", 8, 62)
        for name in ("h", "lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0 \
                    or math.log2(value) != round(math.log2(value)) \
                    or not -64 <= math.log2(value) <= 64:
                raise ConfigError(f"{name} must be a power of two (a shift in hardware), not "
                                  f"{value!r}")
        integer("batch", 1, LIMITS["batch"])
        if self.batch & (self.batch - 1):
            raise ConfigError(f"batch must be a power of two (a shift in hardware), not "
                              f"{self.batch}")
        if not isinstance(self.training, bool):
            raise ConfigError(f"training must be true or false, not {self.training!r}")
        for name in ("weight", "state", "act", "grad", "fourier_data", "twiddle", "spectrum"):
            try:
                fmt = parse_format(getattr(self, name))
            except (ValueError, TypeError) as error:
                raise ConfigError(f"{name}: {error}") from None
            limit = LIMITS["width" if name in ("weight", "state", "act", "grad")
                           else "fourier_width"]
            if fmt.width > limit:
                raise ConfigError(f"{name}: a width of at most {limit} bits, not "
                                  f"{getattr(self, name)}")
        try:
            Lfsr(self.lfsr_seed)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"lfsr_seed: {error}") from None
        self._check_device()
        if self.training:
            try:
                self.formats().check(self.m, self.classes,
                                     gradient_terms=self.steps * self.batch)
            except ValueError as error:
                raise ConfigError(f"acc_width: {error}") from None
        if self.channels > 1 and self.conv_path != "fourier":
            # Tiles A and B would hold the (c·H·W)² block matrices of the kernel banks.
            raise ConfigError(f"channels = {self.channels} needs conv_path 'fourier' (the "
                              f"direct path's core has one channel)")
        if self.channels > 1 and self.device() is not None:
            raise ConfigError("the Fourier path with channels has no device models: "
                              "[device] must be off with channels > 1")
        if self.conv_path == "fourier":
            if self.structure != "conv":
                raise ConfigError("conv_path 'fourier' needs structure 'conv'")
            if self.training:
                raise ConfigError("conv_path 'fourier' is for inference; training needs "
                                  "conv_path 'direct'")
            # State and activation words enter the Fourier units by a shift, exactly.
            data = parse_format(self.fourier_data)
            for name in ("state", "act"):
                fmt = parse_format(getattr(self, name))
                if not data.holds(fmt):
                    raise ConfigError(
                        f"fourier_data {self.fourier_data} cannot hold {name} words "
                        f"({getattr(self, name)}) exactly: it needs at least "
                        f"{fmt.width - fmt.frac} integer and {fmt.frac} fractional bits")

    def _check_device(self) -> None:
        for name in ("dac_bits", "adc_bits", "states", "pulses"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, not {value!r}")
        for name in ("dac_bits", "adc_bits"):
            value = getattr(self, name)
            if value != 0 and not 2 <= value <= 32:
                raise ConfigError(f"{name} must be 0 (none) or from 2 to 32, not {value}")
        if self.states != 0 and (self.states < 4 or self.states > 2**32
                                 or self.states & (self.states - 1)):
            raise ConfigError(f"states must be 0 (every word) or a power of two from 4 to "
                              f"2^32, not {self.states}")
        if self.pulses != 0 and (self.pulses < 0 or self.pulses & (self.pulses - 1)
                                 or self.pulses > 4096):
            raise ConfigError(f"pulses must be 0 (the digital SGD step) or a power of two from "
                              f"1 to 4096, not {self.pulses}")
        try:
            self.device()
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def device(self):
        """The :class:`~xbarode.model.device.DeviceModel` of the ``[device]`` table, or None
        when every model is off."""
        from xbarode.model.device import DeviceModel

        device = DeviceModel(dac_bits=self.dac_bits or None, adc_bits=self.adc_bits or None,
                             adc_range=self.adc_range, read_noise=self.read_noise,
                             program_noise=self.program_noise, states=self.states or None,
                             pulses=self.pulses or None, asymmetry=self.asymmetry,
                             soft_bounds=self.soft_bounds)
        return None if device.off else device

    def require_ideal_device(self, what: str) -> None:
        """Raise :class:`ConfigError` if the ``[device]`` table turns a model on: ``what`` has
        no device models."""
        if self.device() is not None:
            on = [name for name in _GROUPS["device"]
                  if getattr(self, name) != getattr(CoreConfig, name)]
            raise ConfigError(f"[device] turns on {', '.join(on)}: {what} has no device "
                              f"models yet (they run in the fixed-point model: xbarode train "
                              f"and evaluate with --dac-bits, --adc-bits, …)")

    @property
    def m(self) -> int:
        """State size ``c·H·W`` (``H·W`` with one channel)."""
        return self.channels * self.pixels

    @property
    def features(self) -> int:
        """Words the head C reads: ``m``, or ``c·(H/p)·(W/p)`` after a p×p pool."""
        return self.m // (self.pool * self.pool)

    @property
    def pixels(self) -> int:
        """Image size ``H·W``: the words of LOAD_IMAGE, channel 0 of the state."""
        return self.image[0] * self.image[1]

    @property
    def h_shift(self) -> int:
        """``h = 2^-h_shift``."""
        return -round(math.log2(self.h))

    @property
    def sgd_shift(self) -> int:
        """``lr / batch = 2^-sgd_shift``: the SGD step's shift (tiles A and B add ``h``)."""
        return -round(math.log2(self.lr)) + round(math.log2(self.batch))

    def formats(self):
        """The :class:`~xbarode.model.fixed_net.FixedFormats` of the configuration."""
        from xbarode.model.fixed import parse_format
        from xbarode.model.fixed_net import FixedFormats

        return FixedFormats(weight=parse_format(self.weight), state=parse_format(self.state),
                            act=parse_format(self.act), grad=parse_format(self.grad),
                            acc_width=self.acc_width)

    def conv_taps(self):
        """Columns of each kernel tap in A's and Bᵀ's matrices
        (:func:`~xbarode.model.conv.tap_columns`) for ``structure = "conv"`` on the direct
        path; None otherwise. Training keeps the kernels' weights tied along these."""
        if self.structure != "conv" or self.conv_path != "direct":
            return None
        from xbarode.model.conv import tap_columns

        return tap_columns(self.kernel, self.image)

    def fourier(self) -> dict | None:
        """The Fourier path's shape and formats for
        :class:`~xbarode.model.fixed_net.FixedNetwork` (``conv_path = "fourier"``), else
        None."""
        if self.conv_path != "fourier":
            return None
        from xbarode.model.fixed import parse_format

        return {"shape": self.image, "data": parse_format(self.fourier_data),
                "twiddle": parse_format(self.twiddle), "spectrum": parse_format(self.spectrum)}

    def newton(self) -> dict:
        """Newton options of the fixed-point model."""
        return {"neumann_terms": self.neumann_terms, "max_iter": self.max_iter,
                "tol": self.tol}

    def to_toml(self) -> str:
        """The configuration as a TOML file (every field)."""
        d = asdict(self)
        lines = []
        for group, names in _GROUPS.items():
            if group == "device" and self.device() is None:
                continue        # the ideal array: the file of a core without device models
            lines.append(f"[{group}]")
            for name in names:
                value = d[name]
                if isinstance(value, bool):
                    text = "true" if value else "false"
                elif isinstance(value, str):
                    text = f'"{value}"'
                elif isinstance(value, (tuple, list)):
                    text = "[" + ", ".join(str(v) for v in value) + "]"
                elif name == "lfsr_seed":
                    text = f"0x{value:08X}"
                else:
                    text = repr(value)
                lines.append(f"{name} = {text}")
            lines.append("")
        return "\n".join(lines)


_GROUPS = {"core": ("image", "structure", "kernel", "channels", "pool", "classes",
                    "lanes", "lanes_c", "conv_path"),
           "ode": ("steps", "h", "method", "neumann_terms", "max_iter", "tol"),
           "fixed": ("weight", "state", "act", "grad", "acc_width", "rounding", "lfsr_seed",
                     "fourier_data", "twiddle", "spectrum"),
           "train": ("training", "lr", "batch"),
           "device": CoreConfig.DEVICE_FIELDS}


def parse_overrides(items) -> dict:
    """``KEY=VALUE`` strings (VALUE in TOML syntax, bare words taken as strings) as a dict."""
    values = {}
    known = {f.name for f in fields(CoreConfig)}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise ConfigError(f"--set takes KEY=VALUE with KEY one of {', '.join(sorted(known))}"
                              f", not {item!r}")
        try:
            values[key] = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            values[key] = text.strip()
    return values


def load_config(path=None, overrides: dict | None = None) -> CoreConfig:
    """Read and validate a core configuration file; the default configuration for None.

    ``overrides`` (field → value, e.g. from the command line's ``--set``) win over the file.

    Raises
    ------
    ConfigError
        For a missing or unreadable file, invalid TOML, an unknown table or key, or a bad
        value; the message names the file and the field.
    """
    if path is None:
        return CoreConfig(**(overrides or {}))
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read configuration {path}: {error.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    values = {}
    for group, table in data.items():
        if group not in _GROUPS:
            raise ConfigError(f"{path}: unknown table [{group}]; expected "
                              f"{', '.join(f'[{g}]' for g in _GROUPS)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {group} must be a table")
        for key, value in table.items():
            if key not in _GROUPS[group]:
                raise ConfigError(f"{path}: unknown key {key!r} in [{group}]; expected one "
                                  f"of {', '.join(_GROUPS[group])}")
            values[key] = value
    values.update(overrides or {})
    try:
        return CoreConfig(**values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
