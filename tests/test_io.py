"""Atomic writes: the umask's permissions, never a partial file."""
import os
import stat

import numpy as np
import pytest

from jaxfactor._io import atomic_write, atomic_write_text


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_atomic_write_honours_the_umask(tmp_path, umask, mask):
    umask(mask)
    plain = tmp_path / "plain.bin"
    with open(plain, "wb") as f:
        f.write(b"x")
    got = atomic_write(tmp_path / "atomic.bin", lambda f: f.write(b"x"))
    assert _mode(got) == _mode(plain) == 0o666 & ~mask


def test_directions_file_and_grid_readable_by_group(tmp_path, umask, rng):
    from jaxfactor.directions import save_directions

    umask(0o027)
    path = save_directions(tmp_path / "d.npz", rng.standard_normal((3, 8)).astype(np.float32),
                           np.ones(3, np.float32), method="pca", space="w")
    assert _mode(path) == 0o640
    text = atomic_write_text(tmp_path / "r.json", "{}\n")
    assert _mode(text) == 0o640


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old")

    def fails(f):
        f.write(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, fails)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
