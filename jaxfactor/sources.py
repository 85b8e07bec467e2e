"""Replayable sources of row blocks of an ``(n_samples, n_features)`` matrix.

A source is anything with ``n_samples``, ``n_features``, ``dtype`` and
``read(start, stop)`` returning rows ``start:stop`` as a 2-D array. Reading the
same range twice gives the same rows, which is what multi-pass algorithms (power
iterations, block Krylov) need. :meth:`RowSource.blocks` walks the rows in
blocks of a given size; nothing ever holds all ``n_samples`` rows at once
unless the source itself does (:class:`ArraySource`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Callable, Iterator, Sequence

import numpy as np

from ._io import atomic_write_text

__all__ = ["RowSource", "ArraySource", "NpySource", "CallableSource", "CachedSource", "as_source",
           "is_source"]


class RowSource:
    """Base class of replayable row sources.

    Subclasses set ``n_samples``, ``n_features`` and ``dtype`` and implement
    :meth:`read`.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.sources import RowSource
      >>> class Ramp(RowSource):
      ...     n_samples, n_features, dtype = 5, 2, np.dtype(np.float32)
      ...     def read(self, start, stop):
      ...         return np.arange(2 * start, 2 * stop, dtype=np.float32).reshape(-1, 2)
      >>> [b.shape for b in Ramp().blocks(2)], Ramp().shape
      ([(2, 2), (2, 2), (1, 2)], (5, 2))
    """

    n_samples: int
    n_features: int
    dtype: np.dtype

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_samples, self.n_features)

    def read(self, start: int, stop: int):
        """Rows ``start:stop`` as a ``(stop - start, n_features)`` array."""
        raise NotImplementedError

    def blocks(self, block_rows: int, start: int = 0, stop: int | None = None) -> Iterator:
        """Yield consecutive row blocks of at most ``block_rows`` rows.

        Args:
          block_rows: rows per block (the last block may be shorter).
          start, stop: the row range to walk (default: all rows).
        """
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        stop = self.n_samples if stop is None else stop
        for lo in range(start, stop, block_rows):
            yield self.read(lo, min(lo + block_rows, stop))

    def __len__(self) -> int:
        return self.n_samples

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_samples={self.n_samples}, n_features={self.n_features}, dtype={self.dtype})"


class ArraySource(RowSource):
    """An in-memory 2-D array (numpy or JAX) seen as a row source.

    Args:
      array: ``(n_samples, n_features)`` array.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.sources import ArraySource
      >>> src = ArraySource(np.zeros((50, 8), np.float32))
      >>> src.shape, src.read(0, 3).shape, [b.shape[0] for b in src.blocks(20)]
      ((50, 8), (3, 8), [20, 20, 10])
    """

    def __init__(self, array):
        if getattr(array, "ndim", None) != 2:
            raise ValueError(f"ArraySource needs a 2-D array, got shape {getattr(array, 'shape', None)}")
        self.array = array
        self.n_samples, self.n_features = (int(d) for d in array.shape)
        self.dtype = np.dtype(array.dtype)

    def read(self, start, stop):
        return self.array[start:stop]


class NpySource(RowSource):
    """One ``.npy`` file, a list of them, or a directory of them, read by rows.

    Headers are parsed with ``allow_pickle=False`` (loading never runs code).
    Blocks of C-ordered files are read with plain file reads at the right
    offset rather than through a memory map, so the pages of rows already
    processed do not stay mapped into the process: resident memory stays at
    one block, however large the files (Fortran-ordered files fall back to a
    memory map). Shards are concatenated along rows in the order given (sorted
    by name for a directory) and must agree in width and dtype.

    Args:
      paths: a path to a ``.npy`` file or a directory, or a sequence of paths.

    Examples:
      >>> import os, tempfile, numpy as np
      >>> from jaxfactor.sources import NpySource
      >>> with tempfile.TemporaryDirectory() as d:
      ...     for i in range(2):
      ...         np.save(os.path.join(d, f"part{i}.npy"), np.full((3, 4), i, np.float32))
      ...     src = NpySource(d)
      ...     src.shape, src.read(2, 4)[:, 0].tolist()
      ((6, 4), [0.0, 1.0])
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike]):
        if isinstance(paths, (str, os.PathLike)):
            path = os.fspath(paths)
            if os.path.isdir(path):
                files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".npy"))
                if not files:
                    raise ValueError(f"directory {path!r} holds no .npy files")
            else:
                files = [path]
        else:
            files = [os.fspath(p) for p in paths]
            if not files:
                raise ValueError("NpySource needs at least one file")
        self.paths = files
        self.arrays = []
        for f in files:
            if not os.path.exists(f):
                raise FileNotFoundError(f"no such .npy file: {f!r}")
            try:
                a = np.load(f, mmap_mode="r", allow_pickle=False)
            except (ValueError, EOFError) as err:  # EOFError: an empty file
                raise ValueError(f"cannot read {f!r} as a plain numeric .npy array: {err}") from err
            if a.ndim != 2:
                raise ValueError(f"{f!r} holds a {a.ndim}-D array of shape {a.shape}; a 2-D (rows, features) array is needed")
            self.arrays.append(a)
        widths = {a.shape[1] for a in self.arrays}
        dtypes = {a.dtype for a in self.arrays}
        if len(widths) != 1:
            raise ValueError(f"shards disagree in feature count: {sorted(widths)}")
        if len(dtypes) != 1:
            raise ValueError(f"shards disagree in dtype: {sorted(map(str, dtypes))}")
        self.n_features = widths.pop()
        self.dtype = dtypes.pop()
        self.offsets = np.cumsum([0] + [a.shape[0] for a in self.arrays])
        self.n_samples = int(self.offsets[-1])

    def _read_rows(self, i: int, lo: int, hi: int) -> np.ndarray:
        a = self.arrays[i]
        if not a.flags.c_contiguous or not isinstance(a, np.memmap):
            return np.array(a[lo:hi])
        row_bytes = a.shape[1] * a.dtype.itemsize
        with open(self.paths[i], "rb") as f:
            f.seek(a.offset + lo * row_bytes)
            out = np.fromfile(f, dtype=a.dtype, count=(hi - lo) * a.shape[1])
        if out.size != (hi - lo) * a.shape[1]:
            raise OSError(f"{self.paths[i]!r} is truncated: rows {lo}:{hi} could not be read")
        return out.reshape(hi - lo, a.shape[1])

    def read(self, start, stop):
        parts = []
        for i in range(len(self.arrays)):
            lo, hi = self.offsets[i], self.offsets[i + 1]
            if hi <= start or lo >= stop:
                continue
            parts.append(self._read_rows(i, max(start, lo) - lo, min(stop, hi) - lo))
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return np.empty((0, self.n_features), self.dtype)
        return np.concatenate(parts, axis=0)


