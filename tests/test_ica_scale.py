"""FastICA scale-out: row-sharded execution on 4 forced CPU devices, and fits from a
.npy file with memory bounded by the block size (subprocesses: XLA_FLAGS must be set
before JAX starts, and peak RSS is per process)."""
import textwrap

import numpy as np
import pytest

from tests import tolerances as T
from tests.helpers import (
    FOUR_DEVICES,
    ROOT,
    grown_mb,
    principal_angles_deg,
    run_json_script,
    write_npy,
)
from tests.test_ica import (
    amari_bound,
    eigh_polar_error,
    error_variance,
    fixed_point_data_error,
    planted,
    randomized_whitening_error,
    whitening_gap,
)

SHARDED = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, {root!r})
    from jaxfactor._policy import choose_whiten_range
    from jaxfactor import FastICA
    from jaxfactor.ica import fastica
    from jaxfactor._linalg import symmetric_decorrelation
    from jaxfactor.whitening import whiten
    from jaxfactor.metrics.amari import amari_distance
    from jaxfactor.randomized import range_params
    from jaxfactor.sharding import row_mesh, shard_block, shard_rows
    from jaxfactor._validation import check_random_state_key
    from tests.helpers import principal_angles_deg
    from tests.test_ica import fixed_point_data_error, planted, whitening_gap

    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng({seed})
    x, s_true, a = planted(rng, n=1001, p=300)       # 1001 rows: not a multiple of 4
    n, k = x.shape[0], 6
    mesh = row_mesh()
    # the kernels on sharded data: whitening of the mean-padded rows, then iterations
    xs, _ = shard_rows(x, mesh)
    res = whiten(xs, k, solver="randomized", key=jax.random.key(0), n_valid=n)
    ref = whiten(jnp.asarray(x), k, solver="randomized", key=jax.random.key(0))
    ws, _ = shard_block(res.white, mesh)
    w0 = jnp.asarray(rng.standard_normal((k, k)), jnp.float32)
    # one iteration on the same whitened rows, sharded and padded or on one device
    white = jnp.asarray(np.asarray(res.white[:n]))
    one_sharded = fastica(ws, w_init=w0, max_iter=1, n_valid=n)
    one_single = fastica(white, w_init=w0, max_iter=1)
    one_uncorrected = fastica(ws, w_init=w0, max_iter=1)          # padded rows counted
    single = FastICA(k, whiten_solver="randomized", tol={tol}, random_state=0).fit(x)
    sharded = FastICA(k, whiten_solver="randomized", tol={tol}, random_state=0, mesh=mesh).fit(x)

    # float64 quantities for the bounds: the spectrum of X_c, and the step's matrix
    # A = E[g(y) z^T] - diag(E[g'(y)]) W0 from the start W0 both runs decorrelate alike
    xc = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    z1, z2 = np.asarray(res.white[:n], np.float64), np.asarray(ref.white, np.float64)
    signs = np.sign(np.sum(z1 * z2, axis=0))
    w_start = np.asarray(symmetric_decorrelation(w0), np.float64)
    z = np.asarray(white, np.float64)
    y = z @ w_start.T
    g = np.tanh(y)
    gp = 1 - g * g
    step = g.T @ z / n - gp.mean(axis=0)[:, None] * w_start
    def polar(m):
        u, _, vt = np.linalg.svd(m)
        return u @ vt
    # counting the 3 padded rows adds 3 g'(0) = 3 to the sum of g': the step's E[g'] grows by 3/n
    pad = ws.shape[0] - n
    method, n_iter = choose_whiten_range("auto", None, n, x.shape[1], k)
    # the whitened data the two fits iterated on (their whitening key, as FastICA splits it)
    key_whiten = jax.random.split(check_random_state_key(0))[0]
    fits = [whiten(jnp.asarray(x), k, solver="randomized", key=key_whiten),
            whiten(xs, k, solver="randomized", key=key_whiten, n_valid=n)]
    fit_white = [np.asarray(f.white[:n], np.float64) for f in fits]
    # (recomputed here, a whitening may round a little differently from the fit's own:
    # the whitened data then differ by X_c dK^T, added to the gap)
    fit_gap = whitening_gap(*fit_white) + sum(
        np.linalg.norm(xc @ (np.asarray(f.components) / np.asarray(f.singular_values)[:, None]
                             - model.whitening_).T, 2) for f, model in zip(fits, (single, sharded)))
    print(json.dumps({{
        "x_spec": str(xs.sharding.spec), "x_shards": [s.data.shape[0] for s in xs.addressable_shards],
        "white_spec": str(ws.sharding.spec),
        "white_devices": len({{str(s.device) for s in ws.addressable_shards}}),
        "white_shards": [s.data.shape[0] for s in ws.addressable_shards],
        "pad_rows_abs": float(jnp.max(jnp.abs(res.white[n:]))),
        "white_col_err": (np.linalg.norm(z1 - signs * z2, axis=0) / np.sqrt(n)).tolist(),
        "white_angle_deg": float(principal_angles_deg(z1.T, z2.T).max()),
        "one_step_err": float(jnp.max(jnp.abs(one_sharded.w - one_single.w))),
        "one_step_uncorrected_err": float(jnp.max(jnp.abs(one_uncorrected.w - one_single.w))),
        "uncorrected_shift": np.asarray(one_uncorrected.w - one_single.w, np.float64).tolist(),
        "predicted_shift": (polar(step - pad / n * w_start) - polar(step)).tolist(),
        "step": step.tolist(),
        "step_terms": (np.abs(g).T @ np.abs(z) / n + gp.mean(axis=0)[:, None] * np.abs(w_start)).tolist(),
        "step_y_terms": (((np.abs(z) @ np.abs(w_start).T).T @ np.abs(z)
                          + 2 * np.abs(g * (np.abs(z) @ np.abs(w_start).T)).sum(axis=0)[:, None]
                          * np.abs(w_start)) / n).tolist(),
        "components_row_err": (np.linalg.norm(sharded.components_ - single.components_, axis=1)
                               / np.linalg.norm(single.components_, axis=1)).tolist(),
        "n_iter": [single.n_iter_, sharded.n_iter_],
        "converged": [single.converged_, sharded.converged_],
        "fit_white_gap": fit_gap,
        "fit_data_gain": fixed_point_data_error(fit_white[0], single._unmixing, 1.0),
        "amari": amari_distance(sharded.components_, a),
        "s": np.linalg.svd(xc, compute_uv=False)[:k + 2].tolist(),
        "basis": range_params(k, n, x.shape[1], method=method, n_iter=n_iter).basis_size,
    }}))
