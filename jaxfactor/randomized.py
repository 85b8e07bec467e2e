"""Randomized SVD (Halko, Martinsson & Tropp 2011), in memory and over a source.

Both entry points share one range finder on the feature side (``p``): starting
from a Gaussian block ``Omega``, repeated applications of the centred normal
operator ``A = X_c^T X_c`` (``X_c = X - 1 mean^T``, never formed: the mean is
folded into each product) build an orthonormal basis ``Q`` of ``p``-vectors.

* ``method='subspace'`` keeps only the last iterate (``Q = orth(A^q Omega)``),
  as scikit-learn's ``randomized_svd`` does with ``q`` power iterations.
* ``method='krylov'`` keeps every iterate, ``Q = orth[A Omega, A^2 Omega, ...]``
  (block Krylov; Musco & Musco 2015). The same number of passes over ``X``
  then spans a space ``q`` times wider, so a narrow block (``b`` columns)
  reaches the accuracy of subspace iteration with ``k + oversample`` columns
  for a fraction of the flops.

The basis is finished by Rayleigh-Ritz: the thin SVD of ``X_c Q`` (through a QR,
or a tall-skinny QR over row blocks) gives singular values and right singular
vectors ``V = Q W``. In memory, when ``U`` is not wanted, Krylov skips the pass
over the whole basis: the Rayleigh quotient ``Q^T A Q`` is assembled from the
products the iteration already made plus one pass for the last block, and the
SVD runs inside its top-``k`` Ritz subspace (:func:`_krylov_normal_ritz`; at
``N = 10000, p = 16384, k = 500`` 10.6 s instead of 13.9 s, same accuracy).
Signs follow :func:`jaxfactor._linalg.svd_flip`.

Mixed precision (``precision=``, off by default): the products with ``X`` --
nearly all of the flops -- can take TF32 or bfloat16 operands with float32
accumulation (:func:`jaxfactor.accumulate.matmul`); QR, SVD, the moments and
every accumulator stay in the working dtype. The low precisions round the
*centred* data, so that the rounding error is relative to the spread of the
data rather than to its mean: in memory ``'bf16'`` keeps one bfloat16 copy of
``X - 1 mean^T`` (half the size of ``X``) while in-memory ``'tf32'`` folds the
mean into the products as float32 does (no copy); streaming, both centre each
block before rounding (the first pass, before the mean is known, shifts the
blocks by the first block's mean and corrects exactly afterwards). Measured
against float32 on GAN-like data (``benchmarks/results/precision.md``: ``N =
10000``, ``p = 4096``, ``k = 100``, Krylov; CPU emulation -- there is no GPU
here, so CPU timings of bf16/tf32 say nothing), against float32:

==========  ================  =====================  ==================
precision   EV rel. err, all  max angle, top k/2     captured variance
==========  ================  =====================  ==================
tf32        4.4e-5 / 1.8e-5   0.063 / 0.013 deg      within 2e-7
bf16        1.6e-4 / 1.5e-4   0.097 / 0.099 deg      within 2e-7
==========  ================  =====================  ==================

(in memory / streaming). For the explained variances the randomized method's
own error against the exact PCA is ten times larger (2.2e-3 with float32), so
rounding does not limit them; the leading components move by up to 0.1 degree,
more than the 0.02 degree between float32 and the exact PCA. ``tests/test_randomized.py``
bounds the errors in units of the operands' roundoff ``u`` (bf16 ``2^-8``,
tf32 ``2^-11``): explained variances within ``u``, the leading half of the
components within ``400 u`` degrees.
"""
from __future__ import annotations

import os
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from . import accumulate
from ._policy import (ADAPTIVE_MAX_ITER, ADAPTIVE_TOL, KRYLOV_MIN_DEPTH, RangeParams,
                      adaptive_min_iter, krylov_adaptive_block, krylov_adaptive_max_depth,
                      adaptive_width, keep_converted_transpose, keep_transpose, platform_of,
                      range_params)
from ._linalg import full_float32, orthonormalize, svd_flip
from .sharding import replicated
from .sources import RowSource
from .streaming import Pass, as_checkpoint, key_data, pack, run_passes, unpack

__all__ = ["SVDResult", "AdaptiveSVDResult", "RangeParams", "range_params", "randomized_svd",
           "randomized_svd_source", "svd_passes", "svd_run", "svd_from_context"]


class SVDResult(NamedTuple):
    """A truncated SVD ``X_c ~ U diag(S) Vt``.

    Attributes:
      u: ``(n, k)`` left singular vectors, or ``None`` when not computed.
      s: ``(k,)`` singular values, descending.
      vt: ``(k, p)`` right singular vectors (rows).
      mean: ``(p,)`` column means that were folded in (zeros if not centred).
    """

    u: jax.Array | None
    s: jax.Array
    vt: jax.Array
    mean: jax.Array


def _extend_basis(basis: jax.Array | None, block: jax.Array) -> jax.Array:
    """Append ``block`` to ``basis`` orthonormally: (project out, QR) twice, so
    that directions already (numerically) in the basis do not come back."""
    for _ in range(2):
        if basis is not None:
            block = block - basis @ (basis.T @ block)
        block = orthonormalize(block)
    return block if basis is None else jnp.concatenate([basis, block], axis=1)


