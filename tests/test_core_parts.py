# amaranth: UnusedElaboratable=no
"""The core's parts on their own: the control signature every op-driven unit shares
(hdl/interface.py) and the core's components (hdl/core_parts.py), each against plain Python,
cycle by cycle. The core's own tests (test_core.py, test_core_training.py) cover them inside
the core against the fixed-point model."""

import pytest
from amaranth import ClockDomain, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from xbarode.hdl.core import Core, CoreOp
from xbarode.hdl.fourier import Dft2d, FourierConv, FourierOp
from xbarode.hdl.interface import ControlSignature
from xbarode.hdl.tile import CrossbarTile, TileOp
from xbarode.model.core_config import CoreConfig
from xbarode.model.fixed import Format

# The Verilog ports of the control set as docs/interface.md names them (a stream X is
# X__valid, X__ready, X__payload), in the order of the signature's members (a stream's
# payload first, as Amaranth's stream.Signature declares it).
CONTROL_PORTS = ["i__payload", "i__valid", "i__ready", "o__payload", "o__valid", "o__ready",
                 "op", "start", "busy", "done", "overflow", "clear"]


def simulate(dut, bench):
    """Run ``bench`` on ``dut`` with a clock."""
    top = Module()
    top.submodules.dut = dut
    top.domains.sync = ClockDomain()
    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def port_names(signature):
    """The Verilog names of a signature's ports, in order (``__`` joins a path)."""
    return ["__".join(str(part) for part in path) for path, _, _ in signature.flatten(
        signature.create())]


def control_ports(signature):
    return [name for name in port_names(signature)
            if name.split("__")[0] in {"i", "o", "op", "start", "busy", "done", "overflow",
                                       "clear"}]


# --- the control signature --------------------------------------------------------------------

def _units():
    fmt = Format(16, 12)
    common = {"data_format": Format(22, 12), "twiddle_format": Format(18, 16),
              "acc_width": 48, "rounding": "nearest"}
    return [
        ("tile", CrossbarTile(rows=3, cols=2, lanes=2, weight_format=fmt, input_format=fmt,
                              output_format=fmt, acc_width=40), TileOp),
        ("dft", Dft2d(2, 3, **common), FourierOp),
        ("fourier-conv", FourierConv(3, 3, spectrum_format=Format(18, 14), **common),
         FourierOp),
        ("core", Core(CoreConfig(image=(2, 3), lanes=2, classes=3, steps=2)), CoreOp),
    ]


@pytest.mark.parametrize("index", range(4), ids=["tile", "dft", "fourier-conv", "core"])
def test_every_op_driven_unit_declares_the_control_signature(index):
    name, unit, op = _units()[index]
    signature = unit.signature
    assert isinstance(signature, ControlSignature), name
    assert signature.op is op
    assert control_ports(signature) == CONTROL_PORTS
    assert signature.members["op"].shape is op


def test_control_signature_places_side_ports_before_and_results_after():
    signature = ControlSignature(CoreOp, 9, 12, side={"side": wiring.In(3)},
                                 results={"cls": wiring.Out(2)})
    assert port_names(signature) == ["side", *CONTROL_PORTS, "cls"]
    flows = {name: member.flow for name, member in signature.members.items()}
    assert flows == {"side": wiring.In, "i": wiring.In, "o": wiring.Out, "op": wiring.In,
                     "start": wiring.In, "busy": wiring.Out, "done": wiring.Out,
                     "overflow": wiring.Out, "clear": wiring.In, "cls": wiring.Out}
    ports = signature.create()
    assert (len(ports.i.payload), len(ports.o.payload)) == (9, 12)
    assert ports.i.payload.shape().signed and ports.o.payload.shape().signed
    assert (signature.word, signature.out_word) == (9, 12)
    assert ControlSignature(TileOp, 7).out_word == 7


@pytest.mark.parametrize(("args", "error", "message"), [
    ((int, 8), TypeError, r"^op must be an enum with a shape, not <class 'int'>$"),
    ((CoreOp, 0), ValueError, r"^word must be >= 1, not 0$"),
    ((CoreOp, 8, -1), ValueError, r"^out_word must be >= 1, not -1$"),
    ((CoreOp, 8.0), TypeError, r"^word must be an integer, not float$"),
    ((CoreOp, True), TypeError, r"^word must be an integer, not bool$"),
])
def test_control_signature_rejects_bad_arguments(args, error, message):
    with pytest.raises(error, match=message):
        ControlSignature(*args)
