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
from jaxfactor.sources import CallableSource

from .helpers import captured_variance, exact_pca, low_rank_data, principal_angles_deg


def test_check_estimator():
    check_estimator(PCA())


def test_pipeline_and_clone_match_sklearn(rng):
    x = low_rank_data(rng, 300, 20, 5, dtype=np.float64)
    ours = make_pipeline(StandardScaler(), PCA(4)).fit(x)
    ref = make_pipeline(StandardScaler(), SkPCA(4)).fit(x)
    np.testing.assert_allclose(np.abs(ours.transform(x)), np.abs(ref.transform(x)), rtol=1e-3, atol=1e-3)
    cloned = clone(PCA(7, solver="randomized", random_state=3))
    assert cloned.get_params()["n_components"] == 7 and not hasattr(cloned, "components_")


def test_full_solver_matches_float64_reference(rng):
    x = low_rank_data(rng, 400, 30, 10)
    vt, ev, mean = exact_pca(x)
    pca = PCA(6, solver="full").fit(x)
    ref = SkPCA(6, svd_solver="full").fit(x.astype(np.float64))
    np.testing.assert_allclose(pca.mean_, mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pca.explained_variance_, ev[:6], rtol=1e-4)
    np.testing.assert_allclose(pca.singular_values_, ref.singular_values_, rtol=1e-4)
    np.testing.assert_allclose(pca.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-4)
    np.testing.assert_allclose(pca.noise_variance_, ref.noise_variance_, rtol=1e-3)
    # same sign convention as scikit-learn: the components agree without flipping
    np.testing.assert_allclose(pca.components_, ref.components_, atol=2e-4)
    c = pca.components_.astype(np.float64)
    np.testing.assert_allclose(c @ c.T, np.eye(6), atol=1e-5)


def test_full_solver_wide_data_uses_thin_svd(rng):
    x = low_rank_data(rng, 40, 120, 8)
    _, ev, _ = exact_pca(x)
    pca = PCA(5, solver="full").fit(x)
    np.testing.assert_allclose(pca.explained_variance_, ev[:5], rtol=1e-4)


@pytest.mark.parametrize("method", ["krylov", "subspace"])
def test_randomized_accuracy_against_exact(rng, method):
    x = low_rank_data(rng, 600, 300, 40, decay=0.5)
    vt, ev, _ = exact_pca(x)
    k = 20
    pca = PCA(k, solver="randomized", method=method, random_state=0).fit(x)
    # the leading half is well separated from the rest: it must be found exactly
    angles = principal_angles_deg(pca.components_[:10], vt[:10])
    assert angles.max() < 0.5, angles
    assert captured_variance(x, pca.components_) >= 0.9999 * ev[:k].sum()
    rtol = 1e-3 if method == "krylov" else 3e-3
    np.testing.assert_allclose(pca.explained_variance_, ev[:k], rtol=rtol)
    # the ratio uses the exact total variance, not the sum of the k found
    np.testing.assert_allclose(pca.explained_variance_ratio_, ev[:k] / ev.sum(), rtol=rtol)
    np.testing.assert_allclose(pca.noise_variance_, ev[k:].mean(), rtol=1e-2)


def test_krylov_default_at_least_as_accurate_as_sklearn_randomized(rng):
    # slowly decaying spectrum (no gap at k): the hard case for range finders
    x = low_rank_data(rng, 1000, 300, 300, decay=0.6, noise=0.2)
    vt, ev, _ = exact_pca(x)
    k = 40
    ours = PCA(k, solver="randomized", random_state=0).fit(x)
    ref = SkPCA(k, svd_solver="randomized", random_state=0).fit(x)
    assert captured_variance(x, ours.components_) >= captured_variance(x, ref.components_) * (1 - 1e-5)
    err_ours = np.abs(ours.explained_variance_ / ev[:k] - 1).max()
    err_ref = np.abs(ref.explained_variance_ / ev[:k] - 1).max()
    assert err_ours <= err_ref * 1.05 + 1e-5, (err_ours, err_ref)


def test_streaming_equals_in_memory(rng, tmp_path):
    x = low_rank_data(rng, 600, 300, 15)
    mem = PCA(10, solver="randomized", random_state=1).fit(x)
    for i, part in enumerate(np.array_split(x, 3)):
        np.save(tmp_path / f"shard_{i}.npy", part)
    stream = PCA(10, solver="streaming", random_state=1, block_rows=128).fit(NpySource(tmp_path))
    assert stream.solver_ == "streaming" and stream.n_samples_ == 600
    np.testing.assert_allclose(stream.mean_, mem.mean_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stream.explained_variance_, mem.explained_variance_, rtol=1e-4)
    np.testing.assert_allclose(stream.components_, mem.components_, atol=5e-4)
    np.testing.assert_allclose(stream.explained_variance_ratio_, mem.explained_variance_ratio_, rtol=1e-4)


