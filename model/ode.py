"""Fixed-step solvers for the neural ODE ``dz/dt = f(z) = B·relu(A z)``.

One stepping loop (:func:`odeint`) and small solvers in a registry (:data:`SOLVERS`), each with
a ``step`` method, in the manner of torchdiffeq's ``fixed_grid.py``.

Implicit Euler solves ``G(w) = w - z_n - h·f(w) = 0`` by Newton's method,
``w <- w - (I - h·J(w))⁻¹ G(w)`` with ``J(w) = B·D(w)·A`` and ``D(w) = diag(H(A w))``, ``H(0) = 0``
(docs/architecture.md §1; note the sign: the correction is subtracted). The linear solve is
either exact (dense LU) or the Neumann series ``δ <- G + h·B·D·A·δ`` with a fixed number of
terms, which is what the crossbar computes with matrix–vector products only; it converges
only while the spectral radius of ``h·J`` is below 1, which is checked and reported.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from . import _checks
from .conv import Conv, Dense, as_operator

__all__ = [
    "SOLVERS",
    "ConvergenceWarning",
    "Euler",
    "ImplicitEuler",
    "SolveInfo",
    "dynamics",
    "odeint",
    "solve_shifted",
]


class ConvergenceWarning(RuntimeWarning):
    """Newton did not reach its tolerance, or a Neumann series cannot converge."""


def relu(u: np.ndarray) -> np.ndarray:
    """``max(u, 0)``."""
    return np.maximum(u, 0.0)


def heaviside(u: np.ndarray) -> np.ndarray:
    """The derivative mask of relu: 1 where ``u > 0``, else 0 (so ``H(0) = 0``)."""
    return (u > 0).astype(np.float64)


def dynamics(A: Dense | Conv, B: Dense | Conv, z: np.ndarray) -> np.ndarray:
    """``f(z) = B·relu(A z)`` for each vector in the last axis of ``z``."""
    return B.matvec(relu(A.matvec(z)))


def _spectral_radius(A, B, mask: np.ndarray, h: float) -> np.ndarray:
    """``ρ(h·B·D·A)`` per batch row; eigenvalues of ``h·D·A·B`` are the same and cheaper."""
    ab = A.dense() @ B.dense()
    return np.abs(np.linalg.eigvals(h * mask[..., :, None] * ab)).max(axis=-1)


def solve_shifted(A, B, mask, h, rhs, *, transpose=False, linear_solver="exact",
                  neumann_terms=30):
    """Solve ``(I - h·B·D·A) x = rhs`` (or its transpose) for each batch row.

    Parameters
    ----------
    A, B : Dense or Conv
        The operators of the dynamics.
    mask : ndarray, shape (batch, m)
        Heaviside mask, the diagonal of ``D``.
    h : float
        Step size.
    rhs : ndarray, shape (batch, m)
        Right-hand sides.
    transpose : bool
        Solve with ``(I - h·J)ᵀ = I - h·Aᵀ·D·Bᵀ`` instead (the adjoint's solve).
    linear_solver : {"exact", "neumann"}
        Dense LU, or ``x <- rhs + h·J·x`` from ``x = rhs``, ``neumann_terms`` times.
    neumann_terms : int
        Number of Neumann iterations; the error shrinks like ``ρ(h·J)^(terms+1)``.

    Returns
    -------
    x : ndarray, shape (batch, m)
    radius : ndarray, shape (batch,)
        ``ρ(h·J)`` for the Neumann solver (NaN for the exact one).
    """
    if linear_solver == "exact":
        jac = B.dense()[None] * mask[:, None, :] @ A.dense()        # (batch, m, m)
        shifted = np.eye(rhs.shape[-1]) - h * jac
        if transpose:
            shifted = np.swapaxes(shifted, -1, -2)
        return np.linalg.solve(shifted, rhs[..., None])[..., 0], np.full(rhs.shape[0], np.nan)
    if linear_solver != "neumann":
        raise ValueError(f"linear_solver must be 'exact' or 'neumann', not {linear_solver!r}")
    radius = _spectral_radius(A, B, mask, h)
    x = rhs
    for _ in range(neumann_terms):
        if transpose:
            x = rhs + h * A.rmatvec(mask * B.rmatvec(x))
        else:
            x = rhs + h * B.matvec(mask * A.matvec(x))
    return x, radius


@dataclass
class SolveInfo:
    """What the solver did at each step, for each batch row.

    Attributes
    ----------
    iterations : ndarray of int, shape (steps, batch)
        Newton iterations used (0 for explicit Euler).
    converged : ndarray of bool, shape (steps, batch)
        ``‖G‖∞ <= tol`` reached (always True for explicit Euler).
    residual : ndarray, shape (steps, batch)
        Final ``‖G‖∞`` (0 for explicit Euler).
    spectral_radius : ndarray, shape (steps, batch)
        Largest ``ρ(h·J)`` met by the Neumann solver in the step (NaN when not computed).
    """

    iterations: np.ndarray
    converged: np.ndarray
    residual: np.ndarray
    spectral_radius: np.ndarray


class Euler:
    """Explicit Euler, ``z_{n+1} = z_n + h·f(z_n)``. Takes no options."""

    def step(self, A, B, z, h):
        """One step; returns the new state and ``(iterations, converged, residual, radius)``."""
        batch = z.shape[0]
        report = (np.zeros(batch, int), np.ones(batch, bool), np.zeros(batch),
                  np.full(batch, np.nan))
        return z + h * dynamics(A, B, z), report


class ImplicitEuler:
    """Implicit Euler, ``z_{n+1} = z_n + h·f(z_{n+1})``, by Newton's method.

    Parameters
    ----------
    tol : float
        Newton stops once ``‖G(w)‖∞ <= tol``.
    max_iter : int
        Newton iteration limit; a row that has not converged by then is reported.
    linear_solver : {"exact", "neumann"}
        How ``(I - h·J) δ = G`` is solved (see :func:`solve_shifted`).
    neumann_terms : int
        Neumann iterations per linear solve.
    initial_guess : {"euler", "previous"}
        Start Newton from the explicit-Euler predictor or from ``z_n``.
    """

    def __init__(self, *, tol=1e-10, max_iter=50, linear_solver="exact", neumann_terms=30,
                 initial_guess="euler"):
        self.tol = _checks.positive_float("tol", tol)
        self.max_iter = _checks.positive_int("max_iter", max_iter)
        if linear_solver not in ("exact", "neumann"):
            raise ValueError(f"linear_solver must be 'exact' or 'neumann', not {linear_solver!r}")
        self.linear_solver = linear_solver
        self.neumann_terms = _checks.positive_int("neumann_terms", neumann_terms)
        if initial_guess not in ("euler", "previous"):
            raise ValueError(
                f"initial_guess must be 'euler' or 'previous', not {initial_guess!r}"
            )
        self.initial_guess = initial_guess

    def step(self, A, B, z, h):
        """One step; returns the new state and ``(iterations, converged, residual, radius)``."""
        w = z + h * dynamics(A, B, z) if self.initial_guess == "euler" else z.copy()
        batch = z.shape[0]
        iterations = np.zeros(batch, int)
        radius = np.full(batch, np.nan)
        for _ in range(self.max_iter + 1):
            u = A.matvec(w)
            residual_vec = w - z - h * B.matvec(relu(u))
            residual = np.abs(residual_vec).max(axis=-1)
            active = residual > self.tol
            if not active.any() or iterations.max() >= self.max_iter:
                break
            delta, rho = solve_shifted(
                A, B, heaviside(u[active]), h, residual_vec[active],
                linear_solver=self.linear_solver, neumann_terms=self.neumann_terms,
            )
            w[active] -= delta
            iterations[active] += 1
            radius[active] = np.fmax(radius[active], rho)
        return w, (iterations, ~active, residual, radius)


#: Solvers by name; ``odeint(method=name, **options)`` builds ``SOLVERS[name](**options)``.
SOLVERS = {"euler": Euler, "implicit_euler": ImplicitEuler}


def odeint(A, B, z0, h, steps, method="euler", *, return_info=False, **options):
    """Integrate ``dz/dt = B·relu(A z)`` with ``steps`` fixed steps of size ``h``.

    Parameters
    ----------
    A, B : array_like (m, m), Dense or Conv
        The two linear maps; plain arrays are dense matrices, :class:`Conv` exploits a kernel.
    z0 : array_like, shape (m,) or (batch, m)
        Initial state(s).
    h : float
        Step size, > 0 (``h = T / steps`` for a horizon ``T``).
    steps : int
        Number of steps, >= 1.
    method : str
        A key of :data:`SOLVERS`: ``"euler"`` or ``"implicit_euler"``.
    return_info : bool
        Also return a :class:`SolveInfo`.
    **options
        Passed to the solver (see :class:`ImplicitEuler`); explicit Euler takes none.

    Returns
    -------
    trajectory : ndarray, shape (steps + 1, m) or (steps + 1, batch, m)
        ``trajectory[0] == z0``.
    info : SolveInfo
        Only with ``return_info=True``.

    Warns
    -----
    ConvergenceWarning
        When Newton stops at ``max_iter`` above ``tol`` for any row, or the Neumann series
        meets ``ρ(h·J) >= 1`` (it cannot converge); the info says where.

    Raises
    ------
    FloatingPointError
        When the state becomes non-finite (the step size is too large for the dynamics).
    """
    z0 = _checks.as_finite("z0", z0, ndim=(1, 2))
    m = z0.shape[-1]
    A = as_operator("A", A, m)
    B = as_operator("B", B, m)
    h = _checks.positive_float("h", h)
    steps = _checks.positive_int("steps", steps)
    if method not in SOLVERS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(SOLVERS)}")
    try:
        solver = SOLVERS[method](**options)
    except TypeError as exc:
        raise TypeError(f"method {method!r}: {exc}") from None

    z = z0.reshape(-1, m)
    trajectory = np.empty((steps + 1, *z.shape))
    trajectory[0] = z
    reports = []
    for n in range(steps):
        # A blow-up is reported below as FloatingPointError, not as numpy's overflow warning.
        with np.errstate(over="ignore", invalid="ignore"):
            z, report = solver.step(A, B, z, h)
        if not np.all(np.isfinite(z)):
            raise FloatingPointError(
                f"the state became non-finite at step {n + 1} of {steps}; reduce h"
            )
        trajectory[n + 1] = z
        reports.append(report)
    info = SolveInfo(*(np.stack(field) for field in zip(*reports, strict=True)))
    _warn_on_failure(info, method)
    trajectory = trajectory.reshape(steps + 1, *z0.shape)
    return (trajectory, info) if return_info else trajectory


def _warn_on_failure(info: SolveInfo, what: str) -> None:
    """Raise a :class:`ConvergenceWarning` naming the first failing step, if there is one."""
    diverging = info.spectral_radius >= 1
    if diverging.any():
        step, row = np.argwhere(diverging)[0]
        warnings.warn(
            f"{what}: the Neumann series cannot converge: spectral radius of h*J is "
            f"{info.spectral_radius[step, row]:.4g} >= 1 at step {step + 1} (batch row {row}); "
            "reduce h or use linear_solver='exact'",
            ConvergenceWarning, stacklevel=3,
        )
    if not info.converged.all():
        step, row = np.argwhere(~info.converged)[0]
        warnings.warn(
            f"{what}: Newton did not converge at step {step + 1} (batch row {row}): "
            f"|G|_inf = {info.residual[step, row]:.3g} after {info.iterations[step, row]} "
            f"iterations ({(~info.converged).sum()} of {info.converged.size} solves failed)",
            ConvergenceWarning, stacklevel=3,
        )
