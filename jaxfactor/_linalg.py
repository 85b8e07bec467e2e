"""Dense linear-algebra building blocks shared by every engine.

Everything here is a pure function of ``jax.Array`` inputs and is safe to call
under ``jit``. Nothing validates its input: callers (the estimators) do that
once, at the edge.
"""
from __future__ import annotations

import functools
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "orthonormalize",
    "cholesky_qr2",
    "polar",
    "svd_flip",
    "symmetric_inverse_sqrt",
    "soft_threshold",
    "l1_ball_threshold",
    "l1_ball_threshold_active_set",
    "project_l1_ball",
    "VarimaxResult",
    "varimax",
    "varimax_bb",
    "linear_assignment",
    "small_svd",
    "polar_small_svd",
    "varimax_epca",
]


def full_float32(fn):
    """``fn`` traced with its unqualified float32 matrix products at full float32
    (``precision=HIGHEST``).

    XLA's default precision for a float32 ``dot`` is the platform's: float32 on
    CPU, but TF32 on NVIDIA tensor cores (about 3 digits lost) and bfloat16
    passes on TPU. The engine's float32 contract holds on every platform only if
    every product it does not mean to round says so; products that do ask for
    ``'tf32'`` / ``'bf16'`` (:func:`jaxfactor.accumulate.matmul`) name their
    precision and are not changed. Apply to the public entry points: what they
    trace (jitted kernels included, whose cache keys on the setting) inherits it.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxfactor._linalg import full_float32
      >>> f = full_float32(lambda a, b: jax.jit(jnp.matmul)(a, b))
      >>> f(jnp.ones((2, 3)), jnp.ones((3, 2))).tolist()
      [[3.0, 3.0], [3.0, 3.0]]
    """
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapped


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

    # the shift (one ulp of the largest diagonal) guards only the first round
    # against exact rank deficiency; the second runs on a well-conditioned matrix
    return one_round(one_round(a, True), False)


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


def row_signs(rows, rule: str = "largest"):
    """The project's one sign convention: ``(k,)`` signs that make each row's
    leading entry positive (a zero entry counts as positive).

    ``rule='largest'`` leads with the largest-magnitude entry (scikit-learn's
    PCA convention; PCA, SeFa and FastICA's directions); ``rule='first'`` with
    the first entry (scikit-learn's FastICA whitening, so that a ``w_init``
    means the same in both). SCA keeps epca's own rule (positive skewness,
    :func:`jaxfactor.sca.flip_skewness`), which the reference results use.

    Args:
      rows: ``(k, p)`` NumPy or JAX array.
      rule: ``'largest'`` or ``'first'``.

    Returns:
      ``(k,)`` array of ``+1`` / ``-1`` of ``rows``' dtype and kind.
    """
    xp = np if isinstance(rows, np.ndarray) else jnp
    if rule == "largest":
        lead = xp.take_along_axis(rows, xp.argmax(xp.abs(rows), axis=1)[:, None], axis=1)[:, 0]
    elif rule == "first":
        lead = rows[:, 0]
    else:
        raise ValueError(f"rule must be 'largest' or 'first', got {rule!r}")
    return xp.where(lead < 0, -1, 1).astype(rows.dtype)


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
    signs = row_signs(vt)
    vt = vt * signs[:, None]
    if u is not None:
        u = u * signs[None, :]
    return u, vt


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


# ------------------------------------------------------------- sparsity


def soft_threshold(x: jax.Array, theta) -> jax.Array:
    """Entrywise soft-thresholding ``sign(x) max(|x| - theta, 0)``.

    The proximal operator of ``theta ||.||_1`` (Donoho 1995).

    Args:
      x: float array of any shape.
      theta: non-negative scalar (or an array broadcastable to ``x``).

    Returns:
      Array of ``x``'s shape and dtype.
    """
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - theta, 0).astype(x.dtype)


