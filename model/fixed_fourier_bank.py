"""Integer twin of the Fourier path with channels (docs/architecture.md, "Fourier path with
channels").

With ``c`` channels the operator is a c_out×c_in bank of k×k kernels ``K[o, i]`` (the
convention of :class:`~xbarode.model.fixed_bank.FixedConvBank`): ``(K z)_o = Σ_i K[o, i] ⊛ z_i``.
By the convolution theorem, after the 2-D DFT of every input channel the output spectrum at
each frequency ``f`` is ``ẑ_o(f) = Σ_i K̂[o, i](f)·ẑ_i(f)``: a c_out×c_in complex matrix times
a c_in-vector, which in real 2×2 block form is a small (2·c_out)×(2·c_in) crossbar product.
With one channel it is the Hadamard product (:func:`~xbarode.model.fixed_ops.hadamard_fixed`).

The path is DFT per input channel (:func:`~xbarode.model.fixed_ops.dft2_fixed`, its roundings),
the channel mixing per frequency (one exact integer sum per output component, narrowed once:
:func:`channel_mix_fixed`), and the inverse DFT per output channel. Its three rounding sites are
those of the one-channel path (:data:`~xbarode.model.fixed_ops.FOURIER_SITES`: rows, columns,
and the Hadamard unit, which the mixing generalises), so that with ``c = 1`` every word and
every draw is the one-channel path's.
"""

from __future__ import annotations

import numpy as np

from .fixed import Format, Overflow, Rounder, narrow
from .fixed_ops import (
    accumulator_bits,
    check_accumulator,
    dft2_fixed,
    fourier_rounders,
    spectrum_words,
)

__all__ = ["FixedFourierBank", "channel_mix_fixed", "fourier_bank_fixed", "mixing_accumulator_bits"]

#: Bits of the widest exact sum NumPy's int64 holds.
_INT64_BITS = 64


def mixing_accumulator_bits(x_format: Format, spectrum_format: Format, channels_in: int) -> int:
    """Bits of the signed accumulator that holds one output component of the channel mixing.

    Each real or imaginary part is the exact sum of ``2·c_in`` products of a data word and a
    spectrum word (``Σ_i a·c − b·d``, ``Σ_i a·d + b·c``): :func:`~xbarode.model.fixed_ops.
    accumulator_bits` with ``terms = 2·c_in``. With ``c_in = 1`` this is the Hadamard unit's sum
    of two products.
    """
    return accumulator_bits(x_format, spectrum_format, 2 * channels_in)


def channel_mix_fixed(x: np.ndarray, spectra: np.ndarray, *, x_format: Format,
                      spectrum_format: Format, out_format: Format, rounder: Rounder,
                      overflow: Overflow, acc_width: int | None = None) -> np.ndarray:
    """Per frequency, the complex matrix–vector product ``y_o = Σ_i K̂[o, i]·x_i`` on words.

    Parameters
    ----------
    x : ndarray of int, shape (..., c_in, 2)
        ``(re, im)`` words of ``x_format``, one c_in-vector per frequency (the leading axes).
    spectra : ndarray of int, shape (..., c_out, c_in, 2)
        ``(re, im)`` words of ``spectrum_format``, one c_out×c_in matrix per frequency; the
        leading axes broadcast with ``x``'s.
    x_format, spectrum_format, out_format : Format
    rounder : Rounder
        The mixing site's rounding (the Hadamard unit's, site 2 of
        :data:`~xbarode.model.fixed_ops.FOURIER_SITES`).
    overflow : Overflow
        Saturations are counted as ``hadamard``.
    acc_width : int, optional
        Width of the hardware's accumulator: raise if it cannot hold the exact sum
        (:func:`mixing_accumulator_bits`). None: an accumulator as wide as the sum needs.

    Returns
    -------
    ndarray of int64, shape (..., c_out, 2)
        ``(re, im)`` words of ``out_format``.

    Notes
    -----
    Each output component is **one** exact integer sum over the input channels,
    ``re = Σ_i (a·c − b·d)``, ``im = Σ_i (a·d + b·c)`` with ``x_i = a + ib`` and
    ``K̂[o, i] = c + id`` (the real 2×2 block ``[[c, −d], [d, c]]`` times ``[a, b]``), narrowed
    **once** by ``x.frac + spectrum.frac − out.frac`` bits. Draws are taken in C order of the
    output: frequency by frequency (the leading axes), output channel ``o`` by output channel,
    real before imaginary. With ``c_in = c_out = 1`` this is
    :func:`~xbarode.model.fixed_ops.hadamard_fixed`, word for word and draw for draw.

    Raises
    ------
    ValueError
        If the shapes do not match, or ``acc_width`` is too narrow (the message of
        :func:`~xbarode.model.fixed_ops.check_accumulator`, prefixed ``mix: ``).
    OverflowError
        If the exact sum could leave int64.
    """
    x, spectra = np.asarray(x, dtype=np.int64), np.asarray(spectra, dtype=np.int64)
    if x.ndim < 2 or x.shape[-1] != 2 or spectra.ndim < 3 or spectra.shape[-1] != 2 \
            or spectra.shape[-2] != x.shape[-2]:
        raise ValueError(f"mix: x must have shape (..., c_in, 2) and spectra (..., c_out, c_in, "
                         f"2), not {x.shape} and {spectra.shape}")
    channels_in = x.shape[-2]
    if acc_width is not None:
        check_accumulator(acc_width, x_format, spectrum_format, 2 * channels_in, name="mix")
    need = mixing_accumulator_bits(x_format, spectrum_format, channels_in)
    if need > _INT64_BITS:
        raise OverflowError(f"mix: the exact sum needs {need} bits, more than int64 holds")
    a, b = x[..., None, :, 0], x[..., None, :, 1]
    c, d = spectra[..., 0], spectra[..., 1]
    acc = np.stack([(a * c - b * d).sum(axis=-1), (a * d + b * c).sum(axis=-1)], axis=-1)
    return narrow(acc, x_format.frac + spectrum_format.frac - out_format.frac, out_format,
                  rounder, overflow, "hadamard")


