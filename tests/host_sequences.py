"""Random host sequences on the Amaranth simulator: a cycle-level host and the references it
checks against (tests/test_host_sequences.py).

The host (:func:`run_sequence`) drives a unit with the ``op``/``start``/``done`` strobes and
the ``i``/``o`` streams one cycle at a time, as docs/interface.md describes a host: it offers
a load's words from the start cycle on (with random gaps), takes a read's words with
``ready`` low for random cycles, pulses ``start`` again while the unit is busy, changes ``op``
after the start edge, pulses ``clear`` and ``rst`` at random cycles, and checks in every
cycle the handshake rules 1–7 and the reset rules of that page: ``busy`` exactly from the
cycle after an accepted start through the ``done`` cycle, ``done`` once per accepted start
and in the cycle the last word moves, no word taken or offered outside a load or a read, an
unknown op code ending in the cycle after start, every operation within its cycle limit
(:mod:`xbarode.sim.latency`).

What the words, flags and outputs should be comes from a reference state machine per unit
(:class:`CoreReference`, :class:`TileReference`), written from docs/interface.md: it tracks
what the host has loaded (memories are zero at power-up; reset keeps them and re-seeds the
LFSRs), and computes every result with the fixed-point model (``FixedNetwork``'s and
``FixedTile``'s operations, the LFSRs running on across operations as the hardware's do). A
value the documentation leaves unspecified (what a reset in the middle of a RUN, BACKWARD,
APPLY or tile product leaves in the memories it was writing; the overflow flag after a
``clear`` in the middle of a saturating operation) is ``None``: its words are not compared,
and whatever is computed from it is ``None`` too, until the host loads it again. A load a
reset interrupts has written the words that moved before the reset cycle, and no other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from amaranth import ClockDomain, Elaboratable, Module, Value

from xbarode.model.fixed import Rounder, site_seed
from xbarode.sim.latency import OperationTimeout, latency_bound, limit, stream_limit
from xbarode.sim.streams import CLOCK_PERIOD

__all__ = ["PRESSURE", "CoreReference", "Expect", "HostError", "Reference", "Step", "TileReference",
           "run_sequence"]

#: Back-pressure: the probability that the host holds ``valid`` (loads) or ``ready`` (reads)
#: low in a cycle, per ``Step.pressure``.
PRESSURE = (0.0, 0.3, 0.7)


class HostError(AssertionError):
    """The unit broke a documented rule, or a word or flag differs from the reference."""


@dataclass(frozen=True)
class Step:
    """One thing the host does.

    Attributes
    ----------
    code : int or str
        An op code (0–15), or ``"reset"`` (one cycle of ``rst`` while idle), ``"clear"`` (one
        cycle of ``clear`` while idle).
    seed : int
        Seed of the words a load sends and of the back-pressure pattern; a multiple of 5
        loads full-scale words (saturation).
    pressure : int
        Index into :data:`PRESSURE`.
    busy_start : int or None
        Cycle after start (``>= 1``) in which ``start`` is pulsed again, with op code
        ``busy_code`` (ignored if the operation has ended by then).
    busy_code : int
    clear_at : int, "done" or None
        Cycle after start (``0`` is the start cycle) of a one-cycle ``clear``, or the cycle
        ``done`` pulses.
    reset_at : int or None
        Cycle after start (``>= 1``) of a one-cycle ``rst``: the operation is interrupted (if
        it has not ended by then).
    idle : int
        Idle cycles after the operation, with ``o.ready`` and ``i.valid`` high: no word may
        move.
    """

    code: int | str
    seed: int = 0
    pressure: int = 0
    busy_start: int | None = None
    busy_code: int = 0
    clear_at: int | str | None = None
    reset_at: int | None = None
    idle: int = 0


# --- the references ----------------------------------------------------------------------------

def _known(*values):
    return all(v is not None for v in values)


def _partial(old, new, moved):
    """A memory after a load of ``new`` that a reset interrupted after ``moved`` words: those
    words written, the rest as it was (None if that was unspecified)."""
    if old is None:
        return None
    flat = np.array(old, dtype=np.int64).ravel()
    flat[:moved] = np.asarray(new).ravel()[:moved]
    return flat.reshape(np.shape(old))


def _or(a, b):
    """Sticky OR of two flags, either of which may be unknown (None)."""
    if a == 1 or b == 1:
        return 1
    return None if a is None or b is None else 0


@dataclass
class Expect:
    """What the reference expects of one operation, before it runs.

    ``kind`` is ``"load"``, ``"read"``, ``"compute"`` or ``"none"`` (an op code the unit does
    not have); ``words`` are a load's words to send, or a read's expected words (an entry or
    the whole list None where unknown); ``at_done`` maps output names to their expected
    values in the ``done`` cycle; ``saturates`` says whether the operation saturates (None:
    unknown); ``commit`` applies the operation's effect to the reference, ``interrupted``
    (given the words moved) what a reset in its middle leaves.
    """

    kind: str
    count: int = 0
    words: list | None = None
    at_done: dict = dataclasses.field(default_factory=dict)
    saturates: int | None = 0
    commit: object = None
    interrupted: object = None


class Reference:
    """What every reference shares: the overflow flag and how an operation ends.

    A reference has ``codes()`` (op code -> ``(kind, words)``), ``words(code, rng, full)``
    (what a load sends), ``expect(code, words)`` (an :class:`Expect`), ``reset()`` and
    optionally ``cycle_limit(code)`` (a compute operation's cycle limit, for a unit without a
    documented latency in :mod:`xbarode.sim.latency`).
    """

    overflow: int | None = 0

    def finish(self, expect: Expect, outcome: dict) -> None:
        """Apply an operation's effect given how it went (``outcome`` from the host)."""
        if outcome["reset"]:
            # done in the reset cycle: the operation has ended; else it was interrupted.
            if outcome["ended"]:
                if expect.commit is not None:
                    expect.commit()
            elif expect.interrupted is not None:
                expect.interrupted(outcome["moved"])
            self.reset()
            return
        if expect.commit is not None:
            expect.commit()
        self.overflow = self.overflow_at_done(expect, outcome["clear"])
        if outcome["clear"] == "after":
            self.overflow = 0

    def overflow_at_done(self, expect: Expect, clear: str | None):
        """The flag in the ``done`` cycle (a ``clear`` given there acts at the next edge).

        ``clear`` is where the host gave one: ``"start"`` (with start: the flag is then the
        operation's own), ``"during"`` (a saturation before it is forgotten, one after it
        flagged: known only if the operation saturates nothing), ``"after"`` (in the done
        cycle) or None.
        """
        if clear == "start":
            return expect.saturates
        if clear == "during":
            return 0 if expect.saturates == 0 else None
        return _or(self.overflow, expect.saturates)


