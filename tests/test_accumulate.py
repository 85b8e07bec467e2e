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


def _padded(x, pad):
    """``x`` with ``pad`` rows of large garbage appended (masking must drop them)."""
    return np.concatenate([x, np.full((pad, x.shape[1]), 1e3, x.dtype)])


def test_masked_updates_ignore_padding_rows(rng):
    x = (rng.standard_normal((37, 9)) * 2 + 5).astype(np.float32)
    x64 = x.astype(np.float64)
    xc = x64 - x64.mean(0)
    block, n_valid = jnp.asarray(_padded(x, 3)), jnp.int32(37)
    mom = moments(9, covariance=True)
    got = mom.finalize(mom.update(mom.init(), block, n_valid))
    assert int(got.n_samples) == 37
    np.testing.assert_allclose(np.asarray(got.mean), x64.mean(0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got.covariance), np.cov(x64.T), rtol=1e-5, atol=1e-5)
    z = rng.standard_normal((9, 4)).astype(np.float32)
    mean = jnp.asarray(x64.mean(0), jnp.float32)
    def rel(a, b):
        return np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b)

    # float32: a few ulps; bf16: operands rounded to 8 bits (u = 2^-8), relative
    # to the centred data, so the result is good to a few u (not swamped by the
    # padding's 1e3 nor by the mean 5)
    for precision, tol in (("float32", 1e-5), ("bf16", 2e-2)):
        prod = normal_product(precision)
        got = prod.finalize(prod.update(prod.init(jnp.asarray(z), mean), block, n_valid))
        assert rel(got, xc.T @ (xc @ z)) < tol, precision
        qr = tsqr(precision)
        r = np.asarray(qr.finalize(qr.update(qr.init(jnp.asarray(z), mean), block, n_valid)), np.float64)
        y = xc @ z
        assert rel(r.T @ r, y.T @ y) < tol, precision


def test_matmul_precisions_round_the_operands_and_accumulate_in_float32(rng):
    a = rng.standard_normal((64, 300)).astype(np.float32)
    b = rng.standard_normal((300, 5)).astype(np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    f32 = np.asarray(acc_mod.matmul(jnp.asarray(a), jnp.asarray(b)))
    np.testing.assert_array_equal(f32, np.asarray(jnp.asarray(a) @ jnp.asarray(b)))  # default: the old product
    scale = np.abs(a).astype(np.float64) @ np.abs(b)  # bound of the rounding of the sum terms
    for precision, bits in (("bf16", 8), ("tf32", 11)):
        got = np.asarray(acc_mod.matmul(jnp.asarray(a), jnp.asarray(b), precision), np.float64)
        # the products of operands rounded to `bits` bits (numpy float64, independent rounding)
        def rnd(v):
            m, e = np.frexp(v.astype(np.float64))
            return np.ldexp(np.round(m * 2.0 ** bits) / 2.0 ** bits, e)
        ref = rnd(a) @ rnd(b)
        # same rounded operands: only float32 accumulation error remains
        assert np.max(np.abs(got - ref) / scale) < 1e-5, precision
        # and they really are rounded: the error against exact is of order 2^-bits
        err = np.max(np.abs(got - exact) / scale)
        assert 2.0 ** -(bits + 6) < err < 2.0 ** -bits, (precision, err)
    with pytest.raises(ValueError, match="precision must be one of"):
        acc_mod.matmul(jnp.asarray(a), jnp.asarray(b), "fp8")
    with pytest.raises(ValueError, match="precision must be one of"):
        normal_product("half")


def test_map_blocks_maps_every_row_once_in_order(rng):
    from jaxfactor.sources import ArraySource

    x = rng.standard_normal((1001, 7)).astype(np.float32)
    z = rng.standard_normal((7, 3)).astype(np.float32)
    seen = []
    parts = acc_mod.map_blocks(lambda b: b @ jnp.asarray(z), ArraySource(x), 128,
                               progress=lambda done, total: seen.append((done, total)))
    assert [p.shape[0] for p in parts] == [128] * 7 + [105]
    np.testing.assert_allclose(np.concatenate([np.asarray(p) for p in parts]),
                               x.astype(np.float64) @ z, rtol=1e-5, atol=1e-5)
    assert seen[-1] == (1001, 1001) and [d for d, _ in seen] == sorted({d for d, _ in seen})
