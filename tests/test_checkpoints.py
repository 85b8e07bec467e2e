"""Upstream checkpoints and their generators' behaviour, on minimal models of our own
that have upstream's key layouts and run-time behaviour:

* FastGAN (odegeasslbc/FastGAN-pytorch): spectral-norm convolutions (keys
  ``*.weight_orig``), noise injections that draw ``torch.randn`` on every call,
  a training script that saves ``nn.DataParallel`` state dicts (keys prefixed
  ``module.``) in ``all_N.pth`` (raw ``'g'``, EMA ``'g_ema'`` as a parameter
  list, optimizer states) and the EMA generator alone in ``models/N.pth``;
* StyleGAN2-ADA / StyleGAN3 (NVlabs): synthesis networks taking ``force_fp32``
  (and, StyleGAN2-ADA only, ``fused_modconv``) through ``**block_kwargs``.
"""
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import spectral_norm

from bridges.generators import FastGANAdapter, PlainAdapter, StyleGANAdapter
from bridges.render import edit, render
from jaxfactor.app.cli import main
from jaxfactor.app.pipeline import discover
from jaxfactor.directions import load_directions

from .test_generators import TinyStyleGAN

GEN = "bridges.builtin:load_builtin_generator"


# ------------------------------------------------------------ FastGAN-like model


class NoiseInjection(nn.Module):
    """Adds ``weight * noise``; with no noise given, a fresh standard normal map."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, feat, noise=None):
        if noise is None:
            n, _, h, w = feat.shape
            noise = torch.randn(n, 1, h, w).to(feat.device)
        return feat + self.weight * noise


class GLU(nn.Module):
    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return a * torch.sigmoid(b)


class InitLayer(nn.Module):
    def __init__(self, nz, channel):
        super().__init__()
        self.init = nn.Sequential(spectral_norm(nn.ConvTranspose2d(nz, channel * 2, 4, 1, 0, bias=False)),
                                  nn.BatchNorm2d(channel * 2), GLU())

    def forward(self, noise):
        return self.init(noise.view(noise.shape[0], -1, 1, 1))


class UpBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2)
        self.conv = spectral_norm(nn.Conv2d(cin, cout * 2, 3, 1, 1, bias=False))
        self.noise = NoiseInjection()
        self.bn = nn.BatchNorm2d(cout * 2)
        self.glu = GLU()

    def forward(self, x):
        return self.glu(self.bn(self.noise(self.conv(self.up(x)))))


class MiniFastGAN(nn.Module):
    """FastGAN's key layout and behaviour, shrunk: ``init.init.0.weight_orig``, noise
    injections, ``[image, small image]`` output."""

    def __init__(self, nz=8, ngf=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.init = InitLayer(nz, ngf)
        self.feat_8 = UpBlock(ngf, ngf)
        self.feat_16 = UpBlock(ngf, ngf)
        self.to_big = spectral_norm(nn.Conv2d(ngf, 3, 3, 1, 1, bias=False))
        self.to_small = spectral_norm(nn.Conv2d(ngf, 3, 1, 1, 0, bias=False))
        with torch.no_grad():   # "trained": non-zero noise weights
            self.feat_8.noise.weight.fill_(0.5)
            self.feat_16.noise.weight.fill_(0.8)

    def forward(self, z):
        f4 = self.init(z)
        f8 = self.feat_8(f4)
        f16 = self.feat_16(f8)
        return [torch.tanh(self.to_big(f16)), torch.tanh(self.to_small(f8))]


def _trained(seed):
    G = MiniFastGAN(seed=seed)
    G.train()
    with torch.no_grad():   # run the spectral-norm power iteration and the BN statistics once
        G(torch.randn(16, 8))
    return G.eval()


def _save_upstream_files(tmp_path):
    """``all_N.pth`` and ``models/N.pth`` as upstream's train.py writes them."""
    raw, ema = _trained(0), _trained(1)
    net_g = nn.DataParallel(raw)
    opt = torch.optim.Adam(raw.parameters(), lr=2e-4, betas=(0.5, 0.999))
    raw(torch.randn(2, 8))[0].mean().backward()
    opt.step()
    avg_param_g = [p.detach().clone() for p in ema.parameters()]
    all_path, models_path = tmp_path / "all_50000.pth", tmp_path / "50000.pth"
    torch.save({"g": net_g.state_dict(), "d": {"w": torch.zeros(2)}, "g_ema": avg_param_g,
                "opt_g": opt.state_dict(), "opt_d": opt.state_dict()}, all_path)
    ema_dict = {k: v for k, v in raw.state_dict().items()}
    ema_dict.update({n: p.detach().clone() for n, p in ema.named_parameters()})
    torch.save({"g": {f"module.{k}": v for k, v in ema_dict.items()}, "d": {}}, models_path)
    return all_path, models_path, raw, avg_param_g


