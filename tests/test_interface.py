"""The host interface of every generated unit: manifest, C header, Verilator waivers, and the
handshake rules of docs/interface.md checked by simulation.

Expected op codes are the hardware's own enums; expected word counts are written here from
the units' parameters; the handshake rules are observed cycle by cycle on the Amaranth
simulator by a host that knows only the manifest's description.
"""

import argparse
import json
import os
import random
import re
import subprocess

import pytest
from amaranth.sim import Simulator

from xbarode.cli import main
from xbarode.hdl.core import CoreOp
from xbarode.hdl.fourier import FourierOp
from xbarode.hdl.fourier_bank import BankOp
from xbarode.hdl.interface import HostInterface, host_interface
from xbarode.hdl.tile import TileOp

CORE_TOML = """
[core]
image = [2, 3]
classes = 3
lanes = 2
[ode]
steps = 2
"""

# The Fourier path with channels and a pool: m = 2·2·4 = 16 state words, 8 pixels, C reads
# 2·1·2 = 4 features.
CORE_CHANNELS_TOML = """
[core]
image = [2, 4]
structure = "conv"
kernel = 1
channels = 2
pool = 2
classes = 3
lanes = 2
conv_path = "fourier"
[ode]
steps = 2
"""

# unit -> (extra arguments, top, op enum or None, expected {op: (words in, words out)})
UNITS = {
    "tile": (["--rows", "3", "--cols", "4", "--lanes", "2"], "crossbar_tile", TileOp,
             {"LOAD_W": (12, 0), "READ_W": (0, 12), "LOAD_X": (4, 0), "LOAD_S": (3, 0),
              "FORWARD": (0, 0), "READ_Y": (0, 3)}),
    # 17 lanes: READ_* through the chain of lane registers, a word every two cycles.
    "tile-chain": (["--rows", "2", "--cols", "17"], "crossbar_tile", TileOp,
                   {"LOAD_W": (34, 0), "READ_W": (0, 34), "LOAD_X": (17, 0), "READ_Y": (0, 2)}),
    "dft": (["--image", "2x3"], "dft2d", FourierOp,
            {"LOAD_REAL": (6, 0), "LOAD": (12, 0), "DFT": (0, 0), "READ": (0, 12),
             "READ_REAL": (0, 6)}),
    "fourier-conv": (["--image", "3x3", "--kernel", "1"], "fourier_conv", FourierOp,
                     {"LOAD_REAL": (9, 0), "LOAD_SPECTRUM": (18, 0), "CONV": (0, 0),
                      "READ_REAL": (0, 9)}),
    "hadamard": (["--image", "2x2"], "hadamard_unit", None,
                 {"load": (4, 0), "multiply": (4, 4)}),
    "channel-mix": (["--image", "2x2", "--channels-in", "2", "--channels-out", "3"],
                    "channel_mix", None,
                    {"load": (24, 0), "multiply": (8, 12), "multiply_adjoint": (12, 8)}),
    "fourier-bank": (["--image", "2x3", "--kernel", "1", "--channels-in", "2",
                      "--channels-out", "3"], "fourier_bank", BankOp,
                     {"LOAD_SPECTRUM": (72, 0), "LOAD_REAL": (12, 0), "LOAD_REAL_T": (18, 0),
                      "CONV": (0, 0), "READ_REAL": (0, 18), "READ_REAL_T": (0, 12)}),
    "core": (["--config", "CORE"], "xbarode_core", CoreOp,
             {"LOAD_A": (36, 0), "LOAD_B": (36, 0), "LOAD_C": (18, 0), "LOAD_D": (3, 0),
              "LOAD_IMAGE": (6, 0), "RUN": (0, 0), "READ_LOGITS": (0, 3),
              "READ_STATE": (0, 6), "READ_STATUS": (0, 2), "READ_TRAJECTORY": (0, 18),
              "READ_WEIGHTS": (0, 36 + 36 + 18 + 3)}),
    "core-channels": (["--config", "CORE_CHANNELS"], "xbarode_core", CoreOp,
                      {"LOAD_A": (2 * 4 * 8, 0), "LOAD_B": (2 * 4 * 8, 0), "LOAD_C": (12, 0),
                       "LOAD_D": (3, 0), "LOAD_IMAGE": (8, 0), "RUN": (0, 0),
                       "READ_LOGITS": (0, 3), "READ_STATE": (0, 16), "READ_STATUS": (0, 2),
                       "READ_TRAJECTORY": (0, 48), "READ_WEIGHTS": (0, 12 + 3)}),
    "adjoint": (["--config", "CORE"], "xbarode_core", CoreOp,
                {"LOAD_GRAD": (3, 0), "BACKWARD": (0, 0), "APPLY": (0, 0),
                 "READ_GRAD": (0, 36 + 36 + 18 + 3 + 6)}),
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Every unit generated once: {unit: (folder, manifest)}."""
    root = tmp_path_factory.mktemp("units")
    configs = {"CORE": root / "core.toml", "CORE_CHANNELS": root / "channels.toml"}
    configs["CORE"].write_text(CORE_TOML)
    configs["CORE_CHANNELS"].write_text(CORE_CHANNELS_TOML)
    out = {}
    for unit, (args, top, _, _) in UNITS.items():
        folder = root / unit
        args = [str(configs.get(a, a)) for a in args]
        assert main(["generate", unit.removesuffix("-chain").removesuffix("-channels"), *args,
                     "--out", str(folder)]) == 0
        out[unit] = (folder, json.loads((folder / f"{top}.json").read_text()))
    return out


@pytest.mark.parametrize("unit", list(UNITS))
def test_manifest_describes_every_port_and_operation(generated, unit):
    _, manifest = generated[unit]
    enum_type, counts = UNITS[unit][2:]
    HostInterface.validate(manifest["interface"])
    assert manifest["amaranth_metadata"]["interface"]["annotations"][
        HostInterface.schema["$id"]] == manifest["interface"]
    roles = {p["name"]: p["role"] for p in manifest["ports"]}
    assert set(roles.values()) <= {"stream", "control", "status", "clock", "reset"}
    assert roles["clk"] == "clock" and roles["rst"] == "reset"
    for name, stream in manifest["interface"]["streams"].items():
        for signal in ("valid", "ready", "payload"):
            port = next(p for p in manifest["ports"] if p["name"] == stream[signal])
            assert port["role"] == "stream" and port["group"] == name
            assert port["signal"] == signal
            # valid and payload flow with the stream, ready against it.
            flows_with = stream["direction"] if signal != "ready" else \
                {"in": "out", "out": "in"}[stream["direction"]]
            assert port["direction"] == flows_with, port
    if enum_type is not None:
        assert roles["op"] == roles["start"] == roles["clear"] == "control"
        assert roles["busy"] == roles["done"] == roles["overflow"] == "status"
        assert manifest["interface"]["op_encoding"] == {m.name: m.value for m in enum_type}
    ops = {op["name"]: op for op in manifest["interface"]["operations"]}
    for name, (n_in, n_out) in counts.items():
        assert sum(s["count"] for s in ops[name]["in"]) == n_in, name
        assert sum(s["count"] for s in ops[name]["out"]) == n_out, name
    # Each operation names the stream its words travel on: one of the unit's, in the right
    # direction, and none when it moves no words.
    streams = manifest["interface"]["streams"]
    for op in ops.values():
        for side in ("in", "out"):
            named = op[f"{side}_stream"]
            if op[side]:
                assert streams[named]["direction"] == side, (op["name"], side)
            else:
                assert named is None, (op["name"], side)
    assert all(stream["carries"] for stream in streams.values())


def test_core_formats_and_orders(generated):
    ops = {op["name"]: op for op in generated["core"][1]["interface"]["operations"]}
    assert ops["LOAD_A"]["in"][0]["format"] == {"width": 16, "frac": 14, "signed": True,
                                                "q": "Q2.14"}
    assert ops["LOAD_IMAGE"]["in"][0]["format"]["frac"] == 11
    assert ops["READ_LOGITS"]["out"][0]["format"]["frac"] == 9
    assert "B[j][i]" in ops["LOAD_B"]["in"][0]["order"]
    assert [s["name"] for s in ops["READ_WEIGHTS"]["out"]] == ["A", "Bt", "C", "d"]
    # Two streams go in: the image stream carries no operation's words.
    streams = generated["core"][1]["interface"]["streams"]
    assert sorted(n for n, s in streams.items() if s["direction"] == "in") == ["i", "image"]
    assert {op["in_stream"] for op in ops.values()} == {"i", None}


def _compile_and_run(folder, manifest, tmp_path):
    """The header's macros as the C compiler sees them."""
    names = re.findall(r"#define\s+(\w+)\s+-?\d+", (folder / manifest["header"]).read_text())
    source = tmp_path / "probe.c"
    source.write_text(f'#include <stdio.h>\n#include "{manifest["header"]}"\n'
                      "int main(void) {\n"
                      + "".join(f'  printf("{n} %ld\\n", (long)({n}));\n' for n in names)
                      + "  return 0;\n}\n")
    binary = tmp_path / "probe"
    subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", "-I", str(folder), "-o",
                    str(binary), str(source)], check=True, capture_output=True, text=True)
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("unit", list(UNITS))
def test_c_header_compiles_and_equals_the_hardware(generated, unit, tmp_path):
    folder, manifest = generated[unit]
    _, top, enum_type, counts = UNITS[unit]
    values = _compile_and_run(folder, manifest, tmp_path)
    prefix = top.upper()
    if enum_type is not None:
        for member in enum_type:
            assert values[f"{prefix}_OP_{member.name}"] == member.value
        assert values[f"{prefix}_OP_WIDTH"] == enum_type.as_shape().width
    for name, (n_in, n_out) in counts.items():
        assert values[f"{prefix}_{name.upper()}_IN_WORDS"] == n_in
        assert values[f"{prefix}_{name.upper()}_OUT_WORDS"] == n_out
    if unit == "core":
        assert values["XBARODE_CORE_LOAD_A_IN_A_FRAC"] == 14
        assert values["XBARODE_CORE_READ_LOGITS_OUT_LOGITS_WIDTH"] == 16


