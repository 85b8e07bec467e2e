"""Derived floating-point tolerances for the tests.

Every bound a test compares a floating-point result against comes from here (or
from a formula written beside the assertion in terms of these): the dtype's unit
roundoff, the problem size and, where it matters, the conditioning. A constant
that happened to pass on one CPU fails on the next, whose BLAS and XLA kernels
sum in another order.

The model is the probabilistic rounding-error analysis of Higham & Mary
("A new approach to probabilistic rounding error analysis", SISC 2019): an inner
product or sum of ``n`` terms computed in precision ``u`` has relative error at
most ``lambda * sqrt(n) * u`` (with respect to the sum of the absolute values of
the terms) with probability at least ``1 - 2 exp(-lambda^2 / 2)``. The worst case
is ``n * u``; blocked and pairwise summation (what BLAS and XLA do) are better
than either. ``LAMBDA = 6`` makes a failure of one bound a 1e-8 event.

Perturbation theory turns those into bounds on derived quantities:

* Weyl: an eigenvalue of a symmetric matrix moves by at most ``||E||_2``.
* Davis-Kahan sin-theta: an invariant subspace moves by an angle of at most
  ``||E||_2 / gap``, ``gap`` the distance of its eigenvalues to the rest.
* Singular values of ``X`` move by at most ``||E||_2`` (Weyl for ``[0 X; X^T 0]``),
  so the spectrum's relative accuracy is ``||E|| / ||X||`` times the
  condition ``||X|| / sigma``.
"""
from __future__ import annotations

import math

import numpy as np

LAMBDA = 6.0
"""Confidence parameter of the probabilistic bounds (failure probability <=
``2 exp(-LAMBDA^2 / 2)`` ~ 3e-8 per bound)."""


def unit_roundoff(dtype=np.float32) -> float:
    """``u = eps / 2`` of a floating dtype (float32: 5.96e-8, float64: 1.11e-16)."""
    return float(np.finfo(np.dtype(dtype)).eps) / 2


def eps(dtype=np.float32) -> float:
    """Machine epsilon of a floating dtype (float32: 1.19e-7, float64: 2.22e-16)."""
    return float(np.finfo(np.dtype(dtype)).eps)


def gamma(n: int, dtype=np.float32) -> float:
    """Probabilistic relative error of a length-``n`` sum or inner product:
    ``LAMBDA * sqrt(n) * u`` (Higham & Mary 2019, Theorem 3.1), relative to the
    sum of the absolute values of the terms."""
    return LAMBDA * math.sqrt(max(int(n), 1)) * unit_roundoff(dtype)