def fourier_bank_fixed(kernels, images: np.ndarray, *, data: Format, twiddle: Format,
                       spectrum: Format, rounder, overflow: Overflow,
                       acc_width: int | None = None) -> np.ndarray:
    """Integer twin of a bank of circular convolutions by the Fourier path.

    Parameters
    ----------
    kernels : array_like, shape (c_out, c_in, k, k)
        Float kernels, ``K[o, i]`` from input channel ``i`` to output channel ``o``; their
        spectra are :func:`~xbarode.model.fixed_ops.spectrum_words` (quantised once per call).
    images : ndarray of int, shape (batch, c_in, H, W)
        Words of ``data``.
    data, twiddle, spectrum : Format
        As :func:`~xbarode.model.fixed_ops.fourier_conv_fixed`'s.
    rounder : Rounder or tuple of three Rounder
        One rounder for every site, or one per site of
        :data:`~xbarode.model.fixed_ops.FOURIER_SITES` (rows, columns, mixing):
        :func:`~xbarode.model.fixed_ops.fourier_rounders`.
    overflow : Overflow
    acc_width : int, optional
        The mixing accumulator's width (:func:`channel_mix_fixed`).

    Returns
    -------
    ndarray of int64, shape (batch, c_out, H, W)
        Real parts, in ``data``: ``Σ_i K[o, i] ⊛ images[:, i]``.

    Notes
    -----
    Images are processed one after the other. Per image: the forward 2-D DFT of input channel
    0, 1, …, c_in − 1 (each a row pass, then a column pass, as
    :func:`~xbarode.model.fixed_ops.dft2_fixed`); the channel mixing at every frequency,
    column-major (``w`` outer, ``h`` inner), output channel by output channel, real before
    imaginary (:func:`channel_mix_fixed`); then the inverse 2-D DFT of output channel 0, 1, …,
    c_out − 1 (column pass, then row pass). So the row site draws for the forward row passes of
    every input channel in channel order, then the inverse row passes of every output
    channel; the column site likewise; the mixing site ``2·c_out`` draws per frequency. With
    ``c = 1`` this is :func:`~xbarode.model.fixed_ops.fourier_conv_fixed`, bit for bit.

    Error bound (documented, tested): for images in [0, 1] and without saturation, output
    channel ``o`` lies within
    ``(H + W)·(c_in − 1 + max(1, Σ_i Σ|K[o, i]|))·(2^-data.frac + 2^-twiddle.frac +
    2^-spectrum.frac)`` of the float64 ``Σ_i K[o, i] ⊛ x_i`` of the images' word values; with
    one channel, the one-channel path's bound.
    """
    rows_r, cols_r, mix_r = (rounder,) * 3 if isinstance(rounder, Rounder) else rounder
    images = np.asarray(images, dtype=np.int64)
    kernels = np.asarray(kernels, dtype=np.float64)
    if images.ndim != 4 or kernels.ndim != 4 or images.shape[1] != kernels.shape[1]:
        raise ValueError(f"images must have shape (batch, c_in, H, W) and kernels (c_out, c_in, "
                         f"k, k) with the same c_in, not {images.shape} and {kernels.shape}")
    height, width = images.shape[2:]
    words = spectrum_words(kernels, (height, width), spectrum, overflow)
    spec_t = words.transpose(3, 2, 0, 1, 4)                     # (W, H, c_out, c_in, 2)
    out = np.empty((len(images), kernels.shape[0], height, width), dtype=np.int64)
    passes = {"data": data, "twiddle": twiddle, "rounder": (rows_r, cols_r),
              "overflow": overflow}
    for b, picture in enumerate(images):
        spectra_in = np.stack([
            dft2_fixed(np.stack([channel, np.zeros_like(channel)], axis=-1), **passes)
            for channel in picture], axis=-2)                    # (H, W, c_in, 2)
        mixed = channel_mix_fixed(np.swapaxes(spectra_in, 0, 1), spec_t, x_format=data,
                                  spectrum_format=spectrum, out_format=data, rounder=mix_r,
                                  overflow=overflow, acc_width=acc_width)
        mixed = np.swapaxes(mixed, 0, 1)                         # (H, W, c_out, 2)
        for o in range(kernels.shape[0]):
            out[b, o] = dft2_fixed(mixed[:, :, o], **passes, inverse=True)[..., 0]
    return out


