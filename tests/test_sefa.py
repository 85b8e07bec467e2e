import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.utils.estimator_checks import check_estimator

from jaxfactor._validation import NotFittedError
from jaxfactor import SeFa
from jaxfactor.sefa import sefa_directions, stack_normalized
from tests import tolerances as T


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


def gram_rounding(a):
    """Bound on ``||fl(A^T A) - A^T A||_2`` plus ``eigh``'s backward error, for the
    row-normalised float32 stack ``A`` (``(C, d)``, unit rows) of :func:`sefa_reference`:
    the ``C``-term products (``gamma(C) ||A||_F^2``, Cauchy-Schwarz), the rows'
    normalisation (the input's cast, the float32 norm and the division: ``gamma(d) + 3
    u`` relative per row, twice in the Gram matrix), and the eigensolver
    (:func:`tests.tolerances.svd_error` of the ``(d, d)`` Gram matrix)."""
    a = np.asarray(a, np.float64)
    c, d = a.shape
    g = a.T @ a
    return float(T.gamma(c) * np.sum(a**2) + 2 * (T.gamma(d) + 3 * T.unit_roundoff()) * np.linalg.norm(g, 2)
                 + T.svd_error(g))


def stacked(weights):
    a = np.concatenate([np.asarray(w, np.float64) for w in weights], axis=0)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def vector_bounds(a, k):
    """Davis-Kahan for each of the top ``k`` eigenvectors of ``A^T A`` one by one
    (``sqrt(2) ||E|| / gap_i`` for sign-aligned unit vectors), ``E`` :func:`gram_rounding`."""
    ev = np.linalg.eigvalsh(a.T @ a)[::-1]
    gaps = np.array([T.min_gap(np.delete(ev, range(i)), 1) for i in range(k)])
    return np.sqrt(2) * gram_rounding(a) / gaps


def test_matches_numpy_eigh_on_several_layers(rng):
    d = 24
    # layers with structure: a few dominant latent directions plus noise
    basis = np.linalg.qr(rng.standard_normal((d, 3)))[0]
    weights = [(rng.standard_normal((c, 3)) * [6.0, 3.0, 1.5]) @ basis.T
               + 0.3 * rng.standard_normal((c, d)) for c in (40, 17, 64)]
    weights = [w * rng.uniform(0.1, 10, (w.shape[0], 1)) for w in weights]  # row scales vanish
    model = SeFa(6).fit([w.astype(np.float32) for w in weights])
    vt, ev = sefa_reference(weights, 6)
    a = stacked(weights)
    e = gram_rounding(a)
    # eigenvalues: Weyl; each direction: Davis-Kahan against its own gap (signs fixed
    # the same way); the directions orthonormal as eigh's float32 factor
    T.assert_within(model.eigenvalues_, ev, e)
    T.assert_within(model.components_, vt, vector_bounds(a, 6)[:, None])
    T.assert_within(model.components_ @ model.components_.T, np.eye(6), T.orthonormality_error(d, d))
    assert np.all(np.diff(model.eigenvalues_) <= 0)
    # the ratio: eigenvalue over the float32 trace (d diagonal entries, each a C-term sum)
    total = sum(w.shape[0] for w in weights)
    rel_total = T.gamma(total) + T.gamma(d) + 2 * (T.gamma(d) + 3 * T.unit_roundoff())
    T.assert_within(model.explained_variance_ratio_, ev / total, (e + rel_total * ev) / total)
    # the same through the kernels and from a 3-D stack of equal-sized layers
    a32 = stack_normalized(*[jnp.asarray(w, jnp.float32) for w in weights])
    # a float32 row over its float32 norm (gamma(d), the square root and the division),
    # and the norm taken again here in float32
    T.assert_within(np.linalg.norm(np.asarray(a32), axis=1), 1.0, 2 * T.gamma(d) + 3 * T.unit_roundoff())
    res = sefa_directions(a32, 6)
    # the estimator runs these two kernels on the same float32 input: bit for bit
    np.testing.assert_array_equal(np.asarray(res.components), model.components_)
    stack = np.stack([weights[0][:17], weights[1]]).astype(np.float32)
    from_stack = SeFa(3).fit(stack)
    vt2, _ = sefa_reference([stack[0], stack[1]], 3)
    T.assert_within(from_stack.components_, vt2, vector_bounds(stacked([stack[0], stack[1]]), 3)[:, None])


def test_transform_inverse_and_determinism(rng):
    w = rng.standard_normal((50, 10)).astype(np.float32)
    model = SeFa(4).fit(w)
    z = rng.standard_normal((7, 10)).astype(np.float32)
    c = model.components_.astype(np.float64)
    z64 = z.astype(np.float64)
    coords = model.transform(z)
    # two float32 products, XLA's and numpy's: gamma(d) |z| |c^T| each
    t_err = T.gamma(10) * np.abs(z64) @ np.abs(c.T)
    T.assert_within(coords, z @ model.components_.T, 2 * t_err)
    back = model.inverse_transform(coords)
    # then a k-term product of the (rounded) coordinates with c, twice
    b_err = (t_err + T.gamma(4) * np.abs(z64 @ c.T)) @ np.abs(c)
    T.assert_within(back, z @ model.components_.T @ model.components_, 2 * b_err)
    again = SeFa(4).fit(w)
    np.testing.assert_array_equal(model.components_, again.components_)
    # row scaling does not matter (rows are normalised), sign of rows neither: the two
    # fits' normalised stacks differ by rounding only, each within gram_rounding
    scaled = SeFa(4).fit(w * rng.uniform(0.5, 3, (50, 1)) * rng.choice([-1, 1], (50, 1)))
    T.assert_within(scaled.components_, model.components_, 2 * vector_bounds(stacked([w]), 4)[:, None])


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
