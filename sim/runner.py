"""Build generated Verilog for a simulator and run a cocotb test module on it.

:func:`run_cocotb` wraps :func:`cocotb_tools.runner.get_runner` (``build()`` then ``test()``)
with what the project needs on top:

- one build folder per design and parameter set, named by a hash of the Verilog text, the
  simulator, its version and the build options, so a design is compiled once and reused; the
  build compiles copies of the sources taken when the hash was computed (a file rewritten
  meanwhile by another process cannot slip into a build under the wrong hash), and its stamp
  records a checksum of the simulator binary, verified before each reuse (a damaged binary is
  rebuilt; an interrupted build has no stamp and is rebuilt);
- one run folder per call (:func:`run_folder`: a run id), so concurrent runs never share
  their data, results or logs;
- test data passed as one JSON file (path in ``XBARODE_COCOTB_DATA``) and results coming back
  through another (``XBARODE_COCOTB_OUTPUT``); see :mod:`xbarode.sim.cocotb_support`;
- the results XML parsed into pass/fail counts and failure messages, and a
  :class:`CosimError` raised on failure with those messages, the simulator log's tail and the
  waveform path;
- waveforms on request, or only for a failing run (``waves="on_failure"``: the failing test
  is run again, same data and seed, on a build with tracing): FST from Icarus, VCD from
  Verilator (its FST writer would need the system's lz4 headers).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

from .toolchain import SIMULATORS, ensure_simulator

__all__ = ["CosimError", "CosimResult", "default_build_root", "run_cocotb", "run_folder"]

DATA_ENV = "XBARODE_COCOTB_DATA"
OUTPUT_ENV = "XBARODE_COCOTB_OUTPUT"

# Amaranth writes no `timescale; cocotb's clocks and timers need one.
TIMESCALE = ("1ns", "1ps")

# Verilator's lint warnings stop the build by default; Amaranth's generated Verilog is known
# good, so they are kept in the build log instead.
# Amaranth's Verilog is Verilog-2005 (Yosys's non-SystemVerilog mode): each ``always @*`` block
# reads a register declared ``reg trigger = 0`` so that it runs once at time 0. In Verilog-2005
# that initialiser is an x -> 0 event; in SystemVerilog (cocotb passes -g2012) it happens before
# time 0 without an event, so a combinational block whose inputs never change (a value that
# depends only on a register that keeps its reset value) stays X for the whole run. The last
# -g wins.
ICARUS_ARGS = ("-g2005",)
# cocotb's own Icarus dump module is SystemVerilog (a ``string``); this one is Verilog-2005.
_ICARUS_DUMP_TOP = "xbarode_iverilog_dump"
_ICARUS_DUMP = """module xbarode_iverilog_dump();
  reg [8*4096-1:0] path;
  initial begin
    if ($value$plusargs("dumpfile_path=%s", path))
      $dumpfile(path);
    $dumpvars(0, {toplevel});
  end
