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

The backward pass (training in the model): the transposed product ``Kᵀ y`` is the bank of
circular correlations, by the same units from the same spectrum words — the conjugate
spectra, the mixing's transpose ``K̂(f)ᴴ`` at each frequency (:func:`channel_mix_fixed` and
:func:`fourier_bank_fixed` with ``adjoint``) — and the kernel gradients are the direct path's
exact tap sums (:meth:`FixedFourierBank.gradient_sums`), stepped as the direct path steps them
(:meth:`FixedFourierBank.apply_kernel_gradient`).
"""

from __future__ import annotations

import numpy as np

from .device import DEVICE_SEED, DeviceModel
from .fixed import Format, Lfsr, Overflow, Rounder, narrow
from .fixed_bank import _tap_sums, _tied_step
from .fixed_ops import (
    accumulator_bits,
    check_accumulator,
    dft2_fixed,
    dft_device,
    dft_noise,
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
                      overflow: Overflow, acc_width: int | None = None,
                      adjoint: bool = False) -> np.ndarray:
    """Per frequency, the complex matrix–vector product ``y_o = Σ_i K̂[o, i]·x_i`` on words;
    with ``adjoint``, the conjugate-transposed product ``y_i = Σ_o conj(K̂[o, i])·x_o``.

    Parameters
    ----------
    x : ndarray of int, shape (..., c_in, 2)
        ``(re, im)`` words of ``x_format``, one c_in-vector per frequency (the leading axes);
        with ``adjoint``, one c_out-vector, shape ``(..., c_out, 2)``.
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
    adjoint : bool
        The product by ``K̂(f)ᴴ`` (c_in×c_out) instead of ``K̂(f)``: the transposed product of
        the bank, from the same spectrum words.

    Returns
    -------
    ndarray of int64, shape (..., c_out, 2)
        ``(re, im)`` words of ``out_format``; with ``adjoint``, shape ``(..., c_in, 2)``.

    Notes
    -----
    Each output component is **one** exact integer sum over the input channels,
    ``re = Σ_i (a·c − b·d)``, ``im = Σ_i (a·d + b·c)`` with ``x_i = a + ib`` and
    ``K̂[o, i] = c + id`` (the real 2×2 block ``[[c, −d], [d, c]]`` times ``[a, b]``), narrowed
    **once** by ``x.frac + spectrum.frac − out.frac`` bits. Draws are taken in C order of the
    output: frequency by frequency (the leading axes), output channel ``o`` by output channel,
    real before imaginary. With ``c_in = c_out = 1`` this is
    :func:`~xbarode.model.fixed_ops.hadamard_fixed`, word for word and draw for draw.

    With ``adjoint`` each output component is likewise one exact sum over the c_out input
    components, ``re = Σ_o (a·c + b·d)``, ``im = Σ_o (b·c − a·d)`` with ``x_o = a + ib`` and
    ``K̂[o, i] = c + id``: the real 2×2 block ``[[c, d], [−d, c]]``, the transpose of the
    forward's, so the (2·c_in)×(2·c_out) real matrix is the transpose of the forward's
    (2·c_out)×(2·c_in) one — a crossbar product driven from the other side, with no word
    negated (so none can overflow). One narrowing per output component, the same number of
    fractional bits; draws in C order of the output: frequency by frequency, output channel
    ``i`` by output channel, real before imaginary.

    Raises
    ------
    ValueError
        If the shapes do not match, or ``acc_width`` is too narrow (the message of
        :func:`~xbarode.model.fixed_ops.check_accumulator`, prefixed ``mix: ``).
    OverflowError
        If the exact sum could leave int64.
    """
    x, spectra = np.asarray(x, dtype=np.int64), np.asarray(spectra, dtype=np.int64)
    shared = -3 if adjoint else -2      # the axis of spectra that x's channels run along
    if x.ndim < 2 or x.shape[-1] != 2 or spectra.ndim < 3 or spectra.shape[-1] != 2 \
            or spectra.shape[shared] != x.shape[-2]:
        want = "c_out" if adjoint else "c_in"
        raise ValueError(f"mix: x must have shape (..., {want}, 2) and spectra (..., c_out, "
                         f"c_in, 2), not {x.shape} and {spectra.shape}")
    channels_in = x.shape[-2]
    if acc_width is not None:
        check_accumulator(acc_width, x_format, spectrum_format, 2 * channels_in, name="mix")
    need = mixing_accumulator_bits(x_format, spectrum_format, channels_in)
    if need > _INT64_BITS:
        raise OverflowError(f"mix: the exact sum needs {need} bits, more than int64 holds")
    a, b = x[..., None, :, 0], x[..., None, :, 1]
    if adjoint:
        spectra = np.swapaxes(spectra, -2, -3)                  # (..., c_in, c_out, 2)
    c, d = spectra[..., 0], spectra[..., 1]
    if adjoint:
        acc = np.stack([(a * c + b * d).sum(axis=-1), (b * c - a * d).sum(axis=-1)], axis=-1)
    else:
        acc = np.stack([(a * c - b * d).sum(axis=-1), (a * d + b * c).sum(axis=-1)], axis=-1)
    return narrow(acc, x_format.frac + spectrum_format.frac - out_format.frac, out_format,
                  rounder, overflow, "hadamard")


def fourier_bank_fixed(kernels, images: np.ndarray, *, data: Format, twiddle: Format,
                       spectrum: Format, rounder, overflow: Overflow,
                       acc_width: int | None = None, adjoint: bool = False,
                       device: DeviceModel | None = None,
                       noise: tuple[Lfsr, Lfsr] | None = None) -> np.ndarray:
    """Integer twin of a bank of circular convolutions by the Fourier path, or (``adjoint``)
    of its transpose, the bank of circular correlations.

    Parameters
    ----------
    kernels : array_like, shape (c_out, c_in, k, k)
        Float kernels, ``K[o, i]`` from input channel ``i`` to output channel ``o``; their
        spectra are :func:`~xbarode.model.fixed_ops.spectrum_words` (quantised once per call).
    images : ndarray of int, shape (batch, c_in, H, W)
        Words of ``data``; with ``adjoint``, shape ``(batch, c_out, H, W)``.
    data, twiddle, spectrum : Format
        As :func:`~xbarode.model.fixed_ops.fourier_conv_fixed`'s.
    rounder : Rounder or tuple of three Rounder
        One rounder for every site, or one per site of
        :data:`~xbarode.model.fixed_ops.FOURIER_SITES` (rows, columns, mixing):
        :func:`~xbarode.model.fixed_ops.fourier_rounders`.
    overflow : Overflow
    acc_width : int, optional
        The mixing accumulator's width (:func:`channel_mix_fixed`).
    adjoint : bool
        The transposed product ``Kᵀ y``: ``(Kᵀ y)_i = Σ_o K[o, i]ᵀ y_o``, where ``K[o, i]ᵀ``
        is the circular *correlation* with ``K[o, i]`` (the convolution with its 180° rotation),
        whose spectrum is the conjugate ``conj(K̂[o, i])``. The same spectrum words, DFT units
        and rounding sites; the mixing is :func:`channel_mix_fixed` with ``adjoint``.
    device : DeviceModel, optional
        The DFT arrays' read models (:func:`~xbarode.model.fixed_ops.dft2_fixed`), on every
        forward and inverse transform of every channel; the channel mixing is digital and
        has none. Write models are refused (:func:`~xbarode.model.fixed_ops.dft_device`).
    noise : pair of Lfsr, optional
        The rows and the columns array's read-noise generators
        (:func:`~xbarode.model.fixed_ops.dft_noise`), drawing in the order of the transforms
        (below); None: fresh ones of ``dft_noise(DEVICE_SEED)``.

    Returns
    -------
    ndarray of int64, shape (batch, c_out, H, W)
        Real parts, in ``data``: ``Σ_i K[o, i] ⊛ images[:, i]``; with ``adjoint``, shape
        ``(batch, c_in, H, W)``, ``Σ_o K[o, i] ⋆ images[:, o]`` (``⋆``: circular correlation,
        ``(a ⋆ y)[n] = Σ_s a[s]·y[n + s]``).

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

    With ``adjoint`` the order is the same with the roles of the channels swapped: per image,
    the forward 2-D DFT of input channel ``o = 0 … c_out − 1`` (rows, then columns), the
    conjugate-transposed mixing at every frequency, column-major, output channel ``i`` by
    output channel (``i = 0 … c_in − 1``), real before imaginary (``2·c_in`` draws per
    frequency), then the inverse 2-D DFT of output channel ``i = 0 … c_in − 1`` (columns,
    then rows). The same three sites draw: rows, columns, mixing. Error bound (documented,
    tested): for inputs in [-1, 1] and without saturation, output channel ``i`` lies within
    ``(H + W)·(c_out − 1 + max(1, Σ_o Σ|K[o, i]|))·(2^-data.frac + 2^-twiddle.frac +
    2^-spectrum.frac)`` of the float64 correlation ``Σ_o K[o, i] ⋆ y_o`` of the word values:
    the forward bound with c_in and c_out swapped (the adjoint's conditioning is the
    forward's: the same unitary DFTs and spectra of the same magnitudes).
    """
    rows_r, cols_r, mix_r = (rounder,) * 3 if isinstance(rounder, Rounder) else rounder
    device = dft_device(device)
    if device is not None and noise is None:
        noise = dft_noise(DEVICE_SEED)
    images = np.asarray(images, dtype=np.int64)
    kernels = np.asarray(kernels, dtype=np.float64)
    # The kernels' axes of the input and of the output channels.
    (side, axis_in, axis_out) = ("c_out", 0, 1) if adjoint else ("c_in", 1, 0)
    if images.ndim != 4 or kernels.ndim != 4 or images.shape[1] != kernels.shape[axis_in]:
        raise ValueError(f"images must have shape (batch, {side}, H, W) and kernels (c_out, "
                         f"c_in, k, k) with the same {side}, not {images.shape} and "
                         f"{kernels.shape}")
    height, width = images.shape[2:]
    words = spectrum_words(kernels, (height, width), spectrum, overflow)
    spec_t = words.transpose(3, 2, 0, 1, 4)                     # (W, H, c_out, c_in, 2)
    out = np.empty((len(images), kernels.shape[axis_out], height, width), dtype=np.int64)
    passes = {"data": data, "twiddle": twiddle, "rounder": (rows_r, cols_r),
              "overflow": overflow, "device": device, "noise": noise}
    for b, picture in enumerate(images):
        spectra_in = np.stack([
            dft2_fixed(np.stack([channel, np.zeros_like(channel)], axis=-1), **passes)
            for channel in picture], axis=-2)                    # (H, W, c_in, 2)
        mixed = channel_mix_fixed(np.swapaxes(spectra_in, 0, 1), spec_t, x_format=data,
                                  spectrum_format=spectrum, out_format=data, rounder=mix_r,
                                  overflow=overflow, acc_width=acc_width, adjoint=adjoint)
        mixed = np.swapaxes(mixed, 0, 1)                         # (H, W, channels out, 2)
        for o in range(out.shape[1]):
            out[b, o] = dft2_fixed(mixed[:, :, o], **passes, inverse=True)[..., 0]
    return out


class FixedFourierBank:
    """Integer twin of a bank's product ``K z`` by the Fourier path inside the core, with
    :class:`~xbarode.model.fixed_bank.FixedConvBank`'s interface: ``forward``, ``transposed``,
    ``gradient_sums`` and ``apply_kernel_gradient``.

    ``forward`` moves each input word into the Fourier ``data`` format (exactly: a left shift;
    the formats are checked for it), convolves with :func:`fourier_bank_fixed` (its three
    rounding sites, seeded ``site_seed(seed, 0..2)``), and narrows each real part to the output
    format with the extra ``shift`` folded in: one more rounding, drawn from its own LFSR
    (``out_seed``) in the output's C order ``(batch, channel, pixel)``. With ``c = 1`` this is
    :class:`~xbarode.model.fixed_ops.FixedFourierConv`, bit for bit.

    Training (the discrete adjoint of :class:`~xbarode.model.fixed_net.FixedNetwork`):
    ``transposed`` is ``Kᵀ y`` by the same units (:func:`fourier_bank_fixed` with
    ``adjoint``: the conjugate spectra, the mixing's transpose per frequency) and the same
    four rounding sites; ``gradient_sums`` are the exact integer tap sums of the direct path
    (:meth:`~xbarode.model.fixed_bank.FixedConvBank.gradient_sums`, the same integers: exact
    sums in the wide accumulator, formed in the pixel domain, not from spectra); and
    ``apply_kernel_gradient`` is the direct path's tied step on the kernels' weight words,
    after which the spectra are those of the new kernels (:func:`~xbarode.model.fixed_ops.
    spectrum_words`, recomputed by every product).

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
    device : DeviceModel, optional
        The DFT arrays' read models (:func:`fourier_bank_fixed`), in ``forward`` and
        ``transposed`` alike; write models are refused
        (:func:`~xbarode.model.fixed_ops.dft_device`).
    device_seed : int
        Seed of the arrays' read noise (:func:`~xbarode.model.fixed_ops.dft_noise`): the
        generators run on across products, forward and transposed.

    Raises
    ------
    ValueError
        For kernels that are not a bank fitting the image, or an accumulator too narrow.
    """

    def __init__(self, kernels, shape: tuple[int, int], *, data: Format, twiddle: Format,
                 spectrum: Format, rounding: str, seed: int, out_seed: int,
                 overflow: Overflow, name: str, acc_width: int | None = None,
                 device: DeviceModel | None = None, device_seed: int = DEVICE_SEED):
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
        self.device = dft_device(device, name)
        self.noise = None if self.device is None else dft_noise(device_seed)

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
                               overflow=self.overflow, acc_width=self.acc_width,
                               device=self.device, noise=self.noise)
        y = y.reshape(*x.shape[:-1], self.shape[0])
        return narrow(y, self.data.frac + shift - out_format.frac, out_format,
                      self.out_rounder, self.overflow, f"{self.name}.forward")

    def transposed(self, y: np.ndarray, in_format: Format, out_format: Format, *,
                   shift: int = 0) -> np.ndarray:
        """``narrow(Kᵀ y · 2^-shift)`` for each row of ``y`` (batch, c_out·m), in ``out_format``.

        ``(Kᵀ y)_i = Σ_o K[o, i] ⋆ y_o`` (circular correlation): :func:`fourier_bank_fixed`
        with ``adjoint``. Draw order (deterministic): the Fourier sites draw as that function
        documents (per row of ``y``: the row and column sites for the forward DFTs of the
        c_out input channels, the mixing site ``2·c_in`` draws per frequency, column-major,
        then the row and column sites for the inverse DFTs of the c_in output channels); then
        the output narrowing draws from ``out_seed``'s LFSR in the output's C order
        ``(batch, channel, pixel)``, counted as ``NAME.transposed``. The LFSRs are the
        forward's: the draws continue where the last product left them.

        Raises
        ------
        ValueError
            If ``in_format`` words do not fit the data format exactly, ``y`` is not
            ``c_out·m`` words per row, or the mixing accumulator cannot hold a sum of
            ``2·c_out`` products.
        """
        if not self.data.holds(in_format):
            raise ValueError(f"{self.name}: words of {in_format} do not fit the Fourier data "
                             f"format {self.data} exactly")
        y = np.asarray(y, dtype=np.int64)
        if y.shape[-1] != self.shape[0]:
            raise ValueError(f"{self.name}: y must have {self.shape[0]} words per row "
                             f"(c_out·m), not {y.shape[-1]}")
        if self.acc_width is not None:
            check_accumulator(self.acc_width, self.data, self.spectrum,
                              2 * self.kernels.shape[0], name=self.name)
        words = y << (self.data.frac - in_format.frac)
        images = words.reshape(-1, self.kernels.shape[0], *self.image_shape)
        x = fourier_bank_fixed(self.kernels, images, data=self.data, twiddle=self.twiddle,
                               spectrum=self.spectrum, rounder=self.rounders,
                               overflow=self.overflow, acc_width=self.acc_width, adjoint=True,
                               device=self.device, noise=self.noise)
        x = x.reshape(*y.shape[:-1], self.shape[1])
        return narrow(x, self.data.frac + shift - out_format.frac, out_format,
                      self.out_rounder, self.overflow, f"{self.name}.transposed")

    def gradient_sums(self, outputs: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """The exact tap sums ``S[o, i, p, q] = Σ_b Σ_pixel g_b⁽ᵒ⁾[pixel]·x_b⁽ⁱ⁾[pixel − s_pq]``.

        The same integers as :meth:`~xbarode.model.fixed_bank.FixedConvBank.gradient_sums`
        (one exact sum per tap, no rounding): the gradient of a circular convolution's kernel
        is the correlation of the output gradient with the input, taken here in the pixel
        domain, where it is exact. ``outputs`` (n, c_out·m) and ``inputs`` (n, c_in·m) are
        integer words; the result is (c_out, c_in, k, k) int64.
        """
        return _tap_sums(outputs, inputs, self.kernels.shape, self.image_shape, self.name)

    def apply_kernel_gradient(self, sums: np.ndarray, grad_frac: int, *, shift: int,
                              weight_format: Format, transposed: bool = False) -> None:
        """One SGD step on the kernels: ``K <- sat(K + narrow(-S · 2^-shift))`` in
        ``weight_format``, one rounding per kernel weight.

        The kernels are first taken as words of ``weight_format`` (rounded to nearest, the
        host's DAC; exact for kernels on that grid, as every kernel after a step is;
        saturation counted as ``NAME.load``), then stepped exactly as
        :meth:`~xbarode.model.fixed_bank.FixedConvBank.apply_kernel_gradient` steps them:
        the rounding draws from the output narrowing's LFSR (``out_seed``, the seed of the
        direct path's tile) in C order of ``K`` (``(o, i, p, q)``), or with ``transposed`` of
        the bank of ``Kᵀ`` (``K'[i, o] = rot180(K[o, i])``, as the core's tile B holds
        ``Bᵀ``); counted as ``NAME.update`` and ``NAME.weights``. The kernels then hold the
        new words' values, and every later product quantises their spectra afresh
        (:func:`~xbarode.model.fixed_ops.spectrum_words`).

        Raises
        ------
        ValueError
            If ``sums`` is not shaped like the kernels.
        """
        words = weight_format.quantize(self.kernels, "nearest", self.overflow,
                                       f"{self.name}.load")
        words = _tied_step(words, sums, grad_frac, shift=shift, fmt=weight_format,
                           rounder=self.out_rounder, overflow=self.overflow, name=self.name,
                           transposed=transposed)
        self.kernels = weight_format.to_float(words)
