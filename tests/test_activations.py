"""ActivationStream: hook capture, early stop, pooling, replay, and streaming PCA over it."""
import json

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA as SkPCA

from bridges.activations import ActivationStream, capture
from bridges.generators import FastGANAdapter, StyleGANAdapter, sample_z
from jaxfactor import PCA
from jaxfactor.randomized import range_params
from jaxfactor.sources import RowSource

from .helpers import exact_pca, principal_angles_deg
from .test_generators import TinyFastGAN, TinyPlain, TinyStyleGAN, fan_ins
from .tolerances import (angle_bound_deg, assert_within, blocked_gram_error, blocked_moments_error,
                         eigengap, network_error, randomized_angle_bound_deg,
                         rayleigh_ritz_error, svd_error)


def _rounding(G, layer, ref, extra=()):
    """Two float32 passes of ``G`` to ``layer`` (plus ``extra`` stages) that may
    block their sums differently (another batch size): apart by at most twice one
    pass's error, relative to the reference's magnitude."""
    return 2 * network_error(fan_ins(G, layer) + list(extra)) * np.abs(np.asarray(ref)).max()


@pytest.fixture(scope="module")
def fastgan():
    return TinyFastGAN(nz=16, ch=8).eval()


def test_hook_capture_equals_manual_forward(fastgan, rng):
    seed = int(rng.integers(2**31))
    stream = ActivationStream(fastgan, "init", n_samples=20, batch_size=6, seed=seed)
    assert isinstance(stream, RowSource) and stream.feature_shape == (8, 4, 4)
    assert stream.n_features == 128 and stream.dtype == np.float32
    rows = stream.read(2, 17)
    assert isinstance(rows, jax.Array) and rows.dtype == np.float32 and rows.shape == (15, 128)
    z = torch.from_numpy(sample_z(seed, 2, 17, 16))
    with torch.no_grad():
        manual = fastgan.init(z.view(15, 16, 1, 1)).reshape(15, -1).numpy()  # channel-major
    # batches of 6 there, one of 15 here
    np.testing.assert_allclose(np.asarray(rows), manual, rtol=0,
                               atol=_rounding(fastgan, "init", manual))
    np.testing.assert_array_equal(stream.latents(2, 17)["z"], z.numpy())
    # a deeper layer, nested name, through a FastGANAdapter given as latent=
    deep = ActivationStream(fastgan, "feat_8.2", n_samples=5, seed=seed,
                            latent=FastGANAdapter(fastgan))
    with torch.no_grad():
        ref = fastgan.feat_8[:3](fastgan.init(z[:3].view(3, 16, 1, 1)))  # rows 2:5
    np.testing.assert_allclose(np.asarray(deep.read(2, 5)), ref.reshape(3, -1).numpy(), rtol=0,
                               atol=_rounding(fastgan, "feat_8.2", ref))


def test_early_stop_gives_identical_features_and_skips_the_rest(fastgan):
    fast = ActivationStream(fastgan, "init", n_samples=12, batch_size=4, seed=1)
    full = ActivationStream(fastgan, "init", n_samples=12, batch_size=4, seed=1, early_stop=False)
    before = fastgan.calls_after_init
    a = np.asarray(fast.read(0, 12))
    assert fastgan.calls_after_init == before  # never got past init
    b = np.asarray(full.read(0, 12))
    assert fastgan.calls_after_init == before + 3
    np.testing.assert_array_equal(a, b)


def test_pooling_shapes_and_values(fastgan, rng):
    seed = int(rng.integers(2**31))
    z = torch.from_numpy(sample_z(seed, 0, 4, 16))
    with torch.no_grad():
        feat = fastgan.feat_8(fastgan.init(z.view(4, 16, 1, 1)))  # (4, 8, 8, 8)
    for pool, fn in (("max", F.adaptive_max_pool2d), ("avg", F.adaptive_avg_pool2d)):
        for size, shape in ((2, (8, 2, 2)), ((4, 2), (8, 4, 2)), (3, (8, 3, 3))):
            s = ActivationStream(fastgan, "feat_8", n_samples=4, seed=seed, pool=pool, pool_size=size)
            assert s.feature_shape == shape and s.n_features == int(np.prod(shape))
            ref = fn(feat, size).reshape(4, -1).numpy()
            # the same features, pooled: a max is exact (and moves by at most its
            # inputs' error), an average of up to 4 x 4 values adds gamma(16)
            np.testing.assert_allclose(np.asarray(s.read(0, 4)), ref, rtol=0,
                                       atol=_rounding(fastgan, "feat_8", ref, [16] if pool == "avg" else []))
    # max pooling of 8x8 to 2x2 is the max over each 4x4 quadrant
    s = ActivationStream(fastgan, "feat_8", n_samples=4, seed=seed, pool="max", pool_size=2)
    quad = feat[:, :, :4, 4:].amax(dim=(2, 3))  # top-right quadrant = position (0, 1)
    np.testing.assert_allclose(np.asarray(s.read(0, 4)).reshape(4, 8, 2, 2)[:, :, 0, 1],
                               quad.numpy(), rtol=0, atol=_rounding(fastgan, "feat_8", quad))
    with pytest.raises(ValueError, match="pool_size"):
        ActivationStream(fastgan, "feat_8", n_samples=4, pool="max")
    with pytest.raises(ValueError, match="pool must be"):
        ActivationStream(fastgan, "feat_8", n_samples=4, pool="median", pool_size=2)


