"""Independent component analysis by FastICA: whitening and fixed-point kernels, and ``FastICA``.

FastICA (Hyvarinen 1999, "Fast and robust fixed-point algorithms for
independent component analysis"; Hyvarinen, Karhunen & Oja 2001, tables 8.3
and 8.4) runs in two stages:

1. **Whitening by PCA to k components.** With ``X_c = X - 1 mean^T`` and its
   top-``k`` SVD ``X_c ~ U diag(s) Vt``, the whitening matrix is
   ``K = diag(1/s) Vt`` (``(k, p)``, scikit-learn's ``whitening_``) and the
   whitened data ``Z = sqrt(n) X_c K^T = sqrt(n) U`` (``(n, k)``) have
   identity covariance (``Z^T Z / n = I``). For large ``p`` the SVD is the
   project's randomized SVD (:func:`jaxfactor.randomized.randomized_svd`), so a
   ``p x p`` eigendecomposition is never formed; small problems use the exact
   covariance ``eigh`` or thin SVD. This stage is the expensive one
   (``O(n p k)``); everything after it works on the small ``(n, k)`` matrix.
2. **The fixed-point iteration** on ``Z`` for an orthogonal ``W`` (``(k, k)``),
   with the contrast ``G`` and its derivatives ``g = G'``, ``g'``:

   * parallel: ``W <- E[g(W z) z^T] - diag(E[g'(W z)]) W`` followed by the
     symmetric decorrelation ``W <- (W W^T)^{-1/2} W`` (an ``eigh`` of the
     ``k x k`` matrix ``W W^T``). One iteration is two ``k x k x n`` products
     (``Y = Z W^T`` and ``g(Y)^T Z``) plus ``O(k^3)``.
   * deflation: one row at a time, ``w <- E[z g(w^T z)] - E[g'(w^T z)] w``,
     Gram-Schmidt against the rows already found, normalised.

   Contrasts: ``logcosh`` (``g(u) = tanh(alpha u)``, ``1 <= alpha <= 2``),
   ``exp`` (``g(u) = u exp(-u^2/2)``) and ``cube`` (``g(u) = u^3``).
   Convergence: ``max_i | |<w_i^new, w_i^old>| - 1 | < tol`` (scikit-learn's
   criterion). The loops are ``lax.while_loop`` (inside a ``fori_loop`` over
   components for deflation) in one jitted program.

Scale: with a ``jax.sharding.Mesh`` the rows of ``X`` (randomized
whitening) and of ``Z`` (the iteration) are split over its devices; rows
padded to a multiple of the mesh size whiten to exact zeros and the means
divide by the true count (``n_valid``). A row source (a ``.npy`` file or
directory of shards) is whitened by the streaming randomized SVD plus one
projection pass (:func:`whiten_source`), so ``X`` is never held; the
``(n, k)`` ``Z`` is. The ``solver='auto'``-style choices (whitening solver,
range finder, decorrelation) live in :mod:`jaxfactor._policy`.

Kernels: :func:`whiten`, :func:`whiten_source`, :func:`fastica_parallel`,
:func:`fastica_deflation`, :func:`fastica` (dispatch),
:func:`symmetric_decorrelation`.
Estimator: :class:`FastICA`, a drop-in for ``sklearn.decomposition.FastICA``.
"""
from __future__ import annotations

import os
import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _params as P
from . import _validation as V
from ._base import Factorizer
from ._linalg import symmetric_inverse_sqrt
from ._policy import (DECORRELATIONS, WHITEN_SOLVERS, Plan, choose_decorrelation,
                      choose_whiten_range, choose_whiten_solver, platform_of)
from ._status import iteration_status, report
from .accumulate import centred_matmul, stack_rows
from .pca import pca_full
from .randomized import randomized_svd, range_params, svd_passes, svd_run
from .sharding import shard_block, shard_rows
from .sources import ArraySource, RowSource
from .streaming import Pass, as_checkpoint, run_passes

__all__ = [
    "WhiteningResult",
    "ICAResult",
    "CONTRASTS",
    "WHITEN_SOLVERS",
    "DECORRELATIONS",
    "choose_whiten_solver",
    "whiten",
    "whiten_source",
    "symmetric_decorrelation",
    "fastica_parallel",
    "fastica_deflation",
    "fastica",
    "FastICA",
]

CONTRASTS = ("logcosh", "exp", "cube")
ALGORITHMS = ("parallel", "deflation")
WHITEN_OPTIONS = ("unit-variance", "arbitrary-variance", False)



class WhiteningResult(NamedTuple):
    """PCA whitening of ``X`` to ``k`` components.

    Attributes:
      white: ``(n, k)`` whitened data ``Z = sqrt(n) (X - 1 mean^T) K^T``,
        zero mean, ``Z^T Z / n = I``.
      components: ``(k, p)`` principal axes ``Vt`` (orthonormal rows); the
        sign of each row makes its first entry non-negative (scikit-learn's
        whitening convention, so that a user ``w_init`` means the same in
        both libraries).
      singular_values: ``(k,)`` singular values ``s`` of the centred data,
        descending.
      mean: ``(p,)`` column means.
    """

    white: jax.Array
    components: jax.Array
    singular_values: jax.Array
    mean: jax.Array

    @property
    def whitening(self) -> jax.Array:
        """``(k, p)`` whitening matrix ``K = diag(1/s) Vt`` (scikit-learn's ``whitening_``)."""
        return self.components / self.singular_values[:, None]


