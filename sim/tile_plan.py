"""Co-simulation of the crossbar tile: random plans, the model's answers, the comparison.

A *plan* is data that every simulator back end runs the same way: for each vector, load the
weights, then a random sequence of operations (forward, transposed, update; with gradient
words, also forward_g and transposed_g), each with its random operands; after each operation
the result (``y`` for a product, the read-back weights for an update) and the sticky overflow
flag are recorded. The fixed-point model (:class:`~xbarode.model.fixed_ops.FixedTile`)
answers the same plan; :func:`compare` checks every word and flag.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from xbarode.hdl.dsp import DSP_MAPPINGS, dsp_platform
from xbarode.model.device import DEVICE_SEED, DeviceModel
from xbarode.model.fixed import Format, Overflow, Rounder
from xbarode.model.fixed_ops import FixedTile

__all__ = ["DSP_MAPPINGS", "GRAD_OPS", "TileParams", "compare", "execute", "make_plan",
           "model_results", "run_plan_amaranth", "training_plan"]

OPS = ("forward", "transposed", "update")
#: The training operations of a tile with ``grad_frac``: the products on gradient words
#: (FORWARD_G, TRANSPOSED_G), ACCUMULATE (``G += s xᵀ``, ``s`` gradient words; READ_G after
#: it) and APPLY (one SGD step from ``G``; READ_W after it).
GRAD_OPS = ("forward_g", "accumulate", "transposed_g", "apply")

@dataclass(frozen=True)
class TileParams:
    """Everything that defines a tile build: sizes, formats, rounding, learning-rate shift."""

    rows: int
    cols: int
    lanes: int
    width: int
    frac: int
    rounding: str = "nearest"
    eta_shift: int = 4
    acc_width: int = 48
    lfsr_seed: int = 0xACE1ACE1
    #: Multiplier mapping of the Verilog: "none" (plain Verilog) or "ecp5" (MULT18X18D cells
    #: with their own registers, as ``xbarode synth`` builds it; cocotb simulates them with
    #: :data:`xbarode.sim.ecp5_models.MULT18X18D_MODEL`).
    dsp: str = "none"
    #: READ_* through the chain of lane registers; None (resolved on construction): from
    #: CHAIN_MIN_LANES lanes.
    read_chain: bool | None = None
    #: The array's read models (docs/device.md), in the tile and in its model; None: none.
    device: DeviceModel | None = None
    #: Seed of the device generators (the read noise's LFSR is site 0 of it).
    device_seed: int = DEVICE_SEED
    #: Fractional bits of gradient words (``width`` bits): the tile gets ``grad_format`` and
    #: the plan its products on gradients (forward_g, transposed_g) among the others; None:
    #: an inference tile.
    grad_frac: int | None = None
    #: Extra right shift of the products on gradients (the tile's ``grad_shift``).
    grad_shift: int = 0
    #: APPLY's learning rate is ``2^-sgd_shift`` (the tile's ``sgd_shift``; with ``grad_frac``).
    sgd_shift: int = 0

    def __post_init__(self):
        if self.read_chain is None:
            from xbarode.hdl.tile import CHAIN_MIN_LANES

            object.__setattr__(self, "read_chain", self.lanes >= CHAIN_MIN_LANES)

    @property
    def platform(self):
        """The ``platform`` the Verilog is elaborated for (see :class:`xbarode.hdl.dsp.Ecp5Dsp`)."""
        return dsp_platform(self.dsp)

    @property
    def format(self) -> Format:
        """The format of weights, inputs and outputs (one format for all three)."""
        return Format(self.width, self.frac)

    @property
    def grad_format(self) -> Format | None:
        """The format of gradient words, or None (no ``grad_frac``)."""
        return None if self.grad_frac is None else Format(self.width, self.grad_frac)

    def _tile_arguments(self) -> dict:
        f = self.format
        grad = {} if self.grad_frac is None else {"grad_format": self.grad_format,
                                                  "grad_shift": self.grad_shift,
                                                  "sgd_shift": self.sgd_shift}
        return grad | {
            "rows": self.rows, "cols": self.cols, "lanes": self.lanes, "weight_format": f,
            "input_format": f, "output_format": f, "acc_width": self.acc_width,
            "rounding": self.rounding, "eta_shift": self.eta_shift,
            "lfsr_seed": self.lfsr_seed, "read_chain": self.read_chain,
            "device": self.device, "device_seed": self.device_seed}

    def check(self) -> None:
        """Refuse bad parameters with the tile's own messages, without building a tile."""
        from xbarode.hdl.tile import CrossbarTile

        self.platform  # noqa: B018 -- validates dsp
        CrossbarTile.check_parameters(**self._tile_arguments())

    def component(self):
        """The Amaranth tile for these parameters."""
        from xbarode.hdl.tile import CrossbarTile

        self.platform  # noqa: B018 -- validates dsp
        return CrossbarTile(**self._tile_arguments())


