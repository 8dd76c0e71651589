"""cocotb test of the simulated board (:func:`xbarode.sim.board_sim.simulate_board` runs it).

The host driver runs unchanged in a thread bridged into the simulation (``cocotb.bridge``);
its transport, :class:`SimTransport`, pushes bytes into the harness's ``host_in`` FIFO and
pulls them from ``host_out`` — one Python step per byte, while the UARTs and the core run
free. Times are simulated cycles at the ULX3S's 25 MHz.
"""

from __future__ import annotations

import cocotb
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, with_timeout
from cocotb.utils import get_sim_time

from xbarode.host import Transport
from xbarode.sim.cocotb_support import CLOCK_PERIOD_NS, record, reset, start_clock, test_data

__all__ = ["SimTransport"]


class SimTransport(Transport):
    """The host's bytes through the simulated serial line (see the module docstring).

    Parameters
    ----------
    dut : cocotb handle of :class:`~xbarode.sim.board_sim.BoardHarness`
    clock_hz : float
        The board clock the simulated cycles stand for (times in seconds are cycles / it).
    """

    def __init__(self, dut, clock_hz: float):
        self._dut, self._hz = dut, clock_hz
        self.cut = False           # a cut cable: writes are dropped

    def _cycles(self, seconds: float) -> int:
        return max(1, round(seconds * self._hz))

    async def _now(self) -> float:
        return get_sim_time("ns") / CLOCK_PERIOD_NS / self._hz

    async def _write(self, data: bytes) -> None:
        dut = self._dut
        k = 0
        while k < len(data):
            await FallingEdge(dut.clk)
            if int(dut.host_in__ready.value):
                dut.host_in__payload.value = data[k]
                dut.host_in__valid.value = 1
                k += 1
            else:
                dut.host_in__valid.value = 0
        await FallingEdge(dut.clk)
        dut.host_in__valid.value = 0

    async def _read(self, n: int, cycles: int) -> bytes:
        dut = self._dut
        out = bytearray()
        end = get_sim_time("ns") + cycles * CLOCK_PERIOD_NS
        while len(out) < n:
            await FallingEdge(dut.clk)
            if int(dut.host_out__valid.value):
                out.append(int(dut.host_out__payload.value))
                dut.host_out__ready.value = 1
                continue
            dut.host_out__ready.value = 0
            left = end - get_sim_time("ns")
            if left <= 0:
                break
            try:
                await with_timeout(RisingEdge(dut.host_out__valid), left, "ns")
            except cocotb.triggers.SimTimeoutError:
                break
        await FallingEdge(dut.clk)
        dut.host_out__ready.value = 0
        return bytes(out)

    async def _quiet(self, cycles: int) -> None:
        dut = self._dut
        await ClockCycles(dut.clk, cycles)
        await FallingEdge(dut.clk)
        while int(dut.host_out__valid.value):
            dut.host_out__ready.value = 1
            await FallingEdge(dut.clk)
        dut.host_out__ready.value = 0

    def write(self, data: bytes) -> None:
        if not self.cut:
            resume(self._write)(bytes(data))

    def read(self, n: int, timeout: float) -> bytes:
        return resume(self._read)(n, self._cycles(timeout))

    def quiet(self, seconds: float) -> None:
        resume(self._quiet)(self._cycles(seconds))

    def seconds(self) -> float:
        return resume(self._now)()


@cocotb.test()
async def board_run(dut):
    """Load the weights and classify the images through the driver; with ``faults``, first
    the damaged frames of :func:`xbarode.board.fault_frames`."""
    from xbarode.board import fault_frames, run_images_from_data

    data = test_data()
    dut.host_in__valid.value = 0
    dut.host_out__ready.value = 0
    start_clock(dut)
    await reset(dut, 2)
    transport = SimTransport(dut, data["clock_hz"])
    if data.get("faults"):
        faults = await bridge(fault_frames)(transport, data)
        record("faults", faults)
    result = await bridge(run_images_from_data)(transport, data)
    if data.get("faults"):
        result["faults"] = faults
    record("run", result)
