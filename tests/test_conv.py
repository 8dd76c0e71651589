"""Circular convolution (matrix, shift-sum and operator forms) and its kernel gradients.

References: ``scipy.ndimage.convolve(mode="wrap")`` for products, and central differences of
``conv_matrix`` and of ``scipy.ndimage.convolve`` for the kernel gradients.
"""

import re

import numpy as np
import pytest
import scipy.ndimage
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import assert_close
from xbarode.model import Conv, circular_conv, conv_kernel_grad, conv_matrix, kernel_pullback

SETTINGS = settings(max_examples=30, deadline=None)


@st.composite
def problems(draw, max_side=12, batch=False):
    """Image shape, odd kernel fitting it, and a seeded generator; optionally a batch shape."""
    height = draw(st.integers(1, max_side))
    width = draw(st.integers(1, max_side))
    k = draw(st.sampled_from(list(range(1, min(height, width) + 1, 2))))
    lead = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)) if batch else []
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return (height, width), rng.standard_normal((k, k)), tuple(lead), rng


def scipy_conv(kernel, images):
    """``scipy.ndimage.convolve(mode="wrap")`` applied to each image of a batch."""
    images = np.asarray(images)
    flat = images.reshape(-1, *images.shape[-2:])
    out = [scipy.ndimage.convolve(x, kernel, mode="wrap") for x in flat]
    return np.stack(out).reshape(images.shape)


def matrix_derivatives(kernel, shape, eps=0.5):
    """``dA/da[p, q]`` for every tap, by central differences of :func:`conv_matrix`.

    ``conv_matrix`` is linear in the kernel, so the difference is exact for any ``eps``; a large
    one keeps rounding negligible.
    """
    k = kernel.shape[0]
    out = np.empty((k, k, *(2 * (shape[0] * shape[1],))))
    for p in range(k):
        for q in range(k):
            step = np.zeros_like(kernel)
            step[p, q] = eps
            out[p, q] = (conv_matrix(kernel + step, shape) - conv_matrix(kernel - step, shape))
            out[p, q] /= 2 * eps
    return out


def finite_difference_kernel_grad(grad_output, inputs, kernel, shape, eps=0.5):
    """Central differences of ``L(a) = sum(g * conv(a, z))``, convolution by scipy."""
    images = inputs.reshape(-1, *shape)
    g = grad_output.reshape(-1, *shape)

    def loss(a):
        return np.sum(g * scipy_conv(a, images))

    k = kernel.shape[0]
    out = np.empty((k, k))
    for p in range(k):
        for q in range(k):
            step = np.zeros_like(kernel)
            step[p, q] = eps
            out[p, q] = (loss(kernel + step) - loss(kernel - step)) / (2 * eps)
    return out


@SETTINGS
@given(problems())
def test_conv_matrix_matches_scipy(problem):
    shape, kernel, _, rng = problem
    x = rng.standard_normal(shape)
    assert_close(conv_matrix(kernel, shape) @ x.ravel(), scipy_conv(kernel, x).ravel())


@SETTINGS
@given(problems(batch=True))
def test_circular_conv_matches_scipy_on_batches(problem):
    shape, kernel, lead, rng = problem
    images = rng.standard_normal((*lead, *shape))
    out = circular_conv(kernel, images)
    assert out.shape == images.shape
    assert_close(out, scipy_conv(kernel, images))


def test_conv_matrix_is_a_sum_of_shifts():
    kernel = np.zeros((3, 3))
    kernel[0, 2] = 1.0
    x = np.arange(20.0).reshape(4, 5)
    y = (conv_matrix(kernel, (4, 5)) @ x.ravel()).reshape(4, 5)
    np.testing.assert_array_equal(y, np.roll(x, (-1, 1), axis=(0, 1)))


@SETTINGS
@given(problems(max_side=24, batch=True))
def test_conv_operator_matches_matrix(problem):
    shape, kernel, lead, rng = problem
    m = shape[0] * shape[1]
    op = Conv(kernel, shape)
    matrix = conv_matrix(kernel, shape)
    x = rng.standard_normal((*lead, m))
    assert op.shape == (m, m)
    assert op.image_shape == shape
    np.testing.assert_array_equal(op.params, kernel)
    assert_close(op.dense(), matrix)
    assert_close(op.matvec(x), x @ matrix.T)
    assert_close(op.rmatvec(x), x @ matrix)


@pytest.mark.parametrize(("shape", "k"), [((8, 8), 3), ((5, 7), 5), ((20, 17), 3), ((17, 16), 5)])
@pytest.mark.parametrize("lead", [(), (3,), (2, 2)])
def test_conv_operator_both_paths(shape, k, lead):
    rng = np.random.default_rng(sum(shape) + k + len(lead))
    kernel = rng.standard_normal((k, k))
    m = shape[0] * shape[1]
    op = Conv(kernel, shape)
    x = rng.standard_normal((*lead, m))
    y = rng.standard_normal((*lead, m))
    matrix = conv_matrix(kernel, shape)
    assert_close(op.matvec(x), scipy_conv(kernel, x.reshape(*lead, *shape)).reshape(x.shape))
    assert_close(op.matvec(x), x @ matrix.T)
    assert_close(op.rmatvec(y), y @ matrix)
    assert np.isclose(np.sum(y * op.matvec(x)), np.sum(x * op.rmatvec(y)), rtol=1e-12)


