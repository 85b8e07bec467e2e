"""The streaming runner (jaxfactor/streaming.py): one pass equals a fold, padding
rows are masked, and every source fit built on it (randomized SVD, FastICA's
whitening, SCA) resumes after a kill to the bit-identical result."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfactor import SCA, FastICA
from jaxfactor import accumulate as A
from jaxfactor import streaming as S
from jaxfactor._params import InvalidParameterError
from jaxfactor.sharding import row_mesh
from jaxfactor.sources import ArraySource
from tests import tolerances as T

from .helpers import KilledSource
from .tolerances import assert_within, blocked_moments_error, gamma


def _mixed(rng, n=300, p=20, k=4):
    """Laplace sources mixed into ``p`` features, plus a little noise and an offset."""
    s = rng.laplace(size=(n, k))
    return (s @ rng.standard_normal((k, p)) + 0.05 * rng.standard_normal((n, p)) + 3.0).astype(np.float32)


def _centred_rows(block, mean, z):
    return A.centred_matmul(block, mean, z)


def _squares(block, z):
    return (block @ z) ** 2


# ------------------------------------------------------------------ the runner


def test_a_pass_equals_fold_and_stacks_rows_in_order(rng):
    x = rng.standard_normal((1001, 7)).astype(np.float32) + 5
    z = jnp.asarray(rng.standard_normal((7, 3)).astype(np.float32))
    mean = jnp.asarray(x.mean(0))
    mom, stack, sums = A.moments(7), A.stack_rows(_centred_rows), A.sum_rows(_squares)
    seen = []
    accs = {"moments": mom, "rows": stack, "sums": sums}
    states = {"moments": mom.init(), "rows": stack.init((mean, z), 1001, 3), "sums": sums.init((z,), (3,))}
    out = S.run_pass(ArraySource(x), accs, states, block_rows=128,
                     progress=lambda done, total: seen.append((done, total)))
    blocks = [x[i:i + 128] for i in range(0, 1001, 128)]
    folded = A.fold(mom, mom.init(), blocks)
    for a, b in zip(out["moments"], folded):  # the same blocks in the same order: the same bits
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x64, z64, m64 = x.astype(np.float64), np.asarray(z, np.float64), np.asarray(mean, np.float64)
    assert_within(stack.finalize(out["rows"]), (x64 - m64) @ z64,
                  gamma(8) * (np.abs(x64) + np.abs(m64)) @ np.abs(z64))
    assert int(out["rows"].cursor) == 1001
    assert_within(sums.finalize(out["sums"]), np.sum((x64 @ z64) ** 2, axis=0),
                  3 * gamma(1001 + 7) * np.sum((np.abs(x64) @ np.abs(z64)) ** 2, axis=0))
    assert [d for d, _ in seen] == [min(i + 128, 1001) for i in range(0, 1001, 128)]
    assert {t for _, t in seen} == {1001}


def test_a_pass_over_a_one_device_mesh_matches(rng):
    x = rng.standard_normal((203, 9)).astype(np.float32) + 2
    z = jnp.asarray(rng.standard_normal((9, 2)).astype(np.float32))
    mean = jnp.asarray(x.mean(0))
    mom, stack = A.moments(9), A.stack_rows(_centred_rows)
    accs = {"moments": mom, "rows": stack}

    def start():
        return {"moments": mom.init(), "rows": stack.init((mean, z), 203, 2)}
    plain = S.run_pass(ArraySource(x), accs, start(), block_rows=50)
    mesh = S.run_pass(ArraySource(x), accs, start(), block_rows=50, mesh=row_mesh(jax.devices()[:1]))
    x64 = x.astype(np.float64)
    mean_err, var_err = blocked_moments_error(x64, 50)
    for got in (plain, mesh):
        fin = mom.finalize(got["moments"])
        assert int(fin.n_samples) == 203
        assert_within(fin.mean, x64.mean(0), mean_err)
        assert_within(fin.variance, x64.var(0, ddof=1), var_err)
    np.testing.assert_array_equal(np.asarray(mesh["rows"].rows), np.asarray(plain["rows"].rows))


def test_padding_rows_are_masked_out_of_stacks_and_sums(rng):
    x = rng.standard_normal((10, 5)).astype(np.float32)
    z = jnp.asarray(rng.standard_normal((5, 3)).astype(np.float32))
    mean = jnp.asarray(np.ones(5, np.float32))
    padded = jnp.concatenate([jnp.asarray(x), jnp.zeros((3, 5))], axis=0)
    stack, sums = A.stack_rows(_centred_rows), A.sum_rows(_squares)
    # the same products on a 13-row and a 10-row block may take other kernels (another
    # summation order): each of X z and mean^T z is within gamma(5) of its terms' absolute
    # sum, the difference within u of its result; twice that separates the two. A padding
    # row let in, or a real one dropped, moves a row by O(1).
    u, g5 = T.unit_roundoff(), T.gamma(5)
    terms = np.abs(x) @ np.abs(np.asarray(z)) + np.abs(np.asarray(mean)) @ np.abs(np.asarray(z))
    ref = np.asarray(_centred_rows(jnp.asarray(x), mean, z))
    row_tol = np.tile(2 * (g5 * terms + u * np.abs(ref)), (2, 1))
    # two blocks of 10 real rows, each padded to 13, into a buffer of exactly 20 rows
    st = stack.init((mean, z), 20, 3)
    st = stack.update(st, padded, np.int32(10))
    st = stack.update(st, padded, np.int32(10))
    assert np.all(np.abs(np.asarray(stack.finalize(st)) - np.concatenate([ref, ref])) <= row_tol)
    assert int(st.cursor) == 20
    su = sums.update(sums.init((z,), (3,)), padded, np.int32(10))
    # sums of 10 squares of 5-term products: relative 2 gamma(5) per square, gamma(10) the sum
    sq = (np.abs(x) @ np.abs(np.asarray(z))) ** 2
    sum_tol = 2 * ((2 * g5 + u) * sq.sum(axis=0) + T.gamma(10) * sq.sum(axis=0))
    assert np.all(np.abs(np.asarray(sums.finalize(su))
                         - np.asarray(jnp.sum(_squares(jnp.asarray(x), z), axis=0))) <= sum_tol)
    # merge: two halves started at their own rows add up to the whole
    a = stack.update(stack.init((mean, z), 20, 3), jnp.asarray(x))
    b = stack.update(stack.init((mean, z), 20, 3, start=10), jnp.asarray(x))
    merged = np.asarray(stack.finalize(stack.merge(a, b)))
    assert np.all(np.abs(merged - np.concatenate([ref, ref])) <= row_tol)


def test_a_pass_resumes_from_its_mid_pass_checkpoint(rng, tmp_path):
    x = rng.standard_normal((400, 6)).astype(np.float32)
    mom, stack = A.moments(6, covariance=True), A.stack_rows(_centred_rows)
    z, mean = jnp.asarray(rng.standard_normal((6, 2)).astype(np.float32)), jnp.zeros(6)
    accs = {"moments": mom, "rows": stack}

    def start():
        return {"moments": mom.init(), "rows": stack.init((mean, z), 400, 2)}
    ref = S.run_pass(ArraySource(x), accs, start(), block_rows=30)
    ckpt = S.Checkpoint(str(tmp_path / "pass.npz"), S.fingerprint({"test": 1}), every=3)
    with pytest.raises(KeyboardInterrupt):
        S.run_pass(KilledSource(x, fail_at=300, fail_pass=1), accs, start(), block_rows=30,
                   checkpoint=S.PassCheckpoint(ckpt, 0, {"c": jnp.arange(3)}))
    saved = ckpt.load()
    assert (saved.stage, saved.row) == (0, 270) and list(saved.context) == ["c"]
    states = S._restore_states(start(), saved.states)
    got = S.run_pass(ArraySource(x), accs, states, block_rows=30, start_row=saved.row)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_unreadable_and_foreign_checkpoints_are_refused(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        S.Checkpoint(str(bad), "x").load()
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    with pytest.raises(ValueError, match="not a jaxfactor checkpoint"):
        S.Checkpoint(str(other), "x").load()
    mine = S.Checkpoint(str(tmp_path / "mine.npz"), S.fingerprint({"n": 1}))
    mine.save(1, 0, {"a": np.zeros(2)})
    with pytest.raises(ValueError, match="different run"):
        S.Checkpoint(mine.path, S.fingerprint({"n": 2})).load()
    assert mine.load().stage == 1
    mine.remove()
    assert mine.load() is None


# ------------------------------------------------- kill and resume of source fits


def _kill_and_resume(make_fit, x, fail_pass, ckpt, fail_at=160):
    killed = KilledSource(x, fail_at=fail_at, fail_pass=fail_pass)
    with pytest.raises(KeyboardInterrupt):
        make_fit(checkpoint=ckpt).fit(killed)
    assert ckpt.exists()
    got = make_fit(checkpoint=ckpt).fit(KilledSource(x))
    assert not ckpt.exists()
    return got


def _assert_same_fit(got, ref, names):
    for name in names:
        np.testing.assert_array_equal(np.asarray(getattr(got, name)), np.asarray(getattr(ref, name)),
                                      err_msg=name)


ICA_FITTED = ("components_", "mixing_", "mean_", "whitening_", "explained_variance_", "n_iter_")
SCA_FITTED = ("components_", "B_", "mean_", "explained_variance_ratio_", "objective_", "n_iter_")


def test_fastica_source_fit_resumes_to_the_identical_result(rng, tmp_path):
    x = _mixed(rng)

    def make_fit(**kw):
        return FastICA(4, random_state=3, block_rows=40, checkpoint_every=2, **kw)
    clean = KilledSource(x)
    ref = make_fit().fit(clean)
    passes = clean.passes
    assert passes == 4  # sketch, power, project, whiten
    for fail_pass in (2, passes):  # a power pass, and the whitening projection (the last)
        got = _kill_and_resume(make_fit, x, fail_pass, tmp_path / f"ica{fail_pass}.npz")
        _assert_same_fit(got, ref, ICA_FITTED)


def test_sca_source_fit_resumes_to_the_identical_result(rng, tmp_path):
    x = _mixed(rng)

    def make_fit(**kw):
        return SCA(3, reduced_rank=8, random_state=5, block_rows=40, checkpoint_every=2, **kw)
    clean = KilledSource(x)
    ref = make_fit().fit(clean)
    passes = clean.passes
    assert passes == 6  # sketch, 2 power passes, project, left factor, final
    # the sketch, the left-factor pass before the iteration, the final pass after it
    for fail_pass in (1, passes - 1, passes):
        got = _kill_and_resume(make_fit, x, fail_pass, tmp_path / f"sca{fail_pass}.npz")
        _assert_same_fit(got, ref, SCA_FITTED)


def test_a_checkpoint_of_another_fit_is_refused(rng, tmp_path):
    x = _mixed(rng)
    ckpt = tmp_path / "fit.npz"
    with pytest.raises(KeyboardInterrupt):
        SCA(3, reduced_rank=8, block_rows=40, checkpoint=ckpt).fit(KilledSource(x, 160, 2))
    for other in (SCA(3, reduced_rank=8, gamma=4.0, block_rows=40, checkpoint=ckpt),  # parameters
                  SCA(2, reduced_rank=8, block_rows=40, checkpoint=ckpt),              # k
                  FastICA(3, block_rows=40, checkpoint=ckpt)):                          # method
        with pytest.raises(ValueError, match="different run"):
            other.fit(KilledSource(x))
    with pytest.raises(ValueError, match="different run"):  # other data shape
        SCA(3, reduced_rank=8, block_rows=40, checkpoint=ckpt).fit(KilledSource(x[:, :-1]))
    assert ckpt.exists()  # refused, not overwritten


@pytest.mark.parametrize("cls", [FastICA, SCA])
def test_checkpoint_parameters_are_checked(cls, rng):
    x = rng.standard_normal((30, 6)).astype(np.float32)
    for name, value in (("checkpoint", 3), ("checkpoint", True), ("checkpoint_every", 0),
                        ("checkpoint_every", 1.5)):
        with pytest.raises(InvalidParameterError, match=rf"^The '{name}' parameter of {cls.__name__}"):
            cls(2, **{name: value}).fit(x)


MESH_SCRIPT = """
import json, sys, warnings
sys.path.insert(0, {root!r})
warnings.simplefilter("error")  # e.g. a donated buffer XLA could not use
import jax, numpy as np
from jaxfactor.whitening import whiten_source
from jaxfactor.sca import sca_source
from jaxfactor.sharding import row_mesh
from jaxfactor.sources import ArraySource
from tests.test_streaming import KilledSource, _mixed

