"""Constructor checks before the object exists (hdl/checked.py): every unit and part refuses
bad arguments in ``__new__``, so a refused one leaves no elaboratable behind for Amaranth's
``UnusedElaboratable``; and each class's ``check_parameters`` takes its constructor's
parameters."""

import gc
import inspect
import warnings

import pytest
from amaranth import signed
from amaranth.hdl import Fragment, UnusedElaboratable
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from toy_design import ToyDot
from xbarode.hdl.adder_tree import AdderTree
from xbarode.hdl.board import BoardTop, CommandEngine
from xbarode.hdl.channel_mix import ChannelMixUnit
from xbarode.hdl.checked import CheckedComponent, CheckedElaboratable
from xbarode.hdl.core import Core
from xbarode.hdl.core_adjoint import AdjointController
from xbarode.hdl.core_chain import DirectChain, FourierChain
from xbarode.hdl.core_forward import ForwardController
from xbarode.hdl.core_parts import HostPort, ImageBuffer, VectorBanks
from xbarode.hdl.core_pool import PoolUnit
from xbarode.hdl.core_pulses import PairStore
from xbarode.hdl.dsp import Multiplier
from xbarode.hdl.fourier import Dft2d, DftArray, FourierConv
from xbarode.hdl.fourier_bank import FourierBank
from xbarode.hdl.hadamard import HadamardUnit
from xbarode.hdl.lane_group import LaneGroup
from xbarode.hdl.link import FrameParser
from xbarode.hdl.output_stage import ForwardOutput
from xbarode.hdl.pulses import PulseTrains
from xbarode.hdl.readout import ChainReadout, MuxReadout
from xbarode.hdl.rounding import LfsrBank
from xbarode.hdl.tap_walker import TapWalker
from xbarode.hdl.tile import CrossbarTile
from xbarode.hdl.uart import UartRx, UartTx
from xbarode.model.core_config import CoreConfig
from xbarode.model.fixed import Format
from xbarode.sim.board_sim import BoardHarness
from xbarode.sim.formal import ProtocolHarness

F8, F16 = Format(8, 4), Format(16, 12)
WIDTHS = dict.fromkeys(("a_s", "b_s", "a_y", "b_y", "a_x", "b_x", "a_r", "c_r"), 8)
GROUP = {"first": 0, "count": 2, "lanes": 2, "depth": 4, "weight_width": 8,
         "operand_width": 8, "lane_width": 20, "shift": 4, "width": 8, "out_width": 8,
         "update_shift": 4, "rounding": "nearest"}
CHAIN = {"m": 5, "lanes": 2, "act_width": 6, "u_width": 8, "s_width": 6, "x_width": 7,
         "r_width": 9}
FORWARD = {"m": 5, "lanes": 2, "steps": 3, "classes": 4, "method": "euler",
           "neumann_terms": 0, "max_iter": 0, "tol": 0, "state_width": 8, "act_width": 9,
           "x_width": 8, "r_width": 8, "c_width": 9}
HOST = {"m": 5, "lanes": 2, "steps": 3, "classes": 4, "word": 12, "out_word": 14,
        "state_width": 10, "act_width": 9, "grad_width": 11}
DFT = {"data_format": Format(22, 12), "twiddle_format": Format(18, 16)}

