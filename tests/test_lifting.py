"""Least-squares lifting of component scores to latent directions.

Most tests share one problem shape (k = 4 scores, d = 6 latents, blocks of 250
rows) so that the jitted accumulator compiles once for the file.
"""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfactor.lifting import lift, lift_accumulator, lift_directions
from jaxfactor import PCA
from jaxfactor.sources import CallableSource

from .tolerances import (assert_within, blocked_gram_error, blocked_moments_error, covariance_error,
                         gamma, svd_error, unit_roundoff)


def _reference(latents, scores, ridge=0.0):
    """float64: regress centred latents on unit-variance scores (numpy lstsq / ridge)."""
    L = np.asarray(latents, np.float64)
    C = np.asarray(scores, np.float64)
    S = (C - C.mean(0)) / C.std(0, ddof=1)
    Lc = L - L.mean(0)
    n = L.shape[0]
    if ridge == 0:
        B = np.linalg.lstsq(np.c_[np.ones(n), S], L, rcond=None)[0][1:]
    else:
        B = np.linalg.solve(S.T @ S / (n - 1) + ridge * np.eye(S.shape[1]), S.T @ Lc / (n - 1))
    resid = Lc - S @ B
    latent_r2 = 1 - (resid**2).sum(0) / (Lc**2).sum(0)
    r2_total = 1 - (resid**2).sum() / (Lc**2).sum()
    # reverse regression: each score on the latents
    coef = np.linalg.lstsq(np.c_[np.ones(n), L], S, rcond=None)[0]
    score_resid = S - np.c_[np.ones(n), L] @ coef
    r2 = 1 - (score_resid**2).sum(0) / (S**2).sum(0)
    return B, latent_r2, r2_total, r2, C.std(0, ddof=1)


def lift_bounds(latents, scores, *, block_rows, ridge=0.0, score_error=None, dtype=np.float32):
    """First-order float32 rounding bounds on every output of ``lift_directions``
    (float64 reference quantities of the test's own data).

    Cross products: :func:`~tests.tolerances.blocked_gram_error` of the columns
    ``w = [C, L]`` (blocks centred on their own means, merged by Chan's rule).
    ``score_error``: a per-column bound on ``||dC_i||`` when the scores
    themselves are rounded differently (a relative perturbation of column i).

    Solve: ``B = Gs^+ Rs`` with ``Gs`` the score correlations and ``Rs`` the
    score-latent covariances of unit-variance scores; the normal-equations
    perturbation bound ``||dB|| <= ||Gs^+|| (||dRs|| + ||dGs|| ||B||)`` (Gs's
    smallest kept eigenvalue; the eigendecomposition adds its backward error
    ``svd_error(Gs)``; with ``ridge``, ``Gs + ridge I``). The residual sums of
    squares are stationary in ``B`` (``ridge = 0``), so their first-order error
    comes from the cross products only. The latent mean: blocked means.
    """
    L = np.asarray(latents, np.float64)
    C = np.asarray(scores, np.float64)
    n, d = L.shape
    k = C.shape[1]
    u = unit_roundoff(dtype)
    W = np.c_[C, L]
    a = np.linalg.norm(W - W.mean(0), axis=0)
    D = blocked_gram_error(W, block_rows, dtype)
    if score_error is not None:
        r = np.r_[np.asarray(score_error, np.float64), np.zeros(d)]
        D += np.outer(r, a) + np.outer(a, r)
    N = D / np.outer(a, a)                       # relative error of each cross product
    cov = np.cov(W, rowvar=False)
    sig = np.sqrt(np.diag(cov)[:k])
    Gs = cov[:k, :k] / np.outer(sig, sig)
    Rs = cov[:k, k:] / sig[:, None]
    Sll = cov[k:, k:]
    rel_std = np.diag(N)[:k] / 2 + 2 * u          # sqrt and division
    dGs = (np.linalg.norm(N[:k, :k] + np.abs(Gs) * (rel_std[:, None] + rel_std[None, :]))
           + svd_error(Gs, dtype))
    dRs = np.linalg.norm(D[:k, k:] / (a[:k, None] * np.sqrt(n - 1)) + np.abs(Rs) * rel_std[:, None])
    dSll = np.linalg.norm(D[k:, k:]) / (n - 1) + svd_error(Sll, dtype)
    A = Gs + ridge * np.eye(k)
    w = np.linalg.eigvalsh(A)
    lam = w[w > k * np.finfo(dtype).eps * w.max()].min()
    B = np.linalg.pinv(A, rcond=k * np.finfo(dtype).eps) @ Rs
    dB = (dRs + dGs * np.linalg.norm(B, 2)) / lam
    # residual variance of latent j: Sll_jj - 2 Rs_j.B_j + B_j^T Gs B_j, and its evaluation
    bj = np.linalg.norm(B, axis=0)
    dvar = np.diag(D)[k:] / (n - 1)
    dsse = (dvar + 2 * dRs * bj + dGs * bj**2
            + gamma(k + 2, dtype) * (np.diag(Sll) + 2 * np.sum(np.abs(Rs * B), 0)
                                     + np.sum(np.abs(B) * (np.abs(Gs) @ np.abs(B)), 0)))
    # reverse regression r2_i = Rs_i^T Sll^-1 Rs_i
    c = np.linalg.solve(Sll, Rs.T)                # (d, k)
    cn = np.linalg.norm(c, axis=0)
    r2 = np.sum(Rs.T * c, 0)
    norms = np.linalg.norm(B, axis=1)
    total = np.trace(Sll)
    return {
        "directions": dB,
        "score_std": rel_std,
        "latent_r2": (dsse + dvar) / np.diag(Sll),
        "r2_total": (dsse.sum() + dvar.sum()) / total,
        "r2": 2 * cn * dRs + cn**2 * dSll + gamma(d, dtype) * r2,
        "latent_mean": blocked_moments_error(L, block_rows, dtype)[0],
        "variance_share": ((2 * norms * dB + dB**2) / total + norms**2 * dvar.sum() / total**2
                           + 4 * u * norms**2 / total),
    }