def product_error(a, b, dtype=np.float32) -> float:
    """Bound on ``||fl(A B) - A B||_F`` for ``A (m, n)`` and ``B (n, q)`` computed
    in ``dtype``: ``gamma(n) * ||A||_F ||B||_F`` (each entry's error is at most
    ``gamma(n) * sum_k |a_ik| |b_kj|``; Cauchy-Schwarz)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return gamma(a.shape[-1], dtype) * float(np.linalg.norm(a) * np.linalg.norm(b))


def gram_error(x, dtype=np.float32, *, centred: bool = True) -> float:
    """Bound on ``||fl(X_c^T X_c) - X_c^T X_c||_2`` for ``X (n, p)`` in ``dtype``:
    ``gamma(n) * ||X_c||_F^2``, plus the error of forming the mean (``gamma(n)``
    on ``||X||_F^2`` once more) when the centring is folded into the product."""
    x = np.asarray(x, np.float64)
    xc = x - x.mean(axis=0) if centred else x
    bound = gamma(x.shape[0], dtype) * float(np.sum(xc**2))
    if centred:
        bound += gamma(x.shape[0], dtype) * float(np.sum(x**2))
    return bound


def covariance_error(x, dtype=np.float32) -> float:
    """:func:`gram_error` divided by ``n - 1``: the bound on the covariance."""
    return gram_error(x, dtype) / max(np.asarray(x).shape[0] - 1, 1)


def svd_error(x, dtype=np.float32) -> float:
    """Bound on ``||E||_2`` for a backward-stable SVD/QR (Householder) of ``X
    (n, p)`` in ``dtype``: ``gamma(n * p) * ||X||_F`` (Higham, "Accuracy and
    Stability", Thm 19.4: ``||dA||_F <= c m n u ||A||_F`` in the worst case; the
    probabilistic form replaces ``m n`` by its square root)."""
    x = np.asarray(x, np.float64)
    return gamma(x.shape[0] * x.shape[1], dtype) * float(np.linalg.norm(x))


def angle_bound_deg(perturbation: float, gap: float) -> float:
    """Davis-Kahan: the largest angle (degrees) an invariant subspace can move
    under a symmetric perturbation of norm ``perturbation`` when its eigenvalues
    are ``gap`` away from the rest (``sin theta <= ||E|| / gap``)."""
    if gap <= 0:
        return 90.0
    return math.degrees(math.asin(min(1.0, perturbation / gap)))


def eigengap(values, k: int) -> float:
    """``values[k-1] - values[k]`` of a descending spectrum (``inf`` when
    ``k == len(values)``): the gap that guards the top-``k`` subspace."""
    values = np.asarray(values, np.float64)
    return float(values[k - 1] - values[k]) if k < len(values) else math.inf


def min_gap(values, k: int) -> float:
    """Smallest distance between the first ``k`` values of a descending spectrum
    and any other value: what guards each of the top-``k`` vectors one by one."""
    values = np.asarray(values, np.float64)
    gaps = np.abs(values[:k, None] - values[None, :])
    np.fill_diagonal(gaps[:, :k], np.inf)
    return float(gaps.min())


def blocked_gram_error(x, block_rows: int | None = None, dtype=np.float32) -> np.ndarray:
    """Entrywise bound on ``|fl(X_c^T X_c) - X_c^T X_c|`` for ``X (n, p)`` when, as
    in :func:`jaxfactor.accumulate.moments` (and the lift's accumulator), each
    block of ``b = block_rows`` rows (default: all of them) is centred on its own
    mean and multiplied, and the ``m = ceil(n / b)`` blocks are combined by
    Chan's rule (``m2_a + m2_b + f dc dc^T``); numpy's centre-then-multiply is
    the one-block case.

    Entry ``(i, j)``: ``g (||x_i|| ||x_j|| + 2 (|mu_i| s_j + s_i |mu_j|))`` with
    ``g = gamma(b) + gamma(m)``, ``x_i`` the centred column and ``s_j =
    sqrt(n SSB_j)``, ``SSB`` the between-block sum of squares. The block
    products and the sum over blocks are Cauchy-Schwarz on the centred columns;
    rounding the centring enters only at second order (centred columns sum to
    zero), but the block means' rounding (``|eps| <= 2 g |mu|`` for a difference
    of two) reaches the merge term ``f dc dc^T`` at first order, with ``sum f
    |dc_j| <= s_j`` (Cauchy-Schwarz, ``sum f <= n``). Much tighter than
    :func:`gram_error` when the mean is large next to the spread, which is what
    block centring is for."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    b = n if block_rows is None else int(block_rows)
    mu = x.mean(axis=0)
    a = np.linalg.norm(x - mu, axis=0)
    blocks = np.split(x, range(b, n, b))
    s = np.sqrt(n * sum(len(blk) * (blk.mean(axis=0) - mu) ** 2 for blk in blocks))
    g = gamma(b, dtype) + gamma(len(blocks), dtype)
    m = np.abs(mu)
    return g * (np.outer(a, a) + 2 * (np.outer(m, s) + np.outer(s, m)))


def assert_within(actual, desired, bound) -> None:
    """Assert ``|actual - desired| <= bound`` elementwise, in float64, with
    ``bound`` a scalar or an array broadcast against the difference (one bound
    per entry, row or column: what ``assert_allclose`` cannot take); the message
    gives the worst error and its ratio to its bound."""
    err = np.abs(np.asarray(actual, np.float64) - np.asarray(desired, np.float64))
    bound = np.broadcast_to(np.asarray(bound, np.float64), err.shape)
    ratio = np.max(err / bound, initial=0.0)
    assert np.all(err <= bound), (f"|actual - desired| up to {np.max(err):.3g}, {ratio:.3g} x "
                                  f"its bound (bound {np.min(bound):.3g} .. {np.max(bound):.3g})")


