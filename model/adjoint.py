"""Discrete adjoints: the exact gradient of the discretised network (docs/architecture.md §1).

Explicit Euler, with ``u_n = A z_n``, ``r_n = relu(u_n)`` and ``λ_N = ∂L/∂z_N``, for
``n = N-1 … 0``::

    g_n    = H(u_n) ⊙ (Bᵀ λ_{n+1})
    ∂L/∂B += h · λ_{n+1} r_nᵀ
    ∂L/∂A += h · g_n z_nᵀ
    λ_n    = λ_{n+1} + h · Aᵀ g_n

Implicit Euler, backwards: solve ``(I - h·J(z_{n+1}))ᵀ μ = λ_{n+1}``, then
``g = H(A z_{n+1}) ⊙ (Bᵀ μ)``, ``∂L/∂B += h·μ relu(A z_{n+1})ᵀ``, ``∂L/∂A += h·g z_{n+1}ᵀ``,
``λ_n = μ``. The transposed solve uses the forward pass's linear solver with transposed products.

When ``A`` or ``B`` is a :class:`~xbarode.model.conv.Conv`, its gradient is the kernel gradient,
pulled back by a correlation; the m×m outer products are never formed.
"""

from __future__ import annotations

import numpy as np

from . import _checks
from .conv import as_operator
from .ode import SOLVERS, SolveInfo, _warn_on_failure, heaviside, relu, solve_shifted

__all__ = ["adjoint"]


def adjoint(A, B, trajectory, h, grad_final, method="euler", *, return_info=False, **options):
    """Backpropagate ``∂L/∂z_N`` through a trajectory of :func:`~xbarode.model.ode.odeint`.

    Parameters
    ----------
    A, B : array_like (m, m), Dense or Conv
        The operators the trajectory was computed with.
    trajectory : array_like, shape (steps + 1, m) or (steps + 1, batch, m)
        The forward states ``z_0 … z_N``.
    h : float
        The step size of the forward pass.
    grad_final : array_like, shape (m,) or (batch, m)
        ``∂L/∂z_N``, the shape of ``trajectory[-1]``.
    method : {"euler", "implicit_euler"}
        The forward method.
    return_info : bool
        Also return a :class:`~xbarode.model.ode.SolveInfo` (Neumann spectral radii).
    **options
        For implicit Euler: ``linear_solver`` ("exact" or "neumann") and ``neumann_terms``;
        the forward pass's other Newton options are accepted and ignored.

    Returns
    -------
    grad_z0 : ndarray, shape of ``trajectory[0]``
    grad_A, grad_B : ndarray
        Shaped like ``A.params`` / ``B.params``: m×m for dense operators, k×k for kernels;
        summed over the batch.

    Warns
    -----
    ConvergenceWarning
        When the transposed Neumann series meets ``ρ(h·J) >= 1``.
    """
    trajectory = _checks.as_finite("trajectory", trajectory, ndim=(2, 3))
    if trajectory.shape[0] < 2:
        raise ValueError("trajectory must hold at least two states (steps >= 1)")
    m = trajectory.shape[-1]
    A = as_operator("A", A, m)
    B = as_operator("B", B, m)
    h = _checks.positive_float("h", h)
    grad_final = _checks.as_finite("grad_final", grad_final)
    if grad_final.shape != trajectory.shape[1:]:
        raise ValueError(
            f"grad_final must have the shape of one state, {trajectory.shape[1:]}, "
            f"not {grad_final.shape}"
        )
    if method not in SOLVERS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(SOLVERS)}")
    states = trajectory.reshape(trajectory.shape[0], -1, m)
    lam = grad_final.reshape(-1, m)
    steps, batch = states.shape[0] - 1, lam.shape[0]
    radius = np.full((steps, batch), np.nan)
    # The factors of the rank-1 gradient terms of every step, kept so that each parameter
    # gradient is one product over all steps and the whole batch rather than one per step.
    b_out, b_in, a_out, a_in = (np.empty((steps, batch, m)) for _ in range(4))

    if method == "euler":
        if options:
            raise TypeError(f"method 'euler' takes no options, got {sorted(options)}")
        for n in reversed(range(steps)):
            z = states[n]
            u = A.matvec(z)
            g = heaviside(u) * B.rmatvec(lam)
            b_out[n], b_in[n], a_out[n], a_in[n] = lam, relu(u), g, z
            lam = lam + h * A.rmatvec(g)
    else:
        linear_solver = options.get("linear_solver", "exact")
        neumann_terms = options.get("neumann_terms", 30)
        unknown = set(options) - {"linear_solver", "neumann_terms", "tol", "max_iter",
                                  "initial_guess"}
        if unknown:
            raise TypeError(f"method 'implicit_euler' got unexpected options {sorted(unknown)}")
        for n in reversed(range(steps)):
            z = states[n + 1]
            u = A.matvec(z)
            mask = heaviside(u)
            mu, radius[n] = solve_shifted(A, B, mask, h, lam, transpose=True,
                                          linear_solver=linear_solver,
                                          neumann_terms=neumann_terms)
            g = mask * B.rmatvec(mu)
            b_out[n], b_in[n], a_out[n], a_in[n] = mu, relu(u), g, z
            lam = mu

    grad_A = h * A.param_grad(a_out, a_in)
    grad_B = h * B.param_grad(b_out, b_in)
    info = SolveInfo(np.zeros((steps, batch), int), np.ones((steps, batch), bool),
                     np.zeros((steps, batch)), radius)
    _warn_on_failure(info, "adjoint")
    result = (lam.reshape(grad_final.shape), grad_A, grad_B)
    return (*result, info) if return_info else result
