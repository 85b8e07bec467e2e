"""Picard-O (jaxfactor.picard) against python-picard, a float64 reference of its
criteria, and planted sources; the estimator's algorithm='picard' and its reports."""
import warnings

import numpy as np
import pytest

from jaxfactor import FastICA
from jaxfactor._policy import choose_ica_algorithm, random_start_is_trapped
from jaxfactor._validation import ConvergenceWarning
from jaxfactor.metrics.amari import amari_distance
from jaxfactor.picard import ica_criteria, picard_o
from jaxfactor.whitening import whiten
from tests import tolerances as T
from tests.test_ica import amari_bound, error_variance

N, K = 2000, 6
TOL = 1e-5


def super_gaussian(rng, n=N, k=K, p=20):
    """``k`` standardised super-Gaussian sources (Laplace and Student-t(6)
    alternating) mixed into ``p`` features, plus a mean and a little noise.
    Returns ``(X float32 (n, p), sources (n, k), mixing (p, k))``."""
    s = np.column_stack([rng.laplace(size=n) if i % 2 == 0 else rng.standard_t(6, size=n)
                         for i in range(k)])
    s = (s - s.mean(0)) / s.std(0)
    a = rng.standard_normal((p, k))
    x = s @ a.T + 2.0 * rng.standard_normal(p) + 0.01 * rng.standard_normal((n, p))
    return x.astype(np.float32), s, a


def whitened(rng, n=N, k=K):
    x, s, a = super_gaussian(rng, n, k)
    return np.asarray(whiten(x, k).white), s, a


def reference_terms(white, w):
    """float64 ``(objective, M = E[psi(y) y^T], kappa = E[psi'(y)])`` for logcosh."""
    y = np.asarray(white, np.float64) @ np.asarray(w, np.float64).T
    t = np.tanh(y)
    obj = np.mean(np.sum(np.abs(y) + np.log1p(np.exp(-2 * np.abs(y))) - np.log(2), axis=1))
    return obj, t.T @ y / y.shape[0], np.mean(1 - t * t, axis=0)


def curvature(white, w):
    """float64 Hessian approximation ``h_ij = kappa_i + kappa_j - c_i - c_j``
    (whitened, ``E[y^2] = 1``) off the diagonal: its smallest and largest value."""
    _, m, kappa = reference_terms(white, w)
    c = np.diag(m)
    h = kappa[:, None] + kappa[None, :] - c[:, None] - c[None, :]
    off = ~np.eye(len(c), dtype=bool)
    return float(h[off].min()), float(h[off].max())


def gradient_floor(n):
    """float32 error of a gradient entry ``E[tanh(y_i) y_j]`` (``|tanh y| |y| <= |y|``,
    ``E|y| <= 1``): the probabilistic bound of an n-term mean."""
    return T.gamma(n, np.float32)


def residual_angle(tol, n, h_min):
    """Largest rotation angle left between a point with gradient entries below
    ``tol`` (plus the float32 floor) and the optimum: the Newton step ``2 g / h``,
    twice for the error of the independence approximation ``h`` of the Hessian."""
    return 2 * 2 * (tol + gradient_floor(n)) / h_min


def polar(w):
    u, _, vt = np.linalg.svd(np.asarray(w, np.float64))
    return u @ vt


def test_same_optimum_as_python_picard(rng):
    picard = pytest.importorskip("picard")
    white, _, _ = whitened(rng)
    w0 = polar(rng.standard_normal((K, K)))
    ours = picard_o(white, w0.astype(np.float32), tol=TOL)
    _, w_ref, _ = picard.picard(white.T.astype(np.float64), ortho=True, extended=False,
                                whiten=False, w_init=w0, tol=1e-10, max_iter=1000)
    assert bool(ours.converged) and float(ours.grad_norm) < TOL
    h_min, h_max = curvature(white, w_ref)
    theta = residual_angle(TOL, N, h_min)
    # W_ours W_ref^T = I + Theta: the Amari distance is the mean |Theta_ij| (off-diagonal)
    assert amari_distance(np.asarray(ours.w), w_ref.T) <= theta
    # objective not worse than the float64 reference beyond the quadratic excess of theta
    obj_ours, obj_ref = reference_terms(white, ours.w)[0], reference_terms(white, w_ref)[0]
    assert obj_ours <= obj_ref + K * (K - 1) / 2 * h_max * theta**2
    # and a random orthogonal W is much worse: the test can fail
    assert reference_terms(white, w0)[0] > obj_ref + K * (K - 1) / 2 * h_max * theta**2


