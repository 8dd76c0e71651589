"""Stage functions the sweep tests run on Dask's workers in place of the real ones: a
training that waits for its worker to be killed, and a synthesis and a simulation without
the tools (each in a fraction of a second, their times and figures chosen by the test)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from xbarode.sweep_network import train_stage

__all__ = ["fake_fourier_synth", "fake_simulate", "fake_synth", "fake_synthesis_entry",
           "train_waiting_to_be_killed"]


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def train_waiting_to_be_killed(inputs: dict, extra: dict, *, folder, seed: int) -> dict:
    """The real training; but the first run of seed ``seed``'s training writes its worker's
    process id to ``folder/pid`` and waits to be killed (it fails if it is not)."""
    pid = Path(folder) / "pid"
    if inputs["config"]["seed"] == seed and not pid.exists():
        _write(pid, str(os.getpid()))
        time.sleep(120)
        raise RuntimeError("the worker was not killed within 120 s")
    return train_stage(inputs, extra)


def fake_synth(inputs: dict, extra: dict, *, folder, seconds: float = 0.3) -> dict:
    """A synthesis report from the core's lanes, after ``seconds``; when it ran (start and
    end, in seconds since the epoch) is written to a file of its own in ``folder``."""
    start = time.time()
    time.sleep(seconds)
    lanes = inputs["core"]["lanes"]
    _write(Path(folder) / f"synth-{os.getpid()}-{start:.6f}.json",
           json.dumps({"start": start, "end": time.time(), "lanes": lanes}))
    return {"luts": 900 * lanes, "carry": 50 * lanes, "lutram": 0, "ffs": 800 * lanes,
            "mult18": 3 * lanes, "ebr": 3 * lanes, "fmax_mhz": 80.0 - lanes,
            "logic_cells": 1000 * lanes, "yosys_seconds": 0.0, "nextpnr_seconds": 0.0,
            "files": {}}


def fake_simulate(inputs: dict, extra: dict, trained: dict, *, wrong_at: int = 0) -> dict:
    """A simulation's figures: 64000 / lanes cycles per image, the training's test accuracy;
    3 mismatches for a core of ``wrong_at`` lanes, none for the others."""
    lanes = inputs["core"]["lanes"]
    cycles = 64000 / lanes
    return {"images": inputs["images"], "agreement": 1.0, "mismatches": 3 * (lanes == wrong_at),
            "compared": 9, "first_mismatch": "logits[0]" if lanes == wrong_at else None,
            "accuracy": trained["summary"]["test_accuracy"],
            "model_accuracy": trained["summary"]["test_accuracy"], "cycles_per_image": cycles,
            "mac_bound_cycles": cycles, "cycles_ratio": 1.0, "waveform": None,
            "seconds": 0.0, "build_seconds": 0.0}


def fake_synthesis_entry(design: dict) -> dict:
    """A finished synthesis of one of the Fourier study's designs, as the study records it,
    its figures from the design's size and path."""
    return {"status": "done", "key": design["key"], "luts": 100 * design["size"],
            "carry": 10, "lutram": 0, "ffs": 50, "mult18": 4, "ebr": 2,
            "fmax_mhz": 150.0 - design["size"] - (design["path"] == "direct"), "fmax": {},
            "utilisation": {}, "yosys_seconds": 0.0, "nextpnr_seconds": 0.0, "files": {},
            "seconds": 0.0, "source": None, "critical_path": None}


def fake_fourier_synth(inputs: dict, extra: dict) -> dict:
    """The Fourier sweep's synth stage without the tools: :func:`fake_synthesis_entry`."""
    return fake_synthesis_entry(inputs["design"])
