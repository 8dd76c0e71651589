"""A small streaming dot-product unit that the co-simulation and synthesis infrastructure is
tested against (sim/, xbarode/synth.py), independent of the real hardware in hdl/.

It has what the real blocks have: a parameterised :class:`~amaranth.lib.wiring.Component`,
streams with a structured and a plain payload, backpressure, a memory written through a
stream and read combinationally, signed arithmetic and registers with reset values.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from xbarode.hdl.checked import CheckedComponent

__all__ = ["ToyDot", "toy_dot_reference"]


class ToyDot(CheckedComponent):
    """Dot products of a stream of vectors with a stored weight vector.

    The weight vector ``w[0..length-1]`` is written through the ``weights`` stream (one
    ``{addr, value}`` pair a beat, always ready). Every ``length`` consecutive beats of ``x``
    form one vector; its exact dot product with the weights, ``sum_j w[j]·x[j]`` (no rounding,
    no overflow), leaves on ``y``. ``x`` is stalled only while a result is waiting on ``y``
    and ``y.ready`` is low, so with ``y.ready`` high a vector is taken every ``length`` cycles.

    Latency: the result is valid on ``y`` one cycle after the last beat of its vector.

    Parameters
    ----------
    width : int
        Bits of the signed weights and inputs, 2 to 32.
    length : int
        Elements per vector, 1 to 1024 (need not be a power of two).

    Attributes
    ----------
    weights : In(stream.Signature(StructLayout({"addr": range(length), "value": signed(width)})))
    x : In(stream.Signature(signed(width)))
    y : Out(stream.Signature(signed(acc_width)))
    """

    @staticmethod
    def check_parameters(*, width, length) -> None:
        """The constructor's checks, before a unit is made (as the real blocks check theirs,
        :class:`~xbarode.hdl.checked.CheckedComponent`)."""
        if not isinstance(width, int) or isinstance(width, bool):
            raise TypeError(f"width must be an int, not {width!r}")
        if not 2 <= width <= 32:
            raise ValueError(f"width must be between 2 and 32, not {width}")
        if not isinstance(length, int) or isinstance(length, bool):
            raise TypeError(f"length must be an int, not {length!r}")
        if not 1 <= length <= 1024:
            raise ValueError(f"length must be between 1 and 1024, not {length}")

    def __init__(self, *, width, length):
        self._width = width
        self._length = length
        weight_layout = data.StructLayout({"addr": range(length), "value": signed(width)})
        super().__init__({
            "weights": In(stream.Signature(weight_layout, always_ready=True)),
            "x": In(stream.Signature(signed(width))),
            "y": Out(stream.Signature(signed(self.acc_width))),
        })

    @property
    def width(self):
        return self._width

    @property
    def length(self):
        return self._length

    @property
    def acc_width(self):
        """Bits of the exact result: a product of two signed ``width``-bit numbers needs
        ``2·width`` bits (only ``(-2^(w-1))^2`` reaches the top one), and a sum of ``length``
        of them ``ceil(log2(length))`` more."""
        return 2 * self._width + (self._length - 1).bit_length()

    def elaborate(self, platform):
        m = Module()

        m.submodules.mem = mem = Memory(shape=signed(self._width), depth=self._length, init=[])
        write = mem.write_port()
        read = mem.read_port(domain="comb")
        m.d.comb += [
            write.addr.eq(self.weights.payload.addr),
            write.data.eq(self.weights.payload.value),
            write.en.eq(self.weights.valid),
        ]

        index = Signal(range(self._length))
        acc = Signal(signed(self.acc_width))
        last = index == self._length - 1
        total = acc + self.x.payload * read.data

        m.d.comb += [
            read.addr.eq(index),
            self.x.ready.eq(~self.y.valid | self.y.ready),
        ]
        with m.If(self.y.valid & self.y.ready):
            m.d.sync += self.y.valid.eq(0)
        with m.If(self.x.valid & self.x.ready):
            m.d.sync += [
                index.eq(Mux(last, 0, index + 1)),
                acc.eq(Mux(last, 0, total)),
            ]
            with m.If(last):
                m.d.sync += [
                    self.y.payload.eq(total),
                    self.y.valid.eq(1),
                ]
        return m


def toy_dot_reference(weights, vectors):
    """The exact results of :class:`ToyDot`: one Python int per vector of ``vectors``."""
    return [sum(int(w) * int(x) for w, x in zip(weights, vector, strict=True))
            for vector in vectors]
