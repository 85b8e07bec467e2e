import os

import numpy as np
import pytest

# Keep XLA to the machine's cores and off any accelerator in tests.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture
def rng(request):
    """A fresh numpy Generator per test, seeded from the test's name so that
    failures reproduce while every test draws different data."""
    seed = abs(hash(request.node.nodeid)) % (2**32)
    return np.random.default_rng(seed)
