"""Lift feature-space components to latent edit directions by least squares.

GANSpace's recipe (Härkönen et al. 2020, used for BigGAN there and for
FastGAN in Palaev et al. 2023): with ``L`` the ``(N, d)`` latents that produced
the features and ``C`` the ``(N, k)`` component scores of those features,
standardise the scores to unit variance, ``S = (C - 1 c^T) D^{-1}`` with ``D =
diag(std(C))``, and fit

    L ~ 1 m^T + S B        min_B ||L_c - S B||_F^2 / (N - 1) + ridge ||B||_F^2

Row ``i`` of ``B`` is direction ``i``: the latent step that accompanies a
one-standard-deviation move of component ``i`` (so ``alpha = 3`` in
"standard-deviation units" is ``z + 3 B_i``).

Everything is accumulated over row blocks with the ``init / update / merge /
finalize`` quartet of :mod:`jaxfactor.accumulate` (means and centred cross
products merged by Chan's rule), so latents and scores never have to be held
for all rows at once.
"""
from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from .accumulate import Accumulator
from .streaming import run_pass

__all__ = ["LiftState", "LiftResult", "lift_accumulator", "lift_directions", "lift"]


class LiftState(NamedTuple):
    """Running sums of :func:`lift_accumulator`.

    Attributes:
      count: ``()`` int32 rows seen.
      score_mean: ``(k,)``; latent_mean: ``(d,)`` running means.
      scc: ``(k, k)`` centred score Gram ``sum (c - c_bar)(c - c_bar)^T``.
      scl: ``(k, d)`` centred cross products ``sum (c - c_bar)(l - l_bar)^T``.
      sll: ``(d, d)`` centred latent Gram.
    """

    count: jax.Array
    score_mean: jax.Array
    latent_mean: jax.Array
    scc: jax.Array
    scl: jax.Array
    sll: jax.Array


class LiftResult(NamedTuple):
    """Latent directions lifted from component scores.

    Attributes:
      directions: ``(k, d)`` ``B``: row ``i`` is the latent step per one
        standard deviation of component ``i``'s score.
      norms: ``(k,)`` ``||B_i||``, the latent length of a one-std step.
      score_std: ``(k,)`` standard deviation (``ddof=1``) of each component's
        scores -- the edit scale in feature space.
      score_mean: ``(k,)``; latent_mean: ``(d,)`` (the intercept ``m``).
      r2: ``(k,)`` R^2 per direction: the fraction of component ``i``'s score
        variance that a linear function of the latents explains
        (``r2_i = s_i^T Sll^+ s_i / Scc_ii`` with ``s_i`` the centred
        score-latent cross products). 1 means walking the latent can move
        the component fully; near 0 means the component is not reachable
        linearly from this latent space.
      variance_share: ``(k,)`` the fraction of the total latent variance
        ``tr cov(L)`` carried by direction ``i``'s term of the fit,
        ``||B_i||^2 / tr cov(L)`` (scores have unit variance); these sum to
        ``r2_total`` when the scores are uncorrelated (PCA, ICA).
      latent_r2: ``(d,)`` R^2 of the fit per latent coordinate.
      r2_total: ``()`` ``1 - ||L_c - S B||^2 / ||L_c||^2``.
      n_samples: ``()`` rows used.
    """

    directions: jax.Array
    norms: jax.Array
    score_std: jax.Array
    score_mean: jax.Array
    latent_mean: jax.Array
    r2: jax.Array
    variance_share: jax.Array
    latent_r2: jax.Array
    r2_total: jax.Array
    n_samples: jax.Array


def _init(n_components: int, latent_dim: int, dtype) -> LiftState:
    k, d = n_components, latent_dim
    z = partial(jnp.zeros, dtype=dtype)
    return LiftState(jnp.zeros((), jnp.int32), z((k,)), z((d,)), z((k, k)), z((k, d)), z((d, d)))