@SETTINGS
@given(problems(max_side=20, batch=True))
def test_kernel_gradients_match_finite_differences(problem):
    shape, kernel, lead, rng = problem
    m = shape[0] * shape[1]
    k = kernel.shape[0]
    g = rng.standard_normal((*lead, m))
    z = rng.standard_normal((*lead, m))
    expected = finite_difference_kernel_grad(g, z, kernel, shape)
    assert_close(conv_kernel_grad(g, z, k, shape), expected, rtol=1e-9)
    assert_close(Conv(kernel, shape).param_grad(g, z), expected, rtol=1e-9)


@SETTINGS
@given(problems(batch=True))
def test_kernel_gradients_match_matrix_pullback(problem):
    shape, kernel, lead, rng = problem
    m = shape[0] * shape[1]
    k = kernel.shape[0]
    g = rng.standard_normal((*lead, m))
    z = rng.standard_normal((*lead, m))
    grad_matrix = g.reshape(-1, m).T @ z.reshape(-1, m)
    expected = np.einsum("ij,pqij->pq", grad_matrix, matrix_derivatives(kernel, shape))
    assert_close(kernel_pullback(grad_matrix, k, shape), expected)
    assert_close(conv_kernel_grad(g, z, k, shape), expected)
    assert_close(Conv(kernel, shape).param_grad(g, z), expected)


@SETTINGS
@given(problems())
def test_kernel_pullback_of_arbitrary_matrix(problem):
    shape, kernel, _, rng = problem
    m = shape[0] * shape[1]
    grad_matrix = rng.standard_normal((m, m))
    expected = np.einsum("ij,pqij->pq", grad_matrix, matrix_derivatives(kernel, shape))
    assert_close(kernel_pullback(grad_matrix, kernel.shape[0], shape), expected)


def test_large_image_kernel_gradient_uses_no_dense_matrix_but_agrees():
    shape, k = (20, 17), 5
    rng = np.random.default_rng(7)
    kernel = rng.standard_normal((k, k))
    g = rng.standard_normal((4, 340))
    z = rng.standard_normal((4, 340))
    expected = np.einsum("ij,pqij->pq", g.T @ z, matrix_derivatives(kernel, shape))
    assert_close(Conv(kernel, shape).param_grad(g, z), expected)
    assert_close(finite_difference_kernel_grad(g, z, kernel, shape), expected)


KERNEL_ERRORS = [
    (np.ones((2, 2)), (5, 5), "kernel size must be odd"),
    (np.ones((4, 4)), (5, 5), "kernel size must be odd"),
    (np.ones((3, 5)), (5, 5), "kernel must be square"),
    (np.ones((5, 5)), (3, 8), "does not fit"),
    (np.ones((3, 3)), (2, 9), "does not fit"),
    (np.array([[1.0, np.nan, 0.0]] * 3), (5, 5), "non-finite"),
    (np.array([[np.inf]]), (5, 5), "non-finite"),
    (np.ones(3), (5, 5), "kernel must have 2 dimensions"),
]
BAD_SHAPES = [(0, 5), (5, -1), (5,), (5, 5, 5), (2.5, 3), ("a", 3), None]
SHAPE_MESSAGE = re.escape("shape must be a pair (H, W) of positive integers")


@pytest.mark.parametrize(("kernel", "shape", "message"), KERNEL_ERRORS)
def test_kernel_errors(kernel, shape, message):
    m = shape[0] * shape[1]
    with pytest.raises(ValueError, match=message):
        conv_matrix(kernel, shape)
    with pytest.raises(ValueError, match=message):
        Conv(kernel, shape)
    with pytest.raises(ValueError, match=message):
        circular_conv(kernel, np.zeros(shape))
    if kernel.ndim == 2 and np.all(np.isfinite(kernel)) and kernel.shape[0] == kernel.shape[1]:
        with pytest.raises(ValueError, match=message):
            conv_kernel_grad(np.zeros(m), np.zeros(m), kernel.shape[0], shape)
        with pytest.raises(ValueError, match=message):
            kernel_pullback(np.zeros((m, m)), kernel.shape[0], shape)


@pytest.mark.parametrize("shape", BAD_SHAPES)
def test_bad_shape_errors(shape):
    with pytest.raises(ValueError, match=SHAPE_MESSAGE):
        conv_matrix(np.ones((1, 1)), shape)
    with pytest.raises(ValueError, match=SHAPE_MESSAGE):
        Conv(np.ones((1, 1)), shape)
    with pytest.raises(ValueError, match=SHAPE_MESSAGE):
        conv_kernel_grad(np.zeros(4), np.zeros(4), 1, shape)
    with pytest.raises(ValueError, match=SHAPE_MESSAGE):
        kernel_pullback(np.zeros((4, 4)), 1, shape)


def test_other_argument_errors():
    with pytest.raises(ValueError, match="images must have at least 2 dimensions"):
        circular_conv(np.ones((1, 1)), np.zeros(5))
    with pytest.raises(ValueError, match="images contains non-finite"):
        circular_conv(np.ones((1, 1)), np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="grad_output and inputs must have the same shape"):
        conv_kernel_grad(np.zeros(12), np.zeros(11), 3, (3, 4))
    with pytest.raises(ValueError, match="vectors must have 12 entries"):
        conv_kernel_grad(np.zeros(11), np.zeros(11), 3, (3, 4))
    with pytest.raises(ValueError, match=re.escape("grad_matrix must have shape (12, 12)")):
        kernel_pullback(np.zeros((12, 11)), 3, (3, 4))
    with pytest.raises(ValueError, match="grad_matrix contains non-finite"):
        kernel_pullback(np.full((12, 12), np.inf), 3, (3, 4))
    with pytest.raises(TypeError, match="kernel must be a real numeric array"):
        conv_matrix([[object()]], (3, 3))
