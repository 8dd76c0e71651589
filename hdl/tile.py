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
rounding, output memory: :class:`~xbarode.hdl.output_stage.ForwardOutput`); with ``taps``, the
tied-kernel step (:class:`~xbarode.hdl.tap_walker.TapWalker`). The sequencer — state machine,
counters, per-group read addresses, the pipeline's metadata — is built into the tile's own
module by :class:`~xbarode.hdl.tile_sequencer.TileSequencer` (its module docstring says why not
as a component); ``elaborate`` builds the parts and wires them, each part's wiring a method.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from xbarode.model.device import DEVICE_SEED, DeviceModel
from xbarode.model.fixed import LFSR_SEED, ROUNDINGS, Format, Lfsr, site_seed
from xbarode.model.fixed_ops import accumulator_bits

from .adder_tree import AdderTree
from .checked import CheckedComponent
from .device import gauss, program_word, read_geometry, scale_noise, write_geometry
from .dsp import maps_to_dsp_cell
from .groups import GROUP, own_copy, stage
from .interface import ControlSignature
from .lane_group import LaneGroup
from .output_stage import ForwardOutput
from .pulses import PulseTrains, pulse_geometry
from .ram import memory_attrs
from .readout import ChainReadout, MuxReadout
from .rounding import LfsrBank, lfsr_successor, rounding_offset
from .tap_walker import TapWalker, check_taps
from .tile_op import TileOp
from .tile_sequencer import TileSequencer

__all__ = ["CHAIN_MIN_LANES", "GROUP", "CrossbarTile", "TileOp"]

#: From this many lanes a tile alone (``xbarode generate/cosim/synth tile``) streams READ_*
#: through its chain of lane registers (``read_chain``).
CHAIN_MIN_LANES = 17


