"""Co-simulation of training on the core: the adjoint, the gradient sums, the SGD step.

A *plan* holds the weights as words (``A``, ``Bt`` = Bᵀ, ``C``, ``d``), and per image the
state words of the image and the words of ``∂L/∂logits`` that the host sends after reading
the logits (the host's softmax minus one-hot, :meth:`FixedNetwork.loss_gradient`; the plan
takes them from the model, whose logits the hardware's must equal). Every back end loads the
weights, then per image clears the overflow flag, loads the image, runs, reads the logits,
loads ``∂L/∂logits``, runs BACKWARD and reads every gradient sum and ``∂L/∂z_0``
(READ_GRAD, unless the plan says ``read_grads = False``); after the images listed in
``apply_after`` it clears the flag, runs APPLY (one SGD step) and, after those listed in
``read_weights_after``, reads the weights back (READ_WEIGHTS).

The fixed-point model (:class:`~xbarode.model.fixed_net.FixedNetwork`, one image at a time,
its LFSRs running on as the hardware's do) answers the same plan: ``forward``,
``loss_gradient``, ``backward``, the sums over the images since the last step, ``sgd_step``
(with pulses, on the images' pairs in the order ``backward`` lists a batch's).
"""

from __future__ import annotations

import numpy as np

from xbarode.model.core_config import CoreConfig

from .core_plan import hardware_counts, model_network, operation_limits, weight_loads

__all__ = ["compare", "execute", "gradient_words", "image_loss", "kernel_gradients",
           "make_plan", "run_plan_amaranth", "weight_words"]


def gradient_words(config: CoreConfig) -> int:
    """Words READ_GRAD streams: ``A``, ``Bᵀ`` (m² each), ``C``, ``d``, ``∂L/∂z_0``."""
    m, classes = config.m, config.classes
    return 2 * m * m + classes * m + classes + m


def weight_words(config: CoreConfig) -> int:
    """Words READ_WEIGHTS streams: ``A``, ``Bᵀ``, ``C``, ``d``."""
    m, classes = config.m, config.classes
    return 2 * m * m + classes * m + classes


def kernel_gradients(config: CoreConfig, words) -> dict[str, np.ndarray]:
    """The kernel gradients of a ``structure = "conv"`` core from READ_GRAD's words.

    The tiles hold the kernels' m×m circular-convolution matrices and accumulate dense
    gradient sums; the host pulls them back onto the kernels: the gradient of tap ``(p, q)``
    is the exact integer sum of the dense entries that tap occupies
    (:func:`~xbarode.model.conv.tap_columns`). ``A`` and ``B`` keep the dense sums' fractional
    bits.
    """
    from xbarode.model.conv import tap_columns

    if config.structure != "conv":
        raise ValueError("kernel gradients need structure = 'conv'")
    m, k = config.m, config.kernel
    words = np.asarray(words, dtype=np.int64)
    dense = {"A": words[:m * m].reshape(m, m), "B": words[m * m:2 * m * m].reshape(m, m).T}
    taps = tap_columns(k, config.image)
    return {name: grad[np.arange(m)[None, :], taps].sum(axis=1).reshape(k, k)
            for name, grad in dense.items()}


def image_loss(config: CoreConfig, logits, label: int) -> float:
    """The host's cross-entropy of one image from its logit words (``act`` format)."""
    from xbarode.model.classifier import softmax_cross_entropy

    scores = config.formats().act.to_float(np.asarray(logits))[None]
    return float(softmax_cross_entropy(scores, np.array([label]))[0])


def _weights(net) -> list[int]:
    return (net.A.weights.ravel().tolist() + net.B.weights.T.ravel().tolist()
            + net.C.weights.ravel().tolist() + np.asarray(net.d).tolist())


