"""FastICA(n_restarts=R): the best of R batched starts, and the per-component stability
index (jaxfactor.metrics.stability) against a brute-force reference of its definition and the
sampling theory of planted sources (Laplace sources score high, a Gaussian subspace low)."""
import itertools
import textwrap

import numpy as np
import pytest

from jaxfactor import FastICA
from jaxfactor.metrics.stability import bootstrap_rows, stability_index
from tests import tolerances as T
from tests.helpers import FOUR_DEVICES, ROOT, run_json_script
from tests.test_ica import error_variance

N_LAPLACE, N_GAUSS = 8, 4
K = N_LAPLACE + N_GAUSS
N = 20000
R = 8
TOL = 1e-5
LAMBDA_MIN = 0.01     # Picard-O's floor of the Hessian approximation


def laplace_and_gauss(rng, n=N, p=20):
    """``N_LAPLACE`` standardised Laplace sources and ``N_GAUSS`` Gaussian ones (a
    Gaussian subspace ICA cannot resolve), mixed into ``p`` features, plus a mean and a
    little noise. Returns ``(X float32 (n, p), sources (n, K))``."""
    s = np.column_stack([rng.laplace(size=(n, N_LAPLACE)), rng.standard_normal((n, N_GAUSS))])
    s = (s - s.mean(0)) / s.std(0)
    x = s @ rng.standard_normal((p, K)).T + 2.0 + 0.01 * rng.standard_normal((n, p))
    return x.astype(np.float32), s


def reference_index(w_ref, w_runs):
    """The index of :mod:`jaxfactor.metrics.stability` by brute force (float64): matching by
    every permutation, similarities pair by pair."""
    k = w_ref.shape[0]
    members = [w_ref]
    for w in w_runs:
        best = max(itertools.permutations(range(k)),
                   key=lambda perm: sum(abs(w_ref[i] @ w[perm[i]]) for i in range(k)))
        members.append(w[list(best)])
    pairs = [(a, b) for a in range(len(members)) for b in range(len(members)) if a != b]
    sim = lambda i, j: np.mean([abs(members[a][i] @ members[b][j]) for a, b in pairs])  # noqa: E731
    intra = np.array([sim(i, i) for i in range(k)])
    extra = np.array([max(sim(i, j) for j in range(k) if j != i) for i in range(k)])
    return np.clip(intra - extra, 0, 1)


def random_orthogonal(rng, k):
    q, r = np.linalg.qr(rng.standard_normal((k, k)))
    return q * np.sign(np.diag(r))


def test_stability_index_matches_its_definition(rng):
    k = 5
    w_ref = random_orthogonal(rng, k)
    # runs near the reference (permuted, sign-flipped, turned a little) and one far from it
    runs = []
    for angle in (0.05, 0.2, 0.5):
        s = rng.standard_normal((k, k))
        turn = np.linalg.qr(np.eye(k) + angle * (s - s.T))[0]
        runs.append((rng.choice([-1, 1], k)[:, None] * (turn @ w_ref))[rng.permutation(k)])
    runs.append(random_orthogonal(rng, k))
    got = stability_index(w_ref, np.stack(runs))
    np.testing.assert_allclose(got.index, reference_index(w_ref, runs), atol=1e-12)
    assert np.all((got.index >= 0) & (got.index <= 1))
    # the matches pick, for each reference row, the run row it was moved to
    same = stability_index(w_ref, np.stack([w_ref[[2, 0, 1, 4, 3]]]))
    assert same.matches[0].tolist() == [1, 2, 0, 4, 3]
    np.testing.assert_allclose(same.index, 1.0, atol=1e-12)


def test_bootstrap_rows_keep_padding_in_place(rng):
    import jax

    rows = np.asarray(bootstrap_rows(jax.random.key(int(rng.integers(1 << 30))), 12, 9, 3))
    assert rows.shape == (3, 12)
    assert np.all((rows[:, :9] >= 0) & (rows[:, :9] < 9))
    assert np.all(rows[:, 9:] == np.arange(9, 12))