def _params(G):
    return [p.detach().clone() for p in G.parameters()]


def test_fastgan_checkpoints_load_in_both_layouts_and_files(tmp_path):
    all_path, models_path, raw, avg = _save_upstream_files(tmp_path)
    # what the README used to say fails on upstream's own files
    G = MiniFastGAN(seed=5)
    with pytest.raises(RuntimeError, match="Missing key"):
        G.load_state_dict(torch.load(all_path, weights_only=True)["g"])

    ema = FastGANAdapter.from_checkpoint(all_path, lambda: MiniFastGAN(seed=5))
    assert all(torch.equal(a, b) for a, b in zip(_params(ema.module), avg))
    assert ema.checkpoint["weights"] == "g_ema" and ema.checkpoint["key_layout"] == "DataParallel"
    assert not ema.module.training
    # buffers (batch-norm statistics, spectral-norm vectors) come from 'g'
    for name, buf in raw.named_buffers():
        assert torch.equal(dict(ema.module.named_buffers())[name], buf), name

    plain = FastGANAdapter.from_checkpoint(all_path, MiniFastGAN(seed=6), ema=False)
    assert all(torch.equal(a, b) for a, b in zip(_params(plain.module), _params(raw)))
    assert plain.checkpoint["weights"] == "g"

    from_models = FastGANAdapter.from_checkpoint(models_path, lambda: MiniFastGAN(seed=7))
    assert all(torch.equal(a, b) for a, b in zip(_params(from_models.module), avg))
    with pytest.raises(ValueError, match="raw weights are in all_N.pth"):
        FastGANAdapter.from_checkpoint(models_path, lambda: MiniFastGAN(seed=7), ema=False)

    # a bare state dict with plain keys
    bare = tmp_path / "bare.pth"
    torch.save(raw.state_dict(), bare)
    loaded = FastGANAdapter.from_checkpoint(bare, lambda: MiniFastGAN(seed=8))
    assert loaded.checkpoint["key_layout"] == "plain"
    assert all(torch.equal(a, b) for a, b in zip(_params(loaded.module), _params(raw)))
    described = json.loads(json.dumps(loaded.describe()))
    assert described["checkpoint"]["path"].endswith("bare.pth") and described["noise_mode"] == "const"


def test_fastgan_checkpoint_errors_name_the_keys(tmp_path):
    all_path, _, _, _ = _save_upstream_files(tmp_path)
    with pytest.raises(ValueError, match=r"other shapes.*init\.init\.0\.weight_orig: \(8, 8, 4, 4\)"):
        FastGANAdapter.from_checkpoint(all_path, lambda: MiniFastGAN(ngf=8))   # wrong ngf: shapes
    other = tmp_path / "other.pth"
    torch.save({"model": 1, "step": 3}, other)
    with pytest.raises(ValueError, match=r"not a FastGAN checkpoint.*\['model', 'step'\]"):
        FastGANAdapter.from_checkpoint(other, MiniFastGAN)
    short = tmp_path / "short.pth"
    state = torch.load(all_path, weights_only=True)
    state["g_ema"] = state["g_ema"][:-1]
    torch.save(state, short)
    with pytest.raises(ValueError, match="g_ema' holds"):
        FastGANAdapter.from_checkpoint(short, MiniFastGAN)


def test_fastgan_shape_mismatch_is_a_value_error_naming_the_keys(tmp_path):
    G = MiniFastGAN()
    path = tmp_path / "g.pth"
    torch.save({"g": {f"module.{k}": v for k, v in G.state_dict().items()
                      if not k.startswith("to_small")}}, path)
    with pytest.raises(ValueError, match="to_small"):
        FastGANAdapter.from_checkpoint(path, MiniFastGAN)


# ------------------------------------------------------------ noise and determinism


def _z(n, seed=3):
    return np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)


def test_upstream_fastgan_noise_makes_renders_differ():
    # the behaviour the adapter must control: two plain renders of one z differ
    G = _trained(0)
    z = _z(4)
    random = FastGANAdapter(G, noise_mode="random")
    assert not np.array_equal(render(random, z), render(random, z))