class FixedFourierBank:
    """Integer twin of a bank's product ``K z`` by the Fourier path inside the core, with
    :class:`~xbarode.model.fixed_bank.FixedConvBank`'s ``forward`` interface.

    ``forward`` moves each input word into the Fourier ``data`` format (exactly: a left shift;
    the formats are checked for it), convolves with :func:`fourier_bank_fixed` (its three
    rounding sites, seeded ``site_seed(seed, 0..2)``), and narrows each real part to the output
    format with the extra ``shift`` folded in: one more rounding, drawn from its own LFSR
    (``out_seed``) in the output's C order ``(batch, channel, pixel)``. With ``c = 1`` this is
    :class:`~xbarode.model.fixed_ops.FixedFourierConv`, bit for bit.

    Parameters
    ----------
    kernels : array_like, shape (c_out, c_in, k, k)
        Float kernels; the host quantises their spectra
        (:func:`~xbarode.model.fixed_ops.spectrum_words`).
    shape : tuple of int
        Image shape (H, W); the state is channel after channel, each image row-major.
    data, twiddle, spectrum : Format
        The Fourier unit's formats.
    rounding : {"floor", "nearest", "stochastic"}
    seed, out_seed : int
        LFSR seeds of the Fourier unit's sites and of the output narrowing.
    overflow : Overflow
    name : str
        Prefix of the output narrowing's tally label (``NAME.forward``) and of error messages.
    acc_width : int, optional
        Width of the mixing accumulator, checked here (:func:`mixing_accumulator_bits`);
        None: as wide as the exact sum needs.

    Raises
    ------
    ValueError
        For kernels that are not a bank fitting the image, or an accumulator too narrow.
    """

    def __init__(self, kernels, shape: tuple[int, int], *, data: Format, twiddle: Format,
                 spectrum: Format, rounding: str, seed: int, out_seed: int,
                 overflow: Overflow, name: str, acc_width: int | None = None):
        from .conv import _bank_kernels

        self.image_shape = (int(shape[0]), int(shape[1]))
        self.kernels = np.array(_bank_kernels(kernels, self.image_shape), dtype=np.float64)
        self.data, self.twiddle, self.spectrum = data, twiddle, spectrum
        self.acc_width = acc_width
        if acc_width is not None:
            check_accumulator(acc_width, data, spectrum, 2 * self.kernels.shape[1], name=name)
        self.rounders = fourier_rounders(rounding, seed)
        self.out_rounder = Rounder(rounding, out_seed)
        self.overflow = overflow
        self.name = name

    @property
    def channels(self) -> tuple[int, int]:
        """``(c_out, c_in)``."""
        return self.kernels.shape[0], self.kernels.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        """``(c_out·m, c_in·m)``: the shape of the bank's block matrix."""
        m = self.image_shape[0] * self.image_shape[1]
        return self.kernels.shape[0] * m, self.kernels.shape[1] * m

    def forward(self, x: np.ndarray, in_format: Format, out_format: Format, *,
                shift: int = 0) -> np.ndarray:
        """``narrow(K x · 2^-shift)`` for each row of ``x`` (batch, c_in·m), in ``out_format``.

        Raises
        ------
        ValueError
            If ``in_format`` words do not fit the data format exactly, or ``x`` is not
            ``c_in·m`` words per row.
        """
        if not self.data.holds(in_format):
            raise ValueError(f"{self.name}: words of {in_format} do not fit the Fourier data "
                             f"format {self.data} exactly")
        x = np.asarray(x, dtype=np.int64)
        if x.shape[-1] != self.shape[1]:
            raise ValueError(f"{self.name}: x must have {self.shape[1]} words per row (c_in·m), "
                             f"not {x.shape[-1]}")
        words = x << (self.data.frac - in_format.frac)
        images = words.reshape(-1, self.kernels.shape[1], *self.image_shape)
        y = fourier_bank_fixed(self.kernels, images, data=self.data, twiddle=self.twiddle,
                               spectrum=self.spectrum, rounder=self.rounders,
                               overflow=self.overflow, acc_width=self.acc_width)
        y = y.reshape(*x.shape[:-1], self.shape[0])
        return narrow(y, self.data.frac + shift - out_format.frac, out_format,
                      self.out_rounder, self.overflow, f"{self.name}.forward")
