"""Accuracy you can set: the adaptive randomized PCA against float64 SVD and against
scikit-learn's randomized PCA, on three spectrum shapes.

The quantity controlled is the relative shortfall of the captured variance,
``1 - sum_k ||X_c v_i||^2 / sum_k sigma_i^2``, measured here exactly from the
float64 SVD of the same data.
"""
import jax
import numpy as np
import pytest
from sklearn.decomposition import PCA as SKPCA

from jaxfactor import PCA
from jaxfactor._policy import (ADAPTIVE_TOL, KRYLOV_MAX_DEPTH, KRYLOV_MIN_DEPTH, adaptive_min_iter,
                               adaptive_width, krylov_adaptive_block, krylov_adaptive_max_depth)
from jaxfactor.randomized import randomized_svd

N, P, K = 1500, 1100, 30   # p above the exact-solver threshold: the randomized default


def _spectrum(kind, m):
    if kind == "power":          # slow power-law decay, as GAN features have
        return np.arange(1, m + 1) ** -0.5
    if kind == "exponential":
        return np.exp(-np.arange(m) / 10.0)
    # flat top, then a tail: random conv features (eigenvalues 32 down to 25)
    return np.sqrt(np.concatenate([np.linspace(32, 25, m // 2), np.linspace(25, 1, m - m // 2)]))


def _data(rng, kind, n=N, p=P):
    m = min(n, p)
    u = np.linalg.qr(rng.standard_normal((n, m)))[0]
    v = np.linalg.qr(rng.standard_normal((p, m)))[0]
    s = _spectrum(kind, m)
    return ((u * s) @ v.T + 1e-3 * s[-1] * rng.standard_normal((n, p))).astype(np.float32)


def _shortfall(x, components):
    k = len(components)
    xc = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    best = np.sum(np.linalg.svd(xc, compute_uv=False)[:k] ** 2)
    v = np.linalg.qr(np.asarray(components, np.float64).T)[0]   # the subspace found
    return 1 - np.sum((xc @ v) ** 2) / best


def _float32_floor(p=P):
    # float32 components (and float32 arithmetic in the fit) leave the subspace off by
    # angles ~ sqrt(p) eps; the captured variance of a near-optimal subspace moves by
    # the square of that angle (it is stationary at the optimum), here with margin 10
    return (10 * np.sqrt(p) * float(np.finfo(np.float32).eps)) ** 2


@pytest.mark.parametrize("kind,n,p,k", [("power", N, P, K), ("exponential", N, P, K), ("flat", N, P, K),
                                        # wider k: fewer steps (adaptive_min_iter), still ahead
                                        ("power", 2000, 1400, 60),
                                        pytest.param("power", 3000, 2048, 100, marks=pytest.mark.slow),
                                        pytest.param("flat", 3000, 2048, 100, marks=pytest.mark.slow)])
def test_default_is_at_least_as_accurate_as_scikit_learn(rng, kind, n, p, k):
    x = _data(rng, kind, n, p)
    ours = PCA(k, random_state=0).fit(x)
    assert ours.plan_.range_method == "adaptive" and ours.error_estimate_ <= ADAPTIVE_TOL
    theirs = SKPCA(k, svd_solver="randomized", random_state=0).fit(x)
    mine, peer = _shortfall(x, ours.components_), _shortfall(x, theirs.components_)
    assert mine <= max(peer, _float32_floor(p)), (mine, peer)
    assert mine <= ADAPTIVE_TOL + _float32_floor(p)


@pytest.mark.parametrize("tol", [1e-2, 1e-3])
def test_requested_tolerance_is_reached_on_the_flat_spectrum(rng, tol):
    x = _data(rng, "flat")
    fit = PCA(K, tol=tol, random_state=0).fit(x)
    achieved = _shortfall(x, fit.components_)
    assert fit.error_estimate_ <= tol
    # the estimate is conservative: what was reached is within what was asked
    assert achieved <= tol + _float32_floor(), (achieved, fit.error_estimate_)
    assert fit.n_passes_ >= 2 * adaptive_min_iter(K, adaptive_width(K, N, P)) + 3 and fit.n_passes_ % 2 == 1


def test_tighter_tolerance_costs_passes_and_buys_accuracy(rng):
    x = _data(rng, "flat")
    loose = PCA(K, tol=3e-2, random_state=0).fit(x)
    tight = PCA(K, tol=1e-3, random_state=0).fit(x)
    assert tight.n_passes_ > loose.n_passes_
    assert _shortfall(x, tight.components_) < _shortfall(x, loose.components_)


def test_other_methods_report_passes_and_no_estimate(rng):
    x = _data(rng, "power")
    krylov = PCA(K, method="krylov", random_state=0).fit(x)
    # 5 applications of X^T X, then one pass for the last block's Rayleigh quotient
    # and one for the SVD inside the Ritz subspace
    assert krylov.error_estimate_ is None and krylov.n_passes_ == 2 * 5 + 2
    stream = PCA(K, solver="streaming", random_state=0).fit(x)
    assert stream.plan_.range_method == "krylov" and stream.n_passes_ == 5 + 1
    with pytest.raises(ValueError, match="in memory only"):
        PCA(K, solver="streaming", method="adaptive").fit(x)


# ------------------------------------------- accuracy-controlled block Krylov


@pytest.mark.parametrize("kind,n,p,k", [("power", N, P, K), ("exponential", N, P, K), ("flat", N, P, K),
                                        ("power", 2000, 1400, 60),
                                        pytest.param("flat", 3000, 2048, 100, marks=pytest.mark.slow)])
def test_adaptive_krylov_is_at_least_as_accurate_as_scikit_learn_for_fewer_columns(rng, kind, n, p, k):
    x = _data(rng, kind, n, p)
    ours = PCA(k, method="adaptive_krylov", random_state=0).fit(x)
    assert ours.plan_.range_method == "adaptive_krylov" and ours.error_estimate_ <= ADAPTIVE_TOL
    theirs = SKPCA(k, svd_solver="randomized", random_state=0).fit(x)
    mine, peer = _shortfall(x, ours.components_), _shortfall(x, theirs.components_)
    assert mine <= max(peer, _float32_floor(p)), (mine, peer)
    assert mine <= ADAPTIVE_TOL + _float32_floor(p)
    # the work: every pass b columns wide but the last (k wide); the peer's 16 passes of
    # k + 10 columns (7 power iterations)
    b = krylov_adaptive_block(k, n, p)
    assert b * (ours.n_passes_ - 1) + k < 16 * (k + 10)


def test_adaptive_krylov_passes_depth_and_factors(rng):
    x = _data(rng, "power", 900, 700)
    k = 20
    res = randomized_svd(x, k, key=jax.random.key(1), method="adaptive_krylov", center=True,
                         compute_u=True)
    depth = int(res.n_iter)
    assert KRYLOV_MIN_DEPTH <= depth <= KRYLOV_MAX_DEPTH
    assert int(res.n_passes) == 2 * (depth + 1) + 1
    xc = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    exact = np.linalg.svd(xc, compute_uv=False)[:k]
    u, s, vt = (np.asarray(a, np.float64) for a in (res.u, res.s, res.vt))
    eps = float(np.finfo(np.float32).eps)
    # orthonormal factors, and X_c v_i = s_i u_i (the SVD inside the Ritz subspace)
    assert np.abs(u.T @ u - np.eye(k)).max() < 100 * eps
    assert np.abs(vt @ vt.T - np.eye(k)).max() < 100 * eps
    assert np.abs(xc @ vt.T - u * s).max() < 1e3 * eps * s[0]
    # Ritz values lie below the singular values (interlacing) and, on a power-law
    # spectrum at this depth, within the captured-variance shortfall of them
    assert np.all(s <= exact * (1 + 1e2 * eps))
    assert 1 - np.sum(s ** 2) / np.sum(exact ** 2) <= float(res.error) + _float32_floor(700)


def test_adaptive_krylov_tighter_tolerance_goes_deeper_and_buys_accuracy(rng):
    x = _data(rng, "flat")
    loose = PCA(K, method="adaptive_krylov", tol=4e-2, random_state=0).fit(x)
    tight = PCA(K, method="adaptive_krylov", tol=1e-2, random_state=0).fit(x)
    assert tight.n_passes_ > loose.n_passes_
    assert _shortfall(x, tight.components_) < _shortfall(x, loose.components_)


def test_adaptive_krylov_refuses_components_its_blocks_cannot_hold():
    assert krylov_adaptive_block(100, 10000, 16384) == 55
    assert krylov_adaptive_block(100, 10000, 60) == 30        # at most half of min(n, p)
    assert krylov_adaptive_max_depth(100, 55, 10000, 16384) == KRYLOV_MAX_DEPTH
    assert krylov_adaptive_max_depth(100, 55, 10000, 16384, max_iter=3) == 3
    with pytest.raises(ValueError, match="cannot hold"):
        krylov_adaptive_max_depth(100, 55, 10000, 16384, max_iter=1)


@pytest.mark.parametrize("kind", ["power", "flat"])
def test_adaptive_krylov_bf16_basis_keeps_the_accuracy_and_a_float32_finish(rng, kind):
    # the basis from bfloat16 products, the last pass (the SVD inside the Ritz subspace)
    # from the float32 data: the factors are exact for the subspace found
    x = _data(rng, kind)
    res = randomized_svd(x, K, key=jax.random.key(0), method="adaptive_krylov", center=True,
                         compute_u=True, precision="bf16")
    xc = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    u, s, vt = (np.asarray(a, np.float64) for a in (res.u, res.s, res.vt))
    eps = float(np.finfo(np.float32).eps)
    assert np.abs(xc @ vt.T - u * s).max() < 1e3 * eps * s[0]
    assert np.abs(vt @ vt.T - np.eye(K)).max() < 100 * eps
    # bfloat16 rounding (2^-8) perturbs the subspace only at second order in the
    # captured variance: as accurate as scikit-learn's float32 randomized PCA
    theirs = SKPCA(K, svd_solver="randomized", random_state=0).fit(x)
    mine, peer = _shortfall(x, vt), _shortfall(x, theirs.components_)
    assert mine <= max(peer, _float32_floor(P)), (mine, peer)
    assert mine <= ADAPTIVE_TOL + _float32_floor(P)
