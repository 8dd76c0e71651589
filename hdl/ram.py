"""Which memories may take a block RAM: the ones worth one.

An ECP5 block RAM (DP16KD) holds 18 432 bits, and the device has 208 of them; Yosys maps a
memory of a hundred words to a whole one when it is cheaper in cells than LUT RAM, with no
view of how many block RAMs the design needs in all. At 28×28 with four channels the state's
image buffer and tile C's vector banks (98 words per lane) took 24 block RAMs for 37 632 bits
and left the core 19 short of the device. A memory of at most :data:`SMALL_MEMORY_BITS` bits
therefore asks for LUT RAM (``ram_style = "distributed"``); the block RAMs stay for the
weights, the spectra, the trajectory and the buffers.
"""

from __future__ import annotations

__all__ = ["SMALL_MEMORY_BITS", "memory_attrs"]

#: The largest memory, in bits, kept out of block RAM: a ninth of a DP16KD.
SMALL_MEMORY_BITS = 2048


def memory_attrs(depth: int, width: int) -> dict:
    """Attributes for a memory of ``depth`` words of ``width`` bits: LUT RAM
    (``ram_style = "distributed"``) when it has at most :data:`SMALL_MEMORY_BITS` bits, else
    none (the synthesis tool's choice)."""
    return {"ram_style": "distributed"} if depth * width <= SMALL_MEMORY_BITS else {}
