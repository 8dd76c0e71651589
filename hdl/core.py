"""The neural-ODE core: three crossbar tiles, the Euler/Newton controller, a trajectory memory.

``dz/dt = B·relu(A z)`` integrated with explicit or implicit Euler (DESIGN §3), then
``logits = C·z_N + d`` and the class (argmax). The model twin is
:meth:`xbarode.model.fixed_net.FixedNetwork.forward` on one image; tests compare every logit,
state word, status word and flag.

Dataflow. Tile A holds ``A``; tile B holds ``Bᵀ``; tile C holds ``C`` and the bias ``d``. One
*chain* computes ``B·φ(A v)``: A's forward product emits ``u_i = (A v)_i`` row by row on its
``y_out`` side port; the controller applies ``φ`` (relu, recording the Heaviside mask, or the
recorded mask) and feeds ``φ(u_i)`` to B's ``s_in``, and B — running its *transposed* product
``(Bᵀ)ᵀ r = B r`` as the words arrive — accumulates column ``i`` of ``B`` times ``r_i`` while
A is still computing. B's narrowing folds in ``h`` (a shift). The two products overlap, so a
chain costs about one product's time. The controller then combines B's result chunk by chunk
(``lanes`` words per cycle) with the state, and writes the next operand straight into A's
input banks (and C's).

- explicit Euler: ``z ← sat(z + narrow(h·B·relu(A z)))``;
- implicit Euler: predictor ``w = z + h·B·relu(A z)``; per Newton iteration the residual
  ``G = sat(w − z − h·B·relu(A w))`` (mask ``D`` recorded), stop when ``max|G| <= tol`` or
  after ``max_iter`` updates; else ``δ = G``, ``neumann_terms`` times
  ``δ ← sat(G + h·B·(D ⊙ A δ))``, and ``w ← sat(w − δ)``; the step's state is ``w``.
"""

from __future__ import annotations

from amaranth import Array, Module, Mux, Signal, signed
from amaranth.lib import enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from xbarode.core_config import CoreConfig
from xbarode.model.fixed_net import site_seed

from .rounding import narrow
from .tile import CrossbarTile, TileOp

__all__ = ["Core", "CoreOp"]


class CoreOp(enum.Enum, shape=4):
    """Host operations of the core, selected on ``op`` when ``start`` is pulsed.

    =============== ===================================================================
    LOAD_A          stream in ``A`` (m·m weight words, row-major)
    LOAD_B          stream in ``Bᵀ`` (m·m weight words, row-major: ``B`` column by column)
    LOAD_C          stream in ``C`` (classes·m weight words, row-major)
    LOAD_D          stream in ``d`` (classes weight words)
    LOAD_IMAGE      stream in ``z_0`` (m state words)
    RUN             integrate and classify; ``done`` when the class is ready
    READ_LOGITS     stream out the logits (classes act words)
    READ_STATE      stream out ``z_N`` (m state words)
    READ_STATUS     stream out one word per step: Newton iterations (bits 0–7) and
                    converged (bit 8); explicit Euler steps read ``0x100``
    READ_TRAJECTORY stream out ``z_0 … z_N`` ((steps + 1)·m state words)
    =============== ===================================================================
    """

    LOAD_A = 0
    LOAD_B = 1
    LOAD_C = 2
    LOAD_D = 3
    LOAD_IMAGE = 4
    RUN = 5
    READ_LOGITS = 6
    READ_STATE = 7
    READ_STATUS = 8
    READ_TRAJECTORY = 9


# What a combine pass computes (chunk by chunk), and so what the controller is doing.
_EULER, _PREDICT, _RESID, _NEU, _WUPD, _FINAL = range(6)