def polar_error(a, error) -> np.ndarray:
    """First-order entrywise bound on the change of the orthonormal polar factor
    ``Q = U V^T`` of ``A = U diag(s) V^T`` (``(m, k)``, ``m >= k``, full rank)
    when each entry of ``A`` moves by at most ``error`` (an ``(m, k)`` array or
    a scalar).

    The derivative (Higham, "Functions of Matrices", section 8.1; Li 1995):
    ``dQ = U Omega V^T + (I - U U^T) dA V diag(1/s) V^T`` with ``Omega_ij =
    (F_ij - F_ji) / (s_i + s_j)``, ``F = U^T dA V``; so the amplification is
    about ``2 / (s_k + s_{k-1})`` in the rotations and ``1 / s_k`` out of the span
    (Li's normwise bounds) and nothing in the symmetric directions. For ``m k <=
    4096`` the bound is ``sum_ij |dQ_pq / dA_ij| error_ij`` with the Jacobian
    formed; above, absolute values taken term by term (``|F| <= |U|^T E |V|``,
    ``|I - U U^T| <= I + |U| |U|^T``): ``|U| [(G + G^T) / (s_i + s_j)] |V|^T + (I +
    |U| |U|^T) E |W|`` with ``G = |U|^T E |V|`` and ``W = V diag(1/s) V^T``, in ``O(m
    k^2)`` (a few times larger). What FastICA's symmetric decorrelation and SCA's
    polar steps amplify their inputs' rounding by."""
    a = np.asarray(a, np.float64)
    m, k = a.shape
    e = np.broadcast_to(np.asarray(error, np.float64), (m, k))
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    if m * k <= 4096:
        v = vt.T
        f = np.einsum("ai,bj->abij", u, v)                   # U^T e_a e_b^T V
        omega = (f - f.transpose(0, 1, 3, 2)) / (s[:, None] + s[None, :])
        jac = np.einsum("pi,abij,qj->abpq", u, omega, v)
        jac += np.einsum("pa,bq->abpq", np.eye(m) - u @ u.T, (v / s) @ vt)
        return np.einsum("abpq,ab->pq", np.abs(jac), e)
    au, av = np.abs(u), np.abs(vt.T)
    g = au.T @ e @ av
    rot = au @ ((g + g.T) / (s[:, None] + s[None, :])) @ av.T
    ew = e @ np.abs((vt.T / s) @ vt)
    return rot + ew + au @ (au.T @ ew)


def orthonormality_error(m: int, k: int, dtype=np.float32) -> float:
    """Bound on ``||Q^T Q - I||_F`` for the ``(m, k)`` orthonormal factor of a
    Householder QR (or the singular vectors of an SVD) computed in ``dtype``:
    ``2 d + d^2`` with ``d = sqrt(k) gamma(m k)`` the distance of ``Q`` to an
    exactly orthonormal matrix (Higham, "Accuracy and Stability", Thm 19.4:
    ``||Q - Q_exact||_F <= sqrt(k) gamma_{mk}``, probabilistic form)."""
    d = math.sqrt(k) * gamma(m * k, dtype)
    return 2 * d + d * d