def make_plan(config: CoreConfig, params: dict, images: np.ndarray, labels, *,
              apply_every: int, read_grads: bool = True,
              read_weights: str = "every") -> tuple[dict, list[dict]]:
    """The plan and the model's answers.

    Parameters
    ----------
    config : CoreConfig
        A configuration with ``training``.
    params : dict
        Float weights ``A``, ``B``, ``C``, ``d`` (kernels for ``structure = "conv"``).
    images : ndarray, (n, m)
        Float pixels in [0, 1].
    labels : array_like of int, (n,)
    apply_every : int
        One SGD step after every ``apply_every`` images (and after the last).
    read_grads : bool
        Read every gradient sum and ``∂L/∂z_0`` after each image (``2m² + …`` words).
    read_weights : {"every", "last"}
        Read the weights after every SGD step, or after the last only.

    Returns
    -------
    plan : dict
    expected : list of dict
        Per image ``{"kind": "image", "logits", "grads" (if read), "loss", "overflow"}``;
        per SGD step ``{"kind": "apply", "weights" (if read), "overflow"}``.
    """
    if read_weights not in ("every", "last"):
        raise ValueError(f"read_weights must be 'every' or 'last', not {read_weights!r}")
    if not config.training:
        raise ValueError("the configuration does not build the training hardware; set "
                         "training = true in [train]")
    if apply_every < 1:
        raise ValueError(f"apply_every must be >= 1, not {apply_every}")
    net = model_network(config, params)
    images = np.asarray(images, dtype=np.float64).reshape(len(images), config.pixels)
    labels = np.asarray(labels, dtype=np.int64).reshape(len(images))
    if labels.size and (labels.min() < 0 or labels.max() >= config.classes):
        raise ValueError(f"labels must lie in 0..{config.classes - 1}")
    state = config.formats().state
    # The words the host sends: quantised, not yet programmed (the tiles program them as
    # they write them, as the model's tiles did when built).
    host = model_network(config, params, device=False)
    plan = {"config": config.to_toml(), "m": config.m, "classes": config.classes,
            "weights": {"A": host.A.weights.ravel().tolist(),
                        "Bt": host.B.weights.T.ravel().tolist(),
                        "C": host.C.weights.ravel().tolist(), "d": host.d.tolist()},
            "images": [], "apply_after": [], "read_weights_after": [],
            "read_grads": bool(read_grads), "grad_words": gradient_words(config),
            "weight_words": weight_words(config),
            "limits": operation_limits(config, ("RUN", "BACKWARD", "APPLY"))}
    expected, sums, samples = [], None, []
    for index, (x, label) in enumerate(zip(images, labels, strict=True)):
        before = hardware_counts(net.overflow)
        logits, trajectory, _ = net.forward(x[None])
        grad_logits = net.loss_gradient(logits, np.array([label]))
        grads = net.backward(trajectory, grad_logits)
        sums = {k: grads[k] if sums is None else sums[k] + grads[k] for k in "ABCd"}
        if "samples" in grads:   # pulses: each image's pairs, for the step's order
            samples.append(grads["samples"])
        words = (sums["A"].ravel().tolist() + sums["B"].T.ravel().tolist()
                 + sums["C"].ravel().tolist() + sums["d"].tolist() + grads["z0"][0].tolist())
        entry = {"kind": "image", "logits": logits[0].tolist(),
                 "loss": image_loss(config, logits[0], label),
                 "overflow": int(hardware_counts(net.overflow) > before)}
        if read_grads:
            entry["grads"] = words
        expected.append(entry)
        plan["images"].append({"x": state.quantize(x, "nearest").tolist(),
                               "grad_logits": grad_logits[0].tolist()})
        if (index + 1) % apply_every == 0 or index == len(images) - 1:
            before = hardware_counts(net.overflow)
            if samples:
                sums["samples"] = _batch_samples(samples)
            net.sgd_step(sums, lr=config.lr, batch_size=config.batch)
            sums, samples = None, []
            plan["apply_after"].append(index)
            entry = {"kind": "apply", "overflow": int(hardware_counts(net.overflow) > before)}
            if read_weights == "every" or index == len(images) - 1:
                plan["read_weights_after"].append(index)
                entry["weights"] = _weights(net)
            expected.append(entry)
    return plan, expected


def _batch_samples(samples: list[dict]) -> dict:
    """The pairs of a mini-batch's images (each :meth:`FixedNetwork.backward`'s
    ``samples`` of one image) in the order ``backward`` lists a batch's: for A and B step by
    step from the last, each step's images in order; for C the images in order (the order
    of the hardware's APPLY, :mod:`xbarode.hdl.core_pulses`)."""
    batched = {}
    for name in "AB":
        pairs = []
        for part in range(2):
            per_image = np.stack([s[name][part] for s in samples])   # (images, steps, n)
            pairs.append(np.swapaxes(per_image, 0, 1).reshape(-1, per_image.shape[-1]))
        batched[name] = tuple(pairs)
    batched["C"] = tuple(np.concatenate([s["C"][part] for s in samples]) for part in range(2))
    return batched