def test_matches_numpy_lstsq_float64_blockwise(rng):
    n, d, k = 1500, 6, 4
    L = rng.standard_normal((n, d)).astype(np.float32) * 2 + 1
    C = (L @ rng.standard_normal((d, k)) + 0.5 * rng.standard_normal((n, k)) + 4).astype(np.float32)
    res = lift_directions(L, C, block_rows=250)
    B, latent_r2, r2_total, r2, std = _reference(L, C)
    tol = lift_bounds(L, C, block_rows=250)
    assert_within(res.directions, B, tol["directions"])
    assert_within(res.norms, np.linalg.norm(B, axis=1), tol["directions"])
    assert_within(res.score_std / std, 1, tol["score_std"])
    assert_within(res.latent_r2, latent_r2, tol["latent_r2"])
    assert_within(res.r2_total, r2_total, tol["r2_total"])
    assert_within(res.r2, r2, tol["r2"])
    assert_within(res.latent_mean, L.astype(np.float64).mean(0), tol["latent_mean"])
    assert int(res.n_samples) == n
    Lc = L.astype(np.float64) - L.mean(0)
    assert_within(res.variance_share, np.linalg.norm(B, axis=1) ** 2 / (Lc.var(0, ddof=1).sum()),
                  tol["variance_share"])


def test_ridge_matches_closed_form(rng):
    L = rng.standard_normal((500, 6)).astype(np.float32)
    C = (L @ rng.standard_normal((6, 4)) + rng.standard_normal((500, 4))).astype(np.float32)
    res = lift_directions(L, C, ridge=0.7, block_rows=250)
    B = _reference(L, C, ridge=0.7)[0]
    assert_within(res.directions, B, lift_bounds(L, C, block_rows=250, ridge=0.7)["directions"])
    assert np.all(np.asarray(res.norms) < np.linalg.norm(_reference(L, C)[0], axis=1))
    with pytest.raises(ValueError, match="ridge"):
        lift_accumulator(3, 4, ridge=-1)


