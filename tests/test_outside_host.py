"""A host from outside the project drives the generated core's Verilog (Icarus, through cocotb).

The host (tests/cocotb_outside_host.py) reads only what ``xbarode generate core`` writes — the
manifest and the C header — and the expected words come from an integer reimplementation
of the core written here from docs/interface.md (not from the project's model or plans):
explicit Euler ``z <- sat(z + narrow(h·B·relu(A z)))``, ``logits = narrow(C z + (d << state
frac))``, stochastic rounding with one 32-bit Galois LFSR per tile (seeds ``lfsr_seed + 0, 1,
2`` for A, B, C), 32 clocks per draw, one draw per output word in order. The LFSRs run on
across RUNs (the same image twice gives other words) and a one-cycle reset re-seeds them
while the weights stay (the run after reset repeats the first).
"""

import json
import sys
from pathlib import Path

import numpy as np

from xbarode.cli import main

CONFIG = """
[core]
image = [2, 3]
classes = 3
lanes = 2
[ode]
steps = 3
h = 0.25
[fixed]
rounding = "stochastic"
"""
POLY = 0x80200003      # docs/interface.md: the LFSR's feedback mask


class Lfsr:
    def __init__(self, seed):
        self.state = seed

    def draw(self):
        for _ in range(32):
            self.state = (self.state >> 1) ^ (POLY if self.state & 1 else 0)
        return self.state


def narrow(value, shift, width, lfsr):
    """One rounding: add the low ``shift`` bits of a draw, shift, saturate."""
    offset = lfsr.draw() & ((1 << shift) - 1) if shift > 0 else 0
    out = (value + offset) >> shift
    return max(-(1 << (width - 1)), min((1 << (width - 1)) - 1, out))


def reference(manifest, weights, images, reset_before):
    """The logits and final states per RUN, integers, from docs/interface.md."""
    ops = {op["name"]: op for op in manifest["interface"]["operations"]}
    wf = ops["LOAD_A"]["in"][0]["format"]
    sf = ops["LOAD_IMAGE"]["in"][0]["format"]
    af = ops["READ_LOGITS"]["out"][0]["format"]
    p = manifest["parameters"]
    h_shift = round(-np.log2(p["h"]))
    seed = p["lfsr_seed"]
    A, B, C = (np.rint(np.asarray(weights[k]) * 2 ** wf["frac"]).astype(int).tolist()
               for k in "ABC")
    d = np.rint(np.asarray(weights["d"]) * 2 ** wf["frac"]).astype(int).tolist()
    m, classes = len(A), len(C)
    out = []
    for run, image in enumerate(images):
        if run == 0 or run == reset_before:
            lfsr = [Lfsr((seed + k) & 0xFFFFFFFF) for k in range(3)]
        z = [round(x * 2 ** sf["frac"]) for x in image]
        for _ in range(p["steps"]):
            u = [narrow(sum(A[i][j] * z[j] for j in range(m)), wf["frac"] + sf["frac"]
                        - af["frac"], af["width"], lfsr[0]) for i in range(m)]
            r = [max(x, 0) for x in u]
            dz = [narrow(sum(B[j][i] * r[i] for i in range(m)), wf["frac"] + af["frac"]
                         - sf["frac"] + h_shift, sf["width"], lfsr[1]) for j in range(m)]
            top = (1 << (sf["width"] - 1)) - 1
            z = [max(-top - 1, min(top, a + b)) for a, b in zip(z, dz, strict=True)]
        logits = [narrow(sum(C[k][j] * z[j] for j in range(m)) + (d[k] << sf["frac"]),
                         wf["frac"] + sf["frac"] - af["frac"], af["width"], lfsr[2])
                  for k in range(classes)]
        out.append({"logits": logits, "state": z})
    return out


def test_outside_host_drives_the_generated_core(tmp_path):
    from cocotb_tools.runner import get_runner

    config = tmp_path / "core.toml"
    config.write_text(CONFIG)
    out = tmp_path / "gen"
    assert main(["generate", "core", "--config", str(config), "--out", str(out)]) == 0
    manifest = json.loads((out / "xbarode_core.json").read_text())
    m = manifest["parameters"]["image"][0] * manifest["parameters"]["image"][1]
    classes = manifest["parameters"]["classes"]
    rng = np.random.default_rng(5)

    def grid(shape, scale, frac):
        return (np.rint(rng.normal(0, scale, shape) * 2 ** frac) / 2 ** frac).tolist()

    weights = {"A": grid((m, m), 0.6, 14), "B": grid((m, m), 0.6, 14),
               "C": grid((classes, m), 0.8, 14), "d": grid(classes, 0.5, 14)}
    pixels = (np.rint(rng.uniform(0, 1, (2, m)) * 2 ** 11) / 2 ** 11).tolist()
    images = [pixels[0], pixels[0], pixels[1], pixels[0]]
    reset_before = 3
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"manifest": str(out / "xbarode_core.json"),
                                "header": str(out / "xbarode_core.h"), "weights": weights,
                                "images": images, "reset_before": reset_before,
                                "reset_cycles": 1}))
    result_file = tmp_path / "out.json"
    runner = get_runner("icarus")
    runner.build(sources=[out / "xbarode_core.v"], hdl_toplevel="xbarode_core",
                 build_dir=tmp_path / "build", timescale=("1ns", "1ps"), always=True,
                 build_args=["-g2005"])   # docs/interface.md: Verilog-2005 semantics
    tests = str(Path(__file__).parent)
    sys.path.insert(0, tests)      # the runner hands sys.path to the simulator's Python
    try:
        runner.test(hdl_toplevel="xbarode_core", test_module="cocotb_outside_host",
                    build_dir=tmp_path / "build", test_dir=tmp_path,
                    results_xml=str(tmp_path / "results.xml"),
                    extra_env={"OUTSIDE_HOST_DATA": str(data),
                               "OUTSIDE_HOST_OUT": str(result_file)})
    finally:
        sys.path.remove(tests)
    assert result_file.is_file(), "the host failed; see the simulator's log"
    got = json.loads(result_file.read_text())
    expected = reference(manifest, weights, images, reset_before)
    for run, (res, exp) in enumerate(zip(got["results"], expected, strict=True)):
        assert res["logits"] == exp["logits"], f"run {run}"
        assert res["state"] == exp["state"], f"run {run}"
        best = max(range(classes), key=lambda k: (res["logits"][k], -k))
        assert res["cls"] == best, f"run {run}"
    # The LFSRs ran on: the same image gave other words; reset re-seeded them.
    runs = got["results"]
    assert runs[1]["logits"] != runs[0]["logits"] or runs[1]["state"] != runs[0]["state"]
    assert runs[3] == runs[0]
    # An op code the core lacks: done in the cycle after start (busy), then idle.
    assert got["nothing"] == [0, 1, 1, 0]
