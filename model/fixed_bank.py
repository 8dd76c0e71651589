"""Integer twins of the multi-channel network's units: a tile holding a kernel bank's block
matrix, and the average pool before the head (docs/architecture.md §1–§2).

With ``c`` channels, ``A`` and ``B`` are c×c banks of k×k kernels ``K[o, i]``; the operator is
the (c·m)×(c·m) block matrix ``M`` whose block ``(o, i)`` is ``conv_matrix(K[o, i], (H, W))``.
That block matrix is what a hardware tile holds (the direct path, as with one channel), so
every product here is a crossbar product by ``M``: the exact sum of a whole row (or column)
of ``M`` times the operand words, narrowed once per output word. A sum is an integer and
does not depend on the order of its terms, so the model computes it the cheap way — in
im2col form, ``c·k²`` non-zero products per output word instead of ``c·m`` — and gets the
integers the tile gets, without ever building ``M``.

The pool is a small unit of its own between the final state and the head, with its own
rounding site (:data:`POOL_SITE`).
"""

from __future__ import annotations

import numpy as np

from . import _checks
from .conv import _bank_kernels, _patches, conv_matrix
from .device import DEVICE_SEED, DeviceModel
from .fixed import Format, Overflow, Rounder, narrow
from .fixed_ops import _CrossbarReads, accumulator_bits

__all__ = ["POOL_SITE", "RECIPROCAL_BITS", "FixedConvBank", "FixedPool", "pool_reciprocal"]

#: Rounding site of the pool unit (:func:`~xbarode.model.fixed.site_seed`): after the tiles
#: (0–2), the loss gradient (3) and the Fourier path's units (4–9).
POOL_SITE = 10

#: Bits of the pool's reciprocal constant beyond ``ceil(log2(pool²))`` when ``pool²`` is not a
#: power of two: the constant is then a 17-bit unsigned word (an 18×18 multiplier's operand).
RECIPROCAL_BITS = 16

_INT64_MAX = np.iinfo(np.int64).max
_FLOAT_EXACT = 2**53


def _peak(values: np.ndarray) -> int:
    """``max |values|`` as a Python integer (0 for an empty array)."""
    if values.size == 0:
        return 0
    return max(-int(values.min()), int(values.max()))


def _exact_dtype(bound: int, label: str):
    """float64 if every partial sum below ``bound`` is an exact float64 integer, else int64."""
    if bound >= _INT64_MAX:
        raise OverflowError(f"{label}: the exact sum may exceed int64 (bound {bound:.3g})")
    return np.float64 if bound < _FLOAT_EXACT else np.int64


