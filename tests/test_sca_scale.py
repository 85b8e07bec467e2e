"""SCA at scale: row-sharded over a device mesh, and out of core from a .npy file.

Both run in a subprocess: the mesh test needs ``XLA_FLAGS`` set before JAX
starts (4 forced CPU devices, as tests/test_sharding.py), the out-of-core test
measures the resident memory of a fresh process (as tests/test_out_of_core.py).
"""
import textwrap

import numpy as np

from tests.helpers import FOUR_DEVICES, ROOT, grown_mb, run_json_script, write_npy

MESH_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, {root!r})
    from jaxfactor.sca import SCA, sca
    from jaxfactor.sharding import row_mesh, shard_rows
    from tests.test_sca import planted_sparse

    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng({seed})
    x, y_true = planted_sparse(rng, n=1001, p=100)     # 1001 rows: not a multiple of 4
    gamma = 0.9 * float(np.abs(y_true).sum())
    mesh = row_mesh()
    out = {{}}
    for name, kw in (("full", {{}}), ("reduced", {{"reduced_rank": 8}})):
        single = SCA(3, gamma=gamma, random_state=0, **kw).fit(x)
        sharded = SCA(3, gamma=gamma, random_state=0, mesh=mesh, **kw).fit(x)
        out[name] = {{
            "n_iter": [single.n_iter_, sharded.n_iter_],
            "converged": [single.converged_, sharded.converged_],
            "components_err": float(np.max(np.abs(single.components_ - sharded.components_))),
            "support_same": float(np.mean((single.components_ != 0) == (sharded.components_ != 0))),
            "ratio_err": float(np.max(np.abs(single.explained_variance_ratio_
                                             - sharded.explained_variance_ratio_))),
            "b_err": float(np.max(np.abs(single.B_ - sharded.B_)) / np.max(np.abs(single.B_))),
            "mean_err": float(np.max(np.abs(single.mean_ - sharded.mean_))),
        }}
    # the kernel on the sharded array: the data and the n-side results live on 4 devices
    xs, n = shard_rows(x, mesh)
    res = sca(xs, 3, key=jax.random.key(0), gamma=gamma, n_rows=n)
    out["x_shards"] = [(str(s.device), list(s.data.shape)) for s in xs.addressable_shards]
    out["x_spec"] = str(xs.sharding.spec)
    out["scores_shards"] = sorted({{str(s.device) for s in res.scores.addressable_shards}})
    out["scores_shard_rows"] = sorted({{s.data.shape[0] for s in res.scores.addressable_shards}})
    out["padding_scores_max"] = float(jnp.max(jnp.abs(res.scores[n:])) / jnp.max(jnp.abs(res.scores)))
    print(json.dumps(out))
""")


def test_row_sharded_sca_equals_single_device(rng):
    seed = int(rng.integers(1 << 30))
    out = run_json_script(MESH_SCRIPT.format(root=ROOT, seed=seed), **FOUR_DEVICES)
    for name in ("full", "reduced"):
        r = out[name]
        assert all(r["converged"]), (name, r)
        # same algorithm, reductions split over 4 devices: rounding-level differences only
        assert abs(r["n_iter"][0] - r["n_iter"][1]) <= 2, (name, r)
        assert r["components_err"] < 1e-4, (name, r)
        assert r["support_same"] > 0.995, (name, r)
        assert r["ratio_err"] < 1e-5 and r["mean_err"] < 1e-5, (name, r)
        # B = Z^T X_c Y: when the stopping test fires one iteration apart, Z differs by up
        # to tol = 1e-5 an entry, ||dZ|| <= sqrt(n k) tol ~ 5e-4 against unit columns
        assert r["b_err"] < 3e-3, (name, r)
    assert "rows" in out["x_spec"]
    assert len({d for d, _ in out["x_shards"]}) == 4
    assert all(shape == [251, 100] for _, shape in out["x_shards"])   # 1004 = 4 x 251
    assert len(out["scores_shards"]) == 4
    # padding rows equal the mean: their scores are zero up to rounding
    assert out["padding_scores_max"] < 1e-6


OOC_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    import jaxfactor
    from jaxfactor import NpySource
    from jaxfactor.sca import SCA
    from tests.helpers import fit_with_peak

    src = NpySource({path!r})
    kw = dict(gamma={gamma}, reduced_rank={rank}, block_rows=512, random_state=0)
    # warm up compilation (and the allocator) at the same shapes: the SCA loop's
    # shapes depend on n, so the warm-up source has n rows too (random, made per block)
    rows = lambda lo, hi: np.random.default_rng(lo).standard_normal((hi - lo, src.n_features)).astype(np.float32)
    warm = jaxfactor.CallableSource(rows, src.n_samples, src.n_features)
    model, memory = fit_with_peak(lambda: SCA({k}, max_iter=3, **kw).fit(warm),
                                  lambda: SCA({k}, **kw).fit(src))
    print(json.dumps({{**memory, "components": model.components_.tolist(), "mean": model.mean_.tolist(),
                      "ratio": model.explained_variance_ratio_.tolist(), "b": model.B_.tolist(),
                      "n_iter": model.n_iter_, "converged": model.converged_}}))
""")


