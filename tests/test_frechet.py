import numpy as np
import pytest
import scipy.linalg

from jaxfactor.metrics.frechet import (FeatureStatistics, feature_statistics, frechet_distance,
                                       frechet_distance_from_features, frechet_terms)
from jaxfactor.sources import ArraySource

from .tolerances import assert_within, blocked_gram_error, gamma, product_error, svd_error

F64 = np.float64


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


def _eigen_shift(s1, s2):
    """How far (float64) rounding can move the eigenvalues ``m_i`` of ``S1^1/2 S2
    S1^1/2`` as :func:`frechet_terms` forms them: the backward error of ``eigh(S1)``
    moves them by ``||S2|| svd_error(S1)`` (Weyl on ``S2^1/2 (S1 + E) S2^1/2``, the
    same spectrum); forming ``R = U sqrt(w) U^T`` (error ``E_R``) by ``2 ||E_R||
    ||S2|| ||R||``; the products ``R S2 R`` by their product errors; ``eigvalsh``
    by its backward error."""
    w, u = np.linalg.eigh(s1)
    us = u * np.sqrt(np.clip(w, 0, None))
    r = us @ u.T
    n2, nr = np.linalg.norm(s2, 2), np.linalg.norm(r, 2)
    return (n2 * svd_error(s1, F64) + 2 * product_error(us, u.T, F64) * n2 * nr
            + product_error(r, s2, F64) * nr + product_error(r @ s2, r, F64) + svd_error(r @ s2 @ r, F64))


def _scipy_shift(s1, s2):
    """The same for ``sqrtm(S1 S2)``, whose trace is the sum of the square roots of
    its Schur diagonal: the product's and the Schur form's backward errors move the
    eigenvalues of the non-symmetric ``S1 S2`` by at most ``kappa(V)`` times them
    (Bauer-Fike; its eigenvectors ``V = S1^1/2 Q`` have ``kappa(V) = sqrt(kappa(S1))``)."""
    p = s1 @ s2
    return np.sqrt(np.linalg.cond(s1)) * (product_error(s1, s2, F64) + svd_error(p, F64))


def _trace_sqrt_error(m, shift):
    """Error of ``sum sqrt(m_i)`` when each eigenvalue moves by at most ``shift``:
    ``sum min(shift / (2 sqrt m_i), sqrt(shift))``."""
    m = np.clip(np.asarray(m, F64), 0, None)
    with np.errstate(divide="ignore"):
        return float(np.sum(np.minimum(shift / (2 * np.sqrt(m)), np.sqrt(shift))))


def _sum_error(mu1, s1, mu2, s2, trace_sqrt):
    """Rounding of the final float64 sums ``||mu1 - mu2||^2 + tr S1 + tr S2 - 2 T``
    (forward error of sums of d terms, relative to the sums of the magnitudes)."""
    d = len(mu1)
    return gamma(d, F64) * (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) + 2 * trace_sqrt)


def _product_eigenvalues(s1, s2):
    """The eigenvalues ``m_i`` of ``S1^1/2 S2 S1^1/2`` (float64), for the bounds."""
    w, u = np.linalg.eigh(s1)
    r = (u * np.sqrt(np.clip(w, 0, None))) @ u.T
    return np.linalg.eigvalsh(r @ s2 @ r)


def fid_error(mu1, s1, mu2, s2, *, cov_error=(0.0, 0.0), mean_error=(0.0, 0.0), scipy=False):
    """Bound on ``|FD computed - FD(N(mu1, S1), N(mu2, S2))|`` when the statistics
    it is computed from are off by ``cov_error`` (entrywise bounds on ``S1, S2``,
    scalars or arrays) and ``mean_error`` (norms of the mean errors): the
    product's eigenvalues move by ``||S2|| ||E1|| + ||S1|| ||E2||`` more (Weyl,
    first order), the traces by ``tr E``, the mean term by ``2 ||mu1 - mu2||
    (e1 + e2)``; then :func:`frechet_terms`' rounding (``scipy=False``) or
    pytorch-fid's ``sqrtm`` formula's (``scipy=True``, non-singular ``S1``)."""
    e1, e2 = (np.broadcast_to(np.asarray(e, F64), s1.shape) for e in cov_error)
    m = _product_eigenvalues(s1, s2)
    shift = ((_scipy_shift if scipy else _eigen_shift)(s1, s2)
             + np.linalg.norm(s2, 2) * np.linalg.norm(e1) + np.linalg.norm(s1, 2) * np.linalg.norm(e2))
    moved = sum(mean_error)
    return (2 * _trace_sqrt_error(m, shift) + np.trace(e1) + np.trace(e2)
            + 2 * np.linalg.norm(mu1 - mu2) * moved + moved**2
            + _sum_error(mu1, s1, mu2, s2, np.sqrt(np.clip(m, 0, None)).sum()))


