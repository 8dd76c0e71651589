"""The embedded data set: scikit-learn's bundled 8×8 digits (no download)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DIGITS_SHAPE", "Digits", "load_digits_split"]

#: Image shape of the digits, ``(H, W)``.
DIGITS_SHAPE = (8, 8)

#: Seed of the shuffle that fixes the train/test split; independent of the training seed.
SPLIT_SEED = 0
#: Test set size: 360 of 1797 images (about 20%), the rest for training.
TEST_SIZE = 360


@dataclass(frozen=True)
class Digits:
    """A fixed train/test split of the digits, pixels scaled to [0, 1].

    Attributes
    ----------
    x_train, x_test : ndarray, shape (n, 64)
        Flattened row-major 8×8 images, pixel values / 16.
    y_train, y_test : ndarray of int, shape (n,)
        Labels 0–9.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_split() -> Digits:
    """Load ``sklearn.datasets.load_digits`` and split it 1437/360 after a seeded shuffle.

    The split is fixed: a ``numpy.random.default_rng(SPLIT_SEED)`` permutation of the 1797
    images; the last :data:`TEST_SIZE` are the test set. The training seed does not change it.
    """
    from sklearn.datasets import load_digits  # deferred: scikit-learn is slow to import

    data = load_digits()
    x = data.data.astype(np.float64) / 16.0
    y = data.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    train, test = order[:-TEST_SIZE], order[-TEST_SIZE:]
    return Digits(x[train], y[train], x[test], y[test])
