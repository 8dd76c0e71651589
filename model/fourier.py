"""The Fourier route to circular convolution, in the real 2×2 block form a crossbar can hold.

A complex number ``x + iy`` becomes the block ``[[x, -y], [y, x]]``; a complex vector becomes
``[Re v0, Im v0, Re v1, Im v1, ...]``; an n×p complex matrix becomes a 2n×2p real matrix of 2×2
blocks (docs/architecture.md §1). The map commutes with products, so a crossbar that holds only
reals computes complex transforms.

Convolution theorem, with its scale and centring: with the kernel zero-padded to H×W and rolled so
its centre tap sits at (0, 0), ``â = W_H a_pad W_W`` and
``conv(a, X) = conj(W_H) · (√(HW) · â ⊙ X̂) · conj(W_W)`` with ``X̂ = W_H X W_W``.
"""

from __future__ import annotations

import numpy as np

from . import _checks

__all__ = ["dft_matrix", "fourier_conv", "from_real", "kernel_spectrum", "to_real"]


def dft_matrix(n: int) -> np.ndarray:
    """Unitary DFT matrix ``W[j, k] = ω^(jk) / √n`` with ``ω = exp(-2πi/n)``.

    Parameters
    ----------
    n : int
        Transform length, ``n >= 1``.

    Returns
    -------
    ndarray of complex128, shape (n, n)
        Symmetric and unitary: ``W @ x == numpy.fft.fft(x, norm="ortho")`` and
        ``W⁻¹ = conj(W)``.
    """
    n = _checks.positive_int("n", n)
    jk = np.outer(np.arange(n), np.arange(n)) % n  # reduce first: exact phases for large n
    return np.exp(-2j * np.pi * jk / n) / np.sqrt(n)


def to_real(x) -> np.ndarray:
    """Map a complex vector or matrix to its real block form.

    Parameters
    ----------
    x : array_like, complex, shape (n,) or (n, p)
        A vector or a matrix.

    Returns
    -------
    ndarray of float64, shape (2n,) or (2n, 2p)
        For a vector ``[Re x0, Im x0, Re x1, Im x1, ...]``; for a matrix, entry ``x[j, k]``
        becomes the block ``[[Re, -Im], [Im, Re]]`` at rows ``2j:2j+2``, columns ``2k:2k+2``, so
        that ``to_real(M @ v) == to_real(M) @ to_real(v)``.
    """
    x = np.asarray(x)
    if x.ndim not in (1, 2):
        raise ValueError(f"x must be a vector or a matrix, not an array of {x.ndim} dimensions")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains non-finite values (NaN or inf)")
    x = x.astype(np.complex128)
    if x.ndim == 1:
        return np.stack([x.real, x.imag], axis=-1).reshape(-1)
    n, p = x.shape
    out = np.empty((n, 2, p, 2))
    out[:, 0, :, 0] = x.real
    out[:, 0, :, 1] = -x.imag
    out[:, 1, :, 0] = x.imag
    out[:, 1, :, 1] = x.real
    return out.reshape(2 * n, 2 * p)


def from_real(x) -> np.ndarray:
    """Inverse of :func:`to_real`.

    Parameters
    ----------
    x : array_like, real, shape (2n,) or (2n, 2p)
        A real-form vector, or a matrix made of 2×2 blocks ``[[a, -b], [b, a]]``.

    Returns
    -------
    ndarray of complex128, shape (n,) or (n, p)

    Raises
    ------
    ValueError
        If a dimension is odd, or a 2×2 block is not of the form ``[[a, -b], [b, a]]``.
    """
    if np.iscomplexobj(x):
        raise TypeError("x must be real (the real block form); use to_real first")
    x = _checks.as_finite("x", x, ndim=(1, 2))
    if any(d % 2 for d in x.shape):
        raise ValueError(f"x must have even dimensions in real block form, not {x.shape}")
    if x.ndim == 1:
        return x[0::2] + 1j * x[1::2]
    re, neg_im, im, re2 = x[0::2, 0::2], x[0::2, 1::2], x[1::2, 0::2], x[1::2, 1::2]
    if not (np.array_equal(re, re2) and np.array_equal(neg_im, -im)):
        raise ValueError("x is not made of 2x2 blocks [[a, -b], [b, a]]")
    return re + 1j * im