def _verilator(args, cwd):
    from xbarode.sim.toolchain import ensure_simulator

    tool = ensure_simulator("verilator")
    return subprocess.run([tool.executables["verilator"], *args], cwd=cwd,
                          capture_output=True, text=True, env=dict(os.environ), check=False)


@pytest.mark.parametrize("unit", list(UNITS))
def test_plain_verilator_lint_passes_with_the_waivers(generated, unit):
    folder, manifest = generated[unit]
    top = manifest["top"]
    waived = _verilator(["--lint-only", manifest["waivers"], f"{top}.v"], folder)
    assert waived.returncode == 0, waived.stderr[-3000:]
    assert "%Warning" not in waived.stderr


def test_the_waivers_are_needed_and_a_plain_cc_build_passes(generated, tmp_path):
    folder, manifest = generated["tile"]
    plain = _verilator(["--lint-only", "crossbar_tile.v"], folder)
    assert plain.returncode != 0 and "%Warning-WIDTHEXPAND" in plain.stderr
    cc = _verilator(["--cc", "--Mdir", str(tmp_path / "obj"), manifest["waivers"],
                     "crossbar_tile.v"], folder)
    assert cc.returncode == 0, cc.stderr[-3000:]
    assert (tmp_path / "obj" / "Vcrossbar_tile.h").is_file()