def range_basis(apply_normal: Callable[[jax.Array], jax.Array], omega: jax.Array,
                params: RangeParams, first: jax.Array | None = None) -> jax.Array:
    """Orthonormal ``(p, basis_size)`` basis for the dominant right singular space.

    Args:
      apply_normal: ``Z -> X_c^T X_c Z`` for ``(p, b)`` blocks.
      omega: ``(p, block_size)`` Gaussian start block.
      params: sizes from :func:`range_params`.
      first: ``apply_normal(omega)`` when the caller already has it.

    Returns:
      ``(p, basis_size)`` array with orthonormal columns.
    """
    z = apply_normal(omega) if first is None else first
    if params.method == "subspace":
        z = orthonormalize(z)
        for _ in range(params.n_iter - 1):
            z = orthonormalize(apply_normal(z))
        return z
    basis = _extend_basis(None, z)
    last = basis
    for _ in range(params.n_iter - 1):
        width = basis.shape[1]
        basis = _extend_basis(basis, apply_normal(last))
        last = basis[:, width:]
    return basis[:, :params.basis_size]


def _ritz(r: jax.Array, basis: jax.Array, k: int):
    """SVD of the small factor ``R`` of ``X_c Q = Q_n R``; returns the top-``k``
    ``(u_r, s, vt)`` with ``vt = W^T Q^T``."""
    u_r, s, w_t = jnp.linalg.svd(r, full_matrices=False)
    return u_r[:, :k], s[:k], w_t[:k] @ basis.T


def _rayleigh_ritz(data, fold_mean, basis, k, compute_u, precision, dtype):
    """The last pass: the thin SVD of ``X_c Q`` through its QR, ``(u, s, vt)`` of
    the top ``k`` with signs by :func:`~jaxfactor._linalg.svd_flip` (``u`` is
    ``None`` unless ``compute_u``)."""
    y = accumulate.centred_matmul(data, fold_mean, basis, precision).astype(dtype)
    if compute_u:
        q_n, r = jnp.linalg.qr(y, mode="reduced")
    else:
        r = jnp.linalg.qr(y, mode="r")
    u_r, s, vt = _ritz(r, basis, k)
    u = q_n @ u_r if compute_u else None
    u, vt = svd_flip(u, vt)
    return u, s, vt


def _rmatmul(data, xt, fold_mean, y, precision):
    """``X_c^T Y``, from the row-major transposed copy ``xt`` (``(p, n)``) when there is one:
    see :func:`jaxfactor._policy.keep_transpose`."""
    if xt is None:
        return accumulate.centred_rmatmul(data, fold_mean, y, precision)
    z = accumulate.matmul(xt, y, precision)
    if fold_mean is not None:
        z = z - jnp.outer(fold_mean, jnp.sum(y, axis=0))
    return z


def _transposed_copy(x, precision):
    """The ``(p, n)`` row-major copy of ``x`` that :func:`_rmatmul` reads, or ``None``
    where the policy keeps none (made outside the jitted solvers, where XLA would fold
    the transpose back into the product)."""
    n, p = x.shape
    if not keep_transpose(n, p, jnp.dtype(x.dtype).itemsize, platform_of(), precision):
        return None
    return jnp.transpose(jnp.asarray(x))


@partial(jax.jit, static_argnames=("n_components", "params", "center", "compute_u", "precision"))
def _randomized_svd(x, key, n_components, params, center, compute_u, precision="float32", xt=None):
    n, p = x.shape
    mean = jnp.mean(x, axis=0) if center else jnp.zeros((p,), x.dtype)
    fold_mean = mean if center else None
    data = x
    if precision == "bf16":
        # one bfloat16 copy of the centred data: rounding relative to the spread
        data = (x - mean if center else x).astype(jnp.bfloat16)
        fold_mean = None

    def apply_normal(z):
        y = accumulate.centred_matmul(data, fold_mean, z, precision).astype(x.dtype)
        return _rmatmul(data, xt, fold_mean, y, precision).astype(x.dtype)

    omega = jax.random.normal(key, (p, params.block_size), x.dtype)
    if params.method == "krylov" and not compute_u:
        s, vt = _krylov_normal_ritz(apply_normal, lambda q: accumulate.centred_matmul(
            data, fold_mean, q, precision).astype(x.dtype), omega, params, n_components)
        return SVDResult(None, s, vt, mean)
    basis = range_basis(apply_normal, omega, params)
    u, s, vt = _rayleigh_ritz(data, fold_mean, basis, n_components, compute_u, precision, x.dtype)
    return SVDResult(u, s, vt, mean)


