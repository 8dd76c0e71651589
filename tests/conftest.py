"""Fixtures every test module may use, and the hypothesis profiles.

Hypothesis profiles (select with ``--hypothesis-profile NAME``):

- ``ci`` (the default): derandomised, so every run of the suite draws the same examples and a
  failure in CI fails the same way on any machine; the corners that matter are pinned with
  ``@example`` in the tests themselves.
- ``explore``: new random examples on every run, with the example database kept in
  ``.hypothesis/``. A failure prints its falsifying example and a ``@reproduce_failure`` blob;
  ``--hypothesis-seed N`` replays a whole run. Run it as
  ``./dev.sh test --hypothesis-profile explore`` (add ``-m "slow or not slow"`` for everything).
"""

import pytest
from hypothesis import settings
from threadpoolctl import threadpool_limits

from xbarode.model import load_digits_split

# Registered here, before any test module builds its settings objects from the default profile.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile("ci")


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