def test_replay_is_deterministic_and_batch_size_independent(fastgan, rng):
    seed = int(rng.integers(2**31))
    a = ActivationStream(fastgan, "init", n_samples=30, batch_size=7, seed=seed)
    b = ActivationStream(fastgan, "init", n_samples=30, batch_size=30, seed=seed)
    first = np.asarray(a.read(0, 30))
    np.testing.assert_array_equal(first, np.asarray(a.read(0, 30)))       # pass 2 == pass 1
    # per-sample results agree across batch sizes up to BLAS blocking
    tol = _rounding(fastgan, "init", first)
    np.testing.assert_allclose(first, np.asarray(b.read(0, 30)), rtol=0, atol=tol)
    np.testing.assert_array_equal(first[5:19], np.asarray(a.read(5, 19)))
    blocks = np.concatenate([np.asarray(x) for x in a.blocks(8)])
    np.testing.assert_array_equal(blocks, first)
    other = ActivationStream(fastgan, "init", n_samples=30, batch_size=7, seed=seed + 1)
    assert np.abs(np.asarray(other.read(0, 5)) - first[:5]).max() > tol  # other latents, not rounding
    with pytest.raises(IndexError):
        a.read(25, 31)


def test_latents_of_a_mapping_network_and_w_as_layer(rng):
    G = TinyStyleGAN().eval()
    seed = int(rng.integers(2**31))
    stream = ActivationStream(G, "w", n_samples=9, batch_size=4, seed=seed)
    assert stream.n_features == G.w_dim
    lat = stream.latents(1, 9)
    assert set(lat) == {"z", "w"} and lat["w"].shape == (8, G.w_dim)
    z = torch.from_numpy(sample_z(seed, 1, 9, G.z_dim))
    with torch.no_grad():
        w = G.mapping(z, None)[:, 0].numpy()
    # batches of 4 there, one of 8 here
    np.testing.assert_allclose(lat["w"], w, rtol=0, atol=_rounding(G, "w", w))
    np.testing.assert_allclose(np.asarray(stream.read(1, 9)), w, rtol=0, atol=_rounding(G, "w", w))
    rows, lat2 = stream.read_with_latents(1, 9)
    np.testing.assert_array_equal(lat2["z"], z.numpy())
    conv = ActivationStream(StyleGANAdapter.from_stylegan2_ada(G), "conv.2", n_samples=6, seed=2)
    assert conv.feature_shape == (4, 4, 4)
    np.testing.assert_array_equal(np.asarray(conv.read(0, 6)), np.asarray(conv.read(0, 6)))


def test_wrong_layer_lists_available_names(fastgan):
    with pytest.raises(ValueError, match=r"no layer named 'feat8'.*Did you mean.*feat_8.*Available"):
        ActivationStream(fastgan, "feat8", n_samples=4)
    with pytest.raises(ValueError, match="no default layer"):
        ActivationStream(TinyPlain(), n_samples=4)
    with pytest.raises(ValueError, match="device"):
        ActivationStream(fastgan, "init", n_samples=4, device="meta")


def test_describe_is_json_provenance(fastgan):
    s = ActivationStream(fastgan, "feat_8", n_samples=4, seed=9, pool="avg", pool_size=(2, 1))
    d = json.loads(json.dumps(s.describe()))
    assert d["layer"] == "feat_8" and d["seed"] == 9 and d["pool_size"] == [2, 1]
    assert d["generator"]["adapter"] == "FastGANAdapter" and d["feature_shape"] == [8, 2, 1]
    assert "ActivationStream(layer='feat_8'" in repr(s)


def test_eval_mode_is_used_and_restored(rng):
    G = TinyFastGAN(nz=16, ch=8).train()
    seed = int(rng.integers(2**31))
    stream = ActivationStream(G, "init", n_samples=4, seed=seed)
    rows = np.asarray(stream.read(0, 4))
    assert G.training and all(m.training for m in G.modules())
    with torch.no_grad():
        G.eval()
        ref = G.init(torch.from_numpy(sample_z(seed, 0, 4, 16)).view(4, 16, 1, 1)).reshape(4, -1)
    np.testing.assert_allclose(rows, ref.numpy(), rtol=0, atol=_rounding(G, "init", ref))


def test_capture_on_explicit_latents(fastgan, rng):
    z = torch.from_numpy(rng.standard_normal((3, 16)).astype(np.float32))
    stream = ActivationStream(fastgan, "init", n_samples=3)
    np.testing.assert_array_equal(stream.features(z).numpy(),
                                  capture(stream.adapter, "init", z).numpy())