class CoreReference(Reference):
    """The core as docs/interface.md describes it, for a host that tracks what it loaded.

    State: the weights (``A``, ``Bt``, ``C``, ``d``), the image buffer (the ``z_0`` every RUN
    starts from, written by LOAD_IMAGE), the trajectory memory (``z_0 … z_N`` of the last RUN),
    the registers of the last RUN (logits, status words, ``cls``, ``converged``,
    ``iterations``), and with training the loss gradient of the last LOAD_GRAD, the gradient
    sums and ``∂L/∂z_0``. Every memory is zero at power-up; reset zeroes the registers and
    re-seeds the LFSRs and keeps the memories.
    """

    def __init__(self, config):
        from xbarode.sim.core_plan import model_network

        self.config = config
        m, classes, steps = config.m, config.classes, config.steps
        zero = {"A": np.zeros((m, m)), "B": np.zeros((m, m)), "C": np.zeros((classes, m)),
                "d": np.zeros(classes)}
        self.net = model_network(config, zero)
        self.f = config.formats()
        z = np.zeros(m, dtype=np.int64)
        self.mem = {"A": np.zeros((m, m), dtype=np.int64), "Bt": np.zeros((m, m), np.int64),
                    "C": np.zeros((classes, m), dtype=np.int64),
                    "d": np.zeros(classes, dtype=np.int64), "image": z,
                    "traj": [z.copy() for _ in range(steps + 1)],
                    "grad": np.zeros(classes, dtype=np.int64),
                    "GA": np.zeros((m, m), dtype=np.int64), "GB": np.zeros((m, m), np.int64),
                    "GC": np.zeros((classes, m), dtype=np.int64),
                    "Gd": np.zeros(classes, dtype=np.int64), "lam": z.copy()}
        # BACKWARD differentiates the last RUN (unspecified after a RUN cut short by reset).
        self.ran = True
        self.lfsr_known = True
        self.reset()

    def reset(self) -> None:
        """What reset (and power-up) sets: the registers to zero, the LFSRs re-seeded, the
        flag low; the memories are kept."""
        cfg = self.config
        self.regs = {"logits": np.zeros(cfg.classes, dtype=np.int64),
                     "status": np.zeros(cfg.steps, dtype=np.int64),
                     "cls": 0, "converged": 0, "iterations": 0}
        for k, name in enumerate("ABC"):
            getattr(self.net, name).rounder = Rounder(cfg.rounding, site_seed(cfg.lfsr_seed, k))
        self.lfsr_known = True
        self.overflow = 0

    def codes(self) -> dict[int, tuple[str, int]]:
        """Op code -> (kind, words) of the operations this core has."""
        cfg = self.config
        m, classes, steps = cfg.m, cfg.classes, cfg.steps
        ops = {0: ("load", m * m), 1: ("load", m * m), 2: ("load", classes * m),
               3: ("load", classes), 4: ("load", m), 5: ("compute", 0),
               6: ("read", classes), 7: ("read", m), 8: ("read", steps),
               9: ("read", (steps + 1) * m), 14: ("read", 2 * m * m + classes * m + classes)}
        if cfg.training:
            ops |= {10: ("load", classes), 11: ("compute", 0), 12: ("compute", 0),
                    13: ("read", 2 * m * m + classes * m + classes + m)}
        return ops

    def words(self, code: int, rng, full: bool) -> list[int]:
        """Words a load of ``code`` sends: weights of about the size the core is trained
        with, pixels, loss gradients; or with ``full`` any words of the format (saturation
        likely)."""
        cfg, f = self.config, self.f
        n = self.codes()[code][1]
        fmt = {4: f.state, 10: f.grad}.get(code, f.weight)
        if full:
            return rng.integers(fmt.min_int, fmt.max_int + 1, n).tolist()
        if code == 4:
            return rng.integers(0, 2 ** f.state.frac + 1, n).tolist()
        scale = 1.2 / np.sqrt(cfg.m) if code in (0, 1) else 0.5
        return fmt.quantize(rng.normal(0, scale, n), "nearest").tolist()

    def expect(self, code: int, words=None) -> Expect:
        """What operation ``code`` should do now (``words``: a load's words)."""
        kind, count = self.codes().get(code, ("none", 0))
        if kind == "load":
            return self._load(code, count, words)
        if kind == "read":
            return Expect("read", count, words=self._read(code))
        if kind == "none":
            return Expect("none", commit=lambda: None)
        return {5: self._run, 11: self._backward, 12: self._apply}[code]()

    def _load(self, code, count, words):
        cfg = self.config
        m, classes = cfg.m, cfg.classes
        words = np.asarray(words, dtype=np.int64)
        name = {0: "A", 1: "Bt", 2: "C", 3: "d", 4: "image", 10: "grad"}[code]
        shape = {"A": (m, m), "Bt": (m, m), "C": (classes, m)}.get(name, words.shape)
        value = words.reshape(shape)

        def commit():
            self.mem[name] = value

        def interrupted(moved):
            # The words that moved before the reset cycle are written (docs/interface.md).
            self.mem[name] = _partial(self.mem[name], value, moved)
        return Expect("load", count, words=words.tolist(), commit=commit,
                      interrupted=interrupted)

    def _read(self, code):
        cfg, mem, regs = self.config, self.mem, self.regs
        m, classes = cfg.m, cfg.classes
        weights = [(mem["A"], m * m), (mem["Bt"], m * m), (mem["C"], classes * m),
                   (mem["d"], classes)]
        gb = None if mem["GB"] is None else mem["GB"].T
        parts = {6: [(regs["logits"], classes)], 7: [(mem["traj"][-1], m)],
                 8: [(regs["status"], cfg.steps)], 9: [(z, m) for z in mem["traj"]],
                 13: [(mem["GA"], m * m), (gb, m * m), (mem["GC"], classes * m),
                      (mem["Gd"], classes), (mem["lam"], m)], 14: weights}[code]
        out = []
        for value, size in parts:
            out += [None] * size if value is None else np.asarray(value).ravel().tolist()
        return out

    def _set_weights(self):
        net, mem = self.net, self.mem
        net.A.weights, net.B.weights = mem["A"], mem["Bt"].T.copy()
        net.C.weights, net.d = mem["C"], mem["d"]

    def _counts(self):
        from xbarode.sim.core_plan import hardware_counts

        return hardware_counts(self.net.overflow)

    def _unknown_lfsr(self):
        if self.config.rounding == "stochastic":
            self.lfsr_known = False

    def _run(self) -> Expect:
        cfg, mem, f = self.config, self.mem, self.f
        known = (_known(mem["A"], mem["Bt"], mem["C"], mem["d"], mem["image"])
                 and self.lfsr_known)
        if not known:
            def commit():
                mem["traj"] = [None] * (cfg.steps + 1)
                self.regs = dict.fromkeys(self.regs)
                self.ran = True
                self._unknown_lfsr()
            return Expect("compute", at_done={}, saturates=None, commit=commit,
                          interrupted=lambda moved: self._run_interrupted())
        self._set_weights()
        before = self._counts()
        logits, trajectory, info = self.net.forward(f.state.to_float(mem["image"])[None])
        if cfg.method == "euler":
            iterations, converged = [0] * cfg.steps, [1] * cfg.steps
        else:
            iterations = [int(i) for i in info["iterations"][:, 0]]
            converged = [int(c) for c in info["converged"][:, 0]]
        regs = {"logits": logits[0], "cls": int(np.argmax(logits[0])),
                "status": np.array([i | c << 8 for i, c in zip(iterations, converged,
                                                                 strict=True)]),
                "converged": int(all(converged)), "iterations": sum(iterations)}
        saturates = int(self._counts() > before)

        def commit():
            mem["traj"] = [mem["image"].copy(), *trajectory[1:, 0]]
            self.regs = regs
            self.ran = True
        return Expect("compute", saturates=saturates, commit=commit,
                      at_done={k: regs[k] for k in ("cls", "converged", "iterations")},
                      interrupted=lambda moved: self._run_interrupted())

    def _run_interrupted(self):
        self.mem["traj"] = [None] * (self.config.steps + 1)
        self.ran = False

    def _backward(self) -> Expect:
        mem = self.mem
        sums = ("GA", "GB", "GC", "Gd")
        known = (_known(mem["A"], mem["Bt"], mem["C"], mem["grad"], *mem["traj"],
                        *(mem[k] for k in sums)) and self.ran and self.lfsr_known)

        def unknown():
            for k in (*sums, "lam"):
                mem[k] = None
        if not known:
            def commit():
                unknown()
                self._unknown_lfsr()
            return Expect("compute", saturates=None, commit=commit,
                          interrupted=lambda moved: unknown())
        self._set_weights()
        before = self._counts()
        grads = self.net.backward(np.stack(mem["traj"])[:, None, :], mem["grad"][None])
        saturates = int(self._counts() > before)

        def commit():
            mem["GA"] = mem["GA"] + grads["A"]
            mem["GB"] = mem["GB"] + grads["B"]
            mem["GC"] = mem["GC"] + grads["C"]
            mem["Gd"] = mem["Gd"] + grads["d"]
            mem["lam"] = grads["z0"][0]
        return Expect("compute", saturates=saturates, commit=commit,
                      interrupted=lambda moved: unknown())

    def _apply(self) -> Expect:
        cfg, mem = self.config, self.mem
        names = ("A", "Bt", "C", "d", "GA", "GB", "GC", "Gd")
        known = _known(*(mem[k] for k in names)) and self.lfsr_known

        def unknown():
            for k in names:
                mem[k] = None
        if not known:
            def commit():
                unknown()
                # The sums are cleared, whatever they were.
                mem["GA"] = np.zeros((cfg.m, cfg.m), dtype=np.int64)
                mem["GB"] = np.zeros((cfg.m, cfg.m), dtype=np.int64)
                mem["GC"] = np.zeros((cfg.classes, cfg.m), dtype=np.int64)
                mem["Gd"] = np.zeros(cfg.classes, dtype=np.int64)
                self._unknown_lfsr()
            return Expect("compute", saturates=None, commit=commit,
                          interrupted=lambda moved: unknown())
        self._set_weights()
        before = self._counts()
        self.net.sgd_step({"A": mem["GA"], "B": mem["GB"], "C": mem["GC"], "d": mem["Gd"]},
                          lr=cfg.lr, batch_size=cfg.batch)
        saturates = int(self._counts() > before)
        new = {"A": self.net.A.weights, "Bt": self.net.B.weights.T.copy(),
               "C": self.net.C.weights, "d": self.net.d}

        def commit():
            mem.update(new)
            for k in ("GA", "GB", "GC", "Gd"):
                mem[k] = np.zeros_like(mem[k])
        return Expect("compute", saturates=saturates, commit=commit,
                      interrupted=lambda moved: unknown())


