"""How fast can SCA's loading-side varimax converge? A study of rotation solvers.

SCA's cost at GAN scale is its loading-side varimax (``benchmarks/results/bench_sca.md``):
at ``p = 16384, k = 50`` R's rule (the one epca uses) does not stop within its 1000-step
cap. This study takes the matrix that varimax rotates in SCA's first outer iteration on
``benchmarks.datasets.gan_like`` data -- ``A = polar(X_c^T Z)``, ``Z`` the rotated
sample side of the SVD start -- and runs, all in float64 on the same ``A``:

* ``plain``: R's varimax step ``T <- polar(A^T (L^3 - L diag(mean L^2)))`` (what
  :func:`jaxfactor._linalg.varimax` iterates), to a gradient norm of ``--grad-tol``
  or ``--plain-steps`` steps; the table also lists where R's rule (relative growth
  of ``sum s(G)`` at most ``1e-5 / sqrt(p)``, epca's setting) would stop;
* ``anderson``: the same map with type-II Anderson mixing of depth 10 on ``T``, the
  mixed point projected back by a polar factor and kept only when its criterion is
  at least the plain step's;
* ``bb``: Riemannian gradient ascent on the orthogonal group (retraction by the polar
  factor) with Barzilai-Borwein step sizes and a non-monotone backtracking test
  (the last 10 criteria).

Reported per solver: criterion evaluations (each one ``A T`` and ``A^T M``: the cost
unit of every solver), milliseconds per evaluation, the criterion's relative gap to the
best any solver found, the Riemannian gradient norm ``||skew(T^T G)||_F`` at the end,
and the smallest matched ``|cosine|`` between its rotated columns and those of the
solver that found the best criterion (1: the same local maximum). Writes
``study_varimax.{json,md}`` under ``benchmarks/results/``. On demand only::

    python benchmarks/study_varimax.py --cases 10000x2048x20 10000x16384x50
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine_info, markdown_table, write_results  # noqa: E402
from benchmarks.datasets import gan_like  # noqa: E402


def loading_side_matrix(n, p, k, seed=0):
    """``(p, k)`` float64 ``polar(X_c^T Z)`` of SCA's first outer iteration."""
    import jax
    import jax.numpy as jnp

    from jaxfactor._linalg import polar_small_svd, varimax_epca
    from jaxfactor.accumulate import centred_matmul
    from jaxfactor.randomized import randomized_svd
    from jaxfactor.sca import _rmatmul, _varimax_tol

    x = jnp.asarray(gan_like(n, p, seed=seed), jnp.float32)
    start = randomized_svd(x, k, key=jax.random.key(seed), center=True, compute_u=False)
    q = polar_small_svd(centred_matmul(x, start.mean, start.vt.T))
    z = varimax_epca(q, _varimax_tol(1e-5, q, None), 1000).rotated
    return np.asarray(polar_small_svd(_rmatmul(x, start.mean, z)), np.float64)


def _kernels(a):
    import jax
    import jax.numpy as jnp

    from jaxfactor._linalg import small_svd

    m, _ = a.shape
    a_t = jnp.asarray(a.T)

    @jax.jit
    def evaluate(t):
        """criterion f(T), its Euclidean gradient G = A^T (L^3 - L diag(mean L^2)),
        R's d = sum s(G), the polar step polar(G), the Riemannian gradient T skew(T^T G)."""
        lam = t.T @ a_t
        g = a_t @ (lam ** 3 - lam * (jnp.sum(lam * lam, 1, keepdims=True) / m)).T
        f = jnp.sum(lam ** 4) / 4 - jnp.sum(jnp.sum(lam * lam, 1) ** 2) / (4 * m)
        u, s, vt = small_svd(g)
        skew = t.T @ g
        skew = (skew - skew.T) / 2
        return f, jnp.sum(s), u @ vt, t @ skew, jnp.linalg.norm(skew)

    @jax.jit
    def polar(w):
        u, _, vt = small_svd(w)
        return u @ vt

    return evaluate, polar


def plain(a, steps, grad_tol):
    evaluate, _ = _kernels(a)
    k = a.shape[1]
    t = np.eye(k)
    rule = 1e-5 / np.sqrt(a.shape[0])
    d_prev, r_stop, f_at_cap = None, None, None
    for i in range(steps):
        f, d, step, _, gn = (np.asarray(v) for v in evaluate(t))
        if r_stop is None and d_prev is not None and d <= d_prev * (1 + rule):
            r_stop = i
        if i == 1000:
            f_at_cap = float(f)
        d_prev = float(d)
        if gn < grad_tol:
            break
        t = step
    return dict(t=t, f=float(f), grad=float(gn), evals=i + 1, r_rule_stop=r_stop,
                f_at_1000=f_at_cap)