def kernel_spectrum(kernel, shape) -> np.ndarray:
    """The scaled kernel spectrum ``√(HW) · W_H a_pad W_W`` that multiplies ``X̂``.

    Parameters
    ----------
    kernel : array_like, shape (k, k)
        Odd square kernel, ``k <= min(H, W)``.
    shape : tuple of int
        Image shape ``(H, W)``.

    Returns
    -------
    ndarray of complex128, shape (H, W)
        The kernel zero-padded to H×W with its centre tap rolled to (0, 0), transformed by the
        unitary 2-D DFT and scaled by √(HW) (the factor of the unitary normalisation).
    """
    shape = _checks.image_shape(shape)
    kernel = _checks.kernel(kernel, shape)
    height, width = shape
    c = kernel.shape[0] // 2
    padded = np.zeros(shape)
    offsets = np.arange(kernel.shape[0]) - c
    np.add.at(padded, np.ix_(offsets % height, offsets % width), kernel)
    return np.sqrt(height * width) * (dft_matrix(height) @ padded @ dft_matrix(width))


def _pass(blocks: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Apply a real-form transform to every complex vector along axis -2 of ``(..., n, 2)``."""
    *lead, n, _ = blocks.shape
    return (blocks.reshape(*lead, 2 * n) @ transform.T).reshape(*lead, n, 2)


def fourier_conv(kernel, image) -> np.ndarray:
    """Circular convolution computed as a crossbar would: real products on 2×2 block forms.

    The image goes through a row pass (``W_W`` on each row), a column pass (``W_H`` on each
    column), a Hadamard product with the kernel spectrum (one 2×2 real block per element),
    and the inverse column and row passes (``conj(W)``); every step is a real matrix–vector
    product with a matrix from :func:`to_real`.

    Parameters
    ----------
    kernel : array_like, shape (k, k)
        Odd square kernel, ``k <= min(H, W)``.
    image : array_like, shape (..., H, W)
        Real image or batch of images.

    Returns
    -------
    ndarray, shape (..., H, W)
        Equal to ``scipy.ndimage.convolve(image, kernel, mode="wrap")`` up to float rounding.
    """
    image = _checks.as_finite("image", image)
    if image.ndim < 2:
        raise ValueError(f"image must have at least 2 dimensions (H, W), not {image.ndim}")
    height, width = image.shape[-2:]
    spectrum = kernel_spectrum(kernel, (height, width))
    rows_fwd, cols_fwd = to_real(dft_matrix(width)), to_real(dft_matrix(height))
    rows_inv, cols_inv = to_real(np.conj(dft_matrix(width))), to_real(np.conj(dft_matrix(height)))

    # (..., H, W, 2): each pixel a complex number in real form, imaginary part zero.
    blocks = np.stack([image, np.zeros_like(image)], axis=-1)
    blocks = _pass(blocks, rows_fwd)                                    # rows: X W_W
    blocks = _pass(np.swapaxes(blocks, -3, -2), cols_fwd)               # columns: W_H (·)
    # Hadamard product: pixel (h, w) times the block [[a, -b], [b, a]] of spectrum[h, w].
    a, b = spectrum.real.T, spectrum.imag.T                             # column-major layout
    re, im = blocks[..., 0], blocks[..., 1]
    blocks = np.stack([a * re - b * im, b * re + a * im], axis=-1)
    blocks = _pass(blocks, cols_inv)                                    # inverse columns
    blocks = _pass(np.swapaxes(blocks, -3, -2), rows_inv)               # inverse rows
    return blocks[..., 0]
