import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.utils.estimator_checks import check_estimator

from jaxfactor._validation import NotFittedError
from jaxfactor.sefa import SeFa, sefa_directions, stack_normalized


def sefa_reference(weights, k):
    """SeFa in float64 NumPy: normalise rows, eigh of A^T A, descending, sign by largest entry."""
    a = np.concatenate([np.asarray(w, np.float64) for w in weights], axis=0)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    w, v = np.linalg.eigh(a.T @ a)
    w, v = w[::-1][:k], v[:, ::-1][:, :k].T
    v *= np.sign(v[np.arange(k), np.argmax(np.abs(v), axis=1)])[:, None]
    return v, w


# SeFa fits on weight matrices rather than data, but a (C, d) weight matrix is a
# 2-D float array whose rows live in the latent space that ``transform`` maps
# from, so scikit-learn's transformer contract applies as it stands (the weight
# rows play the samples).
def test_check_estimator():
    check_estimator(SeFa())


def test_matches_numpy_eigh_on_several_layers(rng):
    d = 24
    # layers with structure: a few dominant latent directions plus noise
    basis = np.linalg.qr(rng.standard_normal((d, 3)))[0]
    weights = [(rng.standard_normal((c, 3)) * [6.0, 3.0, 1.5]) @ basis.T
               + 0.3 * rng.standard_normal((c, d)) for c in (40, 17, 64)]
    weights = [w * rng.uniform(0.1, 10, (w.shape[0], 1)) for w in weights]  # row scales vanish
    model = SeFa(6).fit([w.astype(np.float32) for w in weights])
    vt, ev = sefa_reference(weights, 6)
    np.testing.assert_allclose(model.eigenvalues_, ev, rtol=1e-5, atol=2e-5 * ev[0])
    # top directions are well separated: compare them entrywise (signs fixed the same way)
    np.testing.assert_allclose(model.components_[:3], vt[:3], atol=1e-4)
    np.testing.assert_allclose(model.components_ @ model.components_.T, np.eye(6), atol=1e-5)
    assert np.all(np.diff(model.eigenvalues_) <= 0)
    total = sum(w.shape[0] for w in weights)
    np.testing.assert_allclose(model.explained_variance_ratio_, ev / total, rtol=1e-4)
    # the same through the kernels and from a 3-D stack of equal-sized layers
    a = stack_normalized(*[jnp.asarray(w, jnp.float32) for w in weights])
    np.testing.assert_allclose(np.linalg.norm(np.asarray(a), axis=1), 1.0, atol=1e-6)
    res = sefa_directions(a, 6)
    np.testing.assert_allclose(np.asarray(res.components), model.components_, atol=1e-6)
    stack = np.stack([weights[0][:17], weights[1]]).astype(np.float32)
    from_stack = SeFa(3).fit(stack)
    vt2, _ = sefa_reference([stack[0], stack[1]], 3)
    np.testing.assert_allclose(from_stack.components_, vt2, atol=1e-4)


def test_transform_inverse_and_determinism(rng):
    w = rng.standard_normal((50, 10)).astype(np.float32)
    model = SeFa(4).fit(w)
    z = rng.standard_normal((7, 10)).astype(np.float32)
    coords = model.transform(z)
    np.testing.assert_allclose(coords, z @ model.components_.T, atol=1e-5)
    back = model.inverse_transform(coords)
    np.testing.assert_allclose(back, z @ model.components_.T @ model.components_, atol=1e-5)
    again = SeFa(4).fit(w)
    np.testing.assert_array_equal(model.components_, again.components_)
    # row scaling does not matter (rows are normalised), sign of rows neither
    scaled = SeFa(4).fit(w * rng.uniform(0.5, 3, (50, 1)) * rng.choice([-1, 1], (50, 1)))
    np.testing.assert_allclose(scaled.components_, model.components_, atol=1e-4)


def test_bad_input(rng):
    w = rng.standard_normal((20, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="latent dimension"):
        SeFa(2).fit([w, w[:, :5]])
    with pytest.raises(ValueError, match="n_components=9"):
        SeFa(9).fit(w)
    with pytest.raises(TypeError, match="n_components"):
        SeFa(2.5).fit(w)
    bad = w.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"weights\[1\] contains 1 NaN"):
        SeFa(2).fit([w, bad])
    ints = np.round(4 * w).astype(np.int32)        # converted, as scikit-learn does
    np.testing.assert_array_equal(SeFa(2).fit(ints).components_,
                                  SeFa(2).fit(ints.astype(np.float32)).components_)
    with pytest.raises(NotFittedError):
        SeFa(2).transform(w)
    model = SeFa(2).fit(w)
    with pytest.raises(ValueError, match="features"):
        model.transform(w[:, :4])
    # an all-zero row is left at zero instead of producing NaN
    z = w.copy()
    z[3] = 0
    assert np.all(np.isfinite(SeFa(2).fit(z).components_))
