import numpy as np
import pytest
import scipy.linalg

from jaxfactor.metrics.frechet import (FeatureStatistics, feature_statistics, frechet_distance,
                                       frechet_distance_from_features, frechet_terms)
from jaxfactor.sources import ArraySource


def _scipy_fid(mu1, s1, mu2, s2):
    """pytorch-fid's formula: sqrtm of the non-symmetric product, real part."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real, covmean


def _random_spd(rng, d, spread=1.0):
    a = rng.standard_normal((d, d))
    q, _ = np.linalg.qr(a)
    w = np.exp(spread * rng.standard_normal(d))
    return (q * w) @ q.T


@pytest.mark.parametrize("d", [8, 64])
def test_matches_scipy_sqrtm_on_spd(rng, d):
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    ref, _ = _scipy_fid(mu1, s1, mu2, s2)
    got = frechet_terms(mu1, s1, mu2, s2)
    assert got.distance == pytest.approx(ref, rel=1e-9, abs=1e-9)
    assert got.mean_term == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-12)
    assert frechet_distance(mu1, s1, mu2, s2) == got.distance


def test_commuting_covariances_closed_form(rng):
    # Diagonal covariances commute: FD = sum (mu1-mu2)^2 + sum (sqrt a - sqrt b)^2.
    d = 50
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    ref = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(ref, rel=1e-10)


def test_near_singular_covariances_fewer_samples_than_dims(rng):
    # n < d: both covariances have rank n-1. tr sqrt(S1^1/2 S2 S1^1/2) equals the
    # nuclear norm of X1c X2c^T / sqrt((n1-1)(n2-1)), an exact small-SVD reference.
    d, n1, n2 = 96, 20, 30
    x1 = rng.standard_normal((n1, d)) @ rng.standard_normal((d, d)) * 0.3 + 1.0
    x2 = rng.standard_normal((n2, d)) + 0.5
    x1c, x2c = x1 - x1.mean(0), x2 - x2.mean(0)
    nuclear = np.linalg.svd(x1c @ x2c.T / np.sqrt((n1 - 1) * (n2 - 1)), compute_uv=False).sum()
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    mu1, mu2 = x1.mean(0), x2.mean(0)
    diff = mu1 - mu2
    exact = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * nuclear
    got = frechet_terms(mu1, s1, mu2, s2)
    assert got.trace_sqrt_product == pytest.approx(nuclear, rel=1e-10)
    assert got.distance == pytest.approx(exact, rel=1e-10)
    # scipy's sqrtm of the singular non-symmetric product: real part agrees
    # only loosely, with an imaginary part that is pure rounding noise.
    scipy_value, covmean = _scipy_fid(mu1, s1, mu2, s2)
    assert scipy_value == pytest.approx(exact, rel=1e-3)
    if np.iscomplexobj(covmean):
        assert np.max(np.abs(covmean.imag)) < 1e-3 * np.max(np.abs(covmean.real))
    # and the same through the feature path
    assert frechet_distance_from_features(x1, x2) == pytest.approx(exact, rel=1e-9)


def test_identical_sets_give_zero(rng):
    f = rng.standard_normal((300, 40)).astype(np.float32) * 3 + 10
    value = frechet_distance_from_features(f, f)
    stats = feature_statistics(f)
    assert abs(value) < 1e-8 * np.trace(stats.covariance)


def test_translation_gives_squared_shift(rng):
    d = 30
    s = _random_spd(rng, d)
    mu = rng.standard_normal(d)
    shift = rng.standard_normal(d)
    assert frechet_distance(mu, s, mu + shift, s) == pytest.approx(shift @ shift, rel=1e-8, abs=1e-9)


def test_feature_statistics_blockwise_matches_numpy(rng):
    n, d = 1000, 12
    f = (rng.standard_normal((n, d)) * rng.uniform(0.5, 2, d) + 1e3).astype(np.float32)
    ref_mean = f.astype(np.float64).mean(0)
    ref_cov = np.cov(f.astype(np.float64), rowvar=False)
    for features in (f, ArraySource(f), (f[i:i + 77] for i in range(0, n, 77))):
        st = feature_statistics(features, block_rows=128)
        assert isinstance(st, FeatureStatistics)
        assert st.n_samples == n
        assert st.mean.dtype == np.float64 and st.covariance.dtype == np.float64
        np.testing.assert_allclose(st.mean, ref_mean, rtol=1e-12)
        np.testing.assert_allclose(st.covariance, ref_cov, rtol=1e-9, atol=1e-9)


def test_statistics_reuse_equals_features(rng):
    f1 = rng.standard_normal((200, 10))
    f2 = rng.standard_normal((150, 10)) * 1.3 + 0.2
    direct = frechet_distance_from_features(f1, f2)
    reused = frechet_distance_from_features(feature_statistics(f1), f2)
    assert reused == pytest.approx(direct, rel=1e-12)


def test_monotone_under_gaussian_noise(rng):
    # A fixed "extractor" (a random ReLU layer) on fixed images; more noise on
    # the images gives a larger distance to the clean set.
    n, p, d = 2000, 64, 32
    w = rng.standard_normal((p, d)) / np.sqrt(p)
    images = rng.uniform(0, 1, (n, p))

    def extractor(x):
        return np.maximum(x @ w, 0.0)

    clean = feature_statistics(extractor(images))
    values = []
    for sigma in (0.0, 0.1, 0.3, 1.0):
        noisy = images + sigma * rng.standard_normal(images.shape)
        values.append(frechet_distance_from_features(clean, extractor(noisy)))
    assert values[0] < 1e-10
    assert all(b > a for a, b in zip(values, values[1:])), values


def test_errors(rng):
    s = np.eye(3)
    with pytest.raises(ValueError, match="same length"):
        frechet_distance(np.zeros(3), s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), s)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.array([0, np.nan, 0]), s, np.zeros(3), s)
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="columns"):
        feature_statistics(iter([np.zeros((4, 3)), np.zeros((4, 2))]))
    with pytest.raises(ValueError, match="NaN or inf"):
        feature_statistics(np.array([[0.0, 1.0], [np.inf, 2.0]]))
    with pytest.raises(ValueError, match="different widths"):
        frechet_distance_from_features(rng.standard_normal((5, 3)), rng.standard_normal((5, 4)))
