"""SCA against epca's algorithm: an independent NumPy float64 implementation of R
``epca::sca`` (v1.1.0), step by step, checked against epca itself where R and epca are
installed, and jaxfactor's default SCA checked against it.

The reference is written from epca's algorithm (Chen & Rohe, "A new basis for sparse
PCA"; the package's ``sca`` -> ``sma`` -> ``prs`` -> ``rotation`` / ``varimax`` /
``shrinkage`` / ``distance``), not from jaxfactor. Every step follows epca's choices:

* start: the top-``k`` singular vectors of the centred data (epca: ``irlba`` with
  ``tol = 1e-10``; the varimax below is equivariant under column sign changes of its
  input, so the SVD's signs do not matter);
* ``Z <- PRS(X Y)``, then ``Y <- PRS(X^T Z)``, each PRS: the orthogonal polar factor
  (SVD), varimax from the identity with relative tolerance ``epsilon / sqrt(m)`` on
  the sum of the singular values (``m`` the rows of the rotated matrix; at least two
  steps, the first compares with ``d = 0``), columns flipped to a positive sum of
  cubes, one global soft threshold found by bisection to ``1e-11`` so that the entrywise
  L1 norm is at most the budget (``k sqrt(n)`` on the sample side, never binding;
  ``gamma`` on the loadings), columns ordered by decreasing ``||X^T z||^2`` /
  ``||X y||^2``;
* stop when, for both ``Z`` and ``Y``, the sum over Hungarian-matched columns of
  the largest absolute entry difference of the unit-normalised columns is below
  ``epsilon`` (``distance(., ., "maximum")``), or after ``max_iter`` iterations;
* ``B = Z^T X Y``, scores ``X Y``, cumulative PVE ``||X P_j||_F^2 / ||X||_F^2`` with
  ``P_j`` the projector onto the first ``j`` loadings.

Agreement measures (the issue's): largest principal angle between the loading
subspaces, Hungarian-matched column cosines, identical zero pattern, ``||B||`` and
cumulative PVE. ``benchmarks/bench_sca.py`` imports the reference and the measures.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment


class EpcaResult(NamedTuple):
    loadings: np.ndarray      # (p, k)
    z: np.ndarray             # (n, k)
    b: np.ndarray             # (k, k)
    cpve: np.ndarray          # (k,)
    n_iter: int
    converged: bool
    varimax_steps: int        # total varimax steps over all PRS calls


def polar(a):
    """``U V^T`` of the thin SVD ``a = U S V^T``."""
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    return u @ vt


def varimax(x, eps, maxit=1000):
    """epca's ``varimax`` (R's ``stats::varimax`` without normalisation):
    returns ``(x T, steps)``."""
    nc = x.shape[1]
    if nc < 2:
        return x, 1
    tt = np.eye(nc)
    d = 0.0
    steps = 0
    for steps in range(1, maxit + 1):
        z = x @ tt
        cm2 = np.mean(z * z, axis=0)
        b = x.T @ (z ** 3 - z * cm2[None, :])
        u, s, vt = np.linalg.svd(b)
        tt = u @ vt
        dpast, d = d, float(np.sum(s))
        if d < dpast * (1 + eps):
            break
    return x @ tt, steps


def shrinkage(x, gamma, epsilon=1e-11):
    """epca's soft-threshold ``shrinkage``: ``x`` when ``||x||_1 <= gamma``, else the
    soft threshold at the bisection's last midpoint (interval below ``epsilon``)."""
    if np.sum(np.abs(x)) <= gamma:
        return x
    lower, upper = 0.0, float(np.max(np.abs(x)))
    x_mid = x
    while upper - lower > epsilon:
        mid = (lower + upper) / 2
        x_mid = np.sign(x) * np.maximum(np.abs(x) - mid, 0)
        if np.sum(np.abs(x_mid)) > gamma:
            lower = mid
        else:
            upper = mid
    return x_mid


