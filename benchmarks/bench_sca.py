"""jaxfactor SCA vs scikit-learn's sparse PCA, side by side on the same GAN-like data.

Cases (issue 4): N = 10000 rows of ``benchmarks.datasets.gan_like`` data at
p = 2048, 4096, 16384 features, k = 20 and 50 components.

Methods
  * ``jaxfactor_sca``: ``SCA(k)`` (default gamma ``sqrt(p k)``), the iteration
    on the full data, initial SVD included in the time.
  * ``jaxfactor_sca_reduced``: ``SCA(k, reduced_rank=2k)``: the same iteration
    on the rank-2k randomized SVD of the data (an approximation; its effect on
    the objective ``||B||_F`` and the explained variance is in the table).
  * ``sklearn_minibatch``: ``MiniBatchSparsePCA(k, random_state=0)`` with
    scikit-learn's defaults.
  * ``sklearn_sparsepca``: ``SparsePCA(k, random_state=0)`` (smallest case only).

Every method runs in its own process on the same data (written once to a
``.npy`` file and memory-mapped), under a wall-clock limit (``--peer-timeout``);
a peer that does not finish is reported as such, with a linear-in-p
extrapolation from the smallest case where it finished (labelled as an
extrapolation, never as a measurement). jaxfactor methods run twice: the first
call includes JIT compilation, the second is the steady-state time (from
``--single-call-from`` features on they run once and the time includes compilation). Accuracy
is measured the same way for every method in the parent process: the share of
variance of the centred data in the span of the k loadings
(``||X_c P||_F^2 / ||X_c||_F^2``), next to the top-k PCA optimum (jaxfactor
randomized PCA), and the fraction of exact zeros in the loadings.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_sca.py [--quick] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (machine_info, markdown_table, peak_rss_mb,  # noqa: E402
                                write_results)
from benchmarks.datasets import gan_like  # noqa: E402

N = 10000
CASES = [(2048, 20), (2048, 50), (4096, 20), (4096, 50), (16384, 20), (16384, 50)]
QUICK = [(2048, 20), (16384, 50)]
METHODS = ["jaxfactor_sca", "jaxfactor_sca_reduced", "sklearn_minibatch", "sklearn_sparsepca"]
QUICK_METHODS = {(2048, 20): METHODS, (16384, 50): ["jaxfactor_sca_reduced"]}


def fit_once(method, x, k):
    """Fit once; returns ``(components (k, p), extra info dict)``."""
    if method.startswith("jaxfactor"):
        from jaxfactor.sca import SCA

        reduced = 2 * k if method == "jaxfactor_sca_reduced" else None
        model = SCA(k, reduced_rank=reduced, random_state=0).fit(x)
        return model.components_, {"n_iter": model.n_iter_, "converged": model.converged_,
                                    "objective": model.objective_, "gamma": model.gamma_}
    from sklearn.decomposition import MiniBatchSparsePCA, SparsePCA

    if method == "sklearn_minibatch":
        model = MiniBatchSparsePCA(k, random_state=0).fit(x)
    else:
        model = SparsePCA(k, random_state=0).fit(x)
    return model.components_, {"n_iter": int(getattr(model, "n_iter_", -1))}


def worker(method, data_path, k, out_file, repeats):
    x = np.load(data_path, mmap_mode="r")
    x = np.ascontiguousarray(x)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        comps, extra = fit_once(method, x, k)
        runs.append(time.perf_counter() - t0)
    np.save(out_file, np.asarray(comps, np.float32))
    result = {"seconds": runs[-1], "first_call_seconds": runs[0],
              "compile_seconds": max(runs[0] - runs[-1], 0.0) if repeats > 1 else 0.0,
              "peak_rss_mb": peak_rss_mb(), **extra}
    print(json.dumps(result, default=float))


def run_worker(method, data_path, k, out_file, timeout, repeats):
    cmd = [sys.executable, __file__, "--worker", method, data_path, str(k), out_file,
           str(repeats)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout:.0f} s", "timed_out": True,
                "wall_limit_seconds": timeout}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()
        return {"error": tail[-1] if tail else f"exit {proc.returncode}"}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_wall_seconds"] = time.perf_counter() - t0
    return res


def explained_share(x, comps, mean, total):
    """``||X_c P||^2 / ||X_c||^2`` with ``P`` the projector onto the loadings' span."""
    c = np.asarray(comps, np.float64)
    keep = np.linalg.norm(c, axis=1) > 0
    if not keep.any():
        return 0.0
    q = np.linalg.qr(c[keep].T)[0].astype(np.float32)
    proj = x @ q - (mean @ q)[None, :]
    return float(np.sum(proj.astype(np.float64) ** 2) / total)


def pca_share(x, k):
    """Top-k PCA share of variance (jaxfactor randomized PCA, as the optimum)."""
    from jaxfactor.pca import PCA

    pca = PCA(k, solver="randomized", random_state=0).fit(x)
    return float(np.sum(pca.explained_variance_ratio_))