def test_merge_of_shards_equals_one_pass(rng):
    L = rng.standard_normal((500, 6)).astype(np.float32) + 10  # large mean: Chan's merge matters
    C = rng.standard_normal((500, 4)).astype(np.float32) * 3 - 7
    acc = lift_accumulator(4, 6)
    a = acc.update(acc.init(), (jnp.asarray(C[:250]), jnp.asarray(L[:250])))
    b = acc.update(acc.init(), (jnp.asarray(C[250:]), jnp.asarray(L[250:])))
    merged = acc.finalize(acc.merge(a, b))
    whole = lift_directions(L, C, block_rows=250)
    tol = lift_bounds(L, C, block_rows=250)["directions"]
    # two float32 runs of the same sums merged in another order: each within tol
    assert_within(merged.directions, whole.directions, 2 * tol)
    assert_within(merged.directions, _reference(L, C)[0], tol)


def test_rank_deficient_scores_give_minimum_norm_solution(rng):
    L = rng.standard_normal((500, 6)).astype(np.float32)
    c = L @ rng.standard_normal((6, 3))
    C = np.c_[c, c[:, :1] * 2.0].astype(np.float32)  # fourth score duplicates the first
    res = lift_directions(L, C, block_rows=250)
    B = _reference(L, C)[0]  # lstsq: minimum norm
    # doubling is exact in float32, so the duplicate survives rounding exactly and
    # the bound is the rank-3 problem's (Gs's smallest non-zero eigenvalue)
    assert_within(res.directions, B, lift_bounds(L, C, block_rows=250)["directions"])
    assert np.all(np.isfinite(np.asarray(res.directions)))


def test_recovers_planted_linear_map_through_pca(rng):
    """features = latents @ M + noise: PCA finds the d-dim signal, the lift maps
    each component back to the latent move that produces it, R^2 ~ 1."""
    n, d, p, noise = 1500, 6, 40, 0.01
    L = rng.standard_normal((n, d)).astype(np.float32)
    M = rng.standard_normal((d, p)).astype(np.float32)
    X = (L @ M + noise * rng.standard_normal((n, p)) + 3).astype(np.float32)
    ev = np.linalg.eigvalsh(np.cov(X.astype(np.float64), rowvar=False))[::-1]
    pca = PCA(d, solver="full").fit(X)
    C = pca.transform(X)
    res = lift_directions(L, C, block_rows=250)
    tol = lift_bounds(L, C, block_rows=250)
    # Each score is a latent combination plus noise of variance noise^2 along its
    # component, so 1 - R^2 ~ noise^2 / ev_i <= noise^2 / ev_{d-1} (the latents'
    # 1 - R^2 too: errors in variables of the same size); 2 x for sampling error
    # (variances of n = 1500 rows are within a few sqrt(2/n) ~ 4 % of the population's).
    planted = 2 * noise**2 / ev[d - 1]
    assert 1 - float(res.r2_total) < planted + tol["r2_total"]
    assert np.all(1 - np.asarray(res.r2) < planted + tol["r2"])
    assert np.all(1 - np.asarray(res.latent_r2) < planted + tol["latent_r2"])
    # shares sum to r2_total when the scores are uncorrelated: here up to the
    # float32 PCA scores' correlations, |tr(B^T (Gs - I) B)| / tr cov(L)
    S = np.corrcoef(np.asarray(C, np.float64), rowvar=False)
    B = _reference(L, C)[0]
    Sll = np.trace(np.cov(L.astype(np.float64), rowvar=False))
    uncorrelated = np.linalg.norm(S - np.eye(d), 2) * np.sum(B**2) / Sll
    assert_within(np.asarray(res.variance_share).sum(), float(res.r2_total),
                  uncorrelated + tol["variance_share"].sum() + tol["r2_total"])
    # moving z by direction i moves the features by one std along component i:
    # moved - std_0 v_0 = -cov(X - L M, X) v_0 / std_0 (exact when the scores are
    # uncorrelated), whose noise part is ~ noise sqrt(p / n) (p independent
    # coordinates, each noise / sqrt(n) after the division; 4 more standard deviations
    # of the norm) + noise^2 / std_0; float32: the direction's error dB ||M||, the
    # score std's and the component's (residual of an eigenvector of cov + E,
    # ||E|| <= covariance_error(X) + svd_error(cov)), and the scores' correlations
    step = np.asarray(res.directions, np.float64)[0]
    L64, M64 = L.astype(np.float64), M.astype(np.float64)
    moved = (L64[:5] + step) @ M64 - L64[:5] @ M64
    std0 = float(res.score_std[0])
    cov = np.cov(X.astype(np.float64), rowvar=False)
    planted = noise * (np.sqrt(p) + 4) / np.sqrt(n) + noise**2 / std0
    rounding = (tol["directions"] * np.linalg.norm(M64, 2) + tol["score_std"][0] * std0
                + (covariance_error(X) + svd_error(cov)) / std0
                + np.linalg.norm(S - np.eye(d), 2) * np.linalg.norm(B, 2) * np.linalg.norm(M64, 2))
    assert np.all(np.linalg.norm(moved - std0 * np.asarray(pca.components_[0], np.float64), axis=1)
                  < planted + rounding)
    # fewer components than latent dims: each direction still fully reachable,
    # but the fit explains only part of the latent variance: 4 of the d unit
    # variances of isotropic latents, up to the sample covariance's spread
    # (eigenvalues within 2 sqrt(d / n) + d / n of 1, Bai-Yin)
    C4 = PCA(4, solver="full").fit(X).transform(X)
    part = lift_directions(L, C4, block_rows=250)
    tol4 = lift_bounds(L, C4, block_rows=250)
    assert np.all(1 - np.asarray(part.r2) < 2 * noise**2 / ev[3] + tol4["r2"])
    assert float(part.r2_total) < 4 / d + 2 * np.sqrt(d / n) + d / n + tol4["r2_total"]


