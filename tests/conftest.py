import os
import zlib

import numpy as np
import pytest

# Keep XLA to the machine's cores and off any accelerator in tests.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


# JAXFACTOR_TEST_SALT=s runs the suite on other random data (the default, 0,
# keeps the historical draws): a test that fails for some salt has a tolerance
# tuned to one draw.
TEST_SALT = int(os.environ.get("JAXFACTOR_TEST_SALT", "0"))


def seed_for(nodeid: str) -> int:
    """The seed of a test's data: a stable CRC of its name (not ``hash``, which
    Python salts per process), mixed with ``JAXFACTOR_TEST_SALT``."""
    seed = zlib.crc32(nodeid.encode())
    return seed if TEST_SALT == 0 else seed ^ zlib.crc32(f"salt{TEST_SALT}".encode())


@pytest.fixture
def rng(request):
    """A fresh numpy Generator per test, seeded from the test's name and the
    salt, so that every test draws different data and every run of a test with
    the same salt draws the same."""
    return np.random.default_rng(seed_for(request.node.nodeid))


@pytest.fixture(scope="session")
def quick_demo_report(tmp_path_factory):
    """The folder of one ``jaxfactor demo --quick`` run through the CLI, shared by
    every test that reads the demo's report (test_report, test_cli): one run
    per test session instead of one per test file."""
    pytest.importorskip("torch")
    from jaxfactor.app.cli import main

    out = tmp_path_factory.mktemp("demo_quick")
    assert main(["demo", "--quick", "--no-progress", "--out", str(out)]) == 0
    return out