def make_plan(params: TileParams, vectors: int, seed: int, ops_per_vector: int = 4) -> dict:
    """A random plan: ``vectors`` weight sets, each with ``ops_per_vector`` operations.

    Every fourth vector is a saturation corner: all weights and operands at full scale
    (``min_int`` or ``max_int``, random signs), so that every narrowing saturates. With
    ``grad_frac`` the operations cycle through the training operations and the others
    (:data:`GRAD_OPS` then forward, transposed, update), vector after vector.
    """
    ops = OPS if params.grad_frac is None else (*GRAD_OPS, *OPS)
    rng = np.random.default_rng(seed)
    f = params.format
    plan = []
    def words(n, corner):
        if corner:
            return rng.choice([f.min_int, f.max_int], n)
        return rng.integers(f.min_int, f.max_int + 1, n)

    for v in range(vectors):
        corner = v % 4 == 3

        vector = {"weights": words(params.rows * params.cols, corner).tolist(), "ops": []}
        for k in range(ops_per_vector):
            if params.grad_frac is None:
                op = ops[k % 3] if k < 3 else ops[int(rng.integers(len(ops)))]
            else:
                op = ops[(k + ops_per_vector * v) % len(ops)]
            entry = {"op": op}
            if op in ("forward", "forward_g", "update", "accumulate"):
                entry["x"] = words(params.cols, corner).tolist()
            if op in ("transposed", "transposed_g", "update", "accumulate"):
                entry["s"] = words(params.rows, corner).tolist()
            vector["ops"].append(entry)
        plan.append(vector)
    # asdict: the device model becomes a dict of its fields (the plan travels as JSON).
    return {"params": asdict(params), "vectors": plan, "limits": operation_limits(params)}


def training_plan(params: TileParams, images: np.ndarray, labels: np.ndarray) -> tuple[dict,
                                                                                       np.ndarray]:
    """A linear classifier trained on the tile, one image after the other, as a plan.

    The tile holds ``W`` (``rows`` classes × ``cols`` pixels), loaded as zeros. Per image
    ``x`` (pixels in [0, 1], rounded to the tile's format): FORWARD gives the logits ``y``;
    the host computes ``δ = softmax(y) − onehot(label)`` in float64 and rounds it to the
    format (half away from zero, saturated); UPDATE with ``s = −δ`` takes the SGD step
    ``W ← W − δ xᵀ·2^-eta_shift`` (with the device's ``pulses``: as pulse trains). The host's
    decisions are the fixed-point model's (:class:`FixedTile`, the same parameters and
    seeds): run on the RTL, the plan is the same training run only if every logit and every
    weight equals the model's, which :func:`compare` checks after each operation.

    Returns
    -------
    plan : dict
        One vector (zero weights; per image a ``forward`` and an ``update``).
    weights : ndarray of int64, (rows, cols)
        The model's weights after the last update.

    Raises
    ------
    ValueError
        If ``images`` is not (n, cols) or ``labels`` not n integers in ``0 … rows − 1``.
    """
    f = params.format
    images = np.asarray(images, dtype=np.float64)
    labels = np.asarray(labels)
    if images.ndim != 2 or images.shape[1] != params.cols:
        raise ValueError(f"images must be (n, {params.cols}) for a tile of {params.cols} "
                         f"columns, not {images.shape}")
    if (labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer)
            or (labels.size and not 0 <= labels.min() <= labels.max() < params.rows)):
        raise ValueError(f"labels must be {len(images)} integers in 0..{params.rows - 1}, one "
                         f"per image (a class per row of the tile)")

    def words(values):
        scaled = np.sign(values) * np.floor(np.abs(values) * 2.0**f.frac + 0.5)
        return np.clip(scaled, f.min_int, f.max_int).astype(np.int64)

    zeros = np.zeros((params.rows, params.cols), dtype=np.int64)
    tile = FixedTile(zeros, weight_format=f, acc_width=params.acc_width,
                     rounder=Rounder(params.rounding, params.lfsr_seed), overflow=Overflow(),
                     name="tile", device=params.device, device_seed=params.device_seed)
    pulses = params.device is not None and params.device.pulses is not None
    ops = []
    for image, label in zip(images, labels, strict=True):
        x = words(image)
        logits = tile.forward(x[None, :], f, f)[0] / 2.0**f.frac
        p = np.exp(logits - logits.max())
        delta = p / p.sum()
        delta[label] -= 1.0
        s = -words(delta)
        if pulses:
            tile.pulsed_update(-s[None, :], f, x[None, :], f, shift=params.eta_shift)
        else:
            tile.update(s, f, x, f, shift=params.eta_shift)
        ops += [{"op": "forward", "x": x.tolist()},
                {"op": "update", "x": x.tolist(), "s": s.tolist()}]
    plan = {"params": asdict(params), "vectors": [{"weights": zeros.ravel().tolist(),
                                                   "ops": ops}],
            "limits": operation_limits(params)}
    return plan, tile.weights.copy()


