import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.base import clone
from sklearn.decomposition import PCA as SkPCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from jaxfactor import NotFittedError, NpySource, PCA
from jaxfactor.randomized import range_params
from jaxfactor.sources import CallableSource

from .helpers import captured_variance, exact_pca, low_rank_data, principal_angles_deg
from .test_randomized import _float32_basis, _gaps, _operand_rounding_bounds, _vector_sines, float64_rerun
from .tolerances import (assert_within, blocked_gram_error, blocked_moments_error, gamma,
                         orthonormality_error, randomized_angle_bound_deg, rayleigh_ritz_error, svd_error,
                         unit_roundoff)

U32 = unit_roundoff(np.float32)


def _full_pca_bounds(x, k, *, block_rows=None, rounded_input=False):
    """``(explained-variance error (k,), sine of each component's angle (k,))`` for
    ``PCA(solver='full')`` of ``x`` against the exact (float64) PCA.

    ``n >= p``: the eigenpairs of ``C + E``, ``C`` the covariance, with ``||E||_2 <=``
    the float32 covariance centred per block (``||blocked_gram_error||_F``, one
    block in memory; plus the means' second-order ``n ||dmean||^2``), eigh's
    backward error ``gamma(p^2) ||C||_F`` and, for float64 input, its rounding to
    float32 (``2 u ||X||_F ||X_c||_2 + (u ||X||_F)^2``), all over ``n - 1``: Weyl for
    the variances, Davis-Kahan with each value's gap to the others (:func:`_gaps`)
    for the vectors.
    ``n < p``: the thin SVD of the centred data, off by ``svd_error(X_c)``, the
    centring (``u ||X_c||_F + sqrt(n) ||dmean||``) and the input's rounding
    (``u ||X||_F``): Weyl and Wedin on the singular values."""
    x = np.asarray(x, np.float64)
    n, p = x.shape
    xc = x - x.mean(0)
    s = np.linalg.svd(xc, compute_uv=False)
    ev = s ** 2 / (n - 1)
    mean_err = blocked_moments_error(x, block_rows)[0]
    xf = U32 * np.linalg.norm(x) if rounded_input else 0.0
    if n >= p:
        e = (np.linalg.norm(blocked_gram_error(x, block_rows)) + n * float(mean_err @ mean_err)
             + 2 * xf * s[0] + xf ** 2) / (n - 1) + gamma(p * p) * np.linalg.norm(xc.T @ xc) / (n - 1)
        return np.full(k, e), np.minimum(e / _gaps(ev, k), 1.0)
    e = svd_error(xc) + U32 * np.linalg.norm(xc) + np.sqrt(n) * np.linalg.norm(mean_err) + xf
    return (2 * s[:k] * e + e * e) / (n - 1), np.minimum(e / _gaps(s, k), 1.0)


def _randomized_pca_bounds(x, k, key, *, method="krylov", block_rows=None):
    """``(explained-variance error (k,), sine of each component's angle (k,))`` for
    the randomized (or streaming) PCA of ``x`` against the exact PCA: the range
    finder's own error (:func:`float64_rerun`, same start block) plus rounding
    (Weyl on the Rayleigh-Ritz step, ``(2 sigma e + e^2) / (n - 1)``; per component
    :func:`_vector_sines`)."""
    x64 = np.asarray(x, np.float64)
    n, p = x.shape
    l = range_params(k, n, p, method=method).basis_size
    vt, ev, _ = exact_pca(x64)
    s_rerun, vt_rerun = float64_rerun(x64, k, key, method=method)
    e = rayleigh_ritz_error(x, l, block_rows=block_rows)
    s = np.sqrt(ev[:k] * (n - 1))
    ev_err = (2 * s * e + e * e) / (n - 1) + np.maximum(ev[:k] - s_rerun ** 2 / (n - 1), 0)
    own = np.abs(np.sum(vt_rerun * vt[:k], axis=1)).clip(0, 1)
    return ev_err, _vector_sines(x, k, l, block_rows=block_rows) + np.sqrt(1 - own ** 2)


def _total_error(x, block_rows=None):
    """Bound on the total variance's error: the per-feature variances'
    (:func:`blocked_moments_error`) and their sum's (``gamma(p)``)."""
    x = np.asarray(x, np.float64)
    return blocked_moments_error(x, block_rows)[1].sum() + gamma(x.shape[1]) * x.var(0, ddof=1).sum()


