"""Disentanglement against ground truth: factor changes per unit walk, and DCI.

For a generator whose images have *measurable* factors (a callable
``measure: images -> (b, J)`` factor values, e.g. the testbed's
``bridges.builtin.testbed.measure``), three views of a set of directions:

* **The factor-change matrix** (:func:`factor_change_matrix`): walking
  direction ``v_i`` from ``N`` start latents over signed distances ``t``
  (:func:`jaxfactor.metrics.walks.walk_predictions` with ``predict =
  measure``), ``C_ij = mean_{n, t != 0} |f_j(z_n + t v_i) - f_j(z_n)| / |t|``:
  the change of factor ``j`` per unit latent distance, in the factor's unit.
  Circular factors (a hue in degrees, an axis angle) take the shortest signed
  difference modulo their ``period``. Divided by the factor's spread
  (``scale_j``, e.g. its standard deviation over the data) the columns become
  comparable: ``A_ij = C_ij / scale_j``, "factor standard deviations per unit
  walk". Each direction's best-matched factor is ``argmax_j A_ij`` with
  *share* ``A_ij / sum_j A_ij`` (1: it moves one factor only)
  (:func:`best_factors`).
* **S_e and S_d as the sparsity paper defines them** (Liu et al.,
  :mod:`jaxfactor.metrics.walks`), on the measured factors mapped to
  ``(0, 1)`` by the logistic of their z-scores
  (:func:`factor_probabilities`), so that the paper's "attribute probability"
  is the measured factor's standardised level (:func:`factor_walk_scores`).
* **DCI** (Eastwood & Williams, "A framework for the quantitative evaluation
  of disentangled representations", ICLR 2018) of codes ``c`` (``(N, K)``,
  e.g. each sample's coordinates along the directions) against the factors
  ``f`` (``(N, J)``), with a linear regressor (:func:`dci`): standardise
  ``c`` and ``f``, regress each factor on all codes by least squares, and take
  the importance ``R_ij = |beta_ij|`` of code ``i`` for factor ``j`` (the
  paper's Lasso regressor with its penalty at 0). With
  ``P_ij = R_ij / sum_k R_ik`` and ``Q_ij = R_ij / sum_k R_kj``:
  disentanglement of code ``i`` ``D_i = 1 - H_J(P_i.)`` and completeness of
  factor ``j`` ``C_j = 1 - H_K(Q_.j)`` (``H_b`` the entropy in base ``b``);
  ``D = sum_i rho_i D_i`` with ``rho_i = sum_j R_ij / sum R`` (the paper's
  weighting), ``C = sum_j kappa_j C_j`` with ``kappa_j = sum_i R_ij / sum R``
  (as ``disentanglement_lib`` weights it); informativeness is each factor's
  coefficient of determination ``R^2`` on held-out rows.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np

from .protocols import latents_and_directions
from .walks import WalkPredictions, WalkScores, walk_scores

__all__ = ["DCIResult", "factor_walk", "factor_change_matrix", "best_factors",
           "factor_probabilities", "factor_walk_scores", "dci"]


class DCIResult(NamedTuple):
    """The DCI scores (definitions in the module docstring).

    Attributes:
      disentanglement: ``D`` in ``[0, 1]``.
      completeness: ``C`` in ``[0, 1]``.
      informativeness: ``(J,)`` held-out ``R^2`` of each factor.
      importance: ``(K, J)`` the matrix ``R``.
      code_disentanglement: ``(K,)`` ``D_i``.
      factor_completeness: ``(J,)`` ``C_j``.
    """

    disentanglement: float
    completeness: float
    informativeness: np.ndarray
    importance: np.ndarray
    code_disentanglement: np.ndarray
    factor_completeness: np.ndarray


def factor_walk(render: Callable, measure: Callable, latents, directions, distances, *,
                batch_size: int = 256) -> WalkPredictions:
    """Measured factors along two-sided unit-norm walks.

    The same walks and the same result as
    :func:`jaxfactor.metrics.walks.walk_predictions` with
    ``predict = measure``, ``two_sided=True``, ``normalize=True``: the grid is
    ``-t_max .. 0 .. t_max`` over ``distances`` (0 added), and the start
    images are rendered once for all directions. The images of every
    direction and distance are rendered and measured together,
    ``batch_size`` latents per call, instead of one ``(direction, distance)``
    walk step at a time (few, large batches: the generator's per-call cost is
    paid ``K (S - 1) N / batch_size`` times, not ``K (S - 1)``).

    Args:
      render: ``(b, *latent_shape) numpy -> images``.
      measure: ``images -> (b, J)`` factor values (any real units).
      latents: ``(N, *latent_shape)`` start latents. directions: ``(K, *latent_shape)``
        (normalised to unit length). distances: positive walk distances.
      batch_size: latents per render call.

    Returns:
      :class:`WalkPredictions`: ``predictions`` ``(K, S, N, J)`` float64 are factor values.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.disentanglement import factor_walk
      >>> walk = factor_walk(lambda z: z, lambda z: 2 * z, np.zeros((3, 2)), np.eye(2), [1.0])
      >>> walk.predictions.shape, float(walk.predictions[0, -1, 0, 0])
      ((2, 3, 3, 2), 2.0)
    """
    latents, directions = latents_and_directions(latents, directions)
    axes = tuple(range(1, directions.ndim))
    norms = np.sqrt(np.sum(directions ** 2, axis=axes, keepdims=True))
    if np.any(norms == 0):
        raise ValueError("zero directions cannot be normalised")
    directions = directions / norms
    steps = np.asarray(distances, dtype=np.float64).ravel()
    if steps.size == 0 or not np.all(np.isfinite(steps)) or np.any(steps < 0):
        raise ValueError(f"distances must be finite and non-negative, got {steps}")
    steps = np.unique(np.concatenate([[0.0], steps]))
    if steps.size < 2:
        raise ValueError("distances need at least one positive value")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    grid = np.concatenate([-steps[:0:-1], steps])
    n, k = latents.shape[0], directions.shape[0]
    dtype = latents.dtype if latents.dtype.kind == "f" else np.float64
    start = latents.astype(dtype)
    moving = grid[grid != 0.0]
    shape = (1, -1, 1) + (1,) * (latents.ndim - 1)
    # (K, S - 1, N, *latent_shape): z_n + t v_i, in the latents' dtype (as walk_predictions)
    walked = (start[None, None] + moving.reshape(shape) * directions[:, None, None]).astype(dtype)
    codes = np.concatenate([start, walked.reshape((-1,) + latents.shape[1:])])
    values = []
    for lo in range(0, codes.shape[0], batch_size):
        z = codes[lo:lo + batch_size]
        v = measure(render(z))
        if type(v).__module__.startswith("torch"):
            v = v.detach().cpu().numpy()
        v = np.asarray(v, np.float64)
        v = v[:, None] if v.ndim == 1 else v
        if v.ndim != 2 or v.shape[0] != z.shape[0]:
            raise ValueError(f"measure returned shape {v.shape} for {z.shape[0]} images; "
                             f"(n, J) is expected")
        values.append(v)
    values = np.concatenate(values)
    j = values.shape[1]
    preds = np.empty((k, grid.size, n, j))
    zero = int(np.flatnonzero(grid == 0.0)[0])
    preds[:, zero] = values[:n][None]
    preds[:, grid != 0.0] = values[n:].reshape(k, moving.size, n, j)
    return WalkPredictions(grid, preds)


def _periods(periods, j: int) -> np.ndarray:
    if periods is None:
        return np.zeros(j)
    p = np.asarray(periods, np.float64).ravel()
    if p.shape != (j,) or np.any(~np.isfinite(p)) or np.any(p < 0):
        raise ValueError(f"periods must be {j} finite values >= 0 (0: not circular); got {periods}")
    return p


def _difference(a: np.ndarray, b: np.ndarray, period: np.ndarray) -> np.ndarray:
    """``a - b``, the shortest signed difference modulo ``period`` where it is > 0."""
    d = a - b
    circ = period > 0
    if np.any(circ):
        p = np.where(circ, period, 1.0)
        wrapped = (d + p / 2) % p - p / 2
        d = np.where(circ, wrapped, d)
    return d


def factor_change_matrix(walk: WalkPredictions, *, scale=None,
                         periods: Sequence[float] | None = None) -> np.ndarray:
    """Factor change per unit walk, ``A_ij = mean_{n, t != 0} |f_j(z_n + t v_i) - f_j(z_n)| / (|t| scale_j)``.

    Args:
      walk: :class:`WalkPredictions` of measured factors (``(K, S, N, J)``).
      scale: ``(J,)`` positive spreads to divide by (``None``: 1, the factors' units).
      periods: ``(J,)`` period of each circular factor, 0 for the others.

    Returns:
      ``(K, J)`` float64, non-negative.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.disentanglement import factor_walk, factor_change_matrix
      >>> walk = factor_walk(lambda z: z, lambda z: z * [1.0, 10.0], np.zeros((4, 2)), np.eye(2), [0.5, 1.0])
      >>> factor_change_matrix(walk).round(6).tolist()
      [[1.0, 0.0], [0.0, 10.0]]
    """
    grid = np.asarray(walk.distances, np.float64)
    preds = np.asarray(walk.predictions, np.float64)
    if preds.ndim != 4 or preds.shape[1] != grid.size:
        raise ValueError(f"predictions must be (K, S, N, J) with S = {grid.size}; got {preds.shape}")
    zero = np.flatnonzero(grid == 0.0)
    if zero.size != 1 or grid.size < 2:
        raise ValueError("distances must contain 0 (the start) exactly once and one more value")
    j = preds.shape[-1]
    period = _periods(periods, j)
    start = preds[:, zero[0]][:, None]                             # (K, 1, N, J)
    moving = grid != 0.0
    delta = np.abs(_difference(preds[:, moving], start, period))   # (K, S-1, N, J)
    per_unit = delta / np.abs(grid[moving])[None, :, None, None]
    out = per_unit.mean(axis=(1, 2))
    if scale is not None:
        s = np.asarray(scale, np.float64).ravel()
        if s.shape != (j,) or not np.all(np.isfinite(s) & (s > 0)):
            raise ValueError(f"scale must be {j} positive finite values; got {scale}")
        out = out / s
    return out


def best_factors(matrix) -> tuple[np.ndarray, np.ndarray]:
    """Each direction's best-matched factor and its share of the direction's change.

    Args:
      matrix: ``(K, J)`` non-negative factor changes (comparable columns, e.g.
        :func:`factor_change_matrix` with ``scale``).

    Returns:
      ``(index (K,) int64, share (K,) float64)``: ``argmax_j A_ij`` and
      ``A_ij / sum_j A_ij`` (NaN for a direction that changes nothing).

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.disentanglement import best_factors
      >>> index, share = best_factors(np.array([[3.0, 1.0], [0.0, 2.0]]))
      >>> index.tolist(), share.tolist()
      ([0, 1], [0.75, 1.0])
    """
    a = np.asarray(matrix, np.float64)
    if a.ndim != 2 or np.any(a < 0) or not np.all(np.isfinite(a)):
        raise ValueError("matrix must be a finite, non-negative (K, J) array")
    total = a.sum(axis=1)
    index = np.argmax(a, axis=1).astype(np.int64)
    best = a[np.arange(a.shape[0]), index]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, best / total, np.nan)
    return index, share


def factor_probabilities(values, mean, std) -> np.ndarray:
    """Logistic of z-scores, ``p = 1 / (1 + exp(-(f - mean) / std))``, on the last axis.

    Args:
      values: ``(..., J)`` factor values. mean, std: ``(J,)`` reference statistics (std > 0).

    Returns:
      The same shape, float64 in ``(0, 1)``; 0.5 at the mean.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.disentanglement import factor_probabilities
      >>> factor_probabilities(np.array([[1.0, 5.0]]), [1.0, 3.0], [1.0, 2.0]).round(4).tolist()
      [[0.5, 0.7311]]
    """
    v = np.asarray(values, np.float64)
    m = np.asarray(mean, np.float64)
    s = np.asarray(std, np.float64)
    if m.shape != (v.shape[-1],) or s.shape != m.shape or not np.all(s > 0):
        raise ValueError(f"mean and std must be ({v.shape[-1]},) with std > 0")
    return 0.5 * (1.0 + np.tanh(0.5 * (v - m) / s))       # overflow-free logistic


def factor_walk_scores(walk: WalkPredictions, mean, std, *, threshold: float = 0.5) -> WalkScores:
    """The sparsity paper's ``S_e`` and ``S_d`` on measured factors.

    The factor values along the walk become "attribute probabilities" by
    :func:`factor_probabilities` (against the data's ``mean`` and ``std``),
    then :func:`jaxfactor.metrics.walks.walk_scores` computes the response
    matrix, the Hungarian matching, ``S_d = Tr(A') / sum A'`` and ``S_e``
    (probability change per unit distance on the samples that start below
    ``threshold``).

    Args:
      walk: :class:`WalkPredictions` of factor values. mean, std: ``(J,)``.
      threshold: as in :func:`walk_scores`.

    Returns:
      :class:`jaxfactor.metrics.walks.WalkScores`.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.disentanglement import factor_walk, factor_walk_scores
      >>> z = np.random.default_rng(0).normal(size=(20, 2))
      >>> walk = factor_walk(lambda z: z, lambda z: z, z, np.eye(2), [1.0])
      >>> scores = factor_walk_scores(walk, [0.0, 0.0], [1.0, 1.0])
      >>> bool(np.isclose(scores.disentanglement, 1.0)), scores.assignment.tolist()
      (True, [[0, 0], [1, 1]])
    """
    probs = factor_probabilities(walk.predictions, mean, std)
    return walk_scores(WalkPredictions(walk.distances, probs), threshold=threshold)


def _entropy(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=axis) / np.log(base)


def dci(codes, factors, *, test_fraction: float = 0.25) -> DCIResult:
    """DCI disentanglement, completeness and informativeness with a linear regressor.

    Args:
      codes: ``(N, K)`` code of each sample (``K >= 2``), e.g. its coordinates
        along ``K`` directions.
      factors: ``(N, J)`` ground-truth (or measured) factors, ``J >= 2``.
      test_fraction: share of the rows (the last ones) held out for the
        informativeness; the importance comes from the other rows.

    Returns:
      :class:`DCIResult` (definitions in the module docstring).

    Raises:
      ValueError: shapes, too few rows, non-finite values, or a constant column.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.disentanglement import dci
      >>> f = np.random.default_rng(0).normal(size=(400, 3))
      >>> good = dci(f[:, [2, 0, 1]] * [1.0, -3.0, 0.5], f)        # permuted, rescaled: perfect
      >>> round(good.disentanglement, 6), round(good.completeness, 6)
      (1.0, 1.0)
      >>> q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
      >>> bool(dci(f @ q, f).disentanglement < 0.5)                 # rotated: entangled
      True
    """
    c = np.asarray(codes, np.float64)
    f = np.asarray(factors, np.float64)
    if c.ndim != 2 or f.ndim != 2 or c.shape[0] != f.shape[0]:
        raise ValueError(f"codes (N, K) and factors (N, J) must share N; got {c.shape}, {f.shape}")
    n, k = c.shape
    j = f.shape[1]
    if k < 2 or j < 2:
        raise ValueError(f"DCI needs at least 2 codes and 2 factors; got K={k}, J={j}")
    if not (0 < test_fraction < 1):
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    n_test = int(round(n * test_fraction))
    n_train = n - n_test
    if n_train < k + 2 or n_test < 2:
        raise ValueError(f"{n} rows are too few for {k} codes (need > {k + 2} training rows "
                         f"and 2 test rows)")
    for name, x in (("codes", c), ("factors", f)):
        bad = np.count_nonzero(~np.isfinite(x))
        if bad:
            raise ValueError(f"{name} contain {bad} NaN/inf values")
    mu_c, sd_c = c[:n_train].mean(0), c[:n_train].std(0)
    mu_f, sd_f = f[:n_train].mean(0), f[:n_train].std(0)
    if np.any(sd_c == 0) or np.any(sd_f == 0):
        raise ValueError("a code or factor is constant over the training rows")
    cs, fs = (c - mu_c) / sd_c, (f - mu_f) / sd_f
    beta, *_ = np.linalg.lstsq(cs[:n_train], fs[:n_train], rcond=None)     # (K, J)
    resid = fs[n_train:] - cs[n_train:] @ beta
    centred = fs[n_train:] - fs[n_train:].mean(0)
    informativeness = 1.0 - (resid ** 2).sum(0) / np.maximum((centred ** 2).sum(0), 1e-300)
    importance = np.abs(beta)
    total = importance.sum()
    if total == 0:
        raise ValueError("no code carries any information about the factors")
    row = importance.sum(axis=1)
    col = importance.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_code = importance / np.where(row[:, None] > 0, row[:, None], 1.0)
        p_factor = importance / np.where(col[None, :] > 0, col[None, :], 1.0)
    code_d = np.where(row > 0, 1.0 - _entropy(p_code, j, axis=1), 0.0)
    factor_c = np.where(col > 0, 1.0 - _entropy(p_factor, k, axis=0), 0.0)
    return DCIResult(float(np.sum(row / total * code_d)), float(np.sum(col / total * factor_c)),
                     informativeness, importance, code_d, factor_c)