x = _mixed(np.random.default_rng({seed}), n=303)  # 50-row blocks: every block padded
mesh, key, out = row_mesh(), jax.random.key(1), {{}}
kw = dict(key=key, block_rows=50, mesh=mesh, checkpoint_every=1)
plain = whiten_source(ArraySource(x), 4, key=key, block_rows=50)
ref = whiten_source(ArraySource(x), 4, **kw)
try:
    whiten_source(KilledSource(x, 100, 4), 4, checkpoint={ica!r}, **kw)
except KeyboardInterrupt:
    out["ica_killed"] = True
got = whiten_source(KilledSource(x), 4, checkpoint={ica!r}, **kw)
out["ica_equal"] = bool(np.array_equal(got.white, ref.white))
out["axes"] = [np.asarray(plain.components).tolist(), np.asarray(ref.components).tolist()]
plain = sca_source(ArraySource(x), 3, reduced_rank=8, key=key, block_rows=50)
ref = sca_source(ArraySource(x), 3, reduced_rank=8, **kw)
try:
    sca_source(KilledSource(x, 150, 6), 3, reduced_rank=8, checkpoint={sca!r}, **kw)
except KeyboardInterrupt:
    out["sca_killed"] = True
got = sca_source(KilledSource(x), 3, reduced_rank=8, checkpoint={sca!r}, **kw)
out["sca_equal"] = all(bool(np.array_equal(np.asarray(a), np.asarray(b))) for a, b in zip(got, ref))
out["loadings"] = [np.asarray(plain.loadings).tolist(), np.asarray(ref.loadings).tolist()]
out["x"] = x.tolist()
print(json.dumps(out))
"""


@pytest.mark.slow
def test_source_fits_over_a_four_device_mesh_resume_and_match(rng, tmp_path):
    from jaxfactor._policy import choose_whiten_range
    from jaxfactor.randomized import range_params

    from .helpers import FOUR_DEVICES, ROOT, principal_angles_deg, run_json_script
    from .test_sca import sca_comparison_bounds
    from .tolerances import randomized_angle_bound_deg, rayleigh_ritz_error

    script = MESH_SCRIPT.format(root=ROOT, seed=int(rng.integers(1 << 30)),
                                ica=str(tmp_path / "ica.npz"), sca=str(tmp_path / "sca.npz"))
    out = run_json_script(script, timeout=1200, **FOUR_DEVICES)
    assert out["ica_killed"] and out["ica_equal"] and out["sca_killed"] and out["sca_equal"]
    # sharded and single-device passes differ only in the order of the sums: each
    # whitening is within the rounding bound of the same exact-arithmetic sketch (same key)
    x = np.asarray(out["x"], np.float32)
    method, n_iter = choose_whiten_range("auto", None, *x.shape, 4)
    basis = range_params(4, *x.shape, method=method, n_iter=n_iter).basis_size
    angle = randomized_angle_bound_deg(x, 4, basis, block_rows=50)
    assert principal_angles_deg(*(np.asarray(a) for a in out["axes"])).max() <= 2 * angle
    # SCA: two converged runs whose sketches differ by both runs' Rayleigh-Ritz rounding
    plain, sharded = (np.asarray(y) for y in out["loadings"])
    basis = range_params(8, *x.shape).basis_size
    e = 2 * rayleigh_ritz_error(x, basis, block_rows=50) + 2 * gamma(x.shape[0]) * np.linalg.norm(x)
    assert_within(sharded, plain, sca_comparison_bounds(x, plain, 1e-5, sketch_error=e)["y"])
