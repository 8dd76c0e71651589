"""Verilog from Amaranth components, and the list of ports a testbench or manifest needs.

A top-level port of a :class:`~amaranth.lib.wiring.Component` is named in Verilog by joining
its signature path with ``__`` (``x.payload`` → ``x__payload``; a structured payload is one
vector, ``weights__payload``). Members whose value is a constant (``ready`` of an
``always_ready`` stream, ``valid`` of an ``always_valid`` one) have no port: Amaranth 0.5's
``verilog.convert`` rejects them (amaranth-lang/amaranth#1574), so :func:`write_verilog` leaves
them out and :func:`port_manifest` lists them with their value under ``"const"``.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from amaranth.back import verilog as amaranth_verilog
from amaranth.hdl import Const, Shape, Value, ValueCastable

# PortDirection is what amaranth.back.verilog.convert itself uses to name a port's direction;
# 0.5 does not re-export it, and the ports of a component with constant members must be listed
# by hand (amaranth#1574). Amaranth is pinned exactly in pyproject.toml.
from amaranth.hdl._ir import PortDirection
from amaranth.lib import data, wiring

__all__ = ["component_ports", "parse_verilog_ports", "port_manifest", "write_verilog"]


def _layout_fields(layout, prefix="", offset=0):
    """Leaf fields of a (possibly nested) data layout: dotted name, bit offset, width, sign."""
    fields = []
    for name, field in layout:
        shape = field.shape
        if isinstance(shape, data.Layout):
            fields += _layout_fields(shape, f"{prefix}{name}.", offset + field.offset)
        else:
            fields.append({"name": f"{prefix}{name}", "offset": offset + field.offset,
                           "width": field.width, "signed": Shape.cast(shape).signed})
    return fields


def _members(component):
    """(name, flow, value, shape, layout) for every port member of a component's signature."""
    if not isinstance(getattr(component, "signature", None), wiring.Signature):
        raise TypeError(f"expected an object with a wiring.Signature, not {component!r}")
    for path, member, value in component.signature.flatten(component):
        layout = member.shape if isinstance(member.shape, data.Layout) else None
        if isinstance(value, ValueCastable):
            value = value.as_value()
        if not isinstance(value, Value):
            raise TypeError(f"member {'.'.join(map(str, path))} is {value!r}, not a value")
        shape = value.shape() if layout is not None else Shape.cast(member.shape)
        yield "__".join(map(str, path)), member.flow, value, shape, layout


def component_ports(component):
    """The ``ports`` argument for ``amaranth.back.verilog.convert``: every non-constant
    signature member under its ``member__submember`` name with its direction."""
    ports = {}
    for name, flow, value, _shape, _layout in _members(component):
        if isinstance(value, Const):
            continue
        direction = PortDirection.Input if flow == wiring.In else PortDirection.Output
        ports[name] = (value, direction)
    return ports


