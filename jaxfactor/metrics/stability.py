"""Which ICA components are real: seeded restarts batched in one program, and a
per-component stability index in the manner of ICASSO.

ICASSO (Himberg, Hyvarinen & Esposito, "Validating the independent components
of neuroimaging time series via clustering and visualization", NeuroImage
2004) runs ICA many times, from random starts and on bootstrap resamples of
the data, pools the estimates, clusters them by the absolute correlation of
their source signals, and scores each cluster by its quality index
``I_q = mean intra-cluster similarity - mean extra-cluster similarity``. A
component the data determine comes back, nearly unchanged, from every run; a
direction inside a Gaussian subspace (where every rotation is as good as any
other) rotates from one resample to the next.

Here the clusters are anchored on the components of one reference fit (the
answer an estimator returns): run ``r``'s components are matched one to one
to the reference's by the assignment that maximises the total similarity
(Hungarian), and cluster ``i`` is reference component ``i`` with its match in
every run. On whitened data (identity covariance) the correlation of the
sources ``y_a = u^T z`` and ``y_b = v^T z`` of two unit rows is ``<u, v>``, so
similarities need no pass over the data. :func:`stability_index` gives

    intra_i = mean over pairs of members of cluster i of |<u, v>|,
    extra_i = max over clusters j != i of the mean |<u, v>| between members of
              i and members of j from different runs,
    index_i = clip(intra_i - extra_i, 0, 1):

ICASSO's ``I_q`` with the nearest other cluster in place of all other
estimates, so that a direction rotating inside a Gaussian subspace scores low
however many other components there are (its nearest neighbours are the other
directions of that subspace).

Kernels: :func:`bootstrap_rows` (resampling indices that keep padded rows in
place), :func:`ica_restarts` (``vmap`` of the fixed point or Picard-O over
starts, and optionally over resamples, of one whitened matrix; criteria on the
full data). Host-side: :func:`stability_index` (NumPy, small ``k x k``
algebra and assignments).
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from .._linalg import full_float32
from ..ica import _as_count, fastica
from ..picard import ica_criteria, picard_o

__all__ = ["RestartResult", "StabilityResult", "bootstrap_rows", "ica_restarts",
           "stability_index"]


class RestartResult(NamedTuple):
    """Result of :func:`ica_restarts`: one entry per run (leading axis ``R``).

    Attributes:
      w: ``(R, k, k)`` orthogonal unmixings of the whitened data.
      n_iter: ``(R,)`` int32 iterations.
      converged: ``(R,)`` bool, each run's own criterion met.
      status: ``(R,)`` int32 :mod:`jaxfactor._status` codes.
      stalled: ``(R,)`` bool, Picard-O found no descent (always ``False`` for
        the fixed point).
      objective, grad_norm, change: ``(R,)``, :func:`jaxfactor.picard.ica_criteria`
        of each ``w`` on the full (not resampled) whitened data.
    """

    w: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    status: jax.Array
    stalled: jax.Array
    objective: jax.Array
    grad_norm: jax.Array
    change: jax.Array


class StabilityResult(NamedTuple):
    """Result of :func:`stability_index` (NumPy arrays).

    Attributes:
      index: ``(k,)`` float64 in ``[0, 1]``, ``clip(intra - extra, 0, 1)``.
      intra: ``(k,)`` mean similarity within each cluster.
      extra: ``(k,)`` mean similarity to the nearest other cluster.
      matches: ``(R, k)`` int, ``matches[r, i]`` the row of run ``r`` in cluster ``i``.
    """

    index: np.ndarray
    intra: np.ndarray
    extra: np.ndarray
    matches: np.ndarray


def bootstrap_rows(key: jax.Array, n_rows: int, n_valid: int, n_runs: int) -> jax.Array:
    """Bootstrap resampling indices of the rows of a (padded) whitened matrix.

    Args:
      key: ``jax.random`` key.
      n_rows: rows of the matrix (``n_valid`` true rows, then zero padding).
      n_valid: true rows; each resample draws ``n_valid`` of them with replacement.
      n_runs: ``R``, resamples.

    Returns:
      ``(R, n_rows)`` int32: the first ``n_valid`` entries of each row uniform on
      ``[0, n_valid)``, the rest the padded rows themselves (still zero after the
      gather, as the kernels require).

    Examples:
      >>> import jax
      >>> from jaxfactor.metrics.stability import bootstrap_rows
      >>> rows = bootstrap_rows(jax.random.key(0), 6, 4, 2)
      >>> rows.shape, rows[:, 4:].tolist(), bool((rows[:, :4] < 4).all())
      ((2, 6), [[4, 5], [4, 5]], True)
    """
    draws = jax.random.randint(key, (n_runs, n_rows), 0, n_valid, dtype=jnp.int32)
    keep = jnp.arange(n_rows, dtype=jnp.int32)
    return jnp.where(keep[None, :] < n_valid, draws, keep[None, :])


@full_float32
@partial(jax.jit, static_argnames=("algorithm", "fun", "decorrelation"))
def ica_restarts(white: jax.Array, w_inits: jax.Array, rows: jax.Array | None = None, *,
                 algorithm: str = "picard", fun: str = "logcosh", alpha=1.0, tol=1e-4,
                 max_iter: int = 200, n_valid=None,
                 decorrelation: str = "eigh") -> RestartResult:
    """``R`` ICA runs on one whitened matrix in one compiled program (``vmap``).

    Run ``r`` starts from ``w_inits[r]`` and, when ``rows`` is given, fits the
    resample ``white[rows[r]]`` (:func:`bootstrap_rows`); the criteria of every
    result are then evaluated on ``white`` itself, so the runs' objectives are
    comparable. A ``vmap`` of a ``while_loop`` runs until the slowest run stops;
    a finished run's state no longer changes.

    Args:
      white: ``(n, k)`` whitened data, rows beyond ``n_valid`` zero.
      w_inits: ``(R, k, k)`` starting matrices.
      rows: ``None`` or ``(R, n)`` int row indices.
      algorithm: ``'parallel'``, ``'deflation'`` (:func:`jaxfactor.ica.fastica`)
        or ``'picard'`` (:func:`jaxfactor.picard.picard_o`) (static).
      fun, alpha, tol, max_iter, n_valid, decorrelation: as for those kernels.

    Returns:
      :class:`RestartResult`.

    Examples:
      >>> import jax, numpy as np
      >>> from jaxfactor.metrics.stability import ica_restarts
      >>> from jaxfactor.whitening import whiten
      >>> s = np.random.default_rng(0).laplace(size=(1000, 3)).astype(np.float32)
      >>> white = whiten(s @ np.random.default_rng(1).normal(size=(3, 3)).astype(np.float32), 3).white
      >>> res = ica_restarts(white, jax.random.normal(jax.random.key(0), (4, 3, 3)))
      >>> res.w.shape, res.objective.shape, bool(res.converged.all())
      ((4, 3, 3), (4,), True)
    """
    n_valid = _as_count(n_valid, white.shape[0])
    kw = dict(fun=fun, alpha=alpha, tol=tol, max_iter=max_iter, n_valid=n_valid,
              decorrelation=decorrelation)

    def one(w0, idx):
        data = white if idx is None else white[idx]
        if algorithm == "picard":
            res = picard_o(data, w0, **kw)
            stalled = res.stalled
        else:
            res = fastica(data, w_init=w0, algorithm=algorithm, **kw)
            stalled = jnp.zeros((), bool)
        crit = ica_criteria(white, res.w, fun=fun, alpha=alpha, n_valid=n_valid,
                            decorrelation=decorrelation)
        return RestartResult(res.w, res.n_iter, res.converged, res.status, stalled,
                             crit.objective, crit.grad_norm, crit.change)

    if rows is None:
        return jax.vmap(lambda w0: one(w0, None))(w_inits)
    return jax.vmap(one)(w_inits, rows)


def stability_index(w_ref, w_runs) -> StabilityResult:
    """Per-component stability of the reference unmixing ``w_ref`` across runs
    (module docstring: ICASSO's quality index, anchored clusters).

    Args:
      w_ref: ``(k, k)`` unmixing with orthonormal rows (the reference fit).
      w_runs: ``(R, k, k)`` unmixings of the same whitened data, orthonormal rows
        (other starts and/or resamples), ``R >= 1``.

    Returns:
      :class:`StabilityResult` over the clusters of ``w_ref``'s rows.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.stability import stability_index
      >>> q = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))[0]
      >>> res = stability_index(q, np.stack([q[[1, 0, 3, 2]], -q]))  # same rows, any order/sign
      >>> np.round(res.index, 6).tolist(), res.matches[0].tolist()
      ([1.0, 1.0, 1.0, 1.0], [1, 0, 3, 2])
    """
    w_ref = np.asarray(w_ref, np.float64)
    w_runs = np.asarray(w_runs, np.float64)
    k = w_ref.shape[0]
    matches = np.empty((w_runs.shape[0], k), np.int64)
    for r, w in enumerate(w_runs):
        _, col = linear_sum_assignment(-np.abs(w_ref @ w.T))
        matches[r] = col
    # members in cluster order: (R + 1, k, k), member (run, cluster)
    members = np.concatenate([w_ref[None], np.take_along_axis(w_runs, matches[:, :, None], 1)])
    n_members = members.shape[0]
    mean = np.zeros((k, k))
    for r in range(n_members):
        sim = np.abs(np.einsum("ip,sjp->sij", members[r], members))    # (R + 1, k, k)
        mean += sim.sum(axis=0) - sim[r]                                 # other runs only
    mean /= n_members * (n_members - 1)
    intra = np.diagonal(mean).copy()
    off = np.where(np.eye(k, dtype=bool), -np.inf, mean)
    extra = off.max(axis=1) if k > 1 else np.zeros(1)
    return StabilityResult(np.clip(intra - extra, 0.0, 1.0), intra, extra, matches)
