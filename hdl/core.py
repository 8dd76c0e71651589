"""The neural-ODE core: three crossbar tiles, the Euler/Newton controller, a trajectory memory.

``dz/dt = B·relu(A z)`` integrated with explicit or implicit Euler (docs/architecture.md §1), then
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
input banks. RUN starts by copying ``z_0`` from the image buffer (LOAD_IMAGE's, or the
``image`` stream's, which takes the next image while this one runs) and ends by copying
``z_N`` into C's inputs, a chunk of C's ``lanes_c`` words per cycle (A and B have ``lanes``
each; C, busy once per image, may have fewer).

The Fourier path (``conv_path = "fourier"``, ``structure = "conv"``, inference): two
:class:`~xbarode.hdl.fourier.FourierConv` units hold A's and B's kernel spectra (LOAD_A and
LOAD_B stream the spectrum words, ``xbarode.sim.core_plan.tile_words``). A chain streams
``v`` into unit A (state words shifted into the data format, exactly), convolves, streams
the result through the controller — narrowed to ``act`` (one rounding, tile A's LFSR seed),
``φ`` applied, shifted back into the data format — into unit B, convolves, and narrows B's
result to ``state`` with ``h`` folded in (tile B's seed) into banks that the combine reads.
The model twin is ``FixedNetwork(fourier=…)`` (:class:`~xbarode.model.fixed_ops.
FixedFourierConv`). READ_WEIGHTS then streams only ``C`` and ``d``. The ``[device]`` table's
read models act there on the units' DFT arrays (seeded at the model's sites) and on tile C.

- explicit Euler: ``z ← sat(z + narrow(h·B·relu(A z)))``;
- implicit Euler: predictor ``w = z + h·B·relu(A z)``; per Newton iteration the residual
  ``G = sat(w − z − h·B·relu(A w))`` (mask ``D`` recorded), stop when ``max|G| <= tol`` or
  after ``max_iter`` updates; else ``δ = G``, ``neumann_terms`` times
  ``δ ← sat(G + h·B·(D ⊙ A δ))``, and ``w ← sat(w − δ)``; the step's state is ``w``.
"""

from __future__ import annotations

from collections.abc import Mapping

from amaranth import Cat, Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from xbarode.model.core_config import CoreConfig
from xbarode.model.device import DEVICE_PURPOSES, DEVICE_SITE, FOURIER_DEVICE_SITE
from xbarode.model.fixed import Format
from xbarode.model.fixed_bank import POOL_SITE
from xbarode.model.fixed_net import site_seed
from xbarode.model.fixed_ops import check_accumulator, dft_device

from .checked import CheckedComponent
from .core_adjoint import AdjointController
from .core_chain import DirectChain, FourierChain
from .core_forward import ForwardController
from .core_parts import (
    HOST_OPS,
    HOST_TRAINING_OPS,
    STATUS_BITS,
    CoreOp,
    HostPort,
    ImageBuffer,
    VectorBanks,
)
from .core_pool import PoolUnit
from .fourier import FourierConv, FourierOp
from .fourier_bank import BankOp, FourierBank
from .interface import ControlSignature
from .tile import CrossbarTile, TileOp

__all__ = ["WEIGHT_KEYS", "Core", "CoreOp"]


#: The built-in weights' keys: the words of LOAD_A, LOAD_B (Bᵀ), LOAD_C and LOAD_D.
WEIGHT_KEYS = ("A", "Bt", "C", "d")


def _weight_arguments(config: CoreConfig, weights) -> dict:
    """The tiles' keyword arguments that build ``weights`` in (:class:`Core`'s ``weights``):
    ``{"A": {"weights": …}, "B": {…}, "C": {"weights": …, "bias_words": …}}``."""
    import numpy as np

    if not isinstance(weights, Mapping):
        raise TypeError(f"weights must be a mapping of the words of LOAD_A, LOAD_B, LOAD_C "
                        f"and LOAD_D ({', '.join(WEIGHT_KEYS)}), not {type(weights).__name__}")
    if config.fourier() is not None:
        raise ValueError("built-in weights need the direct path's tiles: the Fourier units' "
                         "spectra are loaded by LOAD_A and LOAD_B (conv_path = \"direct\")")
    if sorted(weights) != sorted(WEIGHT_KEYS):
        raise ValueError(f"weights must have the keys {', '.join(WEIGHT_KEYS)} (the words of "
                         f"LOAD_A, LOAD_B, LOAD_C and LOAD_D), not {', '.join(map(str, weights))}")
    m, classes = config.m, config.classes
    shapes = {"A": (m, m), "Bt": (m, m), "C": (classes, m), "d": (classes,)}
    words = {}
    for key, shape in shapes.items():
        value = np.asarray(weights[key])
        if value.size != int(np.prod(shape)):
            raise ValueError(f"weights[{key!r}] must hold {int(np.prod(shape))} words "
                             f"({'x'.join(map(str, shape))}), not {value.size}")
        words[key] = value.reshape(shape)
    return {"A": {"weights": words["A"]}, "B": {"weights": words["Bt"]},
            "C": {"weights": words["C"], "bias_words": words["d"]}}


