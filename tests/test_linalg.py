import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxfactor import _linalg as L

from .tolerances import assert_within, gamma, orthonormality_error, svd_error, unit_roundoff

U32 = unit_roundoff(np.float32)


@pytest.mark.parametrize("shape", [(50, 5), (300, 40), (1000, 1)])
def test_orthonormalize_and_cholesky_qr2_span_and_orthonormal(rng, shape):
    a = rng.standard_normal(shape).astype(np.float32)
    m, k = shape
    # backward stable orthonormalisation: Q within sqrt(k) gamma(m k) of an orthonormal
    # matrix (Householder: Higham Thm 19.4; CholeskyQR2 for kappa < u^-1/2: the same
    # order, Yamamoto et al. 2015), and Q R = A + dA with ||dA||_F <= svd_error(A)
    orth = orthonormality_error(m, k)
    span = orth * np.linalg.norm(a.astype(np.float64), 2) + svd_error(a)
    for f in (L.orthonormalize, L.cholesky_qr2):
        q = np.asarray(f(jnp.asarray(a)), np.float64)
        assert np.linalg.norm(q.T @ q - np.eye(k)) <= orth, f.__name__
        # same column space: projecting a onto span(q) leaves it unchanged
        # (||(I - Q Q^T) A|| <= ||I - Q^T Q|| ||R|| + ||dA||)
        assert np.linalg.norm(q @ (q.T @ a) - a) <= span, f.__name__


def test_cholesky_qr2_ill_conditioned(rng):
    u, _ = np.linalg.qr(rng.standard_normal((2000, 20)))
    v, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    a = (u * np.logspace(0, -3, 20)) @ v  # condition number 1e3 < eps32^-1/2
    q = np.asarray(L.cholesky_qr2(jnp.asarray(a, jnp.float32)), np.float64)
    # orthonormal to working accuracy whatever kappa (one round alone: u kappa^2 ~ 0.06)
    assert np.linalg.norm(q.T @ q - np.eye(20)) <= orthonormality_error(2000, 20)


def _polar_bound(a):
    """``||fl(polar(A)) - polar(A)||_F`` for ``A (m, k)`` given in float64 and
    computed in float32 (QR when tall, SVD of the ``(k, k)`` factor, products).

    The factor is that of ``A + E`` with ``||E||_F <= (u + gamma(m k) + gamma(k^2))
    ||A||_F`` (rounding A, backward error of the QR and of the SVD), which moves
    it by at most ``2 ||E|| / (2 sigma_k - ||E||)`` (Li 1995: ``2 ||E|| / (sigma_k +
    sigma_k(A + E))``; ``sigma_{k-1} + sigma_k`` for square ``A``); the computed
    ``Q``, ``U``, ``V`` are within ``sqrt(k) gamma`` of orthonormal ones and the
    products add ``gamma(k) k``."""
    m, k = a.shape
    s = np.linalg.svd(a, compute_uv=False)
    e = (U32 + gamma(m * k) + gamma(k * k)) * np.linalg.norm(a)
    gap = 2 * s[-1] if m > k else s[-1] + s[-2]
    move = 2 * e / (gap - 2 * e)
    not_orth = (math.sqrt(k) * gamma(m * k) if m > k else 0.0) + 2 * math.sqrt(k) * gamma(k * k)
    return move + not_orth + k * gamma(k)


def test_polar_matches_svd_reference(rng):
    a = rng.standard_normal((60, 7))
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    got = np.asarray(L.polar(jnp.asarray(a, jnp.float32)), np.float64)
    assert np.linalg.norm(got - u @ vt) <= _polar_bound(a)
    sq = rng.standard_normal((7, 7))
    u, _, vt = np.linalg.svd(sq)
    got = np.asarray(L.polar(jnp.asarray(sq, jnp.float32)), np.float64)
    assert np.linalg.norm(got - u @ vt) <= _polar_bound(sq)


