"""The core's forward controller: RUN, the Euler steps (explicit, or implicit with Newton) and
the classifier.

RUN begins by copying the image buffer's ``z_0`` into the state banks, the trajectory and the
chain engine's operand (phase START). Per step it starts chains on the chain engine
(:mod:`xbarode.hdl.core_chain`) and *combines* each chain's result ``dz = h·B·φ(A v)`` with the
state, chunk by chunk (``lanes`` words per cycle), writing the next operand straight into the
engine and, at the end of the step, the state into the state banks and the trajectory
(docs/architecture.md §1):

- explicit Euler: ``z ← sat(z + dz)`` (phase EULER);
- implicit Euler: the predictor ``w = sat(z + dz)`` (PREDICT); per Newton iteration the
  residual ``G = sat(w − z − dz)`` (RESID, the chain's mask recorded), stop when
  ``max|G| <= tol`` or after ``max_iter`` updates; else ``δ = G``, ``neumann_terms`` times
  ``δ ← sat(G + dz)`` with the recorded mask (NEU), and ``w ← sat(w − δ)`` (WUPD); the step's
  state is ``w`` (FINAL).

Then ``z_N`` is copied into C's inputs (a chunk of C's ``lanes_c`` words per cycle) and C's
forward product gives the logits, and the class (argmax, ties to the lowest index) as they
arrive.
"""

from __future__ import annotations

from amaranth import Array, Module, Mux, Signal, signed
from amaranth.lib import enum, stream
from amaranth.lib.wiring import In, Out

from .checked import CheckedComponent
from .core_chain import ChainSignature
from .core_parts import check_int
from .rounding import narrow
from .tile import TileOp

__all__ = ["ForwardController", "ForwardPhase"]


class ForwardPhase(enum.Enum, shape=3):
    """What a combine pass computes (chunk by chunk), and so what the controller is doing."""

    EULER = 0     #: explicit Euler: z ← sat(z + dz)
    PREDICT = 1   #: implicit Euler's predictor: w ← sat(z + dz)
    RESID = 2     #: the residual: G ← sat(w − z − dz)
    NEU = 3       #: a Neumann term: δ ← sat(G + dz), dz with the recorded mask
    WUPD = 4      #: the Newton update: w ← sat(w − δ)
    FINAL = 5     #: the step's state: z ← w
    START = 6     #: RUN's start: z ← the image buffer's z_0 (also the trajectory's z_0)