def _scipy_singular_shifts(s1, s2, rank):
    """For a singular ``P = S1 S2`` (rank ``r``, its zero eigenvalue semisimple):
    the eigenvalues of the cluster with right/left invariant subspaces ``X``,
    ``Y`` (orthonormal bases) move by at most ``kappa eps``, ``kappa = 1 /
    sigma_min(Y^T X)`` (the cluster's condition), ``eps`` the product's and the
    Schur form's backward errors. Returns ``(eps, kappa_nonzero, kappa_null)``."""
    p = s1 @ s2
    u, _, vt = np.linalg.svd(p)
    kappa = [1 / np.linalg.svd(vt[sl] @ u[:, sl], compute_uv=False).min()
             for sl in (slice(None, rank), slice(rank, None))]
    return product_error(s1, s2, F64) + svd_error(p, F64), *kappa


@pytest.mark.parametrize("d", [8, 64])
def test_matches_scipy_sqrtm_on_spd(rng, d):
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    ref, _ = _scipy_fid(mu1, s1, mu2, s2)
    got = frechet_terms(mu1, s1, mu2, s2)
    # each side within its rounding bound of the exact value
    tol = fid_error(mu1, s1, mu2, s2) + fid_error(mu1, s1, mu2, s2, scipy=True)
    assert abs(got.distance - ref) <= tol
    # the same difference, squared and summed in two orders
    assert got.mean_term == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=2 * gamma(d, F64))
    assert frechet_distance(mu1, s1, mu2, s2) == got.distance


def test_commuting_covariances_closed_form(rng):
    # Diagonal covariances commute: FD = sum (mu1-mu2)^2 + sum (sqrt a - sqrt b)^2.
    d = 50
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    ref = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    s1, s2 = np.diag(a), np.diag(b)
    # ours cancels tr S1 + tr S2 against 2 T; the closed form has no cancellation
    # (its sums and square roots are within the same _sum_error)
    tol = 2 * _trace_sqrt_error(a * b, _eigen_shift(s1, s2)) + 2 * _sum_error(mu1, s1, mu2, s2,
                                                                              np.sqrt(a * b).sum())
    assert abs(frechet_distance(mu1, s1, mu2, s2) - ref) <= tol


def test_near_singular_covariances_fewer_samples_than_dims(rng):
    # n < d: both covariances have rank n-1. tr sqrt(S1^1/2 S2 S1^1/2) equals the
    # nuclear norm of X1c X2c^T / sqrt((n1-1)(n2-1)), an exact small-SVD reference.
    d, n1, n2 = 96, 20, 30
    x1 = rng.standard_normal((n1, d)) @ rng.standard_normal((d, d)) * 0.3 + 1.0
    x2 = rng.standard_normal((n2, d)) + 0.5
    x1c, x2c = x1 - x1.mean(0), x2 - x2.mean(0)
    scale = np.sqrt((n1 - 1) * (n2 - 1))
    p = x1c @ x2c.T / scale
    r = n1 - 1
    sv = np.linalg.svd(p, compute_uv=False)[:r]
    nuclear = sv.sum()
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    mu1, mu2 = x1.mean(0), x2.mean(0)
    diff = mu1 - mu2
    exact = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * nuclear
    got = frechet_terms(mu1, s1, mu2, s2)
    # ours: the r non-zero eigenvalues sv^2 within _eigen_shift; the d - r null
    # ones are zeroed below the rounding level d eps max|eig| (the module's rule)
    # and add nothing. The reference: r singular values within Weyl's bound of
    # the product's and the SVD's errors.
    ref_error = r * (svd_error(p, F64) + product_error(x1c, x2c.T, F64) / scale)
    trace_tol = _trace_sqrt_error(sv**2, _eigen_shift(s1, s2)) + ref_error
    assert abs(got.trace_sqrt_product - nuclear) <= trace_tol
    sums = _sum_error(mu1, s1, mu2, s2, nuclear)
    assert abs(got.distance - exact) <= 2 * trace_tol + 2 * sums
    # scipy's sqrtm of the singular non-symmetric product: real part agrees
    # only loosely, with an imaginary part that is pure rounding noise. Its zero
    # eigenvalue (multiplicity d - r, semisimple) moves by kappa_0 eps, so each
    # square root by sqrt(kappa_0 eps): the real part of the trace by 2 (d - r)
    # of them; the imaginary noise of the root's null block X sqrt(L_0) Y^T, with
    # ||X|| ||Y|| = kappa_0, by kappa_0 sqrt(kappa_0 eps) per entry.
    scipy_value, covmean = _scipy_fid(mu1, s1, mu2, s2)
    eps_, kappa, kappa_0 = _scipy_singular_shifts(s1, s2, r)
    scipy_tol = (2 * (d - r) * np.sqrt(kappa_0 * eps_) + 2 * _trace_sqrt_error(sv**2, kappa * eps_)
                 + ref_error + 2 * sums)
    assert abs(scipy_value - exact) <= scipy_tol
    if np.iscomplexobj(covmean):
        assert np.max(np.abs(covmean.imag)) <= kappa_0 * np.sqrt(kappa_0 * eps_)
    # and the same through the feature path: float64 moments (blocked_gram_error;
    # one block here) perturb S1, S2 by E1, E2, the product's eigenvalues by
    # ||S2|| ||E1|| + ||S1|| ||E2|| (Weyl) and the traces by tr |E|
    e1 = blocked_gram_error(x1, None, F64) / (n1 - 1)
    e2 = blocked_gram_error(x2, None, F64) / (n2 - 1)
    stats_shift = np.linalg.norm(s2, 2) * np.linalg.norm(e1) + np.linalg.norm(s1, 2) * np.linalg.norm(e2)
    feature_tol = (2 * (_trace_sqrt_error(sv**2, _eigen_shift(s1, s2) + stats_shift) + ref_error)
                   + np.trace(e1) + np.trace(e2) + 2 * sums)
    assert abs(frechet_distance_from_features(x1, x2) - exact) <= feature_tol


