import itertools

import numpy as np
import pytest

from jaxfactor.metrics.amari import amari_distance, match_sources
from tests import tolerances as T

U64 = T.unit_roundoff(np.float64)


def _amari_loops(w, a):
    """The textbook double sum, written with explicit loops (independent reference)."""
    p = np.abs(np.asarray(w, np.float64) @ np.asarray(a, np.float64))
    k = p.shape[0]
    total = 0.0
    for i in range(k):
        total += sum(p[i, j] for j in range(k)) / max(p[i, j] for j in range(k)) - 1
    for j in range(k):
        total += sum(p[i, j] for i in range(k)) / max(p[i, j] for i in range(k)) - 1
    return total / (2 * k * (k - 1))


def amari_rounding(w, a, *, products=True):
    """Bound on how far two float64 evaluations of ``amari_distance(w, a)`` (or of it on
    permuted, sign-flipped or rescaled ``w`` and ``a``) can differ: ``P = |W A|`` rounds by
    ``gamma(p)`` of ``|W| |A|`` (and the rescaling by ``2 u`` of it) in each, moving the
    distance by at most ``sum |d d / d P_ij| dP_ij`` (the derivative of the row and column
    ratios: ``1 / max`` and ``sum / max^2``); the ``2 k`` row and column sums of ratios,
    taken in another order, by ``gamma(3 k)`` of their sum (``k`` terms, the divisions,
    the ``2 k`` total)."""
    w, a = np.asarray(w, np.float64), np.asarray(a, np.float64)
    p = np.abs(w @ a)
    k = p.shape[0]
    m = 2 * k * (k - 1)
    rmax, cmax = p.max(axis=1), p.max(axis=0)
    rsum, csum = p.sum(axis=1), p.sum(axis=0)
    ratios = np.sum(rsum / rmax) + np.sum(csum / cmax)
    bound = 2 * T.gamma(3 * k, np.float64) * ratios / m
    if products:
        dp = 2 * (T.gamma(w.shape[1], np.float64) + 2 * U64) * (np.abs(w) @ np.abs(a))
        grad = (1 / rmax[:, None] + 1 / cmax[None, :] + (rsum / rmax**2)[:, None]
                + (csum / cmax**2)[None, :])
        bound += np.sum(grad * dp) / m
    return float(bound)


def correlation_rounding(est, true):
    """Bound on ``1 - |corr|`` of float64 columns ``est`` that are exactly ``c t + b`` of
    the columns ``true`` (``c, b`` scalars): forming ``c t + b`` rounds by ``2 u |c t +
    b|``, the centring by ``gamma(n)`` of ``mean |.|`` per entry (in both), together
    ``rho`` of the centred column's norm, which costs ``1 - cos <= rho`` (plus
    ``rho^2``), and the normalised dot product and norms ``2 gamma(n)``."""
    def rho(c, formed):
        c = np.asarray(c, np.float64)
        n = c.shape[0]
        noise = (formed * 2 * U64 * np.linalg.norm(c, axis=0)
                 + T.gamma(n, np.float64) * np.sqrt(n) * np.abs(c).mean(axis=0))
        return noise / np.linalg.norm(c - c.mean(axis=0), axis=0)

    r = rho(est, 1) + rho(true, 0)
    return 2 * r + r**2 + 2 * T.gamma(np.asarray(est).shape[0] + 2, np.float64)


def test_zero_for_scaled_signed_permutation(rng):
    k, p = 5, 12
    a = rng.standard_normal((p, k))
    perm = rng.permutation(k)
    scale = rng.uniform(0.2, 5.0, k) * rng.choice([-1.0, 1.0], k)
    w = (np.linalg.pinv(a)[perm]) * scale[:, None]
    # pinv(A) A = I up to the float64 SVD's backward error amplified by 1 / s_min (and the
    # product's gamma(p) |pinv||A|): off-diagonal entries eps of the (scaled, permuted)
    # identity, which give a distance of at most eps / (1 - eps)
    s = np.linalg.svd(a, compute_uv=False)
    pinv = np.linalg.pinv(a)
    eps = (2 * T.svd_error(a, np.float64) / s[-1] * np.linalg.norm(pinv, 2) * s[0]
           + T.gamma(p, np.float64) * np.max(np.abs(pinv) @ np.abs(a)))
    assert 0.0 <= amari_distance(w, a) <= eps / (1 - eps)


