import numpy as np
import pytest
import scipy.linalg

from jaxfactor.metrics.protocols import edit_choices, edit_fid

from .test_frechet import fid_error
from .tolerances import blocked_gram_error, gamma

F64 = np.float64


def _scipy_fid(f1, f2):
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def _statistics_error(f, block_rows, row_shift=0.0):
    """(entrywise covariance error, mean error norm) of float64 statistics of
    features ``f`` accumulated in blocks of ``block_rows`` (``None``: numpy's one
    block) when each row may also be off by ``row_shift`` (a norm): the mean by
    their average, the covariance by ``(2 sum ||f_c,i|| d_i + sum d_i^2) / (n - 1)``."""
    n = len(f)
    shift = np.broadcast_to(np.asarray(row_shift, F64), (n,))
    rows = np.linalg.norm(f - f.mean(0), axis=1)
    cov = (blocked_gram_error(f, block_rows, F64) / (n - 1)
           + (2 * rows @ shift + shift @ shift) / (n - 1))
    return cov, gamma(n, F64) * np.linalg.norm(np.abs(f).mean(0)) + shift.mean()


def _fid_tolerance(f1, f2, block_rows, row_shift=0.0):
    """Ours (blocked statistics, frechet_terms) against the float64 reference of
    the same features (numpy statistics, pytorch-fid's sqrtm): each within its
    bound of the exact FD of the exact statistics."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    (c1, m1), (c2, m2) = _statistics_error(f1, block_rows), _statistics_error(f2, block_rows, row_shift)
    (r1, n1), (r2, n2) = _statistics_error(f1, None), _statistics_error(f2, None)
    return (fid_error(mu1, s1, mu2, s2, cov_error=(c1, c2), mean_error=(m1, m2))
            + fid_error(mu1, s1, mu2, s2, cov_error=(r1, r2), mean_error=(n1, n2), scipy=True))


@pytest.fixture
def linear_generator(rng):
    d, p = 6, 10
    weights = rng.standard_normal((d, p))

    def render(z):  # "images" (b, p) float
        return np.tanh(z @ weights)

    render.weights = weights

    def features(images):
        return images * 2.0 + 1.0

    return d, render, features


def test_edit_fid_matches_hand_computed_reference(rng, linear_generator):
    d, render, features = linear_generator
    latents = rng.standard_normal((400, d))
    directions = rng.standard_normal((5, d)) * 3.0
    result = edit_fid(render, latents, directions, features, alpha_range=3.0, seed=7,
                      batch_size=64)
    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    edited = latents + result.alpha[:, None] * unit[result.direction_index]
    f1, f2 = features(render(latents)), features(render(edited))
    ref = _scipy_fid(f1, f2)
    # the same latents, but the products z W of 64-row batches and of the whole
    # may round differently: 2 gamma(d) |z| |W| each, times features' 2 (tanh is
    # 1-Lipschitz), per row
    def product(z):
        return 4 * gamma(d, F64) * np.linalg.norm(np.abs(z) @ np.abs(render.weights), axis=1)

    tol = _fid_tolerance(f1, f2, 64, row_shift=np.maximum(product(latents), product(edited)))
    assert abs(result.fid - ref) <= tol
    assert result.direction_index.shape == (400,) and result.alpha.shape == (400,)
    assert np.all(np.abs(result.alpha) <= 3.0)
    assert result.original_statistics.n_samples == result.edited_statistics.n_samples == 400


def test_choices_reproducible_and_scaled(rng):
    i3, a3 = edit_choices(1000, 7, alpha_range=3.0, seed=11)
    i6, a6 = edit_choices(1000, 7, alpha_range=6.0, seed=11)
    np.testing.assert_array_equal(i3, i6)
    np.testing.assert_array_equal(a6, 2 * a3)  # 6 u and 2 (3 u): a power of two apart, exactly
    i_other, a_other = edit_choices(1000, 7, alpha_range=3.0, seed=12)
    assert not np.array_equal(a3, a_other)
    assert set(np.unique(i3)) == set(range(7))
    # all n = 1000 of |U[-6, 6]| below 6 (1 - 17 / n) has probability (1 - 17 / n)^n ~ e^-17
    assert np.all(np.abs(a6) <= 6.0) and np.max(np.abs(a6)) > 6.0 * (1 - 17 / len(a6))


def test_alpha_distributions(rng):
    n = 20000
    _, uniform = edit_choices(n, 3, alpha_range=6.0, alpha_dist="uniform", seed=1)
    _, normal = edit_choices(n, 3, alpha_range=6.0, alpha_dist="normal", seed=1)
    # U[-6, 6] has std 6/sqrt(3); 6 N(0, 1) has std 6. 4 sigma sampling bounds: a
    # sample std's relative error has std sqrt((kurtosis - 1) / (4 n)) (kurtosis
    # 9/5 uniform, 3 normal), a sample mean's std is 6 / sqrt(n).
    assert np.std(uniform) == pytest.approx(6 / np.sqrt(3), rel=4 * np.sqrt((9 / 5 - 1) / (4 * n)))
    assert np.std(normal) == pytest.approx(6.0, rel=4 * np.sqrt((3 - 1) / (4 * n)))
    assert abs(np.mean(normal)) < 4 * 6.0 / np.sqrt(n)
    assert np.max(np.abs(normal)) > 6.0  # unbounded, unlike the uniform draw


def test_same_seed_same_number_and_normalisation(rng, linear_generator):
    d, render, features = linear_generator
    latents = rng.standard_normal((100, d))
    directions = rng.standard_normal((3, d))
    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    a = edit_fid(render, latents, directions, features, seed=3)
    b = edit_fid(render, latents, 10 * directions, features, seed=3)
    c = edit_fid(render, latents, unit, features, seed=3, normalize=False)
    # normalising 10 d gives d's unit vector to within 2 gamma(d) (each of the two
    # within gamma(d)), which moves an edited row by |alpha| 2 gamma(d) ||W|| times
    # features' 2, and both runs carry their own rounding (the products with W too)
    f1 = features(render(latents))
    edited = latents + a.alpha[:, None] * unit[a.direction_index]
    f2 = features(render(edited))
    product = 4 * gamma(d, F64) * np.linalg.norm(np.abs(edited) @ np.abs(render.weights), axis=1)
    moved = 2 * np.abs(a.alpha) * 2 * gamma(d, F64) * np.linalg.norm(render.weights, 2) + product
    mu1, mu2, s1, s2 = f1.mean(0), f2.mean(0), np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    (c1, m1), (c2, m2) = _statistics_error(f1, 50), _statistics_error(f2, 50, moved)
    assert abs(a.fid - b.fid) <= 2 * fid_error(mu1, s1, mu2, s2, cov_error=(c1, c2), mean_error=(m1, m2))
    # unit is computed here as edit_fid computes it (sqrt of the sum of squares
    # along the rows): the same numbers, the same program
    assert a.fid == c.fid
    # unnormalised, longer directions move images further
    d_long = edit_fid(render, latents, 4 * unit, features, seed=3, normalize=False)
    assert d_long.fid > a.fid


def test_larger_range_larger_fid_and_statistics_reuse(rng, linear_generator):
    d, render, features = linear_generator
    latents = rng.standard_normal((300, d))
    directions = np.eye(d)[:4]
    r3 = edit_fid(render, latents, directions, features, alpha_range=3.0, seed=0)
    r6 = edit_fid(render, latents, directions, features, alpha_range=6.0, seed=0,
                  original_statistics=r3.original_statistics)
    r6_fresh = edit_fid(render, latents, directions, features, alpha_range=6.0, seed=0)
    # the originals' statistics are the same program's on the same latents
    assert r6.fid == r6_fresh.fid
    assert r6.fid > r3.fid > 0


def test_wplus_shaped_latents(rng):
    n, layers, d = 60, 3, 4
    latents = rng.standard_normal((n, layers, d))
    directions = rng.standard_normal((2, layers, d))
    render = lambda z: z.reshape(len(z), -1)  # noqa: E731
    result = edit_fid(render, latents, directions, lambda x: x, seed=5, batch_size=16)
    unit = directions / np.sqrt(np.sum(directions ** 2, axis=(1, 2), keepdims=True))
    edited = latents + result.alpha[:, None, None] * unit[result.direction_index]
    f1, f2 = latents.reshape(n, -1), edited.reshape(n, -1)
    ref = _scipy_fid(f1, f2)
    # edit_fid's own formula for the edits: the same features, only the
    # statistics' and the FD's rounding differ
    assert abs(result.fid - ref) <= _fid_tolerance(f1, f2, 16)


def test_errors(rng):
    latents = rng.standard_normal((10, 3))
    ident = lambda x: x  # noqa: E731
    with pytest.raises(ValueError, match="alpha_dist"):
        edit_fid(ident, latents, np.eye(3), ident, alpha_dist="cauchy")
    with pytest.raises(ValueError, match="alpha_range"):
        edit_fid(ident, latents, np.eye(3), ident, alpha_range=-1.0)
    with pytest.raises(ValueError, match="directions have shape"):
        edit_fid(ident, latents, np.eye(4), ident)
    with pytest.raises(ValueError, match="zero"):
        edit_fid(ident, latents, np.zeros((2, 3)), ident)
    with pytest.raises(ValueError, match="at least 2"):
        edit_fid(ident, latents[:1], np.eye(3), ident)
