import math
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.base import clone
from sklearn.utils.estimator_checks import check_estimator

from jaxfactor._validation import ConvergenceWarning, NotFittedError
from jaxfactor import SCA
from jaxfactor.sca import choose_reduced_rank, flip_skewness, prs, sca, sca_iterate
from jaxfactor.sources import ArraySource

from . import tolerances as T
from .helpers import exact_pca, principal_angles_deg

# One data shape for (nearly) every fit: each new shape costs a JIT compilation
# of the whole SCA loop, which dominates the run time of these tests.
N, P, K = 300, 100, 3


def planted_sparse(rng, n=N, p=P, k=K, support=15, scales=(8.0, 6.0, 4.0), noise=0.2,
                   offset=2.0):
    """Rows ``offset + S diag(scales) Y^T + noise`` with ``Y`` sparse, disjoint supports."""
    y = np.zeros((p, k))
    perm = rng.permutation(p)
    for j in range(k):
        rows = perm[j * support:(j + 1) * support]
        y[rows, j] = rng.uniform(0.5, 1.5, support) * rng.choice([-1, 1], support)
    y /= np.linalg.norm(y, axis=0)
    s = rng.standard_normal((n, k)) * np.asarray(scales)[:k]
    x = offset * rng.standard_normal(p) + s @ y.T + noise * rng.standard_normal((n, p))
    return x.astype(np.float32), y


def match_columns(a, b):
    """Permutation of ``b``'s columns best matching ``a``'s by |cosine|."""
    na = a / np.maximum(np.linalg.norm(a, axis=0), 1e-30)
    nb = b / np.maximum(np.linalg.norm(b, axis=0), 1e-30)
    _, cols = linear_sum_assignment(-np.abs(na.T @ nb))
    return b[:, cols]


def polar(a):
    """The orthonormal polar factor ``U V^T`` of ``a`` (float64)."""
    u, _, vt = np.linalg.svd(np.asarray(a, np.float64), full_matrices=False)
    return u @ vt


def product_rounding(x, z):
    """Entrywise bound on ``fl((X - 1 mean^T) Z)`` in float32 with the mean folded in
    (:func:`jaxfactor.accumulate.centred_matmul`, ``transform``): ``gamma(p + 1)`` of
    ``(|X| + |mean|) |Z|`` (the ``p``-term product and the correction), plus the rounded
    mean's ``gamma(n) mean|x| |Z|``."""
    x = np.asarray(x, np.float64)
    n, p = x.shape
    mean = x.mean(axis=0)
    return (T.gamma(p + 1) * (np.abs(x) + np.abs(mean)) + T.gamma(n) * np.abs(x).mean(axis=0)) \
        @ np.abs(np.asarray(z, np.float64))


def rmatmul_rounding(x, z):
    """Entrywise bound on ``fl((X - 1 mean^T)^T Z)`` in float32 with the mean folded in
    (``_rmatmul``): ``gamma(n + 1)`` of ``(|X| + |mean|)^T |Z|`` plus the rounded mean's
    ``gamma(n) mean|x| 1^T |Z|``."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    mean = x.mean(axis=0)
    return (T.gamma(n + 1) * (np.abs(x) + np.abs(mean)).T
            + T.gamma(n) * np.abs(x).mean(axis=0)[:, None]) @ np.abs(np.asarray(z, np.float64))


def orthonormal_rotated(m, k):
    """Bound on ``||Q^T Q - I||`` for PRS's output before shrinking: the polar factor
    (Householder QR of the ``(m, k)`` argument and an SVD of the ``(k, k)`` factor,
    :func:`tests.tolerances.orthonormality_error` each, the ``Q W`` product
    ``gamma(k) ||Q||_F ||W||_F``) rotated by varimax (another ``k x k`` SVD factor and
    product), each error doubled in ``Q^T Q``."""
    return (T.orthonormality_error(m, k) + 2 * T.orthonormality_error(k, k)
            + 4 * T.gamma(k) * k)


def l1_threshold(y, budget):
    """The soft threshold ``theta`` of the Euclidean projection of ``y`` onto the L1
    ball of radius ``budget`` (``sum (|y| - theta)_+ = budget``; 0 inside)."""
    a = np.sort(np.abs(np.ravel(y)))[::-1]
    if a.sum() <= budget:
        return 0.0
    c = np.cumsum(a)
    j = np.arange(1, a.size + 1)
    rho = np.nonzero(a - (c - budget) / j > 0)[0][-1]
    return float((c[rho] - budget) / (rho + 1))


def planted_bounds(y_true, gamma, n, noise, scales):
    """Statistical bounds for SCA on :func:`planted_sparse` data: ``(cos, overlap,
    nonzero)``, the smallest cosine between a fitted loading and its planted column,
    the smallest support overlap (intersection over union) and the largest number of
    nonzero loadings, each holding with probability ``1 - 2 exp(-LAMBDA^2 / 2)``.

    Model: the loading step sees ``X_c^T Z = Y D + N^T Z`` (``D`` the components'
    singular values ``scale_j sqrt(n)``; the sources' sample correlation only rotates
    inside ``span(Y)``, which the polar factor undoes), so before the shrinkage each
    entry is the planted one plus ``N(0, s_e^2)``, ``s_e = noise / (scale_j sqrt(n))``;
    the shrinkage is the planted projection's threshold ``theta`` (which the noise moves
    by at most ``LAMBDA s_e``) and 1-Lipschitz. Support entries then move by at most
    ``2 LAMBDA s_e`` (union over them) and are missed only within that of ``theta``;
    an off-support entry enters with probability ``P(|N| > theta - LAMBDA s_e)``, their
    count bounded by a binomial tail; the cosine loses ``2 LAMBDA s_e`` per possibly
    nonzero entry against the noiseless shrunk column's norm."""
    y = np.asarray(y_true, np.float64)
    k = y.shape[1]
    theta = l1_threshold(y, gamma)
    s_e = noise / (np.min(scales[:k]) * np.sqrt(n))
    move = 2 * T.LAMBDA * s_e
    shrunk = np.sign(y) * np.maximum(np.abs(y) - theta, 0)
    support = y != 0
    off = int((~support).sum())
    # off-support entries entering: smallest m with P(Binomial(off, q) >= m) <= 2 exp(-L^2/2)
    from scipy.stats import binom, norm
    q = 2 * norm.sf(max(theta - T.LAMBDA * s_e, 0) / s_e)
    limit = 2 * np.exp(-T.LAMBDA**2 / 2)
    entering = int(np.argmax(binom.sf(np.arange(off + 1) - 1, off, q) <= limit)) - 1
    entering = max(entering, 0)
    missed = int(np.sum(support & (np.abs(y) - theta <= move)))
    n_support = int(support.sum())
    overlap = (n_support - missed) / (n_support + entering)
    per_col = support.sum(axis=0) + entering
    base = np.sum(shrunk * y, axis=0) / (np.linalg.norm(shrunk, axis=0) * np.linalg.norm(y, axis=0))
    cos = base - move * np.sqrt(per_col) / np.linalg.norm(shrunk, axis=0)
    return float(cos.min()), float(overlap), n_support + entering


