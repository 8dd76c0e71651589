"""Argument checks shared by the golden model; every message names the offending argument."""

from __future__ import annotations

import numpy as np


def as_finite(name: str, value, *, ndim: tuple[int, ...] | None = None) -> np.ndarray:
    """Return ``value`` as a float64 array, rejecting non-finite entries and wrong ranks."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real numeric array, not {type(value).__name__}") from exc
    if ndim is not None and array.ndim not in ndim:
        wanted = " or ".join(str(n) for n in ndim)
        raise ValueError(f"{name} must have {wanted} dimensions, not {array.ndim}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return array


def positive_float(name: str, value) -> float:
    """Return ``value`` as a float after checking that it is finite and strictly positive."""
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a number, not {type(value).__name__}") from exc
    if not np.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, not {value!r}")
    return number


def positive_int(name: str, value, *, minimum: int = 1) -> int:
    """Return ``value`` as an int after checking that it is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")
    return int(value)


def image_shape(shape) -> tuple[int, int]:
    """Validate an image shape ``(H, W)`` of positive integers."""
    try:
        height, width = (int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        message = f"shape must be a pair (H, W) of positive integers, not {shape!r}"
        raise ValueError(message) from exc
    if height < 1 or width < 1 or (height, width) != tuple(shape):
        raise ValueError(f"shape must be a pair (H, W) of positive integers, not {shape!r}")
    return height, width


def kernel(value, shape: tuple[int, int]) -> np.ndarray:
    """Validate a square, odd-sized kernel that fits inside an image of ``shape``."""
    array = as_finite("kernel", value, ndim=(2,))
    k0, k1 = array.shape
    if k0 != k1:
        raise ValueError(f"kernel must be square, not {k0}x{k1}")
    if k0 % 2 == 0:
        raise ValueError(f"kernel size must be odd, not {k0}")
    if k0 > min(shape):
        raise ValueError(
            f"kernel of size {k0} does not fit a {shape[0]}x{shape[1]} image "
            f"(size must be <= {min(shape)})"
        )
    return array
