"""The core's adjoint controller (training): BACKWARD, the discrete adjoint over the stored
trajectory, and APPLY, one SGD step in every tile (docs/architecture.md §1).

BACKWARD: C's transposed product ``λ = Cᵀ ∂L/∂logits`` into the λ banks while C accumulates
its gradient; per step, from the last: A's forward product of the step's state recomputes
``u`` (the Heaviside mask ``D``; ``relu(u)`` is streamed into B's ``s``); for implicit Euler,
``neumann_terms`` transposed chains ``μ ← sat(λ + h·Aᵀ(D ⊙ Bᵀμ))`` (B's forward product on
gradients streaming into A's transposed one) and ``λ ← μ``; the chain ``g = D ⊙ Bᵀλ`` (for
explicit Euler with ``λ ← sat(λ + h·Aᵀg)``); then A and B accumulate ``g zᵀ`` and
``relu(u) λᵀ`` at the same time.

With pulsed updates (``pulses``), BACKWARD also keeps every step's pair of A and of B, and
the core each image's pair of C, in :class:`~xbarode.hdl.core_pulses.PairStore` s; APPLY walks
them through the tiles' pulsed UPDATE in the model's order, then steps C's bias (the tiles'
APPLY, which with pulses applies no weight gradient).
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import enum, stream
from amaranth.lib.wiring import In, Out

from .checked import CheckedComponent
from .core_parts import check_int
from .core_pulses import PairStore
from .rounding import narrow
from .tile import TileOp

__all__ = ["AdjointController", "AdjointPhase"]


class AdjointPhase(enum.Enum, shape=1):
    """What a backward step's transposed chain computes."""

    NEU = 0   #: a Neumann term of the transposed solve: μ ← sat(λ + h·Aᵀ(D ⊙ Bᵀμ))
    G = 1     #: g = D ⊙ Bᵀλ (explicit Euler: and λ ← sat(λ + h·Aᵀg))


