import math
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.base import clone
from sklearn.utils.estimator_checks import check_estimator

from jaxfactor._validation import ConvergenceWarning, NotFittedError
from jaxfactor.sca import (SCA, choose_reduced_rank, flip_skewness, prs, sca,
                           sca_iterate)
from jaxfactor.sources import ArraySource

from .helpers import exact_pca, principal_angles_deg


# One data shape for (nearly) every fit: each new shape costs a JIT compilation
# of the whole SCA loop, which dominates the run time of these tests.
N, P, K = 300, 100, 3


def planted_sparse(rng, n=N, p=P, k=K, support=15, scales=(8.0, 6.0, 4.0), noise=0.2,
                   offset=2.0):
    """Rows ``offset + S diag(scales) Y^T + noise`` with ``Y`` sparse, disjoint supports."""
    y = np.zeros((p, k))
    perm = rng.permutation(p)
    for j in range(k):
        rows = perm[j * support:(j + 1) * support]
        y[rows, j] = rng.uniform(0.5, 1.5, support) * rng.choice([-1, 1], support)
    y /= np.linalg.norm(y, axis=0)
    s = rng.standard_normal((n, k)) * np.asarray(scales)[:k]
    x = offset * rng.standard_normal(p) + s @ y.T + noise * rng.standard_normal((n, p))
    return x.astype(np.float32), y


def match_columns(a, b):
    """Permutation of ``b``'s columns best matching ``a``'s by |cosine|."""
    na = a / np.maximum(np.linalg.norm(a, axis=0), 1e-30)
    nb = b / np.maximum(np.linalg.norm(b, axis=0), 1e-30)
    _, cols = linear_sum_assignment(-np.abs(na.T @ nb))
    return b[:, cols]


# About 60 s of CPU, nearly all of it XLA compiling the SCA loop for each of the
# dozen data shapes the checks use; the default suite checks the contract on one
# shape below (test_transformer_contract_on_one_shape).
@pytest.mark.slow
def test_check_estimator():
    check_estimator(SCA())


def test_transformer_contract_on_one_shape(rng):
    x, _ = planted_sparse(rng)
    model = SCA(3, random_state=0)
    assert clone(model).get_params() == model.get_params()
    scores = model.fit_transform(x)
    np.testing.assert_allclose(scores, model.transform(x), atol=1e-5)
    assert scores.shape == (N, K) and scores.dtype == np.float32
    assert model.n_features_in_ == P and model.components_.shape == (K, P)
    assert model.get_feature_names_out().tolist() == ["sca0", "sca1", "sca2"]
    # rows are transformed independently of one another
    np.testing.assert_allclose(model.transform(x[::-1])[::-1], scores, atol=1e-5)
    refit = SCA(3, random_state=0).fit(x)
    np.testing.assert_array_equal(refit.components_, model.components_)


def test_planted_sparse_loadings_recovered(rng):
    x, y_true = planted_sparse(rng)
    gamma = 0.95 * np.abs(y_true).sum()
    model = SCA(3, gamma=gamma).fit(x)
    assert model.converged_ and model.n_iter_ < 200
    y = match_columns(y_true, model.components_.T)
    true_support, support = y_true != 0, y != 0
    overlap = (true_support & support).sum() / (true_support | support).sum()
    assert overlap >= 0.9, overlap
    cos = np.abs(np.sum(y * y_true, axis=0)) / np.linalg.norm(y, axis=0)
    assert cos.min() > 0.99, cos
    # the budget is met (it binds: the planted L1 norm is larger)
    assert abs(np.abs(model.components_).sum() - gamma) <= 1e-4 * gamma
    assert model.sparsity_ == pytest.approx(np.mean(model.components_ == 0))
    assert model.sparsity_ > 0.8
    # canonical form: positive sum of cubes, columns ordered by explained variance
    assert np.all(np.sum(model.components_ ** 3, axis=1) > 0)
    xc = x.astype(np.float64) - x.mean(axis=0)
    var = np.sum((xc @ model.components_.T) ** 2, axis=0)
    assert np.all(np.diff(var) <= 1e-6 * var[0])