def test_fastgan_renders_replay_and_alpha_zero_is_the_plain_render():
    G = _trained(0)
    adapter = FastGANAdapter(G)                 # noise_mode='const'
    z = _z(5)
    first = render(adapter, z, batch_size=2)
    assert np.array_equal(first, render(adapter, z, batch_size=2))
    d = np.random.default_rng(4).standard_normal((2, 8))
    grid = edit(adapter, z, d, [-2.0, 0.0, 2.0], batch_size=2, units="latent")   # (m, a, n, ...)
    for i in range(2):
        assert np.array_equal(grid[i, 1], first), i
    assert not np.array_equal(grid[0, 0], first)
    # the noise is really there and follows the row, not its place in the batch
    zero = render(FastGANAdapter(G, noise_mode="zero"), z, batch_size=2)
    assert np.mean(zero != first) > 0.2
    swapped = render(adapter, z[[1, 0]], batch_size=2)
    assert np.max(np.abs(swapped.astype(int) - first[[1, 0]].astype(int))) <= 1
    # zero noise is the generator with its noise weights off
    off = _trained(0)
    with torch.no_grad():
        for m in off.modules():
            if isinstance(m, NoiseInjection):
                m.weight.zero_()
    assert np.array_equal(zero, render(FastGANAdapter(off, noise_mode="random"), z, batch_size=2))


def test_fastgan_noise_mode_is_checked():
    with pytest.raises(ValueError, match="noise_mode"):
        FastGANAdapter(MiniFastGAN(), noise_mode="const_")


class BatchDependent(nn.Module):
    """A generator whose output depends on the batch it is computed in (as CPU
    convolutions do in the last bits), exaggerated so that uint8 images show it."""

    z_dim = 4

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 3 * 2 * 2)

    def forward(self, z):
        x = torch.tanh(self.fc(z)).view(z.shape[0], 3, 2, 2)
        return (x + 0.02 * z.shape[0]).clamp(-1, 1)


def test_edit_batches_each_cell_as_the_plain_render():
    adapter = PlainAdapter(BatchDependent())
    z = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    d = np.eye(4)[:2]
    plain = render(adapter, z, batch_size=2)
    grid = edit(adapter, z, d, [0.0, 1.0], batch_size=2)
    assert np.array_equal(grid[0, 0], plain) and np.array_equal(grid[1, 0], plain)


# ------------------------------------------------------------ StyleGAN2-ADA precision


class RecordingSynthesis(nn.Module):
    """A synthesis network that passes its options through ``**block_kwargs`` (as
    upstream's does) and runs in float16 arithmetic unless ``force_fp32``."""

    def __init__(self, w_dim, num_ws, arch):
        super().__init__()
        torch.manual_seed(1)
        self.weight = nn.Parameter(torch.randn(w_dim, 3 * 4 * 4) / w_dim ** 0.5)
        self.num_ws = num_ws
        if arch == "sg2":
            self.block_resolutions = [4]
        else:
            self.layer_names = ["L0"]
        self.calls = []

    def forward(self, ws, **block_kwargs):
        self.calls.append(dict(block_kwargs))
        x, w = ws.mean(dim=1), self.weight
        if not block_kwargs.get("force_fp32", False):   # what num_fp16_res does to a block
            x, w = x.half().float(), w.half().float()
        out = (x @ w).view(ws.shape[0], 3, 4, 4)
        return torch.tanh(out.half().float() if not block_kwargs.get("force_fp32") else out)


class MiniStyleGAN2(nn.Module):
    def __init__(self, arch="sg2"):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.c_dim = 6, 5, 3, 0
        torch.manual_seed(0)
        self.map = nn.Linear(6, 5)
        self.synthesis = RecordingSynthesis(5, 3, arch)

    def mapping(self, z, c, truncation_psi=1.0):
        return self.map(z)[:, None].repeat(1, self.num_ws, 1)


def test_stylegan2_ada_runs_in_float32_on_cpu_by_default():
    G = MiniStyleGAN2()
    adapter = StyleGANAdapter.from_stylegan2_ada(G)
    z = torch.from_numpy(np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32))
    with torch.no_grad():
        out = adapter.forward(z)
        ws = G.mapping(z, None)
        ref = torch.tanh((ws.double().mean(dim=1) @ G.synthesis.weight.double()).view(4, 3, 4, 4))
    assert G.synthesis.calls[-1] == {"noise_mode": "const", "force_fp32": True, "fused_modconv": False}
    eps32 = float(np.finfo(np.float32).eps)
    assert torch.max(torch.abs(out.double() - ref)) < 20 * eps32 * 5     # fp32 rounding, 5-term sums
    # the knob acts: float16 arithmetic is ~2^13 times coarser
    fp16 = StyleGANAdapter.from_stylegan2_ada(G, force_fp32=False, fused_modconv=True)
    with torch.no_grad():
        out16 = fp16.forward(z)
    assert G.synthesis.calls[-1]["force_fp32"] is False and G.synthesis.calls[-1]["fused_modconv"]
    assert torch.max(torch.abs(out16.double() - ref)) > 100 * eps32
    assert adapter.describe()["precision"]["force_fp32"] is None


