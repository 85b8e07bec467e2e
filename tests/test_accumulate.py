import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfactor import accumulate as acc_mod
from jaxfactor.accumulate import fold, moments, normal_product, tsqr


def _blocks(x, size):
    return [x[i:i + size] for i in range(0, len(x), size)]


def test_moments_float32_accurate_for_a_million_rows_with_large_mean(rng):
    # a mean 1e3 times the spread: naive sums of squares in float32 lose all digits
    n, p = 1_000_000, 8
    x = (1000.0 + rng.standard_normal((n, p)) * np.linspace(0.5, 2.0, p)).astype(np.float32)
    acc = moments(p)
    state = fold(acc, acc.init(), _blocks(x, 65536))
    got = acc.finalize(state)
    ref = x.astype(np.float64)
    assert int(got.n_samples) == n
    np.testing.assert_allclose(np.asarray(got.mean), ref.mean(0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got.variance), ref.var(0, ddof=1), rtol=1e-4)
    naive = np.asarray(jnp.sum(jnp.asarray(x) ** 2, 0) / n - jnp.mean(jnp.asarray(x), 0) ** 2)
    assert np.abs(naive / ref.var(0) - 1).max() > 1e-2  # the naive formula really fails here


def test_moments_covariance_and_merge_order(rng):
    x = (5 + rng.standard_normal((900, 6)) @ rng.standard_normal((6, 6))).astype(np.float32)
    acc = moments(6, covariance=True)
    parts = [x[:100], x[100:450], x[450:]]
    states = [fold(acc, acc.init(), _blocks(part, 64)) for part in parts]
    merged_a = acc.merge(acc.merge(states[0], states[1]), states[2])
    merged_b = acc.merge(states[2], acc.merge(states[1], states[0]))
    ref = np.cov(x.astype(np.float64), rowvar=False)
    for merged in (merged_a, merged_b):
        got = acc.finalize(merged)
        np.testing.assert_allclose(np.asarray(got.covariance), ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(got.mean), x.astype(np.float64).mean(0), rtol=1e-6)
    empty = acc.init()
    np.testing.assert_allclose(np.asarray(acc.merge(empty, states[0]).mean), np.asarray(states[0].mean))


def test_normal_product_folds_the_mean(rng):
    x = (3 + rng.standard_normal((500, 40))).astype(np.float32)
    z = rng.standard_normal((40, 5)).astype(np.float32)
    mean = x.mean(0)
    acc = normal_product()
    state = fold(acc, acc.init(jnp.asarray(z), jnp.asarray(mean)), _blocks(x, 128))
    xc = x.astype(np.float64) - x.astype(np.float64).mean(0)
    np.testing.assert_allclose(np.asarray(acc.finalize(state)), xc.T @ (xc @ z), rtol=2e-4, atol=1e-2)
    # sharded: two halves folded separately, then merged
    a = fold(acc, acc.init(jnp.asarray(z), jnp.asarray(mean)), _blocks(x[:200], 64))
    b = fold(acc, acc.init(jnp.asarray(z), jnp.asarray(mean)), _blocks(x[200:], 64))
    np.testing.assert_allclose(np.asarray(acc.finalize(acc.merge(a, b))), np.asarray(acc.finalize(state)),
                               rtol=1e-4, atol=1e-2)


def test_tsqr_factor_reproduces_the_gram_matrix(rng):
    x = (2 + rng.standard_normal((700, 30))).astype(np.float32)
    q = np.linalg.qr(rng.standard_normal((30, 6)))[0].astype(np.float32)
    mean = x.mean(0)
    acc = tsqr()
    r = np.asarray(acc.finalize(fold(acc, acc.init(jnp.asarray(q), jnp.asarray(mean)), _blocks(x, 100))),
                   np.float64)
    y = (x.astype(np.float64) - x.astype(np.float64).mean(0)) @ q
    np.testing.assert_allclose(r.T @ r, y.T @ y, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(np.linalg.svd(r, compute_uv=False), np.linalg.svd(y, compute_uv=False), rtol=1e-4)


def test_centred_products_never_need_the_centred_matrix(rng):
    x = rng.standard_normal((50, 7)).astype(np.float32)
    mean = x.mean(0)
    z = rng.standard_normal((7, 3)).astype(np.float32)
    y = rng.standard_normal((50, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(acc_mod.centred_matmul(x, mean, z)), (x - mean) @ z, atol=1e-5)
    np.testing.assert_allclose(np.asarray(acc_mod.centred_rmatmul(x, mean, y)), (x - mean).T @ y, atol=1e-4)
