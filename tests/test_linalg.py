import jax.numpy as jnp
import numpy as np
import pytest

from jaxfactor import _linalg as L


@pytest.mark.parametrize("shape", [(50, 5), (300, 40), (1000, 1)])
def test_orthonormalize_and_cholesky_qr2_span_and_orthonormal(rng, shape):
    a = rng.standard_normal(shape).astype(np.float32)
    for f in (L.orthonormalize, L.cholesky_qr2):
        q = np.asarray(f(jnp.asarray(a)), np.float64)
        np.testing.assert_allclose(q.T @ q, np.eye(shape[1]), atol=4e-5)
        # same column space: projecting a onto span(q) leaves it unchanged
        np.testing.assert_allclose(q @ (q.T @ a), a, atol=1e-4 * np.abs(a).max())


def test_cholesky_qr2_ill_conditioned(rng):
    u, _ = np.linalg.qr(rng.standard_normal((2000, 20)))
    v, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    a = (u * np.logspace(0, -3, 20)) @ v  # condition number 1e3 < eps32^-1/2
    q = np.asarray(L.cholesky_qr2(jnp.asarray(a, jnp.float32)), np.float64)
    assert np.abs(q.T @ q - np.eye(20)).max() < 1e-5


def test_polar_matches_svd_reference(rng):
    a = rng.standard_normal((60, 7))
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    got = np.asarray(L.polar(jnp.asarray(a, jnp.float32)))
    np.testing.assert_allclose(got, u @ vt, atol=2e-5)
    sq = rng.standard_normal((7, 7))
    u, _, vt = np.linalg.svd(sq)
    np.testing.assert_allclose(np.asarray(L.polar(jnp.asarray(sq, jnp.float32))), u @ vt, atol=5e-5)


def test_svd_flip_makes_largest_loading_positive_and_keeps_product(rng):
    x = rng.standard_normal((30, 12))
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    fu, fvt = L.svd_flip(jnp.asarray(-u), jnp.asarray(-vt))
    fu, fvt = np.asarray(fu), np.asarray(fvt)
    idx = np.argmax(np.abs(fvt), axis=1)
    assert np.all(fvt[np.arange(12), idx] > 0)
    np.testing.assert_allclose((fu * s) @ fvt, x, atol=1e-10 * 0 + 1e-5)


def test_symmetric_inverse_sqrt(rng):
    a = rng.standard_normal((8, 8))
    spd = a @ a.T + 8 * np.eye(8)
    r = np.asarray(L.symmetric_inverse_sqrt(jnp.asarray(spd, jnp.float32)), np.float64)
    np.testing.assert_allclose(r @ spd @ r, np.eye(8), atol=1e-4)