def operation_limits(params: TileParams) -> dict[str, int]:
    """Cycle limits of the plan's compute operations (FORWARD, TRANSPOSED, UPDATE, and with
    ``grad_frac`` those of :data:`GRAD_OPS`, by :class:`~xbarode.hdl.tile.TileOp` name), from
    the tile's documented latency bounds (:mod:`xbarode.sim.latency`)."""
    from .latency import limit, tile_bound

    pulses = params.device is not None and params.device.pulses is not None
    ops = OPS if params.grad_frac is None else (*OPS, *GRAD_OPS)
    return {name.upper(): limit(tile_bound(params.rows, params.cols, params.lanes, name.upper(),
                                           pulses=pulses))
            for name in ops}


async def execute(plan: dict, drv, progress=None):
    """Run a tile plan through a co-simulation driver (:mod:`xbarode.sim.engine`): per
    vector clear the flag and load the weights; per operation load its operands, run it,
    read ``y`` (products) or the weights (update) and the flag.

    Returns
    -------
    results : list of list of dict
        Per vector and operation: ``out`` (words) and ``overflow`` (the sticky flag).
    cycles : dict
        Latency (start to done, inclusive) of each operation kind, by plan name.
    """
    from xbarode.hdl.tile import TileOp

    rows, cols = plan["params"]["rows"], plan["params"]["cols"]
    results, cycles = [], {}
    for vector in plan["vectors"]:
        await drv.strobe("clear")
        await drv.send(TileOp.LOAD_W, vector["weights"])
        answers = []
        for entry in vector["ops"]:
            if "x" in entry:
                await drv.send(TileOp.LOAD_X, entry["x"])
            if "s" in entry:
                await drv.send(TileOp.LOAD_S, entry["s"])
            cycles[entry["op"]], _ = await drv.run(TileOp[entry["op"].upper()])
            if entry["op"] in ("update", "apply"):
                out = await drv.receive(TileOp.READ_W, rows * cols)
            elif entry["op"] == "accumulate":
                out = await drv.receive(TileOp.READ_G, rows * cols)
            else:
                out = await drv.receive(TileOp.READ_Y, rows if entry["op"] in (
                    "forward", "forward_g") else cols)
            answers.append({"out": out, "overflow": drv.get("overflow")})
        results.append(answers)
        if progress is not None:
            progress(results, cycles)
    return results, cycles


def run_plan_amaranth(params: TileParams, plan: dict, vcd_path=None):
    """Run ``plan`` on the tile in Amaranth's simulator: :func:`execute`'s ``(results,
    cycles)``."""
    from .engine import run_amaranth

    return run_amaranth(params.component(), execute, plan, vcd_path)


