import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.decomposition import FastICA as SkFastICA
from sklearn.utils.estimator_checks import check_estimator

from jaxfactor._validation import ConvergenceWarning, NotFittedError
from jaxfactor.ica import FastICA, fastica, whiten
from jaxfactor.metrics.amari import amari_distance, match_sources

# One planted problem shape shared by most tests, so that each compiled program is reused.
N, P, K = 2000, 48, 6


def planted(rng, n=N, p=P, noise=0.01):
    """Six independent unit-variance sources -- Laplace and Student-t(5) (super-Gaussian),
    uniform and a two-point mixture (sub-Gaussian), exponential (skewed) and a sine wave --
    mixed into ``p`` features by a Gaussian matrix, plus a mean and a little noise.

    Returns ``(X float32 (n, p), sources (n, 6), mixing (p, 6))``."""
    s = np.column_stack([
        rng.laplace(size=n),
        rng.standard_t(5, size=n),
        rng.uniform(-1, 1, size=n),
        rng.choice([-1.0, 1.0], size=n) + 0.2 * rng.standard_normal(n),
        rng.exponential(size=n),
        np.sin(np.linspace(0, 40 * np.pi, n) + rng.uniform(0, 2 * np.pi)),
    ])
    s = (s - s.mean(axis=0)) / s.std(axis=0)
    a = rng.standard_normal((p, s.shape[1]))
    x = s @ a.T + 3.0 * rng.standard_normal(p) + noise * rng.standard_normal((n, p))
    return x.astype(np.float32), s, a