def _krylov_normal_ritz(apply_normal, apply_x, omega, params, k):
    """Block Krylov, its Ritz vectors found without a pass over the whole basis.

    Builds ``Q = [Q_0, ..., Q_{q-1}]`` as :func:`range_basis` does, keeping the
    products ``W_j = A Q_j`` (``A = X_c^T X_c``) that each next block is made
    from. The Rayleigh quotient ``H = Q^T A Q`` then needs one product with
    ``X``, for the last block only: ``Q_i^T A Q_j = Q_i^T W_j`` for every
    ``j < q - 1`` and ``Q_r^T A Q_r = (X_c Q_r)^T (X_c Q_r)`` for the last
    block ``Q_r``. The top ``k`` eigenvectors of ``H`` span the Ritz subspace
    ``V = Q Y_k``; the thin SVD of ``X_c V`` (one pass of ``k`` columns) then
    resolves the singular values and vectors inside it at the SVD's accuracy
    (``H``'s float32 eigenvalues carry an absolute error ``~ eps s_1^2``, enough
    to pick the subspace but not to separate close singular values: ordering
    by ``H`` alone moved the leading half of the components by 4 degrees
    where the SVD moves them by 0.17). Passes of ``b`` columns: ``2 q + 1 +
    k / b`` instead of ``2 q + q`` (at ``q = 5``, ``b = k / 2``: 13 instead
    of 15).

    Args:
      apply_normal: ``(p, b) -> (p, b)``, ``Z -> A Z``.
      apply_x: ``(p, r) -> (n, r)``, ``Z -> X_c Z``.
      omega: ``(p, b)`` Gaussian start block.
      params: Krylov sizes from :func:`range_params`.
      k: components returned.

    Returns:
      ``(s, vt)``: ``(k,)`` singular values, descending, and ``(k, p)`` right
      singular vectors with signs by :func:`~jaxfactor._linalg.svd_flip`.
    """
    basis = _extend_basis(None, apply_normal(omega))
    last, products = basis, []
    for _ in range(params.n_iter - 1):
        width = basis.shape[1]
        products.append(apply_normal(last))
        basis = _extend_basis(basis, products[-1])
        last = basis[:, width:]
    basis = basis[:, :params.basis_size]
    known = min(sum(w.shape[1] for w in products), basis.shape[1])
    rest = basis[:, known:]
    y = apply_x(rest)
    h_rr = y.T @ y
    if known:
        w = jnp.concatenate(products, axis=1)[:, :known]
        q_known = basis[:, :known]
        h_kk = q_known.T @ w
        h_kk = 0.5 * (h_kk + h_kk.T)
        h_kr = w.T @ rest
        h = jnp.block([[h_kk, h_kr], [h_kr.T, h_rr]])
    else:
        h = h_rr
    _, v = jnp.linalg.eigh(0.5 * (h + h.T))
    top = basis @ v[:, ::-1][:, :k]
    r = jnp.linalg.qr(apply_x(top), mode="r")
    _, s, vt = _ritz(r, top, k)
    _, vt = svd_flip(None, vt)
    return s, vt