def test_criteria_match_a_float64_reference(rng):
    white, _, _ = whitened(rng)
    w = polar(rng.standard_normal((K, K)))
    crit = ica_criteria(white, w.astype(np.float32))
    obj, m, kappa = reference_terms(white, w)
    grad = 0.5 * (m - m.T)
    q = polar(m - np.diag(kappa))
    change = np.max(np.abs(np.abs(np.diag(q)) - 1))
    # objective: a sum of n k terms of at most |y|; gradient entries: n-term means
    assert abs(float(crit.objective) - obj) <= T.gamma(N * K) * K + T.eps() * abs(obj)
    g_err = gradient_floor(N) + T.eps()
    assert abs(float(crit.grad_norm) - np.max(np.abs(grad))) <= g_err
    # polar factor of M - diag(kappa): perturbation 2 ||E|| / sigma_min (Li 1995), E ~ g_err
    sigma_min = np.linalg.svd(m - np.diag(kappa), compute_uv=False)[-1]
    assert abs(float(crit.change) - change) <= 2 * K * g_err / sigma_min + 10 * T.eps()
    assert change > 1e-3            # a random W is far from a fixed point


def test_recovers_planted_sources_at_the_fixed_point_bound(rng):
    x, s, a = super_gaussian(rng)
    model = FastICA(K, algorithm="picard", tol=TOL, random_state=0).fit(x)
    assert model.converged_ and model.grad_norm_ < TOL and model.algorithm_ == "picard"
    assert model.plan_.algorithm == "picard"
    # the same estimating equations as symmetric FastICA: the same asymptotic variances
    assert amari_distance(model.components_, a) <= amari_bound(error_variance(s), N)
    # and it is the parallel fixed point's optimum, within both residual gradients
    fixed = FastICA(K, algorithm="parallel", tol=1e-6, max_iter=1000, random_state=0).fit(x)
    h_min, _ = curvature(np.asarray(whiten(x, K).white), polar(model._unmixing))
    theta = residual_angle(TOL + fixed.grad_norm_ + gradient_floor(N), N, h_min)
    assert amari_distance(model.components_, np.linalg.pinv(fixed.components_)) <= theta
    assert model.objective_ <= fixed.objective_ + T.gamma(N * K) * K


def test_line_search_fall_back_and_memory_flush(rng):
    # one trial per direction: the first L-BFGS steps overshoot, so the search falls
    # back to the preconditioned gradient; the descent still reaches the optimum
    white, _, _ = whitened(rng)
    w0 = rng.standard_normal((K, K)).astype(np.float32)
    full = picard_o(white, w0, tol=TOL)
    short = picard_o(white, w0, tol=TOL, ls_tries=1, max_iter=2000)
    assert int(short.n_fallbacks) > 0 and int(full.n_fallbacks) < int(short.n_fallbacks)
    assert bool(short.converged) or bool(short.stalled)
    h_min, _ = curvature(white, full.w)
    assert amari_distance(np.asarray(short.w), np.asarray(full.w).T) <= 2 * residual_angle(
        TOL, N, h_min)


def test_zero_padded_rows_do_not_count(rng):
    white, _, _ = whitened(rng)
    w0 = rng.standard_normal((K, K)).astype(np.float32)
    padded = np.concatenate([white, np.zeros((13, K), np.float32)])
    plain = picard_o(white, w0, tol=TOL)
    pad = picard_o(padded, w0, tol=TOL, n_valid=N)
    uncounted = ica_criteria(padded, plain.w)           # padding counted as samples
    h_min, _ = curvature(white, plain.w)
    assert bool(pad.converged)
    assert amari_distance(np.asarray(pad.w), np.asarray(plain.w).T) <= 2 * residual_angle(
        TOL, N, h_min)
    assert abs(float(pad.objective) - float(plain.objective)) <= 2 * T.gamma(N * K) * K
    assert abs(float(uncounted.objective) - float(plain.objective)) > 2 * T.gamma(N * K) * K


@pytest.mark.slow
def test_cayley_and_expm_retractions_reach_the_same_optimum(rng):
    white, _, _ = whitened(rng)
    w0 = rng.standard_normal((K, K)).astype(np.float32)
    cay = picard_o(white, w0, tol=TOL, retraction="cayley")
    exp = picard_o(white, w0, tol=TOL, retraction="expm")
    h_min, _ = curvature(white, cay.w)
    for res in (cay, exp):
        assert bool(res.converged)
        w = np.asarray(res.w, np.float64)
        T.assert_within(w @ w.T, np.eye(K), 50 * T.eps() * np.sqrt(K))
    assert amari_distance(np.asarray(cay.w), np.asarray(exp.w).T) <= 2 * residual_angle(
        TOL, N, h_min)


def test_reports_both_criteria_and_warns_with_both(rng):
    x, _, _ = super_gaussian(rng)
    with pytest.warns(ConvergenceWarning, match=r"\(picard\) did not converge after 2 iterations: "
                      r"Riemannian gradient norm [0-9.e+-]+ > tol=[0-9.e+-]+; fixed-point change"):
        FastICA(K, algorithm="picard", max_iter=2, random_state=0).fit(x)
    with pytest.warns(ConvergenceWarning, match=r"last change [0-9.e+-]+ > tol.*Riemannian "
                      r"gradient norm [0-9.e+-]+"):
        m = FastICA(K, algorithm="parallel", max_iter=2, random_state=0).fit(x)
    assert m.grad_norm_ > 0 and m.change_ > m.tol and np.isfinite(m.objective_)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        m = FastICA(K, algorithm="parallel", random_state=0).fit(x)
    # the fixed point's criteria at its result, recomputed from the whitened data
    crit = ica_criteria(np.asarray(whiten(x, K).white), m._unmixing)
    assert m.change_ < m.tol and abs(m.grad_norm_ - float(crit.grad_norm)) <= gradient_floor(N) * 2
    with pytest.raises(ValueError, match="fun must be one of"):
        FastICA(K, algorithm="picard", fun="cube").fit(x)


