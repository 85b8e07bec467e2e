"""Recovery metrics for ICA: the Amari distance and matching of sources.

Both judge an unmixing against a known mixing (planted sources), so they are
test and benchmark tools; they run in NumPy/SciPy float64.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["amari_distance", "SourceMatch", "match_sources"]


def amari_distance(W, A) -> float:
    """Normalised Amari distance between an unmixing ``W`` and a mixing ``A``.

    With ``P = |W A|`` (``(k, k)``), Amari, Cichocki & Yang (1996)::

        d = [ sum_i (sum_j P_ij / max_j P_ij - 1)
            + sum_j (sum_i P_ij / max_i P_ij - 1) ] / (2 k (k - 1))

    ``d = 0`` exactly when ``W A`` is a scaled permutation (perfect recovery up
    to scale, sign and order), and ``d <= 1`` with equality when every entry of
    ``|W A|`` is the same. Invariant to rescaling and permuting the rows of
    ``W`` and the columns of ``A``.

    Args:
      W: ``(k, p)`` estimated unmixing (e.g. ``FastICA.components_``), any
        array type NumPy can read.
      A: ``(p, k)`` true mixing (sources ``(n, k)`` mixed as ``S A^T``).

    Returns:
      A float in ``[0, 1]`` (``0.0`` for ``k = 1``).

    Raises:
      ValueError: shapes that do not give a square ``W A``, or an all-zero
        row or column of ``W A``.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.amari import amari_distance
      >>> amari_distance(np.array([[0.0, 2.0], [-3.0, 0.0]]), np.eye(2))   # a scaled permutation
      0.0
      >>> amari_distance(np.ones((2, 2)), np.eye(2))
      1.0
    """
    W = np.asarray(W, dtype=np.float64)
    A = np.asarray(A, dtype=np.float64)
    if W.ndim != 2 or A.ndim != 2 or W.shape[1] != A.shape[0] or W.shape[0] != A.shape[1]:
        raise ValueError(f"W (k, p) and A (p, k) must give a square product, got shapes "
                         f"{W.shape} and {A.shape}")
    p = np.abs(W @ A)
    k = p.shape[0]
    if k == 1:
        return 0.0
    row_max = p.max(axis=1)
    col_max = p.max(axis=0)
    if np.any(row_max == 0) or np.any(col_max == 0):
        raise ValueError("W A has an all-zero row or column: W does not see some sources")
    rows = np.sum(p.sum(axis=1) / row_max - 1)
    cols = np.sum(p.sum(axis=0) / col_max - 1)
    return float((rows + cols) / (2 * k * (k - 1)))


class SourceMatch(NamedTuple):
    """One-to-one matching of estimated to true sources.

    Attributes:
      correlations: ``(m,)`` absolute Pearson correlations of the matched
        pairs, in the order of ``true_index``.
      estimated_index: ``(m,)`` index of the estimated source of each pair.
      true_index: ``(m,)`` index of the true source of each pair (ascending).
    """

    correlations: np.ndarray
    estimated_index: np.ndarray
    true_index: np.ndarray


def match_sources(estimated, true) -> SourceMatch:
    """Match estimated sources to true ones by absolute correlation.

    Solves the assignment ``max sum |corr(estimated_i, true_pi(i))|`` with
    ``scipy.optimize.linear_sum_assignment`` (Hungarian algorithm), which
    removes ICA's sign and permutation ambiguity.

    Args:
      estimated: ``(n, k)`` estimated sources (e.g. ``FastICA.transform(X)``).
      true: ``(n, m)`` true sources.

    Returns:
      :class:`SourceMatch` with ``min(k, m)`` pairs.

    Raises:
      ValueError: different sample counts or a constant column.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.amari import match_sources
      >>> s = np.random.default_rng(0).normal(size=(100, 2))
      >>> m = match_sources(-3 * s[:, ::-1], s)         # swapped, flipped and scaled
      >>> m.estimated_index.tolist(), m.true_index.tolist(), bool(np.allclose(m.correlations, 1))
      ([1, 0], [0, 1], True)
    """
    est = np.asarray(estimated, dtype=np.float64)
    ref = np.asarray(true, dtype=np.float64)
    if est.ndim != 2 or ref.ndim != 2 or est.shape[0] != ref.shape[0]:
        raise ValueError(f"estimated (n, k) and true (n, m) must share n, got shapes "
                         f"{est.shape} and {ref.shape}")
    est = est - est.mean(axis=0)
    ref = ref - ref.mean(axis=0)
    est_norm = np.linalg.norm(est, axis=0)
    ref_norm = np.linalg.norm(ref, axis=0)
    if np.any(est_norm == 0) or np.any(ref_norm == 0):
        raise ValueError("a source is constant; correlations are undefined")
    corr = np.abs((est / est_norm).T @ (ref / ref_norm))
    est_idx, true_idx = linear_sum_assignment(corr, maximize=True)
    order = np.argsort(true_idx)
    est_idx, true_idx = est_idx[order], true_idx[order]
    return SourceMatch(corr[est_idx, true_idx], est_idx, true_idx)
