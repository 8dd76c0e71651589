"""A group of the crossbar tile's lanes: weight (and gradient) banks, multipliers, lane
accumulators, update narrowing and bank writes, for up to :data:`~xbarode.hdl.groups.GROUP`
lanes, with its own registered copy of the controls the tile's sequencer drives.

The tile (:class:`~xbarode.hdl.tile.CrossbarTile`) builds one :class:`LaneGroup` per group of
lanes: the one-copy-per-group rule of :mod:`xbarode.hdl.groups` (no control net fans out to
more than a group's registers) is the structure, each group registering the
:func:`lane_control` struct for itself.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from xbarode.model.fixed import ROUNDINGS

from .checked import CheckedComponent
from .device import dac, program_word
from .dsp import Multiplier
from .groups import GROUP, KEEP
from .output_stage import narrow_product, read_product
from .pulses import PulseGeometry, popcount
from .rounding import narrow, rounding_offset

__all__ = ["LaneGroup", "lane_control"]


def lane_control(lanes: int, depth: int) -> data.StructLayout:
    """Layout of the controls a :class:`LaneGroup` registers for itself, one copy per group,
    as the tile's sequencer drives them (each field a cycle before the group acts on it).

    Fields: ``nlanes`` (lanes the chunk issued now uses), ``waddr`` (stage 3's bank address),
    ``times_s`` (the multipliers' ``a`` is ``s``: UPDATE, ACCUMULATE), ``s_right`` (their
    ``b`` is ``s``: TRANSPOSED*), ``tr_acc`` (stage 3 holds a transposed row), ``tr_first``
    (its first row), ``tr_clear`` (stage 4 holds a transposed product's last row),
    ``tr_write`` (the lane accumulators hold a finished chunk), ``u_write`` (stage 4 holds an
    UPDATE or APPLY), ``grad`` (the products are on gradients), ``g_write`` (stage 3 holds an
    ACCUMULATE or APPLY), ``g_keep`` (ACCUMULATE) and ``apply`` (APPLY).
    """
    return data.StructLayout({
        "nlanes": range(lanes + 1), "waddr": range(max(depth, 2)),
        "times_s": 1, "s_right": 1, "tr_acc": 1, "tr_first": 1, "tr_clear": 1, "tr_write": 1,
        "u_write": 1, "grad": 1, "g_write": 1, "g_keep": 1, "apply": 1,
    })


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, not {value}")


class LaneGroup(CheckedComponent):
    """Lanes ``first … first + count - 1`` of a tile of ``lanes`` lanes.

    Each lane has a weight bank (and, with ``acc_width``, a gradient bank) of ``depth`` words
    and a :class:`~xbarode.hdl.dsp.Multiplier`; per lane, a transposed product's accumulator
    and its narrowing, and UPDATE's (or APPLY's) step, sum and write-back.

    Parameters
    ----------
    first : int
        Index of the group's first lane in the tile, ``>= 0`` (lane ``first + j`` is used by a
        chunk of ``nlanes`` lanes where ``first + j < nlanes``).
    count : int
        Lanes in the group, ``1 … GROUP``.
    lanes : int
        Lanes of the tile, ``>= first + count``.
    depth : int
        Words per bank (``rows·C``), ``>= 1``.
    weight_width, operand_width : int
        Width of a weight, and of the other operand (``x`` or ``s``).
    lane_width : int
        Width of a lane accumulator (the exact sum of ``rows`` products).
    shift, width, out_width : int
        Bits a transposed sum's narrowing discards, the rounded word's width, and the width
        of the words written (the wider of ``width`` and the gradient width).
    grad : tuple of int, optional
        ``(shift, width)`` of a transposed sum's narrowing on gradients (where ``grad`` is
        high); None for a tile without gradients.
    update_shift : int
        Bits UPDATE's narrowing of ``s_i x_j`` discards.
    acc_width : int, optional
        Width of the gradient accumulators (gradient banks, ACCUMULATE, APPLY); None for none.
    apply_shift : int
        Bits APPLY's narrowing of ``-G`` discards (with ``acc_width``).
    rounding : {"floor", "nearest", "stochastic"}
        Rounding of every narrowing.
    draw_bits : int
        Width of each lane's LFSR word (stochastic rounding); 0 for none.
    one_chunk : bool
        Rows are one chunk: the lane accumulators are cleared as their sums are rounded (so
        each cycle only adds) instead of loaded by a chunk's first row.
    tied : bool
        Ports for the tied-kernel walk (``tap_*``, ``zero*``).
    init : list of list of int, optional
        Initial words of each lane's weight bank; empty banks otherwise.
    writable : bool
        With False, the weight banks have no write port (a read-only table: they hold
        ``init`` and nothing else): no ``load_*`` ports and no UPDATE; no gradient banks
        (``acc_width`` must be None).
    block_ram : bool
        The weight and gradient banks go to block RAM (``ram_style``), with ``no_rw_check``:
        no enabled read ever meets a write to its address (the tile's walks see to it).
    dac : tuple of int, optional
        ``(drop, bits)`` of a device's input DAC (:class:`~xbarode.hdl.device.ReadGeometry`):
        the operand of a FORWARD or TRANSPOSED product (``x`` or ``s``, not UPDATE's) keeps its
        top ``bits`` bits (:func:`~xbarode.hdl.device.dac`); a clipped code raises
        ``overflow``. ACCUMULATE, like UPDATE, takes its operands as they are.
    adc : tuple of int, optional
        ``(step, code_bits)`` of a device's ADC: a transposed sum's rounding discards ``shift +
        step`` bits into ``code_bits`` signed bits, the word is the code times ``2^step``
        (:func:`~xbarode.hdl.device.adc_narrow`).
    grad_dac, grad_adc : tuple of int, optional
        The same for the products on gradients (where ``grad`` is high; with ``grad``): the
        device's read geometry for the gradient format.
    noise_width : int
        Width of ``noise``, each lane's read noise added to its transposed sum before the
        rounding (the running product's: the tile scales it for the gradient format on
        gradients); 0 for none.
    states : tuple of int, optional
        ``(drop, bits)`` of a device's conductance states
        (:class:`~xbarode.hdl.device.WriteGeometry`): UPDATE's (and APPLY's) new weight is
        snapped to a state (:func:`~xbarode.hdl.device.program_word`, rounded with
        ``rounding``, the stochastic offsets from ``state_draw``) before it is written. Not
        with ``tied``.
    program_noise_width : int
        Width of ``program_noise``, each lane's programming noise added to UPDATE's (and
        APPLY's) new weight (after the state) before it is written; 0 for none. Not with
        ``tied``.
    pulses : PulseGeometry, optional
        UPDATE is a pulsed update (:class:`~xbarode.hdl.pulses.PulseGeometry`): each lane
        counts the coincidences ``c = popcount(row_fires & col_fires[j])`` (stage 3), takes
        the step of one coincidence in the direction ``sign(s)·sign(x)`` (``−sign(s)·sign(x)``
        with the geometry's ``descent``) at its old weight
        (a constant with hard bounds, ``c·step`` at stage 4; with soft bounds the
        asymmetry's factor times the weight's distance to the bound at stage 4, times ``c``
        at stage 5), and writes ``sat(w ± c·step)`` (stage 6, as the digital step's sum; a
        saturation raises ``overflow``). No narrowing of ``s·x``, no write models. Not with
        ``tied``, ``states`` or ``program_noise_width``. With ``acc_width`` (a training
        tile's) APPLY writes no weight (it clears ``G``): UPDATE is the weights' step.

    Attributes
    ----------
    ctrl : In(lane_control(lanes, depth))
        The sequencer's controls, registered here (one copy per group, ``keep``).
    addr, en : In
        The weight and gradient banks' read address and enable (data a cycle later).
    load_valid, load_lane, load_addr, load_word : In
        (``writable``) LOAD_W: write ``load_word`` at ``load_addr`` of lane
        ``first + load_lane`` now.
    x : In(signed(operand_width)).array(count)
        Each lane's word of ``x`` (read a cycle before the banks' data is registered).
    s : In(signed(operand_width))
        The word of ``s`` every lane shares, registered here once for the group.
    draw : In(unsigned(draw_bits)).array(count)
        (with ``draw_bits``) Each lane's LFSR word.
    noise : In(signed(noise_width)).array(count)
        (with ``noise_width``) Each lane's read noise for the chunk rounded in this cycle.
    state_draw : In(unsigned(drop)).array(count)
        (with ``states`` and stochastic rounding) Each lane's draw for the state's rounding of
        the weight it writes in this cycle.
    program_noise : In(signed(program_noise_width)).array(count)
        (with ``program_noise_width``) Each lane's programming noise for the weight it writes
        in this cycle.
    row_fires : In(unsigned(BL))
        (with ``pulses``) The row's pulse train, with ``s`` (stage 1), registered here once.
    col_fires : In(unsigned(BL)).array(count)
        (with ``pulses``) Each lane's column pulse train, with ``x`` (stage 1).
    clear : In(1)
        Lowers ``overflow``.
    tap_we, tap_addr, tap_word, zero, zero_addr : In
        (``tied``) Write ``tap_word`` at ``tap_addr`` into the weight banks of ``tap_we``; write
        0 at ``zero_addr`` into every gradient bank where ``zero``.
    product : Out(signed(max(weight_width, operand_width) + operand_width)).array(count)
        Each lane's product (stage 4).
    a_first : Out(signed(max(weight_width, operand_width)))
        The first lane's multiplier operand ``a`` (stage 2; ``s`` where ``times_s``).
    w_data, w_q : Out(signed(weight_width)).array(count)
        The weight banks' read data, and that data registered (stage 2).
    g_data, g_q : Out(signed(acc_width)).array(count)
        (``acc_width``) The same of the gradient banks.
    y_word : Out(signed(out_width)).array(count), y_write : Out(count)
        A transposed chunk's rounded words, and which lanes write theirs in this cycle.
    overflow : Out(1)
        Sticky: a lane's narrowing or weight sum saturated since ``clear``.
    saturating : Out(1)
        ``overflow`` is set at the coming clock edge.

    Notes
    -----
    Latency, from ``addr``/``en`` (stage 0): bank data at stage 1, registered at stage 2 (the
    shared ``s`` too), multiplier operands at stage 3, products at stage 4. ACCUMULATE and APPLY
    write a gradient word at stage 5 (``ctrl`` a cycle ahead: ``g_write`` at stage 3); a
    transposed product adds into the lane accumulators at stage 5 (``tr_acc`` at stage 3),
    its chunk is rounded and registered a cycle after ``tr_write`` and written (``y_write``)
    then; UPDATE's and APPLY's step is registered at stage 5, the sum written to the weight
    bank at stage 6 (``u_write`` at stage 4), its saturation raising ``overflow`` a cycle
    later. Bank writes go through registers (address, data, enable), so a bank is written
    the cycle after its write is decided; LOAD_W's ``load_*`` (registered by the sequencer)
    go straight to the write ports.
    """

    @staticmethod
    def check_parameters(*, first: int, count: int, lanes: int, depth: int,
                         weight_width: int, operand_width: int, lane_width: int, shift: int,
                         width: int, out_width: int, update_shift: int, rounding: str,
                         grad=None, acc_width: int | None = None, apply_shift: int = 0,
                         draw_bits: int = 0, one_chunk: bool = False, tied: bool = False,
                         init=None, block_ram: bool = False, writable: bool = True, dac=None,
                         adc=None, grad_dac=None, grad_adc=None, noise_width: int = 0,
                         states=None, program_noise_width: int = 0, pulses=None) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        for name, value, low in (
                ("first", first, 0), ("count", count, 1), ("lanes", lanes, 1),
                ("depth", depth, 1), ("weight_width", weight_width, 1),
                ("operand_width", operand_width, 1), ("lane_width", lane_width, 1),
                ("shift", shift, -1 << 16), ("width", width, 1), ("out_width", out_width, 1),
                ("update_shift", update_shift, -1 << 16), ("apply_shift", apply_shift, -1 << 16),
                ("draw_bits", draw_bits, 0), ("noise_width", noise_width, 0),
                ("program_noise_width", program_noise_width, 0)):
            _check_int(name, value, low)
        if (states is not None or program_noise_width) and (tied or not writable):
            raise ValueError("the device's write models (states, program_noise_width) are "
                             "built for UPDATE and APPLY: not with tied, and not read-only")
        if pulses is not None and not isinstance(pulses, PulseGeometry):
            raise TypeError(f"pulses must be a PulseGeometry or None, not "
                            f"{type(pulses).__name__}")
        if pulses is not None and (not writable or states is not None or program_noise_width
                                   or tied):
            raise ValueError("a pulsed update (pulses) is built for UPDATE alone: not with "
                             "tied, states or program_noise_width, and not read-only")
        if (grad_dac is not None or grad_adc is not None) and grad is None:
            raise ValueError("grad_dac and grad_adc are the read models of products on "
                             "gradients: they need grad")
        # The least of each pair's values: a DAC and the states drop at least a bit; an ADC's
        # step may be 0, its code has at least a bit.
        for name, pair, lows in (("dac", dac, (1, 1)), ("adc", adc, (0, 1)),
                                 ("grad_dac", grad_dac, (1, 1)), ("grad_adc", grad_adc, (0, 1)),
                                 ("states", states, (1, 1))):
            if pair is not None and (len(pair) != 2 or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= low
                    for v, low in zip(pair, lows, strict=True))):
                raise TypeError(f"{name} must be a pair of integers (at least {lows}), not "
                                f"{pair!r}")
        if count > GROUP:
            raise ValueError(f"count must be at most GROUP ({GROUP}), not {count}")
        if first + count > lanes:
            raise ValueError(f"lanes {first}..{first + count - 1} are not lanes of a tile of "
                             f"{lanes}")
        if acc_width is not None:
            _check_int("acc_width", acc_width, 1)
        if tied and acc_width is None:
            raise ValueError("tied needs acc_width: the tied step is APPLY's")
        if rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {rounding!r}; choose one of {list(ROUNDINGS)}")
        if grad is not None and (len(grad) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in grad)):
            raise TypeError(f"grad must be a pair of integers, not {grad!r}")
        if init is not None and len(init) != count:
            raise ValueError(f"init must hold {count} banks' words, not {len(init)}")
        if not writable and acc_width is not None:
            raise ValueError("a read-only group (writable=False) has no gradient banks: "
                             "acc_width must be None")

    def __init__(self, *, first: int, count: int, lanes: int, depth: int, weight_width: int,
                 operand_width: int, lane_width: int, shift: int, width: int, out_width: int,
                 update_shift: int, rounding: str, grad=None, acc_width: int | None = None,
                 apply_shift: int = 0, draw_bits: int = 0, one_chunk: bool = False,
                 tied: bool = False, init=None, block_ram: bool = False,
                 writable: bool = True, dac=None, adc=None, grad_dac=None, grad_adc=None,
                 noise_width: int = 0, states=None, program_noise_width: int = 0, pulses=None):
        self._pulses = pulses
        self._dac, self._adc, self._noise_width = dac, adc, noise_width
        self._grad_dac, self._grad_adc = grad_dac, grad_adc
        self._states, self._pnoise_width = states, program_noise_width
        self._first, self._count, self._lanes, self._depth = first, count, lanes, depth
        self._ww, self._ow, self._lane_width = weight_width, operand_width, lane_width
        self._shift, self._width, self._out_width, self._grad = shift, width, out_width, grad
        self._update_shift, self._apply_shift = update_shift, apply_shift
        self._acc_width, self._rounding, self._draw_bits = acc_width, rounding, draw_bits
        self._one_chunk, self._tied, self._block_ram = bool(one_chunk), bool(tied), block_ram
        self._writable = bool(writable)
        self._init = [[] for _ in range(count)] if init is None else [list(w) for w in init]
        a_width = max(weight_width, operand_width)
        address = range(max(depth, 2))
        members = {
            "ctrl": In(lane_control(lanes, depth)),
            "addr": In(address), "en": In(1),
            "x": In(signed(operand_width)).array(count), "s": In(signed(operand_width)),
            "clear": In(1),
            "product": Out(signed(a_width + operand_width)).array(count),
            "a_first": Out(signed(a_width)),
            "w_data": Out(signed(weight_width)).array(count),
            "w_q": Out(signed(weight_width)).array(count),
            "y_word": Out(signed(out_width)).array(count), "y_write": Out(count),
            "overflow": Out(1), "saturating": Out(1),
        }
        if writable:
            members |= {"load_valid": In(1), "load_lane": In(range(GROUP)),
                        "load_addr": In(address), "load_word": In(signed(weight_width))}
        if draw_bits:
            members["draw"] = In(unsigned(draw_bits)).array(count)
        if noise_width:
            members["noise"] = In(signed(noise_width)).array(count)
        if states is not None and rounding == "stochastic":
            members["state_draw"] = In(unsigned(states[0])).array(count)
        if program_noise_width:
            members["program_noise"] = In(signed(program_noise_width)).array(count)
        if pulses is not None:
            members |= {"row_fires": In(unsigned(pulses.pulses)),
                        "col_fires": In(unsigned(pulses.pulses)).array(count)}
        if acc_width is not None:
            members |= {"g_data": Out(signed(acc_width)).array(count),
                        "g_q": Out(signed(acc_width)).array(count)}
        if tied:
            members |= {"tap_we": In(count), "tap_addr": In(address),
                        "tap_word": In(signed(weight_width)), "zero": In(1),
                        "zero_addr": In(address)}
        super().__init__(members)

    @property
    def first(self) -> int:
        """Index of the group's first lane in the tile."""
        return self._first

    @property
    def count(self) -> int:
        """Lanes in the group."""
        return self._count

    @property
    def depth(self) -> int:
        """Words per bank."""
        return self._depth

    @property
    def writable(self) -> bool:
        """The weight banks have write ports (LOAD_W, UPDATE, the tied walk)."""
        return self._writable

    @property
    def training(self) -> bool:
        """The group has gradient banks (``acc_width`` given)."""
        return self._acc_width is not None

    def _offset(self, j, shift):
        return rounding_offset(self._rounding, shift, self.draw[j] if self._draw_bits else None)

    def _banks(self, m):
        """The weight and gradient banks with their registered writes; returns the read and
        write ports and ``write(port, address, data)``, which writes a cycle later."""
        attrs = {"ram_style": "block", "no_rw_check": 1} if self._block_ram else {}
        first, count = self._first, self._count
        w_banks = [Memory(shape=signed(self._ww), depth=self._depth, init=self._init[j],
                          attrs=attrs) for j in range(count)]
        for j, mem in enumerate(w_banks):
            m.submodules[f"w{first + j}"] = mem
        g_banks = []
        if self.training:
            g_banks = [Memory(shape=signed(self._acc_width), depth=self._depth, init=[],
                              attrs=attrs) for _ in range(count)]
            for j, mem in enumerate(g_banks):
                m.submodules[f"g{first + j}"] = mem
        w_rd = [mem.read_port() for mem in w_banks]
        w_wr = [mem.write_port() for mem in w_banks] if self._writable else []
        g_rd = [mem.read_port() for mem in g_banks]
        g_wr = [mem.write_port() for mem in g_banks]
        for port in w_rd + g_rd:
            m.d.comb += [port.addr.eq(self.addr), port.en.eq(self.en)]
        # The pins hang off registers that can sit next to each bank (or, for a weight bank,
        # the group's LOAD_W registers, through one multiplexer).
        writes = {}
        for name, ports in (("w", w_wr), ("g", g_wr)):
            for j, port in enumerate(ports):
                k = first + j
                regs = (Signal(name=f"{name}{k}_wen"), Signal.like(port.addr, name=f"{name}{k}_wa"),
                        Signal.like(port.data, name=f"{name}{k}_wd"))
                m.d.sync += regs[0].eq(0)
                m.d.comb += [port.en.eq(regs[0]), port.addr.eq(regs[1]), port.data.eq(regs[2])]
                if name == "w":
                    with m.If(self.load_valid & (self.load_lane == j)):
                        m.d.comb += [port.en.eq(1), port.addr.eq(self.load_addr),
                                     port.data.eq(self.load_word)]
                writes[id(port)] = regs

        def write(port, address, data):
            en, addr_reg, data_reg = writes[id(port)]
            m.d.sync += [en.eq(1), addr_reg.eq(address), data_reg.eq(data)]

        m.d.comb += [self.w_data[j].eq(port.data) for j, port in enumerate(w_rd)]
        m.d.comb += [self.g_data[j].eq(port.data) for j, port in enumerate(g_rd)]
        return w_rd, w_wr, g_rd, g_wr, write

    def elaborate(self, platform):
        m = Module()
        first, count, ww, ow = self._first, self._count, self._ww, self._ow
        lanes = range(first, first + count)
        train = self.training
        w_rd, w_wr, g_rd, g_wr, write = self._banks(m)

        def copy(field):
            """This group's registered copy of the sequencer's control ``field`` (``keep``:
            every group's copy is identical, and Yosys would merge them)."""
            value = getattr(self.ctrl, field)
            reg = Signal(value.shape(), name=field, attrs=KEEP)
            m.d.sync += reg.eq(value)
            return reg

        def stage(signals, name):
            """Registered copies of the lanes' ``signals``, ``{name}_{lane}``."""
            regs = [Signal.like(sig, name=f"{name}_{k}") for k, sig in zip(lanes, signals,
                                                                            strict=True)]
            m.d.sync += [r.eq(sig) for r, sig in zip(regs, signals, strict=True)]
            return regs

        # Stage 2: the banks' data registered, the shared operand once for the group.
        w_q = stage([port.data for port in w_rd], "wq")
        x_q = stage(list(self.x), "xq")
        s_q = Signal(signed(ow), name="sq", attrs=KEEP)
        m.d.sync += s_q.eq(self.s)
        m.d.comb += [self.w_q[j].eq(w_q[j]) for j in range(count)]
        # The multipliers (Multiplier: operand and product registers, the DSP cell's own on an
        # ECP5): op_a / op_b at stage 2, registered into stage 3, the product into stage 4.
        a_width = max(ww, ow)
        mults = [Multiplier(a_width, ow) for _ in lanes]
        for k, mult in zip(lanes, mults, strict=True):
            m.submodules[f"mul{k}"] = mult
        op_a = [Signal(signed(a_width), name=f"opa{k}") for k in lanes]
        op_b = [Signal(signed(ow), name=f"opb{k}") for k in lanes]
        prods = [mult.p for mult in mults]
        m.d.comb += [self.product[j].eq(prods[j]) for j in range(count)]
        m.d.comb += self.a_first.eq(op_a[0])
        w_old = []   # the old weights, for UPDATE and APPLY (stages 3 and 4)
        if self._writable:
            w_s3 = [Signal(signed(ww), name=f"wold3_{k}") for k in lanes]
            w_old = [Signal(signed(ww), name=f"wold{k}") for k in lanes]
            m.d.sync += [w_s3[j].eq(w_q[j]) for j in range(count)]
            m.d.sync += [w_old[j].eq(w_s3[j]) for j in range(count)]
        # Which lanes a chunk uses, a register per lane moving with the pipeline ("keep":
        # where every chunk uses all lanes the bits are equal, and Yosys would merge them).
        lane_on2, lane_on3, lane_on4, lane_on5 = (
            Signal(count, name=f"lane_on{n}", attrs=KEEP) for n in range(2, 6))
        nlanes = copy("nlanes")                 # stage 1
        m.d.sync += lane_on2.eq(Cat(k < nlanes for k in lanes))
        m.d.sync += [lane_on3.eq(lane_on2), lane_on4.eq(lane_on3), lane_on5.eq(lane_on4)]
        times_s, s_right = copy("times_s"), copy("s_right")
        x_b, s_b, dac_terms = x_q, s_q, []
        has_dac = self._dac is not None or self._grad_dac is not None
        if has_dac:
            grad_dac = copy("grad") if self._grad_dac is not None or self._grad is not None \
                else None
            x_b, s_b, dac_terms = self._dac_operands(m, x_q, s_q, lane_on2, times_s, s_right,
                                                     grad_dac)
        for j in range(count):
            with m.If(~lane_on2[j]):
                m.d.comb += op_a[j].eq(0)
            with m.Elif(times_s):
                m.d.comb += op_a[j].eq(s_q)
            with m.Else():
                m.d.comb += op_a[j].eq(w_q[j])
            with m.If(s_right):
                m.d.comb += op_b[j].eq(s_b)
            if has_dac:
                with m.Elif(times_s):
                    m.d.comb += op_b[j].eq(x_q[j])
            with m.Else():
                m.d.comb += op_b[j].eq(x_b[j])
            m.d.comb += [mults[j].a.eq(op_a[j]), mults[j].b.eq(op_b[j])]
        if self._writable or train:
            s4_waddr = copy("waddr")            # stage 4
        if self._writable:
            u_waddr = Signal.like(s4_waddr, name="u_waddr", attrs=KEEP)
            m.d.sync += u_waddr.eq(s4_waddr)

        # Gradient accumulators: at stage 4 ACCUMULATE writes back the old sum plus the
        # product, APPLY writes zero (its step comes from the negated old sum).
        g_neg = []
        if train:
            g_q = stage([port.data for port in g_rd], "gq")
            m.d.comb += [self.g_q[j].eq(g_q[j]) for j in range(count)]
            g_s3 = stage(g_q, "gold3")
            g_s4 = stage(g_s3, "gold4")
            g_neg = [Signal(signed(self._acc_width + 1), name=f"gneg{k}") for k in lanes]
            m.d.sync += [g_neg[j].eq(-g_s3[j]) for j in range(count)]
            g_write, g_keep = copy("g_write"), copy("g_keep")
            for j in range(count):
                with m.If(g_write & lane_on4[j]):
                    write(g_wr[j], s4_waddr, Mux(g_keep, g_s4[j] + prods[j], 0))

        sat_terms = self._transposed(m, prods, lane_on5, copy) + dac_terms
        if self._pulses is not None:
            sat_terms += self._pulsed_update(m, w_q, s_q, x_q, lane_on5, u_waddr, w_wr, write,
                                             copy)
        elif self._writable:
            sat_terms += self._update(m, prods, g_neg, w_old, lane_on4, lane_on5, u_waddr,
                                      w_wr, write, copy)
        if self._tied:
            for j in range(count):
                with m.If(self.tap_we[j]):
                    write(w_wr[j], self.tap_addr, self.tap_word)
            with m.If(self.zero):
                for port in g_wr:
                    write(port, self.zero_addr, 0)

        # The sticky flag of the group's lanes.
        ovf, sets = Signal(name="ovf", attrs=KEEP), Signal(name="ovf_set")
        m.d.comb += sets.eq(Cat(*sat_terms).any())
        with m.If(self.clear):
            m.d.sync += ovf.eq(0)
        with m.Elif(sets):
            m.d.sync += ovf.eq(1)
        m.d.comb += [self.overflow.eq(ovf), self.saturating.eq(sets)]
        return m

    def _dac_operands(self, m, x_q, s_q, lane_on2, times_s, s_right, is_grad):
        """The products' operands through the DAC: each lane's ``x`` (FORWARD*) and the shared
        ``s`` (TRANSPOSED*), with the registered flag of a clipped code in a lane the chunk
        uses (UPDATE and ACCUMULATE, ``times_s``, take their operands as they are); on
        gradients (``is_grad``, a register of the group's, or None without gradients) the
        gradient format's DAC. Returns the converted ``x`` words, ``s`` and the flag's
        terms."""

        def convert(value):
            word, sat = (value, 0) if self._dac is None else dac(m, value, *self._dac)
            if is_grad is None:
                return word, sat
            word_g, sat_g = (value, 0) if self._grad_dac is None else \
                dac(m, value, *self._grad_dac)
            out, flag = Signal(signed(self._ow)), Signal()
            m.d.comb += [out.eq(Mux(is_grad, word_g, word)), flag.eq(Mux(is_grad, sat_g, sat))]
            return out, flag

        s_b, s_sat = convert(s_q)
        x_b, x_sat = [], []
        for j in range(self._count):
            word, sat = convert(x_q[j])
            x_b.append(word)
            x_sat.append(sat)
        dac_sat = Signal(self._count, name="dac_sat")
        m.d.sync += dac_sat.eq(Cat(
            lane_on2[j] & Mux(s_right, s_sat, ~times_s & x_sat[j]) for j in range(self._count)))
        return x_b, s_b, [dac_sat.any()]

    def _transposed(self, m, prods, lane_on5, copy):
        """The lane accumulators over a transposed product's rows; the chunk's roundings,
        registered, and the write of the words. Returns the flag's terms."""
        count, lanes = self._count, range(self._first, self._first + self._count)
        lane_acc = [Signal(signed(self._lane_width), name=f"lacc{k}") for k in lanes]
        tr_acc = copy("tr_acc")                 # stage 4
        if self._one_chunk:
            # The accumulators are cleared as their sums are rounded, so they hold 0 when a
            # TRANSPOSED starts and each cycle only adds — a carry chain straight into its
            # registers (synchronous reset and enable), no multiplexer between them.
            tr_clear = copy("tr_clear")
            for j in range(count):
                with m.If(tr_clear):
                    m.d.sync += lane_acc[j].eq(0)
                with m.Elif(tr_acc):
                    m.d.sync += lane_acc[j].eq(lane_acc[j] + prods[j])
        else:
            # Chunks follow each other without a gap: the first row of a chunk loads.
            tr_first = copy("tr_first")
            for j in range(count):
                with m.If(tr_acc):
                    with m.If(tr_first):
                        m.d.sync += lane_acc[j].eq(prods[j])
                    with m.Else():
                        m.d.sync += lane_acc[j].eq(lane_acc[j] + prods[j])
        tr_write = copy("tr_write")
        tr_values = [Signal(signed(self._out_width), name=f"tval{k}") for k in lanes]
        # The chunk's lanes as it is rounded (lane_on5 is its last row's) and written (tw_on).
        tw_on = Signal(count, name="tw_on", attrs=KEEP)
        m.d.sync += tw_on.eq(lane_on5)
        tr_sat = Signal(count, name="tr_sat")   # registered: an OR over the lanes is a stage
        grad_sel = copy("grad") if self._grad is not None else None
        # Rounded every cycle, kept only the cycle after tr_write's cue: no enable fans out
        # to the lanes' registers.
        for j in range(count):
            offset = lambda shift, j=j: self._offset(j, shift)   # noqa: E731
            if self._adc is not None or self._grad_adc is not None or self._noise_width:
                y_k, sat_k = read_product(
                    m, lane_acc[j], shift=self._shift, width=self._width,
                    out_width=self._out_width, offset=offset, adc=self._adc,
                    grad=self._grad, grad_adc=self._grad_adc, is_grad=grad_sel,
                    noise=self.noise[j] if self._noise_width else None)
            else:
                y_k, sat_k = narrow_product(
                    m, lane_acc[j], shift=self._shift, width=self._width,
                    out_width=self._out_width, offset=offset, grad=self._grad,
                    is_grad=grad_sel)
            m.d.sync += [tr_values[j].eq(y_k), tr_sat[j].eq(sat_k & lane_on5[j])]
        m.d.comb += [self.y_word[j].eq(tr_values[j]) for j in range(count)]
        m.d.comb += self.y_write.eq(Cat(tr_write & tw_on[j] for j in range(count)))
        return [tr_write & tr_sat.any()]

    def _update(self, m, prods, g_neg, w_old, lane_on4, lane_on5, u_waddr, w_wr, write, copy):
        """UPDATE's (or APPLY's) step (U1), the old weight plus the step saturated and written
        back (U2); the saturations raise the flag (U3). Returns the flag's terms."""
        count, lanes, ww = self._count, range(self._first, self._first + self._count), self._ww
        steps = [Signal(signed(ww), name=f"step{k}") for k in lanes]
        u_old = [Signal(signed(ww), name=f"uold{k}") for k in lanes]
        u_sat = Signal(count, name="u_sat")
        m.d.sync += [u_old[j].eq(w_old[j]) for j in range(count)]
        u_write = copy("u_write")
        apply_sel = copy("apply") if self.training else None
        # U1 of UPDATE (from the products) or APPLY (from the negated gradient sums), every
        # cycle; the registers are used only where u_write follows.
        for j in range(count):
            step_k, sat_step = narrow(m, prods[j], self._update_shift, ww,
                                      self._offset(j, self._update_shift))
            if apply_sel is not None:
                step_g, sat_g = narrow(m, g_neg[j], self._apply_shift, ww,
                                       self._offset(j, self._apply_shift))
                step_k = Mux(apply_sel, step_g, step_k)
                sat_step = Mux(apply_sel, sat_g, sat_step)
            m.d.sync += [steps[j].eq(step_k), u_sat[j].eq(sat_step & lane_on4[j])]
        # U3 only raises the flag: the lanes' saturations, registered.
        u3_sat = Signal(count, name="u3_sat")
        m.d.sync += u3_sat.eq(0)
        for j, k in enumerate(lanes):
            total = Signal(signed(ww + 1), name=f"wsum{k}")
            m.d.comb += total.eq(u_old[j] + steps[j])
            w_new, sat_w = narrow(m, total, 0, ww)
            if self._states is not None or self._pnoise_width:
                # The device's write models: a state, then the programming noise.
                draw = self.state_draw[j] if hasattr(self, "state_draw") else None
                w_new, sat_p = program_word(
                    m, w_new, ww, states=self._states,
                    offset=0 if self._states is None
                    else rounding_offset(self._rounding, self._states[0], draw),
                    noise=self.program_noise[j] if self._pnoise_width else None)
                sat_w = sat_w | sat_p
            with m.If(u_write & lane_on5[j]):
                write(w_wr[j], u_waddr, w_new)
                m.d.sync += u3_sat[j].eq(sat_w)
        return [u3_sat.any(), u_write & u_sat.any()]

    def _pulsed_update(self, m, w_q, s_q, x_q, lane_on5, u_waddr, w_wr, write, copy):
        """UPDATE as pulse trains (``pulses``): the coincidences and the direction (stage 3);
        the step of one coincidence at the old weight, or with hard bounds already ``c·step``
        (stage 4); ``c·step`` (stage 5); the old weight plus or minus it saturated and
        written back (stage 6, with ``u_write``); the saturations raise the flag a cycle
        later. Each path holds one product or one carry chain (and the sum's saturation).
        Returns the flag's terms."""
        geo, count, ww = self._pulses, self._count, self._ww
        lanes = range(self._first, self._first + count)
        bl, half = geo.pulses, 1 << (ww - 1)
        # Stage 2: the trains registered beside s and x (the row's once for the group).
        rf_q = Signal(bl, name="rfire_q", attrs=KEEP)
        m.d.sync += rf_q.eq(self.row_fires)
        cf_q = [Signal(bl, name=f"cfire_q{k}") for k in lanes]
        m.d.sync += [cf_q[j].eq(self.col_fires[j]) for j in range(count)]
        largest = geo.largest_step(ww)
        step_shape = unsigned(max(largest.bit_length(), 1))
        move_shape = unsigned(max((largest * bl).bit_length(), 1))
        hard_up, hard_down = geo.steps(ww)
        u_write = copy("u_write")
        if self.training:
            # u_write is UPDATE's and APPLY's: APPLY only clears G here.
            u_write = u_write & ~copy("apply")
        u3_sat = Signal(count, name="u3_sat")
        m.d.sync += u3_sat.eq(0)
        for j, k in enumerate(lanes):
            # Stage 3: coincidences, direction (up where s and x have one sign: δ = −s; a
            # zero word fires nowhere, so its direction does not matter), the bound.
            hits = Signal(range(bl + 1), name=f"hits{k}")
            up3 = Signal(name=f"up3_{k}")
            both = rf_q & cf_q[j]
            same = s_q[-1] == x_q[j][-1]
            m.d.sync += [hits.eq(popcount(both)), up3.eq(~same if geo.descent else same)]
            # Stage 4: with hard bounds the move c·step (a constant's multiple), with soft
            # bounds the step of one coincidence at the old weight (a constant times the
            # distance to the bound, b_up = 2^(W−1) − w or b_down = w + 2^(W−1)).
            w3 = Signal(signed(ww), name=f"pold3_{k}")
            old4 = Signal(signed(ww), name=f"pold4_{k}")
            up4 = Signal(name=f"up4_{k}")
            m.d.sync += [w3.eq(w_q[j]), old4.eq(w3), up4.eq(up3)]
            if geo.soft_bounds:
                # The bound and the asymmetry's factor registered at stage 3 (no look-up
                # table in front of the multiplier); 2^exponent is a shift.
                bound = Signal(unsigned(ww + 1), name=f"pbound{k}")
                factor = Signal(range(max(geo.up, geo.down) + 1), name=f"pfactor{k}")
                up2 = (s_q[-1] != x_q[j][-1]) if geo.descent else (s_q[-1] == x_q[j][-1])
                m.d.sync += [bound.eq(Mux(up2, half - w_q[j], w_q[j] + half)),
                             factor.eq(Mux(up2, geo.up, geo.down))]
                mag = Signal(step_shape, name=f"pstep{k}")
                hits4 = Signal.like(hits, name=f"hits4_{k}")
                m.d.sync += [mag.eq(geo.scale(factor * bound)), hits4.eq(hits)]
                move = hits4 * mag
            else:
                move = Signal(move_shape, name=f"pmove4_{k}")
                m.d.sync += move.eq(Mux(up3, hits * hard_up, hits * hard_down))
            # Stage 5: |c·step|, the direction and the old weight; the sum or the difference
            # (two carry chains side by side, no negation in front of them).
            delta = Signal(move_shape, name=f"pdelta{k}")
            old5 = Signal(signed(ww), name=f"pold5_{k}")
            up5 = Signal(name=f"up5_{k}")
            m.d.sync += [delta.eq(move), old5.eq(old4), up5.eq(up4)]
            total = Signal(signed(max(ww, len(delta) + 1) + 1), name=f"wsum{k}")
            m.d.comb += total.eq(Mux(up5, old5 + delta, old5 - delta))
            w_new, sat_w = narrow(m, total, 0, ww)
            with m.If(u_write & lane_on5[j]):
                write(w_wr[j], u_waddr, w_new)
                m.d.sync += u3_sat[j].eq(sat_w)
        return [u3_sat.any()]
