"""Sharded execution on 4 forced CPU devices (a subprocess: XLA_FLAGS must be
set before JAX starts) must agree with the single-device result."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, {root!r})
    from jaxfactor import PCA
    from jaxfactor.sharding import row_mesh, shard_rows
    from tests.helpers import low_rank_data

    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng({seed})
    x = low_rank_data(rng, 1001, 1200, 20)          # 1001 rows: not a multiple of 4
    mesh = row_mesh()
    xs, n = shard_rows(x, mesh)
    shards = [(str(s.device), s.data.shape) for s in xs.addressable_shards]
    single = PCA(10, solver="randomized", random_state=0).fit(x)
    sharded = PCA(10, solver="randomized", random_state=0, mesh=mesh).fit(x)
    print(json.dumps({{
        "n": n, "padded_rows": xs.shape[0], "spec": str(xs.sharding.spec), "shards": shards,
        "padded_mean_err": float(jnp.max(jnp.abs(xs.mean(0) - x.mean(0)))),
        "components_err": float(np.max(np.abs(single.components_ - sharded.components_))),
        "ev_rel_err": float(np.max(np.abs(sharded.explained_variance_ / single.explained_variance_ - 1))),
        "ratio_rel_err": float(np.max(np.abs(sharded.explained_variance_ratio_ / single.explained_variance_ratio_ - 1))),
        "mean_err": float(np.max(np.abs(single.mean_ - sharded.mean_))),
    }}))
""")


def test_row_sharded_pca_equals_single_device(rng):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(root=root, seed=int(rng.integers(1 << 30)))],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["n"] == 1001 and out["padded_rows"] == 1004
    assert "rows" in out["spec"]
    assert len({d for d, _ in out["shards"]}) == 4
    assert all(shape == [251, 1200] for _, shape in out["shards"])
    assert out["padded_mean_err"] < 1e-5
    assert out["components_err"] < 2e-3
    assert out["ev_rel_err"] < 1e-4 and out["ratio_rel_err"] < 1e-4
    assert out["mean_err"] < 1e-5
