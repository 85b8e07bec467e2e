"""Every rule of the 'auto' policy (jaxfactor._policy), and the Plan each
estimator records as ``plan_``."""
import numpy as np
import pytest

from jaxfactor import PCA, SCA, FastICA
from jaxfactor import _policy as policy
from jaxfactor._policy import Plan


@pytest.mark.parametrize("args, want", [
    (("auto", 1000, 512, 10, True), "full"),             # p <= FULL_MAX_FEATURES
    (("auto", 1000, 1024, 10, True), "full"),            # the boundary is inclusive
    (("auto", 10000, 1025, 10, True), "randomized"),     # just wider
    (("auto", 10000, 1025, 10, False), "streaming"),     # not in memory
    (("auto", 2000, 4096, 800, True), "full"),           # k >= 0.4 min(n, p)
    (("auto", 2000, 4096, 799, True), "randomized"),
    (("auto", 2000, 4096, None, True), "full"),          # every component
    (("auto", 2000, 4096, 0.9, True), "full"),           # a variance fraction
    (("randomized", 100, 10, 2, True), "randomized"),    # explicit choices pass through
])
def test_choose_svd_solver(args, want):
    assert policy.choose_svd_solver(*args) == want


def test_range_method_only_for_randomized_solvers():
    assert policy.range_method_of("full", "krylov", 5) == (None, None)
    assert policy.range_method_of("randomized", "subspace", 3) == ("subspace", 3)
    assert policy.range_method_of("streaming", "krylov", None) == ("krylov", None)


def test_materialize_stream():
    assert policy.materialize_stream("pca", policy.FULL_MAX_FEATURES)
    assert not policy.materialize_stream("pca", policy.FULL_MAX_FEATURES + 1)
    assert policy.materialize_stream("ica", 16384) and policy.materialize_stream("sca", 16384)


@pytest.mark.parametrize("args, kwargs, want", [
    (("auto", 10000, 512, 20), {}, "eigh"),                    # exact, n p > SVD_MAX_ENTRIES
    (("auto", 1000, 512, 20), {}, "svd"),                      # exact, small
    (("auto", 10000, 16384, 1000), {}, "randomized"),          # wide
    (("auto", 10000, 512, 20), {"in_memory": False}, "randomized"),
    (("eigh", 10000, 16384, 20), {}, "eigh"),
])
def test_choose_whiten_solver(args, kwargs, want):
    assert policy.choose_whiten_solver(*args, **kwargs) == want


def test_choose_whiten_range():
    small = 10000
    k_edge = int(policy.WHITEN_KRYLOV_MAX_FRACTION * small) - 10     # k + 10 <= 2% of min(n, p)
    assert policy.choose_whiten_range("auto", None, small, 16384, k_edge) == ("krylov", None)
    assert policy.choose_whiten_range("auto", None, small, 16384, k_edge + 1) == (
        "subspace", policy.WHITEN_SUBSPACE_ITER)
    assert policy.choose_whiten_range("auto", 7, small, 16384, 1000) == ("subspace", 7)
    assert policy.choose_whiten_range("krylov", 3, small, 16384, 1000) == ("krylov", 3)


@pytest.mark.parametrize("platform, want", [("cpu", "eigh"), ("gpu", "newton-schulz"),
                                            ("tpu", "newton-schulz")])
def test_choose_decorrelation(platform, want):
    assert policy.choose_decorrelation("auto", platform) == want
    assert policy.choose_decorrelation("eigh", platform) == "eigh"


