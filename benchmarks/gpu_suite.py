"""The GPU suite: every GPU-specific path of jaxfactor, timed and checked, in one command.

    PYTHONPATH=. python3 benchmarks/gpu_suite.py OUT_DIR            # on the GPU (< 6 min)
    PYTHONPATH=. python3 benchmarks/gpu_suite.py OUT_DIR --tiny     # toy sizes on CPU (~1 CPU-minute)

On a lent GPU machine (one H100/H200, a 600 s limit per command) run exactly::

    PYTHONPATH=. python3 benchmarks/gpu_suite.py $OUT

It needs only what such a machine has preinstalled (Python 3.12, jax 0.11 with its
CUDA 13 plugin, torch 2.11, numpy, scipy, scikit-learn) and installs nothing; it
prints the versions it ran with and says where they differ from those.

Cases (in this order; sizes are the full ones, ``--tiny`` shrinks them):

* ``peaks``: measured bf16 / tf32 / float32 matmul TFLOP/s and copy GB/s of the
  device, the denominators of every "% of peak" below.
* ``pca_n10000``, ``pca_n100000``: randomized PCA of an ``N x 16384`` matrix,
  ``k = 500``, generated on the device with a known SVD (``X = 1 mu^T + U diag(sigma)
  V^T``, ``U``, ``V`` orthonormal, rank 2048, ``sigma_i ~ i^-0.8``): jaxfactor's
  block Krylov and adaptive (the in-memory default) solvers in float32 / tf32 / bf16
  operands, the float32 solver under ``jax.default_matmul_precision('highest')``
  (``N = 10000``: whether the products jaxfactor leaves at XLA's default precision,
  TF32 on NVIDIA GPUs, change its float32 results), beside ``torch.svd_lowrank``
  (float32 and TF32) on the same buffer (handed to torch by DLPack, no copy).
* ``ica_k100``, ``ica_k1000``: FastICA of ``10000 x 16384`` planted Laplace sources:
  the whitening (randomized) and the fixed-point iteration timed apart, with
  ``eigh`` and Newton-Schulz decorrelation (and Newton-Schulz with all products in
  float32), then the estimator end to end with its ``'auto'`` plan.
* ``sca_k50``: SCA of ``10000 x 16384`` GAN-like rows, ``k = 50``: the default plan
  (reduced rank) and the iteration on ``X`` itself.
* ``stream_builtin``: the built-in generator on the torch device streaming its
  ``synthesis.init`` features (1024) into a streaming PCA; the torch -> JAX
  hand-over by DLPack is shown zero-copy (the JAX array starts at the tensor's
  address, on the same device); rows/s of reading and of the fit.
* ``frechet_d2048``: Frechet distance of two ``10000 x 2048`` feature sets
  (blockwise float64 moments on the device, then the eigh-based distance).
* ``pca_exact_torch_n10000``: ``torch.linalg.svd`` of the centred ``10000 x 16384``
  matrix (the exact peer; last, as it is the slowest).

Every run is checked against a float64 reference on the CPU: the known SVD
(principal angles, captured variance, Ritz values that may not exceed the true
singular values by more than the rounding of the operands), planted ICA sources
(Amari distance, whitening and orthonormality), SCA's L1 budget and explained
variance recomputed from the data, a float64 PCA of the streamed rows, and the
Frechet distance from NumPy/SciPy. Times: the first call (compilation included),
JAX's own compile events, and the steady state (fastest of the repeats); the
model flops and bytes of each run over the steady time, beside the measured peaks;
the memory share is JAX's peak so far in the worker plus torch's peak in the run, over
the device's memory (JAX allocates on demand: ``XLA_PYTHON_CLIENT_PREALLOCATE=false``).

Budget on an H200 (model flops at ~50 TFLOP/s float32, ~400 tf32, ~790 bf16; bytes at
4.3 TB/s): the largest run, the adaptive float32 PCA at N = 10^5 (width 750, ~30 passes),
is ~7e13 flops, ~1.5 s a call; Krylov there ~1.3e13 (0.3 s); FastICA k = 1000, 200
iterations, ~8e12 flops plus 200 ``1000 x 1000`` eigh (a few s); SCA on ``X`` ~3e10 flops an
iteration; the stream is bound by the host's latent sampling (~1e5 rows/s). XLA's compile
(~40 programs, a few s each) is most of the time; the caps in :data:`CASES` bound each case
and ``--budget`` the whole.

Each case runs in a worker process with a time cap; a case that fails, runs past
its cap or crashes the worker is recorded with its error and the suite goes on
(in a new worker). ``OUT_DIR/gpu_suite.json`` and ``gpu_suite.md`` are rewritten
after every case, so they exist even when the command is cut short. No figure of
this suite has been measured on a GPU yet (``benchmarks/results/gpu/`` is for them).

Options: ``--only a,b`` runs some cases; ``--budget S`` is the time the whole
suite may take (default 330 s, so that 600 s leave time for the start);
``--inject-failure CASE`` makes that case raise at its start (the error isolation
is tested with it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import queue
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import markdown_table, write_results  # noqa: E402  (stdlib only)

MARK = "@@gpu_suite@@ "
EXPECTED = {"python": "3.12", "jax": "0.11", "torch": "2.11"}
NOMINAL_PEAKS = {"H200": {"copy_GBps": 4300.0, "bf16_TFLOPs": 790.0,
                          "source": "issue 21: measured on the lent H200"}}
# unit roundoff of the operands of each precision (float32, TF32's 10-bit and bf16's 7-bit mantissa)
UNIT = {"float32": 2.0 ** -24, "tf32": 2.0 ** -11, "bf16": 2.0 ** -8}
LAMBDA = 6.0          # the probabilistic rounding model of tests/tolerances.py (Higham & Mary)
SHORTFALL_TARGET = 4e-2   # jaxfactor._policy.ADAPTIVE_TOL: the PCA default's accuracy target

FULL = {
    "peaks": dict(m=8192, copy_mib=2048, repeats=10),
    "pca": dict(p=16384, k=500, rank=2048, decay=0.8),
    "pca_n10000": dict(n=10000),
    "pca_n100000": dict(n=100000),
    "ica": dict(n=10000, p=16384, noise=0.05, max_iter=200),
    "ica_k100": dict(k=100),
    "ica_k1000": dict(k=1000),
    "sca_k50": dict(n=10000, p=16384, k=50, rank=500),
    "stream_builtin": dict(n=50000, block_rows=8192, k=32),
    "frechet_d2048": dict(n=10000, d=2048),
    "pca_exact_torch_n10000": dict(n=10000),
}
TINY = {
    "peaks": dict(m=256, copy_mib=8, repeats=3),
    "pca": dict(p=192, k=8, rank=48, decay=0.8),
    "pca_n10000": dict(n=200),
    "pca_n100000": dict(n=200),          # the shapes of pca_n10000: its programs are reused
    # p = 640: k = 2 takes FastICA's Krylov whitening (k + 10 <= 2% of min(n, p)) as k = 100
    # does at full size, k = 8 the subspace one as k = 1000 does
    "ica": dict(n=700, p=640, noise=0.05, max_iter=200),
    "ica_k100": dict(k=2),
    "ica_k1000": dict(k=8),
    "sca_k50": dict(n=300, p=96, k=4, rank=24),
    "stream_builtin": dict(n=600, block_rows=200, k=8),
    "frechet_d2048": dict(n=400, d=32),
    "pca_exact_torch_n10000": dict(n=200),
}
# --tiny compiles with XLA's backend optimisations off: at toy sizes compilation is all
# the time there is (3x less of it), and the checks' bounds do not depend on fusion
TINY_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
# (name, hard time cap in seconds on the GPU; --tiny: 60 s each)
CASES = [
    ("peaks", 40), ("pca_n10000", 90), ("pca_n100000", 120), ("ica_k100", 45),
    ("ica_k1000", 75), ("sca_k50", 60), ("stream_builtin", 60), ("frechet_d2048", 40),
    ("pca_exact_torch_n10000", 100),
]
CASE_NAMES = [name for name, _ in CASES]
TINY_CAP = 60.0


# ===================================================================== worker side


def gamma(n, u=UNIT["float32"]):
    """Probabilistic relative error of a length-``n`` sum: ``LAMBDA sqrt(n) u``."""
    return LAMBDA * math.sqrt(max(int(n), 1)) * u


class Worker:
    """Runs cases in this process and reports them as JSON lines on stdout."""

    def __init__(self, tiny: bool, inject: str | None, hang: str | None = None):
        self.t0 = time.perf_counter()
        self.tiny = tiny
        self.inject = inject
        self.hang = hang
        self.sizes = TINY if tiny else FULL
        import jax
        import jax.monitoring
        import numpy as np
        import torch

        self.jax, self.np, self.torch = jax, np, torch
        self.backend = jax.default_backend()
        self.torch_device = "cuda" if torch.cuda.is_available() else "cpu"
        self.compile_total = 0.0
        self.compile_events = 0
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        self.peaks: dict = {}
        self.case_deadline = math.inf

    # ------------------------------------------------------------------ plumbing
    def _listen(self, event, duration, **kwargs):
        if event in ("/jax/core/compile/jaxpr_trace_duration",
                     "/jax/core/compile/jaxpr_to_mlir_module_duration",
                     "/jax/core/compile/backend_compile_duration"):
            self.compile_total += duration
            self.compile_events += 1

    def emit(self, **obj):
        sys.stdout.write(MARK + json.dumps(obj, default=_plain) + "\n")
        sys.stdout.flush()

    def say(self, msg):
        print(f"  [{time.perf_counter() - self.t0:7.1f} s] {msg}", file=sys.stderr, flush=True)

    def environment(self) -> dict:
        import platform
        from importlib import metadata

        import scipy
        import sklearn

        jax, torch = self.jax, self.torch
        versions = {"python": platform.python_version(), "jax": jax.__version__,
                    "torch": torch.__version__, "numpy": self.np.__version__,
                    "scipy": scipy.__version__, "sklearn": sklearn.__version__}
        for dist in ("jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin"):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
        mismatch = {k: f"expected {v}.x, got {versions[k]}" for k, v in EXPECTED.items()
                    if not versions[k].startswith(v)}
        dev = jax.devices()[0]
        env = {"versions": versions, "version_mismatch": mismatch, "jax_backend": self.backend,
               "jax_devices": [str(d) for d in jax.devices()],
               "device_kind": getattr(dev, "device_kind", dev.platform),
               "torch_device": self.torch_device, "torch_cuda": torch.version.cuda,
               "host_cpus": os.cpu_count(), "platform": platform.platform(),
               "XLA_PYTHON_CLIENT_PREALLOCATE": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")}
        if self.torch_device == "cuda":
            env["torch_device_name"] = torch.cuda.get_device_name(0)
        env["nominal_peaks"] = next((v for k, v in NOMINAL_PEAKS.items() if k in env["device_kind"]), None)
        return env

    def block(self, out):
        self.jax.block_until_ready(out)
        if self.torch_device == "cuda":
            self.torch.cuda.synchronize()
        return out

    def timed(self, fn, repeats: int = 2) -> tuple:
        """``(result, timing)``: the first call (compile included), the compile events
        it set off, and the fastest of ``repeats`` further calls (the steady state;
        one with ``--tiny``)."""
        repeats = min(repeats, 1) if self.tiny else repeats
        c0, e0 = self.compile_total, self.compile_events
        t = time.perf_counter()
        out = self.block(fn())
        first = time.perf_counter() - t
        compile_s = self.compile_total - c0
        steady = math.inf
        for _ in range(repeats):
            if time.perf_counter() + first > self.case_deadline:
                break  # the case's cap: keep the first call's figures
            t = time.perf_counter()
            out = self.block(fn())
            steady = min(steady, time.perf_counter() - t)
        if steady == math.inf:
            steady = max(first - compile_s, 0.0)
        return out, {"first_call_s": first, "compile_s": compile_s,
                     "compile_events": self.compile_events - e0, "steady_s": steady}

    def memory(self) -> dict:
        """Device memory in use by JAX (peak so far in this worker) and torch (peak of
        this case), and their share of the device's memory."""
        out = {}
        try:
            stats = self.jax.devices()[0].memory_stats() or {}
        except Exception:  # noqa: BLE001 - backends without statistics
            stats = {}
        if stats:
            out["jax_peak_gib"] = stats.get("peak_bytes_in_use", 0) / 2**30
            out["jax_in_use_gib"] = stats.get("bytes_in_use", 0) / 2**30
        if self.torch_device == "cuda":
            torch = self.torch
            out["torch_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            out["device_total_gib"] = torch.cuda.mem_get_info()[1] / 2**30
        elif stats.get("bytes_limit"):
            out["device_total_gib"] = stats["bytes_limit"] / 2**30
        if "device_total_gib" in out and "jax_peak_gib" in out:
            out["mem_share"] = (out["jax_peak_gib"] + out.get("torch_peak_gib", 0.0)) / out["device_total_gib"]
        return out

    def rates(self, row: dict, flops: float | None, bytes_: float | None, peak_key: str):
        """Achieved TFLOP/s and GB/s of ``row`` over its steady time, and their share of the
        measured peaks (``peaks`` case)."""
        s = row.get("steady_s")
        if not s:
            return
        if flops:
            row["model_tflop"] = flops / 1e12
            row["tflops"] = flops / s / 1e12
            peak = self.peaks.get(peak_key)
            if peak:
                row["tflops_pct_peak"] = 100 * row["tflops"] / peak
        if bytes_:
            row["gbps"] = bytes_ / s / 1e9
            peak = self.peaks.get("copy_GBps")
            if peak:
                row["gbps_pct_peak"] = 100 * row["gbps"] / peak

    def run(self, rows: list, name: str, fn, **fields):
        """Run one row of a case: ``fn() -> dict``; an error is recorded in the row."""
        row = dict(run=name, **fields)
        if time.perf_counter() > self.case_deadline:
            row["error"] = "skipped: the case's time cap was reached"
            rows.append(row)
            return row
        self.say(f"{name} ...")
        if self.torch_device == "cuda":
            self.torch.cuda.reset_peak_memory_stats()
        try:
            row.update(fn())
        except Exception as err:  # noqa: BLE001 - one failing run must not stop the case
            row["error"] = f"{type(err).__name__}: {err}"[:600]
            row["traceback"] = traceback.format_exc()[-2000:]
        row.update(self.memory())
        if "check" in row:
            row["check"] = "pass" if row["check"] else "FAIL"
        self.say(f"{name}: " + ", ".join(f"{k}={_short(row[k])}" for k in
                                         ("steady_s", "compile_s", "tflops", "check", "error") if k in row))
        rows.append(row)
        if self.torch_device == "cuda":
            self.torch.cuda.empty_cache()
        return row

    def case(self, name: str, cap: float):
        self.case_deadline = time.perf_counter() + 0.85 * cap
        self.emit(event="start", case=name)
        t = time.perf_counter()
        result = {"case": name, "rows": [], "notes": []}
        try:
            if name == self.inject:
                raise RuntimeError(f"failure injected into {name} (--inject-failure)")
            if name == self.hang:
                time.sleep(1e6)   # --inject-hang: the parent's time cap must end it
            getattr(self, "case_" + name)(result)
            result["status"] = "ok" if all("error" not in r for r in result["rows"]) else "partial"
        except Exception as err:  # noqa: BLE001 - one failing case must not stop the suite
            result["status"] = "error"
            result["error"] = f"{type(err).__name__}: {err}"[:600]
            result["traceback"] = traceback.format_exc()[-3000:]
            self.say(f"{name} failed: {result['error']}")
        result["wall_s"] = time.perf_counter() - t
        self.emit(event="result", **result)
        import gc

        gc.collect()

    # ------------------------------------------------------------------ data
    def known_svd(self, n, p, rank, decay, seed=0):
        """``X = 1 mu^T + U diag(sigma) V^T`` on the device, ``U (n, r)`` orthonormal and
        orthogonal to ``1`` (QR of a centred Gaussian), ``V (p, r)`` orthonormal,
        ``sigma_i = sqrt(n - 1) i^-decay``: the centred data's exact SVD is known (to the
        float32 orthonormality of ``U`` and ``V``, ``~sqrt(r) u``, far below what is measured)."""
        jax, jnp = self.jax, self.jax.numpy

        @jax.jit
        def make(key):
            ku, kv, km = jax.random.split(key, 3)
            g = jax.random.normal(ku, (n, rank), jnp.float32)
            u = jnp.linalg.qr(g - g.mean(axis=0))[0]
            v = jnp.linalg.qr(jax.random.normal(kv, (p, rank), jnp.float32))[0]
            sigma = jnp.sqrt(n - 1.0) * jnp.arange(1, rank + 1, dtype=jnp.float32) ** -decay
            mu = jnp.abs(jax.random.normal(km, (p,), jnp.float32))
            x = jnp.matmul(u * sigma, v.T, precision=jax.lax.Precision.HIGHEST) + mu
            return x, v, sigma, mu

        x, v, sigma, mu = self.block(make(jax.random.key(seed)))
        np = self.np
        truth = {"v": np.asarray(v, np.float64), "sigma": np.asarray(sigma, np.float64),
                 "mu": np.asarray(mu, np.float64), "n": n, "p": p}
        sig = truth["sigma"]
        truth["fro_c"] = float(np.sqrt(np.sum(sig ** 2)))
        truth["fro"] = float(np.sqrt(np.sum(sig ** 2) + n * np.sum(truth["mu"] ** 2)))
        return x, truth

    def svd_checks(self, s, vt, truth, k, operand, rounded_fro, basis, jaxfactor_row=True) -> dict:
        """Float64 checks of a truncated SVD ``(s, vt)`` against the known one."""
        np = self.np
        s = np.asarray(s, np.float64)[:k]
        vt = np.asarray(vt, np.float64)[:k]
        v, sigma, p = truth["v"], truth["sigma"], truth["p"]
        out = {"finite": bool(np.all(np.isfinite(s)) and np.all(np.isfinite(vt)))}
        if not out["finite"]:
            out["check"] = False
            return out
        out["orth_err"] = float(np.max(np.abs(vt @ vt.T - np.eye(k))))
        q = np.linalg.qr(vt.T)[0]
        c = v.T @ q                                             # (r, k)
        captured = float(np.sum((sigma[:, None] * c) ** 2))
        out["shortfall"] = 1.0 - captured / float(np.sum(sigma[:k] ** 2))
        h = max(k // 2, 1)
        cos = np.linalg.svd(v[:, :h].T @ np.linalg.qr(vt[:h].T)[0], compute_uv=False)
        out["angle_top_half_deg"] = float(np.degrees(np.arccos(np.clip(cos.min(), -1, 1))))
        rel = np.abs(s - sigma[:k]) / sigma[:k]
        out["sv_rel_err_top_half"] = float(rel[:h].max())
        out["sv_rel_err_all"] = float(rel.max())
        # Weyl: rounding the operands entrywise (unit u) moves the singular values by
        # <= u ||A||_F; the float32 products with the basis and its orthonormality add
        # gamma(p) sqrt(l) ||X||_F and sqrt(l) gamma(p l) sigma_1 (the Ritz values then
        # cannot exceed the true ones by more: interlacing)
        allow = (2 * UNIT[operand] * rounded_fro + gamma(p) * math.sqrt(basis) * truth["fro"]
                 + math.sqrt(basis) * gamma(p * basis) * sigma[0])
        out["sv_excess_over_bound"] = float(np.max(s - sigma[:k]) / allow)
        ok = out["sv_excess_over_bound"] <= 1.0
        if jaxfactor_row:
            ok = ok and out["shortfall"] <= SHORTFALL_TARGET
        out["check"] = ok
        return out

    # ------------------------------------------------------------------ cases
    def case_peaks(self, result):
        jax, jnp, np = self.jax, self.jax.numpy, self.np
        cfg = self.sizes["peaks"]
        m, reps = cfg["m"], cfg["repeats"]
        key = jax.random.key(0)
        a32 = jax.random.normal(key, (m, m), jnp.float32)
        b32 = jax.random.normal(jax.random.key(1), (m, m), jnp.float32)
        variants = {"bf16": (lambda a, b: a.astype(jnp.bfloat16) @ b.astype(jnp.bfloat16), "bf16_TFLOPs"),
                    "tf32": (lambda a, b: jnp.matmul(a, b, precision=jax.lax.DotAlgorithmPreset.TF32_TF32_F32),
                             "tf32_TFLOPs"),
                    "float32": (lambda a, b: jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST),
                                "float32_TFLOPs")}
        rows = result["rows"]
        for prec, (fn, key_name) in variants.items():
            if prec == "tf32" and self.backend == "cpu":
                result["notes"].append("tf32 matmul: no TF32 on the CPU backend (not measured)")
                continue
            f = jax.jit(fn)
            bf = jax.jit(lambda a: a.astype(jnp.bfloat16))
            a_in, b_in = (bf(a32), bf(b32)) if prec == "bf16" else (a32, b32)

            def go(f=f, a_in=a_in, b_in=b_in):
                _, timing = self.timed(lambda: f(a_in, b_in), repeats=reps)
                return dict(timing, impl="jax", precision=prec)

            row = self.run(rows, f"matmul {m}^3 {prec}", go)
            if "steady_s" in row:
                self.peaks[key_name] = 2 * m ** 3 / row["steady_s"] / 1e12
                row["tflops"] = self.peaks[key_name]
        n = cfg["copy_mib"] * 2 ** 20 // 4
        x = jnp.ones((n,), jnp.float32)
        scale = jax.jit(lambda x: x * 1.5)

        def copy():
            _, timing = self.timed(lambda: scale(x), repeats=reps)
            return dict(timing, impl="jax", precision="float32")

        row = self.run(rows, f"copy {cfg['copy_mib']} MiB (read + write)", copy)
        if "steady_s" in row:
            self.peaks["copy_GBps"] = 2 * n * 4 / row["steady_s"] / 1e9
            row["gbps"] = self.peaks["copy_GBps"]
        result["peaks"] = dict(self.peaks)
        self.emit(event="peaks", peaks=self.peaks)

    def _pca_case(self, result, n, *, highest_variant: bool, exact_only: bool = False):
        jax, np, torch = self.jax, self.np, self.torch
        cfg = self.sizes["pca"]
        p, k, rank = cfg["p"], cfg["k"], cfg["rank"]
        from bridges.dlpack import jax_to_torch, shares_memory
        from jaxfactor._policy import adaptive_width, range_params
        from jaxfactor.randomized import randomized_svd

        x, truth = self.known_svd(n, p, rank, cfg["decay"])
        result["data"] = dict(n=n, p=p, k=k, rank=rank, decay=cfg["decay"], gib=n * p * 4 / 2**30)
        rows = result["rows"]
        elem = n * p
        xt = jax_to_torch(x)
        result["jax_to_torch_zero_copy"] = bool(shares_memory(xt, x))

        if exact_only:
            def exact():
                def f():
                    xc = xt - xt.mean(dim=0)
                    _, s, vh = torch.linalg.svd(xc, full_matrices=False)
                    return s[:k], vh[:k]
                (s, vh), timing = self.timed(f, repeats=0)   # once: the slowest run of the suite
                row = dict(timing)
                m_, n_ = max(n, p), min(n, p)
                flops = 4 * m_ * n_ ** 2 + 8 * n_ ** 3          # Golub & Van Loan's R-SVD, S and V
                row.update(self.svd_checks(s.cpu().numpy(), vh.cpu().numpy(), truth, k, "float32",
                                           truth["fro_c"], min(n, p), jaxfactor_row=False))
                self.rates(row, flops, None, "float32_TFLOPs")
                return row

            self.run(rows, "torch.linalg.svd (exact)", exact, impl="torch", precision="float32")
            return

        def ours(method, precision):
            def go():
                key = jax.random.key(0)
                f = (lambda: randomized_svd(x, k, key=key, method=method, center=True,
                                            compute_u=False, precision=precision))
                res, timing = self.timed(f)
                row = dict(timing)
                if method == "adaptive":
                    width = adaptive_width(k, n, p)
                    passes = int(res.n_passes)
                    cols, basis = passes * width, width
                    row.update(n_passes=passes, error_estimate=float(res.error))
                else:
                    prm = range_params(k, n, p, method=method)
                    passes = 2 * prm.n_iter + 1
                    cols, basis = 2 * prm.n_iter * prm.block_size + prm.basis_size, prm.basis_size
                    row.update(n_passes=passes)
                per = 2 if precision == "bf16" else 4
                bytes_ = passes * elem * per + (elem * 6 if precision == "bf16" else 0)
                operand_fro = truth["fro"] if precision == "tf32" else truth["fro_c"]
                row.update(self.svd_checks(res.s, res.vt, truth, k, precision, operand_fro, basis))
                self.rates(row, 2.0 * elem * cols, bytes_, f"{precision}_TFLOPs")
                return row
            return go

        for method in ("krylov", "adaptive"):
            for precision in ("float32", "tf32", "bf16"):
                self.run(rows, f"jaxfactor {method}", ours(method, precision),
                         impl="jaxfactor", precision=precision)
        if highest_variant:
            def highest():
                with jax.default_matmul_precision("highest"):
                    return ours("krylov", "float32")()
            self.run(rows, "jaxfactor krylov, every product HIGHEST", highest, impl="jaxfactor",
                     precision="float32")

        def peer(niter, tf32):
            def go():
                torch.manual_seed(0)
                q = min(k + 10, n, p)
                old = torch.backends.cuda.matmul.allow_tf32
                torch.backends.cuda.matmul.allow_tf32 = tf32
                try:
                    def f():
                        xc = xt - xt.mean(dim=0)
                        _, s, v = torch.svd_lowrank(xc, q=q, niter=niter)
                        return s[:k], v[:, :k].T
                    (s, vt), timing = self.timed(f)
                finally:
                    torch.backends.cuda.matmul.allow_tf32 = old
                row = dict(timing, n_passes=2 + 2 * niter)
                prec = "tf32" if tf32 and self.torch_device == "cuda" else "float32"
                row.update(self.svd_checks(s.cpu().numpy(), vt.cpu().numpy(), truth, k, prec,
                                           truth["fro_c"], q, jaxfactor_row=False))
                self.rates(row, 2.0 * elem * q * (2 + 2 * niter), (4 + 2 * niter) * elem * 4,
                           f"{prec}_TFLOPs")
                return row
            return go

        for niter, tf32 in ((2, False), (2, True), (4, False)):
            self.run(rows, f"torch.svd_lowrank niter={niter}", peer(niter, tf32), impl="torch",
                     precision="tf32" if tf32 else "float32")
        if self.torch_device == "cpu":
            result["notes"].append("torch runs on the CPU here: its TF32 flag has no effect")
        del xt, x

    def case_pca_n10000(self, result):
        self._pca_case(result, self.sizes["pca_n10000"]["n"], highest_variant=True)

    def case_pca_n100000(self, result):
        self._pca_case(result, self.sizes["pca_n100000"]["n"], highest_variant=False)

    def case_pca_exact_torch_n10000(self, result):
        self._pca_case(result, self.sizes["pca_exact_torch_n10000"]["n"], highest_variant=False,
                       exact_only=True)

    def _ica_case(self, result, k):
        jax, jnp, np = self.jax, self.jax.numpy, self.np
        cfg = self.sizes["ica"]
        n, p = cfg["n"], cfg["p"]
        from jaxfactor import FastICA
        from jaxfactor._policy import choose_whiten_range
        from jaxfactor.ica import fastica
        from jaxfactor.metrics.amari import amari_distance
        from jaxfactor.whitening import whiten

        @jax.jit
        def planted(key):
            ks, ka, ko, kn = jax.random.split(key, 4)
            s = jax.random.laplace(ks, (n, k), jnp.float32) / jnp.sqrt(2.0)
            a = jax.random.normal(ka, (p, k), jnp.float32) / jnp.sqrt(float(k))
            x = jnp.matmul(s, a.T, precision=jax.lax.Precision.HIGHEST)
            x = x + jnp.abs(jax.random.normal(ko, (p,), jnp.float32))
            return x + cfg["noise"] * jax.random.normal(kn, (n, p), jnp.float32), a

        x, a = self.block(planted(jax.random.key(3)))
        a64 = np.asarray(a, np.float64)
        result["data"] = dict(n=n, p=p, k=k, noise=cfg["noise"])
        rows = result["rows"]
        state = {}

        def white():
            res, timing = self.timed(lambda: whiten(x, k, solver="randomized", key=jax.random.key(1)))
            state["white"] = res
            z = np.asarray(res.white, np.float64)
            gram_err = float(np.max(np.abs(z.T @ z / n - np.eye(k))))
            d = math.sqrt(k) * gamma(n * k)                 # orthonormality of a float32 QR factor
            row = dict(timing, whiten_gram_err=gram_err, whiten_gram_bound=2 * d + d * d,
                       range_method=choose_whiten_range("auto", None, n, p, k)[0])
            row["check"] = bool(np.isfinite(gram_err) and gram_err <= row["whiten_gram_bound"])
            return row

        self.run(rows, "whiten (randomized)", white, impl="jaxfactor", precision="float32")
        if "white" not in state:
            return
        wres = state["white"]
        amari = {}

        def iterate(decorrelation, highest=False):
            def go():
                def f():
                    return fastica(wres.white, key=jax.random.key(2), decorrelation=decorrelation,
                                   tol=1e-4, max_iter=cfg["max_iter"])
                if highest:
                    with jax.default_matmul_precision("highest"):
                        res, timing = self.timed(f)
                else:
                    res, timing = self.timed(f)
                w = np.asarray(res.w, np.float64)
                unmixing = w @ np.asarray(wres.whitening, np.float64)
                am = amari_distance(unmixing, a64)
                amari[(decorrelation, highest)] = am
                orth = float(np.max(np.abs(w @ w.T - np.eye(k))))
                bound = 50 * 2 * UNIT["float32"] + gamma(k) * k
                n_iter = int(res.n_iter)
                row = dict(timing, n_iter=n_iter, converged=bool(res.converged), amari=am,
                           w_orth_err=orth, w_orth_bound=bound,
                           steady_per_iter_ms=1e3 * timing["steady_s"] / max(n_iter, 1))
                row["check"] = bool(np.isfinite(am) and orth <= bound and am <= 0.2)
                # two products of (k, n) x (n, k) a step, plus the contrast
                self.rates(row, 4.0 * n * k * k * n_iter, 2.0 * n * k * 4 * n_iter, "float32_TFLOPs")
                return row
            return go

        self.run(rows, "fastica iteration, eigh", iterate("eigh"), impl="jaxfactor", precision="default")
        self.run(rows, "fastica iteration, newton-schulz", iterate("newton-schulz"), impl="jaxfactor",
                 precision="default")
        self.run(rows, "fastica iteration, newton-schulz, every product HIGHEST",
                 iterate("newton-schulz", highest=True), impl="jaxfactor", precision="float32")
        if ("eigh", False) in amari and ("newton-schulz", False) in amari:
            e, s = amari[("eigh", False)], amari[("newton-schulz", False)]
            result["amari_eigh_vs_newton_schulz"] = [e, s]
            result["decorrelations_agree"] = bool(abs(e - s) <= 0.1 * e + 1e-3)

        def estimator():
            t = time.perf_counter()
            c0 = self.compile_total
            model = FastICA(k, random_state=0, max_iter=cfg["max_iter"]).fit(x)
            wall = time.perf_counter() - t
            comp = self.compile_total - c0
            am = amari_distance(np.asarray(model.components_, np.float64), a64)
            return dict(first_call_s=wall, compile_s=comp, steady_s=max(wall - comp, 0.0),
                        steady_from="first call minus compile events", plan=model.plan_._asdict(),
                        n_iter=int(model.n_iter_), converged=bool(model.converged_), amari=am,
                        check=bool(np.isfinite(am) and am <= 0.2))

        self.run(rows, "FastICA estimator (auto plan)", estimator, impl="jaxfactor", precision="default")
        result["notes"].append("no GPU FastICA in the preinstalled stack (scikit-learn's is CPU-only, "
                               "benchmarks/results/bench_ica.md)")
        del x, a

    def case_ica_k100(self, result):
        self._ica_case(result, self.sizes["ica_k100"]["k"])

    def case_ica_k1000(self, result):
        self._ica_case(result, self.sizes["ica_k1000"]["k"])

    def case_sca_k50(self, result):
        jax, jnp, np = self.jax, self.jax.numpy, self.np
        cfg = self.sizes["sca_k50"]
        n, p, k, rank = cfg["n"], cfg["p"], cfg["k"], cfg["rank"]
        from jaxfactor import SCA

        @jax.jit
        def gan_like(key):
            # benchmarks/datasets.py's rows, drawn on the device
            ks, km, ko, kn = jax.random.split(key, 4)
            scales = jnp.arange(1, rank + 1, dtype=jnp.float32) ** -0.8
            mixing = jax.random.normal(km, (rank, p), jnp.float32) / jnp.sqrt(float(rank)) * 4 * scales[:, None]
            x = jnp.matmul(jax.random.laplace(ks, (n, rank), jnp.float32), mixing,
                           precision=jax.lax.Precision.HIGHEST)
            x = x + jnp.abs(jax.random.normal(ko, (p,), jnp.float32))
            return x + 0.05 * jax.random.normal(kn, (n, p), jnp.float32)

        x = self.block(gan_like(jax.random.key(4)))
        x64 = np.asarray(x, np.float64)
        xc = x64 - x64.mean(axis=0)
        total = float(np.sum(xc ** 2))
        result["data"] = dict(n=n, p=p, k=k, rank=rank)
        rows = result["rows"]

        plans = {}

        def fit(reduced):
            def go():
                if reduced == "other":
                    # the plan 'auto' did not take (at full size auto reduces; --tiny: it does not)
                    auto = plans.get("auto")
                    kw = {"reduced_rank": None if auto is not None else min(2 * k + 10, n, p)}
                else:
                    kw = {}
                model, timing = self.timed(lambda: SCA(k, random_state=0, **kw).fit(x))
                y = np.asarray(model.components_, np.float64).T      # (p, k)
                l1 = float(np.abs(y).sum())
                q = np.linalg.qr(y)[0]
                evr = float(np.sum((xc @ q) ** 2) / total)
                evr_err = abs(evr - float(model.explained_variance_ratio_[-1]))
                # float32 sums over n and p terms, on both the captured and the total variance
                # and the orthonormality of the float32 basis of span(Y) (2 sqrt(k) gamma(p k))
                evr_bound = 4 * (gamma(n) + gamma(p)) + 2 * math.sqrt(k) * gamma(p * k)
                plans.setdefault(reduced, model.reduced_rank_)
                row = dict(timing, plan=model.plan_._asdict(), n_iter=int(model.n_iter_),
                           converged=bool(model.converged_), l1=l1, gamma=float(model.gamma_),
                           evr=evr, evr_err=evr_err, evr_bound=evr_bound, sparsity=float(model.sparsity_))
                row["check"] = bool(np.isfinite(evr) and l1 <= model.gamma_ * (1 + 1e-5)
                                    and evr_err <= evr_bound)
                return row
            return go

        self.run(rows, "SCA estimator (auto plan)", fit("auto"), impl="jaxfactor", precision="float32")
        self.run(rows, "SCA with the other plan (reduced rank <-> X itself)", fit("other"),
                 impl="jaxfactor", precision="float32")
        result["notes"].append("no GPU SCA peer in the preinstalled stack (epca is R; scikit-learn's "
                               "sparse PCA is CPU-only, benchmarks/results/bench_sca.md)")
        del x

    def case_stream_builtin(self, result):
        np = self.np
        cfg = self.sizes["stream_builtin"]
        n, b, k = cfg["n"], cfg["block_rows"], cfg["k"]
        from bridges.activations import ActivationStream
        from bridges.builtin import load_builtin_generator
        from bridges.dlpack import shares_memory, torch_to_jax
        from bridges.generators import sample_z
        from jaxfactor import PCA

        generator = load_builtin_generator(device=self.torch_device)
        stream = ActivationStream(generator, "synthesis.init", n_samples=n, batch_size=b, seed=0)
        p = stream.n_features
        result["data"] = dict(n=n, p=p, k=k, block_rows=b, torch_device=self.torch_device)
        rows = result["rows"]

        def handover():
            t = stream.read_torch(0, b)
            arr = torch_to_jax(t)
            same_device = (arr.devices().pop().platform == "gpu") == (t.device.type == "cuda")
            equal = bool(np.array_equal(np.asarray(arr), t.cpu().numpy()))
            zero_copy = bool(shares_memory(t, arr))
            return dict(tensor_device=str(t.device), jax_device=str(arr.devices().pop()),
                        zero_copy=zero_copy, same_device=same_device, equal=equal,
                        check=zero_copy and same_device and equal)

        self.run(rows, "DLPack hand-over (one block)", handover, impl="bridges", precision="float32")

        def read_all():
            def f():
                for lo in range(0, n, b):
                    out = stream.read(lo, min(lo + b, n))
                return out
            _, timing = self.timed(f, repeats=1)
            t = time.perf_counter()
            sample_z(0, 0, n, generator.z_dim)
            z_s = time.perf_counter() - t
            return dict(timing, rows_per_s=n / timing["steady_s"], latents_rows_per_s=n / z_s,
                        latents_share=z_s / timing["steady_s"])

        self.run(rows, "read all rows (generator + hand-over)", read_all, impl="bridges", precision="float32")

        def fit():
            model, timing = self.timed(
                lambda: PCA(k, solver="streaming", block_rows=b, random_state=0).fit(stream), repeats=1)
            rows_ = np.concatenate([np.asarray(stream.read(lo, min(lo + b, n)), np.float64)
                                    for lo in range(0, n, b)])
            xc = rows_ - rows_.mean(axis=0)
            evals, evecs = np.linalg.eigh(xc.T @ xc / (n - 1))
            evals, evecs = evals[::-1], evecs[:, ::-1]
            comp = np.asarray(model.components_, np.float64)
            h = k // 2
            cos = np.linalg.svd(evecs[:, :h].T @ np.linalg.qr(comp[:h].T)[0], compute_uv=False)
            captured = float(np.sum((xc @ np.linalg.qr(comp.T)[0]) ** 2) / (n - 1))
            shortfall = 1 - captured / float(evals[:k].sum())
            ev_err = float(np.max(np.abs(model.explained_variance_ - evals[:k]) / evals[:k]))
            passes = int(model.n_passes_)
            return dict(timing, n_passes=passes, rows_per_s=n * passes / timing["steady_s"],
                        angle_top_half_deg=float(np.degrees(np.arccos(np.clip(cos.min(), -1, 1)))),
                        shortfall=shortfall, ev_rel_err=ev_err,
                        check=bool(np.isfinite(shortfall) and shortfall <= SHORTFALL_TARGET))

        self.run(rows, "streaming PCA over the stream", fit, impl="jaxfactor", precision="float32")
        del generator, stream

    def case_frechet_d2048(self, result):
        jax, jnp, np = self.jax, self.jax.numpy, self.np
        cfg = self.sizes["frechet_d2048"]
        n, d = cfg["n"], cfg["d"]
        import scipy.linalg

        from jaxfactor.metrics.frechet import frechet_distance, feature_statistics

        @jax.jit
        def features(key):
            k1, k2, k3, k4 = jax.random.split(key, 4)
            mix = jax.random.normal(k1, (d, d), jnp.float32) / jnp.sqrt(float(d))
            f1 = jax.random.normal(k2, (n, d), jnp.float32) @ mix
            f2 = jax.random.normal(k3, (n, d), jnp.float32) @ (mix + 0.1 * jax.random.normal(k4, (d, d)) / jnp.sqrt(float(d)))
            return jnp.abs(f1), jnp.abs(f2) + 0.05       # rectified, like pooled CNN features

        f1, f2 = self.block(features(jax.random.key(5)))
        result["data"] = dict(n=n, d=d)

        def go():
            def f():
                s1, s2 = feature_statistics(f1), feature_statistics(f2)
                return s1, s2, frechet_distance(s1.mean, s1.covariance, s2.mean, s2.covariance)
            (s1, s2, fd), timing = self.timed(f)
            a, b = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
            m1, m2 = a.mean(0), b.mean(0)
            c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
            # tr sqrt(C1 C2) from the general eigenvalues of C1 C2 (real and >= 0: it is
            # similar to C1^(1/2) C2 C1^(1/2)), not jaxfactor's symmetric route
            eig = np.clip(scipy.linalg.eigvals(c1 @ c2).real, 0, None)
            ref = float(np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.sum(np.sqrt(eig)))
            scale = float(np.trace(c1) + np.trace(c2))
            # float64 on both sides: covariances to n eps64, the square root's trace to
            # ~d eps64 cond; 1e-7 of the traces leaves three orders of magnitude
            bound = 1e-7 * scale
            return dict(timing, fd=fd, fd_reference=ref, fd_err=abs(fd - ref), fd_bound=bound,
                        check=bool(abs(fd - ref) <= bound))

        self.run(result["rows"], "feature statistics x2 + distance", go, impl="jaxfactor", precision="float64")
        del f1, f2


def worker_main(cases: list[str], tiny: bool, inject: str | None, hang: str | None = None,
                case_cap: float | None = None) -> int:
    w = Worker(tiny, inject, hang)
    w.emit(event="env", env=w.environment())
    caps = dict(CASES)
    if not tiny and w.backend == "cpu":
        for name in cases:
            w.emit(event="result", case=name, status="error", rows=[], notes=[], wall_s=0.0,
                   error="the full sizes need a GPU (JAX's backend is cpu); --tiny runs on the CPU")
        return 1
    for name in cases:
        w.say(f"case {name}")
        w.case(name, case_cap or (TINY_CAP if tiny else caps[name]))
    return 0


# ===================================================================== parent side


def _plain(obj):
    """JSON for numpy scalars and arrays, and anything else as its repr."""
    for attr in ("item", "tolist"):
        if hasattr(obj, attr):
            try:
                return getattr(obj, attr)()
            except (TypeError, ValueError):
                pass
    return repr(obj)


def _short(v):
    return f"{v:.3g}" if isinstance(v, float) else v


def _accuracy(row: dict) -> str:
    keys = ("shortfall", "angle_top_half_deg", "sv_rel_err_top_half", "orth_err", "amari", "n_iter",
            "whiten_gram_err", "w_orth_err", "evr_err", "l1", "zero_copy", "rows_per_s", "fd_err",
            "n_passes")
    return ", ".join(f"{k}={_short(row[k])}" for k in keys if k in row)


def markdown(payload: dict) -> str:
    env = payload.get("environment") or {}
    lines = [f"# GPU suite ({payload['mode']})", "",
             f"Command: `{payload['command']}`; {payload['total_s']:.0f} s; "
             f"device: {env.get('device_kind', '?')} ({env.get('jax_backend', '?')}), "
             f"torch on {env.get('torch_device', '?')}.", ""]
    if env.get("versions"):
        lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".")
    if env.get("version_mismatch"):
        lines.append("Not the expected stack: " + "; ".join(f"{k}: {v}" for k, v in env["version_mismatch"].items()))
    if payload.get("peaks"):
        lines.append("Measured peaks: " + ", ".join(f"{k} {v:.4g}" for k, v in payload["peaks"].items()) + ".")
    lines.append("")
    rows = []
    for case in payload["cases"]:
        if not case.get("rows"):
            rows.append({"case": case["case"], "run": "-", "check": case.get("status", "?"),
                         "error": case.get("error", "")})
        for r in case.get("rows", []):
            rows.append(dict(r, case=case["case"], accuracy=_accuracy(r),
                             mem_share=r.get("mem_share", "")))
    cols = [("case", "case"), ("run", "run"), ("impl", "impl"), ("precision", "precision"),
            ("first_call_s", "first call s"), ("compile_s", "compile s"), ("steady_s", "steady s"),
            ("tflops", "TFLOP/s"), ("tflops_pct_peak", "% peak"), ("gbps", "GB/s"),
            ("gbps_pct_peak", "% peak"), ("accuracy", "accuracy"), ("check", "check"),
            ("mem_share", "memory share"), ("error", "error")]
    lines.append(markdown_table(rows, cols))
    for case in payload["cases"]:
        for note in case.get("notes", []):
            lines.append(f"- {case['case']}: {note}")
    return "\n".join(lines) + "\n"


