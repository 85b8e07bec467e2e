import jax.numpy as jnp
import numpy as np
import pytest

from jaxfactor import _linalg as L


@pytest.mark.parametrize("shape", [(50, 5), (300, 40), (1000, 1)])
def test_orthonormalize_and_cholesky_qr2_span_and_orthonormal(rng, shape):
    a = rng.standard_normal(shape).astype(np.float32)
    for f in (L.orthonormalize, L.cholesky_qr2):
        q = np.asarray(f(jnp.asarray(a)), np.float64)
        np.testing.assert_allclose(q.T @ q, np.eye(shape[1]), atol=4e-5)
        # same column space: projecting a onto span(q) leaves it unchanged
        np.testing.assert_allclose(q @ (q.T @ a), a, atol=1e-4 * np.abs(a).max())


def test_cholesky_qr2_ill_conditioned(rng):
    u, _ = np.linalg.qr(rng.standard_normal((2000, 20)))
    v, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    a = (u * np.logspace(0, -3, 20)) @ v  # condition number 1e3 < eps32^-1/2
    q = np.asarray(L.cholesky_qr2(jnp.asarray(a, jnp.float32)), np.float64)
    assert np.abs(q.T @ q - np.eye(20)).max() < 1e-5


def test_polar_matches_svd_reference(rng):
    a = rng.standard_normal((60, 7))
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    got = np.asarray(L.polar(jnp.asarray(a, jnp.float32)))
    np.testing.assert_allclose(got, u @ vt, atol=2e-5)
    sq = rng.standard_normal((7, 7))
    u, _, vt = np.linalg.svd(sq)
    np.testing.assert_allclose(np.asarray(L.polar(jnp.asarray(sq, jnp.float32))), u @ vt, atol=5e-5)


def test_svd_flip_makes_largest_loading_positive_and_keeps_product(rng):
    x = rng.standard_normal((30, 12))
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    fu, fvt = L.svd_flip(jnp.asarray(-u), jnp.asarray(-vt))
    fu, fvt = np.asarray(fu), np.asarray(fvt)
    idx = np.argmax(np.abs(fvt), axis=1)
    assert np.all(fvt[np.arange(12), idx] > 0)
    np.testing.assert_allclose((fu * s) @ fvt, x, atol=1e-10 * 0 + 1e-5)


def test_symmetric_inverse_sqrt(rng):
    a = rng.standard_normal((8, 8))
    spd = a @ a.T + 8 * np.eye(8)
    r = np.asarray(L.symmetric_inverse_sqrt(jnp.asarray(spd, jnp.float32)), np.float64)
    np.testing.assert_allclose(r @ spd @ r, np.eye(8), atol=1e-4)


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


def test_soft_threshold(rng):
    x = rng.standard_normal((9, 4)).astype(np.float32)
    got = np.asarray(L.soft_threshold(jnp.asarray(x), 0.5))
    want = np.where(x > 0.5, x - 0.5, np.where(x < -0.5, x + 0.5, 0.0))
    np.testing.assert_allclose(got, want, atol=1e-7)
    assert got.dtype == np.float32


@pytest.mark.parametrize("shape, frac", [((40, 5), 0.3), ((200, 3), 0.05), ((7, 1), 0.9), ((1, 1), 0.5)])
def test_project_l1_ball_matches_bisection_and_is_nearest(rng, shape, frac):
    x = rng.standard_normal(shape)
    radius = frac * np.abs(x).sum()
    got = np.asarray(L.project_l1_ball(jnp.asarray(x, jnp.float32), radius), np.float64)
    want = _l1_projection_bisection(x, radius)
    np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(x).max())
    assert abs(np.abs(got).sum() - radius) <= 1e-4 * radius
    # nearest point of the ball: no random feasible point is closer
    dist = np.linalg.norm(x - got)
    for _ in range(200):
        v = rng.standard_normal(shape)
        v *= radius * rng.uniform(0, 1) / np.abs(v).sum()
        assert np.linalg.norm(x - v) >= dist - 1e-5
        # nor a feasible point near the answer
        w = got + 1e-2 * rng.standard_normal(shape)
        if np.abs(w).sum() <= radius:
            assert np.linalg.norm(x - w) >= dist - 1e-5


def test_project_l1_ball_inside_is_identity_and_ties(rng):
    x = rng.standard_normal((30, 4)).astype(np.float32)
    r = float(np.abs(x).sum()) * 1.01
    np.testing.assert_array_equal(np.asarray(L.project_l1_ball(jnp.asarray(x), r)), x)
    assert float(L.l1_ball_threshold(jnp.asarray(x), r)) == 0.0
    # equal magnitudes (ties in the sort): every entry shrinks by the same amount
    t = np.array([[1.0, -1.0], [1.0, 0.5]], np.float32)
    got = np.asarray(L.project_l1_ball(jnp.asarray(t), 1.5))
    np.testing.assert_allclose(got, [[0.5, -0.5], [0.5, 0.0]], atol=1e-6)


def _varimax_reference(a, eps=1e-5, max_iter=1000):
    """R's stats::varimax(normalize = FALSE), transcribed in float64 NumPy."""
    p, k = a.shape
    t = np.eye(k)
    d = 0.0
    for _ in range(max_iter):
        z = a @ t
        b = a.T @ (z ** 3 - z @ np.diag((z ** 2).sum(axis=0)) / p)
        u, s, vt = np.linalg.svd(b)
        t = u @ vt
        dpast, d = d, s.sum()
        if d < dpast * (1 + eps):
            break
    return a @ t, t


