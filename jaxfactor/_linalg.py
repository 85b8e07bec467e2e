"""Dense linear-algebra building blocks shared by every engine.

Everything here is a pure function of ``jax.Array`` inputs and is safe to call
under ``jit``. Nothing validates its input: callers (the estimators) do that
once, at the edge.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "orthonormalize",
    "cholesky_qr2",
    "orthonormalize_against",
    "polar",
    "svd_flip",
    "sign_flip_columns",
    "symmetric_inverse_sqrt",
]


def orthonormalize(a: jax.Array) -> jax.Array:
    """Orthonormal basis of the columns of a tall matrix by Householder QR.

    Args:
      a: ``(m, k)`` float array with ``m >= k``.

    Returns:
      ``(m, k)`` array ``Q`` with ``Q^T Q = I`` and ``span(Q) = span(a)`` when
      ``a`` has full column rank.
    """
    q, _ = jnp.linalg.qr(a, mode="reduced")
    return q


def cholesky_qr2(a: jax.Array) -> jax.Array:
    """Orthonormalise a tall-skinny matrix by two rounds of Cholesky-QR.

    One round computes ``R = chol(A^T A)`` and ``Q = A R^{-1}``; the second
    round repeats it on ``Q`` and brings the loss of orthogonality from
    ``O(eps kappa(A)^2)`` down to ``O(eps)`` for ``kappa(A) < eps^{-1/2}``
    (Fukaya et al., 2014). It costs two Gram products and two triangular
    solves, all matrix-matrix work, which is why it beats Householder QR for
    ``m >> k``. Matrices with ``kappa(a)`` beyond ``eps^{-1/2}`` (about 3e3 in
    float32) or exactly rank deficient should use :func:`orthonormalize`.

    Args:
      a: ``(m, k)`` float array, ``m >= k``.

    Returns:
      ``(m, k)`` array with orthonormal columns spanning ``a``'s column space.
    """
    def one_round(x, shift):
        gram = x.T @ x
        if shift:
            scale = jnp.max(jnp.diag(gram))
            gram = gram + (jnp.finfo(x.dtype).eps * scale) * jnp.eye(gram.shape[0], dtype=x.dtype)
        r = jnp.linalg.cholesky(gram).T
        return jax.scipy.linalg.solve_triangular(r, x.T, trans="T", lower=False).T

    # The shift (one ulp of the largest diagonal entry) only guards the first
    # factorisation against exact rank deficiency; the second round runs on a
    # well-conditioned matrix and needs none.
    return one_round(one_round(a, True), False)


def orthonormalize_against(basis: jax.Array, block: jax.Array) -> jax.Array:
    """Orthonormalise ``block`` against the columns of ``basis`` (block CGS2).

    Two rounds of classical Gram-Schmidt against ``basis`` (the second round
    removes what rounding left after the first), then a QR of the result.

    Args:
      basis: ``(m, j)`` array with orthonormal columns (``j`` may be 0).
      block: ``(m, b)`` array.

    Returns:
      ``(m, b)`` array with orthonormal columns orthogonal to ``basis``.
    """
    for _ in range(2):
        block = block - basis @ (basis.T @ block)
    return orthonormalize(block)


def polar(a: jax.Array) -> jax.Array:
    """Orthogonal polar factor ``U V^T`` of ``a = U S V^T``.

    For a tall matrix the thin QR ``a = Q R`` is taken first so that the SVD
    runs on the small ``(k, k)`` factor: ``polar(a) = Q polar(R)``. The polar
    factor is the orthonormal matrix nearest to ``a`` in Frobenius norm.

    Args:
      a: ``(m, k)`` float array with ``m >= k``.

    Returns:
      ``(m, k)`` array with orthonormal columns.
    """
    m, k = a.shape
    if m > k:
        q, r = jnp.linalg.qr(a, mode="reduced")
        u, _, vt = jnp.linalg.svd(r, full_matrices=False)
        return q @ (u @ vt)
    u, _, vt = jnp.linalg.svd(a, full_matrices=False)
    return u @ vt


def svd_flip(u: jax.Array | None, vt: jax.Array) -> tuple[jax.Array | None, jax.Array]:
    """Deterministic signs for singular vectors, decided by the right vectors.

    Each row of ``vt`` is multiplied by the sign of its largest-magnitude
    entry, so that entry is positive (scikit-learn's PCA convention); the
    matching column of ``u`` gets the same sign so ``u diag(s) vt`` is
    unchanged.

    Args:
      u: ``(n, k)`` left singular vectors, or ``None``.
      vt: ``(k, p)`` right singular vectors.

    Returns:
      ``(u, vt)`` with flipped signs (``u`` stays ``None`` if given so).
    """
    idx = jnp.argmax(jnp.abs(vt), axis=1)
    signs = jnp.sign(vt[jnp.arange(vt.shape[0]), idx])
    signs = jnp.where(signs == 0, 1, signs).astype(vt.dtype)
    vt = vt * signs[:, None]
    if u is not None:
        u = u * signs[None, :]
    return u, vt


def sign_flip_columns(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Flip each column of ``a`` so that its largest-magnitude entry is positive.

    Args:
      a: ``(m, k)`` array.

    Returns:
      ``(flipped, signs)`` with ``signs`` a ``(k,)`` array of +-1.
    """
    _, vt = svd_flip(None, a.T)
    signs = jnp.sign(jnp.sum(vt * a.T, axis=1))
    signs = jnp.where(signs == 0, 1, signs)
    return vt.T, signs


def symmetric_inverse_sqrt(a: jax.Array, eps: float | None = None) -> jax.Array:
    """``(A)^{-1/2}`` of a symmetric positive (semi)definite matrix by ``eigh``.

    Eigenvalues below ``eps * max_eigenvalue`` are clipped to that floor
    (``eps`` defaults to the dtype's machine epsilon) so the result is finite.

    Args:
      a: ``(k, k)`` symmetric array.

    Returns:
      ``(k, k)`` symmetric array ``V diag(lambda^{-1/2}) V^T``.
    """
    w, v = jnp.linalg.eigh(a)
    floor = (jnp.finfo(a.dtype).eps if eps is None else eps) * jnp.max(w)
    w = jnp.maximum(w, floor)
    return (v * jax.lax.rsqrt(w)[None, :]) @ v.T
