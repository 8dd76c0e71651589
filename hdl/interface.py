"""The host interface of each generated unit, read from the hardware: ports, op codes, words.

A host drives a unit through its Verilog ports. :func:`host_interface` describes them for one
built component — the tile, the 2-D DFT, the Hadamard unit, the Fourier convolution, the core —
as a :class:`HostInterface`, an ``amaranth.lib.meta.Annotation`` with a JSON schema: every
port with its role (``stream``, ``control``, ``status``, ``clock``, ``reset``) and group, the
operation encoding (the values of the component's own ``op`` enum), per operation the words
in and out with their count, format and order, and the handshake and reset rules
(``docs/interface.md`` states them in prose; ``tests/test_interface.py`` checks them by
simulation). :func:`metadata` is Amaranth's ``component.metadata.as_json()`` with this
annotation added, which ``xbarode generate`` writes into every manifest.

The counts and formats come from the component's parameters (its formats, shapes, options),
never from a table kept beside it; the op codes are the members of the enum that is the shape
of the component's ``op`` port.
"""

from __future__ import annotations

from typing import ClassVar

from amaranth.hdl import Shape, Value, signed
from amaranth.lib import enum, meta, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["HANDSHAKE", "ControlSignature", "HostInterface", "host_interface", "metadata",
           "word_format"]

#: The rules every unit with ``op``/``start``/``busy``/``done`` follows (checked by
#: ``tests/test_interface.py`` on the Amaranth simulator and by ``tests/test_outside_host.py``
#: on the Verilog).
HANDSHAKE = (
    "A stream word moves at a rising clock edge where valid and ready are both high; the "
    "sender holds valid and payload until then.",
    "start is sampled only at an edge where busy is low; op is sampled at that same edge only "
    "(it need not be held); start while busy is ignored (no second done).",
    "busy is high from the cycle after start is accepted to the cycle of done inclusive.",
    "done is high for exactly one cycle per accepted start; for an operation that streams "
    "words in or out, done is high in the cycle the last word moves (valid and ready high).",
    "An op code the unit does not have ends at once: done in the cycle after start, nothing "
    "changes.",
    "clear lowers overflow at the next edge; a one-cycle pulse is enough (holding it keeps "
    "overflow low); it may come at any time, and a saturation in a cycle where clear is high "
    "is not flagged.",
)

_RESET = {
    "port": "rst",
    "active": "high",
    "synchronous": True,
    "cycles": 1,
    "resets": "every register: the controller returns to idle, counters, status outputs, "
              "logits and every LFSR (re-seeded with its seed)",
    "keeps": "every memory: the weights (a RUN after reset needs no reload), and the banks "
             "of inputs, states, trajectory and results as the last operation left them",
    "power_up": "every memory is zero and every register at its reset value",
    "during_an_operation": "ends it (no done unless in the reset cycle); a load has written "
                           "the words that moved before the reset cycle and no other; the "
                           "memories a compute operation was writing hold an unspecified mix "
                           "of old and new words; every other memory is kept",
}