def test_svd_flip_makes_largest_loading_positive_and_keeps_product(rng):
    x = rng.standard_normal((30, 12))
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    fu, fvt = L.svd_flip(jnp.asarray(-u), jnp.asarray(-vt))
    fu, fvt = np.asarray(fu), np.asarray(fvt)
    idx = np.argmax(np.abs(fvt), axis=1)
    assert np.all(fvt[np.arange(12), idx] > 0)
    # flipping signs is exact; only the vectors' conversion to the array dtype rounds:
    # ||dU S V^T||_F, ||U S dV^T||_F <= u ||X||_F each, plus the float64 SVD's own error
    bound = 2 * unit_roundoff(fvt.dtype) * np.linalg.norm(x) + svd_error(x, np.float64)
    assert np.linalg.norm((fu * s) @ fvt - x) <= bound


def test_symmetric_inverse_sqrt(rng):
    a = rng.standard_normal((8, 8))
    spd = a @ a.T + 8 * np.eye(8)
    r = np.asarray(L.symmetric_inverse_sqrt(jnp.asarray(spd, jnp.float32)), np.float64)
    # r is (A + E)^(-1/2) formed from V, Lambda: r A r = I - r E r, ||r E r|| <= ||E|| /
    # lambda_min with ||E|| <= (u + gamma(k^2)) ||A||_F (rounding A, eigh's backward
    # error); forming r (V within sqrt(k) gamma(k^2) of orthogonal, twice; the
    # product gamma(k) k; the rsqrt u) errs by c ||r||, which r A r carries by 2 c sqrt(kappa)
    k = 8
    w = np.linalg.eigvalsh(spd)
    c = 2 * math.sqrt(k) * gamma(k * k) + k * gamma(k) + U32
    bound = (U32 + gamma(k * k)) * np.linalg.norm(spd) / w[0] + 2 * c * math.sqrt(w[-1] / w[0])
    assert np.linalg.norm(r @ spd @ r - np.eye(8)) <= bound


# ----------------------------------------------------- sparsity and varimax


def _l1_projection_bisection(x, radius):
    """Reference: theta by float64 bisection on sum(max(|x| - theta, 0)) = radius."""
    a = np.abs(x).ravel().astype(np.float64)
    if a.sum() <= radius:
        return x.astype(np.float64)
    lo, hi = 0.0, a.max()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.maximum(a - mid, 0).sum() > radius:
            lo = mid
        else:
            hi = mid
    theta = 0.5 * (lo + hi)
    return np.sign(x) * np.maximum(np.abs(x) - theta, 0)


def _l1_threshold_reference(x, radius):
    """``(theta, rho)`` of the projection onto the L1 ball in float64 (sort):
    the threshold and the number of entries above it (``(0, size)`` inside)."""
    a = np.sort(np.abs(np.asarray(x, np.float64)).ravel())[::-1]
    if a.sum() <= radius:
        return 0.0, a.size
    c = np.cumsum(a)
    rho = int(np.sum(a * np.arange(1, a.size + 1) > c - radius))
    return float((c[rho - 1] - radius) / rho), rho


def _l1_theta_error(x, radius, *, rounded_input):
    """Bound on ``|fl(theta) - theta|`` for the threshold computed in float32.
    ``theta = (c - r) / rho`` with ``c = r + rho theta`` the sum of the ``rho``
    active magnitudes: the sum errs by ``gamma(N) c`` (at most ``N`` terms, any
    order), ``r`` by its rounding ``u r``, the division by ``u theta``; rounding
    ``x`` to float32 (``rounded_input``) moves each ``|x_i|`` by ``u |x_i|`` and so
    ``theta`` by at most ``u max|x|``."""
    theta, rho = _l1_threshold_reference(x, radius)
    if theta == 0:
        return 0.0
    n = np.asarray(x).size
    err = (gamma(n) * (radius + rho * theta) + U32 * radius) / rho + U32 * theta
    return err + (U32 * float(np.abs(x).max()) if rounded_input else 0.0)


def _l1_norm_error(x, radius):
    """Bound on ``| ||fl(P)||_1 - radius |`` for the float32 projection of float64
    ``x``: ``rho`` active entries each off by the threshold's error and by
    rounding (``x``'s and the subtraction's, ``u (|x_i| + |P_i|)``)."""
    theta, rho = _l1_threshold_reference(x, radius)
    return rho * _l1_theta_error(x, radius, rounded_input=False) + U32 * (2 * radius + rho * theta)


def test_soft_threshold(rng):
    x = rng.standard_normal((9, 4)).astype(np.float32)
    got = np.asarray(L.soft_threshold(jnp.asarray(x), 0.5))
    want = np.where(x > 0.5, x - 0.5, np.where(x < -0.5, x + 0.5, 0.0))
    # one correctly rounded subtraction either way (sign(x) (|x| - 0.5) = x -+ 0.5): equal
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.float32