@jax.jit
def l1_ball_threshold(x: jax.Array, radius) -> jax.Array:
    """The threshold ``theta`` of the Euclidean projection onto the L1 ball.

    Exact, by sorting (Duchi, Shalev-Shwartz, Singer & Chandra 2008): with
    ``u`` the absolute values of all entries sorted in decreasing order and
    ``c`` their cumulative sums, ``rho = max{j : u_j > (c_j - radius) / j}``
    and ``theta = (c_rho - radius) / rho``; ``theta = 0`` when
    ``||x||_1 <= radius``. ``soft_threshold(x, theta)`` then has L1 norm
    ``radius``.

    Args:
      x: float array of any shape (the whole array is one vector: for a
        matrix this is the entrywise L1 norm).
      radius: positive scalar.

    Returns:
      ``()`` array, ``theta >= 0``, in ``x``'s dtype.
    """
    u = jnp.sort(jnp.abs(x).ravel())[::-1]
    radius = jnp.asarray(radius, x.dtype)
    csum = jnp.cumsum(u)
    j = jnp.arange(1, u.shape[0] + 1, dtype=x.dtype)
    active = u * j > csum - radius
    # ``active`` holds on a prefix of the sorted entries; rho is its length.
    rho = jnp.maximum(jnp.sum(active), 1)
    theta = (csum[rho - 1] - radius) / rho.astype(x.dtype)
    inside = csum[-1] <= radius
    return jnp.where(inside, jnp.zeros((), x.dtype), jnp.maximum(theta, 0))


_ACTIVE_SET_MAX_ITER = 1000


@jax.jit
def l1_ball_threshold_active_set(x: jax.Array, radius) -> jax.Array:
    """The threshold of :func:`l1_ball_threshold`, exact, without a sort.

    Michelot's active-set iteration (Michelot 1986; Condat 2016, alg. 2): with
    ``v = |x|`` and ``theta_0 = (sum v - radius) / size``, repeat
    ``A = {v > theta}``, ``theta = (sum_A v - radius) / |A|``. ``theta``
    grows monotonically and the active set shrinks; when it stops changing
    ``theta`` is exactly the sort-based value (same formula on the same set),
    after a few tens of ``O(size)`` masked sums in practice. It exists because
    XLA's CPU sort is slow: 1.5 s for the ``16384 x 50`` loadings of SCA on
    2 cores (numpy sorts them in 50 ms), against milliseconds here.

    Args:
      x: float array of any shape (one vector: for a matrix, the entrywise
        L1 norm).
      radius: positive scalar.

    Returns:
      ``()`` array, ``theta >= 0``, in ``x``'s dtype.
    """
    v = jnp.abs(x).ravel()
    radius = jnp.asarray(radius, x.dtype)
    total = jnp.sum(v)

    def theta_of(active):
        count = jnp.sum(active)
        return (jnp.sum(jnp.where(active, v, 0)) - radius) / jnp.maximum(count, 1).astype(x.dtype)

    # stop once the active set stops shrinking: in floating point a rounding-level
    # drop of theta can let it grow back and cycle (docs/sca_notes.md)
    def cond(state):
        count, prev_count, _, i = state
        return (count < prev_count) & (i < _ACTIVE_SET_MAX_ITER)

    def body(state):
        count, _, theta, i = state
        active = v > theta
        return jnp.sum(active).astype(jnp.int32), count, theta_of(active), i + 1

    theta0 = (total - radius) / v.shape[0]
    size = jnp.asarray(v.shape[0], jnp.int32)
    _, _, theta, _ = jax.lax.while_loop(cond, body, (size, size + 1, theta0, jnp.zeros((), jnp.int32)))
    return jnp.where(total <= radius, jnp.zeros((), x.dtype), jnp.maximum(theta, 0))


@partial(jax.jit, static_argnames=("method",))
def project_l1_ball(x: jax.Array, radius, *, method: str = "sort") -> jax.Array:
    """Euclidean projection of ``x`` (all entries together) onto
    ``{v : ||v||_1 <= radius}``.

    ``argmin_v ||v - x||_F`` subject to ``sum |v_ij| <= radius``: ``x`` itself
    when already inside, else ``soft_threshold(x, theta)`` with the one
    global ``theta`` of :func:`l1_ball_threshold` (exact, sort + cumulative
    sum; Duchi et al. 2008).

    Args:
      x: float array of any shape.
      radius: positive scalar.
      method: ``'sort'`` (:func:`l1_ball_threshold`) or ``'active_set'``
        (:func:`l1_ball_threshold_active_set`, the same exact threshold
        without a sort; much faster on CPU for large ``x``).

    Returns:
      Array of ``x``'s shape and dtype.
    """
    if method == "active_set":
        return soft_threshold(x, l1_ball_threshold_active_set(x, radius))
    return soft_threshold(x, l1_ball_threshold(x, radius))


# -------------------------------------------------------------- varimax


