"""The board end to end: the host driver through the board top level's UART pins (Verilator,
cocotb), the CLI, and the ULX3S build plan (without place-and-route).

The answers are checked against the fixed-point model (classes and every logit), the on-chip
cycle counter against the RUN latency the core's own Amaranth simulation measures
(:func:`xbarode.sim.core_plan.run_plan_amaranth`), and every damaged frame's reply against
the status codes of docs/board.md.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from xbarode.board import build
from xbarode.cli import main
from xbarode.model.core_config import load_config
from xbarode.model.train import Config, save_weights
from xbarode.sim.board_sim import simulate_board
from xbarode.sim.core_plan import (
    make_plan,
    model_results,
    random_params,
    run_plan_amaranth,
    weight_load_words,
)

CONFIG = """
[core]
image = [2, 3]
classes = 3
lanes = 2
[ode]
steps = 3
h = 0.25
[fixed]
rounding = "nearest"
"""

# docs/board.md's status codes and op codes, written out here.
OK, BAD_CRC, TIMEOUT, UNKNOWN_OP, BAD_LENGTH, BAD_STATE = range(6)
INFO, CLEAR, LOAD_D, RUN, READ_LOGITS = 0x01, 0x03, 0x13, 0x15, 0x16


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("board") / "core.toml"
    path.write_text(CONFIG)
    return path


def test_driver_through_the_simulated_uart_agrees_with_the_model(config, tmp_path):
    cfg = load_config(config)
    params = random_params(cfg, 11)
    rng = np.random.default_rng(4)
    images = np.rint(rng.uniform(0, 1, (3, cfg.m)) * 64) / 64
    images[2] = 1.0                    # a corner: every pixel at full scale
    got = simulate_board(cfg, params, images, faults=True, out_dir=tmp_path)
    expected = model_results(cfg, params, images)
    for index, (res, exp) in enumerate(zip(got["results"], expected, strict=True)):
        assert res["cls"] == exp["cls"], index
        assert res["logits"] == exp["logits"], index
        assert res["overflow"] == exp["overflow"], index
    # The on-chip counter measures what the core's own simulation measures.
    _, cycles = run_plan_amaranth(cfg, make_plan(cfg, params, images))
    assert [r["cycles"] for r in got["results"]] == cycles
    assert got["status"]["cycles"] == cycles[-1]
    assert got["info"] == {"version": 1, "m": 6, "classes": 3, "steps": 3, "in_bytes": 2,
                           "out_bytes": 2}
    faults = got["faults"]
    assert faults["run_first"] == [RUN, BAD_STATE, 0]
    assert faults["read_first"] == [READ_LOGITS, BAD_STATE, 0]
    assert faults["bad_crc"] == [INFO, BAD_CRC, 0]
    assert faults["unknown"] == [0x7F, UNKNOWN_OP, 0]
    assert faults["length"] == [LOAD_D, BAD_LENGTH, 0]
    assert faults["truncated"] == [LOAD_D, TIMEOUT, 0]
    assert faults["sync_only"] == [0, TIMEOUT, 0]
    assert faults["garbage"] == [INFO, OK, 7]
    assert faults["clear"] == [CLEAR, OK, 0]
    assert "failed after 3 attempts" in faults["cut"] and "timed out" in faults["cut"]
    assert faults["retry"] == [1, [1, 6, 0, 3, 3, 2, 2]]
    # Eight error replies: the seven damaged frames and the retried request; the truncated
    # LOAD_D left d unloaded.
    assert faults["status"]["errors"] == 8
    assert faults["status"]["flags"] & 0x08 == 0
    assert got["retried"] == 0


def test_board_run_simulate_reports_agreement_and_cycles(config, tmp_path, capsys, monkeypatch):
    # The weights built into the simulated board (the driver loads none; the load path runs
    # in the test above): the answers are still the model's.
    monkeypatch.chdir(tmp_path)     # a relative --out, as the default is
    code = main(["board", "run", "--simulate", "--built-in", "--images", "2", "--config",
                 str(config), "--random-weights", "2", "--out", "out", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["images"] == 2
    assert result["agreement"] == 1.0 and result["logit_mismatches"] == 0
    assert result["us_per_inference"] == pytest.approx(result["cycles_per_image"] / 25)
    assert result["link_bytes_per_second"] > 0


def test_board_build_writes_the_ulx3s_plan(config, tmp_path):
    cfg = load_config(config)
    result = build(cfg, "ulx3s-85f", tmp_path, run=False)
    assert result["device"] == "LFE5U-85F"
    lpf = Path(result["files"]["lpf"]).read_text()
    # The ULX3S's pins (its schematic): clock G2, FTDI rx M1 / tx L4, LED 0 B2, LED 7 H3.
    for site in ("G2", "M1", "L4", "B2", "H3"):
        assert f'SITE "{site}"' in lpf, site
    assert "FREQUENCY PORT" in lpf and "25000000" in lpf
    assert "xbarode_board" in Path(result["files"]["il"]).read_text()


def test_board_build_builds_the_weights_in(config, tmp_path, capsys):
    cfg = load_config(config)
    train = Config(image_shape=cfg.image, classes=cfg.classes, steps=cfg.steps, T=0.75)
    weights = save_weights(tmp_path / "w.npz", train, random_params(cfg, 4))
    assert main(["board", "build", "--plan-only", "--config", str(config), "--weights",
                 str(weights), "--out", str(tmp_path / "b"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["weights_built_in"] is True
    # The tiles' memories are initialised with the words: tile C's bias memory holds d
    # (RTLIL's $meminit cell: the words' 16 bits each, the last word first).
    rtlil = Path(result["files"]["il"]).read_text()
    d = weight_load_words(cfg, random_params(cfg, 4))["d"]
    bits = "".join(f"{w & 0xFFFF:016b}" for w in reversed(d))
    assert f"connect \\DATA {16 * len(d)}'{bits}\n" in rtlil
    fourier = tmp_path / "fourier.toml"
    fourier.write_text(CONFIG.replace("[core]", "[core]\nstructure = \"conv\"\n"
                                      "conv_path = \"fourier\"\nkernel = 1"))
    conv = Config(structure="conv", kernel_size=1, image_shape=cfg.image, classes=cfg.classes,
                  steps=cfg.steps, T=0.75)
    conv_weights = save_weights(tmp_path / "conv.npz", conv,
                                random_params(load_config(fourier), 4))
    assert main(["board", "build", "--plan-only", "--config", str(fourier), "--weights",
                 str(conv_weights), "--out", str(tmp_path / "f")]) == 2
    assert "built-in weights need the direct path's tiles" in capsys.readouterr().err


def test_board_build_refuses_an_unknown_board_and_a_baud_off_the_clock(config, tmp_path):
    cfg = load_config(config)
    with pytest.raises(ValueError, match="unknown board 'ulx3s-99f'"):
        build(cfg, "ulx3s-99f", tmp_path, run=False)
    with pytest.raises(ValueError, match="baud 3000000 does not divide the 25 MHz clock"):
        build(cfg, "ulx3s-85f", tmp_path, baud=3_000_000, run=False)


def test_board_commands_refuse_bad_input(config, tmp_path, capsys):
    assert main(["board", "run", "--images", "2", "--config", str(config),
                 "--random-weights", "1"]) == 2
    assert "give --port DEVICE" in capsys.readouterr().err
    assert main(["board", "build", "--baud", "3000000", "--plan-only", "--config", str(config),
                 "--out", str(tmp_path / "b")]) == 2
    assert "baud 3000000 does not divide" in capsys.readouterr().err
    assert main(["board", "run", "--simulate", "--random-weights", "1", "--weights",
                 str(tmp_path / "w.npz"), "--config", str(config)]) == 2
    assert "--weights and --random-weights exclude each other" in capsys.readouterr().err


def _fake_programmer(folder: Path, status: int) -> Path:
    """An ``openFPGALoader`` on PATH that records its arguments and exits with ``status``."""
    script = folder / "openFPGALoader"
    script.write_text(f'#!/bin/sh\necho "$@" > "{folder}/args"\necho "no cable found" >&2\n'
                      f"exit {status}\n")
    script.chmod(0o755)
    return script


def test_board_program_runs_openfpgaloader(tmp_path, capsys, monkeypatch):
    bitstream = tmp_path / "design.bit"
    bitstream.write_bytes(b"\xff\x00bitstream")
    _fake_programmer(tmp_path, 0)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert main(["board", "program", "--bitstream", str(bitstream), "--flash", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["ran"] is True and result["flash"] is True
    # docs/board.md's command line, written out.
    assert (tmp_path / "args").read_text().split() == ["--board", "ulx3s", "-f", str(bitstream)]
    assert main(["board", "program", "--bitstream", str(bitstream), "--dry-run"]) == 0
    assert capsys.readouterr().out.split()[:4] == ["openFPGALoader", "--board", "ulx3s",
                                                  str(bitstream)]


def test_board_program_says_what_is_wrong(tmp_path, capsys, monkeypatch):
    bitstream = tmp_path / "design.bit"
    assert main(["board", "program", "--bitstream", str(bitstream)]) == 2
    assert "design.bit: no bitstream there (missing or empty)" in capsys.readouterr().err
    assert main(["board", "program", "--bitstream", str(tmp_path / "design.v")]) == 2
    assert "design.v: not a bitstream (.bit)" in capsys.readouterr().err
    bitstream.write_bytes(b"\xff")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["board", "program", "--bitstream", str(bitstream)]) == 2
    assert ("openFPGALoader is not on PATH; install it with: apt-get install openfpgaloader"
            in capsys.readouterr().err)
    _fake_programmer(tmp_path, 1)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert main(["board", "program", "--bitstream", str(bitstream)]) == 2
    assert "openFPGALoader failed (exit status 1): no cable found" in capsys.readouterr().err
