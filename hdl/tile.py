"""The crossbar tile: ``W x``, ``Wᵀ y`` and the rank-1 update, exact sums and one rounding each.

Digital emulation of an analog crossbar (docs/architecture.md §1, §3): exact where the
crossbar is exact (the sum) and rounding once where it rounds (the ADC). Its model twin is
:class:`xbarode.model.fixed_ops.FixedTile`; tests compare the two bit for bit.

Organisation. The ``lanes`` multipliers split each row of ``W`` into chunks of ``lanes``
columns: weight bank ``p`` holds the columns ``j ≡ p (mod lanes)``, row ``i``'s chunk ``c`` at
address ``i·C + c`` (``C = ceil(cols / lanes)``). Reading one address from every bank gives one
chunk of a row, for all three operations — the same memory, the same multipliers, two
reductions:

- forward ``y_i = Σ_j W[i, j] x_j``: per cycle one chunk of row ``i`` times the same chunk of
  ``x``, summed by a pipelined adder tree, accumulated over the chunks; one rounding per row;
- transposed ``(Wᵀ y)_j = Σ_i W[i, j] y_i``: per cycle one chunk of row ``i`` times ``y_i``,
  accumulated lane by lane over the rows (outer-product accumulation); ``lanes`` roundings at
  the end of each chunk;
- update ``W[i, j] <- sat(W[i, j] + narrow(u_i v_j · 2^-eta_shift))``: per cycle one chunk,
  read, updated and written back.

Every rounding draws (stochastic mode) in row-major order of its output, as the model does.

Parts, each a component of its own built in ``elaborate``: the lanes, one
:class:`~xbarode.hdl.lane_group.LaneGroup` per group of :data:`GROUP` lanes (weight and gradient
banks, multipliers, lane accumulators, the update's narrowing and the banks' write registers,
with the group's own registered copy of the sequencer's controls); the forward adder tree
(:class:`~xbarode.hdl.adder_tree.AdderTree`); the READ_* read-out
(:class:`~xbarode.hdl.readout.MuxReadout` or, with ``read_chain``,
:class:`~xbarode.hdl.readout.ChainReadout`); the forward output stage (row accumulator, bias,
rounding, output memory: :class:`~xbarode.hdl.output_stage.ForwardOutput`).
"""

from __future__ import annotations

import contextlib

import numpy as np
from amaranth import Array, Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from xbarode.model.fixed import LFSR_SEED, ROUNDINGS, Format, Lfsr
from xbarode.model.fixed_ops import accumulator_bits

from .adder_tree import AdderTree
from .dsp import maps_to_dsp_cell
from .groups import GROUP, KEEP, group_copies, own_copy, per_group
from .interface import ControlSignature
from .lane_group import LaneGroup, lane_control
from .output_stage import ForwardOutput
from .readout import ChainReadout, MuxReadout
from .rounding import LfsrBank, narrow, rounding_offset

__all__ = ["CHAIN_MIN_LANES", "GROUP", "CrossbarTile", "TileOp"]

#: From this many lanes a tile alone (``xbarode generate/cosim/synth tile``) streams READ_*
#: through its chain of lane registers (``read_chain``).
CHAIN_MIN_LANES = 17


class TileOp(enum.Enum, shape=4):
    """Operations of the tile, selected on ``op`` when ``start`` is pulsed.

    ========== ====================================================================
    LOAD_W     stream in ``rows·cols`` weights, row-major
    READ_W     stream out ``rows·cols`` weights, row-major, then the ``rows`` bias words
               (tiles with ``bias``)
    LOAD_X     stream in the ``cols`` entries of ``x`` (forward input, update's ``v``)
    LOAD_S     stream in the ``rows`` entries of ``s`` (transposed input, update's ``u``)
    FORWARD    ``y <- narrow(W x)`` (``rows`` words)
    TRANSPOSED ``y <- narrow(Wᵀ s)`` (``cols`` words)
    UPDATE     ``W <- sat(W + narrow(s xᵀ · 2^-eta_shift))``
    READ_Y     stream out the result of the last FORWARD or TRANSPOSED
    LOAD_BIAS  stream in the ``rows`` entries of the bias (tiles built with ``bias``)
    TRANSPOSED_STREAM
               ``TRANSPOSED`` whose ``s`` arrives on ``s_in`` during the operation: row ``i``
               enters the multipliers once ``s_i`` has arrived (tiles with ``side_ports``)
    FORWARD_G, TRANSPOSED_G, TRANSPOSED_STREAM_G
               the same products on gradient words: input and output in ``grad_format``,
               the extra shift ``grad_shift`` (tiles built with ``grad_format``)
    ACCUMULATE ``G <- G + s xᵀ`` exactly in the gradient accumulators (``acc_width`` bits);
               with ``bias``, also ``g_d <- g_d + s``
    APPLY      ``W <- sat(W + narrow(-G · 2^-sgd_shift))``, ``G <- 0``; with ``bias``, then
               ``d <- sat(d + narrow(-g_d · 2^-sgd_shift))``, ``g_d <- 0`` (one SGD step);
               tiles with ``taps`` take one step per kernel tap (weights tied)
    READ_G     stream out ``G`` (``rows·cols`` words, row-major), then ``g_d`` (``rows``
               words, tiles with ``bias``)
    ========== ====================================================================
    """

    LOAD_W = 0
    READ_W = 1
    LOAD_X = 2
    LOAD_S = 3
    FORWARD = 4
    TRANSPOSED = 5
    UPDATE = 6
    READ_Y = 7
    LOAD_BIAS = 8
    TRANSPOSED_STREAM = 9
    FORWARD_G = 10
    TRANSPOSED_G = 11
    TRANSPOSED_STREAM_G = 12
    ACCUMULATE = 13
    APPLY = 14
    READ_G = 15