class TileReference(Reference):
    """The crossbar tile alone (``TileOp`` codes 0–7) as docs/interface.md describes it.

    State: ``W``, ``x``, ``s``, the result of the last FORWARD (``rows`` words) and of the last
    TRANSPOSED (``cols`` words), which of the two READ_Y streams, the LFSR. Memories are zero
    at power-up; reset keeps them, re-seeds the LFSR, and READ_Y then streams the last
    TRANSPOSED's result (docs/interface.md).
    """

    def __init__(self, params):
        from xbarode.model.fixed import Overflow
        from xbarode.model.fixed_ops import FixedTile

        self.params = params
        rows, cols = params.rows, params.cols
        self.fmt = params.format
        self.model = FixedTile(np.zeros((rows, cols), dtype=np.int64), weight_format=self.fmt,
                               acc_width=params.acc_width,
                               rounder=Rounder(params.rounding, params.lfsr_seed),
                               overflow=Overflow(), name="tile")
        self.mem = {"W": np.zeros((rows, cols), dtype=np.int64),
                    "x": np.zeros(cols, dtype=np.int64), "s": np.zeros(rows, dtype=np.int64),
                    "yf": np.zeros(rows, dtype=np.int64), "yt": np.zeros(cols, dtype=np.int64)}
        self.reset()

    def reset(self) -> None:
        """Reset: the LFSR re-seeded, READ_Y on TRANSPOSED's result, the flag low; the
        memories are kept."""
        self.model.rounder = Rounder(self.params.rounding, self.params.lfsr_seed)
        self.lfsr_known = True
        self.forward_last = False
        self.overflow = 0

    def codes(self) -> dict[int, tuple[str, int]]:
        """Op code -> (kind, words) of the tile's operations (READ_Y's count depends on the
        last product: :meth:`expect` gives it)."""
        rows, cols = self.params.rows, self.params.cols
        return {0: ("load", rows * cols), 1: ("read", rows * cols), 2: ("load", cols),
                3: ("load", rows), 4: ("compute", 0), 5: ("compute", 0), 6: ("compute", 0),
                7: ("read", None)}

    def words(self, code: int, rng, full: bool) -> list[int]:
        """Words a load of ``code`` sends: values in [-1, 1], or with ``full`` the format's
        extremes (every narrowing saturates)."""
        n = self.codes()[code][1]
        f = self.fmt
        if full:
            return rng.choice([f.min_int, f.max_int], n).tolist()
        one = 1 << f.frac
        return rng.integers(-one, one + 1, n).tolist()

    def expect(self, code: int, words=None) -> Expect:
        """What operation ``code`` should do now (``words``: a load's words)."""
        mem, f = self.mem, self.fmt
        kind, count = self.codes().get(code, ("none", 0))
        if kind == "none":
            return Expect("none", commit=lambda: None)
        if kind == "load":
            name = {0: "W", 2: "x", 3: "s"}[code]
            shape = (self.params.rows, self.params.cols) if name == "W" else (count,)
            value = np.asarray(words, dtype=np.int64).reshape(shape)

            def commit():
                mem[name] = value

            def interrupted(moved):
                mem[name] = _partial(mem[name], value, moved)
            return Expect("load", count, words=value.ravel().tolist(), commit=commit,
                          interrupted=interrupted)
        if code == 1:
            return Expect("read", count, words=self._flat(mem["W"], count))
        if code == 7:
            out = mem["yf"] if self.forward_last else mem["yt"]
            count = self.params.rows if self.forward_last else self.params.cols
            return Expect("read", count, words=self._flat(out, count))
        return self._compute(code, f)

    @staticmethod
    def _flat(value, count):
        return [None] * count if value is None else np.asarray(value).ravel().tolist()

    def _compute(self, code, f):
        mem, tile = self.mem, self.model
        target = {4: "yf", 5: "yt", 6: "W"}[code]
        inputs = {4: ("W", "x"), 5: ("W", "s"), 6: ("W", "x", "s")}[code]
        forward = {4: True, 5: False, 6: self.forward_last}[code]
        if not (_known(*(mem[k] for k in inputs)) and self.lfsr_known):
            def commit():
                mem[target] = None
                self.forward_last = forward
                if self.params.rounding == "stochastic":
                    self.lfsr_known = False
            return Expect("compute", saturates=None, commit=commit,
                          interrupted=lambda moved: mem.__setitem__(target, None))
        tile.weights = mem["W"].copy()
        before = tile.overflow.total
        if code == 4:
            result = tile.forward(mem["x"][None], f, f)[0]
        elif code == 5:
            result = tile.transposed(mem["s"][None], f, f)[0]
        else:
            tile.update(mem["s"], f, mem["x"], f, shift=self.params.eta_shift)
            result = tile.weights.copy()
        saturates = int(tile.overflow.total > before)

        def commit():
            mem[target] = result
            self.forward_last = forward
        return Expect("compute", saturates=saturates, commit=commit,
                      interrupted=lambda moved: mem.__setitem__(target, None))


