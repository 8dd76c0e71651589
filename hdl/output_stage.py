"""The crossbar tile's forward output stage: each row's sum accumulated over its chunks, the
bias added, one rounding, the word written to a memory of its own."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from xbarode.model.fixed import ROUNDINGS

from .checked import CheckedComponent
from .device import adc_narrow
from .rounding import narrow, rounding_offset

__all__ = ["ForwardOutput", "narrow_product", "read_product"]


def narrow_product(m, acc, *, shift, width, out_width, offset, grad=None, is_grad=None):
    """The one rounding of a product's exact sum ``acc``: ``shift`` bits discarded into
    ``width`` bits, or, where ``is_grad`` (``grad = (shift, width)`` given), the gradient
    formats'. ``offset(shift)`` is the rounding's offset. Returns the word (``out_width``
    bits where ``grad`` is given) and whether it saturated."""
    y, sat = narrow(m, acc, shift, width, offset(shift))
    if grad is None:
        return y, sat
    grad_shift, grad_width = grad
    y_g, sat_g = narrow(m, acc, grad_shift, grad_width, offset(grad_shift))
    out, flag = Signal(signed(out_width)), Signal()
    m.d.comb += [out.eq(Mux(is_grad, y_g, y)), flag.eq(Mux(is_grad, sat_g, sat))]
    return out, flag


def read_product(m, acc, *, shift, width, out_width, offset, adc=None, noise=None, grad=None,
                 grad_adc=None, is_grad=None):
    """The one rounding of a product's exact sum ``acc`` through a device's read models: the
    read noise and the ADC (:func:`~xbarode.hdl.device.adc_narrow`, ``adc`` for ``shift`` and
    ``width``), or, where ``is_grad`` (``grad = (shift, width)`` given), the gradient
    formats' (``grad_adc``). ``noise`` is the noise of the running product (the same value for
    both: the tile selects its scale by the operation). Returns the word (``out_width`` bits
    where ``grad`` is given) and whether it saturated."""
    y, sat = adc_narrow(m, acc, shift=shift, width=width, adc=adc, offset=offset, noise=noise)
    if grad is None:
        return y, sat
    grad_shift, grad_width = grad
    y_g, sat_g = adc_narrow(m, acc, shift=grad_shift, width=grad_width, adc=grad_adc,
                            offset=offset, noise=noise)
    out, flag = Signal(signed(out_width)), Signal()
    m.d.comb += [out.eq(Mux(is_grad, y_g, y)), flag.eq(Mux(is_grad, sat_g, sat))]
    return out, flag


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, not {value}")


class ForwardOutput(CheckedComponent):
    """Row accumulator, bias, rounding and output memory of the tile's FORWARD products.

    Parameters
    ----------
    rows : int
        Rows of the product (words of the output memory), ``>= 1``.
    sum_width : int
        Width of ``total`` (the adder tree's).
    acc_width : int
        Width of the row accumulator (the exact row sum with its bias).
    shift, width : int
        Bits the rounding discards, and the rounded word's width.
    grad : tuple of int, optional
        ``(shift, width)`` of the rounding of a product on gradients (where ``grad`` is high).
    out_width : int
        Width of the words written (the wider of ``width`` and the gradient width).
    rounding : {"floor", "nearest", "stochastic"}
        Rounding mode.
    draw_bits : int
        Width of ``draw`` (the LFSR word of a stochastic rounding); 0 for none.
    bias : tuple of int, optional
        ``(width, align)``: a bias word of ``width`` bits (``bias``, at row ``bias_row``) is
        added to the row's first chunk, shifted left by ``align`` (not on gradients).
    accumulate : bool
        Rows of several chunks (or with a bias) sum ``total`` into the row accumulator; with
        False, ``total`` is the row's sum already, arriving a cycle after its metadata (the
        adder tree's last register stands in for the accumulator).
    adc : tuple of int, optional
        ``(step, code_bits)`` of a device's ADC (:class:`~xbarode.hdl.device.ReadGeometry`):
        the row's rounding discards ``shift + step`` bits into ``code_bits`` signed bits, the
        word is the code times ``2^step``.
    grad_adc : tuple of int, optional
        ``(step, code_bits)`` of the ADC of a product on gradients (with ``grad``; the
        device's read geometry for the gradient format).
    noise_width : int
        Width of ``noise``, the read noise added to the row's sum before its rounding; 0 for
        none.

    Attributes
    ----------
    total : In(signed(sum_width))
        A chunk's sum, with ``valid``, ``first`` (first chunk of a row) and ``last``.
    valid, first, last : In(1)
    forward : In(1)
        A FORWARD* is running (chunks are FORWARD's only while it is high).
    grad : In(1)
        (with ``grad``) The products are on gradients.
    restart : In(1)
        An operation starts: the next row is row 0.
    draw : In(unsigned(draw_bits))
        (with ``draw_bits``) The LFSR word the rounding uses.
    rounds : Out(1)
        A row is rounded in this cycle (it consumes one draw if its narrowing discards bits).
    bias : In(signed(bias width)), bias_row : Out(range(rows))
        (with ``bias``) The bias word of row ``bias_row`` (read combinationally).
    y : Out(stream.Signature(signed(out_width), always_ready=True))
        Each rounded word, in row order, as it is written.
    overflow : Out(1)
        With ``y.valid``: that word's rounding saturated.
    read_addr : In(range(rows)), read_data : Out(signed(out_width))
        The output memory's read port (combinational).
    noise : In(signed(noise_width))
        (with ``noise_width``) The read noise of the row rounded in this cycle.

    Notes
    -----
    Latency: a row's word is rounded the cycle after the last chunk's ``total`` (with
    ``accumulate``, or after its metadata without), registered, and written the cycle after
    (``y.valid``): the LUT RAM's write data has a setup time of its own, not to be added to the
    rounding's carry chain.
    """

    @staticmethod
    def check_parameters(*, rows: int, sum_width: int, acc_width: int, shift: int, width: int,
                         out_width: int, rounding: str, draw_bits: int = 0, grad=None, bias=None,
                         accumulate: bool = True, adc=None, grad_adc=None,
                         noise_width: int = 0) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        for name, value, low in (("rows", rows, 1), ("sum_width", sum_width, 1),
                                 ("acc_width", acc_width, 1), ("shift", shift, -1 << 16),
                                 ("width", width, 1), ("out_width", out_width, 1),
                                 ("draw_bits", draw_bits, 0), ("noise_width", noise_width, 0)):
            _check_int(name, value, low)
        if grad_adc is not None and grad is None:
            raise ValueError("grad_adc is the ADC of products on gradients: it needs grad")
        if rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {rounding!r}; choose one of {list(ROUNDINGS)}")
        for name, pair in (("grad", grad), ("bias", bias), ("adc", adc), ("grad_adc", grad_adc)):
            if pair is not None and (len(pair) != 2 or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in pair)):
                raise TypeError(f"{name} must be a pair of integers, not {pair!r}")

    def __init__(self, *, rows: int, sum_width: int, acc_width: int, shift: int, width: int,
                 out_width: int, rounding: str, draw_bits: int = 0, grad=None, bias=None,
                 accumulate: bool = True, adc=None, grad_adc=None, noise_width: int = 0):
        self._adc, self._grad_adc, self._noise_width = adc, grad_adc, noise_width
        self._rows, self._acc_width, self._shift, self._width = rows, acc_width, shift, width
        self._out_width, self._rounding, self._draw_bits = out_width, rounding, draw_bits
        self._grad, self._bias, self._accumulate = grad, bias, bool(accumulate)
        members = {
            "total": In(signed(sum_width)), "valid": In(1), "first": In(1), "last": In(1),
            "forward": In(1), "restart": In(1), "rounds": Out(1),
            "y": Out(stream.Signature(signed(out_width), always_ready=True)),
            "overflow": Out(1),
            "read_addr": In(range(max(rows, 2))), "read_data": Out(signed(out_width)),
        }
        if grad is not None:
            members["grad"] = In(1)
        if draw_bits:
            members["draw"] = In(unsigned(draw_bits))
        if noise_width:
            members["noise"] = In(signed(noise_width))
        if bias is not None:
            members |= {"bias": In(signed(bias[0])), "bias_row": Out(range(max(rows, 2)))}
        super().__init__(members)

    @property
    def rows(self) -> int:
        """Rows of the product."""
        return self._rows

    @property
    def accumulate(self) -> bool:
        """``total`` is summed over a row's chunks (else it is the row's sum)."""
        return self._accumulate

    @property
    def latency(self) -> int:
        """Cycles from a row's last chunk at ``total`` to its word on ``y``: 2."""
        return 2

    def _offset(self, shift):
        return rounding_offset(self._rounding, shift, self.draw if self._draw_bits else None)

    def _row_sum(self, m):
        """The row accumulator, and whether a row's sum is complete in it (the next cycle)."""
        row_acc = Signal(signed(self._acc_width))
        pending = Signal()
        m.d.sync += pending.eq(self.forward & self.valid & self.last)
        if not self._accumulate:
            m.d.comb += row_acc.eq(self.total)
            return row_acc, pending
        start_sum = self.total
        if self._bias is not None:
            # The row of the chunk at the accumulator, counted here; the bias memory is
            # read combinationally (rows words, LUT RAM).
            bias_row = Signal(range(max(self._rows, 2)))
            m.d.comb += self.bias_row.eq(bias_row)
            bias_term = self.bias << self._bias[1]
            grad = self._grad is not None
            start_sum = self.total + (Mux(self.grad, 0, bias_term) if grad else bias_term)
            with m.If(self.forward & self.valid & self.last):
                m.d.sync += bias_row.eq(bias_row + 1)
            with m.If(self.restart):
                m.d.sync += bias_row.eq(0)
        with m.If(self.forward & self.valid):
            with m.If(self.first):
                m.d.sync += row_acc.eq(start_sum)
            with m.Else():
                m.d.sync += row_acc.eq(row_acc + self.total)
        return row_acc, pending

    def elaborate(self, platform):
        m = Module()
        m.submodules.f = f_mem = Memory(shape=signed(self._out_width), depth=self._rows,
                                        init=[])
        f_rd, f_wr = f_mem.read_port(domain="comb"), f_mem.write_port()
        m.d.comb += [f_rd.addr.eq(self.read_addr), self.read_data.eq(f_rd.data)]
        row_acc, pending = self._row_sum(m)
        # The rounded word is registered (for the memory, ``y`` and the flag), then written
        # into the memory (row ``f_row``) the cycle after.
        f_row = Signal(range(max(self._rows, 2)))
        written, sat_r = Signal(), Signal()
        y_r = Signal(signed(self._out_width), name="fwd_y")
        m.d.sync += written.eq(pending)
        with m.If(pending):
            if self._adc is not None or self._grad_adc is not None or self._noise_width:
                grad = self._grad is not None
                y, sat = read_product(m, row_acc, shift=self._shift, width=self._width,
                                      out_width=self._out_width, offset=self._offset,
                                      adc=self._adc, grad_adc=self._grad_adc,
                                      noise=self.noise if self._noise_width else None,
                                      grad=self._grad, is_grad=self.grad if grad else None)
            else:
                y, sat = narrow_product(m, row_acc, shift=self._shift, width=self._width,
                                        out_width=self._out_width, offset=self._offset,
                                        grad=self._grad,
                                        is_grad=self.grad if self._grad is not None else None)
            m.d.sync += [y_r.eq(y), sat_r.eq(sat)]
        m.d.comb += self.rounds.eq(pending)
        with m.If(written):
            m.d.comb += [f_wr.addr.eq(f_row), f_wr.data.eq(y_r), f_wr.en.eq(1)]
            m.d.sync += f_row.eq(f_row + 1)
        with m.If(self.restart):
            m.d.sync += f_row.eq(0)
        m.d.comb += [self.y.valid.eq(written), self.y.payload.eq(y_r),
                     self.overflow.eq(written & sat_r)]
        return m
