"""Latent adapters and per-index latent sampling, on small generators built here.

The small architectures below are also used by test_activations.py and
test_render.py.
"""
import numpy as np
import pytest
import torch
from torch import nn

from bridges.generators import (FastGANAdapter, PlainAdapter, StyleGANAdapter, as_adapter,
                                sample_z)

from .tolerances import network_error


def _randomise_batch_norms(module, seed):
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


class GLU(nn.Module):
    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return a * torch.sigmoid(b)


class TinyFastGAN(nn.Module):
    """FastGAN's structure, shrunk: ``init`` (ConvTranspose 4x4 + BN + GLU ->
    ``ch x 4 x 4``) -> upsampling blocks -> ``[image, small image]``."""

    def __init__(self, nz=16, ch=8, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.init = nn.Sequential(nn.ConvTranspose2d(nz, ch * 2, 4, 1, 0, bias=False),
                                  nn.BatchNorm2d(ch * 2), GLU())
        self.feat_8 = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(ch, ch * 2, 3, 1, 1),
                                    nn.BatchNorm2d(ch * 2), GLU())
        self.feat_16 = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(ch, ch * 2, 3, 1, 1),
                                     nn.BatchNorm2d(ch * 2), GLU())
        self.to_big = nn.Conv2d(ch, 3, 3, 1, 1)
        self.to_small = nn.Conv2d(ch, 3, 1)
        _randomise_batch_norms(self, seed)
        self.calls_after_init = 0

    def forward(self, noise):
        feat_4 = self.init(noise.view(noise.shape[0], -1, 1, 1))
        self.calls_after_init += 1
        feat_8 = self.feat_8(feat_4)
        feat_16 = self.feat_16(feat_8)
        return [torch.tanh(self.to_big(feat_16)), torch.tanh(self.to_small(feat_8))]


class TinyPlain(nn.Module):
    """``G(z) -> image`` with an affine first layer (``fc``) and an 8x8 map (``up``)."""

    def __init__(self, z_dim=6, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.z_dim = z_dim
        self.fc = nn.Linear(z_dim, 4 * 4 * 4)
        self.up = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(4, 5, 3, 1, 1), nn.ReLU())
        self.out = nn.Conv2d(5, 3, 1)

    def forward(self, z):
        x = self.fc(z).view(z.shape[0], 4, 4, 4)
        return torch.tanh(self.out(self.up(x)))


