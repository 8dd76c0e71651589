"""Run a Fourier-unit co-simulation plan (:mod:`xbarode.sim.fourier_plan`) in Amaranth's
simulator."""

from __future__ import annotations

from xbarode.hdl.fourier import FourierOp

from .fourier_plan import FourierParams
from .latency import OperationTimeout, stream_limit
from .streams import TAIL, HandshakeError, op_receive, op_run, op_send, pulse, run_simulation

__all__ = ["run_plan_amaranth"]


def run_plan_amaranth(params: FourierParams, plan: dict, vcd_path=None):
    """Run ``plan`` on the unit in Amaranth's simulator.

    Returns
    -------
    results : list of list of dict
        Per vector, per ``receive`` step (Hadamard: one per vector): ``out`` (words) and
        ``overflow`` (the sticky flag).
    cycles : dict
        Measured latency (start to done, inclusive) of each ``run`` step, by operation name;
        for the Hadamard unit, ``elements`` (cycles from the first element in to the last
        out, per vector).
    """
    dut = params.component()
    results, cycles = [], {}

    async def op_testbench(ctx):
        for vector in plan["vectors"]:
            await pulse(ctx, dut.clear)
            answers = []
            for step in vector["steps"]:
                if "send" in step:
                    await op_send(ctx, dut, FourierOp[step["send"]], step["words"])
                elif "run" in step:
                    cycles[step["run"]] = await op_run(ctx, dut, FourierOp[step["run"]])
                else:
                    out = await op_receive(ctx, dut, FourierOp[step["receive"]], step["count"])
                    answers.append({"out": out, "overflow": ctx.get(dut.overflow)})
            results.append(answers)

    async def hadamard_testbench(ctx):
        for vector in plan["vectors"]:
            await pulse(ctx, dut.clear)
            await pulse(ctx, dut.restart)
            ctx.set(dut.load.valid, 1)
            for re, im in vector["spectrum"]:
                ctx.set(dut.load.payload, {"re": re, "im": im})
                await ctx.tick()
            ctx.set(dut.load.valid, 0)
            out = []
            began = None
            elements = [tuple(e) for e in vector["elements"]]
            ctx.set(dut.o.ready, 1)
            sent = 0
            ticks = 0
            # Offer an element every cycle and take every product, until all are back.
            while len(out) < 2 * len(elements):
                if ticks >= stream_limit(2 * len(elements)):
                    raise OperationTimeout(f"Hadamard unit: {len(out) // 2} of "
                                           f"{len(elements)} products within {ticks} cycles")
                if sent < len(elements):
                    ctx.set(dut.i.valid, 1)
                    re, im = elements[sent]
                    ctx.set(dut.i.payload, {"re": re, "im": im})
                else:
                    ctx.set(dut.i.valid, 0)
                _, _, i_ready, o_valid, payload = await ctx.tick().sample(
                    dut.i.ready, dut.o.valid, dut.o.payload)
                ticks += 1
                if sent < len(elements) and i_ready:
                    began = ticks if began is None else began
                    sent += 1
                if o_valid:
                    out.extend([payload.re, payload.im])
            ctx.set(dut.i.valid, 0)
            cycles["elements"] = ticks - began + 1
            results.append([{"out": out, "overflow": ctx.get(dut.overflow)}])
            # Every element has come back: no further product may be offered.
            for extra in range(TAIL):
                _, _, o_valid = await ctx.tick().sample(dut.o.valid)
                if o_valid:
                    raise HandshakeError(f"Hadamard unit: a surplus product after the "
                                         f"{len(elements)} expected ({extra + 1} cycles "
                                         "after the last)")
            ctx.set(dut.o.ready, 0)

    run_simulation(dut, hadamard_testbench if params.unit == "hadamard" else op_testbench,
                   vcd_path)
    return results, cycles