def sca_step_rounding(x, y, sample_side=False):
    """Entrywise bound on how far one float32 SCA step near the fixed point ``y``
    (``(p, k)`` loadings) moves the loadings in two runs that round differently:
    ``X_c Y`` and ``X_c^T Z`` round as :func:`product_rounding` and
    :func:`rmatmul_rounding`, each polar factor's QR has a columnwise backward error of
    ``gamma(m k)`` of the column's norm (Higham, Thm 19.4), all twice (two runs), passed
    on as :func:`tests.tolerances.polar_error`; ``Z``'s change reaches ``X_c^T Z``
    through ``|X_c|^T``; varimax's rotation, the flip and the L1 projection do not
    amplify (orthogonal, exact, nonexpansive). With ``sample_side``, also the scores
    side's ``(n, k)`` bound for ``Z``."""
    x = np.asarray(x, np.float64)
    n, p = x.shape
    xc = x - x.mean(axis=0)
    y = np.asarray(y, np.float64)
    k = y.shape[1]
    xy = xc @ y
    z = polar(xy)
    a = xc.T @ z
    qr_z = T.gamma(n * k) * np.linalg.norm(xy, axis=0)
    qr_y = T.gamma(p * k) * np.linalg.norm(a, axis=0)
    dz = T.polar_error(xy, 2 * (product_rounding(x, y) + qr_z))
    dy = T.polar_error(a, 2 * (rmatmul_rounding(x, z) + qr_y) + np.abs(xc).T @ dz)
    return (dy, dz) if sample_side else dy


def sca_fixed_point_error(x, y, tol):
    """Entrywise bound on how far two converged SCA runs on the same data (sums in
    different orders) end apart: each stopped with no entry moving by more than ``tol``
    and is then within ``tol`` of the fixed point (a contraction of at most 1/2 a step:
    the alternation is a subspace iteration, rate about ``(s_{k+1} / s_k)^2``), and the
    fixed point itself moves by twice one step's rounding (:func:`sca_step_rounding`)
    under the same contraction."""
    return float(2 * tol + 2 * np.max(sca_step_rounding(x, y)))


