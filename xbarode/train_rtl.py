"""``xbarode train --on rtl``: SGD on the digits in RTL simulation, next to the model.

The core is built with its training hardware (``training = true``); each training image
goes through RUN, the host's softmax (``∂L/∂logits``), LOAD_GRAD and BACKWARD; after every
``batch`` images one APPLY is the SGD step. The ``[device]`` table's read models (DAC, ADC,
read noise) apply to every product, BACKWARD's on gradients too, and its write models
(states, programming noise) to the loads and APPLY's writes, in the core and in the model
alike; with ``pulses`` APPLY is the model's pulsed step (every image's and step's pairs
through the tiles' pulsed UPDATE, :mod:`xbarode.hdl.core_pulses`). The fixed-point model
trains on the
same images in the same order (:mod:`xbarode.sim.adjoint_plan`); every logit of every image
and the final weights are compared, and the loss curve is reported from both.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from xbarode.model.core_config import CoreConfig

__all__ = ["initial_params", "train_rtl"]


def initial_params(config: CoreConfig, seed: int = 0) -> dict:
    """The training's seeded initial parameters (:func:`xbarode.model.train.init_params`)
    for the network the core configuration describes."""
    from xbarode.model.train import Config, init_params

    return init_params(Config(structure=config.structure, kernel_size=config.kernel,
                              image_shape=config.image, classes=config.classes,
                              steps=config.steps, T=config.steps * config.h,
                              method=config.method, seed=seed))


def train_rtl(config: CoreConfig, params: dict, images: np.ndarray, labels, *,
              simulator: str = "verilator", out_dir=None) -> dict:
    """Train on ``images`` in RTL simulation and in the fixed-point model, side by side.

    Returns
    -------
    dict
        ``images``, ``sgd_steps``, ``mismatches`` (logits, flags and final weight words that
        differ), ``compared``, ``first_mismatch``, ``weights_identical``, ``loss_rtl`` and
        ``loss_model`` (mean loss of each mini-batch, before its step), ``cycles`` per image
        (``run``, ``backward``) and per step (``apply``), ``cycles_per_training_image``
        (run + backward + apply / batch), ``seconds``, ``waveform``.
    """
    from xbarode.sim.adjoint_plan import image_loss, make_plan
    from xbarode.units import AdjointParams, run_plan

    config = dataclasses.replace(config, training=True)
    labels = np.asarray(labels, dtype=np.int64)
    out_dir = Path(out_dir if out_dir is not None else "build/train-rtl")
    started = time.perf_counter()
    plan, expected = make_plan(config, params, images, labels, apply_every=config.batch,
                               read_grads=False, read_weights="last")
    result = run_plan("train", AdjointParams(config, config.batch), plan, expected, simulator,
                      out_dir, "xbarode.sim.adjoint_plan", "xbarode_core", 0,
                      keep_results=True)
    got = result.pop("results")
    got_images = [r for r in got if r["kind"] == "image"]
    exp_images = [e for e in expected if e["kind"] == "image"]
    rtl_loss = [image_loss(config, r["logits"], int(y)) for r, y in zip(got_images, labels,
                                                                    strict=True)]
    model_loss = [e["loss"] for e in exp_images]
    batches = range(0, len(labels), config.batch)
    cycles = result["cycles"]
    apply = float(np.mean(cycles["apply"]))
    run, backward = float(np.mean(cycles["run"])), float(np.mean(cycles["backward"]))
    final = next(e for e in reversed(expected) if "weights" in e)
    final_got = next((r for r in reversed(got) if "weights" in r), {})
    return {
        "images": len(labels), "batch": config.batch, "sgd_steps": len(plan["apply_after"]),
        "simulator": simulator, "mismatches": result["mismatches"],
        "compared": result["compared"], "first_mismatch": result["first_mismatch"],
        "weights_identical": final_got.get("weights") == final["weights"],
        "loss_rtl": [float(np.mean(rtl_loss[b:b + config.batch])) for b in batches],
        "loss_model": [float(np.mean(model_loss[b:b + config.batch])) for b in batches],
        "cycles": {"run": run, "backward": backward, "apply": apply},
        "cycles_per_training_image": run + backward + apply / config.batch,
        "seconds": time.perf_counter() - started, "waveform": result["waveform"],
    }