def prs(x, z_hat, gamma, epsilon):
    """``prs(x, z.hat)`` of epca: PRS of ``x^T z_hat``, ordered by ``||x y_j||^2``."""
    a = x.T @ z_hat
    y_tilde = polar(a)
    y_star, steps = varimax(y_tilde, epsilon / np.sqrt(a.shape[0]))
    y_star = y_star * np.sign(np.sum(y_star ** 3, axis=0))[None, :]
    y_hat = shrinkage(y_star, gamma)
    sdev = np.sum((x @ y_hat) ** 2, axis=0)
    order = np.argsort(-sdev, kind="stable")
    return y_hat[:, order], steps


def unit_columns(a):
    return a / np.sqrt(np.sum(a * a, axis=0))[None, :]


def matched_distance(a, b):
    """epca's ``distance(a, b, "maximum")``: columns scaled to unit length, the
    Hungarian match minimising the summed max-abs differences, and that sum."""
    a, b = unit_columns(a), unit_columns(b)
    dist = np.max(np.abs(a[:, :, None] - b[:, None, :]), axis=0)
    rows, cols = linear_sum_assignment(dist)
    return float(np.sum(dist[rows, cols]))


def cpve(xc, v):
    """Cumulative proportion of variance explained by the first ``j`` columns of ``v``."""
    total = np.sum(xc * xc)
    out = np.zeros(v.shape[1])
    for j in range(1, v.shape[1] + 1):
        q, _ = np.linalg.qr(v[:, :j])
        out[j - 1] = np.sum((xc @ q) ** 2) / total
    return out


def epca_sca(x, k, gamma=None, *, epsilon=1e-5, max_iter=1000) -> EpcaResult:
    """``epca::sca(x, k, gamma)`` with its defaults (varimax, soft threshold, centred,
    unscaled, ordered, flipped), in float64."""
    x = np.asarray(x, np.float64)
    n, p = x.shape
    gamma = np.sqrt(p * k) if gamma is None else float(gamma)
    xc = x - x.mean(axis=0)
    u, _, vt = np.linalg.svd(xc, full_matrices=False)
    z, y = u[:, :k], vt[:k].T
    gamma_z = k * np.sqrt(n)
    steps = 0
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        z_new, s1 = prs(xc.T, y, gamma_z, epsilon)
        dz = matched_distance(z, z_new)
        z = z_new
        y_new, s2 = prs(xc, z, gamma, epsilon)
        dy = matched_distance(y, y_new)
        y = y_new
        steps += s1 + s2
        if max(dz, dy) < epsilon:
            converged = True
            break
    b = z.T @ xc @ y
    return EpcaResult(y, z, b, cpve(xc, y), n_iter, converged, steps)


# ------------------------------------------------------------- agreement measures

def largest_principal_angle_deg(a, b):
    """Largest principal angle (degrees) between ``span(a)`` and ``span(b)``."""
    qa, _ = np.linalg.qr(np.asarray(a, np.float64))
    qb, _ = np.linalg.qr(np.asarray(b, np.float64))
    s = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return float(np.degrees(np.arccos(np.clip(np.min(s), -1.0, 1.0))))


def matched_cosines(a, b):
    """``|cos|`` of each column of ``b`` with its Hungarian-matched column of ``a``
    (the match maximising the summed ``|cos|``), and the match ``perm`` (``a[:, perm]``
    lines up with ``b``)."""
    ua, ub = unit_columns(np.asarray(a, np.float64)), unit_columns(np.asarray(b, np.float64))
    cos = np.abs(ua.T @ ub)
    rows, cols = linear_sum_assignment(-cos)
    perm = np.empty(a.shape[1], int)
    perm[cols] = rows
    return cos[perm, np.arange(b.shape[1])], perm