#: One refused construction of every checked class: (class, args, keyword arguments), one
#: argument bad, the others good.
REFUSED = [
    (AdderTree, (), {"width": 8, "count": 3, "stages": -1}),
    (Multiplier, (16, 0), {}),
    (MuxReadout, (), {"lanes": 2, "width": 4, "w_width": 8, "y_width": 8}),
    (ChainReadout, (), {"lanes": 0, "width": 8, "w_width": 8, "y_width": 8}),
    (ForwardOutput, (), {"rows": 2, "sum_width": 12, "acc_width": 14, "shift": 3,
                         "width": 6, "out_width": 6, "rounding": "up"}),
    (LaneGroup, (), {**GROUP, "count": 3}),
    (TapWalker, (), {"taps": [[0, 1, 3]], "rows": 3, "cols": 3, "lanes": 2,
                     "weight_width": 8, "acc_width": 12, "shift": 3, "rounding": "nearest"}),
    (LfsrBank, (), {"draws": 2, "bits": 8, "steps": {3}}),
    (PulseTrains, (), {"rows": 2, "cols": 2, "lanes": 1, "width": 8, "pulses": 3,
                       "row_seed": 1, "col_seed": 2}),
    (CrossbarTile, (), {"rows": 4, "cols": 4, "lanes": 5, "weight_format": F16,
                        "input_format": F16, "output_format": F16}),
    (DftArray, (0,), DFT),
    (Dft2d, (4, 4), {**DFT, "acc_width": 30}),
    (FourierConv, (4, 4), DFT),
    (HadamardUnit, (), {"length": 0, "x_format": F16, "spectrum_format": F16,
                        "out_format": F16}),
    (FourierBank, (3, 3), {**DFT, "spectrum_format": F16, "channels_in": 2,
                           "channels_out": 0}),
    (ChannelMixUnit, (), {"length": 2, "channels_in": 0, "channels_out": 2, "x_format": F16,
                          "spectrum_format": F16, "out_format": F16}),
    (VectorBanks, (), {"lanes": 2, "depth": 0, "width": 8}),
    (ImageBuffer, (), {"m": 5, "lanes": 2, "width": 8.0}),
    (HostPort, (), {**HOST, "fourier": True, "training": True}),
    (DirectChain, (), {**CHAIN, "r_width": 0}),
    (FourierChain, (), {"m": 5, "lanes": 2, "state_format": F8, "act_format": F8,
                        "data_format": (14, 5), "h_shift": 2, "rounding": "nearest",
                        "lfsr_seed": 1, "unit_word": 16}),
    (ForwardController, (), {**FORWARD, "x_width": 0}),
    (PoolUnit, (), {"height": 4, "width": 6, "channels": 2, "factor": 4, "lanes": 3,
                    "lanes_c": 3, "state_width": 16, "rounding": "nearest", "lfsr_seed": 1}),
    (PairStore, (), {"cols": 3, "lanes": 2, "slots": 4, "stride": 2, "s_width": 8,
                     "x_width": 8, "s_port": 8, "x_port": 8, "rows": 0}),
    (AdjointController, (), {"m": 5, "lanes": 2, "steps": 3, "method": "euler",
                             "neumann_terms": 0, "state_width": 8, "grad_width": 8,
                             "widths": {**WIDTHS, "c_r": 0}}),
    (Core, ({"image": (8, 8)},), {}),
    (Core, (CoreConfig(image=(2, 2), classes=2, steps=1, acc_width=20),), {}),
    (ProtocolHarness, (None, {}, ["idle"]), {}),
    (ToyDot, (), {"width": 1, "length": 3}),
    (UartRx, (3,), {}),
    (UartTx, (4.0,), {}),
    (FrameParser, (0,), {}),
    (CommandEngine, (wiring.Signature({"i": In(stream.Signature(signed(16))),
                                       "o": Out(stream.Signature(signed(16)))}),
                     [{"name": "X", "code": 16, "words_in": 0, "words_out": 0}], b""), {}),
    (BoardTop, (CoreConfig(image=(2, 3), classes=3), 25, 0), {}),
    (BoardHarness, (CoreConfig(image=(2, 3), classes=3), 2, 100), {}),
]


def _checked_classes():
    """Every subclass of CheckedElaboratable in xbarode (all its hardware modules are
    imported above) that is built, not a private base; and the toy design."""
    found, todo = [], [CheckedElaboratable]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if (cls.__module__.startswith("xbarode.") or cls is ToyDot) and \
                cls not in (CheckedElaboratable, CheckedComponent) and \
                not cls.__name__.startswith("_"):
            found.append(cls)
    return sorted(found, key=lambda cls: cls.__name__)


def test_every_checked_class_is_refused_here():
    assert {cls for cls, _, _ in REFUSED} == set(_checked_classes())


def test_a_refused_unit_leaves_no_elaboratable():
    # Amaranth warns about unused elaboratables only once something has been elaborated.
    Fragment.get(AdderTree(width=2, count=2), None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for cls, args, kwargs in REFUSED:
            with pytest.raises((TypeError, ValueError)):
                cls(*args, **kwargs)
        gc.collect()
    unused = [str(w.message) for w in caught if issubclass(w.category, UnusedElaboratable)]
    assert unused == []


@pytest.mark.parametrize("cls", _checked_classes(), ids=lambda cls: cls.__name__)
def test_check_parameters_takes_the_constructors_parameters(cls):
    def parameters(function, skip):
        return [(p.name, p.kind, p.default)
                for p in list(inspect.signature(function).parameters.values())[skip:]]

    assert parameters(cls.check_parameters, 0) == parameters(cls.__init__, 1)