class VarimaxResult(NamedTuple):
    """A varimax rotation ``rotated = a @ rotation``.

    Attributes:
      rotated: ``(p, k)`` rotated matrix.
      rotation: ``(k, k)`` orthogonal rotation.
      n_iter: ``()`` int32, iterations run.
      converged: ``()`` bool, whether the criterion stopped growing before
        ``max_iter``.
    """

    rotated: jax.Array
    rotation: jax.Array
    n_iter: jax.Array
    converged: jax.Array


def _varimax_gradient(a_t, t, count):
    """Varimax's Euclidean gradient at rotation ``t`` and the loadings it rotates.

    Args:
      a_t: ``(k, m)`` loadings, transposed (the long axis last, as the dots want it).
      t: ``(k, k)`` rotation.
      count: scalar, the number of loading rows the column means are over.

    Returns:
      ``(g, lam_t)``: ``g = a^T (L^3 - L diag(mean L^2))``, ``(k, k)``, with ``L = a t``, and
      ``lam_t = L^T``, ``(k, m)``.
    """
    lam_t = t.T @ a_t
    m_t = lam_t ** 3 - lam_t * (jnp.sum(lam_t * lam_t, axis=1, keepdims=True) / count)
    return a_t @ m_t.T, lam_t


@partial(jax.jit, static_argnames=("normalize",))
def varimax(a: jax.Array, tol=1e-5, max_iter=1000, *, normalize: bool = False,
            init: jax.Array | None = None, n_valid=None) -> VarimaxResult:
    """Varimax rotation of the columns of ``a`` (Kaiser 1958), as R's
    ``stats::varimax``.

    Starting from ``T = I`` (or ``init``), repeat ``L = a T``,
    ``G = a^T (L^3 - L diag(mean_i L_ij^2))``, ``G = P S Q^T``, ``T = P Q^T``,
    until the criterion ``d = sum(S)`` grows by a relative amount of at most
    ``tol`` (or ``max_iter`` iterations). Each step increases the varimax
    criterion ``sum_j var_i(L_ij^2)``.

    Args:
      a: ``(p, k)`` float array, ``k <= p``.
      tol: relative tolerance on the growth of ``d``.
      max_iter: iteration cap.
      normalize: Kaiser normalisation (rotate the rows scaled to unit norm,
        then scale back); R's default is ``True``, here ``False``.
      init: ``(k, k)`` orthogonal starting rotation (default the identity, as
        R). A start near the optimum (e.g. the rotation found for a nearby
        matrix) converges in a few steps.
      n_valid: the row count ``p`` that the column means of ``L^2`` divide by
        (traced; default ``a.shape[0]``). For a matrix padded with zero rows
        (row sharding over a mesh, see :func:`jaxfactor.sharding.shard_rows`)
        pass the true count: zero rows add nothing to the sums, so the result
        is then that of the unpadded matrix.

    Returns:
      :class:`VarimaxResult`.

    Cost: ``O(p k^2)`` per step, two ``(k, p) x (p, k)``-shaped products and a
    ``(k, k)`` SVD. The products are written on ``a^T`` (``k x p``, both
    operands contracted along their long contiguous axis): XLA on CPU runs
    ``a^T M`` on a row-major ``(p, k)`` ``a`` about twice as slowly
    (measured on 2 cores at ``(16384, 50)``: 6.1 ms a step instead of 8.5 ms).
    The ``(k, k)`` SVD is :func:`small_svd` (XLA's default SVD measured 39 ms a step
    at ``(16384, 50)`` on jax 0.10.2, of which the products are about 6 ms).
    """
    p, k = a.shape
    dtype = a.dtype
    if normalize:
        norms = jnp.sqrt(jnp.sum(a * a, axis=1, keepdims=True))
        norms = jnp.where(norms > 0, norms, 1).astype(dtype)
        a = a / norms
    tol = jnp.asarray(tol, dtype)
    count = jnp.asarray(p if n_valid is None else n_valid, dtype)
    # (k, p): both products below contract the long axis of row-major operands;
    # the barrier keeps XLA from folding the transpose back into the dots.
    a_t = jax.lax.optimization_barrier(a.T)

    def step(state):
        t, _, d, i = state
        g, _ = _varimax_gradient(a_t, t, count)
        u, s, vt = small_svd(g)
        return u @ vt, d, jnp.sum(s), i + 1

    def cond(state):
        _, d_prev, d, i = state
        return (i == 0) | ((d > d_prev * (1 + tol)) & (i < max_iter))

    zero = jnp.zeros((), dtype)
    start = jnp.eye(k, dtype=dtype) if init is None else init.astype(dtype)
    t, d_prev, d, n_iter = jax.lax.while_loop(cond, step, (start, zero, zero, jnp.zeros((), jnp.int32)))
    rotated = a @ t
    if normalize:
        rotated = rotated * norms
    return VarimaxResult(rotated, t, n_iter, d <= d_prev * (1 + tol))


