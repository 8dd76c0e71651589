"""A unit with the op/start/done and i/o stream interface that breaks the handshake on
request: the harness's checks (xbarode.sim.streams, cocotb_support.OpDriver) are tested on it.

Operations: LOAD (0) takes ``count`` words; READ (1) offers the words 1 … ``count``; RUN (2)
pulses ``done`` after ``latency`` cycles. ``bug`` plants one fault:

- ``"surplus"``: READ offers ``count + 1`` words (``done`` with the last);
- ``"no_done"``: LOAD and READ never pulse ``done``;
- ``"early_done"``: READ pulses ``done`` with word ``count - 1``, then offers word ``count``;
- ``"hang"``: RUN never ends;
- ``"restart"``: a ``start`` while RUN is busy runs it once more after its ``done`` (a
  second ``done``);
- ``"busy_low"``: ``busy`` is low in the ``done`` cycle;
- ``"idle_ready"``: ``i.ready`` is high while idle (a word offered then is lost);
- ``"slow_unknown"``: op codes 3 and above take two cycles instead of ending at once;
- ``"resample"``: a ``start`` while busy re-samples ``op`` and starts the operation again (no
  ``done`` for the first).

Op codes 3 and above are RUN, or with ``unknown`` (a number of codes) those from ``unknown``
on end at once, as docs/interface.md's rule 5 asks of an op code the unit does not have.
"""

from amaranth import Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

BUGS = (None, "surplus", "no_done", "early_done", "hang", "restart", "busy_low",
        "idle_ready", "slow_unknown", "resample")


class FakeUnit(wiring.Component):
    """See the module docstring."""

    def __init__(self, *, count=3, latency=5, bug=None, unknown=None):
        if bug not in BUGS:
            raise ValueError(f"bug must be one of {BUGS}, not {bug!r}")
        self.count, self.latency, self.bug, self.unknown = count, latency, bug, unknown
        super().__init__({"i": In(stream.Signature(signed(8))),
                          "o": Out(stream.Signature(signed(8))),
                          "op": In(4), "start": In(1), "busy": Out(1), "done": Out(1),
                          "overflow": Out(1), "clear": In(1)})

    def elaborate(self, platform):
        m = Module()
        words = self.count + (1 if self.bug == "surplus" else 0)
        done_at = self.count - (2 if self.bug == "early_done" else 1)
        n = Signal(range(max(words, self.latency) + 2))
        again = Signal()   # the "restart" bug: a start seen while RUN was busy

        def dispatch():
            m.d.sync += n.eq(0)
            with m.Switch(self.op):
                with m.Case(0):
                    m.next = "LOAD"
                with m.Case(1):
                    m.next = "READ"
                if self.unknown is not None:
                    with m.Case(*range(self.unknown, 16)):
                        m.next = "SLOW" if self.bug == "slow_unknown" else "NOTHING"
                with m.Default():
                    m.next = "RUN"

        def resample():
            # Last in its state, so that it wins over the state's own next state.
            if self.bug == "resample":
                with m.If(self.start):
                    dispatch()

        m.d.comb += self.busy.eq(1)
        if self.bug == "busy_low":
            with m.If(self.done):
                m.d.comb += self.busy.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.busy.eq(0)
                if self.bug == "idle_ready":
                    m.d.comb += self.i.ready.eq(1)
                with m.If(self.start):
                    dispatch()
            with m.State("SLOW"):
                m.next = "NOTHING"
            with m.State("NOTHING"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += n.eq(n + 1)
                    with m.If(n == self.count - 1):
                        if self.bug != "no_done":
                            m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
                resample()
            with m.State("READ"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(n + 1)]
                with m.If(self.o.ready):
                    m.d.sync += n.eq(n + 1)
                    if self.bug != "no_done":
                        with m.If(n == done_at):
                            m.d.comb += self.done.eq(1)
                    with m.If(n == words - 1):
                        m.next = "IDLE"
                resample()
            with m.State("RUN"):
                m.d.sync += n.eq(n + 1)
                if self.bug == "restart":
                    with m.If(self.start):
                        m.d.sync += again.eq(1)
                if self.bug != "hang":
                    with m.If(n == self.latency - 2):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
                        with m.If(again):
                            m.d.sync += [again.eq(0), n.eq(0)]
                            m.next = "RUN"
                resample()
        return m
