"""The Fourier route to circular convolution in real 2x2 block form.

References: ``numpy.fft`` for transforms and spectra (the padded, centred kernel is built here
with ``np.roll``), ``scipy.ndimage.convolve(mode="wrap")`` for convolutions, and explicit
complex arithmetic for the block form.
"""

import numpy as np
import pytest
import scipy.ndimage
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import assert_close
from xbarode.model import dft_matrix, fourier_conv, from_real, kernel_spectrum, to_real

SETTINGS = settings(max_examples=30, deadline=None)


def complex_normal(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


seeds = st.integers(0, 2**32 - 1)
sizes = st.integers(1, 9)


@st.composite
def conv_problems(draw, max_side=12):
    """Image shape, odd kernel fitting it, batch shape and a seeded generator."""
    height = draw(st.integers(1, max_side))
    width = draw(st.integers(1, max_side))
    k = draw(st.sampled_from(list(range(1, min(height, width) + 1, 2))))
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    rng = np.random.default_rng(draw(seeds))
    return (height, width), rng.standard_normal((k, k)), lead, rng


def scipy_conv(kernel, images):
    """``scipy.ndimage.convolve(mode="wrap")`` applied to each image of a batch."""
    flat = images.reshape(-1, *images.shape[-2:])
    out = [scipy.ndimage.convolve(x, kernel, mode="wrap") for x in flat]
    return np.stack(out).reshape(images.shape)


def centred_padding(kernel, shape):
    """The kernel zero-padded to ``shape`` with its centre tap rolled to (0, 0)."""
    k = kernel.shape[0]
    padded = np.zeros(shape)
    padded[:k, :k] = kernel
    return np.roll(padded, (-(k // 2), -(k // 2)), axis=(0, 1))


@SETTINGS
@given(st.integers(1, 40), seeds)
def test_dft_matrix_is_orthonormal_fft(n, seed):
    rng = np.random.default_rng(seed)
    matrix = dft_matrix(n)
    x = complex_normal(rng, n)
    xs = complex_normal(rng, (n, 3))
    assert matrix.shape == (n, n)
    assert matrix.dtype == np.complex128
    assert_close(matrix @ x, np.fft.fft(x, norm="ortho"), rtol=1e-12)
    assert_close(matrix @ xs, np.fft.fft(xs, axis=0, norm="ortho"), rtol=1e-12)
    assert_close(matrix @ matrix.conj().T, np.eye(n), rtol=1e-12)
    assert_close(matrix, matrix.T, rtol=1e-12)
    assert_close(np.conj(matrix) @ (matrix @ x), x, rtol=1e-12)


def test_dft_matrix_entries():
    omega = np.exp(-2j * np.pi / 6)
    expected = np.array([[omega ** (j * k) for k in range(6)] for j in range(6)]) / np.sqrt(6)
    assert_close(dft_matrix(6), expected, rtol=1e-14)


def test_dft_matrix_errors():
    with pytest.raises(ValueError, match="n must be >= 1"):
        dft_matrix(0)
    with pytest.raises(TypeError, match="n must be an integer"):
        dft_matrix(2.0)


def test_to_real_layout():
    np.testing.assert_array_equal(to_real(np.array([1 + 2j, -3 - 4j])), [1, 2, -3, -4])
    np.testing.assert_array_equal(to_real(np.array([[1 + 2j]])), [[1, -2], [2, 1]])
    np.testing.assert_array_equal(
        to_real(np.array([[1 + 2j, 5j]])), [[1, -2, 0, -5], [2, 1, 5, 0]]
    )


@SETTINGS
@given(sizes, sizes, sizes, seeds)
def test_real_form_commutes_with_products(n, p, r, seed):
    rng = np.random.default_rng(seed)
    m, v, other = complex_normal(rng, (n, p)), complex_normal(rng, p), complex_normal(rng, (p, r))
    assert to_real(m).shape == (2 * n, 2 * p)
    assert to_real(v).shape == (2 * p,)
    assert_close(to_real(m @ v), to_real(m) @ to_real(v), rtol=1e-12)
    assert_close(to_real(m @ other), to_real(m) @ to_real(other), rtol=1e-12)


@SETTINGS
@given(sizes, sizes, seeds)
def test_real_form_round_trip(n, p, seed):
    rng = np.random.default_rng(seed)
    v, m = complex_normal(rng, n), complex_normal(rng, (n, p))
    np.testing.assert_array_equal(from_real(to_real(v)), v)
    np.testing.assert_array_equal(from_real(to_real(m)), m)
    np.testing.assert_array_equal(to_real(from_real(to_real(m))), to_real(m))
    real = rng.standard_normal((n, p))
    np.testing.assert_array_equal(from_real(to_real(real)), real.astype(complex))


def test_real_form_errors():
    with pytest.raises(ValueError, match="x must have even dimensions"):
        from_real(np.zeros(3))
    with pytest.raises(ValueError, match="x must have even dimensions"):
        from_real(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="x must have even dimensions"):
        from_real(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"x is not made of 2x2 blocks \[\[a, -b\], \[b, a\]\]"):
        from_real(np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="x is not made of 2x2 blocks"):
        from_real(np.array([[1.0, -2.0], [2.0, 1.5]]))
    with pytest.raises(ValueError, match="x must have 1 or 2 dimensions"):
        from_real(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="x contains non-finite"):
        from_real(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="x must be a vector or a matrix"):
        to_real(np.zeros((1, 1, 1), complex))
    with pytest.raises(ValueError, match="x contains non-finite"):
        to_real(np.array([1j * np.inf]))


@SETTINGS
@given(conv_problems())
def test_kernel_spectrum_is_fft2_of_centred_kernel(problem):
    shape, kernel, _, _ = problem
    spectrum = kernel_spectrum(kernel, shape)
    assert spectrum.shape == shape
    assert_close(spectrum, np.fft.fft2(centred_padding(kernel, shape)))


def test_kernel_spectrum_of_delta_is_flat():
    kernel = np.zeros((3, 3))
    kernel[1, 1] = 2.5
    np.testing.assert_allclose(kernel_spectrum(kernel, (4, 6)), np.full((4, 6), 2.5), atol=1e-14)


@SETTINGS
@given(conv_problems())
def test_fourier_conv_matches_scipy(problem):
    shape, kernel, lead, rng = problem
    images = rng.standard_normal((*lead, *shape))
    out = fourier_conv(kernel, images)
    assert out.shape == images.shape
    assert out.dtype == np.float64
    assert_close(out, scipy_conv(kernel, images))


@pytest.mark.parametrize(("shape", "k"), [((5, 7), 3), ((3, 10), 3), ((8, 8), 5), ((6, 9), 5)])
def test_corrected_eq17_matches_and_uncorrected_does_not(shape, k):
    rng = np.random.default_rng(k * 100 + shape[0])
    kernel = rng.standard_normal((k, k))
    image = rng.standard_normal(shape)
    reference = scipy.ndimage.convolve(image, kernel, mode="wrap")
    w_h, w_w = dft_matrix(shape[0]), dft_matrix(shape[1])
    image_spectrum = w_h @ image @ w_w
    scale = np.sqrt(shape[0] * shape[1])

    def eq17(padded, factor):
        return np.conj(w_h) @ (factor * (w_h @ padded @ w_w) * image_spectrum) @ np.conj(w_w)

    top_left = np.zeros(shape)
    top_left[:k, :k] = kernel
    centred = centred_padding(kernel, shape)
    corrected = eq17(centred, scale)
    assert np.abs(corrected.imag).max() <= 1e-12 * np.abs(reference).max()
    assert_close(corrected.real, reference)
    assert_close(fourier_conv(kernel, image), reference)
    for wrong in (eq17(top_left, 1.0), eq17(top_left, scale), eq17(centred, 1.0)):
        assert np.abs(wrong - reference).max() > 0.1 * np.abs(reference).max()


def test_fourier_conv_errors():
    with pytest.raises(ValueError, match="image must have at least 2 dimensions"):
        fourier_conv(np.ones((1, 1)), np.zeros(4))
    with pytest.raises(ValueError, match="image contains non-finite"):
        fourier_conv(np.ones((1, 1)), np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="kernel size must be odd"):
        fourier_conv(np.ones((2, 2)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="does not fit"):
        fourier_conv(np.ones((5, 5)), np.zeros((4, 9)))
    with pytest.raises(ValueError, match="kernel must be square"):
        kernel_spectrum(np.ones((1, 3)), (4, 4))
