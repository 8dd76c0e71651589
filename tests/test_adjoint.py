"""Discrete adjoints of explicit and implicit Euler, for dense and convolution operators.

References: central finite differences of ``L = sum(w * z_N)`` through :func:`odeint`, and torch
autograd through the same discretisation written here in torch (an Euler loop; a Newton loop
with exact solves plus one differentiable Newton step at the root). Convolution matrices are
built in torch as sums of kernel taps times constant ``np.roll`` permutation matrices.
"""

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from helpers import LIVE_FRACTION, positive_fraction
from xbarode.model import Conv, ConvergenceWarning, Dense, adjoint, odeint

SETTINGS = settings(max_examples=25, deadline=None)
SOLVERS = {
    "euler": ("euler", {}),
    "implicit_exact": ("implicit_euler", {"linear_solver": "exact", "tol": 1e-13}),
    "implicit_neumann": ("implicit_euler",
                         {"linear_solver": "neumann", "neumann_terms": 80, "tol": 1e-13}),
}


def relative_error(actual, expected):
    """``max|actual - expected| / max|expected|``; a reference that is all zero fails (any
    small answer would match it: the comparison would prove nothing)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    error, scale = np.abs(actual - expected).max(), np.abs(expected).max()
    assert scale > 0, "the reference is zero: the comparison would prove nothing"
    return error / scale


def roll_basis(shape, k):
    """``basis[p, q]``: the m-by-m matrix that moves an image by tap (p, q)'s offset."""
    height, width = shape
    m = height * width
    c = k // 2
    images = np.eye(m).reshape(m, height, width)
    basis = np.empty((k, k, m, m))
    for p in range(k):
        for q in range(k):
            basis[p, q] = np.roll(images, (p - c, q - c), axis=(1, 2)).reshape(m, m).T
    return torch.from_numpy(basis)


class Problem:
    """Parameters of ``A`` and ``B`` (matrices or kernels), start, loss weights and solver."""

    def __init__(self, rng, kind, size, batch, steps, h, solver):
        self.kind, self.steps, self.h = kind, steps, h
        self.method, self.options = SOLVERS[solver]
        if kind == "conv":
            self.image_shape, k = size
            self.m = self.image_shape[0] * self.image_shape[1]
            self.a = 0.6 * rng.standard_normal((k, k)) / k
            self.b = 0.6 * rng.standard_normal((k, k)) / k
        else:
            self.m = size
            self.a = rng.standard_normal((size, size)) / np.sqrt(size)
            self.b = rng.standard_normal((size, size)) / np.sqrt(size)
        state = (self.m,) if batch is None else (batch, self.m)
        self.z0 = rng.standard_normal(state)
        self.w = rng.standard_normal(state)

    def operator(self, params):
        if self.kind == "conv":
            return Conv(params, self.image_shape)
        return Dense(params) if self.kind == "Dense" else params

    def trajectory(self, a=None, b=None, z0=None):
        a, b, z0 = (self.a if a is None else a, self.b if b is None else b,
                    self.z0 if z0 is None else z0)
        return odeint(self.operator(a), self.operator(b), z0, self.h, self.steps, self.method,
                      **self.options)

    def loss(self, a=None, b=None, z0=None):
        return np.sum(self.w * self.trajectory(a, b, z0)[-1])

    def adjoint(self, **kwargs):
        return adjoint(self.operator(self.a), self.operator(self.b), self.trajectory(), self.h,
                       self.w, self.method, **self.options, **kwargs)

    def live_fraction(self):
        """The smallest fraction, over the states of the trajectory, of positive ``A z``."""
        states = self.trajectory().reshape(self.steps + 1, -1, self.m)
        matrix = self.operator(self.a)
        dense = matrix.dense() if hasattr(matrix, "dense") else matrix
        return positive_fraction(states @ dense.T)

    def relu_margin(self):
        """Smallest ``|A z|`` over every state of the trajectory."""
        states = self.trajectory().reshape(self.steps + 1, -1, self.m)
        matrix = self.operator(self.a)
        dense = matrix.dense() if hasattr(matrix, "dense") else matrix
        return np.abs(states @ dense.T).min()


def finite_differences(problem, eps=1e-6):
    """Central differences of the loss in every entry of ``z0``, ``a`` and ``b``."""
    grads = []
    for name in ("z0", "a", "b"):
        value = getattr(problem, name)
        grad = np.empty_like(value)
        for index in np.ndindex(value.shape):
            step = np.zeros_like(value)
            step[index] = eps
            grad[index] = (problem.loss(**{name: value + step})
                           - problem.loss(**{name: value - step})) / (2 * eps)
        grads.append(grad)
    return grads