class ICAResult(NamedTuple):
    """Result of the FastICA fixed-point iteration on whitened data.

    Attributes:
      w: ``(k, k)`` unmixing matrix of the whitened data (orthogonal rows);
        the sources are ``Z W^T``.
      n_iter: ``()`` int32, iterations run (deflation: the most any one
        component needed).
      converged: ``()`` bool, whether every component met ``tol``.
      change: ``()`` final change ``max_i | |<w_i^new, w_i^old>| - 1 |``.
      status: ``()`` int32, a :mod:`jaxfactor._status` code (converged,
        stopped at ``max_iter``, not finite).
    """

    w: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    change: jax.Array
    status: jax.Array


# ------------------------------------------------------------------ whitening


def _first_entry_signs(vt):
    signs = jnp.sign(vt[:, 0])
    return jnp.where(signs == 0, 1, signs).astype(vt.dtype)


@jax.jit
def _white_from_axes(x, mean, vt, s):
    """Flip ``vt`` to the first-entry convention and project: ``Z = sqrt(n) X_c Vt^T / s``."""
    vt, scale = _signed_axes(vt, s, x.shape[0])
    return _white_block(x, mean, vt, scale), vt


def _signed_axes(vt, s, n):
    """``vt`` flipped to the first-entry convention and the whitening scale ``sqrt(n) / s``."""
    scale = jnp.sqrt(jnp.asarray(n, s.dtype)) / jnp.maximum(s, jnp.finfo(s.dtype).tiny)
    return vt * _first_entry_signs(vt)[:, None], scale


@jax.jit
def _white_block(x, mean, vt, scale):
    """``(X_b - 1 mean^T) Vt^T diag(scale)``, the mean folded into the product."""
    return centred_matmul(x, mean, vt.T) * scale[None, :]


@partial(jax.jit, static_argnames=("n_components",))
def _whiten_svd(x, n_components):
    n = x.shape[0]
    mean = jnp.mean(x, axis=0)
    u, s, vt = jnp.linalg.svd(x - mean, full_matrices=False)
    u, s, vt = u[:, :n_components], s[:n_components], vt[:n_components]
    signs = _first_entry_signs(vt)
    white = u * (signs * jnp.sqrt(jnp.asarray(n, x.dtype)))[None, :]
    return WhiteningResult(white, vt * signs[:, None], s, mean)


@jax.jit
def _white_from_u(u, vt, s, mean, n_valid):
    """``Z = sqrt(n) U`` with signs flipped to the first-entry convention; rows
    at or beyond ``n_valid`` (mesh padding) set exactly to zero."""
    signs = _first_entry_signs(vt)
    rows = jnp.arange(u.shape[0]) < n_valid
    scale = signs * jnp.sqrt(n_valid.astype(u.dtype))
    white = jnp.where(rows[:, None], u * scale[None, :], 0)
    return WhiteningResult(white, vt * signs[:, None], s, mean)


def whiten(x: jax.Array, n_components: int, *, solver: str = "auto",
           key: jax.Array | None = None, n_valid: int | None = None,
           **randomized_kwargs) -> WhiteningResult:
    """PCA whitening of ``x`` to ``n_components`` dimensions.

    Computes the top-``k`` SVD of the centred data ``X_c = U diag(s) Vt`` and
    returns ``Z = sqrt(n) U`` (``= sqrt(n) X_c Vt^T diag(1/s)``), the data in
    the principal subspace scaled to identity covariance (Hyvarinen et al.
    2001, eq. 6.33). Solvers:

    * ``'eigh'``: exact, :func:`jaxfactor.pca.pca_full` (covariance ``eigh``
      when ``n >= p``, thin SVD otherwise), then one projection pass;
    * ``'svd'``: exact thin SVD of the centred data;
    * ``'randomized'``: :func:`jaxfactor.randomized.randomized_svd` with the
      mean folded in (``X_c`` is never formed), ``O(n p k)``; ``x`` may be
      row-sharded over a mesh (then padded with mean rows, see
      :func:`jaxfactor.sharding.shard_rows`, and ``n_valid`` the true count);
    * ``'auto'``: :func:`jaxfactor._policy.choose_whiten_solver`: exact for
      ``p <= 1024`` or ``k >= 0.4 min(n, p)`` (``'svd'`` for small matrices,
      ``'eigh'`` otherwise), randomized otherwise -- so ``p = 16384`` never
      meets a ``p x p`` eigendecomposition unless ``'eigh'`` is asked for.

    Args:
      x: ``(n, p)`` float32/float64 array, ``n >= 2``.
      n_components: ``k <= min(n - 1, p)``.
      solver: one of :data:`WHITEN_SOLVERS`.
      key: ``jax.random`` key for the randomized solver.
      n_valid: true row count when ``x`` carries mean-padding rows at the end
        (randomized solver only); their whitened rows are exactly zero.
      **randomized_kwargs: ``method`` (``'auto'`` resolved by
        :func:`jaxfactor._policy.choose_whiten_range`), ``n_oversamples``,
        ``n_iter``, ``block_size`` for
        :func:`~jaxfactor.randomized.randomized_svd`.

    Returns:
      :class:`WhiteningResult` (``white`` has ``x``'s row count). Assumes
      ``x`` is finite and the centred data have rank ``>= k`` (callers check
      ``singular_values``).
    """
    n, p = x.shape
    k = int(n_components)
    n_true = n if n_valid is None else int(n_valid)
    solver = choose_whiten_solver(solver, n_true, p, k)
    if solver != "randomized" and n_true != n:
        raise ValueError("n_valid (padded rows) is supported by the randomized solver only")
    if solver == "svd":
        return _whiten_svd(x, k)
    if solver == "eigh":
        res = pca_full(ArraySource(x), k, dtype=x.dtype)
        s = jnp.sqrt(res.explained_variance * max(n - 1, 1))
        white, vt = _white_from_axes(x, res.mean, res.components, s)
        return WhiteningResult(white, vt, s, res.mean)
    if solver == "randomized":
        key = jax.random.key(0) if key is None else key
        kw = dict(randomized_kwargs)
        kw["method"], kw["n_iter"] = choose_whiten_range(kw.get("method", "auto"), kw.get("n_iter"),
                                                         n_true, p, k)
        svd = randomized_svd(x, k, key=key, center=True, compute_u=True, **kw)
        return _white_from_u(svd.u, svd.vt, svd.s, svd.mean, jnp.asarray(n_true, jnp.int32))
    raise ValueError(f"solver must be one of {WHITEN_SOLVERS}, got {solver!r}")


