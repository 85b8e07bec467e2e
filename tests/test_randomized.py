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