class ControlSignature(wiring.Signature):
    """The port set of every unit driven by an operation code: the tile, the 2-D DFT, the
    Fourier convolution and the core (the Hadamard unit runs free and has its own).

    Members, in this order: ``side`` (if given), then ``i``, ``o``, ``op``, ``start``,
    ``busy``, ``done``, ``overflow``, ``clear``, then ``results`` (if given). The order is the
    order of the Verilog ports and of the manifest's; the names are the Verilog names
    (docs/interface.md).

    Parameters
    ----------
    op : enum.Enum subclass
        The unit's operations (an Amaranth enum with a shape); the shape of ``op``.
    word : int
        Width of the words in, ``>= 1``.
    out_word : int, optional
        Width of the words out, ``>= 1``; default ``word``.
    side : dict, optional
        Further members before the control set (the tile's side ports).
    results : dict, optional
        Further members after it (the core's ``cls``, ``converged``, ``iterations``).

    Attributes
    ----------
    i : In(stream.Signature(signed(word)))
        Words in (LOAD_* operations).
    o : Out(stream.Signature(signed(out_word)))
        Words out (READ_* operations).
    op : In(op)
        The operation, sampled at the edge where ``start`` is accepted.
    start : In(1)
        Starts ``op``; a pulse while ``busy`` is low.
    busy, done : Out(1)
        An operation runs; one-cycle pulse when it ends.
    overflow : Out(1)
        Sticky saturation flag, lowered by ``clear``.
    clear : In(1)
    """

    def __init__(self, op, word: int, out_word: int | None = None, *,
                 side: dict | None = None, results: dict | None = None):
        if not (isinstance(op, type) and issubclass(op, enum.Enum)
                and isinstance(op.as_shape(), Shape)):
            raise TypeError(f"op must be an enum with a shape, not {op!r}")
        out_word = word if out_word is None else out_word
        for name, value in (("word", word), ("out_word", out_word)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, not {value}")
        self._op, self._word, self._out_word = op, word, out_word
        super().__init__({
            **(side or {}),
            "i": In(stream.Signature(signed(word))),
            "o": Out(stream.Signature(signed(out_word))),
            "op": In(op),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "overflow": Out(1),
            "clear": In(1),
            **(results or {}),
        })

    @property
    def op(self):
        """The enum of the operations."""
        return self._op

    @property
    def word(self) -> int:
        """Width of the words in."""
        return self._word

    @property
    def out_word(self) -> int:
        """Width of the words out."""
        return self._out_word


def word_format(fmt) -> dict:
    """A :class:`~xbarode.model.fixed.Format` as JSON: ``width``, ``frac``, ``signed`` and
    its Q notation (``Q2.14`` for 16 bits with 14 fractional)."""
    return {"width": fmt.width, "frac": fmt.frac, "signed": True,
            "q": f"Q{fmt.width - fmt.frac}.{fmt.frac}"}


def _fixed(width, frac):
    """A format by width and fractional bits (also wider than a data word: accumulators)."""
    return {"width": width, "frac": frac, "signed": True, "q": f"Q{width - frac}.{frac}"}


def _raw(width):
    return {"width": width, "frac": 0, "signed": False, "q": f"U{width}.0"}


def _words(name, count, fmt, order):
    return {"name": name, "count": int(count), "format": fmt, "order": order}


class HostInterface(meta.Annotation):
    """The host interface of one unit (see the module docstring); ``as_json()`` is the
    description, validated against :attr:`schema`."""

    _segment: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "name": {"type": "string"}, "count": {"type": "integer", "minimum": 0},
            "format": {"type": "object",
                       "properties": {"width": {"type": "integer"},
                                      "frac": {"type": "integer"},
                                      "signed": {"type": "boolean"},
                                      "q": {"type": "string"}},
                       "required": ["width", "frac", "signed"]},
            "order": {"type": "string"},
        },
        "required": ["name", "count", "format", "order"],
    }
    schema: ClassVar[dict] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://xbarode.invalid/schema/host-interface/1.json",
        "type": "object",
        "properties": {
            "unit": {"type": "string"},
            "ports": {"type": "object", "additionalProperties": {
                "type": "object",
                "properties": {"role": {"enum": ["stream", "control", "status", "clock",
                                                 "reset"]},
                               "group": {"type": "string"},
                               "signal": {"type": "string"},
                               "meaning": {"type": "string"}},
                "required": ["role", "group", "meaning"]}},
            "streams": {"type": "object", "additionalProperties": {
                "type": "object",
                "properties": {"direction": {"enum": ["in", "out"]},
                               "valid": {"type": ["string", "null"]},
                               "ready": {"type": ["string", "null"]},
                               "payload": {"type": "string"},
                               "width": {"type": "integer"},
                               "carries": {"type": "string"}},
                "required": ["direction", "valid", "ready", "payload", "width",
                             "carries"]}},
            "op_encoding": {"type": "object",
                            "additionalProperties": {"type": "integer", "minimum": 0}},
            "op_width": {"type": "integer"},
            "operations": {"type": "array", "items": {
                "type": "object",
                "properties": {"name": {"type": "string"},
                               "code": {"type": ["integer", "null"]},
                               "in": {"type": "array", "items": _segment},
                               "out": {"type": "array", "items": _segment},
                               "in_stream": {"type": ["string", "null"]},
                               "out_stream": {"type": ["string", "null"]},
                               "does": {"type": "string"}},
                "required": ["name", "code", "in", "out", "in_stream", "out_stream",
                             "does"]}},
            "handshake": {"type": "array", "items": {"type": "string"}},
            "reset": {"type": "object"},
            "notes": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["unit", "ports", "streams", "op_encoding", "operations", "handshake",
                     "reset"],
    }

    def __init__(self, origin, description: dict):
        self._origin = origin
        self._description = description

    @property
    def origin(self):
        """The component described."""
        return self._origin

    def as_json(self) -> dict:
        """The description (plain JSON data)."""
        return self._description