@pytest.mark.parametrize("shape, frac", [((40, 5), 0.3), ((200, 3), 0.05), ((7, 1), 0.9), ((1, 1), 0.5)])
def test_project_l1_ball_matches_bisection_and_is_nearest(rng, shape, frac):
    x = rng.standard_normal(shape)
    radius = frac * np.abs(x).sum()
    got = np.asarray(L.project_l1_ball(jnp.asarray(x, jnp.float32), radius), np.float64)
    want = _l1_projection_bisection(x, radius)
    # entrywise: rounding x, the threshold's error, the subtraction
    entry = U32 * np.abs(x) + _l1_theta_error(x, radius, rounded_input=True) + U32 * np.abs(want)
    assert_within(got, want, entry)
    assert abs(np.abs(got).sum() - radius) <= _l1_norm_error(x, radius)
    # nearest point of the ball: no random feasible point is closer than the exact
    # projection, which is within ||entry|| of the computed one
    dist = np.linalg.norm(x - got)
    slack = np.linalg.norm(entry)
    for _ in range(200):
        v = rng.standard_normal(shape)
        v *= radius * rng.uniform(0, 1) / np.abs(v).sum()
        assert np.linalg.norm(x - v) >= dist - slack
        # nor a feasible point near the answer
        w = got + 1e-2 * rng.standard_normal(shape)
        if np.abs(w).sum() <= radius:
            assert np.linalg.norm(x - w) >= dist - slack


def test_project_l1_ball_inside_is_identity_and_ties(rng):
    x = rng.standard_normal((30, 4)).astype(np.float32)
    r = float(np.abs(x).sum()) * 1.01
    np.testing.assert_array_equal(np.asarray(L.project_l1_ball(jnp.asarray(x), r)), x)
    assert float(L.l1_ball_threshold(jnp.asarray(x), r)) == 0.0
    # equal magnitudes (ties in the sort): every entry shrinks by the same amount
    t = np.array([[1.0, -1.0], [1.0, 0.5]], np.float32)
    got = np.asarray(L.project_l1_ball(jnp.asarray(t), 1.5))
    bound = _l1_theta_error(t, 1.5, rounded_input=False) + U32 * np.abs(t)
    assert_within(got, [[0.5, -0.5], [0.5, 0.0]], bound)


def _varimax_path(a, eps=1e-5, max_iter=1000, t=None):
    """R's stats::varimax(normalize = FALSE), transcribed in float64 NumPy: the
    rotations ``T_0 = I, T_1, ...`` up to the stop."""
    p, k = a.shape
    path = [np.eye(k) if t is None else t]
    d = 0.0
    for _ in range(max_iter):
        z = a @ path[-1]
        b = a.T @ (z ** 3 - z @ np.diag((z ** 2).sum(axis=0)) / p)
        u, s, vt = np.linalg.svd(b)
        path.append(u @ vt)
        dpast, d = d, s.sum()
        if d < dpast * (1 + eps):
            break
    return path


def _varimax_reference(a, eps=1e-5, max_iter=1000):
    t = _varimax_path(a, eps, max_iter)[-1]
    return a @ t, t


def _varimax_criterion(lam):
    return np.sum(np.var(lam ** 2, axis=0))


def _steps(path):
    return [np.linalg.norm(b - a) for a, b in zip(path[:-1], path[1:])]


def _contraction(steps):
    """Rate of the linear convergence: the larger of the last two step ratios."""
    rho = max(steps[-1] / steps[-2], steps[-2] / steps[-3])
    assert rho < 1, steps[-3:]
    return rho


def _rotation_error(k):
    """``t = U V^T`` from a float32 ``(k, k)`` SVD: ``U``, ``V`` within ``sqrt(k)
    gamma(k^2)`` of orthogonal, the product ``k gamma(k)``: distance ``d`` of ``t``
    to an orthogonal matrix."""
    return 2 * math.sqrt(k) * gamma(k * k) + k * gamma(k)