""")

TOL = 1e-4      # the full fits' stopping tolerance (FastICA's default)


def test_row_sharded_fastica_equals_single_device(rng):
    seed = int(rng.integers(1 << 30))
    out = run_json_script(SHARDED.format(root=ROOT, seed=seed, tol=TOL), **FOUR_DEVICES)
    x, s_true, _ = planted(np.random.default_rng(seed), n=1001, p=300)   # the script's data
    n, k = x.shape[0], 6
    # the data and the whitened data really are split by rows over 4 devices
    assert "rows" in out["x_spec"] and out["x_shards"] == [251] * 4
    assert "rows" in out["white_spec"] and out["white_devices"] == 4
    assert out["white_shards"] == [251] * 4
    assert out["pad_rows_abs"] == 0.0                       # padded rows whiten to exact zeros
    # Whitening: each run's U are the Ritz vectors of X_c + E (||E|| <= e); summation
    # order aside the runs are the same, so they differ by twice what one can move:
    # the whitened subspace by the Davis-Kahan/Wedin angle of 2e against the gap
    # s_k - s_{k+1}, each column (sign-aligned, RMS) by sqrt(2) 2e / its gap to the
    # other singular values (Wedin, one vector at a time).
    s = np.asarray(out["s"])
    e = randomized_whitening_error(x, out["basis"])
    assert out["white_angle_deg"] <= T.angle_bound_deg(2 * e, T.eigengap(s, k))
    col_gap = [T.min_gap(np.delete(s, range(i)), 1) for i in range(k)]
    T.assert_within(out["white_col_err"], 0, 2 * np.sqrt(2) * e / np.asarray(col_gap))
    # One iteration on sharded, padded data equals the single-device one on the same
    # rows: the n-row means of g(y) z^T and g'(y) (and the k-term y = W z they are fed)
    # round differently in the two summation orders, by at most gamma(n) (gamma(k))
    # of the sums of absolute terms in each; the symmetric decorrelation then amplifies
    # that input difference by its polar-factor derivative (~2 / (s_k + s_{k-1}) of
    # the step's matrix) and adds its own rounding, in each run.
    step = np.asarray(out["step"])
    step_err = (T.gamma(n) + 3 * T.unit_roundoff()) * np.asarray(out["step_terms"]) \
        + T.gamma(k) * np.asarray(out["step_y_terms"])
    one_step_bound = float(np.max(T.polar_error(step, 2 * step_err))) + 2 * eigh_polar_error(step)
    assert out["one_step_err"] <= one_step_bound
    # Counting the padded rows in E[g'(y)] (g'(0) = alpha = 1) instead moves the step
    # by exactly what 3/n more of g' predicts (float64), up to the same rounding ...
    T.assert_within(out["uncorrected_shift"], out["predicted_shift"], one_step_bound)
    # ... which is far more than the corrected runs differ (one float32 ulp of the
    # unit-sized entries as the floor)
    assert out["one_step_uncorrected_err"] > 20 * max(out["one_step_err"], T.eps())
    # The full fits stop at the same iteration; each is then within its last step of
    # the fixed point of its whitened data, an angle arccos(1 - tol) a row (when the
    # local contraction is at most 1/2: FastICA converges quadratically). The two
    # whitenings (checked above) differ, beyond a rotation the fixed point follows, by
    # rho (whitening_gap), which moves the fixed point by fixed_point_data_error;
    # components_ = W' diag(1/s) Vt turns an angle of a row of W' into a relative error
    # of at most s_1 / s_k, and the whitenings' own difference adds rho of it.
    assert out["converged"] == [True, True] and out["n_iter"][0] == out["n_iter"][1]
    rho = out["fit_white_gap"]
    theta = 2 * np.arccos(1 - TOL) + rho + out["fit_data_gain"] * rho
    T.assert_within(out["components_row_err"], 0, theta * s[0] / s[k - 1])
    # the planted sources are found to the statistical accuracy of n = 1001 samples
    assert out["amari"] <= amari_bound(error_variance(s_true), n)


OUT_OF_CORE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    import jaxfactor
    from jaxfactor import FastICA
    from jaxfactor.sources import NpySource
    from tests.helpers import fit_with_peak

    src = NpySource({path!r})
    # warm up compilation and allocator on a slice with the same block shapes
    warm = jaxfactor.sources.ArraySource(src.read(0, 4096 + src.n_samples % 512))
    fit = lambda data: FastICA(6, block_rows=512, random_state=0).fit(data)
    model, memory = fit_with_peak(lambda: fit(warm), lambda: fit(src))
    print(json.dumps({{**memory,
                      "solver": model.whiten_solver_, "converged": model.converged_,
                      "components": model.components_.tolist(), "mean": model.mean_.tolist(),
                      "whitening": model.whitening_.tolist()}}))
""")


