"""Amaranth hardware blocks of xbarode (crossbar tile, DFT array, controller, core).

Empty until the hardware issues land; see DESIGN.md §5.
"""
