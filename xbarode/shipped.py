"""What the package ships, by name: trained weights and core configurations.

The command line's ``--weights`` and ``--config`` take a file or one of these names
(``--weights mnist5k --config mnist5k``); a file of that name in the working folder wins, so
no existing path changes meaning.

- ``digits``: the weights ``data/digits_fixed16.npz`` (the default dense network, trained
  in 16-bit fixed point); the default core configuration
  (:class:`~xbarode.model.core_config.CoreConfig`).
- ``mnist5k``: the weights ``data/mnist5k_c4p2.npz`` (28×28, 4 channels, 3×3 kernel banks,
  a 2×2 pool before the classifier, trained in float64 with Adam); the core configuration
  ``data/core_mnist5k.toml`` (that network on the Fourier path, 8 multipliers per DFT array).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIGS", "WEIGHTS", "config_file", "weights_file"]

_DATA = Path(__file__).with_name("data")

#: Shipped weights files by name. ``mnist5k`` is the float64 network of
#: ``xbarode train --dataset mnist5k --structure conv --channels 4 --pool 2 --steps 8
#: --h 0.25 --optimizer adam --lr 0.01 --epochs 8`` (seed 0).
WEIGHTS = {"digits": _DATA / "digits_fixed16.npz", "mnist5k": _DATA / "mnist5k_c4p2.npz"}

#: Shipped core configurations by name; None is the default configuration.
CONFIGS = {"digits": None, "mnist5k": _DATA / "core_mnist5k.toml"}


def _resolve(value: str, names: dict):
    path = Path(value)
    if value in names and not path.exists():
        return names[value]
    return path


def weights_file(value: str) -> Path:
    """``--weights`` VALUE: the file named, or the shipped weights of that name
    (:data:`WEIGHTS`) when no such file exists."""
    return _resolve(value, WEIGHTS)


def config_file(value: str) -> Path | None:
    """``--config`` VALUE: the file named, or the shipped configuration of that name
    (:data:`CONFIGS`; None, the default configuration, for ``digits``) when no such file
    exists."""
    return _resolve(value, CONFIGS)