# --- the handshake rules, observed on the Amaranth simulator ---------------------------------

def _handshake_trace(dut, description, rng):
    """Run every operation of ``description`` once, as a host that knows only it would; record
    per operation the cycles of done, busy and the words moved."""
    trace = {}
    ops = list(description["operations"])
    names = [op["name"] for op in ops]
    if "READ_Y" in names:   # READ_Y's count is FORWARD's (rows): read it right after
        ops.insert(names.index("FORWARD") + 1, ops.pop(names.index("READ_Y")))
    codes = list(description["op_encoding"].values())

    async def bench(ctx):
        for op in ops:
            words = [rng.randrange(-(1 << (s["format"]["width"] - 1)),
                                   1 << (s["format"]["width"] - 1))
                     for s in op["in"] for _ in range(s["count"])]
            n_out = sum(s["count"] for s in op["out"])
            ctx.set(dut.op.as_value(), op["code"])
            ctx.set(dut.start, 1)
            assert ctx.get(dut.busy) == 0
            await ctx.tick()
            ctx.set(dut.start, 0)
            record = {"done": [], "busy_low": [], "last_in": None, "last_out": None,
                      "moved": 0, "read": 0}
            for cycle in range(200_000):
                # op is not held: anything else is on it now; start while busy is ignored.
                ctx.set(dut.op.as_value(), rng.choice(codes))
                ctx.set(dut.start, int(cycle == 1))
                sending = record["moved"] < len(words)
                ctx.set(dut.i.valid, int(sending))
                if sending:
                    ctx.set(dut.i.payload, words[record["moved"]])
                ctx.set(dut.o.ready, int(n_out > 0))
                if not ctx.get(dut.busy):
                    record["busy_low"].append(cycle)
                if sending and ctx.get(dut.i.ready):
                    record["moved"] += 1
                    if record["moved"] == len(words):
                        record["last_in"] = cycle
                if n_out and ctx.get(dut.o.valid):
                    record["read"] += 1
                    if record["read"] == n_out:
                        record["last_out"] = cycle
                if ctx.get(dut.done):
                    record["done"].append(cycle)
                await ctx.tick()
                if record["done"] and cycle >= record["done"][0] + 3:
                    break
            ctx.set(dut.start, 0)
            ctx.set(dut.i.valid, 0)
            trace[op["name"]] = record
        # Op codes the unit does not have: done in the cycle after start, once.
        available = {op["code"] for op in ops}
        for code in range(1 << description["op_width"]):
            if code in available:
                continue
            ctx.set(dut.op.as_value(), code)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            dones = []
            for cycle in range(4):
                if ctx.get(dut.done):
                    dones.append(cycle)
                await ctx.tick()
            trace[f"code {code}"] = dones
        # clear: a one-cycle pulse lowers overflow at the next edge.
        trace["overflow_before_clear"] = ctx.get(dut.overflow)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        trace["overflow_after_clear"] = ctx.get(dut.overflow)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return trace