def _varimax_step_rounding(a, t):
    """Bound on how far one float32 varimax step ``t -> polar(G)`` lands from the
    exact one, at ``t`` (float64): ``G = a^T M``, ``M = L^3 - L diag(mean L^2)``,
    ``L = a t``. ``||dG||_F <= gamma(p) ||a||_F ||M||_F`` (the product) ``+ ||a||_2
    ||dM||_F`` with ``|dM| <= (3 (gamma(k) + u) + gamma(p) + 4 u) (|L|^3 + |L| mean
    L^2)`` (``L``'s sums of ``k`` terms, cubing, the column means); the polar factor
    carries it by ``1 / sigma_min(G)`` (Li 1995), plus :func:`_rotation_error`."""
    p, k = a.shape
    z = a @ t
    m2 = (z ** 2).mean(axis=0)
    g = a.T @ (z ** 3 - z * m2)
    dm = (3 * (gamma(k) + U32) + gamma(p) + 4 * U32) * np.linalg.norm(np.abs(z) ** 3 + np.abs(z) * m2)
    dg = gamma(p) * np.linalg.norm(a) * np.linalg.norm(z ** 3 - z * m2) + np.linalg.norm(a, 2) * dm
    return dg / np.linalg.svd(g, compute_uv=False)[-1] + _rotation_error(k)


def _criterion_error(lam, d_lam):
    """Bound on ``|crit(L + dL) - crit(L)|`` for ``||dL||_F <= d_lam``: the gradient
    of ``sum_j var_i(L_ij^2)`` is ``(4 / p) M`` (``M = L^3 - L diag(mean L^2)``),
    its second derivative at most ``(12 / p) max L^2``."""
    p = lam.shape[0]
    m = lam ** 3 - lam * (lam ** 2).mean(axis=0)
    return 4 / p * np.linalg.norm(m) * d_lam + 6 / p * np.max(lam ** 2) * d_lam ** 2


def _varimax_stop_bound(a, ref_path, got_steps_last, t_ref):
    """Bound on ``||t_got - t_ref||_F`` for two runs of the same varimax iteration
    that each stopped near the optimum ``T*``: a linearly convergent iteration with
    rate ``rho`` (:func:`_contraction` of the float64 path) is within ``rho / (1 -
    rho)`` times its last step of its fixed point, and float32's fixed point is
    within ``eta / (1 - rho)`` of ``T*``, ``eta`` the rounding of one step."""
    rho = _contraction(_steps(ref_path))
    last_ref = _steps(ref_path)[-1]
    eta = _varimax_step_rounding(a, t_ref)
    return (rho * (got_steps_last + last_ref) + eta) / (1 - rho)


@pytest.mark.parametrize("shape", [(60, 4), (300, 8)])
def test_varimax_matches_numpy_reference(rng, shape):
    # a rotated sparse matrix: varimax should find (a signed permutation of) it back
    p, k = shape
    sparse = rng.standard_normal(shape) * (rng.uniform(size=shape) < 0.2)
    q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    a = sparse @ q
    res = L.varimax(jnp.asarray(a, jnp.float32), 1e-6)
    rot, t = np.asarray(res.rotated, np.float64), np.asarray(res.rotation, np.float64)
    path = _varimax_path(a, eps=1e-6)
    t_ref = path[-1]
    want = a @ t_ref
    d = _rotation_error(k)
    np.testing.assert_array_less(np.linalg.norm(t.T @ t - np.eye(k)), 2 * d + d * d)
    # a (rounded to float32) times t: u |a| |t| and the product's gamma(k)
    assert np.all(np.abs(rot - a @ t) <= (U32 + gamma(k)) * np.abs(a) @ np.abs(t))
    assert bool(res.converged) and int(res.n_iter) >= 1
    # same rotation as the reference: both stopped by the same rule near the same
    # optimum; the float32 run's last step from the run stopped one step earlier
    before = np.asarray(L.varimax(jnp.asarray(a, jnp.float32), 1e-6, int(res.n_iter) - 1).rotation, np.float64)
    d_t = _varimax_stop_bound(a, path, np.linalg.norm(t - before), t_ref)
    d_rot = np.linalg.norm(a, 2) * d_t + (U32 + gamma(k)) * np.linalg.norm(a) * np.linalg.norm(t)
    assert np.linalg.norm(rot - want) <= d_rot
    # each step increases the criterion (up to the rounding of rot and of t's orthogonality)
    d_round = (U32 + gamma(k)) * np.linalg.norm(a) * np.linalg.norm(t) + np.linalg.norm(a, 2) * d
    assert _varimax_criterion(rot) >= _varimax_criterion(a) - _criterion_error(rot, d_round)
    assert abs(_varimax_criterion(rot) - _varimax_criterion(want)) <= _criterion_error(want, d_rot)