def anderson(a, steps, grad_tol, depth=10):
    evaluate, polar = _kernels(a)
    k = a.shape[1]
    t = np.eye(k)
    xs, rs = [], []
    f, _, step, _, gn = (np.asarray(v) for v in evaluate(t))
    evals = 1
    for _ in range(steps):
        if gn < grad_tol:
            break
        xs, rs = (xs + [t.ravel()])[-depth - 1:], (rs + [(step - t).ravel()])[-depth - 1:]
        cand = step
        if len(xs) >= 2:
            dx, dr = np.diff(np.array(xs), axis=0), np.diff(np.array(rs), axis=0)
            gam = np.linalg.lstsq(dr.T, rs[-1], rcond=None)[0]
            mixed = np.asarray(polar((xs[-1] + rs[-1] - (dx + dr).T @ gam).reshape(k, k)))
            f_mix = float(evaluate(mixed)[0])
            f_step = float(evaluate(step)[0])
            evals += 2
            if f_mix >= f_step:
                cand = mixed
            else:
                xs, rs = xs[-1:], rs[-1:]
        t = cand
        f, _, step, _, gn = (np.asarray(v) for v in evaluate(t))
        evals += 1
    return dict(t=t, f=float(f), grad=float(gn), evals=evals)


def barzilai_borwein(a, steps, grad_tol, memory=10):
    evaluate, polar = _kernels(a)
    k = a.shape[1]
    t = np.eye(k)
    f, _, _, g, gn = (np.asarray(v) for v in evaluate(t))
    evals, alpha, hist = 1, 1e-2 / max(float(gn), 1e-300), [float(f)]
    for _ in range(steps):
        if gn < grad_tol:
            break
        while True:
            t_new = np.asarray(polar(t + alpha * g))
            f_new, _, _, g_new, gn_new = (np.asarray(v) for v in evaluate(t_new))
            evals += 1
            if float(f_new) >= min(hist[-memory:]) or alpha < 1e-12:
                break
            alpha *= 0.5
        s, y = (t_new - t).ravel(), (g - g_new).ravel()
        sy = float(s @ y)
        alpha = float(s @ s) / sy if sy > 0 else 2 * alpha
        t, f, g, gn = t_new, f_new, g_new, gn_new
        hist.append(float(f))
    return dict(t=t, f=float(f), grad=float(gn), evals=evals)


def _min_matched_cos(a, t1, t2):
    from scipy.optimize import linear_sum_assignment

    l1, l2 = a @ t1, a @ t2
    c = np.abs((l1 / np.linalg.norm(l1, axis=0)).T @ (l2 / np.linalg.norm(l2, axis=0)))
    r, col = linear_sum_assignment(-c)
    return float(c[r, col].min())


def run_case(n, p, k, args):
    a = loading_side_matrix(n, p, k)
    rows = []
    for name, solver, cap in (("plain", plain, args.plain_steps),
                              ("anderson", anderson, args.steps),
                              ("bb", barzilai_borwein, args.steps)):
        solver(a, 3, args.grad_tol)                                    # compile
        t0 = time.perf_counter()
        out = solver(a, cap, args.grad_tol)
        out["seconds"] = time.perf_counter() - t0
        rows.append(dict(n=n, p=p, k=k, solver=name, **out))
        print(name, p, k, out["evals"], f"{out['seconds']:.1f} s", flush=True)
    best = max(rows, key=lambda r: r["f"])
    for r in rows:
        r["gap"] = (best["f"] - r["f"]) / best["f"]
        r["ms_per_eval"] = 1e3 * r["seconds"] / r["evals"]
        r["min_cos_to_best"] = _min_matched_cos(a, r["t"], best["t"])
        if r.get("f_at_1000") is not None:
            r["gap_at_1000"] = (best["f"] - r["f_at_1000"]) / best["f"]
    for r in rows:
        del r["t"]
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["10000x2048x20", "10000x16384x50"])
    ap.add_argument("--plain-steps", type=int, default=8000)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--grad-tol", type=float, default=1e-11)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import jax
    jax.config.update("jax_enable_x64", True)
    rows = []
    for case in args.cases:
        n, p, k = (int(v) for v in case.split("x"))
        rows += run_case(n, p, k, args)
    info = machine_info()
    cols = [("n", "N"), ("p", "p"), ("k", "k"), ("solver", "solver"), ("evals", "evaluations"),
            ("ms_per_eval", "ms / evaluation"), ("seconds", "seconds"), ("gap", "criterion gap to best"),
            ("grad", "gradient norm"), ("min_cos_to_best", "min matched cos to best"),
            ("r_rule_stop", "R's rule would stop at"), ("gap_at_1000", "gap at R's 1000-step cap")]
    table = ("# Varimax solvers on SCA's loading side\n\n"
             "benchmarks/study_varimax.py: the matrix SCA's first loading-side varimax rotates "
             "(gan_like data, seed 0), float64, every solver to a gradient norm of "
             f"{args.grad_tol:g} or its cap. Machine: {info.get('cpu_model', '')}; "
             f"jax {info.get('jax', '')}.\n\n" + markdown_table(rows, cols))
    payload = dict(machine=info, args=vars(args), results=rows)
    j, m = write_results("study_varimax", payload, table, Path(args.out) if args.out else None)
    print(m.read_text())


if __name__ == "__main__":
    main()