def test_fastica_on_a_file_keeps_memory_at_block_size(tmp_path, rng):
    import jax
    import jax.numpy as jnp

    from jaxfactor._policy import choose_whiten_range
    from jaxfactor._validation import check_random_state_key
    from jaxfactor import FastICA
    from jaxfactor.whitening import whiten, whiten_source
    from jaxfactor.metrics.amari import amari_distance
    from jaxfactor.randomized import range_params
    from jaxfactor.sources import NpySource

    n, p, k = 16000, 1024, 6  # 62.5 MiB on disk; a block of 512 rows is 2 MiB
    path = tmp_path / "big.npy"
    a = rng.standard_normal((p, k)).astype(np.float32)
    offset = 2.0 * rng.standard_normal(p).astype(np.float32)
    sources = []

    def rows(m):
        s = np.column_stack([rng.laplace(size=m), rng.uniform(-np.sqrt(3), np.sqrt(3), m),
                             rng.standard_t(5, m), rng.laplace(size=m),
                             rng.uniform(-np.sqrt(3), np.sqrt(3), m),
                             rng.choice([-1.0, 1.0], m)]).astype(np.float32)
        sources.append(s)
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
    # the planted sources are found, to the statistical accuracy of n samples
    assert amari_distance(comps, a) <= amari_bound(error_variance(np.concatenate(sources)), n)
    # ... and the answer is the in-memory one (same key, same range finder)
    data = np.load(path)
    ref = FastICA(k, whiten_solver="randomized", random_state=0).fit(data)
    assert ref.converged_
    # the streamed mean: a sum of n terms in float32 in some order (forward error of a sum)
    T.assert_within(out["mean"], data.mean(0, dtype=np.float64),
                    T.gamma(n) * np.mean(np.abs(data), axis=0, dtype=np.float64))
    # Both fits stop within their last step, arccos(1 - tol) a row, of the fixed point of
    # their whitened data (quadratic convergence). The streamed and in-memory whitenings
    # are each exact for X_c + E (e their backward errors, the streamed one's with its
    # tall-skinny QR over blocks of 512 rows): their subspaces within the Wedin angle of
    # e over the gap; beyond a rotation (which the fixed point follows) they differ by rho
    # (whitening_gap), which moves the fixed point by fixed_point_data_error;
    # components_ = W' diag(1/s) Vt turns a row angle into a relative error of at most
    # s_1 / s_k, and the whitenings' own difference adds rho of it.
    xc = data.astype(np.float64) - data.mean(0, dtype=np.float64)
    s = np.sqrt(np.maximum(np.linalg.eigvalsh(xc.T @ xc)[::-1][:k + 1], 0))
    del xc
    method, n_iter = choose_whiten_range("auto", None, n, p, k)
    basis = range_params(k, n, p, method=method, n_iter=n_iter).basis_size
    e = randomized_whitening_error(data, basis) + randomized_whitening_error(data, basis, 512)
    # the whitened data the two fits iterated on (their whitening key, as FastICA splits it)
    key_whiten = jax.random.split(check_random_state_key(0))[0]
    fits = [whiten_source(NpySource(path), k, key=key_whiten, block_rows=512),
            whiten(jnp.asarray(data), k, solver="randomized", key=key_whiten)]
    whitening = [np.asarray(f.components) / np.asarray(f.singular_values)[:, None] for f in fits]
    white = [np.asarray(f.white, np.float64) for f in fits]
    assert principal_angles_deg(white[0].T, white[1].T).max() <= T.angle_bound_deg(e, T.eigengap(s, k))
    # (recomputed here, the whitenings may round a little differently from the fits'
    # own: their whitened data then differ by X_c dK^T, added to the gap)
    x64 = data.astype(np.float64)
    redo = sum(np.linalg.norm((x64 - x64.mean(0)) @ (mine - theirs).T, 2)
               for mine, theirs in zip(whitening, (np.asarray(out["whitening"]), ref.whitening_)))
    rho = whitening_gap(*white) + redo
    theta = 2 * np.arccos(1 - ref.tol) + rho + fixed_point_data_error(white[1], ref._unmixing, rho)
    T.assert_within(np.linalg.norm(comps - ref.components_, axis=1)
                    / np.linalg.norm(ref.components_, axis=1), 0, theta * s[0] / s[k - 1])