class CrossbarTile(CheckedComponent):
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
        LOAD_W and UPDATE still change them (unless ``writable`` is False).
    shift : int
        Extra right shift of the FORWARD and TRANSPOSED narrowings: the product is scaled by
        ``2^-shift`` (a step ``h``) inside its one rounding.
    bias : bool
        FORWARD adds a bias (LOAD_BIAS, words of ``weight_format``) to each row's exact sum,
        aligned to the accumulator (``<< input_format.frac``), before the rounding.
    bias_words : array_like of int, shape (rows,), optional
        Initial bias (words of ``weight_format``; needs ``bias``); zeros otherwise. LOAD_BIAS
        still changes it.
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
    writable : bool
        With False, a read-only table tile: no LOAD_W and no UPDATE (their op codes end at
        once, as any operation the tile does not have), and the weight banks have no write
        port — they hold ``weights``, which must be given, and nothing else (READ_W still
        streams them). No training operations (``grad_format`` must be None). The DFT arrays
        (:class:`~xbarode.hdl.fourier.DftArray`) are such tiles.
    device : DeviceModel, optional
        The array's device models (docs/device.md, the twin of
        :class:`~xbarode.model.fixed_ops.FixedTile`'s ``device``). Reads: FORWARD's and
        TRANSPOSED's operands pass the input DAC (``dac_bits``; UPDATE and ACCUMULATE take
        their operands as they are), and each output word gets the read noise
        (``read_noise``) and passes the ADC (``adc_bits``, ``adc_range``) in place of its one
        rounding; the products on gradients (FORWARD_G, TRANSPOSED_G, TRANSPOSED_STREAM_G)
        alike, with the geometry of ``grad_format`` words and ``grad_shift``
        (``FixedTile.forward(x, grad_format, grad_format, shift=grad_shift)``), their noise
        drawn from the same generator in the order the products run. Writes: each word
        LOAD_W writes and each weight UPDATE writes is snapped to a state (``states``) and
        given the programming noise (``program_noise``), as ``FixedTile.load`` and
        ``FixedTile.update`` do. A clipped DAC code, ADC output, state or noisy weight raises
        ``overflow``. Pulsed updates (``pulses``, with ``asymmetry`` and ``soft_bounds``):
        UPDATE is one sample's stochastic pulse trains with δ = −s (its expected step the
        digital one's ``+ s xᵀ·2^-eta_shift``), ``FixedTile.pulsed_update(-s, input_format,
        x, input_format, shift=eta_shift)`` bit for bit, the generators running on from one
        UPDATE to the next (:class:`~xbarode.hdl.pulses.PulseTrains` makes the trains, the
        lanes count the coincidences and step each weight, a saturation raising
        ``overflow``); the states and the programming noise then apply at LOAD_W only, as
        in the model. With ``grad_format`` (a core's training tile) UPDATE is the pulsed SGD
        step instead, δ = s: ``FixedTile.pulsed_update(s, s_format, x, x_format,
        shift=sgd_shift)`` for one sample (``update_formats``), and APPLY steps only the bias
        (digitally, with ``bias``; the weights' gradient sums are cleared, not applied, and
        draw nothing), as the model's pulsed step (``FixedNetwork.sgd_step``). Without
        pulses, APPLY's writes pass the write models as UPDATE's do, as
        ``FixedTile.apply_gradient`` writes. None, or every model off: the ideal tile, the
        same hardware as without. Refused: the write models or ``pulses`` with initial
        ``weights`` or without ``writable``, a pulse step below one weight LSB (the model's
        :func:`~xbarode.model.device.pulse_step`), and the write models (``pulses`` too)
        with ``taps``. With
        ``side_ports`` the models apply alike to a core's paths: ``y_out`` streams FORWARD's
        words as the ADC gives them, the words ``s_in`` and ``x_side_data`` write pass the DAC
        when a product reads them, and ``y_side_data`` reads TRANSPOSED's words. The read and
        write models add no cycle.
    device_seed : int
        Seed of the device generators (a non-zero 32-bit integer), purpose ``p`` drawing from
        ``Lfsr(site_seed(device_seed, p))`` as the model's: the read noise (0) one draw per
        output word in the order of the outputs, the programming noise (1) and the states'
        stochastic rounding (2) one draw per weight written, in row-major order, the row
        pulses (3) and the column pulses (4) ``BL`` draws per word of ``s`` and of ``x`` at
        each UPDATE, in word order.
    update_formats : tuple of Format, optional
        With ``grad_format`` and ``pulses``: the formats ``(s, x)`` of UPDATE's pulsed SGD
        step (their widths set the trains' full scale, their fractions the step); default
        ``(grad_format, input_format)`` (the gradient on the rows); a tile holding ``Bᵀ``
        takes ``(input_format, grad_format)``.

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
    UPDATE, ACCUMULATE and APPLY (with ``bias``, APPLY takes ``rows`` cycles more; a pulsed
    UPDATE ``max(rows, cols) + 2`` more, its pulse trains, :meth:`pulse_cycles`); with
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
    @staticmethod
    def check_parameters(*, rows: int, cols: int, lanes: int,
                         weight_format: Format, input_format: Format, output_format: Format,
                         acc_width: int = 48, rounding: str = "nearest", eta_shift: int = 0,
                         lfsr_seed: int = LFSR_SEED, weights=None, shift: int = 0,
                         bias: bool = False, bias_words=None, side_ports: bool = False,
                         grad_format: Format | None = None, grad_shift: int = 0,
                         sgd_shift: int = 0, taps=None, read_chain: bool = False,
                         writable: bool = True, device: DeviceModel | None = None,
                         device_seed: int = DEVICE_SEED, update_formats=None) -> None:
        """The constructor's checks, run before a tile is made (the same arguments;
        :class:`~xbarode.hdl.checked.CheckedComponent`), and by a parent or a plan to check
        a tile's parameters without building one.

        Raises
        ------
        TypeError, ValueError
            With the messages the constructor gives.
        """
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
        CrossbarTile._check_initial(weights, bias_words, bias, rows, cols, weight_format)
        if taps is not None:
            if grad_format is None:
                raise ValueError("taps need grad_format: the tied step is APPLY's")
            check_taps(taps, rows, cols)
        if not isinstance(writable, bool):
            raise TypeError(f"writable must be a bool, not {type(writable).__name__}")
        if not writable and weights is None:
            raise ValueError("a read-only tile (writable=False) needs weights: its banks hold "
                             "only their initial contents")
        if not writable and grad_format is not None:
            raise ValueError("a read-only tile (writable=False) has no training operations: "
                             "grad_format must be None")
        CrossbarTile._check_device(device, device_seed, input_format, output_format,
                                   grad_format, side_ports, weights is not None or not writable,
                                   taps)
        CrossbarTile._pulses(device, weight_format, input_format, eta_shift, grad_format,
                             sgd_shift, update_formats)

    @staticmethod
    def _pulses(device, weight_format, input_format, eta_shift, grad_format, sgd_shift,
                update_formats):
        """UPDATE's :class:`~xbarode.hdl.pulses.PulseGeometry` (None without ``pulses``): the
        tile's ``s`` and ``x`` in ``input_format`` at ``eta_shift``, or a training tile's SGD
        step (``descent``) on ``update_formats`` at ``sgd_shift``."""
        if update_formats is not None:
            if grad_format is None or device is None or device.pulses is None:
                raise ValueError("update_formats are the formats of a training tile's pulsed "
                                 "SGD step: they need grad_format and a device with pulses")
            if not (isinstance(update_formats, tuple) and len(update_formats) == 2
                    and all(isinstance(f, Format) for f in update_formats)):
                raise TypeError("update_formats must be a tuple of two Formats (s, x)")
        if device is None or device.off or device.pulses is None:
            return None
        if grad_format is None:
            return pulse_geometry(device, weight_format, input_format, eta_shift)
        s_format, x_format = update_formats or (grad_format, input_format)
        return pulse_geometry(device, weight_format, s_format, sgd_shift, x_format=x_format,
                              descent=True)

    @staticmethod
    def _check_initial(weights, bias_words, bias, rows, cols, weight_format) -> None:
        """The checks of the initial ``weights`` and ``bias_words`` (:meth:`check_parameters`):
        integers of the right shape, words of ``weight_format``."""
        if bias_words is not None and not bias:
            raise ValueError("bias_words need bias=True: a tile without a bias has no bias "
                             "memory")
        for name, value, shape in (("weights", weights, (rows, cols)),
                                   ("bias_words", bias_words, (rows,))):
            if value is None:
                continue
            words = np.asarray(value)
            if words.shape != shape or not np.issubdtype(words.dtype, np.integer):
                raise ValueError(f"{name} must be integers of shape "
                                 f"({', '.join(map(str, shape))}{',' * (len(shape) == 1)}), "
                                 f"not {words.dtype} of shape {words.shape}")
            if words.size and (words.min() < weight_format.min_int
                               or words.max() > weight_format.max_int):
                raise ValueError(f"{name} must be words of {weight_format} "
                                 f"({weight_format.min_int}..{weight_format.max_int})")

    @staticmethod
    def _check_device(device, device_seed, input_format, output_format, grad_format,
                      side_ports, fixed_weights, taps=None):
        """The checks of ``device`` and ``device_seed`` (:meth:`check_parameters`)."""
        if device is not None and not isinstance(device, DeviceModel):
            raise TypeError(f"device must be a DeviceModel or None, not "
                            f"{type(device).__name__}")
        Lfsr(device_seed)   # a non-zero 32-bit integer, with the model's message
        if device is None or device.off:
            return
        if device.pulses is not None and fixed_weights:
            raise ValueError("the RTL tile's pulsed updates (pulses) write the weights: give "
                             "no initial weights, and a writable tile")
        if device.writes and fixed_weights:
            raise ValueError("the device's write models (states, program_noise) program the "
                             "words LOAD_W and UPDATE write: give no initial weights, and a "
                             "writable tile")
        if device.writes and taps is not None:
            raise ValueError("the device's write models (states, program_noise) need a dense "
                             "tile; a convolution tile's tied weights (taps) would drift apart")
        read_geometry(device, input_format, output_format, 0)
        if grad_format is not None:
            read_geometry(device, grad_format, grad_format, 0)

    def __init__(self, *, rows: int, cols: int, lanes: int, weight_format: Format,
                 input_format: Format, output_format: Format, acc_width: int = 48,
                 rounding: str = "nearest", eta_shift: int = 0, lfsr_seed: int = LFSR_SEED,
                 weights=None, shift: int = 0, bias: bool = False, bias_words=None,
                 side_ports: bool = False, grad_format: Format | None = None,
                 grad_shift: int = 0, sgd_shift: int = 0, taps=None, read_chain: bool = False,
                 writable: bool = True,
                 device: DeviceModel | None = None, device_seed: int = DEVICE_SEED,
                 update_formats=None):
        self._device = None if device is None or device.off else device
        self._device_seed = device_seed
        # As int64 arrays (their values checked in check_parameters).
        self._weights, self._taps, self._bias_words = (
            None if v is None else np.asarray(v).astype(np.int64)
            for v in (weights, taps, bias_words))
        operand = input_format if grad_format is None else \
            Format(max(input_format.width, grad_format.width), 0)
        self._writable = writable
        self._shift, self._bias, self._side = shift, bool(bias), bool(side_ports)
        self._read_chain = bool(read_chain)
        self._rows, self._cols, self._lanes = rows, cols, lanes
        self._wf, self._if, self._of = weight_format, input_format, output_format
        self._acc_width = acc_width
        self._rounding = rounding
        self._eta_shift = eta_shift
        self._lfsr_seed = lfsr_seed
        self._gf, self._grad_shift, self._sgd_shift = grad_format, grad_shift, sgd_shift
        self._reads = self._writes = self._grad_reads = None
        if self._device is not None:
            self._reads = read_geometry(self._device, input_format, output_format,
                                        self.forward_shift)
            if grad_format is not None:
                self._grad_reads = read_geometry(self._device, grad_format, grad_format,
                                                 self.grad_product_shift)
            if (self._device.states is not None or self._device.program_noise > 0) \
                    and writable:
                self._writes = write_geometry(self._device, weight_format)
        self._pulse_geometry = self._pulses(self._device, weight_format, input_format,
                                            eta_shift, grad_format, sgd_shift, update_formats)
        self._update_formats = None
        if self._pulse_geometry is not None and grad_format is not None:
            self._update_formats = update_formats or (grad_format, input_format)
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
    def writable(self) -> bool:
        """The weights can be written (LOAD_W, UPDATE); False for a read-only table tile."""
        return self._writable

    @property
    def device(self) -> DeviceModel | None:
        """The device's read models; None for the ideal tile (also when every model is off)."""
        return self._device

    @property
    def pulse_geometry(self):
        """UPDATE's pulsed update (:class:`~xbarode.hdl.pulses.PulseGeometry`); None for the
        digital step."""
        return self._pulse_geometry

    @staticmethod
    def pulse_cycles(rows: int, cols: int) -> int:
        """Cycles a pulsed UPDATE adds to the digital one's ``rows·C + 7``: the pulse trains'
        prologue, ``max(rows, cols) + 2`` (:class:`~xbarode.hdl.pulses.PulseTrains`)."""
        return max(rows, cols) + 2

    @property
    def device_seed(self) -> int:
        """Seed of the device generators."""
        return self._device_seed

    @property
    def read_shift(self) -> int:
        """Bits discarded by the forward and transposed rounding: :attr:`forward_shift`, plus
        the ADC's step with a device (its code is coarser than the output format)."""
        return self.forward_shift + (0 if self._reads is None else self._reads.adc_step)

    @property
    def grad_read_shift(self) -> int:
        """Bits discarded by the rounding of a product on gradients:
        :attr:`grad_product_shift`, plus the ADC's step on gradient words with a device."""
        step = 0 if self._grad_reads is None else self._grad_reads.adc_step
        return self.grad_product_shift + step

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
    def elaborate(self, platform):
        # The parts, in an order that matters where two of them drive one signal (the later
        # assignment wins): the walks' bank address before the tied walk's, the side ports'
        # and LOAD_X's writes and each group's own address steps before the state machine's.
        m = Module()
        mem = self._vector_memories(m)
        draws = _Draws(m, self)
        draws.noise = _ReadNoise(m, self)
        draws.program = _WriteModels(m, self)
        seq = TileSequencer(m, self, mem)
        if self._grad_reads is not None:
            m.d.comb += draws.noise.grad.eq(seq.is_grad)
        ctrl, st = seq.pipeline()
        draws.program.load(seq)
        draws.program.update(seq, st, self._lanes, seq.last_lanes)
        pulses = self._pulse_trains(m, seq, mem)
        groups = self._lane_groups(m, seq, mem, draws, ctrl, pulses)
        if self._gf is not None and self._bias:
            self._bias_gradient(m, seq, mem, groups, st)
        forward_drain, fwd = self._forward(m, seq, mem, draws, groups, st)
        self._transposed(m, seq, mem, draws, groups, ctrl, st)
        load_g = seq.read_controls(self._readout(m, mem, groups))
        self._vector_writes(m, seq, mem)
        seq.step_read_addresses(load_g)
        walker = None
        if self._taps is not None:
            walker = self._tap_walker(m, seq, draws, groups)
        seq.fsm(draws=draws, fwd=fwd, forward_drain=forward_drain, walker=walker,
                pulses=pulses)
        self._overflow(m, seq, groups)
        return m

    def _vector_memories(self, m):
        """The vector memories: x (``lanes`` banks), s (one), y (``lanes`` banks: the
        TRANSPOSED result, a chunk per address), the bias and its gradient (LUT RAM; the
        weights' and gradients' banks are the lane groups', the FORWARD result's memory the
        output stage's). Returns their ports."""
        lanes, chunks, rows = self._lanes, self.chunks, self._rows
        x_banks = [Memory(shape=signed(self._in_w), depth=chunks, init=[],
                          attrs=memory_attrs(chunks, self._in_w)) for _ in range(lanes)]
        y_banks = [Memory(shape=signed(self._out_w), depth=chunks, init=[],
                          attrs=memory_attrs(chunks, self._out_w)) for _ in range(lanes)]
        s_mem = Memory(shape=signed(self._in_w), depth=rows, init=[])
        for k, mem in enumerate(x_banks):
            m.submodules[f"x{k}"] = mem
        for k, mem in enumerate(y_banks):
            m.submodules[f"y{k}"] = mem
        m.submodules.s = s_mem
        ports = SimpleNamespace(
            x_rd=[mem.read_port() for mem in x_banks], x_wr=[mem.write_port() for mem in x_banks],
            y_rd=[mem.read_port() for mem in y_banks], y_wr=[mem.write_port() for mem in y_banks],
            s_rd=s_mem.read_port(), s_wr=s_mem.write_port(),
            b_rd=None, b_wr=None, gd_rd=None, gd_wr=None)
        if self._bias:
            b_init = [] if self._bias_words is None else self._bias_words.tolist()
            b_mem = Memory(shape=signed(self._wf.width), depth=rows, init=b_init)
            m.submodules.bias = b_mem
            ports.b_rd, ports.b_wr = b_mem.read_port(domain="comb"), b_mem.write_port()
        if self._gf is not None and self._bias:
            # The bias's gradient accumulators, in LUT RAM (the weights' are in the lane groups).
            gd_mem = Memory(shape=signed(self._acc_width), depth=rows, init=[])
            m.submodules.gbias = gd_mem
            ports.gd_rd, ports.gd_wr = gd_mem.read_port(domain="comb"), gd_mem.write_port()
        return ports

    def _pulse_trains(self, m, seq, mem):
        """A pulsed UPDATE's pulse trains (:class:`~xbarode.hdl.pulses.PulseTrains`, the
        generators ``site_seed(device_seed, 3)`` for the rows and ``4`` for the columns): while
        it makes them it reads ``s`` and ``x`` (its addresses win over the walk's, which
        reads nothing then); the walk reads the trains at its row and chunk, beside ``s`` and
        ``x``. None without pulses."""
        if self._pulse_geometry is None:
            return None
        # A training tile's s and x: the words of its update formats (sign-extended in the
        # memories, which are as wide as the wider of the operand and gradient words).
        widths = {"width": self._in_w} if self._update_formats is None else {
            "width": self._update_formats[0].width, "x_width": self._update_formats[1].width}
        m.submodules.pulses = pulses = PulseTrains(
            rows=self._rows, cols=self._cols, lanes=self._lanes, **widths,
            pulses=self._pulse_geometry.pulses, row_seed=site_seed(self._device_seed, 3),
            col_seed=site_seed(self._device_seed, 4))
        m.d.comb += [pulses.s.eq(mem.s_rd.data), pulses.row.eq(seq.row),
                     pulses.chunk.eq(seq.chunk)]
        m.d.comb += [pulses.x[k].eq(mem.x_rd[k].data) for k in range(self._lanes)]
        with m.If(pulses.busy):
            m.d.comb += [mem.s_rd.addr.eq(pulses.s_addr),
                         *(port.addr.eq(pulses.x_addr) for port in mem.x_rd)]
        return pulses

    def _lane_groups(self, m, seq, mem, draws, ctrl, pulses=None):
        """The lanes, a LaneGroup per group of GROUP lanes: its banks, multipliers, lane
        accumulators and weight updates, each group with its own registered copy of the
        controls ``ctrl`` (its fan-out bound)."""
        rows, lanes, chunks, wf = self._rows, self._lanes, self.chunks, self._wf
        train = self._gf is not None
        w_depth = rows * chunks
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
            padded[:, :self._cols] = self._weights
            # Bank p, address i·C + c holds W[i, c·lanes + p].
            w_init = [padded[:, p::lanes].ravel().tolist() for p in range(lanes)]
        # Each sum is exact in the bits its own terms need (at most acc_width, checked in
        # __init__): no wider registers and carry chains than the sum can use.
        lane_shape = signed(accumulator_bits(wf, Format(self._in_w, 0), rows))
        groups = []
        for g in range(seq.n_groups):
            first = g * GROUP
            size = min(lanes, first + GROUP) - first
            m.submodules[f"lanes{g}"] = group = LaneGroup(
                first=first, count=size, lanes=lanes, depth=w_depth, weight_width=wf.width,
                operand_width=self._in_w, lane_width=lane_shape.width,
                shift=self.forward_shift, width=self._of.width, out_width=self._out_w,
                grad=(self.grad_product_shift, self._gf.width) if train else None,
                update_shift=self.update_shift, acc_width=self._acc_width if train else None,
                apply_shift=self.apply_shift, rounding=self._rounding, draw_bits=draws.bits,
                one_chunk=chunks == 1, tied=self._taps is not None,
                init=w_init[first:first + size], block_ram=block_ram,
                writable=self._writable, pulses=self._pulse_geometry,
                **draws.noise.lane_arguments, **draws.program.lane_arguments)
            groups.append(group)
            m.d.comb += [group.ctrl.eq(ctrl), group.addr.eq(seq.bank_addr[g]),
                         group.en.eq(seq.bank_en[g]), group.s.eq(mem.s_rd.data),
                         group.clear.eq(self.clear)]
            if self._writable:
                m.d.comb += [group.load_valid.eq(seq.lw_valid[g]),
                             group.load_lane.eq(seq.lw_lane[g]),
                             group.load_addr.eq(seq.lw_addr[g]),
                             group.load_word.eq(seq.lw_word[g])]
            m.d.comb += [group.x[j].eq(mem.x_rd[first + j].data) for j in range(size)]
            if draws.bits:
                m.d.comb += [group.draw[j].eq(draws.draws[first + j]) for j in range(size)]
            if draws.noise.width:
                m.d.comb += [group.noise[j].eq(draws.noise.values[first + j])
                             for j in range(size)]
            draws.program.connect(group, g)
            if pulses is not None:
                m.d.comb += group.row_fires.eq(pulses.row_fires)
                m.d.comb += [group.col_fires[j].eq(pulses.col_fires[first + j])
                             for j in range(size)]
        return groups

    def _bias_gradient(self, m, seq, mem, groups, st):
        """ACCUMULATE's bias gradient: s_i added once per row (at its first chunk); lane 0's
        multiplier operand a is s_i in ACCUMULATE."""
        s_s4 = stage(m, *stage(m, groups[0].a_first, name="sacc3"), name="sacc")[0]
        acc_row = Signal(range(max(self._rows, 2)))
        gd_rd, gd_wr = mem.gd_rd, mem.gd_wr
        with m.If(seq.is_acc & st.s4 & st.s4_first):
            m.d.comb += [gd_rd.addr.eq(acc_row), gd_wr.addr.eq(acc_row),
                         gd_wr.data.eq(gd_rd.data + s_s4), gd_wr.en.eq(1)]
        with m.If(seq.is_acc & st.s4 & st.s4_last):
            m.d.sync += acc_row.eq(acc_row + 1)
        with m.If(self.start & ~self.busy):
            m.d.sync += acc_row.eq(0)

    def _forward(self, m, seq, mem, draws, groups, st):
        """Forward: pipelined adder tree, then the row accumulator; the row's one rounding
        happens the cycle after its last chunk. The tree's T register stages hold two levels
        each. A one-chunk tile without bias has nothing to accumulate: its row accumulator's
        register becomes one more tree stage instead (same latency), so the top levels — whose
        operands come from lanes spread over the device — get a stage each. Returns the cycles
        from a forward issue to its result's write, and the output stage."""
        train, wf = self._gf is not None, self._wf
        prods = [p for group in groups for p in group.product]
        fused = self.chunks == 1 and not self._bias
        m.submodules.tree = tree = AdderTree(width=len(prods[0]), count=self._lanes,
                                             stages=self.tree_stages + int(fused))
        m.d.comb += [term.eq(prod) for term, prod in zip(tree.terms, prods, strict=True)]
        # The chunk's metadata moves along with it; a fused tree's last stage is the row
        # accumulator's, whose metadata is fwd_pending.
        valid_t, first_t, last_t = st.s4, st.s4_first, st.s4_last
        for depth in range(tree.latency - int(fused)):
            valid_t, first_t, last_t = stage(m, valid_t, first_t, last_t, name=f"tmeta{depth}")
        # The rows' sums, bias, rounding and memory (the side port's stream is its output).
        row_shape = signed(accumulator_bits(wf, Format(self._in_w, 0), self._cols,
                                            extra=int(self._bias)))
        m.submodules.fwd = fwd = ForwardOutput(
            rows=self._rows, sum_width=len(tree.total), acc_width=row_shape.width,
            shift=self.forward_shift, width=self._of.width, out_width=self._out_w,
            rounding=self._rounding, draw_bits=draws.bits,
            grad=(self.grad_product_shift, self._gf.width) if train else None,
            bias=(wf.width, self._if.frac) if self._bias else None, accumulate=not fused,
            **draws.noise.output_arguments)
        m.d.comb += [fwd.total.eq(tree.total), fwd.valid.eq(valid_t), fwd.first.eq(first_t),
                     fwd.last.eq(last_t), fwd.forward.eq(seq.is_fwd),
                     fwd.restart.eq(self.start & ~self.busy)]
        if train:
            m.d.comb += fwd.grad.eq(seq.is_grad)
        if draws.bits:
            m.d.comb += fwd.draw.eq(draws.draws[0])
        if draws.noise.width:
            m.d.comb += fwd.noise.eq(draws.noise.values[0])
        if self._bias:
            m.d.comb += [mem.b_rd.addr.eq(fwd.bias_row), fwd.bias.eq(mem.b_rd.data)]
        with m.If(fwd.rounds):
            draws.advance_product(1, seq.is_grad)
        # The read noise runs two cycles ahead: a row's last chunk at stage 3 is rounded
        # (fwd.rounds) L + 2 cycles later, L the tree's stages before the row accumulator.
        if draws.noise.width:
            ahead = seq.is_fwd & st.s3 & st.s3_last
            for depth in range(tree.latency - int(fused)):
                ahead = stage(m, ahead, name=f"noise_ahead{depth}")[0]
            with m.If(ahead):
                draws.noise.advance(1)
        if self._side:
            wiring.connect(m, fwd.y, wiring.flipped(self.y_out))
        with m.If(fwd.overflow):
            m.d.comb += seq.overflow_set.eq(1)
        return tree.latency + int(not fused) + 5, fwd

    def _transposed(self, m, seq, mem, draws, groups, ctrl, st):
        """Transposed: the lanes accumulate over the rows; the chunk's roundings happen the
        cycle after its last row (tr_pending), and the rounded words are written the cycle
        after that, at chunk tr_chunk of the y banks. Update and APPLY: the lanes round the
        step (drawing in row-major order), add the old weight, saturate and write back."""
        lanes, last_lanes = self._lanes, seq.last_lanes
        tr_chunk = seq.tr_chunk
        tr_pending = Signal()
        tr_nlanes = Signal(range(lanes + 1))
        m.d.sync += tr_pending.eq(seq.is_tr & st.s4 & st.s4_last)
        m.d.comb += ctrl.tr_write.eq(tr_pending)
        with m.If(seq.is_tr & st.s4):
            m.d.sync += tr_nlanes.eq(st.s4_nlanes)
        with m.If(tr_pending):
            with m.If(tr_nlanes == lanes):
                draws.advance_product(lanes, seq.is_grad)
            with m.Else():
                draws.advance_product(last_lanes, seq.is_grad)
        # The read noise runs two cycles ahead: a chunk's last row at stage 3 is rounded
        # (tr_pending) two cycles later.
        if draws.noise.width:
            with m.If(seq.is_tr & st.s3 & st.s3_last):
                with m.If(st.s3_nlanes == lanes):
                    draws.noise.advance(lanes)
                with m.Else():
                    draws.noise.advance(last_lanes)
        with m.If(own_copy(m, tr_pending, "tr_written")):   # = each group's tr_write
            m.d.sync += tr_chunk.eq(tr_chunk + 1)
        for group in groups:
            for j in range(group.count):
                port = mem.y_wr[group.first + j]
                with m.If(group.y_write[j]):
                    m.d.comb += [port.addr.eq(tr_chunk), port.data.eq(group.y_word[j]),
                                 port.en.eq(1)]

        def update_draws(shift):
            with m.If(st.s4_nlanes == lanes):
                draws.advance(lanes, shift)
            with m.Else():
                draws.advance(last_lanes, shift)

        if self._pulse_geometry is None:   # a pulsed update rounds nothing
            with m.If(seq.is_upd & st.s4):
                update_draws(self.update_shift)
        if self._gf is not None and self._pulse_geometry is None:   # pulses: G is not applied
            with m.If(seq.is_apply & st.s4):
                update_draws(self.apply_shift)

    def _readout(self, m, mem, groups):
        """READ_*'s output (:mod:`xbarode.hdl.readout`), its words wired: a multiplexer
        indexed by the lane, one word per cycle; or (``read_chain``) a chain of registers, one
        per lane, loaded with a whole chunk from the lanes' banks and shifted towards lane 0
        one word per handshake, so each lane's word travels to its neighbour only (the 64-way
        multiplexer pulled every lane's bank outputs to one place, the 64-lane tile's most
        congested spot). The chain loads W and G from their registered copies at stage 2
        (``w_q``, ``g_q``: no block RAM's clock-to-output in front of its multiplexer). The
        sequencer drives its controls (:meth:`TileSequencer.read_controls
        <xbarode.hdl.tile_sequencer.TileSequencer.read_controls>`)."""
        train, lanes = self._gf is not None, self._lanes
        readout_class = ChainReadout if self._read_chain else MuxReadout
        m.submodules.readout = readout = readout_class(
            lanes=lanes, width=len(self.o.payload), w_width=self._wf.width,
            y_width=self._out_w, g_width=self._acc_width if train else None)
        w_name, g_name = ("w_q", "g_q") if self._read_chain else ("w_data", "g_data")
        w_words = [word for group in groups for word in getattr(group, w_name)]
        m.d.comb += [readout.w[k].eq(w_words[k]) for k in range(lanes)]
        if train:
            g_words = [word for group in groups for word in getattr(group, g_name)]
            m.d.comb += [readout.g[k].eq(g_words[k]) for k in range(lanes)]
        m.d.comb += [readout.y[k].eq(mem.y_rd[k].data) for k in range(lanes)]
        return readout

    def _vector_writes(self, m, seq, mem):
        """The side ports (a core's direct access) into s, x and out of y; LOAD_X's words
        (``load_word``), a cycle late. The FSM's own accesses (later) take precedence."""
        x_wr = mem.x_wr
        if self._side:
            with m.If(self.s_in.valid):
                m.d.comb += [mem.s_wr.addr.eq(seq.s_count), mem.s_wr.data.eq(self.s_in.payload),
                             mem.s_wr.en.eq(1)]
                m.d.sync += seq.s_count.eq(seq.s_count + 1)
            with m.If(self.s_restart):
                m.d.sync += seq.s_count.eq(0)
            for k in range(self._lanes):
                with m.If(self.x_side_en[k]):
                    m.d.comb += [x_wr[k].addr.eq(self.x_side_addr),
                                 x_wr[k].data.eq(self.x_side_data[k]), x_wr[k].en.eq(1)]
                m.d.comb += self.y_side_data[k].eq(mem.y_rd[k].data)
        for k in range(self._lanes):
            g = k // GROUP
            with m.If(seq.lx_valid[g] & (seq.lw_lane[g] == k % GROUP)):
                m.d.comb += [x_wr[k].addr.eq(seq.lw_addr[g]), x_wr[k].data.eq(seq.lw_word[g]),
                             x_wr[k].en.eq(1)]

    def _tap_walker(self, m, seq, draws, groups):
        """The tied SGD step of a convolution tile (``taps``, :class:`TapWalker
        <xbarode.hdl.tap_walker.TapWalker>`), joined to the lane groups' banks: it reads them
        (every group at its address, in place of the walks' address), writes the taps' new
        values and clears G through the groups' ``tap_*`` and ``zero*`` ports."""
        m.submodules.tap_walker = walker = TapWalker(
            taps=self._taps, rows=self._rows, cols=self._cols, lanes=self._lanes,
            weight_width=self._wf.width, acc_width=self._acc_width, shift=self.apply_shift,
            rounding=self._rounding, draw_bits=draws.bits)
        w_q = [q for group in groups for q in group.w_q]
        g_q = [q for group in groups for q in group.g_q]
        m.d.comb += [walker.w[k].eq(w_q[k]) for k in range(self._lanes)]
        m.d.comb += [walker.g[k].eq(g_q[k]) for k in range(self._lanes)]
        if draws.bits:
            m.d.comb += walker.draw.eq(draws.draws[0])
        with m.If(walker.advance):
            draws.advance(1)
        with m.If(walker.overflow):
            m.d.comb += seq.overflow_set.eq(1)
        with m.If(walker.read):
            m.d.comb += [addr.eq(walker.addr) for addr in seq.bank_addr]
            m.d.comb += [en.eq(1) for en in seq.bank_en]
        for group in groups:
            m.d.comb += [group.tap_we.eq(walker.write[group.first:group.first + group.count]),
                         group.tap_addr.eq(walker.addr), group.tap_word.eq(walker.word),
                         group.zero.eq(walker.zero), group.zero_addr.eq(walker.zero_addr)]
        return walker

    def _overflow(self, m, seq, groups):
        """The overflow flag: a sticky register for the FSM's side (``overflow_set``: the
        forward rounding, the bias's and the taps' steps) and one per group of lanes (in its
        LaneGroup: the lanes' saturations, registered per lane, ORed within the group); the
        output is their OR, so no OR over every lane's register lies between registers (one
        across the device was the 64-lane tile's critical path)."""
        ovf_fsm, ovf_fsm_set = Signal(name="ovf_fsm"), Signal(name="ovf_fsm_set")
        m.d.comb += ovf_fsm_set.eq(Cat(seq.overflow_set).any())
        with m.If(self.clear):
            m.d.sync += ovf_fsm.eq(0)
        with m.Elif(ovf_fsm_set):
            m.d.sync += ovf_fsm.eq(1)
        sticky = [ovf_fsm, *(group.overflow for group in groups)]
        setting = [ovf_fsm_set, *(group.saturating for group in groups)]
        # The output also shows what sets the registers at the coming edge: an operation's
        # last narrowing saturates in its done cycle, and the flag is high in that cycle (the
        # registers alone would show it one cycle after done). Only the output port sees
        # these terms, no register between them. A clear in the same cycle wins over them, as
        # it does over the registers (interface rule 6: holding clear keeps the flag low).
        m.d.comb += self.overflow.eq(Cat(*sticky).any() | (Cat(*setting).any() & ~self.clear))


class _Draws:
    """The tile's stochastic-rounding draws: an :class:`~xbarode.hdl.rounding.LfsrBank`
    offering up to ``lanes`` draws per cycle (none where the rounding is not stochastic or no
    narrowing discards bits), and what each cycle consumes of them.

    Attributes
    ----------
    draws : list of Value or None
        The draws of this cycle, ``draws[k]`` for the ``k``-th narrowing.
    bits : int
        Width of each draw; 0 without draws.
    """

    def __init__(self, m, tile):
        self.m, self._rounding = m, tile.rounding
        self._train = tile.grad_format is not None
        self._forward_shift, self._grad_shift = tile.read_shift, tile.grad_read_shift
        digital_update = tile.writable and tile.pulse_geometry is None
        all_shifts = [tile.read_shift] + ([tile.update_shift] if digital_update else [])
        if self._train:
            all_shifts += [tile.grad_read_shift, tile.apply_shift]
            if tile.bias:
                all_shifts.append(tile.bias_apply_shift)
        shifts = [s for s in all_shifts if s > 0]
        self.draws, self._lfsr = None, None
        if tile.rounding == "stochastic" and shifts:
            if max(shifts) > 32:
                raise ValueError("stochastic rounding draws 32 bits; cannot discard "
                                 f"{max(shifts)} bits")
            last_lanes = tile.cols - (tile.chunks - 1) * tile.lanes
            # Registered draws: the lanes and the rows' rounding, spread over the device, each
            # read a register rather than the state's XOR matrices.
            m.submodules.lfsr = self._lfsr = LfsrBank(
                draws=tile.lanes, bits=max(shifts), steps={1, tile.lanes, last_lanes},
                seed=tile.lfsr_seed, registered=True)
            self.draws = self._lfsr.draw
        self.bits = 0 if self.draws is None else len(self.draws[0])

    def advance(self, count, shift=1):
        """Consume ``count`` draws this cycle (a Python int in the LFSR's steps) if the
        narrowing discards bits (``shift > 0``): the model draws only then."""
        if self.draws is not None and shift > 0:
            lfsr = self._lfsr
            self.m.d.comb += lfsr.advance.eq(lfsr.steps.index(count) + 1)

    def advance_product(self, count, is_grad):
        """Draws of a product's narrowing: inference or gradient shift, by the mode
        (``is_grad``)."""
        m = self.m
        if self._forward_shift > 0 and (not self._train or self._grad_shift > 0):
            self.advance(count)
        elif self._forward_shift > 0:
            with m.If(~is_grad):
                self.advance(count)
        elif self._train and self._grad_shift > 0:
            with m.If(is_grad):
                self.advance(count)

    def offset(self, k, shift):
        """The rounding offset of the ``k``-th narrowing of this cycle."""
        return rounding_offset(self._rounding, shift, None if self.draws is None
                               else self.draws[k])


class _ReadNoise:
    """The device's read noise (:func:`~xbarode.hdl.device.read_noise`): an
    :class:`~xbarode.hdl.rounding.LfsrBank` seeded ``site_seed(device_seed, 0)`` offering the
    noise of up to ``lanes`` output words per cycle (the words a cycle rounds, in their
    order), and the read models' arguments of the lane groups and the forward output stage.
    Without a device (or without read noise) it builds nothing.

    The bank runs two cycles ahead of the roundings (the tile advances it by the words
    rounded two cycles later, known from the pipeline's metadata) and the noise goes through
    two registers: ``G`` (XOR matrix, byte sum; :func:`~xbarode.hdl.device.gauss`), then its
    product with the amplitude (:func:`~xbarode.hdl.device.scale_noise`). A rounding's noise
    is a register, so its path holds the noise's addition and the narrowing's short carry
    chain only. A training tile's products on gradients (``*_G``) read through the gradient
    format's geometry: the second register takes the product of ``G`` with that geometry's
    scale where ``grad`` (the running operation's, which the tile drives) is high, so one
    generator draws for every product, in the order the products run, as the model's one
    generator does.

    Attributes
    ----------
    values : list of Value
        The noise of this cycle's ``k``-th rounded word (with read noise), registered.
    width : int
        Width of each noise value; 0 without read noise.
    lane_arguments, output_arguments : dict
        The device's arguments of :class:`~xbarode.hdl.lane_group.LaneGroup` and
        :class:`~xbarode.hdl.output_stage.ForwardOutput` (empty without a device).
    grad : Signal(1)
        (training tiles) The running product is on gradients: the tile drives it.
    """

    def __init__(self, m, tile):
        self.m, self.values, self.width, self._lfsr = m, [], 0, None
        self.lane_arguments, self.output_arguments = {}, {}
        self.grad = Signal(name="noise_grad")
        reads, grad_reads = tile._reads, tile._grad_reads
        if reads is None:
            return
        if reads.noise is not None:
            last_lanes = tile.cols - (tile.chunks - 1) * tile.lanes
            m.submodules.read_noise = self._lfsr = LfsrBank(
                draws=tile.lanes, bits=32, steps={1, tile.lanes, last_lanes},
                seed=site_seed(tile.device_seed, 0))
            self.values = []
            for k, draw in enumerate(self._lfsr.draw):
                g = Signal(signed(11), name=f"gauss{k}")
                m.d.sync += g.eq(gauss(m, draw))
                value = scale_noise(m, g, *reads.noise)
                if grad_reads is not None:
                    value_g = scale_noise(m, g, *grad_reads.noise)
                    both = Signal(signed(max(len(value), len(value_g))), name=f"noise_sel{k}")
                    m.d.comb += both.eq(Mux(self.grad, value_g, value))
                    value = both
                reg = Signal.like(value, name=f"noise{k}")
                m.d.sync += reg.eq(value)
                self.values.append(reg)
            self.width = len(self.values[0])
        self.lane_arguments = {"dac": reads.dac, "adc": reads.adc, "noise_width": self.width}
        self.output_arguments = {"adc": reads.adc, "noise_width": self.width}
        if grad_reads is not None:
            self.lane_arguments |= {"grad_dac": grad_reads.dac, "grad_adc": grad_reads.adc}
            self.output_arguments["grad_adc"] = grad_reads.adc

    def advance(self, count):
        """Consume ``count`` draws this cycle (a Python int in the bank's steps): the noise of
        the ``count`` words rounded two cycles later."""
        if self._lfsr is not None:
            self.m.d.comb += self._lfsr.advance.eq(self._lfsr.steps.index(count) + 1)


class _WriteModels:
    """The device's write models (:func:`~xbarode.hdl.device.program_word`): LOAD_W's words and
    UPDATE's (and APPLY's) new weights snapped to a state and given the programming noise as
    they are written, one draw per weight in row-major order from the generators the model uses
    (``site_seed(device_seed, 1)`` for the noise, ``site_seed(device_seed, 2)`` for the
    states' stochastic rounding), as two :class:`~xbarode.hdl.rounding.LfsrBank` offering
    ``lanes`` draws per cycle. Without write models it builds nothing.

    No XOR matrix or product lies in a write's path:

    - LOAD_W consumes one draw per word taken (the handshake). The word is snapped to a state
      there, from the draw of that cycle, into a register per group (``loaded``); the next
      cycle, when the group writes it, its noise is added before the clip: the noise of that
      draw, registered (``load_noise``) from the draw itself registered the cycle before
      (``load_draw``, the first draw of the state the bank takes at the edge).
    - UPDATE and APPLY consume a chunk's draws two cycles before it writes the chunk's weights (the
      pipeline's metadata says what is written two cycles later), so that ``noise_q`` and the
      twice-registered states' draws are the chunk's when its lanes write (in the lanes,
      ``LaneGroup(states=, program_noise_width=)``).

    Attributes
    ----------
    lane_arguments : dict
        The write models' arguments of :class:`~xbarode.hdl.lane_group.LaneGroup`.
    """

    def __init__(self, m, tile):
        self.m, self.lane_arguments, self._tile = m, {}, tile
        self._noise = self._states = None
        self._updates = tile.pulse_geometry is None   # UPDATE writes through the models
        writes = tile._writes
        if writes is None:
            return
        last_lanes = tile.cols - (tile.chunks - 1) * tile.lanes
        steps = {1, tile.lanes, last_lanes}
        self.noise_q, self.state_draws, self.load_noise = [], [], None
        if writes.noise is not None:
            m.submodules.program_noise = self._noise = LfsrBank(
                draws=tile.lanes, bits=32, steps=steps, seed=site_seed(tile.device_seed, 1))
            bank = self._noise
            load_draw = Signal(32, name="load_draw")
            m.d.sync += load_draw.eq(lfsr_successor(bank))
            value = scale_noise(m, gauss(m, load_draw), *writes.noise)
            self.load_noise = Signal.like(value, name="load_noise")
            m.d.sync += self.load_noise.eq(value)
            # UPDATE's noise per lane (a pulsed update programs nothing: the model's states
            # and noise apply at the load only).
            for k, draw in enumerate(self._noise.draw if self._updates else []):
                g = Signal(signed(11), name=f"pgauss{k}")
                m.d.sync += g.eq(gauss(m, draw))
                value = scale_noise(m, g, *writes.noise)
                reg = Signal.like(value, name=f"pnoise{k}")
                m.d.sync += reg.eq(value)
                self.noise_q.append(reg)
        if writes.states is not None and tile.rounding == "stochastic":
            m.submodules.state_rounding = self._states = LfsrBank(
                draws=tile.lanes, bits=writes.states[0], steps=steps,
                seed=site_seed(tile.device_seed, 2))
            for k, draw in enumerate(self._states.draw if self._updates else []):
                first, second = (Signal.like(draw, name=f"sdraw{n}_{k}") for n in (1, 2))
                m.d.sync += [first.eq(draw), second.eq(first)]
                self.state_draws.append(second)
        self.lane_arguments = {
            "states": writes.states if self._updates else None,
            "program_noise_width": len(self.noise_q[0]) if self.noise_q else 0}

    def advance(self, count):
        """Consume ``count`` draws of each generator this cycle (a Python int in the steps)."""
        for bank in (self._noise, self._states):
            if bank is not None:
                self.m.d.comb += bank.advance.eq(bank.steps.index(count) + 1)

    def connect(self, group, g):
        """Group ``g``'s draws and noise (for UPDATE) and its LOAD_W word (programmed)."""
        if self._tile._writes is None:
            return
        m, first = self.m, group.first
        if self.state_draws:
            m.d.comb += [group.state_draw[j].eq(self.state_draws[first + j])
                         for j in range(group.count)]
        if self.noise_q:
            m.d.comb += [group.program_noise[j].eq(self.noise_q[first + j])
                         for j in range(group.count)]
        m.d.comb += group.load_word.eq(self.loaded[g])

    def load(self, seq):
        """LOAD_W: each word taken is snapped to a state with the first draw, into a register
        per group; the next cycle its noise is added as the group writes it (the groups'
        ``load_word``); a clipped state or noisy word raises the flag."""
        if self._tile._writes is None:
            return
        m, tile, writes = self.m, self._tile, self._tile._writes
        ww = tile.weight_format.width
        word, saturated = tile.i.payload[:ww].as_signed(), 0
        if writes.states is not None:
            offset = rounding_offset(tile.rounding, writes.states[0],
                                     None if self._states is None else self._states.draw[0])
            word, saturated = program_word(m, word, ww, states=writes.states, offset=offset)
        stated = [Signal(signed(ww), name=f"lw_state{g}") for g in range(seq.n_groups)]
        m.d.sync += [reg.eq(word) for reg in stated]
        taken = tile.i.valid & tile.i.ready & (seq.op == TileOp.LOAD_W)
        with m.If(taken):
            self.advance(1)
            if writes.states is not None:
                with m.If(saturated):
                    m.d.comb += seq.overflow_set.eq(1)
        self.loaded = stated
        if self.load_noise is not None:
            self.loaded = []
            for g, reg in enumerate(stated):
                noisy, clipped = program_word(m, reg, ww, noise=self.load_noise)
                self.loaded.append(noisy)
                with m.If(seq.lw_valid[g] & clipped):
                    m.d.comb += seq.overflow_set.eq(1)

    def update(self, seq, st, lanes, last_lanes):
        """UPDATE: a chunk's weights are written (the groups' U2) two cycles after its
        products are at stage 3; that cycle consumes its lanes' draws."""
        if self._tile._writes is None or not self._updates:
            return
        m = self.m
        writes = seq.is_upd | seq.is_apply if self._tile.grad_format is not None else seq.is_upd
        with m.If(writes & st.s3):
            with m.If(st.s3_nlanes == lanes):
                self.advance(lanes)
            with m.Else():
                self.advance(last_lanes)