@full_float32
def randomized_svd(x: jax.Array, n_components: int, *, key: jax.Array,
                   method: str = "krylov", n_oversamples: int | None = None,
                   n_iter: int | None = None, block_size: int | None = None,
                   center: bool = False, compute_u: bool = True,
                   precision: str = "float32", tol: float | None = None,
                   max_iter: int | None = None) -> SVDResult | AdaptiveSVDResult:
    """Truncated SVD of a matrix in memory by a randomized range finder.

    Computes ``X_c ~ U diag(S) Vt`` with ``X_c = X - 1 mean^T`` when
    ``center`` (the mean is folded into every product; ``X_c`` is never
    formed) and ``X_c = X`` otherwise.

    Args:
      x: ``(n, p)`` float32 or float64 array.
      n_components: ``k <= min(n, p)``.
      key: a ``jax.random`` key; same key and input give the same result.
      method: ``'krylov'`` (default), ``'subspace'`` (see the module doc) or
        ``'adaptive'``: accuracy-controlled shifted subspace iteration (dashSVD's
        shifted power steps, Feng et al. 2024) on ``k + n_oversamples`` columns
        (default ``k + max(10, k // 2)``), run until the a-posteriori estimate of
        the relative shortfall of the captured variance is below ``tol`` (after
        at least :func:`jaxfactor._policy.adaptive_min_iter` steps), or
        ``'adaptive_krylov'``: block Krylov grown block by block (``block_size``,
        default ``ceil((k + 10) / 2)``) until the same estimate, from the Ritz values of
        the basis so far, is below ``tol`` (after at least
        :data:`jaxfactor._policy.KRYLOV_MIN_DEPTH` blocks, at most ``max_iter``,
        default :data:`jaxfactor._policy.KRYLOV_MAX_DEPTH`); see
        :func:`_adaptive_krylov_svd`.
      n_oversamples, n_iter, block_size: range-finder sizes, defaults from
        :func:`range_params` (``'adaptive'`` uses ``n_oversamples`` only,
        ``'adaptive_krylov'`` ``block_size`` only).
      center: subtract column means implicitly.
      compute_u: also return ``U`` (``(n, k)``); otherwise ``u`` is ``None``.
      precision: operand precision of the products with ``X``: ``'float32'``
        (default, full float32), ``'tf32'`` or ``'bf16'`` (float32
        accumulation; see the module doc and
        :func:`jaxfactor.accumulate.matmul`). ``'bf16'`` keeps one
        ``(n, p)`` bfloat16 copy of the centred data (``'adaptive_krylov'``: also its
        transpose on CPU, and its last pass, the SVD inside the Ritz subspace, reads
        the float32 data).
      tol: ``'adaptive'`` and ``'adaptive_krylov'`` only: target relative shortfall
        of the captured variance ``1 - sum_k s_i^2 / sum_k sigma_i^2`` (default
        :data:`jaxfactor._policy.ADAPTIVE_TOL`).
      max_iter: ``'adaptive'``: most shifted power steps (default 100);
        ``'adaptive_krylov'``: most blocks.

    Returns:
      :class:`SVDResult` with ``s`` descending and signs fixed by
      :func:`~jaxfactor._linalg.svd_flip`; :class:`AdaptiveSVDResult` (also
      ``n_passes``, ``error``, ``n_iter``: steps or blocks) for the adaptive methods.

    Raises:
      ValueError: unknown ``method`` or ``precision``.

    Examples:
      >>> import jax, numpy as np
      >>> from jaxfactor.randomized import randomized_svd
      >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
      >>> res = randomized_svd(x, 2, key=jax.random.key(0), center=True)
      >>> res.u.shape, res.s.shape, res.vt.shape
      ((50, 2), (2,), (2, 8))
      >>> bool(np.allclose(res.s, np.linalg.svd(x - x.mean(0), compute_uv=False)[:2], rtol=1e-4))
      True
    """
    n, p = x.shape
    accumulate.check_precision(precision)
    if method == "adaptive_krylov":
        b = krylov_adaptive_block(n_components, n, p, block_size)
        depth = krylov_adaptive_max_depth(n_components, b, n, p, max_iter)
        return _adaptive_krylov_svd(x, key, ADAPTIVE_TOL if tol is None else tol, n_components,
                                    b, depth, min(KRYLOV_MIN_DEPTH, depth), center, compute_u,
                                    precision, _transposed_copy(x, precision))
    if method == "adaptive":
        width = adaptive_width(n_components, n, p, n_oversamples)
        max_iter = ADAPTIVE_MAX_ITER if max_iter is None else max_iter
        return _adaptive_svd(x, key, ADAPTIVE_TOL if tol is None else tol, max_iter,
                             n_components, width, center, compute_u, precision,
                             min(adaptive_min_iter(n_components, width), max_iter),
                             _transposed_copy(x, precision))
    params = range_params(n_components, n, p, method=method, n_oversamples=n_oversamples,
                          n_iter=n_iter, block_size=block_size)
    return _randomized_svd(x, key, n_components, params, center, compute_u, precision,
                           _transposed_copy(x, precision))


class AdaptiveSVDResult(NamedTuple):
    """A truncated SVD from the accuracy-controlled solver (:func:`randomized_svd` with ``tol``).

    Attributes:
      u, s, vt, mean: as :class:`SVDResult`.
      n_passes: ``()`` int32, passes over ``X`` (each product with ``X`` or ``X^T`` is one).
      error: ``()`` a-posteriori estimate of the relative shortfall of the
        captured variance, ``1 - sum_k s_i^2 / sum_k sigma_i^2``.
      n_iter: ``()`` int32, shifted power steps run.
    """

    u: jax.Array | None
    s: jax.Array
    vt: jax.Array
    mean: jax.Array
    n_passes: jax.Array
    error: jax.Array
    n_iter: jax.Array


def _shortfall_estimate(change, previous_change):
    """Remaining relative shortfall of a geometrically converging sum: twice the
    last relative increase ``c_t`` times ``rho / (1 - rho)``, ``rho = c_t / c_{t-1}``
    clipped to ``[0.5, 0.99]`` (the factor 2 and the floor because a ratio from two
    steps is noisy: on flat spectra the plain remainder was 1.5x optimistic; the
    cap makes a stalled iteration report a large error, not a small one)."""
    rho = jnp.clip(change / jnp.maximum(previous_change, jnp.finfo(change.dtype).tiny), 0.5, 0.99)
    return 2 * change * rho / (1 - rho)