PICARD_SHARDED = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {root!r})
    from jaxfactor import FastICA
    from jaxfactor.picard import picard_o
    from jaxfactor.sharding import row_mesh, shard_block
    from jaxfactor.whitening import whiten
    from tests.test_picard import super_gaussian

    assert len(jax.devices()) == 4, jax.devices()
    x, s, a = super_gaussian(np.random.default_rng({seed}), n=1001)   # not a multiple of 4
    n, k = x.shape[0], s.shape[1]
    mesh = row_mesh()
    white = np.asarray(whiten(x, k).white)
    ws, _ = shard_block(white, mesh)
    w0 = np.random.default_rng(1).standard_normal((k, k)).astype(np.float32)
    sharded = picard_o(ws, w0, tol={tol}, n_valid=n)
    single = picard_o(white, w0, tol={tol})
    est = [FastICA(k, algorithm="picard", tol={tol}, random_state=0, mesh=m).fit(x)
           for m in (None, mesh)]
    print(json.dumps({{
        "white_spec": str(ws.sharding.spec), "white_shards": [b.data.shape[0] for b in ws.addressable_shards],
        "w": [np.asarray(sharded.w).tolist(), np.asarray(single.w).tolist()],
        "converged": [bool(sharded.converged), bool(single.converged)] + [m.converged_ for m in est],
        "objective": [float(sharded.objective), float(single.objective)],
        "components": [m.components_.tolist() for m in est],
        "plan": [m.plan_.algorithm for m in est],
    }}))
""")


@pytest.mark.slow
def test_row_sharded_picard_reaches_the_single_device_optimum(rng):
    from jaxfactor.metrics.amari import amari_distance
    from tests.test_picard import curvature, residual_angle, super_gaussian

    seed = int(rng.integers(1 << 30))
    tol = 1e-5
    out = run_json_script(PICARD_SHARDED.format(root=ROOT, seed=seed, tol=tol), **FOUR_DEVICES)
    assert "rows" in out["white_spec"] and out["white_shards"] == [251] * 4
    assert all(out["converged"]) and out["plan"] == ["picard", "picard"]
    # rounding differs by summation order: both stop within the residual angle of the optimum
    x, _, _ = super_gaussian(np.random.default_rng(seed), n=1001)
    w_sh, w_one = (np.asarray(w) for w in out["w"])
    from jaxfactor.whitening import whiten
    h_min, _ = curvature(np.asarray(whiten(x, 6).white), w_one)
    theta = residual_angle(tol, 1001, h_min)
    assert amari_distance(w_sh, w_one.T) <= 2 * theta
    assert abs(out["objective"][0] - out["objective"][1]) <= 2 * T.gamma(1001 * 6) * 6
    c_one, c_sh = (np.asarray(c) for c in out["components"])
    assert amari_distance(c_sh, np.linalg.pinv(c_one)) <= 2 * theta