def sca_comparison_bounds(x, y, tol, sketch_error=None):
    """Bounds on how far two converged SCA runs on the same data ``x`` (true rows), with
    sums in different orders, end apart; ``y`` is one run's ``(p, k)`` loadings.

    Each run is within ``tol`` an entry of the fixed point (contraction at most 1/2) and
    moves it by twice its step's rounding (:func:`sca_step_rounding`). The reduced
    variant iterates on ``(X_c + E) P_V``, ``V`` its sketch's basis, ``E`` the
    Rayleigh-Ritz backward error (``sketch_error``: the two runs' summed): each basis
    holds the top-``k`` right singular subspace up to ``sin <=``
    :func:`tests.tolerances.normal_operator_error` over ``s_k^2 - s_{k+1}^2``
    (Davis-Kahan for the range finder), but the two may differ anywhere in the noise
    directions (``s <= s_{k+1}``: the Krylov steps do not damp their rounding there),
    which the two sides see through ``||U_noise^T Z||`` and ``||V_noise^T Y||``; that
    change passes through both polar steps (``sqrt(2) / s_k``, Li), twice for the
    contraction.

    Returns a dict: ``y`` and ``z`` entrywise bounds on the loadings and scores, ``ratio``
    on the explained variance ratio (each run's float32 captured / total, and the
    loadings' change through ``d ratio / dY <= 2 s_1^2 / (s_min(Y) ||X_c||_F^2)``), ``b``
    on an entry of ``B = Z^T X_c Y``, ``scores`` entrywise on ``transform``, and
    ``ratio_rounding``, one run's relative float32 error of its ratio."""
    x = np.asarray(x, np.float64)
    n, p = x.shape
    y = np.asarray(y, np.float64)
    k = y.shape[1]
    mean = x.mean(axis=0)
    xc = x - mean
    xy = xc @ y
    z = polar(xy)
    uu, sv, vvt = np.linalg.svd(xc, full_matrices=False)
    s1 = sv[0]
    s_z = np.linalg.svd(xy, compute_uv=False)
    s_a = np.linalg.svd(xc.T @ z, compute_uv=False)
    dy, dz = sca_step_rounding(x, y, sample_side=True)
    fy = np.sqrt(p * k) * (2 * tol + 2 * np.max(dy))            # Frobenius, tol and rounding
    fz = np.sqrt(n * k) * (2 * tol + 2 * np.max(dz))
    d_y = d_z = 0.0
    if sketch_error is not None:
        e = sketch_error
        sin = T.normal_operator_error(x) / T.eigengap(sv**2, k)   # each range finder's tilt
        d_a = (2 * sv[k] * np.linalg.norm(uu[:, k:].T @ z) + (2 * s1 * sin + e) * np.sqrt(k))
        d_xy = (2 * sv[k] * np.linalg.norm(vvt[k:] @ y) + (2 * s1 * sin + e) * np.linalg.norm(y))
        d_z = 2 * np.sqrt(2) * d_xy / s_z[-1]
        d_y = 2 * np.sqrt(2) * (d_a + s1 * d_z / 2) / s_a[-1]
    by = 2 * tol + 2 * np.max(dy) + d_y
    bz = 2 * tol + 2 * np.max(dz) + d_z
    fy, fz = fy + d_y, fz + d_z
    total = np.sum(xc**2)
    q = np.linalg.qr(y)[0]
    fold = T.gamma(p + 1) * (np.linalg.norm(x) + np.sqrt(n) * np.linalg.norm(mean))
    rel = (2 * fold * np.sqrt(k) / np.linalg.norm(xc @ q) + T.gamma(n) + T.gamma(n * p)
           + T.orthonormality_error(p, k) + 2 * T.unit_roundoff())
    ratio = np.sum((xc @ q) ** 2) / total
    sens = 2 * s1**2 * fy / (np.linalg.svd(y, compute_uv=False)[-1] * total)
    t_err = product_rounding(x, y)
    b = (fz * s_z[0] + s1 * fy
         + 2 * (T.gamma(n) * np.sqrt(k) * np.linalg.norm(xy) + np.linalg.norm(t_err)))
    scores = np.abs(xc) @ np.full(y.shape, by) + 2 * T.gamma(n) * np.abs(x).mean(0) @ np.abs(y) + 2 * t_err
    return {"y": float(by), "z": float(bz), "ratio": float(2 * rel * ratio + sens), "b": float(b),
            "scores": scores, "ratio_rounding": float(rel)}


# About 60 s of CPU, nearly all of it XLA compiling the SCA loop for each of the
# dozen data shapes the checks use; the default suite checks the contract on one
# shape below (test_transformer_contract_on_one_shape).
@pytest.mark.slow
def test_check_estimator():
    check_estimator(SCA())


def test_transformer_contract_on_one_shape(rng):
    x, _ = planted_sparse(rng)
    model = SCA(3, random_state=0)
    assert clone(model).get_params() == model.get_params()
    scores = model.fit_transform(x)
    # the kernel's X_c Y and transform's (X - mean_) Y: two float32 products, the mean
    # folded in (product_rounding each)
    two = 2 * product_rounding(x, model.components_.T)
    T.assert_within(scores, model.transform(x), two)
    assert scores.shape == (N, K) and scores.dtype == np.float32
    assert model.n_features_in_ == P and model.components_.shape == (K, P)
    assert model.get_feature_names_out().tolist() == ["sca0", "sca1", "sca2"]
    # rows are transformed independently of one another (up to how the kernels block)
    T.assert_within(model.transform(x[::-1])[::-1], scores, two)
    refit = SCA(3, random_state=0).fit(x)
    np.testing.assert_array_equal(refit.components_, model.components_)


def test_planted_sparse_loadings_recovered(rng):
    x, y_true = planted_sparse(rng)
    gamma = 0.95 * np.abs(y_true).sum()
    model = SCA(3, gamma=gamma).fit(x)
    assert model.converged_ and model.n_iter_ < 200
    # the planted loadings are found to the statistical accuracy of N samples
    cos_bound, overlap_bound, nonzero = planted_bounds(y_true, gamma, N, 0.2, (8.0, 6.0, 4.0))
    y = match_columns(y_true, model.components_.T)
    true_support, support = y_true != 0, y != 0
    overlap = (true_support & support).sum() / (true_support | support).sum()
    assert overlap >= overlap_bound, overlap
    cos = np.abs(np.sum(y * y_true, axis=0)) / np.linalg.norm(y, axis=0)
    assert cos.min() >= cos_bound, cos
    # The budget is met (it binds: the planted L1 norm is larger): the float32 threshold
    # is a mean over the s entries kept, which round by gamma(P K) of their sum of
    # absolute values (at most sqrt(s K), Cauchy-Schwarz on unit columns), and each kept
    # entry |q| - theta by u, the test's float64 sum exactly.
    kept = np.count_nonzero(model.components_)
    l1 = np.abs(model.components_.astype(np.float64)).sum()
    assert abs(l1 - gamma) <= (T.gamma(P * K) + 3 * T.unit_roundoff()) * np.sqrt(kept * K)
    assert model.sparsity_ == np.mean(model.components_ == 0)
    assert model.sparsity_ >= 1 - nonzero / (P * K)
    # canonical form: positive sum of cubes, columns ordered by explained variance, which
    # the library measured in float32: ||X_c y_j||^2 off by 2 ||X_c y_j|| ||dX_c y_j|| plus
    # gamma(N) of it (product_rounding for dX_c y), so neighbours may swap within that
    assert np.all(np.sum(model.components_ ** 3, axis=1) > 0)
    xc = x.astype(np.float64) - x.mean(axis=0)
    xy = xc @ model.components_.T
    var = np.sum(xy ** 2, axis=0)
    dvar = 2 * np.linalg.norm(xy, axis=0) * np.linalg.norm(product_rounding(x, model.components_.T),
                                                           axis=0) + T.gamma(N) * var
    assert np.all(np.diff(var) <= dvar[:-1] + dvar[1:])


