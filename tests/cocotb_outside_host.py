"""A host written from the manifest and the C header alone (tests/test_outside_host.py runs it).

It knows nothing of the project's Python: the port names, stream signals and formats come from
``TOP.json``, the op codes and word counts from ``TOP.h``; the weights arrive as floats and the
host puts them on the formats' grids itself, transposing ``B`` for LOAD_B as docs/interface.md
says. Inputs are driven at the falling edge and every output is sampled at ``ReadOnly`` of that
time step, half a period before the rising edge that acts on them. Every operation checks the
handshake rules of the manifest: ``busy`` low before ``start`` and high until ``done``,
``done`` exactly once, in the cycle the last word moves.
"""

import json
import os
import re
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly


class Host:
    def __init__(self, dut, manifest, defines):
        self.dut, self.defines = dut, defines
        self.interface = manifest["interface"]
        self.prefix = manifest["top"].upper() + "_"
        ports = {p["name"]: p for p in manifest["ports"]}
        self.clk = getattr(dut, next(n for n, p in ports.items() if p["role"] == "clock"))
        self.rst = getattr(dut, next(n for n, p in ports.items() if p["role"] == "reset"))
        self.inputs = [n for n, p in ports.items() if p["direction"] == "in"
                       and p["role"] not in ("clock", "reset") and "const" not in p]
        streams = self.interface["streams"]
        self.ops = {op["name"]: op for op in self.interface["operations"]}
        # The streams that carry the operations' words, as the operations name them.
        self.i = streams[self.ops["LOAD_A"]["in_stream"]]
        self.o = streams[self.ops["READ_LOGITS"]["out_stream"]]
        self.cycles = 0

    def define(self, name):
        return self.defines[self.prefix + name]

    async def cycle(self, **drive):
        """One clock cycle: drive the inputs (all others 0), return every port sampled."""
        await FallingEdge(self.clk)
        for name in self.inputs:
            getattr(self.dut, name).value = drive.get(name, 0)
        await ReadOnly()
        self.cycles += 1
        return {name: getattr(self.dut, name).value for name in
                ("busy", "done", "cls", self.i["ready"], self.o["valid"], self.o["payload"])}

    async def reset(self, cycles):
        """rst high for ``cycles`` rising edges, every input low (start low, no word)."""
        await FallingEdge(self.clk)
        for name in self.inputs:
            getattr(self.dut, name).value = 0
        self.rst.value = 1
        for _ in range(cycles):
            await FallingEdge(self.clk)
        self.rst.value = 0

    async def operation(self, name, words=()):
        """Start operation ``name``; send ``words`` (LOAD_*) or read the op's words (READ_*)
        until done. Returns (words read, sample of the cycle after done)."""
        code = self.define(f"OP_{name}")
        n_in = self.define(f"{name}_IN_WORDS")
        n_out = self.define(f"{name}_OUT_WORDS")
        assert len(words) == n_in, (name, len(words), n_in)
        width = self.i["width"]
        sample = await self.cycle(op=code, start=1)
        assert str(sample["busy"]) == "0" and str(sample["done"]) == "0", (name, sample)
        words, got, dones, moved = list(words), [], 0, 0
        for _ in range(100_000):
            drive = {}
            if moved < len(words):
                drive = {self.i["valid"]: 1, self.i["payload"]: words[moved] % (1 << width)}
            if n_out:
                drive[self.o["ready"]] = 1
            sample = await self.cycle(**drive)
            assert int(sample["busy"]) == 1, f"{name}: busy fell before done"
            last = False
            if moved < len(words) and int(sample[self.i["ready"]]):
                moved += 1
                last = moved == len(words)
            if n_out and int(sample[self.o["valid"]]):
                got.append(sample[self.o["payload"]].to_signed())
                last = len(got) == n_out
            if int(sample["done"]):
                dones += 1
                # done comes in the cycle the last word moves (docs/interface.md).
                assert last or (n_in == 0 and n_out == 0), f"{name}: done before the last word"
                break
        else:
            raise AssertionError(f"{name}: no done")
        after = await self.cycle()
        assert int(after["done"]) == 0 and int(after["busy"]) == 0, f"{name}: done twice"
        assert moved == n_in and len(got) == n_out, (name, moved, len(got))
        return got, after


def words_of(values, fmt):
    """Floats already on the format's grid, as integers (the host's own conversion)."""
    scale = 1 << fmt["frac"]
    out = []
    for v in values:
        w = v * scale
        assert w == int(w), "not on the grid"
        out.append(int(w))
    return out


@cocotb.test()
async def outside_host(dut):
    data = json.loads(Path(os.environ["OUTSIDE_HOST_DATA"]).read_text())
    manifest = json.loads(Path(data["manifest"]).read_text())
    text = Path(data["header"]).read_text()
    defines = {k: int(v) for k, v in re.findall(r"#define\s+(\w+)\s+(-?\d+)\b", text)}
    host = Host(dut, manifest, defines)
    Clock(host.clk, 10, unit="ns").start()
    await host.reset(data["reset_cycles"])

    w = data["weights"]
    m = len(w["A"])
    ops = host.ops
    bt = [[w["B"][j][i] for j in range(m)] for i in range(m)]   # LOAD_B sends Bᵀ row-major
    loads = {"LOAD_A": [x for row in w["A"] for x in row],
             "LOAD_B": [x for row in bt for x in row],
             "LOAD_C": [x for row in w["C"] for x in row], "LOAD_D": w["d"]}
    for name, values in loads.items():
        await host.operation(name, words_of(values, ops[name]["in"][0]["format"]))

    results = []
    for run, image in enumerate(data["images"]):
        if run == data["reset_before"]:
            await host.reset(data["reset_cycles"])      # weights stay, LFSRs re-seeded
        await host.operation("LOAD_IMAGE", words_of(image, ops["LOAD_IMAGE"]["in"][0]["format"]))
        _, after = await host.operation("RUN")
        cls_after = int(after["cls"])                   # one cycle after done
        logits, _ = await host.operation("READ_LOGITS")
        state, _ = await host.operation("READ_STATE")
        results.append({"logits": logits, "state": state, "cls": cls_after})
    # An op code the unit does not have: done in the cycle after start, nothing else.
    unused = [c for c in range(1 << host.define("OP_WIDTH"))
              if c not in manifest["interface"]["op_encoding"].values()]
    nothing = None
    if unused:
        first = await host.cycle(op=unused[0], start=1)
        second = await host.cycle()
        third = await host.cycle()
        nothing = [int(first["done"]), int(second["done"]), int(second["busy"]),
                   int(third["done"])]
    Path(os.environ["OUTSIDE_HOST_OUT"]).write_text(
        json.dumps({"results": results, "nothing": nothing}))