@partial(jax.jit, static_argnames=("n_components", "width", "center", "compute_u", "precision"))
def _adaptive_svd(x, key, tol, max_iter, n_components, width, center, compute_u,
                  precision="float32", min_iter=3, xt=None):
    n, p = x.shape
    k = n_components
    dtype = x.dtype
    mean = jnp.mean(x, axis=0) if center else jnp.zeros((p,), dtype)
    fold_mean = mean if center else None

    def apply_normal(z):
        y = accumulate.centred_matmul(x, fold_mean, z, precision).astype(dtype)
        return _rmatmul(x, xt, fold_mean, y, precision).astype(dtype)

    def ritz_sum(q, bq):
        # Ritz values of A = X_c^T X_c on span(q): eigenvalues of q^T A q (Rayleigh-Ritz)
        h = q.T @ bq
        theta = jnp.linalg.eigvalsh(0.5 * (h + h.T))[::-1]
        return jnp.sum(theta[:k]), theta[-1]

    omega = jax.random.normal(key, (p, width), dtype)
    q = orthonormalize(apply_normal(omega))
    inf = jnp.asarray(jnp.inf, dtype)

    def cond(state):
        _, _, _, it, _, err = state
        return (it < max_iter) & ((err > tol) | (it < min_iter))

    def body(state):
        # dashSVD's shifted power step (Feng et al. 2024): Q <- orth((A - alpha I) Q), the
        # shift raised to half the smallest Ritz value, so that |lambda - alpha| keeps its order
        q, total, alpha, it, change, _ = state
        bq = apply_normal(q)
        new_total, smallest = ritz_sum(q, bq)
        new_change, err = _rising_sum(total, new_total, change, dtype)
        alpha = jnp.maximum(alpha, 0.5 * smallest)
        q = orthonormalize(bq - alpha * q)
        return q, new_total, alpha, it + 1, new_change, err

    zero = jnp.zeros((), dtype)
    state = (q, -inf, zero, jnp.zeros((), jnp.int32), inf, inf)
    q, _, _, it, _, err = jax.lax.while_loop(cond, body, state)
    u, s, vt = _rayleigh_ritz(x, fold_mean, q, k, compute_u, precision, dtype)
    return AdaptiveSVDResult(u, s, vt, mean, 2 * it + 3, err, it)


def _rising_sum(total, new_total, change, dtype):
    """The relative increase of a Ritz sum (infinite while there is no previous sum) and
    the shortfall estimate from the last two increases (infinite until there are two)."""
    inf = jnp.asarray(jnp.inf, dtype)
    new_change = jnp.where(jnp.isfinite(total), jnp.abs(new_total - total)
                           / jnp.maximum(new_total, jnp.finfo(dtype).tiny), inf)
    err = jnp.where(jnp.isfinite(change), _shortfall_estimate(new_change, change), inf)
    return new_change, err


def _krylov_products(data, fold, xt, precision, dtype):
    """``(apply_x, apply_normal)`` of the centred data for the Krylov steps."""
    def apply_x(z):
        return accumulate.centred_matmul(data, fold, z, precision).astype(dtype)

    def apply_normal(z):
        return _rmatmul(data, xt, fold, apply_x(z), precision).astype(dtype)
    return apply_x, apply_normal


@partial(jax.jit, static_argnames=("center", "block", "precision", "transpose"))
def _krylov_start(x, key, xt, center, block, precision, transpose):
    """The mean, the data the Krylov passes read and the first block ``orth(A Omega)``.

    The data is ``(x, xt)``, or for ``'bf16'`` one bfloat16 copy of the centred data
    (a buffer of its own, so that the conversion is not redone inside every product)
    and, where ``transpose``, its row-major ``(p, n)`` transpose
    (:func:`jaxfactor._policy.keep_converted_transpose`)."""
    n, p = x.shape
    mean = jnp.mean(x, axis=0) if center else jnp.zeros((p,), x.dtype)
    fold = mean if center else None
    data = x
    if precision == "bf16":
        data, fold = (x - mean if center else x).astype(jnp.bfloat16), None
        xt = jnp.transpose(data) if transpose else None
    _, apply_normal = _krylov_products(data, fold, xt, precision, x.dtype)
    q0 = _extend_basis(None, apply_normal(jax.random.normal(key, (p, block), x.dtype)))
    return mean, data, xt, q0


@partial(jax.jit, static_argnames=("block", "n_components", "ritz", "precision"))
def _krylov_level(data, fold, xt, basis, h, total, change, block, n_components, ritz,
                  precision):
    """One block of :func:`_adaptive_krylov_svd`: ``W = A Q_j`` for the last block
    ``Q_j`` of ``basis``, the Rayleigh quotient ``h`` bordered by ``Q_{0..j}^T W``, and
    (``ritz``) the top-``k`` Ritz sum with its change and shortfall estimate."""
    b, k = block, n_components
    dtype = basis.dtype
    j = basis.shape[1] // b - 1
    _, apply_normal = _krylov_products(data, fold, xt, precision, dtype)
    w = apply_normal(basis[:, j * b:])
    col = basis.T @ w                                   # Q_i^T A Q_j, i <= j
    h = col[j * b:] if h is None else jnp.block([[h, col[:j * b]], [col[:j * b].T, col[j * b:]]])
    h = 0.5 * (h + h.T)
    err = jnp.asarray(jnp.inf, dtype)
    if ritz:
        new_total = jnp.sum(jnp.linalg.eigvalsh(h)[::-1][:k])
        change, err = _rising_sum(total, new_total, change, dtype)
        total = new_total
    return w, h, total, change, err


@partial(jax.jit, static_argnames=("k",))
def _krylov_top(basis, h, k):
    """The top-``k`` Ritz vectors ``Q Y_k`` of the Rayleigh quotient ``h``."""
    _, v = jnp.linalg.eigh(h)
    return basis @ v[:, ::-1][:, :k]


_rayleigh_ritz_jit = jax.jit(_rayleigh_ritz, static_argnames=("k", "compute_u", "precision",
                                                              "dtype"))


