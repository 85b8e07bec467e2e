"""Reference computations shared by the tests (NumPy float64), and the plumbing of
the tests that run in a fresh process (forced devices, resident-memory bounds)."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import numpy as np

from jaxfactor.sources import RowSource

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOUR_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}


def subprocess_env(**env) -> dict:
    """The environment of a test's subprocess: this one's, on the CPU backend,
    plus ``env``; ``XLA_FLAGS`` are appended to the caller's (so that a run of
    the suite under, e.g., ``--xla_cpu_max_isa=AVX2`` reaches subprocesses too)."""
    out = dict(os.environ, JAX_PLATFORMS="cpu")
    for key, value in env.items():
        if key == "XLA_FLAGS" and out.get(key):
            value = f"{out[key]} {value}"
        out[key] = value
    return out


def run_json_script(script: str, *, timeout: float = 600, **env) -> dict:
    """Run ``python -c script`` in a fresh process on the CPU backend (plus
    ``env``, e.g. :data:`FOUR_DEVICES`: XLA reads its flags only at start-up)
    and return the JSON object printed on its last line of output."""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT,
                          env=subprocess_env(**env))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def fit_with_peak(warm_up, fit):
    """Run ``warm_up()`` (compilation and allocator at the fit's shapes), then
    ``fit()``; return ``(fit(), memory)`` with ``memory`` the peak resident
    size before and after the fit and the resident size just before it (MiB).
    For use inside a fresh process (:func:`run_json_script`)."""
    warm_up()
    before = {"peak_before": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "rss_before": _rss_mb()}
    result = fit()
    return result, {**before, "peak_after": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def grown_mb(memory: dict) -> float:
    """How far the fit raised the peak resident size (MiB), from :func:`fit_with_peak`."""
    return memory["peak_after"] - max(memory["peak_before"], memory["rss_before"])


def write_npy(path, n: int, p: int, make_rows, *, block: int = 4000) -> None:
    """Write an ``(n, p)`` float32 ``.npy`` file block by block:
    ``make_rows(m)`` returns the next ``(m, p)`` rows."""
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, p))
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        x[lo:hi] = make_rows(hi - lo)
    x.flush()
    del x


def low_rank_data(rng, n, p, rank, *, noise=0.05, decay=1.0, offset=3.0, dtype=np.float32):
    """``(n, p)`` rows ``offset + S diag(scales) M + noise``: a planted subspace
    of dimension ``rank`` with decaying scales, a non-zero mean and noise."""
    rank = min(rank, p)
    scales = np.arange(1, rank + 1) ** -decay * 10.0
    m = np.linalg.qr(rng.standard_normal((p, rank)))[0].T
    x = (rng.standard_normal((n, rank)) * scales) @ m
    x += offset * rng.standard_normal(p) + noise * rng.standard_normal((n, p))
    return x.astype(dtype)


def exact_pca(x):
    """Exact PCA in float64: ``(components (min(n,p), p), explained_variance, mean)``."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    return vt, s**2 / (x.shape[0] - 1), mean


def principal_angles_deg(a, b):
    """Principal angles (degrees, ascending) between the row spaces of ``a``
    and ``b`` (each ``(k, p)``; orthonormalised here)."""
    qa = np.linalg.qr(np.asarray(a, np.float64).T)[0]
    qb = np.linalg.qr(np.asarray(b, np.float64).T)[0]
    cos = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))[::-1]


def captured_variance(x, components):
    """Variance of centred ``x`` captured by the row space of ``components``."""
    x = np.asarray(x, np.float64)
    q = np.linalg.qr(np.asarray(components, np.float64).T)[0]
    return float(np.sum(((x - x.mean(axis=0)) @ q) ** 2) / (x.shape[0] - 1))


class KilledSource(RowSource):
    """Rows of ``x``; the first time row ``fail_at`` of pass ``fail_pass`` (1-based)
    is asked for, raises ``KeyboardInterrupt`` (a kill). Counts the passes."""

    def __init__(self, x, fail_at=None, fail_pass=None):
        self.x, self.fail_at, self.fail_pass = x, fail_at, fail_pass
        self.n_samples, self.n_features = x.shape
        self.dtype = x.dtype
        self.passes = 0
        self.failed = False

    def read(self, start, stop):
        if start == 0:
            self.passes += 1
        if not self.failed and self.passes == self.fail_pass and start == self.fail_at:
            self.failed = True
            raise KeyboardInterrupt("simulated kill")
        return self.x[start:stop]