class TinyStyleGAN(nn.Module):
    """StyleGAN2-ADA's interface, shrunk: ``mapping(z, c, truncation_psi)`` ->
    broadcast ``ws``; ``synthesis(ws, noise_mode)`` modulated by one ``w`` per layer."""

    def __init__(self, z_dim=8, w_dim=6, num_ws=4, ch=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.z_dim, self.w_dim, self.num_ws, self.c_dim = z_dim, w_dim, num_ws, 0
        self.mapping_net = nn.Sequential(nn.Linear(z_dim, w_dim), nn.LeakyReLU(0.2),
                                         nn.Linear(w_dim, w_dim))
        self.register_buffer("w_avg", torch.randn(w_dim) * 0.1)
        self.const = nn.Parameter(torch.randn(ch, 4, 4))
        self.affine = nn.ModuleList([nn.Linear(w_dim, ch) for _ in range(num_ws)])
        self.conv = nn.ModuleList([nn.Conv2d(ch, ch, 3, 1, 1) for _ in range(num_ws)])
        self.to_rgb = nn.Conv2d(ch, 3, 1)

    def mapping(self, z, c, truncation_psi=1.0):
        w = self.mapping_net(z)
        w = self.w_avg + truncation_psi * (w - self.w_avg)
        return w[:, None, :].repeat(1, self.num_ws, 1)

    def synthesis(self, ws, noise_mode="random"):
        x = self.const[None].expand(ws.shape[0], -1, -1, -1)
        for i in range(self.num_ws):
            x = self.conv[i](x * (1 + self.affine[i](ws[:, i]))[:, :, None, None])
            if noise_mode == "random":
                x = x + 0.1 * torch.randn_like(x)
            x = nn.functional.leaky_relu(x, 0.2)
        return torch.tanh(self.to_rgb(x))

    def forward(self, z, c=None):
        return self.synthesis(self.mapping(z, c))


def fan_ins(G, layer=None):
    """The stages on the longest path of one of the generators above to
    ``layer`` (a module name, ``'w'`` for a mapping's output; default the image),
    for :func:`tests.tolerances.network_error`: terms per output of each matmul
    or convolution (one more for a bias), 1 for an elementwise stage (batch norm,
    GLU, modulation, truncation, tanh); ReLU, nearest upsampling, reshapes and
    pooling by max are exact."""
    if isinstance(G, TinyFastGAN):
        ch, nz = G.to_small.in_channels, G.init[0].in_channels
        conv = ch * 9 + 1                                  # 3x3 over ch channels, bias
        paths = {"init": [nz, 1, 1]}                       # ConvTranspose on a 1x1 map, BN, GLU
        paths["feat_8.2"] = paths["init"] + [conv, 1]
        paths["feat_8"] = paths["feat_8.2"] + [1]
        paths["feat_16"] = paths["feat_8"] + [conv, 1, 1]
        paths[None] = paths["feat_16"] + [conv, 1]
    elif isinstance(G, TinyStyleGAN):
        ch = G.const.shape[0]
        paths = {"w": [G.z_dim + 1, G.w_dim + 1, 1]}       # two linear layers, truncation
        paths[None] = (paths["w"] + [G.w_dim + 1] + [1, 1, ch * 9 + 1] * G.num_ws  # style, modulation
                       + [ch + 1, 1])                      # 1x1 to_rgb, tanh
    elif isinstance(G, TinyPlain):
        paths = {"fc": [G.z_dim + 1]}
        paths[None] = paths["fc"] + [4 * 9 + 1, 5 + 1, 1]  # 3x3 conv, 1x1 conv, tanh
    else:
        raise TypeError(f"no fan-ins for {type(G).__name__}")
    return paths[layer]


# ------------------------------------------------------------------- tests


def test_sample_z_is_per_index_and_batch_independent():
    whole = sample_z(5, 10, 60, 7)
    pieces = np.concatenate([sample_z(5, lo, min(lo + 13, 60), 7) for lo in range(10, 60, 13)])
    np.testing.assert_array_equal(whole, pieces)
    np.testing.assert_array_equal(sample_z(5, 30, 31, 7)[0], whole[20])
    assert whole.dtype == np.float32 and whole.shape == (50, 7)
    assert not np.array_equal(sample_z(6, 10, 60, 7), whole)
    big = sample_z(1, 0, 2000, 16)
    # standard normal: 5 sigma sampling bounds for N draws, 1 / sqrt(N) on the mean
    # and sqrt(1 / (2 N)) on the standard deviation
    assert abs(big.mean()) < 5 / np.sqrt(big.size) and abs(big.std() - 1) < 5 / np.sqrt(2 * big.size)
    with pytest.raises(ValueError, match="seed"):
        sample_z(-1, 0, 2, 3)


def test_as_adapter_recognises_structures():
    fast = as_adapter(TinyFastGAN(nz=16))
    assert isinstance(fast, FastGANAdapter) and fast.z_dim == 16 and fast.default_layer == "init"
    style = as_adapter(TinyStyleGAN())
    assert isinstance(style, StyleGANAdapter) and style.spaces == ("z", "w", "w+")
    plain = as_adapter(TinyPlain(z_dim=6))
    assert isinstance(plain, PlainAdapter) and plain.z_dim == 6
    assert as_adapter(plain) is plain
    with pytest.raises(ValueError, match="z_dim"):
        as_adapter(nn.Linear(3, 4))
    assert as_adapter(nn.Linear(3, 4), z_dim=3).z_dim == 3
    with pytest.raises(TypeError):
        as_adapter("not a module")


def test_plain_and_fastgan_forward_match_the_module(rng):
    G = TinyFastGAN().eval()
    z = torch.from_numpy(rng.standard_normal((5, 16)).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_array_equal(FastGANAdapter(G).forward(z).numpy(), G(z)[0].numpy())
        conv = PlainAdapter(nn.ConvTranspose2d(3, 2, 4), z_dim=3, z_shape=(3, 1, 1))
        assert conv.forward(z[:, :3]).shape == (5, 2, 4, 4)
        step = torch.ones(16)
        # z + step is z + 1: the same forward pass, up to how its kernels block sums
        ref = G(z + 1)[0].numpy()
        np.testing.assert_allclose(FastGANAdapter(G).forward_edited(z, step).numpy(), ref, rtol=0,
                                   atol=2 * network_error(fan_ins(G)) * np.abs(ref).max())
    with pytest.raises(ValueError, match="edits only space 'z'"):
        FastGANAdapter(G).forward_edited(z, step, "w")
    with pytest.raises(ValueError, match="z_shape"):
        PlainAdapter(G, z_dim=16, z_shape=(3, 5))


def test_stylegan_adapter_w_and_w_plus_edits_match_manual(rng):
    G = TinyStyleGAN().eval()
    adapter = StyleGANAdapter.from_stylegan2_ada(G, truncation_psi=0.7)
    z = torch.from_numpy(rng.standard_normal((3, G.z_dim)).astype(np.float32))
    step = torch.from_numpy(rng.standard_normal(G.w_dim).astype(np.float32))
    with torch.no_grad():
        ws = G.mapping(z, None, truncation_psi=0.7)
        np.testing.assert_array_equal(adapter.codes(z)["w"].numpy(), ws[:, 0].numpy())
        # const noise: replayable
        np.testing.assert_array_equal(adapter.forward(z).numpy(), adapter.forward(z).numpy())
        # each pair below runs the same mapping and synthesis on the same numbers:
        # apart by at most twice one float32 pass's error, relative to the images
        # (tanh: magnitude <= 1)
        tol = 2 * network_error(fan_ins(G))
        np.testing.assert_allclose(adapter.forward(z).numpy(),
                                   G.synthesis(ws, noise_mode="const").numpy(), rtol=0, atol=tol)
        got = adapter.forward_edited(z, step, "w").numpy()
        ref = G.synthesis(ws + step, noise_mode="const").numpy()
        np.testing.assert_allclose(got, ref, rtol=0, atol=tol)
        got = adapter.forward_edited(z, step, "w+", layers=range(1, 3)).numpy()
        ws_plus = ws.clone()
        ws_plus[:, 1:3] += step
        np.testing.assert_allclose(got, G.synthesis(ws_plus, noise_mode="const").numpy(), rtol=0,
                                   atol=tol)
        assert np.abs(got - ref).max() > 2 * tol  # a different edit, not rounding
        zstep = torch.ones(G.z_dim)
        np.testing.assert_allclose(adapter.forward_edited(z, zstep, "z").numpy(),
                                   adapter.forward(z + 1).numpy(), rtol=0, atol=tol)
    with pytest.raises(ValueError, match="out of range"):
        adapter.forward_edited(z, step, "w+", layers=[7])
    with pytest.raises(ValueError, match="layers applies"):
        adapter.forward_edited(z, step, "w", layers=[1])
    with pytest.raises(ValueError, match="step has shape"):
        adapter.forward_edited(z, torch.ones(G.w_dim + 1), "w")
    d = adapter.describe()
    assert d["w_dim"] == G.w_dim and d["num_ws"] == G.num_ws and d["truncation_psi"] == 0.7


def test_stylegan_adapter_from_callables(rng):
    G = TinyStyleGAN().eval()
    adapter = StyleGANAdapter(G, z_dim=G.z_dim, w_dim=G.w_dim, num_ws=G.num_ws,
                              mapping=lambda z: G.mapping_net(z),  # (n, w_dim): broadcast here
                              synthesis="synthesis", synthesis_kwargs={"noise_mode": "const"})
    z = torch.from_numpy(rng.standard_normal((2, G.z_dim)).astype(np.float32))
    with torch.no_grad():
        w = G.mapping_net(z)
        ref = G.synthesis(w[:, None].repeat(1, G.num_ws, 1), noise_mode="const")
        # broadcast by expand there, by repeat here: the same numbers, laid out
        # differently for the kernels (images: magnitude <= 1)
        np.testing.assert_allclose(adapter.forward(z).numpy(), ref.numpy(), rtol=0,
                                   atol=2 * network_error(fan_ins(G)))
    with pytest.raises(ValueError, match="not a StyleGAN2-ADA"):
        StyleGANAdapter.from_stylegan2_ada(TinyPlain())
