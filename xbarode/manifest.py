"""What ``xbarode generate`` writes beside a unit's Verilog: manifest, C header, Verilator waivers.

The manifest (``TOP.json``) is generated from the hardware: the ports from the component's
signature checked against the Verilog (:func:`xbarode.sim.verilog.port_manifest`), their
roles and groups, the op encoding and the words of each operation from
:func:`xbarode.hdl.interface.host_interface`, and Amaranth's own interface metadata. The C
header (``TOP.h``) gives the op codes, stream widths and per operation the word counts and
formats as ``#define``s; the Verilator configuration file (``TOP.vlt``) waives the warnings
that Yosys-written Verilog raises, so that ``verilator --lint-only TOP.vlt TOP.v`` (or
``--cc``) passes without ``-Wno-fatal``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["VERILATOR_WAIVED", "c_header", "unit_manifest", "verilator_waivers",
           "write_beside"]

#: Verilator lint rules waived for generated Verilog, with why each is harmless there.
VERILATOR_WAIVED = {
    "CASEINCOMPLETE": "case statements over op codes and states without a default: the values "
                      "not listed keep the assignments made before the case",
    "WIDTHEXPAND": "operands narrower than their result: Verilog's extension is the one "
                   "Amaranth specified",
    "WIDTHTRUNC": "assignments that drop high bits: Amaranth's truncation, written out",
    "UNSIGNED": "comparisons of unsigned values with 0 that are constant (from ranges that "
                "start at 0)",
    "ASCRANGE": "zero-width wires ([-1:0]) Yosys declares for unused memory addresses",
}


def unit_manifest(unit, params, component, verilog: Path) -> dict:
    """The manifest of one generated unit (see the module docstring).

    The fields of earlier manifests stay (``unit``, ``top``, ``verilog``, ``parameters``,
    ``ports`` with ``name``, ``direction``, ``width``, ``signed``, ``role``, ``fields`` and
    ``const``, ``clock``); ``role`` is now ``stream``, ``control``, ``status``, ``clock`` or
    ``reset`` (was ``data`` for every signature port), and each port has ``group`` (its stream's
    name, or the role), ``signal`` (stream ports: ``valid``, ``ready`` or ``payload``) and
    ``meaning``. Added: ``interface`` (the :class:`~xbarode.hdl.interface.HostInterface`),
    ``amaranth_metadata`` (``component.metadata.as_json()`` with it), ``header``, ``waivers``.
    """
    from xbarode.hdl.interface import HostInterface, metadata
    from xbarode.sim.verilog import port_manifest

    meta = metadata(component)
    interface = meta["interface"]["annotations"][HostInterface.schema["$id"]]
    ports = port_manifest(component, verilog)
    for entry in ports:
        described = interface["ports"].get(entry["name"])
        if described is None:
            raise ValueError(f"port {entry['name']} has no description in the host interface")
        entry.update(described)
    return {
        "unit": unit.name,
        "top": unit.top,
        "verilog": verilog.name,
        "header": f"{unit.top}.h",
        "waivers": f"{unit.top}.vlt",
        "parameters": _parameters(params),
        "ports": ports,
        "clock": "clk (rising edge); rst is a synchronous active-high reset",
        "build": {
            "verilator": f"verilator --lint-only {unit.top}.vlt {verilog.name} (or --cc, "
                         "--binary: the .vlt file before the Verilog)",
            "icarus": f"iverilog -g2005 {verilog.name} (Verilog-2005: with -g2012 the "
                      "combinational blocks are not evaluated at time 0)",
        },
        "interface": interface,
        "amaranth_metadata": meta,
    }


def _parameters(params) -> dict:
    from dataclasses import asdict

    if hasattr(params, "manifest_parameters"):
        return params.manifest_parameters()
    return asdict(params) if hasattr(params, "__dataclass_fields__") else params


def _macro(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").upper()


def _ascii(text: str) -> str:
    """A comment's text in ASCII (the header is plain C89 text)."""
    for a, b in (("·", "*"), ("ᵀ", "^T"), ("∂", "d"), ("⊙", "(.)"), ("…", "..."),
                 ("–", "-"), ("*/", "* /")):
        text = text.replace(a, b)
    return text.encode("ascii", "replace").decode()


def c_header(manifest: dict) -> str:
    """C ``#define``s of a unit's op codes, stream widths and words per operation.

    ``PREFIX_OP_<NAME>`` (op codes), ``PREFIX_OP_WIDTH``, ``PREFIX_<STREAM>_WIDTH``; per
    operation ``PREFIX_<OP>_IN_WORDS`` and ``_OUT_WORDS`` (totals) and per segment of words
    ``PREFIX_<OP>_<IN|OUT>_<SEGMENT>_WORDS``, ``_WIDTH``, ``_FRAC`` and ``_SIGNED``, in the
    order the segments move. ``PREFIX`` is the top module's name in capitals.
    """
    interface = manifest["interface"]
    prefix = _macro(manifest["top"])
    guard = f"{prefix}_H"
    lines = [f"/* {manifest['top']}.h: the host interface of the {manifest['unit']} unit in "
             f"{manifest['verilog']}.",
             " * Generated by xbarode generate from the hardware; see the manifest "
             f"{manifest['top']}.json and docs/interface.md. */",
             f"#ifndef {guard}", f"#define {guard}", ""]

    def define(name, value, comment=None):
        text = f"#define {prefix}_{name} {value}"
        lines.append(text if comment is None else f"{text:<60} /* {comment} */")

    if interface["op_encoding"]:
        define("OP_WIDTH", interface["op_width"], "bits of the op port")
        for name, code in interface["op_encoding"].items():
            define(f"OP_{_macro(name)}", code)
        lines.append("")
    for name, stream in interface["streams"].items():
        define(f"{_macro(name)}_WIDTH", stream["width"],
               f"payload bits of stream {name} ({stream['direction']})")
    lines.append("")
    for op in interface["operations"]:
        stem = _macro(op["name"])
        for side in ("in", "out"):
            segments = op[side]
            define(f"{stem}_{side.upper()}_WORDS", sum(s["count"] for s in segments))
            for seg in segments:
                fmt = seg["format"]
                name = f"{stem}_{side.upper()}_{_macro(seg['name'])}"
                define(f"{name}_WORDS", seg["count"], _ascii(seg["order"]))
                define(f"{name}_WIDTH", fmt["width"], fmt.get("q"))
                define(f"{name}_FRAC", fmt["frac"])
                define(f"{name}_SIGNED", int(fmt["signed"]))
        lines.append("")
    lines.append(f"#endif /* {guard} */")
    return "\n".join(lines) + "\n"


def verilator_waivers(verilog_name: str) -> str:
    """A Verilator configuration file waiving :data:`VERILATOR_WAIVED` in ``verilog_name``."""
    lines = ["`verilator_config",
             f"// Generated by xbarode generate: warnings Yosys-written Verilog raises in "
             f"{verilog_name}.",
             f"// Usage: --lint-only {Path(verilog_name).stem}.vlt {verilog_name} "
             "(this file before the Verilog)"]
    for rule, why in VERILATOR_WAIVED.items():
        lines.append(f"// {rule}: {why}")
        lines.append(f'lint_off -rule {rule} -file "*{verilog_name}"')
    return "\n".join(lines) + "\n"


def write_beside(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, readable by all (0644)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