# --- ports ------------------------------------------------------------------------------------

_MEANINGS = {
    "op": "the operation started by start",
    "start": "starts op (pulse one cycle while busy is low)",
    "clear": "lowers overflow (a one-cycle pulse is enough)",
    "restart": "resets the element and spectrum-load counters to 0",
    "busy": "an operation is running",
    "done": "one-cycle pulse when an operation ends",
    "overflow": "sticky: some narrowing or saturating addition saturated (a core training "
                "with pulses: or a BACKWARD found its pair stores full) since the last clear "
                "(or reset)",
    "cls": "the class of the last RUN (argmax of the logits, ties to the lowest index); "
           "valid in the cycle RUN's done pulses and until the next RUN",
    "converged": "every implicit-Euler step of the last RUN converged (1 for explicit Euler)",
    "iterations": "Newton iterations of the last RUN, summed over its steps",
}


def _ports_and_streams(component, stream_meaning):
    """Roles and groups of every signature member, and the streams, by Verilog name."""
    ports, streams = {}, {}
    for name, member in component.signature.members.items():
        sig = None
        if member.is_signature:
            sig = member.signature.flip() if member.flow == wiring.In else member.signature
        if isinstance(sig, stream.Signature):
            value = getattr(component, name)
            direction = "in" if member.flow == wiring.In else "out"
            entry = {"direction": direction,
                     "valid": None if sig.always_valid else f"{name}__valid",
                     "ready": None if sig.always_ready else f"{name}__ready",
                     "payload": f"{name}__payload",
                     "width": len(Value.cast(value.payload)),
                     "carries": stream_meaning.get(name, "")}
            streams[name] = entry
            sender = "host" if direction == "in" else "unit"
            for signal in ("valid", "ready", "payload"):
                driver = sender if signal != "ready" else {"host": "unit",
                                                           "unit": "host"}[sender]
                ports[f"{name}__{signal}"] = {
                    "role": "stream", "group": name, "signal": signal,
                    "meaning": f"{signal} of stream {name} ({direction}; driven by the "
                               f"{driver}): {stream_meaning.get(name, '')}"}
        elif member.is_port:
            role = "control" if member.flow == wiring.In else "status"
            ports[name] = {"role": role, "group": role,
                           "meaning": _MEANINGS.get(name, "")}
        else:
            raise TypeError(f"member {name} is neither a stream nor a port")
    ports["clk"] = {"role": "clock", "group": "clock", "meaning": "rising-edge clock"}
    ports["rst"] = {"role": "reset", "group": "reset",
                    "meaning": "synchronous active-high reset (one cycle is enough)"}
    return ports, streams


def _encoding(component) -> tuple[dict, int]:
    enum_type = component.signature.members["op"].shape
    return {member.name: member.value for member in enum_type}, enum_type.as_shape().width


# --- the units ----------------------------------------------------------------------------------

