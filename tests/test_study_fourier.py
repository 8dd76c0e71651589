"""Tests of the Fourier study (``xbarode study fourier``): files written, cycle formulas against
the simulator and against the hardware's own parameters, multiply–accumulates and memory
words against independent counts, the crossover sentences, the synthesis cache, bad input.

No test runs yosys or nextpnr (``--no-synth``, or every synthesis already in the cache)."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from helpers import last_json, run
from xbarode import study_fourier as study
from xbarode.cli import main
from xbarode.hdl.fourier import Dft2d
from xbarode.model import fixed_ops
from xbarode.model.conv import conv_matrix
from xbarode.model.fixed import LFSR_SEED, Format, Overflow, Rounder
from xbarode.sim.fourier_plan import FourierParams, make_plan, run_plan_amaranth

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIZES = (4, 6)
KERNELS = (1, 3)
FILES = ("fourier.md", "fourier.json", "fourier.png")


def _main(*argv):
    """Run ``xbarode ARGV`` in-process outside a function-scoped fixture."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([str(a) for a in argv])
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def fourier(tmp_path_factory):
    """One small study through the command line, without synthesis."""
    out = tmp_path_factory.mktemp("fourier")
    code, stdout, stderr = _main("study", "fourier", "--sizes", ",".join(map(str, SIZES)),
                                 "--kernels", ",".join(map(str, KERNELS)), "--no-synth",
                                 "--out", out, "--build", out / "build", "--json")
    return code, stdout, stderr, out


def _rows(out):
    saved = json.loads((out / "fourier.json").read_text())
    return saved, {row["size"]: row for row in saved["rows"]}


def test_study_writes_its_files(fourier):
    code, stdout, stderr, out = fourier
    assert code == 0, stderr
    result = last_json(stdout)
    assert result["command"] == "study fourier"
    assert sorted(result["files"].values()) == sorted(str(out / name) for name in FILES)
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)   # no temporary, no build
    assert (out / "fourier.png").read_bytes()[:8] == PNG_SIGNATURE
    saved, rows = _rows(out)
    assert sorted(rows) == list(SIZES) and saved["params"]["kernels"] == list(KERNELS)
    assert result["rows"] == saved["rows"]
    text = (out / "fourier.md").read_text()
    assert text == study.fourier_markdown(saved)
    for size in SIZES:
        assert f"| {size}×{size} | Fourier |" in text
        assert f"| {size}×{size} | direct (m = {size * size}) |" in text
        for k in KERNELS:
            assert f"| {size}×{size} | {k} |" in text           # the error table
    assert "not run (--no-synth)" in text
    for key, _, _ in study.FOURIER_METRICS:
        assert result["crossover"][key]["sentence"] in text
    assert "simulating Fourier CONV at 4x4" in stderr                 # progress on stderr