def test_choose_reduced_rank():
    edge = policy.REDUCED_MIN_SIZE
    assert policy.choose_reduced_rank("auto", edge // 1024 - 1, 1024, 3) is None   # n p < edge
    assert policy.choose_reduced_rank("auto", edge // 1024, 1024, 3) == 16         # n p == edge
    assert policy.choose_reduced_rank("auto", 10000, 16384, 5000) == 10000         # capped
    assert policy.choose_reduced_rank(None, 10000, 16384, 50) is None
    assert policy.choose_reduced_rank(7, 10000, 16384, 5) == 7
    assert policy.choose_reduced_rank(None, 300, 100, 3, in_memory=False) == 16    # sources
    assert policy.choose_reduced_rank("auto", 300, 100, 3, in_memory=False) == 16
    assert policy.choose_reduced_rank(7, 300, 100, 3, in_memory=False) == 7


def test_platform_of():
    import jax

    assert policy.platform_of() == jax.devices()[0].platform == "cpu"
    assert policy.platform_of(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("rows",))) == "cpu"


def test_estimators_record_their_plan(rng):
    x = rng.standard_normal((300, 40)).astype(np.float32)
    assert PCA(5).fit(x).plan_ == Plan("full", platform="cpu")
    plan = PCA(5, solver="randomized", method="subspace", n_iter=3, precision="bf16").fit(x).plan_
    assert plan == Plan("randomized", "subspace", 3, precision="bf16", platform="cpu")
    assert PCA(5, solver="full", precision="bf16").fit(x).plan_.precision == "float32"
    s = rng.laplace(size=(300, 4)) @ rng.standard_normal((4, 40))   # non-Gaussian: converges
    ica = FastICA(4, whiten_solver="randomized", random_state=0).fit(s)
    # k + 10 > 2% of min(n, p): the large-k subspace finder with its two iterations
    assert ica.plan_ == Plan("randomized", "subspace", policy.WHITEN_SUBSPACE_ITER,
                             decorrelation="eigh", platform="cpu", algorithm="parallel",
                             init="random")
    assert FastICA(4, random_state=0).fit(s).plan_ == Plan("svd", decorrelation="eigh",
                                                           algorithm="parallel", init="random")
    plan = FastICA(4, w_init=np.eye(4), n_restarts=2).fit(s).plan_
    assert (plan.init, plan.n_restarts) == ("w_init", 2)
    assert FastICA(4, decorrelation="newton-schulz").fit(s).plan_.decorrelation == "newton-schulz"
    sca = SCA(3, reduced_rank=10).fit(x)
    assert sca.plan_ == Plan("randomized", "krylov", None, reduced_rank=10, platform="cpu")
    assert SCA(3).fit(x).plan_ == Plan("full", platform="cpu")


def test_auto_range_method_is_adaptive_in_memory_and_krylov_for_streams():
    from jaxfactor._policy import range_method_of

    assert range_method_of("randomized", "auto", None) == ("adaptive", None)
    assert range_method_of("randomized", "adaptive", 7) == ("adaptive", None)   # n_iter: not its knob
    assert range_method_of("streaming", "auto", 3) == ("krylov", 3)
    assert range_method_of("randomized", "subspace", 7) == ("subspace", 7)
    assert range_method_of("full", "auto", None) == (None, None)


def test_adaptive_width_oversamples_by_half_and_is_capped():
    from jaxfactor._policy import adaptive_width

    assert adaptive_width(100, 10000, 16384) == 150
    assert adaptive_width(4, 10000, 16384) == 14             # at least 10 extra columns
    assert adaptive_width(100, 10000, 16384, n_oversamples=5) == 105
    assert adaptive_width(100, 120, 16384) == 120             # never wider than the data


def test_whitening_rank_floor_scales_with_the_solver_and_dtype():
    import numpy as np

    from jaxfactor._policy import whitening_rank_floor

    eps = float(np.finfo(np.float32).eps)
    assert whitening_rank_floor(np.float32, 100, 400, "eigh") == 2 * np.sqrt(eps * 100)
    assert whitening_rank_floor(np.float32, 100, 400, "svd") == eps * 400 * 10
    assert whitening_rank_floor(np.float64, 100, 400, "svd") < whitening_rank_floor(np.float32, 100, 400, "svd")


def test_transposed_copy_only_on_cpu_float32_and_within_its_memory_bound():
    bound = policy.TRANSPOSE_MAX_BYTES
    assert policy.keep_transpose(10_000, 16_384, 4, "cpu")
    assert policy.keep_transpose(bound // 4, 1, 4, "cpu")
    assert not policy.keep_transpose(bound // 4 + 1, 1, 4, "cpu")
    assert policy.keep_transpose(bound // 16, 2, 8, "cpu") and not policy.keep_transpose(bound // 8, 2, 8, "cpu")
    for platform in ("gpu", "tpu"):
        assert not policy.keep_transpose(10_000, 16_384, 4, platform)
    for precision in ("tf32", "bf16"):
        assert not policy.keep_transpose(10_000, 16_384, 4, "cpu", precision)
