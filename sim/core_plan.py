"""Co-simulation of the neural-ODE core: the weights and images, the model's answers, the
comparison.

A *plan* holds the weights as words (``A``, ``Bt`` = Bᵀ, ``C``, ``d``) and the images as state
words; every back end loads the weights once, then per image clears the overflow flag, loads
the image, runs — sampling the class, ``converged``, ``iterations`` and the flag in the cycle
``done`` pulses, as a host latching them on ``done`` would — and reads the logits, the final
state, the status words and the trajectory (READ_TRAJECTORY: ``z_0 … z_N``). The
fixed-point model (:class:`~xbarode.model.fixed_net.FixedNetwork`, one image at a time, its
LFSRs running on across images as the hardware's do) answers the same plan.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from xbarode.model.core_config import CoreConfig
from xbarode.model.fixed import Overflow

__all__ = [
    "DONE_OUTPUTS",
    "compare",
    "core_params",
    "execute",
    "hardware_counts",
    "make_plan",
    "model_network",
    "model_results",
    "operation_limits",
    "random_params",
    "run_plan_amaranth",
    "tile_words",
    "weight_load_words",
    "weight_loads",
]

# Overflow tally labels that belong to the host (quantising weights and images, and the loss
# gradient, the host's softmax).
_HOST = ("input", "A.load", "B.load", "C.load", "d.load", "loss", "spectrum.load",
         "twiddle.load")


def core_params(config: CoreConfig, params: dict) -> dict:
    """Dense float parameters ``A``, ``B``, ``C``, ``d`` for the core's tiles.

    For ``structure = "conv"`` the kernels become their m×m circular-convolution matrices
    (the direct path: the tiles hold the matrices); the Fourier path keeps the kernels. With
    ``channels = c > 1`` (the Fourier path) ``A`` and ``B`` are c×c banks of k×k kernels,
    shape ``(c, c, k, k)``, and ``C`` reads all ``m = c·H·W`` state words.
    """
    for name in "AB":
        got = np.shape(params.get(name))
        if config.channels > 1:
            want = (config.channels, config.channels, config.kernel, config.kernel)
            if got != want:
                raise ValueError(f"weights {name} have shape {got}; a core with "
                                 f"{config.channels} channels needs a bank of shape {want}")
        elif len(got) == 4:
            raise ValueError(f"weights {name} are a bank of kernels for {got[1]} channels; "
                             f"the core has one channel (set channels = {got[1]} on the "
                             f"Fourier path)")
    if config.channels > 1 or config.pool > 1:
        m, classes = config.features, config.classes
        for name, shape in (("C", (classes, m)), ("d", (classes,))):
            if np.shape(params.get(name)) != shape:
                raise ValueError(f"weights {name} have shape {np.shape(params.get(name))}; "
                                 f"the configuration needs {shape}")
        if config.channels > 1:
            return {name: np.asarray(params[name], dtype=np.float64) for name in "ABCd"}
        dense = core_params(dataclasses.replace(config, pool=1), {
            **params, "C": np.zeros((classes, config.m))})
        return {**dense, "C": np.asarray(params["C"], dtype=np.float64)}
    if config.conv_path == "fourier":
        # The same checks as the direct path's; the units take the kernels themselves.
        dense = core_params(dataclasses.replace(config, conv_path="direct"), params)
        return {**dense, "A": np.asarray(params["A"], dtype=np.float64),
                "B": np.asarray(params["B"], dtype=np.float64)}
    if config.structure == "conv":
        from xbarode.model.conv import conv_matrix

        params = {**params, "A": conv_matrix(params["A"], config.image),
                  "B": conv_matrix(params["B"], config.image)}
    m, classes = config.m, config.classes
    expected = {"A": (m, m), "B": (m, m), "C": (classes, m), "d": (classes,)}
    for name, shape in expected.items():
        got = np.shape(params.get(name))
        if got != shape:
            raise ValueError(f"weights {name} have shape {got}; the configuration needs "
                             f"{shape}")
    return {name: np.asarray(params[name], dtype=np.float64) for name in expected}


def model_network(config: CoreConfig, params: dict, *, device: bool = True):
    """The fixed-point model of the core for float ``params``, with the ``[device]`` table's
    models (:meth:`CoreConfig.device <xbarode.model.core_config.CoreConfig.device>`) unless
    ``device`` is False (the ideal array: the words the host sends)."""
    from xbarode.model.fixed_net import FixedNetwork

    return FixedNetwork(core_params(config, params), config.formats(),
                        rounding=config.rounding, h=config.h, steps=config.steps,
                        method=config.method, newton=config.newton(),
                        lfsr_seed=config.lfsr_seed, conv_taps=config.conv_taps(),
                        fourier=config.fourier(), image_shape=config.image,
                        pool=config.pool,
                        device=config.device() if device else None)


def random_params(config: CoreConfig, seed: int) -> dict:
    """Random float weights of a size that exercises the core without saturating everywhere.

    ``A`` and ``B`` (m×m, or k×k kernels for ``structure = "conv"``, c×c banks of them with
    ``c`` channels) have entries of about ``1.2/√fan-in`` (ρ(hJ) < 1 for implicit Euler),
    ``C`` and ``d`` of about 0.5.
    """
    rng = np.random.default_rng(seed)
    m, classes, c = config.m, config.classes, config.channels
    shape = (config.kernel,) * 2 if config.structure == "conv" else (m, m)
    scale = 1.2 / np.sqrt(c * shape[0] * shape[1] if config.structure == "conv" else m)
    if c > 1:
        shape = (c, c, *shape)
    return {"A": rng.normal(0, scale, shape), "B": rng.normal(0, scale, shape),
            "C": rng.normal(0, 0.5, (classes, config.features)),
            "d": rng.normal(0, 0.5, classes)}


def weight_loads(plan: dict) -> list:
    """``(CoreOp, words)`` of the four weight loads of a core plan (this one's or a training
    plan's), in the order every back end sends them."""
    from xbarode.hdl.core import CoreOp

    w = plan["weights"]
    return [(CoreOp.LOAD_A, w["A"]), (CoreOp.LOAD_B, w["Bt"] if "Bt" in w else w["B"]),
            (CoreOp.LOAD_C, w["C"]), (CoreOp.LOAD_D, w["d"])]


#: The core's outputs a host latches when RUN's ``done`` pulses.
DONE_OUTPUTS = ("cls", "converged", "iterations", "overflow")


async def execute(plan: dict, drv, progress=None):
    """Run a core plan through a co-simulation driver (:mod:`xbarode.sim.engine`): load the
    weights (unless ``plan["built_in"]``: the core was built with them); per image clear the
    flag, load the image, RUN (``cls``, ``converged``, ``iterations`` and the flag read in the
    cycle ``done`` pulses), then read the logits, the final state, the status words and the
    trajectory.

    With ``plan["image_stream"]`` the images come on the core's ``image`` stream instead of
    by LOAD_IMAGE: the first before the first RUN, each next one while the RUN before it
    runs (overlapped, as a host streaming images does).

    Returns
    -------
    results : list of dict
        Per image: the :data:`DONE_OUTPUTS`, ``logits``, ``state``, ``status``,
        ``trajectory``.
    cycles : list of int
        RUN latency (start to done, inclusive) per image.
    """
    from xbarode.hdl.core import CoreOp

    if not plan.get("built_in", False):
        for op, words in weight_loads(plan):
            await drv.send(op, words)
    results, cycles = [], []
    words = (plan["steps"] + 1) * plan["m"]
    images, overlap = plan["images"], plan.get("image_stream", False)
    if overlap and images:
        await drv.put("image", images[0])    # pixels: non-negative, their bits are the words
    for index, image in enumerate(images):
        await drv.strobe("clear")
        if not overlap:
            await drv.send(CoreOp.LOAD_IMAGE, image)
        feed = ("image", images[index + 1]) if overlap and index + 1 < len(images) else None
        latency, at_done = await drv.run(CoreOp.RUN, sample=DONE_OUTPUTS, feed=feed)
        cycles.append(latency)
        result = dict(zip(DONE_OUTPUTS, at_done, strict=True))
        result["logits"] = await drv.receive(CoreOp.READ_LOGITS, plan["classes"])
        result["state"] = await drv.receive(CoreOp.READ_STATE, plan["m"])
        status = await drv.receive(CoreOp.READ_STATUS, plan["steps"])
        result["status"] = [s & 0x1FF for s in status]
        result["trajectory"] = await drv.receive(CoreOp.READ_TRAJECTORY, words)
        results.append(result)
        if progress is not None and index % 32 == 31:
            progress(results, cycles)
    return results, cycles


def run_plan_amaranth(config: CoreConfig, plan: dict, vcd_path=None):
    """Run ``plan`` on the core in Amaranth's simulator: :func:`execute`'s ``(results,
    cycles)``. With ``plan["built_in"]`` the core is built with the plan's weights in its
    memories and none are loaded."""
    from xbarode.hdl.core import Core

    from .engine import run_amaranth

    weights = plan["weights"] if plan.get("built_in", False) else None
    return run_amaranth(Core(config, weights=weights), execute, plan, vcd_path)


def tile_words(config: CoreConfig, net) -> dict:
    """What LOAD_A and LOAD_B send: the words of A and Bᵀ (``A``, ``Bt``), or on the Fourier
    path the kernels' spectra in LOAD_SPECTRUM's order (``A``, ``B``;
    :func:`~xbarode.model.fixed_ops.spectrum_stream`: column by column, and with channels the
    c×c matrix of every frequency row-major)."""
    if config.conv_path == "fourier":
        from xbarode.model.fixed_ops import spectrum_stream, spectrum_words

        spectra = {}
        for name in "AB":
            unit = getattr(net, name)
            kernel = unit.kernels if config.channels > 1 else unit.kernel
            words = spectrum_words(kernel, config.image, unit.spectrum)
            spectra[name] = spectrum_stream(words).tolist()
        return spectra
    return {"A": net.A.weights.ravel().tolist(), "Bt": net.B.weights.T.ravel().tolist()}


def weight_load_words(config: CoreConfig, params: dict) -> dict:
    """The words LOAD_A, LOAD_B, LOAD_C and LOAD_D send for float weights ``params`` (a
    weights file's ``A``, ``B``, ``C``, ``d``): put on the weight grid as the fixed-point model
    does. Keys ``A`` and ``Bt`` (Bᵀ; on the Fourier path ``A`` and ``B``, the spectra: see
    :func:`tile_words`), ``C`` and ``d``; lists of integers. On the direct path these are
    also what :class:`~xbarode.hdl.core.Core`'s ``weights`` builds in."""
    net = model_network(config, params, device=False)
    return {**tile_words(config, net), "C": net.C.weights.ravel().tolist(),
            "d": net.d.tolist()}


def make_plan(config: CoreConfig, params: dict, images: np.ndarray, *,
              image_stream: bool = False, built_in: bool = False) -> dict:
    """The words the host sends: weights (``Bt`` is Bᵀ; see :func:`tile_words`) and the
    images as state words; with ``image_stream`` the images go on the core's ``image``
    stream, each next one while the RUN before it runs (:func:`execute`); with ``built_in``
    the core is built with the weights and :func:`execute` loads none. The weights are
    the quantised words, as the host sends them: with the device's write models the tiles
    snap them to a state as LOAD_* writes them."""
    images = np.asarray(images, dtype=np.float64).reshape(len(images), config.pixels)
    words = config.formats().state.quantize(images, "nearest")
    return {"config": config.to_toml(), "weights": weight_load_words(config, params),
            "images": words.tolist(), "m": config.m, "classes": config.classes,
            "steps": config.steps, "limits": operation_limits(config, ("RUN",)),
            "image_stream": bool(image_stream), "built_in": bool(built_in)}


def operation_limits(config: CoreConfig, ops) -> dict[str, int]:
    """Cycle limits of the core's compute operations ``ops`` (names of
    :class:`~xbarode.hdl.core.CoreOp`), from their documented latency bounds
    (:mod:`xbarode.sim.latency`), for back ends that cannot build the core themselves."""
    from .latency import core_bound, limit

    return {name: limit(core_bound(config, name)) for name in ops}


def model_results(config: CoreConfig, params: dict, images: np.ndarray) -> list[dict]:
    """The model's answer per image: ``cls``, ``logits``, ``state`` (z_N), ``status`` (per
    step: iterations | converged << 8), ``trajectory`` (``z_0 … z_N``, row-major),
    ``converged`` (every Newton solve of the image converged; 1 for explicit Euler),
    ``iterations`` (Newton updates summed over the steps) and ``overflow`` (some hardware
    narrowing or saturating addition saturated on this image)."""
    net = model_network(config, params)
    images = np.asarray(images, dtype=np.float64).reshape(len(images), config.pixels)
    results = []
    for x in images:
        before = hardware_counts(net.overflow)
        logits, trajectory, info = net.forward(x[None])
        if config.method == "euler":
            iterations, converged = [0] * config.steps, [True] * config.steps
        else:
            iterations = [int(i) for i in info["iterations"][:, 0]]
            converged = [bool(c) for c in info["converged"][:, 0]]
        status = [i | int(c) << 8 for i, c in zip(iterations, converged, strict=True)]
        results.append({"cls": int(np.argmax(logits[0])), "logits": logits[0].tolist(),
                        "state": trajectory[-1, 0].tolist(), "status": status,
                        "trajectory": trajectory[:, 0].ravel().tolist(),
                        "converged": int(all(converged)), "iterations": sum(iterations),
                        "overflow": int(hardware_counts(net.overflow) > before)})
    return results


def hardware_counts(overflow: Overflow) -> int:
    """Saturations the hardware saw (the tally without the host's labels)."""
    return sum(n for label, n in overflow.counts.items() if label not in _HOST)


_FIELDS = ("cls", "logits", "state", "status", "trajectory", "converged", "iterations",
           "overflow")


def compare(expected: list[dict], got: list[dict]) -> dict:
    """Count differing words (logits, state, status, trajectory) and flags (class,
    converged, iterations, overflow); name the first difference.

    A result missing, a field missing or of the wrong length, and a comparison of nothing
    (``compared == 0``, e.g. no image expected) count as mismatches.

    Returns
    -------
    dict
        ``mismatches``, ``compared``, ``first`` (a sentence, or None), ``agreement`` (fraction
        of images whose class matches).
    """
    mismatches = compared = agree = 0
    first = None
    if len(got) != len(expected):
        return {"mismatches": max(len(expected), len(got)), "compared": len(expected),
                "agreement": 0.0,
                "first": f"{len(got)} images came back, expected {len(expected)}"}
    for index, (exp, res) in enumerate(zip(expected, got, strict=True)):
        agree += int(exp["cls"] == res.get("cls"))
        for field in _FIELDS:
            a = np.atleast_1d(exp[field])
            b = np.atleast_1d(res[field]) if field in res else np.zeros(0, dtype=a.dtype)
            compared += a.size
            if a.shape != b.shape:
                mismatches += max(a.size, b.size, 1)
                first = first or f"image {index}: {field} has {b.size} words, expected {a.size}"
                continue
            bad = np.flatnonzero(a != b)
            mismatches += bad.size
            if bad.size and first is None:
                where = f"{field}[{bad[0]}]" if a.size > 1 else field
                first = (f"image {index}: {where} is {b[bad[0]]}, the model says "
                         f"{a[bad[0]]}")
    if compared == 0:
        mismatches, first = max(mismatches, 1), first or "nothing was compared (no image)"
    return {"mismatches": mismatches, "compared": compared, "first": first,
            "agreement": agree / max(len(expected), 1)}