def _tile(tile) -> dict:
    rows, cols = tile.rows, tile.cols
    wf, xf, yf = (word_format(f) for f in (tile.weight_format, tile.input_format,
                                           tile.output_format))
    row_major = "row-major: W[i][j] is word i·cols + j"
    ops = {
        "LOAD_W": ([_words("W", rows * cols, wf, row_major)], [], "W <- the words"),
        "READ_W": ([], [_words("W", rows * cols, wf, row_major)]
                   + ([_words("bias", rows, wf, "bias[i] is word i")] if tile.bias else []),
                   "stream out the weights (then the bias)"),
        "LOAD_X": ([_words("x", cols, xf, "x[j] is word j")], [], "x <- the words"),
        "LOAD_S": ([_words("s", rows, xf, "s[i] is word i")], [], "s <- the words"),
        "FORWARD": ([], [], f"y <- narrow(W x) ({rows} words, one rounding per row)"),
        "TRANSPOSED": ([], [], f"y <- narrow(Wᵀ s) ({cols} words)"),
        "UPDATE": ([], [], f"W <- sat(W + narrow(s xᵀ · 2^-{tile.eta_shift}))"),
        "READ_Y": ([], [_words("y", rows, yf, "after FORWARD: y[i] is word i; after "
                               f"TRANSPOSED: {cols} words, y[j] is word j")],
                   "stream out the last FORWARD or TRANSPOSED result"),
    }
    if tile.pulse_geometry is not None:
        ops["UPDATE"] = ([], [], f"W <- W moved by {tile.pulse_geometry.pulses}-slot "
                                 f"stochastic pulse trains of s and x, expected step "
                                 f"s xᵀ · 2^-{tile.eta_shift} (docs/device.md)")
    if not tile.writable:   # a read-only table: its weights are its initial contents
        del ops["LOAD_W"], ops["UPDATE"]
    if tile.bias:
        ops["LOAD_BIAS"] = ([_words("bias", rows, wf, "bias[i] is word i")], [],
                            "bias <- the words; FORWARD adds bias[i] << input frac to row "
                            "i's exact sum, before the one rounding")
    if tile.side_ports:
        ops["TRANSPOSED_STREAM"] = ([], [], "TRANSPOSED with s arriving on s_in")
    if tile.grad_format is not None:
        gf = tile.grad_format
        acc = _fixed(tile.acc_width, gf.frac + tile.input_format.frac)
        for name in ("FORWARD_G", "TRANSPOSED_G", "TRANSPOSED_STREAM_G"):
            ops[name] = ([], [], "the product on gradient words")
        ops["ACCUMULATE"] = ([], [], "G <- G + s xᵀ exactly")
        ops["APPLY"] = ([], [], "one SGD step from G; G <- 0")
        ops["READ_G"] = ([], [_words("G", rows * cols, acc, "row-major")]
                         + ([_words("g_d", rows, _fixed(tile.acc_width, gf.frac),
                                    "g_d[i] is word i")] if tile.bias else []),
                         "stream out the gradient sums")
    return ops


def _fourier(unit, conv: bool) -> dict:
    h, w = unit.height, unit.width
    df = word_format(unit.data_format)
    row_major = "row-major: element (r, c) is word r·W + c"
    pairs = "row-major, (re, im) per element: re of (r, c) is word 2·(r·W + c), im the next"
    ops = {
        "LOAD_REAL": ([_words("real", h * w, df, row_major)], [],
                      "buffer <- the words; imaginary parts <- 0"),
        "LOAD": ([_words("complex", 2 * h * w, df, pairs)], [], "buffer <- the words"),
        "DFT": ([], [], "2-D DFT of the buffer in place (row pass, then column pass)"),
        "IDFT": ([], [], "inverse 2-D DFT in place (column pass, then row pass)"),
        "READ_REAL": ([], [_words("real", h * w, df, row_major)],
                      "stream out the real parts"),
        "READ": ([], [_words("complex", 2 * h * w, df, pairs)], "stream out the buffer"),
    }
    if conv:
        sf = word_format(unit.spectrum_format)
        ops["LOAD_SPECTRUM"] = (
            [_words("spectrum", 2 * h * w, sf, "column by column, (re, im) per element: re "
                    "of (r, c) is word 2·(c·H + r), im the next")], [],
            "the kernel's spectrum (xbarode.model.fixed_ops.spectrum_words)")
        ops["HADAMARD"] = ([], [], "buffer <- buffer ⊙ spectrum, in place")
        ops["CONV"] = ([], [], "DFT, HADAMARD, IDFT: the circular convolution")
    return ops


