import jax.numpy as jnp
import numpy as np
import pytest

from jaxfactor import accumulate as acc_mod
from jaxfactor.accumulate import fold, moments, normal_product, tsqr

from .tolerances import LAMBDA, assert_within, blocked_gram_error, blocked_moments_error, gamma, unit_roundoff

U32 = unit_roundoff(np.float32)
BF16_U = 2.0 ** -8  # unit roundoff of bfloat16's 8-bit significand


def _blocks(x, size):
    return [x[i:i + size] for i in range(0, len(x), size)]


def _normal_product_bound(x, mean, z, operand_u=0.0):
    """Bound on ``||fl(P) - X_c^T X_c z||_F`` for ``P = (X - 1 m^T)^T (X - 1 m^T) z``
    of ``X (n, p)`` computed in float32 with the (float32) mean ``m``.

    ``operand_u == 0``: the mean folded into both products (``centred_matmul``,
    ``centred_rmatmul``): ``Y = X z - 1 (m^T z)`` errs by ``2 gamma(p) ||X||_F
    ||z||_F + u ||Y||_F`` (each entry ``gamma(p)`` times the sums of ``|x||z|``
    and ``|m||z|``; Cauchy-Schwarz, ``||1 m^T||_F <= ||X||_F``), which
    ``X_c^T`` carries by ``||X_c||_2``; ``X^T Y - m (1^T Y)`` errs by ``2 gamma(n)
    ||X||_F ||Y||_F``, the cancellation of the mean.
    ``operand_u > 0``: the block centred first (``C = X - 1 m^T``, error ``u |C|``)
    and both products' operands rounded to that unit roundoff (``2 operand_u +
    gamma`` per product, relative to ``|C| |z|`` and ``|C|^T |Y|``), float32 sums.
    Both: the mean's own rounding ``d = mean - m`` adds ``n ||d||^2 ||z||_F``
    exactly (``(X - 1 m^T)^T (X - 1 m^T) = X_c^T X_c + n d d^T``)."""
    x = np.asarray(x, np.float64)
    z = np.asarray(z, np.float64)
    n, p = x.shape
    xc = x - x.mean(0)
    y = xc @ z
    d = x.mean(0) - np.asarray(mean, np.float64)
    shift = n * float(d @ d) * np.linalg.norm(z)
    zf, yf, c2 = np.linalg.norm(z), np.linalg.norm(y), np.linalg.norm(xc, 2)
    if operand_u == 0:
        xf = np.linalg.norm(x)
        return c2 * (2 * gamma(p) * xf * zf + U32 * yf) + 2 * gamma(n) * xf * yf + shift
    cf = np.linalg.norm(xc)
    dy = (2 * operand_u + gamma(p) + U32) * cf * zf
    return c2 * dy + (2 * operand_u + gamma(n)) * cf * (yf + dy) + shift


def _tsqr_input_bound(x, mean, q, operand_u=0.0):
    """Bound on ``||fl(Y_hat) - Y_hat||_F`` for the blocks' products ``Y_hat = (X - 1 m^T) q``
    that the tall-skinny QR folds in (as ``Y`` in :func:`_normal_product_bound`)."""
    x = np.asarray(x, np.float64)
    q = np.asarray(q, np.float64)
    p = x.shape[1]
    xc = x - np.asarray(mean, np.float64)
    if operand_u == 0:
        return 2 * gamma(p) * np.linalg.norm(x) * np.linalg.norm(q) + U32 * np.linalg.norm(xc @ q)
    return (2 * operand_u + gamma(p) + U32) * np.linalg.norm(xc) * np.linalg.norm(q)