def rayleigh_ritz_error(x, basis_size: int, dtype=np.float32, *, centred: bool = True,
                        block_rows: int | None = None) -> float:
    """Bound on the backward error ``||E||_2`` of the Rayleigh-Ritz step of a
    randomized SVD of ``X (n, p)`` (:mod:`jaxfactor.randomized`): the singular
    values and vectors it returns are those of ``(X_c + E) Q`` for an orthonormal
    ``(p, l)`` basis ``Q``, ``l = basis_size``. Terms: forming ``X_c Q`` with the
    mean folded in (``2 gamma(p) ||X||_F ||Q||_F``, ``||Q||_F = sqrt(l)``; one
    ``gamma(p)`` without centring), the distance of the computed basis to an
    orthonormal one (``||X_c||_2 sqrt(l) gamma(p l)``) and the QR and SVD of the
    ``(n, l)`` product (``gamma(n l) ||X_c||_F``, as :func:`svd_error`; over row
    blocks of ``b = block_rows``, the tall-skinny QR's ``ceil(n / b)`` folds of a
    ``(b + l, l)`` stack, ``gamma((b + l) l) ||X_c||_F`` each). Weyl then bounds
    each singular value's move by it, Wedin each singular subspace's by it over
    the gap."""
    x = np.asarray(x, np.float64)
    n, p = x.shape
    xc = x - x.mean(axis=0) if centred else x
    fold = 2 if centred else 1
    l = int(basis_size)
    qr = (gamma(n * l, dtype) if block_rows is None
          else -(-n // int(block_rows)) * gamma((int(block_rows) + l) * l, dtype))
    return (fold * gamma(p, dtype) * float(np.linalg.norm(x)) * math.sqrt(l)
            + float(np.linalg.norm(xc, 2)) * math.sqrt(l) * gamma(p * l, dtype)
            + qr * float(np.linalg.norm(xc)))


def normal_operator_error(x, dtype=np.float32, *, centred: bool = True) -> float:
    """Bound on ``||fl(X_c^T (X_c z)) - X_c^T X_c z|| / ||z||`` for ``X (n, p)``
    with the mean folded into both products (the step of a power or Krylov
    iteration, :func:`jaxfactor.accumulate.centred_matmul` and ``rmatmul``):
    ``2 (gamma(p) + gamma(n)) ||X||_F ||X_c||_2`` (each product ``gamma`` of its
    length on ``||X||_F`` times the other factor, twice with the mean's
    correction; ``||X_c z|| <= ||X_c||_2 ||z||``). Davis-Kahan over the gap of
    ``X_c^T X_c`` then bounds how far rounding lets a range finder's subspace
    settle from the exact one."""
    x = np.asarray(x, np.float64)
    n, p = x.shape
    xc = x - x.mean(axis=0) if centred else x
    fold = 2 if centred else 1
    return fold * (gamma(p, dtype) + gamma(n, dtype)) * float(np.linalg.norm(x)) * float(np.linalg.norm(xc, 2))


def randomized_angle_bound_deg(x, k: int, basis_size: int, dtype=np.float32, *, centred: bool = True,
                               block_rows: int | None = None) -> float:
    """Largest principal angle (degrees) that rounding can put between the top-``k``
    right singular subspace of ``X_c`` and the one a randomized SVD with a basis
    of ``basis_size`` columns computes (:mod:`jaxfactor.randomized`), beyond the
    range finder's own error in exact arithmetic (which a test adds, e.g. from a
    float64 peer run): Davis-Kahan for the range finder's applications of
    ``X_c^T X_c`` (:func:`normal_operator_error` over the gap ``lambda_k -
    lambda_{k+1}`` of ``X_c^T X_c``) plus Wedin for the Rayleigh-Ritz step
    (:func:`rayleigh_ritz_error` over ``sigma_k - sigma_{k+1}``)."""
    x = np.asarray(x, np.float64)
    xc = x - x.mean(axis=0) if centred else x
    s = np.linalg.svd(xc, compute_uv=False)
    return (angle_bound_deg(normal_operator_error(x, dtype, centred=centred), eigengap(s ** 2, k))
            + angle_bound_deg(rayleigh_ritz_error(x, basis_size, dtype, centred=centred,
                                                  block_rows=block_rows), eigengap(s, k)))


def blocked_moments_error(x, block_rows: int | None = None, dtype=np.float32):
    """``(mean, variance)`` per-column bounds for Chan's blockwise moments of ``X
    (n, p)`` in blocks of ``b = block_rows`` rows (:func:`jaxfactor.accumulate.moments`).

    The mean: each block's sum (``gamma(b)`` on ``sum |x|``), the merges of the
    ``m = ceil(n / b)`` block means (``gamma(m)``) and the division:
    ``(gamma(b) + gamma(m) + u) mean|x|``. The variance (``ddof=1``): the diagonal
    of :func:`blocked_gram_error` over ``n - 1``, plus the second-order term that
    leaves out: centring a block on a mean off by ``eps`` adds ``b eps^2`` to its
    sum of squares (``n eps^2`` over all blocks), not negligible when the mean is
    large next to the spread (``gamma(b) |mean| ~ sigma``)."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    b = n if block_rows is None else int(block_rows)
    m = -(-n // b)
    mean = (gamma(b, dtype) + gamma(m, dtype) + unit_roundoff(dtype)) * np.abs(x).mean(axis=0)
    var = (np.diag(blocked_gram_error(x, b, dtype)) + n * mean ** 2) / max(n - 1, 1)
    return mean, var


def network_error(fan_ins, dtype=np.float32) -> float:
    """Relative forward error of a feed-forward network (a torch generator, a
    feature extractor) evaluated in ``dtype``, relative to the magnitude of the
    tensor it computes: ``sum gamma(n_l)`` over the stages on its longest path,
    ``n_l`` the fan-in of a matmul or convolution (terms per output, a bias
    counted as one more) and 1 for an elementwise stage (a normalisation, an
    activation, a modulation: a few roundings, ``gamma(1) = LAMBDA u``).

    First-order model: each stage adds its own inner products' error (Higham &
    Mary) and passes the relative error of its input on unchanged (stages of
    relative condition about 1: no catastrophic cancellation, Lipschitz
    activations). Two evaluations that differ only in how the kernels block
    their sums (batch size, CPU, BLAS) are ``2 network_error(...)`` apart,
    times the tensor's magnitude (e.g. its largest entry)."""
    return float(sum(gamma(n, dtype) for n in fan_ins))
