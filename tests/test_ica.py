import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.decomposition import FastICA as SkFastICA
from sklearn.utils.estimator_checks import check_estimator

from jaxfactor._validation import ConvergenceWarning, NotFittedError
from jaxfactor import FastICA
from jaxfactor.ica import fastica
from jaxfactor.whitening import whiten
from jaxfactor.metrics.amari import amari_distance, match_sources
from tests import tolerances as T

# One planted problem shape shared by most tests, so that each compiled program is reused.
N, P, K = 2000, 48, 6


def planted(rng, n=N, p=P, noise=0.01):
    """Six independent unit-variance sources -- Laplace and Student-t(5) (super-Gaussian),
    uniform and a two-point mixture (sub-Gaussian), exponential (skewed) and a sine wave --
    mixed into ``p`` features by a Gaussian matrix, plus a mean and a little noise.

    Returns ``(X float32 (n, p), sources (n, 6), mixing (p, 6))``."""
    s = np.column_stack([
        rng.laplace(size=n),
        rng.standard_t(5, size=n),
        rng.uniform(-1, 1, size=n),
        rng.choice([-1.0, 1.0], size=n) + 0.2 * rng.standard_normal(n),
        rng.exponential(size=n),
        np.sin(np.linspace(0, 40 * np.pi, n) + rng.uniform(0, 2 * np.pi)),
    ])
    s = (s - s.mean(axis=0)) / s.std(axis=0)
    a = rng.standard_normal((p, s.shape[1]))
    x = s @ a.T + 3.0 * rng.standard_normal(p) + noise * rng.standard_normal((n, p))
    return x.astype(np.float32), s, a


