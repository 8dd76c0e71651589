"""Fixed-step solvers of ``dz/dt = B·relu(A z)``: explicit Euler and implicit Euler by Newton.

References: hand-written Euler loops, ``scipy.linalg.expm`` for a linear closed-form solution,
``scipy.optimize.root`` for the implicit equations, ``numpy.linalg`` for the shifted solves and
spectral radii, and hand-solved scalar cases.
"""

import re
import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

from xbarode.model import Conv, ConvergenceWarning, Dense, SolveInfo, odeint
from xbarode.model.ode import solve_shifted

SETTINGS = settings(max_examples=30, deadline=None)
METHODS = ["euler", "implicit_euler"]


def assert_close(actual, expected, rtol=1e-10):
    """Assert equal shapes and ``max|actual - expected| <= rtol * max|expected|``."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    error = np.abs(actual - expected).max(initial=0.0)
    assert error <= rtol * np.abs(expected).max(initial=0.0), error


def relu(u):
    return np.maximum(u, 0.0)


def residual(A, B, h, z, w):
    """``G(w) = w - z - h·B·relu(A w)`` for each row of ``z`` and ``w``."""
    return w - z - h * relu(w @ A.T) @ B.T


def random_system(rng, m, scale=1.0):
    """Dense ``A``, ``B`` with entries of standard deviation ``scale / sqrt(m)``."""
    return (scale * rng.standard_normal((m, m)) / np.sqrt(m),
            scale * rng.standard_normal((m, m)) / np.sqrt(m))


@st.composite
def systems(draw, max_m=8):
    """A seeded generator, a state size, and a batch size (``None`` for one unbatched state)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng, draw(st.integers(1, max_m)), draw(st.one_of(st.none(), st.integers(1, 4)))


def metzler_system(m=3):
    """``A = I`` and a Metzler ``B``: the positive orthant is invariant and relu is inactive."""
    B = np.array([[-1.0, 0.4, 0.2], [0.3, -0.8, 0.1], [0.2, 0.5, -1.2]])[:m, :m]
    return np.eye(m), B, np.array([1.0, 0.5, 2.0])[:m]


@SETTINGS
@given(systems(), st.integers(1, 5), st.sampled_from(METHODS))
def test_trajectory_shape_and_start(system, steps, method):
    rng, m, batch = system
    A, B = random_system(rng, m)
    z0 = rng.standard_normal(m if batch is None else (batch, m))
    trajectory, info = odeint(A, B, z0, 0.1, steps, method, return_info=True)
    assert trajectory.shape == (steps + 1, *z0.shape)
    np.testing.assert_array_equal(trajectory[0], z0)
    assert isinstance(info, SolveInfo)
    rows = 1 if batch is None else batch
    for field in (info.iterations, info.converged, info.residual, info.spectral_radius):
        assert field.shape == (steps, rows)
    np.testing.assert_array_equal(odeint(A, B, z0, 0.1, steps, method), trajectory)


@SETTINGS
@given(systems(), st.integers(1, 6), st.floats(0.01, 0.5))
def test_euler_matches_hand_loop(system, steps, h):
    rng, m, batch = system
    A, B = random_system(rng, m)
    z0 = rng.standard_normal(m if batch is None else (batch, m))
    trajectory, info = odeint(A, B, z0, h, steps, "euler", return_info=True)
    z = np.atleast_2d(z0)
    expected = [z]
    for _ in range(steps):
        z = np.stack([row + h * B @ relu(A @ row) for row in z])
        expected.append(z)
    assert_close(trajectory, np.stack(expected).reshape(trajectory.shape), rtol=1e-12)
    np.testing.assert_array_equal(info.iterations, 0)
    assert info.converged.all()
    np.testing.assert_array_equal(info.residual, 0.0)
    assert np.isnan(info.spectral_radius).all()


