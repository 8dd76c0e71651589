"""Integer twins of every hardware operation (docs/architecture.md §2–§3).

Each function or method here performs exactly the integer operations the hardware performs,
in the same order wherever rounding makes order matter, on NumPy int64 arrays vectorised over
a batch; the RTL must equal them bit for bit. Each is the twin of a float64 function of the
golden model, and the tests bound the difference.

Scales. A product of a ``Q(.a)`` word and a ``Q(.b)`` word has ``a + b`` fractional bits; sums
of products are exact (the crossbar's analog sum, the hardware's wide accumulator) and are
narrowed once to the output format (the ADC). Multiplying by a step ``h = 2^-s`` or a learning
rate ``2^-e`` is folded into that one narrowing as ``s`` (or ``e``) more bits of shift, so it
costs neither a multiplier nor a second rounding.
"""

from __future__ import annotations

import math

import numpy as np

from .device import (
    DEVICE_SEED,
    DeviceModel,
    adc_read,
    dac_input,
    program_weights,
    pulsed_update,
)
from .fixed import Format, Lfsr, Overflow, Rounder, exact_matmul, narrow, site_seed

__all__ = [
    "FOURIER_SITES",
    "FixedFourierConv",
    "FixedTile",
    "accumulator_bits",
    "check_accumulator",
    "dft2_fixed",
    "dft_device",
    "dft_noise",
    "euler_step",
    "fixed_argmax",
    "fourier_conv_fixed",
    "fourier_rounders",
    "hadamard_fixed",
    "newton_step",
    "power_of_two_shift",
    "relu_fixed",
    "spectrum_stream",
    "spectrum_words",
    "twiddle_matrix",
]


def accumulator_bits(a: Format, b: Format, terms: int, extra: int = 0) -> int:
    """Bits a signed accumulator needs for the exact sum of ``terms`` products ``a × b``.

    The largest magnitude is ``terms`` products of the most negative words,
    ``terms · 2^(wa-1) · 2^(wb-1)``, a positive number of ``wa + wb - 2 + bit_length(terms)``
    bits, plus the sign; ``extra`` adds room for a bias or a rounding offset (one bit each).
    """
    return a.width + b.width - 1 + max(terms, 1).bit_length() + extra


def check_accumulator(acc_width: int, a: Format, b: Format, terms: int, extra: int = 0, *,
                      name: str | None = None) -> None:
    """Raise ``ValueError`` if ``acc_width`` bits cannot hold the exact sum of ``terms``
    products ``a × b`` (:func:`accumulator_bits`).

    The message is the crossbar tile's (:class:`~xbarode.hdl.tile.CrossbarTile`), prefixed
    ``name: `` when ``name`` is given, so that a unit that checks its parts' accumulators
    before building them, and this model's tiles, say what the hardware tile says.
    """
    need = accumulator_bits(a, b, terms, extra)
    if need > acc_width:
        prefix = "" if name is None else f"{name}: "
        raise ValueError(f"{prefix}an accumulator of {acc_width} bits is too narrow for a sum "
                         f"of {terms} products of {a.width}x{b.width}-bit words (needs {need} "
                         f"bits)")


def power_of_two_shift(value: float, name: str) -> int:
    """``s`` with ``value == 2^-s`` (``s`` may be negative), or a ``ValueError`` naming ``name``.

    Step sizes and learning rates are powers of two in fixed point: a multiplication by them is
    a shift folded into a narrowing, exact and free in hardware.
    """
    if not value > 0:
        raise ValueError(f"{name} must be > 0, not {value}")
    mantissa, exponent = math.frexp(value)
    if mantissa != 0.5:
        raise ValueError(f"{name} must be a power of two in fixed point (e.g. 0.25), not {value}")
    return 1 - exponent