def test_inactive_gamma_spans_pca_subspace(rng):
    x, _ = planted_sparse(rng, noise=0.5)
    k = K
    with pytest.warns(UserWarning, match="inactive"):
        model = SCA(k, gamma=2 * k * math.sqrt(P)).fit(x)
    vt, ev, mean = exact_pca(x)
    assert principal_angles_deg(model.components_, vt[:k]).max() < 0.05
    # rotated PCA: orthonormal loadings, no zeros, PCA's cumulative explained variance
    np.testing.assert_allclose(model.components_ @ model.components_.T, np.eye(k), atol=1e-5)
    assert model.sparsity_ == 0.0
    np.testing.assert_allclose(model.explained_variance_ratio_[-1], ev[:k].sum() / ev.sum(),
                               rtol=1e-5)
    np.testing.assert_allclose(model.mean_, mean, atol=1e-5 * np.abs(mean).max())
    # ||B||_F is the norm of the top-k singular values
    s = np.sqrt(ev[:k] * (x.shape[0] - 1))
    np.testing.assert_allclose(model.objective_, np.linalg.norm(s), rtol=1e-5)


def test_objective_is_monotone(rng):
    x, y_true = planted_sparse(rng, noise=0.6)
    xj = jnp.asarray(x)
    mean = jnp.mean(xj, axis=0)
    y0 = jnp.asarray(exact_pca(x)[0][:3].T, jnp.float32)
    gamma = float(0.7 * np.abs(y_true).sum())
    objectives = [float(sca_iterate(xj, mean, y0, gamma, tol=0.0, max_iter=m,
                                    rotate="varimax").objective) for m in range(1, 12)]
    steps = np.diff(objectives)
    assert np.all(steps >= -1e-5 * objectives[0]), objectives


def test_explained_variance_and_inverse_transform_are_projections(rng):
    x, y_true = planted_sparse(rng, support=12)
    model = SCA(3, gamma=0.8 * np.abs(y_true).sum(), random_state=1).fit(x)
    xc = x.astype(np.float64) - x.mean(axis=0)
    y = model.components_.T.astype(np.float64)
    total = np.sum(xc ** 2)
    for j in range(1, 4):
        q = np.linalg.qr(y[:, :j])[0]
        np.testing.assert_allclose(model.explained_variance_ratio_[j - 1],
                                   np.sum((xc @ q) ** 2) / total, rtol=1e-4)
    scores = model.transform(x)
    np.testing.assert_allclose(scores, xc @ y, atol=1e-4 * np.abs(xc @ y).max())
    back = model.inverse_transform(scores).astype(np.float64) - x.mean(axis=0)
    q = np.linalg.qr(y)[0]
    np.testing.assert_allclose(back, xc @ q @ q.T, atol=1e-3 * np.abs(xc).max())
    assert np.sum(back ** 2) / total == pytest.approx(model.explained_variance_ratio_[-1],
                                                        rel=1e-4)
    # B = Z^T X_c Y with orthonormal Z: ||B||_F <= ||X_c Y||_F
    assert model.objective_ <= np.linalg.norm(scores) * (1 + 1e-5)
    assert model.B_.shape == (3, 3)


def test_reduced_space_variant_matches_full_on_low_rank_data(rng):
    x, y_true = planted_sparse(rng, noise=0.05)
    gamma = 0.95 * np.abs(y_true).sum()
    full = SCA(3, gamma=gamma).fit(x)
    reduced = SCA(3, gamma=gamma, reduced_rank=10, svd_solver="randomized").fit(x)
    assert reduced.converged_
    # nearly rank 3: the rank-10 problem is almost the same problem
    assert reduced.objective_ >= 0.999 * full.objective_
    assert principal_angles_deg(reduced.components_, full.components_).max() < 2.0
    overlap = np.mean((reduced.components_ != 0) == (full.components_ != 0))
    assert overlap > 0.97