def _adaptive_krylov_svd(x, key, tol, n_components, block, max_depth, min_depth, center,
                         compute_u, precision="float32", xt=None):
    """Block Krylov, as deep as the accuracy asks (``method='adaptive_krylov'``).

    Blocks ``Q_0 = orth(A Omega)``, ``Q_{j+1} = orth(A Q_j - projections)`` (``A =
    X_c^T X_c``, ``b`` columns each, :func:`_extend_basis`) make the basis. After
    block ``j`` the products ``Q_{0..j}^T A Q_j`` complete the Rayleigh quotient
    ``H`` of the basis so far: its top ``k`` eigenvalues are the Ritz values, whose
    sum is the variance the Ritz subspace captures (``||X_c V||_F^2``, exactly, for
    the Rayleigh-Ritz vectors ``V``). The relative increase of that sum from one
    block to the next, extrapolated geometrically (:func:`_shortfall_estimate`, as
    the shifted subspace iteration), estimates the shortfall still missing; the
    iteration stops at the first block, from ``min_depth`` on, whose estimate is at
    most ``tol``, or at ``max_depth``. The top-``k`` Ritz vectors of ``H`` then go
    through one pass of ``k`` columns (the thin SVD of ``X_c V``) for the singular
    values and vectors at the SVD's accuracy (:func:`_rayleigh_ritz`, as
    :func:`_krylov_normal_ritz`), in float32 whatever ``precision`` the basis was
    built in (``'bf16'``: the blocks from one bfloat16 copy of the centred data).

    The loop runs on the host, one jitted program per block (:func:`_krylov_level`,
    :func:`_extend_basis`), with one scalar read back per block from
    ``min_depth`` on. The same solver as one program, each deeper block the branch
    of a nested ``lax.cond``, took 11.2 s where these steps take 8.4 at ``N =
    10000, p = 16384, k = 500`` (AMD EPYC, 2 cores), and 11.6 against 6.9 in
    bfloat16 (XLA refused the fusions and layouts inside the branches), and compiled
    one branch per possible depth. Not traceable: call it outside ``jit``.
    Passes: ``2 (depth + 1) + 1`` (``+ 1`` for ``U``).
    """
    k, b = n_components, block
    dtype = x.dtype
    transpose = precision == "bf16" and keep_converted_transpose(*x.shape, platform_of())
    mean, data, data_xt, basis = _krylov_start(x, key, xt, center, b, precision, transpose)
    fold = mean if center else None
    data_fold = None if precision == "bf16" else fold
    h, total = None, jnp.asarray(-jnp.inf, dtype)
    change = err = jnp.asarray(jnp.inf, dtype)
    depth = max_depth
    for j in range(max_depth):
        ritz = (j + 1) * b >= k and j + 3 >= min_depth
        w, h, total, change, err = _krylov_level(data, data_fold, data_xt, basis, h, total,
                                                 change, b, k, ritz, precision)
        if j == max_depth - 1 or (ritz and j + 1 >= min_depth and float(err) <= tol):
            depth = j + 1
            break
        basis = _extend_basis_jit(basis, w)
    del data, data_xt, w
    top = _krylov_top(basis, h, k)
    u, s, vt = _rayleigh_ritz_jit(x, fold, top, k, compute_u,
                                  "float32" if precision == "bf16" else precision, dtype)
    return AdaptiveSVDResult(u, s, vt, mean, jnp.asarray(2 * depth + 3, jnp.int32), err,
                             jnp.asarray(depth, jnp.int32))


# ------------------------------------------------------------------ streaming


@jax.jit
def _correct_uncentred(product, mean, count, omega):
    """``X^T X Omega - n mean (mean^T Omega)``: the centred product from the
    uncentred one of the first (fused) pass."""
    return product - count.astype(product.dtype) * jnp.outer(mean, mean @ omega)


_extend_basis_jit = jax.jit(_extend_basis)


@partial(jax.jit, static_argnames=("k",))
def _ritz_flip(r, basis, k):
    _, s, vt = _ritz(r, basis, k)
    _, vt = svd_flip(None, vt)
    return s, vt


def svd_run(source: RowSource, n_components: int, params: RangeParams, *, key: jax.Array,
            center: bool, block_rows: int, dtype, precision: str = "float32") -> dict:
    """What defines a run of :func:`svd_passes`, for its checkpoint's
    :func:`~jaxfactor.streaming.fingerprint` (callers that add passes add their
    own settings to it).

    Examples:
      >>> import jax, numpy as np
      >>> from jaxfactor.randomized import range_params, svd_run
      >>> from jaxfactor.sources import ArraySource
      >>> src = ArraySource(np.zeros((50, 8), np.float32))
      >>> run = svd_run(src, 2, range_params(2, 50, 8), key=jax.random.key(0), center=True,
      ...               block_rows=16, dtype=np.float32)
      >>> run["n"], run["p"], run["k"], run["dtype"]
      (50, 8, 2, 'float32')
    """
    return {"n": source.n_samples, "p": source.n_features, "k": n_components,
            "params": list(params), "center": center, "block_rows": block_rows,
            "dtype": str(jnp.dtype(dtype)), "key": key_data(key), "precision": precision}