endmodule
"""
VERILATOR_ARGS = ("-Wno-fatal",)

_STAMP = "build.done"


class CosimError(AssertionError):
    """A co-simulation that did not pass: build error, failing cocotb test or crash.

    Attributes
    ----------
    result : CosimResult or None
        The parsed results, when the simulation got as far as writing them.
    """

    def __init__(self, message, result=None):
        super().__init__(message)
        self.result = result


@dataclass
class CosimResult:
    """What one :func:`run_cocotb` call did.

    Attributes
    ----------
    simulator, toplevel : str
    tests, failed, skipped : int
        Counts from the results XML (errors count as failed).
    testcases : list of dict
        ``name``, ``status`` (``"passed"``, ``"failed"``, ``"error"``, ``"skipped"``),
        ``message`` (the failure's, else ``""``), ``seconds`` (wall clock), ``sim_time_ns``.
    outputs : dict
        What the cocotb tests stored with ``cocotb_support.record``.
    build_dir, test_dir, results_xml, log : Path
        The build folder (shared by all runs of this design), the folder the test ran in, the
        results XML and the simulator's output.
    waves : Path or None
        The waveform file (FST from Icarus, VCD from Verilator), if one was written.
    built : bool
        Whether this call compiled the design (False: an earlier build was reused).
    build_seconds, test_seconds : float
    seed : int
    """

    simulator: str
    toplevel: str
    tests: int
    failed: int
    skipped: int
    testcases: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)
    build_dir: Path | None = None
    test_dir: Path | None = None
    results_xml: Path | None = None
    log: Path | None = None
    waves: Path | None = None
    built: bool = False
    build_seconds: float = 0.0
    test_seconds: float = 0.0
    seed: int = 0

    @property
    def passed(self):
        return self.tests - self.failed - self.skipped

    @property
    def ok(self):
        """Every test ran and passed: a run with no test, or whose tests were all skipped,
        checked nothing and is not ok."""
        return self.tests > 0 and self.failed == 0 and self.skipped < self.tests


def default_build_root():
    """Where build folders go unless ``build_dir`` is given: ``$XBARODE_BUILD_DIR``, else
    ``$XDG_CACHE_HOME/xbarode/cosim`` (``~/.cache/xbarode/cosim``)."""
    if os.environ.get("XBARODE_BUILD_DIR"):
        return Path(os.environ["XBARODE_BUILD_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "xbarode" / "cosim"


def run_folder(out_dir, simulator):
    """A new, unique run folder ``OUT_DIR/run-SIMULATOR-ID`` (not created): the id is the
    time, the process id and random bits, so two runs started in one folder never share it."""
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(3)}"
    return Path(out_dir) / f"run-{simulator}-{run_id}"


def _build_key(texts, simulator, version, toplevel, parameters, waves, build_args, build_env):
    digest = hashlib.sha256()
    for part in (simulator, version, toplevel, json.dumps(sorted(parameters.items())),
                 str(bool(waves)), json.dumps(list(build_args)), json.dumps(build_env),
                 _cocotb_version(), _cocotb_libs()):
        digest.update(part.encode() + b"\0")
    for text in texts:
        digest.update(text + b"\0")
    return digest.hexdigest()[:16]


_NOT_ARTEFACTS = {".lock", _STAMP, "build.log"}


def _artefacts(build):
    """``{relative path: sha256}`` of a build's simulator binaries: its executables (Verilator's
    model) and ``.vvp`` files (Icarus); every file when there are none."""
    files = sorted(path for path in build.rglob("*")
                   if path.is_file() and path.name not in _NOT_ARTEFACTS)
    chosen = [path for path in files
              if path.suffix == ".vvp" or path.stat().st_mode & 0o111] or files
    return {str(path.relative_to(build)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in chosen}


def _build_intact(build):
    """Whether ``build`` finished (its stamp exists) and its binaries are what was built."""
    try:
        stamp = json.loads((build / _STAMP).read_text())
        recorded = stamp["artefacts"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    try:
        return bool(recorded) and all(
            hashlib.sha256((build / name).read_bytes()).hexdigest() == digest
            for name, digest in recorded.items())
    except OSError:
        return False


def _cocotb_version():
    import cocotb
    return cocotb.__version__


def _cocotb_libs():
    """Where this environment's cocotb libraries are: a Verilator model links to them by
    absolute path (its runpath), so a build made by another environment (another clone,
    virtual environment or install) must not be reused here — it would fail to load them."""
    import cocotb
    return str((Path(cocotb.__file__).parent / "libs").resolve())


@contextlib.contextmanager
def _locked(folder):
    """Serialise builds and runs in one build folder across processes."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _environ(values):
    """``os.environ`` with ``values`` for the duration (the cocotb runner copies it)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _importable(test_module):
    """Module name for the runner; a path to a .py file has its folder put on ``sys.path``
    for the call, which the cocotb runner hands to the simulator as ``PYTHONPATH``."""
    if not str(test_module).endswith(".py"):
        yield str(test_module)
        return
    path = Path(test_module).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"cocotb test module {path} does not exist")
    folder = str(path.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield path.stem
    finally:
        if added:
            sys.path.remove(folder)


def _tail(path, lines=40):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


_NS_PER_UNIT = {"fs": 1e-6, "ps": 1e-3, "ns": 1.0, "us": 1e3, "ms": 1e6, "sec": 1e9, "s": 1e9}


def _to_ns(value, unit):
    try:
        return float(value) * _NS_PER_UNIT[unit]
    except (TypeError, ValueError, KeyError):
        return 0.0


def _parse_results(results_xml):
    root = ElementTree.parse(results_xml).getroot()
    testcases = []
    for case in root.iter("testcase"):
        status, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                status = "failed" if kind == "failure" else kind
                message = element.get("message", "") or (element.text or "")
                break
        properties = {prop.get("name"): prop.get("value")
                      for prop in case.iter("property")}
        testcases.append({
            "name": case.get("name"),
            "status": status,
            "message": message,
            "seconds": float(case.get("time", 0.0)),
            "sim_time_ns": _to_ns(properties.get("sim_time_duration"),
                                  properties.get("sim_time_unit", "ns")),
        })
    return testcases


def run_cocotb(verilog_files, toplevel, test_module, simulator, *, build_dir=None,
               parameters=None, extra_env=None, data=None, waves=False, test_dir=None,
               testcase=None, seed=0, check=True):
    """Compile ``verilog_files`` for ``simulator`` (once per design) and run the cocotb tests
    of ``test_module`` on ``toplevel``.

    Parameters
    ----------
    verilog_files : list of path
        The design (e.g. from :func:`xbarode.sim.verilog.write_verilog`).
    toplevel : str
        Verilog module name of the top level.
    test_module : str or path
        Importable module name of the cocotb tests, or the path of its ``.py`` file.
    simulator : {"verilator", "icarus"}
    build_dir : path, optional
        Root of the build folders (default :func:`default_build_root`). The build itself goes
        to ``BUILD_DIR/TOPLEVEL-SIMULATOR-HASH`` where the hash covers the Verilog text, the
        simulator and its version, cocotb's version, ``parameters`` and tracing, so each
        design and parameter set has its own folder and is compiled once.
    parameters : dict, optional
        Verilog parameters of the top level (``-P``/``-G``).
    extra_env : dict of str, optional
        More environment variables for the simulator process (ones already in ``os.environ``
        win, as in cocotb's runner).
    data : JSON-able dict, optional
        Written to ``TEST_DIR/data.json``; its path is in ``XBARODE_COCOTB_DATA`` for the
        tests (``cocotb_support.test_data()``).
    waves : bool or "on_failure"
        ``True``: build with tracing and write ``TEST_DIR/TOPLEVEL.fst`` (Icarus) or
        ``TEST_DIR/TOPLEVEL.vcd`` (Verilator). ``"on_failure"``:
        run without tracing and, if a test fails, run it again (same data and seed) on a
        tracing build so the report points at a waveform of the failure.
    test_dir : path, optional
        Where the tests run and write ``data.json``, ``outputs.json``, ``results.xml``,
        ``sim.log`` and waves (replacing those of an earlier run, nothing else); default
        ``BUILD/run``, emptied for each run of the same build.
    testcase : str or list of str, optional
        Only these cocotb tests.
    seed : int
        ``COCOTB_RANDOM_SEED``.
    check : bool
        Raise :class:`CosimError` when a test fails (default); with ``False`` return the
        result anyway (a build failure or crash without results still raises).

    Returns
    -------
    CosimResult
    """
    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator {simulator!r}; choose one of: "
                         f"{', '.join(SIMULATORS)}")
    if waves not in (True, False, "on_failure"):
        raise ValueError(f"waves must be True, False or 'on_failure', not {waves!r}")
    result = _run_once(verilog_files, toplevel, test_module, simulator, build_dir, parameters,
                       extra_env, data, waves is True, test_dir, testcase, seed)
    if waves == "on_failure" and result.failed:
        failing = [case["name"] for case in result.testcases
                   if case["status"] in ("failed", "error")]
        traced = _run_once(verilog_files, toplevel, test_module, simulator, build_dir,
                           parameters, extra_env, data, True, None, failing, seed)
        result.waves = traced.waves
        result.build_seconds += traced.build_seconds
    if check and not result.ok:
        raise CosimError(_failure_report(result), result)
    return result


def _failure_report(result):
    lines = [f"cocotb on {result.simulator} ({result.toplevel}): {result.failed} of "
             f"{result.tests} tests failed"]
    if result.tests == 0:
        lines = [f"cocotb on {result.simulator} ({result.toplevel}) ran no test"]
    elif result.failed == 0 and result.skipped == result.tests:
        lines = [f"cocotb on {result.simulator} ({result.toplevel}): all {result.tests} "
                 "tests were skipped; nothing was checked"]
    for case in result.testcases:
        if case["status"] in ("failed", "error"):
            lines.append(f"  {case['name']}: {case['message']}")
    if result.waves is not None:
        lines.append(f"waveform: {result.waves}")
    lines.append(f"simulator log: {result.log}")
    lines.append(f"results: {result.results_xml}")
    return "\n".join(lines)


def _run_once(verilog_files, toplevel, test_module, simulator, build_dir, parameters,
              extra_env, data, waves, test_dir, testcase, seed):
    from cocotb_tools.runner import get_runner

    tool = ensure_simulator(simulator)
    sources = [Path(path).resolve() for path in verilog_files]
    if not sources:
        raise ValueError("no Verilog files given")
    for source in sources:
        if not source.is_file():
            raise FileNotFoundError(f"Verilog file {source} does not exist")
    # Read once: the hash and the build see the same text.
    texts = [source.read_bytes() for source in sources]
    parameters = dict(parameters or {})
    build_args = list(VERILATOR_ARGS) if simulator == "verilator" else list(ICARUS_ARGS)
    if waves and simulator == "verilator":
        # VCD: Verilator 5.48's FST writer needs the system's lz4 headers (liblz4-dev).
        build_args += ["--trace-vcd"]
    key = _build_key(texts, simulator, tool.version, toplevel, parameters, waves, build_args,
                     tool.build_env)
    build = Path(build_dir or default_build_root()).resolve() / f"{toplevel}-{simulator}-{key}"
    if simulator == "verilator" and re.search(r"\s", str(build)):
        # Verilator's generated makefiles split paths at spaces.
        raise ValueError(f"Verilator cannot build in a folder whose path contains a space "
                         f"({build}); set XBARODE_BUILD_DIR to a folder without spaces")
    run_dir = Path(test_dir).resolve() if test_dir is not None else build / "run"

    with _locked(build):
        runner = get_runner(simulator)
        built = False
        started = time.perf_counter()
        if not _build_intact(build):
            # No stamp (never built, or an earlier build failed or was killed) or a binary
            # that is not what was built: start clean.
            for entry in build.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry)
                elif entry.name != ".lock":
                    entry.unlink()
            build_log = build / "build.log"
            copies = build / "src"
            copies.mkdir()
            build_sources = []
            for number, (source, text) in enumerate(zip(sources, texts, strict=True)):
                copy = copies / f"{number}-{source.name}"
                copy.write_bytes(text)
                build_sources.append(copy)
            build_waves = waves
            if waves and simulator == "icarus":
                dump = build / f"{_ICARUS_DUMP_TOP}.v"
                dump.write_text(_ICARUS_DUMP.format(toplevel=toplevel))
                build_sources.append(dump)
                build_args = [*build_args, "-s", _ICARUS_DUMP_TOP]
                build_waves = False
            try:
                with _environ(tool.build_env):
                    runner.build(sources=build_sources, hdl_toplevel=toplevel, build_dir=build,
                                 parameters=parameters, build_args=build_args,
                                 waves=build_waves, timescale=TIMESCALE, always=True,
                                 log_file=build_log)
            except (RuntimeError, SystemExit) as error:
                raise CosimError(f"building {toplevel} for {simulator} failed ({error}); "
                                 f"last lines of {build_log}:\n{_tail(build_log)}") from None
            (build / _STAMP).write_text(json.dumps({"sources": [str(s) for s in sources],
                                                    "artefacts": _artefacts(build)}))
            built = True
        build_seconds = time.perf_counter() - started

        data_file = run_dir / "data.json"
        output_file = run_dir / "outputs.json"
        results_xml = run_dir / "results.xml"
        sim_log = run_dir / "sim.log"
        wave_file = run_dir / f"{toplevel}.{'vcd' if simulator == 'verilator' else 'fst'}"
        if test_dir is None and run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        # A caller's folder may hold other files: remove only what an earlier run left.
        for stale in (output_file, results_xml, sim_log, wave_file):
            stale.unlink(missing_ok=True)
        data_file.write_text(json.dumps(data if data is not None else {}))
        env = {str(name): str(value) for name, value in (extra_env or {}).items()}
        env[DATA_ENV] = str(data_file)
        env[OUTPUT_ENV] = str(output_file)
        test_args = ["--trace-file", str(wave_file)] if waves and simulator == "verilator" else []
        plusargs = [f"+dumpfile_path={wave_file}"] if waves and simulator == "icarus" else []

        started = time.perf_counter()
        with _importable(test_module) as module:
            try:
                runner.test(test_module=module, hdl_toplevel=toplevel,
                            hdl_toplevel_lang="verilog", build_dir=build, test_dir=run_dir,
                            parameters=parameters, extra_env=env, waves=waves,
                            testcase=testcase, seed=seed, test_args=test_args,
                            plusargs=plusargs, results_xml=str(results_xml), timescale=TIMESCALE,
                            log_file=sim_log)
            except SystemExit:
                # The runner exits when a test failed under pytest or the simulator crashed;
                # the results XML (or its absence) says which.
                pass
        test_seconds = time.perf_counter() - started

        # Read while the lock is held: the default run folder is the build's, shared.
        if not results_xml.is_file():
            raise CosimError(f"{simulator} ended without writing {results_xml} (crash or build "
                             f"problem); last lines of {sim_log}:\n{_tail(sim_log)}")
        testcases = _parse_results(results_xml)
        outputs = json.loads(output_file.read_text()) if output_file.is_file() else {}
    return CosimResult(
        simulator=simulator, toplevel=toplevel, tests=len(testcases),
        failed=sum(case["status"] in ("failed", "error") for case in testcases),
        skipped=sum(case["status"] == "skipped" for case in testcases),
        testcases=testcases, outputs=outputs, build_dir=build, test_dir=run_dir,
        results_xml=results_xml, log=sim_log,
        waves=wave_file if waves and wave_file.is_file() else None, built=built,
        build_seconds=build_seconds, test_seconds=test_seconds, seed=seed)