def _bank(bank) -> dict:
    h, w, ci, co = bank.height, bank.width, bank.channels_in, bank.channels_out
    df, sf = word_format(bank.data_format), word_format(bank.spectrum_format)
    channels = "channel by channel, each row-major: element (r, c) of channel k is word " \
               "(k·H + r)·W + c"
    return {
        "LOAD_SPECTRUM": ([_words("spectrum", 2 * co * ci * h * w, sf,
                                  "frequency by frequency column-major (c outer, r inner), "
                                  "each c_out×c_in matrix row-major, (re, im) per entry")], [],
                          "the kernels' spectra (xbarode.model.fixed_ops.spectrum_stream of "
                          "spectrum_words of the bank)"),
        "LOAD_REAL": ([_words("real", ci * h * w, df, channels)], [],
                      "the c_in input channels; the next CONV is the forward product"),
        "LOAD_REAL_T": ([_words("real", co * h * w, df, channels)], [],
                        "the c_out input channels; the next CONV is the adjoint product"),
        "CONV": ([], [], "(K z)_o = Σ_i K[o, i] ⊛ z_i, or after LOAD_REAL_T (Kᵀ y)_i = "
                         "Σ_o K[o, i] ⋆ y_o (circular correlation)"),
        "READ_REAL": ([], [_words("real", co * h * w, df, channels)],
                      "the forward product's c_out channels"),
        "READ_REAL_T": ([], [_words("real", ci * h * w, df, channels)],
                        "the adjoint product's c_in channels"),
    }