class ForwardController(CheckedComponent):
    """RUN: the Euler steps on the chain engine, then the classifier on tile C.

    Parameters
    ----------
    m, lanes, steps, classes : int
        State words, lanes, Euler steps, classes; each ``>= 1``.
    lanes_c : int, optional
        Lanes of tile C, dividing ``lanes``; default ``lanes``.
    method : {"euler", "implicit_euler"}
    neumann_terms, max_iter, tol : int
        Implicit Euler: Neumann terms per Newton iteration, Newton iterations per step at
        most, and the stopping threshold ``max|G| <= tol`` (state LSBs); each ``>= 0``.
    state_width, act_width : int
        Widths of the state and act words.
    x_width, r_width : int
        The chain engine's operand and result widths (:class:`ChainSignature`).
    c_width : int
        Width of C's ``y_out`` words.
    features : int, optional
        Words of C's input (default ``m``). Fewer: a pool (:class:`~xbarode.hdl.core_pool.
        PoolUnit`) writes them from ``z_N``, started on ``pool_start``, instead of the copy.

    Attributes
    ----------
    start : In(1)
        Start RUN (the controller idle).
    done : Out(1)
        RUN ends: the class, logits, status and flags are final in this cycle.
    chain : Out(ChainSignature(...))
        The chain engine.
    image_wait : In(1)
        An image is arriving in the image buffer: RUN's start waits for its last word.
    image_lock : Out(1)
        RUN reads the image buffer (from ``start`` to the end of phase START): no word may
        be written into it.
    vec_addr : Out(range(chunks + 1))
        The read address of the state banks (z, w, G, δ) and of the image buffer.
    z_data, w_data, g_data, d_data, i_data : In(signed(state_width)).array(lanes)
        Their words (one cycle after ``vec_addr``).
    wr_addr : Out(range(chunks))
    wr_data : Out(signed(state_width)).array(lanes)
    t_addr : Out(range((steps + 2)·chunks + 1))
    z_en, w_en, g_en, d_en, t_en : Out(1).array(lanes)
        Write lane ``k``'s ``wr_data`` at ``wr_addr`` into z, w, G or δ, or at ``t_addr``
        into the trajectory.
    c_x_addr : Out(range(ceil(features / lanes_c)))
    c_x_data : Out(signed(state_width)).array(lanes_c)
    c_x_en : Out(1).array(lanes_c)
        Write C's inputs (its ``x_side_*``): ``z_N``, a chunk of C per cycle (not with a
        pool).
    pool_start : Out(1)
    pool_done : In(1)
        With a pool: start it after the last step, and its ``done``.
    c_op : Out(TileOp)
    c_start : Out(1)
        Start tile C (FORWARD).
    c_y : In(stream.Signature(signed(c_width), always_ready=True))
        C's ``y_out``: the logits.
    c_done : In(1)
        C's ``done``.
    logits : Out(signed(act_width)).array(classes)
    status : Out(9).array(steps)
        Per step the Newton iterations (bits 0–7) and converged (bit 8); ``0x100`` for
        explicit Euler.
    cls : Out(range(classes))
    converged : Out(1)
    iterations : Out(16)
        As the core's outputs of the same names.
    saturated : Out(1)
        A combine's saturating addition (or the chain's narrowing) saturated in this cycle.

    Notes
    -----
    Latency of RUN: the copy of ``z_0`` (``C + 2`` cycles, ``C = ceil(m/lanes)``, after any
    wait for an arriving image); per explicit step one chain and one combine (``C + 1``
    cycles, and one cycle to the next step); implicit steps take one chain and combine per
    predictor, residual and Neumann term, and one combine per update and for the final
    state; then the copy of ``z_N`` into C (``ceil(m/lanes_c) + 1`` cycles; with a pool,
    the pool's ``m + 1`` and one), C's forward product and one cycle (``done`` after the class
    is registered).
    """

    @staticmethod
    def check_parameters(*, m: int, lanes: int, steps: int, classes: int, method: str,
                         neumann_terms: int, max_iter: int, tol: int, state_width: int,
                         act_width: int, x_width: int, r_width: int, c_width: int,
                         lanes_c: int | None = None, features: int | None = None) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        if features is not None:
            check_int("features", features, 1)
        lanes_c = lanes if lanes_c is None else lanes_c
        check_int("lanes_c", lanes_c, 1)
        if isinstance(lanes, int) and lanes >= 1 and lanes % lanes_c:
            raise ValueError(f"lanes_c must divide lanes ({lanes}), not {lanes_c}")
        for name, value in (("m", m), ("lanes", lanes), ("steps", steps),
                            ("classes", classes), ("state_width", state_width),
                            ("act_width", act_width), ("c_width", c_width)):
            check_int(name, value, 1)
        for name, value in (("neumann_terms", neumann_terms), ("max_iter", max_iter),
                            ("tol", tol)):
            check_int(name, value, 0)
        if method not in ("euler", "implicit_euler"):
            raise ValueError(f"method must be 'euler' or 'implicit_euler', not {method!r}")
        ChainSignature.check_parameters(lanes=lanes, chunks=-(-m // lanes), x_width=x_width,
                                        r_width=r_width)

    def __init__(self, *, m: int, lanes: int, steps: int, classes: int, method: str,
                 neumann_terms: int, max_iter: int, tol: int, state_width: int,
                 act_width: int, x_width: int, r_width: int, c_width: int,
                 lanes_c: int | None = None, features: int | None = None):
        lanes_c = lanes if lanes_c is None else lanes_c
        features = m if features is None else features
        chunks = -(-m // lanes)
        self._m, self._lanes, self._steps, self._classes = m, lanes, steps, classes
        self._features = features
        self._lanes_c, self._chunks_c = lanes_c, -(-features // lanes_c)
        self._chunks, self._method = chunks, method
        self._neumann_terms, self._max_iter, self._tol = neumann_terms, max_iter, tol
        self._sw = state_width
        sdata = In(signed(state_width)).array(lanes)
        enables = {name: Out(1).array(lanes)
                   for name in ("z_en", "w_en", "g_en", "d_en", "t_en")}
        super().__init__({
            "start": In(1), "done": Out(1),
            "chain": Out(ChainSignature(lanes=lanes, chunks=chunks, x_width=x_width,
                                        r_width=r_width)),
            "image_wait": In(1), "image_lock": Out(1),
            "vec_addr": Out(range(max(chunks + 1, 2))),
            "z_data": sdata, "w_data": sdata, "g_data": sdata, "d_data": sdata,
            "i_data": sdata,
            "wr_addr": Out(range(max(chunks, 2))),
            "wr_data": Out(signed(state_width)).array(lanes),
            "t_addr": Out(range((steps + 2) * chunks + 1)),
            **enables,
            "c_x_addr": Out(range(max(self._chunks_c, 2))),
            "c_x_data": Out(signed(state_width)).array(lanes_c),
            "c_x_en": Out(1).array(lanes_c),
            "pool_start": Out(1), "pool_done": In(1),
            "c_op": Out(TileOp), "c_start": Out(1),
            "c_y": In(stream.Signature(signed(c_width), always_ready=True)),
            "c_done": In(1),
            "logits": Out(signed(act_width)).array(classes),
            "status": Out(9).array(steps),
            "cls": Out(range(classes)), "converged": Out(1), "iterations": Out(16),
            "saturated": Out(1),
        })

    @property
    def m(self) -> int:
        """State words."""
        return self._m

    @property
    def lanes(self) -> int:
        """Lanes."""
        return self._lanes

    @property
    def lanes_c(self) -> int:
        """Lanes of tile C."""
        return self._lanes_c

    @property
    def features(self) -> int:
        """Words of C's input (``m`` without a pool)."""
        return self._features

    @property
    def method(self) -> str:
        """``"euler"`` or ``"implicit_euler"``."""
        return self._method

    @property
    def steps(self) -> int:
        """Euler steps."""
        return self._steps

    @property
    def chunks(self) -> int:
        """``ceil(m / lanes)``."""
        return self._chunks

    def elaborate(self, platform):
        mod = Module()
        chunks, steps = self._chunks, self._steps
        shapes = {"n": range(steps + 1), "phase": ForwardPhase, "it": 8,
                  "nt": range(self._neumann_terms + 2), "not_conv": 1,
                  "chunk": range(chunks + 1), "traj_base": range((steps + 2) * chunks + 1),
                  "combine_sat": 1, "c_chunk": range(self._chunks_c + 1),
                  "c_addr": range(chunks + 1), "c_off": range(self._lanes // self._lanes_c)}
        r = {name: Signal(shape, name=name) for name, shape in shapes.items()}
        n, phase, chunk = r["n"], r["phase"], r["chunk"]
        mod.d.comb += [self.chain.masked.eq(phase == ForwardPhase.NEU),
                       self.saturated.eq(r["combine_sat"] | self.chain.saturated)]
        lock = Signal()
        mod.d.comb += self.image_lock.eq(lock)
        with mod.FSM():
            with mod.State("IDLE"):
                with mod.If(self.start):
                    mod.d.sync += [n.eq(0), r["traj_base"].eq(0), self.iterations.eq(0),
                                   self.converged.eq(1), phase.eq(ForwardPhase.START)]
                    mod.next = "IMAGE_WAIT"
            # z_0 from the image buffer, once no image is arriving; the buffer is locked from
            # the cycle the copy is decided (no word enters it at that edge) to its end.
            with mod.State("IMAGE_WAIT"):
                with mod.If(~self.image_wait):
                    mod.d.comb += self.image_lock.eq(1)
                    mod.d.sync += lock.eq(1)
                    mod.next = "COMBINE_START"
            # The step loop.
            with mod.State("STEP"):
                mod.d.sync += lock.eq(0)
                with mod.If(n == steps):
                    mod.d.sync += [r["c_chunk"].eq(0), r["c_addr"].eq(0), r["c_off"].eq(0)]
                    mod.next = "C_COPY_ADDR"
                with mod.Else():
                    first = ForwardPhase.EULER if self._method == "euler" \
                        else ForwardPhase.PREDICT
                    mod.d.sync += [phase.eq(first), r["it"].eq(0)]
                    mod.next = "CHAIN_START"
            with mod.State("CHAIN_START"):
                mod.d.comb += self.chain.start.eq(1)
                mod.next = "CHAIN"
            with mod.State("CHAIN"):
                with mod.If(self.chain.done):
                    mod.d.sync += [chunk.eq(0), r["not_conv"].eq(0)]
                    mod.next = "COMBINE_ADDR"
            # A combine without a chain before it (the update, the step's final state).
            with mod.State("COMBINE_START"):
                mod.d.sync += [chunk.eq(0), r["not_conv"].eq(0)]
                mod.next = "COMBINE_ADDR"
            # Combine, chunk by chunk: reads issued one cycle ahead.
            with mod.State("COMBINE_ADDR"):   # vec_addr = 0: chunk 0 is read
                mod.next = "COMBINE"
            with mod.State("COMBINE"):
                self._combine(mod, r)
            with mod.State("AFTER_COMBINE"):
                self._after_combine(mod, r)
            self._copy_to_c(mod, r)
            self._classify(mod)
        return mod

    def _combine(self, mod, r):
        """One chunk of a combine: ``lanes`` words computed by ``phase`` and written."""
        P = ForwardPhase
        lanes, chunks, m, sw = self._lanes, self._chunks, self._m, self._sw
        phase, chunk = r["phase"], r["chunk"]
        mod.d.comb += [self.vec_addr.eq(chunk + 1), self.chain.r_addr.eq(chunk + 1),
                       self.wr_addr.eq(chunk), self.t_addr.eq(r["traj_base"] + chunk),
                       self.chain.x_addr.eq(chunk)]
        chunk_sat = Signal(lanes)
        chunk_far = Signal(lanes)
        # Only the phases of the method are built (explicit Euler: START and EULER), so that
        # the other phases' adders and the residual's comparisons cost no logic.
        explicit = self._method == "euler"
        phases = (P.START, P.EULER) if explicit else (P.START, P.PREDICT, P.RESID, P.NEU,
                                                      P.WUPD, P.FINAL)
        for k in range(lanes):
            valid = Signal(name=f"cvalid{k}")
            mod.d.comb += valid.eq(chunk * lanes + k < m)
            dz = self.chain.r_data[k]
            z_k, w_k, g_k, d_k = (data[k] for data in (self.z_data, self.w_data, self.g_data,
                                                       self.d_data))
            wide = Signal(signed(sw + 2), name=f"cwide{k}")
            values = {P.EULER: z_k + dz, P.PREDICT: z_k + dz, P.RESID: w_k - z_k - dz,
                      P.NEU: g_k + dz, P.WUPD: w_k - d_k, P.FINAL: w_k,
                      P.START: self.i_data[k]}
            if explicit:
                # Two phases: a two-way multiplexer, not a decoder of every phase.
                mod.d.comb += wide.eq(Mux(phase == P.START, values[P.START], values[P.EULER]))
            else:
                with mod.Switch(phase):
                    for p in phases:
                        with mod.Case(p):
                            mod.d.comb += wide.eq(values[p])
            value, sat = narrow(mod, wide, 0, sw)
            mod.d.comb += chunk_sat[k].eq(sat & valid)
            if not explicit:
                mod.d.comb += chunk_far[k].eq(
                    valid & ((value > self._tol) | (value < -self._tol)))
            mod.d.comb += [self.wr_data[k].eq(value), self.chain.x_data[k].eq(value)]
            with mod.If(valid):
                # Every phase's value is the next chain's operand.
                mod.d.comb += self.chain.x_en[k].eq(1)
                with mod.Switch(phase):
                    with mod.Case(P.EULER, P.FINAL, P.START):
                        mod.d.comb += [self.z_en[k].eq(1), self.t_en[k].eq(1)]
                    with mod.Case(P.PREDICT, P.WUPD):
                        mod.d.comb += self.w_en[k].eq(1)
                    with mod.Case(P.RESID):
                        mod.d.comb += [self.g_en[k].eq(1), self.d_en[k].eq(1)]
                    with mod.Case(P.NEU):
                        mod.d.comb += self.d_en[k].eq(1)
        mod.d.comb += r["combine_sat"].eq(chunk_sat.any())
        with mod.If((phase == P.RESID) & chunk_far.any()):
            mod.d.sync += r["not_conv"].eq(1)
        mod.d.sync += chunk.eq(chunk + 1)
        with mod.If(chunk == chunks - 1):
            mod.next = "AFTER_COMBINE"

    def _after_combine(self, mod, r):
        """What follows a combine: the next step, chain or combine, by ``phase``."""
        P = ForwardPhase
        n, phase, it, nt, not_conv = r["n"], r["phase"], r["it"], r["nt"], r["not_conv"]
        status = Array(self.status)
        with mod.Switch(phase):
            with mod.Case(P.EULER):
                mod.d.sync += [status[n].eq(0x100), n.eq(n + 1),
                               r["traj_base"].eq(r["traj_base"] + self._chunks)]
                mod.next = "STEP"
            with mod.Case(P.PREDICT):
                mod.d.sync += phase.eq(P.RESID)
                mod.next = "CHAIN_START"
            with mod.Case(P.RESID):
                with mod.If(~not_conv | (it == self._max_iter)):
                    mod.d.sync += [phase.eq(P.FINAL), status[n].eq(it | (~not_conv << 8))]
                    with mod.If(not_conv):
                        mod.d.sync += self.converged.eq(0)
                    mod.next = "COMBINE_START"
                with mod.Elif(self._neumann_terms == 0):
                    mod.d.sync += phase.eq(P.WUPD)
                    mod.next = "COMBINE_START"
                with mod.Else():
                    mod.d.sync += [phase.eq(P.NEU), nt.eq(0)]
                    mod.next = "CHAIN_START"
            with mod.Case(P.NEU):
                mod.d.sync += nt.eq(nt + 1)
                with mod.If(nt == self._neumann_terms - 1):
                    mod.d.sync += phase.eq(P.WUPD)
                    mod.next = "COMBINE_START"
                with mod.Else():
                    mod.next = "CHAIN_START"
            with mod.Case(P.WUPD):
                mod.d.sync += [it.eq(it + 1), self.iterations.eq(self.iterations + 1),
                               phase.eq(P.RESID)]
                mod.next = "CHAIN_START"
            with mod.Case(P.FINAL):
                mod.d.sync += [n.eq(n + 1), r["traj_base"].eq(r["traj_base"] + self._chunks)]
                mod.next = "STEP"
            with mod.Case(P.START):
                mod.d.sync += r["traj_base"].eq(self._chunks)
                mod.next = "STEP"

    def _copy_to_c(self, mod, r):
        """``z_N`` into C's inputs: C's chunk ``j`` (``lanes_c`` words) is the part
        ``j mod R`` of the state's chunk ``j // R`` (``R = lanes / lanes_c``), read one cycle
        ahead."""
        lanes_c, chunks_c, m = self._lanes_c, self._chunks_c, self._m
        parts = self._lanes // lanes_c
        j, addr, off = r["c_chunk"], r["c_addr"], r["c_off"]
        last_part = off == parts - 1
        if self._features != m:     # a pool writes C's inputs
            with mod.State("C_COPY_ADDR"):
                mod.d.comb += self.pool_start.eq(1)
                mod.next = "POOL"
            with mod.State("POOL"):
                with mod.If(self.pool_done):
                    mod.next = "CLASSIFY_START"
            return
        with mod.State("C_COPY_ADDR"):   # vec_addr = 0: chunk 0 is read
            mod.next = "C_COPY"
        with mod.State("C_COPY"):
            mod.d.comb += [self.vec_addr.eq(addr + last_part), self.c_x_addr.eq(j)]
            for t in range(lanes_c):
                words = Array(self.z_data[p * lanes_c + t] for p in range(parts))
                mod.d.comb += [self.c_x_data[t].eq(words[off]),
                               self.c_x_en[t].eq(j * lanes_c + t < m)]
            mod.d.sync += [j.eq(j + 1), off.eq(Mux(last_part, 0, off + 1)),
                           addr.eq(addr + last_part)]
            with mod.If(j == chunks_c - 1):
                mod.next = "CLASSIFY_START"

    def _classify(self, mod):
        """The classifier: C's forward product with its bias; the argmax as logits arrive."""
        u_idx = Signal(range(self._classes + 1))
        best = Signal(signed(len(self.logits[0])))
        with mod.State("CLASSIFY_START"):
            mod.d.comb += [self.c_op.eq(TileOp.FORWARD), self.c_start.eq(1)]
            mod.d.sync += u_idx.eq(0)
            mod.next = "CLASSIFY"
        with mod.State("CLASSIFY"):
            with mod.If(self.c_y.valid):
                value = self.c_y.payload
                mod.d.sync += [Array(self.logits)[u_idx].eq(value), u_idx.eq(u_idx + 1)]
                with mod.If((u_idx == 0) | (value > best)):
                    mod.d.sync += [best.eq(value), self.cls.eq(u_idx)]
            with mod.If(self.c_done):
                mod.next = "CLASSIFY_DONE"
        # C's last logit is registered (cls, best, C's overflow flag) at the edge that ends
        # C's done cycle: done follows one cycle later, so that every output is final in the
        # cycle done pulses.
        with mod.State("CLASSIFY_DONE"):
            mod.d.comb += self.done.eq(1)
            mod.next = "IDLE"