def whiten_source(source: RowSource, n_components: int, *, key: jax.Array,
                  method: str = "auto", n_oversamples: int | None = None,
                  n_iter: int | None = None, block_size: int | None = None,
                  block_rows: int = 4096, dtype=jnp.float32, mesh=None,
                  checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 16,
                  progress=None) -> WhiteningResult:
    """PCA whitening of data read as row blocks from a replayable source.

    The top-``k`` right singular vectors and singular values of the centred
    data come from the passes of :func:`jaxfactor.randomized.randomized_svd_source`
    (:func:`jaxfactor.randomized.svd_passes`; ``X`` is never held), then one
    more pass projects each block: ``Z_b = sqrt(n) (X_b - 1 mean^T) Vt^T
    diag(1/s)`` (an :func:`~jaxfactor.accumulate.stack_rows` accumulator). The
    ``(n, k)`` whitened matrix is kept (``n k`` floats: 40 MB for ``n = 10^4``,
    ``k = 1000``); peak memory otherwise stays at a few blocks of
    ``block_rows x p`` plus the ``(p, basis)`` range-finder basis. As the
    Rayleigh-Ritz vectors make ``X_c Vt^T diag(1/s)`` orthonormal, ``Z`` is
    white up to rounding. All passes run through
    :func:`jaxfactor.streaming.run_passes`, so they shard over ``mesh`` and
    resume from ``checkpoint``.

    Args:
      source: a :class:`~jaxfactor.sources.RowSource` with ``n`` rows of width ``p``.
      n_components: ``k <= min(n - 1, p)``.
      key: ``jax.random`` key.
      method, n_oversamples, n_iter, block_size: range finder (``method='auto'``:
        :func:`jaxfactor._policy.choose_whiten_range`).
      block_rows: rows per block.
      dtype: working dtype (float32 or float64).
      mesh: a ``jax.sharding.Mesh`` (:func:`jaxfactor.sharding.row_mesh`) to
        split each block by rows over its devices, or ``None``.
      checkpoint: path of a ``.npz`` checkpoint file, or ``None``. The state
        is saved every ``checkpoint_every`` blocks and at each pass boundary;
        a call with the same arguments after an interruption resumes from the
        file and returns the same result as an uninterrupted call; the file
        is removed at the end.
      checkpoint_every: blocks between checkpoints.
      progress: optional ``callback(stage, done_rows, total_rows)`` (stages
        ``'sketch'``, ``'power'``, ``'project'``, ``'whiten'``).

    Returns:
      :class:`WhiteningResult` (``white`` stays on the device, as :func:`whiten`'s).

    Raises:
      ValueError: ``checkpoint`` holds a file of another run.
    """
    n, p = source.n_samples, source.n_features
    k = int(n_components)
    method, n_iter = choose_whiten_range(method, n_iter, n, p, k)
    params = range_params(k, n, p, method=method, n_oversamples=n_oversamples, n_iter=n_iter,
                          block_size=block_size)
    common = dict(key=key, center=True, block_rows=block_rows, dtype=dtype)
    stack = stack_rows(_white_block)

    def axes(ctx):
        return _signed_axes(ctx["svd.vt"], ctx["svd.s"], n)

    def white_start(ctx):
        vt, scale = axes(ctx)
        return {"white": stack}, {"white": stack.init((ctx["svd.mean"], vt, scale), n, k, dtype)}

    def white_finish(ctx, states):
        return {**ctx, "white": stack.finalize(states["white"])}

    passes = svd_passes(source, k, params, mesh=mesh, **common) + [
        Pass("whiten", white_start, white_finish)]
    ckpt = as_checkpoint(checkpoint, {**svd_run(source, k, params, **common), "whiten": True},
                         checkpoint_every)
    ctx = run_passes(source, passes, block_rows=block_rows, dtype=dtype, mesh=mesh,
                     progress=progress, checkpoint=ckpt)
    vt, _ = axes(ctx)
    return WhiteningResult(ctx["white"], vt, ctx["svd.s"], ctx["svd.mean"])


# ------------------------------------------------------------------ contrasts


def _contrast(fun: str, y: jax.Array, alpha, n_valid, axis: int = 0) -> tuple[jax.Array, jax.Array]:
    """``(g(y), mean over the n_valid true samples of g'(y))`` for samples along ``axis``.

    Rows beyond the first ``n_valid`` are padding (zero whitened rows, see
    :func:`fastica`): ``g(0) = 0`` for every contrast, so they add nothing to
    ``E[g(y) z^T]``, but ``g'(0)`` is not zero (``alpha`` for logcosh, ``1``
    for exp), so their share is taken off the sum of ``g'`` before dividing
    by the true count.
    """
    n_pad = y.shape[axis] - n_valid
    if fun == "logcosh":
        gy = jnp.tanh(alpha * y)
        gp, gp0 = alpha * (1 - gy * gy), alpha
    elif fun == "exp":
        e = jnp.exp(-0.5 * y * y)
        gy, gp, gp0 = y * e, (1 - y * y) * e, 1.0
    elif fun == "cube":
        gy, gp, gp0 = y * y * y, 3 * y * y, 0.0
    else:
        raise ValueError(f"fun must be one of {CONTRASTS}, got {fun!r}")
    mean_gp = (jnp.sum(gp, axis=axis) - n_pad.astype(y.dtype) * gp0) / n_valid.astype(y.dtype)
    return gy, mean_gp