def _core(core) -> dict:
    cfg = core.config
    f = cfg.formats()
    m, classes, steps = cfg.m, cfg.classes, cfg.steps
    wf, sf, af, gf = (word_format(x) for x in (f.weight, f.state, f.act, f.grad))
    a_rm = "row-major: A[i][j] is word i·m + j"
    bt_rm = ("row-major over Bᵀ: word i·m + j is B[j][i] (B column by column; the host "
             "transposes B as stored in a weights file)")
    n = cfg.features
    c_rm = "row-major: C[k][j] is word k·n + j" + (
        f" (n = {n} features: the {cfg.pool}x{cfg.pool} averages of z_N, channel by channel, "
        f"each pooled image row-major)" if cfg.pool > 1 else " (n = m)")
    state = ("channel by channel, each row-major: pixel (r, c) of channel k is word "
             "(k·H + r)·W + c") if cfg.channels > 1 else "row-major: pixel (r, c) is word r·W + c"
    fr = cfg.fourier()
    if fr is None:
        a_words, b_words = _words("A", m * m, wf, a_rm), _words("Bt", m * m, wf, bt_rm)
        weights = [a_words, b_words]
    elif cfg.channels > 1:
        h, w, c = *cfg.image, cfg.channels
        spec = ("A's c×c bank's spectra (xbarode.model.fixed_ops.spectrum_stream of "
                "spectrum_words): frequency by frequency column-major (c outer, r inner), each "
                "c×c matrix row-major (output channel outer), (re, im) per entry")
        a_words = _words("A", 2 * c * c * h * w, word_format(fr["spectrum"]), spec)
        b_words = _words("B", 2 * c * c * h * w, word_format(fr["spectrum"]),
                         spec.replace("A's", "B's"))
        weights = []
    else:
        h, w = cfg.image
        spec = ("A's kernel spectrum (xbarode.model.fixed_ops.spectrum_words), column by "
                "column, (re, im) per element: re of (r, c) is word 2·(c·H + r), im the next")
        a_words = _words("A", 2 * h * w, word_format(fr["spectrum"]), spec)
        b_words = _words("B", 2 * h * w, word_format(fr["spectrum"]),
                         spec.replace("A's", "B's"))
        weights = []
    c_words, d_words = _words("C", classes * n, wf, c_rm), _words("d", classes, wf,
                                                                  "d[k] is word k")
    ops = {
        "LOAD_A": ([a_words], [], "A <- the words"),
        "LOAD_B": ([b_words], [], "Bᵀ <- the words" if fr is None else "B's spectrum"),
        "LOAD_C": ([c_words], [], "C <- the words"),
        "LOAD_D": ([d_words], [], "d <- the words; logits = narrow(C·z + (d << state frac)): "
                   "d enters at the product's binary point, before the one rounding"),
        "LOAD_IMAGE": ([_words("z0", cfg.pixels, sf, "row-major pixels: z0[j] is word j")],
                       [], "z_0 <- the words" if cfg.channels == 1 else
                       f"channel 0 of z_0 <- the words; channels 1 … {cfg.channels - 1} <- 0"),
        "RUN": ([], [], f"integrate {steps} steps ({cfg.method}), then logits and cls; "
                "done in the cycle cls, converged and iterations are valid"),
        "READ_LOGITS": ([], [_words("logits", classes, af, "logit k is word k")],
                        "stream out the logits of the last RUN"),
        "READ_STATE": ([], [_words("zN", m, sf, f"z_N[j] is word j; {state}")],
                       "stream out the final state of the last RUN"),
        "READ_STATUS": ([], [_words("status", steps, _raw(9), "step n is word n")],
                        "per step: Newton iterations (bits 0-7), converged (bit 8); explicit "
                        "Euler steps read 0x100"),
        "READ_TRAJECTORY": ([], [_words("trajectory", (steps + 1) * m, sf,
                                        "z_n[j] is word n·m + j, n = 0 … steps")],
                            "stream out z_0 … z_N of the last RUN"),
        "READ_WEIGHTS": ([], [*weights, c_words, d_words], "stream out the weights"),
    }
    if cfg.training:
        acc = cfg.acc_width
        ops["LOAD_GRAD"] = ([_words("dL_dlogits", classes, gf, "word k is ∂L/∂logit_k")], [],
                            "the host's softmax minus one-hot")
        ops["BACKWARD"] = ([], [], "the discrete adjoint over the stored trajectory; adds "
                           "this image's gradients to the sums")
        ops["APPLY"] = ([], [], "one SGD step from the gradient sums, which are cleared")
        ops["READ_GRAD"] = ([], [
            _words("G_A", m * m, _fixed(acc, f.grad.frac + f.state.frac), a_rm),
            _words("G_Bt", m * m, _fixed(acc, f.grad.frac + f.act.frac), "row-major over Bᵀ"),
            _words("G_C", classes * m, _fixed(acc, f.grad.frac + f.state.frac), c_rm),
            _words("G_d", classes, _fixed(acc, f.grad.frac), "word k"),
            _words("dL_dz0", m, gf, "word j")], "stream out the gradient sums, then ∂L/∂z_0")
    return ops