def _riemannian_gradient(a, t):
    """float64 ``skew(T^T G)`` of the varimax criterion (``G`` as in ``_varimax_path``)."""
    z = a @ t
    g = a.T @ (z ** 3 - z * (z ** 2).sum(axis=0) / a.shape[0])
    m = t.T @ g
    return (m - m.T) / 2


@pytest.mark.parametrize("shape", [(60, 4), (300, 6)])
def test_varimax_bb_reaches_the_maximum_r_converges_to(rng, shape):
    # a rotated sparse matrix: one maximum (up to signed permutations), which R's steps
    # reach when run far past R's tolerance; varimax_bb must reach it too
    p, k = shape
    sparse = rng.standard_normal(shape) * (rng.uniform(size=shape) < 0.2)
    a = sparse @ np.linalg.qr(rng.standard_normal((k, k)))[0]
    t_ref = _varimax_path(a, eps=0.0, max_iter=5000)[-1]
    res = L.varimax_bb(jnp.asarray(a, jnp.float32), 1e-6)
    t = np.asarray(res.rotation, np.float64)
    assert bool(res.converged)
    d = _rotation_error(k)
    np.testing.assert_array_less(np.linalg.norm(t.T @ t - np.eye(k)), 2 * d + d * d)
    t = np.linalg.svd(t)[0] @ np.linalg.svd(t)[2]          # its nearest rotation, in float64
    # the Riemannian Hessian at the reference maximum, by central differences along
    # the skew basis: its smallest curvature mu bounds the distance to the maximum by
    # ||grad|| / mu (twice, for the quadratic model's slack near the maximum)
    basis = []
    for i in range(k):
        for j in range(i + 1, k):
            e = np.zeros((k, k))
            e[i, j], e[j, i] = 1 / math.sqrt(2), -1 / math.sqrt(2)
            basis.append(e)
    h = 1e-5

    def grad_coords(r):
        gr = _riemannian_gradient(a, r)
        return np.array([np.sum(gr * e) for e in basis])

    def expm_skew(w):
        vals, vecs = np.linalg.eig(w)
        return np.real(vecs @ np.diag(np.exp(vals)) @ np.linalg.inv(vecs))

    hess = np.array([(grad_coords(t_ref @ expm_skew(h * e)) - grad_coords(t_ref @ expm_skew(-h * e)))
                     / (2 * h) for e in basis])
    mu = np.linalg.eigvalsh(-(hess + hess.T) / 2).min()
    assert mu > 0
    # the float64 gradient where varimax_bb stopped: its float32 stopping test plus the
    # float32 rounding of the products (gamma(p) relative to |a| |a t|^3 terms)
    grad = np.linalg.norm(_riemannian_gradient(a, t))
    z = np.abs(a) @ np.abs(t)
    g_scale = np.linalg.norm(np.abs(a).T @ (z ** 3 + z * (z ** 2).sum(axis=0) / p))
    assert grad <= 1e-6 * g_scale + 4 * gamma(p + k) * g_scale
    # the same maximum: the rotations differ by a signed permutation and a rotation
    # within 2 ||grad|| / mu
    rel = t_ref.T @ t
    perm = np.round(rel)
    assert np.allclose(np.abs(perm).sum(axis=0), 1) and np.allclose(np.abs(perm).sum(axis=1), 1)
    assert np.linalg.norm(rel - perm) <= 2 * grad / mu + d