def test_stylegan3_gets_no_fused_modconv_and_named_options_only():
    G = MiniStyleGAN2(arch="sg3")
    StyleGANAdapter.from_stylegan2_ada(G).forward(torch.zeros(1, 6))
    assert G.synthesis.calls[-1] == {"noise_mode": "const", "force_fp32": True}
    # a synthesis that names its options gets only those (noise_mode, as before)
    tiny = TinyStyleGAN()
    adapter = StyleGANAdapter.from_stylegan2_ada(tiny)
    assert adapter.precision["accepted"] == []
    adapter.forward(torch.zeros(1, tiny.z_dim))


# ------------------------------------------------------------ edit scales


class RecordingAdapter(StyleGANAdapter):
    """TinyStyleGAN's adapter that keeps the W+ codes it synthesizes."""

    def synthesize(self, ws):
        self.last_ws = ws.detach().clone()
        return super().synthesize(ws)


def _w_codes(adapter, n, seed):
    from bridges.generators import sample_z

    z = torch.from_numpy(sample_z(seed, 0, n, adapter.z_dim))
    with torch.no_grad():
        return adapter.codes(z)["w"].double().numpy(), z


@pytest.mark.parametrize("method", ["pca", "sefa"])
def test_w_space_scales_are_standard_deviations_and_one_std_moves_one_std(method):
    G = TinyStyleGAN()
    adapter = RecordingAdapter(G, z_dim=G.z_dim, w_dim=G.w_dim, num_ws=G.num_ws,
                               mapping=lambda z: G.mapping(z, None),
                               synthesis_kwargs={"noise_mode": "const"})
    n = 600
    weights = [a.weight.detach().numpy() for a in G.affine[:2]] if method == "sefa" else None
    found = discover(adapter, "w", method, 3, n_samples=n, seed=4, sefa_weights=weights,
                     show_progress=False)
    w, z = _w_codes(adapter, n, 4)
    d = found.directions.astype(np.float64)
    std = np.std(w @ d.T, axis=0, ddof=1)
    eps32 = float(np.finfo(np.float32).eps)
    # float32 codes and directions: each projection carries ~w_dim eps relative rounding
    np.testing.assert_allclose(found.scales, std, rtol=50 * G.w_dim * eps32)
    assert np.max(np.abs(found.scales - 1)) > 0.05, "the scales are the data's, not 1"
    # one 'std' unit moves the projection of w on the direction by one standard deviation
    edit(adapter, z[:1].numpy(), found.directions[:1], [1.0], scales=found.scales[:1], space="w")
    moved = (adapter.last_ws[0, 0].double().numpy() - w[0]) @ d[0]
    np.testing.assert_allclose(moved, std[0], rtol=100 * G.w_dim * eps32)


# ------------------------------------------------------------ the CLI