# --- the host ---------------------------------------------------------------------------------

class _Top(Elaboratable):
    """The unit under a clock domain whose reset the host drives."""

    def __init__(self, dut):
        self.dut = dut
        self.domain = ClockDomain("sync")

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.domain
        m.submodules.dut = self.dut
        return m


class _Host:
    """Drives one unit cycle by cycle and checks the handshake rules in every cycle."""

    OUTPUTS = ("busy", "done", "overflow")

    def __init__(self, ctx, dut, rst, reference, log):
        self.ctx, self.dut, self.rst, self.ref, self.log = ctx, dut, rst, reference, log
        #: Words and flags compared with a known reference value, and those left unspecified.
        self.compared = self.skipped = 0
        self.extra = [getattr(dut, n) for n in ("cls", "converged", "iterations")
                      if hasattr(dut, n)]

    def fail(self, what):
        raise HostError(f"step {len(self.log)} {self.log[-1] if self.log else ''}: {what}")

    async def tick(self):
        """One edge; the values of the outputs in the cycle that ends."""
        dut = self.dut
        signals = [dut.busy, dut.done, dut.overflow, dut.i.ready, dut.o.valid, dut.o.payload,
                   *self.extra]
        _, _, *values = await self.ctx.tick().sample(*signals)
        names = ["busy", "done", "overflow", "i_ready", "o_valid", "o_payload",
                 *(s.name for s in self.extra)]
        return dict(zip(names, (int(v) for v in values), strict=True))

    def quiet(self):
        ctx, dut = self.ctx, self.dut
        for sig in (dut.start, dut.clear, dut.i.valid, dut.o.ready, self.rst):
            ctx.set(sig, 0)

    async def idle(self, cycles):
        """Cycles with no operation: a word offered and ``ready`` high; none may move."""
        ctx, dut = self.ctx, self.dut
        for _ in range(cycles):
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, 1)
            ctx.set(dut.o.ready, 1)
            out = await self.tick()
            if out["busy"] or out["done"]:
                self.fail(f"busy {out['busy']}, done {out['done']} with no operation")
            if out["i_ready"] or out["o_valid"]:
                self.fail("a word moved with no operation (i.ready or o.valid high)")
        self.quiet()

    async def pulse(self, signal):
        self.ctx.set(signal, 1)
        out = await self.tick()
        self.ctx.set(signal, 0)
        return out

    async def step(self, step: Step):
        """Run one step; return the outcome for the reference."""
        ref = self.ref
        if step.code in ("reset", "clear"):
            out = await self.pulse(self.rst if step.code == "reset" else self.dut.clear)
            if out["busy"] or out["done"]:
                self.fail(f"busy {out['busy']}, done {out['done']} while idle")
            if step.code == "reset":
                ref.reset()
            ref.overflow = 0
            await self.check_idle_after(step.code)
            if int(self.ctx.get(self.dut.overflow)):
                self.fail(f"overflow high after {step.code}")
            return
        rng = np.random.default_rng(step.seed)
        kind = ref.codes().get(step.code, ("none", 0))[0]
        words = ref.words(step.code, rng, step.seed % 5 == 0) if kind == "load" else None
        expect = ref.expect(step.code, words)
        outcome = await self.operation(step, expect, rng)
        ref.finish(expect, outcome)
        flag = int(self.ctx.get(self.dut.overflow))
        self.count(ref.overflow)
        if ref.overflow is not None and flag != ref.overflow:
            self.fail(f"overflow is {flag} after the operation, the reference says "
                      f"{ref.overflow}")
        await self.check_idle_after(step.code)
        await self.idle(step.idle)

    async def check_idle_after(self, what):
        """The cycle after ``done``, a reset or a clear: the unit is idle."""
        busy, done = int(self.ctx.get(self.dut.busy)), int(self.ctx.get(self.dut.done))
        if busy or done:
            self.fail(f"busy {busy}, done {done} in the cycle after {what}")

    def budget(self, step, expect):
        from xbarode.hdl.core import Core, CoreOp
        from xbarode.hdl.tile import TileOp

        if expect.kind == "none":
            return 2
        if expect.kind in ("load", "read"):
            return stream_limit(expect.count)
        if hasattr(self.ref, "cycle_limit"):
            return self.ref.cycle_limit(step.code)
        enum = CoreOp if isinstance(self.dut, Core) else TileOp
        return limit(latency_bound(self.dut, enum(step.code)))

    async def operation(self, step: Step, expect: Expect, rng):  # noqa: C901
        """Start the operation and run it to ``done`` (or to the reset that interrupts it),
        checking every cycle; returns the outcome for the reference."""
        ctx, dut = self.ctx, self.dut
        low = PRESSURE[step.pressure]
        budget, stalls = self.budget(step, expect), 0
        moved, got, clear, done_out, reset, held = 0, [], None, None, False, False
        streams = expect.kind in ("load", "read")
        cycle = 0
        while True:
            ctx.set(dut.start, int(cycle in (0, step.busy_start)))
            # op is sampled at the start edge only: any value afterwards.
            # (The raw bits: codes the enum lacks are sent too.)
            ctx.set(Value.cast(dut.op), step.code if cycle == 0 else step.busy_code
                    if cycle == step.busy_start else int(rng.integers(16)))
            offering = taking = False
            if expect.kind == "load" and moved < expect.count:
                # Gaps between words; a word offered is held until it moves (rule 1).
                offering = held or bool(rng.random() >= low)
                ctx.set(dut.i.valid, int(offering))
                ctx.set(dut.i.payload, expect.words[moved])
            if expect.kind == "read":
                taking = bool(rng.random() >= low)
                ctx.set(dut.o.ready, int(taking))
            stalls += int(streams and not (offering or taking))
            resetting = cycle == step.reset_at
            if resetting:
                # The host stops the operation with the reset: nothing offered or taken.
                for signal in (dut.i.valid, dut.o.ready, dut.start):
                    ctx.set(signal, 0)
                offering = taking = False
                ctx.set(self.rst, 1)
            clearing = step.clear_at == cycle or (step.clear_at == "done"
                                                  and bool(ctx.get(dut.done)))
            ctx.set(dut.clear, int(clearing))
            out = await self.tick()
            ctx.set(dut.clear, 0)
            ctx.set(self.rst, 0)
            if clearing:
                clear = "start" if cycle == 0 else "after" if out["done"] else "during"
            held = offering and not out["i_ready"]
            if cycle == 0:
                # Rule 3: busy low in the cycle of the accepted start; no word moves yet.
                if out["busy"] or out["done"] or out["i_ready"] or out["o_valid"]:
                    self.fail(f"in the start cycle busy {out['busy']}, done {out['done']}, "
                              f"i.ready {out['i_ready']}, o.valid {out['o_valid']}")
                cycle += 1
                continue
            if not out["busy"]:
                self.fail(f"busy low in cycle {cycle} after start, before done")
            if not resetting:
                if out["i_ready"] and expect.kind != "load":
                    self.fail(f"i.ready high in cycle {cycle} of a {expect.kind} operation")
                if out["o_valid"] and expect.kind != "read":
                    self.fail(f"o.valid high in cycle {cycle} of a {expect.kind} operation")
            if offering and out["i_ready"]:
                moved += 1
            if taking and out["o_valid"]:
                got.append(out["o_payload"])
                moved += 1
            if out["done"]:
                done_out = out
            if resetting:
                reset = True
                break
            if out["done"]:
                # Rule 4: done in the cycle the last word moves; rule 5: an unknown op
                # code ends in the cycle after start.
                if streams and moved != expect.count:
                    self.fail(f"done after {moved} of {expect.count} words")
                if expect.kind == "none" and cycle != 1:
                    self.fail(f"an op code the unit does not have ended in cycle {cycle}")
                break
            if streams and moved >= expect.count:
                self.fail(f"no done in the cycle the last of {expect.count} words moved")
            if cycle >= budget + stalls:
                self.quiet()
                raise OperationTimeout(f"step {len(self.log)} {self.log[-1]}: op "
                                       f"{step.code} did not end within {budget + stalls} "
                                       "cycles")
            cycle += 1
        self.quiet()
        self.check_results(expect, got, done_out, clear)
        return {"reset": reset, "ended": done_out is not None, "clear": clear, "moved": moved}

    def check_results(self, expect, got, done_out, clear):
        """A read's words (those taken, if a reset cut it short), the outputs in the done
        cycle."""
        if expect.kind == "read":
            for k, (a, b) in enumerate(zip(expect.words, got, strict=False)):
                self.count(a)
                if a is not None and a != b:
                    self.fail(f"word {k} of {expect.count} is {b}, the reference says {a}")
        if done_out is None:
            return
        for name, value in expect.at_done.items():
            self.count(value)
            if value is not None and done_out[name] != value:
                self.fail(f"{name} is {done_out[name]} in the done cycle, the reference says "
                          f"{value}")
        flag = self.ref.overflow_at_done(expect, clear)
        self.count(flag)
        if flag is not None and done_out["overflow"] != flag:
            self.fail(f"overflow is {done_out['overflow']} in the done cycle, the reference "
                      f"says {flag}")

    def count(self, expected):
        if expected is None:
            self.skipped += 1
        else:
            self.compared += 1


def run_sequence(dut, reference, steps) -> dict:
    """Drive ``dut`` through ``steps`` (:class:`Step`) on Amaranth's simulator, checking every
    cycle and every result against ``reference``.

    Returns
    -------
    dict
        ``steps`` (run), ``compared`` (words, done-cycle outputs and flags compared with a
        known value), ``skipped`` (those the reference leaves unspecified).

    Raises
    ------
    HostError
        A rule of docs/interface.md broken, or a word or flag that differs.
    OperationTimeout
        An operation exceeded its cycle limit.
    """
    from amaranth.sim import Simulator

    top = _Top(dut)
    sim = Simulator(top)
    sim.add_clock(CLOCK_PERIOD, domain="sync")
    log: list[str] = []
    stats = {}

    async def testbench(ctx):
        host = _Host(ctx, dut, top.domain.rst, reference, log)
        host.quiet()
        for step in steps:
            log.append(repr(step))
            await host.step(step)
        stats.update(steps=len(log), compared=host.compared, skipped=host.skipped)

    sim.add_testbench(testbench)
    sim.run()
    return stats
