"""Simulation models of the ECP5 cells that Verilog written for the ECP5 flow instantiates.

Verilog elaborated for :class:`xbarode.hdl.dsp.Ecp5Dsp` holds ``MULT18X18D`` cells, which no
simulator knows (Yosys ships no simulation model of it). :data:`MULT18X18D_MODEL` is one, for
the configurations this project instantiates, written from the cell's documented behaviour
(Lattice TN1267, *ECP5 and ECP5-5G sysDSP Usage Guide*): signed or unsigned 18×18 operands
(``SIGNEDA``/``SIGNEDB``), a 36-bit product, and optional input, pipeline and output registers,
each on ``CLK0`` with enable ``CE0`` and synchronous reset ``RST0`` (``RESETMODE = "SYNC"``),
cleared at start (the global set/reset). Any other register clocking stops the simulation with
a message naming the parameter, rather than simulating something else.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["MULT18X18D_MODEL", "check_simulator", "write_models"]


def _mult18x18d() -> str:
    bits = lambda name, n: ", ".join(f"{name}{k}" for k in range(n - 1, -1, -1))  # noqa: E731
    ports = [bits("A", 18), bits("B", 18), bits("C", 18), "SIGNEDA, SIGNEDB, SOURCEA, SOURCEB",
             "CLK3, CLK2, CLK1, CLK0, CE3, CE2, CE1, CE0, RST3, RST2, RST1, RST0",
             bits("P", 36)]
    stages = ("INPUTA", "INPUTB", "INPUTC", "PIPELINE", "OUTPUT")
    params = "\n".join(
        f'    parameter REG_{s}_CLK = "NONE";\n    parameter REG_{s}_CE = "CE0";\n'
        f'    parameter REG_{s}_RST = "RST0";' for s in stages)
    checks = "\n".join(
        f'        if ((REG_{s}_CLK != "NONE" && REG_{s}_CLK != "CLK0") || REG_{s}_CE != "CE0" '
        f'|| REG_{s}_RST != "RST0") begin\n'
        f'            $display("MULT18X18D model: REG_{s}_* other than CLK0/CE0/RST0 is not '
        f'modelled"); $finish;\n        end' for s in stages)
    return f"""\
// Simulation model of the ECP5 MULT18X18D for xbarode's co-simulation (sim/ecp5_models.py).
module MULT18X18D({", ".join(ports)});
    input {bits("A", 18)};
    input {bits("B", 18)};
    input {bits("C", 18)};
    input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB;
    input CLK3, CLK2, CLK1, CLK0, CE3, CE2, CE1, CE0, RST3, RST2, RST1, RST0;
    output {bits("P", 36)};
{params}
    parameter RESETMODE = "SYNC";
    parameter GSR = "ENABLED";
    parameter CLK0_DIV = "ENABLED";
    parameter CLK1_DIV = "ENABLED";
    parameter CLK2_DIV = "ENABLED";
    parameter CLK3_DIV = "ENABLED";
    parameter HIGHSPEED_CLK = "NONE";
    parameter CAS_MATCH_REG = "FALSE";
    parameter SOURCEB_MODE = "B_SHIFT";
    parameter MULT_BYPASS = "DISABLED";

    wire [17:0] a = {{{bits("A", 18)}}};
    wire [17:0] b = {{{bits("B", 18)}}};
    reg [17:0] a_q = 0, b_q = 0;
    reg sa_q = 0, sb_q = 0;
    reg [35:0] pipe_q = 0, out_q = 0;
    wire [17:0] a_in = REG_INPUTA_CLK == "NONE" ? a : a_q;
    wire [17:0] b_in = REG_INPUTB_CLK == "NONE" ? b : b_q;
    wire sa_in = REG_INPUTA_CLK == "NONE" ? SIGNEDA : sa_q;
    wire sb_in = REG_INPUTB_CLK == "NONE" ? SIGNEDB : sb_q;
    // Each operand extended to 36 bits as its SIGNED input says, then multiplied modulo 2^36.
    wire [35:0] a_ext = {{{{18{{sa_in & a_in[17]}}}}, a_in}};
    wire [35:0] b_ext = {{{{18{{sb_in & b_in[17]}}}}, b_in}};
    wire [35:0] product = a_ext * b_ext;
    wire [35:0] piped = REG_PIPELINE_CLK == "NONE" ? product : pipe_q;
    wire [35:0] p = REG_OUTPUT_CLK == "NONE" ? piped : out_q;
    assign {{{bits("P", 36)}}} = p;

    initial begin
        if (RESETMODE != "SYNC") begin
            $display("MULT18X18D model: RESETMODE %0s is not modelled", RESETMODE); $finish;
        end
{checks}
    end

    always @(posedge CLK0) begin
        if (RST0) begin
            a_q <= 0; b_q <= 0; sa_q <= 0; sb_q <= 0; pipe_q <= 0; out_q <= 0;
        end else if (CE0) begin
            a_q <= a; b_q <= b; sa_q <= SIGNEDA; sb_q <= SIGNEDB;
            pipe_q <= product; out_q <= piped;
        end
    end
endmodule
"""


#: Verilog text of the ``MULT18X18D`` model.
MULT18X18D_MODEL = _mult18x18d()


def write_models(out_dir) -> Path:
    """Write :data:`MULT18X18D_MODEL` to ``out_dir/ecp5_models.v`` (atomically) and return it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ecp5_models.v"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(MULT18X18D_MODEL)
    os.replace(tmp, path)
    return path


def check_simulator(simulator: str, platform) -> None:
    """Refuse the Amaranth simulator for Verilog elaborated for ``platform`` with cells (it
    simulates the Amaranth design, not the Verilog, and has no cell model): a ValueError
    naming the simulators that can."""
    if simulator == "amaranth" and platform is not None:
        raise ValueError("the Amaranth simulator cannot run MULT18X18D cells (dsp 'ecp5'); "
                         "use icarus or verilator")
