"""Device and converter models of a memristor crossbar, on integers (docs/device.md).

A digital tile computes the exact sum of products and rounds once, as if the array were
perfect. :class:`DeviceModel` describes what a real array adds, each part optional and all off
by default: input DACs of a few bits, output ADCs of a few bits with a clipping range, additive
read noise, weight programming noise, a finite number of conductance states, and pulsed
updates (stochastic pulse trains with up/down asymmetry and soft bounds) in place of the
digital SGD step. Every part is
integer arithmetic (shifts, additions, comparisons with constants) and every random draw comes
from the project's LFSR (:class:`~xbarode.model.fixed.Lfsr`), so a hardware tile can do exactly
the same.

The noise generator (:func:`gauss_draws`). One LFSR draw is 32 bits; its four bytes
``b0 … b3`` are summed and centred, ``G = b0 + b1 + b2 + b3 − 510``: the discrete Irwin–Hall
approximation of a Gaussian with n = 4 terms. Over the LFSR's period the draws take every
non-zero 32-bit value exactly once, so the exact distribution of ``G`` over a period is

    P(G = g) = (c(g + 510) − [g = −510]) / (2³² − 1),   g = −510 … 510,

where ``c(s)`` is the number of byte 4-tuples that sum to ``s`` (the lock-up state 0, the one
tuple summing to 0, never occurs). Its mean is ``510 / (2³² − 1)`` (about 1.2e-7) and its
variance within 1e-5 of ``4·(256² − 1)/12 = 21845`` (:data:`GAUSS_VARIANCE`), the variance of
four independent uniform bytes: a standard deviation of about 147.8.

A noise of standard deviation ``σ`` (a fraction of a range ``2^r`` words) is
``round(G · a · 2^(r − NOISE_FRAC))`` words with the integer amplitude
``a = floor(σ · 2^NOISE_FRAC / √21845 + 1/2)`` (:func:`noise_amplitude`, fixed when the model
is configured), round half up when the shift is to the right. Its standard deviation is
``a·√21845·2^-NOISE_FRAC`` of the range, within ``√21845 / 2^(NOISE_FRAC+1)`` (4.4e-6 of the
range) of ``σ``, before the final rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .fixed import Format, Lfsr, Overflow, Rounder, narrow

__all__ = [
    "ASYMMETRY_FRAC",
    "DEVICE_PURPOSES",
    "DEVICE_SEED",
    "DEVICE_SITE",
    "FOURIER_DEVICE_SITE",
    "GAUSS_OFFSET",
    "GAUSS_VARIANCE",
    "MAX_PULSES",
    "NOISE_FRAC",
    "DeviceModel",
    "adc_read",
    "dac_input",
    "gauss_draws",
    "noise_amplitude",
    "program_weights",
    "pulse_step",
    "pulse_steps",
    "pulsed_update",
    "scaled_noise",
]

#: The random purposes of one tile, in site order: the tile's device generators are seeded
#: ``site_seed(device_seed, p)`` for purpose ``p``.
DEVICE_PURPOSES = ("read", "program", "states", "row_pulses", "col_pulses")
#: First rounding site of the device generators in a network
#: (:class:`~xbarode.model.fixed_net.FixedNetwork`): tile ``k`` (A, B, C = 0, 1, 2) seeds its
#: purposes ``p`` with ``site_seed(lfsr_seed, DEVICE_SITE + len(DEVICE_PURPOSES)·k + p)``
#: (``16 + 5k + p``).
DEVICE_SITE = 16
#: First rounding site of the DFT arrays' read-noise generators on a network's Fourier path:
#: Fourier unit ``k`` (A, B = 0, 1) takes ``device_seed = site_seed(lfsr_seed,
#: FOURIER_DEVICE_SITE + 2k)``, its rows array drawing from that site and its columns array
#: from the next (``31 + 2k`` and ``32 + 2k``): after the tiles' device sites (16–30), distinct
#: from every site of the network.
FOURIER_DEVICE_SITE = 31
#: Default device seed of a lone :class:`~xbarode.model.fixed_ops.FixedTile`.
DEVICE_SEED = 0x5EED0DE5
#: The mean of a sum of four uniform bytes: ``G`` is that sum minus this.
GAUSS_OFFSET = 510
#: Variance of ``G`` for four independent uniform bytes, ``4·(256² − 1)/12``.
GAUSS_VARIANCE = 4 * (256**2 - 1) / 12
#: Fractional bits of a noise amplitude (:func:`noise_amplitude`).
NOISE_FRAC = 24
#: Fractional bits of the pulse steps' asymmetry factors (:func:`pulse_steps`).
ASYMMETRY_FRAC = 16
#: Largest pulse train.
MAX_PULSES = 1 << 12

_MAX_BITS = 32


def gauss_draws(lfsr: Lfsr, count: int) -> np.ndarray:
    """``count`` draws of ``G = b0 + b1 + b2 + b3 − 510`` (int64), one LFSR draw each.

    ``b0 … b3`` are the four bytes of the draw (low byte first; the order does not matter to
    the sum). ``G`` lies in ``[−510, 510]``; its exact distribution is in the module docstring.
    """
    draws = lfsr.draw(count).astype(np.int64)
    total = sum((draws >> (8 * k)) & 0xFF for k in range(4))
    return total - GAUSS_OFFSET


def noise_amplitude(sigma: float) -> int:
    """The integer amplitude ``a = floor(σ · 2^NOISE_FRAC / √GAUSS_VARIANCE + 1/2)``: ``G·a``
    has standard deviation ``σ·2^NOISE_FRAC`` (up to ``a``'s rounding)."""
    return math.floor(sigma * 2**NOISE_FRAC / math.sqrt(GAUSS_VARIANCE) + 0.5)


def scaled_noise(g: np.ndarray, amplitude: int, exponent: int) -> np.ndarray:
    """``G·a·2^exponent`` as integers: exact for ``exponent >= 0``, else rounded half up
    (an arithmetic right shift after adding half an LSB)."""
    product = g * amplitude
    if exponent >= 0:
        return product << exponent
    return (product + (1 << (-exponent - 1))) >> -exponent


def _power_of_two_exponent(value: float) -> int | None:
    """``k`` with ``value == 2^-k`` and ``0 <= k <= 31``, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        return None
    mantissa, exponent = math.frexp(value)
    k = 1 - exponent
    return k if mantissa == 0.5 and 0 <= k <= _MAX_BITS - 1 else None


@dataclass(frozen=True)
class DeviceModel:
    """The non-idealities of a crossbar tile; every field off by default.

    Parameters
    ----------
    dac_bits : int, optional
        Input DAC resolution, 2 to 32 bits: each input word of a ``W``-bit format keeps its
        top ``dac_bits`` bits, rounded to nearest (half up) and saturated (counted as
        ``NAME.LABEL.dac``; only the largest words can round up past the top), i.e. the input
        format's range in ``2^dac_bits`` levels. A format of at most ``dac_bits`` bits passes
        unchanged. None: no DAC.
    adc_bits : int, optional
        Output ADC resolution, 2 to 32 bits: ``2^adc_bits`` levels over the clipping range
        (:func:`adc_read`). None: the output format's own resolution.
    adc_range : float
        The ADC's clipping range ``[−R, R)`` as a fraction of the output format's full scale
        (``R = adc_range · 2^(width−1−frac)``): a power of two, 1 (the full scale, the
        default) down to ``2^-31``. An output beyond it is clipped and counted like any
        saturation (the bound-management rule, docs/device.md).
    read_noise : float
        Standard deviation of the additive output noise as a fraction of ``R``, 0 to 1; one
        draw per output word, added to the exact sum before the ADC.
    program_noise : float
        Standard deviation of the weight programming noise as a fraction of the weight
        format's full scale, 0 to 1; one draw per weight whenever the weight is written (the
        load and every SGD step).
    states : int, optional
        Conductance levels over the weight range, a power of two from 4 to ``2^32``: a written
        weight of a ``W``-bit format keeps its top ``log2(states)`` bits (rounded with the
        tile's rounding mode from its own generator, saturated and counted as
        ``NAME.states``). A weight format of at most ``log2(states)`` bits is unchanged.
        None: every word is a level.
    pulses : int, optional
        Pulsed updates (:func:`pulsed_update`): the SGD step of a tile becomes stochastic pulse
        trains of this length ``BL``, a power of two from 1 to 4096, per training sample; a
        coincidence of a row and a column pulse moves the weight one step. None: the digital
        SGD step (exact sum, one rounding).
    asymmetry : float
        Up/down asymmetry of a pulse step, ``-1 < asymmetry < 1``: an up step is
        ``(1 + asymmetry)`` and a down step ``(1 − asymmetry)`` times the nominal step
        (:func:`pulse_steps`). Pulsed updates only.
    soft_bounds : bool
        Steps shrink linearly to 0 at the bounds of the weight range: an up step is scaled by
        ``(2^(W−1) − w)/2^(W−1)``, a down step by ``(w + 2^(W−1))/2^(W−1)``. Pulsed updates
        only.

    Notes
    -----
    Powers of two everywhere make every conversion a shift in hardware; the noise deviations
    become integer amplitudes (:func:`noise_amplitude`) when the model is used.
    """

    dac_bits: int | None = None
    adc_bits: int | None = None
    adc_range: float = 1.0
    read_noise: float = 0.0
    program_noise: float = 0.0
    states: int | None = None
    pulses: int | None = None
    asymmetry: float = 0.0
    soft_bounds: bool = False

    def __post_init__(self):
        for name in ("dac_bits", "adc_bits"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 2 <= value <= _MAX_BITS):
                raise ValueError(f"{name} must be an integer from 2 to {_MAX_BITS} (or None "
                                 f"for none), not {value!r}")
        if _power_of_two_exponent(self.adc_range) is None:
            raise ValueError(f"adc_range must be a power of two from 2^-31 to 1 (a fraction "
                             f"of the output format's full scale), not {self.adc_range!r}")
        for name in ("read_noise", "program_noise"):
            value = getattr(self, name)
            # NaN fails the comparison too.
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number from 0 to 1 (a standard deviation "
                                 f"as a fraction of the range), not {value!r}")
        states = self.states
        if states is not None and (isinstance(states, bool) or not isinstance(states, int)
                                   or states < 4 or states > 2**_MAX_BITS
                                   or states & (states - 1)):
            raise ValueError(f"states must be a power of two from 4 to 2^{_MAX_BITS} (or None "
                             f"for every word), not {states!r}")
        pulses = self.pulses
        if pulses is not None and (isinstance(pulses, bool) or not isinstance(pulses, int)
                                   or not 1 <= pulses <= MAX_PULSES or pulses & (pulses - 1)):
            raise ValueError(f"pulses must be a power of two from 1 to {MAX_PULSES} (or None "
                             f"for the digital SGD step), not {pulses!r}")
        asymmetry = self.asymmetry
        # NaN fails the comparison too.
        if isinstance(asymmetry, bool) or not isinstance(asymmetry, (int, float)) \
                or not -1 < asymmetry < 1:
            raise ValueError(f"asymmetry must be a number between -1 and 1 (exclusive), not "
                             f"{asymmetry!r}")
        if not isinstance(self.soft_bounds, bool):
            raise ValueError(f"soft_bounds must be true or false, not {self.soft_bounds!r}")
        if pulses is None and (asymmetry != 0 or self.soft_bounds):
            raise ValueError("asymmetry and soft_bounds shape pulsed updates: give pulses")

    @property
    def adc_range_shift(self) -> int:
        """``k`` with ``adc_range == 2^-k``."""
        return _power_of_two_exponent(self.adc_range)

    @property
    def reads(self) -> bool:
        """Whether reading the tile (its products) differs from the ideal tile."""
        return (self.dac_bits is not None or self.adc_bits is not None
                or self.adc_range != 1 or self.read_noise > 0)

    @property
    def writes(self) -> bool:
        """Whether writing weights differs from the ideal tile."""
        return self.states is not None or self.program_noise > 0 or self.pulses is not None

    @property
    def off(self) -> bool:
        """Whether every model is off: the tile is the ideal tile, bit for bit."""
        return not (self.reads or self.writes)


def dac_input(x: np.ndarray, in_format: Format, bits: int | None,
              overflow: Overflow | None = None, label: str = "dac") -> np.ndarray:
    """Input words through a ``bits``-bit DAC: the top ``bits`` bits, rounded half up.

    ``x`` are words of ``in_format`` (``W`` bits). With ``t = W − bits > 0`` the result is
    ``sat(floor((x + 2^(t−1)) / 2^t)) · 2^t``, the code saturated to ``bits`` signed bits
    (counted in ``overflow`` under ``label``); otherwise (or for ``bits`` None) ``x``.
    """
    x = np.asarray(x, dtype=np.int64)
    if bits is None or bits >= in_format.width:
        return x
    drop = in_format.width - bits
    return narrow(x, drop, Format(bits, 0), "nearest", overflow, label) << drop


def adc_read(acc: np.ndarray, shift: int, out_format: Format, device: DeviceModel,
             rounder: Rounder, noise: Lfsr | None, overflow: Overflow | None = None,
             label: str = "adc") -> np.ndarray:
    """Exact sums through the output stage of a crossbar: read noise, then the ADC.

    ``acc`` are exact sums with ``out_format.frac + shift`` fractional bits (what
    :func:`~xbarode.model.fixed.narrow` takes). With ``R = 2^r`` output LSBs the clipping
    range (``r = width − 1 − k`` for ``adc_range = 2^-k``):

    1. read noise: ``acc += round(G · a · 2^(r + shift − NOISE_FRAC))`` with one
       :func:`gauss_draws` draw from ``noise`` per word, in C order, and ``a`` the
       :func:`noise_amplitude` of ``read_noise``;
    2. the ADC: ``c = min(adc_bits, r + 1)`` code bits (``r + 1`` without ``adc_bits``) with
       a step of ``2^s`` output LSBs, ``s = r + 1 − c``: the code is
       ``narrow(acc, shift + s)`` with ``rounder``, saturated to ``c`` signed bits (the clip
       to ``[−R, R)``, counted in ``overflow`` under ``label``), and the output word is
       ``code · 2^s``.

    With every model off (``adc_range`` 1, no ``adc_bits``, no noise) this is
    ``narrow(acc, shift, out_format, rounder)`` exactly, draw for draw.

    Raises
    ------
    ValueError
        If the range leaves fewer than two code bits in ``out_format``.
    OverflowError
        If a noisy sum could leave int64.
    """
    r = out_format.width - 1 - device.adc_range_shift
    if r < 1:
        raise ValueError(f"{label}: an ADC range of {device.adc_range} of {out_format}'s full "
                         f"scale leaves fewer than 2 code bits")
    acc = np.asarray(acc, dtype=np.int64)
    if device.read_noise > 0:
        amplitude, exponent = noise_amplitude(device.read_noise), r + shift - NOISE_FRAC
        # Python integers: the largest |sum + noise| must stay inside int64.
        peak = max(-int(acc.min()), int(acc.max())) if acc.size else 0
        if peak + (GAUSS_OFFSET * amplitude << max(exponent, 0)) >= 2**63 - 1:
            raise OverflowError(f"{label}: the noisy sum may exceed int64")
        g = gauss_draws(noise, acc.size).reshape(acc.shape)
        acc = acc + scaled_noise(g, amplitude, exponent)
    code_bits = r + 1 if device.adc_bits is None else min(device.adc_bits, r + 1)
    step = r + 1 - code_bits
    return narrow(acc, shift + step, Format(code_bits, 0), rounder, overflow, label) << step


def program_weights(values: np.ndarray, weight_format: Format, device: DeviceModel,
                    rounder: Rounder, noise: Lfsr | None, overflow: Overflow | None = None,
                    label: str = "tile") -> np.ndarray:
    """Weight words as written to the devices: snapped to a state, then programming noise.

    1. states (``2^b``): with ``t = W − b > 0``, ``narrow(v, t)`` with ``rounder``
       saturated to ``b`` signed bits (counted as ``LABEL.states``), times ``2^t``;
    2. programming noise: ``v += round(G · a · 2^(W − 1 − NOISE_FRAC))``, one
       :func:`gauss_draws` draw from ``noise`` per weight in C order (``a`` the
       :func:`noise_amplitude` of ``program_noise``), saturated to ``weight_format``
       (counted as ``LABEL.program``).
    """
    values = np.asarray(values, dtype=np.int64)
    width = weight_format.width
    if device.states is not None:
        bits = device.states.bit_length() - 1
        if bits < width:
            values = narrow(values, width - bits, Format(bits, 0), rounder, overflow,
                            f"{label}.states") << (width - bits)
    if device.program_noise > 0:
        g = gauss_draws(noise, values.size).reshape(values.shape)
        noisy = values + scaled_noise(g, noise_amplitude(device.program_noise),
                                      width - 1 - NOISE_FRAC)
        values = np.clip(noisy, weight_format.min_int, weight_format.max_int)
        if overflow is not None:
            overflow.add(f"{label}.program", np.count_nonzero(values != noisy), values.size)
    return values


def pulse_step(weight_format: Format, out_format: Format, in_format: Format, shift: int,
               pulses: int) -> int:
    """The nominal step ``Δw_min`` of one coincidence, in weight LSBs (a power of two).

    A row fires with probability ``|δ|/2^(Wδ−1)`` and a column with ``|x|/2^(Wx−1)`` (their
    words over full scale), so ``BL`` slots give ``BL·|δ|·|x|/2^(Wδ+Wx−2)`` coincidences on
    average; the step that makes the expected update the SGD step ``δ·x·2^-shift`` is
    ``2^e`` weight LSBs with ``e = Wδ + Wx − 2 + frac_w − frac_δ − frac_x − shift −
    log2(BL)``.

    Raises
    ------
    ValueError
        If ``e < 0``: a step below one weight LSB (fewer pulses or a finer weight format); or
        if ``e + 17 + W > 62``: the steps' integer products could leave int64.
    """
    exponent = (out_format.width + in_format.width - 2 + weight_format.frac - out_format.frac
                - in_format.frac - shift - (pulses.bit_length() - 1))
    if exponent < 0:
        raise ValueError(f"pulses: a pulse step of 2^{exponent} weight LSBs is below one LSB; "
                         f"use fewer pulses (now {pulses}) or a finer weight format")
    # pulse_steps multiplies the step by a 17-bit factor and a W-bit bound in int64.
    if exponent + ASYMMETRY_FRAC + 1 + weight_format.width > 62:
        raise ValueError(f"pulses: a pulse step of 2^{exponent} weight LSBs exceeds the weight "
                         f"range; use more pulses (now {pulses}) or a larger shift")
    return 1 << exponent


def pulse_steps(weights: np.ndarray, weight_format: Format, step: int,
                device: DeviceModel) -> tuple[np.ndarray, np.ndarray]:
    """The up and down step (weight LSBs, ``>= 0``) of one coincidence at each weight.

    With ``A = floor(asymmetry·2^16 + 1/2)`` and ``F = ASYMMETRY_FRAC`` (16):
    ``up = floor(step·(2^F + A)·b_up / 2^(F + W − 1))`` and
    ``down = floor(step·(2^F − A)·b_down / 2^(F + W − 1))``, with the soft-bound factors
    ``b_up = 2^(W−1) − w`` and ``b_down = w + 2^(W−1)`` (both ``2^(W−1)`` without
    ``soft_bounds``): integer products and one right shift each.
    """
    half = 1 << (weight_format.width - 1)
    a = math.floor(device.asymmetry * 2**ASYMMETRY_FRAC + 0.5)
    w = np.asarray(weights, dtype=np.int64)
    up_bound = half - w if device.soft_bounds else np.full_like(w, half)
    down_bound = w + half if device.soft_bounds else np.full_like(w, half)
    total = ASYMMETRY_FRAC + weight_format.width - 1
    up = (step * ((1 << ASYMMETRY_FRAC) + a) * up_bound) >> total
    down = (step * ((1 << ASYMMETRY_FRAC) - a) * down_bound) >> total
    return up, down


def _fires(words: np.ndarray, fmt: Format, pulses: int, lfsr: Lfsr) -> np.ndarray:
    """Pulse trains ``(samples, BL, n)`` of 0/1: slot ``t`` of word ``v`` fires iff the low
    ``W − 1`` bits of its draw are below ``|v|``; draws in C order of ``(sample, word,
    slot)``."""
    samples, n = words.shape
    draws = lfsr.draw(samples * n * pulses).astype(np.int64).reshape(samples, n, pulses)
    fires = (draws & ((1 << (fmt.width - 1)) - 1)) < np.abs(words)[:, :, None]
    # float64: the coincidence counts (at most BL <= 4096) are exact in a BLAS product.
    return np.swapaxes(fires, 1, 2).astype(np.float64)


def pulsed_update(weights: np.ndarray, weight_format: Format, outputs: np.ndarray,
                  out_format: Format, inputs: np.ndarray, in_format: Format, *, shift: int,
                  device: DeviceModel, row_lfsr: Lfsr, col_lfsr: Lfsr,
                  overflow: Overflow | None = None, label: str = "tile") -> np.ndarray:
    """The SGD step ``W − Σ δ xᵀ·2^-shift`` as stochastic pulse trains, sample by sample.

    For each sample ``n`` in order (``outputs[n]`` = δ, one word per row of ``W``;
    ``inputs[n]`` = x, one per column): ``BL = device.pulses`` slots; row ``i`` fires in a
    slot with probability ``|δ_i|/2^(Wδ−1)`` (:func:`_fires`, from ``row_lfsr``: all the row
    draws of the sample, row by row, slot by slot), column ``j`` with ``|x_j|/2^(Wx−1)``
    (from ``col_lfsr``, likewise). The coincidences ``c_ij`` (slots where both fire) move
    the weight in the direction of the SGD step, ``−sign(δ_i·x_j)``, by ``c_ij`` up or down
    steps (:func:`pulse_steps` of :func:`pulse_step`) computed at the weight's value before
    the sample; the result saturates to the weight format (counted as ``LABEL.weights``).
    The expected step equals the SGD step when the asymmetry is 0 and the bounds hard
    (and no step saturates).

    Parameters
    ----------
    weights : ndarray of int64, (rows, cols)
    outputs : ndarray of int, (samples, rows), words of ``out_format``
    inputs : ndarray of int, (samples, cols), words of ``in_format``

    Returns
    -------
    ndarray of int64, (rows, cols)
        The updated weights.
    """
    step = pulse_step(weight_format, out_format, in_format, shift, device.pulses)
    outputs = np.asarray(outputs, dtype=np.int64)
    inputs = np.asarray(inputs, dtype=np.int64)
    row_fires = _fires(outputs, out_format, device.pulses, row_lfsr)
    col_fires = _fires(inputs, in_format, device.pulses, col_lfsr)
    w = np.asarray(weights, dtype=np.int64)
    # Every sample's coincidences in one batched product, exact in float64 (counts <= BL).
    all_coincidences = (np.swapaxes(row_fires, 1, 2) @ col_fires).astype(np.int64)
    # Hard bounds: the steps do not depend on the weights; soft bounds: on the weights before
    # each sample.
    steps = None if device.soft_bounds else pulse_steps(w, weight_format, step, device)
    for n in range(len(outputs)):
        coincidences = all_coincidences[n]
        if not coincidences.any():
            continue
        up, down = steps or pulse_steps(w, weight_format, step, device)
        direction = -np.sign(outputs[n])[:, None] * np.sign(inputs[n])[None, :]
        moved = w + coincidences * np.where(direction > 0, up, -down) * (direction != 0)
        w = np.clip(moved, weight_format.min_int, weight_format.max_int)
        if overflow is not None:
            overflow.add(f"{label}.weights", np.count_nonzero(w != moved))
    if overflow is not None:
        overflow.add(f"{label}.weights", 0, w.size * len(outputs))
    return w