def source_bounds(s, n, r):
    """Lower bound on the index of each Laplace source's cluster (float64 theory).

    Run ``r``'s unmixing is ``exp(B_r) W_0`` in the whitened space, ``B_r`` skew with
    entries of variance ``V_ij / n`` (a bootstrap fit deviates from the full-data fit as
    the fit from the truth: Efron), ``B_0 = 0`` for the reference; ``V`` the asymptotic
    variances of the estimator (:func:`tests.test_ica.error_variance`, parallel:
    Picard-O solves the same estimating equation ``skew(E[g(y) y^T]) = 0``).

    * ``1 - intra_i``: ``1 - |<u_r, u_s>| ~ |b_r - b_s|^2 / 2``, a chi-square of
      ``k - 1`` terms of mean ``S_i / n`` (``S_i = sum_j V_ij``) for two bootstraps;
      mean plus ``LAMBDA`` standard deviations.
    * ``extra_i``: ``|<u_i^r, u_j^s>| ~ |B_r,ij - B_s,ij|``; its mean over the pairs has
      expectation ``sqrt(2/pi) sqrt(2 V_ij / n)`` and is ``2 / sqrt(r + 1)``-Lipschitz in
      the ``r`` independent ``B_r,ij / sqrt(V_ij / n)`` (Gaussian concentration).
    """
    v = error_variance(s)[:N_LAPLACE]
    v = np.maximum(v, error_variance(s).T[:N_LAPLACE])           # either side of the pair
    k = s.shape[1]
    one_minus_intra = (1 + T.LAMBDA * np.sqrt(2 / (k - 1))) * v.sum(axis=1) / n
    sd = np.sqrt(v.max(axis=1) / n)
    extra = sd * (2 / np.sqrt(np.pi) + T.LAMBDA * 2 / np.sqrt(r + 1))
    return 1 - one_minus_intra - extra


def test_laplace_sources_stable_gaussian_subspace_not(rng):
    x, s = laplace_and_gauss(rng)
    model = FastICA(K, algorithm="picard", n_restarts=R, tol=TOL, max_iter=500,
                    random_state=int(rng.integers(1 << 30))).fit(x)
    assert model.stability_.shape == (K,) and model.stability_.dtype == np.float64
    assert np.all((model.stability_ >= 0) & (model.stability_ <= 1))
    corr = np.abs(np.corrcoef(model.transform(x).T, s.T)[:K, K:])
    laplace = corr[:, :N_LAPLACE].max(axis=1) > 0.9
    # each source found once; the other components lie in the Gaussian subspace
    assert sorted(corr[laplace, :N_LAPLACE].argmax(axis=1).tolist()) == list(range(N_LAPLACE))
    gauss_share = np.sum(corr[~laplace, N_LAPLACE:] ** 2, axis=1)
    assert np.all(gauss_share > 0.95), gauss_share
    bound = source_bounds(s, N, R)
    found = corr[laplace, :N_LAPLACE].argmax(axis=1)
    assert np.all(model.stability_[laplace] >= bound[found]), (model.stability_, bound)
    # the Gaussian directions score below every source by more than the sampling noise
    # of a correlation (standard deviation 1 / sqrt(n))
    margin = T.LAMBDA / np.sqrt(N)
    assert model.stability_[~laplace].max() < model.stability_[laplace].min() - margin, \
        model.stability_


def objective64(model, x):
    """float64 ``E[sum_i log cosh(y_i)]`` of the model's unit-variance sources (the
    whitened-data objective of its unmixing)."""
    y = np.asarray(model.transform(x), np.float64)
    return float(np.mean(np.sum(np.abs(y) + np.log1p(np.exp(-2 * np.abs(y))) - np.log(2), 1)))


