"""Amaranth hardware blocks of xbarode (crossbar tile, DFT array, controller, core).

See docs/architecture.md §3 for how the blocks fit together.
"""
