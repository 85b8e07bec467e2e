"""jaxfactor SCA vs its reference implementation (R ``epca::sca``) and scikit-learn's
sparse PCA, side by side on the same GAN-like data.

Cases: ``N x p x k`` rows of ``benchmarks.datasets.gan_like`` data (seed 0) at a budget
``gamma = c sqrt(p k)`` (``c`` = 1, epca's default, or 0.5), from ``--cases``
(default :data:`CASES`: issue 18's five settings and GAN-scale ones up to
p = 16384, k = 50).

Methods
  * ``epca``: R's ``epca::sca(x, k, gamma)`` (v1.1.0, its defaults) through
    ``Rscript`` on the same data (float64), timed by R's clock around ``sca``.
    Needs R and the epca package (README: Debian's or CRAN's R, epca from
    CRAN; ``../shared/peers/epca/install.sh`` here); without them the peer is
    skipped and the report says so. Run only where it is expected to finish in
    ``--epca-timeout`` (15 min); beyond, a labelled extrapolation.
  * ``jaxfactor_sca``: the default ``SCA(k, gamma=...)`` (epca's map, Anderson-accelerated
    once settled: ``acceleration='auto'``). Its agreement with epca
    (largest principal angle, smallest Hungarian-matched cosine, identical zero
    pattern, ``||B||`` and cumulative PVE relative differences) is measured in
    the parent process from the saved loadings.
  * ``jaxfactor_sca_exact``: ``SCA(k, acceleration='none')``: epca's iterates one by
    one (the reference path).
  * ``jaxfactor_sca_fast``: ``SCA(k, reduced_rank='auto', varimax_start='previous')``
    (the iteration on the rank-(2k+10) randomized SVD when ``n p >= 2^24``,
    varimax warm-started, ten steps a call). Initial SVD included in the time.
  * ``jaxfactor_sca_converged``: the same with ``varimax_start='converged'`` (each warm
    varimax run to a stationary point by Barzilai-Borwein ascent).
  * ``jaxfactor_sca_matched``: the same at a larger budget ``gamma`` chosen so
    that its explained variance is at least MiniBatchSparsePCA's on the same
    case (bisection on ``gamma / (k sqrt(p))`` before the timed runs; the
    search is calibration and is not in the time; its fits are listed in
    ``gamma_search``).
  * ``sklearn_minibatch``: ``MiniBatchSparsePCA(k, random_state=0)`` with
    scikit-learn's defaults (``alpha=1``).
  * ``sklearn_sparsepca``: ``SparsePCA(k, random_state=0)`` (p=2048, k=20 only).

Every method runs in its own process on the same data (written once to a
``.npy`` file and memory-mapped), under a wall-clock limit; a peer that does
not finish is reported as such, with a linear-in-p extrapolation from the
largest case (same k) where it finished, labelled as an extrapolation, never
as a measurement. jaxfactor methods run twice in their process: the first call
includes JIT compilation, the second is the steady-state time reported
('compile s' is the difference). Accuracy is measured the same way for every
method in the parent process: the share of variance of the centred data in
the span of the k loadings (``||X_c P||_F^2 / ||X_c||_F^2``), next to the top-k
PCA optimum (jaxfactor randomized PCA), and the fraction of exact zeros in
the loadings.

    flock /tmp/cpu.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        python benchmarks/bench_sca.py [--cases 3000x512x10x1 ...] [--skip METHOD ...] [--merge JSON] [--out DIR]
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

CASES = [(3000, 512, 10, 1.0), (3000, 512, 10, 0.5), (5000, 1024, 20, 1.0),
         (5000, 1024, 20, 0.5), (10000, 2048, 20, 1.0), (10000, 4096, 20, 1.0),
         (10000, 4096, 50, 1.0), (10000, 16384, 50, 1.0)]
# run order within a case: the peers first (MiniBatchSparsePCA's explained variance sets
# the matched budget; epca's loadings are what the others are compared with)
METHODS = ["epca", "sklearn_minibatch", "jaxfactor_sca", "jaxfactor_sca_exact",
           "jaxfactor_sca_fast", "jaxfactor_sca_converged",
           "jaxfactor_sca_matched", "sklearn_sparsepca"]


def fit_once(method, x, k, gamma=None):
    """Fit once; returns ``(components (k, p), extra info dict)``."""
    if method == "epca":
        import tempfile as _tf

        from tests.test_sca_reference import run_epca

        with _tf.TemporaryDirectory() as tmp:
            res = run_epca(x, k, gamma, tmp)
        return res["loadings"].T, {"n_iter": res["n_iter"], "objective": res["b_norm"],
                                   "gamma": gamma, "epca_seconds": res["seconds"]}
    if method.startswith("jaxfactor"):
        from jaxfactor import SCA

        if method == "jaxfactor_sca":
            model = SCA(k, gamma=gamma, random_state=0)
        elif method == "jaxfactor_sca_exact":
            model = SCA(k, gamma=gamma, acceleration="none", random_state=0)
        elif method == "jaxfactor_sca_converged":
            model = SCA(k, gamma=gamma, reduced_rank="auto", varimax_start="converged",
                        random_state=0)
        else:
            model = SCA(k, gamma=gamma, reduced_rank="auto", varimax_start="previous",
                        random_state=0)
        model.fit(x)
        return model.components_, {"n_iter": model.n_iter_, "converged": model.converged_,
                                    "objective": model.objective_, "gamma": model.gamma_,
                                    "reduced_rank": model.reduced_rank_,
                                    "plan": repr(getattr(model, "plan_", None))}
    from sklearn.decomposition import MiniBatchSparsePCA, SparsePCA

    if method == "sklearn_minibatch":
        model = MiniBatchSparsePCA(k, random_state=0).fit(x)
    else:
        model = SparsePCA(k, random_state=0).fit(x)
    return model.components_, {"n_iter": int(getattr(model, "n_iter_", -1))}


def worker(method, data_path, k, out_file, repeats, gamma):
    x = np.load(data_path, mmap_mode="r")
    x = np.ascontiguousarray(x)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        comps, extra = fit_once(method, x, k, gamma)
        runs.append(extra.pop("epca_seconds", time.perf_counter() - t0))
    np.save(out_file, np.asarray(comps, np.float64 if method == "epca" else np.float32))
    result = {"seconds": runs[-1], "first_call_seconds": runs[0],
              "compile_seconds": max(runs[0] - runs[-1], 0.0) if repeats > 1 else 0.0,
              "peak_rss_mb": peak_rss_mb(), **extra}
    print(json.dumps(result, default=float))


def run_worker(method, data_path, k, out_file, timeout, repeats, gamma=None):
    cmd = [sys.executable, __file__, "--worker", method, data_path, str(k), out_file,
           str(repeats), "none" if gamma is None else repr(float(gamma))]
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
    from jaxfactor import PCA

    pca = PCA(k, solver="randomized", random_state=0).fit(x)
    return float(np.sum(pca.explained_variance_ratio_))



def search_gamma(data_path, k, target, out_file, fits):
    """Smallest budget (on a log grid, by bisection) whose fit explains at least
    ``target``; prints the fits as JSON. ``c = gamma / (k sqrt(p))`` lies in
    ``[1/sqrt(k), 1]``: the default budget and the inactive one."""
    from jaxfactor import SCA

    x = np.ascontiguousarray(np.load(data_path, mmap_mode="r"))
    p = x.shape[1]
    mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    total = float(np.sum((x - mean).astype(np.float64) ** 2))
    lo, hi = np.log(1 / np.sqrt(k)), 0.0
    tried, best = [], None
    for _ in range(fits):
        c = float(np.exp((lo + hi) / 2))
        t0 = time.perf_counter()
        model = SCA(k, gamma=c * k * np.sqrt(p), reduced_rank="auto",
                    varimax_start="previous", random_state=0).fit(x)
        ev = explained_share(x, model.components_, mean, total)
        tried.append({"c": c, "gamma": model.gamma_, "explained": ev,
                      "sparsity": model.sparsity_, "seconds": time.perf_counter() - t0})
        if ev >= target:
            hi, best = np.log(c), c
        else:
            lo = np.log(c)
    if best is None:
        best = 1.0
    print(json.dumps({"c": best, "gamma": best * k * np.sqrt(p), "tried": tried}))


COLUMNS = [("n", "N"), ("p", "p"), ("k", "k"), ("gamma_factor", "gamma / sqrt(pk)"),
           ("method", "method"), ("seconds", "steady s"), ("compile_seconds", "compile s"),
           ("n_iter", "iters"), ("converged", "conv."), ("speedup_vs_epca", "x vs epca"),
           ("speedup_vs_minibatch", "x vs MiniBatchSparsePCA"), ("angle_deg", "angle to epca (deg)"),
           ("min_matched_cos", "min matched cos"), ("zero_pattern_same", "same zeros"),
           ("b_norm_rel", "rel. diff norm B"), ("cpve_rel", "rel. diff cPVE"),
           ("explained", "expl. var"), ("pca_explained", "PCA top-k"), ("sparsity", "zeros"),
           ("objective", "norm of B"), ("error", "note"),
           ("extrapolated_seconds", "extrap. s (NOT measured)")]


def render(payload: dict) -> str:
    """The Markdown report of a results payload."""
    info, rows = payload["machine"], payload["results"]
    loads = payload.get("loads", [info["load_average_at_start"]])
    return (f"# SCA benchmark\n\n"
            f"GAN-like data (benchmarks/datasets.gan_like, seed 0), N x p, k components, "
            f"budget gamma = c sqrt(p k). epca: {payload.get('epca', 'not run')}. "
            f"Machine: {info.get('cpu_model', info['processor'])}, {info['cpu_count']} cores; "
            f"jax {info['jax']} ({info['jax_backend']}), scikit-learn {info['sklearn']}, "
            f"numpy {info['numpy']}; BLAS (threadpoolctl) {info['blas']}. Load averages "
            f"(uptime) at the start of each part: {loads}; the machine is shared with other "
            f"jobs, so absolute times are inflated; compare ratios within a case. "
            f"'steady s': jaxfactor's second call in its process ('compile s' first minus "
            f"second), epca's own clock around sca() (R start-up and data transfer "
            f"excluded), scikit-learn's one fit. Agreement columns compare with epca's "
            f"loadings on the same case: largest principal angle between the spans, smallest "
            f"Hungarian-matched column |cosine|, fraction of entries with the same zero/non-zero "
            f"status, relative differences of ||B|| and of the cumulative PVE (the share of "
            f"variance in the span of the k loadings, 'expl. var', same formula for every "
            f"method). 'x vs' columns divide the peer's time by jaxfactor's steady time. "
            f"Extrapolated times are estimates, labelled, not measurements.\n\n"
            + markdown_table(rows, COLUMNS)
            + (f"\n{payload['what_ran']}\n" if payload.get("what_ran") else ""))


PEER_SHARE = {}  # k -> MiniBatchSparsePCA's explained variance / PCA's, largest p it finished


def agreement_with(ref, comps, objective, explained):
    """The agreement measures of loadings ``comps`` (k, p) with epca's row ``ref``."""
    from tests.test_sca_reference import agreement

    return agreement(ref["loadings"], ref["objective"], [ref["explained"]],
                     np.asarray(comps, np.float64).T, objective, [explained])


