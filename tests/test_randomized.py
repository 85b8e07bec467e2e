import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfactor import accumulate
from jaxfactor.randomized import randomized_svd, randomized_svd_source, range_basis, range_params
from jaxfactor.sources import ArraySource

from .helpers import KilledSource, low_rank_data, principal_angles_deg
from .tolerances import (LAMBDA, assert_within, blocked_moments_error, gamma, normal_operator_error,
                         orthonormality_error, randomized_angle_bound_deg, rayleigh_ritz_error)


def float64_rerun(x, k, key, *, method="krylov", center=True, **sizes):
    """The range finder and Rayleigh-Ritz step of :func:`randomized_svd` run again in
    float64 NumPy with the same start block (``key``) and sizes: the randomized
    method's own error in exact arithmetic, which a float32 run adds to its
    rounding. Returns ``(singular values (k,), vt (k, p))``, signs as ``svd_flip``."""
    x = np.asarray(x, np.float64)
    n, p = x.shape
    xc = x - x.mean(axis=0) if center else x
    params = range_params(k, n, p, method=method, **sizes)
    omega = np.asarray(jax.random.normal(key, (p, params.block_size), jnp.float32), np.float64)

    def orth(z):
        return np.linalg.qr(z)[0]

    def apply_normal(z):
        return xc.T @ (xc @ z)

    def extend(basis, block):
        for _ in range(2):
            if basis is not None:
                block = block - basis @ (basis.T @ block)
            block = orth(block)
        return block if basis is None else np.concatenate([basis, block], axis=1)

    if params.method == "subspace":
        basis = orth(apply_normal(omega))
        for _ in range(params.n_iter - 1):
            basis = orth(apply_normal(basis))
    else:
        basis = last = extend(None, apply_normal(omega))
        for _ in range(params.n_iter - 1):
            width = basis.shape[1]
            basis = extend(basis, apply_normal(last))
            last = basis[:, width:]
        basis = basis[:, :params.basis_size]
    _, s, wt = np.linalg.svd(np.linalg.qr(xc @ basis, mode="r"))
    vt = wt[:k] @ basis.T
    vt *= np.sign(vt[np.arange(k), np.argmax(np.abs(vt), axis=1)])[:, None]
    return s[:k], vt


def _factor_orthonormality(n, l, k):
    """``||F^T F - I||_F`` for ``F = Q W[:, :k]``: ``Q (n, l)`` from a QR, ``W`` from the
    SVD of an ``(l, l)`` factor, and their product (``2 gamma(l) ||Q||_F ||W_k||_F``)."""
    return orthonormality_error(n, l) + orthonormality_error(l, l) + 2 * gamma(l) * math.sqrt(l * k)


def _gaps(values, k):
    """Distance of each of the top ``k`` values of a spectrum to all the others: what
    guards each vector on its own (``min_gap`` is their minimum)."""
    values = np.asarray(values, np.float64)
    gaps = np.abs(values[:k, None] - values[None, :])
    gaps[np.arange(k), np.arange(k)] = np.inf
    return gaps.min(axis=1)


def _vector_sines(x, k, l, *, centred=True, block_rows=None):
    """Per right singular vector (``(k,)``), the sine of the angle rounding can put
    between it and the exact one: as :func:`randomized_angle_bound_deg` with the gap
    of each of the top ``k`` values to all others (:func:`_gaps`), one by one."""
    x64 = np.asarray(x, np.float64)
    s = np.linalg.svd(x64 - x64.mean(0) if centred else x64, compute_uv=False)
    sines = (normal_operator_error(x, centred=centred) / _gaps(s ** 2, k)
             + rayleigh_ritz_error(x, l, centred=centred, block_rows=block_rows) / _gaps(s, k))
    return np.minimum(sines, 1.0)


