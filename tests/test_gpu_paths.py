"""Every branch jaxfactor takes on an accelerator, forced and checked on the CPU.

* the policy's decisions for ``platform='gpu'`` and the estimators' plans when the
  platform is a GPU (``platform_of`` patched): Newton-Schulz decorrelation, recorded;
* Newton-Schulz against ``eigh`` and a float64 polar factor, at the GPU suite's sizes;
* the tf32 / bf16 product paths: their rounding against float64 with derived bounds,
  and the programs XLA would run on CUDA, lowered here for ``platforms=['cuda']``
  (``jax.export``; no GPU is needed to lower): TF32 dot algorithms, bfloat16
  operands, float32 QR/SVD, no CPU emulation;
* the DLPack hand-over of tensors on other devices (a tensor that reports a CUDA or
  MPS device, since there is none here) and JAX's GPU detection;
* sharding: FastICA on 4 forced host devices with the GPU plan.

Default-suite cost: ~15 s (one subprocess with 4 host devices; the lowerings trace but
do not compile).
"""
import re
import textwrap
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxfactor import PCA, SCA, FastICA, amari_distance
from jaxfactor import _policy as policy
from jaxfactor import accumulate

from . import tolerances as T
from .helpers import FOUR_DEVICES, ROOT, run_json_script
from .test_ica import amari_bound, eigh_polar_error, error_variance, planted

UNIT = {"bf16": 2.0 ** -8, "tf32": 2.0 ** -11}      # operand unit roundoff (7 / 10 mantissa bits)


# ------------------------------------------------------------------ policy


def test_policy_decisions_for_a_gpu():
    for platform in ("gpu", "tpu"):
        assert policy.choose_decorrelation("auto", platform) == "newton-schulz"
        assert policy.choose_decorrelation("eigh", platform) == "eigh"
    assert policy.choose_decorrelation("auto", "cpu") == "eigh"
    # the platform of a mesh is that of its first device (a GPU mesh, faked)
    gpu_mesh = types.SimpleNamespace(devices=np.array([types.SimpleNamespace(platform="gpu")] * 2))
    assert policy.platform_of(gpu_mesh) == "gpu"
    # a GPU-sized FastGAN problem: randomized PCA, randomized whitening with the subspace
    # finder for k = 1000, Krylov for k = 100, SCA on its reduced rank -- whatever the platform
    assert policy.choose_svd_solver("auto", 10000, 16384, 500, True) == "randomized"
    assert policy.choose_whiten_solver("auto", 10000, 16384, 1000) == "randomized"
    assert policy.choose_whiten_range("auto", None, 10000, 16384, 1000)[0] == "subspace"
    assert policy.choose_whiten_range("auto", None, 10000, 16384, 100)[0] == "krylov"
    assert policy.choose_reduced_rank("auto", 10000, 16384, 50) == 110
    # streams batch more latents on an accelerator
    from bridges.activations import default_batch_size

    assert default_batch_size("cuda") == default_batch_size("cuda:1") == 256
    assert default_batch_size("cpu") == 32


@pytest.fixture
def on_a_gpu(monkeypatch):
    """The estimators see a GPU platform (their kernels still run on the CPU)."""
    import jaxfactor.estimators.ica as ica_mod
    import jaxfactor.estimators.pca as pca_mod
    import jaxfactor.estimators.sca as sca_mod

    for mod in (ica_mod, pca_mod, sca_mod):
        monkeypatch.setattr(mod, "platform_of", lambda mesh=None: "gpu")


def _fastica_bound(model, x):
    """test_ica's bound on two fits that differ only in the decorrelation's rounding: each
    is within its last step (an angle arccos(1 - tol) a row) of the same fixed point, and
    components_ turns a row angle into a relative error of at most s_1 / s_k."""
    k = model.n_components_
    sv = np.linalg.svd(x.astype(np.float64) - x.mean(0, dtype=np.float64), compute_uv=False)
    return 2 * np.arccos(1 - model.tol) * sv[0] / sv[k - 1]


