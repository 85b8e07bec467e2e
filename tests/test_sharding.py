"""Sharded execution on 4 forced CPU devices (a subprocess: XLA_FLAGS must be
set before JAX starts) must agree with the single-device result."""
import math
import textwrap

import jax
import numpy as np
import pytest

from jaxfactor.randomized import range_params

from .helpers import FOUR_DEVICES, ROOT, exact_pca, low_rank_data, principal_angles_deg, run_json_script
from .test_randomized import _float32_basis, _operand_rounding_bounds, _vector_sines, float64_rerun
from .tolerances import (assert_within, blocked_moments_error, gamma, randomized_angle_bound_deg,
                         rayleigh_ritz_error, unit_roundoff)

U32 = unit_roundoff(np.float32)


def _sum_order_bounds(x, k, *, block_rows=None, leading=None, **sizes):
    """``(singular value, component, total variance)`` bounds on the difference of
    two runs of the same randomized PCA of ``x`` (``k`` components) that differ only
    in the order of their sums (one device against a mesh): twice the rounding of
    one (Weyl on the Rayleigh-Ritz step; :func:`_vector_sines` for each of the
    ``leading`` (default all) components, ``|v - v'| <= sqrt(2) sin``; the
    per-feature variances' sums, :func:`blocked_moments_error`)."""
    x = np.asarray(x, np.float64)
    n, p = x.shape
    l = range_params(k, n, p, **sizes).basis_size
    e = rayleigh_ritz_error(x, l, block_rows=block_rows)
    sines = _vector_sines(x, leading or k, l, block_rows=block_rows)
    total = blocked_moments_error(x, block_rows)[1].sum() + gamma(p) * x.var(0, ddof=1).sum()
    return 2 * e, 2 * math.sqrt(2) * sines, 2 * total

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
    fit = lambda pca: {{f: getattr(pca, f + "_").tolist() for f in ("components", "explained_variance",
                                                                   "explained_variance_ratio", "mean")}}
    print(json.dumps({{
        "n": n, "padded_rows": xs.shape[0], "spec": str(xs.sharding.spec), "shards": shards,
        "padded_mean": np.asarray(xs.mean(0)).tolist(), "mean32": x.mean(0).tolist(),
        "single": fit(single), "sharded": fit(sharded),
    }}))
""")


def test_row_sharded_pca_equals_single_device(rng):
    seed = int(rng.integers(1 << 30))
    out = run_json_script(SCRIPT.format(root=ROOT, seed=seed), **FOUR_DEVICES)
    assert out["n"] == 1001 and out["padded_rows"] == 1004
    assert "rows" in out["spec"]
    assert len({d for d, _ in out["shards"]}) == 4
    assert all(shape == [251, 1200] for _, shape in out["shards"])
    # the same data in float64 here, for the bounds
    x = low_rank_data(np.random.default_rng(seed), 1001, 1200, 20).astype(np.float64)
    n = x.shape[0]
    # two sums of at most 1004 terms (three of them the padding's float32 mean)
    mean_bound = (2 * gamma(1004) + 2 * U32) * np.abs(x).mean(0)
    assert_within(out["padded_mean"], out["mean32"], mean_bound)
    one, mesh = out["single"], out["sharded"]
    assert_within(mesh["mean"], one["mean"], mean_bound)
    # padding enters neither the moments nor the products: equal to one device up
    # to the order of the sums
    sv, comp, total = _sum_order_bounds(x, 10)
    ev = np.asarray(one["explained_variance"])
    s = np.sqrt(ev * (n - 1))
    ev_err = (2 * s * sv + sv * sv) / (n - 1)
    assert_within(mesh["explained_variance"], ev, ev_err)
    diff = np.linalg.norm(np.asarray(mesh["components"]) - np.asarray(one["components"]), axis=1)
    assert np.all(diff <= comp), (diff, comp)
    tot = x.var(0, ddof=1).sum()
    ratio = np.asarray(one["explained_variance_ratio"])
    assert_within(mesh["explained_variance_ratio"], ratio, (ev_err + ratio * total) / tot)


STREAM_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, {root!r})
    import importlib.util
    import jaxfactor.randomized as R
    # the module whose row loop places the blocks (the streaming runner, where there is one)
    S = importlib.import_module("jaxfactor.streaming") if importlib.util.find_spec("jaxfactor.streaming") else R
    from jaxfactor import PCA
    from jaxfactor.sharding import row_mesh
    from tests.helpers import low_rank_data

    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng({seed})
    x = low_rank_data(rng, 1001, 300, 20, offset=20.0)  # blocks of 250 rows and a last block of 1 row
    placed = []
    real_shard_block = S.shard_block

    def spy(block, mesh, dtype=None):
        out, n_valid = real_shard_block(block, mesh, dtype=dtype)
        placed.append([str(out.sharding.spec), sorted(str(s.device) for s in out.addressable_shards),
                       [s.data.shape[0] for s in out.addressable_shards], int(n_valid)])
        return out, n_valid

    S.shard_block = spy
    mesh = row_mesh()
    res = {{}}
    for prec in {precisions!r}:
        kw = dict(solver="streaming", block_rows=250, n_iter=2, random_state=0, precision=prec)
        single = PCA(10, **kw).fit(x)
        n_before = len(placed)
        sharded = PCA(10, mesh=mesh, **kw).fit(x)
        fit = lambda pca: {{f: getattr(pca, f + "_").tolist() for f in ("components", "explained_variance",
                                                                       "explained_variance_ratio", "mean")}}
        res[prec] = {{"blocks": len(placed) - n_before, "single": fit(single), "sharded": fit(sharded)}}
    from jaxfactor.sources import ArraySource
    svd, mom = R.randomized_svd_source(ArraySource(x), 10, key=jax.random.key(0), block_rows=250, n_iter=2,
                                       mesh=mesh)
    res["replicated"] = [bool(a.sharding.is_fully_replicated) for a in (svd.vt, svd.s, mom.mean, mom.variance)]
    res["n_samples"] = int(mom.n_samples)
    res["placed"] = placed
    print(json.dumps(res))
""")