def test_lift_streams_rows_and_latents_from_a_source(rng):
    n, d, p = 500, 6, 12
    L = rng.standard_normal((n, d)).astype(np.float32)
    X = (np.tanh(L @ rng.standard_normal((d, p))) + 0.05 * rng.standard_normal((n, p))).astype(np.float32)
    source = CallableSource(lambda a, b: X[a:b], n, p)
    source.latents = lambda a, b: {"z": L[a:b], "w": 2 * L[a:b]}
    pca = PCA(4, solver="full").fit(X)
    got = lift(source, pca, block_rows=250)
    scores = pca.transform(X)
    ref = lift_directions(L * 2, scores, block_rows=250)  # default space: 'w'
    # the source's blocks and the whole array may be transformed with other
    # roundings: ||dC_i|| <= gamma(p + 1) || (|X| + |mean|) |v_i| || (mean folded in)
    V = np.abs(np.asarray(pca.components_, np.float64))
    score_error = gamma(p + 1) * np.linalg.norm((np.abs(X) + np.abs(pca.mean_)) @ V.T, axis=0)
    tol = lift_bounds(L * 2, scores, block_rows=250, score_error=score_error)["directions"]
    assert_within(got.directions, np.asarray(ref.directions), 2 * tol)
    assert isinstance(got.directions, np.ndarray)
    # latents 2 L: a power of two scales every cross product exactly, and the
    # directions are linear in them -- the same program, exactly twice the result
    z = lift(source, pca, space="z", block_rows=250)
    np.testing.assert_array_equal(z.directions * 2, got.directions)
    # a callable is used as the transform itself: the same program on the same rows
    callable_scores = lift(source, lambda rows: pca.transform(rows), space="z", block_rows=250)
    np.testing.assert_array_equal(callable_scores.directions, z.directions)
    with pytest.raises(ValueError, match="not 'v'"):
        lift(source, pca, space="v")
    with pytest.raises(TypeError, match="latents"):
        lift(CallableSource(lambda a, b: X[a:b], n, p), pca)
    with pytest.raises(ValueError, match="rows"):
        lift_directions(L[:10], X[:11])