def torch_implicit_step(A, B, z, h):
    """Newton to convergence without autograd, then one Newton step that autograd sees."""
    eye = torch.eye(z.shape[-1], dtype=torch.float64)

    def newton(w):
        u = w @ A.T
        g = w - z - h * torch.relu(u) @ B.T
        jac = B * (u > 0).to(torch.float64)[:, None, :] @ A
        return w - torch.linalg.solve(eye - h * jac, g.unsqueeze(-1)).squeeze(-1), g

    with torch.no_grad():
        w = z.detach().clone()
        for _ in range(40):
            w, _ = newton(w)
        _, g = newton(w)
        assert g.abs().max() <= 1e-12
    return newton(w)[0]


def torch_reference(problem):
    """``z_N`` and the gradients of ``sum(w * z_N)`` by torch autograd."""
    a = torch.tensor(problem.a, requires_grad=True)
    b = torch.tensor(problem.b, requires_grad=True)
    z0 = torch.tensor(problem.z0.reshape(-1, problem.m), requires_grad=True)
    if problem.kind == "conv":
        basis = roll_basis(problem.image_shape, problem.a.shape[0])
        A, B = (torch.einsum("pq,pqij->ij", p, basis) for p in (a, b))
    else:
        A, B = a, b
    z = z0
    for _ in range(problem.steps):
        if problem.method == "euler":
            z = z + problem.h * torch.relu(z @ A.T) @ B.T
        else:
            z = torch_implicit_step(A, B, z, problem.h)
    torch.sum(torch.from_numpy(problem.w.reshape(-1, problem.m)) * z).backward()
    return (z.detach().numpy().reshape(problem.z0.shape), z0.grad.numpy().reshape(problem.z0.shape),
            a.grad.numpy(), b.grad.numpy())


def margin_problem(seed, kind, size, batch, solver, steps=5, h=0.15, margin=1e-4):
    """The first problem from ``seed`` (in steps of 1000) on whose trajectory no relu input is
    within ``margin`` and the relu is live (:data:`~helpers.LIVE_FRACTION`) at every state."""
    while True:
        problem = Problem(np.random.default_rng(seed), kind, size, batch, steps, h, solver)
        if problem.relu_margin() > margin and problem.live_fraction() >= LIVE_FRACTION:
            return problem
        seed += 1000


CASES = [("dense", 5), ("Dense", 4), ("conv", ((3, 4), 3)), ("conv", ((3, 5), 3))]


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("batch", [None, 3])
@pytest.mark.parametrize(("kind", "size"), CASES)
def test_adjoint_matches_finite_differences(kind, size, batch, solver):
    problem = margin_problem(0, kind, size, batch, solver)
    grads = problem.adjoint()
    for adj, fd, params in zip(grads, finite_differences(problem),
                               (problem.z0, problem.a, problem.b), strict=True):
        assert adj.shape == params.shape
        assert relative_error(fd, adj) <= 1e-6


