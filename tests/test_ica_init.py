"""The reseed start (jaxfactor.ica_init) and FastICA(init='reseed')."""
from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from jaxfactor import FastICA
from jaxfactor.ica import fastica
from jaxfactor.ica_init import gaussian_contrast_mean, reseed_init
from jaxfactor.metrics.amari import amari_distance
from tests import tolerances as T
from tests.test_ica import amari_bound, amari_lipschitz, error_variance


def _gauss_expectation(g):
    # the Gaussian weight is below 1e-300 beyond |u| = 38
    return integrate.quad(lambda u: g(u) * np.exp(-u * u / 2) / np.sqrt(2 * np.pi),
                          -38, 38, epsabs=1e-13, limit=200)[0]


def _log_cosh(u):
    return np.abs(u) + np.log1p(np.exp(-2 * np.abs(u))) - np.log(2)


@pytest.mark.parametrize("fun, alpha, g", [
    ("logcosh", 1.0, _log_cosh),
    ("logcosh", 1.7, lambda u: _log_cosh(1.7 * u) / 1.7),
    ("exp", 1.0, lambda u: 1 - np.exp(-u * u / 2)),
    ("cube", 1.0, lambda u: u ** 4 / 4),
])
def test_gaussian_contrast_mean_matches_quadrature(fun, alpha, g):
    """Gauss-Hermite in float32 against SciPy's adaptive quadrature in float64: the
    values of ``G`` carry float32 rounding (relative ``u``), summed over 80 nodes."""
    ref = _gauss_expectation(g)
    assert gaussian_contrast_mean(fun, alpha) == pytest.approx(ref, rel=T.gamma(80), abs=1e-12)


def _mixing(rng, k):
    """A ``(k, k)`` mixing with singular values in ``[0.5, 2]`` (a Gaussian one is
    ill-conditioned enough at ``k = 8`` to fall under the whitening's rank floor)."""
    q = np.linalg.qr(rng.standard_normal((k, k)))[0]
    return q * rng.uniform(0.5, 2, size=k) @ np.linalg.qr(rng.standard_normal((k, k)))[0]


def _white(rng, n, k, pad=0):
    """``(n + pad, k)`` whitened mixed Laplace sources: exactly white over the first
    ``n`` rows, zero rows after."""
    x = rng.laplace(scale=1 / np.sqrt(2), size=(n, k)) @ rng.standard_normal((k, k))
    x -= x.mean(axis=0)
    u = np.linalg.svd(x, full_matrices=False)[0]
    return np.concatenate([u * np.sqrt(n), np.zeros((pad, k))]).astype(np.float32)


def test_reseed_ignores_zero_padding_rows(rng):
    """Rows beyond ``n_valid`` are zero padding (a row-sharded array): the padded array
    gives the start and the fit the unpadded one gives. The sums differ by rounding only,
    but near-duplicate seeds may be picked in another order, so what is compared is the
    refined unmixing (the same fixed point, each reached to ``tol = 1e-4`` in
    ``1 - |cos|``: 10 ``tol`` apart at most) and its objective (the same sums)."""
    n, k, pad = 600, 6, 10
    white = _white(rng, n, k, pad=pad)
    plain = reseed_init(white[:n], lambda w: fastica(jnp.asarray(white[:n]), w_init=w))
    padded = reseed_init(white, lambda w: fastica(jnp.asarray(white), w_init=w, n_valid=n),
                         n_valid=n)
    assert np.allclose(padded.w_init @ padded.w_init.T, np.eye(k), atol=T.gamma(k))
    cos = np.abs(np.asarray(padded.result.w, np.float64) @ np.asarray(plain.result.w).T)
    assert np.all(1 - cos.max(axis=1) <= 10 * 1e-4)
    assert sorted(np.argmax(cos, axis=1)) == list(range(k))
    np.testing.assert_allclose(padded.objectives[-1], plain.objectives[-1], rtol=1e-3)


def test_reseed_reaches_the_planted_optimum_where_a_random_start_does_not(rng):
    """k^2 / n = 11 (n = 2000 rows, k = 150 Laplace sources): from a Gaussian start the
    fixed point ends in a spurious optimum; the reseed start reaches the fixed point the
    planted unmixing starts in (at n / k = 13 that is above the asymptotic Amari bound
    of Tichavsky et al., which assumes n >> k: it is the bar here)."""
    n, k = 2000, 150
    s = rng.laplace(scale=1 / np.sqrt(2), size=(n, k))
    a = _mixing(rng, k)
    x = (s @ a.T).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                    # no trapped-start warning
        model = FastICA(k, max_iter=1000, init="reseed",
                        random_state=int(rng.integers(1 << 30))).fit(x)
    assert model.plan_.init == "reseed" and model.converged_
    # the planted start: the whitened planted unmixing, made orthogonal
    u, _, vt = np.linalg.svd(np.linalg.inv(model.whitening_ @ a))
    planted = FastICA(k, max_iter=1000, w_init=u @ vt).fit(x)
    assert planted.plan_.init == "w_init" and planted.converged_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                   # the trapped-start warning
        random = FastICA(k, max_iter=1000, random_state=int(rng.integers(1 << 30))).fit(x)
    assert random.plan_.init == "random"
    best = amari_distance(planted.components_, a)
    assert amari_distance(random.components_, a) > 2 * best    # the hard case it is meant for
    # two fixed points of one basin, each met to tol (1 - |cos| per row, so an angle of
    # arccos(1 - tol)): the Amari distance moves by amari_lipschitz per radian
    slack = amari_lipschitz(k) * 2 * np.arccos(1 - model.tol)
    assert amari_distance(model.components_, a) <= best + slack
    assert model.objective_ <= planted.objective_ * (1 + 10 * model.tol)
    objectives = model.reseed_objectives_
    assert model.objective_ == pytest.approx(objectives.min(), rel=T.gamma(n))
    assert 1 <= len(objectives) <= 8


@pytest.mark.parametrize("algorithm", ["deflation", "picard"])
def test_reseed_with_the_other_solvers(rng, algorithm):
    """The start refined by deflation or Picard-O: independent sources are recovered."""
    n, k = 3000, 8
    s = rng.laplace(scale=1 / np.sqrt(2), size=(n, k))
    a = _mixing(rng, k)
    x = (s @ a.T).astype(np.float32)
    model = FastICA(k, algorithm=algorithm, init="reseed", max_iter=500,
                    random_state=0).fit(x)
    assert model.plan_ == model.plan_._replace(init="reseed", algorithm=algorithm)
    assert amari_distance(model.components_, a) <= amari_bound(error_variance(s, algorithm=(
        "deflation" if algorithm == "deflation" else "parallel")), n)


def test_reseed_refuses_a_start_of_its_own(rng):
    x = rng.laplace(size=(200, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="init='reseed'.*w_init"):
        FastICA(3, init="reseed", w_init=np.eye(3)).fit(x)
    with pytest.raises(ValueError, match="init='reseed'.*n_restarts"):
        FastICA(3, init="reseed", n_restarts=2).fit(x)
    with pytest.raises(ValueError, match="init"):
        FastICA(3, init="planted").fit(x)