def test_varimax_start_previous_reaches_a_nearby_fixed_point(rng):
    x, y_true = planted_sparse(rng)
    gamma = 0.95 * np.abs(y_true).sum()
    restart = SCA(3, gamma=gamma).fit(x)
    follow = SCA(3, gamma=gamma, varimax_start="previous").fit(x)
    assert follow.converged_
    np.testing.assert_allclose(follow.objective_, restart.objective_, rtol=1e-3)
    assert np.mean((follow.components_ != 0) == (restart.components_ != 0)) > 0.97


def test_warm_loop_skipping_the_sample_rotation_keeps_the_iterates(rng):
    # With varimax started from the previous loadings, the loop leaves the
    # sample side unrotated until the end; the loadings must be those of the
    # plain alternation that rotates Z every time (written out here with prs).
    # Unstructured data with a decaying spectrum, so that varimax is far from
    # converged within the few warm steps of each call.
    mix = rng.standard_normal((20, P)) * (np.arange(1, 21) ** -0.8)[:, None]
    x = (rng.laplace(size=(N, 20)) @ mix).astype(np.float32)
    gamma = 0.5 * math.sqrt(P * K)
    xc = jnp.asarray(x - x.mean(axis=0))
    y0 = jnp.asarray(exact_pca(x)[0][:K].T, jnp.float32)

    def ordered(a, product):
        return a[:, np.argsort(-np.sum(np.asarray(product) ** 2, axis=0), kind="stable")]

    z = ordered(prs(xc @ y0), xc.T @ prs(xc @ y0))
    y = ordered(prs(xc.T @ z, gamma), xc @ prs(xc.T @ z, gamma))
    for _ in range(3):
        zn = prs(xc @ y, previous=z)
        z = ordered(zn, xc.T @ zn)
        yn = prs(xc.T @ z, gamma, previous=y)
        y = ordered(yn, xc @ yn)
    res = sca_iterate(jnp.asarray(x), jnp.asarray(x.mean(axis=0)), y0, gamma, tol=0.0,
                      max_iter=4, varimax_start="previous")
    assert int(res.n_iter) == 4
    np.testing.assert_allclose(np.asarray(res.loadings), np.asarray(y), atol=2e-5)


def test_prs_block_and_flip(rng):
    a = rng.standard_normal((50, 4)).astype(np.float32)
    q = np.asarray(prs(jnp.asarray(a)))
    np.testing.assert_allclose(q.T @ q, np.eye(4), atol=1e-5)
    assert np.all(np.sum(q ** 3, axis=0) >= 0)
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    # rotation only: same span as the polar factor
    assert principal_angles_deg(q.T, (u @ vt).T).max() < 0.05
    shrunk = np.asarray(prs(jnp.asarray(a), 3.0))
    assert np.abs(shrunk).sum() == pytest.approx(3.0, rel=1e-5)
    f = np.asarray(flip_skewness(jnp.asarray(-q)))
    np.testing.assert_allclose(f, q, atol=1e-7)


def test_deterministic_and_clone(rng):
    x, _ = planted_sparse(rng, support=10)
    a = SCA(3, random_state=5).fit(x)
    b = clone(a).fit(x)
    np.testing.assert_array_equal(a.components_, b.components_)
    np.testing.assert_array_equal(a.B_, b.B_)
    assert a.n_iter_ == b.n_iter_ and a.gamma_ == pytest.approx(math.sqrt(P * 3))


def test_kernel_function_matches_estimator(rng):
    x, _ = planted_sparse(rng, support=8)
    import jax

    res = sca(jnp.asarray(x), 3, key=jax.random.key(0), gamma=6.0)
    model = SCA(3, gamma=6.0).fit(x)
    np.testing.assert_allclose(np.asarray(res.loadings).T, model.components_, atol=1e-6)
    assert int(res.n_iter) == model.n_iter_ and bool(res.converged)