def test_inactive_gamma_spans_pca_subspace(rng):
    x, _ = planted_sparse(rng, noise=0.5)
    k = K
    with pytest.warns(UserWarning, match="inactive"):
        model = SCA(k, gamma=2 * k * math.sqrt(P)).fit(x)
    vt, ev, mean = exact_pca(x)
    x64 = x.astype(np.float64)
    s = np.sqrt(ev * (x.shape[0] - 1))
    y = model.components_.T.astype(np.float64)
    # Without shrinkage the loadings span X_c^T Z, the top-k right singular subspace,
    # up to rounding: the start's SVD backward error (plus the rounded mean) and the
    # loop's two products (both runs' worth: product_rounding, rmatmul_rounding), over
    # the gap s_k - s_{k+1} (Wedin)
    e = (T.svd_error(x64 - mean) + T.gamma(N) * np.linalg.norm(x64)
         + 2 * np.linalg.norm(product_rounding(x, y)) + 2 * np.linalg.norm(rmatmul_rounding(x, polar(x64 @ y))))
    angle = T.angle_bound_deg(e, T.eigengap(s, k))
    assert principal_angles_deg(model.components_, vt[:k]).max() <= angle
    # rotated PCA: orthonormal loadings, no zeros, PCA's cumulative explained variance
    T.assert_within(model.components_ @ model.components_.T, np.eye(k), orthonormal_rotated(P, k))
    assert model.sparsity_ == 0.0
    # captured / total in float32: the folded product relative to ||X_c Q|| (twice, a
    # square), gamma(N) for its sum, the QR basis' orthonormality, gamma(N P) and 2 u
    # for the total; the subspace's angle costs at most sin^2 of it times s_1^2 k
    captured = np.sum(s[:k] ** 2)
    rel = (2 * T.gamma(P + 1) * (np.linalg.norm(x64) + np.sqrt(N) * np.linalg.norm(mean)) * np.sqrt(k)
           / np.sqrt(captured) + T.gamma(N) + T.orthonormality_error(P, k) + T.gamma(N * P)
           + 2 * T.unit_roundoff() + np.sin(np.radians(angle)) ** 2 * s[0] ** 2 * k / captured)
    T.assert_within(model.explained_variance_ratio_[-1], ev[:k].sum() / ev.sum(),
                    rel * ev[:k].sum() / ev.sum())
    T.assert_within(model.mean_, mean, T.gamma(N) * np.abs(x64).mean(0))
    # ||B||_F is the norm of the top-k singular values: B = Z^T X_c Y in float32
    # (gamma(N) |Z|^T |X_c Y| <= gamma(N) sqrt(k) ||X_c Y||, the scores' product_rounding),
    # Z and Y orthonormal to orthonormal_rotated, their subspaces' angles squared
    ortho = orthonormal_rotated(N, k) + orthonormal_rotated(P, k)
    d_b = T.gamma(N) * np.sqrt(k) * np.linalg.norm(s[:k]) + np.linalg.norm(product_rounding(x, y)) \
        + np.linalg.norm(s[:k]) * (ortho + 2 * np.sin(np.radians(angle)) ** 2)
    T.assert_within(model.objective_, np.linalg.norm(s[:k]), d_b)


def test_objective_is_monotone(rng):
    x, y_true = planted_sparse(rng, noise=0.6)
    xj = jnp.asarray(x)
    mean = jnp.mean(xj, axis=0)
    y0 = jnp.asarray(exact_pca(x)[0][:3].T, jnp.float32)
    gamma = float(0.7 * np.abs(y_true).sum())
    runs = [sca_iterate(xj, mean, y0, gamma, tol=0.0, max_iter=m, rotate="varimax")
            for m in range(1, 12)]
    objectives = [float(r.objective) for r in runs]
    # Monotone in exact arithmetic; in float32 each objective ||Z^T X_c Y|| is off by
    # gamma(N) sqrt(K) ||X_c Y|| + the scores' product_rounding, and each step's own
    # rounding (sca_step_rounding, one run: half of it) moves the next iterate, so its
    # objective, by at most ||X_c||_2 of it
    x64 = x.astype(np.float64)
    s1 = np.linalg.norm(x64 - x64.mean(0), 2)

    def err(r):
        y = np.asarray(r.loadings, np.float64)
        return (T.gamma(N) * np.sqrt(K) * np.linalg.norm(np.asarray(r.scores))
                + np.linalg.norm(product_rounding(x, y)))

    errs = [err(r) for r in runs]
    steps = np.diff(objectives)
    slack = [errs[i] + errs[i + 1] + s1 * np.linalg.norm(sca_step_rounding(x, np.asarray(runs[i + 1].loadings))) / 2
             for i in range(len(steps))]
    assert np.all(steps >= -np.asarray(slack)), (objectives, slack)