@pytest.mark.parametrize("method", ["krylov", "subspace"])
def test_uncentred_svd_with_u(rng, method):
    x = low_rank_data(rng, 400, 150, 12, offset=0.0)
    x64 = x.astype(np.float64)
    n, k = x.shape[0], 8
    l = range_params(k, *x.shape, method=method).basis_size
    u, s, vt = np.linalg.svd(x64, full_matrices=False)
    s_peer, vt_peer = float64_rerun(x, k, jax.random.key(1), method=method, center=False)
    r = randomized_svd(jnp.asarray(x), k, key=jax.random.key(1), method=method)
    # Weyl on the Rayleigh-Ritz step's rounding, plus the range finder's own error
    # (the float64 rerun's shortfall; the basis's rounding moves the Ritz values at
    # second order only, Ritz values being stationary)
    e = rayleigh_ritz_error(x, l, centred=False)
    assert_within(r.s, s[:k], e + np.maximum(s[:k] - s_peer, 0))
    angle = randomized_angle_bound_deg(x, k, l, centred=False) + principal_angles_deg(vt_peer, vt[:k]).max()
    assert principal_angles_deg(r.vt, vt[:k]).max() <= angle
    got_u = np.asarray(r.u, np.float64)
    orth = _factor_orthonormality(n, l, k)
    assert np.linalg.norm(got_u.T @ got_u - np.eye(k)) <= orth
    # U S Vt is the best rank-8 approximation up to the subspace's angle
    # (||X (P_V - P_Vk)||_F <= sigma_1 sqrt(2 k) sin(theta)), the rank-k backward
    # error sqrt(k) e and U's and V's distance to orthonormal
    approx = (got_u * np.asarray(r.s)) @ np.asarray(r.vt)
    best = (u[:, :k] * s[:k]) @ vt[:k]
    bound = (s[0] * math.sqrt(2 * k) * math.sin(math.radians(angle))
             + math.sqrt(k) * (e + np.max(s[:k] - s_peer)) + 2 * orth * np.linalg.norm(best))
    assert np.linalg.norm(approx - best) <= bound
    np.testing.assert_array_equal(np.asarray(r.mean), 0)


@pytest.mark.parametrize("transposed", [True, False], ids=["transposed-copy", "row-major-only"])
def test_centering_is_implicit_and_exact(rng, monkeypatch, transposed):
    # both layouts of the products X^T Y: from a transposed copy of X (the CPU default)
    # and from X itself (accelerators, or past the copy's memory bound)
    import jaxfactor.randomized as randomized_module

    assert randomized_module.keep_transpose(300, 100, 4, "cpu")
    if not transposed:
        monkeypatch.setattr(randomized_module, "keep_transpose", lambda *a, **k: False)
    x = low_rank_data(rng, 300, 100, 10, offset=50.0)
    assert (randomized_module._transposed_copy(jnp.asarray(x), "float32") is not None) == transposed
    xc = x.astype(np.float64) - x.astype(np.float64).mean(0)
    k = 6
    l = range_params(k, *x.shape).basis_size
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    s_peer, vt_peer = float64_rerun(x, k, jax.random.key(0))
    r = randomized_svd(jnp.asarray(x), k, key=jax.random.key(0), center=True, compute_u=False)
    assert r.u is None
    # as uncentred, with the mean folded into the products: their rounding is
    # relative to ||X||_F (offset 50), the centred matrix is never formed
    assert_within(r.s, s[:k], rayleigh_ritz_error(x, l) + np.maximum(s[:k] - s_peer, 0))
    angle = randomized_angle_bound_deg(x, k, l) + principal_angles_deg(vt_peer, vt[:k]).max()
    assert principal_angles_deg(r.vt, vt[:k]).max() <= angle