def _merge(a: LiftState, b: LiftState) -> LiftState:
    dtype = a.score_mean.dtype
    na, nb = a.count.astype(dtype), b.count.astype(dtype)
    total = jnp.maximum(na + nb, 1)
    dc = b.score_mean - a.score_mean
    dl = b.latent_mean - a.latent_mean
    f = na * nb / total
    return LiftState(a.count + b.count,
                     a.score_mean + dc * (nb / total),
                     a.latent_mean + dl * (nb / total),
                     a.scc + b.scc + f * jnp.outer(dc, dc),
                     a.scl + b.scl + f * jnp.outer(dc, dl),
                     a.sll + b.sll + f * jnp.outer(dl, dl))


@jax.jit
def _update(state: LiftState, block) -> LiftState:
    scores, latents = block
    dtype = state.score_mean.dtype
    scores, latents = scores.astype(dtype), latents.astype(dtype)
    cm, lm = jnp.mean(scores, axis=0), jnp.mean(latents, axis=0)
    c, l = scores - cm, latents - lm
    local = LiftState(jnp.asarray(scores.shape[0], jnp.int32), cm, lm, c.T @ c, c.T @ l, l.T @ l)
    return _merge(state, local)


def _pinv_apply(gram, rhs, rcond):
    """``gram^+ rhs`` for a symmetric PSD ``gram`` by eigendecomposition,
    dropping eigenvalues below ``rcond * max``."""
    w, v = jnp.linalg.eigh(gram)
    keep = w > rcond * jnp.max(jnp.abs(w))
    inv = jnp.where(keep, 1.0 / jnp.where(keep, w, 1.0), 0.0)
    return v @ (inv[:, None] * (v.T @ rhs))


@jax.jit
def _finalize(state: LiftState, ridge, rcond) -> LiftResult:
    dtype = state.score_mean.dtype
    denom = jnp.maximum(state.count.astype(dtype) - 1, 1)
    var = jnp.diag(state.scc) / denom
    std = jnp.sqrt(jnp.maximum(var, 0))
    alive = std > 0
    inv_std = jnp.where(alive, 1.0 / jnp.where(alive, std, 1.0), 0.0)
    scc_s = state.scc * inv_std[:, None] * inv_std[None, :]   # Gram of unit-variance scores
    scl_s = state.scl * inv_std[:, None]
    k = scc_s.shape[0]
    gram = scc_s / denom + ridge * jnp.eye(k, dtype=dtype)
    b = _pinv_apply(gram, scl_s / denom, rcond)               # (k, d)
    sll_diag = jnp.diag(state.sll)
    fitted = jnp.sum(b * (scc_s @ b), axis=0)                  # diag(B^T Scc_s B)
    sse = jnp.maximum(sll_diag - 2 * jnp.sum(b * scl_s, axis=0) + fitted, 0)
    latent_r2 = jnp.where(sll_diag > 0, 1 - sse / jnp.where(sll_diag > 0, sll_diag, 1), 0)
    total = jnp.sum(sll_diag)
    r2_total = jnp.where(total > 0, 1 - jnp.sum(sse) / jnp.where(total > 0, total, 1), 0)
    # Reverse regression of each unit-variance score on the latents.
    coef = _pinv_apply(state.sll, scl_s.T, rcond)             # (d, k)
    explained = jnp.sum(scl_s.T * coef, axis=0)
    r2 = jnp.clip(jnp.where(alive, explained / denom, 0), 0, 1)
    norms = jnp.linalg.norm(b, axis=1)
    share = norms ** 2 / jnp.where(total > 0, total / denom, 1)
    return LiftResult(b, norms, std, state.score_mean, state.latent_mean, r2, share, latent_r2,
                      r2_total, state.count)