def test_explained_variance_and_inverse_transform_are_projections(rng):
    x, y_true = planted_sparse(rng, support=12)
    model = SCA(3, gamma=0.8 * np.abs(y_true).sum(), random_state=1).fit(x)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=0)
    xc = x64 - mean
    y = model.components_.T.astype(np.float64)
    total = np.sum(xc ** 2)
    u = T.unit_roundoff()
    fold = T.gamma(P + 1) * (np.linalg.norm(x64) + np.sqrt(N) * np.linalg.norm(mean))
    for j in range(1, 4):
        q = np.linalg.qr(y[:, :j])[0]
        share = np.sum((xc @ q) ** 2) / total
        # captured_j / total in float32 (as in test_inactive_gamma_spans_pca_subspace)
        rel = (2 * fold * np.sqrt(j) / np.sqrt(share * total) + T.gamma(N)
               + T.orthonormality_error(P, j) + T.gamma(N * P) + 2 * u)
        T.assert_within(model.explained_variance_ratio_[j - 1], share, rel * share)
    scores = model.transform(x)
    t_err = product_rounding(x, y)
    T.assert_within(scores, xc @ y, t_err)
    # inverse_transform: scores pinv(Y) (the pseudo-inverse cast to float32, a K-term
    # product) + mean_: the scores' error through |pinv|, the product's gamma(K + 1) and
    # the cast's u on |scores| |pinv|, the mean's gamma(N) mean|x|
    back = model.inverse_transform(scores).astype(np.float64) - mean
    q = np.linalg.qr(y)[0]
    proj = xc @ q @ q.T
    pinv = np.abs(np.linalg.pinv(y))
    b_err = (t_err + (T.gamma(K + 1) + u) * np.abs(scores)) @ pinv + T.gamma(N) * np.abs(x64).mean(0)
    T.assert_within(back, proj, b_err)
    rel = (2 * fold * np.sqrt(K) / np.linalg.norm(proj) + T.gamma(N) + T.orthonormality_error(P, K)
           + T.gamma(N * P) + 2 * u)
    T.assert_within(np.sum(back ** 2) / total, model.explained_variance_ratio_[-1],
                    (rel + 2 * np.linalg.norm(b_err) / np.linalg.norm(proj) + np.linalg.norm(b_err) ** 2
                     / np.linalg.norm(proj) ** 2) * model.explained_variance_ratio_[-1])
    # B = Z^T X_c Y with orthonormal Z: ||B||_F <= ||Z||_2 ||X_c Y||_F, Z orthonormal to
    # orthonormal_rotated, the kernel's scores and B's product off by their rounding
    scores_norm = np.linalg.norm(scores)
    assert model.objective_ <= scores_norm * (1 + orthonormal_rotated(N, K) + T.gamma(N) * np.sqrt(K)) \
        + 2 * np.linalg.norm(t_err)
    assert model.B_.shape == (3, 3)


def test_reduced_space_variant_matches_full_on_low_rank_data(rng):
    x, y_true = planted_sparse(rng, noise=0.05)
    gamma = 0.95 * np.abs(y_true).sum()
    tol = 1e-5
    full = SCA(3, gamma=gamma, tol=tol).fit(x)
    reduced = SCA(3, gamma=gamma, tol=tol, reduced_rank=10, svd_solver="randomized").fit(x)
    assert reduced.converged_
    # Nearly rank 3: the rank-10 problem is almost the same problem. Its data are
    # (X_c + E) P_V, V the sketch's basis, E its Rayleigh-Ritz backward error (e): V holds
    # the top-k right singular subspace up to sin <= normal_operator_error / (s_k^2 -
    # s_{k+1}^2) (Davis-Kahan for the range finder), so X_c - X_r is at most s_{k+1} in
    # the noise directions plus s_1 sin + e, and a solution (Z, Y) sees the former only
    # through ||U_noise^T Z|| and ||V_noise^T Y||.
    from jaxfactor.randomized import range_params

    x64 = x.astype(np.float64)
    xc = x64 - x64.mean(0)
    u_, sv, vt_ = np.linalg.svd(xc, full_matrices=False)
    e_r = T.rayleigh_ritz_error(x, range_params(10, N, P).basis_size) + T.gamma(N) * np.linalg.norm(x64)
    signal = sv[0] * T.normal_operator_error(x) / T.eigengap(sv**2, K) + e_r

    def seen(model):
        """(||Z^T (X_c - X_r) Y||_F, ||(X_c - X_r)^T Z||_F, ||(X_c - X_r) Y||_F) bounds."""
        y = model.components_.T.astype(np.float64)
        z = polar(xc @ y)
        noise_z, noise_y = np.linalg.norm(u_[:, K:].T @ z, 2), np.linalg.norm(vt_[K:] @ y)
        return (sv[K] * noise_z * noise_y + signal * np.linalg.norm(y),
                sv[K] * noise_z * np.sqrt(K) + signal * np.sqrt(K),
                sv[K] * noise_y + signal * np.linalg.norm(y), y)

    d_full, dz_f, dy_f, y_f = seen(full)
    d_red = seen(reduced)[0]
    # both (local) maximisers of ||Z^T X Y||_F for their data, each within its stopping
    # tolerance (tol an entry: s_1 tol (sqrt(N K) + sqrt(P K)) of objective)
    slack = d_full + d_red + 2 * sv[0] * tol * (np.sqrt(N * K) + np.sqrt(P * K))
    assert reduced.objective_ >= full.objective_ - slack
    # the loadings: the data's change enters both polar steps (sqrt(2) / s_k, Li), the
    # sample side's through X_c^T (s_1); twice for the contraction (at most 1/2 a step),
    # plus both stopping tolerances
    s_a = np.linalg.svd(xc.T @ polar(xc @ y_f), compute_uv=False)
    s_z = np.linalg.svd(xc @ y_f, compute_uv=False)
    d_y = 2 * np.sqrt(2) * (dz_f + sv[0] * np.sqrt(2) * dy_f / s_z[-1]) / s_a[-1] + 2 * tol * np.sqrt(P * K)
    s_y = np.linalg.svd(y_f, compute_uv=False)[-1]
    assert principal_angles_deg(reduced.components_, full.components_).max() \
        <= np.degrees(np.arcsin(min(1.0, d_y / s_y)))
    # an entry in one support and not the other is at most the loadings' change from zero
    mismatch = (reduced.components_ != 0) != (full.components_ != 0)
    assert np.all(np.abs(np.where(mismatch, reduced.components_ + full.components_, 0)) <= d_y)