def _conv_latency_from_hardware(size, lanes):
    """CONV latency rebuilt vector by vector: forward, one cycle to address the buffer, the
    2n words into the array two a cycle (one with odd lanes) but the last, the product (a
    2n×2n tile of ``min(lanes, 2n)`` lanes: CrossbarTile's documented ``rows·C + T + 7``)
    starting with it, whose words go back as they come; each later vector of the pass
    addressed at the product's last issue (cycle ``rows·C``) and written in the cycles
    after, its product starting when both the array is idle and its last word is in;
    inverse, the transposed product (``rows·C + 7``) fed as it runs (one cycle later), one
    cycle to address the result, 2n words back two a cycle (one with odd lanes)."""
    total = 0
    for inverse in (False, True):
        total += 4
        for n in (size, size):                          # rows array, columns array
            p = min(lanes, 2 * n)
            tree = 0 if inverse else math.ceil(math.log2(p) / 2)
            product = 2 * n * math.ceil(2 * n / p) + tree + 7
            per_cycle = 1 if p % 2 else 2
            issue = 2 * n * math.ceil(2 * n / p)
            for vector in range(size):
                if inverse:
                    total += (product + 1) + 1 + 2 * n // per_cycle
                elif vector == 0:
                    total += 1 + (2 * n // per_cycle - 1) + product
                else:       # since the last product's start
                    fed = issue + 1 + (2 * n // per_cycle - 1)
                    total += max(product, fed)
    return total + size * size + 4


def test_cycles_match_the_simulator_and_the_hardware_parameters(fourier):
    _, _, _, out = fourier
    _, rows = _rows(out)
    for size, row in rows.items():
        for path in ("fourier", "direct"):
            figures = row[path]
            assert figures["simulated_cycles"] == figures["compute_cycles"]
            assert figures["simulation_mismatches"] == 0
        assert row["fourier"]["compute_cycles"] == _conv_latency_from_hardware(size, 16)
        m, p = size * size, row["direct"]["multipliers"]
        assert row["direct"]["compute_cycles"] == (
            m * math.ceil(m / p) + math.ceil(math.log2(p) / 2) + 7)
        assert row["fourier"]["cycles"] == size * size + row["fourier"]["compute_cycles"] + \
            size * size + 1
    # The simulator, run here on its own, agrees with what the study reported.
    params = FourierParams(unit="fourier-conv", height=4, width_px=4, kernel=3, lanes=16)
    _, cycles = run_plan_amaranth(params, make_plan(params, 1, 5))
    assert cycles["CONV"] == rows[4]["fourier"]["compute_cycles"]
    assert study.fourier_conv_latency(16, 16, 16) == _conv_latency_from_hardware(16, 16)
    assert study.fourier_conv_latency(9, 9, 5) == _conv_latency_from_hardware(9, 5)


def test_a_wrong_formula_fails_the_study(capsys, tmp_path, monkeypatch):
    real = study.fourier_conv_latency
    monkeypatch.setattr(study, "fourier_conv_latency", lambda h, w, lanes: real(h, w, lanes) + 1)
    code, _, err = run(capsys, "study", "fourier", "--sizes", "4", "--kernels", "3",
                       "--no-synth", "--out", tmp_path, "--json")
    assert code == 1
    assert "Fourier CONV at 4x4: simulated 340 cycles, the formula says 341" in err
    assert not (tmp_path / "fourier.json").exists()


def test_multipliers_macs_and_memory_match_independent_counts(fourier, monkeypatch):
    _, _, _, out = fourier
    _, rows = _rows(out)
    products = {"n": 0}
    real_matmul, real_hadamard = fixed_ops.exact_matmul, fixed_ops.hadamard_fixed

    def counting_matmul(a, b, label="matmul"):
        products["n"] += a.shape[0] * b.size            # every entry times every vector
        return real_matmul(a, b, label)

    def counting_hadamard(x, spectrum, **kwargs):
        products["n"] += 4 * (x.size // 2)              # four real products per element
        return real_hadamard(x, spectrum, **kwargs)

    monkeypatch.setattr(fixed_ops, "exact_matmul", counting_matmul)
    monkeypatch.setattr(fixed_ops, "hadamard_fixed", counting_hadamard)
    data, twiddle, spec = Format(18, 10), Format(18, 16), Format(18, 14)
    rng = np.random.default_rng(1)
    for size, row in rows.items():
        kernel = rng.uniform(-0.5, 0.5, (3, 3))
        image = data.quantize(rng.uniform(0, 1, (1, size, size)))
        products["n"] = 0
        fixed_ops.fourier_conv_fixed(kernel, image, data=data, twiddle=twiddle, spectrum=spec,
                                     rounder=fixed_ops.fourier_rounders("nearest", LFSR_SEED),
                                     overflow=Overflow())
        assert row["fourier"]["macs"] == products["n"]
        matrix = Format(16, 12).quantize(conv_matrix(kernel, (size, size)))
        tile = fixed_ops.FixedTile(matrix, weight_format=Format(16, 12), acc_width=48,
                                   rounder=Rounder("nearest"))
        products["n"] = 0
        tile.forward(image.reshape(1, -1), Format(16, 12), Format(16, 12))
        assert row["direct"]["macs"] == products["n"]
        for path in ("fourier", "direct"):                # no more products than multipliers
            figures = row[path]                           # can make in the compute cycles
            assert 0 < figures["multiplier_use"] <= 1
            assert figures["macs"] <= figures["multipliers"] * figures["compute_cycles"]

        tables = 2 * fixed_ops.twiddle_matrix(size, twiddle).size
        buffer = np.zeros((size, size, 2)).size            # complex words, re and im
        spectrum = fixed_ops.spectrum_words(kernel, (size, size), spec).size
        assert row["fourier"]["memory_words"] == tables + buffer + spectrum
        assert row["direct"]["memory_words"] == matrix.size           # every weight stored

        lanes = Dft2d.array_lanes(size, size, 16)     # as the unit caps lanes=16 per array
        assert row["fourier"]["multipliers"] == sum(lanes) + 4
        assert row["direct"]["multipliers"] == min(sum(lanes) + 4, size * size)


def test_fixed_point_errors_are_within_the_documented_bound(fourier):
    _, _, _, out = fourier
    saved, _ = _rows(out)
    assert {(e["size"], e["kernel"]) for e in saved["errors"]} == \
        {(s, k) for s in SIZES for k in KERNELS}
    for e in saved["errors"]:
        taps = np.abs(study.study_kernel(e["size"], e["kernel"])).sum()
        assert e["kernel_abs_sum"] == pytest.approx(taps)
        bound = 2 * e["size"] * max(1.0, taps) * (2**-10 + 2**-16 + 2**-14)
        assert e["fourier_bound"] == pytest.approx(bound)
        assert 0 < e["fourier_error"] <= bound and e["within_bound"]
        assert e["fourier_error_lsb"] == pytest.approx(e["fourier_error"] * 2**10)
        assert e["fourier_saturations"] == 0 and e["direct_saturations"] == 0
        # The direct tile: half an output LSB plus the quantised weights' error on [0, 1)
        # inputs, plus the inputs' own rounding times the taps.
        assert e["direct_error"] <= 2**-13 * (1 + e["size"] ** 2 + 2 * taps)


def test_device_fit():
    big = study.direct_figures(28, 16, "ecp5-85f")
    assert not big["fits"]
    assert f"needs {784**2 * 16 / 2**20:.1f} Mbit" in big["fit_message"]
    assert "the device has 3.7 Mbit" in big["fit_message"]
    assert study.direct_figures(16, 16, "ecp5-85f")["fits"]       # 256x256: 72 of 208 EBR
    # One bank per lane: 36 banks of 128 words need 36 EBR, more than the 12F's 32.
    assert not study.direct_figures(8, 16, "ecp5-12f")["fits"]


def _fake_result(fourier_values, direct_values, fits=None):
    sizes = [8, 16, 28][:len(fourier_values)]
    fits = fits or [True] * len(sizes)
    rows = [{"size": s, "fourier": {"cycles": f, "luts": f},
             "direct": {"cycles": d, "luts": d, "fits": ok}}
            for s, f, d, ok in zip(sizes, fourier_values, direct_values, fits, strict=True)]
    return {"rows": rows, "params": {"lanes": 16, "device": "ecp5-85f"}}


@pytest.mark.parametrize(("fourier_values", "direct_values", "fits", "expected"), [
    ([5, 3, 1], [4, 4, 4], None, "wins from 16×16 on"),
    ([5, 5, 5], [4, 4, 4], None, "does not win within the sizes measured"),
    ([1, 1, 1], [4, 4, 4], None, "wins at every size measured, from 8×8"),
    ([1, 5, 5], [4, 4, 4], None, "wins only at 8×8"),
    ([5, 5, 5], [4, 4, None], [True, True, False], "wins from 28×28 on"),
])
def test_crossover_sentences(fourier_values, direct_values, fits, expected):
    metric = "luts" if fits else "cycles"
    result = study.crossover(_fake_result(fourier_values, direct_values, fits), metric)
    assert expected in result["sentence"]
    if fits:
        assert "direct does not fit the device" in result["sentence"]


def test_formula_crossover_of_macs():
    # 16·S³ + 4·S² against S⁴: the Fourier path does fewer from S = 17 on.
    first = next(s for s in range(1, 100) if 16 * s**3 + 4 * s**2 < s**4)
    result = study.crossover(_fake_result([1], [2]), "macs")
    assert result["formula_from"] == first


def test_cached_syntheses_are_reused(capsys, tmp_path):
    args = ("study", "fourier", "--sizes", "4", "--kernels", "3", "--out", tmp_path,
            "--build", tmp_path / "build", "--json")
    code, _, err = run(capsys, *args, "--no-synth")
    assert code == 0, err
    saved = json.loads((tmp_path / "fourier.json").read_text())
    keys = sorted(saved["synthesis"])
    assert len(keys) == 2 and all(e["status"] == "not run" for e in saved["synthesis"].values())
    for number, key in enumerate(keys):
        saved["synthesis"][key] = {"status": "done", "key": key, "luts": 1000 + number,
                                   "carry": 1, "lutram": 0, "ffs": 2, "mult18": 3, "ebr": 4,
                                   "fmax_mhz": 50.0 + number, "critical_path": None}
    (tmp_path / "fourier.json").write_text(json.dumps(saved))
    code, out, err = run(capsys, *args)                              # --synth is the default
    assert code == 0, err
    assert "reusing the cached result" in err and not (tmp_path / "build").exists()
    result = last_json(out)
    luts = {row["fourier"]["luts"] for row in result["rows"]} | \
        {row["direct"]["luts"] for row in result["rows"]}
    assert luts == {1000, 1001}
    text = (tmp_path / "fourier.md").read_text()
    assert "| 1,000 |" in text and "| 1,001 |" in text


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--sizes", "0", "--sizes must list image sizes >= 1"),
    ("--sizes", "a,4", "--sizes takes comma-separated integers"),
    ("--kernels", "4", "--kernels must list odd kernel sizes >= 1, not [4]"),
    ("--kernels", "3,7", "a 7x7 kernel does not fit a 6x6 image"),
    ("--lanes", "0", "must be >= 1"),
    ("--device", "ecp5-99f", "invalid choice"),
])
def test_bad_input_exits_2(capsys, tmp_path, option, value, message):
    argv = {"--sizes": "6", "--kernels": "3"}
    argv[option] = value
    code, out, err = run(capsys, "study", "fourier", *[a for kv in argv.items() for a in kv],
                         "--no-synth", "--out", tmp_path, "--json")
    assert code == 2 and out == "" and message in err
    assert not (tmp_path / "fourier.json").exists()


def test_help(capsys):
    code, out, _ = run(capsys, "study", "fourier", "--help")
    assert code == 0
    for option in ("--sizes", "--kernels", "--lanes", "--synth", "--no-synth", "--device",
                   "--out", "--json"):
        assert option in out


def test_source_state_digests_the_python_sources_only(tmp_path):
    """The recorded code is named by a digest of the sources' paths and bytes (hashlib over
    the same files here), which changes with any byte of a ``.py`` file and not otherwise."""
    import hashlib

    for folder in study.SOURCE_DIRS:
        (tmp_path / folder / "sub").mkdir(parents=True)
        (tmp_path / folder / "sub" / "b.py").write_text(f"# {folder} b\n")
        (tmp_path / folder / "a.py").write_text(f"# {folder} a\n")
    (tmp_path / "hdl" / "notes.txt").write_text("not code\n")
    expected = hashlib.sha256()
    for folder in study.SOURCE_DIRS:
        for name in ("a.py", "sub/b.py"):
            expected.update(f"{folder}/{name}".encode() + b"\0")
            expected.update(f"# {folder} {name[-4]}\n".encode() + b"\0")
    first = study.source_state(tmp_path)
    assert first["digest"] == expected.hexdigest()
    (tmp_path / "hdl" / "notes.txt").write_text("changed, still not code\n")
    assert study.source_state(tmp_path) == first
    (tmp_path / "model" / "sub" / "b.py").write_text("# model b \n")
    assert study.source_state(tmp_path)["digest"] != first["digest"]