def test_full_solver_over_a_source_equals_in_memory(rng):
    x = low_rank_data(rng, 700, 25, 6)
    src = CallableSource(lambda a, b: x[a:b], 700, 25)
    a = PCA(4, solver="full", block_rows=64).fit(src)
    b = PCA(4, solver="full").fit(x)
    np.testing.assert_allclose(a.components_, b.components_, atol=1e-4)
    np.testing.assert_allclose(a.explained_variance_, b.explained_variance_, rtol=1e-4)


def test_auto_policy():
    rng = np.random.default_rng(0)
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
    assert principal_angles_deg(a.components_, c.components_).max() < 1.0
    # signs are fixed, so a different key gives the same signed components
    np.testing.assert_allclose(a.components_, c.components_, atol=2e-2)


def test_transform_inverse_whiten(rng):
    x = low_rank_data(rng, 600, 40, 5, noise=1e-3)
    pca = PCA(5).fit(x)
    y = pca.transform(x)
    np.testing.assert_allclose(pca.inverse_transform(y), x, atol=2e-2)
    white = PCA(5, whiten=True).fit(x)
    yw = white.transform(x)
    np.testing.assert_allclose(np.var(yw, axis=0, ddof=1), 1.0, rtol=1e-3)
    np.testing.assert_allclose(white.inverse_transform(yw), x, atol=2e-2)
    np.testing.assert_allclose(np.abs(y), np.abs(SkPCA(5).fit_transform(x.astype(np.float64))), atol=1e-3)


def test_variance_fraction_matches_sklearn(rng):
    x = low_rank_data(rng, 300, 30, 12, decay=0.5)
    ours = PCA(0.9).fit(x)
    ref = SkPCA(0.9, svd_solver="full").fit(x.astype(np.float64))
    assert ours.n_components_ == ref.n_components_


def test_constant_columns_and_rank_deficient(rng):
    x = low_rank_data(rng, 200, 20, 3, noise=0.0)
    x[:, 4] = 7.0
    for solver in ("full", "randomized"):
        pca = PCA(6, solver=solver).fit(x)
        assert np.all(np.isfinite(pca.components_))
        assert np.all(np.isfinite(pca.transform(x)))
        assert pca.explained_variance_ratio_[:3].sum() == pytest.approx(1.0, abs=1e-4)
        np.testing.assert_allclose(pca.explained_variance_[3:], 0, atol=1e-4 * pca.explained_variance_[0])


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
    np.testing.assert_allclose(np.asarray(out_jax), ref, atol=1e-5)
    np.testing.assert_allclose(out_t.numpy(), ref, atol=1e-5)
    np.testing.assert_allclose(PCA(3).fit(t).components_, pca.components_, atol=1e-5)


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
    scale = ev[0] if ev[0] > 0 else 1.0
    np.testing.assert_allclose(pca.explained_variance_, ev[:k], atol=2e-5 * scale * max(n, p))
    assert pca.components_.shape == (k, p) and pca.transform(x).shape == (n, k)


def test_precision_option(rng):
    x = low_rank_data(rng, 600, 120, 15, offset=4.0)
    with pytest.raises(ValueError, match="'precision' parameter of PCA must be a str among"):
        PCA(3, solver="randomized", precision="fp8").fit(x)
    ref_vt, ref_ev, _ = exact_pca(x)
    default = PCA(5, solver="randomized", random_state=0).fit(x)
    explicit = PCA(5, solver="randomized", random_state=0, precision="float32").fit(x)
    np.testing.assert_array_equal(default.components_, explicit.components_)
    # bf16 products (u = 2^-8): variances within u of float64, components within a degree
    low = PCA(5, solver="randomized", random_state=0, precision="bf16").fit(x)
    np.testing.assert_allclose(low.explained_variance_, ref_ev[:5], rtol=2.0 ** -8)
    assert principal_angles_deg(low.components_, ref_vt[:5]).max() < 1.0
    np.testing.assert_allclose(low.explained_variance_ratio_.sum(), ref_ev[:5].sum() / ref_ev.sum(), rtol=2.0 ** -8)