def _tsqr_bounds(x, mean, q, block_rows, input_bound):
    """``(gram, singular value)`` bounds for the factor ``R`` of :func:`tsqr`:
    ``R^T R`` against ``Y^T Y`` and ``sigma(R)`` against ``sigma(Y)``, ``Y = X_c q``
    (exact mean). ``R`` is the exact factor of ``Y_hat + dY``: ``dY`` the products'
    rounding (``input_bound``) plus the backward error of the QR folds, each of a
    ``(b + k, k)`` stack (``gamma((b + k) k) ||Y||_F``, Householder; one per block).
    ``Y_hat = Y + 1 dq^T`` with ``dq = q^T (mean - m)`` has ``Y_hat^T Y_hat = Y^T Y +
    n dq dq^T`` exactly (columns of ``Y`` sum to zero). So ``||R^T R - Y^T Y||_F <=
    2 ||Y||_2 ||dY|| + ||dY||^2 + n ||dq||^2`` and (Weyl) ``|sigma_i(R) -
    sigma_i(Y)| <= ||dY|| + n ||dq||^2 / sigma_min(Y)``."""
    x = np.asarray(x, np.float64)
    q = np.asarray(q, np.float64)
    n, k = x.shape[0], q.shape[1]
    y = (x - x.mean(0)) @ q
    sv = np.linalg.svd(y, compute_uv=False)
    dq = q.T @ (x.mean(0) - np.asarray(mean, np.float64))
    folds = -(-n // block_rows)
    dy = input_bound + folds * gamma((block_rows + k) * k) * np.linalg.norm(y)
    shift = n * float(dq @ dq)
    return 2 * sv[0] * dy + dy * dy + shift, dy + shift / sv[-1]


def test_moments_float32_accurate_for_a_million_rows_with_large_mean(rng):
    # a mean 1e3 times the spread: naive sums of squares in float32 lose all digits
    n, p, b = 1_000_000, 8, 65536
    x = (1000.0 + rng.standard_normal((n, p)) * np.linspace(0.5, 2.0, p)).astype(np.float32)
    acc = moments(p)
    state = fold(acc, acc.init(), _blocks(x, b))
    got = acc.finalize(state)
    ref = x.astype(np.float64)
    assert int(got.n_samples) == n
    # Chan's blockwise moments: the error is relative to the spread, plus (second
    # order) the block means' rounding, gamma(b) |mean|
    mean_bound, var_bound = blocked_moments_error(ref, b)
    assert_within(got.mean, ref.mean(0), mean_bound)
    assert_within(got.variance, ref.var(0, ddof=1), var_bound)
    naive = np.asarray(jnp.sum(jnp.asarray(x) ** 2, 0) / n - jnp.mean(jnp.asarray(x), 0) ** 2)
    # the naive formula really fails here: off by more than the accurate one's bound
    assert np.max(np.abs(naive - ref.var(0)) / var_bound) > 1


def test_moments_covariance_and_merge_order(rng):
    x = (5 + rng.standard_normal((900, 6)) @ rng.standard_normal((6, 6))).astype(np.float32)
    x64 = x.astype(np.float64)
    acc = moments(6, covariance=True)
    # parts on multiples of the block size: together the blocks of 64 rows of x
    parts = [x[:128], x[128:448], x[448:]]
    states = [fold(acc, acc.init(), _blocks(part, 64)) for part in parts]
    merged_a = acc.merge(acc.merge(states[0], states[1]), states[2])
    merged_b = acc.merge(states[2], acc.merge(states[1], states[0]))
    ref = np.cov(x64, rowvar=False)
    # Chan over blocks of 64 in any merge order: blocked_gram_error / (n - 1), plus
    # the block means' second-order term (as blocked_moments_error, off the diagonal too)
    n = len(x)
    mean_bound = blocked_moments_error(x64, 64)[0]
    cov_bound = (blocked_gram_error(x64, 64) + n * np.outer(mean_bound, mean_bound)) / (n - 1)
    for merged in (merged_a, merged_b):
        got = acc.finalize(merged)
        assert_within(got.covariance, ref, cov_bound)
        assert_within(got.mean, x64.mean(0), mean_bound)
    empty = acc.init()
    # merging into the empty state is exact: mean 0 + delta * (n / n), m2 + 0
    np.testing.assert_array_equal(np.asarray(acc.merge(empty, states[0]).mean), np.asarray(states[0].mean))


def test_normal_product_folds_the_mean(rng):
    x = (3 + rng.standard_normal((500, 40))).astype(np.float32)
    z = rng.standard_normal((40, 5)).astype(np.float32)
    mean = x.mean(0)
    acc = normal_product()
    state = fold(acc, acc.init(jnp.asarray(z), jnp.asarray(mean)), _blocks(x, 128))
    xc = x.astype(np.float64) - x.astype(np.float64).mean(0)
    whole = np.asarray(acc.finalize(state), np.float64)
    bound = _normal_product_bound(x, mean, z)
    assert np.linalg.norm(whole - xc.T @ (xc @ z)) <= bound
    # sharded: two halves folded separately, then merged; another summation order
    # of the same sums, so within twice the bound of one
    a = fold(acc, acc.init(jnp.asarray(z), jnp.asarray(mean)), _blocks(x[:200], 64))
    b = fold(acc, acc.init(jnp.asarray(z), jnp.asarray(mean)), _blocks(x[200:], 64))
    merged = np.asarray(acc.finalize(acc.merge(a, b)), np.float64)
    assert np.linalg.norm(merged - whole) <= 2 * bound


def test_tsqr_factor_reproduces_the_gram_matrix(rng):
    x = (2 + rng.standard_normal((700, 30))).astype(np.float32)
    q = np.linalg.qr(rng.standard_normal((30, 6)))[0].astype(np.float32)
    mean = x.mean(0)
    acc = tsqr()
    r = np.asarray(acc.finalize(fold(acc, acc.init(jnp.asarray(q), jnp.asarray(mean)), _blocks(x, 100))),
                   np.float64)
    y = (x.astype(np.float64) - x.astype(np.float64).mean(0)) @ q
    gram_bound, sv_bound = _tsqr_bounds(x, mean, q, 100, _tsqr_input_bound(x, mean, q))
    assert np.linalg.norm(r.T @ r - y.T @ y) <= gram_bound
    assert_within(np.linalg.svd(r, compute_uv=False), np.linalg.svd(y, compute_uv=False), sv_bound)


def test_centred_products_never_need_the_centred_matrix(rng):
    x = rng.standard_normal((50, 7)).astype(np.float32)
    mean = x.mean(0)
    z = rng.standard_normal((7, 3)).astype(np.float32)
    y = rng.standard_normal((50, 3)).astype(np.float32)
    x64, m64, z64, y64 = (v.astype(np.float64) for v in (x, mean, z, y))
    # entrywise: the product's sums (gamma of their length, on the sums of |terms|)
    # and the mean's correction term, then one subtraction
    want = (x64 - m64) @ z64
    bound = gamma(7) * (np.abs(x64) @ np.abs(z64) + np.abs(m64) @ np.abs(z64)) + U32 * np.abs(want)
    assert_within(acc_mod.centred_matmul(x, mean, z), want, bound)
    want = (x64 - m64).T @ y64
    bound = gamma(50) * (np.abs(x64).T @ np.abs(y64) + np.outer(np.abs(m64), np.abs(y64).sum(0))) \
        + U32 * np.abs(want)
    assert_within(acc_mod.centred_rmatmul(x, mean, y), want, bound)


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
    # one block of the 37 valid rows (the masked ones add exact zeros)
    mean_bound = blocked_moments_error(x64)[0]
    assert_within(got.mean, x64.mean(0), mean_bound)
    cov_bound = (blocked_gram_error(x64) + 37 * np.outer(mean_bound, mean_bound)) / 36
    assert_within(got.covariance, np.cov(x64.T), cov_bound)
    z = rng.standard_normal((9, 4)).astype(np.float32)
    mean = jnp.asarray(x64.mean(0), jnp.float32)
    y = xc @ z.astype(np.float64)
    # float32: the folded-mean bounds; bf16: operands rounded to 8 bits, relative
    # to the centred data (the block is centred first), so the bound holds only if
    # neither the padding's 1e3 nor the mean 5 reach the rounding
    for precision, operand_u in (("float32", 0.0), ("bf16", BF16_U)):
        prod = normal_product(precision)
        got = np.asarray(prod.finalize(prod.update(prod.init(jnp.asarray(z), mean), block, n_valid)), np.float64)
        bound = _normal_product_bound(x, mean, z, operand_u)
        assert np.linalg.norm(got - xc.T @ y) <= bound, precision
        qr = tsqr(precision)
        r = np.asarray(qr.finalize(qr.update(qr.init(jnp.asarray(z), mean), block, n_valid)), np.float64)
        gram_bound, _ = _tsqr_bounds(x, mean, z, 40, _tsqr_input_bound(x, mean, z, operand_u))
        assert np.linalg.norm(r.T @ r - y.T @ y) <= gram_bound, precision


def test_matmul_precisions_round_the_operands_and_accumulate_in_float32(rng):
    a = rng.standard_normal((64, 300)).astype(np.float32)
    b = rng.standard_normal((300, 5)).astype(np.float32)
    k = a.shape[1]
    exact = a.astype(np.float64) @ b.astype(np.float64)
    f32 = np.asarray(acc_mod.matmul(jnp.asarray(a), jnp.asarray(b)))
    np.testing.assert_array_equal(f32, np.asarray(jnp.asarray(a) @ jnp.asarray(b)))  # default: the old product
    scale = np.abs(a).astype(np.float64) @ np.abs(b)  # bound of the rounding of the sum terms
    rms = np.sqrt(a.astype(np.float64) ** 2 @ b.astype(np.float64) ** 2)  # sqrt(sum of squared terms)
    for precision, bits in (("bf16", 8), ("tf32", 11)):
        got = np.asarray(acc_mod.matmul(jnp.asarray(a), jnp.asarray(b), precision), np.float64)
        # the products of operands rounded to `bits` bits (numpy float64, independent rounding)
        def rnd(v):
            m, e = np.frexp(v.astype(np.float64))
            return np.ldexp(np.round(m * 2.0 ** bits) / 2.0 ** bits, e)
        ref = rnd(a) @ rnd(b)
        # same rounded operands (their products are exact in float32): only the
        # float32 accumulation error remains, gamma(k) on the sums of |terms|
        assert np.max(np.abs(got - ref) / scale) <= gamma(k), precision
        # and they really are rounded: each term is off by a relative 2 ub + ub^2
        # (ub = 2^-bits), independently, so (Hoeffding, as gamma) the sum is off
        # by at most LAMBDA (2 ub + ub^2) sqrt(sum of squared terms) ...
        ub = 2.0 ** -bits
        assert_within(got, exact, LAMBDA * (2 * ub + ub * ub) * rms + gamma(k) * scale)
        # ... and by more than float32 accumulation alone could explain
        err = np.max(np.abs(got - exact) / scale)
        assert err > gamma(k), (precision, err)
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
    x64, z64 = x.astype(np.float64), z.astype(np.float64)
    assert_within(np.concatenate([np.asarray(p) for p in parts]), x64 @ z64,
                  gamma(7) * np.abs(x64) @ np.abs(z64))
    assert seen[-1] == (1001, 1001) and [d for d, _ in seen] == sorted({d for d, _ in seen})