def test_streaming_pca_over_stream_equals_in_memory_pca(fastgan, rng):
    # one block shape throughout, so the streaming kernels compile once
    stream = ActivationStream(fastgan, "init", n_samples=256, batch_size=128,
                              seed=int(rng.integers(2**31)))
    x = np.asarray(stream.read(0, stream.n_samples))
    n, p = x.shape
    k = 6
    streamed = PCA(k, solver="streaming", block_rows=128, random_state=0).fit(stream)
    memory = PCA(k, solver="full").fit(x)
    vt, ev, mean = exact_pca(x)
    assert streamed.n_features_in_ == 128 and streamed.n_samples_ == 256
    assert_within(streamed.mean_, mean, blocked_moments_error(x, 128)[0])
    # The range finder's accuracy in exact arithmetic: a float64 peer, scikit-learn's
    # randomized PCA on the same rows (the Krylov default is at least as accurate,
    # tests/test_pca.py). Float32: the streamed fit's range finder and Rayleigh-Ritz
    # step (Weyl on the singular values s of X_c, Wedin / Davis-Kahan on the
    # subspaces: tolerances.randomized_angle_bound_deg); the Ritz values' second-
    # order loss ev_0 sin^2 of the basis' angle.
    peer = SkPCA(k, svd_solver="randomized", random_state=0).fit(x.astype(np.float64))
    basis = range_params(k, n, p).basis_size
    rr = rayleigh_ritz_error(x, basis, block_rows=128)
    s = np.sqrt(ev * (n - 1))
    angle = randomized_angle_bound_deg(x, k, basis, block_rows=128)
    streamed_ev = ((2 * s[:k] * rr + rr**2) / (n - 1) + ev[0] * np.sin(np.radians(angle)) ** 2
                   + np.abs(peer.explained_variance_ - ev[:k]))
    streamed_angle = angle + principal_angles_deg(peer.components_, vt[:k]).max()
    # the in-memory fit: the covariance (one centred block) and eigh's backward error
    cov = np.cov(x.astype(np.float64), rowvar=False)
    memory_error = np.linalg.norm(blocked_gram_error(x)) / (n - 1) + svd_error(cov)
    assert_within(streamed.explained_variance_, memory.explained_variance_, streamed_ev + memory_error)
    assert_within(streamed.explained_variance_, ev[:k], streamed_ev)
    assert (principal_angles_deg(streamed.components_, memory.components_).max()
            <= streamed_angle + angle_bound_deg(memory_error, eigengap(ev, k)))
    assert (principal_angles_deg(streamed.components_[:3], vt[:3]).max()
            <= randomized_angle_bound_deg(x, 3, basis, block_rows=128)
            + principal_angles_deg(peer.components_[:3], vt[:3]).max())


def _latents_from_description(sampler: dict, start: int, stop: int) -> np.ndarray:
    """Follow a recorded sampler description, in plain Python integers and
    floats, without calling the package: what a reader of a directions file
    would write to regenerate its latents."""
    import math

    assert sampler["algorithm"] == "SplitMix64 counter hash + Box-Muller"
    assert sampler["version"] == 1
    mask = (1 << 64) - 1

    def mix64(x):
        for shift, mult in sampler["mix_steps"]:
            x ^= x >> shift
            if mult:
                x = (x * mult) & mask
        return x

    dim = sampler["dim"]
    words = 2 * math.ceil(dim / 2)
    s = mix64(sampler["seed"] ^ sampler["stream_salt"])
    out = np.empty((stop - start, dim), np.float32)
    for r, i in enumerate(range(start, stop)):
        u = [((mix64((s + (i * words + c + 1) * sampler["gamma"]) & mask) >> 11) + 1) * 2.0**-53
             for c in range(words)]
        z = []
        for m in range(words // 2):
            radius = math.sqrt(-2.0 * math.log(u[2 * m]))
            z += [radius * math.cos(2 * math.pi * u[2 * m + 1]),
                  radius * math.sin(2 * math.pi * u[2 * m + 1])]
        out[r] = np.float32(z[:dim])
    return out


@pytest.mark.parametrize("z_dim", [16, 7])
def test_recorded_sampler_regenerates_the_latents(z_dim):
    G = TinyFastGAN(nz=16, ch=8).eval() if z_dim == 16 else TinyPlain(z_dim=z_dim).eval()
    layer = "init" if z_dim == 16 else "fc"            # odd z_dim: the last Box-Muller pair is cut
    stream = ActivationStream(G, layer, n_samples=40, batch_size=7, seed=12345)
    recorded = json.loads(json.dumps(stream.describe()))        # as a directions file keeps it
    got = _latents_from_description(recorded["sampler"], 29, 40)
    want = stream.latents(29, 40)["z"].reshape(11, -1)
    # libm's cos/sin/log and numpy's may differ in the last bit of float64;
    # rounding to float32 then agrees to one float32 ulp at most
    np.testing.assert_allclose(got, want, rtol=np.finfo(np.float32).eps, atol=0)