def test_varimax_normalize_and_zero_input(rng):
    # a well-separated optimum (rotated sparse matrix), so float32 and float64 agree
    sparse = rng.standard_normal((50, 3)) * (rng.uniform(size=(50, 3)) < 0.3)
    sparse[np.abs(sparse).sum(axis=1) == 0, 0] = 1.0  # no zero rows
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    a = sparse @ q
    res = L.varimax(jnp.asarray(a, jnp.float32), 1e-6, normalize=True)
    h = np.linalg.norm(a, axis=1, keepdims=True)
    path = _varimax_path(a / h, eps=1e-6)
    want = (a / h) @ path[-1] * h
    t = np.asarray(res.rotation, np.float64)
    before = np.asarray(L.varimax(jnp.asarray(a, jnp.float32), 1e-6, int(res.n_iter) - 1,
                                  normalize=True).rotation, np.float64)
    # rows scaled by 1/h and back (diag(h) (a / h) = a): as without normalising,
    # plus the row norms' and scalings' rounding (gamma(k) + 2 u)
    d_t = _varimax_stop_bound(a / h, path, np.linalg.norm(t - before), path[-1])
    k = 3
    bound = np.linalg.norm(a, 2) * d_t + (gamma(k) + gamma(k) + 4 * U32) * np.linalg.norm(a) * np.linalg.norm(t)
    assert np.linalg.norm(np.asarray(res.rotated, np.float64) - want) <= bound
    zero = L.varimax(jnp.zeros((10, 3), jnp.float32))
    assert int(zero.n_iter) == 1 and np.all(np.isfinite(np.asarray(zero.rotated)))


def test_varimax_warm_start_from_optimum_stops_at_once(rng):
    sparse = rng.standard_normal((80, 4)) * (rng.uniform(size=(80, 4)) < 0.25)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    a = jnp.asarray(sparse @ q, jnp.float32)
    a64 = np.asarray(a, np.float64)
    cold = L.varimax(a, 1e-6)
    warm = L.varimax(a, 1e-6, init=cold.rotation)
    assert int(warm.n_iter) <= min(3, int(cold.n_iter))
    # the same optimum: cold stops within rho / (1 - rho) of its last step of it, and
    # warm, continuing from there, no farther; so they are within twice that (plus
    # twice the float32 floor eta / (1 - rho)); the last steps from the cold run
    # stopped 1, 2, 3 steps earlier
    n = int(cold.n_iter)
    path = [np.asarray(L.varimax(a, 1e-6, n - i).rotation, np.float64) for i in (3, 2, 1, 0)]
    rho = _contraction(_steps(path))
    eta = _varimax_step_rounding(a64, path[-1])
    d_t = 2 * (rho * _steps(path)[-1] + eta) / (1 - rho)
    k = 4
    d_round = (U32 + gamma(k)) * np.linalg.norm(a64) * 2  # ||t||_F = 2
    bound = np.linalg.norm(a64, 2) * d_t + 2 * d_round
    warm_rot, cold_rot = np.asarray(warm.rotated, np.float64), np.asarray(cold.rotated, np.float64)
    assert np.linalg.norm(warm_rot - cold_rot) <= bound
    # and warm does not lose criterion (each step increases it), up to rounding
    d_round += np.linalg.norm(a64, 2) * _rotation_error(k)
    crit_warm, crit_cold = _varimax_criterion(warm_rot), _varimax_criterion(cold_rot)
    assert crit_warm >= crit_cold - _criterion_error(cold_rot, d_round) - _criterion_error(warm_rot, d_round)


def _jacobian_norm(a, t, count, h=1e-6):
    """``||d step / d t||_2`` of one exact varimax step at ``t`` (central differences)."""
    k = t.shape[0]

    def step(t):
        z = a @ t
        u, _, vt = np.linalg.svd(a.T @ (z ** 3 - z * ((z ** 2).sum(axis=0) / count)))
        return u @ vt

    cols = []
    for i in range(k * k):
        e = np.zeros(k * k)
        e[i] = h
        e = e.reshape(k, k)
        cols.append(((step(t + e) - step(t - e)) / (2 * h)).ravel())
    return np.linalg.norm(np.array(cols).T, 2), step(t)