def test_estimators_plan_newton_schulz_on_a_gpu(on_a_gpu, rng):
    x, _, _ = planted(rng)
    k = 6
    auto = FastICA(k, random_state=0).fit(x)
    assert auto.plan_.platform == "gpu" and auto.plan_.decorrelation == "newton-schulz"
    # the plan is what runs: the same program as asking for Newton-Schulz
    explicit = FastICA(k, decorrelation="newton-schulz", random_state=0).fit(x)
    np.testing.assert_array_equal(auto.components_, explicit.components_)
    assert auto.n_iter_ == explicit.n_iter_
    eigh = FastICA(k, decorrelation="eigh", random_state=0).fit(x)
    assert eigh.plan_.decorrelation == "eigh" and eigh.plan_.platform == "gpu"
    assert auto.converged_ and eigh.converged_
    row_err = np.linalg.norm(auto.components_ - eigh.components_, axis=1)
    T.assert_within(row_err, 0, _fastica_bound(eigh, x) * np.linalg.norm(eigh.components_, axis=1))
    # PCA and SCA only record the platform (test_policy's shapes: its programs are reused)
    y = rng.standard_normal((300, 40)).astype(np.float32)
    assert PCA(5).fit(y).plan_ == policy.Plan("full", platform="gpu")
    assert SCA(3).fit(y).plan_.platform == "gpu"


def test_newton_schulz_against_eigh_at_gpu_sizes(rng):
    from scipy.linalg import polar

    from jaxfactor._linalg import symmetric_decorrelation

    k = 100                                                # ica_k100 of the GPU suite
    # a FastICA update: near-orthogonal, rows of very different lengths
    q = np.linalg.qr(rng.standard_normal((k, k)))[0]
    w = (q + 0.3 * rng.standard_normal((k, k)) / np.sqrt(k)) * rng.uniform(0.05, 3.0, size=(k, 1))
    ref = polar(w.T)[0].T                                  # float64 polar factor of w (rows)
    cast = T.polar_error(w, T.unit_roundoff() * np.abs(w))  # rounding w to float32
    w32 = jnp.asarray(w, jnp.float32)
    ns = np.asarray(symmetric_decorrelation(w32, "newton-schulz"), np.float64)
    eigh = np.asarray(symmetric_decorrelation(w32, "eigh"), np.float64)
    # Newton-Schulz stops at max|X X^T - I| <= 50 eps (X = Q H, ||H - I|| <= k 50 eps / 2)
    # after a last step rounding by gamma(k) |X| |X^T| |X| (<= gamma(k) k), test_ica's terms
    T.assert_within(ns, ref, cast + k * 50 * T.eps() / 2 + 2 * T.gamma(k) * k)
    T.assert_within(eigh, ref, cast + eigh_polar_error(w))
    T.assert_within(ns @ ns.T, np.eye(k), 50 * T.eps() + T.gamma(k) * np.abs(ns) @ np.abs(ns.T))


# ------------------------------------------------------------------ tf32 / bf16 paths


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_low_precision_products_against_float64(rng, precision):
    # each operand rounds by u (relative), the float32 accumulation of the n-term sums by
    # gamma(n): |fl(AB) - AB| <= ((1 + u)^2 - 1 + gamma(n)) |A| |B| entrywise
    m, n, q = 64, 512, 48
    a = rng.standard_normal((m, n)) * rng.uniform(0.1, 10, size=(1, n))
    b = rng.standard_normal((n, q))
    out = np.asarray(accumulate.matmul(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32),
                                       precision), np.float64)
    u = UNIT[precision]
    bound = ((1 + u) ** 2 - 1 + T.gamma(n) + 2 * T.unit_roundoff()) * (np.abs(a) @ np.abs(b))
    T.assert_within(out, a @ b, bound)
    # and it does round the operands: further from the float32 product than two float32
    # products can be apart (each within gamma(n) + 2 u of the exact one)
    full = np.asarray(accumulate.matmul(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)),
                      np.float64)
    assert np.max(np.abs(out - full) / (np.abs(a) @ np.abs(b))) > 2 * (T.gamma(n) + 2 * T.unit_roundoff())