class CallableSource(RowSource):
    """Rows produced on demand by ``fn(start, stop) -> (stop - start, p) array``.

    ``fn`` must be deterministic in the row range (seed by row index, not by
    call), so that every pass of a multi-pass algorithm sees the same rows.

    Args:
      fn: the row producer.
      n_samples: total rows.
      n_features: row width.
      dtype: dtype of the rows (default float32).

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.sources import CallableSource
      >>> rows = lambda start, stop: np.ones((stop - start, 3))
      >>> src = CallableSource(rows, n_samples=10, n_features=3)
      >>> [b.shape for b in src.blocks(4)]
      [(4, 3), (4, 3), (2, 3)]
    """

    def __init__(self, fn: Callable[[int, int], object], n_samples: int, n_features: int,
                 dtype=np.float32):
        self.fn = fn
        self.n_samples = int(n_samples)
        self.n_features = int(n_features)
        self.dtype = np.dtype(dtype)

    def read(self, start, stop):
        block = self.fn(start, stop)
        shape = tuple(getattr(block, "shape", ()))
        if shape != (stop - start, self.n_features):
            raise ValueError(f"source function returned shape {shape} for rows {start}:{stop}; "
                             f"expected {(stop - start, self.n_features)}")
        return block


_CACHE_FORMAT = "jaxfactor.cached-rows"
_CACHE_VERSION = 1


