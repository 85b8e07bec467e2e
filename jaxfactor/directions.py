"""The directions file: one ``.npz`` holding the arrays and their JSON metadata.

Layout (format ``jaxfactor.directions``, version 1) -- a NumPy ``.npz`` read
with ``allow_pickle=False``, so loading never runs code:

* ``directions``: ``(k, d)`` float32, one latent direction per row;
* ``scales``: ``(k,)`` float32, the latent length of a one-standard-deviation
  step along each direction (``||B_i||`` for lifted directions,
  ``sqrt(explained_variance)`` for components found in the latent space);
* any extra named arrays (``score_std``, ``r2``, ``latent_mean``, ...);
* ``metadata``: the UTF-8 bytes of a JSON object (uint8 array) with
  ``format``, ``version``, ``method``, ``params``, ``space``, ``layer``,
  ``generator``, ``provenance`` (data and seeds), ``versions`` (libraries),
  ``created`` (UTC) and ``arrays`` (the name, shape and dtype of every array,
  checked on load).

The file is written to a temporary file in the same directory, flushed to
disk and moved into place with ``os.replace``: readers see the old file or
the new one, never a partial one. The zip container's CRC-32 catches
corrupted members on load.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import zipfile
from typing import Any, NamedTuple

import numpy as np

from ._io import atomic_write

__all__ = ["FORMAT", "VERSION", "Directions", "DirectionsFileError", "save_directions",
           "load_directions", "library_versions"]

FORMAT = "jaxfactor.directions"
VERSION = 1
_RESERVED = ("directions", "scales", "metadata")


class DirectionsFileError(ValueError):
    """A directions file is corrupt, of another format, or not the one expected."""


class Directions(NamedTuple):
    """A loaded directions file.

    Attributes:
      directions: ``(k, d)`` float32; scales: ``(k,)`` float32.
      metadata: the JSON metadata as a dict.
      arrays: the extra arrays by name.
    """

    directions: np.ndarray
    scales: np.ndarray
    metadata: dict
    arrays: dict


def library_versions() -> dict:
    """Versions of Python, NumPy, JAX, jaxlib, jaxfactor and, when already
    imported, torch and scikit-learn.

    Examples:
      >>> from jaxfactor.directions import library_versions
      >>> v = library_versions()
      >>> {"python", "numpy", "jax", "jaxfactor"} <= set(v)
      True
    """
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("jax", "jaxlib", "jaxfactor", "torch", "sklearn"):
        if name in ("torch", "sklearn") and name not in sys.modules:
            continue
        try:
            mod = __import__(name)
            out[name] = str(getattr(mod, "__version__", "unknown"))
        except ImportError:  # pragma: no cover - jax is a dependency
            pass
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, range)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) and obj.size <= 64:
        return obj.tolist()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"metadata value {obj!r} of type {type(obj).__name__} is not JSON-serialisable")


def save_directions(path: str | os.PathLike, directions, scales=None, *, method: str,
                    space: str | None = None, layer: str | None = None, params: dict | None = None,
                    generator: Any = None, provenance: dict | None = None,
                    arrays: dict | None = None, extra: dict | None = None) -> str:
    """Write a directions file atomically.

    Args:
      path: destination (conventionally ``*.npz``; written exactly there).
      directions: ``(k, d)`` array, or a :class:`jaxfactor.lifting.LiftResult`
        (then ``scales`` defaults to its ``norms`` and ``score_std``,
        ``score_mean``, ``latent_mean``, ``r2``, ``variance_share`` are stored).
      scales: ``(k,)`` positive latent lengths of a one-std step (default: the
        rows' norms).
      method: the method that found them (``'pca'``, ``'ica'``, ``'sca'``, ...).
      space: the latent space they live in (``'z'``, ``'w'``, ...).
      layer: the generator layer that was factorized.
      params: the method's parameters; generator: a description (dict or str);
      provenance: data and seeds (``n_samples``, ``seed``, sampler, ...).
      arrays: extra named arrays (names must not be ``directions``,
        ``scales`` or ``metadata``).
      extra: any further JSON-able metadata.

    Returns:
      The path written.

    Examples:
      >>> import os, tempfile
      >>> import numpy as np
      >>> from jaxfactor.directions import load_directions, save_directions
      >>> d = np.eye(3, 8, dtype=np.float32)
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     path = save_directions(os.path.join(tmp, "d.npz"), d, [2.0, 1.0, 0.5],
      ...                            method="pca", space="w")
      ...     back = load_directions(path, method="pca")
      >>> back.directions.shape, back.scales.tolist(), back.metadata["space"]
      ((3, 8), [2.0, 1.0, 0.5], 'w')
    """
    arrays = dict(arrays or {})
    if hasattr(directions, "directions") and hasattr(directions, "norms"):
        lifted = directions
        directions = lifted.directions
        scales = lifted.norms if scales is None else scales
        for name in ("score_std", "score_mean", "latent_mean", "r2", "variance_share"):
            arrays.setdefault(name, np.asarray(getattr(lifted, name)))
    dirs = np.asarray(directions, np.float32)
    if dirs.ndim != 2 or dirs.shape[0] < 1 or dirs.shape[1] < 1:
        raise ValueError(f"directions must be a non-empty (k, d) array, got shape {dirs.shape}")
    if not np.all(np.isfinite(dirs)):
        raise ValueError(f"directions hold {int(np.sum(~np.isfinite(dirs)))} NaN/inf values")
    sc = np.linalg.norm(dirs, axis=1) if scales is None else np.asarray(scales, np.float32)
    sc = np.asarray(sc, np.float32)
    if sc.shape != (dirs.shape[0],) or not np.all(np.isfinite(sc)) or np.any(sc < 0):
        raise ValueError(f"scales must be ({dirs.shape[0]},) finite and >= 0, got shape {sc.shape}")
    for name, arr in arrays.items():
        if name in _RESERVED or not name.isidentifier():
            raise ValueError(f"extra array name {name!r} is reserved or not an identifier")
    payload = {"directions": dirs, "scales": sc}
    for name, arr in arrays.items():
        a = np.asarray(arr)
        if a.dtype == object:
            raise TypeError(f"extra array {name!r} has dtype object; only numeric arrays are stored")
        payload[name] = a
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "method": str(method),
        "params": _jsonable(params or {}),
        "space": space,
        "layer": layer,
        "generator": _jsonable(generator),
        "provenance": _jsonable(provenance or {}),
        "versions": library_versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "arrays": {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in payload.items()},
        "extra": _jsonable(extra or {}),
    }
    text = json.dumps(meta, sort_keys=True)
    payload["metadata"] = np.frombuffer(text.encode("utf-8"), np.uint8)
    return atomic_write(path, lambda f: np.savez(f, **payload), suffix=".npz.tmp")


def _fail(path, why):
    raise DirectionsFileError(f"{path!r}: {why}")


def load_directions(path: str | os.PathLike, *, method: str | None = None,
                    space: str | None = None, layer: str | None = None,
                    latent_dim: int | None = None) -> Directions:
    """Read and validate a directions file.

    Args:
      path: the ``.npz`` file.
      method, space, layer, latent_dim: when given, the file must match them
        (a mismatch raises, naming both values).

    Returns:
      :class:`Directions`.

    Raises:
      FileNotFoundError: no such file.
      DirectionsFileError: not a readable ``.npz``, a corrupt member, missing
        or malformed metadata, another format or a newer version, arrays that
        disagree with the metadata, non-finite values, or a mismatch with the
        expected ``method`` / ``space`` / ``layer`` / ``latent_dim``.

    Examples:
      >>> import os, tempfile
      >>> import numpy as np
      >>> from jaxfactor.directions import (DirectionsFileError, load_directions,
      ...                                   save_directions)
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     path = save_directions(os.path.join(tmp, "d.npz"), np.eye(2, 4), method="ica")
      ...     try:
      ...         load_directions(path, method="pca")
      ...     except DirectionsFileError as err:
      ...         print("refused:", "pca" in str(err) and "ica" in str(err))
      refused: True
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no directions file at {path!r}")
    errors = (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError)
    try:
        loaded = np.load(path, allow_pickle=False)
    except errors as err:
        _fail(path, f"not a readable directions file (corrupt or truncated .npz): {err}")
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        _fail(path, "a plain .npy array, not an .npz directions archive")
    try:
        with loaded as npz:
            contents = {name: npz[name] for name in npz.files}
    except errors as err:
        _fail(path, f"corrupt member in the .npz archive: {err}")
    if "metadata" not in contents:
        _fail(path, "no 'metadata' entry: not a jaxfactor directions file")
    try:
        meta = json.loads(contents.pop("metadata").astype(np.uint8).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as err:
        _fail(path, f"metadata is not valid UTF-8 JSON: {err}")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        _fail(path, f"format is {meta.get('format') if isinstance(meta, dict) else None!r}, "
                    f"expected {FORMAT!r}")
    version = meta.get("version")
    if not isinstance(version, int) or version < 1:
        _fail(path, f"invalid format version {version!r}")
    if version > VERSION:
        _fail(path, f"format version {version} is newer than this jaxfactor reads ({VERSION}); "
                    f"upgrade jaxfactor")
    recorded = meta.get("arrays")
    if not isinstance(recorded, dict):
        _fail(path, "metadata lacks the 'arrays' record")
    for name in ("directions", "scales"):
        if name not in contents:
            _fail(path, f"missing array {name!r}")
    if set(recorded) != set(contents):
        _fail(path, f"arrays {sorted(contents)} disagree with the metadata's {sorted(recorded)}")
    for name, arr in contents.items():
        rec = recorded[name]
        if list(arr.shape) != list(rec.get("shape", [])) or arr.dtype.str != rec.get("dtype"):
            _fail(path, f"array {name!r} is {arr.dtype.str} {list(arr.shape)} but the metadata "
                        f"records {rec.get('dtype')} {rec.get('shape')}")
    dirs, sc = contents.pop("directions"), contents.pop("scales")
    if dirs.ndim != 2 or sc.shape != (dirs.shape[0],):
        _fail(path, f"directions {dirs.shape} and scales {sc.shape} do not fit together")
    if not (np.all(np.isfinite(dirs)) and np.all(np.isfinite(sc))):
        _fail(path, "directions or scales hold NaN/inf values")
    expected = {"method": method, "space": space, "layer": layer}
    for key, want in expected.items():
        if want is not None and meta.get(key) != want:
            _fail(path, f"{key} is {meta.get(key)!r}, expected {want!r}")
    if latent_dim is not None and dirs.shape[1] != latent_dim:
        _fail(path, f"directions have latent dimension {dirs.shape[1]}, expected {latent_dim}")
    return Directions(dirs, sc, meta, contents)
