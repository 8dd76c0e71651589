"""Fixtures every test module may use."""

import pytest
from threadpoolctl import threadpool_limits

from xbarode.model import load_digits_split


@pytest.fixture(autouse=True, scope="session")
def one_blas_thread():
    # Threaded BLAS on the golden model's tiny products is many times slower on a loaded
    # 2-core machine (and the CLI limits itself the same way).
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="session")
def digits():
    """The fixed 1437/360 split of the bundled digits."""
    return load_digits_split()
