"""PCA whitening to ``k`` components, in memory and over a row source.

With ``X_c = X - 1 mean^T`` and its top-``k`` SVD ``X_c ~ U diag(s) Vt``, the
whitening matrix is ``K = diag(1/s) Vt`` (``(k, p)``, scikit-learn's
``whitening_``) and the whitened data ``Z = sqrt(n) X_c K^T = sqrt(n) U``
(``(n, k)``) have identity covariance (Hyvarinen, Karhunen & Oja 2001, eq.
6.33). For large ``p`` the SVD is the project's randomized SVD
(:func:`jaxfactor.randomized.randomized_svd`), so a ``p x p``
eigendecomposition is never formed; small problems use the exact covariance
``eigh`` or thin SVD. This is FastICA's expensive stage (``O(n p k)``).

Rows padded to a multiple of a mesh whiten to exact zeros and the means divide
by the true count (``n_valid``). A row source is whitened by the streaming
randomized SVD plus one projection pass (:func:`whiten_source`).

Signs: each row of ``Vt`` has a non-negative first entry (scikit-learn's
whitening convention, so that a user ``w_init`` means the same in both).
"""
from __future__ import annotations

import os
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._linalg import full_float32, row_signs
from ._policy import WHITEN_SOLVERS, choose_whiten_range, choose_whiten_solver
from .accumulate import centred_matmul, stack_rows
from .pca import pca_full
from .randomized import randomized_svd, range_params, svd_passes, svd_run
from .sources import ArraySource, RowSource
from .streaming import Pass, as_checkpoint, run_passes

__all__ = ["WhiteningResult", "WHITEN_SOLVERS", "whiten", "whiten_source"]


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


def _first_entry_signs(vt):
    return row_signs(vt, "first")


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


@full_float32
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

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.whitening import whiten
      >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
      >>> res = whiten(x, 3)
      >>> res.white.shape, res.whitening.shape
      ((50, 3), (3, 8))
      >>> bool(np.allclose(res.white.T @ res.white / 50, np.eye(3), atol=1e-4))
      True
    """
    n, p = x.shape
    k = int(n_components)
    n_count = n if n_valid is None else int(n_valid)
    solver = choose_whiten_solver(solver, n_count, p, k)
    if solver != "randomized" and n_count != n:
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
                                                         n_count, p, k)
        svd = randomized_svd(x, k, key=key, center=True, compute_u=True, **kw)
        return _white_from_u(svd.u, svd.vt, svd.s, svd.mean, jnp.asarray(n_count, jnp.int32))
    raise ValueError(f"solver must be one of {WHITEN_SOLVERS}, got {solver!r}")


@full_float32
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

    Examples:
      >>> import jax, numpy as np
      >>> from jaxfactor.sources import ArraySource
      >>> from jaxfactor.whitening import whiten_source
      >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
      >>> res = whiten_source(ArraySource(x), 3, key=jax.random.key(0), block_rows=16)
      >>> res.white.shape, bool(np.allclose(res.white.T @ res.white / 50, np.eye(3), atol=1e-3))
      ((50, 3), True)
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