def symmetric_decorrelation(w: jax.Array, method: str = "eigh") -> jax.Array:
    """Symmetric decorrelation ``(W W^T)^{-1/2} W``: the orthogonal matrix
    nearest to ``w`` (its polar factor).

    Args:
      w: ``(k, k)`` float array of full rank.
      method: ``'eigh'`` (an eigendecomposition of ``W W^T``; fastest on CPU)
        or ``'newton-schulz'`` (the matrix-product-only iteration
        ``X <- 1.5 X - 0.5 X X^T X`` from ``X_0 = W / sqrt(||W W^T||_1)``,
        until ``max |X X^T - I| <= 50 eps`` or 40 steps; what accelerators
        want). See :func:`jaxfactor._policy.choose_decorrelation`.

    Returns:
      ``(k, k)`` array with orthonormal rows.
    """
    if method == "eigh":
        return symmetric_inverse_sqrt(w @ w.T) @ w
    if method != "newton-schulz":
        raise ValueError(f"method must be 'eigh' or 'newton-schulz', got {method!r}")
    return _newton_schulz(w)


def _newton_schulz(w, max_steps=40):
    """Polar factor by Newton-Schulz; converges for singular values of the scaled
    start in ``(0, sqrt(3))`` (here ``(0, 1]``), quadratically near 1."""
    k = w.shape[0]
    eye = jnp.eye(k, dtype=w.dtype)
    gram = w @ w.T
    x = w / jnp.sqrt(jnp.max(jnp.sum(jnp.abs(gram), axis=0)))   # ||W W^T||_1 >= sigma_max^2
    limit = 50 * jnp.finfo(w.dtype).eps

    def cond(state):
        _, gram_x, i = state
        return (i < max_steps) & (jnp.max(jnp.abs(gram_x - eye)) > limit)

    def body(state):
        x, gram_x, i = state
        x = 1.5 * x - 0.5 * gram_x @ x
        return x, x @ x.T, i + 1

    x, _, _ = jax.lax.while_loop(cond, body, (x, x @ x.T, jnp.zeros((), jnp.int32)))
    return x




# ------------------------------------------------------------------ iterations


def _as_count(n_valid, n):
    return jnp.asarray(n if n_valid is None else n_valid, jnp.int32)


@partial(jax.jit, static_argnames=("fun", "decorrelation"))
def fastica_parallel(white: jax.Array, w_init: jax.Array, *, fun: str = "logcosh",
                     alpha=1.0, tol=1e-4, max_iter: int = 200, n_valid=None,
                     decorrelation: str = "eigh") -> ICAResult:
    """Parallel (symmetric) FastICA on whitened data (Hyvarinen 1999, eq. 8.4).

    Iterates ``W <- decorrelate(E[g(W z) z^T] - diag(E[g'(W z)]) W)`` from
    ``decorrelate(w_init)`` until ``max_i | |<w_i^new, w_i>| - 1 | < tol`` or
    ``max_iter`` iterations, in a ``lax.while_loop``. One iteration is two
    ``(n, k) x (k, k)``-sized products (``Y = Z W^T`` and ``g(Y)^T Z``), the
    contrast, and the ``k x k`` decorrelation. With ``white`` row-sharded
    over a mesh, XLA splits both products by rows and sums ``g(Y)^T Z`` over
    the devices; ``W`` stays replicated.

    Args:
      white: ``(n, k)`` whitened data (zero mean, identity covariance); rows
        beyond ``n_valid`` must be zero (padding to a multiple of a mesh).
      w_init: ``(k, k)`` starting matrix (any full-rank matrix).
      fun: contrast, one of :data:`CONTRASTS` (static).
      alpha: logcosh constant in ``[1, 2]``.
      tol: convergence tolerance (traced).
      max_iter: iteration cap (traced: changing it does not recompile).
      n_valid: number of true rows (``None``: all ``n``); means divide by it.
      decorrelation: ``'eigh'`` or ``'newton-schulz'`` (static; see
        :func:`symmetric_decorrelation`).

    Returns:
      :class:`ICAResult`.
    """
    return _parallel(white, w_init, fun, alpha, tol, max_iter, _as_count(n_valid, white.shape[0]),
                     decorrelation)


def _parallel(white, w_init, fun, alpha, tol, max_iter, n_valid, decorrelation="eigh"):
    dtype = white.dtype
    count = n_valid.astype(dtype)
    w0 = symmetric_decorrelation(w_init.astype(dtype), decorrelation)
    alpha = jnp.asarray(alpha, dtype)
    tol = jnp.asarray(tol, dtype)

    def cond(state):
        _, it, change = state
        return (it < max_iter) & (change >= tol)

    # samples on the minor axis: both products contract the contiguous axis, which
    # XLA's CPU dots run faster (docs/ica_notes.md)
    white_t = jax.lax.optimization_barrier(white.T)      # (k, n), one copy

    def body(state):
        w, it, _ = state
        y_t = w @ white_t                                # (k, n) = (Z W^T)^T
        gy_t, gpy = _contrast(fun, y_t, alpha, n_valid, axis=1)
        w1 = gy_t @ white_t.T / count - gpy[:, None] * w
        w1 = symmetric_decorrelation(w1, decorrelation)
        change = jnp.max(jnp.abs(jnp.abs(jnp.sum(w1 * w, axis=1)) - 1))
        return w1, it + 1, change

    state = (w0, jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, dtype))
    w, it, change = jax.lax.while_loop(cond, body, state)
    return ICAResult(w, it, change < tol, change, iteration_status(change < tol, w))