def same_rows_up_to_sign_and_order(a, b):
    """Largest deviation between the rows of ``a`` and ``b`` after matching them by
    absolute cosine and fixing signs (rows normalised)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cos = a @ b.T
    idx = np.argmax(np.abs(cos), axis=1)
    assert len(set(idx.tolist())) == a.shape[0], "rows do not match one to one"
    signs = np.sign(cos[np.arange(a.shape[0]), idx])
    return float(np.max(np.abs(a - signs[:, None] * b[idx])))


def test_check_estimator():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check_estimator(FastICA())


# --------------------------------------------------------------- recovery


@pytest.mark.parametrize("algorithm", ["parallel", "deflation"])
@pytest.mark.parametrize("fun", ["logcosh", "exp", "cube"])
def test_planted_recovery(rng, algorithm, fun):
    x, s, a = planted(rng)
    model = FastICA(K, algorithm=algorithm, fun=fun, random_state=1, max_iter=400).fit(x)
    assert model.converged_ and 1 <= model.n_iter_ <= 400
    ours = amari_distance(model.components_, a)
    # cube (kurtosis) is the weakest contrast on these mixed sources
    assert ours < (0.08 if fun == "cube" else 0.06)
    # and comparable to scikit-learn's estimate from the same data (float64). The starting
    # points differ (a JAX key vs a RandomState), and deflation's error accumulates along
    # its order of extraction, so its margin is wider (seen: 0.051 vs 0.031 for cube).
    ref = SkFastICA(K, algorithm=algorithm, fun=fun, whiten="unit-variance", random_state=1,
                    max_iter=400).fit(x.astype(np.float64))
    factor, slack = (1.2, 0.005) if algorithm == "parallel" else (2.0, 0.01)
    assert ours <= factor * amari_distance(ref.components_, a) + slack
    corr = match_sources(model.transform(x), s).correlations
    assert corr.min() > (0.97 if fun == "cube" else 0.98)


def test_planted_recovery_wide_randomized_whitening(rng):
    x, s, a = planted(rng, n=600, p=4096)
    res = whiten(jnp.asarray(x), K, solver="randomized", key=jax.random.key(5))
    z = np.asarray(res.white, np.float64)
    np.testing.assert_allclose(z.T @ z / z.shape[0], np.eye(K), atol=2e-3)
    xc = x.astype(np.float64) - x.mean(0, dtype=np.float64)
    ref_s = np.sqrt(np.linalg.eigvalsh(xc @ xc.T)[::-1][:K])      # (n, n) Gram: n << p
    np.testing.assert_allclose(np.asarray(res.singular_values), ref_s, rtol=2e-3)
    model = FastICA(K, random_state=0).fit(x)
    assert model.whiten_solver_ == "randomized"
    assert model.converged_
    assert amari_distance(model.components_, a) < 0.04
    assert match_sources(model.transform(x), s).correlations.min() > 0.98


def test_parallel_and_deflation_find_the_same_sources(rng):
    x, _, _ = planted(rng)
    par = FastICA(K, algorithm="parallel", random_state=0).fit(x)
    dfl = FastICA(K, algorithm="deflation", random_state=0).fit(x)
    assert amari_distance(par.components_, dfl.mixing_) < 0.03


# ------------------------------------------------------ agreement with scikit-learn


@pytest.mark.parametrize("algorithm,fun", [("parallel", "logcosh"), ("parallel", "exp"),
                                           ("parallel", "cube"), ("deflation", "logcosh")])
def test_same_fixed_point_as_sklearn_on_whitened_data(rng, algorithm, fun):
    x, _, _ = planted(rng)
    white = whiten(jnp.asarray(x), K, solver="svd").white
    w0 = rng.standard_normal((K, K))
    ours = fastica(white, w_init=jnp.asarray(w0, jnp.float32), algorithm=algorithm, fun=fun,
                   tol=1e-6, max_iter=1000)
    assert bool(ours.converged)
    ref = SkFastICA(whiten=False, algorithm=algorithm, fun=fun, w_init=w0, tol=1e-6,
                    max_iter=1000).fit(np.asarray(white, np.float64))
    # Same start, same iteration: the same rows (not only up to order and sign).
    w_ours = np.asarray(ours.w, np.float64)
    assert same_rows_up_to_sign_and_order(w_ours, ref.components_) < 2e-3
    np.testing.assert_allclose(np.abs(np.sum(w_ours * ref.components_, axis=1)), 1.0, atol=1e-4)


@pytest.mark.parametrize("whiten_mode", ["unit-variance", "arbitrary-variance"])
def test_estimator_matches_sklearn_with_same_w_init(rng, whiten_mode):
    x, _, _ = planted(rng)
    w0 = rng.standard_normal((K, K))
    ours = FastICA(K, whiten=whiten_mode, whiten_solver="svd", w_init=w0, tol=1e-6,
                   max_iter=1000).fit(x)
    ref = SkFastICA(K, whiten=whiten_mode, whiten_solver="svd", w_init=w0, tol=1e-6,
                    max_iter=1000).fit(x.astype(np.float64))
    # whitening_ is the same matrix (sklearn's sign convention: first feature positive)
    np.testing.assert_allclose(ours.whitening_, ref.whitening_, rtol=1e-3,
                               atol=1e-4 * np.abs(ref.whitening_).max())
    np.testing.assert_allclose(ours.mean_, ref.mean_, rtol=1e-5, atol=1e-5)
    # components_ and mixing_ are sklearn's up to order and sign, with the same scale
    c_ours, c_ref = ours.components_, ref.components_
    cos = (c_ours / np.linalg.norm(c_ours, axis=1, keepdims=True)) @ \
        (c_ref / np.linalg.norm(c_ref, axis=1, keepdims=True)).T
    idx = np.argmax(np.abs(cos), axis=1)
    assert sorted(idx.tolist()) == list(range(K))
    signs = np.sign(cos[np.arange(K), idx])
    np.testing.assert_allclose(c_ours, signs[:, None] * c_ref[idx], rtol=2e-3,
                               atol=2e-3 * np.abs(c_ref).max())
    np.testing.assert_allclose(ours.mixing_, ref.mixing_[:, idx] * signs[None, :], rtol=2e-3,
                               atol=2e-3 * np.abs(ref.mixing_).max())
    np.testing.assert_allclose(np.abs(ours.transform(x)), np.abs(ref.transform(x)[:, idx]),
                               atol=1e-2 * np.abs(ref.transform(x)).max())


def test_no_whitening_matches_sklearn(rng):
    x, _, _ = planted(rng)
    white = np.asarray(whiten(jnp.asarray(x), K, solver="svd").white)
    w0 = rng.standard_normal((K, K))
    ours = FastICA(whiten=False, w_init=w0, tol=1e-6, max_iter=1000).fit(white)
    ref = SkFastICA(whiten=False, w_init=w0, tol=1e-6, max_iter=1000).fit(white.astype(np.float64))
    assert same_rows_up_to_sign_and_order(ours.components_, ref.components_) < 2e-3
    assert not hasattr(ours, "whitening_")
    np.testing.assert_array_equal(ours.mean_, 0.0)


# ------------------------------------------------------------- attributes


def test_attributes_and_transforms(rng):
    x, _, _ = planted(rng)
    model = FastICA(K, random_state=0).fit(x)
    c, m, d = model.components_, model.mixing_, model.directions_
    assert c.shape == (K, P) and m.shape == (P, K) and d.shape == (K, P)
    assert model.whitening_.shape == (K, P) and model.n_components_ == K
    assert all(isinstance(v, np.ndarray) for v in (c, m, d, model.mean_, model.whitening_))
    x64 = x.astype(np.float64)
    # mixing_ is the pseudo-inverse of components_
    np.testing.assert_allclose(c @ m, np.eye(K), atol=1e-4)
    np.testing.assert_allclose(m, np.linalg.pinv(c.astype(np.float64)), rtol=1e-3,
                               atol=1e-3 * np.abs(m).max())
    # transform is (X - mean) components^T; unit-variance sources, uncorrelated
    src = model.transform(x)
    np.testing.assert_allclose(src, (x64 - x64.mean(0)) @ c.T.astype(np.float64), atol=1e-3)
    np.testing.assert_allclose(np.cov(src.T, ddof=0), np.eye(K), atol=1e-3)
    np.testing.assert_array_equal(model.fit_transform(x), src)
    # inverse_transform projects onto the whitened PCA subspace
    _, _, vt = np.linalg.svd(x64 - x64.mean(0), full_matrices=False)
    proj = (x64 - x64.mean(0)) @ vt[:K].T @ vt[:K] + x64.mean(0)
    np.testing.assert_allclose(model.inverse_transform(src), proj, atol=2e-3 * np.abs(x).max())
    # directions: unit norm, largest entry positive, parallel to mixing columns, sorted by
    # explained variance whose sum is the variance of the PCA subspace
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-5)
    assert np.all(d[np.arange(K), np.argmax(np.abs(d), axis=1)] > 0)
    np.testing.assert_allclose(d, (m / np.linalg.norm(m, axis=0)).T, rtol=1e-5, atol=1e-6)
    ev = model.explained_variance_
    assert np.all(np.diff(ev) <= 0)
    pca_var = np.sum(np.var((x64 - x64.mean(0)) @ vt[:K].T, axis=0, ddof=1))
    assert ev.sum() == pytest.approx(pca_var, rel=1e-3)
    np.testing.assert_allclose(ev, np.sum(m.astype(np.float64) ** 2, axis=0)
                               * np.var(src, axis=0, ddof=1), rtol=1e-3)


def test_arbitrary_variance_sources_and_jax_input(rng):
    x, _, a = planted(rng)
    model = FastICA(K, whiten="arbitrary-variance", random_state=0).fit(jnp.asarray(x))
    out = model.transform(jnp.asarray(x))
    assert isinstance(out, jax.Array)
    # sklearn's convention: the unscaled sources have variance 1/n
    np.testing.assert_allclose(np.var(np.asarray(out), axis=0), 1.0 / N, rtol=1e-3)
    assert amari_distance(model.components_, a) < 0.04


def test_determinism_and_w_init(rng):
    x, _, a = planted(rng)
    m1 = FastICA(K, random_state=3).fit(x)
    m2 = FastICA(K, random_state=3).fit(x)
    np.testing.assert_array_equal(m1.components_, m2.components_)
    np.testing.assert_array_equal(m1.directions_, m2.directions_)
    # another seed: the same sources, and the same documented order and signs
    m3 = FastICA(K, random_state=11).fit(x)
    assert amari_distance(m3.components_, m1.mixing_) < 0.03
    np.testing.assert_allclose(m3.directions_, m1.directions_, atol=0.05)
    # a user w_init overrides random_state
    w0 = rng.standard_normal((K, K))
    m4 = FastICA(K, w_init=w0, random_state=1).fit(x)
    m5 = FastICA(K, w_init=w0, random_state=2).fit(x)
    np.testing.assert_array_equal(m4.components_, m5.components_)


def test_convergence_warning_names_iterations_and_change(rng):
    x, _, _ = planted(rng)
    with pytest.warns(ConvergenceWarning, match=r"after 2 iterations: last change [0-9.e+-]+ > tol"):
        model = FastICA(K, max_iter=2, random_state=0).fit(x)
    assert model.n_iter_ == 2 and not model.converged_


def test_n_components_none_is_the_numerical_rank(rng):
    s = rng.laplace(size=(300, 3))
    x = (s @ rng.standard_normal((3, 10)) + 1.0).astype(np.float32)
    model = FastICA(random_state=0).fit(x)
    assert model.n_components_ == 3 and model.components_.shape == (3, 10)


def test_whitening_kernel_is_white_for_every_solver(rng):
    x, _, _ = planted(rng, n=300, p=200)
    _, ref_s, ref_vt = np.linalg.svd(np.float64(x) - x.mean(0), full_matrices=False)
    ref_s, ref_vt = ref_s[:K], ref_vt[:K] * np.sign(ref_vt[:K, :1])
    for solver in ("svd", "eigh"):    # randomized: in the wide recovery test
        res = whiten(jnp.asarray(x), K, solver=solver)
        z = np.asarray(res.white, np.float64)
        np.testing.assert_allclose(z.T @ z / z.shape[0], np.eye(K), atol=2e-3, err_msg=solver)
        np.testing.assert_allclose(np.asarray(res.singular_values), ref_s, rtol=2e-3)
        np.testing.assert_allclose(np.asarray(res.components), ref_vt, atol=2e-3, err_msg=solver)
        np.testing.assert_allclose(np.asarray(res.mean), x.mean(0), atol=1e-5)
        assert np.all(np.asarray(res.components)[:, 0] >= 0)


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize("params,match", [
    (dict(algorithm="both"), "algorithm"),
    (dict(fun="tanh"), "'fun' parameter of FastICA must be"),
    (dict(fun=np.tanh), "'fun' parameter of FastICA must be"),
    (dict(whiten=True), "'whiten' parameter of FastICA must be"),
    (dict(whiten="yes"), "'whiten' parameter of FastICA must be"),
    (dict(whiten_solver="qr"), "whiten_solver"),
    (dict(method="lanczos"), "'method' parameter of FastICA must be"),
    (dict(decorrelation="qr"), "'decorrelation' parameter of FastICA must be"),
    (dict(block_rows=0), "block_rows"),
    (dict(max_iter=0), "max_iter"),
    (dict(tol=-1.0), "tol"),
    (dict(tol=float("nan")), "tol"),
    (dict(fun_args={"alpha": 3.0}), "alpha"),
    (dict(fun_args={"beta": 1.0}), "fun_args"),
    (dict(n_components=0), "'n_components' parameter of FastICA must be"),
    (dict(n_components=P + 1), "larger than n_features"),
    (dict(n_components=3, w_init=np.eye(4)), "w_init has shape"),
    (dict(n_components=2, w_init=np.array([[1.0, np.nan], [0.0, 1.0]])), "NaN"),
    (dict(n_components=2, w_init=np.ones((2, 2))), "rank deficient"),
])
def test_bad_parameters(rng, params, match):
    x = rng.standard_normal((50, P)).astype(np.float32)
    with pytest.raises(ValueError, match=match):
        FastICA(**params).fit(x)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_bad_data(rng):
    x = rng.standard_normal((40, 8))
    bad = x.copy()
    bad[0, 0], bad[3, 2], bad[5, 5] = np.nan, np.inf, np.nan
    with pytest.raises(ValueError, match="2 NaN and 1 inf"):
        FastICA(3).fit(bad)
    with pytest.raises(ValueError, match="Expected 2D"):
        FastICA(3).fit(x[0])
    # integer input is converted to floating point, as scikit-learn does
    ints = np.round(4 * x).astype(np.int32)
    np.testing.assert_array_equal(FastICA(3, random_state=0).fit(ints).components_,
                                  FastICA(3, random_state=0).fit(ints.astype(np.float32)).components_)
    with pytest.raises((TypeError, ValueError), match="omplex"):
        FastICA(3).fit(x.astype(np.complex64))
    with pytest.raises(ValueError, match="1 sample"):
        FastICA(1).fit(x[:1])
    with pytest.raises(TypeError, match="'n_components' parameter of FastICA must be"):
        FastICA(2.5).fit(x)
    # fewer samples than components (+1 for the centring)
    with pytest.raises(ValueError, match="5 samples, fewer than n_components"):
        FastICA(5).fit(x[:5])
    # more components than the numerical rank of the centred data
    low = (rng.standard_normal((40, 2)) @ rng.standard_normal((2, 8))).astype(np.float32)
    with pytest.raises(ValueError, match="numerical rank 2"):
        FastICA(4).fit(low)
    with pytest.raises(ValueError, match="zero variance"):
        FastICA(2).fit(np.ones((10, 4)))
    with pytest.warns(UserWarning, match="Ignoring n_components"):
        FastICA(3, whiten=False).fit(x)


def test_bad_transform_input(rng):
    x, _, _ = planted(rng)
    with pytest.raises(NotFittedError):
        FastICA(K).transform(x)
    model = FastICA(K, random_state=0).fit(x)
    with pytest.raises(ValueError, match=f"{P - 1} features, but FastICA is expecting {P}"):
        model.transform(x[:, 1:])
    with pytest.raises(ValueError, match=f"fitted with {K}"):
        model.inverse_transform(np.ones((3, K + 1), np.float32))
    bad = x[:4].copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.transform(bad)


# ------------------------------------------------- kernels for sharded / large runs


@pytest.mark.parametrize("fun", ["logcosh", "exp", "cube"])
def test_zero_padded_rows_do_not_count(rng, fun):
    # mesh padding: zero whitened rows at the end and the true count n_valid give
    # exactly the iteration on the unpadded data (g'(0) != 0 for logcosh and exp)
    x, _, _ = planted(rng, n=500, p=20)
    white = whiten(jnp.asarray(x), K, solver="svd").white
    padded = jnp.concatenate([white, jnp.zeros((7, K), white.dtype)])
    w0 = jnp.asarray(rng.standard_normal((K, K)), jnp.float32)
    ref = fastica(white, w_init=w0, fun=fun, max_iter=2)
    ours = fastica(padded, w_init=w0, fun=fun, max_iter=2, n_valid=500)
    # float32 sums over 500 and 507 samples round differently, and the step divides
    # by |E[y g(y)] - E[g'(y)]| ~ 0.15: a few 1e-6 apart; counting the padding is
    # 0.03-0.1 off (measured)
    np.testing.assert_allclose(np.asarray(ours.w), np.asarray(ref.w), atol=2e-5)
    if fun != "cube":       # counting the padding changes E[g'(y)] and so the step
        wrong = fastica(padded, w_init=w0, fun=fun, max_iter=2)
        assert np.max(np.abs(np.asarray(wrong.w) - np.asarray(ref.w))) > 1e-4


def test_newton_schulz_decorrelation_is_the_polar_factor(rng):
    from jaxfactor.ica import symmetric_decorrelation

    k = 40
    # rows of very different lengths, as the un-normalised FastICA update produces
    q = np.linalg.qr(rng.standard_normal((k, k)))[0]
    w = (q + 0.3 * rng.standard_normal((k, k)) / np.sqrt(k)) * rng.uniform(0.05, 3.0, size=(k, 1))
    u, sv, vt = np.linalg.svd(w)
    ref = u @ vt                                           # float64 polar factor
    # float32 rounding of w is amplified by about sigma_max / sigma_min
    atol = 20 * np.finfo(np.float32).eps * sv[0] / sv[-1]
    for method in ("eigh", "newton-schulz"):
        out = np.asarray(symmetric_decorrelation(jnp.asarray(w, jnp.float32), method), np.float64)
        np.testing.assert_allclose(out, ref, atol=atol, err_msg=method)
        # eigh works on W W^T, whose condition number is the square
        np.testing.assert_allclose(out @ out.T, np.eye(k), atol=atol * sv[0] / sv[-1], err_msg=method)
    x, _, a = planted(rng)
    m_eigh = FastICA(K, decorrelation="eigh", random_state=0).fit(x)
    m_ns = FastICA(K, decorrelation="newton-schulz", random_state=0).fit(x)
    assert m_ns.converged_ and m_ns.n_iter_ == m_eigh.n_iter_
    np.testing.assert_allclose(m_ns.components_, m_eigh.components_,
                               atol=1e-3 * np.abs(m_eigh.components_).max())


def test_policies():
    from jaxfactor._policy import choose_decorrelation, choose_whiten_range
    from jaxfactor.ica import choose_whiten_solver

    assert choose_whiten_solver("auto", 10000, 512, 20) == "eigh"
    assert choose_whiten_solver("auto", 1000, 512, 20) == "svd"
    assert choose_whiten_solver("auto", 10000, 16384, 1000) == "randomized"
    assert choose_whiten_solver("auto", 10000, 512, 20, in_memory=False) == "randomized"
    assert choose_whiten_solver("eigh", 10000, 16384, 20) == "eigh"
    assert choose_whiten_range("auto", None, 10000, 16384, 100) == ("krylov", None)
    assert choose_whiten_range("auto", None, 10000, 16384, 1000) == ("subspace", 2)
    assert choose_whiten_range("krylov", 3, 10000, 16384, 1000) == ("krylov", 3)
    assert choose_decorrelation("auto", "cpu") == "eigh"
    assert choose_decorrelation("auto", "gpu") == "newton-schulz"
    assert choose_decorrelation("eigh", "gpu") == "eigh"


def test_subspace_whitening_recovers_planted_sources(rng):
    # the large-k whitening (two subspace iterations) on a wide problem: exact whitening
    # of the subspace it finds, and that subspace is the planted one
    x, s, a = planted(rng, n=600, p=4096)
    model = FastICA(K, method="subspace", n_iter=2, whiten_solver="randomized",
                    random_state=0).fit(x)
    assert model.converged_ and amari_distance(model.components_, a) < 0.04
    assert match_sources(model.transform(x), s).correlations.min() > 0.98


def test_source_input_needs_an_int_n_components(rng, tmp_path):
    from jaxfactor.sources import NpySource

    path = tmp_path / "x.npy"
    np.save(path, rng.standard_normal((50, 8)).astype(np.float32))
    with pytest.raises(ValueError, match="row source needs"):
        FastICA().fit(NpySource(path))
    with pytest.raises(ValueError, match="row source needs"):
        FastICA(3, whiten=False).fit(str(path))