def test_out_of_core_sca_keeps_memory_at_block_size(tmp_path, rng):
    from jaxfactor.sca import SCA

    n, p, k, rank = 12000, 1024, 3, 12      # 47 MiB on disk; a block of 512 rows is 2 MiB
    # planted sparse loadings (disjoint supports of 60), dense scores, noise, an offset
    y_true = np.zeros((p, k))
    perm = rng.permutation(p)
    for j in range(k):
        y_true[perm[j * 60:(j + 1) * 60], j] = rng.uniform(0.5, 1.5, 60) * rng.choice([-1, 1], 60)
    y_true /= np.linalg.norm(y_true, axis=0)
    offset = 2.0 * rng.standard_normal(p)
    path = tmp_path / "big.npy"
    write_npy(path, n, p, lambda m: offset + (rng.standard_normal((m, k)) * np.array([8.0, 6.0, 4.0]))
              @ y_true.T + 0.2 * rng.standard_normal((m, p)))
    gamma = 0.9 * float(np.abs(y_true).sum())
    out = run_json_script(OOC_SCRIPT.format(root=ROOT, path=str(path), gamma=gamma, rank=rank, k=k))
    file_mb = path.stat().st_size / 2**20
    grown = grown_mb(out)
    block_mb = 512 * p * 4 / 2**20
    # the fit holds U (n x r), the scores (n x k) and a few blocks, never a sizeable part of the file
    assert grown < 12 * block_mb and grown < 0.4 * file_mb, (grown, file_mb)
    assert out["converged"]
    comps = np.asarray(out["components"], np.float32)
    # the answer is the in-memory SCA with the same reduced rank (same key: same sketch)
    data = np.load(path)
    ref = SCA(k, gamma=gamma, reduced_rank=rank, random_state=0).fit(data)
    assert np.max(np.abs(comps - ref.components_)) < 1e-3
    assert np.mean((comps != 0) == (ref.components_ != 0)) > 0.995
    np.testing.assert_allclose(out["ratio"], ref.explained_variance_ratio_, rtol=1e-4)
    np.testing.assert_allclose(out["mean"], ref.mean_, atol=1e-5 * np.abs(ref.mean_).max())
    np.testing.assert_allclose(out["b"], ref.B_, atol=1e-3 * np.abs(ref.B_).max())
    # an independent float64 check: the share of variance in span(Y), and the planted supports
    xc = data.astype(np.float64) - data.mean(0)
    q = np.linalg.qr(comps.T.astype(np.float64))[0]
    assert abs(out["ratio"][-1] - np.sum((xc @ q) ** 2) / np.sum(xc ** 2)) < 1e-4
    found = np.abs(comps @ y_true).max(axis=1) / np.linalg.norm(comps, axis=1)
    assert found.min() > 0.99, found
