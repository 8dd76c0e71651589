"""Co-simulation glue: cocotb testbenches and runners that compare RTL with the golden model.

Empty until the hardware issues land; see DESIGN.md §6.
"""