def model_results(params: TileParams, plan: dict) -> list[list[dict]]:
    """The fixed-point model's answer to every operation of a plan.

    One model tile serves the whole plan, as one hardware tile does: the LFSRs (rounding and
    the device's) run on across vectors, and the overflow flag is cleared before a vector's
    weights are loaded (:meth:`FixedTile.load <xbarode.model.fixed_ops.FixedTile.load>`).
    """
    f, g = params.format, params.grad_format
    overflow = Overflow()
    tile = None
    grad = np.zeros((params.rows, params.cols), dtype=np.int64)   # ACCUMULATE's sums
    results = []
    for vector in plan["vectors"]:
        weights = np.array(vector["weights"], dtype=np.int64).reshape(params.rows, params.cols)
        # LOAD_W after the clear: the device's write models program the words (the model
        # tile programs its first weights as it is made, draw for draw the same).
        overflow.clear()
        if tile is None:
            tile = FixedTile(weights, weight_format=f, acc_width=params.acc_width,
                             rounder=Rounder(params.rounding, params.lfsr_seed),
                             overflow=overflow, name="tile", device=params.device,
                             device_seed=params.device_seed)
        else:
            tile.load(weights)
        answers = []
        for entry in vector["ops"]:
            if entry["op"] == "forward":
                out = tile.forward(np.array([entry["x"]]), f, f)[0]
            elif entry["op"] == "transposed":
                out = tile.transposed(np.array([entry["s"]]), f, f)[0]
            elif entry["op"] == "forward_g":
                out = tile.forward(np.array([entry["x"]]), g, g, shift=params.grad_shift)[0]
            elif entry["op"] == "transposed_g":
                out = tile.transposed(np.array([entry["s"]]), g, g, shift=params.grad_shift)[0]
            elif entry["op"] == "accumulate":
                grad = grad + np.outer(entry["s"], entry["x"])
                out = grad.ravel()
            elif entry["op"] == "apply":
                # One SGD step from G (then G <- 0), through the device's write models.
                tile.apply_gradient(grad, g.frac + f.frac, shift=params.sgd_shift)
                grad = np.zeros_like(grad)
                out = tile.weights.ravel()
            elif params.device is not None and params.device.pulses is not None:
                # A pulsed UPDATE is one sample's pulse trains with δ = −s: its expected step
                # is the digital UPDATE's + s xᵀ·2^-eta_shift.
                tile.pulsed_update(-np.array([entry["s"]]), f, np.array([entry["x"]]), f,
                                   shift=params.eta_shift)
                out = tile.weights.ravel()
            else:
                tile.update(np.array(entry["s"]), f, np.array(entry["x"]), f,
                            shift=params.eta_shift)
                out = tile.weights.ravel()
            answers.append({"out": out.tolist(), "overflow": int(overflow.flag)})
        results.append(answers)
    return results


def compare(expected: list[list[dict]], got: list[list[dict]]) -> dict:
    """Count differing words and flags; name the first difference.

    A vector or result missing, a result of the wrong length, and a comparison of nothing
    (``compared == 0``) count as mismatches.

    Returns
    -------
    dict
        ``mismatches`` (words and flags that differ), ``compared`` (words and flags checked),
        ``first`` (a sentence naming the first difference, or None).
    """
    mismatches = compared = 0
    first = None
    if len(got) != len(expected):
        return {"mismatches": max(len(expected), len(got)), "compared": 0,
                "first": f"{len(got)} vectors came back, expected {len(expected)}"}
    for v, (exp_ops, got_ops) in enumerate(zip(expected, got, strict=True)):
        if len(got_ops) != len(exp_ops):
            mismatches += max(len(exp_ops), len(got_ops))
            first = first or (f"vector {v}: {len(got_ops)} results came back, expected "
                              f"{len(exp_ops)}")
            continue
        for k, (exp, res) in enumerate(zip(exp_ops, got_ops, strict=True)):
            a, b = np.array(exp["out"]), np.array(res.get("out", []))
            compared += a.size + 1
            if a.shape != b.shape:
                mismatches += max(a.size, b.size, 1)
                first = first or f"vector {v}, operation {k}: {b.size} words, expected {a.size}"
                continue
            bad = np.flatnonzero(a != b)
            mismatches += bad.size
            if bad.size and first is None:
                first = (f"vector {v}, operation {k}: word {bad[0]} is {b[bad[0]]}, "
                         f"the model says {a[bad[0]]}")
            if exp["overflow"] != res.get("overflow"):
                mismatches += 1
                first = first or (f"vector {v}, operation {k}: overflow flag "
                                  f"{res.get('overflow')}, the model says {exp['overflow']}")
    if compared == 0:
        mismatches, first = max(mismatches, 1), first or "nothing was compared (no result)"
    return {"mismatches": mismatches, "compared": compared, "first": first}
