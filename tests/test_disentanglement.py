"""Tests for jaxfactor.metrics.disentanglement: factor changes per unit walk, best
factors, the walk scores on measured factors, and DCI against a NumPy/scikit-learn
reference and closed forms on planted codes."""
import math

import numpy as np
import pytest
from scipy.stats import entropy

from jaxfactor.metrics.disentanglement import (
    best_factors,
    dci,
    factor_change_matrix,
    factor_probabilities,
    factor_walk,
    factor_walk_scores,
)
from jaxfactor.metrics.walks import WalkPredictions, walk_scores

from .tolerances import LAMBDA, gamma


def _dci_reference(codes, factors, test_fraction=0.25):
    """Eastwood & Williams with a linear regressor, written independently:
    scikit-learn's LinearRegression per factor on standardised data, scipy's entropy."""
    from sklearn.linear_model import LinearRegression

    n = codes.shape[0]
    n_train = n - int(round(n * test_fraction))
    c, f = codes[:n_train], factors[:n_train]
    cs = (c - c.mean(0)) / c.std(0)
    fs = (f - f.mean(0)) / f.std(0)
    k, j = codes.shape[1], factors.shape[1]
    imp = np.zeros((k, j))
    r2 = np.zeros(j)
    ct = (codes[n_train:] - c.mean(0)) / c.std(0)
    ft = (factors[n_train:] - f.mean(0)) / f.std(0)
    for col in range(j):
        model = LinearRegression().fit(cs, fs[:, col])
        imp[:, col] = np.abs(model.coef_)
        pred = model.predict(ct)
        r2[col] = 1 - np.sum((ft[:, col] - pred) ** 2) / np.sum((ft[:, col] - ft[:, col].mean()) ** 2)
    d = np.array([1 - entropy(row / row.sum(), base=j) for row in imp])
    cpl = np.array([1 - entropy(col / col.sum(), base=k) for col in imp.T])
    total = imp.sum()
    return (float(np.sum(imp.sum(1) / total * d)), float(np.sum(imp.sum(0) / total * cpl)), r2, imp)


def _rotation(theta):
    return np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])


def test_dci_matches_the_reference_on_random_codes(rng):
    n, k, j = 600, 5, 4
    f = rng.normal(size=(n, j))
    mix = rng.normal(size=(j, k))
    codes = f @ mix + 0.3 * rng.normal(size=(n, k))
    got = dci(codes, f)
    d, c, r2, imp = _dci_reference(codes, f)
    # a least-squares solve of K unknowns on n rows vs scikit-learn's: both
    # backward stable, coefficients within cond(X)^2 gamma(n) of each other
    cond = np.linalg.cond((codes - codes.mean(0)) / codes.std(0))
    tol = 10 * cond ** 2 * gamma(n, np.float64)
    np.testing.assert_allclose(got.importance, imp, rtol=0, atol=tol)
    np.testing.assert_allclose(got.informativeness, r2, rtol=0, atol=tol)
    assert abs(got.disentanglement - d) <= 1e3 * tol and abs(got.completeness - c) <= 1e3 * tol
    assert 0 <= got.disentanglement <= 1 and 0 <= got.completeness <= 1


def test_dci_planted_perfect_and_rotated(rng):
    n, j = 800, 6
    f = rng.normal(size=(n, j))
    perm = rng.permutation(j)
    scale = rng.uniform(0.5, 3, size=j) * rng.choice([-1, 1], size=j)
    perfect = dci(f[:, perm] * scale + 1e-6 * rng.normal(size=(n, j)), f)
    # noise 1e-6 against unit-variance codes: off-diagonal importances ~ 1e-6,
    # entropy terms p log p ~ 1e-6 * 14 each, j of them
    assert perfect.disentanglement >= 1 - j * 14e-6 * 10
    assert perfect.completeness >= 1 - j * 14e-6 * 10
    assert np.all(perfect.informativeness > 1 - 1e-9)
    q, _ = np.linalg.qr(rng.normal(size=(j, j)))
    rotated = dci(f @ q, f)
    assert rotated.disentanglement < 0.5 and rotated.completeness < 0.5
    assert np.all(rotated.informativeness > 1 - 1e-9)   # all information is there, mixed


def test_dci_closed_form_for_a_planar_rotation(rng):
    """codes = f R(theta) with noise-free f: the standardised regression is
    beta_ij = sd(c_i) R^T_ij / sd(f_j), so D is the entropy of |beta| rows."""
    n = 500
    f = rng.normal(size=(n, 2))
    previous = 1.0 + 1e-12
    for theta in np.linspace(0, math.pi / 4, 6):
        r = _rotation(theta)
        c = f @ r
        got = dci(c, f)
        n_train = n - int(round(n * 0.25))
        beta = c[:n_train].std(0)[:, None] * r.T / f[:n_train].std(0)[None, :]
        imp = np.abs(beta)
        d = np.array([1 - entropy(row / row.sum(), base=2) for row in imp])
        want = float(np.sum(imp.sum(1) / imp.sum() * d))
        np.testing.assert_allclose(got.importance, imp, rtol=0, atol=1e-9)
        assert abs(got.disentanglement - want) <= 1e-8
        assert got.disentanglement <= previous      # monotone in the mixing angle
        previous = got.disentanglement
    # 45 degrees: fully mixed up to the sample stds' relative differences delta
    # (~ 1 / sqrt(n) each): P = 1/2 + O(delta), 1 - H_2 = 2 delta^2 / ln 2
    assert previous <= 2 * (LAMBDA / math.sqrt(n)) ** 2 / math.log(2)


