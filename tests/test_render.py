"""Edits and rendering: strengths and units, spaces, batching, PNG grids, and that
lifted edits move the features along their component."""
import numpy as np
import pytest
import torch
from PIL import Image

from bridges.activations import ActivationStream
from bridges.generators import StyleGANAdapter
from bridges.render import (edit, edit_samples, make_grid, render, render_codes, save_grid,
                            to_uint8)
from jaxfactor.lifting import lift
from jaxfactor import PCA

from .test_generators import TinyPlain, TinyStyleGAN
from .test_lifting import lift_bounds
from .tolerances import assert_within, gamma


@pytest.fixture(scope="module")
def plain():
    return TinyPlain(z_dim=6).eval()


def test_to_uint8_maps_the_range_and_layout():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0, -3.0, 0.5]).reshape(1, 1, 2, 3).repeat(1, 3, 1, 1)
    out = to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (1, 2, 3, 3)
    np.testing.assert_array_equal(out[0, :, :, 0], [[0, 128, 255], [255, 0, 191]])
    np.testing.assert_array_equal(to_uint8(x, drange=(0, 2))[0, :, :, 1], [[0, 0, 128], [255, 0, 64]])


def test_edit_units_and_shapes_match_manual_rendering(plain, rng):
    z = rng.standard_normal((3, 6)).astype(np.float32)
    d = rng.standard_normal(6)
    d *= 2 / np.linalg.norm(d)  # a lifted direction: |d| is the one-std latent step
    images = edit(plain, z, d, alphas=[-1.5, 0, 1.5])
    assert images.shape == (3, 3, 8, 8, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[1], render(plain, z))
    np.testing.assert_array_equal(images[2], render(plain, z + 1.5 * d))          # std units
    latent = edit(plain, z, d, 1.5, units="latent")
    assert latent.shape == (3, 8, 8, 3)
    np.testing.assert_array_equal(latent, render(plain, z + 1.5 * d / 2))          # unit length
    scaled = edit(plain, z, np.stack([d, -d]), 2.0, scales=[0.25, 0.5])
    assert scaled.shape == (2, 3, 8, 8, 3)
    np.testing.assert_array_equal(scaled[0], render(plain, z + 2 * 0.25 * d / 2))
    np.testing.assert_array_equal(scaled[1], render(plain, z - 2 * 0.5 * d / 2))
    grid = edit(plain, z[:1], np.stack([d, -d]), [-1, 1], batch_size=1)
    assert grid.shape == (2, 2, 1, 8, 8, 3)
    np.testing.assert_array_equal(grid[1, 0], grid[0, 1])  # -(-d) == +d
    with pytest.raises(ValueError, match="units"):
        edit(plain, z, d, 1, units="sigma")
    with pytest.raises(ValueError, match="directions must be"):
        edit(plain, z, np.ones(5), 1)
    with pytest.raises(ValueError, match="spaces"):
        edit(plain, z, d, 1, space="w")
    with pytest.raises(ValueError, match="non-zero"):
        edit(plain, z, np.zeros(6), 1)


def test_edit_samples_is_one_edit_per_sample(plain, rng):
    z = rng.standard_normal((4, 6)).astype(np.float32)
    dirs = rng.standard_normal((4, 6))
    alphas = rng.uniform(-3, 3, 4)
    out = edit_samples(plain, z, dirs, alphas, units="latent", batch_size=3)
    assert out.shape == (4, 8, 8, 3)
    for j in range(4):
        step = alphas[j] * dirs[j] / np.linalg.norm(dirs[j])
        np.testing.assert_array_equal(out[j], render(plain, z[j:j + 1] + step)[0])
    with pytest.raises(ValueError, match="directions must be"):
        edit_samples(plain, z, dirs[:3], alphas)


def test_w_plus_edit_on_a_layer_range(rng):
    G = TinyStyleGAN().eval()
    adapter = StyleGANAdapter.from_stylegan2_ada(G)
    z = rng.standard_normal((2, G.z_dim)).astype(np.float32)
    d = rng.standard_normal(G.w_dim)
    got = edit(adapter, z, d, [3.0], space="w+", layers=range(2, 4))
    with torch.no_grad():
        ws = G.mapping(torch.from_numpy(z), None)
        ws[:, 2:4] += torch.tensor(3.0 * d, dtype=torch.float32)
        ref = to_uint8(G.synthesis(ws, noise_mode="const"))
    np.testing.assert_array_equal(got[0], ref)
    everywhere = edit(G, z, d, [3.0], space="w")
    assert not np.array_equal(everywhere, got)


