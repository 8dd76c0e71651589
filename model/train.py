"""The digits neural ODE: configuration, forward pass, gradients, training, weights files.

The network is ``z_0 = x`` (a flattened 8×8 image), ``dz/dt = B·relu(A z)`` over ``[0, T]``
with ``steps`` fixed steps, ``logits = C·z_N + d``. ``A`` and ``B`` are either circular
convolutions with k×k kernels (``structure="conv"``, the seed's network) or dense m×m matrices
(``structure="dense"``, one full crossbar tile each).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _checks
from .adjoint import adjoint
from .classifier import head_grads, logits, softmax_cross_entropy
from .conv import Conv, Dense
from .data import DIGITS_SHAPE, Digits, load_digits_split
from .ode import SOLVERS, odeint

__all__ = [
    "Config",
    "WeightsError",
    "accuracy",
    "init_params",
    "load_weights",
    "loss_and_grads",
    "predict",
    "save_weights",
    "train",
]

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
        ``(H, W)``; the digits are 8×8.
    classes : int
        Number of classes.
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
    lr : float
        Adam learning rate.
    seed : int
        Seeds initialisation and mini-batch order; same seed, same weights.
    init_scale : float
        Standard deviation of the initial ``A`` and ``B`` entries, relative to ``1/√fan_in``.
    """

    structure: str = "dense"
    kernel_size: int = 3
    image_shape: tuple[int, int] = DIGITS_SHAPE
    classes: int = 10
    steps: int = 8
    T: float = 2.0
    method: str = "euler"
    linear_solver: str = "exact"
    neumann_terms: int = 30
    max_iter: int = 50
    tol: float = 1e-10
    epochs: int = 40
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    init_scale: float = 0.5
    _model_fields: tuple = field(default=("structure", "kernel_size", "image_shape", "classes"),
                                 init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.structure not in ("conv", "dense"):
            raise ValueError(f"structure must be 'conv' or 'dense', not {self.structure!r}")
        object.__setattr__(self, "image_shape", _checks.image_shape(self.image_shape))
        if self.structure == "conv":
            _checks.kernel(np.zeros((self.kernel_size,) * 2), self.image_shape)
        _checks.positive_int("classes", self.classes, minimum=2)
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

    @property
    def h(self) -> float:
        """Step size ``T / steps``."""
        return self.T / self.steps

    @property
    def m(self) -> int:
        """State size ``H·W``."""
        return self.image_shape[0] * self.image_shape[1]

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
        if "image_shape" in data:
            data["image_shape"] = tuple(data["image_shape"])
        return cls(**data)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each parameter array: ``A``, ``B``, ``C``, ``d``."""
        ab = (self.kernel_size,) * 2 if self.structure == "conv" else (self.m, self.m)
        return {"A": ab, "B": ab, "C": (self.classes, self.m), "d": (self.classes,)}


def operators(config: Config, params: dict) -> tuple[Dense | Conv, Dense | Conv]:
    """The operators ``A`` and ``B`` for a parameter set."""
    if config.structure == "conv":
        return Conv(params["A"], config.image_shape), Conv(params["B"], config.image_shape)
    return Dense(params["A"]), Dense(params["B"])


def init_params(config: Config) -> dict[str, np.ndarray]:
    """Seeded initial parameters: scaled Gaussian ``A``, ``B``; zero head."""
    rng = np.random.default_rng(config.seed)
    shapes = config.param_shapes()
    fan_in = config.kernel_size**2 if config.structure == "conv" else config.m
    scale = config.init_scale / np.sqrt(fan_in)
    return {
        "A": rng.normal(0.0, scale, shapes["A"]),
        "B": rng.normal(0.0, scale, shapes["B"]),
        "C": np.zeros(shapes["C"]),
        "d": np.zeros(shapes["d"]),
    }


def predict(config: Config, params: dict, x: np.ndarray) -> np.ndarray:
    """Logits for a batch of flattened images ``x`` (batch, m)."""
    A, B = operators(config, params)
    trajectory = odeint(A, B, x, config.h, config.steps, config.method, **config.solver_options)
    return logits(params["C"], params["d"], trajectory[-1])


def accuracy(config: Config, params: dict, x: np.ndarray, y: np.ndarray,
             batch: int = 512) -> float:
    """Fraction of ``x`` classified as ``y``."""
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
    trajectory = odeint(A, B, x, config.h, config.steps, config.method, **options)
    scores = logits(params["C"], params["d"], trajectory[-1])
    loss, grad_scores = softmax_cross_entropy(scores, y)
    grad_C, grad_d, grad_z = head_grads(grad_scores, trajectory[-1], params["C"])
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


def train(config: Config, data: Digits | None = None, progress=None):
    """Train the network on the digits with mini-batch Adam.

    Parameters
    ----------
    config : Config
        Network and training settings.
    data : Digits, optional
        Defaults to :func:`~xbarode.model.data.load_digits_split`.
    progress : callable, optional
        Wraps the epoch range (e.g. ``tqdm.tqdm``); called as ``progress(iterable)``.

    Returns
    -------
    params : dict of ndarray
    summary : dict
        ``train_accuracy``, ``test_accuracy``, ``final_loss``, ``losses`` (mean per epoch)
        and ``seconds``.
    """
    data = load_digits_split() if data is None else data
    start = time.perf_counter()
    params = init_params(config)
    optimiser = Adam(params, config.lr)
    rng = np.random.default_rng(config.seed + 1)
    epochs = range(config.epochs)
    losses = []
    for _ in progress(epochs) if progress else epochs:
        order = rng.permutation(len(data.y_train))
        total = 0.0
        for first in range(0, len(order), config.batch_size):
            batch = order[first:first + config.batch_size]
            loss, grads = loss_and_grads(config, params, data.x_train[batch], data.y_train[batch])
            optimiser.step(params, grads)
            total += loss * len(batch)
        losses.append(total / len(order))
    summary = {
        "train_accuracy": accuracy(config, params, data.x_train, data.y_train),
        "test_accuracy": accuracy(config, params, data.x_test, data.y_test),
        "final_loss": losses[-1],
        "losses": losses,
        "seconds": time.perf_counter() - start,
    }
    return params, summary


def save_weights(path, config: Config, params: dict) -> Path:
    """Write parameters and the configuration that produced them to an ``.npz`` file.

    The file is written to a temporary name and renamed, so a failure leaves nothing behind.
    """
    path = Path(path)
    arrays = {k: np.asarray(params[k], dtype=np.float64) for k in config.param_shapes()}
    meta = {"format": np.array(WEIGHTS_FORMAT), "config": np.array(json.dumps(config.to_dict()))}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays, **meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
        with np.load(path, allow_pickle=False) as archive:
            contents = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise WeightsError(f"weights file {path} is corrupt or not an .npz file ({exc})") from None
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
