"""SCA at scale: row-sharded over a device mesh, and out of core from a .npy file.

Both run in a subprocess: the mesh test needs ``XLA_FLAGS`` set before JAX
starts (4 forced CPU devices, as tests/test_sharding.py), the out-of-core test
measures the resident memory of a fresh process (as tests/test_out_of_core.py).
"""
import textwrap

import numpy as np

from tests import tolerances as T
from tests.helpers import FOUR_DEVICES, ROOT, grown_mb, run_json_script, write_npy
from tests.test_sca import planted_bounds, planted_sparse, sca_comparison_bounds

MESH_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, {root!r})
    from jaxfactor import SCA
    from jaxfactor.sca import sca
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
        mismatch = (single.components_ != 0) != (sharded.components_ != 0)
        out[name] = {{
            "n_iter": [single.n_iter_, sharded.n_iter_],
            "converged": [single.converged_, sharded.converged_],
            "components": single.components_.tolist(),
            "components_err": float(np.max(np.abs(single.components_ - sharded.components_))),
            "support_mismatch_abs": float(np.max(np.abs(np.where(
                mismatch, single.components_ + sharded.components_, 0)), initial=0)),
            "support_same": float(np.mean(~mismatch)),
            "ratio_err": float(np.max(np.abs(single.explained_variance_ratio_
                                             - sharded.explained_variance_ratio_))),
            "ratio": single.explained_variance_ratio_.tolist(),
            "b_err": float(np.max(np.abs(single.B_ - sharded.B_))),
            "b_max": float(np.max(np.abs(single.B_))),
            "mean_err": np.abs(single.mean_ - sharded.mean_).tolist(),
        }}
    # the kernel on the sharded array: the data and the n-side results live on 4 devices
    xs, n = shard_rows(x, mesh)
    res = sca(xs, 3, key=jax.random.key(0), gamma=gamma, n_valid=n)
    out["x_shards"] = [(str(s.device), list(s.data.shape)) for s in xs.addressable_shards]
    out["x_spec"] = str(xs.sharding.spec)
    out["scores_shards"] = sorted({{str(s.device) for s in res.scores.addressable_shards}})
    out["scores_shard_rows"] = sorted({{s.data.shape[0] for s in res.scores.addressable_shards}})
    out["padding_scores"] = np.abs(np.asarray(res.scores[n:])).max(axis=0).tolist()
    out["loadings"] = np.asarray(res.loadings).tolist()
    print(json.dumps(out))
""")


def test_row_sharded_sca_equals_single_device(rng):
    from jaxfactor.randomized import range_params

    seed = int(rng.integers(1 << 30))
    out = run_json_script(MESH_SCRIPT.format(root=ROOT, seed=seed), **FOUR_DEVICES)
    x, _ = planted_sparse(np.random.default_rng(seed), n=1001, p=100)   # the script's data
    x64 = x.astype(np.float64)
    n, p = x.shape
    tol = 1e-5                                               # SCA's default
    # the reduced variant iterates on each run's rank-8 randomized SVD (their backward
    # errors: Rayleigh-Ritz and the rounded mean; see sca_comparison_bounds)
    e_r = 2 * (T.rayleigh_ritz_error(x, range_params(8, n, p).basis_size)
               + T.gamma(n) * np.linalg.norm(x64))
    for name in ("full", "reduced"):
        r = out[name]
        assert all(r["converged"]), (name, r)
        # Same algorithm, reductions split over 4 devices: rounding-level differences only.
        # Not in the iteration counts: where the change hovers near tol, rounding decides
        # at which step it first falls below (seen: 3 and 7 steps for answers 1e-7 apart);
        # the first step is never converged (it compares against the unrotated start).
        assert min(r["n_iter"]) >= 2, (name, r)
        b = sca_comparison_bounds(x, np.asarray(r["components"]).T, tol,
                                  sketch_error=e_r if name == "reduced" else None)
        assert r["components_err"] <= b["y"], (name, r, b["y"])
        # an entry in one support and not the other is that close to zero in both
        # (the soft threshold is continuous)
        assert r["support_mismatch_abs"] <= b["y"], (name, r, b["y"])
        # the means: float32 sums of n terms (forward error of a sum), in each run
        T.assert_within(r["mean_err"], 0, 2 * T.gamma(n) * np.abs(x64).mean(0))
        assert r["ratio_err"] <= b["ratio"], (name, r, b["ratio"])
        assert r["b_err"] <= b["b"], (name, r, b["b"])
    assert "rows" in out["x_spec"]
    assert len({d for d, _ in out["x_shards"]}) == 4
    assert all(shape == [251, 100] for _, shape in out["x_shards"])   # 1004 = 4 x 251
    assert len(out["scores_shards"]) == 4
    # padding rows equal the (float32) mean: their scores (pad - mean) Y are zero up to
    # the two means' rounding and the folded product's (product_rounding of a mean row)
    loadings = np.asarray(out["loadings"])
    pad_bound = (2 * T.gamma(n) * np.abs(x64).mean(0) + T.gamma(p + 1) * 2 * np.abs(x64.mean(0))) \
        @ np.abs(loadings)
    T.assert_within(out["padding_scores"], 0, pad_bound)


OOC_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    import jaxfactor
    from jaxfactor import NpySource
    from jaxfactor import SCA
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
    from jaxfactor.randomized import range_params
    from jaxfactor import SCA

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
    # the answer is the in-memory SCA with the same reduced rank (same key: same sketch),
    # up to two converged runs' and two sketches' rounding (sca_comparison_bounds; the
    # streamed sketch's tall-skinny QR over blocks of 512 rows)
    data = np.load(path)
    ref = SCA(k, gamma=gamma, reduced_rank=rank, random_state=0).fit(data)
    assert ref.converged_
    x64 = data.astype(np.float64)
    basis = range_params(rank, n, p).basis_size
    e = (T.rayleigh_ritz_error(data, basis) + T.rayleigh_ritz_error(data, basis, block_rows=512)
         + 2 * T.gamma(n) * np.linalg.norm(x64))
    b = sca_comparison_bounds(data, ref.components_.T, ref.tol, sketch_error=e)
    assert np.max(np.abs(comps - ref.components_)) <= b["y"]
    mismatch = (comps != 0) != (ref.components_ != 0)
    assert np.all(np.abs(np.where(mismatch, comps + ref.components_, 0)) <= b["y"])
    T.assert_within(out["ratio"], ref.explained_variance_ratio_, b["ratio"])
    # the means: float32 sums of n terms (streamed in blocks or not), each
    T.assert_within(out["mean"], ref.mean_, 2 * T.gamma(n) * np.abs(x64).mean(0))
    T.assert_within(out["b"], ref.B_, b["b"])
    # an independent float64 check: the share of variance in span(Y) (one run's float32
    # rounding of captured / total), and the planted supports (statistical accuracy of
    # n samples: see planted_bounds)
    xc = x64 - x64.mean(0)
    q = np.linalg.qr(comps.T.astype(np.float64))[0]
    share = np.sum((xc @ q) ** 2) / np.sum(xc ** 2)
    assert abs(out["ratio"][-1] - share) <= b["ratio_rounding"] * share
    found = np.abs(comps @ y_true).max(axis=1) / np.linalg.norm(comps, axis=1)
    assert found.min() >= planted_bounds(y_true, gamma, n, 0.2, (8.0, 6.0, 4.0))[0], found
