import numpy as np
import pytest
import scipy.linalg

from jaxfactor.metrics.protocols import edit_choices, edit_fid


def _scipy_fid(f1, f2):
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


@pytest.fixture
def linear_generator(rng):
    d, p = 6, 10
    weights = rng.standard_normal((d, p))

    def render(z):  # "images" (b, p) float
        return np.tanh(z @ weights)

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
    ref = _scipy_fid(features(render(latents)), features(render(edited)))
    assert result.fid == pytest.approx(ref, rel=1e-6)
    assert result.direction_index.shape == (400,) and result.alpha.shape == (400,)
    assert np.all(np.abs(result.alpha) <= 3.0)
    assert result.original_statistics.n_samples == result.edited_statistics.n_samples == 400


def test_choices_reproducible_and_scaled(rng):
    i3, a3 = edit_choices(1000, 7, alpha_range=3.0, seed=11)
    i6, a6 = edit_choices(1000, 7, alpha_range=6.0, seed=11)
    np.testing.assert_array_equal(i3, i6)
    np.testing.assert_allclose(a6, 2 * a3, rtol=1e-15)
    i_other, a_other = edit_choices(1000, 7, alpha_range=3.0, seed=12)
    assert not np.array_equal(a3, a_other)
    assert set(np.unique(i3)) == set(range(7))
    assert np.all(np.abs(a6) <= 6.0) and np.max(np.abs(a6)) > 5.9


def test_alpha_distributions(rng):
    _, uniform = edit_choices(20000, 3, alpha_range=6.0, alpha_dist="uniform", seed=1)
    _, normal = edit_choices(20000, 3, alpha_range=6.0, alpha_dist="normal", seed=1)
    # U[-6, 6] has std 6/sqrt(3); 6 N(0, 1) has std 6 (4-5 sigma bounds for 20000 draws).
    assert np.std(uniform) == pytest.approx(6 / np.sqrt(3), rel=0.03)
    assert np.std(normal) == pytest.approx(6.0, rel=0.03)
    assert abs(np.mean(normal)) < 0.15
    assert np.max(np.abs(normal)) > 6.0  # unbounded, unlike the uniform draw


def test_same_seed_same_number_and_normalisation(rng, linear_generator):
    d, render, features = linear_generator
    latents = rng.standard_normal((100, d))
    directions = rng.standard_normal((3, d))
    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    a = edit_fid(render, latents, directions, features, seed=3)
    b = edit_fid(render, latents, 10 * directions, features, seed=3)
    c = edit_fid(render, latents, unit, features, seed=3, normalize=False)
    assert a.fid == pytest.approx(b.fid, rel=1e-9)
    assert a.fid == pytest.approx(c.fid, rel=1e-9)
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
    assert r6.fid == pytest.approx(r6_fresh.fid, rel=1e-12)
    assert r6.fid > r3.fid > 0


def test_wplus_shaped_latents(rng):
    n, layers, d = 60, 3, 4
    latents = rng.standard_normal((n, layers, d))
    directions = rng.standard_normal((2, layers, d))
    render = lambda z: z.reshape(len(z), -1)  # noqa: E731
    result = edit_fid(render, latents, directions, lambda x: x, seed=5, batch_size=16)
    unit = directions / np.sqrt(np.sum(directions ** 2, axis=(1, 2), keepdims=True))
    edited = latents + result.alpha[:, None, None] * unit[result.direction_index]
    ref = _scipy_fid(latents.reshape(n, -1), edited.reshape(n, -1))
    assert result.fid == pytest.approx(ref, rel=1e-6)


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
