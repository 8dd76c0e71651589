"""Co-simulation of the Fourier units (``dft``, ``hadamard``, ``channel-mix``, ``fourier-conv``,
``fourier-bank``): plans and answers.

A plan is a list of *vectors*, each a script of steps that every simulator back end runs the
same way on a unit with the ``op``/``start``/``done`` and ``i``/``o`` stream interface
(:class:`~xbarode.hdl.fourier.Dft2d`, :class:`~xbarode.hdl.fourier.FourierConv`,
:class:`~xbarode.hdl.fourier_bank.FourierBank`, whose steps name its ``BankOp`` members):

- ``{"send": OP, "words": [...]}`` starts ``OP`` and streams the words in;
- ``{"run": OP}`` starts ``OP`` and waits for ``done`` (its latency is recorded by name);
- ``{"receive": OP, "count": N}`` starts ``OP`` and collects ``N`` words, recorded with the
  sticky overflow flag as one result.

The Hadamard and channel-mixing units have element streams instead; their vectors are
``{"spectrum": pairs, "elements": pairs}`` (channel mixing: with ``"adjoint"``, the direction)
and each yields one result. The fixed-point model answers every plan
(:func:`model_results`); :func:`compare` (shared with the tile) checks every word and flag.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from xbarode.model.device import DEVICE_SEED, DeviceModel
from xbarode.model.fixed import Format, Overflow, Rounder
from xbarode.model.fixed_fourier_bank import channel_mix_fixed, fourier_bank_fixed
from xbarode.model.fixed_ops import (
    dft2_fixed,
    dft_noise,
    fourier_conv_fixed,
    fourier_rounders,
    hadamard_fixed,
    spectrum_stream,
    spectrum_words,
)

from .tile_plan import compare

__all__ = ["FOURIER_UNITS", "FourierParams", "compare", "execute", "make_plan", "model_results",
           "pack_pair", "run_plan_amaranth", "unpack_pair"]

#: The units this module plans for.
FOURIER_UNITS = ("dft", "hadamard", "channel-mix", "fourier-conv", "fourier-bank")
#: The units with element streams instead of operations.
_STREAM_UNITS = ("hadamard", "channel-mix")

# Overflow tally labels that are the host's (quantising constants), not the hardware's.
_HOST_LABELS = ("spectrum.load", "twiddle.load")


@dataclass(frozen=True)
class FourierParams:
    """Everything that defines a Fourier unit build.

    ``width``/``frac`` are the data words (image, transforms, products), ``twiddle`` and
    ``spectrum`` the formats of the DFT tables and of the kernel spectrum as ``(width, frac)``.
    ``device`` (read models only) and ``device_seed`` are the DFT arrays'
    (:class:`~xbarode.hdl.fourier.Dft2d`); the Hadamard and channel-mixing units have none.
    ``channels_in`` and ``channels_out`` are the channel-mixing unit's matrices' and the
    Fourier bank's (the others have one channel); the mixing unit's ``length`` is
    ``height·width_px`` frequencies.
    """

    unit: str
    height: int
    width_px: int
    kernel: int = 3
    lanes: int | None = None
    width: int = 18
    frac: int = 10
    twiddle: tuple[int, int] = (18, 16)
    spectrum: tuple[int, int] = (18, 14)
    rounding: str = "nearest"
    gauss: bool = False
    acc_width: int = 48
    lfsr_seed: int = 0xACE1ACE1
    #: The DFT arrays' read models (docs/device.md), in the unit and in its model.
    device: DeviceModel | None = None
    #: Seed of the rows array's device generators (columns array: its site 1).
    device_seed: int = DEVICE_SEED
    #: c_in and c_out of the channel-mixing unit's matrices and of the Fourier bank.
    channels_in: int = 1
    channels_out: int = 1

    @property
    def data_format(self) -> Format:
        """Format of the data words."""
        return Format(self.width, self.frac)

    @property
    def twiddle_format(self) -> Format:
        """Format of the DFT tables."""
        return Format(*self.twiddle)

    @property
    def spectrum_format(self) -> Format:
        """Format of the kernel spectrum."""
        return Format(*self.spectrum)

    @property
    def size(self) -> int:
        """Elements of the image, ``H·W``."""
        return self.height * self.width_px

    def _unit(self):
        """The unit's class and constructor arguments, after the checks of the unit's name
        and of the kernel (which only the plans use)."""
        from xbarode.hdl.channel_mix import ChannelMixUnit
        from xbarode.hdl.fourier import Dft2d, FourierConv
        from xbarode.hdl.fourier_bank import FourierBank
        from xbarode.hdl.hadamard import HadamardUnit

        if self.unit not in FOURIER_UNITS:
            raise ValueError(f"unknown Fourier unit {self.unit!r}; choose one of "
                             f"{list(FOURIER_UNITS)}")
        convolves = self.unit in ("fourier-conv", "fourier-bank")
        if convolves and (self.kernel < 1 or self.kernel % 2 == 0):
            raise ValueError(f"the kernel size must be odd and >= 1, not {self.kernel}")
        if convolves and self.kernel > min(self.height, self.width_px):
            raise ValueError(f"a {self.kernel}x{self.kernel} kernel does not fit a "
                             f"{self.height}x{self.width_px} image")
        if (self.channels_in, self.channels_out) != (1, 1) and self.unit not in (
                "channel-mix", "fourier-bank"):
            raise ValueError(f"the {self.unit} unit has one channel; channels apply to the "
                             "channel-mix and fourier-bank units")
        if self.unit == "fourier-bank":
            if self.device is not None and not self.device.off:
                raise ValueError("the fourier-bank unit has no device models; the DFT "
                                 "arrays take them in units dft and fourier-conv")
            if self.gauss:
                raise ValueError("the fourier-bank unit's mixing has four multipliers; "
                                 "gauss applies to units hadamard and fourier-conv")
            return FourierBank, (self.height, self.width_px), {
                "channels_in": self.channels_in, "channels_out": self.channels_out,
                "lanes": self.lanes, "data_format": self.data_format,
                "twiddle_format": self.twiddle_format,
                "spectrum_format": self.spectrum_format, "acc_width": self.acc_width,
                "rounding": self.rounding, "lfsr_seed": self.lfsr_seed}
        if self.unit in _STREAM_UNITS and self.device is not None and not self.device.off:
            name = "Hadamard" if self.unit == "hadamard" else "channel-mixing"
            raise ValueError(f"the {name} unit is digital: the device models apply to the "
                             "DFT arrays (units dft and fourier-conv)")
        if self.unit == "channel-mix":
            return ChannelMixUnit, (), {
                "length": self.size, "channels_in": self.channels_in,
                "channels_out": self.channels_out, "x_format": self.data_format,
                "spectrum_format": self.spectrum_format, "out_format": self.data_format,
                "rounding": self.rounding, "lfsr_seed": self.lfsr_seed}
        if self.unit == "hadamard":
            return HadamardUnit, (), {
                "length": self.size, "x_format": self.data_format,
                "spectrum_format": self.spectrum_format, "out_format": self.data_format,
                "rounding": self.rounding, "gauss": self.gauss, "lfsr_seed": self.lfsr_seed}
        common = {"lanes": self.lanes, "data_format": self.data_format,
                  "twiddle_format": self.twiddle_format, "acc_width": self.acc_width,
                  "rounding": self.rounding, "lfsr_seed": self.lfsr_seed,
                  "device": self.device, "device_seed": self.device_seed}
        if self.unit == "dft":
            return Dft2d, (self.height, self.width_px), common
        return FourierConv, (self.height, self.width_px), {
            "spectrum_format": self.spectrum_format, "gauss": self.gauss, **common}

    def check(self) -> None:
        """Raise what :meth:`component` raises for these parameters (the unit's own messages),
        without building the unit."""
        cls, args, kwargs = self._unit()
        cls.check_parameters(*args, **kwargs)

    def component(self):
        """The Amaranth component for these parameters."""
        cls, args, kwargs = self._unit()
        return cls(*args, **kwargs)


def make_plan(params: FourierParams, vectors: int, seed: int) -> dict:
    """A random plan of ``vectors`` vectors; every fourth one is a saturation corner.

    ``dft``: a complex image in [-1, 1), DFT and read, IDFT and read (the round trip).
    ``fourier-conv``: a kernel with taps in [-0.5, 0.5), its spectrum loaded, an image in
    [0, 1), CONV and read the real parts. ``hadamard``: spectrum in [-2, 2) and elements in
    [-4, 4), or (every fourth from the second) any words. ``channel-mix``: the same, a
    c_out×c_in matrix per frequency and one vector per frequency, every second vector through
    the adjoint product (c_out words in, c_in out). ``fourier-bank``: a c_out×c_in bank of
    kernels with taps in [-0.5, 0.5)/c_in, its spectra loaded, c_in channels in [0, 1), CONV and
    READ_REAL; every second vector the adjoint, c_out channels in [-1, 1), LOAD_REAL_T, CONV and
    READ_REAL_T. Corners put every word at full scale (a corner kernel has taps of ±0.99).
    """
    rng = np.random.default_rng(seed)
    f = params.data_format
    plan = []
    for v in range(vectors):
        corner = v % 4 == 3

        def words(shape, low, high, corner=corner):
            if corner:
                return rng.choice([f.min_int, f.max_int], shape)
            return f.quantize(rng.uniform(low, high, shape), "nearest")

        if params.unit in _STREAM_UNITS:
            adjoint = params.unit == "channel-mix" and v % 2 == 1
            n_in = params.channels_out if adjoint else params.channels_in
            s = params.spectrum_format
            pairs = (params.size * params.channels_out * params.channels_in, 2)
            elements_shape = (params.size * n_in, 2)
            if corner:
                spectrum = rng.choice([s.min_int, s.max_int], pairs)
                elements = rng.choice([f.min_int, f.max_int], elements_shape)
            elif v % 4 == 1:                      # any words: most products saturate
                spectrum = rng.integers(s.min_int, s.max_int + 1, pairs)
                elements = rng.integers(f.min_int, f.max_int + 1, elements_shape)
            else:                                 # the ranges of a convolution
                spectrum = s.quantize(rng.uniform(-2, 2, pairs), "nearest")
                elements = f.quantize(rng.uniform(-4, 4, elements_shape), "nearest")
            vector = {"spectrum": spectrum.tolist(), "elements": elements.tolist()}
            if params.unit == "channel-mix":
                vector["adjoint"] = adjoint
            plan.append(vector)
            continue
        shape = (params.height, params.width_px)
        if params.unit == "dft":
            image = words((*shape, 2), -1, 1)
            steps = [{"send": "LOAD", "words": image.ravel().tolist()},
                     {"run": "DFT"}, {"receive": "READ", "count": 2 * params.size},
                     {"run": "IDFT"}, {"receive": "READ", "count": 2 * params.size}]
            plan.append({"image": image.tolist(), "steps": steps})
            continue
        if params.unit == "fourier-bank":
            plan.append(_bank_vector(params, rng, corner, v % 2 == 1, words))
            continue
        kernel = rng.uniform(-0.5, 0.5, (params.kernel, params.kernel))
        if corner:
            kernel = rng.choice([-1.0, 1.0], kernel.shape) * 0.99
        spectrum = spectrum_words(kernel, shape, params.spectrum_format)
        image = words(shape, 0, 1)
        steps = [{"send": "LOAD_SPECTRUM",
                  "words": np.swapaxes(spectrum, 0, 1).ravel().tolist()},
                 {"send": "LOAD_REAL", "words": image.ravel().tolist()},
                 {"run": "CONV"}, {"receive": "READ_REAL", "count": params.size}]
        plan.append({"kernel": kernel.tolist(), "image": image.tolist(), "steps": steps})
    # asdict: the device model becomes a dict of its fields (the plan travels as JSON).
    return {"params": asdict(params), "vectors": plan, "limits": operation_limits(params)}


def _bank_vector(params: FourierParams, rng, corner: bool, adjoint: bool, words) -> dict:
    """One ``fourier-bank`` vector: a kernel bank, its spectra loaded, channels through CONV
    (forward, or the adjoint) and read."""
    c_in, c_out, k = params.channels_in, params.channels_out, params.kernel
    kernels = rng.uniform(-0.5, 0.5, (c_out, c_in, k, k)) / c_in
    if corner:
        kernels = rng.choice([-1.0, 1.0], kernels.shape) * 0.99
    shape = (params.height, params.width_px)
    stream = spectrum_stream(spectrum_words(kernels, shape, params.spectrum_format))
    n_in, n_out = (c_out, c_in) if adjoint else (c_in, c_out)
    image = words((n_in, *shape), -1 if adjoint else 0, 1)
    suffix = "_T" if adjoint else ""
    steps = [{"send": "LOAD_SPECTRUM", "words": stream.tolist()},
             {"send": "LOAD_REAL" + suffix, "words": image.ravel().tolist()},
             {"run": "CONV"}, {"receive": "READ_REAL" + suffix, "count": n_out * params.size}]
    return {"kernels": kernels.tolist(), "image": image.tolist(), "adjoint": adjoint,
            "steps": steps}


def operation_limits(params: FourierParams) -> dict[str, int]:
    """Cycle limits of the compute operations of ``dft``, ``fourier-conv`` and
    ``fourier-bank`` plans (by :class:`~xbarode.hdl.fourier.FourierOp` or
    :class:`~xbarode.hdl.fourier_bank.BankOp` name), from the documented latency bounds
    (:mod:`xbarode.sim.latency`); none for the Hadamard and channel-mixing units (their
    streams have their own)."""
    if params.unit in _STREAM_UNITS:
        return {}
    from xbarode.hdl.fourier import Dft2d

    from .latency import bank_bound, dft_bound, limit

    lanes = Dft2d.array_lanes(params.height, params.width_px, params.lanes)
    if params.unit == "fourier-bank":
        return {"CONV": limit(bank_bound(params.height, params.width_px, lanes,
                                         params.channels_in, params.channels_out, "CONV"))}
    return {name: limit(dft_bound(params.height, params.width_px, lanes, name))
            for name in ("DFT", "IDFT", "CONV")}


def pack_pair(re: int, im: int, width: int) -> int:
    """The raw bits of a complex pair on a Hadamard stream: ``re`` in the low ``width`` bits,
    ``im`` above, each two's complement."""
    mask = (1 << width) - 1
    return (re & mask) | (im & mask) << width


def unpack_pair(word: int, width: int) -> list[int]:
    """``[re, im]`` of a pair's raw bits (:func:`pack_pair`)."""
    def signed(v):
        return v - (1 << width) if v >> (width - 1) else v
    mask = (1 << width) - 1
    return [signed(word & mask), signed(word >> width & mask)]


async def execute(plan: dict, drv, progress=None):
    """Run a Fourier-unit plan through a co-simulation driver (:mod:`xbarode.sim.engine`).

    ``dft``/``fourier-conv``: per vector clear the flag, then its ``send``/``run``/
    ``receive`` steps. ``hadamard``: per vector clear, restart, load the spectrum, then offer
    an element every cycle while taking every product. ``channel-mix``: the same, with
    ``adjoint`` set to the vector's direction before the restart.

    Returns
    -------
    results : list of list of dict
        Per vector, per ``receive`` step (Hadamard, channel mixing: one per vector): ``out``
        (words) and ``overflow`` (the sticky flag).
    cycles : dict
        Latency (start to done, inclusive) of each ``run`` step, by operation name; for the
        Hadamard and channel-mixing units, ``elements`` (cycles from the first element in to
        the last out, of the last vector).
    """
    from xbarode.hdl.fourier import FourierOp
    from xbarode.hdl.fourier_bank import BankOp

    params = plan["params"]
    ops = BankOp if params["unit"] == "fourier-bank" else FourierOp
    results, cycles = [], {}
    for vector in plan["vectors"]:
        await drv.strobe("clear")
        answers = []
        if params["unit"] in _STREAM_UNITS:
            width, swidth = params["width"], params["spectrum"][0]
            count, bound = len(vector["elements"]), None
            if params["unit"] == "channel-mix":
                await drv.set("adjoint", int(vector["adjoint"]))
                c_in, c_out = params["channels_in"], params["channels_out"]
                n_in, n_out = (c_out, c_in) if vector["adjoint"] else (c_in, c_out)
                frequencies = count // n_in
                count = frequencies * n_out
                # ChannelMixUnit's documented rate: c_in·c_out cycles a vector.
                bound = frequencies * c_in * c_out + n_in + 8
            await drv.strobe("restart")
            if params["unit"] == "channel-mix":
                await drv.set("adjoint", 0)
            await drv.put("load", [pack_pair(re, im, swidth) for re, im in vector["spectrum"]])
            words, cycles["elements"] = await drv.exchange(
                "i", [pack_pair(re, im, width) for re, im in vector["elements"]], "o",
                count, bound)
            out = [v for word in words for v in unpack_pair(word, width)]
            answers.append({"out": out, "overflow": drv.get("overflow")})
        for step in vector.get("steps", ()):
            if "send" in step:
                await drv.send(ops[step["send"]], step["words"])
            elif "run" in step:
                cycles[step["run"]], _ = await drv.run(ops[step["run"]])
            else:
                out = await drv.receive(ops[step["receive"]], step["count"])
                answers.append({"out": out, "overflow": drv.get("overflow")})
        results.append(answers)
        if progress is not None:
            progress(results, cycles)
    return results, cycles


def run_plan_amaranth(params: FourierParams, plan: dict, vcd_path=None):
    """Run ``plan`` on the unit in Amaranth's simulator: :func:`execute`'s ``(results,
    cycles)``."""
    from .engine import run_amaranth

    return run_amaranth(params.component(), execute, plan, vcd_path)


def _flag(overflow: Overflow) -> int:
    return int(any(n for label, n in overflow.counts.items() if label not in _HOST_LABELS))


def model_results(params: FourierParams, plan: dict) -> list[list[dict]]:
    """The fixed-point model's answer to every result of a plan.

    One set of rounders (one LFSR per site) and of read-noise generators (with a device,
    one per DFT array) serves the whole plan, as in hardware; the overflow flag is cleared
    at the start of each vector.
    """
    f = params.data_format
    results = []
    if params.unit == "hadamard":
        rounder = Rounder(params.rounding, params.lfsr_seed)
        for vector in plan["vectors"]:
            overflow = Overflow()
            out = hadamard_fixed(np.array(vector["elements"]), np.array(vector["spectrum"]),
                                 x_format=f, spectrum_format=params.spectrum_format,
                                 out_format=f, rounder=rounder, overflow=overflow,
                                 gauss=params.gauss)
            results.append([{"out": out.ravel().tolist(), "overflow": _flag(overflow)}])
        return results
    if params.unit == "channel-mix":
        rounder = Rounder(params.rounding, params.lfsr_seed)
        c_in, c_out = params.channels_in, params.channels_out
        for vector in plan["vectors"]:
            overflow = Overflow()
            n_in = c_out if vector["adjoint"] else c_in
            x = np.array(vector["elements"]).reshape(params.size, n_in, 2)
            spectra = np.array(vector["spectrum"]).reshape(params.size, c_out, c_in, 2)
            out = channel_mix_fixed(x, spectra, x_format=f,
                                    spectrum_format=params.spectrum_format, out_format=f,
                                    rounder=rounder, overflow=overflow,
                                    adjoint=vector["adjoint"])
            results.append([{"out": out.ravel().tolist(), "overflow": _flag(overflow)}])
        return results
    rounders = fourier_rounders(params.rounding, params.lfsr_seed)
    if params.unit == "fourier-bank":
        for vector in plan["vectors"]:
            overflow = Overflow()
            image = np.array(vector["image"], dtype=np.int64)[None]
            out = fourier_bank_fixed(np.array(vector["kernels"]), image, data=f,
                                     twiddle=params.twiddle_format,
                                     spectrum=params.spectrum_format, rounder=rounders,
                                     overflow=overflow, adjoint=vector["adjoint"])
            results.append([{"out": out.ravel().tolist(), "overflow": _flag(overflow)}])
        return results
    reads = {"device": params.device, "noise": dft_noise(params.device_seed)}
    for vector in plan["vectors"]:
        overflow = Overflow()
        answers = []
        if params.unit == "dft":
            x = np.array(vector["image"], dtype=np.int64)
            for inverse in (False, True):
                x = dft2_fixed(x, data=f, twiddle=params.twiddle_format, rounder=rounders[:2],
                               overflow=overflow, inverse=inverse, **reads)
                answers.append({"out": x.ravel().tolist(), "overflow": _flag(overflow)})
        else:
            image = np.array(vector["image"], dtype=np.int64)[None]
            out = fourier_conv_fixed(np.array(vector["kernel"]), image, data=f,
                                     twiddle=params.twiddle_format,
                                     spectrum=params.spectrum_format, rounder=rounders,
                                     overflow=overflow, gauss=params.gauss, **reads)
            answers.append({"out": out.ravel().tolist(), "overflow": _flag(overflow)})
        results.append(answers)
    return results
