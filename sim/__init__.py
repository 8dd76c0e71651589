"""Co-simulation glue: cocotb testbenches and runners that compare RTL with the golden model.

See docs/architecture.md §4 for the verification ladder it serves.
"""