class CrossbarTile(wiring.Component):
    """A fixed-point crossbar tile with ``lanes`` multipliers.

    Parameters
    ----------
    rows, cols : int
        Shape of ``W``.
    lanes : int
        Multipliers working in parallel, ``1 <= lanes <= cols``; need not divide ``cols``.
    weight_format, input_format, output_format : Format
        Formats of the weights, of ``x`` and ``s``, and of ``y``.
    acc_width : int
        Accumulator width; must hold ``cols`` (forward) and ``rows`` (transposed) products.
    rounding : {"floor", "nearest", "stochastic"}
        Rounding of every narrowing.
    eta_shift : int
        The update's learning rate is ``2^-eta_shift``.
    lfsr_seed : int
        Seed of the tile's LFSR (stochastic rounding).
    weights : array_like of int, shape (rows, cols), optional
        Initial weights (words of ``weight_format``), e.g. a constant table; zeros otherwise.
        LOAD_W and UPDATE still change them.
    shift : int
        Extra right shift of the FORWARD and TRANSPOSED narrowings: the product is scaled by
        ``2^-shift`` (a step ``h``) inside its one rounding.
    bias : bool
        FORWARD adds a bias (LOAD_BIAS, words of ``weight_format``) to each row's exact sum,
        aligned to the accumulator (``<< input_format.frac``), before the rounding.
    side_ports : bool
        Ports for a core that joins tiles (below): ``y_out``, ``s_in``, ``s_restart``,
        ``x_side_*``, ``y_side_*``.
    read_chain : bool
        READ_* streams through a chain of registers, one per lane, shifted towards lane 0 (a
        word every two cycles; each lane's word moves to its neighbour only) instead of a
        multiplexer over the lanes (a word per cycle; every lane's bank outputs wired to one
        place, which congests the routing of a wide tile: use it from
        :data:`CHAIN_MIN_LANES` lanes, as ``xbarode`` does for a tile alone).
    grad_format : Format, optional
        Format of gradient words (the adjoint's λ, ``g``); enables the training operations
        (``*_G``, ACCUMULATE, APPLY, READ_G) and the gradient accumulators.
    grad_shift : int
        Extra right shift of the ``*_G`` products (a step ``h``).
    sgd_shift : int
        APPLY's learning rate is ``2^-sgd_shift``. ACCUMULATE's products have
        ``grad_format.frac + input_format.frac`` fractional bits (one operand a gradient, the
        other of ``input_format``), the bias gradient ``grad_format.frac``.
    taps : array_like of int, shape (k², rows), optional
        The tile holds a convolution matrix whose tap ``t`` sits at ``W[i, taps[t, i]]``
        (:func:`xbarode.model.conv.tap_columns`); APPLY keeps the kernel's weights tied: per
        tap, the exact sum of ``G`` over the entries it occupies (the pull-back onto the
        kernel), one rounding ``narrow(-sum · 2^-sgd_shift)``, drawn in tap order, added to
        the tap's value in row 0, saturated and written to every entry it occupies; then
        ``G <- 0`` everywhere. The model twin is
        :meth:`~xbarode.model.fixed_ops.FixedTile.apply_kernel_gradient`. Needs
        ``grad_format``.

    Attributes
    ----------
    i : In(stream.Signature(signed(word)))
        Words in, for LOAD_W, LOAD_X and LOAD_S (``word`` is the widest format's width).
    o : Out(stream.Signature(signed(word)))
        Words out, for READ_W and READ_Y.
    op : In(TileOp)
        Operation started by ``start``.
    start : In(1)
        Pulse for one cycle while ``busy`` is low to start ``op``.
    busy : Out(1)
        An operation is running.
    done : Out(1)
        One-cycle pulse when an operation ends.
    overflow : Out(1)
        Sticky: some narrowing (or weight update) saturated since the last ``clear``; high
        from the cycle the saturating word is produced, so in the ``done`` cycle of an
        operation whose last narrowing saturated.
    clear : In(1)
        Lowers ``overflow`` (at the next clock edge); a saturation in a cycle with ``clear``
        high is not flagged, not even in that cycle (holding ``clear`` keeps ``overflow`` low).
    y_out : Out(stream.Signature(signed(output width), always_ready=True))
        (side ports) Each FORWARD result, in row order, as it is written.
    s_in : In(stream.Signature(signed(input width), always_ready=True))
        (side ports) Words of ``s`` for TRANSPOSED_STREAM, in row order; words arriving while
        the tile is idle are stored too (``s`` for a later ACCUMULATE).
    s_restart : In(1)
        (side ports) The next word on ``s_in`` is ``s_0`` (as on every ``start``).
    x_side_addr, x_side_en, x_side_data : In
        (side ports) Write ``x_side_data[k]`` into lane ``k``'s bank of ``x`` at chunk
        ``x_side_addr`` where ``x_side_en[k]``: a whole chunk of ``x`` per cycle.
    y_side_addr, y_side_data : In, Out
        (side ports) While idle, ``y_side_data[k]`` is lane ``k``'s word of chunk
        ``y_side_addr`` of the last TRANSPOSED result, one cycle after the address.

    Notes
    -----
    Latency, from the cycle ``start`` is seen to the ``done`` pulse inclusive:
    ``rows·C + T + 7`` cycles for FORWARD, where ``C = ceil(cols/lanes)`` and
    ``T = ceil(log2(lanes) / 2)`` adder-tree register stages; ``rows·C + 7`` for TRANSPOSED,
    UPDATE, ACCUMULATE and APPLY (with ``bias``, APPLY takes ``rows`` cycles more); with
    ``taps`` (``K = k²`` of them), APPLY takes ``K·rows + max(K·(rows + 1), rows·C - 1) + 6``
    cycles (the second term: writing the taps, or clearing ``G`` if that is longer), plus
    ``rows`` with ``bias``. A result is in the output buffer when ``done`` rises. Every path
    between registers holds at most two carry chains (where a register is free — a one-chunk
    tile without bias has no row accumulator and gives its register to the tree — the adder
    tree's first level, behind the DSP cells' long output routes, and its top levels, whose
    operands come from far-apart lanes, have one each), the multipliers are
    :class:`~xbarode.hdl.dsp.Multiplier` (operand and product registers; on an ECP5 the DSP
    cell's own), memory outputs are registered before any logic (a block RAM's clock-to-output
    is half a 100 MHz cycle on an ECP5), no decision of the FSM reaches every lane in its
    cycle (the operand that every lane shares, the banks' read addresses and enables, the loaded
    words, the forward result, the write addresses and the lanes' controls are registered once
    per group of :data:`GROUP` lanes, or per lane; each group steps its own read address, and
    enables its banks, from its own copies of which walk the FSM is in, so no decoder of the
    FSM's state stands between a group and its decisions; where the FSM needs such a signal
    too it has a copy of its own), and the banks' writes come from registers
    (a bank is written the cycle after its walk or pipeline asks, before any later read of it;
    an enabled read never meets a write to its address, so synthesis needs no read-during-write
    logic around the block RAMs). Each narrowing has one short carry chain, over the bits it
    discards (:func:`~xbarode.hdl.rounding.narrow`). Streams move one word per cycle on LOAD_*
    (a word reaches its bank a cycle later, through a register per group of lanes); on
    READ_*, one word per cycle after one cycle of addressing, or, with ``read_chain``, one word
    every two cycles after three (read, load the chain); a one-word chunk waits two cycles
    more, for its successor's read (the chain loads the banks' registered outputs). FORWARD's
    words are written, as each row is rounded, into a memory of their own beside the rounding
    (not into the lanes' banks across the device, where TRANSPOSED's go): READ_Y after a
    FORWARD streams them one per cycle after one cycle, with or without ``read_chain``.
    ``cycles_per_mvm`` in the co-simulation reports is the measured FORWARD latency.
    """

    # Many options, each validated with its own message.
    def __init__(self, *, rows: int, cols: int, lanes: int, weight_format: Format,  # noqa: C901
                 input_format: Format, output_format: Format, acc_width: int = 48,
                 rounding: str = "nearest", eta_shift: int = 0, lfsr_seed: int = LFSR_SEED,
                 weights=None, shift: int = 0, bias: bool = False, side_ports: bool = False,
                 grad_format: Format | None = None, grad_shift: int = 0, sgd_shift: int = 0,
                 taps=None, read_chain: bool = False):
        for name, value in (("rows", rows), ("cols", cols), ("lanes", lanes),
                            ("acc_width", acc_width), ("eta_shift", eta_shift),
                            ("shift", shift), ("grad_shift", grad_shift),
                            ("sgd_shift", sgd_shift)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
        if rows < 1 or cols < 1:
            raise ValueError(f"rows and cols must be >= 1, not {rows} and {cols}")
        if not 1 <= lanes <= cols:
            raise ValueError(f"lanes must be between 1 and cols ({cols}), not {lanes}")
        for name, fmt in (("weight_format", weight_format), ("input_format", input_format),
                          ("output_format", output_format), ("grad_format", grad_format)):
            if fmt is None and name == "grad_format":
                continue
            if not isinstance(fmt, Format):
                raise TypeError(f"{name} must be a Format, not {type(fmt).__name__}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {rounding!r}; choose one of {list(ROUNDINGS)}")
        Lfsr(lfsr_seed)
        operand = input_format if grad_format is None else \
            Format(max(input_format.width, grad_format.width), 0)
        need = accumulator_bits(weight_format, operand, max(rows, cols), extra=int(bias))
        if acc_width < need:
            raise ValueError(
                f"an accumulator of {acc_width} bits is too narrow for a sum of "
                f"{max(rows, cols)} products of {weight_format.width}x{operand.width}-bit "
                f"words (needs {need} bits)"
            )
        if weights is not None:
            weights = np.asarray(weights)
            if weights.shape != (rows, cols) or not np.issubdtype(weights.dtype, np.integer):
                raise ValueError(f"weights must be integers of shape ({rows}, {cols}), not "
                                 f"{weights.dtype} of shape {weights.shape}")
            if weights.size and (weights.min() < weight_format.min_int
                                 or weights.max() > weight_format.max_int):
                raise ValueError(f"weights must be words of {weight_format} "
                                 f"({weight_format.min_int}..{weight_format.max_int})")
            weights = weights.astype(np.int64)
        self._weights = weights
        if taps is not None:
            if grad_format is None:
                raise ValueError("taps need grad_format: the tied step is APPLY's")
            taps = np.asarray(taps)
            if taps.ndim != 2 or taps.shape[1] != rows or not taps.size \
                    or not np.issubdtype(taps.dtype, np.integer):
                raise ValueError(f"taps must be integers of shape (k², {rows}), not "
                                 f"{taps.dtype} of shape {taps.shape}")
            if taps.min() < 0 or taps.max() >= cols:
                raise ValueError(f"taps must be columns 0..{cols - 1}")
            if any(len(set(column)) != len(column) for column in taps.T.tolist()):
                raise ValueError("taps must sit in distinct columns of each row")
            taps = taps.astype(np.int64)
        self._taps = taps
        self._shift, self._bias, self._side = shift, bool(bias), bool(side_ports)
        self._read_chain = bool(read_chain)
        self._rows, self._cols, self._lanes = rows, cols, lanes
        self._wf, self._if, self._of = weight_format, input_format, output_format
        self._acc_width = acc_width
        self._rounding = rounding
        self._eta_shift = eta_shift
        self._lfsr_seed = lfsr_seed
        self._gf, self._grad_shift, self._sgd_shift = grad_format, grad_shift, sgd_shift
        # Gradient words share the operand and result memories with the inference words.
        in_w = operand.width
        out_w = max(output_format.width, grad_format.width if grad_format else 0)
        self._in_w, self._out_w = in_w, out_w
        word = max(weight_format.width, in_w, out_w)
        if grad_format is not None:
            word = max(word, acc_width)   # READ_G streams the accumulators
        chunks = -(-cols // lanes)
        side = {}
        if side_ports:
            side = {
                "y_out": Out(stream.Signature(signed(out_w), always_ready=True)),
                "s_in": In(stream.Signature(signed(in_w), always_ready=True)),
                "s_restart": In(1),
                "x_side_addr": In(range(max(chunks, 2))),
                "x_side_en": In(lanes),
                "x_side_data": In(signed(in_w)).array(lanes),
                "y_side_addr": In(range(max(chunks, -(-rows // lanes), 2))),
                "y_side_data": Out(signed(out_w)).array(lanes),
            }
        super().__init__(ControlSignature(TileOp, word, side=side))

    # Read-only parameters ------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Rows of ``W``."""
        return self._rows

    @property
    def cols(self) -> int:
        """Columns of ``W``."""
        return self._cols

    @property
    def lanes(self) -> int:
        """Multipliers working in parallel."""
        return self._lanes

    @property
    def weight_format(self) -> Format:
        """Format of the weights."""
        return self._wf

    @property
    def input_format(self) -> Format:
        """Format of ``x`` and ``s``."""
        return self._if

    @property
    def output_format(self) -> Format:
        """Format of ``y``."""
        return self._of

    @property
    def acc_width(self) -> int:
        """Accumulator width."""
        return self._acc_width

    @property
    def rounding(self) -> str:
        """Rounding mode of every narrowing."""
        return self._rounding

    @property
    def eta_shift(self) -> int:
        """The update's learning rate is ``2^-eta_shift``."""
        return self._eta_shift

    @property
    def lfsr_seed(self) -> int:
        """Seed of the tile's LFSR."""
        return self._lfsr_seed

    @property
    def shift(self) -> int:
        """Extra right shift of the FORWARD and TRANSPOSED narrowings."""
        return self._shift

    @property
    def bias(self) -> bool:
        """FORWARD adds a bias."""
        return self._bias

    @property
    def side_ports(self) -> bool:
        """The tile has the side ports of a core."""
        return self._side

    @property
    def read_chain(self) -> bool:
        """READ_* streams through the chain of lane registers (see the class notes)."""
        return self._read_chain

    @property
    def grad_format(self) -> Format | None:
        """Format of gradient words; None for a tile without the training operations."""
        return self._gf

    @property
    def taps(self) -> np.ndarray | None:
        """Columns of each kernel tap, row by row (``taps[t, i]``); None for a dense tile."""
        return None if self._taps is None else self._taps.copy()

    @property
    def grad_shift(self) -> int:
        """Extra right shift of the products on gradients (``*_G``)."""
        return self._grad_shift

    @property
    def sgd_shift(self) -> int:
        """APPLY's learning rate is ``2^-sgd_shift``."""
        return self._sgd_shift

    @property
    def grad_product_shift(self) -> int:
        """Bits discarded by the narrowing of a product on gradients (grad in, grad out)."""
        return self._wf.frac + self._grad_shift

    @property
    def apply_shift(self) -> int:
        """Bits discarded by APPLY's narrowing of a weight's gradient sum."""
        if self._gf is None:
            return 0
        return self._gf.frac + self._if.frac + self._sgd_shift - self._wf.frac

    @property
    def bias_apply_shift(self) -> int:
        """Bits discarded by APPLY's narrowing of a bias gradient sum."""
        if self._gf is None:
            return 0
        return self._gf.frac + self._sgd_shift - self._wf.frac

    @property
    def chunks(self) -> int:
        """``C = ceil(cols / lanes)``: chunks per row."""
        return -(-self._cols // self._lanes)

    @property
    def forward_shift(self) -> int:
        """Bits discarded by the forward and transposed narrowing."""
        return self._wf.frac + self._if.frac + self._shift - self._of.frac

    @property
    def update_shift(self) -> int:
        """Bits discarded by the update's narrowing."""
        return 2 * self._if.frac + self._eta_shift - self._wf.frac

    @staticmethod
    def product_latency(rows: int, cols: int, lanes: int, *, transposed: bool = False) -> int:
        """Cycles of one product (start to ``done``), the formula of the class docstring:
        ``rows·C + T + 7`` forward, ``rows·C + 7`` transposed, ``C = ceil(cols / lanes)``,
        ``T`` the adder tree's register stages (:meth:`AdderTree.min_stages
        <xbarode.hdl.adder_tree.AdderTree.min_stages>`). The one place the formula is written:
        the studies and the simulations' cycle limits use it; the tests derive it themselves."""
        chunks = -(-cols // lanes)
        return rows * chunks + (0 if transposed else AdderTree.min_stages(lanes)) + 7

    @property
    def tree_stages(self) -> int:
        """Register stages of the forward adder tree (one per two levels,
        :meth:`AdderTree.min_stages <xbarode.hdl.adder_tree.AdderTree.min_stages>`)."""
        return AdderTree.min_stages(self._lanes)

    def lane_cells(self, platform):
        """Names of lane ``k``'s multiplier cell and weight block RAM in Yosys's ECP5 netlist
        of this tile synthesised alone (for pinning them, :func:`xbarode.synth.lane_sites`).

        Returns a list of ``(multiplier, block RAM)`` per lane, ``None`` where the lane has no
        such cell: a multiplier wider than the DSP cell, or a bank in LUT RAM or spread over
        more than one block RAM (deeper than 1024 words or wider than 18 bits).
        """
        w_depth = self._rows * self.chunks
        one_ebr = 16 < w_depth <= 1024 and self._wf.width <= 18
        dsp = maps_to_dsp_cell(platform, max(self._wf.width, self._in_w), self._in_w)
        # Lane k's cells sit in its LaneGroup, lanes{k // GROUP}.
        return [(f"lanes{k // GROUP}.mul{k}.mult" if dsp else None,
                 f"lanes{k // GROUP}.w{k}.0.0" if one_ebr else None) for k in range(self._lanes)]

    # Hardware -------------------------------------------------------------------------------
    # Too long still: the sequencer is to become a component.
    def elaborate(self, platform):  # noqa: C901, PLR0915
        m = Module()
        rows, cols, lanes, chunks = self._rows, self._cols, self._lanes, self.chunks
        last_lanes = cols - (chunks - 1) * lanes  # valid lanes of the last chunk
        wf = self._wf
        # Each sum is exact in the bits its own terms need (at most acc_width, checked in
        # __init__): no wider registers and carry chains than the sum can use.
        operand = Format(self._in_w, 0)
        row_shape = signed(accumulator_bits(wf, operand, cols, extra=int(self._bias)))
        lane_shape = signed(accumulator_bits(wf, operand, rows))
        train = self._gf is not None

        # Memories: weights and gradients (lanes banks, in the lane groups), x (lanes banks),
        # s (one), y (lanes banks: the TRANSPOSED result, a chunk per address), f (one: the
        # FORWARD result, a row per word, in the output stage).
        w_depth = rows * chunks
        y_depth = chunks
        # Weight banks deeper than a LUT-RAM cell go to block RAM (LaneGroup's block_ram): many
        # wide LUT-RAM banks with their read multiplexers are what congested the 64-lane tile's
        # routing. "no_rw_check" with it: no read whose data is used ever meets a write to the
        # same address in the same cycle (every walk visits an address once per operation, and
        # its write comes four or more cycles after its read; operations do not overlap), so
        # Yosys need not emulate the old-data semantics across the block RAM's two ports — a
        # registered copy of the write and an address comparator per bank, which were the
        # 64-lane tile's critical path. A test watches the banks for such collisions.
        block_ram = w_depth > 16
        w_init = [[] for _ in range(lanes)]
        if self._weights is not None:
            padded = np.zeros((rows, chunks * lanes), dtype=np.int64)
            padded[:, :cols] = self._weights
            # Bank p, address i·C + c holds W[i, c·lanes + p].
            w_init = [padded[:, p::lanes].ravel().tolist() for p in range(lanes)]
        x_banks = [Memory(shape=signed(self._in_w), depth=chunks, init=[])
                   for _ in range(lanes)]
        y_banks = [Memory(shape=signed(self._out_w), depth=y_depth, init=[])
                   for _ in range(lanes)]
        s_mem = Memory(shape=signed(self._in_w), depth=rows, init=[])
        for k, mem in enumerate(x_banks):
            m.submodules[f"x{k}"] = mem
        for k, mem in enumerate(y_banks):
            m.submodules[f"y{k}"] = mem
        m.submodules.s = s_mem
        x_rd = [mem.read_port() for mem in x_banks]
        x_wr = [mem.write_port() for mem in x_banks]
        y_rd = [mem.read_port() for mem in y_banks]
        y_wr = [mem.write_port() for mem in y_banks]
        s_rd, s_wr = s_mem.read_port(), s_mem.write_port()
        if self._bias:
            b_mem = Memory(shape=signed(wf.width), depth=rows, init=[])
            m.submodules.bias = b_mem
            b_rd, b_wr = b_mem.read_port(domain="comb"), b_mem.write_port()
        if train:
            # The bias's gradient accumulators, in LUT RAM (the weights' are in the lane groups).
            if self._bias:
                gd_mem = Memory(shape=signed(self._acc_width), depth=rows, init=[])
                m.submodules.gbias = gd_mem
                gd_rd, gd_wr = gd_mem.read_port(domain="comb"), gd_mem.write_port()

        n_groups = -(-lanes // GROUP)

        # LOAD_W's and LOAD_X's words go to the banks through registers per group of lanes
        # (valid, lane in the group, address, word), written the cycle after the handshake:
        # the FSM's decision drives n_groups registers, not every lane's write multiplexers
        # (the 64-lane tile's critical path went from the FSM's state to all lanes' write data).
        lw_valid, lx_valid = per_group(n_groups, 1, "lw_valid"), per_group(n_groups, 1, "lx_valid")
        lw_lane = per_group(n_groups, range(GROUP), "lw_lane")
        lw_addr = per_group(n_groups, range(max(w_depth, 2)), "lw_addr")
        lw_word = per_group(n_groups, self.i.payload.shape(), "lw_word")
        m.d.sync += [valid.eq(0) for valid in lw_valid + lx_valid]

        def load_word(valid):
            """Pass the stream's word to lane ``lane``'s bank (the next cycle), by ``valid``:
            the lane, address and word registers take their values in every cycle (below), so
            only ``valid`` waits for the FSM's decision."""
            for g in range(n_groups):
                m.d.sync += valid[g].eq(lane // GROUP == g)

        # Stochastic rounding: draws for up to `lanes` narrowings per cycle.
        all_shifts = [self.forward_shift, self.update_shift]
        if train:
            all_shifts += [self.grad_product_shift, self.apply_shift]
            if self._bias:
                all_shifts.append(self.bias_apply_shift)
        shifts = [s for s in all_shifts if s > 0]
        draws = None
        if self._rounding == "stochastic" and shifts:
            if max(shifts) > 32:
                raise ValueError("stochastic rounding draws 32 bits; cannot discard "
                                 f"{max(shifts)} bits")
            m.submodules.lfsr = lfsr = LfsrBank(draws=lanes, bits=max(shifts),
                                                steps={1, lanes, last_lanes},
                                                seed=self._lfsr_seed)
            draws = lfsr.draw

        def advance(count, shift=1):
            """Consume ``count`` draws this cycle (a Python int in lfsr.steps) if the narrowing
            discards bits (``shift > 0``): the model draws only then."""
            if draws is not None and shift > 0:
                m.d.comb += lfsr.advance.eq(lfsr.steps.index(count) + 1)

        def advance_product(count):
            """Draws of a product's narrowing: inference or gradient shift, by the mode."""
            if self.forward_shift > 0 and (not train or self.grad_product_shift > 0):
                advance(count)
            elif self.forward_shift > 0:
                with m.If(~is_grad):
                    advance(count)
            elif train and self.grad_product_shift > 0:
                with m.If(is_grad):
                    advance(count)

        def offset(k, shift):
            return rounding_offset(self._rounding, shift, None if draws is None else draws[k])

        def sgd_word(old, total_grad, shift):
            """One word's SGD step, ``sat(old + narrow(-total_grad · 2^-shift))``, drawing one
            LFSR word: the bias's and a kernel tap's. Returns the new word and whether the
            step or the sum saturated."""
            neg = Signal(signed(len(total_grad) + 1))
            m.d.comb += neg.eq(-total_grad)
            step, sat_step = narrow(m, neg, shift, wf.width, offset(0, shift))
            advance(1, shift)
            total = Signal(signed(wf.width + 1))
            m.d.comb += total.eq(old + step)
            new, sat_new = narrow(m, total, 0, wf.width)
            return new, sat_step | sat_new

        # The overflow flag: a sticky register for the FSM's side (``overflow_set``: the forward
        # rounding, the bias's and the taps' steps) and one per group of lanes (in its
        # LaneGroup: the lanes' saturations, registered per lane, ORed within the group); the
        # output is their OR, so no OR over every lane's register lies between registers (one
        # across the device was the 64-lane tile's critical path).
        overflow_set = Signal()

        # Counters shared by the stream and compute states.
        row = Signal(range(max(rows, 2)))
        chunk = Signal(range(max(chunks, y_depth, 2)))  # also walks vectors of rows words
        lane = Signal(range(max(lanes, 2)))
        waddr = Signal(range(max(w_depth, 2)))
        count = Signal(range(max(rows * cols, max(rows, cols)) + 1))
        # The banks' read address: one register per group of GROUP lanes (a fan-out bound for
        # the 2·lanes address pins, which sit in block-RAM rows all over the device), holding
        # the address read in this cycle — nothing but a wire between a register and the
        # pins. ("keep" stops Yosys merging the copies.) It is 0 between operations: every walk
        # steps back to 0 with its last step.
        rd_addr = per_group(n_groups, range(max(w_depth, 2)), "raddr")
        # Which product walk the FSM is in, a copy per group (``walking``, kept by ``goto``
        # below): each group steps its own address from its own copy, and a walk's banks read
        # while it runs, so no decision of the FSM's state reaches a group's address or enable
        # through more than the flag's own look-up table.
        walking = {name: per_group(n_groups, 1, f"in_{name.lower()}")
                   for name in ("ISSUE_ROWS", "ISSUE_COLS")}
        # The FSM's own copies of other states, kept the same way: IDLE (``busy`` and the
        # decisions taken with ``start``) and the chain's READ states (its load and shift).
        mirrors = {**walking, "IDLE": [Signal(init=1, name="in_idle", attrs=KEEP)]}
        if self._read_chain:
            mirrors |= {name: [Signal(name=f"in_{name.lower()}", attrs=KEEP)]
                        for name in ("READ_LOAD", "READ_DATA")}
        walk_starts = Signal()   # the FSM enters a walk (goto)
        # The banks' other reads, enabled a cycle ahead: ``read_next`` (READ_*, all banks) and
        # the chain's prefetch (``rd_en``); the W and G banks' enable ``wg_en`` is ``rd_en`` or
        # a walk, a register of its own at the block RAMs' enable pins (no look-up table
        # between them). A read decided in its own cycle (the multiplexer READ path, the tied
        # walk, the side ports) is added to them.
        read_next = Signal()
        rd_en, wg_en = per_group(n_groups, 1, "rd_en"), per_group(n_groups, 1, "wg_en")

        def next_read(address):
            """The banks read ``address`` in the next cycle (if enabled then)."""
            m.d.sync += [reg.eq(address) for reg in rd_addr]

        def advance_read(step):
            """The banks read ``step`` addresses on in the next cycle: each copy adds on its
            own (no address computed in one place travels to every group)."""
            m.d.sync += [reg.eq(reg + step) for reg in rd_addr]

        # The W and G banks' address and enable as each group sees them (these, or a READ's
        # or the tied walk's own read, below).
        bank_addr = [Signal(range(max(w_depth, 2)), name=f"bank_addr{g}") for g in range(n_groups)]
        bank_en = [Signal(name=f"bank_en{g}") for g in range(n_groups)]
        m.d.comb += [addr.eq(reg) for addr, reg in zip(bank_addr, rd_addr, strict=True)]

        y_fwd = Signal()   # the last product was a FORWARD*: READ_Y streams the f memory
        op = Signal(TileOp)
        for g in range(n_groups):   # LOAD_W's and LOAD_X's word, should it be taken (load_word)
            m.d.sync += [lw_lane[g].eq(lane % GROUP), lw_word[g].eq(self.i.payload),
                         lw_addr[g].eq(Mux(op == TileOp.LOAD_X, chunk, waddr))]

        # Whether row and chunk are at their last values, registered with them (set_row,
        # set_chunk): the walks' decisions take a flag, not a comparator on the counter.
        row_last, chunk_last = Signal(init=rows == 1), Signal(init=chunks == 1)

        def set_row(value):
            m.d.sync += [row.eq(value), row_last.eq(Value.cast(value) == rows - 1)]

        def set_chunk(value):
            m.d.sync += [chunk.eq(value), chunk_last.eq(Value.cast(value) == chunks - 1)]

        def reset_counters():
            set_row(0)
            set_chunk(0)
            m.d.sync += [lane.eq(0), waddr.eq(0), count.eq(0)]

        def step_lane_chunk():
            """Advance (lane, chunk) to the next element of a vector: bank lane, address chunk."""
            with m.If(lane == lanes - 1):
                m.d.sync += lane.eq(0)
                set_chunk(chunk + 1)
            with m.Else():
                m.d.sync += lane.eq(lane + 1)

        def step_row_major():
            """Advance (lane, chunk, waddr) to the next weight in row-major order."""
            with m.If(chunk_last & (lane == last_lanes - 1)):
                m.d.sync += [lane.eq(0), waddr.eq(waddr + 1)]
                set_chunk(0)
            with m.Elif(lane == lanes - 1):
                m.d.sync += [lane.eq(0), waddr.eq(waddr + 1)]
                set_chunk(chunk + 1)
            with m.Else():
                m.d.sync += lane.eq(lane + 1)

        # Compute pipeline: stage 0 issues reads; metadata travels with the data.
        issue = Signal()
        issue_first = Signal()   # first chunk of a row (forward) / first row (transposed)
        issue_last = Signal()    # last chunk of a row (forward) / last row (transposed)
        issue_nlanes = Signal(range(lanes + 1))
        # The block-RAM banks (W, G) read only where the data is used (so that an enabled read
        # never meets a write to its address, see w_attrs); the small memories always read.
        # Their addresses are the walk's counters in every state (the data is used only
        # while a walk issues): no decoder of the FSM's state in front of the LUT RAM's read.
        for port in [*x_rd, s_rd]:
            m.d.comb += port.en.eq(1)
        m.d.comb += [*(port.addr.eq(chunk) for port in x_rd), s_rd.addr.eq(row)]
        m.d.comb += [en.eq(reg) for en, reg in zip(bank_en, wg_en, strict=True)]
        for k in range(lanes):
            m.d.comb += y_rd[k].en.eq(rd_en[k // GROUP])

        # The operation, decoded once into registered flags (they fan out to every lane).
        is_fwd, is_tr, is_upd = Signal(), Signal(), Signal()
        is_grad, is_acc, is_apply = Signal(), Signal(), Signal()

        def stage(*signals, name):
            """Registered copies of ``signals``: the pipeline's metadata moving one stage."""
            regs = [Signal.like(sig, name=f"{name}_{k}") for k, sig in enumerate(signals)]
            m.d.sync += [r.eq(sig) for r, sig in zip(regs, signals, strict=True)]
            return regs

        # Stage 1: memory data valid. Stage 2: memory data registered, the shared operand once
        # per group of lanes. Stage 3: multiplier operands registered (the DSP's input
        # registers), invalid lanes zeroed. Stage 4: products registered (its output register).
        s1, s1_first, s1_last, s1_nlanes, s1_waddr = stage(
            issue, issue_first, issue_last, issue_nlanes, waddr, name="s1")
        s2, s2_first, s2_last, s2_nlanes, s2_waddr = stage(
            s1, s1_first, s1_last, s1_nlanes, s1_waddr, name="s2")
        s3, s3_first, s3_last, s3_nlanes, s3_waddr = stage(
            s2, s2_first, s2_last, s2_nlanes, s2_waddr, name="s3")
        s4, s4_first, s4_last, s4_nlanes = stage(s3, s3_first, s3_last, s3_nlanes, name="s4")
        # The lanes, a LaneGroup per group of GROUP lanes: its banks, multipliers, lane
        # accumulators and weight updates, each group with its own registered copy of the
        # controls below (its fan-out bound).
        ctrl = Signal(lane_control(lanes, w_depth))
        m.d.comb += [ctrl.nlanes.eq(issue_nlanes), ctrl.waddr.eq(s3_waddr),
                     ctrl.times_s.eq(is_upd | is_acc), ctrl.s_right.eq(is_tr),
                     ctrl.tr_acc.eq(is_tr & s3), ctrl.tr_first.eq(s3_first),
                     ctrl.tr_clear.eq(is_tr & s4 & s4_last),
                     ctrl.u_write.eq((is_upd | is_apply) & s4), ctrl.grad.eq(is_grad),
                     ctrl.g_write.eq((is_acc | is_apply) & s3), ctrl.g_keep.eq(is_acc),
                     ctrl.apply.eq(is_apply)]
        lane_groups = []
        for g in range(n_groups):
            first = g * GROUP
            size = min(lanes, first + GROUP) - first
            m.submodules[f"lanes{g}"] = group = LaneGroup(
                first=first, count=size, lanes=lanes, depth=w_depth, weight_width=wf.width,
                operand_width=self._in_w, lane_width=lane_shape.width,
                shift=self.forward_shift, width=self._of.width, out_width=self._out_w,
                grad=(self.grad_product_shift, self._gf.width) if train else None,
                update_shift=self.update_shift, acc_width=self._acc_width if train else None,
                apply_shift=self.apply_shift, rounding=self._rounding,
                draw_bits=0 if draws is None else len(draws[0]), one_chunk=chunks == 1,
                tied=self._taps is not None, init=w_init[first:first + size],
                block_ram=block_ram)
            lane_groups.append(group)
            m.d.comb += [group.ctrl.eq(ctrl), group.addr.eq(bank_addr[g]),
                         group.en.eq(bank_en[g]), group.load_valid.eq(lw_valid[g]),
                         group.load_lane.eq(lw_lane[g]), group.load_addr.eq(lw_addr[g]),
                         group.load_word.eq(lw_word[g]), group.s.eq(s_rd.data),
                         group.clear.eq(self.clear)]
            m.d.comb += [group.x[j].eq(x_rd[first + j].data) for j in range(size)]
            if draws is not None:
                m.d.comb += [group.draw[j].eq(draws[first + j]) for j in range(size)]
        prods = [p for group in lane_groups for p in group.product]
        w_q = [q for group in lane_groups for q in group.w_q]
        g_q = [q for group in lane_groups for q in group.g_q] if train else []

        if train:
            if self._bias:
                # The bias gradient: s_i added once per row (at its first chunk); lane 0's
                # multiplier operand a is s_i in ACCUMULATE.
                s_s4 = stage(*stage(lane_groups[0].a_first, name="sacc3"), name="sacc")[0]
                acc_row = Signal(range(max(rows, 2)))
                with m.If(is_acc & s4 & s4_first):
                    m.d.comb += [gd_rd.addr.eq(acc_row), gd_wr.addr.eq(acc_row),
                                 gd_wr.data.eq(gd_rd.data + s_s4), gd_wr.en.eq(1)]
                with m.If(is_acc & s4 & s4_last):
                    m.d.sync += acc_row.eq(acc_row + 1)
                with m.If(self.start & ~self.busy):
                    m.d.sync += acc_row.eq(0)

        # Forward: pipelined adder tree, then the row accumulator; the row's one rounding
        # happens the cycle after its last chunk. The tree's T register stages hold two levels
        # each. A one-chunk tile without bias has nothing to accumulate: its row accumulator's
        # register becomes one more tree stage instead (same latency), so the top levels —
        # whose operands come from lanes spread over the device — get a stage each.
        fused = chunks == 1 and not self._bias
        m.submodules.tree = tree = AdderTree(width=len(prods[0]), count=lanes,
                                             stages=self.tree_stages + int(fused))
        m.d.comb += [term.eq(prod) for term, prod in zip(tree.terms, prods, strict=True)]
        # The chunk's metadata moves along with it; a fused tree's last stage is the row
        # accumulator's, whose metadata is fwd_pending.
        valid_t, first_t, last_t = s4, s4_first, s4_last
        for depth in range(tree.latency - int(fused)):
            valid_t, first_t, last_t = stage(valid_t, first_t, last_t, name=f"tmeta{depth}")
        # The rows' sums, bias, rounding and memory (the side port's stream is its output).
        m.submodules.fwd = fwd = ForwardOutput(
            rows=rows, sum_width=len(tree.total), acc_width=row_shape.width,
            shift=self.forward_shift, width=self._of.width, out_width=self._out_w,
            rounding=self._rounding, draw_bits=0 if draws is None else len(draws[0]),
            grad=(self.grad_product_shift, self._gf.width) if train else None,
            bias=(wf.width, self._if.frac) if self._bias else None, accumulate=not fused)
        m.d.comb += [fwd.total.eq(tree.total), fwd.valid.eq(valid_t), fwd.first.eq(first_t),
                     fwd.last.eq(last_t), fwd.forward.eq(is_fwd),
                     fwd.restart.eq(self.start & ~self.busy)]
        if train:
            m.d.comb += fwd.grad.eq(is_grad)
        if draws is not None:
            m.d.comb += fwd.draw.eq(draws[0])
        if self._bias:
            m.d.comb += [b_rd.addr.eq(fwd.bias_row), fwd.bias.eq(b_rd.data)]
        with m.If(fwd.rounds):
            advance_product(1)
        if self._side:
            wiring.connect(m, fwd.y, wiring.flipped(self.y_out))
        with m.If(fwd.overflow):
            m.d.comb += overflow_set.eq(1)

        # Transposed: the lanes accumulate over the rows; the chunk's roundings happen the
        # cycle after its last row (tr_pending), and the rounded words are written the cycle
        # after that, at chunk tr_chunk of the y banks.
        tr_chunk = Signal(range(max(chunks, 2)))
        tr_pending = Signal()
        tr_nlanes = Signal(range(lanes + 1))
        m.d.sync += tr_pending.eq(is_tr & s4 & s4_last)
        m.d.comb += ctrl.tr_write.eq(tr_pending)
        with m.If(is_tr & s4):
            m.d.sync += tr_nlanes.eq(s4_nlanes)
        with m.If(tr_pending):
            with m.If(tr_nlanes == lanes):
                advance_product(lanes)
            with m.Else():
                advance_product(last_lanes)
        with m.If(own_copy(m, tr_pending, "tr_written")):   # = each group's tr_write
            m.d.sync += tr_chunk.eq(tr_chunk + 1)
        for group in lane_groups:
            for j in range(group.count):
                port = y_wr[group.first + j]
                with m.If(group.y_write[j]):
                    m.d.comb += [port.addr.eq(tr_chunk), port.data.eq(group.y_word[j]),
                                 port.en.eq(1)]

        # Update and APPLY: the lanes round the step (drawing in row-major order), add the old
        # weight, saturate and write back.
        def update_draws(shift):
            with m.If(s4_nlanes == lanes):
                advance(lanes, shift)
            with m.Else():
                advance(last_lanes, shift)

        with m.If(is_upd & s4):
            update_draws(self.update_shift)
        if train:
            with m.If(is_apply & s4):
                update_draws(self.apply_shift)

        # The tied SGD step of a convolution tile (``taps``): a walk over the taps' entries,
        # one per cycle (a ROM gives each entry's bank and address), twice: first summing G per
        # tap (stage 1 reads the banks, stage 3 picks the tap's bank, stage 4 accumulates),
        # then writing each tap's new value; G is cleared by a walk over all addresses that
        # runs alongside the second.
        tied = self._taps is not None
        if tied:
            n_taps = self._taps.shape[0]
            # Entry t·rows + i: W[i, j] with j = taps[t, i] is in bank j mod lanes at address
            # i·C + j div lanes.
            pbits = max(1, (lanes - 1).bit_length())
            abits = max(1, (w_depth - 1).bit_length())
            places = [((e % rows) * chunks + j // lanes) << pbits | (j % lanes)
                      for e, j in enumerate(self._taps.ravel().tolist())]
            m.submodules.taps = rom = Memory(shape=unsigned(pbits + abits),
                                             depth=n_taps * rows, init=places)
            rom_rd = rom.read_port()
            sum_shape = signed(self._acc_width + (rows - 1).bit_length())  # rows words, exact
            m.submodules.tap_sums = sum_mem = Memory(shape=sum_shape, depth=n_taps, init=[])
            m.submodules.tap_values = val_mem = Memory(shape=signed(wf.width), depth=n_taps,
                                                       init=[])
            sum_rd, sum_wr = sum_mem.read_port(domain="comb"), sum_mem.write_port()
            val_rd, val_wr = val_mem.read_port(domain="comb"), val_mem.write_port()
            tap = Signal(range(max(n_taps, 2)))
            walk = Signal()          # an entry issued this cycle (the ROM is addressed)
            writing = Signal()       # the second walk: write the taps' new values
            zeroing = Signal()       # the walk clearing G
            zaddr = Signal(range(max(w_depth, 2)))
            t1_valid, t1_first, t1_last, t1_tap = stage(
                walk, row == 0, row_last, tap, name="t1")
            t1_bank, t1_addr = rom_rd.data[:pbits], rom_rd.data[pbits:]
            m.d.comb += [rom_rd.addr.eq(count), val_rd.addr.eq(t1_tap)]
            t2_valid, t2_first, t2_last, t2_tap, t2_bank = stage(
                t1_valid & ~writing, t1_first, t1_last, t1_tap, t1_bank, name="t2")
            t3_valid, t3_first, t3_last, t3_tap, t3_bank = stage(
                t2_valid, t2_first, t2_last, t2_tap, t2_bank, name="t3")
            t4_valid, t4_first, t4_last, t4_tap = stage(
                t3_valid, t3_first, t3_last, t3_tap, name="t4")
            picked_g = Signal(signed(self._acc_width))
            picked_w = Signal(signed(wf.width))
            m.d.sync += [picked_g.eq(Array(g_q)[t3_bank]), picked_w.eq(Array(w_q)[t3_bank])]
            tap_acc = Signal(sum_shape)
            tap_total = Signal(sum_shape)
            m.d.comb += tap_total.eq(Mux(t4_first, picked_g, tap_acc + picked_g))
            with m.If(t4_valid):
                m.d.sync += tap_acc.eq(tap_total)
                with m.If(t4_last):
                    m.d.comb += [sum_wr.addr.eq(t4_tap), sum_wr.data.eq(tap_total),
                                 sum_wr.en.eq(1)]
                with m.If(t4_first):   # the tap's value, from row 0
                    m.d.comb += [val_wr.addr.eq(t4_tap), val_wr.data.eq(picked_w),
                                 val_wr.en.eq(1)]

            def walk_taps(last_state):
                """Issue the next entry of the tap walk; after the last, go to ``last_state``."""
                m.d.comb += walk.eq(1)
                m.d.sync += count.eq(count + 1)
                with m.If(row_last):
                    set_row(0)
                    m.d.sync += tap.eq(tap + 1)
                    with m.If(tap == n_taps - 1):
                        m.d.sync += [count.eq(0), tap.eq(0)]
                        goto(last_state)
                with m.Else():
                    set_row(row + 1)

        # Pipeline occupancy: the operation ends when the last issue has drained: the last
        # forward result is written T + 6 cycles after its issue, a transposed one 6 cycles
        # after; an update writes 5 cycles after and raises the flag (if any) 6 after.
        forward_drain = tree.latency + int(not fused) + 5
        drain = Signal(range(forward_drain + 1))
        in_flight = Signal(range(forward_drain + 1))

        # READ_*'s output. A multiplexer indexed by the lane, one word per cycle; or
        # (read_chain) a chain of registers, one per lane, loaded with a whole
        # chunk from the lanes' banks and shifted towards lane 0 one word per handshake, so
        # each lane's word travels to its neighbour only (the 64-way multiplexer pulled every
        # lane's bank outputs to one place, the 64-lane tile's most congested spot). While the
        # chain is emptied the banks read the next chunk (prefetch), which the chain loads as
        # its last word is taken; ``fresh`` says the prefetched words are there.
        out_valid = Signal()
        m.d.comb += [self.o.valid.eq(out_valid)]
        chained = self._read_chain
        readout_class = ChainReadout if chained else MuxReadout
        m.submodules.readout = readout = readout_class(
            lanes=lanes, width=len(self.o.payload), w_width=wf.width, y_width=self._out_w,
            g_width=self._acc_width if train else None)
        m.d.comb += readout.read_w.eq(op == TileOp.READ_W)
        if train:
            m.d.comb += readout.read_g.eq(op == TileOp.READ_G)
        if chained:
            # The chain acts on registered copies of the FSM's decisions, one per group of lanes:
            # a word is offered every other cycle (``phase``). It loads W and G from their
            # registered copies at stage 2 (``w_q``, ``g_q``: no block RAM's clock-to-output in
            # front of the chain's multiplexer), a cycle after the banks' outputs; ``fresh``
            # waits for them.
            m.d.comb += [readout.w[k].eq(w_q[k]) for k in range(lanes)]
            m.d.comb += [readout.g[k].eq(g_q[k]) for k in range(lanes) if train]
            chain_load, chain_shift = readout.load, readout.shift
            load_g = readout.loading
            # Where READ_DATA's offered word is (registered there, see below).
            last_of_chunk, last_word = Signal(), Signal()
            prefetch, fresh, phase = Signal(2), Signal(), Signal()
            loaded = own_copy(m, chain_load, "chain_loaded")   # = load_g
            m.d.sync += [prefetch.eq(Cat(loaded, prefetch[0])),
                         fresh.eq(~loaded & (fresh | prefetch[1]))]
            # READ_DATA's handshake (below) shifts the chain, or at the last word of a chunk
            # loads the next (the last word of all loads nothing); READ_LOAD loads the first.
            # Decided from the FSM's copies of those states, not from a decoder of its state.
            taken = mirrors["READ_DATA"][0] & self.o.ready & phase
            m.d.comb += [chain_shift.eq(taken & ~last_of_chunk),
                         chain_load.eq(mirrors["READ_LOAD"][0]
                                       | (taken & last_of_chunk & fresh & ~last_word))]
        else:
            m.d.comb += readout.lane.eq(lane)
            w_data = [word for group in lane_groups for word in group.w_data]
            m.d.comb += [readout.w[k].eq(w_data[k]) for k in range(lanes)]
            if train:
                g_data = [word for group in lane_groups for word in group.g_data]
                m.d.comb += [readout.g[k].eq(g_data[k]) for k in range(lanes)]
        m.d.comb += [readout.y[k].eq(y_rd[k].data) for k in range(lanes)]

        # The banks' reads other than the walks', enabled a cycle ahead: READ_* and the
        # chain's prefetch (a chunk loaded into the chain is the cue to read the next, in the
        # same group's banks).
        for g in range(n_groups):
            m.d.sync += rd_en[g].eq(read_next | (load_g[g] if chained else 0))

        # Side ports (a core's direct access); the FSM's own accesses below take precedence.
        s_count = Signal(range(rows + 1))   # words of s that arrived on s_in
        streaming = Signal()                # the running TRANSPOSED takes s from s_in
        if self._side:
            with m.If(self.s_in.valid):
                m.d.comb += [s_wr.addr.eq(s_count), s_wr.data.eq(self.s_in.payload),
                             s_wr.en.eq(1)]
                m.d.sync += s_count.eq(s_count + 1)
            with m.If(self.s_restart):
                m.d.sync += s_count.eq(0)
            for k in range(lanes):
                with m.If(self.x_side_en[k]):
                    m.d.comb += [x_wr[k].addr.eq(self.x_side_addr),
                                 x_wr[k].data.eq(self.x_side_data[k]), x_wr[k].en.eq(1)]
                m.d.comb += self.y_side_data[k].eq(y_rd[k].data)
        for k in range(lanes):                  # LOAD_X's words (load_word), a cycle late
            g = k // GROUP
            with m.If(lx_valid[g] & (lw_lane[g] == k % GROUP)):
                m.d.comb += [x_wr[k].addr.eq(lw_addr[g]), x_wr[k].data.eq(lw_word[g]),
                             x_wr[k].en.eq(1)]

        # Each group steps its own read address, in the shape of a flip-flop's own controls: a
        # synchronous reset, an enable, and the stepped address as data. Along a row walk +1;
        # down a column walk +C, and to the next chunk's top (1 - (rows - 1)·C) after its last
        # row (a bubble of TRANSPOSED_STREAM holds it); with each prefetch of the chain for
        # READ_W and READ_G, +1 (W and G are read row-major; READ_Y reads the y banks at
        # ``chunk``). Back to 0 with the last step of each: a walk's where the FSM's registered
        # flags say, a row-major READ's at the last address. The W and G banks' enable for the
        # next cycle: a read cued (``rd_en``), a walk starting, or one going on.
        ready_row = Signal()     # the column walk's row may enter (its s_i has arrived)
        m.d.comb += ready_row.eq(~streaming | (row < s_count))
        if chained:
            row_major_g = group_copies(m, n_groups, (op == TileOp.READ_W) | (op == TileOp.READ_G),
                                       "read_rows")
        for g in range(n_groups):
            address, in_rows, in_cols = (rd_addr[g], walking["ISSUE_ROWS"][g],
                                         walking["ISSUE_COLS"][g])
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
            m.d.sync += wg_en[g].eq(read_next | (load_g[g] if chained else 0) | walk_starts
                                    | ((in_rows | in_cols) & ~walk_ends))

        # The FSM's state as the copies in ``mirrors`` see it: ``state`` is ``m.State``
        # that knows its name, ``goto`` is ``m.next =`` that sets the copies of the state it
        # enters and clears those of the state it leaves (their only inputs: each copy follows
        # the state it mirrors without a decoder of the whole state).
        here = []

        @contextlib.contextmanager
        def state(name):
            with m.State(name):
                here.append(name)
                try:
                    yield
                finally:
                    here.pop()

        def goto(name):
            m.next = name
            if name != here[-1]:
                m.d.sync += [flag.eq(1) for flag in mirrors.get(name, ())]
                m.d.sync += [flag.eq(0) for flag in mirrors.get(here[-1], ())]
                if name in walking and here[-1] not in walking:
                    m.d.comb += walk_starts.eq(1)

        def finish(next_state=None, when=None):
            """End the operation (``done``), or go on to ``next_state`` where ``when``."""
            if next_state is None:
                m.d.comb += self.done.eq(1)
                goto("IDLE")
                return
            with m.If(when):
                m.d.sync += count.eq(0)
                goto(next_state)
            with m.Else():
                finish()

        def finish_read(row_major):
            """The last word of READ_*: the bias words follow the weights' (``row_major``)."""
            if self._bias:
                finish("READ_BIAS", row_major)
            else:
                finish()

        # The operations this tile has, by how they run: row-walking products (FORWARD*),
        # row-walking weight writes (UPDATE, ACCUMULATE, APPLY), column-walking products
        # (TRANSPOSED*, the streamed ones only with side ports), stream reads; the rest of the
        # TileOp values end at once (NOTHING).
        stream_ops = [TileOp.TRANSPOSED_STREAM] if self._side else []
        fwd_ops, write_ops = [TileOp.FORWARD], [TileOp.UPDATE]
        tr_ops = [TileOp.TRANSPOSED, *stream_ops]
        read_ops = [TileOp.READ_W, TileOp.READ_Y]
        grad_ops = []
        if train:
            grad_ops = [TileOp.FORWARD_G, TileOp.TRANSPOSED_G] + (
                [TileOp.TRANSPOSED_STREAM_G] if self._side else [])
            fwd_ops.append(TileOp.FORWARD_G)
            tr_ops += grad_ops[1:]
            stream_ops += grad_ops[2:]
            write_ops += [TileOp.ACCUMULATE] + ([] if tied else [TileOp.APPLY])
            read_ops.append(TileOp.READ_G)

        # busy, and the reads decided with start, from IDLE's copy (no decoder of the state
        # in front of the 2·lanes bank enables).
        idle = mirrors["IDLE"][0]
        m.d.comb += self.busy.eq(~idle)
        m.d.comb += read_next.eq(idle & self.start & self.op.as_value().matches(*read_ops))
        with m.FSM():
            with state("IDLE"):
                if self._side:
                    for k in range(lanes):
                        m.d.comb += [y_rd[k].addr.eq(self.y_side_addr), y_rd[k].en.eq(1)]
                with m.If(self.start):
                    if self._side:
                        m.d.sync += s_count.eq(0)
                    def one_of(ops):
                        return self.op.as_value().matches(*ops)

                    if train:
                        m.d.sync += [is_grad.eq(one_of(grad_ops)),
                                     is_acc.eq(self.op == TileOp.ACCUMULATE),
                                     is_apply.eq(self.op == TileOp.APPLY)]
                    m.d.sync += [op.eq(self.op), is_fwd.eq(one_of(fwd_ops)),
                                 is_tr.eq(one_of(tr_ops)),
                                 streaming.eq(one_of(stream_ops)),
                                 is_upd.eq(self.op == TileOp.UPDATE)]
                    reset_counters()
                    m.d.sync += tr_chunk.eq(0)
                    with m.Switch(self.op):
                        with m.Case(TileOp.LOAD_W):
                            goto("LOAD_W")
                        with m.Case(*read_ops):
                            goto("READ_ADDR")
                        with m.Case(TileOp.LOAD_X):
                            goto("LOAD_X")
                        with m.Case(TileOp.LOAD_S):
                            goto("LOAD_S")
                        with m.Case(*fwd_ops):
                            m.d.sync += [y_fwd.eq(1), drain.eq(forward_drain)]
                            goto("ISSUE_ROWS")
                        with m.Case(*write_ops):
                            m.d.sync += drain.eq(6)
                            goto("ISSUE_ROWS")
                        with m.Case(*tr_ops):
                            m.d.sync += [y_fwd.eq(0), drain.eq(6)]
                            goto("ISSUE_COLS")
                        if tied:
                            with m.Case(TileOp.APPLY):
                                m.d.sync += tap.eq(0)
                                goto("TAP_SUM")
                        if self._bias:
                            with m.Case(TileOp.LOAD_BIAS):
                                goto("LOAD_BIAS")
                        with m.Default():
                            goto("NOTHING")

            with state("LOAD_W"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    load_word(lw_valid)
                    m.d.sync += count.eq(count + 1)
                    step_row_major()
                    with m.If(count == rows * cols - 1):
                        m.d.comb += self.done.eq(1)
                        goto("IDLE")

            with state("LOAD_X"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    load_word(lx_valid)
                    step_lane_chunk()
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == cols - 1):
                        m.d.comb += self.done.eq(1)
                        goto("IDLE")

            with state("LOAD_S"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.comb += [s_wr.addr.eq(count), s_wr.data.eq(self.i.payload),
                                 s_wr.en.eq(1)]
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == rows - 1):
                        m.d.comb += self.done.eq(1)
                        goto("IDLE")

            # FORWARD and UPDATE walk row by row, chunk by chunk.
            with state("ISSUE_ROWS"):
                m.d.comb += [issue.eq(1), issue_first.eq(chunk == 0), issue_last.eq(chunk_last)]
                m.d.comb += issue_nlanes.eq(lanes)
                with m.If(chunk_last):
                    m.d.comb += issue_nlanes.eq(last_lanes)
                m.d.sync += waddr.eq(waddr + 1)         # the banks read at waddr (rd_addr)
                with m.If(chunk_last):
                    set_chunk(0)
                    set_row(row + 1)
                    with m.If(row_last):
                        m.d.sync += in_flight.eq(drain)
                        goto("DRAIN")
                with m.Else():
                    set_chunk(chunk + 1)

            # TRANSPOSED walks chunk by chunk, row by row; TRANSPOSED_STREAM issues row i once
            # s_i has arrived (the pipeline carries a valid bit, so a gap is a bubble).
            with state("ISSUE_COLS"):
                m.d.comb += [issue.eq(ready_row), issue_first.eq(row == 0),
                             issue_last.eq(row_last)]
                m.d.comb += issue_nlanes.eq(lanes)
                with m.If(chunk_last):
                    m.d.comb += issue_nlanes.eq(last_lanes)
                # The banks read at row·C + chunk (rd_addr) in every cycle (a bubble reads an
                # address again).
                with m.If(ready_row):
                    with m.If(row_last):
                        set_row(0)
                        set_chunk(chunk + 1)
                        with m.If(chunk_last):
                            m.d.sync += in_flight.eq(drain)
                            goto("DRAIN")
                    with m.Else():
                        set_row(row + 1)

            with state("NOTHING"):
                m.d.comb += self.done.eq(1)
                goto("IDLE")

            if self._bias:
                with state("LOAD_BIAS"):
                    m.d.comb += self.i.ready.eq(1)
                    with m.If(self.i.valid):
                        m.d.comb += [b_wr.addr.eq(count), b_wr.data.eq(self.i.payload),
                                     b_wr.en.eq(1)]
                        m.d.sync += count.eq(count + 1)
                        with m.If(count == rows - 1):
                            m.d.comb += self.done.eq(1)
                            goto("IDLE")

            with state("DRAIN"):
                m.d.sync += in_flight.eq(in_flight - 1)
                with m.If(in_flight == 1):
                    if train and self._bias:
                        finish("BIAS_APPLY", is_apply)
                    else:
                        finish()

            if train and self._bias:
                # APPLY's bias step, one row per cycle, drawing after all the weights' draws
                # (the model applies the weights' step, then the bias's, with one LFSR).
                with state("BIAS_APPLY"):
                    m.d.comb += [b_rd.addr.eq(count), gd_rd.addr.eq(count)]
                    new_b, sat_b = sgd_word(b_rd.data, gd_rd.data, self.bias_apply_shift)
                    m.d.comb += [b_wr.addr.eq(count), b_wr.data.eq(new_b), b_wr.en.eq(1),
                                 gd_wr.addr.eq(count), gd_wr.data.eq(0), gd_wr.en.eq(1)]
                    with m.If(sat_b):
                        m.d.comb += overflow_set.eq(1)
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == rows - 1):
                        m.d.comb += self.done.eq(1)
                        goto("IDLE")


            if tied:
                with state("TAP_SUM"):
                    walk_taps("TAP_DRAIN")
                    m.d.sync += in_flight.eq(4)

                with state("TAP_DRAIN"):   # the last tap's sum is written at stage 4
                    m.d.sync += in_flight.eq(in_flight - 1)
                    with m.If(in_flight == 1):
                        m.d.sync += [zeroing.eq(1), zaddr.eq(0)]
                        goto("TAP_STEP")

                # One tap per cycle, in tap order: the step from the negated sum, one rounding.
                with state("TAP_STEP"):
                    m.d.comb += [sum_rd.addr.eq(count), val_rd.addr.eq(count)]
                    new_value, sat_value = sgd_word(val_rd.data, sum_rd.data, self.apply_shift)
                    m.d.comb += [val_wr.addr.eq(count), val_wr.data.eq(new_value),
                                 val_wr.en.eq(1)]
                    with m.If(sat_value):
                        m.d.comb += overflow_set.eq(1)
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == n_taps - 1):
                        m.d.sync += [count.eq(0), writing.eq(1)]
                        goto("TAP_WRITE")

                with state("TAP_WRITE"):
                    walk_taps("TAP_END")

                # The last entry is written now; the clearing of G may still be running.
                with state("TAP_END"):
                    with m.If(~zeroing | (zaddr == w_depth - 1)):
                        m.d.sync += writing.eq(0)
                        if self._bias:
                            m.d.sync += count.eq(0)
                            goto("BIAS_APPLY")
                        else:
                            finish()

            # READ_W / READ_Y / READ_G. Every bank reads the same address, so a chunk's words
            # are all present at once; the read ports hold their data while not enabled.
            # Multiplexer: one cycle to address the first chunk, then one word per cycle; the
            # next chunk is read as the last word of this one is taken. Chain: one cycle to read
            # the first chunk, two to load it into the chain, then one word every two cycles; a
            # prefetched chunk waits in the banks' outputs (and W's and G's in their registered
            # copies) for the chain.
            row_major = op == TileOp.READ_W              # else READ_Y, by chunks of lanes
            if train:
                row_major = row_major | (op == TileOp.READ_G)
            with state("READ_ADDR"):
                for k in range(lanes):                   # the banks at waddr = 0 (read_next)
                    m.d.comb += y_rd[k].addr.eq(chunk)
                with m.If((op == TileOp.READ_Y) & y_fwd):
                    goto("READ_F")
                with m.Else():
                    if chained:
                        goto("READ_LOAD")
                    else:
                        next_read(1)
                        goto("READ_DATA")

            # READ_Y after a FORWARD*: the f memory, one word per cycle (after READ_ADDR's
            # cycle, as from the banks).
            with state("READ_F"):
                m.d.comb += [fwd.read_addr.eq(count), out_valid.eq(1),
                             self.o.payload.eq(fwd.read_data)]
                with m.If(self.o.ready):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == rows - 1):
                        m.d.comb += self.done.eq(1)
                        goto("IDLE")

            if chained:
                with state("READ_LOAD"):   # chain_load (above)
                    m.d.sync += phase.eq(0)
                    goto("READ_DATA")

                with state("READ_DATA"):
                    for k in range(lanes):               # prefetched: the banks read here
                        m.d.comb += y_rd[k].addr.eq(chunk + 1)
                    m.d.comb += self.o.payload.eq(readout.payload)
                    # Where the word offered is, registered: the counters move only with a
                    # handshake, which only a cycle with ``phase`` has, and this state's first
                    # cycle has none — so in every such cycle these describe the counters.
                    m.d.sync += [last_of_chunk.eq((lane == lanes - 1)
                                                  | (row_major & chunk_last
                                                     & (lane == last_lanes - 1))),
                                 last_word.eq(count == Mux(row_major, rows * cols, cols) - 1)]
                    # The last word of a chunk goes only once the next chunk is in the banks'
                    # outputs (a one-word chunk can be taken before its successor is read).
                    m.d.comb += out_valid.eq(phase & (~last_of_chunk | fresh | last_word))
                    with m.If(~phase):                   # the chain acts in this cycle
                        m.d.sync += phase.eq(1)
                    with m.If(self.o.ready & out_valid):
                        m.d.sync += [count.eq(count + 1), phase.eq(0)]
                        # The last word loads nothing (the chain's next contents are not
                        # used): a READ_W or READ_G thus cues the prefetch w_depth times, and
                        # the groups' read addresses step back to 0 with the last cue.
                        # (chain_shift where ~last_of_chunk, else chain_load where
                        # ~last_word: above.)
                        with m.If(row_major):
                            step_row_major()
                        with m.Else():
                            step_lane_chunk()
                        with m.If(last_word):
                            finish_read(row_major)

            else:
                with state("READ_DATA"):
                    for k in range(lanes):               # the banks at the next address
                        m.d.comb += y_rd[k].addr.eq(chunk + 1)
                    m.d.comb += out_valid.eq(1)
                    m.d.comb += self.o.payload.eq(readout.payload)
                    with m.If(self.o.ready):
                        m.d.sync += count.eq(count + 1)
                        total = Signal.like(count)
                        m.d.comb += total.eq(cols)
                        with m.If(row_major):
                            m.d.comb += total.eq(rows * cols)
                            with m.If((lane == lanes - 1)
                                      | (chunk_last & (lane == last_lanes - 1))):
                                m.d.comb += [en.eq(1) for en in bank_en]
                                advance_read(1)
                            step_row_major()
                        with m.Else():
                            with m.If(lane == lanes - 1):
                                for port in y_rd:
                                    m.d.comb += port.en.eq(1)
                            step_lane_chunk()
                        with m.If(count == total - 1):
                            next_read(0)
                            finish_read(row_major)

            if self._bias:
                # READ_W's and READ_G's tail: the bias (or its gradient) after the weights'.
                with state("READ_BIAS"):
                    m.d.comb += [b_rd.addr.eq(count), out_valid.eq(1),
                                 self.o.payload.eq(b_rd.data)]
                    if train:
                        m.d.comb += gd_rd.addr.eq(count)
                        with m.If(op == TileOp.READ_G):
                            m.d.comb += self.o.payload.eq(gd_rd.data)
                    with m.If(self.o.ready):
                        m.d.sync += count.eq(count + 1)
                        with m.If(count == rows - 1):
                            m.d.comb += self.done.eq(1)
                            goto("IDLE")
        if tied:
            # Stage 1 of the tap walks (the ROM's data is here): read the banks (summing
            # walk) or write the tap's new value into its bank (writing walk).
            with m.If(t1_valid & ~writing):
                m.d.comb += [addr.eq(t1_addr) for addr in bank_addr]
                m.d.comb += [en.eq(1) for en in bank_en]
            for group in lane_groups:
                lanes_here = range(group.first, group.first + group.count)
                m.d.comb += [group.tap_we.eq(Cat(t1_valid & writing & (t1_bank == k)
                                                 for k in lanes_here)),
                             group.tap_addr.eq(t1_addr), group.tap_word.eq(val_rd.data),
                             group.zero.eq(zeroing), group.zero_addr.eq(zaddr)]
            with m.If(zeroing):
                m.d.sync += zaddr.eq(zaddr + 1)
                with m.If(zaddr == w_depth - 1):
                    m.d.sync += zeroing.eq(0)
        # The FSM's side's sticky flag; each group has its own (LaneGroup.overflow).
        ovf_fsm, ovf_fsm_set = Signal(name="ovf_fsm"), Signal(name="ovf_fsm_set")
        m.d.comb += ovf_fsm_set.eq(Cat(overflow_set).any())
        with m.If(self.clear):
            m.d.sync += ovf_fsm.eq(0)
        with m.Elif(ovf_fsm_set):
            m.d.sync += ovf_fsm.eq(1)
        sticky = [ovf_fsm, *(group.overflow for group in lane_groups)]
        setting = [ovf_fsm_set, *(group.saturating for group in lane_groups)]
        # The output also shows what sets the registers at the coming edge: an operation's
        # last narrowing saturates in its done cycle, and the flag is high in that cycle (the
        # registers alone would show it one cycle after done). Only the output port sees
        # these terms, no register between them. A clear in the same cycle wins over them, as
        # it does over the registers (interface rule 6: holding clear keeps the flag low).
        m.d.comb += self.overflow.eq(Cat(*sticky).any() | (Cat(*setting).any() & ~self.clear))
        return m