@partial(jax.jit, static_argnames=("fun",))
def fastica_deflation(white: jax.Array, w_init: jax.Array, *, fun: str = "logcosh",
                      alpha=1.0, tol=1e-4, max_iter: int = 200, n_valid=None) -> ICAResult:
    """Deflation FastICA on whitened data (Hyvarinen 1999, eq. 8.3).

    For ``j = 0..k-1`` (a ``fori_loop``), starting from ``w_init[j]``:
    ``w <- E[z g(w^T z)] - E[g'(w^T z)] w``, Gram-Schmidt against the rows
    ``0..j-1`` already found, normalise; until ``| |<w_new, w>| - 1 | < tol``
    or ``max_iter`` (a ``while_loop``).

    Args:
      white: ``(n, k)`` whitened data (rows beyond ``n_valid`` zero).
      w_init: ``(k, k)`` starting rows.
      fun, alpha, tol, max_iter, n_valid: as for :func:`fastica_parallel`.

    Returns:
      :class:`ICAResult`: ``n_iter`` is the largest count of any component,
      ``change`` the largest final change.
    """
    return _deflation(white, w_init, fun, alpha, tol, max_iter, _as_count(n_valid, white.shape[0]))


def _deflation(white, w_init, fun, alpha, tol, max_iter, n_valid):
    k = white.shape[1]
    dtype = white.dtype
    count = n_valid.astype(dtype)
    alpha = jnp.asarray(alpha, dtype)
    tol = jnp.asarray(tol, dtype)
    w_init = w_init.astype(dtype)

    def one_component(j, carry):
        w_all, most_iter, worst = carry
        w = w_init[j] / jnp.linalg.norm(w_init[j])

        def cond(state):
            _, it, change = state
            return (it < max_iter) & (change >= tol)

        def body(state):
            w, it, _ = state
            y = white @ w                                 # (n,)
            gy, gpy = _contrast(fun, y, alpha, n_valid)
            w1 = (gy @ white) / count - gpy * w
            # Rows not yet found are zero, so projecting on all rows projects
            # on the first j; twice for numerical orthogonality.
            w1 = w1 - (w_all @ w1) @ w_all
            w1 = w1 - (w_all @ w1) @ w_all
            w1 = w1 / jnp.linalg.norm(w1)
            change = jnp.abs(jnp.abs(jnp.dot(w1, w)) - 1)
            return w1, it + 1, change

        state = (w, jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, dtype))
        w, it, change = jax.lax.while_loop(cond, body, state)
        return w_all.at[j].set(w), jnp.maximum(most_iter, it), jnp.maximum(worst, change)

    carry = (jnp.zeros((k, k), dtype), jnp.zeros((), jnp.int32), jnp.zeros((), dtype))
    w, it, change = jax.lax.fori_loop(0, k, one_component, carry)
    return ICAResult(w, it, change < tol, change, iteration_status(change < tol, w))


@partial(jax.jit, static_argnames=("algorithm", "fun", "decorrelation"))
def fastica(white: jax.Array, *, key: jax.Array | None = None, w_init: jax.Array | None = None,
            algorithm: str = "parallel", fun: str = "logcosh", alpha=1.0, tol=1e-4,
            max_iter: int = 200, n_valid=None, decorrelation: str = "eigh") -> ICAResult:
    """FastICA on whitened data: draws the starting matrix and runs the algorithm,
    in one compiled program.

    Args:
      white: ``(n, k)`` whitened data (e.g. :attr:`WhiteningResult.white`).
      key: ``jax.random`` key; ``w_init`` is then ``N(0, 1)`` of shape
        ``(k, k)`` (ignored when ``w_init`` is given; ``None`` means key 0).
      w_init: ``(k, k)`` starting matrix, or ``None``.
      algorithm: ``'parallel'`` or ``'deflation'`` (static).
      fun, alpha, tol, max_iter, n_valid, decorrelation: see
        :func:`fastica_parallel` (``decorrelation`` is used by ``'parallel'``).

    Returns:
      :class:`ICAResult`.
    """
    k = white.shape[1]
    n_valid = _as_count(n_valid, white.shape[0])
    if w_init is None:
        key = jax.random.key(0) if key is None else key
        w_init = jax.random.normal(key, (k, k), white.dtype)
    if algorithm == "parallel":
        return _parallel(white, w_init, fun, alpha, tol, max_iter, n_valid, decorrelation)
    if algorithm == "deflation":
        return _deflation(white, w_init, fun, alpha, tol, max_iter, n_valid)
    raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")


# ------------------------------------------------------------------ post-processing


def _finish_whitened(white, w, components, s, unit_variance):
    """Feature-space unmixing/mixing from ``W`` and the whitening (NumPy).

    ``components_ = W' K`` with ``K = diag(1/s) Vt`` and ``W'`` the rows of
    ``W`` divided by the source standard deviations when ``unit_variance``;
    ``mixing_ = Vt^T diag(s) W'^{-1}`` (the pseudo-inverse of ``components_``,
    exact because ``Vt`` has orthonormal rows and ``W'`` is invertible).
    Small ``(k, k)`` algebra and two ``(k, k) x (k, p)`` products, so it runs
    in NumPy (float64 for the inverse) instead of compiling a program per shape.

    Returns:
      ``(unmixing (k, p), mixing (p, k), source_variance (k,))``, the source
      variances (``ddof=0``) of ``X_c components_^T``.
    """
    white, w = np.asarray(white), np.asarray(w)
    components, s = np.asarray(components), np.asarray(s)
    dtype = components.dtype
    n = white.shape[0]
    src = white @ w.T                          # = sqrt(n) X_c (W K)^T
    std = np.sqrt(np.mean(np.square(src, dtype=np.float64), axis=0) / n)
    scale = 1 / std if unit_variance else np.ones_like(std)
    w_scaled = w.astype(np.float64) * scale[:, None]
    unmixing = (w_scaled / s[None, :]).astype(dtype) @ components
    mixing = components.T @ (s[:, None] * np.linalg.inv(w_scaled)).astype(dtype)
    return unmixing, mixing, (std * scale) ** 2