@st.composite
def problems(draw):
    """Dense or convolution problems of random size, batch, length and solver."""
    kind = draw(st.sampled_from(["dense", "Dense", "conv"]))
    if kind == "conv":
        height, width = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        size = ((height, width), draw(st.sampled_from([1, 3] if min(height, width) >= 3 else [1])))
    else:
        size = draw(st.integers(1, 7))
    batch = draw(st.one_of(st.none(), st.integers(1, 3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return Problem(rng, kind, size, batch, draw(st.integers(1, 4)), draw(st.floats(0.02, 0.15)),
                   draw(st.sampled_from(list(SOLVERS))))


@SETTINGS
@given(problems())
def test_adjoint_matches_torch_autograd(problem):
    assume(problem.live_fraction() >= LIVE_FRACTION)   # else A and B get no gradient
    if problem.options.get("linear_solver") == "neumann":
        *_, info = problem.adjoint(return_info=True)
        assume(np.max(info.spectral_radius) < 0.6)
    z_final, *expected = torch_reference(problem)
    assert relative_error(problem.trajectory()[-1], z_final) <= 1e-12
    for adj, ref in zip(problem.adjoint(), expected, strict=True):
        assert relative_error(adj, ref) <= 1e-10


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("shape", [(17, 16), (20, 17)])
def test_large_conv_adjoint_matches_torch_autograd(shape, solver):
    problem = Problem(np.random.default_rng(shape[1]), "conv", (shape, 3), 2, 3, 0.1, solver)
    assert problem.live_fraction() >= LIVE_FRACTION
    z_final, *expected = torch_reference(problem)
    assert relative_error(problem.trajectory()[-1], z_final) <= 1e-12
    for adj, ref in zip(problem.adjoint(), expected, strict=True):
        assert relative_error(adj, ref) <= 1e-10


def test_conv_gradients_are_dense_gradients_pulled_back():
    problem = Problem(np.random.default_rng(3), "conv", ((4, 5), 3), 2, 4, 0.1, "euler")
    assert problem.live_fraction() >= LIVE_FRACTION
    conv_grads = problem.adjoint()
    A, B = Conv(problem.a, (4, 5)).dense(), Conv(problem.b, (4, 5)).dense()
    grad_z0, grad_A, grad_B = adjoint(A, B, problem.trajectory(), 0.1, problem.w)
    basis = roll_basis((4, 5), 3).numpy()
    assert relative_error(conv_grads[0], grad_z0) <= 1e-12
    assert relative_error(conv_grads[1], np.einsum("ij,pqij->pq", grad_A, basis)) <= 1e-12
    assert relative_error(conv_grads[2], np.einsum("ij,pqij->pq", grad_B, basis)) <= 1e-12


def test_neumann_adjoint_reports_spectral_radius():
    problem = margin_problem(21, "dense", 6, 2, "implicit_neumann", steps=3, h=0.1)
    *_, info = problem.adjoint(return_info=True)
    states = problem.trajectory()
    for n in range(problem.steps):
        for row in range(2):
            mask = np.diag((problem.a @ states[n + 1, row] > 0).astype(float))
            radius = np.abs(np.linalg.eigvals(problem.h * problem.b @ mask @ problem.a)).max()
            assert np.isclose(info.spectral_radius[n, row], radius, rtol=1e-10)
    *_, info = Problem(np.random.default_rng(0), "dense", 6, 2, 3, 0.1,
                       "implicit_exact").adjoint(return_info=True)
    assert np.isnan(info.spectral_radius).all()


def test_neumann_adjoint_warns_when_radius_reaches_one():
    A, B = np.eye(3), -3.0 * np.eye(3)
    trajectory = odeint(A, B, np.array([1.0, 2.0, 0.5]), 1.0, 2, "implicit_euler")
    with pytest.warns(ConvergenceWarning, match="adjoint: the Neumann series cannot converge"):
        *_, info = adjoint(A, B, trajectory, 1.0, np.ones(3), "implicit_euler",
                           linear_solver="neumann", return_info=True)
    np.testing.assert_allclose(info.spectral_radius, 3.0, rtol=1e-12)


TRAJECTORY = np.ones((3, 2, 4))
ADJOINT_ERRORS = [
    (dict(grad_final=np.ones(4)), ValueError, "grad_final must have the shape"),
    (dict(grad_final=np.ones((3, 4))), ValueError, "grad_final must have the shape"),
    (dict(grad_final=np.full((2, 4), np.nan)), ValueError, "grad_final contains non-finite"),
    (dict(method="rk4"), ValueError, "unknown method 'rk4'"),
    (dict(options=dict(tol=1e-3)), TypeError, "method 'euler' takes no options"),
    (dict(method="implicit_euler", options=dict(newton=2)), TypeError, "unexpected options"),
    (dict(trajectory=np.ones((1, 2, 4))), ValueError, "at least two states"),
    (dict(trajectory=np.ones(4)), ValueError, "trajectory must have 2 or 3 dimensions"),
    (dict(trajectory=np.full((3, 2, 4), np.inf)), ValueError, "trajectory contains non-finite"),
    (dict(h=0.0), ValueError, "h must be a finite number > 0"),
    (dict(A=np.eye(5)), ValueError, "A is 5x5 but the state has 4 entries"),
    (dict(B=np.ones((4, 2))), ValueError, "B must be square"),
]


@pytest.mark.parametrize(("change", "error", "message"), ADJOINT_ERRORS)
def test_adjoint_input_errors(change, error, message):
    args = dict(A=np.eye(4), B=np.eye(4), trajectory=TRAJECTORY, h=0.1,
                grad_final=np.ones((2, 4)), method="euler", options={})
    args.update(change)
    options = args.pop("options")
    with pytest.raises(error, match=message):
        adjoint(**args, **options)