def host_interface(component) -> HostInterface:
    """The :class:`HostInterface` of a tile, DFT, Hadamard, channel-mixing,
    Fourier-convolution, Fourier-bank or core unit.

    Raises
    ------
    TypeError
        For a component this module does not describe.
    """
    from .channel_mix import ChannelMixUnit
    from .core import Core
    from .fourier import Dft2d, FourierConv
    from .fourier_bank import FourierBank
    from .hadamard import HadamardUnit
    from .tile import CrossbarTile

    notes = []
    if isinstance(component, Core):
        kind, ops = "core", _core(component)
        cfg = component.config
        meanings = {"i": "the words of LOAD_*", "o": "the words of READ_*",
                    "image": f"images at any time, also while an operation runs: "
                             f"{cfg.pixels} state words (H·W) each, in LOAD_IMAGE's order, "
                             f"into the image buffer RUN starts from (no operation's words)"}
        wq = word_format(cfg.formats().weight)["q"]
        notes = [
            "Words narrower than the stream are sign-extended on o; on i the unit reads the "
            "low bits of the operation's format.",
            f"Weights files (xbarode train) hold floats on the {wq} grid of the weight format "
            f"(value · 2^{cfg.formats().weight.frac} is an integer) with B untransposed: "
            "LOAD_B sends Bᵀ row-major.",
            "RUN integrates from the image buffer: the last image loaded by LOAD_IMAGE or "
            "taken whole on the image stream (a RUN without a new image runs the same image "
            "again; a RUN started while an image is arriving waits for its last word). "
            "LOAD_IMAGE and reset forget an image partly arrived on the image stream.",
            f"Rounding '{cfg.rounding}'. Every LFSR runs on across operations and RUNs; only "
            "reset re-seeds them (stochastic rounding: the same image gives the same words "
            "only in the same position of the sequence after reset).",
            "cls, converged and iterations are valid in the cycle RUN's done pulses and stay "
            "until the next RUN.",
        ]
    elif isinstance(component, FourierBank):
        kind, ops = "fourier-bank", _bank(component)
        meanings = {"i": "the words of LOAD_*", "o": "the words of READ_*"}
        notes = ["CONV runs the direction of the last LOAD_REAL (forward) or LOAD_REAL_T "
                 "(adjoint); read its output with READ_REAL or READ_REAL_T respectively.",
                 f"Rounding '{component.rounding}': the DFT unit's rows and columns arrays and "
                 "the mixing unit each have an LFSR that runs on across operations; only "
                 "reset re-seeds them."]
    elif isinstance(component, FourierConv):
        kind, ops = "fourier-conv", _fourier(component, True)
        meanings = {"i": "the words of LOAD_*", "o": "the words of READ_*"}
    elif isinstance(component, Dft2d):
        kind, ops = "dft", _fourier(component, False)
        meanings = {"i": "the words of LOAD_*", "o": "the words of READ_*"}
    elif isinstance(component, CrossbarTile):
        kind, ops = "tile", _tile(component)
        meanings = {"i": "the words of LOAD_*", "o": "the words of READ_*"}
        notes = ["After reset (and at power-up) READ_Y streams the last TRANSPOSED's result "
                 "(cols words), even if a FORWARD came last."]
    elif isinstance(component, HadamardUnit):
        return _hadamard(component)
    elif isinstance(component, ChannelMixUnit):
        return _channel_mix(component)
    else:
        raise TypeError(f"no host interface is described for {type(component).__name__}")
    ports, streams = _ports_and_streams(component, meanings)
    encoding, op_width = _encoding(component)
    # The streams that carry the operations' words (the image stream carries none).
    operations = [{"name": name, "code": encoding[name], "in": words_in, "out": words_out,
                   "in_stream": "i" if words_in else None,
                   "out_stream": "o" if words_out else None,
                   "does": does} for name, (words_in, words_out, does) in ops.items()]
    operations.sort(key=lambda op: op["code"])
    return HostInterface(component, {
        "unit": kind, "ports": ports, "streams": streams, "op_encoding": encoding,
        "op_width": op_width, "operations": operations, "handshake": list(HANDSHAKE),
        "reset": dict(_RESET), "notes": notes})