def _part_parameters(config: CoreConfig, weights=None) -> dict:
    """``{"A": (class, keyword arguments), "B": …, "C": …}``: tiles A, B and C, or on the
    Fourier path units A and B and tile C, for ``config`` (with ``weights`` built into the
    tiles' memories, :class:`Core`)."""
    f = config.formats()
    m, lanes, seed = config.m, config.lanes, config.lfsr_seed
    common = {"lanes": lanes, "weight_format": f.weight, "acc_width": config.acc_width,
              "rounding": config.rounding, "side_ports": True}
    train = {}
    if config.training:
        # The adjoint's products: Aᵀg·h on A, Bᵀλ as B's forward product (B holds Bᵀ),
        # Cᵀ∂L/∂logits on C; A's and B's gradients carry the factor h (docs/architecture.md §1).
        sgd = config.sgd_shift
        train = {"A": {"grad_format": f.grad, "grad_shift": config.h_shift,
                       "sgd_shift": sgd + config.h_shift},
                 "B": {"grad_format": f.grad, "sgd_shift": sgd + config.h_shift},
                 "C": {"grad_format": f.grad, "sgd_shift": sgd}}
        if config.structure == "conv":
            # A and Bᵀ hold convolution matrices: SGD keeps their kernels' weights tied.
            train["A"]["taps"] = train["B"]["taps"] = config.conv_taps()
    fr = config.fourier()
    if weights is not None:
        for name, kwargs in _weight_arguments(config, weights).items():
            train.setdefault(name, {}).update(kwargs)
    device = _tile_device(config)
    if device is not None:
        # The model's sites (FixedNetwork): tile k's device generators at 16 + 5k (on the
        # Fourier path tile C's only: units A and B take theirs below).
        for k, name in enumerate("ABC"):
            if fr is None or name == "C":
                train.setdefault(name, {}).update(device=device, device_seed=site_seed(
                    seed, DEVICE_SITE + len(DEVICE_PURPOSES) * k))
        if device.pulses is not None and fr is None:
            # Tile B holds Bᵀ: its rows take relu(u) (act), its columns λ (grad).
            train["B"]["update_formats"] = (f.act, f.grad)
    if fr is None:
        parts = {
            "A": (CrossbarTile, dict(rows=m, cols=m, input_format=f.state, output_format=f.act,
                                     lfsr_seed=site_seed(seed, 0), **common,
                                     **train.get("A", {}))),
            "B": (CrossbarTile, dict(rows=m, cols=m, input_format=f.act, output_format=f.state,
                                     shift=config.h_shift, lfsr_seed=site_seed(seed, 1),
                                     **common, **train.get("B", {}))),
        }
    else:
        # Units A and B instead of the tiles (their sites: site_seed(seed, 4…6), (7…9)); with
        # the read models, unit k's DFT arrays draw from FOURIER_DEVICE_SITE + 2k and the next
        # site (FixedNetwork's Fourier units). Without, no device argument: the same Verilog.
        height, width = config.image
        units = {"height": height, "width": width, "lanes": lanes, "data_format": fr["data"],
                 "acc_width": config.acc_width, "twiddle_format": fr["twiddle"],
                 "spectrum_format": fr["spectrum"], "rounding": config.rounding}
        unit = FourierConv
        if config.channels > 1:
            # c×c kernel banks (no device models: CoreConfig refuses them with channels).
            unit = FourierBank
            units |= {"channels_in": config.channels, "channels_out": config.channels}
        parts = {}
        for k, name in enumerate("AB"):
            if device is not None:
                train.setdefault(name, {}).update(device=device, device_seed=site_seed(
                    seed, FOURIER_DEVICE_SITE + 2 * k))
            parts[name] = (unit, dict(lfsr_seed=site_seed(seed, 4 + 3 * k), **units,
                                      **train.get(name, {})))
    parts["C"] = (CrossbarTile, dict(rows=config.classes, cols=config.features,
                                     input_format=f.state,
                                     output_format=f.act, bias=True,
                                     lfsr_seed=site_seed(seed, 2),
                                     **(common | {"lanes": config.lanes_c}),
                                     **train.get("C", {})))
    return parts


def _tile_device(config: CoreConfig):
    """The tiles' device model: the ``[device]`` table's, without ``pulses`` unless the core
    trains (they act on the SGD step only); None if every model is off."""
    import dataclasses

    device = config.device()
    if device is not None and device.pulses is not None and not config.training:
        device = dataclasses.replace(device, pulses=None)
    return None if device is None or device.off else device