def _finish_unwhitened(x, w):
    """Unmixing ``W``, mixing ``W^{-1}`` and source variances for ``whiten=False``."""
    w = np.asarray(w)
    src = np.asarray(x) @ w.T
    return w, np.linalg.inv(w.astype(np.float64)).astype(w.dtype), np.var(src, axis=0, dtype=np.float64)


class _Ordered(NamedTuple):
    """Components in their reported order and signs (numpy)."""

    unmixing: np.ndarray     # (k, p) or (k, k)
    mixing: np.ndarray       # (p, k)
    directions: np.ndarray   # (k, p) unit-norm mixing columns
    explained: np.ndarray    # (k,)
    order: np.ndarray        # (k,) the permutation applied
    signs: np.ndarray        # (k,) the signs applied


def _order_and_sign(unmixing, mixing, source_variance) -> _Ordered:
    """Sort by explained variance ``||a_i||^2 var(s_i)`` (descending, stable)
    and flip so each normalised mixing column has a positive largest entry."""
    explained = np.sum(np.square(mixing, dtype=np.float64), axis=0) * source_variance
    order = np.argsort(-explained, kind="stable")
    mixing, unmixing, explained = mixing[:, order], unmixing[order], explained[order]
    norms = np.linalg.norm(mixing, axis=0)
    directions = (mixing / np.maximum(norms, np.finfo(mixing.dtype).tiny)).T
    top = directions[np.arange(directions.shape[0]), np.argmax(np.abs(directions), axis=1)]
    signs = np.where(top < 0, -1, 1).astype(mixing.dtype)
    return _Ordered(unmixing * signs[:, None], mixing * signs[None, :],
                    directions * signs[:, None], explained, order, signs)


def _rank_floor(dtype, n, p, solver):
    eps = float(np.finfo(dtype).eps)
    if solver == "eigh":
        # eigh's eigenvalue errors ~ eps p lambda_max: a singular value is above
        # zero beyond sqrt(eps p) sigma_max (twice that for margin; docs/ica_notes.md)
        return float(np.sqrt(eps * min(n, p))) * 2
    return eps * max(n, p) * 10


# ------------------------------------------------------------------ estimator


