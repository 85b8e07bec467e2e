import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfactor.randomized import randomized_svd, randomized_svd_source, range_params
from jaxfactor.sources import ArraySource

from .helpers import low_rank_data, principal_angles_deg


@pytest.mark.parametrize("method", ["krylov", "subspace"])
def test_uncentred_svd_with_u(rng, method):
    x = low_rank_data(rng, 400, 150, 12, offset=0.0)
    u, s, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
    r = randomized_svd(jnp.asarray(x), 8, key=jax.random.key(1), method=method)
    np.testing.assert_allclose(np.asarray(r.s), s[:8], rtol=1e-4)
    assert principal_angles_deg(r.vt, vt[:8]).max() < 0.1
    got_u = np.asarray(r.u, np.float64)
    np.testing.assert_allclose(got_u.T @ got_u, np.eye(8), atol=1e-5)
    # U S Vt is the best rank-8 approximation up to float32 rounding
    approx = (got_u * np.asarray(r.s)) @ np.asarray(r.vt)
    best = (u[:, :8] * s[:8]) @ vt[:8]
    assert np.linalg.norm(approx - best) / np.linalg.norm(best) < 1e-3
    np.testing.assert_array_equal(np.asarray(r.mean), 0)


def test_centering_is_implicit_and_exact(rng):
    x = low_rank_data(rng, 300, 100, 10, offset=50.0)
    xc = x.astype(np.float64) - x.astype(np.float64).mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    r = randomized_svd(jnp.asarray(x), 6, key=jax.random.key(0), center=True, compute_u=False)
    assert r.u is None
    np.testing.assert_allclose(np.asarray(r.s), s[:6], rtol=1e-3)
    assert principal_angles_deg(r.vt, vt[:6]).max() < 0.2


def test_source_version_matches_in_memory(rng):
    x = low_rank_data(rng, 500, 120, 10)
    mem = randomized_svd(jnp.asarray(x), 6, key=jax.random.key(3), center=True, compute_u=False)
    src, mom = randomized_svd_source(ArraySource(x), 6, key=jax.random.key(3), block_rows=96)
    np.testing.assert_allclose(np.asarray(src.s), np.asarray(mem.s), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(src.vt), np.asarray(mem.vt), atol=1e-3)
    np.testing.assert_allclose(np.asarray(mom.variance), x.astype(np.float64).var(0, ddof=1), rtol=1e-4)


def test_range_params_caps_and_defaults():
    p = range_params(500, 10000, 16384)
    assert (p.method, p.n_iter, p.block_size, p.basis_size) == ("krylov", 5, 255, 1275)
    s = range_params(500, 10000, 16384, method="subspace")
    assert (s.n_iter, s.basis_size) == (7, 510)
    assert range_params(60, 100, 80, method="subspace").n_iter == 4
    capped = range_params(30, 40, 50)
    assert capped.basis_size <= 40
    with pytest.raises(ValueError, match="method"):
        range_params(5, 10, 10, method="lanczos")


def test_full_width_basis_is_exact(rng):
    x = rng.standard_normal((30, 20)).astype(np.float32)
    s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    r = randomized_svd(jnp.asarray(x), 20, key=jax.random.key(0))
    np.testing.assert_allclose(np.asarray(r.s), s, rtol=1e-4, atol=1e-5)


class _FlakySource:
    """Rows of ``x``; raises once when row ``fail_at`` is requested in pass ``fail_pass``."""

    def __init__(self, x, fail_at, fail_pass):
        self.x, self.fail_at, self.fail_pass = x, fail_at, fail_pass
        self.n_samples, self.n_features = x.shape
        self.dtype = x.dtype
        self.passes = 0
        self.failed = False

    def read(self, start, stop):
        if start == 0:
            self.passes += 1
        if not self.failed and self.passes == self.fail_pass and start == self.fail_at:
            self.failed = True
            raise KeyboardInterrupt("simulated kill")
        return self.x[start:stop]

    def blocks(self, block_rows):
        for lo in range(0, self.n_samples, block_rows):
            yield self.read(lo, min(lo + block_rows, self.n_samples))


@pytest.mark.parametrize("fail_pass", [1, 3, 6])
def test_resume_after_interruption_gives_the_same_result(rng, tmp_path, fail_pass):
    x = low_rank_data(rng, 400, 60, 8)
    kw = dict(key=jax.random.key(2), block_rows=50, n_iter=5, checkpoint_every=2)
    ref, ref_mom = randomized_svd_source(ArraySource(x), 5, **kw)
    ckpt = tmp_path / "run.npz"
    flaky = _FlakySource(x, fail_at=250, fail_pass=fail_pass)
    with pytest.raises(KeyboardInterrupt):
        randomized_svd_source(flaky, 5, checkpoint=ckpt, **kw)
    assert ckpt.exists()
    got, mom = randomized_svd_source(flaky, 5, checkpoint=ckpt, **kw)
    np.testing.assert_array_equal(np.asarray(got.s), np.asarray(ref.s))
    np.testing.assert_array_equal(np.asarray(got.vt), np.asarray(ref.vt))
    np.testing.assert_array_equal(np.asarray(mom.variance), np.asarray(ref_mom.variance))
    assert not ckpt.exists()