class AdjointController(CheckedComponent):
    """BACKWARD and APPLY on tiles A, B (holding Bᵀ) and C.

    Parameters
    ----------
    m, lanes, steps : int
        State words, lanes, Euler steps; each ``>= 1``.
    lanes_c : int, optional
        Lanes of tile C, dividing ``lanes``; default ``lanes``.
    method : {"euler", "implicit_euler"}
    neumann_terms : int
        Implicit Euler: Neumann terms of the transposed solve, ``>= 0``.
    state_width, grad_width : int
        Widths of the state words (trajectory) and of the gradient words (λ).
    widths : dict of int
        The tiles' port widths: ``a_s``, ``b_s`` (``s_in``), ``a_y``, ``b_y`` (``y_out``),
        ``a_x``, ``b_x`` (``x_side_data``), ``a_r``, ``c_r`` (``y_side_data``); with
        ``pulses`` also ``c_s`` and ``c_x`` (C's ``s_in`` and ``x_side_data``).
    pulses : dict, optional
        Pulsed updates: ``batch`` (images per APPLY), ``classes`` and ``widths``, the stored
        words' widths ``(s, x)`` of each tile's update (``"a"``: grad, state; ``"b"``: act,
        grad; ``"c"``: grad, state). Adds the pair stores and C's ports below.

    Attributes
    ----------
    backward, apply : In(1)
        Start BACKWARD or APPLY (the controller idle).
    done : Out(1)
        The operation ends in this cycle.
    a_op, b_op, c_op : Out(TileOp)
    a_start, b_start, c_start : Out(1)
        Start a tile.
    a_done, b_done, c_done, c_busy : In(1)
        The tiles' ``done`` (and C's ``busy``).
    a_s_restart, b_s_restart : Out(1)
        The tiles' ``s_restart``.
    a_s, b_s : Out(stream.Signature(signed(...), always_ready=True))
        The tiles' ``s_in``.
    a_y, b_y : In(stream.Signature(signed(...), always_ready=True))
        The tiles' ``y_out``.
    a_x_addr, a_x_data, a_x_en, b_x_addr, b_x_data, b_x_en : Out
        The tiles' ``x_side_*``.
    a_r_data : In(signed(...)).array(lanes)
    c_r_data : In(signed(...)).array(lanes_c)
        A's and C's ``y_side_data`` (at ``vec_addr`` of the cycle before; C's chunks are of
        ``lanes_c`` words).
    vec_addr : Out(range(max(chunks, ceil(m / lanes_c)) + 1))
        Read address of the λ banks and of A's and C's results.
    lam_data : In(signed(grad_width)).array(lanes)
    lam_addr : Out(range(chunks))
    lam_wdata : Out(signed(grad_width)).array(lanes)
    lam_en : Out(1).array(lanes)
        The λ banks: read words; write ``lam_wdata[k]`` at ``lam_addr`` where ``lam_en[k]``.
    traj_addr : Out(range((steps + 2)·chunks + 1))
    traj_data : In(signed(state_width)).array(lanes)
        The trajectory banks' read address and words.
    saturated : Out(1)
        A saturating addition saturated in this cycle, or (``pulses``) a pair store dropped a
        pair: a BACKWARD beyond the ``batch`` images since the last APPLY.
    c_s, c_s_restart, c_x_addr, c_x_data, c_x_en : Out
        (``pulses``) C's ``s_in``, ``s_restart`` and ``x_side_*`` (APPLY's walk).
    c_cap_s_valid, c_cap_s_data, c_cap_s_restart, c_cap_x_addr, c_cap_x_data, c_cap_x_en : In
        (``pulses``) The words the core writes into C's ``s`` (LOAD_GRAD; the restart at its
        start) and ``x`` (RUN's copy of ``z_N``): the image's pair of C.

    Notes
    -----
    Latency of BACKWARD: C's transposed product, then per step about
    ``(3 + 2·neumann_terms)·(m·C)`` cycles (``C = ceil(m/lanes)``) for ``5 + 2·neumann_terms``
    products of m² MACs; ``done`` once C's gradient accumulation has ended too. APPLY: the
    tiles' SGD steps, ``done`` with the last tile's ``done``. With ``pulses``, APPLY first walks
    the three pair stores at once (:class:`~xbarode.hdl.core_pulses.PairStore`'s latency),
    then the tiles' APPLY: ``1 + max(walks) + `` the slowest tile's APPLY.
    """

    @staticmethod
    def check_parameters(*, m: int, lanes: int, steps: int, method: str, neumann_terms: int,
                         state_width: int, grad_width: int, widths: dict,
                         lanes_c: int | None = None, pulses: dict | None = None) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        lanes_c = lanes if lanes_c is None else lanes_c
        check_int("lanes_c", lanes_c, 1)
        if isinstance(lanes, int) and lanes >= 1 and lanes % lanes_c:
            raise ValueError(f"lanes_c must divide lanes ({lanes}), not {lanes_c}")
        for name, value in (("m", m), ("lanes", lanes), ("steps", steps),
                            ("state_width", state_width), ("grad_width", grad_width)):
            check_int(name, value, 1)
        check_int("neumann_terms", neumann_terms, 0)
        if method not in ("euler", "implicit_euler"):
            raise ValueError(f"method must be 'euler' or 'implicit_euler', not {method!r}")
        keys = ("a_s", "b_s", "a_y", "b_y", "a_x", "b_x", "a_r", "c_r") + (
            ("c_s", "c_x") if pulses is not None else ())
        if not isinstance(widths, dict) or sorted(widths) != sorted(keys):
            raise ValueError(f"widths must give {list(keys)}")
        for name in keys:
            check_int(f"widths[{name!r}]", widths[name], 1)

    def __init__(self, *, m: int, lanes: int, steps: int, method: str, neumann_terms: int,
                 state_width: int, grad_width: int, widths: dict,
                 lanes_c: int | None = None, pulses: dict | None = None):
        lanes_c = lanes if lanes_c is None else lanes_c
        chunks = -(-m // lanes)
        side = {}
        self._m, self._lanes, self._steps, self._chunks = m, lanes, steps, chunks
        self._lanes_c, self._chunks_c = lanes_c, -(-m // lanes_c)
        self._method, self._neumann_terms, self._gw = method, neumann_terms, grad_width
        self._pulses, self._widths = pulses, widths
        w = widths
        if pulses is not None:
            chunks_c = self._chunks_c
            side |= {"c_s": Out(stream.Signature(signed(w["c_s"]), always_ready=True)),
                     "c_s_restart": Out(1), "c_x_addr": Out(range(max(chunks_c, 2))),
                     "c_x_data": Out(signed(w["c_x"])).array(lanes_c), "c_x_en": Out(lanes_c),
                     "c_cap_s_valid": In(1), "c_cap_s_data": In(signed(w["c_s"])),
                     "c_cap_s_restart": In(1), "c_cap_x_addr": In(range(max(chunks_c, 2))),
                     "c_cap_x_data": In(signed(w["c_x"])).array(lanes_c),
                     "c_cap_x_en": In(lanes_c)}
        for t in ("a", "b"):
            side |= {f"{t}_s_restart": Out(1),
                     f"{t}_s": Out(stream.Signature(signed(w[f"{t}_s"]), always_ready=True)),
                     f"{t}_y": In(stream.Signature(signed(w[f"{t}_y"]), always_ready=True)),
                     f"{t}_x_addr": Out(range(max(chunks, 2))),
                     f"{t}_x_data": Out(signed(w[f"{t}_x"])).array(lanes),
                     f"{t}_x_en": Out(lanes)}
        super().__init__({
            "backward": In(1), "apply": In(1), "done": Out(1),
            **{f"{t}_op": Out(TileOp) for t in "abc"},
            **{f"{t}_start": Out(1) for t in "abc"},
            **{f"{t}_done": In(1) for t in "abc"}, "c_busy": In(1),
            **side,
            "a_r_data": In(signed(w["a_r"])).array(lanes),
            "c_r_data": In(signed(w["c_r"])).array(lanes_c),
            "vec_addr": Out(range(max(self._chunks_c + 1, 2))),
            "lam_data": In(signed(grad_width)).array(lanes),
            "lam_addr": Out(range(max(chunks, 2))),
            "lam_wdata": Out(signed(grad_width)).array(lanes),
            "lam_en": Out(1).array(lanes),
            "traj_addr": Out(range((steps + 2) * chunks + 1)),
            "traj_data": In(signed(state_width)).array(lanes),
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
    def steps(self) -> int:
        """Euler steps."""
        return self._steps

    @property
    def method(self) -> str:
        """``"euler"`` or ``"implicit_euler"``."""
        return self._method

    def _start(self, mod, tile, op):
        mod.d.comb += [getattr(self, f"{tile}_op").eq(op), getattr(self, f"{tile}_start").eq(1)]

    def _lam_write(self, mod, k, addr, value):
        mod.d.comb += [self.lam_addr.eq(addr), self.lam_wdata[k].eq(value),
                       self.lam_en[k].eq(1)]

    def _side_write(self, mod, tile, k, addr, value):
        mod.d.comb += [getattr(self, f"{tile}_x_addr").eq(addr),
                       getattr(self, f"{tile}_x_data")[k].eq(value),
                       getattr(self, f"{tile}_x_en")[k].eq(1)]

    def elaborate(self, platform):
        mod = Module()
        steps, chunks, m = self._steps, self._chunks, self._m
        shapes = {"n": range(steps + 1), "nt": range(self._neumann_terms + 2), "mask": m,
                  "u_idx": range(m + 1), "chunk": range(chunks + 1),
                  "traj_base": range((steps + 2) * chunks + 1), "bphase": AdjointPhase,
                  "tiles_done": 3, "a_runs": 1, "c_chunk": range(self._chunks_c + 1),
                  "c_off": range(self._lanes // self._lanes_c), "sat": 1}
        r = {name: Signal(shape, name=name) for name, shape in shapes.items()}
        # The backward chain runs A's transposed product (else A only stores the words).
        mod.d.comb += r["a_runs"].eq((self._method == "euler")
                                     | (r["bphase"] == AdjointPhase.NEU))
        stores = self._pair_stores(mod) if self._pulses is not None else None
        dropped = [store.dropped for store in stores.values()] if stores else []
        mod.d.comb += self.saturated.eq(r["sat"] | (Cat(*dropped).any() if dropped else 0))
        with mod.FSM():
            with mod.State("IDLE"):
                with mod.If(self.backward):
                    self._start(mod, "c", TileOp.TRANSPOSED_G)
                    # z_n for explicit Euler, z_(n+1) for implicit (architecture.md §1).
                    last = steps - 1 if self._method == "euler" else steps
                    mod.d.sync += [r["n"].eq(steps), r["traj_base"].eq(last * chunks)]
                    mod.next = "LAMBDA_WAIT"
                with mod.Elif(self.apply):
                    mod.d.sync += r["tiles_done"].eq(0)
                    if stores is None:
                        for tile in "abc":
                            self._start(mod, tile, TileOp.APPLY)
                        mod.next = "APPLY"
                    else:
                        mod.d.comb += [store.start.eq(1) for store in stores.values()]
                        mod.next = "PULSES"
            self._lambda(mod, r)
            self._step(mod, r)
            self._chain(mod, r)
            self._combine(mod, r)
            self._accumulate(mod, r)
            if stores is not None:
                self._pulsed_apply(mod, r, stores)
        return mod

    def _pair_stores(self, mod):
        """The pair stores of A, B and C (:class:`~xbarode.hdl.core_pulses.PairStore`), their
        captures joined: A's and B's from this controller's own writes into the tiles' ``s``
        and ``x`` while BACKWARD runs (a slot per step), C's from the core's (a slot per
        image). Returns ``{"a": …, "b": …, "c": …}``."""
        p, w, m = self._pulses, self._widths, self._m
        shapes = {"a": (m, self._lanes, self._steps), "b": (m, self._lanes, self._steps),
                  "c": (p["classes"], self._lanes_c, 1)}
        stores = {}
        self._advance_ab, self._advance_c = Signal(name="pairs_next"), Signal(name="image_next")
        for t, (rows, lanes, stride) in shapes.items():
            s_width, x_width = p["widths"][t]
            mod.submodules[f"pairs_{t}"] = stores[t] = PairStore(
                rows=rows, cols=m, lanes=lanes, slots=p["batch"] * stride, stride=stride,
                s_width=s_width, x_width=x_width, s_port=w[f"{t}_s"], x_port=w[f"{t}_x"])
            mod.d.comb += stores[t].advance.eq(self._advance_c if t == "c" else self._advance_ab)
        for t in "ab":
            store = stores[t]
            s_in = getattr(self, f"{t}_s")
            # A tile's s counts from 0 after s_restart and after every start.
            mod.d.comb += [store.cap_s_valid.eq(s_in.valid), store.cap_s_data.eq(s_in.payload),
                           store.cap_s_restart.eq(getattr(self, f"{t}_s_restart")
                                                  | getattr(self, f"{t}_start")),
                           store.cap_x_addr.eq(getattr(self, f"{t}_x_addr")),
                           store.cap_x_en.eq(getattr(self, f"{t}_x_en"))]
            mod.d.comb += [store.cap_x_data[k].eq(getattr(self, f"{t}_x_data")[k])
                           for k in range(self._lanes)]
        c = stores["c"]
        mod.d.comb += [c.cap_s_valid.eq(self.c_cap_s_valid), c.cap_s_data.eq(self.c_cap_s_data),
                       c.cap_s_restart.eq(self.c_cap_s_restart),
                       c.cap_x_addr.eq(self.c_cap_x_addr), c.cap_x_en.eq(self.c_cap_x_en)]
        mod.d.comb += [c.cap_x_data[k].eq(self.c_cap_x_data[k]) for k in range(self._lanes_c)]
        return stores

    def _pulsed_apply(self, mod, r, stores):
        """APPLY with pulses: the three walks at once (each tile's pairs through its pulsed
        UPDATE), then the tiles' APPLY (C's bias; A's and B's gradient sums cleared)."""
        tiles_done = r["tiles_done"]
        with mod.State("PULSES"):
            for t, store in stores.items():
                ports = [(store.s_valid, getattr(self, f"{t}_s").valid),
                         (store.s_data, getattr(self, f"{t}_s").payload),
                         (store.s_restart, getattr(self, f"{t}_s_restart")),
                         (store.x_addr, getattr(self, f"{t}_x_addr")),
                         (store.x_en, getattr(self, f"{t}_x_en"))]
                lanes = self._lanes_c if t == "c" else self._lanes
                ports += [(store.x_data[k], getattr(self, f"{t}_x_data")[k])
                          for k in range(lanes)]
                mod.d.comb += [port.eq(value) for value, port in ports]
                mod.d.comb += store.t_done.eq(getattr(self, f"{t}_done"))
                with mod.If(store.t_start):
                    self._start(mod, t, TileOp.UPDATE)
            done_now = tiles_done | Cat(*(store.done for store in stores.values()))
            mod.d.sync += tiles_done.eq(done_now)
            with mod.If(done_now.all()):
                mod.d.sync += tiles_done.eq(0)
                mod.next = "PULSES_APPLY"
        with mod.State("PULSES_APPLY"):
            for tile in "abc":
                self._start(mod, tile, TileOp.APPLY)
            mod.d.comb += [store.clear.eq(1) for store in stores.values()]
            mod.next = "APPLY"

    def _lambda(self, mod, r):
        """λ = Cᵀ ∂L/∂logits, then into the λ banks (from C's result, a chunk of C per cycle:
        C's chunk ``j`` is the part ``j mod R`` of the λ banks' chunk ``j // R``,
        ``R = lanes / lanes_c``); C accumulates its gradient while the steps go back."""
        chunk, j, off, lanes_c = r["chunk"], r["c_chunk"], r["c_off"], self._lanes_c
        parts = self._lanes // lanes_c
        with mod.State("LAMBDA_WAIT"):
            with mod.If(self.c_done):
                mod.next = "LAMBDA_ADDR"
        with mod.State("LAMBDA_ADDR"):   # vec_addr = 0: C's chunk 0 is read
            mod.d.sync += [chunk.eq(0), j.eq(0), off.eq(0)]
            mod.next = "LAMBDA"
        with mod.State("LAMBDA"):
            mod.d.comb += self.vec_addr.eq(j + 1)
            for k in range(self._lanes):
                t = k % lanes_c
                with mod.If((off == k // lanes_c) & (j * lanes_c + t < self._m)):
                    self._lam_write(mod, k, chunk, self.c_r_data[t])
            last_part = off == parts - 1
            mod.d.sync += [j.eq(j + 1), off.eq(Mux(last_part, 0, off + 1)),
                           chunk.eq(chunk + last_part)]
            with mod.If(j == self._chunks_c - 1):
                self._start(mod, "c", TileOp.ACCUMULATE)
                mod.next = "STEP"

    def _step(self, mod, r):
        """A step, from the last (n counts down): the state into A's x, λ into B's x, and
        ``u = A z`` again."""
        n, chunk, u_idx, lanes = r["n"], r["chunk"], r["u_idx"], self._lanes
        with mod.State("STEP"):
            with mod.If(n == 0):
                mod.next = "FINISH"
            with mod.Else():
                mod.d.sync += [n.eq(n - 1), chunk.eq(0)]
                mod.d.comb += [self.traj_addr.eq(r["traj_base"]), self.b_s_restart.eq(1)]
                mod.next = "COPY"
        # Reads one cycle ahead.
        with mod.State("COPY"):
            mod.d.comb += [self.traj_addr.eq(r["traj_base"] + chunk + 1),
                           self.vec_addr.eq(chunk + 1)]
            for k in range(lanes):
                with mod.If(chunk * lanes + k < self._m):
                    self._side_write(mod, "a", k, chunk, self.traj_data[k])
                    self._side_write(mod, "b", k, chunk, self.lam_data[k])
            mod.d.sync += chunk.eq(chunk + 1)
            with mod.If(chunk == self._chunks - 1):
                self._start(mod, "a", TileOp.FORWARD)
                mod.d.sync += u_idx.eq(0)
                mod.next = "U"
        # u = A z again: the mask, and relu(u) into B's s (B's gradient's u).
        with mod.State("U"):
            u = self.a_y.payload
            mod.d.comb += [self.b_s.valid.eq(self.a_y.valid),
                           self.b_s.payload.eq(Mux(u > 0, u, 0))]
            with mod.If(self.a_y.valid):
                mod.d.sync += u_idx.eq(u_idx + 1)
                for i in range(self._m):   # the Heaviside mask bit of u_idx (H(0) = 0)
                    with mod.If(u_idx == i):
                        mod.d.sync += r["mask"][i].eq(u > 0)
            with mod.If(self.a_done):
                if self._method == "implicit_euler" and self._neumann_terms > 0:
                    mod.d.sync += [r["bphase"].eq(AdjointPhase.NEU), r["nt"].eq(0)]
                else:
                    mod.d.sync += r["bphase"].eq(AdjointPhase.G)
                mod.next = "CHAIN_START"

    def _chain(self, mod, r):
        """One transposed chain: B's forward product on gradients (Bᵀ v), masked, streams
        into A's transposed product (h·Aᵀ·), the products overlapping. For implicit Euler's
        g, A only stores the words (its s, for the gradient)."""
        u_idx, a_runs = r["u_idx"], r["a_runs"]
        with mod.State("CHAIN_START"):
            self._start(mod, "b", TileOp.FORWARD_G)
            with mod.If(a_runs):
                self._start(mod, "a", TileOp.TRANSPOSED_STREAM_G)
            with mod.Else():
                mod.d.comb += self.a_s_restart.eq(1)
            mod.d.sync += u_idx.eq(0)
            mod.next = "CHAIN"
        with mod.State("CHAIN"):
            y = self.b_y.payload
            mod.d.comb += [self.a_s.valid.eq(self.b_y.valid),
                           self.a_s.payload.eq(Mux(r["mask"].bit_select(u_idx, 1), y, 0))]
            with mod.If(self.b_y.valid):
                mod.d.sync += u_idx.eq(u_idx + 1)
            with mod.If(Mux(a_runs, self.a_done, self.b_done)):
                mod.d.sync += r["chunk"].eq(0)
                with mod.If(a_runs):
                    mod.next = "COMBINE_ADDR"
                with mod.Else():
                    mod.next = "ACCUMULATE_START"   # B is still draining

    def _combine(self, mod, r):
        """sat(λ + A's result) chunk by chunk: μ into B's x (the last term's also into the λ
        banks), or explicit Euler's new λ into the λ banks only (B's x keeps the old λ for
        B's gradient)."""
        P = AdjointPhase
        chunk, nt, bphase, lanes, gw = r["chunk"], r["nt"], r["bphase"], self._lanes, self._gw
        with mod.State("COMBINE_ADDR"):   # A idle, vec_addr = 0: chunk 0 is read
            mod.next = "COMBINE"
        with mod.State("COMBINE"):
            mod.d.comb += self.vec_addr.eq(chunk + 1)
            last_term = nt == self._neumann_terms - 1
            chunk_sat = Signal(lanes)
            for k in range(lanes):
                with mod.If(chunk * lanes + k < self._m):
                    total = Signal(signed(gw + 1), name=f"bsum{k}")
                    mod.d.comb += total.eq(self.lam_data[k] + self.a_r_data[k])
                    value, sat = narrow(mod, total, 0, gw)
                    mod.d.comb += chunk_sat[k].eq(sat)
                    with mod.If(bphase == P.NEU):
                        self._side_write(mod, "b", k, chunk, value)
                    with mod.If((bphase == P.G) | last_term):
                        self._lam_write(mod, k, chunk, value)
            mod.d.comb += r["sat"].eq(chunk_sat.any())
            mod.d.sync += chunk.eq(chunk + 1)
            with mod.If(chunk == self._chunks - 1):
                with mod.If(bphase == P.G):
                    mod.next = "ACCUMULATE_START"
                with mod.Else():
                    mod.d.sync += nt.eq(nt + 1)
                    with mod.If(last_term):
                        mod.d.sync += bphase.eq(P.G)
                    mod.next = "CHAIN_START"

    def _accumulate(self, mod, r):
        """A += g zᵀ and Bᵀ += relu(u) λᵀ at the same time; the end of BACKWARD; APPLY."""
        tiles_done = r["tiles_done"]
        with mod.State("ACCUMULATE_START"):
            self._start(mod, "a", TileOp.ACCUMULATE)
            self._start(mod, "b", TileOp.ACCUMULATE)
            if self._pulses is not None:   # the step's pairs are complete
                mod.d.comb += self._advance_ab.eq(1)
            mod.d.sync += tiles_done.eq(0)
            mod.next = "ACCUMULATE"
        with mod.State("ACCUMULATE"):
            done_now = tiles_done | Cat(self.a_done, self.b_done, 1)
            mod.d.sync += tiles_done.eq(done_now)
            with mod.If(done_now.all()):
                mod.d.sync += r["traj_base"].eq(r["traj_base"] - self._chunks)
                mod.next = "STEP"
        with mod.State("FINISH"):
            with mod.If(~self.c_busy):
                mod.d.comb += self.done.eq(1)
                if self._pulses is not None:   # the image's pair of C is complete
                    mod.d.comb += self._advance_c.eq(1)
                mod.next = "IDLE"
        # One SGD step in all three tiles at once (each with its own LFSR).
        with mod.State("APPLY"):
            done_now = tiles_done | Cat(self.a_done, self.b_done, self.c_done)
            mod.d.sync += tiles_done.eq(done_now)
            with mod.If(done_now.all()):
                mod.d.comb += self.done.eq(1)
                mod.next = "IDLE"