@pytest.mark.parametrize(
    ("shape", "method"),
    [((3, 4), "euler"), ((5, 7), "euler"), ((17, 16), "euler"), ((3, 4), "implicit_euler"),
     ((5, 7), "implicit_euler"), ((11, 24), "implicit_euler")],
)
def test_conv_operators_match_dense_matrices(shape, method):
    rng = np.random.default_rng(shape[0])
    a, b = rng.standard_normal((3, 3)) / 3, rng.standard_normal((3, 3)) / 3
    z0 = rng.standard_normal((2, shape[0] * shape[1]))
    ops = odeint(Conv(a, shape), Conv(b, shape), z0, 0.1, 3, method)
    A, B = Conv(a, shape).dense(), Conv(b, shape).dense()
    assert_close(ops, odeint(A, B, z0, 0.1, 3, method), rtol=1e-12)
    assert_close(odeint(Dense(A), Dense(B), z0, 0.1, 3, method), ops, rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_first_order_convergence(method):
    A, B, z0 = metzler_system()
    exact = scipy.linalg.expm(B) @ z0
    all_steps = np.array([16, 32, 64, 128, 256])
    errors = []
    for steps in all_steps:
        trajectory = odeint(A, B, z0, 1.0 / steps, int(steps), method)
        assert (trajectory > 0).all()
        errors.append(np.abs(trajectory[-1] - exact).max())
    slope = np.polyfit(np.log(1.0 / all_steps), np.log(errors), 1)[0]
    assert 0.9 < slope < 1.1
    assert errors[-1] < 1e-2


def test_linear_regime_step_maps():
    A, B, z0 = metzler_system()
    h, steps = 0.1, 4
    explicit = odeint(A, B, z0, h, steps, "euler")
    implicit = odeint(A, B, z0, h, steps, "implicit_euler")
    eye = np.eye(3)
    for n in range(steps + 1):
        assert_close(explicit[n], np.linalg.matrix_power(eye + h * B, n) @ z0, rtol=1e-13)
        assert_close(implicit[n], np.linalg.matrix_power(np.linalg.inv(eye - h * B), n) @ z0,
                     rtol=1e-12)


@pytest.mark.parametrize("linear_solver", ["exact", "neumann"])
@pytest.mark.parametrize("initial_guess", ["euler", "previous"])
@pytest.mark.parametrize(("seed", "m", "batch"), [(0, 6, 3), (1, 1, None), (2, 9, 2)])
def test_implicit_euler_solves_implicit_equation(seed, m, batch, linear_solver, initial_guess):
    rng = np.random.default_rng(seed)
    A, B = random_system(rng, m)
    h, steps = 0.2, 5
    z0 = rng.standard_normal(m if batch is None else (batch, m))
    trajectory, info = odeint(A, B, z0, h, steps, "implicit_euler", return_info=True,
                              linear_solver=linear_solver, neumann_terms=60,
                              initial_guess=initial_guess)
    states = trajectory.reshape(steps + 1, -1, m)
    for n in range(steps):
        g = residual(A, B, h, states[n], states[n + 1])
        assert np.abs(g).max() <= 1e-9
        np.testing.assert_allclose(info.residual[n], np.abs(g).max(axis=-1), rtol=0, atol=1e-13)
        for row in range(states.shape[1]):
            z = states[n, row]
            root = scipy.optimize.root(
                lambda w, z=z: w - z - h * B @ relu(A @ w), np.zeros(m), method="hybr",
                tol=1e-13,
            )
            assert np.abs(root.fun).max() <= 1e-12
            assert_close(states[n + 1, row], root.x, rtol=1e-9)
    assert info.converged.all()
    assert (info.iterations >= 1).all()
    assert (info.residual <= 1e-10).all()
    if linear_solver == "exact":
        assert np.isnan(info.spectral_radius).all()
    else:
        assert ((info.spectral_radius >= 0) & (info.spectral_radius < 1)).all()


def test_neumann_radius_in_linear_regime():
    A, B, z0 = metzler_system()
    h = 0.3
    _, info = odeint(A, B, z0, h, 3, "implicit_euler", return_info=True,
                     linear_solver="neumann")
    expected = np.abs(np.linalg.eigvals(h * B)).max()
    np.testing.assert_allclose(info.spectral_radius, expected, rtol=1e-12)


@pytest.mark.parametrize(("seed", "m", "batch"), [(3, 5, 4), (4, 8, None), (5, 2, 2)])
def test_neumann_equals_exact_when_radius_below_one(seed, m, batch):
    rng = np.random.default_rng(seed)
    A, B = random_system(rng, m)
    z0 = rng.standard_normal(m if batch is None else (batch, m))
    exact = odeint(A, B, z0, 0.1, 6, "implicit_euler")
    neumann, info = odeint(A, B, z0, 0.1, 6, "implicit_euler", return_info=True,
                           linear_solver="neumann", neumann_terms=80)
    assert np.nanmax(info.spectral_radius) < 1
    assert_close(neumann, exact, rtol=1e-10)


def hard_case():
    """``A = I``, ``B = -3 I``, ``h = 1``: the Euler predictor ``z - 3z`` flips every sign.

    Newton from it: the mask is zero, so the first iterate is ``z``; there ``J = -3 I`` and the
    second iterate is the root ``z / 4``.
    """
    return np.eye(3), -3.0 * np.eye(3), np.array([[1.0, 2.0, 0.5], [0.25, 4.0, 3.0]])


def test_newton_on_hard_case_takes_two_iterations():
    A, B, z0 = hard_case()
    trajectory, info = odeint(A, B, z0, 1.0, 1, "implicit_euler", return_info=True)
    assert_close(trajectory[1], z0 / 4, rtol=1e-15)
    np.testing.assert_array_equal(info.iterations, 2)
    assert info.converged.all()


def test_newton_non_convergence_warns():
    A, B, z0 = hard_case()
    with pytest.warns(ConvergenceWarning, match="did not converge at step 1") as record:
        trajectory, info = odeint(A, B, z0, 1.0, 1, "implicit_euler", return_info=True,
                                  max_iter=1)
    assert len(record) == 1
    assert_close(trajectory[1], z0, rtol=1e-15)
    np.testing.assert_array_equal(info.iterations, 1)
    assert not info.converged.any()
    assert_close(info.residual[0], np.abs(residual(A, B, 1.0, z0, z0)).max(axis=-1))


def test_neumann_spectral_radius_warning():
    A, B, z0 = hard_case()
    with pytest.warns(ConvergenceWarning) as record:
        _, info = odeint(A, B, z0, 1.0, 1, "implicit_euler", return_info=True,
                         linear_solver="neumann", neumann_terms=1, max_iter=2)
    messages = [str(w.message) for w in record]
    assert any("spectral radius" in text and ">= 1" in text for text in messages)
    assert any("did not converge" in text for text in messages)
    np.testing.assert_allclose(info.spectral_radius, 3.0, rtol=1e-12)


def test_neumann_radius_warning_on_random_system():
    rng = np.random.default_rng(11)
    A, B = random_system(rng, 6, scale=3.0)
    z0 = rng.standard_normal((2, 6))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        odeint(A, B, z0, 2.0, 1, "implicit_euler", linear_solver="neumann", neumann_terms=2,
               max_iter=3)
    assert any(issubclass(w.category, ConvergenceWarning) and "spectral radius" in str(w.message)
               for w in record)


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_solve_shifted_matches_numpy(transpose, kind):
    rng = np.random.default_rng(5 + transpose)
    shape = (3, 5)
    m = shape[0] * shape[1]
    if kind == "dense":
        A, B = (Dense(rng.standard_normal((m, m)) / 4) for _ in range(2))
    else:
        A, B = (Conv(rng.standard_normal((3, 3)) / 3, shape) for _ in range(2))
    mask = (rng.random((4, m)) > 0.4).astype(float)
    rhs = rng.standard_normal((4, m))
    h = 0.3
    expected, radii = [], []
    for row in range(4):
        jac = B.dense() @ np.diag(mask[row]) @ A.dense()
        shifted = np.eye(m) - h * jac
        expected.append(np.linalg.solve(shifted.T if transpose else shifted, rhs[row]))
        radii.append(np.abs(np.linalg.eigvals(h * jac)).max())
    exact, radius = solve_shifted(A, B, mask, h, rhs, transpose=transpose)
    assert_close(exact, np.array(expected), rtol=1e-12)
    assert np.isnan(radius).all()
    assert max(radii) < 0.8
    neumann, radius = solve_shifted(A, B, mask, h, rhs, transpose=transpose,
                                    linear_solver="neumann", neumann_terms=200)
    assert_close(neumann, np.array(expected), rtol=1e-10)
    np.testing.assert_allclose(radius, radii, rtol=1e-10)
    short, _ = solve_shifted(A, B, mask, h, rhs, transpose=transpose,
                             linear_solver="neumann", neumann_terms=2)
    assert np.abs(short - np.array(expected)).max() > 1e-6
    with pytest.raises(ValueError, match="linear_solver must be 'exact' or 'neumann'"):
        solve_shifted(A, B, mask, h, rhs, linear_solver="lu")


def test_blow_up_is_reported():
    with pytest.raises(FloatingPointError, match="became non-finite at step 2 of 5"), \
            np.errstate(over="ignore"):
        odeint(np.eye(2), 1e300 * np.eye(2), np.ones(2), 1.0, 5)


Z0 = np.ones(4)
A4 = np.eye(4)
INPUT_ERRORS = [
    (dict(h=0.0), ValueError, "h must be a finite number > 0"),
    (dict(h=-0.1), ValueError, "h must be a finite number > 0"),
    (dict(h=np.nan), ValueError, "h must be a finite number > 0"),
    (dict(h=np.inf), ValueError, "h must be a finite number > 0"),
    (dict(h="x"), TypeError, "h must be a number"),
    (dict(steps=0), ValueError, "steps must be >= 1"),
    (dict(steps=2.0), TypeError, "steps must be an integer"),
    (dict(steps=True), TypeError, "steps must be an integer"),
    (dict(method="rk4"), ValueError, "unknown method 'rk4'"),
    (dict(z0=np.array([1.0, np.nan, 0, 0])), ValueError, "z0 contains non-finite"),
    (dict(z0=np.array([1.0, np.inf, 0, 0])), ValueError, "z0 contains non-finite"),
    (dict(z0=np.ones((1, 1, 4))), ValueError, "z0 must have 1 or 2 dimensions"),
    (dict(A=np.eye(3)), ValueError, "A is 3x3 but the state has 4 entries"),
    (dict(B=np.eye(5)), ValueError, "B is 5x5 but the state has 4 entries"),
    (dict(A=np.ones((4, 3))), ValueError, "A must be square"),
    (dict(B=np.ones((3, 4))), ValueError, "B must be square"),
    (dict(A=Conv(np.ones((1, 1)), (1, 3))), ValueError, "A is 3x3"),
    (dict(A=np.ones(4)), ValueError, "A must have 2 dimensions"),
    (dict(B=np.full((4, 4), np.nan)), ValueError, "B contains non-finite"),
    (dict(options=dict(tol=1e-3)), TypeError, "method 'euler'"),
    (dict(method="implicit_euler", options=dict(newton=3)), TypeError, "method 'implicit_euler'"),
    (dict(method="implicit_euler", options=dict(linear_solver="lu")), ValueError,
     "linear_solver must be 'exact' or 'neumann'"),
    (dict(method="implicit_euler", options=dict(initial_guess="zero")), ValueError,
     "initial_guess must be 'euler' or 'previous'"),
    (dict(method="implicit_euler", options=dict(tol=0.0)), ValueError, "tol must be"),
    (dict(method="implicit_euler", options=dict(max_iter=0)), ValueError, "max_iter must be >= 1"),
    (dict(method="implicit_euler", options=dict(neumann_terms=0)), ValueError,
     "neumann_terms must be >= 1"),
]


@pytest.mark.parametrize(("change", "error", "message"), INPUT_ERRORS)
def test_input_errors(change, error, message):
    args = dict(A=A4, B=-A4, z0=Z0, h=0.1, steps=2, method="euler", options={})
    args.update(change)
    options = args.pop("options")
    with pytest.raises(error, match=re.escape(message)):
        odeint(**args, **options)
