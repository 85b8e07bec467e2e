"""Shared plumbing of the benchmark programs: machine facts, timing, output."""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict:
    """Machine, library versions and the BLAS kernel numpy runs (threadpoolctl)."""
    import jax
    import numpy as np
    import scipy
    import sklearn

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "sklearn": sklearn.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
        "load_average_at_start": os.getloadavg(),
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                        for d in threadpool_info() if d.get("user_api") == "blas"]
    except ImportError:
        info["blas"] = "threadpoolctl not installed"
    try:
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                 if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return info


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB.

    Read from ``VmHWM`` in ``/proc/self/status``: ``getrusage``'s ``ru_maxrss``
    survives ``execve`` on Linux, so a worker started by a large parent would
    report the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Current resident set size, MiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def timed(fn, *, block=None):
    """``(result, seconds)`` of one call; ``block`` waits for async results."""
    t0 = time.perf_counter()
    out = fn()
    if block is not None:
        block(out)
    return out, time.perf_counter() - t0


def run_worker(script: str, args: list[str], timeout: float | None = None) -> dict:
    """Run ``script --worker ARGS`` in a fresh process (so peak memory is its
    own) and parse the JSON line it prints last."""
    cmd = [sys.executable, script, "--worker", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_results(name: str, payload: dict, table: str, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` (atomically) and return the paths."""
    out_dir = RESULTS if out_dir is None else Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, text in ((".json", json.dumps(payload, indent=2, default=float)), (".md", table)):
        path = out_dir / f"{name}{suffix}"
        tmp = path.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        paths.append(path)
    return paths[0], paths[1]


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A Markdown table of ``rows`` with ``(key, header)`` columns."""
    head = "| " + " | ".join(h for _, h in columns) + " |\n"
    head += "|" + "---|" * len(columns) + "\n"
    body = ""
    for row in rows:
        cells = []
        for key, _ in columns:
            v = row.get(key, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        body += "| " + " | ".join(cells) + " |\n"
    return head + body