async def execute(plan: dict, drv, progress=None):
    """Run a training plan through a co-simulation driver (:mod:`xbarode.sim.engine`): load
    the weights; per image clear the flag, load the image, RUN, read the logits, load
    ``∂L/∂logits``, BACKWARD, read the flag and the gradient sums; APPLY (after a clear) and
    READ_WEIGHTS where the plan says.

    Returns
    -------
    results : list of dict
        Per image ``kind``, ``logits``, ``grads``, ``overflow``; per SGD step ``kind``,
        ``weights``, ``overflow``.
    cycles : dict
        ``run`` and ``backward`` (RUN and BACKWARD latency per image), ``apply`` (APPLY
        latency per step).
    """
    from xbarode.hdl.core import CoreOp

    for op, words in weight_loads(plan):
        await drv.send(op, words)
    apply_after, read_after = set(plan["apply_after"]), set(plan["read_weights_after"])
    results, cycles = [], {"run": [], "backward": [], "apply": []}
    for index, image in enumerate(plan["images"]):
        await drv.strobe("clear")
        await drv.send(CoreOp.LOAD_IMAGE, image["x"])
        cycles["run"].append((await drv.run(CoreOp.RUN))[0])
        entry = {"kind": "image", "logits": await drv.receive(CoreOp.READ_LOGITS,
                                                              plan["classes"])}
        await drv.send(CoreOp.LOAD_GRAD, image["grad_logits"])
        cycles["backward"].append((await drv.run(CoreOp.BACKWARD))[0])
        entry["overflow"] = drv.get("overflow")
        if plan["read_grads"]:
            entry["grads"] = await drv.receive(CoreOp.READ_GRAD, plan["grad_words"])
        results.append(entry)
        if index in apply_after:
            await drv.strobe("clear")
            cycles["apply"].append((await drv.run(CoreOp.APPLY))[0])
            entry = {"kind": "apply", "overflow": drv.get("overflow")}
            if index in read_after:
                entry["weights"] = await drv.receive(CoreOp.READ_WEIGHTS, plan["weight_words"])
            results.append(entry)
        if progress is not None and index % 16 == 15:
            progress(results, cycles)
    return results, cycles


def run_plan_amaranth(config, plan: dict, vcd_path=None):
    """Run ``plan`` on the core in Amaranth's simulator: :func:`execute`'s ``(results,
    cycles)``. ``config`` is the core's :class:`~xbarode.model.core_config.CoreConfig`, or
    anything holding it as ``.config`` (the command line's ``AdjointParams``)."""
    from xbarode.hdl.core import Core

    from .engine import run_amaranth

    return run_amaranth(Core(getattr(config, "config", config)), execute, plan, vcd_path)


_FIELDS = {"image": ("logits", "grads", "overflow"), "apply": ("weights", "overflow")}


def compare(expected: list[dict], got: list[dict]) -> dict:
    """Count differing words (logits, gradient sums, ∂L/∂z_0, weights) and flags; name the
    first difference.

    A result missing, a field missing or of the wrong length, and a comparison of nothing
    (``compared == 0``) count as mismatches.

    Returns
    -------
    dict
        ``mismatches``, ``compared``, ``first`` (a sentence, or None).
    """
    mismatches = compared = 0
    first = None
    if len(got) != len(expected):
        return {"mismatches": max(len(expected), len(got)), "compared": len(expected),
                "first": f"{len(got)} results came back, expected {len(expected)}"}
    names = _gradient_names(expected)
    for index, (exp, res) in enumerate(zip(expected, got, strict=True)):
        if res.get("kind") != exp["kind"]:
            mismatches += 1
            first = first or f"result {index} is {res.get('kind')!r}, expected {exp['kind']!r}"
            continue
        for field in (f for f in _FIELDS[exp["kind"]] if f in exp):
            a = np.atleast_1d(exp[field])
            b = np.atleast_1d(res[field]) if field in res else np.zeros(0, dtype=a.dtype)
            compared += a.size
            if a.shape != b.shape:
                mismatches += max(a.size, b.size, 1)
                first = first or (f"{exp['kind']} {index}: {field} has {b.size} words, "
                                  f"expected {a.size}")
                continue
            bad = np.flatnonzero(a != b)
            mismatches += bad.size
            if bad.size and first is None:
                where = field if a.size == 1 else f"{field}[{bad[0]}]"
                if field in names:
                    where += f" ({names[field](bad[0])})"
                first = (f"{exp['kind']} {index}: {where} is {b[bad[0]]}, the model says "
                         f"{a[bad[0]]}")
    if compared == 0:
        mismatches, first = max(mismatches, 1), first or "nothing was compared (no result)"
    return {"mismatches": mismatches, "compared": compared, "first": first}


def _gradient_names(expected):
    """Readable names of the words of READ_GRAD and READ_WEIGHTS, from their sizes."""
    image = next((e for e in expected if "grads" in e), None)
    apply = next((e for e in expected if "weights" in e), None)
    if image is None or apply is None:
        return {}
    m = len(image["grads"]) - len(apply["weights"])
    classes = (len(apply["weights"]) - 2 * m * m) // (m + 1)
    parts = [("A", m, m), ("Bt", m, m), ("C", classes, m), ("d", classes, 1), ("z0", m, 1)]

    def name(k, with_z0):
        for label, rows, cols in parts if with_z0 else parts[:-1]:
            if k < rows * cols:
                return f"{label}[{k // cols}, {k % cols}]" if cols > 1 else f"{label}[{k}]"
            k -= rows * cols
        return "beyond the end"
    return {"grads": lambda k: name(k, True), "weights": lambda k: name(k, False)}
