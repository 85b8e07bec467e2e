"""Picard-O: maximum-likelihood ICA under an orthogonal constraint (the kernel).

Ablin, Cardoso & Gramfort, "Faster independent component analysis by
preconditioning with Hessian approximations" (IEEE TSP 2018) and "Faster ICA
under orthogonal constraint" (ICASSP 2018). On whitened data ``Z`` (``(n, k)``,
identity covariance) it minimises over orthogonal ``W``

    L(W) = E[ sum_i G(y_i) ],   y = W z,

with the contrast ``G`` of FastICA (``logcosh``: ``G(u) = log cosh(a u) / a``;
``exp``: ``G(u) = 1 - exp(-u^2 / 2)``) whose derivative ``psi = G'`` is FastICA's
``g``. Moving on the orthogonal group by ``W <- R(E) W`` with ``E`` skew
(``R`` the retraction, ``expm`` or Cayley), the relative gradient is the skew
part of ``M = E[psi(y) y^T]``, ``grad = (M - M^T) / 2``, and the Hessian in the
Frobenius metric on skew matrices is approximated (independent sources) by
``E -> (h / 2) o E`` with

    h_ij = E[psi'(y_i)] E[y_j^2] + E[psi'(y_j)] E[y_i^2] - E[y_i psi(y_i)] - E[y_j psi(y_j)],

clipped below at ``lambda_min``. L-BFGS (memory ``m``) on skew directions uses
``2 / h`` as its initial inverse Hessian; a backtracking line search on the
retraction (``alpha = 1, 1/2, ...``) accepts only a descent; when it fails, the
memory is flushed and the preconditioned gradient ``-2 grad / h`` is searched
instead. The loop stops when ``max |grad_ij| < tol`` (the Riemannian gradient
norm), at ``max_iter``, or when no descent is found even along the gradient.

float32: the objective change of a trial step is the sum of the elementwise
change of ``G`` (the difference of two float32 sums of ``n k`` terms cannot
resolve it near convergence), and ``W`` is re-orthonormalised (a Newton-Schulz
step towards its polar factor, after the line search so that the projection's
rounding never decides a trial) every ``reorthonormalize_every`` steps.

One step costs two ``(k, k) x (k, n)``-sized products -- ``Y = W Z^T`` for each
line-search trial (usually one) and ``psi(Y) Y^T`` -- plus ``O(k^3)``: the
retraction and the L-BFGS recursion (``4 m`` ``k x k`` inner products). With
``Z`` row-sharded over a mesh, both products split by rows (the second is a
row sum); padded rows are zero and the means divide by ``n_valid``.

Kernels: :func:`picard_o` (solver), :func:`ica_criteria` (objective,
Riemannian gradient norm and FastICA's fixed-point change at any orthogonal
``W``, for either solver's result).
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._linalg import full_float32, symmetric_decorrelation
from .ica import _as_count, _contrast, _true_mean
from ._status import iteration_status

__all__ = ["PicardResult", "ICACriteria", "PICARD_CONTRASTS", "RETRACTIONS", "picard_o",
           "ica_criteria"]

PICARD_CONTRASTS = ("logcosh", "exp")
"""Contrasts Picard-O minimises (densities of super-Gaussian sources)."""
RETRACTIONS = ("cayley", "expm")


class PicardResult(NamedTuple):
    """Result of :func:`picard_o`.

    Attributes:
      w: ``(k, k)`` orthogonal unmixing matrix of the whitened data; the
        sources are ``Z W^T``.
      n_iter: ``()`` int32, steps taken.
      converged: ``()`` bool, ``grad_norm < tol``.
      grad_norm: ``()`` ``max_ij |grad_ij|`` of the Riemannian gradient at ``w``.
      objective: ``()`` ``E[sum_i G(y_i)]`` at ``w``.
      change: ``()`` FastICA's fixed-point change at ``w`` (see
        :func:`ica_criteria`).
      n_fallbacks: ``()`` int32, steps whose L-BFGS direction found no descent
        (memory flushed, the preconditioned gradient searched instead).
      stalled: ``()`` bool, the loop stopped because not even the gradient
        direction descended (the float32 floor).
      status: ``()`` int32, a :mod:`jaxfactor._status` code.
    """

    w: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    grad_norm: jax.Array
    objective: jax.Array
    change: jax.Array
    n_fallbacks: jax.Array
    stalled: jax.Array
    status: jax.Array


class ICACriteria(NamedTuple):
    """Convergence criteria of an orthogonal unmixing (:func:`ica_criteria`).

    Attributes:
      objective: ``()`` ``E[sum_i G(y_i)]``.
      grad_norm: ``()`` ``max_ij |grad_ij|``, ``grad = skew(E[psi(y) y^T])``.
      change: ``()`` ``max_i | |<w_i^+, w_i>| - 1 |`` for one FastICA parallel
        step ``W^+`` from ``W``.
    """

    objective: jax.Array
    grad_norm: jax.Array
    change: jax.Array


def _contrast_value(fun, y, alpha):
    """``G(y)`` elementwise; ``G(0) = 0`` so zero padded rows add nothing."""
    if fun == "logcosh":
        return _value_and_factor(fun, y, alpha)[0]
    if fun == "exp":
        return -jnp.expm1(-0.5 * y * y)
    if fun == "cube":
        return 0.25 * (y * y) * (y * y)
    raise ValueError(f"fun must be one of {PICARD_CONTRASTS}, got {fun!r}")


def _value_and_factor(fun, y, alpha):
    """``(G(y), e)`` with the one exponential ``e`` the score reuses
    (:func:`_score_from`): ``exp(-2 a |y|)`` (logcosh), ``exp(-y^2 / 2)`` (exp)."""
    if fun == "logcosh":
        u = alpha * jnp.abs(y)
        e = jnp.exp(-2 * u)
        return (u + jnp.log1p(e) - jnp.log(jnp.asarray(2, y.dtype))) / alpha, e
    e = jnp.exp(-0.5 * y * y)
    return 1 - e, e


def _score_from(fun, y, e, alpha):
    """:func:`_score` from :func:`_value_and_factor`'s ``e``, without another
    transcendental: ``tanh(a y) = sign(y) (1 - e) / (1 + e)``."""
    if fun == "logcosh":
        t = jnp.sign(y) * (1 - e) / (1 + e)
        return t, alpha * (1 - t * t), alpha
    return y * e, (1 - y * y) * e, 1.0


def _moments(fun, y_t, alpha, n_valid, e_t=None):
    """At sources ``y_t`` (``(k, n)``): ``M = E[psi(y) y^T]`` and ``E[psi'(y)]``,
    ``E[y^2]`` per source, the means over the ``n_valid`` true samples (``e_t``:
    the factor of :func:`_value_and_factor`, when already computed)."""
    count = n_valid.astype(y_t.dtype)
    if e_t is None:
        psi, kappa = _contrast(fun, y_t, alpha, n_valid, axis=1)
    else:
        psi, dpsi, dpsi0 = _score_from(fun, y_t, e_t, alpha)
        kappa = _true_mean(dpsi, dpsi0, n_valid, axis=1)
    m = psi @ y_t.T / count                                  # the row sum over samples
    sig2 = jnp.sum(y_t * y_t, axis=1) / count
    return m, kappa, sig2


def _skew(m):
    return 0.5 * (m - m.T)


def _hessian_approx(m, kappa, sig2, lambda_min):
    """``h_ij`` of the module docstring, clipped at ``lambda_min``."""
    c = jnp.diagonal(m)
    h = kappa[:, None] * sig2[None, :] + sig2[:, None] * kappa[None, :] - c[:, None] - c[None, :]
    return jnp.maximum(h, lambda_min)


def _fixed_point_change(m, kappa, decorrelation="eigh"):
    """FastICA's change for one parallel step from an orthogonal ``W``.

    ``W^+ = E[g(y) z^T] - diag(E[g'(y)]) W = (M - diag(kappa)) W`` because
    ``z = W^T y``; after the symmetric decorrelation ``W^+ W^T`` is the polar
    factor of ``M - diag(kappa)``, so the change needs no pass over the data.
    """
    q = symmetric_decorrelation(m - jnp.diag(kappa), decorrelation)
    return jnp.max(jnp.abs(jnp.abs(jnp.diagonal(q)) - 1))


def _polar_start(w, decorrelation):
    """Polar factor of a starting matrix. The ``'eigh'`` route, ``(W W^T)^{-1/2} W``,
    squares the condition number: a Gaussian ``k x k`` start (``cond ~ k`` and beyond)
    then loses orthogonality by ``eps cond^2`` in float32, which the retraction keeps;
    the SVD's ``U V^T`` is orthogonal to rounding at any condition."""
    if decorrelation == "eigh":
        u, _, vt = jnp.linalg.svd(w, full_matrices=False)
        return u @ vt
    return symmetric_decorrelation(w, decorrelation)


def _retract(a, retraction):
    """Orthogonal ``R(A)`` for a skew ``A``: ``expm(A)`` or the Cayley transform
    ``(I - A/2)^{-1} (I + A/2)`` (one LU solve)."""
    if retraction == "expm":
        return jax.scipy.linalg.expm(a)
    if retraction == "cayley":
        eye = jnp.eye(a.shape[0], dtype=a.dtype)
        return jnp.linalg.solve(eye - 0.5 * a, eye + 0.5 * a)
    raise ValueError(f"retraction must be one of {RETRACTIONS}, got {retraction!r}")


@full_float32
@partial(jax.jit, static_argnames=("fun", "decorrelation"))
def ica_criteria(white: jax.Array, w: jax.Array, *, fun: str = "logcosh", alpha=1.0,
                 n_valid=None, decorrelation: str = "eigh") -> ICACriteria:
    """Objective, Riemannian gradient norm and FastICA's fixed-point change of an
    orthogonal unmixing ``W`` of whitened data (one pass over the data).

    Both criteria are zero exactly at a stationary point of
    ``L(W) = E[sum_i G(y_i)]`` on the orthogonal group (``y = W z``): FastICA's
    fixed point ``W^+ ~ W`` and ``skew(E[psi(y) y^T]) = 0`` are the same
    condition, measured on two scales.

    Args:
      white: ``(n, k)`` whitened data, rows beyond ``n_valid`` zero.
      w: ``(k, k)`` orthogonal matrix (e.g. :attr:`ICAResult.w`).
      fun: ``'logcosh'``, ``'exp'`` or ``'cube'`` (``G(u) = u^4 / 4``) (static).
      alpha: logcosh constant.
      n_valid: true row count (``None``: all).
      decorrelation: ``'eigh'`` or ``'newton-schulz'`` for the change (static).

    Returns:
      :class:`ICACriteria`.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.picard import ica_criteria
      >>> z = np.random.default_rng(0).laplace(size=(4000, 2)).astype(np.float32)
      >>> z = (z - z.mean(0)) / z.std(0)
      >>> crit = ica_criteria(z, np.eye(2, dtype=np.float32))
      >>> bool(crit.grad_norm < 0.05), bool(crit.change < 1e-2), crit.objective.shape
      (True, True, ())
    """
    dtype = white.dtype
    n_valid = _as_count(n_valid, white.shape[0])
    alpha = jnp.asarray(alpha, dtype)
    y_t = w.astype(dtype) @ white.T
    m, kappa, _ = _moments(fun, y_t, alpha, n_valid)
    objective = jnp.sum(_contrast_value(fun, y_t, alpha)) / n_valid.astype(dtype)
    return ICACriteria(objective, jnp.max(jnp.abs(_skew(m))),
                       _fixed_point_change(m, kappa, decorrelation))


class _State(NamedTuple):
    w: jax.Array          # (k, k)
    y_t: jax.Array        # (k, n) sources at w
    g_t: jax.Array        # (k, n) G(y_t)
    grad: jax.Array       # (k, k) skew
    h: jax.Array          # (k, k) clipped Hessian approximation
    m: jax.Array          # (k, k) E[psi(y) y^T]
    kappa: jax.Array      # (k,)
    s_mem: jax.Array      # (m, k, k) steps, newest last
    y_mem: jax.Array      # (m, k, k) gradient changes
    rho_mem: jax.Array    # (m,) 1 / <s, y>
    n_mem: jax.Array      # () valid memory pairs (the last n_mem)
    it: jax.Array
    grad_norm: jax.Array
    n_fallbacks: jax.Array
    stalled: jax.Array


def _lbfgs_direction(grad, h, s_mem, y_mem, rho_mem, n_mem):
    """``-H grad`` by the L-BFGS two-loop recursion (Nocedal & Wright, alg. 7.4)
    with ``H_0 = 2 / h`` elementwise and Frobenius inner products."""
    mem = s_mem.shape[0]

    def back(j, carry):
        q, alphas = carry
        i = mem - 1 - j
        valid = j < n_mem
        a = jnp.where(valid, rho_mem[i] * jnp.vdot(s_mem[i], q), 0)
        return q - a * y_mem[i], alphas.at[i].set(a)

    q, alphas = jax.lax.fori_loop(0, mem, back, (grad, jnp.zeros((mem,), grad.dtype)))
    r = 2 * q / h

    def forward(i, r):
        valid = i >= mem - n_mem
        b = rho_mem[i] * jnp.vdot(y_mem[i], r)
        return r + jnp.where(valid, alphas[i] - b, 0) * s_mem[i]

    return -jax.lax.fori_loop(0, mem, forward, r)


@full_float32
@partial(jax.jit, static_argnames=("fun", "m", "retraction", "decorrelation"))
def picard_o(white: jax.Array, w_init: jax.Array, *, fun: str = "logcosh", alpha=1.0,
             tol=1e-4, max_iter: int = 500, n_valid=None, m: int = 7, ls_tries: int = 10,
             lambda_min=0.01, retraction: str = "cayley", reorthonormalize_every: int = 25,
             decorrelation: str = "eigh") -> PicardResult:
    """Picard-O (Ablin, Cardoso & Gramfort 2018) on whitened data, one jitted
    ``lax.while_loop``: preconditioned L-BFGS on the orthogonal group (module
    docstring), from the polar factor of ``w_init``, until the Riemannian
    gradient's largest entry is below ``tol``.

    Args:
      white: ``(n, k)`` float whitened data (zero mean, identity covariance);
        rows beyond ``n_valid`` must be zero (padding to a multiple of a mesh).
      w_init: ``(k, k)`` starting matrix (full rank; its polar factor is used).
      fun: ``'logcosh'`` or ``'exp'`` (static; :data:`PICARD_CONTRASTS`).
      alpha: logcosh constant (``G(u) = log cosh(alpha u) / alpha``).
      tol: tolerance on ``max_ij |grad_ij|`` (traced).
      max_iter: step cap (traced).
      n_valid: number of true rows (``None``: all ``n``).
      m: L-BFGS memory (static).
      ls_tries: line-search trials per direction (``alpha = 1, 1/2, ...``).
      lambda_min: floor of the Hessian approximation.
      retraction: ``'cayley'`` (one LU solve) or ``'expm'`` (Pade, static).
      reorthonormalize_every: steps between polar re-orthonormalisations of ``W``.
      decorrelation: ``'eigh'`` or ``'newton-schulz'`` for the polar factor of
        ``w_init`` and the final fixed-point change (static).

    Returns:
      :class:`PicardResult`.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.picard import picard_o
      >>> from jaxfactor.whitening import whiten
      >>> s = np.random.default_rng(0).laplace(size=(2000, 3)).astype(np.float32)
      >>> white = whiten(s @ np.random.default_rng(1).normal(size=(3, 3)).astype(np.float32), 3).white
      >>> res = picard_o(white, np.eye(3, dtype=np.float32))
      >>> bool(res.converged), bool(np.allclose(res.w @ res.w.T, np.eye(3), atol=1e-5))
      (True, True)
      >>> bool(res.grad_norm < 1e-4)
      True
    """
    if fun not in PICARD_CONTRASTS:
        raise ValueError(f"picard_o's fun must be one of {PICARD_CONTRASTS}, got {fun!r}")
    dtype = white.dtype
    n, k = white.shape
    n_valid = _as_count(n_valid, n)
    count = n_valid.astype(dtype)
    alpha = jnp.asarray(alpha, dtype)
    tol = jnp.asarray(tol, dtype)
    lambda_min = jnp.asarray(lambda_min, dtype)
    ls_tries = jnp.asarray(ls_tries, jnp.int32)
    # samples on the minor axis, as in the fixed point: both products contract it
    white_t = jax.lax.optimization_barrier(white.T)

    def line_search(st, direction, tries):
        """Backtracking on ``R(a D) W``: accept the first ``a = 1, 1/2, ...`` whose
        summed elementwise change of ``G`` is negative. Returns ``(ok, a, W, Y, G(Y), e)``."""

        def cond(ls):
            i, ok = ls[0], ls[1]
            return (~ok) & (i < tries)

        def body(ls):
            i, _, a = ls[:3]
            w_new = _retract(a * direction, retraction) @ st.w
            y_new = w_new @ white_t
            g_new, e_new = _value_and_factor(fun, y_new, alpha)
            delta = jnp.sum(g_new - st.g_t) / count
            ok = (delta < 0) & jnp.isfinite(delta)
            return i + 1, ok, jnp.where(ok, a, a / 2), w_new, y_new, g_new, e_new

        ls = (jnp.zeros((), jnp.int32), jnp.zeros((), bool), jnp.ones((), dtype), st.w, st.y_t,
              st.g_t, jnp.zeros_like(st.y_t))
        return jax.lax.while_loop(cond, body, ls)[1:]

    def reorthonormalize(w, *_):
        """One Newton-Schulz step ``W <- 1.5 W - 0.5 W W^T W`` (the polar factor to
        second order in the drift ``W W^T - I``) and the sources at it."""
        w = 1.5 * w - 0.5 * (w @ w.T) @ w
        y = w @ white_t
        return (w, y) + _value_and_factor(fun, y, alpha)

    def cond(st: _State):
        return (st.it < max_iter) & (st.grad_norm >= tol) & (~st.stalled)

    def body(st: _State):
        reortho = (st.it + 1) % reorthonormalize_every == 0
        d = _lbfgs_direction(st.grad, st.h, st.s_mem, st.y_mem, st.rho_mem, st.n_mem)
        d_grad = -2 * st.grad / st.h
        # an L-BFGS direction that is not a descent direction is replaced at once
        descent = jnp.vdot(d, st.grad) < 0
        d = jnp.where(descent, d, d_grad)
        ok1, a1, w1, y1, g1, e1 = line_search(st, d, ls_tries)
        # the fall-back search runs zero trials when the first one succeeded
        ok2, a2, w2, y2, g2, e2 = line_search(st, d_grad, jnp.where(ok1, 0, ls_tries))
        fallback = ~ok1 | ~descent
        ok = ok1 | ok2
        step = jnp.where(ok1, a1 * d, a2 * d_grad)
        # the second search returns its input when it ran no trial
        w_new, y_new, g_new, e_new = jax.lax.cond(
            ok1, lambda: (w1, y1, g1, e1), lambda: (w2, y2, g2, e2))
        # outside the search: a projection's rounding must not decide a trial's descent
        w_new, y_new, g_new, e_new = jax.lax.cond(reortho & ok, reorthonormalize,
                                                  lambda *a: a, w_new, y_new, g_new, e_new)
        # nothing accepted: keep the point (e is then recomputed from it)
        w_new, y_new, g_new, e_new = jax.lax.cond(
            ok, lambda: (w_new, y_new, g_new, e_new),
            lambda: (st.w, st.y_t, st.g_t, _value_and_factor(fun, st.y_t, alpha)[1]))

        m_new, kappa, sig2 = _moments(fun, y_new, alpha, n_valid, e_new)
        grad = _skew(m_new)
        h = _hessian_approx(m_new, kappa, sig2, lambda_min)
        dgrad = grad - st.grad
        sy = jnp.vdot(step, dgrad)
        n_mem = jnp.where(fallback, 0, st.n_mem)          # flush on fall-back
        push = ok & (sy > 0)                              # keep H positive definite
        s_mem = jnp.where(push, jnp.roll(st.s_mem, -1, 0).at[-1].set(step), st.s_mem)
        y_mem = jnp.where(push, jnp.roll(st.y_mem, -1, 0).at[-1].set(dgrad), st.y_mem)
        rho_mem = jnp.where(push, jnp.roll(st.rho_mem, -1).at[-1].set(1 / jnp.where(push, sy, 1)),
                            st.rho_mem)
        n_mem = jnp.where(push, jnp.minimum(n_mem + 1, m), n_mem)
        return _State(w_new, y_new, g_new, grad, h, m_new, kappa, s_mem, y_mem, rho_mem, n_mem,
                      st.it + 1, jnp.max(jnp.abs(grad)),
                      st.n_fallbacks + (fallback & ok).astype(jnp.int32), ~ok)

    w0 = _polar_start(w_init.astype(dtype), decorrelation)
    y0 = w0 @ white_t
    g0, e0 = _value_and_factor(fun, y0, alpha)
    m0, kappa0, sig20 = _moments(fun, y0, alpha, n_valid, e0)
    grad0 = _skew(m0)
    zero_mem = jnp.zeros((m, k, k), dtype)
    st = _State(w0, y0, g0, grad0, _hessian_approx(m0, kappa0, sig20, lambda_min), m0, kappa0,
                zero_mem, zero_mem, jnp.zeros((m,), dtype), jnp.zeros((), jnp.int32),
                jnp.zeros((), jnp.int32), jnp.max(jnp.abs(grad0)), jnp.zeros((), jnp.int32),
                jnp.zeros((), bool))
    st = jax.lax.while_loop(cond, body, st)
    converged = st.grad_norm < tol
    objective = jnp.sum(st.g_t) / count
    change = _fixed_point_change(st.m, st.kappa, decorrelation)
    return PicardResult(st.w, st.it, converged, st.grad_norm, objective, change, st.n_fallbacks,
                        st.stalled, iteration_status(converged, st.w))
