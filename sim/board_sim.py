"""The board in simulation: the host driver's bytes through the board top level's UART pins.

:class:`BoardHarness` wraps :class:`~xbarode.hdl.board.BoardTop` with the host's side of the
serial line: a byte FIFO into a UART transmitter on the board's ``rx``, a UART receiver on
its ``tx`` into a byte FIFO. The cocotb test (:mod:`xbarode.board_cocotb`) only pushes
bytes into one FIFO and pulls them from the other, while the UARTs run free on Verilator;
the driver (:class:`xbarode.host.Board`) runs unchanged in a thread bridged into the
simulation. :func:`simulate_board` builds and runs it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from amaranth import Module
from amaranth.lib import fifo, stream
from amaranth.lib.wiring import In, Out

from xbarode.hdl.board import BoardTop
from xbarode.hdl.checked import CheckedComponent
from xbarode.hdl.uart import UartRx, UartTx
from xbarode.model.core_config import CoreConfig

__all__ = ["SIM_DIVISOR", "SIM_TIMEOUT", "TOP", "BoardHarness", "simulate_board"]

TOP = "xbarode_board"
#: Clock cycles per bit in simulation.
SIM_DIVISOR = 4
#: The board's frame timeout in simulation, in cycles.
SIM_TIMEOUT = 2000
#: Simulated time is reported at the ULX3S's clock.
CLOCK_HZ = 25_000_000


class BoardHarness(CheckedComponent):
    """:class:`~xbarode.hdl.board.BoardTop` with the host's end of the serial line.

    Parameters
    ----------
    config : CoreConfig
    divisor, timeout : int
        As :class:`~xbarode.hdl.board.BoardTop`'s (both UARTs use ``divisor``).
    weights : mapping, optional
        Weights built into the core (:class:`~xbarode.hdl.board.BoardTop`'s).

    Attributes
    ----------
    host_in : In(stream.Signature(8))
        Bytes from the host (a 1024-byte FIFO, then the UART onto the board's ``rx``).
    host_out : Out(stream.Signature(8))
        Bytes from the board's ``tx`` (received into a 1024-byte FIFO).
    leds : Out(8)

    Notes
    -----
    Latency: a byte takes ``10·divisor`` cycles on the line plus a few in the FIFOs and
    synchronisers.
    """

    @staticmethod
    def check_parameters(config: CoreConfig, divisor: int, timeout: int, *,
                         weights=None) -> None:
        """The board top level's checks."""
        BoardTop.check_parameters(config, divisor, timeout, weights=weights)

    def __init__(self, config: CoreConfig, divisor: int, timeout: int, *, weights=None):
        self._board = (config, divisor, timeout)
        self._weights = weights
        super().__init__({"host_in": In(stream.Signature(8)),
                          "host_out": Out(stream.Signature(8)), "leds": Out(8)})

    @property
    def divisor(self) -> int:
        """Clock cycles per bit."""
        return self._board[1]

    def elaborate(self, platform):
        m = Module()
        config, divisor, timeout = self._board
        m.submodules.board = board = BoardTop(config, divisor, timeout, weights=self._weights)
        m.submodules.to_board = to_board = fifo.SyncFIFOBuffered(width=8, depth=1024)
        m.submodules.from_board = from_board = fifo.SyncFIFOBuffered(width=8, depth=1024)
        m.submodules.host_tx = host_tx = UartTx(divisor)
        m.submodules.host_rx = host_rx = UartRx(divisor)
        m.d.comb += [
            to_board.w_data.eq(self.host_in.payload), to_board.w_en.eq(self.host_in.valid),
            self.host_in.ready.eq(to_board.w_rdy),
            host_tx.i.payload.eq(to_board.r_data), host_tx.i.valid.eq(to_board.r_rdy),
            to_board.r_en.eq(host_tx.i.ready),
            board.rx.eq(host_tx.tx), host_rx.rx.eq(board.tx),
            from_board.w_data.eq(host_rx.o.payload), from_board.w_en.eq(host_rx.o.valid),
            host_rx.o.ready.eq(1),
            self.host_out.payload.eq(from_board.r_data),
            self.host_out.valid.eq(from_board.r_rdy), from_board.r_en.eq(self.host_out.ready),
            self.leds.eq(board.leds),
        ]
        return m


def simulate_board(config: CoreConfig, params: dict, images, *, faults: bool = False,
                   out_dir="build/board", divisor: int = SIM_DIVISOR,
                   timeout: int = SIM_TIMEOUT, built_in: bool = False) -> dict:
    """Run the host driver against the simulated board (Verilator) on ``images``.

    The driver loads the weights and classifies every image (:func:`xbarode.board.run_images`);
    with ``faults`` it first sends damaged frames (:func:`xbarode.board.fault_frames`); with
    ``built_in`` the weights are built into the board's core
    (:func:`xbarode.sim.core_plan.weight_load_words`) and the driver sends none.

    Returns
    -------
    dict
        :func:`xbarode.board.run_images`'s result (``results`` per image, ``bytes``,
        ``seconds`` of simulated time at 25 MHz, ``retried``), ``faults`` (with ``faults``),
        ``build_seconds``, ``wall_seconds``, ``log``.
    """
    from .runner import run_cocotb, run_folder
    from .verilog import write_verilog

    started = time.perf_counter()
    # Absolute: the cocotb test runs in its own folder and reads the files named here.
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    from .core_plan import weight_load_words

    weights = weight_load_words(config, params) if built_in else None
    verilog = write_verilog(BoardHarness(config, divisor, timeout, weights=weights), TOP,
                            out_dir)
    run_dir = run_folder(out_dir, "verilator")
    config_file = Path(run_dir) / "core.toml"
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    config_file.write_text(config.to_toml())
    data = {"config": str(config_file),
            "params": {k: [float(x) for x in _flat(v)] for k, v in params.items()},
            "shapes": {k: list(_shape(v)) for k, v in params.items()},
            "images": [[float(x) for x in row] for row in images], "faults": faults,
            "built_in": built_in,
            "frame_timeout_cycles": timeout, "clock_hz": CLOCK_HZ}
    run = run_cocotb([verilog], TOP, "xbarode.board_cocotb", "verilator", data=data,
                     test_dir=run_dir, check=False)
    result = run.outputs.get("run")
    if result is None:
        messages = "".join(f"\n  {c['name']}: {c['message']}" for c in run.testcases
                           if c["message"])
        raise RuntimeError(f"the simulated board returned nothing; see {run.log}{messages}")
    result = dict(result)
    result.update({"build_seconds": run.build_seconds, "log": str(run.log),
                   "wall_seconds": time.perf_counter() - started})
    (Path(run_dir) / "run.json").write_text(json.dumps(result))
    return result


def _flat(value):
    import numpy as np

    return np.asarray(value, dtype=np.float64).ravel()


def _shape(value):
    import numpy as np

    return np.shape(value)