def _canonical_json(description) -> str:
    return json.dumps(description, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _gaps(filled, lo: int, hi: int) -> list[tuple[int, int]]:
    """The sub-ranges of ``lo:hi`` not covered by the sorted disjoint ranges ``filled``."""
    out, at = [], lo
    for a, b in filled:
        if b <= at:
            continue
        if a >= hi:
            break
        if a > at:
            out.append((at, a))
        at = max(at, b)
        if at >= hi:
            break
    if at < hi:
        out.append((at, hi))
    return out


def _add_range(filled, lo: int, hi: int) -> list[tuple[int, int]]:
    """``filled`` (sorted, disjoint) with ``lo:hi`` added, touching ranges merged."""
    out = []
    for a, b in sorted(list(filled) + [(lo, hi)]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _npy_layout(path: str):
    """``(shape, fortran_order, dtype, data_offset)`` of a ``.npy`` file's header
    (never unpickles); ``ValueError`` when it is not a plain ``.npy`` file."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            return tuple(shape), bool(fortran), np.dtype(dtype), f.tell()
    except (ValueError, EOFError, OSError) as err:
        raise ValueError(f"cannot read {path!r} as a .npy file: {err}") from err


def _differing_keys(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """``(dotted key, old value, new value)`` of the leaves where two JSON values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            a, b = old.get(k, "<missing>"), new.get(k, "<missing>")
            if a != b:
                out += _differing_keys(a, b, f"{prefix}{k}.")
        return out
    return [(prefix[:-1] or "<description>", old, new)] if old != new else []


def _as_host(block, dtype: np.dtype) -> np.ndarray:
    """A block (numpy, JAX or torch, any device) as a host numpy array of ``dtype``."""
    if hasattr(block, "detach") and hasattr(block, "cpu"):  # torch, without importing it
        block = block.detach().cpu().numpy()
    arr = np.asarray(block)
    return arr if arr.dtype == dtype else arr.astype(dtype)


class CachedSource(RowSource):
    """A row source that keeps the rows of another one in a ``.npy`` file as they are read.

    The first read of a row reads the wrapped ``source`` and writes the row to
    the cache; every later read of it (in this pass, in later passes, and in
    later :class:`CachedSource` objects on the same ``path``, in this process
    or another) reads the file instead. A multi-pass fit over an expensive
    source (a generator's activations) then costs one pass over the source
    plus disk reads. Nothing but the block being read is held in memory.

    Files, beside ``path``:

    * ``<path>.partial``: the cache while rows are missing, a ``.npy`` file of
      the final shape and dtype created with ``numpy.lib.format.open_memmap``
      (header and full size up front). Rows are written into it, and read back
      from it, with plain positional file I/O rather than through a memory
      map, so the pages of rows already passed do not stay mapped in the
      process (as for :class:`NpySource`).
    * ``<path>.json``: the sidecar, written atomically
      (:func:`jaxfactor._io.atomic_write`): format name and version,
      ``n_samples``, ``n_features``, ``dtype``, the ``description``, its
      ``fingerprint`` (sha256 of its canonical JSON), ``filled`` (the row
      ranges ``[lo, hi)`` known written, sorted and merged) and ``complete``.
    * ``path``: once every row is filled, the partial file is synced and
      renamed to ``path`` (``os.replace``: atomic), then the sidecar is
      marked complete (a kill between the two is completed on the next open). From then on reads come from ``path`` alone (with
      :class:`NpySource`); it is a plain ``.npy`` file ``np.load`` reads.

    Filled rows are tracked as a set of ranges, so reads in any order are
    cached; passes read in order from row 0, and then the set is one range
    ``[0, hi)``. A range is recorded in the sidecar only after its rows have
    been synced to disk: every ``save_every`` reads of the wrapped source, when
    the last row is written, and when the wrapped source raises (a
    ``KeyboardInterrupt`` too), so a killed pass loses at most the last
    ``save_every`` blocks' worth of work (none when the source itself raised).
    A new :class:`CachedSource` on the same path with the same description
    continues from the recorded ranges, reusing the partial file. One process
    fills a cache at a time (there is no lock).

    A cache (complete or partial) is used only when its sidecar agrees with
    ``source`` on the description's fingerprint, ``n_samples``, ``n_features``
    and ``dtype``; otherwise ``ValueError`` names what differs. A sidecar that
    is not valid JSON (or not a cache sidecar), a ``.npy`` file at ``path``
    without a sidecar, and a cache file whose header or size do not match the
    sidecar are errors too. With ``overwrite=True`` such a cache is deleted
    and rebuilt instead (a cache that matches is still used). A sidecar
    marked complete whose ``path`` has been deleted starts a fresh cache.

    File modes are those of a plain ``open``: ``0o666`` less the umask.

    Args:
      source: the wrapped row source: ``n_samples``, ``n_features``, ``dtype``
        and ``read(start, stop)`` returning a ``(stop - start, n_features)``
        numpy, JAX or torch array (any device; copied to the host for the file).
      path: the cache file (``.npy``); its directory must exist.
      description: JSON-able dict that identifies the rows (a stale cache is
        recognised by it). Default: ``source.cache_description()`` when the
        source has one (``ActivationStream``'s adds a hash of the generator's
        weights), else ``source.describe()``, else
        ``{"type": type(source).__name__}`` (plus ``"paths"`` when the source
        has them): give one for sources without either, or two sources of one
        type and shape share a cache.
      overwrite: delete a cache that does not match (or is damaged) and
        rebuild it, instead of raising.
      save_every: reads of the wrapped source between progress records.

    Attributes:
      source, path, sidecar_path, partial_path, description, fingerprint,
      n_samples, n_features, dtype; ``complete`` and ``filled`` (properties).

    ``read(start, stop)`` returns a ``(stop - start, n_features)`` numpy array
    of ``dtype`` (a fresh array, never a view of the file). Other public
    attributes of ``source`` (e.g. ``latents``) are reachable on the cached
    source, except ``read_with_latents`` (whose rows would bypass the cache:
    ``jaxfactor.lift`` then calls ``read`` and ``latents``).

    Raises:
      ValueError: the cache at ``path`` belongs to another source or is
        damaged (see above), and ``overwrite`` is false.

    Examples:
      >>> import os, tempfile, numpy as np
      >>> from jaxfactor.sources import ArraySource, CachedSource
      >>> x = np.arange(24, dtype=np.float32).reshape(6, 4)
      >>> with tempfile.TemporaryDirectory() as d:
      ...     path = os.path.join(d, "rows.npy")
      ...     cached = CachedSource(ArraySource(x), path, description={"data": "ramp"})
      ...     first = np.concatenate(list(cached.blocks(4)))  # reads the source, fills the file
      ...     again = CachedSource(ArraySource(x), path, description={"data": "ramp"})
      ...     (cached.complete, again.complete, bool((again.read(1, 5) == x[1:5]).all()),
      ...      np.load(path).shape)
      (True, True, True, (6, 4))
    """

    def __init__(self, source, path: str | os.PathLike, *, description: dict | None = None,
                 overwrite: bool = False, save_every: int = 8):
        self.source = source
        self.n_samples, self.n_features = int(source.n_samples), int(source.n_features)
        self.dtype = np.dtype(getattr(source, "dtype", np.float32))
        if int(save_every) < 1:
            raise ValueError(f"save_every must be >= 1, got {save_every}")
        self.save_every = int(save_every)
        if description is None:
            describe = getattr(source, "cache_description", None)
            describe = describe if callable(describe) else getattr(source, "describe", None)
            if callable(describe):
                description = describe()
            else:
                description = {"type": type(source).__name__}
                if getattr(source, "paths", None):
                    description["paths"] = [os.path.abspath(os.fspath(q)) for q in source.paths]
        try:
            canonical = _canonical_json(description)
        except (TypeError, ValueError) as err:
            raise ValueError(f"the cache description must be JSON-serialisable: {err}") from err
        self.description = json.loads(canonical)
        self.fingerprint = self.fingerprint_of(self.description)
        self.path = os.fspath(path)
        self.sidecar_path = self.path + ".json"
        self.partial_path = self.path + ".partial"
        self._filled: list[tuple[int, int]] = []
        self._unsaved = 0  # reads of the wrapped source not yet recorded in the sidecar
        self._offset = 0  # data offset of the partial file
        self._final: NpySource | None = None
        self._open(bool(overwrite))

    @staticmethod
    def fingerprint_of(description) -> str:
        """sha256 (hex) of the canonical JSON of ``description``."""
        return hashlib.sha256(_canonical_json(description).encode("utf-8")).hexdigest()

    # ------------------------------------------------------------ state
    @property
    def complete(self) -> bool:
        """Whether every row is in the final file (reads never touch the source)."""
        return self._final is not None

    @property
    def filled(self) -> tuple[tuple[int, int], ...]:
        """The row ranges ``(lo, hi)`` in the cache (recorded or not yet)."""
        return tuple(self._filled)

    def describe(self) -> dict:
        """The description the cache is validated against (the rows' identity)."""
        return json.loads(_canonical_json(self.description))

    def _meta(self, complete: bool) -> dict:
        return {"format": _CACHE_FORMAT, "version": _CACHE_VERSION,
                "n_samples": self.n_samples, "n_features": self.n_features,
                "dtype": self.dtype.str, "fingerprint": self.fingerprint,
                "description": self.description, "complete": complete,
                "filled": [list(r) for r in self._filled],
                "partial": os.path.basename(self.partial_path)}

    def _write_sidecar(self, complete: bool = False) -> None:
        atomic_write_text(self.sidecar_path, json.dumps(self._meta(complete)))

    def _load_sidecar(self):
        """The sidecar as a dict, ``None`` when there is none; ``ValueError`` when damaged."""
        if not os.path.exists(self.sidecar_path):
            return None
        try:
            with open(self.sidecar_path, encoding="utf-8") as f:
                meta = json.load(f)
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"cache sidecar {self.sidecar_path!r} is not valid JSON ({err})") from err
        keys = {"format", "version", "n_samples", "n_features", "dtype", "fingerprint",
                "description", "complete", "filled"}
        if not isinstance(meta, dict) or meta.get("format") != _CACHE_FORMAT or not keys <= set(meta):
            raise ValueError(f"{self.sidecar_path!r} is not a jaxfactor cache sidecar")
        if meta["version"] != _CACHE_VERSION:
            raise ValueError(f"cache sidecar {self.sidecar_path!r} has version {meta['version']}; "
                             f"this version reads version {_CACHE_VERSION}")
        try:
            filled = [(int(a), int(b)) for a, b in meta["filled"]]
        except (TypeError, ValueError) as err:
            raise ValueError(f"cache sidecar {self.sidecar_path!r} has malformed 'filled' ranges") from err
        if any(not 0 <= a < b <= int(meta["n_samples"]) for a, b in filled):
            raise ValueError(f"cache sidecar {self.sidecar_path!r} has 'filled' ranges outside the rows")
        meta["filled"] = filled
        return meta

    def _differences(self, meta: dict) -> list[str]:
        diffs = []
        if (meta["n_samples"], meta["n_features"]) != (self.n_samples, self.n_features):
            diffs.append(f"shape: cache ({meta['n_samples']}, {meta['n_features']}), source "
                         f"({self.n_samples}, {self.n_features})")
        try:
            cached_dtype = np.dtype(meta["dtype"])
        except TypeError:
            cached_dtype = meta["dtype"]
        if cached_dtype != self.dtype:
            diffs.append(f"dtype: cache {getattr(cached_dtype, 'name', cached_dtype)}, source "
                         f"{self.dtype.name}")
        if meta["fingerprint"] != self.fingerprint:
            found = _differing_keys(meta["description"], self.description)
            shown = []
            for key, a, b in found[:6]:
                a, b = repr(a), repr(b)
                shown.append(f"{key!r} (cache {a}, source {b})" if len(a) + len(b) <= 80 else repr(key))
            what = ("keys " + ", ".join(shown) + (", ..." if len(found) > 6 else "")
                    if shown else "its fingerprint only")
            diffs.append(f"description (fingerprint {meta['fingerprint'][:12]}... vs "
                         f"{self.fingerprint[:12]}...): differs in {what}")
        return diffs

    def _check_file(self, path: str) -> None:
        """``ValueError`` unless ``path`` is a C-ordered ``.npy`` of our shape, dtype and size."""
        shape, fortran, dtype, offset = _npy_layout(path)
        if shape != (self.n_samples, self.n_features) or dtype != self.dtype or fortran:
            raise ValueError(f"cache file {path!r} holds a {'Fortran' if fortran else 'C'}-ordered "
                             f"{dtype.name} array of shape {shape}; its sidecar says "
                             f"({self.n_samples}, {self.n_features}) {self.dtype.name}")
        size, want = os.path.getsize(path), offset + self.n_samples * self.n_features * dtype.itemsize
        if size != want:
            raise ValueError(f"cache file {path!r} has {size} bytes; its header and sidecar call "
                             f"for {want} (truncated or damaged)")
        self._offset = offset

    def _discard(self) -> None:
        for f in (self.path, self.partial_path, self.sidecar_path):
            if os.path.exists(f):
                os.remove(f)

    def _start(self) -> None:
        """A fresh, empty partial file and sidecar."""
        for f in (self.path, self.partial_path):
            if os.path.exists(f):
                os.remove(f)
        # open(..., "w+b") inside: the file mode is 0o666 less the umask
        m = np.lib.format.open_memmap(self.partial_path, mode="w+", dtype=self.dtype,
                                      shape=(self.n_samples, self.n_features))
        self._offset = int(m.offset)
        del m
        self._filled, self._unsaved = [], 0
        self._write_sidecar()

    def _refuse(self, problem: str) -> ValueError:
        return ValueError(f"cache {self.path!r}: {problem}; delete it, use another path, or pass "
                          f"overwrite=True to discard and rebuild it")

    def _open(self, overwrite: bool) -> None:
        try:
            meta = self._load_sidecar()
        except ValueError as err:
            if not overwrite:
                raise self._refuse(str(err)) from err
            self._discard()
            meta = None
        if meta is None:
            if os.path.exists(self.path) and not overwrite:
                raise self._refuse(f"{self.path!r} exists without a sidecar "
                                       f"({self.sidecar_path!r}), so it cannot be validated")
            self._start()
            return
        diffs = self._differences(meta)
        if diffs:
            if not overwrite:
                raise self._refuse("written for another source: " + "; ".join(diffs))
            self._discard()
            self._start()
            return
        full = meta["filled"] == [(0, self.n_samples)]
        try:
            if os.path.exists(self.path) and (meta["complete"] or full):
                self._check_file(self.path)
                self._filled = [(0, self.n_samples)]
                if not meta["complete"]:  # killed between the rename and the sidecar
                    self._write_sidecar(complete=True)
                self._final = NpySource(self.path)
            elif meta["complete"]:  # the data file was deleted: nothing stale can be read
                self._start()
            elif os.path.exists(self.path):
                raise ValueError(f"{self.path!r} exists but the sidecar records an unfinished cache")
            elif os.path.exists(self.partial_path):
                self._check_file(self.partial_path)
                self._filled = meta["filled"]
                if full:
                    self._finish()
            else:  # the sidecar of a cache whose partial file is gone: nothing to reuse
                self._start()
        except ValueError as err:
            if not overwrite:
                raise self._refuse(str(err)) from err
            self._discard()
            self._start()

    # ------------------------------------------------------------ file I/O
    def _row_bytes(self) -> int:
        return self.n_features * self.dtype.itemsize

    def _read_partial(self, lo: int, hi: int) -> np.ndarray:
        with open(self.partial_path, "rb") as f:
            f.seek(self._offset + lo * self._row_bytes())
            out = np.fromfile(f, dtype=self.dtype, count=(hi - lo) * self.n_features)
        if out.size != (hi - lo) * self.n_features:
            raise OSError(f"{self.partial_path!r} is truncated: rows {lo}:{hi} could not be read")
        return out.reshape(hi - lo, self.n_features)

    def _sync(self) -> None:
        fd = os.open(self.partial_path, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _save_progress(self) -> None:
        """Sync the rows written, then record them (data on disk before the sidecar says so)."""
        self._sync()
        self._write_sidecar()
        self._unsaved = 0

    def _finish(self) -> None:
        """Every row is written: sync, record, rename to the final path, mark complete.

        A kill at any point leaves a state :meth:`_open` completes: the rows
        recorded as all filled with the partial file, or with the final one."""
        self._sync()
        self._write_sidecar()
        os.replace(self.partial_path, self.path)
        self._write_sidecar(complete=True)
        self._final = NpySource(self.path)
        self._unsaved = 0

    def _fetch(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` from the wrapped source, written to the partial file."""
        try:
            block = self.source.read(lo, hi)
        except BaseException:
            # keep what was written so far (a KeyboardInterrupt too); never mask the error
            if self._unsaved:
                with contextlib.suppress(OSError):  # a failing disk on top of the error
                    self._save_progress()
            raise
        arr = _as_host(block, self.dtype)
        if arr.shape != (hi - lo, self.n_features):
            raise ValueError(f"the wrapped source returned shape {arr.shape} for rows {lo}:{hi}; "
                             f"expected {(hi - lo, self.n_features)}")
        with open(self.partial_path, "r+b") as f:
            f.seek(self._offset + lo * self._row_bytes())
            f.write(np.ascontiguousarray(arr).data)
        self._filled = _add_range(self._filled, lo, hi)
        self._unsaved += 1
        return arr

    def read(self, start, stop) -> np.ndarray:
        """Rows ``start:stop`` as a fresh ``(stop - start, n_features)`` numpy array."""
        lo, hi = int(start), int(stop)
        if not 0 <= lo <= hi <= self.n_samples:
            raise IndexError(f"rows {lo}:{hi} outside [0, {self.n_samples}]")
        if self._final is not None:
            return self._final.read(lo, hi)
        if lo == hi:
            return np.empty((0, self.n_features), self.dtype)
        gaps = _gaps(self._filled, lo, hi)
        if not gaps:
            return self._read_partial(lo, hi)
        if gaps == [(lo, hi)]:
            out = self._fetch(lo, hi)
        else:
            out = np.empty((hi - lo, self.n_features), self.dtype)
            at = lo
            for a, b in gaps + [(hi, hi)]:
                if a > at:
                    out[at - lo:a - lo] = self._read_partial(at, a)
                if b > a:
                    out[a - lo:b - lo] = self._fetch(a, b)
                at = b
        if self._filled == [(0, self.n_samples)]:
            self._finish()
        elif self._unsaved >= self.save_every:
            self._save_progress()
        return out

    def __getattr__(self, attr):  # latents, paths, ... of the wrapped source
        source = self.__dict__.get("source")
        if source is None or attr.startswith("_") or attr == "read_with_latents":
            raise AttributeError(attr)
        return getattr(source, attr)

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"{sum(b - a for a, b in self._filled)} rows filled"
        return (f"CachedSource({self.source!r}, path={self.path!r}, {state})")


def is_source(obj) -> bool:
    """Whether ``obj`` follows the row-source protocol (duck-typed).

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.sources import ArraySource, is_source
      >>> is_source(ArraySource(np.zeros((2, 2)))), is_source(np.zeros((2, 2)))
      (True, False)
    """
    return isinstance(obj, RowSource) or all(
        hasattr(obj, a) for a in ("n_samples", "n_features", "read"))


def as_source(obj) -> RowSource:
    """``obj`` as a row source: sources pass through, 2-D arrays are wrapped,
    strings and paths become :class:`NpySource`.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.sources import as_source
      >>> as_source(np.zeros((50, 8), np.float32))
      ArraySource(n_samples=50, n_features=8, dtype=float32)
    """
    if is_source(obj):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return NpySource(obj)
    return ArraySource(obj)