@pytest.mark.parametrize("start, acceleration", [("previous", "auto"), ("converged", "none"),
                                                 ("converged", "auto")])
def test_varimax_start_previous_reaches_a_nearby_fixed_point(rng, start, acceleration):
    x, y_true = planted_sparse(rng)
    gamma = 0.95 * np.abs(y_true).sum()
    restart = SCA(3, gamma=gamma).fit(x)
    follow = SCA(3, gamma=gamma, varimax_start=start, acceleration=acceleration).fit(x)
    assert follow.converged_
    assert follow.acceleration_ == ("anderson" if (start, acceleration) == ("converged", "auto")
                                    else "none")
    # Both stopped with no entry of Z or Y moving by more than tol, so each is within tol
    # an entry of the fixed point (contraction at most 1/2), which the warm varimax, once
    # the loadings stand still, shares with the restarted one, plus each run's rounding
    # there (sca_fixed_point_error). ||B||_F = ||Z^T X_c Y||_F moves by at most s_1 ||dY||_F,
    # and in Z only at second order (Z = polar(X_c Y) maximises it over orthonormal Z).
    x64 = x.astype(np.float64)
    s1 = np.linalg.norm(x64 - x64.mean(0), 2)
    d = sca_fixed_point_error(x, restart.components_.T, restart.tol)
    T.assert_within(follow.objective_, restart.objective_,
                    s1 * (d * np.sqrt(P * K) + (d * np.sqrt(N * K)) ** 2))
    mismatch = (follow.components_ != 0) != (restart.components_ != 0)
    assert np.all(np.abs(np.where(mismatch, follow.components_ + restart.components_, 0)) <= d)


def test_warm_loop_skipping_the_sample_rotation_keeps_the_iterates(rng):
    # With varimax started from the previous loadings, the loop leaves the
    # sample side unrotated until the end; the loadings must be those of the
    # plain alternation that rotates Z every time (written out here with prs).
    # Unstructured data with a decaying spectrum, so that varimax is far from
    # converged within the few warm steps of each call.
    mix = rng.standard_normal((20, P)) * (np.arange(1, 21) ** -0.8)[:, None]
    x = (rng.laplace(size=(N, 20)) @ mix).astype(np.float32)
    gamma = 0.5 * math.sqrt(P * K)
    xc = jnp.asarray(x - x.mean(axis=0))
    y0 = jnp.asarray(exact_pca(x)[0][:K].T, jnp.float32)

    def ordered(a, product):
        return a[:, np.argsort(-np.sum(np.asarray(product) ** 2, axis=0), kind="stable")]

    z = ordered(prs(xc @ y0), xc.T @ prs(xc @ y0))
    y = ordered(prs(xc.T @ z, gamma), xc @ prs(xc.T @ z, gamma))
    for _ in range(3):
        zn = prs(xc @ y, previous=z)
        z = ordered(zn, xc.T @ zn)
        yn = prs(xc.T @ z, gamma, previous=y)
        y = ordered(yn, xc @ yn)
    res = sca_iterate(jnp.asarray(x), jnp.asarray(x.mean(axis=0)), y0, gamma, tol=0.0,
                      max_iter=4, varimax_start="previous")
    assert int(res.n_iter) == 4
    # the same iterates computed in two orders: each of the 4 steps' rounding
    # (sca_step_rounding, both computations), carried on by the later steps at a
    # contraction of at most 1/2 (so at most twice one step's), the same fixed number of
    # varimax steps in both
    bound = 2 * np.max(sca_step_rounding(x, np.asarray(res.loadings)))
    T.assert_within(res.loadings, y, bound)