def svd_passes(source: RowSource, n_components: int, params: RangeParams, *, key: jax.Array,
               center: bool = True, block_rows: int = 4096, dtype=jnp.float32,
               precision: str = "float32", mesh=None) -> list[Pass]:
    """The ``params.n_iter + 1`` passes of :func:`randomized_svd_source`, for
    :func:`jaxfactor.streaming.run_passes`.

    ``'sketch'`` (column moments and ``X^T X Omega``, corrected for the mean),
    ``params.n_iter - 1`` times ``'power'`` (one application of the centred
    normal operator each, the basis extended or replaced) and ``'project'``
    (tall-skinny QR of ``X_c Q`` and the Rayleigh-Ritz step). Callers that
    continue with passes of their own append them.

    Args:
      source: the row source (``n`` rows of width ``p``).
      n_components: ``k``.
      params: range-finder sizes from :func:`range_params`.
      key, center, block_rows, dtype, precision, mesh: as for
        :func:`randomized_svd_source`.

    Returns:
      The passes. The context after the last holds ``'svd.s'`` (``(k,)``),
      ``'svd.vt'`` (``(k, p)``), ``'svd.mean'`` (``(p,)``, zeros when not
      centred) and the column moments' state (``'moments.*'``); read them with
      :func:`svd_from_context`.

    Examples:
      >>> import jax, numpy as np
      >>> from jaxfactor.randomized import range_params, svd_passes
      >>> from jaxfactor.sources import ArraySource
      >>> src = ArraySource(np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32))
      >>> params = range_params(2, 50, 8, method="subspace", n_iter=2)
      >>> passes = svd_passes(src, 2, params, key=jax.random.key(0))
      >>> [p.name for p in passes]
      ['sketch', 'power', 'project']
    """
    n, p = source.n_samples, source.n_features
    dtype = jnp.dtype(dtype)
    omega = jax.random.normal(key, (p, params.block_size), dtype)
    if mesh is not None:
        omega = jax.device_put(omega, replicated(mesh))
    mom_acc = accumulate.moments(p, dtype=dtype)
    prod_acc = accumulate.normal_product(precision)
    qr_acc = accumulate.tsqr(precision)
    krylov = params.method == "krylov"

    def mean_of(ctx):
        return ctx["moments.mean"] if center else jnp.zeros((p,), dtype)

    def sketch_start(ctx):
        shift = None
        if center and precision != "float32":
            # low precision: shift the uncentred first pass by the first block's mean,
            # so the operands are rounded relative to the spread (corrected below)
            shift = jnp.mean(jnp.asarray(source.read(0, min(block_rows, n)), dtype=dtype), axis=0)
        return ({"moments": mom_acc, "product": prod_acc},
                {"moments": mom_acc.init(), "product": prod_acc.init(omega, shift)})

    def sketch_finish(ctx, states):
        mom_state = states["moments"]
        first = prod_acc.finalize(states["product"])
        if center:  # (X - 1 c^T)^T (X - 1 c^T) = X_c^T X_c + n (mean - c)(mean - c)^T
            first = _correct_uncentred(first, mom_state.mean - states["product"].mean,
                                       mom_state.count, omega)
        basis = _extend_basis_jit(None, first) if krylov else orthonormalize(first)
        return {"basis": basis, "last": basis, **pack("moments", mom_state)}

    def power_start(ctx):
        return {"product": prod_acc}, {"product": prod_acc.init(ctx["last"], mean_of(ctx))}

    def power_finish(ctx, states):
        product = prod_acc.finalize(states["product"])
        if krylov:
            width = ctx["basis"].shape[1]
            basis = _extend_basis_jit(ctx["basis"], product)
            last = basis[:, width:]
        else:
            basis = last = orthonormalize(product)
        return {**ctx, "basis": basis, "last": last}

    def project_start(ctx):
        basis = ctx["basis"][:, :params.basis_size]
        return {"tsqr": qr_acc}, {"tsqr": qr_acc.init(basis, mean_of(ctx))}

    def project_finish(ctx, states):
        basis = ctx["basis"][:, :params.basis_size]
        s, vt = _ritz_flip(qr_acc.finalize(states["tsqr"]), basis, n_components)
        moments = {k: v for k, v in ctx.items() if k.startswith("moments.")}
        return {**moments, "svd.s": s, "svd.vt": vt, "svd.mean": mean_of(ctx)}

    return ([Pass("sketch", sketch_start, sketch_finish)]
            + [Pass("power", power_start, power_finish)] * (params.n_iter - 1)
            + [Pass("project", project_start, project_finish)])