# varimax_bb: the non-monotone test compares with the lowest of this many criteria,
# and a step is halved at most this many times before it is taken anyway
_BB_MEMORY = 10
_BB_HALVINGS = 30


def varimax_bb(a: jax.Array, rtol=1e-6, max_iter=500, *, init: jax.Array | None = None,
               n_valid=None) -> VarimaxResult:
    """Varimax by Riemannian gradient ascent with Barzilai-Borwein steps, to a
    stationary point.

    Maximises the criterion of :func:`varimax`, ``f(T) = sum_ij L_ij^4 / 4 -
    sum_j (sum_i L_ij^2)^2 / (4 m)`` with ``L = a T``, over orthogonal ``T``: the
    Euclidean gradient is ``G = a^T (L^3 - L diag(mean L^2))`` (what R's step takes
    the polar factor of), the Riemannian one ``T skew(T^T G)``; a step is
    ``T <- polar(T + alpha T skew(T^T G))`` with ``alpha`` the Barzilai-Borwein
    ratio ``<s, s> / <s, y>`` of the last two iterates, halved until the criterion
    is at least the lowest of the last ten (a non-monotone test). It stops when
    ``||skew(T^T G)||_F <= rtol ||G||_F``: a stationarity test, where R's rule stops
    at the first step of small growth (on a plateau, far from it).

    Measured (``benchmarks/results/study_varimax.md``: the loading side of SCA's first
    outer iteration on GAN-like data, float64, from the identity, to a gradient of
    1e-11): 175 criterion evaluations at ``(2048, 20)`` where R's steps take 1178, and
    659 at ``(16384, 50)`` where 8000 of R's steps do not get there (R's rule would stop
    at step 2509, past its 1000-step cap). From the identity the two end at different
    local maxima (criteria 0.13% and 0.17% below the best found); SCA therefore runs it
    only warm, from a rotation near the previous iterate's (``varimax_start='converged'``).

    Args:
      a: ``(m, k)`` float array, ``k <= m``.
      rtol: relative stationarity tolerance (traced); 1e-6 suits float32.
      max_iter: cap on the criterion evaluations (traced).
      init: ``(k, k)`` orthogonal start (default the identity).
      n_valid: the row count the column means of ``L^2`` divide by (default ``m``).

    Returns:
      :class:`VarimaxResult`; ``n_iter`` counts criterion evaluations, ``converged``
      whether the stationarity test held.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor._linalg import varimax, varimax_bb
      >>> a = np.linalg.qr(np.random.default_rng(0).normal(size=(40, 3)))[0]
      >>> res = varimax_bb(a.astype(np.float32))
      >>> ref = varimax(a, 1e-12, 5000).rotated        # R's steps run to convergence
      >>> bool(res.converged), bool(np.allclose(np.abs(res.rotated.T @ ref).max(1), 1, atol=1e-4))
      (True, True)
    """
    m, k = a.shape
    dtype = a.dtype
    count = jnp.asarray(m if n_valid is None else n_valid, dtype)
    tiny = jnp.finfo(dtype).tiny
    # (k, m) layout as in varimax; the barrier keeps the transpose out of the dots
    a_t = jax.lax.optimization_barrier(a.T)

    def evaluate(t):
        g, lam = _varimax_gradient(a_t, t, count)
        f = jnp.sum(lam ** 4) / 4 - jnp.sum(jnp.sum(lam * lam, axis=1) ** 2) / (4 * count)
        skew = t.T @ g
        skew = (skew - skew.T) / 2
        return f, t @ skew, jnp.linalg.norm(skew) / jnp.maximum(jnp.linalg.norm(g), tiny)

    def retract(w):
        u, _, vt = small_svd(w)
        return u @ vt

    t0 = jnp.eye(k, dtype=dtype) if init is None else init.astype(dtype)
    f0, g0, r0 = evaluate(t0)
    alpha0 = 1e-2 / jnp.maximum(jnp.linalg.norm(g0), tiny)
    i0 = jnp.ones((), jnp.int32)

    def cond(s):
        return (s[6] < max_iter) & (s[3] > rtol)

    def body(s):
        t, f, g, _, alpha, hist, i = s
        ref = jnp.min(hist)

        def too_low(b):
            return (b[2] < ref) & (b[5] < _BB_HALVINGS)

        def halve(b):
            step = b[0] * 0.5
            t_new = retract(t + step * g)
            return (step, t_new, *evaluate(t_new), b[5] + 1)

        t_new = retract(t + alpha * g)
        step, t_new, f_new, g_new, r_new, tries = jax.lax.while_loop(
            too_low, halve, (alpha, t_new, *evaluate(t_new), jnp.zeros((), jnp.int32)))
        s_vec, y_vec = (t_new - t).ravel(), (g - g_new).ravel()
        sy = s_vec @ y_vec
        alpha = jnp.where(sy > 0, (s_vec @ s_vec) / jnp.where(sy > 0, sy, 1), 2 * step)
        hist = jnp.roll(hist, -1).at[-1].set(f_new)
        return t_new, f_new, g_new, r_new, alpha, hist, i + tries + 1

    t, _, _, r, _, _, n_eval = jax.lax.while_loop(
        cond, body, (t0, f0, g0, r0, alpha0, jnp.full((_BB_MEMORY,), f0), i0))
    return VarimaxResult(a @ t, t, n_eval, r <= rtol)


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