def write_verilog(component, name, out_dir, ports=None, platform=None):
    """Write the Verilog of ``component`` to ``out_dir/NAME.v`` and return that path.

    Parameters
    ----------
    component : amaranth.lib.wiring.Component or Elaboratable
        The design. A component's ports come from its signature (constant members have no
        port); any other elaboratable needs ``ports``.
    name : str
        Verilog module name of the top level, and the file's stem.
    out_dir : str or Path
        Folder, created if missing.
    ports : dict or list, optional
        Passed to ``verilog.convert`` as is, instead of the signature's ports.
    platform : object, optional
        Passed to every ``elaborate``: :class:`xbarode.hdl.dsp.Ecp5Dsp` for Verilog meant for
        the ECP5 flow (multipliers as ``MULT18X18D`` cells with their registers); ``None``
        (default) for plain Verilog that any simulator runs.

    Returns
    -------
    Path
        The file, written atomically (a reader never sees a half-written file) with the
        permissions of any new file (``0666`` less the umask: ``0644`` usually), without
        source locations (``emit_src=False``) so that the text depends only on the design.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"name must be a Verilog identifier, not {name!r}")
    if ports is None:
        ports = component_ports(component)
    text = amaranth_verilog.convert(component, name=name, platform=platform, ports=ports,
                                    emit_src=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.v"
    _write_atomic(path, text)
    return path


def _write_atomic(path, text):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; the Verilog is for others too: 0666 less the umask, as open().
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_PORT_DECL = re.compile(
    r"^\s*(input|output|inout)\s+(?:signed\s+)?(?:\[(\d+):(\d+)\]\s+)?\\?([^\s;]+)\s*;", re.M)


def parse_verilog_ports(verilog, module=None):
    """Ports of one module of Yosys-written Verilog: ``{name: (direction, width)}`` in
    declaration order, direction ``"in"``, ``"out"`` or ``"inout"``.

    ``verilog`` is the text or a path to it; ``module`` defaults to the first module that
    carries the ``(* top = ... *)`` attribute, else the last one (Yosys writes the top last).
    """
    if isinstance(verilog, Path) or (isinstance(verilog, str) and "\n" not in verilog):
        verilog = Path(verilog).read_text()
    bodies = {match.group(1): match.group(2) for match in
              re.finditer(r"^module\s+\\?(\S+?)\s*\(.*?\);\n(.*?)^endmodule", verilog, re.M | re.S)}
    if not bodies:
        raise ValueError("no module found in the Verilog text")
    if module is None:
        # The top attribute may be followed by other attributes (Amaranth adds "generator").
        tops = re.findall(r"\(\*[^*]*\btop\b[^*]*\*\)\s*(?:\(\*[^*]*\*\)\s*)*"
                          r"module\s+\\?(\S+?)\s*\(", verilog)
        module = tops[0] if tops else list(bodies)[-1]
    if module not in bodies:
        raise ValueError(f"module {module!r} not found; modules: {', '.join(bodies)}")
    ports = {}
    for direction, msb, lsb, name in _PORT_DECL.findall(bodies[module]):
        width = abs(int(msb) - int(lsb)) + 1 if msb else 1
        ports[name] = ({"input": "in", "output": "out"}.get(direction, direction), width)
    return ports


def port_manifest(component, verilog=None):
    """The ports of ``component`` as plain data, for JSON manifests and testbenches.

    Parameters
    ----------
    component : amaranth.lib.wiring.Component
    verilog : str or Path, optional
        The Verilog written for it (text or path). When given, every signature port is
        checked against the module's declarations, and the ports the signature does not
        name (clocks and resets of the clock domains: ``clk``, ``rst``, ``DOMAIN_clk``, ...)
        are added with ``"role": "clock"`` or ``"reset"``.

    Returns
    -------
    list of dict
        One entry per port in signature order (then clocks and resets): ``name`` (as in
        Verilog), ``direction`` (``"in"`` or ``"out"``, seen from the component), ``width``,
        ``signed``, ``role`` (``"data"``, ``"clock"`` or ``"reset"``); for a structured
        payload (a ``data.Layout`` shape) ``fields``: the leaf fields with dotted ``name``,
        bit ``offset``, ``width`` and ``signed``; for a constant member that has no Verilog
        port, ``const`` (its integer value).

    Raises
    ------
    ValueError
        If ``verilog`` is given and disagrees with the signature.
    """
    manifest = []
    for name, flow, value, shape, layout in _members(component):
        entry = {
            "name": name,
            "direction": "in" if flow == wiring.In else "out",
            "width": len(value),
            "signed": shape.signed,
            "role": "data",
        }
        if layout is not None:
            entry["fields"] = _layout_fields(layout)
        if isinstance(value, Const):
            entry["const"] = value.value
        manifest.append(entry)
    if verilog is None:
        return manifest
    declared = parse_verilog_ports(verilog)
    for entry in manifest:
        if "const" in entry:
            if entry["name"] in declared:
                raise ValueError(f"constant member {entry['name']} has a Verilog port")
            continue
        if entry["name"] not in declared:
            raise ValueError(f"port {entry['name']} of the signature is not in the Verilog")
        direction, width = declared[entry["name"]]
        if (direction, width) != (entry["direction"], entry["width"]):
            raise ValueError(
                f"port {entry['name']}: signature says {entry['direction']} {entry['width']} "
                f"bits, Verilog says {direction} {width} bits")
    named = {entry["name"] for entry in manifest}
    for name, (direction, width) in declared.items():
        if name in named:
            continue
        if name == "clk" or name.endswith("_clk"):
            role = "clock"
        elif name == "rst" or name.endswith("_rst"):
            role = "reset"
        else:
            raise ValueError(f"Verilog port {name} is neither in the signature nor a clock/reset")
        manifest.append({"name": name, "direction": direction, "width": width,
                         "signed": False, "role": role})
    return manifest