def test_lifted_edits_move_features_along_the_component(plain, rng):
    """PCA of the affine layer ``fc`` (64 features from 6 latents), lifted to z:
    walking alpha std along direction i moves the scores by alpha * std_i on
    component i and leaves the others unchanged."""
    stream = ActivationStream(plain, "fc", n_samples=600, batch_size=200, seed=int(rng.integers(2**31)))
    pca = PCA(6, solver="full", block_rows=200).fit(stream)
    dirs = lift(stream, pca, block_rows=200)
    # features f = W z + b, scores s = V (f - mean): exactly affine in z, so in
    # exact arithmetic R^2 = 1 and V W B_i = std_i e_i. Float32: f and s are
    # rounded (gamma(d + 1) |W| |z| + |b|, then gamma(p + 1) on the transform with
    # the mean folded in), the lift by tests.test_lifting.lift_bounds.
    W = plain.fc.weight.detach().numpy().astype(np.float64)
    b = plain.fc.bias.detach().numpy().astype(np.float64)
    V = np.abs(np.asarray(pca.components_, np.float64))
    mean = np.abs(np.asarray(pca.mean_, np.float64))

    def score_error(z):
        f = np.asarray(stream.features(z), np.float64)
        return (gamma(W.shape[1] + 1) * (np.abs(z) @ np.abs(W.T) + np.abs(b)) @ V.T
                + gamma(W.shape[0] + 1) * (np.abs(f) + mean) @ V.T)

    latents = stream.latents(0, stream.n_samples)["z"]
    scores = pca.transform(np.asarray(stream.read(0, stream.n_samples)))
    tol = lift_bounds(latents, scores, block_rows=200,
                      score_error=np.linalg.norm(score_error(latents), axis=0))
    assert np.all(1 - dirs.r2 <= tol["r2"]) and 1 - dirs.r2_total <= tol["r2_total"]
    z = stream.latents(0, 5)["z"]
    base = pca.transform(np.asarray(stream.features(z)))
    VW = np.asarray(pca.components_, np.float64) @ W
    for i, alpha in ((0, 2.0), (3, -1.5)):
        moved_z = z + alpha * dirs.directions[i]
        moved = pca.transform(np.asarray(stream.features(moved_z)))
        expected = np.zeros(6)
        expected[i] = alpha * dirs.score_std[i]
        # the direction's and the std's float32 errors, scaled by alpha (and by
        # the map V W for the direction), and both transforms' rounding
        assert_within(moved - base, np.broadcast_to(expected, (5, 6)),
                      abs(alpha) * (np.linalg.norm(VW, 2) * tol["directions"]
                                    + dirs.score_std[i] * tol["score_std"][i])
                      + score_error(moved_z) + score_error(z))
    # the same edit through bridges.render.edit (std units) renders z + alpha * B_i
    np.testing.assert_array_equal(edit(plain, z, dirs.directions[0], 2.0),
                                  render(plain, z + 2.0 * dirs.directions[0]))


def test_png_grid_rows_are_directions_columns_are_alphas(plain, rng, tmp_path):
    z = rng.standard_normal((1, 6)).astype(np.float32)
    dirs = rng.standard_normal((2, 6))
    images = edit(plain, z, dirs, [-2, 0, 2])[:, :, 0]  # (2 directions, 3 alphas, H, W, C)
    path = save_grid(images, tmp_path / "grid.png", pad=1)
    with Image.open(path) as img:
        arr = np.asarray(img.convert("RGB"))
    assert arr.shape == (2 * 8 + 3, 3 * 8 + 4, 3)
    np.testing.assert_array_equal(arr[1 + 9:1 + 9 + 8, 1 + 2 * 9:1 + 2 * 9 + 8], images[1, 2])
    np.testing.assert_array_equal(make_grid(images, pad=1), arr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]  # no temp file left
    with pytest.raises(ValueError, match="uint8"):
        make_grid(images.astype(np.float32))


def test_render_codes_is_render_before_rounding(plain, rng):
    # the float renderer (CLI and demo) and the uint8 one agree to one grey level
    z = rng.standard_normal((5, 6)).astype(np.float32)
    floats = render_codes(plain, z, batch_size=2)
    assert floats.dtype == np.float32 and floats.shape == (5, 8, 8, 3)
    assert floats.min() >= -1 and floats.max() <= 1
    as_uint8 = np.round((floats + 1) * 127.5).astype(np.int64)
    assert np.abs(as_uint8 - render(plain, z).astype(np.int64)).max() <= 1
    # W codes: the same code at every W+ entry, as the z path's mapping gives
    G = TinyStyleGAN().eval()
    adapter = StyleGANAdapter.from_stylegan2_ada(G)
    z = rng.standard_normal((3, G.z_dim)).astype(np.float32)
    w = adapter.codes(torch.from_numpy(z))["w"]
    by_w = render_codes(adapter, w.detach().numpy(), space="w")
    by_z = render_codes(adapter, z, space="z")
    np.testing.assert_array_equal(by_w, by_z)