def _transform_bound(x, sines, *, block_rows=None, rounded_input=False):
    """Entrywise bound on ``|fl((x_i - mean) . c_j) - (x_i - mean*) . c*_j|``: the
    component's error (``||c_j - c*_j|| <= sqrt(2) sin``, signs agreeing), the mean's,
    the subtraction and the product (``(gamma(p) + 2 u) ||x_i - mean||``) and the
    input's rounding (``u ||x_i||``)."""
    x = np.asarray(x, np.float64)
    p = x.shape[1]
    rows = np.linalg.norm(x - x.mean(0), axis=1)[:, None]
    mean_err = np.linalg.norm(blocked_moments_error(x, block_rows)[0])
    own = U32 * np.linalg.norm(x, axis=1)[:, None] if rounded_input else 0.0
    return rows * (np.sqrt(2) * np.asarray(sines)[None, :] + gamma(p) + 2 * U32) + mean_err + own


def test_check_estimator():
    check_estimator(PCA())


def test_pipeline_and_clone_match_sklearn(rng):
    x = low_rank_data(rng, 300, 20, 5, dtype=np.float64)
    ours = make_pipeline(StandardScaler(), PCA(4)).fit(x)
    ref = make_pipeline(StandardScaler(), SkPCA(4)).fit(x)
    # the same scaled data (float64) reaches both; ours rounds it to float32
    xs = StandardScaler().fit_transform(x)
    _, sines = _full_pca_bounds(xs, 4, rounded_input=True)
    bound = _transform_bound(xs, sines, rounded_input=True)
    assert_within(np.abs(ours.transform(x)), np.abs(ref.transform(x)), bound)
    cloned = clone(PCA(7, solver="randomized", random_state=3))
    assert cloned.get_params()["n_components"] == 7 and not hasattr(cloned, "components_")


def test_full_solver_matches_float64_reference(rng):
    x = low_rank_data(rng, 400, 30, 10)
    vt, ev, mean = exact_pca(x)
    pca = PCA(6, solver="full").fit(x)
    ref = SkPCA(6, svd_solver="full").fit(x.astype(np.float64))
    n, p = x.shape
    ev_err, sines = _full_pca_bounds(x, 6)
    assert_within(pca.mean_, mean, blocked_moments_error(x)[0])
    assert_within(pca.explained_variance_, ev[:6], ev_err)
    # sqrt(ev (n - 1)): |sqrt(a) - sqrt(b)| <= |a - b| / sqrt(b), and the root's rounding
    assert_within(pca.singular_values_, ref.singular_values_,
                  ev_err * (n - 1) / ref.singular_values_ + U32 * ref.singular_values_)
    total, total_err = ev.sum(), _total_error(x)
    ratio = ref.explained_variance_ratio_
    assert_within(pca.explained_variance_ratio_, ratio, (ev_err + ratio * total_err) / total + U32 * ratio)
    # (total - sum of the kept) / (rank - k)
    assert_within(pca.noise_variance_, ref.noise_variance_, (total_err + ev_err.sum()) / (p - 6))
    # same sign convention as scikit-learn: the components agree without flipping
    # (|c - c*| <= sqrt(2) sin(angle) each)
    diff = np.linalg.norm(pca.components_ - ref.components_, axis=1)
    assert np.all(diff <= np.sqrt(2) * sines), (diff, sines)
    c = pca.components_.astype(np.float64)
    # rows of eigh's (p, p) eigenvector matrix
    assert np.linalg.norm(c @ c.T - np.eye(6)) <= orthonormality_error(p, p)


def test_full_solver_wide_data_uses_thin_svd(rng):
    x = low_rank_data(rng, 40, 120, 8)
    _, ev, _ = exact_pca(x)
    pca = PCA(5, solver="full").fit(x)
    assert_within(pca.explained_variance_, ev[:5], _full_pca_bounds(x, 5)[0])


