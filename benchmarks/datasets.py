"""Synthetic data shaped like GAN features, shared by the benchmarks.

Rows are ``mean + S diag(scales) M + noise``: ``rank`` heavy-tailed (Laplace)
sources with power-law decaying scales mixed by a random Gaussian matrix, a
positive offset per feature (activations after a GLU/ReLU are not centred),
and isotropic Gaussian noise. The spectrum decays smoothly past any ``k``, as
the spectra of real generator layers do, so randomized methods are tested on
a realistic tail rather than on an exact low-rank matrix.
"""
from __future__ import annotations

import numpy as np


def gan_like(n_samples: int, n_features: int, *, rank: int = 1000, decay: float = 0.8,
             noise: float = 0.05, seed: int = 0, dtype=np.float32, block: int = 2048,
             out: np.ndarray | None = None) -> np.ndarray:
    """``(n_samples, n_features)`` array of GAN-feature-like rows (see module doc).

    Generated block by block in float32 so that large cases fit in memory;
    ``out`` (e.g. a ``np.lib.format.open_memmap`` of that shape) receives the
    rows instead of a new array, so a file larger than memory can be written.
    """
    rng = np.random.default_rng(seed)
    rank = min(rank, n_features)
    scales = (np.arange(1, rank + 1, dtype=np.float64) ** -decay).astype(np.float32)
    mixing = rng.standard_normal((rank, n_features), dtype=np.float32) / np.sqrt(rank)
    mixing *= 4.0 * scales[:, None]
    offset = np.abs(rng.standard_normal(n_features, dtype=np.float32))
    out = np.empty((n_samples, n_features), dtype=dtype) if out is None else out
    for lo in range(0, n_samples, block):
        hi = min(lo + block, n_samples)
        sources = rng.laplace(size=(hi - lo, rank)).astype(np.float32)
        x = sources @ mixing
        x += offset
        x += noise * rng.standard_normal((hi - lo, n_features), dtype=np.float32)
        out[lo:hi] = x
    return out
