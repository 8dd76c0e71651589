"""Groups of lanes: registers copied once per :data:`GROUP` lanes, a fan-out bound for routing.

A decision that every lane of a tile needs (a control, an address, a shared operand) is
registered once per group of lanes instead of once for the whole tile, so no net fans out to
more than a group's registers. The copies are identical, so each carries the ``keep``
attribute: without it Yosys's ``opt_merge`` merges them back into one register.
:func:`stage` is the other kind of copy: a pipeline's metadata, registered once per stage.
"""

from __future__ import annotations

from amaranth import Signal, Value

__all__ = ["GROUP", "KEEP", "group_copies", "group_count", "own_copy", "per_group", "stage"]

#: Lanes served by one copy of a register they share — the operand, the banks' addresses and
#: enables, the loaded word, the operation's controls (a fan-out bound for routing).
GROUP = 8

#: Attributes of a register copy that synthesis must keep apart from its identical twins.
KEEP = {"keep": 1}


def group_count(lanes: int) -> int:
    """Groups of :data:`GROUP` lanes that ``lanes`` lanes form (the last may be partial)."""
    return -(-lanes // GROUP)


def per_group(groups: int, shape, name: str) -> list[Signal]:
    """One register of ``shape`` per group, ``{name}{g}``, kept apart (``keep``)."""
    return [Signal(shape, name=f"{name}{g}", attrs=KEEP) for g in range(groups)]


def group_copies(m, groups: int, value, name: str) -> list[Signal]:
    """Registered copies of ``value``, one per group (:func:`per_group`), one cycle late."""
    regs = per_group(groups, Value.cast(value).shape(), name)
    m.d.sync += [reg.eq(value) for reg in regs]
    return regs


def own_copy(m, value, name: str) -> Signal:
    """A registered copy of ``value`` for the controller's side, kept apart from the groups'
    copies: a group's copy read there too is pulled away from its lanes (group 0's chain load,
    placed beside the FSM, was the critical path of the 64-lane tile)."""
    reg = Signal(Value.cast(value).shape(), name=name, attrs=KEEP)
    m.d.sync += reg.eq(value)
    return reg


def stage(m, *signals, name: str) -> list[Signal]:
    """Registered copies of ``signals``, ``{name}_{k}``: a pipeline's metadata moving one
    stage along with its data."""
    regs = [Signal.like(sig, name=f"{name}_{k}") for k, sig in enumerate(signals)]
    m.d.sync += [r.eq(sig) for r, sig in zip(regs, signals, strict=True)]
    return regs