def test_prs_block_and_flip(rng):
    a = rng.standard_normal((50, 4)).astype(np.float32)
    q = np.asarray(prs(jnp.asarray(a)))
    T.assert_within(q.T @ q, np.eye(4), orthonormal_rotated(50, 4))
    assert np.all(np.sum(q ** 3, axis=0) >= 0)
    # rotation only: same span as the polar factor, up to the QR's backward error
    # (svd_error) against the smallest singular value (Wedin, gap s_k to 0)
    sv = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    assert principal_angles_deg(q.T, polar(a).T).max() <= T.angle_bound_deg(T.svd_error(a), sv[-1])
    # the L1 projection: a float32 threshold over the kept entries (see
    # test_planted_sparse_loadings_recovered)
    shrunk = np.asarray(prs(jnp.asarray(a), 3.0))
    kept = np.count_nonzero(shrunk)
    assert abs(np.abs(shrunk.astype(np.float64)).sum() - 3.0) \
        <= (T.gamma(50 * 4) + 3 * T.unit_roundoff()) * np.sqrt(kept * 4)
    # flipping multiplies by -1: exact
    np.testing.assert_array_equal(np.asarray(flip_skewness(jnp.asarray(-q))), q)


def test_deterministic_and_clone(rng):
    x, _ = planted_sparse(rng, support=10)
    a = SCA(3, random_state=5).fit(x)
    b = clone(a).fit(x)
    np.testing.assert_array_equal(a.components_, b.components_)
    np.testing.assert_array_equal(a.B_, b.B_)
    assert a.n_iter_ == b.n_iter_ and a.gamma_ == math.sqrt(P * 3)    # the same expression


def test_kernel_function_matches_estimator(rng):
    x, _ = planted_sparse(rng, support=8)
    import jax

    model = SCA(3, gamma=6.0).fit(x)
    res = sca(jnp.asarray(x), 3, key=jax.random.key(0), gamma=6.0,
              acceleration=model.acceleration_, rotation_precision=model.rotation_precision_)
    # the estimator runs this kernel with these arguments: the same program, bit for bit
    np.testing.assert_array_equal(np.asarray(res.loadings).T, model.components_)
    assert int(res.n_iter) == model.n_iter_ and bool(res.converged)