# ------------------------------------------------------- column matching


def _assignment_host(cost):
    from scipy.optimize import linear_sum_assignment

    cost = np.asarray(cost, np.float64)
    _, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, np.finfo(np.float64).max))
    return cols.astype(np.int32)


def linear_assignment(cost: jax.Array) -> jax.Array:
    """The permutation ``perm`` minimising ``sum_i cost[i, perm[i]]`` (Hungarian /
    Jonker-Volgenant, by :func:`scipy.optimize.linear_sum_assignment` on the host).

    Usable under ``jit`` and inside loops (a ``jax.pure_callback`` on the small
    ``(k, k)`` matrix, copied to the host and back); non-finite costs are treated
    as the largest finite one.

    Args:
      cost: ``(k, k)`` float array.

    Returns:
      ``(k,)`` int32 array, a permutation of ``0 .. k-1``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxfactor._linalg import linear_assignment
      >>> linear_assignment(jnp.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])).tolist()
      [1, 0, 2]
    """
    k = cost.shape[0]
    return jax.pure_callback(_assignment_host, jax.ShapeDtypeStruct((k,), jnp.int32), cost,
                             vmap_method="sequential")


# ------------------------------------------- small SVDs, epca's varimax


def small_svd(a: jax.Array):
    """Thin SVD ``a = U diag(s) V^T`` of a small matrix by the QR algorithm (LAPACK
    ``gesvd``) rather than XLA's default.

    On CPU the default (divide and conquer) takes tens of milliseconds for a
    ``(50, 50)`` matrix, the QR algorithm about one: what varimax and the polar
    factor call once a step.

    Args:
      a: ``(m, k)`` float array (small: ``k x k`` factors of the rotations).

    Returns:
      ``(u, s, vt)``: ``(m, min(m, k))``, ``(min(m, k),)``, ``(min(m, k), k)``.
    """
    return jax.lax.linalg.svd(a, full_matrices=False,
                              algorithm=jax.lax.linalg.SvdAlgorithm.QR)


def polar_small_svd(a: jax.Array) -> jax.Array:
    """:func:`polar` with the ``(k, k)`` SVD taken by :func:`small_svd`.

    Args:
      a: ``(m, k)`` float array with ``m >= k``.

    Returns:
      ``(m, k)`` array with orthonormal columns, ``U V^T`` of ``a = U S V^T``.
    """
    m, k = a.shape
    if m > k:
        q, r = jnp.linalg.qr(a, mode="reduced")
        u, _, vt = small_svd(r)
        return q @ (u @ vt)
    u, _, vt = small_svd(a)
    return u @ vt


def _varimax_step(a_t, count):
    """One step of R's varimax on ``a^T`` (``(k, m)``): ``T -> (polar(G), sum(s(G)))``."""
    def step(t):
        g, _ = _varimax_gradient(a_t, t, count)
        u, s, vt = small_svd(g)
        return u @ vt, jnp.sum(s)
    return step