def svd_from_context(context: dict) -> tuple[SVDResult, accumulate.Moments]:
    """``(SVDResult, Moments)`` from the context after :func:`svd_passes`
    (``u`` is ``None``; the moments with ``ddof=1``).

    Examples:
      >>> import jax, numpy as np
      >>> from jaxfactor.randomized import range_params, svd_from_context, svd_passes
      >>> from jaxfactor.sources import ArraySource
      >>> from jaxfactor.streaming import run_passes
      >>> src = ArraySource(np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32))
      >>> passes = svd_passes(src, 2, range_params(2, 50, 8), key=jax.random.key(0), block_rows=16)
      >>> svd, mom = svd_from_context(run_passes(src, passes, block_rows=16))
      >>> svd.s.shape, svd.vt.shape, int(mom.n_samples)
      ((2,), (2, 8), 50)
    """
    state = unpack("moments", accumulate.MomentsState, context)
    mom = accumulate.moments(state.mean.shape[0], dtype=state.mean.dtype).finalize(state)
    return SVDResult(None, context["svd.s"], context["svd.vt"], context["svd.mean"]), mom


@full_float32
def randomized_svd_source(source: RowSource, n_components: int, *, key: jax.Array,
                          method: str = "krylov", n_oversamples: int | None = None,
                          n_iter: int | None = None, block_size: int | None = None,
                          center: bool = True, block_rows: int = 4096, dtype=jnp.float32,
                          checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 16,
                          progress: Callable[[str, int, int], None] | None = None,
                          precision: str = "float32", mesh=None):
    """Randomized SVD of a matrix read as row blocks from a replayable source.

    Peak memory is ``O(block_rows * p + p * basis_size)``: the ``n``-side factor
    is never formed. The first pass accumulates the column moments together
    with ``X^T X Omega`` (corrected for the mean afterwards, which is exact in
    exact arithmetic and only perturbs the starting block in floating point);
    each further application of the centred normal operator is one pass with
    the mean folded in; the last pass accumulates the ``R`` factor of
    ``X_c Q`` by tall-skinny QR. In all ``n_iter + 1`` passes.

    Long runs can be made resumable: with ``checkpoint`` set, the whole state
    (accumulators, basis, stage and row counters) is written atomically to
    that ``.npz`` every ``checkpoint_every`` blocks and at each pass boundary.
    Calling again with the same arguments after an interruption resumes from
    the file and gives the same result as an uninterrupted run; the file is
    removed when the run completes. The passes are :func:`svd_passes`, run by
    :func:`jaxfactor.streaming.run_passes`, which owns the checkpoint file.

    Over a device mesh (``mesh=``), each block is padded with zero rows to a
    multiple of the mesh size and placed split by rows over its devices
    (:func:`jaxfactor.sharding.shard_block`); the updates are told how many
    rows are real, so padding enters neither the moments nor any product
    (masked rows of each centred product). The accumulators and the basis are
    replicated; XLA turns each ``X_b^T Y_b`` into per-device partial products
    and an all-reduce.

    Args:
      source: a :class:`~jaxfactor.sources.RowSource` (``n`` rows of width ``p``).
      n_components: ``k``.
      key: ``jax.random`` key.
      method, n_oversamples, n_iter, block_size: as for :func:`randomized_svd`.
      center: fold the column means in.
      block_rows: rows read per block.
      dtype: working dtype (float32 or float64).
      checkpoint: path of the checkpoint file, or ``None``.
      checkpoint_every: blocks between checkpoints.
      progress: optional ``callback(stage, done_rows, total_rows)``.
      precision: operand precision of the products with each block
        (``'float32'`` default, ``'tf32'``, ``'bf16'``; see
        :func:`randomized_svd`); moments, sums and QR stay in ``dtype``.
      mesh: a ``jax.sharding.Mesh`` from :func:`jaxfactor.sharding.row_mesh`
        to split each block by rows over its devices, or ``None`` (default
        device).

    Returns:
      ``(SVDResult, Moments)``: the SVD (``u`` is ``None``) and the column
      moments (for the total variance) from the first pass.

    Raises:
      ValueError: unknown ``method``/``precision``, or a checkpoint of another run.

    Examples:
      >>> import jax, numpy as np
      >>> from jaxfactor.randomized import randomized_svd_source
      >>> from jaxfactor.sources import ArraySource
      >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
      >>> svd, mom = randomized_svd_source(ArraySource(x), 2, key=jax.random.key(0), block_rows=16)
      >>> svd.vt.shape, int(mom.n_samples), svd.u is None
      ((2, 8), 50, True)
      >>> bool(np.allclose(svd.s, np.linalg.svd(x - x.mean(0), compute_uv=False)[:2], rtol=1e-4))
      True
    """
    accumulate.check_precision(precision)
    n, p = source.n_samples, source.n_features
    params = range_params(n_components, n, p, method=method, n_oversamples=n_oversamples,
                          n_iter=n_iter, block_size=block_size)
    common = dict(key=key, center=center, block_rows=block_rows, dtype=dtype, precision=precision)
    passes = svd_passes(source, n_components, params, mesh=mesh, **common)
    ckpt = as_checkpoint(checkpoint, svd_run(source, n_components, params, **common),
                         checkpoint_every)
    context = run_passes(source, passes, block_rows=block_rows, dtype=dtype, mesh=mesh,
                         progress=progress, checkpoint=ckpt)
    return svd_from_context(context)