def _run_stream_script(seed, precisions):
    script = STREAM_SCRIPT.format(root=ROOT, seed=seed, precisions=tuple(precisions))
    return run_json_script(script, timeout=900, **FOUR_DEVICES)


def test_streaming_pca_over_a_mesh_equals_single_device(rng):
    seed = int(rng.integers(1 << 30))
    out = _run_stream_script(seed, ["float32"])
    # every block of every pass went to the 4 devices split by rows, zero-padded to a multiple of 4
    assert out["placed"], "no block was placed on the mesh"
    for spec, devices, rows, n_valid in out["placed"]:
        assert "rows" in spec and len(set(devices)) == 4
        assert len(set(rows)) == 1 and sum(rows) == n_valid + (-n_valid) % 4
    assert {n for *_, n in out["placed"]} == {250, 1}
    assert out["float32"]["blocks"] == 5 * 3  # 5 blocks, 3 passes (Krylov, 2 iterations)
    assert all(out["replicated"]) and out["n_samples"] == 1001
    # padding enters neither the moments nor the products: equal to one device up to
    # the order of the sums. The leading half only: the uncentred first pass (mean 20)
    # is rounded relative to ||X||, which perturbs the start block, and the result of
    # another start block is another draw of the randomized method: each within the
    # range finder's own error (the float64 rerun's, 2 iterations) of the exact one
    x = low_rank_data(np.random.default_rng(seed), 1001, 300, 20, offset=20.0).astype(np.float64)
    n, k = x.shape[0], 5
    one, mesh = out["float32"]["single"], out["float32"]["sharded"]
    vt, ev, _ = exact_pca(x)
    s_rerun, vt_rerun = float64_rerun(x, 10, jax.random.key(0), n_iter=2)
    own = np.abs(np.sum(vt_rerun[:k] * vt[:k], axis=1)).clip(0, 1)
    first_pass = np.sqrt(1 - own ** 2)  # sine of each rerun component's angle to the exact one
    sv, comp, total = _sum_order_bounds(x, 10, block_rows=250, leading=k, n_iter=2)
    comp = comp + 2 * math.sqrt(2) * first_pass
    diff = np.linalg.norm(np.asarray(mesh["components"])[:k] - np.asarray(one["components"])[:k], axis=1)
    assert np.all(diff <= comp), (diff, comp)
    s = np.sqrt(ev[:k] * (n - 1))
    # (the Ritz values feel the start block at second order only)
    ev_err = (2 * s * sv + sv * sv) / (n - 1)
    assert_within(np.asarray(mesh["explained_variance"])[:k], np.asarray(one["explained_variance"])[:k], ev_err)
    tot = x.var(0, ddof=1).sum()
    ratio = np.asarray(one["explained_variance_ratio"])[:k]
    assert_within(np.asarray(mesh["explained_variance_ratio"])[:k], ratio, (ev_err + ratio * total) / tot)
    mean_bound = 2 * blocked_moments_error(x, 250)[0]
    assert_within(mesh["mean"], one["mean"], mean_bound)  # the mean is 20-ish: float32 rounding
    # and both equal an independent float64 reference on the leading components, up
    # to the range finder's own error (its float64 rerun: 2 iterations, same key) and
    # rounding
    l = range_params(10, *x.shape, n_iter=2).basis_size
    angle = principal_angles_deg(vt_rerun[:k], vt[:k]).max() + randomized_angle_bound_deg(x, k, l, block_rows=250)
    assert principal_angles_deg(np.asarray(mesh["components"])[:k], vt[:k]).max() <= angle
    e = rayleigh_ritz_error(x, l, block_rows=250)
    shortfall = np.maximum(ev[:k] - s_rerun[:k] ** 2 / (n - 1), 0)
    assert_within(np.asarray(mesh["explained_variance"])[:k], ev[:k], (2 * s * e + e * e) / (n - 1) + shortfall)


