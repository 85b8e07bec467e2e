"""Starts for ICA that find the planted optimum's basin at many components.

From a Gaussian start, the fixed point and Picard-O reach the optimum of planted
sources at ``k <= 300`` components (``n = 10000`` rows) and a spurious optimum at
``k >= 500`` (``benchmarks/results/bench_ica.md``); from a start in the right basin
either converges in seconds. :func:`reseed_init` builds such a start from the data.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .ica import _contrast, _true_mean
from .picard import _contrast_value, ica_criteria

__all__ = ["ReseedResult", "reseed_init", "gaussian_contrast_mean"]


class ReseedResult(NamedTuple):
    """What :func:`reseed_init` found.

    Attributes:
      w_init: ``(k, k)`` orthogonal start of the best round.
      result: what ``refine(w_init)`` returned for it (e.g. an ``ICAResult``).
      criteria: the :class:`jaxfactor.picard.ICACriteria` of ``result.w``.
      objectives: ``(rounds,)`` float64, the objective ``E[sum_i G(y_i)]`` after each
        round's refinement.
      n_refine_iter: iterations the refinements ran over all rounds.
    """

    w_init: np.ndarray
    result: object
    criteria: object
    objectives: np.ndarray
    n_refine_iter: int


def gaussian_contrast_mean(fun: str = "logcosh", alpha: float = 1.0) -> float:
    """``E[G(nu)]`` for a standard normal ``nu``: the value a Gaussian direction scores.

    By 80-point Gauss-Hermite quadrature of ``G`` evaluated in float32 (good to ~1e-7).

    Args:
      fun: ``'logcosh'``, ``'exp'`` or ``'cube'``.
      alpha: logcosh constant.

    Returns:
      A Python float.

    Examples:
      >>> from jaxfactor.ica_init import gaussian_contrast_mean
      >>> round(gaussian_contrast_mean("cube"), 6)    # E[nu^4] / 4
      0.75
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    g = np.asarray(_contrast_value(fun, jnp.asarray(nodes, jnp.float32), alpha), np.float64)
    return float(np.sum(weights * g) / np.sqrt(2 * np.pi))


@partial(jax.jit, static_argnames=("fun", "steps"))
def _one_unit_rows(white, w, proj, own, alpha, n_valid, *, fun, steps):
    """``steps`` one-unit fixed-point updates of each row of ``w`` on its own, in the
    span of ``proj``: ``w <- (E[z g(w^T z)] - E[g'(w^T z)] w) proj``, normalised; row
    ``i``'s own sample ``own[i]`` (the data point it was seeded from) is left out of
    ``E[z g]``, where it would otherwise pin the row in place."""
    rows = jnp.arange(w.shape[0])
    count = n_valid.astype(white.dtype)

    def body(_, w):
        y = w @ white.T                                       # (s, n)
        g, gp = _contrast(fun, y, alpha, n_valid, axis=1)
        g = g.at[rows, own].set(0)
        w = ((g @ white) / count - gp[:, None] * w) @ proj
        return w / jnp.maximum(jnp.linalg.norm(w, axis=1, keepdims=True),
                               jnp.finfo(w.dtype).tiny)

    return jax.lax.fori_loop(0, steps, body, w)


@partial(jax.jit, static_argnames=("fun",))
def _row_contrast(white, w, alpha, n_valid, *, fun):
    """``(s,)``: ``E[G(w_i^T z)]`` over the ``n_valid`` true rows (padding adds ``G(0) = 0``)."""
    y = w @ white.T
    return _true_mean(_contrast_value(fun, y, alpha), 0.0, n_valid, axis=1)


def _distinct(w, order, limit, max_cos):
    """Greedy: rows of ``w`` in ``order`` whose ``|cos|`` with every row picked before is
    below ``max_cos``, at most ``limit``."""
    gram = np.abs(w @ w.T)
    pick = []
    for i in order:
        if not pick or gram[i, pick].max() < max_cos:
            pick.append(int(i))
            if len(pick) == limit:
                break
    return pick