@pytest.mark.parametrize("unit", ["tile", "tile-chain", "dft", "fourier-conv", "fourier-bank",
                                  "core", "core-channels"])
def test_handshake_rules_hold_for_every_operation(generated, unit):
    from xbarode.units import UNITS as REGISTRY

    _, manifest = generated[unit]
    registry = REGISTRY[unit.removesuffix("-chain").removesuffix("-channels")]
    if unit.startswith("core"):
        import tomllib

        from xbarode.model.core_config import CoreConfig

        toml = tomllib.loads(CORE_TOML if unit == "core" else CORE_CHANNELS_TOML)
        params = CoreConfig(**{**toml["core"], **toml["ode"]})
    else:
        parser = argparse.ArgumentParser()
        registry.add_arguments(parser)
        params = registry.params(parser.parse_args(UNITS[unit][0]))
    dut = registry.component(params)
    assert unit != "tile-chain" or dut.read_chain
    # The manifest describes this very component.
    assert host_interface(dut).as_json() == manifest["interface"]
    trace = _handshake_trace(dut, manifest["interface"], random.Random(3))
    for op in manifest["interface"]["operations"]:
        record = trace[op["name"]]
        n_in = sum(s["count"] for s in op["in"])
        n_out = sum(s["count"] for s in op["out"])
        assert len(record["done"]) == 1, (op["name"], record["done"])  # start while busy
        done = record["done"][0]
        assert record["moved"] == n_in and record["read"] == n_out, op["name"]
        if n_in:
            assert record["last_in"] == done, op["name"]
        if n_out:
            assert record["last_out"] == done, op["name"]
        # busy from the cycle after start to done inclusive, then low.
        assert all(c > done for c in record["busy_low"]), op["name"]
        assert record["busy_low"][:1] == [done + 1], op["name"]
    missing = [c for c in range(1 << manifest["interface"]["op_width"])
               if c not in {op["code"] for op in manifest["interface"]["operations"]}]
    assert missing, "every unit here lacks some op code"
    for code in missing:
        assert trace[f"code {code}"] == [0], code
    assert trace["overflow_before_clear"] == 1
    assert trace["overflow_after_clear"] == 0