def _cuda_program(monkeypatch, fn, *shapes):
    """StableHLO of ``fn`` as lowered for CUDA, with the kernels' platform test
    (``jax.default_backend()``) answering ``'gpu'``."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    return jax.export.export(jax.jit(fn), platforms=["cuda"])(*args).mlir_module()


_DOT = re.compile(r"stablehlo\.dot_general (.*?) : \((tensor<[^>]*>), (tensor<[^>]*>)\) -> (tensor<[^>]*>)")


def _dots(text):
    """``(attributes, lhs type, rhs type, result type)`` of every dot in a module."""
    return [m.groups() for m in _DOT.finditer(text)]


def _dims(tensor_type):
    return tuple(int(d) for d in re.findall(r"(\d+)x", tensor_type))


# Odd shapes of their own: no other test traces the kernels with them (a trace cached
# under the CPU's answer would hide the GPU branch).
N_X, P_X, K_X = 331, 217, 5


@pytest.mark.parametrize("precision", ["float32", "tf32", "bf16"])
def test_randomized_svd_lowered_for_cuda(monkeypatch, precision):
    from jaxfactor.randomized import randomized_svd

    text = _cuda_program(monkeypatch, lambda x: randomized_svd(
        x, K_X, key=jax.random.key(0), center=True, method="krylov", precision=precision), (N_X, P_X))
    with_x = [d for d in _dots(text) if {N_X, P_X} <= set(_dims(d[1]) + _dims(d[2]))]
    assert len(with_x) >= 2 * 5 + 1            # 5 Krylov steps of two products, and Rayleigh-Ritz
    for attrs, lhs, rhs, res in with_x:
        assert res.endswith("xf32>"), res
        if precision == "float32":
            assert "precision = [HIGHEST, HIGHEST]" in attrs, attrs
        elif precision == "tf32":           # the tensor cores' TF32 algorithm, float32 sums
            assert "lhs_precision_type = tf32, rhs_precision_type = tf32, accumulation_type = f32" in attrs
        else:                               # one bfloat16 copy of the centred data
            assert lhs.endswith("xbf16>") and rhs.endswith("xbf16>"), (lhs, rhs)
    assert "reduce_precision" not in text     # the CPU's TF32 emulation is not on the GPU
    copies = re.findall(rf"stablehlo\.convert \S+ : \(tensor<{N_X}x{P_X}xf32>\) -> tensor<{N_X}x{P_X}xbf16>", text)
    assert len(copies) == (1 if precision == "bf16" else 0)
    # QR and SVD on cuSOLVER, in float32 whatever the products' precision
    calls = re.findall(r"stablehlo\.custom_call @(cusolver_\w+)\((.*?)\) .*?: \((.*?)\) ->", text)
    assert {c[0] for c in calls} >= {"cusolver_geqrf_ffi", "cusolver_gesvdj_ffi"}
    assert all("bf16" not in types_ for _, _, types_ in calls)


def test_newton_schulz_lowered_for_cuda_is_matrix_products_only(monkeypatch):
    from jaxfactor._linalg import symmetric_decorrelation

    ns = _cuda_program(monkeypatch, lambda w: symmetric_decorrelation(w, "newton-schulz"), (37, 37))
    eigh = _cuda_program(monkeypatch, lambda w: symmetric_decorrelation(w, "eigh"), (37, 37))
    assert "custom_call" not in ns and len(_dots(ns)) >= 3
    assert "cusolver_syevd" in eigh


def test_float32_programs_on_cuda_run_every_product_in_float32(monkeypatch):
    # XLA's DEFAULT precision is TF32 on NVIDIA tensor cores: every float32 product of
    # the kernels must say HIGHEST (jaxfactor._linalg.full_float32), or float32 results
    # lose ~3 digits there and Newton-Schulz cannot reach its 50-eps stop
    from jaxfactor.ica import fastica
    from jaxfactor.picard import picard_o
    from jaxfactor.randomized import randomized_svd
    from jaxfactor.whitening import whiten

    programs = [
        _cuda_program(monkeypatch, lambda x: randomized_svd(
            x, K_X, key=jax.random.key(0), center=True, method="krylov"), (N_X + 2, P_X)),
        _cuda_program(monkeypatch, lambda z: fastica(
            z, key=jax.random.key(0), decorrelation="newton-schulz"), (N_X + 4, 7)),
        _cuda_program(monkeypatch, lambda z, w: picard_o(z, w), (N_X + 6, 7), (7, 7)),
        _cuda_program(monkeypatch, lambda x: whiten(x, 7, solver="eigh").white, (N_X + 8, 23)),
    ]
    for text in programs:
        loose = [d for d in _dots(text) if "HIGHEST" not in d[0] and "xf32>" in d[1]]
        assert not loose, loose[:3]


# ------------------------------------------------------------------ DLPack


class _Elsewhere(torch.Tensor):
    """A CPU tensor that reports another device (there is no GPU here); its ``cpu()``
    returns a copy and is counted, so the hand-over's route shows."""

    reported = "cuda"
    cpu_calls = 0

    @property
    def device(self):
        return torch.device(self.reported, 0) if self.reported != "cpu" else torch.device("cpu")

    def cpu(self, *args, **kwargs):
        type(self).cpu_calls += 1
        return torch.Tensor.clone(self).as_subclass(torch.Tensor)

    # DLPack itself sees where the memory really is (the host), so the hand-over completes
    def __dlpack__(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor).__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.as_subclass(torch.Tensor).__dlpack_device__()


