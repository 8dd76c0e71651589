"""xbarode: neural ODEs on a fixed-point crossbar accelerator.

Sub-packages: :mod:`xbarode.model` (golden model), :mod:`xbarode.hdl` (Amaranth hardware),
:mod:`xbarode.sim` (co-simulation); :mod:`xbarode.cli` is the ``xbarode`` command.
"""

__version__ = "0.1.0"