def _hadamard(unit) -> HostInterface:
    ports, streams = _ports_and_streams(unit, {
        "load": "spectrum entries, written at addresses 0, 1, … from the last restart",
        "i": "elements to multiply", "o": "products, in order"})
    n = unit.length
    layout = "one complex word per transfer: re in the low half of the payload, im above"
    operations = [
        {"name": "load", "code": None,
         "in": [_words("spectrum", n, word_format(unit.spectrum_format), layout)], "out": [],
         "in_stream": "load", "out_stream": None,
         "does": "spectrum[k] <- entry k (counted from the last restart)"},
        {"name": "multiply", "code": None,
         "in": [_words("x", n, word_format(unit.x_format), layout)],
         "out": [_words("y", n, word_format(unit.out_format), layout)],
         "in_stream": "i", "out_stream": "o",
         "does": "y[k] = narrow(x[k] · spectrum[k mod length]); element taken at edge t is "
                 "offered on o from edge t + 4; the pipeline stalls while o is not taken"},
    ]
    return HostInterface(unit, {
        "unit": "hadamard", "ports": ports, "streams": streams, "op_encoding": {},
        "op_width": 0, "operations": operations,
        "handshake": [HANDSHAKE[0], HANDSHAKE[-1],
                      "No op, start, busy or done: the streams run freely; restart (one "
                      "cycle) sets both counters to 0."],
        "reset": dict(_RESET), "notes": []})


def _channel_mix(unit) -> HostInterface:
    ports, streams = _ports_and_streams(unit, {
        "load": "spectrum entries, written at addresses 0, 1, … from the last restart",
        "i": "vectors to multiply, channel 0 first", "o": "products, channel 0 first"})
    n, ci, co = unit.length, unit.channels_in, unit.channels_out
    layout = "one complex word per transfer: re in the low half of the payload, im above"
    x, y, s = (word_format(f) for f in (unit.x_format, unit.out_format, unit.spectrum_format))
    operations = [
        {"name": "load", "code": None,
         "in": [_words("spectrum", n * co * ci, s, layout)], "out": [],
         "in_stream": "load", "out_stream": None,
         "does": "spectrum[(k·c_out + o)·c_in + i] <- K̂[o, i] at frequency k: frequency by "
                 "frequency, each matrix row-major (counted from the last restart)"},
        {"name": "multiply", "code": None,
         "in": [_words("x", n * ci, x, layout)], "out": [_words("y", n * co, y, layout)],
         "in_stream": "i", "out_stream": "o",
         "does": "restarted with adjoint low: y_o(k) = narrow(Σ_i K̂[o, i](k)·x_i(k)), c_in "
                 "words in and c_out out per frequency k; the last word of a vector taken at "
                 "edge t, its first output offered from edge t + c_in + 4 (idle unit), then "
                 "one output every c_in cycles; c_in·c_out cycles a vector in a stream; the "
                 "pipeline stalls while o is not taken"},
        {"name": "multiply_adjoint", "code": None,
         "in": [_words("x", n * co, x, layout)], "out": [_words("y", n * ci, y, layout)],
         "in_stream": "i", "out_stream": "o",
         "does": "restarted with adjoint high: y_i(k) = narrow(Σ_o conj(K̂[o, i](k))·x_o(k)), "
                 "c_out words in and c_in out per frequency; timing as multiply with c_in and "
                 "c_out swapped"},
    ]
    return HostInterface(unit, {
        "unit": "channel-mix", "ports": ports, "streams": streams, "op_encoding": {},
        "op_width": 0, "operations": operations,
        "handshake": [HANDSHAKE[0], HANDSHAKE[-1],
                      "No op, start, busy or done: the streams run freely; restart (one "
                      "cycle) sets the counters to 0, forgets a vector partly taken and "
                      "samples adjoint (the direction until the next restart)."],
        "reset": dict(_RESET), "notes": [
            "Outputs are narrowed once per component (real part first); with stochastic "
            "rounding the unit's LFSR gives two draws per output and runs on across "
            "restarts; only reset re-seeds it."]})


def metadata(component) -> dict:
    """``component.metadata.as_json()`` with the :class:`HostInterface` added to the
    interface's annotations (under its schema's ``$id``), validated against its schema."""
    result = component.metadata.as_json()
    annotation = host_interface(component)
    description = annotation.as_json()
    HostInterface.validate(description)
    result["interface"].setdefault("annotations", {})[HostInterface.schema["$id"]] = \
        description
    return result