def run_case(case, tmp, args):
    n, p, k, c = case
    x = gan_like(n, p, seed=0)
    data_path = str(Path(tmp) / f"x_{n}_{p}.npy")
    np.save(data_path, x)
    mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    total = float(np.sum((x - mean).astype(np.float64) ** 2))
    gamma = c * np.sqrt(p * k)
    rows = []
    optimum = pca_share(x, k)
    methods = [m for m in METHODS if m not in args.skip]
    if (n, p, k) != (10000, 2048, 20):
        methods = [m for m in methods if m != "sklearn_sparsepca"]
    if n * p * k > args.epca_max_npk or not args.epca:
        methods = [m for m in methods if m != "epca"]
    if c != 1.0:   # the budget-matched runs and the peers' own budget only at the default
        methods = [m for m in methods if m not in ("jaxfactor_sca_matched", "sklearn_minibatch",
                                                   "sklearn_sparsepca")]
    peer_ev, ref = None, None
    for method in methods:
        out = str(Path(tmp) / f"{method}_{n}_{p}_{k}.npy")
        jax_method = method.startswith("jaxfactor")
        timeout = {"epca": args.epca_timeout, "sklearn_sparsepca": args.sparsepca_timeout}.get(
            method, args.jax_timeout if jax_method else args.peer_timeout)
        repeats = args.jax_calls if jax_method else 1
        fit_gamma, extra = (gamma if method != "jaxfactor_sca_matched" else None), {}
        if method == "jaxfactor_sca_matched":
            target, target_note = peer_ev, "MiniBatchSparsePCA's explained variance here"
            if target is None and k in PEER_SHARE:
                target = PEER_SHARE[k] * optimum
                target_note = ("the peer did not finish here: its share of the PCA optimum at "
                               "the largest p where it finished, times this case's optimum")
            if target is None:
                continue
            extra = {"target_explained": target, "target_note": target_note}
            t0 = time.perf_counter()
            cmd = [sys.executable, __file__, "--search", data_path, str(k), repr(target),
                   str(args.search_fits)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                rows.append({"method": method, "n": n, "p": p, "k": k, "gamma_factor": c,
                             "error": "budget search failed: " + proc.stderr.strip()[-200:]})
                continue
            found = json.loads(proc.stdout.strip().splitlines()[-1])
            fit_gamma = found["gamma"]
            extra.update(gamma_search=found["tried"],
                         gamma_search_seconds=time.perf_counter() - t0)
        print(f"== {n}x{p} k={k} c={c} {method}", flush=True)
        res = run_worker(method, data_path, k, out, timeout, repeats, fit_gamma)
        res.update(extra)
        res.update(method=method, n=n, p=p, k=k, gamma_factor=c, calls=repeats,
                   pca_explained=optimum)
        if "error" not in res:
            comps = np.load(out)
            res["explained"] = explained_share(x, comps, mean, total)
            res["explained_vs_pca"] = res["explained"] / optimum
            res["sparsity"] = float(np.mean(comps == 0))
            if "gamma" in res:
                res["gamma_factor"] = res["gamma"] / np.sqrt(p * k)
            if method == "sklearn_minibatch":
                peer_ev = res["explained"]
                PEER_SHARE[k] = peer_ev / optimum
            if method == "epca":
                ref = {"loadings": comps.T.astype(np.float64), "objective": res["objective"],
                       "explained": res["explained"]}
            elif ref is not None and method in ("jaxfactor_sca", "jaxfactor_sca_exact",
                                                "jaxfactor_sca_fast",
                                                "jaxfactor_sca_converged"):
                res.update(agreement_with(ref, comps, res["objective"], res["explained"]))
        print(json.dumps(res, default=float), flush=True)
        rows.append(res)
    return rows


def finish_rows(rows):
    """Extrapolations for peers that did not run or finish, speed-ups against the peers."""
    for r in rows:
        r.pop("speedup_vs_minibatch", None)
        r.pop("speedup_vs_epca", None)
        if "seconds" not in r and r["method"].startswith("sklearn"):
            done = [q for q in rows if q["method"] == r["method"] and q["k"] == r["k"]
                    and q["n"] == r["n"] and "seconds" in q and q["p"] < r["p"]]
            if done:
                base = max(done, key=lambda q: q["p"])
                r["extrapolated_seconds"] = base["seconds"] * r["p"] / base["p"]
                r["extrapolated_from"] = f"p={base['p']} (linear in p; not measured)"
    for r in rows:
        if not (r["method"].startswith("jaxfactor") and "seconds" in r):
            continue
        for peer_name, key in (("sklearn_minibatch", "speedup_vs_minibatch"),
                               ("epca", "speedup_vs_epca")):
            peer = next((q for q in rows if (q["n"], q["p"], q["k"]) == (r["n"], r["p"], r["k"])
                         and q.get("gamma_factor") == r.get("gamma_factor")
                         and q["method"] == peer_name), None)
            if peer is None:
                continue
            if "seconds" in peer:
                r[key] = peer["seconds"] / r["seconds"]
            elif "extrapolated_seconds" in peer:
                r[key] = peer["extrapolated_seconds"] / r["seconds"]
                r[key.replace("speedup", "note")] = "against an extrapolated time (not measured)"
    return rows


def parse_case(text):
    n, p, k, c = text.split("x")
    return int(n), int(p), int(k), float(c)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", type=parse_case, default=CASES,
                    help="cases as NxPxKxC (C = gamma / sqrt(p k)), e.g. 3000x512x10x1")
    ap.add_argument("--skip", nargs="*", default=[], help="methods not to run")
    ap.add_argument("--merge", metavar="JSON", help="add these results to an earlier results JSON")
    ap.add_argument("--out", default=None, help="output directory (default benchmarks/results)")
    ap.add_argument("--peer-timeout", type=float, default=900.0,
                    help="wall-clock limit per scikit-learn fit, seconds (15 min)")
    ap.add_argument("--epca-timeout", type=float, default=900.0,
                    help="wall-clock limit per epca fit, seconds (15 min)")
    ap.add_argument("--epca-max-npk", type=float, default=10000 * 2048 * 20,
                    help="run epca only up to this N p k (it took 114 s at 10000 x 2048 x 20; "
                         "its time grows with N p k and with its iterations)")
    ap.add_argument("--jax-timeout", type=float, default=900.0,
                    help="wall-clock limit per jaxfactor worker (both calls), seconds")
    ap.add_argument("--sparsepca-timeout", type=float, default=900.0,
                    help="wall-clock limit of the SparsePCA fit, seconds")
    ap.add_argument("--jax-calls", type=int, default=2,
                    help="jaxfactor calls per worker: 2 reports the second (steady) call, "
                         "1 the first call, JIT compilation included")
    ap.add_argument("--search-fits", type=int, default=4,
                    help="fits of the bisection for the matched budget")
    ap.add_argument("--what-ran", default=None, help="a note for the report")
    ap.add_argument("--render", metavar="JSON", help="rewrite the Markdown of a results JSON")
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    ap.add_argument("--search", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        method, data, k, out, repeats, gamma = args.worker
        worker(method, data, int(k), out, int(repeats), None if gamma == "none" else float(gamma))
        return
    if args.search:
        data, k, target, fits = args.search
        search_gamma(data, int(k), float(target), None, int(fits))
        return
    if args.render:
        path = Path(args.render)
        path.with_suffix(".md").write_text(render(json.loads(path.read_text())))
        return
    from tests.test_sca_reference import epca_available

    args.epca = "epca" not in args.skip and epca_available()
    epca_note = ("R epca 1.1.0 through Rscript" if args.epca else
                 "skipped (R or the epca package not installed)" if "epca" not in args.skip
                 else "skipped (--skip)")
    if not args.epca and "epca" not in args.skip:
        print("epca: R or the epca package is not installed; skipping that peer", flush=True)
    info = machine_info()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            rows += run_case(case, tmp, args)
    loads = [uptime]
    key = lambda r: (r["n"], r["p"], r["k"], r.get("gamma_factor"))  # noqa: E731
    if args.merge:
        old = json.loads(Path(args.merge).read_text())
        done = {key(q) for q in rows}
        rows = [r for r in old["results"] if "n" in r and key(r) not in done] + rows
        loads = old.get("loads", []) + loads
        if old.get("what_ran") and args.what_ran:
            args.what_ran = old["what_ran"] + " " + args.what_ran
    rows.sort(key=lambda r: (r["n"] * r["p"], r["k"], -(r.get("gamma_factor") or 0),
                             METHODS.index(r["method"]) if r["method"] in METHODS else 99))
    payload = {"benchmark": "sca", "quick": False, "machine": info, "loads": loads,
               "epca": epca_note, "results": finish_rows(rows), "what_ran": args.what_ran,
               "note": ("shared 2-core machine with other jobs running: absolute times are "
                        "inflated and noisy; compare ratios measured in the same run")}
    table = render(payload)
    j, m = write_results("bench_sca", payload, table, Path(args.out) if args.out else None)
    print(table)
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