def _check_device(config: CoreConfig) -> None:
    """Raise ``ValueError`` if the ``[device]`` table turns on a model the core does not
    carry: the write models (``states``, ``program_noise``, ``pulses``) on a convolution, and
    on the Fourier path with the model's message (its DFT arrays hold a fixed table:
    :func:`~xbarode.model.fixed_ops.dft_device`) (docs/device.md, "In the RTL core"). On the
    Fourier path the read models act on units A's and B's DFT arrays and on tile C. With
    ``training`` the read models act on every product, BACKWARD's on gradients too, the write
    models on APPLY's writes as on the loads, and ``pulses`` make APPLY the model's pulsed step
    (:mod:`~xbarode.hdl.core_pulses`). Tile B holds Bᵀ: its write draws follow Bᵀ's order,
    and so do the model's (:class:`~xbarode.model.fixed_ops.FixedTile`'s
    ``holds_transpose``)."""
    device = config.device()
    if device is None:
        return
    if config.fourier() is not None:
        # The DFT arrays hold a fixed table: read models only (the model's check and message).
        dft_device(device, "the Fourier path")
    if device.writes and config.structure == "conv":
        raise ValueError("the device's write models (states, program_noise) need a dense "
                         "network; a convolution's tied weights would drift apart")


def _check_part(cls, kwargs: dict) -> None:
    """Raise what ``cls(**kwargs)`` raises, without building it.

    A Fourier unit checks its own parameters (:meth:`Dft2d.check_parameters
    <xbarode.hdl.fourier.Dft2d.check_parameters>`). Of a tile's checks, a valid
    :class:`~xbarode.model.core_config.CoreConfig` leaves only the accumulator's (it checks
    the accumulator only for training, and not for C's bias with gradient words): the
    tile's rule and message, :func:`~xbarode.model.fixed_ops.check_accumulator` on
    ``max(rows, cols)`` products of weights and operands (the wider of the input and gradient
    words), one more bit with a bias.
    """
    if cls in (FourierConv, FourierBank):
        cls.check_parameters(**kwargs)
        return
    if kwargs.get("device") is not None or kwargs.get("weights") is not None:
        CrossbarTile.check_parameters(**kwargs)
    operand, grad = kwargs["input_format"], kwargs.get("grad_format")
    if grad is not None:
        operand = Format(max(operand.width, grad.width), 0)
    check_accumulator(kwargs["acc_width"], kwargs["weight_format"], operand,
                      max(kwargs["rows"], kwargs["cols"]), int(kwargs.get("bias", False)))


def _any(values):
    """The OR of ``values`` (of parts that drive them only while they run)."""
    values = list(values)
    result = values[0]
    for value in values[1:]:
        result = result | value
    return result