def agreement(ref_loadings, ref_b_norm, ref_cpve, loadings, b_norm, cpve_):
    """The issue's agreement measures of ``loadings`` (p, k) with a reference."""
    cos, perm = matched_cosines(ref_loadings, loadings)
    zeros_same = float(np.mean((ref_loadings[:, perm] == 0) == (loadings == 0)))
    return {"angle_deg": largest_principal_angle_deg(ref_loadings, loadings),
            "min_matched_cos": float(np.min(cos)),
            "zero_pattern_same": zeros_same,
            "b_norm_rel": abs(b_norm - ref_b_norm) / ref_b_norm,
            "cpve_rel": abs(cpve_[-1] - ref_cpve[-1]) / ref_cpve[-1]}


# ------------------------------------------------------------------ epca itself

import math  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

from jaxfactor import SCA  # noqa: E402
from jaxfactor._policy import choose_rotation_precision  # noqa: E402
from jaxfactor.sca import _matched_change  # noqa: E402

from . import tolerances as T  # noqa: E402

EPCA_SCRIPT = r"""
args <- commandArgs(trailingOnly = TRUE)
n <- as.integer(args[2]); p <- as.integer(args[3]); k <- as.integer(args[4])
suppressPackageStartupMessages(library(epca))
x <- matrix(readBin(args[1], "double", n * p), nrow = n, ncol = p, byrow = TRUE)
t0 <- proc.time()[["elapsed"]]
s <- sca(x, k, gamma = as.numeric(args[5]))
el <- proc.time()[["elapsed"]] - t0
con <- file(args[6], "wb")
writeBin(c(el, s$n.iter, as.vector(s$loadings), as.vector(s$z), s$cpve), con)
close(con)
"""


def epca_available() -> bool:
    """Whether ``Rscript`` runs and R has the ``epca`` package."""
    if shutil.which("Rscript") is None:
        return False
    proc = subprocess.run(["Rscript", "-e", "library(epca)"], capture_output=True)
    return proc.returncode == 0


def run_epca(x, k, gamma, workdir, timeout=None):
    """``epca::sca(x, k, gamma)`` through ``Rscript`` (data passed as raw float64).

    Returns ``dict(seconds, n_iter, loadings (p, k), z (n, k), cpve (k,), b_norm)``,
    ``seconds`` epca's own time (R's elapsed clock around ``sca``).
    """
    x = np.ascontiguousarray(x, np.float64)
    n, p = x.shape
    script, data, out = (f"{workdir}/epca_sca.R", f"{workdir}/x.bin", f"{workdir}/out.bin")
    with open(script, "w") as f:
        f.write(EPCA_SCRIPT)
    x.tofile(data)
    subprocess.run(["Rscript", script, data, str(n), str(p), str(k), repr(float(gamma)), out],
                   check=True, capture_output=True, timeout=timeout)
    o = np.fromfile(out)
    y = o[2:2 + p * k].reshape(k, p).T
    z = o[2 + p * k:2 + (p + n) * k].reshape(k, n).T
    xc = x - x.mean(axis=0)
    return {"seconds": float(o[0]), "n_iter": int(o[1]), "loadings": y, "z": z,
            "cpve": o[-k:], "b_norm": float(np.linalg.norm(z.T @ xc @ y))}


def gan_like_rows(rng, n, p, rank=40, decay=0.8, noise=0.05):
    """Rows like ``benchmarks.datasets.gan_like``: Laplace sources through a mixing with a
    power-law spectrum, a positive offset and a little Gaussian noise (float64)."""
    scales = np.arange(1, rank + 1) ** -decay
    mixing = 4.0 * scales[:, None] * rng.standard_normal((rank, p)) / np.sqrt(rank)
    return (rng.laplace(size=(n, rank)) @ mixing + np.abs(rng.standard_normal(p))
            + noise * rng.standard_normal((n, p)))


needs_epca = pytest.mark.skipif(not epca_available(), reason="R with the epca package not installed")