@pytest.mark.parametrize("method", ["krylov", "subspace"])
def test_randomized_accuracy_against_exact(rng, method):
    x = low_rank_data(rng, 600, 300, 40, decay=0.5)
    vt, ev, _ = exact_pca(x)
    k = 20
    pca = PCA(k, solver="randomized", method=method, random_state=0).fit(x)
    n, p = x.shape
    l = range_params(k, n, p, method=method).basis_size
    key = jax.random.key(0)
    s_rerun, vt_rerun = float64_rerun(x, k, key, method=method)
    # the leading half is separated from the rest: found up to the range finder's own
    # error (the float64 rerun of the same start block) and rounding
    angles = principal_angles_deg(pca.components_[:10], vt[:10])
    bound = principal_angles_deg(vt_rerun[:10], vt[:10]).max() + randomized_angle_bound_deg(x, 10, l)
    assert angles.max() <= bound, (angles, bound)
    # as much variance as the same algorithm in exact arithmetic captures, up to
    # the Ritz values' rounding (the variance a Ritz vector captures is its Ritz value)
    e = rayleigh_ritz_error(x, l)
    s = np.sqrt(ev[:k] * (n - 1))
    captured_round = np.sum(2 * s * e + e * e) / (n - 1)
    assert captured_variance(x, pca.components_) >= captured_variance(x, vt_rerun) - captured_round
    ev_err, _ = _randomized_pca_bounds(x, k, key, method=method)
    assert_within(pca.explained_variance_, ev[:k], ev_err)
    # the ratio uses the exact total variance, not the sum of the k found
    total, total_err = ev.sum(), _total_error(x)
    assert_within(pca.explained_variance_ratio_, ev[:k] / total, (ev_err + ev[:k] / total * total_err) / total)
    assert_within(pca.noise_variance_, ev[k:].mean(), (total_err + ev_err.sum()) / (min(n, p) - k))


def test_krylov_default_at_least_as_accurate_as_sklearn_randomized(rng):
    # slowly decaying spectrum (no gap at k): the hard case for range finders
    x = low_rank_data(rng, 1000, 300, 300, decay=0.6, noise=0.2)
    vt, ev, _ = exact_pca(x)
    k = 40
    ours = PCA(k, solver="randomized", random_state=0).fit(x)
    ref = SkPCA(k, svd_solver="randomized", random_state=0).fit(x)
    # at least as accurate as scikit-learn's (float64) on the same data, up to our
    # float32 rounding: the Ritz values' (Weyl on the Rayleigh-Ritz step)
    n, p = x.shape
    e = rayleigh_ritz_error(x, range_params(k, n, p).basis_size)
    s = np.sqrt(ev[:k] * (n - 1))
    ev_round = (2 * s * e + e * e) / (n - 1)
    assert captured_variance(x, ours.components_) >= captured_variance(x, ref.components_) - ev_round.sum()
    err_ours = np.abs(ours.explained_variance_ / ev[:k] - 1).max()
    err_ref = np.abs(ref.explained_variance_ / ev[:k] - 1).max()
    assert err_ours <= err_ref + np.max(ev_round / ev[:k]), (err_ours, err_ref)


def test_streaming_equals_in_memory(rng, tmp_path):
    x = low_rank_data(rng, 600, 300, 15)
    mem = PCA(10, solver="randomized", random_state=1).fit(x)
    for i, part in enumerate(np.array_split(x, 3)):
        np.save(tmp_path / f"shard_{i}.npy", part)
    stream = PCA(10, solver="streaming", random_state=1, block_rows=128).fit(NpySource(tmp_path))
    assert stream.solver_ == "streaming" and stream.n_samples_ == 600
    # the same algorithm and start block, each within its rounding of the same
    # exact-arithmetic answer, so of each other; but the streaming first pass
    # (uncentred, then corrected) perturbs the start block, and another start block
    # is another draw: each also within the range finder's own error (the float64
    # rerun's) of the exact answer
    n, p = x.shape
    k, b = 10, 128
    l = range_params(k, n, p).basis_size
    vt, ev, _ = exact_pca(x)
    s_rerun, vt_rerun = float64_rerun(x, k, jax.random.key(1))
    assert_within(stream.mean_, mem.mean_, blocked_moments_error(x)[0] + blocked_moments_error(x, b)[0])
    s = np.sqrt(ev[:k] * (n - 1))
    e = rayleigh_ritz_error(x, l) + rayleigh_ritz_error(x, l, block_rows=b)
    ev_err = (2 * s * e + e * e) / (n - 1) + 2 * np.maximum(ev[:k] - s_rerun ** 2 / (n - 1), 0)
    assert_within(stream.explained_variance_, mem.explained_variance_, ev_err)
    own = np.abs(np.sum(vt_rerun * vt[:k], axis=1)).clip(0, 1)
    sines = _vector_sines(x, k, l) + _vector_sines(x, k, l, block_rows=b) + 2 * np.sqrt(1 - own ** 2)
    diff = np.linalg.norm(stream.components_ - mem.components_, axis=1)
    assert np.all(diff <= np.sqrt(2) * sines), (diff, sines)
    total, total_err = ev.sum(), _total_error(x) + _total_error(x, b)
    ratio = mem.explained_variance_ratio_
    assert_within(stream.explained_variance_ratio_, ratio, (ev_err + ratio * total_err) / total)