def render(payload: dict) -> str:
    """The Markdown report of a results payload."""
    info, rows = payload["machine"], payload["results"]
    cols = [("p", "p"), ("k", "k"), ("method", "method"), ("seconds", "steady s"),
            ("compile_seconds", "compile s"), ("calls", "calls"), ("n_iter", "iters"),
            ("speedup_vs_minibatch", "x vs MiniBatchSparsePCA"), ("explained", "expl. var"),
            ("pca_explained", "PCA top-k expl. var"), ("sparsity", "zeros"),
            ("objective", "norm of B (Frobenius)"), ("error", "note"),
            ("extrapolated_seconds", "extrap. s")]
    load = info["load_average_at_start"]
    return (f"# SCA benchmark{' (quick subset)' if payload['quick'] else ''}\n\n"
            f"N = {N} rows of GAN-like data (benchmarks/datasets.gan_like, seed 0). "
            f"Machine: {info.get('cpu_model', info['processor'])}, {info['cpu_count']} cores; "
            f"jax {info['jax']} ({info['jax_backend']}), scikit-learn {info['sklearn']}, "
            f"numpy {info['numpy']}; BLAS {info['blas']}. Load average at start {load}: the "
            f"machine is shared with other jobs, so absolute times are inflated; compare "
            f"ratios. 'expl. var' is the share of variance in the span of the k loadings "
            f"(same formula for every method); 'zeros' the fraction of exact zeros. "
            f"Extrapolated times are linear-in-p estimates, not measurements.\n\n"
            + markdown_table(rows, cols)
            + (f"\n{payload['what_ran']}\n" if payload.get("what_ran") else ""))

def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="p=2048,k=20 (all methods) and p=16384,k=50 (jaxfactor reduced only)")
    ap.add_argument("--out", default=None, help="output directory (default benchmarks/results)")
    ap.add_argument("--peer-timeout", type=float, default=600.0,
                    help="wall-clock limit per scikit-learn fit, seconds")
    ap.add_argument("--jax-timeout", type=float, default=1800.0,
                    help="wall-clock limit per jaxfactor worker (both calls), seconds")
    ap.add_argument("--single-call-from", type=int, default=16384,
                    help="from this p on, jaxfactor runs once (time includes compilation)")
    ap.add_argument("--render", metavar="JSON", help="rewrite the Markdown of a results JSON")
    ap.add_argument("--worker", nargs=5, metavar=("METHOD", "DATA", "K", "OUT", "REPEATS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        method, data, k, out, repeats = args.worker
        worker(method, data, int(k), out, int(repeats))
        return
    if args.render:
        path = Path(args.render)
        path.with_suffix(".md").write_text(render(json.loads(path.read_text())))
        return
    info = machine_info()
    cases = QUICK if args.quick else CASES
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in sorted({p for p, _ in cases}):
            x = gan_like(N, p, seed=0)
            data_path = str(Path(tmp) / f"x_{p}.npy")
            np.save(data_path, x)
            mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
            total = float(np.sum((x - mean).astype(np.float64) ** 2))
            for k in [k for q, k in cases if q == p]:
                optimum = pca_share(x, k)
                methods = QUICK_METHODS[(p, k)] if args.quick else METHODS
                if not args.quick and (p, k) != (2048, 20):
                    methods = [m for m in methods if m != "sklearn_sparsepca"]
                for method in methods:
                    out = str(Path(tmp) / f"{method}_{p}_{k}.npy")
                    jax_method = method.startswith("jaxfactor")
                    timeout = args.jax_timeout if jax_method else args.peer_timeout
                    repeats = 2 if jax_method and p < args.single_call_from else 1
                    print(f"== p={p} k={k} {method}", flush=True)
                    res = run_worker(method, data_path, k, out, timeout, repeats)
                    res["calls"] = repeats
                    res.update(method=method, n=N, p=p, k=k, pca_explained=optimum)
                    if "error" not in res:
                        comps = np.load(out)
                        res["explained"] = explained_share(x, comps, mean, total)
                        res["explained_vs_pca"] = res["explained"] / optimum
                        res["sparsity"] = float(np.mean(comps == 0))
                    print(json.dumps(res, default=float), flush=True)
                    rows.append(res)
            del x
    # speed-ups and extrapolations
    for r in rows:
        peer = next((q for q in rows if q["p"] == r["p"] and q["k"] == r["k"]
                     and q["method"] == "sklearn_minibatch" and "seconds" in q), None)
        if r["method"].startswith("jaxfactor") and peer and "seconds" in r:
            r["speedup_vs_minibatch"] = peer["seconds"] / r["seconds"]
        if "seconds" not in r and r["method"].startswith("sklearn"):
            done = [q for q in rows if q["method"] == r["method"] and q["k"] == r["k"]
                    and "seconds" in q]
            if done:
                base = min(done, key=lambda q: q["p"])
                r["extrapolated_seconds"] = base["seconds"] * r["p"] / base["p"]
                r["extrapolated_from"] = f"p={base['p']} (linear in p; not measured)"
    payload = {"benchmark": "sca", "quick": args.quick, "machine": info, "results": rows,
               "note": ("shared 2-core machine with other jobs running: absolute times are "
                        "inflated and noisy; compare ratios measured in the same run")}
    table = render(payload)
    name = "bench_sca"  # quick runs say so in the title and the JSON
    j, m = write_results(name, payload, table, Path(args.out) if args.out else None)
    print(table)
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
