"""Reference computations shared by the tests (NumPy float64)."""
from __future__ import annotations

import numpy as np


def low_rank_data(rng, n, p, rank, *, noise=0.05, decay=1.0, offset=3.0, dtype=np.float32):
    """``(n, p)`` rows ``offset + S diag(scales) M + noise``: a planted subspace
    of dimension ``rank`` with decaying scales, a non-zero mean and noise."""
    rank = min(rank, p)
    scales = np.arange(1, rank + 1) ** -decay * 10.0
    m = np.linalg.qr(rng.standard_normal((p, rank)))[0].T
    x = (rng.standard_normal((n, rank)) * scales) @ m
    x += offset * rng.standard_normal(p) + noise * rng.standard_normal((n, p))
    return x.astype(dtype)


def exact_pca(x):
    """Exact PCA in float64: ``(components (min(n,p), p), explained_variance, mean)``."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    return vt, s**2 / (x.shape[0] - 1), mean


def principal_angles_deg(a, b):
    """Principal angles (degrees, ascending) between the row spaces of ``a``
    and ``b`` (each ``(k, p)``; orthonormalised here)."""
    qa = np.linalg.qr(np.asarray(a, np.float64).T)[0]
    qb = np.linalg.qr(np.asarray(b, np.float64).T)[0]
    cos = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))[::-1]


def captured_variance(x, components):
    """Variance of centred ``x`` captured by the row space of ``components``."""
    x = np.asarray(x, np.float64)
    q = np.linalg.qr(np.asarray(components, np.float64).T)[0]
    return float(np.sum(((x - x.mean(axis=0)) @ q) ** 2) / (x.shape[0] - 1))
