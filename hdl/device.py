"""The crossbar tile's device models in hardware: twins of :mod:`xbarode.model.device`.

Combinational building blocks the tile's parts use when a tile has a
:class:`~xbarode.model.device.DeviceModel` (docs/device.md): the input DAC (:func:`dac`), the
Gaussian noise from one LFSR draw (:func:`read_noise`, :func:`gauss`, :func:`scale_noise`),
the ADC in place of a product's one narrowing (:func:`adc_narrow`), and a weight write
through the states and the programming noise (:func:`program_word`).
:func:`read_geometry` and :func:`write_geometry` turn a device model and the tile's formats
into the integers these take. Every block is shifts, additions and comparisons with
constants, and one multiplication by a constant (the noise amplitude).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Signal, signed

from xbarode.model.device import GAUSS_OFFSET, NOISE_FRAC, DeviceModel, noise_amplitude
from xbarode.model.fixed import Format

from .rounding import narrow

__all__ = ["ReadGeometry", "WriteGeometry", "adc_narrow", "dac", "gauss", "program_word",
           "read_geometry", "read_noise", "scale_noise", "write_geometry"]


@dataclass(frozen=True)
class ReadGeometry:
    """The integers of a tile's read models (:func:`read_geometry`).

    Attributes
    ----------
    dac : tuple of int or None
        ``(drop, bits)``: an operand word keeps its top ``bits`` bits, ``drop`` bits rounded
        off (:func:`dac`); None: no DAC (none, or as wide as the operand).
    adc : tuple of int or None
        ``(step, code_bits)``: the ADC's code has ``code_bits`` signed bits and a step of
        ``2^step`` output LSBs (:func:`adc_narrow`); None: the plain narrowing (the output
        format's range and resolution).
    noise : tuple of int or None
        ``(amplitude, exponent)`` of the read noise ``round(G·amplitude·2^exponent)`` in the
        accumulator's LSBs (:func:`read_noise`); None: no read noise.
    """

    dac: tuple[int, int] | None
    adc: tuple[int, int] | None
    noise: tuple[int, int] | None

    @property
    def adc_step(self) -> int:
        """``step`` of :attr:`adc` (0 without an ADC)."""
        return 0 if self.adc is None else self.adc[0]


def read_geometry(device: DeviceModel, input_format: Format, output_format: Format,
                  shift: int) -> ReadGeometry:
    """The read models of ``device`` for products of ``input_format`` operands narrowed by
    ``shift`` bits into ``output_format`` (:func:`xbarode.model.device.dac_input` and
    :func:`~xbarode.model.device.adc_read`, the same arithmetic).

    With ``R = 2^r`` output LSBs the clipping range (``r = width − 1 − k`` for
    ``adc_range = 2^-k``): ``code_bits = min(adc_bits, r + 1)``, ``step = r + 1 −
    code_bits``; the noise's ``exponent = r + shift − NOISE_FRAC``.

    Raises
    ------
    ValueError
        If the range leaves fewer than two code bits in ``output_format``.
    """
    r = output_format.width - 1 - device.adc_range_shift
    if r < 1:
        raise ValueError(f"device: an ADC range of {device.adc_range} of {output_format}'s "
                         f"full scale leaves fewer than 2 code bits")
    dac_bits = device.dac_bits
    dac_pair = None
    if dac_bits is not None and dac_bits < input_format.width:
        dac_pair = (input_format.width - dac_bits, dac_bits)
    code_bits = r + 1 if device.adc_bits is None else min(device.adc_bits, r + 1)
    adc_pair = None
    if code_bits != output_format.width:
        adc_pair = (r + 1 - code_bits, code_bits)
    noise = None
    if device.read_noise > 0:
        noise = (noise_amplitude(device.read_noise), r + shift - NOISE_FRAC)
    return ReadGeometry(dac=dac_pair, adc=adc_pair, noise=noise)


@dataclass(frozen=True)
class WriteGeometry:
    """The integers of a tile's write models (:func:`write_geometry`).

    Attributes
    ----------
    states : tuple of int or None
        ``(drop, bits)``: a written weight keeps its top ``bits`` bits, ``drop`` bits rounded
        off with the tile's rounding; None: every word is a state.
    noise : tuple of int or None
        ``(amplitude, exponent)`` of the programming noise ``round(G·amplitude·2^exponent)``
        in weight LSBs; None: none.
    """

    states: tuple[int, int] | None
    noise: tuple[int, int] | None


def write_geometry(device: DeviceModel, weight_format: Format) -> WriteGeometry:
    """The write models of ``device`` for weights of ``weight_format``
    (:func:`xbarode.model.device.program_weights`, the same arithmetic): ``states = 2^b``
    keeps ``b`` bits of a ``W``-bit word (``drop = W − b`` where positive); the noise's
    ``exponent = W − 1 − NOISE_FRAC``."""
    width = weight_format.width
    states = None
    if device.states is not None and device.states.bit_length() - 1 < width:
        bits = device.states.bit_length() - 1
        states = (width - bits, bits)
    noise = None
    if device.program_noise > 0:
        noise = (noise_amplitude(device.program_noise), width - 1 - NOISE_FRAC)
    return WriteGeometry(states=states, noise=noise)


def program_word(m, value, width: int, *, states=None, offset=0, noise=None):
    """A weight word as the devices hold it once written: snapped to a state, then the
    programming noise, saturated to ``width`` bits (the model's
    :func:`~xbarode.model.device.program_weights` for one word).

    Parameters
    ----------
    value : Value
        The word, signed, ``width`` bits.
    states : tuple of int, optional
        ``(drop, bits)`` (:class:`WriteGeometry`): ``narrow(value, drop)`` with ``offset``,
        saturated to ``bits`` signed bits, times ``2^drop``.
    offset : Value or int
        The states' rounding offset (:func:`~xbarode.hdl.rounding.rounding_offset`).
    noise : Value, optional
        The programming noise (:func:`scale_noise`), added next.

    Returns
    -------
    word : Signal(signed(width))
    saturated : Value
        High when the state's code or the noisy word was clipped.
    """
    word, saturated = value, 0
    if states is not None:
        drop, bits = states
        code, saturated = narrow(m, value, drop, bits, offset)
        word = Signal(signed(width), name="state")
        m.d.comb += word.eq(code << drop)
    if noise is not None:
        noisy = Signal(signed(max(width, len(noise)) + 1), name="programmed")
        m.d.comb += noisy.eq(word + noise)
        word, clipped = narrow(m, noisy, 0, width)
        saturated = clipped if isinstance(saturated, int) else saturated | clipped
    return word, saturated


def dac(m, value, drop: int, bits: int):
    """An operand word through a ``bits``-bit DAC: ``sat(floor((v + 2^(drop−1)) / 2^drop))``
    to ``bits`` signed bits, times ``2^drop`` (``drop >= 1``).

    Returns
    -------
    word : Signal(signed(bits + drop))
        The converted word, in the operand's width.
    saturated : Signal(1)
        High when the code was clipped (only the largest words round past the top).
    """
    code, saturated = narrow(m, value, drop, bits, 1 << (drop - 1))
    word = Signal(signed(bits + drop))
    m.d.comb += word.eq(code << drop)
    return word, saturated


def gauss(m, draw):
    """``G = b0 + b1 + b2 + b3 − 510`` of one 32-bit LFSR ``draw`` (its four bytes), the
    first half of :func:`read_noise`.

    Returns
    -------
    Signal(signed(11))
    """
    byte_sum = Signal(10)
    m.d.comb += byte_sum.eq(draw[0:8] + draw[8:16] + draw[16:24] + draw[24:32])
    g = Signal(signed(11))
    m.d.comb += g.eq(byte_sum - GAUSS_OFFSET)
    return g


def scale_noise(m, g, amplitude: int, exponent: int):
    """``G·amplitude·2^exponent``, exact for ``exponent >= 0``, else rounded half up (an
    arithmetic right shift after adding half an LSB), as
    :func:`~xbarode.model.device.scaled_noise`: the second half of :func:`read_noise`.

    Returns
    -------
    Signal, signed
        The noise, wide enough for its largest magnitude.
    """
    product = Signal(signed(len(g) + max(amplitude, 1).bit_length() + 1))
    m.d.comb += product.eq(g * amplitude)
    if exponent >= 0:
        noise = Signal(signed(len(product) + exponent))
        m.d.comb += noise.eq(product << exponent)
        return noise
    rounded = Signal(signed(len(product) + 1))
    m.d.comb += rounded.eq(product + (1 << (-exponent - 1)))
    noise = Signal(signed(max(len(rounded) + exponent, 2)))
    m.d.comb += noise.eq(rounded >> -exponent)
    return noise


def read_noise(m, draw, amplitude: int, exponent: int):
    """The read noise of one 32-bit LFSR ``draw``: :func:`scale_noise` of :func:`gauss`,
    ``round(G·amplitude·2^exponent)`` (docs/device.md).

    Returns
    -------
    Signal, signed
        The noise, wide enough for its largest magnitude.
    """
    return scale_noise(m, gauss(m, draw), amplitude, exponent)


def adc_narrow(m, acc, *, shift: int, width: int, adc, offset, noise=None):
    """A product's exact sum ``acc`` through the read noise and the ADC, in place of its one
    narrowing (:func:`~xbarode.model.device.adc_read`): ``acc + noise`` narrowed by ``shift +
    step`` bits with ``offset(shift + step)`` and saturated to ``code_bits`` signed bits (the
    clip to the range), then times ``2^step``.

    Parameters
    ----------
    acc : Value
        The exact signed sum.
    shift, width : int
        The plain narrowing's discarded bits and output width.
    adc : tuple of int or None
        ``(step, code_bits)`` (:class:`ReadGeometry`); None for ``(0, width)``.
    offset : callable
        ``offset(shift)``: the rounding's offset for a narrowing of ``shift`` bits.
    noise : Value, optional
        The read noise (:func:`read_noise`), added to ``acc`` first.

    Returns
    -------
    word : Signal(signed(width))
    saturated : Value
        High when the code was clipped.
    """
    step, code_bits = (0, width) if adc is None else adc
    value = acc
    if noise is not None:
        value = Signal(signed(max(len(acc), len(noise)) + 1), name="noisy")
        m.d.comb += value.eq(acc.as_signed() + noise)
    code, saturated = narrow(m, value, shift + step, code_bits, offset(shift + step))
    if step == 0 and code_bits == width:
        return code, saturated
    word = Signal(signed(width))
    m.d.comb += word.eq(code << step)
    return word, saturated
