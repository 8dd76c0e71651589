"""Run a tile co-simulation plan (:mod:`xbarode.sim.tile_plan`) in Amaranth's simulator."""

from __future__ import annotations

from xbarode.hdl.tile import TileOp

from .streams import op_receive, op_run, op_send, pulse, run_simulation
from .tile_plan import TileParams

__all__ = ["run_plan_amaranth"]


def run_plan_amaranth(params: TileParams, plan: dict, vcd_path=None):
    """Run ``plan`` on the tile in Amaranth's simulator.

    Returns
    -------
    results : list of list of dict
        Per vector and operation: ``out`` (words) and ``overflow`` (the sticky flag).
    cycles : dict
        Measured latency (start to done, inclusive) of each compute operation kind.
    """
    dut = params.component()
    results, cycles = [], {}

    async def testbench(ctx):
        for vector in plan["vectors"]:
            await pulse(ctx, dut.clear)
            await op_send(ctx, dut, TileOp.LOAD_W, vector["weights"])
            answers = []
            for entry in vector["ops"]:
                if "x" in entry:
                    await op_send(ctx, dut, TileOp.LOAD_X, entry["x"])
                if "s" in entry:
                    await op_send(ctx, dut, TileOp.LOAD_S, entry["s"])
                kind = {"forward": TileOp.FORWARD, "transposed": TileOp.TRANSPOSED,
                        "update": TileOp.UPDATE}[entry["op"]]
                cycles[entry["op"]] = await op_run(ctx, dut, kind)
                if entry["op"] == "update":
                    out = await op_receive(ctx, dut, TileOp.READ_W, params.rows * params.cols)
                else:
                    n = params.rows if entry["op"] == "forward" else params.cols
                    out = await op_receive(ctx, dut, TileOp.READ_Y, n)
                answers.append({"out": out, "overflow": ctx.get(dut.overflow)})
            results.append(answers)

    run_simulation(dut, testbench, vcd_path)
    return results, cycles