class FastICA(Factorizer):
    """FastICA: a drop-in for ``sklearn.decomposition.FastICA`` that scales to
    wide data (``p = 16384``) and many components (``k`` up to thousands).

    Whitening uses the project's randomized SVD when ``p`` is large (see
    :func:`whiten`), and the fixed-point iteration runs as one jitted
    ``lax.while_loop`` on the ``(n, k)`` whitened data.

    Args:
      n_components: ``k``, an int in ``[1, min(n_samples - 1, n_features)]``
        (the whitened rank: centring removes one dimension), or ``None`` for
        the numerical rank of the centred data (at most ``min(n - 1, p)``). An
        explicit ``k`` larger than the numerical rank is an error. Ignored,
        with a warning, when ``whiten=False`` (as in scikit-learn).
      algorithm: ``'parallel'`` (symmetric decorrelation) or ``'deflation'``.
      fun: contrast ``'logcosh'``, ``'exp'`` or ``'cube'``.
      fun_args: ``{'alpha': a}`` for logcosh, ``1 <= a <= 2`` (default 1).
      whiten: ``'unit-variance'`` (sources scaled to unit variance),
        ``'arbitrary-variance'`` (scikit-learn's unscaled sources) or
        ``False`` (data assumed white already; no centring, ``k = p``).
      max_iter: iteration cap (per component for deflation).
      tol: tolerance on ``max_i | |<w_i^new, w_i^old>| - 1 |``.
      w_init: ``(k, k)`` starting unmixing matrix of the whitened data
        (scikit-learn's meaning, with the same whitening sign convention), or
        ``None`` for a Gaussian draw from ``random_state``.
      whiten_solver: ``'auto'``, ``'eigh'``, ``'svd'`` or ``'randomized'``
        (see :func:`whiten`); a row source is always whitened by the
        streaming randomized SVD.
      method: randomized range finder, ``'auto'`` (block Krylov for few
        components, two subspace iterations for many: see
        :func:`jaxfactor._policy.choose_whiten_range`), ``'krylov'`` or
        ``'subspace'``.
      n_oversamples, n_iter, block_size: range finder sizes (see
        :func:`jaxfactor.randomized.range_params`).
      decorrelation: ``'auto'`` (``'eigh'`` on CPU, ``'newton-schulz'`` on
        accelerators: :func:`jaxfactor._policy.choose_decorrelation`),
        ``'eigh'`` or ``'newton-schulz'``.
      block_rows: rows per block when ``X`` is a row source.
      mesh: a ``jax.sharding.Mesh`` (:func:`jaxfactor.sharding.row_mesh`)
        over which the rows of ``X`` (randomized whitening of an in-memory
        ``X``; every block of a row source) and of the whitened data (the
        fixed-point iteration) are split; ``None`` runs on the default device,
        the mesh of size one.
      random_state: ``None`` (key 0: unseeded fits are reproducible), an int,
        a numpy generator or a ``jax.random`` key.
      checkpoint: ``None`` or a path (``str`` or ``os.PathLike``) of a
        ``.npz`` checkpoint file for the streaming whitening of a row source
        (ignored for in-memory ``X``): a fit interrupted during the passes
        over the rows and repeated with the same data and parameters resumes
        from it and gives the same result; the file is removed when the
        whitening completes. A file of another run is refused (``ValueError``).
      checkpoint_every: int ``>= 1``, blocks between checkpoints.

    Attributes:
      components_: ``(k, p)`` unmixing matrix in feature space; the sources are
        ``(X - mean_) components_^T``.
      mixing_: ``(p, k)`` its pseudo-inverse; ``X ~ sources mixing_^T + mean_``.
      directions_: ``(k, p)`` feature-space direction of each component for
        editing: mixing column ``i`` divided by its L2 norm, so every row has
        unit norm, with the sign chosen so that its largest-magnitude entry is
        positive.
      explained_variance_: ``(k,)`` variance of the data carried by each
        component, ``||mixing_[:, i]||^2 var(source_i)`` (``ddof=1``); it sums
        to the variance of the whitened PCA subspace.
      mean_: ``(p,)`` column means (zeros when ``whiten=False``).
      whitening_: ``(k, p)`` whitening matrix ``diag(1/s) Vt`` (scikit-learn's
        meaning: ``sqrt(n) (X - mean_) whitening_^T`` is white); absent when
        ``whiten=False``.
      n_iter_: iterations run (deflation: the most any component needed).
      converged_: whether the iteration met ``tol``.
      n_components_: ``k``; whiten_solver_: the whitening solver used;
      plan_: the :class:`jaxfactor._policy.Plan` the fit ran.

    Out-of-core: ``fit`` also takes a row source
    (:class:`jaxfactor.sources.NpySource` over a ``.npy`` file or a directory
    of shards, any :class:`~jaxfactor.sources.RowSource`, or a path): the
    whitening streams over row blocks (:func:`whiten_source`), so only the
    ``(n, k)`` whitened data and a few blocks are ever in memory; an int
    ``n_components`` is then required. ``transform`` takes in-memory arrays.

    Ordering and signs: components are sorted by ``explained_variance_``,
    descending (ties keep the iteration's order), and the sign of each
    component is the sign of its direction (largest-magnitude entry of
    ``directions_[i]`` positive); ``components_``, ``mixing_`` and
    ``directions_`` share the order and signs, so ``transform`` and
    ``inverse_transform`` stay consistent.
    """

    def __init__(self, n_components=None, *, algorithm="parallel", fun="logcosh", fun_args=None,
                 whiten="unit-variance", max_iter=200, tol=1e-4, w_init=None,
                 whiten_solver="auto", method="auto", n_oversamples=None, n_iter=None,
                 block_size=None, decorrelation="auto", block_rows=4096, random_state=None,
                 mesh=None, checkpoint=None, checkpoint_every=16):
        self.n_components = n_components
        self.algorithm = algorithm
        self.fun = fun
        self.fun_args = fun_args
        self.whiten = whiten
        self.max_iter = max_iter
        self.tol = tol
        self.w_init = w_init
        self.whiten_solver = whiten_solver
        self.method = method
        self.n_oversamples = n_oversamples
        self.n_iter = n_iter
        self.block_size = block_size
        self.decorrelation = decorrelation
        self.block_rows = block_rows
        self.random_state = random_state
        self.mesh = mesh
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every

    _parameter_constraints = {
        **P.shared("n_components", "max_iter", "tol", "n_oversamples", "n_iter", "block_size",
                   "block_rows", "random_state", "mesh", "checkpoint", "checkpoint_every"),
        "algorithm": [P.Options(*ALGORITHMS)],
        "fun": [P.Options(*CONTRASTS)],
        "fun_args": [P.Constant(None), P.Predicate(
            lambda a: isinstance(a, dict) and set(a) <= {"alpha"}
            and P.Interval(float, 1, 2).accepts(a.get("alpha", 1.0)),
            "a dict {'alpha': a float in [1, 2]}")],
        "whiten": [P.Options(*(w for w in WHITEN_OPTIONS if w)), P.Constant(False)],
        "w_init": [P.Constant(None), P.ArrayLike],
        "whiten_solver": [P.Options(*WHITEN_SOLVERS)],
        "method": [P.Options("auto", "krylov", "subspace")],
        "decorrelation": [P.Options(*DECORRELATIONS)],
    }

    # ---------------------------------------------------------------- checks
    def _check_params(self, n, p):
        alpha = ({} if self.fun_args is None else self.fun_args).get("alpha", 1.0)
        if self.whiten is False:
            if self.n_components is not None:
                warnings.warn("Ignoring n_components with whiten=False.", UserWarning, stacklevel=3)
            return p, float(alpha)
        k = self.n_components
        if k is None:
            return None, float(alpha)
        if k > p:
            raise ValueError(f"n_components={k} is larger than n_features={p}: whitening keeps at "
                             f"most min(n_samples - 1, n_features) = {min(n - 1, p)} components")
        if k > n - 1:
            raise ValueError(f"X has {n} samples, fewer than n_components + 1 = {k + 1} "
                             f"(n_components={k}): after "
                             f"centring the whitened rank is at most n_samples - 1 = {n - 1}; "
                             f"use n_components <= {n - 1} or more samples")
        return int(k), float(alpha)

    def _check_w_init(self, k, dtype):
        if self.w_init is None:
            return None
        w = np.asarray(self.w_init)
        if w.shape != (k, k):
            raise ValueError(f"w_init has shape {w.shape}; it must be (n_components, n_components) "
                             f"= {(k, k)}")
        w = V.check_matrix(w, "w_init").astype(dtype)
        if np.linalg.matrix_rank(np.asarray(w, np.float64)) < k:
            raise ValueError("w_init is rank deficient; it must be an invertible matrix")
        return w

    # ------------------------------------------------------------------- fit
    def _fit(self, X):
        arr, source, n, p, dtype, _ = self._intake_rows(X)
        k, alpha = self._check_params(n, p)
        key = V.check_random_state_key(self.random_state)
        key_whiten, key_init = jax.random.split(key)
        rank_limit = min(n - 1, p)
        mesh = self.mesh
        platform = platform_of(mesh)
        decorrelation = choose_decorrelation(self.decorrelation, platform)
        if source is not None and (self.whiten is False or k is None):
            raise ValueError("fitting a row source needs whitening and an int n_components "
                             f"(got whiten={self.whiten!r}, n_components={self.n_components!r})")

        if self.whiten is False:
            w_user = self._check_w_init(k, dtype)
            white = arr
            self.whiten_solver_ = None
            range_method = (None, None)
        else:
            k_req = rank_limit if k is None else k
            solver = ("randomized" if source is not None else
                      choose_whiten_solver(self.whiten_solver, n, p, k_req, True))
            # the range finder is chosen here, once, and recorded in plan_
            range_method = (choose_whiten_range(self.method, self.n_iter, n, p, k_req)
                            if solver == "randomized" else (None, None))
            w_user = self._check_w_init(k_req, dtype) if k is not None else None
            kw = dict(key=key_whiten, method=range_method[0], n_oversamples=self.n_oversamples,
                      n_iter=range_method[1], block_size=self.block_size)
            if source is not None:
                res = whiten_source(source, k_req, block_rows=self.block_rows, dtype=dtype,
                                    mesh=mesh, checkpoint=self.checkpoint,
                                    checkpoint_every=self.checkpoint_every, **kw)
            elif solver == "randomized" and mesh is not None:
                # mean-padded rows add nothing to the centred products; their whitened rows are 0
                xs, _ = shard_rows(arr, mesh)
                res = whiten(xs, k_req, solver=solver, n_valid=n, **kw)
            elif solver == "randomized":
                res = whiten(arr, k_req, solver=solver, **kw)
            else:
                res = whiten(arr, k_req, solver=solver)
            s = np.asarray(res.singular_values, np.float64)
            floor = _rank_floor(dtype, n, p, solver) * (s[0] if s.size and s[0] > 0 else 1.0)
            rank = int(np.sum(s > floor))
            if rank == 0:
                raise ValueError("X has (numerically) zero variance after centring; FastICA "
                                 "needs data that vary")
            if rank < k_req:
                if k is not None:
                    raise ValueError(f"n_components={k} is larger than the numerical rank {rank} "
                                     f"of the centred data (singular value {k} is {s[k - 1]:.3g}, "
                                     f"below {floor:.3g}); use n_components <= {rank}")
                res = WhiteningResult(res.white[:, :rank], res.components[:rank],
                                      res.singular_values[:rank], res.mean)
                k_req = rank
            if k is None:
                w_user = self._check_w_init(k_req, dtype)
            k = k_req
            white = res.white
            self.whiten_solver_ = solver

        # The fixed-point iteration on (row-sharded) whitened data; padded rows are zero.
        white_iter = white if mesh is None else shard_block(white, mesh)[0]
        result = fastica(white_iter, key=key_init, w_init=w_user, algorithm=self.algorithm,
                         fun=self.fun, alpha=alpha, tol=float(self.tol), max_iter=int(self.max_iter),
                         n_valid=n, decorrelation=decorrelation)
        white = white[:n]
        self.n_iter_ = int(result.n_iter)
        self.plan_ = Plan(self.whiten_solver_, *range_method, decorrelation=decorrelation,
                          platform=platform)
        self.converged_ = bool(result.converged)
        self.status_ = report("FastICA", result.status, n_iter=self.n_iter_,
                              change=float(result.change), tol=float(self.tol))

        if self.whiten is False:
            parts = _finish_unwhitened(arr, result.w)
            mean = np.zeros((p,), dtype)
        else:
            parts = _finish_whitened(white, result.w, res.components, res.singular_values,
                                     unit_variance=self.whiten == "unit-variance")
            mean = res.mean
        ordered = _order_and_sign(*parts)
        self.components_ = np.asarray(ordered.unmixing)
        self.mixing_ = np.asarray(ordered.mixing)
        self.directions_ = np.asarray(ordered.directions)
        self.explained_variance_ = np.asarray(ordered.explained) * (n / max(n - 1, 1))
        self.mean_ = np.asarray(mean)
        if self.whiten is not False:
            self.whitening_ = np.asarray(res.components) / np.asarray(res.singular_values)[:, None]
        elif hasattr(self, "whitening_"):
            del self.whitening_
        self.n_components_ = int(k)
        self._unmixing = np.asarray(result.w)[ordered.order] * ordered.signs[:, None]
        return self

    # ------------------------------------------------------------- transforms
    def inverse_transform(self, X):
        """Mixed data from sources: ``X mixing_^T + mean_``.

        Args:
          X: ``(n, k)`` sources.

        Returns:
          ``(n, p)``, the same kind of array as ``X``.
        """
        arr, kind = self._intake_scores(X)
        out = arr @ jnp.asarray(self.mixing_, arr.dtype).T + jnp.asarray(self.mean_, arr.dtype)
        return V.restore_kind(out, kind)