def test_bad_input(rng):
    x, _ = planted_sparse(rng, support=5)
    for gamma in (0, -1.0, float("nan"), float("inf"), "3", True):
        with pytest.raises(ValueError, match="gamma"):
            SCA(2, gamma=gamma).fit(x)
    with pytest.warns(UserWarning, match="cannot meet"):
        SCA(3, gamma=2.5).fit(x)
    bad = x.copy()
    bad[3, 4] = np.nan
    bad[7, 1] = np.inf
    with pytest.raises(ValueError, match="1 NaN and 1 inf"):
        SCA(2).fit(bad)
    ints = np.round(4 * x).astype(np.int64)        # converted, as scikit-learn does
    np.testing.assert_array_equal(SCA(2).fit(ints).components_,
                                  SCA(2).fit(ints.astype(np.float32)).components_)
    with pytest.raises(ValueError, match="2D"):
        SCA(2).fit(x[0])
    with pytest.raises(ValueError, match="n_components=101"):
        SCA(101).fit(x)
    with pytest.raises(ValueError, match="rotate"):
        SCA(2, rotate="quartimax").fit(x)
    with pytest.raises(ValueError, match="reduced_rank"):
        SCA(3, reduced_rank=2).fit(x)
    for kw in ({"max_iter": 0}, {"tol": -1.0}, {"svd_solver": "arpack"},
               {"varimax_start": "random"}, {"stop_rule": "mean"},
               {"rotation_precision": "bfloat16"}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            SCA(2, **kw).fit(x)
    with pytest.raises(NotFittedError):
        SCA(2).transform(x)
    model = SCA(3).fit(x)
    with pytest.raises(ValueError, match="features"):
        model.transform(x[:, :5])
    with pytest.raises(ValueError, match="components"):
        model.inverse_transform(x[:, :4])
    with pytest.warns(ConvergenceWarning, match="SCA did not converge after 1 iterations"):
        SCA(3, max_iter=1).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SCA(3).fit(x)  # default gamma is in range and converges: no warning


def test_mean_padding_rows_change_nothing(rng):
    # the single-device form of row sharding: pad with mean rows, pass the true count
    import jax

    x, y_true = planted_sparse(rng)
    gamma = 0.9 * np.abs(y_true).sum()
    mean32 = x.mean(0)
    padded = np.concatenate([x, np.broadcast_to(mean32, (4, P))]).astype(np.float32)
    # (the reduced variant is checked the same way on a real mesh in test_sca_scale.py)
    plain = sca(jnp.asarray(x), 3, key=jax.random.key(0), gamma=gamma)
    pad = sca(jnp.asarray(padded), 3, key=jax.random.key(0), gamma=gamma, n_valid=N)
    # two converged runs whose sums differ in order (and by rows of ~zero centred value)
    b = sca_comparison_bounds(x, plain.loadings, 1e-5)
    T.assert_within(pad.loadings, plain.loadings, b["y"])
    T.assert_within(pad.explained_variance_ratio, plain.explained_variance_ratio, b["ratio"])
    # the padding rows' scores (pad - mean) Y: the float32 means (numpy's here, the
    # kernel's there: gamma(N) mean|x| each) and the folded product of a mean row
    x64 = x.astype(np.float64)
    pad_bound = (2 * T.gamma(N + 4) * np.abs(x64).mean(0) + 2 * T.gamma(P + 1) * np.abs(x64.mean(0))) \
        @ np.abs(np.asarray(pad.loadings, np.float64))
    T.assert_within(np.abs(np.asarray(pad.scores)[N:]).max(axis=0), 0, pad_bound)


def test_row_source_fit_matches_in_memory_reduced_fit(rng):
    from jaxfactor.randomized import range_params

    x, y_true = planted_sparse(rng)
    gamma = 0.9 * np.abs(y_true).sum()
    mem = SCA(3, gamma=gamma, reduced_rank=10).fit(x)
    src = SCA(3, gamma=gamma, reduced_rank=10, block_rows=64).fit(ArraySource(x))
    assert src.reduced_rank_ == 10 and src.n_features_in_ == P
    assert mem.converged_ and src.converged_
    # Both iterate on a rank-10 randomized SVD of the same data with the same sketch,
    # streamed (tall-skinny QR over blocks of 64 rows) or not (sca_comparison_bounds)
    basis = range_params(10, N, P).basis_size
    e = (T.rayleigh_ritz_error(x, basis) + T.rayleigh_ritz_error(x, basis, block_rows=64)
         + 2 * T.gamma(N) * np.linalg.norm(x.astype(np.float64)))
    b = sca_comparison_bounds(x, mem.components_.T, mem.tol, sketch_error=e)
    T.assert_within(src.components_, mem.components_, b["y"])
    T.assert_within(src.explained_variance_ratio_, mem.explained_variance_ratio_, b["ratio"])
    T.assert_within(src.B_, mem.B_, b["b"])
    T.assert_within(src.transform(x), mem.transform(x), b["scores"])


def test_reduced_rank_policy():
    assert choose_reduced_rank("auto", 300, 100, 3) is None           # small: iterate on X
    assert choose_reduced_rank("auto", 10000, 16384, 50) == 110       # large: rank 2k + 10
    assert choose_reduced_rank("auto", 10000, 16384, 5000) == 10000   # capped at min(n, p)
    assert choose_reduced_rank(None, 10000, 16384, 50) is None
    assert choose_reduced_rank(7, 10000, 16384, 5) == 7
    # row sources always use the reduced variant
    assert choose_reduced_rank(None, 300, 100, 3, in_memory=False) == 16
    assert choose_reduced_rank(7, 300, 100, 3, in_memory=False) == 7


# ------------------------------------------- epca's varimax: float64 decisions, float32 steps

def _planted_rotated(rng, m, k, support):
    """An orthonormal ``(m, k)`` matrix whose varimax rotation is a planted sparse basis
    (disjoint supports plus a little noise), rotated away from it by a random rotation."""
    basis = np.zeros((m, k))
    for j in range(k):
        basis[j * support:(j + 1) * support, j] = rng.uniform(0.5, 1.5, support)
    q, _ = np.linalg.qr(basis + 0.05 * rng.standard_normal((m, k)))
    rot, _ = np.linalg.qr(rng.standard_normal((k, k)))
    return q @ rot


def test_varimax_epca_takes_the_float64_decisions(rng):
    import jax

    from jaxfactor._linalg import polar_small_svd, small_svd, varimax, varimax_epca

    m, k = 3000, 6
    a = _planted_rotated(rng, m, k, support=200)
    a32 = a.astype(np.float32)
    tol = 1e-5 / math.sqrt(m)                 # epca's tolerance: below float32's resolution
    with jax.enable_x64(True):
        ref = varimax(jnp.asarray(a32, jnp.float64), tol, 1000)          # float64 throughout
        ref_steps, ref_t = int(ref.n_iter), np.asarray(ref.rotation)
        # float64 input: the float64 iteration itself (QR-algorithm SVDs: rounding apart)
        same = varimax_epca(jnp.asarray(a32, jnp.float64), tol, 1000)
        assert int(same.n_iter) == ref_steps and same.rotation.dtype == jnp.float64
        bound64 = ref_steps * math.sqrt(k) * T.gamma(m, np.float64)
        assert np.max(np.abs(np.asarray(same.rotation) - ref_t)) <= bound64
    got = varimax_epca(jnp.asarray(a32), tol, 1000)
    # the same stopping step, so the same rotation up to the float32 rounding of the early
    # steps' rotations (sqrt(k) gamma(m) a step, accumulated at most linearly)
    assert int(got.n_iter) == ref_steps and bool(got.converged)
    bound = ref_steps * math.sqrt(k) * T.gamma(m)
    assert np.max(np.abs(np.asarray(got.rotation) - ref_t)) <= bound
    assert got.rotated.dtype == jnp.float32
    assert np.max(np.abs(np.asarray(got.rotated) - a32 @ ref_t)) <= bound + k * T.gamma(k)
    # a cap is a cap, in float32 steps as in float64 ones
    for cap in (1, 2, 5):
        assert int(varimax_epca(jnp.asarray(a32), tol, cap).n_iter) == min(cap, ref_steps)
    # the QR-algorithm SVD and polar factor against LAPACK's
    g = rng.standard_normal((k, k))
    u, s, vt = small_svd(jnp.asarray(g))
    assert np.max(np.abs(np.asarray(s) - np.linalg.svd(g, compute_uv=False))) \
        <= 4 * k * T.eps() * np.linalg.norm(g, 2)
    np.testing.assert_allclose(np.asarray(u * s @ vt), g,
                               atol=4 * k * T.eps() * np.linalg.norm(g, 2))
    q = np.asarray(polar_small_svd(jnp.asarray(a32)))
    assert np.linalg.norm(q.T @ q - np.eye(k)) <= T.orthonormality_error(m, k)
