"""Least-squares lifting of component scores to latent directions.

Most tests share one problem shape (k = 4 scores, d = 6 latents, blocks of 250
rows) so that the jitted accumulator compiles once for the file.
"""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfactor.lifting import lift, lift_accumulator, lift_directions
from jaxfactor.pca import PCA
from jaxfactor.sources import CallableSource


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


def test_matches_numpy_lstsq_float64_blockwise(rng):
    n, d, k = 1500, 6, 4
    L = rng.standard_normal((n, d)).astype(np.float32) * 2 + 1
    C = (L @ rng.standard_normal((d, k)) + 0.5 * rng.standard_normal((n, k)) + 4).astype(np.float32)
    res = lift_directions(L, C, block_rows=250)
    B, latent_r2, r2_total, r2, std = _reference(L, C)
    np.testing.assert_allclose(res.directions, B, rtol=1e-4, atol=1e-4 * np.abs(B).max())
    np.testing.assert_allclose(res.norms, np.linalg.norm(B, axis=1), rtol=1e-4)
    np.testing.assert_allclose(res.score_std, std, rtol=1e-5)
    np.testing.assert_allclose(res.latent_r2, latent_r2, atol=1e-4)
    np.testing.assert_allclose(res.r2_total, r2_total, atol=1e-4)
    np.testing.assert_allclose(res.r2, r2, atol=1e-4)
    np.testing.assert_allclose(res.latent_mean, L.mean(0), rtol=1e-5, atol=1e-5)
    assert int(res.n_samples) == n
    Lc = L - L.mean(0)
    np.testing.assert_allclose(res.variance_share,
                               np.linalg.norm(B, axis=1) ** 2 / (Lc.var(0, ddof=1).sum()), rtol=1e-3)


def test_ridge_matches_closed_form(rng):
    L = rng.standard_normal((500, 6)).astype(np.float32)
    C = (L @ rng.standard_normal((6, 4)) + rng.standard_normal((500, 4))).astype(np.float32)
    res = lift_directions(L, C, ridge=0.7, block_rows=250)
    B = _reference(L, C, ridge=0.7)[0]
    np.testing.assert_allclose(res.directions, B, rtol=1e-4, atol=1e-5)
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
    np.testing.assert_allclose(merged.directions, whole.directions, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(merged.directions, _reference(L, C)[0], rtol=1e-3, atol=1e-5)


def test_rank_deficient_scores_give_minimum_norm_solution(rng):
    L = rng.standard_normal((500, 6)).astype(np.float32)
    c = L @ rng.standard_normal((6, 3))
    C = np.c_[c, c[:, :1] * 2.0].astype(np.float32)  # fourth score duplicates the first
    res = lift_directions(L, C, block_rows=250)
    B = _reference(L, C)[0]  # lstsq: minimum norm
    np.testing.assert_allclose(res.directions, B, atol=2e-3)
    assert np.all(np.isfinite(np.asarray(res.directions)))


def test_recovers_planted_linear_map_through_pca(rng):
    """features = latents @ M + noise: PCA finds the d-dim signal, the lift maps
    each component back to the latent move that produces it, R^2 ~ 1."""
    n, d, p = 1500, 6, 40
    L = rng.standard_normal((n, d)).astype(np.float32)
    M = rng.standard_normal((d, p)).astype(np.float32)
    X = (L @ M + 0.01 * rng.standard_normal((n, p)) + 3).astype(np.float32)
    pca = PCA(d, solver="full").fit(X)
    res = lift_directions(L, pca.transform(X), block_rows=250)
    assert float(res.r2_total) > 0.999
    assert np.all(np.asarray(res.r2) > 0.999) and np.all(np.asarray(res.latent_r2) > 0.999)
    np.testing.assert_allclose(np.asarray(res.variance_share).sum(), float(res.r2_total), rtol=1e-3)
    # moving z by direction i moves the features by one std along component i
    step = np.asarray(res.directions)[0]
    moved = (L[:5] + step) @ M - L[:5] @ M
    np.testing.assert_allclose(moved, np.broadcast_to(res.score_std[0] * pca.components_[0], (5, p)),
                               rtol=1e-2, atol=1e-2 * np.abs(moved).max())
    # fewer components than latent dims: each direction still fully reachable,
    # but the fit explains only part of the latent variance
    part = lift_directions(L, PCA(4, solver="full").fit(X).transform(X), block_rows=250)
    assert np.all(np.asarray(part.r2) > 0.999) and float(part.r2_total) < 0.8


def test_lift_streams_rows_and_latents_from_a_source(rng):
    n, d, p = 500, 6, 12
    L = rng.standard_normal((n, d)).astype(np.float32)
    X = (np.tanh(L @ rng.standard_normal((d, p))) + 0.05 * rng.standard_normal((n, p))).astype(np.float32)
    source = CallableSource(lambda a, b: X[a:b], n, p)
    source.latents = lambda a, b: {"z": L[a:b], "w": 2 * L[a:b]}
    pca = PCA(4, solver="full").fit(X)
    got = lift(source, pca, block_rows=250)
    ref = lift_directions(L * 2, pca.transform(X), block_rows=250)  # default space: 'w'
    np.testing.assert_allclose(got.directions, np.asarray(ref.directions), rtol=1e-4, atol=1e-5)
    assert isinstance(got.directions, np.ndarray)
    z = lift(source, pca, space="z", block_rows=250)
    np.testing.assert_allclose(z.directions * 2, got.directions, rtol=1e-4, atol=1e-5)
    callable_scores = lift(source, lambda rows: pca.transform(rows), space="z", block_rows=250)
    np.testing.assert_allclose(callable_scores.directions, z.directions, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="not 'v'"):
        lift(source, pca, space="v")
    with pytest.raises(TypeError, match="latents"):
        lift(CallableSource(lambda a, b: X[a:b], n, p), pca)
    with pytest.raises(ValueError, match="rows"):
        lift_directions(L[:10], X[:11])