def reseed_init(white: jax.Array, refine: Callable, *, fun: str = "logcosh", alpha=1.0,
                n_valid=None, key: jax.Array | None = None, n_seeds: int | None = None,
                steps: int = 40, max_rounds: int = 8, rtol: float = 1e-4, patience: int = 2,
                max_cos: float = 0.5, decorrelation: str = "eigh") -> ReseedResult:
    """A start for ICA at many components: rounds of data-point seeds, refined.

    Each round (``kept``: the rows carried over, none at first):

    1. seeds: the ``n_seeds`` whitened samples of largest norm in the orthogonal
       complement of ``kept``, projected on it and normalised (a sample far out in
       the tails lies near a super-Gaussian source's direction);
    2. each seed is iterated alone, ``steps`` one-unit fixed-point updates in the
       complement, its own sample left out;
    3. the most non-Gaussian of them (largest ``|E[G(y)] - E[G(nu)]|``), pairwise
       ``|cos| < max_cos``, fill the complement; what they do not fill is a random
       orthonormal completion; ``refine`` runs on all ``k`` rows;
    4. the ``(r + 1) k / 12`` most non-Gaussian rows of the refined unmixing are
       ``kept`` for round ``r + 1``.

    Rounds stop after ``patience`` rounds in a row that do not improve the best
    objective by ``rtol`` relative (at most ``max_rounds``); the round with the best
    objective is returned. (One round can be worse and the next reach the optimum:
    at ``n = 2000``, ``k = 150``, the objective went 50.49, 50.50, 49.90, the planted
    start's value.) At ``n = 10000``,
    ``p = 16384``, ``k = 500`` planted Laplace sources, where a Gaussian start ends at
    Amari distance 0.21, this reached 0.0106, the planted start's optimum, in 7 rounds
    (``benchmarks/results/bench_ica.md``); at ``k = 1000`` it did not.

    Args:
      white: ``(n, k)`` whitened data (float32), rows beyond ``n_valid`` zero
        (a row-sharded array is fine).
      refine: ``w0 -> result``, the ICA iteration from a ``(k, k)`` start (e.g.
        ``lambda w0: picard_o(white, w0)``); ``result.w`` is the ``(k, k)`` unmixing.
      fun: the contrast, ``'logcosh'``, ``'exp'`` or ``'cube'``.
      alpha: logcosh constant.
      n_valid: true row count (``None``: all rows).
      key: ``jax.random`` key (typed or raw ``uint32``) seeding the random completions
        (``None``: key 0).
      n_seeds: seeds per round (default ``3 k``, at most ``n_valid``).
      steps: one-unit updates per seed.
      max_rounds: most rounds.
      rtol: relative objective improvement that counts as progress.
      patience: rounds in a row without progress after which the rounds stop.
      max_cos: largest ``|cos|`` between two rows picked in one round.
      decorrelation: ``'eigh'`` or ``'newton-schulz'``, for the fixed-point change in
        the criteria (:func:`jaxfactor.picard.ica_criteria`).

    Returns:
      :class:`ReseedResult`.

    Examples:
      >>> import numpy as np, jax.numpy as jnp
      >>> from jaxfactor.ica import fastica
      >>> from jaxfactor.ica_init import reseed_init
      >>> z = np.random.default_rng(0).laplace(size=(2000, 4)).astype(np.float32)
      >>> z = (z - z.mean(0)) / z.std(0)
      >>> out = reseed_init(z, lambda w0: fastica(z, w_init=w0))
      >>> out.w_init.shape, bool(np.abs(np.asarray(out.result.w)).max(axis=1).min() > 0.95)
      ((4, 4), True)
    """
    white = jnp.asarray(white)
    dtype = white.dtype
    n_rows, k = white.shape
    n = n_rows if n_valid is None else int(n_valid)
    count = jnp.asarray(n, jnp.int32)
    alpha_j = jnp.asarray(alpha, dtype)
    n_seeds = min(3 * k if n_seeds is None else int(n_seeds), n)
    key = jax.random.key(0) if key is None else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):   # a raw uint32 key is used as it is
        key = jax.random.key_data(key)
    rng = np.random.default_rng(np.asarray(key).ravel())
    gauss = gaussian_contrast_mean(fun, float(alpha))
    sign = -1.0 if fun == "cube" else 1.0          # 'cube' maximises E[G], the others minimise

    def nongaussianity(w):
        return np.abs(np.asarray(_row_contrast(white, jnp.asarray(w, dtype), alpha_j, count,
                                               fun=fun), np.float64) - gauss)

    kept = np.zeros((0, k), np.float64)
    best, objectives, n_refine, stale = None, [], 0, 0
    for rnd in range(max_rounds):
        proj = np.eye(k) - kept.T @ kept
        proj_j = jnp.asarray(proj, dtype)
        norms = np.array(jnp.linalg.norm(white @ proj_j, axis=1))
        norms[n:] = -1.0
        idx = np.argsort(-norms, kind="stable")[:n_seeds]
        seeds = np.asarray(white[idx], np.float64) @ proj
        seeds /= np.linalg.norm(seeds, axis=1, keepdims=True)
        w = np.concatenate([np.asarray(_one_unit_rows(
            white, jnp.asarray(seeds[i:i + k], dtype), proj_j, jnp.asarray(idx[i:i + k]),
            alpha_j, count, fun=fun, steps=steps), np.float64) for i in range(0, n_seeds, k)])
        free = k - len(kept)
        pick = _distinct(w, np.argsort(-nongaussianity(w), kind="stable"), free, max_cos)
        q = np.linalg.qr(w[pick].T)[0].T                     # orthonormal rows, their span
        u, _, vt = np.linalg.svd(w[pick] @ q.T)
        new = (u @ vt) @ q                                   # the picked rows, orthogonalised
        rest = free - len(new)
        fill = (np.linalg.qr((proj - q.T @ q) @ rng.standard_normal((k, rest)))[0].T
                if rest else np.zeros((0, k)))
        w0 = np.concatenate([kept, new, fill])
        result = refine(jnp.asarray(w0, dtype))
        n_refine += int(result.n_iter)
        criteria = ica_criteria(white, result.w, fun=fun, alpha=alpha, n_valid=count,
                                decorrelation=decorrelation)
        objective = float(criteria.objective)
        objectives.append(objective)
        improved = best is None or sign * objective < sign * best[3] - rtol * abs(best[3])
        if best is None or sign * objective < sign * best[3]:
            best = (w0, result, criteria, objective)
        stale = 0 if improved else stale + 1
        if stale >= patience:
            break
        wr = np.asarray(result.w, np.float64)
        keep = min((rnd + 1) * k // 12, k - 1)
        kept = wr[np.argsort(-nongaussianity(wr), kind="stable")[:keep]]
        if len(kept):                                        # orthonormal to float64 rounding
            u, _, vt = np.linalg.svd(kept, full_matrices=False)
            kept = u @ vt
    return ReseedResult(best[0].astype(np.dtype(dtype)), best[1], best[2],
                        np.asarray(objectives), n_refine)