def test_matches_loop_reference_and_stays_in_unit_interval(rng):
    for k in (2, 3, 7):
        w, a = rng.standard_normal((k, 9)), rng.standard_normal((9, k))
        d = amari_distance(w, a)
        # the same P (one numpy product each), its sums in another order
        T.assert_within(d, _amari_loops(w, a), amari_rounding(w, a, products=False))
        assert 0.0 <= d <= 1.0


def test_one_when_all_entries_equal():
    k = 4
    # |W A| is all ones exactly: every ratio is an exact small integer
    assert amari_distance(np.ones((k, k)), np.eye(k)) == 1.0


def test_invariant_to_permutation_and_sign(rng):
    k = 6
    w, a = rng.standard_normal((k, k)), rng.standard_normal((k, k))
    d = amari_distance(w, a)
    perm = rng.permutation(k)
    signs = rng.choice([-1.0, 1.0], k)
    bound = amari_rounding(w, a)
    T.assert_within(amari_distance(w[perm] * signs[:, None], a), d, bound)
    T.assert_within(amari_distance(w, a[:, perm] * signs[None, :]), d, bound)
    T.assert_within(amari_distance(3.0 * w, a / 7.0), d, bound)


def test_grows_with_perturbation(rng):
    k = 5
    a = rng.standard_normal((k, k))
    base = np.linalg.inv(a)
    noise = rng.standard_normal((k, k))
    ds = [amari_distance(base + eps * noise, a) for eps in (1e-3, 1e-2, 1e-1)]
    assert ds[0] < ds[1] < ds[2]


def test_k_equal_one_is_zero():
    assert amari_distance(np.array([[2.0, 1.0]]), np.array([[1.0], [3.0]])) == 0.0


@pytest.mark.parametrize("w_shape,a_shape", [((3, 4), (5, 3)), ((3, 4), (4, 2)), ((4,), (4, 1))])
def test_bad_shapes(w_shape, a_shape):
    with pytest.raises(ValueError, match="square product"):
        amari_distance(np.ones(w_shape), np.ones(a_shape))


def test_zero_row_rejected():
    w = np.array([[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="all-zero"):
        amari_distance(w, np.eye(2))


def test_match_sources_recovers_permutation_sign_and_scale(rng):
    n, k = 500, 4
    true = rng.laplace(size=(n, k))
    perm = rng.permutation(k)
    est = true[:, perm] * np.array([2.0, -1.0, 0.5, -3.0]) + 7.0
    m = match_sources(est, true)
    # each estimate is c t + 7 of a true source: correlation 1 up to float64 rounding
    T.assert_within(m.correlations, 1.0, correlation_rounding(est[:, m.estimated_index], true))
    np.testing.assert_array_equal(m.true_index, np.arange(k))
    np.testing.assert_array_equal(perm[m.estimated_index], np.arange(k))


def test_match_sources_is_the_best_assignment(rng):
    n, k = 300, 4
    true = rng.standard_normal((n, k))
    est = true @ rng.standard_normal((k, k)) + 0.5 * rng.standard_normal((n, k))
    m = match_sources(est, true)
    corr = np.abs(np.corrcoef(est.T, true.T)[:k, k:])
    best = max(sum(corr[p[j], j] for j in range(k)) for p in itertools.permutations(range(k)))
    # numpy's corrcoef and match_sources' normalised products of the centred columns: two
    # float64 evaluations of each correlation, gamma(n) for the centring and 2 gamma(n)
    # for the dot product and norms each
    each = 2 * 3 * T.gamma(n + 2, np.float64)
    T.assert_within(m.correlations.sum(), best, k * each)
    T.assert_within(m.correlations, corr[m.estimated_index, m.true_index], each)


def test_match_sources_more_estimates_than_truths(rng):
    n = 200
    true = rng.standard_normal((n, 2))
    est = np.column_stack([rng.standard_normal(n), -true[:, 1], rng.standard_normal(n), true[:, 0]])
    m = match_sources(est, true)
    np.testing.assert_array_equal(m.estimated_index, [3, 1])
    T.assert_within(m.correlations, 1.0, correlation_rounding(true, true))


def test_match_sources_bad_input(rng):
    with pytest.raises(ValueError, match="share n"):
        match_sources(np.ones((5, 2)), np.ones((6, 2)))
    x = rng.standard_normal((10, 2))
    with pytest.raises(ValueError, match="constant"):
        match_sources(np.column_stack([x[:, 0], np.ones(10)]), x)