def lift_accumulator(n_components: int, latent_dim: int, *, ridge: float = 0.0,
                     rcond: float | None = None, dtype=jnp.float32) -> Accumulator:
    """Blockwise least-squares lift of scores to latents.

    ``init()`` takes no argument; ``update(state, (scores, latents))`` folds a
    block of ``(b, k)`` scores and the ``(b, d)`` latents of the same rows
    (one cached jitted function); ``merge`` combines two states by Chan's
    rule (shards, devices); ``finalize`` solves the ridge normal equations of
    the module docstring by a symmetric eigendecomposition (rank-deficient
    scores give the minimum-norm solution, as ``numpy.linalg.lstsq``).

    Args:
      n_components: ``k``; latent_dim: ``d``.
      ridge: penalty on ``||B||^2`` relative to unit score variance
        (``(S^T S / (N - 1) + ridge I) B = S^T L_c / (N - 1)``).
      rcond: relative eigenvalue cutoff (default ``k * eps(dtype)``).
      dtype: accumulation dtype.

    Returns:
      An :class:`~jaxfactor.accumulate.Accumulator` whose ``finalize``
      returns :class:`LiftResult`.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.lifting import lift_accumulator
      >>> rng = np.random.default_rng(0)
      >>> latents = rng.normal(size=(50, 4)).astype(np.float32)
      >>> scores = latents @ rng.normal(size=(4, 2)).astype(np.float32)
      >>> acc = lift_accumulator(2, 4)
      >>> state = acc.update(acc.init(), (scores[:25], latents[:25]))
      >>> state = acc.update(state, (scores[25:], latents[25:]))
      >>> res = acc.finalize(state)
      >>> res.directions.shape, int(res.n_samples), bool(np.all(res.r2 > 0.999))
      ((2, 4), 50, True)
    """
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    rcond = float(n_components * jnp.finfo(dtype).eps) if rcond is None else float(rcond)
    return Accumulator(partial(_init, int(n_components), int(latent_dim), dtype), _update,
                       jax.jit(_merge),
                       lambda s: _finalize(s, jnp.asarray(ridge, dtype), jnp.asarray(rcond, dtype)))


def lift_directions(latents, scores, *, ridge: float = 0.0, rcond: float | None = None,
                    block_rows: int = 8192) -> LiftResult:
    """Least-squares latent directions from in-memory latents and scores.

    Args:
      latents: ``(N, d)`` float array (numpy, JAX or torch); scores: ``(N, k)``.
      ridge, rcond: see :func:`lift_accumulator`.
      block_rows: rows folded per update.

    Returns:
      :class:`LiftResult` of ``jax.Array``.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.lifting import lift_directions
      >>> rng = np.random.default_rng(0)
      >>> latents = rng.normal(size=(50, 4)).astype(np.float32)
      >>> res = lift_directions(latents, latents @ rng.normal(size=(4, 2)).astype(np.float32))
      >>> res.directions.shape, bool(np.all(res.r2 > 0.999))
      ((2, 4), True)
    """
    lat = V.check_matrix(latents, "latents", min_samples=2)
    sc = V.check_matrix(scores, "scores", min_samples=2)
    if lat.shape[0] != sc.shape[0]:
        raise ValueError(f"latents has {lat.shape[0]} rows but scores has {sc.shape[0]}")
    dtype = V.working_dtype(jnp.result_type(lat.dtype, sc.dtype))
    acc = lift_accumulator(sc.shape[1], lat.shape[1], ridge=ridge, rcond=rcond, dtype=dtype)
    state = acc.init()
    for lo in range(0, lat.shape[0], block_rows):
        state = acc.update(state, (sc[lo:lo + block_rows], lat[lo:lo + block_rows]))
    return acc.finalize(state)


def _pick_latents(lat: Any, space: str | None):
    if isinstance(lat, dict):
        if space is None:
            space = "w" if "w" in lat else "z"
        if space not in lat:
            raise ValueError(f"the source has latents {sorted(lat)}, not {space!r}")
        return lat[space]
    if space not in (None, "z"):
        raise ValueError(f"the source gives one latent array; space={space!r} is not available")
    return lat