class Core(CheckedComponent):
    """The neural-ODE core for a :class:`~xbarode.model.core_config.CoreConfig`.

    Built in :meth:`elaborate` from the tiles (or Fourier units) and its parts: the host port
    and the state banks (:mod:`~xbarode.hdl.core_parts`), the chain engine
    (:mod:`~xbarode.hdl.core_chain`), the forward controller
    (:mod:`~xbarode.hdl.core_forward`) and, with ``training``, the adjoint controller
    (:mod:`~xbarode.hdl.core_adjoint`); its own controller dispatches each operation to the
    part that carries it out. The constructor builds nothing: it checks the tiles' (units')
    parameters, so that a bad configuration fails there with the refusing part's message.

    Parameters
    ----------
    config : CoreConfig
    weights : mapping, optional
        Weights built into the tiles' memories as their initial contents (direct path only):
        ``A``, ``Bt``, ``C`` and ``d``, the integer words LOAD_A, LOAD_B, LOAD_C and LOAD_D
        would send, in their order (``Bt`` is Bᵀ; :func:`xbarode.sim.core_plan.weight_load_words`
        makes them from float weights). RUN then needs only an image; the loads still replace
        them. With the device's write models they are refused (the tiles' message).

    Attributes
    ----------
    image : In(stream.Signature(signed(state width)))
        Images (``m`` state words each) into the image buffer, at any time, also while an
        operation runs (docs/interface.md, "The image buffer and the image stream"); not
        ready while LOAD_IMAGE runs and while RUN copies the buffer.
    i : In(stream.Signature(signed(word)))
        Words in (LOAD_*); ``word`` is the widest of the weight, state, act and grad formats
        (and the spectrum format on the Fourier path).
    o : Out(stream.Signature(signed(word)))
        Words out (READ_*); with ``training``, ``acc_width`` bits wide (READ_GRAD).
    op : In(CoreOp)
    start : In(1)
        Pulse for one cycle while ``busy`` is low.
    busy, done : Out(1)
        ``done`` pulses for one cycle when an operation ends; ``cls``, ``converged``,
        ``iterations`` and ``overflow`` hold the operation's results in that cycle.
    overflow : Out(1)
        Sticky: some narrowing or saturating addition saturated since the last ``clear`` (with
        ``pulses``, also a BACKWARD beyond ``batch`` images since the last APPLY, whose pairs
        are lost).
    clear : In(1)
    cls : Out(range(classes))
        The class of the last RUN (argmax of the logits, ties to the lowest index).
    converged : Out(1)
        Every implicit-Euler step of the last RUN converged (1 for explicit Euler).
    iterations : Out(16)
        Newton iterations of the last RUN, summed over its steps.

    Notes
    -----
    Latency of RUN: the copy of ``z_0`` from the image buffer (``C + 2`` cycles with
    ``C = ceil(m/lanes)``, after the last word of an image still arriving); per explicit step
    one chain (about ``m·C + T + 15`` cycles, the two products overlapping) and one combine
    (``C + 1``); implicit steps take one chain and combine per predictor, residual, Neumann
    term, and one combine per update; then the copy of ``z_N`` into C's inputs
    (``ceil(m/lanes_c) + 1``), C's forward product on its ``lanes_c`` multipliers and one
    cycle (``done`` after the class is registered).
    On the Fourier path a chain takes about
    ``2·CONV + 3·m`` cycles (``CONV``: :class:`~xbarode.hdl.fourier.FourierConv`'s latency; the
    two convolutions run one after the other, and A's result streams into B while it is read
    out). ``xbarode simulate`` reports the measured cycles.

    BACKWARD (``training``), the discrete adjoint (docs/architecture.md §1) on the stored
    trajectory: C's transposed product ``λ = Cᵀ ∂L/∂logits`` and C's gradient accumulation
    (running on while the steps go back); per step, from the last: A's forward product of the step's
    state recomputes ``u`` (the Heaviside mask; ``relu(u)`` is streamed into B's ``s``); for
    implicit Euler, ``neumann_terms`` transposed chains ``μ ← sat(λ + h·Aᵀ(D ⊙ Bᵀμ))``
    (B's forward product on gradients streaming into A's transposed one) and ``λ ← μ``; the
    chain ``g = D ⊙ Bᵀλ`` (for explicit Euler with ``λ ← sat(λ + h·Aᵀg)``); then A and B
    accumulate ``g zᵀ`` and ``relu(u) λᵀ`` at the same time. Per step about
    ``(3 + 2·neumann_terms)·(m·C) `` cycles for ``5 + 2·neumann_terms`` products of m² MACs.
    APPLY: the tiles' SGD steps at once; with the device's ``pulses``, first every pair kept
    by BACKWARD through the tiles' pulsed UPDATE (:class:`~xbarode.hdl.core_adjoint.
    AdjointController`'s latency, :mod:`~xbarode.hdl.core_pulses`).
    """

    @staticmethod
    def check_parameters(config: CoreConfig, *, weights=None) -> None:
        """The constructor's checks (:class:`~xbarode.hdl.checked.CheckedComponent`)."""
        if not isinstance(config, CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {type(config).__name__}")
        _check_device(config)
        # The tiles (or units) are built in elaborate; checked now, so that bad parameters
        # fail here, with the parts' own messages.
        for cls, kwargs in _part_parameters(config, weights).values():
            _check_part(cls, kwargs)

    def __init__(self, config: CoreConfig, *, weights=None):
        self._config = config
        f = config.formats()
        self._formats = f
        self._fourier = config.fourier()
        self._parts = _part_parameters(config, weights)
        self._built_in = weights is not None
        word = max(f.weight.width, f.state.width, f.act.width, f.grad.width)
        if self._fourier is not None:
            word = max(word, self._fourier["spectrum"].width)
        # READ_STATUS's words are 9 bits whatever the formats; READ_GRAD's, acc_width.
        out_word = max(word, STATUS_BITS, config.acc_width if config.training else 0)
        super().__init__(ControlSignature(CoreOp, word, out_word, side={
            "image": In(stream.Signature(signed(f.state.width))),
        }, results={
            "cls": Out(range(config.classes)),
            "converged": Out(1),
            "iterations": Out(16),
        }))

    @property
    def config(self) -> CoreConfig:
        """The configuration."""
        return self._config

    @property
    def weights_built_in(self) -> bool:
        """The tiles' memories start with the ``weights`` given (no LOAD_A … LOAD_D needed
        before RUN; the loads still replace them)."""
        return self._built_in

    @property
    def chunks(self) -> int:
        """``C = ceil(m / lanes)``: chunks of a state vector."""
        return -(-self._config.m // self._config.lanes)

    def _chain_engine(self, mod, A, B):
        """The chain engine on tiles A and B, or on the Fourier units A and B."""
        cfg, f = self._config, self._formats
        if self._fourier is None:
            mod.submodules.chain = chain = DirectChain(
                m=cfg.m, lanes=cfg.lanes, act_width=f.act.width,
                u_width=len(A.y_out.payload), s_width=len(B.s_in.payload),
                x_width=len(A.x_side_data[0]), r_width=len(B.y_side_data[0]))
            wiring.connect(mod, A.y_out, chain.a_y)
            mod.d.comb += [chain.b_done.eq(B.done), B.y_side_addr.eq(chain.b_y_addr)]
            mod.d.comb += [chain.b_y_data[k].eq(B.y_side_data[k]) for k in range(cfg.lanes)]
            # B's s_in and A's x side port are shared with the adjoint controller (_join).
        else:
            fr = self._fourier
            mod.submodules.chain = chain = FourierChain(
                m=cfg.m, lanes=cfg.lanes, state_format=f.state, act_format=f.act,
                data_format=fr["data"], h_shift=cfg.h_shift, rounding=cfg.rounding,
                lfsr_seed=cfg.lfsr_seed, unit_word=len(A.i.payload),
                unit_ops=BankOp if cfg.channels > 1 else FourierOp)
            # The units' i streams are shared with the host port (_host_port).
            for unit, name in ((A, "a"), (B, "b")):
                wiring.connect(mod, unit.o, getattr(chain, f"{name}_o"))
                mod.d.comb += getattr(chain, f"{name}_done").eq(unit.done)
        for unit, name in ((A, "a"), (B, "b")):
            with mod.If(getattr(chain, f"{name}_start")):
                mod.d.comb += [unit.op.eq(getattr(chain, f"{name}_op")), unit.start.eq(1)]
        return chain

    def _forward_controller(self, mod, chain, C):
        """The forward controller (RUN), joined to the chain engine and tile C."""
        cfg, f = self._config, self._formats
        r_width = len(chain.chain.r_data[0])
        mod.submodules.forward = fwd = ForwardController(
            m=cfg.m, lanes=cfg.lanes, steps=cfg.steps, classes=cfg.classes, method=cfg.method,
            neumann_terms=cfg.neumann_terms, max_iter=cfg.max_iter, tol=cfg.tol,
            state_width=f.state.width, act_width=f.act.width,
            x_width=len(chain.chain.x_data[0]), r_width=r_width,
            c_width=len(C.y_out.payload), lanes_c=cfg.lanes_c, features=cfg.features)
        wiring.connect(mod, fwd.chain, chain.chain)
        wiring.connect(mod, C.y_out, fwd.c_y)
        mod.d.comb += fwd.c_done.eq(C.done)
        with mod.If(fwd.c_start):
            mod.d.comb += [C.op.eq(fwd.c_op), C.start.eq(1)]
        # z_N (or with a pool its features) into C's inputs (nothing else writes them).
        writer = fwd
        if cfg.pool > 1:
            # Inference only (CoreConfig): the pool is the one writer of C's inputs.
            mod.submodules.pool = writer = PoolUnit(
                height=cfg.image[0], width=cfg.image[1], channels=cfg.channels,
                factor=cfg.pool, lanes=cfg.lanes, lanes_c=cfg.lanes_c,
                state_width=f.state.width, rounding=cfg.rounding,
                lfsr_seed=site_seed(cfg.lfsr_seed, POOL_SITE))
            mod.d.comb += [writer.start.eq(fwd.pool_start), fwd.pool_done.eq(writer.done)]
        mod.d.comb += C.x_side_addr.eq(writer.c_x_addr)
        for t in range(cfg.lanes_c):
            mod.d.comb += [C.x_side_data[t].eq(writer.c_x_data[t]),
                           C.x_side_en[t].eq(writer.c_x_en[t])]
        return fwd

    def _host_port(self, mod, A, B, C, chain):
        """The host port, on the core's streams and the tiles' (or units')."""
        cfg, f = self._config, self._formats
        fourier = self._fourier is not None
        mod.submodules.host = host = HostPort(
            m=cfg.m, lanes=cfg.lanes, steps=cfg.steps, classes=cfg.classes,
            word=len(self.i.payload), out_word=len(self.o.payload), state_width=f.state.width,
            act_width=f.act.width, grad_width=f.grad.width, fourier=fourier,
            channels=cfg.channels, training=cfg.training)
        wiring.connect(mod, wiring.flipped(self.i), host.i)
        wiring.connect(mod, host.o, wiring.flipped(self.o))
        mod.d.comb += host.op.eq(self.op)
        for k, unit in enumerate((A, B, C)):
            mod.d.comb += host.tile_done[k].eq(unit.done)
            # The tiles' i streams are the host port's; the Fourier units' are also the chain
            # engine's. Each drives valid and payload only while it runs (0 otherwise), and
            # never at the same time as the other: their OR is the one that runs.
            valid, payload = host.tile_i[k].valid, host.tile_i[k].payload
            if fourier and unit is not C:
                other = chain.a_i if unit is A else chain.b_i
                valid, payload = valid | other.valid, payload | other.payload
                mod.d.comb += other.ready.eq(unit.i.ready)
            mod.d.comb += [unit.i.valid.eq(valid), unit.i.payload.eq(payload),
                           host.tile_i[k].ready.eq(unit.i.ready)]
            if unit is C or not fourier:   # the Fourier units' words are not read out
                mod.d.comb += [host.tile_o[k].valid.eq(unit.o.valid),
                               host.tile_o[k].payload.eq(unit.o.payload),
                               unit.o.ready.eq(host.tile_o[k].ready)]
            with mod.If(host.tile_start[k]):
                mod.d.comb += [unit.op.eq(host.tile_op), unit.start.eq(1)]
        return host

    def _adjoint_controller(self, mod, A, B, C):
        """The adjoint controller (training), joined to the three tiles."""
        cfg, f = self._config, self._formats
        widths = {"a_s": len(A.s_in.payload), "b_s": len(B.s_in.payload),
                  "a_y": len(A.y_out.payload), "b_y": len(B.y_out.payload),
                  "a_x": len(A.x_side_data[0]), "b_x": len(B.x_side_data[0]),
                  "a_r": len(A.y_side_data[0]), "c_r": len(C.y_side_data[0])}
        device = _tile_device(cfg)
        pulses = None
        if device is not None and device.pulses is not None:
            widths |= {"c_s": len(C.s_in.payload), "c_x": len(C.x_side_data[0])}
            pulses = {"batch": cfg.batch, "classes": cfg.classes,
                      "widths": {"a": (f.grad.width, f.state.width),
                                 "b": (f.act.width, f.grad.width),
                                 "c": (f.grad.width, f.state.width)}}
        mod.submodules.adjoint = adj = AdjointController(
            m=cfg.m, lanes=cfg.lanes, steps=cfg.steps, method=cfg.method,
            neumann_terms=cfg.neumann_terms, state_width=f.state.width,
            grad_width=f.grad.width, widths=widths, lanes_c=cfg.lanes_c, pulses=pulses)
        wiring.connect(mod, adj.a_s, A.s_in)
        mod.d.comb += [adj.a_y.valid.eq(A.y_out.valid), adj.a_y.payload.eq(A.y_out.payload),
                       adj.b_y.valid.eq(B.y_out.valid), adj.b_y.payload.eq(B.y_out.payload),
                       A.s_restart.eq(adj.a_s_restart), B.s_restart.eq(adj.b_s_restart),
                       B.x_side_addr.eq(adj.b_x_addr), B.x_side_en.eq(adj.b_x_en),
                       adj.c_busy.eq(C.busy)]
        for k in range(cfg.lanes):
            mod.d.comb += [B.x_side_data[k].eq(adj.b_x_data[k]),
                           adj.a_r_data[k].eq(A.y_side_data[k])]
        for t in range(cfg.lanes_c):
            mod.d.comb += adj.c_r_data[t].eq(C.y_side_data[t])
        for tile, name in ((A, "a"), (B, "b"), (C, "c")):
            mod.d.comb += getattr(adj, f"{name}_done").eq(tile.done)
            with mod.If(getattr(adj, f"{name}_start")):
                mod.d.comb += [tile.op.eq(getattr(adj, f"{name}_op")), tile.start.eq(1)]
        if pulses is not None:
            self._join_pairs_c(mod, adj, C)
        return adj

    def _join_pairs_c(self, mod, adj, C):
        """Pulses: C's pair of each image into the adjoint controller's store (``∂L/∂logits``
        as LOAD_GRAD writes C's ``s``, ``z_N`` as RUN writes C's ``x``), and APPLY's walk into
        C's ``s_in`` and ``x`` side port (the forward controller's, idle then)."""
        lanes_c = self._config.lanes_c
        fwd = mod.submodules.forward
        grad_in, load_s = Signal(name="grad_in"), Signal(name="grad_load")
        mod.d.comb += load_s.eq(C.start & (C.op == TileOp.LOAD_S))
        with mod.If(load_s):
            mod.d.sync += grad_in.eq(1)
        with mod.Elif(C.done):
            mod.d.sync += grad_in.eq(0)
        mod.d.comb += [adj.c_cap_s_restart.eq(load_s),
                       adj.c_cap_s_valid.eq(grad_in & C.i.valid & C.i.ready),
                       adj.c_cap_s_data.eq(C.i.payload),
                       adj.c_cap_x_addr.eq(fwd.c_x_addr),
                       adj.c_cap_x_en.eq(Cat(*(fwd.c_x_en[t] for t in range(lanes_c)))),
                       C.s_in.valid.eq(adj.c_s.valid), C.s_in.payload.eq(adj.c_s.payload),
                       C.s_restart.eq(adj.c_s_restart)]
        mod.d.comb += [adj.c_cap_x_data[t].eq(fwd.c_x_data[t]) for t in range(lanes_c)]
        with mod.If(adj.c_x_en.any()):
            mod.d.comb += C.x_side_addr.eq(adj.c_x_addr)
        for t in range(lanes_c):
            with mod.If(adj.c_x_en[t]):
                mod.d.comb += [C.x_side_data[t].eq(adj.c_x_data[t]), C.x_side_en[t].eq(1)]

    def elaborate(self, platform):
        mod = Module()
        cfg, f = self._config, self._formats
        lanes, chunks, steps = cfg.lanes, self.chunks, cfg.steps
        sw = f.state.width
        A, B, C = (cls(**kwargs) for cls, kwargs in self._parts.values())
        fourier = self._fourier is not None
        if fourier:
            mod.submodules.fourier_a, mod.submodules.fourier_b = A, B
        else:
            mod.submodules.tile_a, mod.submodules.tile_b = A, B
        mod.submodules.tile_c = C

        # Banked vectors (hdl/core_parts.py): a whole chunk moves per cycle.
        def banks(name, depth, width=sw):
            mod.submodules[name] = bank = VectorBanks(lanes=lanes, depth=depth, width=width)
            return bank

        z_b, w_b, g_b, d_b = (banks(name, chunks) for name in ("z", "w", "g", "dl"))
        t_b = banks("traj", (steps + 1) * chunks)
        lam_b = banks("lam", chunks, f.grad.width) if cfg.training else None
        mod.submodules.image = img = ImageBuffer(m=cfg.m, lanes=lanes, width=sw,
                                                   channels=cfg.channels)
        wiring.connect(mod, wiring.flipped(self.image), img.image)
        vec_addr = Signal(range(max(chunks + 1, -(-cfg.m // cfg.lanes_c) + 1, 2)))
        traj_addr = Signal(range((steps + 2) * chunks + 1))
        for bank in (z_b, w_b, g_b, d_b, lam_b, img):
            if bank is not None:
                mod.d.comb += bank.rd_addr.eq(vec_addr)
        mod.d.comb += t_b.rd_addr.eq(traj_addr)
        for unit in (A, B, C):
            mod.d.comb += unit.clear.eq(self.clear)
        for tile in (A, C) if not fourier else (C,):
            mod.d.comb += tile.y_side_addr.eq(vec_addr)

        def start_tile(tile, op):
            mod.d.comb += [tile.op.eq(op), tile.start.eq(1)]

        def write_lane(bank, k, addr, value):
            mod.d.comb += [bank.wr_addr[k].eq(addr), bank.wr_data[k].eq(value),
                           bank.wr_en[k].eq(1)]

        # Status.
        core_ovf = Signal()
        mod.d.comb += self.overflow.eq(core_ovf | A.overflow | B.overflow | C.overflow)
        ovf_set = Signal()
        with mod.If(self.clear):
            mod.d.sync += core_ovf.eq(0)
        with mod.Elif(ovf_set):
            mod.d.sync += core_ovf.eq(1)

        chain = self._chain_engine(mod, A, B)
        fwd = self._forward_controller(mod, chain, C)
        host = self._host_port(mod, A, B, C, chain)
        adj = self._adjoint_controller(mod, A, B, C) if cfg.training else None
        mod.d.comb += [self.cls.eq(fwd.cls), self.converged.eq(fwd.converged),
                       self.iterations.eq(fwd.iterations)]
        mod.d.comb += [host.logits[k].eq(fwd.logits[k]) for k in range(cfg.classes)]
        mod.d.comb += [host.status[k].eq(fwd.status[k]) for k in range(steps)]
        # Each part drives its addresses, enables and words only while it runs (0 otherwise)
        # and never while another runs: the OR of them is the one that runs.
        vec_addrs, traj_addrs, sat = [fwd.vec_addr], [host.traj_addr], [fwd.saturated]
        if cfg.pool > 1:
            pool = mod.submodules.pool
            vec_addrs.append(pool.rd_addr)
            sat.append(pool.saturated)
            mod.d.comb += [pool.rd_data[k].eq(z_b.rd_data[k]) for k in range(lanes)]
        if cfg.training:
            vec_addrs += [host.lam_addr, adj.vec_addr]
            traj_addrs.append(adj.traj_addr)
            sat.append(adj.saturated)
        mod.d.comb += [vec_addr.eq(_any(vec_addrs)), traj_addr.eq(_any(traj_addrs)),
                       ovf_set.eq(_any(sat)), img.wr_addr.eq(host.image_addr),
                       img.wr_data.eq(host.image_data), fwd.image_wait.eq(img.arriving)]
        for k in range(lanes):
            # The forward controller's writes and reads of the state banks.
            mod.d.comb += [fwd.z_data[k].eq(z_b.rd_data[k]), fwd.w_data[k].eq(w_b.rd_data[k]),
                           fwd.g_data[k].eq(g_b.rd_data[k]), fwd.d_data[k].eq(d_b.rd_data[k]),
                           fwd.i_data[k].eq(img.rd_data[k])]
            for bank, en in ((z_b, fwd.z_en), (w_b, fwd.w_en), (g_b, fwd.g_en),
                             (d_b, fwd.d_en)):
                with mod.If(en[k]):
                    write_lane(bank, k, fwd.wr_addr, fwd.wr_data[k])
            with mod.If(fwd.t_en[k]):
                write_lane(t_b, k, fwd.t_addr, fwd.wr_data[k])
            # LOAD_IMAGE's z_0 (from the host port) into the image buffer; RUN copies it.
            mod.d.comb += img.wr_en[k].eq(host.image_en[k])
            mod.d.comb += host.traj_data[k].eq(t_b.rd_data[k])
            if cfg.training:
                mod.d.comb += [host.lam_data[k].eq(lam_b.rd_data[k]),
                               adj.lam_data[k].eq(lam_b.rd_data[k]),
                               adj.traj_data[k].eq(t_b.rd_data[k])]
                with mod.If(adj.lam_en[k]):
                    write_lane(lam_b, k, adj.lam_addr, adj.lam_wdata[k])
        if not fourier:
            self._join(mod, A, B, chain, adj)
        self._dispatch(mod, host, fwd, adj, img)
        return mod

    def _join(self, mod, A, B, chain, adj):
        """Tile A's x side port and B's s_in: the chain engine's and the adjoint
        controller's."""
        a_x = [(chain.a_x_addr, chain.a_x_en, chain.a_x_data)]
        b_s = [chain.b_s]
        if adj is not None:
            a_x.append((adj.a_x_addr, adj.a_x_en, adj.a_x_data))
            b_s.append(adj.b_s)
        mod.d.comb += [A.x_side_addr.eq(_any(addr for addr, _, _ in a_x)),
                       A.x_side_en.eq(_any(en for _, en, _ in a_x)),
                       B.s_in.valid.eq(_any(s.valid for s in b_s)),
                       B.s_in.payload.eq(_any(s.payload for s in b_s))]
        for k in range(self._config.lanes):
            mod.d.comb += A.x_side_data[k].eq(_any(data[k] for _, _, data in a_x))

    def _dispatch(self, mod, host, fwd, adj, img):
        """The core's own controller: each operation to the part that carries it out."""
        cfg = self._config
        host_ops = HOST_OPS + (HOST_TRAINING_OPS if cfg.training else ())
        # LOAD_IMAGE writes the image buffer: the image stream waits, and a partly arrived
        # image is forgotten.
        loading = Signal()
        mod.d.comb += [self.busy.eq(1), img.lock.eq(fwd.image_lock | loading)]
        with mod.If(host.done):
            mod.d.sync += loading.eq(0)
        with mod.FSM():
            with mod.State("IDLE"):
                mod.d.comb += self.busy.eq(0)
                with mod.If(self.start):
                    with mod.Switch(self.op):
                        with mod.Case(CoreOp.LOAD_IMAGE):
                            mod.d.comb += [host.start.eq(1), img.discard.eq(1)]
                            mod.d.sync += loading.eq(1)
                            mod.next = "HOST"
                        with mod.Case(*(op for op in host_ops if op != CoreOp.LOAD_IMAGE)):
                            mod.d.comb += host.start.eq(1)
                            mod.next = "HOST"
                        with mod.Case(CoreOp.RUN):
                            mod.d.comb += fwd.start.eq(1)
                            mod.next = "RUN"
                        if cfg.training:
                            with mod.Case(CoreOp.BACKWARD):
                                mod.d.comb += adj.backward.eq(1)
                                mod.next = "ADJOINT"
                            with mod.Case(CoreOp.APPLY):
                                mod.d.comb += adj.apply.eq(1)
                                mod.next = "ADJOINT"
                        with mod.Default():
                            mod.next = "NOTHING"
            with mod.State("NOTHING"):
                mod.d.comb += self.done.eq(1)
                mod.next = "IDLE"
            parts = [("HOST", host), ("RUN", fwd)] + ([("ADJOINT", adj)] if adj else [])
            for name, part in parts:
                with mod.State(name):
                    with mod.If(part.done):
                        mod.d.comb += self.done.eq(1)
                        mod.next = "IDLE"