def relu_fixed(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(relu(u), H(u))`` on integers: exact, the mask is 1 where ``u > 0`` (``H(0) = 0``)."""
    mask = u > 0
    return np.where(mask, u, 0), mask


def fixed_argmax(scores: np.ndarray) -> np.ndarray:
    """Index of the largest integer score per row; ties go to the lowest index."""
    return np.argmax(scores, axis=-1)


class _CrossbarReads:
    """The read path of a crossbar tile, shared by :class:`FixedTile` and
    :class:`~xbarode.model.fixed_bank.FixedConvBank`: the input DAC on each operand word and,
    in place of the one narrowing of each exact sum, the read noise and the ADC.

    A class using it sets ``weight_format``, ``rounder``, ``overflow`` and ``name`` and calls
    :meth:`_init_reads` (which sets ``device`` and, with a device, ``_read_noise``, the
    generator of purpose 0, ``Lfsr(site_seed(device_seed, 0))``).
    """

    def _init_reads(self, device: DeviceModel | None, device_seed: int) -> None:
        if device is not None and not isinstance(device, DeviceModel):
            raise TypeError(f"{self.name}: device must be a DeviceModel or None, not "
                            f"{type(device).__name__}")
        self.device = None if device is None or device.off else device
        if self.device is not None:
            self._read_noise = Lfsr(site_seed(device_seed, 0))

    def _dac(self, x: np.ndarray, in_format: Format, label: str) -> np.ndarray:
        """``x`` through the input DAC (:func:`dac_input`, clips counted as
        ``NAME.LABEL.dac``), or as it is without a device."""
        if self.device is None:
            return x
        return dac_input(x, in_format, self.device.dac_bits, self.overflow,
                         f"{self.name}.{label}.dac")

    def _narrow(self, acc, in_format, out_format, shift, label):
        """The exact sums ``acc`` to ``out_format``: through the read noise and the ADC
        (:func:`adc_read`) with a device's read models, else the one narrowing."""
        total = self.weight_format.frac + in_format.frac + shift - out_format.frac
        if self.device is not None and self.device.reads:
            return adc_read(acc, total, out_format, self.device, self.rounder,
                            self._read_noise, self.overflow, f"{self.name}.{label}")
        return narrow(acc, total, out_format, self.rounder, self.overflow,
                      f"{self.name}.{label}")


class FixedTile(_CrossbarReads):
    """Integer twin of a crossbar tile: ``W x``, ``Wᵀ y`` and the rank-1 update.

    Every output is the exact sum of products of the word values, narrowed once. Error bound
    (documented, tested): unless it saturates (then it is counted), each output word is within
    half an output LSB (``nearest``) or less than one LSB (``floor``, ``stochastic``) of the
    exact product of the word values times ``2^-shift``; likewise each weight after an update.

    Parameters
    ----------
    weights : ndarray of int, shape (rows, cols)
        Weights as integers of ``weight_format``.
    weight_format : Format
        Format of the weights.
    acc_width : int
        Width of the signed accumulator; every product is checked to fit.
    rounder : Rounder
        This tile's rounding mode and LFSR (draws in the C order of each output).
    overflow : Overflow, optional
        Tally for saturations; a fresh one if omitted.
    name : str
        Prefix of the tally's labels.
    device : DeviceModel, optional
        The array's non-idealities (:mod:`xbarode.model.device`, docs/device.md). Reads: each
        input word of ``forward`` and ``transposed`` passes the DAC (:func:`dac_input`,
        clips counted as ``NAME.LABEL.dac``) and each output the read noise and ADC
        (:func:`adc_read`, in place of the one narrowing; clips counted as ``NAME.LABEL``).
        Writes: the weights given here and every weight an SGD step writes pass
        :func:`program_weights` (in the row-major order of the matrix the tile holds).
        None, or every model off: the ideal tile, bit for bit.
    device_seed : int
        Seed of the device generators: purpose ``p`` of
        :data:`~xbarode.model.device.DEVICE_PURPOSES` (read noise, programming noise, the
        states' rounding, the row and the column pulses) draws from
        ``Lfsr(site_seed(device_seed, p))``.
    holds_transpose : bool
        The hardware tile holds ``Wᵀ`` (as the core's tile B holds ``Bᵀ``): the write models'
        draws for the weights given here and by :meth:`load` follow ``Wᵀ``'s row-major order,
        as that tile's LOAD_W writes them (an SGD step's with ``transposed``).
    """

    def __init__(self, weights, *, weight_format: Format, acc_width: int, rounder: Rounder,
                 overflow: Overflow | None = None, name: str = "tile",
                 device: DeviceModel | None = None, device_seed: int = DEVICE_SEED,
                 holds_transpose: bool = False):
        weights = np.asarray(weights)
        if weights.ndim != 2 or not np.issubdtype(weights.dtype, np.integer):
            raise ValueError(f"{name}: weights must be a 2-D integer array")
        if weights.min(initial=0) < weight_format.min_int or \
                weights.max(initial=0) > weight_format.max_int:
            raise ValueError(f"{name}: weights lie outside {weight_format}")
        self.weights = weights.astype(np.int64)
        self.weight_format = weight_format
        self.acc_width = acc_width
        self.rounder = rounder
        self.overflow = overflow if overflow is not None else Overflow()
        self.name = name
        self._init_reads(device, device_seed)
        self.holds_transpose = bool(holds_transpose)
        if self.device is not None:
            self._program_noise = Lfsr(site_seed(device_seed, 1))
            self._states_rounder = Rounder(rounder.mode, site_seed(device_seed, 2))
            self._row_pulses = Lfsr(site_seed(device_seed, 3))
            self._col_pulses = Lfsr(site_seed(device_seed, 4))
            self.weights = self._write_held(self.weights)

    def load(self, weights) -> None:
        """Write new weights (words of ``weight_format``, the tile's shape) as a hardware
        tile's LOAD_W does: through the device's write models (:func:`program_weights`, its
        clips counted), or as they are without them.

        Raises
        ------
        ValueError
            If ``weights`` are not integers of the tile's shape and format.
        """
        weights = np.asarray(weights)
        if weights.shape != self.weights.shape or not np.issubdtype(weights.dtype, np.integer):
            raise ValueError(f"{self.name}: weights must be integers of shape "
                             f"{self.weights.shape}")
        if weights.min(initial=0) < self.weight_format.min_int or \
                weights.max(initial=0) > self.weight_format.max_int:
            raise ValueError(f"{self.name}: weights lie outside {self.weight_format}")
        self.weights = self._write_held(weights.astype(np.int64))

    def _write_held(self, values: np.ndarray) -> np.ndarray:
        """:meth:`_write` in the order of the matrix the hardware tile holds."""
        return self._write(values.T).T if self.holds_transpose else self._write(values)

    def _write(self, values: np.ndarray) -> np.ndarray:
        """``values`` as the devices hold them once written (:func:`program_weights`)."""
        if self.device is None or (self.device.states is None
                                   and self.device.program_noise == 0):
            return values
        return program_weights(values, self.weight_format, self.device, self._states_rounder,
                               self._program_noise, self.overflow, self.name)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return self.weights.shape

    def check_accumulator(self, operand: Format, terms: int, extra: int = 0) -> None:
        """Raise if the accumulator cannot hold ``terms`` products with ``operand`` words."""
        check_accumulator(self.acc_width, self.weight_format, operand, terms, extra,
                          name=self.name)

    def forward(self, x: np.ndarray, in_format: Format, out_format: Format, *, shift: int = 0,
                bias: np.ndarray | None = None) -> np.ndarray:
        """``narrow(W x [+ bias] · 2^-shift)`` for each row of ``x`` (batch, cols).

        ``bias`` (rows,), in ``weight_format``, is added to the exact sum before the one
        rounding, scaled to the accumulator by ``in_format.frac`` bits (exact).
        """
        self.check_accumulator(in_format, self.shape[1], extra=int(bias is not None))
        acc = exact_matmul(self._dac(x, in_format, "forward"), self.weights.T, self.name)
        if bias is not None:
            acc = acc + (np.asarray(bias, dtype=np.int64) << in_format.frac)
        return self._narrow(acc, in_format, out_format, shift, "forward")

    def transposed(self, y: np.ndarray, in_format: Format, out_format: Format, *,
                   shift: int = 0) -> np.ndarray:
        """``narrow(Wᵀ y · 2^-shift)`` for each row of ``y`` (batch, rows)."""
        self.check_accumulator(in_format, self.shape[0])
        acc = exact_matmul(self._dac(y, in_format, "transposed"), self.weights, self.name)
        return self._narrow(acc, in_format, out_format, shift, "transposed")

    def update(self, u: np.ndarray, u_format: Format, v: np.ndarray, v_format: Format, *,
               shift: int) -> None:
        """Rank-1 update ``W <- sat(W + narrow(u vᵀ · 2^-shift))``; one rounding per weight.

        ``u`` (rows,) and ``v`` (cols,) are words of their formats; ``2^-shift`` is the learning
        rate (a power of two). Draws for stochastic rounding are taken in row-major order.
        """
        outer = np.asarray(u, dtype=np.int64)[:, None] * np.asarray(v, dtype=np.int64)[None, :]
        self.apply_gradient(-outer, u_format.frac + v_format.frac, shift=shift)

    def apply_gradient(self, grad: np.ndarray, grad_frac: int, *, shift: int,
                       transposed: bool = False) -> None:
        """``W <- sat(W + narrow(-grad · 2^-shift))`` for an exact integer gradient sum.

        ``grad`` has ``grad_frac`` fractional bits (e.g. an accumulated sum of ``u vᵀ``); this
        is one SGD step with learning rate ``2^-shift``. The gradient is negated before the
        rounding, so the rounding acts on the step actually applied (for floor and stochastic
        rounding this differs from rounding the gradient and subtracting). Draws are taken in
        row-major order of ``W``, or of ``Wᵀ`` if ``transposed`` (a hardware tile that
        holds ``Wᵀ``, as the core's tile B holds ``Bᵀ``).
        """
        # A step beyond the weight range saturates (and is counted): it could not be applied.
        negated = -np.asarray(grad, dtype=np.int64)
        step = narrow(negated.T if transposed else negated,
                      grad_frac + shift - self.weight_format.frac, self.weight_format,
                      self.rounder, self.overflow, f"{self.name}.update")
        step = step.T if transposed else step
        summed = self.weights + step
        self.weights = np.clip(summed, self.weight_format.min_int, self.weight_format.max_int)
        self.overflow.add(f"{self.name}.weights", np.count_nonzero(self.weights != summed),
                          summed.size)
        if transposed:
            self.weights = self._write(self.weights.T).T
        else:
            self.weights = self._write(self.weights)

    def pulsed_update(self, outputs: np.ndarray, out_format: Format, inputs: np.ndarray,
                      in_format: Format, *, shift: int, transposed: bool = False) -> None:
        """The SGD step ``W <- W − Σ_n δ_n x_nᵀ·2^-shift`` as stochastic pulse trains.

        ``outputs`` (samples, rows) are the δ words and ``inputs`` (samples, cols) the x words
        of each sample (:func:`~xbarode.model.device.pulsed_update`, with this tile's row and
        column pulse generators). With ``transposed`` the tile holds ``Wᵀ``: its rows are
        driven by the x words and its columns by the δ words, and the draws follow. The
        states and the programming noise apply when the weights are loaded, not to pulses.

        Raises
        ------
        ValueError
            Without a device model with ``pulses``.
        """
        if self.device is None or self.device.pulses is None:
            raise ValueError(f"{self.name}: pulsed updates need a device model with pulses")
        rows, cols = (inputs, in_format), (outputs, out_format)
        if not transposed:
            rows, cols = cols, rows
        held = pulsed_update(self.weights.T if transposed else self.weights,
                             self.weight_format, rows[0], rows[1], cols[0], cols[1],
                             shift=shift, device=self.device, row_lfsr=self._row_pulses,
                             col_lfsr=self._col_pulses, overflow=self.overflow, label=self.name)
        self.weights = held.T if transposed else held

    def apply_kernel_gradient(self, grad: np.ndarray, grad_frac: int, *, shift: int,
                              taps: np.ndarray, transposed: bool = False) -> None:
        """One SGD step of a tile holding a convolution matrix, its kernel's weights tied.

        The tile holds ``M`` (``W``, or ``Wᵀ`` if ``transposed``: a hardware tile that holds
        the transpose), whose tap ``t`` sits at ``M[i, taps[t, i]]`` in every row ``i`` (see
        :func:`xbarode.model.conv.tap_columns`). The tap's gradient is the exact sum of the
        dense gradient over those entries (the pull-back onto the kernel); its step is
        ``narrow(-sum · 2^-shift)``, one rounding per tap, drawn in tap order; the tap's new
        value ``sat(M[0, taps[t, 0]] + step)`` is written to every entry it occupies. Other
        entries are left as they are. ``grad`` (the shape of ``W``) has ``grad_frac``
        fractional bits.
        """
        if self.device is not None and self.device.writes:
            raise ValueError(f"{self.name}: the device's write models (states, program_noise) "
                             f"need a dense tile; a convolution tile's tied weights would "
                             f"drift apart")
        taps = np.asarray(taps, dtype=np.int64)
        held = self.weights.T if transposed else self.weights
        dense = np.asarray(grad, dtype=np.int64)
        dense = dense.T if transposed else dense
        if taps.ndim != 2 or taps.shape[1] != held.shape[0]:
            raise ValueError(f"{self.name}: taps must have shape (taps, {held.shape[0]}), not "
                             f"{taps.shape}")
        rows = np.arange(held.shape[0])
        sums = dense[rows[None, :], taps].sum(axis=1)
        step = narrow(-sums, grad_frac + shift - self.weight_format.frac, self.weight_format,
                      self.rounder, self.overflow, f"{self.name}.update")
        summed = held[0, taps[:, 0]] + step
        value = np.clip(summed, self.weight_format.min_int, self.weight_format.max_int)
        self.overflow.add(f"{self.name}.weights", np.count_nonzero(value != summed), summed.size)
        held = held.copy()
        held[rows[None, :], taps] = value[:, None]
        self.weights = held.T if transposed else held


def euler_step(A: FixedTile, B: FixedTile, z: np.ndarray, *, state: Format, act: Format,
               h_shift: int, overflow: Overflow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One explicit Euler step ``z + h·B·relu(A z)`` with ``h = 2^-h_shift``.

    ``u = narrow(A z)`` to ``act``; ``r = relu(u)`` exact; ``dz = narrow(B r · h)`` to
    ``state`` (h folded into the shift: one rounding); ``z + dz`` saturated to ``state``.

    Error bound (documented, tested): without saturation, each element of ``z_next`` is within
    ``ρ·(lsb_state + h·‖B‖∞·lsb_act)`` of the float64 step ``z + h·B·relu(A z)`` on the word
    values, with ``ρ = 1/2`` for ``nearest`` and 1 otherwise and ``‖B‖∞`` the largest absolute
    row sum; a flip of an activation's sign by rounding is covered because relu is
    1-Lipschitz.

    Returns
    -------
    z_next, u, mask : ndarray
        The new state and, for the adjoint, the pre-activation and its Heaviside mask.
    """
    u = A.forward(z, state, act)
    r, mask = relu_fixed(u)
    dz = B.forward(r, act, state, shift=h_shift)
    z_next = _saturating_add(z, dz, state, overflow, "euler.state")
    return z_next, u, mask


def _saturating_add(a, b, fmt: Format, overflow: Overflow, label: str) -> np.ndarray:
    total = a + b
    result = np.clip(total, fmt.min_int, fmt.max_int)
    overflow.add(label, np.count_nonzero(result != total), result.size)
    return result


def newton_step(A: FixedTile, B: FixedTile, z: np.ndarray, *, state: Format, act: Format,
                h_shift: int, overflow: Overflow, neumann_terms: int, max_iter: int,
                tol: int, predictor: bool = True):
    """One implicit Euler step by Newton's method with a Neumann inner solve, on integers.

    ``w_0`` is the explicit Euler predictor (or ``z`` with ``predictor=False``). Each Newton
    iteration computes the residual ``G = w - z - narrow(h·B·relu(A w))`` in ``state``, stops
    once ``max|G| <= tol`` (integer LSBs), else solves ``(I - h·J) δ = G`` by
    ``δ <- sat(G + narrow(h·B·(D ⊙ narrow(A δ))))``, ``neumann_terms`` times from ``δ = G``, with
    ``D`` the mask of ``A w``, and sets ``w <- sat(w - δ)``. Rows iterate independently.

    Returns
    -------
    w : ndarray
        The new state.
    iterations : ndarray of int (batch,)
        Newton updates applied.
    converged : ndarray of bool (batch,)
        Whether ``max|G| <= tol`` was reached within ``max_iter`` updates.
    """
    w = euler_step(A, B, z, state=state, act=act, h_shift=h_shift, overflow=overflow)[0] \
        if predictor else z.copy()
    iterations = np.zeros(len(z), dtype=np.int64)
    converged = np.zeros(len(z), dtype=bool)
    for _ in range(max_iter + 1):
        u = A.forward(w, state, act)
        r, mask = relu_fixed(u)
        hf = B.forward(r, act, state, shift=h_shift)
        residual = _saturating_add(w - z, -hf, state, overflow, "newton.residual")
        converged = np.abs(residual).max(axis=-1) <= tol
        active = ~converged & (iterations < max_iter)
        if not active.any():
            break
        g, m = residual[active], mask[active]
        delta = g
        for _ in range(neumann_terms):
            ad = A.forward(delta, state, act)
            bd = B.forward(np.where(m, ad, 0), act, state, shift=h_shift)
            delta = _saturating_add(g, bd, state, overflow, "newton.delta")
        w[active] = _saturating_add(w[active], -delta, state, overflow, "newton.state")
        iterations[active] += 1
    return w, iterations, converged


# ---------------------------------------------------------------------------------------------
# The Fourier path.

def hadamard_fixed(x: np.ndarray, spectrum: np.ndarray, *, x_format: Format,
                   spectrum_format: Format, out_format: Format, rounder: Rounder,
                   overflow: Overflow, gauss: bool = False) -> np.ndarray:
    """Element-wise complex product of ``(..., n, 2)`` words with a stored spectrum ``(n, 2)``.

    The 4-multiply form ``(ac - bd, ad + bc)`` and the 3-multiply Gauss form
    ``k1 = c(a + b), k2 = a(d - c), k3 = b(c + d)``, ``(k1 - k3, k1 + k2)`` give the same exact
    sums (integer algebra); each output component is narrowed once, real before imaginary per
    element, in C order. ``gauss`` selects the form (the hardware's multiplier count).
    """
    a, b = x[..., 0], x[..., 1]
    c, d = spectrum[..., 0], spectrum[..., 1]
    if gauss:
        k1, k2, k3 = c * (a + b), a * (d - c), b * (c + d)
        re, im = k1 - k3, k1 + k2
    else:
        re, im = a * c - b * d, a * d + b * c
    acc = np.stack([re, im], axis=-1)
    return narrow(acc, x_format.frac + spectrum_format.frac - out_format.frac, out_format,
                  rounder, overflow, "hadamard")


#: Rounding sites of the Fourier path, one LFSR each (seeds ``site_seed(seed, index)``): the row
#: transforms (length W), the column transforms (length H) and the Hadamard product (with
#: channels, the channel mixing that generalises it: :mod:`xbarode.model.fixed_fourier_bank`).
FOURIER_SITES = ("rows", "cols", "hadamard")


def fourier_rounders(mode: str, seed: int) -> tuple[Rounder, Rounder, Rounder]:
    """The Fourier path's rounders, one per site of :data:`FOURIER_SITES` (seeds
    ``site_seed(seed, 0..2)``, :func:`~xbarode.model.fixed.site_seed`)."""
    return tuple(Rounder(mode, site_seed(seed, k)) for k in range(len(FOURIER_SITES)))


def twiddle_matrix(n: int, twiddle: Format, overflow: Overflow | None = None) -> np.ndarray:
    """The real block form of the unitary DFT matrix of length ``n``, as words of ``twiddle``.

    Rounded to nearest (saturation counted as ``twiddle.load``). Its transpose is the inverse
    transform's table: ``to_real(conj(W)) == to_real(W).T`` exactly, because ``W`` is symmetric,
    so one table driven from either side computes both transforms — as a crossbar does.

    Returns
    -------
    ndarray of int64, shape (2n, 2n)
    """
    from .fourier import dft_matrix, to_real

    return twiddle.quantize(to_real(dft_matrix(n)), "nearest", overflow, "twiddle.load")


def spectrum_words(kernel, shape: tuple[int, int], spectrum: Format,
                   overflow: Overflow | None = None) -> np.ndarray:
    """The kernel's scaled, centred spectrum ``√(HW)·â`` as words, shape ``(H, W, 2)``.

    What the host loads into the Hadamard unit (row-major ``(re, im)`` pairs; the Fourier
    pipeline uses them column by column, :func:`spectrum_stream`). Rounded to nearest;
    saturation counted as ``spectrum.load``.

    A bank of kernels ``(c_out, c_in, k, k)`` (``K[o, i]`` maps input channel ``i`` to output
    channel ``o``, as :class:`~xbarode.model.fixed_bank.FixedConvBank`'s) gives the spectrum of
    every pair, shape ``(c_out, c_in, H, W, 2)``: at frequency ``f`` the c_out×c_in complex
    matrix ``K̂(f)`` of the channel mixing (:func:`~xbarode.model.fixed_fourier_bank.
    channel_mix_fixed`).
    """
    from .conv import _bank_kernels
    from .fourier import kernel_spectrum

    if np.ndim(kernel) == 4:
        bank = _bank_kernels(kernel, shape)
        spec = np.stack([[kernel_spectrum(pair, shape) for pair in row] for row in bank])
    else:
        spec = kernel_spectrum(kernel, shape)
    return spectrum.quantize(np.stack([spec.real, spec.imag], axis=-1), "nearest", overflow,
                             "spectrum.load")


def spectrum_stream(words: np.ndarray) -> np.ndarray:
    """Spectrum words (:func:`spectrum_words`) in the order a load sends them, flat.

    One kernel, ``(H, W, 2)``: column by column (``w`` outer, ``h`` inner), ``(re, im)`` per
    element — LOAD_SPECTRUM's order, and the core's LOAD_A / LOAD_B on the Fourier path. A
    bank, ``(c_out, c_in, H, W, 2)``: frequency by frequency in that same column-major order,
    and at each frequency the c_out×c_in matrix ``K̂(f)`` row-major (``o`` outer, ``i``
    inner), ``(re, im)`` per entry: the order in which the channel mixing
    (:func:`~xbarode.model.fixed_fourier_bank.channel_mix_fixed`) uses them, ``2·c_out·c_in·H·W``
    words. With one channel pair the two orders are the same.

    Raises
    ------
    ValueError
        If ``words`` has neither shape.
    """
    words = np.asarray(words)
    if words.ndim == 3 and words.shape[-1] == 2:
        return np.swapaxes(words, 0, 1).reshape(-1)
    if words.ndim == 5 and words.shape[-1] == 2:
        return words.transpose(3, 2, 0, 1, 4).reshape(-1)
    raise ValueError(f"spectrum words must have shape (H, W, 2) or (c_out, c_in, H, W, 2), "
                     f"not {words.shape}")


def fourier_conv_fixed(kernel, image: np.ndarray, *, data: Format, twiddle: Format,
                       spectrum: Format, rounder, overflow: Overflow,
                       gauss: bool = False, device: DeviceModel | None = None,
                       noise: tuple[Lfsr, Lfsr] | None = None) -> np.ndarray:
    """Integer twin of :func:`~xbarode.model.fourier.fourier_conv`.

    Parameters
    ----------
    kernel : array_like, shape (k, k)
        Float kernel; its spectrum is :func:`spectrum_words`.
    image : ndarray of int, shape (batch, H, W)
        Words of ``data``.
    data, twiddle, spectrum : Format
        Format of every intermediate vector, of the DFT tables (:func:`twiddle_matrix`), and
        of the kernel spectrum (which needs about ``log2(sum |a|)`` more integer bits than
        the twiddles).
    rounder : Rounder or tuple of three Rounder
        Rounding of every narrowing: one rounder for every site, or one per site of
        :data:`FOURIER_SITES` as the hardware has (:func:`fourier_rounders`).
    overflow : Overflow
        Saturation tally.
    gauss : bool
        Hadamard product in the 3-multiply form (same result).
    device : DeviceModel, optional
        The DFT arrays' read models (:func:`dft2_fixed`); the Hadamard product is digital
        and has none. Write models are refused (:func:`dft_device`).
    noise : pair of Lfsr, optional
        The rows and the columns array's read-noise generators (:func:`dft_noise`), used by
        the forward and the inverse passes of every image in turn; None: fresh ones of
        ``dft_noise(DEVICE_SEED)``.

    Returns
    -------
    ndarray of int, shape (batch, H, W)
        Real parts, in ``data``.

    Notes
    -----
    Images are processed one after the other, as the hardware does. Per image: the row
    pass (H forward transforms of length W), the column pass (W transforms of length H,
    column by column), the Hadamard product (column-major, real before imaginary), the
    inverse column pass and the inverse row pass (the same tables, transposed). Every
    transform is a real block matrix–vector product narrowed once per output word to
    ``data``; each site's narrowings draw in that order, each in C order of its output.

    Error bound (documented, tested): for images in [0, 1] and without saturation, every output
    lies within ``(H + W)·max(1, Σ|a|)·(2^-data.frac + 2^-twiddle.frac + 2^-spectrum.frac)``
    of the float64 convolution of the image's word values; it halves with each added bit.
    """
    rows_r, cols_r, had_r = (rounder,) * 3 if isinstance(rounder, Rounder) else rounder
    device = dft_device(device)
    if device is not None and noise is None:
        noise = dft_noise(DEVICE_SEED)
    _batch, height, width = image.shape
    spec_t = np.swapaxes(spectrum_words(kernel, (height, width), spectrum, overflow), 0, 1)
    out = np.empty(image.shape, dtype=np.int64)
    passes = {"data": data, "twiddle": twiddle, "rounder": (rows_r, cols_r),
              "overflow": overflow, "device": device, "noise": noise}
    for b, picture in enumerate(image):
        blocks = np.stack([picture, np.zeros_like(picture)], axis=-1)         # (H, W, 2)
        blocks = dft2_fixed(blocks, **passes)
        blocks = np.swapaxes(hadamard_fixed(
            np.swapaxes(blocks, 0, 1), spec_t, x_format=data, spectrum_format=spectrum,
            out_format=data, rounder=had_r, overflow=overflow, gauss=gauss), 0, 1)
        blocks = dft2_fixed(blocks, **passes, inverse=True)
        out[b] = blocks[..., 0]
    return out


class FixedFourierConv:
    """Integer twin of a convolution by the Fourier path inside the core: the product ``K x``
    of a k×k kernel's convolution matrix, with :class:`FixedTile`'s ``forward`` interface.

    ``forward`` moves each input word into the Fourier ``data`` format (exactly: a left shift;
    the formats are checked for it), convolves with :func:`fourier_conv_fixed` (its three
    rounding sites, seeded ``site_seed(seed, 0..2)``), and narrows each real part to the
    output format with the extra ``shift`` folded in: one more rounding, drawn from its
    own LFSR (``out_seed``) in the output's C order.

    Parameters
    ----------
    kernel : array_like, shape (k, k)
        Float kernel; the host quantises its spectrum (:func:`spectrum_words`).
    shape : tuple of int
        Image shape (H, W).
    data, twiddle, spectrum : Format
        The Fourier unit's formats.
    rounding : {"floor", "nearest", "stochastic"}
    seed, out_seed : int
        LFSR seeds of the Fourier unit's sites and of the output narrowing.
    overflow : Overflow
    name : str
        Prefix of the output narrowing's tally label (``NAME.forward``).
    device : DeviceModel, optional
        The DFT arrays' read models (:func:`dft2_fixed`); write models are refused
        (:func:`dft_device`). The Hadamard product and the output narrowing are digital.
    device_seed : int
        The rows array's read noise draws from ``Lfsr(device_seed)``, the columns array's
        from ``Lfsr(site_seed(device_seed, 1))`` (:func:`dft_noise`), running on across
        products.
    """

    def __init__(self, kernel, shape: tuple[int, int], *, data: Format, twiddle: Format,
                 spectrum: Format, rounding: str, seed: int, out_seed: int,
                 overflow: Overflow, name: str, device: DeviceModel | None = None,
                 device_seed: int = DEVICE_SEED):
        self.kernel = np.asarray(kernel, dtype=np.float64)
        self.image_shape = tuple(shape)
        self.data, self.twiddle, self.spectrum = data, twiddle, spectrum
        self.rounders = fourier_rounders(rounding, seed)
        self.out_rounder = Rounder(rounding, out_seed)
        self.overflow = overflow
        self.name = name
        self.device = dft_device(device, name)
        self.noise = None if self.device is None else dft_noise(device_seed)

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, m)``: the shape of the convolution matrix."""
        m = self.image_shape[0] * self.image_shape[1]
        return m, m

    def forward(self, x: np.ndarray, in_format: Format, out_format: Format, *,
                shift: int = 0) -> np.ndarray:
        """``narrow(conv(x) · 2^-shift)`` for each row of ``x`` (batch, m), in ``out_format``."""
        if not self.data.holds(in_format):
            raise ValueError(f"{self.name}: words of {in_format} do not fit the Fourier data "
                             f"format {self.data} exactly")
        words = np.asarray(x, dtype=np.int64) << (self.data.frac - in_format.frac)
        images = words.reshape(-1, *self.image_shape)
        y = fourier_conv_fixed(self.kernel, images, data=self.data, twiddle=self.twiddle,
                               spectrum=self.spectrum, rounder=self.rounders,
                               overflow=self.overflow, device=self.device,
                               noise=self.noise).reshape(words.shape)
        return narrow(y, self.data.frac + shift - out_format.frac, out_format,
                      self.out_rounder, self.overflow, f"{self.name}.forward")


def dft_device(device: DeviceModel | None, name: str | None = None) -> DeviceModel | None:
    """``device`` for the DFT block arrays: None for no device or every model off, the model
    itself if it has read models only.

    Raises
    ------
    TypeError
        If ``device`` is not a :class:`~xbarode.model.device.DeviceModel` or None.
    ValueError
        If it turns on a write model (``states``, ``program_noise``, ``pulses``): the arrays
        hold a fixed table, which is never written. ``name`` prefixes the message.
    """
    prefix = "" if name is None else f"{name}: "
    if device is not None and not isinstance(device, DeviceModel):
        raise TypeError(f"{prefix}device must be a DeviceModel or None, not "
                        f"{type(device).__name__}")
    if device is None or device.off:
        return None
    if device.writes:
        raise ValueError(f"{prefix}the DFT arrays hold a fixed table: the device's write models "
                         f"(states, program_noise, pulses) do not apply; give read models only "
                         f"(dac_bits, adc_bits, adc_range, read_noise)")
    return device


def dft_noise(device_seed: int = DEVICE_SEED) -> tuple[Lfsr, Lfsr]:
    """The read-noise generators of a Fourier unit's two DFT arrays, ``(rows, columns)``.

    The rows array is a tile with ``device_seed``, the columns array one with
    ``site_seed(device_seed, 1)``; each draws its read noise from its purpose 0
    (:data:`~xbarode.model.device.DEVICE_PURPOSES`), as :class:`FixedTile` and the RTL tile
    do: ``Lfsr(device_seed)`` and ``Lfsr(site_seed(device_seed, 1))``. (A read-only array
    draws nothing for its other purposes.)
    """
    return (Lfsr(site_seed(device_seed, 0)), Lfsr(site_seed(site_seed(device_seed, 1), 0)))


def dft2_fixed(blocks: np.ndarray, *, data: Format, twiddle: Format, rounder,
               overflow: Overflow, inverse: bool = False, device: DeviceModel | None = None,
               noise: tuple[Lfsr, Lfsr] | None = None) -> np.ndarray:
    """Integer twin of the 2-D DFT block array: one H×W complex image, ``(H, W, 2)`` words.

    Forward: the row pass (H transforms of length W, table :func:`twiddle_matrix`), then the
    column pass (W transforms of length H, column by column). Inverse: the column pass, then
    the row pass, with the tables transposed. Each transform is a real block matrix–vector
    product narrowed once per output word to ``data``; each pass's narrowings draw in C order
    of its output (a column pass: column by column). ``rounder`` is one :class:`Rounder` or
    a pair (rows site, columns site).

    With a ``device`` (read models only, :func:`dft_device`) each transform is a read of a
    crossbar, exactly :class:`FixedTile`'s with the table as weights (FORWARD for the forward
    transform, TRANSPOSED for the inverse): every input word of the vector passes the DAC
    (:func:`~xbarode.model.device.dac_input`, clips counted as ``LABEL.dac``) and every output
    word the read noise and the ADC (:func:`~xbarode.model.device.adc_read`, in place of the
    narrowing, clips counted as ``LABEL``), one noise draw per output word in the pass's C
    order — vector by vector, ``(re, im)`` by element — from the generator of the array that
    computes it, ``noise[0]`` for the rows array and ``noise[1]`` for the columns array
    (:func:`dft_noise`; None: fresh ones of ``dft_noise(DEVICE_SEED)``). The generators run
    on: a forward and then an inverse transform draw on from where the last left them, as the
    hardware's arrays do. ``LABEL`` is ``dft.rows``, ``dft.cols``, ``idft.cols`` or
    ``idft.rows``. Without a device (or with every model off): the ideal arrays, bit for bit.

    Returns
    -------
    ndarray of int64, shape (H, W, 2)
        ``(re, im)`` words of ``data``.

    Raises
    ------
    ValueError
        If ``device`` has write models (:func:`dft_device`).
    """
    rows_r, cols_r = (rounder,) * 2 if isinstance(rounder, Rounder) else rounder
    device = dft_device(device)
    if device is not None and noise is None:
        noise = dft_noise(DEVICE_SEED)
    rows_n, cols_n = (None, None) if device is None else noise
    height, width = blocks.shape[:2]
    table_w = twiddle_matrix(width, twiddle, overflow)
    table_h = table_w if height == width else twiddle_matrix(height, twiddle, overflow)
    if inverse:
        table_w, table_h = table_w.T, table_h.T
    prefix = "idft" if inverse else "dft"

    def apply(vectors, matrix, rounder, lfsr, label):
        n = vectors.shape[-2]
        flat = vectors.reshape(-1, 2 * n)
        if device is None:
            acc = exact_matmul(flat, matrix.T, label)
            return narrow(acc, twiddle.frac, data, rounder, overflow,
                          label).reshape(vectors.shape)
        flat = dac_input(flat, data, device.dac_bits, overflow, f"{label}.dac")
        acc = exact_matmul(flat, matrix.T, label)
        return adc_read(acc, twiddle.frac, data, device, rounder, lfsr, overflow,
                        label).reshape(vectors.shape)

    def rows(x):
        return apply(x, table_w, rows_r, rows_n, f"{prefix}.rows")

    def cols(x):
        return np.swapaxes(apply(np.swapaxes(x, 0, 1), table_h, cols_r, cols_n,
                                 f"{prefix}.cols"), 0, 1)

    return rows(cols(blocks)) if inverse else cols(rows(blocks))