def test_full_solver_over_a_source_equals_in_memory(rng):
    x = low_rank_data(rng, 700, 25, 6)
    src = CallableSource(lambda a, b: x[a:b], 700, 25)
    a = PCA(4, solver="full", block_rows=64).fit(src)
    b = PCA(4, solver="full").fit(x)
    # blocks of 64 (Chan) against one block: each within its bound of the exact PCA
    ev_a, sin_a = _full_pca_bounds(x, 4, block_rows=64)
    ev_b, sin_b = _full_pca_bounds(x, 4)
    diff = np.linalg.norm(a.components_ - b.components_, axis=1)
    assert np.all(diff <= np.sqrt(2) * (sin_a + sin_b)), (diff, sin_a + sin_b)
    assert_within(a.explained_variance_, b.explained_variance_, ev_a + ev_b)


def test_auto_policy(rng):
    small = rng.standard_normal((300, 50)).astype(np.float32)
    assert PCA(5).fit(small).solver_ == "full"
    wide = rng.standard_normal((300, 1200)).astype(np.float32)
    assert PCA(8, random_state=5).fit(wide).solver_ == "randomized"
    source = CallableSource(lambda a, b: wide[a:b], 300, 1200)
    assert PCA(8, random_state=5, block_rows=300).fit(source).solver_ == "streaming"


def test_deterministic_under_fixed_key(rng):
    x = low_rank_data(rng, 300, 1200, 30)
    a = PCA(8, random_state=5).fit(x)
    b = PCA(8, random_state=5).fit(x)
    np.testing.assert_array_equal(a.components_, b.components_)
    c = PCA(8, random_state=6).fit(x)
    # another start block: each run within its range finder's own error (float64
    # reruns) and rounding of the exact answer
    n, p = x.shape
    l = range_params(8, n, p).basis_size
    vt, _, _ = exact_pca(x)
    reruns = [float64_rerun(x, 8, jax.random.key(seed))[1] for seed in (5, 6)]
    bound = sum(principal_angles_deg(r, vt[:8]).max() for r in reruns) + 2 * randomized_angle_bound_deg(x, 8, l)
    assert principal_angles_deg(a.components_, c.components_).max() <= bound
    # signs are fixed, so a different key gives the same signed components
    own = [np.abs(np.sum(r * vt[:8], axis=1)).clip(0, 1) for r in reruns]
    sines = 2 * _vector_sines(x, 8, l) + sum(np.sqrt(1 - c ** 2) for c in own)
    diff = np.linalg.norm(a.components_ - c.components_, axis=1)
    assert np.all(diff <= np.sqrt(2) * sines), (diff, sines)


