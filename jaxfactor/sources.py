"""Replayable sources of row blocks of an ``(n_samples, n_features)`` matrix.

A source is anything with ``n_samples``, ``n_features``, ``dtype`` and
``read(start, stop)`` returning rows ``start:stop`` as a 2-D array. Reading the
same range twice gives the same rows, which is what multi-pass algorithms (power
iterations, block Krylov) need. :meth:`RowSource.blocks` walks the rows in
blocks of a given size; nothing ever holds all ``n_samples`` rows at once
unless the source itself does (:class:`ArraySource`).
"""
from __future__ import annotations

import os
from typing import Callable, Iterator, Sequence

import numpy as np

__all__ = ["RowSource", "ArraySource", "NpySource", "CallableSource", "as_source", "is_source"]


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