def test_checkpoint_of_another_run_is_refused(rng, tmp_path):
    x = low_rank_data(rng, 200, 30, 5)
    ckpt = tmp_path / "run.npz"
    flaky = _FlakySource(x, fail_at=100, fail_pass=2)
    with pytest.raises(KeyboardInterrupt):
        randomized_svd_source(flaky, 4, key=jax.random.key(0), block_rows=50, checkpoint=ckpt,
                              checkpoint_every=1)
    with pytest.raises(ValueError, match="different run"):
        randomized_svd_source(ArraySource(x), 3, key=jax.random.key(0), block_rows=50, checkpoint=ckpt)


# Mixed precision (measured on 1500 x 400 with these settings; the test now runs
# 1000 x 300 to save time). u is the unit roundoff of the operands (bf16: 2^-8 = 3.9e-3,
# tf32: 2^-11 = 4.9e-4). Measured on this case over 3 seeds: relative error of the
# explained variances vs float32 0.08-0.17 u for bf16 and 0.09-0.27 u for tf32
# (in memory tf32 folds the mean into the products, so its error is relative to
# |X| rather than to the spread: the larger figure), largest principal angle of the
# leading half of the components at most 0.18 deg
# (bf16) and 0.061 deg (tf32); singular values vs the exact float64 SVD at most
# 0.13 u. On GAN-like data at N=10000, p=4096 (benchmarks/results/precision.md)
# the same orders. Bounds: 1 u for the variances, 400 u degrees (1.6 deg bf16,
# 0.2 deg tf32) for the angles, 0.5 u vs exact: 2-9 times what is measured,
# and an order below what rounding the uncentred data (mean 5, spread ~1)
# or accumulating in bf16 would give.
_UNIT_ROUNDOFF = {"bf16": 2.0 ** -8, "tf32": 2.0 ** -11}


def _precision_case(rng):
    x = low_rank_data(rng, 1000, 300, 60, decay=0.7, offset=5.0)
    return x, jax.random.key(4)


@pytest.mark.parametrize("precision", ["bf16", pytest.param("tf32", marks=pytest.mark.slow)])
def test_low_precision_products_stay_close_to_float32(rng, precision):
    x, key = _precision_case(rng)
    k = 30
    ref = randomized_svd(jnp.asarray(x), k, key=key, center=True, compute_u=False)
    _, s_exact, vt_exact = np.linalg.svd(x.astype(np.float64) - x.astype(np.float64).mean(0),
                                         full_matrices=False)
    u = _UNIT_ROUNDOFF[precision]
    mem = randomized_svd(jnp.asarray(x), k, key=key, center=True, compute_u=False, precision=precision)
    src, mom = randomized_svd_source(ArraySource(x), k, key=key, block_rows=400, precision=precision)
    for got in (mem, src):
        ev_err = np.max(np.abs(np.asarray(got.s, np.float64) ** 2 / np.asarray(ref.s, np.float64) ** 2 - 1))
        assert ev_err < u, (precision, ev_err)
        assert principal_angles_deg(got.vt[:k // 2], ref.vt[:k // 2]).max() < 400 * u
        # and against the exact float64 answer, the same order as float32 itself
        assert np.max(np.abs(np.asarray(got.s, np.float64) / s_exact[:k] - 1)) < 0.5 * u
    # the moments do not depend on the product precision
    np.testing.assert_allclose(np.asarray(mom.variance), x.astype(np.float64).var(0, ddof=1), rtol=1e-4)


def test_precision_off_by_default_is_the_float32_program(rng):
    x = low_rank_data(rng, 300, 80, 10)
    key = jax.random.key(1)
    a = randomized_svd(jnp.asarray(x), 5, key=key, center=True, n_iter=2)
    b = randomized_svd(jnp.asarray(x), 5, key=key, center=True, n_iter=2, precision="float32")
    c = randomized_svd(jnp.asarray(x), 5, key=key, center=True, n_iter=2, precision="bf16")
    for f in ("s", "vt", "u"):
        np.testing.assert_array_equal(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)))
    assert not np.array_equal(np.asarray(a.s), np.asarray(c.s))  # the option does change the products
    sa, _ = randomized_svd_source(ArraySource(x), 5, key=key, block_rows=100, n_iter=2)
    sb, _ = randomized_svd_source(ArraySource(x), 5, key=key, block_rows=100, n_iter=2, precision="float32")
    np.testing.assert_array_equal(np.asarray(sa.vt), np.asarray(sb.vt))


def test_invalid_precision_is_refused(rng):
    x = jnp.asarray(low_rank_data(rng, 40, 10, 3))
    with pytest.raises(ValueError, match="precision must be one of"):
        randomized_svd(x, 2, key=jax.random.key(0), precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        randomized_svd_source(ArraySource(np.asarray(x)), 2, key=jax.random.key(0), precision="float16")