def test_source_version_matches_in_memory(rng):
    x = low_rank_data(rng, 500, 120, 10)
    x64 = x.astype(np.float64)
    k, block_rows = 6, 96
    l = range_params(k, *x.shape).basis_size
    mem = randomized_svd(jnp.asarray(x), k, key=jax.random.key(3), center=True, compute_u=False)
    src, mom = randomized_svd_source(ArraySource(x), k, key=jax.random.key(3), block_rows=block_rows)
    # the same algorithm and start block: each within its rounding of the float64
    # rerun (the exact-arithmetic answer of this start block), so of each other
    assert_within(src.s, mem.s, rayleigh_ritz_error(x, l) + rayleigh_ritz_error(x, l, block_rows=block_rows))
    # component by component (signs fixed by svd_flip): |v - v'| <= sqrt(2) sin(angle)
    # each, with the gap of each value to all others
    sines = _vector_sines(x, k, l) + _vector_sines(x, k, l, block_rows=block_rows)
    diff = np.linalg.norm(np.asarray(src.vt, np.float64) - np.asarray(mem.vt, np.float64), axis=1)
    assert np.all(diff <= math.sqrt(2) * sines), (diff, sines)
    assert_within(mom.variance, x64.var(0, ddof=1), blocked_moments_error(x64, block_rows)[1])


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
    # the basis spans all of R^20: no range-finder error, only the rounding (Weyl)
    assert_within(r.s, s, rayleigh_ritz_error(x, 20, centred=False))


@pytest.mark.parametrize("fail_pass", [1, 3, 6])
def test_resume_after_interruption_gives_the_same_result(rng, tmp_path, fail_pass):
    x = low_rank_data(rng, 400, 60, 8)
    kw = dict(key=jax.random.key(2), block_rows=50, n_iter=5, checkpoint_every=2)
    ref, ref_mom = randomized_svd_source(ArraySource(x), 5, **kw)
    ckpt = tmp_path / "run.npz"
    flaky = KilledSource(x, fail_at=250, fail_pass=fail_pass)
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
    flaky = KilledSource(x, fail_at=100, fail_pass=2)
    with pytest.raises(KeyboardInterrupt):
        randomized_svd_source(flaky, 4, key=jax.random.key(0), block_rows=50, checkpoint=ckpt,
                              checkpoint_every=1)
    with pytest.raises(ValueError, match="different run"):
        randomized_svd_source(ArraySource(x), 3, key=jax.random.key(0), block_rows=50, checkpoint=ckpt)


# Mixed precision: u is the unit roundoff of the products' operands (bf16: 2^-8 =
# 3.9e-3, tf32: 2^-11 = 4.9e-4); float32 accumulation's rounding is 2^-16 (bf16) or
# 2^-13 (tf32) of it in the same model and left out. (Measured on this case over 3
# seeds: relative error of the explained variances vs float32 0.08-0.17 u for bf16
# and 0.09-0.27 u for tf32, largest principal angle of the leading half of the
# components at most 0.18 deg (bf16) and 0.061 deg (tf32).)
_UNIT_ROUNDOFF = {"bf16": 2.0 ** -8, "tf32": 2.0 ** -11}


def _precision_case(rng):
    x = low_rank_data(rng, 1000, 300, 60, decay=0.7, offset=5.0)
    return x, jax.random.key(4)


def _float32_basis(x, k, key, **sizes):
    """The range finder's basis of the in-memory float32 run (``randomized_svd``'s
    own steps: same key, sizes and centred products)."""
    xj = jnp.asarray(x)
    mean = jnp.mean(xj, axis=0)
    params = range_params(k, *x.shape, **sizes)

    def apply_normal(z):
        return accumulate.centred_rmatmul(xj, mean, accumulate.centred_matmul(xj, mean, z))

    omega = jax.random.normal(key, (x.shape[1], params.block_size), xj.dtype)
    return np.asarray(range_basis(apply_normal, omega, params), np.float64)


