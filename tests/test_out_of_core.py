"""Fitting from a .npy file several times larger than the memory the fit may use."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    import jaxfactor
    from jaxfactor import NpySource, PCA

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    src = NpySource({path!r})
    # warm up compilation and allocator on a slice-sized problem first
    warm = jaxfactor.ArraySource(src.read(0, 4096 + src.n_samples % 512))  # same block shapes
    PCA(8, solver="streaming", block_rows=512, random_state=0).fit(warm)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    now = rss_mb()
    pca = PCA(8, solver="streaming", block_rows=512, random_state=0).fit(src)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({{"peak_before": base, "rss_before": now, "peak_after": peak,
                      "components": pca.components_.tolist(), "ev": pca.explained_variance_.tolist()}}))
""")


def test_streaming_pca_on_a_file_keeps_memory_at_block_size(tmp_path, rng):
    n, p = 16000, 1024  # 62.5 MiB on disk; a block of 512 rows is 2 MiB
    path = tmp_path / "big.npy"
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, p))
    basis = rng.standard_normal((10, p)).astype(np.float32)
    for lo in range(0, n, 4000):
        x[lo:lo + 4000] = (rng.standard_normal((4000, 10)).astype(np.float32) * np.arange(10, 0, -1)) @ basis \
            + 0.1 * rng.standard_normal((4000, p)).astype(np.float32)
    x.flush()
    del x
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(root=root, path=str(path))],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    file_mb = path.stat().st_size / 2**20
    grown = out["peak_after"] - max(out["peak_before"], out["rss_before"])
    # a block is 2 MiB: the fit may hold a few of them (plus allocator slack), never a
    # sizeable part of the file (before blocks were throttled it held about 70% of it)
    block_mb = 512 * p * 4 / 2**20
    assert grown < 12 * block_mb and grown < 0.4 * file_mb, (grown, file_mb)
    # and the answer is right: compare with the in-memory exact PCA
    data = np.load(path)
    ref = np.linalg.svd(data[:, :] - data.mean(0), full_matrices=False)[2][:8]
    comps = np.asarray(out["components"])
    cos = np.linalg.svd(comps @ ref.T, compute_uv=False)
    assert cos.min() > 0.999