def same_rows_up_to_sign_and_order(a, b):
    """Largest deviation between the rows of ``a`` and ``b`` after matching them by
    absolute cosine and fixing signs (rows normalised)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cos = a @ b.T
    idx = np.argmax(np.abs(cos), axis=1)
    assert len(set(idx.tolist())) == a.shape[0], "rows do not match one to one"
    signs = np.sign(cos[np.arange(a.shape[0]), idx])
    return float(np.max(np.abs(a - signs[:, None] * b[idx])))


# ------------------------------------------- statistical bounds for planted sources


def contrast(fun, y, alpha=1.0):
    """``(g(y), g'(y))`` of FastICA's contrasts, in float64."""
    if fun == "logcosh":
        g = np.tanh(alpha * y)
        return g, alpha * (1 - g * g)
    if fun == "exp":
        e = np.exp(-0.5 * y * y)
        return y * e, (1 - y * y) * e
    return y**3, 3 * y * y


def error_variance(s, fun="logcosh", algorithm="parallel", alpha=1.0):
    """Asymptotic variances ``V[k, l]`` of ``sqrt(n) eps_kl``, the off-diagonal
    entries of FastICA's gain matrix ``W A ~ I + eps`` (rows scaled to unit-variance
    estimates), for ``n`` samples of the independent sources ``s`` (``(n, k)``):
    Tichavsky, Koldovsky & Oja, "Performance analysis of the FastICA algorithm and
    Cramer-Rao bounds for linear ICA" (IEEE TSP 2006, Theorems 1 and 2). With
    ``mu = E[s g(s)]``, ``rho = E[g'(s)]``, ``beta = E[g(s)^2]`` of each standardised
    source, ``gamma = beta - mu^2`` and ``tau = |mu - rho|``:

    * parallel: ``(gamma_k + gamma_l + tau_l^2) / (tau_k + tau_l)^2``;
    * deflation: ``gamma_k / tau_k^2`` when ``k`` is extracted before ``l``,
      ``gamma_l / tau_l^2 + 1`` after it; the order is not known, so the larger.

    The diagonal is 0 (scale is not an error)."""
    s = np.asarray(s, np.float64)
    s = (s - s.mean(axis=0)) / s.std(axis=0)
    g, gp = contrast(fun, s, alpha)
    mu, rho, beta = np.mean(s * g, axis=0), np.mean(gp, axis=0), np.mean(g * g, axis=0)
    gam, tau = beta - mu**2, np.abs(mu - rho)
    if algorithm == "parallel":
        v = (gam[:, None] + gam[None, :] + tau[None, :] ** 2) / (tau[:, None] + tau[None, :]) ** 2
    else:
        one_unit = gam / tau**2
        v = np.maximum(one_unit[:, None], one_unit[None, :] + 1)
    np.fill_diagonal(v, 0.0)
    return v


def amari_bound(v, n):
    """Bound on the Amari distance of a FastICA estimate with error variances ``v``
    (:func:`error_variance`) from ``n`` samples. For small errors the distance is
    the mean of ``|eps_ij|`` over the ``m = k (k - 1)`` off-diagonal entries (rows and
    columns of ``|W A|`` normalised by their diagonal, ~1), ``eps ~ N(0, v / n)``:
    mean ``sqrt(2 v / (pi n))`` (half-normal), plus ``LAMBDA`` times the Lipschitz
    constant of that mean, ``sqrt(2 max(v) / (n m))`` (Gaussian concentration; the
    errors of different pairs are uncorrelated, ``eps_ij`` and ``eps_ji`` at worst
    fully correlated)."""
    k = v.shape[0]
    off = ~np.eye(k, dtype=bool)
    mean = np.mean(np.sqrt(2 * v[off] / (np.pi * n)))
    return float(mean + T.LAMBDA * amari_spread(v, n))


def amari_spread(v, n):
    """The Lipschitz constant of :func:`amari_bound`'s Gaussian concentration: how far
    (per unit of ``LAMBDA``) two draws of the estimator's Amari distance can lie apart."""
    k = v.shape[0]
    return float(np.sqrt(2 * v.max() / (n * k * (k - 1))))


def amari_lipschitz(k):
    """How much the Amari distance of ``W A`` (``W A`` near a scaled permutation with
    unit rows) moves per radian that rows of ``W`` turn by: a row's entries move by at
    most the angle in 2-norm, ``sqrt(k)`` of it in 1-norm, twice (sum and maximum)
    for its row term and once more for the column terms, over ``2 k (k - 1)``."""
    return 2 * np.sqrt(k) / (k - 1)


def correlation_bound(v, n):
    """Bound on ``1 - |corr|`` between an estimated source and its true one:
    ``1 - corr_i ~ sum_j eps_ij^2 / 2``, a weighted chi-square with weights
    ``a_j = v_ij / n``, at most ``sum a + 2 ||a|| sqrt(x) + 2 max(a) x`` with
    probability ``1 - exp(-x)`` (Laurent & Massart 2000, Lemma 1), ``x = LAMBDA^2 / 2``."""
    a = np.asarray(v, np.float64) / n
    x = T.LAMBDA**2 / 2
    tail = a.sum(axis=1) + 2 * np.linalg.norm(a, axis=1) * np.sqrt(x) + 2 * a.max(axis=1) * x
    return float(tail.max() / 2)


# ------------------------------------------------ rounding bounds of the iteration


def fixed_point_step(white, w, fun="logcosh", alpha=1.0):
    """The parallel step's matrix ``E[g(y) z^T] - diag(E[g'(y)]) W`` (``y = W z``) in
    float64, before its symmetric decorrelation."""
    z, w = np.asarray(white, np.float64), np.asarray(w, np.float64)
    g, gp = contrast(fun, z @ w.T, alpha)
    return g.T @ z / z.shape[0] - gp.mean(axis=0)[:, None] * w


def fixed_point_data_error(white, w, rho, fun="logcosh", alpha=1.0):
    """Bound on ``||dW||_F`` (so on each row's angle) by which the parallel fixed point
    ``w`` on ``white`` (``(n, k)``) moves when the whitened data move by ``dZ``, ``||dZ||_2
    <= rho sqrt(n)`` (another whitening of the same data, off by rounding): the step
    matrix ``A = E[g(y) z^T] - diag(E[g'(y)]) W`` moves by ``||dA||_2 <= rho (||g(Y)||_2 /
    sqrt(n) + max|g'| + rms(g''))`` (its three terms ``E[g(y) dz^T]``, ``E[g'(y) (W dz)
    z^T]``, ``diag(E[g''(y) W dz]) W``, Cauchy-Schwarz), and its polar factor by
    ``2 ||dA||_F / (s_k + s_{k-1})`` (Li's bound, ``||dA||_F <= sqrt(k) ||dA||_2``)."""
    z, w = np.asarray(white, np.float64), np.asarray(w, np.float64)
    n, k = z.shape
    y = z @ w.T
    g, gp = contrast(fun, y, alpha)
    if fun == "logcosh":
        gpp = -2 * alpha * g * gp
    elif fun == "exp":
        gpp = (y**3 - 3 * y) * np.exp(-0.5 * y * y)
    else:
        gpp = 6 * y
    gain = np.linalg.norm(g, 2) / np.sqrt(n) + np.abs(gp).max() + np.sqrt(np.mean(gpp**2))
    sa = np.linalg.svd(fixed_point_step(z, w, fun, alpha), compute_uv=False)
    return float(2 * np.sqrt(k) * rho * gain / (sa[-1] + sa[-2]))


def rebuilt_white(x, mean, whitening):
    """A fit's whitened data rebuilt in float64 from its ``mean_`` and ``whitening_``:
    ``sqrt(n) (X - mean) whitening^T``."""
    x = np.asarray(x, np.float64)
    return np.sqrt(x.shape[0]) * (x - np.asarray(mean, np.float64)) @ np.asarray(whitening, np.float64).T


def whitening_gap(z1, z2):
    """How far two whitenings of the same data are apart beyond a rotation (which FastICA's
    fixed point follows): ``min_Q ||Z1 - Z2 Q||_2 / sqrt(n)`` over orthogonal ``Q``
    (Procrustes, ``Q = polar(Z2^T Z1)``), the ``rho`` of :func:`fixed_point_data_error`."""
    z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
    return float(np.linalg.norm(z1 - z2 @ polar(z2.T @ z1), 2) / np.sqrt(z1.shape[0]))


def fixed_point_rounding(white, w, fun="logcosh", algorithm="parallel", alpha=1.0):
    """Bound on the angle (radians) by which each row of FastICA's fixed point on
    ``white`` (``(n, k)``) moves when one step at the fixed point ``w`` (float64) is
    computed in float32: the step's means round by ``gamma(n)`` of their sums of
    absolute terms (and ``y = W z`` by ``gamma(k)``); at the fixed point the iteration's
    own derivative vanishes (it converges superlinearly), so that rounding moves the
    rows by the derivative of the decorrelation: the polar factor's
    (:func:`tests.tolerances.polar_error`, plus its ``eigh`` rounding) for ``parallel``,
    the normalisation's ``1 / |E[y g(y)] - E[g'(y)]|`` for ``deflation``."""
    z = np.asarray(white, np.float64)
    w = np.asarray(w, np.float64)
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    n, k = z.shape
    y = z @ w.T
    g, gp = contrast(fun, y, alpha)
    zw = np.abs(z) @ np.abs(w).T
    err = (T.gamma(n) + 3 * T.unit_roundoff()) * (np.abs(g).T @ np.abs(z) + gp.sum(0)[:, None] * np.abs(w)) / n \
        + T.gamma(k) * (np.abs(gp * zw).T @ np.abs(z)) / n
    if algorithm == "parallel":
        step = fixed_point_step(z, w, fun, alpha)
        return float(np.max(np.linalg.norm(T.polar_error(step, err), axis=1)) + eigh_polar_error(step))
    tau = np.abs(np.mean(y * g, axis=0) - gp.mean(axis=0))
    return float(np.max(np.linalg.norm(err, axis=1) / tau))


def polar(a):
    """The orthonormal polar factor ``U V^T`` of ``a`` (float64)."""
    u, _, vt = np.linalg.svd(np.asarray(a, np.float64), full_matrices=False)
    return u @ vt


def step_rounding(white, w, fun="logcosh", alpha=1.0):
    """Entrywise bound on the float32 rounding of the parallel step's matrix
    ``E[g(y) z^T] - diag(E[g'(y)]) W`` at ``w`` on ``white`` (``(n, k)``): the means
    ``gamma(n)`` (and ``3 u`` for the division and the difference) of their sums of
    absolute terms, ``y = W z`` ``gamma(k)`` of ``|Z| |W|^T``, fed through ``g'``."""
    z, w = np.asarray(white, np.float64), np.asarray(w, np.float64)
    n, k = z.shape
    y = z @ w.T
    g, gp = contrast(fun, y, alpha)
    zw = np.abs(z) @ np.abs(w).T
    return ((T.gamma(n) + 3 * T.unit_roundoff()) * (np.abs(g).T @ np.abs(z) + np.abs(gp).sum(0)[:, None]
                                                    * np.abs(w))
            + T.gamma(k) * (np.abs(gp) * zw).T @ np.abs(z)) / n


def parallel_iterations(white, w_init, iters, fun="logcosh", alpha=1.0, shift=0.0):
    """``iters`` parallel FastICA steps in float64 from ``polar(w_init)``; ``shift`` is
    added to ``E[g'(y)]`` (what counting ``m`` zero padding rows does: ``m g'(0) / n``)."""
    w = polar(w_init)
    for _ in range(iters):
        w = polar(fixed_point_step(white, w, fun, alpha) - shift * w)
    return w


def parallel_rounding(white, w_init, iters, fun="logcosh", alpha=1.0):
    """Entrywise first-order bound on how far two float32 runs of ``iters`` parallel
    steps from the same ``w_init`` on the same ``white`` end apart when their sums
    round differently: each step adds twice its own rounding (:func:`step_rounding`
    through :func:`tests.tolerances.polar_error`, plus :func:`eigh_polar_error`), and
    carries the difference so far through the step map's Jacobian (float64 central
    differences of ``W -> polar(A(W))``, absolute values)."""
    k = np.asarray(w_init).shape[0]
    w = polar(w_init)                 # both runs decorrelate the same start alike
    diff = np.zeros((k, k))
    for _ in range(iters):
        a = fixed_point_step(white, w, fun, alpha)
        own = T.polar_error(a, 2 * step_rounding(white, w, fun, alpha)) + 2 * eigh_polar_error(a)
        jac = np.zeros((k * k, k * k))
        h = 1e-6
        for i in range(k * k):
            dw = np.zeros(k * k)
            dw[i] = h
            dw = dw.reshape(k, k)
            jac[:, i] = ((polar(fixed_point_step(white, w + dw, fun, alpha))
                          - polar(fixed_point_step(white, w - dw, fun, alpha))) / (2 * h)).ravel()
        diff = (np.abs(jac) @ diff.ravel()).reshape(k, k) + own
        w = polar(a)
    return diff


# ------------------------------------------------ rounding bounds of the whitening


def randomized_whitening_error(x, basis, block_rows=None):
    """Bound on ``||E||_2`` such that the randomized whitening of ``x`` (``(n, p)``,
    float32, range basis of ``basis`` columns; streamed in blocks of ``block_rows``)
    returns the exact Ritz vectors of ``X_c + E``: the Rayleigh-Ritz step's backward
    error (:func:`tests.tolerances.rayleigh_ritz_error`) plus the shift of ``X_c`` by
    the rounded mean (``sqrt(n) ||d mean|| <= gamma(n) ||X||_F``). The range finder's
    own rounding tilts the basis, which moves the Ritz vectors only at second order
    while ``sigma_{k+1} << sigma_k``."""
    x = np.asarray(x, np.float64)
    return float(T.rayleigh_ritz_error(x, basis, block_rows=block_rows)
                 + T.gamma(x.shape[0]) * np.linalg.norm(x))


def randomized_whiteness_error(n, basis, k):
    """Bound on ``||Z^T Z / n - I||_2`` for the randomized whitening ``Z = sqrt(n) Q_n U_r``
    (``Q_n`` the ``(n, basis)`` Householder factor, ``U_r`` the ``(basis, k)`` left singular
    vectors of ``R``): each factor's :func:`tests.tolerances.orthonormality_error`, and
    the product's ``gamma(b) ||Q_n||_F ||U_r||_F``, doubled in ``U^T U``."""
    b = basis
    return (T.orthonormality_error(n, b) + T.orthonormality_error(b, b)
            + 2 * T.gamma(b) * np.sqrt(b * k))


def eigh_polar_error(a, dtype=np.float32):
    """Bound on ``||dQ||_F`` of the polar factor computed as ``(A A^T)^{-1/2} A`` with an
    ``eigh`` (:func:`jaxfactor.ica.symmetric_decorrelation`) of a square ``A`` in
    ``dtype``: ``M = fl(A A^T)`` and the eigensolver's backward error perturb ``M`` by
    ``E``, ``||E||_F <= (gamma(k) + gamma(k^2)) ||A||_F^2``, which moves ``M^{-1/2} A`` by at
    most ``||E||_F / (2 s_min^2)`` (the divided differences of ``x^{-1/2}`` times ``s_j``
    are at most ``1 / (2 s_min^2)``); rebuilding ``V diag V^T`` and the product with ``A``
    add ``(2 k gamma(k) + 2 sqrt(k) gamma(k^2)) s_max / s_min``."""
    a = np.asarray(a, np.float64)
    k = a.shape[0]
    s = np.linalg.svd(a, compute_uv=False)
    g1, g2 = T.gamma(k, dtype), T.gamma(k * k, dtype)
    return float((g1 + g2) * np.sum(a**2) / (2 * s[-1] ** 2)
                 + (2 * k * g1 + 2 * np.sqrt(k) * g2) * s[0] / s[-1])


def test_check_estimator():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check_estimator(FastICA())


# --------------------------------------------------------------- recovery


@pytest.mark.parametrize("algorithm", ["parallel", "deflation"])
@pytest.mark.parametrize("fun", ["logcosh", "exp", "cube"])
def test_planted_recovery(rng, algorithm, fun):
    x, s, a = planted(rng)
    model = FastICA(K, algorithm=algorithm, fun=fun, random_state=1, max_iter=400).fit(x)
    assert model.converged_ and 1 <= model.n_iter_ <= 400
    ours = amari_distance(model.components_, a)
    # the planted sources are found to the statistical accuracy of N samples with this
    # contrast and algorithm (cube, kurtosis, is the weakest on these sources)
    v = error_variance(s, fun, algorithm)
    assert ours <= amari_bound(v, N)
    # and comparable to scikit-learn's estimate from the same data (float64). The starting
    # points differ (a JAX key vs a RandomState): the parallel runs reach the same fixed
    # point, each within its last step (arccos(1 - tol) a row); deflation's fixed point
    # depends on its order of extraction, so there the two are two draws of the estimator,
    # at most 2 LAMBDA spreads apart.
    ref = SkFastICA(K, algorithm=algorithm, fun=fun, whiten="unit-variance", random_state=1,
                    max_iter=400).fit(x.astype(np.float64))
    if algorithm == "parallel":
        slack = amari_lipschitz(K) * 2 * np.arccos(1 - model.tol)
    else:
        slack = 2 * T.LAMBDA * amari_spread(v, N)
    assert ours <= amari_distance(ref.components_, a) + slack
    corr = match_sources(model.transform(x), s).correlations
    assert 1 - corr.min() <= correlation_bound(v, N)


def test_planted_recovery_wide_randomized_whitening(rng):
    from jaxfactor._policy import choose_whiten_range
    from jaxfactor.randomized import range_params

    x, s, a = planted(rng, n=600, p=4096)
    n = x.shape[0]
    res = whiten(jnp.asarray(x), K, solver="randomized", key=jax.random.key(5))
    method, n_iter = choose_whiten_range("auto", None, n, x.shape[1], K)
    basis = range_params(K, n, x.shape[1], method=method, n_iter=n_iter).basis_size
    z = np.asarray(res.white, np.float64)
    # Z = sqrt(n) Q_n U_r is white up to the orthonormality of its two factors
    T.assert_within(z.T @ z / n, np.eye(K), randomized_whiteness_error(n, basis, K))
    # singular values: Weyl, each moves by at most the backward error ||E|| (the range
    # finder's own deficit, ~ s_{k+1} (s_{k+1} / s_k)^(2q), is below 1e-9 of it here)
    xc = x.astype(np.float64) - x.mean(0, dtype=np.float64)
    ref_s = np.sqrt(np.linalg.eigvalsh(xc @ xc.T)[::-1][:K])      # (n, n) Gram: n << p
    T.assert_within(res.singular_values, ref_s, randomized_whitening_error(x, basis))
    model = FastICA(K, random_state=0).fit(x)
    assert model.whiten_solver_ == "randomized"
    assert model.converged_
    v = error_variance(s)
    assert amari_distance(model.components_, a) <= amari_bound(v, n)
    assert 1 - match_sources(model.transform(x), s).correlations.min() <= correlation_bound(v, n)


def test_parallel_and_deflation_find_the_same_sources(rng):
    x, s, _ = planted(rng)
    par = FastICA(K, algorithm="parallel", random_state=0).fit(x)
    dfl = FastICA(K, algorithm="deflation", random_state=0).fit(x)
    # W_par A ~ I + eps_par and W_dfl A ~ I + eps_dfl, so par against dfl is I + eps_par -
    # eps_dfl, whose variances are at most (sqrt(v_par) + sqrt(v_dfl))^2 (Cauchy-Schwarz)
    v = (np.sqrt(error_variance(s, "logcosh", "parallel"))
         + np.sqrt(error_variance(s, "logcosh", "deflation"))) ** 2
    assert amari_distance(par.components_, dfl.mixing_) <= amari_bound(v, N)


# ------------------------------------------------------ agreement with scikit-learn


@pytest.mark.parametrize("algorithm,fun", [("parallel", "logcosh"), ("parallel", "exp"),
                                           ("parallel", "cube"), ("deflation", "logcosh")])
def test_same_fixed_point_as_sklearn_on_whitened_data(rng, algorithm, fun):
    x, _, _ = planted(rng)
    white = whiten(jnp.asarray(x), K, solver="svd").white
    w0 = rng.standard_normal((K, K))
    tol = 1e-6
    ours = fastica(white, w_init=jnp.asarray(w0, jnp.float32), algorithm=algorithm, fun=fun,
                   tol=tol, max_iter=1000)
    assert bool(ours.converged)
    ref = SkFastICA(whiten=False, algorithm=algorithm, fun=fun, w_init=w0, tol=tol,
                    max_iter=1000).fit(np.asarray(white, np.float64))
    # Same start, same iteration: the same rows (not only up to order and sign). Each run
    # stops within its last step, arccos(1 - tol) a row, of the fixed point (FastICA
    # converges superlinearly: the remaining distance is at most the last step); ours
    # computes that fixed point in float32.
    w_ours = np.asarray(ours.w, np.float64)
    angle = 2 * np.arccos(1 - tol) + fixed_point_rounding(white, ref.components_, fun, algorithm)
    assert same_rows_up_to_sign_and_order(w_ours, ref.components_) <= angle
    # rows at an angle theta have |cos| = cos(theta) >= 1 - theta^2 / 2
    T.assert_within(np.abs(np.sum(w_ours * ref.components_, axis=1)), 1.0, angle**2 / 2)


@pytest.mark.parametrize("whiten_mode", ["unit-variance", "arbitrary-variance"])
def test_estimator_matches_sklearn_with_same_w_init(rng, whiten_mode):
    x, _, _ = planted(rng)
    w0 = rng.standard_normal((K, K))
    tol = 1e-6
    ours = FastICA(K, whiten=whiten_mode, whiten_solver="svd", w_init=w0, tol=tol,
                   max_iter=1000).fit(x)
    ref = SkFastICA(K, whiten=whiten_mode, whiten_solver="svd", w_init=w0, tol=tol,
                    max_iter=1000).fit(x.astype(np.float64))
    x64 = x.astype(np.float64)
    xc = x64 - x64.mean(0)
    sv = np.linalg.svd(xc, compute_uv=False)
    s = sv[:K]
    # whitening_ = diag(1/s) Vt is the same matrix (sklearn's sign convention: first
    # feature positive): ours is the SVD of X_c + E, E the backward error of the float32
    # SVD plus the rounded mean's shift; row i moves by sqrt(2) ||E|| / gap_i (Wedin, one
    # singular vector at a time) plus ||E|| / s_i (Weyl), relative to its norm 1 / s_i.
    e = T.svd_error(xc) + T.gamma(N) * np.linalg.norm(x64)
    gaps = np.array([T.min_gap(np.delete(sv, range(i)), 1) for i in range(K)])
    rel = np.sqrt(2) * e / gaps + e / s
    T.assert_within(np.linalg.norm(ours.whitening_ - ref.whitening_, axis=1)
                    / np.linalg.norm(ref.whitening_, axis=1), 0, rel)
    # the mean: a float32 sum of N terms (forward error of a sum)
    T.assert_within(ours.mean_, ref.mean_, T.gamma(N) * np.mean(np.abs(x64), axis=0))
    # components_ and mixing_ are sklearn's up to order and sign, with the same scale
    c_ours, c_ref = ours.components_, ref.components_
    cos = (c_ours / np.linalg.norm(c_ours, axis=1, keepdims=True)) @ \
        (c_ref / np.linalg.norm(c_ref, axis=1, keepdims=True)).T
    idx = np.argmax(np.abs(cos), axis=1)
    assert sorted(idx.tolist()) == list(range(K))
    signs = np.sign(cos[np.arange(K), idx])
    # Both stop within arccos(1 - tol) a row of the same fixed point (ours in float32):
    # an angle theta of a row of W moves the row of components_ = W' diag(1/s) Vt by at
    # most theta s_1 / s_k of its norm, a relative error rel_j of row j of diag(1/s) Vt
    # by ||(rel_j / s_j)_j|| / (1 / s_1); mixing_ = Vt^T diag(s) W'^{-1} likewise.
    # Ours is (to tol and its float32 iteration) the fixed point of its whitened data, which
    # are within rho of a rotation of sklearn's (whitening_gap of the two whitenings, each
    # checked above); the fixed point follows the rotation (the feature-space answer does
    # not depend on it) and moves by fixed_point_data_error for the rest; the source scales
    # are Z's whiteness (K columns of the SVD's U). A row angle theta of W' moves a row of
    # components_ = W' diag(1/s) Vt, or a column of mixing_, by at most theta s_1 / s_k of
    # its norm, a source X_c c^T = Z W'^T / sqrt(N) by theta + rho.
    white = whiten(jnp.asarray(x), K, solver="svd").white       # what ours iterated on
    rho = whitening_gap(white, rebuilt_white(x, ref.mean_, ref.whitening_))   # sklearn's
    theta = 2 * np.arccos(1 - tol) + fixed_point_rounding(white, ours._unmixing) \
        + fixed_point_data_error(white, ours._unmixing, rho) + 2 * np.sqrt(K) * T.gamma(N * P)
    rel_c = (theta + rho) * s[0] / s[-1]
    T.assert_within(np.linalg.norm(c_ours - signs[:, None] * c_ref[idx], axis=1), 0,
                    rel_c * np.linalg.norm(c_ref[idx], axis=1))
    T.assert_within(np.linalg.norm(ours.mixing_ - ref.mixing_[:, idx] * signs, axis=0), 0,
                    rel_c * np.linalg.norm(ref.mixing_[:, idx], axis=0))
    # the sources, plus the float32 product (the mean folded in) and the rounded mean
    # against ||X_c c|| >= s_k ||c||
    rel_t = theta + rho + (T.gamma(P + 1) * (np.linalg.norm(x64) + np.sqrt(N)
                                             * np.linalg.norm(x64.mean(0)))
                           + T.gamma(N) * np.linalg.norm(x64)) / s[-1]
    t_ours, t_ref = ours.transform(x), ref.transform(x)[:, idx] * signs
    T.assert_within(np.linalg.norm(t_ours - t_ref, axis=0), 0, rel_t * np.linalg.norm(t_ref, axis=0))


def test_no_whitening_matches_sklearn(rng):
    x, _, _ = planted(rng)
    white = np.asarray(whiten(jnp.asarray(x), K, solver="svd").white)
    w0 = rng.standard_normal((K, K))
    tol = 1e-6
    ours = FastICA(whiten=False, w_init=w0, tol=tol, max_iter=1000).fit(white)
    ref = SkFastICA(whiten=False, w_init=w0, tol=tol, max_iter=1000).fit(white.astype(np.float64))
    # both within their last step of the same fixed point, ours in float32
    angle = 2 * np.arccos(1 - tol) + fixed_point_rounding(white, ref.components_)
    assert same_rows_up_to_sign_and_order(ours.components_, ref.components_) <= angle
    assert not hasattr(ours, "whitening_")
    np.testing.assert_array_equal(ours.mean_, 0.0)


# ------------------------------------------------------------- attributes


def test_attributes_and_transforms(rng):
    x, _, _ = planted(rng)
    model = FastICA(K, random_state=0).fit(x)
    c, m, d = model.components_, model.mixing_, model.directions_
    assert c.shape == (K, P) and m.shape == (P, K) and d.shape == (K, P)
    assert model.whitening_.shape == (K, P) and model.n_components_ == K
    assert all(isinstance(v, np.ndarray) for v in (c, m, d, model.mean_, model.whitening_))
    x64 = x.astype(np.float64)
    mean = x64.mean(0)
    u = T.unit_roundoff()
    # The float32 pieces (whitening by the thin SVD of the (N, P) centred data): c =
    # fl(W'/s) Vt and m = Vt^T fl(s W'^{-1}), Vt the axes (whitening_'s rows, unit norm).
    vt = model.whitening_ / np.linalg.norm(model.whitening_, axis=1, keepdims=True)
    left, right = c @ vt.T, vt @ m                    # fl(W'/s), fl(s W'^{-1})
    kappa = np.linalg.norm(left, 2) * np.linalg.norm(right, 2)
    ortho = T.orthonormality_error(P, P)              # V of the SVD (of the (P, P) R factor)
    # mixing_ is the pseudo-inverse of components_: c m = fl(W'/s) (Vt Vt^T) fl(s W'^{-1})
    # is off I by its own product (gamma(P) |c| |m|), the two K-term products and two
    # casts that made c and m, and Vt's orthonormality, all amplified by kappa
    cm_bound = T.gamma(P) * np.abs(c) @ np.abs(m) + kappa * (2 * T.gamma(K) + 2 * u + ortho)
    T.assert_within(c @ m, np.eye(K), cm_bound)
    # m - pinv(c) = pinv(c) (c m - I) + (I - pinv(c) c) m, the last m's part outside c's
    # row space, which c's rounding (gamma(K) |left| |Vt|) tilts by ||dc|| ||pinv(c)||
    pinv = np.linalg.pinv(c.astype(np.float64))
    dc = T.gamma(K) * np.linalg.norm(np.abs(left) @ np.abs(vt))
    T.assert_within(m, pinv, np.linalg.norm(pinv, 2) * (np.linalg.norm(cm_bound)
                                                        + np.linalg.norm(m, 2) * dc))
    # transform is (X - mean) components^T: a float32 product with the (rounded) mean
    # folded in, each entry off by gamma(P + 1) (|x| + |mean|) |c| and gamma(N) mean|x| |c|
    src = model.transform(x)
    t_bound = (T.gamma(P + 1) * (np.abs(x64) + np.abs(mean)) + T.gamma(N) * np.abs(x64).mean(0)) \
        @ np.abs(c.T.astype(np.float64))
    T.assert_within(src, (x64 - mean) @ c.T.astype(np.float64), t_bound)
    # unit-variance sources, uncorrelated: Z W'^T / std is white up to the orthonormality of
    # Z's K columns (2 sqrt(K) gamma(N P)) and of W (twice its eigh decorrelation's error
    # at the fixed point), std to a float32 mean of N squares; X_c c^T is that up to the
    # SVD's backward error e through 1 / s (2 e / s_k, squared terms) and the transform's
    # own rounding (relative to a column's norm sqrt(N))
    white = whiten(jnp.asarray(x), K, solver="svd").white
    sv = np.linalg.svd(x64 - mean, compute_uv=False)
    e = T.svd_error(x64 - mean) + T.gamma(N) * np.linalg.norm(x64)
    step = fixed_point_step(white, model._unmixing)
    w_ortho = 2 * eigh_polar_error(step)
    rel_t = np.max(np.linalg.norm(t_bound, axis=0)) / np.sqrt(N)
    cov_bound = 2 * np.sqrt(K) * T.gamma(N * P) + w_ortho + T.gamma(N) + 4 * e / sv[K - 1] + 2 * rel_t
    T.assert_within(np.cov(src.T, ddof=0), np.eye(K), cov_bound)
    np.testing.assert_array_equal(model.fit_transform(x), src)
    # inverse_transform projects onto the whitened PCA subspace: src m^T + mean_ = X_c (m c)^T
    # + mean, m c = Vt^T (I + F) Vt with ||F|| <= kappa ||left right - I||; Vt's subspace
    # is within sin(theta) <= e / (s_k - s_{k+1}) of the exact one (Wedin), so a row moves
    # by ||x_c|| (2 sin(theta) + ||F||), plus the transform's error through ||m|| and the
    # float32 product and mean (row by row, 2-norms)
    _, _, vt_exact = np.linalg.svd(x64 - mean, full_matrices=False)
    proj = (x64 - mean) @ vt_exact[:K].T @ vt_exact[:K] + mean
    f = kappa * (np.linalg.norm(cm_bound) + kappa * ortho)
    sin = e / T.eigengap(sv, K)
    back = model.inverse_transform(src)
    row_bound = (np.linalg.norm(x64 - mean, axis=1) * (2 * sin + f)
                 + np.linalg.norm(t_bound, axis=1) * np.linalg.norm(m, 2)
                 + T.gamma(K + 1) * (np.linalg.norm(src, axis=1) * np.linalg.norm(m)
                                     + np.linalg.norm(mean))
                 + T.gamma(N) * np.linalg.norm(np.abs(x64).mean(0)))
    T.assert_within(np.linalg.norm(back - proj, axis=1), 0, row_bound)
    # directions: unit norm, largest entry positive, parallel to mixing columns, sorted by
    # explained variance whose sum is the variance of the PCA subspace. A float32 column
    # divided by its float32 norm: gamma(P) for the sum of squares, u for the square root
    # and u for the division, in the library and again here.
    norm_err = T.gamma(P) + 2 * u
    T.assert_within(np.linalg.norm(d, axis=1), 1.0, 2 * norm_err)
    assert np.all(d[np.arange(K), np.argmax(np.abs(d), axis=1)] > 0)
    T.assert_within(d, (m / np.linalg.norm(m, axis=0)).T, 2 * norm_err * np.abs(d))
    ev = model.explained_variance_
    assert np.all(np.diff(ev) <= 0)
    pca_var = np.sum(np.var((x64 - mean) @ vt_exact[:K].T, axis=0, ddof=1))
    # sum ||m_i||^2 var_i = trace(diag(s^2) W^T W) for unit-variance sources: off by the
    # float32 s^2 (Weyl: 2 e / s_k relative), W's and Z's orthonormality, and m's rounding
    ev_rel = 2 * e / sv[K - 1] + w_ortho + 2 * np.sqrt(K) * T.gamma(N * P) + 2 * (T.gamma(K) + 2 * u)
    T.assert_within(ev.sum(), pca_var, ev_rel * pca_var)
    # the source variances the library used against those of transform's sources
    T.assert_within(ev, np.sum(m.astype(np.float64) ** 2, axis=0) * np.var(src, axis=0, ddof=1),
                    (cov_bound + 2 * (T.gamma(K) + 2 * u)) * ev)


def test_arbitrary_variance_sources_and_jax_input(rng):
    x, s_true, a = planted(rng)
    model = FastICA(K, whiten="arbitrary-variance", random_state=0).fit(jnp.asarray(x))
    out = model.transform(jnp.asarray(x))
    assert isinstance(out, jax.Array)
    # sklearn's convention: the unscaled sources have variance 1/n: exactly, up to W's
    # orthonormality (twice its eigh decorrelation's error at the fixed point), the SVD
    # whitening's backward error e through 1/s (4 e / s_k for a variance), the float32
    # transform (twice its relative error) and numpy's float32 variance (2 gamma(N))
    x64 = x.astype(np.float64)
    sv = np.linalg.svd(x64 - x64.mean(0), compute_uv=False)
    e = T.svd_error(x64 - x64.mean(0)) + T.gamma(N) * np.linalg.norm(x64)
    white = whiten(jnp.asarray(x), K, solver="svd").white
    w_ortho = 2 * eigh_polar_error(fixed_point_step(white, model._unmixing))
    rel_t = (T.gamma(P + 1) * (np.linalg.norm(x64) + np.sqrt(N) * np.linalg.norm(x64.mean(0)))
             + T.gamma(N) * np.linalg.norm(x64)) / sv[K - 1]
    rel = w_ortho + 4 * e / sv[K - 1] + 2 * rel_t + 2 * T.gamma(N)
    T.assert_within(np.var(np.asarray(out), axis=0), 1.0 / N, rel / N)
    assert amari_distance(model.components_, a) <= amari_bound(error_variance(s_true), N)


def test_determinism_and_w_init(rng):
    x, _, _ = planted(rng)
    m1 = FastICA(K, random_state=3).fit(x)
    m2 = FastICA(K, random_state=3).fit(x)
    np.testing.assert_array_equal(m1.components_, m2.components_)
    np.testing.assert_array_equal(m1.directions_, m2.directions_)
    # another seed: the same sources, and the same documented order and signs. Both fits
    # whiten alike and reach the same fixed point, each within its last step
    # (arccos(1 - tol) a row of W); a mixing column Vt^T diag(s) w_i turns by at most
    # s_1 / s_k times that.
    m3 = FastICA(K, random_state=11).fit(x)
    theta = 2 * np.arccos(1 - m1.tol)
    assert amari_distance(m3.components_, m1.mixing_) <= amari_lipschitz(K) * theta
    sv = np.linalg.svd(x.astype(np.float64) - x.mean(0, dtype=np.float64), compute_uv=False)
    T.assert_within(m3.directions_, m1.directions_, theta * sv[0] / sv[K - 1])
    # a user w_init overrides random_state
    w0 = rng.standard_normal((K, K))
    m4 = FastICA(K, w_init=w0, random_state=1).fit(x)
    m5 = FastICA(K, w_init=w0, random_state=2).fit(x)
    np.testing.assert_array_equal(m4.components_, m5.components_)


def test_convergence_warning_names_iterations_and_change(rng):
    x, _, _ = planted(rng)
    with pytest.warns(ConvergenceWarning, match=r"after 2 iterations: last change [0-9.e+-]+ > tol"):
        model = FastICA(K, max_iter=2, random_state=0).fit(x)
    assert model.n_iter_ == 2 and not model.converged_


def test_n_components_none_is_the_numerical_rank(rng):
    s = rng.laplace(size=(300, 3))
    x = (s @ rng.standard_normal((3, 10)) + 1.0).astype(np.float32)
    model = FastICA(random_state=0).fit(x)
    assert model.n_components_ == 3 and model.components_.shape == (3, 10)


def test_whitening_kernel_is_white_for_every_solver(rng):
    x, _, _ = planted(rng, n=300, p=200)
    n, p = x.shape
    x64 = x.astype(np.float64)
    mean = x64.mean(0)
    _, ref_s, ref_vt = np.linalg.svd(x64 - mean, full_matrices=False)
    ref_vt = ref_vt[:K] * np.sign(ref_vt[:K, :1])
    u = T.unit_roundoff()
    # svd: the thin SVD of X_c + E (E its backward error plus the rounded mean's shift);
    # Z = sqrt(n) U is white up to U's K columns' orthonormality (Higham Lemma 19.3:
    # each within gamma(n p)); singular values move by ||E|| (Weyl), each axis by
    # sqrt(2) ||E|| / its gap (Wedin)
    e_svd = T.svd_error(x64 - mean) + T.gamma(n) * np.linalg.norm(x64)
    # eigh: the eigenpairs of the float32 covariance plus E_C (its rounding and the
    # eigensolver's backward error); Z = X_c Vt^T sqrt(n) / s is white up to ||E_C|| / ev_k,
    # Vt's orthonormality (times ev_1 / ev_k), its own float32 product (the mean folded in)
    # and the square roots; s = sqrt(ev (n - 1)) moves by (n - 1) ||E_C|| / (2 s)
    cov = np.cov(x64.T)
    ev = ref_s**2 / (n - 1)
    e_cov = T.covariance_error(x) + T.svd_error(cov)
    product = T.gamma(p + 1) * (np.linalg.norm(x64) + np.sqrt(n) * np.linalg.norm(mean))
    bounds = {
        "svd": dict(white=2 * np.sqrt(K) * T.gamma(n * p), s=e_svd,
                    vt=np.sqrt(2) * e_svd / np.array([T.min_gap(np.delete(ref_s, range(i)), 1)
                                                      for i in range(K)])),
        "eigh": dict(white=e_cov / ev[K - 1] + T.orthonormality_error(p, p) * ev[0] / ev[K - 1]
                     + 2 * product / ref_s[K - 1] + 2 * u,
                     s=(n - 1) * e_cov / (2 * ref_s[:K]) + 2 * u * ref_s[:K],
                     vt=np.sqrt(2) * e_cov / np.array([T.min_gap(np.delete(ev, range(i)), 1)
                                                       for i in range(K)])),
    }
    for solver in ("svd", "eigh"):    # randomized: in the wide recovery test
        res = whiten(jnp.asarray(x), K, solver=solver)
        z = np.asarray(res.white, np.float64)
        b = bounds[solver]
        T.assert_within(z.T @ z / n, np.eye(K), b["white"])
        T.assert_within(res.singular_values, ref_s[:K], b["s"])
        T.assert_within(res.components, ref_vt, np.asarray(b["vt"])[:, None])
        # the mean: a float32 sum of n terms (forward error of a sum)
        T.assert_within(res.mean, mean, T.gamma(n) * np.abs(x64).mean(0))
        assert np.all(np.asarray(res.components)[:, 0] >= 0)


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize("params,match", [
    (dict(algorithm="both"), "algorithm"),
    (dict(fun="tanh"), "'fun' parameter of FastICA must be"),
    (dict(fun=np.tanh), "'fun' parameter of FastICA must be"),
    (dict(whiten=True), "'whiten' parameter of FastICA must be"),
    (dict(whiten="yes"), "'whiten' parameter of FastICA must be"),
    (dict(whiten_solver="qr"), "whiten_solver"),
    (dict(method="lanczos"), "'method' parameter of FastICA must be"),
    (dict(decorrelation="qr"), "'decorrelation' parameter of FastICA must be"),
    (dict(block_rows=0), "block_rows"),
    (dict(max_iter=0), "max_iter"),
    (dict(tol=-1.0), "tol"),
    (dict(tol=float("nan")), "tol"),
    (dict(fun_args={"alpha": 3.0}), "alpha"),
    (dict(fun_args={"beta": 1.0}), "fun_args"),
    (dict(n_components=0), "'n_components' parameter of FastICA must be"),
    (dict(n_components=P + 1), "larger than n_features"),
    (dict(n_components=3, w_init=np.eye(4)), "w_init has shape"),
    (dict(n_components=2, w_init=np.array([[1.0, np.nan], [0.0, 1.0]])), "NaN"),
    (dict(n_components=2, w_init=np.ones((2, 2))), "rank deficient"),
])
def test_bad_parameters(rng, params, match):
    x = rng.standard_normal((50, P)).astype(np.float32)
    with pytest.raises(ValueError, match=match):
        FastICA(**params).fit(x)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_bad_data(rng):
    x = rng.standard_normal((40, 8))
    bad = x.copy()
    bad[0, 0], bad[3, 2], bad[5, 5] = np.nan, np.inf, np.nan
    with pytest.raises(ValueError, match="2 NaN and 1 inf"):
        FastICA(3).fit(bad)
    with pytest.raises(ValueError, match="Expected 2D"):
        FastICA(3).fit(x[0])
    # integer input is converted to floating point, as scikit-learn does
    ints = np.round(4 * x).astype(np.int32)
    np.testing.assert_array_equal(FastICA(3, random_state=0).fit(ints).components_,
                                  FastICA(3, random_state=0).fit(ints.astype(np.float32)).components_)
    with pytest.raises((TypeError, ValueError), match="omplex"):
        FastICA(3).fit(x.astype(np.complex64))
    with pytest.raises(ValueError, match="1 sample"):
        FastICA(1).fit(x[:1])
    with pytest.raises(TypeError, match="'n_components' parameter of FastICA must be"):
        FastICA(2.5).fit(x)
    # fewer samples than components (+1 for the centring)
    with pytest.raises(ValueError, match="5 samples, fewer than n_components"):
        FastICA(5).fit(x[:5])
    # more components than the numerical rank of the centred data
    low = (rng.standard_normal((40, 2)) @ rng.standard_normal((2, 8))).astype(np.float32)
    with pytest.raises(ValueError, match="numerical rank 2"):
        FastICA(4).fit(low)
    with pytest.raises(ValueError, match="zero variance"):
        FastICA(2).fit(np.ones((10, 4)))
    with pytest.warns(UserWarning, match="Ignoring n_components"):
        FastICA(3, whiten=False).fit(x)


def test_bad_transform_input(rng):
    x, _, _ = planted(rng)
    with pytest.raises(NotFittedError):
        FastICA(K).transform(x)
    model = FastICA(K, random_state=0).fit(x)
    with pytest.raises(ValueError, match=f"{P - 1} features, but FastICA is expecting {P}"):
        model.transform(x[:, 1:])
    with pytest.raises(ValueError, match=f"fitted with {K}"):
        model.inverse_transform(np.ones((3, K + 1), np.float32))
    bad = x[:4].copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.transform(bad)


# ------------------------------------------------- kernels for sharded / large runs


@pytest.mark.parametrize("fun", ["logcosh", "exp", "cube"])
def test_zero_padded_rows_do_not_count(rng, fun):
    # mesh padding: zero whitened rows at the end and the true count n_valid give
    # exactly the iteration on the unpadded data (g'(0) != 0 for logcosh and exp)
    x, _, _ = planted(rng, n=500, p=20)
    white = whiten(jnp.asarray(x), K, solver="svd").white
    padded = jnp.concatenate([white, jnp.zeros((7, K), white.dtype)])
    w0 = jnp.asarray(rng.standard_normal((K, K)), jnp.float32)
    ref = fastica(white, w_init=w0, fun=fun, max_iter=2)
    ours = fastica(padded, w_init=w0, fun=fun, max_iter=2, n_valid=500)
    # float32 sums over 500 and 507 samples round differently: two steps' rounding,
    # each through the decorrelation and carried through the next step
    bound = parallel_rounding(white, w0, 2, fun)
    ours_err = np.abs(np.asarray(ours.w) - np.asarray(ref.w))
    T.assert_within(ours.w, ref.w, bound)
    if fun != "cube":       # counting the padding changes E[g'(y)] and so the step
        wrong = fastica(padded, w_init=w0, fun=fun, max_iter=2)
        # by what 7 g'(0) / 500 more of E[g'] predicts (float64), up to the same rounding
        g0 = contrast(fun, np.zeros(1))[1][0]
        predicted = parallel_iterations(white, w0, 2, fun, shift=7 * g0 / 500) \
            - parallel_iterations(white, w0, 2, fun)
        shift = np.asarray(wrong.w, np.float64) - np.asarray(ref.w, np.float64)
        T.assert_within(shift, predicted, bound)
        # which is far more than the corrected run differs (one ulp floor)
        assert np.max(np.abs(shift)) > 20 * max(np.max(ours_err), T.eps())


def test_newton_schulz_decorrelation_is_the_polar_factor(rng):
    from jaxfactor._linalg import symmetric_decorrelation

    k = 40
    # rows of very different lengths, as the un-normalised FastICA update produces
    q = np.linalg.qr(rng.standard_normal((k, k)))[0]
    w = (q + 0.3 * rng.standard_normal((k, k)) / np.sqrt(k)) * rng.uniform(0.05, 3.0, size=(k, 1))
    ref = polar(w)                                         # float64 polar factor
    eps = T.eps()
    # Rounding w to float32 moves its polar factor by polar_error(w, u |w|) (about
    # 2 u / (s_k + s_{k-1}) of it); then each method's own error: eigh works on W W^T,
    # whose rounding is amplified by 1 / s_min^2 (eigh_polar_error); Newton-Schulz stops
    # once max|X X^T - I| <= 50 eps, i.e. X = Q H with ||H - I||_2 <= k 50 eps / 2, after a
    # last step whose k-term products round by gamma(k) |X| |X^T| |X| (<= gamma(k) k).
    cast = T.polar_error(w, T.unit_roundoff() * np.abs(w))
    w32 = jnp.asarray(w, jnp.float32)
    out = np.asarray(symmetric_decorrelation(w32, "eigh"), np.float64)
    dec = eigh_polar_error(w)
    T.assert_within(out, ref, cast + dec)
    T.assert_within(out @ out.T, np.eye(k), 2 * (np.max(cast) + dec) + (np.max(cast) + dec) ** 2)
    out = np.asarray(symmetric_decorrelation(w32, "newton-schulz"), np.float64)
    stop, last = k * 50 * eps / 2, 2 * T.gamma(k) * k
    T.assert_within(out, ref, cast + stop + last)
    # the stopping test itself, on a float32 X X^T (gamma(k) |X| |X^T| off the exact one)
    T.assert_within(out @ out.T, np.eye(k), 50 * eps + T.gamma(k) * np.abs(out) @ np.abs(out.T))
    # The two decorrelations in the full fit: the same whitening and start, the same
    # number of steps, and then both within their last step (arccos(1 - tol) a row) of
    # the same fixed point; a row angle moves a row of components_ by s_1 / s_k of it.
    x, _, _ = planted(rng)
    m_eigh = FastICA(K, decorrelation="eigh", random_state=0).fit(x)
    m_ns = FastICA(K, decorrelation="newton-schulz", random_state=0).fit(x)
    assert m_ns.converged_ and m_ns.n_iter_ == m_eigh.n_iter_
    sv = np.linalg.svd(x.astype(np.float64) - x.mean(0, dtype=np.float64), compute_uv=False)
    rel = 2 * np.arccos(1 - m_eigh.tol) * sv[0] / sv[K - 1]
    T.assert_within(np.linalg.norm(m_ns.components_ - m_eigh.components_, axis=1), 0,
                    rel * np.linalg.norm(m_eigh.components_, axis=1))


def test_policies():
    from jaxfactor._policy import choose_decorrelation, choose_whiten_range
    from jaxfactor._policy import choose_whiten_solver

    assert choose_whiten_solver("auto", 10000, 512, 20) == "eigh"
    assert choose_whiten_solver("auto", 1000, 512, 20) == "svd"
    assert choose_whiten_solver("auto", 10000, 16384, 1000) == "randomized"
    assert choose_whiten_solver("auto", 10000, 512, 20, in_memory=False) == "randomized"
    assert choose_whiten_solver("eigh", 10000, 16384, 20) == "eigh"
    assert choose_whiten_range("auto", None, 10000, 16384, 100) == ("krylov", None)
    assert choose_whiten_range("auto", None, 10000, 16384, 1000) == ("subspace", 2)
    assert choose_whiten_range("krylov", 3, 10000, 16384, 1000) == ("krylov", 3)
    assert choose_decorrelation("auto", "cpu") == "eigh"
    assert choose_decorrelation("auto", "gpu") == "newton-schulz"
    assert choose_decorrelation("eigh", "gpu") == "eigh"


def test_subspace_whitening_recovers_planted_sources(rng):
    # the large-k whitening (two subspace iterations) on a wide problem: exact whitening
    # of the subspace it finds, and that subspace is the planted one
    x, s, a = planted(rng, n=600, p=4096)
    model = FastICA(K, method="subspace", n_iter=2, whiten_solver="randomized",
                    random_state=0).fit(x)
    v = error_variance(s)         # the statistical accuracy of 600 samples
    assert model.converged_ and amari_distance(model.components_, a) <= amari_bound(v, 600)
    assert 1 - match_sources(model.transform(x), s).correlations.min() <= correlation_bound(v, 600)


def test_source_input_needs_an_int_n_components(rng, tmp_path):
    from jaxfactor.sources import NpySource

    path = tmp_path / "x.npy"
    np.save(path, rng.standard_normal((50, 8)).astype(np.float32))
    with pytest.raises(ValueError, match="row source needs"):
        FastICA().fit(NpySource(path))
    with pytest.raises(ValueError, match="row source needs"):
        FastICA(3, whiten=False).fit(str(path))