def _elsewhere(t, device):
    cls = type(f"_On_{device}", (_Elsewhere,), {"reported": device, "cpu_calls": 0})
    return t.as_subclass(cls), cls


@pytest.mark.parametrize("device, jax_gpu, through_host", [
    ("cuda", False, True),      # a CUDA tensor while JAX has only a CPU: copied once, by the host
    ("cuda", True, False),      # JAX has a GPU: handed straight to DLPack, zero-copy
    ("mps", True, True),        # other devices always go through the host
])
def test_torch_to_jax_routes_tensors_by_device(monkeypatch, rng, device, jax_gpu, through_host):
    import bridges.dlpack as dl

    monkeypatch.setattr(dl, "_jax_has_gpu", lambda: jax_gpu)
    # torch's own allocation (64-byte aligned, as XLA's CPU client needs to adopt a buffer;
    # a numpy buffer need not be)
    base = torch.from_numpy(rng.standard_normal((64, 33)).astype(np.float32)).clone()
    assert base.data_ptr() % 64 == 0
    tensor, cls = _elsewhere(base, device)
    assert tensor.device.type == device
    out = dl.torch_to_jax(tensor)
    assert cls.cpu_calls == (1 if through_host else 0)
    np.testing.assert_array_equal(np.asarray(out), base.numpy())
    assert dl.shares_memory(base, out) == (not through_host)


class _OnCuda(_Elsewhere):
    """A tensor whose DLPack export says CUDA too, as a real CUDA tensor's does (and whose
    type claims torch's module, as ``torch.Tensor``'s does)."""

    __module__ = "torch"

    def __dlpack_device__(self):
        return (2, 0)           # kDLCUDA, device 0


def test_estimators_take_a_cuda_tensor_when_jax_has_only_a_cpu(rng):
    # jaxfactor._validation.to_jax routes it through the host, as bridges.dlpack.torch_to_jax does
    x = torch.from_numpy(rng.standard_normal((200, 12)).astype(np.float32)).clone()
    want = PCA(3).fit(x.numpy())
    got = PCA(3).fit(x.as_subclass(_OnCuda))
    np.testing.assert_allclose(got.components_, want.components_)


def test_jax_gpu_detection(monkeypatch):
    import bridges.dlpack as dl

    assert dl._jax_has_gpu() is False                   # this machine
    fake = [types.SimpleNamespace(platform="cpu"), types.SimpleNamespace(platform="gpu")]
    monkeypatch.setattr(dl.jax, "devices", lambda *a: fake)
    assert dl._jax_has_gpu() is True


# ------------------------------------------------------------------ sharding

SHARDED_GPU_PLAN = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {root!r})
    import jaxfactor.estimators.ica as ica_mod
    from jaxfactor import FastICA
    from jaxfactor.sharding import row_mesh
    from tests.test_ica import planted

    assert len(jax.devices()) == 4, jax.devices()
    x, _, _ = planted(np.random.default_rng({seed}), n=1001, p=300)   # 1001 rows: padded to 1004
    mesh = row_mesh()
    kw = dict(whiten_solver="randomized", random_state=0, mesh=mesh)
    explicit = FastICA(6, decorrelation="newton-schulz", **kw).fit(x)
    ica_mod.platform_of = lambda mesh=None: "gpu"                     # a mesh of 4 GPUs
    auto = FastICA(6, **kw).fit(x)
    print(json.dumps({{
        "plan": auto.plan_._asdict(), "identical": bool(np.array_equal(auto.components_, explicit.components_)),
        "n_iter": [auto.n_iter_, explicit.n_iter_], "converged": auto.converged_,
        "components": auto.components_.tolist(),
    }}))
""")


def test_sharded_fastica_with_the_gpu_plan(rng):
    seed = int(rng.integers(1 << 30))
    out = run_json_script(SHARDED_GPU_PLAN.format(root=ROOT, seed=seed), **FOUR_DEVICES)
    assert out["plan"]["platform"] == "gpu" and out["plan"]["decorrelation"] == "newton-schulz"
    assert out["plan"]["solver"] == "randomized"
    # the plan is what ran (the same program as asking for Newton-Schulz on the mesh) ...
    assert out["identical"] and out["n_iter"][0] == out["n_iter"][1] and out["converged"]
    # ... and it finds the planted sources to the statistical accuracy of n = 1001 samples
    _, s_true, a = planted(np.random.default_rng(seed), n=1001, p=300)
    assert amari_distance(np.asarray(out["components"]), a) <= amari_bound(error_variance(s_true), 1001)
