"""Hardware units as the command line sees them: options, Verilog, co-simulation, synthesis.

Each unit (for now the crossbar ``tile``) is one :class:`Unit` in :data:`UNITS`: how to read
its parameters from the command line, how to build its Amaranth component, and how to
co-simulate it against the fixed-point model on a given simulator. ``xbarode generate``,
``cosim`` and ``synth`` are generic over this registry.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["SIMULATORS", "UNITS", "Unit", "cosim", "generate", "synth"]

#: Simulators of ``xbarode cosim``.
SIMULATORS = ("amaranth", "verilator", "icarus")


@dataclass(frozen=True)
class Unit:
    """One hardware unit of the command line."""

    name: str
    help: str
    add_arguments: Callable       # (parser) -> None
    params: Callable              # (args) -> parameter object (validated)
    component: Callable           # (params) -> Amaranth component
    top: str                      # Verilog module name
    cosim: Callable               # (params, vectors, seed, simulator, out_dir) -> dict


# --- the crossbar tile -----------------------------------------------------------------------

def _tile_arguments(parser) -> None:
    from xbarode.model import ROUNDINGS

    group = parser.add_argument_group("tile")
    group.add_argument("--rows", type=int, default=64, help="rows of W (default: %(default)s)")
    group.add_argument("--cols", type=int, default=64, help="columns of W (default: %(default)s)")
    group.add_argument("--lanes", type=int, default=None,
                       help="multipliers working in parallel, 1..cols (default: cols)")
    group.add_argument("--width", type=int, default=16,
                       help="word width of weights, inputs and outputs (default: %(default)s)")
    group.add_argument("--frac", type=int, default=12,
                       help="fractional bits of every word (default: %(default)s)")
    group.add_argument("--rounding", choices=ROUNDINGS, default="nearest",
                       help="rounding of every narrowing (default: %(default)s)")
    group.add_argument("--eta-shift", type=int, default=4,
                       help="the update's learning rate is 2^-ETA_SHIFT (default: %(default)s)")
    group.add_argument("--acc-width", type=int, default=48,
                       help="accumulator width (default: %(default)s)")
    group.add_argument("--lfsr-seed", type=lambda t: int(t, 0), default=0xACE1ACE1,
                       help="seed of the stochastic-rounding LFSR (default: 0xace1ace1)")


def _tile_params(args):
    from xbarode.sim.tile_plan import TileParams

    params = TileParams(rows=args.rows, cols=args.cols,
                        lanes=args.cols if args.lanes is None else args.lanes,
                        width=args.width, frac=args.frac, rounding=args.rounding,
                        eta_shift=args.eta_shift, acc_width=args.acc_width,
                        lfsr_seed=args.lfsr_seed)
    params.component()  # validates every parameter with the component's own messages
    return params


def _tile_cosim(params, vectors: int, seed: int, simulator: str, out_dir: Path) -> dict:
    from xbarode.sim.tile_plan import compare, make_plan, model_results

    plan = make_plan(params, vectors, seed)
    expected = model_results(params, plan)
    waves = None
    if simulator == "amaranth":
        from xbarode.sim.tile_amaranth import run_plan_amaranth

        got, cycles = run_plan_amaranth(params, plan)
        report = compare(expected, got)
        if report["mismatches"]:
            waves = out_dir / "tile.vcd"
            out_dir.mkdir(parents=True, exist_ok=True)
            run_plan_amaranth(params, plan, vcd_path=waves)
    else:
        from xbarode.sim.runner import run_cocotb
        from xbarode.sim.verilog import write_verilog

        verilog = write_verilog(params.component(), "crossbar_tile", out_dir)
        result = run_cocotb([verilog], "crossbar_tile", "xbarode.sim.cocotb_tile", simulator,
                            data={"plan": plan, "expected": expected}, waves="on_failure",
                            test_dir=out_dir / f"run-{simulator}", seed=seed, check=False)
        got = result.outputs.get("results")
        cycles = result.outputs.get("cycles", {})
        if got is None or len(got) != len(expected):
            raise RuntimeError(
                f"the {simulator} simulation produced no complete results; see "
                f"{result.log}" + "".join(f"\n  {c['name']}: {c['message']}"
                                          for c in result.testcases if c["message"]))
        report = compare(expected, got)
        waves = result.waves
    return {"mismatches": report["mismatches"], "compared": report["compared"],
            "first_mismatch": report["first"], "cycles": cycles,
            "cycles_per_mvm": cycles.get("forward"),
            "waveform": None if waves is None else str(waves)}


def _tile_component(params):
    return params.component()


UNITS = {
    "tile": Unit("tile", "the crossbar tile: W x, Wᵀ y, rank-1 update", _tile_arguments,
                 _tile_params, _tile_component, "crossbar_tile", _tile_cosim),
}


# --- the generic commands ---------------------------------------------------------------------

def generate(unit: Unit, params, out: Path) -> dict:
    """Write the unit's Verilog and a JSON manifest of parameters and ports into ``out``."""
    from xbarode.sim.verilog import port_manifest, write_verilog

    component = unit.component(params)
    verilog = write_verilog(component, unit.top, out)
    manifest = {
        "unit": unit.name,
        "top": unit.top,
        "verilog": verilog.name,
        "parameters": asdict(params) if hasattr(params, "__dataclass_fields__") else params,
        "ports": port_manifest(component, verilog),
        "clock": "clk (rising edge); rst is a synchronous active-high reset",
    }
    extra = getattr(component, "manifest", None)
    if callable(extra):
        manifest.update(extra())
    path = out / f"{unit.top}.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, path)
    return {"verilog": str(verilog), "manifest": str(path), "ports": len(manifest["ports"])}


def cosim(unit: Unit, params, *, vectors: int, seed: int, simulator: str,
          out: Path | None) -> dict:
    """Co-simulate ``vectors`` random vector sets; every word and flag against the model.

    ``out`` receives the Verilog, simulator logs and, on a mismatch, a waveform (a new
    temporary folder when None).
    """
    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator {simulator!r}; choose one of {list(SIMULATORS)}")
    out = Path(tempfile.mkdtemp(prefix=f"xbarode-cosim-{unit.name}-")) if out is None \
        else Path(out)
    start = time.perf_counter()
    result = unit.cosim(params, vectors, seed, simulator, out)
    return {"unit": unit.name, "simulator": simulator, "vectors": vectors, "seed": seed,
            **result, "seconds": time.perf_counter() - start}


def synth(unit: Unit, params, *, device: str, out: Path, freq_mhz: float, seed: int) -> dict:
    """Synthesise, place and route the unit; resources and fmax."""
    from xbarode.synth import synthesize

    report = synthesize(unit.component(params), unit.top, device=device, out_dir=out,
                        seed=seed, freq_mhz=freq_mhz)
    return {"unit": unit.name, **report}