def _operand_rounding_bounds(x, basis, k, k_angle, u, *, centred_operands):
    """First-order effect of rounding the products' operands to unit roundoff ``u``:
    ``(bound on |dsigma_i|, i < k; bound on the largest principal angle of the top
    k_angle right singular vectors, degrees)``.

    The Ritz step takes the SVD of ``fl(X_c) fl(Q)`` (``basis`` ``Q``): the data's
    rounding ``E_ab = delta_ab x_ab`` and the basis's ``dQ_bl = delta_bl Q_bl``, all
    ``|delta| <= u`` and independent (the Higham-Mary model). To first order
    ``dsigma_i = u_i^T E v_i + sigma_i v_i^T dQ w_i`` (``w = Q^T v``), sums of
    independent terms, within ``LAMBDA`` of their rms ``u sqrt(M_ii + sigma_i^2
    B_ii)`` (Hoeffding, as :func:`gamma`) with ``M_ji = sum_ab u_aj^2 x_ab^2 v_bi^2``
    and ``B_ji = sum_bl v_bj^2 Q_bl^2 w_li^2``; the vectors move by ``sum_j v_j
    (sigma_j c_ji + sigma_i c_ij) / (sigma_i^2 - sigma_j^2)``, ``c_ji = u_j^T (E + X_c
    dQ Q^T) v_i``, whose part outside the top ``k_angle`` has rms at most ``u sqrt(sum
    2 (sigma_j^2 (M_ji + sigma_j^2 B_ji) + sigma_i^2 (M_ij + sigma_i^2 B_ij)) /
    (sigma_i^2 - sigma_j^2)^2)`` (first-order perturbation). The range finder's own
    roundings move the basis, which the Ritz values feel at second order only.
    ``centred_operands``: the rounded data is the centred data (bf16; streaming),
    else ``X`` itself (in-memory tf32 folds the mean into the products): the larger
    of the two magnitudes."""
    x = np.asarray(x, np.float64)
    xc = x - x.mean(0)
    mag2 = xc ** 2 if centred_operands else np.maximum(xc ** 2, x ** 2)
    left, s, vt = np.linalg.svd(xc, full_matrices=False)
    v = vt.T
    m = (left ** 2).T @ mag2 @ (v ** 2)
    b = (v ** 2).T @ (basis ** 2) @ ((basis.T @ v) ** 2)
    sv = LAMBDA * u * np.sqrt(np.diag(m)[:k] + s[:k] ** 2 * np.diag(b)[:k])
    i, j = np.arange(k_angle)[:, None], np.arange(k_angle, len(s))[None, :]
    terms = 2 * (s[j] ** 2 * (m[j, i] + s[j] ** 2 * b[j, i])
                 + s[i] ** 2 * (m[i, j] + s[i] ** 2 * b[i, j])) / (s[i] ** 2 - s[j] ** 2) ** 2
    angle = math.degrees(math.asin(min(1.0, LAMBDA * u * math.sqrt(terms.sum()))))
    return sv, angle


@pytest.mark.parametrize("precision", ["bf16", pytest.param("tf32", marks=pytest.mark.slow)])
def test_low_precision_products_stay_close_to_float32(rng, precision):
    x, key = _precision_case(rng)
    k = 30
    ref = randomized_svd(jnp.asarray(x), k, key=key, center=True, compute_u=False)
    x64 = x.astype(np.float64)
    s_exact = np.linalg.svd(x64 - x64.mean(0), compute_uv=False)
    u = _UNIT_ROUNDOFF[precision]
    mem = randomized_svd(jnp.asarray(x), k, key=key, center=True, compute_u=False, precision=precision)
    src, mom = randomized_svd_source(ArraySource(x), k, key=key, block_rows=400, precision=precision)
    basis = _float32_basis(x, k, key)  # the low-precision runs' bases differ from it by rounding
    for got, centred in ((mem, precision == "bf16"), (src, True)):
        sv, angle = _operand_rounding_bounds(x, basis, k, k // 2, u, centred_operands=centred)
        assert_within(got.s, ref.s, sv)
        assert principal_angles_deg(got.vt[:k // 2], ref.vt[:k // 2]).max() <= angle
        # and against the exact float64 answer: that, plus the float32 run's own error
        # (its range finder's, with the same key)
        assert_within(got.s, s_exact[:k], sv + np.abs(np.asarray(ref.s, np.float64) - s_exact[:k]))
    # the moments do not depend on the product precision
    assert_within(mom.variance, x64.var(0, ddof=1), blocked_moments_error(x64, 400)[1])


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