def test_best_of_restarts_and_determinism(rng):
    n = 4000
    x, _ = laplace_and_gauss(rng, n=n)
    seed = int(rng.integers(1 << 30))
    kw = dict(algorithm="picard", tol=TOL, max_iter=500, random_state=seed)
    model = FastICA(K, n_restarts=4, **kw).fit(x)
    single = FastICA(K, **kw).fit(x)          # the restarts' first start
    # float32 rounding of an n K-term mean of G, and the objective gap between two points
    # whose gradient entries are below tol near one optimum: sum over pairs of 2 tol^2 / h
    slack = T.gamma(n * K) * model.objective_ + K * (K - 1) * TOL**2 / LAMBDA_MIN
    assert model.restart_objectives_.shape == (4,)
    assert model.objective_ <= model.restart_objectives_.min() + slack
    assert model.objective_ <= single.objective_ + slack
    assert abs(objective64(model, x) - model.objective_) <= slack + T.gamma(n * K)
    again = FastICA(K, n_restarts=4, **kw).fit(x)
    np.testing.assert_array_equal(again.components_, model.components_)
    np.testing.assert_array_equal(again.stability_, model.stability_)
    np.testing.assert_array_equal(again.restart_objectives_, model.restart_objectives_)
    assert not hasattr(single, "stability_")


def test_fixed_point_restarts(rng):
    """The fixed point's runs batch the same way; their best objective is kept."""
    x, _ = laplace_and_gauss(rng, n=2000)
    model = FastICA(K, algorithm="deflation", n_restarts=3, max_iter=100,
                    random_state=int(rng.integers(1 << 30))).fit(x)
    assert model.objective_ == model.restart_objectives_.min()
    assert model.stability_.shape == (K,)
    assert model.algorithm_ == "deflation"


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "3"])
def test_bad_n_restarts(rng, bad):
    x, _ = laplace_and_gauss(rng, n=200)
    with pytest.raises(ValueError, match="n_restarts"):
        FastICA(K, n_restarts=bad).fit(x)


RESTARTS_SHARDED = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {root!r})
    from jaxfactor import FastICA
    from jaxfactor.sharding import row_mesh
    from tests.test_ica_stability import laplace_and_gauss

    assert len(jax.devices()) == 4, jax.devices()
    x, _ = laplace_and_gauss(np.random.default_rng({seed}), n={n})     # not a multiple of 4
    fits = [FastICA({k}, algorithm="picard", n_restarts={r}, tol={tol}, max_iter=500,
                    random_state=0, mesh=m).fit(x) for m in (None, row_mesh())]
    print(json.dumps({{"objective": [m.objective_ for m in fits],
                       "stability": [m.stability_.tolist() for m in fits],
                       "components": [m.components_.tolist() for m in fits]}}))
""")


@pytest.mark.slow
def test_row_sharded_restarts(rng):
    """Over a 4-device row mesh (padded rows) the restarts reach the single device's
    objective, and the bootstrap (other draws: the padded length differs) scores the
    Laplace sources above the bound and the Gaussian subspace below them."""
    n, seed = 20001, int(rng.integers(1 << 30))
    out = run_json_script(RESTARTS_SHARDED.format(root=ROOT, seed=seed, n=n, k=K, r=R, tol=TOL),
                          **FOUR_DEVICES)
    x, s = laplace_and_gauss(np.random.default_rng(seed), n=n)
    single, sharded = out["objective"]
    assert abs(sharded - single) <= 2 * T.gamma(n * K) * single + K * (K - 1) * TOL**2 / LAMBDA_MIN
    bound = source_bounds(s, n, R)
    for comps, stab in zip(out["components"], out["stability"]):
        comps, stab = np.asarray(comps), np.asarray(stab)
        y = (x - x.mean(0)) @ comps.T
        corr = np.abs(np.corrcoef(y.T, s.T)[:K, K:])
        laplace = corr[:, :N_LAPLACE].max(axis=1) > 0.9
        assert laplace.sum() == N_LAPLACE
        assert np.all(stab[laplace] >= bound[corr[laplace, :N_LAPLACE].argmax(axis=1)])
        assert stab[~laplace].max() < stab[laplace].min() - T.LAMBDA / np.sqrt(n)