def test_identical_sets_give_zero(rng):
    f = rng.standard_normal((300, 40)).astype(np.float32) * 3 + 10
    value = frechet_distance_from_features(f, f)
    stats = feature_statistics(f)
    s = stats.covariance
    # exactly 0: 2 tr S - 2 T with T = tr S, so only T's error and the sums' rounding
    m = _product_eigenvalues(s, s)
    zero = np.zeros(len(s))
    assert abs(value) <= 2 * _trace_sqrt_error(m, _eigen_shift(s, s)) + _sum_error(zero, s, zero, s,
                                                                                  np.trace(s))


def test_translation_gives_squared_shift(rng):
    d = 30
    s = _random_spd(rng, d)
    mu = rng.standard_normal(d)
    shift = rng.standard_normal(d)
    m = _product_eigenvalues(s, s)
    # T = tr S exactly; mu - (mu + shift) is -shift up to u |mu + shift| per entry
    moved = mu + shift
    tol = (2 * _trace_sqrt_error(m, _eigen_shift(s, s)) + _sum_error(mu, s, moved, s, np.trace(s))
           + 2 * np.linalg.norm(shift) * gamma(1, F64) * np.linalg.norm(moved)
           + gamma(d, F64) * shift @ shift)
    assert abs(frechet_distance(mu, s, moved, s) - shift @ shift) <= tol


def test_feature_statistics_blockwise_matches_numpy(rng):
    n, d = 1000, 12
    f = (rng.standard_normal((n, d)) * rng.uniform(0.5, 2, d) + 1e3).astype(np.float32)
    ref_mean = f.astype(np.float64).mean(0)
    ref_cov = np.cov(f.astype(np.float64), rowvar=False)
    # float64 means: gamma(n) relative to mean |f| (each side); covariances: the
    # blocked moments' bound plus numpy's one-block centre-then-multiply bound
    mean_tol = 2 * gamma(n, F64) * np.abs(f.astype(np.float64)).mean(0)
    numpy_cov = blocked_gram_error(f, None, F64) / (n - 1)
    for features, rows in ((f, 128), (ArraySource(f), 128), ((f[i:i + 77] for i in range(0, n, 77)), 77)):
        st = feature_statistics(features, block_rows=128)
        assert isinstance(st, FeatureStatistics)
        assert st.n_samples == n
        assert st.mean.dtype == np.float64 and st.covariance.dtype == np.float64
        assert_within(st.mean, ref_mean, mean_tol)
        assert_within(st.covariance, ref_cov, blocked_gram_error(f, rows, F64) / (n - 1) + numpy_cov)


def test_statistics_reuse_equals_features(rng):
    f1 = rng.standard_normal((200, 10))
    f2 = rng.standard_normal((150, 10)) * 1.3 + 0.2
    direct = frechet_distance_from_features(f1, f2)
    # the same statistics program on the same rows: the same numbers
    reused = frechet_distance_from_features(feature_statistics(f1), f2)
    assert reused == direct


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
    # sigma = 0: the same statistics on both sides, exactly 0 up to T's error
    s = clean.covariance
    zero = np.zeros(d)
    assert values[0] <= (2 * _trace_sqrt_error(_product_eigenvalues(s, s), _eigen_shift(s, s))
                         + _sum_error(zero, s, zero, s, np.trace(s)))
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
