"""Synthetic data shaped like GAN features, shared by the benchmarks.

Rows are ``mean + S diag(scales) M + noise``: ``rank`` heavy-tailed (Laplace)
sources with power-law decaying scales mixed by a random Gaussian matrix, a
positive offset per feature (activations after a GLU/ReLU are not centred),
and isotropic Gaussian noise. The spectrum decays smoothly past any ``k``, as
the spectra of real generator layers do, so randomized methods are tested on
a realistic tail rather than on an exact low-rank matrix.
"""
from __future__ import annotations

import numpy as np


def gan_like(n_samples: int, n_features: int, *, rank: int = 1000, decay: float = 0.8,
             noise: float = 0.05, seed: int = 0, dtype=np.float32, block: int = 2048,
             out: np.ndarray | None = None) -> np.ndarray:
    """``(n_samples, n_features)`` array of GAN-feature-like rows (see module doc).

    Generated block by block in float32 so that large cases fit in memory;
    ``out`` (e.g. a ``np.lib.format.open_memmap`` of that shape) receives the
    rows instead of a new array, so a file larger than memory can be written.
    """
    rng = np.random.default_rng(seed)
    rank = min(rank, n_features)
    scales = (np.arange(1, rank + 1, dtype=np.float64) ** -decay).astype(np.float32)
    mixing = rng.standard_normal((rank, n_features), dtype=np.float32) / np.sqrt(rank)
    mixing *= 4.0 * scales[:, None]
    offset = np.abs(rng.standard_normal(n_features, dtype=np.float32))
    out = np.empty((n_samples, n_features), dtype=dtype) if out is None else out
    for lo in range(0, n_samples, block):
        hi = min(lo + block, n_samples)
        sources = rng.laplace(size=(hi - lo, rank)).astype(np.float32)
        x = sources @ mixing
        x += offset
        x += noise * rng.standard_normal((hi - lo, n_features), dtype=np.float32)
        out[lo:hi] = x
    return out


def fastgan_init_features(n_samples: int, *, nz: int = 256, channels: int = 1024, seed: int = 0,
                          block: int = 1024, out: np.ndarray | None = None) -> np.ndarray:
    """``(n_samples, channels * 16)`` float32 outputs of FastGAN's init block with
    random weights, at its real size (1024 x 4 x 4 = 16384 features).

    The block is FastGAN's first layer: a spectrally normalised
    ``ConvTranspose2d(nz, 2 channels, 4, bias=False)`` on the ``(nz, 1, 1)`` latent
    (a linear map to ``2 channels x 4 x 4``), batch norm and a GLU over channels.
    Weights as FastGAN initialises them: conv weights normal with std 0.02, divided
    by the largest singular value of the ``(2 channels, nz x 16)`` matrix
    (spectral norm, exact here); batch-norm scales normal(1, 0.02), shifts 0, in
    eval mode at initialisation (running mean 0, variance 1). Latents standard
    normal. The spectrum is flat at the top (about ``nz`` comparable eigenvalues,
    spread by sampling), as random conv features are: the hardest case for
    randomized PCA.
    """
    rng = np.random.default_rng(seed)
    weight = rng.normal(0.0, 0.02, size=(nz, 2 * channels, 4, 4)).astype(np.float32)
    sigma = np.linalg.norm(weight.transpose(1, 0, 2, 3).reshape(2 * channels, -1), ord=2)
    weight = (weight / sigma).reshape(nz, 2 * channels * 16)
    gamma = rng.normal(1.0, 0.02, size=2 * channels).astype(np.float32)
    out = np.empty((n_samples, channels * 16), np.float32) if out is None else out
    for lo in range(0, n_samples, block):
        hi = min(lo + block, n_samples)
        z = rng.standard_normal((hi - lo, nz), dtype=np.float32)
        y = (z @ weight).reshape(hi - lo, 2 * channels, 16) * gamma[None, :, None]
        a, b = y[:, :channels], y[:, channels:]
        out[lo:hi] = (a / (1.0 + np.exp(-b))).reshape(hi - lo, channels * 16)
    return out
