"""FastICA's fixed-point iterations on whitened data (the kernels).

FastICA (Hyvarinen 1999, "Fast and robust fixed-point algorithms for
independent component analysis"; Hyvarinen, Karhunen & Oja 2001, tables 8.3
and 8.4) runs on whitened data ``Z`` (``(n, k)``, identity covariance: see
:mod:`jaxfactor.whitening`) for an orthogonal ``W`` (``(k, k)``), with the
contrast ``G`` and its derivatives ``g = G'``, ``g'``:

* parallel: ``W <- E[g(W z) z^T] - diag(E[g'(W z)]) W`` followed by the
  symmetric decorrelation ``W <- (W W^T)^{-1/2} W``
  (:func:`jaxfactor._linalg.symmetric_decorrelation`). One iteration is two
  ``k x k x n`` products (``Y = Z W^T`` and ``g(Y)^T Z``) plus ``O(k^3)``.
* deflation: one row at a time, ``w <- E[z g(w^T z)] - E[g'(w^T z)] w``,
  Gram-Schmidt against the rows already found, normalised.

Contrasts: ``logcosh`` (``g(u) = tanh(alpha u)``, ``1 <= alpha <= 2``),
``exp`` (``g(u) = u exp(-u^2/2)``) and ``cube`` (``g(u) = u^3``).
Convergence: ``max_i | |<w_i^new, w_i^old>| - 1 | < tol`` (scikit-learn's
criterion). The loops are ``lax.while_loop`` (inside a ``fori_loop`` over
components for deflation) in one jitted program. With ``Z`` row-sharded over
a mesh, padded rows are zero and the means divide by the true count
(``n_valid``).

Kernels: :func:`fastica_parallel`, :func:`fastica_deflation`, :func:`fastica`
(dispatch). Estimator: :class:`jaxfactor.estimators.FastICA`.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._linalg import full_float32, symmetric_decorrelation
from ._status import iteration_status

__all__ = ["ICAResult", "CONTRASTS", "ALGORITHMS", "fastica_parallel", "fastica_deflation",
           "fastica"]

CONTRASTS = ("logcosh", "exp", "cube")
ALGORITHMS = ("parallel", "deflation")


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


def _contrast(fun: str, y: jax.Array, alpha, n_valid, axis: int = 0) -> tuple[jax.Array, jax.Array]:
    """``(g(y), mean over the n_valid true samples of g'(y))`` for samples along ``axis``.

    Rows beyond the first ``n_valid`` are padding (zero whitened rows, see
    :func:`fastica`): ``g(0) = 0`` for every contrast, so they add nothing to
    ``E[g(y) z^T]``, but ``g'(0)`` is not zero (``alpha`` for logcosh, ``1``
    for exp), so their share is taken off the sum of ``g'`` before dividing
    by the true count.
    """
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
    return gy, _true_mean(gp, gp0, n_valid, axis)


def _true_mean(values, value_at_zero, n_valid, axis: int = 0):
    """Mean along ``axis`` over the first ``n_valid`` samples of ``values``, the
    padding samples (zero rows, where ``values`` is ``value_at_zero``) taken off."""
    n_pad = (values.shape[axis] - n_valid).astype(values.dtype)
    return (jnp.sum(values, axis=axis) - n_pad * value_at_zero) / n_valid.astype(values.dtype)


# ------------------------------------------------------------------ iterations


def _as_count(n_valid, n):
    return jnp.asarray(n if n_valid is None else n_valid, jnp.int32)


@full_float32
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

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.ica import fastica_parallel
      >>> from jaxfactor.whitening import whiten
      >>> s = np.random.default_rng(0).laplace(size=(200, 2)).astype(np.float32)
      >>> white = whiten(s @ np.array([[1.0, 0.5], [0.2, 1.0]], np.float32), 2).white
      >>> res = fastica_parallel(white, np.eye(2, dtype=np.float32))
      >>> res.w.shape, bool(np.allclose(res.w @ res.w.T, np.eye(2), atol=1e-4))
      ((2, 2), True)
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


@full_float32
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

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.ica import fastica_deflation
      >>> from jaxfactor.whitening import whiten
      >>> s = np.random.default_rng(0).laplace(size=(200, 2)).astype(np.float32)
      >>> white = whiten(s @ np.array([[1.0, 0.5], [0.2, 1.0]], np.float32), 2).white
      >>> res = fastica_deflation(white, np.eye(2, dtype=np.float32))
      >>> res.w.shape, bool(np.allclose(res.w @ res.w.T, np.eye(2), atol=1e-4))
      ((2, 2), True)
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


@full_float32
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

    Examples:
      >>> import jax, numpy as np
      >>> from jaxfactor.ica import fastica
      >>> from jaxfactor.whitening import whiten
      >>> s = np.random.default_rng(0).laplace(size=(200, 2)).astype(np.float32)
      >>> white = whiten(s @ np.array([[1.0, 0.5], [0.2, 1.0]], np.float32), 2).white
      >>> res = fastica(white, key=jax.random.key(0), algorithm="parallel")
      >>> res.w.shape, res.n_iter.dtype, bool(np.allclose(res.w @ res.w.T, np.eye(2), atol=1e-4))
      ((2, 2), dtype('int32'), True)
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