def test_bad_input(rng):
    x, _ = planted_sparse(rng, support=5)
    for gamma in (0, -1.0, float("nan"), float("inf"), "3", True):
        with pytest.raises(ValueError, match="gamma"):
            SCA(2, gamma=gamma).fit(x)
    with pytest.warns(UserWarning, match="cannot meet"):
        SCA(3, gamma=2.5).fit(x)
    bad = x.copy()
    bad[3, 4] = np.nan
    bad[7, 1] = np.inf
    with pytest.raises(ValueError, match="1 NaN and 1 inf"):
        SCA(2).fit(bad)
    ints = np.round(4 * x).astype(np.int64)        # converted, as scikit-learn does
    np.testing.assert_array_equal(SCA(2).fit(ints).components_,
                                  SCA(2).fit(ints.astype(np.float32)).components_)
    with pytest.raises(ValueError, match="2D"):
        SCA(2).fit(x[0])
    with pytest.raises(ValueError, match="n_components=101"):
        SCA(101).fit(x)
    with pytest.raises(ValueError, match="rotate"):
        SCA(2, rotate="quartimax").fit(x)
    with pytest.raises(ValueError, match="reduced_rank"):
        SCA(3, reduced_rank=2).fit(x)
    for kw in ({"max_iter": 0}, {"tol": -1.0}, {"svd_solver": "arpack"},
               {"varimax_start": "random"}):
        with pytest.raises(ValueError):
            SCA(2, **kw).fit(x)
    with pytest.raises(NotFittedError):
        SCA(2).transform(x)
    model = SCA(3).fit(x)
    with pytest.raises(ValueError, match="features"):
        model.transform(x[:, :5])
    with pytest.raises(ValueError, match="components"):
        model.inverse_transform(x[:, :4])
    with pytest.warns(ConvergenceWarning, match="SCA did not converge after 1 iterations"):
        SCA(3, max_iter=1).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SCA(3).fit(x)  # default gamma is in range and converges: no warning


def test_mean_padding_rows_change_nothing(rng):
    # the single-device form of row sharding: pad with mean rows, pass the true count
    import jax

    x, y_true = planted_sparse(rng)
    gamma = 0.9 * np.abs(y_true).sum()
    padded = np.concatenate([x, np.broadcast_to(x.mean(0), (4, P))]).astype(np.float32)
    # (the reduced variant is checked the same way on a real mesh in test_sca_scale.py)
    plain = sca(jnp.asarray(x), 3, key=jax.random.key(0), gamma=gamma)
    pad = sca(jnp.asarray(padded), 3, key=jax.random.key(0), gamma=gamma, n_rows=N)
    np.testing.assert_allclose(np.asarray(pad.loadings), np.asarray(plain.loadings), atol=2e-5)
    np.testing.assert_allclose(np.asarray(pad.explained_variance_ratio),
                               np.asarray(plain.explained_variance_ratio), rtol=1e-4)
    assert np.max(np.abs(np.asarray(pad.scores)[N:])) < 1e-4 * np.abs(np.asarray(pad.scores)).max()


def test_row_source_fit_matches_in_memory_reduced_fit(rng):
    x, y_true = planted_sparse(rng)
    gamma = 0.9 * np.abs(y_true).sum()
    mem = SCA(3, gamma=gamma, reduced_rank=10).fit(x)
    src = SCA(3, gamma=gamma, reduced_rank=10, block_rows=64).fit(ArraySource(x))
    assert src.reduced_rank_ == 10 and src.n_features_in_ == P
    np.testing.assert_allclose(src.components_, mem.components_, atol=1e-4)
    np.testing.assert_allclose(src.explained_variance_ratio_, mem.explained_variance_ratio_,
                               rtol=1e-4)
    np.testing.assert_allclose(src.B_, mem.B_, atol=1e-3 * np.abs(mem.B_).max())
    np.testing.assert_allclose(src.transform(x), mem.transform(x), atol=1e-3)


def test_reduced_rank_policy():
    assert choose_reduced_rank("auto", 300, 100, 3) is None           # small: iterate on X
    assert choose_reduced_rank("auto", 10000, 16384, 50) == 110       # large: rank 2k + 10
    assert choose_reduced_rank("auto", 10000, 16384, 5000) == 10000   # capped at min(n, p)
    assert choose_reduced_rank(None, 10000, 16384, 50) is None
    assert choose_reduced_rank(7, 10000, 16384, 5) == 7
    # row sources always use the reduced variant
    assert choose_reduced_rank(None, 300, 100, 3, in_memory=False) == 16
    assert choose_reduced_rank(7, 300, 100, 3, in_memory=False) == 7