def test_transform_inverse_whiten(rng):
    x = low_rank_data(rng, 600, 40, 5, noise=1e-3)
    x64 = x.astype(np.float64)
    n, p = x.shape
    pca = PCA(5).fit(x)
    y = pca.transform(x)
    vt, ev, mean = exact_pca(x)
    ev_err, sines = _full_pca_bounds(x, 5)
    # the round trip leaves the exact residual (x_i - mean)(I - P) (the noise off the
    # rank-5 subspace) plus the projector's error (||P - P*||_2 = sin of the largest
    # angle <= ||E|| / gap, Davis-Kahan), both products' rounding (gamma(p) and
    # gamma(k), twice) and the mean's error, twice
    xc = x64 - mean
    residual = np.abs(xc - xc @ vt[:5].T @ vt[:5])
    sin_p = ev_err[0] / (ev[4] - ev[5])
    rows = np.linalg.norm(xc, axis=1)[:, None]
    mean_err = np.linalg.norm(blocked_moments_error(x)[0])
    round_trip = residual + rows * (sin_p + 2 * (gamma(p) + gamma(5) + 2 * U32)) + 2 * mean_err
    assert_within(pca.inverse_transform(y), x, round_trip)
    white = PCA(5, whiten=True).fit(x)
    yw = white.transform(x)
    # var(y_j) = c_j^T C c_j is within ||E|| of the eigenvalue that whitens it (c_j an
    # eigenvector of C + E); y's rounding (rms dy) moves it by 2 sqrt(ev) dy + dy^2;
    # numpy's float32 variance adds gamma(n)
    dy = np.sqrt(np.mean(rows ** 2)) * (gamma(p) + 2 * U32) + mean_err
    var_err = (ev_err + 2 * np.sqrt(ev[:5]) * dy + dy * dy) / ev[:5] + gamma(n) + 2 * U32
    assert_within(np.var(yw, axis=0, ddof=1), 1.0, var_err)
    assert_within(white.inverse_transform(yw), x, round_trip * (1 + 4 * U32))
    assert_within(np.abs(y), np.abs(SkPCA(5).fit_transform(x64)), _transform_bound(x, sines))


def test_variance_fraction_matches_sklearn(rng):
    x = low_rank_data(rng, 300, 30, 12, decay=0.5)
    ours = PCA(0.9).fit(x)
    ref = SkPCA(0.9, svd_solver="full").fit(x.astype(np.float64))
    assert ours.n_components_ == ref.n_components_


def test_constant_columns_and_rank_deficient(rng):
    x = low_rank_data(rng, 200, 20, 3, noise=0.0)
    x[:, 4] = 7.0
    n, p = x.shape
    _, ev, _ = exact_pca(x)  # rank 3 up to the data's float32 rounding
    s = np.sqrt(ev[:6] * (n - 1))
    total, total_err = ev.sum(), _total_error(x)
    for solver in ("full", "randomized"):
        pca = PCA(6, solver=solver).fit(x)
        assert np.all(np.isfinite(pca.components_))
        assert np.all(np.isfinite(pca.transform(x)))
        if solver == "full":
            ev_err = _full_pca_bounds(x, 6)[0]
        else:  # the basis holds the rank-3 range: no range-finder error, Weyl on rounding
            e = rayleigh_ritz_error(x, range_params(6, n, p).basis_size)
            ev_err = (2 * s * e + e * e) / (n - 1)
        ratio3 = ev[:3].sum() / total
        ratio_err = (ev_err[:3].sum() + ratio3 * total_err) / total
        assert abs(pca.explained_variance_ratio_[:3].sum() - ratio3) <= ratio_err
        assert_within(pca.explained_variance_[3:], ev[3:6], ev_err[3:])


def test_jax_and_torch_inputs_round_trip_kind(rng):
    torch = pytest.importorskip("torch")
    x = low_rank_data(rng, 200, 16, 4)
    pca = PCA(3).fit(x)
    ref = pca.transform(x)
    out_jax = pca.transform(jnp.asarray(x))
    assert isinstance(out_jax, jax.Array)
    t = torch.from_numpy(x)
    out_t = pca.transform(t)
    assert isinstance(out_t, torch.Tensor)
    # the same program on the same float32 data, whatever wraps it: identical
    np.testing.assert_array_equal(np.asarray(out_jax), ref)
    np.testing.assert_array_equal(out_t.numpy(), ref)
    np.testing.assert_array_equal(PCA(3).fit(t).components_, pca.components_)


def test_torch_handover_is_zero_copy_on_cpu():
    torch = pytest.importorskip("torch")
    from jaxfactor._validation import to_jax

    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    j = to_jax(t)
    assert j.unsafe_buffer_pointer() == t.data_ptr()


@pytest.mark.parametrize("bad, err, match", [
    (np.array([[1.0, np.nan], [2.0, 3.0], [np.nan, 1.0]]), ValueError, "2 NaN and 0 inf"),
    (np.array([[1.0, np.inf], [2.0, 3.0], [1.0, 1.0]]), ValueError, "0 NaN and 1 inf"),
    (np.ones(5), ValueError, "Expected 2D array"),
    (np.ones((0, 3)), ValueError, "0 sample"),
    (np.ones((1, 3)), ValueError, "1 sample"),
    (np.array([["a", "b"], ["c", "d"]]), TypeError, "dtype <U1"),
    (np.ones((5, 3), dtype=np.complex64), ValueError, "Complex data not supported"),
])
def test_bad_input_fit(bad, err, match):
    with pytest.raises(err, match=match):
        PCA(1).fit(bad)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, bool])
