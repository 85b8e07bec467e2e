import numpy as np
import pytest

from jaxfactor.sources import ArraySource, CallableSource, NpySource, as_source, is_source


def test_array_source_blocks_cover_rows(rng):
    x = rng.standard_normal((103, 4)).astype(np.float32)
    src = ArraySource(x)
    blocks = list(src.blocks(25))
    assert [len(b) for b in blocks] == [25, 25, 25, 25, 3]
    np.testing.assert_array_equal(np.concatenate(blocks), x)
    with pytest.raises(ValueError, match="block_rows"):
        list(src.blocks(0))


def test_npy_shards_directory_and_replay(rng, tmp_path):
    x = rng.standard_normal((70, 5)).astype(np.float32)
    np.save(tmp_path / "a.npy", x[:30])
    np.save(tmp_path / "b.npy", x[30:])
    src = NpySource(tmp_path)
    assert src.shape == (70, 5) and src.dtype == np.float32
    np.testing.assert_array_equal(src.read(25, 45), x[25:45])  # spans both shards
    first = np.concatenate(list(src.blocks(16)))
    second = np.concatenate(list(src.blocks(9)))
    np.testing.assert_array_equal(first, x)
    np.testing.assert_array_equal(second, x)
    assert isinstance(as_source(str(tmp_path)), NpySource)


def test_npy_source_errors(rng, tmp_path):
    with pytest.raises(FileNotFoundError):
        NpySource(tmp_path / "missing.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="plain numeric"):
        NpySource(tmp_path / "obj.npy")
    np.save(tmp_path / "one_d.npy", np.ones(5))
    with pytest.raises(ValueError, match="2-D"):
        NpySource(tmp_path / "one_d.npy")
    np.save(tmp_path / "w1.npy", np.ones((3, 4), np.float32))
    np.save(tmp_path / "w2.npy", np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match="feature count"):
        NpySource([tmp_path / "w1.npy", tmp_path / "w2.npy"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .npy"):
        NpySource(empty)


def test_callable_source_checks_shape_and_is_a_source():
    src = CallableSource(lambda a, b: np.full((b - a, 3), a, np.float32), 10, 3)
    assert is_source(src) and not is_source(np.ones((2, 2)))
    assert src.read(4, 6)[0, 0] == 4
    bad = CallableSource(lambda a, b: np.zeros((1, 3)), 10, 3)
    with pytest.raises(ValueError, match="expected"):
        bad.read(0, 5)
