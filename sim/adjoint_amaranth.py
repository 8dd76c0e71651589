"""Run a training plan (:mod:`xbarode.sim.adjoint_plan`) on the core in Amaranth's simulator."""

from __future__ import annotations

from xbarode.hdl.core import Core, CoreOp

from .core_plan import weight_loads
from .streams import op_receive, op_run, op_send, pulse, run_simulation

__all__ = ["run_plan_amaranth"]


def run_plan_amaranth(config, plan: dict, vcd_path=None):
    """Run ``plan`` on the core in Amaranth's simulator.

    ``config`` is the core's :class:`~xbarode.model.core_config.CoreConfig`, or anything holding it
    as ``.config`` (the command line's ``AdjointParams``).

    Returns
    -------
    results : list of dict
        Per image ``kind``, ``logits``, ``grads``, ``overflow``; per SGD step ``kind``,
        ``weights``, ``overflow``.
    cycles : dict
        ``run`` and ``backward`` (RUN and BACKWARD latency per image), ``apply`` (APPLY
        latency per step).
    """
    dut = Core(getattr(config, "config", config))
    results, cycles = [], {"run": [], "backward": [], "apply": []}
    apply_after, read_after = set(plan["apply_after"]), set(plan["read_weights_after"])

    async def testbench(ctx):
        for op, words in weight_loads(plan):
            await op_send(ctx, dut, op, words)
        for index, image in enumerate(plan["images"]):
            await pulse(ctx, dut.clear)
            await op_send(ctx, dut, CoreOp.LOAD_IMAGE, image["x"])
            cycles["run"].append(await op_run(ctx, dut, CoreOp.RUN))
            logits = await op_receive(ctx, dut, CoreOp.READ_LOGITS, plan["classes"])
            await op_send(ctx, dut, CoreOp.LOAD_GRAD, image["grad_logits"])
            cycles["backward"].append(await op_run(ctx, dut, CoreOp.BACKWARD))
            entry = {"kind": "image", "logits": logits, "overflow": ctx.get(dut.overflow)}
            if plan["read_grads"]:
                entry["grads"] = await op_receive(ctx, dut, CoreOp.READ_GRAD,
                                                  plan["grad_words"])
            results.append(entry)
            if index in apply_after:
                await pulse(ctx, dut.clear)
                cycles["apply"].append(await op_run(ctx, dut, CoreOp.APPLY))
                entry = {"kind": "apply", "overflow": ctx.get(dut.overflow)}
                if index in read_after:
                    entry["weights"] = await op_receive(ctx, dut, CoreOp.READ_WEIGHTS,
                                                        plan["weight_words"])
                results.append(entry)

    run_simulation(dut, testbench, vcd_path)
    return results, cycles