def test_integer_and_boolean_input_is_converted(rng, dtype):
    # scikit-learn's convention: converted to floating point, not refused
    x = (rng.standard_normal((30, 5)) > 0) if dtype is bool else rng.integers(0, 9, (30, 5))
    x = x.astype(dtype)
    got = PCA(2, solver="full").fit(x)
    want = PCA(2, solver="full").fit(x.astype(np.float32))
    np.testing.assert_array_equal(got.components_, want.components_)
    assert got.transform(x).dtype == np.float32


def test_bad_parameters_and_usage(rng):
    x = rng.standard_normal((20, 6)).astype(np.float32)
    with pytest.raises(ValueError, match=r"n_components=7 must be between 1 and .*=6"):
        PCA(7).fit(x)
    with pytest.raises(ValueError, match="'n_components' parameter of PCA must be"):
        PCA(0).fit(x)
    with pytest.raises(TypeError, match="n_components"):
        PCA("3").fit(x)
    with pytest.raises(ValueError, match="needs solver='full'"):
        PCA(0.5, solver="randomized").fit(x)
    with pytest.raises(ValueError, match="'solver' parameter of PCA must be a str among"):
        PCA(2, solver="arpack").fit(x)
    with pytest.raises(NotFittedError):
        PCA(2).transform(x)
    pca = PCA(2).fit(x)
    with pytest.raises(ValueError, match="X has 5 features, but PCA is expecting 6"):
        pca.transform(x[:, :5])
    with pytest.raises(ValueError, match="3 components"):
        pca.inverse_transform(np.ones((2, 3), np.float32))


@settings(max_examples=10, deadline=None)
@given(n=st.sampled_from([2, 3, 17]), p=st.sampled_from([1, 5, 12]), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_full_solver_singular_values_any_shape(n, p, seed, dtype):
    x = np.random.default_rng(seed).standard_normal((n, p)).astype(dtype)
    k = min(n, p)
    pca = PCA(k, solver="full").fit(x)
    _, ev, _ = exact_pca(x)
    # float64 input is computed in the working dtype: its rounding enters
    rounded = np.dtype(dtype) != pca.components_.dtype
    assert_within(pca.explained_variance_, ev[:k], _full_pca_bounds(x, k, rounded_input=rounded)[0])
    assert pca.components_.shape == (k, p) and pca.transform(x).shape == (n, k)


def test_precision_option(rng):
    x = low_rank_data(rng, 600, 120, 15, offset=4.0)
    with pytest.raises(ValueError, match="'precision' parameter of PCA must be a str among"):
        PCA(3, solver="randomized", precision="fp8").fit(x)
    ref_vt, ref_ev, _ = exact_pca(x)
    default = PCA(5, solver="randomized", random_state=0).fit(x)
    explicit = PCA(5, solver="randomized", random_state=0, precision="float32").fit(x)
    np.testing.assert_array_equal(default.components_, explicit.components_)
    # bf16 products (u = 2^-8): the first-order effect of rounding the operands
    # (test_randomized._operand_rounding_bounds) on top of the float32 run's own error
    low = PCA(5, solver="randomized", random_state=0, precision="bf16").fit(x)
    n = x.shape[0]
    sv, angle = _operand_rounding_bounds(x, _float32_basis(x, 5, jax.random.key(0)), 5, 5, 2.0 ** -8,
                                         centred_operands=True)
    s_exact, s_f32 = np.sqrt(ref_ev[:5] * (n - 1)), np.sqrt(default.explained_variance_ * (n - 1))
    s_err = sv + np.abs(s_f32 - s_exact)
    ev_err = (2 * s_exact * s_err + s_err ** 2) / (n - 1)
    assert_within(low.explained_variance_, ref_ev[:5], ev_err)
    assert principal_angles_deg(low.components_, ref_vt[:5]).max() <= angle + principal_angles_deg(
        default.components_, ref_vt[:5]).max()
    total, total_err = ref_ev.sum(), _total_error(x)
    ratio = ref_ev[:5].sum() / total
    assert abs(low.explained_variance_ratio_.sum() - ratio) <= (ev_err.sum() + ratio * total_err) / total