def test_varimax_zero_padding_rows_with_true_count_change_nothing(rng):
    # rows of zeros (a row-sharded matrix padded to the mesh size) add nothing to the
    # sums; with the true row count the column means, and so the rotation, are unchanged
    sparse = rng.standard_normal((90, 4)) * (rng.uniform(size=(90, 4)) < 0.3)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    a = (sparse @ q).astype(np.float32)
    a64 = a.astype(np.float64)
    padded = np.concatenate([a, np.zeros((6, 4), np.float32)])
    # five steps each (tol 0): the same map, so only rounding (the order of the sums)
    # may differ: twice the rounding of one run, each step's rounding
    # (_varimax_step_rounding) carried through the later steps by their Jacobians
    # (the float64 path's; near the flat optimum float32 fixed points drift, so do
    # not run to it)
    plain = L.varimax(jnp.asarray(a), 0.0, 5)
    counted = L.varimax(jnp.asarray(padded), 0.0, 5, n_valid=90)
    t, carried, first = np.eye(4), 0.0, None
    for i in range(5):
        jac, t_next = _jacobian_norm(a64, t, 90)
        eta = _varimax_step_rounding(a64, t)
        carried = carried * jac + eta if i else eta
        first = eta if i == 0 else first
        t = t_next
    np.testing.assert_array_less(np.linalg.norm(np.asarray(counted.rotation, np.float64)
                                                - np.asarray(plain.rotation)), 2 * carried)
    rot_bound = np.linalg.norm(a64, 2) * 2 * carried + 2 * (U32 + gamma(4)) * np.linalg.norm(a64) * 2
    assert np.linalg.norm(np.asarray(counted.rotated, np.float64)[:90] - np.asarray(plain.rotated)) <= rot_bound
    assert np.all(np.asarray(counted.rotated)[90:] == 0)
    # and the count matters: after one step (no Jacobian to carry) the padded row
    # count gives a rotation farther off than rounding could
    one = L.varimax(jnp.asarray(a), 0.0, 1)
    wrong = L.varimax(jnp.asarray(padded), 0.0, 1)
    assert np.linalg.norm(np.asarray(wrong.rotation, np.float64) - np.asarray(one.rotation)) > 2 * first


@pytest.mark.parametrize("shape", [(200, 5), (3000,)])
def test_l1_threshold_active_set_equals_sort(rng, shape):
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 3.0, shape)).astype(np.float32)
    l1 = float(np.abs(x).sum())
    n = x.size
    for frac in (1e-3, 0.05, 0.3, 0.9, 0.999, 1.5):
        radius = frac * l1
        want = float(L.l1_ball_threshold(jnp.asarray(x), radius))
        got = float(L.l1_ball_threshold_active_set(jnp.asarray(x), radius))
        # the same formula on the same set (and the same rounded radius): only the
        # order of the sum of the active magnitudes differs, gamma(N) each, and the
        # divisions; inside the ball both are exactly 0
        theta, rho = _l1_threshold_reference(x, radius)
        bound = 2 * (gamma(n) * (radius + rho * theta) / rho + U32 * theta)
        assert abs(got - want) <= bound, frac
        proj = np.asarray(L.project_l1_ball(jnp.asarray(x), radius, method="active_set"))
        # the projection's L1 norm (as _l1_norm_error, float32 x) plus numpy's float32 sum
        target = min(frac, 1.0) * l1
        norm_bound = rho * _l1_theta_error(x, radius, rounded_input=False) + (2 * U32 + gamma(n)) * target
        assert abs(float(np.abs(proj).sum()) - target) <= norm_bound, frac
    # ties: equal magnitudes shrink together
    t = np.array([[1.0, -1.0], [1.0, 0.5]], np.float32)
    got = L.project_l1_ball(jnp.asarray(t), 1.5, method="active_set")
    assert_within(got, [[0.5, -0.5], [0.5, 0.0]], _l1_theta_error(t, 1.5, rounded_input=False) + U32 * np.abs(t))


def test_row_signs_is_the_one_sign_convention(rng):
    a = rng.standard_normal((6, 9)).astype(np.float32)
    a[2] = 0.0
    largest = L.row_signs(a)
    lead = a[np.arange(6), np.argmax(np.abs(a), axis=1)]
    assert np.array_equal(largest, np.where(lead < 0, -1, 1))
    assert np.array_equal(L.row_signs(a, "first"), np.where(a[:, 0] < 0, -1, 1))
    assert np.array_equal(np.asarray(L.row_signs(jnp.asarray(a))), largest)
    flipped = a * largest[:, None]
    assert np.all(flipped[np.arange(6), np.argmax(np.abs(a), axis=1)] >= 0)
    _, vt = L.svd_flip(None, jnp.asarray(a))
    np.testing.assert_array_equal(np.asarray(vt), flipped)
    with pytest.raises(ValueError, match="rule"):
        L.row_signs(a, "last")