class _ScoresAndLatents:
    """The rows a lift regresses, as a row source: block ``i`` is ``[scores |
    latents]`` of the source's rows (``(b, k + d)``), so :func:`lift` runs on
    :func:`jaxfactor.streaming.run_pass`. The first block is read once, to learn
    ``k``, ``d`` and the dtype, and served from memory to the pass."""

    def __init__(self, source, transform, space, first_rows):
        self._source, self._transform, self._space = source, transform, space
        self.n_samples = int(source.n_samples)
        self._first = (0, first_rows, self._pair(0, first_rows))
        scores, lat = self._first[2]
        self.n_components = int(scores.shape[1])
        self.n_features = int(scores.shape[1] + lat.shape[1])
        self.dtype = V.working_dtype(scores.dtype)

    def _pair(self, lo, hi):
        if hasattr(self._source, "read_with_latents"):
            rows, lat = self._source.read_with_latents(lo, hi)
        else:
            rows, lat = self._source.read(lo, hi), self._source.latents(lo, hi)
        scores = jnp.asarray(self._transform(rows))
        lat = jnp.asarray(_pick_latents(lat, self._space))
        if scores.ndim != 2 or lat.ndim != 2 or scores.shape[0] != hi - lo or lat.shape[0] != hi - lo:
            raise ValueError(f"rows {lo}:{hi}: scores {scores.shape} and latents {lat.shape} "
                             f"must both be 2-D with {hi - lo} rows")
        return scores, lat

    def read(self, lo, hi):
        if self._first is not None and self._first[:2] == (lo, hi):
            scores, lat = self._first[2]
            self._first = None
        else:
            scores, lat = self._pair(lo, hi)
        dtype = self.dtype
        return jnp.concatenate([scores.astype(dtype), lat.astype(dtype)], axis=1)


def lift(source, estimator, *, space: str | None = None, ridge: float = 0.0,
         rcond: float | None = None, block_rows: int = 1024) -> LiftResult:
    """Stream a source's rows through ``estimator.transform`` and lift the
    scores to its latents (GANSpace's regression).

    Args:
      source: a row source that also has ``latents(start, stop)`` returning
        an ``(n, d)`` array or a dict of them (``{'z': ..., 'w': ...}``), e.g.
        ``bridges.activations.ActivationStream``; ``read_with_latents`` is
        used when present.
      estimator: a fitted estimator with ``transform`` (``PCA``, ICA, ...),
        or a callable ``rows -> (n, k) scores``.
      space: which latent to regress on (default ``'w'`` when the source has
        it, else ``'z'``).
      ridge, rcond: see :func:`lift_accumulator`.
      block_rows: rows per block.

    Returns:
      :class:`LiftResult` of numpy arrays.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.lifting import lift
      >>> from jaxfactor.sources import ArraySource
      >>> rng = np.random.default_rng(0)
      >>> z = rng.normal(size=(50, 4)).astype(np.float32)
      >>> src = ArraySource(z @ rng.normal(size=(4, 6)).astype(np.float32))   # features of z
      >>> src.latents = lambda start, stop: z[start:stop]
      >>> res = lift(src, lambda rows: rows[:, :2], block_rows=20)              # scores: 2 features
      >>> res.directions.shape, bool(np.all(res.r2 > 0.999))
      ((2, 4), True)
    """
    if not hasattr(source, "latents"):
        raise TypeError(f"{type(source).__name__} has no latents(start, stop); lifting needs the "
                        f"latents of each row (use lift_directions for in-memory arrays)")
    transform = estimator if callable(estimator) and not hasattr(estimator, "transform") \
        else estimator.transform
    n = int(source.n_samples)
    if n < 2:
        raise ValueError(f"lifting needs at least 2 rows, got {n}")
    pairs = _ScoresAndLatents(source, transform, space, min(block_rows, n))
    k = pairs.n_components
    acc = lift_accumulator(k, pairs.n_features - k, ridge=ridge, rcond=rcond, dtype=pairs.dtype)
    split = Accumulator(acc.init, lambda state, block: acc.update(state, (block[:, :k], block[:, k:])),
                        acc.merge, acc.finalize)
    state = run_pass(pairs, {"lift": split}, {"lift": acc.init()}, block_rows=block_rows,
                     dtype=pairs.dtype)["lift"]
    return LiftResult(*(np.asarray(x) for x in acc.finalize(state)))
