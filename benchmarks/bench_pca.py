"""jaxfactor PCA vs scikit-learn PCA, side by side on the same GAN-like data.

Cases:
  a. N = 10000, p = 16384, k = 500  -- FastGAN conv1 features (GAN-like power-law spectrum)
  b. N = 100000, p = 512, k = 100   -- StyleGAN2 W space
  c. N = 10000, p = 16384, k = 100  -- FastGAN's init block with random weights: a flat
     spectrum (benchmarks.datasets.fastgan_init_features), the accuracy-controlled
     solver at its default tolerance and at two tighter ones

``jaxfactor_adaptive_tol=T`` runs the accuracy-controlled solver with ``tol=T``;
``n_passes`` is the number of passes over X each method made.

Each method runs in its own process (fresh peak-memory count) on data generated
from the same seed. jaxfactor methods run twice: the first call includes JIT
compilation, the second is the steady-state time; compile time is reported as
their difference. Accuracy is measured against an exact PCA of the same data:
captured variance of the k components relative to the optimum, the largest
principal angle (all k, and the leading k/2), and the relative error of the
explained variances.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_pca.py [--quick] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (machine_info, markdown_table, peak_rss_mb,  # noqa: E402
                                run_worker, write_results)
from benchmarks.datasets import fastgan_init_features, gan_like  # noqa: E402

CASES = {
    "a_fastgan_conv1": dict(n=10000, p=16384, k=500),
    "b_stylegan_w": dict(n=100000, p=512, k=100),
    "c_fastgan_init_random": dict(n=10000, p=16384, k=100),
}
QUICK = {
    "a_fastgan_conv1": dict(n=2000, p=4096, k=100),
    "b_stylegan_w": dict(n=20000, p=512, k=100),
    "c_fastgan_init_random": dict(n=2000, p=4096, k=50),
}
METHODS = {
    "a_fastgan_conv1": ["jaxfactor_adaptive_krylov", "jaxfactor_adaptive_krylov_bf16", "jaxfactor_adaptive", "jaxfactor_krylov", "jaxfactor_subspace", "jaxfactor_streaming",
                        "sklearn_randomized", "sklearn_full"],
    "b_stylegan_w": ["jaxfactor_full", "jaxfactor_adaptive", "jaxfactor_krylov", "sklearn_randomized",
                     "sklearn_covariance_eigh", "sklearn_full"],
    "c_fastgan_init_random": ["jaxfactor_adaptive_krylov", "jaxfactor_adaptive_krylov_bf16", "jaxfactor_adaptive", "jaxfactor_adaptive_tol=1e-2", "jaxfactor_adaptive_tol=1e-3",
                              "jaxfactor_krylov", "sklearn_randomized", "sklearn_full"],
}


def make_data(case, n, p, seed=0):
    if case.startswith("c_"):
        return fastgan_init_features(n, channels=p // 16, seed=seed)
    return gan_like(n, p, rank=min(p, 2000), seed=seed)


def fit_once(method, x, k):
    """Fit once; returns (components, explained_variance, flops or None, passes or None)."""
    if method.startswith("jaxfactor"):
        import jaxfactor
        from jaxfactor._policy import ADAPTIVE_TOL
        from jaxfactor.randomized import range_params

        method, _, tol = method.partition("_tol=")
        method, bf16, _ = method.partition("_bf16")
        precision = "bf16" if bf16 else "float32"
        solver = {"jaxfactor_full": "full", "jaxfactor_streaming": "streaming"}.get(method, "randomized")
        kind = {"jaxfactor_subspace": "subspace", "jaxfactor_adaptive": "adaptive",
                "jaxfactor_adaptive_krylov": "adaptive_krylov"}.get(method, "krylov")
        pca = jaxfactor.PCA(k, solver=solver, method=kind, random_state=0, block_rows=2048,
                            tol=float(tol) if tol else ADAPTIVE_TOL, precision=precision)
        pca.fit(x)
        passes = getattr(pca, "n_passes_", None)
        n, p = x.shape
        if solver == "full":
            flops = 2.0 * n * p * p
        elif kind == "adaptive_krylov":
            from jaxfactor._policy import krylov_adaptive_block

            # every pass b columns wide but the last, k wide
            flops = 2.0 * n * p * (krylov_adaptive_block(k, n, p) * (pca.n_passes_ - 1) + k)
        elif kind == "adaptive":
            from jaxfactor._policy import adaptive_width

            flops = 2.0 * n * p * adaptive_width(k, n, p) * pca.n_passes_
        else:
            rp = range_params(k, n, p, method=kind)
            if kind == "krylov" and solver == "randomized":   # narrow finish: randomized._krylov_normal_ritz
                width = 2 * rp.n_iter * rp.block_size + rp.basis_size - (rp.n_iter - 1) * rp.block_size + k
            else:
                width = 2 * rp.n_iter * rp.block_size + rp.basis_size
            flops = 2.0 * n * p * width
        return pca.components_, pca.explained_variance_, flops, passes
    from sklearn.decomposition import PCA

    solver = method.replace("sklearn_", "")
    pca = PCA(k, svd_solver=solver, random_state=0).fit(x)
    n, p = x.shape
    flops = None
    if solver == "randomized":
        q = 7 if k < 0.1 * min(n, p) else 4
        flops = 2.0 * n * p * (k + 10) * (2 * q + 2)
        return pca.components_, pca.explained_variance_, flops, 2 * q + 2
    return pca.components_, pca.explained_variance_, flops, None


def worker(method, case, quick, out_file):
    dims = (QUICK if quick else CASES)[case]
    x = np.load(out_file + ".data.npy")  # generated once by the parent: same data for every method
    base = peak_rss_mb()
    runs = []
    repeats = 2 if method.startswith("jaxfactor") else 1
    for _ in range(repeats):
        t0 = time.perf_counter()
        comps, ev, flops, passes = fit_once(method, x, dims["k"])
        runs.append(time.perf_counter() - t0)
    np.savez(out_file, components=np.asarray(comps, np.float32), explained_variance=np.asarray(ev))
    steady = runs[-1]
    result = {"method": method, "case": case, "seconds": steady,
              "first_call_seconds": runs[0],
              "compile_seconds": max(runs[0] - runs[-1], 0.0) if repeats > 1 else 0.0,
              "peak_rss_mb": peak_rss_mb(), "rss_with_data_mb": base,
              "extra_peak_mb": peak_rss_mb() - base,
              "n_passes": None if passes is None else int(passes),
              "flops": flops, "gflops_per_s": (flops / steady / 1e9) if flops else None}
    print(json.dumps(result))


def matmul_rates():
    """Measured float32 GEMM rates (GFLOP/s) of numpy and jax on 4096^3."""
    import jax
    import jax.numpy as jnp

    n = 4096
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    t0 = time.perf_counter(); a @ b; t_np = time.perf_counter() - t0
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    f = jax.jit(jnp.matmul)
    f(ja, jb).block_until_ready()
    t0 = time.perf_counter(); f(ja, jb).block_until_ready(); t_jax = time.perf_counter() - t0
    flops = 2.0 * n**3
    return {"numpy_gflops": flops / t_np / 1e9, "jax_gflops": flops / t_jax / 1e9}


def exact_reference(x, k):
    """Exact top-k PCA in float64 through the smaller Gram/covariance matrix."""
    n, p = x.shape
    mean = x.mean(axis=0, dtype=np.float64)
    if p <= n:
        xc = x.astype(np.float64) - mean
        w, v = np.linalg.eigh(xc.T @ xc)
        order = np.argsort(w)[::-1]
        return v[:, order[:k]].T, w[order] / (n - 1)
    # n < p: eigh of the n x n Gram of the centred data (float64), V = Xc^T U / s
    xc = x - mean.astype(np.float32)
    g = (xc @ xc.T).astype(np.float64)  # float32 GEMM, then float64 eigh
    w, u = np.linalg.eigh(g)
    order = np.argsort(w)[::-1]
    w = np.maximum(w[order], 0)
    u = u[:, order[:k]]
    v = (xc.T.astype(np.float64) @ u) / np.sqrt(w[:k])
    v, _ = np.linalg.qr(v)
    return v.T, w / (n - 1)


def accuracy(x, comps, ev, ref_comps, ref_ev, k):
    q = np.linalg.qr(np.asarray(comps, np.float64).T)[0]
    mean = x.mean(axis=0, dtype=np.float64)
    xc = x - mean.astype(np.float32)
    captured = float(np.sum((xc @ q.astype(np.float32)).astype(np.float64) ** 2) / (x.shape[0] - 1))
    optimum = float(np.sum(ref_ev[:k]))

    def max_angle(a, b):
        qa = np.linalg.qr(np.asarray(a, np.float64).T)[0]
        qb = np.linalg.qr(np.asarray(b, np.float64).T)[0]
        cos = np.linalg.svd(qa.T @ qb, compute_uv=False)
        return float(np.degrees(np.arccos(np.clip(cos.min(), -1, 1))))

    half = max(k // 2, 1)
    return {"captured_variance_ratio": captured / optimum,
            "max_angle_deg": max_angle(comps, ref_comps),
            "max_angle_top_half_deg": max_angle(np.asarray(comps)[:half], ref_comps[:half]),
            "ev_max_rel_err": float(np.max(np.abs(np.asarray(ev)[:k] / ref_ev[:k] - 1)))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced sizes (minutes, for smoke runs)")
    ap.add_argument("--out", default=None, help="output directory (default benchmarks/results)")
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--skip", nargs="*", default=[], help="methods to leave out (e.g. sklearn_full)")
    ap.add_argument("--worker", nargs=4, metavar=("METHOD", "CASE", "QUICK", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        method, case, quick, out = args.worker
        worker(method, case, quick == "1", out)
        return
    info = machine_info()
    info["matmul"] = matmul_rates()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            dims = (QUICK if args.quick else CASES)[case]
            print(f"== {case} {dims}", flush=True)
            x = make_data(case, dims["n"], dims["p"])
            ref_comps, ref_ev = exact_reference(x, dims["k"])
            data_file = str(Path(tmp) / f"{case}.npz")
            np.save(data_file + ".data.npy", x)
            for method in [m for m in METHODS[case] if m not in args.skip]:
                out = data_file
                res = run_worker(__file__, [method, case, "1" if args.quick else "0", out])
                res.update(case=case, method=method, **dims)
                if "error" not in res:
                    saved = np.load(out if out.endswith(".npz") else out + ".npz")
                    res.update(accuracy(x, saved["components"], saved["explained_variance"],
                                        ref_comps, ref_ev, dims["k"]))
                print(json.dumps(res), flush=True)
                rows.append(res)
            del x
    for case in args.cases:
        peer = next((r for r in rows if r["case"] == case and r["method"] == "sklearn_randomized"
                     and "seconds" in r), None)
        for r in rows:
            if r["case"] == case and peer and "seconds" in r:
                r["speedup_vs_sklearn_randomized"] = peer["seconds"] / r["seconds"]
            if r.get("gflops_per_s"):
                r["fraction_of_jax_matmul_rate"] = r["gflops_per_s"] / info["matmul"]["jax_gflops"]
    payload = {"benchmark": "pca", "quick": args.quick, "machine": info, "results": rows}
    cols = [("case", "case"), ("method", "method"), ("seconds", "steady s"), ("compile_seconds", "compile s"),
            ("n_passes", "passes"), ("speedup_vs_sklearn_randomized", "x vs sklearn rand."), ("captured_variance_ratio", "captured var / exact"),
            ("max_angle_top_half_deg", "max angle top k/2 (deg)"), ("max_angle_deg", "max angle all k (deg)"),
            ("ev_max_rel_err", "max rel. err EV"), ("gflops_per_s", "GFLOP/s"),
            ("fraction_of_jax_matmul_rate", "of matmul rate"), ("extra_peak_mb", "extra peak MiB")]
    table = (f"# PCA benchmark{' (quick sizes)' if args.quick else ''}\n\n"
             f"Machine: {info.get('cpu_model', info['processor'])}, {info['cpu_count']} cores; "
             f"jax {info['jax']} ({info['jax_backend']}), scikit-learn {info['sklearn']}, numpy {info['numpy']}; "
             f"BLAS {info['blas']}; load average at start {info['load_average_at_start']}.\n"
             f"Measured float32 matmul: numpy {info['matmul']['numpy_gflops']:.0f} GFLOP/s, "
             f"jax {info['matmul']['jax_gflops']:.0f} GFLOP/s.\n\n" + markdown_table(rows, cols))
    name = "bench_pca_quick" if args.quick else "bench_pca"
    j, m = write_results(name, payload, table, Path(args.out) if args.out else None)
    print(table)
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
