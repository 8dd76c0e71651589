"""The crossbar tile's sequencer: its state machine, counters, per-group read addresses and
the compute pipeline's metadata.

:class:`TileSequencer` is a builder, not a component: it builds its logic into the tile's own
module (:class:`~xbarode.hdl.tile.CrossbarTile` creates it in ``elaborate``). Its state
machine drives, combinationally and in many states, the ports of the tile's vector memories,
the LFSR's advance, the lane groups' bank addresses and enables, and the tile's streams; a
component would have to pass each of these through a port of its own. Its registers keep the
names that the synthesis flow and its tests look for in the tile's netlist (``raddr{g}``,
``rd_en{g}``, ``wg_en{g}``, ``in_issue_rows{g}``, …), which a component's name would prefix.

Structure for timing (the tile's class notes say why): the banks' read address is a register
per group of lanes, stepped by each group from its own copies of which walk the state machine
is in (``walking``); the machine keeps such copies of the states whose decisions fan out
(``mirrors``, set and cleared by :meth:`TileSequencer.goto`), so no decoder of its state
stands in front of the lanes; whether ``row`` and ``chunk`` are at their last values is a
register beside each (``row_last``, ``chunk_last``).
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

from amaranth import Cat, Mux, Signal, Value

from .groups import GROUP, KEEP, group_copies, group_count, own_copy, per_group, stage
from .lane_group import lane_control
from .rounding import sgd_step
from .tile_op import TileOp

__all__ = ["TileSequencer"]


class TileSequencer:
    """Build the sequencer of ``tile`` into ``m``.

    Parameters
    ----------
    m : Module
        The tile's module.
    tile : CrossbarTile
        The tile (its parameters and ports).
    mem : namespace
        The tile's vector memories' ports (``x_rd``, ``x_wr``, ``y_rd``, ``s_rd``, ``s_wr``,
        ``b_rd``, ``b_wr``, ``gd_rd``, ``gd_wr``; None where the tile has none).

    Attributes
    ----------
    row, chunk, lane, waddr, count : Signal
        The counters the states share; ``row_last``, ``chunk_last`` registered beside them.
    rd_addr, rd_en, wg_en : list of Signal
        Per group: the banks' read address, the reads cued a cycle ahead, the W and G banks'
        enable register.
    bank_addr, bank_en : list of Signal
        Per group: the W and G banks' address and enable as the group sees them (the walks'
        register, or a READ's or the tied walk's own read).
    walking, mirrors : dict of list of Signal
        The copies of states (see the module docstring).
    lw_valid, lx_valid, lw_lane, lw_addr, lw_word : list of Signal
        Per group: LOAD_W's and LOAD_X's word on its way to the banks (``lw_valid`` only on a
        writable tile).
    op, is_fwd, is_tr, is_upd, is_grad, is_acc, is_apply, streaming, y_fwd : Signal
        The operation and its decoded flags, registered at ``start``.
    s_count, tr_chunk : Signal
        Words of ``s`` that arrived on ``s_in``; the TRANSPOSED chunk the y banks take next.
    overflow_set : Signal
        The controller side's saturations of this cycle.
    """

    def __init__(self, m, tile, mem):
        self.m, self.tile, self.mem = m, tile, mem
        rows, cols, lanes = tile.rows, tile.cols, tile.lanes
        self.rows, self.cols, self.lanes, self.chunks = rows, cols, lanes, tile.chunks
        self.last_lanes = cols - (self.chunks - 1) * lanes   # valid lanes of the last chunk
        self.w_depth = rows * self.chunks
        self.n_groups = group_count(lanes)
        self.train, self.tied = tile.grad_format is not None, tile.taps is not None
        self.bias, self.side, self.chained = tile.bias, tile.side_ports, tile.read_chain
        self.writable = tile.writable
        self._loads()
        self._counters()
        self._reads()
        # The controller side's saturations (the forward rounding, the bias's and the taps'
        # steps), for the tile's overflow flag.
        self.overflow_set = Signal()
        self._here = []

    def _loads(self):
        """LOAD_W's and LOAD_X's words go to the banks through registers per group of lanes
        (valid, lane in the group, address, word), written the cycle after the handshake: the
        FSM's decision drives n_groups registers, not every lane's write multiplexers (the
        64-lane tile's critical path went from the FSM's state to all lanes' write data)."""
        m, n_groups, w_depth = self.m, self.n_groups, self.w_depth
        lw_valid = per_group(n_groups, 1, "lw_valid") if self.writable else []
        lx_valid = per_group(n_groups, 1, "lx_valid")
        self.lw_valid, self.lx_valid = lw_valid, lx_valid
        self.lw_lane = per_group(n_groups, range(GROUP), "lw_lane")
        self.lw_addr = per_group(n_groups, range(max(w_depth, 2)), "lw_addr")
        self.lw_word = per_group(n_groups, self.tile.i.payload.shape(), "lw_word")
        m.d.sync += [valid.eq(0) for valid in lw_valid + lx_valid]

    def load_word(self, valid):
        """Pass the stream's word to lane ``lane``'s bank (the next cycle), by ``valid``: the
        lane, address and word registers take their values in every cycle (:meth:`_counters`),
        so only ``valid`` waits for the FSM's decision."""
        for g in range(self.n_groups):
            self.m.d.sync += valid[g].eq(self.lane // GROUP == g)

    def _counters(self):
        """The counters shared by the stream and compute states, and the operation."""
        m, rows, chunks = self.m, self.rows, self.chunks
        self.row = Signal(range(max(rows, 2)))
        # (chunk, lane) also walk the vectors of x and y (LOAD_X, READ_Y)
        self.chunk = chunk = Signal(range(max(chunks, 2)))
        self.lane = Signal(range(max(self.lanes, 2)))
        self.waddr = waddr = Signal(range(max(self.w_depth, 2)))
        self.count = Signal(range(max(rows * self.cols, max(rows, self.cols)) + 1))
        self.y_fwd = Signal()   # the last product was a FORWARD*: READ_Y streams the f memory
        self.op = op = Signal(TileOp)
        for g in range(self.n_groups):   # LOAD_W's and LOAD_X's word, should it be taken
            load_addr = Mux(op == TileOp.LOAD_X, chunk, waddr) if self.writable else chunk
            m.d.sync += [self.lw_lane[g].eq(self.lane % GROUP),
                         self.lw_word[g].eq(self.tile.i.payload),
                         self.lw_addr[g].eq(load_addr)]
        # Whether row and chunk are at their last values, registered with them (set_row,
        # set_chunk): the walks' decisions take a flag, not a comparator on the counter.
        self.row_last = Signal(init=rows == 1, name="row_last")
        self.chunk_last = Signal(init=chunks == 1, name="chunk_last")
        # The operation, decoded once into registered flags (they fan out to every lane).
        for flag in ("is_fwd", "is_tr", "is_upd", "is_grad", "is_acc", "is_apply"):
            setattr(self, flag, Signal(name=flag))
        self.streaming = Signal()   # the running TRANSPOSED takes s from s_in
        self.s_count = Signal(range(rows + 1))   # words of s that arrived on s_in
        self.tr_chunk = Signal(range(max(chunks, 2)))   # the TRANSPOSED chunk written next

    def set_row(self, value):
        """``row <- value`` at the next edge, ``row_last`` with it."""
        self.m.d.sync += [self.row.eq(value), self.row_last.eq(Value.cast(value) == self.rows - 1)]

    def set_chunk(self, value):
        """``chunk <- value`` at the next edge, ``chunk_last`` with it."""
        self.m.d.sync += [self.chunk.eq(value),
                          self.chunk_last.eq(Value.cast(value) == self.chunks - 1)]

    def reset_counters(self):
        """Every counter to 0 at the next edge (an operation starts)."""
        self.set_row(0)
        self.set_chunk(0)
        self.m.d.sync += [self.lane.eq(0), self.waddr.eq(0), self.count.eq(0)]

    def step_lane_chunk(self):
        """Advance (lane, chunk) to the next element of a vector: bank lane, address chunk."""
        m, lane = self.m, self.lane
        with m.If(lane == self.lanes - 1):
            m.d.sync += lane.eq(0)
            self.set_chunk(self.chunk + 1)
        with m.Else():
            m.d.sync += lane.eq(lane + 1)

    def step_row_major(self):
        """Advance (lane, chunk, waddr) to the next weight in row-major order."""
        m, lane, waddr = self.m, self.lane, self.waddr
        with m.If(self.chunk_last & (lane == self.last_lanes - 1)):
            m.d.sync += [lane.eq(0), waddr.eq(waddr + 1)]
            self.set_chunk(0)
        with m.Elif(lane == self.lanes - 1):
            m.d.sync += [lane.eq(0), waddr.eq(waddr + 1)]
            self.set_chunk(self.chunk + 1)
        with m.Else():
            m.d.sync += lane.eq(lane + 1)

    def _reads(self):
        """The banks' read addresses and enables, and the FSM's copies of its states."""
        m, n_groups, w_depth = self.m, self.n_groups, self.w_depth
        # The banks' read address: one register per group of GROUP lanes (a fan-out bound for
        # the 2·lanes address pins, which sit in block-RAM rows all over the device), holding
        # the address read in this cycle — nothing but a wire between a register and the
        # pins. ("keep" stops Yosys merging the copies.) It is 0 between operations: every walk
        # steps back to 0 with its last step.
        self.rd_addr = rd_addr = per_group(n_groups, range(max(w_depth, 2)), "raddr")
        # Which product walk the FSM is in, a copy per group (``walking``, kept by ``goto``):
        # each group steps its own address from its own copy, and a walk's banks read while it
        # runs, so no decision of the FSM's state reaches a group's address or enable through
        # more than the flag's own look-up table.
        self.walking = walking = {name: per_group(n_groups, 1, f"in_{name.lower()}")
                                  for name in ("ISSUE_ROWS", "ISSUE_COLS")}
        # The FSM's own copies of other states, kept the same way: IDLE (``busy`` and the
        # decisions taken with ``start``) and the chain's READ states (its load and shift).
        self.mirrors = mirrors = {**walking,
                                  "IDLE": [Signal(init=1, name="in_idle", attrs=KEEP)]}
        if self.chained:
            mirrors |= {name: [Signal(name=f"in_{name.lower()}", attrs=KEEP)]
                        for name in ("READ_LOAD", "READ_DATA")}
        self.walk_starts = Signal()   # the FSM enters a walk (goto)
        # The banks' other reads, enabled a cycle ahead: ``read_next`` (READ_*, all banks) and
        # the chain's prefetch (``rd_en``); the W and G banks' enable ``wg_en`` is ``rd_en`` or
        # a walk, a register of its own at the block RAMs' enable pins (no look-up table
        # between them). A read decided in its own cycle (the multiplexer READ path, the tied
        # walk, the side ports) is added to them.
        self.read_next = Signal()
        self.rd_en, self.wg_en = per_group(n_groups, 1, "rd_en"), per_group(n_groups, 1, "wg_en")
        # The W and G banks' address and enable as each group sees them (these, or a READ's
        # or the tied walk's own read).
        self.bank_addr = [Signal(range(max(w_depth, 2)), name=f"bank_addr{g}")
                          for g in range(n_groups)]
        self.bank_en = [Signal(name=f"bank_en{g}") for g in range(n_groups)]
        m.d.comb += [addr.eq(reg) for addr, reg in zip(self.bank_addr, rd_addr, strict=True)]

    def next_read(self, address):
        """The banks read ``address`` in the next cycle (if enabled then)."""
        self.m.d.sync += [reg.eq(address) for reg in self.rd_addr]

    def advance_read(self, step):
        """The banks read ``step`` addresses on in the next cycle: each copy adds on its own
        (no address computed in one place travels to every group)."""
        self.m.d.sync += [reg.eq(reg + step) for reg in self.rd_addr]

    def pipeline(self):
        """The compute pipeline's issue and metadata, stage 0 (issue: the banks read) to stage
        4 (products), and the lanes' controls. Returns the controls (:func:`lane_control`) and the
        stages' metadata (``s3``, ``s3_last``, ``s3_nlanes``, ``s3_waddr``, ``s4``, ``s4_first``,
        ``s4_last``, ``s4_nlanes``)."""
        m, mem, lanes = self.m, self.mem, self.lanes
        self.issue = issue = Signal()
        self.issue_first = issue_first = Signal()   # first chunk of a row (forward) / row
        self.issue_last = issue_last = Signal()     # last chunk of a row (forward) / row
        self.issue_nlanes = issue_nlanes = Signal(range(lanes + 1))
        # The block-RAM banks (W, G) read only where the data is used (so that an enabled read
        # never meets a write to its address, see w_attrs); the small memories always read.
        # Their addresses are the walk's counters in every state (the data is used only
        # while a walk issues): no decoder of the FSM's state in front of the LUT RAM's read.
        for port in [*mem.x_rd, mem.s_rd]:
            m.d.comb += port.en.eq(1)
        m.d.comb += [*(port.addr.eq(self.chunk) for port in mem.x_rd),
                     mem.s_rd.addr.eq(self.row)]
        m.d.comb += [en.eq(reg) for en, reg in zip(self.bank_en, self.wg_en, strict=True)]
        for k in range(lanes):
            m.d.comb += mem.y_rd[k].en.eq(self.rd_en[k // GROUP])
        # Stage 1: memory data valid. Stage 2: memory data registered, the shared operand once
        # per group of lanes. Stage 3: multiplier operands registered (the DSP's input
        # registers), invalid lanes zeroed. Stage 4: products registered (its output register).
        s1, s1_first, s1_last, s1_nlanes, s1_waddr = stage(
            m, issue, issue_first, issue_last, issue_nlanes, self.waddr, name="s1")
        s2, s2_first, s2_last, s2_nlanes, s2_waddr = stage(
            m, s1, s1_first, s1_last, s1_nlanes, s1_waddr, name="s2")
        s3, s3_first, s3_last, s3_nlanes, s3_waddr = stage(
            m, s2, s2_first, s2_last, s2_nlanes, s2_waddr, name="s3")
        s4, s4_first, s4_last, s4_nlanes = stage(m, s3, s3_first, s3_last, s3_nlanes, name="s4")
        # The lanes' controls; each LaneGroup registers its own copy (its fan-out bound).
        is_tr, is_upd, is_acc, is_apply = self.is_tr, self.is_upd, self.is_acc, self.is_apply
        ctrl = Signal(lane_control(lanes, self.w_depth))
        m.d.comb += [ctrl.nlanes.eq(issue_nlanes), ctrl.waddr.eq(s3_waddr),
                     ctrl.times_s.eq(is_upd | is_acc), ctrl.s_right.eq(is_tr),
                     ctrl.tr_acc.eq(is_tr & s3), ctrl.tr_first.eq(s3_first),
                     ctrl.tr_clear.eq(is_tr & s4 & s4_last),
                     ctrl.u_write.eq((is_upd | is_apply) & s4), ctrl.grad.eq(self.is_grad),
                     ctrl.g_write.eq((is_acc | is_apply) & s3), ctrl.g_keep.eq(is_acc),
                     ctrl.apply.eq(is_apply)]
        return ctrl, SimpleNamespace(s3=s3, s3_last=s3_last, s3_nlanes=s3_nlanes,
                                     s3_waddr=s3_waddr, s4=s4, s4_first=s4_first,
                                     s4_last=s4_last, s4_nlanes=s4_nlanes)

    def step_read_addresses(self, load_g):
        """Each group steps its own read address, in the shape of a flip-flop's own controls:
        a synchronous reset, an enable, and the stepped address as data. Along a row walk +1;
        down a column walk +C, and to the next chunk's top (1 - (rows - 1)·C) after its last
        row (a bubble of TRANSPOSED_STREAM holds it); with each prefetch of the chain
        (``load_g``, per group, with ``read_chain``) for READ_W and READ_G, +1 (W and G are
        read row-major; READ_Y reads the y banks at ``chunk``). Back to 0 with the last step
        of each: a walk's where the FSM's registered flags say, a row-major READ's at the last
        address. The W and G banks' enable for the next cycle: a read cued (``rd_en``), a walk
        starting, or one going on."""
        m, rows, chunks, w_depth = self.m, self.rows, self.chunks, self.w_depth
        chained, row_last, chunk_last = self.chained, self.row_last, self.chunk_last
        self.ready_row = ready_row = Signal()   # the column walk's row may enter (s_i arrived)
        m.d.comb += ready_row.eq(~self.streaming | (self.row < self.s_count))
        if chained:
            op = self.op
            row_major_g = group_copies(m, self.n_groups,
                                       (op == TileOp.READ_W) | (op == TileOp.READ_G),
                                       "read_rows")
        for g in range(self.n_groups):
            address, in_rows, in_cols = (self.rd_addr[g], self.walking["ISSUE_ROWS"][g],
                                         self.walking["ISSUE_COLS"][g])
            down = in_cols & ready_row
            walk_ends = (in_rows | down) & chunk_last & row_last
            prefetch_w = load_g[g] & row_major_g[g] if chained else 0
            step = 1
            if chunks > 1:
                step = Mux(in_cols, Mux(row_last, 1 - (rows - 1) * chunks, chunks), 1)
            with m.If(walk_ends | (prefetch_w & (address == w_depth - 1))):
                m.d.sync += address.eq(0)
            with m.Elif(in_rows | down | prefetch_w):
                m.d.sync += address.eq(address + step)
            m.d.sync += self.wg_en[g].eq(self.read_next | (load_g[g] if chained else 0)
                                         | self.walk_starts | ((in_rows | in_cols) & ~walk_ends))

    # The FSM's state as the copies in ``mirrors`` see it: ``state`` is ``m.State`` that knows
    # its name, ``goto`` is ``m.next =`` that sets the copies of the state it enters and clears
    # those of the state it leaves (their only inputs: each copy follows the state it mirrors
    # without a decoder of the whole state).
    @contextlib.contextmanager
    def state(self, name):
        with self.m.State(name):
            self._here.append(name)
            try:
                yield
            finally:
                self._here.pop()

    def goto(self, name):
        m, here, mirrors = self.m, self._here, self.mirrors
        m.next = name
        if name != here[-1]:
            m.d.sync += [flag.eq(1) for flag in mirrors.get(name, ())]
            m.d.sync += [flag.eq(0) for flag in mirrors.get(here[-1], ())]
            if name in self.walking and here[-1] not in self.walking:
                m.d.comb += self.walk_starts.eq(1)

    def finish(self, next_state=None, when=None):
        """End the operation (``done``), or go on to ``next_state`` where ``when``."""
        m = self.m
        if next_state is None:
            m.d.comb += self.tile.done.eq(1)
            self.goto("IDLE")
            return
        with m.If(when):
            m.d.sync += self.count.eq(0)
            self.goto(next_state)
        with m.Else():
            self.finish()

    def finish_read(self, row_major):
        """The last word of READ_*: the bias words follow the weights' (``row_major``)."""
        if self.bias:
            self.finish("READ_BIAS", row_major)
        else:
            self.finish()

    def take_words(self, last, write=None):
        """A LOAD_* state's handshake: take a word, ``write(count)`` it, count it; the word
        ``last`` ends the operation."""
        m, tile = self.m, self.tile
        m.d.comb += tile.i.ready.eq(1)
        with m.If(tile.i.valid):
            if write is not None:
                write(self.count)
            m.d.sync += self.count.eq(self.count + 1)
            with m.If(self.count == last):
                m.d.comb += tile.done.eq(1)
                self.goto("IDLE")

    def read_controls(self, readout):
        """Drive the READ_* read-out (:mod:`xbarode.hdl.readout`): its source, and the lane
        (multiplexer) or the load and shift of the chain (``read_chain``); and the banks'
        reads other than the walks', enabled a cycle ahead: READ_* and the chain's prefetch (a
        chunk loaded into the chain is the cue to read the next, in the same group's banks).
        Returns the chain's per-group load cue (zeros without the chain)."""
        m, tile, op = self.m, self.tile, self.op
        self.readout = readout
        self.out_valid = Signal()
        m.d.comb += [tile.o.valid.eq(self.out_valid)]
        m.d.comb += readout.read_w.eq(op == TileOp.READ_W)
        if self.train:
            m.d.comb += readout.read_g.eq(op == TileOp.READ_G)
        load_g = [0] * self.n_groups
        if self.chained:
            # The chain acts on registered copies of the FSM's decisions, one per group of
            # lanes: a word is offered every other cycle (``phase``). It loads W and G from
            # their registered copies at stage 2 (no block RAM's clock-to-output in front of
            # the chain's multiplexer), a cycle after the banks' outputs; ``fresh`` waits for
            # them.
            chain_load, chain_shift = readout.load, readout.shift
            load_g = readout.loading
            # Where READ_DATA's offered word is (registered there, see below).
            last_of_chunk, last_word = Signal(name="last_of_chunk"), Signal(name="last_word")
            prefetch = Signal(2, name="prefetch")
            fresh, phase = Signal(name="fresh"), Signal(name="phase")
            self.last_of_chunk, self.last_word, self.fresh, self.phase = (
                last_of_chunk, last_word, fresh, phase)
            loaded = own_copy(m, chain_load, "chain_loaded")   # = load_g
            m.d.sync += [prefetch.eq(Cat(loaded, prefetch[0])),
                         fresh.eq(~loaded & (fresh | prefetch[1]))]
            # READ_DATA's handshake shifts the chain, or at the last word of a chunk loads the
            # next (the last word of all loads nothing); READ_LOAD loads the first. Decided
            # from the FSM's copies of those states, not from a decoder of its state.
            taken = self.mirrors["READ_DATA"][0] & tile.o.ready & phase
            m.d.comb += [chain_shift.eq(taken & ~last_of_chunk),
                         chain_load.eq(self.mirrors["READ_LOAD"][0]
                                       | (taken & last_of_chunk & fresh & ~last_word))]
        else:
            m.d.comb += readout.lane.eq(self.lane)
        for g in range(self.n_groups):
            m.d.sync += self.rd_en[g].eq(self.read_next | load_g[g])
        return load_g

    def _op_sets(self):
        """The operations this tile has, by how they run: row-walking products (FORWARD*),
        row-walking weight writes (UPDATE, ACCUMULATE, APPLY), column-walking products
        (TRANSPOSED*, the streamed ones only with side ports), stream reads; the rest of the
        TileOp values end at once (NOTHING)."""
        stream_ops = [TileOp.TRANSPOSED_STREAM] if self.side else []
        fwd_ops = [TileOp.FORWARD]
        # A pulsed UPDATE makes its pulse trains first (its own case in _dispatch).
        write_ops = [TileOp.UPDATE] if self.writable and self.pulses is None else []
        tr_ops = [TileOp.TRANSPOSED, *stream_ops]
        read_ops = [TileOp.READ_W, TileOp.READ_Y]
        grad_ops = []
        if self.train:
            grad_ops = [TileOp.FORWARD_G, TileOp.TRANSPOSED_G] + (
                [TileOp.TRANSPOSED_STREAM_G] if self.side else [])
            fwd_ops.append(TileOp.FORWARD_G)
            tr_ops += grad_ops[1:]
            stream_ops += grad_ops[2:]
            write_ops += [TileOp.ACCUMULATE] + ([] if self.tied else [TileOp.APPLY])
            read_ops.append(TileOp.READ_G)
        return SimpleNamespace(stream=stream_ops, fwd=fwd_ops, write=write_ops, tr=tr_ops,
                               read=read_ops, grad=grad_ops)

    def fsm(self, *, draws, fwd, forward_drain, walker=None, pulses=None):
        """The state machine. ``draws`` offers the LFSR's words (``advance``, ``offset``),
        ``fwd`` is the forward output stage (READ_Y after a FORWARD reads its memory),
        ``forward_drain`` the cycles from a forward issue to its result's write, ``walker``
        the tied-kernel walk (APPLY on a tile with ``taps``), ``pulses`` the pulse trains of
        a pulsed UPDATE (:class:`~xbarode.hdl.pulses.PulseTrains`: made in the state PULSES
        before the update's walk)."""
        m, tile = self.m, self.tile
        self.walker, self.pulses = walker, pulses
        # Pipeline occupancy: the operation ends when the last issue has drained: the last
        # forward result is written T + 6 cycles after its issue, a transposed one 6 cycles
        # after; an update writes 5 cycles after and raises the flag (if any) 6 after.
        self.forward_drain = forward_drain
        self.drain = Signal(range(forward_drain + 1))
        self.in_flight = Signal(range(forward_drain + 1))
        ops = self._op_sets()
        # busy, and the reads decided with start, from IDLE's copy (no decoder of the state
        # in front of the 2·lanes bank enables).
        idle = self.mirrors["IDLE"][0]
        m.d.comb += tile.busy.eq(~idle)
        m.d.comb += self.read_next.eq(idle & tile.start & tile.op.as_value().matches(*ops.read))
        with m.FSM():
            self._idle_state(ops)
            self._load_states()
            self._issue_states()
            self._apply_states(draws, walker)
            self._read_states(fwd)

    def _idle_state(self, ops):
        m, tile, lanes = self.m, self.tile, self.lanes
        with self.state("IDLE"):
            if self.side:
                for k in range(lanes):
                    m.d.comb += [self.mem.y_rd[k].addr.eq(tile.y_side_addr),
                                 self.mem.y_rd[k].en.eq(1)]
            with m.If(tile.start):
                if self.side:
                    m.d.sync += self.s_count.eq(0)

                def one_of(op_list):
                    return tile.op.as_value().matches(*op_list)

                if self.train:
                    m.d.sync += [self.is_grad.eq(one_of(ops.grad)),
                                 self.is_acc.eq(tile.op == TileOp.ACCUMULATE),
                                 self.is_apply.eq(tile.op == TileOp.APPLY)]
                m.d.sync += [self.op.eq(tile.op), self.is_fwd.eq(one_of(ops.fwd)),
                             self.is_tr.eq(one_of(ops.tr)),
                             self.streaming.eq(one_of(ops.stream))]
                if self.writable:
                    m.d.sync += self.is_upd.eq(tile.op == TileOp.UPDATE)
                self.reset_counters()
                m.d.sync += self.tr_chunk.eq(0)
                self._dispatch(ops)

    def _dispatch(self, ops):
        """IDLE's choice of the operation's first state."""
        m, tile = self.m, self.tile
        with m.Switch(tile.op):
            if self.writable:
                with m.Case(TileOp.LOAD_W):
                    self.goto("LOAD_W")
            with m.Case(*ops.read):
                self.goto("READ_ADDR")
            with m.Case(TileOp.LOAD_X):
                self.goto("LOAD_X")
            with m.Case(TileOp.LOAD_S):
                self.goto("LOAD_S")
            with m.Case(*ops.fwd):
                m.d.sync += [self.y_fwd.eq(1), self.drain.eq(self.forward_drain)]
                self.goto("ISSUE_ROWS")
            if ops.write:
                with m.Case(*ops.write):
                    m.d.sync += self.drain.eq(6)
                    self.goto("ISSUE_ROWS")
            if self.pulses is not None:
                with m.Case(TileOp.UPDATE):
                    m.d.sync += self.drain.eq(6)
                    m.d.comb += self.pulses.start.eq(1)
                    self.goto("PULSES")
            with m.Case(*ops.tr):
                m.d.sync += [self.y_fwd.eq(0), self.drain.eq(6)]
                self.goto("ISSUE_COLS")
            if self.tied:
                with m.Case(TileOp.APPLY):
                    m.d.comb += self.walker.start.eq(1)
                    self.goto("TAPS")
            if self.bias:
                with m.Case(TileOp.LOAD_BIAS):
                    self.goto("LOAD_BIAS")
            with m.Default():
                self.goto("NOTHING")

    def _load_states(self):
        m, tile, mem, rows, cols = self.m, self.tile, self.mem, self.rows, self.cols
        if self.writable:
            with self.state("LOAD_W"):
                def load_w(count):
                    self.load_word(self.lw_valid)
                    self.step_row_major()

                self.take_words(rows * cols - 1, load_w)

        with self.state("LOAD_X"):
            def load_x(count):
                self.load_word(self.lx_valid)
                self.step_lane_chunk()

            self.take_words(cols - 1, load_x)

        def into(port):
            def write(count):
                m.d.comb += [port.addr.eq(count), port.data.eq(tile.i.payload), port.en.eq(1)]
            return write

        with self.state("LOAD_S"):
            self.take_words(rows - 1, into(mem.s_wr))

        if self.bias:
            with self.state("LOAD_BIAS"):
                self.take_words(rows - 1, into(mem.b_wr))

    def _issue_states(self):
        m, lanes, last_lanes = self.m, self.lanes, self.last_lanes
        row, chunk, row_last, chunk_last = self.row, self.chunk, self.row_last, self.chunk_last
        # FORWARD and UPDATE walk row by row, chunk by chunk.
        with self.state("ISSUE_ROWS"):
            m.d.comb += [self.issue.eq(1), self.issue_first.eq(chunk == 0),
                         self.issue_last.eq(chunk_last)]
            m.d.comb += self.issue_nlanes.eq(lanes)
            with m.If(chunk_last):
                m.d.comb += self.issue_nlanes.eq(last_lanes)
            m.d.sync += self.waddr.eq(self.waddr + 1)   # the banks read at waddr (rd_addr)
            with m.If(chunk_last):
                self.set_chunk(0)
                self.set_row(row + 1)
                with m.If(row_last):
                    m.d.sync += self.in_flight.eq(self.drain)
                    self.goto("DRAIN")
            with m.Else():
                self.set_chunk(chunk + 1)

        # TRANSPOSED walks chunk by chunk, row by row; TRANSPOSED_STREAM issues row i once s_i
        # has arrived (the pipeline carries a valid bit, so a gap is a bubble).
        with self.state("ISSUE_COLS"):
            m.d.comb += [self.issue.eq(self.ready_row), self.issue_first.eq(row == 0),
                         self.issue_last.eq(row_last)]
            m.d.comb += self.issue_nlanes.eq(lanes)
            with m.If(chunk_last):
                m.d.comb += self.issue_nlanes.eq(last_lanes)
            # The banks read at row·C + chunk (rd_addr) in every cycle (a bubble reads an
            # address again).
            with m.If(self.ready_row):
                with m.If(row_last):
                    self.set_row(0)
                    self.set_chunk(chunk + 1)
                    with m.If(chunk_last):
                        m.d.sync += self.in_flight.eq(self.drain)
                        self.goto("DRAIN")
                with m.Else():
                    self.set_row(row + 1)

        if self.pulses is not None:
            # A pulsed UPDATE's prologue: the pulse trains, then the walk.
            with self.state("PULSES"):
                with m.If(self.pulses.done):
                    self.goto("ISSUE_ROWS")

        with self.state("NOTHING"):
            m.d.comb += self.tile.done.eq(1)
            self.goto("IDLE")

        with self.state("DRAIN"):
            m.d.sync += self.in_flight.eq(self.in_flight - 1)
            with m.If(self.in_flight == 1):
                if self.train and self.bias:
                    self.finish("BIAS_APPLY", self.is_apply)
                else:
                    self.finish()

    def _apply_states(self, draws, walker):
        """APPLY's steps after the weights': the bias's, and the tied kernel's walk."""
        m, tile, mem, count = self.m, self.tile, self.mem, self.count
        if self.train and self.bias:
            # APPLY's bias step, one row per cycle, drawing after all the weights' draws
            # (the model applies the weights' step, then the bias's, with one LFSR).
            with self.state("BIAS_APPLY"):
                m.d.comb += [mem.b_rd.addr.eq(count), mem.gd_rd.addr.eq(count)]
                shift = tile.bias_apply_shift
                new_b, sat_b = sgd_step(m, mem.b_rd.data, mem.gd_rd.data, shift,
                                        tile.weight_format.width, draws.offset(0, shift))
                draws.advance(1, shift)
                m.d.comb += [mem.b_wr.addr.eq(count), mem.b_wr.data.eq(new_b),
                             mem.b_wr.en.eq(1), mem.gd_wr.addr.eq(count),
                             mem.gd_wr.data.eq(0), mem.gd_wr.en.eq(1)]
                with m.If(sat_b):
                    m.d.comb += self.overflow_set.eq(1)
                m.d.sync += count.eq(count + 1)
                with m.If(count == self.rows - 1):
                    m.d.comb += tile.done.eq(1)
                    self.goto("IDLE")

        if self.tied:
            # The tied SGD step (TapWalker), then the bias's.
            with self.state("TAPS"):
                with m.If(walker.done):
                    if self.bias:
                        m.d.sync += count.eq(0)
                        self.goto("BIAS_APPLY")
                    else:
                        self.finish()

    def _read_states(self, fwd):
        """READ_W / READ_Y / READ_G. Every bank reads the same address, so a chunk's words are
        all present at once; the read ports hold their data while not enabled. Multiplexer:
        one cycle to address the first chunk, then one word per cycle; the next chunk is read
        as the last word of this one is taken. Chain: one cycle to read the first chunk, two
        to load it into the chain, then one word every two cycles; a prefetched chunk waits in
        the banks' outputs (and W's and G's in their registered copies) for the chain."""
        m, tile, mem, op, count = self.m, self.tile, self.mem, self.op, self.count
        row_major = op == TileOp.READ_W              # else READ_Y, by chunks of lanes
        if self.train:
            row_major = row_major | (op == TileOp.READ_G)
        with self.state("READ_ADDR"):
            for k in range(self.lanes):              # the banks at waddr = 0 (read_next)
                m.d.comb += mem.y_rd[k].addr.eq(self.chunk)
            with m.If((op == TileOp.READ_Y) & self.y_fwd):
                self.goto("READ_F")
            with m.Else():
                if self.chained:
                    self.goto("READ_LOAD")
                else:
                    self.next_read(1)
                    self.goto("READ_DATA")

        # READ_Y after a FORWARD*: the f memory, one word per cycle (after READ_ADDR's cycle,
        # as from the banks).
        with self.state("READ_F"):
            m.d.comb += [fwd.read_addr.eq(count), self.out_valid.eq(1),
                         tile.o.payload.eq(fwd.read_data)]
            with m.If(tile.o.ready):
                m.d.sync += count.eq(count + 1)
                with m.If(count == self.rows - 1):
                    m.d.comb += tile.done.eq(1)
                    self.goto("IDLE")

        if self.chained:
            self._chain_read_states(row_major)
        else:
            self._mux_read_state(row_major)

        if self.bias:
            # READ_W's and READ_G's tail: the bias (or its gradient) after the weights'.
            with self.state("READ_BIAS"):
                m.d.comb += [mem.b_rd.addr.eq(count), self.out_valid.eq(1),
                             tile.o.payload.eq(mem.b_rd.data)]
                if self.train:
                    m.d.comb += mem.gd_rd.addr.eq(count)
                    with m.If(op == TileOp.READ_G):
                        m.d.comb += tile.o.payload.eq(mem.gd_rd.data)
                with m.If(tile.o.ready):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == self.rows - 1):
                        m.d.comb += tile.done.eq(1)
                        self.goto("IDLE")

    def _chain_read_states(self, row_major):
        m, tile, lanes, count = self.m, self.tile, self.lanes, self.count
        phase, lane = self.phase, self.lane
        with self.state("READ_LOAD"):   # the chain loads (read_controls)
            m.d.sync += phase.eq(0)
            self.goto("READ_DATA")

        with self.state("READ_DATA"):
            for k in range(lanes):                   # prefetched: the banks read here
                m.d.comb += self.mem.y_rd[k].addr.eq(self.chunk + 1)
            m.d.comb += tile.o.payload.eq(self.readout.payload)
            # Where the word offered is, registered: the counters move only with a handshake,
            # which only a cycle with ``phase`` has, and this state's first cycle has none — so
            # in every such cycle these describe the counters.
            m.d.sync += [self.last_of_chunk.eq((lane == lanes - 1)
                                               | (row_major & self.chunk_last
                                                  & (lane == self.last_lanes - 1))),
                         self.last_word.eq(count == Mux(row_major, self.rows * self.cols,
                                                        self.cols) - 1)]
            # The last word of a chunk goes only once the next chunk is in the banks' outputs
            # (a one-word chunk can be taken before its successor is read).
            m.d.comb += self.out_valid.eq(phase & (~self.last_of_chunk | self.fresh
                                                   | self.last_word))
            with m.If(~phase):                       # the chain acts in this cycle
                m.d.sync += phase.eq(1)
            with m.If(tile.o.ready & self.out_valid):
                m.d.sync += [count.eq(count + 1), phase.eq(0)]
                # The last word loads nothing (the chain's next contents are not used): a
                # READ_W or READ_G thus cues the prefetch w_depth times, and the groups' read
                # addresses step back to 0 with the last cue. (chain_shift where
                # ~last_of_chunk, else chain_load where ~last_word: read_controls.)
                with m.If(row_major):
                    self.step_row_major()
                with m.Else():
                    self.step_lane_chunk()
                with m.If(self.last_word):
                    self.finish_read(row_major)

    def _mux_read_state(self, row_major):
        m, tile, mem, lanes, count, lane = (self.m, self.tile, self.mem, self.lanes, self.count,
                                            self.lane)
        with self.state("READ_DATA"):
            for k in range(lanes):                   # the banks at the next address
                m.d.comb += mem.y_rd[k].addr.eq(self.chunk + 1)
            m.d.comb += self.out_valid.eq(1)
            m.d.comb += tile.o.payload.eq(self.readout.payload)
            with m.If(tile.o.ready):
                m.d.sync += count.eq(count + 1)
                total = Signal.like(count)
                m.d.comb += total.eq(self.cols)
                with m.If(row_major):
                    m.d.comb += total.eq(self.rows * self.cols)
                    with m.If((lane == lanes - 1)
                              | (self.chunk_last & (lane == self.last_lanes - 1))):
                        m.d.comb += [en.eq(1) for en in self.bank_en]
                        self.advance_read(1)
                    self.step_row_major()
                with m.Else():
                    with m.If(lane == lanes - 1):
                        for port in mem.y_rd:
                            m.d.comb += port.en.eq(1)
                    self.step_lane_chunk()
                with m.If(count == total - 1):
                    self.next_read(0)
                    self.finish_read(row_major)