class Core(wiring.Component):
    """The neural-ODE core for a :class:`~xbarode.core_config.CoreConfig`.

    Attributes
    ----------
    i : In(stream.Signature(signed(word)))
        Words in (LOAD_*); ``word`` is the widest of the weight and state formats.
    o : Out(stream.Signature(signed(word)))
        Words out (READ_*).
    op : In(CoreOp)
    start : In(1)
        Pulse for one cycle while ``busy`` is low.
    busy, done : Out(1)
        ``done`` pulses for one cycle when an operation ends.
    overflow : Out(1)
        Sticky: some narrowing or saturating addition saturated since the last ``clear``.
    clear : In(1)
    cls : Out(range(classes))
        The class of the last RUN (argmax of the logits, ties to the lowest index).
    converged : Out(1)
        Every implicit-Euler step of the last RUN converged (1 for explicit Euler).
    iterations : Out(16)
        Newton iterations of the last RUN, summed over its steps.

    Notes
    -----
    Latency of RUN: per explicit step one chain (about ``m·C + T + 15`` cycles with
    ``C = ceil(m/lanes)``, the two products overlapping) and one combine (``C + 1``); implicit
    steps take one chain and combine per predictor, residual, Neumann term, and one combine per
    update; then C's forward product. ``xbarode simulate`` reports the measured cycles.
    """

    def __init__(self, config: CoreConfig):
        if not isinstance(config, CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {type(config).__name__}")
        self._config = config
        f = config.formats()
        self._formats = f
        m, lanes, seed = config.m, config.lanes, config.lfsr_seed
        common = {"lanes": lanes, "weight_format": f.weight, "acc_width": config.acc_width,
                  "rounding": config.rounding, "side_ports": True}
        self._a = CrossbarTile(rows=m, cols=m, input_format=f.state, output_format=f.act,
                               lfsr_seed=site_seed(seed, 0), **common)
        self._b = CrossbarTile(rows=m, cols=m, input_format=f.act, output_format=f.state,
                               shift=config.h_shift, lfsr_seed=site_seed(seed, 1), **common)
        self._c = CrossbarTile(rows=config.classes, cols=m, input_format=f.state,
                               output_format=f.act, bias=True, lfsr_seed=site_seed(seed, 2),
                               **common)
        for tile in (self._a, self._b, self._c):
            tile._MustUse__silence = True   # parts of the core, used when it is elaborated
        word = max(f.weight.width, f.state.width, f.act.width)
        super().__init__({
            "i": In(stream.Signature(signed(word))),
            "o": Out(stream.Signature(signed(word))),
            "op": In(CoreOp),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "overflow": Out(1),
            "clear": In(1),
            "cls": Out(range(config.classes)),
            "converged": Out(1),
            "iterations": Out(16),
        })

    @property
    def config(self) -> CoreConfig:
        """The configuration."""
        return self._config

    @property
    def chunks(self) -> int:
        """``C = ceil(m / lanes)``: chunks of a state vector."""
        return -(-self._config.m // self._config.lanes)

    def elaborate(self, platform):
        mod = Module()
        cfg, f = self._config, self._formats
        m, lanes, chunks, steps = cfg.m, cfg.lanes, self.chunks, cfg.steps
        sw = f.state.width
        A, B, C = self._a, self._b, self._c
        mod.submodules.tile_a, mod.submodules.tile_b, mod.submodules.tile_c = A, B, C

        # Banked vectors: lane k holds entries j ≡ k (mod lanes) at address j // lanes, the
        # tiles' own banking, so a whole chunk moves per cycle.
        def banks(name, depth):
            mems = [Memory(shape=signed(sw), depth=depth, init=[]) for _ in range(lanes)]
            for k, mem in enumerate(mems):
                mod.submodules[f"{name}{k}"] = mem
            return [mem.read_port() for mem in mems], [mem.write_port() for mem in mems]

        z_rd, z_wr = banks("z", chunks)
        w_rd, w_wr = banks("w", chunks)
        g_rd, g_wr = banks("g", chunks)
        d_rd, d_wr = banks("dl", chunks)
        t_rd, t_wr = banks("traj", (steps + 1) * chunks)
        vec_addr = Signal(range(max(chunks + 1, 2)))
        traj_addr = Signal(range((steps + 2) * chunks + 1))
        for port in z_rd + w_rd + g_rd + d_rd:
            mod.d.comb += [port.addr.eq(vec_addr), port.en.eq(1)]
        for port in t_rd:
            mod.d.comb += [port.addr.eq(traj_addr), port.en.eq(1)]
        for tile in (A, B, C):
            mod.d.comb += tile.clear.eq(self.clear)
        mod.d.comb += B.y_side_addr.eq(vec_addr)

        # Status.
        core_ovf = Signal()
        mod.d.comb += self.overflow.eq(core_ovf | A.overflow | B.overflow | C.overflow)
        ovf_set = Signal()
        with mod.If(self.clear):
            mod.d.sync += core_ovf.eq(0)
        with mod.Elif(ovf_set):
            mod.d.sync += core_ovf.eq(1)
        logits = Array(Signal(signed(f.act.width), name=f"logit{k}")
                       for k in range(cfg.classes))
        status = Array(Signal(9, name=f"status{n}") for n in range(steps))
        best = Signal(signed(f.act.width))

        # Controller registers.
        n = Signal(range(steps + 1))
        phase = Signal(range(6))
        it = Signal(8)
        nt = Signal(range(cfg.neumann_terms + 2))
        not_conv = Signal()
        mask = Signal(m)
        u_idx = Signal(range(max(m, cfg.classes) + 1))
        chunk = Signal(range(chunks + 1))
        count = Signal(range((steps + 1) * m + 1))
        lane = Signal(range(max(lanes, 2)))
        waddr = Signal(range(max((steps + 1) * chunks, 2)))
        traj_base = Signal(range((steps + 2) * chunks + 1))
        total_words = Signal(range((steps + 1) * m + 1))
        pos = Signal(range(max(m, 2)))     # word within a state vector (READ_*)
        op_reg = Signal(CoreOp)

        def start_tile(tile, op):
            mod.d.comb += [tile.op.eq(op), tile.start.eq(1)]

        def write_lane(wr_ports, k, addr, value):
            mod.d.comb += [wr_ports[k].addr.eq(addr), wr_ports[k].data.eq(value),
                           wr_ports[k].en.eq(1)]

        def side_write(tile, k, addr, value):
            mod.d.comb += [tile.x_side_addr.eq(addr), tile.x_side_data[k].eq(value),
                           tile.x_side_en[k].eq(1)]

        def saturate(value):
            out, sat = narrow(mod, value, 0, sw)
            return out, sat

        mod.d.comb += self.busy.eq(1)
        with mod.FSM():
            with mod.State("IDLE"):
                mod.d.comb += self.busy.eq(0)
                with mod.If(self.start):
                    mod.d.sync += [count.eq(0), lane.eq(0), waddr.eq(0)]
                    with mod.Switch(self.op):
                        for op, tile, tile_op in ((CoreOp.LOAD_A, A, TileOp.LOAD_W),
                                                  (CoreOp.LOAD_B, B, TileOp.LOAD_W),
                                                  (CoreOp.LOAD_C, C, TileOp.LOAD_W),
                                                  (CoreOp.LOAD_D, C, TileOp.LOAD_BIAS)):
                            with mod.Case(op):
                                start_tile(tile, tile_op)
                                mod.next = f"PASS_{op.name}"
                        with mod.Case(CoreOp.LOAD_IMAGE):
                            mod.next = "LOAD_IMAGE"
                        with mod.Case(CoreOp.RUN):
                            mod.d.sync += [n.eq(0), traj_base.eq(chunks), self.iterations.eq(0),
                                           self.converged.eq(1)]
                            mod.next = "STEP"
                        with mod.Case(CoreOp.READ_LOGITS, CoreOp.READ_STATUS):
                            mod.next = "READ_SMALL"
                        with mod.Case(CoreOp.READ_STATE):
                            mod.d.sync += total_words.eq(m)
                            mod.next = "READ_ADDR"
                        with mod.Case(CoreOp.READ_TRAJECTORY):
                            mod.d.sync += total_words.eq((steps + 1) * m)
                            mod.next = "READ_ADDR"
                        with mod.Default():
                            mod.next = "NOTHING"
                    mod.d.sync += [op_reg.eq(self.op), pos.eq(0)]

            with mod.State("NOTHING"):
                mod.d.comb += self.done.eq(1)
                mod.next = "IDLE"

            # Weight loads: the host's stream goes straight to the tile.
            for op, tile in ((CoreOp.LOAD_A, A), (CoreOp.LOAD_B, B), (CoreOp.LOAD_C, C),
                             (CoreOp.LOAD_D, C)):
                with mod.State(f"PASS_{op.name}"):
                    mod.d.comb += [tile.i.valid.eq(self.i.valid),
                                   tile.i.payload.eq(self.i.payload),
                                   self.i.ready.eq(tile.i.ready)]
                    with mod.If(tile.done):
                        mod.d.comb += self.done.eq(1)
                        mod.next = "IDLE"

            # z_0: into the state banks, the trajectory, and the inputs of tiles A and C.
            with mod.State("LOAD_IMAGE"):
                mod.d.comb += self.i.ready.eq(1)
                with mod.If(self.i.valid):
                    word = self.i.payload[:sw].as_signed()
                    for k in range(lanes):
                        with mod.If(lane == k):
                            write_lane(z_wr, k, waddr, word)
                            write_lane(t_wr, k, waddr, word)
                            side_write(A, k, waddr, word)
                            side_write(C, k, waddr, word)
                    mod.d.sync += count.eq(count + 1)
                    with mod.If((lane == lanes - 1) | (count == m - 1)):
                        mod.d.sync += [lane.eq(0), waddr.eq(waddr + 1)]
                    with mod.Else():
                        mod.d.sync += lane.eq(lane + 1)
                    with mod.If(count == m - 1):
                        mod.d.comb += self.done.eq(1)
                        mod.next = "IDLE"

            # The step loop.
            with mod.State("STEP"):
                with mod.If(n == steps):
                    mod.next = "CLASSIFY_START"
                with mod.Else():
                    mod.d.sync += [phase.eq(_EULER if cfg.method == "euler" else _PREDICT),
                                   it.eq(0)]
                    mod.next = "CHAIN_START"

            # One chain: B·φ(A v), the products overlapping.
            with mod.State("CHAIN_START"):
                start_tile(A, TileOp.FORWARD)
                start_tile(B, TileOp.TRANSPOSED_STREAM)
                mod.d.sync += u_idx.eq(0)
                mod.next = "CHAIN_RUN"
            with mod.State("CHAIN_RUN"):
                u = A.y_out.payload
                masked = Signal(signed(f.act.width))
                with mod.If(phase == _NEU):
                    mod.d.comb += masked.eq(Mux(mask.bit_select(u_idx, 1), u, 0))
                with mod.Else():
                    mod.d.comb += masked.eq(Mux(u > 0, u, 0))
                mod.d.comb += [B.s_in.valid.eq(A.y_out.valid), B.s_in.payload.eq(masked)]
                with mod.If(A.y_out.valid):
                    mod.d.sync += u_idx.eq(u_idx + 1)
                    with mod.If(phase != _NEU):
                        # relu's Heaviside mask (H(0) = 0); the Neumann terms reuse the
                        # residual's.
                        for i in range(m):
                            with mod.If(u_idx == i):
                                mod.d.sync += mask[i].eq(u > 0)
                with mod.If(B.done):
                    mod.d.sync += [chunk.eq(0), not_conv.eq(0)]
                    mod.next = "COMBINE_ADDR"

            # Combine, chunk by chunk: reads issued one cycle ahead.
            with mod.State("COMBINE_ADDR"):   # vec_addr = 0: chunk 0 is read
                mod.next = "COMBINE"
            with mod.State("COMBINE"):
                mod.d.comb += vec_addr.eq(chunk + 1)
                chunk_sat = Signal(lanes)
                chunk_far = Signal(lanes)
                for k in range(lanes):
                    valid = Signal(name=f"cvalid{k}")
                    mod.d.comb += valid.eq(chunk * lanes + k < m)
                    dz = B.y_side_data[k]
                    z_k, w_k, g_k, d_k = z_rd[k].data, w_rd[k].data, g_rd[k].data, d_rd[k].data
                    wide = Signal(signed(sw + 2), name=f"cwide{k}")
                    with mod.Switch(phase):
                        with mod.Case(_EULER, _PREDICT):
                            mod.d.comb += wide.eq(z_k + dz)
                        with mod.Case(_RESID):
                            mod.d.comb += wide.eq(w_k - z_k - dz)
                        with mod.Case(_NEU):
                            mod.d.comb += wide.eq(g_k + dz)
                        with mod.Case(_WUPD):
                            mod.d.comb += wide.eq(w_k - d_k)
                        with mod.Case(_FINAL):
                            mod.d.comb += wide.eq(w_k)
                    value, sat = saturate(wide)
                    mod.d.comb += chunk_sat[k].eq(sat & valid)
                    mod.d.comb += chunk_far[k].eq(valid & ((value > cfg.tol)
                                                           | (value < -cfg.tol)))
                    with mod.If(valid):
                        with mod.Switch(phase):
                            with mod.Case(_EULER, _FINAL):
                                write_lane(z_wr, k, chunk, value)
                                write_lane(t_wr, k, traj_base + chunk, value)
                                side_write(A, k, chunk, value)
                                side_write(C, k, chunk, value)
                            with mod.Case(_PREDICT, _WUPD):
                                write_lane(w_wr, k, chunk, value)
                                side_write(A, k, chunk, value)
                            with mod.Case(_RESID):
                                write_lane(g_wr, k, chunk, value)
                                write_lane(d_wr, k, chunk, value)
                                side_write(A, k, chunk, value)
                            with mod.Case(_NEU):
                                write_lane(d_wr, k, chunk, value)
                                side_write(A, k, chunk, value)
                with mod.If(chunk_sat.any()):
                    mod.d.comb += ovf_set.eq(1)
                with mod.If((phase == _RESID) & chunk_far.any()):
                    mod.d.sync += not_conv.eq(1)
                mod.d.sync += chunk.eq(chunk + 1)
                with mod.If(chunk == chunks - 1):
                    mod.next = "AFTER_COMBINE"

            with mod.State("AFTER_COMBINE"):
                with mod.Switch(phase):
                    with mod.Case(_EULER):
                        mod.d.sync += [status[n].eq(0x100), n.eq(n + 1),
                                       traj_base.eq(traj_base + chunks)]
                        mod.next = "STEP"
                    with mod.Case(_PREDICT):
                        mod.d.sync += phase.eq(_RESID)
                        mod.next = "CHAIN_START"
                    with mod.Case(_RESID):
                        with mod.If(~not_conv | (it == cfg.max_iter)):
                            mod.d.sync += [phase.eq(_FINAL),
                                           status[n].eq(it | (~not_conv << 8))]
                            with mod.If(not_conv):
                                mod.d.sync += self.converged.eq(0)
                            mod.next = "COMBINE_START"
                        with mod.Elif(cfg.neumann_terms == 0):
                            mod.d.sync += phase.eq(_WUPD)
                            mod.next = "COMBINE_START"
                        with mod.Else():
                            mod.d.sync += [phase.eq(_NEU), nt.eq(0)]
                            mod.next = "CHAIN_START"
                    with mod.Case(_NEU):
                        mod.d.sync += nt.eq(nt + 1)
                        with mod.If(nt == cfg.neumann_terms - 1):
                            mod.d.sync += phase.eq(_WUPD)
                            mod.next = "COMBINE_START"
                        with mod.Else():
                            mod.next = "CHAIN_START"
                    with mod.Case(_WUPD):
                        mod.d.sync += [it.eq(it + 1), self.iterations.eq(self.iterations + 1),
                                       phase.eq(_RESID)]
                        mod.next = "CHAIN_START"
                    with mod.Case(_FINAL):
                        mod.d.sync += [n.eq(n + 1), traj_base.eq(traj_base + chunks)]
                        mod.next = "STEP"

            # A combine without a chain before it (the update, the step's final state).
            with mod.State("COMBINE_START"):
                mod.d.sync += [chunk.eq(0), not_conv.eq(0)]
                mod.next = "COMBINE_ADDR"

            # The classifier: C's forward product with its bias; the argmax as logits arrive.
            with mod.State("CLASSIFY_START"):
                start_tile(C, TileOp.FORWARD)
                mod.d.sync += u_idx.eq(0)
                mod.next = "CLASSIFY"
            with mod.State("CLASSIFY"):
                with mod.If(C.y_out.valid):
                    value = C.y_out.payload
                    mod.d.sync += [logits[u_idx].eq(value), u_idx.eq(u_idx + 1)]
                    with mod.If((u_idx == 0) | (value > best)):
                        mod.d.sync += [best.eq(value), self.cls.eq(u_idx)]
                with mod.If(C.done):
                    mod.d.comb += self.done.eq(1)
                    mod.next = "IDLE"

            # READ_LOGITS, READ_STATUS: from registers.
            with mod.State("READ_SMALL"):
                is_logits = op_reg == CoreOp.READ_LOGITS
                last = Mux(is_logits, cfg.classes - 1, steps - 1)
                mod.d.comb += [self.o.valid.eq(1),
                               self.o.payload.eq(Mux(is_logits, logits[count],
                                                     status[count]))]
                with mod.If(self.o.ready):
                    mod.d.sync += count.eq(count + 1)
                    with mod.If(count == last):
                        mod.d.comb += self.done.eq(1)
                        mod.next = "IDLE"

            # READ_STATE, READ_TRAJECTORY: banked memories, one word per cycle.
            with mod.State("READ_ADDR"):
                base = Mux(op_reg == CoreOp.READ_STATE, steps * chunks, 0)
                mod.d.comb += traj_addr.eq(base)
                mod.d.sync += waddr.eq(base)
                mod.next = "READ_DATA"
            with mod.State("READ_DATA"):
                mod.d.comb += [self.o.valid.eq(1), traj_addr.eq(waddr)]
                for k in range(lanes):
                    with mod.If(lane == k):
                        mod.d.comb += self.o.payload.eq(t_rd[k].data)
                with mod.If(self.o.ready):
                    mod.d.sync += count.eq(count + 1)
                    with mod.If((lane == lanes - 1) | (pos == m - 1)):
                        mod.d.comb += traj_addr.eq(waddr + 1)
                        mod.d.sync += [waddr.eq(waddr + 1), lane.eq(0)]
                    with mod.Else():
                        mod.d.sync += lane.eq(lane + 1)
                    mod.d.sync += pos.eq(Mux(pos == m - 1, 0, pos + 1))
                    with mod.If(count == total_words - 1):
                        mod.d.comb += self.done.eq(1)
                        mod.next = "IDLE"
        return mod
