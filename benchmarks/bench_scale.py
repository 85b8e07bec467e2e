"""Row-sharded randomized PCA over 1, 2 and 4 devices, and the accuracy of mixed precision.

Scaling (default task): ``N = 40000`` GAN-like rows (``benchmarks/datasets.py``
generator, ``seed=0``) of ``p = 16384`` features, ``k = 500`` components, block
Krylov range finder with the default sizes (5 iterations of 255 columns, a
basis of 1275). The data are written once to a ``.npy`` in ``--dir`` (2.6 GB),
then one process per device count ``D`` starts with
``XLA_FLAGS=--xla_force_host_platform_device_count=D`` (set before JAX starts),
memory-maps the file, places it row-sharded on a ``D``-device mesh
(``jax.device_put(..., row_sharding(mesh))``) and runs
``randomized_svd(X, 500, center=True, compute_u=False)`` -- the kernel that
``PCA(500, solver='randomized', mesh=mesh)`` calls -- under one BLAS thread as
``PCA`` does. Compilation (ahead of time, ``lower(...).compile()``) and
``--repeats`` calls of the compiled program are timed separately. Agreement with the 1-device result: principal
angles between the component spaces and the relative error of the explained
variances. Forced CPU devices are XLA host devices sharing the same cores
(this machine has 2), so the table measures the cost of the SPMD machinery,
not a speed-up.

Precision (``--task precision``): float32 vs TF32 (emulated on CPU by operand
rounding) vs bfloat16 operands with float32 accumulation, in memory and
streaming, on GAN-like data (``N = 10000``, ``p = 4096``, ``k = 100``), against
float32 and against an exact float64 PCA. Writes ``results/precision.*``.
CPU timings of the low precisions mean nothing (no tensor cores; bf16 products
are emulated) and are recorded only as such.

    flock /tmp/jaxfactor-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        .venv/bin/python benchmarks/bench_scale.py [--devices 1 2 4] [--repeats 1] [--dir /tmp]
    ... bench_scale.py --task precision
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine_info, markdown_table, peak_rss_mb, run_worker, write_results  # noqa: E402


def _angles_deg(a, b):
    qa = np.linalg.qr(np.asarray(a, np.float64).T)[0]
    qb = np.linalg.qr(np.asarray(b, np.float64).T)[0]
    cos = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))[::-1]


# ------------------------------------------------------------------ scaling


def worker_scale(args) -> dict:
    import jax
    from threadpoolctl import threadpool_limits

    from jaxfactor.randomized import _randomized_svd, range_params
    from jaxfactor.sharding import row_mesh, row_sharding

    devices = jax.devices()
    assert len(devices) == args.devices, devices
    mesh = row_mesh()
    mm = np.load(args.path, mmap_mode="r")
    n = mm.shape[0]
    t0 = time.perf_counter()
    x = jax.device_put(mm, row_sharding(mesh))
    x.block_until_ready()
    place_s = time.perf_counter() - t0
    del mm
    shards = sorted({(str(s.device), tuple(s.data.shape)) for s in x.addressable_shards})
    key = jax.random.key(0)
    params = range_params(args.k, n, x.shape[1])  # what randomized_svd chooses
    times = []
    with threadpool_limits(limits=1, user_api="blas"):
        # the jitted kernel of randomized_svd(x, k, center=True, compute_u=False),
        # compiled ahead of time so that compilation is timed on its own
        t0 = time.perf_counter()
        compiled = _randomized_svd.lower(x, key, args.k, params, True, False).compile()
        compile_s = time.perf_counter() - t0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = jax.block_until_ready(compiled(x, key))
            times.append(time.perf_counter() - t0)
    out_path = f"{args.path}.components_{args.devices}.npz"
    np.savez(out_path, vt=np.asarray(res.vt), ev=np.asarray(res.s) ** 2 / (n - 1))
    return {"devices": args.devices, "jax_devices": [str(d) for d in devices],
            "shards": [[d, list(s)] for d, s in shards], "spec": str(x.sharding.spec),
            "place_s": place_s, "compile_s": compile_s, "steady_s": times, "params": list(params),
            "peak_rss_mb": peak_rss_mb(), "components": out_path}


def run_scale(args):
    from benchmarks.bench_ooc import write_file

    payload = {"machine": machine_info(), "settings": {k: v for k, v in vars(args).items() if k != "worker"}}
    path = os.path.join(args.dir, f"jaxfactor_scale_{args.n}x{args.p}.npy")
    if not (os.path.exists(path) and np.load(path, mmap_mode="r").shape == (args.n, args.p)):
        print(f"writing {path} ...", flush=True)
        payload["write_s"] = write_file(path, args.n, args.p)
    rows = []
    try:
        for d in args.devices:
            os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={d}"
            os.environ["JAX_PLATFORMS"] = "cpu"
            load = os.getloadavg()
            print(f"{d} device(s) ...", flush=True)
            res = run_worker(__file__, [f"--path={path}", f"--devices={d}", f"--k={args.k}",
                                        f"--repeats={args.repeats}"], timeout=3600)
            res["load_average_before"] = load
            print(json.dumps(res), flush=True)
            rows.append(res)
        ref = np.load(rows[0]["components"]) if "error" not in rows[0] else None
        for r in rows:
            if "error" in r or ref is None:
                continue
            got = np.load(r["components"])
            k = args.k
            r["max_angle_top_half_deg"] = float(_angles_deg(got["vt"][:k // 2], ref["vt"][:k // 2]).max())
            r["max_angle_all_deg"] = float(_angles_deg(got["vt"], ref["vt"]).max())
            r["ev_max_rel_err"] = float(np.max(np.abs(got["ev"] / ref["ev"] - 1)))
            r["steady_min_s"] = min(r["steady_s"])
    finally:
        for r in rows:
            if "components" in r and os.path.exists(r["components"]):
                os.remove(r["components"])
        if not args.keep and os.path.exists(path):
            os.remove(path)
    payload["runs"] = rows
    payload["load_average_at_end"] = os.getloadavg()
    m = payload["machine"]
    table = markdown_table(rows, [("devices", "devices"), ("steady_min_s", "steady s"),
                                  ("compile_s", "compile s (AOT)"),
                                  ("place_s", "place on mesh s"), ("peak_rss_mb", "peak RSS MiB"),
                                  ("max_angle_top_half_deg", "max angle top k/2 vs 1 dev (deg)"),
                                  ("max_angle_all_deg", "max angle all k vs 1 dev (deg)"),
                                  ("ev_max_rel_err", "max rel. err EV vs 1 dev")])
    text = (f"# Row-sharded randomized PCA: 1, 2, 4 devices\n\n"
            f"Machine: {m.get('cpu_model', m['processor'])}, {m['cpu_count']} cores; jax {m['jax']} "
            f"({m['jax_backend']}); load average at start {m['load_average_at_start']} (the machine is shared "
            f"with other jobs; per-run load in the JSON). No accelerator: the devices are XLA's forced host "
            f"devices (`--xla_force_host_platform_device_count`), which share the same {m['cpu_count']} "
            f"cores, so more devices cannot run faster here; the table shows the overhead of the SPMD "
            f"partitioning and the agreement of the results, not a speed-up.\n\n"
            f"Data: {args.n} x {args.p} float32 GAN-like rows (memory-mapped .npy, placed row-sharded), "
            f"k = {args.k}, `randomized_svd(center=True)` with the default Krylov sizes (the kernel of "
            f"`PCA(solver='randomized', mesh=...)`), one BLAS thread; compiled ahead of time "
            f"(`jit(...).lower(...).compile()`, timed), then {args.repeats} timed call(s).\n\n" + table)
    write_results("bench_scale", payload, text, args.out)


# ---------------------------------------------------------------- precision


def run_precision(args):
    import jax
    import jax.numpy as jnp
    from threadpoolctl import threadpool_limits

    from benchmarks.datasets import gan_like
    from jaxfactor.randomized import randomized_svd, randomized_svd_source
    from jaxfactor.sources import ArraySource

    n, p, k = args.prec_n, args.prec_p, args.prec_k
    x = gan_like(n, p, seed=1)
    x64 = x.astype(np.float64)
    mean = x64.mean(0)
    cov = (x64 - mean).T @ (x64 - mean) / (n - 1)
    w, v = np.linalg.eigh(cov)
    exact_ev, exact_vt = w[::-1][:k], v[:, ::-1][:, :k].T
    del cov
    exact_cap = float(np.sum(exact_ev))

    def captured(vt):
        q = np.linalg.qr(np.asarray(vt, np.float64).T)[0]
        y = (x64 - mean) @ q
        return float(np.sum(y * y) / (n - 1))

    xj = jnp.asarray(x)
    key = jax.random.key(0)
    results = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for mode in ("in_memory", "streaming"):
            for prec in ("float32", "tf32", "bf16"):
                def fit():
                    if mode == "in_memory":
                        r = randomized_svd(xj, k, key=key, center=True, compute_u=False, precision=prec)
                    else:
                        r, _ = randomized_svd_source(ArraySource(x), k, key=key, block_rows=2048, precision=prec)
                    return jax.block_until_ready(r)
                t0 = time.perf_counter()
                r = fit()
                first = time.perf_counter() - t0
                results[(mode, prec)] = (np.asarray(r.vt), np.asarray(r.s) ** 2 / (n - 1), first)
    rows = []
    for (mode, prec), (vt, ev, first) in results.items():
        vt32, ev32 = results[(mode, "float32")][:2]
        rows.append({
            "mode": mode, "precision": prec, "cpu_first_s": first,
            "ev_max_rel_err_vs_f32": float(np.max(np.abs(ev / ev32 - 1))),
            "ev_max_rel_err_top10_vs_f32": float(np.max(np.abs(ev[:10] / ev32[:10] - 1))),
            "angle_top10_deg_vs_f32": float(_angles_deg(vt[:10], vt32[:10]).max()),
            "angle_top_half_deg_vs_f32": float(_angles_deg(vt[:k // 2], vt32[:k // 2]).max()),
            "angle_all_deg_vs_f32": float(_angles_deg(vt, vt32).max()),
            "captured_over_f32": captured(vt) / captured(vt32),
            "captured_over_exact": captured(vt) / exact_cap,
            "ev_max_rel_err_vs_exact": float(np.max(np.abs(ev / exact_ev - 1))),
            "angle_top_half_deg_vs_exact": float(_angles_deg(vt[:k // 2], exact_vt[:k // 2]).max()),
        })
    payload = {"machine": machine_info(), "data": {"generator": "benchmarks.datasets.gan_like", "n": n,
                                                   "p": p, "k": k, "seed": 1},
               "settings": "randomized_svd / randomized_svd_source, center=True, Krylov default sizes, key 0; "
                           "streaming block_rows=2048", "rows": rows}
    m = payload["machine"]
    cols = [("mode", "mode"), ("precision", "precision"),
            ("ev_max_rel_err_top10_vs_f32", "EV rel. err top 10 vs f32"),
            ("ev_max_rel_err_vs_f32", "EV rel. err all k vs f32"),
            ("angle_top10_deg_vs_f32", "angle top 10 vs f32 (deg)"),
            ("angle_top_half_deg_vs_f32", "angle top k/2 vs f32 (deg)"),
            ("angle_all_deg_vs_f32", "angle all k vs f32 (deg)"),
            ("captured_over_f32", "captured var / f32"), ("captured_over_exact", "captured var / exact"),
            ("ev_max_rel_err_vs_exact", "EV rel. err vs exact"),
            ("angle_top_half_deg_vs_exact", "angle top k/2 vs exact (deg)"),
            ("cpu_first_s", "CPU s incl. compile (not meaningful)")]
    text = (f"# Mixed precision of the products with X: accuracy against float32\n\n"
            f"Data: GAN-like rows (`benchmarks/datasets.py` gan_like, seed 1), N = {n}, p = {p}, k = {k}; "
            f"randomized PCA with the default Krylov range finder, key 0. 'tf32' is emulated on CPU by "
            f"rounding both operands to 10 mantissa bits (`lax.reduce_precision`) before a float32 product "
            f"-- the operand rounding of TF32 tensor cores; 'bf16' casts operands to bfloat16 with float32 "
            f"accumulation (`preferred_element_type`). QR, SVD, moments and accumulators are float32 in "
            f"every row. Exact = float64 eigendecomposition of the covariance.\n\n"
            f"Machine: {m.get('cpu_model', m['processor'])}, {m['cpu_count']} cores, no GPU: the CPU times "
            f"below do not say anything about GPU speed (no tensor cores here; XLA's CPU backend emulates "
            f"bf16 products), and were taken unlocked on a loaded machine.\n\n" + markdown_table(rows, cols))
    write_results("precision", payload, text, args.out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--path", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--task", choices=("scale", "precision"), default="scale")
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--n", type=int, default=40_000)
    ap.add_argument("--p", type=int, default=16_384)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=1, help="timed calls after compilation")
    ap.add_argument("--dir", default="/tmp", help="where the data file goes")
    ap.add_argument("--keep", action="store_true", help="keep the data file")
    ap.add_argument("--prec-n", type=int, default=10_000)
    ap.add_argument("--prec-p", type=int, default=4096)
    ap.add_argument("--prec-k", type=int, default=100)
    ap.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    args = ap.parse_args()
    if args.worker:
        args.devices = args.devices[0]
        print(json.dumps(worker_scale(args)))
    elif args.task == "precision":
        run_precision(args)
    else:
        run_scale(args)


if __name__ == "__main__":
    main()