def test_choose_ica_algorithm():
    assert choose_ica_algorithm("auto", 10000, 100) == "parallel"
    assert choose_ica_algorithm("auto", 10000, 500) == "picard"
    assert choose_ica_algorithm("auto", 10000, 1000) == "picard"
    assert choose_ica_algorithm("deflation", 10000, 1000) == "deflation"
    assert choose_ica_algorithm("picard", 10000, 10) == "picard"
    assert choose_ica_algorithm("auto", 10000, 1000, "cube") == "parallel"


def test_converges_with_gaussian_directions_where_the_fixed_point_cycles(rng):
    # as many components as there are non-Gaussian sources plus Gaussian noise directions:
    # the fixed point's per-pair curvature is ~0 between Gaussian outputs and it keeps
    # rotating them; the descent with a line search converges and finds every real source
    n, k_real, k_gauss = 2000, 10, 10
    s = np.column_stack([rng.laplace(size=(n, k_real)), rng.standard_normal((n, k_gauss))])
    s = (s - s.mean(0)) / s.std(0)
    a = rng.standard_normal((40, k_real + k_gauss))
    x = (s @ a.T + 0.01 * rng.standard_normal((n, 40))).astype(np.float32)
    k = k_real + k_gauss
    with pytest.warns(ConvergenceWarning, match="did not converge after 200"):
        fixed = FastICA(k, algorithm="parallel", random_state=0).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        ours = FastICA(k, algorithm="picard", random_state=0).fit(x)
    assert ours.converged_ and ours.grad_norm_ < ours.tol and ours.n_iter_ < 200
    assert fixed.change_ > fixed.tol and ours.objective_ <= fixed.objective_
    # every Laplace source is one component: the row of W A that finds source i has
    # errors eps_ij ~ N(0, v_ij / n) (error_variance; finite for Laplace rows), so its
    # cosine with e_i is 1 / sqrt(1 + r^2), r^2 a weighted chi-square, bounded by its
    # mean plus LAMBDA standard deviations
    gain = np.abs(ours.components_ @ a)
    gain /= np.linalg.norm(gain, axis=1, keepdims=True)
    best = gain[:, :k_real].max(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = error_variance(s)[:k_real] / n
    r2 = w.sum(axis=1) + T.LAMBDA * np.sqrt(2 * np.sum(w * w, axis=1))
    assert np.all(best >= 1 / np.sqrt(1 + r2))
    assert np.all(1 / np.sqrt(1 + r2) > 0.9)          # a mixed component fails it


def test_warns_when_too_few_rows_for_a_random_start(rng):
    assert random_start_is_trapped(2000, 200) and random_start_is_trapped(10000, 500)
    assert not random_start_is_trapped(5000, 200) and not random_start_is_trapped(10000, 300)
    x = rng.laplace(size=(120, 40)).astype(np.float32)          # k^2 / n = 39^2 / 120 = 12.7
    with pytest.warns(UserWarning, match=r"n_components\^2 / n_samples = 12.7 > 10.*"
                      r"n_samples >= 191 rows"):
        FastICA(39, max_iter=3, random_state=0).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        FastICA(39, max_iter=3, random_state=0, w_init=np.eye(39)).fit(x)   # a given start


@pytest.mark.parametrize("decorrelation", ["eigh", "newton-schulz"])
def test_ill_conditioned_start_gives_an_orthogonal_iterate(rng, decorrelation):
    """A Gaussian k x k start has condition number ~k and beyond; the eigh route to its
    polar factor squares it (float32 loses eps cond^2 of orthogonality), so the start is
    taken by the SVD: the iterate is orthogonal to rounding, start and end."""
    white, _, _ = whitened(rng)
    u, vt = polar(rng.standard_normal((K, K))), polar(rng.standard_normal((K, K)))
    w0 = (u * np.geomspace(1, 1e-4, K)) @ vt            # condition number 1e4
    bound = 50 * T.eps() * np.sqrt(K)
    for max_iter in (0, 40):
        res = picard_o(white, w0.astype(np.float32), max_iter=max_iter, tol=TOL,
                       decorrelation=decorrelation)
        w = np.asarray(res.w, np.float64)
        T.assert_within(w @ w.T, np.eye(K), bound)
    np.testing.assert_allclose(np.asarray(picard_o(white, w0.astype(np.float32), max_iter=0,
                                                   decorrelation=decorrelation).w),
                               polar(w0), atol=bound * np.linalg.cond(w0))
