"""The image neural ODE: configuration, forward pass, gradients, training, weights files.

The network is ``z_0 = x`` (a flattened H×W image: 8×8 digits or 28×28 mnist5k),
``dz/dt = B·relu(A z)`` over ``[0, T]`` with ``steps`` fixed steps, ``logits = C·z_N + d``.
``A`` and ``B`` are either circular convolutions with k×k kernels (``structure="conv"``) or
dense m×m matrices (``structure="dense"``, one full crossbar tile each).

With ``channels = c > 1`` the state is c images: ``z_0`` holds the image in channel 0 and
zeros in the others (augmented neural ODE), ``A`` and ``B`` are c×c banks of k×k circular
convolutions (:class:`~xbarode.model.conv.ConvBank`). With ``pool = p > 1`` the head reads
the p×p average pool of every channel of ``z_N`` (docs/architecture.md §1).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _checks
from .adjoint import adjoint
from .classifier import (
    augment,
    avg_pool,
    avg_pool_grad,
    head_grads,
    logits,
    softmax_cross_entropy,
)
from .conv import Conv, ConvBank, Dense, tap_columns
from .core_config import CoreConfig
from .data import DATASET_SHAPES, DATASETS, DIGITS_SHAPE, Split, load_dataset
from .device import DeviceModel
from .fixed import LFSR_SEED, ROUNDINGS, Lfsr, parse_format
from .fixed_net import FixedFormats, FixedNetwork
from .fixed_ops import check_accumulator, dft_device, power_of_two_shift
from .ode import SOLVERS, odeint

__all__ = [
    "CONV_PATHS",
    "DIVERGED_LOSS",
    "Config",
    "TrainingDiverged",
    "WeightsError",
    "accuracy",
    "check_dataset",
    "fourier_options",
    "init_params",
    "load_weights",
    "loss_and_grads",
    "predict",
    "save_weights",
    "train",
]

#: The ways a convolution runs in fixed point (:attr:`Config.conv_path`), as the core's.
CONV_PATHS = ("direct", "fourier")

#: The Fourier path's fields of :class:`Config`, omitted from :meth:`Config.to_dict` on the
#: direct path with the core's default formats.
_FOURIER_FIELDS = ("conv_path", "fourier_data", "twiddle", "spectrum")

#: Tag stored in every weights file; files without it are refused.
WEIGHTS_FORMAT = "xbarode-weights/1"


class WeightsError(ValueError):
    """A weights file is missing, corrupt, or does not fit the configuration asked for."""


@dataclass(frozen=True)
class Config:
    """Everything that defines a trained network and the run that trained it.

    Attributes
    ----------
    structure : {"conv", "dense"}
        Parameterisation of ``A`` and ``B``: k×k kernels or dense m×m matrices.
    kernel_size : int
        Odd kernel size for ``structure="conv"``.
    image_shape : tuple of int
        ``(H, W)``; the digits are 8×8, mnist5k 28×28.
    classes : int
        Number of classes.
    channels : int
        Channels ``c`` of the state: 1 is the one-image network; ``c > 1`` (conv only) starts
        with the image in channel 0 and zeros in the others, ``A`` and ``B`` c×c kernel banks.
    pool : int
        The head reads the ``pool``×``pool`` average pool of every channel of ``z_N``; 1 is no
        pool. Must divide H and W.
    dataset : str
        The data set trained on (a key of :data:`~xbarode.model.data.DATASETS`); :func:`train`
        loads it when no data is given, and its images must be ``image_shape``.
    steps : int
        Solver steps N.
    T : float
        Integration horizon; the step is ``h = T / steps``.
    method : {"euler", "implicit_euler"}
        Solver.
    linear_solver : {"exact", "neumann"}
        Newton's linear solve (implicit Euler only).
    neumann_terms, max_iter : int
        Neumann terms per solve and the Newton iteration limit (implicit Euler only).
    tol : float
        Newton tolerance on ``‖G‖∞`` (implicit Euler only).
    epochs, batch_size : int
        Training length and mini-batch size.
    optimizer : {"sgd", "adam"}
        Plain mini-batch SGD (the one the hardware can run) or Adam (float64 only).
    lr : float
        Learning rate.
    seed : int
        Seeds initialisation and mini-batch order; same seed, same weights.
    init_scale : float
        Standard deviation of the initial ``A`` and ``B`` entries, relative to ``1/√fan_in``.
    precision : {"float64", "fixed"}
        Arithmetic of training and inference. ``fixed`` is the bit-exact integer model of
        :mod:`xbarode.model.fixed_net`; it needs SGD, and ``h``, ``lr`` and ``batch_size``
        powers of two.
    weight_format, state_format, act_format, grad_format : str
        ``"WIDTH.FRAC"`` of each signal class in fixed point (docs/architecture.md §2).
    acc_width : int
        Accumulator width in fixed point.
    rounding : {"floor", "nearest", "stochastic"}
        Rounding of every narrowing in fixed point.
    lfsr_seed : int
        First LFSR seed of stochastic rounding (tiles A, B, C and the loss gradient use it and
        the next three values).
    device : DeviceModel, optional
        The crossbar's device and converter models in fixed point (docs/device.md): the
        network's tiles read and write through them, in training and inference. Fixed point
        only (float64 ignores it); no write models with ``structure "conv"`` (one channel or
        kernel banks, on the direct or the Fourier path: the read models only). Omitted from
        :meth:`to_dict` while None.
    conv_path : {"direct", "fourier"}
        How the convolutions run in fixed point, as the core's ``conv_path``
        (:class:`~xbarode.model.core_config.CoreConfig`): ``"direct"``, tiles holding the
        convolution matrices; ``"fourier"``, a DFT, a product with the kernels' spectra per
        frequency and an inverse DFT (:class:`~xbarode.model.fixed_ops.FixedFourierConv`, or
        :class:`~xbarode.model.fixed_fourier_bank.FixedFourierBank` with channels).
        ``"fourier"`` needs ``structure "conv"``, ``precision "fixed"``, and of a device model
        the read models only (on its DFT arrays and tile C, docs/device.md). It trains too
        (in the model; the core's Fourier path is for inference): the adjoint's transposed
        products run through the same Fourier units, the kernel gradients are the
        direct path's exact tap sums, and each SGD step moves the kernels' weight words, whose
        spectra the next products use (:class:`~xbarode.model.fixed_fourier_bank.
        FixedFourierBank`); training also needs ``fourier_data`` to hold the grad words.
    fourier_data, twiddle, spectrum : str
        ``"WIDTH.FRAC"`` of the Fourier units' data words, DFT tables and
        the kernels' spectra; the core's defaults. ``fourier_data`` must hold the state and
        activation words exactly. Used with ``conv_path "fourier"`` only.

    The four Fourier fields are omitted from :meth:`to_dict` while ``conv_path`` is
    ``"direct"`` and the formats are the defaults, so weights files written before they
    existed load as the direct path, and the direct path's dictionaries are unchanged.
    """

    structure: str = "dense"
    kernel_size: int = 3
    image_shape: tuple[int, int] = DIGITS_SHAPE
    classes: int = 10
    channels: int = 1
    pool: int = 1
    dataset: str = "digits"
    steps: int = 8
    T: float = 2.0
    method: str = "euler"
    linear_solver: str = "exact"
    neumann_terms: int = 30
    max_iter: int = 50
    tol: float = 1e-10
    epochs: int = 30
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.125
    seed: int = 0
    init_scale: float = 0.5
    precision: str = "float64"
    weight_format: str = "16.14"
    state_format: str = "16.11"
    act_format: str = "16.9"
    grad_format: str = "16.11"
    acc_width: int = 48
    rounding: str = "stochastic"
    lfsr_seed: int = LFSR_SEED
    device: DeviceModel | None = None
    conv_path: str = CoreConfig.conv_path
    fourier_data: str = CoreConfig.fourier_data
    twiddle: str = CoreConfig.twiddle
    spectrum: str = CoreConfig.spectrum
    _model_fields: tuple = field(default=("structure", "kernel_size", "image_shape", "classes",
                                          "channels", "pool"),
                                 init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.structure not in ("conv", "dense"):
            raise ValueError(f"structure must be 'conv' or 'dense', not {self.structure!r}")
        object.__setattr__(self, "image_shape", _checks.image_shape(self.image_shape))
        if self.structure == "conv":
            _checks.kernel(np.zeros((self.kernel_size,) * 2), self.image_shape)
        _checks.positive_int("classes", self.classes, minimum=2)
        self._check_channels()
        _checks.positive_int("steps", self.steps)
        _checks.positive_float("T", self.T)
        if self.method not in SOLVERS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {sorted(SOLVERS)}")
        if self.linear_solver not in ("exact", "neumann"):
            raise ValueError(
                f"linear_solver must be 'exact' or 'neumann', not {self.linear_solver!r}"
            )
        _checks.positive_int("neumann_terms", self.neumann_terms)
        _checks.positive_int("max_iter", self.max_iter)
        _checks.positive_float("tol", self.tol)
        _checks.positive_int("epochs", self.epochs)
        _checks.positive_int("batch_size", self.batch_size)
        _checks.positive_float("lr", self.lr)
        _checks.positive_int("seed", self.seed, minimum=0)
        _checks.positive_float("init_scale", self.init_scale)
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', not {self.optimizer!r}")
        if self.precision not in ("float64", "fixed"):
            raise ValueError(f"precision must be 'float64' or 'fixed', not {self.precision!r}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {self.rounding!r}; choose one of {list(ROUNDINGS)}")
        Lfsr(self.lfsr_seed)
        formats = self.fixed_formats()  # validates every format and the accumulator width
        self._check_device()
        if self.precision == "fixed":
            power_of_two_shift(self.h, "h = T/steps")
            formats.check(self.state_size, self.classes, features=self.features)
        self._check_fourier()

    def _check_fourier(self) -> None:
        """The core's checks of the Fourier fields (same messages), then this network's."""
        if self.conv_path not in CONV_PATHS:
            raise ValueError(f"conv_path must be one of {list(CONV_PATHS)}, not "
                             f"{self.conv_path!r}")
        formats = {}
        for name in _FOURIER_FIELDS[1:]:
            try:
                formats[name] = parse_format(getattr(self, name))
            except (ValueError, TypeError) as error:
                raise ValueError(f"{name}: {error}") from None
        if self.conv_path != "fourier":
            return
        if self.structure != "conv":
            raise ValueError("conv_path 'fourier' needs structure 'conv'")
        if self.precision != "fixed":
            raise ValueError("conv_path 'fourier' needs precision 'fixed' (in float64 the "
                             "Fourier path computes the same convolution)")
        if self.device is not None and not self.device.off and self.device.writes:
            dft_device(self.device, "the Fourier path")     # read models only: the table is fixed
        # State and activation words enter the Fourier units by a shift, exactly.
        data = formats["fourier_data"]
        for name in ("state", "act"):
            fmt = parse_format(getattr(self, f"{name}_format"))
            if not data.holds(fmt):
                raise ValueError(
                    f"fourier_data {self.fourier_data} cannot hold {name} words "
                    f"({getattr(self, f'{name}_format')}) exactly: it needs at least "
                    f"{fmt.width - fmt.frac} integer and {fmt.frac} fractional bits")
        if self.channels > 1:
            # The banks' mixing accumulator (FixedFourierBank's check, before any work).
            check_accumulator(self.acc_width, data, formats["spectrum"], 2 * self.channels,
                              name="A")

    def _check_device(self) -> None:
        device = self.device
        if device is not None and not isinstance(device, DeviceModel):
            raise TypeError(f"device must be a DeviceModel or None, not "
                            f"{type(device).__name__}")
        if self.precision != "fixed" or device is None or device.off:
            return
        if self.structure == "conv" and device.writes:
            raise ValueError("the device's write models (states, program_noise) need "
                             "structure 'dense'; a convolution's tied weights would drift "
                             "apart")

    def _check_channels(self) -> None:
        _checks.positive_int("channels", self.channels)
        _checks.positive_int("pool", self.pool)
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown data set {self.dataset!r}; choose one of "
                             f"{sorted(DATASETS)}")
        height, width = self.image_shape
        if height % self.pool or width % self.pool:
            raise ValueError(f"pool {self.pool} does not divide the {height}x{width} image")
        if self.channels > 1 and self.structure != "conv":
            raise ValueError(f"channels {self.channels} needs structure 'conv' (kernel banks), "
                             f"not {self.structure!r}")

    def check_trainable(self) -> None:
        """Raise unless :func:`train` can run this configuration.

        Fixed-point training needs SGD with a power-of-two learning rate and batch size (they
        become shifts) and an accumulator wide enough for the gradient sums; on the Fourier
        path, a data format that holds the grad words exactly (the adjoint's products take
        them by a shift, as the forward's take the state and act words).
        """
        if self.precision != "fixed":
            return
        if self.optimizer != "sgd":
            raise ValueError("fixed-point training uses optimizer 'sgd', not "
                             f"{self.optimizer!r}")
        power_of_two_shift(self.lr, "lr")
        power_of_two_shift(1 / self.batch_size, "1/batch_size")
        self.fixed_formats().check(self.state_size, self.classes,
                                   gradient_terms=self.steps * self.batch_size,
                                   features=self.features)
        grad = parse_format(self.grad_format)
        if self.conv_path == "fourier" and not parse_format(self.fourier_data).holds(grad):
            raise ValueError(
                f"fourier_data {self.fourier_data} cannot hold grad words ({self.grad_format}) "
                f"exactly, which training on the Fourier path needs: it needs at least "
                f"{grad.width - grad.frac} integer and {grad.frac} fractional bits")

    @property
    def h(self) -> float:
        """Step size ``T / steps``."""
        return self.T / self.steps

    @property
    def m(self) -> int:
        """Pixels per image ``H·W`` (the state size with one channel)."""
        return self.image_shape[0] * self.image_shape[1]

    @property
    def state_size(self) -> int:
        """State size ``channels·H·W``."""
        return self.channels * self.m

    @property
    def features(self) -> int:
        """Inputs of the head: ``channels·(H/pool)·(W/pool)``."""
        return self.state_size // self.pool**2

    def fixed_formats(self) -> FixedFormats:
        """The formats of the fixed-point signal classes."""
        return FixedFormats(weight=parse_format(self.weight_format),
                            state=parse_format(self.state_format),
                            act=parse_format(self.act_format),
                            grad=parse_format(self.grad_format), acc_width=self.acc_width)

    @property
    def solver_options(self) -> dict:
        """Keyword options for :func:`~xbarode.model.ode.odeint` and the adjoint."""
        if self.method == "euler":
            return {}
        return {"linear_solver": self.linear_solver, "neumann_terms": self.neumann_terms,
                "max_iter": self.max_iter, "tol": self.tol}

    def to_dict(self) -> dict:
        """A JSON-ready dictionary of every field."""
        data = dataclasses.asdict(self)
        del data["_model_fields"]
        if self.device is None:
            del data["device"]     # the dictionary (and content hashes) of the ideal array
        if self.conv_path == "direct" and all(getattr(self, name) == getattr(CoreConfig, name)
                                              for name in _FOURIER_FIELDS):
            for name in _FOURIER_FIELDS:
                del data[name]     # the direct path's dictionary, as before the Fourier path
        data["image_shape"] = list(self.image_shape)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        """Build a configuration from :meth:`to_dict` output; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown configuration keys {sorted(unknown)}")
        data = dict(data)
        if data.get("device") is not None:
            data["device"] = DeviceModel(**data["device"])
        if "image_shape" in data:
            data["image_shape"] = tuple(data["image_shape"])
        return cls(**data)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each parameter array: ``A``, ``B``, ``C``, ``d``.

        ``A`` and ``B`` are k×k kernels (conv, one channel), ``(c, c, k, k)`` banks (conv,
        ``c`` channels) or m×m matrices (dense); ``C`` is ``(classes, features)``.
        """
        ab = (self.kernel_size,) * 2 if self.structure == "conv" else (self.m, self.m)
        if self.channels > 1:
            ab = (self.channels, self.channels, *ab)
        return {"A": ab, "B": ab, "C": (self.classes, self.features), "d": (self.classes,)}


def operators(config: Config, params: dict) -> tuple[Dense | Conv | ConvBank, ...]:
    """The operators ``A`` and ``B`` for a parameter set."""
    if config.channels > 1:
        return (ConvBank(params["A"], config.image_shape),
                ConvBank(params["B"], config.image_shape))
    if config.structure == "conv":
        return Conv(params["A"], config.image_shape), Conv(params["B"], config.image_shape)
    return Dense(params["A"]), Dense(params["B"])


def init_params(config: Config) -> dict[str, np.ndarray]:
    """Seeded initial parameters: scaled Gaussian ``A``, ``B``; zero head."""
    rng = np.random.default_rng(config.seed)
    shapes = config.param_shapes()
    fan_in = (config.channels * config.kernel_size**2 if config.structure == "conv"
              else config.m)
    scale = config.init_scale / np.sqrt(fan_in)
    return {
        "A": rng.normal(0.0, scale, shapes["A"]),
        "B": rng.normal(0.0, scale, shapes["B"]),
        "C": np.zeros(shapes["C"]),
        "d": np.zeros(shapes["d"]),
    }


def fourier_options(config: Config) -> dict | None:
    """The ``fourier`` argument of :class:`~xbarode.model.fixed_net.FixedNetwork` for
    ``config`` (``conv_path = "fourier"``: the image shape, the three formats and, with
    channels, the mixing accumulator's width ``acc_width``), else None."""
    if config.conv_path != "fourier":
        return None
    options = {"shape": config.image_shape, "data": parse_format(config.fourier_data),
               "twiddle": parse_format(config.twiddle),
               "spectrum": parse_format(config.spectrum)}
    if config.channels > 1:
        options["acc_width"] = config.acc_width
    return options


def fixed_network(config: Config, params: dict) -> FixedNetwork:
    """The integer network for float ``params`` (quantised to the weight format, nearest).

    With ``conv_path = "fourier"`` A and B are the kernels' Fourier units
    (:func:`fourier_options`), always banks (:class:`~xbarode.model.fixed_fourier_bank.
    FixedFourierBank`; one channel as a 1×1 bank, bit for bit the one-channel unit), so that
    the network trains. Otherwise, with ``structure = "conv"`` the
    tiles hold the kernels' convolution matrices (the direct path) and SGD keeps the kernels'
    weights tied: with one channel, tiles holding the m×m matrices (``conv_taps``); with ``c``
    channels, tiles holding the (c·m)×(c·m) block matrices of the banks
    (:class:`~xbarode.model.fixed_bank.FixedConvBank`).
    """
    newton = {"neumann_terms": config.neumann_terms, "max_iter": config.max_iter}
    taps = None
    fourier = fourier_options(config)
    if fourier is not None:
        bank = (config.channels, config.channels, *(config.kernel_size,) * 2)
        params = {**params, "A": np.reshape(params["A"], bank),
                  "B": np.reshape(params["B"], bank)}
    elif config.structure == "conv" and config.channels == 1:
        A, B = operators(config, params)
        params = {**params, "A": A.dense(), "B": B.dense()}
        taps = tap_columns(config.kernel_size, config.image_shape)
    return FixedNetwork(params, config.fixed_formats(), rounding=config.rounding, h=config.h,
                        steps=config.steps, method=config.method, newton=newton,
                        lfsr_seed=config.lfsr_seed, conv_taps=taps, fourier=fourier,
                        image_shape=config.image_shape, pool=config.pool, device=config.device)


def network_params(config: Config, net: FixedNetwork) -> dict[str, np.ndarray]:
    """The parameters of ``config``'s shapes held by ``net``: its matrices, or for
    ``structure = "conv"`` the kernels read from row 0 of A's and B's matrices (SGD keeps
    every row the same); with ``c`` channels, or on the Fourier path, the banks' kernels."""
    params = net.params()
    if config.conv_path == "fourier":
        shapes = config.param_shapes()
        params.update({name: params[name].reshape(shapes[name]) for name in "AB"})
    elif config.structure == "conv" and config.channels == 1:
        k = config.kernel_size
        for name in "AB":
            params[name] = params[name][0, net.conv_taps[:, 0]].reshape(k, k)
    return params


def predict(config: Config, params: dict, x: np.ndarray) -> np.ndarray:
    """Logits (float64 values) for a batch of flattened images ``x`` (batch, m).

    With ``config.precision == "fixed"`` these are the values of the integer network's logits
    (on ``config.conv_path``).
    """
    if config.precision == "fixed":
        net = fixed_network(config, params)
        return config.fixed_formats().act.to_float(net.forward(x)[0])
    A, B = operators(config, params)
    trajectory = odeint(A, B, augment(x, config.channels), config.h, config.steps,
                        config.method, **config.solver_options)
    features = avg_pool(trajectory[-1], config.channels, config.image_shape, config.pool)
    return logits(params["C"], params["d"], features)


def accuracy(config: Config, params: dict, x: np.ndarray, y: np.ndarray,
             batch: int = 512, overflow: dict | None = None) -> float:
    """Fraction of ``x`` classified as ``y``, in ``config.precision`` (in fixed point on
    ``config.conv_path``; one network for all of ``x``, run ``batch`` images at a time).

    In fixed point, the saturation counts per site are added to ``overflow`` (a dict), so
    that one dict sums several calls (on the Fourier path, the Fourier units' sites too).
    """
    if config.precision == "fixed":
        net = fixed_network(config, params)
        correct = sum(int((net.predict(x[i:i + batch]) == y[i:i + batch]).sum())
                      for i in range(0, len(y), batch))
        if overflow is not None:
            for site, count in net.overflow.counts.items():
                overflow[site] = overflow.get(site, 0) + count
        return correct / len(y)
    correct = 0
    for start in range(0, len(y), batch):
        scores = predict(config, params, x[start:start + batch])
        correct += int((scores.argmax(axis=1) == y[start:start + batch]).sum())
    return correct / len(y)


def loss_and_grads(config: Config, params: dict, x: np.ndarray, y: np.ndarray):
    """Mean cross-entropy of a batch and its gradient for every parameter (discrete adjoint).

    Returns
    -------
    loss : float
    grads : dict of ndarray
        Keys ``A``, ``B``, ``C``, ``d``, shaped like ``params``.
    """
    A, B = operators(config, params)
    options = config.solver_options
    trajectory = odeint(A, B, augment(x, config.channels), config.h, config.steps,
                        config.method, **options)
    shape = (config.channels, config.image_shape, config.pool)
    features = avg_pool(trajectory[-1], *shape)
    scores = logits(params["C"], params["d"], features)
    loss, grad_scores = softmax_cross_entropy(scores, y)
    grad_C, grad_d, grad_features = head_grads(grad_scores, features, params["C"])
    grad_z = avg_pool_grad(grad_features, *shape)
    _, grad_A, grad_B = adjoint(A, B, trajectory, config.h, grad_z, config.method, **options)
    return loss, {"A": grad_A, "B": grad_B, "C": grad_C, "d": grad_d}


class Adam:
    """Adam (Kingma & Ba 2015) with the usual defaults, updating a dict of arrays in place."""

    def __init__(self, params: dict, lr: float, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params: dict, grads: dict) -> None:
        """Apply one update."""
        self.t += 1
        for k, g in grads.items():
            self.m[k] = self.beta1 * self.m[k] + (1 - self.beta1) * g
            self.v[k] = self.beta2 * self.v[k] + (1 - self.beta2) * g * g
            m_hat = self.m[k] / (1 - self.beta1**self.t)
            v_hat = self.v[k] / (1 - self.beta2**self.t)
            params[k] -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class Sgd:
    """Plain mini-batch SGD, ``p <- p - lr·g``, updating a dict of arrays in place."""

    def __init__(self, params: dict, lr: float):
        self.lr = lr

    def step(self, params: dict, grads: dict) -> None:
        """Apply one update."""
        for k, g in grads.items():
            params[k] -= self.lr * g


OPTIMIZERS = {"sgd": Sgd, "adam": Adam}


def _float_stepper(config: Config):
    params = init_params(config)
    optimiser = OPTIMIZERS[config.optimizer](params, config.lr)

    def step(x, y):
        loss, grads = loss_and_grads(config, params, x, y)
        optimiser.step(params, grads)
        return loss

    return step, lambda: params, lambda: ({}, 0)


def _fixed_stepper(config: Config):
    params = init_params(config)
    if config.conv_path == "fourier":
        # The kernels start as the weight words the direct path's tiles would load, so that
        # both paths start from the same words (and every step keeps them on that grid).
        weight = config.fixed_formats().weight
        params.update({name: weight.to_float(weight.quantize(params[name], "nearest"))
                       for name in "AB"})
    net = fixed_network(config, params)
    net.overflow.clear()  # saturation while loading the initial weights is not training's

    def step(x, y):
        scores, trajectory, _ = net.forward(x)
        grad_scores = net.loss_gradient(scores, y)
        net.sgd_step(net.backward(trajectory, grad_scores), lr=config.lr,
                     batch_size=config.batch_size)
        values = net.formats.act.to_float(scores)
        return softmax_cross_entropy(values, y)[0]

    return (step, lambda: network_params(config, net),
            lambda: (dict(net.overflow.counts), net.overflow.total_words))


def train(config: Config, data: Split | None = None, progress=None):
    """Train the network with mini-batch SGD (or Adam), in float64 or fixed point.

    Parameters
    ----------
    config : Config
        Network and training settings.
    data : Split, optional
        Defaults to ``load_dataset(config.dataset)``; its images must have ``config.m``
        pixels.
    progress : callable, optional
        Wraps the epoch range (e.g. ``tqdm.tqdm``); called as ``progress(iterable)``.

    Returns
    -------
    params : dict of ndarray
    summary : dict
        ``train_accuracy``, ``test_accuracy``, ``final_loss``, ``losses`` (mean per epoch),
        ``overflows`` (saturated elements during fixed-point training; 0 in float64),
        ``overflow_sites`` (the same per narrowing site), ``narrowed_words`` (words narrowed
        during fixed-point training, saturated or not), ``overflow_fraction`` (``overflows /
        narrowed_words``; 0 in float64) and ``seconds``.

    Raises
    ------
    TrainingDiverged
        When training diverges (a non-finite loss or state, or a batch loss above
        :data:`DIVERGED_LOSS`); the message names the epoch and the learning rate.
    ValueError
        When the data's images are not ``config.image_shape``.
    """
    config.check_trainable()
    if data is None:
        check_dataset(config, config.dataset)
        data = load_dataset(config.dataset)
    if data.x_train.shape[1] != config.m:
        raise ValueError(f"the data's images have {data.x_train.shape[1]} pixels, the "
                         f"network's {config.image_shape[0]}x{config.image_shape[1]} = "
                         f"{config.m}")
    start = time.perf_counter()
    stepper = _fixed_stepper if config.precision == "fixed" else _float_stepper
    step, current_params, training_overflows = stepper(config)
    rng = np.random.default_rng(config.seed + 1)
    epochs = range(config.epochs)
    losses = []
    for epoch in progress(epochs) if progress else epochs:
        order = rng.permutation(len(data.y_train))
        total = 0.0
        for first in range(0, len(order), config.batch_size):
            batch = order[first:first + config.batch_size]
            try:
                with np.errstate(over="ignore", invalid="ignore"):
                    loss = step(data.x_train[batch], data.y_train[batch])
            except FloatingPointError:
                loss = np.nan   # the solver's state blew up: the weights did, not h
            if not np.isfinite(loss) or loss > DIVERGED_LOSS:
                what = ("the loss or the state became non-finite" if not np.isfinite(loss)
                        else f"a batch's loss reached {loss:.3g}")
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch + 1} of {config.epochs} ({what}): "
                    f"the learning rate {config.lr:g} is too large for this network; "
                    f"reduce --lr")
            total += loss * len(batch)
        losses.append(total / len(order))
    params = current_params()
    overflows, narrowed = training_overflows()
    summary = {
        "train_accuracy": accuracy(config, params, data.x_train, data.y_train),
        "test_accuracy": accuracy(config, params, data.x_test, data.y_test),
        "final_loss": losses[-1],
        "losses": losses,
        "overflows": sum(overflows.values()),
        "overflow_sites": overflows,
        "narrowed_words": narrowed,
        "overflow_fraction": sum(overflows.values()) / narrowed if narrowed else 0.0,
        "seconds": time.perf_counter() - start,
    }
    return params, summary


def check_dataset(config: Config, dataset: str, source: str | None = None) -> None:
    """Raise :class:`WeightsError` (one line) unless ``dataset``'s images are the network's.

    ``source`` names the weights file the configuration came from, for the message.
    """
    if dataset not in DATASET_SHAPES:
        raise ValueError(f"unknown data set {dataset!r}; choose one of {sorted(DATASETS)}")
    want = DATASET_SHAPES[dataset]
    if tuple(config.image_shape) != want:
        have = "x".join(map(str, config.image_shape))
        what = (f"the weights {source} were trained on {config.dataset} ({have} images)"
                if source is not None else f"the network has {have} images")
        raise WeightsError(f"{what}; the data set {dataset} has {want[0]}x{want[1]} images "
                           f"(choose the data set the weights were trained on)")


#: A mean batch loss above this is divergence: a softmax cross-entropy that large means logits
#: of that size (an untrained network starts near ln(classes)), so the weights have blown up
#: even while every number is still finite.
DIVERGED_LOSS = 1e6


class TrainingDiverged(ValueError):
    """Training blew up (a non-finite loss or state, or a loss above :data:`DIVERGED_LOSS`):
    the learning rate is too large."""


def save_weights(path, config: Config, params: dict) -> Path:
    """Write parameters and the configuration that produced them to an ``.npz`` file.

    The file is written to a temporary name and renamed, so a failure leaves nothing behind.
    """
    path = Path(path)
    arrays = {k: np.asarray(params[k], dtype=np.float64) for k in config.param_shapes()}
    meta = {"format": np.array(WEIGHTS_FORMAT), "config": np.array(json.dumps(config.to_dict()))}
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temporary name beside the target, opened like any new file (so the umask applies).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "xb") as handle:
            np.savez(handle, **arrays, **meta)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_weights(path, expect: Config | None = None) -> tuple[Config, dict]:
    """Read a weights file written by :func:`save_weights`.

    Parameters
    ----------
    path : str or Path
        The ``.npz`` file.
    expect : Config, optional
        If given, the file's network (structure, kernel size, image shape, classes) must match.

    Returns
    -------
    config : Config
    params : dict of ndarray

    Raises
    ------
    WeightsError
        If the file is missing, not a weights file, corrupt (missing arrays, wrong shapes,
        non-finite values) or trained for another network than ``expect``.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        # Opened here, not by np.load, so that the file is closed whatever np.load raises.
        with open(path, "rb") as handle:
            archive = np.load(handle, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive")
            with archive:
                contents = {k: archive[k] for k in archive.files}
    except Exception as exc:  # any failure to parse the file means it is not a weights file
        raise WeightsError(f"weights file {path} is corrupt or not an .npz file "
                           f"({type(exc).__name__}: {exc})") from None
    if "format" not in contents or str(contents["format"]) != WEIGHTS_FORMAT:
        raise WeightsError(f"{path} is not an xbarode weights file (format {WEIGHTS_FORMAT})")
    try:
        config = Config.from_dict(json.loads(str(contents["config"])))
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"weights file {path} has a bad configuration: {exc}") from None
    params = {}
    for name, shape in config.param_shapes().items():
        if name not in contents:
            raise WeightsError(f"weights file {path} lacks the array {name!r}")
        array = contents[name]
        if not np.issubdtype(array.dtype, np.floating):
            raise WeightsError(f"weights file {path}: {name} holds {array.dtype}, not floats")
        if array.shape != shape:
            raise WeightsError(
                f"weights file {path}: {name} has shape {array.shape}, but its configuration "
                f"needs {shape}"
            )
        if not np.all(np.isfinite(array)):
            raise WeightsError(f"weights file {path}: {name} contains non-finite values")
        params[name] = array.astype(np.float64)
    if expect is not None:
        for name in config._model_fields:
            if getattr(config, name) != getattr(expect, name):
                raise WeightsError(
                    f"weights file {path} is from another configuration: {name} is "
                    f"{getattr(config, name)!r} there, {getattr(expect, name)!r} here"
                )
    return config, params
