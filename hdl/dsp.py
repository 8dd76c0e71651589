"""The multiplier every lane of a tile uses: registered operands, registered product.

``Multiplier`` computes ``p = a · b`` two cycles after ``a`` and ``b`` are presented. For
simulation, and on any platform it does not know, it is plain Amaranth (two operand registers,
a product register). Elaborated for :class:`Ecp5Dsp` (what ``xbarode synth`` passes when it
writes the Verilog for Yosys) it is one ECP5 ``MULT18X18D`` with its own input and output
registers: Yosys maps a ``*`` onto that cell without them (it has no register packing for
ECP5), so the operand and product registers would sit in the fabric, the cell would be timed
as the ~4 ns combinational multiplier it then is, and two long routes would join it to them.
The same registers, the same latency: only where they sit changes. The co-simulation runs the
instantiated version too (Icarus and Verilator, with
:data:`xbarode.sim.ecp5_models.MULT18X18D_MODEL`).
"""

from __future__ import annotations

from amaranth import ClockSignal, Instance, Module, ResetSignal, Signal, signed
from amaranth.lib.wiring import In, Out

from .checked import CheckedComponent

__all__ = ["DSP_MAPPINGS", "DSP_WIDTH", "Ecp5Dsp", "Multiplier", "dsp_platform",
           "maps_to_dsp_cell"]

#: Operand width of the ECP5 multiplier cell (signed 18×18).
DSP_WIDTH = 18


class Ecp5Dsp:
    """Platform marker for :meth:`Multiplier.elaborate`: map onto ECP5 ``MULT18X18D`` cells.

    Pass an instance as the ``platform`` of ``amaranth.back.verilog.convert`` (as
    :func:`xbarode.sim.verilog.write_verilog` does with ``platform=``). Only the attribute
    ``dsp == "ecp5"`` is looked at; every other block elaborates as it does without a platform.
    """

    dsp = "ecp5"


#: Multiplier mappings a unit's Verilog can be written with: plain Verilog ("none") or ECP5
#: ``MULT18X18D`` cells with their own registers ("ecp5", what ``xbarode synth`` builds).
DSP_MAPPINGS = ("none", "ecp5")


def dsp_platform(mapping: str):
    """The ``platform`` to elaborate for a multiplier mapping of :data:`DSP_MAPPINGS`:
    :class:`Ecp5Dsp` for "ecp5", None for "none"; ValueError naming the choices otherwise."""
    if mapping not in DSP_MAPPINGS:
        raise ValueError(f"unknown dsp mapping {mapping!r}; choose one of: "
                         f"{', '.join(DSP_MAPPINGS)}")
    return Ecp5Dsp() if mapping == "ecp5" else None


def maps_to_dsp_cell(platform, a_width: int, b_width: int) -> bool:
    """Whether a :class:`Multiplier` of these widths elaborated for ``platform`` is one
    ``MULT18X18D`` (platform :class:`Ecp5Dsp`, both widths at most :data:`DSP_WIDTH`)."""
    return getattr(platform, "dsp", None) == "ecp5" and max(a_width, b_width) <= DSP_WIDTH


class Multiplier(CheckedComponent):
    """Signed multiplier with registered operands and a registered product.

    Parameters
    ----------
    a_width, b_width : int
        Signed operand widths (>= 1).

    Attributes
    ----------
    a : In(signed(a_width))
    b : In(signed(b_width))
    p : Out(signed(a_width + b_width))
        ``a · b`` of two cycles before (exact).

    Notes
    -----
    Latency 2: ``a`` and ``b`` are registered at the first clock edge, their product at the
    second. The registers reset to 0 with the domain (synchronously), on either mapping. On
    :class:`Ecp5Dsp` with both widths at most :data:`DSP_WIDTH`, one ``MULT18X18D`` with
    ``REG_INPUTA_CLK``, ``REG_INPUTB_CLK`` and ``REG_OUTPUT_CLK`` on ``CLK0``.
    """

    @staticmethod
    def check_parameters(a_width: int, b_width: int) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        for name, value in (("a_width", a_width), ("b_width", b_width)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, not {value}")

    def __init__(self, a_width: int, b_width: int):
        self._a_width, self._b_width = a_width, b_width
        super().__init__({"a": In(signed(a_width)), "b": In(signed(b_width)),
                          "p": Out(signed(a_width + b_width))})

    @property
    def a_width(self) -> int:
        """Width of ``a``."""
        return self._a_width

    @property
    def b_width(self) -> int:
        """Width of ``b``."""
        return self._b_width

    def uses_dsp_cell(self, platform) -> bool:
        """Whether elaborating for ``platform`` instantiates a ``MULT18X18D``."""
        return maps_to_dsp_cell(platform, self._a_width, self._b_width)

    def elaborate(self, platform):
        m = Module()
        if not self.uses_dsp_cell(platform):
            a_q, b_q = Signal.like(self.a), Signal.like(self.b)
            m.d.sync += [a_q.eq(self.a), b_q.eq(self.b), self.p.eq(a_q * b_q)]
            return m
        # Sign-extended to the cell's 18 bits; the product's low bits are the exact product.
        a18, b18 = Signal(signed(DSP_WIDTH)), Signal(signed(DSP_WIDTH))
        product = Signal(2 * DSP_WIDTH)
        m.d.comb += [a18.eq(self.a), b18.eq(self.b), self.p.eq(product[:len(self.p)])]
        ports = {f"i_A{k}": a18[k] for k in range(DSP_WIDTH)}
        ports |= {f"i_B{k}": b18[k] for k in range(DSP_WIDTH)}
        ports |= {f"o_P{k}": product[k] for k in range(2 * DSP_WIDTH)}
        for k in range(4):   # one clock, enable and reset; the other three idle
            ports[f"i_CLK{k}"] = ClockSignal() if k == 0 else 0
            ports[f"i_CE{k}"] = 1
            ports[f"i_RST{k}"] = ResetSignal() if k == 0 else 0
        m.submodules.mult = Instance(
            "MULT18X18D",
            p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
            p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
            p_REG_PIPELINE_CLK="NONE", p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0",
            p_REG_OUTPUT_RST="RST0", p_RESETMODE="SYNC", p_GSR="ENABLED",
            i_SIGNEDA=1, i_SIGNEDB=1, i_SOURCEA=0, i_SOURCEB=0, **ports)
        return m
