"""The directions file: round trip, atomic write, and clear errors on bad files."""
import io
import json
import os
import zipfile

import numpy as np
import pytest

from jaxfactor.directions import (FORMAT, VERSION, DirectionsFileError, load_directions,
                                  save_directions)
from jaxfactor.lifting import LiftResult

from .tolerances import unit_roundoff


def _save(path, rng, **kw):
    dirs = rng.standard_normal((5, 8)).astype(np.float32)
    kw.setdefault("method", "pca")
    kw.setdefault("space", "z")
    kw.setdefault("layer", "init")
    return dirs, save_directions(path, dirs, **kw)


def test_round_trip_with_metadata(rng, tmp_path):
    path = tmp_path / "dirs.npz"
    dirs, written = _save(path, rng, scales=np.arange(1, 6), params={"n_components": 5},
                          generator={"adapter": "FastGANAdapter", "z_dim": 8},
                          provenance={"n_samples": 1000, "seed": np.int64(3)},
                          arrays={"score_std": np.linspace(1, 2, 5)}, extra={"note": "x"})
    assert written == os.fspath(path)
    got = load_directions(path, method="pca", space="z", layer="init", latent_dim=8)
    np.testing.assert_array_equal(got.directions, dirs)
    np.testing.assert_array_equal(got.scales, np.arange(1, 6, dtype=np.float32))
    np.testing.assert_array_equal(got.arrays["score_std"], np.linspace(1, 2, 5))
    meta = got.metadata
    assert meta["format"] == FORMAT and meta["version"] == VERSION
    assert meta["params"] == {"n_components": 5} and meta["provenance"]["seed"] == 3
    assert meta["generator"]["adapter"] == "FastGANAdapter" and meta["extra"] == {"note": "x"}
    assert {"python", "numpy", "jax", "jaxfactor"} <= set(meta["versions"])
    assert meta["created"].endswith("+00:00")
    # default scales: the rows' norms
    _, p2 = _save(tmp_path / "b.npz", rng)
    got = load_directions(p2)
    # save_directions took numpy's norm of the same float32 rows
    np.testing.assert_array_equal(got.scales, np.linalg.norm(got.directions, axis=1))


def test_lift_result_is_stored_with_its_scales(rng, tmp_path):
    k, d = 3, 4
    res = LiftResult(rng.standard_normal((k, d)), np.array([1.0, 2, 3]), np.ones(k), np.zeros(k),
                     np.zeros(d), np.full(k, 0.9), np.full(k, 0.1), np.ones(d), np.float32(0.5),
                     np.int32(100))
    save_directions(tmp_path / "l.npz", res, method="ica", space="w")
    got = load_directions(tmp_path / "l.npz")
    # float64 directions stored as float32: each rounded to nearest, within u |x|
    np.testing.assert_allclose(got.directions, res.directions, rtol=unit_roundoff(np.float32), atol=0)
    np.testing.assert_array_equal(got.scales, [1, 2, 3])
    assert set(got.arrays) == {"score_std", "score_mean", "latent_mean", "r2", "variance_share"}


def test_write_is_atomic_and_overwrites(rng, tmp_path, monkeypatch):
    path = tmp_path / "d.npz"
    first, _ = _save(path, rng)
    # a failure half-way leaves the old file intact and no temporary behind
    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        _save(path, rng)
    monkeypatch.undo()
    np.testing.assert_array_equal(load_directions(path).directions, first)
    second, _ = _save(path, rng)
    np.testing.assert_array_equal(load_directions(path).directions, second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]


def test_save_rejects_bad_input(rng, tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        save_directions(tmp_path / "x.npz", np.full((2, 3), np.nan), method="pca")
    with pytest.raises(ValueError, match=r"\(k, d\)"):
        save_directions(tmp_path / "x.npz", np.ones(3), method="pca")
    with pytest.raises(ValueError, match="scales"):
        save_directions(tmp_path / "x.npz", np.ones((2, 3)), [1.0], method="pca")
    with pytest.raises(ValueError, match="reserved"):
        save_directions(tmp_path / "x.npz", np.ones((2, 3)), method="pca", arrays={"scales": 1})
    with pytest.raises(TypeError, match="JSON"):
        save_directions(tmp_path / "x.npz", np.ones((2, 3)), method="pca", params={"f": object()})
    with pytest.raises(TypeError, match="object"):
        save_directions(tmp_path / "x.npz", np.ones((2, 3)), method="pca",
                        arrays={"o": np.array([{}], dtype=object)})
    assert not list(tmp_path.iterdir())


def _rewrite(path, mutate):
    """Rewrite the archive with ``mutate(dict of arrays)`` applied (no validation)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    mutate(arrays)
    np.savez(path, **arrays)


def _set_meta(arrays, **changes):
    meta = json.loads(arrays["metadata"].tobytes().decode())
    meta.update(changes)
    arrays["metadata"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)


@pytest.mark.parametrize("damage, message", [
    ("truncate", "corrupt or truncated"),
    ("garbage", "corrupt or truncated"),
    ("flip", "corrupt"),
    ("npy", "plain .npy"),
    ("no_meta", "no 'metadata'"),
    ("bad_json", "JSON"),
    ("format", "format"),
    ("newer", "newer"),
    ("shape", "metadata records"),
    ("extra_array", "disagree"),
    ("nan", "NaN"),
])
def test_corrupt_files_give_clear_errors(rng, tmp_path, damage, message):
    path = tmp_path / "d.npz"
    _save(path, rng, arrays={"r2": np.ones(5)})
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a zip at all" * 10)
    elif damage == "flip":  # flip one byte inside the stored (uncompressed) directions data
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            info = zf.getinfo("directions.npy")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
        buf = bytearray(raw)
        buf[start] ^= 0xFF
        path.write_bytes(bytes(buf))
    elif damage == "npy":
        np.save(tmp_path / "plain.npy", np.ones((2, 2)))
        os.replace(tmp_path / "plain.npy", path)
    elif damage == "no_meta":
        _rewrite(path, lambda a: a.pop("metadata"))
    elif damage == "bad_json":
        _rewrite(path, lambda a: a.update(metadata=np.frombuffer(b"{oops", np.uint8)))
    elif damage == "format":
        _rewrite(path, lambda a: _set_meta(a, format="something.else"))
    elif damage == "newer":
        _rewrite(path, lambda a: _set_meta(a, version=VERSION + 1))
    elif damage == "shape":
        _rewrite(path, lambda a: a.update(directions=a["directions"][:, :4]))
    elif damage == "extra_array":
        _rewrite(path, lambda a: a.update(smuggled=np.ones(2)))
    elif damage == "nan":
        def put_nan(a):
            d = a["directions"].copy()
            d[0, 0] = np.nan
            a["directions"] = d
        _rewrite(path, put_nan)
    with pytest.raises(DirectionsFileError, match=message):
        load_directions(path)


def test_mismatched_expectations_and_missing_file(rng, tmp_path):
    path = tmp_path / "d.npz"
    _save(path, rng)
    with pytest.raises(DirectionsFileError, match="space is 'z', expected 'w'"):
        load_directions(path, space="w")
    with pytest.raises(DirectionsFileError, match="latent dimension 8, expected 512"):
        load_directions(path, latent_dim=512)
    with pytest.raises(DirectionsFileError, match="method"):
        load_directions(path, method="sca")
    with pytest.raises(DirectionsFileError, match="layer"):
        load_directions(path, layer="feat_8")
    with pytest.raises(FileNotFoundError):
        load_directions(tmp_path / "missing.npz")
    assert issubclass(DirectionsFileError, ValueError)
