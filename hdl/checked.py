"""Elaboratables that refuse bad arguments before they exist.

Amaranth registers every elaboratable as it is made (``Elaboratable.__new__``) and, once
anything has been elaborated in the process, warns (``UnusedElaboratable``) about one that is
collected without ever having been elaborated. A constructor that raised in ``__init__``
would leave such an object behind: made, refused, never elaborated. A
:class:`CheckedElaboratable` runs its argument checks in ``__new__``, before the object is
made, so a refused one never exists; :class:`CheckedComponent` is the same for a
``wiring.Component``, the base of the units and their parts.
"""

from __future__ import annotations

from amaranth.hdl import Elaboratable
from amaranth.lib import wiring

__all__ = ["CheckedComponent", "CheckedElaboratable"]


class CheckedElaboratable(Elaboratable):
    """An elaboratable whose constructor arguments are checked before it is made.

    A subclass states its checks in ``check_parameters``, a static or class method with the
    constructor's parameters (the same names, kinds and defaults) that raises the
    ``TypeError`` or ``ValueError`` the constructor documents and returns nothing.
    ``__new__`` calls it with the constructor's arguments, so nothing is made when it raises;
    ``__init__`` then takes its arguments as checked and does not check them again. A
    subclass whose constructor takes other parameters (a
    :class:`~xbarode.hdl.fourier.DftArray` is a tile with its own) overrides
    ``check_parameters`` to check its own and what its ``__init__`` passes on. A parent that
    builds its parts in ``elaborate`` can check their arguments with the same method when it
    is constructed (the core its Fourier units).
    """

    def __new__(cls, *args, **kwargs):
        cls.check_parameters(*args, **kwargs)
        # Amaranth records where an elaboratable is made: the constructor's caller, one frame
        # up from here.
        return super().__new__(cls, src_loc_at=1)

    @staticmethod
    def check_parameters(*args, **kwargs) -> None:
        """Raise ``TypeError`` or ``ValueError`` for arguments the constructor refuses."""
        raise NotImplementedError("a checked elaboratable states its checks in "
                                  "check_parameters")


class CheckedComponent(CheckedElaboratable, wiring.Component):
    """A ``wiring.Component`` whose constructor arguments are checked before it is made
    (:class:`CheckedElaboratable`)."""
