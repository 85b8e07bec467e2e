import os
import zlib

import numpy as np
import pytest

# Keep XLA to the machine's cores and off any accelerator in tests.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture
def rng(request):
    """A fresh numpy Generator per test, seeded from the test's name (a stable
    CRC, not ``hash``, which Python salts per process) so that every test draws
    different data and every run of a test draws the same."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