def test_cli_edit_w_plus_layers_and_samples(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "dirs.npz"
    assert main(["discover", "--generator", GEN, "--layer", "w", "--method", "pca",
                 "--components", "3", "--samples", "300", "--out", str(out)]) == 0
    meta = load_directions(out).metadata
    assert meta["generator"]["spec"] == GEN and meta["generator"]["adapter"] == "StyleGANAdapter"
    png = tmp_path / "grid.png"
    assert main(["edit", "--generator", GEN, "--directions", str(out), "--indices", "0", "1",
                 "--alphas", "-2", "0", "2", "--space", "w+", "--layers", "1-2",
                 "--samples", "3", "--out", str(png)]) == 0
    assert "W+ layers 1-2" in capsys.readouterr().out
    w, h = Image.open(png).size
    pad = 2
    cell = (w - 4 * pad) // 3                    # 3 columns (alphas)
    assert h == 6 * cell + 7 * pad               # 2 directions x 3 samples (rows)
    code = main(["edit", "--generator", GEN, "--directions", str(out), "--space", "z",
                 "--out", str(png)])
    assert code == 2 and "live in 'w'" in capsys.readouterr().err
    code = main(["edit", "--generator", GEN, "--directions", str(out), "--space", "w+",
                 "--layers", "2-9", "--out", str(png)])
    assert code == 2 and "outside the generator's W+ layers 0-3" in capsys.readouterr().err


def test_cli_pool_errors_speak_cli(tmp_path, capsys):
    base = ["discover", "--generator", GEN, "--layer", "synthesis.init", "--method", "pca",
            "--components", "2", "--samples", "50", "--out", str(tmp_path / "d.npz")]
    assert main(base + ["--pool", "max"]) == 2
    err = capsys.readouterr().err
    assert "--pool-size" in err and "pool_size" not in err and "(h, w)" not in err
    assert main(base + ["--pool", "avg", "--pool-size", "1", "1"]) == 0
    assert load_directions(tmp_path / "d.npz").metadata["params"]["pool_size"] == [1, 1]


def test_discover_reports_convergence_once(tmp_path, capsys):
    out = tmp_path / "ica.npz"
    with _no_convergence_warning():
        found = discover(_builtin(), "w", "ica", 3, n_samples=300, show_progress=False,
                         estimator_params={"max_iter": 1})
    assert found.convergence["status"] == "max_iter" and "did not converge" in found.convergence["message"]
    assert main(["discover", "--generator", GEN, "--layer", "w", "--method", "ica",
                 "--components", "3", "--samples", "300", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "ConvergenceWarning" not in captured.err and captured.out.count("\n") == 1
    conv = load_directions(out).metadata["extra"]["convergence"]
    assert conv["status"] in ("converged", "max_iter") and conv["n_iter"] >= 1
    assert (f"converged in {conv['n_iter']} iterations" in captured.out
            if conv["status"] == "converged" else "NOT converged" in captured.out)


def _builtin():
    from bridges.builtin import load_builtin_generator
    from bridges.generators import as_adapter

    return as_adapter(load_builtin_generator())


class _no_convergence_warning:
    """Fail if a ConvergenceWarning escapes the block."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings(record=True)
        self._caught = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        from jaxfactor import ConvergenceWarning

        self._cm.__exit__(*exc)
        leaked = [w for w in self._caught if issubclass(w.category, ConvergenceWarning)]
        assert not leaked, [str(w.message) for w in leaked]
        return False


def test_readme_walkthrough_from_an_upstream_fastgan_file(tmp_path, capsys):
    # the README's "your checkpoint" commands, on a file laid out like upstream's all_N.pth
    all_path, _, _, avg = _save_upstream_files(tmp_path)
    factory = tmp_path / "mygan.py"
    factory.write_text(
        "import bridges.torch as bt\n"
        "from tests.test_checkpoints import MiniFastGAN\n"
        "def load():\n"
        f"    return bt.FastGANAdapter.from_checkpoint({str(all_path)!r}, lambda: MiniFastGAN(seed=9))\n")
    spec = f"{factory}:load"
    out = tmp_path / "ica.npz"
    assert main(["discover", "--generator", spec, "--layer", "init", "--method", "ica",
                 "--components", "3", "--samples", "200", "--out", str(out)]) == 0
    meta = load_directions(out, layer="init").metadata
    assert meta["generator"]["checkpoint"]["weights"] == "g_ema"
    assert meta["generator"]["noise_mode"] == "const" and meta["space"] == "z"
    png = tmp_path / "grid.png"
    assert main(["edit", "--generator", spec, "--directions", str(out), "--indices", "0", "1",
                 "--alphas", "-3", "0", "3", "--samples", "2", "--out", str(png)]) == 0
    assert "2 directions x 2 samples" in capsys.readouterr().out
    # with a cache the fit's passes and the lift read the activations from disk
    cached = tmp_path / "cached.npz"
    assert main(["discover", "--generator", spec, "--layer", "init", "--method", "ica",
                 "--components", "3", "--samples", "200", "--cache", str(tmp_path / "acts"),
                 "--out", str(cached)]) == 0
    assert len(list((tmp_path / "acts").glob("activations-*.npy"))) == 1
    np.testing.assert_array_equal(load_directions(cached).directions,
                                  load_directions(out).directions)


def test_stream_batch_size_default_is_per_device():
    from bridges.activations import ActivationStream, default_batch_size

    stream = ActivationStream(MiniFastGAN(), layer="init", n_samples=10)
    assert stream.batch_size == default_batch_size("cpu") == 32
    assert default_batch_size("cuda") == 256
