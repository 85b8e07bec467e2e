"""Fitting from a .npy file several times larger than the memory the fit may use."""
import textwrap

import jax
import numpy as np

from jaxfactor.randomized import range_params
from tests.helpers import ROOT, grown_mb, principal_angles_deg, run_json_script, write_npy
from tests.test_randomized import float64_rerun
from tests.tolerances import randomized_angle_bound_deg

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    import jaxfactor
    from jaxfactor import NpySource, PCA
    from tests.helpers import fit_with_peak

    src = NpySource({path!r})
    # warm up compilation and allocator on a slice-sized problem first
    warm = jaxfactor.ArraySource(src.read(0, 4096 + src.n_samples % 512))  # same block shapes
    fit = lambda data: PCA(8, solver="streaming", block_rows=512, random_state=0).fit(data)
    pca, memory = fit_with_peak(lambda: fit(warm), lambda: fit(src))
    print(json.dumps({{**memory, "components": pca.components_.tolist(),
                      "ev": pca.explained_variance_.tolist()}}))
""")


def test_streaming_pca_on_a_file_keeps_memory_at_block_size(tmp_path, rng):
    n, p = 16000, 1024  # 62.5 MiB on disk; a block of 512 rows is 2 MiB
    path = tmp_path / "big.npy"
    basis = rng.standard_normal((10, p)).astype(np.float32)
    write_npy(path, n, p, lambda m: (rng.standard_normal((m, 10)).astype(np.float32) * np.arange(10, 0, -1))
              @ basis + 0.1 * rng.standard_normal((m, p)).astype(np.float32))
    out = run_json_script(SCRIPT.format(root=ROOT, path=str(path)))
    file_mb = path.stat().st_size / 2**20
    grown = grown_mb(out)
    # a block is 2 MiB: the fit may hold a few of them (plus allocator slack), never a
    # sizeable part of the file (before blocks were throttled it held about 70% of it)
    block_mb = 512 * p * 4 / 2**20
    assert grown < 12 * block_mb and grown < 0.4 * file_mb, (grown, file_mb)
    # and the answer is right: compare with the in-memory exact PCA, up to the range
    # finder's own error (its float64 rerun with the same start block) and rounding
    data = np.load(path).astype(np.float64)
    ref = np.linalg.svd(data - data.mean(0), full_matrices=False)[2][:8]
    comps = np.asarray(out["components"])
    _, rerun = float64_rerun(data, 8, jax.random.key(0))
    bound = (principal_angles_deg(rerun, ref).max()
             + randomized_angle_bound_deg(data, 8, range_params(8, n, p).basis_size, block_rows=512))
    assert principal_angles_deg(comps, ref).max() <= bound
