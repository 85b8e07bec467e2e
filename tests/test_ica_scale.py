"""FastICA scale-out: row-sharded execution on 4 forced CPU devices, and fits from a
.npy file with memory bounded by the block size (subprocesses: XLA_FLAGS must be set
before JAX starts, and peak RSS is per process)."""
import textwrap

import numpy as np

from tests.helpers import FOUR_DEVICES, ROOT, grown_mb, run_json_script, write_npy

SHARDED = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, {root!r})
    from jaxfactor.ica import FastICA, fastica, whiten
    from jaxfactor.metrics.amari import amari_distance
    from jaxfactor.sharding import row_mesh, shard_block, shard_rows
    from tests.test_ica import planted

    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng({seed})
    x, _, a = planted(rng, n=1001, p=300)            # 1001 rows: not a multiple of 4
    n, k = x.shape[0], 6
    mesh = row_mesh()
    # the kernels on sharded data: whitening of the mean-padded rows, then iterations
    xs, _ = shard_rows(x, mesh)
    res = whiten(xs, k, solver="randomized", key=jax.random.key(0), n_valid=n)
    ref = whiten(jnp.asarray(x), k, solver="randomized", key=jax.random.key(0))
    ws, _ = shard_block(res.white, mesh)
    w0 = jnp.asarray(rng.standard_normal((k, k)), jnp.float32)
    one_sharded = fastica(ws, w_init=w0, max_iter=1, n_valid=n)
    one_single = fastica(ref.white, w_init=w0, max_iter=1)
    one_uncorrected = fastica(ws, w_init=w0, max_iter=1)          # padded rows counted
    single = FastICA(k, whiten_solver="randomized", random_state=0).fit(x)
    sharded = FastICA(k, whiten_solver="randomized", random_state=0, mesh=mesh).fit(x)
    print(json.dumps({{
        "x_spec": str(xs.sharding.spec), "x_shards": [s.data.shape[0] for s in xs.addressable_shards],
        "white_spec": str(ws.sharding.spec),
        "white_devices": len({{str(s.device) for s in ws.addressable_shards}}),
        "white_shards": [s.data.shape[0] for s in ws.addressable_shards],
        "pad_rows_abs": float(jnp.max(jnp.abs(res.white[n:]))),
        "white_err": float(jnp.max(jnp.abs(jnp.abs(res.white[:n]) - jnp.abs(ref.white)))),
        "one_step_err": float(jnp.max(jnp.abs(one_sharded.w - one_single.w))),
        "one_step_uncorrected_err": float(jnp.max(jnp.abs(one_uncorrected.w - one_single.w))),
        "components_err": float(np.max(np.abs(sharded.components_ - single.components_))
                                / np.max(np.abs(single.components_))),
        "n_iter": [single.n_iter_, sharded.n_iter_],
        "amari": amari_distance(sharded.components_, a),
    }}))
""")


def test_row_sharded_fastica_equals_single_device(rng):
    out = run_json_script(SHARDED.format(root=ROOT, seed=int(rng.integers(1 << 30))), **FOUR_DEVICES)
    # the data and the whitened data really are split by rows over 4 devices
    assert "rows" in out["x_spec"] and out["x_shards"] == [251] * 4
    assert "rows" in out["white_spec"] and out["white_devices"] == 4
    assert out["white_shards"] == [251] * 4
    assert out["pad_rows_abs"] == 0.0                       # padded rows whiten to exact zeros
    assert out["white_err"] < 1e-4
    # one iteration on sharded, padded data equals the single-device one; counting the
    # padded rows in E[g'(y)] (g'(0) = alpha) would not
    assert out["one_step_err"] < 1e-5
    assert out["one_step_uncorrected_err"] > 20 * max(out["one_step_err"], 1e-7)
    assert out["components_err"] < 1e-3
    assert out["n_iter"][0] == out["n_iter"][1]
    assert out["amari"] < 0.05


OUT_OF_CORE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    import jaxfactor
    from jaxfactor.ica import FastICA
    from jaxfactor.sources import NpySource
    from tests.helpers import fit_with_peak

    src = NpySource({path!r})
    # warm up compilation and allocator on a slice with the same block shapes
    warm = jaxfactor.sources.ArraySource(src.read(0, 4096 + src.n_samples % 512))
    fit = lambda data: FastICA(6, block_rows=512, random_state=0).fit(data)
    model, memory = fit_with_peak(lambda: fit(warm), lambda: fit(src))
    print(json.dumps({{**memory,
                      "solver": model.whiten_solver_, "converged": model.converged_,
                      "components": model.components_.tolist(), "mean": model.mean_.tolist()}}))
""")


def test_fastica_on_a_file_keeps_memory_at_block_size(tmp_path, rng):
    from jaxfactor.ica import FastICA
    from jaxfactor.metrics.amari import amari_distance

    n, p, k = 16000, 1024, 6  # 62.5 MiB on disk; a block of 512 rows is 2 MiB
    path = tmp_path / "big.npy"
    a = rng.standard_normal((p, k)).astype(np.float32)
    offset = 2.0 * rng.standard_normal(p).astype(np.float32)

    def rows(m):
        s = np.column_stack([rng.laplace(size=m), rng.uniform(-np.sqrt(3), np.sqrt(3), m),
                             rng.standard_t(5, m), rng.laplace(size=m),
                             rng.uniform(-np.sqrt(3), np.sqrt(3), m),
                             rng.choice([-1.0, 1.0], m)]).astype(np.float32)
        return s @ a.T + offset + 0.05 * rng.standard_normal((m, p)).astype(np.float32)

    write_npy(path, n, p, rows)
    out = run_json_script(OUT_OF_CORE.format(root=ROOT, path=str(path)))
    file_mb = path.stat().st_size / 2**20
    grown = grown_mb(out)
    block_mb = 512 * p * 4 / 2**20
    # a few blocks (plus the (n, k) whitened data, 0.4 MiB), never a sizeable part of the file
    assert grown < 12 * block_mb and grown < 0.4 * file_mb, (grown, file_mb)
    assert out["solver"] == "randomized" and out["converged"]
    comps = np.asarray(out["components"])
    # the planted sources are found ...
    assert amari_distance(comps, a) < 0.03
    # ... and the answer is the in-memory one (same key, same range finder)
    data = np.load(path)
    ref = FastICA(k, whiten_solver="randomized", random_state=0).fit(data)
    np.testing.assert_allclose(np.asarray(out["mean"]), data.mean(0, dtype=np.float64), atol=1e-4)
    np.testing.assert_allclose(comps, ref.components_, atol=2e-3 * np.abs(ref.components_).max())