@pytest.mark.slow
def test_streaming_bf16_over_a_mesh_equals_single_device(rng):
    seed = int(rng.integers(1 << 30))
    out = _run_stream_script(seed, ["bf16"])
    b16 = out["bf16"]
    assert b16["blocks"] == 15
    # bf16 operands: sharded equals single-device bf16 up to the order of the sums;
    # the float32 sums round the centring (and the basis) differently, which flips
    # the bf16 rounding of some operands: at most the first-order bf16 bounds of
    # each run (test_randomized._operand_rounding_bounds), twice; leading half
    x = low_rank_data(np.random.default_rng(seed), 1001, 300, 20, offset=20.0)
    x64 = x.astype(np.float64)
    n, k = x.shape[0], 5
    basis = _float32_basis(x, 10, jax.random.key(0), n_iter=2)
    sv, angle = _operand_rounding_bounds(x, basis, 10, k, 2.0 ** -8, centred_operands=True)
    one, mesh = b16["single"], b16["sharded"]
    s = np.sqrt(np.asarray(one["explained_variance"])[:k] * (n - 1))
    ev_err = (2 * s * 2 * sv[:k] + (2 * sv[:k]) ** 2) / (n - 1)
    assert_within(np.asarray(mesh["explained_variance"])[:k], np.asarray(one["explained_variance"])[:k], ev_err)
    assert principal_angles_deg(np.asarray(mesh["components"])[:k], np.asarray(one["components"])[:k]).max() \
        <= 2 * angle
    # the moments do not depend on the product precision
    assert_within(mesh["mean"], one["mean"], 2 * blocked_moments_error(x64, 250)[0])


RESUME_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {root!r})
    from jaxfactor.randomized import randomized_svd_source
    from jaxfactor.sources import ArraySource
    from jaxfactor.sharding import row_mesh
    from tests.test_randomized import _FlakySource
    from tests.helpers import low_rank_data

    x = low_rank_data(np.random.default_rng({seed}), 403, 60, 8)
    kw = dict(key=jax.random.key(2), block_rows=50, n_iter=5, checkpoint_every=2, mesh=row_mesh())
    ref, _ = randomized_svd_source(ArraySource(x), 5, **kw)
    flaky = _FlakySource(x, fail_at=250, fail_pass=3)
    try:
        randomized_svd_source(flaky, 5, checkpoint={ckpt!r}, **kw)
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    got, _ = randomized_svd_source(flaky, 5, checkpoint={ckpt!r}, **kw)
    print(json.dumps({{"interrupted": interrupted,
                      "equal": bool(np.array_equal(np.asarray(got.vt), np.asarray(ref.vt))
                                    and np.array_equal(np.asarray(got.s), np.asarray(ref.s)))}}))
""")


@pytest.mark.slow
def test_streaming_over_a_mesh_resumes_to_the_same_result(rng, tmp_path):
    script = RESUME_SCRIPT.format(root=ROOT, seed=int(rng.integers(1 << 30)), ckpt=str(tmp_path / "run.npz"))
    out = run_json_script(script, timeout=900, **FOUR_DEVICES)
    assert out == {"interrupted": True, "equal": True}
    assert not (tmp_path / "run.npz").exists()
