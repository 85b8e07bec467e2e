"""Out-of-core streaming PCA: a float32 ``.npy`` larger than the memory the fit may use.

Steps (each fit in its own process, so that its peak memory -- ``VmHWM`` -- is its own):

1. ``write`` -- an ``N x p`` float32 file (default 200000 x 16384, 13.1 GB) of
   GAN-like rows (the generator of ``benchmarks/datasets.py``, ``seed=0``),
   produced block by block straight into ``np.lib.format.open_memmap`` in
   ``--dir`` (default ``/tmp``). Not timed as part of the fit; run outside
   the shared benchmark lock.
2. ``fit`` -- ``randomized_svd_source`` (the kernel of
   ``PCA(k, solver='streaming')``; called directly for its per-pass progress
   callback) over ``NpySource(path)``: Krylov range finder with the default
   sizes of ``range_params`` (k=100: blocks of 55 columns, 5 iterations, a basis
   of 275; 6 passes over the file), ``block_rows`` rows per block, float32.
   Compilation is excluded: a warm-up fit on an in-memory slice with the same
   block shapes runs first, and its time is reported. Held under
   ``/tmp/jaxfactor-bench.lock``.
3. ``accuracy`` -- on the first ``--subset`` rows: streaming (same settings,
   from the file) vs in-memory ``PCA(solver='randomized')`` (same settings),
   and both against a high-accuracy in-memory reference (Krylov, 12
   iterations): principal angles, explained-variance relative error, captured
   variance. The full-file components are also compared with the subset's
   (sampling differs, so that angle is a sanity check only).

The file is deleted at the end unless ``--keep``.

    python benchmarks/bench_ooc.py [--dir /tmp] [--keep] [--n 200000] [--p 16384] [--k 100]
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine_info, markdown_table, peak_rss_mb, run_worker, write_results  # noqa: E402
from benchmarks.datasets import gan_like  # noqa: E402

LOCK = "/tmp/jaxfactor-bench.lock"


def write_file(path: str, n: int, p: int, *, rank: int = 1000, decay: float = 0.8, noise: float = 0.05,
               seed: int = 0, block: int = 2048) -> float:
    """Write ``benchmarks.datasets.gan_like(n, p, seed=seed)`` block by block into
    a ``.npy`` memmap (the same random stream, so the same rows); returns seconds."""
    t0 = time.perf_counter()
    out = np.lib.format.open_memmap(path + ".part", mode="w+", dtype=np.float32, shape=(n, p))
    gan_like(n, p, rank=rank, decay=decay, noise=noise, seed=seed, block=block, out=out)
    out.flush()
    del out
    os.replace(path + ".part", path)
    return time.perf_counter() - t0


def _settings(args):
    return dict(k=args.k, block_rows=args.block_rows, method="krylov")


def worker_fit(args) -> dict:
    import jax
    import jax.numpy as jnp
    from threadpoolctl import threadpool_limits

    from jaxfactor.randomized import randomized_svd_source, range_params
    from jaxfactor.sources import ArraySource, NpySource

    src = NpySource(args.path)
    n, p = src.n_samples, src.n_features
    key = jax.random.key(0)
    kw = dict(key=key, method="krylov", center=True, block_rows=args.block_rows, dtype=jnp.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        # warm-up: same block shapes (a full block and the short last one), same sizes
        tail = n % args.block_rows
        warm_rows = args.block_rows + (tail if tail else 0)
        t0 = time.perf_counter()
        warm = ArraySource(src.read(0, warm_rows))
        # same range-finder sizes as the real run (range_params caps by n otherwise)
        params = range_params(args.k, n, p)
        randomized_svd_source(warm, args.k, n_iter=params.n_iter, block_size=params.block_size, **kw)
        compile_s = time.perf_counter() - t0
        del warm
        rss_after_warm = peak_rss_mb()
        marks = []

        def progress(stage, done, total):
            if done == total:
                marks.append((stage, time.perf_counter()))

        t0 = time.perf_counter()
        svd, mom = randomized_svd_source(src, args.k, progress=progress, **kw)
        s = np.asarray(svd.s)
        total_s = time.perf_counter() - t0
    passes = []
    prev = t0
    for stage, t in marks:
        passes.append({"stage": stage, "seconds": t - prev})
        prev = t
    ev = s ** 2 / (n - 1)
    return {"n": n, "p": p, "k": args.k, "block_rows": args.block_rows, "params": list(params),
            "file_gb": os.path.getsize(args.path) / 1e9, "total_s": total_s, "passes": passes,
            "warmup_compile_s": compile_s, "peak_rss_mb_after_warmup": rss_after_warm,
            "peak_rss_mb": peak_rss_mb(), "read_gb_per_s": len(passes) * os.path.getsize(args.path) / 1e9 / total_s,
            "ev": ev.tolist(), "total_variance": float(np.sum(np.asarray(mom.variance))),
            "vt_head": np.asarray(svd.vt[:10]).tolist()}


def _angles_deg(a, b):
    qa = np.linalg.qr(np.asarray(a, np.float64).T)[0]
    qb = np.linalg.qr(np.asarray(b, np.float64).T)[0]
    cos = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))[::-1]


def _captured(x, mean, comps):
    """Variance of the centred rows captured by the row space of ``comps``,
    computed in float64 in blocks."""
    q = np.linalg.qr(np.asarray(comps, np.float64).T)[0]
    tot = 0.0
    for lo in range(0, x.shape[0], 4096):
        y = (np.asarray(x[lo:lo + 4096], np.float64) - mean) @ q
        tot += float(np.sum(y * y))
    return tot / (x.shape[0] - 1)


def worker_accuracy(args) -> dict:
    from jaxfactor import PCA
    from jaxfactor.sources import ArraySource, NpySource

    full = NpySource(args.path)
    m = min(args.subset, full.n_samples)

    class Head(ArraySource):  # the first m rows of the file, read by the file reader
        def __init__(self):
            self.n_samples, self.n_features, self.dtype = m, full.n_features, full.dtype

        def read(self, a, b):
            return full.read(a, min(b, m))

    x = np.asarray(full.read(0, m))
    mean = x.astype(np.float64).mean(0)
    out = {"subset_rows": m}
    fits = {}
    for name, est, data in (
            ("streaming", PCA(args.k, solver="streaming", block_rows=args.block_rows, random_state=0), Head()),
            ("in_memory_randomized", PCA(args.k, solver="randomized", random_state=0), x),
            ("reference_krylov_12", PCA(args.k, solver="randomized", n_iter=12, random_state=0), x)):
        t0 = time.perf_counter()
        est.fit(data)
        fits[name] = est
        out[f"{name}_s"] = time.perf_counter() - t0
    ref = fits["reference_krylov_12"]
    ref_cap = _captured(x, mean, ref.components_)
    for name in ("streaming", "in_memory_randomized"):
        est = fits[name]
        ang = _angles_deg(est.components_, ref.components_)
        out[name] = {
            "max_angle_top_half_deg_vs_ref": float(_angles_deg(est.components_[:args.k // 2],
                                                               ref.components_[:args.k // 2]).max()),
            "max_angle_all_deg_vs_ref": float(ang.max()),
            "ev_max_rel_err_vs_ref": float(np.max(np.abs(est.explained_variance_ / ref.explained_variance_ - 1))),
            "captured_var_over_ref": _captured(x, mean, est.components_) / ref_cap,
        }
    a, b = fits["streaming"], fits["in_memory_randomized"]
    out["streaming_vs_in_memory"] = {
        "max_angle_all_deg": float(_angles_deg(a.components_, b.components_).max()),
        "max_component_abs_diff_top10": float(np.max(np.abs(a.components_[:10] - b.components_[:10]))),
        "ev_max_rel_err": float(np.max(np.abs(a.explained_variance_ / b.explained_variance_ - 1))),
    }
    out["ref_components_head"] = ref.components_[:10].tolist()
    out["ref_ev"] = ref.explained_variance_.tolist()
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--task", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dir", default="/tmp", help="directory for the .npy file (default /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the .npy file")
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--p", type=int, default=16_384)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--block-rows", type=int, default=4096)
    ap.add_argument("--subset", type=int, default=20_000)
    ap.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    ap.add_argument("--name", default="bench_ooc")
    args = ap.parse_args()
    if args.worker:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        res = worker_fit(args) if args.task == "fit" else worker_accuracy(args)
        print(json.dumps(res))
        return

    path = os.path.join(args.dir, f"jaxfactor_ooc_{args.n}x{args.p}.npy")
    payload = {"machine": machine_info(), "settings": vars(args), "path": path}
    if os.path.exists(path) and np.load(path, mmap_mode="r").shape == (args.n, args.p):
        payload["write_s"] = None
        print(f"reusing {path}", flush=True)
    else:
        print(f"writing {path} ...", flush=True)
        payload["write_s"] = write_file(path, args.n, args.p)
        print(f"  written in {payload['write_s']:.0f} s", flush=True)
    common = [f"--path={path}", f"--k={args.k}", f"--block-rows={args.block_rows}", f"--subset={args.subset}"]
    try:
        with open(LOCK, "w") as lock:
            t_wait = time.perf_counter()
            fcntl.flock(lock, fcntl.LOCK_EX)
            payload["lock_wait_s"] = time.perf_counter() - t_wait
            payload["load_average_at_fit"] = os.getloadavg()
            print("fitting ...", flush=True)
            payload["fit"] = run_worker(__file__, ["--task=fit", *common], timeout=3600)
            print(json.dumps({k: v for k, v in payload["fit"].items() if k not in ("ev", "vt_head")}), flush=True)
            payload["accuracy"] = run_worker(__file__, ["--task=accuracy", *common], timeout=3600)
            payload["load_average_at_end"] = os.getloadavg()
    finally:
        if not args.keep and os.path.exists(path):
            os.remove(path)
    fit, acc = payload["fit"], payload["accuracy"]
    if "vt_head" in fit and "ref_components_head" in acc:
        payload["full_vs_subset_top10_max_angle_deg"] = float(
            _angles_deg(np.asarray(fit["vt_head"]), np.asarray(acc["ref_components_head"])).max())
    fit.pop("vt_head", None)
    acc.pop("ref_components_head", None)
    write_results(args.name, payload, render(payload), args.out)


def render(payload) -> str:
    m = payload["machine"]
    fit, acc = payload.get("fit", {}), payload.get("accuracy", {})
    lines = ["# Out-of-core streaming PCA", "",
             f"Machine: {m.get('cpu_model', m['processor'])}, {m['cpu_count']} cores; jax {m['jax']} "
             f"({m['jax_backend']}); load average at fit {payload.get('load_average_at_fit')} (the machine is "
             f"shared with other jobs). File in `{os.path.dirname(payload['path'])}`; the page cache "
             f"(about 20 GB free at the start) may hold part of the file between passes.", ""]
    if payload.get("note"):
        lines += [payload["note"], ""]
    if "error" in fit:
        return "\n".join(lines + [f"Fit failed: {fit['error']}"]) + "\n"
    lines += [f"Data: {fit['n']} x {fit['p']} float32 GAN-like rows ({fit['file_gb']:.1f} GB), written in "
              f"{payload['write_s'] or float('nan'):.0f} s. Streaming randomized PCA k={fit['k']}, Krylov range finder "
              f"{fit['params']} (method, iterations, block, basis), {fit['block_rows']} rows per block, float32; "
              f"{len(fit['passes'])} passes over the file.", "",
              markdown_table([{"what": "total fit (steady, compile excluded)", "value": fit["total_s"], "unit": "s"},
                              *({"what": f"pass {i + 1} ({p['stage']})", "value": p["seconds"], "unit": "s"}
                                for i, p in enumerate(fit["passes"])),
                              {"what": "warm-up fit incl. compile (2 blocks)", "value": fit["warmup_compile_s"], "unit": "s"},
                              {"what": "data streamed (passes x file size / total time)", "value": fit["read_gb_per_s"], "unit": "GB/s"},
                              {"what": "peak RSS of the fitting process (VmHWM)", "value": fit["peak_rss_mb"], "unit": "MiB"},
                              {"what": "file size", "value": fit["file_gb"] * 1e9 / 2**20, "unit": "MiB"}],
                             [("what", "measure"), ("value", "value"), ("unit", "unit")]), ""]
    if "error" not in acc:
        rows = []
        for name in ("streaming", "in_memory_randomized"):
            r = dict(acc[name])
            r["method"] = name
            r["fit_s"] = acc[f"{name}_s"]
            rows.append(r)
        lines += [f"Accuracy on the first {acc['subset_rows']} rows, against an in-memory Krylov PCA with 12 "
                  f"iterations (reference; {acc['reference_krylov_12_s']:.1f} s):", "",
                  markdown_table(rows, [("method", "method"), ("fit_s", "fit s"),
                                        ("max_angle_top_half_deg_vs_ref", "max angle top k/2 (deg)"),
                                        ("max_angle_all_deg_vs_ref", "max angle all k (deg)"),
                                        ("ev_max_rel_err_vs_ref", "max rel. err EV"),
                                        ("captured_var_over_ref", "captured var / ref")]), "",
                  f"Streaming vs in-memory randomized on the subset (same key and sizes): "
                  f"{json.dumps(acc['streaming_vs_in_memory'])}.", ""]
        if "full_vs_subset_top10_max_angle_deg" in payload:
            lines += [f"Full-file top-10 components vs the subset reference's: largest principal angle "
                      f"{payload['full_vs_subset_top10_max_angle_deg']:.3g} deg (different samples: a sanity "
                      f"check only).", ""]
    else:
        lines += [f"Accuracy step failed: {acc['error']}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
