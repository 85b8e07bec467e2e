import itertools

import numpy as np
import pytest

from jaxfactor.metrics.amari import amari_distance, match_sources


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


def test_zero_for_scaled_signed_permutation(rng):
    k, p = 5, 12
    a = rng.standard_normal((p, k))
    perm = rng.permutation(k)
    scale = rng.uniform(0.2, 5.0, k) * rng.choice([-1.0, 1.0], k)
    w = (np.linalg.pinv(a)[perm]) * scale[:, None]
    assert amari_distance(w, a) == pytest.approx(0.0, abs=1e-12)


def test_matches_loop_reference_and_stays_in_unit_interval(rng):
    for k in (2, 3, 7):
        w, a = rng.standard_normal((k, 9)), rng.standard_normal((9, k))
        d = amari_distance(w, a)
        assert d == pytest.approx(_amari_loops(w, a), rel=1e-12)
        assert 0.0 <= d <= 1.0


def test_one_when_all_entries_equal():
    k = 4
    assert amari_distance(np.ones((k, k)), np.eye(k)) == pytest.approx(1.0)


def test_invariant_to_permutation_and_sign(rng):
    k = 6
    w, a = rng.standard_normal((k, k)), rng.standard_normal((k, k))
    d = amari_distance(w, a)
    perm = rng.permutation(k)
    signs = rng.choice([-1.0, 1.0], k)
    assert amari_distance(w[perm] * signs[:, None], a) == pytest.approx(d, rel=1e-12)
    assert amari_distance(w, a[:, perm] * signs[None, :]) == pytest.approx(d, rel=1e-12)
    assert amari_distance(3.0 * w, a / 7.0) == pytest.approx(d, rel=1e-12)


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
    np.testing.assert_allclose(m.correlations, 1.0, atol=1e-12)
    np.testing.assert_array_equal(m.true_index, np.arange(k))
    np.testing.assert_array_equal(perm[m.estimated_index], np.arange(k))


def test_match_sources_is_the_best_assignment(rng):
    n, k = 300, 4
    true = rng.standard_normal((n, k))
    est = true @ rng.standard_normal((k, k)) + 0.5 * rng.standard_normal((n, k))
    m = match_sources(est, true)
    corr = np.abs(np.corrcoef(est.T, true.T)[:k, k:])
    best = max(sum(corr[p[j], j] for j in range(k)) for p in itertools.permutations(range(k)))
    assert m.correlations.sum() == pytest.approx(best, rel=1e-10)
    np.testing.assert_allclose(m.correlations, corr[m.estimated_index, m.true_index], rtol=1e-10)


def test_match_sources_more_estimates_than_truths(rng):
    n = 200
    true = rng.standard_normal((n, 2))
    est = np.column_stack([rng.standard_normal(n), -true[:, 1], rng.standard_normal(n), true[:, 0]])
    m = match_sources(est, true)
    np.testing.assert_array_equal(m.estimated_index, [3, 1])
    np.testing.assert_allclose(m.correlations, 1.0, atol=1e-12)


def test_match_sources_bad_input(rng):
    with pytest.raises(ValueError, match="share n"):
        match_sources(np.ones((5, 2)), np.ones((6, 2)))
    x = rng.standard_normal((10, 2))
    with pytest.raises(ValueError, match="constant"):
        match_sources(np.column_stack([x[:, 0], np.ones(10)]), x)