def parent_main(args) -> int:
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = CASE_NAMES if not args.only else [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASE_NAMES]
    if unknown:
        print(f"unknown case(s) {unknown}; the cases are {CASE_NAMES}", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    mode = "tiny" if args.tiny else "full"
    payload = {"suite": "benchmarks/gpu_suite.py", "mode": mode,
               "command": " ".join(["python3", "benchmarks/gpu_suite.py"] + sys.argv[1:]),
               "budget_s": args.budget, "environment": None, "peaks": {}, "cases": [], "total_s": 0.0}
    done: dict[str, dict] = {}

    def save():
        payload["cases"] = [done[c] for c in cases if c in done]
        payload["total_s"] = time.perf_counter() - t_start
        write_results("gpu_suite", payload, markdown(payload), out_dir)

    caps = {c: (args.case_cap or (TINY_CAP if args.tiny else cap)) for c, cap in CASES}
    pending = list(cases)
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE=os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "false"))
    if args.tiny:
        env["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), TINY_XLA_FLAGS]))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    starts_without_progress = 0
    save()
    while pending:
        left = args.budget - (time.perf_counter() - t_start)
        if left < 10:
            for c in pending:
                done[c] = {"case": c, "status": "skipped", "error": "the suite's time budget was spent",
                           "rows": []}
            break
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--only", ",".join(pending)]
        cmd += ["--tiny"] if args.tiny else []
        cmd += ["--inject-failure", args.inject_failure] if args.inject_failure else []
        cmd += ["--inject-hang", args.inject_hang] if args.inject_hang else []
        cmd += ["--case-cap", str(args.case_cap)] if args.case_cap else []
        print(f"[{time.perf_counter() - t_start:7.1f} s] worker for {', '.join(pending)}", flush=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=str(ROOT), start_new_session=True)
        lines: queue.Queue = queue.Queue()
        err_tail: deque = deque(maxlen=40)

        def pump_out(stream=proc.stdout):
            for line in stream:
                lines.put(line)
            lines.put(None)

        def pump_err(stream=proc.stderr):
            for line in stream:
                err_tail.append(line.rstrip())
                print(line.rstrip(), flush=True)

        threading.Thread(target=pump_out, daemon=True).start()
        err_thread = threading.Thread(target=pump_err, daemon=True)
        err_thread.start()
        current, deadline, progressed = None, time.perf_counter() + min(120.0, left), False
        killed = None
        while True:
            budget_end = t_start + args.budget
            try:
                line = lines.get(timeout=max(0.1, min(deadline, budget_end) - time.perf_counter()))
            except queue.Empty:
                line = ""
                if time.perf_counter() >= min(deadline, budget_end):
                    killed = "time cap" if time.perf_counter() >= deadline else "suite budget"
                    os.killpg(proc.pid, 9)
                    proc.wait()
                    break
                continue
            if line is None:
                break
            if not line.startswith(MARK):
                print(line.rstrip(), flush=True)
                continue
            msg = json.loads(line[len(MARK):])
            if msg["event"] == "env":
                payload["environment"] = msg["env"]
                deadline = math.inf
                ran = msg["env"]
                print("ran with " + ", ".join(f"{k} {v}" for k, v in ran["versions"].items())
                      + f"; JAX on {ran['jax_devices']}, torch on {ran['torch_device']}", flush=True)
                for k, v in ran["version_mismatch"].items():
                    print(f"  not the expected stack: {k}: {v}", flush=True)
            elif msg["event"] == "peaks":
                payload["peaks"] = msg["peaks"]
            elif msg["event"] == "start":
                current = msg["case"]
                cap = caps[current]
                deadline = time.perf_counter() + cap
                print(f"[{time.perf_counter() - t_start:7.1f} s] case {current} (cap {cap:.0f} s)", flush=True)
            elif msg["event"] == "result":
                msg.pop("event")
                done[msg["case"]] = msg
                pending.remove(msg["case"])
                progressed = True
                print(f"[{time.perf_counter() - t_start:7.1f} s] case {msg['case']}: {msg['status']} "
                      f"({msg['wall_s']:.1f} s)", flush=True)
                current, deadline = None, math.inf
                save()
        proc.wait()
        err_thread.join(timeout=5)
        if current is not None and current in pending:
            reason = (f"killed at its time cap of {caps[current]:.0f} s"
                      if killed == "time cap" else "killed: the suite's budget was spent" if killed
                      else f"the worker died (exit {proc.returncode})")
            done[current] = {"case": current, "status": "error", "error": reason,
                             "stderr_tail": list(err_tail)[-15:], "rows": []}
            pending.remove(current)
            progressed = True
        elif pending and not progressed:
            starts_without_progress += 1
            if starts_without_progress >= 2 or killed:
                for c in pending:
                    done[c] = {"case": c, "status": "error", "rows": [],
                               "error": f"the worker did not start a case (exit {proc.returncode}"
                                        f"{', ' + killed if killed else ''})",
                               "stderr_tail": list(err_tail)[-15:]}
                pending = []
        save()
    save()
    bad = [c for c, r in done.items() if r.get("status") != "ok"]
    print(f"[{time.perf_counter() - t_start:7.1f} s] wrote {out_dir / 'gpu_suite.json'} and .md; "
          f"{len(done) - len(bad)} of {len(cases)} cases ok" + (f"; not ok: {', '.join(bad)}" if bad else ""),
          flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", nargs="?", default=None)
    ap.add_argument("--tiny", action="store_true", help="toy sizes, on the CPU (~1 CPU-minute, nearly all XLA compiling)")
    ap.add_argument("--only", default="", help="comma-separated cases (default: all)")
    ap.add_argument("--budget", type=float, default=330.0, help="seconds the whole suite may take")
    ap.add_argument("--inject-failure", default=None, metavar="CASE",
                    help="make CASE raise at its start (to test the error isolation)")
    ap.add_argument("--inject-hang", default=None, metavar="CASE",
                    help="make CASE hang at its start (to test the time cap)")
    ap.add_argument("--case-cap", type=float, default=None, metavar="S",
                    help="every case's time cap, seconds (default: per case; --tiny 60 s)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main([c for c in args.only.split(",") if c], args.tiny, args.inject_failure,
                           args.inject_hang, args.case_cap)
    if args.out_dir is None:
        ap.error("OUT_DIR is required")
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