def _varimax_criterion(lam):
    return np.sum(np.var(lam ** 2, axis=0))


@pytest.mark.parametrize("shape", [(60, 4), (300, 8)])
def test_varimax_matches_numpy_reference(rng, shape):
    # a rotated sparse matrix: varimax should find (a signed permutation of) it back
    p, k = shape
    sparse = rng.standard_normal(shape) * (rng.uniform(size=shape) < 0.2)
    q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    a = sparse @ q
    res = L.varimax(jnp.asarray(a, jnp.float32), 1e-6)
    rot, t = np.asarray(res.rotated, np.float64), np.asarray(res.rotation, np.float64)
    want, t_ref = _varimax_reference(a, eps=1e-6)
    np.testing.assert_allclose(t.T @ t, np.eye(k), atol=1e-5)
    np.testing.assert_allclose(rot, a @ t, atol=1e-4)
    assert bool(res.converged) and int(res.n_iter) >= 1
    # same rotation as the reference, up to float32 rounding of the criterion path
    np.testing.assert_allclose(rot, want, atol=2e-3 * np.abs(a).max())
    assert _varimax_criterion(rot) >= _varimax_criterion(a) - 1e-9
    np.testing.assert_allclose(_varimax_criterion(rot), _varimax_criterion(want), rtol=1e-4)


def test_varimax_normalize_and_zero_input(rng):
    # a well-separated optimum (rotated sparse matrix), so float32 and float64 agree
    sparse = rng.standard_normal((50, 3)) * (rng.uniform(size=(50, 3)) < 0.3)
    sparse[np.abs(sparse).sum(axis=1) == 0, 0] = 1.0  # no zero rows
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    a = sparse @ q
    res = L.varimax(jnp.asarray(a, jnp.float32), 1e-6, normalize=True)
    h = np.linalg.norm(a, axis=1, keepdims=True)
    want, _ = _varimax_reference(a / h, eps=1e-6)
    np.testing.assert_allclose(np.asarray(res.rotated), want * h, atol=2e-3 * np.abs(a).max())
    zero = L.varimax(jnp.zeros((10, 3), jnp.float32))
    assert int(zero.n_iter) == 1 and np.all(np.isfinite(np.asarray(zero.rotated)))


def test_varimax_warm_start_from_optimum_stops_at_once(rng):
    sparse = rng.standard_normal((80, 4)) * (rng.uniform(size=(80, 4)) < 0.25)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    a = jnp.asarray(sparse @ q, jnp.float32)
    cold = L.varimax(a, 1e-6)
    warm = L.varimax(a, 1e-6, init=cold.rotation)
    assert int(warm.n_iter) <= min(3, int(cold.n_iter))
    # the same optimum (cold stops at a relative tolerance, so warm may move a little further)
    np.testing.assert_allclose(np.asarray(warm.rotated), np.asarray(cold.rotated), atol=1e-2)
    crit_warm = _varimax_criterion(np.asarray(warm.rotated, np.float64))
    assert crit_warm >= _varimax_criterion(np.asarray(cold.rotated, np.float64)) * (1 - 1e-5)


def test_varimax_zero_padding_rows_with_true_count_change_nothing(rng):
    # rows of zeros (a row-sharded matrix padded to the mesh size) add nothing to the
    # sums; with the true row count the column means, and so the rotation, are unchanged
    sparse = rng.standard_normal((90, 4)) * (rng.uniform(size=(90, 4)) < 0.3)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    a = (sparse @ q).astype(np.float32)
    padded = np.concatenate([a, np.zeros((6, 4), np.float32)])
    # five steps each (tol 0): the same map, so only rounding may differ (near the
    # flat optimum float32 fixed points drift by ~1e-4, so do not run to it)
    plain = L.varimax(jnp.asarray(a), 0.0, 5)
    counted = L.varimax(jnp.asarray(padded), 0.0, 5, n_rows=90)
    np.testing.assert_allclose(np.asarray(counted.rotation), np.asarray(plain.rotation), atol=1e-5)
    np.testing.assert_allclose(np.asarray(counted.rotated)[:90], np.asarray(plain.rotated), atol=1e-5)
    assert np.all(np.asarray(counted.rotated)[90:] == 0)
    # and the count matters: the padded row count gives another rotation
    wrong = L.varimax(jnp.asarray(padded), 0.0, 5)
    assert np.max(np.abs(np.asarray(wrong.rotation) - np.asarray(plain.rotation))) > 1e-4


@pytest.mark.parametrize("shape", [(200, 5), (3000,)])
def test_l1_threshold_active_set_equals_sort(rng, shape):
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 3.0, shape)).astype(np.float32)
    l1 = float(np.abs(x).sum())
    for frac in (1e-3, 0.05, 0.3, 0.9, 0.999, 1.5):
        want = float(L.l1_ball_threshold(jnp.asarray(x), frac * l1))
        got = float(L.l1_ball_threshold_active_set(jnp.asarray(x), frac * l1))
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6 * float(np.abs(x).max())), frac
        proj = np.asarray(L.project_l1_ball(jnp.asarray(x), frac * l1, method="active_set"))
        assert np.abs(proj).sum() == pytest.approx(min(frac, 1.0) * l1, rel=1e-4)
    # ties: equal magnitudes shrink together
    t = jnp.asarray([[1.0, -1.0], [1.0, 0.5]], jnp.float32)
    np.testing.assert_allclose(np.asarray(L.project_l1_ball(t, 1.5, method="active_set")),
                               [[0.5, -0.5], [0.5, 0.0]], atol=1e-6)