def test_dci_bad_input(rng):
    f = rng.normal(size=(50, 3))
    with pytest.raises(ValueError, match="share N"):
        dci(f[:40], f)
    with pytest.raises(ValueError, match="at least 2"):
        dci(f[:, :1], f)
    with pytest.raises(ValueError, match="NaN"):
        bad = f.copy()
        bad[3, 1] = np.nan
        dci(bad, f)
    with pytest.raises(ValueError, match="constant"):
        dci(np.c_[f[:, :2], np.ones(50)], f)
    with pytest.raises(ValueError, match="too few"):
        dci(rng.normal(size=(8, 6)), f[:8])


def test_factor_change_matrix_of_a_linear_measurement(rng):
    """render = identity, measure = z M: the change per unit walk along unit v_i
    is |v_i M| exactly, for every start and distance."""
    d, j, k = 4, 3, 5
    m = rng.normal(size=(d, j))
    dirs = rng.normal(size=(k, d))
    unit = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    walk = factor_walk(lambda z: z, lambda z: z @ m, rng.normal(size=(7, d)), dirs, [0.5, 1.5])
    got = factor_change_matrix(walk)
    want = np.abs(unit @ m)
    # float64 sums of d terms, differenced and divided: a few gamma(d) of the magnitudes
    tol = 8 * gamma(d, np.float64) * (np.abs(m).sum() * 3)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)
    scale = rng.uniform(0.5, 2, size=j)
    np.testing.assert_allclose(factor_change_matrix(walk, scale=scale), want / scale, rtol=0,
                               atol=tol / scale.min())
    index, share = best_factors(want)
    np.testing.assert_array_equal(index, np.argmax(want, axis=1))
    np.testing.assert_allclose(share, want.max(1) / want.sum(1), rtol=1e-15)
    with pytest.raises(ValueError, match="scale"):
        factor_change_matrix(walk, scale=np.zeros(j))


def test_circular_factors_take_the_short_way_round():
    # a hue that starts at 350 degrees and moves by +20 per unit reads 10 after the walk
    hue = lambda z: ((350 + 20 * z[:, :1]) % 360)                   # noqa: E731
    walk = factor_walk(lambda z: z, hue, np.zeros((3, 1)), np.ones((1, 1)), [1.0])
    # naively +1 reads 10 (a change of 340) and -1 reads 330 (20): 180 on average
    assert factor_change_matrix(walk)[0, 0] == pytest.approx(180.0)
    assert factor_change_matrix(walk, periods=[360.0])[0, 0] == pytest.approx(20.0)


def test_factor_walk_scores_are_the_papers_scores_on_standardised_factors(rng):
    d = 3
    z = rng.normal(size=(30, d))
    mean, std = np.zeros(d), np.ones(d)
    walk = factor_walk(lambda x: x, lambda x: x, z, np.eye(d), [1.0, 2.0])
    got = factor_walk_scores(walk, mean, std)
    want = walk_scores(WalkPredictions(walk.distances, 1 / (1 + np.exp(-walk.predictions))))
    np.testing.assert_allclose(got.response, want.response, rtol=1e-12, atol=1e-15)
    assert got.disentanglement == pytest.approx(1.0)                   # identity: disentangled
    np.testing.assert_array_equal(got.assignment, [[0, 0], [1, 1], [2, 2]])
    # a rotation of the directions mixes the factors: S_d drops below 1
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    mixed = factor_walk_scores(factor_walk(lambda x: x, lambda x: x, z, q, [1.0, 2.0]), mean, std)
    assert mixed.disentanglement < got.disentanglement
    p = factor_probabilities(np.array([[0.0, LAMBDA]]), [0.0, 0.0], [1.0, 1.0])
    assert p[0, 0] == 0.5 and 0.99 < p[0, 1] < 1


@pytest.mark.parametrize("latent_shape", [(3,), (2, 3)])
def test_factor_walk_is_walk_predictions_in_large_batches(rng, latent_shape):
    """The batched walk renders the same latents as walk_predictions (one step at a
    time) and so returns the same factor values, for any batch size, also for W+-shaped
    latents; render and measure are row-wise, so only the rows' grouping differs."""
    from jaxfactor.metrics.walks import walk_predictions

    d = int(np.prod(latent_shape))
    m = rng.normal(size=(d, 4))
    render = lambda z: np.sin(z.reshape(len(z), -1) @ m)                       # noqa: E731
    measure = lambda im: np.stack([im[:, 0] * im[:, 1], np.cos(im[:, 2]), im[:, 3]], 1)  # noqa: E731
    latents = rng.normal(size=(6,) + latent_shape).astype(np.float32)
    dirs = rng.normal(size=(5,) + latent_shape)
    want = walk_predictions(render, measure, latents, dirs, [0.7, 1.9], batch_size=4)
    for batch in (1, 7, 1000):
        got = factor_walk(render, measure, latents, dirs, [0.7, 1.9], batch_size=batch)
        np.testing.assert_array_equal(got.distances, want.distances)
        # the same float32 latents; the d-term products may be blocked differently
        np.testing.assert_allclose(got.predictions, want.predictions, rtol=0,
                                   atol=4 * gamma(d, np.float64) * np.abs(m).sum())
    with pytest.raises(ValueError, match="zero directions"):
        factor_walk(render, measure, latents, np.zeros((1,) + latent_shape), [1.0])
    with pytest.raises(ValueError, match="batch_size"):
        factor_walk(render, measure, latents, dirs, [1.0], batch_size=0)
