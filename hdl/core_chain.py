"""The core's chain engine: one *chain* ``r = h·B·φ(A v)`` of the neural ODE's right-hand side,
with one signature (:class:`ChainSignature`) and two implementations.

- :class:`DirectChain`: tiles A (holding ``A``) and B (holding ``Bᵀ``). A's forward product
  emits ``u_i = (A v)_i`` row by row on its ``y_out`` side port; ``φ(u_i)`` goes to B's
  ``s_in`` and B, running its transposed product as the words arrive, accumulates column
  ``i`` of ``B`` times ``φ(u_i)`` while A is still computing (B's narrowing folds in ``h``).
  The operand ``v`` is A's input banks, the result B's result banks.
- :class:`FourierChain`: two :class:`~xbarode.hdl.fourier.FourierConv` units holding A's and
  B's kernel spectra (with ``c`` channels two :class:`~xbarode.hdl.fourier_bank.FourierBank`
  units holding the c×c banks' spectra, the state's channels one after the other). ``v`` (in
  banks of its own) streams into unit A, shifted into the data format; A convolves; its
  result streams through the narrowing to ``act`` (one rounding, tile A's LFSR site), ``φ``
  and the shift back into the data format into unit B; B convolves; its result is narrowed
  to ``state`` with ``h`` folded in (tile B's site) into the result banks.

``φ`` is relu, recording the Heaviside mask ``H(u_i)`` (``H(0) = 0``), or, where ``masked``
(the Neumann terms of implicit Euler), the mask recorded by the last chain without it.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from xbarode.model.fixed import ROUNDINGS, Format, site_seed

from .checked import CheckedComponent
from .core_parts import VectorBanks, check_int, stream_lanes
from .fourier import FourierOp
from .fourier_bank import BankOp
from .rounding import LfsrBank, narrow, rounding_offset
from .tile import TileOp

__all__ = ["ChainSignature", "DirectChain", "FourierChain"]


class ChainSignature(wiring.Signature):
    """The chain engine as its controller sees it (members' directions are the controller's;
    an engine has ``chain: In(ChainSignature(...))``).

    Parameters
    ----------
    lanes, chunks : int
        Lanes, and chunks of a vector (``ceil(m / lanes)``).
    x_width, r_width : int
        Widths of the operand words written and of the result words read.

    Attributes
    ----------
    start : Out(1)
        Start a chain (the engine idle).
    masked : Out(1)
        ``φ`` is the recorded mask (held during the chain); else relu, recording the mask.
    done : In(1)
        The chain ends in this cycle: the result can be read from the next.
    x_addr : Out(range(chunks))
    x_data : Out(signed(x_width)).array(lanes)
    x_en : Out(1).array(lanes)
        Write lane ``k``'s word of chunk ``x_addr`` of the next chain's operand ``v``.
    r_addr : Out(range(chunks + 1))
    r_data : In(signed(r_width)).array(lanes)
        The result's chunk at the ``r_addr`` of the cycle before (while idle).
    saturated : In(1)
        A narrowing of the chain saturated in this cycle (for the sticky overflow flag).
    """

    @staticmethod
    def check_parameters(*, lanes: int, chunks: int, x_width: int, r_width: int) -> None:
        """The constructor's checks; a component that builds its signature from its own
        arguments checks them with it before it is made
        (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        for name, value in (("lanes", lanes), ("chunks", chunks), ("x_width", x_width),
                            ("r_width", r_width)):
            check_int(name, value, 1)

    def __init__(self, *, lanes: int, chunks: int, x_width: int, r_width: int):
        self.check_parameters(lanes=lanes, chunks=chunks, x_width=x_width, r_width=r_width)
        super().__init__({
            "start": Out(1), "masked": Out(1), "done": In(1),
            "x_addr": Out(range(max(chunks, 2))),
            "x_data": Out(signed(x_width)).array(lanes),
            "x_en": Out(1).array(lanes),
            "r_addr": Out(range(max(chunks + 1, 2))),
            "r_data": In(signed(r_width)).array(lanes),
            "saturated": In(1),
        })


class _Mask:
    """φ and the Heaviside mask of a chain: the word index ``u_idx`` and the mask bits.

    With ``memory`` the bits are a one-bit memory of ``m`` words (block RAM at the Fourier
    path's large ``m``, e.g. 3 136 bits at 28×28 with 4 channels, not as many flip-flops behind
    an ``m``-way decoder), read one cycle ahead at the index the next cycle will have, so that
    the bit of ``u_idx`` is there when its word arrives. Without, ``m`` flip-flops (the direct
    path: ``m`` at most 1 024, beside tiles of ``m²`` weights)."""

    def __init__(self, mod, m, act_width, masked, *, memory=False):
        self.mod, self.m, self.masked = mod, m, masked
        self.act_width = act_width
        self.u_idx = Signal(range(m + 1))
        self._next = Signal(range(m + 1))
        mod.d.comb += self._next.eq(self.u_idx)
        mod.d.sync += self.u_idx.eq(self._next)
        if memory:
            mod.submodules.mask = mem = Memory(shape=1, depth=m, init=[])
            self._write, read = mem.write_port(), mem.read_port()
            mod.d.comb += read.addr.eq(self._next)
            self._bit = read.data
        else:
            self._write, self._bits = None, Signal(m)
            self._bit = self._bits.bit_select(self.u_idx, 1)

    def restart(self):
        """The next chain's first word is word 0."""
        self.mod.d.comb += self._next.eq(0)

    def phi(self, u):
        """relu (where ``masked``: the recorded mask) of ``u_idx``'s word ``u``."""
        out = Signal(signed(self.act_width))
        with self.mod.If(self.masked):
            self.mod.d.comb += out.eq(Mux(self._bit, u, 0))
        with self.mod.Else():
            self.mod.d.comb += out.eq(Mux(u > 0, u, 0))
        return out

    def next_u(self, u):
        """``u`` has passed: count it; record its mask bit unless ``masked``."""
        self.mod.d.comb += self._next.eq(self.u_idx + 1)
        with self.mod.If(~self.masked):
            if self._write is not None:
                self.mod.d.comb += [self._write.addr.eq(self.u_idx),
                                    self._write.data.eq(u > 0), self._write.en.eq(1)]
            else:
                for i in range(self.m):
                    with self.mod.If(self.u_idx == i):
                        self.mod.d.sync += self._bits[i].eq(u > 0)


class DirectChain(CheckedComponent):
    """A chain on tiles A and B, the two products overlapping.

    Parameters
    ----------
    m, lanes : int
        State words and lanes, ``>= 1``.
    act_width : int
        Width of ``φ(u)`` (the act format's).
    u_width, s_width : int
        Widths of A's ``y_out`` words and of B's ``s_in`` words.
    x_width, r_width : int
        Widths of A's input words and of B's result words.

    Attributes
    ----------
    chain : In(ChainSignature(...))
        The controller's side.
    a_op, b_op : Out(TileOp)
    a_start, b_start : Out(1)
        Start tile A (FORWARD) and B (TRANSPOSED_STREAM).
    a_y : In(stream.Signature(signed(u_width), always_ready=True))
        A's ``y_out``.
    b_s : Out(stream.Signature(signed(s_width), always_ready=True))
        B's ``s_in``.
    b_done : In(1)
        B's ``done``.
    a_x_addr, a_x_data, a_x_en : Out
        A's ``x_side_*`` (the operand: ``chain.x_*``).
    b_y_addr : Out(range(chunks + 1))
    b_y_data : In(signed(r_width)).array(lanes)
        B's ``y_side_*`` (the result: ``chain.r_*``).

    Notes
    -----
    Latency: ``chain.done`` with B's ``done``, about ``m·C + T + 15`` cycles after
    ``chain.start`` (``C = ceil(m/lanes)``, ``T`` the tiles' adder-tree latency): A's product
    and B's overlap.
    """

    @staticmethod
    def check_parameters(*, m: int, lanes: int, act_width: int, u_width: int, s_width: int,
                         x_width: int, r_width: int) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        for name, value in (("m", m), ("lanes", lanes), ("act_width", act_width),
                            ("u_width", u_width), ("s_width", s_width)):
            check_int(name, value, 1)
        ChainSignature.check_parameters(lanes=lanes, chunks=-(-m // lanes), x_width=x_width,
                                        r_width=r_width)

    def __init__(self, *, m: int, lanes: int, act_width: int, u_width: int, s_width: int,
                 x_width: int, r_width: int):
        chunks = -(-m // lanes)
        self._m, self._lanes, self._act_width = m, lanes, act_width
        super().__init__({
            "chain": In(ChainSignature(lanes=lanes, chunks=chunks, x_width=x_width,
                                       r_width=r_width)),
            "a_op": Out(TileOp), "a_start": Out(1), "b_op": Out(TileOp), "b_start": Out(1),
            "a_y": In(stream.Signature(signed(u_width), always_ready=True)),
            "b_s": Out(stream.Signature(signed(s_width), always_ready=True)),
            "b_done": In(1),
            "a_x_addr": Out(range(max(chunks, 2))),
            "a_x_data": Out(signed(x_width)).array(lanes),
            "a_x_en": Out(lanes),
            "b_y_addr": Out(range(max(chunks + 1, 2))),
            "b_y_data": In(signed(r_width)).array(lanes),
        })

    @property
    def m(self) -> int:
        """State words."""
        return self._m

    @property
    def lanes(self) -> int:
        """Lanes."""
        return self._lanes

    def elaborate(self, platform):
        mod = Module()
        chain = self.chain
        # The operand is A's input banks; the result B's result banks.
        mod.d.comb += [self.a_x_addr.eq(chain.x_addr), self.b_y_addr.eq(chain.r_addr)]
        for k in range(self._lanes):
            mod.d.comb += [self.a_x_data[k].eq(chain.x_data[k]),
                           self.a_x_en[k].eq(chain.x_en[k]),
                           chain.r_data[k].eq(self.b_y_data[k])]
        phi = _Mask(mod, self._m, self._act_width, chain.masked)
        with mod.FSM():
            with mod.State("IDLE"):
                with mod.If(chain.start):
                    mod.d.comb += [self.a_op.eq(TileOp.FORWARD), self.a_start.eq(1),
                                   self.b_op.eq(TileOp.TRANSPOSED_STREAM), self.b_start.eq(1)]
                    phi.restart()
                    mod.next = "RUN"
            with mod.State("RUN"):
                u = self.a_y.payload
                mod.d.comb += [self.b_s.valid.eq(self.a_y.valid),
                               self.b_s.payload.eq(phi.phi(u))]
                with mod.If(self.a_y.valid):
                    phi.next_u(u)
                with mod.If(self.b_done):
                    mod.d.comb += chain.done.eq(1)
                    mod.next = "IDLE"
        return mod


class FourierChain(CheckedComponent):
    """A chain on two Fourier convolution units (or banks), one convolution after the other.

    Parameters
    ----------
    m, lanes : int
        State words (all channels) and lanes, ``>= 1``.
    state_format, act_format, data_format : Format
        Formats of the state words (operand and result), of ``φ``'s words, and of the
        units' data words (holding both exactly).
    h_shift : int
        ``h = 2^-h_shift``, folded into the result's narrowing.
    rounding : {"floor", "nearest", "stochastic"}
        Rounding of the two narrowings.
    lfsr_seed : int
        The core's seed: the narrowings use sites 0 and 1 (tile A's and B's seeds).
    unit_word : int
        Width of the units' ``i`` and ``o`` words.
    unit_ops : FourierOp or BankOp
        The units' operation enum: :class:`~xbarode.hdl.fourier.FourierOp` for
        :class:`~xbarode.hdl.fourier.FourierConv`, :class:`~xbarode.hdl.fourier_bank.BankOp`
        for :class:`~xbarode.hdl.fourier_bank.FourierBank` (whose LOAD_REAL and READ_REAL
        move all ``m`` words of a state, channel by channel).

    Attributes
    ----------
    chain : In(ChainSignature(...))
        The controller's side (operand and result words in the state format).
    a_op, b_op : Out(unit_ops)
    a_start, b_start : Out(1)
        Start unit A or B.
    a_i, b_i : Out(stream.Signature(signed(unit_word)))
    a_o, b_o : In(stream.Signature(signed(unit_word)))
        The units' streams.
    a_done, b_done : In(1)
        The units' ``done``.

    Notes
    -----
    Latency: ``chain.done`` about ``2·CONV + 3·m`` cycles after ``chain.start``
    (``CONV``: the unit's, :func:`~xbarode.sim.latency.dft_bound` or
    :func:`~xbarode.sim.latency.bank_bound`): ``v`` streams into A,
    A convolves, A's result streams into B, B convolves, B's result streams out.
    """

    @staticmethod
    def check_parameters(*, m: int, lanes: int, state_format: Format, act_format: Format,
                         data_format: Format, h_shift: int, rounding: str, lfsr_seed: int,
                         unit_word: int, unit_ops=FourierOp) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        if unit_ops not in (FourierOp, BankOp):
            raise TypeError(f"unit_ops must be FourierOp or BankOp, not {unit_ops!r}")
        for name, value in (("m", m), ("lanes", lanes), ("unit_word", unit_word)):
            check_int(name, value, 1)
        check_int("h_shift", h_shift, 0)
        for name, value in (("state_format", state_format), ("act_format", act_format),
                            ("data_format", data_format)):
            if not isinstance(value, Format):
                raise TypeError(f"{name} must be a Format, not {type(value).__name__}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {list(ROUNDINGS)}, not {rounding!r}")

    def __init__(self, *, m: int, lanes: int, state_format: Format, act_format: Format,
                 data_format: Format, h_shift: int, rounding: str, lfsr_seed: int,
                 unit_word: int, unit_ops=FourierOp):
        chunks = -(-m // lanes)
        self._ops = unit_ops
        self._m, self._lanes, self._chunks = m, lanes, chunks
        self._sf, self._af, self._df = state_format, act_format, data_format
        self._h_shift, self._rounding, self._seed = h_shift, rounding, lfsr_seed
        sw = state_format.width
        super().__init__({
            "chain": In(ChainSignature(lanes=lanes, chunks=chunks, x_width=sw, r_width=sw)),
            "a_op": Out(unit_ops), "a_start": Out(1), "b_op": Out(unit_ops),
            "b_start": Out(1),
            "a_i": Out(stream.Signature(signed(unit_word))),
            "a_o": In(stream.Signature(signed(unit_word))),
            "b_i": Out(stream.Signature(signed(unit_word))),
            "b_o": In(stream.Signature(signed(unit_word))),
            "a_done": In(1), "b_done": In(1),
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
    def unit_ops(self):
        """The units' operation enum (FourierOp or BankOp)."""
        return self._ops

    def _narrowing(self, mod, name, shift, site):
        """``narrowed(value, width) -> (word, take)``: ``value`` narrowed by ``shift`` bits
        with the rounding site's draw; ``take()`` consumes the draw and flags a saturation."""
        lfsr = None
        if self._rounding == "stochastic" and shift > 0:
            mod.submodules[name] = lfsr = LfsrBank(
                draws=1, bits=shift, steps={1}, seed=site_seed(self._seed, site))

        def narrowed(value, width):
            draw = None if lfsr is None else lfsr.draw[0]
            out, sat = narrow(mod, value, shift, width,
                              rounding_offset(self._rounding, shift, draw))

            def take():
                if lfsr is not None:
                    mod.d.comb += lfsr.advance.eq(1)
                with mod.If(sat):
                    mod.d.comb += self.chain.saturated.eq(1)
            return out, take
        return narrowed

    def elaborate(self, platform):
        mod = Module()
        chain, m, lanes, chunks = self.chain, self._m, self._lanes, self._chunks
        sf, af, df, ops = self._sf, self._af, self._df, self._ops
        A = {"op": self.a_op, "start": self.a_start, "i": self.a_i, "o": self.a_o,
             "done": self.a_done}
        B = {"op": self.b_op, "start": self.b_start, "i": self.b_i, "o": self.b_o,
             "done": self.b_done}

        # The operand v and the result h·B·φ(A v), banked.
        mod.submodules.v = v = VectorBanks(lanes=lanes, depth=chunks, width=sf.width)
        mod.submodules.dz = dz = VectorBanks(lanes=lanes, depth=chunks, width=sf.width)
        v_addr = Signal(range(max(chunks + 1, 2)))
        mod.d.comb += [v.rd_addr.eq(v_addr), dz.rd_addr.eq(chain.r_addr)]
        for k in range(lanes):
            mod.d.comb += [v.wr_addr[k].eq(chain.x_addr), v.wr_data[k].eq(chain.x_data[k]),
                           v.wr_en[k].eq(chain.x_en[k]), chain.r_data[k].eq(dz.rd_data[k])]

        chunk = Signal(range(chunks + 1))
        count = Signal(range(m + 1))
        lane = Signal(range(max(lanes, 2)))
        phi = _Mask(mod, m, af.width, chain.masked, memory=True)
        narrowed_u = self._narrowing(mod, "lfsr_u", df.frac - af.frac, 0)
        narrowed_dz = self._narrowing(mod, "lfsr_dz", df.frac + self._h_shift - sf.frac, 1)

        def start(unit, op):
            mod.d.comb += [unit["op"].eq(op), unit["start"].eq(1)]

        with mod.FSM():
            with mod.State("IDLE"):   # v_addr = 0: chunk 0 of v is read
                with mod.If(chain.start):
                    start(A, ops.LOAD_REAL)
                    mod.d.sync += [chunk.eq(0), lane.eq(0), count.eq(0)]
                    mod.next = "LOAD"
            with mod.State("LOAD"):
                stream_lanes(mod, sink=self.a_i, data=[word << (df.frac - sf.frac)
                                                       for word in v.rd_data],
                             addr=v_addr, at=chunk, lane=lane, count=count, lanes=lanes,
                             last_word=count == m - 1)
                with mod.If(self.a_done):
                    mod.next = "CONV_A"
            for unit, name, then in ((A, "A", "PIPE_START"), (B, "B", "READ_START")):
                with mod.State(f"CONV_{name}"):
                    start(unit, ops.CONV)
                    mod.next = f"WAIT_{name}"
                with mod.State(f"WAIT_{name}"):
                    with mod.If(unit["done"]):
                        mod.next = then
            with mod.State("PIPE_START"):
                start(A, ops.READ_REAL)
                start(B, ops.LOAD_REAL)
                phi.restart()
                mod.next = "PIPE"
            with mod.State("PIPE"):
                u, take_u = narrowed_u(self.a_o.payload, af.width)
                mod.d.comb += [self.b_i.valid.eq(self.a_o.valid),
                               self.a_o.ready.eq(self.b_i.ready),
                               self.b_i.payload.eq(phi.phi(u) << (df.frac - af.frac))]
                with mod.If(self.a_o.valid & self.b_i.ready):
                    phi.next_u(u)
                    take_u()
                with mod.If(self.b_done):
                    mod.next = "CONV_B"
            with mod.State("READ_START"):
                start(B, ops.READ_REAL)
                mod.d.sync += [chunk.eq(0), lane.eq(0)]
                mod.next = "READ"
            with mod.State("READ"):
                word, take_dz = narrowed_dz(self.b_o.payload, sf.width)
                mod.d.comb += self.b_o.ready.eq(1)
                with mod.If(self.b_o.valid):
                    take_dz()
                    for k in range(lanes):
                        with mod.If(lane == k):
                            mod.d.comb += [dz.wr_addr[k].eq(chunk), dz.wr_data[k].eq(word),
                                           dz.wr_en[k].eq(1)]
                    with mod.If(lane == lanes - 1):
                        mod.d.sync += [lane.eq(0), chunk.eq(chunk + 1)]
                    with mod.Else():
                        mod.d.sync += lane.eq(lane + 1)
                with mod.If(self.b_done):
                    mod.d.comb += chain.done.eq(1)
                    mod.next = "IDLE"
        return mod