class FixedConvBank(_CrossbarReads):
    """Integer twin of a crossbar tile that holds the block matrix of a bank of kernels.

    The tile holds ``M``, (c_out·m)×(c_in·m), block ``(o, i)`` = ``conv_matrix(K[o, i], (H, W))``
    (the state is channel after channel, each image row-major), and offers the tile's
    operations on it: ``M x``, ``Mᵀ y``, the exact gradient sums, and the SGD step that keeps
    the kernels' weights tied.

    Contract (the tile's, docs/architecture.md §2): every output word is the exact sum of the
    products of a row (forward) or a column (transposed) of ``M`` with the operand words,
    narrowed **once** to the output format with the tile's rounder; draws are taken in the
    C order of the output ``(batch, channel, pixel)``. So, with ``c = 1``, ``forward`` and
    ``transposed`` give the integers of a :class:`~xbarode.model.fixed_ops.FixedTile` holding
    ``conv_matrix(K[0, 0])``, draw for draw; and for any ``c``, those of a ``FixedTile``
    holding ``M``. Error bound: unless it saturates (then it is counted), each output word is
    within half an output LSB (``nearest``) or less than one LSB (``floor``, ``stochastic``)
    of the exact product of the word values times ``2^-shift``.

    Parameters
    ----------
    kernels : ndarray of int, shape (c_out, c_in, k, k)
        The kernels as integers of ``weight_format``.
    shape : tuple of int
        Image shape ``(H, W)``.
    weight_format : Format
    acc_width : int
        Width of the tile's signed accumulator; a row of ``M`` has ``c_in·m`` products (and
        a column ``c_out·m``), which is what is checked: the tile sums the zeros too.
    rounder : Rounder
        This tile's rounding mode and LFSR.
    overflow : Overflow, optional
        Tally for saturations; a fresh one if omitted.
    name : str
        Prefix of the tally's labels (``NAME.forward``, ``NAME.transposed``, ``NAME.update``,
        ``NAME.weights``, as a ``FixedTile``'s).
    device : DeviceModel, optional
        The array's read models (docs/device.md): ``dac_bits``, ``adc_bits``, ``adc_range``
        and ``read_noise`` act on ``forward`` and ``transposed`` exactly as on a
        :class:`~xbarode.model.fixed_ops.FixedTile` holding :meth:`dense` with the same
        ``device`` and ``device_seed`` (the same code: each operand word through the DAC, each
        exact sum through the read noise and the ADC in place of the one narrowing, one noise
        draw per output word in the output's C order; clips counted as ``NAME.LABEL.dac`` and
        ``NAME.LABEL``). The gradient sums and the tied SGD step stay digital. None, or every
        model off: the ideal bank, bit for bit.
    device_seed : int
        Seed of the device generators, as a ``FixedTile``'s: the read noise draws from
        ``Lfsr(site_seed(device_seed, 0))``.

    Raises
    ------
    ValueError
        If ``device`` turns on a write model (``states``, ``program_noise``) or pulsed
        updates (``pulses``): every copy of a kernel weight would be written with its own
        draws, and the tied weights would drift apart.

    Notes
    -----
    The sums are computed in im2col form (:func:`xbarode.model.conv._patches`): in float64 when
    ``max|w|·max|x|·terms < 2^53``, where every partial sum is an exactly representable
    integer, else in int64; an ``OverflowError`` is raised if the sum could leave int64.
    """

    def __init__(self, kernels, shape: tuple[int, int], *, weight_format: Format,
                 acc_width: int, rounder: Rounder, overflow: Overflow | None = None,
                 name: str = "tile", device: DeviceModel | None = None,
                 device_seed: int = DEVICE_SEED):
        if isinstance(device, DeviceModel) and device.writes:
            raise ValueError(f"{name}: the device's write models (states, program_noise) and "
                             f"pulsed updates need a dense tile; a kernel bank's tied weights "
                             f"would drift apart")
        kernels = np.asarray(kernels)
        if not np.issubdtype(kernels.dtype, np.integer):
            raise ValueError(f"{name}: kernels must be integers, not {kernels.dtype}")
        shape = _checks.image_shape(shape)
        _bank_kernels(kernels, shape)
        if kernels.min() < weight_format.min_int or kernels.max() > weight_format.max_int:
            raise ValueError(f"{name}: kernels lie outside {weight_format}")
        self.kernels = kernels.astype(np.int64)
        self.image_shape = (int(shape[0]), int(shape[1]))
        self.weight_format = weight_format
        self.acc_width = acc_width
        self.rounder = rounder
        self.overflow = overflow if overflow is not None else Overflow()
        self.name = name
        self._init_reads(device, device_seed)

    @property
    def channels(self) -> tuple[int, int]:
        """``(c_out, c_in)``."""
        return self.kernels.shape[0], self.kernels.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        """``(c_out·m, c_in·m)``: the shape of the block matrix the tile holds."""
        m = self.image_shape[0] * self.image_shape[1]
        return self.kernels.shape[0] * m, self.kernels.shape[1] * m

    def dense(self) -> np.ndarray:
        """The block matrix ``M`` as integers of the weight format (what the tile holds)."""
        # conv_matrix places each tap once per row (k <= min(H, W)): exact on integers.
        return np.block([[conv_matrix(kernel, self.image_shape) for kernel in row]
                         for row in self.kernels]).astype(np.int64)

    def check_accumulator(self, operand: Format, terms: int) -> None:
        """Raise if the accumulator cannot hold ``terms`` products with ``operand`` words."""
        need = accumulator_bits(self.weight_format, operand, terms)
        if need > self.acc_width:
            raise ValueError(
                f"{self.name}: an accumulator of {self.acc_width} bits is too narrow for a sum "
                f"of {terms} products of {self.weight_format.width}x{operand.width}-bit words "
                f"(needs {need} bits)"
            )

    def _product(self, weights: np.ndarray, x: np.ndarray, channels_in: int) -> np.ndarray:
        """Exact ``(batch, c_out·m)`` sums of ``weights`` (im2col rows) times ``x``'s patches."""
        x = np.asarray(x, dtype=np.int64)
        height, width = self.image_shape
        images = x.reshape(-1, channels_in, height, width)
        dtype = _exact_dtype(_peak(weights) * _peak(images) * weights.shape[1], self.name)
        out = np.matmul(weights.astype(dtype), _patches(images.astype(dtype),
                                                        self.kernels.shape[-1]))
        return out.astype(np.int64).reshape(*x.shape[:-1], -1)

    def forward(self, x: np.ndarray, in_format: Format, out_format: Format, *,
                shift: int = 0) -> np.ndarray:
        """``narrow(M x · 2^-shift)`` for each row of ``x`` (batch, c_in·m), in ``out_format``."""
        c_out, c_in, k, _ = self.kernels.shape
        self.check_accumulator(in_format, self.shape[1])
        # Tap (p, q) reads x[pixel - s_pq] = patch (2c - p, 2c - q): the flipped kernel.
        weights = self.kernels[..., ::-1, ::-1].reshape(c_out, c_in * k * k)
        x = self._dac(x, in_format, "forward")
        return self._narrow(self._product(weights, x, c_in), in_format, out_format, shift,
                            "forward")

    def transposed(self, y: np.ndarray, in_format: Format, out_format: Format, *,
                   shift: int = 0) -> np.ndarray:
        """``narrow(Mᵀ y · 2^-shift)`` for each row of ``y`` (batch, c_out·m).

        ``Mᵀ`` is the bank of the 180°-rotated kernels with the channels swapped, whose
        flipped im2col rows are ``K[o, i]`` itself.
        """
        c_out, c_in, k, _ = self.kernels.shape
        self.check_accumulator(in_format, self.shape[0])
        weights = self.kernels.transpose(1, 0, 2, 3).reshape(c_in, c_out * k * k)
        y = self._dac(y, in_format, "transposed")
        return self._narrow(self._product(weights, y, c_out), in_format, out_format, shift,
                            "transposed")

    def gradient_sums(self, outputs: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """The exact sums the tile's tied SGD step takes: ``Σ_b g_b x_bᵀ`` pulled onto the taps.

        Parameters
        ----------
        outputs, inputs : ndarray of int, shapes (n, c_out·m) and (n, c_in·m)
            ``g`` (the gradient at the product's output) and ``x`` (its input), ``n`` pairs.

        Returns
        -------
        ndarray of int64, shape (c_out, c_in, k, k)
            ``S[o, i, p, q] = Σ_b Σ_pixel g_b⁽ᵒ⁾[pixel] · x_b⁽ⁱ⁾[pixel - s_pq]``: the sum, over
            the ``m`` entries of ``M`` that tap ``(o, i, p, q)`` occupies, of the dense
            gradient sum ``Σ_b g_b x_bᵀ`` (each entry ``n`` products, checked against the
            accumulator by :meth:`FixedFormats.check`; the tap's sum of ``m`` entries needs
            ``ceil(log2 m)`` bits more, as the hardware's tap sums have).
        """
        return _tap_sums(outputs, inputs, self.kernels.shape, self.image_shape, self.name)

    def apply_kernel_gradient(self, sums: np.ndarray, grad_frac: int, *, shift: int,
                              transposed: bool = False) -> None:
        """One SGD step with the kernels' weights tied: one rounding per kernel weight.

        ``K <- sat(K + narrow(-S · 2^-shift))`` for the exact tap sums ``S``
        (:meth:`gradient_sums`, ``grad_frac`` fractional bits): what a tile holding ``M`` does
        with its gradient accumulators (per tap, the exact sum of the entries it occupies, one
        rounding, the new value written to every entry). Draws are taken in C order of the
        kernels of the bank the hardware tile holds: ``K`` itself, ``(o, i, p, q)``; or, if
        ``transposed`` (a tile that holds ``Mᵀ``, as the core's tile B holds ``Bᵀ``), the bank
        of ``Mᵀ``, ``K'[i, o] = rot180(K[o, i])``, in its ``(i, o, p, q)`` order. With
        ``c = 1`` this is :meth:`~xbarode.model.fixed_ops.FixedTile.apply_kernel_gradient`,
        draw for draw.
        """
        self.kernels = _tied_step(self.kernels, sums, grad_frac, shift=shift,
                                  fmt=self.weight_format, rounder=self.rounder,
                                  overflow=self.overflow, name=self.name, transposed=transposed)


def _tap_sums(outputs, inputs, kernel_shape, image_shape, name: str) -> np.ndarray:
    """:meth:`FixedConvBank.gradient_sums` for a bank of ``kernel_shape`` on ``image_shape``
    images (shared with the Fourier path's bank, whose tap sums are the same integers)."""
    c_out, c_in, k, _ = kernel_shape
    height, width = image_shape
    m = height * width
    images = np.asarray(inputs, dtype=np.int64).reshape(-1, c_in, height, width)
    grads = np.asarray(outputs, dtype=np.int64).reshape(-1, c_out, m)
    dtype = _exact_dtype(_peak(images) * _peak(grads) * len(images) * m, f"{name}.grad")
    flipped = np.zeros((c_out, c_in * k * k), dtype=dtype)
    # A few images at a time, so that the im2col copy of a whole trajectory is never held.
    for first in range(0, len(images), _CHUNK):
        patches = _patches(images[first:first + _CHUNK].astype(dtype), k)
        flipped += np.matmul(grads[first:first + _CHUNK].astype(dtype),
                             patches.transpose(0, 2, 1)).sum(axis=0)
    return flipped.astype(np.int64).reshape(c_out, c_in, k, k)[..., ::-1, ::-1].copy()


def _tied_step(kernels: np.ndarray, sums, grad_frac: int, *, shift: int, fmt: Format,
               rounder: Rounder, overflow: Overflow, name: str, transposed: bool) -> np.ndarray:
    """The new kernel words of :meth:`FixedConvBank.apply_kernel_gradient` (shared with the
    Fourier path's bank): ``sat(K + narrow(-S · 2^-shift))`` in the held bank's C order."""
    sums = np.asarray(sums, dtype=np.int64)
    if sums.shape != kernels.shape:
        raise ValueError(f"{name}: tap sums must have shape {kernels.shape}, not {sums.shape}")
    held, held_sums = kernels, sums
    if transposed:
        held, held_sums = (_transpose_bank(a) for a in (held, held_sums))
    step = narrow(-held_sums, grad_frac + shift - fmt.frac, fmt, rounder, overflow,
                  f"{name}.update")
    summed = held + step
    value = np.clip(summed, fmt.min_int, fmt.max_int)
    overflow.add(f"{name}.weights", np.count_nonzero(value != summed), summed.size)
    return _transpose_bank(value) if transposed else value


# Images per im2col copy in the gradient sums (64 28×28 images, 8 channels: 29 MB).
_CHUNK = 64


def _transpose_bank(kernels: np.ndarray) -> np.ndarray:
    """The bank of the transposed block matrix: ``K'[i, o] = rot180(K[o, i])`` (an involution)."""
    return np.ascontiguousarray(kernels.transpose(1, 0, 2, 3)[..., ::-1, ::-1])


def pool_reciprocal(factor: int) -> tuple[int, int]:
    """``(ρ, R)``: the pool multiplies a sum by ``ρ`` and discards ``R`` bits; ``ρ/2^R ≈ 1/p²``.

    If ``p² = 2^s`` then ``(1, s)``: the division is exact, a shift. Otherwise
    ``R = ceil(log2 p²) + RECIPROCAL_BITS`` and ``ρ = round(2^R / p²)`` (half up), a 17-bit
    constant with ``|ρ/2^R - 1/p²| <= 2^-(R+1) <= 2^-17/p²``.
    """
    if isinstance(factor, bool) or not isinstance(factor, int | np.integer) or factor < 1:
        raise ValueError(f"pool must be a positive integer, not {factor!r}")
    area = int(factor) ** 2
    if area & (area - 1) == 0:
        return 1, area.bit_length() - 1
    bits = area.bit_length() + RECIPROCAL_BITS
    return ((1 << (bits + 1)) + area) // (2 * area), bits


class FixedPool:
    """Integer twin of the average pool before the head, and of its transpose.

    Forward: each feature is the exact sum ``Σ`` of the ``p²`` state words of its block
    (channel by channel, each pooled image row-major, as :func:`~xbarode.model.avg_pool`),
    narrowed **once**: ``narrow(Σ·ρ, R)`` with ``(ρ, R) = pool_reciprocal(p)``, in the input's
    format. If ``p²`` is a power of two, ``ρ = 1``: the narrowing is a shift by ``log2 p²``
    bits, and the result is the average rounded as every narrowing rounds. Otherwise ``ρ`` is
    the rounded reciprocal and the one narrowing discards ``R`` bits.

    Transpose (``Pᵀ``, the adjoint's ``∂L/∂z_N`` from ``∂L/∂features``): each feature's word
    ``δ`` is narrowed once, ``narrow(δ·ρ, R)`` (``δ/p²``), and written to every pixel of its
    block.

    Both narrowings draw from the pool's own LFSR (site :data:`POOL_SITE`) in C order of the
    narrowed array ``(batch, feature)``. Error bound (documented, tested): unless it saturates
    (counted under ``pool`` and ``pool.transposed``), each output lies within
    ``ρ_mode·lsb + |v|·2^-17`` of the exact ``v = Σ/p²`` (or ``δ/p²``) of the word values, with
    ``ρ_mode = 1/2`` for ``nearest`` and 1 otherwise; the second term is 0 when ``p²`` is a
    power of two.

    Parameters
    ----------
    factor : int
        ``p``; divides H and W; ``p² <= 2^16`` (a stochastic narrowing discards at most 32
        bits).
    channels : int
    shape : tuple of int
        Image shape ``(H, W)``.
    rounder : Rounder
    overflow : Overflow
    """

    def __init__(self, factor: int, channels: int, shape: tuple[int, int], *,
                 rounder: Rounder, overflow: Overflow):
        self.rho, self.shift = pool_reciprocal(factor)
        if self.shift > 32:
            raise ValueError(f"pool {factor} is too large: its narrowing would discard "
                             f"{self.shift} bits (at most 32)")
        height, width = shape
        if height % factor or width % factor:
            raise ValueError(f"pool {factor} does not divide the {height}x{width} image")
        self.factor, self.channels, self.image_shape = int(factor), int(channels), (height, width)
        self.rounder = rounder
        self.overflow = overflow

    @property
    def features(self) -> int:
        """``c·(H/p)·(W/p)``."""
        height, width = self.image_shape
        return self.channels * (height // self.factor) * (width // self.factor)

    def _scaled(self, sums: np.ndarray, fmt: Format, label: str) -> np.ndarray:
        if _peak(sums) * self.rho >= _INT64_MAX:
            raise OverflowError(f"{label}: the scaled sum exceeds int64")
        return narrow(sums * self.rho, self.shift, fmt, self.rounder, self.overflow, label)

    def forward(self, z: np.ndarray, fmt: Format) -> np.ndarray:
        """The pooled features (batch, features) of states ``z`` (batch, c·m), words of ``fmt``."""
        p = self.factor
        height, width = self.image_shape
        z = np.asarray(z, dtype=np.int64)
        blocks = z.reshape(-1, self.channels, height // p, p, width // p, p)
        sums = blocks.sum(axis=(3, 5)).reshape(*z.shape[:-1], self.features)
        return self._scaled(sums, fmt, "pool")

    def transposed(self, delta: np.ndarray, fmt: Format) -> np.ndarray:
        """``Pᵀ δ`` for feature gradients ``δ`` (batch, features): (batch, c·m) words of ``fmt``."""
        p = self.factor
        height, width = self.image_shape
        words = self._scaled(np.asarray(delta, dtype=np.int64), fmt, "pool.transposed")
        pooled = words.reshape(-1, self.channels, height // p, 1, width // p, 1)
        spread = np.broadcast_to(pooled, (*pooled.shape[:2], height // p, p, width // p, p))
        return spread.reshape(*words.shape[:-1], self.channels * height * width)