def varimax_switch(m: int, tol, dtype) -> float:
    """The relative growth below which :func:`varimax_epca` leaves ``dtype`` steps.

    ``d`` summed over ``m`` rows in ``dtype`` carries a relative rounding error of
    about ``sqrt(m) eps`` (random-walk sum of ``m`` terms each rounded to a few
    ``eps``); a growth of at least ``8 sqrt(m) eps`` and ``16 tol`` is then
    certainly above ``tol`` and the decision to go on is the float64 one.

    Args:
      m: rows of the rotated matrix (static); tol: varimax's relative tolerance
        (traced); dtype: the working dtype of the cheap steps.

    Returns:
      ``()`` array, the threshold.
    """
    return jnp.maximum(16.0 * tol, 8.0 * float(np.sqrt(m) * np.finfo(dtype).eps))


@jax.jit
def varimax_epca(a: jax.Array, tol, max_iter=1000, *, init: jax.Array | None = None,
                 n_valid=None, switch: float | None = None) -> VarimaxResult:
    """:func:`varimax` (R's ``stats::varimax`` unnormalised, as epca calls it) with
    every stopping decision taken in float64, the early steps in ``a``'s dtype.

    R's rule stops at the first step whose criterion ``d = sum(s(G))`` grows by a
    relative ``tol`` or less; epca's ``tol`` (``1e-5 / sqrt(m)``) lies below what
    float32 resolves in ``d``. Steps whose float32 growth exceeds ``switch`` are
    certainly not the last (:func:`varimax_switch`) and run in float32; at the
    first one that does not, the iteration goes back two steps (to a rotation
    whose successor's growth was certainly above ``tol``) and continues in
    float64, so the step at which it stops and the returned rotation are those of
    the float64 iteration up to float32 rounding of the rotation (about
    ``eps_32``). For float64 ``a`` it is :func:`varimax` (QR-algorithm SVDs).

    Args:
      a: ``(m, k)`` float32 or float64 array, ``k <= m``.
      tol: relative tolerance on the growth of ``d`` (traced).
      max_iter: step cap (traced).
      init: ``(k, k)`` orthogonal start (default the identity, as R).
      n_valid: the row count the column means of ``L^2`` divide by (default ``m``).
      switch: the growth that ends the cheap steps (traced; default
        :func:`varimax_switch`).

    Returns:
      :class:`VarimaxResult`: ``rotated`` in ``a``'s dtype, ``rotation`` and the
      float64 work in float64.
    """
    m, k = a.shape
    low = a.dtype
    if switch is None and low != jnp.float64:
        switch = varimax_switch(m, tol, low)
    with jax.enable_x64(True):
        wide = jnp.float64
        count = jnp.asarray(m if n_valid is None else n_valid, wide)
        start = jnp.eye(k, dtype=wide) if init is None else init.astype(wide)
        zero = jnp.zeros((), wide)
        i0 = jnp.zeros((), jnp.int32)
        if low != wide:
            # (k, m) layout as in varimax; barrier keeps the transpose out of the dots
            a_low = jax.lax.optimization_barrier(a.T)
            step_low = _varimax_step(a_low, count.astype(low))
            limit = (1 + jnp.asarray(switch, wide)).astype(low)

            def cond_low(s):
                _, _, _, d_prev, d, i = s
                return (i < max_iter) & ((i < 2) | (d > d_prev * limit))

            def body_low(s):
                _, t_prev, t, _, d, i = s
                t_new, d_new = step_low(t)
                return t_prev, t, t_new, d, d_new, i + 1

            t0 = start.astype(low)
            z = jnp.zeros((), low)
            t_back, _, _, _, _, i_low = jax.lax.while_loop(cond_low, body_low,
                                                           (t0, t0, t0, z, z, i0))
            # two steps back: the growth into that rotation's successor was > switch
            start, i0 = t_back.astype(wide), jnp.maximum(i_low - 2, 0)
        a_wide = jax.lax.optimization_barrier(a.T.astype(wide))
        step = _varimax_step(a_wide, count)
        tol = jnp.asarray(tol, wide)

        def cond(s):
            _, d_prev, d, i, first = s
            return (i < max_iter) & ((i == first) | (d > d_prev * (1 + tol)))

        def body(s):
            t, _, d, i, first = s
            t_new, d_new = step(t)
            return t_new, d, d_new, i + 1, first

        t, d_prev, d, n_iter, _ = jax.lax.while_loop(cond, body, (start, zero, zero, i0, i0))
        rotated = (a_wide.T @ t).astype(low)
        return VarimaxResult(rotated, t, n_iter, d <= d_prev * (1 + tol))