@needs_epca
def test_reference_reproduces_epca(rng, tmp_path):
    # The reference is the method: same iterations as epca and the same loadings to
    # float64 rounding. Both runs take the same steps, so they differ by the rounding of
    # each iteration (gamma(n) relative, amplified by at most s_1 / s_k through the polar
    # factors) accumulated over the iterations.
    n, p, k = 300, 60, 4
    x = gan_like_rows(rng, n, p)
    gamma = 0.7 * math.sqrt(p * k)
    ref = epca_sca(x, k, gamma)
    got = run_epca(x, k, gamma, tmp_path)
    assert ref.converged and got["n_iter"] == ref.n_iter
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    bound = ref.n_iter * T.gamma(n * p, np.float64) * s[0] / s[k - 1]
    assert np.max(np.abs(got["loadings"] - ref.loadings)) <= bound
    assert np.max(np.abs(got["cpve"] - ref.cpve)) <= bound


# ------------------------------------------------------ jaxfactor against it

@pytest.mark.parametrize("budget,acceleration", [(1.0, "none"), (0.5, "none"),
                                                (1.0, "auto"), (0.5, "auto")])
def test_default_sca_reaches_the_reference_fixed_point(rng, budget, acceleration):
    # The agreement with epca: largest principal angle <= 1 degree, matched
    # cosines >= 0.999, zero pattern >= 99% identical, ||B|| and cumulative PVE within
    # 1e-4 relative. float32 products, float64 varimax (the policy's choice).
    n, p, k = 400, 80, 5
    x = gan_like_rows(rng, n, p)
    gamma = budget * math.sqrt(p * k)
    ref = epca_sca(x, k, gamma)
    model = SCA(k, gamma=gamma, acceleration=acceleration, random_state=0)
    model.fit(x.astype(np.float32))
    assert model.rotation_precision_ == "float64" and model.converged_
    assert model.acceleration_ == ("none" if acceleration == "none" else "anderson")
    a = agreement(ref.loadings, float(np.linalg.norm(ref.b)), ref.cpve,
                  model.components_.T.astype(np.float64), model.objective_,
                  model.explained_variance_ratio_)
    assert a["angle_deg"] <= 1.0 and a["min_matched_cos"] >= 0.999
    assert a["zero_pattern_same"] >= 0.99
    assert a["b_norm_rel"] <= 1e-4 and a["cpve_rel"] <= 1e-4
    if acceleration == "none":
        # The same stopping rule on nearly the same iterates: the change crosses tol at the
        # same iteration, give or take the one where float32 rounding decides it.
        assert abs(model.n_iter_ - ref.n_iter) <= 1
    else:   # the same fixed point, reached no later
        assert model.n_iter_ <= ref.n_iter + 1


def test_epca_stopping_rule(rng):
    # Columns permuted, signs kept (flip makes them canonical), scaled and nudged: the
    # change is the reference's matched sum of max-abs differences of unit columns.
    m, k = 200, 6
    old = rng.standard_normal((m, k))
    perm = rng.permutation(k)
    new = (old + 1e-3 * rng.standard_normal((m, k)))[:, perm] * rng.uniform(0.5, 2, k)
    got = float(_matched_change(jnp.asarray(new, jnp.float32), jnp.asarray(old, jnp.float32)))
    want = matched_distance(old, new)
    # float32 rounding of unit columns (norms of m terms) and differences, summed over k
    assert abs(got - want) <= k * 4 * T.gamma(m) * np.max(np.abs(unit_columns(old)))
    assert got < 0.1 * k   # matched: an unmatched pairing would cost ~1 a column


def test_rotation_precision_policy():
    eps32 = float(np.finfo(np.float32).eps)
    assert choose_rotation_precision("auto", 10000, 2048, 1e-5, np.float32) == "float64"
    assert choose_rotation_precision("auto", 10000, 2048, 1e-5, np.float64) == "float64"
    assert choose_rotation_precision("auto", 100, 50, 100 * 100 * eps32, np.float32) == "float32"
    assert choose_rotation_precision("float32", 10000, 2048, 1e-5, np.float32) == "float32"
